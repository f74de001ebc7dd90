#include "eval/logits.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/durable_file.h"
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


void eval_write_logits(model *m, const int *tokens, int length, const char *path) {
    int vocab = m->config.vocab_size;
    float *logits = xmalloc((size_t)length * (size_t)vocab * sizeof(float));
    model_forward(m, tokens, 1, length);
    eval_logits(m, 0, length, logits);
    // .npy version 1.0: magic, version, header length (uint16 LE), a Python dict literal
    // padded with spaces and ended by a newline so that the data starts at a multiple of 64.
    char header[256];
    int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", length,
                     vocab);
    int total = (10 + n + 1 + 63) / 64 * 64;
    for (int i = n; i < total - 10 - 1; i++) header[i] = ' ';
    header[total - 10 - 1] = '\n';
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)((total - 10) & 0xff),
                                  (unsigned char)((total - 10) >> 8)};
    char tmp[4096 + 8];
    if (strlen(path) >= 4096) fatal("--logits path is too long: %.80s...", path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) fatal("cannot write the logits file %s (%s); check that its directory exists", tmp, strerror(errno));
    size_t count = (size_t)length * (size_t)vocab;
    int ok = fwrite(preamble, 1, 10, f) == 10 && fwrite(header, 1, (size_t)(total - 10), f) == (size_t)(total - 10) &&
             fwrite(logits, sizeof(float), count, f) == count;  // x86 and every supported host: little-endian
    if (fclose(f) != 0) ok = 0;
    free(logits);
    if (!ok) {
        unlink(tmp);
        fatal("cannot write the logits file %s (%s)", tmp, strerror(errno));
    }
    char message[8192];
    durable_publish(tmp, path, "logits file", NULL, message, sizeof message);
    if (message[0]) fatal("%s", message);
}
