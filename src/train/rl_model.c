/* rl_model.c — per-token log-probabilities and their weighted backward on
 * the training model, and the inference view of its weights (see
 * rl_model.h). The backward reuses the fused classifier + cross-entropy
 * op one row at a time (loss = -logp, so a row's scale is -dlogp): no new
 * backend op, the full logits never materialise. */
#include "train/rl_model.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

lmc_status lmc_rl_fwd(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *inputs,
                      const int32_t *targets, float *logp, float *hidden, lmc_err *err) {
    return lmc_rl_fwd_temp(tm, a, inputs, targets, 1.0, logp, hidden, err);
}

/* a->hf *= f (host round trip: no backend op for a scale) */
static lmc_status scale_hf(struct lmc_tmodel *tm, struct lmc_tacts *a, float f, lmc_err *err) {
    size_t n = (size_t)(a->B * a->T * tm->cfg.hidden_size);
    float *h = malloc(n * sizeof(float));
    if (!h) return lmc_err_set(err, LMC_ERR_OOM, "rl forward: %zu bytes for the hidden states", n * sizeof(float));
    tm->be->download(tm->be->ctx, h, a->hf, n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] *= f;
    tm->be->upload(tm->be->ctx, a->hf, h, n * sizeof(float));
    free(h);
    return LMC_OK;
}

lmc_status lmc_rl_fwd_temp(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *inputs,
                           const int32_t *targets, double temp, float *logp, float *hidden, lmc_err *err) {
    double sum;
    int64_t count, M = a->B * a->T;
    lmc_status s = lmc_tmodel_step(tm, tm->be, a, inputs, targets, false, 1.0f, &sum, &count, err);
    if (s) return s;
    if (hidden)
        tm->be->download(tm->be->ctx, hidden, a->hf, (size_t)(M * tm->cfg.hidden_size) * sizeof(float));
    if (temp != 1.0) { /* logits / temp = (h / temp) W^T: the head has no bias; a->hf stays scaled for the backward */
        if ((s = scale_hf(tm, a, (float)(1.0 / temp), err))) return s;
        tm->be->classifier_xent(tm->be->ctx, a->loss, NULL, NULL, a->hf, &tm->W.head.w, a->targets, M, 1.0f);
        tm->be->download(tm->be->ctx, a->loss_host, a->loss, (size_t)M * sizeof(float));
    }
    for (int64_t i = 0; i < M; i++) logp[i] = targets[i] >= 0 ? -a->loss_host[i] : 0.0f;
    return LMC_OK;
}

lmc_status lmc_rl_bwd(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *targets,
                      const float *dlogp, const float *dhidden, lmc_err *err) {
    return lmc_rl_bwd_temp(tm, a, targets, 1.0, dlogp, dhidden, err);
}

lmc_status lmc_rl_bwd_temp(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *targets, double temp,
                           const float *dlogp, const float *dhidden, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    const struct lmc_config *c = &tm->cfg;
    const struct lmc_architecture *ar = tm->arch;
    int64_t C = c->hidden_size, M = a->B * a->T, L = c->num_layers;
    float eps = (float)c->norm_eps;
    lmc_status st = lmc_tmodel_check_backend(be, c, true, false, err);
    if (st) return st;
    be->zero(be->ctx, a->dh, (size_t)(M * C) * sizeof(float));
    float *dlm = (float *)tm->G.head.w.data;
    for (int64_t i = 0; i < M; i++) {
        if (targets[i] < 0 || dlogp[i] == 0.0f) continue;
        be->classifier_xent(be->ctx, a->loss + i, a->dh + i * C, dlm, a->hf + i * C, &tm->W.head.w,
                            a->targets + i, 1, -dlogp[i]);
    }
    if (dhidden || temp != 1.0) { /* dh was w.r.t. h / temp */
        size_t bytes = (size_t)(M * C) * sizeof(float);
        float *h = malloc(bytes);
        if (!h) return lmc_err_set(err, LMC_ERR_OOM, "rl backward: %zu bytes for the hidden gradient", bytes);
        be->download(be->ctx, h, a->dh, bytes);
        float f = (float)(1.0 / temp);
        if (temp != 1.0)
            for (int64_t i = 0; i < M * C; i++) h[i] *= f;
        if (dhidden)
            for (int64_t i = 0; i < M * C; i++) h[i] += dhidden[i];
        be->upload(be->ctx, a->dh, h, bytes);
        free(h);
    }
    struct lmc_run r = {.mode = LMC_RUN_TRAIN, .be = be, .cfg = c, .arch = ar, .n = M,
                        .rot_dim = tm->rot_dim, .pos = a->pos, .inv_freq = a->inv_freq,
                        .attn_scale = a->attn_scale, .tmp = a->tmp, .B = a->B, .T = a->T};
    be->zero(be->ctx, a->dx, (size_t)(M * C) * sizeof(float));
    ar->norm->bwd(be, a->dx, (float *)tm->G.norm_f, (float *)tm->G.norm_f_b, a->dh, a->xs[L],
                  tm->W.norm_f, M, C, eps);
    for (int64_t l = L - 1; l >= 0; l--) {
        const struct lmc_block_save *s = &a->saves[a->recompute ? 0 : l];
        LMC_ASSERT(!a->xs_host); /* offloaded checkpoints: lmc_tmodel_step only */
        if (a->xs16) be->convert(be->ctx, a->xs[l], LMC_DTYPE_F32, a->xs16[l], LMC_DTYPE_BF16, M * C);
        if (a->recompute) lmc_block_fwd(&r, l, &tm->W.layers[l], s, a->xs[l], a->tmp);
        lmc_block_bwd(&r, l, &tm->W.layers[l], &tm->G.layers[l], s, a->xs[l], a->dx, a->dh, a->scratch);
    }
    if (tm->G.tok_emb.data) /* NULL: a frozen embedding (LoRA) */
        be->embed_bwd(be->ctx, (float *)tm->G.tok_emb.data, a->dx, a->ids, M, C);
    if (tm->G.pos_emb.data) be->embed_bwd(be->ctx, (float *)tm->G.pos_emb.data, a->dx, a->pos, M, C);
    return LMC_OK;
}

void lmc_rl_model_view(struct lmc_model *m, const struct lmc_tmodel *tm) {
    memset(m, 0, sizeof *m);
    m->cfg = tm->cfg;
    m->arch = tm->arch;
    m->w = tm->W;
    m->rot_dim = tm->rot_dim;
    m->n_params = tm->numel;
    m->weight_bytes = (size_t)tm->numel * sizeof(float);
    m->wdtype = LMC_WDTYPE_F32;
    m->on_device = !tm->be->host_memory;
}
