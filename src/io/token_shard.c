// Token shards: a 64-byte header, then little-endian token ids (token_shard.h).
// Opening validates everything a later read could trip over — header fields, the exact
// file size and every token id — so the training loop never meets a bad token.
#include "io/token_shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"

static const char TOKEN_SHARD_MAGIC[8] = {'D', 'E', 'C', 'O', 'N', 'T', 'O', 'K'};

// Header layout (byte offsets).
enum { OFFSET_VERSION = 8, OFFSET_WIDTH = 12, OFFSET_COUNT = 16, OFFSET_VOCAB = 24 };

static uint32_t load_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const unsigned char *p) {
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

static void store_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void store_u64(unsigned char *p, uint64_t v) {
    store_u32(p, (uint32_t)v);
    store_u32(p + 4, (uint32_t)(v >> 32));
}

// Index of the first token >= bound, or count when there is none. The parallel pass
// only finds the largest id (cheap, vectorisable); the serial search for the offending
// position runs only when the shard is bad.
static uint64_t first_token_at_or_above(const token_shard *shard, uint32_t bound) {
    uint32_t largest = 0;
    int64_t count = (int64_t)shard->count;
#pragma omp parallel for schedule(static) reduction(max : largest)
    for (int64_t i = 0; i < count; i++) {
        uint32_t id = token_shard_get(shard, (uint64_t)i);
        if (id > largest) largest = id;
    }
    if (count == 0 || largest < bound) return shard->count;
    for (uint64_t i = 0; i < shard->count; i++)
        if (token_shard_get(shard, i) >= bound) return i;
    return shard->count;
}

void token_shard_open(token_shard *shard, const char *path, int model_vocab) {
    memset(shard, 0, sizeof *shard);
    size_t path_length = strlen(path);
    if (path_length >= sizeof shard->path)
        fatal("token shard path is too long (%zu characters): %.80s...", path_length, path);
    memcpy(shard->path, path, path_length + 1);

    int fd = open(path, O_RDONLY);
    if (fd < 0)
        fatal("cannot open token shard %s: %s; build it with the corpus recipe (make corpus) or fix the path",
              path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fatal("cannot stat token shard %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        fatal("token shard %s is not a regular file; pass a shard such as data/corpus/train.bin", path);
    size_t bytes = (size_t)st.st_size;
    if (bytes < TOKEN_SHARD_HEADER_BYTES)
        fatal("token shard %s is truncated: %zu bytes, shorter than the %d-byte header; re-run the corpus recipe",
              path, bytes, TOKEN_SHARD_HEADER_BYTES);
    void *map = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) fatal("cannot map token shard %s (%zu bytes): %s", path, bytes, strerror(errno));
    close(fd);
    shard->map = map;
    shard->map_bytes = bytes;

    const unsigned char *h = shard->map;
    if (memcmp(h, TOKEN_SHARD_MAGIC, sizeof TOKEN_SHARD_MAGIC) != 0)
        fatal("%s is not a decon token shard (bad magic, expected \"DECONTOK\"); build shards with the corpus recipe",
              path);
    uint32_t version = load_u32(h + OFFSET_VERSION);
    if (version != TOKEN_SHARD_VERSION)
        fatal("token shard %s has format version %u, this build reads version %d; re-run the corpus recipe",
              path, version, TOKEN_SHARD_VERSION);
    uint32_t width = load_u32(h + OFFSET_WIDTH);
    if (width != 2 && width != 4)
        fatal("token shard %s has token width %u bytes (must be 2 or 4): the file is damaged; re-run the corpus recipe",
              path, width);
    shard->token_bytes = (int)width;
    shard->count = load_u64(h + OFFSET_COUNT);
    shard->vocab_size = load_u32(h + OFFSET_VOCAB);

    uint64_t payload = bytes - TOKEN_SHARD_HEADER_BYTES;
    if (shard->count > UINT64_MAX / width || shard->count * width != payload) {
        unsigned long long expected = shard->count > (UINT64_MAX - TOKEN_SHARD_HEADER_BYTES) / width
                                          ? UINT64_MAX
                                          : (unsigned long long)(TOKEN_SHARD_HEADER_BYTES + shard->count * width);
        fatal("token shard %s is %s: expected %llu bytes (64-byte header + %llu tokens x %u bytes) but the file has "
              "%zu bytes; re-run the corpus recipe",
              path, (unsigned long long)bytes < expected ? "truncated" : "damaged (too long)", expected,
              (unsigned long long)shard->count, width, bytes);
    }
    if (model_vocab <= 0) model_vocab = (int)(shard->vocab_size > INT32_MAX ? INT32_MAX : shard->vocab_size);
    if (shard->vocab_size > (uint32_t)model_vocab)
        fatal("token shard %s was tokenized with vocab_size %u, larger than the model's vocab_size %d; "
              "use a tokenizer with vocab_size <= %d or raise vocab_size",
              path, shard->vocab_size, model_vocab, model_vocab);

    // Every id must fit the model (the embedding lookup trusts it) and the shard's own
    // vocabulary (an id past it means the file is corrupt, not a tokenizer mismatch).
    uint64_t bad = first_token_at_or_above(shard, shard->vocab_size);
    if (bad < shard->count) {
        uint32_t id = token_shard_get(shard, bad);
        unsigned long long byte_offset = TOKEN_SHARD_HEADER_BYTES + bad * width;
        if (id >= (uint32_t)model_vocab)
            fatal("token shard %s: token %llu (byte offset %llu) has id %u >= the model's vocab_size %d; "
                  "use a tokenizer with vocab_size <= %d or raise vocab_size",
                  path, (unsigned long long)bad, byte_offset, id, model_vocab, model_vocab);
        fatal("token shard %s is damaged: token %llu (byte offset %llu) has id %u >= the shard's own vocab_size %u; "
              "re-run the corpus recipe",
              path, (unsigned long long)bad, byte_offset, id, shard->vocab_size);
    }
}

void token_shard_close(token_shard *shard) {
    if (shard->map) munmap((void *)shard->map, shard->map_bytes);
    memset(shard, 0, sizeof *shard);
}

static void write_all(FILE *f, const void *data, size_t bytes, const char *tmp) {
    if (bytes && fwrite(data, 1, bytes, f) != bytes)
        fatal("cannot write token shard %s: %s; check free disk space", tmp, strerror(errno));
}

void token_shard_write(const char *path, const uint32_t *tokens, uint64_t count, uint32_t vocab_size) {
    if (vocab_size == 0) fatal("token shard %s: vocab_size must be positive", path);
    for (uint64_t i = 0; i < count; i++)
        if (tokens[i] >= vocab_size)
            fatal("token shard %s: token %llu has id %u >= vocab_size %u; nothing was written",
                  path, (unsigned long long)i, tokens[i], vocab_size);
    int width = vocab_size <= 65536u ? 2 : 4;

    size_t tmp_len = strlen(path) + 5;
    char *tmp = xmalloc(tmp_len);
    snprintf(tmp, tmp_len, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) fatal("cannot create token shard %s: %s; check that the directory exists and is writable", tmp, strerror(errno));

    unsigned char header[TOKEN_SHARD_HEADER_BYTES] = {0};
    memcpy(header, TOKEN_SHARD_MAGIC, sizeof TOKEN_SHARD_MAGIC);
    store_u32(header + OFFSET_VERSION, TOKEN_SHARD_VERSION);
    store_u32(header + OFFSET_WIDTH, (uint32_t)width);
    store_u64(header + OFFSET_COUNT, count);
    store_u32(header + OFFSET_VOCAB, vocab_size);
    write_all(f, header, sizeof header, tmp);

    // Encode in blocks so the file is little-endian whatever the host.
    enum { BLOCK = 1 << 16 };
    unsigned char *block = xmalloc((size_t)BLOCK * 4);
    for (uint64_t start = 0; start < count; start += BLOCK) {
        size_t n = (size_t)(count - start < BLOCK ? count - start : BLOCK);
        for (size_t i = 0; i < n; i++) {
            uint32_t id = tokens[start + i];
            unsigned char *p = block + i * (size_t)width;
            p[0] = (unsigned char)id;
            p[1] = (unsigned char)(id >> 8);
            if (width == 4) {
                p[2] = (unsigned char)(id >> 16);
                p[3] = (unsigned char)(id >> 24);
            }
        }
        write_all(f, block, n * (size_t)width, tmp);
    }
    free(block);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        fatal("cannot write token shard %s: %s; check free disk space", tmp, strerror(errno));
    if (fclose(f) != 0) fatal("cannot write token shard %s: %s; check free disk space", tmp, strerror(errno));
    if (rename(tmp, path) != 0) fatal("cannot rename %s to %s: %s", tmp, path, strerror(errno));
    free(tmp);
}
