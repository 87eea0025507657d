/* test_quant_formats.c — quantized weight formats (src/quant): packing
 * round trips bit-exactly for every GGUF block type (random bytes ->
 * integers -> bytes), hand-built blocks decode to the values the formats'
 * layouts define, each quantizer's error stays within its step, GPTQ
 * (2/3/4/8 bits, v1 and v2, act-order g_idx) and AWQ pack/unpack round
 * trips, NF4 with double quantization and ternary packing. */
#include "core/core.h"
#include "core/dtype.h"
#include "quant/quant.h"
#include "test.h"

#include <stdlib.h>

static const int qtypes[] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0, LMC_GGML_Q4_1, LMC_GGML_Q5_0,
                             LMC_GGML_Q5_1, LMC_GGML_Q4_K, LMC_GGML_Q5_K, LMC_GGML_Q6_K};

static void test_block_roundtrip(void) {
    uint64_t rng = 11;
    for (size_t t = 0; t < sizeof qtypes / sizeof *qtypes; t++) {
        int64_t be, bb;
        CHECK(lmc_ggml_type_info(qtypes[t], &be, &bb));
        uint8_t src[256], dst[256];
        int bad = 0;
        for (int it = 0; it < 500; it++) {
            for (int64_t i = 0; i < bb; i++) src[i] = (uint8_t)test_rng_next(&rng);
            struct lmc_qblock b;
            lmc_ggml_unpack_block(qtypes[t], src, &b);
            memset(dst, 0xA5, sizeof dst);
            lmc_ggml_pack_block(qtypes[t], &b, dst);
            bad += memcmp(src, dst, (size_t)bb) != 0;
        }
        CHECK_MSG(bad == 0, "%s: %d of 500 blocks differ after unpack+pack", lmc_ggml_type_name(qtypes[t]), bad);
    }
}

/* Hand-built blocks against the layouts of ggml's block_q* structs. */
static void test_known_blocks(void) {
    float y[256];
    uint8_t b[256];
    memset(b, 0, sizeof b);
    /* Q4_0: d = 1 (fp16 0x3c00), qs[0] = 0x1F: element 0 = 15-8, element 16 = 1-8 */
    b[0] = 0x00, b[1] = 0x3c, b[2] = 0x1F;
    for (int j = 1; j < 16; j++) b[2 + j] = 0x88;
    lmc_ggml_dequantize_row(LMC_GGML_Q4_0, b, y, 32);
    CHECK(y[0] == 7 && y[16] == -7 && y[1] == 0 && y[31] == 0);
    /* Q5_0: d = 2, qh bit 0 and bit 16 set, qs[0] = 0x00 -> elements 0, 16 = 16-16 = 0;
     * qh bit 3 set with qs[3] = 0x0F -> element 3 = 31-16 = 15 */
    memset(b, 0, sizeof b);
    b[1] = 0x40; /* 2.0 */
    uint32_t qh = 1u | 1u << 16 | 1u << 3;
    memcpy(b + 2, &qh, 4);
    b[6 + 3] = 0x0F;
    lmc_ggml_dequantize_row(LMC_GGML_Q5_0, b, y, 32);
    CHECK(y[0] == 0 && y[16] == 0 && y[3] == 30 && y[1] == -32 && y[19] == -32);
    /* Q8_0 */
    memset(b, 0, sizeof b);
    b[1] = 0x38; /* 0.5 */
    b[2] = (uint8_t)-128, b[33] = 127;
    lmc_ggml_dequantize_row(LMC_GGML_Q8_0, b, y, 32);
    CHECK(y[0] == -64 && y[31] == 63.5f && y[5] == 0);
    /* Q4_K: d = 1, dmin = 0.5; sub-block 5's scale lives in byte 9's low nibble
     * plus byte 1's top 2 bits; its min in byte 9's high nibble plus byte 5's */
    memset(b, 0, sizeof b);
    b[1] = 0x3c, b[3] = 0x38;
    b[4 + 9] = 0x3 | 0x2 << 4;          /* sc5 low 3, mn5 low 2 */
    b[4 + 1] = 1 << 6;                  /* sc5 high bits 1 -> 16+3 = 19 */
    b[4 + 5] = 2 << 6;                  /* mn5 high bits 2 -> 32+2 = 34 */
    /* sub-block 5 = chunk 2, high nibbles: qs[2*32 + l] >> 4 */
    b[16 + 64 + 7] = 0xB0;              /* element 5*32+7 has q = 11 */
    lmc_ggml_dequantize_row(LMC_GGML_Q4_K, b, y, 256);
    CHECK_MSG(y[5 * 32 + 7] == 19.0f * 11 - 0.5f * 34 && y[5 * 32] == -17.0f && y[0] == 0,
              "q4_k: %g %g", y[5 * 32 + 7], y[5 * 32]);
    /* Q6_K: element 200 = half 1, l = 8, quarter 2 -> ql[64+8] high nibble,
     * qh[32+8] bits 4..5, scale sc[200/16 = 12] */
    memset(b, 0, sizeof b);
    b[64 + 8] = 0x50;       /* low 4 bits = 5 */
    b[128 + 32 + 8] = 0x20; /* high 2 bits = 2 -> q = 37 */
    b[192 + 12] = (uint8_t)-3;
    b[209] = 0x3c;
    lmc_ggml_dequantize_row(LMC_GGML_Q6_K, b, y, 256);
    CHECK_MSG(y[200] == -3.0f * (37 - 32) && y[0] == 0, "q6_k: %g", y[200]);
}

static void test_quantizers(void) {
    uint64_t rng = 5;
    int64_t n = 1024;
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    uint8_t *q = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) x[i] = test_rand(&rng) * (1.0f + (float)(i % 97) / 20.0f);
    /* steps: max error per element relative to the block's max |x| (Q4_0's
     * d = max/-8 leaves -max one whole step of 1/8 outside its range) */
    const struct { int type; double tol; } c[] = {
        {LMC_GGML_Q8_0, 0.5 / 127 + 1e-3}, {LMC_GGML_Q4_0, 1.0 / 8 + 1e-3}, {LMC_GGML_Q4_1, 1.0 / 15 + 1e-3},
        {LMC_GGML_Q5_0, 1.0 / 16 + 1e-3}, {LMC_GGML_Q5_1, 1.0 / 31 + 1e-3}, {LMC_GGML_Q4_K, 2.0 / 15 + 0.05},
        {LMC_GGML_Q5_K, 2.0 / 31 + 0.05}, {LMC_GGML_Q6_K, 1.0 / 31 + 0.02}, {LMC_GGML_F16, 1e-3},
        {LMC_GGML_BF16, 8e-3},
    };
    for (size_t t = 0; t < sizeof c / sizeof *c; t++) {
        int64_t be;
        lmc_ggml_type_info(c[t].type, &be, NULL);
        if (be == 1) be = 32;
        CHECK(lmc_ggml_quantize_row(c[t].type, x, q, n));
        lmc_ggml_dequantize_row(c[t].type, q, y, n);
        double worst = 0;
        for (int64_t b = 0; b < n / be; b++) {
            float amax = 0;
            for (int64_t i = 0; i < be; i++) amax = fmaxf(amax, fabsf(x[b * be + i]));
            for (int64_t i = 0; i < be; i++) worst = fmax(worst, fabs(y[b * be + i] - x[b * be + i]) / amax);
        }
        CHECK_MSG(worst <= c[t].tol && worst > 0, "%s: worst relative error %g (tolerance %g)",
                  lmc_ggml_type_name(c[t].type), worst, c[t].tol);
        /* quantizing the dequantized row again reproduces the same bytes
         * for the scale-from-max formats (a fixed point of the quantizer) */
        if (c[t].type == LMC_GGML_Q8_0 || c[t].type == LMC_GGML_F16) {
            uint8_t *q2 = malloc((size_t)n * 2);
            int64_t rb;
            lmc_ggml_row_bytes(c[t].type, n, &rb);
            lmc_ggml_quantize_row(c[t].type, y, q2, n);
            CHECK_MSG(memcmp(q, q2, (size_t)rb) == 0, "%s: requantize differs", lmc_ggml_type_name(c[t].type));
            free(q2);
        }
    }
    int64_t rb = 0;
    CHECK(lmc_ggml_row_bytes(LMC_GGML_Q4_K, 512, &rb) && rb == 288);
    CHECK(!lmc_ggml_row_bytes(LMC_GGML_Q4_K, 100, &rb));
    CHECK(!lmc_ggml_row_bytes(99, 32, &rb));
    CHECK(lmc_ggml_type_parse("q4_k") == LMC_GGML_Q4_K && lmc_ggml_type_parse("nope") == -1);
    free(x);
    free(y);
    free(q);
}

static void rand_groups(struct lmc_qgroups *g, uint64_t *rng, bool shuffle_gidx, bool v1_ok) {
    int32_t maxq = (1 << g->bits) - 1;
    for (int64_t i = 0; i < g->n * g->k; i++) g->q[i] = (uint8_t)(test_rng_next(rng) % (uint64_t)(maxq + 1));
    for (int64_t i = 0; i < g->n_groups * g->n; i++) {
        g->scale[i] = lmc_f16_to_f32(lmc_f32_to_f16(0.01f + 0.1f * (float)(test_rng_next(rng) % 100) / 100.0f));
        g->zero[i] = (int32_t)(test_rng_next(rng) % (uint64_t)(maxq + 1)) + (v1_ok ? 0 : 0);
        if (v1_ok && g->zero[i] == 0) g->zero[i] = 1;
    }
    if (shuffle_gidx) /* act-order: any group of each column */
        for (int64_t i = 0; i < g->k; i++) g->g_idx[i] = (int32_t)(test_rng_next(rng) % (uint64_t)g->n_groups);
}

static bool groups_equal(const struct lmc_qgroups *a, const struct lmc_qgroups *b) {
    if (a->n != b->n || a->k != b->k || a->n_groups != b->n_groups) return false;
    return !memcmp(a->q, b->q, (size_t)(a->n * a->k)) && !memcmp(a->zero, b->zero, (size_t)(a->n * a->n_groups) * 4) &&
           !memcmp(a->scale, b->scale, (size_t)(a->n * a->n_groups) * 4) && !memcmp(a->g_idx, b->g_idx, (size_t)a->k * 4);
}

static void test_gptq_awq(void) {
    uint64_t rng = 21;
    lmc_err err = {0};
    const int bits[] = {2, 3, 4, 8};
    for (int bi = 0; bi < 4; bi++)
        for (int v2 = 0; v2 < 2; v2++)
            for (int act = 0; act < 2; act++) {
                struct lmc_qgroups g, h;
                CHECK(lmc_qgroups_alloc(&g, 64, 96, bits[bi], 32, &err) == LMC_OK);
                rand_groups(&g, &rng, act, !v2);
                struct lmc_gptq_tensors t, t2;
                CHECK_MSG(lmc_gptq_pack(&g, v2, &t, &err) == LMC_OK, "%s", err.msg);
                CHECK(lmc_gptq_unpack(&t, "layer", &h, &err) == LMC_OK);
                CHECK_MSG(groups_equal(&g, &h), "gptq %d bits v2=%d act=%d: unpack(pack) differs", bits[bi], v2, act);
                CHECK(lmc_gptq_pack(&h, v2, &t2, &err) == LMC_OK);
                CHECK(!memcmp(t.qweight, t2.qweight, (size_t)(96 / 32 * bits[bi] * 64) * 4));
                if (bits[bi] == 3 && !v2 && !act) {
                    /* 3 bits: code 10 of column 0 straddles words 0 and 1 (bits 30..32) */
                    uint32_t w0 = (uint32_t)t.qweight[0], w1 = (uint32_t)t.qweight[64];
                    CHECK(((w0 >> 30) | ((w1 & 1) << 2)) == g.q[10]);
                    CHECK(((w1 >> 1) & 7) == g.q[11]);
                    /* v1 stores zero-1: output 0's zero in the low 3 bits */
                    CHECK(((uint32_t)t.qzeros[0] & 7) == (uint32_t)g.zero[0] - 1);
                }
                lmc_gptq_tensors_free(&t);
                lmc_gptq_tensors_free(&t2);
                lmc_qgroups_free(&h);
                lmc_qgroups_free(&g);
            }
    /* v1 cannot hold a zero of 0: a clear error, not a wrapped value */
    struct lmc_qgroups g;
    struct lmc_gptq_tensors t;
    lmc_qgroups_alloc(&g, 32, 32, 4, 32, &err);
    rand_groups(&g, &rng, false, true);
    g.zero[3] = 0;
    CHECK(lmc_gptq_pack(&g, false, &t, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "output 3"));
    /* a g_idx outside the groups is named */
    CHECK(lmc_gptq_pack(&g, true, &t, &err) == LMC_OK);
    t.g_idx[7] = 5;
    struct lmc_qgroups h;
    CHECK(lmc_gptq_unpack(&t, "model.layers.0.q_proj", &h, &err) == LMC_ERR_FORMAT &&
          strstr(err.msg, "q_proj.g_idx[7]"));
    lmc_gptq_tensors_free(&t);
    lmc_qgroups_free(&g);

    /* AWQ: order {0,2,4,6,1,3,5,7} within each word */
    lmc_qgroups_alloc(&g, 40, 72, 4, 24, &err);
    rand_groups(&g, &rng, false, false);
    struct lmc_awq_tensors a;
    CHECK(lmc_awq_pack(&g, &a, &err) == LMC_OK);
    uint32_t w = (uint32_t)a.qweight[0];
    CHECK((w & 15) == g.q[0] && ((w >> 4) & 15) == g.q[2 * 72] && ((w >> 16) & 15) == g.q[1 * 72]);
    CHECK(lmc_awq_unpack(&a, 24, "awq", &h, &err) == LMC_OK);
    CHECK(groups_equal(&g, &h));
    lmc_qgroups_free(&h);
    CHECK(lmc_awq_unpack(&a, 48, "awq.layer", &h, &err) == LMC_ERR_FORMAT && strstr(err.msg, "awq.layer"));
    lmc_awq_tensors_free(&a);
    lmc_qgroups_free(&g);
}

static void test_rtn(void) {
    uint64_t rng = 3;
    lmc_err err = {0};
    int64_t n = 7, k = 100;
    float *w = malloc((size_t)(n * k) * 4), *y = malloc((size_t)(n * k) * 4);
    for (int64_t i = 0; i < n * k; i++) w[i] = test_rand(&rng);
    for (int sym = 0; sym < 2; sym++)
        for (int bits = 4; bits <= 8; bits += 4)
            for (int gs = 32; gs <= 128; gs += 96) { /* 32: groups with a 4-wide tail; 128 > k: per channel */
                struct lmc_qgroups g;
                CHECK(lmc_quant_rtn(w, n, k, bits, gs, sym, &g, &err) == LMC_OK);
                lmc_qgroups_dequantize(&g, y);
                double worst = 0;
                for (int64_t r = 0; r < n; r++)
                    for (int64_t i = 0; i < k; i++) {
                        float sc = g.scale[g.g_idx[i] * n + r];
                        worst = fmax(worst, fabs(y[r * k + i] - w[r * k + i]) / sc);
                    }
                CHECK_MSG(worst <= 0.5 + 1e-4, "rtn sym=%d bits=%d g=%d: error %g steps", sym, bits, gs, worst);
                CHECK(g.n_groups == (gs >= k ? 1 : 4));
                /* the clip search: codes in range, each (row, group) no worse than the plain rule's
                 * squared error, and some strictly better (a few outliers clipped for a finer step) */
                struct lmc_qgroups h;
                CHECK(lmc_quant_rtn_search(w, n, k, bits, gs, sym, &h, &err) == LMC_OK);
                CHECK(h.n_groups == g.n_groups);
                float *yh = malloc((size_t)(n * k) * 4);
                lmc_qgroups_dequantize(&h, yh);
                int worse = 0, better = 0, range = 0;
                for (int64_t r = 0; r < n; r++)
                    for (int64_t gi = 0; gi < g.n_groups; gi++) {
                        double e0 = 0, e1 = 0;
                        for (int64_t i = 0; i < k; i++) {
                            if (g.g_idx[i] != gi) continue;
                            e0 += (double)(y[r * k + i] - w[r * k + i]) * (y[r * k + i] - w[r * k + i]);
                            e1 += (double)(yh[r * k + i] - w[r * k + i]) * (yh[r * k + i] - w[r * k + i]);
                            range += h.q[r * k + i] > (1 << bits) - 1;
                        }
                        worse += e1 > e0 * (1 + 1e-6);
                        better += e1 < e0 * (1 - 1e-3);
                    }
                CHECK_MSG(!worse && !range, "rtn search sym=%d bits=%d g=%d: %d groups worse, %d codes out of range",
                          sym, bits, gs, worse, range);
                if (bits == 4) CHECK_MSG(better > 0, "rtn search sym=%d g=%d: no group improved", sym, gs);
                free(yh);
                lmc_qgroups_free(&h);
                lmc_qgroups_free(&g);
            }
    free(w);
    free(y);
}

static void test_nf4_ternary(void) {
    uint64_t rng = 9;
    lmc_err err = {0};
    int64_t n = 64 * 300 + 10; /* 301 blocks: a second nested block and a short tail */
    float *w = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) w[i] = test_rand(&rng) * (1 + (float)((i / 64) % 5));
    struct lmc_nf4 q;
    CHECK(lmc_nf4_quantize(w, n, &q, &err) == LMC_OK);
    CHECK(q.n_blocks == 301 && q.n_blocks2 == 2);
    lmc_nf4_dequantize(&q, y);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        float am = 0;
        for (int64_t j = i / 64 * 64; j < LMC_MIN(n, i / 64 * 64 + 64); j++) am = fmaxf(am, fabsf(w[j]));
        double am_err = fabs(lmc_nf4_absmax(&q, i / 64) - am);
        worst = fmax(worst, (fabs(y[i] - w[i]) - am_err) / am);
    }
    /* the widest NF4 gap is -1 .. -0.6962: half of it, once the 8-bit
     * absmax's own error is taken out */
    CHECK_MSG(worst < 0.1520 && worst > 0.1, "nf4 worst %g", worst);
    float map[256];
    lmc_dynamic_map_signed(map);
    CHECK(map[0] < -0.99f && map[255] == 1.0f);
    int zeros = 0;
    for (int i = 0; i < 256; i++) zeros += map[i] == 0;
    CHECK(zeros == 1);
    for (int i = 1; i < 256; i++) CHECK(map[i] > map[i - 1]);
    /* first element in the high nibble */
    CHECK((q.packed[0] >> 4) < 16 && lmc_nf4_code[q.packed[0] >> 4] * lmc_nf4_absmax(&q, 0) == y[0]);
    lmc_nf4_free(&q);

    int64_t rows = 12, cols = 9;
    int8_t *t = malloc((size_t)(rows * cols)), *t2 = malloc((size_t)(rows * cols));
    float s = lmc_ternary_quantize(w, rows * cols, t);
    CHECK(s > 0);
    bool in = true;
    for (int64_t i = 0; i < rows * cols; i++) in = in && t[i] >= -1 && t[i] <= 1;
    CHECK(in);
    uint8_t *p;
    CHECK(lmc_ternary_pack(t, rows, cols, &p, &err) == LMC_OK);
    lmc_ternary_unpack(p, rows, cols, t2);
    CHECK(!memcmp(t, t2, (size_t)(rows * cols)));
    CHECK(((p[2 * cols + 5] >> 2) & 3) == (uint8_t)(t[(3 + 2) * cols + 5] + 1)); /* row j*R+r = 1*3+2 */
    free(p);
    CHECK(lmc_ternary_pack(t, 10, cols, &p, &err) == LMC_ERR_UNSUPPORTED);
    free(t);
    free(t2);
    free(w);
    free(y);
}

int main(void) {
    test_block_roundtrip();
    test_known_blocks();
    test_quantizers();
    test_gptq_awq();
    test_rtn();
    test_nf4_ternary();
    return test_finish("test_quant_formats");
}
