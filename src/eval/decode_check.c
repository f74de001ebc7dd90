#include "eval/decode_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "eval/load.h"
#include "eval/logits.h"
#include "io/token_shard.h"
#include "model/decode.h"
#include "ops/ops.h"

enum { CHECK_SEQUENCES = 2 };

int eval_decode_check(const char *checkpoint, const char *tokens_path, int context, int threads) {
    ops_set_threads(threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    decon_config c;
    eval_read_config(&c, checkpoint);
    if (context <= 0) context = c.sequence_length;
    if (context < 4) fatal("--decode-check: context %d is too short; give --ctx 4 or more", context);
    const char *path = tokens_path ? tokens_path : c.validation;
    if (access(path, R_OK) != 0)
        fatal("--decode-check: cannot read the token shard %s for its prompts; give --ppl tokens.bin", path);
    token_shard shard;
    token_shard_open(&shard, path, c.vocab_size);
    int lengths[CHECK_SEQUENCES] = {context / 2, context / 4}, sequences[CHECK_SEQUENCES] = {0, 1};
    if (shard.count < (uint64_t)lengths[0] + (uint64_t)lengths[1])
        fatal("--decode-check: %s holds %llu tokens, fewer than the prompts need (%d)", path,
              (unsigned long long)shard.count, lengths[0] + lengths[1]);
    model m;
    eval_load_model(&m, &c, checkpoint, CHECK_SEQUENCES, context, NULL);
    int vocab = c.vocab_size, steps = context - lengths[0];
    int *tokens = xcalloc((size_t)CHECK_SEQUENCES * context, sizeof(int));
    for (int b = 0, at = 0; b < CHECK_SEQUENCES; at += lengths[b], b++)
        for (int i = 0; i < lengths[b]; i++) tokens[(size_t)b * context + i] = (int)token_shard_get(&shard, (uint64_t)at + (uint64_t)i);
    token_shard_close(&shard);

    // Greedy generation from the caches; cached[b][p] = the logits after token p.
    float *cached = xmalloc((size_t)CHECK_SEQUENCES * context * vocab * sizeof(float));
    float *logits = xmalloc((size_t)CHECK_SEQUENCES * vocab * sizeof(float));
    decode_session *s = decode_create(&m, CHECK_SEQUENCES, context);
    const int *prompts[CHECK_SEQUENCES] = {tokens, tokens + context};
    if (!decode_prefill(s, CHECK_SEQUENCES, sequences, prompts, lengths, logits))
        fatal("--decode-check: %s", decode_error(s));
    for (int step = 0; step <= steps; step++) {
        int next[CHECK_SEQUENCES];
        for (int b = 0; b < CHECK_SEQUENCES; b++) {
            int position = lengths[b] - 1 + step;
            memcpy(cached + ((size_t)b * context + position) * vocab, logits + (size_t)b * vocab,
                   (size_t)vocab * sizeof(float));  // decode_step's logits are host memory
            next[b] = eval_argmax(logits + (size_t)b * vocab, vocab);
            if (position + 1 < context) tokens[(size_t)b * context + position + 1] = next[b];
        }
        if (step < steps && !decode_step(s, next, logits)) fatal("--decode-check: %s", decode_error(s));
    }
    decode_free(s);

    // The full forward over the same tokens.
    float *full = ops_alloc((size_t)CHECK_SEQUENCES * context * vocab * sizeof(float));  // eval_logits: backend memory
    model_forward(&m, tokens, CHECK_SEQUENCES, context);
    eval_logits(&m, 0, CHECK_SEQUENCES * context, full);
    double worst = 0.0, scale = 0.0;
    int positions = 0, equal = 0, ties = 0;
    for (int b = 0; b < CHECK_SEQUENCES; b++)
        for (int p = lengths[b] - 1; p < lengths[b] + steps && p < context; p++) {
            const float *want = full + ((size_t)b * context + p) * vocab, *got = cached + ((size_t)b * context + p) * vocab;
            double diff = 0.0;
            for (int v = 0; v < vocab; v++) {
                double d = fabs((double)got[v] - want[v]);
                if (!(d <= diff)) diff = isnan(d) ? INFINITY : d;
                if (fabs((double)want[v]) > scale) scale = fabs((double)want[v]);
            }
            if (diff > worst) worst = diff;
            int greedy = eval_argmax(got, vocab), best = eval_argmax(want, vocab);
            positions++;
            if (greedy == best) equal++;
            else if ((double)want[best] - want[greedy] <= 2.0 * diff) ties++;
        }
    bool ok = equal + ties == positions && worst <= 1e-3 * fmax(scale, 1e-30);
    printf("decode-check %s (%s, %s): %d positions of %d sequences, greedy from the cache = full-forward argmax at "
           "%d (near ties %d), max |logit diff| %.3g (%.2g of max |logit| %.3g): %s\n",
           checkpoint, c.variant, c.layout, positions, CHECK_SEQUENCES, equal, ties, worst, worst / fmax(scale, 1e-30),
           scale, ok ? "equal" : "MISMATCH");
    fflush(stdout);
    ops_free(full);
    free(cached);
    free(logits);
    free(tokens);
    model_free(&m);
    return ok ? 0 : 1;
}
