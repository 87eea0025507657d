/* model.h — a loaded causal language model: config, weights (memory-mapped
 * where the dtype allows, otherwise converted once into an owned buffer),
 * and the forward pass over a KV cache through the backend table. One
 * implementation per architecture family (llama.c, gpt2.c) fills the
 * per-layer weight table; the forward in forward.c is shared. */
#ifndef LMC_MODEL_H
#define LMC_MODEL_H

#include "lmc.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

/* Weight storage chosen at load time (CPU: matrices keep their disk dtype
 * under AUTO; BF16/F16 convert F32 matrices once at load). */
enum lmc_wdtype { LMC_WDTYPE_AUTO = 0, LMC_WDTYPE_F32, LMC_WDTYPE_BF16, LMC_WDTYPE_F16 };

struct lmc_layer {
    const float *norm1_w, *norm1_b;      /* (C) attention-input norm; b NULL for RMSNorm */
    struct lmc_mat wq, wk, wv, wo;       /* (H*hd, C) (KV*hd, C) (KV*hd, C) (C, H*hd) */
    const float *bq, *bk, *bv, *bo;      /* NULL when absent */
    const float *norm2_w, *norm2_b;      /* (C) MLP-input norm */
    struct lmc_mat w_gate, w_up, w_down; /* (I, C) (I, C) (C, I); w_gate unused for GELU MLP */
    const float *b_gate, *b_up, *b_down;
};

struct lmc_model {
    struct lmc_config cfg;
    struct lmc_st st;                    /* the mapped safetensors */
    struct lmc_mat tok_emb;              /* (V, C) */
    struct lmc_mat pos_emb;              /* (P, C) GPT-2 learned positions; data NULL otherwise */
    struct lmc_mat lm_head;              /* (V, C), may share tok_emb's data */
    const float *norm_f_w, *norm_f_b;    /* (C) */
    struct lmc_layer *layers;            /* (L) */
    int64_t rot_dim;                     /* rotary dims per head (0 for GPT-2) */
    int64_t n_params;
    size_t weight_bytes;                 /* bytes of all weights as used */
    enum lmc_wdtype wdtype;
    bool on_device;                      /* weights go to a non-host backend */
    /* owned allocations (converted weights, f32 copies of vectors) */
    void **owned;
    int n_owned, cap_owned;
    /* weights uploaded to a non-host backend (freed through it) */
    const struct lmc_backend *placed_on;
    void **placed;
    int n_placed;
};

struct lmc_model_opts {
    enum lmc_wdtype wdtype;
    /* backend the weights are used on; NULL or a host-memory backend keeps
     * them in place, others get one upload at load */
    const struct lmc_backend *be;
};

/* Loads dir (config.json, model.safetensors[.index.json]). Every tensor the
 * architecture needs must be present with the expected shape and a float
 * dtype; tensors the architecture does not use are reported as errors
 * (except known-harmless buffers such as rotary inv_freq / attn.bias). */
lmc_status lmc_model_load(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                          lmc_err *err);
void lmc_model_free(struct lmc_model *m);

/* KV cache for one sequence: per layer K and V rows (ctx, n_kv*hd) f32,
 * in backend memory. */
struct lmc_kv {
    const struct lmc_backend *be;
    int64_t ctx;                         /* capacity in positions */
    int64_t n_layers, row;               /* row = n_kv*hd */
    float *k, *v;                        /* (L, ctx, row) */
};
lmc_status lmc_kv_init(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be,
                       int64_t ctx, lmc_err *err);
void lmc_kv_free(struct lmc_kv *kv);
size_t lmc_kv_bytes(const struct lmc_model *m, int64_t ctx);

/* Activation scratch in backend memory for up to max_tokens tokens per
 * forward step, with logits for up to logit_rows rows (>= 1). */
struct lmc_acts {
    const struct lmc_backend *be;
    int64_t max_tokens, logit_rows;
    float *x, *h, *q, *att, *ff1, *ff2;  /* (T, C|H*hd) and (T, I) */
    float *logits;                       /* (logit_rows, V) */
    int32_t *ids, *pos;                  /* (T) */
    double *inv_freq;                    /* (head_dim/2) */
};
lmc_status lmc_acts_init(struct lmc_acts *a, const struct lmc_model *m, const struct lmc_backend *be,
                         int64_t max_tokens, int64_t logit_rows, lmc_err *err);
void lmc_acts_free(struct lmc_acts *a);
size_t lmc_acts_bytes(const struct lmc_model *m, int64_t max_tokens, int64_t logit_rows);

/* Runs ids[0..n) (host) at positions pos0.. through the model, appending
 * their K/V to kv (pos0 + n <= kv->ctx, ids < vocab: checked, LMC_ERR_ARG).
 * n may exceed a->max_tokens: it is processed in chunks. logits (host)
 * receives (n, V) rows when all_logits, else only the last token's (V). */
lmc_status lmc_model_forward(const struct lmc_model *m, const struct lmc_backend *be,
                             struct lmc_acts *a, struct lmc_kv *kv, const int32_t *ids, int64_t n,
                             int64_t pos0, float *logits, bool all_logits, lmc_err *err);

/* Rotary inverse frequencies (rot_dim/2) and cos/sin scale for a sequence
 * of total length seq_len, per the config's rope type (HF semantics). */
void lmc_rope_freqs(const struct lmc_config *c, int64_t rot_dim, int64_t seq_len, double *inv_freq,
                    float *attn_scale);

/* Architecture fill-ins, called by lmc_model_load after the config and
 * safetensors are open: bind every layer's tensors. */
lmc_status lmc_llama_bind(struct lmc_model *m, lmc_err *err);
lmc_status lmc_gpt2_bind(struct lmc_model *m, lmc_err *err);

/* Helpers for the bind functions (weights.c). */
lmc_status lmc_model_mat(struct lmc_model *m, const char *name, int64_t rows, int64_t cols,
                         bool transpose, struct lmc_mat *out, lmc_err *err);
lmc_status lmc_model_vec(struct lmc_model *m, const char *name, int64_t n, const float **out,
                         lmc_err *err);
/* Like lmc_model_vec but returns LMC_OK with *out = NULL when absent. */
lmc_status lmc_model_vec_opt(struct lmc_model *m, const char *name, int64_t n, const float **out,
                             lmc_err *err);
void *lmc_model_own(struct lmc_model *m, size_t bytes);

#endif
