#!/usr/bin/env bash
# Kill soak (docs/design.md "Kill soak"): a tp 2 run under mpirun (checkpoints every 2
# steps, recordings every 10) loses a random rank to SIGKILL at least 10 times, at random
# moments and (about every other kill, by the seeded coin) as a checkpoint write starts;
# each time mpirun must end the other rank within seconds and --resume must continue. The
# final checkpoint must equal an uninterrupted run's bit for bit (h5diff on /params and
# /optim, and every /state attribute), and so must attn.h5 and the logged losses.
# Reproducible: DECON_SOAK_SEED=<seed> replays a soak (the moments are in training steps).
source "$(dirname "$0")/common.sh"
SEED=${DECON_SOAK_SEED:-20261203}
RANDOM=$SEED
echo "# kill soak seed $SEED (replay: DECON_SOAK_SEED=$SEED bash $0)"
make_shard "$WORK/train.bin" 60000 64 1
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/base.ini"
STEPS=200
KILLS=10
ARGS=(--tp 2 --set train.max_steps=$STEPS --set io.checkpoint_every=2 --set io.keep_checkpoints=3
      --set train.eval_every=0 --set io.record_every=10 --set io.record_sequences=2)
MPIRUN=(timeout -k 5 60 mpirun --oversubscribe -np 2 "$TRAIN" "$WORK/base.ini" "${ARGS[@]}")
BUDGET=150   # seconds for the whole soak; it must never hang

"${MPIRUN[@]}" --run-dir "$WORK/straight" >"$WORK/straight.log" 2>&1
check kill_soak_uninterrupted_run $? "$(tail -n 3 "$WORK/straight.log")"

run="$WORK/soak"
kills=0 mid_write=0 slow_ends=0 launches=0 why=""
lines() { [ -f "$run/metrics.jsonl" ] && wc -l < "$run/metrics.jsonl" || echo 0; }
while [ $kills -lt $KILLS ] && [ $SECONDS -lt $BUDGET ]; do
    before=$(lines)
    "${MPIRUN[@]}" --run-dir "$run" --resume >>"$WORK/soak.log" 2>&1 &
    launcher=$!
    launched_at=$SECONDS
    launches=$((launches + 1))
    # The moment, in training progress (robust under load): after 1..10 new steps, then
    # either at once plus 0..9 ms (mode 0) or as the next checkpoint write starts (mode 1).
    mode=$((RANDOM % 2))
    steps=$((1 + RANDOM % 10))
    delay=$((RANDOM % 10))
    while kill -0 $launcher 2>/dev/null && [ "$(lines)" -lt $((before + steps)) ]; do sleep 0.005; done
    if [ $mode -eq 0 ]; then
        sleep "$(printf '0.00%d' $delay)"
    else
        while kill -0 $launcher 2>/dev/null && ! ls "$run/ckpt/" 2>/dev/null | grep -q '\.h5\.tmp$'; do sleep 0.001; done
    fi
    launcher_mpirun=$(pgrep -P $launcher -x mpirun)
    mapfile -t ranks < <([ -n "$launcher_mpirun" ] && pgrep -P "$launcher_mpirun" -x decon-train)
    if [ ${#ranks[@]} -eq 2 ]; then
        victim=${ranks[$((RANDOM % 2))]}
        kill -KILL "$victim" 2>/dev/null && kills=$((kills + 1))
        killed_at=$SECONDS
        writing=$(ls "$run/ckpt/" 2>/dev/null | grep '\.h5\.tmp$')
        [ -n "$writing" ] && mid_write=$((mid_write + 1))
    fi
    wait $launcher
    rc=$?
    # 124: timeout ended a hung mpirun (a killed rank ends mpirun with 137 itself).
    [ $rc -eq 124 ] && why="$why; mpirun hung after a kill"
    for pid in "${ranks[@]}"; do  # gone, or a zombie awaiting its reaper (state Z)
        state=$(ps -o stat= -p "$pid" 2>/dev/null)
        [ -n "$state" ] && [ "${state#Z}" = "$state" ] && why="$why; rank pid $pid ($state) outlived mpirun" &&
            kill -KILL "$pid"
    done
    [ ${#ranks[@]} -eq 2 ] && [ $((SECONDS - killed_at)) -gt 20 ] && slow_ends=$((slow_ends + 1))
    echo "#   run $launches: rank pid $victim killed $((killed_at - launched_at)) s after launch, after step" \
         "$(tail -n 1 "$run/metrics.jsonl" | sed -n 's/.*"step":\([0-9]*\).*/\1/p')${writing:+, while writing $writing};" \
         "mpirun ended $((SECONDS - killed_at)) s later (status $rc)"
    [ ${#ranks[@]} -eq 2 ] || { [ $rc -eq 0 ] && break; }  # finished before a kill could land
done
echo "# $kills kills in $launches launches, $mid_write during a checkpoint write, $SECONDS s"
[ $kills -ge $KILLS ] && [ -z "$why" ] && [ $slow_ends -eq 0 ]
check kill_soak_ten_kills_each_ending_every_rank $? "$kills kills of $KILLS${why}; $slow_ends runs outlived their killed rank by > 20 s"
[ $mid_write -ge 1 ]
check kill_soak_kills_during_checkpoint_writes $? "no kill landed while a checkpoint was being written"

"${MPIRUN[@]}" --run-dir "$run" --resume >"$WORK/final.log" 2>&1
check kill_soak_final_resume $? "$(tail -n 3 "$WORK/final.log")"

final=$(printf 'step_%08d.h5' $STEPS)
h5diff "$WORK/straight/ckpt/$final" "$run/ckpt/$final" /params >"$WORK/diff.log" 2>&1 &&
    h5diff "$WORK/straight/ckpt/$final" "$run/ckpt/$final" /optim >>"$WORK/diff.log" 2>&1
check kill_soak_identical_params_and_moments $? "h5diff: $(head -n 5 "$WORK/diff.log")"
# The attention recordings too: re-recorded steps replace theirs, nothing is lost or doubled.
h5diff --exclude-path /config "$WORK/straight/attn.h5" "$run/attn.h5" >"$WORK/attn.diff" 2>&1  # /config names the run_dir
check kill_soak_identical_recordings $? "h5diff attn.h5: $(head -n 5 "$WORK/attn.diff")"
state() { h5dump -A -g /state "$1" | grep -v '^HDF5 '; }
diff <(state "$WORK/straight/ckpt/$final") <(state "$run/ckpt/$final") >"$WORK/state.diff"
check kill_soak_identical_state $? "$(head -n 6 "$WORK/state.diff")"

# Every metrics line is whole JSON (a kill never tears one), and the last loss logged for
# each step equals the uninterrupted run's.
$PYTHON - "$WORK/straight/metrics.jsonl" "$run/metrics.jsonl" <<'PY'
import json, sys
def losses(path):
    last = {}
    for line in open(path):
        r = json.loads(line)
        if r["kind"] == "train":
            last[r["step"]] = r["loss"]
    return last
a, b = losses(sys.argv[1]), losses(sys.argv[2])
sys.exit(0 if a == b and len(a) > 0 else f"{sum(a.get(s) != b.get(s) for s in set(a) | set(b))} steps differ")
PY
check kill_soak_identical_losses $? "metrics.jsonl"
exit 0
