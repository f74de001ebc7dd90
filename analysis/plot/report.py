#!/usr/bin/python3
"""Figures and report.md for a set of decon runs.

  report.py --out DIR [--analysis DIR/analysis/analysis.h5] [--analysis-error TEXT] [--lowrank JSONL]... RUN_DIR...

Reads each run directory (config.ini, metrics.jsonl, eval.json from `decon-eval --json`,
ckpt/latest.h5), decon-analyze's analysis.h5 for the runs' attn.h5 recordings and low-rank
sweeps' lowrank.jsonl (analysis/plot/lowrank_sweep.py: the A3 / SVD table and figure); writes
DIR/figures/*.png and DIR/report.md. Whatever is missing is reported as "not recorded".
Usually run through `make report RUNS="runs/a runs/b"` (analysis/plot/make_report.sh), which
runs decon-analyze first. Needs Debian's python3-h5py, python3-matplotlib, python3-numpy.
"""
import argparse
import datetime
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402
import lowrank_figure  # noqa: E402
from runs import Run, attach_analysis, load_analysis  # noqa: E402
from study import DEFAULT_TABLE, StudyTable  # noqa: E402

MISSING = "not recorded"


def fmt(value, pattern="%.2f"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return pattern % value


def percent(value):
    return MISSING if value is None else "%.1f%%" % (100.0 * value)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def choose_steps(runs):
    """The latest step every analysed run recorded (normalised values compare within a step);
    each run's last step when they share none."""
    analysed = [r for r in runs if r.analysis is not None]
    if not analysed:
        return {}, None
    common = set(analysed[0].analysis.steps)
    for r in analysed[1:]:
        common &= set(r.analysis.steps)
    if common:
        step = max(common)
        return {r.name: step for r in analysed}, "step %d (the latest step every run recorded)" % step
    return ({r.name: r.analysis.steps[-1] for r in analysed},
            "each run's last recorded step (the runs share no step, so normalised values are not comparable "
            "across runs)")


STUDY_COLUMNS = [("wiki_ppl", "Study Wiki PPL"), ("lambada_acc", "Study LAMBADA acc."), ("nlu_avg", "Study NLU avg.")]


def summary_table(runs, study):
    header = ["Run", "Variant", "Layout", "Params", "Val. PPL", "Held-out PPL (context)", "Last-word acc.",
              "Multiple-choice acc."] + [title for _, title in STUDY_COLUMNS]

    def published(r, mode):
        row = study.lookup(r.variant, r.layout, mode, r.parameters)
        return [study.cell(row, column) for column, _ in STUDY_COLUMNS]

    rows = []
    for r in runs:
        ppl, context = r.heldout_perplexity("full")
        rows.append([r.name, r.variant or MISSING, r.layout or MISSING,
                     fmt(r.parameters / 1e6, "%.2fM") if r.parameters else MISSING,
                     fmt(r.validation_perplexity(), "%.2f"),
                     "%s (%d)" % (fmt(ppl), context) if ppl is not None else MISSING,
                     percent(r.accuracy("cloze")), percent(r.accuracy("choice"))] + published(r, "full"))
        if r.has_mode("skip"):
            ppl, context = r.heldout_perplexity("skip")
            rows.append([r.name + " (skip)", r.variant or MISSING, r.layout or MISSING, "", "",
                         "%s (%d)" % (fmt(ppl), context) if ppl is not None else MISSING,
                         percent(r.accuracy("cloze", "skip")), percent(r.accuracy("choice", "skip"))] +
                        published(r, "skip"))
    return table(header, rows)


def context_table(runs):
    contexts = sorted({row[1] for r in runs for row in r.perplexity_rows()})
    if not contexts:
        return None
    rows = []
    for r in runs:
        for mode in ("full", "skip"):
            values = {row[1]: row for row in r.perplexity_rows() if row[0] == mode}
            if not values and mode == "skip":
                continue
            cells = []
            for c in contexts:
                row = values.get(c)
                cells.append(MISSING if row is None else ("%.2f%s" % (row[2], "*" if row[3] else "")))
            rows.append([r.name + (" (skip)" if mode == "skip" else "")] + cells)
    return table(["Run"] + ["ctx %d" % c for c in contexts], rows) + \
        "\n\n`*` longer than the trained sequence length (RoPE extrapolation)."


def indicator_table(run, step):
    a = run.analysis
    s = a.step_index(step)
    has_svd = bool(a.svd)
    header = ["Layer", "Mixer", "ENTROPY", "CONC", "HEADDIV", "SINK", "LOCFOC0", "LOCFOC1", "LOCFOC2", "LOCFOC3",
              "ENT~", "CONC~", "HDIV~"]
    if has_svd:
        header += ["eff. rank", "stable rank"]
    if a.logit_stats is not None:
        header += ["score min", "score max", "count abs(score)>10"]
    header += ["rows sum to 1"]
    rows = []
    for l in range(a.layers):
        row = [str(l + 1), a.layer_variant[l]]
        if not a.has_attn[s, l]:
            rows.append(row + ["no attention matrix"] + [""] * (len(header) - 3))
            continue
        v = lambda f: a.layer_value(f, s, l)
        row += [fmt(v("entropy"), "%.3f"), fmt(v("conc"), "%.3f"), fmt(v("headdiv"), "%.4f"), fmt(v("sink"), "%.3f")]
        row += [fmt(v("locfoc_%d" % n), "%.3f") for n in range(4)]
        row += [fmt(v("entropy_norm")), fmt(v("conc_norm")), fmt(v("headdiv_norm"))]
        if has_svd:
            row += [fmt(float(a.svd["layer_effective_rank"][s, l]), "%.1f"),
                    fmt(float(a.svd["layer_stable_rank"][s, l]), "%.2f")]
        if a.logit_stats is not None:
            stats = a.logit_stats[s, l]
            index = {f: i for i, f in enumerate(a.logit_fields)}
            if a.has_scores[s, l]:
                row += [fmt(float(stats[index["min"]]), "%.3g"), fmt(float(stats[index["max"]]), "%.3g"),
                        fmt(float(stats[index["count_abs_gt_10"]]), "%.0f")]
            else:
                row += ["no scores"] * 3
        ones = v("rows_sum_to_one")
        row += [MISSING if math.isnan(ones) else ("yes" if ones == 1 else "**no**")]
        rows.append(row)
    return table(header, rows)


def lowrank_sections(paths, out_dir, figures_dir):
    """A section per low-rank sweep: its table and its figure (lowrank_figure.py)."""
    out = []
    for i, path in enumerate(paths):
        out += ["## Low-rank compression: A3 vs SVD (`%s`)" % path, ""]
        try:
            original, rows = lowrank_figure.load(path)
        except lowrank_figure.LowrankError as e:
            out += ["Not shown: %s." % e, ""]
            continue
        png = os.path.join(figures_dir, "lowrank.png" if i == 0 else "lowrank_%d.png" % (i + 1))
        lowrank_figure.draw(original, rows, png)
        out += [lowrank_figure.table(original, rows), "![low-rank sweep](%s)" % os.path.relpath(png, out_dir), ""]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", required=True)
    parser.add_argument("--analysis", help="decon-analyze's analysis.h5 for the runs' recordings")
    parser.add_argument("--analysis-error", default="", help="why there is no analysis (shown in the report)")
    parser.add_argument("--lowrank", action="append", default=[],
                        help="a low-rank sweep's lowrank.jsonl (analysis/plot/lowrank_sweep.py): its table and figure")
    parser.add_argument("--study", default=DEFAULT_TABLE, help="the study's published figures (CSV)")
    args = parser.parse_args()

    figures_dir = os.path.join(args.out, "figures")
    os.makedirs(figures_dir, exist_ok=True)
    runs, absent = [], []
    for path in args.runs:
        if os.path.isdir(path):
            runs.append(Run(path))
        else:
            absent.append(path)
    names = [r.name for r in runs]
    for r in runs:   # keep names unique (they label everything)
        if names.count(r.name) > 1:
            r.name = os.path.normpath(r.path).replace("/", "_")
    analysis_runs, analysis_attrs = load_analysis(args.analysis)
    attach_analysis(runs, analysis_runs)
    steps, step_text = choose_steps(runs)

    made, skipped = [], []
    jobs = [
        ("Training and validation loss (cf. the study's Figure 4.5)", "loss_curves.png",
         lambda p: figures.loss_curves(runs, p)),
        ("Perplexity against context length (cf. Table 4.4)", "perplexity_context.png",
         lambda p: figures.perplexity_context(runs, p)),
        ("Attention indicators per layer (cf. Figure 4.1)", "radar.png", lambda p: figures.radar(runs, steps, p)),
        ("Indicators by layer and run (cf. Figures 4.7, 4.8)", "heatmaps.png",
         lambda p: figures.heatmaps(runs, steps, p)),
        ("Pre-softmax score distributions per layer (cf. Figure 4.2)", "logits.png",
         lambda p: figures.logit_distributions(runs, steps, p)),
        ("Singular values of the attention matrices", "attention_spectra.png",
         lambda p: figures.attention_spectra(runs, steps, p)),
        ("Spectra of W_QK and W_OV per layer", "weight_spectra.png", lambda p: figures.weight_spectra(runs, p)),
    ]
    for title, filename, draw in jobs:
        path, why = draw(os.path.join(figures_dir, filename))
        if path:
            made.append((title, os.path.relpath(path, args.out)))
        else:
            skipped.append((title, why))

    out = ["# decon report", "",
           "Generated %s from %d run%s: %s." % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), len(runs),
                                                "" if len(runs) == 1 else "s",
                                                ", ".join("`%s`" % r.path for r in runs) or "none"), ""]
    if absent:
        out += ["Run directories not found (left out): %s." % ", ".join("`%s`" % p for p in absent), ""]
    study = StudyTable(args.study)
    out += ["## Results (cf. the study's Table 4.1)", "", summary_table(runs, study), "",
            "Val. PPL: the last validation perplexity in metrics.jsonl. Held-out PPL: eval.json at the trained "
            "context (or the longest shorter one). Accuracies: eval.json (`cloze` = last-word, `choice` = multiple "
            "choice). `(skip)`: the hybrid model with its non-standard layers removed.", "",
            "Study columns: the published figures for the same variant, layout and mode (Xue, Moosavi, Aletras, "
            "arXiv:2510.11602, Table 1 = the study's Table 4.1 at 500M, Table 2 at 1.7B; `%s`), at the published "
            "model size nearest to the run's, named in brackets. They were measured on WikiText, LAMBADA OpenAI "
            "and seven zero-shot tasks (NLU avg.), ours on our corpus and task files: compare orderings and "
            "gaps between variants, not the values themselves. \"study figure not available\": the paper reports "
            "no such model." % os.path.relpath(study.path, os.getcwd()), ""]
    if study.error:
        out += ["The study's table could not be read: `%s`." % study.error, ""]
    ctx = context_table(runs)
    out += ["## Perplexity against context length (cf. Table 4.4)", "", ctx if ctx else MISSING + " (no eval.json "
            "with --ppl)", ""]
    out += ["## Figures", ""]
    for title, rel in made:
        out += ["### " + title, "", "![%s](%s)" % (title, rel), ""]
    if skipped:
        out += ["Not drawn: " + "; ".join("%s (%s)" % (t, w) for t, w in skipped) + ".", ""]
    out += lowrank_sections(args.lowrank, args.out, figures_dir)
    out += ["## Attention indicators by layer", ""]
    if args.analysis_error:
        out += ["The analysis failed: `%s`" % args.analysis_error.strip(), ""]
    analysed = [r for r in runs if r.analysis is not None and r.analysis.layer_values]
    if analysed:
        out += ["At %s. ENTROPY is the mean row entropy (nats), CONC the Frobenius norm, HEADDIV the mean std "
                "across heads over the causal triangle, SINK the mean attention on the first token, LOCFOC_N the "
                "mean attention N tokens back; `~` marks values min-max normalised over every layer of every run "
                "given, per step. Definitions: docs/design.md, \"Analysis\"." % step_text, ""]
        for r in analysed:
            out += ["### %s (%s, %s, plan %s)" % (r.name, r.analysis.variant, r.analysis.layout, r.analysis.plan), "",
                    indicator_table(r, steps[r.name]), ""]
    else:
        out += [MISSING + ": no run has an analysed attention recording.", ""]
    out += ["## What is missing", ""]
    notes = [(r.name, n) for r in runs for n in r.notes]
    out += ["- `%s`: %s" % (name, note) for name, note in notes] if notes else ["Nothing: every input was found."]
    if analysis_attrs:
        out += ["", "Analysis: `%s`." % analysis_attrs.get("command", "")]
    os.makedirs(args.out, exist_ok=True)
    report = os.path.join(args.out, "report.md")
    with open(report + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(report + ".tmp", report)
    print("report: %s (%d figures%s)" % (report, len(made), ", %d not drawn" % len(skipped) if skipped else ""))
    for title, rel in made:
        print("  %s" % os.path.join(args.out, rel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
