"""The report's figures (matplotlib, Agg). Each function draws one PNG and returns its path, or
returns None with the reason when its inputs are missing. A run is drawn the same way in every
figure (and every report): colour = its variant, line style = its layout, and a marker only
to tell apart runs that share both (seeds, overrides); each figure carries a key."""
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                     "figure.dpi": 110, "savefig.dpi": 110, "savefig.bbox": "tight"})

RADAR_AXES = [("entropy_norm", "ENTROPY\n(norm.)"), ("conc_norm", "CONC\n(norm.)"), ("headdiv_norm", "HEADDIV\n(norm.)"),
              ("sink", "SINK"), ("locfoc", "LOCFOC\n(N=0..3)")]
HEAT_COLUMNS = [("entropy_norm", "ENTROPY~"), ("conc_norm", "CONC~"), ("headdiv_norm", "HEADDIV~"), ("sink", "SINK"),
                ("locfoc_0", "LOCFOC0"), ("locfoc_1", "LOCFOC1"), ("locfoc_2", "LOCFOC2"), ("locfoc_3", "LOCFOC3")]


# Fixed assignments, so a variant keeps its colour from one report to the next.
VARIANT_COLOURS = {"standard": "#000000", "mlp": "#9467bd", "approx": "#1f77b4", "approx-diag": "#17becf",
                   "nonapx": "#2ca02c", "rndembqk": "#d62728", "fixedseqqk": "#ff7f0e", "staticembqk": "#8c564b",
                   "mhe-add": "#e377c2", "mhe-mul": "#bcbd22"}
EXTRA_COLOURS = ["#7f7f7f", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]
# The uniform model and the study's nine hybrid layouts (Table 4.11), then any list: layout.
LAYOUT_DASHES = {"uniform": "solid", "hybrid:even": (0, (6, 2)), "hybrid:odd": (0, (1, 1.5)),
                 "hybrid:top": (0, (6, 2, 1, 2)), "hybrid:middle": (0, (12, 3)),
                 "hybrid:bottom": (0, (3, 1, 1, 1, 1, 1)), "hybrid:25%": (0, (2, 3)),
                 "hybrid:first": (0, (8, 2, 2, 2, 2, 2)), "hybrid:last": (0, (1, 3)), "hybrid:bilateral": (0, (12, 2, 4, 2))}
EXTRA_DASHES = [(0, (4, 1, 4, 1, 1, 1)), (0, (2, 1)), (0, (10, 1, 1, 1, 1, 1, 1, 1)), (0, (5, 5))]
REPEAT_MARKERS = [None, "^", "s", "D", "v", "P", "X", "*"]


def layout_key(layout):
    return "hybrid:even" if layout == "hybrid" else (layout or "?")


def styles(runs):
    """{run name: {"color", "linestyle", "marker"}}: colour by variant, line style by layout,
    marker by the run's place among runs sharing both (None for the first)."""
    extra_colours, extra_dashes, seen, out = {}, {}, {}, {}
    for r in runs:
        variant, layout = r.variant or "?", layout_key(r.layout)
        if variant not in VARIANT_COLOURS and variant not in extra_colours:
            extra_colours[variant] = EXTRA_COLOURS[len(extra_colours) % len(EXTRA_COLOURS)]
        if layout not in LAYOUT_DASHES and layout not in extra_dashes:
            extra_dashes[layout] = EXTRA_DASHES[len(extra_dashes) % len(EXTRA_DASHES)]
        repeat = seen.get((variant, layout), 0)
        seen[(variant, layout)] = repeat + 1
        out[r.name] = {"color": VARIANT_COLOURS.get(variant, extra_colours.get(variant)),
                       "linestyle": LAYOUT_DASHES.get(layout, extra_dashes.get(layout)),
                       "marker": REPEAT_MARKERS[repeat % len(REPEAT_MARKERS)]}
    return out


def line(style, **extra):
    """Keyword arguments for plot(): the run's colour, line style and (every tenth point) marker."""
    kwargs = {"color": style["color"], "linestyle": style["linestyle"]}
    if style["marker"]:
        kwargs.update(marker=style["marker"], markevery=0.1, markersize=4)
    kwargs.update(extra)
    return kwargs


def key_handles(runs):
    """Legend entries saying which colour is which variant and which line style which layout."""
    style = styles(runs)
    handles, variants, layouts = [], {}, {}
    for r in runs:
        variants.setdefault(r.variant or "?", style[r.name]["color"])
        layouts.setdefault(layout_key(r.layout), style[r.name]["linestyle"])
    for variant, colour in variants.items():
        handles.append(plt.Line2D([], [], color=colour, linewidth=6, label="variant %s" % variant))
    for layout, dash in layouts.items():
        handles.append(plt.Line2D([], [], color="0.3", linestyle=dash, linewidth=1.6, label="layout %s" % layout))
    return handles


def legend_below(fig, handles, columns=3):
    """A figure legend under the panels, outside them (savefig's tight box grows to hold it),
    so no number of runs covers a plot."""
    return fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(columns, len(handles)),
                      frameon=False, fontsize=8, title="colour = variant, line style = layout", title_fontsize=8)


def add_key(fig, runs):
    """The key alone under the plot (for figures whose axes carry the legend of runs)."""
    return legend_below(fig, key_handles(runs), 4)


def label(run):
    return "%s (%s, %s)" % (run.name, run.variant or "?", run.layout or "?")


def grid(count, columns=4):
    columns = max(1, min(columns, count))
    return int(math.ceil(count / columns)), columns


def radar_value(analysis, field, s, layer):
    if field == "locfoc":
        return sum(analysis.layer_value("locfoc_%d" % n, s, layer) for n in range(4))
    return analysis.layer_value(field, s, layer)


def radar(runs, steps, path):
    """Per-layer radar of the five indicators (the study's Figure 4.1)."""
    runs = [r for r in runs if r.analysis is not None and r.analysis.layer_values]
    if not runs:
        return None, "no run has --metrics analysis"
    layers = max(r.analysis.layers for r in runs)
    rows, columns = grid(layers)
    fig = plt.figure(figsize=(3.3 * columns, 3.4 * rows + 0.8))
    angles = np.linspace(0, 2 * np.pi, len(RADAR_AXES), endpoint=False)
    style = styles(runs)
    top = 1.0
    for r in runs:
        s = r.analysis.step_index(steps[r.name])
        for l in range(r.analysis.layers):
            if r.analysis.has_attn[s, l]:
                top = max(top, max(radar_value(r.analysis, f, s, l) for f, _ in RADAR_AXES))
    for l in range(layers):
        ax = fig.add_subplot(rows, columns, l + 1, projection="polar")
        ax.set_xticks(angles)
        ax.set_xticklabels([t for _, t in RADAR_AXES], fontsize=8)
        ax.set_ylim(0, top)
        ax.set_yticks(np.linspace(0, top, 5)[1:])
        ax.set_yticklabels(["%.2g" % v for v in np.linspace(0, top, 5)[1:]], fontsize=7, color="0.4")
        ax.set_title("layer %d" % (l + 1), pad=14)
        missing, flagged = [], []
        for r in runs:
            a = r.analysis
            s = a.step_index(steps[r.name])
            if l >= a.layers or not a.has_attn[s, l]:
                missing.append("%s: %s" % (r.name, a.layer_variant[l] if l < a.layers else "no layer"))
                continue
            if a.layer_value("rows_sum_to_one", s, l) == 0:
                flagged.append(r.name)
            values = [radar_value(a, f, s, l) for f, _ in RADAR_AXES]
            ring = np.concatenate([values, values[:1]])
            ax.plot(np.concatenate([angles, angles[:1]]), ring, **line(style[r.name], linewidth=1.6))
            ax.fill(np.concatenate([angles, angles[:1]]), ring, color=style[r.name]["color"], alpha=0.08)
        lines = []
        if missing:
            lines.append("no attention matrix: " + "; ".join(missing))
        if flagged:
            lines.append("rows do not sum to 1: " + ", ".join(flagged))
        if lines:
            ax.text(0.5, -0.2, "\n".join(lines), transform=ax.transAxes, ha="center", va="top", fontsize=7,
                    color="0.35")
    handles = [plt.Line2D([], [], **line(style[r.name], linewidth=2), label="%s, step %d" % (label(r), steps[r.name]))
               for r in runs] + key_handles(runs)
    legend_below(fig, handles)
    fig.suptitle("Attention indicators per layer (ENTROPY, CONC, HEADDIV min-max normalised across these runs; "
                 "SINK, LOCFOC raw)", fontsize=11)
    fig.subplots_adjust(hspace=0.75, wspace=0.55, bottom=0.2 / rows)   # room for the notes under the last row
    fig.savefig(path)
    plt.close(fig)
    return path, None


def heatmaps(runs, steps, path):
    """Layer x indicator heat map per run (the study's Figures 4.7 / 4.8)."""
    runs = [r for r in runs if r.analysis is not None and r.analysis.layer_values]
    if not runs:
        return None, "no run has --metrics analysis"
    rows, columns = grid(len(runs), 3)
    layers = max(r.analysis.layers for r in runs)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns + 1.0, 0.42 * layers * rows + 1.9 * rows + 0.6),
                             squeeze=False, layout="constrained")
    image = None
    for i, r in enumerate(runs):
        ax = axes[i // columns][i % columns]
        a = r.analysis
        s = a.step_index(steps[r.name])
        data = np.full((a.layers, len(HEAT_COLUMNS)), np.nan)
        for l in range(a.layers):
            if a.has_attn[s, l]:
                data[l] = [a.layer_value(f, s, l) for f, _ in HEAT_COLUMNS]
        masked = np.ma.masked_invalid(data)
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("0.85")
        image = ax.imshow(np.clip(masked, 0, 1), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for l in range(a.layers):
            for c in range(len(HEAT_COLUMNS)):
                v = data[l, c]
                text = "no A" if np.isnan(v) else ("%.2f" % v)
                ax.text(c, l, text, ha="center", va="center", fontsize=7,
                        color="0.3" if np.isnan(v) else ("black" if v > 0.6 else "white"))
        ax.set_xticks(range(len(HEAT_COLUMNS)))
        ax.set_xticklabels([t for _, t in HEAT_COLUMNS], rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(a.layers))
        flagged = [a.has_attn[s, l] and a.layer_value("rows_sum_to_one", s, l) == 0 for l in range(a.layers)]
        ax.set_yticklabels(["%d %s%s" % (l + 1, a.layer_variant[l], "*" if flagged[l] else "") for l in range(a.layers)],
                           fontsize=8)
        ax.set_ylabel("layer")
        ax.set_title("%s, step %d" % (label(r), steps[r.name]), fontsize=10)
    for j in range(len(runs), rows * columns):
        axes[j // columns][j % columns].axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="value (colour clipped to [0, 1])")
    fig.suptitle("Indicators by layer (~ = min-max normalised across these runs; * = rows do not sum to 1; "
                 "grey = no attention matrix)", fontsize=11)
    fig.savefig(path)
    plt.close(fig)
    return path, None


def histogram_quantile(counts, edges, q, lowest=-np.inf, highest=np.inf):
    """The q-quantile of a histogram by decon's one rule (src/core/histogram.h, used for
    logits_stats and decon-analyze's p5..p95): the first bin whose cumulative count
    reaches q * total, linear inside it between its ends clipped to the data's exact
    [lowest, highest] where known; an end still infinite (an open bin) gives the other end."""
    counts = np.asarray(counts, dtype=float)
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    if not total > 0:
        return float("nan")
    target = min(q * total, total)
    b = int(np.searchsorted(cumulative, target))  # first bin with cumulative >= target
    while counts[b] <= 0:  # never an empty bin (cumulative is flat across it)
        b += 1
    lo = max(edges[b], lowest) if np.isfinite(lowest) else edges[b]
    hi = min(edges[b + 1], highest) if np.isfinite(highest) else edges[b + 1]
    if not np.isfinite(lo):
        return float(hi)
    if not np.isfinite(hi):
        return float(lo)
    below = cumulative[b] - counts[b]
    value = lo + (target - below) / counts[b] * (hi - lo)
    if np.isfinite(lowest):
        value = max(value, lowest)
    if np.isfinite(highest):
        value = min(value, highest)
    return float(value)


def logit_distributions(runs, steps, path):
    """Pre-softmax score distribution per layer (the study's Figure 4.2): density per unit
    score from the recorded histograms, over the central 99.8% of every run's scores."""
    runs = [r for r in runs if r.analysis is not None and r.analysis.histograms]
    if not runs:
        return None, "no run has score histograms (--logits; mixers with pairwise scores)"
    layers = max(r.analysis.layers for r in runs)
    rows, columns = grid(layers)
    fig, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.1 * rows + 0.9), squeeze=False)
    style = styles(runs)
    for l in range(rows * columns):
        ax = axes[l // columns][l % columns]
        if l >= layers:
            ax.axis("off")
            continue
        notes, low, high, peak = [], [], [], []
        for r in runs:
            key = (steps[r.name], l)
            if key not in r.analysis.histograms:
                notes.append("%s: no scores" % r.name)
                continue
            counts, edges = r.analysis.histograms[key]
            total = counts.sum()
            if total <= 0:
                notes.append("%s: empty" % r.name)
                continue
            inner = np.isfinite(edges[:-1]) & np.isfinite(edges[1:])
            first, last = np.argmax(inner), len(inner) - np.argmax(inner[::-1])
            density = counts[first:last] / (total * np.diff(edges[first:last + 1]))
            ax.stairs(density, edges[first:last + 1], color=style[r.name]["color"],
                      linestyle=style[r.name]["linestyle"], linewidth=1.3)
            peak.append(float(np.max(density)))
            s = r.analysis.step_index(steps[r.name])
            stats = r.analysis.logit_stats[s, l]
            index = {f: i for i, f in enumerate(r.analysis.logit_fields)}
            lowest, highest = float(stats[index["min"]]), float(stats[index["max"]])
            low.append(histogram_quantile(counts, edges, 0.001, lowest, highest))
            high.append(histogram_quantile(counts, edges, 0.999, lowest, highest))
            notes.append("%s: range [%.3g, %.3g]" % (r.name, stats[index["min"]], stats[index["max"]]))
        if low:
            span = max(high) - min(low)
            ax.set_xlim(min(low) - 0.05 * span, max(high) + 0.05 * span)
        ax.set_yscale("log")
        # Headroom above the peaks (log axis) for the notes.
        ax.set_ylim(1e-5, max(peak) * 10 ** (0.9 + 0.45 * len(notes)) if peak else 1.0)
        ax.set_title("layer %d" % (l + 1))
        ax.set_xlabel("pre-softmax score")
        if l % columns == 0:
            ax.set_ylabel("density (log)")
        ax.grid(alpha=0.3)
        if notes:
            ax.text(0.02, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=6.5, color="0.2",
                    bbox=dict(facecolor="white", alpha=0.85, edgecolor="none", pad=1.5))
    handles = [plt.Line2D([], [], **line(style[r.name], linewidth=2), label="%s, step %d" % (label(r), steps[r.name]))
               for r in runs] + key_handles(runs)
    legend_below(fig, handles)
    fig.suptitle("Pre-softmax score distributions per layer (central 99.8%; full range in each panel)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path, None


def loss_curves(runs, path):
    """Training and validation loss against steps (the study's Figure 4.5)."""
    runs = [r for r in runs if r.train or r.validation]
    if not runs:
        return None, "no run has metrics.jsonl"
    style = styles(runs)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    smoothed = False
    for r in runs:
        st = style[r.name]
        if r.train:
            steps = np.array([x["step"] for x in r.train])
            loss = np.array([x["loss"] for x in r.train])
            window = max(1, len(loss) // 50)
            if window > 1:
                smoothed = True
                ax.plot(steps, loss, color=st["color"], alpha=0.15, linewidth=0.8)
                smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1:], smooth, **line(st, linewidth=1.6), label=label(r))
            else:
                ax.plot(steps, loss, **line(st, linewidth=1.6), label=label(r))
        if r.validation:
            ax.plot([x["step"] for x in r.validation], [x["loss"] for x in r.validation], linestyle="none",
                    marker=st["marker"] or "o", markersize=5, markerfacecolor="white", markeredgecolor=st["color"],
                    label="_validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("Training loss (lines%s) and validation loss (open markers)" %
                 (", moving average; faint: raw" if smoothed else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    add_key(fig, runs)
    fig.savefig(path)
    plt.close(fig)
    return path, None


def perplexity_context(runs, path):
    """Held-out perplexity against context length (the study's Table 4.4 as a plot)."""
    runs = [r for r in runs if r.perplexity_rows()]
    if not runs:
        return None, "no run has eval.json perplexity results"
    style = styles(runs)
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    trained = set()
    for r in runs:
        for mode in ("full", "skip"):
            rows = sorted([x for x in r.perplexity_rows() if x[0] == mode], key=lambda x: x[1])
            if not rows:
                continue
            kwargs = line(style[r.name], linewidth=1.4, marker=style[r.name]["marker"] or "o", markevery=None,
                          markersize=4)
            if mode == "skip":   # the same run's colour, line and marker, the marker open, fainter
                kwargs.update(markerfacecolor="white", alpha=0.7)
            ax.plot([x[1] for x in rows], [x[2] for x in rows], **kwargs,
                    label="%s%s" % (label(r), " (skip)" if mode == "skip" else ""))
        if r.trained_length:
            trained.add(r.trained_length)
    for t in sorted(trained):
        ax.axvline(t, color="0.5", linestyle=":", linewidth=1)
        ax.text(t, 0.98, " trained\n length %d" % t, transform=ax.get_xaxis_transform(), fontsize=8, color="0.35",
                va="top")
    contexts = sorted({x[1] for r in runs for x in r.perplexity_rows()})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(contexts)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("held-out perplexity (log)")
    ax.set_title("Perplexity against context length (right of the dotted line: extrapolation)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    add_key(fig, runs)
    fig.savefig(path)
    plt.close(fig)
    return path, None


def attention_spectra(runs, steps, path):
    """Singular values of A per layer, mean over heads, normalised by the largest."""
    runs = [r for r in runs if r.analysis is not None and r.analysis.spectra is not None]
    if not runs:
        return None, "no run has --svd analysis"
    layers = max(r.analysis.layers for r in runs)
    rows, columns = grid(layers)
    fig, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.0 * rows + 0.8), squeeze=False)
    style = styles(runs)
    for l in range(rows * columns):
        ax = axes[l // columns][l % columns]
        if l >= layers:
            ax.axis("off")
            continue
        notes = []
        for r in runs:
            a = r.analysis
            s = a.step_index(steps[r.name])
            if l >= a.layers or not a.has_attn[s, l]:
                notes.append("%s: no A" % r.name)
                continue
            spectrum = np.nanmean(a.spectra[s, l], axis=0)
            if not np.isfinite(spectrum[0]) or spectrum[0] <= 0:
                continue
            erank = np.nanmean(a.svd["effective_rank"][s, l])
            ax.plot(np.arange(1, len(spectrum) + 1), np.maximum(spectrum / spectrum[0], 1e-16),
                    **line(style[r.name], linewidth=1.3), label="%s (eff. rank %.1f)" % (r.name, erank))
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_ylim(1e-6, 2)
        ax.set_title("layer %d" % (l + 1))
        ax.set_xlabel("index i")
        if l % columns == 0:
            ax.set_ylabel("s_i / s_1 (mean over heads)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower left")
        if notes:
            ax.text(0.98, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", ha="right", fontsize=7, color="0.35")
    fig.suptitle("Singular values of the attention matrices (ScaLAPACK pdgesvd), mean over heads and sequences; "
                 "axis cut at 1e-6", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    add_key(fig, runs)
    fig.savefig(path)
    plt.close(fig)
    return path, None


def weight_spectra(runs, path):
    """Singular values of W_QK,j and W_OV,j per layer (mean over heads), from --checkpoint."""
    runs = [r for r in runs if r.analysis is not None and r.analysis.weights is not None]
    if not runs:
        return None, "no run was analysed with --checkpoint"
    layers = max(r.analysis.layers for r in runs)
    fig, axes = plt.subplots(2, layers, figsize=(3.2 * layers, 5.8), squeeze=False)
    style = styles(runs)
    for row, kind, title in ((0, "qk", "W_QK = Wq_j Wk_j^T"), (1, "ov", "W_OV = Wv_j Wo_j")):
        for l in range(layers):
            ax = axes[row][l]
            for r in runs:
                w = r.analysis.weights
                if l >= r.analysis.layers or w["status"][l] != 0:
                    continue
                values = np.nanmean(w[kind][l], axis=0)
                ax.plot(np.arange(1, len(values) + 1), values, **line(style[r.name], linewidth=1.2,
                                                                      marker=style[r.name]["marker"] or "o",
                                                                      markevery=None, markersize=2.5), label=r.name)
            ax.set_yscale("log")
            ax.set_title("layer %d: %s" % (l + 1, title), fontsize=9)
            ax.set_xlabel("index i")
            if l == 0:
                ax.set_ylabel("singular value")
            ax.grid(alpha=0.3, which="both")
    handles = [plt.Line2D([], [], **line(style[r.name], linewidth=2), label="%s (checkpoint step %d)" %
                          (label(r), r.analysis.weights["step"])) for r in runs] + key_handles(runs)
    legend_below(fig, handles)
    fig.suptitle("Spectra of the per-head bilinear forms, mean over heads (the d_h nonzero values; RoPE and biases "
                 "not included)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path, None
