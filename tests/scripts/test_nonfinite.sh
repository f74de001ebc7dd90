#!/usr/bin/env bash
# Non-finite steps ([train] on_nonfinite; docs/design.md "Non-finite steps"), made for
# real: a checkpoint whose input-embedding row of one rare token holds +inf (written with
# h5py). Every batch holding that token gives a NaN loss and NaN gradients; the others
# train normally. stop: non-zero exit, one line naming the step and the tensors, no
# checkpoint of the poisoned step, the newest checkpoint intact. skip: the run completes,
# the bad steps change neither parameters nor Adam moments, metrics.jsonl counts them.
# Both at one rank and at tp 2 (the ranks agree on step and tensor).
source "$(dirname "$0")/common.sh"
# A Markov stream over tokens 0..62 with token 63 at every 1000th position: about one
# window in 30 holds it.
$PYTHON - <<'PY' | $PYTHON "$ROOT/input/corpus/write_shards.py" --vocab-size 64 "$WORK/train.bin"
import random
rng = random.Random(5)
table = [[rng.randrange(63) for _ in range(4)] for _ in range(63)]
a, b, out = 1, 2, []
for i in range(40000):
    c = 63 if i % 1000 == 500 else table[(a * 7 + b) % 63][rng.randrange(4)]
    out.append(c)
    a, b = b, c % 63
print(" ".join(map(str, out)))
PY
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/base.ini"
MPIRUN=(timeout -k 5 120 mpirun --oversubscribe)
MODEL=(--set model.tie_word_embeddings=0 --set train.eval_every=0 --set io.keep_checkpoints=100)
RESUME=(--resume --set train.max_steps=16 --set io.checkpoint_every=1)

"$TRAIN" "$WORK/base.ini" "${MODEL[@]}" --set train.max_steps=2 --run-dir "$WORK/start" >"$WORK/start.log" 2>&1
check nonfinite_first_two_steps $? "$(tail -n 3 "$WORK/start.log")"
$PYTHON - "$WORK/start/ckpt/step_00000002.h5" <<'PY'
import sys, h5py, numpy
with h5py.File(sys.argv[1], "r+") as f:
    f["params/embed_tokens"][63, :] = numpy.inf
PY
check nonfinite_poisoned_checkpoint $? "h5py could not write the checkpoint"
poisoned_sum=$(sha256sum < "$WORK/start/ckpt/step_00000002.h5")

# launch NP ARGS...: decon-train on one rank, or under mpirun at tp NP.
launch() {
    local np=$1; shift
    if [ "$np" -eq 1 ]; then "$TRAIN" "$@"; else "${MPIRUN[@]}" -np "$np" "$TRAIN" "$@" --tp "$np"; fi
}

# stop_case NAME NP: on_nonfinite = stop; sets STOP_STEP.
stop_case() {
    local name=$1 run="$WORK/$1" np=$2
    cp -r "$WORK/start" "$run"
    launch "$np" "$WORK/base.ini" "${MODEL[@]}" "${RESUME[@]}" --run-dir "$run" >"$run.out" 2>"$run.err"
    local rc=$?
    local errors line why=""
    errors=$(grep -c 'decon: error' "$run.err")
    line=$(grep 'decon: error' "$run.err" | head -n 1)
    [ "$rc" -ne 0 ] || why="exited 0"
    [ "$errors" -eq 1 ] || why="$why; $errors error lines: $(head -c 400 "$run.err")"
    STOP_STEP=$(echo "$line" | sed -n 's/.*error: step \([0-9]*\) is not finite.*/\1/p')
    [ -n "$STOP_STEP" ] || why="$why; no step named: $line"
    echo "$line" | grep -q "first in backward order lm_head; parameter embed_tokens itself holds non-finite values" ||
        why="$why; tensors not named: $line"
    check "${name}_one_line" "$([ -z "$why" ]; echo $?)" "$why"
    [ -n "$STOP_STEP" ] || return
    # No checkpoint of the poisoned step; the one before it is the newest, complete and loadable.
    local newest expected
    newest=$(ls "$run/ckpt" | grep '^step_.*\.h5$' | tail -n 1)
    expected=$(printf 'step_%08d.h5' $((STOP_STEP - 1)))
    why=""
    [ "$newest" = "$expected" ] || why="newest checkpoint $newest, want $expected"
    [ -z "$(ls "$run/ckpt" | grep '\.tmp$')" ] || why="$why; temporary files left: $(ls "$run/ckpt")"
    [ "$(h5dump -a /state/step "$run/ckpt/$newest" 2>/dev/null | grep -o '(0): [0-9]*')" = "(0): $((STOP_STEP - 1))" ] ||
        why="$why; $newest does not load with step $((STOP_STEP - 1))"
    [ "$(sha256sum < "$run/ckpt/step_00000002.h5")" = "$poisoned_sum" ] || why="$why; step_00000002.h5 changed"
    check "${name}_newest_checkpoint_intact" "$([ -z "$why" ]; echo $?)" "$why"
}
stop_case nonfinite_stop 1
single_stop=$STOP_STEP
stop_case nonfinite_stop_tp2 2
[ -n "$single_stop" ] && [ "$single_stop" = "$STOP_STEP" ] && [ "$single_stop" -gt 2 ]
check nonfinite_stop_same_step_at_tp2 $? "one rank stopped at step '$single_stop', tp 2 at '$STOP_STEP'"

# skip_case NAME NP: on_nonfinite = skip; sets SKIPPED (the skipped steps).
skip_case() {
    local name=$1 run="$WORK/$1" np=$2
    cp -r "$WORK/start" "$run"
    launch "$np" "$WORK/base.ini" "${MODEL[@]}" "${RESUME[@]}" --set train.on_nonfinite=skip --run-dir "$run" \
        >"$run.out" 2>"$run.err"
    check "${name}_completes" $? "$(tail -n 3 "$run.err")"
    # Every step 1..16 is one line, train or skipped; each train line counts the steps
    # skipped before it; the losses of trained steps are finite.
    SKIPPED=$($PYTHON - "$run/metrics.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in lines if r["kind"] in ("train", "skipped")]
trained = [r for r in steps if r["kind"] == "train" and r["step"] > 2]
skipped = [r["step"] for r in steps if r["kind"] == "skipped"]
assert sorted(r["step"] for r in steps) == list(range(1, 17)), "steps not each once"
assert all(r["loss"] is not None and r["loss"] < 10 for r in trained), "a trained step's loss is not finite"
for r in trained:
    before = sum(s < r["step"] for s in skipped)
    assert r["skipped_steps"] == before, f"step {r['step']} counts {r['skipped_steps']} skipped, want {before}"
assert 0 < len(skipped) < 14, f"{len(skipped)} steps skipped"
print(" ".join(map(str, skipped)))
PY
)
    check "${name}_metrics_count_skips" $? "metrics: $SKIPPED"
    # A skipped step leaves parameters and Adam moments bit for bit as they were; a
    # trained one changes them.
    local why="" s trained=0
    for s in $SKIPPED; do
        local before after
        before=$(printf '%s/ckpt/step_%08d.h5' "$run" $((s - 1)))
        after=$(printf '%s/ckpt/step_%08d.h5' "$run" "$s")
        h5diff -q "$before" "$after" /params >/dev/null 2>&1 && h5diff -q "$before" "$after" /optim >/dev/null 2>&1 ||
            why="$why; step $s changed the state"
    done
    for s in $(seq 3 16); do  # the last trained step
        echo " $SKIPPED " | grep -q " $s " || trained=$s
    done
    h5diff -q "$(printf '%s/ckpt/step_%08d.h5' "$run" $((trained - 1)))" \
        "$(printf '%s/ckpt/step_%08d.h5' "$run" "$trained")" /optim >/dev/null 2>&1 &&
        why="$why; trained step $trained left the moments unchanged"
    check "${name}_skipped_steps_change_nothing" "$([ -z "$why" ]; echo $?)" "${why#; }"
}
skip_case nonfinite_skip 1
single_skipped=$SKIPPED
skip_case nonfinite_skip_tp2 2
[ -n "$single_skipped" ] && [ "$single_skipped" = "$SKIPPED" ] && [ "${single_skipped%% *}" = "$single_stop" ]
check nonfinite_skip_same_steps_everywhere $? "skipped '$single_skipped' at one rank, '$SKIPPED' at tp 2; stop at $single_stop"
exit 0
