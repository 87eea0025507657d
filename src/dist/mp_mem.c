/* mp_mem.c — per-rank memory of a tensor x pipeline x context layout (see
 * mp_mem.h): the rank's local config walked through the architecture's
 * tensor table over the pipeline's split, and the training activation
 * arena's size, for each stage: the largest reported. */
#include "dist/mp_mem.h"
#include "dist/tp.h"
#include "dist/pp.h"
#include "dist/pp_model.h"
#include "model/backward.h"

#include <stdlib.h>
#include <string.h>

struct count {
    int64_t *per_layer;       /* (L) each layer's */
    int64_t layer, pre, post; /* the layers'; the tensors before them (embeddings), after them (norm, head) */
    bool head;                /* an untied head */
};

static lmc_status add(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct count *n = user;
    if (!t->required) return LMC_OK;
    if (t->layer >= 0) n->layer += t->numel, n->per_layer[t->layer] += t->numel;
    else if (n->layer) n->post += t->numel;
    else n->pre += t->numel;
    if (t->layer < 0 && t->spec->kind == LMC_TK_HEAD) n->head = true;
    return LMC_OK;
}

lmc_status lmc_mp_mem(const struct lmc_config *c, const struct lmc_mp_layout *l, struct lmc_mp_mem *m,
                      lmc_err *err) {
    memset(m, 0, sizeof *m);
    if (l->tp < 1 || l->pp < 1 || l->cp < 1 || l->tp > 4096 || l->pp > 4096 || l->cp > 4096 ||
        l->micro_batch < 1 || l->seq < 1 || l->micro_batches < 1 || l->seq > ((int64_t)1 << 32) ||
        l->micro_batch > (1 << 20))
        return lmc_err_set(err, LMC_ERR_ARG, "layout: tp %d, pp %d, cp %d, batch %lld, seq %lld, micro-batches %d out of range",
                           l->tp, l->pp, l->cp, (long long)l->micro_batch, (long long)l->seq, l->micro_batches);
    struct lmc_tp_heads h;
    lmc_status st = lmc_tp_plan_heads(c->num_heads, c->num_kv_heads, l->tp, 0, &h, err);
    if (st) return st;
    if (c->intermediate_size < l->tp)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: intermediate_size %lld does not split in %d",
                           (long long)c->intermediate_size, l->tp);
    int V = l->chunks > 1 ? l->chunks : 1, P = l->pp;
    if (V > 4096 || c->num_layers < (int64_t)P * V)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: %lld layers do not fill %d pipeline stages x %d chunks",
                           (long long)c->num_layers, P, V);
    if ((st = lmc_pp_interleaved_check(P, l->micro_batches, V, err))) return st;
    if (l->seq < l->cp)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: a sequence of %lld tokens does not split in %d",
                           (long long)l->seq, l->cp);
    struct lmc_config lc = *c;
    lc.num_heads = h.nq, lc.num_kv_heads = h.nkv;
    lc.intermediate_size = (c->intermediate_size + l->tp - 1) / l->tp;
    if (l->vocab) lc.vocab_size = (c->vocab_size + l->tp - 1) / l->tp;
    /* the split lmc train --pp runs (of the whole model, pp_split.h), the rank's shard of each layer */
    int64_t *bounds = malloc(sizeof *bounds * (size_t)(P * V + 1));
    struct count n = {calloc((size_t)c->num_layers, sizeof(int64_t)), 0, 0, 0, false};
    if (!bounds || !n.per_layer) st = lmc_err_set(err, LMC_ERR_OOM, "layout: out of memory");
    if (!st) st = lmc_pp_split_plan(c, P, V, l->pp_layers, bounds, err);
    if (!st) st = lmc_arch_walk(lmc_arch_of(&lc), &lc, add, &n, err);
    int64_t T = (l->seq + l->cp - 1) / l->cp;
    m->tokens = l->micro_batch * T;
    bool tied = !n.head;
    for (int r = 0; !st && r < P; r++) { /* each stage as trainer_pp.h builds it; the largest reported */
        int64_t layers = 0, params = 0, most = 0, l0, l1;
        for (int v = 0; v < V; v++) {
            lmc_pp_chunk_layers(bounds, P, V, r, v, &l0, &l1);
            layers += l1 - l0;
            most = l1 - l0 > most ? l1 - l0 : most;
            for (int64_t q = l0; q < l1; q++) params += n.per_layer[q];
        }
        /* the first stage holds the embeddings, the last the final norm and head (a tied head: the embeddings) */
        if (r == 0 || (tied && r == P - 1)) params += n.pre;
        if (r == P - 1) params += n.post;
        lc.num_layers = layers;
        int live = lmc_pp_interleaved_live(P, r, l->micro_batches, V);
        size_t a = lmc_tacts_bytes_layers(&lc, most, l->micro_batch, T, false);
        if (!a) {
            st = lmc_err_set(err, LMC_ERR_ARG, "layout: activations for %lld tokens out of range", (long long)m->tokens);
            break;
        }
        double acts = (double)a * live;
        if (l->vocab) acts += 4.0 * (double)m->tokens * (double)lc.vocab_size; /* the logits slice */
        double total = 16.0 * (double)params + acts;
        if (r > 0 && total <= m->total) continue;
        m->stage = r, m->params = params, m->layers = layers, m->live = live;
        m->weights = 4.0 * (double)params;
        m->grads = 4.0 * (double)params;
        m->optimizer = 8.0 * (double)params;
        m->activations = acts;
        m->total = m->weights + m->grads + m->optimizer + m->activations;
    }
    free(bounds), free(n.per_layer);
    return st;
}
