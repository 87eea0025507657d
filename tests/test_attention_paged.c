/* test_attention_paged.c — the paged attention op against the contiguous
 * attention op and a float64 reference (random odd sizes, GQA, sliding
 * window, scrambled block tables, tokens of many sequences interleaved,
 * prefill chunks and decode tokens in one batch, GQA groups of 1 to 17
 * query heads, the 125M bench model's 12 / 4 / 64; the same bits as the
 * contiguous op's per-query kernel, within 1e-6 of its query blocks), and the batched forward
 * (lmc_model_forward_batch over a paged pool) against lmc_model_forward per
 * sequence on every fixture. */
#include "model_fixture.h"
#include "test.h"
#include "paged_kv_test.h"
#include "core/core.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>
#include <string.h>

/* float64 attention of one query at position p over rows 0..p */
static void ref_attn(double *o, const float *q, const float *k, const float *v, int64_t p,
                     int64_t h, int64_t H, int64_t KV, int64_t hd, double scale, int64_t window) {
    int64_t kvh = h / (H / KV), row = KV * hd, lo = window > 0 ? LMC_MAX(0, p - window + 1) : 0;
    double mx = -1e300, *s = malloc((size_t)(p + 1) * sizeof *s), sum = 0;
    for (int64_t t = lo; t <= p; t++) {
        double d = 0;
        for (int64_t i = 0; i < hd; i++) d += (double)q[i] * k[t * row + kvh * hd + i];
        s[t] = d * scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (int64_t t = lo; t <= p; t++) sum += (s[t] = exp(s[t] - mx));
    for (int64_t i = 0; i < hd; i++) {
        double a = 0;
        for (int64_t t = lo; t <= p; t++) a += s[t] * v[t * row + kvh * hd + i];
        o[i] = a / sum;
    }
    free(s);
}

static void test_op(struct lmc_backend *be, int64_t H, int64_t KV, int64_t hd, int64_t bs,
                    int64_t window, uint64_t seed) {
    enum { NS = 5 };
    int64_t len[NS], nnew[NS], row = KV * hd, T = 0, maxb = 0;
    for (int s = 0; s < NS; s++) {
        len[s] = 1 + (int64_t)(test_rng_next(&seed) % 41);
        nnew[s] = s % 2 ? 1 : 1 + (int64_t)(test_rng_next(&seed) % (uint64_t)len[s]);
        T += nnew[s];
        maxb = LMC_MAX(maxb, (len[s] + bs - 1) / bs);
    }
    int64_t nblocks = NS * maxb + 3;
    /* scrambled block assignment */
    int32_t *bt = malloc((size_t)(NS * maxb) * sizeof *bt);
    test_paged_block_table(bt, NS * maxb, nblocks, &seed);
    float *kc = calloc((size_t)(nblocks * bs * row), sizeof(float)), *vc = calloc((size_t)(nblocks * bs * row), sizeof(float));
    float *k[NS], *v[NS], *q[NS];
    for (int s = 0; s < NS; s++) {
        k[s] = malloc((size_t)(len[s] * row) * sizeof(float));
        v[s] = malloc((size_t)(len[s] * row) * sizeof(float));
        q[s] = malloc((size_t)(nnew[s] * H * hd) * sizeof(float));
        for (int64_t i = 0; i < len[s] * row; i++) k[s][i] = test_rand(&seed), v[s][i] = test_rand(&seed);
        for (int64_t i = 0; i < nnew[s] * H * hd; i++) q[s][i] = 2 * test_rand(&seed);
        for (int64_t p = 0; p < len[s] - nnew[s]; p++) { /* earlier positions already stored */
            int64_t slot = (int64_t)bt[s * maxb + p / bs] * bs + p % bs;
            memcpy(kc + slot * row, k[s] + p * row, (size_t)row * sizeof(float));
            memcpy(vc + slot * row, v[s] + p * row, (size_t)row * sizeof(float));
        }
    }
    /* the batch: tokens in a shuffled order */
    int32_t *seq = malloc((size_t)T * sizeof *seq), *pos = malloc((size_t)T * sizeof *pos);
    int64_t *src = malloc((size_t)T * sizeof *src);
    for (int s = 0, t = 0; s < NS; s++)
        for (int64_t i = 0; i < nnew[s]; i++, t++) {
            seq[t] = s;
            pos[t] = (int32_t)(len[s] - nnew[s] + i);
            src[t] = i;
        }
    for (int64_t i = T - 1; i > 0; i--) {
        int64_t j = (int64_t)(test_rng_next(&seed) % (uint64_t)(i + 1));
        int32_t a = seq[i]; seq[i] = seq[j]; seq[j] = a;
        a = pos[i]; pos[i] = pos[j]; pos[j] = a;
        int64_t b = src[i]; src[i] = src[j]; src[j] = b;
    }
    float *qb = malloc((size_t)(T * H * hd) * sizeof(float)), *kn = malloc((size_t)(T * row) * sizeof(float));
    float *vn = malloc((size_t)(T * row) * sizeof(float)), *out = malloc((size_t)(T * H * hd) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        int s = seq[t];
        memcpy(qb + t * H * hd, q[s] + src[t] * H * hd, (size_t)(H * hd) * sizeof(float));
        memcpy(kn + t * row, k[s] + pos[t] * row, (size_t)row * sizeof(float));
        memcpy(vn + t * row, v[s] + pos[t] * row, (size_t)row * sizeof(float));
    }
    float scale = 1.0f / sqrtf((float)hd);
    be->attention_paged(be->ctx, out, qb, kn, vn, kc, vc, T, seq, pos, bt, maxb, bs, H, KV, hd,
                        scale, window);
    /* K/V landed in their slots */
    bool stored = true;
    for (int s = 0; s < NS; s++)
        for (int64_t p = 0; p < len[s]; p++) {
            int64_t slot = (int64_t)bt[s * maxb + p / bs] * bs + p % bs;
            stored &= !memcmp(kc + slot * row, k[s] + p * row, (size_t)row * sizeof(float)) &&
                      !memcmp(vc + slot * row, v[s] + p * row, (size_t)row * sizeof(float));
        }
    CHECK(stored);
    /* against the contiguous op and float64 */
    double worst_c = 0, worst_b = 0, worst_d = 0;
    double *o64 = malloc((size_t)hd * sizeof *o64);
    for (int s = 0; s < NS; s++) {
        float *oc = malloc((size_t)(nnew[s] * H * hd) * sizeof(float));
        be->attention(be->ctx, oc, q[s], k[s], v[s], nnew[s], len[s] - nnew[s], H, KV, hd, scale, window);
        for (int64_t t = 0; t < T; t++) {
            if (seq[t] != s) continue;
            for (int64_t h = 0; h < H; h++) {
                const float *po = out + (t * H + h) * hd, *co = oc + (src[t] * H + h) * hd;
                /* the contiguous op takes blocks of queries (attention_prefill.c, sgemm)
                 * from LMC_CPU_ATTN_BLOCK_MIN_M queries: the same products in another
                 * order; below, the per-query kernel, whose bits the paged op keeps */
                for (int64_t i = 0; i < hd; i++) {
                    double d = fabs((double)po[i] - co[i]);
                    if (nnew[s] < LMC_CPU_ATTN_BLOCK_MIN_M) worst_c = LMC_MAX(worst_c, d);
                    else worst_b = LMC_MAX(worst_b, d);
                }
                ref_attn(o64, q[s] + (src[t] * H + h) * hd, k[s], v[s], pos[t], h, H, KV, hd, scale, window);
                worst_d = LMC_MAX(worst_d, test_rel_err_f32_f64(po, o64, hd));
            }
        }
        free(oc);
    }
    CHECK_MSG(worst_c == 0, "H=%lld KV=%lld hd=%lld bs=%lld w=%lld: paged vs contiguous %g",
              (long long)H, (long long)KV, (long long)hd, (long long)bs, (long long)window, worst_c);
    CHECK_MSG(worst_d < 1e-5, "paged vs float64 %g", worst_d);
    CHECK_MSG(worst_b < 1e-6, "paged vs contiguous query blocks %g", worst_b);
    free(o64);
    for (int s = 0; s < NS; s++) free(k[s]), free(v[s]), free(q[s]);
    free(bt); free(kc); free(vc); free(seq); free(pos); free(src);
    free(qb); free(kn); free(vn); free(out);
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = LMC_MAX(num, fabs((double)a[i] - b[i]));
        den = LMC_MAX(den, fabs((double)b[i]));
    }
    return num / den;
}

/* Three sequences run in two batched steps (prefill chunks of different
 * lengths, then the rest plus a decode token) give the logits that
 * lmc_model_forward gives each sequence alone. */
static void test_forward_batch(const char *dir, int threads) {
    struct lmc_model m;
    struct lmc_backend be;
    lmc_err err = {0};
    if (!fixture_open_cpu(&m, &be, NULL, dir, NULL, threads)) return;
    enum { NS = 3, BS = 5, MAXB = 8, MAXLEN = 33 };
    int64_t V = m.cfg.vocab_size, len[NS] = {13, 29, 7}, cut[NS] = {6, 17, 7};
    int32_t ids[NS][MAXLEN];
    uint64_t seed = 11;
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < MAXLEN; i++) ids[s][i] = (int32_t)(test_rng_next(&seed) % (uint64_t)V);
    /* references: all logits per sequence, contiguous cache */
    float *ref[NS];
    struct lmc_kv kv;
    struct lmc_acts acts;
    CHECK(lmc_kv_init(&kv, &m, &be, 64, &err) == LMC_OK);
    CHECK(lmc_acts_init(&acts, &m, &be, 64, 64, &err) == LMC_OK);
    for (int s = 0; s < NS; s++) {
        ref[s] = malloc((size_t)(len[s] * V) * sizeof(float));
        CHECK(lmc_model_forward(&m, &be, &acts, &kv, ids[s], len[s], 0, ref[s], true, &err) == LMC_OK);
    }
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    CHECK(lmc_kv_pool_init(&pool, &m, &be, NS * MAXB + 2, BS, &err) == LMC_OK);
    CHECK(lmc_batch_acts_init(&ba, &m, &be, 64, NS, MAXB, 64, &err) == LMC_OK);
    int32_t bt[NS * MAXB];
    for (int i = 0; i < NS * MAXB; i++) bt[i] = (int32_t)((i * 7 + 3) % (NS * MAXB + 2));
    float *logits = malloc((size_t)(64 * V) * sizeof(float));
    int32_t bid[64], bseq[64], bpos[64], rows[64];
    double worst = 0;
    for (int stepi = 0; stepi < 2; stepi++) {
        int64_t T = 0;
        for (int s = 0; s < NS; s++) {
            int64_t a = stepi ? cut[s] : 0, b = stepi ? len[s] : cut[s];
            for (int64_t p = a; p < b; p++, T++) {
                bid[T] = ids[s][p];
                bseq[T] = s;
                bpos[T] = (int32_t)p;
                rows[T] = (int32_t)T;
            }
        }
        struct lmc_batch b = {T, bid, bseq, bpos, NS, bt, MAXB, rows, T, NULL};
        CHECK_MSG(lmc_model_forward_batch(&m, &be, &ba, &pool, &b, logits, &err) == LMC_OK, "%s", err.msg);
        for (int64_t t = 0; t < T; t++)
            worst = LMC_MAX(worst, max_rel(logits + t * V, ref[bseq[t]] + bpos[t] * V, V));
    }
    CHECK_MSG(worst <= 1e-5, "%s: forward_batch vs forward %g", dir, worst);
    /* bad input is an error, not a crash */
    int32_t bad_id = (int32_t)V, zero = 0, far = MAXB * BS;
    struct lmc_batch b1 = {1, &bad_id, &zero, &zero, NS, bt, MAXB, rows, 1, NULL};
    CHECK(lmc_model_forward_batch(&m, &be, &ba, &pool, &b1, logits, &err) == LMC_ERR_ARG);
    struct lmc_batch b2 = {1, &zero, &zero, &far, NS, bt, MAXB, rows, 1, NULL};
    CHECK(lmc_model_forward_batch(&m, &be, &ba, &pool, &b2, logits, &err) == LMC_ERR_ARG);
    for (int s = 0; s < NS; s++) free(ref[s]);
    free(logits);
    lmc_kv_pool_free(&pool);
    lmc_batch_acts_free(&ba);
    lmc_kv_free(&kv);
    lmc_acts_free(&acts);
    fixture_close_cpu(&m, &be, NULL);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_op(&be, 4, 2, 16, 5, 0, 1);
    test_op(&be, 6, 3, 13, 3, 0, 2);
    test_op(&be, 5, 1, 40, 16, 0, 3);
    test_op(&be, 8, 8, 9, 7, 7, 4);
    test_op(&be, 4, 2, 24, 1, 5, 5);
    test_op(&be, 12, 4, 64, 16, 0, 6); // the 125M bench shape (3 query heads per KV head)
    test_op(&be, 17, 1, 8, 4, 0, 7);  // a wide GQA group
    lmc_backend_cpu_free(&be);
    test_forward_batch("tests/fixtures/llama-tiny", 1);
    test_forward_batch("tests/fixtures/qwen2-tiny", 2);
    test_forward_batch("tests/fixtures/gpt2-tiny", 2);
    return test_finish("test_attention_paged");
}
