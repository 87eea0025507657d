/* comm_nccl.c — the nccl communicator: collectives on CUDA device buffers
 * through libnccl, opened with dlopen (like the CUDA backend's module) so
 * lmc builds and runs without NCCL or the CUDA runtime; only the handful of
 * NCCL/CUDA declarations used are restated here (the stable C ABI of NCCL 2
 * and the CUDA runtime 12).
 *
 * The communicator is created by ncclCommInitRank after rank 0's
 * ncclGetUniqueId is broadcast over a host communicator (tcp or mpi). Every
 * collective is issued on the communicator's own non-blocking stream and
 * followed by an event; `wait` polls the event and ncclCommGetAsyncError
 * until done, and past the timeout aborts the communicator (ncclCommAbort)
 * so a lost rank fails the call instead of hanging. The caller makes sure
 * the buffers' producers have finished before starting (the backend's
 * sync), since the backend's stream is not visible here.
 * Compiled everywhere; run only on GPU machines (multi-GPU issue). */
#include "dist/comm.h"
#include "core/core.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { char internal[128]; } nccl_unique_id;
typedef void *nccl_comm_t;
typedef void *cuda_stream_t;
typedef void *cuda_event_t;
enum { NCCL_SUCCESS = 0, NCCL_IN_PROGRESS = 7 };
enum { NCCL_INT8 = 0, NCCL_UINT8 = 1, NCCL_INT32 = 2, NCCL_INT64 = 4, NCCL_FLOAT16 = 6, NCCL_FLOAT32 = 7,
       NCCL_FLOAT64 = 8, NCCL_BFLOAT16 = 9 };
enum { NCCL_SUM = 0, NCCL_MAX = 2, NCCL_AVG = 4 };
enum { CUDA_SUCCESS = 0, CUDA_NOT_READY = 600 };

struct nccl_api {
    int (*get_unique_id)(nccl_unique_id *);
    int (*comm_init_rank)(nccl_comm_t *, int, nccl_unique_id, int);
    int (*comm_abort)(nccl_comm_t);
    int (*comm_destroy)(nccl_comm_t);
    int (*comm_get_async_error)(nccl_comm_t, int *);
    const char *(*get_error_string)(int);
    int (*all_reduce)(const void *, void *, size_t, int, int, nccl_comm_t, cuda_stream_t);
    int (*reduce_scatter)(const void *, void *, size_t, int, int, nccl_comm_t, cuda_stream_t);
    int (*all_gather)(const void *, void *, size_t, int, nccl_comm_t, cuda_stream_t);
    int (*broadcast)(const void *, void *, size_t, int, int, nccl_comm_t, cuda_stream_t);
    int (*send)(const void *, size_t, int, int, nccl_comm_t, cuda_stream_t);
    int (*recv)(void *, size_t, int, int, nccl_comm_t, cuda_stream_t);
    int (*group_start)(void);
    int (*group_end)(void);
    int (*set_device)(int);
    int (*stream_create)(cuda_stream_t *, unsigned);
    int (*stream_destroy)(cuda_stream_t);
    int (*event_create)(cuda_event_t *, unsigned);
    int (*event_record)(cuda_event_t, cuda_stream_t);
    int (*event_query)(cuda_event_t);
    int (*event_destroy)(cuda_event_t);
    const char *(*cuda_error_string)(int);
};

struct nccl_ctx {
    struct nccl_api api;
    struct lmc_comm host;
    nccl_comm_t comm;
    cuda_stream_t stream;
    double timeout_s;
    bool broken;
};

struct lmc_comm_work {
    cuda_event_t ev;
};

static lmc_status load_api(struct nccl_api *a, lmc_err *err) {
    void *nccl = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!nccl) nccl = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    void *rt = dlopen("libcudart.so.12", RTLD_NOW | RTLD_LOCAL);
    if (!rt) rt = dlopen("libcudart.so", RTLD_NOW | RTLD_LOCAL);
    if (!nccl || !rt)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "dist: cannot load %s (needed for GPU collectives): %s",
                           !nccl ? "libnccl.so.2" : "libcudart.so", dlerror());
    struct { void *lib; const char *name; void **slot; } syms[] = {
        {nccl, "ncclGetUniqueId", (void **)&a->get_unique_id},
        {nccl, "ncclCommInitRank", (void **)&a->comm_init_rank},
        {nccl, "ncclCommAbort", (void **)&a->comm_abort},
        {nccl, "ncclCommDestroy", (void **)&a->comm_destroy},
        {nccl, "ncclCommGetAsyncError", (void **)&a->comm_get_async_error},
        {nccl, "ncclGetErrorString", (void **)&a->get_error_string},
        {nccl, "ncclAllReduce", (void **)&a->all_reduce},
        {nccl, "ncclReduceScatter", (void **)&a->reduce_scatter},
        {nccl, "ncclAllGather", (void **)&a->all_gather},
        {nccl, "ncclBroadcast", (void **)&a->broadcast},
        {nccl, "ncclSend", (void **)&a->send},
        {nccl, "ncclRecv", (void **)&a->recv},
        {nccl, "ncclGroupStart", (void **)&a->group_start},
        {nccl, "ncclGroupEnd", (void **)&a->group_end},
        {rt, "cudaSetDevice", (void **)&a->set_device},
        {rt, "cudaStreamCreateWithFlags", (void **)&a->stream_create},
        {rt, "cudaStreamDestroy", (void **)&a->stream_destroy},
        {rt, "cudaEventCreateWithFlags", (void **)&a->event_create},
        {rt, "cudaEventRecord", (void **)&a->event_record},
        {rt, "cudaEventQuery", (void **)&a->event_query},
        {rt, "cudaEventDestroy", (void **)&a->event_destroy},
        {rt, "cudaGetErrorString", (void **)&a->cuda_error_string},
    };
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        *syms[i].slot = dlsym(syms[i].lib, syms[i].name);
        if (!*syms[i].slot)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "dist: %s missing from the NCCL/CUDA libraries",
                               syms[i].name);
    }
    return LMC_OK;
}

static int nccl_dtype(enum lmc_dtype dt) {
    switch (dt) {
    case LMC_DTYPE_F32: return NCCL_FLOAT32;
    case LMC_DTYPE_F64: return NCCL_FLOAT64;
    case LMC_DTYPE_F16: return NCCL_FLOAT16;
    case LMC_DTYPE_BF16: return NCCL_BFLOAT16;
    case LMC_DTYPE_I32: return NCCL_INT32;
    case LMC_DTYPE_I64: return NCCL_INT64;
    case LMC_DTYPE_I8: return NCCL_INT8;
    case LMC_DTYPE_U8:
    case LMC_DTYPE_BOOL: return NCCL_UINT8;
    default: return -1;
    }
}
static int nccl_op(enum lmc_reduce_op op) {
    return op == LMC_REDUCE_MAX ? NCCL_MAX : op == LMC_REDUCE_AVG ? NCCL_AVG : NCCL_SUM;
}

static lmc_status nccl_check(struct lmc_comm *c, int r, const char *what, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    if (r == NCCL_SUCCESS || r == NCCL_IN_PROGRESS) return LMC_OK;
    x->broken = true;
    return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: NCCL %s failed: %s", c->rank, what,
                       x->api.get_error_string(r));
}

/* Records the event after the issued collective; the work owns it. */
static lmc_status finish_start(struct lmc_comm *c, int r, const char *what, struct lmc_comm_work **w,
                               lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    *w = NULL;
    lmc_status s = nccl_check(c, r, what, err);
    if (s) return s;
    struct lmc_comm_work *k = calloc(1, sizeof *k);
    if (!k) return lmc_err_set(err, LMC_ERR_OOM, "comm: out of memory");
    int e = x->api.event_create(&k->ev, 2 /* cudaEventDisableTiming */);
    if (!e) e = x->api.event_record(k->ev, x->stream);
    if (e) {
        free(k);
        return lmc_err_set(err, LMC_ERR_IO, "dist: CUDA event after %s: %s", what, x->api.cuda_error_string(e));
    }
    *w = k;
    return LMC_OK;
}

static lmc_status nccl_wait(struct lmc_comm *c, struct lmc_comm_work *w, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    if (!w) return LMC_OK;
    double deadline = lmc_time_now() + x->timeout_s;
    lmc_status s = LMC_OK;
    long spins = 0;
    for (;;) {
        int q = x->api.event_query(w->ev);
        if (q == CUDA_SUCCESS) break;
        if (q != CUDA_NOT_READY) {
            s = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: CUDA error during a collective: %s", c->rank,
                            x->api.cuda_error_string(q));
            break;
        }
        int ae = NCCL_SUCCESS;
        x->api.comm_get_async_error(x->comm, &ae);
        if (ae != NCCL_SUCCESS && ae != NCCL_IN_PROGRESS) {
            s = nccl_check(c, ae, "collective (a peer failed)", err);
            x->api.comm_abort(x->comm);
            x->comm = NULL;
            break;
        }
        if (lmc_time_now() > deadline) {
            x->broken = true;
            x->api.comm_abort(x->comm);
            x->comm = NULL;
            s = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: a collective did not finish within %.0f s "
                            "(a rank stalled or died; LMC_DIST_TIMEOUT sets the limit)", c->rank, x->timeout_s);
            break;
        }
        if (++spins > 1000) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    x->api.event_destroy(w->ev);
    free(w);
    return s;
}

static lmc_status usable(struct lmc_comm *c, enum lmc_dtype dt, int64_t count, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    if (x->broken || !x->comm)
        return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: the NCCL communicator failed earlier", c->rank);
    if (nccl_dtype(dt) < 0) return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "dist: NCCL has no %s", lmc_dtype_name(dt));
    if (count < 0) return lmc_err_set(err, LMC_ERR_ARG, "comm: negative count %lld", (long long)count);
    return LMC_OK;
}

static lmc_status n_iall_reduce(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dt,
                                enum lmc_reduce_op op, struct lmc_comm_work **w, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    *w = NULL;
    lmc_status s = usable(c, dt, count, err);
    if (s) return s;
    int r = x->api.all_reduce(buf, buf, (size_t)count, nccl_dtype(dt), nccl_op(op), x->comm, x->stream);
    return finish_start(c, r, "all_reduce", w, err);
}
static lmc_status n_ireduce_scatter(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                    enum lmc_dtype dt, enum lmc_reduce_op op, struct lmc_comm_work **w,
                                    lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    *w = NULL;
    lmc_status s = usable(c, dt, count, err);
    if (s) return s;
    int r = x->api.reduce_scatter(send, recv, (size_t)count, nccl_dtype(dt), nccl_op(op), x->comm, x->stream);
    return finish_start(c, r, "reduce_scatter", w, err);
}
static lmc_status n_iall_gather(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                enum lmc_dtype dt, struct lmc_comm_work **w, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    *w = NULL;
    lmc_status s = usable(c, dt, count, err);
    if (s) return s;
    int r = x->api.all_gather(send, recv, (size_t)count, nccl_dtype(dt), x->comm, x->stream);
    return finish_start(c, r, "all_gather", w, err);
}

#define SYNC_FORM(call)                               \
    struct lmc_comm_work *w;                          \
    lmc_status s = call;                              \
    return s ? s : nccl_wait(c, w, err)

static lmc_status n_all_reduce(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dt,
                               enum lmc_reduce_op op, lmc_err *err) {
    SYNC_FORM(n_iall_reduce(c, buf, count, dt, op, &w, err));
}
static lmc_status n_reduce_scatter(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                   enum lmc_dtype dt, enum lmc_reduce_op op, lmc_err *err) {
    SYNC_FORM(n_ireduce_scatter(c, send, recv, count, dt, op, &w, err));
}
static lmc_status n_all_gather(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                               enum lmc_dtype dt, lmc_err *err) {
    SYNC_FORM(n_iall_gather(c, send, recv, count, dt, &w, err));
}
static lmc_status n_broadcast(struct lmc_comm *c, void *buf, size_t bytes, int root, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    lmc_status s = usable(c, LMC_DTYPE_U8, (int64_t)bytes, err);
    if (s) return s;
    struct lmc_comm_work *w;
    s = finish_start(c, x->api.broadcast(buf, buf, bytes, NCCL_UINT8, root, x->comm, x->stream), "broadcast", &w, err);
    return s ? s : nccl_wait(c, w, err);
}
static lmc_status n_send(struct lmc_comm *c, const void *buf, size_t bytes, int peer, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    lmc_status s = usable(c, LMC_DTYPE_U8, (int64_t)bytes, err);
    if (s) return s;
    struct lmc_comm_work *w;
    s = finish_start(c, x->api.send(buf, bytes, NCCL_UINT8, peer, x->comm, x->stream), "send", &w, err);
    return s ? s : nccl_wait(c, w, err);
}
static lmc_status n_recv(struct lmc_comm *c, void *buf, size_t bytes, int peer, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    lmc_status s = usable(c, LMC_DTYPE_U8, (int64_t)bytes, err);
    if (s) return s;
    struct lmc_comm_work *w;
    s = finish_start(c, x->api.recv(buf, bytes, NCCL_UINT8, peer, x->comm, x->stream), "recv", &w, err);
    return s ? s : nccl_wait(c, w, err);
}
/* One ncclSend and one ncclRecv per rank with data (the own part too: NCCL
 * pairs a send to itself with the receive) inside one group. */
static lmc_status n_alltoallv(struct lmc_comm *c, const void *send, const int64_t *send_counts,
                              const int64_t *send_offs, void *recv, const int64_t *recv_counts,
                              const int64_t *recv_offs, enum lmc_dtype dt, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    lmc_status s = usable(c, dt, 0, err);
    if (!s) s = lmc_comm_alltoallv_check(c, send_counts, send_offs, recv_counts, recv_offs, dt, NULL, NULL, err);
    if (s) return s;
    size_t e = (size_t)lmc_dtype_size(dt);
    int r = x->api.group_start();
    for (int p = 0; p < c->world && (r == NCCL_SUCCESS || r == NCCL_IN_PROGRESS); p++) {
        if (send_counts[p] > 0)
            r = x->api.send((const char *)send + (size_t)send_offs[p] * e, (size_t)send_counts[p] * e, NCCL_UINT8,
                            p, x->comm, x->stream);
        if (recv_counts[p] > 0 && (r == NCCL_SUCCESS || r == NCCL_IN_PROGRESS))
            r = x->api.recv((char *)recv + (size_t)recv_offs[p] * e, (size_t)recv_counts[p] * e, NCCL_UINT8, p,
                            x->comm, x->stream);
    }
    int r2 = x->api.group_end();
    if (r == NCCL_SUCCESS || r == NCCL_IN_PROGRESS) r = r2;
    struct lmc_comm_work *w;
    s = finish_start(c, r, "alltoallv", &w, err);
    return s ? s : nccl_wait(c, w, err);
}

static lmc_status n_barrier(struct lmc_comm *c, lmc_err *err) {
    struct nccl_ctx *x = c->ctx;
    return x->host.barrier(&x->host, err);
}

static void n_free(struct lmc_comm *c) {
    struct nccl_ctx *x = c->ctx;
    if (x) {
        if (x->comm) x->api.comm_destroy(x->comm);
        if (x->stream) x->api.stream_destroy(x->stream);
        if (x->host.free) x->host.free(&x->host);
        free(x);
    }
    memset(c, 0, sizeof *c);
}

lmc_status lmc_comm_nccl_init(struct lmc_comm *c, struct lmc_comm *host, int device, lmc_err *err) {
    memset(c, 0, sizeof *c);
    struct nccl_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        host->free(host);
        return lmc_err_set(err, LMC_ERR_OOM, "dist: out of memory");
    }
    x->host = *host;
    memset(host, 0, sizeof *host);
    x->timeout_s = lmc_comm_default_timeout();
    c->ctx = x;
    c->free = n_free;
    lmc_status s = load_api(&x->api, err);
    /* every rank learns whether all could load NCCL before any waits on it */
    int32_t bad = s != LMC_OK, any_bad = bad;
    lmc_err e2;
    if (x->host.all_reduce(&x->host, &any_bad, 1, LMC_DTYPE_I32, LMC_REDUCE_MAX, &e2)) {
        if (!s) *err = e2, s = e2.status;
    } else if (!s && any_bad) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "dist: another rank could not load NCCL");
    }
    if (s) goto fail;
    int r = x->api.set_device(device);
    if (r) {
        s = lmc_err_set(err, LMC_ERR_ARG, "dist: rank %d cannot use CUDA device %d: %s", x->host.rank, device,
                        x->api.cuda_error_string(r));
        goto fail;
    }
    if ((r = x->api.stream_create(&x->stream, 1 /* cudaStreamNonBlocking */))) {
        s = lmc_err_set(err, LMC_ERR_IO, "dist: cudaStreamCreate: %s", x->api.cuda_error_string(r));
        goto fail;
    }
    nccl_unique_id id;
    memset(&id, 0, sizeof id);
    if (x->host.rank == 0 && (r = x->api.get_unique_id(&id))) {
        s = lmc_err_set(err, LMC_ERR_IO, "dist: ncclGetUniqueId: %s", x->api.get_error_string(r));
        goto fail;
    }
    if ((s = x->host.broadcast(&x->host, &id, sizeof id, 0, err))) goto fail;
    if ((r = x->api.comm_init_rank(&x->comm, x->host.world, id, x->host.rank))) {
        x->comm = NULL;
        s = lmc_err_set(err, LMC_ERR_IO, "dist: ncclCommInitRank (rank %d of %d): %s", x->host.rank,
                        x->host.world, x->api.get_error_string(r));
        goto fail;
    }
    c->name = "nccl";
    c->rank = x->host.rank;
    c->world = x->host.world;
    c->local_rank = x->host.local_rank;
    c->device_buffers = true;
    c->all_reduce = n_all_reduce;
    c->broadcast = n_broadcast;
    c->all_gather = n_all_gather;
    c->reduce_scatter = n_reduce_scatter;
    c->barrier = n_barrier;
    c->send = n_send;
    c->recv = n_recv;
    c->alltoallv = n_alltoallv;
    c->iall_reduce = n_iall_reduce;
    c->ireduce_scatter = n_ireduce_scatter;
    c->iall_gather = n_iall_gather;
    c->wait = nccl_wait;
    return LMC_OK;
fail:
    n_free(c);
    return s;
}
