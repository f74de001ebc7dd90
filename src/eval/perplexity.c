#include "eval/perplexity.h"

#include <math.h>

#include "core/errors.h"

int64_t perplexity_window_count(int64_t tokens, int context, int stride) {
    int64_t targets = tokens - 1;
    if (targets < 1) return 0;
    if (targets <= context) return 1;
    return (targets - context + stride - 1) / stride + 1;
}

perplexity_window perplexity_window_at(int64_t tokens, int context, int stride, int64_t index) {
    int64_t targets = tokens - 1;
    if (targets <= context) return (perplexity_window){0, (int)targets, 0};
    int64_t count = perplexity_window_count(tokens, context, stride);
    perplexity_window w = {index * stride, context, 0};
    if (index == count - 1 && w.start + context > targets) w.start = targets - context;  // end-aligned
    if (index > 0) {
        int64_t previous_end = (index - 1) * stride + context;  // last target of the previous window
        w.first_scored = (int)(previous_end - w.start);
    }
    return w;
}

perplexity_result perplexity_evaluate(model *m, const int *tokens, int64_t count, int context, int stride,
                                      int64_t max_windows) {
    if (context < 1 || stride < 1 || stride > context)
        fatal("internal: perplexity window context %d, stride %d", context, stride);
    perplexity_result r = {.context = context, .stride = stride};
    r.windows_total = perplexity_window_count(count, context, stride);
    r.windows = max_windows > 0 && max_windows < r.windows_total ? max_windows : r.windows_total;
    int length = r.windows ? perplexity_window_at(count, context, stride, 0).length : 0;
    if (length > m->max_seq_len) fatal("internal: context %d exceeds the allocated %d", length, m->max_seq_len);
    int batch = m->max_batch;
    size_t rows = (size_t)batch * (size_t)context;
    int *inputs = xmalloc(rows * sizeof(int)), *targets = xmalloc(rows * sizeof(int));
    for (int64_t first = 0; first < r.windows; first += batch) {
        int in_batch = (int)(r.windows - first < batch ? r.windows - first : batch);
        for (int b = 0; b < in_batch; b++) {
            perplexity_window w = perplexity_window_at(count, context, stride, first + b);
            int *in = inputs + (size_t)b * (size_t)length, *out = targets + (size_t)b * (size_t)length;
            for (int p = 0; p < length; p++) {
                in[p] = tokens[w.start + p];
                out[p] = p >= w.first_scored ? tokens[w.start + p + 1] : -1;
            }
            r.tokens_scored += length - w.first_scored;
        }
        model_forward(m, inputs, in_batch, length);
        r.loss_sum += model_loss(m, targets, NULL);
    }
    free(inputs);
    free(targets);
    r.loss = r.tokens_scored ? r.loss_sum / (double)r.tokens_scored : NAN;
    r.perplexity = exp(r.loss);
    return r;
}
