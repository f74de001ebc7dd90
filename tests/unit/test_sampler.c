// eval/sampler.h against a plain reference written here: greedy is the argmax; top-k = 1
// and temperature 0 are greedy; with temperature, top-k and top-p the frequencies of many
// draws match the reference's renormalised truncated distribution (Pearson chi-square,
// and no draw outside the kept set: a cut one token too wide or too narrow fails); draws
// repeat from the same seed and stream; bad option values are one fatal line each.
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/rng.h"
#include "eval/sampler.h"
#include "testing.h"

enum { VOCAB = 12 };

// The reference: p(v) for v in the kept set, 0 elsewhere. Kept: sort by logit descending
// (ties by id), the first k, then the shortest prefix whose probability (renormalised over
// those k) reaches top_p.
static void reference_distribution(const float *logits, int vocab, double temperature, int top_k, double top_p,
                                   double *p) {
    int order[VOCAB];
    for (int i = 0; i < vocab; i++) order[i] = i;
    for (int i = 0; i < vocab; i++)  // selection sort: plain and obviously right
        for (int j = i + 1; j < vocab; j++)
            if (logits[order[j]] > logits[order[i]] || (logits[order[j]] == logits[order[i]] && order[j] < order[i])) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    int kept = top_k > 0 && top_k < vocab ? top_k : vocab;
    double w[VOCAB], total = 0;
    for (int i = 0; i < kept; i++) total += w[i] = exp((logits[order[i]] - logits[order[0]]) / temperature);
    int nucleus = 0;
    double mass = 0;
    while (nucleus < kept && mass / total < top_p - 1e-12) mass += w[nucleus++];
    for (int v = 0; v < vocab; v++) p[v] = 0;
    for (int i = 0; i < nucleus; i++) p[order[i]] = w[i] / mass;
}

static int plain_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void random_logits(float *logits, int n, uint64_t seed) {
    for (int v = 0; v < n; v++) logits[v] = (float)(1.5 * rng_normal(seed, 99, (uint64_t)v));
}

static void check_greedy(void) {
    float logits[VOCAB];
    int wrong_greedy = 0, wrong_top1 = 0, wrong_zero = 0, wrong_cold = 0;
    for (uint64_t trial = 0; trial < 300; trial++) {
        random_logits(logits, VOCAB, trial);
        if (trial % 7 == 0) logits[3] = logits[8] = 10.0f;  // a tie: the first index wins
        int expected = plain_argmax(logits, VOCAB);
        sampler_settings settings;
        sampler_defaults(&settings);
        settings.seed = trial;
        sampler s;
        settings.greedy = true;
        sampler_init(&s, &settings, VOCAB, 0);
        wrong_greedy += sampler_sample(&s, logits) != expected;
        sampler_free(&s);
        settings.greedy = false;
        settings.top_k = 1;
        sampler_init(&s, &settings, VOCAB, 0);
        wrong_top1 += sampler_sample(&s, logits) != expected;
        sampler_free(&s);
        settings.top_k = 0;
        settings.temperature = 0;
        sampler_init(&s, &settings, VOCAB, 0);
        wrong_zero += sampler_sample(&s, logits) != expected;
        sampler_free(&s);
        // Temperature -> 0: the distribution collapses on the argmax (gap >= 0.05 here).
        if (trial % 7 != 0) {
            settings.temperature = 1e-3;
            sampler_init(&s, &settings, VOCAB, 0);
            float second = -INFINITY;
            for (int v = 0; v < VOCAB; v++)
                if (v != expected && logits[v] > second) second = logits[v];
            if (logits[expected] - second >= 0.05f)
                for (int draw = 0; draw < 20; draw++) wrong_cold += sampler_sample(&s, logits) != expected;
            sampler_free(&s);
        }
    }
    testing_report(wrong_greedy == 0, "sampler_greedy_is_argmax", "%d of 300 differ", wrong_greedy);
    testing_report(wrong_top1 == 0, "sampler_top_k_1_is_greedy", "%d of 300 differ", wrong_top1);
    testing_report(wrong_zero == 0, "sampler_temperature_0_is_greedy", "%d of 300 differ", wrong_zero);
    testing_report(wrong_cold == 0, "sampler_temperature_to_0_collapses_on_argmax", "%d draws elsewhere", wrong_cold);
}

// Draws `draws` tokens and compares their counts with the reference distribution.
static void check_frequencies(const char *name, double temperature, int top_k, double top_p) {
    float logits[VOCAB];
    random_logits(logits, VOCAB, 4242);
    logits[5] = -INFINITY;  // a masked token: never drawn
    double p[VOCAB];
    reference_distribution(logits, VOCAB, temperature, top_k, top_p, p);
    sampler_settings settings;
    sampler_defaults(&settings);
    settings.temperature = temperature;
    settings.top_k = top_k;
    settings.top_p = top_p;
    settings.seed = 17;
    sampler s;
    sampler_init(&s, &settings, VOCAB, 3);
    enum { DRAWS = 200000 };
    long count[VOCAB] = {0};
    for (int i = 0; i < DRAWS; i++) count[sampler_sample(&s, logits)]++;
    sampler_free(&s);
    double chi2 = 0;
    int cells = 0;
    long outside = 0;
    for (int v = 0; v < VOCAB; v++) {
        if (p[v] == 0) {
            outside += count[v];
            continue;
        }
        double expected = DRAWS * p[v];
        double observed = (double)count[v];
        chi2 += (observed - expected) * (observed - expected) / expected;
        cells++;
    }
    // Pearson's statistic has mean cells-1 and sd sqrt(2(cells-1)); the bound is 6 sd above
    // (a fixed seed, so no flakiness; a token missing from the cut adds ~DRAWS p >> bound).
    int dof = cells - 1;
    double bound = dof + 6.0 * sqrt(2.0 * (dof > 0 ? dof : 1)) + 1.0;
    testing_report(outside == 0 && chi2 <= bound, name, "%ld draws outside the kept %d tokens, chi2 %.1f (bound %.1f)",
                   outside, cells, chi2, bound);
    printf("    %s: %d tokens kept, chi2 %.2f on %d dof\n", name, cells, chi2, dof);
}

static void check_determinism(void) {
    float logits[VOCAB];
    random_logits(logits, VOCAB, 5);
    sampler_settings settings;
    sampler_defaults(&settings);
    settings.seed = 11;
    settings.top_p = 0.95;
    sampler a, b, c;
    sampler_init(&a, &settings, VOCAB, 0);
    sampler_init(&b, &settings, VOCAB, 0);
    sampler_init(&c, &settings, VOCAB, 1);
    int same = 0, differ = 0;
    for (int i = 0; i < 200; i++) {
        int x = sampler_sample(&a, logits), y = sampler_sample(&b, logits), z = sampler_sample(&c, logits);
        same += x == y;
        differ += x != z;
    }
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
    testing_report(same == 200 && differ > 50, "sampler_same_seed_same_draws_other_stream_other_draws",
                   "%d of 200 equal at the same stream, %d differ at another", same, differ);
}

// Runs sampler_parse_option(option, value) in a child: must exit 1 with one
// "decon: error: <option> '<value>': expected ..." line on stderr.
static void check_bad_value(const char *option, const char *value) {
    int fds[2];
    if (pipe(fds) != 0) return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        sampler_settings settings;
        sampler_defaults(&settings);
        sampler_parse_option(&settings, option, value);
        _exit(0);
    }
    close(fds[1]);
    char output[1024] = "";
    size_t used = 0;
    ssize_t got;
    while ((got = read(fds[0], output + used, sizeof output - 1 - used)) > 0) used += (size_t)got;
    output[used] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    char expected[128];
    snprintf(expected, sizeof expected, "decon: error: %s '%s': expected", option, value);
    int lines = 0;
    for (const char *c = output; *c; c++) lines += *c == '\n';
    char name[96];
    snprintf(name, sizeof name, "sampler_refuses_%s_%s", option + 2, value);
    testing_report(WIFEXITED(status) && WEXITSTATUS(status) == 1 && lines == 1 && strstr(output, expected), name,
                   "status %d, output '%s'", status, output);
}

int main(void) {
    check_greedy();
    check_frequencies("sampler_temperature_1_matches_softmax", 1.0, 0, 1.0);
    check_frequencies("sampler_temperature_0.6_matches_reference", 0.6, 0, 1.0);
    check_frequencies("sampler_top_k_3_matches_reference", 1.0, 3, 1.0);
    check_frequencies("sampler_top_k_5_temperature_1.4_matches_reference", 1.4, 5, 1.0);
    check_frequencies("sampler_top_p_0.5_matches_reference", 1.0, 0, 0.5);
    check_frequencies("sampler_top_p_0.9_matches_reference", 0.8, 0, 0.9);
    check_frequencies("sampler_top_k_6_top_p_0.8_matches_reference", 1.0, 6, 0.8);
    check_determinism();
    sampler_settings parsed;
    sampler_defaults(&parsed);
    bool handled = sampler_parse_option(&parsed, "--temperature", "0.7") && sampler_parse_option(&parsed, "--top-k", "40") &&
                   sampler_parse_option(&parsed, "--top-p", "1") && sampler_parse_option(&parsed, "--seed", "123") &&
                   !sampler_parse_option(&parsed, "--max-new", "5");
    testing_report(handled && parsed.temperature == 0.7 && parsed.top_k == 40 && parsed.top_p == 1.0 && parsed.seed == 123,
                   "sampler_parses_its_options", "parsed %g %d %g %llu", parsed.temperature, parsed.top_k, parsed.top_p,
                   (unsigned long long)parsed.seed);
    const char *bad[][2] = {{"--temperature", "-0.5"}, {"--temperature", "hot"}, {"--temperature", "nan"},
                            {"--top-p", "0"},         {"--top-p", "1.5"},    {"--top-p", "-0.1"},
                            {"--top-k", "-1"},        {"--top-k", "3x"},     {"--seed", "-1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) check_bad_value(bad[i][0], bad[i][1]);
    return testing_exit_code();
}
