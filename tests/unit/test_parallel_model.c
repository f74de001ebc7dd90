// Every parallel decomposition against the single-rank run (issue 4, DESIGN.md 7).
//
// Without arguments this program launches itself under `mpirun --oversubscribe -np N`
// once per decomposition (tp=2, tp=2+sp, dp=2, dp=2 x tp=2, the same with ZeRO-1 and with
// sp) and relays the children's PASS/FAIL lines. Each child loops over every mixer, in
// uniform and hybrid:even layouts (the one-step decompositions also hybrid:even with
// [model] head_dim = 12 != d / heads = 8); on every rank it builds the single-rank reference model
// (MPI_COMM_SELF) next to its shard of the parallel model, runs the same global batch
// through both, and compares the loss, every gradient (the rank's slice against the same
// slice of the reference's logical tensor), the gradient norm and, after `steps` AdamW
// steps, every parameter. First, on its grid, it checks that the edges of the
// tensor-parallel layers (par/layers.h) are adjoint: each backward the conjugate of its
// forward.
//
// Tolerances: the decompositions differ from the single rank only in summation order
// (partial sums over tp and dp ranks, chunked vocabulary softmax, expf instead of the
// single-rank fast_expf), i.e. fp32 rounding of O(1e-7) per operation growing to ~1e-6
// through two layers: gradients must agree to 1e-4 norm-wise per tensor (1e-5 in practice),
// the loss to 1e-5. After AdamW steps, parameters are compared as the norm of the
// difference over the norm of the distance the reference travelled from initialisation,
// over the whole model (< 1e-3): per tensor, Adam's division by sqrt(v) amplifies
// rounding noise in gradients that are themselves near rounding level (the key bias of
// softmax attention: without RoPE q_i.b_k shifts a whole row of scores and its gradient
// would vanish; RoPE turns b_k by position, so only that turn's small effect over 8
// positions remains), so those few tensors move by O(lr) in random directions in any two
// implementations; the worst tensor is printed for information. Every mixer runs with
// its default settings (approx-diag's guard included: docs/design.md, "approx-diag").
//
// The runs of several steps also check that nothing is allocated inside the step loop
// (issue 11): core_allocation_count() (every x*alloc) must not move during steps 1..N of
// the parallel model and of the single-rank reference, forward, backward, the dp
// reduction, AdamW and ZeRO-1's all-gather included.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/model.h"
#include "par/grad_reduce.h"
#include "par/layers.h"
#include "par/process_grid.h"
#include "par/traffic.h"
#include "par/zero.h"
#include "child_process.h"
#include "testing.h"
#include "train/optimizer.h"

enum { GLOBAL_BATCH = 4, SEQ_LEN = 8, VOCAB = 64 };

static const char *const VARIANTS[] = {"standard", "mlp", "approx", "approx-diag", "nonapx", "rndembqk",
                                       "fixedseqqk", "staticembqk", "mhe-add", "mhe-mul"};
static const char *const LAYOUTS[] = {"uniform", "hybrid:even"};

enum { LAYER_SHAPES = -1 };  // small_config's head_dim: per-layer lists instead

static void small_config(decon_config *c, const char *variant, const char *layout, int tp, bool sp, int zero,
                         int micro_batch, int head_dim) {
    config_defaults(c);
    c->hidden_size = 32;
    c->head_dim = head_dim > 0 ? head_dim : 0;  // 0: d / heads = 8
    if (head_dim == LAYER_SHAPES) {  // a compressed model's per-layer shapes (A3): r_qk, r_v, m per layer
        snprintf(c->layer_head_dims, sizeof c->layer_head_dims, "12,6");
        snprintf(c->layer_value_head_dims, sizeof c->layer_value_head_dims, "12,10");  // layer 2: standard
        snprintf(c->layer_intermediate_sizes, sizeof c->layer_intermediate_sizes, "24,56");
    }
    // With a head size of its own, a base at which every rotary pair turns over 8 positions:
    // at 1e6 the slowest pairs barely turn and the key bias's gradient there is rounding
    // noise, which Adam's first step blows up to +-lr (measured: 2.2e-3 vs 8e-7 here).
    if (head_dim) c->rope_theta = 100.0;
    c->intermediate_size = 40;
    c->num_hidden_layers = 2;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 2;
    c->vocab_size = VOCAB;
    c->sequence_length = SEQ_LEN;
    c->micro_batch_size = micro_batch;
    c->global_batch_size = GLOBAL_BATCH;
    c->tie_word_embeddings = strcmp(variant, "standard") != 0;  // one untied LM head
    c->attention_bias = true;
    c->initializer_range = 0.2;  // large enough that attention is far from uniform
    c->learning_rate = 1e-3;
    c->weight_decay = 0.1;
    c->grad_clip = 1.0;
    c->tensor_parallel = tp;
    c->sequence_parallel = sp;
    c->zero_stage = zero;
    c->bucket_megabytes = 0.002;  // several buckets even for this small model
    snprintf(c->variant, sizeof c->variant, "%s", variant);
    snprintf(c->layout, sizeof c->layout, "%s", layout);
}

static void batch_tokens(int *inputs, int *targets, int step) {
    for (int i = 0; i < GLOBAL_BATCH * SEQ_LEN; i++) {
        inputs[i] = (int)(rng_uniform(77, (uint64_t)step, (uint64_t)i) * VOCAB) % VOCAB;
        targets[i] = (int)(rng_uniform(78, (uint64_t)step, (uint64_t)i) * VOCAB) % VOCAB;
    }
    targets[3] = -1;  // an ignored position
}

// Norm-wise error of this rank's slice of each tensor against the same slice of the
// reference's logical tensor; the worst one and its name.
static void worst_gradient(const model *parallel, const model *reference, double *worst, char *worst_name) {
    float *expected = xmalloc(parallel->registry.total * sizeof(float));
    for (int i = 0; i < parallel->registry.count; i++) {
        const param_info *p = &parallel->registry.items[i], *q = &reference->registry.items[i];
        if (strcmp(p->name, q->name) != 0) fatal("registries differ at %d: %s vs %s", i, p->name, q->name);
        params_logical_to_slice(p, reference->grads + q->offset, expected);
        double diff = 0.0, norm = 0.0;
        for (size_t e = 0; e < p->local_count; e++) {
            double delta = (double)parallel->grads[p->offset + e] - expected[e];
            diff += delta * delta;
            norm += (double)expected[e] * expected[e];
        }
        double error = sqrt(diff) / fmax(sqrt(norm), 1e-30);
        if (error > *worst) {
            *worst = error;
            snprintf(worst_name, PARAM_NAME_MAX, "%s", p->name);
        }
    }
    free(expected);
}

typedef struct {
    double loss, gradients, norm;       // worst relative errors
    double parameters;                  // ||p - p_reference|| / ||p_reference - p_initial||, whole model
    double worst_tensor;                // the worst tensor's ||p - p_reference|| / ||p_reference - p_initial||
    double traffic;                     // |counted - formula| / formula of step 0's tp activation and dp bytes
    double step_allocations;            // x*alloc calls during steps 1..N (the most on any rank)
    char worst_gradient[PARAM_NAME_MAX], worst_parameter[PARAM_NAME_MAX];
} case_errors;

static case_errors run_case(process_grid *grid, const char *variant, const char *layout, int zero_stage, int steps,
                            int head_dim) {
    int tp = grid->tensor_size, dp = grid->data_size;
    int micro = GLOBAL_BATCH / dp / 2 > 0 ? GLOBAL_BATCH / dp / 2 : 1;  // two micro-batches when possible
    decon_config c, reference_config;
    small_config(&c, variant, layout, tp, grid->sequence_parallel, zero_stage, micro, head_dim);
    small_config(&reference_config, variant, layout, 1, false, 0, GLOBAL_BATCH, head_dim);
    model parallel, reference;
    model_build_parallel(&parallel, &c, "parallel", grid);
    model_allocate(&parallel, micro, SEQ_LEN);
    model_build(&reference, &reference_config, "reference");
    model_allocate(&reference, GLOBAL_BATCH, SEQ_LEN);
    model_initialize(&parallel, 11);
    model_initialize(&reference, 11);
    float *initial = xmalloc(reference.registry.total * sizeof(float));
    memcpy(initial, reference.params, reference.registry.total * sizeof(float));
    int fixed[SEQ_LEN];
    for (int i = 0; i < SEQ_LEN; i++) fixed[i] = (5 * i + 3) % VOCAB;
    if (parallel.fixed_stream_from_tokens) {
        model_set_fixed_tokens(&parallel, fixed);
        model_set_fixed_tokens(&reference, fixed);
    }
    grad_reducer reducer;
    grad_reducer_init(&reducer, &parallel.registry, parallel.grads, grid->data, grid->tensor, c.bucket_megabytes,
                      &grid->traffic);
    bool zero = c.zero_stage == 1;
    moment_range *ranges = xcalloc((size_t)dp, sizeof *ranges);
    zero_partition_all(&parallel.registry, dp, ranges);
    zero_gather gather;
    zero_gather_init(&gather, ranges, dp);
    adamw_state optimizer, reference_optimizer;
    if (zero) optimizer_allocate_range(&optimizer, &parallel.registry, ranges[grid->data_rank]);
    else optimizer_allocate(&optimizer, &parallel.registry);
    optimizer_allocate(&reference_optimizer, &reference.registry);

    case_errors errors = {0};
    int inputs[GLOBAL_BATCH * SEQ_LEN], targets[GLOBAL_BATCH * SEQ_LEN];
    int per_rank = GLOBAL_BATCH / dp;
    // Counted from the first step on (sp's staging buffer included: model_allocate
    // reserves it); the test's own comparison after the first step allocates, and is
    // taken out.
    unsigned long long allocations_before = core_allocation_count(), check_allocations = 0;
    for (int step = 0; step < steps; step++) {
        traffic_reset(&grid->traffic);
        batch_tokens(inputs, targets, step);
        int valid = 0;
        for (int i = 0; i < GLOBAL_BATCH * SEQ_LEN; i++) valid += targets[i] >= 0;
        float scale = 1.0f / (float)valid;
        memset(reference.grads, 0, reference.registry.total * sizeof(float));
        model_forward(&reference, inputs, GLOBAL_BATCH, SEQ_LEN);
        double reference_loss = model_backward(&reference, targets, scale, NULL);
        memset(parallel.grads, 0, parallel.registry.total * sizeof(float));
        double loss = 0.0;
        for (int m0 = 0; m0 < per_rank; m0 += micro) {
            bool last = m0 + micro >= per_rank;
            if (last) grad_reducer_begin(&reducer);
            parallel.reducer = last ? &reducer : NULL;
            size_t offset = (size_t)(grid->data_rank * per_rank + m0) * SEQ_LEN;
            model_forward(&parallel, inputs + offset, micro, SEQ_LEN);
            loss += model_backward(&parallel, targets + offset, scale, NULL);
        }
        grad_reducer_finish(&reducer);
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, grid->data);
        double reference_norm = gradient_global_norm(reference.grads, reference.registry.total);
        double norm = grad_reducer_global_norm(&reducer);
        if (step == 0) {
            const traffic_counter *t = &grid->traffic;
            double counted = t->bytes[TRAFFIC_TP_ALL_REDUCE] + t->bytes[TRAFFIC_TP_ALL_GATHER] +
                             t->bytes[TRAFFIC_TP_REDUCE_SCATTER];
            int micro_batches = per_rank / micro;
            double formula = micro_batches * model_tensor_parallel_traffic_bytes(&parallel, micro, SEQ_LEN, false);
            double dp_formula = traffic_all_reduce_bytes((double)parallel.registry.total * sizeof(float), dp);
            errors.traffic = fabs(counted - formula) / fmax(formula, 1.0) +
                             fabs(t->bytes[TRAFFIC_DP_ALL_REDUCE] - dp_formula) / fmax(dp_formula, 1.0);
            if (tp > 1 && formula <= 0.0) errors.traffic = 1.0;  // the formula must see the tp traffic
            errors.loss = fabs(loss - reference_loss) / fabs(reference_loss);
            errors.norm = fabs(norm - reference_norm) / reference_norm;
            unsigned long long before_check = core_allocation_count();
            worst_gradient(&parallel, &reference, &errors.gradients, errors.worst_gradient);
            check_allocations = core_allocation_count() - before_check;
        }
        optimizer_step(&reference_optimizer, &reference.registry, reference.params, reference.grads,
                       &reference_config, reference_config.learning_rate, reference_norm, step + 1);
        optimizer_step(&optimizer, &parallel.registry, parallel.params, parallel.grads, &c, c.learning_rate, norm,
                       step + 1);
        if (zero) zero_all_gather_params(parallel.params, &gather, grid->data, &grid->traffic);
    }
    errors.step_allocations = (double)(core_allocation_count() - allocations_before - check_allocations);
    // Squared differences of this rank's slices (replicated tensors once per tp group)
    // against the reference, and the reference's squared travel from initialisation.
    double sums[2] = {0.0, 0.0};
    float *expected = xmalloc(parallel.registry.total * sizeof(float));
    for (int i = 0; i < parallel.registry.count; i++) {
        const param_info *p = &parallel.registry.items[i], *q = &reference.registry.items[i];
        params_logical_to_slice(p, reference.params + q->offset, expected);
        double diff = 0.0, travel = 0.0;
        for (size_t e = 0; e < p->local_count; e++) {
            double delta = (double)parallel.params[p->offset + e] - expected[e];
            diff += delta * delta;
        }
        for (size_t e = 0; e < q->local_count; e++) {
            double delta = (double)reference.params[q->offset + e] - initial[q->offset + e];
            travel += delta * delta;
        }
        if (p->shard != SHARD_NONE || grid->tensor_rank == 0) sums[0] += diff;
        double tensor_error = sqrt(diff) / fmax(sqrt(travel), 1e-30);
        if (tensor_error > errors.worst_tensor) {
            errors.worst_tensor = tensor_error;
            snprintf(errors.worst_parameter, PARAM_NAME_MAX, "%s", p->name);
        }
        sums[1] += travel;
    }
    free(expected);
    MPI_Allreduce(MPI_IN_PLACE, sums, 1, MPI_DOUBLE, MPI_SUM, grid->tensor);
    errors.parameters = sqrt(sums[0]) / fmax(sqrt(sums[1]), 1e-30);
    double worst[7] = {errors.loss, errors.gradients, errors.norm, errors.parameters, errors.worst_tensor,
                       errors.traffic, errors.step_allocations};
    MPI_Allreduce(MPI_IN_PLACE, worst, 7, MPI_DOUBLE, MPI_MAX, grid->world);
    errors.step_allocations = worst[6];
    errors.traffic = worst[5];
    errors.loss = worst[0];
    errors.gradients = worst[1];
    errors.norm = worst[2];
    errors.parameters = worst[3];
    errors.worst_tensor = worst[4];
    free(initial);
    free(ranges);
    zero_gather_free(&gather);
    optimizer_free(&optimizer);
    optimizer_free(&reference_optimizer);
    grad_reducer_free(&reducer);
    model_free(&parallel);
    model_free(&reference);
    return errors;
}

// The two edges of the tensor-parallel layers (par/layers.h) are adjoint pairs, as
// Megatron's conjugate region ops are: <forward(x), g> = <x, backward(g)>. Inner
// products count what the tp group holds: inside the region every rank's tensor,
// outside every shard once (without sp the outside tensor is the same on every rank and
// counts once). Values are multiples of 1/8 below 2, so every sum is exact.
static double tp_dot(const process_grid *grid, const float *a, const float *b, size_t count, bool per_rank) {
    double dot = 0.0;
    for (size_t i = 0; i < count; i++) dot += (double)a[i] * (double)b[i];
    if (per_rank) MPI_Allreduce(MPI_IN_PLACE, &dot, 1, MPI_DOUBLE, MPI_SUM, grid->tensor);
    return dot;
}

static void fill_eighths(float *x, size_t count, int seed) {
    for (size_t i = 0; i < count; i++) x[i] = (float)((i * 7 + (size_t)seed * 5) % 16) / 8.0f;
}

static void check_layer_edges(process_grid *grid, const char *label) {
    int tp = grid->tensor_size, batch = 3, seq_len = 2 * tp, width = 5;
    bool sp = grid->sequence_parallel;
    size_t full = (size_t)batch * seq_len * width, shard = sp ? full / (size_t)tp : full;
    int rank_seed = sp ? grid->tensor_rank + 1 : 0;  // outside tensors differ per rank only with sp
    float *x0 = xcalloc(shard, sizeof(float)), *g0 = xcalloc(full, sizeof(float));
    float *shard_buffer = xcalloc(shard, sizeof(float)), *full_buffer = xcalloc(full, sizeof(float));
    float *other = xcalloc(full, sizeof(float));
    // Column-parallel input: x outside -> every rank's copy inside; g: each rank's partial gradient.
    fill_eighths(x0, shard, rank_seed);
    fill_eighths(g0, full, 10 + grid->tensor_rank);
    region_activation x = column_parallel_input_of(grid, full_buffer, shard_buffer);
    memcpy(x.shard, x0, shard * sizeof(float));
    column_parallel_input_forward(grid, x, batch, seq_len, width);
    double forward_side = tp_dot(grid, x.full, g0, full, true);
    region_activation g = column_parallel_input_of(grid, other, shard_buffer);
    memcpy(g.full, g0, full * sizeof(float));
    column_parallel_input_backward(grid, g, batch, seq_len, width);
    double backward_side = tp_dot(grid, x0, g.shard, shard, sp);
    bool column_ok = forward_side == backward_side && forward_side != 0.0;
    // Row-parallel output: each rank's partial y inside -> the sum outside; g outside.
    fill_eighths(g0, full, 20 + grid->tensor_rank);  // y's partial on this rank
    fill_eighths(x0, shard, 30 + rank_seed);         // the gradient outside
    region_activation y = row_parallel_output_of(grid, shard_buffer, full_buffer);
    memcpy(y.full, g0, full * sizeof(float));
    row_parallel_output_forward(grid, y, batch, seq_len, width);
    forward_side = tp_dot(grid, y.shard, x0, shard, sp);
    g = row_parallel_output_of(grid, shard_buffer, other);
    memcpy(g.shard, x0, shard * sizeof(float));
    row_parallel_output_backward(grid, g, batch, seq_len, width);
    backward_side = tp_dot(grid, g0, g.full, full, true);
    bool row_ok = forward_side == backward_side && forward_side != 0.0;
    if (grid->world_rank == 0) {
        char name[256];
        snprintf(name, sizeof name, "%s: column-parallel input edge, backward is the forward's adjoint", label);
        testing_report(column_ok, name, "sides differ");
        snprintf(name, sizeof name, "%s: row-parallel output edge, backward is the forward's adjoint", label);
        testing_report(row_ok, name, "sides differ");
    }
    free(x0);
    free(g0);
    free(shard_buffer);
    free(full_buffer);
    free(other);
}

static int child_main(int tp, bool sp, int zero_stage, int steps, const char *label) {
    decon_config c;
    small_config(&c, "standard", "uniform", tp, sp, zero_stage, 1, 0);
    process_grid grid;
    process_grid_create(&grid, MPI_COMM_WORLD, &c, label);
    check_layer_edges(&grid, label);
    // Every variant in both layouts at d_h = d / heads = 8, then (hybrid:even: the variant
    // and standard) at a head size of its own, 12 (heads x d_h = 48 != d = 32), in the
    // one-step decompositions (tp, tp+sp, dp, dp+ZeRO-1: the 10-step runs add no split).
    size_t layouts = sizeof LAYOUTS / sizeof LAYOUTS[0], cases = steps == 1 ? layouts + 1 : layouts;
    for (size_t v = 0; v < sizeof VARIANTS / sizeof VARIANTS[0]; v++)
        for (size_t l = 0; l < cases; l++) {
            int head_dim = l == layouts ? 12 : 0;
            const char *layout = l == layouts ? "hybrid:even" : LAYOUTS[l];
            char layout_label[64];
            snprintf(layout_label, sizeof layout_label, "%s%s", layout, head_dim ? " head_dim=12" : "");
            case_errors e = run_case(&grid, VARIANTS[v], layout, zero_stage, steps, head_dim);
            if (grid.world_rank != 0) continue;
            char name[256];
            snprintf(name, sizeof name, "%s %s %s: loss and gradients of one step", label, VARIANTS[v], layout_label);
            testing_report(e.loss < 1e-5 && e.gradients < 1e-4 && e.norm < 1e-4, name,
                           "loss %.2e, gradients %.2e (%s), norm %.2e", e.loss, e.gradients, e.worst_gradient,
                           e.norm);
            printf("# %s: loss %.1e, gradient %.1e (worst %s), norm %.1e; after %d steps parameters %.1e "
                   "(worst tensor %s %.1e)\n", name, e.loss, e.gradients, e.worst_gradient, e.norm, steps,
                   e.parameters, e.worst_parameter, e.worst_tensor);
            snprintf(name, sizeof name, "%s %s %s: traffic equals the formula", label, VARIANTS[v], layout_label);
            testing_report(e.traffic < 1e-12, name, "relative difference %.2e", e.traffic);
            snprintf(name, sizeof name, "%s %s %s: parameters after %d AdamW steps", label, VARIANTS[v], layout_label,
                     steps);
            testing_report(e.parameters < 1e-3, name, "parameters %.2e", e.parameters);
            if (steps < 2) continue;
            snprintf(name, sizeof name, "%s %s %s: nothing allocated in steps 1..%d", label, VARIANTS[v],
                     layout_label, steps);
            testing_report(e.step_allocations == 0.0, name, "%.0f allocations", e.step_allocations);
        }
    // Per-layer shapes (layer_head_dims 12,6, layer_value_head_dims 12,10,
    // layer_intermediate_sizes 24,56): standard alone, and approx beside a standard layer.
    static const char *const SHAPED[][2] = {{"standard", "uniform"}, {"approx", "hybrid:even"}};
    for (size_t i = 0; steps == 1 && i < sizeof SHAPED / sizeof SHAPED[0]; i++) {
        case_errors e = run_case(&grid, SHAPED[i][0], SHAPED[i][1], zero_stage, steps, LAYER_SHAPES);
        if (grid.world_rank != 0) continue;
        char name[256];
        snprintf(name, sizeof name, "%s %s %s per-layer shapes: loss, gradients and parameters of one step", label,
                 SHAPED[i][0], SHAPED[i][1]);
        testing_report(e.loss < 1e-5 && e.gradients < 1e-4 && e.norm < 1e-4 && e.parameters < 1e-3, name,
                       "loss %.2e, gradients %.2e (%s), norm %.2e, parameters %.2e", e.loss, e.gradients,
                       e.worst_gradient, e.norm, e.parameters);
    }
    process_grid_free(&grid);
    return testing_exit_code();
}

// Runs one decomposition under mpirun and relays its output; the child's PASS/FAIL lines
// count, and its exit status must match them.
static void run_decomposition(const char *self, int ranks, int tp, bool sp, int zero_stage, int steps,
                              const char *label) {
    char rank_count[16], tp_text[16], sp_text[16], zero_text[16], steps_text[16];
    snprintf(rank_count, sizeof rank_count, "%d", ranks);
    snprintf(tp_text, sizeof tp_text, "%d", tp);
    snprintf(sp_text, sizeof sp_text, "%d", sp ? 1 : 0);
    snprintf(zero_text, sizeof zero_text, "%d", zero_stage);
    snprintf(steps_text, sizeof steps_text, "%d", steps);
    const char *argv[] = {"timeout", "600", "mpirun", "--oversubscribe", "-np", rank_count, self, "--child", tp_text,
                          sp_text, zero_text, steps_text, label, NULL};
    child_result result = child_run(argv, CHILD_STDOUT | CHILD_STDERR);
    fputs(result.output, stdout);
    int failed_lines = 0, passed_lines = 0;
    for (const char *line = result.output; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "") {
        failed_lines += strncmp(line, "FAIL", 4) == 0;
        passed_lines += strncmp(line, "PASS", 4) == 0;
    }
    testing_failures += failed_lines;
    char name[256];
    snprintf(name, sizeof name, "%s: mpirun -np %d finished cleanly", label, ranks);
    testing_report(result.status == 0 && passed_lines > 0, name, "status %d, %d PASS lines", result.status,
                   passed_lines);
}

int main(int argc, char **argv) {
    if (argc == 7 && strcmp(argv[1], "--child") == 0) {
        MPI_Init(&argc, &argv);
        int rank, world;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &world);
        log_set_rank(rank, world);
        int code = child_main(atoi(argv[2]), atoi(argv[3]) != 0, atoi(argv[4]), atoi(argv[5]), argv[6]);
        MPI_Finalize();
        return code;
    }
    child_keep_environment();  // before anything MPI: children get the environment the test started with
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) fatal("cannot find this test's own path");
    self[length] = '\0';
    // One AdamW step everywhere; the dp=2 x tp=2 runs (with and without ZeRO-1) take ten.
    run_decomposition(self, 2, 2, false, 0, 1, "tp=2");
    run_decomposition(self, 2, 2, true, 0, 1, "tp=2+sp");
    run_decomposition(self, 2, 1, false, 0, 1, "dp=2");
    run_decomposition(self, 2, 1, false, 1, 1, "dp=2 zero=1");
    run_decomposition(self, 4, 2, false, 0, 10, "dp=2xtp=2");
    run_decomposition(self, 4, 2, true, 1, 10, "dp=2xtp=2+sp zero=1");
    return testing_exit_code();
}
