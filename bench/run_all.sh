#!/usr/bin/env bash
# `make bench`: prints figures (never pass/fail). Compare ratios within one run.
set -u
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
# Idle OpenMP threads sleep instead of spinning: spinning threads starve OpenBLAS and
# any other process sharing the cores (measured: several times slower under load).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
[ -x build/bench/bench_ops ] && { echo "== ops"; build/bench/bench_ops; }
[ -x build/bench/bench_mixers ] && { echo "== mixers (time vs sequence length at fixed tokens per step)"; build/bench/bench_mixers; }
if [ -x build/bench/bench_decode ]; then
    # Writes bench/results/decode.jsonl, drawn into bench/results/decode.png (a few minutes).
    echo "== cached decoding (every mixer at the 70m shape: prefill GFLOP/s; decode tokens/s and cache bytes vs context)"
    mkdir -p bench/results
    build/bench/bench_decode --json bench/results/decode.jsonl &&
        /usr/bin/python3 analysis/plot/decode_figure.py bench/results/decode.jsonl --out bench/results/decode.png
fi
echo "== training throughput (random tokens, full steps incl. AdamW)"
build/bench/bench_train input/models/tiny.ini --steps 5
build/bench/bench_train input/models/70m.ini --set train.sequence_length=512 --set train.micro_batch_size=8 \
    --set train.global_batch_size=8 --steps 3
echo "== parallel training (mpirun; traffic per step and rank against the formula)"
bash bench/parallel.sh
if [ -x build/bench/bench_checkpoint ]; then
    # Checkpoint MB/s next to what the disk does for plain sequential I/O (dd, same
    # directory). Cold reads drop the page cache first (drop_caches needs root; the bench
    # falls back to dropping its file's pages with posix_fadvise).
    dir=${CHECKPOINT_BENCH_DIR:-/tmp}
    echo "== checkpoints (params + Adam m + v of a ~200 MB model in $dir; ranks beyond $(nproc) cores are oversubscribed)"
    mb_per_s() { awk '/copied/ { printf "%.0f MB/s", $1 / $(NF - 3) / 1e6 }'; }
    dd_write=$(dd if=/dev/zero of="$dir/dd.tmp" bs=1M count=256 conv=fdatasync 2>&1 | mb_per_s)
    sync
    cache=warm
    (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null && cache=cold
    dd_read=$(dd if="$dir/dd.tmp" of=/dev/null bs=1M 2>&1 | mb_per_s)
    rm -f "$dir/dd.tmp"
    echo "dd 256 MiB: write ${dd_write:-?} (conv=fdatasync), read ${dd_read:-?} ($cache page cache)"
    build/bench/bench_checkpoint --dir "$dir" --reps 5
    mpirun --oversubscribe -np 2 build/bench/bench_checkpoint --dir "$dir" --reps 5 --tp 2
    mpirun --oversubscribe -np 4 build/bench/bench_checkpoint --dir "$dir" --reps 5 --tp 2 --zero
fi
if [ -x build/bench/bench_svd ]; then
    echo "== attention SVD (decon-analyze --svd: ScaLAPACK pdgesvd of one 2048 x 2048 head, 1 thread per rank;"
    echo "   ranks beyond $(nproc) cores are oversubscribed)"
    for np in 1 2 4; do
        OMP_NUM_THREADS=1 mpirun --oversubscribe -np "$np" build/bench/bench_svd --n 2048 --reps 2
    done
fi
exit 0
