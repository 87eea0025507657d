/* adamw8bit.c — 8-bit AdamW on the CPU: the dynamic 8-bit code, the
 * nearest-code quantiser and the one-pass blockwise step (dequantize both
 * moments, AdamW's element formula, requantize with the block's new
 * absmax), as ops/optim_ops.h states them; the op runs whole blocks per
 * thread-pool task. */
#include "ops/cpu/ops_cpu.h"
#include "ops/optim_ops.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void lmc_q8_dynamic_code(float code[256], bool is_signed) {
    int n = 0, bits = is_signed ? 7 : 8;
    double p10 = 1;
    for (int E = 0; E <= 6; E++, p10 *= 10) {
        int nf = 1 << (bits - 1 - E);
        for (int j = 0; j < nf; j++) {
            double mag = (0.1 + 0.9 * (j + 0.5) / nf) / p10;
            code[n++] = (float)mag;
            if (is_signed) code[n++] = (float)-mag;
        }
    }
    code[n++] = 0.0f;
    code[n++] = 1.0f;
    LMC_ASSERT(n == 256);
    qsort(code, 256, sizeof *code, cmp_float);
}

uint8_t lmc_q8_quantize(const float code[256], float x) {
    if (x <= code[0]) return 0;
    /* q = the last index with code[q] <= x: a branch-free binary search */
    int q = 0;
    for (int step = 128; step; step >>= 1) q += code[q + step] <= x ? step : 0;
    if (q == 255) return 255;
    if (x - code[q] > code[q + 1] - x) q++; /* nearest, the lower on a tie */
    if (code[q] == 0.0f && x != 0.0f) q = x > 0 ? q + 1 : q - 1; /* never 0 for x != 0 */
    return (uint8_t)q;
}

/* A faster twin of lmc_q8_quantize with the same answers: the top 16
 * bits of a monotone integer key of x pick a bucket; lut[bucket] is the
 * last code index <= the bucket's smallest value, and the search goes on
 * from there (a bucket spans under 1% of its values; codes are >= 1.4%
 * apart, so at most a step or two). */
#define Q8_LUT 65536
static inline uint32_t q8_key(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static void q8_lut_build(const float code[256], uint8_t *lut) {
    int q = 0;
    for (uint32_t b = 0; b < Q8_LUT; b++) {
        uint32_t key = b << 16, u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
        float lo;
        memcpy(&lo, &u, 4);
        if (lo != lo) { /* NaN keys: the binary search's answer for NaN starts at 0 */
            lut[b] = 0;
            continue;
        }
        while (q < 255 && code[q + 1] <= lo) q++;
        lut[b] = (uint8_t)(code[q] <= lo ? q : 0);
    }
}

static inline uint8_t q8_quantize_lut(const float code[256], const uint8_t *lut, float x) {
    if (x <= code[0]) return 0;
    int q = lut[q8_key(x) >> 16];
    /* two branch-free steps cover a bucket (relative width 2^-7 < the 1.4%
     * any three consecutive codes span); the loop is for safety */
    q += code[LMC_MIN(q + 1, 255)] <= x && q < 255;
    q += code[LMC_MIN(q + 1, 255)] <= x && q < 255;
    while (q < 255 && code[q + 1] <= x) q++;
    if (q == 255) return 255;
    q += x - code[q] > code[q + 1] - x;
    if (code[q] == 0.0f && x != 0.0f) q = x > 0 ? q + 1 : q - 1;
    return (uint8_t)q;
}

/* lut_m, lut_v: q8_lut_build's tables, or NULL (binary search) */
static void adamw8bit_core(float *p, const float *g, uint8_t *qm, uint8_t *qv, float *absmax_m,
                           float *absmax_v, int64_t n, int64_t block, const float *code_m,
                           const float *code_v, const struct lmc_adamw_step *s, const uint8_t *lut_m,
                           const uint8_t *lut_v) {
    LMC_ASSERT(block >= 1 && block <= LMC_Q8_BLOCK_MAX);
    float mb[LMC_Q8_BLOCK_MAX], vb[LMC_Q8_BLOCK_MAX];
    for (int64_t lo = 0, b = 0; lo < n; lo += block, b++) {
        const int64_t len = LMC_MIN(block, n - lo);
        const float am = absmax_m[b], av = absmax_v[b];
        float nm = 0, nv = 0;
        for (int64_t j = 0; j < len; j++) {
            const int64_t i = lo + j;
            float gi = g[i] * s->grad_scale;
            float pi = p[i] * s->decay_mul;
            float m0 = code_m[qm[i]] * am, v0 = code_v[qv[i]] * av;
            float mi = m0 + s->one_minus_b1 * (gi - m0);
            float vi = v0 * s->beta2 + s->one_minus_b2 * gi * gi;
            float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
            p[i] = pi - s->step_size * (mi / denom);
            mb[j] = mi, vb[j] = vi;
            nm = fmaxf(nm, fabsf(mi)), nv = fmaxf(nv, vi);
        }
        absmax_m[b] = nm, absmax_v[b] = nv;
        for (int64_t j = 0; j < len; j++) {
            float xm = nm > 0 ? mb[j] / nm : 0.0f, xv = nv > 0 ? vb[j] / nv : 0.0f;
            qm[lo + j] = lut_m ? q8_quantize_lut(code_m, lut_m, xm) : lmc_q8_quantize(code_m, xm);
            qv[lo + j] = lut_v ? q8_quantize_lut(code_v, lut_v, xv) : lmc_q8_quantize(code_v, xv);
        }
    }
}

void lmc_adamw8bit_apply(float *p, const float *g, uint8_t *qm, uint8_t *qv, float *absmax_m,
                         float *absmax_v, int64_t n, int64_t block, const float *code_m,
                         const float *code_v, const struct lmc_adamw_step *s) {
    adamw8bit_core(p, g, qm, qv, absmax_m, absmax_v, n, block, code_m, code_v, s, NULL, NULL);
}

uint8_t lmc_q8_quantize_fast_check(const float code[256], float x) {
    static_assert(Q8_LUT == 65536, "16-bit buckets");
    uint8_t *lut = malloc(Q8_LUT);
    LMC_ASSERT(lut);
    q8_lut_build(code, lut);
    uint8_t q = q8_quantize_lut(code, lut, x);
    free(lut);
    return q;
}

struct q8_job {
    float *p;
    const float *g;
    uint8_t *qm, *qv;
    float *am, *av;
    int64_t n, block, blocks_per_task;
    const float *cm, *cv;
    const struct lmc_adamw_step *s;
    const uint8_t *lut_m, *lut_v;
};

static void q8_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct q8_job *j = arg;
    const int64_t b0 = t * j->blocks_per_task, lo = b0 * j->block;
    const int64_t len = LMC_MIN(j->n - lo, j->blocks_per_task * j->block);
    adamw8bit_core(j->p + lo, j->g + lo, j->qm + lo, j->qv + lo, j->am + b0, j->av + b0, len, j->block, j->cm,
                   j->cv, j->s, j->lut_m, j->lut_v);
}

/* Whole blocks per task (the result does not depend on the thread count). */
void lmc_cpu_adamw8bit(void *ctx, float *p, const float *g, uint8_t *qm, uint8_t *qv,
                       float *absmax_m, float *absmax_v, int64_t n, int64_t block,
                       const float *code_m, const float *code_v, const struct lmc_adamw_step *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    const int64_t nb = (n + block - 1) / block, per = LMC_MAX((int64_t)1, ((int64_t)1 << 16) / block);
    const int64_t tasks = (nb + per - 1) / per;
    /* the two tables cost about a binary search over 16k elements: smaller tensors search */
    uint8_t *lut = n >= Q8_LUT / 4 ? malloc(2 * Q8_LUT) : NULL;
    if (lut) q8_lut_build(code_m, lut), q8_lut_build(code_v, lut + Q8_LUT);
    struct q8_job j = {p, g, qm, qv, absmax_m, absmax_v, n, block, per, code_m, code_v, s, lut,
                       lut ? lut + Q8_LUT : NULL};
    if (tasks == 1) q8_task(&j, 0, 0);
    else lmc_pool_run(c->pool, tasks, q8_task, &j);
    free(lut);
}
