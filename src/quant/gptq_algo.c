/* gptq_algo.c — GPTQ for one layer in float64, following the published
 * algorithm step by step (the reference implementation's fasterquant):
 * dead inputs zeroed, static group parameters, act-order permutation,
 * dampening, H^-1 through Cholesky (upper factor of the inverse), then per
 * block of `block` columns: quantize a column, divide its error by the
 * factor's diagonal, update the block's later columns, and after the block
 * the columns to its right in one product. Group parameters (non-static)
 * come from the weights as updated at the start of the column's block, as
 * the reference code reads them. The Hessian products, the factorisations
 * (LAPACK dpotrf/dpotri from OpenBLAS) and the lazy updates run in BLAS. */

/* LAPACK (column-major; on a symmetric row-major matrix 'L' addresses the
 * row-major upper triangle). */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);
#include "quant/gptq_algo.h"
#include "core/core.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void lmc_gptq_hessian_add(double *H, int64_t k, const float *x, int64_t n_rows) {
    enum { CH = 256 };
    double *xd = malloc((size_t)(CH * k) * sizeof *xd);
    for (int64_t r0 = 0; r0 < n_rows; r0 += CH) {
        int64_t m = LMC_MIN(CH, n_rows - r0);
        if (!xd) { /* no scratch: row by row */
            for (int64_t r = r0; r < r0 + m; r++)
                for (int64_t i = 0; i < k; i++)
                    for (int64_t j = 0; j < k; j++) H[i * k + j] += (double)x[r * k + i] * (double)x[r * k + j];
            continue;
        }
        for (int64_t i = 0; i < m * k; i++) xd[i] = x[r0 * k + i];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)k, (int)m, 1.0, xd, (int)k, xd, (int)k, 1.0,
                    H, (int)k);
    }
    free(xd);
}

static double qcode(double x, double scale, double zero, int bits) {
    double q = nearbyint(x / scale) + zero, maxq = (double)((1 << bits) - 1);
    return q < 0 ? 0 : q > maxq ? maxq : q;
}

/* GPTQ's find_params on one row's values (double); with mse, the range
 * [lo, hi] shrunk by p = 1 - t / 100, t < LMC_QUANT_CLIP_GRID, for the
 * smallest sum of squared dequantization errors (the first such p; p = 1
 * is the min/max rule). */
static void params(const double *x, int64_t cnt, int bits, bool sym, bool mse, double *scale, double *zero) {
    double lo = 0, hi = 0, maxq = (double)((1 << bits) - 1);
    for (int64_t i = 0; i < cnt; i++) {
        lo = fmin(lo, x[i]);
        hi = fmax(hi, x[i]);
    }
    if (sym) {
        hi = fmax(fabs(lo), hi);
        if (lo < 0) lo = -hi;
    }
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    double best = INFINITY;
    for (int t = 0; t < (mse ? LMC_QUANT_CLIP_GRID : 1); t++) {
        double p = 1.0 - 0.01 * t, s = (p * hi - p * lo) / maxq, z = sym ? (maxq + 1) / 2 : nearbyint(-(p * lo) / s);
        double e = 0;
        for (int64_t i = 0; mse && i < cnt; i++) {
            double d = s * (qcode(x[i], s, z, bits) - z) - x[i];
            e += d * d;
        }
        if (e < best) best = e, *scale = s, *zero = z;
    }
}

/* Upper Cholesky factor U of H^-1 (H^-1 = U^T U, row-major, lower part
 * zero) in place of H; false if H is not positive definite. */
static bool inverse_upper(double *h, int64_t k) {
    int n = (int)k, info = 0;
    dpotrf_("L", &n, h, &n, &info);
    if (info) return false;
    dpotri_("L", &n, h, &n, &info);
    if (info) return false;
    for (int64_t i = 0; i < k; i++) /* the row-major upper triangle holds H^-1 */
        for (int64_t j = 0; j < i; j++) h[i * k + j] = h[j * k + i];
    dpotrf_("L", &n, h, &n, &info);
    if (info) return false;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < i; j++) h[i * k + j] = 0;
    return true;
}

lmc_status lmc_gptq_quantize(const float *w_in, int64_t n, int64_t k, const double *H_in,
                             const struct lmc_gptq_opts *o, struct lmc_qgroups *g, double *loss, lmc_err *err) {
    int64_t gs = o->group_size > 0 && o->group_size < k ? o->group_size : k;
    int64_t block = o->block > 0 ? o->block : 128;
    lmc_status s = lmc_qgroups_alloc(g, n, k, o->bits, gs, err);
    if (s) return s;
    int64_t kk;
    if (!lmc_mul_ok(k, k, &kk) || kk > ((int64_t)1 << 32)) {
        lmc_qgroups_free(g);
        return lmc_err_set(err, LMC_ERR_OOM, "gptq: %lld inputs is too many", (long long)k);
    }
    double *W = malloc((size_t)(n * k) * sizeof *W), *H = malloc((size_t)kk * sizeof *H);
    double *U = malloc((size_t)kk * sizeof *U), *E = malloc((size_t)(n * block) * sizeof *E);
    double *sg = malloc((size_t)(n * g->n_groups) * sizeof *sg), *zg = malloc((size_t)(n * g->n_groups) * sizeof *zg);
    double *sc = malloc((size_t)n * sizeof *sc), *zc = malloc((size_t)n * sizeof *zc);
    int64_t *perm = malloc((size_t)k * sizeof *perm);
    uint8_t *Q = malloc((size_t)(n * k));
    double *B = malloc((size_t)(n * block) * sizeof *B), *tmp = malloc((size_t)gs * sizeof *tmp);
    if (!W || !H || !U || !E || !sg || !zg || !sc || !zc || !perm || !Q || !B || !tmp) {
        s = lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory for (%lld, %lld)", (long long)n, (long long)k);
        goto out;
    }
    for (int64_t i = 0; i < n * k; i++) W[i] = w_in[i];
    memcpy(H, H_in, (size_t)kk * sizeof *H);
    for (int64_t i = 0; i < k; i++)
        if (H[i * k + i] == 0) { /* an input never active: weight irrelevant */
            H[i * k + i] = 1;
            for (int64_t r = 0; r < n; r++) W[r * k + i] = 0;
        }
    bool stat = o->act_order && o->static_groups;
    if (stat)
        for (int64_t gi = 0; gi < g->n_groups; gi++)
            for (int64_t r = 0; r < n; r++)
                params(W + r * k + gi * gs, LMC_MIN(gs, k - gi * gs), o->bits, o->sym, o->mse, &sg[gi * n + r],
                       &zg[gi * n + r]);
    for (int64_t i = 0; i < k; i++) perm[i] = i;
    if (o->act_order) { /* columns by decreasing Hessian diagonal (stable) */
        for (int64_t i = 1; i < k; i++) {
            int64_t p = perm[i], j = i;
            while (j > 0 && H[perm[j - 1] * k + perm[j - 1]] < H[p * k + p]) {
                perm[j] = perm[j - 1];
                j--;
            }
            perm[j] = p;
        }
        double *t = U; /* permute W's columns and H */
        for (int64_t r = 0; r < n; r++) {
            for (int64_t i = 0; i < k; i++) t[i] = W[r * k + perm[i]];
            memcpy(W + r * k, t, (size_t)k * sizeof *t);
        }
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) t[i * k + j] = H[perm[i] * k + perm[j]];
        memcpy(H, t, (size_t)kk * sizeof *H);
    }
    double dsum = 0;
    for (int64_t i = 0; i < k; i++) dsum += H[i * k + i];
    double damp = o->damp * dsum / (double)k;
    for (int64_t i = 0; i < k; i++) H[i * k + i] += damp;
    memcpy(U, H, (size_t)kk * sizeof *U);
    if (!inverse_upper(U, k)) {
        s = lmc_err_set(err, LMC_ERR_ARG, "gptq: the dampened Hessian is not positive definite (more calibration data?)");
        goto out;
    }
    double total = 0;
    for (int64_t i1 = 0; i1 < k; i1 += block) {
        int64_t i2 = LMC_MIN(k, i1 + block), cnt = i2 - i1;
        for (int64_t r = 0; r < n; r++) memcpy(B + r * block, W + r * k + i1, (size_t)cnt * sizeof *B);
        for (int64_t i = 0; i < cnt; i++) {
            int64_t c = i1 + i;
            if (!stat && c % gs == 0) /* group parameters from W as of this block's start (the reference's W) */
                for (int64_t r = 0; r < n; r++) {
                    int64_t m = LMC_MIN(gs, k - c);
                    for (int64_t j = 0; j < m; j++) tmp[j] = c + j < i2 ? B[r * block + c + j - i1] : W[r * k + c + j];
                    params(tmp, m, o->bits, o->sym, o->mse, &sc[r], &zc[r]);
                }
            double d = U[c * k + c];
            for (int64_t r = 0; r < n; r++) {
                double sr, zr;
                if (stat) {
                    int64_t gi = perm[c] / gs;
                    sr = sg[gi * n + r];
                    zr = zg[gi * n + r];
                } else {
                    sr = sc[r];
                    zr = zc[r];
                }
                double wv = W[r * k + c], qv = qcode(wv, sr, zr, o->bits), deq = sr * (qv - zr);
                Q[r * k + c] = (uint8_t)qv;
                if (!stat) {
                    g->scale[(c / gs) * n + r] = (float)sr;
                    g->zero[(c / gs) * n + r] = (int32_t)zr;
                }
                double e = (wv - deq) / d;
                total += (wv - deq) * (wv - deq) / (d * d) / 2;
                E[r * block + i] = e;
                for (int64_t j = c + 1; j < i2; j++) W[r * k + j] -= e * U[c * k + j];
            }
        }
        if (i2 < k) /* lazy batch: the columns right of the block at once, W[:, i2:] -= E U[i1:i2, i2:] */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)(k - i2), (int)cnt, -1.0, E, (int)block,
                        U + i1 * k + i2, (int)k, 1.0, W + i2, (int)k);
    }
    if (loss) *loss = total;
    for (int64_t r = 0; r < n; r++) /* codes back in the original column order */
        for (int64_t i = 0; i < k; i++) g->q[r * k + perm[i]] = Q[r * k + i];
    if (stat) {
        for (int64_t i = 0; i < n * g->n_groups; i++) {
            g->scale[i] = (float)sg[i];
            g->zero[i] = (int32_t)zg[i];
        }
    } else {
        for (int64_t i = 0; i < k; i++) g->g_idx[perm[i]] = (int32_t)(i / gs);
    }
out:
    free(W), free(H), free(U), free(E), free(sg), free(zg), free(sc), free(zc), free(perm), free(Q), free(B), free(tmp);
    if (s) lmc_qgroups_free(g);
    return s;
}
