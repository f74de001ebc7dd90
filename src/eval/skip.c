#include "eval/skip.h"

#include <stdio.h>

int skip_mask_from_plan(bool *skipped, const mixer_kind *const *plan, int layers) {
    int count = 0;
    for (int l = 0; l < layers; l++) {
        skipped[l] = !plan[l]->is_standard;
        count += skipped[l];
    }
    return count;
}

void skip_describe(char *out, size_t size, const bool *skipped, int layers) {
    size_t used = 0;
    out[0] = '\0';
    for (int l = 0; l < layers && used < size; l++)
        if (skipped[l]) used += (size_t)snprintf(out + used, size - used, "%s%d", used ? ", " : "", l + 1);
    if (used == 0) snprintf(out, size, "none");
}
