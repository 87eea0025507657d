/* sample.c — the sampler's per-row core (softmax at temperature, top-k,
 * top-p over the renormalised top-k set, min-p relative to the top token,
 * a draw with a given uniform; the filter alone is lmc_sample_filter_row,
 * which speculative decoding uses for full distributions) and the CPU
 * backend's sample_rows, which
 * applies it to each row. lmc_sampler_sample (infer/sampler.c) calls the
 * same core after its penalties, and the CUDA kernel (ops/cuda/sample.cu)
 * reproduces it: one definition of the semantics. */
#include "core/argmax.h"
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *pr = ctx;
    float x = pr[*(const int32_t *)a], y = pr[*(const int32_t *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

int64_t lmc_sample_filter_row(const float *logits, int64_t V, const struct lmc_sample_row *p,
                              int32_t *idx, float *prob) {
    LMC_ASSERT(p->temperature > 0);
    /* unnormalised softmax at temperature T (the top token gets exactly 1).
     * exp in double rounded to float: the GPU gets the same bits. */
    float mx = logits[lmc_argmax_f32(logits, V)];
    if (mx == -INFINITY) return 0; /* nothing can be drawn */
    for (int64_t i = 0; i < V; i++) {
        float z = (float)((logits[i] - mx) / p->temperature);
        prob[i] = (float)exp((double)z);
    }
    /* HF order: top-k, then top-p over the renormalised top-k set, then
     * min-p relative to the most likely token (prob 1 before normalising).
     * Sorted (descending, ties by lower id) only when top-k or top-p is on;
     * otherwise the candidates stay in id order. */
    int64_t n = V;
    for (int64_t i = 0; i < V; i++) idx[i] = (int32_t)i;
    if (p->top_k > 0 || p->top_p < 1.0) {
        qsort_r(idx, (size_t)n, sizeof *idx, cmp_desc, prob);
        if (p->top_k > 0 && n > p->top_k) n = p->top_k;
    }
    if (p->top_p < 1.0) {
        double mass = 0;
        for (int64_t i = 0; i < n; i++) mass += prob[idx[i]];
        double cum = 0, lim = p->top_p * mass;
        int64_t keep = 0;
        while (keep < n) {
            cum += prob[idx[keep++]];
            if (cum >= lim) break;
        }
        n = keep;
    }
    if (p->min_p > 0) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if (prob[idx[i]] >= (float)p->min_p) idx[k++] = idx[i];
        n = k; /* the top token has prob 1 here, so k >= 1 */
    }
    return n;
}

int32_t lmc_sample_logits_row(const float *logits, int64_t V, const struct lmc_sample_row *p,
                              int32_t *idx, float *prob) {
    if (p->temperature == 0) return (int32_t)lmc_argmax_f32(logits, V);
    int64_t n = lmc_sample_filter_row(logits, V, p, idx, prob);
    if (n == 0) return 0; /* all logits -inf: as argmax (and the GPU) */
    double tot = 0;
    for (int64_t i = 0; i < n; i++) tot += prob[idx[i]];
    double r = p->u * tot;
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++) {
        if (prob[idx[i]] > 0) last = i;
        r -= prob[idx[i]];
        if (r < 0) return idx[i];
    }
    return idx[last]; /* rounding left r >= 0 (u near 1): the last member with p > 0 */
}

void lmc_cpu_sample_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows, int64_t V,
                         const struct lmc_sample_row *params) {
    (void)ctx;
    int32_t *idx = NULL;
    float *prob = NULL;
    for (int64_t r = 0; r < rows; r++) {
        if (params[r].temperature != 0 && !idx) {
            idx = malloc((size_t)V * sizeof *idx);
            prob = malloc((size_t)V * sizeof *prob);
            LMC_ASSERT(idx && prob);
        }
        out_ids[r] = lmc_sample_logits_row(logits + r * V, V, &params[r], idx, prob);
    }
    free(idx);
    free(prob);
}
