/* test_attn_block_cuda.c — ring attention's CUDA block ops (attn_block.cu:
 * lmc_cuda_attn_block_fwd / _merge / _bwd) on the GPU against the CPU
 * twin (ops/cpu/attn_block.c): sequences of T tokens cut into W zigzag
 * slices (rank r: chunks r and 2W-1-r of 2W), every rank's queries
 * against every block in ring order, forward outputs (poisoned with NaN
 * first) and lse merged by log-sum-exp, then the backward of every block
 * with the merged lse (dq, dk, dv accumulated), causal and non-causal, odd
 * sizes, GQA, head dims up to 256, blocks past one 128-key tile; tolerance
 * 1e-4 of the largest reference value. Prints "skipped: no CUDA device"
 * and passes without a GPU (the emulator's section ring_attn checks the
 * same kernels on the CPU: tests/test_cuda_emu.sh BUILD/lmc ring_attn). */
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#ifdef LMC_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"
#endif
#include "test.h"

#include <stdlib.h>

#ifdef LMC_HAVE_CUDA

#define TEST_CUDA_SEED 20261205
#include "test_cuda.h"

static double rel_inf(const float *a, const float *b, int64_t n) { /* -inf must match */
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((a[i] == -INFINITY) != (b[i] == -INFINITY) || a[i] != a[i]) return INFINITY;
        if (b[i] == -INFINITY) continue;
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 1e-6 ? den : 1.0);
}

static int64_t zigzag(int64_t T, int r, int W, int32_t *p) {
    int64_t n = 0;
    int ch[2] = {r, 2 * W - 1 - r};
    for (int c = 0; c < 2; c++)
        for (int64_t t = ch[c] * T / (2 * W); t < (ch[c] + 1) * T / (2 * W); t++) p[n++] = (int32_t)t;
    return n;
}

static float *rows(const float *full, const int32_t *p, int64_t n, int64_t w) {
    float *o = malloc(sizeof(float) * (size_t)(n * w + 1));
    for (int64_t i = 0; i < n; i++) memcpy(o + i * w, full + p[i] * w, sizeof(float) * (size_t)w);
    return o;
}

static double worst;

static void run(int64_t T, int64_t H, int64_t KV, int64_t hd, int W, int causal) {
    const int64_t qd = H * hd, kvd = KV * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = rand_f(T * qd, 2), *k = rand_f(T * kvd, 1), *v = rand_f(T * kvd, 1), *dout = rand_f(T * qd, 1);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(W * (T + 1)));
    int64_t *n = malloc(sizeof(int64_t) * (size_t)W);
    for (int r = 0; r < W; r++) n[r] = zigzag(T, r, W, pos + r * (T + 1));
    double e = 0;
    for (int r = 0; r < W; r++) {
        const int32_t *pr = pos + r * (T + 1);
        float *qr = rows(q, pr, n[r], qd), *dr = rows(dout, pr, n[r], qd);
        float *oc = calloc((size_t)(n[r] * qd + 1), 4), *lc = malloc(sizeof(float) * (size_t)(n[r] * H + 1));
        for (int64_t i = 0; i < n[r] * H; i++) lc[i] = -INFINITY;
        float *obc = malloc(sizeof(float) * (size_t)(n[r] * qd + 1)), *lbc = malloc(sizeof(float) * (size_t)(n[r] * H + 1));
        float *q_d = upf(qr, n[r] * qd), *dr_d = upf(dr, n[r] * qd), *o_d = upf(oc, n[r] * qd), *l_d = upf(lc, n[r] * H);
        int32_t *pr_d = up(pr, sizeof(int32_t) * (size_t)n[r]);
        for (int st = 0; st < W; st++) { /* forward in ring order */
            int src = (r - st + W) % W;
            const int32_t *ps = pos + src * (T + 1);
            float *kb = rows(k, ps, n[src], kvd), *vb = rows(v, ps, n[src], kvd);
            float *k_d = upf(kb, n[src] * kvd), *v_d = upf(vb, n[src] * kvd), *ob_d = dev_poison(n[r] * qd);
            float *lb_d = dev_poison(n[r] * H);
            int32_t *ps_d = up(ps, sizeof(int32_t) * (size_t)n[src]);
            cpu.attn_block_fwd(cpu.ctx, obc, lbc, qr, kb, vb, pr, ps, n[r], n[src], H, KV, hd, scale, causal);
            lmc_cuda_attn_block_fwd(gpu.ctx, ob_d, lb_d, q_d, k_d, v_d, pr_d, ps_d, n[r], n[src], H, KV, hd, scale, causal);
            float *ob = down(ob_d, n[r] * qd), *lb = down(lb_d, n[r] * H);
            e = fmax(e, fmax(rel_inf(ob, obc, n[r] * qd), rel_inf(lb, lbc, n[r] * H)));
            cpu.attn_block_merge(cpu.ctx, oc, lc, obc, lbc, n[r], H, hd);
            lmc_cuda_attn_block_merge(gpu.ctx, o_d, l_d, ob_d, lb_d, n[r], H, hd);
            free(kb), free(vb), free(ob), free(lb);
            dfree(k_d), dfree(v_d), dfree(ob_d), dfree(lb_d), dfree(ps_d);
        }
        float *og = down(o_d, n[r] * qd), *lg = down(l_d, n[r] * H);
        e = fmax(e, fmax(rel_inf(og, oc, n[r] * qd), rel_inf(lg, lc, n[r] * H)));
        /* backward with the merged (CPU) out and lse, both sides */
        gpu.upload(gpu.ctx, o_d, oc, sizeof(float) * (size_t)(n[r] * qd));
        gpu.upload(gpu.ctx, l_d, lc, sizeof(float) * (size_t)(n[r] * H));
        float *dqc = calloc((size_t)(n[r] * qd + 1), 4), *dq_d = upf(dqc, n[r] * qd);
        for (int st = 0; st < W; st++) {
            int src = (r - st + W) % W;
            const int32_t *ps = pos + src * (T + 1);
            float *kb = rows(k, ps, n[src], kvd), *vb = rows(v, ps, n[src], kvd);
            float *dkc = calloc((size_t)(n[src] * kvd + 1), 4), *dvc = calloc((size_t)(n[src] * kvd + 1), 4);
            float *k_d = upf(kb, n[src] * kvd), *v_d = upf(vb, n[src] * kvd), *dk_d = upf(dkc, n[src] * kvd);
            float *dv_d = upf(dvc, n[src] * kvd);
            int32_t *ps_d = up(ps, sizeof(int32_t) * (size_t)n[src]);
            cpu.attn_block_bwd(cpu.ctx, dqc, dkc, dvc, dr, oc, lc, qr, kb, vb, pr, ps, n[r], n[src], H, KV, hd, scale,
                               causal);
            lmc_cuda_attn_block_bwd(gpu.ctx, dq_d, dk_d, dv_d, dr_d, o_d, l_d, q_d, k_d, v_d, pr_d, ps_d, n[r], n[src],
                                    H, KV, hd, scale, causal);
            float *dk = down(dk_d, n[src] * kvd), *dv = down(dv_d, n[src] * kvd);
            e = fmax(e, fmax(rel_inf(dk, dkc, n[src] * kvd), rel_inf(dv, dvc, n[src] * kvd)));
            free(kb), free(vb), free(dkc), free(dvc), free(dk), free(dv);
            dfree(k_d), dfree(v_d), dfree(dk_d), dfree(dv_d), dfree(ps_d);
        }
        float *dq = down(dq_d, n[r] * qd);
        e = fmax(e, rel_inf(dq, dqc, n[r] * qd));
        free(qr), free(dr), free(oc), free(lc), free(obc), free(lbc), free(og), free(lg), free(dqc), free(dq);
        dfree(q_d), dfree(dr_d), dfree(o_d), dfree(l_d), dfree(pr_d), dfree(dq_d);
    }
    printf("  T=%lld H=%lld KV=%lld hd=%lld W=%d %s: max rel err %.3g\n", (long long)T, (long long)H, (long long)KV,
           (long long)hd, W, causal ? "causal" : "full", e);
    CHECK_MSG(e < 1e-4, "T=%lld hd=%lld W=%d causal %d: %.3g", (long long)T, (long long)hd, W, causal, e);
    worst = fmax(worst, e);
    free(q), free(k), free(v), free(dout), free(pos), free(n);
}

int main(void) {
    if (lmc_cuda_device_count() == 0) {
        printf("test_attn_block_cuda: skipped: no CUDA device\n");
        return 0;
    }
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 0, &err) || lmc_backend_cuda_init(&gpu, 0, &err)) {
        fprintf(stderr, "backend init: %s\n", err.msg);
        return 1;
    }
    static const struct { int64_t T, H, KV, hd; int W; } s[] = {
        {7, 2, 1, 17, 2}, {1, 2, 1, 16, 1}, {33, 3, 1, 40, 2}, {61, 4, 2, 64, 4}, {45, 4, 4, 130, 2},
        {1000, 4, 2, 64, 2}, {4097, 2, 1, 128, 4}, {301, 8, 1, 256, 4}, {19, 6, 3, 33, 3},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        for (int causal = 1; causal >= 0; causal--) run(s[i].T, s[i].H, s[i].KV, s[i].hd, s[i].W, causal);
    printf("  max rel err %.3g\n", worst);
    lmc_backend_cuda_free(&gpu);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_attn_block_cuda");
}

#else

int main(void) {
    printf("test_attn_block_cuda: skipped: no CUDA device (built without CUDA)\n");
    return lmc_cuda_device_count() == 0 ? 0 : 1;
}

#endif
