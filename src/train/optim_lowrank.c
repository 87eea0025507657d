/* optim_lowrank.c — GaLore and APOLLO steps on host memory (optim.h states
 * the formulas): the projection (LAPACK dgesvd of the gradient for GaLore,
 * the seeded Gaussian for APOLLO), Adam moments in the rank-r space, the
 * projection back (GaLore) or the channel/tensor scaling of the raw
 * gradient with the norm-growth limiter (APOLLO), and the decoupled weight
 * decay applied after the update, as the authors' AdamW does. Products go
 * through OpenBLAS sgemm; norms are accumulated in double; the singular
 * vectors come from LAPACK's dsyevr on the Gram matrix (galore_refresh). */
#include "train/optim_internal.h"
#include "core/core.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* LAPACK from OpenBLAS (Debian's libopenblas ships the Fortran symbols but
 * no LAPACKE header). The trailing lengths are gfortran's hidden
 * CHARACTER-length arguments. */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
                    const int *lda, const double *vl, const double *vu, const int *il, const int *iu,
                    const double *abstol, int *m, double *w, double *z, const int *ldz, int *isuppz,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t,
                    size_t, size_t);

/* GaLore's top-r singular vectors on the smaller side (k = min(rows,
 * cols): right singular vectors when rows >= cols, left ones otherwise)
 * are the eigenvectors of the k x k Gram matrix (G^T G or G G^T, in
 * double) with the r largest eigenvalues: dsyevr computes only those,
 * which costs a fraction of a full dgesvd (measured 329 s -> see
 * bench/results/optim-2026-12-05.md for GPT-2 124M's 48 matrices). The
 * vectors are the same as the SVD's up to sign, which the sign rule fixes. */
static int syevr_call(int k, int r, double *gram, double *w, double *z, int *isuppz, double *work,
                      int lwork, int *iwork, int liwork) {
    const double zero = 0;
    const int il = k - r + 1, iu = k;
    int m = 0, info = 0;
    /* row-major upper (cblas) is column-major lower */
    dsyevr_("V", "I", "L", &k, gram, &k, &zero, &zero, &il, &iu, &zero, &m, w, z, &k, isuppz, work, &lwork,
            iwork, &liwork, &info, 1, 1, 1);
    return info ? info : m != r ? -1 : 0;
}

/* doubles: G copy (rows*cols), Gram (k*k), w (k), Z (k*r), isuppz and
 * iwork (as doubles), then the LAPACK work (svd_lwork) */
static size_t svd_doubles(const struct lmc_optim_slot *s, int liwork) {
    const size_t k = (size_t)LMC_MIN(s->rows, s->cols), r = (size_t)s->rank;
    return (size_t)(s->rows * s->cols) + k * k + k + k * r + r + 1 + (size_t)liwork / 2 + 1;
}

size_t lmc_optim_lowrank_scratch(const struct lmc_optim_slot *s, enum lmc_optim_group g,
                                 int *svd_lwork) {
    *svd_lwork = 0;
    if (g != LMC_GROUP_GALORE && g != LMC_GROUP_APOLLO) return 0;
    const size_t nl = (size_t)(s->low_rows * s->low_cols);
    size_t d = (nl + 1) / 2; /* R (floats) */
    if (g == LMC_GROUP_APOLLO) {
        d += 2 * (size_t)LMC_MAX(s->rows, s->cols); /* channel norms of R and N */
        d += (size_t)(s->rank * (s->right ? s->cols : s->rows)); /* the Gaussian draw */
        return d;
    }
    const int k = (int)LMC_MIN(s->rows, s->cols), r = (int)s->rank;
    const int il = k - r + 1, iu = k, lq = -1;
    double q = 0, dummy = 0, zero = 0;
    int iq = 0, m = 0, info = 0, isz[2];
    dsyevr_("V", "I", "L", &k, &dummy, &k, &zero, &zero, &il, &iu, &zero, &m, &dummy, &dummy, &k, isz, &q, &lq,
            &iq, &lq, &info, 1, 1, 1); /* workspace query */
    *svd_lwork = (int)LMC_MAX(q, 26.0 * k) + 1;
    return d + svd_doubles(s, 10 * k);
}

/* GaLore's projection: the top-rank singular vectors of g (sign: largest
 * entry positive), into s->proj — right: (rank, cols), row j = v_j; left:
 * (rows, rank), column j = u_j. */
static void galore_refresh(struct lmc_optim *o, struct lmc_optim_slot *s) {
    const int64_t n = s->rows * s->cols, k = LMC_MIN(s->rows, s->cols), r = s->rank;
    const size_t nl = (size_t)(s->low_rows * s->low_cols);
    double *a = o->host_scratch + (nl + 1) / 2, *gram = a + n, *w = gram + k * k, *z = w + k;
    int *isuppz = (int *)(z + k * r), *iwork = isuppz + 2 * r + 2;
    double *work = o->host_scratch + o->host_scratch_doubles;
    const int liwork = 10 * (int)k; /* LAPACK's minimum; the scratch holds max(query, this) */
    for (int64_t i = 0; i < n; i++) a[i] = s->g[i];
    if (s->right) /* G^T G (cols, cols) */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)s->rows, 1.0, a, (int)s->cols, 0.0, gram,
                    (int)k);
    else /* G G^T (rows, rows) */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)s->cols, 1.0, a, (int)s->cols, 0.0,
                    gram, (int)k);
    int info = syevr_call((int)k, (int)r, gram, w, z, isuppz, work, o->svd_lwork, iwork, liwork);
    LMC_ASSERT(info == 0); /* fails only on NaN input or non-convergence */
    for (int64_t j = 0; j < r; j++) {
        const double *v = z + (r - 1 - j) * k; /* ascending eigenvalues: the largest last */
        double best = 0;
        for (int64_t e = 0; e < k; e++)
            if (fabs(v[e]) > fabs(best)) best = v[e];
        double sg = best < 0 ? -1.0 : 1.0;
        for (int64_t e = 0; e < k; e++) {
            if (s->right) s->proj[j * s->cols + e] = (float)(sg * v[e]);
            else s->proj[e * s->rank + j] = (float)(sg * v[e]);
        }
    }
}

/* R = projection of g * gs: right R (rows, rank) = G P^T; left R (rank,
 * cols) = P^T G. */
static void project(const struct lmc_optim_slot *s, float gs, float *R) {
    const int M = (int)s->rows, N = (int)s->cols, r = (int)s->rank;
    if (s->right)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, r, N, gs, s->g, N, s->proj, N, 0.0f, R, r);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, N, M, gs, s->proj, r, s->g, N, 0.0f, R, N);
}

/* The authors' moments: m = m b1 + (1 - b1) R; v = v b2 + (1 - b2) R^2. */
static void moments(const struct lmc_adamw_cfg *c, struct lmc_optim_slot *s, const float *R) {
    const int64_t nl = s->low_rows * s->low_cols;
    const float b1 = (float)c->beta1, b2 = (float)c->beta2;
    const float ob1 = (float)(1.0 - c->beta1), ob2 = (float)(1.0 - c->beta2);
    for (int64_t i = 0; i < nl; i++) {
        s->m[i] = s->m[i] * b1 + R[i] * ob1;
        s->v[i] = s->v[i] * b2 + ob2 * (R[i] * R[i]);
    }
}

/* lr sqrt(1 - b2^t) / (1 - b1^t), in double as the authors' Python float */
static double step_size(const struct lmc_adamw_cfg *c, double lr, int64_t step) {
    return lr * sqrt(1.0 - pow(c->beta2, (double)step)) / (1.0 - pow(c->beta1, (double)step));
}

/* p += p * (-lr wd), after the update (the authors' order). */
static void decay_after(struct lmc_optim_slot *s, double lr, double wd) {
    if (!(wd > 0)) return;
    const float f = (float)(-lr * wd);
    for (int64_t i = 0; i < s->rows * s->cols; i++) s->p[i] += s->p[i] * f;
}

void lmc_optim_galore_step(struct lmc_optim *o, struct lmc_optim_slot *s, double lr, int64_t step,
                           float grad_scale) {
    const struct lmc_optim_cfg *c = &o->cfg;
    float *R = (float *)o->host_scratch;
    if ((step - 1) % c->galore_update_gap == 0) galore_refresh(o, s);
    project(s, grad_scale, R);
    moments(&c->adamw, s, R);
    const int64_t nl = s->low_rows * s->low_cols;
    const float eps = (float)c->adamw.eps;
    for (int64_t i = 0; i < nl; i++) R[i] = s->m[i] / (sqrtf(s->v[i]) + eps); /* N, in place */
    /* p += -step * scale * back(N): right back = N P (rows, cols); left P N */
    const float alpha = (float)(-step_size(&c->adamw, lr, step) * c->galore_scale);
    const int M = (int)s->rows, Nc = (int)s->cols, r = (int)s->rank;
    if (s->right)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, Nc, r, alpha, R, r, s->proj, Nc, 1.0f, s->p,
                    Nc);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, Nc, r, alpha, s->proj, r, R, Nc, 1.0f, s->p,
                    Nc);
    decay_after(s, lr, c->adamw.weight_decay);
}

void lmc_optim_apollo_step(struct lmc_optim *o, struct lmc_optim_slot *s, double lr, int64_t step,
                           float grad_scale) {
    const struct lmc_optim_cfg *c = &o->cfg;
    const int64_t nl = s->low_rows * s->low_cols, np = s->rank * (s->right ? s->cols : s->rows);
    const int64_t nch = LMC_MAX(s->rows, s->cols);
    float *R = (float *)o->host_scratch;
    double *nr = o->host_scratch + (nl + 1) / 2, *nn = nr + nch, *z = nn + nch;
    if ((step - 1) % c->apollo_update_gap == 0) {
        int64_t refresh = (step - 1) / c->apollo_update_gap;
        lmc_optim_gaussian_fill(z, np, lmc_optim_apollo_seed(c->apollo_seed, s->idx, refresh), 1.0);
        const double sq = sqrt((double)s->rank);
        for (int64_t i = 0; i < np; i++) s->proj[i] = (float)(z[i] / sq);
    }
    project(s, grad_scale, R);
    moments(&c->adamw, s, R);
    const float eps = (float)c->adamw.eps;
    /* channel c: rows >= cols (right, R (rows, rank)): per row; else per column */
    const bool per_row = s->right, tensor = c->apollo_scale_type == LMC_APOLLO_TENSOR;
    const int64_t ch = tensor ? 1 : per_row ? s->rows : s->cols;
    for (int64_t q = 0; q < ch; q++) nr[q] = nn[q] = 0;
    for (int64_t i = 0; i < nl; i++) {
        int64_t q = tensor ? 0 : per_row ? i / s->low_cols : i % s->low_cols;
        float x = s->m[i] / (sqrtf(s->v[i]) + eps);
        nr[q] += (double)R[i] * R[i];
        nn[q] += (double)x * x;
    }
    for (int64_t q = 0; q < ch; q++) nr[q] = (double)(float)(sqrt(nn[q]) / (sqrt(nr[q]) + 1e-8));
    /* S = G gs f; the limiter on ||S|| */
    double ss = 0;
    for (int64_t i = 0; i < s->rows; i++)
        for (int64_t j = 0; j < s->cols; j++) {
            double f = nr[tensor ? 0 : per_row ? i : j];
            double x = (double)(s->g[i * s->cols + j] * grad_scale) * f;
            ss += x * x;
        }
    float prev = *s->prev_norm;
    double nrm = sqrt(ss), lim = 1.0;
    if (prev >= 0) {
        lim = LMC_MAX(nrm / ((double)prev + 1e-8), 1.01) / 1.01;
        prev = (float)(nrm / lim);
    } else {
        prev = (float)nrm;
    }
    *s->prev_norm = prev;
    /* p += -step * sqrt(scale) * S / lim */
    const double st = step_size(&c->adamw, lr, step);
    for (int64_t i = 0; i < s->rows; i++)
        for (int64_t j = 0; j < s->cols; j++) {
            float f = (float)nr[tensor ? 0 : per_row ? i : j];
            float S = (float)((double)(s->g[i * s->cols + j] * grad_scale * f) / lim);
            s->p[i * s->cols + j] += (float)(-st) * (S * (float)sqrt(c->apollo_scale));
        }
    decay_after(s, lr, c->adamw.weight_decay);
}
