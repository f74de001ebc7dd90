#include "eval/generate.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/errors.h"

const char *generate_stop_name(generate_stop stop) {
    switch (stop) {
    case GENERATE_EOS: return "eos";
    case GENERATE_MAX_NEW: return "max-new";
    case GENERATE_MAX_CONTEXT: return "max-context";
    case GENERATE_RUNNING: break;
    }
    return "running";
}

static bool session_prefill(void *context, int count, const int *sequences, const int *const *prompts,
                            const int *lengths, float *logits) {
    return decode_prefill((decode_session *)context, count, sequences, prompts, lengths, logits);
}
static bool session_step(void *context, const int *tokens, float *logits) {
    return decode_step((decode_session *)context, tokens, logits);
}
static const char *session_error(void *context) { return decode_error((decode_session *)context); }

generate_source generate_source_of(decode_session *s) {
    return (generate_source){.context = s, .prefill = session_prefill, .step = session_step, .error = session_error};
}

typedef struct {
    const generate_settings *settings;
    generate_sequence *sequences;
    int count, rank;
    sampler *samplers;              // rank 0 only
    const generate_listener *listener;
    int *next;                      // [count] the tokens chosen this round
} loop;

// Rank 0 chooses every running sequence's next token from its logits row and the group
// receives the choice; then each rank records it and decides the stop the same way.
static void choose_and_take(loop *l, const float *logits) {
    const generate_settings *g = l->settings;
    for (int b = 0; b < l->count; b++)
        l->next[b] = l->rank == 0 && l->sequences[b].stop == GENERATE_RUNNING
                         ? sampler_sample(&l->samplers[b], logits + (size_t)b * (size_t)g->vocab)
                         : -1;
    MPI_Bcast(l->next, l->count, MPI_INT, 0, g->comm);
    for (int b = 0; b < l->count; b++) {
        generate_sequence *q = &l->sequences[b];
        if (q->stop != GENERATE_RUNNING) continue;
        int token = l->next[b];
        q->generated[q->count++] = token;
        if (token == g->eos_id) q->stop = GENERATE_EOS;
        else if (q->count >= g->max_new) q->stop = GENERATE_MAX_NEW;
        else if (q->prompt_length + q->count >= g->max_context) q->stop = GENERATE_MAX_CONTEXT;
        if (l->rank != 0 || !l->listener) continue;
        if (l->listener->token) l->listener->token(l->listener->context, b, token);
        if (q->stop != GENERATE_RUNNING && l->listener->stopped) l->listener->stopped(l->listener->context, b);
    }
}

static bool any_running(const generate_sequence *sequences, int count) {
    for (int b = 0; b < count; b++)
        if (sequences[b].stop == GENERATE_RUNNING) return true;
    return false;
}

static bool check_settings(const generate_settings *g, const generate_sequence *sequences, int count, char *error,
                           size_t error_size) {
    if (count < 1 || g->max_new < 1 || g->vocab < 1 || g->choices < 1 || g->choices > g->vocab) {
        snprintf(error, error_size, "generate: %d sequences, max-new %d, vocabulary %d, choices %d: each must be >= 1 "
                 "(choices <= vocabulary)", count, g->max_new, g->vocab, g->choices);
        return false;
    }
    for (int b = 0; b < count; b++)
        if (sequences[b].prompt_length < 1 || sequences[b].prompt_length >= g->max_context) {
            snprintf(error, error_size, "prompt %d has %d tokens; it needs 1 to %d (--max-context %d leaves room to "
                     "generate after it)", b, sequences[b].prompt_length, g->max_context - 1, g->max_context);
            return false;
        }
    return true;
}

bool generate_run(const generate_settings *settings, generate_source *source, generate_sequence *sequences,
                  int count, const generate_listener *listener, generate_timing *timing, char *error,
                  size_t error_size) {
    const generate_settings *g = settings;
    *timing = (generate_timing){0};
    error[0] = '\0';
    if (!check_settings(g, sequences, count, error, error_size)) return false;
    loop l = {.settings = g, .sequences = sequences, .count = count, .listener = listener};
    MPI_Comm_rank(g->comm, &l.rank);
    l.next = xmalloc((size_t)count * sizeof(int));
    l.samplers = xcalloc((size_t)count, sizeof(sampler));
    int *indices = xmalloc((size_t)count * sizeof(int)), *lengths = xmalloc((size_t)count * sizeof(int));
    int *tokens = xmalloc((size_t)count * sizeof(int));
    const int **prompts = (const int **)xmalloc((size_t)count * sizeof(int *));
    float *logits = xmalloc((size_t)count * (size_t)g->vocab * sizeof(float));
    for (int b = 0; b < count; b++) {
        if (l.rank == 0) sampler_init(&l.samplers[b], &g->sampling, g->choices, sequences[b].stream);
        sequences[b].count = 0;
        sequences[b].stop = GENERATE_RUNNING;
        indices[b] = b;
        prompts[b] = sequences[b].prompt;
        lengths[b] = sequences[b].prompt_length;
        timing->prefill_tokens += lengths[b];
    }
    double start = wall_seconds();
    bool ok = source->prefill(source->context, count, indices, prompts, lengths, logits);
    timing->prefill_seconds = wall_seconds() - start;
    if (ok) choose_and_take(&l, logits);
    while (ok && any_running(sequences, count)) {
        start = wall_seconds();
        int running = 0;
        for (int b = 0; b < count; b++) {
            const generate_sequence *q = &sequences[b];
            tokens[b] = q->stop == GENERATE_RUNNING ? q->generated[q->count - 1] : DECODE_IDLE;
            running += q->stop == GENERATE_RUNNING;
        }
        ok = source->step(source->context, tokens, logits);
        timing->decode_seconds += wall_seconds() - start;
        if (!ok) break;
        timing->decode_steps++;
        timing->decode_tokens += running;
        choose_and_take(&l, logits);
    }
    if (!ok) snprintf(error, error_size, "%s", source->error(source->context));
    if (l.rank == 0)
        for (int b = 0; b < count; b++) sampler_free(&l.samplers[b]);
    free(l.samplers);
    free(l.next);
    free(indices);
    free(lengths);
    free(tokens);
    free((void *)prompts);
    free(logits);
    return ok;
}
