/* mamba.h — Mamba (MambaForCausalLM) and Mamba-2 (Mamba2ForCausalLM) as
 * compositions of the backend's SSM ops (issue 15), self-contained until
 * the model-layer redesign (issue 8) takes the block in as a token-mixer
 * kind: config parsing, weights bound from a Hugging Face folder with every
 * shape checked, the per-sequence recurrent state, the mixer forward
 * (prefill and decode) and the whole-model forward to logits, and the
 * training forward/backward of the mixer.
 *
 * One layer (HF MambaBlock / Mamba2Block): x += mixer(rmsnorm(x)), then
 * rmsnorm(norm_f) and the LM head (tied to the embeddings unless an
 * lm_head.weight is given).
 *   Mamba-1 mixer: [xi | z] = in_proj(h); u = silu(conv(xi)); [dt_r | B | C]
 *     = x_proj(u); delta = dt_proj.weight dt_r; y = scan(u, delta + dt_proj.bias,
 *     A_log, B, C, D, z); out_proj(y).
 *   Mamba-2 mixer: [z | xBC | dt] = in_proj(h); xBC = silu(conv(xBC)); y =
 *     ssd(x, B, C, dt + dt_bias, A_log, D); y = gated_rmsnorm(y, z); out_proj(y).
 * Everything is float32 (the residual stream too: residual_in_fp32 holds). */
#ifndef LMC_SSM_MAMBA_H
#define LMC_SSM_MAMBA_H

#include "lmc.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include "io/mamba_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One layer's weights (backend memory; F32 vectors; matrices F32/F16/BF16). */
struct lmc_mamba_layer {
    const float *norm_w;           /* (hidden) */
    struct lmc_mat in_proj;        /* (in_proj_dim, hidden) */
    const float *in_proj_b;        /* (in_proj_dim) or NULL */
    const float *conv_w;           /* (conv_dim, K) */
    const float *conv_b;           /* (conv_dim) or NULL */
    struct lmc_mat x_proj;         /* Mamba-1: (R + 2N, D) */
    struct lmc_mat dt_proj_ext;    /* Mamba-1: (D, R + 2N) F32: dt_proj.weight, zeros on B|C,
                                      so delta = x_proj's whole row times it (no copy) */
    struct lmc_mat dt_proj;        /* Mamba-1: (D, R) as on disk; used when dt_proj_ext.data is
                                      NULL (the model layer's mixer: delta = dt_proj (x_proj[:R] u)) */
    const float *dt_bias;          /* Mamba-1: dt_proj.bias (D); Mamba-2: dt_bias (heads) */
    const float *A_log;            /* (D, N) or (heads) */
    const float *Dskip;            /* (D) or (heads) */
    const float *gnorm_w;          /* Mamba-2: norm.weight (D) */
    struct lmc_mat out_proj;       /* (hidden, D) */
    const float *out_proj_b;       /* (hidden) or NULL */
};

struct lmc_mamba_model {
    struct lmc_mamba_config cfg;
    struct lmc_backend *be;
    struct lmc_st st;              /* the mapped file(s) */
    struct lmc_mat embed;          /* (vocab, hidden) */
    struct lmc_mat lm_head;        /* = embed when tied */
    const float *norm_f;           /* (hidden) */
    struct lmc_mamba_layer *layers;
    void **owned;                  /* backend allocations to free */
    int64_t n_owned, cap_owned;
};

/* Loads dir (config.json, model.safetensors) onto be. Errors name the
 * tensor and the expected shape (missing A_log/D, wrong shapes, ...). */
lmc_status lmc_mamba_load(struct lmc_mamba_model *m, const char *dir, struct lmc_backend *be,
                          lmc_err *err);
void lmc_mamba_free(struct lmc_mamba_model *m);

/* A pool of recurrent state for n_slots sequences (backend memory, zeroed):
 * layer l's conv state of slot s at conv + (l*n_slots + s) * conv_floats,
 * its SSM state at ssm + (l*n_slots + s) * ssm_floats. */
struct lmc_mamba_state {
    float *conv, *ssm;
    int64_t n_slots, conv_floats, ssm_floats;
};
lmc_status lmc_mamba_state_init(struct lmc_mamba_state *s, const struct lmc_mamba_model *m,
                                int64_t n_slots, lmc_err *err);
/* Zeroes slot s (a new sequence). */
void lmc_mamba_state_reset(struct lmc_mamba_state *s, const struct lmc_mamba_model *m, int64_t slot);
void lmc_mamba_state_free(struct lmc_mamba_state *s, const struct lmc_mamba_model *m);
/* Copies slot src's state (all layers) to slot dst: a snapshot for prefix
 * reuse (a sequence forked after a shared prompt continues from the copy).
 * Goes through host memory (backend download + upload). */
lmc_status lmc_mamba_state_copy(struct lmc_mamba_state *s, const struct lmc_mamba_model *m,
                                int64_t dst, int64_t src, lmc_err *err);

/* The mixer of layer l on h (B*T, hidden) normed rows, B sequences of T
 * tokens continuing from their state (slots: backend memory, B entries, or
 * NULL = slots 0..B-1; state NULL: zero start, not kept): out (B*T, hidden)
 * += the mixer's output. T == 1 with a state runs the decode step ops.
 * ws: backend scratch of lmc_mamba_mixer_ws_floats(cfg, B*T) floats. */
int64_t lmc_mamba_mixer_ws_floats(const struct lmc_mamba_config *c, int64_t rows);
void lmc_mamba_mixer_forward(const struct lmc_mamba_model *m, int64_t l, float *out,
                             const float *h, struct lmc_mamba_state *st, const int32_t *slots,
                             int64_t B, int64_t T, float *ws);

/* The same on one layer's weights L: out (B*T, hidden) = res + mixer(h)
 * (out may equal res); cst / sst: the layer's conv and SSM state base
 * (slots index them; NULL: slots 0..B-1) or NULL (zero start, not kept). */
void lmc_mamba_mix(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                   const struct lmc_mamba_layer *L, float *out, const float *res, const float *h,
                   float *cst, float *sst, const int32_t *slots, int64_t B, int64_t T, float *ws);

/* Whole model: ids (host, B*T) -> logits (host, B*T rows of vocab; NULL:
 * none) through state (NULL: a fresh zero state per call). */
lmc_status lmc_mamba_forward(const struct lmc_mamba_model *m, struct lmc_mamba_state *st,
                             const int32_t *slots, const int32_t *ids, int64_t B, int64_t T,
                             float *logits, lmc_err *err);



/* ---- training (ssm/mamba_train.c): loss and gradients through the
 * backward ops; weights must be F32 (the backward ops' master copies). ---- */
struct lmc_mamba_layer_grads {   /* shapes as the layer's tensors; NULL where absent */
    float *norm_w, *in_proj, *in_proj_b, *conv_w, *conv_b;
    float *x_proj;
    float *dt_proj_ext;          /* (D, R + 2N): dt_proj.weight's gradient is its first R columns */
    float *dt_proj;              /* (D, R): used instead when the layer's dt_proj_ext is unset */
    float *dt_bias, *A_log, *Dskip, *gnorm_w, *out_proj, *out_proj_b;
};
struct lmc_mamba_grads {
    float *embed, *norm_f;
    float *lm_head;              /* NULL when tied (its gradient is in embed) */
    struct lmc_mamba_layer_grads *layers;
    void *block;                 /* the one backend allocation holding them all */
    size_t bytes;
};
/* The mixer of layer l for training, in the shape of the redesign's mixer
 * ops table (the block around it does norm and residual):
 *   forward_train: out (B*T, hidden) = mixer(h) (overwritten), keeping in
 *     acts (lmc_mamba_mixer_act_floats(cfg, B*T) floats bound by
 *     lmc_mamba_mixer_acts_bind) what the backward needs; zero state.
 *   backward: dh (B*T, hidden) = dL/dh (overwritten) given dout = dL/dout,
 *     h and acts of the forward; the layer's gradients +=; ws: backend
 *     scratch of lmc_mamba_mixer_bwd_ws_floats(cfg, B*T) floats. */
struct lmc_mamba_mixer_acts {
    float *proj;                 /* (M, in_proj_dim) */
    float *cv;                   /* (M, conv_dim) the conv's output */
    float *xdbl, *delta;         /* Mamba-1: (M, R + 2N), (M, D) */
    float *y;                    /* (M, D) the scan's output */
    float *yn;                   /* Mamba-2: (M, D) after the gated norm */
};
int64_t lmc_mamba_mixer_act_floats(const struct lmc_mamba_config *c, int64_t rows);
void lmc_mamba_mixer_acts_bind(struct lmc_mamba_mixer_acts *a, const struct lmc_mamba_config *c,
                               int64_t rows, float *mem);
void lmc_mamba_mixer_forward_train(const struct lmc_mamba_model *m, int64_t l, float *out,
                                   const float *h, struct lmc_mamba_mixer_acts *a, int64_t B,
                                   int64_t T);
int64_t lmc_mamba_mixer_bwd_ws_floats(const struct lmc_mamba_config *c, int64_t rows);
void lmc_mamba_mixer_backward(const struct lmc_mamba_model *m, int64_t l, float *dh,
                              const float *dout, const float *h,
                              const struct lmc_mamba_mixer_acts *a, struct lmc_mamba_layer_grads *g,
                              int64_t B, int64_t T, float *ws);

/* The same on one layer's weights L and gradients G (the model layer's
 * mixer: x_proj and dt_proj as on disk when L->dt_proj_ext is unset). */
void lmc_mamba_mix_train(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                         const struct lmc_mamba_layer *L, float *out, const float *h,
                         struct lmc_mamba_mixer_acts *a, int64_t B, int64_t T);
void lmc_mamba_mix_bwd(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                       const struct lmc_mamba_layer *L, float *dh, const float *dout, const float *h,
                       const struct lmc_mamba_mixer_acts *a, const struct lmc_mamba_layer_grads *G,
                       int64_t B, int64_t T, float *ws);

/* Every parameter's gradient with its Hugging Face tensor name (for
 * checkpoints, the optimizer, parity): grad (backend memory) holds rows x
 * cols at row stride ld (ld > cols only for dt_proj.weight, the first R
 * columns of dt_proj_ext's gradient). out NULL: returns the count only. */
#define LMC_MAMBA_NAME_MAX 96
struct lmc_mamba_param {
    char name[LMC_MAMBA_NAME_MAX];
    float *grad;
    int64_t rows, cols, ld;
};
int64_t lmc_mamba_grads_params(const struct lmc_mamba_model *m, const struct lmc_mamba_grads *g,
                               struct lmc_mamba_param *out);

/* Gradient buffers for m, zeroed (backend memory). */
lmc_status lmc_mamba_grads_init(struct lmc_mamba_grads *g, const struct lmc_mamba_model *m,
                                lmc_err *err);
void lmc_mamba_grads_free(struct lmc_mamba_grads *g, const struct lmc_mamba_model *m);
/* The mean cross-entropy of targets (host, B*T; < 0: ignored) given inputs
 * (host, B*T; B sequences of T tokens from a zero state) into *loss, and
 * its gradient added into g. Activations of every layer are kept
 * (O(L * B*T * (in_proj_dim + conv_dim + ...)) floats); the scans recompute
 * their states (memory linear in T). */
lmc_status lmc_mamba_loss_backward(const struct lmc_mamba_model *m, const int32_t *inputs,
                                   const int32_t *targets, int64_t B, int64_t T, double *loss,
                                   struct lmc_mamba_grads *g, lmc_err *err);
#endif
