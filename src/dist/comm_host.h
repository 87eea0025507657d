/* comm_host.h — inside src/dist: the transport under the host-memory
 * communicators (tcp, mpi). A transport moves bytes between pairs of ranks;
 * comm_host.c builds every collective on it, in a fixed rank order, and
 * runs the collectives on a worker thread so the async forms overlap with
 * the caller's compute. */
#ifndef LMC_DIST_COMM_HOST_H
#define LMC_DIST_COMM_HOST_H

#include "dist/comm.h"

/* One transfer of an exchange: send bytes at buf to peer, or receive bytes
 * from peer into buf. An exchange holds at most one send and one receive
 * per peer; messages between two ranks arrive in the order they were sent. */
struct lmc_xfer {
    int peer;
    bool is_send;
    void *buf;
    size_t bytes;
};

struct lmc_xport {
    int rank, world;
    double timeout_s;
    void *ctx;
    /* Runs the n transfers concurrently until all are done. A lost peer or
     * no progress within timeout_s fails with LMC_ERR_IO naming the peer(s)
     * and `what` (the collective). Called from one thread at a time. */
    lmc_status (*exchange)(struct lmc_xport *t, struct lmc_xfer *x, int n, const char *what,
                           lmc_err *err);
    void (*free)(struct lmc_xport *t);
    /* Optional (mpi with LMC_DIST_MPI_NATIVE=1): the transport's own
     * collectives, whose reduction order it picks. Each returns
     * LMC_ERR_UNSUPPORTED for a case it leaves to comm_host.c (then
     * nothing was communicated). */
    lmc_status (*native_all_reduce)(struct lmc_xport *t, void *buf, int64_t count, enum lmc_dtype dt,
                                    enum lmc_reduce_op op, lmc_err *err);
    lmc_status (*native_reduce_scatter)(struct lmc_xport *t, const void *send, void *recv, int64_t count,
                                        enum lmc_dtype dt, enum lmc_reduce_op op, lmc_err *err);
    lmc_status (*native_all_gather)(struct lmc_xport *t, const void *send, void *recv, int64_t count,
                                    enum lmc_dtype dt, lmc_err *err);
};

/* Makes c a communicator over t (owned by c from here on, freed by c->free,
 * also on failure). */
lmc_status lmc_comm_host_init(struct lmc_comm *c, struct lmc_xport *t, const char *name,
                              int local_rank, lmc_err *err);

/* The transport under host communicator c and the lock its worker holds
 * around each collective (sub-communicators share both: comm_split.c);
 * NULL when c is not a host communicator. */
#include <pthread.h>
struct lmc_xport *lmc_comm_host_xport(struct lmc_comm *c, pthread_mutex_t **lock);

#endif
