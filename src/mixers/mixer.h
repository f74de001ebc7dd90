// The token-mixer interface (DESIGN.md section 3): one struct of function pointers per
// attention variant. The model walks the layer plan and calls these; it never branches
// on variant names. Adding a variant = one file in mixers/ and one row in registry.c.
//
// Tensor parallelism (Megatron, DESIGN.md 7): with config->tensor_parallel = tp > 1 each
// rank holds its shard of every tensor (registry) and runs the mixer on its own heads
// (config_local_heads, config_local_kv_heads; mlp: its slice of the width). Their
// projections are column-parallel (Wq, Wk, Wv; gate, up) and row-parallel (Wo; down)
// linear layers (par/parallel_linear.h); mixers never communicate: the model runs the
// layers' edges (par/layers.h). `inp` is the full normalised input on every rank, `out`
// is this rank's partial output (row-parallel Wo: the sum over ranks is the output),
// `d_out` is the full gradient, `d_inp +=` this rank's share. Sharded tensors get their
// slice's complete gradient; replicated tensors used by only this rank's heads are marked
// grad_partial_over_tp and get this rank's share. Counts (param_count, FLOPs, cache and
// state floats) stay logical: the whole layer.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/params.h"

enum { MIXER_MAX_PARAMS = 12, MIXER_MAX_SAVED = 8 };

// What every mixer call may read: the buffers, the shapes of this micro-batch, and the
// shared tables. batch * seq_len rows; seq_len <= the length the arena was sized for.
typedef struct {
    const decon_config *config;
    const param_registry *registry;
    const float *params;
    float *grads;
    const float *rope_cos, *rope_sin;   // [max_seq_len, head_dim/2]
    arena *scratch;                     // temporaries; released by the mixer before returning
    int batch, seq_len;                 // batch counts the fixed-stream sequence when there is one
    // The fixed stream (DESIGN.md 5): sequence `fixed_sequence` of the batch (-1 when the
    // model has none) is X_l of the fixed stream; mixers with uses_fixed_stream take Q, K
    // from its rows and apply the one attention map to every sequence.
    int fixed_sequence;
    // staticembqk's input E = RMSNorm(e) [batch*seq_len, hidden]: the input token
    // embeddings e = Emb(t), normalised by the model with the layer's input-norm weight
    // (full rows, the same on every tensor-parallel rank), and the gradient with respect
    // to E (+=, this rank's share), which the model sums over tp and backpropagates
    // through that norm to the embedding and the norm weight.
    const float *normed_embeddings;
    float *d_normed_embeddings;
} mixer_context;

struct mixer_kind;

// One decode step (DESIGN.md 12; docs/design.md "Inference"): `step` describes the step's
// rows, one new token per sequence (batch = sequences, seq_len = 1, grads NULL, rope
// tables covering max_context positions, scratch = the session's decode scratch,
// staticembqk's normed_embeddings = RMSNorm(e) of the new tokens); each sequence is at
// its own position. Sequence b's decode state (decode_state_floats, the mixer's own
// layout) is at states + b * state_stride; `shared` is the part every sequence reads
// (decode_shared_floats: the fixed stream's queries and keys), NULL when there is none.
typedef struct {
    mixer_context step;
    int max_context;
    const int *positions;               // [batch] backend memory: the new token's position in each sequence
    const int *host_positions;          // the same on the host
    float *states;
    size_t state_stride;
    const float *shared;
} mixer_decode;

// One layer's instance: the registry indices of its tensors and its saved activations.
typedef struct {
    const struct mixer_kind *kind;
    int layer;                          // 0-based
    int params[MIXER_MAX_PARAMS];       // registry indices, meaning private to the mixer
    float *saved[MIXER_MAX_SAVED];      // bound once from the activation arena
} mixer_layer;

typedef struct mixer_kind {
    const char *name;                   // config name, e.g. "standard"
    char letter;                        // one letter for the layer-plan summary
    bool is_standard;
    bool uses_fixed_stream;             // Q, K from the fixed stream (rndembqk, fixedseqqk)
    // The fixed stream starts from Emb(t_s), the embedded fixed tokens (fixedseqqk), not
    // from Gaussian noise (rndembqk). Mixers of both kinds cannot share one model.
    bool fixed_stream_from_tokens;
    bool uses_embeddings;               // reads context->normed_embeddings (staticembqk)
    // attention_scores gives one score per KEY token, repeated along every row (nonapx's
    // g_t): recordings histogram each token's score once (the diagonal), not the triangle.
    bool scores_per_token;
    // Registers the layer's tensors as "layers.<l>.mixer.<name>".
    void (*register_params)(mixer_layer *layer, param_registry *registry, const decon_config *config);
    // Floats of activations saved for backward, and of scratch needed during a call,
    // for a micro-batch of batch x seq_len, on one tensor-parallel rank.
    size_t (*saved_floats)(const decon_config *config, int batch, int seq_len);
    size_t (*scratch_floats)(const decon_config *config, int batch, int seq_len);
    void (*bind_saved)(mixer_layer *layer, arena *activations, const decon_config *config, int batch, int seq_len);
    // out[rows, hidden] = Mixer(inp[rows, hidden]); saves what backward needs.
    void (*forward)(mixer_layer *layer, const mixer_context *context, float *out, const float *inp);
    // d_inp += dMixer/dinp^T d_out; parameter gradients += into context->grads.
    void (*backward)(mixer_layer *layer, const mixer_context *context, float *d_inp,
                     const float *d_out, const float *inp);
    // The materialised attention matrix of sequence `sequence` of the last forward:
    // probs[local_heads, seq_len, seq_len] (the quadratic reference), this rank's heads
    // (global head shard_rank * local_heads + j). NULL for mixers with none.
    void (*attention_matrix)(mixer_layer *layer, const mixer_context *context, int sequence, float *probs);
    // The pre-softmax scores of sequence `sequence` of the last forward, for recordings:
    // scores[local_heads, seq_len, seq_len] (this rank's heads, as above), row i holding
    // the values whose normalisation gives row i of A (the causal triangle t <= i; zeros
    // above). standard, staticembqk, rndembqk,
    // fixedseqqk, mhe-*: s q_i.k_t after RoPE; approx: the Taylor argument x = s q_i.k_t;
    // nonapx: g_t (scores_per_token). NULL for mixers without scores (mlp, approx-diag).
    void (*attention_scores)(mixer_layer *layer, const mixer_context *context, int sequence, float *scores);
    // Analytic counts: parameters of one layer, forward FLOPs per token at seq_len
    // (matmul FLOPs, 2 per multiply-add, causal), inference cache floats per token.
    int64_t (*param_count)(const decon_config *config);
    double (*forward_flops_per_token)(const decon_config *config, int seq_len);
    int64_t (*cache_floats_per_token)(const decon_config *config);
    // Recurrent mixers (approx, approx-diag, nonapx) instead keep a state per sequence that
    // does not grow with the context: its floats per layer (NULL for the others).
    int64_t (*state_floats)(const decon_config *config);
    // The fixed stream's mixers (rndembqk, fixedseqqk) keep one more cache that the whole
    // batch shares: floats per position of the maximum context (NULL for the others).
    int64_t (*shared_cache_floats_per_token)(const decon_config *config);

    // Decoding (docs/design.md "Inference"). Measured on this rank (local heads), like
    // saved_floats: the floats of one sequence's decode state for up to max_context tokens,
    // of the part the batch shares (NULL: none), and of the decode step's scratch for
    // `batch` sequences. Summed over tp ranks they equal the logical counts above:
    // batch x (cache_floats_per_token x max_context + state_floats) + shared x max_context.
    size_t (*decode_state_floats)(const decon_config *config, int max_context);
    size_t (*decode_shared_floats)(const decon_config *config, int max_context);
    size_t (*decode_scratch_floats)(const decon_config *config, int batch, int max_context);
    // After a forward whose only sequence is the fixed stream over max_context positions:
    // fills `shared` from it (NULL unless decode_shared_floats).
    void (*decode_share)(mixer_layer *layer, const mixer_context *forward, float *shared);
    // After the training forward over prompts (`forward` its context): `state` becomes the
    // decode state (sized for max_context) after the first `length` positions of sequence
    // `sequence` of that batch.
    void (*decode_prefill)(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                           int sequence, int length);
    // One token per sequence: out[batch, hidden] = this rank's partial output (as forward),
    // inp[batch, hidden] the normalised input; appends the token to every state.
    void (*decode_step)(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp);
} mixer_kind;

// The table of variants (registry.c).
const mixer_kind *mixer_find(const char *name);          // NULL when unknown
const char *mixer_names(void);                           // "standard, ..." for messages
const mixer_kind *mixer_standard(void);

// Shared by mixers: "layers.<layer>.mixer.<suffix>".
void mixer_param_name(char *out, size_t size, int layer, const char *suffix);

// Sequence `sequence`'s rows of a mixer's saved q [rows, local_heads*d_h] and k [rows,
// local_kv_heads*d_h], with the shape the per-sequence ops (attention_probabilities and
// its kin) take: the body of most attention_matrix and attention_scores.
typedef struct {
    const float *q, *k;
    int seq_len, heads, kv_heads, head_dim;
} mixer_sequence_qk;

static inline mixer_sequence_qk mixer_sequence_qk_of(const mixer_context *x, const float *q, const float *k,
                                                     int sequence) {
    const decon_config *c = x->config;
    mixer_sequence_qk s = {NULL, NULL, x->seq_len, config_local_heads(c), config_local_kv_heads(c),
                           config_head_dim(c)};
    size_t offset = (size_t)sequence * (size_t)x->seq_len;
    s.q = q + offset * (size_t)(s.heads * s.head_dim);
    s.k = k + offset * (size_t)(s.kv_heads * s.head_dim);
    return s;
}
