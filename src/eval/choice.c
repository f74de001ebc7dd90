#include "eval/choice.h"

#include <string.h>

#include "core/errors.h"
#include "eval/scoring.h"
#include "eval/task_file.h"

static void load_example(task_file *f, const cJSON *object, choice_example *e) {
    e->line = f->line;
    e->context = task_file_tokens(f, object, "context", &e->context_length);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(object, "choices");
    if (!choices) task_file_error(f, "missing \"choices\" (an array of token-id arrays)");
    if (!cJSON_IsArray(choices)) task_file_error(f, "\"choices\" must be an array of token-id arrays");
    e->choice_count = cJSON_GetArraySize(choices);
    if (e->choice_count < 2) task_file_error(f, "\"choices\" has %d entries; it needs at least two", e->choice_count);
    e->choices = (int **)xcalloc((size_t)e->choice_count, sizeof *e->choices);
    e->choice_lengths = xcalloc((size_t)e->choice_count, sizeof *e->choice_lengths);
    for (int i = 0; i < e->choice_count; i++) {
        char name[32];
        snprintf(name, sizeof name, "choices[%d]", i);
        e->choices[i] = task_file_token_array(f, cJSON_GetArrayItem(choices, i), name, &e->choice_lengths[i]);
        task_file_check_length(f, e->context_length + e->choice_lengths[i] - 1);
    }
    e->label = task_file_integer(f, object, "label");
    if (e->label < 0 || e->label >= e->choice_count)
        task_file_error(f, "\"label\" is %d but there are %d choices (0-based: 0..%d)", e->label, e->choice_count,
                        e->choice_count - 1);
}

void choice_load(choice_task *task, const char *path, int vocab_size, int max_length) {
    memset(task, 0, sizeof *task);
    snprintf(task->path, sizeof task->path, "%s", path);
    task_file f;
    task_file_open(&f, path, vocab_size, max_length);
    int capacity = 0;
    for (cJSON *object; (object = task_file_next(&f));) {
        task->examples = xgrow(task->examples, task->count, &capacity, sizeof *task->examples, 256);
        choice_example *e = &task->examples[task->count++];
        load_example(&f, object, e);
        cJSON_Delete(object);
        task->requests += e->choice_count;
        for (int i = 0; i < e->choice_count; i++) {
            int length = e->context_length + e->choice_lengths[i] - 1;
            if (length > task->longest) task->longest = length;
        }
    }
    task_file_close(&f);
    if (task->count == 0)
        fatal("%s: no examples (expected JSON lines {\"context\": [...], \"choices\": [[...], ...], \"label\": k})", path);
}

void choice_free(choice_task *task) {
    for (int i = 0; i < task->count; i++) {
        choice_example *e = &task->examples[i];
        for (int c = 0; c < e->choice_count; c++) free(e->choices[c]);
        free((void *)e->choices);
        free(e->choice_lengths);
        free(e->context);
    }
    free(task->examples);
    memset(task, 0, sizeof *task);
}

int choice_predict(const double *log_likelihoods, const int *choice_lengths, int choice_count, bool length_normalize) {
    int best = 0;
    double best_score = 0.0;
    for (int c = 0; c < choice_count; c++) {
        double score = log_likelihoods[c] / (length_normalize ? (double)choice_lengths[c] : 1.0);
        if (c == 0 || score > best_score) {
            best = c;
            best_score = score;
        }
    }
    return best;
}

choice_result choice_evaluate(model *m, const choice_task *task, bool length_normalize) {
    scoring_request *requests = xmalloc((size_t)task->requests * sizeof *requests);
    scoring_result *results = xmalloc((size_t)task->requests * sizeof *results);
    int n = 0, most_choices = 0;
    for (int i = 0; i < task->count; i++) {
        const choice_example *e = &task->examples[i];
        for (int c = 0; c < e->choice_count; c++)
            requests[n++] = (scoring_request){e->context, e->context_length, e->choices[c], e->choice_lengths[c]};
        if (e->choice_count > most_choices) most_choices = e->choice_count;
    }
    scoring_evaluate(m, requests, n, results, false);
    choice_result r = {.examples = task->count, .length_normalized = length_normalize};
    double *log_likelihoods = xmalloc((size_t)most_choices * sizeof(double));
    n = 0;
    for (int i = 0; i < task->count; i++) {
        const choice_example *e = &task->examples[i];
        for (int c = 0; c < e->choice_count; c++) log_likelihoods[c] = results[n++].log_likelihood;
        r.correct += choice_predict(log_likelihoods, e->choice_lengths, e->choice_count, length_normalize) == e->label;
        r.chance += 1.0 / (double)e->choice_count;
    }
    r.accuracy = (double)r.correct / (double)r.examples;
    r.chance /= (double)r.examples;
    free(log_likelihoods);
    free(requests);
    free(results);
    return r;
}
