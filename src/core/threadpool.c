/* threadpool.c — persistent worker threads for data-parallel loops.
 *
 * A run publishes (fn, arg, n_tasks), resets the task counter and bumps a
 * generation word; workers notice the new generation by spinning for a short
 * while after their last run, otherwise by sleeping on the word with a futex.
 * Tasks are claimed with a compare-and-swap on a 64-bit counter that carries
 * the generation in its high half, so a worker that wakes late can never
 * claim a task of a job it did not read. The caller's thread works alongside
 * the workers and returns as soon as every task is done: it never waits for
 * a worker that was descheduled before claiming anything (the machine may be
 * oversubscribed), it just does the work itself.
 *
 * Decode calls this ~100 times per token, so the hot path is: no syscalls
 * while workers are spinning, one FUTEX_WAKE only when someone sleeps. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/threadpool.h"
#include "core/core.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* How long an idle worker keeps spinning before it sleeps (nanoseconds). */
#define SPIN_NS 400000LL

struct worker {
    struct lmc_pool *pool;
    int index;
    pthread_t tid;
};

struct lmc_pool {
    int n_threads;
    struct worker *workers; /* n_threads - 1 */

    /* the published job; read by workers only through a validated claim */
    _Atomic(lmc_pool_fn) fn;
    _Atomic(void *) arg;
    _Atomic int64_t n_tasks;

    _Alignas(64) _Atomic uint32_t gen;   /* futex word: bumped per run */
    _Atomic int sleepers;                /* workers inside FUTEX_WAIT */
    _Atomic int stop;
    _Alignas(64) _Atomic uint64_t ctr;   /* gen << 32 | next unclaimed task */
    _Alignas(64) _Atomic int64_t done;   /* tasks finished this run */
};

static long futex_op(_Atomic uint32_t *addr, int op, uint32_t val) {
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claims and runs tasks of generation g until none is left (or the job is
 * no longer g). The job's fields are read before each claim and trusted
 * only if the claim's CAS succeeds: the caller closes the counter before it
 * rewrites them (release fence there, acquire fence here), so a successful
 * CAS on generation g proves the fields read were g's. */
static void run_tasks(struct lmc_pool *p, uint32_t g, int thread) {
    uint64_t c = atomic_load_explicit(&p->ctr, memory_order_acquire);
    int64_t ran = 0; /* added to done once, when this thread finds no task left (one write to the shared line, not one per task) */
    for (;;) {
        if ((uint32_t)(c >> 32) != g) break;
        lmc_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *arg = atomic_load_explicit(&p->arg, memory_order_relaxed);
        uint64_t n = (uint64_t)atomic_load_explicit(&p->n_tasks, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if ((c & 0xffffffffu) >= n) break;
        if (!atomic_compare_exchange_weak_explicit(&p->ctr, &c, c + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue;
        fn(arg, (int64_t)(c & 0xffffffffu), thread);
        ran++;
        c = atomic_load_explicit(&p->ctr, memory_order_acquire);
    }
    if (ran) atomic_fetch_add_explicit(&p->done, ran, memory_order_release);
}

/* Waits until gen differs from `seen`; returns the new value. */
static uint32_t wait_gen(struct lmc_pool *p, uint32_t seen) {
    uint32_t g;
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        CPU_RELAX();
        if ((i & 4095) == 4095) sched_yield(); /* let a runnable thread have this core */
        if ((i & 255) == 255) {
            int64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) break;
        }
    }
    for (;;) {
        atomic_fetch_add(&p->sleepers, 1); /* seq_cst: pairs with the run's gen bump */
        g = atomic_load(&p->gen);
        if (g == seen) futex_op(&p->gen, FUTEX_WAIT_PRIVATE, seen);
        atomic_fetch_sub(&p->sleepers, 1);
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
    }
}

static void *worker_main(void *a) {
    struct worker *w = a;
    struct lmc_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        seen = wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        run_tasks(p, seen, w->index);
    }
    return NULL;
}

lmc_status lmc_pool_init(struct lmc_pool **pool, int n_threads, lmc_err *err) {
    *pool = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)LMC_MIN(n, 256) : 1;
    }
    if (n_threads > 1024)
        return lmc_err_set(err, LMC_ERR_ARG, "thread pool: %d threads requested, at most 1024",
                           n_threads);
    struct lmc_pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "thread pool: out of memory");
    memset(p, 0, sizeof *p);
    p->n_threads = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->ctr, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->arg, NULL);
    atomic_init(&p->n_tasks, 0);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            free(p);
            return lmc_err_set(err, LMC_ERR_OOM, "thread pool: out of memory");
        }
    }
    for (int i = 0; i < n_threads - 1; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i + 1;
        int rc = pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            p->n_threads = i + 1; /* lmc_pool_free joins the i started ones */
            lmc_pool_free(p);
            return lmc_err_set(err, LMC_ERR_OOM, "thread pool: cannot start thread %d of %d: %s",
                               i + 1, n_threads, strerror(rc));
        }
    }
    *pool = p;
    return LMC_OK;
}

void lmc_pool_free(struct lmc_pool *p) {
    if (!p) return;
    if (p->n_threads > 1) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_op(&p->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
        for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->workers[i].tid, NULL);
    }
    free(p->workers);
    free(p);
}

int lmc_pool_threads(const struct lmc_pool *p) { return p ? p->n_threads : 1; }

void lmc_pool_run(struct lmc_pool *p, int64_t n_tasks, lmc_pool_fn fn, void *arg) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    LMC_ASSERT(n_tasks < ((int64_t)1 << 32) - 1);
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    /* close the counter (no claim of any generation can succeed), then
     * rewrite the job, then open it for generation g */
    atomic_store_explicit(&p->ctr, (uint64_t)g << 32 | 0xffffffffu, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ctr, (uint64_t)g << 32, memory_order_release);
    atomic_store(&p->gen, g); /* seq_cst: publishes the job, pairs with sleepers */
    if (atomic_load(&p->sleepers) > 0) futex_op(&p->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
    run_tasks(p, g, 0);
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; i++) {
        CPU_RELAX();
        /* a worker holding a task may have been descheduled */
        if ((i & 1023) == 1023) sched_yield();
    }
}
