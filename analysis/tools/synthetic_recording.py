#!/usr/bin/python3
"""Writes an attention recording in decon's format (src/io/attention_record.h, format_version 1)
from synthetic matrices, with Debian's python3-h5py. For tests and demos of decon-analyze and
the plots when no trained run is at hand; real recordings come from decon-train ([io] record_*).

  synthetic_recording.py OUT.h5 --mode known   # hand-built heads with known indicator values
  synthetic_recording.py OUT.h5 --mode random --plan SNSN --variant nonapx --steps 0,200,400

--mode known: head h of layer l is pattern (h + l) % 4 of
  uniform (a_it = 1/(i+1)), identity, first (all mass on token 1), banded (1/2 on i and i-1),
the same for every sequence and step. --mode random: softmax of low-rank scores plus a locality
and a first-token bias, sharpening with the step (plan letter 'D' gives approx-diag-like rows
summing to ~3 with negative entries, 'M' an mlp layer without a matrix).
"""
import argparse
import sys

import h5py
import numpy as np

PATTERNS = ("uniform", "identity", "first", "banded")
VARIANTS = {"S": "standard", "N": "nonapx", "T": "approx", "D": "approx-diag", "M": "mlp", "R": "rndembqk",
            "F": "fixedseqqk", "Q": "staticembqk", "E": "mhe-add", "X": "mhe-mul"}


def pattern_matrix(name, length):
    a = np.zeros((length, length))
    for i in range(length):
        if name == "uniform":
            a[i, : i + 1] = 1.0 / (i + 1)
        elif name == "identity":
            a[i, i] = 1.0
        elif name == "first":
            a[i, 0] = 1.0
        elif name == "banded":
            if i == 0:
                a[0, 0] = 1.0
            else:
                a[i, i] = a[i, i - 1] = 0.5
    return a


def score_edges():
    magnitudes = 10.0 ** (-3 + np.arange(141) / 20.0)
    return np.concatenate([[-np.inf], -magnitudes[::-1], magnitudes, [np.inf]])


def score_histogram(scores, edges):
    finite = scores[np.isfinite(scores)]
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    index = np.searchsorted(edges, finite, side="right") - 1
    index = np.clip(index, 0, len(counts) - 1)
    np.add.at(counts, index, 1)

    def quantile(q):
        target, below = q * finite.size, 0
        for b, c in enumerate(counts):
            if c > 0 and below + c >= target:
                lo, hi = edges[b], edges[b + 1]
                if not np.isfinite(lo):
                    return hi
                if not np.isfinite(hi):
                    return lo
                return lo + (target - below) / c * (hi - lo)
            below += c
        return edges[-1]

    stats = np.array([finite.min(), finite.max(), finite.mean(), quantile(0.01), quantile(0.5), quantile(0.99),
                      np.sum(np.abs(finite) > 10), np.sum(np.abs(finite) > 1000)], dtype=np.float64)
    return counts, stats, finite.std(), int(scores.size - finite.size)


def causal_softmax(scores):
    length = scores.shape[-1]
    mask = np.tril(np.ones((length, length), dtype=bool))
    s = np.where(mask, scores, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def random_layer(rng, letter, layer, step_fraction, sequences, heads, length):
    """Returns (A [K,H,L,L], scores [K,H,L,L] or None)."""
    d = 8
    position = np.arange(length)
    distance = position[:, None] - position[None, :]
    sharp = 0.5 + 3.0 * step_fraction
    a = np.zeros((sequences, heads, length, length))
    scores = np.zeros_like(a)
    for k in range(sequences):
        for h in range(heads):
            q = rng.normal(size=(length, d))
            kk = rng.normal(size=(length, d))
            style = (h + layer) % 3
            s = sharp * (q @ kk.T) / np.sqrt(d)
            if style == 0:
                s = s - sharp * 0.8 * np.abs(distance)          # local
            elif style == 1:
                s[:, 0] += 2.0 + 4.0 * step_fraction             # sink on the first token
            if letter == "N":                                    # one score per key token
                g = sharp * rng.normal(size=length)
                s = np.broadcast_to(g[None, :], (length, length)).copy()
            scores[k, h] = np.where(np.tril(np.ones((length, length))) > 0, s, 0.0)
            a[k, h] = causal_softmax(s)
            if letter == "D":                                    # three terms, rows sum to ~3
                extra = causal_softmax(0.5 * s) + 0.3 * np.tril(rng.normal(size=(length, length))) / np.sqrt(length)
                a[k, h] = a[k, h] + extra + np.tril(np.ones((length, length))) / (position[:, None] + 1)
    return a, scores


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--mode", choices=("known", "random"), default="known")
    parser.add_argument("--plan", default="SSS", help="one letter per layer (S standard, N nonapx, D approx-diag, "
                        "M mlp, ...)")
    parser.add_argument("--variant", default=None, help="run variant (default: from the plan's first non-S letter)")
    parser.add_argument("--layout", default=None)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--steps", default="0,100")
    parser.add_argument("--recorded", default="all", help="0-based layers, e.g. 0,2 (default all)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format-version", type=int, default=1)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    plan = args.plan
    layers = len(plan)
    variant = args.variant or next((VARIANTS[c] for c in plan if c != "S"), "standard")
    layout = args.layout or ("uniform" if len(set(plan)) == 1 else "hybrid:even")
    recorded = list(range(layers)) if args.recorded == "all" else [int(x) for x in args.recorded.split(",")]
    steps = [int(x) for x in args.steps.split(",")]
    K, H, L = args.sequences, args.heads, args.length
    dtype = np.float16 if args.dtype == "float16" else np.float32
    edges = score_edges()

    # libver 1.8+: checksummed metadata, the format decon writes and reads (src/io/hdf5_format.h).
    with h5py.File(args.out, "w", libver=("v108", "latest")) as f:
        f.attrs["format_version"] = np.int32(args.format_version)
        f.attrs["kind"] = "decon attention recording"
        f.attrs["writer"] = "decon"
        f.attrs["variant"] = variant
        f.attrs["layout"] = layout
        f.attrs["layer_plan"] = plan
        f.attrs["num_layers"] = np.int32(layers)
        f.attrs["num_heads"] = np.int32(H)
        f.attrs["num_key_value_heads"] = np.int32(H)
        f.attrs["head_dim"] = np.int32(8)
        f.attrs["sequence_length"] = np.int32(L)
        f.attrs["sequences"] = np.int32(K)
        f.attrs["dtype"] = args.dtype
        f.attrs["recorded_layers"] = np.array(recorded, dtype=np.int32)
        f.attrs["source"] = "synthetic"
        f.attrs["histogram_bins"] = np.int32(len(edges) - 1)
        f["config"] = "[attention]\nvariant = %s\nlayout = %s\n" % (variant, layout)
        f.create_dataset("tokens", data=rng.integers(0, 64, size=(K, L), dtype=np.int32))
        for n, step in enumerate(steps):
            g = f.create_group("step_%d" % step)
            g.attrs["step"] = np.int64(step)
            g.attrs["loss"] = np.float64(5.0 / (1.0 + n))
            g.attrs["writer"] = "decon-train"
            for layer in recorded:
                letter = plan[layer]
                lg = g.create_group("layer_%d" % layer)
                lg.attrs["layer"] = np.int32(layer)
                lg.attrs["layer_id"] = np.int32(layer + 1)
                lg.attrs["variant"] = VARIANTS[letter]
                lg.attrs["is_standard"] = np.int32(letter == "S")
                lg.attrs["step"] = np.int64(step)
                has_attn = letter != "M"
                lg.attrs["has_attn"] = np.int32(has_attn)
                lg.attrs["has_scores"] = np.int32(has_attn and letter != "D")
                lg.attrs["scores_kind"] = "none" if not has_attn or letter == "D" else (
                    "per_token" if letter == "N" else "pairwise")
                if not has_attn:
                    continue
                if args.mode == "known":
                    a = np.zeros((K, H, L, L))
                    for h in range(H):
                        a[:, h] = pattern_matrix(PATTERNS[(h + layer) % 4], L)
                    scores = np.tril(rng.normal(scale=3.0, size=(K, H, L, L)))
                else:
                    a, scores = random_layer(rng, letter, layer, n / max(1, len(steps) - 1), K, H, L)
                row_sums = np.array([a[k, h, i, : i + 1].sum() for k in range(K) for h in range(H) for i in range(L)])
                lo, hi = row_sums.min(), row_sums.max()
                lg.attrs["row_sums"] = "1" if abs(lo - 1) < 1e-6 and abs(hi - 1) < 1e-6 else "%.4g..%.4g" % (lo, hi)
                lg.attrs["row_sum_min"] = np.float64(lo)
                lg.attrs["row_sum_max"] = np.float64(hi)
                lg.attrs["entry_min"] = np.float64(min(a[k, h, i, t] for k in range(K) for h in range(H)
                                                       for i in range(L) for t in range(i + 1)))
                lg.create_dataset("attn", data=a.astype(dtype), chunks=(1, 1, L, L), shuffle=True,
                                  compression="gzip", compression_opts=1)
                if lg.attrs["has_scores"]:
                    mask = np.broadcast_to(np.tril(np.ones((L, L), dtype=bool)), scores.shape)
                    values = scores[mask]
                    counts, stats, std, nonfinite = score_histogram(values, edges)
                    hist = lg.create_dataset("logits_hist", data=counts)
                    hist.attrs["count"] = np.int64(counts.sum())
                    hist.attrs["nonfinite"] = np.int64(nonfinite)
                    lg.create_dataset("logits_edges", data=edges)
                    st = lg.create_dataset("logits_stats", data=stats)
                    st.attrs["fields"] = "min,max,mean,p1,p50,p99,count_abs_gt_10,count_abs_gt_1000"
                    st.attrs["std"] = np.float64(std)
    return 0


if __name__ == "__main__":
    sys.exit(main())
