#include "model/layer_plan.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "ops/ops.h"

// Whether 1-based layer id is standard under a hybrid pattern of n layers.
static int pattern_is_standard(const char *pattern, int id, int n, bool *known) {
    *known = true;
    if (strcmp(pattern, "even") == 0) return id % 2 == 0;
    if (strcmp(pattern, "odd") == 0) return id % 2 == 1;
    if (strcmp(pattern, "top") == 0) return id <= n / 2;            // lower half standard
    if (strcmp(pattern, "bottom") == 0) return id > n - n / 2;      // upper half standard
    if (strcmp(pattern, "middle") == 0) return id <= n / 4 || id > n - n / 4;  // outer quarters standard
    if (strcmp(pattern, "25%") == 0) return id % 4 == 0;
    if (strcmp(pattern, "first") == 0) return id == 1;
    if (strcmp(pattern, "last") == 0) return id == n;
    if (strcmp(pattern, "bilateral") == 0) return id == 1 || id == n;
    *known = false;
    return 0;
}

static void plan_layers(const mixer_kind **plan, const decon_config *c, const char *origin) {
    int n = c->num_hidden_layers;
    const mixer_kind *variant = mixer_find(c->variant);
    if (!variant)
        fatal("%s: [attention] variant = '%s' is unknown; choose one of: %s", origin, c->variant, mixer_names());
    const mixer_kind *standard = mixer_standard();
    const char *layout = c->layout;
    if (strcmp(layout, "uniform") == 0) {
        for (int i = 0; i < n; i++) plan[i] = variant;
        return;
    }
    if (strcmp(layout, "hybrid") == 0 || strncmp(layout, "hybrid:", 7) == 0) {
        const char *pattern = layout[6] == ':' ? layout + 7 : "even";
        for (int i = 0; i < n; i++) {
            bool known;
            int is_standard = pattern_is_standard(pattern, i + 1, n, &known);
            if (!known)
                fatal("%s: [attention] layout = '%s': unknown hybrid pattern '%s'; use even, odd, top, middle, "
                      "bottom, 25%%, first, last or bilateral", origin, layout, pattern);
            plan[i] = is_standard ? standard : variant;
        }
        return;
    }
    if (strncmp(layout, "list:", 5) == 0) {
        for (int i = 0; i < n; i++) plan[i] = variant;
        const char *p = layout + 5;
        bool *seen = xcalloc((size_t)n, sizeof *seen);
        do {
            char *end = (char *)p;
            long id = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : 0;
            if (id < 1 || id > n || (*end && *end != ',') || (*end == ',' && end[1] == '\0') || seen[id - 1])
                fatal("%s: [attention] layout = '%s': expected distinct comma-separated 1-based layer ids in 1..%d",
                      origin, layout, n);
            seen[id - 1] = true;
            plan[id - 1] = standard;
            p = *end ? end + 1 : end;
        } while (*p);
        free(seen);
        return;
    }
    fatal("%s: [attention] layout = '%s' is not uniform, hybrid[:<pattern>] or list:<ids>", origin, layout);
}

void layer_plan_letters(char *out, const mixer_kind *const *plan, int layers) {
    for (int i = 0; i < layers; i++) out[i] = plan[i]->letter;
    out[layers] = '\0';
}

// The plan, and the backend's verdict on its mixers (a GPU build runs only those it has
// kernels for: ops_backend_refuses).
void layer_plan_build(const mixer_kind **plan, const decon_config *c, const char *origin) {
    plan_layers(plan, c, origin);
    for (int i = 0; i < c->num_hidden_layers; i++) {
        const char *why = ops_backend_refuses(plan[i]->name);
        if (why) fatal("%s: [attention] variant = '%s' (layer %d) %s", origin, plan[i]->name, i + 1, why);
        // A value head size of its own is standard's (MHA/GQA/MQA: A3 compresses those);
        // the other mixers' ops, head embeddings and recurrent states take one head size.
        decon_config layer;
        config_layer(c, i, &layer);
        if (!plan[i]->is_standard && config_value_head_dim(&layer) != config_head_dim(&layer))
            fatal("%s: [model] value_head_dim (layer_value_head_dims) = %d differs from the head size %d of layer "
                  "%d, a %s layer: only standard layers (MHA/GQA/MQA) take a value head size of their own", origin,
                  config_value_head_dim(&layer), config_head_dim(&layer), i + 1, plan[i]->name);
    }
}
