#!/usr/bin/env bash
# One writer (docs/design.md "Metrics log: one writer"): under mpirun every event is one
# line of metrics.jsonl, not one per rank. Runs tp 2 + sp at np 2 and dp 2 x tp 2 at np 4
# with validation and recordings on, and counts the lines per kind and step; the other
# per-run outputs (config.ini, attn.h5, checkpoints) are written once, with no leftovers.
source "$(dirname "$0")/common.sh"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/base.ini"
MPIRUN=(timeout -k 5 120 mpirun --oversubscribe)
STEPS=6
ARGS=(--set train.max_steps=$STEPS --set train.eval_every=3 --set io.record_every=3 --set io.checkpoint_every=3
      --set io.record_sequences=2)

# count_lines NAME RUN: train lines for steps 1..STEPS, validation and recording lines at
# the steps that have them, one traffic line (after the first step), each exactly once.
count_lines() {
    $PYTHON - "$2/metrics.jsonl" "$STEPS" <<'PY'
import collections, json, sys
steps = int(sys.argv[2])
seen = collections.Counter()
for line in open(sys.argv[1]):
    r = json.loads(line)
    seen[(r["kind"], int(r["step"]))] += 1
expected = collections.Counter()
for s in range(1, steps + 1):
    expected[("train", s)] = 1
for s in (3, 6):
    expected[("validation", s)] = 1
for s in (0, 3, 6):
    expected[("recording", s)] = 1
expected[("traffic", 1)] = 1
if seen != expected:
    wrong = sorted(k for k in set(seen) | set(expected) if seen[k] != expected[k])
    sys.exit("lines per (kind, step) differ: " +
             ", ".join(f"{k[0]} {k[1]}: {seen[k]} (want {expected[k]})" for k in wrong[:6]))
print(f"# {sum(seen.values())} lines, each (kind, step) once")
PY
    check "$1" $? "$2/metrics.jsonl"
}

# once_outputs NAME RUN: config.ini once, no temporary or probe files left, attn.h5 holds
# each recorded step once, the checkpoints of steps 3 and 6.
once_outputs() {
    local run=$2 why=""
    local leftovers
    leftovers=$(find "$run" -name '*.tmp' -o -name '.write_probe*' | head -n 3)
    [ -z "$leftovers" ] || why="left behind: $leftovers"
    [ "$(grep -c '^\[model\]' "$run/config.ini")" -eq 1 ] || why="$why; config.ini holds [model] more than once"
    local groups
    groups=$(h5ls "$run/attn.h5" | awk '/^step_/ {print $1}' | tr '\n' ' ')
    [ "$groups" = "step_0 step_3 step_6 " ] || why="$why; attn.h5 groups: $groups"
    [ "$(ls "$run/ckpt" | tr '\n' ' ')" = "latest.h5 step_00000003.h5 step_00000006.h5 " ] ||
        why="$why; ckpt holds $(ls "$run/ckpt" | tr '\n' ' ')"
    [ -z "$why" ]
    check "$1" $? "$why"
}

"${MPIRUN[@]}" -np 2 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --tp 2 --sp --run-dir "$WORK/tp2" >"$WORK/tp2.log" 2>&1
check metrics_once_tp2_sp_run $? "$(tail -n 3 "$WORK/tp2.log")"
count_lines metrics_once_tp2_sp_lines "$WORK/tp2"
once_outputs metrics_once_tp2_sp_outputs "$WORK/tp2"

"${MPIRUN[@]}" -np 4 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --tp 2 --run-dir "$WORK/dp2tp2" >"$WORK/dp2tp2.log" 2>&1
check metrics_once_dp2_tp2_run $? "$(tail -n 3 "$WORK/dp2tp2.log")"
count_lines metrics_once_dp2_tp2_lines "$WORK/dp2tp2"
once_outputs metrics_once_dp2_tp2_outputs "$WORK/dp2tp2"

# The printed progress and validation lines come from one rank too.
[ "$(grep -c "^validation at step 3:" "$WORK/dp2tp2.log")" -eq 1 ] &&
    [ "$(grep -c "^checkpoint .*step_00000006.h5" "$WORK/dp2tp2.log")" -eq 1 ]
check metrics_once_dp2_tp2_printed_once $? "$(grep -E '^(validation|checkpoint)' "$WORK/dp2tp2.log" | head -n 4)"
exit 0
