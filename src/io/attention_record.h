// Attention recordings (DESIGN.md sections 9, 10): per-layer attention matrices of K fixed
// held-out sequences at chosen steps, in one self-describing HDF5 file per run
// (<run_dir>/attn.h5), written collectively through parallel HDF5.
//
// Layout (format_version 1):
//   /                       attrs: format_version (int), kind = "decon attention recording",
//                                  variant, layout, layer_plan (one letter per layer),
//                                  num_layers, num_heads, sequence_length, dtype ("float32"|"float16")
//   /config                 the run's resolved config text
//   /tokens                 int32 [K, L]: the recorded sequences (input tokens)
//   /step_<N>/              attrs: step (int64)
//   /step_<N>/layer_<l>/    l 0-based as in parameter names; attrs: layer (0-based),
//                           layer_id (1-based), variant, is_standard (0|1), step,
//                           has_scores (0|1), row_sums ("1" | what rows sum to)
//   /step_<N>/layer_<l>/attn          [K, H, L, L] float32 or float16, chunk [1,1,L,L],
//                                     shuffle+deflate; zeros above the diagonal (causal), so
//                                     the unused triangle compresses to almost nothing
//   /step_<N>/layer_<l>/logits_hist   int64 [bins] histogram of the pre-softmax scores of
//                                     the causal triangle (mixers with pairwise scores only)
//   /step_<N>/layer_<l>/logits_edges  float64 [bins+1] bin edges
//   /step_<N>/layer_<l>/logits_stats  float64 [8]: min, max, mean, p1, p50, p99, count>10,
//                                     count>1000 (attrs name the fields)
// A mixer without a materialised attention matrix (mlp) gets a layer group with attrs
// only (has_attn = 0) so the file still lists every layer.
#pragma once
