"""The low-rank sweep (docs/design.md "Low-rank compression (A3)", "The sweep"): for every
budget x method, bin/decon-lowrank CKPT on the calibration shard, then bin/decon-eval's
perplexity on the held-out test split; one JSON line per point in OUT_DIR/lowrank.jsonl,
the original model first. The per-layer functional losses are parsed from decon-lowrank's
"layer N (standard): qk 32->16 loss A (svd B) ..." lines; the compressed checkpoints are
deleted after their evaluation (--keep keeps them in OUT_DIR/ckpt).

    /usr/bin/python3 analysis/plot/lowrank_sweep.py runs/tiny/ckpt/latest.h5 reports/lowrank \
        [--budgets 1,0.75,0.5,0.25] [--methods a3,svd] [--max-windows K] [--np N]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
LAYER = re.compile(r"^layer (\d+) \(standard\):(.*)$")
COMPONENT = re.compile(r"(qk|ov|mlp) (\d+)->(\d+) loss (\S+) \((a3|svd) (\S+)\)")
REDUCTION = re.compile(r"^(parameters|KV cache per token): (\d+) -> (\d+)")


def fail(message):
    print("decon: error: %s" % message, file=sys.stderr)
    sys.exit(1)


def numbers(text, option):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail("%s '%s': expected comma-separated numbers" % (option, text))
    if not values:
        fail("%s is empty" % option)
    return values


def run(command, log):
    """Runs command with its output in log; on failure, one line naming the log's last error."""
    with open(log, "w") as f:
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    text = open(log).read()
    if code != 0:
        errors = [l[len("decon: error: "):] for l in text.splitlines() if l.startswith("decon: error: ")]
        errors = errors or text.splitlines()[-1:] or [""]
        program = next(os.path.basename(c) for c in command if c.startswith(ROOT))
        fail("%s failed (exit %d): %s (log %s)" % (program, code, errors[0], log))
    return text


def compression(text):
    """(parameters before, after, KV floats per token before, after, per-layer losses) of a decon-lowrank log."""
    sizes, layers = {}, []
    for line in text.splitlines():
        m = REDUCTION.match(line)
        if m:
            sizes[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        m = LAYER.match(line)
        if m:
            layer = {"layer": int(m.group(1))}
            for name, before, after, loss, other, other_loss in COMPONENT.findall(m.group(2)):
                layer[name] = {"from": int(before), "to": int(after), "loss": float(loss),
                               "loss_" + other: float(other_loss)}
            layers.append(layer)
    if len(sizes) != 2:
        fail("decon-lowrank printed no 'parameters:' / 'KV cache per token:' lines; is bin/decon-lowrank current?")
    return sizes["parameters"], sizes["KV cache per token"], layers


def test_loss(args, checkpoint, json_path, log):
    command = [os.path.join(ROOT, "bin", "decon-eval"), checkpoint, "--ppl", args.test,
               "--max-windows", str(args.max_windows), "--json", json_path]
    if args.ctx:
        command += ["--ctx", str(args.ctx)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    run(command, log)
    result = json.load(open(json_path))["perplexity"]["results"][0]
    return result["loss"], {"context": result["context"], "tokens_scored": result["tokens_scored"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--budgets", default="1,0.75,0.5,0.25", help="fractions in (0, 1] (decon-lowrank --budget)")
    parser.add_argument("--methods", default="a3,svd")
    parser.add_argument("--calibration", default="data/corpus/val.bin", help="calibration shard (validation split)")
    parser.add_argument("--tokens", type=int, help="calibration tokens (decon-lowrank's default if not given)")
    parser.add_argument("--test", default="data/corpus/test.bin", help="held-out shard for the perplexity")
    parser.add_argument("--max-windows", type=int, default=256, help="test windows per evaluation")
    parser.add_argument("--ctx", type=int, help="evaluation context (default: the trained sequence length)")
    parser.add_argument("--np", type=int, default=1, help="MPI ranks for decon-lowrank's calibration")
    parser.add_argument("--threads", type=int, help="threads per process (default: every core)")
    parser.add_argument("--keep", action="store_true", help="keep the compressed checkpoints in OUT_DIR/ckpt")
    args = parser.parse_args()
    budgets = numbers(args.budgets, "--budgets")
    for b in budgets:
        if not 0 < b <= 1:
            fail("--budgets: %g is outside (0, 1] (the fraction of each dimension kept)" % b)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in ("a3", "svd"):
            fail("--methods: '%s' is not a3 or svd" % m)
    if args.max_windows < 1:
        fail("--max-windows %d: expected at least 1" % args.max_windows)
    for path, what in ((args.checkpoint, "checkpoint"), (args.calibration, "calibration shard"),
                       (args.test, "test shard")):
        if not os.path.isfile(os.path.join(ROOT, path)):
            fail("%s %s not found (make run trains runs/tiny and builds data/corpus)" % (what, path))
    logs = os.path.join(args.out_dir, "logs")
    ckpts = os.path.join(args.out_dir, "ckpt")
    os.makedirs(logs, exist_ok=True)
    os.makedirs(ckpts, exist_ok=True)
    paths = {k: os.path.abspath(v) for k, v in (("checkpoint", args.checkpoint), ("calibration", args.calibration),
                                                ("test", args.test))}
    args.test = paths["test"]

    loss, scored = test_loss(args, paths["checkpoint"], os.path.join(logs, "original.json"),
                          os.path.join(logs, "original.eval.log"))
    original = {"kind": "original", "checkpoint": args.checkpoint, "budget": 1.0, "method": "none",
                "test_loss": loss, "test_ppl": math.exp(loss), **scored, "max_windows": args.max_windows,
                "parameter_reduction": 0.0, "kv_reduction": 0.0}
    rows = []
    launch = ["mpirun", "--oversubscribe", "-np", str(args.np)] if args.np > 1 else []
    for budget in budgets:
        for method in methods:
            name = "%s_%g" % (method, budget)
            out = os.path.join(ckpts, name + ".h5")
            command = launch + [os.path.join(ROOT, "bin", "decon-lowrank"), paths["checkpoint"], "--calibration",
                                paths["calibration"], "--budget", repr(budget), "--method", method, "--out", out]
            if args.tokens:
                command += ["--tokens", str(args.tokens)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            (p0, p1), (kv0, kv1), layers = compression(run(command, os.path.join(logs, name + ".log")))
            loss, scored = test_loss(args, out, os.path.join(logs, name + ".json"), os.path.join(logs, name + ".eval.log"))
            if not args.keep:
                os.remove(out)
            original.update(parameters=p0, kv_floats_per_token=kv0)
            rows.append({"kind": "compressed", "budget": budget, "method": method, "test_loss": loss,
                         "test_ppl": math.exp(loss), **scored, "max_windows": args.max_windows,
                         "parameters": p1, "parameter_reduction": (p0 - p1) / p0,
                         "kv_floats_per_token": kv1, "kv_reduction": (kv0 - kv1) / kv0 if kv0 else 0.0,
                         "layers": layers})
            print("lowrank: budget %g %-3s: parameters %d -> %d, KV floats/token %d -> %d, test ppl %.3f"
                  % (budget, method, p0, p1, kv0, kv1, math.exp(loss)), flush=True)
    if not args.keep:
        os.rmdir(ckpts)
    target = os.path.join(args.out_dir, "lowrank.jsonl")
    with open(target + ".tmp", "w") as f:
        for row in [original] + rows:
            f.write(json.dumps(row) + "\n")
    os.replace(target + ".tmp", target)
    print("lowrank: original test ppl %.3f; wrote %s (%d points)" % (original["test_ppl"], target, len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
