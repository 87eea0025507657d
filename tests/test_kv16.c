/* test_kv16.c — the single-sequence KV cache in f16 and bf16 on the CPU
 * (`--kv-dtype f16|bf16` of lmc generate / chat / eval; infer/kvq.h's
 * lmc_kvq_backend_fmt, ops/cpu/attention_kv16.c), each format:
 *  - the ops: a prefill of 13 rows, a decode row, a 4-row verification
 *    and a rewind that overwrites two rows (6 heads over 2 KV heads, head
 *    sizes 20, 24 and 64, with and without a window, AVX2 and the portable
 *    twin): every stored value is the input's rounding, and the output
 *    matches a float64 attention over the stored rows; with rotary
 *    positions the stored keys are the rounding of the f32 backend's
 *    rotated keys and q is rotated the same;
 *  - the model: llama-tiny's single-sequence forward (a 30-token prefill
 *    with all logits, then 8 decode steps) against the f32 cache: logits
 *    within the format's rounding, the same greedy tokens;
 *  - the API: names, the CUDA backend's own bf16 cache, refusals. */
#include "model_fixture.h"
#include "paged_kv_test.h"
#include "test.h"
#include "core/core.h"
#include "core/dtype.h"
#include "infer/kvq.h"
#include "ops/backend.h"
#include "ops/cpu/kvquant.h"
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NH 6
#define NKV 2
#define CTX 40

static uint16_t round_to(enum lmc_kvq_fmt f, float x) {
    return f == LMC_KVQ_BF16 ? lmc_f32_to_bf16(x) : lmc_f32_to_f16(x);
}

static void test_op(enum lmc_kvq_fmt f, int64_t hd, int64_t window, bool avx2) {
    lmc_err err = {0};
    struct lmc_backend be, kq;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    CHECK(lmc_kvq_backend_fmt(&kq, &be, f, &err) == LMC_OK);
    CHECK(kq.kv_dtype == (f == LMC_KVQ_BF16 ? LMC_DTYPE_BF16 : LMC_DTYPE_F16) && !kq.attention_mask);
    struct lmc_cpu_ctx *cc = be.ctx;
    if (!avx2) cc->drf_avx2 = false; /* the portable twin */
    const int64_t row = NKV * hd;
    uint16_t *kc = calloc((size_t)(CTX * row), 2), *vc = calloc((size_t)(CTX * row), 2);
    uint64_t rs = 41 + (uint64_t)hd + (uint64_t)f;
    /* (pos0, M): prefill, decode, verification, rewind over rows 15, 16 */
    const int64_t steps[4][2] = {{0, 13}, {13, 1}, {14, 4}, {15, 2}};
    double worst = 0;
    bool stored = true;
    const int32_t bt[1] = {0};
    for (int st = 0; st < 4; st++) {
        int64_t pos0 = steps[st][0], M = steps[st][1];
        int32_t seq[16] = {0}, pos[16];
        for (int64_t i = 0; i < M; i++) pos[i] = (int32_t)(pos0 + i);
        float *q = malloc((size_t)(M * NH * hd) * sizeof *q), *k = malloc((size_t)(M * row) * sizeof *k);
        float *v = malloc((size_t)(M * row) * sizeof *v), *out = malloc((size_t)(M * NH * hd) * sizeof *out);
        for (int64_t i = 0; i < M * NH * hd; i++) q[i] = 2 * test_rand(&rs);
        for (int64_t i = 0; i < M * row; i++) k[i] = 2 * test_rand(&rs), v[i] = test_rand(&rs) + 0.3f;
        kq.rope_kv_store(kq.ctx, q, k, v, kc, vc, M, NH, NKV, hd, 0, pos, NULL, 1.0f);
        for (int64_t i = 0; i < M; i++)
            for (int64_t e = 0; e < row; e++)
                stored &= kc[pos[i] * row + e] == round_to(f, k[i * row + e]) &&
                          vc[pos[i] * row + e] == round_to(f, v[i * row + e]);
        kq.attention(kq.ctx, out, q, (const float *)(void *)kc, (const float *)(void *)vc, M, pos0, NH, NKV, hd,
                     1.0f / sqrtf((float)hd), window);
        /* the cache as one block of one sequence: row t is position t */
        worst = LMC_MAX(worst, test_paged_ref_err(f, (const char *)kc, (const char *)vc, (size_t)row * 2, q, out, M,
                                                  seq, pos, bt, 1, CTX, NH, NKV, hd, window));
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

/* rotary positions: the stored keys are the rounding of the f32 rope's keys, q is rotated alike */
static void test_rope(enum lmc_kvq_fmt f) {
    lmc_err err = {0};
    struct lmc_backend be, kq;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    CHECK(lmc_kvq_backend_fmt(&kq, &be, f, &err) == LMC_OK);
    const int64_t hd = 24, row = NKV * hd, M = 5, rot = 16;
    uint64_t rs = 7;
    double inv_freq[8];
    for (int i = 0; i < rot / 2; i++) inv_freq[i] = pow(10000.0, -2.0 * i / (double)rot);
    int32_t pos[5] = {3, 4, 5, 6, 7};
    float q[5 * NH * 24], k[5 * NKV * 24], v[5 * NKV * 24], q2[5 * NH * 24], k2[5 * NKV * 24];
    for (int64_t i = 0; i < M * NH * hd; i++) q[i] = q2[i] = test_rand(&rs);
    for (int64_t i = 0; i < M * row; i++) k[i] = k2[i] = test_rand(&rs), v[i] = test_rand(&rs);
    uint16_t kc[CTX * NKV * 24], vc[CTX * NKV * 24];
    kq.rope_kv_store(kq.ctx, q, k, v, kc, vc, M, NH, NKV, hd, rot, pos, inv_freq, 0.9f);
    be.rope(be.ctx, q2, M, NH, hd, rot, pos, inv_freq, 0.9f);
    be.rope(be.ctx, k2, M, NKV, hd, rot, pos, inv_freq, 0.9f);
    bool same_q = memcmp(q, q2, sizeof q) == 0, keys = true;
    for (int64_t i = 0; i < M; i++)
        for (int64_t e = 0; e < row; e++) keys &= kc[pos[i] * row + e] == round_to(f, k2[i * row + e]);
    CHECK_MSG(same_q && keys, "%s rope: q as the f32 rope %d, keys its rounding %d", lmc_kvq_name(f), same_q, keys);
    lmc_backend_cpu_free(&be);
}

/* llama-tiny through the f16 / bf16 cache against the f32 cache */
static void test_model(enum lmc_kvq_fmt f, const struct lmc_model *m, const struct lmc_backend *cpu) {
    lmc_err err = {0};
    struct lmc_backend kq;
    CHECK(lmc_kvq_backend_fmt(&kq, cpu, f, &err) == LMC_OK);
    int64_t V = m->cfg.vocab_size, np = 30, nd = 8, n = np + nd;
    int32_t ids[64];
    uint64_t rs = 11;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&rs) % (uint64_t)V);
    float *lg[2];
    for (int w = 0; w < 2; w++) {
        const struct lmc_backend *b = w ? &kq : cpu;
        lg[w] = malloc((size_t)(n * V) * sizeof(float));
        struct lmc_kv kv;
        struct lmc_acts acts;
        CHECK(lmc_kv_init(&kv, m, b, 64, &err) == LMC_OK);
        CHECK(lmc_acts_init(&acts, m, b, 64, 64, &err) == LMC_OK);
        CHECK(lmc_kvq_kv_format(&kv, w ? f : LMC_KVQ_F16, 0, &err) == (w ? LMC_OK : LMC_ERR_ARG));
        CHECK(lmc_model_forward(m, b, &acts, &kv, ids, np, 0, lg[w], true, &err) == LMC_OK);
        for (int64_t i = np; i < n; i++)
            CHECK(lmc_model_forward(m, b, &acts, &kv, ids + i, 1, i, lg[w] + i * V, false, &err) == LMC_OK);
        lmc_acts_free(&acts);
        lmc_kv_free(&kv);
    }
    int same = 0;
    double rel = test_logits_rel(lg[0], lg[1], n, V, &same);
    /* f16 keeps 11 significant bits, bf16 8 */
    CHECK_MSG(rel < (f == LMC_KVQ_BF16 ? 1e-2 : 5e-3), "%s vs f32 cache logits %.3g", lmc_kvq_name(f), rel);
    CHECK_MSG(same >= n - 1, "%s greedy tokens: %d of %lld the same", lmc_kvq_name(f), same, (long long)n);
    printf("model: %s vs f32 cache, logits rel err %.2e, argmax same at %d of %lld positions\n", lmc_kvq_name(f),
           rel, same, (long long)n);
    free(lg[0]), free(lg[1]);
}

static void test_api(void) {
    lmc_err err = {0};
    CHECK(lmc_kvq_parse("f16") == LMC_KVQ_F16 && lmc_kvq_parse("bf16") == LMC_KVQ_BF16 &&
          lmc_kvq_parse("f32") == LMC_KVQ_NONE && lmc_kvq_parse("fp16") == LMC_KVQ_NONE);
    CHECK(!strcmp(lmc_kvq_name(LMC_KVQ_BF16), "bf16") && lmc_kvq_is_half(LMC_KVQ_BF16) &&
          !lmc_kvq_is_half(LMC_KVQ_Q8));
    struct lmc_backend cuda = {0}, out;
    cuda.name = "cuda";
    cuda.kv_dtype = LMC_DTYPE_BF16;
    CHECK(lmc_kvq_backend_fmt(&out, &cuda, LMC_KVQ_BF16, &err) == LMC_OK && out.kv_dtype == LMC_DTYPE_BF16);
    CHECK(lmc_kvq_backend_fmt(&out, &cuda, LMC_KVQ_F16, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "f16"));
    cuda.kv_dtype = LMC_DTYPE_F32; /* its fp32 check mode */
    CHECK(lmc_kvq_backend_fmt(&out, &cuda, LMC_KVQ_BF16, &err) == LMC_ERR_UNSUPPORTED);
    struct lmc_backend other = {0};
    other.name = "opencl";
    CHECK(lmc_kvq_backend_fmt(&out, &other, LMC_KVQ_F16, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "opencl"));
    CHECK(lmc_kvq_backend_fmt(&out, &other, (enum lmc_kvq_fmt)77, &err) == LMC_ERR_ARG);
}

int main(void) {
    const enum lmc_kvq_fmt fmts[2] = {LMC_KVQ_F16, LMC_KVQ_BF16};
    const int64_t hds[3] = {20, 24, 64};
    for (int fi = 0; fi < 2; fi++) {
        for (int a = 0; a < 2; a++)
            for (int i = 0; i < 3; i++) {
                test_op(fmts[fi], hds[i], 0, a == 0);
                test_op(fmts[fi], hds[i], 5, a == 0);
            }
        test_rope(fmts[fi]);
    }
    test_api();
    struct lmc_model m;
    struct lmc_backend cpu;
    if (!fixture_open_cpu(&m, &cpu, NULL, "tests/fixtures/llama-tiny", NULL, 2)) return test_finish("test_kv16");
    test_model(LMC_KVQ_F16, &m, &cpu);
    test_model(LMC_KVQ_BF16, &m, &cpu);
    fixture_close_cpu(&m, &cpu, NULL);
    return test_finish("test_kv16");
}
