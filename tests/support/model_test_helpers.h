// What the model-level tests (test_model, test_mixers_basic, test_mixers_fixed,
// test_mixers_linear) share: a config, a batch, parameters away from special values, a
// model set up on them, and the two checks every mixer gets: the double reference's
// backward against finite differences, and the fp32 model against the reference.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/params.h"
#include "model/model.h"

// The defaults with this shape; variant / layout NULL keep the defaults (standard, uniform).
void test_model_config(decon_config *c, const char *variant, const char *layout, int d, int layers, int heads,
                       int kv_heads, int inter, int vocab, bool tied, bool bias, double rope_theta);
// Random tokens in [low, high) and targets in [0, vocab) (targets may be NULL); every
// 7th target is -1 (ignored).
void test_model_batch(int *tokens, int *targets, int rows, int low, int high, int vocab, uint64_t seed);
// Double parameters away from special values: matrices ~ N(0, 1/cols), norm weights
// ~ 1 + N(0, 0.3^2), biases ~ N(0, 0.3^2).
void test_params_randomize(const param_registry *registry, double *params, uint64_t seed);
// Moves fp32 parameters (every tensor whose name contains name_part; NULL: all):
// matrices += N(0, 0.25/cols), norm weights += N(0, 0.2^2), biases = N(0, 0.2^2).
void test_params_perturb(const param_registry *registry, float *params, uint64_t seed, const char *name_part);
// Builds, allocates (batch x seq_len), initialises and perturbs m; a fixedseqqk model
// gets its t_s (tokens 10.. when the vocabulary allows).
void test_model_setup(model *m, const decon_config *c, const char *label, int batch, int seq_len, uint64_t seed);
// The parameters of layer 0's mixer ("mixer" group) in a uniform model of `variant` with
// base's shape, as its registry holds them.
int64_t test_registered_mixer_params(const decon_config *base, const char *variant);

// The double reference's backward against fourth-order central differences of its loss
// (step h), fixed stream included: norm-wise relative error < 1e-8, over the whole
// gradient and per tensor. shared_qk_bias > 0 sets every query and key bias to it on
// the lowest rotary frequency pair (test_mixers_linear: approx-diag's guard).
void test_check_reference_gradient(const char *label, const decon_config *c, int batch, int seq_len, double h,
                                   double shared_qk_bias, uint64_t seed);
// The fp32 model m (set up, allocated for at least batch x seq_len) against the double
// reference on m's own parameters: loss (< 1e-5 relative), the whole gradient and every
// tensor (< 1e-4 norm-wise). m keeps the forward's state for further checks.
void test_compare_model_with_reference(model *m, const char *label, int batch, int seq_len, uint64_t seed);
// The same on a model set up here, allocated for `spare` more sequences and positions
// than the micro-batch uses, and freed.
void test_compare_with_reference(const char *label, const decon_config *c, int batch, int seq_len, int spare,
                                 uint64_t seed);

// Whether tensor `name` is registered with shape [rows, cols]; why says what differs.
bool test_shape_is(const param_registry *r, const char *name, int64_t rows, int64_t cols, char *why, size_t size);
