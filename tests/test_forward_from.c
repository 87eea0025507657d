/* test_forward_from.c — lmc_model_forward_from (self-speculation's
 * verification from the draft's hidden states, LayerSkip-style) on the
 * llama, qwen2 and gpt2 fixtures (rotary and learned positions) and the
 * default model (8 layers): after a
 * 5-token prefill, 7 rows run one at a time through the first L layers (a
 * view of the model with L layers, as the draft does: their K/V appended,
 * the residual stream read back), then from layer L in one call; the
 * logits of all 7 rows and every cached K/V row match a plain 7-row
 * forward of the whole model (within 1e-5 of the largest; the count of
 * bit-identical logits is printed), for L = 1 and L = layers - 1; bad
 * arguments are refused. */
#include "model_fixture.h"
#include "test.h"
#include "core/core.h"
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NP 5
#define NR 7

static double rel_err(const float *a, const float *b, size_t n, size_t *same) {
    double num = 0, den = 0;
    *same = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)a[i]));
        *same += a[i] == b[i];
    }
    return den > 0 ? num / den : num;
}

static void test_fixture(const char *dir) {
    struct lmc_model m;
    struct lmc_backend be;
    lmc_err err = {0};
    if (!fixture_open_cpu(&m, &be, NULL, dir, NULL, 2)) return;
    int64_t V = m.cfg.vocab_size, C = m.cfg.hidden_size, nl = m.cfg.num_layers, ctx = 32;
    int32_t ids[NP + NR];
    uint64_t rs = 3;
    for (int i = 0; i < NP + NR; i++) ids[i] = (int32_t)(test_rng_next(&rs) % (uint64_t)V);
    float *ref = malloc((size_t)(NR * V) * sizeof *ref), *got = malloc((size_t)(NR * V) * sizeof *got);
    float *x = malloc((size_t)(NR * C) * sizeof *x), *last = malloc((size_t)V * sizeof *last);
    struct lmc_kv kr, kv;
    struct lmc_acts a, d;
    CHECK(lmc_kv_init(&kr, &m, &be, ctx, &err) == LMC_OK && lmc_acts_init(&a, &m, &be, 16, 16, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a, &kr, ids, NP, 0, last, false, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a, &kr, ids + NP, NR, NP, ref, true, &err) == LMC_OK);
    const int64_t Ls[2] = {1, nl - 1};
    for (int li = 0; li < (nl > 2 ? 2 : 1); li++) {
        int64_t L = Ls[li];
        struct lmc_model view = m; /* the first L layers and the shared head, as self-speculation's draft */
        view.cfg.num_layers = L;
        CHECK(lmc_kv_init(&kv, &m, &be, ctx, &err) == LMC_OK && lmc_acts_init(&d, &view, &be, 16, 1, &err) == LMC_OK);
        CHECK(lmc_model_forward(&m, &be, &a, &kv, ids, NP, 0, last, false, &err) == LMC_OK);
        struct lmc_kv dkv = kv; /* the draft writes the first L layers of the same cache */
        dkv.n_layers = L;
        for (int64_t r = 0; r < NR; r++) {
            CHECK(lmc_model_forward(&view, &be, &d, &dkv, ids + NP + r, 1, NP + r, NULL, false, &err) == LMC_OK);
            be.download(be.ctx, x + r * C, d.x, (size_t)C * sizeof(float));
        }
        CHECK(lmc_model_forward_from(&m, &be, &a, &kv, x, NR, NP, L, got, &err) == LMC_OK);
        size_t same = 0, ksame = 0;
        double e = rel_err(ref, got, (size_t)(NR * V), &same), ek = 0;
        for (int64_t l = 0; l < nl; l++) {
            size_t off = (size_t)l * kv.layer_bytes / sizeof(float) + (size_t)(NP * kv.row), n = (size_t)(NR * kv.row), s1;
            ek = fmax(ek, rel_err(kr.k + off, kv.k + off, n, &s1));
            ksame += s1;
            ek = fmax(ek, rel_err(kr.v + off, kv.v + off, n, &s1));
            ksame += s1;
        }
        CHECK_MSG(e < 1e-5 && ek < 1e-5, "%s from layer %lld: logits %.3g, K/V rows %.3g", dir, (long long)L, e, ek);
        printf("%-26s from layer %lld: logits rel err %.2e (%zu of %lld bit-identical), K/V %.2e (%zu of %lld)\n", dir,
               (long long)L, e, same, (long long)(NR * V), ek, ksame, (long long)(2 * nl * NR * kv.row));
        lmc_acts_free(&d);
        lmc_kv_free(&kv);
    }
    /* refused: layer out of range, too many rows, past the context */
    CHECK(lmc_model_forward_from(&m, &be, &a, &kr, x, NR, NP, nl, got, &err) == LMC_ERR_ARG);
    CHECK(lmc_model_forward_from(&m, &be, &a, &kr, x, NR, NP, -1, got, &err) == LMC_ERR_ARG);
    CHECK(lmc_model_forward_from(&m, &be, &a, &kr, x, 17, 0, 1, got, &err) == LMC_ERR_ARG);
    CHECK(lmc_model_forward_from(&m, &be, &a, &kr, x, NR, ctx - 2, 1, got, &err) == LMC_ERR_ARG &&
          strstr(err.msg, "context"));
    lmc_acts_free(&a);
    lmc_kv_free(&kr);
    free(ref), free(got), free(x), free(last);
    fixture_close_cpu(&m, &be, NULL);
}

int main(void) {
    test_fixture("tests/fixtures/llama-tiny");
    test_fixture("tests/fixtures/qwen2-tiny");
    test_fixture("tests/fixtures/gpt2-tiny");
    test_fixture("models/kjv-llama");
    return test_finish("test_forward_from");
}
