// A standard-variant checkpoint as a Hugging Face Qwen2 model directory (bin/decon-export):
//   config.json        Qwen2ForCausalLM's keys (model_type qwen2, torch_dtype float32, ...)
//   model.safetensors  every tensor in float32 under transformers' names
//   tokenizer.model    the checkpoint's sentencepiece model (io/tokenizer_path.h)
// decon's blocks are Qwen2's (pre-norm RMSNorm, SwiGLU MLP, RoPE in the rotate-half
// pairing, GQA, Q/K/V biases, [out, in] weights), so tensors map one to one: no
// transposition, no permutation of q/k rows. Only models whose every layer is standard
// attention export; any other mixer is refused in one line (no HF architecture has it).
#pragma once

typedef struct {
    const char *checkpoint;
    const char *out_dir;
    const char *tokenizer;   // --tokenizer FILE, NULL: the lookup rule
} hf_export_options;

// Writes the directory (created when missing; files already there are replaced only by
// complete new ones, config.json last). Every failure is one fatal line.
void hf_export(const hf_export_options *options);
