/* arch_gpt2.c — GPT-2 (GPT2LMHeadModel, with or without the
 * "transformer." prefix): learned positions, LayerNorm, attention over
 * c_attn (one (C, 3C) Conv1D tensor split into the q, k, v slots), GELU
 * (tanh) MLP, head tied to wte. Conv1D weights are (in, out) on disk
 * (LMC_TF_TRANSPOSED): the loader and the training arena keep (out, in). */
#include "model/arch.h"
#include "core/core.h"
#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>

#define LAYER(n) "transformer.h.%lld." n
#define T(name, kind, slot, parts, role, fl, d0, d1) {LAYER(name), true, kind, slot, parts, role, LMC_WHEN_ALWAYS, fl, {d0, d1}}

static const struct lmc_tensor_spec specs[] = {
    {"transformer.wte.weight", false, LMC_TK_TOK_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_V, LMC_D_C}},
    {"transformer.wpe.weight", false, LMC_TK_POS_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_P, LMC_D_C}},
    T("ln_1.weight", LMC_TK_VEC, LMC_V_NORM1, 1, LMC_ROLE_NORM, 0, LMC_D_C, LMC_D_1),
    T("ln_1.bias", LMC_TK_VEC, LMC_V_NORM1_B, 1, LMC_ROLE_BIAS, 0, LMC_D_C, LMC_D_1),
    T("attn.c_attn.weight", LMC_TK_LIN_W, LMC_L_Q, 3, LMC_ROLE_MATRIX, LMC_TF_TRANSPOSED, LMC_D_3C, LMC_D_C),
    T("attn.c_attn.bias", LMC_TK_LIN_B, LMC_L_Q, 3, LMC_ROLE_BIAS, 0, LMC_D_3C, LMC_D_1),
    T("attn.c_proj.weight", LMC_TK_LIN_W, LMC_L_O, 1, LMC_ROLE_MATRIX, LMC_TF_TRANSPOSED | LMC_TF_RESID, LMC_D_C, LMC_D_C),
    T("attn.c_proj.bias", LMC_TK_LIN_B, LMC_L_O, 1, LMC_ROLE_BIAS, 0, LMC_D_C, LMC_D_1),
    T("ln_2.weight", LMC_TK_VEC, LMC_V_NORM2, 1, LMC_ROLE_NORM, 0, LMC_D_C, LMC_D_1),
    T("ln_2.bias", LMC_TK_VEC, LMC_V_NORM2_B, 1, LMC_ROLE_BIAS, 0, LMC_D_C, LMC_D_1),
    T("mlp.c_fc.weight", LMC_TK_LIN_W, LMC_L_UP, 1, LMC_ROLE_MATRIX, LMC_TF_TRANSPOSED, LMC_D_I, LMC_D_C),
    T("mlp.c_fc.bias", LMC_TK_LIN_B, LMC_L_UP, 1, LMC_ROLE_BIAS, 0, LMC_D_I, LMC_D_1),
    T("mlp.c_proj.weight", LMC_TK_LIN_W, LMC_L_DOWN, 1, LMC_ROLE_MATRIX, LMC_TF_TRANSPOSED | LMC_TF_RESID, LMC_D_C, LMC_D_I),
    T("mlp.c_proj.bias", LMC_TK_LIN_B, LMC_L_DOWN, 1, LMC_ROLE_BIAS, 0, LMC_D_C, LMC_D_1),
    {"transformer.ln_f.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},
    {"transformer.ln_f.bias", false, LMC_TK_NORM_F_B, 0, 1, LMC_ROLE_BIAS, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}},
    /* GPT2LMHeadModel always ties; a stored copy is accepted and used */
    {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}},
};

/* llama.cpp's name of each spec above (same order); GGUF keeps every
 * matrix (out, in): the Conv1D weights are transposed there. */
static const char *const gguf_names[] = {
    "token_embd.weight", "position_embd.weight", "blk.%lld.attn_norm.weight", "blk.%lld.attn_norm.bias",
    "blk.%lld.attn_qkv.weight", "blk.%lld.attn_qkv.bias", "blk.%lld.attn_output.weight",
    "blk.%lld.attn_output.bias", "blk.%lld.ffn_norm.weight", "blk.%lld.ffn_norm.bias", "blk.%lld.ffn_up.weight",
    "blk.%lld.ffn_up.bias", "blk.%lld.ffn_down.weight", "blk.%lld.ffn_down.bias", "output_norm.weight",
    "output_norm.bias", "output.weight",
};
_Static_assert(sizeof gguf_names / sizeof *gguf_names == sizeof specs / sizeof *specs, "one GGUF name per spec");

static const struct lmc_gguf_variant gguf_variants[] = {
    {"gpt2", "gpt2", "GPT2LMHeadModel", false, "{\"activation_function\":\"gelu_new\"}", NULL, NULL},
};

static const struct lmc_gguf_key gguf_keys[] = {
    {"context_length", "n_positions", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"embedding_length", "n_embd", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"block_count", "n_layer", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"feed_forward_length", "n_inner", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"attention.head_count", "n_head", LMC_GGUF_U32, LMC_GK_REQUIRED, 0},
    {"attention.layer_norm_epsilon", "layer_norm_epsilon", LMC_GGUF_F32, LMC_GK_REQUIRED, 0},
};

static lmc_status check(const struct lmc_config *c, lmc_err *err) {
    if (c->num_heads * c->head_dim != c->hidden_size)
        return lmc_err_set(err, LMC_ERR_ARG, "gpt2: heads x head_dim (%lld) must equal the hidden size (%lld)",
                           (long long)(c->num_heads * c->head_dim), (long long)c->hidden_size);
    return LMC_OK;
}

static void defaults(struct lmc_config *c) {
    if (!c->intermediate_size) c->intermediate_size = 4 * c->hidden_size;
    c->arch = LMC_ARCH_GPT2;
    snprintf(c->model_type, sizeof c->model_type, "gpt2");
    c->num_kv_heads = c->num_heads;
    c->tie_word_embeddings = true;
    c->act = LMC_ACT_GELU_TANH;
}

static void config_json(const struct lmc_config *c, cJSON *o) {
    cJSON *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddItemToObject(o, "architectures", arch);
    cJSON_AddStringToObject(o, "model_type", "gpt2");
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(o, "n_embd", (double)c->hidden_size);
    cJSON_AddNumberToObject(o, "n_layer", (double)c->num_layers);
    cJSON_AddNumberToObject(o, "n_head", (double)c->num_heads);
    cJSON_AddNumberToObject(o, "n_inner", (double)c->intermediate_size);
    cJSON_AddNumberToObject(o, "n_positions", (double)c->max_position_embeddings);
    cJSON_AddNumberToObject(o, "layer_norm_epsilon", c->norm_eps);
    cJSON_AddStringToObject(o, "activation_function", c->act == LMC_ACT_GELU ? "gelu" : "gelu_new");
    cJSON_AddBoolToObject(o, "tie_word_embeddings", true);
}

const struct lmc_architecture lmc_arch_gpt2 = {
    .name = "gpt2",
    .hf_class = "GPT2LMHeadModel",
    .specs = specs,
    .n_specs = (int)(sizeof specs / sizeof *specs),
    .alt_prefix = "transformer.",
    .norm = &lmc_norm_layer,
    .mixer = &lmc_mixer_attention,
    .ffn = &lmc_ffn_gelu,
    .learned_pos = true,
    .check = check,
    .config_defaults = defaults,
    .config_json = config_json,
    .gguf_names = gguf_names,
    .gguf = gguf_variants,
    .n_gguf = (int)(sizeof gguf_variants / sizeof *gguf_variants),
    .gguf_keys = gguf_keys,
    .n_gguf_keys = (int)(sizeof gguf_keys / sizeof *gguf_keys),
};
