#!/usr/bin/env bash
# decon-eval on bad input (command-line flags, checkpoints, --ppl shards, cloze / choice
# task files, --record targets): each case must print exactly one "decon: error" line
# naming the file, key or line, exit 1, and leave an earlier eval.json and attention
# recording byte-identical (expect_error in common.sh).
source "$(dirname "$0")/common.sh"
EVAL="$ROOT/bin/decon-eval"
make_shard "$WORK/train.bin" 20000 64 1 2>/dev/null
make_shard "$WORK/val.bin" 512 64 2 2>/dev/null
write_small_config "$WORK/good.ini"
"$TRAIN" "$WORK/good.ini" --set train.max_steps=2 --set train.eval_every=0 >"$WORK/train.log" 2>&1
check bad_eval_train_for_checkpoint $? "training failed: $(tail -n 3 "$WORK/train.log")"
CKPT=$(readlink -f "$WORK/run/ckpt/latest.h5")
OUT="$WORK/out"
mkdir -p "$OUT"
"$EVAL" "$CKPT" --ppl "$WORK/val.bin" --ctx 32 --threads 1 --json "$OUT/eval.json" --record "$OUT/attn.h5" \
    --record-sequences 2 >"$WORK/eval.log" 2>&1
check bad_eval_good_run_for_baseline $? "the baseline evaluation failed: $(tail -n 3 "$WORK/eval.log")"
guard_outputs "$OUT" "$WORK/run"
start=$SECONDS
# Every case would overwrite the baseline's report if it got that far.
bad_eval() {
    local name=$1 text=$2
    shift 2
    expect_error "$name" "$text" "$EVAL" "$@" --threads 1 --json "$OUT/eval.json"
}

# ---- command-line flags ----
expect_error bad_eval_no_checkpoint "no checkpoint given" "$EVAL" --ppl "$WORK/val.bin"
expect_error bad_eval_unknown_flag_last "unknown option --bogus" "$EVAL" "$CKPT" --ppl "$WORK/val.bin" --bogus
expect_error bad_eval_flag_without_value "--ppl needs a value" "$EVAL" "$CKPT" --ppl
bad_eval bad_eval_ctx_zero "--ctx '0': expected an integer in [1," "$CKPT" --ppl "$WORK/val.bin" --ctx 0
bad_eval bad_eval_ctx_word "--ctx 'abc'" "$CKPT" --ppl "$WORK/val.bin" --ctx abc
bad_eval bad_eval_ctx_empty "--ctx '': expected context lengths" "$CKPT" --ppl "$WORK/val.bin" --ctx ""
bad_eval bad_eval_stride_zero "--stride '0'" "$CKPT" --ppl "$WORK/val.bin" --stride 0
bad_eval bad_eval_threads_zero "--threads '0'" "$CKPT" --ppl "$WORK/val.bin" --threads 0
bad_eval bad_eval_max_windows_negative "--max-windows '-1'" "$CKPT" --ppl "$WORK/val.bin" --max-windows -1
bad_eval bad_eval_two_checkpoints "more than one checkpoint given" "$CKPT" "$CKPT" --ppl "$WORK/val.bin"
bad_eval bad_eval_record_option_alone "need --record FILE" "$CKPT" --ppl "$WORK/val.bin" --record-layers 1
expect_error bad_eval_json_missing_directory "cannot write the JSON report $WORK/nodir/eval.json" \
    "$EVAL" "$CKPT" --ppl "$WORK/val.bin" --json "$WORK/nodir/eval.json"
expect_error bad_eval_json_is_directory "cannot write the JSON report $OUT: it is a directory" \
    "$EVAL" "$CKPT" --ppl "$WORK/val.bin" --threads 1 --json "$OUT"
expect_error bad_eval_json_is_checkpoint "--json $WORK/run/ckpt/latest.h5 is the input file" \
    "$EVAL" "$WORK/run/ckpt/latest.h5" --ppl "$WORK/val.bin" --threads 1 --json "$WORK/run/ckpt/latest.h5"
expect_error bad_eval_json_is_task_file "is the input file $OUT/eval.json" \
    "$EVAL" "$CKPT" --cloze "$OUT/eval.json" --threads 1 --json "$OUT/eval.json"
expect_error bad_eval_np2 "decon-eval runs on one rank" mpirun --oversubscribe -np 2 "$EVAL" "$CKPT" --ppl "$WORK/val.bin"

# ---- checkpoints ----
mkdir -p "$WORK/ck"
"$PYTHON" - "$CKPT" "$WORK/ck" "$ROOT/tests/scripts" <<'PY'
import sys
import h5py, numpy as np
sys.path.insert(0, sys.argv[3])
import h5_variants
from h5_variants import replace
good, out = sys.argv[1], sys.argv[2] + "/"
def variant(name, change):
    h5_variants.variant(good, out + name, change)
config = h5py.File(good, "r")["config"][()].decode()
variant("no_config.h5", lambda f: f.__delitem__("config"))
variant("no_step.h5", lambda f: f["state"].attrs.__delitem__("step"))
variant("no_tensor.h5", lambda f: f.__delitem__("params/norm"))
variant("wrong_shape.h5", lambda f: replace(f, "params/layers.1.mlp.down_proj", np.zeros((4, 4), np.float32)))
variant("wrong_dtype.h5", lambda f: replace(f, "params/layers.1.mlp.down_proj", np.zeros((32, 64), np.int32)))
variant("config_number.h5", lambda f: replace(f, "config", np.float64(1.0)))
variant("config_bad_key.h5", lambda f: replace(f, "config", np.bytes_(config.replace("[train]", "[train]\nbogus_key = 1"))))
variant("config_bad_variant.h5", lambda f: replace(f, "config", np.bytes_(config.replace("variant = standard", "variant = sideways"))))
variant("version.h5", lambda f: f.attrs.__setitem__("format_version", np.int32(2)))
with h5py.File(out + "foreign.h5", "w", libver="latest") as f:   # checksummed, as decon writes
    f["data"] = np.arange(4)
with h5py.File(out + "unchecksummed.h5", "w") as f:               # h5py's default: no checksums
    f["data"] = np.arange(4)
PY
: > "$WORK/ck/empty.h5"
head -c 3000 "$CKPT" > "$WORK/ck/truncated.h5"
C="$WORK/ck"
bad_eval bad_eval_checkpoint_missing "$C/none.h5 does not exist" "$C/none.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_directory "$C is not a regular file" "$C" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_empty "empty.h5 is empty" "$C/empty.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_truncated "truncated.h5 is damaged" "$C/truncated.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_not_hdf5 "val.bin is not an HDF5 file" "$WORK/val.bin" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_foreign "foreign.h5 is an HDF5 file but not a decon checkpoint" "$C/foreign.h5" \
    --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_unchecksummed "unchecksummed.h5 is an HDF5 file without metadata checksums" \
    "$C/unchecksummed.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_version "version.h5 has format version 2" "$C/version.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_no_config "no_config.h5 is incomplete (no /config)" "$C/no_config.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_no_step "no_step.h5 is incomplete (no /state attribute step)" "$C/no_step.h5" \
    --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_no_tensor "no_tensor.h5 has no tensor /params/norm" "$C/no_tensor.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_wrong_shape "has shape [4, 4] but the model expects [32, 64]" "$C/wrong_shape.h5" \
    --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_wrong_dtype "layers.1.mlp.down_proj in checkpoint $C/wrong_dtype.h5 is not floating point" \
    "$C/wrong_dtype.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_config_not_text "/config is not a single string" "$C/config_number.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_config_bad_key "config_bad_key.h5: unknown key 'bogus_key' in [train]" \
    "$C/config_bad_key.h5" --ppl "$WORK/val.bin"
bad_eval bad_eval_checkpoint_config_bad_variant "variant = 'sideways' is unknown" "$C/config_bad_variant.h5" \
    --ppl "$WORK/val.bin"

# ---- --ppl token shards ----
make_damaged_shards "$WORK/train.bin" "$WORK/shards"
S="$WORK/shards"
bad_eval bad_eval_ppl_directory "$S is not a regular file" "$CKPT" --ppl "$S"
bad_eval bad_eval_ppl_empty "empty.bin is truncated" "$CKPT" --ppl "$S/empty.bin"
bad_eval bad_eval_ppl_magic "magic.bin is not a decon token shard" "$CKPT" --ppl "$S/magic.bin"
bad_eval bad_eval_ppl_version "version.bin has format version 2" "$CKPT" --ppl "$S/version.bin"
bad_eval bad_eval_ppl_width "width.bin has token width 3" "$CKPT" --ppl "$S/width.bin"
bad_eval bad_eval_ppl_truncated "truncated.bin is truncated" "$CKPT" --ppl "$S/truncated.bin"
bad_eval bad_eval_ppl_bad_id "bad_id.bin" "$CKPT" --ppl "$S/bad_id.bin"
bad_eval bad_eval_ppl_no_tokens "needs at least 33 tokens of $S/no_tokens.bin, which holds 0" "$CKPT" --ppl "$S/no_tokens.bin"

# ---- cloze and choice task files (JSON lines of token ids) ----
T="$WORK/tasks"
mkdir -p "$T"
task() { printf '%s\n' "${@:2}" > "$T/$1"; }
task bad_json.jsonl '{"context": [1, 2], "target": [3]}' '{"context": [1, 2], "target": [3'
task no_context.jsonl '{"target": [3]}'
task no_target.jsonl '{"context": [1, 2]}'
task empty_context.jsonl '{"context": [], "target": [3]}'
task negative_id.jsonl '{"context": [1, -2], "target": [3]}'
task fraction_id.jsonl '{"context": [1, 2.5], "target": [3]}'
task not_object.jsonl '[1, 2, 3]'
task trailing.jsonl '{"context": [1], "target": [2]} {"context": [1]}'
task too_long.jsonl "{\"context\": [$(seq -s, 1 70000 | sed 's/[0-9]*/1/g')], \"target\": [2]}"
: > "$T/empty.jsonl"
printf '{"context": [1], "target": [2]}\n{"context": [1\0], "target": [2]}\n' > "$T/nul.jsonl"
task label_out_of_range.jsonl '{"context": [1], "choices": [[2], [3]], "label": 2}'
task label_negative.jsonl '{"context": [1], "choices": [[2], [3]], "label": -1}'
task label_missing.jsonl '{"context": [1], "choices": [[2], [3]]}'
task label_text.jsonl '{"context": [1], "choices": [[2], [3]], "label": "0"}'
task one_choice.jsonl '{"context": [1], "choices": [[2]], "label": 0}'
task empty_choice.jsonl '{"context": [1], "choices": [[2], []], "label": 0}'
task choice_out_of_vocab.jsonl '{"context": [1], "choices": [[2], [99]], "label": 0}'
bad_eval bad_eval_cloze_missing_file "cannot open task file $T/none.jsonl" "$CKPT" --cloze "$T/none.jsonl"
bad_eval bad_eval_cloze_directory "task file $T is not a regular file" "$CKPT" --cloze "$T"
bad_eval bad_eval_cloze_bad_json "bad_json.jsonl:2: not valid JSON" "$CKPT" --cloze "$T/bad_json.jsonl"
bad_eval bad_eval_cloze_no_context "no_context.jsonl:1: missing \"context\"" "$CKPT" --cloze "$T/no_context.jsonl"
bad_eval bad_eval_cloze_no_target "no_target.jsonl:1: missing \"target\"" "$CKPT" --cloze "$T/no_target.jsonl"
bad_eval bad_eval_cloze_empty_context "empty_context.jsonl:1: \"context\" is empty" "$CKPT" \
    --cloze "$T/empty_context.jsonl"
bad_eval bad_eval_cloze_negative_id "negative_id.jsonl:1: token id -2" "$CKPT" --cloze "$T/negative_id.jsonl"
bad_eval bad_eval_cloze_fraction_id "fraction_id.jsonl:1: \"context\"[1] is not an integer" "$CKPT" \
    --cloze "$T/fraction_id.jsonl"
bad_eval bad_eval_cloze_not_object "not_object.jsonl:1:" "$CKPT" --cloze "$T/not_object.jsonl"
bad_eval bad_eval_cloze_trailing_text "trailing.jsonl:1:" "$CKPT" --cloze "$T/trailing.jsonl"
bad_eval bad_eval_cloze_too_long "too_long.jsonl:1: context + continuation need 70000 model inputs" "$CKPT" \
    --cloze "$T/too_long.jsonl"
bad_eval bad_eval_cloze_empty_file "empty.jsonl: no examples" "$CKPT" --cloze "$T/empty.jsonl"
bad_eval bad_eval_cloze_nul_byte "nul.jsonl:2: the line contains a NUL byte" "$CKPT" --cloze "$T/nul.jsonl"
bad_eval bad_eval_choice_label_out_of_range "label_out_of_range.jsonl:1: \"label\" is 2 but there are 2 choices" \
    "$CKPT" --choice "$T/label_out_of_range.jsonl"
bad_eval bad_eval_choice_label_negative "label_negative.jsonl:1: \"label\" is -1" "$CKPT" \
    --choice "$T/label_negative.jsonl"
bad_eval bad_eval_choice_label_missing "label_missing.jsonl:1: missing \"label\"" "$CKPT" --choice "$T/label_missing.jsonl"
bad_eval bad_eval_choice_label_text "label_text.jsonl:1: \"label\" must be an integer" "$CKPT" \
    --choice "$T/label_text.jsonl"
bad_eval bad_eval_choice_one_choice "one_choice.jsonl:1: \"choices\" has 1 entries" "$CKPT" --choice "$T/one_choice.jsonl"
bad_eval bad_eval_choice_empty_choice "empty_choice.jsonl:1: \"choices[1]\" is empty" "$CKPT" \
    --choice "$T/empty_choice.jsonl"
bad_eval bad_eval_choice_out_of_vocab "choice_out_of_vocab.jsonl:1: token id 99" "$CKPT" \
    --choice "$T/choice_out_of_vocab.jsonl"
bad_eval bad_eval_choice_cloze_file "no_target.jsonl:1: missing \"choices\"" "$CKPT" --choice "$T/no_target.jsonl"

# ---- --record targets ----
echo "not hdf5" > "$WORK/text.h5"
bad_eval bad_eval_record_other_setup "records a different setup" "$CKPT" --record "$OUT/attn.h5" --record-sequences 3
bad_eval bad_eval_record_foreign_file "text.h5" "$CKPT" --record "$WORK/text.h5"
bad_eval bad_eval_record_onto_checkpoint "$CKPT exists and is not a decon attention recording" "$CKPT" --record "$CKPT"
bad_eval bad_eval_record_missing_directory "$WORK/nodir" "$CKPT" --record "$WORK/nodir/attn.h5"
bad_eval bad_eval_record_layers_range "layer 3 is outside 1..2" "$CKPT" --record "$WORK/new.h5" --record-layers 3
bad_eval bad_eval_record_dtype "float64" "$CKPT" --record "$WORK/new.h5" --record-dtype float64
bad_eval bad_eval_record_tokens_bad_shard "magic.bin is not a decon token shard" "$CKPT" --record "$WORK/new.h5" \
    --record-tokens "$S/magic.bin"
[ ! -e "$WORK/new.h5" ] && [ ! -e "$WORK/new.h5.tmp" ]
check bad_eval_record_refusals_write_nothing $? "a refused --record left $(ls "$WORK"/new.h5* 2>/dev/null)"
echo "# decon-eval: $BAD_INPUT_CASES bad-input cases in $((SECONDS - start)) s"
exit 0
