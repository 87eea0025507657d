/* bench_model_cuda.c — prefill and batch-1 decode speed of a model folder
 * on a backend (cuda by default): prefill of P prompt tokens (median of 3,
 * tokens/s), then G greedy-free decode steps (one token each, the logits
 * downloaded every step as generation does; tokens/s). Prints the weight
 * bytes so a caller can set decode against bytes / bandwidth. On CUDA,
 * then the device memory a 4096-token context takes (KV cache for 4096+32
 * positions, 512-token prefill chunks, the prompt fed and 32 tokens
 * decoded): in use after that minus in use right after backend init
 * (CUDA context and cuBLASLt workspace excluded), weights included.
 * Usage: bench_model_cuda DIR [P=512] [G=128] [--device cpu|cuda] */
#include "core/core.h"
#include "model/model.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_model_cuda DIR [P] [G] [--device cpu|cuda]\n");
        return 2;
    }
    const char *dir = argv[1];
    int64_t P = argc > 2 && argv[2][0] != '-' ? atoll(argv[2]) : 512;
    int64_t G = argc > 3 && argv[3][0] != '-' ? atoll(argv[3]) : 128;
    int cuda = 1;
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--device")) cuda = !strcmp(argv[i + 1], "cuda");
    if (P < 1 || G < 1) return 2;
    if (cuda && lmc_cuda_device_count() == 0) {
        printf("bench_model_cuda: skipped: no CUDA device\n");
        return 0;
    }
    struct lmc_backend be;
    lmc_err err = {0};
    if (cuda ? lmc_backend_cuda_init(&be, 0, &err) : lmc_backend_cpu_init(&be, 0, &err)) {
        fprintf(stderr, "backend: %s\n", err.msg);
        return 1;
    }
    size_t mem0 = cuda ? lmc_backend_cuda_mem_used(&be) : 0;
    struct lmc_model m;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_BF16, .be = &be};
    double t0 = lmc_time_now();
    if (lmc_model_load(&m, dir, &mo, &err)) {
        fprintf(stderr, "model: %s\n", err.msg);
        return 1;
    }
    double tload = lmc_time_now() - t0;
    int64_t V = m.cfg.vocab_size;
    struct lmc_kv kv;
    struct lmc_acts acts;
    if (lmc_kv_init(&kv, &m, &be, P + G + 1, &err) || lmc_acts_init(&acts, &m, &be, P, 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int32_t *ids = malloc((size_t)P * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof(float));
    uint64_t s = 42;
    for (int64_t i = 0; i < P; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    double tp[3];
    for (int r = 0; r < 4; r++) { /* first run is the warm-up */
        double a = lmc_time_now();
        if (lmc_model_forward(&m, &be, &acts, &kv, ids, P, 0, logits, false, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        if (r) tp[r - 1] = lmc_time_now() - a;
    }
    double lo = LMC_MIN(tp[0], LMC_MIN(tp[1], tp[2])), hi = LMC_MAX(tp[0], LMC_MAX(tp[1], tp[2]));
    double tpre = tp[0] + tp[1] + tp[2] - lo - hi; /* the median */
    int32_t tok = ids[P - 1];
    double a = lmc_time_now();
    for (int64_t g = 0; g < G; g++) {
        if (lmc_model_forward(&m, &be, &acts, &kv, &tok, 1, P + g, logits, false, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        tok = (int32_t)(g % V);
    }
    double tdec = lmc_time_now() - a;
    printf("model %s on %s: %lld params, weights %.3f GB, load %.2f s\n", dir, be.name,
           (long long)m.n_params, (double)m.weight_bytes / 1e9, tload);
    printf("prefill %lld tokens: %.2f ms, %.0f tok/s\n", (long long)P, tpre * 1e3, (double)P / tpre);
    printf("decode %lld tokens after %lld: %.3f ms/token, %.1f tok/s, %.1f GB/s of weights\n",
           (long long)G, (long long)P, tdec / (double)G * 1e3, (double)G / tdec,
           (double)m.weight_bytes * (double)G / tdec / 1e9);
    lmc_acts_free(&acts);
    lmc_kv_free(&kv);
    if (cuda && !getenv("LMC_BENCH_NO_MEM")) { /* memory at a 4k context */
        const int64_t P4 = 4096, G4 = 32;
        int32_t *ids4 = malloc((size_t)P4 * sizeof *ids4);
        for (int64_t i = 0; i < P4; i++) ids4[i] = ids[i % P];
        if (lmc_kv_init(&kv, &m, &be, P4 + G4, &err) || lmc_acts_init(&acts, &m, &be, 512, 1, &err) ||
            lmc_model_forward(&m, &be, &acts, &kv, ids4, P4, 0, logits, false, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        for (int64_t g = 0; g < G4; g++) {
            tok = (int32_t)(g % V);
            if (lmc_model_forward(&m, &be, &acts, &kv, &tok, 1, P4 + g, logits, false, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
        }
        size_t used = lmc_backend_cuda_mem_used(&be) - mem0;
        printf("memory at 4096 context: %.3f GB (KV cache %s %.3f GB, weights %.3f GB)\n",
               (double)used / 1e9, be.kv_dtype == LMC_DTYPE_F32 ? "f32" : "bf16",
               (double)lmc_kv_bytes(&m, P4 + G4) / (be.kv_dtype == LMC_DTYPE_F32 ? 1 : 2) / 1e9,
               (double)m.weight_bytes / 1e9);
        free(ids4);
        lmc_acts_free(&acts);
        lmc_kv_free(&kv);
    }
    free(ids), free(logits);
    lmc_model_free(&m);
    if (cuda) lmc_backend_cuda_free(&be);
    else lmc_backend_cpu_free(&be);
    return 0;
}
