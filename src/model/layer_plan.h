// The layer plan (DESIGN.md section 6): which mixer runs in each layer, from
// attention.variant and attention.layout = uniform | hybrid[:<pattern>] | list:<ids>.
#pragma once
#include "core/config.h"
#include "mixers/mixer.h"

// Fills plan[num_hidden_layers]; fatal (naming origin and the key) on a bad layout.
void layer_plan_build(const mixer_kind **plan, const decon_config *config, const char *origin);
// One letter per layer, e.g. "SASA" (out must hold layers + 1 chars).
void layer_plan_letters(char *out, const mixer_kind *const *plan, int layers);
