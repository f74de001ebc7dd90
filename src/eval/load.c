#include "eval/load.h"

#include <errno.h>
#include <mpi.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/token_shard.h"

void eval_read_config(decon_config *config, const char *checkpoint) {
    char *text = checkpoint_read_config(checkpoint, MPI_COMM_WORLD);
    config_defaults(config);
    config_load_text(config, text, checkpoint);
    config_validate(config, checkpoint);
    free(text);
}

// fixedseqqk: X_1 of the fixed stream embeds the first max_seq_len training tokens.
static void set_fixed_tokens(model *m, const char *checkpoint) {
    const char *path = m->config.train;
    if (access(path, R_OK) != 0)
        fatal("%s: its fixedseqqk layers need their fixed token sequence, the first %d tokens of the training shard "
              "[data] train = %s, which cannot be read (%s); run from the directory it was trained in or put the "
              "shard there", checkpoint, m->max_seq_len, path, strerror(errno));
    token_shard shard;
    token_shard_open(&shard, path, m->config.vocab_size);
    if (shard.count < (uint64_t)m->max_seq_len)
        fatal("%s: the fixed token sequence needs %d tokens of the training shard %s, which holds %llu; use a "
              "shorter --ctx", checkpoint, m->max_seq_len, path, (unsigned long long)shard.count);
    int *tokens = xmalloc((size_t)m->max_seq_len * sizeof(int));
    for (int i = 0; i < m->max_seq_len; i++) tokens[i] = (int)token_shard_get(&shard, (uint64_t)i);
    model_set_fixed_tokens(m, tokens);
    free(tokens);
    token_shard_close(&shard);
}

void eval_load_model(model *m, const decon_config *config, const char *checkpoint, int max_batch, int max_seq_len,
                     train_state *state) {
    eval_build_model(m, config, checkpoint, NULL);
    eval_read_model(m, checkpoint, max_batch, max_seq_len, state);
}

void eval_build_model(model *m, const decon_config *config, const char *checkpoint, process_grid *grid) {
    model_build_parallel(m, config, checkpoint, grid);
}

void eval_read_model(model *m, const char *checkpoint, int max_batch, int max_seq_len, train_state *state) {
    model_allocate(m, max_batch, max_seq_len);
    checkpoint_read(checkpoint, &m->registry, m->params, NULL, NULL, state, MPI_COMM_WORLD);
    if (m->fixed_stream_from_tokens) set_fixed_tokens(m, checkpoint);
}
