/* trainer_tp.c — the trainer's tensor-parallel step, its consolidated
 * checkpoints and resume (see trainer_tp.h). The step mirrors
 * lmc_trainer_step: micro-batches (this DP rank's rows of the global batch,
 * or a batch source's draws), forward + backward through the shard (the
 * collectives run in lmc_linear), replicated KV-head gradients summed, the
 * gradient all-reduced over the DP ranks, then the global norm over the
 * TP group and AdamW per tensor on the shard. */
#include "train/trainer_step.h"
#include "train/trainer_tp.h"
#include "train/trainer_cp.h"
#include "train/trainer_internal.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/zero.h"
#include "ops/optim_ops.h"
#include "train/optim_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lmc_status lmc_trainer_tp_shard(struct lmc_tmodel *shard, struct lmc_trainer_tp **out,
                                const struct lmc_tmodel *full, struct lmc_comm *tp, bool vocab,
                                const struct lmc_backend *be, lmc_err *err) {
    *out = NULL;
    if (full->cfg.num_experts > 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel training: %s has mixture-of-experts layers, "
                           "which do not split yet", full->cfg.model_type);
    if (full->trainable_off)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel training: a frozen base (adapters) does not "
                           "split yet (use --full)");
    struct lmc_trainer_tp *t = calloc(1, sizeof *t);
    if (!t) return lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory");
    lmc_status s = lmc_tp_tmodel_shard_vocab(shard, &t->g, &t->heads, vocab ? &t->vocab : NULL, full, tp, be, err);
    if (s) {
        free(t);
        return s;
    }
    t->c = tp;
    t->full = full->cfg;
    lmc_dist_slice(full->cfg.intermediate_size, tp->rank, tp->world, &t->i0, &t->ni);
    *out = t;
    return LMC_OK;
}

void lmc_trainer_tp_free_state(struct lmc_trainer_tp *t) {
    if (t) free(t->zbuf);
    for (int k = 1; t && t->sp_be && k < 3; k++) /* (buf[0] is the activations' hf) */
        if (t->sp.buf[k]) t->sp_be->free(t->sp_be->ctx, t->sp.buf[k]);
    free(t);
}

void lmc_trainer_tp_free(struct lmc_trainer *tr) {
    lmc_trainer_tp_free_state(tr->tp);
    tr->tp = NULL;
}

/* ZeRO-1 under TP x DP: the chunk of the shard's arena this DP rank
 * updates, its moments (replacing the full ones) and the scratch. */
static lmc_status zero_init(struct lmc_trainer *tr, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    const struct lmc_backend *be = tr->be;
    int D = tr->comm->world;
    int64_t N = tr->tm.numel;
    t->zchunk = (N + D - 1) / D;
    t->z0 = LMC_MIN(N, (int64_t)tr->comm->rank * t->zchunk);
    t->zn = LMC_MIN(N - t->z0, t->zchunk);
    t->zbuf = malloc(sizeof(float) * (size_t)(t->zchunk * D));
    size_t bytes = sizeof(float) * (size_t)LMC_MAX(1, t->zn);
    float *m = be->alloc(be->ctx, bytes), *v = be->alloc(be->ctx, bytes);
    if (!t->zbuf || !m || !v) {
        if (m) be->free(be->ctx, m);
        if (v) be->free(be->ctx, v);
        return lmc_err_set(err, LMC_ERR_OOM, "--zero 1 --tp: out of memory");
    }
    be->zero(be->ctx, m, bytes);
    be->zero(be->ctx, v, bytes);
    if (tr->m) be->free(be->ctx, tr->m);
    if (tr->v) be->free(be->ctx, tr->v);
    tr->m = m, tr->v = v;
    return LMC_OK;
}

/* Every DP rank's moment chunks gathered into full (numel) arena-layout
 * copies (host, malloc'd; the caller frees): a collective of the DP group. */
static lmc_status zero_gather_moments(struct lmc_trainer *tr, float **m, float **v, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    int64_t N = tr->tm.numel, D = tr->comm->world;
    *m = malloc(sizeof(float) * (size_t)N);
    *v = malloc(sizeof(float) * (size_t)N);
    float *send = malloc(sizeof(float) * (size_t)t->zchunk);
    lmc_status s = *m && *v && send ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "--zero 1 --tp: out of memory");
    float *src[2] = {tr->m, tr->v}, *dst[2] = {*m, *v};
    for (int a = 0; !s && a < 2; a++) {
        memset(send, 0, sizeof(float) * (size_t)t->zchunk);
        memcpy(send, src[a], sizeof(float) * (size_t)t->zn);
        if (!(s = tr->comm->all_gather(tr->comm, send, t->zbuf, t->zchunk, LMC_DTYPE_F32, err)))
            memcpy(dst[a], t->zbuf, sizeof(float) * (size_t)N);
    }
    (void)D;
    free(send);
    return s;
}

static lmc_status full_extent(const struct lmc_trainer_tp *t, const char *name, int64_t *ext, lmc_err *err);

/* Whether the optimizer keeps the whole state of every split matrix on each
 * rank of the group (every kind but AdamW and Muon: 8-bit blocks, GaLore's
 * and APOLLO's projections are of the whole matrix), stepping the whole
 * matrix gathered from the shards. */
static bool whole_state(const struct lmc_trainer *tr) {
    return tr->have_opt && tr->opt.cfg.kind != LMC_OPTIM_MUON;
}

/* The optimizer made again over the shard's parameters with the whole
 * (rows, cols) of each split matrix, so its state is the one-process
 * optimizer's (the same tensors in the same order: APOLLO's seeds too). */
static lmc_status whole_optim(struct lmc_trainer *tr, lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    struct lmc_optim_cfg cfg = tr->opt.cfg;
    struct lmc_optim_param *pp = calloc((size_t)tr->tm.n_params + 1, sizeof *pp);
    if (!pp) return lmc_err_set(err, LMC_ERR_OOM, "optimizer parameter list: out of memory");
    int np = lmc_trainer_optim_params(&tr->tm, tr->o.decay == LMC_DECAY_ALL, pp);
    lmc_status s = LMC_OK;
    for (int i = 0; i < np && !s; i++) {
        int dim;
        int64_t a0, n, ext;
        lmc_tp_tensor_cut(pp[i].name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
        if (dim < 0) continue;
        if ((s = full_extent(t, pp[i].name, &ext, err))) break;
        if (dim == 0) pp[i].rows = ext;
        else pp[i].cols = ext;
    }
    if (!s) {
        lmc_optim_free(&tr->opt);
        tr->have_opt = false;
        if (!(s = lmc_optim_init(&tr->opt, &cfg, tr->be, pp, np, err))) tr->have_opt = true;
    }
    free(pp);
    return s;
}

lmc_status lmc_trainer_tp_attach(struct lmc_trainer *tr, struct lmc_trainer_tp *t, struct lmc_comm *dp,
                                 const char *desc, lmc_err *err) {
    tr->tp = t;
    for (int i = 0; tr->have_opt && i < tr->tm.n_params; i++)
        if (tr->tm.params[i].transposed)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp with --optim %s: %s is stored transposed",
                               lmc_optim_kind_name(tr->opt.cfg.kind), tr->tm.params[i].name);
    if (tr->tm.trainable_off && (tr->have_opt || t->zero || t->heads.vocab)) /* LoRA: lmc_tp_lora_reduce */
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp with adapters (LoRA) steps AdamW with --zero 0 and the "
                           "vocabulary replicated (no --optim, --zero or --tp-vocab yet)");
    if (strcmp(tr->be->name, "cpu") || t->c->device_buffers)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor-parallel training runs on the CPU backend only for now "
                           "(backend %s)", tr->be->name);
    lmc_status s = lmc_dist_check_same(t->c, "tensor-parallel training configuration", desc, err);
    if (!s && whole_state(tr)) s = whole_optim(tr, err);
    if (s || !dp || dp->world <= 1) return s;
    if ((s = lmc_dist_check_same(dp, "data-parallel training configuration", desc, err))) return s;
    tr->comm = dp;
    tr->zero_stage = 0;
    if (t->zero > 1 || (t->zero && tr->have_opt))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp runs with --zero 0 or (AdamW) --zero 1");
    if (t->zero && (s = zero_init(tr, err))) return s;
    if (tr->o.next_batch) return LMC_OK; /* a batch source: every rank draws the world's batches */
    /* the loader reads global micro-batches of dp x B rows */
    int64_t gB = (int64_t)dp->world * tr->o.B;
    tr->gbatch = malloc((size_t)(gB * (tr->o.T + 1)) * sizeof(int32_t));
    if (!tr->gbatch) return lmc_err_set(err, LMC_ERR_OOM, "global batch: out of memory");
    int64_t ep = tr->train.epoch, ix = tr->train.index;
    lmc_loader_free(&tr->train);
    memset(&tr->train, 0, sizeof tr->train);
    if ((s = lmc_loader_init(&tr->train, tr->train_data, gB, tr->o.T, tr->o.seed, true, err))) return s;
    return lmc_loader_seek(&tr->train, ep, ix, err);
}

lmc_status lmc_trainer_tp_attach_sp(struct lmc_trainer *tr, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    const struct lmc_backend *be = tr->be;
    int T = t->c->world;
    int64_t n = tr->o.B * tr->o.T, C = tr->tm.cfg.hidden_size;
    const char *why = tr->tm.trainable_off ? "a frozen base with adapters (LoRA)"
                    : tr->cp               ? "--cp"
                    : tr->zero             ? "--zero 2-3"
                    : !tr->tm.arch->ffn    ? "a model without a feed-forward part (Mamba)"
                    : !be->host_memory     ? "a device backend"
                    : tr->o.no_acts        ? "a pipeline stage (--pp)"
                                           : NULL;
    if (why) return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--sp (sequence parallelism) does not run with %s yet", why);
    if (T < 2) return lmc_err_set(err, LMC_ERR_ARG, "--sp splits the sequence over the --tp ranks (give --tp N, N >= 2)");
    if (n % T)
        return lmc_err_set(err, LMC_ERR_ARG, "--sp: a micro-batch's %lld tokens (--batch %lld x --seq %lld) do not "
                           "split evenly over the %d tensor-parallel ranks", (long long)n, (long long)tr->o.B,
                           (long long)tr->o.T, T);
    memset(&t->sp, 0, sizeof t->sp);
    t->sp_be = be;
    for (int k = 1; k < 3; k++)
        if (!(t->sp.buf[k] = be->alloc(be->ctx, sizeof(float) * (size_t)(n * C))))
            return lmc_err_set(err, LMC_ERR_OOM, "--sp: out of memory for the gathered activations");
    t->sp.g = &t->g;
    t->sp.m = n / T;
    t->sp.m0 = (int64_t)t->c->rank * t->sp.m;
    lmc_tacts_free(&tr->acts);
    lmc_status s = lmc_tacts_init_sp(&tr->acts, &tr->tm, be, tr->o.B, tr->o.T, tr->o.recompute, &t->sp, err);
    if (!s) t->g.sp = true;
    t->sp.buf[0] = tr->acts.hf; /* free while the blocks run (the final norm's output, written after them) */
    return s;
}

/* The group's first failed collective (sticky in the linears), reset. */
static lmc_status group_status(struct lmc_trainer_tp *t, lmc_err *err) {
    lmc_status s = t->g.st;
    if (s) {
        if (err) *err = t->g.err;
        t->g.st = LMC_OK;
    }
    return s;
}

/* sqrt of the sum of squares of the full model's gradient: split tensors'
 * shards summed over the group, replicated KV heads once over their
 * replicas, replicated tensors once. Every rank gets the same bits. */
static lmc_status global_norm(struct lmc_trainer *tr, double *norm, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    const struct lmc_tmodel *tm = &tr->tm;
    double split = 0, rep = 0;
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->frozen) continue; /* a frozen base under adapters: no gradient */
        int dim;
        int64_t a0, n;
        lmc_tp_tensor_cut(p->name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
        double ss = tr->be->sumsq(tr->be->ctx, lmc_tmodel_grad(tm, p), p->numel);
        bool kv = strstr(p->name, ".k_proj.") || strstr(p->name, ".v_proj.");
        if (dim < 0) rep += ss;
        else split += kv && t->heads.kv_replicas > 1 ? ss / t->heads.kv_replicas : ss;
    }
    lmc_status s = t->c->all_reduce(t->c, &split, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    *norm = sqrt(rep + split);
    return s;
}

/* ---- ZeRO 2-3 over the data-parallel groups (trainer_dist.c runs the step) */
lmc_status lmc_trainer_tp_zero_check(const struct lmc_trainer *tr, int stage, lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    if (t->heads.kv_replicas > 1)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp %d --zero %d: the KV heads are replicated (%d KV heads "
                           "for %d ranks) and their gradients summed over the group after the backward; ZeRO-%d "
                           "reduces each layer's during it (give --tp <= the KV heads, or --zero 1)", t->c->world,
                           stage, (int)t->full.num_kv_heads, t->c->world, stage);
    return LMC_OK;
}

double lmc_trainer_tp_norm_weight(const struct lmc_trainer *tr, int i) {
    const struct lmc_trainer_tp *t = tr->tp;
    int dim;
    int64_t a0, n;
    lmc_tp_tensor_cut(tr->tm.params[i].name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
    return dim < 0 ? 1.0 / (double)t->c->world : 1.0; /* replicated: counted once over the group's sum */
}

lmc_status lmc_trainer_tp_group_sum(struct lmc_trainer *tr, double *v, lmc_err *err) {
    lmc_status s = group_status(tr->tp, err);
    return s ? s : tr->tp->c->all_reduce(tr->tp->c, v, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
}

lmc_status lmc_trainer_tp_micro_check(struct lmc_trainer *tr, lmc_err *err) { return group_status(tr->tp, err); }

lmc_status lmc_trainer_tp_grad_sumsq(struct lmc_trainer *tr, double *ss, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    lmc_status s = lmc_tp_tmodel_sum_replicated(&tr->tm, &t->g, &t->heads, t->full.num_kv_heads, err);
    if (!s) s = group_status(t, err);
    double norm = 0;
    if (!s) s = global_norm(tr, &norm, err);
    *ss = norm * norm;
    return s;
}

static lmc_status tp_optim_step(struct lmc_trainer *tr, double lr, int64_t step, float grad_scale, lmc_err *err);

/* The rest of a ZeRO-1 step: the gradient reduce-scattered over the DP
 * group (this rank's chunk), the global norm from the chunks (split
 * tensors summed over the TP group, replicated KV heads once), AdamW on
 * the chunk with its moments, the chunks all-gathered back into w. */
static lmc_status zero_finish(struct lmc_trainer *tr, struct lmc_train_stats *st, double *sums, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    struct lmc_comm *dp = tr->comm;
    int64_t N = tm->numel, K = t->zchunk, c0 = t->z0, c1 = t->z0 + t->zn;
    float *g = malloc(sizeof(float) * (size_t)(K * dp->world)), *gc = malloc(sizeof(float) * (size_t)K);
    lmc_status s = g && gc ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "--zero 1 --tp: out of memory");
    if (!s) {
        memset(g + N, 0, sizeof(float) * (size_t)(K * dp->world - N));
        memcpy(g, tm->g, sizeof(float) * (size_t)N);
        s = dp->reduce_scatter(dp, g, gc, K, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
    }
    if (!s) s = dp->all_reduce(dp, sums, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    double nn[2] = {0, 0}; /* split, replicated sums of squares over the chunk */
    for (int i = 0; !s && i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        int64_t lo = LMC_MAX(c0, p->off), hi = LMC_MIN(c1, p->off + p->numel);
        if (lo >= hi) continue;
        int dim;
        int64_t a0, n;
        lmc_tp_tensor_cut(p->name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
        double ss = be->sumsq(be->ctx, gc + (lo - c0), hi - lo);
        bool kv = strstr(p->name, ".k_proj.") || strstr(p->name, ".v_proj.");
        if (dim < 0) nn[1] += ss;
        else nn[0] += kv && t->heads.kv_replicas > 1 ? ss / t->heads.kv_replicas : ss;
    }
    if (!s) s = dp->all_reduce(dp, nn, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    if (!s) s = t->c->all_reduce(t->c, nn, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    if (s) {
        free(g), free(gc);
        return s;
    }
    st->loss = sums[0] / (sums[1] > 0 ? sums[1] : 1);
    st->tokens = o->B * o->T * o->accum * dp->world;
    st->grad_norm = sqrt(nn[0] + nn[1]);
    struct lmc_trainer_update u = {.g = gc, .c0 = c0, .c1 = c1}; /* AdamW on the chunk */
    (void)lmc_trainer_apply_update_with(tr, st, sums[1], &u, err); /* no optimizer hook: LMC_OK */
    if (st->skipped) {
        free(g), free(gc);
        return LMC_OK;
    }
    /* the updated chunks back into every DP rank's w */
    memset(gc, 0, sizeof(float) * (size_t)K);
    memcpy(gc, tm->w + c0, sizeof(float) * (size_t)(c1 - c0));
    s = dp->all_gather(dp, gc, g, K, LMC_DTYPE_F32, err);
    if (!s) memcpy(tm->w, g, sizeof(float) * (size_t)N);
    free(g), free(gc);
    return s;
}

lmc_status lmc_trainer_tp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    int dw = tr->comm ? tr->comm->world : 1, dr = tr->comm ? tr->comm->rank : 0;
    memset(st, 0, sizeof *st);
    lmc_tmodel_zero_grad(tm);
    int64_t per = o->B * o->T;
    /* TP x CP: the gradient is summed over the C x D ranks of tr->comm, the batch read by D groups */
    int ddw = tr->cp ? lmc_trainer_cp_data_world(tr) : dw;
    float dscale = o->next_batch ? 1.0f : (float)(1.0 / ((double)per * (double)ddw * (double)o->accum));
    double sums[2] = {0, 0}; /* loss sum, counted targets */
    lmc_status s;
    for (int64_t k = 0; k < o->accum; k++) {
        const int32_t *in = tr->in, *tg = tr->tg;
        if (tr->cp) {
            if ((s = lmc_trainer_cp_micro(tr, &in, &tg, err))) return s;
        } else if ((s = lmc_trainer_next_micro(tr, dw, dr, tr->in, tr->tg, NULL, false, err))) {
            return s; /* a batch source: the later ranks' draws after the step */
        }
        double ls;
        int64_t n;
        s = lmc_tmodel_step(tm, be, &tr->acts, in, tg, true, dscale, &ls, &n, err);
        if (!s) s = group_status(t, err);
        if (!s && tr->cp) s = lmc_trainer_cp_check(tr, err);
        if (s) return s;
        sums[0] += ls;
        sums[1] += (double)n;
        if (!tr->cp && o->next_batch && (s = lmc_trainer_draw_skip(tr, dr + 1, dw, NULL, err))) return s;
    }
    if ((s = lmc_tp_tmodel_sum_replicated(tm, &t->g, &t->heads, t->full.num_kv_heads, err))) return s;
    if (tm->trainable_off && (s = lmc_tp_lora_reduce(tm, &t->g, &t->heads, err))) return s; /* LoRA's replicated factors */
    if (t->zero && dw > 1) return zero_finish(tr, st, sums, err);
    if (dw > 1 && ((s = tr->comm->all_reduce(tr->comm, tm->g, tm->numel - tm->g_off, LMC_DTYPE_F32, LMC_REDUCE_SUM, err)) ||
                   (s = tr->comm->all_reduce(tr->comm, sums, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err))))
        return s;
    st->loss = sums[0] / (sums[1] > 0 ? sums[1] : 1);
    st->tokens = per * o->accum * ddw;
    if ((s = global_norm(tr, &st->grad_norm, err))) return s;
    /* AdamW on the trainable part (moments past trainable_off), or the optimizer on the slices */
    struct lmc_trainer_update u = {.optim = tp_optim_step};
    return lmc_trainer_apply_update_with(tr, st, sums[1], &u, err);
}

/* Where rank r's shard of tensor `name` lies in the full tensor. */
static lmc_status rank_cut(const struct lmc_trainer_tp *t, int r, const char *name, int *dim, int64_t *a0,
                           int64_t *n, lmc_err *err) {
    struct lmc_tp_heads h;
    lmc_status s = lmc_tp_plan_heads(t->full.num_heads, t->full.num_kv_heads, t->c->world, r, &h, err);
    if (s) return s;
    int64_t i0, ni;
    lmc_dist_slice(t->full.intermediate_size, r, t->c->world, &i0, &ni);
    if (t->heads.vocab) {
        h.vocab = true;
        lmc_dist_slice(t->full.vocab_size, r, t->c->world, &h.v0, &h.nv);
    }
    lmc_tp_tensor_cut(name, &h, t->full.head_dim, i0, ni, dim, a0, n);
    return LMC_OK;
}

/* full (rows, cols) <- src, the (n rows | n cols) shard at a0 */
static void place(float *full, const float *src, int dim, int64_t a0, int64_t n, int64_t rows, int64_t cols) {
    if (dim == 0) {
        memcpy(full + a0 * cols, src, sizeof(float) * (size_t)(n * cols));
        return;
    }
    for (int64_t r = 0; r < rows; r++) memcpy(full + r * cols + a0, src + r * n, sizeof(float) * (size_t)n);
}

/* ---- Muon under tensor parallelism: a split matrix's parameter, gradient
 * and momentum shards are all-gathered into the whole (rows, cols) matrix
 * on every rank of the group, the one-process Muon step (Newton-Schulz of
 * the whole matrix) runs on it, and each rank keeps its slice of the new
 * parameter and momentum: the state stays sharded, the step is the one-
 * process one. Every other slot (AdamW group, replicated tensors) steps on
 * its shard as is. Host buffers (the CPU backend). */

/* The whole tensor's extent along the split dimension: the largest end of
 * the ranks' cuts (replicated KV heads overlap). */
static lmc_status full_extent(const struct lmc_trainer_tp *t, const char *name, int64_t *ext, lmc_err *err) {
    *ext = 0;
    for (int r = 0; r < t->c->world; r++) {
        int dim;
        int64_t a0, n;
        lmc_status s = rank_cut(t, r, name, &dim, &a0, &n, err);
        if (s) return s;
        *ext = LMC_MAX(*ext, a0 + n);
    }
    return LMC_OK;
}

/* full (rows, cols) on every rank <- the ranks' shards `local` of tensor
 * `name` (its cut; dim < 0: replicated, copied). One all-gather padded to
 * the largest shard. */
static lmc_status gather_full(const struct lmc_trainer_tp *t, const char *name, const float *local, float *full,
                              int64_t rows, int64_t cols, lmc_err *err) {
    struct lmc_comm *c = t->c;
    int dim;
    int64_t a0, n, maxc = 0;
    lmc_status s = rank_cut(t, c->rank, name, &dim, &a0, &n, err);
    if (s) return s;
    if (dim < 0) {
        memcpy(full, local, sizeof(float) * (size_t)(rows * cols));
        return LMC_OK;
    }
    int64_t mine = dim == 0 ? n * cols : rows * n;
    for (int r = 0; r < c->world && !s; r++) {
        int d;
        int64_t b0, m;
        s = rank_cut(t, r, name, &d, &b0, &m, err);
        maxc = LMC_MAX(maxc, d == 0 ? m * cols : rows * m);
    }
    float *send = s ? NULL : calloc((size_t)maxc, sizeof(float));
    float *recv = s ? NULL : malloc(sizeof(float) * (size_t)maxc * (size_t)c->world);
    if (!s && (!send || !recv)) s = lmc_err_set(err, LMC_ERR_OOM, "--tp: out of memory gathering %s", name);
    if (!s) {
        memcpy(send, local, sizeof(float) * (size_t)mine);
        s = c->all_gather(c, send, recv, maxc, LMC_DTYPE_F32, err);
    }
    for (int r = 0; !s && r < c->world; r++) {
        if ((s = rank_cut(t, r, name, &dim, &a0, &n, err))) break;
        place(full, recv + (int64_t)r * maxc, dim, a0, n, rows, cols);
    }
    free(send), free(recv);
    return s;
}

/* local <- this rank's shard of full (rows, cols) */
static void take_mine(const struct lmc_trainer_tp *t, const char *name, float *local, const float *full, int64_t rows,
                      int64_t cols) {
    int dim;
    int64_t a0, n;
    lmc_tp_tensor_cut(name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
    if (dim == 0) lmc_tp_take_rows(local, full, cols, a0, n);
    else if (dim == 1) lmc_tp_take_cols(local, full, rows, cols, a0, n);
    else memcpy(local, full, sizeof(float) * (size_t)(rows * cols));
}

/* The whole (rows, cols) of slot s's tensor (its shard's shape widened along the cut). */
static lmc_status slot_full_shape(const struct lmc_trainer_tp *t, const struct lmc_optim_slot *s, int *dim,
                                  int64_t *rows, int64_t *cols, lmc_err *err) {
    int64_t a0, n, ext;
    lmc_tp_tensor_cut(s->name, &t->heads, t->full.head_dim, t->i0, t->ni, dim, &a0, &n);
    *rows = s->rows, *cols = s->cols;
    if (*dim < 0) return LMC_OK;
    lmc_status st = full_extent(t, s->name, &ext, err);
    if (*dim == 0) *rows = ext;
    else *cols = ext;
    return st;
}

/* A whole-state slot's step (whole_state): its shard's parameters and
 * gradient gathered into the whole matrix (slot rows x cols), the one-process
 * step, this rank's slice of the parameters kept. */
static lmc_status whole_step(struct lmc_trainer *tr, int i, double lr, int64_t step, float grad_scale, lmc_err *err) {
    struct lmc_optim *o = &tr->opt;
    struct lmc_optim_slot *sl = &o->slots[i];
    int64_t R = sl->rows, C = sl->cols;
    size_t nf = (size_t)(R * C);
    float *fp = malloc(sizeof(float) * nf), *fg = malloc(sizeof(float) * nf);
    lmc_status s = fp && fg ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "--tp: out of memory for %s", sl->name);
    if (!s) s = gather_full(tr->tp, sl->name, sl->p, fp, R, C, err);
    if (!s) s = gather_full(tr->tp, sl->name, sl->g, fg, R, C, err);
    if (!s) {
        float *kp = sl->p;
        const float *kg = sl->g;
        sl->p = fp, sl->g = fg;
        lmc_optim_step_one(o, i, lr, step, grad_scale);
        tr->be->sync(tr->be->ctx);
        sl->p = kp, sl->g = kg;
        take_mine(tr->tp, sl->name, sl->p, fp, R, C);
    }
    free(fp), free(fg);
    return s;
}

static lmc_status tp_optim_step(struct lmc_trainer *tr, double lr, int64_t step, float grad_scale, lmc_err *err) {
    struct lmc_trainer_tp *t = tr->tp;
    struct lmc_optim *o = &tr->opt;
    lmc_status s = LMC_OK;
    for (int i = 0; !s && i < o->n_params; i++) {
        struct lmc_optim_slot *sl = &o->slots[i];
        int dim;
        int64_t R, C;
        if (whole_state(tr)) { /* the slot is the whole matrix's: gather p and g, step, keep this rank's slice */
            int64_t a0, n;
            lmc_tp_tensor_cut(sl->name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
            if (dim >= 0) s = whole_step(tr, i, lr, step, grad_scale, err);
            else lmc_optim_step_one(o, i, lr, step, grad_scale);
            continue;
        }
        if ((s = slot_full_shape(t, sl, &dim, &R, &C, err))) break;
        if (sl->group != LMC_GROUP_MUON || dim < 0) {
            lmc_optim_step_one(o, i, lr, step, grad_scale);
            continue;
        }
        size_t nf = (size_t)(R * C);
        float *fp = malloc(sizeof(float) * nf), *fg = malloc(sizeof(float) * nf), *fb = malloc(sizeof(float) * nf);
        float *work = malloc(sizeof(float) * (size_t)LMC_MAX(1, lmc_muon_work_floats(R, C)));
        if (!fp || !fg || !fb || !work) s = lmc_err_set(err, LMC_ERR_OOM, "--tp muon: out of memory for %s", sl->name);
        if (!s) s = gather_full(t, sl->name, sl->p, fp, R, C, err);
        if (!s) s = gather_full(t, sl->name, sl->g, fg, R, C, err);
        if (!s) s = gather_full(t, sl->name, sl->buf, fb, R, C, err);
        if (!s) { /* the one-process step on the whole matrix, then this rank's slices back */
            struct lmc_optim_slot keep = *sl;
            float *kw = o->work;
            sl->p = fp, sl->g = fg, sl->buf = fb, sl->rows = R, sl->cols = C;
            o->work = work;
            lmc_optim_step_one(o, i, lr, step, grad_scale);
            *sl = keep;
            o->work = kw;
            take_mine(t, sl->name, sl->p, fp, R, C);
            take_mine(t, sl->name, sl->buf, fb, R, C);
        }
        free(fp), free(fg), free(fb), free(work);
    }
    return s;
}

/* Slot i's state fields (AdamW group: m, v; Muon: the momentum), as
 * pointers into the slot. */
static int slot_state(struct lmc_optim_slot *s, float **f[2]) {
    if (s->group == LMC_GROUP_MUON) {
        f[0] = &s->buf;
        return 1;
    }
    f[0] = &s->m, f[1] = &s->v;
    return 2;
}

/* A one-process optimizer over the full model's parameters (the shard's
 * settings), for a consolidated checkpoint's state. */
static lmc_status full_optim(const struct lmc_trainer *tr, const struct lmc_tmodel *full, struct lmc_optim *fo,
                             lmc_err *err) {
    struct lmc_optim_param *pp = calloc((size_t)full->n_params, sizeof *pp);
    if (!pp) return lmc_err_set(err, LMC_ERR_OOM, "optimizer parameter list: out of memory");
    int np = lmc_trainer_optim_params(full, tr->o.decay == LMC_DECAY_ALL, pp);
    lmc_status s = np == tr->opt.n_params ? lmc_optim_init(fo, &tr->opt.cfg, tr->be, pp, np, err)
                                          : lmc_err_set(err, LMC_ERR_FORMAT, "--tp: %d optimizer tensors in the full "
                                                        "model, %d in the shard", np, tr->opt.n_params);
    free(pp);
    return s;
}

/* Shard parameter i of `arena` (laid out as the shard's w) gathered into
 * TP rank 0's fbuf (the full tensor, on-disk layout); the others send. */
static lmc_status gather_param(const struct lmc_trainer *tr, const float *arena, int i, const struct lmc_tparam *fp,
                               float *fbuf, float *lbuf, float *rbuf, lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    const struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_tparam *p = &tm->params[i];
    struct lmc_comm *c = t->c;
    lmc_status s = lmc_tmodel_download_param(tm, arena, i, lbuf, err);
    int dim;
    int64_t a0, n;
    if (!s) s = rank_cut(t, c->rank, p->name, &dim, &a0, &n, err);
    if (s) return s;
    int64_t rows = fp->shape[0], cols = fp->ndim == 2 ? fp->shape[1] : 1;
    if (dim < 0) { /* replicated: rank 0's copy */
        if (c->rank == 0) memcpy(fbuf, lbuf, sizeof(float) * (size_t)fp->numel);
        return LMC_OK;
    }
    if (c->rank != 0) return c->send(c, lbuf, sizeof(float) * (size_t)p->numel, 0, err);
    place(fbuf, lbuf, dim, a0, n, rows, cols);
    for (int r = 1; r < c->world; r++) {
        if ((s = rank_cut(t, r, p->name, &dim, &a0, &n, err))) return s;
        int64_t cnt = dim == 0 ? n * cols : rows * n;
        if ((s = c->recv(c, rbuf, sizeof(float) * (size_t)cnt, r, err))) return s;
        place(fbuf, rbuf, dim, a0, n, rows, cols);
    }
    return LMC_OK;
}

lmc_status lmc_trainer_tp_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                               const char *tok_dir, lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    float *zm = NULL, *zv = NULL; /* ZeRO-1: the DP ranks' moment chunks, whole */
    const float *zw = NULL; /* ZeRO 2-3: the zero module's state gathered to DP rank 0 (host, arena layout) */
    if (tr->zero) {
        const float *gm, *gv;
        lmc_status zs = lmc_trainer_dist_gather((struct lmc_trainer *)tr, true, err);
        if (zs || tr->comm->rank != 0) return zs;
        zw = lmc_trainer_dist_params(tr);
        if (!lmc_trainer_dist_moments(tr, &gm, &gv) || !zw)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: the ZeRO state was not gathered", dir);
        zm = (float *)gm, zv = (float *)gv; /* (not freed here: the trainer's until its next step) */
    }
    if (!tr->zero && t->zero && tr->comm && tr->comm->world > 1) {
        lmc_status zs = zero_gather_moments((struct lmc_trainer *)tr, &zm, &zv, err);
        if (zs || tr->comm->rank != 0) {
            free(zm), free(zv);
            return zs;
        }
    }
    if (tr->comm && tr->comm->rank != 0) return LMC_OK; /* DP replicas: DP rank 0's group writes */
    bool writer = t->c->rank == 0;
    const struct lmc_backend *be = tr->be;
    struct lmc_tmodel full;
    memset(&full, 0, sizeof full);
    float *fm = NULL, *fv = NULL, *fbuf = NULL, *lbuf = NULL, *rbuf = NULL;
    lmc_status s = LMC_OK;
    if (writer) { /* the full model's layout, from the full config */
        if ((s = lmc_tmodel_init(&full, &t->full, be, err))) return s;
        size_t bytes = (size_t)full.numel * sizeof(float);
        fm = be->alloc(be->ctx, bytes);
        fv = be->alloc(be->ctx, bytes);
        if (fm) be->zero(be->ctx, fm, bytes);
        if (fv) be->zero(be->ctx, fv, bytes);
    }
    int64_t maxn = 0;
    for (int i = 0; i < tr->tm.n_params; i++) maxn = LMC_MAX(maxn, tr->tm.params[i].numel);
    lbuf = malloc(sizeof(float) * (size_t)maxn);
    rbuf = malloc(sizeof(float) * (size_t)maxn);
    if (writer) fbuf = malloc(sizeof(float) * (size_t)full.numel);
    if (!lbuf || !rbuf || (writer && (!fm || !fv || !fbuf)))
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory gathering the tensor-parallel shards", dir);
    /* every rank runs the same gathers (the ranks other than 0 only send) */
    for (int i = 0; !s && i < tr->tm.n_params; i++) {
        const struct lmc_tparam *p = &tr->tm.params[i];
        int f = writer ? lmc_tmodel_find(&full, p->name) : -1;
        if (writer && f < 0) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: the full model has no tensor '%s'", dir, p->name);
            break;
        }
        const struct lmc_tparam *fp = writer ? &full.params[f] : p;
        const float *src[3] = {zw ? zw : tr->tm.w, zm ? zm : tr->m, zv ? zv : tr->v};
        float *dst[3] = {full.w, fm, fv};
        for (int a = 0; !s && a < (tr->have_opt ? 1 : 3); a++) {
            s = gather_param(tr, src[a], i, fp, fbuf, lbuf, rbuf, err);
            if (!s && writer) s = lmc_tmodel_upload_param(&full, dst[a], f, fbuf, err);
        }
    }
    free(lbuf), free(rbuf), free(fbuf);
    if (!tr->zero) free(zm), free(zv);
    /* another optimizer (Muon): its state gathered into a one-process optimizer of the full model */
    struct lmc_optim fo;
    bool have_fo = false;
    bool whole = whole_state(tr); /* the writer's optimizer is the one-process one already */
    if (!s && tr->have_opt && writer && !whole) have_fo = !(s = full_optim(tr, &full, &fo, err));
    if (tr->have_opt) {
        lmc_status ag = s;
        if (!writer) { /* the writer's status: every rank runs the same gathers, or none */
            int32_t bad = 0;
            lmc_status bs = t->c->broadcast(t->c, &bad, sizeof bad, 0, err);
            if (!ag) ag = bs;
            if (!ag && bad) ag = lmc_err_set(err, LMC_ERR_IO, "%s: tensor-parallel rank 0 failed to save", dir);
        } else {
            int32_t bad = s != LMC_OK;
            lmc_status bs = t->c->broadcast(t->c, &bad, sizeof bad, 0, err);
            if (!s) ag = bs;
        }
        s = ag;
    }
    for (int i = 0; !s && tr->have_opt && !whole && i < tr->opt.n_params; i++) {
        struct lmc_optim_slot *sl = &((struct lmc_trainer *)tr)->opt.slots[i];
        int dim;
        int64_t R, C;
        float **f[2], **g[2];
        int nf = slot_state(sl, f);
        if (writer) slot_state(&fo.slots[i], g);
        if ((s = slot_full_shape(t, sl, &dim, &R, &C, err))) break;
        float *buf = malloc(sizeof(float) * (size_t)(R * C));
        if (!buf) s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory gathering %s", dir, sl->name);
        for (int a = 0; !s && a < nf; a++) {
            s = gather_full(t, sl->name, *f[a], buf, R, C, err);
            if (!s && writer) memcpy(*g[a], buf, sizeof(float) * (size_t)(R * C));
        }
        free(buf);
    }
    if (!s && writer) { /* the one-process trainer's view of the full state */
        struct lmc_trainer one = *tr;
        one.tm = full;
        one.m = fm, one.v = fv;
        one.comm = NULL, one.zero = NULL, one.tp = NULL, one.have_opt = have_fo || whole;
        if (have_fo) one.opt = fo;
        s = lmc_ckpt_save(&one, dir, config_src, tok_dir, err);
    }
    if (have_fo) lmc_optim_free(&fo);
    if (fm) be->free(be->ctx, fm);
    if (fv) be->free(be->ctx, fv);
    if (writer) lmc_tmodel_free(&full);
    return s;
}

/* Resume with another optimizer (Muon): the checkpoint's state read into a
 * one-process optimizer of the full model, each slot's fields cut as the
 * parameters are. */
static lmc_status load_optim_state(struct lmc_trainer *tr, const struct lmc_tmodel *full, const char *dir,
                                   lmc_err *err) {
    struct lmc_trainer one = *tr;
    one.tm = *full;
    one.comm = NULL, one.zero = NULL, one.tp = NULL, one.m = one.v = NULL;
    if (whole_state(tr)) { /* the one-process state, read by name into this rank's (whole) optimizer */
        lmc_status s = lmc_ckpt_load_state(&one, dir, err);
        tr->opt = one.opt; /* (its buffers are tr's; its fields as loaded) */
        if (!s) {
            tr->step = one.step;
            if (!tr->train_data) {
                tr->feed_epoch = one.feed_epoch;
                tr->feed_index = one.feed_index;
            } else {
                s = lmc_loader_seek(&tr->train, one.train.epoch, one.train.index, err);
            }
        }
        return s;
    }
    lmc_status s = full_optim(tr, full, &one.opt, err);
    if (s) return s;
    one.have_opt = true;
    if (!(s = lmc_ckpt_load_state(&one, dir, err))) {
        tr->step = one.step;
        s = lmc_loader_seek(&tr->train, one.train.epoch, one.train.index, err);
    }
    for (int i = 0; !s && i < tr->opt.n_params; i++) {
        struct lmc_optim_slot *sl = &tr->opt.slots[i], *fs = &one.opt.slots[i];
        int dim;
        int64_t R, C;
        float **f[2], **g[2];
        int nf = slot_state(sl, f);
        slot_state(fs, g);
        if ((s = slot_full_shape(tr->tp, sl, &dim, &R, &C, err))) break;
        if (strcmp(sl->name, fs->name) || sl->group != fs->group || fs->rows * fs->cols != R * C) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: optimizer tensor %s does not match the shard's %s", dir, fs->name,
                            sl->name);
            break;
        }
        for (int a = 0; a < nf; a++) take_mine(tr->tp, sl->name, *f[a], *g[a], R, C);
    }
    lmc_optim_free(&one.opt);
    return s;
}

lmc_status lmc_trainer_tp_load_state(struct lmc_trainer *tr, const struct lmc_tmodel *full, const char *dir,
                                     lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    const struct lmc_backend *be = tr->be;
    struct lmc_trainer one = *tr;
    one.tm = *full;
    one.comm = NULL, one.zero = NULL, one.tp = NULL, one.have_opt = false;
    if (tr->have_opt) return load_optim_state(tr, full, dir, err);
    size_t bytes = (size_t)full->numel * sizeof(float);
    one.m = be->alloc(be->ctx, bytes);
    one.v = be->alloc(be->ctx, bytes);
    float *fbuf = malloc(bytes ? bytes : 1), *lbuf = NULL;
    int64_t maxn = 0;
    for (int i = 0; i < tr->tm.n_params; i++) maxn = LMC_MAX(maxn, tr->tm.params[i].numel);
    lbuf = malloc(sizeof(float) * (size_t)(maxn ? maxn : 1));
    lmc_status s = LMC_OK;
    if (!one.m || !one.v || !fbuf || !lbuf)
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory for the optimizer state", dir);
    if (!s) s = lmc_ckpt_load_state(&one, dir, err);
    if (!s) {
        tr->step = one.step;
        if (!tr->train_data) { /* a batch source (lmc finetune): its position for the caller to seek */
            tr->feed_epoch = one.feed_epoch;
            tr->feed_index = one.feed_index;
        } else {
            s = lmc_loader_seek(&tr->train, one.train.epoch, one.train.index, err);
        }
    }
    const float *src[2] = {one.m, one.v};
    /* ZeRO-1: the whole shard's moments first, this DP rank's chunk kept; ZeRO 2-3: into the zero module */
    bool zc = (t->zero && tr->comm && tr->comm->world > 1) || tr->zero;
    float *zf[2] = {NULL, NULL};
    if (zc && !s) {
        zf[0] = malloc(sizeof(float) * (size_t)tr->tm.numel);
        zf[1] = malloc(sizeof(float) * (size_t)tr->tm.numel);
        if (!zf[0] || !zf[1]) s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory for the optimizer state", dir);
        else memset(zf[0], 0, sizeof(float) * (size_t)tr->tm.numel), memset(zf[1], 0, sizeof(float) * (size_t)tr->tm.numel);
    }
    float *dst[2] = {zc ? zf[0] : tr->m, zc ? zf[1] : tr->v};
    for (int i = 0; !s && i < tr->tm.n_params; i++) {
        const struct lmc_tparam *p = &tr->tm.params[i];
        int f = lmc_tmodel_find(full, p->name), dim;
        int64_t a0, n;
        if (f < 0) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: the model has no tensor '%s'", dir, p->name);
            break;
        }
        const struct lmc_tparam *q = &full->params[f];
        int64_t rows = q->shape[0], cols = q->ndim == 2 ? q->shape[1] : 1;
        lmc_tp_tensor_cut(p->name, &t->heads, t->full.head_dim, t->i0, t->ni, &dim, &a0, &n);
        for (int a = 0; !s && a < 2; a++) {
            s = lmc_tmodel_download_param(full, src[a], f, fbuf, err);
            if (s) break;
            if (dim == 0) lmc_tp_take_rows(lbuf, fbuf, cols, a0, n);
            else if (dim == 1) lmc_tp_take_cols(lbuf, fbuf, rows, cols, a0, n);
            else memcpy(lbuf, fbuf, sizeof(float) * (size_t)q->numel);
            s = lmc_tmodel_upload_param(&tr->tm, dst[a], i, lbuf, err);
        }
    }
    if (tr->zero && !s) { /* the parameters are the zero module's already (the checkpoint's shard) */
        float *P = malloc(sizeof(float) * (size_t)tr->tm.numel);
        if (!P) s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory for the optimizer state", dir);
        if (!s && !(s = lmc_zero_params_to_host(tr->zero, P, err))) lmc_zero_set_full(tr->zero, P, zf[0], zf[1]);
        free(P);
    }
    for (int a = 0; zc && !tr->zero && !s && a < 2; a++)
        memcpy(a ? tr->v : tr->m, zf[a] + t->z0, sizeof(float) * (size_t)t->zn);
    free(zf[0]), free(zf[1]);
    free(fbuf), free(lbuf);
    if (one.m) be->free(be->ctx, one.m);
    if (one.v) be->free(be->ctx, one.v);
    return s;
}
