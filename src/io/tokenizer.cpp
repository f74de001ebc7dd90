// src/io/tokenizer.h over sentencepiece's C++ API (libsentencepiece-dev).
#include "io/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// core/errors.h is C: its _Noreturn is C11's spelling of C++'s [[noreturn]].
#define _Noreturn [[noreturn]]
extern "C" {
#include "core/errors.h"
}
#undef _Noreturn

struct tokenizer {
    sentencepiece::SentencePieceProcessor processor;
    std::string path;
};

// Decoding is piece by piece except in two places, which the stream reproduces with
// sentencepiece's own Decode: the first piece that yields text loses its leading space
// (the dummy prefix), and a run of byte pieces is decoded as a whole (a character spelt
// in bytes spans several pieces; invalid bytes become U+FFFD).
struct tokenizer_stream {
    const tokenizer *owner;
    std::vector<int> leading;  // the ids so far while they have yielded no text
    std::vector<int> bytes;    // the byte pieces not yet decoded
    bool started = false;      // some text was produced
    std::string out;           // what the last call returns
};

extern "C" {

tokenizer *tokenizer_load(const char *path) {
    tokenizer *t = new tokenizer;
    t->path = path;
    sentencepiece::util::Status status = t->processor.Load(path);
    if (!status.ok()) {
        std::string why = status.ToString();
        delete t;
        fatal("tokenizer %s: cannot load it as a sentencepiece model (%s); give the corpus's tokenizer.model",
              path, why.c_str());
    }
    return t;
}

void tokenizer_free(tokenizer *t) { delete t; }

const char *tokenizer_path(const tokenizer *t) { return t->path.c_str(); }
int tokenizer_vocab_size(const tokenizer *t) { return t->processor.GetPieceSize(); }
int tokenizer_bos_id(const tokenizer *t) { return t->processor.bos_id(); }
int tokenizer_eos_id(const tokenizer *t) { return t->processor.eos_id(); }
int tokenizer_unk_id(const tokenizer *t) { return t->processor.unk_id(); }
int tokenizer_pad_id(const tokenizer *t) { return t->processor.pad_id(); }

int *tokenizer_encode(const tokenizer *t, const char *text, size_t length, int *count) {
    if (std::memchr(text, '\0', length))
        fatal("tokenizer %s: the text holds a NUL byte at byte %zu; give UTF-8 text without NUL bytes",
              t->path.c_str(), (size_t)((const char *)std::memchr(text, '\0', length) - text));
    std::vector<int> ids;
    sentencepiece::util::Status status = t->processor.Encode(std::string(text, length), &ids);
    if (!status.ok()) fatal("tokenizer %s: cannot encode the text (%s)", t->path.c_str(), status.ToString().c_str());
    int *out = (int *)xmalloc((ids.size() + 1) * sizeof(int));
    for (size_t i = 0; i < ids.size(); i++) out[i] = ids[i];
    *count = (int)ids.size();
    return out;
}

static void check_id(const tokenizer *t, int id) {
    if (id < 0 || id >= t->processor.GetPieceSize())
        fatal("tokenizer %s: token id %d is outside its vocabulary [0, %d); was the model trained with another "
              "tokenizer?", t->path.c_str(), id, t->processor.GetPieceSize());
}

static std::string decode_ids(const tokenizer *t, const std::vector<int> &ids) {
    std::string text;
    sentencepiece::util::Status status = t->processor.Decode(ids, &text);
    if (!status.ok()) fatal("tokenizer %s: cannot decode (%s)", t->path.c_str(), status.ToString().c_str());
    return text;
}

char *tokenizer_decode(const tokenizer *t, const int *ids, int count, size_t *length) {
    for (int i = 0; i < count; i++) check_id(t, ids[i]);
    std::string text = decode_ids(t, std::vector<int>(ids, ids + (count > 0 ? count : 0)));
    char *out = (char *)xmalloc(text.size() + 1);
    std::memcpy(out, text.data(), text.size());
    out[text.size()] = '\0';
    if (length) *length = text.size();
    return out;
}

// The stream's answer: its text and, when asked, its length.
static const char *answer(const tokenizer_stream *s, size_t *length) {
    if (length) *length = s->out.size();
    return s->out.c_str();
}

tokenizer_stream *tokenizer_stream_new(const tokenizer *t) {
    tokenizer_stream *s = new tokenizer_stream;
    s->owner = t;
    return s;
}

void tokenizer_stream_free(tokenizer_stream *s) { delete s; }

static const char REPLACEMENT[] = "\xEF\xBF\xBD";  // U+FFFD: what Decode makes of a bad byte

// The pending byte run decoded, appended to out (every byte yields text: a character or U+FFFD).
static void flush_bytes(tokenizer_stream *s) {
    if (s->bytes.empty()) return;
    s->out += decode_ids(s->owner, s->bytes);
    s->bytes.clear();
    s->started = true;
}

const char *tokenizer_stream_push(tokenizer_stream *s, int id, size_t *length) {
    const tokenizer *t = s->owner;
    const sentencepiece::SentencePieceProcessor &p = t->processor;
    check_id(t, id);
    s->out.clear();
    if (p.IsByte(id)) {
        // Held until the run decodes to whole characters; a run that stays invalid waits
        // for the next other piece (or the finish), where Decode would end it too.
        s->bytes.push_back(id);
        if (decode_ids(t, s->bytes).find(REPLACEMENT) == std::string::npos) flush_bytes(s);
        return answer(s, length);
    }
    flush_bytes(s);
    if (!s->started) {  // decoded with everything before it, so the dummy prefix goes as Decode drops it
        s->leading.push_back(id);
        std::string text = decode_ids(t, s->leading);
        if (!text.empty()) {
            s->out += text;
            s->started = true;
            s->leading.clear();
        }
        return answer(s, length);
    }
    if (p.IsControl(id)) return answer(s, length);
    if (p.IsUnknown(id)) {
        s->out += decode_ids(t, std::vector<int>{id});
        return answer(s, length);
    }
    const std::string &piece = p.IdToPiece(id);  // "\xE2\x96\x81" (U+2581) marks a space
    for (size_t i = 0; i < piece.size();) {
        if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {
            s->out += ' ';
            i += 3;
        } else {
            s->out += piece[i++];
        }
    }
    return answer(s, length);
}

const char *tokenizer_stream_finish(tokenizer_stream *s, size_t *length) {
    s->out.clear();
    flush_bytes(s);
    s->leading.clear();
    s->started = false;
    return answer(s, length);
}

}  // extern "C"
