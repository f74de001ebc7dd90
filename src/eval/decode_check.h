// decon-eval --decode-check (issue 13): greedy generation through the model's decode
// caches (model/decode.h) must pick, at every position, the argmax of the full forward
// over the same tokens. Two prompts of different lengths (half and a quarter of the
// context) from a token shard, generated greedily together until the longer one fills
// the context, then one full forward over both sequences: at every generated position
// the greedy token must be the full forward's argmax, and the largest |logit difference|
// (cached against full) is reported. One line on stdout; returns the exit code (0 equal,
// 1 on a mismatch). A near tie, where the full forward's best and the greedy token's
// logits differ by no more than the measured difference, is counted, not failed.
#pragma once

// tokens_path: the shard the prompts come from (NULL: the checkpoint's [data]
// validation); context 0: the trained sequence length.
int eval_decode_check(const char *checkpoint, const char *tokens_path, int context, int threads);
