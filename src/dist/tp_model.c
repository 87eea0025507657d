/* tp_model.c — a tensor-parallel rank's shard of a loaded model (see
 * tp_model.h): slices of each block's linears by heads and by the MLP's
 * intermediate features into one arena, and a local config; with --tp-vocab
 * the embedding's and head's rows of its vocabulary slice. */
#include "dist/tp_model.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

/* Where a slot's shard lies: rows [r0, r0+nr) (column-parallel) or columns
 * [c0, c0+nc) (row-parallel) of its (out, in) weight. */
struct cut {
    enum lmc_split split;
    int64_t a0, n;                   /* first row/column and count */
};

static struct cut cut_of(int slot, const struct lmc_tp_heads *h, int64_t hd, int64_t i0, int64_t ni) {
    switch (slot) {
    case LMC_L_Q: return (struct cut){LMC_SPLIT_COLUMN, h->q0 * hd, h->nq * hd};
    case LMC_L_K:
    case LMC_L_V: return (struct cut){LMC_SPLIT_COLUMN, h->kv0 * hd, h->nkv * hd};
    case LMC_L_O: return (struct cut){LMC_SPLIT_ROW, h->q0 * hd, h->nq * hd};
    case LMC_L_GATE:
    case LMC_L_UP: return (struct cut){LMC_SPLIT_COLUMN, i0, ni};
    default: return (struct cut){LMC_SPLIT_ROW, i0, ni}; /* DOWN */
    }
}

/* Floats of a slot's shard (weight, then bias). */
static int64_t cut_floats(const struct lmc_linear *L, struct cut k) {
    int64_t w = k.split == LMC_SPLIT_COLUMN ? k.n * L->w.cols : L->w.rows * k.n;
    int64_t b = !L->bias ? 0 : k.split == LMC_SPLIT_COLUMN ? k.n : L->w.rows;
    return w + b;
}

/* The embedding and head rows of this rank (t->m already the shard). */
static lmc_status shard_vocab(struct lmc_tp_model *t, const struct lmc_model *full, struct lmc_comm *c,
                              lmc_err *err) {
    const struct lmc_weights *w = &full->w;
    int64_t V = full->cfg.vocab_size, C = w->tok_emb.cols, v0, nv;
    bool tied = w->head.w.data == w->tok_emb.data;
    if (!w->tok_emb.data || w->tok_emb.dtype != LMC_DTYPE_F32 || w->tok_emb.rows != V || w->head.w.dtype != LMC_DTYPE_F32 ||
        w->head.format != LMC_WFMT_DENSE || w->head.w.rows != V || w->head.w.cols != C)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp-vocab: the embedding and head must be float32 (%lld, %lld) "
                           "tables (load with float32 weights)", (long long)V, (long long)C);
    if (w->head.bias || w->head.n_adapters)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp-vocab: a head with a bias or adapters does not split yet");
    lmc_dist_slice(V, c->rank, c->world, &v0, &nv);
    if (nv == 0)
        return lmc_err_set(err, LMC_ERR_ARG, "--tp-vocab: a vocabulary of %lld does not split in %d", (long long)V,
                           c->world);
    t->varena = malloc(sizeof(float) * (size_t)(nv * C) * (tied ? 1u : 2u));
    if (!t->varena) return lmc_err_set(err, LMC_ERR_OOM, "--tp-vocab: out of memory");
    lmc_tp_take_rows(t->varena, w->tok_emb.data, C, v0, nv);
    float *head = t->varena;
    if (!tied) lmc_tp_take_rows(head = t->varena + nv * C, w->head.w.data, C, v0, nv);
    t->m.w.tok_emb.data = t->varena;
    t->m.w.tok_emb.rows = nv;
    t->m.w.head.w.data = head;
    t->m.w.head.w.rows = nv;
    t->wv = (struct lmc_wvocab){&t->group, v0, nv, V};
    t->m.w.vocab = &t->wv;
    return LMC_OK;
}

lmc_status lmc_tp_model_shard(struct lmc_tp_model *t, const struct lmc_model *full,
                              struct lmc_comm *c, lmc_err *err) {
    return lmc_tp_model_shard_vocab(t, full, c, false, err);
}

lmc_status lmc_tp_model_shard_vocab(struct lmc_tp_model *t, const struct lmc_model *full,
                                    struct lmc_comm *c, bool vocab, lmc_err *err) {
    memset(t, 0, sizeof *t);
    const struct lmc_config *fc = &full->cfg;
    if (full->on_device)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: the model must be in host memory to shard");
    if (full->arch->mixer != &lmc_mixer_attention)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s layers do not split yet", full->arch->mixer->name);
    lmc_status st = lmc_tp_plan_heads(fc->num_heads, fc->num_kv_heads, c->world, c->rank, &t->heads, err);
    if (st) return st;
    int64_t i0, ni, hd = fc->head_dim, total = 0;
    lmc_dist_slice(fc->intermediate_size, c->rank, c->world, &i0, &ni);
    if (ni == 0)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: intermediate_size %lld does not split in %d",
                           (long long)fc->intermediate_size, c->world);
    for (int64_t l = 0; l < fc->num_layers; l++)
        for (int s = 0; s < LMC_L_N; s++) {
            const struct lmc_linear *L = &full->w.layers[l].lin[s];
            if (!L->w.data) continue;
            if (L->w.dtype != LMC_DTYPE_F32 || L->format != LMC_WFMT_DENSE)
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: layer %lld weights are %s; load with float32 weights",
                                   (long long)l, lmc_dtype_name(L->w.dtype));
            total += cut_floats(L, cut_of(s, &t->heads, hd, i0, ni));
        }
    t->layers = calloc((size_t)(fc->num_layers > 0 ? fc->num_layers : 1), sizeof *t->layers);
    t->arena = malloc(sizeof(float) * (size_t)(total + 1));
    if (!t->layers || !t->arena) {
        lmc_tp_model_free(t);
        return lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory for %lld floats", (long long)total);
    }
    float *p = t->arena;
    for (int64_t l = 0; l < fc->num_layers; l++) {
        t->layers[l] = full->w.layers[l]; /* vectors and unbound slots as they are */
        for (int s = 0; s < LMC_L_N; s++) {
            const struct lmc_linear *L = &full->w.layers[l].lin[s];
            struct lmc_linear *D = &t->layers[l].lin[s];
            if (!L->w.data) continue;
            struct cut k = cut_of(s, &t->heads, hd, i0, ni);
            const float *src = L->w.data;
            int64_t rows = L->w.rows, cols = L->w.cols;
            D->split = k.split;
            D->tp = &t->group;
            D->w.data = p;
            if (k.split == LMC_SPLIT_COLUMN) {
                lmc_tp_take_rows(p, src, cols, k.a0, k.n);
                D->w.rows = k.n;
                p += k.n * cols;
                if (L->bias) {
                    memcpy(p, L->bias + k.a0, sizeof(float) * (size_t)k.n);
                    D->bias = p, p += k.n;
                }
            } else {
                lmc_tp_take_cols(p, src, rows, cols, k.a0, k.n);
                D->w.cols = k.n;
                p += rows * k.n;
                if (L->bias) {
                    memcpy(p, L->bias, sizeof(float) * (size_t)rows);
                    D->bias = p, p += rows;
                }
            }
        }
    }
    t->group.c = c;
    t->m = *full;
    t->m.w.layers = t->layers;
    t->m.cfg.num_heads = t->heads.nq;
    t->m.cfg.num_kv_heads = t->heads.nkv;
    t->m.cfg.intermediate_size = ni;
    t->m.owned = NULL, t->m.n_owned = t->m.cap_owned = 0;
    t->m.placed = NULL, t->m.n_placed = t->m.cap_placed = 0;
    if (vocab && (st = shard_vocab(t, full, c, err))) {
        lmc_tp_model_free(t);
        return st;
    }
    return LMC_OK;
}

void lmc_tp_model_free(struct lmc_tp_model *t) {
    free(t->layers);
    free(t->arena);
    free(t->varena);
    memset(t, 0, sizeof *t);
}

lmc_status lmc_tp_model_check(struct lmc_tp_model *t, lmc_err *err) {
    lmc_status st = t->group.st;
    if (st && err) *err = t->group.err;
    t->group.st = LMC_OK;
    return st;
}
