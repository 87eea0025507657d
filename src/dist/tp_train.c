/* tp_train.c — a tensor-parallel rank's trainable shard (see tp_train.h):
 * a local config, the full model's tensors sliced by name, the block
 * linears flagged with their split. */
#include "dist/tp_train.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

void lmc_tp_tensor_cut(const char *name, const struct lmc_tp_heads *h, int64_t hd, int64_t i0,
                       int64_t ni, int *dim, int64_t *a0, int64_t *n) {
    *dim = -1, *a0 = 0, *n = 0;
    bool la = strstr(name, ".lora_A.") != NULL, lb = strstr(name, ".lora_B.") != NULL;
    if (la || lb) { /* a LoRA adapter (PEFT name): split with its base, the other factor replicated */
        int64_t c0, cn;
        bool col = true;
        if (strstr(name, ".q_proj.")) c0 = h->q0 * hd, cn = h->nq * hd;
        else if (strstr(name, ".k_proj.") || strstr(name, ".v_proj.")) c0 = h->kv0 * hd, cn = h->nkv * hd;
        else if (strstr(name, ".gate_proj.") || strstr(name, ".up_proj.")) c0 = i0, cn = ni;
        else if (strstr(name, ".o_proj.")) c0 = h->q0 * hd, cn = h->nq * hd, col = false;
        else if (strstr(name, ".down_proj.")) c0 = i0, cn = ni, col = false;
        else return;
        if (col && lb) *dim = 0, *a0 = c0, *n = cn;       /* B (out, r): the base's output rows */
        else if (!col && la) *dim = 1, *a0 = c0, *n = cn; /* A (r, in): the base's input columns */
        return;
    }
    if (h->vocab && (strstr(name, "embed_tokens.") || strstr(name, "lm_head.")))
        *dim = 0, *a0 = h->v0, *n = h->nv;
    else if (strstr(name, ".q_proj.")) *dim = 0, *a0 = h->q0 * hd, *n = h->nq * hd;
    else if (strstr(name, ".k_proj.") || strstr(name, ".v_proj.")) *dim = 0, *a0 = h->kv0 * hd, *n = h->nkv * hd;
    else if (strstr(name, ".o_proj.weight")) *dim = 1, *a0 = h->q0 * hd, *n = h->nq * hd;
    else if (strstr(name, ".gate_proj.") || strstr(name, ".up_proj.")) *dim = 0, *a0 = i0, *n = ni;
    else if (strstr(name, ".down_proj.weight")) *dim = 1, *a0 = i0, *n = ni;
}

lmc_status lmc_tp_tmodel_shard(struct lmc_tmodel *tm, struct lmc_tp_group *g,
                               struct lmc_tp_heads *heads, const struct lmc_tmodel *full,
                               struct lmc_comm *c, const struct lmc_backend *be, lmc_err *err) {
    return lmc_tp_tmodel_shard_vocab(tm, g, heads, NULL, full, c, be, err);
}

lmc_status lmc_tp_tmodel_shard_vocab(struct lmc_tmodel *tm, struct lmc_tp_group *g, struct lmc_tp_heads *heads,
                                     struct lmc_tvocab *vocab, const struct lmc_tmodel *full, struct lmc_comm *c,
                                     const struct lmc_backend *be, lmc_err *err) {
    memset(tm, 0, sizeof *tm);
    memset(g, 0, sizeof *g);
    const struct lmc_config *fc = &full->cfg;
    for (int i = 0; i < full->arch->n_specs; i++) /* a tensor holding several linears (gpt2's c_attn) */
        if (full->arch->specs[i].parts > 1)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel training: %s (fused %s) does not split yet",
                               full->arch->name, full->arch->specs[i].name);
    lmc_status st = lmc_tp_plan_heads(fc->num_heads, fc->num_kv_heads, c->world, c->rank, heads, err);
    if (st) return st;
    int64_t i0, ni;
    lmc_dist_slice(fc->intermediate_size, c->rank, c->world, &i0, &ni);
    if (ni == 0)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: intermediate_size %lld does not split in %d",
                           (long long)fc->intermediate_size, c->world);
    struct lmc_config lc = *fc;
    lc.num_heads = heads->nq, lc.num_kv_heads = heads->nkv, lc.intermediate_size = ni;
    if (vocab) { /* the embedding's and head's rows of this rank's vocabulary slice */
        lmc_dist_slice(fc->vocab_size, c->rank, c->world, &heads->v0, &heads->nv);
        if (heads->nv == 0)
            return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: vocabulary %lld does not split in %d",
                               (long long)fc->vocab_size, c->world);
        if (full->W.pos_emb.data)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "vocabulary parallel: learned position embeddings");
        heads->vocab = true;
        lc.vocab_size = heads->nv;
    }
    if ((st = lmc_tmodel_init(tm, &lc, be, err))) return st;
    float *fbuf = NULL, *lbuf = NULL;
    for (int i = 0; !st && i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        int f = lmc_tmodel_find(full, p->name);
        if (f < 0) {
            st = lmc_err_set(err, LMC_ERR_FORMAT, "tensor parallel: the full model has no tensor '%s'", p->name);
            break;
        }
        const struct lmc_tparam *q = &full->params[f];
        int dim;
        int64_t a0, n;
        lmc_tp_tensor_cut(p->name, heads, fc->head_dim, i0, ni, &dim, &a0, &n);
        int64_t rows = q->shape[0], cols = q->ndim == 2 ? q->shape[1] : 1;
        int64_t want0 = dim == 0 ? n : rows, want1 = dim == 1 ? n : cols;
        if (p->transposed || p->shape[0] != want0 || (p->ndim == 2 && p->shape[1] != want1)) {
            st = lmc_err_set(err, LMC_ERR_FORMAT, "tensor parallel: '%s' shard shape does not match its cut", p->name);
            break;
        }
        free(fbuf), free(lbuf);
        fbuf = malloc(sizeof(float) * (size_t)q->numel);
        lbuf = malloc(sizeof(float) * (size_t)p->numel);
        if (!fbuf || !lbuf) {
            st = lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory for '%s'", p->name);
            break;
        }
        if ((st = lmc_tmodel_download_param(full, full->w, f, fbuf, err))) break;
        if (dim == 0) lmc_tp_take_rows(lbuf, fbuf, cols, a0, n);
        else if (dim == 1) lmc_tp_take_cols(lbuf, fbuf, rows, cols, a0, n);
        else memcpy(lbuf, fbuf, sizeof(float) * (size_t)q->numel);
        st = lmc_tmodel_upload_param(tm, tm->w, i, lbuf, err);
    }
    free(fbuf), free(lbuf);
    if (st) {
        lmc_tmodel_free(tm);
        return st;
    }
    g->c = c;
    g->sp = false; /* sequence parallelism: set by its caller (lmc_trainer_tp_attach_sp) */
    if (vocab) {
        *vocab = (struct lmc_tvocab){g, heads->v0, fc->vocab_size};
        tm->vocab = vocab;
    }
    lmc_tp_tmodel_mark(tm, g);
    return LMC_OK;
}

void lmc_tp_tmodel_mark(struct lmc_tmodel *tm, struct lmc_tp_group *g) {
    static const enum lmc_split split[LMC_L_N] = {
        [LMC_L_Q] = LMC_SPLIT_COLUMN, [LMC_L_K] = LMC_SPLIT_COLUMN, [LMC_L_V] = LMC_SPLIT_COLUMN,
        [LMC_L_O] = LMC_SPLIT_ROW, [LMC_L_GATE] = LMC_SPLIT_COLUMN, [LMC_L_UP] = LMC_SPLIT_COLUMN,
        [LMC_L_DOWN] = LMC_SPLIT_ROW};
    for (int64_t l = 0; l < tm->cfg.num_layers; l++)
        for (int s = 0; s < LMC_L_N; s++) {
            struct lmc_linear *L = &tm->W.layers[l].lin[s];
            if (!L->w.data) continue;
            L->split = split[s];
            L->tp = g;
        }
}

lmc_status lmc_tp_tmodel_sum_replicated(struct lmc_tmodel *tm, const struct lmc_tp_group *g,
                                        const struct lmc_tp_heads *heads, int64_t full_n_kv,
                                        lmc_err *err) {
    if (g->sp && g->c->world > 1) { /* sequence parallel: the blocks' norms saw this rank's rows only */
        static const int vecs[4] = {LMC_V_NORM1, LMC_V_NORM1_B, LMC_V_NORM2, LMC_V_NORM2_B};
        LMC_ASSERT(tm->be->host_memory);
        for (int64_t l = 0; l < tm->cfg.num_layers; l++)
            for (int k = 0; k < 4; k++) {
                float *gv = (float *)tm->G.layers[l].vec[vecs[k]];
                if (!gv) continue;
                lmc_status st = g->c->all_reduce(g->c, gv, tm->cfg.hidden_size, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
                if (st) return st;
            }
    }
    if (heads->kv_replicas <= 1) return LMC_OK;
    struct lmc_tp tp = {g->c, tm->be};
    lmc_status st = LMC_OK;
    for (int i = 0; !st && i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (!strstr(p->name, ".k_proj.") && !strstr(p->name, ".v_proj.")) continue;
        /* a frozen base has no gradient; an adapter's A of k/v is replicated over the whole group
         * (lmc_tp_lora_reduce sums it), its B is a KV head's rows like the weight's */
        if (p->frozen || strstr(p->name, ".lora_A.")) continue;
        float *buf = malloc(sizeof(float) * (size_t)p->numel);
        if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory");
        float *gp = lmc_tmodel_grad(tm, p);
        if (p->transposed) st = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s is stored transposed", p->name);
        if (!st) tm->be->download(tm->be->ctx, buf, gp, sizeof(float) * (size_t)p->numel);
        if (!st) st = lmc_tp_sum_replicated(&tp, heads, full_n_kv, buf, p->numel, err);
        if (!st) tm->be->upload(tm->be->ctx, gp, buf, sizeof(float) * (size_t)p->numel);
        tm->be->sync(tm->be->ctx);
        free(buf);
    }
    return st;
}

lmc_status lmc_tp_lora_reduce(struct lmc_tmodel *tm, const struct lmc_tp_group *g, const struct lmc_tp_heads *heads,
                              lmc_err *err) {
    struct lmc_comm *c = g->c;
    if (c->world == 1) return LMC_OK;
    lmc_status st = LMC_OK;
    for (int i = 0; !st && i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->frozen || (!strstr(p->name, ".lora_A.") && !strstr(p->name, ".lora_B."))) continue;
        int dim;
        int64_t a0, n;
        lmc_tp_tensor_cut(p->name, heads, tm->cfg.head_dim, 0, 0, &dim, &a0, &n);
        if (dim >= 0) continue; /* this rank's slice: its gradient is whole */
        float *buf = malloc(sizeof(float) * (size_t)p->numel);
        if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory");
        float *gp = lmc_tmodel_grad(tm, p); /* adapters are stored as used (never transposed) */
        tm->be->download(tm->be->ctx, buf, gp, sizeof(float) * (size_t)p->numel);
        st = c->all_reduce(c, buf, p->numel, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
        if (!st) tm->be->upload(tm->be->ctx, gp, buf, sizeof(float) * (size_t)p->numel);
        tm->be->sync(tm->be->ctx);
        free(buf);
    }
    return st;
}
