/* test_ops_backward.c — every CPU backward op against central finite
 * differences of a float64 reference forward, on random non-zero inputs of
 * odd sizes: L = sum(r * f(inputs)) with random r; the op's backward with
 * dy = r must match dL/dinput. Also: "+=" outputs accumulate, the fused
 * classifier's loss matches its reference, ignored targets give nothing;
 * clamp's forward against the float64 clamp. */
#include "test.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>

static uint64_t rng = 12345;

static double *drand_vec(int64_t n, double scale) {
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (double)(test_rand(&rng) * (float)scale);
    return v;
}
static float *to_f32(const double *v, int64_t n) {
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
    return f;
}

typedef double (*loss_fn)(void *);

/* Compares g (analytic, float) with central differences of f over x[0..n). */
static void check_grad(const char *what, loss_fn f, void *ctx, double *x, int64_t n, const float *g,
                       const float *g0) {
    double num = 0, den = 0, h = 1e-5;
    int64_t step = n > 300 ? n / 150 : 1;
    for (int64_t i = 0; i < n; i += step) {
        double o = x[i];
        x[i] = o + h;
        double a = f(ctx);
        x[i] = o - h;
        double b = f(ctx);
        x[i] = o;
        double fd = (a - b) / (2 * h), an = (double)g[i] - (g0 ? (double)g0[i] : 0.0);
        if (fabs(an - fd) > num || an != an) num = fabs(an - fd);
        if (fabs(fd) > den) den = fabs(fd);
    }
    double e = num / (den > 1e-30 ? den : 1e-30);
    CHECK_MSG(e < 2e-4 && den > 0, "%s: rel err %.3e (max |grad| %.3e)", what, e, den);
}

/* ---- matmul ---- */
struct mm { int64_t M, N, K; double *x, *w, *b, *r; };
static double mm_loss(void *p) {
    struct mm *t = p;
    double L = 0;
    for (int64_t m = 0; m < t->M; m++)
        for (int64_t n = 0; n < t->N; n++) {
            double y = t->b[n];
            for (int64_t k = 0; k < t->K; k++) y += t->x[m * t->K + k] * t->w[n * t->K + k];
            L += t->r[m * t->N + n] * y;
        }
    return L;
}
static void test_matmul(struct lmc_backend *be) {
    struct mm t = {7, 11, 13, 0, 0, 0, 0};
    t.x = drand_vec(t.M * t.K, 1);
    t.w = drand_vec(t.N * t.K, 1);
    t.b = drand_vec(t.N, 1);
    t.r = drand_vec(t.M * t.N, 1);
    float *x = to_f32(t.x, t.M * t.K), *w = to_f32(t.w, t.N * t.K), *r = to_f32(t.r, t.M * t.N);
    float *dx = calloc((size_t)(t.M * t.K), 4), *dw = calloc((size_t)(t.N * t.K), 4);
    float *db = calloc((size_t)t.N, 4), *dx0 = malloc((size_t)(t.M * t.K) * 4);
    struct lmc_mat wm = {LMC_DTYPE_F32, t.N, t.K, w};
    for (int64_t i = 0; i < t.M * t.K; i++) dx[i] = dx0[i] = 0.25f; /* accumulate onto this */
    for (int64_t i = 0; i < t.N * t.K; i++) dw[i] = 0.5f;
    be->matmul_bwd(be->ctx, dx, dw, db, r, x, t.M, &wm, 1);
    float *dw0 = malloc((size_t)(t.N * t.K) * 4);
    for (int64_t i = 0; i < t.N * t.K; i++) dw0[i] = 0.5f;
    check_grad("matmul dx (accum)", mm_loss, &t, t.x, t.M * t.K, dx, dx0);
    check_grad("matmul dw", mm_loss, &t, t.w, t.N * t.K, dw, dw0);
    check_grad("matmul db", mm_loss, &t, t.b, t.N, db, NULL);
    be->matmul_bwd(be->ctx, dx, NULL, NULL, r, x, t.M, &wm, 0); /* overwrite */
    check_grad("matmul dx", mm_loss, &t, t.x, t.M * t.K, dx, NULL);
    free(t.x); free(t.w); free(t.b); free(t.r); free(x); free(w); free(r);
    free(dx); free(dw); free(db); free(dx0); free(dw0);
}

/* ---- norms ---- */
struct nrm { int64_t M, C; int ln; double eps, *x, *w, *b, *r; };
static double nrm_loss(void *p) {
    struct nrm *t = p;
    double L = 0;
    for (int64_t m = 0; m < t->M; m++) {
        const double *x = t->x + m * t->C;
        double mean = 0, var = 0;
        if (t->ln) {
            for (int64_t i = 0; i < t->C; i++) mean += x[i];
            mean /= (double)t->C;
        }
        for (int64_t i = 0; i < t->C; i++) var += (x[i] - mean) * (x[i] - mean);
        double rs = 1.0 / sqrt(var / (double)t->C + t->eps);
        for (int64_t i = 0; i < t->C; i++)
            L += t->r[m * t->C + i] * ((x[i] - mean) * rs * t->w[i] + (t->ln ? t->b[i] : 0));
    }
    return L;
}
static void test_norm(struct lmc_backend *be, int ln) {
    struct nrm t = {5, 19, ln, 1e-5, 0, 0, 0, 0};
    int64_t n = t.M * t.C;
    t.x = drand_vec(n, 2);
    t.w = drand_vec(t.C, 1);
    t.b = drand_vec(t.C, 1);
    t.r = drand_vec(n, 1);
    float *x = to_f32(t.x, n), *w = to_f32(t.w, t.C), *r = to_f32(t.r, n);
    float *dx = calloc((size_t)n, 4), *dw = calloc((size_t)t.C, 4), *db = calloc((size_t)t.C, 4);
    if (ln) be->layernorm_bwd(be->ctx, dx, dw, db, r, x, w, t.M, t.C, (float)t.eps);
    else be->rmsnorm_bwd(be->ctx, dx, dw, r, x, w, t.M, t.C, (float)t.eps);
    check_grad(ln ? "layernorm dx" : "rmsnorm dx", nrm_loss, &t, t.x, n, dx, NULL);
    check_grad(ln ? "layernorm dw" : "rmsnorm dw", nrm_loss, &t, t.w, t.C, dw, NULL);
    if (ln) check_grad("layernorm db", nrm_loss, &t, t.b, t.C, db, NULL);
    free(t.x); free(t.w); free(t.b); free(t.r); free(x); free(w); free(r); free(dx); free(dw); free(db);
}

/* ---- rope ---- */
struct rp { int64_t M, H, hd, rot; int32_t pos[5]; double inv[8]; double sc, *x, *r; };
static double rp_loss(void *p) {
    struct rp *t = p;
    double L = 0;
    int64_t half = t->rot / 2;
    for (int64_t m = 0; m < t->M; m++)
        for (int64_t h = 0; h < t->H; h++) {
            const double *x = t->x + (m * t->H + h) * t->hd;
            const double *r = t->r + (m * t->H + h) * t->hd;
            for (int64_t i = 0; i < t->hd; i++) {
                double y = x[i];
                if (i < t->rot) {
                    int64_t k = i % half;
                    double a = t->pos[m] * t->inv[k], c = cos(a) * t->sc, s = sin(a) * t->sc;
                    y = i < half ? x[i] * c - x[i + half] * s : x[i] * c + x[i - half] * s;
                }
                L += r[i] * y;
            }
        }
    return L;
}
static void test_rope(struct lmc_backend *be) {
    struct rp t = {5, 3, 10, 6, {0, 3, 7, 11, 2}, {0}, 1.3, 0, 0};
    for (int i = 0; i < 3; i++) t.inv[i] = 1.0 / pow(100.0, (double)(2 * i) / 6.0);
    int64_t n = t.M * t.H * t.hd;
    t.x = drand_vec(n, 1);
    t.r = drand_vec(n, 1);
    float *d = to_f32(t.r, n);
    be->rope_bwd(be->ctx, d, t.M, t.H, t.hd, t.rot, t.pos, t.inv, (float)t.sc);
    check_grad("rope dx", rp_loss, &t, t.x, n, d, NULL);
    free(t.x); free(t.r); free(d);
}

/* Rows with repeated positions (a batch of sequences) go through the
 * backend's cos/sin table (ops/cpu/rope.c): the same bits as one row at a
 * time (no table), forward and backward; new frequencies or scale at the
 * same address are seen (the table is keyed by value). */
static void test_rope_table(struct lmc_backend *be) {
    enum { M = 40, H = 2, HD = 12, ROT = 8 };
    int32_t pos[M];
    double inv[ROT / 2];
    for (int m = 0; m < M; m++) pos[m] = (m * 5) % 7;
    double *xd = drand_vec(M * H * HD, 1);
    float *x0 = to_f32(xd, M * H * HD), *a = malloc(sizeof(float) * M * H * HD), *b = malloc(sizeof(float) * M * H * HD);
    for (int round = 0; round < 3; round++) {
        float sc = round == 2 ? 0.75f : 1.0f;
        for (int i = 0; i < ROT / 2; i++) inv[i] = 1.0 / pow(round ? 50.0 : 10000.0, (double)(2 * i) / ROT);
        for (int bwd = 0; bwd < 2; bwd++) {
            void (*op)(void *, float *, int64_t, int64_t, int64_t, int64_t, const int32_t *, const double *, float) =
                bwd ? be->rope_bwd : be->rope;
            memcpy(a, x0, sizeof(float) * M * H * HD);
            memcpy(b, x0, sizeof(float) * M * H * HD);
            op(be->ctx, a, M, H, HD, ROT, pos, inv, sc);
            for (int m = 0; m < M; m++) op(be->ctx, b + m * H * HD, 1, H, HD, ROT, pos + m, inv, sc);
            CHECK_MSG(!memcmp(a, b, sizeof(float) * M * H * HD), "rope table round %d %s", round, bwd ? "bwd" : "fwd");
        }
    }
    free(xd); free(x0); free(a); free(b);
}

/* ---- attention ---- */
struct at { int64_t B, T, H, KV, hd, win; double sc, *q, *k, *v, *r; };
static double at_loss(void *p) {
    struct at *t = p;
    double L = 0, s[128]; /* T <= 128 */
    int64_t qr = t->H * t->hd, kr = t->KV * t->hd;
    for (int64_t b = 0; b < t->B; b++)
        for (int64_t i = 0; i < t->T; i++)
            for (int64_t h = 0; h < t->H; h++) {
                int64_t g = h / (t->H / t->KV), lo = t->win > 0 && i - t->win + 1 > 0 ? i - t->win + 1 : 0;
                const double *q = t->q + (b * t->T + i) * qr + h * t->hd;
                double mx = -1e300, sum = 0;
                for (int64_t j = lo; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < t->hd; e++) d += q[e] * t->k[(b * t->T + j) * kr + g * t->hd + e];
                    s[j] = d * t->sc;
                    if (s[j] > mx) mx = s[j];
                }
                for (int64_t j = lo; j <= i; j++) sum += (s[j] = exp(s[j] - mx));
                for (int64_t e = 0; e < t->hd; e++) {
                    double o = 0;
                    for (int64_t j = lo; j <= i; j++) o += s[j] / sum * t->v[(b * t->T + j) * kr + g * t->hd + e];
                    L += t->r[(b * t->T + i) * qr + h * t->hd + e] * o;
                }
            }
    return L;
}
/* T = 7: the per-query kernels; T = 70 (>= LMC_CPU_ATTN_TRAIN_BLOCK_MIN_T): the
 * forward's query blocks, two of them, the last partial */
static void test_attention(struct lmc_backend *be, int64_t T, int64_t win) {
    LMC_ASSERT(T <= 128);
    struct at t = {2, T, 4, 2, 5, win, 1.0 / sqrt(5.0), 0, 0, 0, 0};
    int64_t nq = t.B * t.T * t.H * t.hd, nk = t.B * t.T * t.KV * t.hd;
    t.q = drand_vec(nq, 1.5);
    t.k = drand_vec(nk, 1.5);
    t.v = drand_vec(nk, 1);
    t.r = drand_vec(nq, 1);
    float *q = to_f32(t.q, nq), *k = to_f32(t.k, nk), *v = to_f32(t.v, nk), *r = to_f32(t.r, nq);
    float *dq = malloc((size_t)nq * 4), *dk = malloc((size_t)nk * 4), *dv = malloc((size_t)nk * 4);
    /* the training forward: out against the forward op, lse against float64 */
    float *out = malloc((size_t)nq * 4), *lse = malloc((size_t)(t.B * t.T * t.H) * 4);
    float *out1 = malloc((size_t)nq * 4);
    be->attention_train(be->ctx, out, lse, q, k, v, t.B, t.T, t.H, t.KV, t.hd, (float)t.sc, t.win);
    double lerr = 0;
    int64_t qr = t.H * t.hd, kr = t.KV * t.hd;
    for (int64_t b = 0; b < t.B; b++) {
        be->attention(be->ctx, out1 + b * t.T * qr, q + b * t.T * qr, k + b * t.T * kr,
                      v + b * t.T * kr, t.T, 0, t.H, t.KV, t.hd, (float)t.sc, t.win);
        for (int64_t i = 0; i < t.T; i++)
            for (int64_t h = 0; h < t.H; h++) {
                int64_t g = h / (t.H / t.KV), lo = t.win > 0 && i - t.win + 1 > 0 ? i - t.win + 1 : 0;
                double sum = 0;
                for (int64_t j = lo; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < t.hd; e++)
                        d += t.q[(b * t.T + i) * qr + h * t.hd + e] * t.k[(b * t.T + j) * kr + g * t.hd + e];
                    sum += exp(d * t.sc);
                }
                lerr = fmax(lerr, fabs(lse[(b * t.T + i) * t.H + h] - log(sum)));
            }
    }
    CHECK_MSG(lerr < 1e-5, "attention_train lse err %.3e", lerr);
    CHECK(!memcmp(out, out1, (size_t)nq * 4));
    be->attention_bwd(be->ctx, dq, dk, dv, r, out, lse, q, k, v, t.B, t.T, t.H, t.KV, t.hd,
                      (float)t.sc, t.win);
    free(out); free(lse); free(out1);
    check_grad(win ? "attention dq (window)" : "attention dq", at_loss, &t, t.q, nq, dq, NULL);
    check_grad(win ? "attention dk (window)" : "attention dk", at_loss, &t, t.k, nk, dk, NULL);
    check_grad(win ? "attention dv (window)" : "attention dv", at_loss, &t, t.v, nk, dv, NULL);
    free(t.q); free(t.k); free(t.v); free(t.r); free(q); free(k); free(v); free(r);
    free(dq); free(dk); free(dv);
}

/* ---- elementwise: swiglu, gelu ---- */
struct ew { int64_t n; int kind; double *a, *b, *r; }; /* kind 0 swiglu, 1 gelu tanh, 2 gelu exact */
static double ew_loss(void *p) {
    struct ew *t = p;
    double L = 0;
    for (int64_t i = 0; i < t->n; i++) {
        double x = t->a[i], y;
        if (t->kind == 0) y = x / (1 + exp(-x)) * t->b[i];
        else if (t->kind == 1) y = 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
        else y = 0.5 * x * erfc(-x / sqrt(2.0));
        L += t->r[i] * y;
    }
    return L;
}
static void test_elementwise(struct lmc_backend *be) {
    for (int kind = 0; kind < 3; kind++) {
        struct ew t = {37, kind, drand_vec(37, 4), drand_vec(37, 2), drand_vec(37, 1)};
        float *a = to_f32(t.a, t.n), *b = to_f32(t.b, t.n), *r = to_f32(t.r, t.n);
        float *da = malloc((size_t)t.n * 4), *db = malloc((size_t)t.n * 4);
        if (kind == 0) {
            be->swiglu_bwd(be->ctx, da, db, r, a, b, t.n);
            check_grad("swiglu dgate", ew_loss, &t, t.a, t.n, da, NULL);
            check_grad("swiglu dup", ew_loss, &t, t.b, t.n, db, NULL);
            be->swiglu_bwd(be->ctx, r, db, r, a, b, t.n); /* dgate aliasing dy */
            check_grad("swiglu dgate aliasing dy", ew_loss, &t, t.a, t.n, r, NULL);
        } else {
            be->gelu_bwd(be->ctx, r, r, a, t.n, kind == 1); /* in place */
            check_grad(kind == 1 ? "gelu (tanh) dx" : "gelu (erf) dx", ew_loss, &t, t.a, t.n, r, NULL);
        }
        free(t.a); free(t.b); free(t.r); free(a); free(b); free(r); free(da); free(db);
    }
}

/* ---- clamp (clip_qkv): y = min(max(x, -c), c) ---- */
struct cl { int64_t n; double c, *x, *r; };
static double cl_loss(void *p) {
    struct cl *t = p;
    double L = 0;
    for (int64_t i = 0; i < t->n; i++) L += t->r[i] * fmin(fmax(t->x[i], -t->c), t->c);
    return L;
}
static void test_clamp(struct lmc_backend *be) {
    /* 41 for the finite differences; 10007 (three tasks) for the forward and the mask */
    for (int64_t n = 41; n <= 10007; n += 9966) {
        struct cl t = {n, 1.3, drand_vec(n, 4), drand_vec(n, 1)};
        float *x = to_f32(t.x, n), *r = to_f32(t.r, n), *y = malloc((size_t)n * 4), *dx = malloc((size_t)n * 4);
        be->clamp(be->ctx, y, x, n, 1.3f);
        int64_t bad = 0, cut = 0;
        for (int64_t i = 0; i < n; i++) {
            double want = fmin(fmax((double)x[i], -1.3), 1.3);
            bad += fabs((double)y[i] - want) > 1e-7 * 1.3;
            cut += fabs((double)x[i]) > 1.3;
        }
        CHECK_MSG(bad == 0 && cut > n / 4 && cut < n, "clamp n=%lld: %lld wrong, %lld clamped", (long long)n,
                  (long long)bad, (long long)cut);
        be->clamp_bwd(be->ctx, dx, r, x, n, 1.3f);
        if (n < 100) check_grad("clamp dx", cl_loss, &t, t.x, n, dx, NULL);
        for (int64_t i = 0; i < n; i++) bad += dx[i] != (fabs((double)x[i]) <= 1.3 ? r[i] : 0.0f);
        be->clamp_bwd(be->ctx, r, r, x, n, 1.3f); /* dx aliasing dy */
        CHECK(!memcmp(r, dx, (size_t)n * 4) && bad == 0);
        be->clamp(be->ctx, x, x, n, 1.3f); /* in place */
        CHECK(!memcmp(x, y, (size_t)n * 4));
        free(t.x); free(t.r); free(x); free(r); free(y); free(dx);
    }
}

/* ---- embedding ---- */
struct em { int64_t n, V, C; int32_t ids[9]; double *tab, *r; };
static double em_loss(void *p) {
    struct em *t = p;
    double L = 0;
    for (int64_t i = 0; i < t->n; i++)
        for (int64_t c = 0; c < t->C; c++) L += t->r[i * t->C + c] * t->tab[t->ids[i] * t->C + c];
    return L;
}
static void test_embed(struct lmc_backend *be) {
    struct em t = {9, 6, 21, {3, 0, 5, 3, 3, 1, 0, 5, 2}, 0, 0};
    t.tab = drand_vec(t.V * t.C, 1);
    t.r = drand_vec(t.n * t.C, 1);
    float *r = to_f32(t.r, t.n * t.C), *d = calloc((size_t)(t.V * t.C), 4);
    be->embed_bwd(be->ctx, d, r, t.ids, t.n, t.C);
    check_grad("embed dtable", em_loss, &t, t.tab, t.V * t.C, d, NULL);
    free(t.tab); free(t.r); free(r); free(d);
}

/* ---- fused classifier + cross-entropy ---- */
struct xe { int64_t M, V, C; int32_t tg[7]; double ds, *h, *w; };
static double xe_row(const struct xe *t, int64_t m) {
    double lg[29], mx = -1e300, s = 0;
    for (int64_t v = 0; v < t->V; v++) {
        lg[v] = 0;
        for (int64_t c = 0; c < t->C; c++) lg[v] += t->h[m * t->C + c] * t->w[v * t->C + c];
        if (lg[v] > mx) mx = lg[v];
    }
    for (int64_t v = 0; v < t->V; v++) s += exp(lg[v] - mx);
    return t->tg[m] < 0 ? 0 : log(s) + mx - lg[t->tg[m]];
}
static double xe_loss(void *p) {
    struct xe *t = p;
    double L = 0;
    for (int64_t m = 0; m < t->M; m++) L += t->ds * xe_row(t, m);
    return L;
}
static void test_xent(struct lmc_backend *be) {
    struct xe t = {7, 29, 11, {3, 28, -1, 0, 17, 3, 9}, 0.3, 0, 0};
    t.h = drand_vec(t.M * t.C, 2);
    t.w = drand_vec(t.V * t.C, 1);
    float *h = to_f32(t.h, t.M * t.C), *w = to_f32(t.w, t.V * t.C), loss[7];
    float *dh = malloc((size_t)(t.M * t.C) * 4), *dw = calloc((size_t)(t.V * t.C), 4);
    struct lmc_mat wm = {LMC_DTYPE_F32, t.V, t.C, w};
    be->classifier_xent(be->ctx, loss, dh, dw, h, &wm, t.tg, t.M, (float)t.ds);
    double e = 0;
    for (int64_t m = 0; m < t.M; m++) e = fmax(e, fabs(loss[m] - xe_row(&t, m)));
    CHECK_MSG(e < 1e-5, "classifier_xent loss err %.3e", e);
    CHECK(loss[2] == 0.0f);
    check_grad("classifier_xent dh", xe_loss, &t, t.h, t.M * t.C, dh, NULL);
    check_grad("classifier_xent dw", xe_loss, &t, t.w, t.V * t.C, dw, NULL);
    float dh2 = dh[2 * t.C];
    CHECK(dh2 == 0.0f); /* ignored target: no gradient */
    float loss2[7];
    be->classifier_xent(be->ctx, loss2, NULL, NULL, h, &wm, t.tg, t.M, 1.0f); /* forward only */
    CHECK(!memcmp(loss, loss2, sizeof loss));
    free(t.h); free(t.w); free(h); free(w); free(dh); free(dw);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_matmul(&be);
    test_norm(&be, 0);
    test_norm(&be, 1);
    test_rope(&be);
    test_rope_table(&be);
    test_attention(&be, 7, 0);
    test_attention(&be, 7, 3);
    test_attention(&be, 70, 0);
    test_attention(&be, 70, 23);
    test_elementwise(&be);
    test_clamp(&be);
    test_embed(&be);
    test_xent(&be);
    lmc_backend_cpu_free(&be);
    return test_finish("test_ops_backward");
}
