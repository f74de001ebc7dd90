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
