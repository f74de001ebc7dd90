#!/usr/bin/env bash
# bin/decon-generate end to end on two small models with the corpus's vocabulary and
# tokenizer (a standard GQA model and an approx hybrid:even one, 60 steps each on a
# periodic stream of corpus ids in which every id occurs twice with different successors:
# a few dozen steps on the corpus itself give models that repeat one token for ever, which
# would make the greedy comparisons nearly vacuous; these follow their context):
# - greedy generation equals the greedy continuation computed independently by repeated
#   full forwards: for the standard model by the PyTorch Qwen2 forward of its export
#   (tests/scripts/qwen2_reference.py, float64), for the hybrid by decon's training
#   forward over the finished sequence (decon-eval --logits: its argmax at every
#   generated position is the next generated token);
# - a text prompt streams to stdout exactly the JSON's text, after the EOS separator;
# - the same seed repeats a sample, another seed and another sample of a batch differ;
# - a batch of unequal prompts (--prompt-file) gives each the ids it gets alone;
# - --max-context stops a sequence where the context ends;
# - mpirun -np 2 (tp = 2) gives the ids of one rank, and only rank 0 prints;
# - bad input is refused in one line each.
# The loop's stop bookkeeping (EOS included) is tests/unit/test_generate.c.
source "$(dirname "$0")/common.sh"
ensure_corpus generate_corpus
GENERATE="$ROOT/bin/decon-generate"
EVAL="$ROOT/bin/decon-eval"
EXPORT="$ROOT/bin/decon-export"
export OMPI_MCA_pml=ob1   # the transport the tests use: no UCX probing at each start

# The periodic stream, and a prompt of 8 of its ids.
"$PYTHON" - "$WORK/cycle_prompt.txt" <<'PY' | "$PYTHON" "$ROOT/input/corpus/write_shards.py" --vocab-size 8192 \
    "$WORK/cycle.bin" 2>/dev/null
import random, sys
rng = random.Random(5)
ids = rng.sample(range(300, 8000), 16)
cycle = ids + rng.sample(ids, 16)
open(sys.argv[1], "w").write(",".join(map(str, cycle[5:13])))
print(" ".join(str(cycle[i % 32]) for i in range(20000)))
PY
PROMPT_IDS=$(cat "$WORK/cycle_prompt.txt")
corpus_config "$WORK/model.ini" 2 1 1
TRAIN_ON_CYCLE=(--set train.max_steps=60 --set data.train="$WORK/cycle.bin" --set data.validation="$WORK/cycle.bin"
                --set data.tokenizer="$CORPUS/tokenizer.model")
"$TRAIN" "$WORK/model.ini" --run-dir "$WORK/standard" "${TRAIN_ON_CYCLE[@]}" >"$WORK/standard.log" 2>&1
check generate_train_standard $? "$(tail -n 3 "$WORK/standard.log")"
"$TRAIN" "$WORK/model.ini" --run-dir "$WORK/hybrid" "${TRAIN_ON_CYCLE[@]}" --set attention.variant=approx \
    --set attention.layout=hybrid:even >"$WORK/hybrid.log" 2>&1
check generate_train_approx_hybrid $? "$(tail -n 3 "$WORK/hybrid.log")"
STANDARD="$WORK/standard/ckpt/latest.h5"
HYBRID="$WORK/hybrid/ckpt/latest.h5"
PROMPT="The history of the city"

# gen NAME CHECKPOINT ARGS...: runs decon-generate on one thread into $WORK/NAME.{json,out,err}.
gen() {
    local name=$1 ckpt=$2
    shift 2
    "$GENERATE" "$ckpt" --threads 1 --json "$WORK/$name.json" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    check "generate_runs_$name" $? "$(tail -n 2 "$WORK/$name.err")"
}
# field NAME EXPR: a Python expression over the JSON document j (sequences: s).
field() {
    "$PYTHON" -c "import json,sys; j=json.load(open(sys.argv[1])); s=j['sequences']; print($2)" "$WORK/$1.json"
}

# ---- greedy = repeated full forwards ---------------------------------------------------
gen standard "$STANDARD" --prompt-ids "$PROMPT_IDS" --greedy --max-new 30
grep 'tokens/s' "$WORK/standard.err" | sed 's/^/    /'
"$EXPORT" "$STANDARD" "$WORK/hf" >"$WORK/export.log" 2>&1
check generate_export_standard $? "$(tail -n 2 "$WORK/export.log")"
"$PYTHON" - "$WORK/standard.json" "$WORK/hf" "$ROOT/tests/scripts" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3])
import qwen2_reference
s = json.load(open(sys.argv[1]))["sequences"][0]
model = qwen2_reference.Qwen2(sys.argv[2])
ids, want, ties = list(s["prompt_ids"]), [], 0
for got in s["generated_ids"]:
    row = model.logits(ids)[-1]
    best = int(row.argmax())
    # A near tie (top two within fp32 rounding of decon's logits) may go either way.
    if got != best and abs(float(row[best] - row[got])) < 1e-5:
        ties += 1
        best = got
    want.append(best)
    ids.append(best)
ok = want == s["generated_ids"] and s["stop"] == "max-new" and len(want) == 30 and len(set(want)) >= 5
print(f"    torch greedy {want[:12]}... ({len(set(want))} distinct), decon {s['generated_ids'][:12]}..., near ties {ties}")
print(("PASS" if ok else "FAIL") + " generate_greedy_standard_equals_torch_qwen2_repeated_forwards" +
      ("" if ok else f": torch {want}, decon {s['generated_ids']}, stop {s['stop']}"))
PY

gen hybrid "$HYBRID" --prompt-ids "$PROMPT_IDS" --greedy --max-new 30
field hybrid "' '.join(map(str, s[0]['prompt_ids'] + s[0]['generated_ids']))" \
    | "$PYTHON" "$ROOT/input/corpus/write_shards.py" --vocab-size 8192 "$WORK/hybrid_ids.bin" 2>/dev/null
length=$(field hybrid "len(s[0]['prompt_ids']) + len(s[0]['generated_ids'])")
"$EVAL" "$HYBRID" --ppl "$WORK/hybrid_ids.bin" --ctx "$length" --max-windows 1 --threads 1 \
    --logits "$WORK/hybrid.npy" >"$WORK/hybrid_eval.log" 2>&1
check generate_hybrid_full_forward $? "$(tail -n 2 "$WORK/hybrid_eval.log")"
"$PYTHON" - "$WORK/hybrid.json" "$WORK/hybrid.npy" <<'PY'
import json, sys
import numpy as np
s = json.load(open(sys.argv[1]))["sequences"][0]
logits = np.load(sys.argv[2])
tokens = s["prompt_ids"] + s["generated_ids"]
P, bad, ties = len(s["prompt_ids"]), [], 0
for p in range(P - 1, len(tokens) - 1):
    best, got = int(logits[p].argmax()), tokens[p + 1]
    if best != got:
        if logits[p][best] - logits[p][got] < 1e-5: ties += 1
        else: bad.append((p, best, got))
ok = not bad and len(s["generated_ids"]) == 30 and len(set(s["generated_ids"])) >= 5
print(f"    approx hybrid:even: {len(tokens) - P} generated positions ({len(set(s['generated_ids']))} distinct ids), "
      f"full-forward argmax equal, near ties {ties}")
print(("PASS" if ok else "FAIL") + " generate_greedy_approx_hybrid_equals_full_forward_argmax" +
      ("" if ok else f": (position, argmax, generated) {bad[:5]}"))
PY

# ---- text: streamed, after the document separator --------------------------------------
gen text "$STANDARD" --prompt "$PROMPT" --greedy --max-new 24
"$PYTHON" - "$WORK/text.json" "$WORK/text.out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
s = j["sequences"][0]
streamed = open(sys.argv[2], encoding="utf-8").read()
ok = streamed == s["prompt_text"] + s["text"] + "\n" and s["text"] != ""
print(("PASS" if ok else "FAIL") + " generate_stdout_streams_the_prompt_and_generated_text" +
      ("" if ok else f": stdout {streamed!r}, JSON {s['prompt_text'] + s['text']!r}"))
ok = s["prompt_ids"][0] == 3 and j["settings"]["document_separator_id"] == 3 and len(s["prompt_ids"]) == 6
print(("PASS" if ok else "FAIL") + " generate_text_prompt_starts_after_the_eos_separator" +
      ("" if ok else f": prompt ids {s['prompt_ids']}, settings {j['settings']}"))
PY

# ---- sampling: seeds and streams -------------------------------------------------------
gen seed7 "$STANDARD" --prompt "$PROMPT" --temperature 1 --seed 7 --batch 2 --max-new 16
gen seed7_again "$STANDARD" --prompt "$PROMPT" --temperature 1 --seed 7 --batch 2 --max-new 16
gen seed8 "$STANDARD" --prompt "$PROMPT" --temperature 1 --seed 8 --batch 2 --max-new 16
a=$(field seed7 "[q['generated_ids'] for q in s]")
[ "$a" = "$(field seed7_again "[q['generated_ids'] for q in s]")" ]
check generate_same_seed_same_samples $? "seed 7 twice gave different ids"
[ "$a" != "$(field seed8 "[q['generated_ids'] for q in s]")" ]
check generate_other_seed_other_samples $? "seeds 7 and 8 gave the same ids: $a"
[ "$(field seed7 "s[0]['generated_ids'] != s[1]['generated_ids']")" = True ]
check generate_batch_samples_are_independent_streams $? "the two samples of --batch 2 are equal: $a"

# ---- a batch of unequal prompts = each alone; tp = 2 = one rank -----------------------
printf '%s\n%s\r\n%s\n' "$PROMPT" "Once upon a time there was a king who lived in a castle near the sea" "In 1850," \
    >"$WORK/prompts.txt"
gen batch "$STANDARD" --prompt-file "$WORK/prompts.txt" --greedy --max-new 24
gen alone1 "$STANDARD" --prompt "Once upon a time there was a king who lived in a castle near the sea" --greedy --max-new 24
gen alone2 "$STANDARD" --prompt "In 1850," --greedy --max-new 24
alone="$(field text "s[0]['generated_ids']") $(field alone1 "s[0]['generated_ids']") $(field alone2 "s[0]['generated_ids']")"
batched=$(field batch "' '.join(str(q['generated_ids']) for q in s)")
[ "$(field batch "sorted(set(len(q['prompt_ids']) for q in s)) != [len(s[0]['prompt_ids'])] * 3")" = True ] &&
    [ "$batched" = "$alone" ]
check generate_batch_of_unequal_prompts_equals_each_alone $? "batched $batched, alone $alone"
grep -q '^\[sequence 3 of 3: prompt 3, sample 1; 24 tokens, stop max-new\]$' "$WORK/batch.out"
check generate_batch_prints_each_sequence_whole $? "$(head -n 4 "$WORK/batch.out")"

mpirun --oversubscribe -np 2 "$GENERATE" "$STANDARD" --threads 1 --prompt-file "$WORK/prompts.txt" --greedy \
    --max-new 24 --json "$WORK/tp2.json" >"$WORK/tp2.out" 2>"$WORK/tp2.err"
check generate_runs_tp2 $? "$(tail -n 3 "$WORK/tp2.err")"
[ "$(field tp2 "j['settings']['tensor_parallel']") $(field tp2 "' '.join(str(q['generated_ids']) for q in s)")" = "2 $batched" ]
check generate_tp2_equals_one_rank $? "tp 2: $(field tp2 "' '.join(str(q['generated_ids']) for q in s)")"
[ "$(grep -c '^\[sequence' "$WORK/tp2.out")" -eq 3 ] && [ "$(grep -c 'tokens/s' "$WORK/tp2.err")" -eq 1 ]
check generate_tp2_rank0_alone_prints $? "$(cat "$WORK/tp2.out" "$WORK/tp2.err" | head -n 8)"

# ---- the context's end -----------------------------------------------------------------
count=$(field standard "len(s[0]['prompt_ids'])")
gen ids "$STANDARD" --prompt-ids "$PROMPT_IDS" --greedy --max-new 24 --max-context $((count + 5))
[ "$(field ids "s[0]['stop'], s[0]['generated_ids'], j['settings']['document_separator_id']")" = \
  "$(field standard "'max-context', s[0]['generated_ids'][:5], None")" ]
check generate_max_context_stops_where_the_context_ends $? "$(field ids "s[0]['stop'], s[0]['generated_ids']")"

# ---- bad input: one line each ----------------------------------------------------------
make_shard "$WORK/train.bin" 4000 64 1
make_shard "$WORK/val.bin" 1000 64 2
write_small_config "$WORK/small.ini"
"$TRAIN" "$WORK/small.ini" --run-dir "$WORK/synthetic" --set train.max_steps=1 >"$WORK/synthetic.log" 2>&1 ||
    fail generate_train_synthetic "$(tail -n 2 "$WORK/synthetic.log")"
guard_outputs "$WORK/standard.json"
printf 'first\n\nthird\n' >"$WORK/blank_line.txt"
expect_error generate_empty_prompt "--prompt: the prompt is empty" "$GENERATE" "$STANDARD" --prompt ""
expect_error generate_empty_line_in_prompt_file "$WORK/blank_line.txt:2: the prompt is empty" \
    "$GENERATE" "$STANDARD" --prompt-file "$WORK/blank_line.txt"
expect_error generate_empty_prompt_ids "--prompt-ids: the prompt is empty" "$GENERATE" "$STANDARD" --prompt-ids ""
expect_error generate_prompt_longer_than_max_context "--prompt: the prompt has 6 tokens (with the document separator), but --max-context 4 leaves room for at most 3" \
    "$GENERATE" "$STANDARD" --prompt "$PROMPT" --max-context 4
expect_error generate_unknown_token_id "--prompt-ids: token 8192 (the 2. id) is not in the vocabulary: ids are 0 to 8191" \
    "$GENERATE" "$STANDARD" --prompt-ids 3,8192
expect_error generate_no_tokenizer_reachable "no tokenizer reachable" \
    "$GENERATE" "$WORK/synthetic/ckpt/latest.h5" --prompt-ids 3,4
expect_error generate_missing_tokenizer_option "--tokenizer $WORK/none.model cannot be read" \
    "$GENERATE" "$STANDARD" --prompt "$PROMPT" --tokenizer "$WORK/none.model"
expect_error generate_missing_checkpoint "$WORK/none.h5" "$GENERATE" "$WORK/none.h5" --prompt "$PROMPT"
expect_error generate_missing_prompt_file "--prompt-file $WORK/none.txt: cannot read it" \
    "$GENERATE" "$STANDARD" --prompt-file "$WORK/none.txt"
expect_error generate_bad_max_new "--max-new '0': expected an integer in [1," "$GENERATE" "$STANDARD" --prompt a --max-new 0
expect_error generate_bad_temperature "--temperature" "$GENERATE" "$STANDARD" --prompt a --temperature -1
expect_error generate_bad_top_p "--top-p" "$GENERATE" "$STANDARD" --prompt a --top-p 1.5
expect_error generate_bad_batch "--batch 'two': expected an integer" "$GENERATE" "$STANDARD" --prompt a --batch two
expect_error generate_bad_prompt_ids "--prompt-ids '3,,4': expected token ids separated by commas" \
    "$GENERATE" "$STANDARD" --prompt-ids 3,,4
expect_error generate_max_context_over_the_limit "--max-context 70000 is more than $STANDARD allows (65536 positions)" \
    "$GENERATE" "$STANDARD" --prompt a --max-context 70000
expect_error generate_conflicting_prompts "give one of --prompt, --prompt-file and --prompt-ids, once (--prompt-ids is the second)" \
    "$GENERATE" "$STANDARD" --prompt a --prompt-ids 3,4
expect_error generate_no_prompt "no prompt given" "$GENERATE" "$STANDARD"
expect_error generate_json_is_a_directory "cannot write the JSON report $WORK: it is a directory" \
    "$GENERATE" "$STANDARD" --prompt a --json "$WORK"
exit 0
