#include "eval/generator.h"

#include <cJSON.h>
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "eval/evaluator.h"
#include "eval/generate.h"
#include "eval/json_file.h"
#include "eval/load.h"
#include "io/file_contents.h"
#include "io/tokenizer.h"
#include "io/tokenizer_path.h"
#include "model/decode.h"
#include "ops/ops.h"
#include "par/process_grid.h"

enum { WHERE_MAX = 4200 };

// A prompt as the user gave it and as the model reads it.
typedef struct {
    char *text;                 // the user's text; NULL for --prompt-ids
    char where[WHERE_MAX];      // "--prompt", "FILE:LINE" or "--prompt-ids", for messages
    int *ids;
    int count;
} prompt;

typedef struct {
    prompt *items;
    int count, capacity;
} prompt_list;

// A text prompt reads as the start of a document: the corpus ends every document with
// the EOS id (input/corpus/write_shards.py, manifest.json) and has no BOS, so in training
// a document begins after an EOS; the prompt gets that separator (when the tokenizer has
// an EOS) and never a BOS.
static void add_text(prompt_list *l, const tokenizer *t, const char *text, size_t length, const char *where) {
    if (length == 0) fatal("%s: the prompt is empty; give some text", where);
    int count = 0, separator = tokenizer_eos_id(t);
    int *encoded = tokenizer_encode(t, text, length, &count);
    if (count == 0) fatal("%s: the prompt encodes to no tokens (only spaces?); give some text", where);
    l->items = xgrow(l->items, l->count, &l->capacity, sizeof(prompt), 4);
    prompt *p = &l->items[l->count++];
    p->text = xmalloc(length + 1);
    memcpy(p->text, text, length);
    p->text[length] = '\0';
    snprintf(p->where, sizeof p->where, "%s", where);
    p->count = count + (separator >= 0);
    p->ids = xmalloc((size_t)p->count * sizeof(int));
    if (separator >= 0) p->ids[0] = separator;
    memcpy(p->ids + (separator >= 0), encoded, (size_t)count * sizeof(int));
    free(encoded);
}

// One prompt per line ('\n' or "\r\n"; a last line without a newline counts).
static void read_prompt_file(prompt_list *l, const tokenizer *t, const char *path) {
    char message[256];
    size_t size = 0;
    char *bytes = file_contents_read(path, &size, message, sizeof message);
    if (!bytes) fatal("--prompt-file %s: %s", path, message);
    int line = 0;
    for (size_t start = 0; start < size;) {
        const char *newline = memchr(bytes + start, '\n', size - start);
        size_t end = newline ? (size_t)(newline - bytes) : size, length = end - start;
        if (length > 0 && bytes[start + length - 1] == '\r') length--;
        char where[WHERE_MAX];
        snprintf(where, sizeof where, "%.4000s:%d", path, ++line);
        add_text(l, t, bytes + start, length, where);
        start = end + 1;
    }
    free(bytes);
    if (l->count == 0) fatal("--prompt-file %s holds no prompt; write one prompt per line", path);
}

static void read_prompts(prompt_list *l, const generator_options *o, const tokenizer *t, int choices) {
    if (o->prompt_text) add_text(l, t, o->prompt_text, strlen(o->prompt_text), "--prompt");
    else if (o->prompt_file) read_prompt_file(l, t, o->prompt_file);
    else {
        if (o->prompt_id_count < 1) fatal("--prompt-ids: the prompt is empty; give ids such as 2,15,7");
        for (int i = 0; i < o->prompt_id_count; i++)
            if (o->prompt_ids[i] < 0 || o->prompt_ids[i] >= choices)
                fatal("--prompt-ids: token %d (the %d. id) is not in the vocabulary: ids are 0 to %d", o->prompt_ids[i],
                      i + 1, choices - 1);
        l->items = xgrow(l->items, 0, &l->capacity, sizeof(prompt), 1);
        prompt *p = &l->items[l->count++];
        p->text = NULL;
        snprintf(p->where, sizeof p->where, "--prompt-ids");
        p->count = o->prompt_id_count;
        p->ids = xmalloc((size_t)p->count * sizeof(int));
        memcpy(p->ids, o->prompt_ids, (size_t)p->count * sizeof(int));
    }
}

// ---- output ------------------------------------------------------------------------------
typedef struct {
    const tokenizer *tok;
    const prompt *prompts;
    const generate_sequence *sequences;
    int samples, total;         // samples per prompt, sequences
    tokenizer_stream *stream;   // one sequence: its text as it is produced
} printer;

static void put(const char *text, size_t length) {
    if (length > 0) fwrite(text, 1, length, stdout);
}

// Decodes prompt + generated ids; *generated_text points at where the generated text
// starts (the prompt's own decode is a prefix of the whole but for odd byte pieces,
// then the generated ids are decoded alone).
static char *sequence_text(const tokenizer *t, const generate_sequence *q, size_t *length, const char **generated_text,
                           char **alone) {
    int n = q->prompt_length + q->count;
    int *ids = xmalloc((size_t)n * sizeof(int));
    memcpy(ids, q->prompt, (size_t)q->prompt_length * sizeof(int));
    memcpy(ids + q->prompt_length, q->generated, (size_t)q->count * sizeof(int));
    char *whole = tokenizer_decode(t, ids, n, length);
    size_t prompt_length = 0;
    char *head = tokenizer_decode(t, q->prompt, q->prompt_length, &prompt_length);
    *alone = NULL;
    if (prompt_length <= *length && memcmp(whole, head, prompt_length) == 0) *generated_text = whole + prompt_length;
    else *generated_text = *alone = tokenizer_decode(t, q->generated, q->count, NULL);
    free(head);
    free(ids);
    return whole;
}

static void print_token(void *context, int sequence, int token) {
    printer *p = context;
    (void)sequence;
    if (!p->stream) return;
    size_t length = 0;
    const char *piece = tokenizer_stream_push(p->stream, token, &length);
    put(piece, length);
    fflush(stdout);
}

static void print_stopped(void *context, int sequence) {
    printer *p = context;
    const generate_sequence *q = &p->sequences[sequence];
    if (p->stream) {
        size_t length = 0;
        const char *rest = tokenizer_stream_finish(p->stream, &length);
        put(rest, length);
        printf("\n");
    } else {
        size_t length = 0;
        const char *generated = NULL;
        char *alone = NULL, *whole = sequence_text(p->tok, q, &length, &generated, &alone);
        printf("[sequence %d of %d: prompt %d, sample %d; %d tokens, stop %s]\n", sequence + 1, p->total,
               sequence / p->samples + 1, sequence % p->samples + 1, q->count, generate_stop_name(q->stop));
        put(whole, length);
        printf("\n");
        free(whole);
        free(alone);
    }
    fflush(stdout);
}

// The prompt's text before the generated pieces (one sequence).
static void print_prompt(printer *p) {
    const generate_sequence *q = &p->sequences[0];
    for (int i = 0; i < q->prompt_length; i++) {
        size_t length = 0;
        const char *piece = tokenizer_stream_push(p->stream, q->prompt[i], &length);
        put(piece, length);
    }
    fflush(stdout);
}

static cJSON *checked(cJSON *item) {
    if (!item) fatal("out of memory building the JSON report");
    return item;
}

static cJSON *ids_json(const int *ids, int count) {
    cJSON *array = checked(cJSON_CreateArray());
    for (int i = 0; i < count; i++) cJSON_AddItemToArray(array, checked(cJSON_CreateNumber(ids[i])));
    return array;
}

typedef struct {
    const generator_options *o;
    const decon_config *config;
    long long step;
    const char *tokenizer_file;
    int separator, tensor_parallel, threads, max_context;
    const generate_timing *timing;
    double cache_bytes, cache_bytes_rank0;
} run_facts;

static void write_json(const run_facts *f, const printer *p, const char *path) {
    const generator_options *o = f->o;
    cJSON *root = checked(cJSON_CreateObject());
    checked(cJSON_AddStringToObject(root, "checkpoint", o->checkpoint));
    checked(cJSON_AddNumberToObject(root, "step", (double)f->step));
    cJSON *model = checked(cJSON_AddObjectToObject(root, "model"));
    checked(cJSON_AddStringToObject(model, "variant", f->config->variant));
    checked(cJSON_AddStringToObject(model, "layout", f->config->layout));
    checked(cJSON_AddNumberToObject(model, "layers", f->config->num_hidden_layers));
    checked(cJSON_AddNumberToObject(model, "vocab_size", f->config->vocab_size));
    checked(cJSON_AddNumberToObject(model, "sequence_length", f->config->sequence_length));
    checked(cJSON_AddStringToObject(root, "tokenizer", f->tokenizer_file));
    cJSON *s = checked(cJSON_AddObjectToObject(root, "settings"));
    checked(cJSON_AddNumberToObject(s, "max_new", o->max_new));
    checked(cJSON_AddNumberToObject(s, "max_context", f->max_context));
    checked(cJSON_AddNumberToObject(s, "batch", o->batch));
    checked(cJSON_AddBoolToObject(s, "greedy", o->sampling.greedy));
    checked(cJSON_AddNumberToObject(s, "temperature", o->sampling.temperature));
    checked(cJSON_AddNumberToObject(s, "top_k", o->sampling.top_k));
    checked(cJSON_AddNumberToObject(s, "top_p", o->sampling.top_p));
    checked(cJSON_AddNumberToObject(s, "seed", (double)o->sampling.seed));
    if (f->separator >= 0) checked(cJSON_AddNumberToObject(s, "document_separator_id", f->separator));
    else checked(cJSON_AddNullToObject(s, "document_separator_id"));
    checked(cJSON_AddNumberToObject(s, "tensor_parallel", f->tensor_parallel));
    checked(cJSON_AddNumberToObject(s, "threads", f->threads));
    cJSON *list = checked(cJSON_AddArrayToObject(root, "sequences"));
    for (int b = 0; b < p->total; b++) {
        const generate_sequence *q = &p->sequences[b];
        const prompt *source = &p->prompts[b / p->samples];
        cJSON *x = checked(cJSON_CreateObject());
        checked(cJSON_AddNumberToObject(x, "index", b));
        int prompt_index = b / p->samples;
        checked(cJSON_AddNumberToObject(x, "prompt", prompt_index));
        checked(cJSON_AddNumberToObject(x, "sample", b % p->samples));
        if (source->text) checked(cJSON_AddStringToObject(x, "prompt_text", source->text));
        else checked(cJSON_AddNullToObject(x, "prompt_text"));
        cJSON_AddItemToObject(x, "prompt_ids", ids_json(q->prompt, q->prompt_length));
        cJSON_AddItemToObject(x, "generated_ids", ids_json(q->generated, q->count));
        size_t length = 0;
        const char *generated = NULL;
        char *alone = NULL, *whole = sequence_text(p->tok, q, &length, &generated, &alone);
        checked(cJSON_AddStringToObject(x, "text", generated));  // the generated text, as it reads after the prompt
        free(whole);
        free(alone);
        checked(cJSON_AddStringToObject(x, "stop", generate_stop_name(q->stop)));
        cJSON_AddItemToArray(list, x);
    }
    const generate_timing *t = f->timing;
    checked(cJSON_AddNumberToObject(root, "prefill_seconds", t->prefill_seconds));
    checked(cJSON_AddNumberToObject(root, "prefill_tokens", (double)t->prefill_tokens));
    checked(cJSON_AddNumberToObject(root, "decode_seconds", t->decode_seconds));
    checked(cJSON_AddNumberToObject(root, "decode_steps", (double)t->decode_steps));
    checked(cJSON_AddNumberToObject(root, "decode_tokens", (double)t->decode_tokens));
    checked(cJSON_AddNumberToObject(root, "decode_tokens_per_second",
                                    t->decode_seconds > 0 ? (double)t->decode_tokens / t->decode_seconds : 0.0));
    checked(cJSON_AddNumberToObject(root, "cache_bytes", f->cache_bytes));
    checked(cJSON_AddNumberToObject(root, "cache_bytes_rank0", f->cache_bytes_rank0));
    json_file_write(root, path);
    cJSON_Delete(root);
}

static void print_summary(const run_facts *f, const printer *p) {
    const generate_timing *t = f->timing;
    int stops[4] = {0}, tokens = 0;
    for (int b = 0; b < p->total; b++) {
        stops[p->sequences[b].stop]++;
        tokens += p->sequences[b].count;
    }
    fprintf(stderr,
            "decon-generate: %d sequence%s, %d tokens generated (stop: eos %d, max-new %d, max-context %d); prefill "
            "%lld tokens in %.3f s; decode %lld tokens in %.3f s = %.1f tokens/s (%lld steps of batch %d); cache "
            "%.2f MiB (%.0f bytes, tp %d)\n",
            p->total, p->total == 1 ? "" : "s", tokens, stops[GENERATE_EOS], stops[GENERATE_MAX_NEW],
            stops[GENERATE_MAX_CONTEXT], t->prefill_tokens, t->prefill_seconds, t->decode_tokens, t->decode_seconds,
            t->decode_seconds > 0 ? (double)t->decode_tokens / t->decode_seconds : 0.0, t->decode_steps, p->total,
            f->cache_bytes / (1024.0 * 1024.0), f->cache_bytes, f->tensor_parallel);
}

// ---- the run -----------------------------------------------------------------------------
int generator_run(const generator_options *o) {
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    ops_set_threads(threads);
    decon_config c;
    eval_read_config(&c, o->checkpoint);
    char tokenizer_file[4096];
    tokenizer_path_find(tokenizer_file, sizeof tokenizer_file, &c, o->tokenizer, o->checkpoint);
    tokenizer *tok = tokenizer_load(tokenizer_file);
    int pieces = tokenizer_vocab_size(tok);
    if (pieces > c.vocab_size)
        fatal("tokenizer %s: it has %d pieces but %s's vocabulary is %d: not the tokenizer of its shards; give the "
              "right one with --tokenizer FILE", tokenizer_file, pieces, o->checkpoint, c.vocab_size);
    int max_context = o->max_context > 0 ? o->max_context : c.sequence_length;
    int limit = c.max_position_embeddings > 0 ? c.max_position_embeddings : EVAL_CONTEXT_LIMIT;
    if (max_context > limit)
        fatal("--max-context %d is more than %s allows (%d positions)", max_context, o->checkpoint, limit);

    prompt_list prompts = {0};
    read_prompts(&prompts, o, tok, pieces);
    int longest = 1;
    for (int i = 0; i < prompts.count; i++) {
        const prompt *p = &prompts.items[i];
        if (p->count >= max_context)
            fatal("%s: the prompt has %d tokens%s, but --max-context %d leaves room for at most %d; shorten it or "
                  "raise --max-context (up to %d)", p->where, p->count, p->text && tokenizer_eos_id(tok) >= 0 ?
                  " (with the document separator)" : "", max_context, max_context - 1, limit);
        if (p->count > longest) longest = p->count;
    }
    if (o->json_path && rank == 0) json_file_probe(o->json_path, "generate.json");

    // One tensor-parallel group of every rank (decoding has no data-parallel replicas).
    process_grid grid;
    c.tensor_parallel = world;
    c.sequence_parallel = false;
    if (world > 1) process_grid_create(&grid, MPI_COMM_WORLD, &c, o->checkpoint);
    model m;
    eval_build_model(&m, &c, o->checkpoint, world > 1 ? &grid : NULL);
    int total = prompts.count * o->batch;
    // Prefill runs the forward over the prompts (at most longest positions); a fixed
    // stream is computed once for the whole context (model/decode.h).
    int max_seq_len = m.has_fixed_stream && max_context > longest ? max_context : longest;
    int max_batch = EVAL_DEFAULT_BATCH_TOKENS / max_seq_len;
    max_batch = max_batch < 1 ? 1 : max_batch > total ? total : max_batch;
    train_state state;
    eval_read_model(&m, o->checkpoint, max_batch, max_seq_len, &state);
    decode_session *session = decode_create(&m, total, max_context);

    generate_sequence *sequences = xcalloc((size_t)total, sizeof *sequences);
    int *generated = xmalloc((size_t)total * (size_t)o->max_new * sizeof(int));
    for (int b = 0; b < total; b++) {
        const prompt *p = &prompts.items[b / o->batch];
        sequences[b] = (generate_sequence){.prompt = p->ids, .prompt_length = p->count, .stream = (uint64_t)b,
                                           .generated = generated + (size_t)b * (size_t)o->max_new};
    }
    printer out = {.tok = tok, .prompts = prompts.items, .sequences = sequences, .samples = o->batch, .total = total};
    if (total == 1 && rank == 0) {
        out.stream = tokenizer_stream_new(tok);
        print_prompt(&out);
    }
    generate_settings settings = {.max_new = o->max_new, .max_context = max_context,
                                  .eos_id = tokenizer_eos_id(tok), .vocab = c.vocab_size, .choices = pieces,
                                  .sampling = o->sampling, .comm = MPI_COMM_WORLD};
    generate_source source = generate_source_of(session);
    generate_listener listener = {.context = &out, .token = print_token, .stopped = print_stopped};
    generate_timing timing;
    char error[1024];
    if (!generate_run(&settings, &source, sequences, total, &listener, &timing, error, sizeof error))
        fatal("%s", error);

    double mine = (double)decode_cache_bytes(session), all = mine;
    MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    run_facts facts = {.o = o, .config = &c, .step = state.step, .tokenizer_file = tokenizer_file,
                       .separator = o->prompt_ids ? -1 : tokenizer_eos_id(tok), .tensor_parallel = world, .threads = threads,
                       .max_context = max_context, .timing = &timing, .cache_bytes = all, .cache_bytes_rank0 = mine};
    if (rank == 0) {
        print_summary(&facts, &out);
        if (o->json_path) {
            write_json(&facts, &out, o->json_path);
            fprintf(stderr, "decon-generate: wrote %s\n", o->json_path);
        }
    }
    if (out.stream) tokenizer_stream_free(out.stream);
    decode_free(session);
    free(generated);
    free(sequences);
    for (int i = 0; i < prompts.count; i++) {
        free(prompts.items[i].text);
        free(prompts.items[i].ids);
    }
    free(prompts.items);
    model_free(&m);
    if (world > 1) process_grid_free(&grid);
    tokenizer_free(tok);
    return 0;
}
