// libFuzzer harness: attention recordings, read as decon-analyze reads them
// (analysis/recording.c: recording_scan, then A of the first and last sequence and head and
// the score histograms of every recorded layer of every step, into buffers sized as
// decon-analyze sizes them) and as decon-train --resume checks an existing one before
// appending to it (io/attention_record_checks.c: attention_record_probe, against the setup
// of the seeds that tests/fuzz/make_seeds.sh records from checkpoint_model.ini).
#include <stdlib.h>

#include "analysis/recording.h"
#include "fuzz/fuzz_support.h"
#include "io/attention_record.h"

// The seeds' setup (checkpoint_model.ini, one recorded sequence of 8 tokens, both layers).
enum { LAYERS = 2, HEADS = 2, KV_HEADS = 1, HEAD_DIM = 4, LENGTH = 8, SEQUENCES = 1 };
// Harness memory bound: A is L x L doubles; longer recordings are scanned but not read.
enum { MAX_READ_LENGTH = 1024, MAX_READ_BINS = 1 << 20 };

static const char *path;

static void read_like_analyze(void *arg) {
    (void)arg;
    recording_info info;
    char why[RECORDING_WHY];
    if (!recording_scan(&info, path, why, sizeof why)) return;
    hid_t file = recording_open(path, why, sizeof why);
    for (int s = 0; file >= 0 && s < info.step_count; s++)
        for (int l = 0; l < info.num_layers; l++) {
            const recording_layer *layer = &info.steps[s].layers[l];
            if (layer->has_attn && info.length <= MAX_READ_LENGTH) {
                double *a = malloc((size_t)info.length * (size_t)info.length * sizeof *a);
                (void)recording_read_attn(file, &info, s, l, 0, 0, a, why, sizeof why);
                (void)recording_read_attn(file, &info, s, l, info.sequences - 1, info.num_heads - 1, a, why, sizeof why);
                free(a);
            }
            if (layer->has_scores && layer->bins <= MAX_READ_BINS) {
                double stats[RECORDING_LOGIT_STATS];
                double *counts = malloc(((size_t)layer->bins + 1) * sizeof *counts);
                double *edges = malloc(((size_t)layer->bins + 1) * sizeof *edges);
                (void)recording_read_logits(file, &info, s, l, stats, counts, edges, why, sizeof why);
                free(counts);
                free(edges);
            }
        }
    if (file >= 0) H5Fclose(file);
    recording_free(&info);
}

static void probe_like_resume(void *arg) {
    (void)arg;
    static const bool layers[LAYERS] = {true, true};
    static int tokens[SEQUENCES * LENGTH];
    attention_record_info info = {
        .writer = "decon-train", .variant = "mlp", .layout = "hybrid:even", .layer_plan = "MS",
        .config_text = "", .source = "val.bin", .num_layers = LAYERS, .num_heads = HEADS,
        .num_kv_heads = KV_HEADS, .head_dim = HEAD_DIM, .sequence_length = LENGTH, .sequences = SEQUENCES,
        .float16 = false, .layers = layers, .tokens = tokens};
    attention_record_probe(path, &info, MPI_COMM_WORLD);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_init_mpi(argc, argv);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    path = fuzz_write_input(data, size, ".h5");
    fuzz_run_stage(read_like_analyze, NULL);
    fuzz_run_stage(probe_like_resume, NULL);
    return 0;
}
