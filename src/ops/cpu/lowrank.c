/* lowrank.c — GaLore's and APOLLO's step on the CPU, given the projection
 * (ops/optim_ops.h states the formulas; train/optim_lowrank.c refreshes
 * the projection): the projected gradient through OpenBLAS sgemm, the
 * authors' Adam moments in rank-r space, then GaLore's projection back
 * (sgemm into p) or APOLLO's channel/tensor scaling of the raw gradient
 * with the norm-growth limiter; the decay after the update. Each pass
 * does all it can: the moments with N (GaLore) or with the channel sums
 * (APOLLO), APOLLO's update with the decay. Also GaLore's subspace
 * refresh ops (galore_ritz, galore_orth, galore_rotate: sgemm, a copy and
 * the sign rule). */
#include "ops/cpu/ops_cpu.h"
#include "ops/optim_ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

int64_t lmc_lowrank_work_floats(int64_t rows, int64_t cols, int64_t rank) {
    const bool right = rows >= cols;
    const int64_t nl = right ? rows * rank : rank * cols, nch = right ? rows : cols;
    return ((nl + 1) & ~(int64_t)1) + 5 * nch + 8;
}

void lmc_lowrank_apply(float *p, const float *g, float *m, float *v, const float *proj,
                       float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                       const struct lmc_lowrank_step *s, float *work) {
    const bool right = s->right;
    LMC_ASSERT(right == (rows >= cols) && rank >= 1 && rank <= LMC_MIN(rows, cols));
    const int64_t low_rows = right ? rows : rank, low_cols = right ? rank : cols, nl = low_rows * low_cols;
    const int M = (int)rows, N = (int)cols, r = (int)rank;
    float *R = work;
    double *nr = (double *)(work + ((nl + 1) & ~(int64_t)1)), *nn = nr + (right ? rows : cols);
    /* R = gs G P^T (right) or gs P^T G */
    if (right) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, r, N, s->grad_scale, g, N, proj, N, 0.0f, R, r);
    else cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, N, M, s->grad_scale, proj, r, g, N, 0.0f, R, N);
    if (!s->apollo) {
        for (int64_t i = 0; i < nl; i++) { /* the moments and N (in place of R) in one pass */
            m[i] = m[i] * s->beta1 + R[i] * s->one_minus_b1;
            v[i] = v[i] * s->beta2 + s->one_minus_b2 * (R[i] * R[i]);
            R[i] = m[i] / (sqrtf(v[i]) + s->eps);
        }
        if (right)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, r, s->alpha, R, r, proj, N, 1.0f, p, N);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, r, s->alpha, proj, r, R, N, 1.0f, p, N);
    } else {
        /* channel: a row of R (right) or a column (left); one for the tensor */
        const bool tensor = s->tensor;
        const int64_t ch = tensor ? 1 : right ? rows : cols;
        for (int64_t q = 0; q < ch; q++) nr[q] = nn[q] = 0;
        for (int64_t i = 0; i < nl; i++) { /* the moments and the channel sums in one pass */
            int64_t q = tensor ? 0 : right ? i / low_cols : i % low_cols;
            m[i] = m[i] * s->beta1 + R[i] * s->one_minus_b1;
            v[i] = v[i] * s->beta2 + s->one_minus_b2 * (R[i] * R[i]);
            float x = m[i] / (sqrtf(v[i]) + s->eps);
            nr[q] += (double)R[i] * R[i];
            nn[q] += (double)x * x;
        }
        for (int64_t q = 0; q < ch; q++) nr[q] = (double)(float)(sqrt(nn[q]) / (sqrt(nr[q]) + 1e-8));
        double ss = 0;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                double x = (double)(g[i * cols + j] * s->grad_scale) * nr[tensor ? 0 : right ? i : j];
                ss += x * x;
            }
        float prev = *prev_norm;
        double nrm = sqrt(ss), lim = 1.0;
        if (prev >= 0) {
            lim = LMC_MAX(nrm / ((double)prev + 1e-8), 1.01) / 1.01;
            prev = (float)(nrm / lim);
        } else {
            prev = (float)nrm;
        }
        *prev_norm = prev;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) { /* the update and the decay in one pass */
                float f = (float)nr[tensor ? 0 : right ? i : j];
                float S = (float)((double)(g[i * cols + j] * s->grad_scale * f) / lim);
                float x = p[i * cols + j] + s->alpha * (S * s->sqrt_scale);
                p[i * cols + j] = s->decay != 0.0f ? x + x * s->decay : x;
            }
        return;
    }
    if (s->decay != 0.0f)
        for (int64_t i = 0; i < rows * cols; i++) p[i] += p[i] * s->decay;
}

void lmc_cpu_lowrank(void *ctx, float *p, const float *g, float *m, float *v, const float *proj,
                     float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                     const struct lmc_lowrank_step *s, float *work) {
    (void)ctx;
    lmc_lowrank_apply(p, g, m, v, proj, prev_norm, rows, cols, rank, s, work);
}

/* ---- GaLore's subspace refresh (ops/optim_ops.h) */
int64_t lmc_galore_ritz_work_floats(int64_t rows, int64_t cols, int64_t rank) {
    return LMC_MAX(rows, cols) * rank; /* Z, then Z2, on the long side */
}

/* C = Y^T Y (Yt Yt^T on the right) and, with g, T = Y^T M Y through work */
static void gram_ct(const float *g, const float *y, int64_t rows, int64_t cols, int64_t rank, float *ct, float *work) {
    const int M = (int)rows, N = (int)cols, r = (int)rank;
    float *C = ct, *T = ct + rank * rank, *Z = work;
    if (rows >= cols) { /* Yt (r, cols) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, N, 1.0f, y, N, y, N, 0.0f, C, r); /* C = Yt Yt^T */
        if (!g) return;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, r, N, 1.0f, g, N, y, N, 0.0f, Z, r); /* Z2 = G Yt^T */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, r, M, 1.0f, Z, r, Z, r, 0.0f, T, r); /* T = Z2^T Z2 */
    } else { /* Y (rows, r) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, r, M, 1.0f, y, r, y, r, 0.0f, C, r); /* C = Y^T Y */
        if (!g) return;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, N, M, 1.0f, y, r, g, N, 0.0f, Z, N); /* Z2t = Y^T G */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, N, 1.0f, Z, N, Z, N, 0.0f, T, r); /* T = Z2t Z2t^T */
    }
}

void lmc_galore_ritz_apply(const float *g, const float *proj, int64_t rows, int64_t cols, int64_t rank, float *y,
                           float *ct, float *work) {
    const int M = (int)rows, N = (int)cols, r = (int)rank;
    float *Z = work;
    if (rows >= cols) { /* Yt (r, cols) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, r, N, 1.0f, g, N, proj, N, 0.0f, Z, r); /* Z = G P^T */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, N, M, 1.0f, Z, r, g, N, 0.0f, y, N);    /* Yt = Z^T G */
    } else { /* Y (rows, r) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, N, M, 1.0f, proj, r, g, N, 0.0f, Z, N); /* Zt = P^T G */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, r, N, 1.0f, g, N, Z, N, 0.0f, y, r);    /* Y = G Zt^T */
    }
    gram_ct(NULL, y, rows, cols, rank, ct, work);
}

void lmc_galore_orth_apply(const float *g, float *y, const float *x, int64_t rows, int64_t cols, int64_t rank,
                           float *ct, float *work) {
    const int r = (int)rank;
    if (rows >= cols) { /* Yt (r, cols) <- X^T Yt */
        const int N = (int)cols;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, N, r, 1.0f, x, r, y, N, 0.0f, work, N);
        memcpy(y, work, (size_t)(rank * cols) * sizeof(float));
    } else { /* Y (rows, r) <- Y X */
        const int M = (int)rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, r, r, 1.0f, y, r, x, r, 0.0f, work, r);
        memcpy(y, work, (size_t)(rows * rank) * sizeof(float));
    }
    gram_ct(g, y, rows, cols, rank, ct, work);
}

void lmc_galore_rotate_apply(float *proj, const float *y, const float *w, int64_t rows, int64_t cols, int64_t rank) {
    const bool right = rows >= cols;
    const int64_t k = right ? cols : rows, r = rank;
    if (right) /* P (r, cols) = w Yt */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)k, (int)r, 1.0f, w, (int)r, y, (int)k, 0.0f,
                    proj, (int)k);
    else /* P (rows, r) = Y w^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)k, (int)r, (int)r, 1.0f, y, (int)r, w, (int)r, 0.0f,
                    proj, (int)r);
    for (int64_t j = 0; j < r; j++) { /* the sign rule: the first largest-magnitude entry positive */
        float best = 0;
        for (int64_t e = 0; e < k; e++) {
            const float x = right ? proj[j * k + e] : proj[e * r + j];
            if (fabsf(x) > fabsf(best)) best = x;
        }
        if (best < 0)
            for (int64_t e = 0; e < k; e++) {
                float *x = right ? &proj[j * k + e] : &proj[e * r + j];
                *x = -*x;
            }
    }
}

void lmc_cpu_galore_ritz(void *ctx, const float *g, const float *proj, int64_t rows, int64_t cols, int64_t rank,
                         float *y, float *ct, float *work) {
    (void)ctx;
    lmc_galore_ritz_apply(g, proj, rows, cols, rank, y, ct, work);
}

void lmc_cpu_galore_orth(void *ctx, const float *g, float *y, const float *x, int64_t rows, int64_t cols,
                         int64_t rank, float *ct, float *work) {
    (void)ctx;
    lmc_galore_orth_apply(g, y, x, rows, cols, rank, ct, work);
}

void lmc_cpu_galore_rotate(void *ctx, float *proj, const float *y, const float *w, int64_t rows, int64_t cols,
                           int64_t rank) {
    (void)ctx;
    lmc_galore_rotate_apply(proj, y, w, rows, cols, rank);
}
