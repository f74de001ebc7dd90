#!/usr/bin/env bash
# bin/decon-lowrank (A3 / SVD compression, docs/design.md "Low-rank compression (A3)") on
# a small standard model (GQA 4/2 heads, d_h 8, Q/K/V biases) trained on the shipped
# corpus: at full rank the output's perplexity equals the original's; with pairs 0 and 2
# of every query/key head zeroed, QK rank 4 is exact (kept pairs at their own frequencies,
# the query scale compensating 1/sqrt(r)); at half rank A3's and SVD's outputs load in
# decon-eval (perplexities printed), A3's functional losses are <= SVD's for every layer
# and component, 2 MPI ranks give the same model, A3 stays near the original,
# decon-generate and decon-analyze run on it, and decon-train resumes from it at tp = 2
# (resharded) with a first loss where evaluation puts it; bad input is one line each,
# outputs intact.
source "$(dirname "$0")/common.sh"
ensure_corpus lowrank_corpus
LOWRANK="$ROOT/bin/decon-lowrank"
EVAL="$ROOT/bin/decon-eval"
GENERATE="$ROOT/bin/decon-generate"

corpus_config "$WORK/model.ini" 2 1 1
"$TRAIN" "$WORK/model.ini" --run-dir "$WORK/run" --set train.max_steps=48 >"$WORK/train.log" 2>&1
check lowrank_train $? "$(tail -n 3 "$WORK/train.log")"
ORIGINAL="$WORK/run/ckpt/latest.h5"

# test_loss CHECKPOINT NAME: the loss on the first 64 windows of the test split (JSON).
test_loss() {
    "$EVAL" "$1" --ppl "$CORPUS/test.bin" --max-windows 64 --threads 1 --json "$WORK/$2.json" >"$WORK/$2.eval.log" 2>&1 ||
        { echo "nan"; return; }
    "$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['perplexity']['results'][0]['loss'])" "$WORK/$2.json"
}
# compress NAME ARGS...: decon-lowrank ORIGINAL on the validation split into $WORK/NAME.h5.
compress() {
    local name=$1
    shift
    "$LOWRANK" "$ORIGINAL" --calibration "$CORPUS/val.bin" --tokens 4096 --threads 1 "$@" --out "$WORK/$name.h5" \
        >"$WORK/$name.log" 2>&1
    check "lowrank_runs_$name" $? "$(tail -n 2 "$WORK/$name.log")"
}
# close A B TOLERANCE: |A - B| <= TOLERANCE |B|
close() { "$PYTHON" -c "import sys; a, b, t = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= t * abs(b) else 1)" "$@"; }

original=$(test_loss "$ORIGINAL" original)

# ---- full rank = the original --------------------------------------------------------------
compress full --qk-rank 8 --ov-rank 8 --mlp-width 64
full=$(test_loss "$WORK/full.h5" full)
close "$full" "$original" 1e-5
check lowrank_full_rank_same_perplexity $? "test loss $full vs the original's $original"

# ---- exact below full rank: with pairs 0 and 2 of every query/key head zeroed, A3's QK at
# rank 4 keeps pairs 1 and 3 at their own frequencies (theta^(-2/8), theta^(-6/8): a plain
# head of 4 would turn by theta^0, theta^(-2/4)), the 1/sqrt(4) scale compensated, and
# the logits are the zeroed model's (a wrong frequency or scale would show here; this small
# model's perplexity barely depends on attention).
cp "$ORIGINAL" "$WORK/zeroed.h5"
"$PYTHON" - "$WORK/zeroed.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    for l in range(2):
        for name, heads in (("q", 4), ("k", 2)):
            for kind in ("w", "b"):
                t = f[f"params/layers.{l}.mixer.{kind}{name}"]
                a = t[...]
                for j in range(heads):
                    for i in (0, 2):
                        a[j * 8 + i, ...] = 0
                        a[j * 8 + i + 4, ...] = 0
                t[...] = a
PY
ORIGINAL="$WORK/zeroed.h5" compress zeroed_qk4 --qk-rank 4
grep -q 'layer_rope_pairs=1,3;1,3;' "$WORK/zeroed_qk4.log"
check lowrank_qk_keeps_the_nonzero_pairs $? "$(grep -o 'layer_rope_pairs=.*' "$WORK/zeroed_qk4.log")"
for name in zeroed zeroed_qk4; do
    "$EVAL" "$WORK/$name.h5" --ppl "$CORPUS/test.bin" --ctx 64 --max-windows 1 --threads 1 --logits "$WORK/$name.npy" \
        >"$WORK/$name.logits.log" 2>&1 || echo "decon-eval failed: $(tail -n 2 "$WORK/$name.logits.log")"
done
"$PYTHON" - "$WORK/zeroed.npy" "$WORK/zeroed_qk4.npy" <<'PY'
import sys, numpy as np
a, b = (np.load(p).astype(np.float64) for p in sys.argv[1:])
relative = np.linalg.norm(a - b) / np.linalg.norm(a)
print(f"   zeroed pairs, qk rank 4 vs 8: logits relative difference {relative:.2e}")
sys.exit(0 if relative < 1e-5 else 1)
PY
check lowrank_qk_rank4_of_zeroed_pairs_is_exact $? "the rank-4 model's logits differ from the zeroed original's"

# ---- half rank: A3 and SVD -----------------------------------------------------------------
compress a3 --budget 0.5
compress svd --budget 0.5 --method svd
a3=$(test_loss "$WORK/a3.h5" a3)
svd=$(test_loss "$WORK/svd.h5" svd)
"$PYTHON" - "$original" "$a3" "$svd" <<'PY'
import math, sys
o, a, s = map(float, sys.argv[1:])
print(f"   test perplexity: original {math.exp(o):.2f}, budget 0.5 (d_h 8 -> 4, m 64 -> 32): "
      f"A3 {math.exp(a):.2f}, SVD {math.exp(s):.2f}")
PY
grep -E '^(parameters|KV cache)' "$WORK/a3.log" | sed 's/^/   /'
[ "$a3" != nan ] && [ "$svd" != nan ]
check lowrank_outputs_load_in_decon_eval $? "$(tail -n 2 "$WORK/a3.eval.log" "$WORK/svd.eval.log")"
# Every "loss X (svd Y)" of the A3 run: A3's objective is that loss (up to rounding).
"$PYTHON" - "$WORK/a3.log" <<'PY'
import re, sys
pairs = re.findall(r"(qk|ov|mlp) \d+->\d+ loss (\S+) \(svd (\S+)\)", open(sys.argv[1]).read())
bad = [p for p in pairs if float(p[1]) > float(p[2]) * (1 + 1e-9) + 1e-12]
sys.exit(0 if len(pairs) == 6 and not bad else 1)
PY
check lowrank_a3_losses_not_above_svd $? "$(grep '^layer' "$WORK/a3.log")"
# The same over 2 MPI ranks (each its share of the windows, statistics summed): the same model.
mpirun --oversubscribe -np 2 "$LOWRANK" "$ORIGINAL" --calibration "$CORPUS/val.bin" --tokens 4096 --threads 1 \
    --budget 0.5 --out "$WORK/a3_np2.h5" >"$WORK/a3_np2.log" 2>&1
check lowrank_runs_on_2_ranks $? "$(tail -n 2 "$WORK/a3_np2.log")"
a3_np2=$(test_loss "$WORK/a3_np2.h5" a3_np2)
close "$a3_np2" "$a3" 1e-5
check lowrank_2_ranks_same_model $? "test loss $a3_np2 on 2 ranks vs $a3 on 1"
close "$a3" "$original" 0.02
check lowrank_a3_half_rank_near_original $? "test loss $a3 vs the original's $original (more than 2% apart)"

"$GENERATE" "$WORK/a3.h5" --prompt-ids 1,2,3 --max-new 8 --greedy --threads 1 >"$WORK/gen.out" 2>"$WORK/gen.err"
check lowrank_generate_runs $? "$(tail -n 2 "$WORK/gen.err")"

# decon-analyze reads it: a recording from decon-eval, spectra with its weights.
"$EVAL" "$WORK/a3.h5" --record "$WORK/attn.h5" --record-sequences 2 --threads 1 >"$WORK/record.log" 2>&1 &&
    "$ROOT/bin/decon-analyze" "$WORK/attn.h5" --metrics --svd --checkpoint "$WORK/a3.h5" --out "$WORK/analysis" \
        >"$WORK/analyze.log" 2>&1
check lowrank_decon_analyze_reads_it $? "$(tail -n 2 "$WORK/record.log" "$WORK/analyze.log")"

# ---- training on from it: tp = 2, the keys it prints --------------------------------------
step=$("$PYTHON" -c "import re,sys; print(re.search(r'step (\d+) kept', open(sys.argv[1]).read()).group(1))" "$WORK/a3.log")
mkdir -p "$WORK/resumed/ckpt"
cp "$WORK/a3.h5" "$WORK/resumed/ckpt/$(printf 'step_%08d.h5' "$step")"
read -r -a keys <<<"$(sed -n 's/^resume with: //p' "$WORK/a3.log")"
mpirun --oversubscribe -np 2 "$TRAIN" "$WORK/model.ini" --run-dir "$WORK/resumed" --tp 2 --resume "${keys[@]}" \
    --set train.max_steps=$((step + 3)) >"$WORK/resumed.log" 2>&1
check lowrank_resume_tp2 $? "$(tail -n 3 "$WORK/resumed.log")"
first=$(sed -n "s/^.*step *$((step + 1))\/[0-9]* | loss *\([0-9.]*\).*/\1/p" "$WORK/resumed.log" | head -n 1)
"$PYTHON" -c "import sys; sys.exit(0 if sys.argv[1] and abs(float(sys.argv[1]) - float(sys.argv[2])) < 0.5 else 1)" \
    "$first" "$a3"
check lowrank_resume_continues_from_the_evaluated_loss $? "first resumed loss '$first' vs the test loss $a3"

# ---- bad input -------------------------------------------------------------------------------
make_shard "$WORK/vocab64.bin" 4000 64 7
mkdir -p "$WORK/out"
guard_outputs "$WORK/out" "$ORIGINAL"
bad=("$LOWRANK" "$ORIGINAL" --calibration "$CORPUS/val.bin" --tokens 256 --out "$WORK/out/x.h5")
expect_error lowrank_bad_qk_rank "larger than the head size" "${bad[@]}" --qk-rank 10
expect_error lowrank_bad_ov_rank "larger than the head size" "${bad[@]}" --ov-rank 9
expect_error lowrank_bad_mlp_width "larger than the MLP width" "${bad[@]}" --mlp-width 65
expect_error lowrank_bad_odd_qk_rank "odd" "${bad[@]}" --qk-rank 3
expect_error lowrank_bad_budget_zero "(0, 1]" "${bad[@]}" --budget 0
expect_error lowrank_bad_budget_above_one "(0, 1]" "${bad[@]}" --budget 1.5
expect_error lowrank_bad_no_component "no component given" "${bad[@]}"
expect_error lowrank_bad_vocabulary "vocab_size 64" "$LOWRANK" "$ORIGINAL" --calibration "$WORK/vocab64.bin" \
    --budget 0.5 --out "$WORK/out/x.h5"
expect_error lowrank_bad_compressed_input "already has per-layer shapes" "$LOWRANK" "$WORK/a3.h5" \
    --calibration "$CORPUS/val.bin" --budget 0.5 --out "$WORK/out/x.h5"
expect_error lowrank_bad_rope_pair_count "lists 1 pairs" "$TRAIN" "$WORK/model.ini" --run-dir "$WORK/out/run" \
    --set model.layer_head_dims=4,8 --set "model.layer_rope_pairs=0;;"
