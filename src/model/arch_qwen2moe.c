/* arch_qwen2moe.c — Qwen2-MoE (Qwen2MoeForCausalLM): the Qwen2 attention
 * block (q/k/v biases, no o bias) with a mixture-of-experts feed-forward
 * part (lmc_ffn_moe): router mlp.gate (num_experts, C), routed SwiGLU
 * experts one tensor per expert (mlp.experts.N.gate_proj / up_proj /
 * down_proj, moe_intermediate_size wide), top-k renormalised when
 * norm_topk_prob, plus a shared expert for every token
 * (mlp.shared_expert.*, shared_expert_intermediate_size wide) scaled by
 * sigmoid(mlp.shared_expert_gate . h). Every layer sparse (the parser
 * refuses decoder_sparse_step != 1 and mlp_only_layers). */
#include "model/arch.h"

#include <cjson/cJSON.h>
#include <stdio.h>

#define LAYER(n) "model.layers.%lld." n
#define LIN(n, slot, o, i, fl) {LAYER(n), true, LMC_TK_LIN_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, fl, {o, i}}
#define BIAS(n, slot, o, when) {LAYER(n), true, LMC_TK_LIN_B, slot, 1, LMC_ROLE_BIAS, when, 0, {o, LMC_D_1}}
#define EXPERT(n, slot, o, i, fl) \
    {LAYER("mlp.experts.%lld." n), true, LMC_TK_EXPERT_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, fl, {o, i}}
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
    NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    LIN("mlp.gate.weight", LMC_L_ROUTER, LMC_D_E, LMC_D_C, 0),
    EXPERT("gate_proj.weight", LMC_X_GATE, LMC_D_EI, LMC_D_C, 0),
    EXPERT("up_proj.weight", LMC_X_UP, LMC_D_EI, LMC_D_C, 0),
    EXPERT("down_proj.weight", LMC_X_DOWN, LMC_D_C, LMC_D_EI, LMC_TF_RESID),
    LIN("mlp.shared_expert.gate_proj.weight", LMC_L_GATE, LMC_D_SI, LMC_D_C, 0),
    LIN("mlp.shared_expert.up_proj.weight", LMC_L_UP, LMC_D_SI, LMC_D_C, 0),
    LIN("mlp.shared_expert.down_proj.weight", LMC_L_DOWN, LMC_D_C, LMC_D_SI, LMC_TF_RESID),
    LIN("mlp.shared_expert_gate.weight", LMC_L_SHARED_GATE, LMC_D_1, LMC_D_C, 0),
    {"model.norm.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},
    {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}},
};

lmc_status lmc_arch_moe_check(const struct lmc_config *c, lmc_err *err); /* arch_mixtral.c */

static lmc_status check(const struct lmc_config *c, lmc_err *err) {
    if (c->shared_expert_intermediate_size <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "qwen2_moe: shared_expert_intermediate_size must be positive");
    return lmc_arch_moe_check(c, err);
}

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_QWEN2MOE;
    snprintf(c->model_type, sizeof c->model_type, "qwen2_moe");
    c->act = LMC_ACT_SILU;
    c->qkv_bias = true;
    c->o_bias = false;
    c->norm_eps = 1e-6;
    if (!c->num_experts) c->num_experts = 8;
    if (!c->num_experts_per_tok) c->num_experts_per_tok = 2;
    if (!c->moe_intermediate_size) c->moe_intermediate_size = c->intermediate_size / 4 > 0 ? c->intermediate_size / 4 : 1;
    if (!c->shared_expert_intermediate_size) c->shared_expert_intermediate_size = c->intermediate_size;
    c->router_aux_loss_coef = 0.001;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "Qwen2MoeForCausalLM", "qwen2_moe", false);
    cJSON_AddNumberToObject(o, "num_experts", (double)c->num_experts);
    cJSON_AddNumberToObject(o, "num_experts_per_tok", (double)c->num_experts_per_tok);
    cJSON_AddNumberToObject(o, "moe_intermediate_size", (double)c->moe_intermediate_size);
    cJSON_AddNumberToObject(o, "shared_expert_intermediate_size", (double)c->shared_expert_intermediate_size);
    cJSON_AddBoolToObject(o, "norm_topk_prob", c->norm_topk_prob);
    cJSON_AddNumberToObject(o, "decoder_sparse_step", 1);
    cJSON_AddItemToObject(o, "mlp_only_layers", cJSON_CreateArray());
    cJSON_AddBoolToObject(o, "output_router_logits", c->output_router_logits);
    cJSON_AddNumberToObject(o, "router_aux_loss_coef", c->router_aux_loss_coef);
}

const struct lmc_architecture lmc_arch_qwen2moe = {
    .name = "qwen2moe",
    .hf_class = "Qwen2MoeForCausalLM",
    .specs = specs,
    .n_specs = (int)(sizeof specs / sizeof *specs),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_attention,
    .ffn = &lmc_ffn_moe,
    .check = check,
    .config_defaults = defaults,
    .config_json = config_json,
};
