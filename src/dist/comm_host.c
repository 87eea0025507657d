/* comm_host.c — the collectives of the host-memory communicators (tcp and
 * mpi) over a transport of pairwise transfers (comm_host.h), and the worker
 * thread that runs them in issue order so the async forms overlap with
 * compute.
 *
 * Reductions go through one scheme: rank p sends part j of its buffer to
 * rank j; rank j combines the world parts it holds in rank order 0, 1, ...,
 * world-1 (((x0 + x1) + x2) + ...), so every element is reduced in the same
 * order whatever the timing, and an all-reduce (reduce-scatter + all-gather
 * of the parts) gives every rank the same bits. Each rank sends and receives
 * (world-1)/world of the buffer, as a ring does. */
#include "dist/comm_host.h"
#include "core/core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum work_kind { W_ALL_REDUCE, W_REDUCE_SCATTER, W_ALL_GATHER, W_BROADCAST, W_BARRIER, W_SEND, W_RECV,
                 W_ALLTOALLV };
static const char *work_names[] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast",
                                   "barrier", "send", "recv", "alltoallv"};

struct lmc_comm_work {
    enum work_kind kind;
    void *buf;          /* in/out (all_reduce, broadcast, recv) or recv buffer */
    const void *sbuf;   /* send buffer (reduce_scatter, all_gather, send) */
    int64_t count;
    enum lmc_dtype dtype;
    enum lmc_reduce_op op;
    size_t bytes;
    int peer;           /* root of broadcast, peer of send/recv */
    const int64_t *scnt, *soff, *rcnt, *roff; /* alltoallv: per-rank parts (elements) */
    bool done;
    lmc_status st;
    lmc_err err;
    struct lmc_comm_work *next;
};

struct host_ctx {
    struct lmc_xport *t;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    pthread_mutex_t xmu;   /* held around each collective: t is shared with sub-communicators */
    struct lmc_comm_work *head, *tail;
    bool stop, thread_started;
    bool broken;        /* a transfer failed: every later work fails with broken_err */
    lmc_err broken_err;
    /* worker-thread only */
    unsigned char *scratch;
    size_t scratch_cap;
    int64_t *cnt, *off;
    struct lmc_xfer *x;
};

static bool reducible(enum lmc_dtype dt) {
    return dt == LMC_DTYPE_F32 || dt == LMC_DTYPE_F64 || dt == LMC_DTYPE_I32 || dt == LMC_DTYPE_I64;
}

/* acc = acc (op) in, n elements; in rank order by the caller. */
static void combine(void *acc, const void *in, int64_t n, enum lmc_dtype dt, enum lmc_reduce_op op) {
#define COMBINE(T)                                                      \
    do {                                                                \
        T *a = acc;                                                     \
        const T *b = in;                                                \
        if (op == LMC_REDUCE_MAX)                                       \
            for (int64_t i = 0; i < n; i++) a[i] = b[i] > a[i] ? b[i] : a[i]; \
        else                                                            \
            for (int64_t i = 0; i < n; i++) a[i] += b[i];               \
    } while (0)
    switch (dt) {
    case LMC_DTYPE_F32: COMBINE(float); break;
    case LMC_DTYPE_F64: COMBINE(double); break;
    case LMC_DTYPE_I32: COMBINE(int32_t); break;
    case LMC_DTYPE_I64: COMBINE(int64_t); break;
    default: LMC_ASSERT(0);
    }
#undef COMBINE
}

static void divide(void *acc, int64_t n, enum lmc_dtype dt, int world) {
#define DIVIDE(T)                                                       \
    do {                                                                \
        T *a = acc;                                                     \
        for (int64_t i = 0; i < n; i++) a[i] = a[i] / (T)world;         \
    } while (0)
    switch (dt) {
    case LMC_DTYPE_F32: DIVIDE(float); break;
    case LMC_DTYPE_F64: DIVIDE(double); break;
    case LMC_DTYPE_I32: DIVIDE(int32_t); break;
    case LMC_DTYPE_I64: DIVIDE(int64_t); break;
    default: LMC_ASSERT(0);
    }
#undef DIVIDE
}

static lmc_status scratch_reserve(struct host_ctx *h, size_t bytes, lmc_err *err) {
    if (bytes <= h->scratch_cap) return LMC_OK;
    void *p = realloc(h->scratch, bytes);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "comm: cannot allocate %zu bytes of scratch", bytes);
    h->scratch = p;
    h->scratch_cap = bytes;
    return LMC_OK;
}

/* out (cnt[rank] elements) = reduction over ranks of their part rank of
 * send (part p at off[p], cnt[p] elements). out may alias send's own part. */
static lmc_status reduce_scatter_v(struct host_ctx *h, const void *send, void *out,
                                   enum lmc_dtype dt, enum lmc_reduce_op op, const char *what,
                                   lmc_err *err) {
    struct lmc_xport *t = h->t;
    int me = t->rank, W = t->world;
    size_t es = (size_t)lmc_dtype_size(dt), part = (size_t)h->cnt[me] * es;
    lmc_status s = scratch_reserve(h, part * (size_t)W + 1, err);
    if (s) return s;
    int n = 0;
    for (int p = 0; p < W; p++) {
        if (p == me) continue;
        if (h->cnt[p] > 0)
            h->x[n++] = (struct lmc_xfer){p, true, (unsigned char *)send + (size_t)h->off[p] * es,
                                          (size_t)h->cnt[p] * es};
        if (part > 0) h->x[n++] = (struct lmc_xfer){p, false, h->scratch + (size_t)p * part, part};
    }
    if (part > 0) memcpy(h->scratch + (size_t)me * part, (const unsigned char *)send + (size_t)h->off[me] * es, part);
    if (n > 0 && (s = t->exchange(t, h->x, n, what, err))) return s;
    if (part == 0) return LMC_OK;
    memcpy(out, h->scratch, part);
    for (int p = 1; p < W; p++) combine(out, h->scratch + (size_t)p * part, h->cnt[me], dt, op);
    if (op == LMC_REDUCE_AVG) divide(out, h->cnt[me], dt, W);
    return LMC_OK;
}

/* recv's part p (off[p], cnt[p] elements) = rank p's mine. */
static lmc_status all_gather_v(struct host_ctx *h, const void *mine, void *recv, size_t es,
                               const char *what, lmc_err *err) {
    struct lmc_xport *t = h->t;
    int me = t->rank, W = t->world;
    size_t part = (size_t)h->cnt[me] * es;
    unsigned char *r = recv;
    if (part && r + (size_t)h->off[me] * es != mine) memmove(r + (size_t)h->off[me] * es, mine, part);
    int n = 0;
    for (int p = 0; p < W; p++) {
        if (p == me) continue;
        if (part > 0) h->x[n++] = (struct lmc_xfer){p, true, r + (size_t)h->off[me] * es, part};
        if (h->cnt[p] > 0)
            h->x[n++] = (struct lmc_xfer){p, false, r + (size_t)h->off[p] * es, (size_t)h->cnt[p] * es};
    }
    return n > 0 ? t->exchange(t, h->x, n, what, err) : LMC_OK;
}

static void parts_balanced(struct host_ctx *h, int64_t count) {
    for (int p = 0; p < h->t->world; p++) lmc_dist_slice(count, p, h->t->world, &h->off[p], &h->cnt[p]);
}
static void parts_equal(struct host_ctx *h, int64_t count) {
    for (int p = 0; p < h->t->world; p++) h->off[p] = (int64_t)p * count, h->cnt[p] = count;
}

static lmc_status run_work(struct host_ctx *h, struct lmc_comm_work *w, lmc_err *err) {
    struct lmc_xport *t = h->t;
    int me = t->rank, W = t->world, n = 0;
    const char *what = work_names[w->kind];
    size_t es = w->kind <= W_ALL_GATHER ? (size_t)lmc_dtype_size(w->dtype) : 1;
    lmc_status ns = LMC_ERR_UNSUPPORTED;
    if (w->kind == W_ALL_REDUCE && t->native_all_reduce)
        ns = t->native_all_reduce(t, w->buf, w->count, w->dtype, w->op, err);
    else if (w->kind == W_REDUCE_SCATTER && t->native_reduce_scatter)
        ns = t->native_reduce_scatter(t, w->sbuf, w->buf, w->count, w->dtype, w->op, err);
    else if (w->kind == W_ALL_GATHER && t->native_all_gather)
        ns = t->native_all_gather(t, w->sbuf, w->buf, w->count, w->dtype, err);
    if (ns != LMC_ERR_UNSUPPORTED) return ns;
    switch (w->kind) {
    case W_ALL_REDUCE: {
        parts_balanced(h, w->count);
        unsigned char *mine = (unsigned char *)w->buf + (size_t)h->off[me] * es;
        lmc_status s = reduce_scatter_v(h, w->buf, mine, w->dtype, w->op, what, err);
        return s ? s : all_gather_v(h, mine, w->buf, es, what, err);
    }
    case W_REDUCE_SCATTER:
        parts_equal(h, w->count);
        return reduce_scatter_v(h, w->sbuf, w->buf, w->dtype, w->op, what, err);
    case W_ALL_GATHER:
        parts_equal(h, w->count);
        return all_gather_v(h, w->sbuf, w->buf, es, what, err);
    case W_BROADCAST:
        if (w->bytes == 0) return LMC_OK;
        if (me == w->peer) {
            for (int p = 0; p < W; p++)
                if (p != me) h->x[n++] = (struct lmc_xfer){p, true, w->buf, w->bytes};
        } else {
            h->x[n++] = (struct lmc_xfer){w->peer, false, w->buf, w->bytes};
        }
        return t->exchange(t, h->x, n, what, err);
    case W_BARRIER: {
        /* one byte to and from every peer */
        lmc_status s = scratch_reserve(h, 2 * (size_t)W, err);
        if (s) return s;
        memset(h->scratch, 0, 2 * (size_t)W);
        for (int p = 0; p < W; p++) {
            if (p == me) continue;
            h->x[n++] = (struct lmc_xfer){p, true, h->scratch + W + p, 1};
            h->x[n++] = (struct lmc_xfer){p, false, h->scratch + p, 1};
        }
        return n ? t->exchange(t, h->x, n, what, err) : LMC_OK;
    }
    case W_ALLTOALLV: { /* one send and one receive per peer with data; the own part copied */
        size_t e = (size_t)lmc_dtype_size(w->dtype);
        const unsigned char *sb = w->sbuf;
        unsigned char *rb = w->buf;
        for (int p = 0; p < W; p++) {
            if (p == me) {
                if (w->scnt[p] > 0) memcpy(rb + (size_t)w->roff[p] * e, sb + (size_t)w->soff[p] * e, (size_t)w->scnt[p] * e);
                continue;
            }
            if (w->scnt[p] > 0)
                h->x[n++] = (struct lmc_xfer){p, true, (void *)(sb + (size_t)w->soff[p] * e), (size_t)w->scnt[p] * e};
            if (w->rcnt[p] > 0)
                h->x[n++] = (struct lmc_xfer){p, false, rb + (size_t)w->roff[p] * e, (size_t)w->rcnt[p] * e};
        }
        return n ? t->exchange(t, h->x, n, what, err) : LMC_OK;
    }
    case W_SEND:
    case W_RECV:
        if (w->bytes == 0) return LMC_OK;
        h->x[0] = (struct lmc_xfer){w->peer, w->kind == W_SEND, w->kind == W_SEND ? (void *)w->sbuf : w->buf,
                                    w->bytes};
        return t->exchange(t, h->x, 1, what, err);
    }
    return LMC_OK;
}

static void *worker(void *arg) {
    struct host_ctx *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->head && !h->stop) pthread_cond_wait(&h->cv_work, &h->mu);
        if (!h->head) break;
        struct lmc_comm_work *w = h->head;
        bool broken = h->broken;
        pthread_mutex_unlock(&h->mu);
        lmc_err e = {0};
        lmc_status s;
        if (broken) {
            e = h->broken_err;
            s = e.status;
        } else {
            pthread_mutex_lock(&h->xmu);
            s = run_work(h, w, &e);
            pthread_mutex_unlock(&h->xmu);
        }
        pthread_mutex_lock(&h->mu);
        if (s && !h->broken) {
            h->broken = true;
            h->broken_err = e;
        }
        h->head = w->next;
        if (!h->head) h->tail = NULL;
        w->st = s;
        w->err = e;
        w->done = true;
        pthread_cond_broadcast(&h->cv_done);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static lmc_status check_args(struct lmc_comm *c, int64_t count, enum lmc_dtype dt, bool reduce,
                             lmc_err *err) {
    if (lmc_dtype_size(dt) == 0) return lmc_err_set(err, LMC_ERR_ARG, "comm: unknown dtype %d", (int)dt);
    if (count < 0) return lmc_err_set(err, LMC_ERR_ARG, "comm: negative count %lld", (long long)count);
    int64_t total;
    if (!lmc_mul_ok(count, (int64_t)c->world * lmc_dtype_size(dt), &total))
        return lmc_err_set(err, LMC_ERR_ARG, "comm: count %lld too large", (long long)count);
    if (reduce && !reducible(dt))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "comm: cannot reduce %s elements",
                           lmc_dtype_name(dt));
    return LMC_OK;
}

static lmc_status start(struct lmc_comm *c, const struct lmc_comm_work *tmpl,
                        struct lmc_comm_work **out, lmc_err *err) {
    struct host_ctx *h = c->ctx;
    *out = NULL;
    struct lmc_comm_work *w = malloc(sizeof *w);
    if (!w) return lmc_err_set(err, LMC_ERR_OOM, "comm: out of memory");
    *w = *tmpl;
    w->next = NULL;
    w->done = false;
    pthread_mutex_lock(&h->mu);
    if (h->tail) h->tail->next = w;
    else h->head = w;
    h->tail = w;
    pthread_cond_signal(&h->cv_work);
    pthread_mutex_unlock(&h->mu);
    *out = w;
    return LMC_OK;
}

static lmc_status host_wait(struct lmc_comm *c, struct lmc_comm_work *w, lmc_err *err) {
    if (!w) return LMC_OK;
    struct host_ctx *h = c->ctx;
    pthread_mutex_lock(&h->mu);
    while (!w->done) pthread_cond_wait(&h->cv_done, &h->mu);
    pthread_mutex_unlock(&h->mu);
    lmc_status s = w->st;
    if (s && err) *err = w->err;
    free(w);
    return s;
}

static lmc_status run_sync(struct lmc_comm *c, const struct lmc_comm_work *tmpl, lmc_err *err) {
    struct lmc_comm_work *w;
    lmc_status s = start(c, tmpl, &w, err);
    return s ? s : host_wait(c, w, err);
}

static lmc_status host_iall_reduce(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dt,
                                   enum lmc_reduce_op op, struct lmc_comm_work **w, lmc_err *err) {
    *w = NULL;
    lmc_status s = check_args(c, count, dt, true, err);
    if (s) return s;
    struct lmc_comm_work t = {.kind = W_ALL_REDUCE, .buf = buf, .count = count, .dtype = dt, .op = op};
    return start(c, &t, w, err);
}
static lmc_status host_ireduce_scatter(struct lmc_comm *c, const void *send, void *recv,
                                       int64_t count, enum lmc_dtype dt, enum lmc_reduce_op op,
                                       struct lmc_comm_work **w, lmc_err *err) {
    *w = NULL;
    lmc_status s = check_args(c, count, dt, true, err);
    if (s) return s;
    struct lmc_comm_work t = {.kind = W_REDUCE_SCATTER, .buf = recv, .sbuf = send, .count = count,
                              .dtype = dt, .op = op};
    return start(c, &t, w, err);
}
static lmc_status host_iall_gather(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                   enum lmc_dtype dt, struct lmc_comm_work **w, lmc_err *err) {
    *w = NULL;
    lmc_status s = check_args(c, count, dt, false, err);
    if (s) return s;
    struct lmc_comm_work t = {.kind = W_ALL_GATHER, .buf = recv, .sbuf = send, .count = count, .dtype = dt};
    return start(c, &t, w, err);
}

static lmc_status host_all_reduce(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dt,
                                  enum lmc_reduce_op op, lmc_err *err) {
    struct lmc_comm_work *w;
    lmc_status s = host_iall_reduce(c, buf, count, dt, op, &w, err);
    return s ? s : host_wait(c, w, err);
}
static lmc_status host_reduce_scatter(struct lmc_comm *c, const void *send, void *recv,
                                      int64_t count, enum lmc_dtype dt, enum lmc_reduce_op op,
                                      lmc_err *err) {
    struct lmc_comm_work *w;
    lmc_status s = host_ireduce_scatter(c, send, recv, count, dt, op, &w, err);
    return s ? s : host_wait(c, w, err);
}
static lmc_status host_all_gather(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                  enum lmc_dtype dt, lmc_err *err) {
    struct lmc_comm_work *w;
    lmc_status s = host_iall_gather(c, send, recv, count, dt, &w, err);
    return s ? s : host_wait(c, w, err);
}
static lmc_status host_broadcast(struct lmc_comm *c, void *buf, size_t bytes, int root, lmc_err *err) {
    if (root < 0 || root >= c->world)
        return lmc_err_set(err, LMC_ERR_ARG, "comm: broadcast root %d in a world of %d", root, c->world);
    struct lmc_comm_work t = {.kind = W_BROADCAST, .buf = buf, .bytes = bytes, .peer = root};
    return run_sync(c, &t, err);
}
static lmc_status host_barrier(struct lmc_comm *c, lmc_err *err) {
    struct lmc_comm_work t = {.kind = W_BARRIER};
    return run_sync(c, &t, err);
}
static lmc_status check_peer(struct lmc_comm *c, int peer, lmc_err *err) {
    if (peer < 0 || peer >= c->world || peer == c->rank)
        return lmc_err_set(err, LMC_ERR_ARG, "comm: peer %d invalid for rank %d of %d", peer, c->rank,
                           c->world);
    return LMC_OK;
}
static lmc_status host_send(struct lmc_comm *c, const void *buf, size_t bytes, int peer, lmc_err *err) {
    lmc_status s = check_peer(c, peer, err);
    if (s) return s;
    struct lmc_comm_work t = {.kind = W_SEND, .sbuf = buf, .bytes = bytes, .peer = peer};
    return run_sync(c, &t, err);
}
static lmc_status host_recv(struct lmc_comm *c, void *buf, size_t bytes, int peer, lmc_err *err) {
    lmc_status s = check_peer(c, peer, err);
    if (s) return s;
    struct lmc_comm_work t = {.kind = W_RECV, .buf = buf, .bytes = bytes, .peer = peer};
    return run_sync(c, &t, err);
}

static lmc_status host_alltoallv(struct lmc_comm *c, const void *send, const int64_t *send_counts,
                                 const int64_t *send_offs, void *recv, const int64_t *recv_counts,
                                 const int64_t *recv_offs, enum lmc_dtype dt, lmc_err *err) {
    lmc_status s = lmc_comm_alltoallv_check(c, send_counts, send_offs, recv_counts, recv_offs, dt, NULL,
                                            NULL, err);
    if (s) return s;
    if (send_counts[c->rank] != recv_counts[c->rank])
        return lmc_err_set(err, LMC_ERR_ARG, "comm: alltoallv on rank %d sends %lld elements to itself and "
                           "receives %lld", c->rank, (long long)send_counts[c->rank],
                           (long long)recv_counts[c->rank]);
    struct lmc_comm_work t = {.kind = W_ALLTOALLV, .buf = recv, .sbuf = send, .dtype = dt, .scnt = send_counts,
                              .soff = send_offs, .rcnt = recv_counts, .roff = recv_offs};
    return run_sync(c, &t, err);
}

static void host_free(struct lmc_comm *c) {
    struct host_ctx *h = c->ctx;
    if (h) {
        if (h->thread_started) {
            pthread_mutex_lock(&h->mu);
            h->stop = true;
            pthread_cond_signal(&h->cv_work);
            pthread_mutex_unlock(&h->mu);
            pthread_join(h->thread, NULL);
        }
        pthread_mutex_destroy(&h->mu);
        pthread_mutex_destroy(&h->xmu);
        pthread_cond_destroy(&h->cv_work);
        pthread_cond_destroy(&h->cv_done);
        if (h->t) h->t->free(h->t);
        free(h->scratch);
        free(h->cnt);
        free(h->off);
        free(h->x);
        free(h);
    }
    memset(c, 0, sizeof *c);
}

lmc_status lmc_comm_host_init(struct lmc_comm *c, struct lmc_xport *t, const char *name,
                              int local_rank, lmc_err *err) {
    memset(c, 0, sizeof *c);
    struct host_ctx *h = calloc(1, sizeof *h);
    if (!h) {
        t->free(t);
        return lmc_err_set(err, LMC_ERR_OOM, "comm: out of memory");
    }
    h->t = t;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->xmu, NULL);
    pthread_cond_init(&h->cv_work, NULL);
    pthread_cond_init(&h->cv_done, NULL);
    c->ctx = h;
    c->free = host_free;
    h->cnt = calloc((size_t)t->world, sizeof *h->cnt);
    h->off = calloc((size_t)t->world, sizeof *h->off);
    h->x = calloc(2 * (size_t)t->world, sizeof *h->x);
    if (!h->cnt || !h->off || !h->x) {
        host_free(c);
        return lmc_err_set(err, LMC_ERR_OOM, "comm: out of memory");
    }
    if (pthread_create(&h->thread, NULL, worker, h)) {
        host_free(c);
        return lmc_err_set(err, LMC_ERR_INTERNAL, "comm: cannot start the communication thread");
    }
    h->thread_started = true;
    c->name = name;
    c->rank = t->rank;
    c->world = t->world;
    c->local_rank = local_rank;
    c->all_reduce = host_all_reduce;
    c->broadcast = host_broadcast;
    c->all_gather = host_all_gather;
    c->reduce_scatter = host_reduce_scatter;
    c->barrier = host_barrier;
    c->send = host_send;
    c->recv = host_recv;
    c->alltoallv = host_alltoallv;
    c->iall_reduce = host_iall_reduce;
    c->ireduce_scatter = host_ireduce_scatter;
    c->iall_gather = host_iall_gather;
    c->wait = host_wait;
    return LMC_OK;
}

struct lmc_xport *lmc_comm_host_xport(struct lmc_comm *c, pthread_mutex_t **lock) {
    if (c->free != host_free || !c->ctx) return NULL;
    struct host_ctx *h = c->ctx;
    *lock = &h->xmu;
    return h->t;
}
