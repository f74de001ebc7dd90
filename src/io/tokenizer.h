// The corpus's sentencepiece model from C: a thin wrapper over Debian's libsentencepiece
// (src/io/tokenizer.cpp, C++). It is not in libdecon.a: a program that uses it links
// $(TOKENIZER_OBJ) and $(TOKENIZER_LIBS) (Makefile). Ids are those of the token shards:
// text is encoded exactly as input/corpus encodes a line (no BOS/EOS added), and decoding
// equals spm_decode. Every failure is one fatal line "tokenizer <path>: ...".
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tokenizer tokenizer;
typedef struct tokenizer_stream tokenizer_stream;

// Loads a sentencepiece model file (fatal when it is missing, unreadable or not a model).
tokenizer *tokenizer_load(const char *path);
void tokenizer_free(tokenizer *t);
const char *tokenizer_path(const tokenizer *t);
int tokenizer_vocab_size(const tokenizer *t);   // pieces: ids are 0 .. vocab_size - 1
// Special ids, -1 when the model has none (the corpus's: pad 0, unk 1, bos 2, eos 3).
int tokenizer_bos_id(const tokenizer *t);
int tokenizer_eos_id(const tokenizer *t);
int tokenizer_unk_id(const tokenizer *t);
int tokenizer_pad_id(const tokenizer *t);

// UTF-8 text of `length` bytes -> ids (malloc'd, *count of them; an empty text gives 0 ids
// and a valid pointer). Fatal when the text is not encodable (e.g. a NUL byte inside).
int *tokenizer_encode(const tokenizer *t, const char *text, size_t length, int *count);
// ids -> text (malloc'd, NUL-terminated; *length bytes when length is not NULL: a byte
// piece <0x00> decodes to a NUL inside). Fatal when an id is outside [0, vocab_size).
char *tokenizer_decode(const tokenizer *t, const int *ids, int count, size_t *length);

// Streaming decode, one id at a time, for printing text as it is generated: the
// concatenation of every push and the finish equals tokenizer_decode of all the ids.
// A push returns "" while a character spelt in byte pieces is incomplete.
tokenizer_stream *tokenizer_stream_new(const tokenizer *t);
// The text that `id` completes (*length bytes when length is not NULL), valid until the
// next call on the stream. Fatal on a bad id.
const char *tokenizer_stream_push(tokenizer_stream *s, int id, size_t *length);
// What is still held back (incomplete bytes, as decoding ends them: U+FFFD each); the
// stream then starts again as at the beginning of a text.
const char *tokenizer_stream_finish(tokenizer_stream *s, size_t *length);
void tokenizer_stream_free(tokenizer_stream *s);

#ifdef __cplusplus
}
#endif
