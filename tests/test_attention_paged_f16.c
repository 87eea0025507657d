/* test_attention_paged_f16.c — the f16 and bf16 paged KV pools (f16 is
 * lmc serve's CPU default; attention_paged_f16.c), each format:
 *  - the op: a prefill step then a decode/chunk step of 3 sequences (6
 *    heads over 2 KV heads, head sizes 20, 24 and 64, blocks of 5 through
 *    scrambled block tables, with and without a sliding window), AVX2 and
 *    portable twin, against a float64 attention over the f16 / bf16 rows
 *    read back from the pool; every stored value is the input's rounding
 *    (lmc_f32_to_f16 / lmc_f32_to_bf16);
 *  - the model: llama-tiny's batched forward over the f16 / bf16 pool against
 *    the f32 pool: logits within the format's rounding and the same greedy
 *    tokens;
 *  - sizing: 2 * row bytes per token row (both formats). */
#include "model_fixture.h"
#include "test.h"
#include "paged_kv_test.h"
#include "core/core.h"
#include "core/dtype.h"
#include "infer/kvq.h"
#include "model/forward_batch.h"
#include "ops/backend.h"
#include "ops/cpu/kvquant.h"
#include "ops/cpu/ops_cpu.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define NH 6
#define NKV 2
#define BS 5
#define MAXB 8
#define NSEQ 3
#define NBLK 24

static uint16_t round_to(enum lmc_kvq_fmt f, float x) {
    return f == LMC_KVQ_BF16 ? lmc_f32_to_bf16(x) : lmc_f32_to_f16(x);
}

static void test_op(enum lmc_kvq_fmt f, int64_t hd, int64_t window, bool avx2) {
    lmc_err err = {0};
    struct lmc_backend be, kq;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    CHECK(lmc_kvq_paged_backend(&kq, &be, f, &err) == LMC_OK);
    struct lmc_cpu_ctx *cc = be.ctx;
    if (!avx2) cc->drf_avx2 = false; /* the portable twin */
    const int64_t row = NKV * hd;
    CHECK(kq.kv_row_bytes(row) == (size_t)row * 2);
    uint16_t *kc = calloc((size_t)NBLK * BS * (size_t)row, 2), *vc = calloc((size_t)NBLK * BS * (size_t)row, 2);
    uint64_t rs = 29 + (uint64_t)hd;
    int32_t bt[NSEQ * MAXB];
    test_paged_block_table(bt, NSEQ * MAXB, NBLK, &rs);
    const int64_t len1[NSEQ] = {13, 7, 27}, len2[NSEQ] = {1, 3, 2};
    double worst = 0;
    bool stored = true;
    int64_t done[NSEQ] = {0};
    for (int stp = 0; stp < 2; stp++) {
        const int64_t *len = stp ? len2 : len1;
        int32_t seq[64], pos[64];
        int64_t T = test_paged_step(NSEQ, len, done, seq, pos);
        float *q = malloc((size_t)(T * NH * hd) * sizeof *q), *k = malloc((size_t)(T * row) * sizeof *k);
        float *v = malloc((size_t)(T * row) * sizeof *v), *out = malloc((size_t)(T * NH * hd) * sizeof *out);
        for (int64_t i = 0; i < T * NH * hd; i++) q[i] = 2 * test_rand(&rs);
        for (int64_t i = 0; i < T * row; i++) k[i] = 2 * test_rand(&rs), v[i] = test_rand(&rs) + 0.3f;
        kq.attention_paged(kq.ctx, out, q, k, v, (float *)(void *)kc, (float *)(void *)vc, T, seq, pos, bt, MAXB,
                           BS, NH, NKV, hd, 1.0f / sqrtf((float)hd), window);
        for (int64_t i = 0; i < T; i++) {
            size_t slot = (size_t)bt[seq[i] * MAXB + pos[i] / BS] * BS + (size_t)(pos[i] % BS);
            for (int64_t e = 0; e < row; e++)
                stored &= kc[slot * (size_t)row + (size_t)e] == round_to(f, k[i * row + e]) &&
                          vc[slot * (size_t)row + (size_t)e] == round_to(f, v[i * row + e]);
        }
        worst = LMC_MAX(worst, test_paged_ref_err(f, (const char *)kc, (const char *)vc, (size_t)row * 2, q,
                                                  out, T, seq, pos, bt, MAXB, BS, NH, NKV, hd, window));
        for (int sq = 0; sq < NSEQ; sq++) done[sq] += len[sq];
        free(q), free(k), free(v), free(out);
    }
    CHECK_MSG(worst < 2e-6, "%s hd %lld window %lld %s: vs float64 %.3g", lmc_kvq_name(f), (long long)hd,
              (long long)window, avx2 ? "avx2" : "portable", worst);
    CHECK_MSG(stored, "%s hd %lld: stored rows are the input's rounding", lmc_kvq_name(f), (long long)hd);
    printf("%s op hd %lld window %lld %s: rel err vs float64 over the stored rows %.2e\n", lmc_kvq_name(f),
           (long long)hd, (long long)window, avx2 && lmc_cpu_drf_avx2() && hd % 8 == 0 ? "avx2" : "portable", worst);
    free(kc), free(vc);
    lmc_backend_cpu_free(&be);
}

/* llama-tiny: batched forward over the f16 / bf16 pool vs the f32 pool */
static void test_model(enum lmc_kvq_fmt f, const struct lmc_model *m, const struct lmc_backend *cpu) {
    lmc_err err = {0};
    struct lmc_backend kp;
    CHECK(lmc_kvq_paged_backend(&kp, cpu, f, &err) == LMC_OK);
    int64_t V = m->cfg.vocab_size, np = 37, nd = 6, n = np + nd;
    int32_t ids[64];
    uint64_t rs = 5;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&rs) % (uint64_t)V);
    float *lg[2];
    for (int w = 0; w < 2; w++) {
        const struct lmc_backend *b = w ? &kp : cpu;
        lg[w] = malloc((size_t)(n * V) * sizeof(float));
        struct lmc_kv_pool pool;
        struct lmc_batch_acts ba;
        CHECK(lmc_kv_pool_init(&pool, m, b, 16, 8, &err) == LMC_OK);
        CHECK(pool.row_bytes == (size_t)pool.row * (w ? 2 : 4));
        CHECK(lmc_batch_acts_init(&ba, m, b, 64, 1, 8, 64, &err) == LMC_OK);
        int32_t bt[8] = {9, 2, 14, 0, 7, 11, 3, 5}, seq[64] = {0}, pos[64], rows[64];
        for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)i, rows[i] = (int32_t)i;
        struct lmc_batch bb = {np, ids, seq, pos, 1, bt, 8, rows, np, NULL};
        CHECK(lmc_model_forward_batch(m, b, &ba, &pool, &bb, lg[w], &err) == LMC_OK);
        for (int64_t i = np; i < n; i++) {
            int32_t r0 = 0;
            struct lmc_batch d = {1, ids + i, seq, pos + i, 1, bt, 8, &r0, 1, NULL};
            CHECK(lmc_model_forward_batch(m, b, &ba, &pool, &d, lg[w] + i * V, &err) == LMC_OK);
        }
        lmc_batch_acts_free(&ba);
        lmc_kv_pool_free(&pool);
    }
    int same = 0;
    double rel = test_logits_rel(lg[0], lg[1], n, V, &same);
    /* f16 keeps 11 significant bits, bf16 8 */
    CHECK_MSG(rel < (f == LMC_KVQ_BF16 ? 1e-2 : 5e-3), "%s vs f32 pool logits %.3g", lmc_kvq_name(f), rel);
    CHECK_MSG(same >= n - 1, "%s greedy tokens: %d of %lld the same", lmc_kvq_name(f), same, (long long)n);
    printf("model: %s vs f32 paged pool, logits rel err %.2e, argmax same at %d of %lld positions\n", lmc_kvq_name(f),
           rel, same, (long long)n);
    free(lg[0]), free(lg[1]);
}

int main(void) {
    const int64_t hds[3] = {20, 24, 64};
    const enum lmc_kvq_fmt fmts[2] = {LMC_KVQ_F16, LMC_KVQ_BF16};
    for (int fi = 0; fi < 2; fi++)
        for (int a = 0; a < 2; a++)
            for (int i = 0; i < 3; i++) {
                test_op(fmts[fi], hds[i], 0, a == 0);
                test_op(fmts[fi], hds[i], 4, a == 0);
            }
    lmc_err err = {0};
    struct lmc_model m;
    struct lmc_backend cpu, bad = {0};
    struct lmc_backend out;
    bad.name = "cuda";
    CHECK(lmc_kvq_paged_backend(&out, &bad, LMC_KVQ_F16, &err) == LMC_ERR_UNSUPPORTED);
    CHECK(lmc_kvq_paged_backend(&out, &bad, LMC_KVQ_BF16, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "bf16"));
    if (!fixture_open_cpu(&m, &cpu, NULL, "tests/fixtures/llama-tiny", NULL, 2)) return test_finish("test_attention_paged_f16");
    test_model(LMC_KVQ_F16, &m, &cpu);
    test_model(LMC_KVQ_BF16, &m, &cpu);
    fixture_close_cpu(&m, &cpu, NULL);
    return test_finish("test_attention_paged_f16");
}
