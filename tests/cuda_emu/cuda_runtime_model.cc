/* cuda_runtime_model.cc — the CUDA runtime model of cuda_runtime_model.h:
 * device memory as recorded host blocks, checked copies, streams as
 * bookkeeping, one H100-like device. */
#include "emu.h"

#include <map>
#include <set>

bool emu_strict_device;
int emu_device_major = 9, emu_device_minor = 0;
long emu_memcpy_calls, emu_malloc_calls;

#include <cstdarg>
[[noreturn]] __attribute__((format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu cuda runtime: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static std::map<uintptr_t, size_t> blocks; /* device blocks: start -> bytes */
static std::set<void *> pinned;
static std::set<cudaStream_t> streams;
static std::map<cudaEvent_t, bool> events; /* live events: recorded yet */
static size_t dev_used;
static const size_t DEV_TOTAL = (size_t)80 << 30;
static int cur_device;

/* the device block holding p, or blocks.end() */
static std::map<uintptr_t, size_t>::iterator find_block(const void *p) {
    uintptr_t a = (uintptr_t)p;
    auto it = blocks.upper_bound(a);
    if (it == blocks.begin()) return blocks.end();
    --it;
    return a < it->first + it->second ? it : blocks.end();
}
bool emu_is_dev(const void *p) { return find_block(p) != blocks.end(); }

void emu_check_dev(const void *p, size_t bytes, const char *what) {
    if (!p) die("%s: NULL pointer", what);
    auto it = find_block(p);
    if (it == blocks.end()) {
        if (emu_strict_device) die("%s: %p is not device memory (a host pointer given to the device?)", what, p);
        return;
    }
    size_t off = (uintptr_t)p - it->first;
    if (bytes > it->second - off)
        die("%s: %zu bytes from offset %zu run past the end of the device block", what, bytes, off);
}

static void check_stream(cudaStream_t s, const char *what) {
    if (s && !streams.count(s)) die("%s: a stream that does not exist (destroyed?)", what);
}

cudaError_t cudaGetDeviceCount(int *n) {
    if (!n) die("cudaGetDeviceCount: NULL");
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    if (d != 0) return cudaErrorInvalidDevice;
    cur_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = cur_device;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (!p) die("cudaGetDeviceProperties: NULL");
    if (d != 0) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "NVIDIA H100 80GB HBM3 (emulated)");
    p->totalGlobalMem = DEV_TOTAL;
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->major = emu_device_major, p->minor = emu_device_minor, p->multiProcessorCount = 132, p->warpSize = 32;
    p->maxThreadsPerBlock = 1024, p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20, p->memoryBusWidth = 5120;
    return cudaSuccess;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error (emulated)";
    }
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (!p) die("cudaMalloc: NULL result pointer");
    emu_malloc_calls++;
    if (bytes == 0) { /* the runtime hands out NULL for 0 bytes */
        *p = nullptr;
        return cudaSuccess;
    }
    if (bytes > DEV_TOTAL - dev_used) return cudaErrorMemoryAllocation;
    size_t n = (bytes + 255) & ~(size_t)255;
    void *q = aligned_alloc(256, n);
    if (!q) return cudaErrorMemoryAllocation;
    memset(q, 0xff, n); /* garbage: NaN as floats */
    blocks[(uintptr_t)q] = bytes;
    dev_used += bytes;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    auto it = blocks.find((uintptr_t)p);
    if (it == blocks.end())
        die("cudaFree(%p): not the start of a live cudaMalloc block (double free, or a host pointer)", p);
    memset(p, 0xfe, it->second); /* a use after free reads garbage */
    dev_used -= it->second;
    blocks.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t bytes) {
    if (!p) die("cudaMallocHost: NULL result pointer");
    *p = aligned_alloc(256, (bytes + 255) & ~(size_t)255);
    if (!*p) return cudaErrorMemoryAllocation;
    pinned.insert(*p);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned) { return cudaMallocHost(p, bytes); }
cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    if (!pinned.erase(p)) die("cudaFreeHost(%p): not from cudaMallocHost", p);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    *free_b = DEV_TOTAL - dev_used, *total_b = DEV_TOTAL;
    return cudaSuccess;
}

static void check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, const char *what) {
    if (!n) return;
    if (!dst || !src) die("%s: NULL pointer", what);
    bool dd = emu_is_dev(dst), sd = emu_is_dev(src);
    const char *k = "";
    switch (kind) {
    case cudaMemcpyHostToDevice: if (!dd || sd) k = "HostToDevice"; break;
    case cudaMemcpyDeviceToHost: if (dd || !sd) k = "DeviceToHost"; break;
    case cudaMemcpyDeviceToDevice: if (!dd || !sd) k = "DeviceToDevice"; break;
    case cudaMemcpyHostToHost: if (dd || sd) k = "HostToHost"; break;
    case cudaMemcpyDefault: break;
    default: die("%s: bad cudaMemcpyKind %d", what, (int)kind);
    }
    if (*k) die("%s: kind %s, but dst is %s and src %s memory", what, k, dd ? "device" : "host", sd ? "device" : "host");
    if (dd) emu_check_dev(dst, n, what);
    if (sd) emu_check_dev(src, n, what);
    if ((const char *)dst < (const char *)src + n && (const char *)src < (const char *)dst + n)
        die("%s: source and destination overlap", what);
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    emu_memcpy_calls++;
    check_copy(dst, src, n, kind, "cudaMemcpy");
    if (n) memcpy(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    emu_memcpy_calls++;
    check_stream(s, "cudaMemcpyAsync");
    check_copy(dst, src, n, kind, "cudaMemcpyAsync");
    if (n) memcpy(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n) { return cudaMemsetAsync(p, v, n, nullptr); }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    check_stream(s, "cudaMemsetAsync");
    if (!n) return cudaSuccess;
    emu_check_dev(p, n, "cudaMemsetAsync");
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    if (!s) die("cudaStreamCreateWithFlags: NULL");
    if (flags > 1) return cudaErrorInvalidValue;
    *s = (cudaStream_t)malloc(1);
    streams.insert(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || !streams.erase(s)) die("cudaStreamDestroy: not a live stream");
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    check_stream(s, "cudaStreamSynchronize");
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    if (!e) die("cudaEventCreateWithFlags: NULL");
    if (flags & ~3u) return cudaErrorInvalidValue;
    *e = (cudaEvent_t)malloc(1);
    events[*e] = false;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!e || !events.erase(e)) die("cudaEventDestroy: not a live event");
    free(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    check_stream(s, "cudaEventRecord");
    auto it = events.find(e);
    if (it == events.end()) die("cudaEventRecord: not a live event");
    it->second = true;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    check_stream(s, "cudaStreamWaitEvent");
    auto it = events.find(e);
    if (it == events.end()) die("cudaStreamWaitEvent: not a live event");
    if (!it->second) die("cudaStreamWaitEvent: an event never recorded");
    if (flags) return cudaErrorInvalidValue;
    return cudaSuccess;
}
