// Attention recordings (io/attention_record.h, record/recorder.h): tiny models of several
// hybrid layouts (mlp + standard, approx + standard, nonapx + standard, rndembqk +
// standard, approx-diag) recorded through the parallel-HDF5 path at one rank, then read
// back with the serial HDF5 API (as h5py reads it) and compared with the mixers' own
// attention_matrix / attention_scores on the same forward: A bit-exact (float32) or
// the exact nearest-even float16 of it, rows summing to 1 for softmax mixers, a zero upper
// triangle, histogram counts equal to a brute-force binning of every causal score,
// attributes present, a second step appended, a step replaced, no temporary left behind.
// The float16 rounding is checked against the compiler's _Float16, and a 2-rank run
// (`mpirun -np 2 <self> --two-ranks FILE`, each rank writing its half of the heads as
// tensor-parallel ranks will) must read back as the 1-rank file does.
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../child_process.h"
#include "../testing.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "io/attention_record.h"
#include "io/token_shard.h"
#include "model/model.h"
#include "record/recorder.h"

enum { L = 40, SEQUENCES = 3, MAX_BATCH = 2, VOCAB = 64, HEADS = 4 };

static char scratch[256], shard_path[512];
static char self_path[4096];

static void set(decon_config *c, const char *assignment) { config_set(c, assignment, "test"); }

static void make_config(decon_config *c, const char *variant, const char *layout, int layers) {
    char text[600];
    config_defaults(c);
    set(c, "model.hidden_size=32");
    set(c, "model.intermediate_size=48");
    snprintf(text, sizeof text, "model.num_hidden_layers=%d", layers);
    set(c, text);
    set(c, "model.num_attention_heads=4");
    set(c, "model.num_key_value_heads=2");
    set(c, "model.vocab_size=64");
    set(c, "model.rope_theta=10000");
    snprintf(text, sizeof text, "train.sequence_length=%d", L);
    set(c, text);
    set(c, "train.micro_batch_size=2");
    set(c, "train.global_batch_size=2");
    snprintf(text, sizeof text, "attention.variant=%s", variant);
    set(c, text);
    snprintf(text, sizeof text, "attention.layout=%s", layout);
    set(c, text);
    snprintf(text, sizeof text, "data.train=%s", shard_path);
    set(c, text);
    snprintf(text, sizeof text, "data.validation=%s", shard_path);
    set(c, text);
    snprintf(text, sizeof text, "io.run_dir=%s", scratch);
    set(c, text);
    config_validate(c, "test");
}

// Query/key projections scaled up so scores spread over several decades (some |x| > 10).
static void sharpen(model *m, float factor) {
    for (int i = 0; i < m->registry.count; i++) {
        const param_info *p = &m->registry.items[i];
        const char *name = strrchr(p->name, '.');
        if (!name || (strcmp(name, ".wq") != 0 && strcmp(name, ".wk") != 0)) continue;
        for (size_t e = 0; e < p->local_count; e++) m->params[p->offset + e] *= factor;
    }
}

// ---------------------------------------------------------------------------------------
// Reading back (serial driver, default properties: what h5py does)

static bool has_attribute(hid_t object, const char *name) { return H5Aexists(object, name) > 0; }

static double read_double_attribute(hid_t object, const char *name) {
    double value = NAN;
    hid_t a = H5Aopen(object, name, H5P_DEFAULT);
    if (a >= 0) H5Aread(a, H5T_NATIVE_DOUBLE, &value);
    if (a >= 0) H5Aclose(a);
    return value;
}

static void read_string_attribute(hid_t object, const char *name, char *out, size_t size) {
    out[0] = '\0';
    hid_t a = H5Aopen(object, name, H5P_DEFAULT);
    if (a < 0) return;
    hid_t type = H5Aget_type(a);
    size_t length = H5Tget_size(type);
    char *buffer = xcalloc(length + 1, 1);
    H5Aread(a, type, buffer);
    snprintf(out, size, "%s", buffer);
    free(buffer);
    H5Tclose(type);
    H5Aclose(a);
}

// One sequence's [H, L, L] slab of a layer's attn as float (and its raw float16 bits).
static bool read_attn(hid_t file, int64_t step, int layer, int sequence, float *out, uint16_t *half_out) {
    char name[96];
    snprintf(name, sizeof name, "/step_%lld/layer_%d/attn", (long long)step, layer);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return false;
    hid_t space = H5Dget_space(d), type = H5Dget_type(d);
    hsize_t start[4] = {(hsize_t)sequence, 0, 0, 0}, count[4] = {1, HEADS, L, L};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t mem = H5Screate_simple(4, count, NULL);
    bool ok = H5Dread(d, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, out) >= 0;
    if (half_out) ok = ok && H5Dread(d, type, mem, space, H5P_DEFAULT, half_out) >= 0;  // raw bits
    H5Sclose(mem);
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(d);
    return ok;
}

static bool read_vector(hid_t file, const char *name, hid_t mem_type, void *out) {
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return false;
    bool ok = H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0;
    H5Dclose(d);
    return ok;
}

// ---------------------------------------------------------------------------------------
// One model: record, recompute, compare

typedef struct {
    const char *variant, *layout;
    int layers;
    bool float16;
} record_case;

typedef struct {
    float *attn[8];              // per layer [SEQUENCES, H, L, L] (NULL without attn)
    int64_t counts[8][SCORE_BINS];
    int64_t binned[8];
    double min[8], max[8];
} expected;

static int linear_bin(double x, const double *edges) {
    for (int b = SCORE_BINS - 1; b >= 0; b--)
        if (edges[b] <= x) return b;
    return 0;
}

// The recorder's forward again, chunk by chunk as it runs it, and the mixers' outputs.
static void recompute(model *m, const attention_recorder *rec, expected *e) {
    int n = m->config.num_hidden_layers;
    size_t map = (size_t)HEADS * L * L;
    float *scores = xmalloc(map * sizeof(float));
    double edges[SCORE_BINS + 1];
    score_histogram_edges(edges);
    for (int l = 0; l < n; l++) {
        free(e->attn[l]);
        e->attn[l] = m->plan[l]->attention_matrix ? xmalloc(SEQUENCES * map * sizeof(float)) : NULL;
        memset(e->counts[l], 0, sizeof e->counts[l]);
        e->binned[l] = 0;
        e->min[l] = INFINITY;
        e->max[l] = -INFINITY;
    }
    for (int k0 = 0; k0 < SEQUENCES; k0 += m->max_batch) {
        int batch = SEQUENCES - k0 < m->max_batch ? SEQUENCES - k0 : m->max_batch;
        size_t offset = (size_t)k0 * L;
        model_forward(m, rec->inputs + offset, batch, L);
        mixer_context context = model_mixer_context(m);
        for (int l = 0; l < n; l++) {
            const mixer_kind *kind = m->plan[l];
            if (!kind->attention_matrix) continue;
            for (int s = 0; s < batch; s++) {
                kind->attention_matrix(&m->mixers[l], &context, s, e->attn[l] + (size_t)(k0 + s) * map);
                if (!kind->attention_scores) continue;
                kind->attention_scores(&m->mixers[l], &context, s, scores);
                for (int h = 0; h < HEADS; h++)
                    for (int i = 0; i < L; i++)
                        for (int t = kind->scores_per_token ? i : 0; t <= i; t++) {
                            double x = scores[((size_t)h * L + i) * L + t];
                            e->counts[l][linear_bin(x, edges)]++;
                            e->binned[l]++;
                            e->min[l] = fmin(e->min[l], x);
                            e->max[l] = fmax(e->max[l], x);
                        }
            }
        }
    }
    free(scores);
}

// Re-checks of later steps print one line per step instead of one per property.
static bool collecting;
static int collected_failures;
static char first_failure[800];

static void report(int ok, const char *name, const char *format, ...) DECON_PRINTF(3, 4);
static void report(int ok, const char *name, const char *format, ...) {
    char why[512] = "";
    if (!ok) {
        va_list args;
        va_start(args, format);
        vsnprintf(why, sizeof why, format, args);
        va_end(args);
    }
    if (!collecting) testing_report(ok, name, "%s", why);
    else if (!ok && collected_failures++ == 0) snprintf(first_failure, sizeof first_failure, "%s: %s", name, why);
}

static void begin_collecting(void) {
    collecting = true;
    collected_failures = 0;
    first_failure[0] = '\0';
}

static void end_collecting(const char *name) {
    collecting = false;
    testing_report(collected_failures == 0, name, "%d checks failed, first %s", collected_failures, first_failure);
}

// Every check of one layer of one step against the recomputed values.
static void check_layer(const char *label, hid_t file, int64_t step, int layer, const mixer_kind *kind,
                        const expected *e, bool float16) {
    char name[160], text[256];
    snprintf(name, sizeof name, "/step_%lld/layer_%d", (long long)step, layer);
    hid_t g = H5Gopen2(file, name, H5P_DEFAULT);
    snprintf(text, sizeof text, "%s_layer%d_group", label, layer);
    report(g >= 0, text, "no group %s", name);
    if (g < 0) return;
    static const char *const attrs[] = {"description", "layer", "layer_id", "variant", "is_standard", "step",
                                        "has_attn", "has_scores", "scores_kind", "row_sums", "row_sum_min",
                                        "row_sum_max", "entry_min"};
    const char *missing = NULL;
    for (size_t i = 0; i < sizeof attrs / sizeof *attrs && !missing; i++)
        if (!has_attribute(g, attrs[i])) missing = attrs[i];
    snprintf(text, sizeof text, "%s_layer%d_attributes", label, layer);
    report(!missing, text, "attribute %s missing", missing ? missing : "");
    char variant[64];
    read_string_attribute(g, "variant", variant, sizeof variant);
    double has_attn = read_double_attribute(g, "has_attn"), has_scores = read_double_attribute(g, "has_scores");
    snprintf(text, sizeof text, "%s_layer%d_describes_mixer", label, layer);
    report(strcmp(variant, kind->name) == 0 && has_attn == (kind->attention_matrix != NULL) &&
                       has_scores == (kind->attention_scores != NULL) &&
                       read_double_attribute(g, "layer_id") == layer + 1 &&
                       read_double_attribute(g, "step") == (double)step,
                   text, "variant %s has_attn %g has_scores %g", variant, has_attn, has_scores);
    bool attn_there = H5Lexists(g, "attn", H5P_DEFAULT) > 0;
    if (!kind->attention_matrix) {
        snprintf(text, sizeof text, "%s_layer%d_no_attn_dataset", label, layer);
        report(!attn_there && H5Lexists(g, "logits_hist", H5P_DEFAULT) <= 0, text,
                       "a layer without attention has datasets");
        H5Gclose(g);
        return;
    }

    // attn: type, chunks, filters, then the values
    hid_t d = H5Dopen2(g, "attn", H5P_DEFAULT);
    hid_t type = H5Dget_type(d), dcpl = H5Dget_create_plist(d), space = H5Dget_space(d);
    hsize_t dims[4] = {0}, chunk[4] = {0};
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Pget_chunk(dcpl, 4, chunk);
    size_t spos, epos, esize, mpos, msize;
    H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize);
    bool type_ok = H5Tget_class(type) == H5T_FLOAT && H5Tget_order(type) == H5T_ORDER_LE &&
                   (float16 ? H5Tget_size(type) == 2 && H5Tget_ebias(type) == 15 && spos == 15 && epos == 10 &&
                                  esize == 5 && mpos == 0 && msize == 10
                            : H5Tequal(type, H5T_IEEE_F32LE) > 0);
    snprintf(text, sizeof text, "%s_layer%d_attn_layout", label, layer);
    report(type_ok && dims[0] == SEQUENCES && dims[1] == HEADS && dims[2] == L && dims[3] == L &&
                       chunk[0] == 1 && chunk[1] == 1 && chunk[2] == L && chunk[3] == L &&
                       H5Pget_nfilters(dcpl) == 2 && has_attribute(d, "description"),
                   text, "type ok %d, dims %llu %llu %llu %llu, chunk %llu %llu, %d filters", type_ok,
                   (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)dims[2],
                   (unsigned long long)dims[3], (unsigned long long)chunk[2], (unsigned long long)chunk[3],
                   H5Pget_nfilters(dcpl));
    H5Sclose(space);
    H5Pclose(dcpl);
    H5Tclose(type);
    H5Dclose(d);

    size_t map = (size_t)HEADS * L * L;
    float *got = xmalloc(map * sizeof(float));
    uint16_t *bits = xmalloc(map * sizeof(uint16_t));
    size_t mismatches = 0, nonzero_upper = 0;
    double worst_rounding = 0.0, worst_row = 0.0;
    bool read_ok = true;
    bool softmax = kind->attention_scores != NULL;  // every mixer with scores normalises rows to 1
    for (int k = 0; k < SEQUENCES; k++) {
        read_ok = read_ok && read_attn(file, step, layer, k, got, float16 ? bits : NULL);
        const float *want = e->attn[layer] + (size_t)k * map;
        for (size_t r = 0; r < (size_t)HEADS * L; r++) {
            size_t i = r % L;
            double sum = 0.0;
            for (size_t t = 0; t < L; t++) {
                size_t at = r * L + t;
                if (float16) {
                    mismatches += bits[at] != attention_record_half_bits(want[at]);
                    double error = fabs((double)got[at] - want[at]);
                    worst_rounding = fmax(worst_rounding, error / (fabs(want[at]) * 0x1p-11 + 0x1p-25));
                } else {
                    uint32_t a, b;  // bit patterns: -0 vs 0 and NaN payloads count as differences
                    memcpy(&a, &got[at], sizeof a);
                    memcpy(&b, &want[at], sizeof b);
                    mismatches += a != b;
                }
                if (t > i) nonzero_upper += got[at] != 0.0f;
                else sum += got[at];
            }
            worst_row = fmax(worst_row, fabs(sum - 1.0));
        }
    }
    snprintf(text, sizeof text, "%s_layer%d_attn_equals_attention_matrix", label, layer);
    report(read_ok && mismatches == 0, text, "%zu of %zu values differ%s", mismatches,
                   (size_t)SEQUENCES * map, read_ok ? "" : " (read failed)");
    if (float16) {
        snprintf(text, sizeof text, "%s_layer%d_float16_within_rounding", label, layer);
        report(worst_rounding <= 1.0, text, "error %.3g half-ulps", worst_rounding);
    }
    snprintf(text, sizeof text, "%s_layer%d_upper_triangle_zero", label, layer);
    report(nonzero_upper == 0, text, "%zu non-zero values above the diagonal", nonzero_upper);
    if (softmax) {
        double tolerance = float16 ? (double)L * 0x1p-11 : 1e-5;
        snprintf(text, sizeof text, "%s_layer%d_rows_sum_to_one", label, layer);
        report(worst_row <= tolerance, text, "worst |row sum - 1| = %.3g", worst_row);
        char sums[64];
        read_string_attribute(g, "row_sums", sums, sizeof sums);
        snprintf(text, sizeof text, "%s_layer%d_row_sums_attribute", label, layer);
        report(strcmp(sums, "1") == 0, text, "row_sums = '%s'", sums);
    }
    free(got);
    free(bits);

    if (!kind->attention_scores) {
        snprintf(text, sizeof text, "%s_layer%d_no_histogram", label, layer);
        report(H5Lexists(g, "logits_hist", H5P_DEFAULT) <= 0, text, "histogram for a mixer without scores");
        H5Gclose(g);
        return;
    }
    int64_t counts[SCORE_BINS], total = 0;
    double edges[SCORE_BINS + 1], stats[SCORE_STATS];
    bool ok = read_vector(g, "logits_hist", H5T_NATIVE_INT64, counts) &&
              read_vector(g, "logits_edges", H5T_NATIVE_DOUBLE, edges) &&
              read_vector(g, "logits_stats", H5T_NATIVE_DOUBLE, stats);
    for (int b = 0; ok && b < SCORE_BINS; b++) total += counts[b];
    int64_t causal = kind->scores_per_token ? (int64_t)SEQUENCES * HEADS * L
                                            : (int64_t)SEQUENCES * HEADS * L * (L + 1) / 2;
    hid_t h = H5Dopen2(g, "logits_hist", H5P_DEFAULT);
    double count_attr = read_double_attribute(h, "count");
    H5Dclose(h);
    snprintf(text, sizeof text, "%s_layer%d_histogram_counts_every_causal_score", label, layer);
    report(ok && total == causal && count_attr == (double)causal, text,
                   "sum %lld, count attr %g, expected %lld", (long long)total, count_attr, (long long)causal);
    bool same = ok && memcmp(counts, e->counts[layer], sizeof counts) == 0;
    snprintf(text, sizeof text, "%s_layer%d_histogram_equals_brute_force", label, layer);
    report(same, text, "bins differ from a linear scan of logits_edges");
    snprintf(text, sizeof text, "%s_layer%d_stats", label, layer);
    report(ok && stats[0] == e->min[layer] && stats[1] == e->max[layer] && stats[3] <= stats[4] &&
                       stats[4] <= stats[5] && stats[0] <= stats[3] && stats[5] <= stats[1],
                   text, "min %g (want %g) max %g (want %g) p1 %g p50 %g p99 %g", stats[0], e->min[layer], stats[1],
                   e->max[layer], stats[3], stats[4], stats[5]);
    H5Gclose(g);
}

static void check_root(const char *label, hid_t file, const model *m, const attention_recorder *rec) {
    static const char *const attrs[] = {"format_version", "kind", "writer", "description", "variant", "layout",
                                        "layer_plan", "num_layers", "num_heads", "num_key_value_heads", "head_dim",
                                        "sequence_length", "sequences", "dtype", "recorded_layers", "source",
                                        "histogram_bins"};
    const char *missing = NULL;
    for (size_t i = 0; i < sizeof attrs / sizeof *attrs && !missing; i++)
        if (!has_attribute(file, attrs[i])) missing = attrs[i];
    char text[128], kind[64];
    snprintf(text, sizeof text, "%s_root_attributes", label);
    testing_report(!missing, text, "attribute %s missing", missing ? missing : "");
    read_string_attribute(file, "kind", kind, sizeof kind);
    snprintf(text, sizeof text, "%s_root_kind_and_shapes", label);
    testing_report(strcmp(kind, "decon attention recording") == 0 &&
                       read_double_attribute(file, "format_version") == 1 &&
                       read_double_attribute(file, "num_layers") == m->config.num_hidden_layers &&
                       read_double_attribute(file, "sequence_length") == L &&
                       read_double_attribute(file, "sequences") == SEQUENCES,
                   text, "kind '%s'", kind);
    int *tokens = xmalloc((size_t)SEQUENCES * L * sizeof(int));
    bool ok = read_vector(file, "/tokens", H5T_NATIVE_INT, tokens) &&
              memcmp(tokens, rec->inputs, (size_t)SEQUENCES * L * sizeof(int)) == 0;
    // Sequence k is window k of the shard: tokens [k L, (k+1) L).
    token_shard shard;
    token_shard_open(&shard, shard_path, VOCAB);
    for (int i = 0; ok && i < SEQUENCES * L; i++) ok = tokens[i] == (int)token_shard_get(&shard, (uint64_t)i);
    token_shard_close(&shard);
    snprintf(text, sizeof text, "%s_tokens_are_the_first_windows", label);
    testing_report(ok, text, "/tokens differ from the shard's first %d windows", SEQUENCES);
    free(tokens);
}

static int64_t step_count(hid_t file) {
    H5G_info_t info;
    H5Gget_info(file, &info);
    int64_t steps = 0;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[64];
        H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        steps += strncmp(name, "step_", 5) == 0;
    }
    return steps;
}

static void run_case(const record_case *rc) {
    char label[96], path[600], text[160];
    snprintf(label, sizeof label, "%s_%s%s", rc->variant, rc->layout, rc->float16 ? "_fp16" : "");
    for (char *p = label; *p; p++)
        if (*p == ':' || *p == '-') *p = '_';
    snprintf(path, sizeof path, "%s/%s.h5", scratch, label);
    decon_config c;
    make_config(&c, rc->variant, rc->layout, rc->layers);
    model m;
    model_build(&m, &c, "test");
    model_allocate(&m, MAX_BATCH, L);
    model_initialize(&m, 7);
    sharpen(&m, 12.0f);
    attention_recorder rec;
    recorder_init(&rec, &c, path, shard_path, SEQUENCES, "all", rc->float16 ? "float16" : "float32", "test",
                  "test", MPI_COMM_WORLD);
    recording_result first = recorder_record(&rec, &m, 5, "[model]\n", MPI_COMM_WORLD);
    expected e = {0};
    recompute(&m, &rec, &e);

    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    snprintf(text, sizeof text, "%s_opens_serially", label);
    testing_report(file >= 0 && first.bytes > 0, text, "cannot open %s", path);
    if (file < 0) return;
    check_root(label, file, &m, &rec);
    for (int l = 0; l < c.num_hidden_layers; l++) check_layer(label, file, 5, l, m.plan[l], &e, rc->float16);
    H5Fclose(file);

    // A second step appends; the first stays as it was.
    recorder_record(&rec, &m, 10, "[model]\n", MPI_COMM_WORLD);
    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    snprintf(text, sizeof text, "%s_second_step_appended", label);
    testing_report(file >= 0 && step_count(file) == 2, text, "expected step_5 and step_10");
    begin_collecting();
    for (int l = 0; file >= 0 && l < c.num_hidden_layers; l++) {
        check_layer(label, file, 5, l, m.plan[l], &e, rc->float16);
        check_layer(label, file, 10, l, m.plan[l], &e, rc->float16);
    }
    snprintf(text, sizeof text, "%s_both_steps_check_after_append", label);
    end_collecting(text);
    if (file >= 0) H5Fclose(file);

    // Step 5 again with other parameters (a resumed run): replaced, not duplicated.
    sharpen(&m, 0.5f);
    recorder_record(&rec, &m, 5, "[model]\n", MPI_COMM_WORLD);
    recompute(&m, &rec, &e);
    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    snprintf(text, sizeof text, "%s_step_replaced", label);
    testing_report(file >= 0 && step_count(file) == 2, text, "expected two step groups after re-recording step 5");
    begin_collecting();
    for (int l = 0; file >= 0 && l < c.num_hidden_layers; l++)
        check_layer(label, file, 5, l, m.plan[l], &e, rc->float16);
    snprintf(text, sizeof text, "%s_replaced_step_holds_the_new_values", label);
    end_collecting(text);
    if (file >= 0) H5Fclose(file);

    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(text, sizeof text, "%s_no_temporary_left", label);
    testing_report(access(tmp, F_OK) != 0, text, "%s exists after the record", tmp);

    for (int l = 0; l < c.num_hidden_layers; l++) free(e.attn[l]);
    recorder_free(&rec);
    model_free(&m);
}

// ---------------------------------------------------------------------------------------
// float16 rounding against the compiler's

static void test_half(void) {
#ifdef __FLT16_MAX__
    uint64_t bad = 0, tried = 0;
    float specials[] = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, 1e9f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f,
                        0x1p-26f, 0x1p-14f, 0x1.ffcp-15f, 0x1.ffep-15f, 1e-40f, INFINITY, -INFINITY, 3.14159f,
                        0.333333f, 1.00048828125f, 1.00146484375f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) {
        _Float16 h = (_Float16)specials[i];
        uint16_t want;
        memcpy(&want, &h, sizeof want);
        bad += attention_record_half_bits(specials[i]) != want;
        tried++;
    }
    for (uint64_t i = 0; i < 2000000; i++) {  // random bit patterns across every exponent
        uint32_t bits = (uint32_t)rng_mix(3, 4, i);
        float x;
        memcpy(&x, &bits, sizeof x);
        if (isnan(x)) continue;
        _Float16 h = (_Float16)x;
        uint16_t want;
        memcpy(&want, &h, sizeof want);
        bad += attention_record_half_bits(x) != want;
        bad += attention_record_half_value(want) != (float)h;
        tried++;
    }
    testing_report(bad == 0, "float16_rounding_matches_compiler", "%llu of %llu differ", (unsigned long long)bad,
                   (unsigned long long)tried);
#else
    testing_report(attention_record_half_bits(1.0f) == 0x3c00 && attention_record_half_bits(65520.0f) == 0x7c00,
                   "float16_rounding_matches_compiler", "no _Float16 here; spot checks failed");
#endif
    testing_report(isnan(attention_record_half_value(attention_record_half_bits(NAN))), "float16_keeps_nan",
                   "NaN lost");
}

// ---------------------------------------------------------------------------------------
// Two ranks, each writing its half of the heads (the tensor-parallel layout)

static float synthetic(int sequence, int head, int i, int t) {
    return t > i ? 0.0f : (float)(1.0 + sequence + 0.1 * head) / (float)(i + 1) + 1e-3f * (float)(t % 5);
}

static void write_synthetic(const char *path, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int local = HEADS / size, start = rank * local;
    bool layers[1] = {true};
    int *tokens = xcalloc((size_t)SEQUENCES * L, sizeof(int));
    attention_record_info info = {.writer = "test", .variant = "standard", .layout = "uniform", .layer_plan = "S",
                                  .config_text = "", .source = "synthetic", .num_layers = 1, .num_heads = HEADS,
                                  .num_kv_heads = HEADS, .head_dim = 8, .sequence_length = L,
                                  .sequences = SEQUENCES, .layers = layers, .tokens = tokens};
    attention_record *r = attention_record_open(path, &info, 1, comm);
    attention_record_layer desc = {.variant = "standard", .is_standard = true, .has_attn = true, .has_scores = true};
    attention_record_begin_layer(r, 0, &desc);
    float *probs = xmalloc((size_t)local * L * L * sizeof(float));
    score_histogram h;
    score_histogram_clear(&h);
    for (int k = 0; k < SEQUENCES; k++) {
        for (int j = 0; j < local; j++)
            for (int i = 0; i < L; i++)
                for (int t = 0; t < L; t++) probs[((size_t)j * L + i) * L + t] = synthetic(k, start + j, i, t);
        attention_record_write_attn(r, 0, k, start, local, probs, true);
        score_histogram_add(&h, probs, local, L, false);  // any numbers will do
    }
    score_histogram_allreduce(&h, comm);
    attention_record_layer_end end = {.row_sum_min = 1, .row_sum_max = 1, .entry_min = 0, .scores = &h};
    attention_record_end_layer(r, 0, &end);
    attention_record_close(r, 0.0);
    free(probs);
    free(tokens);
}

static bool synthetic_reads_back(const char *path, int64_t *hist_total) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return false;
    float *got = xmalloc((size_t)HEADS * L * L * sizeof(float));
    bool ok = true;
    for (int k = 0; k < SEQUENCES && ok; k++) {
        ok = read_attn(file, 1, 0, k, got, NULL);
        for (int j = 0; ok && j < HEADS; j++)
            for (int i = 0; ok && i < L; i++)
                for (int t = 0; ok && t < L; t++) ok = got[((size_t)j * L + i) * L + t] == synthetic(k, j, i, t);
    }
    int64_t counts[SCORE_BINS];
    *hist_total = 0;
    if (ok && read_vector(file, "/step_1/layer_0/logits_hist", H5T_NATIVE_INT64, counts))
        for (int b = 0; b < SCORE_BINS; b++) *hist_total += counts[b];
    free(got);
    H5Fclose(file);
    return ok;
}

static void test_two_ranks(void) {
    char one[600], two[600];
    snprintf(one, sizeof one, "%s/synthetic_1rank.h5", scratch);
    snprintf(two, sizeof two, "%s/synthetic_2ranks.h5", scratch);
    write_synthetic(one, MPI_COMM_WORLD);
    int64_t total_one = 0, total_two = 0;
    bool ok_one = synthetic_reads_back(one, &total_one);
    testing_report(ok_one, "synthetic_one_rank_reads_back", "values differ");
    // Its stdout is captured only to be dropped.
    child_result r = child_run(
        (const char *[]){"mpirun", "--oversubscribe", "-np", "2", self_path, "--two-ranks", two, NULL}, CHILD_STDOUT);
    bool ran = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
    bool ok_two = ran && synthetic_reads_back(two, &total_two);
    testing_report(ok_two && total_two == total_one && total_one == (int64_t)SEQUENCES * HEADS * L * (L + 1) / 2,
                   "two_ranks_write_their_heads_hyperslabs", "%s; histogram totals %lld vs %lld",
                   ran ? "values differ" : "mpirun -np 2 failed", (long long)total_two, (long long)total_one);
}

int main(int argc, char **argv) {
    child_keep_environment();  // before MPI_Init adds to it
    MPI_Init(&argc, &argv);
    if (argc == 3 && strcmp(argv[1], "--two-ranks") == 0) {
        int rank, size;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        log_set_rank(rank, size);
        write_synthetic(argv[2], MPI_COMM_WORLD);
        MPI_Finalize();
        return 0;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(scratch, sizeof scratch, "/tmp/decon_test_record_XXXXXX");
    if (!mkdtemp(scratch)) fatal("cannot create a scratch directory under /tmp");
    ssize_t length = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    self_path[length > 0 ? length : 0] = '\0';

    // A shard of random tokens holding more than SEQUENCES windows.
    snprintf(shard_path, sizeof shard_path, "%s/tokens.bin", scratch);
    uint64_t count = (uint64_t)(SEQUENCES + 2) * L + 1;
    uint32_t *tokens = xmalloc(count * sizeof(uint32_t));
    for (uint64_t i = 0; i < count; i++) tokens[i] = (uint32_t)(rng_mix(11, 12, i) % VOCAB);
    token_shard_write(shard_path, tokens, count, VOCAB);
    free(tokens);

    test_half();
    static const record_case cases[] = {
        {"mlp", "hybrid:even", 2, false},        // no attention (layer 1) + standard (layer 2)
        {"approx", "hybrid:even", 2, true},      // Taylor scores, float16
        {"nonapx", "hybrid:even", 2, false},     // per-token scores g_t
        {"rndembqk", "hybrid:even", 2, false},   // one map from the fixed stream
        {"approx-diag", "uniform", 1, false},    // A without scores (rows sum to ~3)
        {"standard", "uniform", 2, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i]);
    test_two_ranks();

    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", scratch);
    if (system(command) != 0) warn("could not remove %s", scratch);
    MPI_Finalize();
    return testing_exit_code();
}
