// The fp32 model against the double-precision reference (tests/reference): the
// reference's hand-written backward against finite differences of its own loss, then the
// model's loss and every parameter gradient against the reference on the same
// parameters (MHA, GQA, MQA; bias on/off; tied/untied LM head), the forward-only path,
// overfitting one batch with AdamW, and the layer plan (which layers each layout makes
// standard, at 24 and 7 layers) and its errors.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../reference/model_reference.h"
#include "../testing.h"
#include "support/model_test_helpers.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "core/rng.h"
#include "model/layer_plan.h"
#include "model/model.h"
#include "ops/ops.h"

// ---- a, b, f. the reference backward and the fp32 model against the reference: shared
// with the mixer tests (tests/support/model_test_helpers.c), called from main ---------

// ---- c. forward only, per-token losses, loss_scale and accumulation ------------------

static void check_forward_only(void) {
    decon_config c;
    test_model_config(&c, NULL, NULL, 32, 2, 4, 2, 40, 37, true, true, 10000.0);
    int batch = 3, seq_len = 9, rows = batch * seq_len;
    model m;
    test_model_setup(&m, &c, "forward-only", batch, seq_len, 11);
    size_t total = m.registry.total;
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    test_model_batch(tokens, targets, rows, 0, c.vocab_size, c.vocab_size, 12);
    float *losses_forward = xcalloc((size_t)rows, sizeof(float)), *losses_backward = xcalloc((size_t)rows, sizeof(float));
    float *sentinel = xcalloc(total, sizeof(float)), *grads1 = xcalloc(total, sizeof(float));
    for (size_t e = 0; e < total; e++) sentinel[e] = m.grads[e] = 0.25f + (float)(e % 7);

    model_forward(&m, tokens, batch, seq_len);
    double loss_forward = model_loss(&m, targets, losses_forward);
    testing_report(memcmp(sentinel, m.grads, total * sizeof(float)) == 0, "forward only leaves the gradients alone",
                   "model_loss changed m->grads");
    memset(m.grads, 0, total * sizeof(float));
    model_forward(&m, tokens, batch, seq_len);
    double loss_backward = model_backward(&m, targets, 1.0f, losses_backward);
    testing_report(fabs(loss_forward - loss_backward) <= 1e-6 * fabs(loss_backward),
                   "forward only gives the same loss as forward+backward", "%.9g vs %.9g", loss_forward, loss_backward);

    double sum = 0.0, max_diff = 0.0;
    bool ignored_zero = true;
    for (int r = 0; r < rows; r++) {
        sum += losses_forward[r];
        max_diff = fmax(max_diff, fabs((double)losses_forward[r] - losses_backward[r]));
        if (targets[r] < 0 && (losses_forward[r] != 0.0f || losses_backward[r] != 0.0f)) ignored_zero = false;
    }
    testing_report(fabs(sum - loss_forward) <= 1e-5 * fabs(loss_forward), "per-token losses sum to the loss",
                   "sum %.9g vs returned %.9g", sum, loss_forward);
    testing_report(ignored_zero && max_diff <= 1e-6, "per-token losses: same with and without backward, 0 when ignored",
                   "max difference %.3g, ignored rows zero: %d", max_diff, ignored_zero);

    double *params = xcalloc(total, sizeof(double)), *ref_losses = xcalloc((size_t)rows, sizeof(double));
    for (size_t e = 0; e < total; e++) params[e] = m.params[e];
    model_reference_loss(&c, &m.registry, params, tokens, targets, batch, seq_len, ref_losses, NULL);
    double token_err = testing_relative_error_f(losses_forward, ref_losses, (size_t)rows);
    testing_report(token_err < 1e-5, "per-token losses match the reference", "norm-wise relative error %.3g",
                   token_err);

    // loss_scale multiplies the gradient; a second call accumulates.
    memcpy(grads1, m.grads, total * sizeof(float));
    memset(m.grads, 0, total * sizeof(float));
    model_forward(&m, tokens, batch, seq_len);
    model_backward(&m, targets, 0.25f, NULL);
    double *expected = xcalloc(total, sizeof(double));
    for (size_t e = 0; e < total; e++) expected[e] = 0.25 * grads1[e];
    double scale_err = testing_relative_error_f(m.grads, expected, total);
    testing_report(scale_err < 1e-6, "loss_scale scales the gradient", "relative error %.3g", scale_err);
    model_forward(&m, tokens, batch, seq_len);
    model_backward(&m, targets, 0.75f, NULL);
    for (size_t e = 0; e < total; e++) expected[e] = grads1[e];
    double accumulate_err = testing_relative_error_f(m.grads, expected, total);
    testing_report(accumulate_err < 1e-6, "backward accumulates into the gradient", "relative error %.3g",
                   accumulate_err);

    free(expected);
    free(params);
    free(ref_losses);
    free(tokens);
    free(targets);
    free(losses_forward);
    free(losses_backward);
    free(sentinel);
    free(grads1);
    model_free(&m);
}

// ---- d. overfitting one batch with AdamW --------------------------------------------

static void check_overfit(void) {
    decon_config c;
    test_model_config(&c, NULL, NULL, 32, 2, 4, 4, 64, 64, true, true, 10000.0);
    int batch = 4, seq_len = 16, rows = batch * seq_len, max_steps = 400;
    model m;
    model_build(&m, &c, "overfit");
    model_allocate(&m, batch, seq_len);
    model_initialize(&m, 5);
    size_t total = m.registry.total;
    float *adam_m = xcalloc(total, sizeof(float)), *adam_v = xcalloc(total, sizeof(float));
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    for (int r = 0; r < rows; r++) {
        tokens[r] = (int)(rng_mix(77, 1, (uint64_t)r) % 64);
        targets[r] = (int)(rng_mix(77, 2, (uint64_t)r) % 64);
    }
    double first = 0.0, mean = 0.0;
    int step;
    for (step = 1; step <= max_steps; step++) {
        memset(m.grads, 0, total * sizeof(float));
        model_forward(&m, tokens, batch, seq_len);
        mean = model_backward(&m, targets, 1.0f / (float)rows, NULL) / rows;
        if (step == 1) first = mean;
        if (mean < 0.1) break;
        adamw_update(m.params, m.grads, adam_m, adam_v, total, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, step, 1.0f);
    }
    printf("# overfit: mean loss %.4f at step 1, %.4f at step %d\n", first, mean, step > max_steps ? max_steps : step);
    testing_report(mean < 0.1, "AdamW overfits one batch (mean loss < 0.1)",
                   "mean loss %.4f after %d steps (started at %.4f)", mean, max_steps, first);
    free(adam_m);
    free(adam_v);
    free(tokens);
    free(targets);
    model_free(&m);
}

// ---- e. the layer plan ----------------------------------------------------------------

static void plan_letters(char *out, const char *variant, const char *layout, int layers) {
    decon_config c;
    test_model_config(&c, NULL, NULL, 16, layers, 2, 0, 16, 8, true, true, 10000.0);
    snprintf(c.variant, sizeof c.variant, "%s", variant);
    snprintf(c.layout, sizeof c.layout, "%s", layout);
    const mixer_kind **plan = (const mixer_kind **)xcalloc((size_t)layers, sizeof(const mixer_kind *));
    layer_plan_build(plan, &c, "test.ini");
    layer_plan_letters(out, plan, layers);
    free((void *)plan);
}

// Builds the plan in a forked child with stderr captured; passes when the child exits
// non-zero with exactly one line on stderr that names the origin and the key.
static void expect_plan_fatal(const char *variant, const char *layout, const char *key) {
    char name[256], out[8192] = "";
    snprintf(name, sizeof name, "layer plan rejects variant='%s' layout='%s'", variant, layout);
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) {
        testing_report(0, name, "pipe() failed");
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipe_fds[0]);
        dup2(pipe_fds[1], STDERR_FILENO);
        close(pipe_fds[1]);
        char letters[64];
        plan_letters(letters, variant, layout, 6);
        _exit(0);  // reached only when the plan was accepted
    }
    close(pipe_fds[1]);
    size_t used = 0;
    ssize_t got;
    while ((got = read(pipe_fds[0], out + used, sizeof out - 1 - used)) > 0) used += (size_t)got;
    out[used] = '\0';
    close(pipe_fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int lines = 0;
    for (size_t i = 0; i < used; i++) lines += out[i] == '\n';
    bool exited_nonzero = WIFEXITED(status) && WEXITSTATUS(status) != 0;
    bool one_line = lines == 1 && used > 0 && out[used - 1] == '\n';
    bool names_it = strstr(out, "test.ini") && strstr(out, key);
    if (one_line) out[used - 1] = '\0';
    testing_report(exited_nonzero && one_line && names_it, name, "status %d, %d lines on stderr: '%s'", status, lines,
                   out);
}

// Which layers each layout makes standard, written out by hand from DESIGN.md section 6
// (the study's Table 4.11 at its 24 layers, and 7 layers, where halves and quarters
// round down): 1-based ids, space-separated. Built with variant mlp, so every other
// layer must come out as the variant.
static const struct {
    const char *layout;
    int layers;
    const char *standard_ids;
} PLAN_CASES[] = {
    {"uniform", 24, ""},
    {"hybrid", 24, "2 4 6 8 10 12 14 16 18 20 22 24"},
    {"hybrid:even", 24, "2 4 6 8 10 12 14 16 18 20 22 24"},
    {"hybrid:odd", 24, "1 3 5 7 9 11 13 15 17 19 21 23"},
    {"hybrid:top", 24, "1 2 3 4 5 6 7 8 9 10 11 12"},
    {"hybrid:middle", 24, "1 2 3 4 5 6 19 20 21 22 23 24"},
    {"hybrid:bottom", 24, "13 14 15 16 17 18 19 20 21 22 23 24"},
    {"hybrid:25%", 24, "4 8 12 16 20 24"},
    {"hybrid:first", 24, "1"},
    {"hybrid:last", 24, "24"},
    {"hybrid:bilateral", 24, "1 24"},
    {"list:3,17,24", 24, "3 17 24"},
    {"uniform", 7, ""},
    {"hybrid", 7, "2 4 6"},
    {"hybrid:even", 7, "2 4 6"},
    {"hybrid:odd", 7, "1 3 5 7"},
    {"hybrid:top", 7, "1 2 3"},        // floor(7/2) = 3 lowest; layer 4 is the variant
    {"hybrid:middle", 7, "1 7"},       // floor(7/4) = 1 at each end
    {"hybrid:bottom", 7, "5 6 7"},     // floor(7/2) = 3 highest
    {"hybrid:25%", 7, "4"},
    {"hybrid:first", 7, "1"},
    {"hybrid:last", 7, "7"},
    {"hybrid:bilateral", 7, "1 7"},
    {"list:6,2", 7, "2 6"},
};

static void check_layer_plan(void) {
    int n = (int)(sizeof PLAN_CASES / sizeof PLAN_CASES[0]);
    for (int i = 0; i < n; i++) {
        int layers = PLAN_CASES[i].layers;
        char expected[64], letters[64], name[128];
        memset(expected, 'M', (size_t)layers);
        expected[layers] = '\0';
        const char *p = PLAN_CASES[i].standard_ids;
        for (char *end; *p; p = end) {
            long id = strtol(p, &end, 10);
            expected[id - 1] = 'S';
        }
        plan_letters(letters, "mlp", PLAN_CASES[i].layout, layers);
        snprintf(name, sizeof name, "layer plan: %s over %d layers makes {%s} standard", PLAN_CASES[i].layout, layers,
                 PLAN_CASES[i].standard_ids);
        testing_report(strcmp(letters, expected) == 0, name, "plan '%s', expected '%s'", letters, expected);
    }

    // A model built with a hybrid layout has the uniform model's registry.
    decon_config c;
    test_model_config(&c, NULL, NULL, 16, 4, 2, 0, 24, 11, false, true, 10000.0);
    model uniform, hybrid;
    model_build(&uniform, &c, "uniform");
    snprintf(c.layout, sizeof c.layout, "hybrid:odd");
    model_build(&hybrid, &c, "hybrid");
    bool same = uniform.registry.count == hybrid.registry.count && uniform.registry.total == hybrid.registry.total;
    for (int i = 0; same && i < uniform.registry.count; i++)
        same = strcmp(uniform.registry.items[i].name, hybrid.registry.items[i].name) == 0 &&
               uniform.registry.items[i].offset == hybrid.registry.items[i].offset;
    testing_report(same, "layer plan: hybrid model registers the same tensors as uniform", "registries differ");
    model_free(&uniform);
    model_free(&hybrid);

    expect_plan_fatal("no-such-variant", "uniform", "variant");
    expect_plan_fatal("standard", "zigzag", "layout");
    expect_plan_fatal("standard", "hybrid:sideways", "layout");
    expect_plan_fatal("standard", "list:0", "layout");
    expect_plan_fatal("standard", "list:7", "layout");
    expect_plan_fatal("standard", "list:1,x", "layout");
}

int main(void) {
    decon_config c;

    // e first: it forks, which is simplest before any threads exist.
    check_layer_plan();

    // a. d=16, 2 layers, 4 heads, vocab 23, batch 2 x seq 5.
    test_model_config(&c, NULL, NULL, 16, 2, 4, 4, 24, 23, true, true, 100.0);
    test_check_reference_gradient("tied, bias, MHA", &c, 2, 5, 1e-3, 0.0, 101);
    test_model_config(&c, NULL, NULL, 16, 2, 4, 2, 24, 23, false, false, 100.0);
    test_check_reference_gradient("untied, no bias, GQA kv=2", &c, 2, 5, 1e-3, 0.0, 102);

    // b. the fp32 model on the same parameters; the second config crosses block sizes.
    test_model_config(&c, NULL, NULL, 16, 2, 4, 4, 24, 23, true, true, 100.0);
    test_compare_with_reference("tied, bias, MHA, 2x5", &c, 2, 5, 0, 201);
    test_model_config(&c, NULL, NULL, 64, 2, 4, 4, 72, 131, false, false, 10000.0);
    test_compare_with_reference("untied, no bias, MHA, 2x77", &c, 2, 77, 0, 202);

    // f. GQA / MQA (the first two in a model allocated for larger micro-batches).
    test_model_config(&c, NULL, NULL, 32, 2, 4, 2, 48, 41, true, true, 10000.0);
    test_compare_with_reference("GQA kv=2, 3x19", &c, 3, 19, 5, 301);
    test_model_config(&c, NULL, NULL, 32, 2, 4, 1, 48, 41, false, true, 10000.0);
    test_compare_with_reference("MQA kv=1, 3x19", &c, 3, 19, 5, 302);
    test_model_config(&c, NULL, NULL, 64, 1, 8, 2, 48, 41, true, false, 10000.0);
    test_compare_with_reference("GQA 8 heads kv=2, 2x70", &c, 2, 70, 0, 303);

    // c, d.
    check_forward_only();
    check_overfit();
    return testing_exit_code();
}
