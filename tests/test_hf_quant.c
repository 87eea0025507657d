/* test_hf_quant.c — quantized checkpoints in and out (src/quant/hf_quant.c):
 * GPTQ (v1 4-bit act-order g_idx, v2 3-bit), NF4 and BitNet linears written
 * with lmc_qtensors_* into a safetensors file, read back with
 * lmc_qlinear_read to the same integers and floats, prepared for the
 * kernels and multiplied (lmc_qmatmul) against the dequantized weight in
 * float64; quantization_config parsing (methods, unsupported variants named);
 * tensors that disagree with the config (bits, group size, dtype, missing
 * tensors, g_idx out of range, NF4 shape) give errors naming the tensor. */
#include "core/core.h"
#include "quant/hf_quant.h"
#include "test.h"

#include <stdlib.h>
#include <unistd.h>

static const char *path_of(const char *n) {
    static char b[256];
    snprintf(b, sizeof b, "/tmp/lmc_test_hf_quant_%d_%s", (int)getpid(), n);
    return b;
}

/* Writes the tensors of q into a file and opens it. */
static bool write_open(struct lmc_qtensors *q, struct lmc_st *st, lmc_err *err) {
    const char *p = path_of("q.safetensors");
    if (lmc_st_write(p, q->t, q->n, NULL, 0, err)) return false;
    return lmc_st_open_file(st, p, err) == LMC_OK;
}

/* y = x W^T by the kernels against float64 on the dequantized weight. */
static double kernel_err(const struct lmc_qlinear *q, uint64_t *rng) {
    lmc_err err = {0};
    struct lmc_qctx c;
    lmc_qctx_init(&c, LMC_QISA_AVX512VNNI);
    struct lmc_qweight w;
    if (lmc_qlinear_prepare(q, &w, &err)) return 1e9;
    int64_t m = 3;
    float *wd = malloc((size_t)(q->n * q->k) * 4), *x = malloc((size_t)(m * q->k) * 4), *y = malloc((size_t)(m * q->n) * 4);
    lmc_qlinear_dequantize(q, wd);
    for (int64_t i = 0; i < m * q->k; i++) x[i] = test_rand(rng);
    void *scr = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, m) + 63) / 64 * 64);
    lmc_qmatmul(&c, &w, y, x, m, scr, NULL);
    double worst = 0, ymax = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t o = 0; o < q->n; o++) {
            double s = 0;
            for (int64_t j = 0; j < q->k; j++) s += (double)wd[o * q->k + j] * x[i * q->k + j];
            worst = fmax(worst, fabs(s - y[i * q->n + o]));
            ymax = fmax(ymax, fabs(s));
        }
    free(scr), free(wd), free(x), free(y);
    lmc_qweight_free(&w);
    return worst / ymax;
}

static void test_gptq_nf4_bitnet(void) {
    uint64_t rng = 5;
    lmc_err err = {0};
    int64_t n = 64, k = 128;
    float *w = malloc((size_t)(n * k) * 4), *a = malloc((size_t)(n * k) * 4), *b = malloc((size_t)(n * k) * 4);
    for (int64_t i = 0; i < n * k; i++) w[i] = test_rand(&rng) * 0.1f;
    for (int v2 = 0; v2 < 2; v2++) {
        struct lmc_qgroups g;
        CHECK(lmc_quant_rtn(w, n, k, v2 ? 3 : 4, v2 ? k : 32, !v2, &g, &err) == LMC_OK);
        if (!v2)
            for (int64_t i = 0; i < k; i++) g.g_idx[i] = (int32_t)((i * 7) % 3); /* act-order style g_idx */
        for (int64_t i = 0; i < g.n * g.n_groups && !v2; i++)
            if (g.zero[i] == 0) g.zero[i] = 1;
        struct lmc_qtensors t;
        CHECK(lmc_qtensors_gptq(&g, v2, "model.layers.0.mlp.up_proj", &t, &err) == LMC_OK);
        struct lmc_st st;
        CHECK(write_open(&t, &st, &err));
        struct lmc_quant_config qc = {LMC_QM_GPTQ, v2 ? 3 : 4, v2 ? -1 : 32, !v2, !v2, (bool)v2, false};
        struct lmc_qlinear q;
        bool found;
        CHECK(lmc_qlinear_read(&st, "model.layers.0.mlp.up_proj", &qc, &q, &found, &err) == LMC_OK && found);
        CHECK(q.n == n && q.k == k);
        lmc_qgroups_dequantize(&g, a);
        for (int64_t i = 0; i < g.n * g.n_groups; i++) g.scale[i] = lmc_f16_to_f32(lmc_f32_to_f16(g.scale[i]));
        lmc_qgroups_dequantize(&g, a);
        lmc_qlinear_dequantize(&q, b);
        CHECK_MSG(!memcmp(a, b, (size_t)(n * k) * 4), "gptq v2=%d: read floats differ", v2);
        CHECK(!memcmp(q.g.q, g.q, (size_t)(n * k)) && !memcmp(q.g.g_idx, g.g_idx, (size_t)k * 4));
        double e = kernel_err(&q, &rng);
        CHECK_MSG(e < 2e-2, "gptq v2=%d kernel error %g", v2, e);
        /* absent layer: found = false */
        struct lmc_qlinear q2;
        CHECK(lmc_qlinear_read(&st, "model.layers.1.mlp.up_proj", &qc, &q2, &found, &err) == LMC_OK && !found);
        /* config that disagrees: bits and group size name the tensor */
        struct lmc_quant_config bad = qc;
        bad.bits = v2 ? 4 : 8;
        CHECK_MSG(lmc_qlinear_read(&st, "model.layers.0.mlp.up_proj", &bad, &q2, &found, &err) == LMC_ERR_FORMAT &&
                      strstr(err.msg, "model.layers.0.mlp.up_proj"), "bits: %s", err.msg);
        bad = qc;
        bad.group_size = v2 ? 32 : 64;
        CHECK_MSG(lmc_qlinear_read(&st, "model.layers.0.mlp.up_proj", &bad, &q2, &found, &err) == LMC_ERR_FORMAT &&
                      strstr(err.msg, "up_proj.scales' has shape"), "group: %s", err.msg);
        lmc_qlinear_free(&q);
        lmc_st_free(&st);
        /* g_idx out of range */
        if (!v2) {
            ((int32_t *)t.t[3].data)[5] = 9;
            CHECK(write_open(&t, &st, &err));
            CHECK(lmc_qlinear_read(&st, "model.layers.0.mlp.up_proj", &qc, &q2, &found, &err) == LMC_ERR_FORMAT &&
                  strstr(err.msg, "up_proj.g_idx[5] = 9"));
            lmc_st_free(&st);
        }
        lmc_qtensors_free(&t);
        lmc_qgroups_free(&g);
    }
    /* NF4 */
    struct lmc_nf4 f;
    CHECK(lmc_nf4_quantize(w, n * k, &f, &err) == LMC_OK);
    struct lmc_qtensors t;
    CHECK(lmc_qtensors_nf4(&f, n, k, "float32", "l", &t, &err) == LMC_OK);
    struct lmc_st st;
    CHECK(write_open(&t, &st, &err));
    struct lmc_quant_config qn = {LMC_QM_BNB4, 0, 0, false, false, false, true};
    struct lmc_qlinear q;
    bool found;
    CHECK_MSG(lmc_qlinear_read(&st, "l", &qn, &q, &found, &err) == LMC_OK && found, "%s", err.msg);
    lmc_nf4_dequantize(&f, a);
    lmc_qlinear_dequantize(&q, b);
    CHECK(q.n == n && q.k == k && !memcmp(a, b, (size_t)(n * k) * 4));
    double e = kernel_err(&q, &rng);
    CHECK_MSG(e < 1e-5, "nf4 kernel error %g", e);
    lmc_qlinear_free(&q);
    lmc_st_free(&st);
    /* a quant state whose shape disagrees with the packed bytes */
    const char *bad_state = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"shape\": [64, 256], \"nested_blocksize\": 256}";
    t.t[5].data = bad_state;
    t.t[5].shape[0] = (int64_t)strlen(bad_state);
    CHECK(write_open(&t, &st, &err));
    CHECK_MSG(lmc_qlinear_read(&st, "l", &qn, &q, &found, &err) == LMC_ERR_FORMAT && strstr(err.msg, "'l.weight' holds"),
              "%s", err.msg);
    lmc_st_free(&st);
    lmc_qtensors_free(&t);
    lmc_nf4_free(&f);
    /* BitNet */
    int8_t *tq = malloc((size_t)(n * k));
    float sc = lmc_ternary_quantize(w, n * k, tq);
    CHECK(lmc_qtensors_ternary(tq, sc, n, k, "b", &t, &err) == LMC_OK);
    CHECK(write_open(&t, &st, &err));
    struct lmc_quant_config qb = {LMC_QM_BITNET, 0, 0, false, false, false, false};
    CHECK(lmc_qlinear_read(&st, "b", &qb, &q, &found, &err) == LMC_OK && found && !memcmp(q.tern, tq, (size_t)(n * k)));
    e = kernel_err(&q, &rng);
    CHECK_MSG(e < 2e-2, "bitnet kernel error %g", e);
    lmc_qlinear_free(&q);
    lmc_st_free(&st);
    ((uint8_t *)t.t[0].data)[3] = 0xFF; /* code 3 */
    CHECK(write_open(&t, &st, &err));
    CHECK(lmc_qlinear_read(&st, "b", &qb, &q, &found, &err) == LMC_ERR_FORMAT && strstr(err.msg, "code 3"));
    lmc_st_free(&st);
    lmc_qtensors_free(&t);
    free(tq);
    free(w), free(a), free(b);
    unlink(path_of("q.safetensors"));
}

static void test_config(void) {
    lmc_err err = {0};
    struct lmc_quant_config qc;
    const char *ok1 = "{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 128, "
                      "\"desc_act\": true, \"sym\": true, \"checkpoint_format\": \"gptq_v2\"}}";
    CHECK(lmc_quant_config_parse(ok1, strlen(ok1), "c", &qc, &err) == LMC_OK && qc.method == LMC_QM_GPTQ &&
          qc.bits == 4 && qc.group_size == 128 && qc.desc_act && qc.sym && qc.gptq_v2);
    const char *none = "{\"model_type\": \"llama\"}";
    CHECK(lmc_quant_config_parse(none, strlen(none), "c", &qc, &err) == LMC_OK && qc.method == LMC_QM_NONE);
    const struct { const char *j; lmc_status st; const char *want; } bad[] = {
        {"{\"quantization_config\": {\"quant_method\": \"hqq\"}}", LMC_ERR_UNSUPPORTED, "quant_method 'hqq'"},
        {"{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 5, \"group_size\": 128}}", LMC_ERR_UNSUPPORTED, "bits 5"},
        {"{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": \"4\", \"group_size\": 128}}", LMC_ERR_FORMAT, "bits must be a number"},
        {"{\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 128, \"version\": \"gemv\"}}",
         LMC_ERR_UNSUPPORTED, "version 'gemv'"},
        {"{\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_8bit\": true}}", LMC_ERR_UNSUPPORTED, "NF4"},
        {"{\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"fp4\"}}",
         LMC_ERR_UNSUPPORTED, "nf4"},
        {"{\"quantization_config\": {\"quant_method\": 3}}", LMC_ERR_FORMAT, "quant_method must be a string"},
        {"[1]", LMC_ERR_FORMAT, "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lmc_status s = lmc_quant_config_parse(bad[i].j, strlen(bad[i].j), "cfg.json", &qc, &err);
        CHECK_MSG(s == bad[i].st && strstr(err.msg, bad[i].want) && strstr(err.msg, "cfg.json"), "case %zu: %d '%s'", i,
                  s, err.msg);
    }
}

int main(void) {
    test_gptq_nf4_bitnet();
    test_config();
    return test_finish("test_hf_quant");
}
