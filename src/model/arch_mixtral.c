/* arch_mixtral.c — Mixtral (MixtralForCausalLM): the Llama attention block
 * with a mixture-of-experts feed-forward part (lmc_ffn_moe): a router
 * (block_sparse_moe.gate, (num_local_experts, C)) and SwiGLU experts stored
 * one tensor per expert as checkpoints save them
 * (block_sparse_moe.experts.N.w1 = gate, w3 = up, w2 = down; each expert
 * intermediate_size wide). Softmax, top-k, always renormalised. GGUF:
 * llama.cpp's "llama" architecture with expert_count (Q/K rows permuted,
 * the experts stacked per layer). */
#include "model/arch_moe.h"
#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>

static const struct lmc_tensor_spec specs[] = {
    MOE_EMBED,
    MOE_ATTN,
    MOE_NORM("post_attention_layernorm.weight", LMC_V_NORM2, LMC_D_C),
    MOE_LIN("block_sparse_moe.gate.weight", LMC_L_ROUTER, LMC_D_E, LMC_D_C, 0, LMC_WHEN_SPARSE),
    MOE_EXPERT("block_sparse_moe.experts.", "w1.weight", LMC_X_GATE, LMC_D_EI, LMC_D_C, 0),
    MOE_EXPERT("block_sparse_moe.experts.", "w2.weight", LMC_X_DOWN, LMC_D_C, LMC_D_EI, LMC_TF_RESID),
    MOE_EXPERT("block_sparse_moe.experts.", "w3.weight", LMC_X_UP, LMC_D_EI, LMC_D_C, 0),
    MOE_FINAL,
};

static const char *const gguf_names[] = {
    MOE_GGUF_EMBED, MOE_GGUF_ATTN, "blk.%lld.ffn_norm.weight", MOE_GGUF_ROUTER, MOE_GGUF_GATE_EXPS,
    MOE_GGUF_DOWN_EXPS, MOE_GGUF_UP_EXPS, MOE_GGUF_FINAL,
};
_Static_assert(sizeof gguf_names / sizeof *gguf_names == sizeof specs / sizeof *specs, "one GGUF name per spec");

/* llama.cpp writes Mixtral as "llama" with experts: a llama file holding
 * llama.expert_count is this one */
static const struct lmc_gguf_variant gguf_variants[] = {
    {"llama", "mixtral", "MixtralForCausalLM", true, "{\"hidden_act\":\"silu\"}", "expert_count", NULL},
};

static const struct lmc_gguf_key gguf_keys[] = {MOE_GGUF_KEYS("num_local_experts")};

static lmc_status check(const struct lmc_config *c, lmc_err *err) { return lmc_arch_moe_check(c, err); }

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_MIXTRAL;
    snprintf(c->model_type, sizeof c->model_type, "mixtral");
    c->act = LMC_ACT_SILU;
    lmc_arch_moe_defaults(c, 0.001);
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = true;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    lmc_arch_llama_json(c, o, "MixtralForCausalLM", "mixtral", false);
    lmc_arch_moe_json(c, o, "num_local_experts", false);
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
    .gguf_names = gguf_names,
    .gguf = gguf_variants,
    .n_gguf = (int)(sizeof gguf_variants / sizeof *gguf_variants),
    .gguf_keys = gguf_keys,
    .n_gguf_keys = (int)(sizeof gguf_keys / sizeof *gguf_keys),
};
