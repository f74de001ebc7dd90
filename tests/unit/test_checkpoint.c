// HDF5 checkpoints: bit-exact round trips, loading at a different tensor-parallel
// decomposition than the one that wrote, Adam moments sharded over data-parallel ranks
// (ZeRO-1 ranges) written and read at any decomposition, one-line failures on damaged or
// mismatched files and on overlapping ranges, a writer killed midway, and the directory
// helpers (find_latest, prune).
//
// Run plainly (1 rank) it runs everything; the multi-rank halves of the decomposition
// tests run as `mpirun -np N <self> --MODE FILE` (--write-sharded, --read-sharded,
// --write-zero, --read-zero, --zero-dp3, --write-overlap), and the failure cases as
// `<self> --read FILE` in a child whose stderr comes back through a pipe. Last it runs
// itself as `mpirun -np N <self> --parallel DIR` (N = 2 and 4), which checks the same
// properties collectively (every rank holds shard `rank` of N, reads at 1 rank go through
// MPI_COMM_SELF), and passes on the children's PASS/FAIL lines (named "... at N ranks").
// Run under plain `mpirun -np N` it runs those collective checks alone.
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child_process.h"
#include "core/errors.h"
#include "core/params.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "testing.h"

static char scratch[256];
static int world_rank, world_size;

static const char CONFIG_TEXT[] =
    "[model]\nhidden_size = 16\nnum_hidden_layers = 1\nvocab_size = 64\n\n[attention]\nvariant = \"standard\"\n";

// ---------------------------------------------------------------------------------------
// The test model: a few tensors of every sharding kind, 1-D and 2-D.

enum { VARIANT_FULL, VARIANT_NO_WO, VARIANT_WIDE };

static void build_registry(param_registry *registry, int shard_rank, int shard_count, int variant) {
    int64_t d = variant == VARIANT_WIDE ? 32 : 16;
    params_init(registry, shard_rank, shard_count);
    params_add(registry, "embed.weight", "embedding", -1, 64, d, SHARD_ROWS, INIT_NORMAL, 0.02f, false);
    params_add(registry, "layers.0.norm.weight", "norm", 0, d, 0, SHARD_NONE, INIT_ONES, 0, false);
    params_add(registry, "layers.0.mixer.wq", "mixer", 0, d, d, SHARD_ROWS, INIT_NORMAL, 0.02f, true);
    params_add(registry, "layers.0.mixer.bq", "mixer", 0, d, 0, SHARD_ROWS, INIT_ZEROS, 0, false);
    if (variant != VARIANT_NO_WO)
        params_add(registry, "layers.0.mixer.wo", "mixer", 0, d, d, SHARD_COLS, INIT_NORMAL, 0.02f, true);
    params_add(registry, "layers.0.mlp.down", "mlp", 0, d, 2 * d, SHARD_COLS, INIT_NORMAL, 0.02f, true);
    params_add(registry, "final_norm.weight", "norm", -1, d, 0, SHARD_NONE, INIT_ONES, 0, false);
}

// Element e of tensor `name` in buffer `kind` (0 params, 1 m, 2 v), whatever the slice.
static float logical_value(int kind, const char *name, int64_t e) {
    return (float)rng_normal(100 + (uint64_t)kind, rng_hash_string(name), (uint64_t)e);
}

static float *filled_buffer(const param_registry *registry, int kind) {
    float *buffer = xaligned_alloc(registry->total * sizeof(float));
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        int64_t n = params_logical_count(info);
        float *logical = xmalloc((size_t)n * sizeof(float));
        for (int64_t e = 0; e < n; e++) logical[e] = logical_value(kind, info->name, e);
        params_logical_to_slice(info, logical, buffer + info->offset);
        free(logical);
    }
    return buffer;
}

// Names the first tensor whose slice differs bit for bit from the expected values.
static const char *first_difference(const param_registry *registry, const float *buffer, int kind) {
    float *expected = filled_buffer(registry, kind);
    const char *differs = NULL;
    for (int p = 0; p < registry->count && !differs; p++) {
        const param_info *info = &registry->items[p];
        if (memcmp(buffer + info->offset, expected + info->offset, info->local_count * sizeof(float)) != 0)
            differs = info->name;
    }
    free(expected);
    return differs;
}

static train_state test_state(int64_t step) {
    return (train_state){.step = step, .tokens_seen = 5000000000LL + step, .data_epoch = 3, .data_index = 17,
                         .seed = 0xDEADBEEFCAFEF00DULL, .learning_rate = 3.7e-4, .loss = 2.718281828459045};
}

static int same_state(const train_state *a, const train_state *b) {
    return a->step == b->step && a->tokens_seen == b->tokens_seen && a->data_epoch == b->data_epoch &&
           a->data_index == b->data_index && a->seed == b->seed && a->learning_rate == b->learning_rate &&
           a->loss == b->loss;
}

// Writes the test checkpoint for `registry` (params, m, v unless without_optimizer).
static void write_test_checkpoint(const char *path, const param_registry *registry, int64_t step,
                                  int without_optimizer, MPI_Comm comm) {
    float *params = filled_buffer(registry, 0), *m = filled_buffer(registry, 1), *v = filled_buffer(registry, 2);
    train_state state = test_state(step);
    checkpoint_write(path, registry, params, without_optimizer ? NULL : m, without_optimizer ? NULL : v, &state,
                     CONFIG_TEXT, comm);
    free(params);
    free(m);
    free(v);
}

// Reads `path` into `registry`'s slices and compares everything; returns an empty string
// when all matches, else what differs.
static const char *read_and_compare(const char *path, const param_registry *registry, int64_t step, MPI_Comm comm) {
    static char why[256];
    float *params = xaligned_alloc(registry->total * sizeof(float));
    float *m = xaligned_alloc(registry->total * sizeof(float));
    float *v = xaligned_alloc(registry->total * sizeof(float));
    train_state state = {0}, expected = test_state(step);
    checkpoint_read(path, registry, params, m, v, &state, comm);
    const char *bad_params = first_difference(registry, params, 0), *bad_m = first_difference(registry, m, 1),
               *bad_v = first_difference(registry, v, 2);
    why[0] = '\0';
    if (bad_params) snprintf(why, sizeof why, "params %s differs", bad_params);
    else if (bad_m) snprintf(why, sizeof why, "m %s differs", bad_m);
    else if (bad_v) snprintf(why, sizeof why, "v %s differs", bad_v);
    else if (!same_state(&state, &expected)) snprintf(why, sizeof why, "state differs (step %lld)", (long long)state.step);
    free(params);
    free(m);
    free(v);
    return why;
}

// ---------------------------------------------------------------------------------------
// Moments held as a range of the flat buffer (ZeRO-1): arrays of end - begin floats.

enum { GUARD = 16 };              // floats after a range array that reads must not touch
static const float UNTOUCHED = 12345.0f;

static const param_info *find_tensor(const param_registry *registry, const char *name) {
    int index = params_find(registry, name);
    if (index < 0) fatal("test registry lacks %s", name);
    return &registry->items[index];
}

// Part `part` of `parts` of the buffer in 16-float units (as ZeRO partitions it).
static moment_range aligned_part(const param_registry *registry, int part, int parts) {
    size_t units = registry->total / 16;
    return (moment_range){units * (size_t)part / (size_t)parts * 16, units * (size_t)(part + 1) / (size_t)parts * 16};
}

// Cut points inside layers.0.mlp.down (column-sharded): row 2 column 3 and row 9
// column 5 of the local slice, so runs start and end mid-row.
static void odd_cuts(const param_registry *registry, size_t *cut1, size_t *cut2) {
    const param_info *down = find_tensor(registry, "layers.0.mlp.down");
    size_t width = (size_t)down->local_shape[1];
    *cut1 = down->offset + 2 * width + 3;
    *cut2 = down->offset + 9 * width + 5;
}

// The moments of kind 1 (m) or 2 (v) for `range`, as a rank under ZeRO-1 holds them.
static float *filled_range(const param_registry *registry, int kind, moment_range range) {
    float *full = filled_buffer(registry, kind);
    float *part = xaligned_alloc((range.end - range.begin + GUARD) * sizeof(float));
    memcpy(part, full + range.begin, (range.end - range.begin) * sizeof(float));
    free(full);
    return part;
}

// Writes the test checkpoint with moments held as `range` (NULL arrays when the range is
// empty and null_when_empty, as a rank without moments may pass).
static void write_range_checkpoint(const char *path, const param_registry *registry, moment_range range, int64_t step,
                                   int null_when_empty, MPI_Comm comm) {
    float *params = filled_buffer(registry, 0);
    float *m = filled_range(registry, 1, range), *v = filled_range(registry, 2, range);
    int pass_null = null_when_empty && range.begin == range.end;
    train_state state = test_state(step);
    checkpoint_write_partitioned(path, registry, params, pass_null ? NULL : m, pass_null ? NULL : v, &range, &state,
                                 CONFIG_TEXT, comm);
    free(params);
    free(m);
    free(v);
}

// Whether `moments` holds exactly the expected values of every tensor element in `range`
// and nothing was written to the padding between tensors or past the array's end.
static const char *range_difference(const param_registry *registry, const float *moments, moment_range range, int kind) {
    float *expected = filled_buffer(registry, kind);
    const char *differs = NULL;
    size_t n = range.end - range.begin;
    char *is_tensor = xcalloc(n + 1, 1);
    for (int p = 0; p < registry->count && !differs; p++) {
        const param_info *info = &registry->items[p];
        size_t lo = info->offset > range.begin ? info->offset : range.begin;
        size_t hi = info->offset + info->local_count < range.end ? info->offset + info->local_count : range.end;
        if (lo >= hi) continue;
        memset(is_tensor + (lo - range.begin), 1, hi - lo);
        if (memcmp(moments + (lo - range.begin), expected + lo, (hi - lo) * sizeof(float)) != 0) differs = info->name;
    }
    for (size_t j = 0; j < n + GUARD && !differs; j++)
        if ((j >= n || !is_tensor[j]) && moments[j] != UNTOUCHED) differs = j >= n ? "past the range" : "padding";
    free(is_tensor);
    free(expected);
    return differs;
}

// Reads `path` with moments held as `range` and compares params, the range and state.
static const char *read_range_and_compare(const char *path, const param_registry *registry, moment_range range,
                                          int64_t step, MPI_Comm comm) {
    static char why[256];
    size_t n = range.end - range.begin + GUARD;
    float *params = xaligned_alloc(registry->total * sizeof(float));
    float *m = xaligned_alloc(n * sizeof(float)), *v = xaligned_alloc(n * sizeof(float));
    for (size_t j = 0; j < n; j++) m[j] = v[j] = UNTOUCHED;
    train_state state = {0}, expected = test_state(step);
    checkpoint_read_partitioned(path, registry, params, m, v, &range, &state, comm);
    const char *bad_params = first_difference(registry, params, 0), *bad_m = range_difference(registry, m, range, 1),
               *bad_v = range_difference(registry, v, range, 2);
    why[0] = '\0';
    if (bad_params) snprintf(why, sizeof why, "params %s differs", bad_params);
    else if (bad_m) snprintf(why, sizeof why, "m [%zu, %zu): %s differs", range.begin, range.end, bad_m);
    else if (bad_v) snprintf(why, sizeof why, "v [%zu, %zu): %s differs", range.begin, range.end, bad_v);
    else if (!same_state(&state, &expected)) snprintf(why, sizeof why, "state differs (step %lld)", (long long)state.step);
    free(params);
    free(m);
    free(v);
    return why;
}

// A child's verdict over all its ranks: 0 when every rank found `why` empty.
static int child_verdict(const char *why) {
    int ok = !why[0], all_ok;
    if (!ok) fprintf(stderr, "rank %d: %s\n", world_rank, why);
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all_ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// Reporting: every check is collective; rank 0 prints the verdict of all ranks.

static void check(const char *name, int ok, const char *format, const char *detail) {
    int all_ok = ok;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok && world_size > 1) fprintf(stderr, "rank %d: %s: %s\n", world_rank, name, detail ? detail : "");
    char full_name[256];
    snprintf(full_name, sizeof full_name, world_size > 1 ? "%s at %d ranks" : "%s", name, world_size);
    if (world_rank == 0) testing_report(all_ok, full_name, format, detail ? detail : "");
    else if (!all_ok) testing_failures++;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void scratch_path(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", scratch, name); }

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void copy_file(const char *from, const char *to, long keep_bytes) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) fatal("cannot copy %s to %s", from, to);
    char block[65536];
    long copied = 0;
    size_t n;
    while ((keep_bytes < 0 || copied < keep_bytes) && (n = fread(block, 1, sizeof block, in)) > 0) {
        if (keep_bytes >= 0 && copied + (long)n > keep_bytes) n = (size_t)(keep_bytes - copied);
        fwrite(block, 1, n, out);
        copied += (long)n;
    }
    fclose(in);
    fclose(out);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void write_garbage(const char *path, size_t bytes) {
    FILE *f = fopen(path, "wb");
    if (!f) fatal("cannot write %s", path);
    for (size_t i = 0; i < bytes; i++) fputc((int)(rng_mix(5, 0, i) & 0xff), f);
    fclose(f);
}

// ---------------------------------------------------------------------------------------
// Child programs (tests/child_process.h): this binary, its stderr captured.

static char self_path[4096];

// `mpirun -np ranks <self> mode path [extra]`, ended after a minute should it hang.
static child_result run_mpirun(int ranks, const char *mode, const char *path, const char *extra) {
    char count[16];
    snprintf(count, sizeof count, "%d", ranks);
    return child_run((const char *[]){"timeout", "60", "mpirun", "--oversubscribe", "-np", count, self_path, mode, path,
                                      extra, NULL},
                     CHILD_STDERR);
}

static int child_succeeded(const child_result *r) { return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0; }

static int count_lines(const char *text) {
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    return lines;
}

// `<self> mode path [variant]` must fail with exactly one line containing every needle.
static void expect_fatal(const char *name, const char *mode, const char *path, const char *variant,
                         const char *const *needles) {
    child_result r = child_run((const char *[]){self_path, mode, path, variant, NULL}, CHILD_STDERR);
    char why[sizeof r.output + 256] = "";  // room for all of r.output
    size_t length = strlen(r.output);
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) == 0)
        snprintf(why, sizeof why, "child did not fail (status %d); stderr: %s", r.status, r.output);
    else if (count_lines(r.output) != 1 || r.output[length - 1] != '\n')
        snprintf(why, sizeof why, "expected exactly one line on stderr, got: %s", r.output);
    for (const char *const *needle = needles; !why[0] && *needle; needle++)
        if (!strstr(r.output, *needle)) snprintf(why, sizeof why, "message lacks \"%s\": %.*s", *needle, (int)length - 1, r.output);
    check(name, !why[0], "%s", why);
}

// Child modes. They exit 0 on success; --read is expected to end in fatal().
static int child_main(const char *mode, const char *path, const char *variant_name) {
    int variant = variant_name && strcmp(variant_name, "wide") == 0 ? VARIANT_WIDE : VARIANT_FULL;
    param_registry registry;
    if (strcmp(mode, "--write-sharded") == 0) {
        build_registry(&registry, world_rank, world_size, VARIANT_FULL);
        write_test_checkpoint(path, &registry, 200, 0, MPI_COMM_WORLD);
    } else if (strcmp(mode, "--write-replicated") == 0) {  // data parallel: every rank holds everything
        build_registry(&registry, 0, 1, VARIANT_FULL);
        write_test_checkpoint(path, &registry, 300, 0, MPI_COMM_WORLD);
    } else if (strcmp(mode, "--read-sharded") == 0) {  // tp = world, no ZeRO; variant: the step
        build_registry(&registry, world_rank, world_size, VARIANT_FULL);
        int code = child_verdict(read_and_compare(path, &registry, variant_name ? atoll(variant_name) : 100, MPI_COMM_WORLD));
        params_free(&registry);
        return code;
    } else if (strcmp(mode, "--write-zero") == 0) {  // 4 ranks: tp 2 x dp 2, ZeRO-1 moments
        int dp_rank = world_rank / 2;
        build_registry(&registry, world_rank % 2, 2, VARIANT_FULL);
        char other[600];
        write_range_checkpoint(path, &registry, aligned_part(&registry, dp_rank, 2), 400, 0, MPI_COMM_WORLD);
        size_t cut1, cut2;
        odd_cuts(&registry, &cut1, &cut2);
        snprintf(other, sizeof other, "%s.odd.h5", path);  // ranges cut a column-sharded tensor mid-row
        moment_range odd = dp_rank == 0 ? (moment_range){0, cut1} : (moment_range){cut1, registry.total};
        write_range_checkpoint(other, &registry, odd, 401, 0, MPI_COMM_WORLD);
        snprintf(other, sizeof other, "%s.empty.h5", path);  // dp rank 0 (with world rank 0) holds nothing
        moment_range lopsided = dp_rank == 0 ? (moment_range){0, 0} : (moment_range){0, registry.total};
        write_range_checkpoint(other, &registry, lopsided, 402, 1, MPI_COMM_WORLD);
        // Read back under other ranges: a run with a partial first row, whole rows and a
        // partial last row, and the rest of the buffer.
        moment_range back = dp_rank == 0 ? (moment_range){cut1, cut2} : (moment_range){cut2, registry.total};
        int code = child_verdict(read_range_and_compare(path, &registry, back, 400, MPI_COMM_WORLD));
        params_free(&registry);
        return code;
    } else if (strcmp(mode, "--read-zero") == 0) {  // 2 ranks: dp 2, ZeRO-1 moments
        build_registry(&registry, 0, 1, VARIANT_FULL);
        size_t cut1, cut2;
        odd_cuts(&registry, &cut1, &cut2);
        moment_range odd = world_rank == 0 ? (moment_range){0, cut1} : (moment_range){cut1, registry.total};
        const char *why = read_range_and_compare(path, &registry, aligned_part(&registry, world_rank, 2), 100,
                                                 MPI_COMM_WORLD);
        if (!why[0]) why = read_range_and_compare(path, &registry, odd, 100, MPI_COMM_WORLD);
        int code = child_verdict(why);
        params_free(&registry);
        return code;
    } else if (strcmp(mode, "--zero-dp3") == 0) {  // 3 ranks: dp 3, the middle range starts and ends mid-row
        build_registry(&registry, 0, 1, VARIANT_FULL);
        size_t cut1, cut2;
        odd_cuts(&registry, &cut1, &cut2);
        moment_range ranges[3] = {{0, cut1}, {cut1, cut2}, {cut2, registry.total}};
        write_range_checkpoint(path, &registry, ranges[world_rank], 500, 0, MPI_COMM_WORLD);
        int code = child_verdict(read_range_and_compare(path, &registry, ranges[world_rank], 500, MPI_COMM_WORLD));
        params_free(&registry);
        return code;
    } else if (strcmp(mode, "--write-overlap") == 0) {  // 2 ranks, dp 2: ranges overlap partially (fatal)
        build_registry(&registry, 0, 1, VARIANT_FULL);
        size_t third = registry.total / 3;
        moment_range range = world_rank == 0 ? (moment_range){0, 2 * third} : (moment_range){third, registry.total};
        write_range_checkpoint(path, &registry, range, 600, 0, MPI_COMM_WORLD);
    } else if (strcmp(mode, "--read") == 0) {
        build_registry(&registry, 0, 1, variant);
        float *buffers = xaligned_alloc(3 * registry.total * sizeof(float));
        train_state state;
        checkpoint_read(path, &registry, buffers, buffers + registry.total, buffers + 2 * registry.total, &state,
                        MPI_COMM_WORLD);
        free(buffers);
    } else if (strcmp(mode, "--write-big") == 0) {  // ~384 MB: slow enough to be killed midway
        params_init(&registry, 0, 1);
        params_add(&registry, "big", "test", -1, 4096, 8192, SHARD_NONE, INIT_ZEROS, 0, false);
        float *buffer = xaligned_alloc(3 * registry.total * sizeof(float));
        train_state state = test_state(999);
        checkpoint_write(path, &registry, buffer, buffer + registry.total, buffer + 2 * registry.total, &state,
                         "big", MPI_COMM_WORLD);
        free(buffer);
    } else {
        fatal("unknown mode %s", mode);
    }
    params_free(&registry);
    return 0;
}

// ---------------------------------------------------------------------------------------
// One-rank tests

static int read_int_attribute(const char *path, const char *object, const char *name, long long *value) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return 0;
    hid_t attribute = H5Aopen_by_name(file, object, name, H5P_DEFAULT, H5P_DEFAULT);
    int ok = attribute >= 0 && H5Aread(attribute, H5T_NATIVE_LLONG, value) >= 0;
    if (attribute >= 0) H5Aclose(attribute);
    H5Fclose(file);
    return ok;
}

static void set_format_version(const char *path, int version) {
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t attribute = H5Aopen(file, "format_version", H5P_DEFAULT);
    if (file < 0 || attribute < 0 || H5Awrite(attribute, H5T_NATIVE_INT, &version) < 0)
        fatal("cannot rewrite format_version in %s", path);
    H5Aclose(attribute);
    H5Fclose(file);
}

static void test_roundtrip(const char *good) {
    param_registry registry;
    build_registry(&registry, 0, 1, VARIANT_FULL);
    write_test_checkpoint(good, &registry, 100, 0, MPI_COMM_WORLD);
    const char *why = read_and_compare(good, &registry, 100, MPI_COMM_WORLD);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", good);
    check("checkpoint_roundtrip_bit_exact", !why[0] && access(tmp, F_OK) != 0, "%s", why[0] ? why : "a .tmp file was left");

    char *config = checkpoint_read_config(good, MPI_COMM_WORLD);
    check("checkpoint_config_roundtrip", strcmp(config, CONFIG_TEXT) == 0, "read back \"%s\"", config);
    free(config);
    check("checkpoint_is_valid_on_good_file", checkpoint_is_valid(good, MPI_COMM_WORLD), "%s", "reported invalid");

    float *params = xaligned_alloc(registry.total * sizeof(float));
    checkpoint_read(good, &registry, params, NULL, NULL, NULL, MPI_COMM_WORLD);
    const char *bad = first_difference(&registry, params, 0);
    check("checkpoint_read_params_only", bad == NULL, "%s differs", bad);
    free(params);

    long long count = 0, version = 0, step = 0, tp = 0;
    int ok = read_int_attribute(good, "/params", "parameter_count", &count) &&
             read_int_attribute(good, "/", "format_version", &version) &&
             read_int_attribute(good, "/state", "step", &step) &&
             read_int_attribute(good, "/", "tensor_parallel_size", &tp);
    char detail[128];
    snprintf(detail, sizeof detail, "parameter_count %lld (want %lld), version %lld, step %lld", count,
             (long long)params_total_logical(&registry), version, step);
    check("checkpoint_attributes_for_readers",
          ok && count == params_total_logical(&registry) && version == CHECKPOINT_FORMAT_VERSION && step == 100 && tp == 1,
          "%s", detail);

    // h5dump (hdf5-tools, installed by make setup: missing is a failure) must show the
    // config as text.
    char command[700], output[4096] = "";
    snprintf(command, sizeof command, "h5dump -d /config '%s' 2>&1", good);
    FILE *pipe = popen(command, "r");
    size_t used = pipe ? fread(output, 1, sizeof output - 1, pipe) : 0;
    output[used] = '\0';
    int status = pipe ? pclose(pipe) : -1;
    char dump_detail[sizeof output + 64];
    snprintf(dump_detail, sizeof dump_detail, "status %d: %s", status, output);
    check("checkpoint_config_readable_in_h5dump", status == 0 && strstr(output, "hidden_size = 16"), "%s", dump_detail);
    params_free(&registry);
}

static void test_decompositions(const char *good) {
    param_registry one;
    build_registry(&one, 0, 1, VARIANT_FULL);
    char path[512];

    scratch_path(path, sizeof path, "sharded.h5");
    child_result r = run_mpirun(2, "--write-sharded", path, NULL);
    int wrote = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
    const char *why = wrote ? read_and_compare(path, &one, 200, MPI_COMM_WORLD) : r.output;
    check("checkpoint_written_by_2_ranks_reads_at_1", wrote && !why[0], "%s", why);

    scratch_path(path, sizeof path, "replicated.h5");
    r = run_mpirun(2, "--write-replicated", path, NULL);
    wrote = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
    why = wrote ? read_and_compare(path, &one, 300, MPI_COMM_WORLD) : r.output;
    check("checkpoint_written_by_2_replicated_ranks_reads_at_1", wrote && !why[0], "%s", why);

    r = run_mpirun(2, "--read-sharded", good, NULL);
    check("checkpoint_written_by_1_rank_reads_at_2", WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s", r.output);
    params_free(&one);
}

// ZeRO-1: moments held as ranges of the flat buffer, written and read at any decomposition.
static void test_zero(const char *good) {
    param_registry one;
    build_registry(&one, 0, 1, VARIANT_FULL);
    char path[512], other[600];

    scratch_path(path, sizeof path, "zero.h5");
    child_result r = run_mpirun(4, "--write-zero", path, NULL);
    const char *why = access(path, F_OK) == 0 ? read_and_compare(path, &one, 400, MPI_COMM_WORLD) : r.output;
    check("zero_tp2_dp2_checkpoint_reads_at_1_rank", !why[0], "%s", why);
    check("zero_tp2_dp2_reads_back_under_other_ranges", child_succeeded(&r), "%s", r.output);
    snprintf(other, sizeof other, "%s.odd.h5", path);
    why = access(other, F_OK) == 0 ? read_and_compare(other, &one, 401, MPI_COMM_WORLD) : r.output;
    check("zero_ranges_cutting_rows_read_at_1_rank", !why[0], "%s", why);
    snprintf(other, sizeof other, "%s.empty.h5", path);
    why = access(other, F_OK) == 0 ? read_and_compare(other, &one, 402, MPI_COMM_WORLD) : r.output;
    check("zero_with_an_empty_range_on_rank_0_reads_at_1_rank", !why[0], "%s", why);

    r = run_mpirun(2, "--read-sharded", path, "400");  // tp 2, no ZeRO
    check("zero_checkpoint_reads_at_tp2_without_zero", child_succeeded(&r), "%s", r.output);

    r = run_mpirun(2, "--read-zero", good, NULL);
    check("checkpoint_written_by_1_rank_reads_at_dp2_zero", child_succeeded(&r), "%s", r.output);

    scratch_path(path, sizeof path, "zero_dp3.h5");
    r = run_mpirun(3, "--zero-dp3", path, NULL);
    why = access(path, F_OK) == 0 ? read_and_compare(path, &one, 500, MPI_COMM_WORLD) : r.output;
    check("zero_dp3_reads_at_1_rank", !why[0], "%s", why);
    check("zero_dp3_reads_back_its_ranges", child_succeeded(&r), "%s", r.output);

    // Partially overlapping ranges: one line from the whole job, a failed exit, no hang
    // (timeout ends the child after a minute), and no file.
    scratch_path(path, sizeof path, "overlap.h5");
    snprintf(other, sizeof other, "%s.tmp", path);
    double start = now();
    r = child_run((const char *[]){"timeout", "60", "mpirun", "--quiet", "--oversubscribe", "-np", "2", self_path,
                                   "--write-overlap", path, NULL},
                  CHILD_STDERR);
    double seconds = now() - start;
    char detail[sizeof r.output + 256] = "";
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) == 0 || WEXITSTATUS(r.status) == 124)
        snprintf(detail, sizeof detail, "child status %d after %.1f s (want a failed exit); stderr: %s", r.status,
                 seconds, r.output);
    else if (count_lines(r.output) != 1 || !strstr(r.output, "overlapping Adam moment ranges") || !strstr(r.output, path))
        snprintf(detail, sizeof detail, "expected one line naming the file and the overlap, got: %s", r.output);
    else if (access(path, F_OK) == 0 || access(other, F_OK) == 0)
        snprintf(detail, sizeof detail, "a file was created");
    check("zero_overlapping_ranges_fail_with_one_line", !detail[0], "%s", detail);
    params_free(&one);
}

static void test_damaged_files(const char *good) {
    char path[512];
    scratch_path(path, sizeof path, "truncated.h5");
    copy_file(good, path, file_size(good) / 2);
    check("truncated_checkpoint_is_invalid", !checkpoint_is_valid(path, MPI_COMM_WORLD), "%s", "reported valid");
    expect_fatal("truncated_checkpoint_read_is_fatal", "--read", path, NULL,
                 (const char *[]){path, "damaged (truncated?)", "delete it to resume from an older one", NULL});

    scratch_path(path, sizeof path, "cut_short.h5");
    copy_file(good, path, file_size(good) - 100);
    check("checkpoint_missing_its_last_bytes_is_invalid", !checkpoint_is_valid(path, MPI_COMM_WORLD), "%s", "reported valid");

    scratch_path(path, sizeof path, "garbage.h5");
    write_garbage(path, 100000);
    check("garbage_checkpoint_is_invalid", !checkpoint_is_valid(path, MPI_COMM_WORLD), "%s", "reported valid");
    expect_fatal("garbage_checkpoint_read_is_fatal", "--read", path, NULL, (const char *[]){path, "not an HDF5 file", NULL});

    scratch_path(path, sizeof path, "empty.h5");
    write_garbage(path, 0);
    expect_fatal("empty_checkpoint_read_is_fatal", "--read", path, NULL, (const char *[]){path, "is empty", NULL});

    scratch_path(path, sizeof path, "no_such_file.h5");
    check("missing_checkpoint_is_invalid", !checkpoint_is_valid(path, MPI_COMM_WORLD), "%s", "reported valid");
    expect_fatal("missing_checkpoint_read_is_fatal", "--read", path, NULL, (const char *[]){path, "does not exist", NULL});

    scratch_path(path, sizeof path, "version.h5");
    copy_file(good, path, -1);
    set_format_version(path, 99);
    check("wrong_version_checkpoint_is_invalid", !checkpoint_is_valid(path, MPI_COMM_WORLD), "%s", "reported valid");
    expect_fatal("wrong_version_checkpoint_read_is_fatal", "--read", path, NULL,
                 (const char *[]){path, "format version 99", "reads version 1", NULL});

    param_registry registry;
    build_registry(&registry, 0, 1, VARIANT_NO_WO);
    scratch_path(path, sizeof path, "missing_tensor.h5");
    write_test_checkpoint(path, &registry, 100, 0, MPI_COMM_WORLD);
    params_free(&registry);
    expect_fatal("missing_tensor_read_is_fatal", "--read", path, NULL,
                 (const char *[]){path, "no tensor /params/layers.0.mixer.wo", "h5dump -d /config", NULL});
    expect_fatal("wrong_shape_read_is_fatal", "--read", good, "wide",
                 (const char *[]){good, "/params/embed.weight", "shape [64, 16]", "expects [64, 32]", NULL});

    build_registry(&registry, 0, 1, VARIANT_FULL);
    scratch_path(path, sizeof path, "no_optimizer.h5");
    write_test_checkpoint(path, &registry, 100, 1, MPI_COMM_WORLD);
    float *params = xaligned_alloc(registry.total * sizeof(float));
    checkpoint_read(path, &registry, params, NULL, NULL, NULL, MPI_COMM_WORLD);
    const char *bad = first_difference(&registry, params, 0);
    check("checkpoint_without_optimizer_reads_params", bad == NULL, "%s differs", bad);
    free(params);
    params_free(&registry);
    expect_fatal("checkpoint_without_optimizer_cannot_resume", "--read", path, NULL, (const char *[]){path, "no /optim/m", NULL});

    scratch_path(path, sizeof path, "no_such_dir/step_00000001.h5");
    expect_fatal("write_to_missing_directory_is_fatal", "--write-sharded", path, NULL,
                 (const char *[]){path, "cannot create checkpoint", "directory exists", NULL});
}

// A writer killed while writing leaves the previous checkpoint under the final name.
static void test_killed_writer(const char *good) {
    char path[512], tmp[520];
    scratch_path(path, sizeof path, "step_00000100.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    copy_file(good, path, -1);
    pid_t pid = child_spawn((const char *[]){self_path, "--write-big", path, NULL}, 0, NULL);
    double start = now();
    long tmp_bytes = -1;
    int exited = 0, status = 0;
    // Kill once the temporary file holds some data (the ~384 MB write is then under way).
    while (now() - start < 20.0) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            exited = 1;
            break;
        }
        tmp_bytes = file_size(tmp);
        if (tmp_bytes > (8L << 20)) break;
        usleep(500);
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    int killed = !exited && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    char detail[256];
    snprintf(detail, sizeof detail, "writer %s; .tmp %s (%ld bytes when killed)",
             killed ? "killed midway" : "finished before it could be killed",
             access(tmp, F_OK) == 0 ? "left behind" : "absent", tmp_bytes);
    check("killed_writer_left_a_partial_tmp_file", killed && access(tmp, F_OK) == 0, "%s", detail);

    param_registry registry;
    build_registry(&registry, 0, 1, VARIANT_FULL);
    int valid = checkpoint_is_valid(path, MPI_COMM_WORLD);
    const char *why = valid ? read_and_compare(path, &registry, 100, MPI_COMM_WORLD) : "invalid";
    check("killed_writer_leaves_previous_checkpoint_intact", valid && !why[0], "%s", why);

    // The stale .tmp does not stop the next write.
    write_test_checkpoint(path, &registry, 101, 0, MPI_COMM_WORLD);
    why = read_and_compare(path, &registry, 101, MPI_COMM_WORLD);
    check("write_over_stale_tmp_file", !why[0] && access(tmp, F_OK) != 0, "%s", why[0] ? why : ".tmp remains");
    params_free(&registry);
}

// ---------------------------------------------------------------------------------------
// Directory helpers (collective: run at any world size)

static void test_directory(void) {
    char dir[512], path[600], expected[600];
    param_registry registry;
    build_registry(&registry, world_rank % world_size, world_size, VARIANT_FULL);

    scratch_path(dir, sizeof dir, "ckpt");
    if (world_rank == 0) mkdir(dir, 0755);
    MPI_Barrier(MPI_COMM_WORLD);
    char *latest = checkpoint_find_latest(dir, MPI_COMM_WORLD);
    check("find_latest_in_empty_directory_is_null", latest == NULL, "found %s", latest);
    free(latest);
    scratch_path(path, sizeof path, "no_such_dir");
    latest = checkpoint_find_latest(path, MPI_COMM_WORLD);
    check("find_latest_in_missing_directory_is_null", latest == NULL, "found %s", latest);
    free(latest);

    for (int step = 1; step <= 5; step++) {
        snprintf(path, sizeof path, "%s/step_%08d.h5", dir, step);
        write_test_checkpoint(path, &registry, step, 0, MPI_COMM_WORLD);
    }
    if (world_rank == 0) {  // a newer damaged file, a newer partial write, an unrelated file
        snprintf(path, sizeof path, "%s/step_%08d.h5", dir, 6);
        write_garbage(path, 5000);
        snprintf(path, sizeof path, "%s/step_%08d.h5.tmp", dir, 7);
        write_garbage(path, 5000);
        snprintf(path, sizeof path, "%s/notes.txt", dir);
        write_garbage(path, 10);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    latest = checkpoint_find_latest(dir, MPI_COMM_WORLD);
    snprintf(expected, sizeof expected, "%s/step_%08d.h5", dir, 5);
    check("find_latest_skips_damaged_and_tmp_files", latest && strcmp(latest, expected) == 0, "found %s",
          latest ? latest : "nothing");
    free(latest);

    checkpoint_prune(dir, 2, MPI_COMM_WORLD);
    int present[8] = {0};
    for (int step = 1; step <= 6; step++) {
        snprintf(path, sizeof path, "%s/step_%08d.h5", dir, step);
        present[step] = access(path, F_OK) == 0;
    }
    snprintf(path, sizeof path, "%s/step_%08d.h5.tmp", dir, 7);
    present[7] = access(path, F_OK) == 0;
    char detail[128];
    snprintf(detail, sizeof detail, "present after prune: 1:%d 2:%d 3:%d 4:%d 5:%d 6(damaged):%d 7(tmp):%d", present[1],
             present[2], present[3], present[4], present[5], present[6], present[7]);
    check("prune_keeps_newest_valid_k",
          !present[1] && !present[2] && !present[3] && present[4] && present[5] && present[6] && present[7], "%s",
          detail);
    checkpoint_prune(dir, 0, MPI_COMM_WORLD);  // keep <= 0: prune nothing
    snprintf(path, sizeof path, "%s/step_%08d.h5", dir, 4);
    check("prune_keep_zero_deletes_nothing", access(path, F_OK) == 0, "%s", "deleted");
    params_free(&registry);
}

// ---------------------------------------------------------------------------------------
// Tests under mpirun: every rank holds shard `rank` of world_size.

static void test_parallel(void) {
    char path[512];
    param_registry sharded, one;
    build_registry(&sharded, world_rank, world_size, VARIANT_FULL);
    build_registry(&one, 0, 1, VARIANT_FULL);

    scratch_path(path, sizeof path, "parallel.h5");
    write_test_checkpoint(path, &sharded, 200, 0, MPI_COMM_WORLD);
    const char *why = read_and_compare(path, &sharded, 200, MPI_COMM_WORLD);
    check("parallel_roundtrip_bit_exact", !why[0], "%s", why);
    why = read_and_compare(path, &one, 200, MPI_COMM_SELF);
    check("parallel_written_checkpoint_reads_at_1_rank", !why[0], "%s", why);

    scratch_path(path, sizeof path, "serial.h5");
    if (world_rank == 0) write_test_checkpoint(path, &one, 100, 0, MPI_COMM_SELF);
    MPI_Barrier(MPI_COMM_WORLD);
    why = read_and_compare(path, &sharded, 100, MPI_COMM_WORLD);
    check("serial_written_checkpoint_reads_at_all_ranks", !why[0], "%s", why);

    scratch_path(path, sizeof path, "replicated.h5");
    write_test_checkpoint(path, &one, 300, 0, MPI_COMM_WORLD);  // pure data parallel
    why = read_and_compare(path, &sharded, 300, MPI_COMM_WORLD);
    check("replicated_ranks_write_once_and_read_sharded", !why[0], "%s", why);

    if (world_size % 2 == 0 && world_size > 2) {  // tp = 2 x dp = world/2
        param_registry mixed;
        build_registry(&mixed, world_rank % 2, 2, VARIANT_FULL);
        scratch_path(path, sizeof path, "mixed.h5");
        write_test_checkpoint(path, &mixed, 400, 0, MPI_COMM_WORLD);
        why = read_and_compare(path, &one, 400, MPI_COMM_SELF);
        check("tp2_dp_checkpoint_reads_at_1_rank", !why[0], "%s", why);
        params_free(&mixed);
    }

    scratch_path(path, sizeof path, "garbage.h5");
    if (world_rank == 0) write_garbage(path, 100000);
    MPI_Barrier(MPI_COMM_WORLD);
    check("parallel_is_valid_rejects_garbage", !checkpoint_is_valid(path, MPI_COMM_WORLD), "%s", "reported valid");
    params_free(&sharded);
    params_free(&one);
}

// `mpirun -np ranks <self> --parallel DIR`: relays the children's PASS/FAIL lines, and
// fails when the job fails without a FAIL line or prints no PASS line at all.
static void run_parallel_suite(int ranks) {
    char count[16], dir[512];
    snprintf(count, sizeof count, "%d", ranks);
    snprintf(dir, sizeof dir, "%s/np%d", scratch, ranks);
    if (mkdir(dir, 0755) != 0) fatal("cannot create %s", dir);
    child_result r = child_run((const char *[]){"timeout", "120", "mpirun", "--oversubscribe", "-np", count, self_path,
                                                "--parallel", dir, NULL},
                               CHILD_STDOUT | CHILD_STDERR);
    int passes = 0, failures = 0;
    for (char *line = r.output, *end; *line; line = end + (*end != '\0')) {
        end = line + strcspn(line, "\n");
        int is_pass = strncmp(line, "PASS ", 5) == 0, is_fail = strncmp(line, "FAIL ", 5) == 0;
        if (is_pass || is_fail) printf("%.*s\n", (int)(end - line), line);
        passes += is_pass;
        failures += is_fail;
    }
    testing_failures += failures;
    char name[64];
    snprintf(name, sizeof name, "collective_checks_ran_at_%d_ranks", ranks);
    if (!failures)
        testing_report(child_succeeded(&r) && passes > 0, name, "mpirun status %d, %d PASS lines; output: %s", r.status,
                       passes, r.output);
}

int main(int argc, char **argv) {
    child_keep_environment();  // before MPI_Init adds to it

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (argc == 3 && strcmp(argv[1], "--parallel") == 0) {  // the collective checks, in directory argv[2]
        log_set_rank(world_rank, world_size);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        snprintf(scratch, sizeof scratch, "%s", argv[2]);
        test_parallel();
        test_directory();
        MPI_Finalize();
        return testing_exit_code();
    }
    if (argc >= 3 && strncmp(argv[1], "--", 2) == 0) {
        if (world_size > 1) log_set_rank(world_rank, world_size);
        int code = child_main(argv[1], argv[2], argc > 3 ? argv[3] : NULL);
        MPI_Finalize();
        return code;
    }
    if (world_size > 1) log_set_rank(world_rank, world_size);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    if (world_rank == 0) {
        snprintf(scratch, sizeof scratch, "/tmp/decon_test_checkpoint_XXXXXX");
        if (!mkdtemp(scratch)) fatal("cannot create a scratch directory under /tmp");
    }
    MPI_Bcast(scratch, sizeof scratch, MPI_CHAR, 0, MPI_COMM_WORLD);
    ssize_t length = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    self_path[length > 0 ? length : 0] = '\0';

    if (world_size == 1) {
        char good[512];
        scratch_path(good, sizeof good, "good.h5");
        test_roundtrip(good);
        test_decompositions(good);
        test_zero(good);
        test_damaged_files(good);
        test_killed_writer(good);
        test_directory();
        run_parallel_suite(2);
        run_parallel_suite(4);
    } else {
        test_parallel();
        test_directory();
    }

    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank == 0) nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    MPI_Finalize();
    return testing_exit_code();
}
