#include "eval/logits.h"

#include <math.h>

#include "core/errors.h"
#include "ops/ops.h"

void eval_logits(const model *m, int first_row, int rows, float *logits) {
    int d = m->config.hidden_size, vocab = m->config.vocab_size;
    int loss_rows = (m->batch - m->has_fixed_stream) * m->seq_len;  // the fixed stream has no logits
    if (first_row < 0 || rows < 0 || first_row + rows > loss_rows)
        fatal("internal: logits of rows %d..%d outside the last forward", first_row, first_row + rows);
    const float *hidden = m->final_normed + (size_t)first_row * (size_t)d;
    const float *weight = m->params + m->registry.items[m->lm_head].offset;  // [vocab, d]
    gemm(false, true, rows, vocab, d, 1.0f, hidden, d, weight, d, 0.0f, logits, vocab);
    ops_to_host(logits, logits, (size_t)rows * (size_t)vocab * sizeof(float));  // the caller reads them on the host
}

int eval_argmax(const float *logits, int vocab) {
    int best = 0;
    for (int v = 1; v < vocab; v++)
        if (logits[v] > logits[best]) best = v;
    return best;
}

