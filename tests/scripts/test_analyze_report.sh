#!/usr/bin/env bash
# make report end to end (analysis/plot/make_report.sh): two trained runs, one with an
# attention recording and an eval.json, one with neither, plus a directory that does not
# exist: the analysis runs, every figure whose inputs exist is drawn (valid PNGs), report.md
# holds the Table-4.1 rows and says "not recorded" for what is missing. Then a corrupt
# recording: the report is still written and says the analysis failed.
source "$(dirname "$0")/common.sh"
PLOT_OUT="$WORK/report"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 2000 64 2
write_small_config "$WORK/small.ini"
"$TRAIN" "$WORK/small.ini" --run-dir "$WORK/runs/std" --set train.max_steps=10 --set io.record_every=5 \
    --set io.checkpoint_every=10 >"$WORK/train1.log" 2>&1 &&
"$TRAIN" "$WORK/small.ini" --run-dir "$WORK/runs/mlp" --set train.max_steps=10 --set io.checkpoint_every=10 \
    --set attention.variant=mlp --set attention.layout=hybrid:even >"$WORK/train2.log" 2>&1
check report_runs_trained $? "$(tail -n 3 "$WORK/train1.log" "$WORK/train2.log")"
"$ROOT/bin/decon-eval" "$WORK/runs/std/ckpt/latest.h5" --ppl "$WORK/val.bin" --ctx 16,32,64 --threads 1 \
    --json "$WORK/runs/std/eval.json" >"$WORK/eval.log" 2>&1
check report_eval_json_written $? "$(tail -n 3 "$WORK/eval.log")"

(cd "$ROOT" && bash analysis/plot/make_report.sh --out "$PLOT_OUT" --svd 1 "$WORK/runs/std" "$WORK/runs/mlp" \
    "$WORK/runs/absent") >"$WORK/report.log" 2>&1
rc=$?
check report_make_report_runs $rc "rc=$rc: $(tail -n 5 "$WORK/report.log")"
"$PYTHON" - "$PLOT_OUT" <<'PY' >"$WORK/check.log" 2>&1
import os, sys
out = sys.argv[1]
text = open(os.path.join(out, "report.md")).read()
for figure in ("loss_curves", "perplexity_context", "radar", "heatmaps", "logits", "attention_spectra",
               "weight_spectra"):
    path = os.path.join(out, "figures", figure + ".png")
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000, (figure, len(data))
    assert "figures/%s.png" % figure in text, figure
assert "| std | standard | uniform |" in text, text[:2000]
assert "| mlp | mlp | hybrid:even |" in text
mlp_row = [l for l in text.splitlines() if l.startswith("| mlp |")][0]
assert mlp_row.count("not recorded") >= 3, mlp_row          # no eval.json: PPL, accuracies
assert "absent" in text and "not found" in text
assert "no attention recording" in text                      # the mlp run has no attn.h5
assert "### std (standard, uniform" in text
print("ok")
PY
check report_contents_and_missing_inputs $? "$(tail -n 4 "$WORK/check.log")"

# One quantile rule (src/core/histogram.h): figures.py's histogram_quantile gives, on every
# recorded histogram, the p1/p50/p99 the recording computed in C and the p5..p95 decon-analyze
# computed in C.
"$PYTHON" - "$ROOT" "$PLOT_OUT/analysis/analysis.h5" <<'PY' >"$WORK/quantiles.log" 2>&1
import math, sys
sys.path.insert(0, sys.argv[1] + "/analysis/plot")
import figures, runs
analysis, _ = runs.load_analysis(sys.argv[2])
checked = 0
for run in analysis.values():
    index = {f: i for i, f in enumerate(run.logit_fields)}
    for (step, layer), (counts, edges) in run.histograms.items():
        stats = run.logit_stats[run.step_index(step), layer]
        lowest, highest = float(stats[index["min"]]), float(stats[index["max"]])
        for field, q in (("p1", 0.01), ("p50", 0.5), ("p99", 0.99), ("hist_p5", 0.05), ("hist_p25", 0.25),
                         ("hist_p75", 0.75), ("hist_p95", 0.95)):
            want = float(stats[index[field]])
            got = figures.histogram_quantile(counts, edges, q, lowest, highest)
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (step, layer, field, got, want)
            checked += 1
assert checked >= 7, checked
print("ok", checked)
PY
check report_python_quantiles_follow_the_c_rule $? "$(tail -n 4 "$WORK/quantiles.log")"

# A corrupt recording: the analysis fails with its one line, the report is still written.
head -c 3000 "$WORK/runs/std/attn.h5" >"$WORK/broken.h5" && mv "$WORK/broken.h5" "$WORK/runs/std/attn.h5"
(cd "$ROOT" && bash analysis/plot/make_report.sh --out "$WORK/report2" --svd 0 "$WORK/runs/std") \
    >"$WORK/report2.log" 2>&1
rc=$?
grep -q "The analysis failed" "$WORK/report2/report.md" 2>/dev/null && grep -q "attn.h5" "$WORK/report2/report.md"
check report_survives_failed_analysis $(( rc == 0 && $? == 0 ? 0 : 1 )) "rc=$rc: $(tail -n 3 "$WORK/report2.log")"
