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
    for (int i = 0; i < w; i++) ops[k++] = (struct lmc_pp_op){LMC_PP_FWD, f++};
    for (int i = 0; i < M - w; i++) {
        ops[k++] = (struct lmc_pp_op){LMC_PP_FWD, f++};
        ops[k++] = (struct lmc_pp_op){LMC_PP_BWD, b++};
    }
    while (b < M) ops[k++] = (struct lmc_pp_op){LMC_PP_BWD, b++};
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
