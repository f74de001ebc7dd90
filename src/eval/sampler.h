// Choosing the next token from a row of logits: greedy (argmax), or a draw from the
// softmax at a temperature, optionally cut to the top-k tokens and then to the nucleus
// (the smallest set of most likely tokens whose probability reaches top-p), renormalised;
// the order of Hugging Face's generate (temperature, top-k, top-p). Deterministic: draw n
// of a sampler uses rng_uniform(seed, stream, n) (core/rng.h), so a batch gives each
// sequence its own stream and a run repeats exactly from the same seed.
#pragma once
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    double temperature;   // >= 0; 0 is greedy
    int top_k;            // 0: no cut; larger than the vocabulary: no cut
    double top_p;         // in (0, 1]; 1: no cut
    bool greedy;          // argmax, whatever the rest says
    uint64_t seed;
} sampler_settings;

// temperature 1, top_k 0, top_p 1, not greedy, seed 0.
void sampler_defaults(sampler_settings *s);
// Parses the value of one command-line option into s: --temperature T (>= 0), --top-k K
// (>= 0), --top-p P (0 < P <= 1), --seed S (>= 0). Fatal, one line naming the option and
// what it accepts, on a bad value. Returns false (s untouched) for any other option.
bool sampler_parse_option(sampler_settings *s, const char *option, const char *value);

typedef struct {
    sampler_settings settings;
    int vocab;
    uint64_t stream;      // this sequence's random stream
    uint64_t draws;       // draws made so far: the index of the next one
    double *weights;      // [vocab] scratch
    int *order;           // [vocab] scratch: token ids sorted by logit
} sampler;

// One sampler per sequence; stream tells the sequences of a batch apart.
void sampler_init(sampler *s, const sampler_settings *settings, int vocab, uint64_t stream);
void sampler_free(sampler *s);
// The next token from logits[vocab] (-inf allowed: never drawn unless all are -inf).
int sampler_sample(sampler *s, const float *logits);
