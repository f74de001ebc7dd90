// libFuzzer harness: JSON-lines task files (eval/task_file.c) read as decon-eval reads them,
// as a cloze file (eval/cloze.c) and as a multiple-choice file (eval/choice.c), for a model
// of VOCAB ids and MAX_LENGTH positions. An accepted file must hold only ids below VOCAB,
// inputs that fit MAX_LENGTH and labels that name one of the choices.
#include "eval/choice.h"
#include "eval/cloze.h"
#include "fuzz/fuzz_support.h"

enum { VOCAB = 64, MAX_LENGTH = 32 };

static cloze_task cloze;
static choice_task choice;
static const char *path;

static bool ids_fit(const int *ids, int n) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= VOCAB) return false;
    return n > 0;
}

static void load_cloze(void *arg) {
    (void)arg;
    cloze_load(&cloze, path, VOCAB, MAX_LENGTH);
    for (int i = 0; i < cloze.count; i++) {
        const cloze_example *e = &cloze.examples[i];
        FUZZ_CHECK("fuzz_task_file", ids_fit(e->context, e->context_length) && ids_fit(e->target, e->target_length));
        FUZZ_CHECK("fuzz_task_file", e->context_length + e->target_length - 1 <= MAX_LENGTH);
    }
    cloze_free(&cloze);
}

static void load_choice(void *arg) {
    (void)arg;
    choice_load(&choice, path, VOCAB, MAX_LENGTH);
    for (int i = 0; i < choice.count; i++) {
        const choice_example *e = &choice.examples[i];
        FUZZ_CHECK("fuzz_task_file", e->choice_count >= 2 && e->label >= 0 && e->label < e->choice_count);
        FUZZ_CHECK("fuzz_task_file", ids_fit(e->context, e->context_length));
        for (int c = 0; c < e->choice_count; c++)
            FUZZ_CHECK("fuzz_task_file", ids_fit(e->choices[c], e->choice_lengths[c]) &&
                                             e->context_length + e->choice_lengths[c] - 1 <= MAX_LENGTH);
    }
    choice_free(&choice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    path = fuzz_write_input(data, size, ".jsonl");
    fuzz_run_stage(load_cloze, NULL);
    fuzz_run_stage(load_choice, NULL);
    return 0;
}
