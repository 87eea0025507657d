/* optim_lowrank.c — GaLore's and APOLLO's projections, refreshed for any
 * backend (optim.h states the formulas): GaLore's top-r singular vectors of
 * the gradient (downloaded when the backend's memory is not the host's)
 * from LAPACK's dsyevr on the Gram matrix, or (the subspace refresh) one
 * subspace-iteration and Rayleigh–Ritz step from the previous projection:
 * P turned so that G P^T has orthonormal columns, Y and C = Y^T Y by the
 * backend (galore_ritz), Y orthonormalised by two CholeskyQR passes (the
 * r x r factors on the host, applied by the backend's galore_orth, which
 * then forms T = Y^T M Y), the r x r solve on the host, the new signed
 * projection by the backend (galore_rotate); APOLLO's seeded Gaussian
 * drawn on the host. When lmc_optim_step runs,
 * every matrix due is refreshed at once: per round one download of all C
 * (and T), the host work (or APOLLO's draws) a matrix per host thread, one
 * upload of all factors. The step in rank-r space is the backend's lowrank
 * op (ops/optim_ops.h). */
#include "train/optim_internal.h"
#include "core/core.h"
#include "core/rng.h"
#include "core/threadpool.h"
#include "ops/optim_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    o->galore_exact_refreshes++;
}

extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info, size_t,
                    size_t);
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t, size_t);

static bool galore_subspace(const struct lmc_optim *o) {
    const enum lmc_galore_refresh m = o->cfg.galore_refresh;
    return (m == LMC_GALORE_REFRESH_SUBSPACE || (m == LMC_GALORE_REFRESH_AUTO && !o->be->host_memory)) &&
           o->be->galore_ritz && o->be->galore_orth && o->be->galore_rotate;
}

/* One CholeskyQR pass's factor for one matrix (the subspace refresh's
 * orthonormalisation of Y (k x r) or of Z = G P^T): C = Y^T Y (ct, r x r
 * floats formed in fp32 by the backend) plus a shift s I = U^T U in double
 * (dpotrf), and x = U^-1 (row-major floats, upper triangular): Y x has
 * nearly orthonormal columns. A raw power step's Y has cond(Y) of 1e4 and
 * more on real gradients (its columns all lean toward the top singular
 * vectors), so C's cond(Y)^2 exceeds fp32's 1/eps and the C as rounded is
 * not positive definite: the shift s (u sqrt(k) tr C, u = 2^-24, k the
 * longer side: the size of C's rounding; times 10 per failed try;
 * first_shift false: 0 first) makes it so and caps cond(Y x) near
 * sqrt(s) / sigma_min(Y) (shifted CholeskyQR); the next pass, unshifted,
 * then finds Y x well conditioned. Nonzero: C's trace not positive and
 * finite (a zero or NaN gradient), or no shift up to 1e8 times the first
 * worked. */
static int chol_inv(int64_t r, int64_t k, const float *ct, float *x, double *h, bool first_shift) {
    double *A = h, tr = 0;
    const int n = (int)r;
    int info = 0;
    for (int64_t i = 0; i < r; i++) tr += ct[i * r + i];
    if (!(tr > 0) || !isfinite(tr)) return -1;
    const double base = 0x1p-24 * sqrt((double)k) * tr;
    double sh = first_shift ? base : 0;
    for (int tries = 0; tries < 9; tries++) {
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < r; j++)
                A[i * r + j] = 0.5 * ((double)ct[i * r + j] + ct[j * r + i]) + (i == j ? sh : 0.0);
        dpotrf_("U", &n, A, &n, &info, 1); /* column-major upper: C + s I = U^T U */
        if (!info) break;
        sh = sh > 0 ? 10 * sh : base;
    }
    if (info) return -1;
    dtrtri_("U", "N", &n, A, &n, &info, 1, 1); /* U^-1, in place */
    if (info) return -1;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < r; j++) x[i * r + j] = i <= j ? (float)A[i + j * r] : 0.0f;
    return 0;
}

/* host doubles of one r x r solve: C, T (r*r each), the eigenvalues (r),
 * dsyevd's work (1 + 6r + 2r^2) and its iwork (3 + 5r ints) */
static size_t ritz_doubles(int64_t r) { return (size_t)(4 * r * r + 10 * r + 8); }

/* GaLore's subspace refresh, the host's part for one matrix (optim.h,
 * LMC_GALORE_REFRESH_SUBSPACE): given C = Y^T Y and T = Y^T M Y (ct, r x r
 * floats each, from the backend's galore_ritz), the Rayleigh–Ritz step on
 * span(Y) in double: T v = l C v through the Cholesky factor of C (C = L L^T,
 * the symmetric eigenproblem of L^-1 T L^-T by dsyevd, v = L^-T u); w's row j
 * (r floats) the coefficients of the vector with the j-th largest l.
 * After the two CholeskyQR passes C is near the identity; returns nonzero
 * when it is not positive definite or its Cholesky pivots spread more than
 * 10x (Y kept directions below fp32's rounding through both passes: a
 * gradient of rank < r at working precision, or zero) or LAPACK fails: the
 * caller refreshes exactly. */
static int ritz_solve(int64_t r, const float *ct, float *w, double *h) {
    double *Cd = h, *Td = Cd + r * r, *ev = Td + r * r, *work = ev + r;
    const int n = (int)r, lwork = 1 + 6 * n + 2 * n * n, liwork = 3 + 5 * n;
    int *iwork = (int *)(work + lwork), info = 0;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < r; j++) { /* symmetrised; row- and column-major alike */
            Cd[i * r + j] = 0.5 * ((double)ct[i * r + j] + ct[j * r + i]);
            Td[i * r + j] = 0.5 * ((double)ct[r * r + i * r + j] + ct[r * r + j * r + i]);
        }
    dpotrf_("L", &n, Cd, &n, &info, 1); /* C = L L^T (column-major lower) */
    if (info) return -1;
    double dmin = INFINITY, dmax = 0;
    for (int64_t i = 0; i < r; i++) dmin = fmin(dmin, Cd[i * r + i]), dmax = fmax(dmax, Cd[i * r + i]);
    if (!(dmin > 0.1 * dmax)) return -1;
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, n, n, 1.0, Cd, n, Td, n);
    cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, n, n, 1.0, Cd, n, Td, n);
    dsyevd_("V", "L", &n, Td, &n, ev, work, &lwork, iwork, &liwork, &info, 1, 1); /* ascending; columns */
    if (info) return -1;
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, n, n, 1.0, Cd, n, Td, n);
    for (int64_t j = 0; j < r; j++)
        for (int64_t i = 0; i < r; i++) w[j * r + i] = (float)Td[(r - 1 - j) * r + i]; /* descending */
    return 0;
}

static int64_t al64(int64_t f) { return (f + 63) & ~(int64_t)63; }

/* threads for the refreshes: the low-rank slots, at most 16 and the CPUs */
static int pool_threads(const struct lmc_optim *o) {
    int n = 0;
    for (int i = 0; i < o->n_params; i++)
        n += o->slots[i].group == LMC_GROUP_GALORE || o->slots[i].group == LMC_GROUP_APOLLO;
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    return (int)LMC_MAX(1, LMC_MIN((int64_t)LMC_MIN(n, 16), (int64_t)(ncpu > 0 ? ncpu : 1)));
}

/* The subspace refresh's memory, made on first use for every GaLore slot
 * at once: backend memory [Y of each][C, T of each][w of each][ritz work],
 * the host copies of the C, T and w parts, per-thread solve scratch and
 * the solve threads. false: memory is short (the caller refreshes exactly). */
static bool subspace_ready(struct lmc_optim *o) {
    if (o->gs_dev) return true;
    const struct lmc_backend *be = o->be;
    int64_t ny = 0, nct = 0, nw = 0, nwork = 0, rmax = 0;
    int ng = 0;
    for (int i = 0; i < o->n_params; i++) {
        const struct lmc_optim_slot *s = &o->slots[i];
        if (s->group != LMC_GROUP_GALORE) continue;
        ng++;
        ny += al64(LMC_MIN(s->rows, s->cols) * s->rank), nct += al64(2 * s->rank * s->rank);
        nw += al64(s->rank * s->rank);
        nwork = LMC_MAX(nwork, lmc_galore_ritz_work_floats(s->rows, s->cols, s->rank));
        rmax = LMC_MAX(rmax, s->rank);
    }
    if (!ng) return false;
    const int th = pool_threads(o);
    o->gs_y = ny, o->gs_ct = nct, o->gs_w = nw;
    o->gs_hd_per = ritz_doubles(rmax);
    o->gs_dev = be->alloc(be->ctx, (size_t)(ny + nct + nw + al64(nwork)) * sizeof(float));
    o->gs_host = malloc((size_t)(nct + nw) * sizeof(float));
    o->gs_hd = malloc(o->gs_hd_per * (size_t)th * sizeof(double));
    o->gs_threads = th;
    if (o->gs_dev && o->gs_host && o->gs_hd && (th == 1 || !lmc_pool_init(&o->gs_pool, th, NULL))) return true;
    lmc_optim_lowrank_free(o);
    return false;
}

void lmc_optim_lowrank_free(struct lmc_optim *o) {
    if (o->gs_dev) o->be->free(o->be->ctx, o->gs_dev);
    free(o->gs_host), free(o->gs_hd);
    if (o->gs_pool) lmc_pool_free(o->gs_pool);
    o->gs_dev = NULL, o->gs_host = NULL, o->gs_hd = NULL, o->gs_pool = NULL, o->gs_threads = 0;
}

struct ritz_jobs {
    struct lmc_optim_slot **ss;
    const int64_t *oct, *ow; /* floats into the host C, T and w parts */
    const float *ct;
    float *w;
    double *hd;
    size_t hd_per;
    int *rc;
    int pass; /* 0: P's factor from T; 1, 2: Y's CholeskyQR factors (1 shifted); 3: the Ritz coefficients */
};

static void ritz_task(void *arg, int64_t q, int thread) {
    struct ritz_jobs *j = arg;
    const struct lmc_optim_slot *s = j->ss[q];
    double *h = j->hd + (size_t)thread * j->hd_per;
    if (j->rc[q]) return; /* an earlier pass failed: the exact refresh */
    const int64_t len = LMC_MAX(s->rows, s->cols), r = s->rank;
    if (j->pass < 3)
        j->rc[q] = chol_inv(r, len, j->ct + j->oct[q] + (j->pass == 0 ? r * r : 0), j->w + j->ow[q], h, j->pass < 2);
    else j->rc[q] = ritz_solve(r, j->ct + j->oct[q], j->w + j->ow[q], h);
}

/* GaLore's subspace refresh of cnt slots at once (optim.h), in four
 * rounds, each one download of every C, T (the backend's ops queue without
 * a sync), r x r work on the host (a thread per matrix, OpenBLAS
 * single-threaded inside: its own threads on 128 x 128 problems cost more
 * than they give) and one upload of every factor:
 *  0. Z = G P^T's Gram Z^T Z = P M P^T (galore_orth of P by I with g: T)
 *     and its shifted Cholesky: P <- X^T P (galore_orth) makes Z nearly
 *     orthonormal, so Y = M P^T = G^T Z (galore_ritz) has cond(Y) near
 *     s_1 / s_r instead of its square (stabilised subspace iteration);
 *  1, 2. two CholeskyQR passes on Y (the first shifted; galore_orth, the
 *     second also forming T), so C = Y^T Y ~ I;
 *  3. the Rayleigh–Ritz solve, whose coefficients give the new signed
 *     projections (galore_rotate).
 * C and T are then formed in fp32 from orthonormal columns: fp32 GEMMs
 * suffice where C = Y^T Y of the raw power step would not be positive
 * definite (cond(Y)^2 > 1/eps; GPT-2 124M on an H100: 22 of 48 matrices).
 * A slot that fails a round (a gradient of rank < r at fp32 precision, or
 * zero) gets the exact refresh; P is overwritten either way. */
static void galore_subspace_batch(struct lmc_optim *o, struct lmc_optim_slot **ss, int cnt) {
    const struct lmc_backend *be = o->be;
    int64_t *off = malloc((size_t)cnt * 3 * sizeof *off);
    int *rc = calloc((size_t)cnt, sizeof *rc);
    if (!off || !rc || !subspace_ready(o)) {
        for (int q = 0; q < cnt; q++) galore_refresh(o, ss[q]);
        free(off), free(rc);
        return;
    }
    int64_t *oy = off, *oct = off + cnt, *ow = off + 2 * cnt, ny = 0, nct = 0, nw = 0;
    float *dy = o->gs_dev, *dct = dy + o->gs_y, *dw = dct + o->gs_ct, *work = dw + o->gs_w;
    float *hct = o->gs_host, *hw = hct + o->gs_ct;
    for (int q = 0; q < cnt; q++) {
        const struct lmc_optim_slot *s = ss[q];
        oy[q] = ny, oct[q] = nct, ow[q] = nw;
        ny += al64(LMC_MIN(s->rows, s->cols) * s->rank), nct += al64(2 * s->rank * s->rank);
        nw += al64(s->rank * s->rank);
        for (int64_t i = 0; i < s->rank * s->rank; i++) hw[ow[q] + i] = i % (s->rank + 1) ? 0.0f : 1.0f;
    }
    be->upload(be->ctx, dw, hw, (size_t)nw * sizeof(float));
    for (int q = 0; q < cnt; q++) { /* T = P M P^T (P by I: unchanged) */
        const struct lmc_optim_slot *s = ss[q];
        be->galore_orth(be->ctx, s->g, s->proj, dw + ow[q], s->rows, s->cols, s->rank, dct + oct[q], work);
    }
    struct ritz_jobs j = {ss, oct, ow, hct, hw, o->gs_hd, o->gs_hd_per, rc, 0};
    const int nt = openblas_get_num_threads();
    for (int pass = 0; pass < 4; pass++) {
        be->download(be->ctx, hct, dct, (size_t)nct * sizeof(float));
        j.pass = pass;
        if (nt != 1) openblas_set_num_threads(1);
        if (o->gs_pool && cnt > 1) lmc_pool_run(o->gs_pool, cnt, ritz_task, &j);
        else
            for (int q = 0; q < cnt; q++) ritz_task(&j, q, 0);
        if (nt != 1) openblas_set_num_threads(nt);
        be->upload(be->ctx, dw, hw, (size_t)nw * sizeof(float));
        for (int q = 0; q < cnt; q++) {
            struct lmc_optim_slot *s = ss[q];
            float *y = dy + oy[q], *x = dw + ow[q], *ct = dct + oct[q];
            if (rc[q]) continue;
            if (pass == 0) {
                be->galore_orth(be->ctx, NULL, s->proj, x, s->rows, s->cols, s->rank, ct, work);
                be->galore_ritz(be->ctx, s->g, s->proj, s->rows, s->cols, s->rank, y, ct, work);
            } else if (pass < 3) {
                be->galore_orth(be->ctx, pass == 2 ? s->g : NULL, y, x, s->rows, s->cols, s->rank, ct, work);
            } else {
                be->galore_rotate(be->ctx, s->proj, y, x, s->rows, s->cols, s->rank);
            }
        }
    }
    for (int q = 0; q < cnt; q++) {
        if (rc[q]) galore_refresh(o, ss[q]);
        else o->galore_subspace_refreshes++;
    }
    free(off), free(rc);
}


/* APOLLO's projection into host floats: lmc_optim_gaussian_fill's draws
 * (mul 1), each divided by sqrt(rank) in double, then rounded (the same
 * expressions: the same bits as filling doubles first). */
static void apollo_draw(const struct lmc_optim *o, const struct lmc_optim_slot *s, int64_t refresh, float *ph) {
    const int64_t np = s->rank * (s->right ? s->cols : s->rows);
    uint64_t st = lmc_optim_apollo_seed(o->cfg.apollo_seed, s->idx, refresh);
    const double two_pi = 6.283185307179586476925286766559, sq = sqrt((double)s->rank);
    for (int64_t i = 0; i < np; i += 2) {
        double u1 = (double)((lmc_rng_next(&st) >> 11) + 1) * (1.0 / 9007199254740992.0);
        double u2 = (double)(lmc_rng_next(&st) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1)), z0 = r * cos(two_pi * u2) * 1.0;
        ph[i] = (float)(z0 / sq);
        if (i + 1 < np) {
            double z1 = r * sin(two_pi * u2) * 1.0;
            ph[i + 1] = (float)(z1 / sq);
        }
    }
}

static void apollo_refresh(struct lmc_optim *o, struct lmc_optim_slot *s, int64_t refresh) {
    const int64_t np = s->rank * (s->right ? s->cols : s->rows);
    float *ph = (float *)o->host_scratch;
    apollo_draw(o, s, refresh, ph);
    o->be->upload(o->be->ctx, s->proj, ph, (size_t)np * sizeof(float));
}

struct apollo_jobs {
    const struct lmc_optim *o;
    struct lmc_optim_slot **ss;
    const int64_t *off;
    float *h;
    int64_t refresh;
};

static void apollo_task(void *arg, int64_t q, int thread) {
    (void)thread;
    struct apollo_jobs *j = arg;
    apollo_draw(j->o, j->ss[q], j->refresh, j->h + j->off[q]);
}

/* APOLLO's refreshes of cnt slots at once: the draws on the host, a thread
 * per matrix (the 124M model's 48 projections: 9.4M Gaussians), then an
 * upload per slot. Without the memory: one slot at a time. */
static void apollo_refresh_batch(struct lmc_optim *o, struct lmc_optim_slot **ss, int cnt, int64_t refresh) {
    int64_t *off = malloc((size_t)cnt * sizeof *off), nf = 0;
    if (off && !o->gs_host) {
        int64_t all = 0;
        for (int i = 0; i < o->n_params; i++)
            if (o->slots[i].group == LMC_GROUP_APOLLO)
                all += al64(o->slots[i].rank * (o->slots[i].right ? o->slots[i].cols : o->slots[i].rows));
        o->gs_host = malloc((size_t)all * sizeof(float));
        if (o->gs_host && !o->gs_pool && (o->gs_threads = pool_threads(o)) > 1 &&
            lmc_pool_init(&o->gs_pool, o->gs_threads, NULL))
            o->gs_pool = NULL, o->gs_threads = 1;
    }
    if (!off || !o->gs_host) {
        for (int q = 0; q < cnt; q++) apollo_refresh(o, ss[q], refresh);
        free(off);
        return;
    }
    for (int q = 0; q < cnt; q++) {
        off[q] = nf;
        nf += al64(ss[q]->rank * (ss[q]->right ? ss[q]->cols : ss[q]->rows));
    }
    struct apollo_jobs j = {o, ss, off, o->gs_host, refresh};
    if (o->gs_pool && cnt > 1) lmc_pool_run(o->gs_pool, cnt, apollo_task, &j);
    else
        for (int q = 0; q < cnt; q++) apollo_task(&j, q, 0);
    for (int q = 0; q < cnt; q++) {
        const struct lmc_optim_slot *s = ss[q];
        o->be->upload(o->be->ctx, s->proj, o->gs_host + off[q],
                      (size_t)(s->rank * (s->right ? s->cols : s->rows)) * sizeof(float));
    }
    free(off);
}

void lmc_optim_lowrank_refresh_due(struct lmc_optim *o, int64_t step) {
    const bool apollo = o->cfg.kind == LMC_OPTIM_APOLLO || o->cfg.kind == LMC_OPTIM_APOLLO_MINI;
    const int gap = apollo ? o->cfg.apollo_update_gap : o->cfg.galore_update_gap;
    if ((!apollo && o->cfg.kind != LMC_OPTIM_GALORE) || (step - 1) % gap) return;
    if (!apollo && (step <= 1 || !galore_subspace(o))) return; /* exact: per slot, on the host */
    const enum lmc_optim_group g = apollo ? LMC_GROUP_APOLLO : LMC_GROUP_GALORE;
    struct lmc_optim_slot **ss = malloc((size_t)(o->n_params > 0 ? o->n_params : 1) * sizeof *ss);
    LMC_ASSERT(ss);
    int cnt = 0;
    for (int i = 0; i < o->n_params; i++)
        if (o->slots[i].group == g && o->slots[i].refreshed != step) ss[cnt++] = &o->slots[i];
    if (cnt && apollo) apollo_refresh_batch(o, ss, cnt, (step - 1) / gap);
    else if (cnt) galore_subspace_batch(o, ss, cnt);
    for (int q = 0; q < cnt; q++) ss[q]->refreshed = step;
    free(ss);
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
    if ((step - 1) % gap == 0 && s->refreshed != step) { /* not yet by lmc_optim_lowrank_refresh_due */
        if (apollo) apollo_refresh(o, s, (step - 1) / gap);
        else if (step == 1 || !galore_subspace(o)) galore_refresh(o, s);
        else galore_subspace_batch(o, &s, 1);
        s->refreshed = step;
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
