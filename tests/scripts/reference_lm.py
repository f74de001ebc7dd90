"""An independent float64 numpy forward of a decon checkpoint, for the evaluator's tests.

It shares no code with src/: the model (DESIGN.md section 4, docs/design.md) is written out
here from the math: Emb, then per layer x += Mixer(RMSNorm(x)); x += MLP(RMSNorm(x)); then
RMSNorm and the (tied) LM head. Mixers: `standard` (causal softmax attention, RoPE in the
rotate-half layout, GQA, optional Q/K/V biases) and `mlp` (a gated MLP on each token).
Tensors are read with h5py from /params, the config from /config (the head size from
[model] head_dim, d / heads where a checkpoint has no such key). Also the token-shard
reader (input/corpus/write_shards.py's format) and the sliding-window perplexity as the
evaluator documents it (src/eval/perplexity.h), written independently.
"""
import configparser

import h5py
import numpy as np


class Model:
    def __init__(self, path, plan):
        """plan: one letter per layer, S (standard) or M (mlp), e.g. the report's model.plan."""
        with h5py.File(path, "r") as f:
            self.p = {name: f["params"][name][...].astype(np.float64) for name in f["params"]}
            text = f["config"][()].decode()
        config = configparser.ConfigParser()
        config.read_string(text)
        m = config["model"]
        self.d = int(m["hidden_size"])
        self.heads = int(m["num_attention_heads"])
        self.kv_heads = int(m["num_key_value_heads"]) or self.heads
        # [model] head_dim; a checkpoint written before the key existed has d / heads.
        self.head_dim = int(m.get("head_dim", "0")) or self.d // self.heads
        self.layers = int(m["num_hidden_layers"])
        self.theta = float(m["rope_theta"])
        self.eps = float(m["rms_norm_eps"])
        self.tied = int(m["tie_word_embeddings"]) != 0
        assert len(plan) == self.layers and set(plan) <= {"S", "M"}, plan
        self.plan = plan

    def rmsnorm(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x):  # x [T, heads, dh]: element i pairs with i + dh/2, angle pos * theta^(-2i/dh)
        T, _, dh = x.shape
        half = dh // 2
        angle = np.arange(T)[:, None] * self.theta ** (-2.0 * np.arange(half) / dh)
        c, s = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

    def standard(self, l, h):
        p, T, dh = self.p, h.shape[0], self.head_dim
        name = f"layers.{l}.mixer."
        bias = lambda b: p[name + b] if name + b in p else 0.0
        q = (h @ p[name + "wq"].T + bias("bq")).reshape(T, self.heads, dh)
        k = (h @ p[name + "wk"].T + bias("bk")).reshape(T, self.kv_heads, dh)
        v = (h @ p[name + "wv"].T + bias("bv")).reshape(T, self.kv_heads, dh)
        q, k = self.rope(q), self.rope(k)
        group = self.heads // self.kv_heads
        out = np.empty((T, self.heads, dh))
        causal = np.tril(np.ones((T, T), dtype=bool))
        for j in range(self.heads):
            scores = q[:, j] @ k[:, j // group].T / np.sqrt(dh)
            scores = np.where(causal, scores, -np.inf)
            a = np.exp(scores - scores.max(-1, keepdims=True))
            out[:, j] = (a / a.sum(-1, keepdims=True)) @ v[:, j // group]
        return out.reshape(T, -1) @ p[name + "wo"].T

    def gated_mlp(self, prefix, h):
        p = self.p
        gate = h @ p[prefix + "gate_proj"].T
        return (gate / (1 + np.exp(-gate)) * (h @ p[prefix + "up_proj"].T)) @ p[prefix + "down_proj"].T

    def log_probs(self, tokens, skip=()):
        """log softmax of the logits [len(tokens), vocab]; layers in skip (0-based) removed whole."""
        p = self.p
        x = p["embed_tokens"][np.asarray(tokens)]
        for l in range(self.layers):
            if l in skip:
                continue
            h = self.rmsnorm(x, p[f"layers.{l}.input_layernorm"])
            x = x + (self.standard(l, h) if self.plan[l] == "S" else self.gated_mlp(f"layers.{l}.mixer.", h))
            x = x + self.gated_mlp(f"layers.{l}.mlp.", self.rmsnorm(x, p[f"layers.{l}.post_attention_layernorm"]))
        logits = self.rmsnorm(x, p["norm"]) @ (p["embed_tokens"] if self.tied else p["lm_head"]).T
        top = logits.max(-1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))

    def log_likelihood(self, context, continuation, skip=()):
        """sum log p(continuation | context) and whether greedy decoding reproduces it."""
        seq = list(context) + list(continuation)
        lp = self.log_probs(seq[:-1], skip)
        rows = range(len(context) - 1, len(seq) - 1)
        total = sum(lp[r, seq[r + 1]] for r in rows)
        greedy = all(int(np.argmax(lp[r])) == seq[r + 1] for r in rows)
        return total, greedy

    def perplexity(self, tokens, context, stride, skip=()):
        """Every target tokens[1..N-1] scored once: the first window of `context` inputs
        scores all its targets, each later one (starting `stride` further on, the last moved
        back to end at the stream's end) only the targets not scored before."""
        n = len(tokens)
        if n - 1 <= context:
            windows = [(0, n - 1)]
        else:
            windows, start = [(0, context)], 0
            while start + context < n - 1:
                start = min(start + stride, n - 1 - context)
                windows.append((start, context))
        nll, scored, done = 0.0, 0, 0  # done: targets tokens[1..done] already scored
        for start, length in windows:
            lp = self.log_probs(tokens[start:start + length], skip)
            for r in range(length):
                target = start + r + 1
                if target > done:
                    nll -= lp[r, tokens[target]]
                    scored += 1
            done = start + length
        return float(np.exp(nll / scored)), scored, len(windows)


def read_shard(path):
    """The tokens of a decon token shard (64-byte header: magic, version, token bytes, count)."""
    with open(path, "rb") as f:
        header = f.read(64)
        assert header[:8] == b"DECONTOK", path
        token_bytes = int.from_bytes(header[12:16], "little")
        count = int.from_bytes(header[16:24], "little")
        return np.frombuffer(f.read(count * token_bytes), dtype=np.uint16 if token_bytes == 2 else np.uint32)
