/* ring_attn.c — causal ring attention (context parallelism) forward and
 * backward over a host communicator: zigzag slicing, K/V blocks sent around
 * the ring by a helper thread while the local block computes, per-block
 * partial outputs merged by log-sum-exp, dK/dV travelling back to their
 * owners in the backward. See ring_attn.h. */
#include "dist/ring_attn.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int64_t lmc_ring_attn_zigzag(int64_t T, int rank, int world, int64_t *pos) {
    int64_t n = 0;
    int chunks[2] = {rank, 2 * world - 1 - rank};
    for (int c = 0; c < 2; c++) {
        int64_t b, cnt;
        lmc_dist_slice(T, chunks[c], 2 * world, &b, &cnt);
        for (int64_t i = 0; i < cnt; i++)
            if (pos) pos[n + i] = b + i;
        n += cnt;
    }
    return n;
}

/* One ring transfer: send `sbytes` of sbuf to the next rank and receive
 * `rbytes` into rbuf from the previous one; even ranks send first, odd ranks
 * receive first, so no cycle of blocked senders forms. */
struct xfer {
    struct lmc_comm *c;
    const void *sbuf;
    void *rbuf;
    size_t sbytes, rbytes;
    lmc_status st;
    lmc_err err;
};

static void *xfer_run(void *arg) {
    struct xfer *x = arg;
    struct lmc_comm *c = x->c;
    int W = c->world, next = (c->rank + 1) % W, prev = (c->rank + W - 1) % W;
    x->st = LMC_OK;
    for (int phase = 0; phase < 2 && !x->st; phase++) {
        bool do_send = (c->rank % 2 == 0) == (phase == 0);
        if (do_send && x->sbytes) x->st = c->send(c, x->sbuf, x->sbytes, next, &x->err);
        if (!do_send && x->rbytes) x->st = c->recv(c, x->rbuf, x->rbytes, prev, &x->err);
    }
    return NULL;
}

/* Started on a helper thread when one can be made, else run inline. */
struct xfer_job {
    struct xfer x;
    pthread_t th;
    bool threaded;
};

static void xfer_start(struct xfer_job *j) {
    j->threaded = pthread_create(&j->th, NULL, xfer_run, &j->x) == 0;
    if (!j->threaded) xfer_run(&j->x);
}

static lmc_status xfer_finish(struct xfer_job *j, lmc_err *err) {
    if (j->threaded) pthread_join(j->th, NULL);
    if (j->x.st && err) *err = j->x.err;
    return j->x.st;
}

static lmc_status check_shape(const struct lmc_comm *c, const struct lmc_ring_attn_shape *s,
                              lmc_err *err) {
    if (c->device_buffers)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "ring attention: %s communicator has device buffers; host only", c->name);
    if (s->T < 0 || s->n_heads <= 0 || s->n_kv <= 0 || s->hd <= 0 || s->n_heads % s->n_kv)
        return lmc_err_set(err, LMC_ERR_ARG, "ring attention: bad shape T=%lld heads=%lld kv=%lld hd=%lld",
                           (long long)s->T, (long long)s->n_heads, (long long)s->n_kv, (long long)s->hd);
    if (s->T > (int64_t)1 << 40 || s->n_heads > 1 << 16 || s->hd > 1 << 16)
        return lmc_err_set(err, LMC_ERR_ARG, "ring attention: shape too large");
    if (s->T > 0 && s->n_heads * s->hd > INT64_MAX / 8 / s->T)
        return lmc_err_set(err, LMC_ERR_ARG, "ring attention: T * heads * hd overflows");
    return LMC_OK;
}

/* Scratch shared by forward and backward. */
struct ring {
    int W, r;
    int64_t n, nmax, H, KV, hd, qd, kvd, grp;
    int64_t *pos, *spos;  /* this rank's positions, the current block's */
    double *sc;           /* scores of one query row against the block */
};

static lmc_status ring_init(struct ring *g, struct lmc_comm *c, const struct lmc_ring_attn_shape *s,
                            lmc_err *err) {
    memset(g, 0, sizeof *g);
    lmc_status st = check_shape(c, s, err);
    if (st) return st;
    g->W = c->world, g->r = c->rank;
    g->H = s->n_heads, g->KV = s->n_kv, g->hd = s->hd;
    g->qd = g->H * g->hd, g->kvd = g->KV * g->hd, g->grp = g->H / g->KV;
    g->n = lmc_ring_attn_zigzag(s->T, g->r, g->W, NULL);
    for (int p = 0; p < g->W; p++) {
        int64_t m = lmc_ring_attn_zigzag(s->T, p, g->W, NULL);
        if (m > g->nmax) g->nmax = m;
    }
    size_t nm = (size_t)g->nmax + 1;
    g->pos = malloc(sizeof(int64_t) * nm);
    g->spos = malloc(sizeof(int64_t) * nm);
    g->sc = malloc(sizeof(double) * nm);
    if (!g->pos || !g->spos || !g->sc) return lmc_err_set(err, LMC_ERR_OOM, "ring attention: out of memory");
    lmc_ring_attn_zigzag(s->T, g->r, g->W, g->pos);
    return LMC_OK;
}

static void ring_free(struct ring *g) {
    free(g->pos), free(g->spos), free(g->sc);
}

/* Keys of a block visible to a query at position p: a prefix, since block
 * positions increase. */
static int64_t visible(const int64_t *spos, int64_t ns, int64_t p) {
    int64_t lo = 0, hi = ns;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (spos[mid] <= p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Attention of this rank's queries against one block (k, v of ns tokens at
 * spos): ob (n, H*hd) normalised within the block, lb (n, H) its lse
 * (-inf where no key is visible). */
static void block_fwd(struct ring *g, float scale, float *ob, float *lb, const float *q,
                      const float *k, const float *v, int64_t ns) {
    for (int64_t i = 0; i < g->n; i++) {
        int64_t nv = visible(g->spos, ns, g->pos[i]);
        for (int64_t h = 0; h < g->H; h++) {
            const float *qi = q + i * g->qd + h * g->hd;
            float *o = ob + i * g->qd + h * g->hd;
            int64_t kh = h / g->grp;
            if (nv == 0) {
                lb[i * g->H + h] = -INFINITY;
                memset(o, 0, sizeof(float) * (size_t)g->hd);
                continue;
            }
            double m = -INFINITY;
            for (int64_t j = 0; j < nv; j++) {
                const float *kj = k + j * g->kvd + kh * g->hd;
                double d = 0;
                for (int64_t e = 0; e < g->hd; e++) d += (double)qi[e] * kj[e];
                g->sc[j] = d * scale;
                if (g->sc[j] > m) m = g->sc[j];
            }
            double sum = 0, acc[256], *a = acc;
            double *heap = NULL;
            if (g->hd > 256) heap = a = calloc((size_t)g->hd, sizeof(double));
            else memset(acc, 0, sizeof acc);
            for (int64_t j = 0; j < nv; j++) {
                double p = exp(g->sc[j] - m);
                sum += p;
                const float *vj = v + j * g->kvd + kh * g->hd;
                for (int64_t e = 0; e < g->hd; e++) a[e] += p * vj[e];
            }
            for (int64_t e = 0; e < g->hd; e++) o[e] = (float)(a[e] / sum);
            lb[i * g->H + h] = (float)(m + log(sum));
            free(heap);
        }
    }
}

/* out, lse <- the log-sum-exp merge of (out, lse) and (ob, lb). */
static void merge(const struct ring *g, float *out, float *lse, const float *ob, const float *lb) {
    for (int64_t i = 0; i < g->n; i++)
        for (int64_t h = 0; h < g->H; h++) {
            float b = lb[i * g->H + h], *l = &lse[i * g->H + h];
            float *o = out + i * g->qd + h * g->hd;
            const float *p = ob + i * g->qd + h * g->hd;
            if (b == -INFINITY) continue;
            if (*l == -INFINITY) {
                memcpy(o, p, sizeof(float) * (size_t)g->hd);
                *l = b;
                continue;
            }
            double m = fmax(*l, b), wa = exp(*l - m), wb = exp(b - m), s = wa + wb;
            for (int64_t e = 0; e < g->hd; e++) o[e] = (float)((o[e] * wa + p[e] * wb) / s);
            *l = (float)(m + log(s));
        }
}

static size_t kv_bytes(const struct ring *g, int64_t ntok) {
    return sizeof(float) * 2 * (size_t)ntok * (size_t)g->kvd;
}

lmc_status lmc_ring_attn_fwd(struct lmc_comm *c, const struct lmc_ring_attn_shape *s, float *out,
                             float *lse, const float *q, const float *k, const float *v,
                             lmc_err *err) {
    struct ring g;
    lmc_status st = ring_init(&g, c, s, err);
    size_t blk = st ? 0 : kv_bytes(&g, g.nmax) + sizeof(float);
    float *cur = st ? NULL : malloc(blk), *nxt = st ? NULL : malloc(blk);
    float *ob = st ? NULL : malloc(sizeof(float) * ((size_t)(g.n * g.qd) + 1));
    float *lb = st ? NULL : malloc(sizeof(float) * ((size_t)(g.n * g.H) + 1));
    if (!st && (!cur || !nxt || !ob || !lb)) st = lmc_err_set(err, LMC_ERR_OOM, "ring attention: out of memory");
    if (!st) {
        memcpy(cur, k, sizeof(float) * (size_t)(g.n * g.kvd));
        memcpy(cur + g.n * g.kvd, v, sizeof(float) * (size_t)(g.n * g.kvd));
        memset(out, 0, sizeof(float) * (size_t)(g.n * g.qd));
        for (int64_t i = 0; i < g.n * g.H; i++) lse[i] = -INFINITY;
    }
    for (int step = 0; !st && step < g.W; step++) {
        int src = (g.r - step + g.W) % g.W, nsrc = (g.r - step - 1 + 2 * g.W) % g.W;
        int64_t ns = lmc_ring_attn_zigzag(s->T, src, g.W, g.spos);
        struct xfer_job j = {.x = {c, cur, nxt, kv_bytes(&g, ns),
                                   kv_bytes(&g, lmc_ring_attn_zigzag(s->T, nsrc, g.W, NULL)), LMC_OK, {0}}};
        bool more = step + 1 < g.W;
        if (more) xfer_start(&j);
        block_fwd(&g, s->scale, ob, lb, q, cur, cur + ns * g.kvd, ns);
        merge(&g, out, lse, ob, lb);
        if (more && (st = xfer_finish(&j, err))) break;
        float *t = cur;
        cur = nxt, nxt = t;
    }
    free(cur), free(nxt), free(ob), free(lb);
    ring_free(&g);
    return st;
}

/* Gradients of this rank's queries against one block; dk, dv of the block
 * accumulate into dkb, dvb. D (n, H) = rowsum(dout * out). */
static void block_bwd(struct ring *g, float scale, float *dq, float *dkb, float *dvb,
                      const float *dout, const float *lse, const double *D, const float *q,
                      const float *k, const float *v, int64_t ns) {
    for (int64_t i = 0; i < g->n; i++) {
        int64_t nv = visible(g->spos, ns, g->pos[i]);
        for (int64_t h = 0; h < g->H; h++) {
            const float *qi = q + i * g->qd + h * g->hd, *di = dout + i * g->qd + h * g->hd;
            float *dqi = dq + i * g->qd + h * g->hd;
            int64_t kh = h / g->grp;
            double l = lse[i * g->H + h], Di = D[i * g->H + h];
            for (int64_t j = 0; j < nv; j++) {
                const float *kj = k + j * g->kvd + kh * g->hd, *vj = v + j * g->kvd + kh * g->hd;
                double d = 0, dp = 0;
                for (int64_t e = 0; e < g->hd; e++) d += (double)qi[e] * kj[e], dp += (double)di[e] * vj[e];
                double p = exp(d * scale - l), ds = p * (dp - Di) * scale;
                float *dkj = dkb + j * g->kvd + kh * g->hd, *dvj = dvb + j * g->kvd + kh * g->hd;
                for (int64_t e = 0; e < g->hd; e++) {
                    dqi[e] += (float)(ds * kj[e]);
                    dkj[e] += (float)(ds * qi[e]);
                    dvj[e] += (float)(p * di[e]);
                }
            }
        }
    }
}

/* The end of a backward step, after the K/V transfer: the block's dK|dV
 * (gcur, bs bytes) go on to the next rank with it while the next block's
 * (bn bytes) come in, so the last pass returns each to its owner; then the
 * K/V and the dK/dV buffers swap. */
static lmc_status bwd_pass(const struct ring *g, struct lmc_comm *c, float **cur, float **nxt, float **gcur,
                           float **gnxt, size_t bs, size_t bn, lmc_err *err) {
    if (g->W > 1) {
        struct xfer_job d = {.x = {c, *gcur, *gnxt, bs, bn, LMC_OK, {0}}};
        xfer_run(&d.x);
        lmc_status st = xfer_finish(&d, err);
        if (st) return st;
    }
    float *t = *cur;
    *cur = *nxt, *nxt = t;
    if (g->W > 1) t = *gcur, *gcur = *gnxt, *gnxt = t;
    return LMC_OK;
}

lmc_status lmc_ring_attn_bwd(struct lmc_comm *c, const struct lmc_ring_attn_shape *s, float *dq,
                             float *dk, float *dv, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v,
                             lmc_err *err) {
    struct ring g;
    lmc_status st = ring_init(&g, c, s, err);
    size_t blk = st ? 0 : kv_bytes(&g, g.nmax) + sizeof(float);
    float *cur = st ? NULL : malloc(blk), *nxt = st ? NULL : malloc(blk);
    float *gcur = st ? NULL : calloc(1, blk), *gnxt = st ? NULL : malloc(blk);
    double *D = st ? NULL : malloc(sizeof(double) * ((size_t)(g.n * g.H) + 1));
    if (!st && (!cur || !nxt || !gcur || !gnxt || !D)) st = lmc_err_set(err, LMC_ERR_OOM, "ring attention: out of memory");
    if (!st) {
        memcpy(cur, k, sizeof(float) * (size_t)(g.n * g.kvd));
        memcpy(cur + g.n * g.kvd, v, sizeof(float) * (size_t)(g.n * g.kvd));
        memset(dq, 0, sizeof(float) * (size_t)(g.n * g.qd));
        for (int64_t i = 0; i < g.n; i++)
            for (int64_t h = 0; h < g.H; h++) {
                double d = 0;
                for (int64_t e = 0; e < g.hd; e++)
                    d += (double)dout[i * g.qd + h * g.hd + e] * out[i * g.qd + h * g.hd + e];
                D[i * g.H + h] = d;
            }
    }
    for (int step = 0; !st && step < g.W; step++) {
        int src = (g.r - step + g.W) % g.W, nsrc = (g.r - step - 1 + 2 * g.W) % g.W;
        int64_t ns = lmc_ring_attn_zigzag(s->T, src, g.W, g.spos);
        size_t bs = kv_bytes(&g, ns), bn = kv_bytes(&g, lmc_ring_attn_zigzag(s->T, nsrc, g.W, NULL));
        /* the next K/V block arrives while this one computes */
        struct xfer_job j = {.x = {c, cur, nxt, bs, bn, LMC_OK, {0}}};
        bool more = step + 1 < g.W;
        if (more) xfer_start(&j);
        block_bwd(&g, s->scale, dq, gcur, gcur + ns * g.kvd, dout, lse, D, q, cur, cur + ns * g.kvd, ns);
        if (more && (st = xfer_finish(&j, err))) break;
        if ((st = bwd_pass(&g, c, &cur, &nxt, &gcur, &gnxt, bs, bn, err))) break;
    }
    if (!st) { /* the block now in gcur is this rank's own */
        memcpy(dk, gcur, sizeof(float) * (size_t)(g.n * g.kvd));
        memcpy(dv, gcur + g.n * g.kvd, sizeof(float) * (size_t)(g.n * g.kvd));
    }
    free(cur), free(nxt), free(gcur), free(gnxt), free(D);
    ring_free(&g);
    return st;
}

/* ---- the same ring on a backend's memory (lmc_ring_attn_fwd_be / _bwd_be):
 * the block math through be->attn_block_*, the K/V blocks (and the dK/dV
 * travelling with them) staged through host buffers for the communicator;
 * the next block's transfer overlaps the current block's kernels. */
struct ring_be {
    const struct lmc_backend *be;
    int32_t *qpos_d, *kpos_d, *p32;  /* device: this rank's positions, the block's; host scratch */
    float *blk_d, *g_d;              /* device: the current K|V block, its dK|dV */
};

static void ring_be_free(struct ring_be *b) {
    const struct lmc_backend *be = b->be;
    if (b->qpos_d) be->free(be->ctx, b->qpos_d);
    if (b->kpos_d) be->free(be->ctx, b->kpos_d);
    if (b->blk_d) be->free(be->ctx, b->blk_d);
    if (b->g_d) be->free(be->ctx, b->g_d);
    free(b->p32);
}

static lmc_status ring_be_init(struct ring_be *b, const struct lmc_backend *be, const struct ring *g, bool grads,
                               lmc_err *err) {
    memset(b, 0, sizeof *b);
    b->be = be;
    if (!be->attn_block_fwd || !be->attn_block_merge || !be->attn_block_bwd)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "ring attention: backend %s has no block attention ops", be->name);
    size_t nm = (size_t)g->nmax + 1, blk = sizeof(float) * (2 * (size_t)g->nmax * (size_t)g->kvd + 1);
    b->qpos_d = be->alloc(be->ctx, sizeof(int32_t) * nm);
    b->kpos_d = be->alloc(be->ctx, sizeof(int32_t) * nm);
    b->blk_d = be->alloc(be->ctx, blk);
    b->g_d = grads ? be->alloc(be->ctx, blk) : NULL;
    b->p32 = malloc(sizeof(int32_t) * nm);
    if (!b->qpos_d || !b->kpos_d || !b->blk_d || (grads && !b->g_d) || !b->p32) {
        ring_be_free(b);
        return lmc_err_set(err, LMC_ERR_OOM, "ring attention: out of memory on %s", be->name);
    }
    for (int64_t i = 0; i < g->n; i++) b->p32[i] = (int32_t)g->pos[i];
    be->upload(be->ctx, b->qpos_d, b->p32, sizeof(int32_t) * (size_t)g->n);
    return LMC_OK;
}

/* the block at spos (ns tokens) in host buffer h onto the device */
static void ring_be_put(struct ring_be *b, const struct ring *g, const float *h, int64_t ns) {
    const struct lmc_backend *be = b->be;
    for (int64_t j = 0; j < ns; j++) b->p32[j] = (int32_t)g->spos[j];
    be->upload(be->ctx, b->kpos_d, b->p32, sizeof(int32_t) * (size_t)ns);
    be->upload(be->ctx, b->blk_d, h, kv_bytes(g, ns));
}

lmc_status lmc_ring_attn_fwd_be(const struct lmc_backend *be, struct lmc_comm *c, const struct lmc_ring_attn_shape *s,
                                float *out, float *lse, const float *q, const float *k, const float *v, lmc_err *err) {
    struct ring g;
    struct ring_be b = {0};
    lmc_status st = ring_init(&g, c, s, err);
    bool have_b = !st && !(st = ring_be_init(&b, be, &g, false, err));
    size_t blk = st ? 0 : kv_bytes(&g, g.nmax) + sizeof(float);
    float *cur = st ? NULL : malloc(blk), *nxt = st ? NULL : malloc(blk);
    float *ob = st ? NULL : be->alloc(be->ctx, sizeof(float) * ((size_t)(g.n * g.qd) + 1));
    float *lb = st ? NULL : be->alloc(be->ctx, sizeof(float) * ((size_t)(g.n * g.H) + 1));
    float *ninf = st ? NULL : malloc(sizeof(float) * ((size_t)(g.n * g.H) + 1));
    if (!st && (!cur || !nxt || !ob || !lb || !ninf)) st = lmc_err_set(err, LMC_ERR_OOM, "ring attention: out of memory");
    if (!st) {
        be->download(be->ctx, cur, k, sizeof(float) * (size_t)(g.n * g.kvd));
        be->download(be->ctx, cur + g.n * g.kvd, v, sizeof(float) * (size_t)(g.n * g.kvd));
        be->zero(be->ctx, out, sizeof(float) * (size_t)(g.n * g.qd));
        for (int64_t i = 0; i < g.n * g.H; i++) ninf[i] = -INFINITY;
        be->upload(be->ctx, lse, ninf, sizeof(float) * (size_t)(g.n * g.H));
    }
    for (int step = 0; !st && step < g.W; step++) {
        int src = (g.r - step + g.W) % g.W, nsrc = (g.r - step - 1 + 2 * g.W) % g.W;
        int64_t ns = lmc_ring_attn_zigzag(s->T, src, g.W, g.spos);
        ring_be_put(&b, &g, cur, ns);
        struct xfer_job j = {.x = {c, cur, nxt, kv_bytes(&g, ns),
                                   kv_bytes(&g, lmc_ring_attn_zigzag(s->T, nsrc, g.W, NULL)), LMC_OK, {0}}};
        bool more = step + 1 < g.W;
        if (more) xfer_start(&j);
        be->attn_block_fwd(be->ctx, ob, lb, q, b.blk_d, b.blk_d + ns * g.kvd, b.qpos_d, b.kpos_d, g.n, ns, g.H, g.KV,
                           g.hd, s->scale, 1);
        be->attn_block_merge(be->ctx, out, lse, ob, lb, g.n, g.H, g.hd);
        be->sync(be->ctx); /* the device block is rewritten next step */
        if (more && (st = xfer_finish(&j, err))) break;
        float *t = cur;
        cur = nxt, nxt = t;
    }
    free(cur), free(nxt), free(ninf);
    if (ob) be->free(be->ctx, ob);
    if (lb) be->free(be->ctx, lb);
    if (have_b) ring_be_free(&b);
    ring_free(&g);
    return st;
}

lmc_status lmc_ring_attn_bwd_be(const struct lmc_backend *be, struct lmc_comm *c, const struct lmc_ring_attn_shape *s,
                                float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                const float *q, const float *k, const float *v, lmc_err *err) {
    struct ring g;
    struct ring_be b = {0};
    lmc_status st = ring_init(&g, c, s, err);
    bool have_b = !st && !(st = ring_be_init(&b, be, &g, true, err));
    size_t blk = st ? 0 : kv_bytes(&g, g.nmax) + sizeof(float);
    float *cur = st ? NULL : malloc(blk), *nxt = st ? NULL : malloc(blk);
    float *gcur = st ? NULL : calloc(1, blk), *gnxt = st ? NULL : malloc(blk);
    if (!st && (!cur || !nxt || !gcur || !gnxt)) st = lmc_err_set(err, LMC_ERR_OOM, "ring attention: out of memory");
    if (!st) {
        be->download(be->ctx, cur, k, sizeof(float) * (size_t)(g.n * g.kvd));
        be->download(be->ctx, cur + g.n * g.kvd, v, sizeof(float) * (size_t)(g.n * g.kvd));
        be->zero(be->ctx, dq, sizeof(float) * (size_t)(g.n * g.qd));
    }
    for (int step = 0; !st && step < g.W; step++) {
        int src = (g.r - step + g.W) % g.W, nsrc = (g.r - step - 1 + 2 * g.W) % g.W;
        int64_t ns = lmc_ring_attn_zigzag(s->T, src, g.W, g.spos);
        size_t bs = kv_bytes(&g, ns), bn = kv_bytes(&g, lmc_ring_attn_zigzag(s->T, nsrc, g.W, NULL));
        ring_be_put(&b, &g, cur, ns);
        be->upload(be->ctx, b.g_d, gcur, bs); /* the block's dK|dV so far */
        struct xfer_job j = {.x = {c, cur, nxt, bs, bn, LMC_OK, {0}}};
        bool more = step + 1 < g.W;
        if (more) xfer_start(&j);
        be->attn_block_bwd(be->ctx, dq, b.g_d, b.g_d + ns * g.kvd, dout, out, lse, q, b.blk_d, b.blk_d + ns * g.kvd,
                           b.qpos_d, b.kpos_d, g.n, ns, g.H, g.KV, g.hd, s->scale, 1);
        be->download(be->ctx, gcur, b.g_d, bs); /* waits for the kernels */
        if (more && (st = xfer_finish(&j, err))) break;
        if ((st = bwd_pass(&g, c, &cur, &nxt, &gcur, &gnxt, bs, bn, err))) break;
    }
    if (!st) { /* the block now in gcur is this rank's own */
        be->upload(be->ctx, dk, gcur, sizeof(float) * (size_t)(g.n * g.kvd));
        be->upload(be->ctx, dv, gcur + g.n * g.kvd, sizeof(float) * (size_t)(g.n * g.kvd));
        be->sync(be->ctx);
    }
    free(cur), free(nxt), free(gcur), free(gnxt);
    if (have_b) ring_be_free(&b);
    ring_free(&g);
    return st;
}
