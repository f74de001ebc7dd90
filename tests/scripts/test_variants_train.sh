#!/usr/bin/env bash
# Every token mixer, uniform and hybrid:even, trains the tiny preset on the shipped corpus
# for 60 steps: no NaN/Inf (the trainer stops on a non-finite loss) and a
# falling loss (mean of the last 20 logged steps well below the mean of the first 20).
source "$(dirname "$0")/common.sh"
CORPUS="$ROOT/data/corpus"
if [ ! -f "$CORPUS/train.bin" ]; then
    bash "$ROOT/input/corpus/build.sh" "$CORPUS" >"$WORK/corpus.log" 2>&1 ||
        { fail variants_corpus_build "corpus recipe failed: $(tail -n 3 "$WORK/corpus.log")"; exit 0; }
fi
VARIANTS="standard mlp approx approx-diag nonapx rndembqk fixedseqqk staticembqk mhe-add mhe-mul"
for variant in $VARIANTS; do
    for layout in uniform hybrid:even; do
        name="variant_trains_${variant}_${layout/:/_}"
        run="$WORK/${variant}_${layout/:/_}"
        "$TRAIN" "$ROOT/input/models/tiny.ini" --run-dir "$run" --set attention.variant="$variant" \
            --set attention.layout="$layout" --set train.max_steps=60 --set train.warmup_steps=10 \
            --set train.sequence_length=64 --set train.micro_batch_size=8 --set train.global_batch_size=8 \
            --set train.eval_every=0 --set io.checkpoint_every=0 --set io.log_every=1 >"$run.log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "$name" "exit $rc: $(grep -h 'error' "$run.log" | head -n 1)"
            continue
        fi
        verdict=$($PYTHON - "$run/metrics.jsonl" <<'PY'
import json, math, sys
losses = [r["loss"] for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"]
if not all(math.isfinite(x) for x in losses):
    print("non-finite loss"); sys.exit()
first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
print("ok" if last < first - 0.5 else f"loss did not fall enough: {first:.3f} -> {last:.3f}")
print(f"{first:.3f} -> {last:.3f}")
PY
)
        if [ "$(echo "$verdict" | head -n 1)" = ok ]; then
            pass "$name"
            echo "   $variant $layout: loss $(echo "$verdict" | tail -n 1)"
        else
            fail "$name" "$(echo "$verdict" | head -n 1)"
        fi
    done
done
exit 0
