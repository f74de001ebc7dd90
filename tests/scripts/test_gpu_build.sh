#!/usr/bin/env bash
# The GPU backend's build checks, on a machine without a GPU (`make gpu-check`, and part
# of `make test`):
#  1. `make GPU=cuda CUDA_ARCH=sm_90` compiles hip/*.hip with nvcc as CUDA and links the
#     programs and the GPU test against cuBLAS/cudart; the trainer built so refuses,
#     with one line, a mixer it has no kernels for and (here) the missing GPU;
#  2. every hip/*.hip compiles to gfx942 (MI300X) device code with Debian's clang-19,
#     and each kernel is in the assembly;
#  3. `make GPU=hip HIP_ARCH=gfx90a` links with Debian's hipcc 5.2 (it predates gfx942).
# The GPU builds link the CPU build's objects of the backend-independent C sources
# (Makefile, C_BUILD: same CC and CFLAGS), so with build/ made (as `make test` has it)
# they compile only hip/*.hip, the GPU test objects and the renamed CPU ops. Measured on
# 2 shared cores, build-cuda/, build-hip/, build-gfx942/ removed: CUDA 60 s, gfx942 14 s,
# HIP 23 s, 98 s in all (before the reuse and the parallel gfx942 compiles, same load:
# 82 + 22 + 33 = 138 s; 370 s when the machine was busier); one .hip touched: 7 s;
# nothing changed: 2 s. The critical path is nvcc on hip/attention.hip (its cicc front
# end alone ~53 s): the other files compile beside it under -j"$JOBS" (CUDA build at -j1
# 95 s, at -j2 77 s, measured together under load).
. "$(dirname "$0")/common.sh"
cd "$ROOT"
JOBS=${JOBS:-2}

# 1. CUDA
start=$SECONDS
if make -j"$JOBS" GPU=cuda CUDA_ARCH=sm_90 >"$WORK/cuda.log" 2>&1; then
    needed=$(readelf -d build-cuda/bin/decon-train 2>/dev/null | grep NEEDED)
    echo "$needed" | grep -q libcublas && echo "$needed" | grep -q libcudart
    check "gpu build: make GPU=cuda CUDA_ARCH=sm_90 links decon-train, decon-eval and the GPU test with cuBLAS ($((SECONDS - start)) s)" \
        $? "decon-train does not link libcublas/libcudart"
    [ -x build-cuda/bin/decon-eval ] && [ -x build-cuda/tests/test_gpu_ops ] && [ -x build-cuda/tests/dump_step ]
    check "gpu build: GPU test programs built" $? "build-cuda/tests/test_gpu_ops or dump_step missing"
    # The layer plan refuses a mixer without GPU kernels before touching the device.
    make_shard "$WORK/train.bin" 20000 64 1
    write_small_config "$WORK/small.ini" "$WORK/train.bin" "$WORK/train.bin" "$WORK/run"
    out=$(build-cuda/bin/decon-train "$WORK/small.ini" --set attention.variant=approx 2>&1 >/dev/null)
    rc=$?
    [ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "variant = 'approx'.*no GPU kernels"
    check "gpu build: the CUDA trainer refuses approx with one line" $? "rc=$rc: $out"
    if ! nvidia-smi -L >/dev/null 2>&1; then
        out=$(build-cuda/bin/decon-train "$WORK/small.ini" 2>&1 >/dev/null)
        rc=$?
        [ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "no GPU is visible"
        check "gpu build: without a GPU the CUDA trainer stops with one line" $? "rc=$rc: $out"
    fi
else
    fail "gpu build: make GPU=cuda CUDA_ARCH=sm_90" "$(grep -m3 -E 'error:|Error [0-9]|undefined reference' "$WORK/cuda.log")"
fi

# 2. gfx942 device code, every .hip file (make gfx942-asm: incremental, -j"$JOBS")
start=$SECONDS
bad=""
make -k -j"$JOBS" gfx942-asm >"$WORK/gfx942.log" 2>&1 || bad=" (make gfx942-asm failed)"
for source in hip/*.hip; do
    asm=build-gfx942/$(basename "$source" .hip).s
    # Each __global__ in the source is a kernel in the assembly.
    for kernel in $(grep -oE '__global__ void [a-z_0-9]+' "$source" | awk '{print $3}'); do
        grep -q "\.amdhsa_kernel .*$kernel" "$asm" 2>/dev/null || bad="$bad $source:$kernel"
    done
done
[ -z "$bad" ]
check "gpu build: every hip/*.hip compiles to gfx942 device code with clang-19, every kernel present ($((SECONDS - start)) s)" \
    $? "failed:$bad $(grep -m3 -E 'error' "$WORK/gfx942.log" | head -c 400)"

# 3. HIP link with hipcc (gfx90a)
start=$SECONDS
if make -j"$JOBS" GPU=hip HIP_ARCH=gfx90a build-hip/bin/decon-train build-hip/bin/decon-eval >"$WORK/hip.log" 2>&1; then
    readelf -d build-hip/bin/decon-train | grep NEEDED | grep -q libamdhip64
    check "gpu build: make GPU=hip HIP_ARCH=gfx90a links decon-train and decon-eval with hipcc ($((SECONDS - start)) s)" \
        $? "decon-train does not link libamdhip64"
else
    fail "gpu build: make GPU=hip HIP_ARCH=gfx90a" "$(grep -m3 -E 'error:|Error [0-9]|undefined reference' "$WORK/hip.log")"
fi
