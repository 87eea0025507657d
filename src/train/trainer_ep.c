/* trainer_ep.c — the trainer's expert-parallel step, evaluation and
 * consolidated checkpoints (see trainer_ep.h): each rank's rows of the
 * global micro-batch through lmc_tmodel_step (the experts exchanged inside
 * the layers), the replicated gradients and the loss sums added over the
 * ranks, the global norm, then AdamW on what the rank holds; rank 0
 * gathers the experts for the one-process checkpoint folder; LoRA over the
 * shard (each rank adapts the layer linears and its own experts), with
 * one-process adapter checkpoints. */
#include "train/trainer_ep.h"
#include "train/trainer_internal.h"
#include "train/trainer_step.h"
#include "train/checkpoint.h"
#include "train/lora_train.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/ep_model.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lmc_trainer_ep {
    struct lmc_comm *c;
    struct lmc_ep_group g;
};

static void put(const struct lmc_backend *be, float *arena, int64_t off, const float *host, int64_t n);

struct lmc_ep_group *lmc_trainer_ep_group(struct lmc_trainer *tr) { return tr->ep ? &tr->ep->g : NULL; }

void lmc_trainer_ep_free_state(struct lmc_trainer_ep *e) {
    if (!e) return;
    lmc_ep_group_free(&e->g);
    free(e);
}

void lmc_trainer_ep_free(struct lmc_trainer *tr) {
    if (!tr->ep) return;
    /* the model's layers point at the group: the caller frees the model after (lmc_trainer_free) */
    lmc_trainer_ep_free_state(tr->ep);
    tr->ep = NULL;
}

lmc_status lmc_trainer_ep_shard(struct lmc_tmodel *shard, struct lmc_trainer_ep **out, const struct lmc_tmodel *full,
                                struct lmc_tmodel_src *src, struct lmc_comm *c, const struct lmc_backend *be,
                                lmc_err *err) {
    *out = NULL;
    memset(shard, 0, sizeof *shard);
    const struct lmc_config *cfg = &full->cfg;
    if (cfg->num_experts <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "--ep %d: %s is a dense model (no experts to split; config.json has no "
                           "num_experts)", c->world, cfg->model_type);
    if (cfg->num_experts % c->world)
        return lmc_err_set(err, LMC_ERR_ARG, "--ep %d: the %lld experts of each layer do not divide over %d ranks",
                           c->world, (long long)cfg->num_experts, c->world);
    if (!be->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--ep: mixture-of-experts routing runs on the CPU backend only "
                           "so far (backend %s)", be->name);
    if (!full->w && !src)
        return lmc_err_set(err, LMC_ERR_ARG, "expert parallel: the model has no parameter arena and no source");
    struct lmc_trainer_ep *e = calloc(1, sizeof *e);
    if (!e) return lmc_err_set(err, LMC_ERR_OOM, "expert parallel: out of memory");
    e->c = c;
    lmc_status s = full->w ? lmc_ep_tmodel_shard(shard, &e->g, full, c, be, err)
                           : lmc_ep_tmodel_init(shard, &e->g, &full->cfg, c, be, err);
    if (s) {
        free(e);
        return s;
    }
    /* without arenas: this rank's tensors from the source, in table order (a random source draws the
     * other ranks' experts all the same, so every value is the one process's) */
    int64_t most = 1;
    for (int i = 0; i < shard->n_params; i++) most = LMC_MAX(most, shard->params[i].numel);
    float *buf = full->w ? NULL : malloc(sizeof(float) * (size_t)most);
    if (!full->w && !buf) s = lmc_err_set(err, LMC_ERR_OOM, "expert parallel: out of memory");
    for (int i = 0; !full->w && !s && i < shard->n_params; i++) {
        const struct lmc_tparam *p = &shard->params[i];
        if (p->external) continue;
        int f = lmc_tmodel_find(full, p->name);
        if (f < 0 || full->params[f].numel != p->numel || full->params[f].transposed != p->transposed)
            s = lmc_err_set(err, LMC_ERR_FORMAT, "expert parallel: the model has no tensor '%s' of %lld values",
                            p->name, (long long)p->numel);
        else if (!(s = lmc_tmodel_src_fill(src, full->params[f].off, p->numel, buf, err)))
            put(be, shard->w, p->off, buf, p->numel);
    }
    free(buf);
    if (s) {
        lmc_tmodel_free(shard);
        lmc_ep_group_free(&e->g);
        free(e);
        return s;
    }
    *out = e;
    return LMC_OK;
}

lmc_status lmc_trainer_ep_attach(struct lmc_trainer *tr, struct lmc_trainer_ep *e, const char *desc, lmc_err *err) {
    tr->ep = e;
    if (tr->have_opt || tr->o.optim.kind != LMC_OPTIM_ADAMW)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--ep trains with AdamW only so far (--optim %s)",
                           lmc_optim_kind_name(tr->o.optim.kind));
    if (!tr->be->host_memory || !tr->m)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--ep: a host backend with the trainer's own AdamW moments");
    lmc_status s = lmc_dist_check_same(e->c, "expert-parallel training configuration", desc, err);
    if (s) return s;
    tr->comm = e->c;
    if (tr->o.next_batch || e->c->world == 1) return LMC_OK;
    /* the loader reads global micro-batches of N x B rows (as one process with batch N x B) */
    int64_t gB = (int64_t)e->c->world * tr->o.B;
    free(tr->gbatch);
    if (!(tr->gbatch = malloc((size_t)(gB * (tr->o.T + 1)) * sizeof(int32_t))))
        return lmc_err_set(err, LMC_ERR_OOM, "global batch: out of memory");
    int64_t ep = tr->train.epoch, ix = tr->train.index;
    lmc_loader_free(&tr->train);
    memset(&tr->train, 0, sizeof tr->train);
    if ((s = lmc_loader_init(&tr->train, tr->train_data, gB, tr->o.T, tr->o.seed, true, err))) return s;
    return lmc_loader_seek(&tr->train, ep, ix, err);
}

/* The next micro-batch of this rank into tr->in / tr->tg (and packing). A
 * batch source: every rank draws the N batches of the micro-step in order
 * and keeps its own, the ones after it drawn after its step, so what the
 * source sets per draw (LoRA dropout masks) is its batch's. */
static lmc_status next(struct lmc_trainer *tr, lmc_err *err) {
    return lmc_trainer_next_micro(tr, tr->ep->c->world, tr->ep->c->rank, tr->in, tr->tg, NULL, false, err);
}

lmc_status lmc_trainer_ep_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    struct lmc_trainer_ep *e = tr->ep;
    struct lmc_comm *c = e->c;
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    memset(st, 0, sizeof *st);
    lmc_tmodel_zero_grad(tm);
    int world = c->world;
    int64_t per = o->B * o->T;
    /* token data: the mean over the global batch's tokens, and the load-balancing loss over the global
     * micro-batch (one process with batch N x B); a batch source: the summed loss, 1/count in the update,
     * each rank's batch a micro-batch of its own (one process with accumulation N x accum) */
    float dscale = o->next_batch ? 1.0f : (float)(1.0 / ((double)per * (double)world * (double)o->accum));
    tr->acts.moe_dp = o->next_batch ? NULL : c;
    double sc[2] = {0, 0};
    lmc_status s;
    for (int64_t k = 0; k < o->accum; k++) {
        if ((s = next(tr, err))) return s;
        double ls;
        int64_t n;
        s = lmc_tmodel_step(tm, be, &tr->acts, tr->in, tr->tg, true, dscale, &ls, &n, err);
        if (!s) s = lmc_ep_group_check(&e->g, err);
        if (!s && o->next_batch) /* the rest of the micro-step */
            s = lmc_trainer_draw_skip(tr, c->rank + 1, world, NULL, err);
        /* recomputed layers wrote this rank's own expert load again: the global load once more */
        if (!s && o->recompute && tr->acts.moe && tr->acts.moe_dp)
            s = c->all_reduce(c, tr->acts.moe->count, tr->acts.moe->L * tr->acts.moe->E, LMC_DTYPE_F64,
                              LMC_REDUCE_SUM, err);
        if (s) return s;
        lmc_trainer_moe_add(tr, st, k, o->accum);
        sc[0] += ls;
        sc[1] += (double)n;
    }
    if ((s = lmc_ep_tmodel_reduce_dense(tm, &e->g, err)) ||
        (s = c->all_reduce(c, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)))
        return s;
    if (o->next_batch && st->n_experts > 0) { /* each rank's own routing: the load summed, the aux averaged */
        double aux = st->moe_aux / (double)world;
        if ((s = c->all_reduce(c, tr->expert_tokens, st->n_experts, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)) ||
            (s = c->all_reduce(c, &aux, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)))
            return s;
        st->moe_aux = aux;
    }
    st->loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    st->tokens = per * o->accum * world;
    if ((s = lmc_ep_tmodel_grad_norm(tm, &e->g, &st->grad_norm, err))) return s;
    lmc_trainer_apply_update(tr, st, sc[1]); /* AdamW on what this rank holds (its experts, the replicas) */
    return LMC_OK;
}

static lmc_status eval_micro(struct lmc_trainer *tr, double *loss_sum, int64_t *count, lmc_err *err) {
    lmc_status s = lmc_tmodel_step(&tr->tm, tr->be, &tr->acts, tr->in, tr->tg, false, 1.0f, loss_sum, count, err);
    return s ? s : lmc_ep_group_check(&tr->ep->g, err);
}

lmc_status lmc_trainer_ep_eval(struct lmc_trainer *tr, double *loss, lmc_err *err) {
    struct lmc_comm *c = tr->ep->c;
    *loss = NAN;
    if (!tr->val_data || tr->o.eval_batches <= 0) return LMC_OK;
    tr->acts.moe_dp = c; /* each group of N micro-batches is one global micro-batch (N x B rows) */
    double sc[2];
    lmc_status s = lmc_trainer_eval_sums(tr, c->world, c->world, c->rank, eval_micro, sc, err);
    if (!s) s = c->all_reduce(c, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    if (s) return s;
    *loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    return LMC_OK;
}

/* The rank owning expert e. */
static int owner_of(const struct lmc_ep_group *g, int64_t e) {
    for (int q = 0; q < g->c->world; q++)
        if (e >= g->first[q] && e < g->first[q + 1]) return q;
    return -1;
}

/* The rank owning parameter p (an expert's tensor: its index in the name), or -1 (replicated). */
static int owner(const struct lmc_ep_group *g, const struct lmc_tparam *p) {
    const char *x = strstr(p->name, ".experts.");
    return x ? owner_of(g, strtoll(x + 9, NULL, 10)) : -1;
}

lmc_status lmc_trainer_ep_lora_attach(struct lmc_trainer_ep *e, struct lmc_lora_train *lt, struct lmc_tmodel *tm,
                                      const struct lmc_lora *lo, struct lmc_lora *local, lmc_err *err) {
    *local = *lo;
    local->mods = malloc(sizeof *local->mods * (size_t)(lo->n_mods > 0 ? lo->n_mods : 1));
    if (!local->mods) return lmc_err_set(err, LMC_ERR_OOM, "expert parallel: out of memory");
    local->n_mods = 0;
    for (int k = 0; k < lo->n_mods; k++) /* the layer linears, and this rank's experts' projections */
        if (lo->mods[k].expert < 0 || owner_of(&e->g, lo->mods[k].expert) == e->c->rank)
            local->mods[local->n_mods++] = lo->mods[k];
    lmc_status s = lmc_lora_train_attach(lt, tm, local, err);
    if (s) return s;
    /* the attach bound the views again: the layers point at the group once more */
    lmc_ep_weights_attach(&tm->W, tm->cfg.num_layers, &e->g);
    lmc_ep_weights_attach(&tm->G, tm->cfg.num_layers, &e->g);
    return LMC_OK;
}

void lmc_trainer_ep_lora_local_free(struct lmc_lora *local) {
    free(local->mods);
    memset(local, 0, sizeof *local);
}

lmc_status lmc_trainer_ep_lora_gather(const struct lmc_trainer *tr, struct lmc_lora *lo, lmc_err *err) {
    const struct lmc_trainer_ep *e = tr->ep;
    struct lmc_comm *c = e->c;
    lmc_status s = LMC_OK;
    int64_t r = lo->cfg.r;
    for (int k = 0; k < lo->n_mods && !s; k++) {
        struct lmc_lora_module *m = &lo->mods[k];
        int q = m->expert >= 0 ? owner_of(&e->g, m->expert) : 0;
        size_t na = sizeof(float) * (size_t)(r * m->in), nb = sizeof(float) * (size_t)(m->out * r);
        if (q <= 0) continue;
        if (c->rank == q && !(s = c->send(c, m->a, na, 0, err))) s = c->send(c, m->b, nb, 0, err);
        else if (c->rank == 0 && !(s = c->recv(c, m->a, na, q, err))) s = c->recv(c, m->b, nb, q, err);
    }
    return s;
}

/* The floats of a tensor in an arena <-> host (raw, the arena's layout). */
static void get(const struct lmc_backend *be, float *host, const float *arena, int64_t off, int64_t n) {
    be->download(be->ctx, host, arena + off, (size_t)n * sizeof(float));
}
static void put(const struct lmc_backend *be, float *arena, int64_t off, const float *host, int64_t n) {
    be->upload(be->ctx, arena + off, host, (size_t)n * sizeof(float));
}

lmc_status lmc_trainer_ep_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                               const char *tok_dir, lmc_err *err) {
    const struct lmc_trainer_ep *e = tr->ep;
    struct lmc_comm *c = e->c;
    const struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    int64_t t0 = tm->trainable_off;
    if (t0) /* adapters: lmc_trainer_ep_lora_gather */
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: expert-parallel checkpoints of a frozen-base run are not "
                           "written yet", dir);
    int64_t most = 1;
    for (int i = 0; i < tm->n_params; i++) most = LMC_MAX(most, tm->params[i].numel);
    float *buf = malloc(3 * sizeof(float) * (size_t)most);
    if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "expert-parallel checkpoint: out of memory");
    lmc_status s = LMC_OK;
    if (c->rank != 0) { /* this rank's experts, weights and moments, to rank 0 in table order */
        for (int i = 0; i < tm->n_params && !s; i++) {
            const struct lmc_tparam *p = &tm->params[i];
            if (p->external || owner(&e->g, p) != c->rank) continue;
            get(be, buf, tm->w, p->off, p->numel);
            get(be, buf + p->numel, tr->m, p->off - t0, p->numel);
            get(be, buf + 2 * p->numel, tr->v, p->off - t0, p->numel);
            s = c->send(c, buf, 3 * sizeof(float) * (size_t)p->numel, 0, err);
        }
        free(buf);
        return s;
    }
    /* rank 0: a one-process trainer over the whole model, for lmc_ckpt_save */
    struct lmc_trainer ft = *tr;
    ft.comm = NULL;
    ft.ep = NULL;
    ft.m = ft.v = NULL;
    if ((s = lmc_tmodel_init_layout(&ft.tm, &tm->cfg, be, err))) { /* weights and moments, no gradients */
        free(buf);
        return s;
    }
    size_t bytes = (size_t)ft.tm.numel * sizeof(float);
    ft.tm.w = be->alloc(be->ctx, bytes);
    ft.m = be->alloc(be->ctx, bytes);
    ft.v = be->alloc(be->ctx, bytes);
    if (!ft.tm.w || !ft.m || !ft.v) s = lmc_err_set(err, LMC_ERR_OOM, "expert-parallel checkpoint: out of memory");
    else { /* the padding between tensors */
        be->zero(be->ctx, ft.tm.w, bytes);
        be->zero(be->ctx, ft.m, bytes);
        be->zero(be->ctx, ft.v, bytes);
    }
    for (int i = 0; i < ft.tm.n_params && !s; i++) {
        const struct lmc_tparam *f = &ft.tm.params[i];
        int q = owner(&e->g, f);
        if (q > 0) {
            s = c->recv(c, buf, 3 * sizeof(float) * (size_t)f->numel, q, err);
        } else {
            int j = lmc_tmodel_find(tm, f->name);
            const struct lmc_tparam *p = j >= 0 ? &tm->params[j] : NULL;
            if (!p || p->external || p->numel != f->numel) {
                s = lmc_err_set(err, LMC_ERR_ARG, "expert-parallel checkpoint: rank 0 holds no tensor '%s'", f->name);
                break;
            }
            get(be, buf, tm->w, p->off, p->numel);
            get(be, buf + p->numel, tr->m, p->off - t0, p->numel);
            get(be, buf + 2 * p->numel, tr->v, p->off - t0, p->numel);
        }
        if (s) break;
        put(be, ft.tm.w, f->off, buf, f->numel);
        put(be, ft.m, f->off, buf + f->numel, f->numel);
        put(be, ft.v, f->off, buf + 2 * f->numel, f->numel);
    }
    free(buf);
    if (!s) s = lmc_ckpt_save(&ft, dir, config_src, tok_dir, err);
    if (ft.m) be->free(be->ctx, ft.m);
    if (ft.v) be->free(be->ctx, ft.v);
    lmc_tmodel_free(&ft.tm);
    return s;
}

lmc_status lmc_trainer_ep_load_state(struct lmc_trainer *tr, const struct lmc_tmodel *full, const char *dir,
                                     lmc_err *err) {
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    struct lmc_train_state ts;
    if (!lmc_path_join(path, sizeof path, dir, "trainer_state.json"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    lmc_status s = lmc_file_read(path, 1 << 20, &text, &len, err);
    if (s) return s;
    s = lmc_train_state_parse(text, len, path, &ts, err);
    free(text);
    if (s) return s;
    unsigned pos = LMC_TSTATE_STEP | LMC_TSTATE_EPOCH | LMC_TSTATE_INDEX;
    if ((ts.have & pos) != pos) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected step, epoch and index", path);
    if ((ts.have & LMC_TOPT_SEQ) && ts.o.T != tr->o.T)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with sequence length %lld, resumed with %lld", path,
                           (long long)ts.o.T, (long long)tr->o.T);
    if ((ts.have & LMC_TOPT_SEED) && ts.o.seed != tr->o.seed)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with seed %llu, resumed with %llu", path,
                           (unsigned long long)ts.o.seed, (unsigned long long)tr->o.seed);
    if (!tr->train_data) {
        tr->feed_epoch = ts.epoch;
        tr->feed_index = ts.index;
    } else if ((s = lmc_loader_seek(&tr->train, ts.epoch, ts.index, err))) {
        return s;
    }
    struct lmc_st st;
    if (!lmc_path_join(path, sizeof path, dir, "optimizer.safetensors"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    if ((s = lmc_st_open_file(&st, path, err))) return s;
    const struct lmc_st_tensor *m = lmc_st_find(&st, "adamw.m"), *v = lmc_st_find(&st, "adamw.v");
    if (lmc_st_meta_get(&st, "lmc.optimizer") || !m || !v || m->dtype != LMC_DTYPE_F32 || v->dtype != LMC_DTYPE_F32 ||
        m->numel != full->numel || v->numel != full->numel) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected AdamW's F32 adamw.m and adamw.v of %lld elements (a "
                           "one-process or consolidated checkpoint)", path, (long long)full->numel);
    }
    const struct lmc_tmodel *tm = &tr->tm;
    int64_t t0 = tm->trainable_off;
    for (int i = 0; i < tm->n_params && !s; i++) { /* this rank's tensors' moments, by name */
        const struct lmc_tparam *p = &tm->params[i];
        if (p->external || p->frozen) continue;
        int f = lmc_tmodel_find(full, p->name);
        if (f < 0 || full->params[f].numel != p->numel) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: no tensor '%s' in the checkpoint's model", dir, p->name);
            break;
        }
        const float *mm = (const float *)m->data + full->params[f].off, *vv = (const float *)v->data + full->params[f].off;
        put(tr->be, tr->m, p->off - t0, mm, p->numel);
        put(tr->be, tr->v, p->off - t0, vv, p->numel);
    }
    lmc_st_free(&st);
    if (!s) tr->step = ts.step;
    return s;
}

/* ---- Adapter checkpoints: the one-process layout of the adapter's moments
 * (lora_train.c: each module's A then B, each padded to 16 floats, in the
 * adapter's module order), cut to and gathered from the modules a rank
 * adapts. */

static int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }

/* Floats of module m's A and B in the moments (padded). */
static int64_t mod_floats(const struct lmc_lora *lo, const struct lmc_lora_module *m) {
    return pad16(lo->cfg.r * m->in) + pad16(m->out * lo->cfg.r);
}

static bool adapts(const struct lmc_trainer_ep *e, const struct lmc_lora_module *m) {
    return m->expert < 0 || owner_of(&e->g, m->expert) == e->c->rank;
}

lmc_status lmc_trainer_ep_lora_ckpt_save(const struct lmc_trainer *tr, const struct lmc_lora_train *lt,
                                         struct lmc_lora *lo, struct lmc_lora *local, const char *dir,
                                         const char *tok_dir, int64_t epoch, int64_t next, lmc_err *err) {
    const struct lmc_trainer_ep *e = tr->ep;
    struct lmc_comm *c = e->c;
    const struct lmc_backend *be = tr->be;
    bool root = c->rank == 0;
    lmc_status s = lmc_lora_train_read(lt, &tr->tm, local, err);
    if (!s) s = lmc_trainer_ep_lora_gather(tr, lo, err);
    if (s) return s;
    int64_t n = 0, most = 1;
    for (int k = 0; k < lo->n_mods; k++) {
        n += mod_floats(lo, &lo->mods[k]);
        most = LMC_MAX(most, mod_floats(lo, &lo->mods[k]));
    }
    float *mv = root ? calloc(2 * (size_t)n + 1, sizeof(float)) : NULL, *buf = malloc(sizeof(float) * (size_t)most);
    if ((root && !mv) || !buf) s = lmc_err_set(err, LMC_ERR_OOM, "adapter checkpoint: out of memory");
    int64_t at = 0, mine = 0; /* the one-process offset, this rank's */
    for (int k = 0; k < lo->n_mods && !s; k++) {
        const struct lmc_lora_module *m = &lo->mods[k];
        int64_t nf = mod_floats(lo, m);
        int q = m->expert >= 0 ? owner_of(&e->g, m->expert) : 0; /* a layer module: rank 0's copy */
        for (int which = 0; which < 2 && !s; which++) { /* m, then v */
            float *arena = which ? tr->v : tr->m, *dst = root ? mv + which * n + at : NULL;
            if (root && q == 0) be->download(be->ctx, dst, arena + mine, (size_t)nf * sizeof(float));
            else if (root) s = c->recv(c, dst, (size_t)nf * sizeof(float), q, err);
            else if (c->rank == q) {
                be->download(be->ctx, buf, arena + mine, (size_t)nf * sizeof(float));
                s = c->send(c, buf, (size_t)nf * sizeof(float), 0, err);
            }
        }
        if (adapts(e, m)) mine += nf;
        at += nf;
    }
    free(buf);
    if (s || !root) {
        free(mv);
        return s;
    }
    /* rank 0: the folder as lmc_lora_ckpt_save writes it for one process (trainer_state.json last) */
    char path[4200], tmp[4300], state[512];
    s = lmc_lora_save(lo, dir, &tr->tm.cfg, tok_dir, err);
    if (!s) {
        snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        struct lmc_st_write_tensor t[2] = {{"adamw.m", LMC_DTYPE_F32, 1, {n}, mv}, {"adamw.v", LMC_DTYPE_F32, 1, {n}, mv + n}};
        s = lmc_st_write(tmp, t, 2, NULL, 0, err);
        if (!s && rename(tmp, path) != 0) s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    free(mv);
    if (s) return s;
    snprintf(state, sizeof state,
             "{\"step\": %lld, \"batch\": %lld, \"seq_len\": %lld, \"accum\": %lld, \"epoch\": %lld, "
             "\"example\": %lld, \"trainable\": %lld}\n",
             (long long)tr->step, (long long)tr->o.B, (long long)tr->o.T, (long long)(tr->o.accum * c->world),
             (long long)epoch, (long long)next, (long long)n); /* the one process's accumulation: N x accum */
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    return lmc_file_write_atomic(path, state, strlen(state), err);
}

static int64_t jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15 ? (int64_t)v->valuedouble : -1;
}

lmc_status lmc_trainer_ep_lora_load_state(struct lmc_trainer *tr, const struct lmc_lora *lo, const char *dir,
                                          int64_t *epoch, int64_t *next, lmc_err *err) {
    const struct lmc_trainer_ep *e = tr->ep;
    char path[4200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    lmc_status s = lmc_file_read(path, 1 << 20, &text, &len, err);
    if (s) return s;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    int64_t step = jint(o, "step"), B = jint(o, "batch"), T = jint(o, "seq_len"), ac = jint(o, "accum");
    int64_t n = jint(o, "trainable"), want = 0;
    *epoch = jint(o, "epoch");
    *next = jint(o, "example");
    cJSON_Delete(o);
    for (int k = 0; k < lo->n_mods; k++) want += mod_floats(lo, &lo->mods[k]);
    if (step < 0 || *epoch < 0 || *next < 0 || n < 0)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected step, epoch, example and trainable", path);
    int64_t gac = tr->o.accum * e->c->world; /* checkpoints hold the one process's accumulation */
    if (B != tr->o.B || T != tr->o.T || ac != gac || n != want)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with batch %lld x %lld x %lld accum (over all ranks) and %lld "
                           "trainable floats; resumed with %lld x %lld x %lld and %lld", path, (long long)B, (long long)T,
                           (long long)ac, (long long)n, (long long)tr->o.B, (long long)tr->o.T, (long long)gac,
                           (long long)want);
    struct lmc_st st;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if ((s = lmc_st_open_file(&st, path, err))) return s;
    const struct lmc_st_tensor *m = lmc_st_find(&st, "adamw.m"), *v = lmc_st_find(&st, "adamw.v");
    if (lmc_st_meta_get(&st, "lmc.optimizer") || !m || !v || m->dtype != LMC_DTYPE_F32 || v->dtype != LMC_DTYPE_F32 ||
        m->numel != want || v->numel != want) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected AdamW's F32 adamw.m and adamw.v of %lld floats", path,
                           (long long)want);
    }
    int64_t at = 0, mine = 0;
    for (int k = 0; k < lo->n_mods; k++) { /* this rank's modules' slices */
        int64_t nf = mod_floats(lo, &lo->mods[k]);
        if (adapts(e, &lo->mods[k])) {
            put(tr->be, tr->m, mine, (const float *)m->data + at, nf);
            put(tr->be, tr->v, mine, (const float *)v->data + at, nf);
            mine += nf;
        }
        at += nf;
    }
    lmc_st_free(&st);
    if (mine != tr->tm.numel - tr->tm.trainable_off)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: this rank's adapter holds %lld floats, its modules %lld", dir,
                           (long long)(tr->tm.numel - tr->tm.trainable_off), (long long)mine);
    tr->step = step;
    return LMC_OK;
}
