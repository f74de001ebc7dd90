// The generation loop's bookkeeping (eval/generate.c) against a scripted logits source:
// not a model, a table of which token each sequence "predicts" next (a function of the
// last token it was fed and how many it holds), checked by a plain loop written here.
// The source keeps decode_step's contract (a token for a full or empty sequence is
// refused, DECODE_IDLE retires a sequence), so a loop that lets a stopped sequence run past
// the context fails here. Checked: the three stop reasons (eos, max-new, max-context) with
// their counts and ids, that every fed token is the sequence's last generated one, that a
// stopped sequence is fed DECODE_IDLE and never prefilled again, the step and token counts, the
// listener's calls, refused prompts and a source's error passed on; then under
// `mpirun -np 2` rank 1 scripts different logits and must still generate rank 0's tokens
// (rank 0 samples and broadcasts).
#include <mpi.h>
#include <stdbool.h>
#include <string.h>

#include "child_process.h"
#include "core/errors.h"
#include "eval/generate.h"
#include "testing.h"

enum { VOCAB = 16, EOS = 3, COUNT = 4, MAX_NEW = 10, MAX_CONTEXT = 12 };

typedef struct {
    int held[COUNT], last[COUNT];
    int prefills, idles, steps;
    bool rank_one_differs;   // the MPI case: rank 1's rows point elsewhere
    int refuse_at_step;      // > 0: the step with this number fails
    char error[128];
} script;

// What sequence b predicts after `last` when it holds `length` tokens: sequence 0 says
// EOS once it holds 5, nobody else ever does (tokens 4..15).
static int scripted_next(int b, int last, int length) {
    if (b == 0 && length >= 5) return EOS;
    return 4 + (last * 7 + length + b) % 12;
}

static void write_row(const script *s, int b, float *row) {
    int next = scripted_next(b, s->last[b], s->held[b]), rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (s->rank_one_differs && rank == 1) next = (next + 5) % VOCAB;
    for (int v = 0; v < VOCAB; v++) row[v] = v == next ? 1.0f : 0.0f;
}

static bool script_prefill(void *context, int count, const int *sequences, const int *const *prompts,
                           const int *lengths, float *logits) {
    script *s = context;
    s->prefills++;
    for (int i = 0; i < count; i++) {
        int b = sequences[i];
        s->held[b] = lengths[i];
        s->last[b] = prompts[i][lengths[i] - 1];
        write_row(s, b, logits + (size_t)i * VOCAB);
    }
    return true;
}

static bool script_step(void *context, const int *tokens, float *logits) {
    script *s = context;
    if (++s->steps == s->refuse_at_step) {
        snprintf(s->error, sizeof s->error, "step %d: refused by the script", s->steps);
        return false;
    }
    for (int b = 0; b < COUNT; b++)
        if (tokens[b] != DECODE_IDLE && (s->held[b] < 1 || s->held[b] >= MAX_CONTEXT)) {
            snprintf(s->error, sizeof s->error, "step: sequence %d holds %d tokens", b, s->held[b]);
            return false;
        }
    for (int b = 0; b < COUNT; b++) {
        if (tokens[b] == DECODE_IDLE) {  // retired: holds nothing afterwards
            s->held[b] = 0;
            s->idles++;
            for (int v = 0; v < VOCAB; v++) logits[(size_t)b * VOCAB + v] = v == 0 ? 1.0f : 0.0f;
            continue;
        }
        s->held[b]++;
        s->last[b] = tokens[b];
        write_row(s, b, logits + (size_t)b * VOCAB);
    }
    return true;
}

static const char *script_error(void *context) { return ((script *)context)->error; }

typedef struct {
    int tokens[COUNT][MAX_NEW], count[COUNT], stopped[COUNT], stopped_after[COUNT];
} heard;

static void heard_token(void *context, int b, int token) {
    heard *h = context;
    if (h->count[b] < MAX_NEW) h->tokens[b][h->count[b]] = token;
    h->count[b]++;
}
static void heard_stopped(void *context, int b) {
    heard *h = context;
    h->stopped[b]++;
    h->stopped_after[b] = h->count[b];
}

static const int PROMPTS[COUNT][9] = {{9, 10}, {7}, {1, 2, 3, 4, 5, 6}, {8, 8, 8, 8, 8, 8, 8, 8, 8}};
static const int PROMPT_LENGTHS[COUNT] = {2, 1, 6, 9};

typedef struct {
    generate_sequence sequences[COUNT];
    int generated[COUNT][MAX_NEW];
    script source_state;
    generate_source source;
    generate_settings settings;
} fixture;

static void fixture_init(fixture *f) {
    memset(f, 0, sizeof *f);
    for (int b = 0; b < COUNT; b++)
        f->sequences[b] = (generate_sequence){.prompt = PROMPTS[b], .prompt_length = PROMPT_LENGTHS[b],
                                              .stream = (uint64_t)b, .generated = f->generated[b]};
    f->source = (generate_source){.context = &f->source_state, .prefill = script_prefill, .step = script_step,
                                  .error = script_error};
    f->settings = (generate_settings){.max_new = MAX_NEW, .max_context = MAX_CONTEXT, .eos_id = EOS,
                                      .vocab = VOCAB, .choices = VOCAB, .comm = MPI_COMM_WORLD};
    sampler_defaults(&f->settings.sampling);
    f->settings.sampling.greedy = true;
}

// The expected run of sequence b, by a plain loop: ids, count, stop.
static generate_stop expected_run(int b, int *ids, int *count) {
    int last = PROMPTS[b][PROMPT_LENGTHS[b] - 1], length = PROMPT_LENGTHS[b];
    *count = 0;
    for (;;) {
        int next = scripted_next(b, last, length);
        ids[(*count)++] = next;
        if (next == EOS) return GENERATE_EOS;
        if (*count == MAX_NEW) return GENERATE_MAX_NEW;
        if (PROMPT_LENGTHS[b] + *count == MAX_CONTEXT) return GENERATE_MAX_CONTEXT;
        last = next;
        length++;
    }
}

static void check_loop(void) {
    fixture f;
    fixture_init(&f);
    heard h = {0};
    generate_listener listener = {.context = &h, .token = heard_token, .stopped = heard_stopped};
    generate_timing timing;
    char error[256];
    bool ok = generate_run(&f.settings, &f.source, f.sequences, COUNT, &listener, &timing, error, sizeof error);
    testing_report(ok, "generate: the scripted batch runs to its stops", "%s", error);
    if (!ok) return;
    const generate_stop want_stops[COUNT] = {GENERATE_EOS, GENERATE_MAX_NEW, GENERATE_MAX_CONTEXT,
                                             GENERATE_MAX_CONTEXT};
    const int want_counts[COUNT] = {4, 10, 6, 3};
    long long fed = 0;
    int longest = 0;
    for (int b = 0; b < COUNT; b++) {
        int ids[MAX_NEW], count;
        generate_stop stop = expected_run(b, ids, &count);
        const generate_sequence *q = &f.sequences[b];
        char name[128];
        snprintf(name, sizeof name, "generate: sequence %d stops at %s after %d tokens, the ids a plain loop gives", b,
                 generate_stop_name(want_stops[b]), want_counts[b]);
        testing_report(stop == want_stops[b] && count == want_counts[b] && q->stop == stop && q->count == count &&
                           memcmp(q->generated, ids, (size_t)count * sizeof(int)) == 0,
                       name, "stop %s count %d (plain loop: %s %d)", generate_stop_name(q->stop), q->count,
                       generate_stop_name(stop), count);
        snprintf(name, sizeof name, "generate: sequence %d: the listener heard its tokens, then one stop", b);
        testing_report(h.count[b] == q->count && h.stopped[b] == 1 && h.stopped_after[b] == q->count &&
                           memcmp(h.tokens[b], q->generated, (size_t)q->count * sizeof(int)) == 0,
                       name, "%d tokens heard, %d stops (after %d)", h.count[b], h.stopped[b], h.stopped_after[b]);
        fed += q->count - 1;
        if (q->count > longest) longest = q->count;
    }
    testing_report(timing.decode_steps == longest - 1 && timing.decode_tokens == fed &&
                       timing.prefill_tokens == 2 + 1 + 6 + 9,
                   "generate: steps = longest - 1, fed tokens = running sequences' only, prefill tokens = prompts'",
                   "steps %lld tokens %lld prefill %lld", timing.decode_steps, timing.decode_tokens,
                   timing.prefill_tokens);
    // Every step after a sequence's stop feeds it DECODE_IDLE (a stale token for a retired
    // or full sequence would be refused), and nothing is prefilled after the prompts.
    int idles_expected = 0;
    for (int b = 0; b < COUNT; b++) idles_expected += (int)timing.decode_steps - (f.sequences[b].count - 1);
    testing_report(f.source_state.idles == idles_expected && f.source_state.prefills == 1,
                   "generate: a stopped sequence is fed DECODE_IDLE on every later step, never prefilled again",
                   "%d idles (expected %d) in %d prefills", f.source_state.idles, idles_expected,
                   f.source_state.prefills);
}

static void check_refusals(void) {
    fixture f;
    fixture_init(&f);
    generate_timing timing;
    char error[256];
    f.sequences[2].prompt_length = MAX_CONTEXT;
    bool ok = generate_run(&f.settings, &f.source, f.sequences, COUNT, NULL, &timing, error, sizeof error);
    testing_report(!ok && strstr(error, "prompt 2 has 12 tokens") && f.source_state.prefills == 0,
                   "generate: a prompt that fills --max-context is refused before any prefill", "ok %d: %s", ok,
                   error);
    fixture_init(&f);
    f.sequences[1].prompt_length = 0;
    ok = generate_run(&f.settings, &f.source, f.sequences, COUNT, NULL, &timing, error, sizeof error);
    testing_report(!ok && strstr(error, "prompt 1 has 0 tokens"), "generate: an empty prompt is refused", "%s", error);
    fixture_init(&f);
    f.source_state.refuse_at_step = 3;
    ok = generate_run(&f.settings, &f.source, f.sequences, COUNT, NULL, &timing, error, sizeof error);
    testing_report(!ok && strcmp(error, "step 3: refused by the script") == 0,
                   "generate: the source's error is passed on", "ok %d: %s", ok, error);
}

// Under mpirun -np 2: rank 1's logits point at other tokens, so only rank 0's choice,
// broadcast, makes both ranks generate the plain loop's ids.
static int child_main(void) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fixture f;
    fixture_init(&f);
    f.source_state.rank_one_differs = true;
    generate_timing timing;
    char error[256];
    bool ok = generate_run(&f.settings, &f.source, f.sequences, COUNT, NULL, &timing, error, sizeof error);
    int same = ok;
    for (int b = 0; b < COUNT && same; b++) {
        int ids[MAX_NEW], count;
        generate_stop stop = expected_run(b, ids, &count);
        same = f.sequences[b].stop == stop && f.sequences[b].count == count &&
               memcmp(f.sequences[b].generated, ids, (size_t)count * sizeof(int)) == 0;
    }
    int all = 0;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0)
        testing_report(all, "generate: under mpirun -np 2 both ranks generate rank 0's choices (rank 1's logits differ)",
                       "a rank generated other ids: %s", error);
    return testing_exit_code();
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--child") == 0) {
        MPI_Init(&argc, &argv);
        int code = child_main();
        MPI_Finalize();
        return code;
    }
    child_keep_environment();
    MPI_Init(&argc, &argv);
    check_loop();
    check_refusals();
    MPI_Finalize();
    const char *argv_child[] = {"timeout", "120", "mpirun", "--oversubscribe", "-np", "2", argv[0], "--child", NULL};
    static child_result result;
    result = child_run(argv_child, CHILD_STDOUT | CHILD_STDERR);
    fputs(result.output, stdout);
    testing_report(result.status == 0, "generate: mpirun -np 2 finished cleanly", "status %d", result.status);
    return testing_exit_code();
}
