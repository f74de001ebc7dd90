#include "model/rope_layers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "ops/ops.h"

static int layer_head_dim(const decon_config *c, int layer) {
    decon_config lc;
    config_layer(c, layer, &lc);
    return config_head_dim(&lc);
}

bool rope_layers_share(const decon_config *c, int a, int b) {
    if (layer_head_dim(c, a) != layer_head_dim(c, b)) return false;
    int half = config_head_dim(c) / 2;
    int *pa = xcalloc((size_t)half + 1, sizeof *pa), *pb = xcalloc((size_t)half + 1, sizeof *pb);
    int na = config_layer_rope_pairs(c, a, pa), nb = config_layer_rope_pairs(c, b, pb);
    bool same = na == nb && memcmp(pa, pb, (size_t)na * sizeof *pa) == 0;
    free(pa), free(pb);
    return same;
}

void rope_layer_tables(const decon_config *c, int layer, float *cos_table, float *sin_table, int max_positions) {
    int dh = layer_head_dim(c, layer), half = dh / 2, head = config_head_dim(c);
    int *pairs = xcalloc((size_t)head / 2 + 1, sizeof *pairs);
    if (config_layer_rope_pairs(c, layer, pairs) == 0) {  // the default, exactly as before
        free(pairs);
        rope_tables(cos_table, sin_table, max_positions, dh, (float)c->rope_theta);
        return;
    }
    // Built on the host and copied (tables are made once per model, not per step); the same
    // arithmetic as rope_tables with the original head's exponent.
    size_t count = (size_t)max_positions * (size_t)half;
    float *cos_host = xmalloc((count ? count : 1) * sizeof(float)), *sin_host = xmalloc((count ? count : 1) * sizeof(float));
    double theta = (double)(float)c->rope_theta;
    for (int p = 0; p < max_positions; p++)
        for (int t = 0; t < half; t++) {
            double angle = p * pow(theta, -2.0 * pairs[t] / head);
            cos_host[(size_t)p * half + t] = (float)cos(angle);
            sin_host[(size_t)p * half + t] = (float)sin(angle);
        }
    ops_from_host(cos_table, cos_host, count * sizeof(float));
    ops_from_host(sin_table, sin_host, count * sizeof(float));
    free(cos_host), free(sin_host), free(pairs);
}
