"""The low-rank sweep's figure and table from analysis/plot/lowrank_sweep.py's lowrank.jsonl
(docs/design.md "Low-rank compression (A3)"): held-out test perplexity against the parameter
reduction and against the KV-cache reduction, A3 and SVD as two lines, the original model as
a dashed level; the markdown table (also in `make report` via report.py --lowrank).

    /usr/bin/python3 analysis/plot/lowrank_figure.py reports/lowrank/lowrank.jsonl reports/lowrank/lowrank.png \
        [--table reports/lowrank/table.md]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402  (sets the Agg backend and the report's style)
from figures import plt  # noqa: E402

STYLE = {"a3": {"color": "#d62728", "marker": "o", "label": "A3 (calibrated)"},
         "svd": {"color": "#1f77b4", "marker": "s", "label": "SVD (data-free)"}}


class LowrankError(Exception):
    pass


def load(path):
    """(original row, compressed rows) of a lowrank.jsonl; LowrankError names what is wrong."""
    original, rows = None, []
    try:
        with open(path) as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except ValueError as e:
                    raise LowrankError("%s line %d is not JSON (%s); rerun make lowrank-sweep" % (path, number, e))
                for key in ("kind", "budget", "method", "test_ppl", "parameter_reduction", "kv_reduction"):
                    if not isinstance(row, dict) or key not in row:
                        raise LowrankError("%s line %d has no \"%s\"; is this lowrank_sweep.py's output?"
                                           % (path, number, key))
                if row["kind"] == "original":
                    original = row
                else:
                    rows.append(row)
    except OSError as e:
        raise LowrankError("cannot read %s (%s); run make lowrank-sweep first" % (path, e.strerror))
    if original is None or not rows:
        raise LowrankError("%s lacks the original model's row or any compressed point; rerun make lowrank-sweep"
                           % path)
    return original, rows


def worst_loss(row, component):
    """The largest relative functional loss of `component` over the layers, or None."""
    losses = [l[component]["loss"] for l in row.get("layers", []) if component in l]
    return max(losses) if losses else None


def table(original, rows):
    """Markdown: one line for the original, then each budget with A3 and SVD side by side."""
    def fmt(v, pattern):
        return pattern % v if v is not None else "-"
    out = ["| budget | method | parameters | fewer | KV floats/token | fewer | test loss | test PPL | "
           "QK loss | OV loss | MLP loss |",
           "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
           "| - | original | %d | 0%% | %d | 0%% | %.4f | %.2f | - | - | - |"
           % (original.get("parameters", 0), original.get("kv_floats_per_token", 0), original["test_loss"],
              original["test_ppl"])]
    for r in sorted(rows, key=lambda r: (-r["budget"], r["method"])):
        out.append("| %g | %s | %d | %.1f%% | %d | %.1f%% | %.4f | %.2f | %s | %s | %s |"
                   % (r["budget"], r["method"].upper(), r["parameters"],
                      100 * r["parameter_reduction"], r["kv_floats_per_token"], 100 * r["kv_reduction"],
                      r["test_loss"], r["test_ppl"], fmt(worst_loss(r, "qk"), "%.3g"),
                      fmt(worst_loss(r, "ov"), "%.3g"), fmt(worst_loss(r, "mlp"), "%.3g")))
    note = ("Test perplexity on the first %s windows of %s tokens of the held-out test split. Budget F keeps the "
            "fraction F of the query/key head size, the value head size and the MLP width of every standard layer "
            "(bin/decon-lowrank --budget). Component losses: the largest relative functional loss over the layers "
            "on the calibration data (the loss of the method's own solution)."
            % (original.get("max_windows", "?"), original.get("context", "?")))
    return "\n".join(out) + "\n\n" + note + "\n"


def draw(original, rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.4), sharey=True)
    for ax, key, label in ((axes[0], "parameter_reduction", "parameter reduction (%)"),
                           (axes[1], "kv_reduction", "KV-cache reduction (%)")):
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted((100 * r[key], r["test_ppl"]) for r in rows if r["method"] == method)
            style = STYLE.get(method, {"color": "#7f7f7f", "marker": ".", "label": method})
            ax.plot(*zip(*points), linestyle="-", markersize=5, **style)
        ax.axhline(original["test_ppl"], color="#444444", linestyle="--", linewidth=1, label="original")
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("held-out test perplexity")
    axes[0].legend(loc="upper left")
    fig.suptitle("Low-rank compression of %s: A3 vs SVD" % os.path.basename(os.path.dirname(os.path.dirname(
        os.path.abspath(original.get("checkpoint", "model")))) or "the model"))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path + ".tmp.png", dpi=120)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsonl")
    parser.add_argument("png")
    parser.add_argument("--table", help="also write the markdown table here")
    args = parser.parse_args()
    try:
        original, rows = load(args.jsonl)
    except LowrankError as e:
        print("decon: error: %s" % e, file=sys.stderr)
        return 1
    print("lowrank: %s" % draw(original, rows, args.png))
    if args.table:
        with open(args.table + ".tmp", "w") as f:
            f.write(table(original, rows))
        os.replace(args.table + ".tmp", args.table)
        print("lowrank: %s" % args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
