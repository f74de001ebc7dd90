#!/usr/bin/env bash
# make gpu-test GPU=cuda|hip: the GPU backend against the CPU backend, on a machine with a
# GPU. Needs the CPU build (bin/, build/tests/dump_step) and the GPU build (BUILD =
# build-cuda or build-hip); `make gpu-test` builds both.
#  1. every op, forward and backward (build-*/tests/test_gpu_ops; tolerances there);
#  2. the standard model's loss and every gradient after one step (dump_step on both
#     backends): fp32 loss 1e-5, gradients 1e-3; bf16 loss 1e-2, gradients 5e-2; also GQA;
#  3. 50 steps of the tiny preset on both backends, loss curves side by side: fp32 losses
#     within 2e-3 relative at every step (float summation order differs), bf16 final loss
#     within 2 %;
#  4. tokens/s and MFU (bf16, against the dense bf16 peak: 989 TFLOP/s H100/H200, 1307
#     MI300X) for the 70m, 160m and 500m presets at sequence 2048;
#  5. checkpoints: a GPU run's step-25 checkpoint resumes on the CPU and the CPU's on the
#     GPU, each ending at the original run's step-50 loss (2e-3);
#  6. cached decoding on the GPU: small standard (GQA), nonapx and rndembqk models trained
#     10 steps by the GPU trainer; the GPU decon-eval --decode-check (greedy decoding from
#     the caches = the full forward's argmax, logits within 1e-3) at a context of 160,
#     which crosses the decode kernel's key tiles of 128.
. "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
BUILD=${1:-build-cuda}
GPU_TRAIN="$BUILD/bin/decon-train"
for tool in "$TRAIN" build/tests/dump_step "$BUILD/tests/dump_step" "$BUILD/tests/test_gpu_ops" "$GPU_TRAIN"; do
    [ -x "$tool" ] || { fail "gpu-test setup" "$tool is missing: run make gpu-test GPU=cuda"; exit 1; }
done
nvidia-smi -L 2>/dev/null || rocm-smi --showproductname 2>/dev/null || true

# 1. ops
"$BUILD/tests/test_gpu_ops"

# 2. one step of the standard model (tiny's shape, short sequences), MHA and GQA
cfg=input/models/tiny.ini
for kv in 4 2; do
    common=(model.num_key_value_heads=$kv train.sequence_length=128 train.micro_batch_size=4)
    build/tests/dump_step "$cfg" "$WORK/cpu.bin" "${common[@]}" >/dev/null
    "$BUILD/tests/dump_step" "$cfg" "$WORK/gpu.bin" "${common[@]}"
    $PYTHON tests/gpu/compare_steps.py "$WORK/cpu.bin" "$WORK/gpu.bin" 1e-5 1e-3 "standard kv=$kv fp32"
    "$BUILD/tests/dump_step" "$cfg" "$WORK/gpu16.bin" "${common[@]}" train.precision=bf16
    $PYTHON tests/gpu/compare_steps.py "$WORK/cpu.bin" "$WORK/gpu16.bin" 1e-2 5e-2 "standard kv=$kv bf16"
done

# 3. 50 steps of tiny on both backends (the shipped corpus when present, else a synthetic shard)
if [ -f data/corpus/train.bin ]; then data=(data.train=data/corpus/train.bin data.validation=data/corpus/val.bin)
else make_shard "$WORK/train.bin" 400000 8192 1; data=(data.train="$WORK/train.bin" data.validation="$WORK/train.bin"); fi
set50=(train.max_steps=50 train.warmup_steps=10 train.eval_every=0 io.checkpoint_every=25)
sets() { local a=(); for kv in "$@"; do a+=(--set "$kv"); done; echo "${a[@]}"; }
# logged LOG COMMAND...: runs it into LOG, showing LOG's end when it fails.
logged() { local log=$1; shift; "$@" >"$log" 2>&1 || { echo "    $* failed:"; tail -n 5 "$log" | sed 's/^/    /'; }; }
# shellcheck disable=SC2046
logged "$WORK/cpu50.log" "$TRAIN" "$cfg" --run-dir "$WORK/cpu50" $(sets "${data[@]}" "${set50[@]}")
# shellcheck disable=SC2046
logged "$WORK/gpu50.log" "$GPU_TRAIN" "$cfg" --run-dir "$WORK/gpu50" $(sets "${data[@]}" "${set50[@]}")
# shellcheck disable=SC2046
logged "$WORK/gpu50b.log" "$GPU_TRAIN" "$cfg" --run-dir "$WORK/gpu50bf16" $(sets "${data[@]}" "${set50[@]}" train.precision=bf16)
$PYTHON - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def losses(run):
    try:
        return {r["step"]: r["loss"] for r in map(json.loads, open(f"{w}/{run}/metrics.jsonl")) if r.get("kind") == "train"}
    except OSError:
        return {}  # the run failed: its log is in the work directory
cpu, gpu, b16 = losses("cpu50"), losses("gpu50"), losses("gpu50bf16")
print("    step   cpu fp32   gpu fp32   gpu bf16")
for s in sorted(cpu):
    if s in (1, 2, 5, 10, 20, 30, 40, 50):
        print(f"    {int(s):4d}  {cpu[s]:9.5f}  {gpu.get(s, float('nan')):9.5f}  {b16.get(s, float('nan')):9.5f}")
worst = max(abs(gpu[s] - cpu[s]) / cpu[s] for s in cpu) if cpu and set(cpu) == set(gpu) else float("inf")
print(("PASS" if worst <= 2e-3 else "FAIL") + f" gpu tiny 50 steps fp32: loss curve within 2e-3 of the CPU's" + ("" if worst <= 2e-3 else f": worst {worst:.3g}"))
last = max(cpu) if cpu else 0
rel = abs(b16.get(last, float("inf")) - cpu.get(last, 0)) / max(cpu.get(last, 1), 1e-9)
print(("PASS" if rel <= 0.02 else "FAIL") + f" gpu tiny 50 steps bf16: final loss within 2% of the CPU's fp32" + ("" if rel <= 0.02 else f": {rel:.3g}"))
PY

# 5. checkpoints across backends: each 50-step run's step-25 checkpoint resumed by the
#    other backend (same schedule and data order) ends at the original run's step-50 loss.
roundtrip() {  # roundtrip FROM_RUN TRAINER LABEL REFERENCE_RUN
    local dir="$WORK/rt_$3"
    cp -r "$WORK/$1" "$dir"
    rm -f "$dir"/ckpt/step_00000050.h5 "$dir"/ckpt/latest.h5
    # shellcheck disable=SC2046
    "$2" "$cfg" --run-dir "$dir" --resume $(sets "${data[@]}" "${set50[@]}") >"$dir.log" 2>&1
    local rc=$?
    $PYTHON - "$dir/metrics.jsonl" "$WORK/$4/metrics.jsonl" "$3" "$rc" <<'PY'
import json, sys
def last(path):
    rows = [r for r in map(json.loads, open(path)) if r.get("kind") == "train" and r.get("step") == 50]
    return rows[-1]["loss"] if rows else float("nan")
got, want, rc = last(sys.argv[1]), last(sys.argv[2]), int(sys.argv[4])
rel = abs(got - want) / want if want == want and got == got else float("inf")
ok = rc == 0 and rel <= 2e-3
print(("PASS" if ok else "FAIL") + f" gpu checkpoint {sys.argv[3]}: resumed at step 25, step-50 loss {got:.5f} vs {want:.5f}"
      + ("" if ok else f" (exit {rc}, relative {rel:.3g} > 2e-3)"))
PY
}
roundtrip gpu50 "$TRAIN" gpu_to_cpu gpu50
roundtrip cpu50 "$GPU_TRAIN" cpu_to_gpu cpu50

# 4. throughput: bf16, sequence 2048, a few steps each
peak=989e12
rocm-smi --showproductname 2>/dev/null | grep -qi mi300 && peak=1307e12
for preset in 70m 160m 500m; do
    # shellcheck disable=SC2046
    logged "$WORK/bench_$preset.log" "$GPU_TRAIN" input/models/$preset.ini --run-dir "$WORK/bench_$preset" \
        $(sets "${data[@]}" train.max_steps=8 train.global_batch_size=8 train.micro_batch_size=8 train.sequence_length=2048 \
          train.precision=bf16 train.eval_every=0 io.checkpoint_every=0)
    flops=$("$BUILD/tests/dump_step" input/models/$preset.ini --flops-per-token train.sequence_length=2048 2>/dev/null)
    $PYTHON - "$WORK/bench_$preset/metrics.jsonl" "$flops" "$peak" "$preset" <<'PY'
import json, sys
try:
    rows = [r for r in map(json.loads, open(sys.argv[1])) if "tokens_per_s" in r]
except OSError:
    print(f"FAIL gpu throughput {sys.argv[4]}: the run wrote no metrics")
    sys.exit(0)
tps = sorted(r["tokens_per_s"] for r in rows[2:] or rows)[len(rows[2:] or rows) // 2] if rows else 0.0
flops, peak = float(sys.argv[2] or 0), float(sys.argv[3])
print(f"    {sys.argv[4]}: {tps:,.0f} tokens/s, {flops / 1e9:.2f} GFLOP/token, MFU {100 * tps * flops / peak:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16")
PY
done

# 6. decon-eval --decode-check with the GPU binaries (a small vocabulary of its own)
(
    WORK="$WORK/decode" && mkdir -p "$WORK"
    make_shard "$WORK/train.bin" 20000 64 1
    make_shard "$WORK/val.bin" 512 64 2
    write_small_config "$WORK/small.ini"
    for variant in standard nonapx rndembqk; do
        run="$WORK/run-$variant"
        "$GPU_TRAIN" "$WORK/small.ini" --set train.max_steps=10 --set attention.variant=$variant --run-dir "$run" \
            >"$WORK/train-$variant.log" 2>&1
        "$BUILD/bin/decon-eval" "$run/ckpt/latest.h5" --decode-check --ppl "$WORK/val.bin" --ctx 160 >"$WORK/check.log" 2>&1
        rc=$?
        line=$(grep '^decode-check' "$WORK/check.log")
        echo "    $line"
        [ "$rc" -eq 0 ] && [[ "$line" == *": equal" ]]
        check "gpu decode-check $variant: greedy from the GPU caches = the GPU full forward" $? \
            "rc=$rc: $(tail -n 2 "$WORK/train-$variant.log" "$WORK/check.log")"
    done
)
