#include "train/trainer.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/errors.h"
#include "io/checkpoint.h"
#include "io/data_loader.h"
#include "io/metrics_log.h"
#include "model/model.h"
#include "ops/ops.h"
#include "par/grad_reduce.h"
#include "par/process_grid.h"
#include "par/zero.h"
#include "train/evaluate.h"
#include "train/nonfinite.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "record/recorder.h"
#include "train/schedule.h"
#include "train/signals.h"

// Ends every rank with one line when any rank failed: the first failing rank's message
// (in rank order) is broadcast and printed once (fatal_agreed). Collective.
static void fail_if_any_rank_failed(char *message, int size) {
    int rank, first;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    first = message[0] ? rank : INT_MAX;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == INT_MAX) return;
    MPI_Bcast(message, size, MPI_CHAR, first, MPI_COMM_WORLD);
    fatal_agreed("%s", message);
}

// mkdir -p, then prove the directory is writable with a probe file, so a bad run_dir
// (read-only, full, a parent that is a file) fails before any work is done. Every rank
// probes (on a cluster each node sees the file system for itself); one line in all.
// Collective.
static void prepare_directory(const char *path) {
    char message[CONFIG_STRING_MAX + 256] = "";
    char partial[CONFIG_STRING_MAX + 32];
    snprintf(partial, sizeof partial, "%s", path);
    for (char *p = partial + 1; *p && !message[0]; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(partial, 0755) != 0 && errno != EEXIST)
            snprintf(message, sizeof message, "cannot create directory %s (%s); set [io] run_dir to a writable place",
                     partial, strerror(errno));
        *p = '/';
    }
    if (!message[0] && mkdir(partial, 0755) != 0 && errno != EEXIST)
        snprintf(message, sizeof message, "cannot create run directory %s (%s); set [io] run_dir to a writable place",
                 path, strerror(errno));
    if (!message[0]) {
        char probe[CONFIG_STRING_MAX + 64];
        snprintf(probe, sizeof probe, "%s/.write_probe.%d", path, log_rank());  // one per rank: they run at once
        FILE *f = fopen(probe, "w");
        if (!f || fputs("ok\n", f) < 0 || fclose(f) != 0)
            snprintf(message, sizeof message, "run directory %s is not writable (%s); set [io] run_dir to a writable "
                     "place", path, strerror(errno));
        unlink(probe);
    }
    fail_if_any_rank_failed(message, (int)sizeof message);
}

static void write_text_file(const char *path, const char *text) {
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    FILE *f = fopen(temporary, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) fatal("cannot write %s (%s)", temporary, strerror(errno));
    if (rename(temporary, path) != 0) fatal("cannot rename %s to %s (%s)", temporary, path, strerror(errno));
}

// ckpt/latest.h5 -> step_XXXXXXXX.h5, replaced atomically.
static void point_latest(const char *checkpoint_dir, const char *file_name) {
    char link_path[4096], temporary[4096];
    snprintf(link_path, sizeof link_path, "%s/latest.h5", checkpoint_dir);
    snprintf(temporary, sizeof temporary, "%s/latest.h5.tmp", checkpoint_dir);
    unlink(temporary);
    if (symlink(file_name, temporary) != 0 || rename(temporary, link_path) != 0)
        warn("could not update %s (%s)", link_path, strerror(errno));
}

// Writes step_XXXXXXXX.h5 (its path into `path`, PATH_MAX bytes) and points latest.h5 at it.
static void save_checkpoint(const char *checkpoint_dir, const decon_config *c, model *m, adamw_state *optimizer,
                            const train_state *state, const char *config_text, char *path) {
    char name[64];
    snprintf(name, sizeof name, "step_%08lld.h5", (long long)state->step);
    snprintf(path, PATH_MAX, "%s/%s", checkpoint_dir, name);
    double t0 = wall_seconds();
    // Checkpoint I/O reads host memory: the parameters and this rank's moments come over.
    ops_to_host(m->params, m->params, m->registry.total * sizeof(float));
    ops_to_host(optimizer->m, optimizer->m, optimizer->count * sizeof(float));
    ops_to_host(optimizer->v, optimizer->v, optimizer->count * sizeof(float));
    checkpoint_write_partitioned(path, &m->registry, m->params, optimizer->m, optimizer->v, &optimizer->range, state,
                                 config_text, MPI_COMM_WORLD);
    if (log_rank() == 0) point_latest(checkpoint_dir, name);
    checkpoint_prune(checkpoint_dir, c->keep_checkpoints, MPI_COMM_WORLD);
    double seconds = wall_seconds() - t0;
    double megabytes = 3.0 * (double)params_total_logical(&m->registry) * 4.0 / 1e6;
    info("checkpoint %s (%.1f MB in %.2f s, %.0f MB/s)", path, megabytes, seconds, megabytes / seconds);
}

// One attention recording between steps (after the optimizer step, before the next):
// a forward-only pass that leaves parameters, gradients and data order untouched.
static void record_attention(attention_recorder *recorder, model *m, int64_t step, const char *config_text,
                             metrics_log *metrics) {
    recording_result result = recorder_record(recorder, m, step, config_text, MPI_COMM_WORLD);
    // The record ends when the slowest rank is done (loss and bytes agree on every rank).
    MPI_Allreduce(MPI_IN_PLACE, &result.seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    info("recorded attention at step %lld: %d layers x %d sequences, loss %.4f, %s now %.1f MB (%.2f s)",
         (long long)step, result.layers, recorder->sequences, result.loss, recorder->path,
         (double)result.bytes * 1e-6, result.seconds);
    metrics_log_write(metrics, "recording", "step", (double)step, "loss", result.loss, "seconds", result.seconds,
                      "bytes", (double)result.bytes, NULL);
}

// Prints the bytes a rank sent per collective kind in one step (the most any rank sent),
// next to the analytic volumes (DESIGN.md 7; docs/design.md "Traffic accounting").
static void print_traffic(const process_grid *grid, const model *m, int micro_batch, int seq_len, int accumulation,
                          metrics_log *metrics, int64_t step) {
    // The busiest rank's bytes per kind (ranks of a symmetric layout send the same), so
    // the printed table and the one metrics line hold the same figures.
    traffic_counter busiest = grid->traffic;
    MPI_Allreduce(MPI_IN_PLACE, busiest.bytes, TRAFFIC_KINDS, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, busiest.calls, TRAFFIC_KINDS, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    const traffic_counter *t = &busiest;
    double activations = t->bytes[TRAFFIC_TP_ALL_REDUCE] + t->bytes[TRAFFIC_TP_ALL_GATHER] +
                         t->bytes[TRAFFIC_TP_REDUCE_SCATTER];
    double expected = accumulation * model_tensor_parallel_traffic_bytes(m, micro_batch, seq_len, false);
    double megatron = accumulation * model_tensor_parallel_traffic_bytes(m, micro_batch, seq_len, true);
    info("traffic per step and rank (step %lld):", (long long)step);
    for (int k = 0; k < TRAFFIC_KINDS; k++)
        if (t->calls[k]) info("  %-18s %10.3f MB in %5ld calls", traffic_kind_name((traffic_kind)k), t->bytes[k] * 1e-6, t->calls[k]);
    if (grid->tensor_size > 1)
        info("  tp activations %.3f MB; formula %.3f MB (blocks alone, Megatron's 8(t-1)/t*s*b*h per layer: %.3f MB)",
             activations * 1e-6, expected * 1e-6, megatron * 1e-6);
    if (grid->data_size > 1)
        info("  dp all-reduce formula 2(p-1)/p * %.3f MB of gradients = %.3f MB", (double)m->registry.total * 4e-6,
             traffic_all_reduce_bytes((double)m->registry.total * 4.0, grid->data_size) * 1e-6);
    metrics_log_write(metrics, "traffic", "step", (double)step, "tp_all_reduce_bytes", t->bytes[TRAFFIC_TP_ALL_REDUCE],
                      "tp_all_gather_bytes", t->bytes[TRAFFIC_TP_ALL_GATHER], "tp_reduce_scatter_bytes",
                      t->bytes[TRAFFIC_TP_REDUCE_SCATTER], "tp_loss_bytes", t->bytes[TRAFFIC_TP_LOSS],
                      "tp_gradient_bytes", t->bytes[TRAFFIC_TP_GRADIENTS], "dp_all_reduce_bytes",
                      t->bytes[TRAFFIC_DP_ALL_REDUCE], "dp_all_gather_bytes", t->bytes[TRAFFIC_DP_ALL_GATHER],
                      "tp_activation_formula_bytes", expected, NULL);
}

int trainer_run(const trainer_options *options) {
    const decon_config *c = &options->config;
    int threads = c->threads > 0 ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    ops_set_threads(threads);
    if (!ops_set_precision(strcmp(c->precision, "bf16") == 0))
        fatal("%s: [train] precision = %s needs a GPU build (make GPU=cuda or GPU=hip); the %s build computes in "
              "fp32: set precision = fp32", options->origin, c->precision, ops_backend_name());
    process_grid grid;
    process_grid_create(&grid, MPI_COMM_WORLD, c, options->origin);

    prepare_directory(c->run_dir);
    char checkpoint_dir[CONFIG_STRING_MAX + 16];
    snprintf(checkpoint_dir, sizeof checkpoint_dir, "%s/ckpt", c->run_dir);
    prepare_directory(checkpoint_dir);

    model m;
    model_build_parallel(&m, c, options->origin, &grid);
    model_allocate(&m, c->micro_batch_size, c->sequence_length);
    // ZeRO-1: this rank's Adam moments cover its dp partition of the flat buffer only.
    moment_range *partitions = xcalloc((size_t)grid.data_size, sizeof *partitions);
    zero_partition_all(&m.registry, grid.data_size, partitions);
    zero_gather gather;
    zero_gather_init(&gather, partitions, grid.data_size);
    adamw_state optimizer;
    if (c->zero_stage == 1) optimizer_allocate_range(&optimizer, &m.registry, partitions[grid.data_rank]);
    else optimizer_allocate(&optimizer, &m.registry);
    grad_reducer reducer;
    grad_reducer_init(&reducer, &m.registry, m.grads, grid.data, grid.tensor, c->bucket_megabytes, &grid.traffic);

    data_loader train_data, validation_data;
    data_loader_open(&train_data, c->train, c->sequence_length, (uint64_t)c->seed, c->vocab_size);
    if (m.fixed_stream_from_tokens) {  // fixedseqqk's t_s: the first sequence_length tokens of the train shard
        int *fixed_tokens = xcalloc((size_t)c->sequence_length, sizeof(int));
        for (int i = 0; i < c->sequence_length; i++)
            fixed_tokens[i] = (int)token_shard_get(&train_data.shard, (uint64_t)i);
        model_set_fixed_tokens(&m, fixed_tokens);
        free(fixed_tokens);
    }
    bool have_validation = c->validation[0] != '\0';
    if (have_validation)
        data_loader_open(&validation_data, c->validation, c->sequence_length, (uint64_t)c->seed + 1, c->vocab_size);

    // Attention recordings: the first record_sequences windows of the validation shard,
    // read now so a bad setting fails before any training.
    bool recording = c->record_every > 0;
    attention_recorder recorder;
    if (recording) {
        char record_path[CONFIG_STRING_MAX + 16];
        config_record_path(c, record_path, sizeof record_path);
        recorder_init(&recorder, c, record_path, c->validation, c->record_sequences, c->record_layers,
                      c->record_dtype, "decon-train", options->origin, MPI_COMM_WORLD);
    }

    char *config_text = config_to_text(c);
    train_state state = {.seed = (uint64_t)c->seed};
    char *latest = options->resume ? checkpoint_find_latest(checkpoint_dir, MPI_COMM_WORLD) : NULL;
    char newest_checkpoint[PATH_MAX] = "";  // resumed from or written last: what a stop leaves intact
    if (latest) {
        char *stored_text = checkpoint_read_config(latest, MPI_COMM_WORLD);
        decon_config stored;
        config_defaults(&stored);
        config_load_text(&stored, stored_text, latest);
        const char *differing = NULL;
        if (!config_same_model(&stored, c, &differing))
            fatal("%s: cannot resume: the checkpoint's model differs from %s in key '%s'; use a new [io] run_dir or "
                  "the original config", latest, options->origin, differing);
        free(stored_text);
        checkpoint_read_partitioned(latest, &m.registry, m.params, optimizer.m, optimizer.v, &optimizer.range, &state,
                                    MPI_COMM_WORLD);
        ops_from_host(m.params, m.params, m.registry.total * sizeof(float));
        ops_from_host(optimizer.m, optimizer.m, optimizer.count * sizeof(float));
        ops_from_host(optimizer.v, optimizer.v, optimizer.count * sizeof(float));
        data_position position = {state.data_epoch, state.data_index};
        data_loader_seek(&train_data, position);
        info("resumed from %s at step %lld (%lld tokens seen)", latest, (long long)state.step,
             (long long)state.tokens_seen);
        snprintf(newest_checkpoint, sizeof newest_checkpoint, "%s", latest);
        free(latest);
    } else {
        if (options->resume) info("no valid checkpoint in %s: starting from scratch", checkpoint_dir);
        model_initialize(&m, (uint64_t)c->seed);  // drawn on the host (core/params.c)
        ops_from_host(m.params, m.params, m.registry.total * sizeof(float));
    }

    char path[2048];
    snprintf(path, sizeof path, "%s/config.ini", c->run_dir);
    if (log_rank() == 0) write_text_file(path, config_text);
    model_print_summary(&m);

    // Each dp replica takes global_batch / dp sequences of every step's global batch.
    int accumulation = c->global_batch_size / grid.data_size / c->micro_batch_size;
    size_t rows = (size_t)c->micro_batch_size * (size_t)c->sequence_length;
    double tokens_per_step = (double)c->global_batch_size * (double)c->sequence_length;
    double flops_per_token = model_training_flops_per_token(&m, c->sequence_length);
    // MFU against every rank's own sgemm peak (ranks share the machine's cores).
    double peak_gflops = measure_sgemm_peak_gflops() * grid.world_size;
    char layout[128];
    process_grid_describe(&grid, layout, sizeof layout);
    info("train: %d steps x %d sequences x %d tokens (micro-batch %d, %d accumulation steps per replica), %s%s, "
         "%d threads per rank", c->max_steps, c->global_batch_size, c->sequence_length, c->micro_batch_size,
         accumulation, layout, c->zero_stage ? ", ZeRO-1" : "", threads);
    info("memory: params %.1f MB, grads+Adam %.1f MB, activations %.1f MB; sgemm peak %.1f GFLOP/s (OpenBLAS %s)",
         (double)m.registry.total * 4e-6, 3.0 * (double)m.registry.total * 4e-6, (double)model_activation_bytes(&m) * 1e-6,
         peak_gflops, ops_blas_core_name());

    snprintf(path, sizeof path, "%s/metrics.jsonl", c->run_dir);
    metrics_log metrics;  // one writer, world rank 0, so each event is one line at any number of ranks
    if (log_rank() == 0) metrics_log_open(&metrics, path);
    else metrics_log_discard(&metrics);
    bool skip_nonfinite = strcmp(c->on_nonfinite, "skip") == 0;
    int *inputs = xmalloc(rows * sizeof(int)), *targets = xmalloc(rows * sizeof(int));
    signals_install();
    progress_meter meter;
    progress_start(&meter, state.step, c->max_steps);
    double validation_loss = NAN;
    int exit_code = 0;
    if (recording && state.step == 0) record_attention(&recorder, &m, 0, config_text, &metrics);  // at initialisation

    int64_t first_step = state.step;
    while (state.step < c->max_steps) {
        double t0 = wall_seconds();
        traffic_reset(&grid.traffic);
        memset(m.grads, 0, m.registry.total * sizeof(float));
        double loss_sum = 0.0;
        for (int micro = 0; micro < accumulation; micro++) {
            // The dp reduction overlaps the backward of the step's last micro-batch.
            bool last_micro = micro == accumulation - 1;
            if (last_micro) grad_reducer_begin(&reducer);
            m.reducer = last_micro ? &reducer : NULL;
            data_loader_next(&train_data, inputs, targets, c->micro_batch_size, grid.data_rank, grid.data_size);
            model_forward(&m, inputs, c->micro_batch_size, c->sequence_length);
            loss_sum += model_backward(&m, targets, (float)(1.0 / tokens_per_step), NULL);
        }
        grad_reducer_finish(&reducer);
        MPI_Allreduce(MPI_IN_PLACE, &loss_sum, 1, MPI_DOUBLE, MPI_SUM, grid.data);
        double loss = loss_sum / tokens_per_step;
        double grad_norm = grad_reducer_global_norm(&reducer);
        double lr = schedule_learning_rate(c, state.step);
        // Non-finite loss or gradient (the norm is finite exactly when every gradient is),
        // decided over every rank so that all take the same action ([train] on_nonfinite).
        int nonfinite = !isfinite(loss) || !isfinite(grad_norm);
        MPI_Allreduce(MPI_IN_PLACE, &nonfinite, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (nonfinite) {
            char what[1024];
            nonfinite_describe(what, sizeof what, &m.registry, m.params, m.grads, loss, MPI_COMM_WORLD);
            progress_end_line(&meter);
            if (!skip_nonfinite)  // nothing of this step is kept: no update, no checkpoint of it
                fatal_agreed("step %lld is not finite (%s); [train] on_nonfinite = stop: stopped before the update, "
                             "%s%s; lower [train] learning_rate, raise warmup_steps or set train.on_nonfinite=skip",
                             (long long)state.step + 1, what,
                             newest_checkpoint[0] ? "the newest checkpoint is intact: " : "no checkpoint yet",
                             newest_checkpoint);
            state.skipped_steps++;
            info("step %lld skipped: not finite (%s); %lld skipped so far ([train] on_nonfinite = skip)",
                 (long long)state.step + 1, what, (long long)state.skipped_steps);
        } else {
            // Adam's bias correction counts the updates applied, not the skipped steps.
            optimizer_step(&optimizer, &m.registry, m.params, m.grads, c, lr, grad_norm,
                           state.step + 1 - state.skipped_steps);
            if (c->zero_stage == 1) zero_all_gather_params(m.params, &gather, grid.data, &grid.traffic);
        }
        state.step++;
        state.tokens_seen += (int64_t)tokens_per_step;
        state.data_epoch = train_data.position.epoch;
        state.data_index = train_data.position.index;
        state.learning_rate = lr;
        if (!nonfinite) state.loss = loss;
        // One reduction after the step: its time is the slowest rank's (the step ends when
        // that rank is done), and a signal may reach one rank only (kill -TERM of one
        // process): every rank stops.
        double after_step[2] = {wall_seconds() - t0, (double)signals_received()};
        MPI_Allreduce(MPI_IN_PLACE, after_step, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        double seconds = after_step[0];
        int signal_number = (int)after_step[1];
        bool stopping = signal_number != 0;
        double tokens_per_second = tokens_per_step / seconds;
        double mfu = progress_mfu(tokens_per_step, seconds, flops_per_token, peak_gflops);

        if (nonfinite) {  // each step is one line: "train", or "skipped" when it was dropped
            metrics_log_write(&metrics, "skipped", "step", (double)state.step, "loss", loss, "grad_norm", grad_norm,
                              "skipped_steps", (double)state.skipped_steps, NULL);
        } else if (state.step % c->log_every == 0 || state.step == c->max_steps) {
            progress_print(&meter, state.step, loss, lr, grad_norm, tokens_per_second, mfu);
            metrics_log_write(&metrics, "train", "step", (double)state.step, "loss", loss, "lr", lr, "grad_norm",
                              grad_norm, "tokens", (double)state.tokens_seen, "tokens_per_s", tokens_per_second,
                              "mfu", mfu, "step_time_s", seconds, "skipped_steps", (double)state.skipped_steps, NULL);
        }
        if (state.step == first_step + 1 && grid.world_size > 1) {
            progress_end_line(&meter);
            print_traffic(&grid, &m, c->micro_batch_size, c->sequence_length, accumulation, &metrics, state.step);
        }
        bool last = state.step == c->max_steps;
        if (have_validation && (last || (c->eval_every > 0 && state.step % c->eval_every == 0))) {
            validation_loss = evaluate_loss(&m, &validation_data, c->eval_batches, c->micro_batch_size,
                                            c->sequence_length, inputs, targets);
            progress_end_line(&meter);
            info("validation at step %lld: loss %.4f, perplexity %.2f", (long long)state.step, validation_loss,
                 exp(validation_loss));
            metrics_log_write(&metrics, "validation", "step", (double)state.step, "loss", validation_loss,
                              "perplexity", exp(validation_loss), NULL);
        }
        // Before the checkpoint: a run that dies while recording resumes from an earlier
        // checkpoint and records this step again (the file replaces the step's group).
        if (recording && (last || state.step % c->record_every == 0)) {
            progress_end_line(&meter);
            record_attention(&recorder, &m, state.step, config_text, &metrics);
        }
        if (last || stopping || (c->checkpoint_every > 0 && state.step % c->checkpoint_every == 0)) {
            progress_end_line(&meter);
            save_checkpoint(checkpoint_dir, c, &m, &optimizer, &state, config_text, newest_checkpoint);
        }
        if (stopping && !last) {
            info("stopped by signal %d after step %lld; continue with --resume", signal_number,
                 (long long)state.step);
            exit_code = 128 + signal_number;
            break;
        }
    }
    progress_end_line(&meter);
    if (!isnan(validation_loss))
        info("final validation loss %.4f, perplexity %.2f", validation_loss, exp(validation_loss));
    info("peak resident memory %.0f MB", peak_resident_megabytes());

    metrics_log_close(&metrics);
    free(inputs);
    free(targets);
    free(config_text);
    data_loader_close(&train_data);
    if (have_validation) data_loader_close(&validation_data);
    if (recording) recorder_free(&recorder);
    optimizer_free(&optimizer);
    grad_reducer_free(&reducer);
    free(partitions);
    zero_gather_free(&gather);
    model_free(&m);
    process_grid_free(&grid);
    return exit_code;
}
