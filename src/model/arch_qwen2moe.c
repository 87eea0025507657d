/* arch_qwen2moe.c — Qwen2-MoE (Qwen2MoeForCausalLM): the Qwen2 attention
 * block (q/k/v biases, no o bias) with a mixture-of-experts feed-forward
 * part (lmc_ffn_moe): router mlp.gate (num_experts, C), routed SwiGLU
 * experts one tensor per expert (mlp.experts.N.gate_proj / up_proj /
 * down_proj, moe_intermediate_size wide), top-k renormalised when
 * norm_topk_prob, plus a shared expert for every token
 * (mlp.shared_expert.*, shared_expert_intermediate_size wide) scaled by
 * sigmoid(mlp.shared_expert_gate . h). Layers past decoder_sparse_step's
 * rhythm or listed in mlp_only_layers have the dense MLP (mlp.gate_proj /
 * up_proj / down_proj, intermediate_size wide) instead. GGUF: llama.cpp's
 * "qwen2moe" (the shared expert as ffn_*_shexp, its gate ffn_gate_inp_shexp;
 * top-k never renormalised there; dense layers written as ffn_gate/up/down,
 * which llama.cpp does not run, read back by the absence of their router). */
#include "model/arch_moe.h"
#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>

static const struct lmc_tensor_spec specs[] = {
    MOE_EMBED,
    MOE_ATTN,
    MOE_NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    MOE_QWEN_FFN,
    MOE_LIN("mlp.shared_expert.gate_proj.weight", LMC_L_GATE, LMC_D_SI, LMC_D_C, 0, LMC_WHEN_SPARSE),
    MOE_LIN("mlp.shared_expert.up_proj.weight", LMC_L_UP, LMC_D_SI, LMC_D_C, 0, LMC_WHEN_SPARSE),
    MOE_LIN("mlp.shared_expert.down_proj.weight", LMC_L_DOWN, LMC_D_C, LMC_D_SI, LMC_TF_RESID, LMC_WHEN_SPARSE),
    MOE_LIN("mlp.shared_expert_gate.weight", LMC_L_SHARED_GATE, LMC_D_1, LMC_D_C, 0, LMC_WHEN_SPARSE),
    MOE_FINAL,
};

static const char *const gguf_names[] = {
    MOE_GGUF_EMBED, MOE_GGUF_ATTN, "blk.%lld.ffn_norm.weight", MOE_GGUF_QWEN_FFN,
    "blk.%lld.ffn_gate_shexp.weight", "blk.%lld.ffn_up_shexp.weight", "blk.%lld.ffn_down_shexp.weight",
    "blk.%lld.ffn_gate_inp_shexp.weight", MOE_GGUF_FINAL,
};
_Static_assert(sizeof gguf_names / sizeof *gguf_names == sizeof specs / sizeof *specs, "one GGUF name per spec");

static const struct lmc_gguf_variant gguf_variants[] = {
    {"qwen2moe", "qwen2_moe", "Qwen2MoeForCausalLM", false, "{\"hidden_act\":\"silu\",\"norm_topk_prob\":false}",
     NULL, MOE_GGUF_ROUTER},
};

static const struct lmc_gguf_key gguf_keys[] = {
    MOE_GGUF_KEYS("num_experts"),
    {"expert_feed_forward_length", "moe_intermediate_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"expert_shared_feed_forward_length", "shared_expert_intermediate_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
};

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
    lmc_arch_moe_defaults(c, 0.001);
    if (!c->moe_intermediate_size) c->moe_intermediate_size = c->intermediate_size / 4 > 0 ? c->intermediate_size / 4 : 1;
    if (!c->shared_expert_intermediate_size) c->shared_expert_intermediate_size = c->intermediate_size;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "Qwen2MoeForCausalLM", "qwen2_moe", false);
    lmc_arch_moe_json(c, o, "num_experts", true);
    cJSON_AddNumberToObject(o, "moe_intermediate_size", (double)c->moe_intermediate_size);
    cJSON_AddNumberToObject(o, "shared_expert_intermediate_size", (double)c->shared_expert_intermediate_size);
    cJSON_AddBoolToObject(o, "norm_topk_prob", c->norm_topk_prob);
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
    .gguf_names = gguf_names,
    .gguf = gguf_variants,
    .n_gguf = (int)(sizeof gguf_variants / sizeof *gguf_variants),
    .gguf_keys = gguf_keys,
    .n_gguf_keys = (int)(sizeof gguf_keys / sizeof *gguf_keys),
};
