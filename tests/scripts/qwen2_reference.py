"""An independent PyTorch forward of a Hugging Face Qwen2 model directory, for the export test.

It reads only what a Hugging Face user gets from decon-export: config.json and
model.safetensors (parsed here from the format's definition: an 8-byte little-endian header
length, a JSON header of dtype / shape / data_offsets, raw little-endian tensors), under
transformers' tensor names. The forward follows transformers' modeling_qwen2.py (eager
attention), in float64: embedding; per layer x += o_proj(attn(RMSNorm x)) with q/k/v
biases, RoPE by rotate_half with inv_freq = theta^(-2i/d_h), GQA by repeating kv heads,
causal softmax(q k^T / sqrt(d_h)); x += down(SiLU(gate(RMSNorm x)) * up(RMSNorm x)); final
RMSNorm; lm_head (the embedding when tie_word_embeddings). Nothing here reads decon's files.
"""
import json
import struct

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """{name: float64 tensor}, checking that the tensors tile the data section exactly."""
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    data = blob[8 + length:]
    tensors, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        array = np.frombuffer(data[begin:end], dtype=dtype).reshape(entry["shape"])
        tensors[name] = torch.from_numpy(array.astype(np.float64))
        spans.append((begin, end))
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] == len(data), "tensors do not cover the data section"
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "gaps or overlaps between tensors"
    return tensors, header.get("__metadata__", {})


class Qwen2:
    def __init__(self, directory):
        with open(f"{directory}/config.json") as f:
            self.config = json.load(f)
        self.w, self.metadata = read_safetensors(f"{directory}/model.safetensors")
        c = self.config
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim", c["hidden_size"] // self.heads)  # as transformers reads it

    def rmsnorm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.config["rms_norm_eps"]))

    def rope(self, x):  # x [heads, T, d_h]
        d = self.head_dim
        inv_freq = 1.0 / (self.config["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        angles = torch.arange(x.shape[1], dtype=torch.float64)[:, None] * inv_freq[None, :]
        emb = torch.cat([angles, angles], dim=-1)
        rotate_half = torch.cat([-x[..., d // 2:], x[..., :d // 2]], dim=-1)
        return x * emb.cos() + rotate_half * emb.sin()

    def attention(self, prefix, h):
        w, T = self.w, h.shape[0]
        proj = lambda n: h @ w[f"{prefix}.{n}_proj.weight"].T + w[f"{prefix}.{n}_proj.bias"]
        q = proj("q").view(T, self.heads, self.head_dim).transpose(0, 1)
        k = proj("k").view(T, self.kv_heads, self.head_dim).transpose(0, 1)
        v = proj("v").view(T, self.kv_heads, self.head_dim).transpose(0, 1)
        q, k = self.rope(q), self.rope(k)
        group = self.heads // self.kv_heads  # repeat_kv
        k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
        scores = q @ k.transpose(1, 2) / self.head_dim ** 0.5
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return out.transpose(0, 1).reshape(T, -1) @ w[f"{prefix}.o_proj.weight"].T

    def mlp(self, prefix, h):
        w = self.w
        gate = h @ w[f"{prefix}.gate_proj.weight"].T
        return (torch.nn.functional.silu(gate) * (h @ w[f"{prefix}.up_proj.weight"].T)) @ w[f"{prefix}.down_proj.weight"].T

    def logits(self, tokens):
        w, c = self.w, self.config
        x = w["model.embed_tokens.weight"][torch.as_tensor(np.asarray(tokens, dtype=np.int64))]
        for l in range(c["num_hidden_layers"]):
            p = f"model.layers.{l}"
            x = x + self.attention(f"{p}.self_attn", self.rmsnorm(x, w[f"{p}.input_layernorm.weight"]))
            x = x + self.mlp(f"{p}.mlp", self.rmsnorm(x, w[f"{p}.post_attention_layernorm.weight"]))
        head = w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
        return self.rmsnorm(x, w["model.norm.weight"]) @ head.T
