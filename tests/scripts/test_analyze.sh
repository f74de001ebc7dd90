#!/usr/bin/env bash
# decon-analyze end to end:
#  * ScaLAPACK's pdgesvd at mpirun -np 1, 2, 4 equals LAPACK's dgesvd (test_analysis --svd-only);
#  * two synthetic recordings with hand-built heads (analysis/tools/synthetic_recording.py,
#    written with h5py by the format spec) analysed at -np 2: every output file present, the
#    indicators equal an independent numpy computation, the normalisation runs across both
#    files, the SVD spectra match numpy, results at -np 1 and -np 2 agree;
#  * a real recording from decon-train (the writer) with its checkpoint: outputs present, rows
#    sum to 1, and the W_QK / W_OV spectra equal numpy's SVD of the explicit d x d products,
#    at d_h = d / h and at [model] head_dim = 40 > d = 32;
#  * damaged input (truncated, corrupt chunk, missing group, wrong format_version, not HDF5,
#    missing file, mismatched checkpoint, unwritable --out) at -np 2: one "decon: error" line
#    naming the file, non-zero exit, within a timeout (no hang).
source "$(dirname "$0")/common.sh"
ANALYZE="$ROOT/bin/decon-analyze"
SYNTH="$ROOT/analysis/tools/synthetic_recording.py"
TEST_BIN="$ROOT/build/tests/test_analysis"
MPIRUN=(mpirun --oversubscribe)
export OMP_NUM_THREADS=1

# ---- distributed SVD against LAPACK -------------------------------------------------------
for np in 1 2 4; do
    timeout 300 "${MPIRUN[@]}" -np "$np" "$TEST_BIN" --svd-only >"$WORK/svd$np.log" 2>&1
    rc=$?
    grep -E '^(PASS|FAIL) ' "$WORK/svd$np.log"
    count=$(grep -c '^PASS ' "$WORK/svd$np.log")
    check "analyze_svd_np${np}_runs" $(( rc == 0 && count >= 9 ? 0 : 1 )) \
        "rc=$rc, $count PASS lines: $(tail -n 3 "$WORK/svd$np.log")"
done

# ---- hand-built recordings: known values, two files ------------------------------------------
"$PYTHON" "$SYNTH" "$WORK/a.h5" --mode known --plan SSMS --heads 4 --length 12 --sequences 2 --steps 0,100 \
    --recorded 0,1,2 >"$WORK/synth.log" 2>&1 &&
"$PYTHON" "$SYNTH" "$WORK/b.h5" --mode random --plan SNSD --heads 3 --length 20 --sequences 3 --steps 100,200 \
    --dtype float16 --seed 5 >>"$WORK/synth.log" 2>&1
check analyze_synthetic_recordings $? "$(tail -n 3 "$WORK/synth.log")"

timeout 120 "${MPIRUN[@]}" -np 2 "$ANALYZE" "$WORK/a.h5" "$WORK/b.h5" --metrics --svd --logits --tol 1e-9 \
    --out "$WORK/out2" >"$WORK/analyze2.log" 2>&1
rc=$?
check analyze_runs_np2 $rc "rc=$rc: $(tail -n 5 "$WORK/analyze2.log")"
missing=""
for f in analysis.h5 a.layers.csv a.heads.csv a.spectra.csv a.json b.layers.csv b.heads.csv b.spectra.csv b.json; do
    [ -s "$WORK/out2/$f" ] || missing="$missing $f"
done
check analyze_outputs_present "$([ -z "$missing" ]; echo $?)" "missing:$missing"

"$PYTHON" - "$WORK" <<'PY' >"$WORK/check.log" 2>&1
import csv, json, math, sys
import h5py
import numpy as np
work = sys.argv[1]
out = h5py.File(work + "/out2/analysis.h5", "r")

def expected(a):
    """Indicators of one L x L causal matrix, straight from the definitions."""
    L = a.shape[0]
    tri = np.tril(np.ones((L, L), dtype=bool))
    x = np.where(tri, a, 0.0)
    pos = np.where(x > 0, x, 1.0)
    entropy = -(np.where(x > 0, x * np.log(pos), 0.0)).sum() / L
    conc = math.sqrt((x * x).sum())
    sink = x[:, 0].sum() / L
    loc = [sum(x[i, i - n] for i in range(n, L)) / (L - n) for n in range(4)]
    return [entropy, conc, sink] + loc

def headdiv(heads):   # heads [H, L, L]
    L = heads.shape[-1]
    tri = np.tril(np.ones((L, L), dtype=bool))
    return heads.std(axis=0)[tri].sum() * 2.0 / (L * (L + 1))

worst = 0.0
layer_values = {}
for name in ("a", "b"):
    rec = h5py.File("%s/%s.h5" % (work, name), "r")
    run = out["runs"][name]
    steps = list(run["steps"][()])
    recorded = set(int(l) for l in rec.attrs["recorded_layers"])
    for s, step in enumerate(steps):
        for l in range(int(rec.attrs["num_layers"])):
            group = rec["step_%d" % step].get("layer_%d" % l)
            has = group is not None and int(group.attrs["has_attn"]) == 1
            assert int(run["recorded"][s, l]) == (l in recorded), (name, step, l)
            assert int(run["has_attn"][s, l]) == has, (name, step, l)
            if not has:
                assert np.all(np.isnan(run["layers"]["entropy"][s, l])), (name, step, l)
                continue
            a = group["attn"][()].astype(np.float64)          # [K, H, L, L]
            K, H = a.shape[:2]
            per_head = np.array([[expected(a[k, h]) for h in range(H)] for k in range(K)]).mean(axis=0)
            fields = ["entropy", "conc", "sink", "locfoc_0", "locfoc_1", "locfoc_2", "locfoc_3"]
            for i, f in enumerate(fields):
                got = run["heads"][f][s, l, :]
                worst = max(worst, np.max(np.abs(got - per_head[:, i])))
                lay = run["layers"][f][s, l]
                worst = max(worst, abs(lay - per_head[:, i].mean()))
            hd = np.mean([headdiv(a[k]) for k in range(K)])
            worst = max(worst, abs(run["layers"]["headdiv"][s, l] - hd))
            layer_values.setdefault(step, []).append(
                (name, s, l, run["layers"]["entropy"][s, l], run["layers"]["conc"][s, l], run["layers"]["headdiv"][s, l]))
            # spectra: mean over sequences of numpy's singular values
            sv = np.mean([[np.linalg.svd(a[k, h], compute_uv=False) for h in range(H)] for k in range(K)], axis=0)
            worst = max(worst, np.max(np.abs(run["svd"]["singular_values"][s, l] - sv)))
            ones = group.attrs["row_sums"] == "1"
            assert int(run["layers"]["rows_sum_to_one"][s, l]) == int(ones), (name, step, l)
assert worst < 1e-10, "indicators or spectra differ from numpy by %g" % worst

# Normalisation: per step number, over every layer of both files.
for step, rows in layer_values.items():
    for k, f in ((3, "entropy_norm"), (4, "conc_norm"), (5, "headdiv_norm")):
        vals = np.array([r[k] for r in rows])
        lo, hi = vals.min(), vals.max()
        for r in rows:
            want = (r[k] - lo) / (hi - lo) if hi - lo > 1e-12 * max(abs(lo), abs(hi)) else 0.0
            got = out["runs"][r[0]]["layers"][f][r[1], r[2]]
            assert abs(got - want) < 1e-12, (step, r, f, got, want)
assert len({r[0] for r in layer_values[100]}) == 2, "step 100 should be normalised across both files"

# Known heads of file a: layer 0 head 1 is the identity, layer 0 head 2 all mass on token 1.
run = out["runs"]["a"]
L = 12
assert abs(run["heads"]["locfoc_0"][0, 0, 1] - 1.0) < 1e-12 and abs(run["heads"]["conc"][0, 0, 1] - math.sqrt(L)) < 1e-12
assert abs(run["heads"]["sink"][0, 0, 2] - 1.0) < 1e-12 and abs(run["svd"]["effective_rank"][0, 0, 2] - 1.0) < 1e-9
assert abs(run["svd"]["effective_rank"][0, 0, 1] - L) < 1e-9 and int(run["svd"]["numerical_rank"][0, 0, 1]) == L

# CSV and JSON carry the same numbers.
rows = list(csv.DictReader(open(work + "/out2/a.layers.csv")))
row = [r for r in rows if r["step"] == "100" and r["layer"] == "1"][0]
assert abs(float(row["entropy"]) - run["layers"]["entropy"][1, 1]) < 1e-9, row
assert row["has_attn"] == "1" and [r for r in rows if r["layer"] == "3"][0]["recorded"] == "0"
doc = json.load(open(work + "/out2/b.json"))
layer = doc["steps"][0]["layers"][3]
assert layer["variant"] == "approx-diag" and layer["flags"]["rows_sum_to_one"] is False, layer["flags"]
assert abs(layer["indicators"]["conc"] - out["runs"]["b"]["layers"]["conc"][0, 3]) < 1e-9
assert doc["steps"][0]["layers"][1]["scores_kind"] == "per_token"
print("ok, worst difference %.3g" % worst)
PY
check analyze_values_match_numpy $? "$(tail -n 4 "$WORK/check.log")"

timeout 120 "${MPIRUN[@]}" -np 1 "$ANALYZE" "$WORK/a.h5" "$WORK/b.h5" --metrics --svd --logits --tol 1e-9 \
    --out "$WORK/out1" >"$WORK/analyze1.log" 2>&1
"$PYTHON" - "$WORK/out1/analysis.h5" "$WORK/out2/analysis.h5" <<'PY' >"$WORK/check.log" 2>&1
import sys
import h5py
import numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
worst = [0.0]
def visit(name, obj):
    if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
        x, y = a[name][()], obj[()]
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        if np.any(~np.isnan(x)):
            worst[0] = max(worst[0], float(np.nanmax(np.abs(x - y))))
b.visititems(visit)
assert worst[0] < 1e-12, worst[0]
print("ok", worst[0])
PY
check analyze_np1_equals_np2 $? "$(tail -n 3 "$WORK/check.log")"

# ---- a real recording from the trainer, with its checkpoint ----------------------------------
make_shard "$WORK/train.bin" 20000 64 1
make_shard "$WORK/val.bin" 2000 64 2
write_small_config "$WORK/small.ini"
# At d_h = d / h = 8, then with [model] head_dim = 40 (wider than d = 32: the products keep
# rank d, and the last d_h - d singular values are zeros).
for run in run run_headdim; do
    head_dim=0; suffix=""
    [ "$run" = run_headdim ] && head_dim=40 && suffix="_head_dim"
    extra=(); [ "$head_dim" -gt 0 ] && extra=(--set "model.head_dim=$head_dim")
    "$TRAIN" "$WORK/small.ini" --set train.max_steps=10 --set io.record_every=5 --set io.checkpoint_every=10 \
        --set attention.variant=nonapx --set attention.layout=hybrid:even --set "io.run_dir=$WORK/$run" "${extra[@]}" \
        >"$WORK/train.log" 2>&1
    check "analyze_trainer_recording_written$suffix" $? "$(tail -n 3 "$WORK/train.log")"
    timeout 120 "${MPIRUN[@]}" -np 2 "$ANALYZE" "$WORK/$run/attn.h5" --checkpoint "$WORK/$run/ckpt/latest.h5" \
        --metrics --svd --logits >"$WORK/real.log" 2>&1
    rc=$?
    check "analyze_trainer_recording_analysed$suffix" $rc "rc=$rc: $(tail -n 5 "$WORK/real.log")"
    "$PYTHON" - "$WORK/$run" "$head_dim" <<'PY' >"$WORK/check.log" 2>&1
import json, sys
import h5py
import numpy as np
run_dir, head_dim = sys.argv[1], int(sys.argv[2])
run_name = run_dir.rstrip("/").split("/")[-1]  # runs are named by their directory
out = h5py.File(run_dir + "/analysis/analysis.h5", "r")["runs"][run_name]
assert out["layers"]["rows_sum_to_one"][()].min() == 1, out["layers"]["rows_sum_to_one"][()]
ck = h5py.File(run_dir + "/ckpt/latest.h5", "r")["params"]
w = out["weights"]
H, dh, kv = 4, int(w.attrs["head_dim"]), int(w.attrs["kv_heads"])
assert dh == (head_dim or 32 // H), ("head_dim", dh, head_dim)
worst = 0.0
for l in range(2):
    wq, wk = ck["layers.%d.mixer.wq" % l][()].astype(np.float64), ck["layers.%d.mixer.wk" % l][()].astype(np.float64)
    wv, wo = ck["layers.%d.mixer.wv" % l][()].astype(np.float64), ck["layers.%d.mixer.wo" % l][()].astype(np.float64)
    assert wq.shape == (H * dh, 32) and wo.shape == (32, H * dh), (wq.shape, wo.shape)
    for j in range(H):
        g = j // (H // kv)
        qk = wq[j * dh:(j + 1) * dh].T @ wk[g * dh:(g + 1) * dh]            # d x d, Q = H Wq convention
        ov = wv[g * dh:(g + 1) * dh].T @ wo[:, j * dh:(j + 1) * dh].T
        for name, m in (("qk", qk), ("ov", ov)):
            s = np.linalg.svd(m, compute_uv=False)
            got = w[name + "_singular_values"][l, j]
            n = min(dh, len(s))
            worst = max(worst, np.max(np.abs(got[:n] - s[:n])) / s[0], np.max(np.abs(got[n:]), initial=0) / s[0])
            assert np.all(s[n:] < 1e-12 * s[0]), "rank above d_h"
assert worst < 1e-10, worst
doc = json.load(open(run_dir + "/analysis/%s.json" % run_name))
assert doc["variant"] == "nonapx" and len(doc["steps"]) == 3, (doc["variant"], len(doc["steps"]))  # steps 0, 5, 10
print("ok", worst)
PY
    check "analyze_weight_spectra_match_numpy$suffix" $? "$(tail -n 4 "$WORK/check.log")"
done

# ---- damaged input: one line, non-zero exit, no hang at -np 2 ---------------------------------
cp "$WORK/a.h5" "$WORK/truncated.h5" && truncate -s $(( $(stat -c %s "$WORK/a.h5") / 2 )) "$WORK/truncated.h5"
"$PYTHON" - "$WORK" <<'PY' >"$WORK/damage.log" 2>&1
import shutil, sys
import h5py
work = sys.argv[1]
# A corrupt chunk: bytes in the middle of one compressed attn chunk overwritten.
shutil.copy(work + "/a.h5", work + "/corrupt.h5")
with h5py.File(work + "/corrupt.h5", "r") as f:
    info = f["step_100/layer_1/attn"].id.get_chunk_info(1)
with open(work + "/corrupt.h5", "r+b") as f:
    f.seek(info.byte_offset + info.size // 2)
    f.write(b"\xff\x00\xa5\x5a" * 8)
# A missing layer group.
shutil.copy(work + "/a.h5", work + "/missing.h5")
with h5py.File(work + "/missing.h5", "r+") as f:
    del f["step_100/layer_1"]
PY
"$PYTHON" "$SYNTH" "$WORK/version.h5" --format-version 2 >>"$WORK/damage.log" 2>&1
echo "not an HDF5 file" >"$WORK/text.h5"
"$PYTHON" "$SYNTH" "$WORK/six.h5" --plan SSSSSS >>"$WORK/damage.log" 2>&1

analyze_error() {  # NAME "EXPECTED TEXT" ARGS...: expect_error (common.sh) at -np 2
    expect_error "$1" "$2" "${MPIRUN[@]}" -np 2 "$ANALYZE" --out "$WORK/err" "${@:3}"
}
analyze_error analyze_error_truncated "truncated.h5" "$WORK/truncated.h5" --metrics
analyze_error analyze_error_corrupt_chunk "corrupt.h5: reading /step_100/layer_1/attn failed" "$WORK/corrupt.h5" --metrics
analyze_error analyze_error_corrupt_chunk_svd "corrupt.h5: reading /step_100/layer_1/attn failed" "$WORK/corrupt.h5" --svd
analyze_error analyze_error_missing_group "no /step_100/layer_1" "$WORK/missing.h5"
analyze_error analyze_error_format_version "format_version 2" "$WORK/version.h5"
analyze_error analyze_error_not_hdf5 "text.h5 cannot be opened as HDF5" "$WORK/text.h5"
analyze_error analyze_error_missing_file "nothere.h5 does not exist" "$WORK/a.h5" "$WORK/nothere.h5"
analyze_error analyze_error_checkpoint_mismatch "has 2 layers but recording" "$WORK/six.h5" \
    --checkpoint "$WORK/run/ckpt/latest.h5"
analyze_error analyze_error_bad_option "unknown option --frobnicate" "$WORK/a.h5" --frobnicate
touch "$WORK/afile"
analyze_error analyze_error_unwritable_out "cannot create the output directory" "$WORK/a.h5" --out "$WORK/afile/sub"
