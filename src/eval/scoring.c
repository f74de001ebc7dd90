#include "eval/scoring.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "eval/logits.h"
#include "ops/ops.h"

int scoring_request_length(const scoring_request *request) {
    return request->context_length + request->continuation_length - 1;
}

typedef struct {
    int length, index;
} length_index;

static int longest_first(const void *a, const void *b) {
    const length_index *x = a, *y = b;
    if (x->length != y->length) return x->length > y->length ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

void scoring_evaluate(model *m, const scoring_request *requests, int count, scoring_result *results, bool want_greedy) {
    if (count <= 0) return;
    int vocab = m->config.vocab_size, longest_continuation = 0;
    length_index *order = xmalloc((size_t)count * sizeof *order);
    for (int i = 0; i < count; i++) {
        const scoring_request *r = &requests[i];
        if (r->context_length < 1 || r->continuation_length < 1)
            fatal("internal: scoring request %d has an empty context or continuation", i);
        order[i] = (length_index){scoring_request_length(r), i};
        if (order[i].length > m->max_seq_len)
            fatal("internal: scoring request of %d tokens exceeds the allocated %d", order[i].length, m->max_seq_len);
        if (r->continuation_length > longest_continuation) longest_continuation = r->continuation_length;
    }
    qsort(order, (size_t)count, sizeof *order, longest_first);

    size_t rows = (size_t)m->max_batch * (size_t)m->max_seq_len;
    int *inputs = xmalloc(rows * sizeof(int)), *targets = xmalloc(rows * sizeof(int));
    float *losses = xmalloc(rows * sizeof(float));
    // Backend memory (the GEMM writes it; a GPU backend's host reads it after eval_logits).
    float *logits = want_greedy ? ops_alloc((size_t)longest_continuation * (size_t)vocab * sizeof(float)) : NULL;
    for (int first = 0; first < count;) {
        int seq_len = order[first].length;  // the longest of this batch
        int batch = count - first < m->max_batch ? count - first : m->max_batch;
        for (int b = 0; b < batch; b++) {
            const scoring_request *r = &requests[order[first + b].index];
            int *in = inputs + (size_t)b * (size_t)seq_len, *out = targets + (size_t)b * (size_t)seq_len;
            int length = scoring_request_length(r);
            memcpy(in, r->context, (size_t)r->context_length * sizeof(int));
            memcpy(in + r->context_length, r->continuation, (size_t)(r->continuation_length - 1) * sizeof(int));
            for (int p = length; p < seq_len; p++) in[p] = 0;  // right padding (pad id 0)
            for (int p = 0; p < seq_len; p++) out[p] = -1;
            memcpy(out + r->context_length - 1, r->continuation, (size_t)r->continuation_length * sizeof(int));
        }
        model_forward(m, inputs, batch, seq_len);
        model_loss(m, targets, losses);
        for (int b = 0; b < batch; b++) {
            int index = order[first + b].index;
            const scoring_request *r = &requests[index];
            int row = b * seq_len + r->context_length - 1;
            double log_likelihood = 0.0;
            for (int i = 0; i < r->continuation_length; i++) log_likelihood -= losses[row + i];
            results[index].log_likelihood = log_likelihood;
            results[index].greedy_match = false;
            if (!want_greedy) continue;
            eval_logits(m, row, r->continuation_length, logits);
            bool match = true;
            for (int i = 0; i < r->continuation_length && match; i++)
                match = eval_argmax(logits + (size_t)i * (size_t)vocab, vocab) == r->continuation[i];
            results[index].greedy_match = match;
        }
        first += batch;
    }
    free(order);
    free(inputs);
    free(targets);
    free(losses);
    ops_free(logits);
}
