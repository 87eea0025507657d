/* test_attn_block.c — the CPU backend's ring-attention block ops
 * (ops/cpu/attn_block.c: attn_block_fwd / attn_block_merge /
 * attn_block_bwd) on random non-zero inputs of odd sizes, GQA: the block
 * forward against a float64 reference (causal by arbitrary global
 * positions, rows without a visible key included, and non-causal); keys
 * split into three blocks, run block by block and merged by log-sum-exp,
 * equal one block of every key (output, lse), and the backward of the
 * blocks with the merged lse sums to the one-block backward; the one-block
 * backward against central finite differences of sum(dout * out) in
 * float64. */
#include "core/core.h"
#include "ops/backend.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 20261205;
static struct lmc_backend cpu;

static float *rnd(int64_t n, float s) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = test_rand(&rng) * s;
    return p;
}

struct shp {
    int64_t n, ns, H, KV, hd;
};

/* float64 attention of (n) queries against (ns) keys: out (n, H hd), lse (n, H); -inf rows: 0 */
static void ref_fwd(const struct shp *s, double *out, double *lse, const double *q, const double *k, const double *v,
                    const int32_t *qp, const int32_t *kp, int causal, float scale) {
    int64_t qd = s->H * s->hd, kvd = s->KV * s->hd, g = s->H / s->KV;
    for (int64_t i = 0; i < s->n; i++)
        for (int64_t h = 0; h < s->H; h++) {
            double m = -INFINITY, sum = 0;
            double *o = out + i * qd + h * s->hd;
            memset(o, 0, sizeof(double) * (size_t)s->hd);
            for (int64_t j = 0; j < s->ns; j++) {
                if (causal && kp[j] > qp[i]) continue;
                double d = 0;
                for (int64_t e = 0; e < s->hd; e++) d += q[i * qd + h * s->hd + e] * k[j * kvd + (h / g) * s->hd + e];
                m = fmax(m, d * scale);
            }
            if (m == -INFINITY) {
                lse[i * s->H + h] = -INFINITY;
                continue;
            }
            for (int64_t j = 0; j < s->ns; j++) {
                if (causal && kp[j] > qp[i]) continue;
                double d = 0;
                for (int64_t e = 0; e < s->hd; e++) d += q[i * qd + h * s->hd + e] * k[j * kvd + (h / g) * s->hd + e];
                double p = exp(d * scale - m);
                sum += p;
                for (int64_t e = 0; e < s->hd; e++) o[e] += p * v[j * kvd + (h / g) * s->hd + e];
            }
            for (int64_t e = 0; e < s->hd; e++) o[e] /= sum;
            lse[i * s->H + h] = m + log(sum);
        }
}

static double *to_d(const float *a, int64_t n) {
    double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}

/* max |a - b| / max |b| over finite b (a must be -inf where b is) */
static double err_vs(const float *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (b[i] == -INFINITY) {
            if (a[i] != -INFINITY) return INFINITY;
            continue;
        }
        if (a[i] != a[i]) return INFINITY;
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / (den > 1e-6 ? den : 1.0);
}

static void run(const struct shp *s, int causal) {
    const int64_t qd = s->H * s->hd, kvd = s->KV * s->hd, n = s->n, ns = s->ns;
    const float scale = 1.0f / sqrtf((float)s->hd);
    float *q = rnd(n * qd, 2), *k = rnd(ns * kvd, 1), *v = rnd(ns * kvd, 1), *dout = rnd(n * qd, 1);
    int32_t *qp = malloc(sizeof(int32_t) * (size_t)n), *kp = malloc(sizeof(int32_t) * (size_t)ns);
    for (int64_t i = 0; i < n; i++) qp[i] = (int32_t)(3 + 2 * i); /* the first rows see no key of a later block */
    for (int64_t j = 0; j < ns; j++) kp[j] = (int32_t)(5 + (j * 7) % (2 * ns + 1));
    float *o = malloc(sizeof(float) * (size_t)(n * qd)), *l = malloc(sizeof(float) * (size_t)(n * s->H));
    double *od = malloc(sizeof(double) * (size_t)(n * qd)), *ld = malloc(sizeof(double) * (size_t)(n * s->H));
    double *qd64 = to_d(q, n * qd), *kd64 = to_d(k, ns * kvd), *vd64 = to_d(v, ns * kvd);
    cpu.attn_block_fwd(cpu.ctx, o, l, q, k, v, qp, kp, n, ns, s->H, s->KV, s->hd, scale, causal);
    ref_fwd(s, od, ld, qd64, kd64, vd64, qp, kp, causal, scale);
    double eo = err_vs(o, od, n * qd), el = err_vs(l, ld, n * s->H);
    CHECK_MSG(eo < 1e-5 && el < 1e-5, "fwd n=%lld ns=%lld causal %d: out %.3g lse %.3g", (long long)n, (long long)ns,
              causal, eo, el);
    /* three blocks merged = one block */
    float *mo = calloc((size_t)(n * qd), sizeof(float)), *ml = malloc(sizeof(float) * (size_t)(n * s->H));
    float *bo = malloc(sizeof(float) * (size_t)(n * qd)), *bl = malloc(sizeof(float) * (size_t)(n * s->H));
    for (int64_t i = 0; i < n * s->H; i++) ml[i] = -INFINITY;
    int64_t cut[4] = {0, ns / 3, (2 * ns) / 3 + 1, ns};
    if (cut[2] > ns) cut[2] = ns;
    for (int b = 2; b >= 0; b--) { /* in another order than the keys' */
        int64_t j0 = cut[b], m = cut[b + 1] - cut[b];
        if (m <= 0) continue;
        cpu.attn_block_fwd(cpu.ctx, bo, bl, q, k + j0 * kvd, v + j0 * kvd, qp, kp + j0, n, m, s->H, s->KV, s->hd, scale,
                           causal);
        cpu.attn_block_merge(cpu.ctx, mo, ml, bo, bl, n, s->H, s->hd);
    }
    double *o64 = to_d(o, n * qd), *l64 = to_d(l, n * s->H);
    double em = err_vs(mo, o64, n * qd), eml = err_vs(ml, l64, n * s->H);
    CHECK_MSG(em < 1e-5 && eml < 1e-5, "merge n=%lld causal %d: out %.3g lse %.3g", (long long)n, causal, em, eml);
    /* backward: one block; the three blocks with the merged lse sum to it */
    float *dq = calloc((size_t)(n * qd), 4), *dk = calloc((size_t)(ns * kvd), 4), *dv = calloc((size_t)(ns * kvd), 4);
    float *dq3 = calloc((size_t)(n * qd), 4), *dk3 = calloc((size_t)(ns * kvd), 4), *dv3 = calloc((size_t)(ns * kvd), 4);
    cpu.attn_block_bwd(cpu.ctx, dq, dk, dv, dout, o, l, q, k, v, qp, kp, n, ns, s->H, s->KV, s->hd, scale, causal);
    for (int b = 0; b < 3; b++) {
        int64_t j0 = cut[b], m = cut[b + 1] - cut[b];
        if (m > 0)
            cpu.attn_block_bwd(cpu.ctx, dq3, dk3 + j0 * kvd, dv3 + j0 * kvd, dout, mo, ml, q, k + j0 * kvd,
                               v + j0 * kvd, qp, kp + j0, n, m, s->H, s->KV, s->hd, scale, causal);
    }
    double *dq64 = to_d(dq, n * qd), *dk64 = to_d(dk, ns * kvd), *dv64 = to_d(dv, ns * kvd);
    double e3 = fmax(err_vs(dq3, dq64, n * qd), fmax(err_vs(dk3, dk64, ns * kvd), err_vs(dv3, dv64, ns * kvd)));
    CHECK_MSG(e3 < 1e-5, "bwd over blocks n=%lld causal %d: %.3g", (long long)n, causal, e3);
    /* finite differences of f = sum(dout * out) in float64, at every input element */
    double *gq = calloc((size_t)(n * qd), 8), *gk = calloc((size_t)(ns * kvd), 8), *gv = calloc((size_t)(ns * kvd), 8);
    double *arrs[3] = {qd64, kd64, vd64}, *grads[3] = {gq, gk, gv};
    int64_t lens[3] = {n * qd, ns * kvd, ns * kvd};
    const double h = 1e-5;
    for (int a = 0; a < 3; a++)
        for (int64_t x = 0; x < lens[a]; x++) {
            double keep = arrs[a][x], f[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                arrs[a][x] = keep + (sgn ? -h : h);
                ref_fwd(s, od, ld, qd64, kd64, vd64, qp, kp, causal, scale);
                f[sgn] = 0;
                for (int64_t i = 0; i < n * qd; i++) f[sgn] += dout[i] * od[i];
            }
            arrs[a][x] = keep;
            grads[a][x] = (f[0] - f[1]) / (2 * h);
        }
    double eg = fmax(err_vs(dq, gq, n * qd), fmax(err_vs(dk, gk, ns * kvd), err_vs(dv, gv, ns * kvd)));
    CHECK_MSG(eg < 1e-4, "bwd vs finite differences n=%lld ns=%lld causal %d: %.3g", (long long)n, (long long)ns,
              causal, eg);
    printf("  n=%lld ns=%lld H=%lld KV=%lld hd=%lld %s: fwd %.2e/%.2e merge %.2e/%.2e blocks bwd %.2e fd %.2e\n",
           (long long)n, (long long)ns, (long long)s->H, (long long)s->KV, (long long)s->hd, causal ? "causal" : "full",
           eo, el, em, eml, e3, eg);
    free(q), free(k), free(v), free(dout), free(qp), free(kp), free(o), free(l), free(od), free(ld);
    free(qd64), free(kd64), free(vd64), free(mo), free(ml), free(bo), free(bl), free(o64), free(l64);
    free(dq), free(dk), free(dv), free(dq3), free(dk3), free(dv3), free(dq64), free(dk64), free(dv64);
    free(gq), free(gk), free(gv);
}

int main(void) {
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 1, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    static const struct shp shapes[] = {{5, 7, 2, 1, 3}, {1, 1, 1, 1, 5}, {6, 11, 4, 2, 7}, {9, 4, 3, 3, 6}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int causal = 0; causal < 2; causal++) run(&shapes[i], causal);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_attn_block");
}
