/* test_moe.c — the mixture-of-experts feed-forward part (lmc_ffn_moe) on
 * the CPU backend against a float64 reference written here: softmax, top-k
 * (ties to the lower index, as torch.topk), optional renormalisation,
 * SwiGLU experts, weighted sum onto the residual. Odd sizes; a case with
 * exactly tied router rows (routing must pick the lower expert); a case
 * where one expert receives no token; a case with top-k = experts (every
 * expert receives every token). Backward (d input, d router, d experts)
 * against central differences of the float64 reference, through the
 * backend's grouped GEMM and through the per-expert fallback; the grouped
 * GEMM op (moe_gemm, moe_gemm_bwd) against a float64 per-expert loop with
 * empty experts and an expert holding every row. Also: configs with
 * top-k above the expert count are refused by the parser. */
#include "io/hf_config.h"
#include "model/arch.h"
#include "model/backward.h"
#include "model/model.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

struct moecase {
    int64_t n, C, E, k, I;
    bool norm;
    double *h, *res, *wr, *wx; /* wx: E x (gate (I,C), up (I,C), down (C,I)) */
    int64_t SI;                /* shared expert width (0: none) */
    double *ws;                /* gate (SI,C), up (SI,C), down (C,SI), shared gate (C) */
};

static int64_t xsz(const struct moecase *m) { return 3 * m->I * m->C; }

/* y (n, C) = res + moe(h) in float64; counts (E) of tokens per expert. */
static void ref_fwd(const struct moecase *m, const double *h, const double *wr, const double *wx, double *y,
                    int64_t *counts) {
    int64_t C = m->C, E = m->E, I = m->I, k = m->k;
    double p[64], a[64];
    int sel[64];
    if (counts) memset(counts, 0, (size_t)E * sizeof *counts);
    for (int64_t t = 0; t < m->n; t++) {
        const double *x = h + t * C;
        double mx = -1e300, s = 0;
        for (int64_t e = 0; e < E; e++) {
            p[e] = 0;
            for (int64_t c = 0; c < C; c++) p[e] += wr[e * C + c] * x[c];
            mx = p[e] > mx ? p[e] : mx;
        }
        for (int64_t e = 0; e < E; e++) s += (p[e] = exp(p[e] - mx));
        for (int64_t e = 0; e < E; e++) p[e] /= s;
        double tot = 0;
        for (int64_t j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j; i++) taken |= sel[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[j] = best;
            tot += p[best];
        }
        for (int64_t c = 0; c < C; c++) y[t * C + c] = m->res[t * C + c];
        for (int64_t j = 0; j < k; j++) {
            int e = sel[j];
            if (counts) counts[e]++;
            double w = m->norm ? p[e] / tot : p[e];
            const double *G = wx + e * xsz(m), *U = G + I * C, *D = U + I * C;
            for (int64_t i = 0; i < I; i++) {
                double g = 0, u = 0;
                for (int64_t c = 0; c < C; c++) g += G[i * C + c] * x[c], u += U[i * C + c] * x[c];
                a[i] = g / (1 + exp(-g)) * u;
            }
            for (int64_t c = 0; c < C; c++) {
                double o = 0;
                for (int64_t i = 0; i < I; i++) o += D[c * I + i] * a[i];
                y[t * C + c] += w * o;
            }
        }
        if (m->SI > 0) {
            int64_t SI = m->SI;
            const double *G = m->ws, *U = G + SI * C, *D = U + SI * C, *sgw = D + C * SI;
            double sa[64], l = 0;
            for (int64_t c = 0; c < C; c++) l += sgw[c] * x[c];
            double sig = 1 / (1 + exp(-l));
            for (int64_t i = 0; i < SI; i++) {
                double g = 0, u = 0;
                for (int64_t c = 0; c < C; c++) g += G[i * C + c] * x[c], u += U[i * C + c] * x[c];
                sa[i] = g / (1 + exp(-g)) * u;
            }
            for (int64_t c = 0; c < C; c++) {
                double o = 0;
                for (int64_t i = 0; i < SI; i++) o += D[c * SI + i] * sa[i];
                y[t * C + c] += sig * o;
            }
        }
    }
}

static double ref_loss(const struct moecase *m, const double *h, const double *wr, const double *wx,
                       const double *dy) {
    double *y = malloc((size_t)(m->n * m->C) * sizeof *y), L = 0;
    ref_fwd(m, h, wr, wx, y, NULL);
    for (int64_t i = 0; i < m->n * m->C; i++) L += dy[i] * y[i];
    free(y);
    return L;
}

static float *to_f32(const double *d, int64_t n) {
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)d[i];
    return f;
}

/* d loss / d v[i] of the float64 reference by central differences. */
static double fd(const struct moecase *m, double *v, int64_t i, const double *dy) {
    double keep = v[i], eps = 1e-6;
    v[i] = keep + eps;
    double lp = ref_loss(m, m->h, m->wr, m->wx, dy);
    v[i] = keep - eps;
    double lm = ref_loss(m, m->h, m->wr, m->wx, dy);
    v[i] = keep;
    return (lp - lm) / (2 * eps);
}

static void run_case(const char *name, struct moecase *m, const struct lmc_backend *be, bool backward,
                     int64_t want_empty, bool want_all) {
    int64_t n = m->n, C = m->C, E = m->E, I = m->I, nx = xsz(m);
    struct lmc_config c;
    memset(&c, 0, sizeof c);
    c.hidden_size = C;
    c.num_experts = E;
    c.num_experts_per_tok = m->k;
    c.moe_intermediate_size = I;
    c.norm_topk_prob = m->norm;
    c.shared_expert_intermediate_size = m->SI;
    int64_t SI = m->SI, nws = SI > 0 ? 3 * SI * C + C : 0;
    float *ws = nws ? to_f32(m->ws, nws) : NULL, *gws = nws ? calloc((size_t)nws, sizeof(float)) : NULL;
    float *h = to_f32(m->h, n * C), *res = to_f32(m->res, n * C), *wr = to_f32(m->wr, E * C);
    float *wx = to_f32(m->wx, E * nx);
    struct lmc_linear ex[64 * LMC_X_N], gex[64 * LMC_X_N];
    struct lmc_block_w W, G;
    memset(&W, 0, sizeof W);
    memset(&G, 0, sizeof G);
    memset(ex, 0, sizeof ex);
    memset(gex, 0, sizeof gex);
    W.experts = ex;
    G.experts = gex;
    float *gwr = calloc((size_t)(E * C), sizeof(float)), *gwx = calloc((size_t)(E * nx), sizeof(float));
    W.lin[LMC_L_ROUTER].w = (struct lmc_mat){LMC_DTYPE_F32, E, C, wr};
    G.lin[LMC_L_ROUTER].w = (struct lmc_mat){LMC_DTYPE_F32, E, C, gwr};
    if (SI > 0) {
        int64_t shape[4][2] = {{SI, C}, {SI, C}, {C, SI}, {1, C}};
        int slot[4] = {LMC_L_GATE, LMC_L_UP, LMC_L_DOWN, LMC_L_SHARED_GATE};
        for (int x = 0; x < 4; x++) {
            W.lin[slot[x]].w = (struct lmc_mat){LMC_DTYPE_F32, shape[x][0], shape[x][1], ws + x * SI * C};
            G.lin[slot[x]].w = (struct lmc_mat){LMC_DTYPE_F32, shape[x][0], shape[x][1], gws + x * SI * C};
        }
    }
    for (int64_t e = 0; e < E; e++) {
        int64_t shape[3][2] = {{I, C}, {I, C}, {C, I}};
        for (int x = 0; x < LMC_X_N; x++) {
            ex[e * LMC_X_N + x].w = (struct lmc_mat){LMC_DTYPE_F32, shape[x][0], shape[x][1], wx + e * nx + x * I * C};
            gex[e * LMC_X_N + x].w = (struct lmc_mat){LMC_DTYPE_F32, shape[x][0], shape[x][1], gwx + e * nx + x * I * C};
        }
    }
    struct lmc_run r;
    memset(&r, 0, sizeof r);
    r.mode = LMC_RUN_TRAIN;
    r.be = be;
    r.cfg = &c;
    r.n = n;
    CHECK(lmc_ffn_moe.missing(be, &c, true) == NULL);
    float *save = calloc((size_t)lmc_ffn_moe.save_floats(&c, n, LMC_RUN_TRAIN), sizeof(float));
    float *y = malloc((size_t)(n * C) * sizeof(float));
    lmc_ffn_moe.fwd(&r, 0, &W, save, h, res, y);
    double *yr = malloc((size_t)(n * C) * sizeof *yr);
    int64_t counts[64];
    ref_fwd(m, m->h, m->wr, m->wx, yr, counts);
    double e1 = test_rel_err_f32_f64(y, yr, n * C);
    CHECK_MSG(e1 < 1e-5, "%s: forward rel err %.3e", name, e1);
    int64_t empty = 0, all = 0;
    for (int64_t e = 0; e < E; e++) empty += counts[e] == 0, all += counts[e] == n;
    CHECK_MSG(empty >= want_empty, "%s: %lld experts without a token, wanted >= %lld", name, (long long)empty,
              (long long)want_empty);
    CHECK_MSG(!want_all || all == E, "%s: %lld of %lld experts got every token", name, (long long)all, (long long)E);
    /* inference mode on the same rows, in place on the residual: same output */
    r.mode = LMC_RUN_SEQ;
    float *y2 = to_f32(m->res, n * C);
    lmc_ffn_moe.fwd(&r, 0, &W, save, h, y2, y2);
    double e2 = test_rel_err_f32_f64(y2, yr, n * C);
    CHECK_MSG(e2 < 1e-5, "%s: in-place inference rel err %.3e", name, e2);
    r.mode = LMC_RUN_TRAIN;
    lmc_ffn_moe.fwd(&r, 0, &W, save, h, res, y);
    if (backward) {
        uint64_t rng = 99;
        double *dy = calloc((size_t)(n * C), sizeof *dy);
        for (int64_t i = 0; i < n * C; i++) dy[i] = test_rand(&rng);
        float *dyf = to_f32(dy, n * C), *dh = malloc((size_t)(n * C) * sizeof(float));
        float *scratch = calloc((size_t)lmc_ffn_moe.bwd_floats(&c, n), sizeof(float));
        lmc_ffn_moe.bwd(&r, 0, &W, &G, save, h, dyf, dh, scratch);
        double worst = 0;
        for (int64_t i = 0; i < n * C; i++) {
            double d = fd(m, m->h, i, dy), err = fabs(d - dh[i]) / (fabs(d) + 1e-2);
            worst = err > worst ? err : worst;
        }
        CHECK_MSG(worst < 2e-3, "%s: d input worst rel err %.3e", name, worst);
        worst = 0;
        for (int64_t i = 0; i < E * C; i++) {
            double d = fd(m, m->wr, i, dy), err = fabs(d - gwr[i]) / (fabs(d) + 1e-2);
            worst = err > worst ? err : worst;
        }
        CHECK_MSG(worst < 2e-3, "%s: d router worst rel err %.3e", name, worst);
        worst = 0;
        for (int64_t i = 0; i < E * nx; i += 3) {
            double d = fd(m, m->wx, i, dy), err = fabs(d - gwx[i]) / (fabs(d) + 1e-2);
            worst = err > worst ? err : worst;
        }
        CHECK_MSG(worst < 2e-3, "%s: d experts worst rel err %.3e", name, worst);
        worst = 0;
        for (int64_t i = 0; i < nws; i++) {
            double d = fd(m, m->ws, i, dy), err = fabs(d - gws[i]) / (fabs(d) + 1e-2);
            worst = err > worst ? err : worst;
        }
        CHECK_MSG(worst < 2e-3, "%s: d shared expert worst rel err %.3e", name, worst);
        free(dy);
        free(dyf);
        free(dh);
        free(scratch);
    }
    free(h), free(res), free(wr), free(wx), free(gwr), free(gwx), free(save), free(y), free(y2), free(yr);
    free(ws), free(gws);
}

static void make(struct moecase *m, uint64_t seed) {
    uint64_t s = seed;
    int64_t n = m->n, C = m->C, E = m->E;
    m->h = malloc((size_t)(n * C) * sizeof(double));
    m->res = malloc((size_t)(n * C) * sizeof(double));
    m->wr = malloc((size_t)(E * C) * sizeof(double));
    m->wx = malloc((size_t)(E * xsz(m)) * sizeof(double));
    for (int64_t i = 0; i < n * C; i++) m->h[i] = test_rand(&s), m->res[i] = test_rand(&s);
    for (int64_t i = 0; i < E * C; i++) m->wr[i] = test_rand(&s);
    for (int64_t i = 0; i < E * xsz(m); i++) m->wx[i] = 0.5 * test_rand(&s);
    int64_t nws = m->SI > 0 ? 3 * m->SI * C + C : 0;
    m->ws = nws ? malloc((size_t)nws * sizeof(double)) : NULL;
    for (int64_t i = 0; i < nws; i++) m->ws[i] = 0.5 * test_rand(&s);
}

/* The backend's grouped GEMM against a float64 per-expert loop: rows of
 * x grouped by expert per off (empty experts, an expert with every row). */
static void gemm_case(const struct lmc_backend *be, const int64_t *off, int64_t E, int64_t N, int64_t K,
                      uint64_t seed) {
    int64_t rows = off[E];
    uint64_t s = seed;
    float *x = malloc((size_t)(rows * K) * sizeof(float)), *dy = malloc((size_t)(rows * N) * sizeof(float));
    float *w = malloc((size_t)(E * N * K) * sizeof(float)), *dw = malloc((size_t)(E * N * K) * sizeof(float));
    float *y = malloc((size_t)(rows * N) * sizeof(float)), *dx = malloc((size_t)(rows * K) * sizeof(float));
    double *ry = calloc((size_t)(rows * N), sizeof(double)), *rdx = calloc((size_t)(rows * K), sizeof(double));
    double *rdw = calloc((size_t)(E * N * K), sizeof(double));
    for (int64_t i = 0; i < rows * K; i++) x[i] = test_rand(&s), dx[i] = test_rand(&s), rdx[i] = dx[i];
    for (int64_t i = 0; i < rows * N; i++) dy[i] = test_rand(&s);
    for (int64_t i = 0; i < E * N * K; i++) w[i] = test_rand(&s), dw[i] = test_rand(&s), rdw[i] = dw[i];
    struct lmc_mat m[16];
    const struct lmc_mat *wp[16];
    float *dwp[16];
    for (int64_t e = 0; e < E; e++) {
        m[e] = (struct lmc_mat){LMC_DTYPE_F32, N, K, w + e * N * K};
        wp[e] = &m[e];
        dwp[e] = dw + e * N * K;
        for (int64_t r = off[e]; r < off[e + 1]; r++)
            for (int64_t j = 0; j < N; j++)
                for (int64_t c = 0; c < K; c++) {
                    double wv = w[e * N * K + j * K + c];
                    ry[r * N + j] += (double)x[r * K + c] * wv;
                    rdx[r * K + c] += (double)dy[r * N + j] * wv;
                    rdw[e * N * K + j * K + c] += (double)dy[r * N + j] * x[r * K + c];
                }
    }
    be->moe_gemm(be->ctx, y, x, off, E, wp);
    be->moe_gemm_bwd(be->ctx, dx, dwp, dy, x, off, E, wp, 1);
    double ey = test_rel_err_f32_f64(y, ry, rows * N), ex = test_rel_err_f32_f64(dx, rdx, rows * K);
    double ew = test_rel_err_f32_f64(dw, rdw, E * N * K);
    CHECK_MSG(ey < 1e-5 && ex < 1e-5 && ew < 1e-5, "moe_gemm E %lld N %lld K %lld: y %.2e dx %.2e dw %.2e",
              (long long)E, (long long)N, (long long)K, ey, ex, ew);
    free(x), free(dy), free(w), free(dw), free(y), free(dx), free(ry), free(rdx), free(rdw);
}

/* A whole model of architecture `arch` on the CPU: the gradient of the
 * summed loss against central differences (in float32, so loose) for the
 * first entries of every tensor whose name contains one of `names`. With
 * coef > 0 the loss includes the load-balancing loss (output_router_logits,
 * router_aux_loss_coef coef): its gradient reaches the router and, through
 * the router's input, every layer below. */
static void model_grads(const struct lmc_backend *be, const char *arch, const char *const *names, int n_names,
                        double coef, int64_t sparse_step) {
    struct lmc_model_shape sh = {37, 16, 2, 2, 1, 12, 64, false, 10000};
    struct lmc_config c;
    lmc_err err = {0};
    struct lmc_tmodel tm;
    struct lmc_tacts a;
    lmc_status st = lmc_config_build(&c, arch, &sh, &err);
    c.output_router_logits = coef > 0;
    c.router_aux_loss_coef = coef;
    c.decoder_sparse_step = sparse_step; /* 2: layer 0 dense, layer 1 sparse */
    if (st || lmc_tmodel_init(&tm, &c, be, &err) ||
        lmc_tmodel_init_random(&tm, 7, 0.4, &err) || lmc_tacts_init(&a, &tm, be, 1, 6, false, &err)) {
        CHECK_MSG(0, "%s: %s", arch, err.msg);
        return;
    }
    int32_t in[6] = {3, 17, 5, 30, 11, 2}, tg[6] = {17, 5, 30, 11, 2, 9};
    double L0;
    int64_t cnt;
    lmc_tmodel_zero_grad(&tm);
    CHECK(!lmc_tmodel_step(&tm, be, &a, in, tg, true, 1.0f, &L0, &cnt, &err));
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < tm.n_params; i++) {
        bool want = false;
        for (int j = 0; j < n_names; j++) want |= strstr(tm.params[i].name, names[j]) != NULL;
        if (!want) continue;
        for (int64_t e = 0; e < 4 && e < tm.params[i].numel; e++) {
            float *w = tm.w + tm.params[i].off + e, keep = *w, eps = 2e-3f;
            double lp, lm;
            *w = keep + eps;
            lmc_tmodel_step(&tm, be, &a, in, tg, false, 1.0f, &lp, &cnt, &err);
            *w = keep - eps;
            lmc_tmodel_step(&tm, be, &a, in, tg, false, 1.0f, &lm, &cnt, &err);
            *w = keep;
            double fdv = (lp - lm) / (2.0 * eps), g = tm.g[tm.params[i].off + e];
            double rel = fabs(fdv - g) / (fabs(fdv) + 0.05);
            worst = rel > worst ? rel : worst;
            if (rel > 0.03)
                fprintf(stderr, "%s %s[%lld]: fd %.6f grad %.6f\n", arch, tm.params[i].name, (long long)e, fdv, g);
            checked++;
        }
    }
    CHECK_MSG(checked >= 4 * n_names && worst < 0.03, "%s (aux coef %g): %d gradients vs central differences, "
              "worst %.3e", arch, coef, checked, worst);
    if (coef > 0) { /* the auxiliary term is in the loss and sized as transformers sizes it */
        double aux = a.moe_aux, ce;
        tm.cfg.output_router_logits = false;
        lmc_tmodel_step(&tm, be, &a, in, tg, false, 1.0f, &ce, &cnt, &err);
        CHECK_MSG(aux > 0 && aux <= (double)(c.num_experts * c.num_experts_per_tok) &&
                  fabs(L0 - ce - coef * aux * (double)cnt) < 1e-4 * fabs(L0), "%s: aux %.6f, loss %.6f vs ce %.6f",
                  arch, aux, L0, ce);
    }
    lmc_tacts_free(&a);
    lmc_tmodel_free(&tm);
}

static void drop(struct moecase *m) { free(m->h), free(m->res), free(m->wr), free(m->wx), free(m->ws); }

/* A backend without one of the ops a model needs refuses it at load with
 * an error naming the op (inference used to run into the missing op). */
static void missing_ops(const struct lmc_backend *be) {
    static const struct {
        const char *dir, *op;
        int which; /* the entry taken away */
    } cases[] = {{"tests/fixtures/mixtral-tiny", "moe_route", 0}, {"tests/fixtures/qwen2moe-tiny", "moe_gather", 1},
                 {"tests/fixtures/qwen3moe-tiny", "moe_combine", 2}, {"tests/fixtures/olmoe-clip-tiny", "clamp", 3}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct lmc_backend b = *be;
        if (cases[i].which == 0) b.moe_route = NULL;
        if (cases[i].which == 1) b.moe_gather = NULL;
        if (cases[i].which == 2) b.moe_combine = NULL;
        if (cases[i].which == 3) b.clamp = NULL;
        struct lmc_model m;
        struct lmc_model_opts mo = {.be = &b};
        lmc_err err = {0};
        lmc_status s = lmc_model_load(&m, cases[i].dir, &mo, &err);
        CHECK_MSG(s == LMC_ERR_UNSUPPORTED && strstr(err.msg, cases[i].op) && strstr(err.msg, "backend cpu has no"),
                  "%s without %s: status %d '%s'", cases[i].dir, cases[i].op, (int)s, err.msg);
        if (!s) lmc_model_free(&m);
        struct lmc_model_opts full = {.be = be}; /* the whole table loads it */
        s = lmc_model_load(&m, cases[i].dir, &full, &err);
        CHECK_MSG(s == LMC_OK, "%s: %s", cases[i].dir, err.msg);
        if (!s) lmc_model_free(&m);
    }
}

static void parse_errors(void) {
    const char *bad = "{\"model_type\":\"mixtral\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":8,"
                      "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_local_experts\":2,"
                      "\"num_experts_per_tok\":3}";
    struct lmc_config c;
    lmc_err err = {0};
    CHECK(lmc_config_parse(&c, bad, strlen(bad), "config.json", &err) != LMC_OK);
    CHECK_MSG(strstr(err.msg, "num_experts_per_tok") != NULL, "message: %s", err.msg);
    const char *none = "{\"model_type\":\"qwen3_moe\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":8,"
                       "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_experts_per_tok\":1,"
                       "\"moe_intermediate_size\":4}";
    lmc_err e2 = {0};
    CHECK(lmc_config_parse(&c, none, strlen(none), "config.json", &e2) != LMC_OK);
    CHECK_MSG(strstr(e2.msg, "num_experts") != NULL, "message: %s", e2.msg);
    const char *only = "{\"model_type\":\"qwen2_moe\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":8,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":2,\"num_experts\":4,\"num_experts_per_tok\":1,"
                       "\"moe_intermediate_size\":4,\"shared_expert_intermediate_size\":4,\"mlp_only_layers\":[1, -3]}";
    lmc_err e3 = {0};
    CHECK(lmc_config_parse(&c, only, strlen(only), "config.json", &e3) != LMC_OK);
    CHECK_MSG(strstr(e3.msg, "mlp_only_layers") != NULL, "message: %s", e3.msg);
    const char *ok = "{\"model_type\":\"qwen2_moe\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":8,"
                     "\"num_hidden_layers\":6,\"num_attention_heads\":2,\"num_experts\":4,\"num_experts_per_tok\":1,"
                     "\"moe_intermediate_size\":4,\"shared_expert_intermediate_size\":4,\"mlp_only_layers\":[3],"
                     "\"decoder_sparse_step\":2}";
    lmc_err e4 = {0};
    CHECK_MSG(lmc_config_parse(&c, ok, strlen(ok), "config.json", &e4) == LMC_OK, "%s", e4.msg);
    bool want[6] = {false, true, false, false, false, true}; /* (l + 1) % 2 == 0, minus layer 3 */
    for (int64_t l = 0; l < 6; l++) CHECK_MSG(lmc_config_layer_sparse(&c, l) == want[l], "layer %lld", (long long)l);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    /* general: odd sizes, renormalised top-2 of 5 */
    struct moecase a = {.n = 11, .C = 13, .E = 5, .k = 2, .I = 7, .norm = true};
    make(&a, 1);
    run_case("top2-of-5 renorm", &a, &be, true, 0, false);
    a.norm = false;
    run_case("top2-of-5 plain", &a, &be, true, 0, false);
    /* ties: experts 1 and 3 have the same router row; expert 4 never chosen */
    struct moecase b = {.n = 9, .C = 7, .E = 5, .k = 1, .I = 5, .norm = false};
    make(&b, 2);
    for (int64_t c = 0; c < b.C; c++) {
        b.wr[3 * b.C + c] = b.wr[1 * b.C + c];
        b.wr[4 * b.C + c] = 0;
        b.wr[1 * b.C + c] *= 4; /* make the tied pair win often */
        b.wr[3 * b.C + c] = b.wr[1 * b.C + c];
    }
    for (int64_t i = 0; i < b.n * b.C; i++) b.h[i] = fabs(b.h[i]);
    for (int64_t c = 0; c < b.C; c++) b.wr[4 * b.C + c] = -3;
    run_case("ties + empty expert", &b, &be, false, 2, false); /* 3 and 4 empty */
    /* every expert takes every token */
    struct moecase d = {.n = 6, .C = 9, .E = 3, .k = 3, .I = 4, .norm = false};
    make(&d, 3);
    run_case("top3-of-3", &d, &be, true, 0, true);
    /* the per-expert lmc_linear path (backends without moe_gemm) */
    struct lmc_backend plain = be;
    plain.moe_gemm = NULL;
    plain.moe_gemm_bwd = NULL;
    a.norm = true;
    run_case("top2-of-5 per-expert path", &a, &plain, true, 0, false);
    run_case("top3-of-3 per-expert path", &d, &plain, true, 0, true);
    /* the grouped GEMM itself */
    const int64_t off1[] = {0, 0, 5, 5, 12, 13}, off2[] = {0, 0, 9, 9};
    gemm_case(&be, off1, 5, 7, 13, 11);
    gemm_case(&be, off2, 3, 17, 5, 12);
    const int64_t off3[] = {0, 1, 2, 3};
    gemm_case(&be, off3, 3, 33, 19, 13);
    /* a shared expert with its sigmoid gate (Qwen2-MoE) */
    struct moecase q = {.n = 7, .C = 11, .E = 6, .k = 2, .I = 5, .norm = false, .SI = 9};
    make(&q, 4);
    run_case("qwen2moe shared expert", &q, &be, true, 0, false);
    run_case("qwen2moe shared expert, per-expert path", &q, &plain, true, 0, false);
    drop(&q);
    drop(&a);
    drop(&b);
    drop(&d);
    parse_errors();
    missing_ops(&be);
    /* whole models: q/k norms over the full projection (olmoe), the shared expert (qwen2moe) */
    const char *on[] = {"layers.0.self_attn.q_norm", "layers.1.self_attn.k_norm", "layers.0.mlp.gate.",
                        "layers.1.mlp.experts.1.down_proj"};
    model_grads(&be, "olmoe", on, 4, 0, 1);
    const char *qn[] = {"layers.0.mlp.shared_expert_gate", "layers.1.mlp.shared_expert.up_proj",
                        "layers.0.self_attn.q_proj.bias", "layers.1.mlp.gate."};
    model_grads(&be, "qwen2moe", qn, 4, 0, 1);
    const char *mn[] = {"layers.0.block_sparse_moe.gate", "layers.1.block_sparse_moe.experts.0.w1"};
    model_grads(&be, "mixtral", mn, 2, 0, 1);
    /* the load-balancing loss (large coefficients: its gradient dominates the router's) */
    const char *an[] = {"layers.0.block_sparse_moe.gate", "layers.1.block_sparse_moe.gate", "layers.0.self_attn.q_proj",
                        "embed_tokens"};
    model_grads(&be, "mixtral", an, 4, 3.0, 1);
    const char *aq[] = {"layers.0.mlp.gate.", "layers.1.mlp.gate.", "layers.0.mlp.shared_expert_gate"};
    model_grads(&be, "qwen2moe", aq, 3, 5.0, 1);
    /* decoder_sparse_step 2: a dense MLP in layer 0 under the sparse layer 1, with the aux loss */
    const char *dq[] = {"layers.0.mlp.gate_proj", "layers.0.mlp.down_proj", "layers.1.mlp.gate.",
                        "layers.1.mlp.experts.2.up_proj", "layers.0.self_attn.v_proj"};
    model_grads(&be, "qwen3moe", dq, 5, 2.0, 2);
    lmc_backend_cpu_free(&be);
    return test_finish("test_moe");
}
