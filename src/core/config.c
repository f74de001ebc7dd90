#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"

typedef enum { KEY_INT, KEY_DOUBLE, KEY_BOOL, KEY_STRING } key_type;

typedef struct {
    const char *section, *key;
    key_type type;
    size_t offset;
    const char *default_value;   // NULL = required
    double min, max;             // numeric range (inclusive)
    const char *help;
} key_spec;

#define FIELD(f) offsetof(decon_config, f)
#define BIG 1e18

static const key_spec KEYS[] = {
    {"model", "hidden_size", KEY_INT, FIELD(hidden_size), NULL, 1, 1 << 20, "model width d"},
    {"model", "intermediate_size", KEY_INT, FIELD(intermediate_size), NULL, 1, 1 << 22, "SwiGLU width"},
    {"model", "num_hidden_layers", KEY_INT, FIELD(num_hidden_layers), NULL, 1, 4096, "blocks"},
    {"model", "num_attention_heads", KEY_INT, FIELD(num_attention_heads), NULL, 1, 4096, "query heads"},
    {"model", "num_key_value_heads", KEY_INT, FIELD(num_key_value_heads), "0", 0, 4096,
     "key/value heads (0 = num_attention_heads: MHA)"},
    {"model", "head_dim", KEY_INT, FIELD(head_dim), "0", 0, 1 << 20,
     "per-head size of queries, keys and values (absent = hidden_size / num_attention_heads)"},
    {"model", "value_head_dim", KEY_INT, FIELD(value_head_dim), "0", 0, 1 << 20,
     "per-head size of values and the output projection's input (absent = head_dim)"},
    {"model", "layer_head_dims", KEY_STRING, FIELD(layer_head_dims), "", 0, 0,
     "per-layer query/key head sizes, num_hidden_layers comma-separated even integers (empty = head_dim)"},
    {"model", "layer_value_head_dims", KEY_STRING, FIELD(layer_value_head_dims), "", 0, 0,
     "per-layer value head sizes (empty = value_head_dim, or each layer's query/key head size)"},
    {"model", "layer_intermediate_sizes", KEY_STRING, FIELD(layer_intermediate_sizes), "", 0, 0,
     "per-layer MLP widths (empty = intermediate_size)"},
    {"model", "layer_rope_pairs", KEY_STRING, FIELD(layer_rope_pairs), "", 0, 0,
     "per-layer kept RoPE pairs of the original head, ';' between layers, e.g. '0,3;1-3' (empty = 0..r_qk/2-1)"},
    {"model", "vocab_size", KEY_INT, FIELD(vocab_size), NULL, 2, 1 << 24, "vocabulary"},
    {"model", "max_position_embeddings", KEY_INT, FIELD(max_position_embeddings), "0", 0, 1 << 24,
     "longest sequence (0 = train.sequence_length)"},
    {"model", "rope_theta", KEY_DOUBLE, FIELD(rope_theta), "1000000", 1, BIG, "RoPE base"},
    {"model", "rms_norm_eps", KEY_DOUBLE, FIELD(rms_norm_eps), "1e-6", 0, 1, "RMSNorm epsilon"},
    {"model", "initializer_range", KEY_DOUBLE, FIELD(initializer_range), "0.02", 0, 10, "init std"},
    {"model", "tie_word_embeddings", KEY_BOOL, FIELD(tie_word_embeddings), "1", 0, 1, "LM head = embedding"},
    {"model", "attention_bias", KEY_BOOL, FIELD(attention_bias), "1", 0, 1, "bias on Q/K/V"},
    {"attention", "variant", KEY_STRING, FIELD(variant), "standard", 0, 0, "token mixer"},
    {"attention", "layout", KEY_STRING, FIELD(layout), "uniform", 0, 0, "uniform | hybrid:<pattern> | list:<ids>"},
    {"attention", "fixed_stream_std", KEY_DOUBLE, FIELD(fixed_stream_std), "0.02", 0, 100,
     "std of rndembqk's Gaussian fixed stream X_1"},
    {"attention", "approx_diag_guard", KEY_DOUBLE, FIELD(approx_diag_guard), "0.1", 1e-6, 1e3,
     "approx-diag's first-order guard, relative to the largest |q.sum k| can be"},
    {"attention", "approx_diag_eps", KEY_DOUBLE, FIELD(approx_diag_eps), "1e-6", 1e-12, 1e6,
     "approx-diag's second-order denominator floor"},
    {"train", "sequence_length", KEY_INT, FIELD(sequence_length), "2048", 1, 1 << 24, "tokens per sequence"},
    {"train", "micro_batch_size", KEY_INT, FIELD(micro_batch_size), "8", 1, 1 << 20, "sequences per forward"},
    {"train", "global_batch_size", KEY_INT, FIELD(global_batch_size), "256", 1, 1 << 24, "sequences per step"},
    {"train", "max_steps", KEY_INT, FIELD(max_steps), "10000", 1, INT_MAX, "optimizer steps"},
    {"train", "learning_rate", KEY_DOUBLE, FIELD(learning_rate), "4e-4", 0, 10, "peak LR"},
    {"train", "min_learning_rate_ratio", KEY_DOUBLE, FIELD(min_learning_rate_ratio), "0", 0, 1, "floor of the cosine"},
    {"train", "cosine_cycles", KEY_DOUBLE, FIELD(cosine_cycles), "0.5", 0, 100, "cosine cycles after warm-up"},
    {"train", "warmup_steps", KEY_INT, FIELD(warmup_steps), "2000", 0, INT_MAX, "linear warm-up"},
    {"train", "weight_decay", KEY_DOUBLE, FIELD(weight_decay), "0.1", 0, 10, "AdamW decay"},
    {"train", "adam_beta1", KEY_DOUBLE, FIELD(adam_beta1), "0.9", 0, 0.999999, "AdamW beta1"},
    {"train", "adam_beta2", KEY_DOUBLE, FIELD(adam_beta2), "0.9999", 0, 0.99999999, "AdamW beta2"},
    {"train", "adam_epsilon", KEY_DOUBLE, FIELD(adam_epsilon), "1e-8", 0, 1, "AdamW epsilon"},
    {"train", "grad_clip", KEY_DOUBLE, FIELD(grad_clip), "1.0", 0, BIG, "global-norm clip (0 = off)"},
    {"train", "seed", KEY_INT, FIELD(seed), "1234", 0, INT_MAX, "init and data-order seed"},
    {"train", "eval_every", KEY_INT, FIELD(eval_every), "500", 0, INT_MAX, "validation interval (0 = end only)"},
    {"train", "eval_batches", KEY_INT, FIELD(eval_batches), "20", 1, INT_MAX, "micro-batches per validation"},
    {"train", "threads", KEY_INT, FIELD(threads), "0", 0, 4096, "CPU threads (0 = all cores)"},
    {"train", "on_nonfinite", KEY_STRING, FIELD(on_nonfinite), "stop", 0, 0,
     "stop | skip: a step with a non-finite loss or gradient ends the run (stop) or is dropped (skip)"},
    {"train", "precision", KEY_STRING, FIELD(precision), "fp32", 0, 0,
     "fp32 | bf16: bf16 rounds GEMM and attention inputs, accumulating in fp32 (GPU builds only)"},
    {"data", "train", KEY_STRING, FIELD(train), "data/corpus/train.bin", 0, 0, "training shard"},
    {"data", "validation", KEY_STRING, FIELD(validation), "data/corpus/val.bin", 0, 0, "validation shard"},
    {"data", "tokenizer", KEY_STRING, FIELD(tokenizer), "", 0, 0,
     "sentencepiece model of the shards (empty = tokenizer.model beside [data] train)"},
    {"io", "run_dir", KEY_STRING, FIELD(run_dir), "runs/default", 0, 0, "outputs"},
    {"io", "checkpoint_every", KEY_INT, FIELD(checkpoint_every), "1000", 0, INT_MAX, "steps (0 = end only)"},
    {"io", "keep_checkpoints", KEY_INT, FIELD(keep_checkpoints), "3", 1, INT_MAX, "newest K kept"},
    {"io", "log_every", KEY_INT, FIELD(log_every), "1", 1, INT_MAX, "progress/metrics interval"},
    {"io", "record_every", KEY_INT, FIELD(record_every), "0", 0, INT_MAX,
     "attention recording interval in steps (0 = off; e.g. 1000)"},
    {"io", "record_sequences", KEY_INT, FIELD(record_sequences), "4", 1, 4096,
     "held-out sequences per recording (the first windows of [data] validation)"},
    {"io", "record_layers", KEY_STRING, FIELD(record_layers), "all", 0, 0, "all | 1-based layer ids, e.g. 1,3"},
    {"io", "record_dtype", KEY_STRING, FIELD(record_dtype), "float32", 0, 0, "float32 | float16"},
    {"io", "record_path", KEY_STRING, FIELD(record_path), "", 0, 0, "recording file (empty = <run_dir>/attn.h5)"},
    {"parallel", "tensor_parallel", KEY_INT, FIELD(tensor_parallel), "1", 1, 4096,
     "tensor-parallel ranks (world = dp x tp); also --tp"},
    {"parallel", "sequence_parallel", KEY_BOOL, FIELD(sequence_parallel), "0", 0, 1,
     "shard activations between blocks along the sequence (needs tp > 1); also --sp"},
    {"parallel", "zero_stage", KEY_INT, FIELD(zero_stage), "0", 0, 1, "1 = Adam moments sharded over dp; also --zero"},
    {"parallel", "bucket_megabytes", KEY_DOUBLE, FIELD(bucket_megabytes), "4", 0.001, 65536,
     "data-parallel gradient bucket size"},
};
enum { KEY_COUNT = sizeof KEYS / sizeof KEYS[0] };

// Which keys were given explicitly (for "required" checks); indexed like KEYS.
static bool key_given[KEY_COUNT];

static const key_spec *find_key(const char *section, const char *key) {
    for (int i = 0; i < KEY_COUNT; i++)
        if (strcmp(KEYS[i].section, section) == 0 && strcmp(KEYS[i].key, key) == 0) return &KEYS[i];
    return NULL;
}

static const char *type_name(key_type type) {
    switch (type) {
    case KEY_INT: return "an integer";
    case KEY_DOUBLE: return "a number";
    case KEY_BOOL: return "0 or 1 (or true/false)";
    default: return "a string";
    }
}

// Parses value into the field; returns false (with why filled) when it does not fit.
static bool parse_value(decon_config *config, const key_spec *spec, const char *value, char *why, size_t why_size) {
    char *field = (char *)config + spec->offset;
    const char *end = value + strlen(value);
    while (end > value && isspace((unsigned char)end[-1])) end--;
    if (spec->type == KEY_STRING) {
        size_t n = (size_t)(end - value);
        size_t cap = spec->offset == FIELD(variant)        ? sizeof config->variant
                     : spec->offset == FIELD(record_dtype) ? sizeof config->record_dtype
                     : spec->offset == FIELD(on_nonfinite) ? sizeof config->on_nonfinite
                     : spec->offset == FIELD(precision)    ? sizeof config->precision
                                                           : CONFIG_STRING_MAX;
        if (n >= cap) {
            snprintf(why, why_size, "is longer than %zu characters", cap - 1);
            return false;
        }
        memcpy(field, value, n);
        field[n] = '\0';
        return true;
    }
    if (value == end) {
        snprintf(why, why_size, "is empty; expected %s", type_name(spec->type));
        return false;
    }
    if (spec->type == KEY_BOOL) {
        size_t n = (size_t)(end - value);
        bool truth;
        if ((n == 1 && *value == '1') || (n == 4 && strncasecmp(value, "true", 4) == 0)) truth = true;
        else if ((n == 1 && *value == '0') || (n == 5 && strncasecmp(value, "false", 5) == 0)) truth = false;
        else {
            snprintf(why, why_size, "= '%.*s' is not %s", (int)n, value, type_name(spec->type));
            return false;
        }
        *(bool *)field = truth;
        return true;
    }
    errno = 0;
    char *stop = NULL;
    double number;
    if (spec->type == KEY_INT) {
        long long parsed = strtoll(value, &stop, 10);
        number = (double)parsed;
    } else {
        number = strtod(value, &stop);
    }
    if (stop == end && (errno == ERANGE || isinf(number))) {  // a number, just too large (or small)
        snprintf(why, why_size, "= %.*s is out of range [%g, %g]", (int)(end - value), value, spec->min, spec->max);
        return false;
    }
    if (stop != end || isnan(number)) {
        snprintf(why, why_size, "= '%.*s' is not %s", (int)(end - value), value, type_name(spec->type));
        return false;
    }
    if (number < spec->min || number > spec->max) {
        snprintf(why, why_size, "= %.*s is out of range [%g, %g]", (int)(end - value), value, spec->min, spec->max);
        return false;
    }
    if (spec->type == KEY_INT) *(int *)field = (int)number;
    else *(double *)field = number;
    return true;
}

static void set_key(decon_config *config, const char *section, const char *key, const char *value,
                    const char *origin, int line) {
    const key_spec *spec = find_key(section, key);
    char where[640];
    if (line > 0) snprintf(where, sizeof where, "%s:%d", origin, line);
    else snprintf(where, sizeof where, "%s", origin);
    if (!spec) {
        // The sections, in table order, from the table itself: "[model], [attention], ...".
        bool known_section = false;
        char sections[256] = "";
        size_t used = 0;
        for (int i = 0; i < KEY_COUNT; i++) {
            known_section |= strcmp(KEYS[i].section, section) == 0;
            if ((i == 0 || strcmp(KEYS[i].section, KEYS[i - 1].section) != 0) && used < sizeof sections)
                used += (size_t)snprintf(sections + used, sizeof sections - used, "%s[%s]", i ? ", " : "",
                                         KEYS[i].section);
        }
        if (!known_section) fatal("%s: unknown section [%s]; sections are %s", where, section, sections);
        fatal("%s: unknown key '%s' in [%s]; see input/models/tiny.ini for the accepted keys", where, key, section);
    }
    char why[256];
    if (!parse_value(config, spec, value, why, sizeof why))
        fatal("%s: [%s] %s %s (%s)", where, section, key, why, spec->help);
    key_given[spec - KEYS] = true;
}

void config_defaults(decon_config *config) {
    memset(config, 0, sizeof *config);
    memset(key_given, 0, sizeof key_given);
    char why[256];
    for (int i = 0; i < KEY_COUNT; i++)
        if (KEYS[i].default_value && !parse_value(config, &KEYS[i], KEYS[i].default_value, why, sizeof why))
            fatal("internal: default of %s.%s %s", KEYS[i].section, KEYS[i].key, why);
}

typedef struct {
    decon_config *config;
    const char *origin;
} ini_context;

// Debian's inih is built without line numbers in the handler, so errors name file and key.
static int handle_ini_pair(void *user, const char *section, const char *key, const char *value) {
    ini_context *context = user;
    set_key(context->config, section, key, value, context->origin, 0);
    return 1;
}

void config_load(decon_config *config, const char *path) {
    FILE *file = fopen(path, "r");
    if (!file) fatal("%s: cannot open config file (%s); check the path", path, strerror(errno));
    struct stat st;  // a directory opens, then reads as an empty file: every key would be "missing"
    if (fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode))
        fatal("%s: not a config file (a directory?); pass an INI file such as input/models/tiny.ini", path);
    ini_context context = {config, path};
    int result = ini_parse_file(file, handle_ini_pair, &context);
    fclose(file);
    if (result > 0) fatal("%s:%d: not a valid INI line (expected 'key = value' or '[section]')", path, result);
    if (result < 0) fatal("%s: cannot read config file", path);
}

void config_load_text(decon_config *config, const char *text, const char *origin) {
    ini_context context = {config, origin};
    int result = ini_parse_string(text, handle_ini_pair, &context);
    if (result != 0) fatal("%s:%d: not a valid INI line", origin, result);
}

void config_set(decon_config *config, const char *assignment, const char *origin) {
    const char *dot = strchr(assignment, '.');
    const char *equals = strchr(assignment, '=');
    if (!dot || !equals || dot > equals)
        fatal("%s '%s': expected section.key=value, e.g. --set train.max_steps=100", origin, assignment);
    char section[64], key[128];
    size_t section_length = (size_t)(dot - assignment), key_length = (size_t)(equals - dot - 1);
    if (section_length >= sizeof section || key_length >= sizeof key)
        fatal("%s '%s': section or key too long", origin, assignment);
    memcpy(section, assignment, section_length);
    section[section_length] = '\0';
    memcpy(key, dot + 1, key_length);
    key[key_length] = '\0';
    char where[640];
    snprintf(where, sizeof where, "%s %s", origin, assignment);
    set_key(config, section, key, equals + 1, where, 0);
}

// inih reads at most 200 characters of a line (Debian's build): a longer value would not
// load back from config.ini or a checkpoint's /config.
enum { CONFIG_LINE_VALUE_MAX = 200 - (int)sizeof "layer_rope_pairs = " - 2 };

// layer_rope_pairs: n groups, each empty or r_qk(l)/2 increasing pairs of the original head.
static void validate_rope_pairs(const decon_config *c, const char *origin) {
    const char *text = c->layer_rope_pairs;
    if (!text[0]) return;
    if (strlen(text) > CONFIG_LINE_VALUE_MAX)
        fatal("%s: [model] layer_rope_pairs is %zu characters, more than one config line holds (%d); write runs of "
              "pairs as ranges a-b", origin, strlen(text), (int)CONFIG_LINE_VALUE_MAX);
    int n = c->num_hidden_layers, half = config_head_dim(c) / 2, count;
    int *pairs = xcalloc((size_t)half + 1, sizeof *pairs);
    char why[256];
    for (int l = 0; l < n; l++) {
        if (!config_parse_rope_pairs(text, n, l, pairs, half, &count, why, sizeof why))
            fatal("%s: [model] layer_rope_pairs = '%s': %s", origin, text, why);
        decon_config layer;
        config_layer(c, l, &layer);
        if (count && count != config_head_dim(&layer) / 2)
            fatal("%s: [model] layer_rope_pairs: layer %d lists %d pairs, its head size %d needs %d (one per two "
                  "dimensions; an empty group takes 0..%d)", origin, l + 1, count, config_head_dim(&layer),
                  config_head_dim(&layer) / 2, config_head_dim(&layer) / 2 - 1);
    }
    free(pairs);
}

// The per-layer lists: n integers each, in the uniform keys' ranges; r_qk even (RoPE).
static void validate_layer_shapes(const decon_config *c, const char *origin) {
    static const struct {
        const char *key;
        size_t offset;
        int max;
        bool even;
    } LISTS[] = {{"layer_head_dims", FIELD(layer_head_dims), 1 << 20, true},
                 {"layer_value_head_dims", FIELD(layer_value_head_dims), 1 << 20, false},
                 {"layer_intermediate_sizes", FIELD(layer_intermediate_sizes), 1 << 22, false}};
    int n = c->num_hidden_layers;
    int *sizes = xcalloc((size_t)n, sizeof *sizes);
    char why[256];
    for (size_t i = 0; i < sizeof LISTS / sizeof LISTS[0]; i++) {
        const char *text = (const char *)c + LISTS[i].offset;
        if (!config_parse_layer_sizes(text, n, sizes, why, sizeof why))
            fatal("%s: [model] %s = '%s': %s", origin, LISTS[i].key, text, why);
        if (!text[0]) continue;
        for (int l = 0; l < n; l++) {
            bool head = LISTS[i].offset != FIELD(layer_intermediate_sizes);
            if (sizes[l] > LISTS[i].max || (head && (long long)sizes[l] * c->num_attention_heads > (1 << 20)))
                fatal("%s: [model] %s: layer %d's %d is too large (heads x head size and the MLP width are sized "
                      "in int: at most %d)", origin, LISTS[i].key, l + 1, sizes[l], LISTS[i].max);
            if (LISTS[i].even && sizes[l] % 2 != 0)
                fatal("%s: [model] %s: layer %d's head size %d must be even for RoPE (it rotates pairs of "
                      "dimensions)", origin, LISTS[i].key, l + 1, sizes[l]);
        }
    }
    free(sizes);
    validate_rope_pairs(c, origin);
}

void config_validate(const decon_config *c, const char *origin) {
    for (int i = 0; i < KEY_COUNT; i++)
        if (!KEYS[i].default_value && !key_given[i])
            fatal("%s: missing required key '%s' in [%s] (%s)", origin, KEYS[i].key, KEYS[i].section, KEYS[i].help);
    // head_dim = 0 given explicitly is a mistake (absent is the way to ask for d / h);
    // from the defaults it is that absence.
    if (key_given[find_key("model", "head_dim") - KEYS] && c->head_dim == 0)
        fatal("%s: [model] head_dim = 0 must be a positive even head size; leave the key out for "
              "hidden_size / num_attention_heads", origin);
    if (c->head_dim == 0 && c->hidden_size % c->num_attention_heads != 0)
        fatal("%s: [model] hidden_size = %d is not divisible by num_attention_heads = %d; set [model] head_dim for a "
              "head size of its own", origin, c->hidden_size, c->num_attention_heads);
    int kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    if (kv_heads > c->num_attention_heads || c->num_attention_heads % kv_heads != 0)
        fatal("%s: [model] num_attention_heads = %d must be a multiple of num_key_value_heads = %d", origin,
              c->num_attention_heads, kv_heads);
    // heads x d_h is a projection's width, sized in int like hidden_size: the same limit.
    if ((long long)c->num_attention_heads * config_head_dim(c) > (1 << 20))
        fatal("%s: [model] num_attention_heads x head_dim = %d x %d exceeds %d; use a smaller head_dim", origin,
              c->num_attention_heads, config_head_dim(c), 1 << 20);
    if (c->head_dim % 2 != 0)
        fatal("%s: [model] head_dim = %d must be even for RoPE (it rotates pairs of dimensions)", origin, c->head_dim);
    if (config_head_dim(c) % 2 != 0)
        fatal("%s: [model] head size hidden_size/num_attention_heads = %d must be even for RoPE; set an even [model] "
              "head_dim", origin, config_head_dim(c));
    if (key_given[find_key("model", "value_head_dim") - KEYS] && c->value_head_dim == 0)
        fatal("%s: [model] value_head_dim = 0 must be a positive value head size; leave the key out for head_dim",
              origin);
    if ((long long)c->num_attention_heads * config_value_head_dim(c) > (1 << 20))
        fatal("%s: [model] num_attention_heads x value_head_dim = %d x %d exceeds %d; use a smaller value_head_dim",
              origin, c->num_attention_heads, config_value_head_dim(c), 1 << 20);
    if (c->max_position_embeddings && c->sequence_length > c->max_position_embeddings)
        fatal("%s: [train] sequence_length = %d exceeds [model] max_position_embeddings = %d", origin,
              c->sequence_length, c->max_position_embeddings);
    if (c->global_batch_size % c->micro_batch_size != 0)
        fatal("%s: [train] global_batch_size = %d is not a multiple of micro_batch_size = %d", origin,
              c->global_batch_size, c->micro_batch_size);
    if (c->train[0] == '\0') fatal("%s: [data] train is empty; give a token shard path", origin);
    if (c->run_dir[0] == '\0') fatal("%s: [io] run_dir is empty", origin);
    if (strcmp(c->on_nonfinite, "stop") != 0 && strcmp(c->on_nonfinite, "skip") != 0)
        fatal("%s: [train] on_nonfinite = '%s' is not stop or skip", origin, c->on_nonfinite);
    if (strcmp(c->precision, "fp32") != 0 && strcmp(c->precision, "bf16") != 0)
        fatal("%s: [train] precision = '%s' is not fp32 or bf16", origin, c->precision);
    if (strcmp(c->record_dtype, "float32") != 0 && strcmp(c->record_dtype, "float16") != 0)
        fatal("%s: [io] record_dtype = '%s' is not float32 or float16", origin, c->record_dtype);
    validate_layer_shapes(c, origin);
    bool *mask = xcalloc((size_t)c->num_hidden_layers, sizeof *mask);
    char why[256];
    if (!config_parse_layers(c->record_layers, c->num_hidden_layers, mask, why, sizeof why))
        fatal("%s: [io] record_layers = '%s': %s", origin, c->record_layers, why);
    free(mask);
    if (c->record_every > 0 && c->validation[0] == '\0')
        fatal("%s: [io] record_every = %d needs [data] validation: the recorded sequences are its first "
              "record_sequences windows", origin, c->record_every);
}

bool config_parse_layers(const char *text, int n, bool *mask, char *why, size_t why_size) {
    for (int i = 0; i < n; i++) mask[i] = false;
    if (strcmp(text, "all") == 0) {
        for (int i = 0; i < n; i++) mask[i] = true;
        return true;
    }
    const char *p = text;
    do {
        char *end = (char *)p;
        long id = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : -1;
        if (end == p || (*end && *end != ',') || (*end == ',' && end[1] == '\0')) {
            snprintf(why, why_size, "expected 'all' or distinct comma-separated 1-based layer ids in 1..%d", n);
            return false;
        }
        if (id < 1 || id > n) {
            snprintf(why, why_size, "layer %ld is outside 1..%d (ids are 1-based)", id, n);
            return false;
        }
        if (mask[id - 1]) {
            snprintf(why, why_size, "layer %ld is listed twice", id);
            return false;
        }
        mask[id - 1] = true;
        p = *end ? end + 1 : end;
    } while (*p);
    return true;
}

bool config_parse_layer_sizes(const char *text, int n, int *out, char *why, size_t why_size) {
    if (!text[0]) return true;
    const char *p = text;
    int count = 0;
    for (;;) {
        char *end = (char *)p;
        long value = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : -1;
        if (end == p || (*end && *end != ',')) {
            snprintf(why, why_size, "expected %d comma-separated positive integers, one per layer (empty: uniform)",
                     n);
            return false;
        }
        if (value < 1 || value > INT_MAX) {
            snprintf(why, why_size, "entry %d (%ld) is not a positive integer", count + 1, value);
            return false;
        }
        if (count < n) out[count] = (int)value;
        count++;
        if (!*end) break;
        p = end + 1;
    }
    if (count != n) {
        snprintf(why, why_size, "%d entries for %d layers (num_hidden_layers); give one per layer", count, n);
        return false;
    }
    return true;
}

// Entry `layer` of a validated per-layer list, or fallback when the list is empty.
static int layer_entry(const char *text, int n, int layer, int fallback) {
    if (!text[0]) return fallback;
    int *sizes = xcalloc((size_t)n, sizeof *sizes);
    char why[256];
    if (!config_parse_layer_sizes(text, n, sizes, why, sizeof why)) fatal("internal: per-layer list '%s': %s", text, why);
    int value = sizes[layer];
    free(sizes);
    return value;
}

void config_layer(const decon_config *c, int layer, decon_config *out) {
    int n = c->num_hidden_layers;
    *out = *c;
    out->head_dim = layer_entry(c->layer_head_dims, n, layer, config_head_dim(c));
    // r_v: its list, else the uniform key, else the layer's own r_qk.
    out->value_head_dim = layer_entry(c->layer_value_head_dims, n, layer,
                                      c->value_head_dim > 0 ? c->value_head_dim : out->head_dim);
    out->intermediate_size = layer_entry(c->layer_intermediate_sizes, n, layer, c->intermediate_size);
    out->layer_head_dims[0] = out->layer_value_head_dims[0] = out->layer_intermediate_sizes[0] = '\0';
    out->layer_rope_pairs[0] = '\0';  // its pairs refer to the original head: the model's tables hold them
}

// Reads one pair index at *p into *value; false when there is none.
static bool read_pair_index(const char **p, long *value) {
    if (!isdigit((unsigned char)**p)) return false;
    char *end;
    *value = strtol(*p, &end, 10);
    *p = end;
    return true;
}

bool config_parse_rope_pairs(const char *text, int n, int layer, int *pairs, int capacity, int *count, char *why,
                             size_t why_size) {
    *count = 0;
    if (!text[0]) return true;
    const char *p = text;
    for (int group = 0;; group++) {
        if (group == n) {
            if (*p) {
                snprintf(why, why_size, "more than %d ';'-separated groups (one per layer, num_hidden_layers)", n);
                return false;
            }
            return true;
        }
        if (!*p && group < n) {
            snprintf(why, why_size, "%d ';'-separated groups for %d layers (num_hidden_layers); give one per layer "
                     "(empty: pairs 0..r_qk/2-1)", group, n);
            return false;
        }
        long last = -1;
        int kept = 0;
        while (*p && *p != ';') {
            long first, final;
            if (!read_pair_index(&p, &first)) goto syntax;
            final = first;
            if (*p == '-') {
                p++;
                if (!read_pair_index(&p, &final)) goto syntax;
            }
            if (*p && *p != ';' && *p != ',') goto syntax;
            if (*p == ',' && (p[1] == ';' || !p[1])) goto syntax;
            if (*p == ',') p++;
            if (first <= last || final < first) {
                snprintf(why, why_size, "layer %d's pairs must increase (distinct, sorted): %ld after %ld", group + 1,
                         first <= last ? first : final, first <= last ? last : first);
                return false;
            }
            if (final >= capacity) {
                snprintf(why, why_size, "layer %d's pair %ld is outside 0..%d (the original head has %d pairs)",
                         group + 1, final, capacity - 1, capacity);
                return false;
            }
            for (long i = first; i <= final; i++, kept++)
                if (group == layer) pairs[kept] = (int)i;
            last = final;
        }
        if (group == layer) *count = kept;
        if (*p == ';') p++;
    }
syntax:
    snprintf(why, why_size, "expected ';'-separated groups of comma-separated pair indices or ranges a-b, e.g. "
             "'0,3;1-3'");
    return false;
}

int config_layer_rope_pairs(const decon_config *c, int layer, int *pairs) {
    int count;
    char why[256];
    if (!config_parse_rope_pairs(c->layer_rope_pairs, c->num_hidden_layers, layer, pairs, config_head_dim(c) / 2,
                                 &count, why, sizeof why))
        fatal("internal: [model] layer_rope_pairs '%s': %s", c->layer_rope_pairs, why);
    return count;
}

bool config_has_layer_shapes(const decon_config *c) {
    return c->layer_head_dims[0] || c->layer_value_head_dims[0] || c->layer_intermediate_sizes[0];
}

void config_record_path(const decon_config *c, char *out, size_t size) {
    if (c->record_path[0]) snprintf(out, size, "%s", c->record_path);
    else snprintf(out, size, "%s/attn.h5", c->run_dir);
}

// config_head_dim where it is defined (heads > 0); a config not yet validated keeps its 0.
static int resolved_head_dim(const decon_config *c) { return c->num_attention_heads > 0 ? config_head_dim(c) : c->head_dim; }
static int resolved_value_head_dim(const decon_config *c) {
    return c->num_attention_heads > 0 ? config_value_head_dim(c) : c->value_head_dim;
}
// head_dim and value_head_dim are written and compared resolved (absent = d / h, = head_dim).
static int resolved_int(const decon_config *c, const key_spec *spec) {
    if (spec->offset == FIELD(head_dim)) return resolved_head_dim(c);
    if (spec->offset == FIELD(value_head_dim)) return resolved_value_head_dim(c);
    return *(const int *)((const char *)c + spec->offset);
}

char *config_to_text(const decon_config *config) {
    size_t capacity = 16384, used = 0;
    char *text = xmalloc(capacity);
    const char *section = "";
    for (int i = 0; i < KEY_COUNT; i++) {
        const key_spec *spec = &KEYS[i];
        const char *field = (const char *)config + spec->offset;
        char line[CONFIG_STRING_MAX + 256];
        int n = 0;
        if (strcmp(section, spec->section) != 0) {
            n += snprintf(line + n, sizeof line - (size_t)n, "%s[%s]\n", used ? "\n" : "", spec->section);
            section = spec->section;
        }
        switch (spec->type) {
        case KEY_INT:  // head sizes are written resolved: a checkpoint states them
            n += snprintf(line + n, sizeof line - (size_t)n, "%s = %d\n", spec->key, resolved_int(config, spec));
            break;
        case KEY_DOUBLE: n += snprintf(line + n, sizeof line - (size_t)n, "%s = %.17g\n", spec->key, *(const double *)field); break;
        case KEY_BOOL: n += snprintf(line + n, sizeof line - (size_t)n, "%s = %d\n", spec->key, *(const bool *)field ? 1 : 0); break;
        case KEY_STRING: n += snprintf(line + n, sizeof line - (size_t)n, "%s = %s\n", spec->key, field); break;
        }
        if (used + (size_t)n + 1 > capacity) {
            capacity *= 2;
            char *grown = realloc(text, capacity);
            if (!grown) fatal("out of memory");
            text = grown;
        }
        memcpy(text + used, line, (size_t)n);
        used += (size_t)n;
    }
    text[used] = '\0';
    return text;
}

bool config_same_model(const decon_config *a, const decon_config *b, const char **key) {
    for (int i = 0; i < KEY_COUNT; i++) {
        const key_spec *spec = &KEYS[i];
        if (strcmp(spec->section, "model") != 0 && strcmp(spec->section, "attention") != 0) continue;
        const char *x = (const char *)a + spec->offset, *y = (const char *)b + spec->offset;
        bool same;
        switch (spec->type) {
        case KEY_INT:
            same = resolved_int(a, spec) == resolved_int(b, spec);
            break;
        case KEY_DOUBLE: same = *(const double *)x == *(const double *)y; break;
        case KEY_BOOL: same = *(const bool *)x == *(const bool *)y; break;
        default: same = strcmp(x, y) == 0; break;
        }
        if (!same) {
            *key = spec->key;
            return false;
        }
    }
    return true;
}
