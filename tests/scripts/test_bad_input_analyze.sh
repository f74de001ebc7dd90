#!/usr/bin/env bash
# decon-analyze on bad input (command-line flags, attention recordings, --checkpoint files,
# --out), on one rank and under mpirun -np 2: each case must print exactly one
# "decon: error" line naming the file or option, exit 1, and leave the outputs of an
# earlier analysis in the same --out byte-identical (expect_error in common.sh).
source "$(dirname "$0")/common.sh"
ANALYZE="$ROOT/bin/decon-analyze"
export OMP_NUM_THREADS=1
make_shard "$WORK/train.bin" 20000 64 1 2>/dev/null
make_shard "$WORK/val.bin" 2000 64 2 2>/dev/null
write_small_config "$WORK/good.ini"
"$TRAIN" "$WORK/good.ini" --set train.max_steps=2 --set train.eval_every=0 --set io.record_every=2 \
    --set io.record_sequences=2 >"$WORK/train.log" 2>&1
check bad_analyze_train_for_recording $? "training failed: $(tail -n 3 "$WORK/train.log")"
REC="$WORK/run/attn.h5"
CKPT=$(readlink -f "$WORK/run/ckpt/latest.h5")
OUT="$WORK/out"
"$ANALYZE" "$REC" --checkpoint "$CKPT" --metrics --svd --logits --out "$OUT" >"$WORK/analyze.log" 2>&1
check bad_analyze_good_run_for_baseline $? "the baseline analysis failed: $(tail -n 3 "$WORK/analyze.log")"
guard_outputs "$OUT" "$WORK/run"
start=$SECONDS
# Every case writes into the baseline's --out if it gets that far.
bad_analyze() {
    local name=$1 text=$2
    shift 2
    expect_error "$name" "$text" "$ANALYZE" "$@" --out "$OUT"
}

# ---- command-line flags ----
expect_error bad_analyze_no_input "no recording given" "$ANALYZE" --metrics
expect_error bad_analyze_unknown_flag_last "unknown option --bogus" "$ANALYZE" "$REC" --out "$OUT" --bogus
expect_error bad_analyze_flag_without_value "--out needs a value" "$ANALYZE" "$REC" --out
bad_analyze bad_analyze_tol_word "--tol abc: expected a number in [0, 1]" "$REC" --tol abc
bad_analyze bad_analyze_tol_above_one "--tol 2: expected a number in [0, 1]" "$REC" --tol 2
bad_analyze bad_analyze_tol_negative "--tol -1e-3" "$REC" --tol -1e-3
bad_analyze bad_analyze_block_zero "--block 0" "$REC" --svd --block 0
bad_analyze bad_analyze_svd_sequences_zero "--svd-sequences 0" "$REC" --svd --svd-sequences 0
bad_analyze bad_analyze_checkpoint_count "--checkpoint given 1 time(s) for 2 recording(s)" "$REC" "$REC" \
    --checkpoint "$CKPT"

# ---- recordings ----
D="$WORK/damaged"
mkdir -p "$D"
"$PYTHON" - "$REC" "$D" "$ROOT/tests/scripts" <<'PY'
import sys
import h5py, numpy as np
sys.path.insert(0, sys.argv[3])
import h5_variants
from h5_variants import replace
good, out = sys.argv[1], sys.argv[2] + "/"
def variant(name, change):
    h5_variants.variant(good, out + name, change)
steps = [k for k in h5py.File(good, "r") if k.startswith("step_")]
step = steps[0]
variant("no_tokens.h5", lambda f: f.__delitem__("tokens"))
variant("tokens_shape.h5", lambda f: replace(f, "tokens", np.zeros((2, 5), np.int32)))
variant("attn_shape.h5", lambda f: replace(f, step + "/layer_1/attn", np.zeros((2, 4, 5, 5), np.float32)))
variant("attn_int.h5", lambda f: replace(f, step + "/layer_0/attn", np.zeros(f[step + "/layer_0/attn"].shape, np.int32)))
variant("no_heads.h5", lambda f: f.attrs.__delitem__("num_heads"))
variant("other_kind.h5", lambda f: f.attrs.__setitem__("kind", "decon analysis"))
variant("no_steps.h5", lambda f: [f.__delitem__(s) for s in steps])
variant("no_step_attribute.h5", lambda f: f[step].attrs.__delitem__("step"))
variant("layers_out_of_range.h5", lambda f: f.attrs.__setitem__("recorded_layers", np.array([0, 7], np.int32)))
variant("version.h5", lambda f: f.attrs.__setitem__("format_version", np.int32(2)))
def same_step_twice(f):
    f.copy(f[step], "step_99999999")
variant("duplicate_step.h5", same_step_twice)
PY
: > "$D/empty.h5"
head -c 2000 "$REC" > "$D/truncated.h5"
bad_analyze bad_analyze_missing_recording "$D/none.h5 does not exist" "$D/none.h5"
bad_analyze bad_analyze_recording_directory "$D" "$D"
bad_analyze bad_analyze_recording_empty "empty.h5" "$D/empty.h5"
bad_analyze bad_analyze_recording_truncated "truncated.h5" "$D/truncated.h5"
bad_analyze bad_analyze_recording_not_hdf5 "val.bin cannot be opened as HDF5" "$WORK/val.bin"
bad_analyze bad_analyze_recording_checkpoint "is HDF5 but not a decon attention recording (a checkpoint?" "$CKPT"
bad_analyze bad_analyze_recording_version "version.h5 has format_version 2" "$D/version.h5"
bad_analyze bad_analyze_recording_other_kind "other_kind.h5 is a 'decon analysis'" "$D/other_kind.h5"
bad_analyze bad_analyze_recording_no_heads "no_heads.h5" "$D/no_heads.h5"
bad_analyze bad_analyze_recording_no_tokens "no_tokens.h5" "$D/no_tokens.h5"
bad_analyze bad_analyze_recording_tokens_shape "tokens_shape.h5: /tokens is [2, 5]" "$D/tokens_shape.h5"
bad_analyze bad_analyze_recording_attn_shape "attn_shape.h5" "$D/attn_shape.h5"
bad_analyze bad_analyze_recording_attn_int "attn_int.h5" "$D/attn_int.h5"
bad_analyze bad_analyze_recording_no_steps "no_steps.h5 has no /step_<N> groups" "$D/no_steps.h5"
bad_analyze bad_analyze_recording_no_step_attribute "no_step_attribute.h5 is incomplete" "$D/no_step_attribute.h5"
bad_analyze bad_analyze_recording_layers_out_of_range "layers_out_of_range.h5: attribute recorded_layers" \
    "$D/layers_out_of_range.h5"
bad_analyze bad_analyze_recording_duplicate_step "both record step" "$D/duplicate_step.h5"

# ---- --checkpoint ----
bad_analyze bad_analyze_checkpoint_missing "checkpoint $WORK/none.h5 does not exist: check the path (expected a checkpoint" "$REC" --checkpoint "$WORK/none.h5"
bad_analyze bad_analyze_checkpoint_truncated "truncated.h5 cannot be opened as HDF5 (not HDF5, truncated or corrupt): pass an intact checkpoint" "$REC" --checkpoint "$D/truncated.h5"
bad_analyze bad_analyze_checkpoint_is_recording "attn.h5" "$REC" --checkpoint "$REC"

# ---- --out ----
expect_error bad_analyze_out_is_file "cannot create the output directory $WORK/good.ini" "$ANALYZE" "$REC" \
    --out "$WORK/good.ini"
mkdir "$OUT/run.json.tmp"   # the last per-run file cannot be written: none of the set may change
bad_analyze bad_analyze_out_write_fails "run.json.tmp" "$REC" --checkpoint "$CKPT" --metrics --svd --logits --tol 0.5
rmdir "$OUT/run.json.tmp"

# ---- under mpirun -np 2: one line for the job ----
MPIRUN=(mpirun --oversubscribe -np 2)
expect_error bad_analyze_np2_tol "--tol abc" "${MPIRUN[@]}" "$ANALYZE" "$REC" --tol abc --out "$OUT"
expect_error bad_analyze_np2_no_tokens "no_tokens.h5" "${MPIRUN[@]}" "$ANALYZE" "$D/no_tokens.h5" --out "$OUT"
expect_error bad_analyze_np2_checkpoint_truncated "truncated.h5" "${MPIRUN[@]}" "$ANALYZE" "$REC" \
    --checkpoint "$D/truncated.h5" --out "$OUT"
echo "# decon-analyze: $BAD_INPUT_CASES bad-input cases in $((SECONDS - start)) s"
exit 0
