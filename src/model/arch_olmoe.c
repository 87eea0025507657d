/* arch_olmoe.c — OLMoE (OlmoeForCausalLM): the Llama attention block with
 * RMSNorm of the whole q and k projections (q_norm (H*hd), k_norm (KV*hd),
 * before RoPE; the attention mixer normalises over the scale's length) and
 * a mixture-of-experts feed-forward part (lmc_ffn_moe): router mlp.gate,
 * SwiGLU experts one tensor per expert (mlp.experts.N.gate_proj / up_proj /
 * down_proj, intermediate_size wide), top-k renormalised when
 * norm_topk_prob (default off). clip_qkv (when set) clamps q and k after
 * their norms and v to [-clip_qkv, clip_qkv] before RoPE (the attention
 * mixer, backend op clamp). GGUF: llama.cpp's "olmoe" (no top-k
 * renormalisation there; clip_qkv kept as attention.clamp_kqv, which
 * llama.cpp's olmoe does not apply; its k_norm is hidden_size long, so
 * llama.cpp runs OLMoE without GQA only). */
#include "model/arch_moe.h"
#include "io/gguf.h"

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

static const char *const gguf_names[] = {
    MOE_GGUF_EMBED, MOE_GGUF_ATTN, "blk.%lld.attn_q_norm.weight", "blk.%lld.attn_k_norm.weight",
    "blk.%lld.ffn_norm.weight", MOE_GGUF_ROUTER, MOE_GGUF_GATE_EXPS, MOE_GGUF_UP_EXPS, MOE_GGUF_DOWN_EXPS,
    MOE_GGUF_FINAL,
};
_Static_assert(sizeof gguf_names / sizeof *gguf_names == sizeof specs / sizeof *specs, "one GGUF name per spec");

static const struct lmc_gguf_variant gguf_variants[] = {
    {"olmoe", "olmoe", "OlmoeForCausalLM", false, "{\"hidden_act\":\"silu\",\"norm_topk_prob\":false}", NULL, NULL},
};

static const struct lmc_gguf_key gguf_keys[] = {
    MOE_GGUF_KEYS("num_experts"),
    {"attention.clamp_kqv", "clip_qkv", LMC_GGUF_F32, LMC_GK_OPTIONAL, 0},
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
    if (c->clip_qkv > 0) cJSON_AddNumberToObject(o, "clip_qkv", c->clip_qkv);
    else cJSON_AddNullToObject(o, "clip_qkv");
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
    .gguf_names = gguf_names,
    .gguf = gguf_variants,
    .n_gguf = (int)(sizeof gguf_variants / sizeof *gguf_variants),
    .gguf_keys = gguf_keys,
    .n_gguf_keys = (int)(sizeof gguf_keys / sizeof *gguf_keys),
};
