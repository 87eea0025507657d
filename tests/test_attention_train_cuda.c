/* test_attention_train_cuda.c — the CUDA training attention
 * (lmc_cuda_attention_train / lmc_cuda_attention_bwd, attention_train.cu)
 * against the CPU backend's attention_train / attention_bwd on random
 * non-zero inputs: T from 1 to 1000 (partial tiles), GQA ratios 1 .. 8,
 * head dims 64, 80, 96, 128 (and 17, 40, 256: the generic fp32 path, which
 * the bf16 mode falls back to for them), windows 0, 1, 3, 17, 50, in both
 * precisions (train_bf16 off: fp32, tolerance 1e-4 of the largest reference
 * value; on: bf16 tensor cores, 3e-2). Outputs are poisoned with NaN first,
 * so unwritten elements fail; no output may hold a NaN. The backward runs
 * twice and must give the same bits (no atomics). Prints "skipped: no CUDA
 * device" and passes when the build has no CUDA or the machine no GPU. */
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#ifdef LMC_HAVE_CUDA
#include "ops/cuda/attention_train.h"
#endif
#include "test.h"

#include <stdlib.h>

#ifdef LMC_HAVE_CUDA

#define TEST_CUDA_SEED 20240611
#include "test_cuda.h"

/* max|a-b| / max|b|; NaN anywhere in a gives NaN. Where the reference is
 * all zero (dq, dk with one key per query: T = 1, window 1) the error is
 * absolute. */
static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] != a[i]) return NAN;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den > 1e-6 ? den : 1.0);
}

struct shape {
    int64_t B, T, H, KV, hd, win;
};

static double worst[2]; /* per precision */

static void run_case(const struct shape *s) {
    const int64_t B = s->B, T = s->T, H = s->H, KV = s->KV, hd = s->hd, win = s->win;
    const int64_t nq = B * T * H * hd, nk = B * T * KV * hd, nl = B * T * H;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = rand_f(nq, 2.0f), *k = rand_f(nk, 1.0f), *v = rand_f(nk, 1.0f);
    float *dout = rand_f(nq, 1.0f);
    float *oc = malloc((size_t)nq * 4), *lc = malloc((size_t)nl * 4);
    float *dqc = malloc((size_t)nq * 4), *dkc = malloc((size_t)nk * 4);
    float *dvc = malloc((size_t)nk * 4);
    cpu.attention_train(cpu.ctx, oc, lc, q, k, v, B, T, H, KV, hd, scale, win);
    cpu.attention_bwd(cpu.ctx, dqc, dkc, dvc, dout, oc, lc, q, k, v, B, T, H, KV, hd, scale, win);

    float *q_d = up(q, (size_t)nq * 4), *k_d = up(k, (size_t)nk * 4), *v_d = up(v, (size_t)nk * 4);
    float *dout_d = up(dout, (size_t)nq * 4);
    for (int bf = 0; bf < 2; bf++) {
        lmc_backend_cuda_set_train_bf16(&gpu, bf != 0);
        float *o_d = dev_poison(nq), *l_d = dev_poison(nl);
        float *dq_d = dev_poison(nq), *dk_d = dev_poison(nk), *dv_d = dev_poison(nk);
        lmc_cuda_attention_train(gpu.ctx, o_d, l_d, q_d, k_d, v_d, B, T, H, KV, hd, scale, win);
        lmc_cuda_attention_bwd(gpu.ctx, dq_d, dk_d, dv_d, dout_d, o_d, l_d, q_d, k_d, v_d, B, T, H,
                               KV, hd, scale, win);
        float *og = down(o_d, nq), *lg = down(l_d, nl), *dqg = down(dq_d, nq);
        float *dkg = down(dk_d, nk), *dvg = down(dv_d, nk);
        double e[5] = {rel_err(og, oc, nq), rel_err(lg, lc, nl), rel_err(dqg, dqc, nq),
                       rel_err(dkg, dkc, nk), rel_err(dvg, dvc, nk)};
        const char *nm[5] = {"out", "lse", "dq", "dk", "dv"};
        double tol = bf ? 3e-2 : 1e-4;
        printf("  %s B=%lld T=%lld H=%lld KV=%lld hd=%lld win=%lld: out %.2e lse %.2e dq %.2e "
               "dk %.2e dv %.2e\n",
               bf ? "bf16" : "fp32", (long long)B, (long long)T, (long long)H, (long long)KV,
               (long long)hd, (long long)win, e[0], e[1], e[2], e[3], e[4]);
        for (int i = 0; i < 5; i++) {
            CHECK_MSG(e[i] <= tol, "%s %s B=%lld T=%lld H=%lld KV=%lld hd=%lld win=%lld: %.3g",
                      bf ? "bf16" : "fp32", nm[i], (long long)B, (long long)T, (long long)H,
                      (long long)KV, (long long)hd, (long long)win, e[i]);
            if (e[i] > worst[bf] || e[i] != e[i]) worst[bf] = e[i];
        }

        /* the backward again, into fresh poisoned buffers: the same bits */
        float *dq2_d = dev_poison(nq), *dk2_d = dev_poison(nk), *dv2_d = dev_poison(nk);
        lmc_cuda_attention_bwd(gpu.ctx, dq2_d, dk2_d, dv2_d, dout_d, o_d, l_d, q_d, k_d, v_d, B, T,
                               H, KV, hd, scale, win);
        float *dq2 = down(dq2_d, nq), *dk2 = down(dk2_d, nk), *dv2 = down(dv2_d, nk);
        CHECK_MSG(!memcmp(dq2, dqg, (size_t)nq * 4) && !memcmp(dk2, dkg, (size_t)nk * 4) &&
                      !memcmp(dv2, dvg, (size_t)nk * 4),
                  "%s backward not deterministic (T=%lld hd=%lld)", bf ? "bf16" : "fp32",
                  (long long)T, (long long)hd);
        free(dq2), free(dk2), free(dv2);
        dfree(dq2_d), dfree(dk2_d), dfree(dv2_d);

        free(og), free(lg), free(dqg), free(dkg), free(dvg);
        dfree(o_d), dfree(l_d), dfree(dq_d), dfree(dk_d), dfree(dv_d);
    }
    lmc_backend_cuda_set_train_bf16(&gpu, false);
    free(q), free(k), free(v), free(dout), free(oc), free(lc), free(dqc), free(dkc), free(dvc);
    dfree(q_d), dfree(k_d), dfree(v_d), dfree(dout_d);
}

int main(void) {
    if (lmc_cuda_device_count() == 0) {
        printf("test_attention_train_cuda: skipped: no CUDA device\n");
        return 0;
    }
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 0, &err) || lmc_backend_cuda_init(&gpu, 0, &err)) {
        fprintf(stderr, "backend init: %s\n", err.msg);
        return 1;
    }
    static const struct shape shapes[] = {
        {2, 7, 4, 2, 64, 0},     {1, 1, 2, 1, 64, 0},     {3, 129, 8, 2, 80, 0},
        {2, 200, 4, 4, 96, 0},   {1, 1000, 8, 1, 128, 0}, {1, 333, 6, 3, 128, 0},
        {2, 300, 4, 2, 64, 50},  {1, 257, 4, 1, 128, 50}, {1, 190, 2, 2, 96, 3},
        {2, 70, 2, 1, 40, 0},    {1, 65, 2, 2, 256, 17},  {1, 33, 3, 1, 17, 0},
        {1, 150, 2, 1, 64, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) run_case(&shapes[i]);
    printf("  max rel err fp32 %.3g, bf16 %.3g\n", worst[0], worst[1]);
    lmc_backend_cuda_free(&gpu);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_attention_train_cuda");
}

#else

int main(void) {
    printf("test_attention_train_cuda: skipped: no CUDA device (built without CUDA)\n");
    return lmc_cuda_device_count() == 0 ? 0 : 1;
}

#endif
