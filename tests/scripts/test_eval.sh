#!/usr/bin/env bash
# decon-eval end to end: train a small model on a synthetic shard, evaluate it at two
# contexts, check the JSON report and that the perplexity at the trained context with
# stride = context equals exp(the trainer's final validation loss) on the same file
# (16 windows of 32 tokens: the trainer's validation covers exactly those windows), run
# the cloze / choice tasks and --skip on a hybrid model, and check that bad input gives
# one error line and a non-zero exit; a model with [model] head_dim != d/h evaluates as the
# reference computes it. Perplexities (strided, extrapolated, skipped),
# cloze log-likelihoods and greedy matches, and choice predictions are compared with an
# independent float64 numpy forward of the same checkpoint (tests/scripts/reference_lm.py).
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
# The float64 reference: perplexity with the evaluator's windows (measured agreement ~2e-9).
"$PYTHON" - "$WORK/eval.json" "$CKPT" "$WORK/val.bin" "$ROOT" <<'PY' >"$WORK/check.log" 2>&1
import json, math, sys
sys.path.insert(0, sys.argv[4] + "/tests/scripts")
import reference_lm
report = json.load(open(sys.argv[1]))
rows = report["perplexity"]["results"]
assert [(r["context"], r["stride"]) for r in rows] == [(32, 16), (48, 16)], rows
assert not rows[0]["extrapolated"] and rows[1]["extrapolated"], rows
assert report["step"] == 20 and report["model"]["plan"] == "SS", report["model"]
model, tokens = reference_lm.Model(sys.argv[2], "SS"), reference_lm.read_shard(sys.argv[3])
for r in rows:
    ppl, scored, windows = model.perplexity(tokens, r["context"], r["stride"])
    assert r["tokens_scored"] == scored == 512 and r["windows"] == r["windows_total"] == windows, (r, scored, windows)
    assert abs(r["perplexity"] - ppl) < 1e-6 * ppl and abs(math.log(r["perplexity"]) - r["loss"]) < 1e-9, (r, ppl)
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

# Cloze and multiple choice. The files are made from the reference's predictions so that
# each task has one right and one wrong example, every decision clear by > 1e-3 in log p
# (fp32 rounding is ~1e-6): a cloze passage whose target is the reference's greedy
# continuation and one whose target is its least likely token; a choice question labelled
# with the reference's best choice and one labelled with its second best.
"$PYTHON" - "$CKPT" "$WORK" "$ROOT" <<'PY' >"$WORK/make_tasks.log" 2>&1
import json, sys
sys.path.insert(0, sys.argv[3] + "/tests/scripts")
import numpy as np
import reference_lm
model, work = reference_lm.Model(sys.argv[1], "SS"), sys.argv[2]
def clear_greedy(context, steps):  # greedy continuation, or None when a step is a near tie
    seq = list(context)
    for _ in range(steps):
        lp = np.sort(model.log_probs(seq)[-1])
        if lp[-1] - lp[-2] < 1e-3:
            return None
        seq.append(int(np.argmax(model.log_probs(seq)[-1])))
    return seq[len(context):]
contexts = [[5, 6, 7, 8, 9], [20, 21, 22], [30, 31, 32, 33], [40, 41], [50, 51, 52]]
right = next((c, t) for c in contexts for t in [clear_greedy(c, 2)] if t)
wrong = ([1, 2], [int(np.argmin(model.log_probs([1, 2])[-1]))])
with open(work + "/cloze.jsonl", "w") as f:
    for c, t in (right, wrong):
        f.write(json.dumps({"context": c, "target": t}) + "\n")
def scores(context, choices):
    return [model.log_likelihood(context, c)[0] / len(c) for c in choices]
questions = [([5, 6, 7], [[1, 2], [3, 4], [8], [9, 10, 11]]), ([12], [[13], [14], [15]]), ([20], [[21], [22, 23], [24]]),
             ([30, 31], [[32], [33], [34, 35]]), ([40], [[41, 42], [43], [44]]), ([50], [[51], [52], [53, 54]])]
clear = [(c, ch) for c, ch in questions if np.all(np.diff(sorted(scores(c, ch))) > 1e-3)]
(c1, ch1), (c2, ch2) = clear[:2]
# The second is labelled with its second-best choice: wrong for the right predictor, and
# also for one that picks the worst choice.
best1, second2 = int(np.argmax(scores(c1, ch1))), int(np.argsort(scores(c2, ch2))[-2])
with open(work + "/choice.jsonl", "w") as f:
    f.write(json.dumps({"context": c1, "choices": ch1, "label": best1}) + "\n")
    f.write(json.dumps({"context": c2, "choices": ch2, "label": second2}) + "\n")
cloze = [model.log_likelihood(c, t) for c, t in (right, wrong)]
json.dump({"cloze_mean_ll": sum(ll for ll, _ in cloze) / 2, "cloze_correct": sum(g for _, g in cloze),
           "cloze_tokens": len(right[1]) + 1, "choice_correct": 1, "chance": (1 / len(ch1) + 1 / len(ch2)) / 2},
          open(work + "/expected_tasks.json", "w"))
print("ok")
PY
check eval_reference_makes_tasks $? "$(tail -n 3 "$WORK/make_tasks.log")"
"$EVAL" "$CKPT" --cloze "$WORK/cloze.jsonl" --choice "$WORK/choice.jsonl" --length-normalize --threads 1 \
    --json "$WORK/tasks.json" >"$WORK/tasks.log" 2>&1
"$PYTHON" - "$WORK/tasks.json" "$WORK/expected_tasks.json" <<'PY' >"$WORK/check.log" 2>&1
import json, sys
r, want = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
cloze, choice = r["cloze"]["results"][0], r["choice"]["results"][0]
assert cloze["examples"] == 2 and cloze["target_tokens"] == want["cloze_tokens"], cloze
assert cloze["correct"] == want["cloze_correct"] == 1, (cloze, want)
assert abs(cloze["mean_log_likelihood"] - want["cloze_mean_ll"]) < 1e-5, (cloze, want)
assert choice["examples"] == 2 and choice["correct"] == want["choice_correct"], (choice, want)
assert abs(choice["chance"] - want["chance"]) < 1e-12 and r["choice"]["length_normalized"], (r, want)
assert "perplexity" not in r
print("ok", cloze["mean_log_likelihood"], want["cloze_mean_ll"])
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
"$PYTHON" - "$WORK/hybrid.json" "$WORK/hybrid/ckpt/latest.h5" "$WORK/val.bin" "$ROOT" <<'PY' >"$WORK/check.log" 2>&1
import json, sys
sys.path.insert(0, sys.argv[4] + "/tests/scripts")
import reference_lm
r = json.load(open(sys.argv[1]))
assert r["model"]["plan"] == "MS" and r["skip"]["skipped_layers"] == [1], r
modes = [x["model"] for x in r["perplexity"]["results"]]
assert modes == ["full", "skip"], modes
model, tokens = reference_lm.Model(sys.argv[2], "MS"), reference_lm.read_shard(sys.argv[3])
for row, skip in zip(r["perplexity"]["results"], [(), (0,)]):  # skip: layer 1 (0-based 0) removed whole
    ppl = model.perplexity(tokens, row["context"], row["stride"], skip)[0]
    assert abs(row["perplexity"] - ppl) < 1e-6 * ppl, (row, ppl)
print("ok")
PY
check eval_skip_hybrid_model $? "$(tail -n 3 "$WORK/check.log") $(tail -n 4 "$WORK/skip.log")"

# [model] head_dim = 12 != d / heads = 8 (Wq [48, 32], Wo [32, 48]): the evaluator's
# perplexity equals the float64 reference's, which takes d_h from the checkpoint's config.
"$TRAIN" "$WORK/good.ini" --set model.head_dim=12 --set train.max_steps=5 --run-dir "$WORK/head_dim" \
    >"$WORK/head_dim.log" 2>&1
"$EVAL" "$WORK/head_dim/ckpt/latest.h5" --ppl "$WORK/val.bin" --ctx 32 --threads 1 --json "$WORK/head_dim.json" \
    >"$WORK/head_dim_eval.log" 2>&1
"$PYTHON" - "$WORK/head_dim.json" "$WORK/head_dim/ckpt/latest.h5" "$WORK/val.bin" "$ROOT" <<'PY' >"$WORK/check.log" 2>&1
import json, sys
sys.path.insert(0, sys.argv[4] + "/tests/scripts")
import reference_lm
row = json.load(open(sys.argv[1]))["perplexity"]["results"][0]
model, tokens = reference_lm.Model(sys.argv[2], "SS"), reference_lm.read_shard(sys.argv[3])
assert model.head_dim == 12 and model.p["layers.0.mixer.wq"].shape == (48, 32), model.head_dim
ppl = model.perplexity(tokens, row["context"], row["stride"])[0]
assert abs(row["perplexity"] - ppl) < 1e-6 * ppl, (row, ppl)
print("ok", row["perplexity"], ppl)
PY
check eval_head_dim_equals_reference $? "$(tail -n 3 "$WORK/check.log") $(tail -n 2 "$WORK/head_dim_eval.log")"

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
