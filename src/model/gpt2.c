/* gpt2.c — GPT-2: binds GPT2LMHeadModel tensors (with or without the
 * "transformer." prefix). Conv1D weights are stored (in, out) and are
 * transposed once at load into (out, in) so every matmul has one layout;
 * c_attn is split into q, k, v views of the transposed buffer. Learned
 * positions, LayerNorm, GELU (tanh) MLP, head tied to wte. */
#include "model/model.h"
#include "core/core.h"

#include <stdio.h>

#define NAME(buf, ...) snprintf(buf, sizeof buf, __VA_ARGS__)

static struct lmc_mat mat_rows(const struct lmc_mat *w, int64_t r0, int64_t n) {
    struct lmc_mat v = *w;
    v.rows = n;
    v.data = (const char *)w->data + (size_t)(r0 * w->cols * lmc_dtype_size(w->dtype));
    return v;
}

lmc_status lmc_gpt2_bind(struct lmc_model *m, lmc_err *err) {
    const struct lmc_config *c = &m->cfg;
    int64_t C = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    const char *pre = lmc_st_find(&m->st, "transformer.wte.weight") ? "transformer." : "";
    char name[256];
    lmc_status s;
    m->rot_dim = 0;
    NAME(name, "%swte.weight", pre);
    if ((s = lmc_model_mat(m, name, V, C, false, &m->tok_emb, err))) return s;
    NAME(name, "%swpe.weight", pre);
    if ((s = lmc_model_mat(m, name, c->max_position_embeddings, C, false, &m->pos_emb, err))) return s;
    NAME(name, "%sln_f.weight", pre);
    if ((s = lmc_model_vec(m, name, C, &m->norm_f_w, err))) return s;
    NAME(name, "%sln_f.bias", pre);
    if ((s = lmc_model_vec(m, name, C, &m->norm_f_b, err))) return s;
    m->lm_head = m->tok_emb;
    if (lmc_st_find(&m->st, "lm_head.weight") &&
        (s = lmc_model_mat(m, "lm_head.weight", V, C, false, &m->lm_head, err)))
        return s;
    for (int64_t l = 0; l < c->num_layers; l++) {
        struct lmc_layer *L = &m->layers[l];
        char p[128];
        NAME(p, "%sh.%lld", pre, (long long)l);
        NAME(name, "%s.ln_1.weight", p);
        if ((s = lmc_model_vec(m, name, C, &L->norm1_w, err))) return s;
        NAME(name, "%s.ln_1.bias", p);
        if ((s = lmc_model_vec(m, name, C, &L->norm1_b, err))) return s;
        NAME(name, "%s.ln_2.weight", p);
        if ((s = lmc_model_vec(m, name, C, &L->norm2_w, err))) return s;
        NAME(name, "%s.ln_2.bias", p);
        if ((s = lmc_model_vec(m, name, C, &L->norm2_b, err))) return s;
        struct lmc_mat qkv;
        const float *bqkv;
        NAME(name, "%s.attn.c_attn.weight", p);
        if ((s = lmc_model_mat(m, name, 3 * C, C, true, &qkv, err))) return s;
        NAME(name, "%s.attn.c_attn.bias", p);
        if ((s = lmc_model_vec(m, name, 3 * C, &bqkv, err))) return s;
        L->wq = mat_rows(&qkv, 0, C);
        L->wk = mat_rows(&qkv, C, C);
        L->wv = mat_rows(&qkv, 2 * C, C);
        L->bq = bqkv;
        L->bk = bqkv + C;
        L->bv = bqkv + 2 * C;
        NAME(name, "%s.attn.c_proj.weight", p);
        if ((s = lmc_model_mat(m, name, C, C, true, &L->wo, err))) return s;
        NAME(name, "%s.attn.c_proj.bias", p);
        if ((s = lmc_model_vec(m, name, C, &L->bo, err))) return s;
        NAME(name, "%s.mlp.c_fc.weight", p);
        if ((s = lmc_model_mat(m, name, I, C, true, &L->w_up, err))) return s;
        NAME(name, "%s.mlp.c_fc.bias", p);
        if ((s = lmc_model_vec(m, name, I, &L->b_up, err))) return s;
        NAME(name, "%s.mlp.c_proj.weight", p);
        if ((s = lmc_model_mat(m, name, C, I, true, &L->w_down, err))) return s;
        NAME(name, "%s.mlp.c_proj.bias", p);
        if ((s = lmc_model_vec(m, name, C, &L->b_down, err))) return s;
    }
    return LMC_OK;
}
