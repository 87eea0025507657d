/* block.h — the one transformer block: norm1 + token mixer + norm2 +
 * feed-forward, with residuals. The mixer (attention today; a recurrent
 * scan later) and the feed-forward part (dense MLP today; mixture of
 * experts later) are small ops tables with a forward (every run mode) and a
 * backward; the norms are an ops table too. One block definition serves
 * single-sequence inference (LMC_RUN_SEQ), batched scheduler steps over a
 * paged KV pool (LMC_RUN_PAGED) and training (LMC_RUN_TRAIN): the drivers
 * (forward.c, forward_batch.c, backward.c) only fill a `struct lmc_run` and
 * the buffers, then call lmc_block_fwd / lmc_block_bwd per layer.
 *
 * Weights live in named slots (enum lmc_lslot / lmc_vslot) that the
 * architecture's tensor spec table (arch.h) binds HF tensors to; a new
 * mixer or feed-forward kind adds its slots here. */
#ifndef LMC_MODEL_BLOCK_H
#define LMC_MODEL_BLOCK_H

#include "io/hf_config.h"
#include "model/linear.h"

#include <stdbool.h>
#include <stdint.h>

/* Linear slots of a block. */
enum lmc_lslot {
    LMC_L_Q, LMC_L_K, LMC_L_V, LMC_L_O, LMC_L_GATE, LMC_L_UP, LMC_L_DOWN, LMC_L_ROUTER,
    LMC_L_SHARED_GATE, /* (1, C): sigmoid gate of a shared expert */
    LMC_L_SSM_IN, LMC_L_SSM_X, LMC_L_SSM_DT, /* Mamba in_proj, x_proj, dt_proj (out_proj: LMC_L_O) */
    LMC_L_N
};
/* Linears of one expert (mixture of experts: lmc_block_w.experts). */
enum lmc_xslot { LMC_X_GATE, LMC_X_UP, LMC_X_DOWN, LMC_X_N };
/* Vector slots of a block (f32). */
enum lmc_vslot {
    LMC_V_NORM1, LMC_V_NORM1_B, LMC_V_NORM2, LMC_V_NORM2_B, LMC_V_Q_NORM, LMC_V_K_NORM,
    /* Mamba: conv1d weight (conv_dim x K) and bias, dt bias, A_log, D, gated norm (Mamba-2) */
    LMC_V_SSM_CONV, LMC_V_SSM_CONV_B, LMC_V_SSM_DT_B, LMC_V_SSM_A_LOG, LMC_V_SSM_D, LMC_V_SSM_NORM,
    LMC_V_N
};

struct lmc_ep_group;

struct lmc_block_w {
    struct lmc_linear lin[LMC_L_N];   /* unbound slots: w.data NULL */
    const float *vec[LMC_V_N];        /* unbound slots: NULL */
    int64_t vec_n[LMC_V_N];           /* floats of each bound vector */
    struct lmc_linear *experts;       /* (num_experts, LMC_X_N); NULL for dense models */
    /* Expert parallelism (model/moe_ep.h): the experts are split over the
     * group's ranks and only this rank's are bound in `experts`; NULL: all
     * experts are here. */
    struct lmc_ep_group *ep;
};

/* Vocabulary-parallel inference (dist/tp_model.h): tok_emb and the head hold
 * rows [v0, v0+nv) of the V-row tables; the lookup is all-reduced and the
 * logits all-gathered over g (host memory, CPU backend). */
struct lmc_tp_group;
struct lmc_wvocab {
    struct lmc_tp_group *g;
    int64_t v0, nv, V;
};

/* A model's weights (inference: mapped/converted/uploaded; training: views
 * of the parameter or gradient arena). */
struct lmc_pp_infer;
struct lmc_weights {
    struct lmc_mat tok_emb;           /* (V, C) */
    /* A GGUF token embedding kept in its quantized blocks (the loader's;
     * NULL otherwise): tok_emb.data stays NULL, the lookup dequantizes the
     * rows it reads (backend qembed), and a backend without qembed gets the
     * table expanded to f32 when the model is placed there. */
    const struct lmc_qweight *tok_emb_q;
    struct lmc_mat pos_emb;           /* (P, C) learned positions; data NULL otherwise */
    struct lmc_linear head;           /* (V, C); w may share tok_emb's data (tied) */
    const float *norm_f, *norm_f_b;   /* (C); b NULL for RMSNorm */
    struct lmc_block_w *layers;       /* (L) */
    const struct lmc_wvocab *vocab;   /* NULL: the whole vocabulary (inference only) */
    struct lmc_pp_infer *pipe;        /* NULL: every layer here; else a pipeline stage
                                       * (dist/pp_infer.h; inference only) */
};

enum lmc_run_mode { LMC_RUN_SEQ, LMC_RUN_PAGED, LMC_RUN_TRAIN };

struct lmc_kv;
struct lmc_kv_pool;

/* Mixture-of-experts routing statistics of one training step (host
 * memory; lmc_tacts.moe). The forward of layer l writes count[l E + e]
 * (top-k choices of expert e over the step's n tokens) and psum[l E + e]
 * (the sum of its router probabilities; rows of dense layers stay zero);
 * lmc_moe_aux_loss then fills dp (E), the gradient of the weighted
 * load-balancing loss with respect to each token's probability of e, which
 * the backward adds (all zero: no auxiliary loss). */
struct lmc_moe_stats {
    int64_t E, L;
    double *count, *psum;             /* (L, E) */
    double *dp;                       /* (E) */
};

/* Context parallelism in training (dist/ring_attn.h): each rank of `c`
 * holds a zigzag slice of every sequence of T_global tokens; the attention
 * of LMC_RUN_TRAIN runs around the ring. A failed transfer leaves its
 * status in st (sticky) for the driver to check after the step. */
struct lmc_comm;
struct lmc_cp_group {
    struct lmc_comm *c;
    int64_t T_global;
    lmc_status st;
    lmc_err err;
};

/* One forward step's context, shared by every layer. Buffers are backend
 * memory unless marked host. */
struct lmc_run {
    enum lmc_run_mode mode;
    const struct lmc_backend *be;
    const struct lmc_config *cfg;
    const struct lmc_architecture *arch;
    int64_t n;                        /* tokens in the step (rows of every activation) */
    int64_t rot_dim;                  /* rotary dims per head; 0: no RoPE */
    const int32_t *pos;               /* (n) positions */
    const double *inv_freq;           /* rotary frequencies (SEQ, TRAIN, PAGED when uniform) */
    float attn_scale;
    float *tmp;                       /* (n, max(C, I)) scratch for unfused residuals */
    /* SEQ: one sequence's contiguous cache, new tokens at pos0.. */
    struct lmc_kv *kv;
    int64_t pos0;
    /* SEQ, attention: NULL causal; else (n) host words, row i attends to the
     * cache before pos0 and to the step's rows j with bit j of row_mask[i]
     * (a token tree: pos holds each row's depth-based position; the rows
     * still fill cache rows pos0..pos0+n-1) */
    const uint64_t *row_mask;
    /* PAGED */
    struct lmc_kv_pool *pool;
    const int32_t *seq, *bt;          /* (n) sequence of each token; block tables */
    const int32_t *seq_host;          /* host copy of seq (runs of one sequence) */
    int64_t max_blocks;
    bool uniform;                     /* one rotary table for all sequences */
    const double *seq_freqs;          /* (n_seqs, rot_dim/2) when !uniform */
    const float *seq_scales;          /* host (n_seqs) */
    /* TRAIN: B sequences of T tokens from position 0; or, with segs, the
     * packed sequences: n_segs (start, len) pairs over the n rows, in
     * order and covering them (host memory; attention stays within one) */
    int64_t B, T;
    const int64_t *segs;
    int64_t n_segs;
    struct lmc_cp_group *cp;          /* TRAIN: context parallel (T: this rank's tokens); NULL: off */
    /* Fixed per-sequence state of recurrent mixers (slot_bytes per layer),
     * laid out as lmc_kv_pool's state (forward_batch.h): SEQ: state holds
     * one slot (lmc_kv.state); PAGED: the pool's state, tok_slot (n) the
     * slot of each token's sequence (backend memory); a pool with a
     * ring (attention_paged_ring) puts each token's ring slot there. NULL while no mixer
     * keeps any (attention). */
    void *state;
    const int32_t *tok_slot;
    /* TRAIN: routing statistics of mixture-of-experts layers (NULL: none kept) */
    struct lmc_moe_stats *moe;
    /* TRAIN under tensor parallelism: sequence parallelism (NULL: off) */
    const struct lmc_sp *sp;
    /* TRAIN, selective recomputation (lmc_block_save_carve_sel): the
     * feed-forward's activation product (act_floats of it) goes to this
     * buffer shared by the layers instead of its save region, and its
     * backward recomputes it there from the region first. NULL: off. */
    float *ffn_act;
    /* SEQ: when 0 < tail < n, only the last `tail` rows of the block's output
     * are needed (the last layer of a prompt whose logits are its last
     * row's): the mixer still fills the cache for all n rows, but attention's
     * output projection and the feed-forward run on those rows only (the
     * other rows of x_out are left stale). 0: all rows. */
    int64_t tail;
};

/* Sequence parallelism (Megatron-SP) over a tensor-parallel group whose
 * linears have g->sp set: the block's residual stream (x_in, x_out, dx)
 * and its saved h1, xmid, h2 hold this rank's rows [m0, m0 + m) of the
 * step's n (n = m x group size); the normed input of a column-parallel
 * linear is all-gathered, a row-parallel linear's partial output
 * reduce-scattered, and the backward does the conjugates. buf: three
 * (n, C) scratch buffers (host memory: the CPU backend); lmc_tmodel_step
 * also uses buf[0] and buf[1] outside the blocks, and buf[0] may be the
 * activations' hf (lmc_tacts), which it writes only after the blocks' forward and reads
 * before their backward. The norms'
 * weight gradients are this rank's rows' part (summed over the group by
 * the caller, lmc_tp_tmodel_sum_replicated). */
struct lmc_tp_group;
struct lmc_sp {
    struct lmc_tp_group *g;
    int64_t m0, m;
    float *buf[3];
};
/* full (n, C) = every rank's mine (m, C) in rank order (a failed
 * all-gather sticky in g->st) */
void lmc_sp_gather(const struct lmc_sp *sp, float *full, const float *mine, int64_t C);

/* What one layer's forward keeps (training: per layer, for the backward;
 * inference: shared scratch). xmid NULL: the residual stream is updated in
 * place (inference). mix / ffn: the ops' own regions (save_floats). */
struct lmc_block_save {
    float *h1, *xmid, *h2;            /* (n, C) */
    float *mix, *ffn;
};

struct lmc_norm_ops {
    const char *name;
    void (*fwd)(const struct lmc_backend *be, float *y, const float *x, const float *w,
                const float *b, int64_t M, int64_t C, float eps);
    /* dx (M,C) +=, dw +=, db += (db NULL when the norm has no bias) */
    void (*bwd)(const struct lmc_backend *be, float *dx, float *dw, float *db, const float *dy,
                const float *x, const float *w, int64_t M, int64_t C, float eps);
    /* the first backend op it needs and be lacks, or NULL */
    const char *(*missing)(const struct lmc_backend *be, bool backward);
};

/* A token mixer or a feed-forward part. */
struct lmc_part_ops {
    const char *name;
    /* Floats of the region lmc_block_save.mix / .ffn for n tokens (training
     * saves it per layer; inference uses one as scratch). */
    int64_t (*save_floats)(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode);
    /* Floats of backward scratch for n tokens. */
    int64_t (*bwd_floats)(const struct lmc_config *c, int64_t n);
    /* y (n, C) = res + part(h) (y may equal res: in place); save: its region. */
    void (*fwd)(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                const float *h, const float *res, float *y);
    /* dh (n, C) = d part(h) / dh applied to dy (=); gradients += into G. */
    void (*bwd)(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                const struct lmc_block_w *G, const float *save, const float *h, const float *dy,
                float *dh, float *scratch);
    const char *(*missing)(const struct lmc_backend *be, const struct lmc_config *c,
                           bool backward);
    /* Sequence state per layer (mixers; 0 for feed-forward parts): floats
     * of K (and as many of V) per token in the paged pool, and bytes of a
     * fixed per-sequence slot (recurrent state). */
    int64_t (*kv_row)(const struct lmc_config *c);
    int64_t (*slot_bytes)(const struct lmc_config *c);
    /* The slot's parts (NULL: one part of slot_bytes): their count and
     * bytes (at most LMC_SLOT_PARTS, summing to slot_bytes); each part of
     * a layer keeps the slots of all sequences side by side (see
     * lmc_kv_pool), so an op can index a part by slot number. */
    int (*slot_parts)(const struct lmc_config *c, int64_t *bytes);
    /* Feed-forward parts whose training region ends in an activation
     * product that the backward can recompute from the rest (SwiGLU's
     * silu(gate) * up, the GELU MLP's gelu(up)): its floats for n tokens,
     * kept in lmc_run.ffn_act under selective recomputation. NULL: none. */
    int64_t (*act_floats)(const struct lmc_config *c, int64_t n);
    /* Training: the leading floats of the region (n tokens) that the
     * trainer may keep in bf16 (bf16-saved activations, lmc_tacts_opts):
     * tensors the backward reads as bf16 GEMM or attention operands, or
     * elementwise (attention's q, k, v and output; the MLPs' whole
     * region); the rest (attention's log-sum-exp) stays f32. NULL: none. */
    int64_t (*lowp_floats)(const struct lmc_config *c, int64_t n);
    /* true: the part's projections do not run through lmc_linear, so LoRA
     * adapters on them would be ignored in training (the trainer refuses). */
    bool no_adapters;
};
#define LMC_SLOT_PARTS 4

extern const struct lmc_norm_ops lmc_norm_rms, lmc_norm_layer;
extern const struct lmc_part_ops lmc_mixer_attention, lmc_mixer_mamba;
extern const struct lmc_part_ops lmc_ffn_swiglu, lmc_ffn_gelu;
extern const struct lmc_part_ops lmc_ffn_moe; /* ffn_moe.c */

/* Load-balancing auxiliary loss of a training step over n tokens per layer
 * from s's counts (ffn_moe.c), as transformers' load_balancing_loss_func
 * computes it without an attention mask: with f_e = (choices of e over the
 * sparse layers) / (L_s n) and P_e = (summed probability of e) / (L_s n),
 * aux = E sum_e f_e P_e (f is a count: no gradient). Fills s->dp with
 * weight * d aux / d p (weight 0: zeros). */
double lmc_moe_aux_loss(const struct lmc_config *c, struct lmc_moe_stats *s, int64_t n, double weight);
/* Whether layer l's feed-forward part is the mixture of experts (else the
 * dense MLP: the Qwen families' decoder_sparse_step / mlp_only_layers; arch_moe.c). */
bool lmc_config_layer_sparse(const struct lmc_config *c, int64_t l);

/* x_out = block(x_in) (x_out may equal x_in when s->xmid is NULL). */
void lmc_block_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                   const struct lmc_block_save *s, const float *x_in, float *x_out);
/* Backward of layer l: dx holds d(x_out) on entry and d(x_in) on return;
 * dh (n, C) and scratch (lmc_block_bwd_floats) are scratch. */
void lmc_block_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                   const struct lmc_block_w *G, const struct lmc_block_save *s, const float *x_in,
                   float *dx, float *dh, float *scratch);
/* x (n, C) = tok_emb[ids] (+ pos_emb[pos] when learned; tmp (n, C) scratch). */
void lmc_weights_embed(const struct lmc_backend *be, const struct lmc_weights *w, float *x,
                       const int32_t *ids, const int32_t *pos, int64_t n, float *tmp);
int64_t lmc_block_bwd_floats(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n);
/* Floats of lmc_block_save's regions for n tokens (h1, xmid, h2 included
 * only in training). */
int64_t lmc_block_save_floats(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                              enum lmc_run_mode mode);
/* Carves a save set out of p (returns the end; 16-float aligned pieces). */
float *lmc_block_save_carve(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                            enum lmc_run_mode mode, float *p, struct lmc_block_save *s);
/* The same under sequence parallelism: h1, xmid, h2 of m rows (training),
 * the mixer's and feed-forward's regions of n. m = n: the plain ones. */
int64_t lmc_block_save_floats_sp(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                                 int64_t m, enum lmc_run_mode mode);
float *lmc_block_save_carve_sp(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m,
                               enum lmc_run_mode mode, float *p, struct lmc_block_save *s);
/* Selective recomputation (training): each layer keeps xmid, the mixer's
 * region and the feed-forward's region less its activation product
 * (lmc_part_ops.act_floats); the norms' outputs h1, h2 and that product
 * live in buffers the layers share (the driver recomputes h1, h2 with
 * lmc_block_renorm before each layer's backward; the feed-forward's
 * backward recomputes its product through lmc_run.ffn_act). n tokens,
 * m rows of the residual stream (sequence parallel; m = n otherwise).
 * save_floats_sel: one layer's kept floats; shared_floats_sel: the
 * shared buffers'. carve_shared_sel carves the shared buffers out of p
 * into *sh (h1, h2; mix, ffn NULL) and *act (NULL: the feed-forward has
 * no product to recompute); carve_sel carves one layer's region out of p,
 * pointing its h1 / h2 at sh's. Both return the end. */
int64_t lmc_block_save_floats_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m);
int64_t lmc_block_shared_floats_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                                    int64_t m);
float *lmc_block_carve_shared_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m,
                                  float *p, struct lmc_block_save *sh, float **act);
float *lmc_block_save_carve_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m,
                                float *p, const struct lmc_block_save *sh, struct lmc_block_save *s);
/* Mixer recomputation (lmc_tacts.mixer): h1 = norm1(x_in), the mixer's
 * region and xmid = x_in + mixer(h1), h2 = norm2(xmid) into s's buffers,
 * as lmc_block_fwd computed them (the same ops, the same bits); the
 * feed-forward part is not run. Needs a feed-forward part and s->xmid;
 * not under sequence parallelism. */
void lmc_block_fwd_mixer(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                         const struct lmc_block_save *s, const float *x_in);
/* h1 = norm1(x_in) and, with a feed-forward part, h2 = norm2(xmid) into
 * s's buffers, as lmc_block_fwd computed them (the same ops, the same
 * bits): selective recomputation before lmc_block_bwd. */
void lmc_block_renorm(const struct lmc_run *r, const struct lmc_block_w *W, const struct lmc_block_save *s,
                      const float *x_in);

#endif
