/* comm.h — the communication interface every multi-device feature goes
 * through (data/tensor/pipeline parallelism, ZeRO). A table of collectives
 * over a group of `world` ranks with four implementations:
 *   single  world size 1 (comm_single.c): collectives are copies or no-ops;
 *   tcp     host buffers over a full mesh of TCP sockets set up by a
 *           rendezvous at MASTER_ADDR:MASTER_PORT (torchrun/Slurm style);
 *   mpi     host buffers over MPI point-to-point (mpirun), when built with
 *           MPI (LMC_HAVE_MPI);
 *   nccl    device buffers through libnccl (dlopen'd), bootstrapped over a
 *           host communicator (the unique id is broadcast through it).
 * tcp and mpi share one set of collective algorithms (comm_host.c) that
 * reduce in a fixed rank order: every rank gets the same bits, and the
 * result does not depend on message timing. Buffers are in the memory of the
 * backend the communicator was made for (`device_buffers`). Nothing above
 * src/dist/ knows which implementation runs.
 *
 * Every rank must issue the same collectives in the same order. A lost
 * rank (its process died, its socket closed) or no progress within the
 * communicator's timeout fails the call with LMC_ERR_IO and a message
 * naming the rank; the communicator is then broken and every later call
 * fails the same way. Free it before exiting: the tcp communicator then
 * tells the other ranks which rank was lost, so their messages name it too
 * (it waits up to 10 s for them to hang up). */
#ifndef LMC_COMM_H
#define LMC_COMM_H

#include "lmc.h"
#include "core/dtype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lmc_reduce_op { LMC_REDUCE_SUM = 0, LMC_REDUCE_MAX, LMC_REDUCE_AVG };

/* An operation started asynchronously; `wait` completes it and frees it. */
struct lmc_comm_work;

struct lmc_comm {
    const char *name;  /* "single", "tcp", "mpi", "nccl" */
    int rank, world;
    int local_rank;    /* rank among the processes of this host (GPU choice) */
    bool device_buffers; /* buffers are device memory (nccl) */
    void *ctx;
    /* In place: buf (count elements of dtype) becomes the reduction over ranks. */
    lmc_status (*all_reduce)(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dtype,
                             enum lmc_reduce_op op, lmc_err *err);
    /* buf on `root` is copied to every rank's buf. */
    lmc_status (*broadcast)(struct lmc_comm *c, void *buf, size_t bytes, int root, lmc_err *err);
    /* recv (world * count elements) gets every rank's send (count elements), in rank order. */
    lmc_status (*all_gather)(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                             enum lmc_dtype dtype, lmc_err *err);
    /* recv (count elements) gets this rank's slice of the reduction of send (world * count). */
    lmc_status (*reduce_scatter)(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                 enum lmc_dtype dtype, enum lmc_reduce_op op, lmc_err *err);
    lmc_status (*barrier)(struct lmc_comm *c, lmc_err *err);
    /* Point to point (model/pipeline parallelism): bytes from this rank to
     * `peer`, matched by a recv of the same size there. */
    lmc_status (*send)(struct lmc_comm *c, const void *buf, size_t bytes, int peer, lmc_err *err);
    lmc_status (*recv)(struct lmc_comm *c, void *buf, size_t bytes, int peer, lmc_err *err);
    /* All-to-all with per-rank sizes (expert parallelism): send_counts[p]
     * elements of dtype at send + send_offs[p] go to rank p, and
     * recv_counts[p] elements from rank p land at recv + recv_offs[p] (all in
     * elements; offsets and counts of `world` entries each). recv_counts[p]
     * must equal rank p's send_counts[this rank] (as a send's size must match
     * its recv); any count may be 0 (a rank may send or receive nothing); the
     * part to itself is copied. send and recv must not overlap. */
    lmc_status (*alltoallv)(struct lmc_comm *c, const void *send, const int64_t *send_counts,
                            const int64_t *send_offs, void *recv, const int64_t *recv_counts,
                            const int64_t *recv_offs, enum lmc_dtype dtype, lmc_err *err);

    /* Asynchronous forms: the same contracts, started in issue order; the
     * buffers must stay untouched until `wait` returns. *w is NULL after a
     * failed start. Every started work must be waited on. */
    lmc_status (*iall_reduce)(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dtype,
                              enum lmc_reduce_op op, struct lmc_comm_work **w, lmc_err *err);
    lmc_status (*ireduce_scatter)(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                  enum lmc_dtype dtype, enum lmc_reduce_op op,
                                  struct lmc_comm_work **w, lmc_err *err);
    lmc_status (*iall_gather)(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                              enum lmc_dtype dtype, struct lmc_comm_work **w, lmc_err *err);
    /* Completes w (NULL: nothing) and frees it; the work's status. */
    lmc_status (*wait)(struct lmc_comm *c, struct lmc_comm_work *w, lmc_err *err);

    void (*free)(struct lmc_comm *c);
};

/* Sub-communicators (as MPI_Comm_split; comm_split.c): every rank of parent
 * calls it; the ranks passing the same color >= 0 form one communicator
 * *sub, ranked by (key, parent rank). A host parent's subs share its
 * transport: use the parent and its subs one at a time (no async work
 * outstanding on one while another runs; every rank in the same order), and
 * free the subs before the parent. A world-1 group is a single
 * communicator. nccl parents: LMC_ERR_UNSUPPORTED. */
lmc_status lmc_comm_split(struct lmc_comm *parent, int color, int key, struct lmc_comm *sub, lmc_err *err);

/* World size 1: collectives are copies or no-ops; async works complete at start. */
void lmc_comm_single_init(struct lmc_comm *c);

/* Seconds a collective may wait for a peer before failing (LMC_DIST_TIMEOUT,
 * default 300). */
double lmc_comm_default_timeout(void);

/* ---- The tcp implementation: a full mesh of sockets over `world` ranks.
 * Rank 0 listens at addr:port (or on listen_fd >= 0, an already bound and
 * listening socket, which it takes over: tests let the OS pick the port);
 * every other rank connects there (retrying until the timeout) and learns
 * its peers' addresses. Ranks that disagree on world, or two ranks with one
 * number, are refused with a message naming them. */
struct lmc_comm_tcp_opts {
    int rank, world, local_rank;
    const char *addr;   /* rank 0's host name or IPv4 address */
    int port;
    int listen_fd;      /* rank 0 only: -1 = bind addr:port */
    double timeout_s;   /* <= 0: lmc_comm_default_timeout() */
};
lmc_status lmc_comm_tcp_init(struct lmc_comm *c, const struct lmc_comm_tcp_opts *o, lmc_err *err);

/* ---- The mpi implementation over MPI_COMM_WORLD (initialises MPI with
 * MPI_THREAD_SERIALIZED unless already initialised; finalises it in free
 * when it initialised it). LMC_ERR_UNSUPPORTED when built without MPI. */
lmc_status lmc_comm_mpi_init(struct lmc_comm *c, double timeout_s, lmc_err *err);
bool lmc_comm_mpi_available(void);

/* ---- The nccl implementation on CUDA device `device` (buffers are device
 * memory of that device; work runs on the communicator's own stream and
 * `wait` blocks the host until it is done). host is a started host
 * communicator (tcp or mpi) used to broadcast the NCCL unique id and kept
 * for the lifetime of c (c->free frees it too). libnccl.so.2 and
 * libcudart.so are opened with dlopen; LMC_ERR_UNSUPPORTED when they are
 * missing. */
lmc_status lmc_comm_nccl_init(struct lmc_comm *c, struct lmc_comm *host, int device, lmc_err *err);

/* ---- Launch environments. */
enum lmc_launcher { LMC_LAUNCH_NONE = 0, LMC_LAUNCH_MPI, LMC_LAUNCH_TORCHRUN, LMC_LAUNCH_SLURM };

struct lmc_dist_env {
    enum lmc_launcher launcher;
    int rank, world, local_rank;
    int local_world;    /* processes on this host (0: the launcher does not say) */
    char master_addr[256];
    int master_port;
};

/* Reads the launch environment through getenv_fn (getenv when NULL):
 * mpirun (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK, PMI_RANK/PMI_SIZE), torchrun
 * (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), Slurm
 * (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, with MASTER_ADDR/MASTER_PORT);
 * local_world from OMPI_COMM_WORLD_LOCAL_SIZE / MPI_LOCALNRANKS,
 * LOCAL_WORLD_SIZE, SLURM_NTASKS_PER_NODE.
 * No variables: LMC_LAUNCH_NONE, rank 0 of 1. Malformed or inconsistent
 * values are refused naming the variable. */
typedef const char *(*lmc_getenv_fn)(const char *name, void *user);
lmc_status lmc_dist_env_parse(struct lmc_dist_env *e, lmc_getenv_fn getenv_fn, void *user,
                              lmc_err *err);

/* CPU threads for one rank: the online cores split among the ranks of
 * this host (local_world; all of them when unknown), at least 1. */
int lmc_dist_cpu_threads(const struct lmc_dist_env *e, int online_cores);

/* Starts the communicator this process was launched for: single without a
 * launcher, mpi under mpirun, tcp under torchrun/Slurm variables; with
 * device >= 0 a nccl communicator on top (device LOCAL_RANK when device is
 * LMC_DIST_DEVICE_LOCAL). */
#define LMC_DIST_HOST (-1)
#define LMC_DIST_DEVICE_LOCAL (-2)
lmc_status lmc_dist_init(struct lmc_comm *c, int device, lmc_err *err);

/* ---- Helpers every distributed trainer needs. */

/* Rank r's part of n items split into world contiguous, disjoint parts (the
 * first n % world parts one item longer): [*begin, *begin + *count). */
void lmc_dist_slice(int64_t n, int rank, int world, int64_t *begin, int64_t *count);

/* Refuses to start when ranks disagree on `desc` (a text naming the model,
 * batch and options that must match): every rank gets the same error,
 * naming the first rank whose description differs from rank 0's and both
 * descriptions. Host communicators only. */
lmc_status lmc_dist_check_same(struct lmc_comm *c, const char *what, const char *desc,
                               lmc_err *err);

/* The argument check every alltoallv implementation makes: known dtype,
 * counts and offsets >= 0, every part's end (offset + count, in bytes)
 * without overflow; *send_bytes / *recv_bytes the extents the parts reach
 * (either pointer may be NULL). LMC_ERR_ARG naming the rank and part. */
lmc_status lmc_comm_alltoallv_check(const struct lmc_comm *c, const int64_t *send_counts,
                                    const int64_t *send_offs, const int64_t *recv_counts,
                                    const int64_t *recv_offs, enum lmc_dtype dtype,
                                    size_t *send_bytes, size_t *recv_bytes, lmc_err *err);

/* lmc_log on rank 0 only (progress lines, metrics). */
void lmc_dist_log(const struct lmc_comm *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
