/* bench_muon_ns.c — Muon's fp32 Newton–Schulz on the CPU for GPT-2 124M's
 * matrix shapes (768 × 2304 c_attn, 768 × 768 c_proj, 768 × 3072 c_fc and
 * mlp.c_proj, each as lmc_muon_apply hands it over: k = 768 rows), the plain
 * iteration against the Gram-space one (newton_schulz_gram.c), interleaved
 * (rep r runs both, in alternating order; the square shape runs the plain
 * iteration both times: its ratio is the measurement's own spread), the best process CPU time of `reps` (load-robust on a
 * shared machine: set OPENBLAS_NUM_THREADS=1 for one core's time), and the
 * total for the 48 matrices of one optimizer step (12 layers × (2304 + 768
 * + 2 × 3072)).
 * Usage: bench_muon_ns [reps (default 3)] */
#include "ops/optim_ops.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 3;
    static const int ws[] = {2304, 768, 3072}, per_layer[] = {1, 1, 2};
    const int k = 768;
    double tot[2] = {0, 0};
    printf("| shape | plain s (CPU) | Gram s (CPU) | plain / Gram |\n|---|---|---|---|\n");
    for (int q = 0; q < 3; q++) {
        const int w = ws[q];
        float *x = malloc(sizeof(float) * (size_t)k * (size_t)w);
        float *work = malloc(sizeof(float) * (size_t)lmc_muon_work_floats(k, w));
        if (!x || !work) return fprintf(stderr, "out of memory\n"), 1;
        uint64_t s = 1;
        for (int64_t i = 0; i < (int64_t)k * w; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
        }
        double best[2] = {1e30, 1e30};
        for (int r = 0; r < reps; r++)
            for (int h = 0; h < 2; h++) {
                const int g = (h + r) % 2; /* the order alternates between reps */
                struct lmc_muon_step st = {.ns_steps = 5, .ns_a = 3.4445f, .ns_b = -4.7750f, .ns_c = 2.0315f,
                                           .ns_eps = 1e-7f, .ns_gram = g};
                double t0 = bench_cpu();
                lmc_newton_schulz_apply(x, k, w, false, &st, work); /* x is copied into work: the same input every time */
                double t = bench_cpu() - t0;
                best[g] = t < best[g] ? t : best[g];
            }
        printf("| %d x %d | %.3f | %.3f | %.2fx |\n", k, w, best[0], best[1], best[0] / best[1]);
        for (int g = 0; g < 2; g++) tot[g] += 12.0 * per_layer[q] * best[g];
        free(x), free(work);
    }
    printf("| 48 matrices (one 124M step) | %.2f | %.2f | %.2fx |\n", tot[0], tot[1], tot[0] / tot[1]);
    return 0;
}
