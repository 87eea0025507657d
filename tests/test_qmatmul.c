/* test_qmatmul.c — the quantized CPU matmul (src/quant/qmatmul*.c) on
 * every instruction set this CPU has (portable C, AVX2, AVX-512 VNNI) and
 * every weight kind: GGUF Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K, integer
 * groups of 2/3/4/8 bits (GPTQ with random act-order g_idx, K not a
 * multiple of the group or of 32), NF4 and ternary, Q4_K and Q4_0 repacked
 * at load (Q4_KR, Q4_0R); M = 1..17 rows, odd N.
 * Two references in float64 from the dequantized weight: with the
 * activations quantized as the kernel quantizes them (the integer dot
 * products make this exact up to float summation: 2e-5), and with the
 * float activations (the int8 activations' own error: 2e-2). */
#include "core/core.h"
#include "core/threadpool.h"
#include "quant/qmatmul.h"
#include "quant/qmatmul_amx.h"
#include "test.h"

#include <stdlib.h>

struct ref {
    int64_t n, k;
    float *wd; /* (n, k) dequantized weight */
};

/* Checks lmc_qmatmul(w) against the references for M = 1..17: every M
 * (every_m) or M = 1, 2, 3, 4, 10, 16. Errors are relative to a row's
 * largest |output|, floored at its outputs' largest L2 norm of the
 * products w_j x_j (the typical size of a sum of random terms: with N = 1
 * a lone output near zero by cancellation would otherwise divide by ~0). */
static void check_ms(const struct lmc_qctx *c, const struct lmc_qweight *w, const struct ref *r, const char *what,
                     uint64_t *rng, struct lmc_pool *pool, bool every_m) {
    int64_t n = r->n, k = r->k, mmax = 17;
    float *x = malloc((size_t)(mmax * k) * 4), *y = malloc((size_t)(mmax * n) * 4);
    float *xg = malloc((size_t)w->kp * 4), *xd = malloc((size_t)k * 4);
    struct lmc_q8act *xq = malloc((size_t)(w->kp / 32) * sizeof *xq);
    for (int64_t i = 0; i < mmax * k; i++) x[i] = test_rand(rng) * (1.0f + (float)(i % 13));
    double worst_q = 0, worst_f = 0;
    for (int64_t m = 1; m <= mmax; m += (every_m || m < 4 ? 1 : 6)) {
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(w, m) + 63) / 64 * 64);
        lmc_qmatmul(c, w, y, x, m, scratch, m % 2 ? pool : NULL);
        free(scratch);
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * k;
            /* the activations as the kernel sees them */
            if (w->kernel == LMC_QK_NF4) {
                memcpy(xd, xi, (size_t)k * 4);
            } else {
                for (int64_t j = 0; j < w->kp; j++) {
                    int64_t col = w->perm ? w->perm[j] : j;
                    xg[j] = col >= 0 ? xi[col] : 0.0f;
                }
                (w->kernel == LMC_QK_Q4_K || w->kernel == LMC_QK_Q4_KR ? lmc_q8act_quantize_k : lmc_q8act_quantize)(xg, w->kp, xq);
                for (int64_t j = 0; j < w->kp; j++) {
                    int64_t col = w->perm ? w->perm[j] : j;
                    if (col >= 0) xd[col] = xq[j / 32].d * (float)xq[j / 32].q[j % 32];
                }
            }
            double mq = 0, mf = 0, eq = 0, ef = 0;
            for (int64_t o = 0; o < n; o++) {
                double sq = 0, sf = 0, q2 = 0, f2 = 0;
                for (int64_t j = 0; j < k; j++) {
                    double pq = (double)r->wd[o * k + j] * xd[j], pf = (double)r->wd[o * k + j] * xi[j];
                    sq += pq, sf += pf;
                    q2 += pq * pq, f2 += pf * pf;
                }
                double got = y[i * n + o];
                eq = fmax(eq, fabs(got - sq));
                ef = fmax(ef, fabs(got - sf));
                mq = fmax(mq, fmax(fabs(sq), sqrt(q2)));
                mf = fmax(mf, fmax(fabs(sf), sqrt(f2)));
            }
            worst_q = fmax(worst_q, eq / mq);
            worst_f = fmax(worst_f, ef / mf);
        }
    }
    CHECK_MSG(worst_q < 2e-5, "%s [%s]: error %g against the same int8 activations", what, lmc_qisa_name(c->isa),
              worst_q);
    CHECK_MSG(worst_f < 2e-2, "%s [%s]: error %g against float activations", what, lmc_qisa_name(c->isa), worst_f);
    free(x);
    free(y);
    free(xg);
    free(xd);
    free(xq);
}
static void check(const struct lmc_qctx *c, const struct lmc_qweight *w, const struct ref *r, const char *what,
                  uint64_t *rng, struct lmc_pool *pool) {
    check_ms(c, w, r, what, rng, pool, false);
}

static void test_ggml(const struct lmc_qctx *c, uint64_t *rng, struct lmc_pool *pool) {
    static const int types[] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0, LMC_GGML_Q4_1, LMC_GGML_Q5_0,
                                LMC_GGML_Q5_1, LMC_GGML_Q4_K, LMC_GGML_Q5_K, LMC_GGML_Q6_K};
    lmc_err err = {0};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        int64_t be, bb;
        lmc_ggml_type_info(types[t], &be, &bb);
        int64_t n = 37, k = be == 32 ? 32 * 7 : 256 * 3, rb;
        lmc_ggml_row_bytes(types[t], k, &rb);
        float *wf = malloc((size_t)(n * k) * 4);
        uint8_t *wq = malloc((size_t)(n * rb));
        for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(rng) * (1.0f + (float)((i / 16) % 7));
        for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(types[t], wf + o * k, wq + o * rb, k);
        for (int64_t o = 0; o < n; o++) lmc_ggml_dequantize_row(types[t], wq + o * rb, wf + o * k, k);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_ggml(&w, types[t], wq, n, k, &err) == LMC_OK);
        struct ref r = {n, k, wf};
        check(c, &w, &r, lmc_ggml_type_name(types[t]), rng, pool);
        lmc_qweight_free(&w);
        free(wf);
        free(wq);
    }
}

static void test_groups(const struct lmc_qctx *c, uint64_t *rng, struct lmc_pool *pool) {
    lmc_err err = {0};
    const struct { int bits; int64_t n, k, gs; bool act; } cases[] = {
        {4, 33, 100, 32, false},  /* K = 3 groups + a tail of 4 */
        {4, 19, 256, 128, true},  /* act-order: random g_idx */
        {3, 21, 96, 32, true},    {2, 9, 64, 64, false}, {8, 17, 160, 32, true},
        {4, 11, 75, 75, false},   /* one group per row, K not a multiple of 32 */
        {4, 7, 64 * 66, 64, false},   /* 66 groups: the zero terms in two chunks of 64 */
        {4, 9, 128 * 67, 128, false}, /* 67 groups of 4 blocks (M = 1: the straight pairs) */
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        struct lmc_qgroups g;
        CHECK(lmc_qgroups_alloc(&g, cases[t].n, cases[t].k, cases[t].bits, cases[t].gs, &err) == LMC_OK);
        int maxq = (1 << cases[t].bits) - 1;
        for (int64_t i = 0; i < g.n * g.k; i++) g.q[i] = (uint8_t)(test_rng_next(rng) % (uint64_t)(maxq + 1));
        for (int64_t i = 0; i < g.n * g.n_groups; i++) {
            g.scale[i] = 0.01f + 0.05f * (float)(test_rng_next(rng) % 100) / 100.0f;
            g.zero[i] = (int32_t)(test_rng_next(rng) % (uint64_t)(maxq + 1));
        }
        if (cases[t].act)
            for (int64_t i = 0; i < g.k; i++) g.g_idx[i] = (int32_t)(test_rng_next(rng) % (uint64_t)g.n_groups);
        float *wf = malloc((size_t)(g.n * g.k) * 4);
        lmc_qgroups_dequantize(&g, wf);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_groups(&w, &g, &err) == LMC_OK);
        CHECK(w.kernel == (cases[t].bits <= 4 ? LMC_QK_U4G : LMC_QK_U8G));
        CHECK((w.perm != NULL) == (cases[t].act || cases[t].k % 32 != 0 || cases[t].k % cases[t].gs != 0));
        char what[64];
        snprintf(what, sizeof what, "groups %d-bit g%lld%s K=%lld", cases[t].bits, (long long)cases[t].gs,
                 cases[t].act ? " act-order" : "", (long long)cases[t].k);
        struct ref r = {g.n, g.k, wf};
        check(c, &w, &r, what, rng, pool);
        lmc_qweight_free(&w);
        lmc_qgroups_free(&g);
        free(wf);
    }
}

static void test_nf4_ternary(const struct lmc_qctx *c, uint64_t *rng, struct lmc_pool *pool) {
    lmc_err err = {0};
    int64_t n = 21, k = 192;
    float *wf = malloc((size_t)(n * k) * 4);
    for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(rng) * (1.0f + (float)((i / 64) % 3));
    struct lmc_nf4 q;
    CHECK(lmc_nf4_quantize(wf, n * k, &q, &err) == LMC_OK);
    lmc_nf4_dequantize(&q, wf);
    struct lmc_qweight w;
    CHECK(lmc_qweight_init_nf4(&w, &q, n, k, &err) == LMC_OK);
    struct ref r = {n, k, wf};
    check(c, &w, &r, "NF4", rng, pool);
    lmc_qweight_free(&w);
    CHECK(lmc_qweight_init_nf4(&w, &q, n, k + 64, &err) == LMC_ERR_FORMAT);
    lmc_nf4_free(&q);

    int64_t tn = 13, tk = 90;
    int8_t *t = malloc((size_t)(tn * tk));
    for (int64_t i = 0; i < tn * tk; i++) wf[i] = test_rand(rng);
    float s = lmc_ternary_quantize(wf, tn * tk, t);
    for (int64_t i = 0; i < tn * tk; i++) wf[i] = (float)t[i] * s;
    CHECK(lmc_qweight_init_ternary(&w, t, s, tn, tk, &err) == LMC_OK);
    struct ref rt = {tn, tk, wf};
    check(c, &w, &rt, "ternary", rng, pool);
    lmc_qweight_free(&w);
    t[5] = 2;
    CHECK(lmc_qweight_init_ternary(&w, t, s, tn, tk, &err) == LMC_ERR_FORMAT);
    free(t);
    free(wf);
}

/* The activation quantizers: the vector forms give the C forms' blocks bit
 * for bit; lmc_q8act_quantize_k shares d = amax / 127 over each 256 (one
 * super-block's scale in all 8 blocks, codes within +-127 and each code the
 * nearest to x / d), with the blocks' code sums. */
static void test_quantizers(uint64_t *rng, enum lmc_qisa isa) {
    struct lmc_qctx c;
    lmc_qctx_init(&c, isa);
    const int64_t n = 256 * 3;
    float *x = malloc((size_t)n * 4);
    struct lmc_q8act *a = malloc((size_t)(n / 32) * sizeof *a), *b = malloc((size_t)(n / 32) * sizeof *b);
    for (int64_t i = 0; i < n; i++) x[i] = test_rand(rng) * (1.0f + (float)((i * 7) % 29));
    for (int64_t i = 256; i < 512; i++) x[i] = 0.0f; /* an all-zero super-block: d = 0, codes 0 */
    lmc_q8act_quantize_k(x, n, a);
    c.quantize_k(x, n, b);
    CHECK(memcmp(a, b, (size_t)(n / 32) * sizeof *a) == 0);
    for (int64_t sb = 0; sb < n / 256; sb++) {
        float amax = 0;
        for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[256 * sb + j]));
        for (int bl = 0; bl < 8; bl++) {
            const struct lmc_q8act *q = &a[8 * sb + bl];
            CHECK(q->d == amax / 127.0f);
            int s0 = 0, s1 = 0;
            for (int j = 0; j < 32; j++) {
                float v = x[256 * sb + 32 * bl + j];
                CHECK(q->q[j] >= -127 && q->q[j] <= 127);
                if (q->d > 0) CHECK(fabsf(v - q->d * (float)q->q[j]) <= 0.5001f * q->d);
                else CHECK(q->q[j] == 0);
                *(j < 16 ? &s0 : &s1) += q->q[j];
            }
            CHECK(q->s0 == s0 && q->s1 == s1);
        }
    }
    lmc_q8act_quantize(x, n, a);
    c.quantize(x, n, b);
    CHECK(memcmp(a, b, (size_t)(n / 32) * sizeof *a) == 0);
    free(x), free(a), free(b);
}

/* GGUF Q4_K and Q4_0 repacked at load (Q4_KR, Q4_0R: quant/q4k_repack.c;
 * type: the file's type) on instruction set c: the file's bytes come back
 * exactly (every row), dequantization gives the same floats, and
 * lmc_qmatmul gives the same bits as on the file's layout (the same
 * integers in the same lanes and the same float operations) for every M =
 * 1..17, one thread (even M) and two (odd M); then against the float64
 * references of the dequantized weight (check_ms, every M = 1..17) with
 * the small-M kernels and without them (small_max 0: the single-row
 * kernels, Q4_KR's portable one). Odd N, 1 included (the 1-row tail
 * tiles). K: Q4_KR 1, 2, 3, 5 super-blocks (the format has only multiples
 * of 256: K = 288 refused); Q4_0R 1, 3, 7, 25 and 33 blocks (an odd last
 * block, alone when K = 32) and 24 (K = 48 refused). */
static void test_repacked(const struct lmc_qctx *c, uint64_t *rng, struct lmc_pool *pool, int type) {
    static const int64_t q4k_sh[][2] = {{5, 256}, {37, 768}, {41, 1280}, {1, 512}, {19, 256}};
    static const int64_t q40_sh[][2] = {{29, 32 * 3}, {37, 32 * 7}, {41, 32 * 24}, {9, 32 * 25}, {1, 32}, {23, 32 * 33}};
    const bool kq = type == LMC_GGML_Q4_K;
    const char *nm = kq ? "Q4_KR" : "Q4_0R", *fnm = lmc_ggml_type_name(type);
    void (*pack)(const void *, void *, int64_t, int64_t) = kq ? lmc_q4kr_pack_rows : lmc_q40r_pack_rows;
    void (*to_ggml)(const struct lmc_qweight *, int64_t, void *) = kq ? lmc_q4kr_row_to_ggml : lmc_q40r_row_to_ggml;
    lmc_status (*init)(struct lmc_qweight *, const void *, int64_t, int64_t, lmc_err *) =
        kq ? lmc_qweight_init_q4kr : lmc_qweight_init_q40r;
    const int64_t nsh = kq ? 5 : 6;
    lmc_err err = {0};
    struct lmc_qweight wbad;
    CHECK_MSG(init(&wbad, NULL, 3, kq ? 288 : 48, &err) == LMC_ERR_FORMAT, "%s: K %d not refused", nm, kq ? 288 : 48);
    for (int64_t t = 0; t < nsh; t++) {
        const int64_t n = kq ? q4k_sh[t][0] : q40_sh[t][0], k = kq ? q4k_sh[t][1] : q40_sh[t][1], mmax = 17;
        int64_t rb;
        CHECK(lmc_ggml_row_bytes(type, k, &rb));
        const int64_t rbr = kq ? k / 256 * LMC_Q4KR_BYTES : rb;
        float *wf = malloc((size_t)(n * k) * 4), *wd = malloc((size_t)(n * k) * 4), *wd2 = malloc((size_t)(n * k) * 4);
        float *x = malloc((size_t)(mmax * k) * 4), *y = malloc((size_t)(mmax * n) * 4), *y2 = malloc((size_t)(mmax * n) * 4);
        uint8_t *wq = malloc((size_t)(n * rb)), *wr = malloc((size_t)(n * rbr)), *back = malloc((size_t)rb);
        for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(rng) * (1.0f + (float)((i / 32) % 9));
        for (int64_t o = 0; o < n; o++) CHECK(lmc_ggml_quantize_row(type, wf + o * k, wq + o * rb, k));
        for (int64_t i = 0; i < mmax * k; i++) x[i] = test_rand(rng) * (1.0f + (float)(i % 11));
        pack(wq, wr, n, k);
        struct lmc_qweight wg, wk;
        CHECK(lmc_qweight_init_ggml(&wg, type, wq, n, k, &err) == LMC_OK);
        CHECK(init(&wk, wr, n, k, &err) == LMC_OK);
        CHECK(wk.kernel == (kq ? LMC_QK_Q4_KR : LMC_QK_Q4_0R) && wk.ggml_type == type && wk.row_bytes == rbr);
        int same_rows = 1;
        for (int64_t o = 0; o < n; o++) {
            to_ggml(&wk, o, back);
            same_rows &= memcmp(back, wq + o * rb, (size_t)rb) == 0;
        }
        CHECK_MSG(same_rows, "%s K=%lld: the file's bytes do not come back", nm, (long long)k);
        lmc_qweight_dequant_rows(&wg, 0, n, wd);
        lmc_qweight_dequant_rows(&wk, 0, n, wd2);
        CHECK_MSG(memcmp(wd, wd2, (size_t)(n * k) * 4) == 0, "%s K=%lld: dequantized floats differ", nm, (long long)k);
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&wk, mmax) + 63) / 64 * 64);
        CHECK(lmc_qmatmul_scratch_bytes(&wk, mmax) == lmc_qmatmul_scratch_bytes(&wg, mmax));
        for (int64_t m = 1; m <= mmax; m++) {
            lmc_qmatmul(c, &wg, y, x, m, scratch, m % 2 ? pool : NULL);
            lmc_qmatmul(c, &wk, y2, x, m, scratch, m % 2 ? pool : NULL);
            CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "%s [%s] N=%lld K=%lld M=%lld: not the bits of %s", nm,
                      lmc_qisa_name(c->isa), (long long)n, (long long)k, (long long)m, fnm);
        }
        free(scratch);
        struct ref r = {n, k, wd};
        char what[64];
        snprintf(what, sizeof what, "%s N=%lld K=%lld", nm, (long long)n, (long long)k);
        check_ms(c, &wk, &r, what, rng, pool, true);
        struct lmc_qctx c0 = *c;
        c0.small_max = 0;
        snprintf(what, sizeof what, "%s N=%lld K=%lld single-row", nm, (long long)n, (long long)k);
        check_ms(&c0, &wk, &r, what, rng, pool, true);
        free(wf), free(wd), free(wd2), free(x), free(y), free(y2), free(wq), free(wr), free(back);
    }
}

/* The small-M kernels of Q4_K (VNNI; AVX2 with vpmaddwd + vpaddd in place
 * of vpdpwssd), Q4_0 (whose M = 1 tile takes the weight rows one at a
 * time) and Q8_0 (VNNI; AVX2 in the single-row kernel's order) on every
 * instruction set that has them: row i of an M-row product is the same
 * bits as the 1-row product of row i alone; Q4_K's and Q4_0's are the same
 * bits on both instruction sets, AVX2 Q8_0's those of the single-row
 * kernel (c.dot). Odd N (the 1-row tail), K of 3 super-blocks (Q4_0 and
 * Q8_0: 7 blocks, an odd last pair), M 1..9 (two chunks of activation rows
 * from 5). */
static void test_small_m(int type, uint64_t *rng, struct lmc_pool *pool) {
    const int64_t n = 39, k = type == LMC_GGML_Q4_K ? 256 * 3 : 32 * 7, mmax = 9;
    const char *nm = lmc_ggml_type_name(type);
    int64_t rb;
    CHECK(lmc_ggml_row_bytes(type, k, &rb));
    float *wf = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(mmax * k) * 4);
    float *y = malloc((size_t)(mmax * n) * 4), *y1 = malloc((size_t)n * 4), *first = malloc((size_t)(mmax * n) * 4);
    uint8_t *wq = malloc((size_t)(n * rb));
    struct lmc_q8act *xq = malloc((size_t)(k / 32) * sizeof *xq);
    for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(rng) * (1.0f + (float)((i / 16) % 7));
    for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(type, wf + o * k, wq + o * rb, k);
    for (int64_t i = 0; i < mmax * k; i++) x[i] = test_rand(rng) * (1.0f + (float)(i % 11));
    lmc_err err = {0};
    struct lmc_qweight w;
    CHECK(lmc_qweight_init_ggml(&w, type, wq, n, k, &err) == LMC_OK);
    void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, mmax) + 63) / 64 * 64);
    int sets = 0;
    for (int isa = LMC_QISA_AVX2; isa <= LMC_QISA_AVX512VNNI; isa++) {
        struct lmc_qctx c;
        if (lmc_qctx_init(&c, (enum lmc_qisa)isa) != (enum lmc_qisa)isa || !c.dotm[w.kernel]) continue;
        for (int64_t m = 1; m <= mmax; m++) {
            lmc_qmatmul(&c, &w, y, x, m, scratch, m % 2 ? pool : NULL);
            for (int64_t i = 0; i < m; i++) {
                lmc_qmatmul(&c, &w, y1, x + i * k, 1, scratch, NULL);
                CHECK_MSG(memcmp(y1, y + i * n, (size_t)n * 4) == 0, "%s [%s]: row %lld of M = %lld differs from M = 1",
                          nm, lmc_qisa_name(c.isa), (long long)i, (long long)m);
                if (type == LMC_GGML_Q8_0 && isa == LMC_QISA_AVX2) {
                    c.quantize(x + i * k, k, xq);
                    for (int64_t o = 0; o < n; o++)
                        CHECK_MSG(c.dot[w.kernel](&w, o, xq, NULL) == y1[o], "Q8_0 [avx2]: row %lld differs from the single-row kernel",
                                  (long long)o);
                }
            }
        }
        if (sets++ == 0) memcpy(first, y, (size_t)(mmax * n) * 4);
        else if (type == LMC_GGML_Q4_K || type == LMC_GGML_Q4_0)
            CHECK_MSG(memcmp(first, y, (size_t)(mmax * n) * 4) == 0, "%s: AVX2 and VNNI differ", nm);
    }
    printf("%s small-M kernel: %d instruction set(s) checked\n", nm, sets);
    CHECK(sets >= 1 || !__builtin_cpu_supports("avx2"));
    lmc_qweight_free(&w);
    free(scratch), free(wf), free(x), free(y), free(y1), free(first), free(wq), free(xq);
}

/* The prefill tiles (M above the small-M chunk: AVX2 Q8_0's 4 x 2 tile in
 * panels of activation rows, the 4-bit groups' unpacked tile) on sizes that
 * are no multiple of anything: M = 123 (three Q8_0 panels at K = 97
 * blocks, the last part-full, an odd last row), N = 45 (tiles of 4 and a
 * tail), K = 97 blocks (groups of 128: an odd last block in a group of one).
 * With one thread and with two (the same bits), against the float64
 * reference with the kernel's int8 activations (2e-5), and each row the
 * same bits as the 1-row product (AVX2 Q8_0: as the single-row kernel). */
static void check_prefill(const struct lmc_qctx *c, const struct lmc_qweight *w, const float *wd, const char *what,
                          uint64_t *rng, struct lmc_pool *pool) {
    const int64_t n = w->n, k = w->k, m = 123;
    float *x = malloc((size_t)(m * k) * 4), *y = malloc((size_t)(m * n) * 4), *y2 = malloc((size_t)(m * n) * 4);
    float *y1 = malloc((size_t)n * 4), *xg = malloc((size_t)w->kp * 4), *xd = malloc((size_t)k * 4);
    struct lmc_q8act *xq = malloc((size_t)(w->kp / 32) * sizeof *xq);
    for (int64_t i = 0; i < m * k; i++) x[i] = test_rand(rng) * (1.0f + (float)(i % 13));
    void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(w, m) + 63) / 64 * 64);
    lmc_qmatmul(c, w, y, x, m, scratch, NULL);
    lmc_qmatmul(c, w, y2, x, m, scratch, pool);
    CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "%s [%s] M = %lld: two threads differ from one", what,
              lmc_qisa_name(c->isa), (long long)m);
    double worst = 0;
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * k;
        for (int64_t j = 0; j < w->kp; j++) {
            int64_t col = w->perm ? w->perm[j] : j;
            xg[j] = col >= 0 ? xi[col] : 0.0f;
        }
        lmc_q8act_quantize(xg, w->kp, xq);
        for (int64_t j = 0; j < w->kp; j++) {
            int64_t col = w->perm ? w->perm[j] : j;
            if (col >= 0) xd[col] = xq[j / 32].d * (float)xq[j / 32].q[j % 32];
        }
        double e = 0, mx = 0;
        for (int64_t o = 0; o < n; o++) {
            double sq = 0;
            for (int64_t j = 0; j < k; j++) sq += (double)wd[o * k + j] * xd[j];
            e = fmax(e, fabs(y[i * n + o] - sq));
            mx = fmax(mx, fabs(sq));
        }
        worst = fmax(worst, e / mx);
        /* (AMX-INT8's rows: test_qmatmul_amx_emu checks their exact bits) */
        if ((i % 7 == 0 || i == m - 1) && !lmc_qamx_takes(c, w, m)) {
            lmc_qmatmul(c, w, y1, xi, 1, scratch, NULL);
            CHECK_MSG(memcmp(y1, y + i * n, (size_t)n * 4) == 0, "%s [%s]: row %lld of M = %lld differs from M = 1",
                      what, lmc_qisa_name(c->isa), (long long)i, (long long)m);
            if (w->kernel == LMC_QK_Q8_0 && c->isa == LMC_QISA_AVX2)
                for (int64_t o = 0; o < n; o++)
                    CHECK_MSG(c->dot[w->kernel](w, o, xq, NULL) == y[i * n + o],
                              "Q8_0 [avx2] M = %lld: (%lld, %lld) differs from the single-row kernel", (long long)m,
                              (long long)i, (long long)o);
        }
    }
    CHECK_MSG(worst < 2e-5, "%s [%s] M = %lld: error %g against the same int8 activations", what,
              lmc_qisa_name(c->isa), (long long)m, worst);
    free(scratch), free(x), free(y), free(y2), free(y1), free(xg), free(xd), free(xq);
}

/* A random 4-bit weight in groups of 128 (n, k): codes 0..15, scales
 * 0.01..0.06, zeros 0..15 except row zr's group zg, 40 (beyond the codes'
 * range); act: a random act-order g_idx (groups of odd block counts,
 * perhaps empty). The prefill and small-M tests' weight. */
static void groups4_g128(struct lmc_qgroups *g, int64_t n, int64_t k, int64_t zr, int64_t zg, int act,
                         uint64_t *rng) {
    lmc_err err = {0};
    CHECK(lmc_qgroups_alloc(g, n, k, 4, 128, &err) == LMC_OK);
    for (int64_t i = 0; i < g->n * g->k; i++) g->q[i] = (uint8_t)(test_rng_next(rng) % 16);
    for (int64_t i = 0; i < g->n * g->n_groups; i++) {
        g->scale[i] = 0.01f + 0.05f * (float)(test_rng_next(rng) % 100) / 100.0f;
        g->zero[i] = (int32_t)(test_rng_next(rng) % 16);
    }
    g->zero[zr * g->n_groups + zg] = 40;
    if (act)
        for (int64_t i = 0; i < g->k; i++) g->g_idx[i] = (int32_t)(test_rng_next(rng) % (uint64_t)g->n_groups);
}

static void test_prefill(const struct lmc_qctx *c, uint64_t *rng, struct lmc_pool *pool) {
    lmc_err err = {0};
    const int64_t n = 45, k = 32 * 97;
    int64_t rb;
    CHECK(lmc_ggml_row_bytes(LMC_GGML_Q8_0, k, &rb));
    float *wf = malloc((size_t)(n * k) * 4);
    uint8_t *wq = malloc((size_t)(n * rb));
    for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(rng) * (1.0f + (float)((i / 16) % 7));
    for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(LMC_GGML_Q8_0, wf + o * k, wq + o * rb, k);
    for (int64_t o = 0; o < n; o++) lmc_ggml_dequantize_row(LMC_GGML_Q8_0, wq + o * rb, wf + o * k, k);
    struct lmc_qweight w;
    CHECK(lmc_qweight_init_ggml(&w, LMC_GGML_Q8_0, wq, n, k, &err) == LMC_OK);
    check_prefill(c, &w, wf, "Q8_0 prefill", rng, pool);
    lmc_qweight_free(&w);
    free(wq);
    /* 4-bit groups of 128 (the last of 32 columns), in order and act-order;
     * rows 8..11 with a zero beyond the unpacked tile's range (the packed tile) */
    for (int act = 0; act < 2; act++) {
        struct lmc_qgroups g;
        groups4_g128(&g, n, k, 9, 3, act, rng);
        lmc_qgroups_dequantize(&g, wf);
        CHECK(lmc_qweight_init_groups(&w, &g, &err) == LMC_OK);
        CHECK(w.kernel == LMC_QK_U4G);
        check_prefill(c, &w, wf, act ? "groups 4-bit g128 act-order prefill" : "groups 4-bit g128 prefill", rng, pool);
        lmc_qweight_free(&w);
        lmc_qgroups_free(&g);
    }
    free(wf);
}

/* The 4-bit groups' small-M tiles (the zero point as one float term per
 * group from the fill's per-group activation sums): for M = 1..17 (the
 * unpacked prefill tile from 5) row i of the M-row product is the same bits
 * as the 1-row product of row i alone, and every row is within 2e-5 of the
 * float64 product of the dequantized weight with the kernel's int8
 * activations. Groups of 128 with K = 13 blocks (3 groups and a group of
 * one block: an odd last pair), N = 39 (a 1-row tail), zeros 0..15 and one
 * of 40, in order and act-order (random g_idx: groups of odd block counts,
 * perhaps empty). */
static void test_small_m_groups(const struct lmc_qctx *c, uint64_t *rng, struct lmc_pool *pool) {
    const int64_t n = 39, k = 32 * 13, mmax = 17;
    lmc_err err = {0};
    for (int act = 0; act < 2; act++) {
        struct lmc_qgroups g;
        groups4_g128(&g, n, k, 5, 1, act, rng);
        float *wf = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(mmax * k) * 4);
        float *y = malloc((size_t)(mmax * n) * 4), *y1 = malloc((size_t)n * 4);
        float *xd = malloc((size_t)k * 4);
        lmc_qgroups_dequantize(&g, wf);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_groups(&w, &g, &err) == LMC_OK);
        CHECK(w.kernel == LMC_QK_U4G);
        struct lmc_q8act *xq = malloc((size_t)(w.kp / 32) * sizeof *xq);
        float *xp = malloc((size_t)w.kp * 4);
        for (int64_t i = 0; i < mmax * k; i++) x[i] = test_rand(rng) * (1.0f + (float)(i % 11));
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, mmax) + 63) / 64 * 64);
        double worst = 0;
        for (int64_t m = 1; m <= mmax; m++) {
            lmc_qmatmul(c, &w, y, x, m, scratch, m % 2 ? pool : NULL);
            for (int64_t i = 0; i < m; i++) {
                lmc_qmatmul(c, &w, y1, x + i * k, 1, scratch, NULL);
                CHECK_MSG(memcmp(y1, y + i * n, (size_t)n * 4) == 0,
                          "groups%s [%s]: row %lld of M = %lld differs from M = 1", act ? " act-order" : "",
                          lmc_qisa_name(c->isa), (long long)i, (long long)m);
                for (int64_t j = 0; j < w.kp; j++) xp[j] = w.perm && w.perm[j] < 0 ? 0.0f : x[i * k + (w.perm ? w.perm[j] : j)];
                lmc_q8act_quantize(xp, w.kp, xq);
                for (int64_t j = 0; j < w.kp; j++) {
                    int64_t col = w.perm ? w.perm[j] : j;
                    if (col >= 0) xd[col] = xq[j / 32].d * (float)xq[j / 32].q[j % 32];
                }
                double e = 0, mx = 0;
                for (int64_t o = 0; o < n; o++) {
                    double sq = 0;
                    for (int64_t j = 0; j < k; j++) sq += (double)wf[o * k + j] * xd[j];
                    e = fmax(e, fabs(y[i * n + o] - sq));
                    mx = fmax(mx, fabs(sq));
                }
                worst = fmax(worst, e / mx);
            }
        }
        CHECK_MSG(worst < 2e-5, "groups small-M%s [%s]: error %g against the same int8 activations",
                  act ? " act-order" : "", lmc_qisa_name(c->isa), worst);
        free(scratch), free(wf), free(x), free(y), free(y1), free(xd), free(xq), free(xp);
        lmc_qweight_free(&w);
        lmc_qgroups_free(&g);
    }
}

/* Decode's guided row split (M < 4 on a pool: decreasing chunks of whole
 * 4-row tiles) gives the bits of the one-thread product, for one weight
 * and for qmatmul_multi's weights in one run: N = 1003 (a 3-row tail),
 * 517 and 262 rows of K = 768 (a floor of 172 rows: 2 to 6 chunks a
 * weight, 517's last one a lone tail row), Q4_0, Q4_K, Q8_0 and 4-bit groups of 128, pools of 2 and 3
 * threads, M = 1..5 (4 and 5: the equal split). */
static void test_guided_split(const struct lmc_qctx *c, uint64_t *rng) {
    const int64_t ns[3] = {1003, 517, 262}, k = 768, mmax = 5;
    const int types[3] = {LMC_GGML_Q4_0, LMC_GGML_Q4_K, LMC_GGML_Q8_0};
    lmc_err err = {0};
    struct lmc_pool *pools[2];
    CHECK(lmc_pool_init(&pools[0], 2, &err) == LMC_OK);
    CHECK(lmc_pool_init(&pools[1], 3, &err) == LMC_OK);
    float *x = malloc((size_t)(mmax * k) * 4);
    for (int64_t i = 0; i < mmax * k; i++) x[i] = test_rand(rng) * (1.0f + (float)(i % 11));
    for (int t = 0; t < 4; t++) {
        struct lmc_qweight w[3];
        uint8_t *wq[3] = {NULL, NULL, NULL};
        struct lmc_qgroups g[3];
        for (int i = 0; i < 3; i++) {
            if (t < 3) {
                int64_t rb;
                CHECK(lmc_ggml_row_bytes(types[t], k, &rb));
                float *wf = malloc((size_t)(ns[i] * k) * 4);
                wq[i] = malloc((size_t)(ns[i] * rb));
                for (int64_t j = 0; j < ns[i] * k; j++) wf[j] = test_rand(rng) * (1.0f + (float)((j / 16) % 7));
                for (int64_t o = 0; o < ns[i]; o++) lmc_ggml_quantize_row(types[t], wf + o * k, wq[i] + o * rb, k);
                CHECK(lmc_qweight_init_ggml(&w[i], types[t], wq[i], ns[i], k, &err) == LMC_OK);
                free(wf);
            } else {
                groups4_g128(&g[i], ns[i], k, 5, 1, 0, rng);
                CHECK(lmc_qweight_init_groups(&w[i], &g[i], &err) == LMC_OK);
            }
        }
        const char *nm = t < 3 ? lmc_ggml_type_name(types[t]) : "groups 4-bit g128";
        if (!c->dotm[w[0].kernel]) goto next;
        size_t sb = 0;
        for (int i = 0; i < 3; i++) sb = LMC_MAX(sb, lmc_qmatmul_scratch_bytes(&w[i], mmax));
        void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
        float *ref[3], *got[3];
        for (int i = 0; i < 3; i++) {
            ref[i] = malloc((size_t)(mmax * ns[i]) * 4);
            got[i] = malloc((size_t)(mmax * ns[i]) * 4);
        }
        const struct lmc_qweight *wp[3] = {&w[0], &w[1], &w[2]};
        for (int64_t m = 1; m <= mmax; m++) {
            for (int i = 0; i < 3; i++) lmc_qmatmul(c, &w[i], ref[i], x, m, scratch, NULL);
            for (int p = 0; p < 2; p++) {
                lmc_qmatmul(c, &w[0], got[0], x, m, scratch, pools[p]);
                CHECK_MSG(memcmp(got[0], ref[0], (size_t)(m * ns[0]) * 4) == 0, "%s [%s] M=%lld, %d threads: differs from one thread",
                          nm, lmc_qisa_name(c->isa), (long long)m, p + 2);
                lmc_qmatmul_multi(c, 3, wp, got, x, m, scratch, pools[p]);
                for (int i = 0; i < 3; i++)
                    CHECK_MSG(memcmp(got[i], ref[i], (size_t)(m * ns[i]) * 4) == 0,
                              "%s [%s] multi weight %d M=%lld, %d threads: differs from one thread", nm, lmc_qisa_name(c->isa), i,
                              (long long)m, p + 2);
            }
        }
        for (int i = 0; i < 3; i++) free(ref[i]), free(got[i]);
        free(scratch);
    next:
        for (int i = 0; i < 3; i++) {
            lmc_qweight_free(&w[i]);
            free(wq[i]);
            if (t == 3) lmc_qgroups_free(&g[i]);
        }
    }
    free(x);
    lmc_pool_free(pools[0]);
    lmc_pool_free(pools[1]);
}

int main(void) {
    lmc_err err = {0};
    uint64_t qrng = 99;
    test_quantizers(&qrng, LMC_QISA_AVX2);
    test_quantizers(&qrng, LMC_QISA_AVX512VNNI);
    struct lmc_pool *pool = NULL;
    CHECK(lmc_pool_init(&pool, 2, &err) == LMC_OK);
    enum lmc_qisa seen = (enum lmc_qisa)-1;
    for (int isa = LMC_QISA_C; isa <= LMC_QISA_AVX512VNNI; isa++) {
        struct lmc_qctx c;
        enum lmc_qisa got = lmc_qctx_init(&c, (enum lmc_qisa)isa);
        if (got == seen) continue; /* this CPU lacks the level: already covered */
        seen = got;
        printf("instruction set: %s\n", lmc_qisa_name(got));
        uint64_t rng = 1234;
        test_ggml(&c, &rng, pool);
        test_groups(&c, &rng, pool);
        test_nf4_ternary(&c, &rng, pool);
        test_prefill(&c, &rng, pool);
        test_small_m_groups(&c, &rng, pool);
        test_guided_split(&c, &rng);
        test_repacked(&c, &rng, pool, LMC_GGML_Q4_K);
        test_repacked(&c, &rng, pool, LMC_GGML_Q4_0);
    }
    uint64_t krng = 77;
    test_small_m(LMC_GGML_Q4_K, &krng, pool);
    test_small_m(LMC_GGML_Q4_0, &krng, pool);
    test_small_m(LMC_GGML_Q8_0, &krng, pool);
    struct lmc_qweight w;
    CHECK(lmc_qweight_init_ggml(&w, LMC_GGML_F16, NULL, 4, 32, &err) == LMC_ERR_UNSUPPORTED);
    CHECK(lmc_qweight_init_ggml(&w, LMC_GGML_Q4_K, NULL, 4, 100, &err) == LMC_ERR_FORMAT);
    lmc_pool_free(pool);
    return test_finish("test_qmatmul");
}
