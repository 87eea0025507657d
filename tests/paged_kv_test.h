/* paged_kv_test.h — what the paged-attention tests (test_attention_paged,
 * test_attention_paged_f16, test_kvq_paged, test_kvq_paged_kivi) share:
 * a scrambled block table, the (seq, pos) lists of a step, and the
 * float64 attention over rows decoded from a paged pool of any
 * kvquant.h format with a plain slot (f16, bf16, q8, q4); logits against
 * a reference (test_kv16 too). */
#ifndef LMC_TEST_PAGED_KV_H
#define LMC_TEST_PAGED_KV_H

#include "test.h"
#include "core/core.h"
#include "ops/cpu/kvquant.h"

#include <float.h>
#include <stdlib.h>

/* bt[0..n_bt) = the first n_bt of a random permutation of the n_blocks
 * block ids (Fisher-Yates from the last, one draw of rs per swap) */
static inline void test_paged_block_table(int32_t *bt, int64_t n_bt, int64_t n_blocks, uint64_t *rs) {
    int32_t *perm = malloc((size_t)n_blocks * sizeof *perm);
    for (int64_t i = 0; i < n_blocks; i++) perm[i] = (int32_t)i;
    for (int64_t i = n_blocks - 1; i > 0; i--) {
        int64_t j = (int64_t)(test_rng_next(rs) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int64_t i = 0; i < n_bt; i++) bt[i] = perm[i];
    free(perm);
}

/* one step's tokens, sequence by sequence: len[s] positions of sequence s
 * from from[s] on; returns their number */
static inline int64_t test_paged_step(int nseq, const int64_t *len, const int64_t *from, int32_t *seq, int32_t *pos) {
    int64_t T = 0;
    for (int s = 0; s < nseq; s++)
        for (int64_t j = 0; j < len[s]; j++, T++) seq[T] = s, pos[T] = (int32_t)(from[s] + j);
    return T;
}

/* the relative error of out (T, nh, hd) against a float64 attention of
 * each query over its sequence's rows decoded from the pool (slots of rb
 * bytes, block table rows of maxb, blocks of bs; scale 1 / sqrt(hd)) */
static inline double test_paged_ref_err(enum lmc_kvq_fmt f, const char *kc, const char *vc, size_t rb,
                                        const float *q, const float *out, int64_t T, const int32_t *seq,
                                        const int32_t *pos, const int32_t *bt, int64_t maxb, int64_t bs,
                                        int64_t nh, int64_t nkv, int64_t hd, int64_t window) {
    enum { MAXP = 256, MAXHD = 128 };
    LMC_ASSERT(hd <= MAXHD);
    double num = 0, den = 0;
    float kr[MAXHD], vr[MAXHD];
    for (int64_t i = 0; i < T; i++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t p = pos[i], lo = window > 0 ? LMC_MAX(0, p - window + 1) : 0, kvh = h / (nh / nkv);
            LMC_ASSERT(p - lo < MAXP);
            double sc[MAXP], mx = -DBL_MAX, sum = 0, o[MAXHD] = {0};
            for (int64_t t = lo; t <= p; t++) {
                size_t slot = (size_t)bt[seq[i] * maxb + t / bs] * (size_t)bs + (size_t)(t % bs);
                lmc_kvq_paged_decode(f, kc + slot * rb, nkv * hd, kvh * hd, hd, kr);
                double d = 0;
                for (int64_t e = 0; e < hd; e++) d += (double)q[(i * nh + h) * hd + e] * kr[e];
                sc[t - lo] = d / sqrt((double)hd);
                mx = LMC_MAX(mx, sc[t - lo]);
            }
            for (int64_t t = lo; t <= p; t++) sum += sc[t - lo] = exp(sc[t - lo] - mx);
            for (int64_t t = lo; t <= p; t++) {
                size_t slot = (size_t)bt[seq[i] * maxb + t / bs] * (size_t)bs + (size_t)(t % bs);
                lmc_kvq_paged_decode(f, vc + slot * rb, nkv * hd, kvh * hd, hd, vr);
                for (int64_t e = 0; e < hd; e++) o[e] += sc[t - lo] / sum * vr[e];
            }
            for (int64_t e = 0; e < hd; e++) {
                num = LMC_MAX(num, fabs(o[e] - out[(i * nh + h) * hd + e]));
                den = LMC_MAX(den, fabs(o[e]));
            }
        }
    return num / den;
}

/* max |b - a| / max |a| over n rows of V logits; *same = the rows whose
 * argmax (first maximum) agrees */
static inline double test_logits_rel(const float *a, const float *b, int64_t n, int64_t V, int *same) {
    double num = 0, den = 0;
    *same = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a0 = 0, a1 = 0;
        for (int64_t j = 0; j < V; j++) {
            num = LMC_MAX(num, fabs((double)b[i * V + j] - a[i * V + j]));
            den = LMC_MAX(den, fabs((double)a[i * V + j]));
            if (a[i * V + j] > a[i * V + a0]) a0 = j;
            if (b[i * V + j] > b[i * V + a1]) a1 = j;
        }
        *same += a0 == a1;
    }
    return num / den;
}

#endif
