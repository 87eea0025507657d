/* test_optim_cuda.c — the optimizers of train/optim.h on the CUDA backend
 * against the same optimizer on the CPU backend, on a GPU: 8-bit AdamW and
 * Muon (plus AdamW) over 5 steps on llama-tiny-shaped tensors (odd, tall,
 * wide, square, a norm), parameters within 1e-5 of the CPU's and the
 * updates within 1e-4 (Muon with fp32 NS through cuBLASLt) or 1e-3
 * (8-bit: a code flip moves one element's moment by a code step); Muon
 * with bf16 NS (the default: muon_batch.cu, all matrices of a shape in one
 * batched call) by the updates' cosine;
 * state saved on the GPU loads on the CPU and continues there with the same
 * result as on the GPU; GaLore, APOLLO and APOLLO-Mini likewise (their
 * projections refreshed on the host at steps 1, 3, 5). Prints "skipped:
 * no CUDA device" (exit 0) without a GPU. */
#include "ops/backend_cuda.h"
#include "test.h"
#include "train/optim.h"

#include <stdlib.h>
#include <unistd.h>

#define NP 6 /* "o" and "o2" share a shape: one batched Muon call (bf16) takes both */
static const int64_t prow[NP] = {64, 32, 176, 1, 37, 64}, pcol[NP] = {64, 64, 64, 64, 101, 64};
static const enum lmc_param_role prole[NP] = {LMC_PROLE_MATRIX, LMC_PROLE_MATRIX, LMC_PROLE_MATRIX, LMC_PROLE_NORM,
                                              LMC_PROLE_MATRIX, LMC_PROLE_MATRIX};
static const char *const pname[NP] = {"o", "k", "gate", "norm", "odd", "o2"};

struct side {
    struct lmc_backend *be;
    float *p[NP], *g[NP];
    struct lmc_optim_param ps[NP];
    struct lmc_optim opt;
};

static void gen(float *x, int64_t n, uint64_t seed, float mul) {
    for (int64_t i = 0; i < n; i++) x[i] = test_rand(&seed) * mul;
}

static void side_init(struct side *s, struct lmc_backend *be) {
    s->be = be;
    for (int j = 0; j < NP; j++) {
        int64_t n = prow[j] * pcol[j];
        float *h = malloc((size_t)n * 4);
        gen(h, n, 1000 + (uint64_t)j, 0.1f);
        s->p[j] = be->alloc(be->ctx, (size_t)n * 4), s->g[j] = be->alloc(be->ctx, (size_t)n * 4);
        be->upload(be->ctx, s->p[j], h, (size_t)n * 4);
        free(h);
        s->ps[j] = (struct lmc_optim_param){pname[j], s->p[j], s->g[j], prow[j], pcol[j], prole[j], true};
    }
}

static void side_step(struct side *s, int64_t t, double lr) {
    for (int j = 0; j < NP; j++) {
        int64_t n = prow[j] * pcol[j];
        float *h = malloc((size_t)n * 4);
        gen(h, n, 100000 * (uint64_t)t + (uint64_t)j, 1.0f);
        s->be->upload(s->be->ctx, s->g[j], h, (size_t)n * 4);
        free(h);
    }
    lmc_optim_step(&s->opt, lr, t, 0.75f);
}

static float *get(struct side *s, int j) {
    int64_t n = prow[j] * pcol[j];
    float *h = malloc((size_t)n * 4);
    s->be->download(s->be->ctx, h, s->p[j], (size_t)n * 4);
    return h;
}

static void side_free(struct side *s) {
    lmc_optim_free(&s->opt);
    for (int j = 0; j < NP; j++) s->be->free(s->be->ctx, s->p[j]), s->be->free(s->be->ctx, s->g[j]);
}

/* max|a-b|/max|b| of the parameters and of the updates from p0 */
static void compare(const char *what, const float *a, const float *b, const float *p0, int64_t n, double tol_p,
                    double tol_u) {
    double num = 0, den = 0, du = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        num = d > num || d != d ? d : num;
        den = fmax(den, fabs((double)b[i]));
        du = fmax(du, fabs((double)b[i] - p0[i]));
    }
    printf("  %-28s params rel %.2e, update rel %.2e\n", what, num / den, num / du);
    CHECK_MSG(num / den <= tol_p && num / du <= tol_u, "%s: %.3e %.3e", what, num / den, num / du);
}

/* bf16 Newton–Schulz against the fp32 CPU: the updates' direction (1 -
 * cosine <= 5e-3; the emulator measured 5e-4) and size (rel <= 0.15). */
static void cosine_check(const char *what, const float *a, const float *b, const float *p0, int64_t n) {
    double ab = 0, aa = 0, bb = 0, num = 0, du = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = (double)a[i] - p0[i], y = (double)b[i] - p0[i];
        ab += x * y, aa += x * x, bb += y * y;
        num = fmax(num, fabs(x - y)), du = fmax(du, fabs(y));
    }
    double oc = 1 - ab / sqrt(aa * bb);
    printf("  %-28s update 1-cos %.2e, rel %.2e\n", what, oc, num / du);
    CHECK_MSG(oc <= 5e-3 && num / du <= 0.15, "%s: %.3e %.3e", what, oc, num / du);
}

int main(void) {
    if (lmc_cuda_device_count() == 0) {
        printf("test_optim_cuda: skipped: no CUDA device\n");
        return 0;
    }
    struct lmc_backend cpu, gpu;
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 0, &err) || lmc_backend_cuda_init(&gpu, 0, &err)) {
        fprintf(stderr, "backend init: %s\n", err.msg);
        return 1;
    }
    CHECK(gpu.muon && gpu.adamw8bit);
    char path[] = "/tmp/lmc_test_optim_cuda_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    static const enum lmc_optim_kind kinds[] = {LMC_OPTIM_ADAMW, LMC_OPTIM_ADAMW8BIT, LMC_OPTIM_MUON, LMC_OPTIM_MUON,
                                                LMC_OPTIM_GALORE, LMC_OPTIM_APOLLO, LMC_OPTIM_APOLLO_MINI};
    for (int q = 0; q < 7; q++) {
        struct lmc_optim_cfg c;
        lmc_optim_cfg_default(&c, kinds[q]);
        const bool bf = q == 3; /* Muon with bf16 Newton–Schulz operands (the default) */
        c.muon_ns_bf16 = bf;
        c.galore_refresh = LMC_GALORE_REFRESH_SUBSPACE; /* the GPU's default (auto), on both sides */
        struct side g, h, h2;
        side_init(&g, &gpu), side_init(&h, &cpu), side_init(&h2, &cpu);
        float *p0[NP];
        for (int j = 0; j < NP; j++) p0[j] = get(&h, j);
        CHECK_MSG(!lmc_optim_init(&g.opt, &c, &gpu, g.ps, NP, &err), "%s", err.msg);
        struct lmc_optim_cfg c32 = c;
        c32.muon_ns_bf16 = false; /* the CPU side: the fp32 iteration, the reference for both GPU modes */
        c32.muon_ns_gram = false; /* the plain iteration, as the GPU's (Gram space is the CPU's alone) */
        CHECK(!lmc_optim_init(&h.opt, &c32, &cpu, h.ps, NP, &err) &&
              !lmc_optim_init(&h2.opt, &c32, &cpu, h2.ps, NP, &err));
        for (int64_t t = 1; t <= 3; t++) side_step(&g, t, 1e-3), side_step(&h, t, 1e-3);
        /* GPU state -> CPU: h2 takes the GPU's parameters and state after step 3 */
        CHECK_MSG(!lmc_optim_save(&g.opt, path, &err), "%s", err.msg);
        CHECK_MSG(!lmc_optim_load(&h2.opt, path, &err), "%s", err.msg);
        for (int j = 0; j < NP; j++) {
            float *x = get(&g, j);
            cpu.upload(cpu.ctx, h2.p[j], x, (size_t)(prow[j] * pcol[j]) * 4);
            free(x);
        }
        for (int64_t t = 4; t <= 5; t++) side_step(&g, t, 1e-3), side_step(&h, t, 1e-3), side_step(&h2, t, 1e-3);
        c.galore_update_gap = c.apollo_update_gap = 2; /* refreshes at steps 1, 3 and 5 */
        c.galore_rank = 8, c.apollo_rank = kinds[q] == LMC_OPTIM_APOLLO ? 8 : c.apollo_rank;
        /* 8-bit: a code flip moves a moment by a code step; APOLLO channel-wise:
         * a channel factor is ill-conditioned where the projected gradient is ~0 */
        bool q8 = kinds[q] == LMC_OPTIM_ADAMW8BIT || kinds[q] == LMC_OPTIM_APOLLO;
        for (int j = 0; j < NP; j++) {
            float *a = get(&g, j), *b = get(&h, j), *b2 = get(&h2, j);
            char what[96];
            const char *kn = bf ? "muon-bf16" : lmc_optim_kind_name(kinds[q]);
            snprintf(what, sizeof what, "%s %s gpu/cpu", kn, pname[j]);
            if (bf) cosine_check(what, a, b, p0[j], prow[j] * pcol[j]);
            else compare(what, a, b, p0[j], prow[j] * pcol[j], 1e-5, q8 ? 1e-3 : 1e-4);
            snprintf(what, sizeof what, "%s %s gpu/resumed-cpu", kn, pname[j]);
            if (bf) cosine_check(what, a, b2, p0[j], prow[j] * pcol[j]);
            else compare(what, a, b2, p0[j], prow[j] * pcol[j], 1e-5, q8 ? 1e-3 : 1e-4);
            free(a), free(b), free(b2), free(p0[j]);
        }
        side_free(&g), side_free(&h), side_free(&h2);
    }
    unlink(path);
    lmc_backend_cuda_free(&gpu);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_optim_cuda");
}
