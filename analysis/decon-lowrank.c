// decon-lowrank: post-training low-rank compression of a checkpoint's standard layers by A3
// (Wong et al., arXiv 2505.12942) or the per-weight truncated SVD (docs/design.md
// "Low-rank compression (A3)"), written as an ordinary checkpoint with per-layer shapes.
//
//   [mpirun -np N] decon-lowrank CKPT --calibration SHARD [--tokens N] (--qk-rank R |
//       --ov-rank R | --mlp-width M | --budget F)... [--method a3|svd] --out CKPT2
//
// Every rank loads the model (one rank each, tp = 1) and runs its share of the calibration
// windows (round-robin); the statistics are summed over the ranks (lowrank_calibration);
// rank 0 then solves every layer (LAPACK: the problems are d_h x d_h and m' x m') and
// writes the checkpoint.
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/lowrank_a3.h"
#include "analysis/lowrank_calibration.h"
#include "core/errors.h"
#include "core/options.h"
#include "eval/load.h"
#include "io/checkpoint.h"
#include "io/token_shard.h"
#include "ops/ops.h"
#include "par/program.h"

typedef struct {
    const char *checkpoint, *calibration, *out;
    long tokens;
    int qk_rank, ov_rank, mlp_width;  // 0: not requested
    double budget;                    // 0: not given
    lowrank_method method;
    int threads;
} options;

static void usage(void) {
    fprintf(stderr,
            "usage: [mpirun -np N] decon-lowrank CKPT --calibration SHARD [--tokens N]\n"
            "           (--qk-rank R | --ov-rank R | --mlp-width M | --budget F)... [--method a3|svd] --out CKPT2\n"
            "  --calibration SHARD  token shard of calibration text (the model's vocabulary), windows of the\n"
            "                       trained sequence length, split over the MPI ranks\n"
            "  --tokens N           calibration tokens (default 16384; at most what the shard holds)\n"
            "  --qk-rank R          query/key head size of every standard layer (even: RoPE keeps whole pairs)\n"
            "  --ov-rank R          value/output head size of every standard layer\n"
            "  --mlp-width M        MLP width of every standard layer\n"
            "  --budget F           in (0, 1]: the components not given explicitly keep the fraction F:\n"
            "                       qk rank 2 round(F d_h / 2) (at least 2), ov rank round(F d_h), MLP width\n"
            "                       round(F m) (at least 1)\n"
            "  --method a3|svd      A3's closed forms on the calibration statistics (default) or the\n"
            "                       data-free truncated SVD baseline\n"
            "  --threads N          threads (default: every core)\n"
            "  --out CKPT2          the compressed checkpoint (step kept, Adam moments zero)\n");
}

static options parse_options(int argc, char **argv, int rank) {
    options o = {.tokens = 16384, .method = LOWRANK_A3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (rank == 0) usage();
            MPI_Finalize();
            exit(0);
        }
        if (a[0] != '-') {
            if (o.checkpoint) fatal("more than one checkpoint given (%s and %s)", o.checkpoint, a);
            o.checkpoint = a;
            continue;
        }
        static const char *const OPTIONS[] = {"--calibration", "--tokens", "--qk-rank", "--ov-rank", "--mlp-width",
                                              "--budget", "--method", "--out", "--threads"};
        bool known = false;
        for (size_t k = 0; k < sizeof OPTIONS / sizeof *OPTIONS; k++) known |= strcmp(a, OPTIONS[k]) == 0;
        if (!known) fatal("unknown option %s; see decon-lowrank --help", a);
        if (i + 1 >= argc) fatal("%s needs a value; see decon-lowrank --help", a);
        const char *value = argv[++i];
        if (strcmp(a, "--calibration") == 0) o.calibration = value;
        else if (strcmp(a, "--out") == 0) o.out = value;
        else if (strcmp(a, "--tokens") == 0) o.tokens = option_integer(a, value, 1, 1L << 40);
        else if (strcmp(a, "--qk-rank") == 0) o.qk_rank = (int)option_integer(a, value, 1, 1 << 20);
        else if (strcmp(a, "--ov-rank") == 0) o.ov_rank = (int)option_integer(a, value, 1, 1 << 20);
        else if (strcmp(a, "--mlp-width") == 0) o.mlp_width = (int)option_integer(a, value, 1, 1 << 22);
        else if (strcmp(a, "--threads") == 0) o.threads = (int)option_integer(a, value, 1, 4096);
        else if (strcmp(a, "--method") == 0) {
            if (!lowrank_method_parse(value, &o.method)) fatal("--method '%s': expected a3 or svd", value);
        } else {  // --budget
            char *end = NULL;
            o.budget = strtod(value, &end);
            if (end == value || *end != '\0' || !(o.budget > 0.0 && o.budget <= 1.0))
                fatal("--budget '%s': expected a fraction in (0, 1] of each dimension to keep", value);
        }
    }
    if (!o.checkpoint) {
        if (rank == 0) usage();
        fatal("no checkpoint given; e.g. decon-lowrank runs/tiny/ckpt/latest.h5 --calibration data/corpus/val.bin "
              "--budget 0.5 --out tiny_half.h5");
    }
    if (!o.calibration) fatal("no --calibration SHARD given: A3 fits on calibration text, e.g. data/corpus/val.bin");
    if (!o.out) fatal("no --out CKPT2 given: where to write the compressed checkpoint");
    if (!o.qk_rank && !o.ov_rank && !o.mlp_width && o.budget == 0.0)
        fatal("no component given: pass --qk-rank R, --ov-rank R, --mlp-width M or --budget F");
    return o;
}

// The ranks from --budget for the components not given explicitly, then checked against
// the model's dimensions (one line each).
static void resolve_ranks(options *o, const decon_config *c) {
    int dh = config_head_dim(c), m = c->intermediate_size;
    if (o->budget > 0.0) {
        if (!o->qk_rank) o->qk_rank = 2 * (int)fmax(1.0, round(o->budget * dh / 2.0));
        if (!o->ov_rank) o->ov_rank = (int)fmax(1.0, round(o->budget * dh));
        if (!o->mlp_width) o->mlp_width = (int)fmax(1.0, round(o->budget * m));
    }
    if (o->qk_rank > dh)
        fatal("--qk-rank %d is larger than the head size d_h = %d of %s", o->qk_rank, dh, o->checkpoint);
    if (o->qk_rank % 2 != 0)
        fatal("--qk-rank %d is odd: RoPE turns pairs of dimensions, so a reduced head keeps whole pairs (use %d)",
              o->qk_rank, o->qk_rank + 1 <= dh ? o->qk_rank + 1 : o->qk_rank - 1);
    if (o->ov_rank > dh)
        fatal("--ov-rank %d is larger than the head size d_h = %d of %s", o->ov_rank, dh, o->checkpoint);
    if (o->mlp_width > m)
        fatal("--mlp-width %d is larger than the MLP width %d of %s", o->mlp_width, m, o->checkpoint);
}

// The vocabulary of a token shard's header (its tokenizer's), without reading the tokens.
static bool shard_vocabulary(const char *path, uint32_t *vocab) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char header[TOKEN_SHARD_HEADER_BYTES];
    bool ok = fread(header, 1, sizeof header, f) == sizeof header && memcmp(header, "DECONTOK", 8) == 0;
    fclose(f);
    if (ok) *vocab = (uint32_t)header[24] | (uint32_t)header[25] << 8 | (uint32_t)header[26] << 16 |
                     (uint32_t)header[27] << 24;
    return ok;
}

// Opens the calibration shard: the vocabulary must be the one the model was trained on
// (the [data] train shard's, when it can be read; else at most the model's vocab_size).
static void open_calibration(token_shard *shard, const options *o, const decon_config *c) {
    token_shard_open(shard, o->calibration, c->vocab_size);
    uint32_t trained;
    if (shard_vocabulary(c->train, &trained) && trained != shard->vocab_size)
        fatal("calibration shard %s was tokenized with vocab_size %u, but %s was trained on %s with vocab_size %u; "
              "use text tokenized with the model's own tokenizer", o->calibration, shard->vocab_size, o->checkpoint,
              c->train, trained);
}

static float *tensor(model *m, const char *format, int layer) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, format, layer);
    int i = params_find(&m->registry, name);
    return i < 0 ? NULL : m->params + m->registry.items[i].offset;
}

// Appends a layer's kept pairs to a layer_rope_pairs text, runs written as ranges a-b.
static void append_pairs(char *text, size_t size, const int *pairs, int count) {
    size_t used = strlen(text);
    for (int t = 0; t < count; t++) {
        int end = t;
        while (end + 1 < count && pairs[end + 1] == pairs[end] + 1) end++;
        used += (size_t)snprintf(text + used, used < size ? size - used : 0, t ? ",%d" : "%d", pairs[t]);
        if (end > t) used += (size_t)snprintf(text + used, used < size ? size - used : 0, "-%d", pairs[end]);
        t = end;
    }
    snprintf(text + used, used < size ? size - used : 0, ";");
}

static void append_size(char *text, size_t size, int value) {
    size_t used = strlen(text);
    snprintf(text + used, used < size ? size - used : 0, "%s%d", used ? "," : "", value);
}

static double relative(lowrank_losses l, int count) {
    double loss = 0.0, energy = 0.0;
    for (int i = 0; i < count; i++) loss += l.loss[i], energy += l.energy[i];
    return energy > 0.0 ? loss / energy : 0.0;
}

static int64_t cache_floats(const model *m) {
    int64_t total = 0;
    for (int l = 0; l < m->config.num_hidden_layers; l++)
        if (m->plan[l]->cache_floats_per_token) total += m->plan[l]->cache_floats_per_token(&m->layer_configs[l]);
    return total;
}

// One layer's reduced tensors (NULL where a component keeps the original).
typedef struct {
    float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *gate, *up, *down;
    int pairs[4096];
} reduced_layer;

// Solves layer l's requested components with `method` and, for comparison, the other one;
// prints the relative functional losses. Returns the layer's reduced tensors.
static void reduce_layer(model *m, int l, const lowrank_calibration *stats, const options *o, reduced_layer *out) {
    const decon_config *c = &m->config;
    int d = c->hidden_size, heads = c->num_attention_heads, kv = config_kv_heads(c), dh = config_head_dim(c);
    int mw = c->intermediate_size;
    lowrank_shape shape = {d, heads, kv, dh, true};
    lowrank_method other = o->method == LOWRANK_A3 ? LOWRANK_SVD : LOWRANK_A3;
    double *buffer = xcalloc((size_t)4 * heads, sizeof(double));
    lowrank_losses mine = {buffer, buffer + heads}, theirs = {buffer + (ptrdiff_t)2 * heads, buffer + (ptrdiff_t)3 * heads};
    char why[256], line[512];
    int n = snprintf(line, sizeof line, "layer %d (standard):", l + 1);
    memset(out, 0, sizeof *out);
    const float *bq = tensor(m, "layers.%d.mixer.bq", l), *bk = tensor(m, "layers.%d.mixer.bk", l),
                *bv = tensor(m, "layers.%d.mixer.bv", l);
    if (o->qk_rank) {
        int r = o->qk_rank;
        out->wq = xcalloc((size_t)heads * r * d, sizeof(float));
        out->wk = xcalloc((size_t)kv * r * d, sizeof(float));
        out->bq = bq ? xcalloc((size_t)heads * r, sizeof(float)) : NULL;
        out->bk = bk ? xcalloc((size_t)kv * r, sizeof(float)) : NULL;
        float *scratch = xcalloc((size_t)(heads + kv) * (r * d + r), sizeof(float));
        float *swk = scratch + (size_t)heads * r * d, *sbq = swk + (size_t)kv * r * d, *sbk = sbq + (size_t)heads * r;
        double scale = sqrt((double)r / dh);  // the reduced model's 1/sqrt(r) scores as 1/sqrt(d_h)
        if (!lowrank_qk(o->method, &shape, r, tensor(m, "layers.%d.mixer.wq", l), bq, tensor(m, "layers.%d.mixer.wk", l),
                        bk, stats->input_corr[l], scale, out->wq, out->bq, out->wk, out->bk, out->pairs, mine, why,
                        sizeof why) ||
            !lowrank_qk(other, &shape, r, tensor(m, "layers.%d.mixer.wq", l), bq, tensor(m, "layers.%d.mixer.wk", l),
                        bk, stats->input_corr[l], scale, scratch, bq ? sbq : NULL, swk, bk ? sbk : NULL, NULL, theirs,
                        why, sizeof why))
            fatal("layer %d QK: %s", l + 1, why);
        free(scratch);
        n += snprintf(line + n, sizeof line - (size_t)n, " qk %d->%d loss %.4g (%s %.4g)", dh, r,
                      relative(mine, heads), lowrank_method_name(other), relative(theirs, heads));
    }
    if (o->ov_rank) {
        int r = o->ov_rank;
        out->wv = xcalloc((size_t)kv * r * d, sizeof(float));
        out->bv = bv ? xcalloc((size_t)kv * r, sizeof(float)) : NULL;
        out->wo = xcalloc((size_t)d * heads * r, sizeof(float));
        float *scratch = xcalloc((size_t)kv * r * d + (size_t)kv * r + (size_t)d * heads * r, sizeof(float));
        float *sbv = scratch + (size_t)kv * r * d, *swo = sbv + (size_t)kv * r;
        const float *wv = tensor(m, "layers.%d.mixer.wv", l), *wo = tensor(m, "layers.%d.mixer.wo", l);
        if (!lowrank_ov(o->method, &shape, r, wv, bv, wo, stats->head_corr[l], out->wv, out->bv, out->wo, mine, why,
                        sizeof why) ||
            !lowrank_ov(other, &shape, r, wv, bv, wo, stats->head_corr[l], scratch, bv ? sbv : NULL, swo, theirs, why,
                        sizeof why))
            fatal("layer %d OV: %s", l + 1, why);
        free(scratch);
        n += snprintf(line + n, sizeof line - (size_t)n, " ov %d->%d loss %.4g (%s %.4g)", dh, r,
                      relative(mine, heads), lowrank_method_name(other), relative(theirs, heads));
    }
    if (o->mlp_width) {
        int w = o->mlp_width;
        out->gate = xcalloc((size_t)w * d, sizeof(float));
        out->up = xcalloc((size_t)w * d, sizeof(float));
        out->down = xcalloc((size_t)d * w, sizeof(float));
        float *scratch = xcalloc((size_t)3 * w * d, sizeof(float));
        const float *gate = tensor(m, "layers.%d.mlp.gate_proj", l), *up = tensor(m, "layers.%d.mlp.up_proj", l),
                    *down = tensor(m, "layers.%d.mlp.down_proj", l);
        if (!lowrank_mlp(o->method, d, mw, w, gate, up, down, stats->mlp_corr[l], out->gate, out->up, out->down, NULL,
                         mine, why, sizeof why) ||
            !lowrank_mlp(other, d, mw, w, gate, up, down, stats->mlp_corr[l], scratch, scratch + (size_t)w * d,
                         scratch + (size_t)2 * w * d, NULL, theirs, why, sizeof why))
            fatal("layer %d MLP: %s", l + 1, why);
        free(scratch);
        n += snprintf(line + n, sizeof line - (size_t)n, " mlp %d->%d loss %.4g (%s %.4g)", mw, w, relative(mine, 1),
                      lowrank_method_name(other), relative(theirs, 1));
    }
    printf("%s\n", line);
    free(buffer);
}

// The reduced tensor for registry name `name` of layer l, or NULL (keep the original).
static const float *reduced_tensor(const reduced_layer *r, const char *name) {
    const char *leaf = strrchr(name, '.') + 1;
    static const char *const NAMES[] = {"wq", "bq", "wk", "bk", "wv", "bv", "wo", "gate_proj", "up_proj", "down_proj"};
    const float *const TENSORS[] = {r->wq, r->bq, r->wk, r->bk, r->wv, r->bv, r->wo, r->gate, r->up, r->down};
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (strcmp(leaf, NAMES[i]) == 0) return TENSORS[i];
    return NULL;
}

static void free_reduced(reduced_layer *r) {
    float *all[] = {r->wq, r->bq, r->wk, r->bk, r->wv, r->bv, r->wo, r->gate, r->up, r->down};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

int main(int argc, char **argv) {
    int rank, world;
    program_start(&argc, &argv, &rank, &world);
    options o = parse_options(argc, argv, rank);
    decon_config c;
    eval_read_config(&c, o.checkpoint);
    if (config_has_layer_shapes(&c) || c.layer_rope_pairs[0] || config_value_head_dim(&c) != config_head_dim(&c))
        fatal("%s already has per-layer shapes (a compressed model); compress the original checkpoint instead",
              o.checkpoint);
    resolve_ranks(&o, &c);
    ops_set_threads(o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    int stored_tp = c.tensor_parallel, seq = c.sequence_length, n = c.num_hidden_layers;
    token_shard shard;
    open_calibration(&shard, &o, &c);
    long available = (long)(shard.count / (uint64_t)seq);
    if (available < 1)
        fatal("calibration shard %s holds %llu tokens, fewer than one window of the trained sequence length %d",
              o.calibration, (unsigned long long)shard.count, seq);
    long windows = (o.tokens + seq - 1) / seq;
    if (windows > available) windows = available;

    model m;
    train_state state;
    eval_load_model(&m, &c, o.checkpoint, 1, seq, &state);
    lowrank_calibration stats;
    lowrank_calibration_init(&stats, &m);
    int *window = xmalloc((size_t)seq * sizeof(int));
    for (long w = rank; w < windows; w += world) {
        for (int t = 0; t < seq; t++) window[t] = (int)token_shard_get(&shard, (uint64_t)w * (uint64_t)seq + (uint64_t)t);
        lowrank_calibration_accumulate(&stats, &m, window, 1, seq);
    }
    free(window);
    token_shard_close(&shard);
    lowrank_calibration_finish(&stats, MPI_COMM_WORLD);
    if (rank != 0) {
        lowrank_calibration_free(&stats);
        model_free(&m);
        MPI_Finalize();
        return 0;
    }
    printf("calibration: %ld windows of %d tokens from %s over %d rank(s); method %s\n", windows, seq, o.calibration,
           world, lowrank_method_name(o.method));

    // Per layer: the reduced tensors and the reduced shapes.
    int dh = config_head_dim(&c);
    reduced_layer *reduced = xcalloc((size_t)n, sizeof *reduced);
    decon_config rc = c;
    rc.layer_head_dims[0] = rc.layer_value_head_dims[0] = rc.layer_intermediate_sizes[0] = rc.layer_rope_pairs[0] = '\0';
    for (int l = 0; l < n; l++) {
        bool standard = m.plan[l]->is_standard;
        if (standard) reduce_layer(&m, l, &stats, &o, &reduced[l]);
        else printf("layer %d (%s): kept unchanged (A3 compresses standard layers only)\n", l + 1, m.plan[l]->name);
        append_size(rc.layer_head_dims, sizeof rc.layer_head_dims, standard && o.qk_rank ? o.qk_rank : dh);
        append_size(rc.layer_value_head_dims, sizeof rc.layer_value_head_dims, standard && o.ov_rank ? o.ov_rank : dh);
        append_size(rc.layer_intermediate_sizes, sizeof rc.layer_intermediate_sizes,
                    standard && o.mlp_width ? o.mlp_width : c.intermediate_size);
        if (standard && o.qk_rank) append_pairs(rc.layer_rope_pairs, sizeof rc.layer_rope_pairs, reduced[l].pairs, o.qk_rank / 2);
        else append_pairs(rc.layer_rope_pairs, sizeof rc.layer_rope_pairs, NULL, 0);  // an empty group: the default
    }
    if (!o.qk_rank) rc.layer_rope_pairs[0] = '\0';
    config_validate(&rc, "decon-lowrank (the compressed model)");

    model small;
    model_build(&small, &rc, o.out);
    model_allocate(&small, 1, 1);
    for (int i = 0; i < small.registry.count; i++) {
        const param_info *p = &small.registry.items[i];
        const float *source = p->layer >= 0 ? reduced_tensor(&reduced[p->layer], p->name) : NULL;
        if (!source) {
            int j = params_find(&m.registry, p->name);
            if (j < 0 || params_logical_count(&m.registry.items[j]) != params_logical_count(p))
                fatal("internal: %s has no original of the same size", p->name);
            source = m.params + m.registry.items[j].offset;
        }
        memcpy(small.params + p->offset, source, (size_t)params_logical_count(p) * sizeof(float));
    }
    int64_t before = params_total_logical(&m.registry), after = params_total_logical(&small.registry);
    int64_t cache_before = cache_floats(&m), cache_after = cache_floats(&small);
    printf("parameters: %lld -> %lld (%.1f%% fewer)\n", (long long)before, (long long)after,
           100.0 * (double)(before - after) / (double)before);
    printf("KV cache per token: %lld -> %lld floats (%.1f%% fewer)\n", (long long)cache_before,
           (long long)cache_after, cache_before ? 100.0 * (double)(cache_before - cache_after) / (double)cache_before : 0.0);

    rc.tensor_parallel = stored_tp;
    char *text = config_to_text(&rc);
    float *zeros = xcalloc(small.registry.total ? small.registry.total : 1, sizeof(float));
    checkpoint_write(o.out, &small.registry, small.params, zeros, zeros, &state, text, MPI_COMM_SELF);
    printf("wrote %s: step %lld kept, Adam moments zero (training on from it restarts them)\n", o.out,
           (long long)state.step);
    printf("resume with: --set model.layer_head_dims=%s --set model.layer_value_head_dims=%s --set "
           "model.layer_intermediate_sizes=%s%s%s\n",
           rc.layer_head_dims, rc.layer_value_head_dims, rc.layer_intermediate_sizes,
           rc.layer_rope_pairs[0] ? " --set model.layer_rope_pairs=" : "", rc.layer_rope_pairs);
    free(zeros), free(text);
    for (int l = 0; l < n; l++) free_reduced(&reduced[l]);
    free(reduced);
    model_free(&small);
    lowrank_calibration_free(&stats);
    model_free(&m);
    MPI_Finalize();
    return 0;
}
