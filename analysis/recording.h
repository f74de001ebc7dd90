// Reading attention recordings (format: src/io/attention_record.h, format_version 1).
// Every function reports problems as one user-facing line in `why` (file, what is wrong,
// what to do) and returns false; nothing here exits, so an MPI program can agree on the
// outcome across ranks before it stops (see decon-analyze.c).
#pragma once
#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// RECORDING_WHY holds a whole path (recording_info.path, up to 4095 bytes) and the message.
enum { RECORDING_FORMAT_VERSION = 1, RECORDING_LOGIT_STATS = 8, RECORDING_WHY = 4096 + 1024 };

// The 8 fields of logits_stats, in the order the format lists them.
extern const char *const recording_logit_stat_names[RECORDING_LOGIT_STATS];

typedef struct {
    char group[64];             // e.g. "layer_3"
    int layer, layer_id;        // 0-based, 1-based
    bool recorded;              // listed in the root's recorded_layers (else no group, no data)
    char variant[64];
    bool is_standard, has_attn, has_scores;
    char scores_kind[16];       // "pairwise" | "per_token" | "none"
    char row_sums[64];          // the row_sums attribute: "1" or the range "a..b"
    bool rows_sum_to_one;       // row_sums == "1"
    double row_sum_min, row_sum_max, entry_min;   // measured by the writer (NaN without attn)
    int bins;                   // logits_hist length (0 without scores)
} recording_layer;

typedef struct {
    int64_t step;
    double loss;                // the step's `loss` attribute (NaN when absent)
    char group[64];             // e.g. "step_100"
    recording_layer *layers;    // num_layers, index = layer (0-based)
} recording_step;

typedef struct {
    char path[4096];
    int format_version;
    char kind[128], variant[64], layout[512], layer_plan[512], dtype[16];
    int num_layers, num_heads, sequence_length;   // root attributes
    int sequences, length;      // from /tokens [K, L] (and every attn [K, H, L, L])
    int recorded_count;         // layers in recorded_layers
    int step_count;
    recording_step *steps;      // sorted by step
} recording_info;

// Opens `path` and checks everything the analysis reads: format_version, the root
// attributes, /tokens, every step group and the group of every recorded layer (root
// attribute recorded_layers) of every step, the attn dataset shapes and the logits
// datasets where has_scores = 1. The data itself is read (and found corrupt, if it is)
// only later. Layers not in recorded_layers get recorded = has_attn = false.
bool recording_scan(recording_info *info, const char *path, char *why, size_t size);
void recording_free(recording_info *info);

// The file stays open between reads; H5Fclose when done. Quiet: HDF5's own error stack
// printing is switched off (hdf5_quiet, io/hdf5_helpers.h).
hid_t recording_open(const char *path, char *why, size_t size);
// The same for any HDF5 input: `what` says what the file should be and where one is found
// ("a checkpoint of the recorded run (<run_dir>/ckpt/latest.h5)"), `redo` what to do when
// it is damaged.
hid_t recording_open_file(const char *path, const char *what, const char *redo, char *why, size_t size);

// A[sequence, head] of one step and layer as L x L doubles (row-major).
bool recording_read_attn(hid_t file, const recording_info *info, int step, int layer, int sequence, int head,
                         double *a, char *why, size_t size);

// logits_stats (8 doubles; NaN allowed: an empty histogram), and the histogram (bins
// counts as doubles, bins+1 edges; the outer edges may be -inf and +inf).
bool recording_read_logits(hid_t file, const recording_info *info, int step, int layer, double *stats,
                           double *counts, double *edges, char *why, size_t size);

// A short name for a recording: the parent directory for ".../<run>/attn.h5", else the
// file name without ".h5".
void recording_run_name(const char *path, char *name, size_t size);
