// Each layer's RoPE tables (docs/design.md "Per-layer shapes"): [max_positions, r_qk(l)/2]
// cos and sin. A layer without [model] layer_rope_pairs turns pair t by theta^(-2t/r_qk(l))
// (rope_tables, as a model trained at that size); one with them keeps pairs of the original
// head (an A3-reduced layer) and turns its pair t by theta^(-2 pairs[t] / head_dim).
#pragma once
#include <stdbool.h>

#include "core/config.h"

// Whether layers a and b of c (validated) turn by the same tables, so they may share them.
bool rope_layers_share(const decon_config *c, int a, int b);
// Fills layer l's tables (tensor memory: host on the CPU backend, device on a GPU one).
void rope_layer_tables(const decon_config *c, int layer, float *cos_table, float *sin_table, int max_positions);
