/* test_kvq_paged.c — the compressed paged KV pool (q8, q4; issue 17):
 *  - the op: a prefill step then a decode/chunk step of 3 sequences with
 *    odd sizes (6 heads over 2 KV heads of 20, blocks of 5 through
 *    scrambled block tables, a sliding window too) against a float64
 *    attention over the rows decoded from the pool, every decoded value
 *    within half a quantization step (plus f16 rounding) of what was
 *    stored;
 *  - the model: llama-tiny's batched forward over a compressed pool equals
 *    the single-sequence forward over the compressed cache of the same
 *    format (the same quantized rows), prompt and decode logits;
 *  - sizing: bytes per token by format, and a fixed memory budget gives
 *    the scheduler floor(budget / block bytes) blocks, q4 over 4x f32's. */
#include "model_fixture.h"
#include "test.h"
#include "paged_kv_test.h"
#include "core/core.h"
#include "infer/kvq.h"
#include "infer/scheduler.h"
#include "model/forward_batch.h"
#include "ops/backend.h"
#include "ops/cpu/kvquant.h"
#include "ops/cpu/kvquant_layout.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define NH 6
#define NKV 2
#define HD 20
#define ROW (NKV * HD)
#define BS 5
#define MAXB 6
#define NSEQ 3
#define NBLK 20

/* every decoded value of x's slot within half a step of x (f16 scales) */
static bool decoded_close(enum lmc_kvq_fmt f, const char *slot, const float *x) {
    float d[ROW];
    lmc_kvq_paged_decode(f, slot, ROW, 0, ROW, d);
    const int64_t gs = lmc_kvq_group_of(f); /* values per scale: q8 64, q4 32 */
    for (int64_t g = 0; g < ROW; g += gs) {
        int64_t n = LMC_MIN(gs, ROW - g);
        float lo = x[g], hi = x[g], amax = 0;
        for (int64_t e = g; e < g + n; e++) {
            lo = LMC_MIN(lo, x[e]), hi = LMC_MAX(hi, x[e]);
            amax = LMC_MAX(amax, fabsf(x[e]));
        }
        double step = f == LMC_KVQ_Q8 ? amax / 127.0 : (hi - lo) / 15.0;
        for (int64_t e = g; e < g + n; e++)
            if (fabs((double)d[e] - x[e]) > 0.5 * step * 1.01 + 2e-3 * amax) return false;
    }
    return true;
}

static void test_op(enum lmc_kvq_fmt f, int64_t window) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    struct lmc_backend kq;
    CHECK(lmc_kvq_paged_backend(&kq, &be, f, &err) == LMC_OK);
    size_t rb = kq.kv_row_bytes(ROW);
    CHECK(rb == lmc_kvq_paged_row_bytes(f, ROW) && rb % 8 == 0 && rb < (size_t)ROW * 4);
    char *kc = calloc((size_t)NBLK * BS, rb), *vc = calloc((size_t)NBLK * BS, rb);
    uint64_t rs = 17 + (uint64_t)f;
    int32_t bt[NSEQ * MAXB];
    test_paged_block_table(bt, NSEQ * MAXB, NBLK, &rs); /* scrambled block ids */
    /* step 1: prefill 13, 7 and 22 tokens; step 2: one, three and one more */
    const int64_t len1[NSEQ] = {13, 7, 22}, len2[NSEQ] = {1, 3, 1};
    double worst = 0;
    bool close = true;
    int64_t done[NSEQ] = {0};
    for (int stp = 0; stp < 2; stp++) {
        const int64_t *len = stp ? len2 : len1;
        int32_t seq[64], pos[64];
        int64_t T = test_paged_step(NSEQ, len, done, seq, pos);
        float *q = malloc((size_t)T * NH * HD * sizeof *q), *k = malloc((size_t)T * ROW * sizeof *k);
        float *v = malloc((size_t)T * ROW * sizeof *v), *out = malloc((size_t)T * NH * HD * sizeof *out);
        for (int64_t i = 0; i < T * NH * HD; i++) q[i] = test_rand(&rs);
        for (int64_t i = 0; i < T * ROW; i++) k[i] = 2 * test_rand(&rs), v[i] = test_rand(&rs) + 0.3f;
        kq.attention_paged(kq.ctx, out, q, k, v, (float *)kc, (float *)vc, T, seq, pos, bt, MAXB, BS, NH, NKV,
                           HD, 1.0f / sqrtf((float)HD), window);
        for (int64_t i = 0; i < T; i++) {
            size_t slot = (size_t)bt[seq[i] * MAXB + pos[i] / BS] * BS + (size_t)(pos[i] % BS);
            close &= decoded_close(f, kc + slot * rb, k + i * ROW) && decoded_close(f, vc + slot * rb, v + i * ROW);
        }
        worst = LMC_MAX(worst, test_paged_ref_err(f, kc, vc, rb, q, out, T, seq, pos, bt, MAXB, BS, NH, NKV, HD, window));
        for (int sq = 0; sq < NSEQ; sq++) done[sq] += len[sq];
        free(q), free(k), free(v), free(out);
    }
    CHECK_MSG(worst < 2e-6, "%s window %lld: attention vs float64 over the decoded rows %.3g",
              lmc_kvq_name(f), (long long)window, worst);
    CHECK_MSG(close, "%s: decoded rows within half a step", lmc_kvq_name(f));
    printf("op %s window %lld: rel err vs float64 over decoded rows %.2e, row %zu bytes (f32 %d)\n",
           lmc_kvq_name(f), (long long)window, worst, rb, ROW * 4);
    free(kc), free(vc);
    lmc_backend_cpu_free(&be);
}

/* llama-tiny: batched forward over the compressed pool vs the
 * single-sequence forward over the compressed cache, same format */
static void test_model(const struct lmc_model *m, const struct lmc_backend *cpu, enum lmc_kvq_fmt f) {
    lmc_err err = {0};
    struct lmc_backend kp, ks;
    CHECK(lmc_kvq_paged_backend(&kp, cpu, f, &err) == LMC_OK && lmc_kvq_backend(&ks, cpu, &err) == LMC_OK);
    int64_t V = m->cfg.vocab_size, np = 37, nd = 6, n = np + nd;
    int32_t ids[64];
    uint64_t rs = 5;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&rs) % (uint64_t)V);
    float *ref = malloc((size_t)(n * V) * sizeof *ref), *got = malloc((size_t)(n * V) * sizeof *got);
    struct lmc_kv kv;
    struct lmc_acts a;
    CHECK(lmc_kv_init(&kv, m, &ks, 64, &err) == LMC_OK && lmc_acts_init(&a, m, &ks, 64, 64, &err) == LMC_OK);
    CHECK(lmc_kvq_kv_format(&kv, f, 32, &err) == LMC_OK);
    CHECK(lmc_model_forward(m, &ks, &a, &kv, ids, np, 0, ref, true, &err) == LMC_OK);
    for (int64_t i = np; i < n; i++)
        CHECK(lmc_model_forward(m, &ks, &a, &kv, ids + i, 1, i, ref + i * V, true, &err) == LMC_OK);
    lmc_kv_free(&kv);
    lmc_acts_free(&a);
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    CHECK(lmc_kv_pool_init(&pool, m, &kp, 16, 8, &err) == LMC_OK);
    CHECK(pool.row_bytes == lmc_kvq_paged_row_bytes(f, pool.row));
    CHECK(lmc_batch_acts_init(&ba, m, &kp, 64, 1, 8, 64, &err) == LMC_OK);
    int32_t bt[8] = {9, 2, 14, 0, 7, 11, 3, 5}, seq[64] = {0}, pos[64], rows[64];
    for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)i, rows[i] = (int32_t)i;
    struct lmc_batch b = {np, ids, seq, pos, 1, bt, 8, rows, np, NULL};
    CHECK(lmc_model_forward_batch(m, &kp, &ba, &pool, &b, got, &err) == LMC_OK);
    for (int64_t i = np; i < n; i++) {
        int32_t r0 = 0;
        struct lmc_batch d = {1, ids + i, seq, pos + i, 1, bt, 8, &r0, 1, NULL};
        CHECK(lmc_model_forward_batch(m, &kp, &ba, &pool, &d, got + i * V, &err) == LMC_OK);
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < n * V; i++) {
        num = LMC_MAX(num, fabs((double)got[i] - ref[i]));
        den = LMC_MAX(den, fabs((double)ref[i]));
    }
    CHECK_MSG(num / den < 1e-5, "%s: paged vs single-sequence compressed logits %.3g", lmc_kvq_name(f), num / den);
    printf("model %s: paged vs single-sequence compressed cache, logits rel err %.2e\n", lmc_kvq_name(f), num / den);
    lmc_batch_acts_free(&ba);
    lmc_kv_pool_free(&pool);
    free(ref), free(got);
}

/* a fixed budget: floor(budget / block bytes) blocks; q4 > 4x f32 */
static void test_sizing(const struct lmc_model *m, const struct lmc_backend *cpu) {
    lmc_err err = {0};
    int64_t blocks[3] = {0}, L = m->cfg.num_layers, row = m->cfg.num_kv_heads * m->cfg.head_dim;
    for (int fi = 0; fi < 3; fi++) {
        enum lmc_kvq_fmt f = fi == 0 ? LMC_KVQ_NONE : fi == 1 ? LMC_KVQ_Q8 : LMC_KVQ_Q4;
        struct lmc_backend kp = *cpu;
        if (f) CHECK(lmc_kvq_paged_backend(&kp, cpu, f, &err) == LMC_OK);
        size_t tok = lmc_kv_pool_token_bytes(m, &kp);
        CHECK(tok == (size_t)(2 * L) * (f ? lmc_kvq_paged_row_bytes(f, row) : (size_t)row * 4));
        struct lmc_sched_opts o;
        lmc_sched_opts_default(&o);
        o.kv_bytes = (size_t)300 * 1024;
        o.max_batch = 4;
        o.ctx = 64;
        struct lmc_sched *s = NULL;
        CHECK(lmc_sched_init(&s, m, &kp, NULL, &o, &err) == LMC_OK);
        if (!s) continue;
        struct lmc_sched_stats st;
        lmc_sched_stats(s, &st);
        blocks[fi] = st.kv_blocks_total;
        CHECK(st.kv_bytes_per_token == (int64_t)tok);
        CHECK(st.kv_blocks_total == (int64_t)(o.kv_bytes / (tok * 8)));
        CHECK(st.kv_pool_bytes == st.kv_blocks_total * (int64_t)tok * 8 && st.kv_pool_bytes <= (int64_t)o.kv_bytes);
        printf("sizing %s: %zu bytes per token, %lld blocks of 8 in %zu bytes\n", f ? lmc_kvq_name(f) : "f32",
               tok, (long long)st.kv_blocks_total, o.kv_bytes);
        lmc_sched_free(s);
    }
    CHECK(blocks[1] >= 3 * blocks[0] && blocks[2] >= 4 * blocks[0]);
    struct lmc_backend bad;
    CHECK(lmc_kvq_paged_backend(&bad, cpu, LMC_KVQ_NONE, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "kivi2"));
}

int main(void) {
    for (int f = LMC_KVQ_Q8; f <= LMC_KVQ_Q4; f++) {
        test_op((enum lmc_kvq_fmt)f, 0);
        test_op((enum lmc_kvq_fmt)f, 4);
    }
    struct lmc_model m;
    struct lmc_backend cpu;
    if (!fixture_open_cpu(&m, &cpu, NULL, "tests/fixtures/llama-tiny", NULL, 2)) return test_finish("test_kvq_paged");
    test_model(&m, &cpu, LMC_KVQ_Q8);
    test_model(&m, &cpu, LMC_KVQ_Q4);
    test_sizing(&m, &cpu);
    fixture_close_cpu(&m, &cpu, NULL);
    return test_finish("test_kvq_paged");
}
