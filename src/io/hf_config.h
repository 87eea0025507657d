/* hf_config.h — a Hugging Face config.json (and generation_config.json)
 * read into one flat struct for the model code. Reads both the
 * transformers-5 `rope_parameters` form and the older top-level
 * `rope_theta`/`rope_scaling`; GPT-2 names (n_embd, n_layer, ...) too. */
#ifndef LMC_HF_CONFIG_H
#define LMC_HF_CONFIG_H

#include "io/mamba_config.h"
#include "lmc.h"

#include <stdbool.h>
#include <stdint.h>

/* Which architecture file (src/model/arch_*.c) runs the model; only the
 * parser and the architecture files themselves set or read it. */
enum lmc_arch { LMC_ARCH_LLAMA = 0, LMC_ARCH_GPT2, LMC_ARCH_QWEN3, LMC_ARCH_MIXTRAL, LMC_ARCH_QWEN3MOE,
                LMC_ARCH_QWEN2MOE, LMC_ARCH_OLMOE, LMC_ARCH_MAMBA, LMC_ARCH_MAMBA2 };
enum lmc_act { LMC_ACT_SILU = 0, LMC_ACT_GELU_TANH, LMC_ACT_GELU };
enum lmc_rope_type {
    LMC_ROPE_DEFAULT = 0,
    LMC_ROPE_LINEAR,
    LMC_ROPE_DYNAMIC,
    LMC_ROPE_LLAMA3,
    LMC_ROPE_YARN,
};

struct lmc_rope_config {
    enum lmc_rope_type type;
    double theta;                   /* rope_theta, default 10000 */
    double factor;                  /* linear/dynamic/llama3/yarn; 1 if absent */
    double partial_rotary_factor;   /* 1 if absent */
    int64_t original_max_pos;       /* llama3/yarn/dynamic; 0 if absent */
    double low_freq_factor;         /* llama3 (default 1) */
    double high_freq_factor;        /* llama3 (default 4) */
    double beta_fast, beta_slow;    /* yarn (defaults 32, 1) */
    double attention_factor;        /* yarn; <0 when absent (then 0.1*ln(factor)+1) */
    double mscale, mscale_all_dim;  /* yarn (deepseek style); 0 when absent */
    bool truncate;                  /* yarn; default true */
};

#define LMC_MAX_EOS 8

struct lmc_config {
    enum lmc_arch arch;
    char model_type[32];            /* "llama", "mistral", "qwen2", "qwen3", "gpt2" */
    int64_t vocab_size;
    int64_t hidden_size;
    int64_t intermediate_size;      /* GPT-2: n_inner or 4*n_embd */
    int64_t num_layers;
    int64_t num_heads;
    int64_t num_kv_heads;           /* = num_heads when absent */
    int64_t head_dim;               /* explicit head_dim or hidden/heads */
    int64_t max_position_embeddings;/* GPT-2: n_positions */
    double norm_eps;                /* rms_norm_eps / layer_norm_epsilon */
    bool qkv_bias;                  /* attention_bias (llama) or qwen2 */
    bool o_bias;                    /* attention_bias (llama); false for qwen2 */
    bool mlp_bias;
    bool qk_norm;                   /* RMSNorm of q and k per head (qwen3) */
    bool tie_word_embeddings;
    int64_t sliding_window;         /* 0 when absent/null/disabled */
    enum lmc_act act;               /* hidden_act / activation_function */
    struct lmc_rope_config rope;
    /* token ids, -1 when absent; eos may be a list */
    int64_t bos_token_id;
    int64_t eos_token_ids[LMC_MAX_EOS];
    int n_eos;
    int64_t pad_token_id;
    char torch_dtype[16];           /* "float32", "bfloat16", ... or "" */
    /* from generation_config.json when present (otherwise defaults:
     * temperature 1, top_k 0, top_p 1, min_p 0, repetition_penalty 1,
     * do_sample false) */
    bool gen_do_sample;
    double gen_temperature, gen_top_p, gen_min_p, gen_repetition_penalty;
    int64_t gen_top_k;
    /* mixture of experts (mixtral, qwen3_moe; 0 experts: dense) */
    int64_t num_experts;            /* num_local_experts / num_experts */
    int64_t num_experts_per_tok;    /* top-k */
    int64_t moe_intermediate_size;  /* each expert's width (mixtral: intermediate_size) */
    bool norm_topk_prob;            /* renormalise the top-k probabilities (mixtral: always) */
    int64_t shared_expert_intermediate_size; /* qwen2_moe's shared expert (sigmoid-gated); 0: none */
    /* qwen2_moe: layer l is sparse when (l + 1) % decoder_sparse_step == 0
     * and its bit in mlp_only (mlp_only_layers) is clear; else a dense MLP
     * intermediate_size wide (lmc_config_layer_sparse) */
    int64_t decoder_sparse_step;    /* 1 (and 0: unset) = every layer */
    uint64_t mlp_only[64];          /* bit l: layer l is dense (layers < 4096) */
    bool output_router_logits;      /* training adds the load-balancing loss */
    double clip_qkv;                /* olmoe: q, k (normed) and v clamped to [-clip_qkv, clip_qkv]; 0: none */
    double router_aux_loss_coef;
    /* model_type "mamba" / "mamba2": the SSM sizes (arch_mamba.c) */
    struct lmc_mamba_config mamba;
};

/* Parses config.json text (json, len). `label` names the file in messages.
 * Validates: required fields present with the right types, sizes positive
 * and bounded (heads divide hidden, kv heads divide heads, < 2^31 etc.),
 * model_type known (llama, mistral, qwen2, qwen3, gpt2, mixtral, qwen3_moe, qwen2_moe, olmoe; others -> UNSUPPORTED naming
 * the type). */
lmc_status lmc_config_parse(struct lmc_config *c, const char *json, size_t len,
                            const char *label, lmc_err *err);
/* Merges generation_config.json text into c (eos/bos override and sampling
 * defaults). */
lmc_status lmc_config_parse_generation(struct lmc_config *c, const char *json, size_t len,
                                       const char *label, lmc_err *err);
/* Reads dir/config.json and, if present, dir/generation_config.json. */
lmc_status lmc_config_load(struct lmc_config *c, const char *dir, lmc_err *err);

#endif
