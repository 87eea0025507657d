/* test_kvquant.c — compressed KV caches (ops/cpu/kvquant.c,
 * attention_kvq.c, infer/kvq.c): the group quantizers keep every value
 * within half a step of its original (q8 symmetric, 4- and 2-bit
 * asymmetric, odd sizes with partial groups); a layer cache decodes each
 * position as its format prescribes (q8/q4 rows bit-equal to quantizing the
 * row alone, KIVI's last R..R+31 positions exact f16, older keys within
 * half a per-channel step, values within half a per-token step), rollback
 * (including into a quantized KIVI block) then new rows, and 60 random
 * stores with rollbacks per format and seed against a ground-truth copy
 * (q8/q4 bit-equal to the true row quantized alone, KIVI within a step,
 * its recent rows exact f16); attention over the
 * compressed rows equals float64 attention over the decoded rows (1e-5),
 * with GQA, windows and several queries; its error against the float cache
 * is printed per format and bounded; through llama-tiny and kjv-llama the
 * prompt logits with a q8 cache stay within 2% of the float cache's, and
 * bad formats/sizes give LMC_ERR_ARG. */
#include "model_fixture.h"
#include "test.h"
#include "core/core.h"
#include "core/dtype.h"
#include "infer/kvq.h"
#include "ops/cpu/kvquant_layout.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

static void test_quantizers(void) {
    uint64_t s = 7;
    enum { N = 77 };
    float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = test_rand(&s) * (i < 32 ? 3.0f : i < 64 ? 0.01f : 40.0f);
    int8_t c8[N];
    uint16_t sc[3], sm[6];
    lmc_kvq_q8_quant(x, N, c8, sc);
    lmc_kvq_q8_dequant(c8, sc, N, y);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float step = lmc_f16_to_f32(sc[i / LMC_KVQ_Q8_G]); /* a scale per 64 values */
        if (!(fabsf(x[i] - y[i]) <= step * 0.5f * (1 + 1e-5f))) bad++;
    }
    CHECK_MSG(bad == 0, "q8: %d values beyond half a step", bad);
    for (int bits = 2; bits <= 4; bits += 2) {
        uint8_t codes[N];
        lmc_kvq_asym_quant(x, N, bits, codes, sm);
        lmc_kvq_asym_dequant(codes, sm, N, bits, y);
        bad = 0;
        for (int i = 0; i < N; i++) {
            float step = lmc_f16_to_f32(sm[2 * (i / 32)]);
            if (!(fabsf(x[i] - y[i]) <= step * 0.5f * (1 + 1e-5f) + 1e-7f)) bad++;
        }
        CHECK_MSG(bad == 0, "%d-bit: %d values beyond half a step", bits, bad);
    }
    /* the shared (host + device) f16 conversions equal core/dtype.h's */
    int diff = 0;
    uint64_t s2 = 77;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)test_rng_next(&s2);
        float f;
        memcpy(&f, &u, 4);
        if (i % 2) f = test_rand(&s2) * (float)ldexp(1.0, (int)(test_rng_next(&s2) % 40) - 26);
        if (f != f) continue;
        diff += lmc_kvq_to_f16(f) != lmc_f32_to_f16(f);
        uint16_t h = (uint16_t)u;
        diff += !(lmc_kvq_f16(h) == lmc_f16_to_f32(h) || (lmc_kvq_f16(h) != lmc_kvq_f16(h)));
    }
    CHECK_MSG(diff == 0, "%d f16 conversions differ from core/dtype.h", diff);
    /* a constant group: exact */
    float cst[5] = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
    uint8_t cc[2];
    lmc_kvq_asym_quant(cst, 5, 2, cc, sm);
    lmc_kvq_asym_dequant(cc, sm, 5, 2, y);
    CHECK(fabsf(y[0] - 0.3f) < 1e-3f && y[4] == y[0]);
    CHECK(lmc_kvq_parse("q8") == LMC_KVQ_Q8 && lmc_kvq_parse("kivi2") == LMC_KVQ_KIVI2 &&
          lmc_kvq_parse("q3") == LMC_KVQ_NONE);
    /* f16 / bf16: plain 2-byte rows (test_kv16), not a compressed layer's format */
    CHECK(lmc_kvq_parse("f16") == LMC_KVQ_F16 && lmc_kvq_parse("bf16") == LMC_KVQ_BF16 &&
          lmc_kvq_parse("q4") == LMC_KVQ_Q4 && lmc_kvq_parse("f32") == LMC_KVQ_NONE &&
          !strcmp(lmc_kvq_name(LMC_KVQ_F16), "f16"));
    /* bytes per token against bf16 (4 * row per layer): q8 (288 + 2 * 5) /
     * 576 = 0.517 (64-value groups; the goal <= 0.53), q4 20/64,
     * kivi2 <= 0.2 */
    double bf16 = 4.0 * 288;
    CHECK(fabs(lmc_kvq_bytes_per_token(LMC_KVQ_Q8, 288) / bf16 - 298.0 / 576) < 1e-9);
    CHECK(lmc_kvq_bytes_per_token(LMC_KVQ_Q8, 288) / bf16 <= 0.53);
    CHECK(fabs(lmc_kvq_bytes_per_token(LMC_KVQ_Q4, 288) / bf16 - 20.0 / 64) < 1e-9);
    CHECK(lmc_kvq_bytes_per_token(LMC_KVQ_KIVI2, 288) / bf16 <= 0.2);
}

enum { CTX = 200, KVH = 3, HD = 20, ROW = KVH * HD, NH = 6 };

struct layer_buf {
    void *k, *v;
};

static void make_rows(float *rows, int64_t n, uint64_t seed) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t c = 0; c < ROW; c++) /* per-channel scales differ (outlier channels) */
            rows[t * ROW + c] = test_rand(&seed) * (c % 7 == 0 ? 6.0f : 1.0f) + (c % 5 == 0 ? 2.0f : 0);
}

/* max |decoded - original| over rows [0, n) relative to max |original| */
static double decode_err(const struct layer_buf *b, const float *K, const float *V, int64_t n) {
    float k[ROW], v[ROW];
    double e = 0, mx = 0;
    for (int64_t t = 0; t < n; t++) {
        lmc_kvq_layer_row(b->k, b->v, t, k, v);
        for (int c = 0; c < ROW; c++) {
            e = fmax(e, fabs(k[c] - K[t * ROW + c]));
            e = fmax(e, fabs(v[c] - V[t * ROW + c]));
            mx = fmax(mx, fabs(K[t * ROW + c]));
        }
    }
    return e / mx;
}

/* x (one row) quantized alone in format f (q8 or q4) and decoded into out */
static void quant_alone(enum lmc_kvq_fmt f, const float *x, float *out) {
    if (f == LMC_KVQ_Q8) {
        int8_t c[ROW];
        uint16_t sc[2];
        lmc_kvq_q8_quant(x, ROW, c, sc);
        lmc_kvq_q8_dequant(c, sc, ROW, out);
    } else {
        uint8_t c[ROW];
        uint16_t sm[4];
        lmc_kvq_asym_quant(x, ROW, 4, c, sm);
        lmc_kvq_asym_dequant(c, sm, ROW, 4, out);
    }
}

static void test_layer(enum lmc_kvq_fmt f, int64_t R) {
    const char *name = lmc_kvq_name(f);
    lmc_err err = {0};
    size_t bytes = (size_t)CTX * ROW * 2;
    struct layer_buf b = {malloc(bytes), malloc(bytes)};
    static float K[CTX * ROW], V[CTX * ROW], K2[CTX * ROW], V2[CTX * ROW];
    make_rows(K, CTX, 11);
    make_rows(V, CTX, 12);
    make_rows(K2, CTX, 13);
    make_rows(V2, CTX, 14);
    CHECK(lmc_kvq_layer_init(b.k, b.v, f, CTX, ROW, R, (size_t)CTX * ROW * 2, &err) == LMC_OK);
    /* in uneven pieces */
    int64_t at = 0, pieces[] = {1, 37, 5, 64, 1, 1, 40};
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
        lmc_kvq_layer_store(b.k, b.v, K + at * ROW, V + at * ROW, pieces[i], at);
        at += pieces[i];
    }
    CHECK(lmc_kvq_layer_len(b.k) == at);
    float k[ROW], v[ROW];
    if (f != LMC_KVQ_KIVI2) { /* each row as quantized alone */
        int same = 0;
        for (int64_t t = 0; t < at; t++) {
            float kr[ROW], vr[ROW];
            quant_alone(f, K + t * ROW, kr);
            quant_alone(f, V + t * ROW, vr);
            lmc_kvq_layer_row(b.k, b.v, t, k, v);
            same += !memcmp(k, kr, sizeof k) && !memcmp(v, vr, sizeof v);
        }
        CHECK_MSG(same == at, "%s: %d of %lld rows as quantized alone", name, same, (long long)at);
    } else {
        /* the last R positions at least are f16 copies */
        int exact = 0;
        for (int64_t t = at - R; t < at; t++) {
            lmc_kvq_layer_row(b.k, b.v, t, k, v);
            int ok = 1;
            for (int c = 0; c < ROW; c++)
                ok &= k[c] == lmc_f16_to_f32(lmc_f32_to_f16(K[t * ROW + c])) &&
                      v[c] == lmc_f16_to_f32(lmc_f32_to_f16(V[t * ROW + c]));
            exact += ok;
        }
        CHECK_MSG(exact == R, "kivi2: %d of %lld recent rows exact f16", exact, (long long)R);
        /* older keys within half a per-channel step (range over the block / 3) */
        int bad = 0;
        for (int64_t t = 0; t < at - R - 31; t++) {
            lmc_kvq_layer_row(b.k, b.v, t, k, v);
            int64_t b0 = t / 32 * 32;
            for (int c = 0; c < ROW; c++) {
                float mn = K[b0 * ROW + c], mx = mn;
                for (int64_t u = b0; u < b0 + 32; u++) {
                    mn = fminf(mn, K[u * ROW + c]);
                    mx = fmaxf(mx, K[u * ROW + c]);
                }
                if (!(fabsf(k[c] - K[t * ROW + c]) <= (mx - mn) / 3 * 0.5f * 1.01f + 2e-3f)) bad++;
                float vmn = V[t * ROW + c / 32 * 32], vmx = vmn;
                for (int u = c / 32 * 32; u < LMC_MIN(ROW, c / 32 * 32 + 32); u++) {
                    vmn = fminf(vmn, V[t * ROW + u]);
                    vmx = fmaxf(vmx, V[t * ROW + u]);
                }
                if (!(fabsf(v[c] - V[t * ROW + c]) <= (vmx - vmn) / 3 * 0.5f * 1.01f + 2e-3f)) bad++;
            }
        }
        CHECK_MSG(bad == 0, "kivi2: %d old values beyond half a step", bad);
    }
    { /* the element decoder the CUDA kernel shares equals the row decoder */
        const struct lmc_kvq_hdr *h = b.k;
        struct lmc_kvq_layout L = lmc_kvq_layout_of(h->fmt, h->ctx, h->row, h->residual);
        int same = 0;
        for (int64_t t = 0; t < at; t++) {
            lmc_kvq_layer_row(b.k, b.v, t, k, v);
            int ok = 1;
            for (int c = 0; c < ROW; c++)
                ok &= lmc_kvq_elem(h, &L, b.k, 0, t, c) == k[c] && lmc_kvq_elem(h, &L, b.v, 1, t, c) == v[c];
            same += ok;
        }
        CHECK_MSG(same == at, "%s: lmc_kvq_elem differs from the row decoder at %lld rows", name,
                  (long long)(at - same));
    }
    double e0 = decode_err(&b, K, V, at);
    /* rollback to 101 (inside a quantized KIVI block), then other rows */
    lmc_kvq_layer_store(b.k, b.v, K2 + 101 * ROW, V2 + 101 * ROW, 60, 101);
    CHECK(lmc_kvq_layer_len(b.k) == 161);
    memcpy(K + 101 * ROW, K2 + 101 * ROW, 60 * ROW * sizeof(float));
    memcpy(V + 101 * ROW, V2 + 101 * ROW, 60 * ROW * sizeof(float));
    double e1 = decode_err(&b, K, V, 161);
    printf("  %-5s R=%-3lld max decode error / max|K|: %.4f, after rollback %.4f\n", name, (long long)R, e0, e1);
    double bound = f == LMC_KVQ_Q8 ? 0.01 : f == LMC_KVQ_Q4 ? 0.1 : 0.45;
    CHECK_MSG(e0 < bound && e1 < bound, "%s: decode errors %.4f %.4f (bound %.2f)", name, e0, e1, bound);
    /* attention: compressed rows vs float64 over the decoded rows and vs the originals */
    enum { M = 5 };
    int64_t pos0 = 161 - M;
    float q[M * NH * HD], out[M * NH * HD];
    uint64_t s = 99;
    for (int i = 0; i < M * NH * HD; i++) q[i] = test_rand(&s);
    static float DK[CTX * ROW], DV[CTX * ROW];
    for (int64_t t = 0; t < 161; t++) lmc_kvq_layer_row(b.k, b.v, t, DK + t * ROW, DV + t * ROW);
    for (int w = 0; w < 2; w++) {
        int64_t window = w ? 40 : 0;
        lmc_kvq_attention(NULL, out, q, b.k, b.v, M, pos0, NH, KVH, HD, 0.3f, window);
        double e_dec = 0, e_orig = 0, mx = 0;
        for (int i = 0; i < M; i++)
            for (int h = 0; h < NH; h++) {
                int64_t p = pos0 + i, lo = window ? LMC_MAX(0, p - window + 1) : 0, kvh = h / (NH / KVH);
                for (int src = 0; src < 2; src++) {
                    const float *KK = src ? K : DK, *VV = src ? V : DV;
                    double sc[CTX], m = -1e300, sum = 0, o[HD] = {0};
                    for (int64_t j = lo; j <= p; j++) {
                        double d = 0;
                        for (int c = 0; c < HD; c++)
                            d += (double)q[(i * NH + h) * HD + c] * KK[j * ROW + kvh * HD + c];
                        sc[j] = 0.3 * d;
                        m = fmax(m, sc[j]);
                    }
                    for (int64_t j = lo; j <= p; j++) sum += (sc[j] = exp(sc[j] - m));
                    for (int64_t j = lo; j <= p; j++)
                        for (int c = 0; c < HD; c++) o[c] += sc[j] / sum * VV[j * ROW + kvh * HD + c];
                    for (int c = 0; c < HD; c++) {
                        double d = fabs(out[(i * NH + h) * HD + c] - o[c]);
                        if (src) e_orig = fmax(e_orig, d), mx = fmax(mx, fabs(o[c]));
                        else e_dec = fmax(e_dec, d);
                    }
                }
            }
        printf("  %-5s attention (window %2lld): vs decoded rows %.2e, vs float cache %.4f (relative)\n",
               name, (long long)window, e_dec / mx, e_orig / mx);
        CHECK_MSG(e_dec / mx < 1e-5, "%s: attention vs its decoded rows %.3g", name, e_dec / mx);
        double abound = f == LMC_KVQ_Q8 ? 0.01 : f == LMC_KVQ_Q4 ? 0.15 : 0.4;
        CHECK_MSG(e_orig / mx < abound, "%s: attention error %.4f (bound %.2f)", name, e_orig / mx, abound);
    }
    free(b.k);
    free(b.v);
}

/* Random stores and rollbacks against a ground-truth copy: q8/q4 rows stay
 * bit-equal to quantizing the true row alone; KIVI rows within two steps
 * of the truth (a rolled-back block is quantized again), the newest R
 * stored since the last rollback exact f16. */
static void test_random_ops(enum lmc_kvq_fmt f, int64_t R, uint64_t seed) {
    enum { C = 150 };
    size_t bytes = (size_t)C * ROW * 2;
    struct layer_buf b = {malloc(bytes), malloc(bytes)};
    static float truth_k[C * ROW], truth_v[C * ROW], nk[C * ROW], nv[C * ROW];
    lmc_err err = {0};
    CHECK(lmc_kvq_layer_init(b.k, b.v, f, C, ROW, R, (size_t)C * ROW * 2, &err) == LMC_OK);
    int64_t len = 0, ops = 0, bad = 0, fresh = 0; /* rows >= fresh stored since the last rollback */
    float k[ROW], v[ROW];
    while (ops < 60) {
        int64_t pos = len == 0 ? 0 : (int64_t)(test_rng_next(&seed) % 4 == 0 ? test_rng_next(&seed) % (uint64_t)(len + 1) : (uint64_t)len);
        int64_t n = 1 + (int64_t)(test_rng_next(&seed) % 9);
        if (pos + n > C) {
            pos = 0;
        }
        make_rows(nk, n, test_rng_next(&seed));
        make_rows(nv, n, test_rng_next(&seed));
        lmc_kvq_layer_store(b.k, b.v, nk, nv, n, pos);
        if (pos < len) fresh = pos; /* rows before pos may have come back dequantized */
        memcpy(truth_k + pos * ROW, nk, (size_t)(n * ROW) * sizeof(float));
        memcpy(truth_v + pos * ROW, nv, (size_t)(n * ROW) * sizeof(float));
        len = pos + n;
        ops++;
        CHECK(lmc_kvq_layer_len(b.k) == len);
        for (int64_t t = 0; t < len; t++) {
            lmc_kvq_layer_row(b.k, b.v, t, k, v);
            if (f != LMC_KVQ_KIVI2) { /* bit-equal to the true row quantized alone */
                float qk[ROW], qv[ROW];
                quant_alone(f, truth_k + t * ROW, qk);
                quant_alone(f, truth_v + t * ROW, qv);
                bad += memcmp(k, qk, sizeof k) != 0 || memcmp(v, qv, sizeof v) != 0;
                continue;
            }
            for (int c = 0; c < ROW; c++) {
                float tk = truth_k[t * ROW + c], tv = truth_v[t * ROW + c];
                /* |values| <= 8: a block's range <= 16, a 2-bit step <= 16/3;
                 * quantized twice (rollback): within one step */
                double lim = 16.0 / 3 * 1.01;
                if (t >= len - R && t >= fresh)
                    lim = 1e-3 * fmax(1.0, fabs(tk)) + 1e-3 * fmax(1.0, fabs(tv));
                if (!(fabs(k[c] - tk) <= lim && fabs(v[c] - tv) <= lim)) {
                    if (!bad && getenv("KVQ_DEBUG"))
                        fprintf(stderr, "op %lld pos %lld n %lld len %lld t %lld c %d: k %g want %g, v %g want %g\n",
                                (long long)ops, (long long)pos, (long long)n, (long long)len, (long long)t, c,
                                k[c], tk, v[c], tv);
                    bad++;
                }
            }
        }
    }
    CHECK_MSG(bad == 0, "%s R=%lld: %lld values off after random stores and rollbacks", lmc_kvq_name(f),
              (long long)R, (long long)bad);
    free(b.k);
    free(b.v);
}

static void test_model(const char *dir, double bound) {
    struct lmc_model m;
    struct lmc_backend cpu, kq;
    lmc_err err = {0};
    if (!fixture_open_cpu(&m, &cpu, NULL, dir, NULL, 1)) return;
    if (lmc_kvq_backend(&kq, &cpu, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        fixture_close_cpu(&m, &cpu, NULL);
        return;
    }
    int64_t V = m.cfg.vocab_size, n = 150, ctx = 192;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    uint64_t s = 5;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&s) % (uint64_t)V);
    float *ref = malloc((size_t)(n * V) * sizeof *ref), *got = malloc((size_t)(n * V) * sizeof *got);
    struct lmc_kv kv;
    struct lmc_acts a;
    CHECK(lmc_kv_init(&kv, &m, &cpu, ctx, &err) == LMC_OK);
    CHECK(lmc_acts_init(&a, &m, &cpu, 64, 64, &err) == LMC_OK);
    /* in two pieces, then one token at a time (prefill + decode) */
    CHECK(lmc_model_forward(&m, &cpu, &a, &kv, ids, 100, 0, ref, true, &err) == LMC_OK);
    for (int64_t i = 100; i < n; i++)
        CHECK(lmc_model_forward(&m, &cpu, &a, &kv, ids + i, 1, i, ref + i * V, true, &err) == LMC_OK);
    lmc_kv_free(&kv);
    lmc_acts_free(&a);
    for (int f = LMC_KVQ_Q8; f <= LMC_KVQ_KIVI2; f++) {
        CHECK(lmc_kv_init(&kv, &m, &kq, ctx, &err) == LMC_OK);
        CHECK(lmc_acts_init(&a, &m, &kq, 64, 64, &err) == LMC_OK);
        CHECK(lmc_kvq_kv_format(&kv, (enum lmc_kvq_fmt)f, 32, &err) == LMC_OK);
        CHECK(lmc_model_forward(&m, &kq, &a, &kv, ids, 100, 0, got, true, &err) == LMC_OK);
        for (int64_t i = 100; i < n; i++)
            CHECK(lmc_model_forward(&m, &kq, &a, &kv, ids + i, 1, i, got + i * V, true, &err) == LMC_OK);
        double e = 0, mx = 0;
        for (int64_t i = 0; i < n * V; i++) {
            e = fmax(e, fabs(got[i] - ref[i]));
            mx = fmax(mx, fabs(ref[i]));
        }
        printf("  %-26s %-5s logits max error / max|logit|: %.4f\n", dir, lmc_kvq_name((enum lmc_kvq_fmt)f), e / mx);
        if (f == LMC_KVQ_Q8) CHECK_MSG(e / mx < bound, "%s q8 logits error %.4f", dir, e / mx);
        else CHECK(e / mx < 0.5); /* finite and near: the per-format numbers are printed */
        size_t bf16_layer = kv.layer_bytes;
        lmc_kv_free(&kv);
        /* the cache sized by its format (lmc_kvq_kv_init): the same logits bit for bit, fewer bytes */
        float *got2 = malloc((size_t)(n * V) * sizeof *got2);
        CHECK(lmc_kvq_kv_init(&kv, &m, &kq, ctx, (enum lmc_kvq_fmt)f, 32, &err) == LMC_OK);
        CHECK(lmc_model_forward(&m, &kq, &a, &kv, ids, 100, 0, got2, true, &err) == LMC_OK);
        for (int64_t i = 100; i < n; i++)
            CHECK(lmc_model_forward(&m, &kq, &a, &kv, ids + i, 1, i, got2 + i * V, true, &err) == LMC_OK);
        double ratio = (double)kv.layer_bytes / (double)bf16_layer;
        CHECK_MSG(memcmp(got, got2, (size_t)(n * V) * sizeof *got) == 0, "%s %s: sized cache's logits differ", dir,
                  lmc_kvq_name((enum lmc_kvq_fmt)f));
        CHECK_MSG(f == LMC_KVQ_Q8 ? ratio < 0.56 : f == LMC_KVQ_Q4 ? ratio < 0.34 : ratio < 1, "%s %s: %.3f of bf16's bytes",
                  dir, lmc_kvq_name((enum lmc_kvq_fmt)f), ratio);
        printf("  %-26s %-5s sized by format: %zu bytes a layer, %.3f of a bf16 cache's\n", dir,
               lmc_kvq_name((enum lmc_kvq_fmt)f), kv.layer_bytes, ratio);
        free(got2);
        lmc_kv_free(&kv);
        lmc_acts_free(&a);
    }
    CHECK(lmc_kvq_kv_init(&kv, &m, &kq, ctx, LMC_KVQ_KIVI2, 5000, &err) == LMC_ERR_ARG && !kv.k);
    CHECK(lmc_kvq_kv_init(&kv, &m, &kq, ctx, LMC_KVQ_F16, 0, &err) == LMC_ERR_ARG && !kv.k); /* not this backend's type */
    /* errors */
    CHECK(lmc_kv_init(&kv, &m, &cpu, ctx, &err) == LMC_OK);
    CHECK(lmc_kvq_kv_format(&kv, LMC_KVQ_Q8, 0, &err) == LMC_ERR_ARG);
    lmc_kv_free(&kv);
    CHECK(lmc_kv_init(&kv, &m, &kq, 8, &err) == LMC_OK);
    CHECK(lmc_kvq_kv_format(&kv, LMC_KVQ_KIVI2, 128, &err) == LMC_ERR_ARG && strstr(err.msg, "kivi2"));
    CHECK(lmc_kvq_kv_format(&kv, LMC_KVQ_KIVI2, -1, &err) == LMC_ERR_ARG);
    CHECK(lmc_kvq_kv_format(&kv, LMC_KVQ_NONE, 0, &err) == LMC_ERR_ARG);
    CHECK(lmc_kvq_kv_format(&kv, LMC_KVQ_F16, 0, &err) == LMC_ERR_ARG); /* f16: the 2-byte cache's backend (lmc_kvq_backend_fmt), not this one */
    lmc_kv_free(&kv);
    free(ids);
    free(ref);
    free(got);
    fixture_close_cpu(&m, &cpu, NULL);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    test_quantizers();
    test_layer(LMC_KVQ_Q8, 0);
    test_layer(LMC_KVQ_Q4, 0);
    test_layer(LMC_KVQ_KIVI2, 32);
    test_layer(LMC_KVQ_KIVI2, 5);
    for (uint64_t sd = 1; sd <= 3; sd++) {
        test_random_ops(LMC_KVQ_Q8, 0, sd);
        test_random_ops(LMC_KVQ_Q4, 0, sd);
        test_random_ops(LMC_KVQ_KIVI2, 32, sd);
        test_random_ops(LMC_KVQ_KIVI2, 3, sd);
    }
    test_model("tests/fixtures/llama-tiny", 0.02);
    test_model("tests/fixtures/gpt2-tiny", 0.02);
    test_model("models/kjv-llama", 0.02);
    return test_finish("test_kvquant");
}
