/* comm_split.c — sub-communicators of a host communicator (lmc_comm_split,
 * comm.h): the members' colors and keys are all-gathered over the parent,
 * and the sub-communicator is comm_host.c's collectives over a transport
 * that maps its ranks to the parent's and moves the bytes through the
 * parent's transport, under the lock the parent's worker holds around its
 * own collectives. Messages between two ranks keep their order on the
 * shared links, so collectives of the parent and of its subs issued one
 * after another in the same order on every rank never mix. */
#include "dist/comm_host.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

struct split_ctx {
    struct lmc_xport *parent;
    pthread_mutex_t *lock;
    int *map;               /* sub rank -> parent rank */
    struct lmc_xfer *x;     /* (2 world) the exchange in parent ranks */
};

static lmc_status split_exchange(struct lmc_xport *t, struct lmc_xfer *x, int n, const char *what, lmc_err *err) {
    struct split_ctx *s = t->ctx;
    LMC_ASSERT(n <= 2 * t->world);
    for (int i = 0; i < n; i++) {
        LMC_ASSERT(x[i].peer >= 0 && x[i].peer < t->world);
        s->x[i] = x[i];
        s->x[i].peer = s->map[x[i].peer];
    }
    pthread_mutex_lock(s->lock);
    lmc_status st = s->parent->exchange(s->parent, s->x, n, what, err);
    pthread_mutex_unlock(s->lock);
    return st;
}

static void split_free(struct lmc_xport *t) {
    struct split_ctx *s = t->ctx;
    if (s) {
        free(s->map);
        free(s->x);
        free(s);
    }
    free(t);
}

lmc_status lmc_comm_split(struct lmc_comm *parent, int color, int key, struct lmc_comm *sub, lmc_err *err) {
    memset(sub, 0, sizeof *sub);
    if (color < 0) return lmc_err_set(err, LMC_ERR_ARG, "comm split: color %d (expected >= 0)", color);
    if (parent->world == 1) {
        lmc_comm_single_init(sub);
        return LMC_OK;
    }
    pthread_mutex_t *lock = NULL;
    struct lmc_xport *pt = lmc_comm_host_xport(parent, &lock);
    if (!pt)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "comm split: %s communicators do not split (tcp and mpi do)",
                           parent->name);
    int W = parent->world;
    int64_t mine[2] = {color, key}, *all = malloc(sizeof(int64_t) * 2 * (size_t)W);
    if (!all) return lmc_err_set(err, LMC_ERR_OOM, "comm split: out of memory");
    lmc_status s = parent->all_gather(parent, mine, all, 2, LMC_DTYPE_I64, err);
    if (s) {
        free(all);
        return s;
    }
    /* the members, ordered by (key, parent rank): insertion sort */
    int *map = malloc(sizeof(int) * (size_t)W), n = 0, me = -1;
    if (!map) {
        free(all);
        return lmc_err_set(err, LMC_ERR_OOM, "comm split: out of memory");
    }
    for (int r = 0; r < W; r++) {
        if (all[2 * r] != color) continue;
        int k = n++;
        while (k > 0 && all[2 * map[k - 1] + 1] > all[2 * r + 1]) {
            map[k] = map[k - 1];
            k--;
        }
        map[k] = r;
    }
    free(all);
    for (int i = 0; i < n; i++)
        if (map[i] == parent->rank) me = i;
    LMC_ASSERT(me >= 0);
    if (n == 1) {
        free(map);
        lmc_comm_single_init(sub);
        return LMC_OK;
    }
    struct lmc_xport *t = calloc(1, sizeof *t);
    struct split_ctx *c = calloc(1, sizeof *c);
    struct lmc_xfer *x = calloc(2 * (size_t)n, sizeof *x);
    if (!t || !c || !x) {
        free(t), free(c), free(x), free(map);
        return lmc_err_set(err, LMC_ERR_OOM, "comm split: out of memory");
    }
    *c = (struct split_ctx){pt, lock, map, x};
    t->rank = me;
    t->world = n;
    t->timeout_s = pt->timeout_s;
    t->ctx = c;
    t->exchange = split_exchange;
    t->free = split_free;
    return lmc_comm_host_init(sub, t, parent->name, parent->local_rank, err);
}
