// decon-generate: text from a checkpoint, through its tokenizer and the model's decode
// caches (docs/design.md "Generating text").
//   decon-generate <checkpoint.h5> (--prompt TEXT | --prompt-file FILE | --prompt-ids 1,2,3)
//                  [--max-new N] [--max-context N] [--temperature T] [--top-k K] [--top-p P]
//                  [--seed S] [--batch B] [--greedy] [--json OUT] [--tokenizer FILE] [--threads N]
// Under `mpirun -np N` the N ranks split the model as one tensor-parallel group.
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/options.h"
#include "par/program.h"
#include "eval/generator.h"

static void usage(void) {
    fprintf(stderr,
            "usage: decon-generate <checkpoint.h5> (--prompt TEXT | --prompt-file FILE | --prompt-ids 1,2,3) [options]\n"
            "  --prompt TEXT       one prompt (text, through the checkpoint's tokenizer)\n"
            "  --prompt-file FILE  one prompt per line: a batch of prompts of different lengths\n"
            "  --prompt-ids IDS    one prompt as token ids, e.g. 3,415,27 (read as given: no separator added)\n"
            "  --max-new N         tokens to generate per sequence at most (default %d)\n"
            "  --max-context N     positions per sequence, prompt included (default: the trained sequence length)\n"
            "  --greedy            always the most likely token (same as --temperature 0)\n"
            "  --temperature T     softmax temperature (default 1; 0 is greedy)\n"
            "  --top-k K           sample among the K most likely tokens only (default 0: all)\n"
            "  --top-p P           ... and among the most likely tokens whose probability reaches P (default 1)\n"
            "  --seed S            random seed of the samplers (default 0); the same seed repeats a run\n"
            "  --batch B           sample every prompt B times, as independent sequences (default 1)\n"
            "  --json FILE         also write settings, ids, texts, stop reasons and timings as JSON\n"
            "  --tokenizer FILE    the sentencepiece model (default: the checkpoint's [data] tokenizer, else\n"
            "                      tokenizer.model beside its [data] train shard)\n"
            "  --threads N         threads per rank (default: every core)\n"
            "A text prompt starts a document: it is preceded by the EOS id, as every document of the corpus is.\n"
            "One sequence is printed as it is generated; several are printed whole as each stops.\n"
            "Under mpirun -np N the N ranks split the model's heads (tensor parallel); rank 0 prints.\n",
            GENERATE_DEFAULT_MAX_NEW);
}

static bool takes_value(const char *option) {
    static const char *const OPTIONS[] = {"--prompt", "--prompt-file", "--prompt-ids", "--max-new", "--max-context",
                                          "--temperature", "--top-k", "--top-p", "--seed", "--batch", "--json",
                                          "--tokenizer", "--threads"};
    for (size_t i = 0; i < sizeof OPTIONS / sizeof *OPTIONS; i++)
        if (strcmp(option, OPTIONS[i]) == 0) return true;
    return false;
}

// "3,415,27" -> ids (range checked later, against the tokenizer).
static int *parse_ids(const char *text, int *count) {
    int capacity = 0, n = 0;
    int *ids = NULL;
    const char *at = text;
    while (*at) {
        const char *comma = strchr(at, ',');
        size_t length = comma ? (size_t)(comma - at) : strlen(at);
        char item[32];
        if (length == 0 || length >= sizeof item)
            fatal("--prompt-ids '%.60s': expected token ids separated by commas, such as 3,415,27", text);
        memcpy(item, at, length);
        item[length] = '\0';
        ids = xgrow(ids, n, &capacity, sizeof(int), 16);
        ids[n++] = (int)option_integer("--prompt-ids", item, 0, INT_MAX);
        at += length + (comma != NULL);
        if (comma && !*at) fatal("--prompt-ids '%.60s': a comma ends the list; remove it", text);
    }
    *count = n;
    return ids;
}

int main(int argc, char **argv) {
    int rank, world;
    program_start(&argc, &argv, &rank, &world);

    generator_options o = {.max_new = GENERATE_DEFAULT_MAX_NEW, .batch = 1};
    sampler_defaults(&o.sampling);
    int *ids = NULL, prompt_sources = 0;
    bool greedy = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            MPI_Finalize();
            return 0;
        }
        if (strcmp(a, "--greedy") == 0) { greedy = true; continue; }
        if (a[0] != '-' || a[1] == '\0') {
            if (o.checkpoint) fatal("more than one checkpoint given (%s and %s)", o.checkpoint, a);
            o.checkpoint = a;
            continue;
        }
        if (!takes_value(a)) fatal("unknown option %s; see decon-generate --help", a);
        if (i + 1 >= argc) fatal("%s needs a value; see decon-generate --help", a);
        const char *value = argv[++i];
        if (sampler_parse_option(&o.sampling, a, value)) continue;
        if (strcmp(a, "--prompt") == 0 || strcmp(a, "--prompt-file") == 0 || strcmp(a, "--prompt-ids") == 0) {
            if (prompt_sources++ > 0)
                fatal("give one of --prompt, --prompt-file and --prompt-ids, once (%s is the second)", a);
            if (strcmp(a, "--prompt") == 0) o.prompt_text = value;
            else if (strcmp(a, "--prompt-file") == 0) o.prompt_file = value;
            else o.prompt_ids = ids = parse_ids(value, &o.prompt_id_count);
        } else if (strcmp(a, "--max-new") == 0) o.max_new = (int)option_integer(a, value, 1, 1 << 24);
        else if (strcmp(a, "--max-context") == 0) o.max_context = (int)option_integer(a, value, 2, 1 << 24);
        else if (strcmp(a, "--batch") == 0) o.batch = (int)option_integer(a, value, 1, 65536);
        else if (strcmp(a, "--json") == 0) o.json_path = value;
        else if (strcmp(a, "--tokenizer") == 0) o.tokenizer = value;
        else if (strcmp(a, "--threads") == 0) o.threads = (int)option_integer(a, value, 1, 4096);
        else fatal("internal: option %s has no handler", a);
    }
    o.sampling.greedy = greedy;
    if (!o.checkpoint) {
        usage();
        fatal("no checkpoint given; e.g. decon-generate runs/tiny/ckpt/latest.h5 --prompt \"The\"");
    }
    if (prompt_sources == 0)
        fatal("no prompt given: add --prompt TEXT, --prompt-file FILE or --prompt-ids 1,2,3");
    int code = generator_run(&o);
    free(ids);
    MPI_Finalize();
    return code;
}
