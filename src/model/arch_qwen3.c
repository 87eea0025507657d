/* arch_qwen3.c — Qwen3 dense (Qwen3ForCausalLM): the Llama block with an
 * explicit head_dim (heads x head_dim need not equal the hidden size) and
 * RMSNorm of every query and key head (q_norm, k_norm: (head_dim) scales,
 * applied before RoPE); optional attention biases (attention_bias). The
 * attention mixer applies the q/k norms when their slots are bound. */
#include "model/arch.h"

#include <cjson/cJSON.h>
#include <stdio.h>

#define LAYER(n) "model.layers.%lld." n
#define LIN(n, slot, o, i, fl) {LAYER(n), true, LMC_TK_LIN_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, fl, {o, i}}
#define BIAS(n, slot, o, when) {LAYER(n), true, LMC_TK_LIN_B, slot, 1, LMC_ROLE_BIAS, when, 0, {o, LMC_D_1}}
#define NORM(n, slot, d) {LAYER(n), true, LMC_TK_VEC, slot, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {d, LMC_D_1}}

static const struct lmc_tensor_spec specs[] = {
    {"model.embed_tokens.weight", false, LMC_TK_TOK_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_V, LMC_D_C}},
    NORM("input_layernorm.weight", LMC_V_NORM1, LMC_D_C),
    LIN("self_attn.q_proj.weight", LMC_L_Q, LMC_D_QD, LMC_D_C, 0),
    BIAS("self_attn.q_proj.bias", LMC_L_Q, LMC_D_QD, LMC_WHEN_QKV_BIAS),
    LIN("self_attn.k_proj.weight", LMC_L_K, LMC_D_KVD, LMC_D_C, 0),
    BIAS("self_attn.k_proj.bias", LMC_L_K, LMC_D_KVD, LMC_WHEN_QKV_BIAS),
    LIN("self_attn.v_proj.weight", LMC_L_V, LMC_D_KVD, LMC_D_C, 0),
    BIAS("self_attn.v_proj.bias", LMC_L_V, LMC_D_KVD, LMC_WHEN_QKV_BIAS),
    LIN("self_attn.o_proj.weight", LMC_L_O, LMC_D_C, LMC_D_QD, LMC_TF_RESID),
    BIAS("self_attn.o_proj.bias", LMC_L_O, LMC_D_C, LMC_WHEN_O_BIAS),
    NORM("self_attn.q_norm.weight", LMC_V_Q_NORM, LMC_D_HD),
    NORM("self_attn.k_norm.weight", LMC_V_K_NORM, LMC_D_HD),
    NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    LIN("mlp.gate_proj.weight", LMC_L_GATE, LMC_D_I, LMC_D_C, 0),
    LIN("mlp.up_proj.weight", LMC_L_UP, LMC_D_I, LMC_D_C, 0),
    LIN("mlp.down_proj.weight", LMC_L_DOWN, LMC_D_C, LMC_D_I, LMC_TF_RESID),
    {"model.norm.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},
    {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}},
};

static lmc_status check(const struct lmc_config *c, lmc_err *err) {
    if (c->mlp_bias)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "qwen3: MLP biases are not part of Qwen3");
    return LMC_OK;
}

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_QWEN3;
    snprintf(c->model_type, sizeof c->model_type, "qwen3");
    c->act = LMC_ACT_SILU;
    c->qk_norm = true;
    c->norm_eps = 1e-6;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "Qwen3ForCausalLM", "qwen3", true);
}

const struct lmc_architecture lmc_arch_qwen3 = {
    .name = "qwen3",
    .hf_class = "Qwen3ForCausalLM",
    .specs = specs,
    .n_specs = (int)(sizeof specs / sizeof *specs),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_attention,
    .ffn = &lmc_ffn_swiglu,
    .check = check,
    .config_defaults = defaults,
    .config_json = config_json,
};
