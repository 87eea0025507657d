/* pp.c — the 1F1B pipeline schedule, its bubble model and the runner
 * (see pp.h). */
#include "dist/pp.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static int warmup(int P, int stage, int M) { return LMC_MIN(P - stage - 1, M); }

void lmc_pp_schedule_1f1b(int P, int stage, int M, struct lmc_pp_op *ops) {
    int w = warmup(P, stage, M), f = 0, b = 0, k = 0;
    for (int i = 0; i < w; i++) ops[k++] = (struct lmc_pp_op){LMC_PP_FWD, f++, 0};
    for (int i = 0; i < M - w; i++) {
        ops[k++] = (struct lmc_pp_op){LMC_PP_FWD, f++, 0};
        ops[k++] = (struct lmc_pp_op){LMC_PP_BWD, b++, 0};
    }
    while (b < M) ops[k++] = (struct lmc_pp_op){LMC_PP_BWD, b++, 0};
}

double lmc_pp_bubble_model(int P, int M, double tf, double tb) {
    /* list scheduling of each stage's ops in order: an op starts when its
     * stage is free and its input is ready (forward: the previous stage's
     * forward of mb; backward: the next stage's backward of mb) */
    struct lmc_pp_op *ops = malloc(sizeof *ops * (size_t)(2 * M * P));
    double *fend = calloc((size_t)(M * P), sizeof(double)), *bend = calloc((size_t)(M * P), sizeof(double));
    double *free_at = calloc((size_t)P, sizeof(double));
    int *next = calloc((size_t)P, sizeof(int));
    if (!ops || !fend || !bend || !free_at || !next) {
        free(ops), free(fend), free(bend), free(free_at), free(next);
        return -1;
    }
    for (int s = 0; s < P; s++) lmc_pp_schedule_1f1b(P, s, M, ops + 2 * M * s);
    int left = 2 * M * P;
    while (left > 0) {
        int progressed = 0;
        for (int s = 0; s < P; s++) {
            if (next[s] == 2 * M) continue;
            struct lmc_pp_op o = ops[2 * M * s + next[s]];
            double ready;
            if (o.kind == LMC_PP_FWD) {
                if (s > 0 && fend[(s - 1) * M + o.mb] == 0) continue;
                ready = s > 0 ? fend[(s - 1) * M + o.mb] : 0;
                fend[s * M + o.mb] = LMC_MAX(ready, free_at[s]) + tf;
                free_at[s] = fend[s * M + o.mb];
            } else {
                if (fend[s * M + o.mb] == 0 || (s < P - 1 && bend[(s + 1) * M + o.mb] == 0)) continue;
                ready = s < P - 1 ? bend[(s + 1) * M + o.mb] : fend[s * M + o.mb];
                bend[s * M + o.mb] = LMC_MAX(ready, free_at[s]) + tb;
                free_at[s] = bend[s * M + o.mb];
            }
            next[s]++, left--, progressed = 1;
        }
        LMC_ASSERT(progressed);
    }
    double end = 0;
    for (int s = 0; s < P; s++) end = LMC_MAX(end, free_at[s]);
    free(ops), free(fend), free(bend), free(free_at), free(next);
    return 1.0 - (double)M * (tf + tb) / end;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Blocking transfers between neighbours: a "pair" sends to and receives
 * from one neighbour; the lower stage of the two sends first. */
static lmc_status xsend(struct lmc_comm *c, const void *b, size_t n, int peer, lmc_err *err) {
    return n ? c->send(c, b, n, peer, err) : LMC_OK;
}
static lmc_status xrecv(struct lmc_comm *c, void *b, size_t n, int peer, lmc_err *err) {
    return n ? c->recv(c, b, n, peer, err) : LMC_OK;
}
static lmc_status pair(struct lmc_comm *c, const void *sb, size_t sn, void *rb, size_t rn, int peer,
                       lmc_err *err) {
    lmc_status st;
    if (c->rank < peer) {
        st = xsend(c, sb, sn, peer, err);
        return st ? st : xrecv(c, rb, rn, peer, err);
    }
    st = xrecv(c, rb, rn, peer, err);
    return st ? st : xsend(c, sb, sn, peer, err);
}

lmc_status lmc_pp_run(struct lmc_comm *c, const struct lmc_pp_stage *s, int M,
                      struct lmc_pp_stats *stats, lmc_err *err) {
    int P = c->world, r = c->rank;
    bool first = r == 0, last = r == P - 1;
    if (M < 1 || M > (1 << 20))
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: %d micro-batches out of range", M);
    if ((first && s->in_bytes) || (last && s->out_bytes) || (!first && !s->in_bytes) || (!last && !s->out_bytes))
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: stage %d of %d: activation sizes in %zu / out %zu do not fit its place",
                           r, P, s->in_bytes, s->out_bytes);
    size_t ib = s->in_bytes, ob = s->out_bytes;
    unsigned char *in = ib ? malloc(ib) : NULL, *din = ib ? malloc(ib) : NULL;
    unsigned char *out = ob ? malloc(ob) : NULL, *dout = ob ? malloc(ob) : NULL;
    if ((ib && (!in || !din)) || (ob && (!out || !dout))) {
        free(in), free(din), free(out), free(dout);
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory for activations");
    }
    double t0 = now_s(), busy = 0, t;
    int w = warmup(P, r, M), R = M - w, live = 0, max_live = 0, f = 0, b = 0;
    lmc_status st = LMC_OK;
#define CALL(expr) (t = now_s(), st = (expr), busy += now_s() - t, st)
    /* warm-up forwards */
    for (int i = 0; !st && i < w; i++) {
        if (!first && (st = xrecv(c, in, ib, r - 1, err))) break;
        if (CALL(s->fwd(s->user, f++, in, out, err))) break;
        live++;
        max_live = LMC_MAX(max_live, live);
        st = last ? LMC_OK : xsend(c, out, ob, r + 1, err);
    }
    if (!st && R > 0 && !first) st = xrecv(c, in, ib, r - 1, err);
    /* steady state: one forward, one backward */
    for (int i = 0; !st && i < R; i++) {
        if (CALL(s->fwd(s->user, f++, first ? NULL : in, out, err))) break;
        live++;
        max_live = LMC_MAX(max_live, live);
        if (!last && (st = pair(c, out, ob, dout, ob, r + 1, err))) break;
        if (CALL(s->bwd(s->user, b++, last ? NULL : dout, din, err))) break;
        live--;
        if (first) continue;
        st = i == R - 1 ? xsend(c, din, ib, r - 1, err) : pair(c, din, ib, in, ib, r - 1, err);
    }
    /* cool-down backwards */
    for (int i = 0; !st && i < w; i++) {
        if (!last && (st = xrecv(c, dout, ob, r + 1, err))) break;
        if (CALL(s->bwd(s->user, b++, last ? NULL : dout, din, err))) break;
        live--;
        st = first ? LMC_OK : xsend(c, din, ib, r - 1, err);
    }
#undef CALL
    free(in), free(din), free(out), free(dout);
    if (stats) *stats = (struct lmc_pp_stats){max_live, busy, now_s() - t0};
    return st;
}

/* ---- interleaved 1F1B ---- */

lmc_status lmc_pp_interleaved_check(int P, int M, int V, lmc_err *err) {
    if (P < 1 || P > 4096 || V < 1 || V > 4096 || M < 1 || M > (1 << 20) || (int64_t)M * V * P > (1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: %d stages x %d chunks x %d micro-batches out of range", P, V, M);
    if (V > 1 && M % P)
        return lmc_err_set(err, LMC_ERR_ARG, "interleaved pipeline: %d micro-batches is not a multiple of the %d stages "
                           "(the interleaved schedule runs the micro-batches in groups of P)", M, P);
    return LMC_OK;
}

static int iwarmup(int P, int r, int M, int V) {
    int64_t w = (int64_t)(P - r - 1) * 2 + (int64_t)(V - 1) * P;
    return (int)LMC_MIN(w, (int64_t)M * V);
}

static struct lmc_pp_op vop(int P, int V, int k, enum lmc_pp_kind kind) {
    int g = k % (P * V), v = g / P;
    return (struct lmc_pp_op){kind, (k / (P * V)) * P + g % P, kind == LMC_PP_FWD ? v : V - 1 - v};
}

void lmc_pp_schedule_interleaved(int P, int r, int M, int V, struct lmc_pp_op *ops) {
    int total = M * V, w = iwarmup(P, r, M, V), k = 0, f = 0, b = 0;
    for (int i = 0; i < w; i++) ops[k++] = vop(P, V, f++, LMC_PP_FWD);
    for (int i = 0; i < total - w; i++) {
        ops[k++] = vop(P, V, f++, LMC_PP_FWD);
        ops[k++] = vop(P, V, b++, LMC_PP_BWD);
    }
    while (b < total) ops[k++] = vop(P, V, b++, LMC_PP_BWD);
}

int lmc_pp_interleaved_live(int P, int r, int M, int V) {
    if (V == 1) return LMC_MIN(P - r, M);
    return LMC_MIN(iwarmup(P, r, M, V) + 1, M * V);
}

/* The rank's order: interleaved, or 1F1B for V = 1 (chunk 0). */
static void vschedule(int P, int r, int M, int V, struct lmc_pp_op *ops) {
    if (V == 1) lmc_pp_schedule_1f1b(P, r, M, ops);
    else lmc_pp_schedule_interleaved(P, r, M, V, ops);
}

/* The whole pipeline list-scheduled: each rank runs its ops in order, an
 * op starting when the rank is free and its input is there (forward of
 * model chunk j: chunk j-1's forward of that micro-batch; backward: chunk
 * j+1's backward, or the last chunk's own forward). Start and end times
 * per (model chunk j, mb) at j M + mb. 0 or -1 (stuck). */
struct vsim {
    int P, M, V;
    struct lmc_pp_op *ops;            /* (P, 2 M V) */
    int64_t *fs, *fe, *bs, *be, end;  /* (P V M) each; the makespan */
};

static void vsim_free(struct vsim *s) {
    free(s->ops), free(s->fs), free(s->fe), free(s->bs), free(s->be);
    memset(s, 0, sizeof *s);
}

static int vsim_run(struct vsim *s, int P, int M, int V, int64_t tf, int64_t tb) {
    memset(s, 0, sizeof *s);
    s->P = P, s->M = M, s->V = V;
    size_t n = (size_t)P * (size_t)V * (size_t)M, nops = 2 * n;
    s->ops = malloc(nops * sizeof *s->ops);
    s->fs = malloc(n * sizeof(int64_t)), s->fe = malloc(n * sizeof(int64_t));
    s->bs = malloc(n * sizeof(int64_t)), s->be = malloc(n * sizeof(int64_t));
    int64_t *free_at = calloc((size_t)P, sizeof(int64_t));
    int *next = calloc((size_t)P, sizeof(int));
    if (!s->ops || !s->fs || !s->fe || !s->bs || !s->be || !free_at || !next) {
        free(free_at), free(next);
        vsim_free(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++) s->fe[i] = s->be[i] = -1;
    int per = 2 * M * V, PV = P * V;
    for (int r = 0; r < P; r++) vschedule(P, r, M, V, s->ops + (size_t)per * (size_t)r);
    int64_t left = (int64_t)nops;
    while (left > 0) {
        bool progressed = false;
        for (int r = 0; r < P; r++) {
            while (next[r] < per) {
                struct lmc_pp_op o = s->ops[(size_t)per * (size_t)r + (size_t)next[r]];
                int j = o.chunk * P + r;
                size_t at = (size_t)j * (size_t)M + (size_t)o.mb;
                int64_t ready;
                if (o.kind == LMC_PP_FWD) {
                    if (j > 0 && s->fe[at - (size_t)M] < 0) break;
                    ready = j > 0 ? s->fe[at - (size_t)M] : 0;
                    s->fs[at] = LMC_MAX(ready, free_at[r]);
                    s->fe[at] = free_at[r] = s->fs[at] + tf;
                } else {
                    if (s->fe[at] < 0 || (j < PV - 1 && s->be[at + (size_t)M] < 0)) break;
                    ready = j < PV - 1 ? s->be[at + (size_t)M] : s->fe[at];
                    s->bs[at] = LMC_MAX(ready, free_at[r]);
                    s->be[at] = free_at[r] = s->bs[at] + tb;
                }
                next[r]++, left--, progressed = true;
            }
        }
        if (!progressed) {
            free(free_at), free(next);
            vsim_free(s);
            return -1;
        }
    }
    for (int r = 0; r < P; r++) s->end = LMC_MAX(s->end, free_at[r]);
    free(free_at), free(next);
    return 0;
}

double lmc_pp_bubble_model_v(int P, int M, int V, int64_t tf, int64_t tb) {
    lmc_err err = {0};
    struct vsim s;
    if (lmc_pp_interleaved_check(P, M, V, &err) || tf <= 0 || tb <= 0 || vsim_run(&s, P, M, V, tf, tb)) return -1;
    double b = 1.0 - (double)M * (double)V * (double)(tf + tb) / (double)s.end;
    vsim_free(&s);
    return b;
}

/* One event of a rank's plan: a computation (op) or a transfer of the
 * message (kind, model chunk j, mb), ordered by (time, transfers before
 * computations, kind, j, mb): the transfers' order is one global order. */
struct vev {
    int64_t t;
    int comp;            /* 0 transfer, 1 computation */
    int kind, j, mb;     /* transfer: the message; computation: the op's index in the rank's order */
    int send;            /* transfer: this rank sends (else receives) */
};

static int vev_cmp(const void *a, const void *b) {
    const struct vev *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    if (x->comp != y->comp) return x->comp - y->comp;
    if (x->kind != y->kind) return x->kind - y->kind;
    if (x->j != y->j) return x->j - y->j;
    return x->mb - y->mb;
}

lmc_status lmc_pp_run_interleaved(struct lmc_comm *c, const struct lmc_pp_vstage *st, int M,
                                  struct lmc_pp_stats *stats, lmc_err *err) {
    int P = c->world, r = c->rank, V = st->V;
    lmc_status s = lmc_pp_interleaved_check(P, M, V, err);
    if (s) return s;
    struct vsim sim;
    if (vsim_run(&sim, P, M, V, 1, 2))
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory for the schedule (or it cannot finish)");
    int PV = P * V, per = 2 * M * V;
    size_t n = (size_t)PV * (size_t)M;
    /* the rank's events: its computations at their start, and the transfers it takes part in at
     * the time their message is made (sender and receiver the same time and key) */
    struct vev *ev = malloc(sizeof *ev * (size_t)(per + 2 * per));
    void **buf = calloc(2 * n, sizeof *buf); /* (kind, j, mb): the message made by chunk j */
    if (!ev || !buf) {
        free(ev), free(buf), vsim_free(&sim);
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory for the schedule");
    }
    int ne = 0;
    const struct lmc_pp_op *mine = sim.ops + (size_t)per * (size_t)r;
    for (int k = 0; k < per; k++) {
        size_t at = (size_t)(mine[k].chunk * P + r) * (size_t)M + (size_t)mine[k].mb;
        ev[ne++] = (struct vev){mine[k].kind == LMC_PP_FWD ? sim.fs[at] : sim.bs[at], 1, 0, 0, k, 0};
    }
    for (int j = 0; P > 1 && j < PV; j++)
        for (int mb = 0; mb < M; mb++) {
            size_t at = (size_t)j * (size_t)M + (size_t)mb;
            int from = j % P;
            if (j < PV - 1 && (from == r || (j + 1) % P == r)) /* forward output of chunk j to chunk j+1 */
                ev[ne++] = (struct vev){sim.fe[at], 0, 0, j, mb, from == r};
            if (j > 0 && (from == r || (j - 1) % P == r)) /* input gradient of chunk j to chunk j-1 */
                ev[ne++] = (struct vev){sim.be[at], 0, 1, j, mb, from == r};
        }
    qsort(ev, (size_t)ne, sizeof *ev, vev_cmp);
    size_t ab = st->act_bytes ? st->act_bytes : 1;
    double t0 = now_s(), busy = 0, t;
    int live = 0, max_live = 0;
    for (int e = 0; !s && e < ne; e++) {
        const struct vev *x = &ev[e];
        if (!x->comp) {
            void **slot = &buf[(size_t)x->kind * n + (size_t)x->j * (size_t)M + (size_t)x->mb];
            int peer = x->kind == 0 ? (x->send ? (x->j + 1) % P : x->j % P) : (x->send ? (x->j - 1) % P : x->j % P);
            if (x->send) {
                LMC_ASSERT(*slot);
                s = xsend(c, *slot, st->act_bytes, peer, err);
                free(*slot);
                *slot = NULL;
            } else {
                LMC_ASSERT(!*slot);
                if (!(*slot = malloc(ab))) s = lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory for a message");
                else s = xrecv(c, *slot, st->act_bytes, peer, err);
            }
            continue;
        }
        struct lmc_pp_op o = mine[x->mb];
        int j = o.chunk * P + r;
        size_t at = (size_t)j * (size_t)M + (size_t)o.mb;
        void **in, **out;
        if (o.kind == LMC_PP_FWD) {
            in = j > 0 ? &buf[at - (size_t)M] : NULL;
            out = j < PV - 1 ? &buf[at] : NULL;
        } else {
            in = j < PV - 1 ? &buf[n + at + (size_t)M] : NULL;
            out = j > 0 ? &buf[n + at] : NULL;
        }
        LMC_ASSERT(!in || *in);
        if (out && !(*out = malloc(ab))) {
            s = lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory for activations");
            break;
        }
        t = now_s();
        s = o.kind == LMC_PP_FWD ? st->fwd(st->user, o.chunk, o.mb, in ? *in : NULL, out ? *out : NULL, err)
                                 : st->bwd(st->user, o.chunk, o.mb, in ? *in : NULL, out ? *out : NULL, err);
        busy += now_s() - t;
        if (in) {
            free(*in);
            *in = NULL;
        }
        live += o.kind == LMC_PP_FWD ? 1 : -1;
        max_live = LMC_MAX(max_live, live);
    }
    for (size_t i = 0; i < 2 * n; i++) free(buf[i]);
    free(buf), free(ev);
    vsim_free(&sim);
    if (stats) *stats = (struct lmc_pp_stats){max_live, busy, now_s() - t0};
    return s;
}
