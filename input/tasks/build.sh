#!/usr/bin/env bash
# Build decon-eval's task files from the corpus's held-out test documents.
#
#   bash input/tasks/build.sh CORPUS_DIR OUT_DIR [--cloze N] [--choice N] [--seed S] [--force]
#
# Writes OUT_DIR/cloze.jsonl, choice.jsonl and tasks.json (see input/tasks/README.md).
# Idempotent: skipped when OUT_DIR/stamp holds the same key (the builder's code, the
# tokenizer, the held-out text and the options) and the outputs exist.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: build.sh CORPUS_DIR OUT_DIR [options]
  --cloze N    cloze passages (default 400)
  --choice N   multiple-choice examples (default 400)
  --seed N     sampling seed (default 1234)
  --force      rebuild even when up to date
USAGE
}

CORPUS=""
OUT=""
CLOZE=400
CHOICE=400
SEED=1234
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cloze) CLOZE="$2"; shift ;;
        --choice) CHOICE="$2"; shift ;;
        --seed) SEED="$2"; shift ;;
        --force) FORCE=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) if [[ -z "$CORPUS" ]]; then CORPUS="$1"; elif [[ -z "$OUT" ]]; then OUT="$1"
           else echo "build.sh: too many arguments" >&2; usage >&2; exit 2; fi ;;
    esac
    shift
done
if [[ -z "$CORPUS" || -z "$OUT" ]]; then usage >&2; exit 2; fi
for n in "$CLOZE" "$CHOICE" "$SEED"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "build.sh: '$n' is not a non-negative integer" >&2; exit 2; }
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
for tool in spm_encode spm_decode; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "build.sh: $tool not found; install Debian's sentencepiece (input/corpus/build.sh does)" >&2; exit 1; }
done
for f in tokenizer.model test.bin; do
    [[ -s "$CORPUS/$f" ]] ||
        { echo "build.sh: $CORPUS/$f is missing; build the corpus first: bash input/corpus/build.sh $CORPUS" >&2; exit 1; }
done

# The held-out text the builder reads: the recipe's test.txt when kept, else test.bin.
TEXT="$CORPUS/work/split/test.txt"
[[ -s "$TEXT" ]] || TEXT="$CORPUS/test.bin"
KEY="tasks $(cat "$HERE/build_tasks.py" "$HERE/../corpus/corpus_common.py" "$CORPUS/tokenizer.model" "$TEXT" \
             "$CORPUS/test.bin" | sha256sum | cut -c1-16) cloze=$CLOZE choice=$CHOICE seed=$SEED"
mkdir -p "$OUT"
if [[ $FORCE -eq 0 && -f "$OUT/stamp" && "$(cat "$OUT/stamp")" == "$KEY" && -s "$OUT/cloze.jsonl" &&
      -s "$OUT/choice.jsonl" && -s "$OUT/tasks.json" ]]; then
    echo "[tasks] $OUT: up to date" >&2
    exit 0
fi
rm -f "$OUT/stamp"
"$PY" "$HERE/build_tasks.py" --corpus "$CORPUS" --out "$OUT" --cloze "$CLOZE" --choice "$CHOICE" --seed "$SEED"
echo "$KEY" > "$OUT/stamp"
echo "[tasks] wrote $OUT/cloze.jsonl, $OUT/choice.jsonl, $OUT/tasks.json" >&2
