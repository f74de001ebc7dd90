#!/usr/bin/env bash
# Attention recordings end to end: recording must not change training (the losses of
# metrics.jsonl are bit-identical with and without [io] record_every), the file lists
# /step_N/layer_l/attn for every recorded step in `h5dump -H`, a resumed run replaces the
# steps it records again with the same records as the uninterrupted run, decon-eval --record reproduces the trainer's
# record of the same checkpoint, float16 and a layer subset read back in h5py, and each bad
# value of the new keys gives one error line.
source "$(dirname "$0")/common.sh"
EVAL="$ROOT/bin/decon-eval"
make_shard "$WORK/train.bin" 30000 64 1
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/base.ini"
ARGS=(--set train.max_steps=20 --set io.checkpoint_every=10 --set train.eval_every=10)

"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/plain" >"$WORK/plain.log" 2>&1
check recording_plain_run $? "run without recording failed: $(tail -n 3 "$WORK/plain.log")"
"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/rec" --set io.record_every=5 >"$WORK/rec.log" 2>&1
check recording_run $? "run with recording failed: $(tail -n 3 "$WORK/rec.log")"

# Loss per step (train and validation lines), as the exact decimal metrics.jsonl holds.
losses() {
    "$PYTHON" - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] in ("train", "validation"):
        print(r["kind"], int(r["step"]), repr(r["loss"]))
PY
}
losses "$WORK/plain/metrics.jsonl" > "$WORK/plain.losses"
losses "$WORK/rec/metrics.jsonl" > "$WORK/rec.losses"
[ "$(grep -c '^train' "$WORK/plain.losses")" -eq 20 ] && cmp -s "$WORK/plain.losses" "$WORK/rec.losses"
check recording_leaves_losses_bit_identical $? "$(diff "$WORK/plain.losses" "$WORK/rec.losses" | head -n 4)"
cmp -s "$WORK/plain/ckpt/step_00000020.h5" "$WORK/rec/ckpt/step_00000020.h5" ||
    h5diff "$WORK/plain/ckpt/step_00000020.h5" "$WORK/rec/ckpt/step_00000020.h5" /params >/dev/null 2>&1
check recording_leaves_parameters_bit_identical $? "final parameters differ"

# h5dump -H: every step (0 = initialisation, 5, 10, 15, 20) x every layer has an attn.
h5dump -H "$WORK/rec/attn.h5" > "$WORK/rec.dump" 2>&1
check recording_h5dump_reads_the_file $? "$(head -n 3 "$WORK/rec.dump")"
paths=$(awk '/^ *GROUP "step_/ {gsub(/[",{]/, "", $2); step = $2} /^ *GROUP "layer_/ {gsub(/[",{]/, "", $2); layer = $2}
             /^ *DATASET "attn"/ {print "/" step "/" layer "/attn"}' "$WORK/rec.dump" | sort | tr '\n' ' ')
want=$(for s in 0 10 15 20 5; do for l in 0 1; do echo "/step_$s/layer_$l/attn"; done; done | sort | tr '\n' ' ')
[ "$paths" = "$want" ]
check recording_h5dump_lists_step_layer_attn $? "got: $paths"
grep -q 'ATTRIBUTE "description"' "$WORK/rec.dump" && grep -q 'DATASET "logits_hist"' "$WORK/rec.dump" &&
    grep -q 'DATASET "tokens"' "$WORK/rec.dump"
check recording_h5dump_shows_descriptions_and_histograms $? "no description / logits_hist / tokens in h5dump -H"
[ "$(grep -c '"kind":"recording"' "$WORK/rec/metrics.jsonl")" -eq 5 ] && [ ! -e "$WORK/rec/attn.h5.tmp" ]
check recording_metrics_lines_and_no_temporary $? "$(grep -c recording "$WORK/rec/metrics.jsonl") recording lines"

# Resume from the step-10 checkpoint with the straight run's whole recording in place (as
# after a crash late in the run): steps 15 and 20 are recorded again and replace their
# groups, and the file ends as the straight run's did.
mkdir -p "$WORK/resumed/ckpt"
cp "$WORK/rec/ckpt/step_00000010.h5" "$WORK/resumed/ckpt/"
cp "$WORK/rec/attn.h5" "$WORK/resumed/attn.h5"
"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$WORK/resumed" --set io.record_every=5 --resume \
    >"$WORK/resumed.log" 2>&1
check recording_resumed_run $? "$(tail -n 3 "$WORK/resumed.log")"
ok=0
for s in 0 5 10 15 20; do
    h5diff "$WORK/rec/attn.h5" "$WORK/resumed/attn.h5" "/step_$s" "/step_$s" >"$WORK/h5diff.log" 2>&1 || { ok=1; break; }
done
steps=$(h5dump -H "$WORK/resumed/attn.h5" | grep -c '^   GROUP "step_')
[ "$ok" -eq 0 ] && [ "$steps" -eq 5 ] && grep -q "recorded attention at step 15" "$WORK/resumed.log"
check recording_resume_replaces_steps_identically $? "$steps step groups; $(head -n 3 "$WORK/h5diff.log")"

# decon-eval --record at the checkpoint's step reproduces the trainer's record of step 20.
"$EVAL" "$WORK/rec/ckpt/step_00000020.h5" --record "$WORK/eval.h5" --threads 1 >"$WORK/eval.log" 2>&1 &&
    h5diff "$WORK/rec/attn.h5" "$WORK/eval.h5" /step_20/layer_0/attn /step_20/layer_0/attn >"$WORK/h5diff.log" 2>&1 &&
    h5diff "$WORK/rec/attn.h5" "$WORK/eval.h5" /step_20/layer_1/logits_hist /step_20/layer_1/logits_hist \
        >>"$WORK/h5diff.log" 2>&1
check recording_eval_record_matches_training $? "$(tail -n 3 "$WORK/eval.log") $(head -n 3 "$WORK/h5diff.log")"

# float16 and a layer subset, read with h5py (make setup installs python3-h5py: missing is a failure).
"$TRAIN" "$WORK/base.ini" --set train.max_steps=4 --run-dir "$WORK/half" --set io.record_every=2 \
    --set io.record_dtype=float16 --set io.record_layers=2 --set io.record_sequences=3 >"$WORK/half.log" 2>&1
check recording_float16_run $? "$(tail -n 3 "$WORK/half.log")"
"$PYTHON" - "$WORK/half/attn.h5" >"$WORK/h5py.log" 2>&1 <<'PY'
import sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert sorted(f) == ["config", "step_0", "step_2", "step_4", "tokens"], sorted(f)
assert list(f["step_4"]) == ["layer_1"], list(f["step_4"])
g = f["step_4/layer_1"]
a = g["attn"]
assert a.dtype == np.float16 and a.shape == (3, 4, 32, 32), (a.dtype, a.shape)
A = a[...].astype(np.float64)
assert np.all(np.triu(A, 1) == 0)
assert np.allclose(A.sum(-1), 1, atol=32 * 2**-11)
assert g["logits_hist"][...].sum() == 3 * 4 * 32 * 33 // 2 == g["logits_hist"].attrs["count"]
assert len(g["logits_edges"]) == len(g["logits_hist"]) + 1
assert f.attrs["dtype"] == b"float16" and list(f.attrs["recorded_layers"]) == [1]
assert all("description" in d.attrs for d in (a, g["logits_hist"], g["logits_edges"], g["logits_stats"], f["tokens"]))
assert g.attrs["layer_id"] == 2 and g.attrs["scores_kind"] == b"pairwise"
PY
check recording_h5py_reads_float16_subset $? "$(tail -n 3 "$WORK/h5py.log")"

# Bad values: one error line each, non-zero exit (expect_error in common.sh).
recording_error() { expect_error "$1" "$2" "$TRAIN" "$WORK/base.ini" --run-dir "$WORK/bad" "${@:3}"; }
recording_error recording_bad_every "record_every" --set io.record_every=-1
recording_error recording_bad_sequences "record_sequences" --set io.record_sequences=0
recording_error recording_bad_layers_range "layer 3 is outside 1..2" --set io.record_every=5 --set io.record_layers=1,3
recording_error recording_bad_layers_zero "record_layers" --set io.record_layers=0
recording_error recording_bad_layers_twice "listed twice" --set io.record_layers=2,2
recording_error recording_bad_layers_text "record_layers" --set io.record_layers=first
recording_error recording_bad_dtype "record_dtype" --set io.record_dtype=float64
recording_error recording_needs_validation "needs [data] validation" --set io.record_every=5 --set data.validation=
recording_error recording_too_many_sequences "record_sequences" --set io.record_every=5 --set io.record_sequences=500
echo "not hdf5" > "$WORK/not.h5"
recording_error recording_foreign_file "not a readable HDF5 file" --set io.record_every=5 --set "io.record_path=$WORK/not.h5"
recording_error recording_other_setup "records a different setup" --set io.record_every=5 \
    --set "io.record_path=$WORK/rec/attn.h5" --set io.record_sequences=2
[ ! -e "$WORK/bad/attn.h5" ] && cmp -s <(h5dump -H "$WORK/rec/attn.h5" 2>&1) "$WORK/rec.dump"
check recording_bad_values_leave_files_alone $? "a refused run wrote a recording or changed an existing one"
exit 0
