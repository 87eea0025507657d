/* test_ssm_ops.c — the CPU state-space-model ops (issue 15) against float64
 * references on random non-zero inputs of odd sizes, with strided operands:
 *   conv1d_causal (+bias, SiLU, carried state) fwd, step, bwd;
 *   ssm_scan (Mamba-1) fwd, step, bwd;  ssd_chunk (Mamba-2) fwd, step, bwd;
 *   rmsnorm_gated fwd, bwd.
 * Backward ops against central differences of the float64 reference
 * (L = sum(r * f) with random r, the op's backward given dy = r). Prefill
 * against step-by-step decode (<= 1e-5) at lengths 1, 7, 1000, 4097, and
 * for Mamba-2 every split point and every length inside a chunk (the
 * carried state crosses the chunk boundary at each position); batched
 * prefill and decode through a slot table == each sequence alone. */
#include "test.h"
#include "ops/backend.h"
#include "ops/cpu/ssm_cpu.h"

#include <stdlib.h>

static uint64_t rng = 4242;

static double *dvec(int64_t n, double lo, double hi) {
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * (0.5 + 0.5 * (double)test_rand(&rng));
    return v;
}
static float *f32(const double *v, int64_t n) {
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
    return f;
}
static float *fnan(int64_t n) {
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = NAN;
    return f;
}
/* max|a - b| / max|b| over n elements at stride ld (cols per row) */
static double rel_f(const float *a, const float *b, int64_t rows, int64_t cols, int64_t lda,
                    int64_t ldb) {
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double d = fabs((double)a[r * lda + c] - b[r * ldb + c]);
            if (d > num || d != d) num = d;
            den = fmax(den, fabs((double)b[r * ldb + c]));
        }
    return num / (den > 1e-30 ? den : 1e-30);
}
static double rel_d(const float *a, const double *b, int64_t rows, int64_t cols, int64_t lda,
                    int64_t ldb) {
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double d = fabs((double)a[r * lda + c] - b[r * ldb + c]);
            if (d > num || d != d) num = d;
            den = fmax(den, fabs(b[r * ldb + c]));
        }
    return num / (den > 1e-30 ? den : 1e-30);
}

static double sp(double x) { return x > 20 ? x : log1p(exp(x)); }
static double silu(double x) { return x / (1 + exp(-x)); }

typedef double (*loss_fn)(void *);
/* g (analytic, at stride ld over rows x cols of x) vs central differences */
static void check_grad(const char *what, loss_fn f, void *ctx, double *x, int64_t rows,
                       int64_t cols, int64_t ldx, const float *g, int64_t ldg) {
    double num = 0, den = 0, h = 1e-6;
    int64_t n = rows * cols, step = n > 400 ? n / 200 : 1;
    for (int64_t k = 0; k < n; k += step) {
        int64_t r = k / cols, c = k % cols;
        double *p = &x[r * ldx + c], o = *p;
        *p = o + h;
        double a = f(ctx);
        *p = o - h;
        double b = f(ctx);
        *p = o;
        double fd = (a - b) / (2 * h), an = g[r * ldg + c];
        if (fabs(an - fd) > num || an != an) num = fabs(an - fd);
        den = fmax(den, fabs(fd));
    }
    double e = num / (den > 1e-30 ? den : 1e-30);
    CHECK_MSG(e < 5e-4 && den > 0, "%s: rel err %.3e (max |grad| %.3e)", what, e, den);
}

/* ================= conv1d_causal ================= */
struct conv_case {
    int64_t B, T, C, K, ldx;
    int silu, has_bias;
    double *x, *w, *bias, *st, *r; /* st: (B, K-1, C) or NULL */
};
static void conv_ref(const struct conv_case *c, double *y, double *pre) {
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < c->T; t++)
            for (int64_t ch = 0; ch < c->C; ch++) {
                double a = c->has_bias ? c->bias[ch] : 0;
                for (int64_t k = 0; k < c->K; k++) {
                    int64_t s = t - c->K + 1 + k;
                    double xv = s >= 0 ? c->x[(b * c->T + s) * c->ldx + ch]
                              : c->st ? c->st[(b * (c->K - 1) + c->K - 1 + s) * c->C + ch] : 0;
                    a += c->w[ch * c->K + k] * xv;
                }
                if (pre) pre[(b * c->T + t) * c->C + ch] = a;
                y[(b * c->T + t) * c->C + ch] = c->silu ? silu(a) : a;
            }
}
static double conv_loss(void *p) {
    struct conv_case *c = p;
    int64_t n = c->B * c->T * c->C;
    double *y = malloc((size_t)n * sizeof *y), L = 0;
    conv_ref(c, y, NULL);
    for (int64_t i = 0; i < n; i++) L += c->r[i] * y[i];
    free(y);
    return L;
}

static void test_conv(struct lmc_backend *be) {
    const int64_t shapes[][4] = {{1, 1, 1, 4}, {2, 7, 13, 4}, {3, 33, 131, 4}, {1, 5, 67, 3},
                                 {2, 2, 9, 5}, {1, 19, 70, 1}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int v = 0; v < 4; v++) {
            struct conv_case c = {shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3],
                                  shapes[si][2] + 3, v & 1, 1, NULL, NULL, NULL, NULL, NULL};
            const int64_t BT = c.B * c.T, S = c.B * (c.K - 1) * c.C;
            c.x = dvec(BT * c.ldx, -1, 1), c.w = dvec(c.C * c.K, -1, 1), c.bias = dvec(c.C, -1, 1);
            c.r = dvec(BT * c.C, -1, 1);
            c.st = (v & 2) ? dvec(S, -1, 1) : NULL;
            float *x = f32(c.x, BT * c.ldx), *w = f32(c.w, c.C * c.K), *bias = f32(c.bias, c.C);
            float *st = c.st ? f32(c.st, S) : NULL, *y = fnan(BT * c.C);
            double *yr = malloc((size_t)BT * c.C * sizeof *yr);
            conv_ref(&c, yr, NULL);
            be->conv1d_causal(be->ctx, y, x, c.ldx, w, bias, st, NULL, c.B, c.T, c.C, c.K, c.silu);
            double e = rel_d(y, yr, BT, c.C, c.C, c.C);
            CHECK_MSG(e < 1e-6, "conv fwd B=%ld T=%ld C=%ld K=%ld v=%d: %.3e", (long)c.B, (long)c.T,
                      (long)c.C, (long)c.K, v, e);
            if (st) { /* the state after = the last K-1 inputs (state then x) */
                double worst = 0;
                for (int64_t b = 0; b < c.B; b++)
                    for (int64_t i = 0; i < c.K - 1; i++)
                        for (int64_t ch = 0; ch < c.C; ch++) {
                            int64_t s = c.T - c.K + 1 + i;
                            double want = s >= 0 ? c.x[(b * c.T + s) * c.ldx + ch]
                                                 : c.st[(b * (c.K - 1) + c.K - 1 + s) * c.C + ch];
                            worst = fmax(worst, fabs(st[(b * (c.K - 1) + i) * c.C + ch] - want));
                        }
                CHECK_MSG(worst == 0, "conv state after: %.3e", worst);
                /* step by step from the same initial state gives the same y */
                float *st2 = f32(c.st, S), *ys = fnan(c.B * c.C), *xs = fnan(c.B * c.ldx);
                double es = 0;
                for (int64_t t = 0; t < c.T; t++) {
                    for (int64_t b = 0; b < c.B; b++)
                        memcpy(xs + b * c.ldx, x + (b * c.T + t) * c.ldx, (size_t)c.ldx * sizeof *xs);
                    be->conv1d_causal_step(be->ctx, ys, xs, c.ldx, w, bias, st2, NULL, c.B, c.C,
                                           c.K, c.silu);
                    for (int64_t b = 0; b < c.B; b++)
                        es = fmax(es, rel_d(ys + b * c.C, yr + (b * c.T + t) * c.C, 1, c.C, c.C, c.C));
                }
                CHECK_MSG(es < 1e-6, "conv step vs ref: %.3e", es);
                CHECK(rel_f(st2, st, 1, S, S, S) == 0);
                free(st2), free(ys), free(xs);
            } else if (c.T * c.C < 3000) { /* backward */
                float *dx = fnan(BT * c.ldx), *dw = calloc((size_t)(c.C * c.K), 4);
                float *db = calloc((size_t)c.C, 4), *dy = f32(c.r, BT * c.C);
                be->conv1d_causal_bwd(be->ctx, dx, dw, db, dy, x, c.ldx, w, bias, c.B, c.T, c.C,
                                      c.K, c.silu);
                check_grad("conv dx", conv_loss, &c, c.x, BT, c.C, c.ldx, dx, c.ldx);
                check_grad("conv dw", conv_loss, &c, c.w, 1, c.C * c.K, 0, dw, 0);
                check_grad("conv dbias", conv_loss, &c, c.bias, 1, c.C, 0, db, 0);
                CHECK(isnan(dx[c.C])); /* columns past C untouched */
                free(dx), free(dw), free(db), free(dy);
            }
            free(x), free(w), free(bias), free(st), free(y), free(yr);
            free(c.x), free(c.w), free(c.bias), free(c.r), free(c.st);
        }
}

/* ================= ssm_scan (Mamba-1) ================= */
struct scan_case {
    int64_t B, T, D, N, ldbc, ldz;
    int gate, skip, has_bias;
    double *u, *dl, *bias, *Alog, *bc, *Dk, *z, *r; /* bc: B at +1, C at +1+N */
};
static void scan_ref(const struct scan_case *c, double *y, double *hfin) {
    double *h = malloc((size_t)c->N * sizeof *h);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t d = 0; d < c->D; d++) {
            for (int64_t n = 0; n < c->N; n++) h[n] = 0;
            for (int64_t t = 0; t < c->T; t++) {
                int64_t r = b * c->T + t;
                double dt = sp(c->dl[r * c->D + d] + (c->has_bias ? c->bias[d] : 0));
                double u = c->u[r * c->D + d], acc = 0;
                const double *Bm = c->bc + r * c->ldbc + 1, *Cm = Bm + c->N;
                for (int64_t n = 0; n < c->N; n++) {
                    h[n] = exp(-dt * exp(c->Alog[d * c->N + n])) * h[n] + dt * Bm[n] * u;
                    acc += Cm[n] * h[n];
                }
                if (c->skip) acc += c->Dk[d] * u;
                if (c->gate) acc *= silu(c->z[r * c->ldz + 1 + d]);
                y[r * c->D + d] = acc;
            }
            if (hfin)
                for (int64_t n = 0; n < c->N; n++) hfin[(b * c->D + d) * c->N + n] = h[n];
        }
    free(h);
}
static double scan_loss(void *p) {
    struct scan_case *c = p;
    int64_t n = c->B * c->T * c->D;
    double *y = malloc((size_t)n * sizeof *y), L = 0;
    scan_ref(c, y, NULL);
    for (int64_t i = 0; i < n; i++) L += c->r[i] * y[i];
    free(y);
    return L;
}
static void scan_alloc(struct scan_case *c) {
    const int64_t BT = c->B * c->T;
    c->ldbc = 2 * c->N + 3, c->ldz = c->D + 2;
    c->u = dvec(BT * c->D, -1, 1), c->dl = dvec(BT * c->D, -2, 1), c->bias = dvec(c->D, -1, 0.5);
    c->Alog = dvec(c->D * c->N, -1, 1.5), c->bc = dvec(BT * c->ldbc, -1, 1);
    c->Dk = dvec(c->D, -1, 1), c->z = dvec(BT * c->ldz, -2, 2), c->r = dvec(BT * c->D, -1, 1);
}
static void scan_free(struct scan_case *c) {
    free(c->u), free(c->dl), free(c->bias), free(c->Alog), free(c->bc), free(c->Dk), free(c->z),
        free(c->r);
}
struct scan_f { float *u, *dl, *bias, *Alog, *bc, *Dk, *z; struct lmc_ssm_io io; };
static void scan_f32(struct scan_f *f, const struct scan_case *c) {
    const int64_t BT = c->B * c->T;
    f->u = f32(c->u, BT * c->D), f->dl = f32(c->dl, BT * c->D), f->bias = f32(c->bias, c->D);
    f->Alog = f32(c->Alog, c->D * c->N), f->bc = f32(c->bc, BT * c->ldbc);
    f->Dk = f32(c->Dk, c->D), f->z = f32(c->z, BT * c->ldz);
    f->io = (struct lmc_ssm_io){f->u, f->dl, c->has_bias ? f->bias : NULL, f->Alog, f->bc + 1,
                                f->bc + 1 + c->N, c->ldbc, c->skip ? f->Dk : NULL,
                                c->gate ? f->z + 1 : NULL, c->ldz};
}
static void scan_f32_free(struct scan_f *f) {
    free(f->u), free(f->dl), free(f->bias), free(f->Alog), free(f->bc), free(f->Dk), free(f->z);
}

static void test_scan(struct lmc_backend *be) {
    const int64_t shapes[][4] = {{1, 1, 1, 1}, {2, 7, 13, 5}, {1, 33, 19, 16}, {3, 9, 8, 3},
                                 {1, 65, 37, 8}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int v = 0; v < 4; v++) {
            struct scan_case c = {shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3],
                                  0, 0, v & 1, (v & 2) != 0, v != 3, NULL, NULL, NULL, NULL,
                                  NULL, NULL, NULL, NULL};
            scan_alloc(&c);
            const int64_t BT = c.B * c.T;
            struct scan_f f;
            scan_f32(&f, &c);
            double *yr = malloc((size_t)(BT * c.D) * sizeof *yr);
            double *hr = malloc((size_t)(c.B * c.D * c.N) * sizeof *hr);
            scan_ref(&c, yr, hr);
            float *y = fnan(BT * c.D), *st = calloc((size_t)(c.B * c.D * c.N), 4);
            be->ssm_scan(be->ctx, y, &f.io, v & 1 ? st : NULL, NULL, c.B, c.T, c.D, c.N);
            double e = rel_d(y, yr, BT, c.D, c.D, c.D);
            CHECK_MSG(e < 1e-5, "scan fwd B=%ld T=%ld D=%ld N=%ld v=%d: %.3e", (long)c.B, (long)c.T,
                      (long)c.D, (long)c.N, v, e);
            if (v & 1) {
                double es = rel_d(st, hr, 1, c.B * c.D * c.N, 0, 0);
                CHECK_MSG(es < 1e-5, "scan final state: %.3e", es);
            }
            if (BT * c.D * c.N < 20000) {
                float *dy = f32(c.r, BT * c.D), *du = fnan(BT * c.D), *ddl = fnan(BT * c.D);
                float *dbc = fnan(BT * c.ldbc), *dz = fnan(BT * c.ldz);
                float *dbias = calloc((size_t)c.D, 4), *dA = calloc((size_t)(c.D * c.N), 4);
                float *dD = calloc((size_t)c.D, 4);
                struct lmc_ssm_grads g = {du, ddl, dbc + 1, dbc + 1 + c.N, dz + 1, dbias, dA, dD};
                be->ssm_scan_bwd(be->ctx, &g, dy, &f.io, c.B, c.T, c.D, c.N);
                check_grad("scan du", scan_loss, &c, c.u, BT, c.D, c.D, du, c.D);
                check_grad("scan ddelta", scan_loss, &c, c.dl, BT, c.D, c.D, ddl, c.D);
                check_grad("scan dB", scan_loss, &c, c.bc + 1, BT, c.N, c.ldbc, dbc + 1, c.ldbc);
                check_grad("scan dC", scan_loss, &c, c.bc + 1 + c.N, BT, c.N, c.ldbc, dbc + 1 + c.N,
                           c.ldbc);
                if (c.T > 1) /* one token from a zero state: A has no effect */
                    check_grad("scan dA_log", scan_loss, &c, c.Alog, 1, c.D * c.N, 0, dA, 0);
                else
                    CHECK(dA[0] == 0);
                if (c.has_bias) check_grad("scan ddelta_bias", scan_loss, &c, c.bias, 1, c.D, 0, dbias, 0);
                if (c.skip) check_grad("scan dD", scan_loss, &c, c.Dk, 1, c.D, 0, dD, 0);
                if (c.gate) check_grad("scan dz", scan_loss, &c, c.z + 1, BT, c.D, c.ldz, dz + 1, c.ldz);
                CHECK(isnan(dbc[0]) && isnan(dz[0])); /* outside the operands: untouched */
                free(dy), free(du), free(ddl), free(dbc), free(dz), free(dbias), free(dA), free(dD);
            }
            free(yr), free(hr), free(y), free(st);
            scan_f32_free(&f);
            scan_free(&c);
        }
}

/* prefill over T tokens == T decode steps == prefill split in two parts */
static void test_scan_prefill_vs_step(struct lmc_backend *be) {
    const int64_t lens[] = {1, 7, 1000, 4097};
    for (size_t li = 0; li < 4; li++) {
        struct scan_case c = {1, lens[li], 37, 16, 0, 0, 1, 1, 1, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL, NULL};
        scan_alloc(&c);
        struct scan_f f;
        scan_f32(&f, &c);
        const int64_t T = c.T, D = c.D, N = c.N;
        float *y = fnan(T * D), *ys = fnan(T * D), *y2 = fnan(T * D);
        float *st = calloc((size_t)(D * N), 4), *sts = calloc((size_t)(D * N), 4);
        float *st2 = calloc((size_t)(D * N), 4);
        be->ssm_scan(be->ctx, y, &f.io, st, NULL, 1, T, D, N);
        for (int64_t t = 0; t < T; t++) {
            struct lmc_ssm_io io = f.io;
            io.u += t * D, io.delta += t * D, io.Bm += t * c.ldbc, io.Cm += t * c.ldbc;
            io.z += t * c.ldz;
            be->ssm_scan_step(be->ctx, ys + t * D, &io, sts, NULL, 1, D, N);
        }
        int64_t t1 = T / 3;
        be->ssm_scan(be->ctx, y2, &f.io, st2, NULL, 1, t1, D, N);
        struct lmc_ssm_io io = f.io;
        io.u += t1 * D, io.delta += t1 * D, io.Bm += t1 * c.ldbc, io.Cm += t1 * c.ldbc;
        io.z += t1 * c.ldz;
        be->ssm_scan(be->ctx, y2 + t1 * D, &io, st2, NULL, 1, T - t1, D, N);
        double *yr = malloc((size_t)(T * D) * sizeof *yr);
        scan_ref(&c, yr, NULL);
        double e1 = rel_f(ys, y, T, D, D, D), e2 = rel_f(st, sts, 1, D * N, 0, 0);
        double e3 = rel_f(y2, y, T, D, D, D), e4 = rel_d(y, yr, T, D, D, D);
        CHECK_MSG(e1 <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5,
                  "scan prefill vs step T=%ld: y %.3e state %.3e split %.3e", (long)T, e1, e2, e3);
        CHECK_MSG(e4 < 1e-5, "scan T=%ld vs float64: %.3e", (long)T, e4);
        printf("  scan T=%ld: step vs prefill %.2e, state %.2e, split %.2e, vs float64 %.2e\n",
               (long)T, e1, e2, e3, e4);
        free(y), free(ys), free(y2), free(st), free(sts), free(st2), free(yr);
        scan_f32_free(&f);
        scan_free(&c);
    }
}

/* ================= ssd_chunk (Mamba-2) ================= */
struct ssd_case {
    struct lmc_ssd_shape s;
    int64_t ldx, lddt;
    int skip, clamp;
    double *xbc, *dt, *dtb, *Alog, *Dk, *r; /* xbc: x | B | C per row */
    double dt_min, dt_max;
};
static double ssd_dtv(const struct ssd_case *c, int64_t r, int64_t h) {
    double v = sp(c->dt[r * c->lddt + h] + c->dtb[h]);
    return v < c->dt_min ? c->dt_min : v > c->dt_max ? c->dt_max : v;
}
static void ssd_ref(const struct ssd_case *c, double *y, double *sfin) {
    const struct lmc_ssd_shape *s = &c->s;
    const int64_t H = s->H, P = s->P, N = s->N, HP = H * P, GN = s->G * N;
    double *S = malloc((size_t)(P * N) * sizeof *S);
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t g = h / (H / s->G);
            for (int64_t k = 0; k < P * N; k++) S[k] = 0;
            for (int64_t t = 0; t < s->T; t++) {
                const int64_t r = b * s->T + t;
                const double dt = ssd_dtv(c, r, h), a = exp(-dt * exp(c->Alog[h]));
                const double *x = c->xbc + r * c->ldx + h * P, *Bm = c->xbc + r * c->ldx + HP + g * N;
                const double *Cm = Bm + GN;
                for (int64_t p = 0; p < P; p++) {
                    double acc = 0;
                    for (int64_t n = 0; n < N; n++) {
                        S[p * N + n] = a * S[p * N + n] + dt * x[p] * Bm[n];
                        acc += S[p * N + n] * Cm[n];
                    }
                    y[r * HP + h * P + p] = acc + (c->skip ? c->Dk[h] * x[p] : 0);
                }
            }
            if (sfin) memcpy(sfin + (b * H + h) * P * N, S, (size_t)(P * N) * sizeof *S);
        }
    free(S);
}
static double ssd_loss(void *p) {
    struct ssd_case *c = p;
    int64_t n = c->s.B * c->s.T * c->s.H * c->s.P;
    double *y = malloc((size_t)n * sizeof *y), L = 0;
    ssd_ref(c, y, NULL);
    for (int64_t i = 0; i < n; i++) L += c->r[i] * y[i];
    free(y);
    return L;
}
static void ssd_alloc(struct ssd_case *c) {
    const struct lmc_ssd_shape *s = &c->s;
    const int64_t BT = s->B * s->T;
    c->ldx = s->H * s->P + 2 * s->G * s->N + 2, c->lddt = s->H + 1;
    c->xbc = dvec(BT * c->ldx, -1, 1), c->dt = dvec(BT * c->lddt, -2.5, 0.5);
    c->dtb = dvec(s->H, -1, 0.5), c->Alog = dvec(s->H, -1, 1.5), c->Dk = dvec(s->H, -1, 1);
    c->r = dvec(BT * s->H * s->P, -1, 1);
    c->dt_min = c->clamp ? 0.15 : 0.0, c->dt_max = c->clamp ? 0.9 : INFINITY;
}
static void ssd_free(struct ssd_case *c) {
    free(c->xbc), free(c->dt), free(c->dtb), free(c->Alog), free(c->Dk), free(c->r);
}
struct ssd_f { float *xbc, *dt, *dtb, *Alog, *Dk; struct lmc_ssd_io io; };
static void ssd_f32(struct ssd_f *f, const struct ssd_case *c) {
    const struct lmc_ssd_shape *s = &c->s;
    const int64_t BT = s->B * s->T, HP = s->H * s->P;
    f->xbc = f32(c->xbc, BT * c->ldx), f->dt = f32(c->dt, BT * c->lddt);
    f->dtb = f32(c->dtb, s->H), f->Alog = f32(c->Alog, s->H), f->Dk = f32(c->Dk, s->H);
    f->io = (struct lmc_ssd_io){f->xbc, f->xbc + HP, f->xbc + HP + s->G * s->N, c->ldx, f->dt,
                                c->lddt, f->dtb, f->Alog, c->skip ? f->Dk : NULL,
                                (float)c->dt_min, (float)c->dt_max};
}
static void ssd_f32_free(struct ssd_f *f) {
    free(f->xbc), free(f->dt), free(f->dtb), free(f->Alog), free(f->Dk);
}
static struct lmc_ssd_io ssd_at(const struct lmc_ssd_io *io, int64_t row) {
    struct lmc_ssd_io o = *io;
    o.x += row * o.ldx, o.Bm += row * o.ldx, o.Cm += row * o.ldx, o.dt += row * o.lddt;
    return o;
}

static void test_ssd(struct lmc_backend *be) {
    /* B, T, H, P, G, N, chunk */
    const int64_t shapes[][7] = {{1, 1, 1, 1, 1, 1, 1}, {2, 7, 4, 3, 2, 5, 4},
                                 {1, 37, 6, 5, 3, 7, 8}, {2, 19, 3, 9, 1, 16, 16},
                                 {1, 50, 8, 16, 1, 16, 16}, {1, 23, 2, 4, 2, 3, 5}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int v = 0; v < 3; v++) {
            struct ssd_case c = {{shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3],
                                  shapes[si][4], shapes[si][5], shapes[si][6]},
                                 0, 0, v != 1, v == 2, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0};
            ssd_alloc(&c);
            const struct lmc_ssd_shape *s = &c.s;
            const int64_t BT = s->B * s->T, HP = s->H * s->P, PN = s->P * s->N;
            struct ssd_f f;
            ssd_f32(&f, &c);
            double *yr = malloc((size_t)(BT * HP) * sizeof *yr);
            double *sr = malloc((size_t)(s->B * s->H * PN) * sizeof *sr);
            ssd_ref(&c, yr, sr);
            float *y = fnan(BT * HP), *st = calloc((size_t)(s->B * s->H * PN), 4);
            be->ssd_chunk(be->ctx, y, &f.io, st, NULL, s);
            double e = rel_d(y, yr, BT, HP, HP, HP), es = rel_d(st, sr, 1, s->B * s->H * PN, 0, 0);
            CHECK_MSG(e < 1e-5 && es < 1e-5, "ssd fwd shape %zu v=%d: y %.3e state %.3e", si, v, e, es);
            if (BT * HP * s->N < 40000) {
                float *dy = f32(c.r, BT * HP), *dxbc = fnan(BT * c.ldx), *ddt = fnan(BT * c.lddt);
                float *dtb = calloc((size_t)s->H, 4), *dA = calloc((size_t)s->H, 4);
                float *dD = calloc((size_t)s->H, 4);
                struct lmc_ssd_grads g = {dxbc, dxbc + HP, dxbc + HP + s->G * s->N, ddt, dtb, dA, dD};
                be->ssd_chunk_bwd(be->ctx, &g, dy, &f.io, s);
                const int64_t GN = s->G * s->N;
                check_grad("ssd dx", ssd_loss, &c, c.xbc, BT, HP, c.ldx, dxbc, c.ldx);
                check_grad("ssd dB", ssd_loss, &c, c.xbc + HP, BT, GN, c.ldx, dxbc + HP, c.ldx);
                check_grad("ssd dC", ssd_loss, &c, c.xbc + HP + GN, BT, GN, c.ldx, dxbc + HP + GN, c.ldx);
                check_grad("ssd ddt", ssd_loss, &c, c.dt, BT, s->H, c.lddt, ddt, c.lddt);
                check_grad("ssd ddt_bias", ssd_loss, &c, c.dtb, 1, s->H, 0, dtb, 0);
                if (s->T > 1) check_grad("ssd dA_log", ssd_loss, &c, c.Alog, 1, s->H, 0, dA, 0);
                else CHECK(dA[0] == 0);
                if (c.skip) check_grad("ssd dD", ssd_loss, &c, c.Dk, 1, s->H, 0, dD, 0);
                CHECK(isnan(dxbc[c.ldx - 1]) && isnan(ddt[s->H]));
                free(dy), free(dxbc), free(ddt), free(dtb), free(dA), free(dD);
            }
            free(yr), free(sr), free(y), free(st);
            ssd_f32_free(&f);
            ssd_free(&c);
        }
}

/* chunked prefill == step-by-step, at lengths 1, 7, 1000, 4097, every
 * length 1..2*chunk+1 and every split point of a chunk (prefill of the
 * first k tokens, then of the rest from the carried state) */
static void test_ssd_prefill_vs_step(struct lmc_backend *be) {
    const int64_t lens[] = {1, 7, 1000, 4097};
    for (size_t li = 0; li < 4; li++) {
        struct ssd_case c = {{1, lens[li], 4, 16, 2, 16, 64}, 0, 0, 1, 0, NULL, NULL, NULL,
                             NULL, NULL, NULL, 0, 0};
        ssd_alloc(&c);
        struct ssd_f f;
        ssd_f32(&f, &c);
        const int64_t T = c.s.T, HP = c.s.H * c.s.P, SS = c.s.H * c.s.P * c.s.N;
        float *y = fnan(T * HP), *ys = fnan(T * HP), *st = calloc((size_t)SS, 4);
        float *sts = calloc((size_t)SS, 4);
        be->ssd_chunk(be->ctx, y, &f.io, st, NULL, &c.s);
        struct lmc_ssd_shape one = c.s;
        one.T = 1;
        for (int64_t t = 0; t < T; t++) {
            struct lmc_ssd_io io = ssd_at(&f.io, t);
            be->ssd_step(be->ctx, ys + t * HP, &io, sts, NULL, &one);
        }
        double *yr = malloc((size_t)(T * HP) * sizeof *yr);
        ssd_ref(&c, yr, NULL);
        double e1 = rel_f(y, ys, T, HP, HP, HP), e2 = rel_f(st, sts, 1, SS, 0, 0);
        double e3 = rel_d(y, yr, T, HP, HP, HP);
        CHECK_MSG(e1 <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5,
                  "ssd prefill vs step T=%ld: y %.3e state %.3e float64 %.3e", (long)T, e1, e2, e3);
        printf("  ssd T=%ld chunk 64: prefill vs step %.2e, state %.2e, vs float64 %.2e\n",
               (long)T, e1, e2, e3);
        free(y), free(ys), free(st), free(sts), free(yr);
        ssd_f32_free(&f);
        ssd_free(&c);
    }
    /* chunk boundaries */
    const int64_t L = 8, T = 2 * L + 1;
    struct ssd_case c = {{1, T, 3, 5, 1, 7, L}, 0, 0, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0};
    ssd_alloc(&c);
    struct ssd_f f;
    ssd_f32(&f, &c);
    const int64_t HP = c.s.H * c.s.P, SS = c.s.H * c.s.P * c.s.N;
    double *yr = malloc((size_t)(T * HP) * sizeof *yr);
    ssd_ref(&c, yr, NULL);
    double worst_len = 0, worst_split = 0;
    for (int64_t len = 1; len <= T; len++) { /* every length: the last chunk ends anywhere */
        struct lmc_ssd_shape s = c.s;
        s.T = len;
        float *y = fnan(len * HP);
        be->ssd_chunk(be->ctx, y, &f.io, NULL, NULL, &s);
        worst_len = fmax(worst_len, rel_d(y, yr, len, HP, HP, HP));
        free(y);
    }
    for (int64_t k = 1; k < T; k++) { /* every split: the carried state enters mid-chunk */
        struct lmc_ssd_shape s1 = c.s, s2 = c.s;
        s1.T = k, s2.T = T - k;
        float *y = fnan(T * HP), *st = calloc((size_t)SS, 4);
        be->ssd_chunk(be->ctx, y, &f.io, st, NULL, &s1);
        struct lmc_ssd_io io = ssd_at(&f.io, k);
        be->ssd_chunk(be->ctx, y + k * HP, &io, st, NULL, &s2);
        worst_split = fmax(worst_split, rel_d(y, yr, T, HP, HP, HP));
        free(y), free(st);
    }
    CHECK_MSG(worst_len < 1e-5 && worst_split < 1e-5, "ssd chunk boundaries: len %.3e split %.3e",
              worst_len, worst_split);
    printf("  ssd chunk %ld, every length 1..%ld: %.2e; every split point: %.2e\n", (long)L,
           (long)T, worst_len, worst_split);
    free(yr);
    ssd_f32_free(&f);
    ssd_free(&c);
}

/* slots: the state of sequence b lives at slots[b] of a pool */
static void test_slots(struct lmc_backend *be) {
    struct ssd_case c = {{3, 1, 2, 3, 1, 4, 4}, 0, 0, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0};
    ssd_alloc(&c);
    struct ssd_f f;
    ssd_f32(&f, &c);
    const int64_t SS = 2 * 3 * 4, HP = 6;
    int32_t slots[3] = {4, 0, 2};
    float *pool = calloc((size_t)(5 * SS), 4), *flat = calloc((size_t)(3 * SS), 4);
    double *init = dvec(5 * SS, -1, 1);
    for (int64_t i = 0; i < 5 * SS; i++) pool[i] = (float)init[i];
    for (int b = 0; b < 3; b++) memcpy(flat + b * SS, pool + slots[b] * SS, (size_t)SS * 4);
    float *y1 = fnan(3 * HP), *y2 = fnan(3 * HP);
    be->ssd_step(be->ctx, y1, &f.io, pool, slots, &c.s);
    be->ssd_step(be->ctx, y2, &f.io, flat, NULL, &c.s);
    double e = rel_f(y1, y2, 3, HP, HP, HP), es = 0;
    for (int b = 0; b < 3; b++) es = fmax(es, rel_f(pool + slots[b] * SS, flat + b * SS, 1, SS, 0, 0));
    CHECK(e == 0 && es == 0);
    CHECK(pool[SS] == (float)init[SS] && pool[3 * SS + 1] == (float)init[3 * SS + 1]);
    free(pool), free(flat), free(init), free(y1), free(y2);
    ssd_f32_free(&f);
    ssd_free(&c);
}

/* batched prefill through slots == each sequence alone from its own state
 * (conv, scan, SSD; B = 3 sequences of T = 9 into slots {4, 0, 2} of 5) */
static void test_slots_prefill(struct lmc_backend *be) {
    const int64_t B = 3, T = 9, NS = 5;
    const int32_t slots[3] = {4, 0, 2};
    { /* conv */
        const int64_t C = 11, K = 4, ldx = C + 2, SS = (K - 1) * C;
        double *xd = dvec(B * T * ldx, -1, 1), *wd = dvec(C * K, -1, 1), *bd = dvec(C, -1, 1), *pd = dvec(NS * SS, -1, 1);
        float *x = f32(xd, B * T * ldx), *w = f32(wd, C * K), *bias = f32(bd, C), *pool = f32(pd, NS * SS);
        float *y = fnan(B * T * C), *y1 = fnan(T * C), *st = malloc((size_t)SS * 4);
        double e = 0, es = 0;
        float *pool0 = f32(pd, NS * SS);
        be->conv1d_causal(be->ctx, y, x, ldx, w, bias, pool, slots, B, T, C, K, 1);
        for (int64_t b = 0; b < B; b++) {
            memcpy(st, pool0 + slots[b] * SS, (size_t)SS * 4);
            be->conv1d_causal(be->ctx, y1, x + b * T * ldx, ldx, w, bias, st, NULL, 1, T, C, K, 1);
            e = fmax(e, rel_f(y + b * T * C, y1, T, C, C, C));
            es = fmax(es, rel_f(pool + slots[b] * SS, st, 1, SS, 0, 0));
        }
        CHECK_MSG(e == 0 && es == 0 && pool[SS] == pool0[SS], "conv slots prefill: %.3e %.3e", e, es);
        free(xd), free(wd), free(bd), free(pd), free(x), free(w), free(bias), free(pool), free(pool0), free(y), free(y1), free(st);
    }
    { /* Mamba-1 scan */
        struct scan_case c = {B, T, 13, 5, 0, 0, 1, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
        scan_alloc(&c);
        struct scan_f f;
        scan_f32(&f, &c);
        const int64_t D = c.D, N = c.N, SS = D * N;
        double *pd = dvec(NS * SS, -1, 1);
        float *pool = f32(pd, NS * SS), *pool0 = f32(pd, NS * SS), *y = fnan(B * T * D), *y1 = fnan(T * D);
        float *st = malloc((size_t)SS * 4);
        be->ssm_scan(be->ctx, y, &f.io, pool, slots, B, T, D, N);
        double e = 0, es = 0;
        for (int64_t b = 0; b < B; b++) {
            struct lmc_ssm_io io = f.io;
            io.u += b * T * D, io.delta += b * T * D, io.Bm += b * T * c.ldbc, io.Cm += b * T * c.ldbc;
            io.z += b * T * c.ldz;
            memcpy(st, pool0 + slots[b] * SS, (size_t)SS * 4);
            be->ssm_scan(be->ctx, y1, &io, st, NULL, 1, T, D, N);
            e = fmax(e, rel_f(y + b * T * D, y1, T, D, D, D));
            es = fmax(es, rel_f(pool + slots[b] * SS, st, 1, SS, 0, 0));
        }
        CHECK_MSG(e == 0 && es == 0 && pool[SS] == pool0[SS], "scan slots prefill: %.3e %.3e", e, es);
        free(pd), free(pool), free(pool0), free(y), free(y1), free(st);
        scan_f32_free(&f);
        scan_free(&c);
    }
    { /* Mamba-2 SSD */
        struct ssd_case c = {{B, T, 4, 3, 2, 5, 4}, 0, 0, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0};
        ssd_alloc(&c);
        struct ssd_f f;
        ssd_f32(&f, &c);
        const int64_t HP = 12, SS = 4 * 3 * 5;
        double *pd = dvec(NS * SS, -1, 1);
        float *pool = f32(pd, NS * SS), *pool0 = f32(pd, NS * SS), *y = fnan(B * T * HP), *y1 = fnan(T * HP);
        float *st = malloc((size_t)SS * 4);
        be->ssd_chunk(be->ctx, y, &f.io, pool, slots, &c.s);
        struct lmc_ssd_shape one = c.s;
        one.B = 1;
        double e = 0, es = 0;
        for (int64_t b = 0; b < B; b++) {
            struct lmc_ssd_io io = ssd_at(&f.io, b * T);
            memcpy(st, pool0 + slots[b] * SS, (size_t)SS * 4);
            be->ssd_chunk(be->ctx, y1, &io, st, NULL, &one);
            e = fmax(e, rel_f(y + b * T * HP, y1, T, HP, HP, HP));
            es = fmax(es, rel_f(pool + slots[b] * SS, st, 1, SS, 0, 0));
        }
        CHECK_MSG(e == 0 && es == 0 && pool[SS] == pool0[SS], "ssd slots prefill: %.3e %.3e", e, es);
        free(pd), free(pool), free(pool0), free(y), free(y1), free(st);
        ssd_f32_free(&f);
        ssd_free(&c);
    }
}

/* ================= rmsnorm_gated ================= */
struct rg_case { int64_t M, C, group, ldz; int gate; double *x, *z, *w, *r; };
static void rg_ref(const struct rg_case *c, double *y) {
    for (int64_t m = 0; m < c->M; m++)
        for (int64_t g0 = 0; g0 < c->C; g0 += c->group) {
            double ss = 0;
            for (int64_t i = g0; i < g0 + c->group; i++) {
                double v = c->x[m * c->C + i] * (c->gate ? silu(c->z[m * c->ldz + i]) : 1);
                ss += v * v;
            }
            double r = 1 / sqrt(ss / (double)c->group + 1e-5);
            for (int64_t i = g0; i < g0 + c->group; i++)
                y[m * c->C + i] = c->x[m * c->C + i] * (c->gate ? silu(c->z[m * c->ldz + i]) : 1) *
                                  r * c->w[i];
        }
}
static double rg_loss(void *p) {
    struct rg_case *c = p;
    double *y = malloc((size_t)(c->M * c->C) * sizeof *y), L = 0;
    rg_ref(c, y);
    for (int64_t i = 0; i < c->M * c->C; i++) L += c->r[i] * y[i];
    free(y);
    return L;
}
static void test_rmsnorm_gated(struct lmc_backend *be) {
    const int64_t shapes[][3] = {{1, 1, 1}, {3, 15, 5}, {7, 33, 33}, {2, 128, 32}, {5, 21, 7}};
    for (size_t si = 0; si < 5; si++)
        for (int gate = 0; gate < 2; gate++) {
            struct rg_case c = {shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][1] + 4, gate,
                                NULL, NULL, NULL, NULL};
            c.x = dvec(c.M * c.C, -1, 1), c.z = dvec(c.M * c.ldz, -2, 2), c.w = dvec(c.C, -1, 1);
            c.r = dvec(c.M * c.C, -1, 1);
            float *x = f32(c.x, c.M * c.C), *z = f32(c.z, c.M * c.ldz), *w = f32(c.w, c.C);
            float *y = fnan(c.M * c.C);
            double *yr = malloc((size_t)(c.M * c.C) * sizeof *yr);
            rg_ref(&c, yr);
            be->rmsnorm_gated(be->ctx, y, x, gate ? z : NULL, c.ldz, w, c.M, c.C, c.group, 1e-5f);
            double e = rel_d(y, yr, c.M, c.C, c.C, c.C);
            CHECK_MSG(e < 1e-6, "rmsnorm_gated M=%ld C=%ld g=%ld gate=%d: %.3e", (long)c.M,
                      (long)c.C, (long)c.group, gate, e);
            memcpy(y, x, (size_t)(c.M * c.C) * 4); /* in place */
            be->rmsnorm_gated(be->ctx, y, y, gate ? z : NULL, c.ldz, w, c.M, c.C, c.group, 1e-5f);
            CHECK(rel_d(y, yr, c.M, c.C, c.C, c.C) < 1e-6);
            float *dy = f32(c.r, c.M * c.C), *dx = fnan(c.M * c.C), *dz = fnan(c.M * c.ldz);
            float *dw = calloc((size_t)c.C, 4);
            be->rmsnorm_gated_bwd(be->ctx, dx, dz, dw, dy, x, gate ? z : NULL, c.ldz, w, c.M, c.C,
                                  c.group, 1e-5f);
            check_grad("rmsnorm_gated dx", rg_loss, &c, c.x, c.M, c.C, c.C, dx, c.C);
            check_grad("rmsnorm_gated dw", rg_loss, &c, c.w, 1, c.C, 0, dw, 0);
            if (gate) check_grad("rmsnorm_gated dz", rg_loss, &c, c.z, c.M, c.C, c.ldz, dz, c.ldz);
            free(x), free(z), free(w), free(y), free(yr), free(dy), free(dx), free(dz), free(dw);
            free(c.x), free(c.z), free(c.w), free(c.r);
        }
}

int main(void) {
    for (int threads = 1; threads <= 3; threads += 2) {
        struct lmc_backend be;
        lmc_err err;
        if (lmc_backend_cpu_init(&be, threads, &err) != LMC_OK) {
            fprintf(stderr, "cpu backend: %s\n", err.msg);
            return 1;
        }
        printf("threads %d\n", threads);
        test_conv(&be);
        test_scan(&be);
        test_ssd(&be);
        test_slots(&be);
        test_slots_prefill(&be);
        test_rmsnorm_gated(&be);
        if (threads == 1) {
            test_scan_prefill_vs_step(&be);
            test_ssd_prefill_vs_step(&be);
        }
        lmc_backend_cpu_free(&be);
    }
    return test_finish("test_ssm_ops");
}
