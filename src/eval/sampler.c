#include "eval/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "eval/logits.h"

void sampler_defaults(sampler_settings *s) {
    *s = (sampler_settings){.temperature = 1.0, .top_k = 0, .top_p = 1.0, .greedy = false, .seed = 0};
}

static double parse_number(const char *option, const char *text, const char *expected) {
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(value)) fatal("%s '%s': expected %s", option, text, expected);
    return value;
}

bool sampler_parse_option(sampler_settings *s, const char *option, const char *value) {
    if (strcmp(option, "--temperature") == 0) {
        static const char *const expected = "a number >= 0 (0 = greedy; 1 = the model's distribution)";
        s->temperature = parse_number(option, value, expected);
        if (s->temperature < 0) fatal("%s '%s': expected %s", option, value, expected);
    } else if (strcmp(option, "--top-p") == 0) {
        static const char *const expected = "a probability in (0, 1] (1 = no nucleus cut)";
        s->top_p = parse_number(option, value, expected);
        if (!(s->top_p > 0 && s->top_p <= 1)) fatal("%s '%s': expected %s", option, value, expected);
    } else if (strcmp(option, "--top-k") == 0 || strcmp(option, "--seed") == 0) {
        bool top_k = option[2] == 't';
        const char *expected = top_k ? "an integer >= 0 (0 = no top-k cut)" : "an integer >= 0";
        char *end = NULL;
        errno = 0;
        long long n = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0' || n < 0 || (top_k && n > 2147483647LL))
            fatal("%s '%s': expected %s", option, value, expected);
        if (top_k) s->top_k = (int)n;
        else s->seed = (uint64_t)n;
    } else {
        return false;
    }
    return true;
}

void sampler_init(sampler *s, const sampler_settings *settings, int vocab, uint64_t stream) {
    if (vocab < 1) fatal("internal: sampler over %d tokens", vocab);
    s->settings = *settings;
    s->vocab = vocab;
    s->stream = stream;
    s->draws = 0;
    s->weights = xmalloc((size_t)vocab * sizeof(double));
    s->order = xmalloc((size_t)vocab * sizeof(int));
}

void sampler_free(sampler *s) {
    free(s->weights);
    free(s->order);
}

// Sorting token ids by logit, largest first, ties by id (a total order: the cut is the
// same on every run). glibc's qsort_r passes the logits, so samplers may run in threads.
static int by_logit(const void *a, const void *b, void *context) {
    const float *logits = context;
    int i = *(const int *)a, j = *(const int *)b;
    if (logits[i] != logits[j]) return logits[i] > logits[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int sampler_sample(sampler *s, const float *logits) {
    const sampler_settings *c = &s->settings;
    int vocab = s->vocab;
    if (c->greedy || c->temperature == 0.0 || c->top_k == 1) return eval_argmax(logits, vocab);
    double u = rng_uniform(c->seed, s->stream, s->draws++);  // drawn whatever the cut, so draw n is always index n

    // Candidates: every token, or the top-k / nucleus in descending order.
    int kept = vocab;
    bool sorted = c->top_k > 0 || c->top_p < 1.0;
    for (int v = 0; v < vocab; v++) s->order[v] = v;
    if (sorted) {
        qsort_r(s->order, (size_t)vocab, sizeof(int), by_logit, (void *)logits);
        if (c->top_k > 0 && c->top_k < vocab) kept = c->top_k;
    }
    double top = logits[s->order[0]];
    if (!sorted)
        for (int v = 1; v < vocab; v++) top = fmax(top, logits[v]);
    if (isinf(top) && top < 0) return eval_argmax(logits, vocab);  // nothing is possible: the first token
    double total = 0.0;
    for (int i = 0; i < kept; i++) {
        double w = exp(((double)logits[s->order[i]] - top) / c->temperature);
        s->weights[i] = w;
        total += w;
    }
    if (c->top_p < 1.0) {  // the shortest prefix whose probability reaches top_p (at least one token)
        double cumulative = 0.0;
        int n = 0;
        while (n < kept && cumulative < c->top_p * total) cumulative += s->weights[n++];
        kept = n > 0 ? n : 1;
        total = cumulative > 0 ? cumulative : s->weights[0];
    }
    double target = u * total, cumulative = 0.0;
    for (int i = 0; i < kept; i++) {
        cumulative += s->weights[i];
        if (target < cumulative) return s->order[i];
    }
    return s->order[kept - 1];  // u * total rounded up to the total
}
