#include "analysis/lowrank_calibration.h"

#include <limits.h>
#include <stdlib.h>

#include "analysis/lowrank_linalg.h"
#include "core/errors.h"

void lowrank_calibration_init(lowrank_calibration *s, const model *m) {
    const decon_config *c = &m->config;
    if (c->tensor_parallel != 1)
        fatal("lowrank calibration: the model must be built on one rank (tensor_parallel 1, not %d)",
              c->tensor_parallel);
    s->layers = c->num_hidden_layers;
    s->d = c->hidden_size;
    s->heads = c->num_attention_heads;
    s->head_dim = config_head_dim(c);
    s->intermediate = c->intermediate_size;
    s->tokens = 0.0;
    s->finished = false;
    size_t n = (size_t)(s->d + 1) * (size_t)(s->d + 1);
    s->collected = xcalloc((size_t)s->layers, sizeof *s->collected);
    s->input_corr = (double **)xcalloc((size_t)s->layers, sizeof *s->input_corr);
    s->head_corr = (double **)xcalloc((size_t)s->layers, sizeof *s->head_corr);
    s->mlp_corr = (double **)xcalloc((size_t)s->layers, sizeof *s->mlp_corr);
    for (int l = 0; l < s->layers; l++) {
        if (!m->plan[l]->is_standard) continue;
        s->collected[l] = true;
        s->input_corr[l] = xcalloc(n, sizeof(double));
        s->head_corr[l] = xcalloc(n * (size_t)s->heads, sizeof(double));
        s->mlp_corr[l] = xcalloc((size_t)s->intermediate * (size_t)s->intermediate, sizeof(double));
    }
}

void lowrank_calibration_accumulate(lowrank_calibration *s, model *m, const int *inputs, int batch, int seq_len) {
    if (s->finished) fatal("lowrank calibration: accumulate after finish");
    model_forward(m, inputs, batch, seq_len);
    mixer_context context = model_mixer_context(m);
    int d = s->d, n = d + 1, rows = batch * seq_len, mi = s->intermediate;
    size_t nn = (size_t)n * n, square = (size_t)seq_len * seq_len;
    // The real sequences are the first `batch` (a fixed stream, if any, comes last).
    double *x = xmalloc((size_t)rows * n * sizeof *x), *a = xmalloc(square * sizeof *a),
           *z = xmalloc((size_t)seq_len * n * sizeof *z), *h = xmalloc((size_t)rows * mi * sizeof *h);
    float *probs = xmalloc((size_t)s->heads * square * sizeof *probs);
    for (int l = 0; l < s->layers; l++) {
        if (!s->collected[l]) continue;
        const block_state *b = &m->blocks[l];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < d; c++) x[(size_t)r * n + c] = b->mixer_input[(size_t)r * d + c];
            x[(size_t)r * n + d] = 1.0;
        }
        lr_gemm(true, false, n, n, rows, 1.0, x, x, 1.0, s->input_corr[l]);
        for (int seq = 0; seq < batch; seq++) {
            m->plan[l]->attention_matrix(&m->mixers[l], &context, seq, probs);
            const double *xs = x + (size_t)seq * seq_len * n;
            for (int j = 0; j < s->heads; j++) {
                for (size_t e = 0; e < square; e++) a[e] = probs[(size_t)j * square + e];
                lr_gemm(false, false, seq_len, n, seq_len, 1.0, a, xs, 0.0, z);   // z~ = A_j x~
                lr_gemm(true, false, n, n, seq_len, 1.0, z, z, 1.0, s->head_corr[l] + (size_t)j * nn);
            }
        }
        for (size_t e = 0; e < (size_t)rows * mi; e++) h[e] = b->act[e];
        lr_gemm(true, false, mi, mi, rows, 1.0, h, h, 1.0, s->mlp_corr[l]);
    }
    s->tokens += rows;
    free(x);
    free(a);
    free(z);
    free(h);
    free(probs);
}

// In place, in pieces MPI's int count can address.
static void sum_over_ranks(double *values, size_t count, MPI_Comm comm) {
    for (size_t done = 0; done < count;) {
        size_t piece = count - done < (size_t)INT_MAX ? count - done : (size_t)INT_MAX;
        MPI_Allreduce(MPI_IN_PLACE, values + done, (int)piece, MPI_DOUBLE, MPI_SUM, comm);
        done += piece;
    }
}

static void divide(double *values, size_t count, double by) {
    for (size_t e = 0; e < count; e++) values[e] /= by;
}

void lowrank_calibration_finish(lowrank_calibration *s, MPI_Comm comm) {
    size_t nn = (size_t)(s->d + 1) * (size_t)(s->d + 1), mm = (size_t)s->intermediate * (size_t)s->intermediate;
    sum_over_ranks(&s->tokens, 1, comm);
    if (s->tokens <= 0.0) fatal("lowrank calibration: no tokens were accumulated");
    for (int l = 0; l < s->layers; l++) {
        if (!s->collected[l]) continue;
        sum_over_ranks(s->input_corr[l], nn, comm);
        sum_over_ranks(s->head_corr[l], nn * (size_t)s->heads, comm);
        sum_over_ranks(s->mlp_corr[l], mm, comm);
        divide(s->input_corr[l], nn, s->tokens);
        divide(s->head_corr[l], nn * (size_t)s->heads, s->tokens);
        divide(s->mlp_corr[l], mm, s->tokens);
    }
    s->finished = true;
}

void lowrank_calibration_free(lowrank_calibration *s) {
    for (int l = 0; l < s->layers; l++) {
        free(s->input_corr[l]);
        free(s->head_corr[l]);
        free(s->mlp_corr[l]);
    }
    free(s->collected);
    free((void *)s->input_corr);
    free((void *)s->head_corr);
    free((void *)s->mlp_corr);
    s->layers = 0;
}
