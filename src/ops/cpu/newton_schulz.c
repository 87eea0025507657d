/* newton_schulz.c — Muon's step on the CPU: Nesterov momentum, the quintic
 * Newton–Schulz orthogonalisation (per iteration OpenBLAS ssyrk for the
 * symmetric X X^T and A A, ssymm for B X: 3k^2 n + k^3 flops per
 * iteration instead of general GEMMs' 4k^2 n + 2k^3) and the scaled, decoupled-decay
 * update, as
 * ops/optim_ops.h states it (torch.optim.Muon's order of operations, in
 * float32; the Frobenius norm is accumulated in double). A tall matrix
 * (rows > cols) keeps its layout: A = X^T X (ssyrk Trans), Y = a X + X B
 * (ssymm Right), no transposes. This is the fp32 path (`--muon-ns-dtype
 * f32`, and auto on the CPU); with s->ns_bf16 lmc_cpu_muon runs
 * muon_bf16.c's bf16-GEMM iteration instead; with s->ns_gram (the default)
 * a rectangular matrix's iteration runs in Gram space
 * (newton_schulz_gram.c), restarted from X every LMC_NS_GRAM_RESTART
 * iterations. lmc_cpu_muon_batch_f32 (the backend's muon_batch with
 * !ns_bf16) runs the Muon matrices (any shapes) one per pool thread, each
 * in its thread's scratch (lmc_muon_work_floats of the largest): OpenBLAS
 * is single-threaded in this process (backend_cpu.c), so the per-matrix
 * entry uses one core. */
#include "ops/cpu/ops_cpu.h"
#include "ops/optim_ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

int64_t lmc_muon_batch_work_floats(int count, int64_t rows, int64_t cols) {
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    const int64_t x = (k * w + 127) / 128 * 128, a = (k * k + 127) / 128 * 128;
    const int64_t bf16s = (int64_t)count * (2 * x + 2 * a);
    const int64_t parts = ((int64_t)count * LMC_MUON_BATCH_PARTS * 8 + 255) / 256 * 64; /* 256-byte rounded, floats */
    return parts + (bf16s + 1) / 2;
}

int64_t lmc_muon_work_floats(int64_t rows, int64_t cols) {
    int64_t k = LMC_MIN(rows, cols), n = rows < cols ? cols : rows;
    return 2 * k * n + 4 * k * k;
}

float *lmc_newton_schulz_apply(float *x, int64_t k, int64_t n, bool tall, const struct lmc_muon_step *s,
                               float *work) {
    LMC_ASSERT(k >= 1 && k <= n);
    float *X = work, *Y = work + k * n, *A = Y + k * n, *B = A + k * k;
    if (x != X) memcpy(X, x, (size_t)(k * n) * sizeof *X);
    double ss = 0;
    for (int64_t i = 0; i < k * n; i++) ss += (double)X[i] * (double)X[i];
    float nrm = (float)sqrt(ss);
    if (nrm < s->ns_eps) nrm = s->ns_eps;
    for (int64_t i = 0; i < k * n; i++) X[i] /= nrm;
    if (s->ns_gram && k < n) /* newton_schulz_gram.c */
        return lmc_ns_gram(X, Y, k, n, tall, s, LMC_NS_GRAM_RESTART, false, A, B, B + k * k, B + 2 * k * k,
                           NULL);
    const int K = (int)k, N = (int)n;
    for (int it = 0; it < s->ns_steps; it++) {
        /* A = X X^T (k, k) (tall: X^T X), symmetric: the upper triangle by ssyrk, mirrored */
        if (!tall) cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, K, N, 1.0f, X, N, 0.0f, A, K);
        else cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, K, N, 1.0f, X, K, 0.0f, A, K);
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < i; j++) A[i * k + j] = A[j * k + i];
        /* B = b A + c A A^T (= b A + c A A): the upper triangle */
        memcpy(B, A, (size_t)(k * k) * sizeof *B);
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, K, K, s->ns_c, A, K, s->ns_b, B, K);
        /* Y = a X + B X (tall: a X + X B), B read from its upper triangle */
        memcpy(Y, X, (size_t)(k * n) * sizeof *Y);
        if (!tall) cblas_ssymm(CblasRowMajor, CblasLeft, CblasUpper, K, N, 1.0f, B, K, X, N, s->ns_a, Y, N);
        else cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, N, K, 1.0f, B, K, X, K, s->ns_a, Y, K);
        float *t = X;
        X = Y, Y = t;
    }
    return X;
}

void lmc_muon_apply(float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                    const struct lmc_muon_step *s, float *work) {
    const int64_t n = rows * cols;
    const bool tr = rows > cols; /* tall: X keeps the parameter's layout (w, k) */
    const int64_t k = tr ? cols : rows, w = tr ? rows : cols;
    float *X = work;
    const float mu = s->momentum, omm = 1.0f - s->momentum;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * s->grad_scale;
        float b = omm < 0.5f ? buf[i] + omm * (gi - buf[i]) : gi - (gi - buf[i]) * mu;
        buf[i] = b;
        /* torch's lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w) */
        float u = !s->nesterov ? b : mu < 0.5f ? gi + mu * (b - gi) : b - (b - gi) * omm;
        X[i] = u;
    }
    const float *O = lmc_newton_schulz_apply(X, k, w, tr, s, work);
    for (int64_t i = 0; i < n; i++) p[i] = p[i] * s->decay_mul - s->lr_adj * O[i];
}

struct mf_job {
    struct lmc_cpu_ctx *c;
    const struct lmc_muon_mat *mats;
    const struct lmc_muon_step *s;
};

static void mf_task(void *arg, int64_t j, int thread) {
    const struct mf_job *b = arg;
    const struct lmc_muon_mat *m = &b->mats[j];
    struct lmc_muon_step s = *b->s;
    s.lr_adj = m->lr_adj;
    lmc_muon_apply(m->p, m->g, m->buf, m->rows, m->cols, &s, b->c->scratch[thread]);
}

void lmc_cpu_muon_batch_f32(struct lmc_cpu_ctx *c, const struct lmc_muon_mat *mats, int count,
                            const struct lmc_muon_step *s) {
    LMC_ASSERT(count >= 1 && !s->ns_bf16);
    int64_t wf = 0;
    for (int j = 0; j < count; j++) wf = LMC_MAX(wf, lmc_muon_work_floats(mats[j].rows, mats[j].cols));
    lmc_cpu_scratch_reserve(c, (size_t)wf);
    struct mf_job b = {c, mats, s};
    lmc_pool_run(c->pool, count, mf_task, &b);
}

void lmc_cpu_muon(void *ctx, float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                  const struct lmc_muon_step *s, float *work) {
    if (!s->ns_bf16) {
        lmc_muon_apply(p, g, buf, rows, cols, s, work);
        return;
    }
    /* bf16 Newton–Schulz (muon_bf16.c): X, Y, A, B in work, the GEMM's workspace in scratch */
    struct lmc_cpu_ctx *c = ctx;
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    lmc_cpu_scratch_reserve(c, lmc_cpu_muon_bf16_ws(rows, cols));
    float *X = work, *Y = X + k * w, *A = Y + k * w, *B = A + k * k;
    lmc_muon_bf16_apply(p, g, buf, rows, cols, s, s->lr_adj, X, Y, A, B, c->scratch[0]);
}
