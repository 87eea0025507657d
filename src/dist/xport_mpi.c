/* xport_mpi.c — the mpi communicator's transport: transfers as MPI_Isend /
 * MPI_Irecv on MPI_COMM_WORLD, progressed with MPI_Testall until done or
 * until the timeout passes (then the message names the ranks whose data
 * never came). The collectives themselves are comm_host.c's, which reduce
 * in a fixed rank order (MPI's own reductions pick their order by message
 * size and process count, so results could differ between world sizes and
 * runs). Only the communication thread calls MPI after MPI_Init_thread
 * (MPI_THREAD_SERIALIZED). Compiled to a stub without LMC_HAVE_MPI. */
#include "dist/comm_host.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LMC_HAVE_MPI
#include <mpi.h>
#include <sched.h>
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
    return lmc_comm_host_init(c, t, "mpi", 0, err);
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
