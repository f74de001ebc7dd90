#!/usr/bin/env bash
# Resume is exact: N steps straight vs N/2, SIGKILL, --resume to N must give the same
# loss at every step and bit-identical final parameters and Adam moments. The model has a
# head size of its own ([model] head_dim = 24, d / heads = 16) and per-layer shapes (r_qk
# 24,16, r_v 8,24, MLP widths 128,96), which its checkpoints state.
source "$(dirname "$0")/common.sh"
make_shard "$WORK/train.bin" 60000 64 1
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/base.ini"
# Slow enough (a few seconds) that the kill lands while training is still running.
ARGS=(--set train.max_steps=240 --set io.checkpoint_every=120 --set train.eval_every=0
      --set model.hidden_size=64 --set model.intermediate_size=128 --set model.head_dim=24
      --set model.layer_head_dims=24,16 --set model.layer_value_head_dims=8,24
      --set model.layer_intermediate_sizes=128,96)

"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/straight" >"$WORK/straight.log" 2>&1
check resume_straight_run $? "straight run failed: $(tail -n 3 "$WORK/straight.log")"

"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/killed" >"$WORK/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
    [ -f "$WORK/killed/ckpt/step_00000120.h5" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.01
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
killed_at=$(grep -c '"kind":"train"' "$WORK/killed/metrics.jsonl")
[ "$killed_at" -lt 240 ]
check resume_kill_landed_mid_run $? "the run finished before it could be killed ($killed_at steps logged)"

"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/killed" --resume >"$WORK/resumed.log" 2>&1
check resume_resumed_run $? "resumed run failed: $(tail -n 3 "$WORK/resumed.log")"
grep -q "resumed from .*step_00000120.h5 at step 120" "$WORK/resumed.log"
check resume_picked_newest_checkpoint $? "$(grep -h resumed "$WORK/resumed.log")"

# Loss per step: the last line logged for each step (the resumed run re-logs steps the
# killed process had already done past the checkpoint).
losses() {
    python3 - "$1" <<'PY'
import json, sys
last = {}
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record["kind"] == "train":
        last[int(record["step"])] = repr(record["loss"])
print("\n".join(f"{s} {last[s]}" for s in sorted(last)))
PY
}
losses "$WORK/straight/metrics.jsonl" > "$WORK/straight.losses"
losses "$WORK/killed/metrics.jsonl" > "$WORK/resumed.losses"
[ "$(wc -l < "$WORK/straight.losses")" -eq 240 ] && cmp -s "$WORK/straight.losses" "$WORK/resumed.losses"
check resume_identical_loss_sequence $? "$(diff "$WORK/straight.losses" "$WORK/resumed.losses" | head -n 4)"

$PYTHON - "$WORK/killed/ckpt/step_00000240.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    assert "\nhead_dim = 24\n" in f["config"][()].decode(), "no 'head_dim = 24' in /config"
    assert f["params/layers.0.mixer.wq"].shape == (4 * 24, 64), f["params/layers.0.mixer.wq"].shape
    text = f["config"][()].decode()
    assert "\nlayer_head_dims = 24,16\n" in text and "\nlayer_value_head_dims = 8,24\n" in text, "no per-layer lists"
    shapes = {"layers.0.mixer.wv": (2 * 8, 64), "layers.0.mixer.wo": (64, 4 * 8),
              "layers.1.mixer.wq": (4 * 16, 64), "layers.1.mixer.wo": (64, 4 * 24),
              "layers.1.mlp.gate_proj": (96, 64), "layers.0.mlp.down_proj": (64, 128)}
    for name, shape in shapes.items():
        assert f["params/" + name].shape == shape, (name, f["params/" + name].shape, shape)
PY
check resume_checkpoint_states_head_dim_and_layer_shapes $? "the checkpoint lacks head_dim = 24, the per-layer lists or a layer's shape"

h5diff "$WORK/straight/ckpt/step_00000240.h5" "$WORK/killed/ckpt/step_00000240.h5" /params >"$WORK/diff.log" 2>&1 &&
    h5diff "$WORK/straight/ckpt/step_00000240.h5" "$WORK/killed/ckpt/step_00000240.h5" /optim >>"$WORK/diff.log" 2>&1
check resume_identical_final_parameters $? "h5diff: $(head -n 5 "$WORK/diff.log")"
exit 0
