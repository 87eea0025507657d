/* bench_ns_blas.c — the rate of each OpenBLAS product of Muon's fp32
 * Newton–Schulz at GPT-2 124M's shapes (k = 768 rows, w = 768, 2304, 3072
 * as lmc_muon_apply hands them over), three ways of using `threads` cores:
 *   1 thr    one OpenBLAS thread, one matrix (the per-core rate)
 *   blas N   OpenBLAS's own N threads on one matrix
 *   mat/thr  N matrices at once, one per thread, OpenBLAS single-threaded
 *            (what the CPU backend's batched Muon entry does)
 * Products: ssyrk X X^T (k^2 w flops: the upper triangle), ssyrk A A^T
 * (k^3), ssymm B X (2 k^2 w), sgemm k x k x k (2 k^3, Gram space's P Q).
 * GFLOP/s from the best wall time of `reps` (each mode interleaved with the
 * others per rep), and per CPU second (the best process CPU time: on a
 * shared machine the cores a mode got vary, its CPU time much less; for
 * "blas N" it includes OpenBLAS's threads' spinning).
 * Usage: bench_ns_blas [reps (default 3)] [threads (default 2)] */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "bench_util.h"

#define MAXT 64

struct mat {
    int op, k, w;
    float *X, *A, *B, *Y;
};

static void run_op(const struct mat *m) {
    const int k = m->k, w = m->w;
    switch (m->op) {
    case 0: cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, k, w, 1.0f, m->X, w, 0.0f, m->A, k); break;
    case 1: cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, k, k, 2.0f, m->A, k, -4.0f, m->B, k); break;
    case 2: cblas_ssymm(CblasRowMajor, CblasLeft, CblasUpper, k, w, 1.0f, m->B, k, m->X, w, 3.0f, m->Y, w); break;
    default:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, k, k, 1.0f, m->A, k, m->B, k, 0.0f, m->Y, k);
    }
}

static void *thr(void *arg) {
    run_op(arg);
    return NULL;
}

static double flops(int op, double k, double w) {
    return op == 0 ? k * k * w : op == 1 ? k * k * k : op == 2 ? 2 * k * k * w : 2 * k * k * k;
}

int main(int argc, char **argv) {
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 3;
    int nt = argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 2;
    if (nt > MAXT) nt = MAXT;
    static const char *const names[] = {"ssyrk X X^T", "ssyrk A A^T", "ssymm B X", "sgemm k^3"};
    static const int ws[] = {768, 2304, 3072};
    const int k = 768;
    struct mat m[MAXT];
    for (int t = 0; t < nt; t++) {
        m[t].X = malloc(sizeof(float) * (size_t)k * 3072), m[t].Y = malloc(sizeof(float) * (size_t)k * 3072);
        m[t].A = malloc(sizeof(float) * (size_t)k * k), m[t].B = malloc(sizeof(float) * (size_t)k * k);
        if (!m[t].X || !m[t].Y || !m[t].A || !m[t].B) return fprintf(stderr, "out of memory\n"), 1;
        for (size_t i = 0; i < (size_t)k * 3072; i++) m[t].X[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < (size_t)k * k; i++) m[t].A[i] = m[t].B[i] = (float)((i * 40503u) % 1000) * 1e-6f;
    }
    printf("| product | k x w | GFLOP | 1 thr GFLOP/s (per CPU s) | blas %d GFLOP/s (per CPU s) | mat/thr %d GFLOP/s"
           " (per CPU s) | blas %d / 1 thr (wall) | mat/thr / 1 thr (wall) |\n|---|---|---|---|---|---|---|---|\n",
           nt, nt, nt);
    for (int op = 0; op < 4; op++)
        for (int q = 0; q < 3; q++) {
            const int w = ws[q];
            if ((op == 1 || op == 3) && w != 768) continue; /* k x k products: no w */
            double best[3] = {1e30, 1e30, 1e30}, cpu[3] = {1e30, 1e30, 1e30};
            for (int r = 0; r < reps; r++)
                for (int h = 0; h < 3; h++) {
                    const int mode = (h + r) % 3;
                    for (int t = 0; t < nt; t++) m[t].op = op, m[t].k = k, m[t].w = w;
                    openblas_set_num_threads(mode == 1 ? nt : 1);
                    double c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID), t0 = bench_clock(CLOCK_MONOTONIC);
                    if (mode < 2) run_op(&m[0]);
                    else {
                        pthread_t th[MAXT];
                        for (int t = 1; t < nt; t++) pthread_create(&th[t], NULL, thr, &m[t]);
                        run_op(&m[0]);
                        for (int t = 1; t < nt; t++) pthread_join(th[t], NULL);
                    }
                    double dt = bench_clock(CLOCK_MONOTONIC) - t0, dc = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
                    if (dt < best[mode]) best[mode] = dt;
                    if (dc < cpu[mode]) cpu[mode] = dc;
                }
            const double f = flops(op, k, w);
            const double g1 = f / best[0] * 1e-9, gb = f / best[1] * 1e-9, gm = nt * f / best[2] * 1e-9;
            printf("| %s | %d x %d | %.2f | %.1f (%.1f) | %.1f (%.1f) | %.1f (%.1f) | %.2fx | %.2fx |\n", names[op], k,
                   op == 1 || op == 3 ? k : w, f * 1e-9, g1, f / cpu[0] * 1e-9, gb, f / cpu[1] * 1e-9, gm,
                   nt * f / cpu[2] * 1e-9, gb / g1, gm / g1);
            fflush(stdout);
        }
    openblas_set_num_threads(1);
    for (int t = 0; t < nt; t++) free(m[t].X), free(m[t].Y), free(m[t].A), free(m[t].B);
    return 0;
}
