/* bench_prefill_ab.c — one model's prefill with the large-M matmul path
 * through our AVX2 GEMM (gemm_f32.c) and through OpenBLAS sgemm
 * (ctx->gemm_blas), alternated in one process on the same weights: per path
 * the medians over repetitions of wall time and of process CPU time (all
 * threads; robust to other load on a shared machine), as tok/s and tokens
 * per CPU-second. The prompt is random ids; only the last token's logits.
 *
 *   bench_prefill_ab [--dir DIR] [--threads N] [--prompt N] [--reps N] [--paths 1|2] [--verbose 0|1]
 *   (--paths 1: our GEMM only, e.g. under perf)
 *   (--verbose 1: every repetition's wall and CPU time and the page faults
 *   and involuntary switches it took, to stderr: do repetitions speed up, and why)
 *   (DIR default /tmp/lmc-bench-125m-f16, written by bench_cpu) */
#include "core/core.h"
#include "core/rng.h"
#include "model/model.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_prefill_ab: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

int main(int argc, char **argv) {
    const char *dir = "/tmp/lmc-bench-125m-f16";
    int threads = 2, prompt = 512, reps = 5, paths = 2, verbose = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--paths")) paths = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--verbose")) verbose = atoi(argv[i + 1]);
        else return fprintf(stderr, "usage: bench_prefill_ab [--dir D] [--threads N] [--prompt N] [--reps N] [--paths 1|2] [--verbose 0|1]\n"), 1;
    }
    if (paths < 1 || paths > 2 || threads < 1 || prompt < 2 || reps < 1 || reps > 100) return fprintf(stderr, "bench_prefill_ab: bad option\n"), 1;
    lmc_err e;
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &e) != LMC_OK) die("cpu backend", &e);
    struct lmc_cpu_ctx *c = be.ctx;
    struct lmc_model m;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_AUTO, .be = &be};
    if (lmc_model_load(&m, dir, &mo, &e) != LMC_OK) die(dir, &e);
    struct lmc_kv kv;
    struct lmc_acts acts;
    if (lmc_kv_init(&kv, &m, &be, prompt, &e) != LMC_OK) die("kv cache", &e);
    if (lmc_acts_init(&acts, &m, &be, prompt, 1, &e) != LMC_OK) die("activations", &e);
    int64_t V = m.cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof(float));
    int32_t *ids = malloc((size_t)prompt * sizeof(int32_t));
    if (!logits || !ids) die("out of memory", NULL);
    uint64_t rng = 1234;
    for (int i = 0; i < prompt; i++) ids[i] = (int32_t)(3 + lmc_rng_next(&rng) % (uint64_t)(V - 3));
    double wall[2][100], cpu[2][100];
    for (int r = -1; r < reps; r++)
        for (int k = 0; k < 2; k++) {
            int p = (r & 1) ? 1 - k : k; /* alternate which path goes first */
            if (p >= paths) continue;
            c->gemm_blas = p == 1;
            struct rusage u0, u1;
            getrusage(RUSAGE_SELF, &u0);
            double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
            if (lmc_model_forward(&m, &be, &acts, &kv, ids, prompt, 0, logits, false, &e) != LMC_OK)
                die("forward", &e);
            double w1 = bench_clock(CLOCK_MONOTONIC), c1 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
            getrusage(RUSAGE_SELF, &u1);
            if (r >= 0) wall[p][r] = w1 - w0, cpu[p][r] = c1 - c0; /* r = -1: warm-up */
            if (verbose)
                fprintf(stderr, "bench_prefill_ab: path %d rep %d: %.1f tok/s wall, %.1f per CPU-second, %ld minor / %ld major faults, %ld involuntary switches\n",
                    p, r, prompt / (w1 - w0), prompt / (c1 - c0), u1.ru_minflt - u0.ru_minflt, u1.ru_majflt - u0.ru_majflt,
                    u1.ru_nivcsw - u0.ru_nivcsw);
        }
    printf("| %s, %d-token prefill, %d threads, %d reps (medians) | tok/s (wall) | tokens per CPU-second |\n"
           "|---|---:|---:|\n", dir, prompt, threads, reps);
    double tc[2];
    for (int p = 0; p < paths; p++) {
        qsort(wall[p], (size_t)reps, sizeof(double), bench_cmpd);
        qsort(cpu[p], (size_t)reps, sizeof(double), bench_cmpd);
        tc[p] = prompt / cpu[p][reps / 2];
        printf("| %s | %.1f | %.1f |\n", p ? "OpenBLAS sgemm (ctx->gemm_blas)" : "our AVX2 GEMM (gemm_f32.c)",
               prompt / wall[p][reps / 2], tc[p]);
    }
    if (paths == 2) printf("\nours / OpenBLAS in tokens per CPU-second: %.3fx\n", tc[0] / tc[1]);
    return 0;
}
