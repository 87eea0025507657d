/* pp_model.c — a model-layer pipeline stage's chunks, forward and backward
 * per micro-batch (see pp_model.h): the blocks of a chunk's layers through
 * lmc_block_fwd / lmc_block_bwd, as lmc_tmodel_step runs them, on an
 * activation arena of the stage's pool. */
#include "dist/pp_model.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

void lmc_pp_stage_keep(const int64_t *bounds, int64_t L, bool tied, int P, int V, int rank, bool *keep) {
    memset(keep, 0, (size_t)(L + 2) * sizeof *keep);
    for (int v = 0; v < V; v++) {
        int64_t l0, l1;
        lmc_pp_chunk_layers(bounds, P, V, rank, v, &l0, &l1);
        for (int64_t l = l0; l < l1; l++) keep[l + 1] = true;
    }
    keep[0] = rank == 0 || (tied && rank == P - 1);
    keep[L + 1] = rank == P - 1;
}

lmc_status lmc_pp_tstage_init(struct lmc_pp_tstage *s, struct lmc_tmodel *tm,
                              const struct lmc_backend *be, int rank, int P, int M, int64_t B,
                              int64_t T, lmc_err *err) {
    return lmc_pp_tstage_init_v(s, tm, be, rank, P, 1, M, B, T, err);
}

lmc_status lmc_pp_tstage_init_v(struct lmc_pp_tstage *s, struct lmc_tmodel *tm, const struct lmc_backend *be,
                                int rank, int P, int V, int M, int64_t B, int64_t T, lmc_err *err) {
    return lmc_pp_tstage_init_split(s, tm, be, NULL, rank, P, V, M, B, T, err);
}

lmc_status lmc_pp_tstage_init_split(struct lmc_pp_tstage *s, struct lmc_tmodel *tm, const struct lmc_backend *be,
                                    const int64_t *bounds, int rank, int P, int V, int M, int64_t B, int64_t T,
                                    lmc_err *err) {
    memset(s, 0, sizeof *s);
    const struct lmc_config *c = &tm->cfg;
    int64_t L = c->num_layers;
    if (P < 1 || rank < 0 || rank >= P || M < 1 || M > (1 << 16) || V < 1 || V > 4096)
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: stage %d of %d, %d chunks, %d micro-batches", rank, P, V, M);
    lmc_status st = lmc_pp_interleaved_check(P, M, V, err);
    if (st) return st;
    if (L < (int64_t)P * V)
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline: %lld layers do not fill %d stages x %d chunks", (long long)L, P, V);
    int K = P * V;
    s->bounds = malloc(sizeof *s->bounds * (size_t)(K + 1));
    if (!s->bounds) return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory");
    if (bounds) {
        memcpy(s->bounds, bounds, sizeof *s->bounds * (size_t)(K + 1));
        for (int k = 0; !st && k < K; k++)
            if (bounds[0] != 0 || bounds[K] != L || bounds[k + 1] <= bounds[k])
                st = lmc_err_set(err, LMC_ERR_ARG, "pipeline: the split is not %d non-empty chunks of %lld layers", K,
                                 (long long)L);
    } else {
        st = lmc_pp_split_plan(&tm->cfg, P, V, NULL, s->bounds, err);
    }
    if (st) {
        lmc_pp_tstage_free(s);
        return st;
    }
    /* the tensors the stage reads must be in tm (a stage's part, or the whole model) */
    bool *keep = malloc((size_t)(L + 2) * sizeof *keep);
    if (!keep) {
        lmc_pp_tstage_free(s);
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory");
    }
    lmc_pp_stage_keep(s->bounds, L, tm->tied_head, P, V, rank, keep);
    for (int i = 0; i < tm->n_params; i++)
        if (tm->params[i].elsewhere && keep[tm->params[i].part]) {
            st = lmc_err_set(err, LMC_ERR_ARG, "pipeline stage %d of %d: the model lacks %s", rank, P,
                             tm->params[i].name);
            break;
        }
    free(keep);
    if (st) {
        lmc_pp_tstage_free(s);
        return st;
    }
    s->tm = tm, s->be = be, s->B = B, s->T = T, s->M = M, s->V = V, s->P = P, s->rank = rank;
    s->first = rank == 0, s->last = rank == P - 1;
    s->dscale = 1.0f;
    s->ch = calloc((size_t)V, sizeof *s->ch);
    s->slot = malloc(sizeof *s->slot * (size_t)V * (size_t)M);
    s->n_acts = lmc_pp_interleaved_live(P, rank, M, V);
    s->acts = calloc((size_t)s->n_acts, sizeof *s->acts);
    s->pool = malloc(sizeof *s->pool * (size_t)s->n_acts);
    if (!s->ch || !s->slot || !s->acts || !s->pool) {
        lmc_pp_tstage_free(s);
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline: out of memory");
    }
    int64_t most = 1;
    for (int v = 0; v < V; v++) {
        struct lmc_pp_chunk *h = &s->ch[v];
        lmc_pp_chunk_layers(s->bounds, P, V, rank, v, &h->l0, &h->l1);
        h->first = v == 0 && rank == 0;
        h->last = v == V - 1 && rank == P - 1;
        most = LMC_MAX(most, h->l1 - h->l0);
    }
    s->l0 = s->ch[0].l0, s->l1 = s->ch[0].l1;
    for (int i = 0; i < V * M; i++) s->slot[i] = -1;
    /* the arenas alive at once under the schedule, each for the largest chunk */
    for (int i = 0; i < s->n_acts; i++) {
        if ((st = lmc_tacts_init_layers(&s->acts[i], tm, be, most, B, T, false, err))) {
            lmc_pp_tstage_free(s);
            return st;
        }
        s->pool[s->n_free++] = s->n_acts - 1 - i;
    }
    return LMC_OK;
}

void lmc_pp_tstage_free(struct lmc_pp_tstage *s) {
    if (s->acts)
        for (int i = 0; i < s->n_acts; i++)
            if (s->acts[i].arena) lmc_tacts_free(&s->acts[i]);
    free(s->acts), free(s->ch), free(s->slot), free(s->pool), free(s->bounds);
    memset(s, 0, sizeof *s);
}

static struct lmc_run run_of(const struct lmc_pp_tstage *s, const struct lmc_tacts *a) {
    return (struct lmc_run){.mode = LMC_RUN_TRAIN, .be = s->be, .cfg = &s->tm->cfg, .arch = s->tm->arch,
                            .n = s->B * s->T, .rot_dim = s->tm->rot_dim, .pos = a->pos,
                            .inv_freq = a->inv_freq, .attn_scale = a->attn_scale, .tmp = a->tmp,
                            .B = s->B, .T = s->T, .cp = a->cp};
}

/* Chunk v's forward of one micro-batch on arena a; with grad, the last
 * chunk's classifier also leaves dh and the head's gradient. */
static lmc_status chunk_fwd(struct lmc_pp_tstage *s, struct lmc_tacts *a, int v, int mb, const int32_t *ids,
                            const int32_t *tg, const void *in, void *out, bool grad, double *sum, int64_t *cnt,
                            lmc_err *err) {
    struct lmc_tmodel *tm = s->tm;
    const struct lmc_backend *be = s->be;
    const struct lmc_pp_chunk *h = &s->ch[v];
    const struct lmc_config *c = &tm->cfg;
    int64_t n = s->B * s->T, C = c->hidden_size, V = c->vocab_size, nl = h->l1 - h->l0;
    struct lmc_run r = run_of(s, a);
    if (h->first) {
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V)
                return lmc_err_set(err, LMC_ERR_ARG, "token id out of range (vocabulary %lld) at %lld of micro-batch %d",
                                   (long long)V, (long long)i, mb);
        be->upload(be->ctx, a->ids, ids, (size_t)n * sizeof(int32_t));
        lmc_weights_embed(be, &tm->W, a->xs[0], a->ids, a->pos, n, a->tmp);
    } else {
        be->upload(be->ctx, a->xs[0], in, (size_t)(n * C) * sizeof(float));
    }
    for (int64_t l = h->l0; l < h->l1; l++)
        lmc_block_fwd(&r, l, &tm->W.layers[l], &a->saves[l - h->l0], a->xs[l - h->l0], a->xs[l - h->l0 + 1]);
    if (!h->last) {
        be->download(be->ctx, out, a->xs[nl], (size_t)(n * C) * sizeof(float));
        return LMC_OK;
    }
    for (int64_t i = 0; i < n; i++)
        if (tg[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "target id out of range (vocabulary %lld) at %lld of micro-batch %d",
                               (long long)V, (long long)i, mb);
    be->upload(be->ctx, a->targets, tg, (size_t)n * sizeof(int32_t));
    tm->arch->norm->fwd(be, a->hf, a->xs[nl], tm->W.norm_f, tm->W.norm_f_b, n, C, (float)c->norm_eps);
    be->classifier_xent(be->ctx, a->loss, grad ? a->dh : NULL, grad ? (float *)tm->G.head.w.data : NULL, a->hf,
                        &tm->W.head.w, a->targets, n, s->dscale);
    be->download(be->ctx, a->loss_host, a->loss, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        if (tg[i] >= 0) *sum += a->loss_host[i], (*cnt)++;
    return LMC_OK;
}

static lmc_status vfwd(void *user, int v, int mb, const void *in, void *out, lmc_err *err) {
    struct lmc_pp_tstage *s = user;
    LMC_ASSERT(v >= 0 && v < s->V && mb >= 0 && mb < s->M && s->slot[v * s->M + mb] < 0 && s->n_free > 0);
    int k = s->pool[--s->n_free];
    s->slot[v * s->M + mb] = k;
    int64_t n = s->B * s->T;
    return chunk_fwd(s, &s->acts[k], v, mb, s->inputs + (int64_t)mb * n, s->targets + (int64_t)mb * n, in, out, true,
                     &s->loss_sum, &s->count, err);
}

static lmc_status vbwd(void *user, int v, int mb, const void *dout, void *din, lmc_err *err) {
    (void)err;
    struct lmc_pp_tstage *s = user;
    int k = s->slot[v * s->M + mb];
    LMC_ASSERT(k >= 0);
    struct lmc_tacts *a = &s->acts[k];
    struct lmc_tmodel *tm = s->tm;
    const struct lmc_backend *be = s->be;
    const struct lmc_pp_chunk *h = &s->ch[v];
    const struct lmc_config *c = &tm->cfg;
    int64_t n = s->B * s->T, C = c->hidden_size, nl = h->l1 - h->l0;
    struct lmc_run r = run_of(s, a);
    if (h->last) {
        be->zero(be->ctx, a->dx, (size_t)(n * C) * sizeof(float));
        tm->arch->norm->bwd(be, a->dx, (float *)tm->G.norm_f, (float *)tm->G.norm_f_b, a->dh, a->xs[nl],
                            tm->W.norm_f, n, C, (float)c->norm_eps);
    } else {
        be->upload(be->ctx, a->dx, dout, (size_t)(n * C) * sizeof(float));
    }
    for (int64_t l = h->l1 - 1; l >= h->l0; l--)
        lmc_block_bwd(&r, l, &tm->W.layers[l], &tm->G.layers[l], &a->saves[l - h->l0], a->xs[l - h->l0], a->dx,
                      a->dh, a->scratch);
    if (!h->first) be->download(be->ctx, din, a->dx, (size_t)(n * C) * sizeof(float));
    else {
        if (tm->G.tok_emb.data) /* NULL: a frozen embedding (LoRA) */
            be->embed_bwd(be->ctx, (float *)tm->G.tok_emb.data, a->dx, a->ids, n, C);
        if (tm->G.pos_emb.data) be->embed_bwd(be->ctx, (float *)tm->G.pos_emb.data, a->dx, a->pos, n, C);
    }
    s->slot[v * s->M + mb] = -1;
    s->pool[s->n_free++] = k;
    return LMC_OK;
}

static lmc_status stage_fwd(void *user, int mb, const void *in, void *out, lmc_err *err) {
    return vfwd(user, 0, mb, in, out, err);
}
static lmc_status stage_bwd(void *user, int mb, const void *dout, void *din, lmc_err *err) {
    return vbwd(user, 0, mb, dout, din, err);
}

static size_t act_bytes(const struct lmc_pp_tstage *s) {
    return sizeof(float) * (size_t)(s->B * s->T * s->tm->cfg.hidden_size);
}

struct lmc_pp_stage lmc_pp_tstage_ops(struct lmc_pp_tstage *s) {
    LMC_ASSERT(s->V == 1);
    size_t act = act_bytes(s);
    return (struct lmc_pp_stage){s, s->first ? 0 : act, s->last ? 0 : act, stage_fwd, stage_bwd};
}

struct lmc_pp_vstage lmc_pp_tstage_vops(struct lmc_pp_tstage *s) {
    return (struct lmc_pp_vstage){s, s->V, act_bytes(s), vfwd, vbwd};
}

lmc_status lmc_pp_tstage_eval(struct lmc_pp_tstage *s, struct lmc_comm *c, const int32_t *inputs,
                              const int32_t *targets, double *sum, int64_t *count, lmc_err *err) {
    *sum = 0, *count = 0;
    LMC_ASSERT(s->n_free == s->n_acts && c->world == s->P && c->rank == s->rank);
    size_t ab = act_bytes(s);
    void *in = malloc(ab), *out = malloc(ab);
    lmc_status st = in && out ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "pipeline evaluation: out of memory");
    int P = s->P;
    for (int v = 0; !st && v < s->V; v++) { /* model chunk v P + rank: from the previous rank, to the next */
        const struct lmc_pp_chunk *h = &s->ch[v];
        if (!h->first && P > 1 && (st = c->recv(c, in, ab, (s->rank + P - 1) % P, err))) break;
        if (!h->first && P == 1) memcpy(in, out, ab);
        if ((st = chunk_fwd(s, &s->acts[0], v, 0, inputs, targets, in, out, false, sum, count, err))) break;
        if (!h->last && P > 1) st = c->send(c, out, ab, (s->rank + 1) % P, err);
    }
    free(in), free(out);
    return st;
}
