#!/usr/bin/env bash
# `make bench`: prints figures (never pass/fail). Compare ratios within one run.
set -u
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
[ -x build/bench/bench_ops ] && { echo "== ops"; build/bench/bench_ops; }
[ -x build/bench/bench_mixers ] && { echo "== mixers (time vs sequence length at fixed tokens per step)"; build/bench/bench_mixers; }
echo "== training throughput (random tokens, full steps incl. AdamW)"
build/bench/bench_train input/models/tiny.ini --steps 5
build/bench/bench_train input/models/70m.ini --set train.sequence_length=512 --set train.micro_batch_size=8 \
    --set train.global_batch_size=8 --steps 3
[ -x build/bench/bench_checkpoint ] && { echo "== checkpoints"; build/bench/bench_checkpoint; }
exit 0
