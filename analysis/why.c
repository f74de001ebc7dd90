#include "analysis/why.h"

#include <stdarg.h>
#include <stdio.h>

bool why_fail(char *why, size_t size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(why, size, format, args);
    va_end(args);
    return false;
}
