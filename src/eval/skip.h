// Skip evaluation (DESIGN.md section 6): a hybrid model run with its non-standard layers
// removed whole (mixer and MLP; the residual passes through), without retraining.
#pragma once
#include <stdbool.h>

#include "mixers/mixer.h"

// skipped[l] = !plan[l]->is_standard; returns how many layers are skipped.
int skip_mask_from_plan(bool *skipped, const mixer_kind *const *plan, int layers);
// "2, 4" (1-based ids of the skipped layers, as in the layouts) into out; "none" when empty.
void skip_describe(char *out, size_t size, const bool *skipped, int layers);
