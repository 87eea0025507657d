/* test_moe_ops_cuda.c — the CUDA backend's mixture-of-experts ops against
 * their CPU twins on a GPU (the emulator's section moe checks the same
 * kernels without one): routing (softmax, top-k with tied rows, the
 * renormalisation, the grouping by expert: exact experts, permutation
 * and offsets), the load statistics, the gather and the weighted combine
 * (with a gated shared expert) and their backward (with the load-balancing
 * term), clamp and its backward, and the grouped GEMM both ways (one
 * launch; the per-expert cuBLASLt loop the table runs) forward and
 * backward, on odd sizes with idle experts, k = E, top-1 and a token-free
 * call. Outputs are NaN-poisoned. Prints "skipped: no CUDA device" and
 * passes without a GPU. */
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#ifdef LMC_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"
#endif
#include "test.h"

#include <stdlib.h>

#ifdef LMC_HAVE_CUDA

#define TEST_CUDA_SEED 1414
#include "test_cuda.h"

static double worst_route, worst_bwd, worst_gemm;

/* max|a-b| / max|b|, NaN anywhere gives NaN */
static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d || a[i] != a[i]) return NAN;
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}
static double track(double *w, double e) {
    if (e > *w || e != e) *w = e;
    return e;
}

static bool same_i(const int32_t *d, const int32_t *h, int64_t n) {
    int32_t *x = malloc((size_t)(n > 0 ? n : 1) * 4);
    if (n) gpu.download(gpu.ctx, x, d, (size_t)n * 4);
    bool ok = n == 0 || !memcmp(x, h, (size_t)n * 4);
    free(x);
    return ok;
}

static void route_case(int64_t n, int64_t E, int64_t k, int norm, bool shared, bool aux, int64_t C) {
    const int64_t nk = n * k;
    float *logits = rand_f(n * E, 2.0f);
    for (int64_t t = 0; t < n; t++) { /* ties: flat rows, rows with two equal best */
        if (t % 5 == 0)
            for (int64_t e = 0; e < E; e++) logits[t * E + e] = 0.25f;
        if (t % 5 == 1 && E > 2) logits[t * E + 1] = logits[t * E + E - 1] = 3.0f;
    }
    float *pc = malloc((size_t)(n * E + 1) * 4), *wc = malloc((size_t)(nk + 1) * 4);
    int32_t *sc = malloc((size_t)(nk + 1) * 4), *permc = malloc((size_t)(nk + 1) * 4), *rowc = malloc((size_t)(nk + 1) * 4);
    int64_t *offc = malloc((size_t)(E + 1) * 8), *offch = malloc((size_t)(E + 1) * 8), *offgh = malloc((size_t)(E + 1) * 8);
    memcpy(pc, logits, (size_t)(n * E) * 4);
    struct lmc_moe_routing rc = {pc, sc, wc, permc, rowc, offc};
    cpu.moe_route(cpu.ctx, &rc, offch, n, E, k, norm);
    int64_t *offg = gpu.alloc(gpu.ctx, (size_t)(E + 1) * 8);
    struct lmc_moe_routing rg = {upf(logits, n * E), (int32_t *)dev_poison(nk), dev_poison(nk),
                                 (int32_t *)dev_poison(nk), (int32_t *)dev_poison(nk), offg};
    gpu.moe_route(gpu.ctx, &rg, offgh, n, E, k, norm);
    float *h1 = down(rg.probs, n * E), *h2 = down(rg.wts, nk);
    CHECK_MSG(track(&worst_route, rel_err(h1, pc, n * E)) <= 1e-6, "moe_route probs n %lld E %lld", (long long)n,
              (long long)E);
    CHECK_MSG(track(&worst_route, rel_err(h2, wc, nk)) <= 1e-6, "moe_route weights n %lld E %lld", (long long)n,
              (long long)E);
    CHECK_MSG(same_i(rg.sel, sc, nk) && same_i(rg.perm, permc, nk) && same_i(rg.row, rowc, nk),
              "moe_route experts / permutation n %lld E %lld k %lld", (long long)n, (long long)E, (long long)k);
    int64_t *offgd = malloc((size_t)(E + 1) * 8);
    gpu.download(gpu.ctx, offgd, offg, (size_t)(E + 1) * 8);
    CHECK_MSG(!memcmp(offgd, offc, (size_t)(E + 1) * 8) && !memcmp(offgh, offc, (size_t)(E + 1) * 8) &&
                  !memcmp(offch, offc, (size_t)(E + 1) * 8),
              "moe_route offsets n %lld E %lld", (long long)n, (long long)E);
    free(h1), free(h2), free(offgd);
    if (n > 1 && E > 2 && k >= 2)
        CHECK_MSG(sc[0] == 0 && sc[1] == 1 && sc[k] == 1 && sc[k + 1] == E - 1, "ties to the lower expert");
    if (n > 0) {
        double *cc = malloc((size_t)E * 8), *psc = malloc((size_t)E * 8), *cg = malloc((size_t)E * 8),
               *psg = malloc((size_t)E * 8);
        cpu.moe_stats(cpu.ctx, cc, psc, sc, pc, n, k, E);
        gpu.moe_stats(gpu.ctx, cg, psg, rg.sel, rg.probs, n, k, E);
        for (int64_t e = 0; e < E; e++)
            CHECK_MSG(cg[e] == cc[e] && fabs(psg[e] - psc[e]) <= 1e-9 * (1 + fabs(psc[e])), "moe_stats expert %lld",
                      (long long)e);
        free(cc), free(psc), free(cg), free(psg);
        /* gather, gather_bwd */
        float *h = rand_f(n * C, 1), *xsc = malloc((size_t)(nk * C) * 4), *hg = upf(h, n * C), *xsg = dev_poison(nk * C);
        cpu.moe_gather(cpu.ctx, xsc, h, permc, nk, k, C);
        gpu.moe_gather(gpu.ctx, xsg, hg, rg.perm, nk, k, C);
        float *xd = down(xsg, nk * C);
        CHECK_MSG(rel_err(xd, xsc, nk * C) == 0, "moe_gather");
        float *dxs = rand_f(nk * C, 1), *dhc = malloc((size_t)(n * C) * 4), *dxsg = upf(dxs, nk * C),
              *dhg = dev_poison(n * C);
        cpu.moe_gather_bwd(cpu.ctx, dhc, dxs, rowc, n, k, C);
        gpu.moe_gather_bwd(gpu.ctx, dhg, dxsg, rg.row, n, k, C);
        float *dhd = down(dhg, n * C);
        CHECK_MSG(track(&worst_bwd, rel_err(dhd, dhc, n * C)) <= 1e-6, "moe_gather_bwd");
        /* combine, combine_bwd */
        float *o = rand_f(nk * C, 1), *res = rand_f(n * C, 1), *so = rand_f(n * C, 1), *sl = rand_f(n, 3),
              *yc = malloc((size_t)(n * C) * 4);
        float *og = upf(o, nk * C), *yg = upf(res, n * C), *sog = upf(so, n * C), *slg = upf(sl, n);
        cpu.moe_combine(cpu.ctx, yc, res, o, wc, rowc, shared ? so : NULL, sl, n, k, C);
        gpu.moe_combine(gpu.ctx, yg, yg, og, rg.wts, rg.row, shared ? sog : NULL, slg, n, k, C);
        float *yd = down(yg, n * C);
        CHECK_MSG(track(&worst_route, rel_err(yd, yc, n * C)) <= 1e-6, "moe_combine");
        float *dy = rand_f(n * C, 1), *doxc = malloc((size_t)(nk * C) * 4), *dlc = malloc((size_t)(n * E) * 4),
              *dsoc = malloc((size_t)(n * C) * 4), *dslc = malloc((size_t)n * 4);
        double *ax = malloc((size_t)E * 8);
        for (int64_t e = 0; e < E; e++) ax[e] = 0.3 * test_rand(&rng);
        float *dyg = upf(dy, n * C), *doxg = dev_poison(nk * C), *dlg = dev_poison(n * E), *dsog = dev_poison(n * C),
              *dslg = dev_poison(n);
        cpu.moe_combine_bwd(cpu.ctx, doxc, dlc, dsoc, dslc, dy, o, &rc, shared ? so : NULL, sl, aux ? ax : NULL, n, E,
                            k, C, norm);
        gpu.moe_combine_bwd(gpu.ctx, doxg, dlg, dsog, dslg, dyg, og, &rg, shared ? sog : NULL, slg, aux ? ax : NULL, n,
                            E, k, C, norm);
        float *a1 = down(doxg, nk * C), *a2 = down(dlg, n * E), *a3 = down(dsog, n * C), *a4 = down(dslg, n);
        CHECK_MSG(track(&worst_bwd, rel_err(a1, doxc, nk * C)) <= 1e-6, "moe_combine_bwd d(expert out)");
        CHECK_MSG(track(&worst_bwd, rel_err(a2, dlc, n * E)) <= 1e-5, "moe_combine_bwd d(router logits) n %lld E %lld",
                  (long long)n, (long long)E);
        if (shared) {
            CHECK_MSG(track(&worst_bwd, rel_err(a3, dsoc, n * C)) <= 1e-6, "moe_combine_bwd d(shared out)");
            CHECK_MSG(track(&worst_bwd, rel_err(a4, dslc, n)) <= 1e-5, "moe_combine_bwd d(shared gate)");
        }
        float *hs[] = {h, xsc, xd, dxs, dhc, dhd, o, res, so, sl, yc, yd, dy, doxc, dlc, dsoc, dslc, a1, a2, a3, a4};
        for (size_t i = 0; i < sizeof hs / sizeof *hs; i++) free(hs[i]);
        free(ax);
        void *ds[] = {hg, xsg, dxsg, dhg, og, yg, sog, slg, dyg, doxg, dlg, dsog, dslg};
        for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) dfree(ds[i]);
    }
    dfree(rg.probs), dfree(rg.sel), dfree(rg.wts), dfree(rg.perm), dfree(rg.row), dfree(offg);
    free(logits), free(pc), free(wc), free(sc), free(permc), free(rowc), free(offc), free(offch), free(offgh);
}

static void gemm_case(const int64_t *off, int64_t E, int64_t N, int64_t K, enum lmc_dtype dt) {
    const int64_t rows = off[E], es = dt == LMC_DTYPE_F32 ? 4 : 2;
    struct lmc_mat *wh = calloc((size_t)E, sizeof *wh), *wd = calloc((size_t)E, sizeof *wd);
    const struct lmc_mat **ph = calloc((size_t)E, sizeof *ph), **pd = calloc((size_t)E, sizeof *pd);
    for (int64_t e = 0; e < E; e++) {
        float *f = rand_f(N * K, 1);
        void *w = malloc((size_t)(N * K * es));
        for (int64_t i = 0; i < N * K; i++) {
            if (dt == LMC_DTYPE_F32) ((float *)w)[i] = f[i];
            else if (dt == LMC_DTYPE_BF16) ((uint16_t *)w)[i] = lmc_f32_to_bf16(f[i]);
            else ((uint16_t *)w)[i] = lmc_f32_to_f16(f[i]);
        }
        free(f);
        wh[e] = (struct lmc_mat){dt, N, K, w};
        wd[e] = (struct lmc_mat){dt, N, K, up(w, (size_t)(N * K * es))};
        ph[e] = &wh[e], pd[e] = &wd[e];
    }
    float *x = rand_f(rows * K, 1), *yc = malloc((size_t)(rows * N + 1) * 4), *xg = upf(x, rows * K);
    cpu.moe_gemm(cpu.ctx, yc, x, off, E, ph);
    for (int p = 0; p < 2; p++) {
        enum lmc_cuda_moe_path path = p ? LMC_CUDA_MOE_LOOP : LMC_CUDA_MOE_GROUPED;
        float *yg = dev_poison(rows * N);
        lmc_cuda_moe_gemm_ex(gpu.ctx, yg, xg, off, E, pd, path);
        float *yd = down(yg, rows * N);
        /* the loop's GEMMs take bf16 / f16 activations (test_ops_cuda's matmul tolerances) */
        double tol = dt == LMC_DTYPE_F32 ? 1e-5 : !p ? 1e-4 : dt == LMC_DTYPE_BF16 ? 1e-2 : 2e-3;
        CHECK_MSG(track(&worst_gemm, rel_err(yd, yc, rows * N)) <= tol, "moe_gemm %s fwd dtype %d E %lld N %lld K %lld",
                  p ? "loop" : "grouped", (int)dt, (long long)E, (long long)N, (long long)K);
        free(yd), dfree(yg);
        if (dt != LMC_DTYPE_F32) continue;
        for (int accum = 0; accum < 2; accum++) {
            float *dy = rand_f(rows * N, 1), *dxc = rand_f(rows * K, 1), *dyg = upf(dy, rows * N), *dxg = upf(dxc, rows * K);
            float **dwc = calloc((size_t)E, sizeof *dwc), **dwg = calloc((size_t)E, sizeof *dwg);
            for (int64_t e = 0; e < E; e++) dwc[e] = rand_f(N * K, 1), dwg[e] = upf(dwc[e], N * K);
            cpu.moe_gemm_bwd(cpu.ctx, dxc, dwc, dy, x, off, E, ph, accum);
            lmc_cuda_moe_gemm_bwd_ex(gpu.ctx, dxg, dwg, dyg, xg, off, E, pd, accum, path);
            float *dxd = down(dxg, rows * K);
            CHECK_MSG(track(&worst_gemm, rel_err(dxd, dxc, rows * K)) <= 1e-5, "moe_gemm %s bwd dx accum %d",
                      p ? "loop" : "grouped", accum);
            for (int64_t e = 0; e < E; e++) {
                float *dwd = down(dwg[e], N * K);
                CHECK_MSG(track(&worst_gemm, rel_err(dwd, dwc[e], N * K)) <= 1e-5, "moe_gemm %s bwd dw expert %lld",
                          p ? "loop" : "grouped", (long long)e);
                free(dwd), free(dwc[e]), dfree(dwg[e]);
            }
            free(dy), free(dxc), free(dxd), free(dwc), free(dwg), dfree(dyg), dfree(dxg);
        }
    }
    for (int64_t e = 0; e < E; e++) free((void *)wh[e].data), dfree((void *)wd[e].data);
    free(wh), free(wd), free(ph), free(pd), free(x), free(yc), dfree(xg);
}

static void test_clamp(void) {
    for (int64_t n = 1; n < 5000; n = n * 7 + 3) {
        const float c = 0.7f;
        float *x = rand_f(n, 2), *dy = rand_f(n, 1), *yc = malloc((size_t)n * 4), *dxc = malloc((size_t)n * 4);
        if (n > 3) x[1] = c, x[2] = -c;
        cpu.clamp(cpu.ctx, yc, x, n, c);
        cpu.clamp_bwd(cpu.ctx, dxc, dy, x, n, c);
        float *xg = upf(x, n), *yg = upf(x, n), *dyg = upf(dy, n);
        gpu.clamp(gpu.ctx, yg, yg, n, c);
        gpu.clamp_bwd(gpu.ctx, dyg, dyg, xg, n, c);
        float *a = down(yg, n), *b = down(dyg, n);
        CHECK_MSG(rel_err(a, yc, n) == 0 && rel_err(b, dxc, n) == 0, "clamp n %lld", (long long)n);
        free(x), free(dy), free(yc), free(dxc), free(a), free(b), dfree(xg), dfree(yg), dfree(dyg);
    }
}

int main(void) {
    if (lmc_cuda_device_count() == 0) {
        printf("test_moe_ops_cuda: skipped: no CUDA device\n");
        return 0;
    }
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 0, &err) || lmc_backend_cuda_init(&gpu, 0, &err)) {
        fprintf(stderr, "backend init: %s\n", err.msg);
        return 1;
    }
    route_case(37, 7, 3, 1, true, true, 13);
    route_case(9, 4, 2, 0, false, false, 5);
    route_case(130, 60, 4, 1, false, true, 3);
    route_case(41, 8, 8, 0, true, false, 7);
    route_case(3, 5, 1, 1, false, false, 2);
    route_case(0, 6, 2, 1, false, false, 4);
    route_case(3001, 64, 8, 1, true, true, 129); /* 24008 choices (DeepSeek/OLMoE-like widths) */
    test_clamp();
    const int64_t o1[] = {0, 0, 5, 5, 12, 13}, o2[] = {0, 0, 37, 37}, o3[] = {0, 100, 200, 700, 701};
    for (int d = 0; d < 3; d++) {
        enum lmc_dtype dt = d == 0 ? LMC_DTYPE_F32 : d == 1 ? LMC_DTYPE_BF16 : LMC_DTYPE_F16;
        gemm_case(o1, 5, 7, 13, dt);
        gemm_case(o2, 3, 19, 5, dt);
        gemm_case(o3, 4, 257, 131, dt);
    }
    printf("  max rel err routing/combine %.3g, backward %.3g, grouped gemm %.3g\n", worst_route, worst_bwd,
           worst_gemm);
    lmc_backend_cuda_free(&gpu);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_moe_ops_cuda");
}

#else

int main(void) {
    printf("test_moe_ops_cuda: skipped: no CUDA device (built without CUDA)\n");
    return lmc_cuda_device_count() == 0 ? 0 : 1;
}

#endif
