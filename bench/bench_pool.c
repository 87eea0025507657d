/* bench_pool.c — the thread pool's hand-off cost: T threads (default 2)
 * run REPS pool runs of N tasks (default 24, decode's q/k/v at 2 threads)
 * that each do W iterations of a dependent integer chain (default 0: empty
 * tasks; ~1 ns an iteration), with G iterations of serial work on the
 * calling thread between runs (default 2000: the norms and the activation
 * quantization between decode's products; the workers spin meanwhile).
 * Prints the minimum and the median wall time of a run, and the
 * process's CPU seconds per run. The minimum filters out the time slices
 * other processes take on a shared machine; compare two builds by their
 * minima, interleaved.
 * Usage: bench_pool [T 2] [N 24] [W 0] [G 2000] [REPS 20000] */
#include "core/threadpool.h"

#include <stdint.h>
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static uint64_t chain(uint64_t x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

struct job {
    int64_t w;
    volatile uint64_t sink[1024 * 8];
};

static void task(void *arg, int64_t t, int thread) {
    struct job *j = arg;
    j->sink[thread * 8] = chain((uint64_t)t, j->w);
}

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 2;
    int64_t N = argc > 2 ? atoll(argv[2]) : 24, W = argc > 3 ? atoll(argv[3]) : 0;
    int64_t G = argc > 4 ? atoll(argv[4]) : 2000, R = argc > 5 ? atoll(argv[5]) : 20000;
    if (T < 1 || T > 1024 || N < 1 || W < 0 || G < 0 || R < 1) {
        fprintf(stderr, "usage: bench_pool [T 2] [N 24] [W 0] [G 2000] [REPS 20000]\n");
        return 2;
    }
    struct lmc_pool *pool;
    lmc_err err = {0};
    if (lmc_pool_init(&pool, T, &err) != LMC_OK) {
        fprintf(stderr, "bench_pool: %s\n", err.msg);
        return 1;
    }
    struct job *j = calloc(1, sizeof *j);
    int64_t *t = malloc((size_t)R * sizeof *t);
    j->w = W;
    uint64_t x = 1;
    for (int64_t r = 0; r < R / 10; r++) lmc_pool_run(pool, N, task, j); /* warm up */
    double c0 = bench_cpu();
    for (int64_t r = 0; r < R; r++) {
        x = chain(x, G);
        int64_t a = now_ns();
        lmc_pool_run(pool, N, task, j);
        t[r] = now_ns() - a;
    }
    double c1 = bench_cpu();
    qsort(t, (size_t)R, sizeof *t, cmp);
    printf("bench_pool T %d N %lld W %lld G %lld: run min %.2f us, median %.2f us; CPU %.2f us per run (x %llu)\n", T,
           (long long)N, (long long)W, (long long)G, t[0] / 1e3, t[R / 2] / 1e3, (c1 - c0) / (double)R * 1e6,
           (unsigned long long)(x & 1));
    free(t);
    free(j);
    lmc_pool_free(pool);
    return 0;
}
