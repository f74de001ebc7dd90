// The GPU backend's memory and runtime (ops.h, "backend memory").
//
// Tensors are managed (unified) memory: the device holds them while kernels run, and the
// host may still dereference them, so everything built on the CPU backend's rule "the
// host reads and writes tensors only through ops_to_host / ops_from_host" works as is,
// including the call sites that pass a tensor as its own host buffer (on a GPU those are
// the synchronisation points: ops_to_host(x, x) waits for the kernels, ops_from_host(x, x)
// moves the host's writes back to the device) and part 1's data parallelism, whose MPI
// calls read the staged tensors from the host side of the managed allocation (par/ calls
// ops_to_host(x, x) before each collective). Part 2 replaces this with device memory,
// pinned staging buffers and GPU-aware collectives (RCCL / NCCL).
//
// The device: one rank per GPU, chosen by the rank's index among the ranks of its node
// (MPI_COMM_TYPE_SHARED), so any launcher's rank placement works.
#define OMPI_SKIP_MPICXX 1  // the C API only (Open MPI's C++ bindings do not build warning-free)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <string.h>

#include "hip/backend.h"
#include "hip/blas.h"

static bool started;
static int device;

void gpu_runtime_start(void) {
    if (started) return;
    started = true;
    int devices = 0;
    hipError_t status = hipGetDeviceCount(&devices);
    if (status != hipSuccess || devices < 1)
        fatal("this is a GPU build (%s) but no GPU is visible (%s); run it on a GPU node or build the CPU "
              "binaries with plain `make`", GPU_PLATFORM_NAME, status != hipSuccess ? hipGetErrorString(status) : "0 devices");
    int local_rank = 0, local_size = 1, initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) {
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &local_rank);
        MPI_Comm_size(node, &local_size);
        MPI_Comm_free(&node);
    }
    if (local_size > devices)
        fatal("%d ranks on this node but %d GPU%s visible: run one rank per GPU (mpirun -n %d per node)", local_size,
              devices, devices == 1 ? "" : "s", devices);
    device = local_rank;
    GPU_CHECK(hipSetDevice(device));
}

void *ops_alloc(size_t bytes) {
    gpu_runtime_start();
    void *tensor = NULL;
    size_t rounded = bytes ? (bytes + 63) / 64 * 64 : 64;
    hipError_t status = hipMallocManaged(&tensor, rounded, hipMemAttachGlobal);
    if (status != hipSuccess)
        fatal("GPU out of memory: could not allocate %zu bytes on device %d (%s); reduce [train] micro_batch_size",
              bytes, device, hipGetErrorString(status));
    GPU_CHECK(hipMemset(tensor, 0, rounded));
    return tensor;
}

void ops_free(void *tensor) {
    if (!tensor) return;
    GPU_CHECK(hipDeviceSynchronize());  // no kernel may still use it
    GPU_CHECK(hipFree(tensor));
}

void gpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) GPU_CHECK(hipMemcpyAsync(dst, src, bytes, hipMemcpyDefault, 0));
}

void ops_to_host(void *host, const void *tensor, size_t bytes) {
    gpu_runtime_start();
    if (host == tensor) {  // the host reads the managed tensor itself: wait for the kernels
        GPU_CHECK(hipDeviceSynchronize());
        return;
    }
    GPU_CHECK(hipMemcpy(host, tensor, bytes, hipMemcpyDefault));
}

void ops_from_host(void *tensor, const void *host, size_t bytes) {
    gpu_runtime_start();
    if (tensor == host) {  // written on the host in place: move the pages back to the device
        if (bytes) (void)hipMemPrefetchAsync(tensor, bytes, device, 0);
        (void)hipGetLastError();  // prefetching is advice; a device without it still works
        return;
    }
    GPU_CHECK(hipMemcpy(tensor, host, bytes, hipMemcpyDefault));
}

// ---- workspace ---------------------------------------------------------------------------
static float *workspace;
static size_t workspace_floats;

void ops_workspace_reserve(size_t floats) {
    if (floats <= workspace_floats) return;
    gpu_runtime_start();
    if (workspace) GPU_CHECK(hipDeviceSynchronize());
    if (workspace) GPU_CHECK(hipFree(workspace));
    void *memory = NULL;
    hipError_t status = hipMalloc(&memory, floats * sizeof(float));
    if (status != hipSuccess) fatal("GPU out of memory: workspace of %zu floats (%s)", floats, hipGetErrorString(status));
    workspace = (float *)memory;
    workspace_floats = floats;
}

size_t ops_workspace_reserved(void) { return workspace_floats; }

float *gpu_workspace(size_t floats) {
    ops_workspace_reserve(floats);
    return workspace;
}

// The flash-attention kernels keep their tiles in shared memory and registers and
// recompute D_i = dO_i . O_i where they need it: the attention ops take no workspace on
// the GPU. (The linear mixers' ops are refused by this backend, runtime.hip.)
size_t ops_attention_workspace_floats(int seq_len, int heads, int kv_heads, int head_dim) {
    (void)seq_len, (void)heads, (void)kv_heads, (void)head_dim;
    return 0;
}
