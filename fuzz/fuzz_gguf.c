/* fuzz_gguf.c — libFuzzer target: arbitrary bytes through lmc_gguf_parse;
 * on success every tensor's first and last byte is read (ASan proves the
 * bounds), every metadata value goes through the typed getters, string
 * arrays are walked, lookups are checked, and the tokenizer.json is rebuilt
 * from the metadata (lmc_gguf_tokenizer_json), and the model loader of
 * `-m FILE.gguf` binds the image (lmc_model_bind_gguf); then everything is
 * freed. */
#include "io/gguf.h"
#include "core/core.h"
#include "model/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1); /* exact size: reads past the end are caught */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_gguf g;
    lmc_err err;
    memset(&err, 0, sizeof err);
    volatile uint64_t sink = 0;
    if (lmc_gguf_parse(&g, buf, size, "fuzz.gguf", &err) == LMC_OK) {
        for (int64_t i = 0; i < g.n_tensors; i++) {
            const struct lmc_gguf_tensor *t = &g.tensors[i];
            LMC_ASSERT(t->n_dims >= 1 && t->n_dims <= LMC_GGUF_MAX_DIMS);
            if (t->nbytes) {
                const uint8_t *p = t->data;
                LMC_ASSERT(p >= buf && p + t->nbytes <= buf + size);
                sink ^= p[0];
                sink ^= p[t->nbytes - 1];
            }
            LMC_ASSERT(lmc_gguf_find_tensor(&g, t->name) == t);
        }
        for (int64_t i = 0; i < g.n_kv; i++) {
            const struct lmc_gguf_kv *kv = &g.kv[i];
            LMC_ASSERT(lmc_gguf_find(&g, kv->key) == kv);
            int64_t iv;
            double fv;
            bool bv;
            char *s = NULL;
            lmc_gguf_get_int(&g, kv->key, &iv, NULL, &err);
            lmc_gguf_get_float(&g, kv->key, &fv, NULL, &err);
            lmc_gguf_get_bool(&g, kv->key, &bv, NULL, &err);
            if (lmc_gguf_get_str(&g, kv->key, &s, NULL, &err) == LMC_OK) sink ^= (uint8_t)s[0];
            free(s);
            if (kv->type == LMC_GGUF_ARRAY) {
                for (uint64_t j = 0; j < kv->n; j++) {
                    if (kv->arr_type == LMC_GGUF_STRING) {
                        if (kv->strs[j].len) sink ^= (uint8_t)kv->strs[j].s[kv->strs[j].len - 1];
                    } else {
                        sink ^= (uint64_t)lmc_gguf_arr_i(kv, j);
                        double f = lmc_gguf_arr_f(kv, j);
                        uint64_t bits;
                        memcpy(&bits, &f, 8);
                        sink ^= bits;
                    }
                }
            }
        }
        char *tj = NULL, *cj = NULL; /* the tokenizer rebuilt from the metadata, when it has one */
        if (lmc_gguf_tokenizer_json(&g, &tj, &cj, &err) == LMC_OK) LMC_ASSERT(tj && cj);
        free(tj);
        free(cj);
        lmc_gguf_free(&g);
        /* the model loader of `-m FILE.gguf` over the same image: config
         * from the metadata, every tensor bound (quantized linears
         * prepared, Q/K rows permuted), then freed */
        struct lmc_model m;
        memset(&m, 0, sizeof m);
        m.gguf = calloc(1, sizeof *m.gguf);
        if (m.gguf && lmc_gguf_parse(m.gguf, buf, size, "fuzz.gguf", &err) == LMC_OK &&
            lmc_model_bind_gguf(&m, "fuzz.gguf", &err) == LMC_OK)
            /* a quantized embedding stays in its blocks (tok_emb_q; a tied
             * head then runs them as a quantized linear) */
            LMC_ASSERT((m.w.tok_emb.data || m.w.tok_emb_q) && (m.w.head.w.data || m.w.head.q));
        else if (m.gguf)
            LMC_ASSERT(err.msg[0] != 0);
        lmc_model_free(&m);
    } else {
        LMC_ASSERT(err.msg[0] != 0 && g.tensors == NULL && g.kv == NULL);
    }
    (void)sink;
    free(buf);
    return 0;
}
