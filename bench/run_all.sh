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
echo "== training throughput (random tokens, full steps incl. AdamW)"
build/bench/bench_train input/models/tiny.ini --steps 5
build/bench/bench_train input/models/70m.ini --set train.sequence_length=512 --set train.micro_batch_size=8 \
    --set train.global_batch_size=8 --steps 3
echo "== parallel training (mpirun; traffic per step and rank against the formula)"
bash bench/parallel.sh
[ -x build/bench/bench_checkpoint ] && { echo "== checkpoints"; build/bench/bench_checkpoint; }
if [ -x build/bench/bench_svd ]; then
    echo "== attention SVD (decon-analyze --svd: ScaLAPACK pdgesvd of one 2048 x 2048 head, 1 thread per rank;"
    echo "   ranks beyond $(nproc) cores are oversubscribed)"
    for np in 1 2 4; do
        OMP_NUM_THREADS=1 mpirun --oversubscribe -np "$np" build/bench/bench_svd --n 2048 --reps 2
    done
fi
exit 0
