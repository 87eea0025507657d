/* arch_llama.c — the Llama family (Llama 2/3, Mistral, Qwen2):
 * LlamaForCausalLM-style tensors, pre-norm blocks of RMSNorm, attention
 * with RoPE and GQA (optional q/k/v and o biases), SwiGLU MLP (optional
 * biases), tied or untied head; their GGUF (llama.cpp) names and keys. */
#include "model/arch.h"
#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>

#define LAYER(n) "model.layers.%lld." n
#define LIN(n, slot, o, i, role, when, fl) {LAYER(n), true, LMC_TK_LIN_W, slot, 1, role, when, fl, {o, i}}
#define BIAS(n, slot, o, when) {LAYER(n), true, LMC_TK_LIN_B, slot, 1, LMC_ROLE_BIAS, when, 0, {o, LMC_D_1}}
#define NORM(n, slot) {LAYER(n), true, LMC_TK_VEC, slot, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}}

static const struct lmc_tensor_spec specs[] = {
    {"model.embed_tokens.weight", false, LMC_TK_TOK_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_V, LMC_D_C}},
    NORM("input_layernorm.weight", LMC_V_NORM1),
    LIN("self_attn.q_proj.weight", LMC_L_Q, LMC_D_QD, LMC_D_C, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, LMC_TF_GGUF_ROPE),
    BIAS("self_attn.q_proj.bias", LMC_L_Q, LMC_D_QD, LMC_WHEN_QKV_BIAS),
    LIN("self_attn.k_proj.weight", LMC_L_K, LMC_D_KVD, LMC_D_C, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, LMC_TF_GGUF_ROPE),
    BIAS("self_attn.k_proj.bias", LMC_L_K, LMC_D_KVD, LMC_WHEN_QKV_BIAS),
    LIN("self_attn.v_proj.weight", LMC_L_V, LMC_D_KVD, LMC_D_C, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, 0),
    BIAS("self_attn.v_proj.bias", LMC_L_V, LMC_D_KVD, LMC_WHEN_QKV_BIAS),
    LIN("self_attn.o_proj.weight", LMC_L_O, LMC_D_C, LMC_D_QD, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, LMC_TF_RESID),
    BIAS("self_attn.o_proj.bias", LMC_L_O, LMC_D_C, LMC_WHEN_O_BIAS),
    NORM("post_attention_layernorm.weight", LMC_V_NORM2),
    LIN("mlp.gate_proj.weight", LMC_L_GATE, LMC_D_I, LMC_D_C, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, 0),
    BIAS("mlp.gate_proj.bias", LMC_L_GATE, LMC_D_I, LMC_WHEN_MLP_BIAS),
    LIN("mlp.up_proj.weight", LMC_L_UP, LMC_D_I, LMC_D_C, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, 0),
    BIAS("mlp.up_proj.bias", LMC_L_UP, LMC_D_I, LMC_WHEN_MLP_BIAS),
    LIN("mlp.down_proj.weight", LMC_L_DOWN, LMC_D_C, LMC_D_I, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, LMC_TF_RESID),
    BIAS("mlp.down_proj.bias", LMC_L_DOWN, LMC_D_C, LMC_WHEN_MLP_BIAS),
    {"model.norm.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},
    {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}},
};

/* llama.cpp's name of each spec above (same order). */
static const char *const gguf_names[] = {
    "token_embd.weight", "blk.%lld.attn_norm.weight",
    "blk.%lld.attn_q.weight", "blk.%lld.attn_q.bias", "blk.%lld.attn_k.weight", "blk.%lld.attn_k.bias",
    "blk.%lld.attn_v.weight", "blk.%lld.attn_v.bias", "blk.%lld.attn_output.weight", "blk.%lld.attn_output.bias",
    "blk.%lld.ffn_norm.weight", "blk.%lld.ffn_gate.weight", "blk.%lld.ffn_gate.bias",
    "blk.%lld.ffn_up.weight", "blk.%lld.ffn_up.bias", "blk.%lld.ffn_down.weight", "blk.%lld.ffn_down.bias",
    "output_norm.weight", "output.weight",
};
_Static_assert(sizeof gguf_names / sizeof *gguf_names == sizeof specs / sizeof *specs, "one GGUF name per spec");

/* llama.cpp's architectures: Llama and Mistral convert as "llama" (q/k
 * rows permuted), Qwen2 as "qwen2" (not permuted). */
static const struct lmc_gguf_variant gguf_variants[] = {
    {"llama", "llama", "LlamaForCausalLM", true, "{\"hidden_act\":\"silu\"}", NULL, NULL},
    {"qwen2", "qwen2", "Qwen2ForCausalLM", false, "{\"hidden_act\":\"silu\"}", NULL, NULL},
};

static const struct lmc_gguf_key gguf_keys[] = {
    {"context_length", "max_position_embeddings", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"embedding_length", "hidden_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"block_count", "num_hidden_layers", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"feed_forward_length", "intermediate_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"attention.head_count", "num_attention_heads", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"attention.head_count_kv", "num_key_value_heads", LMC_GGUF_U32, LMC_GK_OPTIONAL, 0},
    {"attention.layer_norm_rms_epsilon", "rms_norm_eps", LMC_GGUF_F32, LMC_GK_REQUIRED, 0},
    {"rope.freq_base", "rope_theta", LMC_GGUF_F32, LMC_GK_DEFAULT, 10000},
    {"attention.key_length", "head_dim", LMC_GGUF_U32, LMC_GK_OPTIONAL, 0},
    {"attention.value_length", "head_dim", LMC_GGUF_U32, LMC_GK_WRITE, 0},
    {"rope.dimension_count", "head_dim", LMC_GGUF_U32, LMC_GK_WRITE, 0},
    {"vocab_size", "vocab_size", LMC_GGUF_U32, LMC_GK_WRITE, 0},
};

static lmc_status check(const struct lmc_config *c, lmc_err *err) {
    (void)c;
    (void)err;
    return LMC_OK;
}

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = (8 * c->hidden_size / 3 + 63) / 64 * 64;
    c->arch = LMC_ARCH_LLAMA;
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->act = LMC_ACT_SILU;
}

void lmc_arch_llama_json(const struct lmc_config *c, cJSON *o, const char *cls, const char *type,
                         bool attention_bias_field) {
    cJSON *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString(cls));
    cJSON_AddItemToObject(o, "architectures", arch);
    cJSON_AddStringToObject(o, "model_type", type);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(o, "hidden_size", (double)c->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)c->num_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)c->num_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)c->num_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", (double)c->head_dim);
    cJSON_AddNumberToObject(o, "max_position_embeddings", (double)c->max_position_embeddings);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->norm_eps);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    if (attention_bias_field) cJSON_AddBoolToObject(o, "attention_bias", c->qkv_bias);
    cJSON_AddBoolToObject(o, "mlp_bias", c->mlp_bias);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope.theta);
    cJSON *rp = cJSON_CreateObject();
    cJSON_AddNumberToObject(rp, "rope_theta", c->rope.theta);
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddItemToObject(o, "rope_parameters", rp);
}

/* Qwen2 (q/k/v biases without an o bias) is written as Qwen2; llama's
 * attention_bias covers o too. */
static void config_json(const struct lmc_config *c, cJSON *o) {
    bool qwen2 = c->qkv_bias && !c->o_bias;
    lmc_arch_llama_json(c, o, qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM", qwen2 ? "qwen2" : "llama",
                        !qwen2);
}

const struct lmc_architecture lmc_arch_llama = {
    .name = "llama",
    .hf_class = "LlamaForCausalLM",
    .specs = specs,
    .n_specs = (int)(sizeof specs / sizeof *specs),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_attention,
    .ffn = &lmc_ffn_swiglu,
    .check = check,
    .config_defaults = defaults,
    .config_json = config_json,
    .gguf_names = gguf_names,
    .gguf = gguf_variants,
    .n_gguf = (int)(sizeof gguf_variants / sizeof *gguf_variants),
    .gguf_keys = gguf_keys,
    .n_gguf_keys = (int)(sizeof gguf_keys / sizeof *gguf_keys),
};
