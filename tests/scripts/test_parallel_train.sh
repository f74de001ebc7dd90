#!/usr/bin/env bash
# decon-train under mpirun (issue 4): parallel runs follow the single-rank loss curve;
# a checkpoint written at tp=2 resumes at tp=1, at dp=2 and at dp=2 x tp=2 + sp + ZeRO-1
# and continues the uninterrupted single-rank curve; the same with [model] head_dim != d/h
# and per-layer shapes (tp=2 from scratch, and a tp=1 checkpoint resumed at tp=2); a checkpoint without the
# head_dim line (written before the key existed) resumes as d/h; the traffic summary equals
# the formula; a bad shard seen by one rank, a rank killed mid-run and SIGTERM to one rank
# end every rank within seconds, never a hang.
source "$(dirname "$0")/common.sh"
make_shard "$WORK/train.bin" 60000 64 1
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/base.ini"
MPIRUN=(timeout -k 5 120 mpirun --oversubscribe)
ARGS=(--set train.max_steps=8 --set io.checkpoint_every=4 --set io.keep_checkpoints=5 --set train.eval_every=0
      --set train.learning_rate=1e-3)

losses() {  # the last logged loss of every step, one per line
    python3 - "$1" <<'PY'
import json, sys
last = {}
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record.get("kind") == "train":
        last[int(record["step"])] = record["loss"]
for step in sorted(last):
    print(step, repr(last[step]))
PY
}
# same_curve NAME A B FIRST: steps >= FIRST of run A and run B agree to 1e-5 relative
# (fp32 summation order differs between decompositions; see tests/unit/test_parallel_model.c).
same_curve() {
    python3 - "$2" "$3" "$4" <<'PY'
import sys
def read(path):
    return {int(s): float(v) for s, v in (line.split() for line in open(path))}
a, b, first = read(sys.argv[1]), read(sys.argv[2]), int(sys.argv[3])
steps = [s for s in sorted(a) if s >= first]
missing = [s for s in steps if s not in b]
if missing or not steps:
    sys.exit(f"steps missing: {missing or 'all'}")
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"# steps {steps[0]}..{steps[-1]}: worst relative loss difference {worst:.2e}")
sys.exit(0 if worst < 1e-5 else f"worst relative difference {worst:.2e}")
PY
    check "$1" $? "loss curves differ"
}

"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/single" >"$WORK/single.log" 2>&1
check parallel_single_rank_run $? "$(tail -n 3 "$WORK/single.log")"
losses "$WORK/single/metrics.jsonl" >"$WORK/single.loss"

# tp=2 from scratch, to the end: the whole curve matches.
"${MPIRUN[@]}" -np 2 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --tp 2 --run-dir "$WORK/tp2" >"$WORK/tp2.log" 2>&1
check parallel_tp2_run $? "$(tail -n 3 "$WORK/tp2.log")"
losses "$WORK/tp2/metrics.jsonl" >"$WORK/tp2.loss"
same_curve parallel_tp2_curve_equals_single "$WORK/single.loss" "$WORK/tp2.loss" 1

# The traffic summary: counted tp activation bytes equal the formula.
python3 - "$WORK/tp2/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") == "traffic":
        counted = r["tp_all_reduce_bytes"] + r["tp_all_gather_bytes"] + r["tp_reduce_scatter_bytes"]
        formula = r["tp_activation_formula_bytes"]
        print(f"# tp=2 traffic: counted {counted:.0f} bytes, formula {formula:.0f}")
        sys.exit(0 if formula > 0 and abs(counted - formula) <= 1e-9 * formula else 1)
sys.exit(1)
PY
check parallel_traffic_equals_formula $? "counted tp bytes differ from the formula (or no traffic record)"

# Resharding: the tp=2 run's step-4 checkpoint continues at other decompositions.
reshard() {  # NAME RANKS ARGS...: resume the tp=2 run's step 4 there and compare steps 5..8
    local name=$1 ranks=$2
    shift 2
    mkdir -p "$WORK/$name/ckpt"
    cp "$WORK/tp2/ckpt/step_00000004.h5" "$WORK/$name/ckpt/"
    "${MPIRUN[@]}" -np "$ranks" "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" "$@" --run-dir "$WORK/$name" --resume \
        >"$WORK/$name.log" 2>&1
    check "parallel_resume_$name" $? "$(tail -n 3 "$WORK/$name.log")"
    grep -q "resumed from .*step_00000004.h5 at step 4" "$WORK/$name.log"
    check "parallel_resume_${name}_from_step_4" $? "$(grep -h resumed "$WORK/$name.log")"
    losses "$WORK/$name/metrics.jsonl" >"$WORK/$name.loss"
    same_curve "parallel_resume_${name}_curve_equals_single" "$WORK/single.loss" "$WORK/$name.loss" 5
}
reshard tp2_to_tp1 1
reshard tp2_to_dp2 2
reshard tp2_to_dp2xtp2_sp_zero1 4 --tp 2 --sp --zero 1
# ...and a ZeRO-1 checkpoint (moments split over dp) continues on one rank.
mkdir -p "$WORK/zero_single/ckpt"
cp "$WORK/tp2_to_dp2xtp2_sp_zero1/ckpt/step_00000008.h5" "$WORK/zero_step8.h5"
h5ls -r "$WORK/zero_step8.h5" >/dev/null 2>&1
check parallel_zero_checkpoint_is_hdf5 $? "h5ls cannot read the ZeRO-1 checkpoint"
"$ROOT/bin/decon-eval" "$WORK/zero_step8.h5" --ppl "$WORK/val.bin" --ctx 32 >"$WORK/eval.log" 2>&1
check parallel_zero_checkpoint_evaluates_on_one_rank $? "$(tail -n 2 "$WORK/eval.log")"

# [model] head_dim = 12 != d / heads = 8, with per-layer shapes (a compressed model: layer
# 1 r_qk = r_v = 12, m = 64; layer 2 r_qk 6, r_v 10, m 32): tp=2 follows the single-rank
# curve, and the single-rank step-4 checkpoint reshards to tp=2 and continues it.
HD=(--set model.head_dim=12 --set model.layer_head_dims=12,6 --set model.layer_value_head_dims=12,10
    --set model.layer_intermediate_sizes=64,32)
"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" "${HD[@]}" --run-dir "$WORK/hd_single" >"$WORK/hd_single.log" 2>&1
check parallel_head_dim_single_rank_run $? "$(tail -n 3 "$WORK/hd_single.log")"
losses "$WORK/hd_single/metrics.jsonl" >"$WORK/hd_single.loss"
grep -q "head size 12" "$WORK/hd_single.log"
check parallel_head_dim_in_model_summary $? "$(grep -h 'model:' "$WORK/hd_single.log")"
"${MPIRUN[@]}" -np 2 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" "${HD[@]}" --tp 2 --run-dir "$WORK/hd_tp2" \
    >"$WORK/hd_tp2.log" 2>&1
check parallel_head_dim_tp2_run $? "$(tail -n 3 "$WORK/hd_tp2.log")"
losses "$WORK/hd_tp2/metrics.jsonl" >"$WORK/hd_tp2.loss"
same_curve parallel_head_dim_tp2_curve_equals_single "$WORK/hd_single.loss" "$WORK/hd_tp2.loss" 1
mkdir -p "$WORK/hd_tp1_to_tp2/ckpt"
cp "$WORK/hd_single/ckpt/step_00000004.h5" "$WORK/hd_tp1_to_tp2/ckpt/"
"${MPIRUN[@]}" -np 2 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" "${HD[@]}" --tp 2 --run-dir "$WORK/hd_tp1_to_tp2" --resume \
    >"$WORK/hd_tp1_to_tp2.log" 2>&1
check parallel_head_dim_resume_tp1_to_tp2 $? "$(tail -n 3 "$WORK/hd_tp1_to_tp2.log")"
grep -q "resumed from .*step_00000004.h5 at step 4" "$WORK/hd_tp1_to_tp2.log"
check parallel_head_dim_resume_tp1_to_tp2_from_step_4 $? "$(grep -h resumed "$WORK/hd_tp1_to_tp2.log")"
losses "$WORK/hd_tp1_to_tp2/metrics.jsonl" >"$WORK/hd_tp1_to_tp2.loss"
same_curve parallel_head_dim_resume_tp1_to_tp2_curve_equals_single "$WORK/hd_single.loss" "$WORK/hd_tp1_to_tp2.loss" 5

# A checkpoint from before head_dim existed (its /config without the line) reads as
# d / heads: the tp=2 step-4 checkpoint, so stripped, resumes at tp=1 on the single curve.
mkdir -p "$WORK/old_format/ckpt"
cp "$WORK/tp2/ckpt/step_00000004.h5" "$WORK/old_format/ckpt/"
$PYTHON - "$WORK/old_format/ckpt/step_00000004.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    text = f["config"][()].decode()
    assert "\nhead_dim = 8\n" in text, "the checkpoint does not state its head size"
    old = "".join(line for line in text.splitlines(True) if not line.startswith("head_dim"))
    del f["config"]
    f["config"] = np.bytes_(old.encode())
PY
check parallel_old_checkpoint_stripped $? "could not rewrite /config"
"${MPIRUN[@]}" -np 1 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/old_format" --resume \
    >"$WORK/old_format.log" 2>&1
check parallel_old_checkpoint_without_head_dim_resumes $? "$(tail -n 3 "$WORK/old_format.log")"
losses "$WORK/old_format/metrics.jsonl" >"$WORK/old_format.loss"
same_curve parallel_old_checkpoint_curve_equals_single "$WORK/single.loss" "$WORK/old_format.loss" 5

# Recordings: the attention matrices recorded at tp=2 + sp (each rank writes its heads)
# equal those recorded on one rank, for a standard and an rndembqk (fixed stream) layer.
REC=(--set train.max_steps=2 --set io.record_every=2 --set io.record_sequences=2 --set train.eval_every=0
     --set attention.variant=rndembqk --set attention.layout=hybrid:even)
"$TRAIN" "$WORK/base.ini" "${REC[@]}" --run-dir "$WORK/rec1" >"$WORK/rec1.log" 2>&1 &&
    "${MPIRUN[@]}" -np 2 "$TRAIN" "$WORK/base.ini" "${REC[@]}" --tp 2 --sp --run-dir "$WORK/rec2" >"$WORK/rec2.log" 2>&1
check parallel_recording_runs $? "$(tail -n 2 "$WORK/rec1.log" "$WORK/rec2.log")"
$PYTHON - "$WORK/rec1/attn.h5" "$WORK/rec2/attn.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
worst, compared = 0.0, 0
for step in a:
    if not step.startswith("step_"):
        continue
    for layer in a[step]:
        if layer.startswith("layer_") and "attn" in a[step][layer]:
            x, y = a[step][layer]["attn"][...], b[step][layer]["attn"][...]
            assert x.shape == y.shape, (x.shape, y.shape)
            worst = max(worst, float(np.max(np.abs(x - y))))
            compared += 1
print(f"# recordings tp=2+sp vs one rank: {compared} layer-steps, largest difference {worst:.1e}")
sys.exit(0 if compared >= 4 and worst < 1e-5 else 1)
PY
check parallel_recording_equals_single_rank $? "recorded attention differs between tp=2+sp and one rank"

# Bad input seen by one rank only: rank 1 is given a shard that does not exist.
start=$(date +%s)
"${MPIRUN[@]}" -np 2 bash -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then shard="$0.missing"; else shard="$0"; fi
    exec "$1" "$2" --set train.max_steps=50 --set data.train="$shard" --run-dir "$3"' \
    "$WORK/train.bin" "$TRAIN" "$WORK/base.ini" "$WORK/bad" >"$WORK/bad.log" 2>&1
status=$?
elapsed=$(($(date +%s) - start))
[ $status -ne 0 ] && [ $status -ne 124 ] && [ $elapsed -lt 30 ]
check parallel_bad_shard_on_one_rank_ends_all $? "status $status after ${elapsed}s: $(head -n 3 "$WORK/bad.log")"
grep -q "error (rank 1).*train.bin.missing" "$WORK/bad.log"
check parallel_bad_shard_message_names_rank $? "$(grep -m1 error "$WORK/bad.log")"

# A long tp=2 run in the background; returns once it has logged a step, with its mpirun
# pid in mpirun_pid and the pid of its last rank in last_rank_pid.
LONG=(--set train.max_steps=100000 --set io.checkpoint_every=0 --set train.eval_every=0)
start_long_run() {
    "${MPIRUN[@]}" -np 2 "$TRAIN" "$WORK/base.ini" "${LONG[@]}" --tp 2 --run-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
    mpirun_pid=$!
    for _ in $(seq 1 300); do
        grep -q '"kind":"train"' "$WORK/$1/metrics.jsonl" 2>/dev/null && break
        sleep 0.1
    done
    last_rank_pid=$(pgrep -f "decon-train .*$WORK/$1" | tail -n 1)
}

# A rank killed mid-run (SIGKILL: no chance to say anything) ends the others.
start_long_run killed
start=$(date +%s)
kill -9 "$last_rank_pid"
wait $mpirun_pid
status=$?
elapsed=$(($(date +%s) - start))
[ -n "$last_rank_pid" ] && [ $status -ne 0 ] && [ $status -ne 124 ] && [ $elapsed -lt 30 ]
check parallel_killed_rank_ends_all $? "status $status after ${elapsed}s (victim pid '$last_rank_pid')"
grep -qi "rank [0-9]" "$WORK/killed.log"
check parallel_killed_rank_named $? "$(tail -n 5 "$WORK/killed.log")"
pgrep -f "decon-train .*$WORK/killed" >/dev/null
check parallel_killed_no_rank_left $((1 - $?)) "ranks still running"

# SIGTERM to one rank only: every rank stops after the step, writes one checkpoint, exits 143.
start_long_run term
kill -TERM "$last_rank_pid"
wait $mpirun_pid
status=$?
[ $status -eq 143 ] && ls "$WORK"/term/ckpt/step_*.h5 >/dev/null 2>&1
check parallel_sigterm_one_rank_checkpoints_and_stops $? "status $status: $(tail -n 3 "$WORK/term.log")"
