#!/usr/bin/env bash
# The tiny preset learns real English: a short run on the shipped corpus must bring the
# validation loss well below the unigram entropy of the training tokens (what a model
# that ignores context can reach at best).
source "$(dirname "$0")/common.sh"
ensure_corpus train_corpus_build
unigram=$($PYTHON - "$CORPUS/train.bin" <<'PY'
import sys, numpy as np
raw = open(sys.argv[1], "rb").read()
width = int.from_bytes(raw[12:16], "little")
tokens = np.frombuffer(raw, dtype=np.uint16 if width == 2 else np.uint32, offset=64)
p = np.bincount(tokens).astype(np.float64)
p = p[p > 0] / p.sum()
print(f"{-(p * np.log(p)).sum():.4f}")
PY
)
"$TRAIN" "$ROOT/input/models/tiny.ini" --run-dir "$WORK/tiny" --set train.max_steps=260 \
    --set train.eval_every=0 --set io.checkpoint_every=0 >"$WORK/train.log" 2>&1
check train_corpus_tiny_runs $? "training failed: $(tail -n 3 "$WORK/train.log")"
validation=$(grep -o 'final validation loss [0-9.]*' "$WORK/train.log" | awk '{print $4}')
$PYTHON -c "import sys; v, u = float('${validation:-99}'), float('$unigram'); sys.exit(0 if v < u - 1.0 else 1)"
check train_corpus_validation_below_unigram_entropy $? "validation loss ${validation:-none} vs unigram entropy $unigram nats"
echo "   validation loss ${validation:-none} nats, unigram entropy $unigram nats"
exit 0
