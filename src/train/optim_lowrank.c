/* optim_lowrank.c — GaLore's and APOLLO's projections, refreshed for any
 * backend (optim.h states the formulas): GaLore's top-r singular vectors of
 * the gradient (downloaded when the backend's memory is not the host's)
 * from LAPACK's dsyevr on the Gram matrix, or (the subspace refresh) one
 * subspace-iteration and Rayleigh–Ritz step from the previous projection
 * through the backend's matmuls; APOLLO's seeded Gaussian; each uploaded
 * into the slot's projection. The step in
 * rank-r space is the backend's lowrank op (ops/optim_ops.h). */
#include "train/optim_internal.h"
#include "core/core.h"
#include "ops/optim_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
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
 * which costs a fraction of a full dgesvd (GPT-2 124M's 48 matrices: 329 s
 * with dgesvd, 14-23 s this way; bench/results/optim-2026-12-05.md). The
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

/* host doubles: the gradient's float copy (n/2 + 1), its double copy (n),
 * Gram (k*k), w (k), Z (k*r), isuppz (r + 1), iwork (liwork/2 + 1), the
 * projection as floats (np/2 + 1); then the LAPACK work */
static size_t svd_doubles(const struct lmc_optim_slot *s, int liwork) {
    const size_t k = (size_t)LMC_MIN(s->rows, s->cols), r = (size_t)s->rank, n = (size_t)(s->rows * s->cols);
    return n / 2 + 1 + n + k * k + k + k * r + r + 1 + (size_t)liwork / 2 + 1 + r * (size_t)LMC_MAX(s->rows, s->cols) / 2 + 1;
}

size_t lmc_optim_lowrank_scratch(const struct lmc_optim_slot *s, enum lmc_optim_group g,
                                 int *svd_lwork) {
    *svd_lwork = 0;
    const size_t np = (size_t)(s->rank * (s->right ? s->cols : s->rows));
    if (g == LMC_GROUP_APOLLO) return np + np / 2 + 1; /* the Gaussian draw, the projection as floats */
    if (g != LMC_GROUP_GALORE) return 0;
    const int k = (int)LMC_MIN(s->rows, s->cols), r = (int)s->rank;
    const int il = k - r + 1, iu = k, lq = -1;
    double q = 0, dummy = 0, zero = 0;
    int iq = 0, m = 0, info = 0, isz[2];
    dsyevr_("V", "I", "L", &k, &dummy, &k, &zero, &zero, &il, &iu, &zero, &m, &dummy, &dummy, &k, isz, &q, &lq,
            &iq, &lq, &info, 1, 1, 1); /* workspace query */
    *svd_lwork = (int)LMC_MAX(q, 26.0 * k) + 1;
    return svd_doubles(s, 10 * k);
}

/* GaLore's projection: the top-rank singular vectors of g (sign: largest
 * entry positive) — right: (rank, cols), row j = v_j; left: (rows, rank),
 * column j = u_j — uploaded into s->proj. */
static void galore_refresh(struct lmc_optim *o, struct lmc_optim_slot *s) {
    const int64_t n = s->rows * s->cols, k = LMC_MIN(s->rows, s->cols), r = s->rank;
    const struct lmc_backend *be = o->be;
    float *gh = (float *)o->host_scratch;
    double *a = o->host_scratch + n / 2 + 1, *gram = a + n, *w = gram + k * k, *z = w + k;
    int *isuppz = (int *)(z + k * r), *iwork = isuppz + 2 * r + 2;
    float *ph = (float *)(z + k * r + r + 1 + 5 * k + 1);
    double *work = o->host_scratch + o->host_scratch_doubles;
    const int liwork = 10 * (int)k; /* LAPACK's minimum, as sized */
    be->download(be->ctx, gh, s->g, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = gh[i];
    if (s->right) /* G^T G (cols, cols) */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)s->rows, 1.0, a, (int)s->cols, 0.0, gram,
                    (int)k);
    else /* G G^T (rows, rows) */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)s->cols, 1.0, a, (int)s->cols, 0.0,
                    gram, (int)k);
    int info = syevr_call((int)k, (int)r, gram, w, z, isuppz, work, o->svd_lwork, iwork, liwork);
    LMC_ASSERT(info == 0); /* fails only on NaN input or non-convergence */
    for (int64_t j = 0; j < r; j++) {
        const double *vj = z + (r - 1 - j) * k; /* ascending eigenvalues: the largest last */
        double best = 0;
        for (int64_t e = 0; e < k; e++)
            if (fabs(vj[e]) > fabs(best)) best = vj[e];
        double sg = best < 0 ? -1.0 : 1.0;
        for (int64_t e = 0; e < k; e++) {
            if (s->right) ph[j * s->cols + e] = (float)(sg * vj[e]);
            else ph[e * s->rank + j] = (float)(sg * vj[e]);
        }
    }
    be->upload(be->ctx, s->proj, ph, (size_t)(r * k) * sizeof(float));
}

extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t);
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                   double *work, const int *lwork, int *info, size_t, size_t);

/* GaLore's subspace refresh (optim.h, LMC_GALORE_REFRESH_SUBSPACE): with M
 * the Gram matrix on the smaller side (G^T G right, G G^T left) and Q the
 * previous projection's vectors, Y = M Q (two backend matmuls), then the
 * Rayleigh–Ritz step on span(Y): C = Y^T Y and T = Y^T M Y (r x r, on the
 * device), solved on the host in double as T v = l C v (Cholesky of C, the
 * symmetric eigenproblem of L^-1 T L^-T, v = L^-T w), the new vectors
 * Y v_j by descending l (a matmul), each signed so that its largest entry
 * is positive (downloaded, signed, uploaded). Returns nonzero (nothing
 * changed) when C is not positive definite (a gradient of rank < r, or
 * zero) or memory is short: the caller falls back to the exact refresh. */
static int galore_refresh_subspace(struct lmc_optim *o, struct lmc_optim_slot *s) {
    const struct lmc_backend *be = o->be;
    void *ctx = be->ctx;
    const int64_t rows = s->rows, cols = s->cols, r = s->rank, k = LMC_MIN(rows, cols);
    const int64_t other = s->right ? rows : cols; /* Z's long side */
    const size_t nf = (size_t)(2 * other * r + k * r + 3 * r * r);
    float *d = be->alloc(ctx, nf * sizeof(float));
    double *h = malloc((size_t)(4 * r * r + 66 * r + 2) * sizeof(double));
    float *hf = malloc((size_t)LMC_MAX(2 * r * r, k * r) * sizeof(float));
    int rc = -1;
    if (!d || !h || !hf) goto done;
    float *Z = d, *Y = Z + other * r, *Z2 = Y + k * r, *C = Z2 + other * r, *T = C + r * r, *V = T + r * r;
    const struct lmc_mat wrk = {LMC_DTYPE_F32, r, k, Y}, wrc = {LMC_DTYPE_F32, r, cols, NULL},
                         wrr = {LMC_DTYPE_F32, r, r, NULL};
    if (s->right) { /* P (r, cols): rows are the vectors; Y kept as Yt (r, cols) */
        const struct lmc_mat P = {LMC_DTYPE_F32, r, cols, s->proj};
        be->matmul(ctx, Z, s->g, rows, &P, NULL);                     /* Z = G P^T (rows, r) */
        be->zero(ctx, Y, (size_t)(r * cols) * sizeof(float));
        be->matmul_bwd(ctx, NULL, Y, NULL, Z, s->g, rows, &wrc, 0);   /* Yt = Z^T G (r, cols) */
        be->matmul(ctx, C, Y, r, &wrk, NULL);                         /* C = Yt Yt^T */
        be->matmul(ctx, Z2, s->g, rows, &wrk, NULL);                  /* Z2 = G Yt^T (rows, r) */
        be->zero(ctx, T, (size_t)(r * r) * sizeof(float));
        be->matmul_bwd(ctx, NULL, T, NULL, Z2, Z2, rows, &wrr, 0);    /* T = Z2^T Z2 */
    } else { /* P (rows, r): columns are the vectors; Y (rows, r) */
        be->zero(ctx, Z, (size_t)(r * cols) * sizeof(float));
        be->matmul_bwd(ctx, NULL, Z, NULL, s->proj, s->g, rows, &wrc, 0); /* Zt = P^T G (r, cols) */
        const struct lmc_mat Zt = {LMC_DTYPE_F32, r, cols, Z};
        be->matmul(ctx, Y, s->g, rows, &Zt, NULL);                    /* Y = G Zt^T (rows, r) */
        be->zero(ctx, C, (size_t)(r * r) * sizeof(float));
        be->matmul_bwd(ctx, NULL, C, NULL, Y, Y, rows, &wrr, 0);      /* C = Y^T Y */
        be->zero(ctx, Z2, (size_t)(r * cols) * sizeof(float));
        be->matmul_bwd(ctx, NULL, Z2, NULL, Y, s->g, rows, &wrc, 0);  /* Z2t = Y^T G (r, cols) */
        const struct lmc_mat Z2t = {LMC_DTYPE_F32, r, cols, Z2};
        be->matmul(ctx, T, Z2, r, &Z2t, NULL);                        /* T = Z2t Z2t^T */
    }
    be->download(ctx, hf, C, (size_t)(2 * r * r) * sizeof(float)); /* C and T */
    double *Cd = h, *Td = Cd + r * r, *W = Td + r * r, *ev = W + r * r, *work = ev + r + 1;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < r; j++) { /* symmetrised; row- and column-major alike */
            Cd[i * r + j] = 0.5 * ((double)hf[i * r + j] + hf[j * r + i]);
            Td[i * r + j] = 0.5 * ((double)hf[r * r + i * r + j] + hf[r * r + j * r + i]);
        }
    const int n = (int)r, lwork = 66 * (int)r;
    int info = 0;
    dpotrf_("L", &n, Cd, &n, &info, 1); /* C = L L^T (column-major lower) */
    if (info) goto done;
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, n, n, 1.0, Cd, n, Td, n);
    cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, n, n, 1.0, Cd, n, Td, n);
    dsyev_("V", "L", &n, Td, &n, ev, work, &lwork, &info, 1, 1); /* ascending; vectors in Td's columns */
    if (info) goto done;
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, n, n, 1.0, Cd, n, Td, n);
    (void)W;
    /* right: dy = V (r, r) row-major, V[i][j] = vector j's coefficient i; left: w = V^T */
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < r; j++) {
            const float x = (float)Td[(r - 1 - j) * r + i]; /* descending */
            if (s->right) hf[i * r + j] = x;
            else hf[j * r + i] = x;
        }
    be->upload(ctx, V, hf, (size_t)(r * r) * sizeof(float));
    float *Pn = Z; /* r * other >= r * k */
    if (s->right) {
        be->zero(ctx, Pn, (size_t)(r * cols) * sizeof(float));
        be->matmul_bwd(ctx, NULL, Pn, NULL, V, Y, r, &wrc, 0); /* Pn = V^T Yt (r, cols) */
    } else {
        const struct lmc_mat Vt = {LMC_DTYPE_F32, r, r, V};
        be->matmul(ctx, Pn, Y, rows, &Vt, NULL); /* Pn = Y V (rows, r) */
    }
    be->download(ctx, hf, Pn, (size_t)(r * k) * sizeof(float));
    for (int64_t j = 0; j < r; j++) { /* the sign rule, per vector */
        float best = 0;
        for (int64_t e = 0; e < k; e++) {
            const float x = s->right ? hf[j * k + e] : hf[e * r + j];
            if (fabsf(x) > fabsf(best)) best = x;
        }
        if (best < 0)
            for (int64_t e = 0; e < k; e++) {
                float *x = s->right ? &hf[j * k + e] : &hf[e * r + j];
                *x = -*x;
            }
    }
    be->upload(ctx, s->proj, hf, (size_t)(r * k) * sizeof(float));
    rc = 0;
done:
    if (d) be->free(ctx, d);
    free(h), free(hf);
    return rc;
}

static bool galore_subspace(const struct lmc_optim *o) {
    const enum lmc_galore_refresh m = o->cfg.galore_refresh;
    return m == LMC_GALORE_REFRESH_SUBSPACE || (m == LMC_GALORE_REFRESH_AUTO && !o->be->host_memory);
}

static void apollo_refresh(struct lmc_optim *o, struct lmc_optim_slot *s, int64_t refresh) {
    const int64_t np = s->rank * (s->right ? s->cols : s->rows);
    double *z = o->host_scratch;
    float *ph = (float *)(z + np);
    lmc_optim_gaussian_fill(z, np, lmc_optim_apollo_seed(o->cfg.apollo_seed, s->idx, refresh), 1.0);
    const double sq = sqrt((double)s->rank);
    for (int64_t i = 0; i < np; i++) ph[i] = (float)(z[i] / sq);
    o->be->upload(o->be->ctx, s->proj, ph, (size_t)np * sizeof(float));
}

/* lr sqrt(1 - b2^t) / (1 - b1^t), in double as the authors' Python float */
static double step_size(const struct lmc_adamw_cfg *c, double lr, int64_t step) {
    return lr * sqrt(1.0 - pow(c->beta2, (double)step)) / (1.0 - pow(c->beta1, (double)step));
}

void lmc_optim_lowrank_step(struct lmc_optim *o, struct lmc_optim_slot *s, double lr, int64_t step,
                            float grad_scale) {
    const struct lmc_optim_cfg *c = &o->cfg;
    const bool apollo = s->group == LMC_GROUP_APOLLO;
    const int gap = apollo ? c->apollo_update_gap : c->galore_update_gap;
    if ((step - 1) % gap == 0) {
        if (apollo) apollo_refresh(o, s, (step - 1) / gap);
        else if (step == 1 || !galore_subspace(o) || galore_refresh_subspace(o, s)) galore_refresh(o, s);
    }
    const double st = step_size(&c->adamw, lr, step);
    struct lmc_lowrank_step ls = {
        .apollo = apollo, .right = s->right, .tensor = c->apollo_scale_type == LMC_APOLLO_TENSOR,
        .beta1 = (float)c->adamw.beta1, .beta2 = (float)c->adamw.beta2,
        .one_minus_b1 = (float)(1.0 - c->adamw.beta1), .one_minus_b2 = (float)(1.0 - c->adamw.beta2),
        .eps = (float)c->adamw.eps, .grad_scale = grad_scale,
        .alpha = apollo ? (float)(-st) : (float)(-st * c->galore_scale),
        .sqrt_scale = (float)sqrt(c->apollo_scale),
        .decay = c->adamw.weight_decay > 0 ? (float)(-lr * c->adamw.weight_decay) : 0.0f};
    o->be->lowrank(o->be->ctx, s->p, s->g, s->m, s->v, s->proj, s->prev_norm, s->rows, s->cols, s->rank, &ls,
                   o->work);
}
