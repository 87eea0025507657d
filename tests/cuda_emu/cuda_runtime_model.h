/* cuda_runtime_model.h — the part of the CUDA runtime API that lmc's .cu
 * files call, modelled on the host for the emulator (emu.h includes it in
 * place of <cuda_runtime.h>; cuda_runtime_model.cc implements it).
 *
 * Model: one device (ordinal 0) with H100-like properties (sm_90, 132 SMs,
 * 80 GiB, 227 KiB opt-in shared memory). Device memory is host memory:
 * cudaMalloc returns 256-byte aligned blocks filled with 0xff bytes (NaN
 * as floats: fresh device memory is garbage) and records them, so that
 *  - cudaFree / cudaFreeHost of a pointer they did not hand out, or twice,
 *    aborts naming the call;
 *  - cudaMemcpy(Async) / cudaMemsetAsync check their ranges: a range that
 *    starts in a device block must end in it; the copy kind must match the
 *    pointers (HostToDevice: dst in device memory, src not; DeviceToHost
 *    the reverse; DeviceToDevice both; Default: any);
 *  - with emu_strict_device set (the harness's end-to-end section, where
 *    every buffer comes from the backend), every device-side pointer
 *    (memset, GEMM operands: emu_check_dev) must lie in device memory:
 *    a host pointer handed to a device op aborts.
 * Work runs at once (launches and copies are synchronous), so streams and
 * their synchronisation are bookkeeping: a stream must exist when used. */
#pragma once
#include <cstddef>
#include <cstdint>

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
#define cudaEventDefault 0x0
#define cudaEventDisableTiming 0x2
typedef int cudaError_t;
#define cudaSuccess 0
#define cudaErrorInvalidValue 1
#define cudaErrorMemoryAllocation 2
#define cudaErrorInvalidDevice 101
#define cudaErrorNoDevice 100
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp { /* the fields lmc reads, H100 SXM values */
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
    int major, minor, multiProcessorCount, warpSize, maxThreadsPerBlock;
    int maxThreadsPerMultiProcessor, l2CacheSize, memoryBusWidth;
};

/* strict mode (see above) and the model's counters */
extern bool emu_strict_device;
extern int emu_device_major, emu_device_minor; /* the compute capability reported (9.0) */
extern long emu_memcpy_calls, emu_malloc_calls;
/* aborts unless [p, p + bytes) is device memory (strict mode), or, when p
 * is in a device block, unless the range stays in it; `what` names the use */
void emu_check_dev(const void *p, size_t bytes, const char *what);
/* true when p points into a live cudaMalloc block */
bool emu_is_dev(const void *p);

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void **p, size_t bytes);
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
template <typename T> static inline cudaError_t cudaMallocHost(T **p, size_t bytes) {
    return cudaMallocHost((void **)p, bytes);
}
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t s = nullptr);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
/* events: bookkeeping (work runs at once); a stream may wait only for an
 * event that exists and was recorded */
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);

void emu_smem_optin(const void *kernel, int bytes);
template <typename K> static inline cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute a, int v) {
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) emu_smem_optin((const void *)kernel, v);
    return cudaSuccess;
}
