/* muon_bf16.c — Muon's step on the CPU with the Newton–Schulz GEMMs in
 * bf16 operands (s->ns_bf16, the default; `--muon-ns-dtype f32` keeps
 * newton_schulz.c's fp32 OpenBLAS path): the products run through
 * gemm_bf16.c (vdpbf16ps where the CPU has AVX512-BF16: operands rounded
 * to bf16, exact products, fp32 sums), the iterate and every element-wise
 * step stay fp32, the Frobenius norm is summed in double.
 *
 * Per iteration (k = min(rows, cols), w = max; X keeps the parameter's own
 * layout, so a tall matrix is never transposed: its Gram matrix is taken
 * on the other side, A = X^T X and X <- a X + X B):
 *   A = X X^T         symmetric: only the blocks on and right of the
 *                     diagonal (rows in blocks of MB_RB), then mirrored
 *   B = b A + c A A   A A symmetric too: the same halves
 *   Y = a X + B X     Y set to a X, the GEMM accumulates into it
 * 3 k^2 w + k^3 flops (plus the diagonal blocks) instead of 4 k^2 w + 2 k^3.
 *
 * The batched entry (backend muon_batch) runs every matrix of a shape as
 * one pool run, one matrix per task: a matrix's bits never depend on the
 * thread count or on which thread takes it, and equal those of the
 * per-matrix entry (lmc_cpu_muon with ns_bf16), so lmc_optim_step_one gives
 * lmc_optim_step's bits. */
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/optim_ops.h"

#include <math.h>
#include <string.h>

#define MB_RB 96 /* rows per block of the symmetric products (gemm_bf16's GB_MC) */

static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t lmc_cpu_muon_bf16_ws(int64_t rows, int64_t cols) {
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    size_t a = lmc_cpu_gemm_bf16_ws(LMC_MIN(k, MB_RB), k, w);      /* A = X X^T */
    size_t b = lmc_cpu_gemm_bf16_ws(LMC_MIN(k, MB_RB), k, k);      /* A A */
    size_t c = rows <= cols ? lmc_cpu_gemm_bf16_ws(k, w, k)        /* B X */
                            : lmc_cpu_gemm_bf16_ws(w, k, k);       /* X B */
    return al16(LMC_MAX(a, LMC_MAX(b, c)));
}

void lmc_cpu_sym_gemm_bf16(int64_t k, int64_t K, const float *A, int64_t a_sm, int64_t a_sk, const float *B,
                           int64_t b_sk, int64_t b_sn, float *C, void *ws) {
    for (int64_t i0 = 0; i0 < k; i0 += MB_RB) {
        const int64_t ib = LMC_MIN(MB_RB, k - i0);
        lmc_cpu_gemm_bf16(ib, k - i0, K, A + i0 * a_sm, a_sm, a_sk, B + i0 * b_sn, b_sk, b_sn, C + i0 * k + i0, k,
                          false, ws);
    }
    for (int64_t i = 1; i < k; i++) /* the strict lower triangle from the upper one */
        for (int64_t j = 0; j < i; j++) C[i * k + j] = C[j * k + i];
}

void lmc_muon_bf16_apply(float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                         const struct lmc_muon_step *s, float lr_adj, float *X, float *Y, float *A, float *Bm,
                         void *ws) {
    const int64_t n = rows * cols;
    const bool tall = rows > cols;
    const int64_t k = tall ? cols : rows, w = tall ? rows : cols;
    const float mu = s->momentum, omm = 1.0f - s->momentum;
    double ss = 0;
    for (int64_t i = 0; i < n; i++) { /* torch's lerps, as lmc_muon_apply */
        float gi = g[i] * s->grad_scale;
        float b = omm < 0.5f ? buf[i] + omm * (gi - buf[i]) : gi - (gi - buf[i]) * mu;
        buf[i] = b;
        float u = !s->nesterov ? b : mu < 0.5f ? gi + mu * (b - gi) : b - (b - gi) * omm;
        X[i] = u;
        ss += (double)u * (double)u;
    }
    float nrm = (float)sqrt(ss);
    if (nrm < s->ns_eps) nrm = s->ns_eps;
    for (int64_t i = 0; i < n; i++) X[i] /= nrm;
    for (int it = 0; it < s->ns_steps; it++) {
        if (!tall) /* A = X X^T: X (k, w) row-major; B operand X^T: (kk, j) at X[j*w + kk] */
            lmc_cpu_sym_gemm_bf16(k, w, X, w, 1, X, 1, w, A, ws);
        else /* A = X^T X: X (w, k); A operand X^T: (i, kk) at X[kk*k + i] */
            lmc_cpu_sym_gemm_bf16(k, w, X, 1, k, X, k, 1, A, ws);
        lmc_cpu_sym_gemm_bf16(k, k, A, k, 1, A, k, 1, Bm, ws); /* A A */
        for (int64_t i = 0; i < k * k; i++) Bm[i] = s->ns_b * A[i] + s->ns_c * Bm[i];
        for (int64_t i = 0; i < n; i++) Y[i] = s->ns_a * X[i];
        if (!tall) lmc_cpu_gemm_bf16(k, w, k, Bm, k, 1, X, w, 1, Y, w, true, ws);  /* + B X */
        else lmc_cpu_gemm_bf16(w, k, k, X, k, 1, Bm, k, 1, Y, k, true, ws);        /* + X B */
        float *t = X;
        X = Y, Y = t;
    }
    for (int64_t i = 0; i < n; i++) p[i] = p[i] * s->decay_mul - lr_adj * X[i];
}

/* The batched entry: one matrix per task. X and A of matrix j live in the
 * caller's work (the layout lmc_muon_batch_work_floats sizes: its parts,
 * then per matrix k*w and k*k floats rounded to 128), the other iterate,
 * B and the GEMM's workspace in the thread's scratch. */
struct mb_job {
    struct lmc_cpu_ctx *c;
    const struct lmc_muon_mat *mats;
    const struct lmc_muon_step *s;
    float *work;
    int64_t x, a, parts; /* floats */
    size_t ws;           /* floats */
};

static void mb_task(void *arg, int64_t j, int thread) {
    const struct mb_job *b = arg;
    const struct lmc_muon_mat *m = &b->mats[j];
    float *X = b->work + b->parts + j * (b->x + b->a), *A = X + b->x;
    float *sc = b->c->scratch[thread], *Y = sc + b->ws, *Bm = Y + b->x;
    lmc_muon_bf16_apply(m->p, m->g, m->buf, m->rows, m->cols, b->s, m->lr_adj, X, Y, A, Bm, sc);
}

void lmc_cpu_muon_batch(void *ctx, const struct lmc_muon_mat *mats, int count, const struct lmc_muon_step *s,
                        float *work) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(count >= 1 && count <= LMC_MUON_BATCH_MAX);
    if (!s->ns_bf16) { /* newton_schulz.c: any shapes */
        lmc_cpu_muon_batch_f32(c, mats, count, s);
        return;
    }
    const int64_t rows = mats[0].rows, cols = mats[0].cols;
    for (int j = 1; j < count; j++) LMC_ASSERT(mats[j].rows == rows && mats[j].cols == cols);
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    struct mb_job b = {c, mats, s, work, (k * w + 127) / 128 * 128, (k * k + 127) / 128 * 128,
                       ((int64_t)count * LMC_MUON_BATCH_PARTS * 8 + 255) / 256 * 64, lmc_cpu_muon_bf16_ws(rows, cols)};
    LMC_ASSERT(b.parts + count * (b.x + b.a) <= lmc_muon_batch_work_floats(count, rows, cols));
    lmc_cpu_scratch_reserve(c, b.ws + (size_t)(b.x + b.a));
    lmc_pool_run(c->pool, count, mb_task, &b);
}
