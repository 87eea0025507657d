/* arch_mixtral.c — Mixtral (MixtralForCausalLM): the Llama attention block
 * with a mixture-of-experts feed-forward part (lmc_ffn_moe): a router
 * (block_sparse_moe.gate, (num_local_experts, C)) and SwiGLU experts stored
 * one tensor per expert as checkpoints save them
 * (block_sparse_moe.experts.N.w1 = gate, w3 = up, w2 = down; each expert
 * intermediate_size wide). Softmax, top-k, always renormalised. */
#include "model/arch.h"

#include <cjson/cJSON.h>
#include <stdio.h>

#define LAYER(n) "model.layers.%lld." n
#define LIN(n, slot, o, i, fl) {LAYER(n), true, LMC_TK_LIN_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, fl, {o, i}}
#define EXPERT(n, slot, o, i, fl) \
    {LAYER("block_sparse_moe.experts.%lld." n), true, LMC_TK_EXPERT_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, fl, {o, i}}
#define NORM(n, slot, d) {LAYER(n), true, LMC_TK_VEC, slot, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {d, LMC_D_1}}

static const struct lmc_tensor_spec specs[] = {
    {"model.embed_tokens.weight", false, LMC_TK_TOK_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_V, LMC_D_C}},
    NORM("input_layernorm.weight", LMC_V_NORM1, LMC_D_C),
    LIN("self_attn.q_proj.weight", LMC_L_Q, LMC_D_QD, LMC_D_C, 0),
    LIN("self_attn.k_proj.weight", LMC_L_K, LMC_D_KVD, LMC_D_C, 0),
    LIN("self_attn.v_proj.weight", LMC_L_V, LMC_D_KVD, LMC_D_C, 0),
    LIN("self_attn.o_proj.weight", LMC_L_O, LMC_D_C, LMC_D_QD, LMC_TF_RESID),
    NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    LIN("block_sparse_moe.gate.weight", LMC_L_ROUTER, LMC_D_E, LMC_D_C, 0),
    EXPERT("w1.weight", LMC_X_GATE, LMC_D_EI, LMC_D_C, 0),
    EXPERT("w2.weight", LMC_X_DOWN, LMC_D_C, LMC_D_EI, LMC_TF_RESID),
    EXPERT("w3.weight", LMC_X_UP, LMC_D_EI, LMC_D_C, 0),
    {"model.norm.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},
    {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}},
};

/* Shared by the MoE architectures (arch_qwen3moe.c). */
lmc_status lmc_arch_moe_check(const struct lmc_config *c, lmc_err *err);
lmc_status lmc_arch_moe_check(const struct lmc_config *c, lmc_err *err) {
    if (c->num_experts <= 0 || c->moe_intermediate_size <= 0 || c->num_experts_per_tok <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: mixture of experts needs num_experts, "
                           "num_experts_per_tok and the expert width (%lld, %lld, %lld)", c->model_type,
                           (long long)c->num_experts, (long long)c->num_experts_per_tok,
                           (long long)c->moe_intermediate_size);
    if (c->num_experts_per_tok > c->num_experts)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: num_experts_per_tok %lld exceeds num_experts %lld",
                           c->model_type, (long long)c->num_experts_per_tok, (long long)c->num_experts);
    if (c->num_experts > 4096 || c->num_experts_per_tok > 64)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: %lld experts, top-%lld: at most 4096 experts, top-64",
                           c->model_type, (long long)c->num_experts, (long long)c->num_experts_per_tok);
    if (c->mlp_bias)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: expert biases are not supported", c->model_type);
    return LMC_OK;
}

static lmc_status check(const struct lmc_config *c, lmc_err *err) { return lmc_arch_moe_check(c, err); }

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_MIXTRAL;
    snprintf(c->model_type, sizeof c->model_type, "mixtral");
    c->act = LMC_ACT_SILU;
    if (!c->num_experts) c->num_experts = 8;
    if (!c->num_experts_per_tok) c->num_experts_per_tok = 2;
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = true;
    c->router_aux_loss_coef = 0.001;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "MixtralForCausalLM", "mixtral", false);
    cJSON_AddNumberToObject(o, "num_local_experts", (double)c->num_experts);
    cJSON_AddNumberToObject(o, "num_experts_per_tok", (double)c->num_experts_per_tok);
    cJSON_AddBoolToObject(o, "output_router_logits", c->output_router_logits);
    cJSON_AddNumberToObject(o, "router_aux_loss_coef", c->router_aux_loss_coef);
}

const struct lmc_architecture lmc_arch_mixtral = {
    .name = "mixtral",
    .hf_class = "MixtralForCausalLM",
    .specs = specs,
    .n_specs = (int)(sizeof specs / sizeof *specs),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_attention,
    .ffn = &lmc_ffn_moe,
    .check = check,
    .config_defaults = defaults,
    .config_json = config_json,
};
