#!/usr/bin/env bash
# Parallel training figures (issue 4), called by bench/run_all.sh: step time of the 70m
# shape at np=1 and at np=2 as tp=2, tp=2+sp and dp=2 (one OpenMP thread per rank, so
# the 2 ranks use the 2 cores that np=1 leaves half idle), and the bytes each rank sends
# per collective in one step next to the analytic volume.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.."
SHARD=data/corpus/train.bin
[ -f "$SHARD" ] || { echo "(no $SHARD: run make setup first)"; exit 0; }
WORK=$(mktemp -d /tmp/decon-bench-parallel.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ARGS=(input/models/70m.ini --set train.sequence_length=256 --set train.micro_batch_size=4
      --set train.global_batch_size=8 --set train.max_steps=5 --set train.eval_every=0 --set train.threads=1
      --set io.checkpoint_every=0 --set io.log_every=1 --set data.validation= --set train.warmup_steps=1)
median_step() {  # median step time of steps 2.. (step 1 pays first-touch and buffer growth)
    python3 - "$1" <<'PY'
import json, statistics, sys
times = [r["step_time_s"] for r in map(json.loads, open(sys.argv[1])) if r.get("kind") == "train" and r["step"] > 1]
print(f"{statistics.median(times):.3f}")
PY
}
run() {  # NAME RANKS ARGS... (MPIRUN_OPTIONS: extra mpirun options)
    local name=$1 ranks=$2
    shift 2
    mpirun --oversubscribe ${MPIRUN_OPTIONS:-} -np "$ranks" bin/decon-train "${ARGS[@]}" "$@" --run-dir "$WORK/$name" >"$WORK/$name.log" 2>&1 \
        || { echo "  $name failed: $(tail -n 2 "$WORK/$name.log")"; return; }
    local seconds
    seconds=$(median_step "$WORK/$name/metrics.jsonl")
    printf "  %-14s np=%d  %6.3f s/step  %7.0f tokens/s\n" "$name" "$ranks" "$seconds" \
        "$(python3 -c "print(8 * 256 / $seconds)")"
    grep -E "^  (tp|dp) " "$WORK/$name.log" | sed 's/^/    /'
}
echo "70m shape (d=512, 6 layers, 8 heads, vocab 8192), 8 x 256 tokens per step, 1 thread per rank"
run single 1
grep -o "sgemm peak .*" "$WORK/single.log" | sed 's/^/  (np=1, 1 thread: /; s/$/)/'
# Open MPI binds a rank to one core when np <= 2: a 2-thread rank needs --bind-to none.
MPIRUN_OPTIONS="--bind-to none" run single_2thr 1 --set train.threads=2
run tp2 2 --tp 2
run tp2_sp 2 --tp 2 --sp
run dp2 2
run dp2_zero1 2 --zero 1
