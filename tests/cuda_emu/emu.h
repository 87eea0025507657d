/* emu.h — a CPU emulator for the *source* of lmc's CUDA kernels, so that CI
 * (no GPU, no nvcc) checks every kernel's logic against its CPU twin.
 * transform.py rewrites src/ops/cuda/ sources into plain C++ that includes this
 * header in place of the CUDA headers; standins.cc holds its globals and the
 * host-side stand-ins; harness.cc runs the real launchers.
 *
 * Model: a launch runs its blocks one after another; in a block, every GPU
 * thread is a fiber on its own stack (x86-64 only: a six-register context
 * switch, emu_switch in standins.cc). Fibers switch only at barriers:
 * __syncthreads, and the warp barriers inside every warp collective
 * (__shfl*_sync, __ballot_sync, __syncwarp, ldmatrix, mma). Warps and
 * lanes are the linear thread id / 32 and % 32, as on the device. Dynamic
 * shared memory is filled with 0xff (NaN) before each block; reading it
 * unwritten shows up as NaN. A block whose threads all wait at barriers
 * that cannot complete (a collective in divergent code, a thread that
 * returned before __syncthreads) is reported as a deadlock and aborts.
 * Launch configurations are checked: block size a multiple of 32 and
 * <= 1024, grid y/z <= 65535, dynamic shared memory <= 48 KiB unless the
 * kernel opted in with cudaFuncSetAttribute (and <= 227 KiB).
 *
 * Limits:
 *  - threads switch only at barriers, so a race between two barriers (a
 *    missing __syncthreads, a missing volatile) is not detected: within an
 *    interval the threads run in order, each to its next barrier;
 *  - the math is exact IEEE float/double as compiled with
 *    -ffp-contract=off (no FMA unless the source says fmaf) and glibc's
 *    expf/exp2f/erff...: the device's last-ulp differences (FMA contraction
 *    by nvcc, its own libdevice) do not appear, so compare with tolerances;
 *  - mma.sync m16n8k16 bf16 is modelled as exact products summed in double
 *    and rounded once; ldmatrix x4 (.trans), cp.async (synchronous, zero
 *    fill) as the PTX ISA describes them; other inline PTX is refused by
 *    transform.py;
 *  - the CUDA runtime and cuBLASLt are host models of their documented
 *    semantics (cuda_runtime_model.h, cublaslt_model.h: device memory is
 *    recorded host memory, copies and GEMM arguments are checked, the GEMM
 *    runs on the host in double); cub's radix sort is a host stand-in
 *    (standins.cc). matmul.cu and backend_cuda.cu run as they are;
 *  - atomics are plain read-modify-writes (no switch can interleave them).
 */
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(x)
#define __restrict__

/* ---- the CUDA runtime (cuda_runtime_model.h); cuBLASLt is cublaslt_model.h */
#include "cuda_runtime_model.h"

/* ---- cub */
namespace cub {
struct DeviceRadixSort { /* ascending sort of all 64 key bits (standins.cc) */
    static cudaError_t SortKeys(void *tmp, size_t &tmp_bytes, const uint64_t *in, uint64_t *out,
                                int n, int begin_bit = 0, int end_bit = 64, cudaStream_t = nullptr);
};
}

/* ---- vector and 16-bit float types */
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint2 { uint32_t x, y; };
struct uint4 { uint32_t x, y, z, w; };
static inline float2 make_float2(float a, float b) { return {a, b}; }
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct __nv_bfloat16 { uint16_t x; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct __half { uint16_t x; };
struct __half2 { __half x, y; };
static inline uint16_t emu_f2bf(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static inline float emu_bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {emu_f2bf(f)}; }
static inline float __bfloat162float(__nv_bfloat16 h) { return emu_bf2f(h.x); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return {{emu_f2bf(a)}, {emu_f2bf(b)}};
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {emu_bf2f(h.x.x), emu_bf2f(h.y.x)}; }
static inline float __half2float(__half h) {
    int e = (h.x >> 10) & 31, m = h.x & 1023;
    float v = e == 31 ? (m ? NAN : INFINITY) : e ? ldexpf((float)(m | 1024), e - 25) : ldexpf((float)m, -24);
    return h.x >> 15 ? -v : v;
}
static inline __half __float2half_rn(float f);
static inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
static inline __half __float2half_rn(float f) { /* round to nearest even */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t s = (uint16_t)(u >> 16 & 0x8000);
    u &= 0x7fffffff;
    if (u > 0x7f800000) return {(uint16_t)(s | 0x7e00)};
    if (u >= 0x47800000) return {(uint16_t)(s | 0x7c00)};                  /* >= 65536: inf */
    if (u < 0x38800000) return {(uint16_t)(s | (int)rintf(fabsf(f) * 0x1p24f))}; /* subnormal */
    return {(uint16_t)(s | (u + 0xfff + (u >> 13 & 1) - 0x38000000) >> 13)};
}

/* ---- device intrinsics (exact IEEE: compiled with -ffp-contract=off) */
template <typename T> static inline T __ldg(const T *p) { return *p; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }

/* ---- fibers and barriers */
struct Emu {
    int nthreads = 0, cur = 0;       /* threads per block; the running one */
    void *sched_sp = nullptr;        /* the scheduler's saved stack */
    std::vector<void *> sp;          /* each fiber's saved stack */
    std::vector<char *> stacks;
    std::vector<int> done;
    unsigned char *smem = nullptr;   /* dynamic shared memory of the block */
    std::vector<int> cnt, gen;       /* barriers: 0 = block, 1 + w = warp w */
    std::vector<uint64_t> slot;      /* warp exchange: 8 words per thread */
    long progress = 0;               /* barrier arrivals: deadlock detection */
};
extern Emu E;
extern uint3 threadIdx, blockIdx, gridDim, blockDim;
extern long emu_launches;

extern "C" void emu_switch(void **save_sp, void *to_sp);
static inline void emu_bar(int g, int n) {
    int gen = E.gen[g];
    E.progress++;
    if (++E.cnt[g] == n) E.cnt[g] = 0, E.gen[g]++;
    else
        while (E.gen[g] == gen) emu_switch(&E.sp[E.cur], E.sched_sp);
}
static inline int emu_lane() { return E.cur & 31; }
static inline int emu_warp() { return E.cur >> 5; }
static inline void emu_warp_bar() { emu_bar(1 + emu_warp(), 32); }
static inline void __syncthreads() { emu_bar(0, E.nthreads); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_bar(); }
static inline uint64_t *emu_slot(int lane) { return &E.slot[(size_t)((emu_warp() << 5) + (lane & 31)) * 8]; }

/* ---- warp collectives (full-warp masks: every lane must take part) */
template <typename T> static inline T __shfl_sync(unsigned, T v, int src) {
    static_assert(sizeof(T) <= 64, "shuffle of a type over 64 bytes");
    memcpy(emu_slot(emu_lane()), &v, sizeof(T));
    emu_warp_bar();
    T r;
    memcpy(&r, emu_slot(src), sizeof(T));
    emu_warp_bar();
    return r;
}
template <typename T> static inline T __shfl_xor_sync(unsigned m, T v, int x) {
    return __shfl_sync(m, v, emu_lane() ^ x);
}
template <typename T> static inline T __shfl_down_sync(unsigned m, T v, unsigned d) {
    int s = emu_lane() + (int)d;
    return __shfl_sync(m, v, s < 32 ? s : emu_lane());
}
template <typename T> static inline T __shfl_up_sync(unsigned m, T v, unsigned d) {
    int s = emu_lane() - (int)d;
    return __shfl_sync(m, v, s >= 0 ? s : emu_lane());
}
static inline unsigned __ballot_sync(unsigned, int p) {
    *emu_slot(emu_lane()) = p != 0;
    emu_warp_bar();
    unsigned r = 0;
    for (int l = 0; l < 32; l++) r |= (unsigned)*emu_slot(l) << l;
    emu_warp_bar();
    return r;
}
template <typename T> static inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> static inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <typename T> static inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T> static inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <typename T> static inline T atomicCAS(T *p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }

/* ---- shared-window addresses, and the PTX that transform.py maps here */
static inline size_t __cvta_generic_to_shared(const void *p) {
    size_t off = (size_t)((const unsigned char *)p - E.smem);
    if (off >> 31) { fprintf(stderr, "emu: shared address outside dynamic shared memory\n"); abort(); }
    return off;
}
static inline unsigned char *emu_shared_ptr(uint32_t a) { return E.smem + a; }

/* ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the row
 * address of row l & 7 of matrix l >> 3; register m of lane l holds matrix
 * m's elements (row l/4, cols 2(l%4), +1), or transposed (rows 2(l%4), +1,
 * col l/4). */
static inline void emu_ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                   uint32_t addr, bool trans) {
    const int lane = emu_lane(), g = lane >> 2, t = lane & 3;
    uint32_t *r[4] = {&r0, &r1, &r2, &r3};
    *emu_slot(lane) = addr;
    emu_warp_bar();
    for (int m = 0; m < 4; m++) {
        auto row = [&](int i) { return (const uint16_t *)emu_shared_ptr((uint32_t)*emu_slot(m * 8 + i)); };
        uint16_t lo = trans ? row(2 * t)[g] : row(g)[2 * t];
        uint16_t hi = trans ? row(2 * t + 1)[g] : row(g)[2 * t + 1];
        *r[m] = (uint32_t)lo | (uint32_t)hi << 16;
    }
    emu_warp_bar();
}

/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, D = A B + C, in
 * place on c0..c3, fragments as in the PTX ISA (g = lane/4, t = lane%4):
 * A a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..);
 * B b0 (k 2t.., n g), b1 (k 2t+8.., n g); C c0,c1 (g, 2t, 2t+1), c2,c3
 * (g+8, ...). Products are exact; the sum is taken in double. */
static inline void emu_mma_m16n8k16_bf16(float &c0, float &c1, float &c2, float &c3, uint32_t a0,
                                         uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    const int lane = emu_lane(), g = lane >> 2, t = lane & 3;
    uint32_t *s = (uint32_t *)emu_slot(lane);
    s[0] = a0, s[1] = a1, s[2] = a2, s[3] = a3, s[4] = b0, s[5] = b1;
    emu_warp_bar();
    auto half = [](uint32_t w, int k) { return (double)emu_bf2f((uint16_t)(k & 1 ? w >> 16 : w)); };
    auto A = [&](int row, int k) {
        return half(((uint32_t *)emu_slot((row & 7) * 4 + (k & 7) / 2))[row / 8 + 2 * (k / 8)], k);
    };
    auto B = [&](int k, int n) { return half(((uint32_t *)emu_slot(n * 4 + (k & 7) / 2))[4 + k / 8], k); };
    float *c[4] = {&c0, &c1, &c2, &c3}, d[4];
    for (int e = 0; e < 4; e++) {
        int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
        double acc = *c[e];
        for (int k = 0; k < 16; k++) acc += A(row, k) * B(k, col);
        d[e] = (float)acc;
    }
    emu_warp_bar();
    for (int e = 0; e < 4; e++) *c[e] = d[e];
}

/* cp.async: `size` bytes into shared memory, of which `src_bytes` are
 * read and the rest zero-filled; done at once (a valid schedule). */
static inline void emu_cp_async(uint32_t dst, const void *src, int size, int src_bytes) {
    memset(emu_shared_ptr(dst), 0, (size_t)size);
    if (src_bytes > 0) memcpy(emu_shared_ptr(dst), src, (size_t)src_bytes);
}

/* ---- launches: K<<<g, b, smem, stream>>>(args) is rewritten to
 * emu_cfg(g, b, smem, stream).go(K, args), or for a kernel template whose
 * arguments are deduced, to .go([](auto... p) { K(p...); }, args) */
int emu_smem_limit(const void *kernel); /* 48 KiB, or the kernel's opt-in */
void emu_run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &body);
template <typename... P> static inline const void *emu_kernel_id(void (*k)(P...)) { return (const void *)k; }
template <typename F> static inline const void *emu_kernel_id(F) { return nullptr; }
struct emu_cfg {
    dim3 g, b;
    size_t smem;
    emu_cfg(dim3 g_, dim3 b_, size_t s = 0, cudaStream_t = nullptr) : g(g_), b(b_), smem(s) {}
    template <typename K, typename... A> void go(K k, A... a) {
        int limit = emu_smem_limit(emu_kernel_id(k));
        if (smem > (size_t)limit) {
            fprintf(stderr, "emu: %zu bytes of dynamic shared memory, over the kernel's limit %d\n", smem, limit);
            abort();
        }
        emu_run_grid(g, b, smem, [=]() { k(a...); });
    }
};
