#!/usr/bin/env bash
# bench_decode --quick (tiny shape, contexts 64 and 128, batches 1 and 4, every mixer) and
# the figure drawn from its JSON lines: the measured cache bytes of every session equal the
# formula, the recurrent mixers' bytes do not depend on the context, standard's grow in
# proportion to context and batch, the figure script writes a PNG, and both refuse bad
# input in one line. No timing is checked.
. "$(dirname "$0")/common.sh"
cd "$ROOT" || exit 1
BENCH=build/bench/bench_decode
json=$WORK/decode.jsonl

if ! "$BENCH" --quick --json "$json" >"$WORK/bench.log" 2>&1; then
    fail bench_decode_quick "exit status $?: $(tail -n 2 "$WORK/bench.log")"
    exit 0
fi
pass bench_decode_quick

"$PYTHON" - "$json" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
decode = [r for r in rows if r["kind"] == "decode"]
prefill = {r["mixer"]: r for r in rows if r["kind"] == "prefill"}
caps = [r for r in rows if r["kind"] == "cap"]
mixers = ["standard", "gqa-kv2", "mlp", "approx", "approx-diag", "nonapx", "rndembqk", "fixedseqqk", "staticembqk",
          "mhe-add", "mhe-mul"]
def report(name, problems):
    print("PASS %s" % name if not problems else "FAIL %s: %s" % (name, "; ".join(problems[:4])))
by = {(r["mixer"], r["batch"], r["context"]): r for r in decode}
batches = sorted({r["batch"] for r in decode})
contexts = sorted({r["context"] for r in decode})
problems = []
if batches != [1, 4] or contexts != [64, 128]:
    problems.append("batches %s, contexts %s (expected [1, 4] and [64, 128])" % (batches, contexts))
if caps:
    problems.append("quick mode capped %s" % caps)
for m in mixers:
    for b in batches:
        for c in contexts:
            if (m, b, c) not in by:
                problems.append("no measurement for %s batch %d context %d" % (m, b, c))
report("bench_decode_every_mixer_measured", problems)
report("bench_decode_bytes_equal_formula",
       ["%s b%d L%d: measured %d, formula %d" % (r["mixer"], r["batch"], r["context"], r["cache_bytes"], r["formula_bytes"])
        for r in decode if r["cache_bytes"] != r["formula_bytes"]])
problems = []
for m in ["approx", "approx-diag", "nonapx"]:
    for b in batches:
        small, large = by.get((m, b, 64)), by.get((m, b, 128))
        if not small or not large or small["cache_bytes"] <= 0 or small["cache_bytes"] != large["cache_bytes"]:
            problems.append("%s batch %d: %s at 64, %s at 128" % (m, b, small and small["cache_bytes"],
                                                                   large and large["cache_bytes"]))
report("bench_decode_recurrent_bytes_constant", problems)
problems = []
s = {k: by[("standard",) + k]["cache_bytes"] for k in [(1, 64), (1, 128), (4, 64), (4, 128)] if ("standard",) + k in by}
if len(s) != 4 or s[(1, 64)] <= 0 or s[(1, 128)] != 2 * s[(1, 64)] or s[(4, 64)] != 4 * s[(1, 64)] \
        or s[(4, 128)] != 8 * s[(1, 64)]:
    problems.append("standard's bytes %s are not proportional to batch x context" % s)
# A KV cache of 2 kv d_h floats per token and layer: tiny is d=128, 4 heads, 4 layers.
if s.get((1, 64)) != 4 * 2 * 128 * 64 * 4:
    problems.append("standard batch 1 at 64: %s bytes, expected 4 layers x 2 x 128 x 64 x 4 = %d"
                    % (s.get((1, 64)), 4 * 2 * 128 * 64 * 4))
if any(by[k]["cache_bytes"] != 0 for k in by if k[0] == "mlp"):
    problems.append("mlp keeps a cache")
report("bench_decode_standard_bytes_linear", problems)
problems = ["%s: no prefill row" % m for m in mixers if m not in prefill]
problems += ["%s: prefill %s" % (m, r) for m, r in prefill.items()
             if not (r["seconds"] > 0 and r["model_flops"] > r["mixer_flops"] > 0 and r["gflops_per_s"] > 0)]
problems += ["%s b%d L%d: tokens/s %s" % (r["mixer"], r["batch"], r["context"], r["tokens_per_s"])
             for r in decode if not r["tokens_per_s"] > 0]
report("bench_decode_figures_positive", problems)
PY

png=$WORK/decode.png
if "$PYTHON" analysis/plot/decode_figure.py "$json" --out "$png" >"$WORK/plot.log" 2>&1 &&
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && [ "$(stat -c %s "$png")" -gt 20000 ]; then
    pass decode_figure_png
else
    fail decode_figure_png "no PNG (or a tiny one) at $png: $(tail -n 2 "$WORK/plot.log")"
fi

# Bad input: one line each, non-zero exit, nothing drawn.
grep -v '"kind": "decode"' "$json" >"$WORK/no_decode.jsonl"
if "$PYTHON" analysis/plot/decode_figure.py "$WORK/no_decode.jsonl" --out "$WORK/bad.png" >"$WORK/bad.log" 2>&1; then
    fail decode_figure_refuses_empty "drew a figure from JSON without decode measurements"
else
    lines=$(wc -l <"$WORK/bad.log")
    check decode_figure_refuses_empty "$([ "$lines" -eq 1 ] && grep -q '^decon: error: .*no decode measurements' "$WORK/bad.log" && [ ! -e "$WORK/bad.png" ]; echo $?)" \
        "expected one 'decon: error' line and no PNG, got: $(cat "$WORK/bad.log")"
fi
if "$BENCH" --quick --json "$WORK/missing/dir/out.jsonl" >"$WORK/bad.log" 2>&1; then
    fail bench_decode_refuses_unwritable_json "exit 0 for an unwritable --json"
else
    check bench_decode_refuses_unwritable_json "$(grep -q 'decon: error: bench_decode: cannot write' "$WORK/bad.log"; echo $?)" \
        "got: $(cat "$WORK/bad.log")"
fi
