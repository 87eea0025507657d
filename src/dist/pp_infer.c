/* pp_infer.c — pipeline-parallel inference stages (see pp_infer.h): the
 * layer split (pp_split.h), the stage's load and model view, and the
 * activation/logits transfers the forwards make between stages. */
#include "dist/pp_infer.h"
#include "core/core.h"
#include "dist/comm.h"
#include "io/gguf.h"

#include <stdlib.h>
#include <string.h>

lmc_status lmc_pp_infer_plan(const struct lmc_config *c, int P, int64_t *bounds, lmc_err *err) {
    return lmc_pp_split_plan(c, P, 1, NULL, bounds, err);
}

int64_t lmc_pp_infer_stage_params(const struct lmc_config *c, const int64_t *bounds, int P, int s) {
    struct lmc_pp_costs k;
    lmc_err err = {0};
    if (lmc_pp_costs_init(&k, c, &err)) return -1;
    (void)P;
    int64_t p = lmc_pp_costs_chunk(&k, bounds[s], bounds[s + 1]);
    lmc_pp_costs_free(&k);
    return p;
}

lmc_status lmc_pp_infer_load(struct lmc_pp_infer *p, struct lmc_model *m, const char *dir,
                             const struct lmc_model_opts *o, struct lmc_comm *c, int tp, int micro,
                             const char *layers, lmc_err *err) {
    memset(p, 0, sizeof *p);
    memset(m, 0, sizeof *m);
    if (o->be && !o->be->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "pipeline stages run on the CPU for now (backend %s)",
                           o->be->name);
    if (lmc_gguf_is_file(dir))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: GGUF files are not split into pipeline stages yet (give a "
                           "safetensors folder)", dir);
    struct lmc_config cfg;
    lmc_status st = lmc_config_load(&cfg, dir, err);
    if (!st) st = lmc_config_check_sizes(&cfg, err);
    if (st) return st;
    if (cfg.num_experts > 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "mixtures of experts are not split into pipeline stages "
                           "yet (%s has %lld experts a layer)", dir, (long long)cfg.num_experts);
    if (tp < 1 || c->world % tp)
        return lmc_err_set(err, LMC_ERR_ARG, "%d ranks do not form stages of %d tensor-parallel ranks", c->world, tp);
    int P = c->world / tp;
    int64_t *bounds = malloc(sizeof(int64_t) * (size_t)(P + 1));
    if (!bounds) return lmc_err_set(err, LMC_ERR_OOM, "pipeline stages: out of memory");
    st = lmc_pp_split_plan(&cfg, P, 1, layers, bounds, err);
    p->c = c;
    p->stage = c->rank / tp;
    p->n_stages = P;
    p->tp = tp;
    if (!st) p->l0 = bounds[p->stage], p->l1 = bounds[p->stage + 1];
    free(bounds);
    if (st) return st;
    p->micro = micro > 0 ? micro : LMC_MAX(2, P);
    p->own.c = c;
    p->g = &p->own;
    if ((st = lmc_model_load_layers(m, dir, o, p->l0, p->l1, err))) return st;
    if (lmc_model_seq_slot_bytes(m) > 0) {
        lmc_model_free(m);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: recurrent models are not split into pipeline stages yet", dir);
    }
    p->cut = malloc(sizeof(int64_t) * (size_t)(p->micro + 1));
    if (!p->cut) {
        lmc_model_free(m);
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline stages: out of memory");
    }
    p->view = *m; /* shares m's buffers; never freed itself */
    p->view.cfg.num_layers = p->l1 - p->l0;
    p->view.w.layers = m->w.layers + p->l0;
    p->view.w.pipe = p;
    return LMC_OK;
}

void lmc_pp_infer_free(struct lmc_pp_infer *p) {
    free(p->cut);
    free(p->prm);
    free(p->ids);
    memset(p, 0, sizeof *p);
}

lmc_status lmc_pp_infer_check(struct lmc_pp_infer *p, lmc_err *err) {
    lmc_status st = p->g->st;
    if (st) {
        *err = p->g->err;
        p->g->st = LMC_OK;
    }
    return st;
}

void lmc_pp_infer_recv_x(struct lmc_pp_infer *p, float *x, int64_t rows, int64_t C) {
    struct lmc_tp_group *g = p->g;
    if (!g->st && p->stage > 0)
        g->st = p->c->recv(p->c, x, (size_t)(rows * C) * sizeof(float), p->c->rank - p->tp, &g->err);
}

void lmc_pp_infer_send_x(struct lmc_pp_infer *p, const float *x, int64_t rows, int64_t C) {
    struct lmc_tp_group *g = p->g;
    if (!g->st && p->stage < p->n_stages - 1)
        g->st = p->c->send(p->c, x, (size_t)(rows * C) * sizeof(float), p->c->rank + p->tp, &g->err);
}

void lmc_pp_infer_bcast(struct lmc_pp_infer *p, float *buf, int64_t n) {
    struct lmc_tp_group *g = p->g;
    if (!g->st)
        g->st = p->c->broadcast(p->c, buf, (size_t)n * sizeof(float), (p->n_stages - 1) * p->tp, &g->err);
}

bool lmc_pp_infer_has_logits(const struct lmc_pp_infer *p) {
    return p->c->rank == 0 || p->stage == p->n_stages - 1;
}

void lmc_pp_infer_to_rank0(struct lmc_pp_infer *p, float *buf, int64_t n) {
    struct lmc_tp_group *g = p->g;
    int from = (p->n_stages - 1) * p->tp;
    if (g->st || from == 0 || n == 0) return;
    if (p->c->rank == from) g->st = p->c->send(p->c, buf, (size_t)n * sizeof(float), 0, &g->err);
    else if (p->c->rank == 0) g->st = p->c->recv(p->c, buf, (size_t)n * sizeof(float), from, &g->err);
}

void lmc_pp_infer_want(struct lmc_pp_infer *p, int32_t *mode, const struct lmc_sample_row **params, int64_t n) {
    struct lmc_tp_group *g = p->g;
    int from = (p->n_stages - 1) * p->tp;
    if (g->st || from == 0 || n <= 0) return;
    size_t pb = (size_t)n * sizeof(struct lmc_sample_row);
    if (p->c->rank == 0) {
        g->st = p->c->send(p->c, mode, sizeof *mode, from, &g->err);
        if (!g->st && *mode == LMC_PP_WANT_SAMPLE) g->st = p->c->send(p->c, *params, pb, from, &g->err);
    } else if (p->c->rank == from) {
        g->st = p->c->recv(p->c, mode, sizeof *mode, 0, &g->err);
        if (!g->st && (*mode < LMC_PP_WANT_LOGITS || *mode > LMC_PP_WANT_SAMPLE))
            g->st = lmc_err_set(&g->err, LMC_ERR_FORMAT, "pipeline: rank 0 asked for result %d", (int)*mode);
        if (!g->st && *mode == LMC_PP_WANT_SAMPLE && lmc_pp_infer_ids(p, n)) {
            g->st = p->c->recv(p->c, p->prm, pb, 0, &g->err);
            *params = p->prm;
        }
    }
}

int32_t *lmc_pp_infer_ids(struct lmc_pp_infer *p, int64_t n) {
    if (n > p->cap) {
        int32_t *ids = realloc(p->ids, sizeof(int32_t) * (size_t)n);
        if (ids) p->ids = ids;
        struct lmc_sample_row *prm = ids ? realloc(p->prm, sizeof *prm * (size_t)n) : NULL;
        if (prm) p->prm = prm;
        if (!ids || !prm) {
            if (!p->g->st) p->g->st = lmc_err_set(&p->g->err, LMC_ERR_OOM, "pipeline: %lld ids: out of memory", (long long)n);
            return NULL;
        }
        p->cap = n;
    }
    return p->ids;
}

void lmc_pp_infer_ids_to_rank0(struct lmc_pp_infer *p, int32_t *ids, int64_t n) {
    struct lmc_tp_group *g = p->g;
    int from = (p->n_stages - 1) * p->tp;
    if (g->st || !ids || from == 0 || n == 0) return;
    if (p->c->rank == from) g->st = p->c->send(p->c, ids, (size_t)n * sizeof(int32_t), 0, &g->err);
    else if (p->c->rank == 0) g->st = p->c->recv(p->c, ids, (size_t)n * sizeof(int32_t), from, &g->err);
}

int lmc_pp_infer_cuts(struct lmc_pp_infer *p, const int32_t *seq, int64_t n_tokens) {
    int k = 0;
    p->cut[0] = 0;
    bool sorted = true;
    for (int64_t i = 1; i < n_tokens; i++) sorted = sorted && seq[i] >= seq[i - 1];
    if (sorted && p->micro > 1) {
        int64_t i = 0;
        for (int j = 1; j < p->micro && i < n_tokens; j++) {
            int64_t target = n_tokens * j / p->micro;
            if (target <= p->cut[k]) continue;
            i = target;
            while (i < n_tokens && seq[i] == seq[i - 1]) i++; /* to the next sequence's first token */
            if (i < n_tokens && i > p->cut[k]) p->cut[++k] = i;
        }
    }
    p->cut[++k] = n_tokens;
    p->steps++;
    p->micro_batches += k;
    return k;
}
