/* pp_model.c — a model-layer pipeline stage's forward and backward per
 * micro-batch (see pp_model.h): the blocks of its layers through
 * lmc_block_fwd / lmc_block_bwd, as lmc_tmodel_step runs them. */
#include "dist/pp_model.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

lmc_status lmc_pp_tstage_init(struct lmc_pp_tstage *s, struct lmc_tmodel *tm,
                              const struct lmc_backend *be, int rank, int P, int M, int64_t B,
                              int64_t T, lmc_err *err) {
    memset(s, 0, sizeof *s);
    const struct lmc_config *c = &tm->cfg;
    if (P < 1 || rank < 0 || rank >= P || M < 1 || M > (1 << 16))
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: stage %d of %d, %d micro-batches", rank, P, M);
    if (c->num_layers < P)
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: %lld layers do not fill %d stages", (long long)c->num_layers, P);
    if (P > 1 && c->tie_word_embeddings)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "pipeline: tied embeddings across stages are not supported yet");
    lmc_dist_slice(c->num_layers, rank, P, &s->l0, &s->l1);
    s->l1 += s->l0;
    s->tm = tm, s->be = be, s->B = B, s->T = T, s->M = M;
    s->first = rank == 0, s->last = rank == P - 1;
    s->dscale = 1.0f;
    /* 1F1B keeps at most min(P - rank, M) micro-batches alive on this stage,
     * and runs their backwards in the order of their forwards: micro-batch
     * mb's arena is mb mod that (mb - n_acts finished its backward before
     * mb's forward starts) */
    s->n_acts = P - rank < M ? P - rank : M;
    s->acts = calloc((size_t)s->n_acts, sizeof *s->acts);
    if (!s->acts) return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory");
    for (int i = 0; i < s->n_acts; i++) {
        lmc_status st = lmc_tacts_init(&s->acts[i], tm, be, B, T, false, err);
        if (st) {
            lmc_pp_tstage_free(s);
            return st;
        }
    }
    return LMC_OK;
}

void lmc_pp_tstage_free(struct lmc_pp_tstage *s) {
    if (s->acts)
        for (int i = 0; i < s->n_acts; i++)
            if (s->acts[i].arena) lmc_tacts_free(&s->acts[i]);
    free(s->acts);
    memset(s, 0, sizeof *s);
}

static struct lmc_run run_of(const struct lmc_pp_tstage *s, const struct lmc_tacts *a) {
    return (struct lmc_run){.mode = LMC_RUN_TRAIN, .be = s->be, .cfg = &s->tm->cfg, .arch = s->tm->arch,
                            .n = s->B * s->T, .rot_dim = s->tm->rot_dim, .pos = a->pos,
                            .inv_freq = a->inv_freq, .attn_scale = a->attn_scale, .tmp = a->tmp,
                            .B = s->B, .T = s->T};
}

static lmc_status stage_fwd(void *user, int mb, const void *in, void *out, lmc_err *err) {
    struct lmc_pp_tstage *s = user;
    struct lmc_tmodel *tm = s->tm;
    const struct lmc_backend *be = s->be;
    struct lmc_tacts *a = &s->acts[mb % s->n_acts];
    const struct lmc_config *c = &tm->cfg;
    int64_t n = s->B * s->T, C = c->hidden_size, V = c->vocab_size;
    const int32_t *ids = s->inputs + (int64_t)mb * n, *tg = s->targets + (int64_t)mb * n;
    struct lmc_run r = run_of(s, a);
    if (s->first) {
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V)
                return lmc_err_set(err, LMC_ERR_ARG, "token id out of range (vocabulary %lld) at %lld of micro-batch %d",
                                   (long long)V, (long long)i, mb);
        be->upload(be->ctx, a->ids, ids, (size_t)n * sizeof(int32_t));
        lmc_weights_embed(be, &tm->W, a->xs[0], a->ids, a->pos, n, a->tmp);
    } else {
        be->upload(be->ctx, a->xs[s->l0], in, (size_t)(n * C) * sizeof(float));
    }
    for (int64_t l = s->l0; l < s->l1; l++) lmc_block_fwd(&r, l, &tm->W.layers[l], &a->saves[l], a->xs[l], a->xs[l + 1]);
    if (!s->last) {
        be->download(be->ctx, out, a->xs[s->l1], (size_t)(n * C) * sizeof(float));
        return LMC_OK;
    }
    for (int64_t i = 0; i < n; i++)
        if (tg[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "target id out of range (vocabulary %lld) at %lld of micro-batch %d",
                               (long long)V, (long long)i, mb);
    be->upload(be->ctx, a->targets, tg, (size_t)n * sizeof(int32_t));
    int64_t L = c->num_layers;
    tm->arch->norm->fwd(be, a->hf, a->xs[L], tm->W.norm_f, tm->W.norm_f_b, n, C, (float)c->norm_eps);
    be->classifier_xent(be->ctx, a->loss, a->dh, (float *)tm->G.head.w.data, a->hf, &tm->W.head.w, a->targets, n,
                        s->dscale);
    be->download(be->ctx, a->loss_host, a->loss, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        if (tg[i] >= 0) s->loss_sum += a->loss_host[i], s->count++;
    return LMC_OK;
}

static lmc_status stage_bwd(void *user, int mb, const void *dout, void *din, lmc_err *err) {
    (void)err;
    struct lmc_pp_tstage *s = user;
    struct lmc_tmodel *tm = s->tm;
    const struct lmc_backend *be = s->be;
    struct lmc_tacts *a = &s->acts[mb % s->n_acts];
    const struct lmc_config *c = &tm->cfg;
    int64_t n = s->B * s->T, C = c->hidden_size, L = c->num_layers;
    struct lmc_run r = run_of(s, a);
    if (s->last) {
        be->zero(be->ctx, a->dx, (size_t)(n * C) * sizeof(float));
        tm->arch->norm->bwd(be, a->dx, (float *)tm->G.norm_f, (float *)tm->G.norm_f_b, a->dh, a->xs[L],
                            tm->W.norm_f, n, C, (float)c->norm_eps);
    } else {
        be->upload(be->ctx, a->dx, dout, (size_t)(n * C) * sizeof(float));
    }
    for (int64_t l = s->l1 - 1; l >= s->l0; l--)
        lmc_block_bwd(&r, l, &tm->W.layers[l], &tm->G.layers[l], &a->saves[l], a->xs[l], a->dx, a->dh, a->scratch);
    if (!s->first) {
        be->download(be->ctx, din, a->dx, (size_t)(n * C) * sizeof(float));
        return LMC_OK;
    }
    be->embed_bwd(be->ctx, (float *)tm->G.tok_emb.data, a->dx, a->ids, n, C);
    if (tm->G.pos_emb.data) be->embed_bwd(be->ctx, (float *)tm->G.pos_emb.data, a->dx, a->pos, n, C);
    return LMC_OK;
}

struct lmc_pp_stage lmc_pp_tstage_ops(struct lmc_pp_tstage *s) {
    size_t act = sizeof(float) * (size_t)(s->B * s->T * s->tm->cfg.hidden_size);
    return (struct lmc_pp_stage){s, s->first ? 0 : act, s->last ? 0 : act, stage_fwd, stage_bwd};
}
