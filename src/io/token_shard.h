// Token shards (DESIGN.md section 9): a 64-byte header — magic "DECONTOK", uint32 version
// (1), uint32 token width in bytes (2 or 4), uint64 token count, uint32 vocab size, zero
// padding — then the tokens, little-endian. Memory-mapped read-only.
#pragma once
#include <stddef.h>
#include <stdint.h>

enum { TOKEN_SHARD_HEADER_BYTES = 64, TOKEN_SHARD_VERSION = 1 };

typedef struct {
    char path[4096];
    const unsigned char *map;   // whole file
    size_t map_bytes;
    int token_bytes;            // 2 or 4
    uint64_t count;             // tokens
    uint32_t vocab_size;        // as written by the tokenizer
} token_shard;

// Opens and validates a shard: magic, version, width, file size = header + count * width
// exactly, the shard's vocab_size <= model_vocab, and every token id < vocab_size (a
// parallel scan; fatal names the file, the first bad token and its byte offset). Every
// failure is one fatal line. model_vocab <= 0 means "the shard's own vocab_size".
void token_shard_open(token_shard *shard, const char *path, int model_vocab);
void token_shard_close(token_shard *shard);
static inline uint32_t token_shard_get(const token_shard *shard, uint64_t index) {
    const unsigned char *p = shard->map + TOKEN_SHARD_HEADER_BYTES + index * (uint64_t)shard->token_bytes;
    return shard->token_bytes == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8
                                   : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
// Writes a shard (used by tests and tools): 2-byte tokens when vocab_size <= 65536, else
// 4-byte; fatal if a token is >= vocab_size. Atomic: "<path>.tmp", fsync, rename.
void token_shard_write(const char *path, const uint32_t *tokens, uint64_t count, uint32_t vocab_size);
