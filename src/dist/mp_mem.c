/* mp_mem.c — per-rank memory of a tensor x pipeline x context layout (see
 * mp_mem.h): the rank's local config walked through the architecture's
 * tensor table, and the training activation arena's size. */
#include "dist/mp_mem.h"
#include "dist/tp.h"
#include "model/backward.h"

#include <string.h>

struct count {
    int64_t layer, global, untied_head;
};

static lmc_status add(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct count *n = user;
    if (!t->required) return LMC_OK;
    if (t->layer >= 0) n->layer += t->numel;
    else n->global += t->numel;
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
    if (c->num_layers < l->pp)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: %lld layers do not fill %d pipeline stages",
                           (long long)c->num_layers, l->pp);
    if (l->seq < l->cp)
        return lmc_err_set(err, LMC_ERR_ARG, "layout: a sequence of %lld tokens does not split in %d",
                           (long long)l->seq, l->cp);
    struct lmc_config lc = *c;
    lc.num_heads = h.nq, lc.num_kv_heads = h.nkv;
    lc.intermediate_size = (c->intermediate_size + l->tp - 1) / l->tp;
    lc.num_layers = (c->num_layers + l->pp - 1) / l->pp;
    if (l->vocab) lc.vocab_size = (c->vocab_size + l->tp - 1) / l->tp;
    struct count n = {0};
    if ((st = lmc_arch_walk(lmc_arch_of(&lc), &lc, add, &n, err))) return st;
    int64_t globals = n.global;
    if (l->pp > 1 && !c->tie_word_embeddings) globals -= lc.vocab_size * c->hidden_size; /* embedding or head */
    m->params = n.layer + globals;
    m->layers = lc.num_layers;
    m->tokens = l->micro_batch * ((l->seq + l->cp - 1) / l->cp);
    m->live = l->pp < l->micro_batches ? l->pp : l->micro_batches;
    m->weights = 4.0 * (double)m->params;
    m->grads = 4.0 * (double)m->params;
    m->optimizer = 8.0 * (double)m->params;
    size_t a = lmc_tacts_bytes(&lc, l->micro_batch, (l->seq + l->cp - 1) / l->cp, false);
    if (!a) return lmc_err_set(err, LMC_ERR_ARG, "layout: activations for %lld tokens out of range", (long long)m->tokens);
    m->activations = (double)a * m->live;
    if (l->vocab) m->activations += 4.0 * (double)m->tokens * (double)lc.vocab_size; /* the logits slice */
    m->total = m->weights + m->grads + m->optimizer + m->activations;
    return LMC_OK;
}
