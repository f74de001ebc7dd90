// Writing a safetensors file (Hugging Face's tensor format): an unsigned 64-bit
// little-endian header length N, N bytes of JSON {"name": {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ..., "__metadata__": {...}} padded with spaces to a
// multiple of 8, then the tensors' raw little-endian bytes back to back, in the order
// given (offsets relative to the end of the header).
#pragma once
#include <stdint.h>

typedef struct {
    const char *name;
    int ndim;              // 1 or 2
    int64_t shape[2];
    const float *data;     // row-major, shape[0] * shape[1] (or shape[0]) floats
} safetensors_tensor;

// Writes the tensors (F32) and the string pairs metadata[2 i], metadata[2 i + 1] to
// "<path>.tmp", then publishes it as path (io/durable_file.h). Fatal, one line naming
// path, on any failure (the temporary file deleted, an earlier file at path intact).
void safetensors_write(const char *path, const safetensors_tensor *tensors, int count, const char *const *metadata,
                       int metadata_pairs);
