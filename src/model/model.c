#include "model/model.h"

#include <math.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "model/layer_plan.h"
#include "model/rope_layers.h"
#include "ops/ops.h"
#include "par/layers.h"
#include "par/vocab_parallel.h"

static float *param_of(const model *m, int index) { return m->params + m->registry.items[index].offset; }
static float *grad_of(const model *m, int index) { return m->grads + m->registry.items[index].offset; }

void model_build(model *m, const decon_config *config, const char *origin) {
    model_build_parallel(m, config, origin, NULL);
}

void model_build_parallel(model *m, const decon_config *config, const char *origin, process_grid *grid) {
    memset(m, 0, sizeof *m);
    if (!grid) process_grid_single(&m->own_grid);
    m->grid = grid ? grid : &m->own_grid;
    m->config = *config;
    m->config.tensor_parallel = m->grid->tensor_size;
    m->config.sequence_parallel = m->grid->sequence_parallel;
    const decon_config *c = &m->config;
    int n = c->num_hidden_layers, d = c->hidden_size;
    float std = (float)c->initializer_range, out_std = std / sqrtf(2.0f * (float)n);
    params_init(&m->registry, m->grid->tensor_rank, m->grid->tensor_size);
    m->plan = (const mixer_kind **)xcalloc((size_t)n, sizeof(const mixer_kind *));
    m->mixers = xcalloc((size_t)n, sizeof *m->mixers);
    m->blocks = xcalloc((size_t)n, sizeof *m->blocks);
    m->skipped = xcalloc((size_t)n, sizeof *m->skipped);
    layer_plan_build(m->plan, c, origin);
    m->layer_configs = xcalloc((size_t)n, sizeof *m->layer_configs);
    for (int l = 0; l < n; l++) config_layer(c, l, &m->layer_configs[l]);
    const mixer_kind *first_fixed = NULL;  // the fixed stream's kind: one per model
    for (int l = 0; l < n; l++) {
        const mixer_kind *kind = m->plan[l];
        if (kind->uses_fixed_stream) {
            if (first_fixed && kind->fixed_stream_from_tokens != first_fixed->fixed_stream_from_tokens)
                fatal("%s: %s and %s cannot share one model (their fixed streams differ)", origin, first_fixed->name,
                      kind->name);
            if (!first_fixed) first_fixed = kind;
            m->has_fixed_stream = true;
            m->fixed_stream_from_tokens = kind->fixed_stream_from_tokens;
        }
        m->uses_embeddings |= kind->uses_embeddings;
    }

    param_registry *r = &m->registry;
    m->embed = params_add(r, "embed_tokens", "embedding", -1, c->vocab_size, d, SHARD_ROWS, INIT_NORMAL, std, true);
    char name[PARAM_NAME_MAX];
    for (int l = 0; l < n; l++) {
        block_state *b = &m->blocks[l];
        int inter = m->layer_configs[l].intermediate_size;
        snprintf(name, sizeof name, "layers.%d.input_layernorm", l);
        b->input_norm = params_add(r, name, "norm", l, d, 0, SHARD_NONE, INIT_ONES, 0, false);
        m->mixers[l].kind = m->plan[l];
        m->mixers[l].layer = l;
        m->plan[l]->register_params(&m->mixers[l], r, &m->layer_configs[l]);
        snprintf(name, sizeof name, "layers.%d.post_attention_layernorm", l);
        b->post_norm = params_add(r, name, "norm", l, d, 0, SHARD_NONE, INIT_ONES, 0, false);
        snprintf(name, sizeof name, "layers.%d.mlp.gate_proj", l);
        b->gate = params_add(r, name, "mlp", l, inter, d, SHARD_ROWS, INIT_NORMAL, std, true);
        snprintf(name, sizeof name, "layers.%d.mlp.up_proj", l);
        b->up = params_add(r, name, "mlp", l, inter, d, SHARD_ROWS, INIT_NORMAL, std, true);
        snprintf(name, sizeof name, "layers.%d.mlp.down_proj", l);
        b->down = params_add(r, name, "mlp", l, d, inter, SHARD_COLS, INIT_NORMAL, out_std, true);
    }
    m->final_norm = params_add(r, "norm", "norm", -1, d, 0, SHARD_NONE, INIT_ONES, 0, false);
    m->lm_head = c->tie_word_embeddings
                     ? m->embed
                     : params_add(r, "lm_head", "lm_head", -1, c->vocab_size, d, SHARD_ROWS, INIT_NORMAL, std, true);
    m->vocab_start = (int)r->items[m->embed].local_start[0];
    m->vocab_local = (int)r->items[m->embed].local_shape[0];
    for (int l = 0; l < n; l++) {
        block_state *b = &m->blocks[l];
        b->intermediate_local = (int)r->items[b->gate].local_shape[0];
        if (b->intermediate_local > m->intermediate_local) m->intermediate_local = b->intermediate_local;
    }
    // With sp, norms run on sequence shards: each rank's norm-weight gradient is its
    // shard's share (without sp every rank normalises all rows and has the whole gradient).
    for (int i = 0; i < r->count; i++)
        if (strcmp(r->items[i].group, "norm") == 0) r->items[i].grad_partial_over_tp = c->sequence_parallel;
}

// Floats handed out by model_allocate, each rounded up as arena_floats does.
static size_t padded(size_t floats) { return floats + 16; }

// The first layer with layer l's r_qk and RoPE pairs: the one whose tables layer l reads.
static int rope_owner(const model *m, int l) {
    for (int j = 0; j < l; j++)
        if (rope_layers_share(&m->config, j, l)) return j;
    return l;
}

void model_allocate(model *m, int max_batch, int max_seq_len) {
    const decon_config *c = &m->config;
    int n = c->num_hidden_layers, tp = m->grid->tensor_size;
    bool sp = c->sequence_parallel;
    if (sp && max_seq_len % tp != 0)
        fatal("sequence length %d is not divisible by the tensor-parallel size %d (sequence parallel)", max_seq_len, tp);
    m->max_batch = max_batch;
    m->max_seq_len = max_seq_len;
    max_batch += m->has_fixed_stream;  // the fixed stream rides along as one more sequence
    size_t full = (size_t)max_batch * (size_t)max_seq_len, local = sp ? full / (size_t)tp : full;
    size_t d = (size_t)c->hidden_size;
    m->params = ops_alloc(m->registry.total * sizeof(float));
    m->grads = ops_alloc(m->registry.total * sizeof(float));

    // Activations saved for backward and the model's own temporaries, counted exactly as
    // they are handed out below.
    size_t saved = 2 * padded(full);
    for (int l = 0; l < n; l++)  // RoPE tables, one pair per distinct r_qk and pairs
        if (rope_owner(m, l) == l)
            saved += 2 * padded((size_t)max_seq_len * (size_t)(config_head_dim(&m->layer_configs[l]) / 2));
    saved += 3 * padded(local * d) + padded(full * d) + padded(local) + padded(full * d) + padded(local * d);
    saved += 2 * padded(full * d) + padded((size_t)max_seq_len * d) + padded((size_t)max_seq_len);
    saved += padded(local * d) + padded(full * d);  // normed_local, d_normed_embeddings
    size_t mixer_scratch = 0;
    size_t workspace = 0;  // the attention ops' own scratch (the backend's workspace): the widest layer's
    for (int l = 0; l < n; l++) {
        const decon_config *lc = &m->layer_configs[l];
        size_t inter = (size_t)m->blocks[l].intermediate_local;
        saved += 2 * padded(local * d) + 2 * padded(full * d) + 2 * padded(local) + 3 * padded(full * inter);
        if (m->plan[l]->uses_embeddings) saved += padded(full * d) + padded(local);
        saved += m->plan[l]->saved_floats(lc, max_batch, max_seq_len);
        size_t s = m->plan[l]->scratch_floats(lc, max_batch, max_seq_len);
        if (s > mixer_scratch) mixer_scratch = s;
        int widest = config_head_dim(lc) > config_value_head_dim(lc) ? config_head_dim(lc) : config_value_head_dim(lc);
        size_t w = ops_attention_workspace_floats(max_seq_len, config_local_heads(lc), config_local_kv_heads(lc), widest);
        if (w > workspace) workspace = w;
    }
    size_t inter = (size_t)m->intermediate_local;
    size_t lm = padded(lm_head_scratch_floats((int)full, m->vocab_local));
    size_t mlp_scratch = 3 * padded(full * inter);
    size_t scratch = (mixer_scratch > mlp_scratch ? mixer_scratch : mlp_scratch) + lm;
    size_t activation_bytes = saved * sizeof(float) + (size_t)64 * 16, scratch_bytes = scratch * sizeof(float) + (size_t)64 * 16;
    arena_over(&m->activations, ops_alloc(activation_bytes), activation_bytes);
    arena_over(&m->scratch, ops_alloc(scratch_bytes), scratch_bytes);
    // The attention ops' own scratch: the backend's workspace, reserved here once.
    ops_workspace_reserve(workspace);
    // sp's permutation buffer: every activation it gathers or reduce-scatters is full x d.
    if (sp) process_grid_reserve_staging(m->grid, full * d);

    arena *a = &m->activations;
    m->inputs = (int *)arena_floats(a, full);
    m->targets = (int *)arena_floats(a, full);
    for (int l = 0; l < n; l++) {  // the frequencies depend on r_qk and the pairs: one table per distinct pair
        block_state *b = &m->blocks[l];
        int owner = rope_owner(m, l), dh = config_head_dim(&m->layer_configs[l]);
        if (owner < l) {
            b->rope_cos = m->blocks[owner].rope_cos;
            b->rope_sin = m->blocks[owner].rope_sin;
            continue;
        }
        b->rope_cos = arena_floats(a, (size_t)max_seq_len * (size_t)(dh / 2));
        b->rope_sin = arena_floats(a, (size_t)max_seq_len * (size_t)(dh / 2));
        rope_layer_tables(c, l, b->rope_cos, b->rope_sin, max_seq_len);
    }
    m->rope_cos = m->blocks[0].rope_cos;
    m->rope_sin = m->blocks[0].rope_sin;
    for (int l = 0; l < n; l++) {
        block_state *b = &m->blocks[l];
        size_t inter = (size_t)b->intermediate_local;
        b->residual_in = arena_floats(a, local * d);
        b->mixer_input = arena_floats(a, full * d);
        b->rstd1 = arena_floats(a, local);
        b->residual_mid = arena_floats(a, local * d);
        b->mlp_input = arena_floats(a, full * d);
        b->rstd2 = arena_floats(a, local);
        b->gate_out = arena_floats(a, full * inter);
        b->up_out = arena_floats(a, full * inter);
        b->act = arena_floats(a, full * inter);
        if (m->plan[l]->uses_embeddings) {
            b->normed_embeddings = arena_floats(a, full * d);
            b->normed_embeddings_rstd = arena_floats(a, local);
        }
        m->plan[l]->bind_saved(&m->mixers[l], a, &m->layer_configs[l], max_batch, max_seq_len);
    }
    m->residual_out = arena_floats(a, local * d);
    m->final_normed = arena_floats(a, full * d);
    m->final_rstd = arena_floats(a, local);
    m->d_residual = arena_floats(a, local * d);
    m->d_normed = arena_floats(a, full * d);
    m->d_normed_local = sp ? arena_floats(a, local * d) : m->d_normed;
    m->d_embeddings = arena_floats(a, local * d);
    m->branch_out = arena_floats(a, full * d);
    m->d_out_full = arena_floats(a, full * d);
    m->fixed_input = arena_floats(a, (size_t)max_seq_len * d);
    m->fixed_tokens = (int *)arena_floats(a, (size_t)max_seq_len);
    m->normed_local = arena_floats(a, local * d);
    m->d_normed_embeddings = arena_floats(a, full * d);
    // X_1 of rndembqk's fixed stream: Gaussian noise from its own counter-RNG stream.
    for (size_t i = 0; i < (size_t)max_seq_len * d; i++)
        m->fixed_input[i] = (float)(c->fixed_stream_std * rng_normal((uint64_t)c->seed, rng_hash_string("fixed_stream"), i));
    ops_from_host(m->fixed_input, m->fixed_input, (size_t)max_seq_len * d * sizeof(float));
    m->lm_scratch = arena_floats(&m->scratch, lm - 16);
}

void model_free(model *m) {
    ops_free(m->params);
    ops_free(m->grads);
    ops_free(m->activations.base);
    ops_free(m->scratch.base);
    free((void *)m->plan);
    free(m->mixers);
    free(m->blocks);
    free(m->skipped);
    free(m->layer_configs);
    params_free(&m->registry);
    if (m->grid == &m->own_grid) process_grid_free(&m->own_grid);
}

void model_initialize(model *m, uint64_t seed) { params_initialize(&m->registry, m->params, seed); }

void model_layer_context(const model *m, int layer, mixer_context *context) {
    context->config = &m->layer_configs[layer];
    context->rope_cos = m->blocks[layer].rope_cos;
    context->rope_sin = m->blocks[layer].rope_sin;
}

mixer_context model_mixer_context(model *m) {
    mixer_context context = {
        .config = &m->config,
        .registry = &m->registry,
        .params = m->params,
        .grads = m->grads,
        .rope_cos = m->rope_cos,
        .rope_sin = m->rope_sin,
        .scratch = &m->scratch,
        .batch = m->batch,
        .seq_len = m->seq_len,
        .fixed_sequence = m->has_fixed_stream ? m->batch - 1 : -1,
        // staticembqk's normalised e is per layer: the forward and backward set it.
        .normed_embeddings = NULL,
        .d_normed_embeddings = m->d_normed_embeddings,
    };
    return context;
}

void model_set_fixed_tokens(model *m, const int *tokens) {
    for (int i = 0; i < m->max_seq_len; i++)
        if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size)
            fatal("fixed token sequence: id %d at %d is outside the vocabulary (%d)", tokens[i], i, m->config.vocab_size);
    ops_from_host(m->fixed_tokens, tokens, (size_t)m->max_seq_len * sizeof(int));
}

void model_set_skipped(model *m, const bool *skipped) {
    for (int l = 0; l < m->config.num_hidden_layers; l++) m->skipped[l] = skipped ? skipped[l] : false;
}

static void zero(float *x, size_t count) { fill_floats(x, 0.0f, count); }

// The rows of the last forward's micro-batch: the sequences that carry the loss, then
// (with a fixed stream) one more sequence; with sp each rank holds seq_len/tp positions of
// every sequence ("local" rows).
typedef struct {
    int sequences, batch, seq_len;    // sequences = batch (+ the fixed stream)
    int rows, loss_rows, local_rows, local_loss_rows;
} micro_batch_rows;

static micro_batch_rows rows_of(const model *m) {
    int tp = m->grid->tensor_size;
    bool sp = m->config.sequence_parallel;
    micro_batch_rows r = {m->batch, m->batch - m->has_fixed_stream, m->seq_len, 0, 0, 0, 0};
    r.rows = r.sequences * r.seq_len;
    r.loss_rows = r.batch * r.seq_len;
    r.local_rows = sp ? r.rows / tp : r.rows;
    r.local_loss_rows = sp ? r.loss_rows / tp : r.loss_rows;
    return r;
}

void model_forward(model *m, const int *inputs, int batch, int seq_len) {
    const decon_config *c = &m->config;
    if (batch > m->max_batch || seq_len > m->max_seq_len)
        fatal("internal: micro-batch %dx%d exceeds the allocated %dx%d", batch, seq_len, m->max_batch, m->max_seq_len);
    if (c->sequence_parallel && seq_len % m->grid->tensor_size != 0)
        fatal("internal: sequence length %d is not divisible by the tensor-parallel size %d", seq_len,
              m->grid->tensor_size);
    m->batch = batch + m->has_fixed_stream;
    m->seq_len = seq_len;
    micro_batch_rows r = rows_of(m);
    int n = c->num_hidden_layers, d = c->hidden_size;
    size_t local_rd = (size_t)r.local_rows * (size_t)d;
    float eps = (float)c->rms_norm_eps;
    process_grid *grid = m->grid;
    ops_from_host(m->inputs, inputs, (size_t)r.loss_rows * sizeof(int));
    if (m->has_fixed_stream) {  // fixedseqqk embeds t_s; rndembqk's rows embed no token (zeros, then its X_1)
        size_t fixed_rows = (size_t)(r.rows - r.loss_rows);
        if (m->fixed_stream_from_tokens)
            copy_ints(m->inputs + r.loss_rows, m->fixed_tokens, fixed_rows);
        else
            fill_ints(m->inputs + r.loss_rows, -1, fixed_rows);
    }
    mixer_context context = model_mixer_context(m);

    // e = Emb(t), this rank's rows: the vocab-parallel embedding is row-parallel, each rank
    // embeds the tokens of its vocabulary rows and the tp group sums.
    float *embeddings = m->blocks[0].residual_in;
    region_activation e = row_parallel_output_of(grid, embeddings, m->branch_out);
    embedding_forward(e.full, m->inputs, param_of(m, m->embed), r.rows, d, m->vocab_start, m->vocab_local);
    row_parallel_output_forward(grid, e, r.sequences, seq_len, d);
    if (m->has_fixed_stream && !m->fixed_stream_from_tokens) {  // rndembqk's X_1: the same on every rank
        float *fixed_rows = embeddings + (size_t)r.local_loss_rows * d;
        if (c->sequence_parallel)
            scatter_to_sequence_parallel_region_forward(grid, fixed_rows, m->fixed_input, 1, seq_len, d);
        else
            copy_floats(fixed_rows, m->fixed_input, (size_t)seq_len * d);
    }
    for (int l = 0; l < n; l++) {
        block_state *b = &m->blocks[l];
        int inter = b->intermediate_local;
        size_t ri = (size_t)r.rows * (size_t)inter;
        model_layer_context(m, l, &context);
        float *next = l + 1 < n ? m->blocks[l + 1].residual_in : m->residual_out;
        if (m->skipped[l]) {  // the whole block is removed: the residual passes through
            copy_floats(next, b->residual_in, local_rd);
            continue;
        }
        // The mixer: column-parallel in (its projections), row-parallel out (Wo).
        region_activation x = column_parallel_input_of(grid, b->mixer_input, m->normed_local);
        rmsnorm_forward(x.shard, b->rstd1, b->residual_in, param_of(m, b->input_norm), r.local_rows, d, eps);
        column_parallel_input_forward(grid, x, r.sequences, seq_len, d);
        if (b->normed_embeddings) {  // staticembqk: RMSNorm(e) with this block's input norm weight
            region_activation x_e = column_parallel_input_of(grid, b->normed_embeddings, m->normed_local);
            rmsnorm_forward(x_e.shard, b->normed_embeddings_rstd, embeddings, param_of(m, b->input_norm),
                            r.local_rows, d, eps);
            column_parallel_input_forward(grid, x_e, r.sequences, seq_len, d);
            context.normed_embeddings = b->normed_embeddings;
        }
        region_activation y = row_parallel_output_of(grid, b->residual_mid, m->branch_out);
        m->plan[l]->forward(&m->mixers[l], &context, y.full, x.full);
        row_parallel_output_forward(grid, y, r.sequences, seq_len, d);
        add_inplace(b->residual_mid, b->residual_in, local_rd);
        // The MLP: gate and up column-parallel, down row-parallel.
        x = column_parallel_input_of(grid, b->mlp_input, m->normed_local);
        rmsnorm_forward(x.shard, b->rstd2, b->residual_mid, param_of(m, b->post_norm), r.local_rows, d, eps);
        column_parallel_input_forward(grid, x, r.sequences, seq_len, d);
        column_parallel_linear_forward(b->gate_out, x.full, param_of(m, b->gate), NULL, r.rows, d, inter);
        column_parallel_linear_forward(b->up_out, x.full, param_of(m, b->up), NULL, r.rows, d, inter);
        swiglu_forward(b->act, b->gate_out, b->up_out, ri);
        y = row_parallel_output_of(grid, next, m->branch_out);
        row_parallel_linear_forward(y.full, b->act, param_of(m, b->down), r.rows, inter, d);
        row_parallel_output_forward(grid, y, r.sequences, seq_len, d);
        add_inplace(next, b->residual_mid, local_rd);
    }
    // The fixed stream's output feeds nothing: the final norm and LM head see loss rows
    // only (the first `batch` sequences, also of a sequence shard). The vocab-parallel LM
    // head is column-parallel.
    region_activation h = column_parallel_input_of(grid, m->final_normed, m->normed_local);
    rmsnorm_forward(h.shard, m->final_rstd, m->residual_out, param_of(m, m->final_norm), r.local_loss_rows, d, eps);
    column_parallel_input_forward(grid, h, batch, seq_len, d);
}

// The LM head fused with the cross entropy over the last forward's final hidden states;
// with d_hidden (and the LM head's gradient) when backward is set.
static double lm_head_loss(model *m, const int *targets, float loss_scale, bool backward, float *losses) {
    micro_batch_rows r = rows_of(m);
    int d = m->config.hidden_size;
    if (backward) zero(m->d_normed, (size_t)r.loss_rows * d);
    return vocab_parallel_cross_entropy(m->grid, losses, backward ? m->d_normed : NULL,
                                        backward ? grad_of(m, m->lm_head) : NULL, m->final_normed,
                                        param_of(m, m->lm_head), targets, r.loss_rows, d, m->vocab_start,
                                        m->vocab_local, loss_scale, m->lm_scratch);
}

double model_loss(model *m, const int *targets, float *losses) { return lm_head_loss(m, targets, 0.0f, false, losses); }

double model_backward(model *m, const int *targets, float loss_scale, float *losses) {
    const decon_config *c = &m->config;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (m->skipped[l]) fatal("internal: backward through a model with skipped layers");
    micro_batch_rows r = rows_of(m);
    int n = c->num_hidden_layers, d = c->hidden_size, seq_len = r.seq_len;
    size_t rd = (size_t)r.rows * (size_t)d;
    size_t local_rd = (size_t)r.local_rows * (size_t)d;
    mixer_context context = model_mixer_context(m);
    float *embeddings = m->blocks[0].residual_in;
    process_grid *grid = m->grid;
    float *d_res = m->d_residual;

    // The loss and its gradient w.r.t. the final hidden states and the LM head, then the
    // forward's lines in reverse.
    double loss_sum = lm_head_loss(m, targets, loss_scale, true, losses);
    region_activation d_h = column_parallel_input_of(grid, m->d_normed, m->d_normed_local);
    column_parallel_input_backward(grid, d_h, r.batch, seq_len, d);  // the vocab shards' shares of dL/dh
    zero(d_res, local_rd);
    if (m->uses_embeddings) zero(m->d_embeddings, local_rd);
    rmsnorm_backward(d_res, grad_of(m, m->final_norm), d_h.shard, m->residual_out, param_of(m, m->final_norm),
                     m->final_rstd, r.local_loss_rows, d);
    if (m->reducer) {
        grad_reducer_tensor_ready(m->reducer, m->final_norm);
        if (m->lm_head != m->embed) grad_reducer_tensor_ready(m->reducer, m->lm_head);
    }
    for (int l = n - 1; l >= 0; l--) {
        block_state *b = &m->blocks[l];
        int inter = b->intermediate_local;
        size_t ri = (size_t)r.rows * (size_t)inter;
        model_layer_context(m, l, &context);
        size_t mark = arena_mark(&m->scratch);
        float *d_act = arena_floats(&m->scratch, ri);
        float *d_gate = arena_floats(&m->scratch, ri);
        float *d_up = arena_floats(&m->scratch, ri);
        zero(d_act, ri);
        zero(d_gate, ri);
        zero(d_up, ri);
        // The MLP. d_res holds d(block output) = d(residual_mid) through the skip connection.
        region_activation d_y = row_parallel_output_of(grid, d_res, m->d_out_full);
        row_parallel_output_backward(grid, d_y, r.sequences, seq_len, d);
        row_parallel_linear_backward(d_act, grad_of(m, b->down), d_y.full, b->act, param_of(m, b->down), r.rows, inter,
                                     d);
        swiglu_backward(d_gate, d_up, d_act, b->gate_out, b->up_out, ri);
        region_activation d_x = column_parallel_input_of(grid, m->d_normed, m->d_normed_local);
        zero(d_x.full, rd);
        column_parallel_linear_backward(d_x.full, grad_of(m, b->gate), NULL, d_gate, b->mlp_input,
                                        param_of(m, b->gate), r.rows, d, inter);
        column_parallel_linear_backward(d_x.full, grad_of(m, b->up), NULL, d_up, b->mlp_input, param_of(m, b->up),
                                        r.rows, d, inter);
        arena_release(&m->scratch, mark);
        column_parallel_input_backward(grid, d_x, r.sequences, seq_len, d);
        rmsnorm_backward(d_res, grad_of(m, b->post_norm), d_x.shard, b->residual_mid, param_of(m, b->post_norm),
                         b->rstd2, r.local_rows, d);
        // The mixer. d_res now holds d(residual_mid) = d(residual_in) through the skip connection.
        d_y = row_parallel_output_of(grid, d_res, m->d_out_full);
        row_parallel_output_backward(grid, d_y, r.sequences, seq_len, d);
        zero(d_x.full, rd);
        if (b->normed_embeddings) {
            context.normed_embeddings = b->normed_embeddings;
            zero(m->d_normed_embeddings, rd);
        }
        m->plan[l]->backward(&m->mixers[l], &context, d_x.full, d_y.full, b->mixer_input);
        column_parallel_input_backward(grid, d_x, r.sequences, seq_len, d);
        rmsnorm_backward(d_res, grad_of(m, b->input_norm), d_x.shard, b->residual_in, param_of(m, b->input_norm),
                         b->rstd1, r.local_rows, d);
        if (b->normed_embeddings) {  // the mixer's share of dL/d RMSNorm(e), then through that norm to e
            region_activation d_x_e = column_parallel_input_of(grid, m->d_normed_embeddings, m->d_normed_local);
            column_parallel_input_backward(grid, d_x_e, r.sequences, seq_len, d);
            rmsnorm_backward(m->d_embeddings, grad_of(m, b->input_norm), d_x_e.shard, embeddings,
                             param_of(m, b->input_norm), b->normed_embeddings_rstd, r.local_rows, d);
        }
        if (m->reducer) grad_reducer_layer_ready(m->reducer, l);
    }
    if (m->uses_embeddings) add_inplace(d_res, m->d_embeddings, local_rd);
    // The embedding. rndembqk's X_1 is fixed noise: its rows send nothing to the table.
    int embedded_rows = m->has_fixed_stream && !m->fixed_stream_from_tokens ? r.loss_rows : r.rows;
    region_activation d_e = row_parallel_output_of(grid, d_res, m->d_out_full);
    row_parallel_output_backward(grid, d_e, r.sequences, seq_len, d);
    embedding_backward(grad_of(m, m->embed), d_e.full, m->inputs, embedded_rows, d, m->vocab_start, m->vocab_local);
    return loss_sum;
}

double model_training_flops_per_token(const model *m, int seq_len) {
    const decon_config *c = &m->config;
    double d = c->hidden_size;
    double forward = 2.0 * d * c->vocab_size;  // LM head
    for (int l = 0; l < c->num_hidden_layers; l++) {  // each layer with its own r_qk, r_v and m
        const decon_config *lc = &m->layer_configs[l];
        forward += m->plan[l]->forward_flops_per_token(lc, seq_len) + 2.0 * 3.0 * d * lc->intermediate_size;
    }
    return 3.0 * forward;
}

size_t model_activation_bytes(const model *m) { return m->activations.capacity + m->scratch.capacity; }

double model_tensor_parallel_traffic_bytes(const model *m, int batch, int seq_len, bool blocks_only) {
    const decon_config *c = &m->config;
    double t = m->grid->tensor_size, sh = (double)seq_len * c->hidden_size * sizeof(float);
    double sequences = batch + m->has_fixed_stream;
    int static_layers = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) static_layers += m->plan[l]->uses_embeddings;
    double units = 8.0 * c->num_hidden_layers * sequences;
    if (!blocks_only) units += (2.0 + 2.0 * static_layers) * sequences + 2.0 * batch;
    return (t - 1.0) / t * sh * units;
}

void model_print_summary(const model *m) {
    const decon_config *c = &m->config;
    int n = c->num_hidden_layers;
    char *letters = xmalloc((size_t)n + 1);
    layer_plan_letters(letters, (const mixer_kind *const *)m->plan, n);
    info("model: d=%d, intermediate=%d, layers=%d, heads=%d (kv %d), head size %d, vocab %d, %s LM head",
         c->hidden_size, c->intermediate_size, n, c->num_attention_heads,
         c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads, config_head_dim(c), c->vocab_size,
         c->tie_word_embeddings ? "tied" : "untied");
    info("layer plan (%s, %s): %s", c->variant, c->layout, letters);
    free(letters);
    const char *groups[] = {"embedding", "mixer", "mlp", "norm", "lm_head"};
    int64_t total = params_total_logical(&m->registry);
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        int64_t count = 0;
        for (int i = 0; i < m->registry.count; i++)
            if (strcmp(m->registry.items[i].group, groups[g]) == 0) count += params_logical_count(&m->registry.items[i]);
        if (count) info("  params %-10s %12lld  (%5.1f%%)", groups[g], (long long)count, 100.0 * (double)count / (double)total);
    }
    for (int l = 0; l < n; l++) {
        int64_t mixer = 0, block = 0;
        for (int i = 0; i < m->registry.count; i++) {
            const param_info *p = &m->registry.items[i];
            if (p->layer != l) continue;
            block += params_logical_count(p);
            if (strcmp(p->group, "mixer") == 0) mixer += params_logical_count(p);
        }
        info("  layer %2d %-12s mixer %10lld  block %10lld", l + 1, m->plan[l]->name, (long long)mixer, (long long)block);
    }
    info("  params total     %12lld", (long long)total);
}
