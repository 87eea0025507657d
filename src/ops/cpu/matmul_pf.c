/* matmul_pf.c — the float matmul's prefill GEMM for F16 and BF16 weights on
 * CPUs with AVX512-BF16 (vdpbf16ps): y_i(M, N_i) = x(M, K) @ W_i^T (+ b_i)
 * for one or several W_i sharing x (q/k/v, gate/up), from ctx->pf_min_m
 * rows (prefill chunks, large batched decode steps; lmc_cpu_pf_ok).
 *
 * - x is rounded to bf16 (nearest even) and packed once per call, on the
 *   pool, into panels of PF_MR rows per K block: bf16 pairs along K (one
 *   32-bit word holds k and k+1), words ordered [pair][row].
 * - The weights stay as loaded (no second copy; resident memory does not
 *   grow): each task owns PF_NC output columns of one W_i (rows of W_i)
 *   and converts them per K block into panels of PF_NR columns in its
 *   scratch (F16 -> f32 -> bf16 rounded to nearest even; BF16 as is), so
 *   every weight is converted once per call whatever the thread count.
 * - An 8 x 32 microkernel (16 zmm accumulators) broadcasts an x word and
 *   runs vdpbf16ps against two 16-word weight vectors: 2 exact bf16
 *   products per lane and instruction, summed in f32; partial sums go
 *   through y (f32) between K blocks. Loops: K blocks, then blocks of
 *   PF_MC rows, then weight panels (in L1), then x panels (in L2).
 * - Each output element's sum depends only on K and the K blocking, never
 *   on M, the thread count or the scheduling: same bits for any split.
 * - Where lmc_cpu_has_amx() (gemm_amx.h) the products run on AMX-BF16
 *   tiles instead: x is packed as rows ([row][pair], each K block's pairs
 *   rounded up to 16 with zeros, rows up to a multiple of 16), which is
 *   AMX's first operand as is, and the weight panels are the second
 *   (lmc_cpu_amx_bf16_rows); the same per-element invariance (every row
 *   through the same tile sequence).
 * The kernels are compiled with target attributes and run only where
 * lmc_cpu_has_bf16() (the context sets pf_min_m to 0 elsewhere), so the
 * rest of the build stays portable. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_amx.h"
#include "ops/cpu/x86_transpose.h"

#include <string.h>

#define PF_MR 8
#define PF_NR 32
#define PF_KC 384 /* elements of K per block (even) */
#define PF_MC 192 /* x rows per L2 block (multiple of PF_MR) */
#define PF_NC 128 /* output columns per task (multiple of PF_NR) */
#define PF_MAX 8  /* matrices per call */

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#define PF_X86 1
#include <immintrin.h>
#define PF_TARGET __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl,avx2,f16c,fma")))
#endif

/* K block length: nkb blocks of kc (even) elements, the last may be shorter. */
static int64_t pf_kc(int64_t K) {
    int64_t nkb = (K + PF_KC - 1) / PF_KC;
    int64_t kc = (K + nkb - 1) / nkb;
    return (kc + 1) & ~(int64_t)1;
}

/* x packed for AMX: K block b at b * Mp16 * kpp words, row r at r * kpp,
 * kpp = the longest block's pairs rounded up to 16, Mp16 = M rounded up
 * to 16 */
static int64_t pf_amx_kpp(int64_t K) { return (pf_kc(K) / 2 + 15) / 16 * 16; }
static size_t pf_amx_words(int64_t M, int64_t K) {
    int64_t kcm = pf_kc(K), nkb = (K + kcm - 1) / kcm;
    return (size_t)((M + 15) / 16 * 16) * (size_t)(nkb * pf_amx_kpp(K));
}

size_t lmc_cpu_pf_xpack_words(int64_t M, int64_t K) {
    size_t w = (size_t)((M + PF_MR - 1) / PF_MR * PF_MR) * (size_t)((K + 1) / 2);
    if (K > 0 && lmc_cpu_has_amx()) w = LMC_MAX(w, pf_amx_words(M, K));
    return w;
}

size_t lmc_cpu_pf_ws_words(int64_t K) { return (size_t)(PF_NC * (pf_kc(K) / 2)); }

/* source element types of a pack */
enum pf_src { PF_F32, PF_F16, PF_BF16 };

static inline uint16_t pf_bf16_of(const void *s, enum pf_src t, int64_t i) {
    switch (t) {
    case PF_F32: return lmc_f32_to_bf16(((const float *)s)[i]);
    case PF_F16: return lmc_f32_to_bf16(lmc_f16_to_f32(((const uint16_t *)s)[i]));
    default: return ((const uint16_t *)s)[i];
    }
}

#ifdef PF_X86
/* 16 elements from s -> 8 pair words */
PF_TARGET static inline __m256i pf_ld8(const void *s, enum pf_src t) {
    switch (t) {
    case PF_F32: return (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps((const float *)s));
    case PF_F16: return (__m256i)_mm512_cvtneps_pbh(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)s)));
    default: return _mm256_loadu_si256((const __m256i *)s);
    }
}

/* Packs R (a multiple of 8) lines of kc elements into d[p * R + i] =
 * pair(k = 2p, 2p + 1); line i at src + i * ld elements of type t; lines
 * i >= n and k >= kc as zeros. Groups of 8 lines x 8 pairs go through an
 * 8 x 8 transpose of words (x86_transpose.h). */
PF_TARGET static void pf_pack(uint32_t *d, int R, const void *src, enum pf_src t, int64_t ld, int64_t n,
                              int64_t kc) {
    const size_t es = t == PF_F32 ? 4 : 2;
    const int64_t kp = (kc + 1) / 2, kf = kc / 2, p8 = kf / 8 * 8;
    for (int g = 0; g < R; g += 8) {
        const char *s = (const char *)src + (size_t)(g * ld) * es;
        int nv = (int)LMC_MAX(0, LMC_MIN(8, n - g)); /* valid lines of the group */
        for (int64_t p = 0; p < p8; p += 8) {
            __m256i r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < nv ? pf_ld8(s + (size_t)(i * ld + 2 * p) * es, t) : _mm256_setzero_si256();
            lmc_x86_tr8x8_epi32_store(r, d + p * R + g, R * 4);
        }
        for (int i = 0; i < 8; i++) {
            const void *line = s + (size_t)(i * ld) * es;
            for (int64_t p = p8; p < kp; p++) {
                uint32_t w = 0;
                if (i < nv) {
                    w = pf_bf16_of(line, t, 2 * p);
                    if (2 * p + 1 < kc) w |= (uint32_t)pf_bf16_of(line, t, 2 * p + 1) << 16;
                }
                d[p * R + g + i] = w;
            }
        }
    }
}

/* c (MR x nr of an 8 x 32 tile, row stride ldc) = (load_c ? c : 0) +
 * a-panel @ b-panel over kp pairs, for a fixed MR = 1..8 rows: a step's
 * few decode rows run only their own accumulators. Each element's sum is
 * the same instruction sequence whatever MR (zero, then one vdpbf16ps per
 * pair in order, then + c), so a row's bits do not depend on how many rows
 * share its panel. */
#define PF_MICRO_ATTR PF_TARGET __attribute__((always_inline))
PF_MICRO_ATTR static inline void pf_micro_mr(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                                             int nr, bool load_c, const int MR) {
    __m512 acc[PF_MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kp; p++, a += PF_MR, b += PF_NR) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b);
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + 16));
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
        }
    }
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nr - 16)) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        float *o = c + (int64_t)r * ldc;
        if (load_c) {
            acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(m0, o));
            acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, acc[r][0]);
        _mm512_mask_storeu_ps(o + 16, m1, acc[r][1]);
    }
}

#define PF_MICRO_N(n)                                                                                              \
    PF_TARGET static void pf_micro_##n(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,     \
                                       int nr, bool load_c) {                                                      \
        pf_micro_mr(kp, a, b, c, ldc, nr, load_c, n);                                                              \
    }
PF_MICRO_N(1) PF_MICRO_N(2) PF_MICRO_N(3) PF_MICRO_N(4) PF_MICRO_N(5) PF_MICRO_N(6) PF_MICRO_N(7) PF_MICRO_N(8)
#undef PF_MICRO_N

/* c (mr x nr of an 8 x 32 tile) as above, mr = 1..8 */
PF_TARGET static void pf_micro(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc, int mr,
                               int nr, bool load_c) {
    switch (mr) {
    case 1: pf_micro_1(kp, a, b, c, ldc, nr, load_c); break;
    case 2: pf_micro_2(kp, a, b, c, ldc, nr, load_c); break;
    case 3: pf_micro_3(kp, a, b, c, ldc, nr, load_c); break;
    case 4: pf_micro_4(kp, a, b, c, ldc, nr, load_c); break;
    case 5: pf_micro_5(kp, a, b, c, ldc, nr, load_c); break;
    case 6: pf_micro_6(kp, a, b, c, ldc, nr, load_c); break;
    case 7: pf_micro_7(kp, a, b, c, ldc, nr, load_c); break;
    default: pf_micro_8(kp, a, b, c, ldc, nr, load_c); break;
    }
}
#endif

struct pf_job {
    struct lmc_cpu_ctx *c;
    int n;
    float *y[PF_MAX];
    const void *w[PF_MAX];
    enum pf_src wt[PF_MAX];
    const float *bias[PF_MAX];
    int64_t N[PF_MAX], tstart[PF_MAX + 1]; /* tasks of W_i: [tstart[i], tstart[i + 1]) */
    const float *x;
    uint32_t *ap; /* x packed: block at pc, panel at row ir: ap + (pc / 2) * Mp + ir * kp (amx: pf_amx_words) */
    int64_t M, Mp, K, kcm, n_apanel_tasks;
    bool amx;
    int64_t Mp16, kpp; /* amx: rows and pairs per block of the x pack */
};

#ifdef PF_X86
/* x rows [16 lo, 16 hi) for AMX, every K block: bf16 pairs are the
 * conversion of the contiguous row (element 2p in the low half), the
 * padding pairs and the rows past M zero (masked loads) */
PF_TARGET static void pf_xpack_amx(const struct pf_job *j, int64_t lo, int64_t hi) {
    for (int64_t pc = 0, b = 0; pc < j->K; pc += j->kcm, b++) {
        int64_t kc = LMC_MIN(j->kcm, j->K - pc);
        for (int64_t r = 16 * lo; r < 16 * hi; r++) {
            uint32_t *d = j->ap + (b * j->Mp16 + r) * j->kpp;
            const float *s = j->x + LMC_MIN(r, j->M - 1) * j->K + pc; /* rows past M: all masked */
            for (int64_t e = 0; e < 2 * j->kpp; e += 16) {
                int64_t v = r < j->M ? kc - e : 0;
                __mmask16 ml = v >= 16 ? (__mmask16)0xffff : v <= 0 ? (__mmask16)0 : (__mmask16)((1u << v) - 1);
                _mm256_storeu_si256((__m256i *)(d + e / 2), (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(ml, s + e)));
            }
        }
    }
}

/* x panels [lo, hi) (of PF_MR rows; of 16 rows for AMX), every K block */
PF_TARGET static void pf_xpack_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct pf_job *j = arg;
    int64_t lo, hi;
    if (j->amx) {
        lmc_cpu_range(j->Mp16 / 16, j->n_apanel_tasks, t, 1, &lo, &hi);
        pf_xpack_amx(j, lo, hi);
        return;
    }
    lmc_cpu_range(j->Mp / PF_MR, j->n_apanel_tasks, t, 1, &lo, &hi);
    for (int64_t pc = 0; pc < j->K; pc += j->kcm) {
        int64_t kc = LMC_MIN(j->kcm, j->K - pc), kp = (kc + 1) / 2;
        for (int64_t ip = lo; ip < hi; ip++) {
            int64_t ir = ip * PF_MR;
            pf_pack(j->ap + (pc / 2) * j->Mp + ir * kp, PF_MR, j->x + ir * j->K + pc, PF_F32, j->K,
                    LMC_MIN(PF_MR, j->M - ir), kc);
        }
    }
}

/* output columns [n0, n1) of W_i for every row */
PF_TARGET static void pf_gemm_task(void *arg, int64_t t, int thread) {
    const struct pf_job *j = arg;
    int i = 0;
    while (t >= j->tstart[i + 1]) i++;
    int64_t N = j->N[i], n0 = (t - j->tstart[i]) * PF_NC, n1 = LMC_MIN(N, n0 + PF_NC), K = j->K;
    const size_t es = j->wt[i] == PF_F32 ? 4 : 2;
    uint32_t *bp = (uint32_t *)j->c->scratch[thread];
    float *y = j->y[i];
    for (int64_t pc = 0; pc < K; pc += j->kcm) {
        int64_t kc = LMC_MIN(j->kcm, K - pc), kp = (kc + 1) / 2;
        for (int64_t jr = n0; jr < n1; jr += PF_NR)
            pf_pack(bp + (jr - n0) * kp, PF_NR, (const char *)j->w[i] + (size_t)(jr * K + pc) * es, j->wt[i], K,
                    LMC_MIN(PF_NR, n1 - jr), kc);
        if (j->amx) {
            const uint32_t *ab = j->ap + (pc / j->kcm) * j->Mp16 * j->kpp;
            for (int64_t ic = 0; ic < j->M; ic += PF_MC)
                lmc_cpu_amx_bf16_rows(kp, ab + ic * j->kpp, j->kpp, LMC_MIN(PF_MC, j->M - ic), bp, n1 - n0,
                                      y + ic * N + n0, N, pc > 0);
            continue;
        }
        const uint32_t *ab = j->ap + (pc / 2) * j->Mp;
        for (int64_t ic = 0; ic < j->M; ic += PF_MC) {
            int64_t mc = LMC_MIN(PF_MC, j->M - ic);
            for (int64_t jr = n0; jr < n1; jr += PF_NR) {
                int nr = (int)LMC_MIN(PF_NR, n1 - jr);
                for (int64_t ir = ic; ir < ic + mc; ir += PF_MR)
                    pf_micro(kp, ab + ir * kp, bp + (jr - n0) * kp, y + ir * N + jr, N,
                             (int)LMC_MIN(PF_MR, j->M - ir), nr, pc > 0);
            }
        }
    }
    if (j->bias[i])
        for (int64_t m = 0; m < j->M; m++)
            for (int64_t r = n0; r < n1; r++) y[m * N + r] += j->bias[i][r];
}
#endif

void lmc_cpu_matmul_pf(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                       const struct lmc_mat *const *w, const float *const *bias) {
    LMC_ASSERT(n >= 1 && M >= 0);
#ifdef PF_X86
    LMC_ASSERT(lmc_cpu_has_bf16());
    for (int i0 = 0; i0 < n; i0 += PF_MAX) {
        struct pf_job j = {.c = c, .n = LMC_MIN(PF_MAX, n - i0), .x = x, .M = M, .K = w[i0]->cols};
        if (M == 0 || j.K == 0) return; /* callers route these elsewhere */
        for (int i = 0; i < j.n; i++) {
            const struct lmc_mat *wi = w[i0 + i];
            LMC_ASSERT(wi->cols == j.K && (wi->dtype == LMC_DTYPE_F16 || wi->dtype == LMC_DTYPE_BF16 ||
                                           wi->dtype == LMC_DTYPE_F32));
            j.y[i] = y[i0 + i];
            j.w[i] = wi->data;
            j.wt[i] = wi->dtype == LMC_DTYPE_F16 ? PF_F16 : wi->dtype == LMC_DTYPE_BF16 ? PF_BF16 : PF_F32;
            j.bias[i] = bias ? bias[i0 + i] : NULL;
            j.N[i] = wi->rows;
            j.tstart[i + 1] = j.tstart[i] + (wi->rows + PF_NC - 1) / PF_NC;
        }
        j.kcm = pf_kc(j.K);
        j.Mp = (M + PF_MR - 1) / PF_MR * PF_MR;
        j.amx = lmc_cpu_has_amx();
        j.Mp16 = (M + 15) / 16 * 16;
        j.kpp = pf_amx_kpp(j.K);
        lmc_cpu_xbuf_reserve(c, lmc_cpu_pf_xpack_words(M, j.K));
        j.ap = (uint32_t *)c->xbuf;
        j.n_apanel_tasks = LMC_MIN((int64_t)c->n_threads, j.amx ? j.Mp16 / 16 : j.Mp / PF_MR);
        lmc_pool_run(c->pool, j.n_apanel_tasks, pf_xpack_task, &j);
        lmc_cpu_scratch_reserve(c, lmc_cpu_pf_ws_words(j.K));
        lmc_pool_run(c->pool, j.tstart[j.n], pf_gemm_task, &j);
    }
#else
    (void)c, (void)y, (void)x, (void)w, (void)bias;
    LMC_ASSERT(!"lmc_cpu_matmul_pf: no AVX512-BF16 kernels in this build");
#endif
}
