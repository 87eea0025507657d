/* threadpool.c — persistent worker threads for data-parallel loops.
 *
 * A run publishes (fn, arg) next to a generation word, opens the task
 * counter and bumps the generation; workers notice the new generation by
 * spinning for a short while after their last run, otherwise by sleeping on
 * the word with a futex. The task counter is one 64-bit word holding the
 * run's task count in its high half and the next unclaimed task in its low
 * half, so a claim is one fetch-and-add (no compare-and-swap loop: one
 * coherence transfer per claim) and validates itself: an index below the
 * count in the same word is a task of the run that opened the counter, and
 * that run's (fn, arg), written before the counter was opened (release),
 * cannot change while one of its tasks is unfinished (the caller waits for
 * every task before it publishes another run). A claim at or past the end
 * only bumps the index (at most once per thread and run it sees; the count
 * leaves room for that). The caller's thread works alongside the workers
 * and returns as soon as every task is done: it never waits for a worker
 * that was descheduled before claiming anything (the machine may be
 * oversubscribed), it just does the work itself.
 *
 * Decode calls this ~60 times per token, so the hot path is: no syscalls
 * while workers are spinning, one FUTEX_WAKE only when someone sleeps; a
 * worker's hand-off costs three cache-line transfers (the generation line
 * with the job, the counter, the done count). Spinning backs off to
 * sched_yield and then to the futex, so more threads than cores (tests,
 * a loaded machine) still make progress.
 *
 * LMC_TRACE_POOL=FILE (read once per pool): every run, one-task runs
 * included, is recorded (its function, task count, the times it was
 * published, the caller's own tasks ended, the last task ended, and the
 * workers' busy nanoseconds) and appended to FILE when the pool is freed
 * (a header line, then one line per run, lmc_pool_note's values between
 * them; bench/spec_trace_cpu.py reads it). Off, it costs one branch per
 * run. */
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
#include <dlfcn.h>
#include <stdio.h>
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

/* one recorded run (LMC_TRACE_POOL) */
struct trace_rec {
    lmc_pool_fn fn;
    int64_t n_tasks, t0, t_own, t_end, worker_ns, worker_first;
};
#define TRACE_MAX (1 << 20)

struct lmc_pool {
    int n_threads;
    char *trace_path;             /* NULL: no trace */
    struct trace_rec *trace;
    int64_t n_trace;
    _Atomic int64_t tr_worker_ns; /* this run's workers' busy time */
    _Atomic int64_t tr_first;     /* this run's first worker claim (ns) */
    struct worker *workers; /* n_threads - 1 */

    /* written once per run; the line workers spin on, so one miss brings
     * the new generation and the job together */
    _Alignas(64) _Atomic uint32_t gen;   /* futex word: bumped per run */
    _Atomic int sleepers;                /* workers inside FUTEX_WAIT */
    _Atomic int stop;
    _Atomic(lmc_pool_fn) fn;
    _Atomic(void *) arg;
    _Alignas(64) _Atomic uint64_t ctr;   /* n_tasks << 32 | next task index */
    _Alignas(64) _Atomic int64_t done;   /* tasks finished this run */
};

/* Room above a run's task count for claims past its end (at most two per
 * thread and run: one per generation a worker reads; at most 1024 threads). */
#define CTR_SLACK 4096u

static long futex_op(_Atomic uint32_t *addr, int op, uint32_t val) {
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claims and runs tasks until the counter's run has none left. */
static void run_tasks(struct lmc_pool *p, int thread) {
    int64_t t_in = p->trace && thread ? now_ns() : 0;
    int64_t ran = 0; /* added to done once, when this thread finds no task left (one write to the shared line, not one per task) */
    for (;;) {
        uint64_t c = atomic_fetch_add_explicit(&p->ctr, 1, memory_order_acquire);
        if ((c & 0xffffffffu) >= c >> 32) break;
        lmc_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *arg = atomic_load_explicit(&p->arg, memory_order_relaxed);
        fn(arg, (int64_t)(c & 0xffffffffu), thread);
        ran++;
    }
    if (ran && t_in) { /* before `done`: the caller reads these once every task is done */
        atomic_fetch_add_explicit(&p->tr_worker_ns, now_ns() - t_in, memory_order_relaxed);
        int64_t f = atomic_load_explicit(&p->tr_first, memory_order_relaxed);
        while ((f == 0 || t_in < f) &&
               !atomic_compare_exchange_weak_explicit(&p->tr_first, &f, t_in, memory_order_relaxed,
                                                      memory_order_relaxed)) {}
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
        run_tasks(p, w->index);
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
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            free(p);
            return lmc_err_set(err, LMC_ERR_OOM, "thread pool: out of memory");
        }
    }
    const char *tp = getenv("LMC_TRACE_POOL");
    if (tp && *tp) {
        p->trace = malloc(TRACE_MAX * sizeof *p->trace);
        p->trace_path = p->trace ? strdup(tp) : NULL;
        if (!p->trace_path) {
            free(p->trace);
            p->trace = NULL;
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

/* Writes the recorded runs: a header line, then one line per run (the
 * function as an offset into its object file, for nm). */
static void trace_dump(struct lmc_pool *p) {
    FILE *f = fopen(p->trace_path, "a"); /* one block per pool of the process */
    if (!f) return;
    fprintf(f, "# lmc pool trace: threads %d; fn_offset object n_tasks t0 t_own t_end worker_ns worker_first (ns)\n",
            p->n_threads);
    for (int64_t i = 0; i < p->n_trace; i++) {
        const struct trace_rec *r = &p->trace[i];
        Dl_info d;
        void *fp;
        memcpy(&fp, &r->fn, sizeof fp);
        long off = 0;
        const char *obj = "?";
        if (!fp) obj = "note";
        else if (dladdr(fp, &d) && d.dli_fbase) {
            off = (long)((const char *)fp - (const char *)d.dli_fbase);
            obj = d.dli_fname ? d.dli_fname : "?";
        }
        fprintf(f, "%lx %s %lld %lld %lld %lld %lld %lld\n", off, obj, (long long)r->n_tasks,
                (long long)r->t0, (long long)r->t_own, (long long)r->t_end, (long long)r->worker_ns,
                (long long)r->worker_first);
    }
    fclose(f);
}

void lmc_pool_free(struct lmc_pool *p) {
    if (!p) return;
    if (p->n_threads > 1) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_op(&p->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
        for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->workers[i].tid, NULL);
    }
    if (p->trace) trace_dump(p);
    free(p->trace);
    free(p->trace_path);
    free(p->workers);
    free(p);
}

int lmc_pool_threads(const struct lmc_pool *p) { return p ? p->n_threads : 1; }

int lmc_pool_sleeping(struct lmc_pool *p) { return p ? atomic_load(&p->sleepers) : 0; }

void lmc_pool_note(struct lmc_pool *p, int64_t value) {
    if (!p || !p->trace || p->n_trace >= TRACE_MAX) return;
    int64_t t = now_ns();
    p->trace[p->n_trace++] = (struct trace_rec){.fn = NULL, .n_tasks = value, .t0 = t, .t_own = t, .t_end = t};
}

void lmc_pool_run(struct lmc_pool *p, int64_t n_tasks, lmc_pool_fn fn, void *arg) {
    if (n_tasks <= 0) return;
    struct trace_rec *tr = p && p->trace && p->n_trace < TRACE_MAX ? &p->trace[p->n_trace++] : NULL;
    if (tr) *tr = (struct trace_rec){.fn = fn, .n_tasks = n_tasks, .t0 = now_ns()};
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        if (tr) tr->t_own = tr->t_end = now_ns();
        return;
    }
    if (tr) {
        atomic_store_explicit(&p->tr_worker_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&p->tr_first, 0, memory_order_relaxed);
    }
    LMC_ASSERT(n_tasks < ((int64_t)1 << 32) - CTR_SLACK);
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    /* the previous run is over (every task done), so no claim is valid
     * now: rewrite the job, then open the counter (release: a claim that
     * reads an index below the count reads this job) */
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ctr, (uint64_t)n_tasks << 32, memory_order_release);
    atomic_store(&p->gen, g); /* seq_cst: wakes spinners, pairs with sleepers */
    if (atomic_load(&p->sleepers) > 0) futex_op(&p->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
    run_tasks(p, 0);
    if (tr) tr->t_own = now_ns();
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; i++) {
        CPU_RELAX();
        /* a worker holding a task may have been descheduled */
        if ((i & 1023) == 1023) sched_yield();
    }
    if (tr) {
        tr->t_end = now_ns();
        tr->worker_ns = atomic_load_explicit(&p->tr_worker_ns, memory_order_relaxed);
        tr->worker_first = atomic_load_explicit(&p->tr_first, memory_order_relaxed);
    }
}
