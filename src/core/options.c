#include "core/options.h"

#include <errno.h>
#include <stdlib.h>

#include "core/errors.h"

long option_integer(const char *option, const char *text, long low, long high) {
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || value < low || value > high)
        fatal("%s '%s': expected an integer in [%ld, %ld]", option, text, low, high);
    return value;
}
