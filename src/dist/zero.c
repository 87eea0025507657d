/* zero.c — ZeRO stages 0-3 over flat float32 arenas (see zero.h for the
 * contract and the shard layout). Memory, per rank, for P parameters
 * (world N; units padded to multiples of N):
 *   stage 0  params, grads, m, v full                        16P bytes
 *   stage 1  params, grads full; m, v shards (the gradient
 *            shard is reduced in place in the full buffer)   8P + 8P/N
 *   stage 2  params full; grads, m, v shards; at most two
 *            units' full gradients (computing + in flight)   4P + 12P/N (+2 units)
 *   stage 3  params, grads, m, v shards; gathered units
 *            (current + prefetched) and two unit gradients   16P/N (+units)
 * At world 1 the shards are the whole arena and nothing is communicated. */
#include "dist/zero.h"
#include "dist/zero_internal.h"
#include "core/core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *balloc(struct lmc_zero *z, size_t bytes) {
    void *p = z->be->alloc(z->be->ctx, bytes ? bytes : 4);
    if (p) {
        z->bytes_now += bytes;
        if (z->bytes_now > z->bytes_peak) z->bytes_peak = z->bytes_now;
    }
    return p;
}
static void bfree(struct lmc_zero *z, void *p, size_t bytes) {
    if (!p) return;
    z->be->free(z->be->ctx, p);
    z->bytes_now -= bytes;
}

static lmc_status pool_init(struct lmc_zero_pool *pl, int n) {
    pl->buf = calloc((size_t)n, sizeof *pl->buf);
    pl->used = calloc((size_t)n, sizeof *pl->used);
    pl->n = 0;
    return pl->buf && pl->used ? LMC_OK : LMC_ERR_OOM;
}
/* A free slot, allocating one more when all are in use (NULL: no memory). */
static float *pool_get(struct lmc_zero *z, struct lmc_zero_pool *pl) {
    for (int i = 0; i < pl->n; i++)
        if (!pl->used[i]) {
            pl->used[i] = true;
            return pl->buf[i];
        }
    float *b = balloc(z, z->slot_bytes);
    if (!b) return NULL;
    LMC_ASSERT(pl->n < z->n_units);
    pl->buf[pl->n] = b;
    pl->used[pl->n++] = true;
    return b;
}
static void pool_put(struct lmc_zero_pool *pl, float *b) {
    for (int i = 0; i < pl->n; i++)
        if (pl->buf[i] == b) pl->used[i] = false;
}
static void pool_free(struct lmc_zero *z, struct lmc_zero_pool *pl) {
    for (int i = 0; pl->buf && i < pl->n; i++) bfree(z, pl->buf[i], z->slot_bytes);
    free(pl->buf);
    free(pl->used);
    memset(pl, 0, sizeof *pl);
}

int64_t lmc_zero_real(const struct lmc_zero_unit *u, int q) {
    int64_t left = u->n - (int64_t)q * u->s;
    return left <= 0 ? 0 : left < u->s ? left : u->s;
}

/* Unit u's part-q pointers of parameters, gradients and moments (part q is
 * held by this rank in stage 0 for every q, otherwise only q == rank). */
static float *part_p(struct lmc_zero *z, int u, int q) {
    const struct lmc_zero_unit *U = &z->units[u];
    return z->stage == 3 ? z->p_sh + U->sh_off : z->p_full + U->pa_off + (int64_t)q * U->s;
}
static float *part_g(struct lmc_zero *z, int u, int q) {
    const struct lmc_zero_unit *U = &z->units[u];
    return z->stage >= 2 ? z->g_sh + U->sh_off : z->g_full + U->pa_off + (int64_t)q * U->s;
}
static float *part_m(struct lmc_zero *z, float *base, int u, int q) {
    const struct lmc_zero_unit *U = &z->units[u];
    return z->stage == 0 ? base + U->pa_off + (int64_t)q * U->s : base + U->sh_off;
}

static size_t unit_bytes(const struct lmc_zero *z, int u);

static uint64_t layout_hash(const struct lmc_zero_cfg *cfg) {
    uint64_t h = 1469598103934665603ull;
#define MIX(v) do { uint64_t x_ = (uint64_t)(v); for (int b_ = 0; b_ < 8; b_++) h = (h ^ ((x_ >> (8 * b_)) & 255)) * 1099511628211ull; } while (0)
    for (int i = 0; i < cfg->n_tensors; i++) {
        const struct lmc_zero_tensor *t = &cfg->tensors[i];
        for (const char *c = t->name ? t->name : ""; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        MIX(t->offset);
        MIX(t->numel);
        MIX(t->unit);
        MIX(t->decay);
        for (int d = 0; d < t->ndim && d < 4; d++) MIX(t->shape[d]);
    }
#undef MIX
    return h;
}

uint64_t lmc_zero_layout_hash(const struct lmc_zero *z) { return z->layout_hash; }

static lmc_status check_cfg(const struct lmc_zero_cfg *cfg, lmc_err *err) {
    if (cfg->stage < 0 || cfg->stage > 3)
        return lmc_err_set(err, LMC_ERR_ARG, "zero: stage %d (expected 0, 1, 2 or 3)", cfg->stage);
    if (cfg->no_moments && cfg->stage != 0)
        return lmc_err_set(err, LMC_ERR_ARG, "zero: stage %d shards the AdamW moments (an optimizer of the "
                           "caller's runs with stage 0)", cfg->stage);
    if (cfg->n_tensors <= 0 || !cfg->tensors) return lmc_err_set(err, LMC_ERR_ARG, "zero: no tensors");
    int64_t at = 0;
    for (int i = 0; i < cfg->n_tensors; i++) {
        const struct lmc_zero_tensor *t = &cfg->tensors[i];
        const char *nm = t->name ? t->name : "?";
        if (t->offset != at || t->numel <= 0)
            return lmc_err_set(err, LMC_ERR_ARG, "zero: tensor %s at offset %lld (numel %lld); expected "
                               "offset %lld and numel > 0 (tensors in arena order, no gaps)", nm,
                               (long long)t->offset, (long long)t->numel, (long long)at);
        int prev = i ? cfg->tensors[i - 1].unit : 0;
        if (t->unit != prev && t->unit != prev + 1)
            return lmc_err_set(err, LMC_ERR_ARG, "zero: tensor %s has unit %d after unit %d (units are "
                               "numbered 0, 1, ... in arena order)", nm, t->unit, prev);
        if (i == 0 && t->unit != 0) return lmc_err_set(err, LMC_ERR_ARG, "zero: the first unit must be 0");
        if (t->ndim < 0 || t->ndim > 4) return lmc_err_set(err, LMC_ERR_ARG, "zero: tensor %s has %d dimensions", nm, t->ndim);
        int64_t prod = 1;
        for (int d = 0; d < t->ndim; d++)
            if (!lmc_mul_ok(prod, t->shape[d], &prod)) prod = -1;
        if (t->ndim > 0 && prod != t->numel)
            return lmc_err_set(err, LMC_ERR_ARG, "zero: tensor %s: shape gives %lld elements, numel is %lld", nm,
                               (long long)prod, (long long)t->numel);
        if (!lmc_add_ok(at, t->numel, &at)) return lmc_err_set(err, LMC_ERR_ARG, "zero: arena too large");
    }
    return LMC_OK;
}

static lmc_status check_same_everywhere(struct lmc_zero *z, lmc_err *err) {
    struct lmc_comm *c = z->comm;
    if (c->world == 1) return LMC_OK;
    char desc[160];
    snprintf(desc, sizeof desc, "zero stage %d, %d tensors, %lld parameters, layout %016llx", z->stage,
             z->n_tensors, (long long)z->numel, (unsigned long long)z->layout_hash);
    if (!c->device_buffers) return lmc_dist_check_same(c, "ZeRO configuration", desc, err);
    /* device communicators: equal everywhere iff max(x) == x and max(-x) == -x */
    double v[4] = {(double)(z->layout_hash >> 32), -(double)(z->layout_hash >> 32),
                   (double)(uint32_t)z->layout_hash + 4294967296.0 * z->stage,
                   -((double)(uint32_t)z->layout_hash + 4294967296.0 * z->stage)};
    double w[4];
    memcpy(w, v, sizeof v);
    z->be->upload(z->be->ctx, z->dscratch, w, sizeof w);
    lmc_status s = c->all_reduce(c, z->dscratch, 4, LMC_DTYPE_F64, LMC_REDUCE_MAX, err);
    if (s) return s;
    z->be->download(z->be->ctx, w, z->dscratch, sizeof w);
    if (memcmp(v, w, sizeof v))
        return lmc_err_set(err, LMC_ERR_ARG, "dist: ranks disagree on the ZeRO configuration (rank %d has "
                           "%s); every rank must be started with the same model and options", c->rank, desc);
    return LMC_OK;
}

/* Unit u's initial parameters from cfg->fill: stages 0-2 the whole unit
 * into the full buffer, stage 3 this rank's part into its shard (through
 * a host buffer of that size). */
static lmc_status fill_unit(struct lmc_zero *z, const struct lmc_zero_cfg *cfg, int u, lmc_err *err) {
    const struct lmc_zero_unit *U = &z->units[u];
    bool whole = z->stage <= 2;
    int64_t k = whole ? U->n : lmc_zero_real(U, z->r), at = whole ? U->off : U->off + (int64_t)z->r * U->s;
    float *dst = whole ? z->p_full + U->pa_off : z->p_sh + U->sh_off;
    z->be->zero(z->be->ctx, dst, whole ? unit_bytes(z, u) : (size_t)U->s * sizeof(float));
    if (k <= 0) return LMC_OK;
    float *host = malloc((size_t)k * sizeof(float));
    if (!host) return lmc_err_set(err, LMC_ERR_OOM, "zero: out of memory");
    lmc_status s = cfg->fill(cfg->fill_user, at, k, host, err);
    if (!s) {
        z->be->upload(z->be->ctx, dst, host, (size_t)k * sizeof(float));
        z->be->sync(z->be->ctx); /* host goes next */
    }
    free(host);
    return s;
}

lmc_status lmc_zero_init(struct lmc_zero **out, const struct lmc_zero_cfg *cfg, struct lmc_comm *comm,
                         struct lmc_backend *be, const float *init_params, lmc_err *err) {
    *out = NULL;
    lmc_status s = check_cfg(cfg, err);
    if (s) return s;
    if (comm->world > 1 && comm->device_buffers == be->host_memory)
        return lmc_err_set(err, LMC_ERR_ARG, "zero: the %s communicator works on %s memory but the %s "
                           "backend's is %s", comm->name, comm->device_buffers ? "device" : "host", be->name,
                           be->host_memory ? "host" : "device");
    struct lmc_zero *z = calloc(1, sizeof *z);
    if (!z) return lmc_err_set(err, LMC_ERR_OOM, "zero: out of memory");
    z->comm = comm;
    z->be = be;
    z->stage = cfg->stage;
    z->W = comm->world;
    z->r = comm->rank;
    z->n_tensors = cfg->n_tensors;
    z->pending_unit = -1;
    z->layout_hash = layout_hash(cfg);
    z->tensors = calloc((size_t)cfg->n_tensors, sizeof *z->tensors);
    z->n_units = cfg->tensors[cfg->n_tensors - 1].unit + 1;
    z->units = calloc((size_t)z->n_units, sizeof *z->units);
    if (!z->tensors || !z->units) {
        s = lmc_err_set(err, LMC_ERR_OOM, "zero: out of memory");
        goto fail;
    }
    for (int i = 0; i < cfg->n_tensors; i++) {
        z->tensors[i] = cfg->tensors[i];
        z->tensors[i].name = strdup(cfg->tensors[i].name ? cfg->tensors[i].name : "?");
        if (!z->tensors[i].name) {
            s = lmc_err_set(err, LMC_ERR_OOM, "zero: out of memory");
            goto fail;
        }
        struct lmc_zero_unit *U = &z->units[cfg->tensors[i].unit];
        if (U->n == 0) U->off = cfg->tensors[i].offset, U->t0 = i;
        U->n += cfg->tensors[i].numel;
        U->t1 = i + 1;
    }
    for (int u = 0; u < z->n_units; u++) {
        struct lmc_zero_unit *U = &z->units[u];
        U->s = lmc_zero_part_len(U->n, z->W);
        U->pa_off = z->PA;
        U->sh_off = z->S;
        z->PA += U->s * z->W;
        z->S += U->s;
    }
    z->numel = z->units[z->n_units - 1].off + z->units[z->n_units - 1].n;
    size_t fb = (size_t)z->PA * sizeof(float), sb = (size_t)z->S * sizeof(float);
    z->dscratch = balloc(z, 64 * sizeof(double));
    bool ok = z->dscratch != NULL;
    if (z->stage <= 2) ok = ok && (z->p_full = balloc(z, fb));
    if (z->stage <= 1) ok = ok && (z->g_full = balloc(z, fb));
    if (z->stage == 3) ok = ok && (z->p_sh = balloc(z, sb));
    if (z->stage >= 2) ok = ok && (z->g_sh = balloc(z, sb));
    size_t mb = z->stage == 0 ? fb : sb;
    if (!cfg->no_moments) ok = ok && (z->m = balloc(z, mb)) && (z->v = balloc(z, mb));
    z->gathered = calloc((size_t)z->n_units, sizeof *z->gathered);
    z->gather_work = calloc((size_t)z->n_units, sizeof *z->gather_work);
    z->ugrad = calloc((size_t)z->n_units, sizeof *z->ugrad);
    z->red_work = calloc((size_t)z->n_units, sizeof *z->red_work);
    ok = ok && pool_init(&z->ppool, z->n_units) == LMC_OK && pool_init(&z->gpool, z->n_units) == LMC_OK;
    for (int u = 0; u < z->n_units; u++)
        z->slot_bytes = LMC_MAX(z->slot_bytes, (size_t)z->units[u].s * (size_t)z->W * sizeof(float));
    if (!ok || !z->gathered || !z->gather_work || !z->ugrad || !z->red_work) {
        s = lmc_err_set(err, LMC_ERR_OOM, "zero: cannot allocate %.1f MiB of training state on %s",
                        (double)(z->stage == 0 ? 4 * fb : 2 * fb + 3 * sb) / 1048576.0, be->name);
        goto fail;
    }
    void *ctx = be->ctx;
    if ((s = check_same_everywhere(z, err))) goto fail;
    /* the parameters first, unit by unit, from the caller's unpadded arena
     * into this layout (backend memory to backend memory through a host
     * bounce of one unit); cfg->released may drop each unit's initial copy
     * as it goes, so set-up never holds it beside the whole state. The
     * other buffers are zeroed (touched) after. */
    for (int u = 0; u < z->n_units; u++) {
        const struct lmc_zero_unit *U = &z->units[u];
        if (cfg->fill) { /* only what this rank keeps, straight from the source */
            if ((s = fill_unit(z, cfg, u, err))) goto fail;
            continue;
        }
        float *host = cfg->init_on_host ? (float *)(init_params + U->off) : malloc((size_t)U->n * sizeof(float));
        if (!host) {
            s = lmc_err_set(err, LMC_ERR_OOM, "zero: out of memory");
            goto fail;
        }
        if (!cfg->init_on_host) be->download(ctx, host, init_params + U->off, (size_t)U->n * sizeof(float));
        if (z->stage <= 2) {
            be->zero(ctx, z->p_full + U->pa_off, unit_bytes(z, u));
            be->upload(ctx, z->p_full + U->pa_off, host, (size_t)U->n * sizeof(float));
        } else {
            int64_t k = lmc_zero_real(U, z->r);
            be->zero(ctx, z->p_sh + U->sh_off, (size_t)U->s * sizeof(float));
            if (k > 0) be->upload(ctx, z->p_sh + U->sh_off, host + (int64_t)z->r * U->s, (size_t)k * sizeof(float));
        }
        if (!cfg->init_on_host) free(host);
        if (cfg->released) {
            be->sync(ctx); /* the copy is done before the caller drops its source */
            cfg->released(cfg->user, U->off, U->n);
        }
    }
    if (z->g_full) be->zero(ctx, z->g_full, fb);
    if (z->g_sh) be->zero(ctx, z->g_sh, sb);
    if (z->m) be->zero(ctx, z->m, mb);
    if (z->v) be->zero(ctx, z->v, mb);
    *out = z;
    return LMC_OK;
fail:
    lmc_zero_free(z);
    return s;
}

void lmc_zero_free(struct lmc_zero *z) {
    if (!z) return;
    for (int u = 0; z->units && u < z->n_units; u++) {
        if (z->gather_work && z->gather_work[u]) z->comm->wait(z->comm, z->gather_work[u], NULL);
        if (z->red_work && z->red_work[u]) z->comm->wait(z->comm, z->red_work[u], NULL);
    }
    pool_free(z, &z->ppool);
    pool_free(z, &z->gpool);
    size_t fb = (size_t)z->PA * sizeof(float), sb = (size_t)z->S * sizeof(float);
    bfree(z, z->p_full, fb);
    bfree(z, z->g_full, fb);
    bfree(z, z->p_sh, sb);
    bfree(z, z->g_sh, sb);
    bfree(z, z->m, z->stage == 0 ? fb : sb);
    bfree(z, z->v, z->stage == 0 ? fb : sb);
    bfree(z, z->dscratch, 64 * sizeof(double));
    for (int i = 0; z->tensors && i < z->n_tensors; i++) free((void *)z->tensors[i].name);
    free(z->tensors);
    free(z->units);
    free(z->gathered);
    free(z->gather_work);
    free(z->ugrad);
    free(z->red_work);
    free(z);
}

int lmc_zero_n_units(const struct lmc_zero *z) { return z->n_units; }

void lmc_zero_unit_range(const struct lmc_zero *z, int u, int64_t *offset, int64_t *numel) {
    LMC_ASSERT(u >= 0 && u < z->n_units);
    *offset = z->units[u].off;
    *numel = z->units[u].n;
}

/* Device communicators run on their own stream: the backend's queued work
 * on a buffer must be done before a collective reads it (and before a
 * released buffer is reused). The backend's stream is not visible here, so
 * this waits; host communicators need nothing. */
static void dev_sync(struct lmc_zero *z) {
    if (z->comm->device_buffers && z->be->sync) z->be->sync(z->be->ctx);
}

static size_t unit_bytes(const struct lmc_zero *z, int u) {
    return (size_t)z->units[u].s * (size_t)z->W * sizeof(float);
}

lmc_status lmc_zero_unit_prefetch(struct lmc_zero *z, int u, lmc_err *err) {
    if (u < 0 || u >= z->n_units) return LMC_OK; /* "the next unit" past the end */
    if (z->stage != 3 || z->W == 1 || z->gathered[u]) return LMC_OK;
    const struct lmc_zero_unit *U = &z->units[u];
    z->gathered[u] = pool_get(z, &z->ppool);
    if (!z->gathered[u]) return lmc_err_set(err, LMC_ERR_OOM, "zero: cannot allocate unit %d's parameters", u);
    return z->comm->iall_gather(z->comm, z->p_sh + U->sh_off, z->gathered[u], U->s, LMC_DTYPE_F32,
                                &z->gather_work[u], err);
}

lmc_status lmc_zero_unit_params(struct lmc_zero *z, int u, float **p, lmc_err *err) {
    LMC_ASSERT(u >= 0 && u < z->n_units);
    const struct lmc_zero_unit *U = &z->units[u];
    *p = NULL;
    if (z->stage <= 2) {
        *p = z->p_full + U->pa_off;
        return LMC_OK;
    }
    if (z->W == 1) {
        *p = z->p_sh + U->sh_off;
        return LMC_OK;
    }
    if (z->gathered[u] && !z->gather_work[u]) { /* gathered and waited for already (another part of it) */
        *p = z->gathered[u];
        return LMC_OK;
    }
    lmc_status s = lmc_zero_unit_prefetch(z, u, err);
    if (s) return s;
    struct lmc_comm_work *w = z->gather_work[u];
    z->gather_work[u] = NULL;
    if ((s = z->comm->wait(z->comm, w, err))) return s;
    *p = z->gathered[u];
    return LMC_OK;
}

void lmc_zero_unit_release(struct lmc_zero *z, int u) {
    LMC_ASSERT(u >= 0 && u < z->n_units);
    if (z->stage != 3 || z->W == 1 || !z->gathered[u]) return;
    LMC_ASSERT(z->gather_work[u] == NULL); /* released after use, so waited */
    dev_sync(z);
    pool_put(&z->ppool, z->gathered[u]);
    z->gathered[u] = NULL;
}

lmc_status lmc_zero_unit_grads(struct lmc_zero *z, int u, float **g, lmc_err *err) {
    LMC_ASSERT(u >= 0 && u < z->n_units);
    const struct lmc_zero_unit *U = &z->units[u];
    *g = NULL;
    if (z->stage <= 1) {
        *g = z->g_full + U->pa_off;
        return LMC_OK;
    }
    if (z->W == 1) {
        *g = z->g_sh + U->sh_off;
        return LMC_OK;
    }
    if (!z->ugrad[u]) {
        LMC_ASSERT(z->red_work[u] == NULL);
        if (!(z->ugrad[u] = pool_get(z, &z->gpool)))
            return lmc_err_set(err, LMC_ERR_OOM, "zero: cannot allocate unit %d's gradients", u);
        z->be->zero(z->be->ctx, z->ugrad[u], unit_bytes(z, u));
    }
    *g = z->ugrad[u];
    return LMC_OK;
}

/* Stage 2/3: waits for unit u's reduce-scatter and frees its full gradient. */
static lmc_status finish_unit_reduce(struct lmc_zero *z, int u, lmc_err *err) {
    lmc_status s = LMC_OK;
    if (z->red_work[u]) {
        struct lmc_comm_work *w = z->red_work[u];
        z->red_work[u] = NULL;
        s = z->comm->wait(z->comm, w, err);
    }
    if (z->stage >= 2 && z->ugrad[u] && z->pending_unit == u) {
        pool_put(&z->gpool, z->ugrad[u]);
        z->ugrad[u] = NULL;
        z->pending_unit = -1;
    }
    return s;
}

lmc_status lmc_zero_unit_grads_done(struct lmc_zero *z, int u, lmc_err *err) {
    LMC_ASSERT(u >= 0 && u < z->n_units);
    if (z->W == 1) return LMC_OK;
    const struct lmc_zero_unit *U = &z->units[u];
    struct lmc_comm *c = z->comm;
    if (z->red_work[u]) return lmc_err_set(err, LMC_ERR_ARG, "zero: unit %d's gradients were already done this step", u);
    dev_sync(z);
    switch (z->stage) {
    case 0:
        return c->iall_reduce(c, z->g_full + U->pa_off, U->n, LMC_DTYPE_F32, LMC_REDUCE_SUM, &z->red_work[u], err);
    case 1: /* in place: this rank's part of the buffer receives the sum */
        return c->ireduce_scatter(c, z->g_full + U->pa_off, z->g_full + U->pa_off + (int64_t)z->r * U->s, U->s,
                                  LMC_DTYPE_F32, LMC_REDUCE_SUM, &z->red_work[u], err);
    default: {
        if (!z->ugrad[u]) return lmc_err_set(err, LMC_ERR_ARG, "zero: unit %d's gradients done without "
                                             "lmc_zero_unit_grads", u);
        /* one reduce-scatter in flight while the next unit's backward runs */
        if (z->pending_unit >= 0) {
            lmc_status s = finish_unit_reduce(z, z->pending_unit, err);
            if (s) return s;
        }
        z->pending_unit = u;
        return c->ireduce_scatter(c, z->ugrad[u], z->g_sh + U->sh_off, U->s, LMC_DTYPE_F32, LMC_REDUCE_SUM,
                                  &z->red_work[u], err);
    }
    }
}

lmc_status lmc_zero_sum_f64(struct lmc_zero *z, double *vals, int n, lmc_err *err) {
    if (z->W == 1 || n == 0) return LMC_OK;
    if (n > 64) return lmc_err_set(err, LMC_ERR_ARG, "zero: at most 64 values per sum");
    if (!z->comm->device_buffers) return z->comm->all_reduce(z->comm, vals, n, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    z->be->upload(z->be->ctx, z->dscratch, vals, (size_t)n * sizeof(double));
    lmc_status s = z->comm->all_reduce(z->comm, z->dscratch, n, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    if (!s) z->be->download(z->be->ctx, vals, z->dscratch, (size_t)n * sizeof(double));
    return s;
}

/* Waits for every unit's reduction (each is waited on even after a failure). */
static lmc_status finish_all(struct lmc_zero *z, lmc_err *err) {
    lmc_status s = LMC_OK;
    for (int u = 0; u < z->n_units; u++) {
        lmc_err e;
        lmc_status su = finish_unit_reduce(z, u, &e);
        if (su && !s) {
            s = su;
            if (err) *err = e;
        }
    }
    return s;
}

lmc_status lmc_zero_wait(struct lmc_zero *z, lmc_err *err) { return finish_all(z, err); }

lmc_status lmc_zero_grad_norm(struct lmc_zero *z, double *norm, lmc_err *err) {
    lmc_status s = finish_all(z, err);
    if (s) return s;
    for (int u = 0; u < z->n_units; u++)
        if (z->stage >= 2 && z->W > 1 && z->ugrad[u])
            return lmc_err_set(err, LMC_ERR_ARG, "zero: unit %d's gradients were never marked done", u);
    /* partial sums of squares by shard, added in rank order */
    double total = 0;
    int q0 = z->stage == 0 ? 0 : z->r, q1 = z->stage == 0 ? z->W : z->r + 1;
    for (int q = q0; q < q1; q++) {
        double part = 0;
        for (int u = 0; u < z->n_units; u++) {
            int64_t k = lmc_zero_real(&z->units[u], q);
            if (k > 0) part += z->be->sumsq(z->be->ctx, part_g(z, u, q), k);
        }
        total = q == q0 ? part : total + part;
    }
    if (z->stage > 0 && (s = lmc_zero_sum_f64(z, &total, 1, err))) return s;
    *norm = sqrt(total);
    return LMC_OK;
}

lmc_status lmc_zero_grad_sumsq_weighted(struct lmc_zero *z, const double *w, double *sum, lmc_err *err) {
    lmc_status s = finish_all(z, err);
    if (s) return s;
    for (int u = 0; u < z->n_units; u++)
        if (z->stage >= 2 && z->W > 1 && z->ugrad[u])
            return lmc_err_set(err, LMC_ERR_ARG, "zero: unit %d's gradients were never marked done", u);
    double total = 0;
    int q0 = z->stage == 0 ? 0 : z->r, q1 = z->stage == 0 ? z->W : z->r + 1;
    for (int q = q0; q < q1; q++) { /* by shard, each tensor's piece weighted, added in rank order */
        double part = 0;
        for (int u = 0; u < z->n_units; u++) {
            const struct lmc_zero_unit *U = &z->units[u];
            int64_t lo = (int64_t)q * U->s, hi = lo + lmc_zero_real(U, q);
            const float *g = part_g(z, u, q);
            for (int t = U->t0; t < U->t1; t++) {
                int64_t a = z->tensors[t].offset - U->off, b = a + z->tensors[t].numel;
                int64_t x0 = LMC_MAX(a, lo), x1 = LMC_MIN(b, hi);
                if (x0 < x1 && w[t] != 0) part += w[t] * z->be->sumsq(z->be->ctx, g + (x0 - lo), x1 - x0);
            }
        }
        total = q == q0 ? part : total + part;
    }
    if (z->stage > 0 && (s = lmc_zero_sum_f64(z, &total, 1, err))) return s;
    *sum = total;
    return LMC_OK;
}

lmc_status lmc_zero_apply(struct lmc_zero *z, const struct lmc_adamw_step *decay,
                          const struct lmc_adamw_step *nodecay, lmc_err *err) {
    struct lmc_backend *be = z->be;
    if (!z->m) return lmc_err_set(err, LMC_ERR_ARG, "zero: no AdamW moments (set up with no_moments)");
    lmc_status s = finish_all(z, err);
    if (s) return s;
    int q0 = z->stage == 0 ? 0 : z->r, q1 = z->stage == 0 ? z->W : z->r + 1;
    for (int u = 0; u < z->n_units; u++) {
        const struct lmc_zero_unit *U = &z->units[u];
        for (int q = q0; q < q1; q++) {
            /* part q of unit u is [q*s, q*s + real) of the unit; cut it by tensor */
            int64_t lo = (int64_t)q * U->s, hi = lo + lmc_zero_real(U, q);
            float *p = part_p(z, u, q), *g = part_g(z, u, q), *m = part_m(z, z->m, u, q), *v = part_m(z, z->v, u, q);
            for (int t = U->t0; t < U->t1; t++) {
                int64_t a = z->tensors[t].offset - U->off, b = a + z->tensors[t].numel;
                int64_t x0 = LMC_MAX(a, lo), x1 = LMC_MIN(b, hi);
                if (x0 >= x1) continue;
                int64_t k = x0 - lo;
                be->adamw(be->ctx, p + k, g + k, m + k, v + k, x1 - x0, z->tensors[t].decay ? decay : nodecay);
            }
        }
    }
    if ((z->stage == 1 || z->stage == 2) && z->W > 1) {
        dev_sync(z); /* AdamW's updates before the gathers read them */
        for (int u = 0; u < z->n_units && !s; u++) {
            const struct lmc_zero_unit *U = &z->units[u];
            s = z->comm->iall_gather(z->comm, z->p_full + U->pa_off + (int64_t)z->r * U->s, z->p_full + U->pa_off,
                                     U->s, LMC_DTYPE_F32, &z->red_work[u], err);
        }
        for (int u = 0; u < z->n_units; u++) {
            lmc_err e;
            struct lmc_comm_work *w = z->red_work[u];
            z->red_work[u] = NULL;
            lmc_status su = z->comm->wait(z->comm, w, &e);
            if (su && !s) s = su, *err = e;
        }
    }
    if (z->g_full) be->zero(be->ctx, z->g_full, (size_t)z->PA * sizeof(float));
    if (z->g_sh) be->zero(be->ctx, z->g_sh, (size_t)z->S * sizeof(float));
    dev_sync(z); /* the next step's gathers read the updated shards */
    return s;
}

void lmc_zero_grads_clear(struct lmc_zero *z) {
    LMC_ASSERT(z->pending_unit < 0);
    if (z->g_full) z->be->zero(z->be->ctx, z->g_full, (size_t)z->PA * sizeof(float));
    if (z->g_sh) z->be->zero(z->be->ctx, z->g_sh, (size_t)z->S * sizeof(float));
}

lmc_status lmc_zero_params_to_host(struct lmc_zero *z, float *out, lmc_err *err) {
    struct lmc_backend *be = z->be;
    for (int u = 0; u < z->n_units; u++) {
        const struct lmc_zero_unit *U = &z->units[u];
        float *p;
        lmc_status s = lmc_zero_unit_params(z, u, &p, err);
        if (s) return s;
        be->download(be->ctx, out + U->off, p, (size_t)U->n * sizeof(float));
        lmc_zero_unit_release(z, u);
    }
    return LMC_OK;
}

lmc_status lmc_zero_moments_to_host(struct lmc_zero *z, float *m_out, float *v_out, lmc_err *err) {
    struct lmc_backend *be = z->be;
    if (!z->m) return lmc_err_set(err, LMC_ERR_ARG, "zero: no AdamW moments here (the caller's optimizer holds them)");
    float *buf = z->stage == 0 || z->W == 1 ? NULL : be->alloc(be->ctx, z->slot_bytes ? z->slot_bytes : 4);
    if (z->stage > 0 && z->W > 1 && !buf) return lmc_err_set(err, LMC_ERR_OOM, "zero: moments: out of memory");
    lmc_status s = LMC_OK;
    for (int u = 0; u < z->n_units && !s; u++) {
        const struct lmc_zero_unit *U = &z->units[u];
        for (int k = 0; k < 2 && !s; k++) {
            float *base = k ? z->v : z->m, *out = k ? v_out : m_out;
            const float *src = part_m(z, base, u, 0); /* stage 0 (and world 1): the unit whole from part 0 */
            if (buf) { /* every rank's part, in rank order */
                dev_sync(z);
                if ((s = z->comm->all_gather(z->comm, base + U->sh_off, buf, U->s, LMC_DTYPE_F32, err))) break;
                src = buf;
            }
            be->download(be->ctx, out + U->off, src, (size_t)U->n * sizeof(float));
        }
    }
    if (buf) be->free(be->ctx, buf);
    return s;
}

void lmc_zero_get_stats(const struct lmc_zero *z, struct lmc_zero_stats *st) {
    st->bytes_now = z->bytes_now;
    st->bytes_peak = z->bytes_peak;
    st->shard_numel = z->S;
}

static long vm_hwm_kib(void) {
    long hwm = -1;
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "VmHWM:", 6)) hwm = strtol(line + 6, NULL, 10);
    if (fp) fclose(fp);
    return hwm;
}

void lmc_zero_mark_setup(struct lmc_zero *z) {
    z->setup_hwm_kib = vm_hwm_kib();
    FILE *f = fopen("/proc/self/clear_refs", "w"); /* "5": VmHWM restarts at the current RSS (Linux >= 4.0) */
    bool ok = f && fputs("5", f) >= 0;
    if (f) ok = (fclose(f) == 0) && ok;
    if (!ok) z->setup_hwm_kib = -1;
}

void lmc_zero_log_memory(const struct lmc_zero *z) {
    struct lmc_zero_mem f;
    lmc_zero_mem_fp32(z->stage, z->W, z->numel, &f);
    if (!z->m) f.total -= f.optimizer; /* the caller's optimizer holds its own state */
    long hwm = vm_hwm_kib();
    const double M = 1048576.0;
    char setup[64] = "";
    if (z->setup_hwm_kib > 0) snprintf(setup, sizeof setup, " since set-up (set-up %.1f MiB)", (double)z->setup_hwm_kib / 1024.0);
    lmc_dist_log(z->comm, 1, "zero-%d on %d rank%s: state %.1f MiB (peak %.1f; formula %.1f + %.1f of unit buffers), "
                 "peak RSS %.1f MiB%s", z->stage, z->W, z->W == 1 ? "" : "s", (double)z->bytes_now / M,
                 (double)z->bytes_peak / M, f.total / M,
                 (double)(z->ppool.n + z->gpool.n) * (double)z->slot_bytes / M, hwm >= 0 ? (double)hwm / 1024.0 : -1.0,
                 setup);
}

void lmc_zero_mem_mixed(int stage, int world, int64_t psi, struct lmc_zero_mem *m) {
    double P = (double)psi, N = world > 0 ? world : 1;
    m->weights = stage >= 3 ? 2 * P / N : 2 * P;
    m->grads = stage >= 2 ? 2 * P / N : 2 * P;
    m->optimizer = stage >= 1 ? 12 * P / N : 12 * P;
    m->total = m->weights + m->grads + m->optimizer;
}

void lmc_zero_mem_fp32(int stage, int world, int64_t psi, struct lmc_zero_mem *m) {
    double P = (double)psi, N = world > 0 ? world : 1;
    m->weights = stage >= 3 ? 4 * P / N : 4 * P;
    /* stage 1 reduces its shard inside the full gradient buffer */
    m->grads = stage >= 2 ? 4 * P / N : 4 * P;
    m->optimizer = stage >= 1 ? 8 * P / N : 8 * P;
    m->total = m->weights + m->grads + m->optimizer;
}
