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

