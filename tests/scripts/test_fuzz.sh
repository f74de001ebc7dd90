#!/usr/bin/env bash
# Fuzzing (docs/design.md "Fuzzing"): builds the libFuzzer harnesses of tests/fuzz/ with
# clang-19 (make fuzz-build, ASan + UBSan), replays every committed regression input
# (tests/fuzz/regressions/<harness>/: bugs found and fixed stay fixed), then runs each
# harness FUZZ_SECONDS seconds (default 20) from a copy of its committed seed corpus
# (tests/fuzz/corpus/<harness>/), with a per-input limit so a hang is a finding, and replays
# the grown corpus with LeakSanitizer (full stacks, so the suppressions of MPI's and HDF5's
# own allocations in tests/fuzz/lsan.supp can match; blocks a fatal() left are not leaks,
# tests/fuzz/fuzz_support.h). A harness passes when there is no crash, hang, leak or
# sanitizer report. One line per harness gives its executions and coverage. FUZZ_KEEP=DIR (make fuzz) keeps the grown corpus and
# any crashing input under DIR instead of the scratch directory.
source "$(dirname "$0")/common.sh"
SECONDS_EACH=${FUZZ_SECONDS:-20}
KEEP=${FUZZ_KEEP:-$WORK}
export TMPDIR=$WORK              # the harnesses' scratch input files
export OMP_NUM_THREADS=1
FUZZING_ASAN=detect_leaks=0:allocator_may_return_null=0:handle_abort=1
REPLAY_ASAN=detect_leaks=1:fast_unwind_on_malloc=0:allocator_may_return_null=0:handle_abort=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$ROOT/tests/fuzz/lsan.supp:print_suppressions=0
export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-19/bin/llvm-symbolizer

if ! command -v clang-19 >/dev/null || [ ! -x "$ASAN_SYMBOLIZER_PATH" ]; then
    fail fuzz_build "clang-19 or llvm-symbolizer-19 is missing: run make setup (tests/scripts/install_deps.sh)"
    exit 1
fi
if ! make -s -C "$ROOT" fuzz-build >"$WORK/build.log" 2>&1; then
    fail fuzz_build "$(grep -m 1 -E 'error' "$WORK/build.log") (run make setup: clang-19 needs libomp-19-dev's omp.h)"
    exit 1
fi
pass fuzz_build

# A libFuzzer log with no finding: no sanitizer report, no crash, leak or timeout.
clean_log() { ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: |deadly signal|Test unit written' "$1"; }

for source in "$ROOT"/tests/fuzz/fuzz_*.c; do
    name=$(basename "$source" .c)
    [ "$name" = fuzz_support ] && continue
    harness="$ROOT/build-fuzz/$name"

    regressions=("$ROOT/tests/fuzz/regressions/$name"/*)
    if [ -e "${regressions[0]}" ]; then
        ASAN_OPTIONS=$REPLAY_ASAN timeout 300 "$harness" -timeout=10 "${regressions[@]}" >"$WORK/$name.replay.log" 2>&1
        rc=$?
        [ "$rc" -eq 0 ] && clean_log "$WORK/$name.replay.log"
        check "${name}_regressions_replay" $? "rc=$rc on one of ${#regressions[@]} inputs: $(grep -m 3 -E 'ERROR|runtime error|Running:' "$WORK/$name.replay.log" | tail -n 2)"
    fi

    corpus="$KEEP/corpus/$name"
    mkdir -p "$corpus" "$KEEP/artifacts"
    cp "$ROOT/tests/fuzz/corpus/$name"/* "$corpus"/
    ASAN_OPTIONS=$FUZZING_ASAN timeout $((SECONDS_EACH + 300)) "$harness" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -detect_leaks=0 -close_fd_mask=3 -print_final_stats=1 -artifact_prefix="$KEEP/artifacts/$name-" \
        "$corpus" >"$WORK/$name.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$name.log" | tail -n 1)
    coverage=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$WORK/$name.log" | tail -n 1 |
               grep -oE 'cov: [0-9]+ ft: [0-9]+')
    echo "   $name: ${runs:-0} executions in ${SECONDS_EACH} s, $coverage, corpus $(ls "$corpus" | wc -l) inputs"
    [ "$rc" -eq 0 ] && clean_log "$WORK/$name.log"
    check "${name}_${SECONDS_EACH}s_no_finding" $? "rc=$rc: $(grep -m 1 -E 'ERROR|runtime error|deadly' "$WORK/$name.log") (input: $(ls "$KEEP/artifacts/$name-"* 2>/dev/null | head -n 1); copy it to tests/fuzz/regressions/$name/)"
    ASAN_OPTIONS=$REPLAY_ASAN timeout 300 "$harness" -timeout=10 "$corpus"/* >"$WORK/$name.leaks.log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] && clean_log "$WORK/$name.leaks.log"
    check "${name}_corpus_replay_no_leak" $? "rc=$rc: $(grep -m 1 -A 6 -E 'ERROR' "$WORK/$name.leaks.log" | tr '\n' ' ')"
done
