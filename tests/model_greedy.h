/* model_greedy.h — the one-process reference of the multi-rank inference
 * tests (test_mp_tp_model, test_mp_ep): prompt logits and greedy tokens of
 * a model on a backend, for a fixed prompt of np ids. */
#ifndef LMC_TEST_MODEL_GREEDY_H
#define LMC_TEST_MODEL_GREEDY_H

#include "infer/sampler.h"
#include "model/model.h"

#include <stdlib.h>

/* logits: (np, V) of the prompt ids (i * 37 + 11) mod V; toks: the ngen
 * greedy tokens that follow (each fed back through the KV cache). */
static lmc_status model_greedy_run(const struct lmc_model *m, const struct lmc_backend *be, int np, int ngen,
                                   float *logits, int32_t *toks, lmc_err *err) {
    int64_t V = m->cfg.vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)np);
    float *last = malloc(sizeof(float) * (size_t)V);
    if (!ids || !last) {
        free(ids);
        free(last);
        return lmc_err_set(err, LMC_ERR_OOM, "model_greedy_run: out of memory");
    }
    for (int i = 0; i < np; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    struct lmc_kv kv;
    struct lmc_acts a;
    lmc_status st = lmc_kv_init(&kv, m, be, np + ngen, err);
    if (!st && (st = lmc_acts_init(&a, m, be, np, np, err))) lmc_kv_free(&kv);
    if (!st) {
        st = lmc_model_forward(m, be, &a, &kv, ids, np, 0, logits, true, err);
        int32_t t = st ? 0 : lmc_argmax(logits + (int64_t)(np - 1) * V, V);
        for (int g = 0; !st && g < ngen; g++) {
            toks[g] = t;
            st = lmc_model_forward(m, be, &a, &kv, &t, 1, np + g, last, false, err);
            t = lmc_argmax(last, V);
        }
        lmc_acts_free(&a);
        lmc_kv_free(&kv);
    }
    free(ids);
    free(last);
    return st;
}

#endif
