/* ep_model.c — expert-parallel inference and trainable models (see
 * ep_model.h): loading with this rank's expert span, pointing the block
 * weights at the group, and the gradient sum of the replicated tensors. */
#include "dist/ep_model.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lmc_ep_weights_attach(struct lmc_weights *w, int64_t L, struct lmc_ep_group *g) {
    for (int64_t l = 0; l < L; l++) {
        struct lmc_block_w *b = &w->layers[l];
        b->ep = g;
        for (int64_t e = 0; b->experts && e < g->E; e++)
            if (e < g->e0 || e >= g->e0 + g->ne)
                memset(&b->experts[e * LMC_X_N], 0, LMC_X_N * sizeof *b->experts);
    }
}

lmc_status lmc_ep_model_load(struct lmc_model *m, struct lmc_ep_group *g, const char *dir,
                             const struct lmc_model_opts *opts, struct lmc_comm *c, bool replicated,
                             lmc_err *err) {
    memset(m, 0, sizeof *m);
    memset(g, 0, sizeof *g);
    struct lmc_config cfg;
    lmc_status s = lmc_config_load(&cfg, dir, err);
    if (s) return s;
    if (cfg.num_experts <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "expert parallel: %s is a dense model (no num_experts in its config.json)", dir);
    if ((s = lmc_ep_group_init(g, c, cfg.num_experts, cfg.num_layers, replicated, err))) return s;
    if ((s = lmc_model_load_experts(m, dir, opts, g->e0, g->e0 + g->ne, err))) {
        lmc_ep_group_free(g);
        return s;
    }
    if (m->on_device) {
        lmc_model_free(m);
        lmc_ep_group_free(g);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "expert parallel: mixture-of-experts routing runs on the CPU "
                           "backend only so far");
    }
    lmc_ep_weights_attach(&m->w, m->cfg.num_layers, g);
    return LMC_OK;
}

bool lmc_ep_tparam_is_expert(const struct lmc_tparam *p) { return strstr(p->name, ".experts.") != NULL; }

lmc_status lmc_ep_tmodel_init(struct lmc_tmodel *tm, struct lmc_ep_group *g, const struct lmc_config *cfg,
                              struct lmc_comm *c, const struct lmc_backend *be, lmc_err *err) {
    memset(tm, 0, sizeof *tm);
    if (cfg->num_experts <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "expert parallel: the model is dense (num_experts 0)");
    lmc_status s = lmc_ep_group_init(g, c, cfg->num_experts, cfg->num_layers, false, err);
    if (s) return s;
    if ((s = lmc_tmodel_init_experts(tm, cfg, be, g->e0, g->e0 + g->ne, err))) {
        lmc_ep_group_free(g);
        return s;
    }
    lmc_ep_weights_attach(&tm->W, cfg->num_layers, g);
    lmc_ep_weights_attach(&tm->G, cfg->num_layers, g);
    return LMC_OK;
}

lmc_status lmc_ep_tmodel_shard(struct lmc_tmodel *tm, struct lmc_ep_group *g, const struct lmc_tmodel *full,
                               struct lmc_comm *c, const struct lmc_backend *be, lmc_err *err) {
    lmc_status s = lmc_ep_tmodel_init(tm, g, &full->cfg, c, be, err);
    if (s) return s;
    float *buf = NULL;
    for (int i = 0; !s && i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->external) continue;
        int f = lmc_tmodel_find(full, p->name);
        if (f < 0 || full->params[f].numel != p->numel) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "expert parallel: the full model has no tensor '%s' of %lld values",
                            p->name, (long long)p->numel);
            break;
        }
        float *nb = realloc(buf, sizeof(float) * (size_t)p->numel);
        if (!nb) {
            s = lmc_err_set(err, LMC_ERR_OOM, "expert parallel: out of memory for '%s'", p->name);
            break;
        }
        buf = nb;
        if (!(s = lmc_tmodel_download_param(full, full->w, f, buf, err))) s = lmc_tmodel_upload_param(tm, tm->w, i, buf, err);
    }
    free(buf);
    if (s) {
        lmc_tmodel_free(tm);
        lmc_ep_group_free(g);
    }
    return s;
}

lmc_status lmc_ep_tmodel_reduce_dense(struct lmc_tmodel *tm, struct lmc_ep_group *g, lmc_err *err) {
    if (g->c->world == 1) return LMC_OK;
    /* runs of arena-contiguous replicated tensors, one all-reduce each */
    int64_t run0 = -1, run1 = -1;
    lmc_status s = LMC_OK;
    for (int i = 0; i <= tm->n_params && !s; i++) {
        const struct lmc_tparam *p = i < tm->n_params ? &tm->params[i] : NULL;
        bool dense = p && !p->external && !p->frozen && p->off >= tm->g_off && !lmc_ep_tparam_is_expert(p);
        if (dense && run0 >= 0 && p->off == run1) {
            run1 = p->off + (p->numel + 15) / 16 * 16;
            continue;
        }
        if (run0 >= 0)
            s = g->c->all_reduce(g->c, tm->g + (run0 - tm->g_off), run1 - run0, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
        run0 = dense ? p->off : -1;
        run1 = dense ? p->off + (p->numel + 15) / 16 * 16 : -1;
    }
    return s;
}

lmc_status lmc_ep_tmodel_grad_norm(struct lmc_tmodel *tm, struct lmc_ep_group *g, double *norm, lmc_err *err) {
    double ss[2] = {0, 0}; /* replicated, experts */
    const struct lmc_backend *be = tm->be;
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->external || p->frozen || p->off < tm->g_off) continue;
        ss[lmc_ep_tparam_is_expert(p)] += be->sumsq(be->ctx, lmc_tmodel_grad(tm, p), p->numel);
    }
    lmc_status s = g->c->world > 1 ? g->c->all_reduce(g->c, &ss[1], 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err) : LMC_OK;
    *norm = s ? 0 : sqrt(ss[0] + ss[1]);
    return s;
}
