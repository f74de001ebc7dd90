#!/usr/bin/env bash
# The low-rank sweep (analysis/plot/lowrank_sweep.py, lowrank_figure.py; docs/design.md
# "Low-rank compression (A3)", "The sweep") on a small model trained briefly on the shipped
# corpus, budgets 1 and 0.5: lowrank.jsonl has the original's row and an A3 and an SVD row
# at each budget with the sizes decon-lowrank printed and its per-layer losses; at budget 1
# the perplexity is the original's and nothing is smaller; at 0.5 parameters and KV cache
# shrink; the figure is a PNG, the table lists every point, and `make report` includes the
# table given LOWRANK; bad input is one line each, earlier outputs intact.
source "$(dirname "$0")/common.sh"
ensure_corpus lowrank_sweep_corpus
SWEEP=("$PYTHON" "$ROOT/analysis/plot/lowrank_sweep.py")
FIGURE=("$PYTHON" "$ROOT/analysis/plot/lowrank_figure.py")

corpus_config "$WORK/model.ini" 2 1 1
"$TRAIN" "$WORK/model.ini" --run-dir "$WORK/run" >"$WORK/train.log" 2>&1
check lowrank_sweep_train $? "$(tail -n 3 "$WORK/train.log")"
CKPT="$WORK/run/ckpt/latest.h5"

"${SWEEP[@]}" "$CKPT" "$WORK/sweep" --budgets 1,0.5 --max-windows 8 --tokens 1024 --threads 1 \
    --calibration "$CORPUS/val.bin" --test "$CORPUS/test.bin" >"$WORK/sweep.log" 2>&1
check lowrank_sweep_runs $? "$(tail -n 2 "$WORK/sweep.log")"
"$PYTHON" - "$WORK/sweep/lowrank.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
original = [r for r in rows if r["kind"] == "original"]
points = {(r["budget"], r["method"]): r for r in rows if r["kind"] == "compressed"}
problems = []
if len(original) != 1 or sorted(points) != [(0.5, "a3"), (0.5, "svd"), (1.0, "a3"), (1.0, "svd")]:
    problems.append("rows %s" % [(r["kind"], r["budget"], r["method"]) for r in rows])
else:
    o = original[0]
    # the small model: d 32, 4 heads of 8 (kv 2), m 64, 2 layers, vocab 8192 tied
    if o["kv_floats_per_token"] != 2 * 2 * 2 * 8:
        problems.append("original KV floats/token %s, expected 64" % o["kv_floats_per_token"])
    for (budget, method), r in points.items():
        if len(r["layers"]) != 2 or any(set(l) != {"layer", "qk", "ov", "mlp"} for l in r["layers"]):
            problems.append("%s %g: per-layer losses %s" % (method, budget, r["layers"]))
            continue
        other = "svd" if method == "a3" else "a3"
        for l in r["layers"]:
            for c, full in (("qk", 8), ("ov", 8), ("mlp", 64)):
                want = full if budget == 1 else full // 2
                if l[c]["from"] != full or l[c]["to"] != want or "loss_" + other not in l[c]:
                    problems.append("%s %g layer %d %s: %s" % (method, budget, l["layer"], c, l[c]))
        if budget == 1:
            if abs(r["test_loss"] - o["test_loss"]) > 1e-5 * abs(o["test_loss"]):
                problems.append("%s at budget 1: test loss %.6f vs the original's %.6f" % (method, r["test_loss"], o["test_loss"]))
            if r["parameters"] != o["parameters"] or r["kv_reduction"] != 0:
                problems.append("%s at budget 1: parameters %d vs %d, KV reduction %g" % (method, r["parameters"], o["parameters"], r["kv_reduction"]))
        else:
            if not (0 < r["parameter_reduction"] < 1) or abs(r["kv_reduction"] - 0.5) > 1e-12:
                problems.append("%s at 0.5: parameter reduction %g, KV reduction %g (expected 0.5)" % (method, r["parameter_reduction"], r["kv_reduction"]))
if problems:
    print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
check lowrank_sweep_jsonl_rows $? "see above"
[ ! -e "$WORK/sweep/ckpt" ]
check lowrank_sweep_removes_checkpoints $? "$(ls "$WORK/sweep/ckpt" 2>&1)"

"${FIGURE[@]}" "$WORK/sweep/lowrank.jsonl" "$WORK/sweep/lowrank.png" --table "$WORK/sweep/table.md" >"$WORK/figure.log" 2>&1
check lowrank_figure_runs $? "$(tail -n 2 "$WORK/figure.log")"
[ "$(head -c 8 "$WORK/sweep/lowrank.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]
check lowrank_figure_is_png $? "$WORK/sweep/lowrank.png is not a PNG"
rows=$(grep -cE '^\| (1|0\.5) \| (A3|SVD) \|' "$WORK/sweep/table.md")
[ "$rows" -eq 4 ] && grep -q '^| - | original |' "$WORK/sweep/table.md"
check lowrank_table_lists_every_point $? "$(cat "$WORK/sweep/table.md")"

# make report with LOWRANK: the table and the figure in report.md (a run without recordings).
mkdir -p "$WORK/reportrun"
"$PYTHON" "$ROOT/analysis/plot/report.py" --out "$WORK/report" --lowrank "$WORK/sweep/lowrank.jsonl" \
    "$WORK/reportrun" >"$WORK/report.log" 2>&1 &&
    grep -q '^| 0.5 | SVD |' "$WORK/report/report.md" && [ -s "$WORK/report/figures/lowrank.png" ]
check lowrank_in_report $? "$(tail -n 2 "$WORK/report.log")"

# ---- bad input -------------------------------------------------------------------------------
guard_outputs "$WORK/sweep"
expect_error lowrank_sweep_bad_budget "(0, 1]" "${SWEEP[@]}" "$CKPT" "$WORK/sweep" --budgets 1.5 --max-windows 1 \
    --tokens 64 --threads 1 --calibration "$CORPUS/val.bin" --test "$CORPUS/test.bin"
expect_error lowrank_sweep_missing_checkpoint "not found" "${SWEEP[@]}" "$WORK/none.h5" "$WORK/sweep"
expect_error lowrank_sweep_bad_method "not a3 or svd" "${SWEEP[@]}" "$CKPT" "$WORK/sweep" --methods a3,pca
printf '{"kind": "original"}\n' >"$WORK/bad.jsonl"
expect_error lowrank_figure_bad_jsonl "has no \"budget\"" "${FIGURE[@]}" "$WORK/bad.jsonl" "$WORK/sweep/lowrank.png"
expect_error lowrank_figure_missing_jsonl "cannot read" "${FIGURE[@]}" "$WORK/none.jsonl" "$WORK/sweep/lowrank.png"
