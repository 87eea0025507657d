/* test_gptq.c — GPTQ (src/quant/gptq_algo.c) on a small layer (48 x 160:
 * two lazy batches, K not a multiple of 128, a dead input column) with
 * correlated calibration inputs of uneven scale: the layer's output error
 * ||(W - Q) X^T|| is below round-to-nearest's at the same bits and groups,
 * dead inputs quantize to 0, and — when numpy is installed — the quantized
 * integers, zeros, scales and g_idx equal tests/quant/gptq_ref.py's float64
 * re-implementation of the published algorithm exactly (4-bit g32 sym, 3-bit
 * per-channel asym, act-order with static groups, act-order with g_idx,
 * 8-bit g128 asym; and with the mse range search: 4-bit g32 sym and asym,
 * act-order with static groups). The search lowers GPTQ's own loss against
 * the min/max rule's on the same layer in each of those. */
#include "core/core.h"
#include "quant/gptq_algo.h"
#include "test.h"

#include <stdlib.h>
#include <unistd.h>

static double out_err(const float *w, const float *wq, const float *x, int64_t n, int64_t k, int64_t rows) {
    double e = 0;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t r = 0; r < n; r++) {
            double s = 0;
            for (int64_t i = 0; i < k; i++) s += ((double)w[r * k + i] - wq[r * k + i]) * x[t * k + i];
            e += s * s;
        }
    return sqrt(e);
}

int main(void) {
    const int64_t n = 48, k = 160, rows = 300;
    uint64_t rng = 77;
    float *w = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(rows * k) * 4), *wq = malloc((size_t)(n * k) * 4);
    double *H = calloc((size_t)(k * k), sizeof *H);
    for (int64_t i = 0; i < n * k; i++) w[i] = test_rand(&rng) * 0.1f;
    for (int64_t t = 0; t < rows; t++) {
        float base = test_rand(&rng);
        for (int64_t i = 0; i < k; i++) /* correlated inputs, scales 0.2 .. 3 */
            x[t * k + i] = (0.6f * base + test_rand(&rng)) * (0.2f + (float)((i * 37) % 29) / 10.0f);
        x[t * k + 5] = 0; /* a dead input */
    }
    lmc_gptq_hessian_add(H, k, x, rows);
    const struct { int bits; int64_t gs; bool sym, act, stat, mse; } cases[] = {
        {4, 32, true, false, false, false}, {3, -1, false, false, false, false}, {4, 32, true, true, true, false},
        {4, 64, false, true, false, false}, {8, 128, false, false, false, false}, {4, 32, true, false, false, true},
        {4, 32, false, false, false, true},  {4, 32, true, true, true, true},
    };
    lmc_err err = {0};
    int have_np = system("python3 -c 'import numpy' 2>/dev/null") == 0;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        struct lmc_gptq_opts o = {cases[c].bits, cases[c].gs, cases[c].sym, cases[c].act, cases[c].stat, 0.01, 128,
                                  cases[c].mse};
        struct lmc_qgroups g, r;
        double loss;
        CHECK_MSG(lmc_gptq_quantize(w, n, k, H, &o, &g, &loss, &err) == LMC_OK, "%s", err.msg);
        lmc_qgroups_dequantize(&g, wq);
        double e_gptq = out_err(w, wq, x, n, k, rows);
        bool dead0 = true;
        for (int64_t i = 0; i < n; i++) dead0 = dead0 && (!cases[c].sym || wq[i * k + 5] == 0);
        CHECK(dead0);
        CHECK(lmc_quant_rtn(w, n, k, o.bits, o.group_size > 0 ? o.group_size : k, o.sym, &r, &err) == LMC_OK);
        lmc_qgroups_dequantize(&r, wq);
        double e_rtn = out_err(w, wq, x, n, k, rows);
        printf("gptq %d-bit g%lld sym=%d act=%d static=%d mse=%d: output error %.4g (rtn %.4g), loss %.4g\n",
               o.bits, (long long)o.group_size, o.sym, o.act_order, o.static_groups, o.mse, e_gptq, e_rtn, loss);
        if (o.mse) { /* against the min/max rule on the same settings */
            struct lmc_gptq_opts a = o;
            struct lmc_qgroups ga;
            double base = 0;
            a.mse = false;
            CHECK(lmc_gptq_quantize(w, n, k, H, &a, &ga, &base, &err) == LMC_OK);
            lmc_qgroups_free(&ga);
            CHECK_MSG(loss < base, "case %zu: the mse search's loss %g is not below min/max's %g", c, loss, base);
        }
        CHECK_MSG(e_gptq < 0.9 * e_rtn, "case %zu: gptq %g vs rtn %g", c, e_gptq, e_rtn);
        if (have_np) {
            char path[128], cmd[256];
            snprintf(path, sizeof path, "/tmp/lmc_test_gptq_%d_%zu.bin", (int)getpid(), c);
            FILE *f = fopen(path, "wb");
            int64_t hdr[9] = {n, k, rows, o.bits, o.group_size, o.sym, o.act_order, o.static_groups, o.mse};
            fwrite(hdr, 8, 9, f);
            fwrite(w, 4, (size_t)(n * k), f);
            fwrite(x, 4, (size_t)(rows * k), f);
            fwrite(g.q, 1, (size_t)(n * k), f);
            fwrite(g.g_idx, 4, (size_t)k, f);
            fwrite(g.scale, 4, (size_t)(g.n_groups * n), f);
            fwrite(g.zero, 4, (size_t)(g.n_groups * n), f);
            fclose(f);
            snprintf(cmd, sizeof cmd, "python3 tests/quant/gptq_ref.py %s", path);
            CHECK_MSG(system(cmd) == 0, "case %zu: lmc's GPTQ integers differ from the float64 reference", c);
            unlink(path);
        }
        lmc_qgroups_free(&g);
        lmc_qgroups_free(&r);
    }
    if (!have_np) printf("test_gptq: the float64 reference comparison skipped (pip install numpy)\n");
    /* a Hessian that cannot be factored is a clear error */
    double *Z = calloc((size_t)(k * k), sizeof *Z);
    for (int64_t i = 0; i < k; i++) Z[i * k + i] = -1;
    struct lmc_gptq_opts o = {4, 32, true, false, false, 0.01, 128, false};
    struct lmc_qgroups g;
    CHECK(lmc_gptq_quantize(w, n, k, Z, &o, &g, NULL, &err) == LMC_ERR_ARG && strstr(err.msg, "positive definite"));
    free(Z);
    free(w);
    free(x);
    free(wq);
    free(H);
    return test_finish("test_gptq");
}
