#!/usr/bin/env bash
# bin/decon-export: standard-variant checkpoints (MHA with tied head and Q/K/V biases on
# one rank; GQA with its own LM head, no biases, trained at tp = 2) exported as Hugging Face
# Qwen2 directories, loaded by an independent PyTorch Qwen2 forward that reads only
# config.json and model.safetensors (tests/scripts/qwen2_reference.py), whose logits on
# held-out text (data/corpus/test.bin) equal decon's (decon-eval --logits) to fp32
# tolerance; config.json's keys; non-standard models, a checkpoint without a tokenizer
# reachable and other bad input refused in one line, earlier exports intact.
source "$(dirname "$0")/common.sh"
ensure_corpus export_corpus
EXPORT="$ROOT/bin/decon-export"
EVAL="$ROOT/bin/decon-eval"

# export_and_compare NAME CHECKPOINT: export, decon's logits of the first 64 test tokens,
# the PyTorch forward of the export on the same tokens.
export_and_compare() {
    local name=$1 ckpt=$2 out="$WORK/hf_$1"
    "$EXPORT" "$ckpt" "$out" >"$WORK/$name.export.log" 2>&1
    check "export_${name}_runs" $? "$(tail -n 2 "$WORK/$name.export.log")"
    "$EVAL" "$ckpt" --ppl "$CORPUS/test.bin" --ctx 64 --max-windows 1 --logits "$WORK/$name.npy" >"$WORK/$name.eval.log" 2>&1
    check "export_${name}_decon_logits" $? "$(tail -n 2 "$WORK/$name.eval.log")"
    "$PYTHON" - "$out" "$WORK/$name.npy" "$CORPUS/test.bin" "$ROOT/tests/scripts" <<'PY'
import sys
sys.path.insert(0, sys.argv[4])
import numpy as np
import qwen2_reference, reference_lm
model = qwen2_reference.Qwen2(sys.argv[1])
tokens = reference_lm.read_shard(sys.argv[3])[:64]
theirs = model.logits(tokens).numpy()
ours = np.load(sys.argv[2]).astype(np.float64)
relative = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
worst = np.abs(ours - theirs).max()
print(f"   {sys.argv[1].split('/')[-1]}: logits [64, {ours.shape[1]}], |logit| up to {np.abs(theirs).max():.2f}, "
      f"max |decon - torch| {worst:.2e}, relative {relative:.2e}, argmax agrees at "
      f"{(ours.argmax(1) == theirs.argmax(1)).sum()} of 64")
sys.exit(0 if ours.shape == theirs.shape and relative < 1e-5 and worst < 1e-4 else 1)
PY
    check "export_${name}_torch_qwen2_logits_equal_decons" $? "the PyTorch Qwen2 forward of the export differs (above)"
}

# MHA, tied LM head, Q/K/V biases, one rank.
corpus_config "$WORK/mha.ini" 4 1 1
"$TRAIN" "$WORK/mha.ini" --run-dir "$WORK/mha" >"$WORK/mha.log" 2>&1
check export_train_mha $? "$(tail -n 3 "$WORK/mha.log")"
export_and_compare mha "$WORK/mha/ckpt/latest.h5"

# GQA (2 kv heads of 4), its own LM head, no biases (zeros in the export), tensor
# parallel, and a head size of its own (12, not d/h = 8: config.json's head_dim).
corpus_config "$WORK/gqa.ini" 2 0 0
mpirun --oversubscribe -np 2 "$TRAIN" "$WORK/gqa.ini" --run-dir "$WORK/gqa" --tp 2 --set model.head_dim=12 \
    >"$WORK/gqa.log" 2>&1
check export_train_gqa_tp2 $? "$(tail -n 3 "$WORK/gqa.log")"
export_and_compare gqa "$WORK/gqa/ckpt/latest.h5"

# config.json: Qwen2ForCausalLM's keys with this model's values; the tensors under
# transformers' names, exactly; the tokenizer copied byte for byte.
"$PYTHON" - "$WORK/hf_mha" "$WORK/hf_gqa" "$ROOT/tests/scripts" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3])
import qwen2_reference
ok = True
for directory, kv, tied, head in ((sys.argv[1], 4, True, 8), (sys.argv[2], 2, False, 12)):
    c = json.load(open(directory + "/config.json"))
    expected = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 32,
                "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": kv, "head_dim": head, "max_position_embeddings": 64, "rope_theta": 10000,
                "rms_norm_eps": 1e-6, "vocab_size": 8192, "tie_word_embeddings": tied, "torch_dtype": "float32",
                "hidden_act": "silu", "bos_token_id": 2, "eos_token_id": 3, "use_sliding_window": False}
    for key, value in expected.items():
        if c.get(key) != value:
            print(f"FAIL export_config_json_keys: {directory}: {key} = {c.get(key)!r}, expected {value!r}")
            ok = False
    tensors, _ = qwen2_reference.read_safetensors(directory + "/model.safetensors")
    names = {"model.embed_tokens.weight", "model.norm.weight"} | ({"lm_head.weight"} if not tied else set())
    for l in range(2):
        p = f"model.layers.{l}."
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        names |= {p + f"self_attn.{x}_proj.{y}" for x in "qkv" for y in ("weight", "bias")} | {p + "self_attn.o_proj.weight"}
        names |= {p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
    if set(tensors) != names:
        print(f"FAIL export_safetensors_names: {directory}: extra {sorted(set(tensors) - names)}, "
              f"missing {sorted(names - set(tensors))}")
        ok = False
    shapes = {"model.layers.0.self_attn.k_proj.weight": [kv * head, 32], "model.layers.0.self_attn.k_proj.bias": [kv * head],
              "model.layers.0.self_attn.o_proj.weight": [32, 4 * head],
              "model.layers.1.mlp.down_proj.weight": [32, 64], "model.embed_tokens.weight": [8192, 32]}
    for name, shape in shapes.items():
        if list(tensors[name].shape) != shape:
            print(f"FAIL export_safetensors_shapes: {directory}: {name} {list(tensors[name].shape)}, expected {shape}")
            ok = False
    if not tied and tensors["model.layers.0.self_attn.q_proj.bias"].abs().max() != 0:
        print(f"FAIL export_zero_biases: {directory}: a model trained without biases exports non-zero ones")
        ok = False
if ok:
    print("PASS export_config_json_and_tensor_names")
PY
cmp -s "$WORK/hf_gqa/tokenizer.model" "$CORPUS/tokenizer.model"
check export_copies_the_tokenizer $? "tokenizer.model differs from $CORPUS/tokenizer.model"

# Refused in one line, the earlier export untouched.
guard_outputs "$WORK/hf_mha"
make_shard "$WORK/train.bin" 4000 64 1
make_shard "$WORK/val.bin" 1000 64 2
write_small_config "$WORK/small.ini"
for variant in approx mlp; do
    "$TRAIN" "$WORK/small.ini" --run-dir "$WORK/$variant" --set attention.variant=$variant \
        --set attention.layout=hybrid:even --set train.max_steps=1 >"$WORK/$variant.log" 2>&1 ||
        fail "export_train_$variant" "$(tail -n 2 "$WORK/$variant.log")"
    expect_error "export_refuses_hybrid_$variant" "variant $variant (layout hybrid:even; layers 1 of 2) cannot be exported: only standard attention" \
        "$EXPORT" "$WORK/$variant/ckpt/latest.h5" "$WORK/hf_mha"
done
"$TRAIN" "$WORK/small.ini" --run-dir "$WORK/synthetic" --set train.max_steps=1 >"$WORK/synthetic.log" 2>&1 ||
    fail export_train_synthetic "$(tail -n 2 "$WORK/synthetic.log")"
expect_error export_no_tokenizer_reachable "no tokenizer reachable: [data] tokenizer is not set, and the file beside [data] train = $WORK/train.bin, $WORK/tokenizer.model cannot be read" \
    "$EXPORT" "$WORK/synthetic/ckpt/latest.h5" "$WORK/hf_mha"
expect_error export_tokenizer_of_other_shards "it has 8192 pieces but $WORK/synthetic/ckpt/latest.h5's vocabulary is 64" \
    "$EXPORT" "$WORK/synthetic/ckpt/latest.h5" "$WORK/hf_mha" --tokenizer "$CORPUS/tokenizer.model"
expect_error export_missing_tokenizer_option "--tokenizer $WORK/none.model cannot be read" \
    "$EXPORT" "$WORK/mha/ckpt/latest.h5" "$WORK/hf_mha" --tokenizer "$WORK/none.model"
"$TRAIN" "$WORK/small.ini" --run-dir "$WORK/keyed" --set train.max_steps=1 --set data.tokenizer="$WORK/gone.model" \
    >"$WORK/keyed.log" 2>&1 || fail export_train_keyed "$(tail -n 2 "$WORK/keyed.log")"
expect_error export_data_tokenizer_key_missing "its [data] tokenizer = $WORK/gone.model cannot be read" \
    "$EXPORT" "$WORK/keyed/ckpt/latest.h5" "$WORK/hf_mha"
expect_error export_missing_checkpoint "$WORK/none.h5" "$EXPORT" "$WORK/none.h5" "$WORK/hf_mha"
expect_error export_out_dir_is_a_file "$WORK/mha.ini exists and is not a directory" \
    "$EXPORT" "$WORK/mha/ckpt/latest.h5" "$WORK/mha.ini"
expect_error export_out_dir_parent_missing "cannot create the export directory $WORK/no/such" \
    "$EXPORT" "$WORK/mha/ckpt/latest.h5" "$WORK/no/such"
expect_error export_one_argument "give a checkpoint and an output directory" "$EXPORT" "$WORK/mha/ckpt/latest.h5"
expect_error export_logits_without_ppl "--logits needs --ppl FILE" "$EVAL" "$WORK/mha/ckpt/latest.h5" --logits "$WORK/x.npy"
exit 0
