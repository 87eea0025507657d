/* matmul_drf.c — the decode-row GEMM's f32 family, for CPUs without
 * AVX512-BF16 (AVX2 + FMA + F16C kernels; a portable scalar twin with the
 * same bits elsewhere): y_i(M, N_i) = x(M, K) @ W_i^T (+ b_i) for one or
 * several F16/BF16 W_i sharing x, any M >= 1. lmc_cpu_matmul_dr
 * (matmul_dr.c) runs it where lmc_cpu_has_bf16() is false.
 *
 * Each output element is computed by one fixed sequence that depends only
 * on K: eight f32 lanes, lane j takes fma(x[k + j], w[k + j], lane) for
 * k = 0, 8, 16, ... in order (x and W zero past K up to a multiple of 8;
 * W converted to f32 exactly: F16 by F16C, BF16 by a shift), then
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then + bias. So a
 * row's bits do not depend on M, its place in the batch, the tile or K
 * chunk it lands in, or the thread count: a request decodes the same bits
 * alone or among 63 others (the serving route sends generated rows and
 * the head here on these CPUs; prompt rows go to our AVX2 GEMM,
 * gemm_f32.c, also batch-invariant; without it, every row here).
 *
 * Speed: tiles of DRF_MR rows x DRF_NR columns (12 ymm accumulators, the
 * 3 converted weight vectors and one x vector: the 16 registers). A task
 * owns DRF_NC columns of one W_i; per panel of DRF_NB columns and chunk of
 * DRF_KC along K it runs every block of rows, so the panel's weights
 * (F16: 18 KB) and a block's x rows (12 KB) stay in L1 while the other
 * streams from L2, and W is read from memory once per step: the first
 * block of rows prefetches the next panel, so those reads run under this
 * panel's FMAs (bench_drf, one step of the 125M shapes on cold weights,
 * loaded machine: M = 8 0.73x, M = 64 0.85x the CPU time without). Chunks keep
 * the 8-lane accumulators in the task's scratch between them (stored and
 * reloaded exactly: the same bits as one pass). */
#include "ops/cpu/ops_cpu.h"

#include <string.h>

#define DRF_KV 8   /* f32 lanes per step */
#define DRF_MR 4   /* rows per tile */
#define DRF_NR 3   /* columns per tile */
#define DRF_NB 12  /* columns per panel (multiple of DRF_NR) */
#define DRF_NC 48  /* columns per task (multiple of DRF_NB) */
#define DRF_KC 768 /* K per chunk (multiple of DRF_KV) */

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9))
#define DRF_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define DRF_TARGET __attribute__((target("avx2,fma,f16c")))
#define DRF_INLINE DRF_TARGET __attribute__((always_inline)) static inline
#endif

static int64_t drf_kp(int64_t K) { return (K + DRF_KV - 1) / DRF_KV * DRF_KV; }

size_t lmc_cpu_drf_xpack_words(int64_t M, int64_t K) { return (size_t)M * (size_t)drf_kp(K); }

/* the accumulators of a panel's rows for chunked K */
size_t lmc_cpu_drf_ws_words(int64_t M, int64_t K) {
    return K > DRF_KC ? (size_t)(2 * M + DRF_MR) * DRF_NB * DRF_KV : 0; /* row blocks round M up by < M / 4 + 1 */
}

static inline float drf_w(const uint16_t *w, bool f16, int64_t i) {
    return f16 ? lmc_f16_to_f32(w[i]) : lmc_bf16_to_f32(w[i]);
}

/* The portable twin: one element (x and W of K elements; zero past K). */
static float drf_dot_ref(const float *x, const uint16_t *w, bool f16, int64_t K) {
    float l[DRF_KV] = {0};
    for (int64_t k = 0; k < K; k += DRF_KV)
        for (int j = 0; j < DRF_KV; j++)
            l[j] = k + j < K ? fmaf(x[k + j], drf_w(w, f16, k + j), l[j]) : fmaf(0.0f, 0.0f, l[j]);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

void lmc_cpu_matmul_drf_ref(float *y, const float *x, int64_t M, const struct lmc_mat *w, const float *bias) {
    LMC_ASSERT(w->dtype == LMC_DTYPE_F16 || w->dtype == LMC_DTYPE_BF16);
    const int64_t K = w->cols, N = w->rows;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float v = drf_dot_ref(x + m * K, (const uint16_t *)w->data + n * K, w->dtype == LMC_DTYPE_F16, K);
            y[m * N + n] = bias ? v + bias[n] : v;
        }
}

bool lmc_cpu_drf_avx2(void) {
#ifdef DRF_X86
    unsigned a, b, c, d; /* clang's __builtin_cpu_supports lacks "f16c": CPUID.1:ECX bit 29 */
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#else
    return false;
#endif
}

#ifdef DRF_X86

DRF_INLINE __m256 drf_ld(const uint16_t *s, bool f16) {
    __m128i h = _mm_loadu_si128((const __m128i *)s);
    return f16 ? _mm256_cvtph_ps(h) : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* the four 8-lane sums of a, b, c, d, each ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) */
DRF_INLINE __m128 drf_reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Steps [k0, k1) of a tile: MR x rows at xf + r * ldx (zero padded),
 * DRF_NR columns at wc[c] (K elements each; k1 == K may end in a partial
 * step); pfo != 0: prefetch the columns at wc[c] + pfo over the same steps. mode & 1: start from the accumulators at acc (else 0); mode & 2:
 * store them there (else reduce into out[r * DRF_NR + c]). */
DRF_INLINE void drf_tile(const float *xf, int64_t ldx, const uint16_t *const *wc, bool f16, int64_t k0, int64_t k1,
                         int64_t K, float *acc_io, int mode, float *out, const int MR, int64_t pfo) {
    __m256 acc[DRF_MR][DRF_NR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int c = 0; c < DRF_NR; c++)
            acc[r][c] = mode & 1 ? _mm256_loadu_ps(acc_io + (r * DRF_NR + c) * DRF_KV) : _mm256_setzero_ps();
    int64_t k = k0;
    /* with a prefetch: a 64-byte line of each column per 4 steps, the
     * 4 steps unrolled (no branch per step); then single steps */
    if (pfo)
        for (; k + 4 * DRF_KV <= k1; k += 4 * DRF_KV) {
#pragma GCC unroll 3
            for (int c = 0; c < DRF_NR; c++) _mm_prefetch((const char *)(wc[c] + k + pfo), _MM_HINT_T0);
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                const int64_t ku = k + u * DRF_KV;
                __m256 wv[DRF_NR];
#pragma GCC unroll 3
                for (int c = 0; c < DRF_NR; c++) wv[c] = drf_ld(wc[c] + ku, f16);
#pragma GCC unroll 4
                for (int r = 0; r < MR; r++) {
                    __m256 xv = _mm256_loadu_ps(xf + r * ldx + ku);
                    __asm__("" : "+x"(xv));
#pragma GCC unroll 3
                    for (int c = 0; c < DRF_NR; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
                }
            }
        }
    for (; k + DRF_KV <= k1; k += DRF_KV) {
        __m256 wv[DRF_NR];
#pragma GCC unroll 3
        for (int c = 0; c < DRF_NR; c++) wv[c] = drf_ld(wc[c] + k, f16);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            __m256 xv = _mm256_loadu_ps(xf + r * ldx + k);
            __asm__("" : "+x"(xv)); /* one load per row, not one folded into each FMA (loads bound Zen 3 otherwise) */
#pragma GCC unroll 3
            for (int c = 0; c < DRF_NR; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (k < k1) { /* K's last, partial step: W through a zero-padded copy */
        uint16_t t[DRF_NR][DRF_KV];
        memset(t, 0, sizeof t);
        __m256 wv[DRF_NR];
        for (int c = 0; c < DRF_NR; c++) {
            memcpy(t[c], wc[c] + k, (size_t)(K - k) * sizeof(uint16_t));
            wv[c] = drf_ld(t[c], f16);
        }
        for (int r = 0; r < MR; r++) {
            __m256 xv = _mm256_loadu_ps(xf + r * ldx + k);
            for (int c = 0; c < DRF_NR; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (mode & 2) {
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
            for (int c = 0; c < DRF_NR; c++) _mm256_storeu_ps(acc_io + (r * DRF_NR + c) * DRF_KV, acc[r][c]);
        return;
    }
    __m256 *a = &acc[0][0], z = _mm256_setzero_ps();
    const int n = MR * DRF_NR;
#pragma GCC unroll 3
    for (int i = 0; i < n; i += 4)
        _mm_storeu_ps(out + i, drf_reduce4(a[i], i + 1 < n ? a[i + 1] : z, i + 2 < n ? a[i + 2] : z,
                                           i + 3 < n ? a[i + 3] : z));
}

#define DRF_TILE_N(n, f)                                                                                          \
    DRF_TARGET static void drf_tile_##n##_##f(const float *xf, int64_t ldx, const uint16_t *const *wc, int64_t k0, \
                                              int64_t k1, int64_t K, float *acc_io, int mode, float *out,         \
                                              int64_t pfo) {                                                      \
        drf_tile(xf, ldx, wc, f, k0, k1, K, acc_io, mode, out, n, pfo);                                           \
    }
DRF_TILE_N(1, 0) DRF_TILE_N(2, 0) DRF_TILE_N(3, 0) DRF_TILE_N(4, 0)
DRF_TILE_N(1, 1) DRF_TILE_N(2, 1) DRF_TILE_N(3, 1) DRF_TILE_N(4, 1)
#undef DRF_TILE_N
typedef void (*drf_tile_fn)(const float *, int64_t, const uint16_t *const *, int64_t, int64_t, int64_t, float *, int,
                            float *, int64_t);
static const drf_tile_fn drf_tiles[2][DRF_MR] = {
    {drf_tile_1_0, drf_tile_2_0, drf_tile_3_0, drf_tile_4_0},
    {drf_tile_1_1, drf_tile_2_1, drf_tile_3_1, drf_tile_4_1},
};
#endif

struct drf_job {
    struct lmc_cpu_dr_head h; /* the weights, tasks of DRF_NC columns */
    struct lmc_cpu_ctx *c;
    bool avx2;
    const float *xf; /* x zero padded, rows of kp */
    int64_t M, K, kp;
};

/* columns [n0, n1) of W_i, every row */
static void drf_task(void *arg, int64_t t, int thread) {
    const struct drf_job *j = arg;
    int64_t n0;
    const int i = lmc_cpu_dr_head_task(&j->h, t, DRF_NC, &n0);
    const int64_t N = j->h.N[i], K = j->K, kp = j->kp, M = j->M, n1 = LMC_MIN(N, n0 + DRF_NC);
    const uint16_t *w = j->h.w[i];
    const float *bias = j->h.bias[i];
    float *y = j->h.y[i];
    if (!j->avx2) {
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = n0; n < n1; n++) {
                float v = drf_dot_ref(j->xf + m * kp, w + n * K, j->h.f16[i], K);
                y[m * N + n] = bias ? v + bias[n] : v;
            }
        return;
    }
#ifdef DRF_X86
    float *accs = j->c->scratch[thread], out[16];
    /* blocks of equal rows (5 = 3 + 2, not 4 + 1): the fewest tiles of at most DRF_MR */
    const int64_t nrb = (M + DRF_MR - 1) / DRF_MR, rb = (M + nrb - 1) / nrb;
    for (int64_t nb = n0; nb < n1; nb += DRF_NB) {
        const int64_t nbe = LMC_MIN(n1, nb + DRF_NB);
        for (int64_t k0 = 0; k0 < K; k0 += DRF_KC) {
            const int64_t k1 = LMC_MIN(K, k0 + DRF_KC);
            const int mode = (k0 > 0 ? 1 : 0) | (k1 < K ? 2 : 0);
            for (int64_t r0 = 0; r0 < M; r0 += rb) {
                const int mr = (int)LMC_MIN(rb, M - r0);
                const drf_tile_fn tile = drf_tiles[j->h.f16[i]][mr - 1];
                for (int64_t c0 = nb; c0 < nbe; c0 += DRF_NR) {
                    const int nr = (int)LMC_MIN(DRF_NR, nbe - c0);
                    const uint16_t *wc[DRF_NR];
                    for (int c = 0; c < DRF_NR; c++) /* a short tile repeats its last column */
                        wc[c] = w + (c0 + LMC_MIN(c, nr - 1)) * K;
                    float *acc = mode ? accs + (r0 * DRF_NB + (c0 - nb) * rb) * DRF_KV : NULL;
                    /* the first row block prefetches the next panel's weights (their
                     * reads from memory under this panel's FMAs) */
                    const int64_t pfo = r0 == 0 && nb + 2 * DRF_NB <= N ? DRF_NB * K : 0;
                    tile(j->xf + r0 * kp, kp, wc, k0, k1, K, acc, mode, out, pfo);
                    if (mode & 2) continue;
                    for (int r = 0; r < mr; r++)
                        for (int c = 0; c < nr; c++) {
                            float v = out[r * DRF_NR + c];
                            y[(r0 + r) * N + c0 + c] = bias ? v + bias[c0 + c] : v;
                        }
                }
            }
        }
    }
#endif
}

void lmc_cpu_matmul_drf(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                        const struct lmc_mat *const *w, const float *const *bias) {
    LMC_ASSERT(n >= 1 && M >= 0);
    const int64_t K = w[0]->cols;
    if (M == 0 || K == 0) return; /* callers route these elsewhere */
    const int64_t kp = drf_kp(K);
    lmc_cpu_xbuf_reserve(c, lmc_cpu_drf_xpack_words(M, K));
    float *xf = c->xbuf;
    for (int64_t m = 0; m < M; m++) {
        memcpy(xf + m * kp, x + m * K, (size_t)K * sizeof *xf);
        memset(xf + m * kp + K, 0, (size_t)(kp - K) * sizeof *xf);
    }
    lmc_cpu_scratch_reserve(c, lmc_cpu_drf_ws_words(M, K));
    const bool avx2 = c->drf_avx2;
    for (int i0 = 0; i0 < n; i0 += LMC_CPU_DR_MAX) {
        struct drf_job j = {.c = c, .avx2 = avx2, .xf = xf, .M = M, .K = K, .kp = kp};
        const int64_t nt = lmc_cpu_dr_head_fill(&j.h, n, i0, y, w, bias, K, DRF_NC);
        if (nt > 0) lmc_pool_run(c->pool, nt, drf_task, &j);
    }
}
