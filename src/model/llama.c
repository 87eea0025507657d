/* llama.c — the Llama family (Llama 2/3, Mistral, Qwen2): binds the HF
 * tensor names of LlamaForCausalLM-style checkpoints to the layer table.
 * RMSNorm, RoPE, SwiGLU MLP, GQA, optional q/k/v(/o) and MLP biases, tied or
 * untied head. The forward itself is shared (forward.c). */
#include "model/model.h"
#include "core/core.h"

#include <stdio.h>

#define NAME(buf, ...) snprintf(buf, sizeof buf, __VA_ARGS__)

static lmc_status bind_linear(struct lmc_model *m, const char *prefix, int64_t out, int64_t in,
                              bool bias, struct lmc_mat *w, const float **b, lmc_err *err) {
    char name[256];
    NAME(name, "%s.weight", prefix);
    lmc_status s = lmc_model_mat(m, name, out, in, false, w, err);
    if (s) return s;
    NAME(name, "%s.bias", prefix);
    if (bias) return lmc_model_vec(m, name, out, b, err);
    *b = NULL;
    return LMC_OK;
}

lmc_status lmc_llama_bind(struct lmc_model *m, lmc_err *err) {
    const struct lmc_config *c = &m->cfg;
    int64_t C = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    char name[256];
    lmc_status s;
    m->rot_dim = (int64_t)((double)c->head_dim * c->rope.partial_rotary_factor) / 2 * 2;
    if ((s = lmc_model_mat(m, "model.embed_tokens.weight", V, C, false, &m->tok_emb, err))) return s;
    if ((s = lmc_model_vec(m, "model.norm.weight", C, &m->norm_f_w, err))) return s;
    if (c->tie_word_embeddings) {
        m->lm_head = m->tok_emb;
        /* some checkpoints also store the tied copy: accept it, use the embedding */
        const struct lmc_st_tensor *t = lmc_st_find(&m->st, "lm_head.weight");
        if (t && (s = lmc_model_mat(m, "lm_head.weight", V, C, false, &m->lm_head, err))) return s;
    } else if ((s = lmc_model_mat(m, "lm_head.weight", V, C, false, &m->lm_head, err))) {
        return s;
    }
    for (int64_t l = 0; l < c->num_layers; l++) {
        struct lmc_layer *L = &m->layers[l];
        char p[128];
        NAME(p, "model.layers.%lld", (long long)l);
        NAME(name, "%s.input_layernorm.weight", p);
        if ((s = lmc_model_vec(m, name, C, &L->norm1_w, err))) return s;
        NAME(name, "%s.post_attention_layernorm.weight", p);
        if ((s = lmc_model_vec(m, name, C, &L->norm2_w, err))) return s;
        NAME(name, "%s.self_attn.q_proj", p);
        if ((s = bind_linear(m, name, qd, C, c->qkv_bias, &L->wq, &L->bq, err))) return s;
        NAME(name, "%s.self_attn.k_proj", p);
        if ((s = bind_linear(m, name, kvd, C, c->qkv_bias, &L->wk, &L->bk, err))) return s;
        NAME(name, "%s.self_attn.v_proj", p);
        if ((s = bind_linear(m, name, kvd, C, c->qkv_bias, &L->wv, &L->bv, err))) return s;
        NAME(name, "%s.self_attn.o_proj", p);
        if ((s = bind_linear(m, name, C, qd, c->o_bias, &L->wo, &L->bo, err))) return s;
        NAME(name, "%s.mlp.gate_proj", p);
        if ((s = bind_linear(m, name, I, C, c->mlp_bias, &L->w_gate, &L->b_gate, err))) return s;
        NAME(name, "%s.mlp.up_proj", p);
        if ((s = bind_linear(m, name, I, C, c->mlp_bias, &L->w_up, &L->b_up, err))) return s;
        NAME(name, "%s.mlp.down_proj", p);
        if ((s = bind_linear(m, name, C, I, c->mlp_bias, &L->w_down, &L->b_down, err))) return s;
    }
    return LMC_OK;
}
