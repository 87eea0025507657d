/* comm_single.c — the world-size-1 communicator: every collective over one
 * rank is the identity (in place) or a copy (out of place). Host memory. */
#include "dist/comm.h"

#include <string.h>

static lmc_status check_dtype(enum lmc_dtype dt, int64_t count, lmc_err *err) {
    if (lmc_dtype_size(dt) == 0)
        return lmc_err_set(err, LMC_ERR_ARG, "comm: unknown dtype %d", (int)dt);
    if (count < 0) return lmc_err_set(err, LMC_ERR_ARG, "comm: negative count %lld", (long long)count);
    return LMC_OK;
}

static lmc_status single_all_reduce(struct lmc_comm *c, void *buf, int64_t count,
                                    enum lmc_dtype dtype, enum lmc_reduce_op op, lmc_err *err) {
    (void)c, (void)buf, (void)op;
    return check_dtype(dtype, count, err);
}

static lmc_status single_broadcast(struct lmc_comm *c, void *buf, size_t bytes, int root,
                                   lmc_err *err) {
    (void)c, (void)buf, (void)bytes;
    if (root != 0) return lmc_err_set(err, LMC_ERR_ARG, "comm: broadcast root %d in a world of 1", root);
    return LMC_OK;
}

static lmc_status single_all_gather(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                    enum lmc_dtype dtype, lmc_err *err) {
    (void)c;
    lmc_status s = check_dtype(dtype, count, err);
    if (!s && send != recv) memmove(recv, send, (size_t)count * (size_t)lmc_dtype_size(dtype));
    return s;
}

static lmc_status single_reduce_scatter(struct lmc_comm *c, const void *send, void *recv,
                                        int64_t count, enum lmc_dtype dtype, enum lmc_reduce_op op,
                                        lmc_err *err) {
    (void)op;
    return single_all_gather(c, send, recv, count, dtype, err);
}

static lmc_status single_barrier(struct lmc_comm *c, lmc_err *err) {
    (void)c, (void)err;
    return LMC_OK;
}

static void single_free(struct lmc_comm *c) { memset(c, 0, sizeof *c); }

void lmc_comm_single_init(struct lmc_comm *c) {
    memset(c, 0, sizeof *c);
    c->name = "single";
    c->rank = 0;
    c->world = 1;
    c->all_reduce = single_all_reduce;
    c->broadcast = single_broadcast;
    c->all_gather = single_all_gather;
    c->reduce_scatter = single_reduce_scatter;
    c->barrier = single_barrier;
    c->free = single_free;
}
