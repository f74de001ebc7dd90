// Drives io/tokenizer.h line by line for tests/scripts/test_tokenizer.sh, which compares
// it with sentencepiece's own spm_encode / spm_decode:
//   tokenizer_tool encode MODEL < text     one line of ids per line of text
//   tokenizer_tool decode MODEL < ids      one line of text per line of ids
//   tokenizer_tool stream MODEL < ids      the same through the streaming decoder, one push per id
//   tokenizer_tool info MODEL              vocabulary size and special ids
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "io/tokenizer.h"

// The ids of one line ("5 17 3"); fatal on anything else.
static int *parse_ids(char *line, int *count, long line_number) {
    int capacity = 16, n = 0;
    int *ids = xmalloc((size_t)capacity * sizeof(int));
    char *save = NULL;
    for (char *word = strtok_r(line, " \t", &save); word; word = strtok_r(NULL, " \t", &save)) {
        char *end = NULL;
        long id = strtol(word, &end, 10);
        if (end == word || *end != '\0' || id < -1000000000L || id > 1000000000L)
            fatal("stdin:%ld: '%s' is not a token id", line_number, word);
        ids = xgrow(ids, n, &capacity, sizeof(int), 16);
        ids[n++] = (int)id;
    }
    *count = n;
    return ids;
}

int main(int argc, char **argv) {
    if (argc != 3) fatal("usage: tokenizer_tool encode|decode|stream|info MODEL");
    const char *mode = argv[1];
    tokenizer *t = tokenizer_load(argv[2]);
    if (strcmp(mode, "info") == 0) {
        printf("vocab %d bos %d eos %d unk %d pad %d\n", tokenizer_vocab_size(t), tokenizer_bos_id(t),
               tokenizer_eos_id(t), tokenizer_unk_id(t), tokenizer_pad_id(t));
        tokenizer_free(t);
        return 0;
    }
    if (strcmp(mode, "encode") != 0 && strcmp(mode, "decode") != 0 && strcmp(mode, "stream") != 0)
        fatal("unknown mode %s: encode, decode, stream or info", mode);
    char *line = NULL;
    size_t size = 0;
    ssize_t got;
    long line_number = 0;
    while ((got = getline(&line, &size, stdin)) >= 0) {
        line_number++;
        if (got > 0 && line[got - 1] == '\n') line[--got] = '\0';
        int count = 0;
        if (strcmp(mode, "encode") == 0) {
            int *ids = tokenizer_encode(t, line, (size_t)got, &count);
            for (int i = 0; i < count; i++) printf(i ? " %d" : "%d", ids[i]);
            free(ids);
        } else {
            int *ids = parse_ids(line, &count, line_number);
            if (strcmp(mode, "decode") == 0) {
                size_t length = 0;
                char *text = tokenizer_decode(t, ids, count, &length);
                fwrite(text, 1, length, stdout);
                free(text);
            } else {
                tokenizer_stream *s = tokenizer_stream_new(t);
                size_t length = 0;
                for (int i = 0; i < count; i++) {
                    const char *piece = tokenizer_stream_push(s, ids[i], &length);
                    fwrite(piece, 1, length, stdout);
                }
                const char *rest = tokenizer_stream_finish(s, &length);
                fwrite(rest, 1, length, stdout);
                tokenizer_stream_free(s);
            }
            free(ids);
        }
        putchar('\n');
    }
    free(line);
    tokenizer_free(t);
    return 0;
}
