#!/usr/bin/env bash
# decon-eval --decode-check end to end (issue 13): train two small models (standard
# uniform; approx hybrid:even, whose context of 80 crosses approx's chunk of 64) on a
# synthetic shard and check that greedy decoding from the caches equals the full
# forward's argmax at every position (one line, exit 0), and that a missing prompt shard
# is refused in one line with a non-zero exit.
source "$(dirname "$0")/common.sh"
EVAL="$ROOT/bin/decon-eval"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 512 64 2
write_small_config "$WORK/good.ini"
for case in "standard uniform" "approx hybrid:even"; do
    set -- $case
    run="$WORK/run-$1"
    "$TRAIN" "$WORK/good.ini" --set train.max_steps=10 --set attention.variant="$1" --set attention.layout="$2" \
        --run-dir "$run" >"$WORK/train.log" 2>&1
    check "decode_check_train_$1" $? "training failed: $(tail -n 3 "$WORK/train.log")"
    "$EVAL" "$run/ckpt/latest.h5" --decode-check --ppl "$WORK/val.bin" --ctx 80 --threads 1 >"$WORK/check.log" 2>&1
    rc=$?
    line=$(grep '^decode-check' "$WORK/check.log")
    echo "    $line"
    [ "$rc" -eq 0 ] && [ "$(grep -c '^decode-check' "$WORK/check.log")" -eq 1 ] && [[ "$line" == *": equal" ]]
    check "decode_check_equal_$1_$2" $? "rc=$rc: $(tail -n 3 "$WORK/check.log")"
done
"$EVAL" "$WORK/run-standard/ckpt/latest.h5" --decode-check --ppl "$WORK/missing.bin" >"$WORK/bad.log" 2>&1
rc=$?
[ "$rc" -ne 0 ] && [ "$(wc -l <"$WORK/bad.log")" -eq 1 ] && grep -q 'missing.bin' "$WORK/bad.log"
check decode_check_missing_shard_one_line $? "rc=$rc: $(cat "$WORK/bad.log")"
exit 0
