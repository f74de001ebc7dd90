#!/usr/bin/env bash
# Storage failures (docs/design.md "Storage failures"): a file size limit (ulimit -f,
# RLIMIT_FSIZE: writes beyond it fail with EFBIG, as on a full disk or quota, on any
# machine and for any user) hit while writing a checkpoint or an attention recording
# gives one "decon: error" line and a non-zero exit; the earlier checkpoint or records
# stay complete and loadable; no temporary file is left. A read-only run directory and a
# recording path whose directory is missing are refused before step 1 in one line.
source "$(dirname "$0")/common.sh"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 20000 64 2
write_small_config "$WORK/base.ini"
MPIRUN=(timeout -k 5 120 mpirun --oversubscribe)
ARGS=(--set train.eval_every=0 --set io.checkpoint_every=2)
# The limit, in KiB (ulimit -f units). MPI itself needs files of a few MB (Open MPI's
# shared-memory segments, PMIx's store: measured 4-8 MB at 2 ranks), so the limit is
# 20 MB and the files that must hit it are about twice that.
LIMIT_KB=20480
BIG=(--set model.hidden_size=256 --set model.intermediate_size=768 --set model.num_hidden_layers=4)

# one_error NAME RC LOG PATTERN: an exit status 1..127 (not 0; not killed by a signal such
# as SIGXFSZ or SIGSEGV, 128+), exactly one error line, matching PATTERN.
one_error() {
    local lines why=""
    lines=$(grep -c 'decon: error' "$3")
    [ "$2" -ne 0 ] || why="exited 0"
    [ "$2" -lt 128 ] || why="killed by signal $(($2 - 128))"
    [ "$lines" -eq 1 ] || why="$why; $lines error lines: $(grep 'decon: error' "$3" | head -c 400)"
    grep 'decon: error' "$3" | grep -q -- "$4" || why="$why; no '$4' in: $(grep -m1 'decon: error' "$3")"
    check "$1" "$([ -z "$why" ]; echo $?)" "${why#; }"
}
# loads_at FILE STEP: a complete checkpoint of that step (h5dump reads /state/step).
loads_at() { [ "$(h5dump -a /state/step "$1" 2>/dev/null | grep -o '(0): [0-9]*')" = "(0): $2" ]; }

# --- A checkpoint write hits the limit (one rank, then tp 2) ---------------------------
# A checkpoint of the BIG model (3.2 M parameters, with both Adam moments) is 38 MB.
ckpt_limit_case() {
    local name=$1 np=$2 run="$WORK/$1"
    local launch=("$TRAIN")
    [ "$np" -eq 1 ] || launch=("${MPIRUN[@]}" -np "$np" "$TRAIN" --tp "$np")
    "${launch[@]}" "$WORK/base.ini" "${BIG[@]}" "${ARGS[@]}" --set train.max_steps=2 --run-dir "$run" >"$run.first" 2>&1
    check "${name}_first_checkpoint" $? "$(tail -n 3 "$run.first")"
    local before
    before=$(sha256sum < "$run/ckpt/step_00000002.h5")
    (ulimit -f $LIMIT_KB; "${launch[@]}" "$WORK/base.ini" "${BIG[@]}" "${ARGS[@]}" --set train.max_steps=4 --run-dir "$run" --resume \
        >"$run.out" 2>"$run.err")
    one_error "${name}_one_line" $? "$run.err" "cannot write checkpoint .*step_00000004.h5.tmp"
    local why=""
    [ "$(sha256sum < "$run/ckpt/step_00000002.h5")" = "$before" ] || why="step_00000002.h5 changed"
    loads_at "$run/ckpt/step_00000002.h5" 2 || why="$why; step_00000002.h5 does not load"
    [ "$(ls "$run/ckpt" | tr '\n' ' ')" = "latest.h5 step_00000002.h5 " ] || why="$why; ckpt holds $(ls "$run/ckpt" | tr '\n' ' ')"
    check "${name}_earlier_checkpoint_intact" "$([ -z "$why" ]; echo $?)" "${why#; }"
    # Room again: the run resumes from it and completes.
    "${launch[@]}" "$WORK/base.ini" "${BIG[@]}" "${ARGS[@]}" --set train.max_steps=4 --run-dir "$run" --resume >"$run.again" 2>&1 &&
        grep -q "resumed from .*step_00000002.h5 at step 2" "$run.again" && loads_at "$run/ckpt/step_00000004.h5" 4
    check "${name}_resumes_afterwards" $? "$(grep -h 'resumed\|error' "$run.again" | head -n 3)"
}
ckpt_limit_case storage_checkpoint_limit 1
ckpt_limit_case storage_checkpoint_limit_tp2 2

# --- A recording hits the limit ---------------------------------------------------------
# 360 recorded sequences add several MB to attn.h5 per record (compressed): a few records
# fit under the limit, a later one does not.
run="$WORK/record"
(ulimit -f $LIMIT_KB; "$TRAIN" "$WORK/base.ini" --set train.eval_every=0 --set io.checkpoint_every=0 \
    --set io.record_every=2 --set io.record_sequences=360 --set train.max_steps=6 --run-dir "$run" >"$run.out" 2>"$run.err")
one_error storage_recording_limit_one_line $? "$run.err" "cannot write attention recording .*attn.h5.tmp"
# attn.h5 holds exactly the records that completed (one metrics line each), at least two,
# each readable; the working copy is gone.
groups=$(h5ls "$run/attn.h5" 2>&1 | awk '/^step_/ {print $1}' | sort | tr '\n' ' ')
logged=$(sed -n 's/.*"kind":"recording","step":\([0-9]*\).*/step_\1/p' "$run/metrics.jsonl" | sort | tr '\n' ' ')
last=$(echo "$logged" | awk '{print $NF}')
[ "$groups" = "$logged" ] && [ "$(echo "$logged" | wc -w)" -ge 2 ] && [ ! -e "$run/attn.h5.tmp" ] &&
    h5dump -d "/$last/layer_1/attn" "$run/attn.h5" >/dev/null 2>&1
check storage_recording_limit_earlier_records_intact $? "groups '$groups', logged '$logged'; $(ls "$run")"

# --- A read-only run directory, refused before step 1 -----------------------------------
# What is read-only for root too: a read-only tmpfs where root may mount one; else (a
# container without mount rights) /proc/self, which nobody can create files in. Other
# users: chmod.
RO="$WORK/ro"
mkdir -p "$RO"
if [ "$(id -u)" -ne 0 ]; then
    chmod 555 "$RO"
    how="chmod 555"
elif mount -t tmpfs -o ro,size=64k decon-read-only "$RO" 2>/dev/null; then
    trap 'umount "$RO" 2>/dev/null; rm -rf "$WORK"' EXIT
    how="read-only tmpfs"
else
    RO=/proc/self
    how="/proc/self"
fi
echo "# read-only run directory: $RO ($how)"
for np in 1 2; do
    launch=("$TRAIN")
    [ "$np" -eq 1 ] || launch=("${MPIRUN[@]}" -np "$np" "$TRAIN" --tp "$np")
    "${launch[@]}" "$WORK/base.ini" "${ARGS[@]}" --run-dir "$RO" >"$WORK/ro.out" 2>"$WORK/ro.err"
    one_error "storage_read_only_run_dir_np$np" $? "$WORK/ro.err" "run directory $RO is not writable"
    ! grep -q '^step ' "$WORK/ro.out"
    check "storage_read_only_run_dir_np${np}_before_step_1" $? "$(grep -m1 '^step ' "$WORK/ro.out")"
done

# --- A recording path whose directory does not exist ------------------------------------
"$TRAIN" "$WORK/base.ini" "${ARGS[@]}" --set io.record_every=2 --set "io.record_path=$WORK/missing/attn.h5" \
    --run-dir "$WORK/norecord" >"$WORK/missing.out" 2>"$WORK/missing.err"
one_error storage_missing_record_dir $? "$WORK/missing.err" "cannot create attention recording $WORK/missing/attn.h5.tmp"
! grep -q '^step ' "$WORK/missing.out"
check storage_missing_record_dir_before_step_1 $? "$(grep -m1 '^step ' "$WORK/missing.out")"
exit 0
