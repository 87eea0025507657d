/* test_tp_quant.c — quantized weights cut for tensor-parallel ranks
 * (dist/tp_quant.h) without dequantizing: GGUF Q8_0, Q4_0, Q4_K, integer
 * groups (rtn 4-bit g64, 8-bit g32), Q4_K and Q4_0 repacked (Q4_KR, Q4_0R) and NF4 (per row, and over the
 * flattened weight as QLoRA quantizes it) on a (37, 512) weight. A row
 * cut dequantizes to the full weight's rows bit for bit, and each column
 * cut of T = 2 and 4 ranks to its columns bit for bit (Q4_K at T = 4, 128
 * columns of 256-blocks, refused); the row-parallel
 * product (the ranks' qmatmul on their input columns, summed) equals the
 * full qmatmul within float32 summation (2e-6 of the largest output:
 * the activation blocks are the same, only the order of addition
 * changes), and the column-parallel products are the full product's
 * columns bit for bit. Cuts inside a block or a group, act-order weights
 * and NF4 over the flattened weight are refused. */
#include "core/core.h"
#include "dist/tp_quant.h"
#include "quant/quant.h"
#include "test.h"

#include <stdlib.h>

#define N 37
#define K 512
#define M 3

static void qmm(const struct lmc_qctx *c, const struct lmc_qweight *w, float *y, const float *x, int64_t m) {
    void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(w, m) + 63) / 64 * 64 + 64);
    lmc_qmatmul(c, w, y, x, m, scratch, NULL);
    free(scratch);
}

static void check_cuts(const struct lmc_qctx *c, const struct lmc_qweight *w, const char *what, int64_t blk,
                       uint64_t *rng) {
    lmc_err err = {0};
    float *full = malloc(sizeof(float) * N * K), *part = malloc(sizeof(float) * N * K);
    float *x = malloc(sizeof(float) * M * K), *xs = malloc(sizeof(float) * M * K);
    float *y = malloc(sizeof(float) * M * N), *ys = malloc(sizeof(float) * M * N), *acc = malloc(sizeof(float) * M * N);
    lmc_qweight_dequant_rows(w, 0, N, full);
    for (int i = 0; i < M * K; i++) x[i] = test_rand(rng);
    qmm(c, w, y, x, M);
    /* rows [5, 18): the column-parallel shard */
    struct lmc_qweight d;
    CHECK_MSG(lmc_tp_qweight_cut(&d, w, false, 5, 13, what, &err) == LMC_OK, "%s rows: %s", what, err.msg);
    lmc_qweight_dequant_rows(&d, 0, 13, part);
    CHECK_MSG(!memcmp(part, full + 5 * K, sizeof(float) * 13 * K), "%s: row cut dequantizes to other values", what);
    qmm(c, &d, ys, x, M);
    bool same = true;
    for (int i = 0; i < M; i++) same &= !memcmp(ys + i * 13, y + i * N + 5, sizeof(float) * 13);
    CHECK_MSG(same, "%s: the row cut's product differs from the full product's columns", what);
    lmc_qweight_free(&d);
    /* columns: T = 2 and 4 ranks, summed as the row-parallel all-reduce does */
    for (int T = 2; T <= 4; T += 2) {
        int64_t nc = K / T;
        if (nc % blk) { /* Q4_K at T 4: 128 columns are half a 256-block */
            CHECK_MSG(lmc_tp_qweight_cut(&d, w, true, 0, nc, what, &err) == LMC_ERR_UNSUPPORTED &&
                          strstr(err.msg, "not whole blocks"), "%s T %d: %s", what, T, err.msg);
            continue;
        }
        memset(acc, 0, sizeof(float) * M * N);
        for (int r = 0; r < T; r++) {
            CHECK_MSG(lmc_tp_qweight_cut(&d, w, true, r * nc, nc, what, &err) == LMC_OK, "%s cols T %d: %s", what, T,
                      err.msg);
            if (!d.data) continue;
            lmc_qweight_dequant_rows(&d, 0, N, part);
            bool eq = true;
            for (int i = 0; i < N; i++) eq &= !memcmp(part + i * nc, full + i * K + r * nc, sizeof(float) * (size_t)nc);
            CHECK_MSG(eq, "%s: column cut %d of %d dequantizes to other values", what, r, T);
            for (int i = 0; i < M; i++) memcpy(xs + i * nc, x + i * K + r * nc, sizeof(float) * (size_t)nc);
            qmm(c, &d, ys, xs, M);
            for (int i = 0; i < M * N; i++) acc[i] += ys[i];
            lmc_qweight_free(&d);
        }
        double diff = 0, big = 0;
        for (int i = 0; i < M * N; i++) {
            diff = fmax(diff, fabs((double)acc[i] - y[i]));
            big = fmax(big, fabs((double)y[i]));
        }
        CHECK_MSG(diff <= 2e-6 * big, "%s T %d: row-parallel sum off by %.3g of %.3g", what, T, diff, big);
        printf("%s: T %d row-parallel sum within %.2e of the largest output\n", what, T, diff / big);
    }
    /* a cut inside a block */
    CHECK_MSG(lmc_tp_qweight_cut(&d, w, true, 0, 16, what, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, what),
              "%s: a 16-column cut: %s", what, err.msg);
    free(full), free(part), free(x), free(xs), free(y), free(ys), free(acc);
}

int main(void) {
    lmc_err err = {0};
    uint64_t rng = 77;
    struct lmc_qctx c;
    lmc_qctx_init(&c, LMC_QISA_AVX512VNNI);
    float *w = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++) w[i] = test_rand(&rng) * (1.0f + (float)(i % 7));
    /* the fourth: Q4_K repacked as the CPU loader repacks it (Q4_KR, 148-byte super-blocks) */
    static const int types[] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0, LMC_GGML_Q4_K, LMC_GGML_Q4_K, LMC_GGML_Q4_0};
    static const char *names[] = {"Q8_0", "Q4_0", "Q4_K", "Q4_KR", "Q4_0R"};
    for (int t = 0; t < 5; t++) {
        int64_t rb;
        CHECK(lmc_ggml_row_bytes(types[t], K, &rb));
        uint8_t *data = malloc((size_t)(rb * N));
        for (int r = 0; r < N; r++) CHECK(lmc_ggml_quantize_row(types[t], w + r * K, data + r * rb, K));
        struct lmc_qweight q;
        if (t == 3) {
            uint8_t *rp = malloc((size_t)(N * (K / 256) * LMC_Q4KR_BYTES));
            lmc_q4kr_pack_rows(data, rp, N, K);
            free(data);
            data = rp;
            CHECK(lmc_qweight_init_q4kr(&q, data, N, K, &err) == LMC_OK);
        } else if (t == 4) { /* Q4_0R: the same bytes, blocks in pairs (a cut of an odd number of blocks: T 4) */
            uint8_t *rp = malloc((size_t)(rb * N));
            lmc_q40r_pack_rows(data, rp, N, K);
            free(data);
            data = rp;
            CHECK(lmc_qweight_init_q40r(&q, data, N, K, &err) == LMC_OK);
        } else {
            CHECK(lmc_qweight_init_ggml(&q, types[t], data, N, K, &err) == LMC_OK);
        }
        check_cuts(&c, &q, names[t], types[t] == LMC_GGML_Q4_K ? 256 : 32, &rng);
        if (t == 4) { /* columns [32, 96): a cut that starts inside a pair, taken in the file's layout */
            struct lmc_qweight d;
            float *full = malloc(sizeof(float) * N * K), *part = malloc(sizeof(float) * N * 64);
            lmc_qweight_dequant_rows(&q, 0, N, full);
            CHECK(lmc_tp_qweight_cut(&d, &q, true, 32, 64, "Q4_0R", &err) == LMC_OK);
            CHECK(d.kernel == LMC_QK_Q4_0R && d.k == 64);
            lmc_qweight_dequant_rows(&d, 0, N, part);
            bool eq = true;
            for (int i = 0; i < N; i++) eq &= !memcmp(part + i * 64, full + i * K + 32, sizeof(float) * 64);
            CHECK_MSG(eq, "Q4_0R: the cut of columns [32, 96) dequantizes to other values");
            lmc_qweight_free(&d);
            free(full), free(part);
        }
        lmc_qweight_free(&q);
        free(data);
    }
    static const int bits[] = {4, 8};
    static const int64_t gs[] = {64, 32};
    for (int b = 0; b < 2; b++) {
        struct lmc_qgroups g;
        struct lmc_qweight q;
        CHECK(lmc_quant_rtn(w, N, K, bits[b], gs[b], false, &g, &err) == LMC_OK);
        CHECK(lmc_qweight_init_groups(&q, &g, &err) == LMC_OK);
        check_cuts(&c, &q, bits[b] == 4 ? "rtn int4 g64" : "rtn int8 g32", gs[b], &rng);
        if (gs[b] == 64) { /* 32 columns: whole blocks, half a group */
            struct lmc_qweight d;
            CHECK_MSG(lmc_tp_qweight_cut(&d, &q, true, 0, 32, "g64", &err) == LMC_ERR_UNSUPPORTED &&
                          strstr(err.msg, "quantization groups"), "half a group: %s", err.msg);
        }
        lmc_qweight_free(&q);
        /* act-order: a permuted g_idx */
        for (int64_t i = 0; i < K; i++) g.g_idx[i] = (int32_t)((i * 7) % g.n_groups);
        CHECK(lmc_qweight_init_groups(&q, &g, &err) == LMC_OK);
        struct lmc_qweight d;
        CHECK(q.perm != NULL);
        CHECK_MSG(lmc_tp_qweight_cut(&d, &q, true, 0, K / 2, "perm", &err) == LMC_ERR_UNSUPPORTED &&
                      strstr(err.msg, "act-order"), "act-order: %s", err.msg);
        CHECK(lmc_tp_qweight_cut(&d, &q, false, 0, 5, "perm rows", &err) == LMC_OK);
        float *a = malloc(sizeof(float) * 5 * K), *e = malloc(sizeof(float) * 5 * K);
        lmc_qweight_dequant_rows(&d, 0, 5, a);
        lmc_qweight_dequant_rows(&q, 0, 5, e);
        CHECK(!memcmp(a, e, sizeof(float) * 5 * K)); /* rows of an act-order weight keep its permutation */
        free(a), free(e);
        lmc_qweight_free(&d);
        lmc_qweight_free(&q);
        lmc_qgroups_free(&g);
    }
    struct lmc_nf4 nf;
    struct lmc_qweight q;
    CHECK(lmc_nf4_quantize(w, N * K, &nf, &err) == LMC_OK);
    CHECK(lmc_qweight_init_nf4(&q, &nf, N, K, &err) == LMC_OK);
    check_cuts(&c, &q, "NF4", 64, &rng);
    lmc_qweight_free(&q);
    /* NF4 over the flattened weight (QLoRA's quantization at load): rows of whole blocks cut as per-row NF4 */
    CHECK(lmc_qweight_init_nf4_flat(&q, &nf, N, K, &err) == LMC_OK);
    float *a = malloc(sizeof(float) * N * K), *e = malloc(sizeof(float) * N * K);
    struct lmc_qweight d;
    CHECK(lmc_tp_qweight_cut(&d, &q, true, K / 2, K / 2, "flat NF4", &err) == LMC_OK && !d.nf4_flat);
    lmc_qweight_dequant_rows(&q, 0, N, a);
    lmc_qweight_dequant_rows(&d, 0, N, e);
    bool eq = true;
    for (int i = 0; i < N; i++) eq &= !memcmp(e + i * (K / 2), a + i * K + K / 2, sizeof(float) * (K / 2));
    CHECK_MSG(eq, "flat NF4: the column cut dequantizes to other values");
    lmc_qweight_free(&d);
    CHECK(lmc_tp_qweight_cut(&d, &q, false, 3, 7, "flat NF4 rows", &err) == LMC_OK);
    lmc_qweight_dequant_rows(&d, 0, 7, e);
    CHECK(!memcmp(e, a + 3 * K, sizeof(float) * 7 * K));
    lmc_qweight_free(&d);
    lmc_qweight_free(&q);
    free(a), free(e);
    /* a flattened weight whose rows cross blocks (k = 96) does not split */
    struct lmc_nf4 nf2;
    CHECK(lmc_nf4_quantize(w, 5 * 96, &nf2, &err) == LMC_OK);
    CHECK(lmc_qweight_init_nf4_flat(&q, &nf2, 5, 96, &err) == LMC_OK);
    CHECK(lmc_tp_qweight_cut(&d, &q, false, 0, 2, "k96", &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "flattened"));
    lmc_qweight_free(&q);
    lmc_nf4_free(&nf2);
    lmc_nf4_free(&nf);
    free(w);
    return test_finish("test_tp_quant");
}
