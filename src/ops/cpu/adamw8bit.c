/* adamw8bit.c — 8-bit AdamW on the CPU: the dynamic 8-bit code, the
 * nearest-code quantiser and the one-pass blockwise step (dequantize both
 * moments, AdamW's element formula, requantize with the block's new
 * absmax), as ops/optim_ops.h states them; the op runs whole blocks per
 * thread-pool task. */
#include "ops/cpu/ops_cpu.h"
#include "ops/optim_ops.h"

#include <math.h>
#include <stdlib.h>

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

void lmc_adamw8bit_apply(float *p, const float *g, uint8_t *qm, uint8_t *qv, float *absmax_m,
                         float *absmax_v, int64_t n, int64_t block, const float *code_m,
                         const float *code_v, const struct lmc_adamw_step *s) {
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
            qm[lo + j] = lmc_q8_quantize(code_m, nm > 0 ? mb[j] / nm : 0.0f);
            qv[lo + j] = lmc_q8_quantize(code_v, nv > 0 ? vb[j] / nv : 0.0f);
        }
    }
}

struct q8_job {
    float *p;
    const float *g;
    uint8_t *qm, *qv;
    float *am, *av;
    int64_t n, block, blocks_per_task;
    const float *cm, *cv;
    const struct lmc_adamw_step *s;
};

static void q8_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct q8_job *j = arg;
    const int64_t b0 = t * j->blocks_per_task, lo = b0 * j->block;
    const int64_t len = LMC_MIN(j->n - lo, j->blocks_per_task * j->block);
    lmc_adamw8bit_apply(j->p + lo, j->g + lo, j->qm + lo, j->qv + lo, j->am + b0, j->av + b0, len, j->block, j->cm,
                        j->cv, j->s);
}

/* Whole blocks per task (the result does not depend on the thread count). */
void lmc_cpu_adamw8bit(void *ctx, float *p, const float *g, uint8_t *qm, uint8_t *qv,
                       float *absmax_m, float *absmax_v, int64_t n, int64_t block,
                       const float *code_m, const float *code_v, const struct lmc_adamw_step *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    const int64_t nb = (n + block - 1) / block, per = LMC_MAX((int64_t)1, ((int64_t)1 << 16) / block);
    const int64_t tasks = (nb + per - 1) / per;
    struct q8_job j = {p, g, qm, qv, absmax_m, absmax_v, n, block, per, code_m, code_v, s};
    if (tasks == 1) q8_task(&j, 0, 0);
    else lmc_pool_run(c->pool, tasks, q8_task, &j);
}
