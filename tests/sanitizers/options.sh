# Sanitizer run-time options for the sanitized test programs (`make test SANITIZE=1`);
# tests/run_all.sh sources this, and so can a shell that runs one by hand:
#   . tests/sanitizers/options.sh; build-sanitize/tests/test_io
# Children started through tests/child_process.h (and mpirun's ranks) inherit them.
_sanitizers=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Any report ends the program with a non-zero status, so the test counts as failed.
# Leaks are detected at exit; allocation stacks are unwound in full (the fast unwinder
# stops at the first library built without frame pointers), so the suppressions see
# which library allocated.
# intercept_tls_get_addr=0: GCC 12's runtime takes a dynamic TLS block that happens to sit
# 16 bytes into a page for a glibc-2.19 header and its leak check then crashes ("Tracer
# caught signal 11"; seen in singleton MPI_Init, depending on the environment's size).
# Without it, leak scanning skips dlopen'ed libraries' TLS only; ours is static TLS.
export ASAN_OPTIONS=halt_on_error=1:exitcode=86:detect_leaks=1:fast_unwind_on_malloc=0:intercept_tls_get_addr=0
export UBSAN_OPTIONS=halt_on_error=1:exitcode=86:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$_sanitizers/lsan.supp:print_suppressions=0
unset _sanitizers
