/* optim.h — the trainer's optimizer interface: AdamW, 8-bit AdamW, Muon,
 * GaLore, APOLLO and APOLLO-Mini over a list of parameter tensors.
 *
 * The caller describes every trainable tensor once (pointers to the weight
 * and its gradient in backend memory, its shape and its role); lmc_optim_init
 * groups them by the authors' rule — Muon, GaLore and APOLLO only on 2-D
 * hidden matrices (LMC_PROLE_MATRIX); embeddings, the output head, norms,
 * biases and anything else on AdamW (8-bit AdamW puts every tensor of at
 * least 4096 elements on its 8-bit step, except embeddings unless
 * q8_embed_8bit) — sizes all state up front and allocates it in one backend
 * arena. lmc_optim_step then updates every parameter from its gradient.
 * State is enumerated as named tensors for checkpoints (lmc_optim_state_*)
 * and restored bit-exactly.
 *
 * Formulas (each tested against its authors' code re-run in float64,
 * tests/make_optim_refs.py):
 *  - AdamW group: torch.optim.AdamW (train/adamw.h).
 *  - Muon: torch.optim.Muon (ops/optim_ops.h), lr = muon_lr scaled by the
 *    schedule (see lmc_optim_step).
 *  - GaLore (galore-torch GaLoreAdamW, proj_type "std"): P = top-r right
 *    singular vectors (rows >= cols; low = G P^T) or left ones (low = P^T G)
 *    of the gradient (the eigenvectors of its Gram matrix on the smaller
 *    side, LAPACK dsyevr in double), each vector's sign fixed so that its
 *    largest-magnitude entry is positive, refreshed at steps 1, 1 + T, ...;
 *    m, v of low's shape; step = lr sqrt(1-b2^t) / (1-b1^t);
 *    p -= step * scale * back(m / (sqrt(v) + eps)); then p -= lr wd p.
 *  - APOLLO (apollo-torch APOLLOAdamW, proj "random"): P Gaussian / sqrt(r)
 *    from a seeded generator (lmc_optim_gaussian_fill), refreshed like
 *    GaLore's; Adam moments of the projected gradient R give N = m/(sqrt v
 *    + eps); channel-wise (per column when rows < cols, per row otherwise)
 *    or tensor-wise factor s = ||N|| / (||R|| + 1e-8); S = G * s limited by
 *    the norm-growth limiter (||S|| at most 1.01x the last step's);
 *    p -= step * sqrt(scale) * S; then p -= lr wd p. APOLLO-Mini: rank 1,
 *    tensor-wise, scale 128.
 *  - 8-bit AdamW: torch.optim.AdamW's formula on blockwise 8-bit moments
 *    (ops/optim_ops.h).
 * Every kind runs on any backend with the muon / adamw8bit / lowrank ops
 * (CPU, CUDA); GaLore's and APOLLO's projections are refreshed on the host
 * (the gradient downloaded for GaLore's eigensolver) every gap steps. */
#ifndef LMC_TRAIN_OPTIM_H
#define LMC_TRAIN_OPTIM_H

#include "lmc.h"
#include "core/dtype.h"
#include "ops/backend.h"
#include "train/adamw.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lmc_optim_kind {
    LMC_OPTIM_ADAMW = 0,
    LMC_OPTIM_ADAMW8BIT,
    LMC_OPTIM_MUON,
    LMC_OPTIM_GALORE,
    LMC_OPTIM_APOLLO,
    LMC_OPTIM_APOLLO_MINI,
    LMC_OPTIM_KIND_COUNT
};

/* A parameter's role (the model's tensor spec table gives it). Only
 * LMC_PROLE_MATRIX takes Muon / GaLore / APOLLO. */
enum lmc_param_role {
    LMC_PROLE_MATRIX = 0,  /* 2-D hidden weight (attention and MLP projections) */
    LMC_PROLE_EMBEDDING,   /* token / position embeddings */
    LMC_PROLE_HEAD,        /* output head (lm_head) */
    LMC_PROLE_NORM,        /* norm weights and biases */
    LMC_PROLE_BIAS,        /* linear biases */
    LMC_PROLE_OTHER,       /* anything else (AdamW) */
};

/* A role from a Hugging Face tensor name and rank, for callers without a
 * spec table yet: 1-D "norm"/"ln_" NORM, other 1-D ".bias" BIAS;
 * 2-D "embed"/"wte."/"wpe." EMBEDDING, "lm_head" HEAD, other 2-D MATRIX;
 * anything else OTHER. */
enum lmc_param_role lmc_optim_role_guess(const char *name, int ndim);

enum lmc_muon_scale { LMC_MUON_SCALE_SHAPE = 0, LMC_MUON_SCALE_MOONLIGHT };
enum lmc_apollo_scale { LMC_APOLLO_CHANNEL = 0, LMC_APOLLO_TENSOR };
/* GaLore's projection refresh: EXACT = the top-r eigenvectors of the
 * gradient's Gram matrix from LAPACK on the host, every refresh (the
 * authors' SVD); SUBSPACE = the first refresh exact, later ones one step of
 * subspace iteration from the previous projection (Y = G^T G P^T, or
 * G G^T P on the left) and a Rayleigh–Ritz step (the r x r generalized
 * eigenproblem (Y^T M Y) v = l (Y^T Y) v on the host in double), the big
 * products through the backend's galore_ritz / galore_orth / galore_rotate
 * (fp32) on the device, stabilised: P first turned so that G P^T has
 * orthonormal columns (cond(Y) ~ s_1 / s_r, not its square), Y then
 * orthonormalised by two CholeskyQR passes (the first shifted; every r x r
 * Cholesky factor on the host) so that C and T in fp32 stay well
 * conditioned: no gradient download, r x r matrices cross (four rounds for
 * every matrix at once in lmc_optim_step); the exact refresh only for a
 * gradient of rank < r at fp32 precision.
 * AUTO picks EXACT on host-memory backends. */
enum lmc_galore_refresh { LMC_GALORE_REFRESH_AUTO = 0, LMC_GALORE_REFRESH_EXACT, LMC_GALORE_REFRESH_SUBSPACE };

struct lmc_optim_cfg {
    enum lmc_optim_kind kind;
    struct lmc_adamw_cfg adamw;   /* the AdamW group (and the low-rank groups' betas, eps) */
    /* Muon (torch.optim.Muon defaults) */
    double muon_lr;               /* 0.02 */
    double muon_momentum;         /* 0.95 */
    double muon_weight_decay;     /* 0.1 */
    int muon_ns_steps;            /* 5 */
    bool muon_nesterov;           /* true */
    enum lmc_muon_scale muon_scale; /* SHAPE: max(1, rows/cols)^0.5; MOONLIGHT: 0.2 sqrt(max) */
    bool muon_ns_bf16;            /* false: fp32 Newton–Schulz GEMMs; true: bf16 operands (fp32 sums),
                                     on every backend unless muon_ns_auto */
    bool muon_ns_auto;            /* true (the default, --muon-ns-dtype auto): with muon_ns_bf16, bf16 where
                                     the backend's memory is not the host's (the GPU) and fp32 on the CPU,
                                     whose Muon then stays reproducible across process layouts (bf16
                                     rounding turns the all-reduce's last-bit differences into 1e-5
                                     loss differences); --muon-ns-dtype bf16|f32 and --muon-ns-bf16
                                     set it false */
    bool muon_ns_gram;            /* true (the default, --muon-ns-gram 1): on the CPU a rectangular
                                     matrix's fp32 Newton–Schulz runs in Gram space
                                     (ops/cpu/newton_schulz_gram.c, 0.59x the flops at 4:1); false:
                                     the plain iteration (a checkpoint without the key: false) */
    /* GaLore (paper's LLaMA settings) */
    int galore_rank;              /* 128 */
    int galore_update_gap;        /* 200 */
    double galore_scale;          /* 0.25 */
    enum lmc_galore_refresh galore_refresh; /* AUTO: EXACT on host-memory backends (the CPU),
                                               SUBSPACE elsewhere (the GPU) */
    /* APOLLO / APOLLO-Mini */
    int apollo_rank;              /* 256 (Mini: 1) */
    int apollo_update_gap;        /* 200 */
    double apollo_scale;          /* 1 (Mini: 128) */
    enum lmc_apollo_scale apollo_scale_type; /* CHANNEL (Mini: TENSOR) */
    uint64_t apollo_seed;         /* 0 */
    /* 8-bit AdamW */
    int q8_block;                 /* 256 (64..2048) */
    bool q8_embed_8bit;           /* false: embeddings (LMC_PROLE_EMBEDDING, a tied head
                                     too) keep fp32 moments, as bitsandbytes' StableEmbedding
                                     / GlobalOptimManager practice; true: 8-bit like the rest */
};

/* Defaults for `kind` (APOLLO-Mini: rank 1, tensor scaling, scale 128). */
void lmc_optim_cfg_default(struct lmc_optim_cfg *c, enum lmc_optim_kind kind);

/* "adamw", "adamw8bit", "muon", "galore", "apollo", "apollo-mini". */
const char *lmc_optim_kind_name(enum lmc_optim_kind k);
lmc_status lmc_optim_kind_parse(const char *s, enum lmc_optim_kind *out, lmc_err *err);

/* Command-line settings: if argv[*i] is one of the optimizer flags
 * (--optim KIND, --muon-lr X, --muon-momentum X, --muon-weight-decay X,
 * --muon-ns-steps N, --muon-nesterov 0|1, --muon-scale shape|moonlight,
 * --muon-ns-bf16 0|1 (= --muon-ns-dtype f32|bf16), --muon-ns-dtype auto|bf16|f32, --muon-ns-gram 0|1,
 * --galore-rank N, --galore-update-gap N, --galore-scale X, --apollo-rank N,
 * --apollo-update-gap N, --apollo-scale X, --apollo-scale-type
 * channel|tensor, --apollo-seed N, --adamw8bit-block N), consumes it and
 * its value (advancing *i past them), sets *used and fills c. --optim
 * resets the optimizer's own settings to the kind's defaults, keeping
 * c->adamw; so give --optim before the other flags. Other arguments leave
 * *used false. A missing or bad value is LMC_ERR_ARG naming the flag. */
lmc_status lmc_optim_parse_arg(struct lmc_optim_cfg *c, int argc, char **argv, int *i, bool *used,
                               lmc_err *err);
/* Range checks on a filled cfg (ranks >= 1, gaps >= 1, block 64..2048, ...). */
lmc_status lmc_optim_cfg_check(const struct lmc_optim_cfg *c, lmc_err *err);

/* One trainable tensor. p and g are backend memory of rows*cols floats,
 * row-major (a 1-D tensor of n: rows 1, cols n); rows = output features
 * (a Linear's (out, in); GPT-2's Conv1D weights, (in, out) on disk, are
 * given as (out, in), since Muon's scale max(1, rows/cols)^0.5 reads the
 * orientation). name is copied. */
struct lmc_optim_param {
    const char *name;
    float *p;
    const float *g;
    int64_t rows, cols;
    enum lmc_param_role role;
    bool decay;          /* AdamW-group weight decay (lmc_adamw_decays) */
};

/* Which update a parameter got (lmc_optim_group_of). */
enum lmc_optim_group {
    LMC_GROUP_ADAMW = 0, LMC_GROUP_ADAMW8BIT, LMC_GROUP_MUON, LMC_GROUP_GALORE, LMC_GROUP_APOLLO
};
const char *lmc_optim_group_name(enum lmc_optim_group g);

struct lmc_optim_slot;
struct lmc_pool; /* core/threadpool.h */
struct lmc_optim {
    struct lmc_optim_cfg cfg;
    const struct lmc_backend *be;
    int n_params;
    struct lmc_optim_slot *slots;    /* [n_params] */
    void *arena;                     /* backend memory, arena_bytes */
    size_t arena_bytes;
    size_t state_bytes;              /* optimizer state proper (what checkpoints carry) */
    float *work;                     /* backend scratch inside the arena (Muon) */
    float *code_m, *code_v;          /* backend copies of the 8-bit codes */
    double *host_scratch;            /* host memory: the projection refreshes */
    size_t host_scratch_doubles;
    int svd_lwork;
    /* GaLore's subspace refresh (optim_lowrank.c; made on first use):
     * backend memory for every GaLore slot's Y, C and T, and w (gs_y,
     * gs_ct, gs_w floats) and the ritz work; host copies of the C, T and w
     * parts; gs_hd_per doubles of solve scratch per thread; the threads */
    float *gs_dev, *gs_host;
    int64_t gs_y, gs_ct, gs_w;
    double *gs_hd;
    size_t gs_hd_per;
    struct lmc_pool *gs_pool;
    int gs_threads;
    /* GaLore's projection refreshes so far, counted per matrix: by the
     * exact host eigensolver (the first refresh, the EXACT mode, and a
     * subspace refresh's fallback for a gradient of rank < r) and by the
     * subspace refresh (the trainer's metrics print this step's counts) */
    int64_t galore_exact_refreshes, galore_subspace_refreshes;
};

/* The state bytes `kind` with cfg would need for these parameters, without
 * allocating anything (lmc info --optim X; the training log). */
lmc_status lmc_optim_state_bytes(const struct lmc_optim_cfg *c, const struct lmc_optim_param *params,
                                 int n, size_t *state_bytes, lmc_err *err);

/* `lmc info --optim X` and the training log's start-up line, without
 * allocating state: "optimizer muon: muon: 72 tensors, 85M params; adamw:
 * ...; state N bytes (B per parameter)" into buf, the bytes into
 * *state_bytes (may be NULL). Parameters need shapes and roles only (p and
 * g may be any non-NULL pointers). */
lmc_status lmc_optim_info(const struct lmc_optim_cfg *c, const struct lmc_optim_param *params, int n,
                          char *buf, size_t cap, size_t *state_bytes, lmc_err *err);

/* Groups the parameters and allocates all state (zeroed) in one arena on
 * be. Fails with LMC_ERR_UNSUPPORTED when be lacks an op the kind needs
 * (muon, adamw8bit, lowrank), LMC_ERR_ARG on a bad cfg or
 * parameter, LMC_ERR_OOM when the arena does not fit. params are copied
 * (their pointers, and be, must stay valid until lmc_optim_free). */
lmc_status lmc_optim_init(struct lmc_optim *o, const struct lmc_optim_cfg *c,
                          const struct lmc_backend *be, const struct lmc_optim_param *params,
                          int n, lmc_err *err);
void lmc_optim_free(struct lmc_optim *o);

/* One update of every parameter from its gradient. lr: this step's rate of
 * the AdamW group (the schedule's value of --lr); the low-rank groups use
 * it too (as the GaLore and APOLLO authors do), and the Muon group uses
 * muon_lr * lr / adamw.lr (the same schedule shape). step: 1-based count
 * of this update (torch's state['step']; GaLore/APOLLO refresh their
 * projection when (step - 1) % gap == 0). grad_scale multiplies every
 * gradient first (clipping; 1 = none). The gradients are not modified. */
void lmc_optim_step(struct lmc_optim *o, double lr, int64_t step, float grad_scale);
/* The same for parameter i alone (lmc_optim_step = this for i = 0..n-1):
 * a trainer can update each tensor as soon as its gradient is complete
 * (GaLore's per-layer update) and, with lmc_optim_set_grad, point several
 * parameters at one reused gradient buffer, so that the full gradient of
 * only one layer lives at a time. grad_scale must then be known before the
 * whole gradient is (no global-norm clipping, or a clip from the last step). */
void lmc_optim_step_one(struct lmc_optim *o, int i, double lr, int64_t step, float grad_scale);
/* Points parameter i at another gradient buffer (backend memory, same shape). */
void lmc_optim_set_grad(struct lmc_optim *o, int i, const float *g);

/* The group parameter i was put in, and a one-line summary per group
 * ("muon: 14 tensors, 1.2M params; adamw: 5 tensors, ...") into buf. */
enum lmc_optim_group lmc_optim_group_of(const struct lmc_optim *o, int i);
void lmc_optim_describe(const struct lmc_optim *o, char *buf, size_t cap);

/* State as named tensors: n_state tensors, each "<param>.<field>" with a
 * dtype (F32 or U8), a 1-D element count and its backend pointer. */
struct lmc_optim_state_tensor {
    char name[160];
    enum lmc_dtype dtype;
    int64_t numel;
    void *data;          /* backend memory inside the arena */
};
int lmc_optim_state_count(const struct lmc_optim *o);
void lmc_optim_state_get(const struct lmc_optim *o, int k, struct lmc_optim_state_tensor *t);
/* Writes every state tensor to a safetensors file (metadata: the kind and
 * its settings), downloading from the backend. */
lmc_status lmc_optim_save(const struct lmc_optim *o, const char *path, lmc_err *err);
/* Restores state saved by lmc_optim_save for the same kind, settings and
 * parameter list: every tensor must be present with its dtype and size,
 * else LMC_ERR_FORMAT naming the file and tensor. */
lmc_status lmc_optim_load(struct lmc_optim *o, const char *path, lmc_err *err);
/* The same from a parsed safetensors image (path names it in messages). */
struct lmc_st;
lmc_status lmc_optim_load_st(struct lmc_optim *o, const struct lmc_st *st, const char *path, lmc_err *err);

/* The documented Gaussian generator of APOLLO's projections: n values
 * N(0,1) * mul into out (double), from splitmix64 (core/rng.h) seeded with
 * seed; pairs by Box–Muller: u1 = (1 + (x1 >> 11)) 2^-53, u2 = (x2 >> 11)
 * 2^-53, r = sqrt(-2 ln u1), values r cos(2 pi u2), r sin(2 pi u2). */
void lmc_optim_gaussian_fill(double *out, int64_t n, uint64_t seed, double mul);
/* The seed of parameter index `idx` (0-based in the list given to init)
 * at its `refresh`-th projection (0-based):
 * cfg seed + 0x9E3779B97F4A7C15 * (idx + 1) + 0xD1B54A32D192ED03 * refresh (mod 2^64). */
uint64_t lmc_optim_apollo_seed(uint64_t seed, int idx, int64_t refresh);

#endif
