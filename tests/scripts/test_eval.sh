#!/usr/bin/env bash
# decon-eval end to end: train a small model on a synthetic shard, evaluate it at two
# contexts, check the JSON report and that the perplexity at the trained context with
# stride = context equals exp(the trainer's final validation loss) on the same file
# (16 windows of 32 tokens: the trainer's validation covers exactly those windows), run
# the cloze / choice tasks and --skip on a hybrid model, and check that bad input gives
# one error line and a non-zero exit.
source "$(dirname "$0")/common.sh"
EVAL="$ROOT/bin/decon-eval"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 512 64 2          # + EOS = 513 tokens = 16 windows of 32 + 1
write_small_config "$WORK/good.ini"
"$TRAIN" "$WORK/good.ini" --set train.max_steps=20 >"$WORK/train.log" 2>&1
check eval_train_for_checkpoint $? "training failed: $(tail -n 3 "$WORK/train.log")"
CKPT="$WORK/run/ckpt/latest.h5"

"$EVAL" "$CKPT" --ppl "$WORK/val.bin" --ctx 32,48 --stride 16 --threads 1 --json "$WORK/eval.json" \
    >"$WORK/eval.log" 2>&1
rc=$?
check eval_runs $rc "rc=$rc: $(tail -n 5 "$WORK/eval.log")"
"$PYTHON" - "$WORK/eval.json" "$WORK/run/metrics.jsonl" <<'PY' >"$WORK/check.log" 2>&1
import json, math, sys
report = json.load(open(sys.argv[1]))
rows = report["perplexity"]["results"]
assert [(r["context"], r["stride"]) for r in rows] == [(32, 16), (48, 16)], rows
for r in rows:
    assert r["tokens_scored"] == 512 and r["windows"] == r["windows_total"], r
    assert 1.0 < r["perplexity"] < 3 * 64 and abs(math.log(r["perplexity"]) - r["loss"]) < 1e-9, r
assert not rows[0]["extrapolated"] and rows[1]["extrapolated"], rows
assert report["step"] == 20 and report["model"]["plan"] == "SS", report["model"]
print("ok")
PY
check eval_json_report $? "$(tail -n 3 "$WORK/check.log")"

# Stride = context = the trained 32: the same 512 targets as the trainer's validation.
"$EVAL" "$CKPT" --ppl "$WORK/val.bin" --ctx 32 --stride 32 --threads 1 --json "$WORK/same.json" >"$WORK/same.log" 2>&1
"$PYTHON" - "$WORK/same.json" "$WORK/run/metrics.jsonl" <<'PY' >"$WORK/check.log" 2>&1
import json, math, sys
row = json.load(open(sys.argv[1]))["perplexity"]["results"][0]
validation = [json.loads(l) for l in open(sys.argv[2]) if '"validation"' in l][-1]
assert validation["step"] == 20, validation
error = abs(row["perplexity"] - math.exp(validation["loss"])) / math.exp(validation["loss"])
assert row["windows"] == 16 and row["tokens_scored"] == 512, row
assert error < 1e-5, (row["perplexity"], math.exp(validation["loss"]), error)
print("ok", row["perplexity"], math.exp(validation["loss"]))
PY
check eval_ppl_equals_trainer_validation $? "$(tail -n 3 "$WORK/check.log")"

# Cloze and multiple choice on hand-written files of valid ids.
printf '%s\n' '{"context": [5, 6, 7, 8, 9], "target": [10, 11]}' '{"context": [1, 2], "target": [3]}' \
    > "$WORK/cloze.jsonl"
printf '%s\n' '{"context": [5, 6, 7], "choices": [[1, 2], [3, 4], [8], [9, 10, 11]], "label": 1}' \
    '{"context": [12], "choices": [[13], [14]], "label": 0}' > "$WORK/choice.jsonl"
"$EVAL" "$CKPT" --cloze "$WORK/cloze.jsonl" --choice "$WORK/choice.jsonl" --length-normalize --threads 1 \
    --json "$WORK/tasks.json" >"$WORK/tasks.log" 2>&1
"$PYTHON" - "$WORK/tasks.json" <<'PY' >"$WORK/check.log" 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
cloze, choice = r["cloze"]["results"][0], r["choice"]["results"][0]
assert cloze["examples"] == 2 and cloze["target_tokens"] == 3 and cloze["mean_log_likelihood"] < 0, cloze
assert choice["examples"] == 2 and abs(choice["chance"] - 0.375) < 1e-12 and r["choice"]["length_normalized"], r
assert "perplexity" not in r
print("ok")
PY
check eval_cloze_and_choice $? "$(tail -n 3 "$WORK/check.log") $(tail -n 3 "$WORK/tasks.log")"

# --skip on a model without non-standard layers says so; on a hybrid it prints both rows.
"$EVAL" "$CKPT" --ppl "$WORK/val.bin" --ctx 32 --skip --threads 1 >"$WORK/skip.log" 2>&1
grep -q "no non-standard layer" "$WORK/skip.log" && ! grep -q "^  skip " "$WORK/skip.log"
check eval_skip_standard_model_says_so $? "$(cat "$WORK/skip.log")"
"$TRAIN" "$WORK/good.ini" --set attention.variant=mlp --set attention.layout=hybrid:even --set train.max_steps=5 \
    --run-dir "$WORK/hybrid" >"$WORK/hybrid.log" 2>&1
"$EVAL" "$WORK/hybrid/ckpt/latest.h5" --ppl "$WORK/val.bin" --ctx 32 --skip --threads 1 --json "$WORK/hybrid.json" \
    >"$WORK/skip.log" 2>&1
"$PYTHON" - "$WORK/hybrid.json" <<'PY' >"$WORK/check.log" 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
assert r["model"]["plan"] == "MS" and r["skip"]["skipped_layers"] == [1], r
modes = [x["model"] for x in r["perplexity"]["results"]]
assert modes == ["full", "skip"], modes
full, skip = (x["loss"] for x in r["perplexity"]["results"])
assert full != skip, (full, skip)
print("ok")
PY
check eval_skip_hybrid_model $? "$(tail -n 3 "$WORK/check.log") $(tail -n 4 "$WORK/skip.log")"

# Bad input (more in test_bad_input_eval.sh): expect_error in common.sh.
eval_error() { expect_error "$1" "$2" "$EVAL" "${@:3}"; }
eval_error eval_bad_missing_checkpoint "nope.h5 does not exist" "$WORK/nope.h5" --ppl "$WORK/val.bin"
head -c 3000 "$(readlink -f "$CKPT")" > "$WORK/truncated.h5"
eval_error eval_bad_corrupt_checkpoint "truncated.h5" "$WORK/truncated.h5" --ppl "$WORK/val.bin"
echo "not hdf5" > "$WORK/text.h5"
eval_error eval_bad_not_a_checkpoint "not an HDF5 file" "$WORK/text.h5" --ppl "$WORK/val.bin"
printf '%s\n' '{"context": [1], "target": [2]}' '{"context": [1, 2], "target": 7}' > "$WORK/bad.jsonl"
eval_error eval_bad_jsonl_line "bad.jsonl:2: \"target\" must be an array" "$CKPT" --cloze "$WORK/bad.jsonl"
printf '%s\n' '{"context": [1], "choices": [[2], [64]], "label": 0}' > "$WORK/bad_choice.jsonl"
eval_error eval_bad_jsonl_token_id "bad_choice.jsonl:1: token id 64" "$CKPT" --choice "$WORK/bad_choice.jsonl"
make_shard "$WORK/big_vocab.bin" 500 200 3
eval_error eval_bad_ppl_token_out_of_vocab "big_vocab.bin" "$CKPT" --ppl "$WORK/big_vocab.bin"
eval_error eval_bad_missing_ppl_file "missing.bin" "$CKPT" --ppl "$WORK/missing.bin"
eval_error eval_bad_context_longer_than_file "ctx 600 needs at least 601 tokens" "$CKPT" --ppl "$WORK/val.bin" --ctx 600
eval_error eval_bad_context_over_limit "ctx 70000 is longer than the 65536" "$CKPT" --ppl "$WORK/val.bin" --ctx 32,70000
eval_error eval_bad_stride "stride 40 is longer than --ctx 32" "$CKPT" --ppl "$WORK/val.bin" --ctx 32 --stride 40
eval_error eval_bad_ctx_syntax "expected an integer" "$CKPT" --ppl "$WORK/val.bin" --ctx 32,abc
eval_error eval_bad_nothing_to_do "nothing to evaluate" "$CKPT"
eval_error eval_bad_unknown_option "unknown option --bogus" "$CKPT" --bogus 1
exit 0
