/* test_muon_bf16.c — Muon's bf16 Newton–Schulz on the CPU (ops/cpu/muon_bf16.c):
 *  - the symmetric half-product (lmc_cpu_sym_gemm_bf16) against a float64
 *    product of the bf16-rounded operands on odd shapes, both layouts, and
 *    exactly symmetric;
 *  - the bf16 iteration against a float64 Newton–Schulz on odd wide and
 *    tall shapes (1 - cosine and relative error bounds), its output's
 *    singular values in torch's documented band (0.5, 1.5) and near the
 *    quintic's scalar map, as test_optim asserts for the fp32 path;
 *  - the backend's batched entry (a matrix per thread) = the per-matrix
 *    entry, bit for bit, momentum and parameters; the bf16 step against the
 *    fp32 step (lmc_muon_apply) on the same inputs;
 *  - through lmc_optim with bf16 forced: resume bit-exact, step_one = step;
 *    the default (auto) runs the fp32 iteration on the CPU;
 *  - `--muon-ns-dtype auto|bf16|f32` and its error, `--muon-ns-gram 0|1`;
 *  - the Gram-space iteration (newton_schulz_gram.c) against the float64
 *    plain one on odd rectangular shapes, both orientations, random and
 *    gradient-like (ill-conditioned) inputs; the bf16 entry ignoring
 *    ns_gram; the sensitivity to one-ulp input changes (printed). */
#include "test.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/optim_ops.h"
#include "train/optim.h"

#include <stdlib.h>
#include <unistd.h>

static struct lmc_backend cpu;

static float bf(float x) { return lmc_bf16_to_f32(lmc_f32_to_bf16(x)); }

static float *falloc(int64_t n) {
    float *p = aligned_alloc(64, (size_t)((n + 15) / 16 * 16) * sizeof(float));
    LMC_ASSERT(p);
    return p;
}

static void test_sym(void) {
    static const int sh[][2] = {{37, 101}, {129, 61}, {200, 333}, {5, 7}, {97, 96}};
    uint64_t seed = 11;
    for (size_t q = 0; q < sizeof sh / sizeof *sh; q++) {
        const int k = sh[q][0], K = sh[q][1];
        float *x = falloc((int64_t)k * K), *c = falloc((int64_t)k * k);
        for (int64_t i = 0; i < (int64_t)k * K; i++) x[i] = test_rand(&seed);
        void *ws = falloc((int64_t)LMC_MAX(lmc_cpu_muon_bf16_ws(k, K), lmc_cpu_muon_bf16_ws(K, k)));
        for (int layout = 0; layout < 2; layout++) {
            /* layout 0: C = X X^T, X (k, K); layout 1: C = X^T X, X (K, k) */
            if (!layout) lmc_cpu_sym_gemm_bf16(k, K, x, K, 1, x, 1, K, c, ws);
            else lmc_cpu_sym_gemm_bf16(k, K, x, 1, k, x, k, 1, c, ws);
            double worst = 0, big = 0;
            bool sym = true;
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) {
                    double r = 0;
                    for (int t = 0; t < K; t++) {
                        float a = layout ? x[(int64_t)t * k + i] : x[(int64_t)i * K + t];
                        float b = layout ? x[(int64_t)t * k + j] : x[(int64_t)j * K + t];
                        r += (double)bf(a) * bf(b);
                    }
                    worst = fmax(worst, fabs(c[i * k + j] - r));
                    big = fmax(big, fabs(r));
                    sym = sym && c[i * k + j] == c[j * k + i];
                }
            printf("  sym gemm bf16 %s %dx%d: max err %.2e of max %.2f, symmetric %s\n", layout ? "X^T X" : "X X^T",
                   k, K, worst, big, sym ? "yes" : "NO");
            CHECK_MSG(worst <= 2e-6 * big * sqrt((double)K), "%dx%d layout %d: %.3e", k, K, layout, worst);
            CHECK(sym);
        }
        free(x), free(c), free(ws);
    }
}

/* float64 Newton–Schulz of g (rows, cols) as torch.optim.Muon orders it */
static void ns_ref(const float *g, int64_t rows, int64_t cols, int steps, double *out) {
    const bool tr = rows > cols;
    const int64_t k = tr ? cols : rows, w = tr ? rows : cols;
    double *X = malloc((size_t)(k * w) * 8), *Y = malloc((size_t)(k * w) * 8), *A = malloc((size_t)(k * k) * 8),
           *B = malloc((size_t)(k * k) * 8), ss = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        double v = g[i];
        if (tr) X[(i % cols) * w + i / cols] = v;
        else X[i] = v;
        ss += v * v;
    }
    double nrm = fmax(sqrt(ss), 1e-7);
    for (int64_t i = 0; i < k * w; i++) X[i] /= nrm;
    for (int it = 0; it < steps; it++) {
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) {
                double r = 0;
                for (int64_t t = 0; t < w; t++) r += X[i * w + t] * X[j * w + t];
                A[i * k + j] = r;
            }
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) {
                double r = 0;
                for (int64_t t = 0; t < k; t++) r += A[i * k + t] * A[t * k + j];
                B[i * k + j] = -4.7750 * A[i * k + j] + 2.0315 * r;
            }
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < w; j++) {
                double r = 0;
                for (int64_t t = 0; t < k; t++) r += B[i * k + t] * X[t * w + j];
                Y[i * w + j] = 3.4445 * X[i * w + j] + r;
            }
        double *t = X;
        X = Y, Y = t;
    }
    for (int64_t i = 0; i < rows * cols; i++) out[i] = tr ? X[(i % cols) * w + i / cols] : X[i];
    free(X), free(Y), free(A), free(B);
}

static double quintic(double x, int steps) {
    for (int i = 0; i < steps; i++) x = 3.4445 * x - 4.7750 * x * x * x + 2.0315 * x * x * x * x * x;
    return x;
}

extern void dgesvd_(const char *, const char *, const int *, const int *, double *, const int *, double *,
                    double *, const int *, double *, const int *, double *, const int *, int *, size_t,
                    size_t);
static void singular_values(const double *x, int m, int n, double *s) {
    double *a = malloc((size_t)m * (size_t)n * sizeof *a), q, *w;
    memcpy(a, x, (size_t)m * (size_t)n * sizeof *a);
    int info, one = 1, lw = -1;
    dgesvd_("N", "N", &n, &m, a, &n, s, NULL, &one, NULL, &one, &q, &lw, &info, 1, 1);
    lw = (int)q + 1;
    w = malloc((size_t)lw * sizeof *w);
    dgesvd_("N", "N", &n, &m, a, &n, s, NULL, &one, NULL, &one, w, &lw, &info, 1, 1);
    CHECK(info == 0);
    free(a), free(w);
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* the bf16 iteration alone: momentum 0 (u = g), p = 0, decay 1, lr_adj -1 give p = NS(g) */
static void ns_bf16(const float *g, int64_t rows, int64_t cols, float *p) {
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    struct lmc_muon_step s = {.momentum = 0, .nesterov = 1, .ns_steps = 5, .ns_a = 3.4445f, .ns_b = -4.7750f,
                              .ns_c = 2.0315f, .ns_eps = 1e-7f, .decay_mul = 1, .grad_scale = 1, .ns_bf16 = 1};
    float *buf = falloc(k * w), *X = falloc(k * w), *Y = falloc(k * w), *A = falloc(k * k), *B = falloc(k * k);
    void *ws = falloc((int64_t)lmc_cpu_muon_bf16_ws(rows, cols));
    memset(buf, 0, (size_t)(k * w) * 4), memset(p, 0, (size_t)(k * w) * 4);
    lmc_muon_bf16_apply(p, g, buf, rows, cols, &s, -1.0f, X, Y, A, B, ws);
    free(buf), free(X), free(Y), free(A), free(B), free(ws);
}

/* the Gram-space iteration (newton_schulz_gram.c) against the float64 plain Newton–Schulz on odd rectangular
 * shapes, both orientations, random and ill-conditioned (low-rank plus noise) inputs */
static void ns_run(const float *g, int64_t rows, int64_t cols, bool bf16, bool gramsp, float *p) {
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    struct lmc_muon_step s = {.momentum = 0, .nesterov = 1, .ns_steps = 5, .ns_a = 3.4445f, .ns_b = -4.7750f,
                              .ns_c = 2.0315f, .ns_eps = 1e-7f, .decay_mul = 1, .lr_adj = -1, .grad_scale = 1,
                              .ns_bf16 = bf16, .ns_gram = gramsp};
    float *buf = falloc(k * w), *work = falloc(lmc_muon_work_floats(rows, cols));
    void *ws = falloc((int64_t)lmc_cpu_muon_bf16_ws(rows, cols));
    memset(buf, 0, (size_t)(k * w) * 4), memset(p, 0, (size_t)(k * w) * 4);
    if (!bf16) lmc_muon_apply(p, g, buf, rows, cols, &s, work);
    else {
        float *X = work, *Y = X + k * w, *A = Y + k * w, *B = A + k * k;
        lmc_muon_bf16_apply(p, g, buf, rows, cols, &s, -1.0f, X, Y, A, B, ws);
    }
    free(buf), free(work), free(ws);
}

/* the Gram iteration with a given restart period and precision, directly (fp32 takes X wide: a tall g is
 * transposed in and out) */
static void ns_gram_direct(const float *g, int64_t rows, int64_t cols, int restart, bool bf16, float *p) {
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols), n = k * w;
    const bool tr = !bf16 && rows > cols;
    struct lmc_muon_step s = {.ns_steps = 5, .ns_a = 3.4445f, .ns_b = -4.7750f, .ns_c = 2.0315f, .ns_eps = 1e-7f};
    float *X = falloc(n), *Y = falloc(n), *A = falloc(k * k), *P = falloc(k * k), *Q = falloc(k * k),
          *T = falloc(k * k);
    void *ws = falloc((int64_t)lmc_cpu_muon_bf16_ws(rows, cols));
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    for (int64_t i = 0; i < n; i++) X[tr ? (i % cols) * w + i / cols : i] = g[i] / (float)sqrt(ss);
    const float *o = lmc_ns_gram(X, Y, k, w, rows > cols && bf16, &s, restart, bf16, A, P, Q, T, bf16 ? ws : NULL);
    for (int64_t i = 0; i < n; i++) p[i] = o[tr ? (i % cols) * w + i / cols : i];
    free(X), free(Y), free(A), free(P), free(Q), free(T), free(ws);
}

static void ns_err(const float *p, const double *ref, int64_t n, double *cosd, double *rel) {
    double dot = 0, na = 0, nb = 0, worst = 0, big = 0;
    for (int64_t i = 0; i < n; i++) {
        dot += p[i] * ref[i], na += (double)p[i] * p[i], nb += ref[i] * ref[i];
        worst = fmax(worst, fabs(p[i] - ref[i])), big = fmax(big, fabs(ref[i]));
    }
    *cosd = 1 - dot / sqrt(na * nb), *rel = worst / big;
}

static void test_gram(void) {
    static const int sh[][2] = {{37, 101}, {101, 37}, {33, 257}, {255, 97}, {61, 200}, {96, 385}, {385, 96}};
    uint64_t seed = 123;
    for (int ill = 0; ill < 2; ill++)
        for (size_t q = 0; q < sizeof sh / sizeof *sh; q++) {
            const int rows = sh[q][0], cols = sh[q][1];
            const int64_t n = (int64_t)rows * cols;
            float *g = falloc(n), *p = falloc(n);
            double *ref = malloc((size_t)n * 8);
            if (!ill)
                for (int64_t i = 0; i < n; i++) g[i] = test_rand(&seed) * 3;
            else { /* rank 4 with singular values 1e0..1e-3 plus 1e-4 noise: a gradient's spectrum */
                for (int64_t i = 0; i < n; i++) g[i] = 1e-4f * test_rand(&seed);
                for (int r = 0; r < 4; r++) {
                    float *u = falloc(rows), *v = falloc(cols);
                    for (int i = 0; i < rows; i++) u[i] = test_rand(&seed);
                    for (int j = 0; j < cols; j++) v[j] = test_rand(&seed);
                    const float sv = powf(10.0f, -(float)r);
                    for (int i = 0; i < rows; i++)
                        for (int j = 0; j < cols; j++) g[(int64_t)i * cols + j] += sv * u[i] * v[j];
                    free(u), free(v);
                }
            }
            ns_ref(g, rows, cols, 5, ref);
            double c[7], e[7];
            ns_run(g, rows, cols, false, false, p), ns_err(p, ref, n, &c[0], &e[0]);
            ns_run(g, rows, cols, false, true, p), ns_err(p, ref, n, &c[1], &e[1]);
            ns_run(g, rows, cols, true, false, p), ns_err(p, ref, n, &c[2], &e[2]);
            ns_run(g, rows, cols, true, true, p), ns_err(p, ref, n, &c[3], &e[3]);
            ns_gram_direct(g, rows, cols, 0, true, p), ns_err(p, ref, n, &c[4], &e[4]);
            ns_gram_direct(g, rows, cols, 3, true, p), ns_err(p, ref, n, &c[5], &e[5]);
            ns_gram_direct(g, rows, cols, 0, false, p), ns_err(p, ref, n, &c[6], &e[6]);
            printf("  gram %s %dx%d vs float64 (1-cos / max rel): f32 plain %.1e/%.1e gram %.1e/%.1e (no restart "
                   "%.1e/%.1e); bf16 plain %.1e/%.1e gram-flag %.1e/%.1e; bf16 gram direct: no restart %.1e/%.1e, restart 3 %.1e/%.1e\n",
                   ill ? "ill" : "rand", rows, cols, c[0], e[0], c[1], e[1], c[6], e[6], c[2], e[2], c[3], e[3], c[4],
                   e[4], c[5], e[5]);
            /* fp32 Gram (restarted every LMC_NS_GRAM_RESTART steps) as close to float64 as the plain iteration,
             * random and gradient-like inputs. Without the restart the gradient-like spectra lose ~1e-3 (A = X X^T
             * squares the conditioning): printed, and asserted to be the worse */
            CHECK_MSG(c[1] <= 10 * c[0] + 1e-11 && e[1] <= 2 * e[0] + 2e-5, "%dx%d f32 gram %.3e %.3e (plain %.3e %.3e)",
                      rows, cols, c[1], e[1], c[0], e[0]);
            if (ill) CHECK(e[6] > e[1]);
            /* the bf16 entry ignores ns_gram: its result is the plain bf16 iteration's, bit for bit. The bf16
             * Gram iteration itself (direct calls) is printed, not used: on random inputs it is as close as the
             * plain bf16 one, on the gradient-like spectra it loses the small directions (1 - cos ~0.15 with
             * restarts every 2 or 3 iterations, ~0.9 without: bf16 rounding of A swamps A's small eigenvalues) */
            CHECK(c[3] == c[2] && e[3] == e[2]);
            if (!ill) CHECK_MSG(c[5] <= 1e-3 && e[5] <= 0.1, "%dx%d bf16 gram %.3e %.3e", rows, cols, c[5], e[5]);
            /* sensitivity to last-bit input differences (a data-parallel all-reduce's): each element moved by
             * one ulp at random, the change of the fp32 output, plain and Gram */
            float *g2 = falloc(n), *p2 = falloc(n), *pa = falloc(n);
            double dch[2];
            for (int64_t i = 0; i < n; i++) g2[i] = test_rand(&seed) > 0 ? nextafterf(g[i], 1e30f) : g[i];
            for (int gs = 0; gs < 2; gs++) {
                ns_run(g, rows, cols, false, gs, pa), ns_run(g2, rows, cols, false, gs, p2);
                double big = 0, d = 0;
                for (int64_t i = 0; i < n; i++) big = fmax(big, fabs(pa[i])), d = fmax(d, fabs(pa[i] - p2[i]));
                dch[gs] = d / big;
            }
            printf("    one-ulp input change: f32 output max change plain %.1e, gram %.1e (of the largest)\n", dch[0],
                   dch[1]);
            CHECK_MSG(dch[1] <= 4 * dch[0] + 1e-6, "%dx%d sensitivity %.3e vs plain %.3e", rows, cols, dch[1], dch[0]);
            free(g2), free(p2), free(pa);
            free(g), free(p), free(ref);
        }
}

static void test_ns(void) {
    static const int sh[][2] = {{37, 101}, {129, 61}, {33, 257}, {5, 7}, {255, 97}, {200, 201}};
    uint64_t seed = 77;
    int n_band = 0;
    for (size_t q = 0; q < sizeof sh / sizeof *sh; q++) {
        const int rows = sh[q][0], cols = sh[q][1], k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
        const int64_t n = (int64_t)rows * cols;
        float *g = falloc(n), *p = falloc(n);
        double *ref = malloc((size_t)n * 8), *pd = malloc((size_t)n * 8), fro = 0;
        for (int64_t i = 0; i < n; i++) g[i] = test_rand(&seed) * 3, fro += (double)g[i] * g[i];
        fro = sqrt(fro);
        ns_bf16(g, rows, cols, p);
        ns_ref(g, rows, cols, 5, ref);
        double dot = 0, na = 0, nb = 0, worst = 0, big = 0;
        for (int64_t i = 0; i < n; i++) {
            dot += p[i] * ref[i], na += (double)p[i] * p[i], nb += ref[i] * ref[i];
            worst = fmax(worst, fabs(p[i] - ref[i])), big = fmax(big, fabs(ref[i]));
            pd[i] = p[i];
        }
        double cosd = 1 - dot / sqrt(na * nb);
        /* singular values: of the input (normalised) through the quintic, and of the output */
        double *sin = malloc((size_t)k * 8), *sout = malloc((size_t)k * 8), *pred = malloc((size_t)k * 8);
        double *gd = malloc((size_t)n * 8);
        for (int64_t i = 0; i < n; i++) gd[i] = g[i];
        singular_values(gd, rows, cols, sin);
        singular_values(pd, rows, cols, sout);
        double lo = 1e9, hi = 0, wmap = 0, plo = 1e9;
        for (int i = 0; i < k; i++) pred[i] = quintic(sin[i] / fro, 5);
        qsort(pred, (size_t)k, sizeof *pred, cmp_desc);
        for (int i = 0; i < k; i++) {
            lo = fmin(lo, sout[i]), hi = fmax(hi, sout[i]), plo = fmin(plo, pred[i]);
            wmap = fmax(wmap, fabs(sout[i] - pred[i]));
        }
        printf("  newton-schulz bf16 %dx%d: 1 - cos %.1e, max err %.2e of %.3f vs float64; singular values in "
               "[%.3f, %.3f] (exact map: from %.3f), max |s - quintic^5(sigma)| %.1e\n", rows, cols, cosd, worst, big,
               lo, hi, plo, wmap);
        CHECK_MSG(cosd <= 1e-3, "%dx%d: 1 - cos %.3e", rows, cols, cosd);
        CHECK_MSG(worst <= 0.1 * big, "%dx%d: %.3e", rows, cols, worst); /* the CUDA bf16 check allows 0.15 */
        CHECK_MSG(wmap <= 0.05, "%dx%d: %.3e from the quintic's map", rows, cols, wmap);
        /* torch's band wherever the exact map reaches it: a near-square random matrix (200x201) has singular
         * values so small that 5 quintic steps leave them below 0.5 in any precision */
        CHECK_MSG((lo >= 0.5 || plo < 0.5) && hi <= 1.5, "%dx%d: [%.3f, %.3f] outside torch's (0.5, 1.5)", rows, cols,
                  lo, hi);
        if (plo >= 0.5) n_band++;
        (void)w;
        free(g), free(p), free(ref), free(pd), free(sin), free(sout), free(pred), free(gd);
    }
    CHECK(n_band == 5); /* test_optim's five shapes (the fp32 band test's) inside the band */
}

/* the batched entry (3 matrices of a shape, 2 threads) = the per-matrix entry, bit for bit; the bf16 step close
 * to the fp32 step */
static void test_batch(void) {
    static const int sh[][2] = {{37, 101}, {129, 61}, {64, 64}};
    uint64_t seed = 5;
    for (size_t q = 0; q < sizeof sh / sizeof *sh; q++) {
        const int64_t rows = sh[q][0], cols = sh[q][1], n = rows * cols;
        enum { CNT = 3 };
        float *p[4][CNT], *buf[4][CNT], *g[CNT], *p0[CNT]; /* 0 batch bf16, 1 per-matrix bf16, 2 per-matrix f32, 3 batch f32 */
        for (int z = 0; z < CNT; z++) {
            g[z] = falloc(n), p0[z] = falloc(n);
            for (int v = 0; v < 4; v++) p[v][z] = falloc(n), buf[v][z] = falloc(n);
            for (int64_t i = 0; i < n; i++)
                p0[z][i] = p[0][z][i] = p[1][z][i] = p[2][z][i] = p[3][z][i] = test_rand(&seed) * 0.1f;
            for (int v = 0; v < 4; v++) memset(buf[v][z], 0, (size_t)n * 4);
        }
        float *work = falloc(lmc_muon_batch_work_floats(CNT, rows, cols)), *w1 = falloc(lmc_muon_work_floats(rows, cols));
        double worst_cos = 0, worst_buf = 0;
        for (int t = 1; t <= 3; t++) {
            struct lmc_muon_step s = {0.95f, t != 2, 5, 3.4445f, -4.7750f, 2.0315f, 1e-7f, 1 - 0.02f * 0.1f, 0.02f,
                                      t == 3 ? 0.5f : 1.0f, 1, t != 1};
            struct lmc_muon_mat mats[CNT];
            for (int z = 0; z < CNT; z++) {
                for (int64_t i = 0; i < n; i++) g[z][i] = test_rand(&seed) * (float)(1 + (i % 7));
                mats[z] = (struct lmc_muon_mat){p[0][z], g[z], buf[0][z], rows, cols, 0.02f * (1 + z)};
            }
            cpu.muon_batch(cpu.ctx, mats, CNT, &s, work);
            struct lmc_muon_step sf = s; /* the fp32 batched entry (plain at t = 1, Gram space after) */
            sf.ns_bf16 = 0;
            for (int z = 0; z < CNT; z++) mats[z].p = p[3][z], mats[z].buf = buf[3][z];
            cpu.muon_batch(cpu.ctx, mats, CNT, &sf, work);
            for (int z = 0; z < CNT; z++) {
                struct lmc_muon_step s1 = s;
                s1.lr_adj = 0.02f * (1 + z);
                cpu.muon(cpu.ctx, p[1][z], g[z], buf[1][z], rows, cols, &s1, w1);
                s1.ns_bf16 = 0;
                cpu.muon(cpu.ctx, p[2][z], g[z], buf[2][z], rows, cols, &s1, w1);
                for (int64_t i = 0; i < n; i++) worst_buf = fmax(worst_buf, fabs(buf[2][z][i] - buf[1][z][i]));
            }
        }
        bool same = true, same32 = true;
        for (int z = 0; z < CNT; z++) {
            same = same && !memcmp(p[0][z], p[1][z], (size_t)n * 4) && !memcmp(buf[0][z], buf[1][z], (size_t)n * 4);
            same32 = same32 && !memcmp(p[3][z], p[2][z], (size_t)n * 4) && !memcmp(buf[3][z], buf[2][z], (size_t)n * 4);
        }
        /* bf16 vs fp32 after 3 steps: the updates p - p0 (both runs started from p0) */
        for (int z = 0; z < CNT; z++) {
            double dot = 0, na = 0, nb = 0;
            for (int64_t i = 0; i < n; i++) {
                double a = (double)p[1][z][i] - p0[z][i], b = (double)p[2][z][i] - p0[z][i];
                dot += a * b, na += a * a, nb += b * b;
            }
            worst_cos = fmax(worst_cos, 1 - dot / sqrt(na * nb));
        }
        printf("  muon batch %lldx%lld x%d (2 threads) = per-matrix entry: bf16 %s, fp32 %s; momentum bf16 vs fp32 max"
               " diff %.1e; parameters after 3 steps 1 - cos %.1e vs the fp32 step\n", (long long)rows, (long long)cols,
               CNT, same ? "bit-exact" : "DIFFERS", same32 ? "bit-exact" : "DIFFERS", worst_buf, worst_cos);
        CHECK(same && same32);
        CHECK(worst_buf == 0);
        CHECK_MSG(worst_cos <= 1e-3, "%.3e", worst_cos);
        for (int z = 0; z < CNT; z++) {
            free(g[z]), free(p0[z]);
            for (int v = 0; v < 4; v++) free(p[v][z]), free(buf[v][z]);
        }
        free(work), free(w1);
    }
}

/* Through lmc_optim on the CPU with bf16 forced (--muon-ns-dtype bf16): 2 steps, save, load, 3 more = 5 straight
 * steps bit for bit; lmc_optim_step_one per matrix = lmc_optim_step (the batched entry); the default (auto) on
 * the CPU = explicit f32, bit for bit, and differs from bf16. */
enum { NM = 4 };
static const int64_t mrow[NM] = {37, 37, 129, 64}, mcol[NM] = {101, 101, 61, 64};
static const char *const mname[NM] = {"a.weight", "b.weight", "c.weight", "d.weight"};
struct orun {
    float *p[NM], *g[NM];
    struct lmc_optim_param ps[NM];
    struct lmc_optim opt;
};
static void orun_init(struct orun *r, const struct lmc_optim_cfg *c) {
    uint64_t seed = 99;
    for (int j = 0; j < NM; j++) {
        const int64_t n = mrow[j] * mcol[j];
        r->p[j] = falloc(n), r->g[j] = falloc(n);
        for (int64_t i = 0; i < n; i++) r->p[j][i] = test_rand(&seed) * 0.1f;
        r->ps[j] = (struct lmc_optim_param){mname[j], r->p[j], r->g[j], mrow[j], mcol[j], LMC_PROLE_MATRIX, true};
    }
    lmc_err err;
    CHECK_MSG(!lmc_optim_init(&r->opt, c, &cpu, r->ps, NM, &err), "%s", err.msg);
}
static void orun_grads(struct orun *r, int64_t t) {
    for (int j = 0; j < NM; j++) {
        uint64_t seed = 1000 * (uint64_t)t + (uint64_t)j;
        for (int64_t i = 0; i < mrow[j] * mcol[j]; i++) r->g[j][i] = test_rand(&seed);
    }
}
static void orun_steps(struct orun *r, int64_t from, int64_t to, bool one) {
    for (int64_t t = from; t <= to; t++) {
        orun_grads(r, t);
        if (!one) lmc_optim_step(&r->opt, 1e-3, t, 1.0f);
        else
            for (int j = NM - 1; j >= 0; j--) lmc_optim_step_one(&r->opt, j, 1e-3, t, 1.0f);
    }
}
static bool orun_same(const struct orun *a, const struct orun *b) {
    for (int j = 0; j < NM; j++)
        if (memcmp(a->p[j], b->p[j], (size_t)(mrow[j] * mcol[j]) * 4)) return false;
    return true;
}
static void orun_free(struct orun *r) {
    lmc_optim_free(&r->opt);
    for (int j = 0; j < NM; j++) free(r->p[j]), free(r->g[j]);
}

static void test_optim_bf16(void) {
    struct lmc_optim_cfg c;
    lmc_optim_cfg_default(&c, LMC_OPTIM_MUON);
    c.adamw.lr = 1e-3;
    c.muon_ns_bf16 = true, c.muon_ns_auto = false; /* forced bf16 */
    char path[] = "/tmp/lmc_test_muon_bf16_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    struct orun a, b, b2, one;
    orun_init(&a, &c), orun_init(&b, &c), orun_init(&b2, &c), orun_init(&one, &c);
    orun_steps(&a, 1, 5, false);
    orun_steps(&b, 1, 2, false);
    lmc_err err;
    CHECK_MSG(!lmc_optim_save(&b.opt, path, &err), "%s", err.msg);
    for (int j = 0; j < NM; j++) memcpy(b2.p[j], b.p[j], (size_t)(mrow[j] * mcol[j]) * 4);
    CHECK_MSG(!lmc_optim_load(&b2.opt, path, &err), "%s", err.msg);
    orun_steps(&b2, 3, 5, false);
    orun_steps(&one, 1, 5, true);
    bool resumed = orun_same(&a, &b2), stepone = orun_same(&a, &one);
    /* auto on the CPU = f32 */
    struct lmc_optim_cfg ca = c, cf = c;
    ca.muon_ns_auto = true;
    cf.muon_ns_bf16 = false;
    struct orun ra, rf;
    orun_init(&ra, &ca), orun_init(&rf, &cf);
    orun_steps(&ra, 1, 2, false), orun_steps(&rf, 1, 2, false);
    bool auto_f32 = orun_same(&ra, &rf);
    struct orun rf1; /* fp32: lmc_optim_step_one per matrix (lmc_cpu_muon) = lmc_optim_step (the fp32 batched entry) */
    orun_init(&rf1, &cf);
    orun_steps(&rf1, 1, 2, true);
    bool f32_one = orun_same(&rf1, &rf);
    struct orun rb;
    orun_init(&rb, &c);
    orun_steps(&rb, 1, 2, false);
    bool bf_differs = !orun_same(&rb, &rf);
    printf("  optimizer muon, bf16 forced: resume after 2 of 5 steps %s; step_one = step %s; CPU auto = f32 %s, "
           "bf16 differs from f32 %s; f32 step_one = step %s\n", resumed ? "bit-exact" : "DIFFERS",
           stepone ? "bit-exact" : "DIFFERS", auto_f32 ? "bit-exact" : "DIFFERS", bf_differs ? "yes" : "NO",
           f32_one ? "bit-exact" : "DIFFERS");
    CHECK(resumed && stepone && auto_f32 && bf_differs && f32_one);
    orun_free(&rf1);
    orun_free(&a), orun_free(&b), orun_free(&b2), orun_free(&one), orun_free(&ra), orun_free(&rf), orun_free(&rb);
    unlink(path);
}

static void test_flag(void) {
    struct lmc_optim_cfg c;
    lmc_optim_cfg_default(&c, LMC_OPTIM_MUON);
    CHECK(c.muon_ns_bf16 && c.muon_ns_auto);
    char *argv[] = {"train", "--muon-ns-dtype", "f32", "--muon-ns-dtype", "half"};
    int i = 1;
    bool used = false;
    lmc_err err;
    CHECK(!lmc_optim_parse_arg(&c, 5, argv, &i, &used, &err) && used && i == 3 && !c.muon_ns_bf16 && !c.muon_ns_auto);
    CHECK(lmc_optim_parse_arg(&c, 5, argv, &i, &used, &err) == LMC_ERR_ARG && strstr(err.msg, "--muon-ns-dtype") &&
          strstr(err.msg, "half"));
    char *argv2[] = {"train", "--muon-ns-dtype", "bf16"};
    i = 1;
    CHECK(!lmc_optim_parse_arg(&c, 3, argv2, &i, &used, &err) && c.muon_ns_bf16 && !c.muon_ns_auto);
    char *argv3[] = {"train", "--muon-ns-dtype", "auto", "--muon-ns-bf16", "1"};
    i = 1;
    CHECK(!lmc_optim_parse_arg(&c, 5, argv3, &i, &used, &err) && c.muon_ns_bf16 && c.muon_ns_auto);
    CHECK(!lmc_optim_parse_arg(&c, 5, argv3, &i, &used, &err) && c.muon_ns_bf16 && !c.muon_ns_auto);
    /* --muon-ns-gram 0|1 (default 1) */
    CHECK(c.muon_ns_gram);
    char *argv5[] = {"train", "--muon-ns-gram", "1"};
    i = 1;
    CHECK(!lmc_optim_parse_arg(&c, 3, argv5, &i, &used, &err) && used && i == 3 && c.muon_ns_gram);
    char *argv4[] = {"train", "--muon-ns-gram", "0", "--muon-ns-gram", "2"};
    i = 1;
    CHECK(!lmc_optim_parse_arg(&c, 5, argv4, &i, &used, &err) && used && i == 3 && !c.muon_ns_gram);
    CHECK(lmc_optim_parse_arg(&c, 5, argv4, &i, &used, &err) == LMC_ERR_ARG && strstr(err.msg, "--muon-ns-gram"));
}

int main(void) {
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("  AVX512-BF16: %s\n", lmc_cpu_has_bf16() ? "yes (vdpbf16ps)" : "no (portable kernel, same bits)");
    test_sym();
    test_ns();
    test_gram();
    test_batch();
    test_optim_bf16();
    test_flag();
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_muon_bf16");
}
