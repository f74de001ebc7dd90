#include "eval/cloze.h"

#include <string.h>

#include "core/errors.h"
#include "eval/scoring.h"
#include "eval/task_file.h"

void cloze_load(cloze_task *task, const char *path, int vocab_size, int max_length) {
    memset(task, 0, sizeof *task);
    snprintf(task->path, sizeof task->path, "%s", path);
    task_file f;
    task_file_open(&f, path, vocab_size, max_length);
    int capacity = 0;
    for (cJSON *object; (object = task_file_next(&f));) {
        cloze_example e = {.line = f.line};
        e.context = task_file_tokens(&f, object, "context", &e.context_length);
        e.target = task_file_tokens(&f, object, "target", &e.target_length);
        int length = e.context_length + e.target_length - 1;
        task_file_check_length(&f, length);
        cJSON_Delete(object);
        task->examples = xgrow(task->examples, task->count, &capacity, sizeof *task->examples, 256);
        task->examples[task->count++] = e;
        if (length > task->longest) task->longest = length;
    }
    task_file_close(&f);
    if (task->count == 0) fatal("%s: no examples (expected JSON lines {\"context\": [...], \"target\": [...]})", path);
}

void cloze_free(cloze_task *task) {
    for (int i = 0; i < task->count; i++) {
        free(task->examples[i].context);
        free(task->examples[i].target);
    }
    free(task->examples);
    memset(task, 0, sizeof *task);
}

cloze_result cloze_evaluate(model *m, const cloze_task *task) {
    scoring_request *requests = xmalloc((size_t)task->count * sizeof *requests);
    scoring_result *results = xmalloc((size_t)task->count * sizeof *results);
    for (int i = 0; i < task->count; i++) {
        const cloze_example *e = &task->examples[i];
        requests[i] = (scoring_request){e->context, e->context_length, e->target, e->target_length};
    }
    scoring_evaluate(m, requests, task->count, results, true);
    cloze_result r = {.examples = task->count};
    double sum = 0.0;
    for (int i = 0; i < task->count; i++) {
        r.correct += results[i].greedy_match;
        sum += results[i].log_likelihood;
        r.target_tokens += task->examples[i].target_length;
    }
    r.accuracy = (double)r.correct / (double)r.examples;
    r.mean_log_likelihood = sum / (double)r.examples;
    r.mean_token_log_likelihood = sum / (double)r.target_tokens;
    free(requests);
    free(results);
    return r;
}
