/* gptq_algo.c — GPTQ for one layer in float64, following the published
 * algorithm step by step (the reference implementation's fasterquant):
 * dead inputs zeroed, static group parameters, act-order permutation,
 * dampening, H^-1 through Cholesky (upper factor of the inverse), then per
 * block of `block` columns: quantize a column, divide its error by the
 * factor's diagonal, update the block's later columns, and after the block
 * the columns to its right in one product. Group parameters (non-static)
 * come from the weights as updated at the start of the column's block, as
 * the reference code reads them. */
#include "quant/gptq_algo.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lmc_gptq_hessian_add(double *H, int64_t k, const float *x, int64_t n_rows) {
    for (int64_t r = 0; r < n_rows; r++) {
        const float *v = x + r * k;
        for (int64_t i = 0; i < k; i++) {
            double vi = v[i];
            if (vi == 0) continue;
            double *h = H + i * k;
            for (int64_t j = 0; j < k; j++) h[j] += vi * (double)v[j];
        }
    }
}

/* GPTQ's find_params on one row's values (double). */
static void params(const double *x, int64_t cnt, int64_t stride, int bits, bool sym, double *scale, double *zero) {
    double lo = 0, hi = 0, maxq = (double)((1 << bits) - 1);
    for (int64_t i = 0; i < cnt; i++) {
        lo = fmin(lo, x[i * stride]);
        hi = fmax(hi, x[i * stride]);
    }
    if (sym) {
        hi = fmax(fabs(lo), hi);
        if (lo < 0) lo = -hi;
    }
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    *scale = (hi - lo) / maxq;
    *zero = sym ? (maxq + 1) / 2 : nearbyint(-lo / *scale);
}

static double qcode(double x, double scale, double zero, int bits) {
    double q = nearbyint(x / scale) + zero, maxq = (double)((1 << bits) - 1);
    return q < 0 ? 0 : q > maxq ? maxq : q;
}

/* In-place lower Cholesky of the (k, k) matrix a; false if not positive definite. */
static bool cholesky(double *a, int64_t k) {
    for (int64_t j = 0; j < k; j++) {
        double s = a[j * k + j];
        for (int64_t p = 0; p < j; p++) s -= a[j * k + p] * a[j * k + p];
        if (!(s > 0)) return false;
        double d = sqrt(s);
        a[j * k + j] = d;
        for (int64_t i = j + 1; i < k; i++) {
            double t = a[i * k + j];
            for (int64_t p = 0; p < j; p++) t -= a[i * k + p] * a[j * k + p];
            a[i * k + j] = t / d;
        }
        for (int64_t i = 0; i < j; i++) a[i * k + j] = 0;
    }
    return true;
}

/* Upper Cholesky factor U of H^-1 (H^-1 = U^T U) from H; H is overwritten. */
static bool inverse_upper(double *h, int64_t k, double *u) {
    if (!cholesky(h, k)) return false;
    /* L^-1 in u (lower), then H^-1 = L^-T L^-1 */
    memset(u, 0, (size_t)(k * k) * sizeof *u);
    for (int64_t j = 0; j < k; j++) {
        u[j * k + j] = 1.0 / h[j * k + j];
        for (int64_t i = j + 1; i < k; i++) {
            double s = 0;
            for (int64_t p = j; p < i; p++) s += h[i * k + p] * u[p * k + j];
            u[i * k + j] = -s / h[i * k + i];
        }
    }
    for (int64_t i = 0; i < k; i++) /* h = L^-T L^-1 (symmetric) */
        for (int64_t j = 0; j <= i; j++) {
            double s = 0;
            for (int64_t p = i; p < k; p++) s += u[p * k + i] * u[p * k + j];
            h[i * k + j] = h[j * k + i] = s;
        }
    if (!cholesky(h, k)) return false;
    for (int64_t i = 0; i < k; i++) /* U = L'^T */
        for (int64_t j = 0; j < k; j++) u[i * k + j] = j >= i ? h[j * k + i] : 0;
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
                params(W + r * k + gi * gs, LMC_MIN(gs, k - gi * gs), 1, o->bits, o->sym, &sg[gi * n + r], &zg[gi * n + r]);
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
    if (!inverse_upper(H, k, U)) {
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
                    params(tmp, m, 1, o->bits, o->sym, &sc[r], &zc[r]);
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
        for (int64_t r = 0; r < n; r++) /* lazy batch: the columns right of the block at once */
            for (int64_t j = i2; j < k; j++) {
                double acc = 0;
                for (int64_t i = 0; i < cnt; i++) acc += E[r * block + i] * U[(i1 + i) * k + j];
                W[r * k + j] -= acc;
            }
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
