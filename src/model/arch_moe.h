/* arch_moe.h — what the mixture-of-experts architecture files share
 * (arch_mixtral.c, arch_qwen2moe.c, arch_qwen3moe.c, arch_olmoe.c): spec
 * table rows (the Llama-style attention block with its optional biases,
 * the routed experts, the embeddings and the head), the config check and
 * the experts' config.json fields (arch_moe.c). Expert and router rows
 * exist in sparse layers only, the dense MLP rows in the others
 * (lmc_config_layer_sparse: Qwen's decoder_sparse_step / mlp_only_layers). */
#ifndef LMC_MODEL_ARCH_MOE_H
#define LMC_MODEL_ARCH_MOE_H

#include "model/arch.h"

#define MOE_LAYER(n) "model.layers.%lld." n
#define MOE_LIN(n, slot, o, i, fl, when) {MOE_LAYER(n), true, LMC_TK_LIN_W, slot, 1, LMC_ROLE_MATRIX, when, fl, {o, i}}
#define MOE_BIAS(n, slot, o, when) {MOE_LAYER(n), true, LMC_TK_LIN_B, slot, 1, LMC_ROLE_BIAS, when, 0, {o, LMC_D_1}}
#define MOE_NORM(n, slot, d) {MOE_LAYER(n), true, LMC_TK_VEC, slot, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {d, LMC_D_1}}
/* one expert projection under prefix ("mlp.experts." ...): the name holds the expert index */
#define MOE_EXPERT(prefix, n, slot, o, i, fl) \
    {MOE_LAYER(prefix "%lld." n), true, LMC_TK_EXPERT_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_SPARSE, fl, {o, i}}

#define MOE_EMBED {"model.embed_tokens.weight", false, LMC_TK_TOK_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_V, LMC_D_C}}
#define MOE_FINAL                                                                                                    \
    {"model.norm.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},          \
    {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}}
/* input norm and the q/k/v/o projections with their optional biases */
#define MOE_ATTN                                                                                                     \
    MOE_NORM("input_layernorm.weight", LMC_V_NORM1, LMC_D_C),                                                        \
    MOE_LIN("self_attn.q_proj.weight", LMC_L_Q, LMC_D_QD, LMC_D_C, LMC_TF_GGUF_ROPE, LMC_WHEN_ALWAYS),               \
    MOE_BIAS("self_attn.q_proj.bias", LMC_L_Q, LMC_D_QD, LMC_WHEN_QKV_BIAS),                                         \
    MOE_LIN("self_attn.k_proj.weight", LMC_L_K, LMC_D_KVD, LMC_D_C, LMC_TF_GGUF_ROPE, LMC_WHEN_ALWAYS),              \
    MOE_BIAS("self_attn.k_proj.bias", LMC_L_K, LMC_D_KVD, LMC_WHEN_QKV_BIAS),                                        \
    MOE_LIN("self_attn.v_proj.weight", LMC_L_V, LMC_D_KVD, LMC_D_C, 0, LMC_WHEN_ALWAYS),                             \
    MOE_BIAS("self_attn.v_proj.bias", LMC_L_V, LMC_D_KVD, LMC_WHEN_QKV_BIAS),                                        \
    MOE_LIN("self_attn.o_proj.weight", LMC_L_O, LMC_D_C, LMC_D_QD, LMC_TF_RESID, LMC_WHEN_ALWAYS),                   \
    MOE_BIAS("self_attn.o_proj.bias", LMC_L_O, LMC_D_C, LMC_WHEN_O_BIAS)
/* the router and the experts named mlp.experts.N.gate_proj / up_proj / down_proj
 * (Qwen and OLMoE), and the dense MLP of the other layers (intermediate_size wide) */
#define MOE_QWEN_FFN                                                                                                 \
    MOE_LIN("mlp.gate.weight", LMC_L_ROUTER, LMC_D_E, LMC_D_C, 0, LMC_WHEN_SPARSE),                                  \
    MOE_EXPERT("mlp.experts.", "gate_proj.weight", LMC_X_GATE, LMC_D_EI, LMC_D_C, 0),                                \
    MOE_EXPERT("mlp.experts.", "up_proj.weight", LMC_X_UP, LMC_D_EI, LMC_D_C, 0),                                    \
    MOE_EXPERT("mlp.experts.", "down_proj.weight", LMC_X_DOWN, LMC_D_C, LMC_D_EI, LMC_TF_RESID),                     \
    MOE_LIN("mlp.gate_proj.weight", LMC_L_GATE, LMC_D_I, LMC_D_C, 0, LMC_WHEN_DENSE),                                \
    MOE_LIN("mlp.up_proj.weight", LMC_L_UP, LMC_D_I, LMC_D_C, 0, LMC_WHEN_DENSE),                                    \
    MOE_LIN("mlp.down_proj.weight", LMC_L_DOWN, LMC_D_C, LMC_D_I, LMC_TF_RESID, LMC_WHEN_DENSE)

/* llama.cpp's names of the rows above (GGUF; the same order) */
#define MOE_GGUF_EMBED "token_embd.weight"
#define MOE_GGUF_FINAL "output_norm.weight", "output.weight"
#define MOE_GGUF_ATTN                                                                                                \
    "blk.%lld.attn_norm.weight", "blk.%lld.attn_q.weight", "blk.%lld.attn_q.bias", "blk.%lld.attn_k.weight",       \
    "blk.%lld.attn_k.bias", "blk.%lld.attn_v.weight", "blk.%lld.attn_v.bias", "blk.%lld.attn_output.weight",      \
    "blk.%lld.attn_output.bias"
/* the router and the experts, stacked (ne [in, out, experts]) per layer and projection */
#define MOE_GGUF_ROUTER "blk.%lld.ffn_gate_inp.weight"
#define MOE_GGUF_GATE_EXPS "blk.%lld.ffn_gate_exps.weight"
#define MOE_GGUF_UP_EXPS "blk.%lld.ffn_up_exps.weight"
#define MOE_GGUF_DOWN_EXPS "blk.%lld.ffn_down_exps.weight"
#define MOE_GGUF_QWEN_FFN                                                                                            \
    MOE_GGUF_ROUTER, MOE_GGUF_GATE_EXPS, MOE_GGUF_UP_EXPS, MOE_GGUF_DOWN_EXPS, "blk.%lld.ffn_gate.weight",         \
    "blk.%lld.ffn_up.weight", "blk.%lld.ffn_down.weight"
/* hyper-parameters every MoE family writes (llama.cpp's keys); experts_field
 * names the config field of the expert count */
#define MOE_GGUF_KEYS(experts_field)                                                                                 \
    {"context_length", "max_position_embeddings", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},                                 \
    {"embedding_length", "hidden_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},                                           \
    {"block_count", "num_hidden_layers", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},                                          \
    {"feed_forward_length", "intermediate_size", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},                                  \
    {"attention.head_count", "num_attention_heads", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},                               \
    {"attention.head_count_kv", "num_key_value_heads", LMC_GGUF_U32, LMC_GK_OPTIONAL, 0},                            \
    {"attention.layer_norm_rms_epsilon", "rms_norm_eps", LMC_GGUF_F32, LMC_GK_REQUIRED, 0},                          \
    {"rope.freq_base", "rope_theta", LMC_GGUF_F32, LMC_GK_DEFAULT, 10000},                                           \
    {"attention.key_length", "head_dim", LMC_GGUF_U32, LMC_GK_OPTIONAL, 0},                                          \
    {"attention.value_length", "head_dim", LMC_GGUF_U32, LMC_GK_WRITE, 0},                                           \
    {"rope.dimension_count", "head_dim", LMC_GGUF_U32, LMC_GK_WRITE, 0},                                             \
    {"vocab_size", "vocab_size", LMC_GGUF_U32, LMC_GK_WRITE, 0},                                                     \
    {"expert_count", experts_field, LMC_GGUF_U32, LMC_GK_REQUIRED, 0},                                               \
    {"expert_used_count", "num_experts_per_tok", LMC_GGUF_U32, LMC_GK_REQUIRED, 0}

struct cJSON;
struct lmc_st;
struct lmc_st_tensor;

/* Sizes the expert feed-forward part can run (experts, top-k, width). */
lmc_status lmc_arch_moe_check(const struct lmc_config *c, lmc_err *err);
/* Default router fields of a config built from sizes (8 experts, top-2, coef). */
void lmc_arch_moe_defaults(struct lmc_config *c, double aux_coef);
/* The experts' config.json fields: experts under experts_key, top-k, the
 * auxiliary loss; with sparse_layers the Qwen decoder_sparse_step and
 * mlp_only_layers. */
void lmc_arch_moe_json(const struct lmc_config *c, struct cJSON *o, const char *experts_key, bool sparse_layers);
/* Fused expert tensors (transformers' in-memory layout, where a checkpoint
 * has it): model.layers.L.mlp.experts.gate_up_proj (E, 2I, C) and
 * .down_proj (E, C, I). For the on-disk per-expert name (Mixtral's
 * block_sparse_moe.experts.N.w1/w3/w2 or mlp.experts.N.gate_proj/up_proj/
 * down_proj), sets *fused to the fused tensor holding it and *view to a 2-D
 * tensor over its rows (gate = [e, :I], up = [e, I:], down = [e]); *fused
 * NULL when there is none. A fused tensor of the wrong shape is
 * LMC_ERR_FORMAT naming it and the expected shape. */
lmc_status lmc_arch_moe_fused(const struct lmc_st *st, const struct lmc_config *c, const char *name,
                              struct lmc_st_tensor *view, const struct lmc_st_tensor **fused, lmc_err *err);

#endif
