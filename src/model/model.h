// The decoder-only model (DESIGN.md section 4): embedding, pre-norm blocks
//   x += Mixer(RMSNorm(x));  x += SwiGLU-MLP(RMSNorm(x))
// final RMSNorm and an LM head (tied to the embedding or not), softmax cross entropy.
// One parameter buffer, one gradient buffer (same layout, from the registry), one
// activation arena sized for the largest micro-batch, nothing allocated per step.
//
// Tensor parallelism (DESIGN.md 7) over the process grid's tp group: heads, the MLP
// width and the vocabulary are split; every mixer and MLP sees the full normalised rows
// and returns a partial output that the tp group sums (all-reduce), or, with sequence
// parallelism, the residual stream between blocks is this rank's sequence shard: the
// normalised input is all-gathered before the mixer and the MLP and their partial
// outputs reduce-scattered (the edges of the column- and row-parallel layers,
// par/layers.h). "local" rows below are the shard (= all rows without sp), "full" rows
// every position of the micro-batch.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/params.h"
#include "mixers/mixer.h"
#include "par/grad_reduce.h"
#include "par/process_grid.h"

typedef struct {
    int input_norm, post_norm;          // RMSNorm weights
    int gate, up, down;                 // SwiGLU MLP
    float *residual_in;                 // [local rows, d] input of the block
    float *mixer_input, *rstd1;         // RMSNorm before the mixer: [full rows, d], [local rows]
    float *residual_mid;                // [local rows, d] after the mixer branch
    float *mlp_input, *rstd2;           // RMSNorm before the MLP: [full rows, d], [local rows]
    float *gate_out, *up_out, *act;     // [full rows, intermediate_local]
    int intermediate_local;             // this rank's share of the layer's MLP width m(l)
    float *rope_cos, *rope_sin;         // [max_seq_len, r_qk(l)/2]: shared by layers of one r_qk and pairs
    // staticembqk layers: RMSNorm(e) with this block's input norm weight ([full rows, d])
    // and its rstd ([local rows]); NULL in the other layers.
    float *normed_embeddings, *normed_embeddings_rstd;
} block_state;



typedef struct {
    decon_config config;                // tensor_parallel/sequence_parallel = the grid's
    // Layer l's own config (config_layer): its head_dim r_qk(l), value_head_dim r_v(l)
    // and intermediate_size m(l); what its mixer and MLP are built and run with.
    decon_config *layer_configs;
    param_registry registry;            // this rank's tensor-parallel shard
    process_grid *grid;                 // not owned (own_grid for single-rank models)
    process_grid own_grid;
    // When set (by the trainer, for the step's last micro-batch), backward tells it which
    // gradients are final so the data-parallel reduction overlaps the rest of backward.
    grad_reducer *reducer;
    int vocab_start, vocab_local;       // this rank's rows of the embedding / LM head
    int intermediate_local;             // this rank's widest MLP share (max over layers)
    float *params, *grads;
    const mixer_kind **plan;
    mixer_layer *mixers;
    block_state *blocks;
    int embed, final_norm, lm_head;     // registry indices (lm_head == embed when tied)
    int max_batch, max_seq_len;
    arena activations, scratch;
    float *rope_cos, *rope_sin;
    int *inputs, *targets;              // the last micro-batch (+ the fixed stream's tokens)
    // The fixed stream (DESIGN.md 5), when a layer's mixer uses it: one extra sequence
    // appended to every micro-batch, whose input is fixed_input (rndembqk: Gaussian, never
    // trained) or the embedding of fixed_tokens (fixedseqqk), and which carries no loss.
    bool has_fixed_stream, fixed_stream_from_tokens;
    float *fixed_input;                 // [max_seq_len, d]
    int *fixed_tokens;                  // [max_seq_len]
    bool uses_embeddings;               // some mixer reads the input embeddings
    float *d_embeddings;                // [rows, d] their gradient (dL/de)
    bool *skipped;                      // per layer: removed for evaluation (skip)
    float *residual_out, *final_normed, *final_rstd;   // [local], [full loss rows], [local]
    float *d_residual, *d_normed;       // backward: residual-stream [local] and normed-input [full] gradients
    float *d_normed_local;              // [local rows, d] (= d_normed without sp)
    float *normed_local;                // [local rows, d] a norm's output before the sp gather
    float *branch_out;                  // [full rows, d] a branch's partial output before the sp reduce-scatter
    float *d_out_full;                  // [full rows, d] a residual gradient gathered along the sequence (sp)
    float *d_normed_embeddings;         // [full rows, d] staticembqk's gradient w.r.t. RMSNorm(e)
    float *lm_scratch;
    int batch, seq_len;                 // shape of the last forward
} model;

// Registers every tensor and builds the layer plan; fatal (naming origin) on a bad config.
// model_build: one rank (tp = 1); model_build_parallel: this rank's shard of the grid's
// tensor-parallel decomposition (the grid outlives the model).
void model_build(model *m, const decon_config *config, const char *origin);
void model_build_parallel(model *m, const decon_config *config, const char *origin, process_grid *grid);
// Allocates parameter/gradient buffers and the activation arena for up to
// max_batch x max_seq_len tokens.
void model_allocate(model *m, int max_batch, int max_seq_len);
void model_free(model *m);
void model_initialize(model *m, uint64_t seed);

// One micro-batch, as llm.c: model_forward, then model_loss (evaluation) or
// model_backward (training). Under tensor parallelism every rank of the tp group passes
// the same tokens and gets the same loss; gradients are this rank's shard (replicated
// tensors' partial shares flagged grad_partial_over_tp are summed by the grad_reducer).
//
// The forward pass over batch x seq_len tokens (+ the fixed stream): embedding, blocks,
// final norm, keeping what backward needs and the final normalised hidden states of the
// loss rows (m->final_normed, which eval_logits reads).
void model_forward(model *m, const int *inputs, int batch, int seq_len);
// The LM head and the loss of the last forward: returns the SUM of per-token losses
// (targets < 0 ignored); per-token losses written to losses[] when non-NULL.
double model_loss(model *m, const int *targets, float *losses);
// The backward pass of the last forward: the LM head fused with the loss (it returns and
// writes what model_loss does) and its gradient, then the blocks in reverse;
// accumulates loss_scale * d(sum loss)/d(params) into m->grads.
double model_backward(model *m, const int *targets, float loss_scale, float *losses);
// The context the mixers see for the last forward (for recordings), then layer l's own
// (its config and RoPE tables) by model_layer_context before calling layer l's mixer.
mixer_context model_mixer_context(model *m);
void model_layer_context(const model *m, int layer, mixer_context *context);
// fixedseqqk's fixed token sequence t_s (max_seq_len tokens; ids < vocab_size).
void model_set_fixed_tokens(model *m, const int *tokens);
// Skip (evaluation only): layers removed whole (mixer and MLP), the residual passing
// through. NULL restores the full model. Forward only: backward with skipped layers is
// an error.
void model_set_skipped(model *m, const bool *skipped);

// Matmul FLOPs of one training step per token (forward + backward = 3 x forward),
// counting the LM head and attention scores as DESIGN.md / docs/design.md describe.
double model_training_flops_per_token(const model *m, int seq_len);
size_t model_activation_bytes(const model *m);
// Bytes one rank sends in the tensor-parallel activation collectives (all-reduce, or sp's
// all-gather + reduce-scatter) for one forward+backward of batch x seq_len, ring volumes:
// (t-1)/t * s*h*4 bytes * [(8n + 2 + 2k)(b+f) + 2b], n layers (8 = two branches, each
// one all-reduce forward and one backward, or with sp gather + scatter each way), the
// embedding's 2, k staticembqk layers' 2 for their normalised e, and the LM head's 2 on
// the b loss sequences; f = 1 with a fixed stream. blocks_only: Megatron's per-layer
// 8(t-1)/t*s*b*h alone (n layers, b+f sequences). 0 on one rank.
double model_tensor_parallel_traffic_bytes(const model *m, int batch, int seq_len, bool blocks_only);
// Prints the plan and the parameter count per component and per layer.
void model_print_summary(const model *m);
