/* test_qlora.c — QLoRA: LoRA over a 4-bit base kept quantized.
 *  - lmc_qweight_dequant_rows against the formats' own dequantizers (NF4,
 *    4- and 8-bit integer groups with an act-order permutation, GGUF Q4_0),
 *    odd row counts and offsets;
 *  - the backend's qmatmul_f / qmatmul_f_bwd against float64 products with
 *    the dequantized weight (odd M, a partial tile, bias);
 *  - a quantized lmc_linear (qfloat) with an adapter: y, dx, dA, dB equal
 *    the dense F32 linear holding the dequantized weight, and finite
 *    differences of sum(y * g) in x, A and B;
 *  - whole models (llama-tiny NF4, qwen2-tiny int4, gpt2-tiny NF4 with
 *    Conv1D and the fused c_attn): lmc_qlora_load + the PEFT adapter of
 *    lora_train give the loss, every lora_A/B gradient and the adapter
 *    after one AdamW step of the same model loaded in f32 with the
 *    dequantized weights (the dequantize-then-float LoRA path); a few more
 *    steps lower the loss and leave the quantized base bit-for-bit as it was. */
#include "test.h"
#include "harness_batch.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "model/linear.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#include "train/lora_train.h"
#include "train/qlora.h"
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static double max_rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

static void test_dequant_rows(void) {
    uint64_t rng = 11;
    lmc_err err = {0};
    int64_t n = 37, k = 192;
    float *w = malloc(sizeof(float) * (size_t)(n * k)), *ref = malloc(sizeof(float) * (size_t)(n * k));
    float *got = malloc(sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) w[i] = test_rand(&rng);
    /* NF4 */
    struct lmc_nf4 nf;
    struct lmc_qweight q;
    CHECK(!lmc_nf4_quantize(w, n * k, &nf, &err));
    lmc_nf4_dequantize(&nf, ref);
    CHECK(!lmc_qweight_init_nf4(&q, &nf, n, k, &err));
    lmc_qweight_dequant_rows(&q, 0, 5, got);
    lmc_qweight_dequant_rows(&q, 5, n - 5, got + 5 * k);
    CHECK_MSG(!memcmp(got, ref, sizeof(float) * (size_t)(n * k)), "nf4 rows");
    lmc_qweight_free(&q);
    lmc_nf4_free(&nf);
    /* NF4 over the flattened weight (bitsandbytes' blocks), rows of 37:
     * rows start mid-byte and mid-block; row views of a fused weight */
    {
        int64_t kf = 37;
        CHECK(!lmc_nf4_quantize(w, n * kf, &nf, &err));
        lmc_nf4_dequantize(&nf, ref);
        CHECK(!lmc_qweight_init_nf4_flat(&q, &nf, n, kf, &err));
        lmc_qweight_dequant_rows(&q, 0, n, got);
        CHECK_MSG(!memcmp(got, ref, sizeof(float) * (size_t)(n * kf)), "flat nf4 rows");
        struct lmc_qweight v = q;
        v.n = 12;
        v.flat_off = 25 * kf; /* rows 25..36 as a view */
        lmc_qweight_dequant_rows(&v, 1, 11, got);
        CHECK_MSG(!memcmp(got, ref + 26 * kf, sizeof(float) * (size_t)(11 * kf)), "flat nf4 view rows");
        lmc_qweight_free(&q);
        lmc_nf4_free(&nf);
    }
    /* integer groups, 4 and 8 bits, groups scattered over the inputs (act-order) */
    for (int bits = 4; bits <= 8; bits += 4) {
        struct lmc_qgroups g;
        int64_t gs = 64, ng = (k + gs - 1) / gs;
        CHECK(!lmc_qgroups_alloc(&g, n, k, bits, gs, &err));
        for (int64_t i = 0; i < n * k; i++) g.q[i] = (uint8_t)(test_rng_next(&rng) % (1u << bits));
        for (int64_t i = 0; i < ng * n; i++) {
            g.scale[i] = 0.01f + 0.1f * fabsf(test_rand(&rng));
            g.zero[i] = (int32_t)(test_rng_next(&rng) % (1u << bits));
        }
        for (int64_t i = 0; i < k; i++) g.g_idx[i] = (int32_t)((i * 7 + 3) % ng);
        lmc_qgroups_dequantize(&g, ref);
        CHECK(!lmc_qweight_init_groups(&q, &g, &err));
        CHECK(bits == 8 || q.perm != NULL);
        lmc_qweight_dequant_rows(&q, 0, n, got);
        CHECK_MSG(!memcmp(got, ref, sizeof(float) * (size_t)(n * k)), "%d-bit group rows", bits);
        lmc_qweight_dequant_rows(&q, 17, 3, got);
        CHECK_MSG(!memcmp(got, ref + 17 * k, sizeof(float) * (size_t)(3 * k)), "%d-bit rows 17..19", bits);
        lmc_qweight_free(&q);
        lmc_qgroups_free(&g);
    }
    /* 4-bit groups in input order (rtn: no permutation, a last partial group) */
    for (int64_t gs = 64; gs <= 128; gs += 64) {
        struct lmc_qgroups g;
        CHECK(!lmc_quant_rtn(w, n, k, 4, gs, false, &g, &err));
        lmc_qgroups_dequantize(&g, ref);
        CHECK(!lmc_qweight_init_groups(&q, &g, &err));
        CHECK(q.perm == NULL);
        lmc_qweight_dequant_rows(&q, 2, n - 2, got);
        CHECK_MSG(!memcmp(got, ref + 2 * k, sizeof(float) * (size_t)((n - 2) * k)), "rtn groups of %lld", (long long)gs);
        lmc_qweight_free(&q);
        lmc_qgroups_free(&g);
    }
    /* GGUF Q4_0 rows, used in place */
    int64_t rb;
    CHECK(lmc_ggml_row_bytes(LMC_GGML_Q4_0, k, &rb));
    uint8_t *blocks = malloc((size_t)(rb * n));
    for (int64_t r = 0; r < n; r++) {
        CHECK(lmc_ggml_quantize_row(LMC_GGML_Q4_0, w + r * k, blocks + r * rb, k));
        lmc_ggml_dequantize_row(LMC_GGML_Q4_0, blocks + r * rb, ref + r * k, k);
    }
    CHECK(!lmc_qweight_init_ggml(&q, LMC_GGML_Q4_0, blocks, n, k, &err));
    lmc_qweight_dequant_rows(&q, 3, n - 3, got);
    CHECK_MSG(!memcmp(got, ref + 3 * k, sizeof(float) * (size_t)((n - 3) * k)), "q4_0 rows");
    lmc_qweight_free(&q);
    free(blocks);
    free(w);
    free(ref);
    free(got);
}

/* A quantized (n, k) weight of random values and its dequantized floats. */
/* nf4: 0 integer groups, 1 NF4 rows, 2 flat NF4 */
static void make_q(struct lmc_qweight *q, float *wd, int64_t n, int64_t k, int nf4, uint64_t *rng) {
    lmc_err err = {0};
    float *w = malloc(sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++) w[i] = 0.2f * test_rand(rng);
    if (nf4) {
        struct lmc_nf4 nf;
        CHECK(!lmc_nf4_quantize(w, n * k, &nf, &err));
        CHECK(!(nf4 == 2 ? lmc_qweight_init_nf4_flat(q, &nf, n, k, &err) : lmc_qweight_init_nf4(q, &nf, n, k, &err)));
        lmc_nf4_free(&nf);
    } else {
        struct lmc_qgroups g;
        CHECK(!lmc_quant_rtn(w, n, k, 4, 64, false, &g, &err));
        CHECK(!lmc_qweight_init_groups(q, &g, &err));
        lmc_qgroups_free(&g);
    }
    lmc_qweight_dequant_rows(q, 0, n, wd);
    free(w);
}

static void test_qmatmul_f(const struct lmc_backend *be) {
    uint64_t rng = 5;
    int64_t M = 13, n = 300, k = 128; /* forward tiles 256 + 44, backward 4 x 64 + 44 */
    for (int nf4 = 0; nf4 < 3; nf4++) {
        struct lmc_qweight q;
        float *wd = malloc(sizeof(float) * (size_t)(n * k)), *x = malloc(sizeof(float) * (size_t)(M * k));
        float *y = malloc(sizeof(float) * (size_t)(M * n)), *bias = malloc(sizeof(float) * (size_t)n);
        float *dy = malloc(sizeof(float) * (size_t)(M * n)), *dx = malloc(sizeof(float) * (size_t)(M * k));
        double *yr = malloc(sizeof(double) * (size_t)(M * n)), *dxr = malloc(sizeof(double) * (size_t)(M * k));
        make_q(&q, wd, n, k, nf4, &rng);
        for (int64_t i = 0; i < M * k; i++) x[i] = test_rand(&rng);
        for (int64_t i = 0; i < M * n; i++) dy[i] = test_rand(&rng);
        for (int64_t i = 0; i < n; i++) bias[i] = test_rand(&rng);
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < n; j++) {
                double s = bias[j];
                for (int64_t i = 0; i < k; i++) s += (double)x[m * k + i] * wd[j * k + i];
                yr[m * n + j] = s;
            }
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < k; i++) {
                double s = 0.5 * x[m * k + i]; /* accumulated onto dx = 0.5 x */
                for (int64_t j = 0; j < n; j++) s += (double)dy[m * n + j] * wd[j * k + i];
                dxr[m * k + i] = s;
            }
        be->qmatmul_f(be->ctx, y, x, M, &q, bias);
        CHECK_MSG(test_rel_err_f32_f64(y, yr, M * n) < 1e-5, "qmatmul_f (%s): %.3e", nf4 ? "nf4" : "int4",
                  test_rel_err_f32_f64(y, yr, M * n));
        for (int64_t i = 0; i < M * k; i++) dx[i] = 0.5f * x[i];
        be->qmatmul_f_bwd(be->ctx, dx, dy, M, &q, 1);
        CHECK_MSG(test_rel_err_f32_f64(dx, dxr, M * k) < 1e-5, "qmatmul_f_bwd accum (%s): %.3e", nf4 ? "nf4" : "int4",
                  test_rel_err_f32_f64(dx, dxr, M * k));
        for (int64_t i = 0; i < M * k; i++) dxr[i] -= 0.5 * x[i];
        be->qmatmul_f_bwd(be->ctx, dx, dy, M, &q, 0);
        CHECK_MSG(test_rel_err_f32_f64(dx, dxr, M * k) < 1e-5, "qmatmul_f_bwd (%s)", nf4 ? "nf4" : "int4");
        lmc_qweight_free(&q);
        free(wd), free(x), free(y), free(bias), free(dy), free(dx), free(yr), free(dxr);
    }
}

/* sum(y * g) in double for y = lin(x) */
static double loss_of(const struct lmc_backend *be, const struct lmc_linear *L, const float *x, const float *g,
                      float *y, int64_t M) {
    lmc_linear_fwd(be, 1, &L, &y, x, M);
    double s = 0;
    for (int64_t i = 0; i < M * L->w.rows; i++) s += (double)y[i] * g[i];
    return s;
}

static void test_linear(const struct lmc_backend *be) {
    uint64_t rng = 9;
    int64_t M = 11, n = 67, k = 100, r = 3; /* flat NF4: rows not whole blocks */
    struct lmc_qweight q;
    float *wd = malloc(sizeof(float) * (size_t)(n * k));
    make_q(&q, wd, n, k, 2, &rng);
    float *A = malloc(sizeof(float) * (size_t)(r * k)), *B = malloc(sizeof(float) * (size_t)(n * r));
    float *S = calloc((size_t)(r * r), sizeof(float)), *scratch = malloc(sizeof(float) * (size_t)(4 * (2 * r + n)));
    float *dA[2], *dB[2], *dx[2], *y[2], *bias = malloc(sizeof(float) * (size_t)n);
    float *x = malloc(sizeof(float) * (size_t)(M * k)), *g = malloc(sizeof(float) * (size_t)(M * n));
    for (int i = 0; i < 2; i++) {
        dA[i] = calloc((size_t)(r * k), sizeof(float));
        dB[i] = calloc((size_t)(n * r), sizeof(float));
        dx[i] = malloc(sizeof(float) * (size_t)(M * k));
        y[i] = malloc(sizeof(float) * (size_t)(M * n));
    }
    float scale = 1.5f;
    for (int64_t i = 0; i < r; i++) S[i * r + i] = scale;
    for (int64_t i = 0; i < r * k; i++) A[i] = test_rand(&rng);
    for (int64_t i = 0; i < n * r; i++) B[i] = test_rand(&rng);
    for (int64_t i = 0; i < M * k; i++) x[i] = test_rand(&rng);
    for (int64_t i = 0; i < M * n; i++) g[i] = test_rand(&rng);
    for (int64_t i = 0; i < n; i++) bias[i] = test_rand(&rng);
    /* scratch_rows 4 < M: the adapters run in row chunks */
    struct lmc_adapter ad = {.a = {LMC_DTYPE_F32, r, k, A}, .b = {LMC_DTYPE_F32, n, r, B}, .s = {LMC_DTYPE_F32, r, r, S},
                             .scale = scale, .scratch = scratch, .scratch_rows = 4};
    struct lmc_linear Lq = {.format = LMC_WFMT_QUANT, .w = {LMC_DTYPE_F32, n, k, q.data}, .q = &q, .qfloat = true,
                            .bias = bias, .adapters = &ad, .n_adapters = 1};
    struct lmc_linear Ld = {.format = LMC_WFMT_DENSE, .w = {LMC_DTYPE_F32, n, k, wd}, .bias = bias, .adapters = &ad,
                            .n_adapters = 1};
    const struct lmc_linear *L[2] = {&Lq, &Ld};
    for (int i = 0; i < 2; i++) {
        struct lmc_adapter gad = ad;
        gad.a.data = dA[i];
        gad.b.data = dB[i];
        struct lmc_linear D = {.w = {LMC_DTYPE_F32, n, k, NULL}, .adapters = &gad, .n_adapters = 1};
        const struct lmc_linear *Dp = &D;
        lmc_linear_fwd(be, 1, &L[i], &y[i], x, M);
        const float *gp = g;
        lmc_linear_bwd(be, 1, &L[i], &Dp, dx[i], &gp, x, M, false);
    }
    CHECK_MSG(max_rel(y[0], y[1], M * n) < 1e-5, "quantized linear y: %.3e", max_rel(y[0], y[1], M * n));
    CHECK_MSG(max_rel(dx[0], dx[1], M * k) < 1e-5, "dx: %.3e", max_rel(dx[0], dx[1], M * k));
    CHECK_MSG(max_rel(dA[0], dA[1], r * k) < 1e-5, "dA: %.3e", max_rel(dA[0], dA[1], r * k));
    CHECK_MSG(max_rel(dB[0], dB[1], n * r) < 1e-5, "dB: %.3e", max_rel(dB[0], dB[1], n * r));
    /* finite differences of sum(y * g) (linear in each of x, A, B: the
     * central difference is exact but for rounding) */
    float *yt = malloc(sizeof(float) * (size_t)(M * n));
    float *vars[3] = {x, A, B}, *grads[3] = {dx[0], dA[0], dB[0]};
    int64_t sizes[3] = {M * k, r * k, n * r};
    const char *names[3] = {"dx", "dA", "dB"};
    for (int v = 0; v < 3; v++) {
        double worst = 0, gmax = 0;
        for (int64_t i = 0; i < sizes[v]; i++) gmax = fmax(gmax, fabs(grads[v][i]));
        for (int t = 0; t < 12; t++) {
            int64_t i = (int64_t)(test_rng_next(&rng) % (uint64_t)sizes[v]);
            float keep = vars[v][i], h = 0.05f;
            vars[v][i] = keep + h;
            double lp = loss_of(be, &Lq, x, g, yt, M);
            vars[v][i] = keep - h;
            double lm = loss_of(be, &Lq, x, g, yt, M);
            vars[v][i] = keep;
            double fd = (lp - lm) / (double)((keep + h) - (keep - h));
            worst = fmax(worst, fabs(fd - grads[v][i]));
        }
        CHECK_MSG(worst <= 2e-3 * gmax, "finite differences %s: %.3e of %.3e", names[v], worst, gmax);
    }
    free(yt);
    for (int i = 0; i < 2; i++) free(dA[i]), free(dB[i]), free(dx[i]), free(y[i]);
    free(A), free(B), free(S), free(scratch), free(bias), free(x), free(g), free(wd);
    lmc_qweight_free(&q);
}

/* ---- whole models against the dequantize-then-float path ---- */

/* Copies of every quantized weight's codes and scales (to compare later). */
static size_t snapshot(const struct lmc_qlora *ql, uint8_t *out) {
    size_t at = 0;
    for (int i = 0; i < ql->n_slots; i++) {
        const struct lmc_qweight *q = &ql->qw[i];
        if (!q->data) continue;
        size_t nb = q->nf4_flat ? (size_t)(q->n * q->k + 1) / 2 : (size_t)(q->n * q->row_bytes);
        size_t na = (size_t)(q->nf4_flat ? (q->n * q->k + 63) / 64 : q->n * (q->k / 64)) * sizeof(float);
        if (out) memcpy(out + at, q->data, nb);
        at += nb;
        if (q->absmax) {
            if (out) memcpy(out + at, q->absmax, na);
            at += na;
        }
        if (q->scale) {
            if (out) memcpy(out + at, q->scale, (size_t)(q->n * q->n_groups) * sizeof(float));
            at += (size_t)(q->n * q->n_groups) * sizeof(float);
        }
    }
    return at;
}

static void test_model(const struct lmc_backend *be, const char *model, enum lmc_qlora_kind kind) {
    char dir[256], ldir[300];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", model);
    snprintf(ldir, sizeof ldir, "%s/lora_train", dir);
    lmc_err err = {0};
    int64_t B, T;
    struct harness_batch bt;
    cJSON *ref = harness_batch_ref(ldir, &bt, &B, &T, &err);
    if (!ref) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    cJSON_Delete(ref);
    /* [0]: QLoRA; [1]: f32 model holding the dequantized weights */
    struct lmc_tmodel tm[2];
    struct lmc_qlora ql;
    struct lmc_lora lo[2];
    struct lmc_lora_train lt[2];
    if (lmc_qlora_load(&tm[0], &ql, dir, kind, be, &err) || lmc_tmodel_load(&tm[1], dir, be, &err)) {
        CHECK_MSG(0, "%s: %s", model, err.msg);
        return;
    }
    int64_t per_layer = strstr(model, "gpt2") ? 4 : 7; /* every block linear (c_attn fused) */
    CHECK_MSG(ql.n_quant == per_layer * tm[0].cfg.num_layers, "%s: %lld linears quantized", model,
              (long long)ql.n_quant);
    for (int i = 0; i < tm[0].n_params; i++) {
        const struct lmc_tparam *p = &tm[0].params[i];
        if (!p->external) continue;
        const struct lmc_qweight *q = &ql.qw[i];
        float *wd = malloc(sizeof(float) * (size_t)(2 * p->numel)), *disk = wd + p->numel;
        lmc_qweight_dequant_rows(q, 0, q->n, wd);
        if (p->transposed) /* (out, in) -> the on-disk (in, out) upload_param takes */
            for (int64_t a = 0; a < q->n; a++)
                for (int64_t c = 0; c < q->k; c++) disk[c * q->n + a] = wd[a * q->k + c];
        CHECK(!lmc_tmodel_upload_param(&tm[1], tm[1].w, i, p->transposed ? disk : wd, &err));
        free(wd);
    }
    size_t snap_n = snapshot(&ql, NULL);
    uint8_t *snap0 = malloc(snap_n), *snap1 = malloc(snap_n);
    snapshot(&ql, snap0);
    struct lmc_trainer tr[2];
    struct lmc_train_stats st[2];
    struct lmc_train_opts o = {.B = B, .T = T, .accum = 1, .decay = LMC_DECAY_ALL, .next_batch = harness_batch_next,
                               .batch_user = &bt};
    o.adamw = (struct lmc_adamw_cfg){1e-2, 0.9, 0.999, 1e-8, 0.0};
    o.sched = (struct lmc_schedule){.kind = LMC_SCHED_CONSTANT, .lr_max = 1e-2, .lr_min = 1e-2, .total = 100};
    for (int i = 0; i < 2; i++) {
        if (lmc_lora_load(&lo[i], ldir, &tm[i].cfg, &err) || lmc_lora_train_attach(&lt[i], &tm[i], &lo[i], &err) ||
            lmc_trainer_init(&tr[i], &tm[i], be, NULL, NULL, &o, &err)) {
            CHECK_MSG(0, "%s: %s", model, err.msg);
            return;
        }
        CHECK_MSG(!lmc_trainer_step(&tr[i], &st[i], &err), "%s step: %s", model, err.msg);
    }
    CHECK_MSG(tr[0].tm.numel - tr[0].tm.g_off == tr[1].tm.numel - tr[1].tm.g_off, "%s: same adapter layout", model);
    CHECK_MSG(tr[0].tm.trainable_off < tr[1].tm.trainable_off, "%s: the quantized base is outside the arena", model);
    CHECK_MSG(fabs(st[0].loss - st[1].loss) <= 1e-5 * fabs(st[1].loss), "%s loss %.9f vs dequantized f32 %.9f", model,
              st[0].loss, st[1].loss);
    int64_t ng = tr[0].tm.numel - tr[0].tm.g_off;
    double eg = max_rel(tr[0].tm.g, tr[1].tm.g, ng);
    CHECK_MSG(eg < 1e-4, "%s lora_A/B gradients: %.3e", model, eg);
    double ew = max_rel(tr[0].tm.w + tr[0].tm.trainable_off, tr[1].tm.w + tr[1].tm.trainable_off, ng);
    CHECK_MSG(ew < 1e-4, "%s adapter after one AdamW step: %.3e", model, ew);
    printf("%s %s: loss %.7f vs %.7f, grads %.2e, step %.2e\n", model, kind == LMC_QLORA_NF4 ? "nf4" : "int4",
           st[0].loss, st[1].loss, eg, ew);
    double first = st[0].loss;
    for (int s = 0; s < 30; s++) CHECK(!lmc_trainer_step(&tr[0], &st[0], &err));
    CHECK_MSG(st[0].loss < 0.97 * first, "%s QLoRA loss falls: %.5f -> %.5f", model, first, st[0].loss);
    snapshot(&ql, snap1);
    CHECK_MSG(!memcmp(snap0, snap1, snap_n), "%s: quantized base bit-for-bit unchanged", model);
    for (int i = 0; i < 2; i++) {
        lmc_trainer_free(&tr[i]);
        lmc_lora_train_free(&lt[i]);
        lmc_lora_free(&lo[i]);
    }
    lmc_qlora_free(&ql);
    free(snap0), free(snap1), harness_batch_free(&bt);
}

static void test_errors(const struct lmc_backend *be) {
    lmc_err err = {0};
    struct lmc_tmodel tm;
    struct lmc_qlora ql;
    CHECK(lmc_qlora_load(&tm, &ql, "tests/fixtures/no-such-model", LMC_QLORA_NF4, be, &err) != LMC_OK);
    enum lmc_qlora_kind k;
    CHECK(lmc_qlora_kind_parse("nf4", &k) && k == LMC_QLORA_NF4);
    CHECK(lmc_qlora_kind_parse("int4", &k) && k == LMC_QLORA_INT4);
    CHECK(!lmc_qlora_kind_parse("fp4", &k));
}

int main(void) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(!lmc_backend_cpu_init(&be, 2, &err));
    test_dequant_rows();
    test_qmatmul_f(&be);
    test_linear(&be);
    test_model(&be, "llama-tiny", LMC_QLORA_NF4);
    test_model(&be, "qwen2-tiny", LMC_QLORA_INT4);
    test_model(&be, "gpt2-tiny", LMC_QLORA_NF4);
    test_errors(&be);
    lmc_backend_cpu_free(&be);
    return test_finish("test_qlora");
}
