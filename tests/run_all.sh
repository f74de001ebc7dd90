#!/usr/bin/env bash
# Runs every test program (build/tests/*) and every test script (tests/scripts/test_*.sh,
# tests/corpus/test_*.sh), counts PASS/FAIL lines and prints the closing
# "N passed, N failed". A program that crashes or exits non-zero without printing a
# FAIL line counts as one failure.
#   tests/run_all.sh                       build/tests/* and the scripts (`make test`)
#   tests/run_all.sh build-sanitize/tests  only the programs there, under the sanitizer
#                                          options (`make test SANITIZE=1`)
set -u
cd "$(dirname "$0")/.."
programs=${1:-build/tests}
# A sanitized program fails on any report (tests/sanitizers/options.sh).
[ $# -eq 0 ] || . tests/sanitizers/options.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
# Idle OpenMP threads sleep instead of spinning: spinning threads starve OpenBLAS and
# any other process sharing the cores (measured: several times slower under load).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0
failed=0
log=$(mktemp)
run_one() {
    local label=$1; shift
    local start=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep -E '^(PASS|FAIL) ' "$log"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $label: exited with status $rc"
        tail -n 5 "$log" | sed 's/^/    /'
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    echo "   ($label: $((SECONDS - start)) s)"
}
for t in "$programs"/*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
if [ $# -eq 0 ]; then
    for s in tests/scripts/test_*.sh tests/corpus/test_*.sh; do
        [ -f "$s" ] || continue
        run_one "$(basename "$s")" bash "$s"
    done
fi
rm -f "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
