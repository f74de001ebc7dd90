# Shared helpers for the shell tests: PASS/FAIL lines, a scratch directory, a
# synthetic learnable token shard and a small config.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
# Idle OpenMP threads sleep instead of spinning: spinning threads starve OpenBLAS and
# any other process sharing the cores (measured: several times slower under load).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
TRAIN="$ROOT/bin/decon-train"
# Debian's interpreter: it has python3-numpy (a pyenv python3 earlier on PATH may not).
PYTHON=/usr/bin/python3
WORK=$(mktemp -d /tmp/decon-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() {  # check NAME CONDITION-RESULT(0/1) WHY
    if [ "$2" -eq 0 ]; then pass "$1"; else fail "$1" "$3"; fi
}

# make_shard OUT COUNT VOCAB SEED: a deterministic second-order Markov stream, so a model
# has something to learn, written in the token-shard format by the corpus tool.
make_shard() {
    python3 - "$2" "$3" "$4" <<'PY' | python3 "$ROOT/input/corpus/write_shards.py" --vocab-size "$3" "$1"
import random, sys
count, vocab, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
table = [[rng.randrange(vocab) for _ in range(4)] for _ in range(vocab)]
a, b = 1, 2
out = []
for _ in range(count):
    c = table[(a * 7 + b) % vocab][rng.randrange(4)] if rng.random() < 0.9 else rng.randrange(vocab)
    out.append(c)
    a, b = b, c
sys.stdout.write(" ".join(map(str, out)) + "\n")
PY
}

# ensure_corpus: the shipped corpus in $CORPUS (data/corpus), built by its recipe when
# absent (first time only); on failure a FAIL line and the script ends.
CORPUS="$ROOT/data/corpus"
ensure_corpus() {
    if [ ! -f "$CORPUS/train.bin" ] || [ ! -f "$CORPUS/val.bin" ] || [ ! -f "$CORPUS/tokenizer.model" ]; then
        bash "$ROOT/input/corpus/build.sh" "$CORPUS" >"$WORK/corpus.log" 2>&1 ||
            { fail "$1" "corpus recipe failed: $(tail -n 3 "$WORK/corpus.log")"; exit 0; }
    fi
}

# A config for fast end-to-end runs on the synthetic shards in $WORK.
write_small_config() {
    cat > "$1" <<INI
[model]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
vocab_size = 64
rope_theta = 10000
[train]
sequence_length = 32
micro_batch_size = 4
global_batch_size = 8
max_steps = 20
learning_rate = 3e-3
warmup_steps = 5
eval_every = 10
eval_batches = 4
threads = 1
[data]
train = $WORK/train.bin
validation = $WORK/val.bin
[io]
run_dir = $WORK/run
checkpoint_every = 10
keep_checkpoints = 5
log_every = 1
INI
}

# corpus_config OUT KV_HEADS TIE BIAS: a small model on the shipped corpus (vocab 8192), 12 steps
# at a high learning rate: seconds to train, and no longer uniform.
corpus_config() {
    cat >"$1" <<INI
[model]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = $2
vocab_size = 8192
rope_theta = 10000
tie_word_embeddings = $3
attention_bias = $4
[train]
sequence_length = 64
micro_batch_size = 4
global_batch_size = 4
max_steps = 12
learning_rate = 1e-2
warmup_steps = 2
eval_every = 0
eval_batches = 1
threads = 1
[data]
train = $CORPUS/train.bin
validation = $CORPUS/val.bin
[io]
run_dir = $WORK/run
checkpoint_every = 0
INI
}

# ---- bad input ----------------------------------------------------------------------------
# guard_outputs PATH...: remembers the files and links under PATHs (names, link targets,
# bytes); every later expect_error fails when a refused command added, changed or removed one.
GUARDED=()
: >"$WORK/guarded.state"
guard_outputs() {
    GUARDED=("$@")
    guarded_state >"$WORK/guarded.state"
}
guarded_state() {
    [ ${#GUARDED[@]} -gt 0 ] || return 0
    find "${GUARDED[@]}" \( -type f -o -type l \) -printf '%p -> %l\n' 2>/dev/null | sort
    find "${GUARDED[@]}" -type f -print0 2>/dev/null | sort -z | xargs -0r sha256sum
}

# expect_error NAME TEXT COMMAND...: COMMAND must end within 60 s with exit status 1 (a hang,
# a signal or an abort fails), print exactly one "decon: error" line, which contains TEXT
# (a fixed string), print no HDF5 error stack, and leave the guarded outputs as they were
# (after a case that changed them, the new state is the baseline: one culprit, one FAIL).
# SHOW_ERRORS=1 also prints each passing case's line, to review the wording.
BAD_INPUT_CASES=0
expect_error() {
    local name=$1 text=$2
    shift 2
    BAD_INPUT_CASES=$((BAD_INPUT_CASES + 1))
    # MPI start-up dominates a case; measured per start on 2 cores: 0.5 s by default, 0.08 s
    # with a singleton that starts no daemon (isolated) and the ob1 transport layer instead
    # of probing UCX (which the error paths never use).
    OMPI_MCA_ess_singleton_isolated=1 OMPI_MCA_pml=ob1 timeout -k 5 60 "$@" >"$WORK/case.out" 2>"$WORK/case.err"
    local rc=$? errors lines
    errors=$(cat "$WORK/case.out" "$WORK/case.err" | grep 'decon: error')
    lines=$(printf '%s' "$errors" | grep -c .)
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then fail "$name" "still running after 60 s (hang)"
    elif [ $rc -ne 1 ]; then fail "$name" "exit status $rc, expected 1: $(tail -c 400 "$WORK/case.err")"
    elif [ "$lines" -ne 1 ]; then fail "$name" "$lines error lines: $(head -c 600 "$WORK/case.err")"
    elif ! grep -qF -- "$text" <<<"$errors"; then fail "$name" "error line lacks '$text': $errors"
    elif grep -q 'HDF5-DIAG' "$WORK/case.err"; then fail "$name" "HDF5 printed its error stack"
    elif ! guarded_state | cmp -s - "$WORK/guarded.state"; then
        fail "$name" "outputs changed: $(guarded_state | diff "$WORK/guarded.state" - | grep '^[<>]' | head -n 3)"
        guarded_state >"$WORK/guarded.state"
    else
        pass "$name"
        if [ -n "${SHOW_ERRORS:-}" ]; then echo "    $errors"; fi
    fi
}

# make_damaged_shards GOOD DIR: damaged copies of the token shard GOOD in DIR, one per way
# a shard can be wrong (the header layout is in input/corpus/write_shards.py).
make_damaged_shards() {
    mkdir -p "$2"
    "$PYTHON" - "$1" "$2" <<'PY'
import struct, sys
good, out = open(sys.argv[1], "rb").read(), sys.argv[2] + "/"
header, payload = bytearray(good[:64]), good[64:]
count = struct.unpack_from("<Q", header, 16)[0]
def write(name, data):
    open(out + name, "wb").write(bytes(data))
def with_field(offset, fmt, value):
    h = bytearray(header)
    struct.pack_into(fmt, h, offset, value)
    return h
write("empty.bin", b"")                                          # 0 bytes
write("header_cut.bin", header[:40])                             # shorter than the header
write("magic.bin", b"DECONTOX" + header[8:] + payload)            # wrong magic
write("version.bin", with_field(8, "<I", 2) + payload)            # a future format version
write("width.bin", with_field(12, "<I", 3) + payload)              # token width 3 bytes
write("no_tokens.bin", with_field(16, "<Q", 0))                   # a valid header of 0 tokens
write("vocab0.bin", with_field(24, "<I", 0) + payload)             # vocab_size 0: every id is out of range
write("one_token.bin", with_field(16, "<Q", 1) + payload[:2])     # fewer than one sequence
write("truncated.bin", header + payload[: len(payload) // 2])     # count says more than there is
write("too_long.bin", header + payload + b"\0\0\0\0")             # bytes past the last token
bad = bytearray(payload)
struct.pack_into("<H", bad, 2 * (count // 2), struct.unpack_from("<I", header, 24)[0])
write("bad_id.bin", header + bad)                                 # an id >= the shard's own vocab_size
PY
}
