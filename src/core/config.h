// Run configuration: INI files read with inih, Hugging Face key names for the model
// ([model] section), plus [attention], [train], [data], [io]. Every key is declared once
// in config.c's table (type, default, range); unknown keys, ill-typed or out-of-range
// values and missing required keys are rejected with one line naming file and key.
#pragma once
#include <stdbool.h>
#include <stddef.h>

enum { CONFIG_STRING_MAX = 512 };

typedef struct {
    // [model]
    int hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int num_key_value_heads, vocab_size, max_position_embeddings;
    // The per-head size d_h of queries, keys and values (Hugging Face's head_dim); 0 = the
    // key is absent: hidden_size / num_attention_heads. Free of d / h (Bhojanapalli et al.
    // 2020): Wq is [heads d_h, d], Wk and Wv [kv_heads d_h, d], Wo [d, heads d_h].
    int head_dim;
    // The value/output head size r_v (0 = the key is absent: head_dim): Wv is
    // [kv_heads r_v, d], Wo [d, heads r_v]; queries and keys keep head_dim (the scale
    // 1/sqrt(head_dim), RoPE on head_dim). Only standard (and GQA/MQA) layers take r_v !=
    // head_dim (the layer plan refuses the others).
    int value_head_dim;
    // Per-layer shapes (a compressed model, A3): comma lists of num_hidden_layers integers,
    // layer l's r_qk, r_v and MLP width m; "" = every layer takes head_dim, value_head_dim
    // (absent: its r_qk) and intermediate_size. config_layer resolves layer l's config.
    char layer_head_dims[CONFIG_STRING_MAX];
    char layer_value_head_dims[CONFIG_STRING_MAX];
    char layer_intermediate_sizes[CONFIG_STRING_MAX];
    // Per-layer RoPE pairs (an A3-reduced layer keeps whole pairs of the ORIGINAL head at
    // their original frequencies): ';'-separated groups, one per layer, each a comma list of
    // pair indices or ranges a-b of the original head (config_head_dim) in increasing order,
    // r_qk(l)/2 of them; an empty group, or the empty key, = pairs 0..r_qk(l)/2-1 at
    // theta^(-2t/r_qk(l)) as a model trained at that size. config_layer_rope_pairs.
    char layer_rope_pairs[CONFIG_STRING_MAX];
    double rope_theta, rms_norm_eps, initializer_range;
    bool tie_word_embeddings, attention_bias;
    // [attention]
    char variant[64];
    char layout[CONFIG_STRING_MAX];
    double fixed_stream_std;    // sigma of rndembqk's Gaussian fixed stream
    double approx_diag_guard;   // approx-diag's first-order guard (relative)
    double approx_diag_eps;     // approx-diag's second-order denominator floor
    // [train]
    int sequence_length;        // tokens per sequence
    int micro_batch_size;       // sequences per forward/backward
    int global_batch_size;      // sequences per optimizer step (accumulation fills the gap)
    int max_steps;
    double learning_rate, min_learning_rate_ratio, cosine_cycles;
    int warmup_steps;
    double weight_decay, adam_beta1, adam_beta2, adam_epsilon, grad_clip;
    int seed;
    int eval_every, eval_batches;
    int threads;
    char on_nonfinite[16];      // "stop" | "skip": a step whose loss or gradient is not finite
    char precision[8];          // "fp32" | "bf16" (GPU builds: bf16 GEMM/attention inputs, fp32 accumulation)
    // [data]
    char train[CONFIG_STRING_MAX], validation[CONFIG_STRING_MAX];
    char tokenizer[CONFIG_STRING_MAX];  // sentencepiece model ("": tokenizer.model beside train; io/tokenizer_path.h)
    // [io]
    char run_dir[CONFIG_STRING_MAX];
    int checkpoint_every, keep_checkpoints, log_every;
    // attention recordings (io/attention_record.h): every record_every steps (0 = off),
    // record_sequences held-out sequences, record_layers "all" | 1-based ids "1,3",
    // record_dtype "float32" | "float16", record_path ("" = <run_dir>/attn.h5)
    int record_every, record_sequences;
    char record_layers[CONFIG_STRING_MAX];
    char record_dtype[16];
    char record_path[CONFIG_STRING_MAX];
    // [parallel] (DESIGN.md 7): the tensor-parallel size (world = dp x tp, dp inferred),
    // sequence parallelism inside the tp group, ZeRO stage (0 or 1: Adam moments sharded
    // over dp), the data-parallel gradient bucket size. The model sets tensor_parallel to
    // its process grid's tp (1 for single-rank tools such as decon-eval), and mixers size
    // their per-rank work with config_local_heads/config_local_kv_heads.
    int tensor_parallel;
    bool sequence_parallel;
    int zero_stage;
    double bucket_megabytes;
} decon_config;

void config_defaults(decon_config *config);
// Reads path (fatal on any problem), on top of the defaults.
void config_load(decon_config *config, const char *path);
// Applies "section.key=value" (from --set), fatal with the origin on a bad one.
void config_set(decon_config *config, const char *assignment, const char *origin);
// Parses INI text (e.g. the resolved config stored in a checkpoint).
void config_load_text(decon_config *config, const char *text, const char *origin);
// Checks required keys and cross-key constraints (divisibility, ranges); fatal names the key.
void config_validate(const decon_config *config, const char *origin);
// The complete resolved config as INI text (every key); caller frees.
char *config_to_text(const decon_config *config);

// Parses a list of 1-based layer ids of an n-layer model ("all", or distinct ids such as
// "1,3,4") into mask[n]; returns false with the reason in why when it is not one.
bool config_parse_layers(const char *text, int n, bool *mask, char *why, size_t why_size);
// The recording file: [io] record_path, or <run_dir>/attn.h5 when it is empty.
void config_record_path(const decon_config *config, char *out, size_t size);

// d_h: [model] head_dim, or hidden_size / num_attention_heads when it is absent (0).
static inline int config_head_dim(const decon_config *c) {
    return c->head_dim > 0 ? c->head_dim : c->hidden_size / c->num_attention_heads;
}
// r_v: [model] value_head_dim, or config_head_dim when it is absent (0).
static inline int config_value_head_dim(const decon_config *c) {
    return c->value_head_dim > 0 ? c->value_head_dim : config_head_dim(c);
}
static inline int config_kv_heads(const decon_config *c) {
    return c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
}
// Heads held by one tensor-parallel rank (heads are split evenly across the tp group).
static inline int config_local_heads(const decon_config *c) { return c->num_attention_heads / c->tensor_parallel; }
static inline int config_local_kv_heads(const decon_config *c) { return config_kv_heads(c) / c->tensor_parallel; }
// Parses a per-layer list of n positive integers ("" = none: returns true and leaves out
// unchanged); false with the reason in why when it is not one.
bool config_parse_layer_sizes(const char *text, int n, int *out, char *why, size_t why_size);
// Layer l's own config: c with head_dim, value_head_dim and intermediate_size set from
// the per-layer lists (or the uniform keys) and the lists emptied, so that everything
// asking config_head_dim / config_value_head_dim / intermediate_size of it gets layer
// l's sizes. c must be validated (config_validate).
void config_layer(const decon_config *c, int layer, decon_config *out);
// Layer `layer`'s kept RoPE pairs ([model] layer_rope_pairs): writes the original-head pair
// indices to pairs (room for config_head_dim(c) / 2) and returns how many, or 0 when the
// layer takes the default pairs. Pair t then turns by theta^(-2 pairs[t] / config_head_dim(c)).
// c must be validated.
int config_layer_rope_pairs(const decon_config *c, int layer, int *pairs);
// Parses group `layer` of a layer_rope_pairs text for an n-layer model into pairs (room for
// capacity) and *count (0: an empty group); false with the reason in why when the text is
// not n groups of increasing indices in [0, capacity).
bool config_parse_rope_pairs(const char *text, int n, int layer, int *pairs, int capacity, int *count, char *why,
                             size_t why_size);
// Whether any layer's shape differs from the uniform keys (a per-layer list is set).
bool config_has_layer_shapes(const decon_config *c);

// Whether two configs describe the same model (every [model] and [attention] key);
// when not, names the first key that differs in *key.
bool config_same_model(const decon_config *a, const decon_config *b, const char **key);
