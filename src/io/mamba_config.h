/* mamba_config.h — the configuration of a MambaForCausalLM ("mamba") or
 * Mamba2ForCausalLM ("mamba2") folder (io/mamba_config.c parses it; the
 * model layer keeps it in struct lmc_config.mamba, ssm/mamba.h runs it). */
#ifndef LMC_IO_MAMBA_CONFIG_H
#define LMC_IO_MAMBA_CONFIG_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lmc_mamba_kind { LMC_MAMBA_1 = 1, LMC_MAMBA_2 = 2 };

struct lmc_mamba_config {
    enum lmc_mamba_kind kind;      /* model_type "mamba" or "mamba2" */
    int64_t vocab_size, hidden_size, num_layers;
    int64_t d_inner;               /* Mamba-1 intermediate_size; Mamba-2 expand*hidden */
    int64_t expand;
    int64_t state_size;            /* N */
    int64_t conv_kernel;           /* K */
    int64_t time_step_rank;        /* R (Mamba-1; "auto" = ceil(hidden/16)) */
    bool use_bias, use_conv_bias, residual_in_fp32, tie_word_embeddings;
    double norm_eps;               /* layer_norm_epsilon */
    /* Mamba-2 */
    int64_t num_heads, head_dim, n_groups, chunk_size;
    double dt_min, dt_max;         /* time_step_limit (default 0, +inf) */
    /* derived */
    int64_t conv_dim;              /* channels of the conv: D (Mamba-1), D + 2*G*N (Mamba-2) */
    int64_t in_proj_dim;           /* 2*D (Mamba-1), 2*D + 2*G*N + heads (Mamba-2) */
    int64_t xproj_dim;             /* R + 2*N (Mamba-1) */
    int64_t eos_token_id, bos_token_id, pad_token_id; /* -1 when absent */
};

/* Parses config.json text (json, len) of a MambaForCausalLM or
 * Mamba2ForCausalLM folder; `label` names the file in messages. Checks
 * types, ranges and consistency (num_heads * head_dim == expand * hidden,
 * heads divisible by n_groups, intermediate_size == expand * hidden, ...). */
lmc_status lmc_mamba_config_parse(struct lmc_mamba_config *c, const char *json, size_t len,
                                  const char *label, lmc_err *err);
/* Reads dir/config.json. */
lmc_status lmc_mamba_config_load(struct lmc_mamba_config *c, const char *dir, lmc_err *err);

/* Floats of recurrent state one sequence needs in one layer: the conv
 * state (K-1, conv_dim) and the SSM state (D, N) or (heads, head_dim, N). */
int64_t lmc_mamba_conv_state_floats(const struct lmc_mamba_config *c);
int64_t lmc_mamba_ssm_state_floats(const struct lmc_mamba_config *c);
/* Bytes per sequence, all layers (lmc info's "state bytes per sequence"). */
size_t lmc_mamba_state_bytes(const struct lmc_mamba_config *c);

#endif
