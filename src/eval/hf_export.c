#include "eval/hf_export.h"

#include <cJSON.h>
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "eval/load.h"
#include "io/durable_file.h"
#include "io/file_contents.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "io/tokenizer_path.h"
#include "model/layer_plan.h"

enum { PATH_MAX_BYTES = 4096, MESSAGE_MAX = 8192 };

// Every layer must be standard attention: name the variant and the layers that are not.
static void refuse_non_standard(const model *m, const char *checkpoint) {
    int n = m->config.num_hidden_layers, others = 0;
    char layers[512] = "";
    for (int l = 0; l < n; l++) {
        if (m->plan[l] == mixer_standard()) continue;
        size_t used = strlen(layers);
        if (used < sizeof layers - 16) snprintf(layers + used, sizeof layers - used, others ? ",%d" : "%d", l + 1);
        others++;
    }
    if (others)
        fatal("%s: variant %s (layout %s; layers %s of %d) cannot be exported: only standard attention (MHA, GQA, "
              "MQA) has a Hugging Face architecture (Qwen2); no HF model implements the %s mixer",
              checkpoint, m->config.variant, m->config.layout, layers, n, m->config.variant);
}

// Fails now, before the checkpoint is read, when out_dir cannot take the files.
static void prepare_directory(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) fatal("%s exists and is not a directory; give a new or existing directory", dir);
    } else if (mkdir(dir, 0777) != 0) {
        fatal("cannot create the export directory %s (%s); check that its parent exists and is writable", dir,
              strerror(errno));
    }
    char probe[PATH_MAX_BYTES];
    if ((size_t)snprintf(probe, sizeof probe, "%s/.decon-export.probe", dir) >= sizeof probe)
        fatal("export directory path is too long: %.80s...", dir);
    FILE *f = fopen(probe, "w");
    if (!f) fatal("cannot write in the export directory %s (%s)", dir, strerror(errno));
    fclose(f);
    unlink(probe);
}

static void join(char *out, const char *dir, const char *name) {
    if ((size_t)snprintf(out, PATH_MAX_BYTES, "%s/%s", dir, name) >= PATH_MAX_BYTES)
        fatal("export path is too long: %.80s...", dir);
}

// Writes size bytes to "<path>.tmp" and publishes it as path.
static void write_file(const char *path, const void *data, size_t size, const char *what) {
    char tmp[PATH_MAX_BYTES + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) fatal("cannot write %s (%s)", tmp, strerror(errno));
    int ok = fwrite(data, 1, size, f) == size;
    int error = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        error = errno;
    }
    if (!ok) {
        unlink(tmp);
        fatal("cannot write %s (%s); free some space and export again", tmp, strerror(error));
    }
    char message[MESSAGE_MAX];
    durable_publish(tmp, path, what, "free some space and export again", message, sizeof message);
    if (message[0]) fatal("%s", message);
}

static void copy_tokenizer(const char *from, const char *to) {
    char message[256];
    size_t size = 0;
    char *bytes = file_contents_read(from, &size, message, sizeof message);
    if (!bytes) fatal("tokenizer %s: %s", from, message);
    write_file(to, bytes, size, "tokenizer copy");
    free(bytes);
}

static cJSON *checked(cJSON *item) {
    if (!item) fatal("out of memory building config.json");
    return item;
}

static void add_number(cJSON *o, const char *key, double value) { checked(cJSON_AddNumberToObject(o, key, value)); }
static void add_string(cJSON *o, const char *key, const char *value) { checked(cJSON_AddStringToObject(o, key, value)); }
static void add_bool(cJSON *o, const char *key, bool value) { checked(cJSON_AddBoolToObject(o, key, value)); }

// Qwen2Config's keys (transformers' configuration_qwen2.py) for this model, plus where it came from.
static char *config_json(const decon_config *c, const tokenizer *t, const char *checkpoint, long long step) {
    cJSON *o = checked(cJSON_CreateObject());
    cJSON *architectures = checked(cJSON_AddArrayToObject(o, "architectures"));
    cJSON_AddItemToArray(architectures, checked(cJSON_CreateString("Qwen2ForCausalLM")));
    add_string(o, "model_type", "qwen2");
    add_number(o, "vocab_size", c->vocab_size);
    add_number(o, "hidden_size", c->hidden_size);
    add_number(o, "intermediate_size", c->intermediate_size);
    add_number(o, "num_hidden_layers", c->num_hidden_layers);
    add_number(o, "num_attention_heads", c->num_attention_heads);
    add_number(o, "num_key_value_heads", config_kv_heads(c));
    add_number(o, "head_dim", config_head_dim(c));  // transformers reads it when present; d/h otherwise
    add_string(o, "hidden_act", "silu");
    // decon's 0 means "the training length" (config.c); RoPE itself has no limit.
    add_number(o, "max_position_embeddings", c->max_position_embeddings > 0 ? c->max_position_embeddings
                                                                             : c->sequence_length);
    add_number(o, "initializer_range", c->initializer_range);
    add_number(o, "rms_norm_eps", c->rms_norm_eps);
    add_bool(o, "use_cache", true);
    add_bool(o, "tie_word_embeddings", c->tie_word_embeddings);
    add_number(o, "rope_theta", c->rope_theta);
    checked(cJSON_AddNullToObject(o, "rope_scaling"));
    add_bool(o, "use_sliding_window", false);
    add_number(o, "sliding_window", c->max_position_embeddings > 0 ? c->max_position_embeddings : c->sequence_length);
    add_number(o, "max_window_layers", c->num_hidden_layers);
    add_number(o, "attention_dropout", 0.0);
    add_string(o, "torch_dtype", "float32");
    if (tokenizer_bos_id(t) >= 0) add_number(o, "bos_token_id", tokenizer_bos_id(t));
    if (tokenizer_eos_id(t) >= 0) add_number(o, "eos_token_id", tokenizer_eos_id(t));
    if (tokenizer_pad_id(t) >= 0) add_number(o, "pad_token_id", tokenizer_pad_id(t));
    cJSON *source = checked(cJSON_AddObjectToObject(o, "decon"));
    add_string(source, "checkpoint", checkpoint);
    add_number(source, "step", (double)step);
    add_string(source, "variant", c->variant);
    add_string(source, "layout", c->layout);
    add_bool(source, "attention_bias", c->attention_bias);
    add_string(source, "tokenizer", tokenizer_path(t));
    char *text = cJSON_Print(o);
    if (!text) fatal("out of memory building config.json");
    cJSON_Delete(o);
    return text;
}

// transformers' name of a decon tensor ("layers.3.mixer.wq" -> "model.layers.3.self_attn.q_proj.weight").
static void hf_name(char *out, size_t size, const char *name) {
    static const char *const MAP[][2] = {
        {"mixer.wq", "self_attn.q_proj.weight"}, {"mixer.bq", "self_attn.q_proj.bias"},
        {"mixer.wk", "self_attn.k_proj.weight"}, {"mixer.bk", "self_attn.k_proj.bias"},
        {"mixer.wv", "self_attn.v_proj.weight"}, {"mixer.bv", "self_attn.v_proj.bias"},
        {"mixer.wo", "self_attn.o_proj.weight"}, {"input_layernorm", "input_layernorm.weight"},
        {"post_attention_layernorm", "post_attention_layernorm.weight"}, {"mlp.gate_proj", "mlp.gate_proj.weight"},
        {"mlp.up_proj", "mlp.up_proj.weight"},   {"mlp.down_proj", "mlp.down_proj.weight"},
    };
    if (strcmp(name, "embed_tokens") == 0) snprintf(out, size, "model.embed_tokens.weight");
    else if (strcmp(name, "norm") == 0) snprintf(out, size, "model.norm.weight");
    else if (strcmp(name, "lm_head") == 0) snprintf(out, size, "lm_head.weight");
    else {
        int layer = -1, consumed = 0;
        if (sscanf(name, "layers.%d.%n", &layer, &consumed) == 1 && consumed > 0)
            for (size_t i = 0; i < sizeof MAP / sizeof MAP[0]; i++)
                if (strcmp(name + consumed, MAP[i][0]) == 0) {
                    snprintf(out, size, "model.layers.%d.%s", layer, MAP[i][1]);
                    return;
                }
        fatal("internal: no Hugging Face name for decon tensor %s", name);
    }
}

void hf_export(const hf_export_options *o) {
    decon_config config;
    eval_read_config(&config, o->checkpoint);
    model m;
    model_build(&m, &config, o->checkpoint);
    refuse_non_standard(&m, o->checkpoint);
    // Qwen2's config has one head_dim and one intermediate_size for every layer, and no
    // value head size: a compressed model's per-layer shapes have no HF keys.
    if (config_has_layer_shapes(&m.config) || config_value_head_dim(&m.config) != config_head_dim(&m.config))
        fatal("%s: per-layer shapes (layer_head_dims / layer_value_head_dims / layer_intermediate_sizes) or a "
              "value_head_dim != head_dim cannot be exported: Hugging Face Qwen2 has one head size and one MLP width "
              "for all layers", o->checkpoint);

    char tokenizer_file[PATH_MAX_BYTES];
    tokenizer_path_find(tokenizer_file, sizeof tokenizer_file, &config, o->tokenizer, o->checkpoint);
    tokenizer *tok = tokenizer_load(tokenizer_file);
    if (tokenizer_vocab_size(tok) > config.vocab_size)
        fatal("tokenizer %s: it has %d pieces but %s's vocabulary is %d: not the tokenizer of its shards; give the "
              "right one with --tokenizer FILE", tokenizer_file, tokenizer_vocab_size(tok), o->checkpoint,
              config.vocab_size);
    prepare_directory(o->out_dir);

    // The logical tensors: one rank holds every tensor whole, whatever decomposition wrote the file.
    float *params = xaligned_alloc(m.registry.total * sizeof(float));
    train_state state;
    checkpoint_read(o->checkpoint, &m.registry, params, NULL, NULL, &state, MPI_COMM_WORLD);

    // Qwen2's q/k/v projections always have biases: zeros stand in when decon trained without.
    int layers = config.num_hidden_layers, kv_dim = config_kv_heads(&config) * config_head_dim(&config);
    int q_dim = config.num_attention_heads * config_head_dim(&config);
    float *zeros = xaligned_alloc((size_t)(q_dim > kv_dim ? q_dim : kv_dim) * sizeof(float));
    int capacity = m.registry.count + 3 * layers;
    safetensors_tensor *tensors = xmalloc((size_t)capacity * sizeof *tensors);
    char (*names)[128] = xmalloc((size_t)capacity * sizeof *names);
    int count = 0;
    for (int i = 0; i < m.registry.count; i++) {
        const param_info *p = &m.registry.items[i];
        hf_name(names[count], sizeof names[count], p->name);
        tensors[count] = (safetensors_tensor){names[count], p->ndim, {p->shape[0], p->ndim == 2 ? p->shape[1] : 0},
                                              params + p->offset};
        count++;
        bool value_projection = p->layer >= 0 && strstr(p->name, ".mixer.wv") != NULL;
        if (!config.attention_bias && value_projection) {  // after wv: bq, bk, bv
            static const char *const bias[3] = {"q", "k", "v"};
            for (int b = 0; b < 3; b++) {
                snprintf(names[count], sizeof names[count], "model.layers.%d.self_attn.%s_proj.bias", p->layer, bias[b]);
                tensors[count] = (safetensors_tensor){names[count], 1, {b == 0 ? q_dim : kv_dim, 0}, zeros};
                count++;
            }
        }
    }
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%lld", (long long)state.step);
    const char *metadata[] = {"format", "pt", "decon_checkpoint", o->checkpoint, "decon_step", step_text};

    char path[PATH_MAX_BYTES];
    join(path, o->out_dir, "model.safetensors");
    safetensors_write(path, tensors, count, metadata, 3);
    join(path, o->out_dir, "tokenizer.model");
    copy_tokenizer(tokenizer_file, path);
    char *json = config_json(&config, tok, o->checkpoint, (long long)state.step);
    join(path, o->out_dir, "config.json");
    write_file(path, json, strlen(json), "config.json");
    info("exported %s (step %lld, %lld parameters, %d layers, %d/%d heads) to %s: config.json, model.safetensors (%d "
         "tensors), tokenizer.model", o->checkpoint, (long long)state.step,
         (long long)params_total_logical(&m.registry), layers, config.num_attention_heads, config_kv_heads(&config),
         o->out_dir, count);
    cJSON_free(json);
    free(names);
    free(tensors);
    free(zeros);
    free(params);
    tokenizer_free(tok);
    model_free(&m);
}
