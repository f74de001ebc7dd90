#!/usr/bin/env bash
# decon-train on bad input (config file, --set, command-line flags, token shards,
# checkpoints to resume from, layouts that do not fit mpirun -np 2): each case must print
# exactly one "decon: error" line naming the file, key or rank, exit 1, and leave the
# earlier run's outputs byte-identical (expect_error in common.sh).
source "$(dirname "$0")/common.sh"
MPIRUN=(mpirun --oversubscribe -np 2)
make_shard "$WORK/train.bin" 20000 64 1 2>/dev/null
make_shard "$WORK/val.bin" 4000 64 2 2>/dev/null
write_small_config "$WORK/good.ini"
"$TRAIN" "$WORK/good.ini" --set train.max_steps=10 --set io.checkpoint_every=5 >"$WORK/first.log" 2>&1
check good_run_for_baseline $? "the baseline run failed: $(tail -n 3 "$WORK/first.log")"
# Copies of the run whose checkpoints cannot be resumed from: one tensor of the wrong shape
# in every checkpoint; every checkpoint truncated.
cp -r "$WORK/run" "$WORK/reshaped"
"$PYTHON" - "$WORK/reshaped/ckpt" <<'PY'
import glob, sys
import h5py, numpy as np
for path in glob.glob(sys.argv[1] + "/step_*.h5"):
    with h5py.File(path, "r+") as f:
        del f["params/layers.0.mlp.up_proj"]
        f["params/layers.0.mlp.up_proj"] = np.zeros((3, 5), np.float32)
PY
cp -r "$WORK/run" "$WORK/all_damaged"
for f in "$WORK/all_damaged/ckpt"/step_*.h5; do head -c 3000 "$f" > "$WORK/cut.h5" && mv "$WORK/cut.h5" "$f"; done
guard_outputs "$WORK/run" "$WORK/reshaped" "$WORK/all_damaged"
start=$SECONDS
GOOD="$WORK/good.ini"

# ---- the config file and --set ----
C="$WORK/case.ini"
grep -v '^hidden_size' "$GOOD" > "$C"
expect_error bad_input_missing_key "hidden_size" "$TRAIN" "$C"
sed 's/^\[train\]/[train]\nlearning_rat = 1e-3/' "$GOOD" > "$C"
expect_error bad_input_unknown_key "learning_rat" "$TRAIN" "$C"
printf '[model]\nhidden_size 32\n' > "$C"
expect_error bad_input_not_ini "case.ini:2: not a valid INI line" "$TRAIN" "$C"
sed 's/^\[io\]/[inout]/' "$GOOD" > "$C"
expect_error bad_input_unknown_section \
    "unknown section [inout]; sections are [model], [attention], [train], [data], [io], [parallel]" "$TRAIN" "$C"
expect_error bad_input_ill_typed "max_steps" "$TRAIN" "$GOOD" --set train.max_steps=ten
expect_error bad_input_int_overflow "max_steps = 99999999999999999999 is out of range" "$TRAIN" "$GOOD" \
    --set train.max_steps=99999999999999999999
expect_error bad_input_empty_value "learning_rate is empty" "$TRAIN" "$GOOD" --set train.learning_rate=
expect_error bad_input_out_of_range "adam_beta1" "$TRAIN" "$GOOD" --set train.adam_beta1=1.5
expect_error bad_input_heads_divisibility "not divisible by num_attention_heads" "$TRAIN" "$GOOD" \
    --set model.num_attention_heads=3
expect_error bad_input_head_dim_odd "[model] head_dim = 7 must be even for RoPE" "$TRAIN" "$GOOD" \
    --set model.head_dim=7
expect_error bad_input_head_dim_zero "[model] head_dim = 0 must be a positive even head size" "$TRAIN" "$GOOD" \
    --set model.head_dim=0
expect_error bad_input_head_dim_negative "[model] head_dim = -8 is out of range" "$TRAIN" "$GOOD" \
    --set model.head_dim=-8
expect_error bad_input_head_dim_not_int "[model] head_dim = 'big' is not an integer" "$TRAIN" "$GOOD" \
    --set model.head_dim=big
expect_error bad_input_head_dim_too_wide "num_attention_heads x head_dim = 4 x 1048576 exceeds 1048576" "$TRAIN" \
    "$GOOD" --set model.head_dim=1048576
expect_error bad_input_odd_head_size_suggests_head_dim "set an even [model] head_dim" "$TRAIN" "$GOOD" \
    --set model.num_attention_heads=32
# Per-layer shapes (a compressed model) and the value head size (docs/design.md "Per-layer shapes").
expect_error bad_input_layer_list_length "[model] layer_head_dims = '8': 1 entries for 2 layers (num_hidden_layers)" \
    "$TRAIN" "$GOOD" --set model.layer_head_dims=8
expect_error bad_input_layer_head_dim_odd "layer_head_dims: layer 2's head size 7 must be even for RoPE" "$TRAIN" \
    "$GOOD" --set model.layer_head_dims=8,7
expect_error bad_input_layer_list_not_int "[model] layer_intermediate_sizes = '64,x'" "$TRAIN" "$GOOD" \
    --set model.layer_intermediate_sizes=64,x
expect_error bad_input_value_head_dim_refused "layer 1, a approx layer: only standard layers (MHA/GQA/MQA)" "$TRAIN" \
    "$GOOD" --set attention.variant=approx --set model.value_head_dim=4
expect_error bad_input_batch_divisibility "not a multiple of micro_batch_size" "$TRAIN" "$GOOD" \
    --set train.global_batch_size=6
expect_error bad_input_unknown_variant "variant" "$TRAIN" "$GOOD" --set attention.variant=bogus
expect_error bad_input_bad_layout "layout" "$TRAIN" "$GOOD" --set attention.layout=hybrid:sideways
expect_error bad_input_missing_config "nope.ini" "$TRAIN" "$WORK/nope.ini"
expect_error bad_input_config_is_directory "run: not a config file" "$TRAIN" "$WORK/run"
expect_error bad_input_bad_set_syntax "section.key=value" "$TRAIN" "$GOOD" --set max_steps
expect_error bad_input_set_unknown_section "unknown section [trian]" "$TRAIN" "$GOOD" --set trian.max_steps=5

# ---- command-line flags ----
expect_error bad_input_no_config "no config file given" "$TRAIN"
expect_error bad_input_unknown_flag "unknown option --bogus" "$TRAIN" "$GOOD" --bogus
expect_error bad_input_flag_without_value "--set needs a value" "$TRAIN" "$GOOD" --set
expect_error bad_input_two_configs "more than one config file" "$TRAIN" "$GOOD" "$GOOD"
expect_error bad_input_tp_not_a_number "tensor_parallel" "$TRAIN" "$GOOD" --tp two
expect_error bad_input_zero_stage_2 "zero_stage" "$TRAIN" "$GOOD" --zero 2
expect_error bad_input_unwritable_run_dir "run_dir" "$TRAIN" "$GOOD" --run-dir "$WORK/good.ini/run"

# ---- token shards ----
make_shard "$WORK/big_vocab.bin" 5000 200 3 2>/dev/null
make_damaged_shards "$WORK/train.bin" "$WORK/shards"
S="$WORK/shards"
expect_error bad_input_token_out_of_vocab "big_vocab.bin" "$TRAIN" "$GOOD" --set "data.train=$WORK/big_vocab.bin"
expect_error bad_input_missing_shard "missing.bin" "$TRAIN" "$GOOD" --set "data.train=$WORK/missing.bin"
expect_error bad_input_shard_is_directory "$S is not a regular file; pass a shard" "$TRAIN" "$GOOD" \
    --set "data.train=$S"
expect_error bad_input_shard_empty "empty.bin is truncated" "$TRAIN" "$GOOD" --set "data.train=$S/empty.bin"
expect_error bad_input_shard_header_cut "header_cut.bin is truncated" "$TRAIN" "$GOOD" \
    --set "data.train=$S/header_cut.bin"
expect_error bad_input_shard_magic "magic.bin is not a decon token shard" "$TRAIN" "$GOOD" \
    --set "data.train=$S/magic.bin"
expect_error bad_input_shard_version "version.bin has format version 2" "$TRAIN" "$GOOD" \
    --set "data.train=$S/version.bin"
expect_error bad_input_shard_width "width.bin has token width 3" "$TRAIN" "$GOOD" --set "data.train=$S/width.bin"
expect_error bad_input_truncated_shard "truncated.bin is truncated" "$TRAIN" "$GOOD" \
    --set "data.train=$S/truncated.bin"
expect_error bad_input_shard_too_long "too_long.bin is damaged (too long)" "$TRAIN" "$GOOD" \
    --set "data.train=$S/too_long.bin"
expect_error bad_input_shard_bad_id "bad_id.bin" "$TRAIN" "$GOOD" --set "data.train=$S/bad_id.bin"
expect_error bad_input_shard_vocab_zero "vocab0.bin is damaged" "$TRAIN" "$GOOD" --set "data.train=$S/vocab0.bin"
expect_error bad_input_shard_no_tokens "no_tokens.bin has 0 tokens" "$TRAIN" "$GOOD" \
    --set "data.train=$S/no_tokens.bin"
expect_error bad_input_shard_shorter_than_sequence "one_token.bin has 1 tokens" "$TRAIN" "$GOOD" \
    --set "data.train=$S/one_token.bin"
expect_error bad_input_sequence_longer_than_data "val.bin has 4001 tokens, fewer than one window" "$TRAIN" "$GOOD" \
    --set train.sequence_length=5000
expect_error bad_input_bad_validation_shard "magic.bin is not a decon token shard" "$TRAIN" "$GOOD" \
    --set "data.validation=$S/magic.bin"

# ---- --resume from checkpoints that do not fit ----
expect_error bad_input_resume_other_model "hidden_size" "$TRAIN" "$GOOD" --resume --set model.hidden_size=48 \
    --set model.intermediate_size=64
expect_error bad_input_resume_other_head_dim "in key 'head_dim'" "$TRAIN" "$GOOD" --resume --set model.head_dim=16 \
    --set train.max_steps=20
expect_error bad_input_resume_wrong_shape "has shape [3, 5] but the model expects" "$TRAIN" "$GOOD" --resume \
    --run-dir "$WORK/reshaped"
expect_error bad_input_resume_all_damaged "cannot resume: none of the 2 checkpoints in $WORK/all_damaged/ckpt is valid" \
    "$TRAIN" "$GOOD" --resume --run-dir "$WORK/all_damaged"

# ---- layouts that do not fit mpirun -np 2: one line for the job, not one per rank ----
expect_error bad_input_np2_tp_not_dividing_ranks "2 ranks cannot form data-parallel replicas of tensor-parallel size 3" \
    "${MPIRUN[@]}" "$TRAIN" "$GOOD" --tp 3
expect_error bad_input_np2_sp_without_tp "needs --tp > 1" "${MPIRUN[@]}" "$TRAIN" "$GOOD" --sp
expect_error bad_input_np2_batch_per_replica "not a multiple of micro_batch_size" "${MPIRUN[@]}" "$TRAIN" "$GOOD" \
    --set train.global_batch_size=4
expect_error bad_input_np2_kv_heads_tp "num_key_value_heads (1, [model]) is not divisible by the tensor-parallel size 2" \
    "${MPIRUN[@]}" "$TRAIN" "$GOOD" --tp 2 --set model.num_key_value_heads=1
expect_error bad_input_np2_head_dim_heads_tp "num_attention_heads (3, [model]) is not divisible by the tensor-parallel size 2" \
    "${MPIRUN[@]}" "$TRAIN" "$GOOD" --tp 2 --set model.num_attention_heads=3 --set model.num_key_value_heads=3 \
    --set model.head_dim=16
expect_error bad_input_np2_layer_width_tp "layer 2's MLP width 33 is not divisible by the tensor-parallel size 2" \
    "${MPIRUN[@]}" "$TRAIN" "$GOOD" --tp 2 --set model.layer_intermediate_sizes=64,33
expect_error bad_input_np2_bad_config "max_steps" "${MPIRUN[@]}" "$TRAIN" "$GOOD" --set train.max_steps=ten
expect_error bad_input_np2_bad_shard "magic.bin is not a decon token shard" "${MPIRUN[@]}" "$TRAIN" "$GOOD" \
    --set "data.train=$S/magic.bin"
expect_error bad_input_np2_resume_all_damaged "cannot resume: none of the 2 checkpoints" "${MPIRUN[@]}" "$TRAIN" \
    "$GOOD" --resume --run-dir "$WORK/all_damaged"
echo "# decon-train: $BAD_INPUT_CASES bad-input cases in $((SECONDS - start)) s"

# A corrupt newest checkpoint: --resume must skip it (falling back to the older valid one).
latest=$(ls "$WORK/run/ckpt"/step_*.h5 | sort | tail -n 1)
head -c 3000 "$latest" > "$WORK/cut.h5" && cp "$WORK/cut.h5" "$latest"
"$TRAIN" "$GOOD" --set train.max_steps=10 --resume >"$WORK/out.log" 2>"$WORK/err.log"
rc=$?
grep -q "resumed from .*step_00000005.h5" "$WORK/out.log"
check bad_input_truncated_checkpoint_skipped $((rc != 0 || $? != 0)) \
    "rc=$rc; $(grep -h 'resumed\|error\|no valid' "$WORK/out.log" "$WORK/err.log")"
exit 0
