/* comm_single.c — the world-size-1 communicator: every collective over one
 * rank is the identity (in place) or a copy (out of place). Host memory. */
#include "dist/comm.h"
#include "core/core.h"

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

static lmc_status single_p2p(struct lmc_comm *c, int peer, lmc_err *err) {
    (void)c;
    return lmc_err_set(err, LMC_ERR_ARG, "comm: send/recv with peer %d in a world of 1", peer);
}
static lmc_status single_send(struct lmc_comm *c, const void *buf, size_t bytes, int peer,
                              lmc_err *err) {
    (void)buf, (void)bytes;
    return single_p2p(c, peer, err);
}
static lmc_status single_recv(struct lmc_comm *c, void *buf, size_t bytes, int peer, lmc_err *err) {
    (void)buf, (void)bytes;
    return single_p2p(c, peer, err);
}

static lmc_status single_alltoallv(struct lmc_comm *c, const void *send, const int64_t *send_counts,
                                   const int64_t *send_offs, void *recv, const int64_t *recv_counts,
                                   const int64_t *recv_offs, enum lmc_dtype dtype, lmc_err *err) {
    lmc_status s = lmc_comm_alltoallv_check(c, send_counts, send_offs, recv_counts, recv_offs, dtype,
                                            NULL, NULL, err);
    if (s) return s;
    if (send_counts[0] != recv_counts[0])
        return lmc_err_set(err, LMC_ERR_ARG, "comm: alltoallv sends %lld elements to itself and receives %lld",
                           (long long)send_counts[0], (long long)recv_counts[0]);
    size_t es = (size_t)lmc_dtype_size(dtype);
    if (send_counts[0] > 0)
        memmove((char *)recv + (size_t)recv_offs[0] * es, (const char *)send + (size_t)send_offs[0] * es,
                (size_t)send_counts[0] * es);
    return LMC_OK;
}

/* Async forms complete at start: the work handle is NULL. */
static lmc_status single_iall_reduce(struct lmc_comm *c, void *buf, int64_t count,
                                     enum lmc_dtype dtype, enum lmc_reduce_op op,
                                     struct lmc_comm_work **w, lmc_err *err) {
    *w = NULL;
    return single_all_reduce(c, buf, count, dtype, op, err);
}
static lmc_status single_ireduce_scatter(struct lmc_comm *c, const void *send, void *recv,
                                         int64_t count, enum lmc_dtype dtype,
                                         enum lmc_reduce_op op, struct lmc_comm_work **w,
                                         lmc_err *err) {
    *w = NULL;
    return single_reduce_scatter(c, send, recv, count, dtype, op, err);
}
static lmc_status single_iall_gather(struct lmc_comm *c, const void *send, void *recv,
                                     int64_t count, enum lmc_dtype dtype,
                                     struct lmc_comm_work **w, lmc_err *err) {
    *w = NULL;
    return single_all_gather(c, send, recv, count, dtype, err);
}
static lmc_status single_wait(struct lmc_comm *c, struct lmc_comm_work *w, lmc_err *err) {
    (void)c, (void)err;
    LMC_ASSERT(w == NULL);
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
    c->send = single_send;
    c->recv = single_recv;
    c->alltoallv = single_alltoallv;
    c->iall_reduce = single_iall_reduce;
    c->ireduce_scatter = single_ireduce_scatter;
    c->iall_gather = single_iall_gather;
    c->wait = single_wait;
    c->free = single_free;
}
