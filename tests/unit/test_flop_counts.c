// The analytic FLOP counts behind MFU: every mixer's forward_flops_per_token, the model's
// training FLOPs per token and the MFU fraction, against counts written out by hand here
// from the math in docs/design.md (matmul FLOPs, 2 per multiply-add, causal attention
// averaged over the positions of a sequence), at two shapes:
//   A: d = 64, 4 heads, 2 KV heads (d_h = 16, q_dim = 64, kv_dim = 32), L = 32 (one
//      Taylor chunk), micro-batch 4, biases, MLP width 128, vocabulary 100;
//   B: d = 96, 3 heads = 3 KV heads (d_h = 32, q_dim = kv_dim = 96), L = 150 (Taylor
//      chunks of 64, 64, 22), micro-batch 3, no biases, MLP width 200, vocabulary 120;
//   C: d = 48, 4 heads, 2 KV heads, [model] head_dim = 24 (not d / h = 12: q_dim = 96 > d,
//      kv_dim = 48), L = 16, micro-batch 2, biases, MLP width 64, vocabulary 50; also its
//      parameter, cache and state counts by hand.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "mixers/mixer.h"
#include "model/model.h"
#include "testing.h"
#include "train/progress.h"

typedef struct {
    const char *label;
    int d, heads, kv_heads, seq_len, micro_batch, inter, vocab;
    bool bias;
    int head_dim;  // 0: d / heads
} shape;

static const shape SHAPE_A = {"A", 64, 4, 2, 32, 4, 128, 100, true, 0};
static const shape SHAPE_B = {"B", 96, 3, 3, 150, 3, 200, 120, false, 0};
static const shape SHAPE_C = {"C", 48, 4, 2, 16, 2, 64, 50, true, 24};

static void make_config(decon_config *c, const shape *s, int layers, const char *variant, const char *layout) {
    config_defaults(c);
    c->hidden_size = s->d;
    c->num_attention_heads = s->heads;
    c->num_key_value_heads = s->kv_heads;
    c->head_dim = s->head_dim;
    c->sequence_length = s->seq_len;
    c->micro_batch_size = s->micro_batch;
    c->global_batch_size = s->micro_batch;
    c->intermediate_size = s->inter;
    c->vocab_size = s->vocab;
    c->attention_bias = s->bias;
    c->num_hidden_layers = layers;
    snprintf(c->variant, sizeof c->variant, "%s", variant);
    snprintf(c->layout, sizeof c->layout, "%s", layout);
}

static void expect_close(const char *name, double got, double expected) {
    testing_report(fabs(got - expected) <= 1e-12 * fabs(expected), name, "got %.17g, hand count %.17g", got, expected);
}

static void check_mixer(const char *mixer, const shape *s, double expected) {
    decon_config c;
    make_config(&c, s, 1, mixer, "uniform");
    char name[128];
    snprintf(name, sizeof name, "%s forward FLOPs per token at shape %s", mixer, s->label);
    expect_close(name, mixer_find(mixer)->forward_flops_per_token(&c, s->seq_len), expected);
}

// ---- shape A ------------------------------------------------------------------------
// Q, K, V, O projections: 64x64, 64x32, 64x32, 64x64 multiply-adds per token.
static const double A_QKVO = 2.0 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64);  // 24576
// Token t (1-based) sees t keys; per head d_h = 16 multiply-adds per key for q.k and as
// many for A V: averaged over L = 32 positions, (1 + .. + 32) / 32 = 32*33/2 / 32 keys.
static const double A_KEYS = 32.0 * 33 / 2 / 32;                       // 16.5
static const double A_SCORES = 2.0 * 4 * 16 * A_KEYS;                   // q.k, 4 heads: 2112
static const double A_AV = 2.0 * 4 * 16 * A_KEYS;                       // A V: 2112

static void check_shape_a(void) {
    check_mixer("standard", &SHAPE_A, A_QKVO + A_SCORES + A_AV);      // 28800
    check_mixer("staticembqk", &SHAPE_A, A_QKVO + A_SCORES + A_AV);   // standard's matmuls
    // rndembqk / fixedseqqk: each sequence's V (64x32) and O (64x64) projections and A V;
    // the fixed stream's Q (64x64), K (64x32) and scores once per micro-batch of 4.
    double fixed = 2.0 * (64 * 32 + 64 * 64) + A_AV + (2.0 * (64 * 64 + 64 * 32) + A_SCORES) / 4;  // 18000
    check_mixer("rndembqk", &SHAPE_A, fixed);
    check_mixer("fixedseqqk", &SHAPE_A, fixed);
    // mlp: width m = round(P_std / 3d), P_std = QKVO weights + biases (64 + 32 + 32)
    // = 12416, 12416 / 192 = 64.67 -> 65; gate, up, down: 3 x 64 x 65 multiply-adds.
    check_mixer("mlp", &SHAPE_A, 2.0 * 3 * 64 * 65);                   // 24960
    // nonapx: projections, then per head 16 multiply-adds for g_t, 16 for the running sum.
    check_mixer("nonapx", &SHAPE_A, A_QKVO + 2.0 * 4 * (16 + 16));      // 24832
    // mhe-*: one shared Q, K, V head (3 x 64x16), O 64x64, then standard's attention.
    check_mixer("mhe-add", &SHAPE_A, 2.0 * (3 * 64 * 16 + 64 * 64) + A_SCORES + A_AV);  // 18560
    check_mixer("mhe-mul", &SHAPE_A, 2.0 * (3 * 64 * 16 + 64 * 64) + A_SCORES + A_AV);
    // approx, L = 32 inside one chunk of 64: no state is read or built; each of the
    // 32*33/2 causal pairs costs per head 16 (q.k) + 16 (weight x V) + 1 (row sum)
    // multiply-adds.
    check_mixer("approx", &SHAPE_A, A_QKVO + 4 * (32.0 * 33 / 2) * 2 * (16 + 16 + 1) / 32);  // 28932
    // approx-diag: per KV head two 16x16 outer-product state updates; per query head two
    // 16x16 read-outs and two 16-long denominators.
    check_mixer("approx-diag", &SHAPE_A, A_QKVO + 2 * 2 * 2.0 * 16 * 16 + 4 * 2 * 2.0 * (16 * 16 + 16));  // 30976
}

// ---- shape B ------------------------------------------------------------------------
static const double B_QKVO = 2.0 * (96 * 96 + 96 * 96 + 96 * 96 + 96 * 96);  // 73728
static const double B_KEYS = 150.0 * 151 / 2 / 150;                      // 75.5
static const double B_SCORES = 2.0 * 3 * 32 * B_KEYS;                     // 14496
static const double B_AV = 2.0 * 3 * 32 * B_KEYS;                         // 14496

static void check_shape_b(void) {
    check_mixer("standard", &SHAPE_B, B_QKVO + B_SCORES + B_AV);      // 102720
    check_mixer("staticembqk", &SHAPE_B, B_QKVO + B_SCORES + B_AV);
    double fixed = 2.0 * (96 * 96 + 96 * 96) + B_AV + (2.0 * (96 * 96 + 96 * 96) + B_SCORES) / 3;  // 68480
    check_mixer("rndembqk", &SHAPE_B, fixed);
    check_mixer("fixedseqqk", &SHAPE_B, fixed);
    // mlp: P_std = 4 x 96 x 96 = 36864 (no biases), / 288 = 128 exactly.
    check_mixer("mlp", &SHAPE_B, 2.0 * 3 * 96 * 128);                  // 73728
    check_mixer("nonapx", &SHAPE_B, B_QKVO + 2.0 * 3 * (32 + 32));      // 74112
    check_mixer("mhe-add", &SHAPE_B, 2.0 * (3 * 96 * 32 + 96 * 96) + B_SCORES + B_AV);  // 65856
    check_mixer("mhe-mul", &SHAPE_B, 2.0 * (3 * 96 * 32 + 96 * 96) + B_SCORES + B_AV);
    // approx over chunks of 64, 64, 22 with F = 1 + 32 + 32*33/2 = 561 features and the
    // state S [F, d_h + 1] (values and the denominator column):
    //   within chunks: 64*65/2 + 64*65/2 + 22*23/2 = 4413 causal pairs, per head
    //     32 + 32 + 1 multiply-adds each;
    //   read-out phi(q)^T S for the 150 - 64 = 86 tokens after the first chunk, per head;
    //   state update phi(K)^T [V 1] of the first two chunks (2 x 64 tokens), per KV head.
    const double F = 1 + 32 + 32.0 * 33 / 2;  // 561
    double within = 3 * (64.0 * 65 / 2 + 64.0 * 65 / 2 + 22.0 * 23 / 2) * 2.0 * (32 + 32 + 1);
    double readout = 3 * 86 * 2.0 * F * (32 + 1), update = 3 * 2 * 64 * 2.0 * F * (32 + 1);
    check_mixer("approx", &SHAPE_B, B_QKVO + (within + readout + update) / 150);  // 243673.08
    check_mixer("approx-diag", &SHAPE_B, B_QKVO + 3 * 2 * 2.0 * 32 * 32 + 3 * 2 * 2.0 * (32 * 32 + 32));  // 98688
}

// ---- shape C: a head size of its own ------------------------------------------------------
// Q, K, V, O projections: 48x96, 48x48, 48x48, 48x96 multiply-adds per token (q_dim = 4 x 24).
static const double C_QKVO = 2.0 * (48 * 96 + 48 * 48 + 48 * 48 + 48 * 96);  // 27648
static const double C_KEYS = 16.0 * 17 / 2 / 16;                       // 8.5
static const double C_SCORES = 2.0 * 4 * 24 * C_KEYS;                   // 1632
static const double C_AV = 2.0 * 4 * 24 * C_KEYS;                       // 1632

static void check_shape_c(void) {
    check_mixer("standard", &SHAPE_C, C_QKVO + C_SCORES + C_AV);      // 30912
    check_mixer("staticembqk", &SHAPE_C, C_QKVO + C_SCORES + C_AV);
    // V (48x48) and O (48x96) per sequence, A V; the fixed Q (48x96), K (48x48) and scores
    // once per micro-batch of 2.
    double fixed = 2.0 * (48 * 48 + 48 * 96) + C_AV + (2.0 * (48 * 96 + 48 * 48) + C_SCORES) / 2;  // 23184
    check_mixer("rndembqk", &SHAPE_C, fixed);
    check_mixer("fixedseqqk", &SHAPE_C, fixed);
    // mlp: P_std = 13824 weights + 96 + 48 + 48 biases = 14016, / 144 = 97.33 -> 97.
    check_mixer("mlp", &SHAPE_C, 2.0 * 3 * 48 * 97);                   // 27936
    check_mixer("nonapx", &SHAPE_C, C_QKVO + 2.0 * 4 * (24 + 24));      // 28032
    // mhe-*: shared Q, K, V of one head (3 x 48x24), O 48x96.
    check_mixer("mhe-add", &SHAPE_C, 2.0 * (3 * 48 * 24 + 48 * 96) + C_SCORES + C_AV);  // 19392
    check_mixer("mhe-mul", &SHAPE_C, 2.0 * (3 * 48 * 24 + 48 * 96) + C_SCORES + C_AV);
    // approx, one chunk: 16*17/2 pairs, per head 24 + 24 + 1 multiply-adds.
    check_mixer("approx", &SHAPE_C, C_QKVO + 4 * (16.0 * 17 / 2) * 2 * (24 + 24 + 1) / 16);  // 30980
    check_mixer("approx-diag", &SHAPE_C, C_QKVO + 2 * 2 * 2.0 * 24 * 24 + 4 * 2 * 2.0 * (24 * 24 + 24));  // 41856

    decon_config c;
    make_config(&c, &SHAPE_C, 1, "standard", "uniform");
    // Weights 48x96 + 48x48 + 48x48 + 48x96 = 13824, biases 96 + 48 + 48.
    expect_close("standard parameters at shape C", (double)mixer_standard()->param_count(&c), 13824 + 192);
    expect_close("mhe-add parameters at shape C (3 x 48x24 + 3 x 24 + (4 + 2 x 2) x 24 + 48x96)",
                 (double)mixer_find("mhe-add")->param_count(&c), 3456 + 72 + 192 + 4608);
    // Caches per token: K and V of 2 kv heads of 24; rndembqk V only; mhe the shared K, V.
    expect_close("standard KV cache at shape C (2 x 2 x 24)", (double)mixer_standard()->cache_floats_per_token(&c), 96);
    expect_close("rndembqk cache at shape C (2 x 24)", (double)mixer_find("rndembqk")->cache_floats_per_token(&c), 48);
    expect_close("mhe-mul cache at shape C (2 x 24)", (double)mixer_find("mhe-mul")->cache_floats_per_token(&c), 48);
    // Recurrent states: approx 2 kv heads x F (1 + 24 + 24*25/2 = 325) x 25; approx-diag
    // 2 x (2 x 24^2 + 3 x 24); nonapx 4 heads x (24 + 1): the normalised output and the logsumexp.
    expect_close("approx state at shape C", (double)mixer_find("approx")->state_floats(&c), 2 * 325 * 25);
    expect_close("approx-diag state at shape C", (double)mixer_find("approx-diag")->state_floats(&c),
                 2 * (2 * 576 + 72));
    expect_close("nonapx state at shape C", (double)mixer_find("nonapx")->state_floats(&c), 4 * 25);
}

// ---- the model's total and MFU --------------------------------------------------------

static double model_flops(const shape *s, int layers, const char *variant, const char *layout) {
    decon_config c;
    make_config(&c, s, layers, variant, layout);
    model m;
    model_build(&m, &c, "test_flop_counts");
    double flops = model_training_flops_per_token(&m, s->seq_len);
    model_free(&m);
    return flops;
}

static void check_model_and_mfu(void) {
    // A, 2 layers hybrid:even with approx-diag: layer 1 approx-diag (30976), layer 2
    // standard (28800), each with the block MLP 3 x 64x128, and the LM head 64x100;
    // training = forward + backward (2 x forward) = 3 x forward.
    double a_forward = 2.0 * 64 * 100 + 30976 + 28800 + 2 * (2.0 * 3 * 64 * 128);  // 170880
    double a_training = 3 * a_forward;                                              // 512640
    expect_close("model training FLOPs per token (A, hybrid:even approx-diag)",
                 model_flops(&SHAPE_A, 2, "approx-diag", "hybrid:even"), a_training);
    // B, 3 layers uniform mlp: 3 x (mixer 73728 + block MLP 3 x 96x200) + LM head 96x120.
    double b_forward = 2.0 * 96 * 120 + 3 * (73728 + 2.0 * 3 * 96 * 200);  // 589824
    expect_close("model training FLOPs per token (B, uniform mlp)", model_flops(&SHAPE_B, 3, "mlp", "uniform"),
                 3 * b_forward);                                          // 1769472
    // 256 tokens in 0.5 s = 512 tokens/s; x 512640 FLOPs = 262,471,680 FLOP/s
    // = 0.26247168 GFLOP/s of a 2.5 GFLOP/s peak.
    // C, 1 layer standard: the mixer 30912, the block MLP 3 x 48x64, the LM head 48x50.
    double c_forward = 2.0 * 48 * 50 + 30912 + 2.0 * 3 * 48 * 64;  // 54144
    expect_close("model training FLOPs per token (C, head_dim=24, uniform standard)",
                 model_flops(&SHAPE_C, 1, "standard", "uniform"), 3 * c_forward);  // 162432
    expect_close("MFU of 256 tokens in 0.5 s at 512640 FLOPs/token of 2.5 GFLOP/s", progress_mfu(256, 0.5, a_training, 2.5),
                 0.26247168 / 2.5);
}

int main(void) {
    check_shape_a();
    check_shape_b();
    check_shape_c();
    check_model_and_mfu();
    return testing_exit_code();
}
