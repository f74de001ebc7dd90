// Attention recordings of a model (DESIGN.md 9; the file format is io/attention_record.h):
// K fixed held-out sequences — windows 0..K-1 of a token shard, unshuffled — run through a
// forward-only pass, and for every recorded layer the mixer's materialised A of each
// sequence (attention_matrix) and a histogram of its pre-softmax scores (attention_scores).
// The forward overwrites the model's saved activations and nothing else (no parameter,
// gradient, optimizer or data-loader state), so the trainer records between steps
// without changing the training trajectory. Used by decon-train ([io] record_*) and
// decon-eval (--record).
#pragma once
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "model/model.h"

typedef struct {
    char path[CONFIG_STRING_MAX + 16];
    char source[CONFIG_STRING_MAX];
    const char *writer;         // "decon-train" | "decon-eval"
    int sequences, seq_len;
    bool float16;
    bool *layers;               // [num_hidden_layers]
    int *inputs, *targets;      // [sequences, seq_len]
    float *probs, *scores;      // [local heads, seq_len, seq_len]
} attention_recorder;

typedef struct {
    double seconds, loss;       // wall time of the record; mean loss of the sequences (nats)
    int64_t bytes;              // size of the file afterwards
    int layers;                 // layers recorded
} recording_result;

// Reads the K = sequences windows of seq_len + 1 tokens from shard and parses layers
// ("all" | "1,3") and dtype ("float32" | "float16"); fatal, one line naming origin, on a
// bad value, a shard too short or a file that cannot be written (checked now, collective
// over comm). The recorded length is the config's sequence_length.
void recorder_init(attention_recorder *r, const decon_config *config, const char *path, const char *shard,
                   int sequences, const char *layers, const char *dtype, const char *writer, const char *origin,
                   MPI_Comm comm);
void recorder_free(attention_recorder *r);
// Records step `step` (collective over comm; every rank holds the model's shard).
recording_result recorder_record(attention_recorder *r, model *m, int64_t step, const char *config_text,
                                 MPI_Comm comm);
