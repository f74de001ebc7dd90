"""The inference figure from bench_decode's JSON lines (`make bench`; docs/design.md "Inference"):
decode tokens/s against the context length per mixer at the first and the second batch size
(log-log), and the measured cache bytes against the context (batch 1 solid, the larger batch
dashed, the formula as open circles on the same points). Caps the bench printed (contexts it
skipped) are listed under the panels. Colours are the report's variant colours (figures.py).

    /usr/bin/python3 analysis/plot/decode_figure.py bench/results/decode.jsonl --out bench/results/decode.png
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402  (sets the Agg backend and the report's style)
from figures import plt  # noqa: E402

EXTRA = {"gqa-kv2": "#7f7f7f"}   # standard under GQA: grey, dotted, beside standard's black
DOTTED = {"gqa-kv2"}


def fail(message):
    print("decon: error: %s" % message, file=sys.stderr)
    sys.exit(1)


def load(path):
    """(machine, prefill rows, decode rows, caps) of a bench_decode JSON-lines file."""
    machine, prefill, decode, caps = {}, [], [], []
    try:
        with open(path) as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except ValueError as e:
                    fail("%s line %d is not JSON (%s); rerun bench_decode" % (path, number, e))
                kind = row.get("kind") if isinstance(row, dict) else None
                if kind == "machine":
                    machine = row
                elif kind == "prefill":
                    prefill.append(row)
                elif kind == "decode":
                    for key in ("mixer", "batch", "context", "tokens_per_s", "cache_bytes", "formula_bytes"):
                        if key not in row:
                            fail("%s line %d: a decode row without \"%s\"; rerun bench_decode" % (path, number, key))
                    decode.append(row)
                elif kind == "cap":
                    caps.append(row)
                else:
                    fail("%s line %d: unknown kind %r; is this bench_decode's output?" % (path, number, kind))
    except OSError as e:
        fail("cannot read %s (%s); run bench_decode first (make bench)" % (path, e.strerror))
    if not decode:
        fail("%s has no decode measurements; run bench_decode first (make bench)" % path)
    return machine, prefill, decode, caps


def style(mixer):
    colour = figures.VARIANT_COLOURS.get(mixer, EXTRA.get(mixer, "#7f7f7f"))
    return {"color": colour, "linestyle": ":" if mixer in DOTTED else "-", "marker": ".", "markersize": 5}


def draw(machine, decode, caps, path):
    mixers = list(dict.fromkeys(r["mixer"] for r in decode))
    batches = sorted({r["batch"] for r in decode})[:2]
    contexts = sorted({r["context"] for r in decode})
    fig, axes = plt.subplots(1, len(batches) + 1, figsize=(5.2 * (len(batches) + 1), 4.6), squeeze=False)
    axes = axes[0]
    handles = []
    for mixer in mixers:
        rows = [r for r in decode if r["mixer"] == mixer]
        for i, batch in enumerate(batches):
            points = sorted((r["context"], r["tokens_per_s"]) for r in rows if r["batch"] == batch)
            if points:
                line, = axes[i].plot(*zip(*points), label=mixer, **style(mixer))
                if i == 0:
                    handles.append(line)
        for batch, dash in zip(batches, ["-", "--"]):
            points = sorted((r["context"], r["cache_bytes"], r["formula_bytes"]) for r in rows if r["batch"] == batch)
            points = [p for p in points if p[1] > 0]   # mlp keeps nothing: no point on a log axis
            if points:
                s = dict(style(mixer), linestyle=dash if mixer not in DOTTED else ":")
                axes[-1].plot([p[0] for p in points], [p[1] for p in points], **s)
                axes[-1].plot([p[0] for p in points], [p[2] for p in points], linestyle="none", marker="o",
                              markersize=6, markerfacecolor="none", markeredgecolor=s["color"], markeredgewidth=0.8)
    for i, batch in enumerate(batches):
        axes[i].set_title("decode, batch %d" % batch)
        axes[i].set_ylabel("tokens/s (batch x steps/s)")
    axes[-1].set_title("decode cache (all layers)")
    axes[-1].set_ylabel("bytes (fp32)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(contexts)
        ax.set_xticklabels([str(c) for c in contexts], rotation=45)
        ax.set_xlabel("context (tokens)")
        ax.grid(True, which="major", color="0.9")
    handles.append(plt.Line2D([], [], color="0.3", linestyle="-", label="cache: batch %d" % batches[0]))
    if len(batches) > 1:
        handles.append(plt.Line2D([], [], color="0.3", linestyle="--", label="cache: batch %d" % batches[1]))
    handles.append(plt.Line2D([], [], color="0.3", linestyle="none", marker="o", markerfacecolor="none",
                              label="cache formula (decode_formula_bytes)"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=5, frameon=False, fontsize=8)
    series = {}
    for mixer in mixers:
        key = tuple(sorted((r["batch"], r["context"], r["cache_bytes"]) for r in decode if r["mixer"] == mixer))
        series.setdefault(key, []).append(mixer)
    notes = ["same cache bytes (one line hides the other): %s" % " = ".join(group)
             for group in series.values() if len(group) > 1]
    notes += ["capped: %s batch %d from context %d (%s)" % (c.get("mixer"), c.get("batch", 0), c.get("context", 0),
                                                             c.get("why", "?")) for c in caps]
    if notes:
        fig.text(0.5, -0.2, "\n".join(notes), ha="center", va="top", fontsize=7, color="0.35")
    shape = ""
    if machine:
        shape = (" - %s (d=%s, %s layers, %s heads, vocab %s), random parameters\ndecode %s thread(s), OpenBLAS %s, "
                 "%s cores at load average %s" % (
                     machine.get("config"), machine.get("hidden"), machine.get("layers"), machine.get("heads"),
                     machine.get("vocab"), machine.get("threads"), machine.get("blas_core"), machine.get("cores", "?"),
                     machine.get("load_average", "?")))
    fig.suptitle("Cached decoding against context length" + shape, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsonl", help="bench_decode's JSON lines (bench/results/decode.jsonl)")
    parser.add_argument("--out", default=None, help="the PNG (default: beside the JSON, decode.png)")
    args = parser.parse_args()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.jsonl)), "decode.png")
    machine, _, decode, caps = load(args.jsonl)
    try:
        draw(machine, decode, caps, out)
    except OSError as e:
        fail("cannot write %s (%s); give --out in a writable directory" % (out, e.strerror))
    print("decode figure: %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
