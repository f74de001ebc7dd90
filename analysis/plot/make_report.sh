#!/usr/bin/env bash
# make report RUNS="runs/a runs/b" [REPORT=reports/latest] [SVD=0|1] [NP=4] [LOWRANK=reports/lowrank/lowrank.jsonl]
#   = bash analysis/plot/make_report.sh --out DIR [--svd 0|1] [--lowrank JSONL]... RUN_DIR...
# 1. decon-analyze over every run's attn.h5 together (so ENTROPY, CONC and HEADDIV are
#    normalised across exactly these runs), with each run's ckpt/latest.h5 when every
#    recorded run has one; NP > 1 runs it under mpirun -np NP.
# 2. analysis/plot/report.py: figures and report.md in DIR, with the table and figure of
#    each low-rank sweep given (--lowrank) or found as RUN_DIR/lowrank.jsonl (make lowrank-sweep).
# Missing pieces (no recording, no eval.json, a failed analysis) are reported, not fatal.
set -u
cd "$(dirname "$0")/../.."
out=reports/latest
svd=1
runs=()
lowrank=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --svd) svd=$2; shift 2 ;;
        --lowrank) lowrank+=(--lowrank "$2"); shift 2 ;;
        -h|--help) sed -n 2,10p "$0"; exit 0 ;;
        *) runs+=("${1%/}"); shift ;;   # runs/a/ and runs/a name the same run
    esac
done
if [ ${#runs[@]} -eq 0 ]; then
    echo "decon: error: no run directories given; e.g. make report RUNS=\"runs/a runs/b\"" >&2
    exit 1
fi
PYTHON=/usr/bin/python3   # Debian's, with python3-h5py / python3-matplotlib (a pyenv python may lack them)
if ! "$PYTHON" -c 'import h5py, matplotlib, numpy' 2>/dev/null; then
    echo "decon: error: $PYTHON lacks h5py, matplotlib or numpy: run 'make setup' (Debian python3-h5py python3-matplotlib python3-numpy)" >&2
    exit 1
fi
mkdir -p "$out/analysis" || exit 1

recordings=() checkpoints=() all_checkpoints=1
for run in "${runs[@]}"; do
    [ -d "$run" ] || { echo "report: $run is not a directory (left out)"; continue; }
    [ -f "$run/lowrank.jsonl" ] && lowrank+=(--lowrank "$run/lowrank.jsonl")
    if [ -f "$run/attn.h5" ]; then
        recordings+=("$run/attn.h5")
        if [ -e "$run/ckpt/latest.h5" ]; then checkpoints+=(--checkpoint "$run/ckpt/latest.h5"); else all_checkpoints=0; fi
    fi
done
[ "$all_checkpoints" -eq 1 ] || checkpoints=()

analysis_args=()
error=""
if [ ${#recordings[@]} -gt 0 ]; then
    launch=()
    export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
    [ "${NP:-1}" -gt 1 ] && launch=(mpirun --oversubscribe -np "$NP")
    flags=(--metrics --logits)
    [ "$svd" = 1 ] && flags+=(--svd)
    echo "report: bin/decon-analyze ${recordings[*]} ${flags[*]} ${checkpoints[*]} --out $out/analysis"
    if "${launch[@]}" bin/decon-analyze "${recordings[@]}" "${flags[@]}" "${checkpoints[@]}" --out "$out/analysis" \
        >"$out/analysis/decon-analyze.log" 2>&1; then
        analysis_args=(--analysis "$out/analysis/analysis.h5")
    else
        error=$(grep -m1 '^decon: error' "$out/analysis/decon-analyze.log" || tail -n 1 "$out/analysis/decon-analyze.log")
        echo "report: decon-analyze failed: $error (the report goes on without it)" >&2
    fi
else
    echo "report: no run has attn.h5 (set [io] record_every when training); no attention analysis"
fi
exec "$PYTHON" analysis/plot/report.py --out "$out" "${analysis_args[@]}" "${lowrank[@]}" --analysis-error "$error" \
    "${runs[@]}"
