/* moe_ep.c — expert parallelism of the mixture-of-experts layer (see
 * moe_ep.h): the group (which rank owns which experts), the exchange plan
 * of a layer (every rank's rows per expert, all-gathered once per forward),
 * the dispatch and return of rows by alltoallv, the reordering between the
 * received order (by source rank, then expert) and the order the grouped
 * GEMM needs (by expert, then source rank), and the per-layer buffers the
 * backward reuses. */
#include "model/moe_ep.h"
#include "dist/comm.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

struct lmc_ep_layer {
    int64_t *cnt;                     /* (world, E) rows of each rank per expert, last forward */
    int64_t rows, cap;                /* rows received for this rank's experts; capacity */
    float *xr, *g, *u, *a;            /* (rows, C | I | I | I), by expert then source rank */
};

static void fail(struct lmc_ep_group *g, lmc_status s, const lmc_err *e) {
    if (g->st) return;
    g->st = s;
    g->err = *e;
}

lmc_status lmc_ep_group_init(struct lmc_ep_group *g, struct lmc_comm *c, int64_t E, int64_t L,
                             bool replicated, lmc_err *err) {
    memset(g, 0, sizeof *g);
    int W = c->world;
    if (E < W)
        return lmc_err_set(err, LMC_ERR_ARG, "expert parallel: %lld experts cannot be split over %d ranks "
                           "(every rank needs at least one)", (long long)E, W);
    if (!c->alltoallv)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "expert parallel: the %s communicator has no alltoallv", c->name);
    g->c = c;
    g->E = E;
    g->L = L;
    g->replicated = replicated;
    g->first = calloc((size_t)W + 1, sizeof *g->first);
    g->plan = calloc(4 * (size_t)W + (size_t)E + 1, sizeof *g->plan);
    g->layers = calloc((size_t)(L > 0 ? L : 1), sizeof *g->layers);
    bool ok = g->first && g->plan && g->layers;
    for (int64_t l = 0; ok && l < L; l++) ok = (g->layers[l].cnt = calloc((size_t)W * (size_t)E, sizeof(int64_t))) != NULL;
    if (!ok) {
        lmc_ep_group_free(g);
        return lmc_err_set(err, LMC_ERR_OOM, "expert parallel: out of memory");
    }
    for (int q = 0; q < W; q++) {
        int64_t b, n;
        lmc_dist_slice(E, q, W, &b, &n);
        g->first[q] = b;
        g->first[q + 1] = b + n;
    }
    g->e0 = g->first[c->rank];
    g->ne = g->first[c->rank + 1] - g->e0;
    return LMC_OK;
}

void lmc_ep_group_free(struct lmc_ep_group *g) {
    for (int64_t l = 0; g->layers && l < g->L; l++) {
        struct lmc_ep_layer *y = &g->layers[l];
        free(y->cnt), free(y->xr), free(y->g), free(y->u), free(y->a);
    }
    free(g->layers), free(g->first), free(g->plan);
    free(g->sa), free(g->sb), free(g->si1), free(g->si2), free(g->gather);
    memset(g, 0, sizeof *g);
}

lmc_status lmc_ep_group_check(struct lmc_ep_group *g, lmc_err *err) {
    lmc_status s = g->st;
    if (s && err) *err = g->err;
    g->st = LMC_OK;
    return s;
}

static bool grow(float **p, int64_t n) {
    float *q = realloc(*p, sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!q) return false;
    *p = q;
    return true;
}

/* Scratch for `rows` rows of width C (sa, sb) and I (si1, si2). */
static bool scratch(struct lmc_ep_group *g, int64_t rows, int64_t C, int64_t I) {
    if (rows <= g->cap_rows) return true;
    if (!grow(&g->sa, rows * C) || !grow(&g->sb, rows * C) || !grow(&g->si1, rows * I) || !grow(&g->si2, rows * I))
        return false;
    g->cap_rows = rows;
    return true;
}

/* The exchange of layer y for this rank's grouping off (E + 1): plan =
 * [send counts | send offsets | receive counts | receive offsets] in
 * elements of width C (4 world entries), then the local experts' row
 * offsets by expert (ne + 1, in rows). */
static void make_plan(struct lmc_ep_group *g, struct lmc_ep_layer *y, const int64_t *off, int64_t C) {
    int W = g->c->world;
    int64_t *sc = g->plan, *so = sc + W, *rc = so + W, *ro = rc + W, *loff = ro + W, E = g->E;
    int64_t at = 0;
    for (int q = 0; q < W; q++) {
        sc[q] = (off[g->first[q + 1]] - off[g->first[q]]) * C;
        so[q] = off[g->first[q]] * C;
        int64_t n = 0;
        for (int64_t j = 0; j < g->ne; j++) n += y->cnt[q * E + g->e0 + j];
        rc[q] = n * C;
        ro[q] = at * C;
        at += n;
    }
    y->rows = at;
    loff[0] = 0;
    for (int64_t j = 0; j < g->ne; j++) {
        int64_t n = 0;
        for (int q = 0; q < W; q++) n += y->cnt[q * E + g->e0 + j];
        loff[j + 1] = loff[j] + n;
    }
}

/* Received order (source rank, then expert) <-> expert order (expert, then
 * source rank), rows of width C (the plan's offsets are in elements of C). */
static void reorder(const struct lmc_ep_group *g, const struct lmc_ep_layer *y, const float *src, float *dst,
                    int64_t C, bool to_expert) {
    int W = g->c->world;
    const int64_t *ro = g->plan + 3 * W, *loff = g->plan + 4 * W, *cnt = y->cnt + g->e0;
    for (int q = 0; q < W; q++) {
        int64_t at = ro[q]; /* q's rows for this rank's experts, expert by expert */
        for (int64_t j = 0; j < g->ne; j++) {
            int64_t n = cnt[q * g->E + j], d = loff[j];
            for (int q2 = 0; q2 < q; q2++) d += cnt[q2 * g->E + j];
            if (n > 0) {
                if (to_expert) memcpy(dst + d * C, src + at, sizeof(float) * (size_t)(n * C));
                else memcpy(dst + at, src + d * C, sizeof(float) * (size_t)(n * C));
            }
            at += n * C;
        }
    }
}

static bool a2a(struct lmc_ep_group *g, const float *send, float *recv, bool forward) {
    int W = g->c->world;
    const int64_t *sc = g->plan, *so = sc + W, *rc = so + W, *ro = rc + W;
    lmc_err e = {0};
    lmc_status s = forward ? g->c->alltoallv(g->c, send, sc, so, recv, rc, ro, LMC_DTYPE_F32, &e)
                           : g->c->alltoallv(g->c, send, rc, ro, recv, sc, so, LMC_DTYPE_F32, &e);
    if (s) fail(g, s, &e);
    return !s;
}

void lmc_ep_experts_fwd(struct lmc_ep_group *g, int64_t l, const struct lmc_backend *be,
                        const struct lmc_config *c, const struct lmc_linear *X, const int64_t *off,
                        const float *xs, int64_t nk, float *o) {
    LMC_ASSERT(l >= 0 && l < g->L && c->num_experts == g->E);
    struct lmc_ep_layer *y = &g->layers[l];
    int64_t E = g->E, C = c->hidden_size, I = c->moe_intermediate_size;
    lmc_err e = {0};
    lmc_status s;
    if (g->st) goto zero;
    int64_t mine[4096];
    LMC_ASSERT(E <= 4096);
    for (int64_t k = 0; k < E; k++) mine[k] = off[k + 1] - off[k];
    if ((s = g->c->all_gather(g->c, mine, y->cnt, E, LMC_DTYPE_I64, &e))) {
        fail(g, s, &e);
        goto zero;
    }
    make_plan(g, y, off, C);
    int64_t m = y->rows;
    if (m > y->cap) {
        if (!grow(&y->xr, m * C) || !grow(&y->g, m * I) || !grow(&y->u, m * I) || !grow(&y->a, m * I)) goto oom;
        y->cap = m;
    }
    if (!scratch(g, LMC_MAX(m, nk), C, I)) goto oom;
    if (!a2a(g, xs, g->sa, true)) goto zero;
    reorder(g, y, g->sa, y->xr, C, true);
    const int64_t *loff = g->plan + 4 * g->c->world;
    lmc_moe_experts_fwd(be, c, X + g->e0 * LMC_X_N, g->ne, loff, y->xr, y->g, y->u, y->a, g->sb);
    reorder(g, y, g->sb, g->sa, C, false);
    if (!a2a(g, g->sa, o, false)) goto zero;
    return;
oom:
    e = (lmc_err){0};
    s = lmc_err_set(&e, LMC_ERR_OOM, "expert parallel: out of memory for %lld rows of layer %lld",
                    (long long)y->rows, (long long)l);
    fail(g, s, &e);
zero:
    memset(o, 0, sizeof(float) * (size_t)(nk * C));
}

void lmc_ep_experts_bwd(struct lmc_ep_group *g, int64_t l, const struct lmc_backend *be,
                        const struct lmc_config *c, const struct lmc_linear *X, const struct lmc_linear *GX,
                        const int64_t *off, float *do_, int64_t nk) {
    LMC_ASSERT(l >= 0 && l < g->L && c->num_experts == g->E);
    struct lmc_ep_layer *y = &g->layers[l];
    int64_t C = c->hidden_size, I = c->moe_intermediate_size;
    if (g->st) goto zero;
    make_plan(g, y, off, C); /* the forward's counts: nothing to gather again */
    int64_t m = y->rows;
    if (!scratch(g, LMC_MAX(m, nk), C, I)) {
        lmc_err e = {0};
        lmc_status s = lmc_err_set(&e, LMC_ERR_OOM, "expert parallel: out of memory for %lld rows", (long long)m);
        fail(g, s, &e);
        goto zero;
    }
    if (!a2a(g, do_, g->sa, true)) goto zero;
    reorder(g, y, g->sa, g->sb, C, true);
    const int64_t *loff = g->plan + 4 * g->c->world;
    lmc_moe_experts_bwd(be, c, X + g->e0 * LMC_X_N, GX + g->e0 * LMC_X_N, g->ne, loff, g->sb, g->si1, g->si2,
                        y->xr, y->g, y->u, y->a);
    reorder(g, y, g->sb, g->sa, C, false);
    if (!a2a(g, g->sa, do_, false)) goto zero;
    return;
zero:
    memset(do_, 0, sizeof(float) * (size_t)(nk * C));
}

void lmc_ep_gather_rows(struct lmc_ep_group *g, float *y, int64_t n, int64_t C, int64_t per) {
    int W = g->c->world, me = g->c->rank;
    if (g->st || W == 1) return;
    int64_t need = (int64_t)W * per * C;
    if (need > g->cap_gather) {
        if (!grow(&g->gather, need)) {
            lmc_err e = {0};
            lmc_status s = lmc_err_set(&e, LMC_ERR_OOM, "expert parallel: out of memory gathering %lld rows", (long long)n);
            fail(g, s, &e);
            return;
        }
        g->cap_gather = need;
    }
    int64_t t0, tn;
    lmc_dist_slice(n, me, W, &t0, &tn);
    float *mine = g->gather + (int64_t)me * per * C;
    if (tn > 0) memcpy(mine, y + t0 * C, sizeof(float) * (size_t)(tn * C));
    lmc_err e = {0};
    lmc_status s = g->c->all_gather(g->c, mine, g->gather, per * C, LMC_DTYPE_F32, &e);
    if (s) {
        fail(g, s, &e);
        return;
    }
    for (int q = 0; q < W; q++) {
        lmc_dist_slice(n, q, W, &t0, &tn);
        if (q != me && tn > 0) memcpy(y + t0 * C, g->gather + (int64_t)q * per * C, sizeof(float) * (size_t)(tn * C));
    }
}
