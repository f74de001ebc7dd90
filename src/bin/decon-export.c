// decon-export: a standard-variant checkpoint as a Hugging Face Qwen2 model directory.
//   decon-export <checkpoint.h5> <out_dir> [--tokenizer FILE]
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "par/program.h"
#include "eval/hf_export.h"

static void usage(void) {
    fprintf(stderr,
            "usage: decon-export <checkpoint.h5> <out_dir> [--tokenizer FILE]\n"
            "  writes out_dir/config.json (Qwen2ForCausalLM), model.safetensors (float32) and tokenizer.model;\n"
            "  only models whose every layer is standard attention (MHA, GQA, MQA) export\n"
            "  --tokenizer FILE   the sentencepiece model (default: the checkpoint's [data] tokenizer, else\n"
            "                     tokenizer.model beside its [data] train shard)\n");
}

int main(int argc, char **argv) {
    int rank, world;
    program_start(&argc, &argv, &rank, &world);
    if (world > 1) fatal("decon-export runs on one rank; run it without mpirun -np %d", world);
    hf_export_options o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            MPI_Finalize();
            return 0;
        }
        if (strcmp(a, "--tokenizer") == 0) {
            if (i + 1 >= argc) fatal("--tokenizer needs a value; see decon-export --help");
            o.tokenizer = argv[++i];
        } else if (a[0] == '-') {
            fatal("unknown option %s; see decon-export --help", a);
        } else if (!o.checkpoint) {
            o.checkpoint = a;
        } else if (!o.out_dir) {
            o.out_dir = a;
        } else {
            fatal("unexpected argument %s: give one checkpoint and one output directory", a);
        }
    }
    if (!o.out_dir) {
        usage();
        fatal("give a checkpoint and an output directory, e.g. decon-export runs/tiny/ckpt/latest.h5 runs/tiny/hf");
    }
    hf_export(&o);
    MPI_Finalize();
    return 0;
}
