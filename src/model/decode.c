#include "model/decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "model/rope_layers.h"
#include "ops/ops.h"
#include "par/layers.h"
#include "par/vocab_parallel.h"

struct decode_session {
    model *m;
    int batch, max_context;
    int *lengths;                        // host [batch]: tokens held by each sequence
    int *host_positions, *host_tokens;   // host [batch]: this step's positions and tokens
    int *positions, *tokens;             // backend [batch]
    float **states, **shared;            // per layer: batch x state_floats; shared (or NULL)
    size_t *state_floats, *shared_floats;
    // one row per sequence: the residual stream, a norm's output, a branch's partial
    // output, the token embeddings and their norm (staticembqk), rstd scratch
    float *residual, *normed, *branch, *embeddings, *normed_embeddings, *rstd;
    float *gate, *up, *act;              // [batch, local intermediate]
    float *logits_local, *logits;        // [batch, local vocab], [batch, vocab]
    float **rope_cos, **rope_sin;        // per layer [max_context, r_qk(l) / 2], shared by layers of one r_qk and pairs
    arena scratch;                       // the mixers' step temporaries
    int *prompt_tokens;                  // host [max_batch, max_seq_len]: a prefill chunk, padded
    char error[320];
};

static const float *param_of(const model *m, int index) { return m->params + m->registry.items[index].offset; }

static void set_error(decode_session *s, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(s->error, sizeof s->error, format, args);
    va_end(args);
}

static float *floats(size_t count) { return ops_alloc((count ? count : 1) * sizeof(float)); }

// The first layer with layer l's r_qk and RoPE pairs: the one whose tables layer l reads.
static int rope_owner(const model *m, int l) {
    for (int j = 0; j < l; j++)
        if (rope_layers_share(&m->config, j, l)) return j;
    return l;
}

// The fixed stream over max_context positions, once: a forward whose only sequence is
// the fixed one, then every fixed-stream layer keeps its queries and keys.
static void share_fixed_stream(decode_session *s) {
    model *m = s->m;
    model_forward(m, s->prompt_tokens, 0, s->max_context);
    mixer_context forward = model_mixer_context(m);
    for (int l = 0; l < m->config.num_hidden_layers; l++) {
        model_layer_context(m, l, &forward);
        if (s->shared[l] && !m->skipped[l]) m->plan[l]->decode_share(&m->mixers[l], &forward, s->shared[l]);
    }
}

decode_session *decode_create(model *m, int batch, int max_context) {
    const decon_config *c = &m->config;
    if (batch < 1 || max_context < 1) fatal("decode: batch %d and maximum context %d must be >= 1", batch, max_context);
    if (c->sequence_parallel) fatal("decode: sequence parallelism (--sp) is not supported when decoding; drop it");
    if (m->has_fixed_stream && max_context > m->max_seq_len)
        fatal("decode: the fixed stream is computed once for the maximum context %d, but the model is allocated for "
              "%d positions; allocate it for at least %d",
              max_context, m->max_seq_len, max_context);
    decode_session *s = xcalloc(1, sizeof *s);
    int n = c->num_hidden_layers, tp = m->grid->tensor_size;
    size_t d = (size_t)c->hidden_size, rows = (size_t)batch, inter = (size_t)m->intermediate_local;
    s->m = m;
    s->batch = batch;
    s->max_context = max_context;
    s->lengths = xcalloc(rows, sizeof(int));
    s->host_positions = xcalloc(rows, sizeof(int));
    s->host_tokens = xcalloc(rows, sizeof(int));
    s->positions = ops_alloc(rows * sizeof(int));
    s->tokens = ops_alloc(rows * sizeof(int));
    s->states = (float **)xcalloc((size_t)n, sizeof(float *));
    s->shared = (float **)xcalloc((size_t)n, sizeof(float *));
    s->state_floats = xcalloc((size_t)n, sizeof(size_t));
    s->shared_floats = xcalloc((size_t)n, sizeof(size_t));
    size_t scratch = 0;
    for (int l = 0; l < n; l++) {
        const mixer_kind *kind = m->plan[l];
        const decon_config *lc = &m->layer_configs[l];  // layer l's own shapes (r_qk, r_v)
        s->state_floats[l] = kind->decode_state_floats(lc, max_context);
        s->states[l] = floats(rows * s->state_floats[l]);
        if (kind->decode_shared_floats) {
            s->shared_floats[l] = kind->decode_shared_floats(lc, max_context);
            s->shared[l] = floats(s->shared_floats[l]);
        }
        size_t need = kind->decode_scratch_floats(lc, batch, max_context);
        if (need > scratch) scratch = need;
    }
    size_t scratch_bytes = scratch * sizeof(float) + (size_t)64 * 16;
    arena_over(&s->scratch, ops_alloc(scratch_bytes), scratch_bytes);
    s->residual = floats(rows * d);
    s->normed = floats(rows * d);
    s->branch = floats(rows * d);
    s->embeddings = floats(rows * d);
    s->normed_embeddings = floats(rows * d);
    s->rstd = floats(rows);
    s->gate = floats(rows * inter);
    s->up = floats(rows * inter);
    s->act = floats(rows * inter);
    s->logits_local = floats(rows * (size_t)m->vocab_local);
    s->logits = floats(rows * (size_t)c->vocab_size);
    s->rope_cos = (float **)xcalloc((size_t)n, sizeof(float *));
    s->rope_sin = (float **)xcalloc((size_t)n, sizeof(float *));
    for (int l = 0; l < n; l++) {
        int owner = rope_owner(m, l), dh = config_head_dim(&m->layer_configs[l]);
        if (owner < l) {
            s->rope_cos[l] = s->rope_cos[owner];
            s->rope_sin[l] = s->rope_sin[owner];
            continue;
        }
        s->rope_cos[l] = floats((size_t)max_context * (size_t)(dh / 2));
        s->rope_sin[l] = floats((size_t)max_context * (size_t)(dh / 2));
        rope_layer_tables(c, l, s->rope_cos[l], s->rope_sin[l], max_context);
    }
    process_grid_reserve_staging(m->grid, rows * (size_t)m->vocab_local * (size_t)tp);
    s->prompt_tokens = xcalloc((size_t)m->max_batch * (size_t)m->max_seq_len + 1, sizeof(int));
    if (m->has_fixed_stream) share_fixed_stream(s);
    return s;
}

void decode_free(decode_session *s) {
    if (!s) return;
    for (int l = 0; l < s->m->config.num_hidden_layers; l++) {
        ops_free(s->states[l]);
        ops_free(s->shared[l]);
        if (rope_owner(s->m, l) == l) {
            ops_free(s->rope_cos[l]);
            ops_free(s->rope_sin[l]);
        }
    }
    free((void *)s->rope_cos);
    free((void *)s->rope_sin);
    float *buffers[] = {s->residual, s->normed, s->branch, s->embeddings, s->normed_embeddings, s->rstd, s->gate,
                        s->up, s->act, s->logits_local, s->logits};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) ops_free(buffers[i]);
    ops_free(s->scratch.base);
    ops_free(s->positions);
    ops_free(s->tokens);
    free((void *)s->states);
    free((void *)s->shared);
    free(s->state_floats);
    free(s->shared_floats);
    free(s->lengths);
    free(s->host_positions);
    free(s->host_tokens);
    free(s->prompt_tokens);
    free(s);
}

// logits (host, [rows, vocab]) of the final normalised rows `hidden`: this rank's
// vocabulary rows of the LM head, then the all-gather over the tp group.
static void logits_of(decode_session *s, const float *hidden, int rows, float *logits) {
    model *m = s->m;
    int d = m->config.hidden_size, vocab = m->config.vocab_size;
    linear_forward(s->logits_local, hidden, param_of(m, m->lm_head), NULL, rows, d, m->vocab_local);
    vocab_parallel_gather_logits(m->grid, s->logits, s->logits_local, rows, m->vocab_local);
    if (logits) ops_to_host(logits, s->logits, (size_t)rows * (size_t)vocab * sizeof(float));
}

static bool tokens_valid(decode_session *s, const int *tokens, int count, const char *what, int sequence) {
    int vocab = s->m->config.vocab_size;
    for (int i = 0; i < count; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab) {
            set_error(s, "%s of sequence %d: token id %d at %d is outside the vocabulary [0, %d)", what, sequence,
                      tokens[i], i, vocab);
            return false;
        }
    return true;
}

bool decode_prefill(decode_session *s, int count, const int *sequences, const int *const *prompts,
                    const int *lengths, float *logits) {
    model *m = s->m;
    int limit = s->max_context < m->max_seq_len ? s->max_context : m->max_seq_len;
    for (int i = 0; i < count; i++) {
        int b = sequences[i];
        if (b < 0 || b >= s->batch) {
            set_error(s, "prefill: sequence %d is outside the session's batch [0, %d)", b, s->batch);
            return false;
        }
        if (lengths[i] < 1) {
            set_error(s, "prefill: the prompt of sequence %d is empty; give at least one token", b);
            return false;
        }
        if (lengths[i] > limit) {
            set_error(s, "prefill: the prompt of sequence %d has %d tokens, more than the %d the session takes "
                         "(maximum context %d, model forward %d); shorten it or raise the maximum context",
                      b, lengths[i], limit, s->max_context, m->max_seq_len);
            return false;
        }
        if (!tokens_valid(s, prompts[i], lengths[i], "prefill: the prompt", b)) return false;
    }
    const decon_config *c = &m->config;
    int d = c->hidden_size, vocab = c->vocab_size;
    for (int first = 0; first < count; first += m->max_batch) {
        int chunk = count - first < m->max_batch ? count - first : m->max_batch, longest = 0;
        for (int i = 0; i < chunk; i++)
            if (lengths[first + i] > longest) longest = lengths[first + i];
        // Right-padded to the longest prompt: causal, so the padding changes no earlier row.
        for (int i = 0; i < chunk; i++) {
            int *row = s->prompt_tokens + (size_t)i * longest;
            memcpy(row, prompts[first + i], (size_t)lengths[first + i] * sizeof(int));
            memset(row + lengths[first + i], 0, (size_t)(longest - lengths[first + i]) * sizeof(int));
        }
        model_forward(m, s->prompt_tokens, chunk, longest);
        mixer_context forward = model_mixer_context(m);
        for (int l = 0; l < c->num_hidden_layers; l++) {
            if (m->skipped[l] || !m->plan[l]->decode_prefill) continue;
            model_layer_context(m, l, &forward);
            for (int i = 0; i < chunk; i++)
                m->plan[l]->decode_prefill(&m->mixers[l], &forward,
                                           s->states[l] + (size_t)sequences[first + i] * s->state_floats[l],
                                           s->max_context, i, lengths[first + i]);
        }
        for (int i = 0; i < chunk; i++) {
            size_t last = (size_t)i * (size_t)longest + (size_t)lengths[first + i] - 1;
            copy_floats(s->normed + (size_t)i * d, m->final_normed + last * d, (size_t)d);
            s->lengths[sequences[first + i]] = lengths[first + i];
        }
        logits_of(s, s->normed, chunk, logits ? logits + (size_t)first * vocab : NULL);
    }
    return true;
}

// One row per sequence through the tp group's all-reduce, as row_parallel_output_forward
// does at the end of every branch of the training forward (no sp: in place).
static void reduce_rows(decode_session *s, float *rows) {
    region_activation y = row_parallel_output_of(s->m->grid, rows, rows);
    row_parallel_output_forward(s->m->grid, y, s->batch, 1, s->m->config.hidden_size);
}

bool decode_step(decode_session *s, const int *tokens, float *logits) {
    model *m = s->m;
    const decon_config *c = &m->config;
    int B = s->batch, d = c->hidden_size;
    for (int b = 0; b < B; b++) {
        if (tokens[b] == DECODE_IDLE) {  // retired: any valid token at position 0, reset below
            s->host_positions[b] = s->host_tokens[b] = 0;
            continue;
        }
        if (s->lengths[b] < 1) {
            set_error(s, "step: sequence %d has no prompt; prefill it first", b);
            return false;
        }
        if (s->lengths[b] >= s->max_context) {
            set_error(s, "step: sequence %d already holds %d tokens, the maximum context; raise it (or reset the "
                         "sequence)", b, s->lengths[b]);
            return false;
        }
        if (!tokens_valid(s, tokens + b, 1, "step: the token", b)) return false;
        s->host_positions[b] = s->lengths[b];
        s->host_tokens[b] = tokens[b];
    }
    size_t rd = (size_t)B * (size_t)d;
    float eps = (float)c->rms_norm_eps;
    ops_from_host(s->positions, s->host_positions, (size_t)B * sizeof(int));
    ops_from_host(s->tokens, s->host_tokens, (size_t)B * sizeof(int));
    mixer_decode x = {
        .step = {.config = c, .registry = &m->registry, .params = m->params, .grads = NULL, .rope_cos = NULL,
                 .rope_sin = NULL, .scratch = &s->scratch, .batch = B, .seq_len = 1, .fixed_sequence = -1,
                 .normed_embeddings = NULL, .d_normed_embeddings = NULL},
        .max_context = s->max_context,
        .positions = s->positions,
        .host_positions = s->host_positions,
    };
    // e = Emb(t): vocab-parallel, each rank embeds its rows and the group sums.
    embedding_forward(s->residual, s->tokens, param_of(m, m->embed), B, d, m->vocab_start, m->vocab_local);
    reduce_rows(s, s->residual);
    if (m->uses_embeddings) copy_floats(s->embeddings, s->residual, rd);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (m->skipped[l]) continue;
        const block_state *blk = &m->blocks[l];
        int inter = blk->intermediate_local;
        size_t ri = (size_t)B * (size_t)inter;
        x.step.config = &m->layer_configs[l];  // layer l's own shapes and RoPE tables
        x.step.rope_cos = s->rope_cos[l];
        x.step.rope_sin = s->rope_sin[l];
        rmsnorm_forward(s->normed, s->rstd, s->residual, param_of(m, blk->input_norm), B, d, eps);
        x.step.normed_embeddings = NULL;
        if (m->plan[l]->uses_embeddings) {  // staticembqk: RMSNorm(e) with this block's input norm weight
            rmsnorm_forward(s->normed_embeddings, s->rstd, s->embeddings, param_of(m, blk->input_norm), B, d, eps);
            x.step.normed_embeddings = s->normed_embeddings;
        }
        x.states = s->states[l];
        x.state_stride = s->state_floats[l];
        x.shared = s->shared[l];
        m->plan[l]->decode_step(&m->mixers[l], &x, s->branch, s->normed);
        reduce_rows(s, s->branch);
        add_inplace(s->residual, s->branch, rd);
        rmsnorm_forward(s->normed, s->rstd, s->residual, param_of(m, blk->post_norm), B, d, eps);
        column_parallel_linear_forward(s->gate, s->normed, param_of(m, blk->gate), NULL, B, d, inter);
        column_parallel_linear_forward(s->up, s->normed, param_of(m, blk->up), NULL, B, d, inter);
        swiglu_forward(s->act, s->gate, s->up, ri);
        row_parallel_linear_forward(s->branch, s->act, param_of(m, blk->down), B, inter, d);
        reduce_rows(s, s->branch);
        add_inplace(s->residual, s->branch, rd);
    }
    rmsnorm_forward(s->normed, s->rstd, s->residual, param_of(m, m->final_norm), B, d, eps);
    logits_of(s, s->normed, B, logits);
    for (int b = 0; b < B; b++) s->lengths[b] = tokens[b] == DECODE_IDLE ? 0 : s->lengths[b] + 1;
    return true;
}

bool decode_set_length_for_timing(decode_session *s, int sequence, int length) {
    if (sequence < 0 || sequence >= s->batch) {
        set_error(s, "set length: sequence %d is outside the session's batch [0, %d)", sequence, s->batch);
        return false;
    }
    if (s->lengths[sequence] < 1) {
        set_error(s, "set length: sequence %d has no prompt; prefill it first", sequence);
        return false;
    }
    if (length < 1 || length >= s->max_context) {
        set_error(s, "set length: %d is outside [1, %d) (the maximum context %d leaves room for one step)", length,
                  s->max_context, s->max_context);
        return false;
    }
    s->lengths[sequence] = length;
    return true;
}

void decode_reset(decode_session *s, int sequence) {
    if (sequence >= 0 && sequence < s->batch) s->lengths[sequence] = 0;
}

int decode_length(const decode_session *s, int sequence) { return s->lengths[sequence]; }
const char *decode_error(const decode_session *s) { return s->error; }
int decode_batch(const decode_session *s) { return s->batch; }
int decode_max_context(const decode_session *s) { return s->max_context; }

size_t decode_layer_bytes(const decode_session *s, int layer) {
    return ((size_t)s->batch * s->state_floats[layer] + s->shared_floats[layer]) * sizeof(float);
}

size_t decode_cache_bytes(const decode_session *s) {
    size_t total = 0;
    for (int l = 0; l < s->m->config.num_hidden_layers; l++) total += decode_layer_bytes(s, l);
    return total;
}

double decode_formula_bytes(const mixer_kind *kind, const decon_config *config, int batch, int max_context) {
    double per_token = (double)kind->cache_floats_per_token(config);
    double state = kind->state_floats ? (double)kind->state_floats(config) : 0.0;
    double shared = kind->shared_cache_floats_per_token ? (double)kind->shared_cache_floats_per_token(config) : 0.0;
    return sizeof(float) * ((double)batch * (per_token * max_context + state) + shared * max_context);
}
