/* ops_cpu.h — internals shared by the CPU backend's op files: the backend
 * context (thread pool, per-thread scratch), range splitting, and small
 * SIMD helpers (horizontal sums, a vector exp accurate to a few ulp). */
#ifndef LMC_OPS_CPU_H
#define LMC_OPS_CPU_H

#include "core/core.h"
#include "core/threadpool.h"
#include "ops/backend.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* Per-thread scratch buffers grow on demand; the caller reserves before a
 * parallel run (lmc_cpu_scratch_reserve), tasks use scratch[thread]. */
struct lmc_cpu_ctx {
    struct lmc_pool *pool;
    int n_threads;
    float **scratch;      /* [n_threads], 64-byte aligned */
    size_t *scratch_cap;  /* floats */
    int64_t gemm_min_m;   /* matmul: M from which the large-M GEMM is used (gemm_f32.c with AVX2, else OpenBLAS) */
    int64_t gemm_min_m16; /* the same for F16/BF16 weights (lmc_cpu_gemm_from) */
    bool gemm_blas;       /* matmul: the large-M path through OpenBLAS sgemm even with AVX2 (A/B benches; off) */
    int64_t mm_unit_bytes; /* matmul M < 4: weight bytes per claimed unit (tests lower it) */
    int64_t mm_small_max; /* matmul: M = 2..mm_small_max through the small-M kernel (matmul_smallm.c) */
    int64_t pf_min_m;     /* matmul: F16/BF16 weights from this M through the bf16 prefill GEMM
                           * (matmul_pf.c); 0: off (always off without AVX512-BF16) */
    /* serving (lmc_backend_cpu_route_rows): F16/BF16 calls of route_m rows
     * send rows [0, route_pf) (prompt) through the bf16 prefill GEMM (our
     * AVX2 GEMM, gemm_f32.c, without AVX512-BF16) and the rest (generated)
     * through the batch-invariant decode-row GEMM (matmul_dr.c); route_head's
     * weight takes every row of any call through the latter (route_m 0: no
     * route). With neither, route_pf is 0: every row takes the decode-row
     * GEMM (matmul_drf.c's portable twin) */
    int64_t route_m, route_pf;
    bool has_bf16;        /* lmc_cpu_has_bf16(), asked once (CPUID is slow in a VM) */
    bool drf_avx2;        /* lmc_cpu_drf_avx2(), likewise */
    const void *route_head;
    _Atomic uint64_t *mm_claim; /* matmul M < 4: a claim word per thread, LMC_CPU_CLAIM_STRIDE apart */
    float *xbuf;          /* shared staging of an op's input, written by the caller */
    size_t xbuf_cap;      /* floats */
    float *ybuf;          /* the fused matmuls' second product on their composed route */
    size_t ybuf_cap;      /* floats */
    struct lmc_qctx *qctx; /* quantized matmul: instruction-set table (quant/qmatmul.h) */
    void *qscratch;       /* its activation scratch, 64-byte aligned, grown to the largest step */
    size_t qscratch_cap;  /* bytes */
    float *qf_buf;        /* qmatmul_f: a dequantized tile and its product, grown to the largest step */
    size_t qf_cap;        /* floats */
    struct lmc_cpu_rope_tab *rope_tab; /* rope: cos/sin per position of the last frequencies (rope.c) */
    struct lmc_cpu_rope_tab *rope_row; /* rope: the last single row's position (rope.c) */
};

/* rope.c's table, freed with the context. */
void lmc_cpu_rope_tab_free(struct lmc_cpu_ctx *c);

/* Default gemm_min_m (F32 weights: OpenBLAS sgemm from there) and
 * gemm_min_m16 (F16/BF16 weights: our GEMM from there). With AVX-512 (+BW,
 * VL) our own 4x4-blocked kernels outrun the sgemm of the Debian OpenBLAS
 * at every M measured (its Zen builds use AVX2 kernels), so neither GEMM is
 * used by default. With AVX2 the small-M kernel takes F16/BF16 products up
 * to 32 rows (below) and our GEMM the rest: on the 2-core Zen 3, 125M F16
 * forwards of 16 / 24 / 32 tokens ran 1.5-1.6 / 1.1-1.3 / 1.1 times faster
 * than with the GEMM from 12 rows (bench_smallm, interleaved,
 * bench/results/smallm-avx2-2026-12-07.md); F32 products keep sgemm from 12
 * (training and fp32 models: measured there, and their bits unchanged). */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LMC_CPU_GEMM_MIN_M INT64_MAX
#define LMC_CPU_GEMM_MIN_M16 INT64_MAX
#else
#define LMC_CPU_GEMM_MIN_M 12
#define LMC_CPU_GEMM_MIN_M16 33
#endif

/* M from which a product with W in dt takes the large-M GEMM. */
static inline int64_t lmc_cpu_gemm_from(const struct lmc_cpu_ctx *c, enum lmc_dtype dt) {
    return dt == LMC_DTYPE_F32 ? c->gemm_min_m : c->gemm_min_m16;
}

/* The small-M float kernel (matmul_smallm.c) exists with AVX-512 (+BW, VL)
 * and, as a 256-bit twin, with AVX2 + FMA + F16C.
 * Default mm_small_max: M up to which it runs (0 without it: off); above
 * LMC_CPU_SMALLM_MR rows it re-reads each 4-row W tile once per block of
 * rows, so it takes those only where a tile stays in L1 (at most
 * LMC_CPU_SMALLM_TILE bytes). Measured by bench_smallm and a shape sweep
 * (bench/results/smallm-2026-12-05.md). */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LMC_CPU_SMALLM 1
#ifndef LMC_CPU_MM_SMALL_MAX
#define LMC_CPU_MM_SMALL_MAX 32
#endif
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
/* the AVX2 twin (matmul_smallm.c): 256-bit tiles of 2 or 4 W rows */
#define LMC_CPU_SMALLM 1
#define LMC_CPU_SMALLM_AVX2 1
#ifndef LMC_CPU_MM_SMALL_MAX
#define LMC_CPU_MM_SMALL_MAX (LMC_CPU_GEMM_MIN_M16 - 1) /* F32: below its GEMM (lmc_cpu_smallm_ok) */
#endif
#else
#undef LMC_CPU_MM_SMALL_MAX
#define LMC_CPU_MM_SMALL_MAX 0
#endif
#define LMC_CPU_SMALLM_MR 6
/* AVX2: 2-row tiles of K <= 4096 F16/BF16 (the 125M MLP's down projection,
 * K = 2048, included: 8 KB of L1 re-read per block of x rows) */
#ifdef LMC_CPU_SMALLM_AVX2
#define LMC_CPU_SMALLM_TILE 16384
#else
#define LMC_CPU_SMALLM_TILE 6144
#endif
/* W rows of the tile that blocks of more than LMC_CPU_SMALLM_MR x rows
 * re-read: AVX-512 4; the AVX2 twin 2 (its blocks of 3-6 rows take 2-row
 * tiles, each one run over every block before the next: a 12-row
 * verification of K = 1536 BF16 rows re-reads 6 KB from L1 instead of
 * leaving the kernel: a 7-token verification of the 12x576 kjv-target cost
 * 2.03 1-token forwards there, 6 tokens 1.37) */
#ifdef LMC_CPU_SMALLM_AVX2
#define LMC_CPU_SMALLM_REREAD 2
#else
#define LMC_CPU_SMALLM_REREAD 4
#endif
/* M = 1 too where rows are this short (4-row tile bytes): the GEMV's
 * one-row kernels suit long rows, the tile's prefetch short ones (kjv-llama
 * decode 1.05-1.37x, CPU time, loaded machine); a row's bits then do not
 * change between decoding and verification. F16/BF16 rows of any length
 * take the tile at M = 1 as well: with its prefetch 24 KB ahead
 * (matmul_smallm.c) it streamed at 74-86% of the 1-thread read where the
 * one-row GEMV did 46-79% (F16; K = 5632: 74% against 46%), BF16 about
 * even except K = 5632 (77% against 49%): bench_gemv16, 1 thread, CPU
 * time, bench/results/moe-cpu-2026-12-06.md. */
#define LMC_CPU_SMALLM_M1_TILE 6144
/* Whether an (M, K) product with W in dt goes to the small-M kernel. */
static inline bool lmc_cpu_smallm_ok(const struct lmc_cpu_ctx *c, int64_t M, int64_t K, enum lmc_dtype dt) {
    int64_t tile = 4 * K * lmc_dtype_size(dt);
    return M >= 1 && M <= c->mm_small_max && (M >= 2 || tile <= LMC_CPU_SMALLM_M1_TILE || dt != LMC_DTYPE_F32) &&
           M < lmc_cpu_gemm_from(c, dt) && /* never an M the weight type's GEMM takes */
           (M <= LMC_CPU_SMALLM_MR || tile / 4 * LMC_CPU_SMALLM_REREAD <= LMC_CPU_SMALLM_TILE);
}
/* y[m * N + r] = x(M, K) row m . W row r for r in [r0, r1) (W (N, K) in dt:
 * F32, F16, BF16), tiles of 4 W rows from r0; LMC_CPU_SMALLM builds only. */
void lmc_cpu_matmul_smallm_rows(float *y, const float *x, int64_t M, const void *w, enum lmc_dtype dt,
                                int64_t K, int64_t N, int64_t r0, int64_t r1);

/* The prefill GEMM for F16/BF16 weights (matmul_pf.c, vdpbf16ps): default
 * pf_min_m where the CPU has AVX512-BF16 (bench/results/issue10-float-*.md). */
#ifndef LMC_CPU_PF_MIN_M
#define LMC_CPU_PF_MIN_M 32
#endif
static inline bool lmc_cpu_pf_ok(const struct lmc_cpu_ctx *c, int64_t M, int64_t K, enum lmc_dtype dt) {
    return c->pf_min_m > 0 && M >= c->pf_min_m && K > 0 && (dt == LMC_DTYPE_F16 || dt == LMC_DTYPE_BF16);
}
/* Whether an (M, K) product with w is under the serving route
 * (lmc_backend_cpu_route_rows): F16/BF16 with M the step's row count, or
 * the head's weight; then its leading lmc_cpu_route_pf_rows rows go
 * through the bf16 prefill GEMM and the rest through lmc_cpu_matmul_dr. */
static inline bool lmc_cpu_routed(const struct lmc_cpu_ctx *c, int64_t M, const struct lmc_mat *w) {
    return c->route_m && w->cols > 0 && (w->dtype == LMC_DTYPE_F16 || w->dtype == LMC_DTYPE_BF16) &&
           (M == c->route_m || (w->data == c->route_head && M > 0));
}
static inline int64_t lmc_cpu_route_pf_rows(const struct lmc_cpu_ctx *c, const struct lmc_mat *w) {
    return w->data == c->route_head ? 0 : c->route_pf;
}
/* y[i] (M, N_i) = x (M, K) @ W_i^T (+ bias[i]) for n F16/BF16 matrices of
 * equal K > 0: the serving step's generated rows, each row's bits
 * independent of M and of its place (matmul_dr.c): the bf16 kernels where
 * lmc_cpu_has_bf16(), else lmc_cpu_matmul_drf. Workspace: c->xbuf
 * (lmc_cpu_dr_xpack_words) and each thread's scratch (lmc_cpu_dr_ws_words). */
void lmc_cpu_matmul_dr(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                       const struct lmc_mat *const *w, const float *const *bias);
size_t lmc_cpu_dr_xpack_words(int64_t M, int64_t K);
size_t lmc_cpu_dr_ws_words(int64_t K);
/* The weights of one decode-row GEMM job (both families): up to
 * LMC_CPU_DR_MAX matrices sharing x, each split into tasks of nc columns;
 * W_i's tasks are [tstart[i], tstart[i + 1]). */
#define LMC_CPU_DR_MAX 8
struct lmc_cpu_dr_head {
    int n;
    float *y[LMC_CPU_DR_MAX];
    const uint16_t *w[LMC_CPU_DR_MAX];
    bool f16[LMC_CPU_DR_MAX];
    const float *bias[LMC_CPU_DR_MAX];
    int64_t N[LMC_CPU_DR_MAX], tstart[LMC_CPU_DR_MAX + 1];
};
/* Fills h with the matrices from i0 (at most LMC_CPU_DR_MAX of the n;
 * F16/BF16 with K columns, asserted); returns the task count. */
static inline int64_t lmc_cpu_dr_head_fill(struct lmc_cpu_dr_head *h, int n, int i0, float *const *y,
                                           const struct lmc_mat *const *w, const float *const *bias, int64_t K,
                                           int64_t nc) {
    h->n = LMC_MIN(LMC_CPU_DR_MAX, n - i0);
    h->tstart[0] = 0;
    for (int i = 0; i < h->n; i++) {
        const struct lmc_mat *wi = w[i0 + i];
        LMC_ASSERT(wi->cols == K && (wi->dtype == LMC_DTYPE_F16 || wi->dtype == LMC_DTYPE_BF16));
        h->y[i] = y[i0 + i];
        h->w[i] = wi->data;
        h->f16[i] = wi->dtype == LMC_DTYPE_F16;
        h->bias[i] = bias ? bias[i0 + i] : NULL;
        h->N[i] = wi->rows;
        h->tstart[i + 1] = h->tstart[i] + (wi->rows + nc - 1) / nc;
    }
    return h->tstart[h->n];
}
/* The matrix of task t, and the task's first column (*n0). */
static inline int lmc_cpu_dr_head_task(const struct lmc_cpu_dr_head *h, int64_t t, int64_t nc, int64_t *n0) {
    int i = 0;
    while (t >= h->tstart[i + 1]) i++;
    *n0 = (t - h->tstart[i]) * nc;
    return i;
}
/* Its f32 family (matmul_drf.c): x in f32, W converted exactly, 8-lane FMA
 * sums in K order and a fixed lane tree; AVX2+FMA+F16C kernels, else the
 * portable twin (same bits). Workspace: c->xbuf (lmc_cpu_drf_xpack_words),
 * each thread's scratch (lmc_cpu_drf_ws_words). */
void lmc_cpu_matmul_drf(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                        const struct lmc_mat *const *w, const float *const *bias);
size_t lmc_cpu_drf_xpack_words(int64_t M, int64_t K);
size_t lmc_cpu_drf_ws_words(int64_t M, int64_t K);
/* The portable twin alone, single-threaded (tests). */
void lmc_cpu_matmul_drf_ref(float *y, const float *x, int64_t M, const struct lmc_mat *w, const float *bias);
/* Whether lmc_cpu_matmul_drf runs its AVX2 kernels on this CPU. */
bool lmc_cpu_drf_avx2(void);
/* y[i] (M, N_i) = x (M, K) @ W_i^T (+ bias[i]) for n matrices (F16, BF16 or
 * F32; equal K > 0) with x and the weights rounded to bf16 and f32 sums;
 * only where lmc_cpu_has_bf16(). Weights are converted per call (no copy
 * kept). Workspace: c->xbuf (x packed, lmc_cpu_pf_xpack_words) and each
 * thread's scratch (lmc_cpu_pf_ws_words). */
void lmc_cpu_matmul_pf(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                       const struct lmc_mat *const *w, const float *const *bias);
size_t lmc_cpu_pf_xpack_words(int64_t M, int64_t K);
size_t lmc_cpu_pf_ws_words(int64_t K);

/* attention from this many queries (prefill chunks): blocks of queries
 * through sgemm (attention_prefill.c); fewer: attention.c's per-query
 * kernel, whose bits the paged op (serving) keeps. Above the 17 rows of a
 * speculative verification (spec_k <= 16), so verifying drafts gives the
 * bits of decoding them one by one. */
#ifndef LMC_CPU_ATTN_BLOCK_MIN_M
#define LMC_CPU_ATTN_BLOCK_MIN_M 32
#endif
void lmc_cpu_attention_prefill(struct lmc_cpu_ctx *c, float *out, const float *q, const float *k, const float *v,
                               int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                               int64_t window);
/* The training forward's blocks (attention_train from LMC_CPU_ATTN_TRAIN_BLOCK_MIN_T
 * tokens): B sequences of T from position 0, out as lmc_cpu_attention_prefill's
 * per sequence, and lse (B * T, n_heads). Short sequences keep the per-query
 * kernel (bit for bit the inference op below LMC_CPU_ATTN_BLOCK_MIN_M, as
 * before): a context-parallel rank's half of such a sequence takes it too,
 * so the multi-process runs' sums stay in the one process's order there. */
#ifndef LMC_CPU_ATTN_TRAIN_BLOCK_MIN_T
#define LMC_CPU_ATTN_TRAIN_BLOCK_MIN_T 64
#endif
void lmc_cpu_attention_prefill_train(struct lmc_cpu_ctx *c, float *out, float *lse, const float *q, const float *k,
                                     const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv, int64_t hd,
                                     float scale, int64_t window);

/* Default mm_unit_bytes: the grain at which threads claim (and steal) M=1
 * weight rows; below two units a matmul runs on the calling thread. */
#ifndef LMC_CPU_MM_UNIT_BYTES
#define LMC_CPU_MM_UNIT_BYTES (32 * 1024)
#endif
#define LMC_CPU_CLAIM_STRIDE 8 /* 64 bytes between claim words */

/* Makes every thread's scratch hold at least n floats. Called from the
 * calling thread before lmc_pool_run; aborts (LMC_ASSERT) if memory runs
 * out, as op signatures carry no status. */
void lmc_cpu_scratch_reserve(struct lmc_cpu_ctx *c, size_t n);
/* Makes c->xbuf (64-byte aligned) hold at least n floats; same rules. */
void lmc_cpu_xbuf_reserve(struct lmc_cpu_ctx *c, size_t n);

/* Number of tasks to split `work` units into when a task should cover at
 * least `min_per_task` units: between 1 and n_threads (times `oversplit`). */
static inline int64_t lmc_cpu_ntasks(const struct lmc_cpu_ctx *c, int64_t work,
                                     int64_t min_per_task, int oversplit) {
    int64_t t = work / (min_per_task > 0 ? min_per_task : 1);
    int64_t cap = (int64_t)c->n_threads * oversplit;
    if (t > cap) t = cap;
    return t < 1 ? 1 : t;
}

/* Contiguous slice [*lo, *hi) of n items for task t of nt, boundaries on
 * multiples of `align` (except the end). */
static inline void lmc_cpu_range(int64_t n, int64_t nt, int64_t t, int64_t align,
                                 int64_t *lo, int64_t *hi) {
    int64_t blocks = (n + align - 1) / align;
    int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    *lo = LMC_MIN(b0 * align, n);
    *hi = LMC_MIN(b1 * align, n);
}

/* The op entry points (one file each). */
void *lmc_cpu_alloc(void *ctx, size_t bytes);
void lmc_cpu_free(void *ctx, void *p);
void lmc_cpu_copy(void *ctx, void *dst, const void *src, size_t bytes);
void lmc_cpu_sync(void *ctx);
void lmc_cpu_qmatmul_multi(void *ctx, int n, float *const *y, const float *x, int64_t M,
                           const struct lmc_qweight *const *w, const float *const *bias);
void lmc_cpu_qembed(void *ctx, float *y, const struct lmc_qweight *w, const int32_t *ids, int64_t n);
void lmc_cpu_qmatmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                     const float *bias);
void lmc_cpu_qmatmul_f(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                       const float *bias);
void lmc_cpu_qmatmul_f_bwd(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                           int accum_dx);
void lmc_cpu_dropout(void *ctx, float *y, const float *x, int64_t n, float p, uint64_t seed, int64_t offset);
void lmc_cpu_clamp(void *ctx, float *y, const float *x, int64_t n, float c);
void lmc_cpu_convert(void *ctx, void *dst, enum lmc_dtype dst_dt, const void *src, enum lmc_dtype src_dt, int64_t n);
void *lmc_cpu_host_alloc(void *ctx, size_t bytes);
void lmc_cpu_host_free(void *ctx, void *p);
void lmc_cpu_offload(void *ctx, void *dst, const void *src, size_t bytes, int slot);
void lmc_cpu_offload_wait(void *ctx, int slot);
void lmc_cpu_clamp_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n, float c);
/* ring attention's block ops (backend.h; attn_block.c) */
void lmc_cpu_attn_block_fwd(void *ctx, float *ob, float *lb, const float *q, const float *k, const float *v,
                            const int32_t *qpos, const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV,
                            int64_t hd, float scale, int causal);
void lmc_cpu_attn_block_merge(void *ctx, float *out, float *lse, const float *ob, const float *lb, int64_t n,
                              int64_t H, int64_t hd);
void lmc_cpu_attn_block_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v, const int32_t *qpos,
                            const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV, int64_t hd,
                            float scale, int causal);
void lmc_cpu_matmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                    const float *bias);
void lmc_cpu_matmul_multi(void *ctx, int n, float *const *y, const float *x, int64_t M,
                          const struct lmc_mat *const *w, const float *const *bias);
/* backend.h's fused matmul_add and matmul_swiglu: with our GEMM (F16/BF16
 * weights, large M) the residual is accumulated into y by the GEMM (beta 1)
 * and silu(gate) * up is taken per 64-column task while both are in cache,
 * with no separate pass or pool run; every other route is the plain ops
 * composed through c->ybuf, with the bits they gave before */
void lmc_cpu_matmul_add(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                        const float *bias);
void lmc_cpu_matmul_swiglu(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w_gate,
                           const struct lmc_mat *w_up);
void lmc_cpu_embed(void *ctx, float *y, const struct lmc_mat *table, const int32_t *ids,
                   int64_t n);
void lmc_cpu_rmsnorm(void *ctx, float *y, const float *x, const float *w, int64_t M, int64_t C,
                     float eps);
void lmc_cpu_layernorm(void *ctx, float *y, const float *x, const float *w, const float *b,
                       int64_t M, int64_t C, float eps);
void lmc_cpu_rope(void *ctx, float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                  int64_t rot_dim, const int32_t *pos, const double *inv_freq, float attn_scale);
void lmc_cpu_attention_mask(void *ctx, float *out, const float *q, const float *k, const float *v,
                            int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                            float scale, const uint64_t *mask);
void lmc_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                       float scale, int64_t window);
void lmc_cpu_attention_paged(void *ctx, float *out, const float *q, const float *k_new, const float *v_new, float *kc, float *vc, int64_t T, const int32_t *seq, const int32_t *pos, const int32_t *bt, int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window);
void lmc_cpu_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n);
/* y[i] = silu(g[i]) * u[i] over n elements on the calling thread: the
 * values lmc_cpu_swiglu gives an element at the same offset of its range */
void lmc_cpu_swiglu_span(float *y, const float *g, const float *u, int64_t n);
void lmc_cpu_gelu(void *ctx, float *y, const float *x, int64_t n, int tanh_approx);
void lmc_cpu_add(void *ctx, float *y, const float *a, const float *b, int64_t n);
void lmc_cpu_argmax_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows, int64_t V);
void lmc_cpu_sample_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows, int64_t V,
                         const struct lmc_sample_row *params);
/* Training backward ops (backend.h documents them). */
void lmc_cpu_matmul_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                        const float *x, int64_t M, const struct lmc_mat *w, int accum_dx);
void lmc_cpu_matmul_bwd_multi(void *ctx, int n, float *dx, float *const *dw, float *const *db,
                              const float *const *dy, const float *x, int64_t M,
                              const struct lmc_mat *const *w, int accum_dx);
void lmc_cpu_moe_gemm(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                      const struct lmc_mat *const *w);
void lmc_cpu_moe_gemm_multi(void *ctx, int n, float *const *y, const float *x, const int64_t *off, int64_t E,
                            const struct lmc_mat *const *const *w);
void lmc_cpu_moe_gemm_bwd(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                          const int64_t *off, int64_t E, const struct lmc_mat *const *w, int accum_dx);
/* moe_route.c: the backend's moe_route / moe_stats / moe_gather(_bwd) / moe_combine(_bwd) */
void lmc_cpu_moe_route(void *ctx, const struct lmc_moe_routing *s, int64_t *off_host, int64_t n, int64_t E,
                       int64_t k, int norm_topk);
void lmc_cpu_moe_stats(void *ctx, double *cnt, double *psum, const int32_t *sel, const float *probs, int64_t n,
                       int64_t k, int64_t E);
void lmc_cpu_moe_gather(void *ctx, float *xs, const float *h, const int32_t *perm, int64_t nk, int64_t k,
                        int64_t C);
void lmc_cpu_moe_gather_bwd(void *ctx, float *dh, const float *dxs, const int32_t *row, int64_t n, int64_t k,
                            int64_t C);
void lmc_cpu_moe_combine(void *ctx, float *y, const float *res, const float *o, const float *wts,
                         const int32_t *row, const float *so, const float *sl, int64_t n, int64_t k, int64_t C);
void lmc_cpu_moe_combine_bwd(void *ctx, float *dox, float *dlog, float *dso, float *dsl, const float *dy,
                             const float *o, const struct lmc_moe_routing *s, const float *so, const float *sl,
                             const double *aux, int64_t n, int64_t E, int64_t k, int64_t C, int norm_topk);
void lmc_cpu_embed_bwd(void *ctx, float *dtable, const float *dy, const int32_t *ids, int64_t n,
                       int64_t C);
void lmc_cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                         const float *w, int64_t M, int64_t C, float eps);
void lmc_cpu_layernorm_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int64_t M, int64_t C, float eps);
void lmc_cpu_rope_bwd(void *ctx, float *dx, int64_t M, int64_t n_heads, int64_t head_dim,
                      int64_t rot_dim, const int32_t *pos, const double *inv_freq,
                      float attn_scale);
void lmc_cpu_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                           const float *out, const float *lse, const float *q, const float *k,
                           const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                           int64_t hd, float scale, int64_t window);
void lmc_cpu_attention_train(void *ctx, float *out, float *lse, const float *q, const float *k,
                             const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                             int64_t hd, float scale, int64_t window);
/* The softmax backward of one attention row (attention_dsoft.c, both
 * training backwards): D = sum of p[x] dp[x] over x in [a, e) (the keys
 * the query sees; p is 0 elsewhere), in double, rounded to float and
 * returned; then dp[x] = p[x] (dp[x] - D) scale for x in [0, n).
 * lmc_cpu_row_dot is that sum (products exact in double, a fixed order). */
double lmc_cpu_row_dot(const float *p, const float *dp, int64_t n);
float lmc_cpu_dsoft(float *dp, const float *p, int64_t n, int64_t a, int64_t e, float scale);
void lmc_cpu_zero(void *ctx, void *p, size_t bytes);
double lmc_cpu_sumsq(void *ctx, const float *x, int64_t n);
void lmc_cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                   const struct lmc_adamw_step *s);
void lmc_cpu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dy, const float *gate,
                        const float *up, int64_t n);
void lmc_cpu_gelu_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n,
                      int tanh_approx);
void lmc_cpu_classifier_xent(void *ctx, float *loss, float *dh, float *dw, const float *h,
                             const struct lmc_mat *w, const int32_t *targets, int64_t M,
                             float dscale);
void lmc_cpu_soft_xent(void *ctx, float *ce, float *kl, float *agree, float *s, const float *t,
                       const int32_t *targets, int64_t R, int64_t V, float alpha, float temp, float dscale,
                       int grad);

/* y[i] (M[i], N_i) = x[i] (M[i], K_i) @ w[i]^T for n products as one
 * parallel job per 8 (the GEMV scheduler of matmul.c over their
 * concatenated weight bytes: one fork-join instead of one per product),
 * each product's bits those of lmc_cpu_matmul. Only where every product is
 * one lmc_cpu_matmul sends to that scheduler (M[i] < 4 or the small-M
 * kernel, K_i > 0; M[i] = 0 or N_i = 0 is skipped); else returns false
 * having done nothing. MoE experts' rows at decode (moe_gemm.c). */
bool lmc_cpu_matmul_small_group(struct lmc_cpu_ctx *c, int n, float *const *y, const float *const *x,
                                const int64_t *M, const struct lmc_mat *const *w);

/* Converts n elements of a row of dtype dt to f32. */
void lmc_cpu_row_to_f32(float *dst, const void *src, enum lmc_dtype dt, int64_t n);

#ifdef __AVX2__
static inline float lmc_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* lmc_hsum256 of a, b, c and d in lanes 0-3 (the same adds in the same
 * order, 4 lanes at once): lane i = (v0 + v2) + (v1 + v3) of v = lo + hi
 * of the i-th. */
static inline __m128 lmc_hsum256x4(__m256 a, __m256 b, __m256 c, __m256 d) {
#define LMC_HALVES(v) _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1))
    __m128 sa = LMC_HALVES(a), sb = LMC_HALVES(b), sc = LMC_HALVES(c), sd = LMC_HALVES(d);
#undef LMC_HALVES
    __m128 u = _mm_add_ps(_mm_unpacklo_ps(sa, sb), _mm_unpackhi_ps(sa, sb)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
    __m128 v = _mm_add_ps(_mm_unpacklo_ps(sc, sd), _mm_unpackhi_ps(sc, sd));
    return _mm_add_ps(_mm_movelh_ps(u, v), _mm_movehl_ps(v, u));
}
static inline double lmc_hsum256d(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* exp(x) for 8 floats: x = n*ln2 + r with |r| <= ln2/2, degree-7 Taylor polynomial
 * for exp(r) (relative error ~1 ulp), 2^n built in the exponent bits.
 * Saturates to 0 below -87.3 and +inf above 88.7; NaN propagates. */
static inline __m256 lmc_exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.7228f), lo = _mm256_set1_ps(-87.3365f);
    __m256 big = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    __m256 small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n*ln2 in two steps (Cody-Waite) */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n; n in [-126, 128]: split in two factors so n = 128 and n = -126
     * both stay representable */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    __m256 res = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    res = _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), big);
    res = _mm256_blendv_ps(res, _mm256_setzero_ps(), small);
    /* NaN inputs: min/max dropped them, restore */
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(res, x, nan);
}
#endif

#if defined(__AVX512F__)
/* lmc_exp256 on 16 lanes: the same operations, so the same value per lane */
static inline __m512 lmc_exp512(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.7228f), lo = _mm512_set1_ps(-87.3365f);
    __mmask16 big = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), small = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i ni = _mm512_cvtps_epi32(n);
    __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    __m512 res = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    res = _mm512_mask_blend_ps(big, res, _mm512_set1_ps(INFINITY));
    res = _mm512_mask_blend_ps(small, res, _mm512_setzero_ps());
    return _mm512_mask_blend_ps(nan, res, x);
}
#endif

/* Vector helpers shared by the attention ops (forward, paged, backward):
 * the same summation order everywhere, so contiguous and paged caches give
 * bit-identical results. */
static inline float lmc_cpu_dot(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#ifdef __AVX2__
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    }
    if (i + 8 <= n) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
        i += 8;
    }
    s = lmc_hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y += a * x */
static inline void lmc_cpu_axpy(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    __m256 av = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

/* s[i] = exp(s[i] - mx); returns the sum in double */
static inline double lmc_cpu_exp_sum(float *s, int64_t n, float mx) {
    int64_t i = 0;
    double sum = 0;
#ifdef __AVX2__
    __m256 mv = _mm256_set1_ps(mx);
    __m256d acc = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        __m256 e = lmc_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                                               _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
    }
    sum = lmc_hsum256d(acc);
#endif
    for (; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += s[i];
    }
    return sum;
}

/* lmc_cpu_exp_sum with 16 lanes where AVX-512 is built in (the training
 * ops' softmaxes): the same exps, the double sum in another order */
static inline double lmc_cpu_exp_sum16(float *s, int64_t n, float mx) {
#if defined(__AVX512F__)
    int64_t i = 0;
    const __m512 mv = _mm512_set1_ps(mx);
    __m512d acc = _mm512_setzero_pd();
    for (; i + 16 <= n; i += 16) {
        __m512 e = lmc_exp512(_mm512_sub_ps(_mm512_loadu_ps(s + i), mv));
        _mm512_storeu_ps(s + i, e);
        acc = _mm512_add_pd(acc, _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(e)),
                                               _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                                                   _mm512_castps_pd(e), 1)))));
    }
    return _mm512_reduce_add_pd(acc) + lmc_cpu_exp_sum(s + i, n - i, mx);
#else
    return lmc_cpu_exp_sum(s, n, mx);
#endif
}

#endif
