#!/usr/bin/env bash
# Installs the Debian packages decon needs to build, test and prepare its corpus.
# Idempotent: does nothing when everything is present. Needs root (or sudo).
set -euo pipefail
packages=(
    build-essential pkg-config make
    libopenmpi-dev openmpi-bin          # MPI (mpicc, mpirun)
    libhdf5-openmpi-dev hdf5-tools      # parallel HDF5, h5dump/h5diff
    libopenblas-openmp-dev              # sgemm (OpenMP threading, shares our pool)
    libinih-dev libcjson-dev            # INI configs, JSON
    sentencepiece libsentencepiece-dev  # BPE tokenizer (spm_train, spm_encode; the C++ library under src/io/tokenizer.h)
    python3-torch                       # tests/scripts/test_export.sh: an independent Qwen2 forward of the export
    python3 python3-numpy               # corpus recipe and test helpers
    libscalapack-openmpi-dev            # decon-analyze: distributed SVD (pdgesvd)
    python3-h5py python3-matplotlib     # analysis/plot: figures and report.md
    clang-19 libclang-rt-19-dev         # fuzzing: libFuzzer, ASan, UBSan (tests/fuzz/)
    libomp-19-dev llvm-19               # ... clang's OpenMP runtime, llvm-symbolizer for reports
    slurm-wlm munge                     # jobs/: a real local Slurm for the job tests (jobs/local_cluster)
    clang-tidy-19                       # make lint (libomp-19-dev's omp.h; libomp-14-dev conflicts with it)
    libamdhip64-dev hipcc               # GPU build checks: HIP headers (clang-19 gfx942), hipcc (gfx90a link)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all build packages present"
else
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Packages of two LLVM versions can silently replace each other (libomp-14-dev and
# libomp-19-dev conflict): check that the fuzz build and make lint will find omp.h.
if ! echo '#include <omp.h>' | clang-19 -fopenmp -fsyntax-only -x c - 2>/dev/null; then
    echo "setup: clang-19 cannot find omp.h: install libomp-19-dev (and remove libomp-*-dev of other LLVM versions)" >&2
    exit 1
fi
