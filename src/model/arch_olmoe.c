/* arch_olmoe.c — OLMoE (OlmoeForCausalLM): the Llama attention block with
 * RMSNorm of the whole q and k projections (q_norm (H*hd), k_norm (KV*hd),
 * before RoPE; the attention mixer normalises over the scale's length) and
 * a mixture-of-experts feed-forward part (lmc_ffn_moe): router mlp.gate,
 * SwiGLU experts one tensor per expert (mlp.experts.N.gate_proj / up_proj /
 * down_proj, intermediate_size wide), top-k renormalised when
 * norm_topk_prob (default off). clip_qkv is refused by the parser. */
#include "model/arch_moe.h"

#include <cjson/cJSON.h>
#include <stdio.h>

static const struct lmc_tensor_spec specs[] = {
    MOE_EMBED,
    MOE_ATTN,
    MOE_NORM("self_attn.q_norm.weight", LMC_V_Q_NORM, LMC_D_QD),
    MOE_NORM("self_attn.k_norm.weight", LMC_V_K_NORM, LMC_D_KVD),
    MOE_NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    MOE_LIN("mlp.gate.weight", LMC_L_ROUTER, LMC_D_E, LMC_D_C, 0, LMC_WHEN_SPARSE),
    MOE_EXPERT("mlp.experts.", "gate_proj.weight", LMC_X_GATE, LMC_D_EI, LMC_D_C, 0),
    MOE_EXPERT("mlp.experts.", "up_proj.weight", LMC_X_UP, LMC_D_EI, LMC_D_C, 0),
    MOE_EXPERT("mlp.experts.", "down_proj.weight", LMC_X_DOWN, LMC_D_C, LMC_D_EI, LMC_TF_RESID),
    MOE_FINAL,
};

static lmc_status check(const struct lmc_config *c, lmc_err *err) { return lmc_arch_moe_check(c, err); }

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_OLMOE;
    snprintf(c->model_type, sizeof c->model_type, "olmoe");
    c->act = LMC_ACT_SILU;
    c->qk_norm = true;
    lmc_arch_moe_defaults(c, 0.01);
    c->moe_intermediate_size = c->intermediate_size;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "OlmoeForCausalLM", "olmoe", true);
    lmc_arch_moe_json(c, o, "num_experts", false);
    cJSON_AddBoolToObject(o, "norm_topk_prob", c->norm_topk_prob);
}

const struct lmc_architecture lmc_arch_olmoe = {
    .name = "olmoe",
    .hf_class = "OlmoeForCausalLM",
    .specs = specs,
    .n_specs = (int)(sizeof specs / sizeof *specs),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_attention,
    .ffn = &lmc_ffn_moe,
    .check = check,
    .config_defaults = defaults,
    .config_json = config_json,
};
