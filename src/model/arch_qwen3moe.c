/* arch_qwen3moe.c — Qwen3-MoE (Qwen3MoeForCausalLM): the Qwen3 attention
 * block (explicit head_dim, q/k RMSNorm per head) with a mixture-of-experts
 * feed-forward part (lmc_ffn_moe): router mlp.gate (num_experts, C) and
 * SwiGLU experts one tensor per expert (mlp.experts.N.gate_proj / up_proj /
 * down_proj, moe_intermediate_size wide); softmax, top-k, renormalised when
 * norm_topk_prob. Layers outside decoder_sparse_step's rhythm or listed
 * in mlp_only_layers have the dense MLP (mlp.gate_proj / up_proj /
 * down_proj, intermediate_size wide). GGUF: llama.cpp's "qwen3moe" (it
 * renormalises the top-k always; dense layers, which llama.cpp does not
 * run, are written as ffn_gate/up/down and read back by the absence of
 * their router). */
#include "model/arch_moe.h"
#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>

static const struct lmc_tensor_spec specs[] = {
    MOE_EMBED,
    MOE_ATTN,
    MOE_NORM("self_attn.q_norm.weight", LMC_V_Q_NORM, LMC_D_HD),
    MOE_NORM("self_attn.k_norm.weight", LMC_V_K_NORM, LMC_D_HD),
    MOE_NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    MOE_QWEN_FFN,
    MOE_FINAL,
};

static const char *const gguf_names[] = {
    MOE_GGUF_EMBED, MOE_GGUF_ATTN, "blk.%lld.attn_q_norm.weight", "blk.%lld.attn_k_norm.weight",
    "blk.%lld.ffn_norm.weight", MOE_GGUF_QWEN_FFN, MOE_GGUF_FINAL,
};
_Static_assert(sizeof gguf_names / sizeof *gguf_names == sizeof specs / sizeof *specs, "one GGUF name per spec");

static const struct lmc_gguf_variant gguf_variants[] = {
    {"qwen3moe", "qwen3_moe", "Qwen3MoeForCausalLM", false, "{\"hidden_act\":\"silu\",\"norm_topk_prob\":true}", NULL,
     MOE_GGUF_ROUTER},
};

static const struct lmc_gguf_key gguf_keys[] = {
    MOE_GGUF_KEYS("num_experts"),
    {"expert_feed_forward_length", "moe_intermediate_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
};

static lmc_status check(const struct lmc_config *c, lmc_err *err) { return lmc_arch_moe_check(c, err); }

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_QWEN3MOE;
    snprintf(c->model_type, sizeof c->model_type, "qwen3_moe");
    c->act = LMC_ACT_SILU;
    c->qk_norm = true;
    c->norm_eps = 1e-6;
    lmc_arch_moe_defaults(c, 0.001);
    if (!c->moe_intermediate_size) c->moe_intermediate_size = c->intermediate_size / 4 > 0 ? c->intermediate_size / 4 : 1;
    c->norm_topk_prob = true;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "Qwen3MoeForCausalLM", "qwen3_moe", true);
    lmc_arch_moe_json(c, o, "num_experts", true);
    cJSON_AddNumberToObject(o, "moe_intermediate_size", (double)c->moe_intermediate_size);
    cJSON_AddBoolToObject(o, "norm_topk_prob", c->norm_topk_prob);
}

const struct lmc_architecture lmc_arch_qwen3moe = {
    .name = "qwen3moe",
    .hf_class = "Qwen3MoeForCausalLM",
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
