/* test_lora.c — LoRA adapters: lmc_linear_fwd/_res/_swiglu and
 * lmc_linear_bwd with two adapters (ranks 3 and 5, row chunks of 8) on
 * the CPU backend with and without its fused entries, against float64
 * (forward, dx, dA, dB; a frozen base) and central finite differences;
 * the PEFT fixture (tests/fixtures/llama-tiny/lora, F64 tensors) bound
 * into the model gives PEFT's logits; new adapters written and read back
 * bit for bit; bad adapter folders fail with errors naming the problem. */
#include "test.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "train/lora.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t seed = 777;
static float *rvec(int64_t n) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = test_rand(&seed);
    return v;
}

enum { M = 37, K = 29, N = 23, NA = 2 };
static const int64_t R[NA] = {3, 5};
static const float SC[NA] = {0.75f, -1.5f};

struct fix {
    float *x, *w, *b, *a[NA], *bb[NA], *diag[NA], *scratch;
    struct lmc_adapter ad[NA];
    struct lmc_linear L;
};

static void fix_init(struct fix *f) {
    f->x = rvec(M * K);
    f->w = rvec(N * K);
    f->b = rvec(N);
    int64_t rmax = 5;
    f->scratch = malloc((size_t)(8 * (2 * rmax + N)) * sizeof(float));
    for (int j = 0; j < NA; j++) {
        int64_t r = R[j];
        f->a[j] = rvec(r * K);
        f->bb[j] = rvec(N * r);
        f->diag[j] = calloc((size_t)(r * r), sizeof(float));
        for (int64_t q = 0; q < r; q++) f->diag[j][q * r + q] = SC[j];
        f->ad[j] = (struct lmc_adapter){.a = {LMC_DTYPE_F32, r, K, f->a[j]}, .b = {LMC_DTYPE_F32, N, r, f->bb[j]},
                                        .s = {LMC_DTYPE_F32, r, r, f->diag[j]}, .scale = SC[j],
                                        .scratch = f->scratch, .scratch_rows = 8};
    }
    memset(&f->L, 0, sizeof f->L);
    f->L.w = (struct lmc_mat){LMC_DTYPE_F32, N, K, f->w};
    f->L.bias = f->b;
    f->L.adapters = f->ad;
    f->L.n_adapters = NA;
}

static void fix_free(struct fix *f) {
    free(f->x), free(f->w), free(f->b), free(f->scratch);
    for (int j = 0; j < NA; j++) free(f->a[j]), free(f->bb[j]), free(f->diag[j]);
}

/* y = x W^T + b + sum_j s_j (x A_j^T) B_j^T in double */
static void ref_fwd(const struct fix *f, double *y) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = f->b[n];
            for (int64_t k = 0; k < K; k++) s += (double)f->x[m * K + k] * f->w[n * K + k];
            for (int j = 0; j < NA; j++)
                for (int64_t q = 0; q < R[j]; q++) {
                    double u = 0;
                    for (int64_t k = 0; k < K; k++) u += (double)f->x[m * K + k] * f->a[j][q * K + k];
                    s += SC[j] * u * f->bb[j][n * R[j] + q];
                }
            y[m * N + n] = s;
        }
}

static double loss_of(const struct lmc_backend *be, const struct fix *f, const float *dy, float *y) {
    const struct lmc_linear *Lp[1] = {&f->L};
    float *ys[1] = {y};
    lmc_linear_fwd(be, 1, Lp, ys, f->x, M);
    double s = 0;
    for (int64_t i = 0; i < M * N; i++) s += (double)dy[i] * y[i];
    return s;
}

static void run(const struct lmc_backend *be, const char *label) {
    struct fix f;
    fix_init(&f);
    double *yr = malloc(sizeof(double) * M * N);
    ref_fwd(&f, yr);
    float *y = calloc(M * N, sizeof(float)), *y2 = calloc(M * N, sizeof(float));
    /* two linears sharing x: the adapted one and a plain one */
    struct lmc_linear P = f.L;
    P.adapters = NULL;
    P.n_adapters = 0;
    const struct lmc_linear *Lp[2] = {&f.L, &P};
    float *ys[2] = {y, y2};
    lmc_linear_fwd(be, 2, Lp, ys, f.x, M);
    double e = test_rel_err_f32_f64(y, yr, M * N);
    CHECK_MSG(e < 1e-5, "%s fwd: %.3e", label, e);
    double *plain = malloc(sizeof(double) * M * N);
    for (int64_t i = 0; i < M * N; i++) plain[i] = y2[i];
    CHECK_MSG(test_rel_err_f32_f64(y, plain, M * N) > 1e-2, "%s: the adapters change the output", label);
    /* residual in place and out of place */
    float *res = rvec(M * N), *acc = malloc(sizeof(float) * M * N), *tmp = calloc(M * N, sizeof(float));
    memcpy(acc, res, sizeof(float) * M * N);
    double *rr = malloc(sizeof(double) * M * N);
    for (int64_t i = 0; i < M * N; i++) rr[i] = res[i] + yr[i];
    lmc_linear_fwd_res(be, &f.L, acc, acc, f.x, M, tmp);
    CHECK_MSG(test_rel_err_f32_f64(acc, rr, M * N) < 1e-5, "%s residual in place", label);
    lmc_linear_fwd_res(be, &f.L, y2, res, f.x, M, tmp);
    CHECK_MSG(test_rel_err_f32_f64(y2, rr, M * N) < 1e-5, "%s residual out of place", label);
    /* SwiGLU with the adapted linear as the gate, no biases (unfused path) */
    struct lmc_linear G = f.L, U = P;
    G.bias = NULL;
    U.bias = NULL;
    lmc_linear_fwd_swiglu(be, &G, &U, y2, f.x, M, tmp);
    double *sr = malloc(sizeof(double) * M * N);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double g = yr[m * N + n] - f.b[n], u = 0;
            for (int64_t k = 0; k < K; k++) u += (double)f.x[m * K + k] * f.w[n * K + k];
            sr[m * N + n] = g / (1 + exp(-g)) * u;
        }
    CHECK_MSG(test_rel_err_f32_f64(y2, sr, M * N) < 1e-5, "%s swiglu with an adapted gate", label);

    /* backward of loss = sum dy * y, base frozen (D.w NULL), dx += */
    float *dy = rvec(M * N), *dx = rvec(M * K), *dA[NA], *dB[NA];
    double *dxr = malloc(sizeof(double) * M * K);
    for (int64_t i = 0; i < M * K; i++) dxr[i] = dx[i];
    struct lmc_adapter gad[NA];
    for (int j = 0; j < NA; j++) {
        dA[j] = rvec(R[j] * K); /* += onto non-zero */
        dB[j] = rvec(N * R[j]);
        gad[j] = f.ad[j];
        gad[j].a.data = dA[j];
        gad[j].b.data = dB[j];
    }
    double *dAr[NA], *dBr[NA];
    for (int j = 0; j < NA; j++) {
        int64_t r = R[j];
        dAr[j] = malloc(sizeof(double) * r * K);
        dBr[j] = malloc(sizeof(double) * N * r);
        double *u = malloc(sizeof(double) * M * r), *g = malloc(sizeof(double) * M * r);
        for (int64_t m = 0; m < M; m++)
            for (int64_t q = 0; q < r; q++) {
                double su = 0, sg = 0;
                for (int64_t k = 0; k < K; k++) su += (double)f.x[m * K + k] * f.a[j][q * K + k];
                for (int64_t n = 0; n < N; n++) sg += (double)dy[m * N + n] * f.bb[j][n * r + q];
                u[m * r + q] = su;
                g[m * r + q] = sg;
            }
        for (int64_t q = 0; q < r; q++)
            for (int64_t k = 0; k < K; k++) {
                double s = dA[j][q * K + k];
                for (int64_t m = 0; m < M; m++) s += SC[j] * g[m * r + q] * f.x[m * K + k];
                dAr[j][q * K + k] = s;
            }
        for (int64_t n = 0; n < N; n++)
            for (int64_t q = 0; q < r; q++) {
                double s = dB[j][n * r + q];
                for (int64_t m = 0; m < M; m++) s += SC[j] * dy[m * N + n] * u[m * r + q];
                dBr[j][n * r + q] = s;
            }
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0;
                for (int64_t q = 0; q < r; q++) s += SC[j] * g[m * r + q] * f.a[j][q * K + k];
                dxr[m * K + k] += s;
            }
        free(u), free(g);
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += (double)dy[m * N + n] * f.w[n * K + k];
            dxr[m * K + k] += s;
        }
    struct lmc_linear D = {.w = {LMC_DTYPE_F32, N, K, NULL}, .adapters = gad, .n_adapters = NA};
    const struct lmc_linear *L1[1] = {&f.L}, *D1[1] = {&D};
    const float *dyc[1] = {dy};
    lmc_linear_bwd(be, 1, L1, D1, dx, dyc, f.x, M, true);
    e = test_rel_err_f32_f64(dx, dxr, M * K);
    CHECK_MSG(e < 1e-5, "%s bwd dx: %.3e", label, e);
    for (int j = 0; j < NA; j++) {
        double ea = test_rel_err_f32_f64(dA[j], dAr[j], R[j] * K), eb = test_rel_err_f32_f64(dB[j], dBr[j], N * R[j]);
        CHECK_MSG(ea < 1e-5 && eb < 1e-5, "%s bwd adapter %d: dA %.3e dB %.3e", label, j, ea, eb);
    }
    /* central differences of the f32 loss against the gradients (from zero) */
    for (int j = 0; j < NA; j++) {
        memset(dA[j], 0, sizeof(float) * R[j] * K);
        memset(dB[j], 0, sizeof(float) * N * R[j]);
    }
    lmc_linear_bwd(be, 1, L1, D1, NULL, dyc, f.x, M, false);
    double worst = 0;
    for (int j = 0; j < NA; j++)
        for (int which = 0; which < 2; which++) {
            float *p = which ? f.bb[j] : f.a[j], *gp = which ? dB[j] : dA[j];
            int64_t n = which ? N * R[j] : R[j] * K;
            double gmax = 0;
            for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(gp[i]));
            for (int64_t i = 0; i < n; i += n / 4 + 1) {
                float keep = p[i], h = 1e-2f;
                p[i] = keep + h;
                double lp = loss_of(be, &f, dy, y);
                p[i] = keep - h;
                double lm = loss_of(be, &f, dy, y);
                p[i] = keep;
                double fd = (lp - lm) / (2.0 * h);
                worst = fmax(worst, fabs(fd - gp[i]) / gmax);
            }
        }
    CHECK_MSG(worst < 1e-2, "%s finite differences: %.3e", label, worst);
    for (int j = 0; j < NA; j++) free(dA[j]), free(dB[j]), free(dAr[j]), free(dBr[j]);
    free(dy), free(dx), free(dxr), free(sr), free(rr), free(res), free(acc), free(tmp);
    free(y), free(y2), free(yr), free(plain);
    fix_free(&f);
}

/* ---------------- the PEFT fixture ---------------- */

#define FIX "tests/fixtures/llama-tiny"

static void test_fixture(const struct lmc_backend *be) {
    lmc_err err = {0};
    struct lmc_model m;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_F32, .be = be};
    if (lmc_model_load(&m, FIX, &mo, &err)) {
        CHECK_MSG(0, "load: %s", err.msg);
        return;
    }
    struct lmc_lora lo;
    CHECK_MSG(!lmc_lora_load(&lo, FIX "/lora", &m.cfg, &err), "lora load: %s", err.msg);
    CHECK(lo.n_mods == 6 && lo.cfg.r == 4 && lo.cfg.alpha == 8);
    struct lmc_st ref, base;
    CHECK(!lmc_st_open_file(&ref, FIX "/lora/ref_logits.safetensors", &err));
    CHECK(!lmc_st_open_file(&base, FIX "/ref_logits.safetensors", &err));
    const struct lmc_lora *los[1] = {&lo};
    double mul = 1;
    struct lmc_lora_binding bind;
    CHECK_MSG(!lmc_lora_bind(&bind, &m.w, &m.cfg, los, &mul, 1, be, &err), "bind: %s", err.msg);
    /* prompt 0's ids from ref.json are not needed: the logits are per
     * position of prompt{i}; take the ids from the tokenizer-free ref */
    char *text;
    size_t len;
    CHECK(!lmc_file_read(FIX "/ref.json", 1 << 24, &text, &len, &err));
    int64_t V = m.cfg.vocab_size;
    for (int p = 0; p < 3; p++) {
        /* ids of prompt p: the p-th "ids":[ in the prompts section */
        const char *s = strstr(text, "\"prompts\"");
        for (int k = 0; s && k <= p; k++) s = strstr(s + 1, "\"ids\"");
        int32_t ids[256];
        int64_t n = 0;
        s = s ? strchr(s, '[') : NULL;
        while (s && *s != ']' && n < 256) {
            s++;
            char *e;
            long v = strtol(s, &e, 10);
            if (e == s) break;
            ids[n++] = (int32_t)v;
            s = e;
        }
        char name[16];
        snprintf(name, sizeof name, "prompt%d", p);
        const struct lmc_st_tensor *t = lmc_st_find(&ref, name), *tb = lmc_st_find(&base, name);
        if (!t || !tb || t->numel != n * V) {
            CHECK_MSG(0, "prompt %d: %lld ids, ref logits missing or of another size", p, (long long)n);
            continue;
        }
        struct lmc_kv kv;
        struct lmc_acts acts;
        float *lg = malloc(sizeof(float) * (size_t)(n * V));
        CHECK(!lmc_kv_init(&kv, &m, be, n, &err) && !lmc_acts_init(&acts, &m, be, n, n, &err));
        CHECK(!lmc_model_forward(&m, be, &acts, &kv, ids, n, 0, lg, true, &err));
        double *rd = malloc(sizeof(double) * (size_t)(n * V)), *bd = malloc(sizeof(double) * (size_t)(n * V));
        for (int64_t i = 0; i < n * V; i++) {
            rd[i] = ((const float *)t->data)[i];
            bd[i] = ((const float *)tb->data)[i];
        }
        double e = test_rel_err_f32_f64(lg, rd, n * V), eb = test_rel_err_f32_f64(lg, bd, n * V);
        CHECK_MSG(e <= 1e-4, "prompt %d: logits with the adapter, rel err %.3e", p, e);
        CHECK_MSG(eb > 1e-3, "prompt %d: the adapter moves the logits (%.3e from the base's)", p, eb);
        if (p == 0) printf("fixture prompt 0: rel err %.3e vs PEFT (base differs by %.3e)\n", e, eb);
        lmc_acts_free(&acts);
        lmc_kv_free(&kv);
        free(lg), free(rd), free(bd);
    }
    free(text);
    lmc_lora_unbind(&bind, &m.w, &m.cfg);
    for (int64_t l = 0; l < m.cfg.num_layers; l++)
        for (int s = 0; s < LMC_L_N; s++) CHECK(m.w.layers[l].lin[s].n_adapters == 0);
    lmc_st_free(&ref);
    lmc_st_free(&base);
    lmc_lora_free(&lo);
    lmc_model_free(&m);
}

/* ---------------- writing, reading, bad folders ---------------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void expect_fail(const char *dir, const struct lmc_config *c, lmc_status want, const char *needle) {
    lmc_err err = {0};
    struct lmc_lora lo;
    lmc_status s = lmc_lora_load(&lo, dir, c, &err);
    CHECK_MSG(s == want && strstr(err.msg, needle), "want status %d with '%s', got %d: %s", want, needle, s,
              err.msg);
    if (!s) lmc_lora_free(&lo);
}

static void test_io(void) {
    lmc_err err = {0};
    struct lmc_config c;
    if (lmc_config_load(&c, "tests/fixtures/gpt2-tiny", &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    char tmpl[] = "/tmp/lmc_lora_XXXXXX";
    char *d = mkdtemp(tmpl), dir[256], path[512];
    snprintf(dir, sizeof dir, "%s/ad", d);
    struct lmc_lora_config cfg = {.r = 3, .alpha = 6, .rslora = true};
    CHECK(!lmc_lora_parse_targets(&cfg, "c_attn,c_fc", &err));
    CHECK(lmc_lora_parse_targets(&cfg, "c_attn,,c_fc", &err) == LMC_ERR_ARG);
    CHECK(!lmc_lora_parse_targets(&cfg, "c_attn,c_fc", &err));
    struct lmc_lora lo, back;
    CHECK_MSG(!lmc_lora_create(&lo, &cfg, &c, 5, &err), "%s", err.msg);
    CHECK(lo.n_mods == 2 * c.num_layers && lo.mods[0].parts == 3 && lo.mods[0].transposed);
    for (int i = 0; i < lo.n_mods; i++) /* non-zero B to compare */
        for (int64_t k = 0; k < lo.mods[i].out * 3; k++) lo.mods[i].b[k] = test_rand(&seed);
    CHECK_MSG(!lmc_lora_save(&lo, dir, &c, NULL, &err), "save: %s", err.msg);
    CHECK_MSG(!lmc_lora_save(&lo, dir, &c, NULL, &err), "save over an adapter folder: %s", err.msg);
    CHECK_MSG(!lmc_lora_load(&back, dir, &c, &err), "load: %s", err.msg);
    bool same = back.n_mods == lo.n_mods && back.cfg.rslora && back.cfg.r == 3 && back.cfg.fan_in_fan_out;
    for (int i = 0; same && i < lo.n_mods; i++)
        same = !strcmp(back.mods[i].module, lo.mods[i].module) &&
               !memcmp(back.mods[i].a, lo.mods[i].a, sizeof(float) * 3 * (size_t)lo.mods[i].in) &&
               !memcmp(back.mods[i].b, lo.mods[i].b, sizeof(float) * 3 * (size_t)lo.mods[i].out);
    CHECK_MSG(same, "written adapter reads back the same");
    CHECK(fabs(lmc_lora_scale(&back.cfg) - 6 / sqrt(3.0)) < 1e-12);
    lmc_lora_free(&back);
    /* a folder that is not an adapter is never replaced */
    snprintf(path, sizeof path, "%s/other", d);
    mkdir(path, 0777);
    CHECK(lmc_lora_save(&lo, path, &c, NULL, &err) == LMC_ERR_IO && strstr(err.msg, "not an adapter folder"));
    rmdir(path);
    /* bad configs */
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    write_text(path, "{\"peft_type\":\"IA3\",\"r\":3,\"lora_alpha\":6}");
    expect_fail(dir, &c, LMC_ERR_UNSUPPORTED, "peft_type 'IA3'");
    write_text(path, "{\"peft_type\":\"LORA\",\"r\":\"x\",\"lora_alpha\":6}");
    expect_fail(dir, &c, LMC_ERR_FORMAT, "'r'");
    write_text(path, "{\"peft_type\":\"LORA\",\"r\":3,\"lora_alpha\":6,\"use_dora\":true}");
    expect_fail(dir, &c, LMC_ERR_UNSUPPORTED, "DoRA");
    write_text(path, "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":6}");
    expect_fail(dir, &c, LMC_ERR_FORMAT, "expected [4, ");
    write_text(path, "{\"peft_type\":\"LORA\",\"r\":3,\"lora_alpha\":6}");
    struct lmc_lora ok;
    CHECK(!lmc_lora_load(&ok, dir, &c, &err));
    lmc_lora_free(&ok);
    /* tensors: a missing lora_B, an unknown module, a wrong shape */
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    float z[64 * 3] = {0};
    struct lmc_st_write_tensor t[2] = {
        {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", LMC_DTYPE_F32, 2, {3, c.hidden_size}, z},
        {"base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", LMC_DTYPE_F32, 2, {3 * c.hidden_size, 3}, z}};
    CHECK(!lmc_st_write(path, t, 1, NULL, 0, &err));
    expect_fail(dir, &c, LMC_ERR_FORMAT, "missing tensor 'base_model.model.transformer.h.0.attn.c_attn.lora_B");
    t[1].name = "base_model.model.transformer.h.0.attn.c_proj.lora_B.weight";
    t[1].shape[0] = c.hidden_size;
    t[0].name = "base_model.model.transformer.h.99.attn.c_proj.lora_A.weight";
    CHECK(!lmc_st_write(path, t, 2, NULL, 0, &err));
    expect_fail(dir, &c, LMC_ERR_FORMAT, "missing tensor 'base_model.model.transformer.h.0.attn.c_proj.lora_A");
    t[0].name = "base_model.model.transformer.h.0.attn.c_proj.lora_A.weight";
    t[0].shape[1] = c.hidden_size - 1;
    CHECK(!lmc_st_write(path, t, 2, NULL, 0, &err));
    expect_fail(dir, &c, LMC_ERR_FORMAT, "expected [3, ");
    t[0].shape[1] = c.hidden_size;
    struct lmc_st_write_tensor t3[3] = {t[0], t[1], t[0]};
    t3[2].name = "base_model.model.transformer.h.99.attn.c_proj.lora_A.weight";
    CHECK(!lmc_st_write(path, t3, 3, NULL, 0, &err));
    expect_fail(dir, &c, LMC_ERR_FORMAT, "h.99.attn.c_proj.lora_A.weight' is not a lora_A/lora_B weight");
    unlink(path);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    unlink(path);
    rmdir(dir);
    rmdir(d);
    lmc_lora_free(&lo);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    run(&be, "cpu");
    struct lmc_backend plain = be;
    plain.matmul_multi = NULL;
    plain.matmul_add = NULL;
    plain.matmul_swiglu = NULL;
    plain.matmul_bwd_multi = NULL;
    run(&plain, "cpu plain ops");
    test_fixture(&be);
    test_io();
    lmc_backend_cpu_free(&be);
    return test_finish("test_lora");
}
