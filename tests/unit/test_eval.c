// The evaluator (src/eval/): sliding-window bookkeeping (every target scored exactly
// once, the trainer's windows at stride = context), perplexity and continuation scores
// of a hand-built model against closed-form values, batching and right padding leaving
// scores unchanged, the logits helper against the fused LM-head loss, the skip mask and
// skip evaluation on a hand-made hybrid plan, and the task-file reader (good files and
// one fatal "file:line" line for each kind of bad line).
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../testing.h"
#include "support/model_test_helpers.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "eval/choice.h"
#include "eval/cloze.h"
#include "eval/logits.h"
#include "eval/perplexity.h"
#include "eval/scoring.h"
#include "eval/skip.h"
#include "model/model.h"
#include "ops/ops.h"

#define check(name, ok, ...) testing_report((ok), (name), __VA_ARGS__)

// log softmax(logits)[index] in double: what the model's per-token loss must equal.
static double log_probability(const float *logits, int vocab, int index) {
    double max = logits[eval_argmax(logits, vocab)], sum = 0.0;
    for (int v = 0; v < vocab; v++) sum += exp((double)logits[v] - max);
    return (double)logits[index] - max - log(sum);
}

static char scratch[64];

static void make_config(decon_config *c, int d, int layers, int heads, int inter, int vocab, bool tied) {
    test_model_config(c, NULL, NULL, d, layers, heads, heads, inter, vocab, tied, true, 100.0);
    c->sequence_length = 16;
}

static float *param(model *m, const char *name) {
    int index = params_find(&m->registry, name);
    if (index < 0) fatal("test: no parameter %s", name);
    return m->params + m->registry.items[index].offset;
}

static size_t param_count(model *m, const char *name) {
    return m->registry.items[params_find(&m->registry, name)].local_count;
}

static void fill_tokens(int *tokens, int count, int vocab, uint64_t seed) {
    for (int i = 0; i < count; i++) tokens[i] = (int)(rng_mix(seed, 7, (uint64_t)i) % (uint64_t)vocab);
}

// ---- 1. window bookkeeping ------------------------------------------------------------

static void check_windows(void) {
    const int lengths[] = {2, 3, 9, 17, 33, 64, 65, 100, 257};
    const int contexts[] = {1, 4, 8, 16, 31};
    char why[256] = "";
    int cases = 0;
    for (size_t a = 0; a < sizeof lengths / sizeof lengths[0] && !why[0]; a++) {
        for (size_t b = 0; b < sizeof contexts / sizeof contexts[0] && !why[0]; b++) {
            int n = lengths[a], c = contexts[b];
            for (int s = 1; s <= c && !why[0]; s++) {
                int *scored = xcalloc((size_t)n, sizeof(int));
                int64_t windows = perplexity_window_count(n, c, s);
                for (int64_t k = 0; k < windows && !why[0]; k++) {
                    perplexity_window w = perplexity_window_at(n, c, s, k);
                    int expected_length = n - 1 <= c ? n - 1 : c;
                    if (w.length != expected_length || w.start < 0 || w.start + w.length > n - 1 ||
                        w.first_scored < 0 || w.first_scored >= w.length || (k == 0 && w.first_scored != 0) ||
                        (k > 0 && w.length - w.first_scored > s))
                        snprintf(why, sizeof why, "N=%d C=%d S=%d window %lld: start %lld length %d first %d", n, c,
                                 s, (long long)k, (long long)w.start, w.length, w.first_scored);
                    for (int p = w.first_scored; p < w.length; p++) scored[w.start + p + 1]++;
                }
                for (int j = 1; j < n && !why[0]; j++)
                    if (scored[j] != 1)
                        snprintf(why, sizeof why, "N=%d C=%d S=%d: target %d scored %d times", n, c, s, j, scored[j]);
                free(scored);
                cases++;
            }
        }
    }
    check("eval_windows_score_every_target_once", !why[0], "%s", why);

    // stride = context on W*C+1 tokens: the trainer's windows (start k*C, C inputs).
    why[0] = '\0';
    for (int c = 1; c <= 32 && !why[0]; c *= 2) {
        int w_count = 7, n = w_count * c + 1;
        if (perplexity_window_count(n, c, c) != w_count) snprintf(why, sizeof why, "C=%d: window count", c);
        for (int k = 0; k < w_count && !why[0]; k++) {
            perplexity_window w = perplexity_window_at(n, c, c, k);
            if (w.start != (int64_t)k * c || w.length != c || w.first_scored != 0)
                snprintf(why, sizeof why, "C=%d window %d: start %lld first %d", c, k, (long long)w.start, w.first_scored);
        }
    }
    check("eval_windows_stride_equal_context_are_the_trainers", !why[0], "%s (%d cases above)", why, cases);
}

// ---- 2. a hand-built model with known output distributions ----------------------------
// Every block is the identity (mixer output projection and MLP down projection zero), so
// the final hidden state of a token t is h(t) = RMSNorm(E[t]) * g and the logits are
// W h(t): p(next | ..., t) depends on t alone and is computed here in double.

enum { HAND_D = 8, HAND_VOCAB = 11, HAND_INTER = 12 };

static void build_hand_model(model *m, decon_config *c) {
    make_config(c, HAND_D, 1, 2, HAND_INTER, HAND_VOCAB, false);
    model_build(m, c, "hand-built");
    model_allocate(m, 4, 64);
    model_initialize(m, 5);
    memset(param(m, "layers.0.mixer.wo"), 0, param_count(m, "layers.0.mixer.wo") * sizeof(float));
    memset(param(m, "layers.0.mlp.down_proj"), 0, param_count(m, "layers.0.mlp.down_proj") * sizeof(float));
    float *e = param(m, "embed_tokens"), *w = param(m, "lm_head"), *g = param(m, "norm");
    for (int t = 0; t < HAND_VOCAB; t++)
        for (int j = 0; j < HAND_D; j++) {
            e[t * HAND_D + j] = (float)(0.3 * sin(1.7 * t + 0.9 * j) + (t % HAND_D == j ? 1.0 : 0.0));
            w[t * HAND_D + j] = (float)(1.5 * cos(0.7 * t * (j + 1) + 0.3));
        }
    for (int j = 0; j < HAND_D; j++) g[j] = (float)(0.8 + 0.05 * j);
}

// log p(next | t) of the hand-built model, in double from its parameters.
static void hand_log_probs(model *m, int t, double *log_probs) {
    const float *e = param(m, "embed_tokens") + (size_t)t * HAND_D, *w = param(m, "lm_head"), *g = param(m, "norm");
    double ms = 0.0;
    for (int j = 0; j < HAND_D; j++) ms += (double)e[j] * e[j];
    double rstd = 1.0 / sqrt(ms / HAND_D + m->config.rms_norm_eps), logits[HAND_VOCAB], max = -INFINITY, sum = 0.0;
    for (int v = 0; v < HAND_VOCAB; v++) {
        logits[v] = 0.0;
        for (int j = 0; j < HAND_D; j++) logits[v] += (double)w[v * HAND_D + j] * e[j] * rstd * g[j];
        max = fmax(max, logits[v]);
    }
    for (int v = 0; v < HAND_VOCAB; v++) sum += exp(logits[v] - max);
    for (int v = 0; v < HAND_VOCAB; v++) log_probs[v] = logits[v] - max - log(sum);
}

static int hand_argmax(model *m, int t) {
    double lp[HAND_VOCAB];
    hand_log_probs(m, t, lp);
    int best = 0;
    for (int v = 1; v < HAND_VOCAB; v++)
        if (lp[v] > lp[best]) best = v;
    return best;
}

static void check_hand_built(void) {
    decon_config c;
    model m;
    build_hand_model(&m, &c);
    enum { N = 41 };
    int tokens[N];
    fill_tokens(tokens, N, HAND_VOCAB, 3);
    double sum = 0.0, lp[HAND_VOCAB];
    for (int j = 1; j < N; j++) {
        hand_log_probs(&m, tokens[j - 1], lp);
        sum -= lp[tokens[j]];
    }
    double expected = exp(sum / (N - 1));
    const int cs[][2] = {{8, 4}, {8, 8}, {16, 5}, {7, 1}, {40, 40}, {64, 32}, {5, 3}};
    char why[256] = "";
    for (size_t i = 0; i < sizeof cs / sizeof cs[0] && !why[0]; i++) {
        perplexity_result r = perplexity_evaluate(&m, tokens, N, cs[i][0], cs[i][1], 0);
        double error = fabs(r.perplexity - expected) / expected;
        if (r.tokens_scored != N - 1 || error > 1e-5)
            snprintf(why, sizeof why, "C=%d S=%d: ppl %.8g, by hand %.8g (rel. error %.2g), %lld tokens scored",
                     cs[i][0], cs[i][1], r.perplexity, expected, error, (long long)r.tokens_scored);
    }
    check("eval_perplexity_matches_closed_form", !why[0], "%s", why);

    // --max-windows: the first windows only, their targets exactly.
    perplexity_result r = perplexity_evaluate(&m, tokens, N, 8, 4, 3);
    sum = 0.0;
    for (int j = 1; j <= 16; j++) {  // windows 0..2 of C=8, S=4 cover targets 1..16
        hand_log_probs(&m, tokens[j - 1], lp);
        sum -= lp[tokens[j]];
    }
    check("eval_perplexity_max_windows", r.windows == 3 && r.windows_total == 9 && r.tokens_scored == 16 &&
          fabs(r.loss - sum / 16) < 1e-5, "windows %lld/%lld, %lld tokens, loss %.8g vs %.8g", (long long)r.windows,
          (long long)r.windows_total, (long long)r.tokens_scored, r.loss, sum / 16);

    // Continuations: log-likelihood by hand, greedy match exactly when the argmax chain is followed.
    int context[5];
    fill_tokens(context, 5, HAND_VOCAB, 9);
    int a = hand_argmax(&m, context[4]), b = hand_argmax(&m, a), not_b = (b + 1) % HAND_VOCAB;
    int follow[2] = {a, b}, stray[2] = {a, not_b}, first_wrong[1] = {(a + 3) % HAND_VOCAB};
    scoring_request requests[3] = {{context, 5, follow, 2}, {context, 5, stray, 2}, {context, 3, first_wrong, 1}};
    scoring_result results[3];
    scoring_evaluate(&m, requests, 3, results, true);
    double expected_ll[3] = {0, 0, 0};
    hand_log_probs(&m, context[4], lp);
    expected_ll[0] = expected_ll[1] = lp[a];
    hand_log_probs(&m, a, lp);
    expected_ll[0] += lp[b];
    expected_ll[1] += lp[not_b];
    hand_log_probs(&m, context[2], lp);
    expected_ll[2] = lp[first_wrong[0]];
    bool greedy_ok = results[0].greedy_match && !results[1].greedy_match &&
                     results[2].greedy_match == (hand_argmax(&m, context[2]) == first_wrong[0]);
    double worst = 0.0;
    for (int i = 0; i < 3; i++) worst = fmax(worst, fabs(results[i].log_likelihood - expected_ll[i]));
    check("eval_continuation_scores_match_closed_form", greedy_ok && worst < 1e-5,
          "greedy %d %d %d, worst log-likelihood error %.2g", results[0].greedy_match, results[1].greedy_match,
          results[2].greedy_match, worst);
    model_free(&m);
}

// ---- 3. batching, padding and the logits helper on a random model --------------------

static void check_batching(void) {
    decon_config c;
    model m;
    make_config(&c, 16, 2, 4, 24, 37, true);
    model_build(&m, &c, "random");
    model_allocate(&m, 4, 32);
    model_initialize(&m, 11);
    // Larger weights than the initialisation so that context matters.
    for (size_t i = 0; i < m.registry.total; i++) m.params[i] *= 4.0f;
    for (int l = 0; l < 2; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.input_layernorm", l);
        for (int j = 0; j < 16; j++) param(&m, name)[j] = 1.0f;
        snprintf(name, sizeof name, "layers.%d.post_attention_layernorm", l);
        for (int j = 0; j < 16; j++) param(&m, name)[j] = 1.0f;
    }
    for (int j = 0; j < 16; j++) param(&m, "norm")[j] = 1.0f;

    enum { N = 90 };
    int tokens[N];
    fill_tokens(tokens, N, 37, 21);
    perplexity_result batched = perplexity_evaluate(&m, tokens, N, 16, 6, 0);
    m.max_batch = 1;
    perplexity_result single = perplexity_evaluate(&m, tokens, N, 16, 6, 0);
    perplexity_result other_stride = perplexity_evaluate(&m, tokens, N, 16, 16, 0);
    m.max_batch = 4;
    check("eval_perplexity_independent_of_batching",
          fabs(batched.loss - single.loss) < 1e-6 && batched.tokens_scored == N - 1,
          "batched %.9g, one window at a time %.9g", batched.loss, single.loss);
    check("eval_perplexity_context_matters", fabs(other_stride.loss - single.loss) > 1e-4,
          "stride 6 and 16 give %.9g and %.9g: the random model ignores its context?", single.loss, other_stride.loss);

    // One window covering everything = one forward pass over the whole sequence.
    int targets[32];
    for (int p = 0; p < 31; p++) targets[p] = tokens[p + 1];
    model_forward(&m, tokens, 1, 31);
    double whole = model_loss(&m, targets, NULL) / 31.0;
    perplexity_result one = perplexity_evaluate(&m, tokens, 32, 31, 31, 0);
    check("eval_perplexity_single_window_is_one_forward", one.windows == 1 && fabs(one.loss - whole) < 1e-6,
          "%.9g vs %.9g", one.loss, whole);

    // Right padding: requests of different lengths together == one at a time.
    enum { R = 7 };
    scoring_request requests[R];
    scoring_result together[R], alone[R];
    for (int i = 0; i < R; i++) {
        int context_length = 3 + 4 * i, continuation_length = 1 + i % 3;
        requests[i] = (scoring_request){tokens + i, context_length, tokens + i + context_length, continuation_length};
    }
    scoring_evaluate(&m, requests, R, together, true);
    m.max_batch = 1;
    for (int i = 0; i < R; i++) scoring_evaluate(&m, &requests[i], 1, &alone[i], true);
    m.max_batch = 4;
    double worst = 0.0;
    bool same_greedy = true;
    for (int i = 0; i < R; i++) {
        worst = fmax(worst, fabs(together[i].log_likelihood - alone[i].log_likelihood));
        same_greedy &= together[i].greedy_match == alone[i].greedy_match;
    }
    check("eval_scoring_padding_changes_nothing", worst < 1e-5 && same_greedy, "worst difference %.2g, greedy %s",
          worst, same_greedy ? "same" : "differs");

    // The logits helper reproduces the fused LM head's per-token losses.
    float losses[2 * 20];
    int inputs[2 * 20], outputs[2 * 20];
    for (int i = 0; i < 40; i++) {
        inputs[i] = tokens[i];
        outputs[i] = tokens[i + 1];
    }
    model_forward(&m, inputs, 2, 20);
    model_loss(&m, outputs, losses);
    float logits[40 * 37];
    eval_logits(&m, 0, 40, logits);
    worst = 0.0;
    for (int i = 0; i < 40; i++)
        worst = fmax(worst, fabs(-log_probability(logits + (size_t)i * 37, 37, outputs[i]) - losses[i]));
    check("eval_logits_match_fused_loss", worst < 1e-4, "worst |log p + loss| %.2g", worst);
    model_free(&m);
}

// ---- 4. skip ---------------------------------------------------------------------------

static void scale_layer(model *m, int layer, float factor) {
    for (int i = 0; i < m->registry.count; i++) {
        const param_info *p = &m->registry.items[i];
        if (p->layer != layer) continue;
        for (size_t e = 0; e < p->local_count; e++) m->params[p->offset + e] *= factor;
    }
}

static void check_skip(void) {
    decon_config c;
    model m;
    make_config(&c, 16, 4, 4, 24, 29, true);
    model_build(&m, &c, "skip");
    bool mask[4];
    int none = skip_mask_from_plan(mask, (const mixer_kind *const *)m.plan, 4);
    check("eval_skip_nothing_in_a_standard_model", none == 0 && !mask[0] && !mask[1] && !mask[2] && !mask[3],
          "%d layers marked", none);

    // A hybrid plan by hand: layers 1 and 3 (1-based) get a non-standard copy of the
    // standard mixer, layers 2 and 4 stay standard.
    mixer_kind fake = *mixer_standard();
    fake.name = "fake-nonstandard";
    fake.letter = 'X';
    fake.is_standard = false;
    for (int l = 0; l < 4; l += 2) m.plan[l] = m.mixers[l].kind = &fake;
    model_allocate(&m, 4, 16);
    model_initialize(&m, 17);
    int count = skip_mask_from_plan(mask, (const mixer_kind *const *)m.plan, 4);
    check("eval_skip_mask_from_plan", count == 2 && mask[0] && !mask[1] && mask[2] && !mask[3], "%d skipped: %d%d%d%d",
          count, mask[0], mask[1], mask[2], mask[3]);
    model_set_skipped(&m, mask);
    bool marked = m.skipped[0] && !m.skipped[1] && m.skipped[2] && !m.skipped[3];
    check("eval_skip_marks_the_model", marked, "model skipped = %d%d%d%d", m.skipped[0], m.skipped[1], m.skipped[2],
          m.skipped[3]);

    enum { N = 60 };
    int tokens[N];
    fill_tokens(tokens, N, 29, 31);
    model_set_skipped(&m, NULL);
    double full = perplexity_evaluate(&m, tokens, N, 16, 8, 0).loss;
    model_set_skipped(&m, mask);
    double skipped = perplexity_evaluate(&m, tokens, N, 16, 8, 0).loss;
    scale_layer(&m, 0, 1.7f);  // the skipped layers change ...
    scale_layer(&m, 2, -0.6f);
    double skipped_after = perplexity_evaluate(&m, tokens, N, 16, 8, 0).loss;
    model_set_skipped(&m, NULL);
    double full_after = perplexity_evaluate(&m, tokens, N, 16, 8, 0).loss;
    check("eval_skip_ignores_skipped_layers", skipped_after == skipped && fabs(full_after - full) > 1e-6 &&
          fabs(skipped - full) > 1e-6, "skip %.9g -> %.9g, full %.9g -> %.9g", skipped, skipped_after, full, full_after);
    model_set_skipped(&m, mask);
    scale_layer(&m, 1, 1.3f);  // ... a standard layer changes: the skip result must follow
    double skipped_standard_changed = perplexity_evaluate(&m, tokens, N, 16, 8, 0).loss;
    check("eval_skip_keeps_standard_layers", fabs(skipped_standard_changed - skipped) > 1e-6,
          "skip %.9g -> %.9g after changing standard layer 2", skipped, skipped_standard_changed);
    model_free(&m);
}

// ---- 5. task files -----------------------------------------------------------------------

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) fatal("test: cannot write %s", path);
}

// In a child: load `text` as a cloze or choice file; the child must fail with one line
// holding every needle.
static void expect_task_error(const char *name, bool cloze, const char *text, const char *const *needles) {
    char path[128], err_path[128];
    snprintf(path, sizeof path, "%s/%s.jsonl", scratch, name);
    snprintf(err_path, sizeof err_path, "%s/%s.err", scratch, name);
    write_file(path, text);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, STDERR_FILENO);
        close(fd);
        if (cloze) {
            cloze_task task;
            cloze_load(&task, path, 50, 64);
        } else {
            choice_task task;
            choice_load(&task, path, 50, 64);
        }
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char output[2048] = "";
    FILE *f = fopen(err_path, "r");
    size_t used = f ? fread(output, 1, sizeof output - 1, f) : 0;
    if (f) fclose(f);
    output[used] = '\0';
    int lines = 0;
    for (char *p = output; *p; p++) lines += *p == '\n';
    char why[2300] = "";
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0) snprintf(why, sizeof why, "did not fail: %s", output);
    else if (lines != 1) snprintf(why, sizeof why, "expected one line, got: %s", output);
    for (const char *const *needle = needles; !why[0] && *needle; needle++)
        if (!strstr(output, *needle)) snprintf(why, sizeof why, "message lacks \"%s\": %s", *needle, output);
    check(name, !why[0], "%s", why);
}

static void check_task_files(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/good_cloze.jsonl", scratch);
    write_file(path, "{\"context\": [4, 5, 6], \"target\": [7, 8], \"word\": \"ignored\"}\n\n"
                     "  {\"target\":[9],\"context\":[1]}  \n");
    cloze_task cloze;
    cloze_load(&cloze, path, 50, 64);
    bool ok = cloze.count == 2 && cloze.examples[0].context_length == 3 && cloze.examples[0].target[1] == 8 &&
              cloze.examples[1].line == 3 && cloze.longest == 4;
    check("eval_task_cloze_file_reads", ok, "count %d", cloze.count);
    cloze_free(&cloze);

    snprintf(path, sizeof path, "%s/good_choice.jsonl", scratch);
    write_file(path, "{\"context\": [4, 5], \"choices\": [[1], [2, 3], [4, 5, 6]], \"label\": 2}\n");
    choice_task choice;
    choice_load(&choice, path, 50, 64);
    ok = choice.count == 1 && choice.requests == 3 && choice.examples[0].label == 2 &&
         choice.examples[0].choice_lengths[2] == 3 && choice.longest == 4;
    check("eval_task_choice_file_reads", ok, "count %d", choice.count);
    choice_free(&choice);

    double ll[3] = {-3.0, -4.0, -5.0};
    int lengths[3] = {1, 2, 3};
    check("eval_choice_predict", choice_predict(ll, lengths, 3, false) == 0 && choice_predict(ll, lengths, 3, true) == 2,
          "sum picks %d, normalised picks %d", choice_predict(ll, lengths, 3, false), choice_predict(ll, lengths, 3, true));

    expect_task_error("eval_task_bad_json", true, "{\"context\": [1], \"target\": [2]}\n{\"context\": [1,\n",
                      (const char *[]){"eval_task_bad_json.jsonl:2:", "not valid JSON", NULL});
    expect_task_error("eval_task_missing_key", true, "{\"context\": [1]}\n",
                      (const char *[]){":1:", "missing \"target\"", NULL});
    expect_task_error("eval_task_token_out_of_vocab", true, "{\"context\": [1, 50], \"target\": [2]}\n",
                      (const char *[]){":1:", "50", "vocabulary", NULL});
    expect_task_error("eval_task_not_an_id", true, "{\"context\": [1, 2.5], \"target\": [2]}\n",
                      (const char *[]){":1:", "\"context\"[1]", NULL});
    expect_task_error("eval_task_empty_target", true, "{\"context\": [1], \"target\": []}\n",
                      (const char *[]){":1:", "\"target\" is empty", NULL});
    expect_task_error("eval_task_too_long", true, "{\"context\": [1], \"target\": [2]}\n"
                      "{\"context\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,"
                      "31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"
                      " \"target\": [2]}\n", (const char *[]){":2:", "65 model inputs", NULL});
    expect_task_error("eval_task_empty_file", true, "\n\n", (const char *[]){"no examples", NULL});
    expect_task_error("eval_task_bad_label", false, "{\"context\": [1], \"choices\": [[1], [2]], \"label\": 2}\n",
                      (const char *[]){":1:", "\"label\" is 2", NULL});
    expect_task_error("eval_task_one_choice", false, "{\"context\": [1], \"choices\": [[1]], \"label\": 0}\n",
                      (const char *[]){":1:", "at least two", NULL});
    expect_task_error("eval_task_bad_choice", false, "{\"context\": [1], \"choices\": [[1], 7], \"label\": 0}\n",
                      (const char *[]){":1:", "\"choices[1]\"", NULL});
}

int main(void) {
    snprintf(scratch, sizeof scratch, "/tmp/decon_test_eval_XXXXXX");
    if (!mkdtemp(scratch)) fatal("cannot create a scratch directory under /tmp");
    check_task_files();  // first: it forks, which is simplest before any threads exist
    ops_set_threads(2);
    check_windows();
    check_hand_built();
    check_batching();
    check_skip();
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", scratch);
    if (system(command) != 0) warn("could not remove %s", scratch);
    return testing_exit_code();
}
