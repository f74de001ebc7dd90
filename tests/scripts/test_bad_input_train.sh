#!/usr/bin/env bash
# Bad input: each case must print exactly one "decon: error" line naming the problem,
# exit non-zero, and leave every earlier output byte-identical.
source "$(dirname "$0")/common.sh"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 4000 64 2
write_small_config "$WORK/good.ini"
"$TRAIN" "$WORK/good.ini" --set train.max_steps=10 --set io.checkpoint_every=5 >"$WORK/first.log" 2>&1
check good_run_for_baseline $? "the baseline run failed: $(tail -n 3 "$WORK/first.log")"
snapshot() { (cd "$WORK/run" && find . -type f ! -name '.write_probe' -print0 | sort -z | xargs -0 sha256sum); }
snapshot > "$WORK/before.sums"

# expect_error NAME PATTERN ARGS...: one error line matching PATTERN, non-zero exit,
# run directory untouched.
expect_error() {
    local name=$1 pattern=$2; shift 2
    "$TRAIN" "$@" >"$WORK/out.log" 2>"$WORK/err.log"
    local rc=$?
    local lines
    lines=$(grep -c 'decon: error' "$WORK/err.log")
    if [ $rc -eq 0 ]; then fail "$name" "exited 0"; return; fi
    if [ "$lines" -ne 1 ]; then fail "$name" "expected one error line, got $lines: $(head -c 300 "$WORK/err.log")"; return; fi
    if ! grep -q -- "$pattern" "$WORK/err.log"; then fail "$name" "message lacks '$pattern': $(cat "$WORK/err.log")"; return; fi
    if ! snapshot | cmp -s - "$WORK/before.sums"; then fail "$name" "earlier outputs changed"; return; fi
    pass "$name"
}

C="$WORK/case.ini"
grep -v '^hidden_size' "$WORK/good.ini" > "$C"
expect_error bad_input_missing_key "hidden_size" "$C"
sed 's/^\[train\]/[train]\nlearning_rat = 1e-3/' "$WORK/good.ini" > "$C"
expect_error bad_input_unknown_key "learning_rat" "$C"
expect_error bad_input_ill_typed "max_steps" "$WORK/good.ini" --set train.max_steps=ten
expect_error bad_input_out_of_range "adam_beta1" "$WORK/good.ini" --set train.adam_beta1=1.5
expect_error bad_input_heads_divisibility "not divisible by num_attention_heads" "$WORK/good.ini" --set model.num_attention_heads=3
expect_error bad_input_unknown_variant "variant" "$WORK/good.ini" --set attention.variant=bogus
expect_error bad_input_bad_layout "layout" "$WORK/good.ini" --set attention.layout=hybrid:sideways
expect_error bad_input_missing_config "nope.ini" "$WORK/nope.ini"
expect_error bad_input_bad_set_syntax "section.key=value" "$WORK/good.ini" --set max_steps
make_shard "$WORK/big_vocab.bin" 5000 200 3
expect_error bad_input_token_out_of_vocab "big_vocab.bin" "$WORK/good.ini" --set "data.train=$WORK/big_vocab.bin"
head -c 20000 "$WORK/train.bin" > "$WORK/truncated.bin"
expect_error bad_input_truncated_shard "truncated.bin" "$WORK/good.ini" --set "data.train=$WORK/truncated.bin"
expect_error bad_input_missing_shard "missing.bin" "$WORK/good.ini" --set "data.train=$WORK/missing.bin"
echo "not a directory" > "$WORK/plainfile"
expect_error bad_input_unwritable_run_dir "run_dir" "$WORK/good.ini" --run-dir "$WORK/plainfile/run"
expect_error bad_input_resume_other_model "hidden_size" "$WORK/good.ini" --resume --set model.hidden_size=48 --set model.intermediate_size=64

# A corrupt newest checkpoint: --resume must skip it (falling back to the older valid one)
# and never damage it further; a corrupt only-checkpoint given to --resume is reported.
latest=$(ls "$WORK/run/ckpt"/step_*.h5 | sort | tail -n 1)
cp "$latest" "$WORK/saved_latest.h5"
head -c 3000 "$WORK/saved_latest.h5" > "$latest"
"$TRAIN" "$WORK/good.ini" --set train.max_steps=10 --resume >"$WORK/out.log" 2>"$WORK/err.log"
rc=$?
grep -q "resumed from .*step_00000005.h5" "$WORK/out.log"
check bad_input_truncated_checkpoint_skipped $((rc != 0 || $? != 0)) "rc=$rc; $(grep -h 'resumed\|error\|no valid' "$WORK/out.log" "$WORK/err.log")"
exit 0
