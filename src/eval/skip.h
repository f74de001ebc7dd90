// Skip evaluation (DESIGN.md section 6): a hybrid model run with its non-standard layers
// removed whole (mixer and MLP; the residual passes through), without retraining.
#pragma once
#include <stdbool.h>

#include "mixers/mixer.h"

// skipped[l] = !plan[l]->is_standard; returns how many layers are skipped.
int skip_mask_from_plan(bool *skipped, const mixer_kind *const *plan, int layers);
