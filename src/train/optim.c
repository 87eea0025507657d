/* optim.c — the optimizer interface (optim.h): settings and their flags,
 * grouping by role, state sizing and the one arena, the step dispatch
 * (AdamW and 8-bit AdamW and Muon through the backend table; GaLore and
 * APOLLO in optim_lowrank.c), state as named tensors, save and load. */
#include "train/optim_internal.h"
#include "core/core.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "ops/optim_ops.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 8-bit AdamW keeps tensors smaller than this on 32-bit AdamW
 * (bitsandbytes' min_8bit_size). */
#define Q8_MIN_NUMEL 4096

static const char *const kind_names[LMC_OPTIM_KIND_COUNT] = {
    "adamw", "adamw8bit", "muon", "galore", "apollo", "apollo-mini"};

const char *lmc_optim_kind_name(enum lmc_optim_kind k) {
    return (unsigned)k < LMC_OPTIM_KIND_COUNT ? kind_names[k] : "?";
}

const char *lmc_optim_group_name(enum lmc_optim_group g) {
    static const char *const n[] = {"adamw", "adamw8bit", "muon", "galore", "apollo"};
    return (unsigned)g < sizeof n / sizeof *n ? n[g] : "?";
}

lmc_status lmc_optim_kind_parse(const char *s, enum lmc_optim_kind *out, lmc_err *err) {
    for (int k = 0; k < LMC_OPTIM_KIND_COUNT; k++)
        if (s && !strcmp(s, kind_names[k])) {
            *out = (enum lmc_optim_kind)k;
            return LMC_OK;
        }
    return lmc_err_set(err, LMC_ERR_ARG,
                       "--optim: unknown optimizer '%s' (adamw, adamw8bit, muon, galore, apollo, apollo-mini)",
                       s ? s : "");
}

static void kind_defaults(struct lmc_optim_cfg *c, enum lmc_optim_kind kind) {
    c->kind = kind;
    c->muon_lr = 0.02;
    c->muon_momentum = 0.95;
    c->muon_weight_decay = 0.1;
    c->muon_ns_steps = 5;
    c->muon_nesterov = true;
    c->muon_scale = LMC_MUON_SCALE_SHAPE;
    c->muon_ns_bf16 = true;
    c->muon_ns_auto = true;
    c->muon_ns_gram = true; /* the CPU's fp32 rectangular matrices (0.64x the flops at 124M); --muon-ns-gram 0: plain */
    c->galore_rank = 128;
    c->galore_update_gap = 200;
    c->galore_scale = 0.25;
    c->galore_refresh = LMC_GALORE_REFRESH_AUTO;
    bool mini = kind == LMC_OPTIM_APOLLO_MINI;
    c->apollo_rank = mini ? 1 : 256;
    c->apollo_update_gap = 200;
    c->apollo_scale = mini ? 128.0 : 1.0;
    c->apollo_scale_type = mini ? LMC_APOLLO_TENSOR : LMC_APOLLO_CHANNEL;
    c->apollo_seed = 0;
    c->q8_block = 256;
    c->q8_embed_8bit = false;
}

void lmc_optim_cfg_default(struct lmc_optim_cfg *c, enum lmc_optim_kind kind) {
    memset(c, 0, sizeof *c);
    lmc_adamw_cfg_default(&c->adamw);
    kind_defaults(c, kind);
}

lmc_status lmc_optim_cfg_check(const struct lmc_optim_cfg *c, lmc_err *err) {
    if ((unsigned)c->kind >= LMC_OPTIM_KIND_COUNT)
        return lmc_err_set(err, LMC_ERR_ARG, "optimizer: unknown kind %d", (int)c->kind);
    if (!(c->muon_lr >= 0) || !(c->muon_momentum >= 0 && c->muon_momentum < 1) ||
        !(c->muon_weight_decay >= 0) || c->muon_ns_steps < 1 || c->muon_ns_steps > 100)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "muon: need lr >= 0, 0 <= momentum < 1, weight decay >= 0, 1..100 ns steps");
    if (c->galore_rank < 1 || c->galore_update_gap < 1 || !(c->galore_scale > 0))
        return lmc_err_set(err, LMC_ERR_ARG, "galore: need rank >= 1, update gap >= 1, scale > 0");
    if (c->apollo_rank < 1 || c->apollo_update_gap < 1 || !(c->apollo_scale > 0))
        return lmc_err_set(err, LMC_ERR_ARG, "apollo: need rank >= 1, update gap >= 1, scale > 0");
    if (c->q8_block < LMC_Q8_BLOCK_MIN || c->q8_block > LMC_Q8_BLOCK_MAX || c->q8_block % 32)
        return lmc_err_set(err, LMC_ERR_ARG, "adamw8bit: block must be a multiple of 32 in %d..%d, got %d",
                           LMC_Q8_BLOCK_MIN, LMC_Q8_BLOCK_MAX, c->q8_block);
    return LMC_OK;
}

/* ---- flags */
static lmc_status num_arg(const char *flag, const char *v, double lo, double hi, double *out,
                          lmc_err *err) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || !*v || *end || errno || !(x >= lo && x <= hi))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: expected a number in [%g, %g], got '%s'", flag, lo, hi,
                           v ? v : "(missing)");
    *out = x;
    return LMC_OK;
}

static lmc_status int_arg(const char *flag, const char *v, long long lo, long long hi,
                          long long *out, lmc_err *err) {
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: expected an integer in [%lld, %lld], got '%s'", flag, lo,
                           hi, v ? v : "(missing)");
    *out = x;
    return LMC_OK;
}

lmc_status lmc_optim_parse_arg(struct lmc_optim_cfg *c, int argc, char **argv, int *i, bool *used,
                               lmc_err *err) {
    *used = false;
    const char *f = argv[*i];
    enum { D, I, KIND, SCALE, STYPE, GREF, NSD } t;
    void *dst = NULL;
    double lo = 0, hi = 1e30;
    static const char *const dflags[] = {"--muon-lr", "--muon-momentum", "--muon-weight-decay",
                                         "--galore-scale", "--apollo-scale"};
    static const char *const iflags[] = {"--muon-ns-steps", "--muon-nesterov", "--galore-rank",
                                         "--galore-update-gap", "--apollo-rank", "--apollo-update-gap",
                                         "--apollo-seed", "--adamw8bit-block", "--muon-ns-bf16",
                                         "--adamw8bit-embed-8bit", "--muon-ns-gram"};
    double *dd[] = {&c->muon_lr, &c->muon_momentum, &c->muon_weight_decay, &c->galore_scale,
                    &c->apollo_scale};
    int k = 0;
    if (!strcmp(f, "--optim")) t = KIND;
    else if (!strcmp(f, "--muon-scale")) t = SCALE;
    else if (!strcmp(f, "--apollo-scale-type")) t = STYPE;
    else if (!strcmp(f, "--galore-refresh")) t = GREF;
    else if (!strcmp(f, "--muon-ns-dtype")) t = NSD;
    else {
        for (k = 0; k < 5 && strcmp(f, dflags[k]); k++) {}
        if (k < 5) {
            t = D, dst = dd[k];
            if (k == 1) hi = 0.999999;
        } else {
            for (k = 0; k < 11 && strcmp(f, iflags[k]); k++) {}
            if (k == 11) return LMC_OK; /* not ours */
            t = I;
        }
    }
    *used = true;
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    lmc_status s = LMC_OK;
    if (t == KIND) {
        enum lmc_optim_kind kind;
        if ((s = lmc_optim_kind_parse(v, &kind, err))) return s;
        kind_defaults(c, kind);
    } else if (t == GREF) {
        static const char *const gr[] = {"auto", "exact", "subspace"};
        int which = -1;
        for (int q = 0; q < 3 && v; q++)
            if (!strcmp(v, gr[q])) which = q;
        if (which < 0)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: expected auto, exact or subspace, got '%s'", f, v ? v : "(missing)");
        c->galore_refresh = (enum lmc_galore_refresh)which;
    } else if (t == NSD) { /* bf16 / f32: --muon-ns-bf16 1 / 0 */
        int which = !v ? -1 : !strcmp(v, "f32") ? 0 : !strcmp(v, "bf16") ? 1 : !strcmp(v, "auto") ? 2 : -1;
        if (which < 0)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: expected auto, bf16 or f32, got '%s'", f, v ? v : "(missing)");
        c->muon_ns_bf16 = which != 0;
        c->muon_ns_auto = which == 2;
    } else if (t == SCALE || t == STYPE) {
        const char *a = t == SCALE ? "shape" : "channel", *b = t == SCALE ? "moonlight" : "tensor";
        int which = v && !strcmp(v, a) ? 0 : v && !strcmp(v, b) ? 1 : -1;
        if (which < 0)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: expected %s or %s, got '%s'", f, a, b, v ? v : "(missing)");
        if (t == SCALE) c->muon_scale = (enum lmc_muon_scale)which;
        else c->apollo_scale_type = (enum lmc_apollo_scale)which;
    } else if (t == D) {
        if ((s = num_arg(f, v, lo, hi, (double *)dst, err))) return s;
    } else {
        const bool flag01 = k == 1 || k == 8 || k == 9 || k == 10;
        long long x = 0, ilo = flag01 || k == 6 ? 0 : 1, ihi = flag01 ? 1 : k == 6 ? INT64_MAX : 1 << 30;
        if ((s = int_arg(f, v, ilo, ihi, &x, err))) return s;
        switch (k) {
        case 0: c->muon_ns_steps = (int)x; break;
        case 1: c->muon_nesterov = x != 0; break;
        case 2: c->galore_rank = (int)x; break;
        case 3: c->galore_update_gap = (int)x; break;
        case 4: c->apollo_rank = (int)x; break;
        case 5: c->apollo_update_gap = (int)x; break;
        case 6: c->apollo_seed = (uint64_t)x; break;
        case 8: c->muon_ns_bf16 = x != 0, c->muon_ns_auto = false; break;
        case 9: c->q8_embed_8bit = x != 0; break;
        case 10: c->muon_ns_gram = x != 0; break;
        default: c->q8_block = (int)x; break;
        }
    }
    *i += 2;
    return LMC_OK;
}

enum lmc_param_role lmc_optim_role_guess(const char *name, int ndim) {
    if (ndim < 2) {
        if (strstr(name, "norm") || strstr(name, "ln_")) return LMC_PROLE_NORM;
        size_t l = strlen(name);
        return l >= 5 && !strcmp(name + l - 5, ".bias") ? LMC_PROLE_BIAS : LMC_PROLE_OTHER;
    }
    if (strstr(name, "embed") || strstr(name, "wte.") || strstr(name, "wpe.")) return LMC_PROLE_EMBEDDING;
    if (strstr(name, "lm_head")) return LMC_PROLE_HEAD;
    return ndim == 2 ? LMC_PROLE_MATRIX : LMC_PROLE_OTHER;
}

/* ---- grouping and sizing */
static enum lmc_optim_group group_for(const struct lmc_optim_cfg *c, const struct lmc_optim_param *p) {
    bool matrix = p->role == LMC_PROLE_MATRIX && p->rows > 1 && p->cols > 1;
    switch (c->kind) {
    case LMC_OPTIM_ADAMW8BIT:
        if (p->role == LMC_PROLE_EMBEDDING && !c->q8_embed_8bit) return LMC_GROUP_ADAMW;
        return p->rows * p->cols >= Q8_MIN_NUMEL ? LMC_GROUP_ADAMW8BIT : LMC_GROUP_ADAMW;
    case LMC_OPTIM_MUON: return matrix ? LMC_GROUP_MUON : LMC_GROUP_ADAMW;
    case LMC_OPTIM_GALORE: return matrix ? LMC_GROUP_GALORE : LMC_GROUP_ADAMW;
    case LMC_OPTIM_APOLLO:
    case LMC_OPTIM_APOLLO_MINI: return matrix ? LMC_GROUP_APOLLO : LMC_GROUP_ADAMW;
    default: return LMC_GROUP_ADAMW;
    }
}

/* One state tensor of a slot: its field name, dtype, count and the slot
 * member that points at it. */
struct field {
    const char *name;
    enum lmc_dtype dtype;
    int64_t numel;
    void **ptr;
};

static int slot_fields(struct lmc_optim_slot *s, struct field f[4]) {
    const int64_t n = s->rows * s->cols, nl = s->low_rows * s->low_cols;
    switch (s->group) {
    case LMC_GROUP_ADAMW:
        f[0] = (struct field){"adamw.m", LMC_DTYPE_F32, n, (void **)&s->m};
        f[1] = (struct field){"adamw.v", LMC_DTYPE_F32, n, (void **)&s->v};
        return 2;
    case LMC_GROUP_ADAMW8BIT:
        f[0] = (struct field){"adamw8bit.qm", LMC_DTYPE_U8, n, (void **)&s->qm};
        f[1] = (struct field){"adamw8bit.qv", LMC_DTYPE_U8, n, (void **)&s->qv};
        f[2] = (struct field){"adamw8bit.absmax_m", LMC_DTYPE_F32, s->nblocks, (void **)&s->am};
        f[3] = (struct field){"adamw8bit.absmax_v", LMC_DTYPE_F32, s->nblocks, (void **)&s->av};
        return 4;
    case LMC_GROUP_MUON:
        f[0] = (struct field){"muon.momentum", LMC_DTYPE_F32, n, (void **)&s->buf};
        return 1;
    case LMC_GROUP_GALORE:
    case LMC_GROUP_APOLLO: {
        int64_t np = s->rank * (s->right ? s->cols : s->rows);
        f[0] = (struct field){s->group == LMC_GROUP_GALORE ? "galore.m" : "apollo.m", LMC_DTYPE_F32, nl,
                              (void **)&s->m};
        f[1] = (struct field){s->group == LMC_GROUP_GALORE ? "galore.v" : "apollo.v", LMC_DTYPE_F32, nl,
                              (void **)&s->v};
        f[2] = (struct field){s->group == LMC_GROUP_GALORE ? "galore.proj" : "apollo.proj", LMC_DTYPE_F32,
                              np, (void **)&s->proj};
        if (s->group == LMC_GROUP_GALORE) return 3;
        f[3] = (struct field){"apollo.prev_norm", LMC_DTYPE_F32, 1, (void **)&s->prev_norm};
        return 4;
    }
    }
    return 0;
}

static size_t al256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Fills slots[0..n) (groups, shapes; no pointers) and the byte counts. */
static lmc_status plan(const struct lmc_optim_cfg *c, const struct lmc_optim_param *params, int n,
                       struct lmc_optim_slot *slots, size_t *state_bytes, size_t *arena_bytes,
                       int64_t *work_floats, lmc_err *err) {
    lmc_status st = lmc_optim_cfg_check(c, err);
    if (st) return st;
    if (n < 0 || (n > 0 && !params)) return lmc_err_set(err, LMC_ERR_ARG, "optimizer: no parameter list");
    size_t sb = 0, ab = 0;
    int64_t wf = 0;
    for (int i = 0; i < n; i++) {
        const struct lmc_optim_param *p = &params[i];
        const char *nm = p->name ? p->name : "(unnamed)";
        if (p->rows < 1 || p->cols < 1 || p->rows > INT32_MAX || p->cols > INT32_MAX ||
            p->rows * p->cols > ((int64_t)1 << 40))
            return lmc_err_set(err, LMC_ERR_ARG, "optimizer: parameter %s: bad shape (%lld, %lld)", nm,
                               (long long)p->rows, (long long)p->cols);
        if (!p->p || !p->g) return lmc_err_set(err, LMC_ERR_ARG, "optimizer: parameter %s: no data or gradient", nm);
        if (strlen(nm) > 100) return lmc_err_set(err, LMC_ERR_ARG, "optimizer: parameter name too long: %.40s...", nm);
        struct lmc_optim_slot s;
        memset(&s, 0, sizeof s);
        s.rows = p->rows, s.cols = p->cols, s.role = p->role, s.decay = p->decay, s.idx = i;
        s.group = group_for(c, p);
        if (s.group == LMC_GROUP_GALORE || s.group == LMC_GROUP_APOLLO) {
            int64_t r = s.group == LMC_GROUP_GALORE ? c->galore_rank : c->apollo_rank;
            s.rank = LMC_MIN(r, LMC_MIN(s.rows, s.cols));
            s.right = s.rows >= s.cols;
            s.low_rows = s.right ? s.rows : s.rank;
            s.low_cols = s.right ? s.rank : s.cols;
        }
        if (s.group == LMC_GROUP_ADAMW8BIT) s.nblocks = (s.rows * s.cols + c->q8_block - 1) / c->q8_block;
        if (s.group == LMC_GROUP_MUON) wf = LMC_MAX(wf, lmc_muon_work_floats(s.rows, s.cols));
        if (s.group == LMC_GROUP_GALORE || s.group == LMC_GROUP_APOLLO)
            wf = LMC_MAX(wf, lmc_lowrank_work_floats(s.rows, s.cols, s.rank));
        struct field f[4];
        int nf = slot_fields(&s, f);
        for (int k = 0; k < nf; k++) {
            size_t b = (size_t)f[k].numel * (size_t)lmc_dtype_size(f[k].dtype);
            sb += b;
            ab += al256(b);
        }
        if (slots) slots[i] = s;
    }
    if (c->kind == LMC_OPTIM_ADAMW8BIT) ab += 2 * al256(256 * sizeof(float));
    ab += al256((size_t)wf * sizeof(float));
    *state_bytes = sb;
    if (arena_bytes) *arena_bytes = ab;
    if (work_floats) *work_floats = wf;
    return LMC_OK;
}

lmc_status lmc_optim_state_bytes(const struct lmc_optim_cfg *c, const struct lmc_optim_param *params,
                                 int n, size_t *state_bytes, lmc_err *err) {
    return plan(c, params, n, NULL, state_bytes, NULL, NULL, err);
}

void lmc_optim_free(struct lmc_optim *o) {
    if (!o) return;
    if (o->slots)
        for (int i = 0; i < o->n_params; i++) free(o->slots[i].name);
    free(o->slots);
    if (o->be) lmc_optim_lowrank_free(o);
    if (o->arena && o->be) o->be->free(o->be->ctx, o->arena);
    free(o->host_scratch);
    memset(o, 0, sizeof *o);
}

/* Whether Newton–Schulz runs with bf16 operands on this backend (lmc_optim_cfg.muon_ns_auto). */
static bool muon_ns_bf16_on(const struct lmc_optim_cfg *c, const struct lmc_backend *be) {
    return c->muon_ns_bf16 && (!c->muon_ns_auto || !be->host_memory);
}

/* torch.optim.Muon: adjusted_lr = lr * ratio; p *= 1 - lr * wd; p -= adjusted_lr * O */
static void muon_step_make(const struct lmc_optim_cfg *c, const struct lmc_backend *be, const struct lmc_optim_slot *s,
                           double lr, float grad_scale, struct lmc_muon_step *ms) {
    double mlr = c->adamw.lr > 0 ? c->muon_lr * (lr / c->adamw.lr) : c->muon_lr;
    double ratio = c->muon_scale == LMC_MUON_SCALE_MOONLIGHT ? 0.2 * sqrt((double)LMC_MAX(s->rows, s->cols))
                                                             : sqrt(LMC_MAX(1.0, (double)s->rows / (double)s->cols));
    *ms = (struct lmc_muon_step){
        .momentum = (float)c->muon_momentum, .nesterov = c->muon_nesterov,
        .ns_steps = c->muon_ns_steps, .ns_a = 3.4445f, .ns_b = -4.7750f, .ns_c = 2.0315f,
        .ns_eps = 1e-7f, .decay_mul = (float)(1.0 - mlr * c->muon_weight_decay),
        .lr_adj = (float)(mlr * ratio), .grad_scale = grad_scale, .ns_bf16 = muon_ns_bf16_on(c, be),
        .ns_gram = c->muon_ns_gram};
}

/* Whether Muon's tensors go through the backend's batched entry. */
static bool muon_batched(const struct lmc_optim_cfg *c, const struct lmc_backend *be) {
    return c->kind == LMC_OPTIM_MUON && be->muon_batch && (muon_ns_bf16_on(c, be) || be->muon_batch_f32);
}

/* The next batch of Muon slots of one shape among those not yet done: their indices in idx (at most LMC_MUON_BATCH_MAX);
 * returns the count (0: none left). */
static int muon_next_batch(const struct lmc_optim_slot *slots, int n, const bool *done, int *idx) {
    int cnt = 0, first = -1;
    for (int i = 0; i < n && cnt < LMC_MUON_BATCH_MAX; i++) {
        if (done[i] || slots[i].group != LMC_GROUP_MUON) continue;
        if (first < 0) first = i;
        if (slots[i].rows == slots[first].rows && slots[i].cols == slots[first].cols) idx[cnt++] = i;
    }
    return cnt;
}

/* The fp32 batched entry (backend muon_batch_f32) takes any shapes: the next up to LMC_MUON_BATCH_MAX Muon slots not
 * yet done, the largest first (the pool hands tasks out in order: longest first balances the threads). */
static int muon_next_any(const struct lmc_optim_slot *slots, int n, const bool *done, int *idx) {
    int cnt = 0;
    while (cnt < LMC_MUON_BATCH_MAX) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (done[i] || slots[i].group != LMC_GROUP_MUON) continue;
            bool taken = false;
            for (int q = 0; q < cnt && !taken; q++) taken = idx[q] == i;
            if (!taken && (best < 0 || slots[i].rows * slots[i].cols > slots[best].rows * slots[best].cols)) best = i;
        }
        if (best < 0) break;
        idx[cnt++] = best;
    }
    return cnt;
}

/* Work floats for the batched Muon step (the largest batch). */
static int64_t muon_batch_work(const struct lmc_optim_slot *slots, int n) {
    bool *done = calloc((size_t)(n > 0 ? n : 1), sizeof *done);
    int idx[LMC_MUON_BATCH_MAX];
    int64_t wf = 0;
    LMC_ASSERT(done);
    int cnt;
    while ((cnt = muon_next_batch(slots, n, done, idx)) > 0) {
        const struct lmc_optim_slot *s = &slots[idx[0]];
        wf = LMC_MAX(wf, lmc_muon_batch_work_floats(cnt, s->rows, s->cols));
        for (int q = 0; q < cnt; q++) done[idx[q]] = true;
    }
    free(done);
    return wf;
}

lmc_status lmc_optim_init(struct lmc_optim *o, const struct lmc_optim_cfg *c,
                          const struct lmc_backend *be, const struct lmc_optim_param *params,
                          int n, lmc_err *err) {
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    o->be = be;
    const char *kn = lmc_optim_kind_name(c->kind);
    bool lowrank = c->kind == LMC_OPTIM_GALORE || c->kind == LMC_OPTIM_APOLLO || c->kind == LMC_OPTIM_APOLLO_MINI;
    if (!be->adamw || !be->zero || (c->kind == LMC_OPTIM_MUON && !be->muon) ||
        (c->kind == LMC_OPTIM_ADAMW8BIT && !be->adamw8bit) || (lowrank && !be->lowrank))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "optimizer %s: not available on the %s backend (no %s op)",
                           kn, be->name, lowrank ? "lowrank" : c->kind == LMC_OPTIM_MUON ? "muon" : "adamw8bit");
    o->slots = calloc((size_t)(n > 0 ? n : 1), sizeof *o->slots);
    if (!o->slots) return lmc_err_set(err, LMC_ERR_OOM, "optimizer: out of memory");
    o->n_params = n;
    int64_t wf = 0;
    lmc_status st = plan(c, params, n, o->slots, &o->state_bytes, &o->arena_bytes, &wf, err);
    if (st) {
        free(o->slots);
        o->slots = NULL, o->n_params = 0;
        return st;
    }
    if (muon_batched(c, be) && muon_ns_bf16_on(c, be)) { /* the bf16 batched step's work replaces the per-matrix
                                                         * one (the fp32 one works in the threads' scratch) */
        int64_t wb = muon_batch_work(o->slots, n);
        if (wb > wf) {
            o->arena_bytes += al256((size_t)wb * sizeof(float)) - al256((size_t)wf * sizeof(float));
            wf = wb;
        }
    }
    for (int i = 0; i < n; i++) {
        o->slots[i].p = params[i].p, o->slots[i].g = params[i].g;
        o->slots[i].name = strdup(params[i].name ? params[i].name : "(unnamed)");
        if (!o->slots[i].name) {
            lmc_optim_free(o);
            return lmc_err_set(err, LMC_ERR_OOM, "optimizer: out of memory");
        }
    }
    o->arena = o->arena_bytes ? be->alloc(be->ctx, o->arena_bytes) : NULL;
    if (o->arena_bytes && !o->arena) {
        size_t b = o->arena_bytes;
        lmc_optim_free(o);
        return lmc_err_set(err, LMC_ERR_OOM, "optimizer %s: cannot allocate %zu bytes of state on %s", kn, b,
                           be->name);
    }
    if (o->arena_bytes) be->zero(be->ctx, o->arena, o->arena_bytes);
    char *a = o->arena;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        struct field f[4];
        int nf = slot_fields(&o->slots[i], f);
        for (int k = 0; k < nf; k++) {
            *f[k].ptr = a + off;
            off += al256((size_t)f[k].numel * (size_t)lmc_dtype_size(f[k].dtype));
        }
        if (o->slots[i].prev_norm) {
            const float none = -1.0f;
            be->upload(be->ctx, o->slots[i].prev_norm, &none, sizeof none);
        }
    }
    if (c->kind == LMC_OPTIM_ADAMW8BIT) {
        float code[256];
        o->code_m = (float *)(a + off), off += al256(sizeof code);
        o->code_v = (float *)(a + off), off += al256(sizeof code);
        lmc_q8_dynamic_code(code, true);
        be->upload(be->ctx, o->code_m, code, sizeof code);
        lmc_q8_dynamic_code(code, false);
        be->upload(be->ctx, o->code_v, code, sizeof code);
    }
    if (wf) o->work = (float *)(a + off), off += al256((size_t)wf * sizeof(float));
    LMC_ASSERT(off == o->arena_bytes);
    /* host scratch of the low-rank groups (largest slot) */
    size_t hs = 0;
    for (int i = 0; i < n; i++) {
        int lw = 0;
        hs = LMC_MAX(hs, lmc_optim_lowrank_scratch(&o->slots[i], o->slots[i].group, &lw));
        o->svd_lwork = LMC_MAX(o->svd_lwork, lw);
    }
    if (hs) {
        o->host_scratch = malloc((hs + (size_t)o->svd_lwork) * sizeof(double));
        o->host_scratch_doubles = hs;
        if (!o->host_scratch) {
            lmc_optim_free(o);
            return lmc_err_set(err, LMC_ERR_OOM, "optimizer %s: out of host memory for scratch", kn);
        }
    }
    return LMC_OK;
}

void lmc_optim_step_one(struct lmc_optim *o, int i, double lr, int64_t step, float grad_scale) {
    LMC_ASSERT(i >= 0 && i < o->n_params);
    const struct lmc_backend *be = o->be;
    const struct lmc_optim_cfg *c = &o->cfg;
    struct lmc_optim_slot *s = &o->slots[i];
    const int64_t n = s->rows * s->cols;
    switch (s->group) {
    case LMC_GROUP_ADAMW:
    case LMC_GROUP_ADAMW8BIT: {
        struct lmc_adamw_step as;
        lmc_adamw_step_make(&c->adamw, step, lr, s->decay, grad_scale, &as);
        if (s->group == LMC_GROUP_ADAMW) be->adamw(be->ctx, s->p, s->g, s->m, s->v, n, &as);
        else
            be->adamw8bit(be->ctx, s->p, s->g, s->qm, s->qv, s->am, s->av, n, c->q8_block, o->code_m,
                          o->code_v, &as);
        break;
    }
    case LMC_GROUP_MUON: {
        struct lmc_muon_step ms;
        muon_step_make(c, be, s, lr, grad_scale, &ms);
        be->muon(be->ctx, s->p, s->g, s->buf, s->rows, s->cols, &ms, o->work);
        break;
    }
    case LMC_GROUP_GALORE:
    case LMC_GROUP_APOLLO: lmc_optim_lowrank_step(o, s, lr, step, grad_scale); break;
    }
}

void lmc_optim_step(struct lmc_optim *o, double lr, int64_t step, float grad_scale) {
    const bool batched = muon_batched(&o->cfg, o->be), any_shape = batched && !muon_ns_bf16_on(&o->cfg, o->be);
    lmc_optim_lowrank_refresh_due(o, step); /* GaLore's subspace refreshes, all matrices at once */
    for (int i = 0; i < o->n_params; i++)
        if (!batched || o->slots[i].group != LMC_GROUP_MUON) lmc_optim_step_one(o, i, lr, step, grad_scale);
    if (!batched) return;
    /* Muon's matrices, a shape at a time (fp32: any shapes, the largest first), up to LMC_MUON_BATCH_MAX per call */
    bool done_small[256], *done = o->n_params <= 256 ? done_small : calloc((size_t)o->n_params, 1);
    LMC_ASSERT(done);
    memset(done, 0, (size_t)o->n_params * sizeof *done);
    int idx[LMC_MUON_BATCH_MAX], cnt;
    struct lmc_muon_mat mats[LMC_MUON_BATCH_MAX];
    struct lmc_muon_step ms;
    while ((cnt = any_shape ? muon_next_any(o->slots, o->n_params, done, idx)
                            : muon_next_batch(o->slots, o->n_params, done, idx)) > 0) {
        for (int q = 0; q < cnt; q++) {
            const struct lmc_optim_slot *s = &o->slots[idx[q]];
            muon_step_make(&o->cfg, o->be, s, lr, grad_scale, &ms);
            mats[q] = (struct lmc_muon_mat){s->p, s->g, s->buf, s->rows, s->cols, ms.lr_adj};
            done[idx[q]] = true;
        }
        o->be->muon_batch(o->be->ctx, mats, cnt, &ms, o->work);
    }
    if (done != done_small) free(done);
}

void lmc_optim_set_grad(struct lmc_optim *o, int i, const float *g) {
    LMC_ASSERT(i >= 0 && i < o->n_params && g);
    o->slots[i].g = g;
}

enum lmc_optim_group lmc_optim_group_of(const struct lmc_optim *o, int i) {
    LMC_ASSERT(i >= 0 && i < o->n_params);
    return o->slots[i].group;
}

static void describe_slots(const struct lmc_optim_slot *slots, int n, size_t state_bytes, char *buf,
                           size_t cap) {
    size_t len = 0;
    int64_t total = 0;
    if (cap) buf[0] = 0;
    for (int i = 0; i < n; i++) total += slots[i].rows * slots[i].cols;
    for (int g = 0; g <= LMC_GROUP_APOLLO; g++) {
        int nt = 0;
        int64_t np = 0;
        for (int i = 0; i < n; i++)
            if ((int)slots[i].group == g) nt++, np += slots[i].rows * slots[i].cols;
        if (!nt || len >= cap) continue;
        int w = snprintf(buf + len, cap - len, "%s%s: %d tensors, %lld params", len ? "; " : "",
                         lmc_optim_group_name((enum lmc_optim_group)g), nt, (long long)np);
        if (w > 0) len += (size_t)w;
    }
    if (len < cap)
        snprintf(buf + len, cap - len, "%sstate %zu bytes (%.3f per parameter)", len ? "; " : "", state_bytes,
                 total ? (double)state_bytes / (double)total : 0.0);
}

void lmc_optim_describe(const struct lmc_optim *o, char *buf, size_t cap) {
    describe_slots(o->slots, o->n_params, o->state_bytes, buf, cap);
}

lmc_status lmc_optim_info(const struct lmc_optim_cfg *c, const struct lmc_optim_param *params, int n,
                          char *buf, size_t cap, size_t *state_bytes, lmc_err *err) {
    struct lmc_optim_slot *slots = calloc((size_t)(n > 0 ? n : 1), sizeof *slots);
    if (!slots) return lmc_err_set(err, LMC_ERR_OOM, "optimizer: out of memory");
    size_t sb = 0;
    lmc_status st = plan(c, params, n, slots, &sb, NULL, NULL, err);
    if (!st) {
        int w = snprintf(buf, cap, "optimizer %s: ", lmc_optim_kind_name(c->kind));
        size_t off = w > 0 && (size_t)w < cap ? (size_t)w : 0;
        describe_slots(slots, n, sb, buf + off, cap - off);
        if (state_bytes) *state_bytes = sb;
    }
    free(slots);
    return st;
}

/* ---- state as named tensors */
int lmc_optim_state_count(const struct lmc_optim *o) {
    int k = 0;
    for (int i = 0; i < o->n_params; i++) {
        struct field f[4];
        k += slot_fields(&o->slots[i], f);
    }
    return k;
}

void lmc_optim_state_get(const struct lmc_optim *o, int k, struct lmc_optim_state_tensor *t) {
    for (int i = 0; i < o->n_params; i++) {
        struct field f[4];
        int nf = slot_fields(&o->slots[i], f);
        if (k >= nf) {
            k -= nf;
            continue;
        }
        snprintf(t->name, sizeof t->name, "%s.%s", o->slots[i].name, f[k].name);
        t->dtype = f[k].dtype;
        t->numel = f[k].numel;
        t->data = *f[k].ptr;
        return;
    }
    LMC_ASSERT(!"state tensor index out of range");
}

lmc_status lmc_optim_save(const struct lmc_optim *o, const char *path, lmc_err *err) {
    int n = lmc_optim_state_count(o);
    struct lmc_optim_state_tensor *ts = calloc((size_t)(n > 0 ? n : 1), sizeof *ts);
    struct lmc_st_write_tensor *w = calloc((size_t)(n > 0 ? n : 1), sizeof *w);
    char *host = o->state_bytes ? malloc(o->state_bytes) : NULL;
    lmc_status st = LMC_OK;
    if (!ts || !w || (o->state_bytes && !host)) {
        st = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory saving optimizer state", path);
        goto out;
    }
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        lmc_optim_state_get(o, k, &ts[k]);
        size_t b = (size_t)ts[k].numel * (size_t)lmc_dtype_size(ts[k].dtype);
        o->be->download(o->be->ctx, host + off, ts[k].data, b);
        w[k] = (struct lmc_st_write_tensor){ts[k].name, ts[k].dtype, 1, {ts[k].numel}, host + off};
        off += b;
    }
    const char *meta[] = {"lmc.optimizer", lmc_optim_kind_name(o->cfg.kind)};
    st = lmc_st_write(path, w, n, meta, 1, err);
out:
    free(ts);
    free(w);
    free(host);
    return st;
}

lmc_status lmc_optim_load_st(struct lmc_optim *o, const struct lmc_st *st, const char *path, lmc_err *err) {
    const char *kind = lmc_st_meta_get(st, "lmc.optimizer");
    if (!kind || strcmp(kind, lmc_optim_kind_name(o->cfg.kind)))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: optimizer state of '%s', expected '%s'", path,
                           kind ? kind : "(none)", lmc_optim_kind_name(o->cfg.kind));
    int n = lmc_optim_state_count(o);
    if (st->n_tensors != n)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %lld optimizer state tensors, expected %d", path,
                           (long long)st->n_tensors, n);
    for (int k = 0; k < n; k++) { /* check everything before changing anything */
        struct lmc_optim_state_tensor t;
        lmc_optim_state_get(o, k, &t);
        const struct lmc_st_tensor *f = lmc_st_find(st, t.name);
        if (!f || f->dtype != t.dtype || f->numel != t.numel)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor %s: expected %s of %lld elements%s", path, t.name,
                               lmc_dtype_name(t.dtype), (long long)t.numel, f ? "" : " (missing)");
    }
    for (int k = 0; k < n; k++) {
        struct lmc_optim_state_tensor t;
        lmc_optim_state_get(o, k, &t);
        const struct lmc_st_tensor *f = lmc_st_find(st, t.name);
        o->be->upload(o->be->ctx, t.data, f->data, f->nbytes);
    }
    return LMC_OK;
}

lmc_status lmc_optim_load(struct lmc_optim *o, const char *path, lmc_err *err) {
    struct lmc_st st;
    lmc_status s = lmc_st_open_file(&st, path, err);
    if (s) return s;
    s = lmc_optim_load_st(o, &st, path, err);
    lmc_st_free(&st);
    return s;
}

/* ---- APOLLO's generator */
void lmc_optim_gaussian_fill(double *out, int64_t n, uint64_t seed, double mul) {
    uint64_t s = seed;
    const double two_pi = 6.283185307179586476925286766559;
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = (double)((lmc_rng_next(&s) >> 11) + 1) * (1.0 / 9007199254740992.0);
        double u2 = (double)(lmc_rng_next(&s) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1));
        out[i] = r * cos(two_pi * u2) * mul;
        if (i + 1 < n) out[i + 1] = r * sin(two_pi * u2) * mul;
    }
}

uint64_t lmc_optim_apollo_seed(uint64_t seed, int idx, int64_t refresh) {
    return seed + 0x9E3779B97F4A7C15ull * (uint64_t)(idx + 1) + 0xD1B54A32D192ED03ull * (uint64_t)refresh;
}
