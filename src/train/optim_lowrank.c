/* optim_lowrank.c — GaLore and APOLLO steps on host memory (optim.h states
 * the formulas): the projection (LAPACK dgesvd of the gradient for GaLore,
 * the seeded Gaussian for APOLLO), Adam moments in the rank-r space, the
 * projection back (GaLore) or the channel/tensor scaling of the raw
 * gradient with the norm-growth limiter (APOLLO), and the decoupled weight
 * decay applied after the update, as the authors' AdamW does. Products go
 * through OpenBLAS sgemm; norms are accumulated in double. */
#include "train/optim_internal.h"
#include "core/core.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* LAPACK from OpenBLAS (Debian's libopenblas ships the Fortran symbols but
 * no LAPACKE header). The trailing lengths are gfortran's hidden
 * CHARACTER-length arguments. */
extern void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a,
                    const int *lda, double *s, double *u, const int *ldu, double *vt, const int *ldvt,
                    double *work, const int *lwork, int *info, size_t ljobu, size_t ljobvt);

/* dgesvd of the column-major (cols, rows) matrix that the row-major
 * gradient is: right (rows >= cols) wants its left vectors U' (= G's V),
 * left wants its right vectors VT' (= G's U^T). lwork -1 queries. */
static int svd_call(const struct lmc_optim_slot *s, double *a, double *sv, double *out, double *work,
                    int lwork) {
    const int m = (int)s->cols, n = (int)s->rows, k = m < n ? m : n;
    int info = 0, one = 1;
    if (s->right)
        dgesvd_("S", "N", &m, &n, a, &m, sv, out, &m, NULL, &one, work, &lwork, &info, 1, 1);
    else
        dgesvd_("N", "S", &m, &n, a, &m, sv, NULL, &one, out, &k, work, &lwork, &info, 1, 1);
    return info;
}

static size_t svd_out_doubles(const struct lmc_optim_slot *s) {
    return s->right ? (size_t)(s->cols * s->cols) : (size_t)(s->rows * s->rows);
}

size_t lmc_optim_lowrank_scratch(const struct lmc_optim_slot *s, enum lmc_optim_group g,
                                 int *svd_lwork) {
    *svd_lwork = 0;
    if (g != LMC_GROUP_GALORE && g != LMC_GROUP_APOLLO) return 0;
    const size_t n = (size_t)(s->rows * s->cols), nl = (size_t)(s->low_rows * s->low_cols);
    size_t d = (nl + 1) / 2; /* R (floats) */
    if (g == LMC_GROUP_APOLLO) {
        d += 2 * (size_t)LMC_MAX(s->rows, s->cols); /* channel norms of R and N */
        d += (size_t)(s->rank * (s->right ? s->cols : s->rows)); /* the Gaussian draw */
        return d;
    }
    d += n + (size_t)LMC_MIN(s->rows, s->cols) + svd_out_doubles(s);
    double q = 0, dummy = 0;
    if (svd_call(s, &dummy, &dummy, &dummy, &q, -1) == 0) *svd_lwork = (int)q + 1;
    return d;
}

/* GaLore's projection: the top-rank singular vectors of g (sign: largest
 * entry positive), into s->proj — right: (rank, cols), row j = v_j; left:
 * (rows, rank), column j = u_j. */
static void galore_refresh(struct lmc_optim *o, struct lmc_optim_slot *s) {
    const int64_t n = s->rows * s->cols, k = LMC_MIN(s->rows, s->cols);
    const size_t nl = (size_t)(s->low_rows * s->low_cols);
    double *a = o->host_scratch + (nl + 1) / 2, *sv = a + n, *out = sv + k;
    double *work = o->host_scratch + o->host_scratch_doubles;
    for (int64_t i = 0; i < n; i++) a[i] = s->g[i];
    int info = svd_call(s, a, sv, out, work, o->svd_lwork);
    LMC_ASSERT(info == 0); /* dgesvd fails only on NaN input or non-convergence */
    const int64_t dim = s->right ? s->cols : s->rows;
    for (int64_t j = 0; j < s->rank; j++) {
        /* element e of vector j: right U'[e + j*cols]; left VT'[j + e*k] */
        double best = 0;
        for (int64_t e = 0; e < dim; e++) {
            double x = s->right ? out[e + j * s->cols] : out[j + e * k];
            if (fabs(x) > fabs(best)) best = x;
        }
        double sg = best < 0 ? -1.0 : 1.0;
        for (int64_t e = 0; e < dim; e++) {
            double x = sg * (s->right ? out[e + j * s->cols] : out[j + e * k]);
            if (s->right) s->proj[j * s->cols + e] = (float)x;
            else s->proj[e * s->rank + j] = (float)x;
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
