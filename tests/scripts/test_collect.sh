#!/usr/bin/env bash
# jobs/collect on a sweep directory laid out as jobs/sweep and the batch scripts leave it
# (plan.json written here by hand; no Slurm needed): three real short trainings (4 steps)
# with train.done, two of them evaluated (eval.json, eval.done; one with --skip) and
# recorded; a task whose training failed (decon-train's real error line in its log, no
# train.done); one whose evaluation hit the time limit; one requeued after preemption; one
# never started. Checks: exit 0 and the summary counts; report.md lists every task and each
# failed or unfinished one with its stage and reason; the study's published figure beside
# ours where the paper has one ("study figure not available" where not, e.g. hybrid:odd);
# the figures give each variant its own colour and each layout its own line style. Bad
# input: no plan.json, plan.json not JSON or without runs, a bad option: one line, exit 1,
# the earlier report untouched.
source "$(dirname "$0")/common.sh"
COLLECT="$ROOT/jobs/collect"
SWEEP="$WORK/sweeps/test"
mkdir -p "$SWEEP/logs"
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 2000 64 2
write_small_config "$WORK/small.ini"

train() {  # train INDEX NAME VARIANT LAYOUT [--set ...]: decon-train as jobs/train.sbatch runs it
    local index=$1 name=$2 variant=$3 layout=$4
    shift 4
    "$TRAIN" "$WORK/small.ini" --run-dir "$SWEEP/$name" --set train.max_steps=4 --set train.eval_every=4 \
        --set io.checkpoint_every=4 --set attention.variant="$variant" --set attention.layout="$layout" "$@" \
        >>"$SWEEP/logs/train-$index.log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then touch "$SWEEP/$name/train.done"
    else echo "jobs: decon-train exited $rc" >>"$SWEEP/logs/train-$index.log"; fi
    return $rc
}
evaluate() {  # evaluate INDEX NAME [flags]: decon-eval --json as jobs/eval.sbatch runs it
    local index=$1 name=$2
    shift 2
    "$ROOT/bin/decon-eval" "$SWEEP/$name/ckpt/latest.h5" --ppl "$WORK/val.bin" --ctx 16,32 --threads 1 "$@" \
        --json "$SWEEP/$name/eval.json" >>"$SWEEP/logs/eval-$index.log" 2>&1 && touch "$SWEEP/$name/eval.done"
}
train 0 std-uniform standard uniform --set io.record_every=4 &&
train 1 approx-even approx hybrid:even --set io.record_every=4 &&
train 2 mlp-odd mlp hybrid:odd
check collect_runs_trained $? "$(tail -n 3 "$SWEEP"/logs/train-*.log)"
evaluate 0 std-uniform && evaluate 1 approx-even --skip
check collect_runs_evaluated $? "$(tail -n 3 "$SWEEP"/logs/eval-*.log)"
# Task 3: the trainer refuses its configuration (its real one-line error lands in the log).
train 3 std-broken standard uniform --set train.max_steps=-5
[ $? -ne 0 ] && grep -q '^decon: error:' "$SWEEP/logs/train-3.log" && [ ! -e "$SWEEP/std-broken/train.done" ]
check collect_failed_run_has_error_line $? "$(cat "$SWEEP/logs/train-3.log")"
# Task 2's evaluation and task 5's training: what Slurm and jobs/train.sbatch write there.
printf 'decon-eval: loading\nslurmstepd: error: *** JOB 4242 ON node1 CANCELLED AT 2025-01-01T10:00:00 DUE TO TIME LIMIT ***\n' \
    >"$SWEEP/logs/eval-2.log"
printf 'step 10 loss 3.1\njobs: preempted at step 12; requeued\n' >"$SWEEP/logs/train-5.log"

"$PYTHON" - "$SWEEP" <<'PY'
import json, os, sys
sweep = sys.argv[1]
names = ["std-uniform", "approx-even", "mlp-odd", "std-broken", "never-started", "requeued"]
settings = [("standard", "uniform"), ("approx", "hybrid:even"), ("mlp", "hybrid:odd"), ("standard", "uniform"),
            ("rndembqk", "hybrid:even"), ("nonapx", "uniform")]
runs = [{"index": i, "name": n, "dir": os.path.join(sweep, n), "preset": "tiny", "variant": v, "layout": l,
         "seed": 1, "overrides": ["train.max_steps=4"], "tp": 1, "ranks": 1,
         "eval": {"ppl": True, "skip": l != "uniform", "tasks": False, "record": False}}
        for i, (n, (v, l)) in enumerate(zip(names, settings))]
json.dump({"name": "test", "spec": "input/sweeps/test.sweep", "runs": runs}, open(sweep + "/plan.json", "w"), indent=1)
PY

start=$SECONDS
"$COLLECT" "$SWEEP" --np 2 --svd 0 >"$WORK/collect.out" 2>"$WORK/collect.err"
rc=$?
collect_seconds=$((SECONDS - start))
check collect_exits_0_with_failed_tasks $rc "rc=$rc: $(tail -n 5 "$WORK/collect.err" "$WORK/collect.out")"
cat "$WORK/collect.out"
grep -q "6 tasks: 3 finished training, 2 evaluated, 4 failed or unfinished" "$WORK/collect.out"
check collect_summary_counts $? "$(head -n 1 "$WORK/collect.out")"

"$PYTHON" - "$SWEEP/report/report.md" <<'PY' >"$WORK/check.log" 2>&1
import re, sys
text = open(sys.argv[1]).read()
def row(first, second):
    found = [l for l in text.splitlines() if l.startswith("| %s | %s |" % (first, second))]
    assert found, (first, second)
    return found[0]
# Every task in the sweep table, with its state.
assert "evaluated" in row(0, "std-uniform") and "evaluated" in row(1, "approx-even"), row(0, "std-uniform")
assert "eval: failed or unfinished" in row(2, "mlp-odd"), row(2, "mlp-odd")
assert "train: failed or unfinished" in row(3, "std-broken") and "train: not started" in row(4, "never-started")
assert "train: failed or unfinished" in row(5, "requeued")
# Failed or unfinished: stage and reason from the logs.
failed = text[text.index("### Failed or unfinished tasks"):text.index("## Results")]
def reason(index, name, stage):
    found = [l for l in failed.splitlines() if l.startswith("| %d | %s | %s |" % (index, name, stage))]
    assert found, (index, name, stage, failed[:1500])
    return found[0]
assert re.search(r"error: decon: error: .*max_steps", reason(3, "std-broken", "train")), reason(3, "std-broken", "train")
assert "not started (pending, or never submitted)" in reason(4, "never-started", "train")
assert "time limit: slurmstepd: error: *** JOB 4242" in reason(2, "mlp-odd", "eval"), reason(2, "mlp-odd", "eval")
assert "requeued, waiting to resume: jobs: preempted at step 12" in reason(5, "requeued", "train")
assert failed.count("\n| ") == 4 + 1, failed            # header + the four tasks, none of the finished ones
# The sweep section comes before the results; the results hold the three trained runs.
assert text.index("## Sweep `test`") < text.index("## Results")
results = text[text.index("## Results"):]
# The study's published figures beside ours (input/reference/study_table4_1.csv, arXiv:2510.11602 Table 1).
header = [l for l in results.splitlines() if l.startswith("| Run |")][0]
assert "Study Wiki PPL" in header and "Study LAMBADA acc." in header and "Study NLU avg." in header, header
std = [l for l in results.splitlines() if l.startswith("| std-uniform |")][0]
assert std.endswith("| 38.1 (500M) | 22.9 (500M) | 51.9 (500M) |"), std
approx = [l for l in results.splitlines() if l.startswith("| approx-even |")][0]
assert approx.endswith("| 39.4 (500M) | 23.7 (500M) | 51.6 (500M) |"), approx
skip = [l for l in results.splitlines() if l.startswith("| approx-even (skip) |")][0]
assert skip.endswith("| 2E+6 (500M) | 0.0 (500M) | 39.8 (500M) |"), skip
mlp = [l for l in results.splitlines() if l.startswith("| mlp-odd |")][0]
assert mlp.count("study figure not available") == 3, mlp  # the paper has no hybrid:odd row
assert "std-broken |" not in results and "never-started |" not in results
assert "figures/loss_curves.png" in text and "figures/radar.png" in text, "figures missing"
print("ok")
PY
check collect_report_lists_tasks_reasons_and_study $? "$(tail -n 4 "$WORK/check.log")"

# Colours by variant, line styles by layout, the same in every figure; runs that share both
# differ by marker.
"$PYTHON" - "$ROOT" "$SWEEP" <<'PY' >"$WORK/styles.log" 2>&1
import os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "analysis", "plot"))
import figures
from runs import Run
runs = [Run(os.path.join(sys.argv[2], n)) for n in ("std-uniform", "approx-even", "mlp-odd")]
again = Run(os.path.join(sys.argv[2], "std-uniform"))
again.name = "std-uniform-seed2"
style = figures.styles(runs + [again])
colours = [style[r.name]["color"] for r in runs]
dashes = [style[r.name]["linestyle"] for r in runs]
assert len(set(colours)) == 3 and len(set(map(str, dashes))) == 3, style
assert style["std-uniform-seed2"]["color"] == colours[0] and style["std-uniform-seed2"]["linestyle"] == dashes[0]
assert style["std-uniform"]["marker"] is None and style["std-uniform-seed2"]["marker"] is not None, style
# A colour per variant and a line style per layout across the study's whole grid.
class Fake:  # only the two attributes styles() reads
    def __init__(self, variant, layout):
        self.name, self.variant, self.layout = variant + layout, variant, layout
variants = ["standard", "mlp", "approx", "approx-diag", "nonapx", "rndembqk", "fixedseqqk", "staticembqk", "mhe-add",
            "mhe-mul"]
layouts = ["uniform"] + ["hybrid:" + p for p in ("even", "odd", "top", "middle", "bottom", "25%", "first", "last",
                                                  "bilateral")]
grid = figures.styles([Fake(v, l) for v in variants for l in layouts])
assert len({grid[v + layouts[0]]["color"] for v in variants}) == len(variants)
assert len({str(grid[variants[0] + l]["linestyle"]) for l in layouts}) == len(layouts)
labels = [h.get_label() for h in figures.key_handles(runs)]
assert labels == ["variant standard", "variant approx", "variant mlp", "layout uniform", "layout hybrid:even",
                  "layout hybrid:odd"], labels
print("ok")
PY
check collect_plot_styles_by_variant_and_layout $? "$(tail -n 4 "$WORK/styles.log")"

# Bad input: one line, exit 1, the report written above untouched.
guard_outputs "$SWEEP/report"
mkdir -p "$WORK/empty" "$WORK/notjson" "$WORK/noruns"
echo '{"name": "x", "runs": [' >"$WORK/notjson/plan.json"
echo '{"name": "x", "runs": []}' >"$WORK/noruns/plan.json"
expect_error collect_bad_missing_plan "plan.json: not found" "$COLLECT" "$WORK/empty" --out "$SWEEP/report"
expect_error collect_bad_plan_not_json "plan.json: not JSON" "$COLLECT" "$WORK/notjson" --out "$SWEEP/report"
expect_error collect_bad_plan_without_runs "no \"runs\" list" "$COLLECT" "$WORK/noruns" --out "$SWEEP/report"
expect_error collect_bad_not_a_directory "not a directory" "$COLLECT" "$WORK/absent" --out "$SWEEP/report"
expect_error collect_bad_option "--np 0" "$COLLECT" "$SWEEP" --np 0
echo "collect took ${collect_seconds} s"
