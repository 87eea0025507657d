/* xport_mpi.c — the mpi communicator's transport: transfers as MPI_Isend /
 * MPI_Irecv on MPI_COMM_WORLD, progressed with MPI_Testall until done or
 * until the timeout passes (then the message names the ranks whose data
 * never came). The collectives themselves are comm_host.c's, which reduce
 * in a fixed rank order (MPI's own reductions pick their order by message
 * size and process count, so results could differ between world sizes and
 * runs). LMC_DIST_MPI_NATIVE=1 hands all-reduce, reduce-scatter and
 * all-gather to MPI's own algorithms instead (MPI_Iallreduce,
 * MPI_Ireduce_scatter_block, MPI_Iallgather): maybe faster on many ranks,
 * but the order of the sums is MPI's. Only the communication thread calls
 * MPI after MPI_Init_thread (MPI_THREAD_SERIALIZED). Compiled to a stub
 * without LMC_HAVE_MPI. */
#include "dist/comm_host.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LMC_HAVE_MPI
#include <mpi.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

#define CHUNK ((size_t)1 << 30) /* MPI counts are int: larger messages go in pieces */

struct mpi_ctx {
    bool we_initialised;
};

bool lmc_comm_mpi_available(void) { return true; }

static lmc_status mpi_exchange(struct lmc_xport *t, struct lmc_xfer *x, int n, const char *what,
                               lmc_err *err) {
    size_t nreq = 0;
    for (int i = 0; i < n; i++) nreq += x[i].bytes ? (x[i].bytes + CHUNK - 1) / CHUNK : 0;
    MPI_Request *req = malloc(sizeof *req * (nreq + 1));
    int *owner = malloc(sizeof *owner * (nreq + 1));
    if (!req || !owner) {
        free(req), free(owner);
        return lmc_err_set(err, LMC_ERR_OOM, "comm: out of memory");
    }
    size_t k = 0;
    int rc = MPI_SUCCESS;
    for (int i = 0; i < n && rc == MPI_SUCCESS; i++) {
        for (size_t o = 0; o < x[i].bytes && rc == MPI_SUCCESS; o += CHUNK) {
            int len = (int)LMC_MIN(CHUNK, x[i].bytes - o);
            char *p = (char *)x[i].buf + o;
            owner[k] = i;
            rc = x[i].is_send ? MPI_Isend(p, len, MPI_BYTE, x[i].peer, 7, MPI_COMM_WORLD, &req[k])
                              : MPI_Irecv(p, len, MPI_BYTE, x[i].peer, 7, MPI_COMM_WORLD, &req[k]);
            k++;
        }
    }
    lmc_status st = LMC_OK;
    if (rc != MPI_SUCCESS) {
        st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: MPI could not start %s (error %d)", t->rank, what, rc);
        goto out;
    }
    double deadline = lmc_time_now() + t->timeout_s;
    long spins = 0;
    for (;;) {
        int flag = 0;
        rc = MPI_Testall((int)k, req, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) {
            st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: MPI failed during %s (error %d)", t->rank, what, rc);
            goto out;
        }
        if (flag) break;
        if (lmc_time_now() > deadline) {
            char who[256] = "";
            size_t w = 0;
            for (size_t r = 0; r < k && w + 16 < sizeof who; r++) {
                int done = 0;
                MPI_Test(&req[r], &done, MPI_STATUS_IGNORE);
                if (!done) w += (size_t)snprintf(who + w, sizeof who - w, "%s%d", w ? ", " : "", x[owner[r]].peer);
            }
            st = lmc_err_set(err, LMC_ERR_IO,
                             "dist: rank %d: no progress from rank %s within %.0f s during %s "
                             "(a rank stalled or died; LMC_DIST_TIMEOUT sets the limit)",
                             t->rank, who, t->timeout_s, what);
            goto out; /* the requests are abandoned: the communicator is broken */
        }
        /* give the core back to other ranks (oversubscribed runs) */
        if (++spins > 64) {
            struct timespec ts = {0, spins > 4096 ? 1000000 : 20000};
            nanosleep(&ts, NULL);
        } else {
            sched_yield();
        }
    }
out:
    free(req);
    free(owner);
    return st;
}

/* Waits for one request until the timeout (MPI does not say which rank
 * holds a collective up). */
static lmc_status wait_req(struct lmc_xport *t, MPI_Request *req, const char *what, lmc_err *err) {
    double deadline = lmc_time_now() + t->timeout_s;
    for (long spins = 0;;) {
        int flag = 0;
        if (MPI_Test(req, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: MPI failed during %s", t->rank, what);
        if (flag) return LMC_OK;
        if (lmc_time_now() > deadline)
            return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: %s (MPI's own) did not finish within %.0f s "
                               "(a rank stalled or died; LMC_DIST_TIMEOUT sets the limit)", t->rank, what,
                               t->timeout_s);
        /* MPI progresses a non-blocking collective only inside MPI calls,
         * but busy testing starves the other ranks of an oversubscribed
         * machine (measured: slower still); back off as mpi_exchange does */
        if (++spins > 64) {
            struct timespec ts = {0, spins > 4096 ? 1000000 : 20000};
            nanosleep(&ts, NULL);
        } else {
            sched_yield();
        }
    }
}

static MPI_Datatype mpi_type(enum lmc_dtype dt) {
    switch (dt) {
    case LMC_DTYPE_F32: return MPI_FLOAT;
    case LMC_DTYPE_F64: return MPI_DOUBLE;
    case LMC_DTYPE_I32: return MPI_INT32_T;
    case LMC_DTYPE_I64: return MPI_INT64_T;
    case LMC_DTYPE_U8:
    case LMC_DTYPE_BOOL: return MPI_UINT8_T;
    case LMC_DTYPE_I8: return MPI_INT8_T;
    default: return MPI_DATATYPE_NULL;
    }
}

/* SUM and MAX of the reducible types with int counts; the rest (AVG,
 * aliasing MPI does not allow, huge counts) stays with comm_host.c. */
static bool native_ok(enum lmc_dtype dt, enum lmc_reduce_op op, int64_t count, bool reduce) {
    if (count <= 0 || count > INT32_MAX || mpi_type(dt) == MPI_DATATYPE_NULL) return false;
    return !reduce || ((op == LMC_REDUCE_SUM || op == LMC_REDUCE_MAX) &&
                       (dt == LMC_DTYPE_F32 || dt == LMC_DTYPE_F64 || dt == LMC_DTYPE_I32 || dt == LMC_DTYPE_I64));
}

static lmc_status native_all_reduce(struct lmc_xport *t, void *buf, int64_t count, enum lmc_dtype dt,
                                    enum lmc_reduce_op op, lmc_err *err) {
    if (!native_ok(dt, op, count, true)) return LMC_ERR_UNSUPPORTED;
    MPI_Request req;
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, mpi_type(dt), op == LMC_REDUCE_MAX ? MPI_MAX : MPI_SUM,
                       MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: MPI_Iallreduce failed", t->rank);
    return wait_req(t, &req, "all_reduce", err);
}

static lmc_status native_reduce_scatter(struct lmc_xport *t, const void *send, void *recv, int64_t count,
                                        enum lmc_dtype dt, enum lmc_reduce_op op, lmc_err *err) {
    size_t es = (size_t)lmc_dtype_size(dt);
    const char *s0 = send, *s1 = s0 + (size_t)count * (size_t)t->world * es, *r = recv;
    if (!native_ok(dt, op, count, true) || (r + (size_t)count * es > s0 && r < s1)) return LMC_ERR_UNSUPPORTED;
    MPI_Request req;
    if (MPI_Ireduce_scatter_block(send, recv, (int)count, mpi_type(dt), op == LMC_REDUCE_MAX ? MPI_MAX : MPI_SUM,
                                  MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: MPI_Ireduce_scatter_block failed", t->rank);
    return wait_req(t, &req, "reduce_scatter", err);
}

static lmc_status native_all_gather(struct lmc_xport *t, const void *send, void *recv, int64_t count,
                                    enum lmc_dtype dt, lmc_err *err) {
    if (!native_ok(dt, LMC_REDUCE_SUM, count, false)) return LMC_ERR_UNSUPPORTED;
    size_t es = (size_t)lmc_dtype_size(dt);
    const char *mine = (const char *)recv + (size_t)t->rank * (size_t)count * es;
    const char *s0 = send, *r0 = recv, *r1 = r0 + (size_t)count * (size_t)t->world * es;
    bool in_place = s0 == mine;
    if (!in_place && s0 + (size_t)count * es > r0 && s0 < r1) return LMC_ERR_UNSUPPORTED;
    MPI_Request req;
    if (MPI_Iallgather(in_place ? MPI_IN_PLACE : send, (int)count, mpi_type(dt), recv, (int)count, mpi_type(dt),
                       MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: MPI_Iallgather failed", t->rank);
    return wait_req(t, &req, "all_gather", err);
}

static void mpi_free(struct lmc_xport *t) {
    if (!t) return;
    struct mpi_ctx *m = t->ctx;
    if (m && m->we_initialised) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
    free(m);
    free(t);
}

lmc_status lmc_comm_mpi_init(struct lmc_comm *c, double timeout_s, lmc_err *err) {
    memset(c, 0, sizeof *c);
    struct lmc_xport *t = calloc(1, sizeof *t);
    struct mpi_ctx *m = calloc(1, sizeof *m);
    if (!t || !m) {
        free(t), free(m);
        return lmc_err_set(err, LMC_ERR_OOM, "dist: out of memory");
    }
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
            free(t), free(m);
            return lmc_err_set(err, LMC_ERR_IO, "dist: MPI_Init_thread failed");
        }
        m->we_initialised = true;
    } else {
        MPI_Query_thread(&provided);
    }
    t->ctx = m;
    t->free = mpi_free;
    if (provided < MPI_THREAD_SERIALIZED) {
        mpi_free(t);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "dist: this MPI gives thread level %d; lmc needs MPI_THREAD_SERIALIZED", provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &t->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &t->world);
    t->timeout_s = timeout_s > 0 ? timeout_s : lmc_comm_default_timeout();
    t->exchange = mpi_exchange;
    const char *nat = getenv("LMC_DIST_MPI_NATIVE");
    bool native = nat && *nat && strcmp(nat, "0");
    if (native) {
        t->native_all_reduce = native_all_reduce;
        t->native_reduce_scatter = native_reduce_scatter;
        t->native_all_gather = native_all_gather;
    }
    return lmc_comm_host_init(c, t, native ? "mpi-native" : "mpi", 0, err);
}

#else

bool lmc_comm_mpi_available(void) { return false; }

lmc_status lmc_comm_mpi_init(struct lmc_comm *c, double timeout_s, lmc_err *err) {
    (void)timeout_s;
    memset(c, 0, sizeof *c);
    return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                       "dist: launched by mpirun but this lmc was built without MPI (install "
                       "libopenmpi-dev and rebuild), or launch with torchrun-style variables "
                       "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
}

#endif
