// Token shards, the data loader and the metrics log. Failures that must end the program
// (damaged shards, bad vocab, unwritable logs) run in a child process whose stderr comes
// back through a pipe: the test asserts a non-zero exit and exactly one line naming the file.
#include <cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_process.h"
#include "core/errors.h"
#include "core/rng.h"
#include "io/data_loader.h"
#include "io/metrics_log.h"
#include "io/token_shard.h"
#include "testing.h"

static char scratch[256];

static void scratch_path(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", scratch, name); }

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

// ---------------------------------------------------------------------------------------
// Running a failing case in a child: fork, then exec this program in --child mode (a
// fresh process: forking alone would inherit an OpenMP runtime that cannot run there).

static child_result run_child(const char *const *args) {
    const char *argv[8] = {"/proc/self/exe", "--child"};
    for (int i = 0; args[i] && i < 5; i++) argv[2 + i] = args[i];
    return child_run(argv, CHILD_STDERR);
}

static int count_lines(const char *text) {
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    return lines;
}

// Expects the child case to fail with one line on stderr that contains every needle.
static void expect_fatal(const char *name, const char *const *args, const char *const *needles) {
    child_result r = run_child(args);
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) == 0) {
        testing_report(0, name, "child did not exit with an error (status %d); stderr: %s", r.status, r.output);
        return;
    }
    size_t length = strlen(r.output);
    if (count_lines(r.output) != 1 || length == 0 || r.output[length - 1] != '\n') {
        testing_report(0, name, "expected exactly one line on stderr, got: %s", r.output);
        return;
    }
    for (const char *const *needle = needles; *needle; needle++) {
        if (!strstr(r.output, *needle)) {
            r.output[length - 1] = '\0';
            testing_report(0, name, "message lacks \"%s\": %s", *needle, r.output);
            return;
        }
    }
    testing_report(1, name, "");
}

// The cases run by the child: each is expected to end in fatal().
static void child_main(int argc, char **argv) {
    if (argc < 2) fatal("--child needs a case and a path");
    const char *what = argv[0], *path = argv[1];
    int number = argc > 2 ? atoi(argv[2]) : 0;
    if (strcmp(what, "open-shard") == 0) {
        token_shard shard;
        token_shard_open(&shard, path, number);
    } else if (strcmp(what, "open-loader") == 0) {
        data_loader loader;
        data_loader_open(&loader, path, number, 1, 4096);
    } else if (strcmp(what, "seek") == 0) {
        data_loader loader;
        data_loader_open(&loader, path, 8, 1, 4096);
        data_loader_seek(&loader, (data_position){0, (uint64_t)number});
    } else if (strcmp(what, "open-log") == 0) {
        metrics_log log;
        metrics_log_open(&log, path);
    } else {
        fatal("unknown child case %s", what);
    }
}

// ---------------------------------------------------------------------------------------
// Token shards

static void write_raw(const char *path, const void *data, size_t bytes) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) fatal("cannot write %s", path);
}

// The file's bytes plus a terminating NUL, so text files can be parsed in place.
static unsigned char *read_raw(const char *path, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) fatal("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    *bytes = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = xmalloc(*bytes + 1);
    if (fread(data, 1, *bytes, f) != *bytes) fatal("cannot read %s", path);
    data[*bytes] = '\0';
    fclose(f);
    return data;
}

static void test_shard_roundtrip(uint32_t vocab, int expected_width, const char *name) {
    char path[512], tmp[520];
    scratch_path(path, sizeof path, "roundtrip.bin");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    enum { COUNT = 10007 };
    uint32_t *tokens = xmalloc(COUNT * sizeof *tokens);
    for (int i = 0; i < COUNT; i++) tokens[i] = (uint32_t)(rng_mix(7, vocab, (uint64_t)i) % vocab);
    tokens[0] = vocab - 1;  // the extremes of the range
    tokens[1] = 0;
    token_shard_write(path, tokens, COUNT, vocab);
    token_shard shard;
    token_shard_open(&shard, path, (int)vocab);
    int same = 1;
    for (uint64_t i = 0; i < COUNT; i++) same = same && token_shard_get(&shard, i) == tokens[i];
    size_t file_bytes = shard.map_bytes;
    testing_report(same && shard.token_bytes == expected_width && shard.count == COUNT && shard.vocab_size == vocab &&
                       file_bytes == TOKEN_SHARD_HEADER_BYTES + (size_t)COUNT * (size_t)expected_width &&
                       access(tmp, F_OK) != 0,
                   name, "width %d (want %d), count %llu, vocab %u, bytes %zu, tokens %s", shard.token_bytes,
                   expected_width, (unsigned long long)shard.count, shard.vocab_size, file_bytes,
                   same ? "equal" : "differ");
    token_shard_close(&shard);
    free(tokens);
}

// A valid shard of `count` tokens i % vocab, returned as bytes for patching.
static unsigned char *make_shard(const char *path, uint64_t count, uint32_t vocab, size_t *bytes) {
    uint32_t *tokens = xmalloc(count * sizeof *tokens);
    for (uint64_t i = 0; i < count; i++) tokens[i] = (uint32_t)(i % vocab);
    token_shard_write(path, tokens, count, vocab);
    free(tokens);
    return read_raw(path, bytes);
}

static void test_shard_failures(void) {
    char path[512], number[64], number2[64];
    size_t bytes;

    scratch_path(path, sizeof path, "truncated.bin");
    unsigned char *data = make_shard(path, 1000, 500, &bytes);  // 64 + 2000 bytes
    write_raw(path, data, bytes - 3);
    snprintf(number, sizeof number, "expected %zu bytes", bytes);
    snprintf(number2, sizeof number2, "has %zu bytes", bytes - 3);
    expect_fatal("shard_truncated_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "truncated", number, number2, "re-run the corpus recipe", NULL});

    scratch_path(path, sizeof path, "too_long.bin");
    unsigned char *longer = xmalloc(bytes + 1);
    memcpy(longer, data, bytes);
    longer[bytes] = 0;
    write_raw(path, longer, bytes + 1);
    free(longer);
    expect_fatal("shard_too_long_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "damaged", "re-run the corpus recipe", NULL});

    scratch_path(path, sizeof path, "big_vocab.bin");
    write_raw(path, data, bytes);
    expect_fatal("shard_vocab_above_model_is_fatal", (const char *[]){"open-shard", path, "400", NULL},
                 (const char *[]){path, "vocab_size 500", "use a tokenizer with vocab_size <= 400 or raise vocab_size", NULL});

    // Token 123 patched to 700 (header vocab 500, model vocab 600): the scan names it.
    scratch_path(path, sizeof path, "bad_token.bin");
    data[64 + 2 * 123] = 700 & 0xff;
    data[64 + 2 * 123 + 1] = 700 >> 8;
    write_raw(path, data, bytes);
    expect_fatal("shard_token_above_model_vocab_is_fatal", (const char *[]){"open-shard", path, "600", NULL},
                 (const char *[]){path, "token 123 ", "byte offset 310", "id 700", "vocab_size <= 600", NULL});
    // 550: fits the model but not the shard's own vocabulary, so the file is corrupt.
    data[64 + 2 * 123] = 550 & 0xff;
    data[64 + 2 * 123 + 1] = 550 >> 8;
    write_raw(path, data, bytes);
    expect_fatal("shard_token_above_own_vocab_is_fatal", (const char *[]){"open-shard", path, "600", NULL},
                 (const char *[]){path, "damaged", "id 550", NULL});
    data[64 + 2 * 123] = 123;
    data[64 + 2 * 123 + 1] = 0;

    scratch_path(path, sizeof path, "bad_magic.bin");
    data[0] = 'X';
    write_raw(path, data, bytes);
    expect_fatal("shard_bad_magic_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "not a decon token shard", NULL});
    data[0] = 'D';

    scratch_path(path, sizeof path, "bad_width.bin");
    data[12] = 3;
    write_raw(path, data, bytes);
    expect_fatal("shard_bad_width_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "token width 3", NULL});
    data[12] = 2;

    scratch_path(path, sizeof path, "bad_version.bin");
    data[8] = 9;
    write_raw(path, data, bytes);
    expect_fatal("shard_bad_version_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "version 9", NULL});
    data[8] = 1;

    scratch_path(path, sizeof path, "header_only.bin");
    write_raw(path, data, 20);
    expect_fatal("shard_shorter_than_header_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "truncated", NULL});

    scratch_path(path, sizeof path, "missing.bin");
    expect_fatal("shard_missing_is_fatal", (const char *[]){"open-shard", path, "500", NULL},
                 (const char *[]){path, "No such file", NULL});
    free(data);
}

// ---------------------------------------------------------------------------------------
// Data loader: token i of the test shard is i, so a window's id is inputs[0] / seq_len.

enum { SEQ_LEN = 8, WINDOWS = 37, SHARD_TOKENS = SEQ_LEN * WINDOWS + 1 + 5 };

static void make_counting_shard(const char *path) {
    uint32_t tokens[SHARD_TOKENS];
    for (uint32_t i = 0; i < SHARD_TOKENS; i++) tokens[i] = i;
    token_shard_write(path, tokens, SHARD_TOKENS, 4096);
}

// Draws `steps` batches of `sequences`; writes each window id into ids (steps*sequences)
// and returns false if a window's tokens are not the consecutive run they should be.
static int draw(data_loader *loader, int steps, int sequences, int rank, int rank_count, uint64_t *ids) {
    int *inputs = xmalloc((size_t)sequences * SEQ_LEN * sizeof(int));
    int *targets = xmalloc((size_t)sequences * SEQ_LEN * sizeof(int));
    int ok = 1;
    for (int step = 0; step < steps; step++) {
        data_loader_next(loader, inputs, targets, sequences, rank, rank_count);
        for (int s = 0; s < sequences; s++) {
            const int *in = inputs + (size_t)s * SEQ_LEN, *out = targets + (size_t)s * SEQ_LEN;
            ok = ok && in[0] % SEQ_LEN == 0;
            for (int t = 0; t < SEQ_LEN; t++) ok = ok && in[t] == in[0] + t && out[t] == in[t] + 1;
            ids[step * sequences + s] = (uint64_t)in[0] / SEQ_LEN;
        }
    }
    free(inputs);
    free(targets);
    return ok;
}

static void test_data_loader(void) {
    char path[512];
    scratch_path(path, sizeof path, "counting.bin");
    make_counting_shard(path);
    enum { EPOCHS = 4, TOTAL = WINDOWS * EPOCHS };
    data_loader a, b;
    uint64_t ids_a[TOTAL], ids_b[TOTAL];

    data_loader_open(&a, path, SEQ_LEN, 42, 4096);
    data_loader_open(&b, path, SEQ_LEN, 42, 4096);
    int windows_ok = draw(&a, TOTAL, 1, 0, 1, ids_a) & draw(&b, TOTAL, 1, 0, 1, ids_b);
    testing_report(a.window_count == WINDOWS && windows_ok, "loader_windows_are_contiguous_input_target_pairs",
                   "window_count %llu (want %d), windows %s", (unsigned long long)a.window_count, WINDOWS,
                   windows_ok ? "ok" : "wrong");
    testing_report(memcmp(ids_a, ids_b, sizeof ids_a) == 0, "loader_same_seed_same_batches", "orders differ");

    int each_once = 1;
    for (int e = 0; e < EPOCHS; e++) {
        int seen[WINDOWS] = {0};
        for (int i = 0; i < WINDOWS; i++) seen[ids_a[e * WINDOWS + i]]++;
        for (int w = 0; w < WINDOWS; w++) each_once = each_once && seen[w] == 1;
    }
    testing_report(each_once, "loader_every_window_once_per_epoch", "some window missed or repeated");
    testing_report(memcmp(ids_a, ids_a + WINDOWS, WINDOWS * sizeof *ids_a) != 0 &&
                       memcmp(ids_a + WINDOWS, ids_a + (size_t)2 * WINDOWS, WINDOWS * sizeof *ids_a) != 0,
                   "loader_epochs_have_different_orders", "two epochs share an order");
    int shuffled = 0;
    for (int i = 0; i < WINDOWS; i++) shuffled += ids_a[i] != (uint64_t)i;
    testing_report(shuffled > WINDOWS / 2, "loader_order_is_shuffled", "only %d of %d windows moved", shuffled, WINDOWS);
    testing_report(a.position.epoch == EPOCHS && a.position.index == 0, "loader_position_counts_epochs",
                   "position (%llu, %llu)", (unsigned long long)a.position.epoch, (unsigned long long)a.position.index);
    data_loader_close(&b);

    data_loader_open(&b, path, SEQ_LEN, 43, 4096);
    draw(&b, WINDOWS, 1, 0, 1, ids_b);
    testing_report(memcmp(ids_a, ids_b, WINDOWS * sizeof *ids_a) != 0, "loader_seed_changes_order", "same order");
    data_loader_close(&b);
    data_loader_close(&a);

    // Resume: seek to a saved position (mid-epoch, batches that straddle epochs).
    enum { SEQS = 5, BEFORE = 11, AFTER = 40 };
    uint64_t first[AFTER * SEQS], second[AFTER * SEQS], skip[BEFORE * SEQS];
    data_loader_open(&a, path, SEQ_LEN, 7, 4096);
    draw(&a, BEFORE, SEQS, 0, 1, skip);
    data_position saved = a.position;
    draw(&a, AFTER, SEQS, 0, 1, first);
    data_loader_open(&b, path, SEQ_LEN, 7, 4096);
    data_loader_seek(&b, saved);
    draw(&b, AFTER, SEQS, 0, 1, second);
    testing_report(saved.epoch == 1 && memcmp(first, second, sizeof first) == 0 &&
                       a.position.epoch == b.position.epoch && a.position.index == b.position.index,
                   "loader_seek_reproduces_continuation", "saved (%llu, %llu); continuations %s",
                   (unsigned long long)saved.epoch, (unsigned long long)saved.index,
                   memcmp(first, second, sizeof first) ? "differ" : "equal");
    data_loader_close(&a);
    data_loader_close(&b);

    // Two data-parallel ranks with s sequences each = one rank with 2s.
    enum { S = 3, STEPS = 30 };
    data_loader r0, r1, one;
    data_loader_open(&r0, path, SEQ_LEN, 9, 4096);
    data_loader_open(&r1, path, SEQ_LEN, 9, 4096);
    data_loader_open(&one, path, SEQ_LEN, 9, 4096);
    int same = 1;
    for (int step = 0; step < STEPS; step++) {
        uint64_t ids0[S], ids1[S], ids[2 * S];
        draw(&r0, 1, S, 0, 2, ids0);
        draw(&r1, 1, S, 1, 2, ids1);
        draw(&one, 1, 2 * S, 0, 1, ids);
        same = same && memcmp(ids0, ids, sizeof ids0) == 0 && memcmp(ids1, ids + S, sizeof ids1) == 0 &&
               r0.position.index == one.position.index && r1.position.index == one.position.index &&
               r0.position.epoch == one.position.epoch && r1.position.epoch == one.position.epoch;
    }
    testing_report(same && one.position.epoch >= 2, "loader_two_ranks_equal_one_rank_with_twice_the_batch",
                   "ranks' batches differ from the single rank's (epoch reached %llu)",
                   (unsigned long long)one.position.epoch);
    data_loader_close(&r0);
    data_loader_close(&r1);
    data_loader_close(&one);
}

static void test_data_loader_failures(void) {
    char path[512];
    scratch_path(path, sizeof path, "counting.bin");
    char number[32];
    snprintf(number, sizeof number, "%d", SHARD_TOKENS);
    expect_fatal("loader_shard_shorter_than_a_window_is_fatal", (const char *[]){"open-loader", path, number, NULL},
                 (const char *[]){path, "fewer than one window", NULL});
    snprintf(number, sizeof number, "%d", WINDOWS);
    expect_fatal("loader_seek_past_the_shard_is_fatal", (const char *[]){"seek", path, number, NULL},
                 (const char *[]){path, "past the 37 windows", NULL});
}

// ---------------------------------------------------------------------------------------
// Metrics log

static void test_metrics_log(void) {
    char path[512];
    scratch_path(path, sizeof path, "metrics.jsonl");
    metrics_log log;
    metrics_log_open(&log, path);
    metrics_log_write(&log, "train", "step", 1.0, "loss", 2.5, "lr", 4e-4, "tokens_seen", 1e12, NULL);
    metrics_log_write(&log, "train", "step", 2.0, "loss", 0.1 + 0.2, "grad_norm", -0.0, NULL);
    metrics_log_close(&log);
    metrics_log_open(&log, path);  // appends
    metrics_log_write(&log, "eval", "step", 2.0, "ppl", NAN, NULL);
    metrics_log_close(&log);

    size_t bytes;
    char *text = (char *)read_raw(path, &bytes);
    int lines = 0, parsed = 1;
    double values[3][4] = {{0}};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
        cJSON *object = cJSON_Parse(line);
        if (!object || lines >= 3) {
            parsed = 0;
            cJSON_Delete(object);
            continue;
        }
        const char *kinds[3] = {"train", "train", "eval"};
        const char *keys[3][4] = {{"step", "loss", "lr", "tokens_seen"}, {"step", "loss", "grad_norm", NULL},
                                  {"step", NULL, NULL, NULL}};
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(object, "kind");
        parsed = parsed && cJSON_IsString(kind) && strcmp(kind->valuestring, kinds[lines]) == 0;
        for (int k = 0; k < 4 && keys[lines][k]; k++) {
            const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, keys[lines][k]);
            parsed = parsed && cJSON_IsNumber(item);
            if (item) values[lines][k] = item->valuedouble;
        }
        if (lines == 2) parsed = parsed && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(object, "ppl"));
        cJSON_Delete(object);
    }
    free(text);
    text = (char *)read_raw(path, &bytes);
    testing_report(lines == 3 && parsed, "metrics_lines_parse_as_json", "%d lines, parsed %d", lines, parsed);
    testing_report(values[0][0] == 1.0 && values[0][1] == 2.5 && values[0][2] == 4e-4 && values[0][3] == 1e12 &&
                       values[1][1] == 0.1 + 0.2 && values[2][0] == 2.0,
                   "metrics_values_round_trip", "read back %g %g %g %g %.17g", values[0][0], values[0][1], values[0][2],
                   values[0][3], values[1][1]);
    testing_report(strstr(text, "\"step\":1,") && strstr(text, "\"tokens_seen\":1000000000000}") &&
                       strstr(text, "\"grad_norm\":0}") && !strstr(text, "1.0"),
                   "metrics_integers_have_no_fraction", "text: %s", text);
    free(text);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--child") == 0) {
        child_main(argc - 2, argv + 2);
        return 0;  // no fatal: the parent reports the failure
    }
    snprintf(scratch, sizeof scratch, "/tmp/decon_test_io_XXXXXX");
    if (!mkdtemp(scratch)) fatal("cannot create a scratch directory under /tmp");

    test_shard_roundtrip(1000, 2, "shard_roundtrip_2_byte_tokens");
    test_shard_roundtrip(65536, 2, "shard_roundtrip_2_byte_tokens_full_range");
    test_shard_roundtrip(100000, 4, "shard_roundtrip_4_byte_tokens");
    test_shard_failures();
    test_data_loader();
    test_data_loader_failures();
    test_metrics_log();
    char path[512];
    scratch_path(path, sizeof path, "no_such_dir/metrics.jsonl");
    expect_fatal("metrics_unwritable_path_is_fatal", (const char *[]){"open-log", path, NULL},
                 (const char *[]){path, "cannot open metrics log", NULL});

    nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return testing_exit_code();
}
