/* threadpool.h — a fixed pool of worker threads for data-parallel loops.
 * The caller's thread takes part, so a pool of n threads starts n-1
 * workers. Owned by a context (the CPU backend); never global. */
#ifndef LMC_THREADPOOL_H
#define LMC_THREADPOOL_H

#include "lmc.h"

#include <stdint.h>

struct lmc_pool; /* opaque */

/* Task body: called once for each task index in [0, n_tasks), from the
 * thread numbered `thread` in [0, n_threads). */
typedef void (*lmc_pool_fn)(void *arg, int64_t task, int thread);

lmc_status lmc_pool_init(struct lmc_pool **pool, int n_threads, lmc_err *err);
void lmc_pool_free(struct lmc_pool *pool);
int lmc_pool_threads(const struct lmc_pool *pool);
/* Workers on (or about to enter) the futex sleep after their spin: for
 * tests of the wake-up path. */
int lmc_pool_sleeping(struct lmc_pool *pool);
/* Runs fn over n_tasks tasks, distributing them over the threads, and
 * returns when all are done. Not reentrant from inside a task. */
void lmc_pool_run(struct lmc_pool *pool, int64_t n_tasks, lmc_pool_fn fn, void *arg);
/* With LMC_TRACE_POOL set: records `value` (e.g. the rows of the forward
 * an op starts) between the runs; otherwise nothing. */
void lmc_pool_note(struct lmc_pool *pool, int64_t value);

#endif
