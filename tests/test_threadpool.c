/* test_threadpool.c — the thread pool schedules every task of a run exactly
 * once, on a thread index in range, whatever the thread count against the
 * cores: many short runs of odd task counts, more threads than cores
 * (oversubscribed), runs published while workers sleep on the futex (no
 * lost wake-up: a run whose tasks wait for every thread completes only if
 * every worker woke), and the pool's argument checks. Waits on events
 * (the pool's sleeper count, the tasks' own counters), never on clocks. */
#include "core/threadpool.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define MAXT 4096

struct count_job {
    _Atomic int hits[MAXT];
    _Atomic int bad_thread;
    int n_threads;
};

static void count_task(void *arg, int64_t t, int thread) {
    struct count_job *j = arg;
    atomic_fetch_add_explicit(&j->hits[t], 1, memory_order_relaxed);
    if (thread < 0 || thread >= j->n_threads) atomic_store(&j->bad_thread, 1);
}

/* n runs of task counts 1 .. MAXT (odd and prime sizes, a deterministic
 * sequence): every index of each run hit once, none beyond. */
static void many_short_runs(int threads, int runs) {
    struct lmc_pool *pool;
    lmc_err err = {0};
    CHECK(lmc_pool_init(&pool, threads, &err) == LMC_OK);
    CHECK(lmc_pool_threads(pool) == threads);
    struct count_job *j = calloc(1, sizeof *j);
    j->n_threads = threads;
    uint64_t s = 88172645463325252ULL;
    int bad = 0;
    for (int r = 0; r < runs; r++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        int64_t n = r % 7 == 0 ? (int64_t)(s % MAXT) + 1 : (int64_t)(s % 67) + 1;
        for (int64_t t = 0; t < n + 1 && t < MAXT; t++) atomic_store_explicit(&j->hits[t], 0, memory_order_relaxed);
        lmc_pool_run(pool, n, count_task, j);
        for (int64_t t = 0; t < n; t++) bad += atomic_load_explicit(&j->hits[t], memory_order_relaxed) != 1;
        if (n < MAXT) bad += atomic_load_explicit(&j->hits[n], memory_order_relaxed) != 0;
    }
    CHECK(bad == 0);
    CHECK(atomic_load(&j->bad_thread) == 0);
    free(j);
    lmc_pool_free(pool);
}

/* Every thread of the pool must enter a task before any task returns: the
 * run completes only if each worker woke and claimed one (each thread
 * claims one task, then waits in it for the others). */
struct meet_job {
    _Atomic int arrived;
    _Atomic int seen[1024];
    int n;
};

static void meet_task(void *arg, int64_t t, int thread) {
    struct meet_job *j = arg;
    atomic_fetch_add(&j->seen[thread], 1);
    atomic_fetch_add(&j->arrived, 1);
    while (atomic_load(&j->arrived) < j->n) sched_yield(); /* an event: the other threads' arrival */
}

static int meet(struct lmc_pool *pool) {
    int n = lmc_pool_threads(pool);
    struct meet_job *j = calloc(1, sizeof *j);
    j->n = n;
    lmc_pool_run(pool, n, meet_task, j);
    int ok = atomic_load(&j->arrived) == n;
    for (int t = 0; t < n; t++) ok &= atomic_load(&j->seen[t]) == 1;
    free(j);
    return ok;
}

static void wake_from_sleep(int threads, int rounds) {
    struct lmc_pool *pool;
    lmc_err err = {0};
    CHECK(lmc_pool_init(&pool, threads, &err) == LMC_OK);
    int ok = 1;
    for (int r = 0; r < rounds; r++) {
        /* every worker past its spin, on the futex (or entering it) */
        while (lmc_pool_sleeping(pool) < threads - 1) sched_yield();
        ok &= meet(pool);
        /* and right after a run, while they spin */
        ok &= meet(pool);
    }
    CHECK(ok);
    lmc_pool_free(pool);
}

int main(void) {
    /* argument checks and the one-thread pool */
    struct lmc_pool *pool = NULL;
    lmc_err err = {0};
    CHECK(lmc_pool_init(&pool, 2000, &err) == LMC_ERR_ARG && pool == NULL);
    CHECK(lmc_pool_init(&pool, 0, &err) == LMC_OK && lmc_pool_threads(pool) >= 1);
    lmc_pool_free(pool);
    CHECK(lmc_pool_threads(NULL) == 1);
    lmc_pool_free(NULL);
    many_short_runs(1, 200);

    many_short_runs(2, 20000);
    many_short_runs(3, 5000);
    /* more threads than this machine's cores */
    many_short_runs(8, 3000);
    many_short_runs(17, 500);

    wake_from_sleep(2, 30);
    wake_from_sleep(8, 10);

    /* back-to-back runs that need every thread, oversubscribed */
    CHECK(lmc_pool_init(&pool, 8, &err) == LMC_OK);
    int ok = 1;
    for (int r = 0; r < 300; r++) ok &= meet(pool);
    CHECK(ok);
    lmc_pool_free(pool);

    if (failures) {
        fprintf(stderr, "test_threadpool: %d failures\n", failures);
        return 1;
    }
    printf("test_threadpool: ok\n");
    return 0;
}
