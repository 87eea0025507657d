/* mp_mem.c — per-rank memory of a tensor x pipeline x context layout (see
 * mp_mem.h): the rank's local config walked through the architecture's
 * tensor table, and the training activation arena's size. */
#include "dist/mp_mem.h"
#include "dist/tp.h"
#include "dist/pp.h"
#include "dist/pp_model.h"
#include "model/backward.h"

#include <string.h>

struct count {
    int64_t layer, pre, post; /* the layers'; the tensors before them (embeddings), after them (norm, head) */
};

static lmc_status add(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct count *n = user;
    if (!t->required) return LMC_OK;
    if (t->layer >= 0) n->layer += t->numel;
    else if (n->layer) n->post += t->numel;
    else n->pre += t->numel;
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
    int V = l->chunks > 1 ? l->chunks : 1;
    if (V > 4096 || c->num_layers < (int64_t)l->pp * V)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: %lld layers do not fill %d pipeline stages x %d chunks",
                           (long long)c->num_layers, l->pp, V);
    if ((st = lmc_pp_interleaved_check(l->pp, l->micro_batches, V, err))) return st;
    if (l->seq < l->cp)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: a sequence of %lld tokens does not split in %d",
                           (long long)l->seq, l->cp);
    struct lmc_config lc = *c;
    lc.num_heads = h.nq, lc.num_kv_heads = h.nkv;
    lc.intermediate_size = (c->intermediate_size + l->tp - 1) / l->tp;
    /* stage 0 (the most micro-batches alive): its chunks' layers, arenas for the largest chunk */
    int64_t on0 = 0, l0, l1, most = 0;
    for (int v = 0; v < V; v++) {
        lmc_pp_chunk_layers(c->num_layers, l->pp, V, 0, v, &l0, &l1);
        on0 += l1 - l0;
        most = l1 - l0 > most ? l1 - l0 : most;
    }
    lc.num_layers = on0;
    if (l->vocab) lc.vocab_size = (c->vocab_size + l->tp - 1) / l->tp;
    struct count n = {0};
    if ((st = lmc_arch_walk(lmc_arch_of(&lc), &lc, add, &n, err))) return st;
    /* stage 0 holds the embeddings; the final norm and head are the last stage's */
    m->params = n.layer + n.pre + (l->pp == 1 ? n.post : 0);
    m->layers = lc.num_layers;
    m->tokens = l->micro_batch * ((l->seq + l->cp - 1) / l->cp);
    m->live = lmc_pp_interleaved_live(l->pp, 0, l->micro_batches, V);
    m->weights = 4.0 * (double)m->params;
    m->grads = 4.0 * (double)m->params;
    m->optimizer = 8.0 * (double)m->params;
    size_t a = lmc_tacts_bytes_layers(&lc, most, l->micro_batch, (l->seq + l->cp - 1) / l->cp, false);
    if (!a) return lmc_err_set(err, LMC_ERR_ARG, "layout: activations for %lld tokens out of range", (long long)m->tokens);
    m->activations = (double)a * m->live;
    if (l->vocab) m->activations += 4.0 * (double)m->tokens * (double)lc.vocab_size; /* the logits slice */
    m->total = m->weights + m->grads + m->optimizer + m->activations;
    return LMC_OK;
}
