#include "record/recorder.h"

#include <math.h>
#include <string.h>

#include "core/errors.h"
#include "io/attention_record.h"
#include "io/token_shard.h"
#include "model/layer_plan.h"
#include "ops/ops.h"

// The file-level description of a recording of this model (letters: num_layers + 1 chars).
static attention_record_info describe(const attention_recorder *r, const decon_config *c,
                                      const mixer_kind *const *plan, char *letters) {
    layer_plan_letters(letters, plan, c->num_hidden_layers);
    attention_record_info info = {
        .writer = r->writer,
        .variant = c->variant,
        .layout = c->layout,
        .layer_plan = letters,
        .source = r->source,
        .num_layers = c->num_hidden_layers,
        .num_heads = c->num_attention_heads,
        .num_kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads,
        .head_dim = config_head_dim(c),
        .sequence_length = r->seq_len,
        .sequences = r->sequences,
        .float16 = r->float16,
        .layers = r->layers,
        .tokens = r->inputs,
    };
    return info;
}

void recorder_init(attention_recorder *r, const decon_config *c, const char *path, const char *shard,
                   int sequences, const char *layers, const char *dtype, const char *writer, const char *origin,
                   MPI_Comm comm) {
    memset(r, 0, sizeof *r);
    int n = c->num_hidden_layers, L = c->sequence_length;
    if (strlen(path) >= sizeof r->path || strlen(shard) >= sizeof r->source)
        fatal("%s: attention recording path or token shard path is too long", origin);
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->source, sizeof r->source, "%s", shard);
    r->writer = writer;
    r->sequences = sequences;
    r->seq_len = L;
    if (strcmp(dtype, "float32") != 0 && strcmp(dtype, "float16") != 0)
        fatal("%s: record dtype '%s' is not float32 or float16", origin, dtype);
    r->float16 = strcmp(dtype, "float16") == 0;
    r->layers = xcalloc((size_t)n, sizeof *r->layers);
    char why[256];
    if (!config_parse_layers(layers, n, r->layers, why, sizeof why))
        fatal("%s: record layers '%s': %s", origin, layers, why);

    // Windows 0..K-1 as the data loader cuts them: inputs [k L, k L + L), targets shifted by one.
    token_shard tokens;
    token_shard_open(&tokens, shard, c->vocab_size);
    uint64_t windows = tokens.count > 0 ? (tokens.count - 1) / (uint64_t)L : 0;
    if (windows < (uint64_t)sequences)
        fatal("%s: recording %d sequences needs %d windows of %d tokens from %s, which holds %llu tokens (%llu "
              "windows); lower [io] record_sequences (decon-eval: --record-sequences)", origin, sequences, sequences,
              L + 1, shard, (unsigned long long)tokens.count, (unsigned long long)windows);
    size_t count = (size_t)sequences * (size_t)L;
    r->inputs = xmalloc(count * sizeof(int));
    r->targets = xmalloc(count * sizeof(int));
    for (size_t i = 0; i < count; i++) {
        r->inputs[i] = (int)token_shard_get(&tokens, i);
        r->targets[i] = (int)token_shard_get(&tokens, i + 1);
    }
    token_shard_close(&tokens);
    // A and the scores of one sequence, [heads, L, L] each (this rank's heads are at most
    // all): the mixers' ops write them, so they are backend memory, copied to the host.
    size_t map = (size_t)c->num_attention_heads * (size_t)L * (size_t)L;
    r->probs = ops_alloc(map * sizeof(float));
    r->scores = ops_alloc(map * sizeof(float));

    // An existing file must take this setup; a new one must be creatable: fail now, not
    // at the first record.
    const mixer_kind **plan = (const mixer_kind **)xcalloc((size_t)n, sizeof(const mixer_kind *));
    layer_plan_build(plan, c, origin);
    char *letters = xmalloc((size_t)n + 1);
    attention_record_info info = describe(r, c, plan, letters);
    attention_record_probe(r->path, &info, comm);
    free(letters);
    free((void *)plan);
}

void recorder_free(attention_recorder *r) {
    free(r->layers);
    free(r->inputs);
    free(r->targets);
    ops_free(r->probs);
    ops_free(r->scores);
    memset(r, 0, sizeof *r);
}

// Whether this rank writes its heads: the lowest rank of comm holding its tensor-parallel
// shard does (data-parallel replicas hold the same heads).
static bool writes_own_heads(const param_registry *registry, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int *shards = xmalloc((size_t)size * sizeof(int));
    MPI_Allgather(&registry->shard_rank, 1, MPI_INT, shards, 1, MPI_INT, comm);
    bool lowest = true;
    for (int q = 0; q < rank; q++) lowest = lowest && shards[q] != registry->shard_rank;
    free(shards);
    return lowest;
}

typedef struct {
    double row_sum_min, row_sum_max, entry_min;
    score_histogram scores;
} layer_totals;

// Row sums over the causal part of probs[heads, L, L] and its smallest entry.
static void measure_rows(layer_totals *t, const float *probs, int heads, int L) {
    double lowest_sum = INFINITY, highest_sum = -INFINITY, lowest_entry = INFINITY;
    #pragma omp parallel for schedule(static) reduction(min : lowest_sum, lowest_entry) reduction(max : highest_sum)
    for (size_t r = 0; r < (size_t)heads * (size_t)L; r++) {
        size_t i = r % (size_t)L;
        const float *row = probs + r * (size_t)L;
        double sum = 0.0;
        for (size_t t = 0; t <= i; t++) {
            sum += row[t];
            if (row[t] < lowest_entry) lowest_entry = row[t];
        }
        if (sum < lowest_sum) lowest_sum = sum;
        if (sum > highest_sum) highest_sum = sum;
    }
    if (lowest_sum < t->row_sum_min) t->row_sum_min = lowest_sum;
    if (highest_sum > t->row_sum_max) t->row_sum_max = highest_sum;
    if (lowest_entry < t->entry_min) t->entry_min = lowest_entry;
}

recording_result recorder_record(attention_recorder *r, model *m, int64_t step, const char *config_text,
                                 MPI_Comm comm) {
    double t0 = MPI_Wtime();
    const decon_config *c = &m->config;
    int n = c->num_hidden_layers, L = r->seq_len, K = r->sequences;
    if (L > m->max_seq_len) fatal("internal: recording length %d exceeds the model's %d", L, m->max_seq_len);
    int heads = c->num_attention_heads / m->registry.shard_count;
    int head_start = m->registry.shard_rank * heads;
    bool writes = writes_own_heads(&m->registry, comm);

    char *letters = xmalloc((size_t)n + 1);
    attention_record_info info = describe(r, c, (const mixer_kind *const *)m->plan, letters);
    info.config_text = config_text;
    attention_record *file = attention_record_open(r->path, &info, step, comm);
    layer_totals *totals = xcalloc((size_t)n, sizeof *totals);
    recording_result result = {0};
    for (int l = 0; l < n; l++) {
        if (!r->layers[l]) continue;
        const mixer_kind *kind = m->plan[l];
        attention_record_layer desc = {
            .variant = kind->name,
            .is_standard = kind->is_standard,
            .has_attn = kind->attention_matrix != NULL,
            .has_scores = kind->attention_scores != NULL,
            .scores_per_token = kind->scores_per_token,
        };
        attention_record_begin_layer(file, l, &desc);
        totals[l].row_sum_min = totals[l].entry_min = INFINITY;
        totals[l].row_sum_max = -INFINITY;
        score_histogram_clear(&totals[l].scores);
        result.layers++;
    }

    // Forward only, as many sequences at a time as the model was allocated for.
    double loss_sum = 0.0;
    size_t map_bytes = (size_t)heads * (size_t)L * (size_t)L * sizeof(float);
    for (int k0 = 0; k0 < K; k0 += m->max_batch) {
        int batch = K - k0 < m->max_batch ? K - k0 : m->max_batch;
        size_t offset = (size_t)k0 * (size_t)L;
        model_forward(m, r->inputs + offset, batch, L);
        loss_sum += model_loss(m, r->targets + offset, NULL);
        mixer_context context = model_mixer_context(m);
        for (int l = 0; l < n; l++) {
            const mixer_kind *kind = m->plan[l];
            if (!r->layers[l] || !kind->attention_matrix) continue;
            model_layer_context(m, l, &context);
            for (int s = 0; s < batch; s++) {
                kind->attention_matrix(&m->mixers[l], &context, s, r->probs);
                ops_to_host(r->probs, r->probs, map_bytes);
                if (writes) measure_rows(&totals[l], r->probs, heads, L);
                attention_record_write_attn(file, l, k0 + s, head_start, heads, r->probs, writes);
                if (kind->attention_scores && writes) {
                    kind->attention_scores(&m->mixers[l], &context, s, r->scores);
                    ops_to_host(r->scores, r->scores, map_bytes);
                    score_histogram_add(&totals[l].scores, r->scores, heads, L, kind->scores_per_token);
                }
            }
        }
    }
    for (int l = 0; l < n; l++) {
        if (!r->layers[l]) continue;
        layer_totals *t = &totals[l];
        double lows[2] = {t->row_sum_min, t->entry_min};
        MPI_Allreduce(MPI_IN_PLACE, lows, 2, MPI_DOUBLE, MPI_MIN, comm);
        MPI_Allreduce(MPI_IN_PLACE, &t->row_sum_max, 1, MPI_DOUBLE, MPI_MAX, comm);
        bool has_attn = m->plan[l]->attention_matrix != NULL, has_scores = m->plan[l]->attention_scores != NULL;
        if (has_scores) score_histogram_allreduce(&t->scores, comm);
        attention_record_layer_end end = {
            .row_sum_min = has_attn ? lows[0] : NAN,
            .row_sum_max = has_attn ? t->row_sum_max : NAN,
            .entry_min = has_attn ? lows[1] : NAN,
            .scores = has_scores ? &t->scores : NULL,
        };
        attention_record_end_layer(file, l, &end);
    }
    result.loss = loss_sum / ((double)K * (double)L);
    result.bytes = attention_record_close(file, result.loss);
    free(totals);
    free(letters);
    result.seconds = MPI_Wtime() - t0;
    return result;
}
