/* matmul_dr.c — the batch-invariant GEMM for a serving step's generated
 * rows (decode tokens, drafts under verification, the head's logits rows)
 * on F16/BF16 weights with AVX512-BF16: y_i(M, N_i) = x(M, K) @ W_i^T
 * (+ b_i) for one or several W_i sharing x, any M >= 1.
 *
 * Each output element is computed by one fixed instruction sequence that
 * depends only on K: x's row and W's row are rounded to bf16 (nearest
 * even; F16 through f32), then one 16-lane f32 accumulator takes
 * vdpbf16ps over 32-element steps along K in order (a masked last step for
 * K % 32), then its 16 lanes are added in a fixed tree (lanes j + 8, then
 * j + 4, j + 2, j + 1: dr_reduce4). So a row's bits do not depend on M,
 * its place in the batch, the tile it lands in, the thread count or the
 * weight's path (converted in registers or through a bf16 panel): a
 * request decodes the same bits alone or among 63 others. (The prefill
 * GEMM, matmul_pf.c, sums one pair per lane along N and gives other bits;
 * the scheduler keeps the two kinds of rows apart.)
 *
 * Speed: tiles of DR_MR rows x DR_NR columns (24 accumulators). Up to
 * DR_MR rows, F16 weights are converted in registers as they stream (each
 * weight once, no copy): decode at the read bandwidth. Above, each task
 * converts DR_NB columns at a time into a bf16 panel in its scratch
 * (L2), read once per block of DR_MR rows: the weights are read from
 * memory once per step, and the products run at bf16 rate (2 per lane
 * and instruction, twice the f32 FMA kernels').
 * The kernels carry target attributes and run only where
 * lmc_cpu_has_bf16(); elsewhere lmc_cpu_matmul_dr runs the f32 family
 * (matmul_drf.c: AVX2 + FMA + F16C), with its own bits and the same
 * invariance. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_bf16.h"

#include <string.h>

#define DR_KV 32  /* bf16 elements per step */
#define DR_MR 6   /* rows per tile */
#define DR_NR 4   /* columns per tile */
#define DR_NB 16  /* columns per bf16 panel (multiple of DR_NR) */
#define DR_NC 64  /* columns per task (multiple of DR_NB) */
#define DR_PF_NEAR 6144        /* tile bytes up to which W is prefetched 2 tiles ahead */
#define DR_PF_FAR (24 * 1024) /* longer tiles: this far ahead, T2 */

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#define DR_X86 1
#include <immintrin.h>
#define DR_TARGET __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl,avx2,f16c,fma")))
#define DR_INLINE DR_TARGET __attribute__((always_inline)) static inline
#endif

static int64_t dr_kp(int64_t K) { return (K + DR_KV - 1) / DR_KV * DR_KV; }

size_t lmc_cpu_dr_xpack_words(int64_t M, int64_t K) { return (size_t)M * (size_t)(dr_kp(K) / 2); }

size_t lmc_cpu_dr_ws_words(int64_t K) { return (size_t)DR_NB * (size_t)(dr_kp(K) / 2); }

#ifdef DR_X86
/* 32 elements at s (valid under mask: others 0) as bf16, nearest even */
DR_INLINE __m512bh dr_ld_f32(const float *s, __mmask32 m) {
    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)m, s), hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), s + 16);
    return _mm512_cvtne2ps_pbh(hi, lo);
}
DR_INLINE __m512bh dr_ld_f16(const uint16_t *s, __mmask32 m) {
    __m512 lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)m, s));
    __m512 hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)(m >> 16), s + 16));
    return _mm512_cvtne2ps_pbh(hi, lo);
}
DR_INLINE __m512bh dr_ld_bf16(const uint16_t *s, __mmask32 m) {
    return (__m512bh)_mm512_maskz_loadu_epi16(m, s);
}

/* The four 16-lane sums of a, b, c, d in one fixed tree per element. */
DR_INLINE __m128 dr_reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 v = _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(1, 0, 3, 2)));
    __m512 w = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), w));
}

/* out[r * DR_NR + c] = x row r . column c for r < MR, c < DR_NR; x rows
 * in bf16 at xb + r * ldx (zero past K up to the step), columns at wc[c]
 * (F16 when f16, else bf16), K elements each. */
DR_INLINE void dr_tile(const uint16_t *xb, int64_t ldx, const uint16_t *const *wc, bool f16, int64_t K, float *out,
                       const char *pf, int pfh, const int MR) {
    __m512 acc[DR_MR][DR_NR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < DR_NR; c++) acc[r][c] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += DR_KV) {
        __mmask32 m = K - k >= DR_KV ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - k)) - 1);
        __m512bh wv[DR_NR];
        if (pfh == 1)
            for (int l = 0; l < DR_NR; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
        else if (pfh == 2)
            for (int l = 0; l < DR_NR; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T2);
        pf += 64 * DR_NR;
#pragma GCC unroll 4
        for (int c = 0; c < DR_NR; c++) wv[c] = f16 ? dr_ld_f16(wc[c] + k, m) : dr_ld_bf16(wc[c] + k, m);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(xb + r * ldx + k));
#pragma GCC unroll 4
            for (int c = 0; c < DR_NR; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv, wv[c]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) _mm_storeu_ps(out + r * DR_NR, dr_reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
}

#define DR_TILE_N(n, f)                                                                                          \
    DR_TARGET static void dr_tile_##n##_##f(const uint16_t *xb, int64_t ldx, const uint16_t *const *wc, int64_t K, \
                                            float *out, const char *pf, int pfh) {                               \
        dr_tile(xb, ldx, wc, f, K, out, pf, pfh, n);                                                             \
    }
DR_TILE_N(1, 0) DR_TILE_N(2, 0) DR_TILE_N(3, 0) DR_TILE_N(4, 0) DR_TILE_N(5, 0) DR_TILE_N(6, 0)
DR_TILE_N(1, 1) DR_TILE_N(2, 1) DR_TILE_N(3, 1) DR_TILE_N(4, 1) DR_TILE_N(5, 1) DR_TILE_N(6, 1)
#undef DR_TILE_N
typedef void (*dr_tile_fn)(const uint16_t *, int64_t, const uint16_t *const *, int64_t, float *, const char *, int);
static const dr_tile_fn dr_tiles[2][DR_MR] = {
    {dr_tile_1_0, dr_tile_2_0, dr_tile_3_0, dr_tile_4_0, dr_tile_5_0, dr_tile_6_0},
    {dr_tile_1_1, dr_tile_2_1, dr_tile_3_1, dr_tile_4_1, dr_tile_5_1, dr_tile_6_1},
};
#endif

struct dr_job {
    struct lmc_cpu_dr_head h; /* the weights, tasks of DR_NC columns */
    struct lmc_cpu_ctx *c;
    const uint16_t *xb; /* x in bf16, rows of kp */
    int64_t M, K, kp;
};

#ifdef DR_X86
/* columns [n0, n1) of W_i, every row */
DR_TARGET static void dr_task(void *arg, int64_t t, int thread) {
    const struct dr_job *j = arg;
    int64_t n0;
    const int i = lmc_cpu_dr_head_task(&j->h, t, DR_NC, &n0);
    const int64_t N = j->h.N[i], K = j->K, kp = j->kp, M = j->M, n1 = LMC_MIN(N, n0 + DR_NC);
    const bool panel = j->h.f16[i] && M > DR_MR; /* convert once, read per block of rows */
    uint16_t *bp = (uint16_t *)j->c->scratch[thread];
    float *y = j->h.y[i];
    float out[DR_MR * DR_NR];
    const int64_t NB = K > 1024 ? DR_NB / 2 : DR_NB; /* long rows: a panel of 8 keeps tile + x rows in L1 */
    for (int64_t nb = n0; nb < n1; nb += NB) {
        const int64_t nbe = LMC_MIN(n1, nb + NB);
        if (panel)
            for (int64_t n = nb; n < nbe; n++) {
                const uint16_t *s = j->h.w[i] + n * K;
                uint16_t *d = bp + (n - nb) * kp;
                for (int64_t k = 0; k < kp; k += DR_KV) {
                    __mmask32 m = K - k >= DR_KV ? (__mmask32)0xffffffffu
                                  : K > k      ? (__mmask32)((1u << (K - k)) - 1)
                                               : 0;
                    _mm512_storeu_si512((void *)(d + k), (__m512i)dr_ld_f16(s + k, m));
                }
            }
        /* blocks of equal rows (8 = 4 + 4, not 6 + 2): the fewest tiles of at most DR_MR */
        const int64_t nrb = (M + DR_MR - 1) / DR_MR, rb = (M + nrb - 1) / nrb;
        for (int64_t r0 = 0; r0 < M; r0 += rb) {
            const int mr = (int)LMC_MIN(rb, M - r0);
            const dr_tile_fn tile = dr_tiles[j->h.f16[i] && !panel][mr - 1];
            for (int64_t c0 = nb; c0 < nbe; c0 += DR_NR) {
                const int nr = (int)LMC_MIN(DR_NR, nbe - c0);
                const uint16_t *wc[DR_NR];
                for (int c = 0; c < DR_NR; c++) {
                    int64_t n = c0 + LMC_MIN(c, nr - 1); /* a short tile repeats its last column */
                    wc[c] = panel ? bp + (n - nb) * kp : j->h.w[i] + n * K;
                }
                /* streaming W (no panel): a full tile reads 4 contiguous rows
                 * at once, which the hardware prefetcher follows badly (as
                 * matmul_smallm.c measured): prefetch 2 tiles ahead where a
                 * tile is short, DR_PF_FAR bytes ahead (T2) otherwise */
                const bool near = 4 * K * 2 <= DR_PF_NEAR;
                int pfh = panel || nr < DR_NR ? 0 : near ? 1 : 2;
                const char *pf = (const char *)wc[0] + (near ? 8 * K * 2 : DR_PF_FAR);
                if (panel) { /* the first block of rows fetches the next panel's W as it goes */
                    pfh = r0 == 0 && nbe + NB <= N ? 2 : 0;
                    pf = (const char *)(j->h.w[i] + (nb + NB) * K + (c0 - nb) * K);
                }
                tile(j->xb + r0 * kp, kp, wc, K, out, pf, pfh);
                for (int r = 0; r < mr; r++)
                    for (int c = 0; c < nr; c++) {
                        float v = out[r * DR_NR + c];
                        if (j->h.bias[i]) v += j->h.bias[i][c0 + c];
                        y[(r0 + r) * N + c0 + c] = v;
                    }
            }
        }
    }
}
#endif

#ifdef DR_X86
/* x (M, K) as bf16 rows of kp (zero padded) into xb; a target function of
 * its own, so that the caller compiles without AVX-512 enabled (-march of
 * a CPU without it, e.g. Zen 3). */
DR_TARGET static void dr_pack_x(uint16_t *xb, const float *x, int64_t M, int64_t K, int64_t kp) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < kp; k += DR_KV) {
            __mmask32 mk = K - k >= DR_KV ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - k)) - 1);
            _mm512_storeu_si512((void *)(xb + m * kp + k), (__m512i)dr_ld_f32(x + m * K + k, mk));
        }
}
#endif

void lmc_cpu_matmul_dr(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                       const struct lmc_mat *const *w, const float *const *bias) {
    LMC_ASSERT(n >= 1 && M >= 0);
    if (!c->has_bf16) { /* the f32 family (AVX2 kernels): other bits, the same invariance */
        lmc_cpu_matmul_drf(c, n, y, x, M, w, bias);
        return;
    }
#ifdef DR_X86
    const int64_t K = w[0]->cols;
    if (M == 0 || K == 0) return; /* callers route these elsewhere */
    const int64_t kp = dr_kp(K);
    lmc_cpu_xbuf_reserve(c, lmc_cpu_dr_xpack_words(M, K));
    uint16_t *xb = (uint16_t *)c->xbuf;
    dr_pack_x(xb, x, M, K, kp);
    lmc_cpu_scratch_reserve(c, lmc_cpu_dr_ws_words(K));
    for (int i0 = 0; i0 < n; i0 += LMC_CPU_DR_MAX) {
        struct dr_job j = {.c = c, .xb = xb, .M = M, .K = K, .kp = kp};
        const int64_t nt = lmc_cpu_dr_head_fill(&j.h, n, i0, y, w, bias, K, DR_NC);
        if (nt > 0) lmc_pool_run(c->pool, nt, dr_task, &j);
    }
#else
    (void)c, (void)y, (void)x, (void)w, (void)bias;
    LMC_ASSERT(!"lmc_cpu_matmul_dr: no AVX512-BF16 kernels in this build"); /* lmc_cpu_has_bf16() is false there */
#endif
}
