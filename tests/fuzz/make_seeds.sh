#!/usr/bin/env bash
# Writes the seed corpus of every harness into tests/fuzz/corpus/<harness>/ (committed; run
# again after a format change): valid inputs of each loader plus structured mutants, each
# one step away from valid, so libFuzzer starts deep inside the loaders. Needs bin/decon-train
# (make all) and python3-h5py. HDF5 files are written and modified with libver 1.8+ (the
# checksummed format decon writes, src/io/hdf5_format.h).
source "$(dirname "$0")/../scripts/common.sh"
OUT="$ROOT/tests/fuzz/corpus"
rm -rf "$OUT"
mkdir -p "$OUT"/{fuzz_config,fuzz_token_shard,fuzz_task_file,fuzz_checkpoint,fuzz_recording}

# ---- config: shipped and test configs, --set lines, layouts, recording keys -------------
cp "$ROOT/input/models/tiny.ini" "$OUT/fuzz_config/tiny.ini"
cp "$ROOT/tests/fuzz/checkpoint_model.ini" "$OUT/fuzz_config/hybrid.ini"
write_small_config "$WORK/small.ini"
sed "s|$WORK|data|g" "$WORK/small.ini" > "$OUT/fuzz_config/small.ini"
{ cat "$OUT/fuzz_config/small.ini"
  printf '%s\n' '--set attention.layout=list:1' '--set attention.variant=approx' '--set io.record_every=5' \
      '--set io.record_layers=2,1' '--set io.record_dtype=float16' '--set train.max_steps=3'; } > "$OUT/fuzz_config/sets.ini"
printf '[model]\nhidden_size=16\nintermediate_size=8\nnum_hidden_layers=4\nnum_attention_heads=2\nvocab_size=9\n[attention]\nlayout=hybrid:middle\nvariant=nonapx\n[parallel]\ntensor_parallel=2\nsequence_parallel=true\nzero_stage=1\n' \
    > "$OUT/fuzz_config/parallel.ini"

# ---- token shards: 2- and 4-byte ids, empty, one window ------------------------------------
echo "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 4 5" | python3 "$ROOT/input/corpus/write_shards.py" --vocab-size 16 --eos-id -1 "$OUT/fuzz_token_shard/small.bin" 2>/dev/null
echo "69999 1 2 3 4 5 6 7 8 9" | python3 "$ROOT/input/corpus/write_shards.py" --vocab-size 70000 --eos-id -1 "$OUT/fuzz_token_shard/wide.bin" 2>/dev/null
echo "" | python3 "$ROOT/input/corpus/write_shards.py" --vocab-size 16 --eos-id -1 "$OUT/fuzz_token_shard/empty.bin" 2>/dev/null
echo "1 2 3 4 5" | python3 "$ROOT/input/corpus/write_shards.py" --vocab-size 8 --eos-id -1 "$OUT/fuzz_token_shard/one_window.bin" 2>/dev/null

# ---- task files: cloze and multiple choice lines ----------------------------------------------
printf '%s\n' '{"context": [1, 2, 3], "target": [4, 5], "text": "a b c"}' '' '{"context": [7], "target": [63]}' \
    > "$OUT/fuzz_task_file/cloze.jsonl"
printf '%s\n' '{"context": [1, 2], "choices": [[3], [4, 5], [6]], "label": 1}' '{"context": [9], "choices": [[1], [2]], "label": 0, "source": "x"}' \
    > "$OUT/fuzz_task_file/choice.jsonl"
printf '%s\n' '{"context": [1, 2, 3], "target": [4], "choices": [[3], [4]], "label": 1}' > "$OUT/fuzz_task_file/both.jsonl"

# ---- a checkpoint and a recording of checkpoint_model.ini's model --------------------------
make_shard "$WORK/train.bin" 400 16 1
make_shard "$WORK/val.bin" 200 16 2
"$TRAIN" "$ROOT/tests/fuzz/checkpoint_model.ini" --set "data.train=$WORK/train.bin" --set "data.validation=$WORK/val.bin" \
    --run-dir "$WORK/run" --set io.record_every=2 --set io.record_sequences=1 --set io.keep_checkpoints=1 >"$WORK/train.log" 2>&1 ||
    { tail -n 5 "$WORK/train.log"; exit 1; }
cp "$WORK/run/ckpt/step_00000002.h5" "$OUT/fuzz_checkpoint/valid.h5"
cp "$WORK/run/attn.h5" "$OUT/fuzz_recording/valid.h5"

"$PYTHON" - "$OUT" <<'PY'
import shutil, sys
import h5py, numpy as np
out = sys.argv[1]
LIBVER = ("v108", "latest")

def mutant(kind, name, change):
    path = "%s/%s/%s.h5" % (out, kind, name)
    shutil.copy("%s/%s/valid.h5" % (out, kind), path)
    with h5py.File(path, "r+", libver=LIBVER) as f:
        change(f)

def replace(f, name, data, **kw):
    del f[name]
    f.create_dataset(name, data=data, **kw)

# Checkpoints: /config as a variable-length string and as an array, a tensor of another
# shape, rank and dtype, state attributes of the wrong type, no optimizer state.
text = None
def config_vlen(f):
    t = f["config"][()]
    replace(f, "config", t.decode(), dtype=h5py.string_dtype())
mutant("fuzz_checkpoint", "config_vlen", config_vlen)
mutant("fuzz_checkpoint", "config_array", lambda f: replace(f, "config", np.array([f["config"][()]] * 3)))
mutant("fuzz_checkpoint", "tensor_shape", lambda f: replace(f, "params/norm", np.ones(9, np.float32)))
mutant("fuzz_checkpoint", "tensor_rank", lambda f: replace(f, "params/embed_tokens", np.ones((2, 16, 8), np.float32)))
mutant("fuzz_checkpoint", "tensor_dtype", lambda f: replace(f, "optim/m/norm", np.ones(8, np.int32)))
mutant("fuzz_checkpoint", "tensor_float64", lambda f: replace(f, "params/norm", np.ones(8, np.float64)))
def state_text(f):
    del f["state"].attrs["step"]
    f["state"].attrs["step"] = np.bytes_("two")
mutant("fuzz_checkpoint", "state_text", state_text)
mutant("fuzz_checkpoint", "no_optim", lambda f: f.__delitem__("optim"))
mutant("fuzz_checkpoint", "version_2", lambda f: f.attrs.__setitem__("format_version", np.int32(2)))

# Recordings: attn of another shape, a histogram without edges, layers out of range,
# has_attn as text, /tokens of another shape, a step without its attribute.
mutant("fuzz_recording", "attn_shape", lambda f: replace(f, "step_2/layer_1/attn", np.ones((1, 2, 8, 7), np.float32)))
mutant("fuzz_recording", "no_edges", lambda f: f["step_2/layer_1"].__delitem__("logits_edges"))
mutant("fuzz_recording", "layers_range", lambda f: f.attrs.__setitem__("recorded_layers", np.array([0, 5], np.int32)))
def attn_text(f):
    del f["step_0/layer_1"].attrs["has_attn"]
    f["step_0/layer_1"].attrs["has_attn"] = np.bytes_("yes")
mutant("fuzz_recording", "has_attn_text", attn_text)
mutant("fuzz_recording", "tokens_shape", lambda f: replace(f, "tokens", np.ones((2, 8), np.int32)))
mutant("fuzz_recording", "step_attr", lambda f: f["step_2"].attrs.__delitem__("step"))
PY
check fuzz_seeds_written $? "h5py mutants failed"
ls -la "$OUT"/*
