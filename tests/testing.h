// Minimal test harness shared by the C test programs in tests/unit/.
// Each check prints "PASS <name>" or "FAIL <name>: <why>"; tests/run_all.sh counts the
// lines of every program and script and prints the closing "N passed, N failed".
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int testing_failures = 0;

static inline void testing_report(int ok, const char *name, const char *format, ...) {
    if (ok) {
        printf("PASS %s\n", name);
    } else {
        char why[512] = "";
        va_list args;
        va_start(args, format);
        vsnprintf(why, sizeof why, format, args);
        va_end(args);
        printf("FAIL %s: %s\n", name, why);
        testing_failures++;
    }
    fflush(stdout);
}

// ||a - b|| / max(||b||, tiny): the norm-wise relative error used by every comparison.
static inline double testing_relative_error_f(const float *a, const double *b, size_t n) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        diff += d * d;
        ref += b[i] * b[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

static inline double testing_relative_error_d(const double *a, const double *b, size_t n) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - b[i];
        diff += d * d;
        ref += b[i] * b[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

static inline int testing_exit_code(void) { return testing_failures ? 1 : 0; }
