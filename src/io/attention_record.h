// Attention recordings (DESIGN.md sections 9, 10): per-layer attention matrices of K fixed
// held-out sequences at chosen steps, in one self-describing HDF5 file per run
// (<run_dir>/attn.h5), written collectively through parallel HDF5.
//
// Layout (format_version 1). Every dataset and group carries a `description` attribute.
// Strings are fixed-length ASCII (h5py returns bytes); numbers little-endian.
//   /                       attrs: format_version (int32), kind = "decon attention recording",
//                                  writer ("decon"), variant, layout, layer_plan (one letter per
//                                  layer), num_layers, num_heads, num_key_value_heads, head_dim,
//                                  sequence_length (L), sequences (K), dtype ("float32"|"float16"),
//                                  recorded_layers (int32 [n], 0-based), source (token shard of
//                                  the sequences), histogram_bins (int32)
//   /config                 the resolved config text of the run that created the file
//   /tokens                 int32 [K, L]: the recorded sequences (input tokens). Sequence k is
//                           window k of the source shard: tokens [k L, (k+1) L) (unshuffled,
//                           so fixed across the run, across runs and across seeds)
//   /step_<N>/              attrs: step (int64), loss (float64: mean next-token cross entropy
//                           of the K sequences, nats), writer ("decon-train" | "decon-eval").
//                           N is not zero-padded (step_0, step_100, ...)
//   /step_<N>/layer_<l>/    l 0-based as in parameter names; one group per recorded layer;
//                           attrs: layer (0-based), layer_id (1-based), variant, is_standard,
//                           step, has_attn, has_scores (0|1), scores_kind ("pairwise" |
//                           "per_token" | "none"), row_sums ("1" when every row sums to 1
//                           within 1e-3 with no negative entry | "a..b" the range | "none"
//                           without attn), row_sum_min, row_sum_max, entry_min (float64,
//                           measured on the recorded A before any float16 rounding, over the
//                           causal rows of every sequence and head; NaN without attn)
//   /step_<N>/layer_<l>/attn          [K, H, L, L] float32 or IEEE float16, A[k, h, i, t] the
//                                     weight of key t in query i's output; chunk [1,1,L,L],
//                                     shuffle+deflate(1); zeros above the diagonal (causal), so
//                                     the unused triangle compresses to almost nothing.
//                                     float16 = IEEE binary16 rounded to nearest even (h5py:
//                                     numpy float16). attr dims. Absent when has_attn = 0 (mlp).
//   /step_<N>/layer_<l>/logits_hist   int64 [bins] histogram of the pre-softmax scores
//                                     (has_scores = 1 only): "pairwise" = every causal pair
//                                     (i, t <= i) of every sequence and head, K H L (L+1) / 2
//                                     values; "per_token" (nonapx's g_t) = every token once,
//                                     K H L values. Non-finite scores are not binned (attr
//                                     nonfinite). attrs: count (int64, values binned), nonfinite
//   /step_<N>/layer_<l>/logits_edges  float64 [bins+1] bin edges, ascending, bins [e_j, e_j+1)
//                                     (the last closed): -inf, then symmetric log-spaced
//                                     magnitudes 1e-3 .. 1e4 at 20 bins per decade on each
//                                     side of one central bin [-1e-3, 1e-3), then +inf; so bin
//                                     0 is the underflow (< -1e4), the last the overflow (>= 1e4);
//                                     283 bins; the same edges in every layer, step and file
//   /step_<N>/layer_<l>/logits_stats  float64 [8]: min, max, mean, p1, p50, p99,
//                                     count |x| > 10, count |x| > 1000 (attr `fields` names them;
//                                     attr `std`). min, max, mean and the counts are exact; the
//                                     percentiles are interpolated linearly inside their bin
//                                     (a bin spans 12% of |x|), bounded by min and max
//                                     (core/histogram.h)
// A mixer without a materialised attention matrix (mlp) gets a layer group with attrs
// only (has_attn = 0) so the file still lists every recorded layer.
//
// Writing. One record (one step) = open, begin/write/end every recorded layer in order,
// close; every call collective over comm. Each rank writes the hyperslab of its heads
// [head_start, head_start + head_count) of each [1, H, L, L] sequence slab; a rank whose
// heads another rank writes (data-parallel replicas) passes writes = false. The record is
// written into a copy, <path>.tmp, which replaces path (fsync + rename) only when complete:
// a crash never damages the steps recorded before. A step group that already exists (a
// resumed run recording a step again) is replaced.
#pragma once
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

enum {
    ATTENTION_RECORD_FORMAT_VERSION = 1,
    SCORE_BINS_PER_DECADE = 20,
    SCORE_MAGNITUDE_BINS = 7 * SCORE_BINS_PER_DECADE,   // 1e-3 .. 1e4
    SCORE_BINS = 2 * SCORE_MAGNITUDE_BINS + 3,          // + central, underflow, overflow
    SCORE_STATS = 8,
};

// ---- pre-softmax score histograms ------------------------------------------------------
typedef struct {
    int64_t counts[SCORE_BINS];
    int64_t count, nonfinite, above_10, above_1000;   // count = values binned
    double min, max, sum, sum_squares;
} score_histogram;

void score_histogram_clear(score_histogram *h);
// edges[SCORE_BINS + 1], as described above.
void score_histogram_edges(double *edges);
// Adds scores[heads, L, L] of one sequence: the causal triangle (t <= i), or with
// per_token only the diagonal (one score per token, repeated along the rows).
void score_histogram_add(score_histogram *h, const float *scores, int heads, int seq_len, bool per_token);
// Sums the histograms of every rank of comm (every rank calls it).
void score_histogram_allreduce(score_histogram *h, MPI_Comm comm);
// min, max, mean, p1, p50, p99, count |x| > 10, count |x| > 1000 (NaN when empty).
void score_histogram_stats(const score_histogram *h, double *stats);

// ---- the file ----------------------------------------------------------------------------
typedef struct {
    const char *writer;            // "decon-train" | "decon-eval" (the step group's attr)
    const char *variant, *layout, *layer_plan;
    const char *config_text;       // /config (written when the file is created)
    const char *source;            // token shard the sequences come from
    int num_layers, num_heads, num_kv_heads, head_dim, sequence_length, sequences;
    bool float16;
    const bool *layers;            // [num_layers]: recorded
    const int *tokens;             // [sequences, sequence_length]
} attention_record_info;

typedef struct {
    const char *variant;
    bool is_standard, has_attn, has_scores, scores_per_token;
} attention_record_layer;

// Measured after the layer's sequences are written (identical on every rank).
typedef struct {
    double row_sum_min, row_sum_max, entry_min;   // NaN without attn
    const score_histogram *scores;                // NULL without scores
} attention_record_layer_end;

typedef struct attention_record attention_record;

// Fails now (fatal, one line) when path exists but is not a recording this build can append
// info's record to (another format, model shape, dtype, layer list or token sequences), or
// when it does not exist and cannot be created. Collective.
void attention_record_probe(const char *path, const attention_record_info *info, MPI_Comm comm);
// Starts recording step `step` into path: creates the file, or appends to it after
// checking that it records the same model shape, dtype, layers and tokens (fatal, one line,
// naming the file, otherwise). Collective; info identical on every rank.
attention_record *attention_record_open(const char *path, const attention_record_info *info, int64_t step,
                                        MPI_Comm comm);
// Creates /step_<N>/layer_<layer> (layers in increasing order, every recorded one).
void attention_record_begin_layer(attention_record *r, int layer, const attention_record_layer *desc);
// Writes A of one sequence for this rank's heads: probs[head_count, L, L] float32 (rounded
// to nearest-even float16 when the file holds float16). Collective.
void attention_record_write_attn(attention_record *r, int layer, int sequence, int head_start, int head_count,
                                 const float *probs, bool writes);
void attention_record_end_layer(attention_record *r, int layer, const attention_record_layer_end *end);
// Writes the step's attributes, flushes, closes and publishes the file; returns its size
// in bytes. Collective.
int64_t attention_record_close(attention_record *r, double loss);

// IEEE binary16 bits of x, rounded to nearest even (overflow to inf, NaN kept), and back.
uint16_t attention_record_half_bits(float x);
float attention_record_half_value(uint16_t bits);
