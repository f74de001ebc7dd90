#include <stdio.h>
#include <string.h>

#include "mixers/mixer.h"

extern const mixer_kind mixer_kind_standard;
extern const mixer_kind mixer_kind_rndembqk, mixer_kind_fixedseqqk, mixer_kind_staticembqk;
extern const mixer_kind mixer_kind_mlp, mixer_kind_nonapx, mixer_kind_mhe_add, mixer_kind_mhe_mul;
extern const mixer_kind mixer_kind_approx, mixer_kind_approx_diag;

static const mixer_kind *const ALL_MIXERS[] = {
    &mixer_kind_standard,
    &mixer_kind_rndembqk,
    &mixer_kind_fixedseqqk,
    &mixer_kind_staticembqk,
    &mixer_kind_mlp,
    &mixer_kind_nonapx,
    &mixer_kind_mhe_add,
    &mixer_kind_mhe_mul,
    &mixer_kind_approx,
    &mixer_kind_approx_diag,
};
enum { MIXER_COUNT = sizeof ALL_MIXERS / sizeof ALL_MIXERS[0] };

const mixer_kind *mixer_find(const char *name) {
    for (int i = 0; i < MIXER_COUNT; i++)
        if (strcmp(ALL_MIXERS[i]->name, name) == 0) return ALL_MIXERS[i];
    return NULL;
}

const char *mixer_names(void) {
    static char names[512];
    if (names[0]) return names;
    size_t used = 0;
    for (int i = 0; i < MIXER_COUNT; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", ALL_MIXERS[i]->name);
    return names;
}

const mixer_kind *mixer_standard(void) { return &mixer_kind_standard; }

void mixer_param_name(char *out, size_t size, int layer, const char *suffix) {
    snprintf(out, size, "layers.%d.mixer.%s", layer, suffix);
}
