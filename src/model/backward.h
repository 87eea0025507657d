/* backward.h — a trainable model: every parameter as f32 in one arena
 * (with a same-shaped gradient arena), a table of the tensors under their
 * Hugging Face names, the training forward that keeps what the backward
 * needs (sized up front from B, T and the config; optionally only each
 * layer's input, recomputing the layer in the backward), and the backward
 * itself, all through backend-table ops. Llama family (GQA, qkv/o/MLP
 * biases, tied or untied head) and GPT-2.
 *
 * Memory: the arenas are backend memory (be->alloc; on the CUDA backend
 * they live on the GPU). Nothing here dereferences them on the host:
 * weights are built on the host and uploaded (init_random, load), and
 * whoever needs values on the host (checkpoints, parity checks) downloads
 * them with lmc_tmodel_download_param / lmc_tmodel_download_arena. The
 * padding between tensors in every arena is zero and stays zero (so the
 * global gradient norm can be one sum over the whole arena).
 *
 * Layouts: the parameter table is the architecture's tensor spec table
 * (model/arch.h) expanded for the config, in its order; the arena keeps
 * every matrix as the (out, in) the ops use. Tensors stored (in, out) on
 * disk (GPT-2's Conv1D) are marked `transposed` and lmc_tmodel_download_param /
 * upload_param convert, so gradients, optimizer state and checkpoints are
 * read and written in the on-disk layout. Tied embeddings are one tensor
 * (the head reads the embedding). The forward and backward are the block's
 * (model/block.h, LMC_RUN_TRAIN): the same code that serves inference. */
#ifndef LMC_MODEL_BACKWARD_H
#define LMC_MODEL_BACKWARD_H

#include "lmc.h"
#include "io/hf_config.h"
#include "model/model.h"
#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

/* One trainable tensor (the optimizers' parameter table). */
struct lmc_tparam {
    char name[160];         /* HF name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;               /* 1 or 2 */
    int64_t shape[2];       /* on-disk shape */
    int64_t off, numel;     /* floats into the arenas */
    bool transposed;        /* arena holds the transpose of the on-disk 2-D tensor */
    bool conv;              /* written (shape[0], 1, shape[1]) (a depthwise conv1d weight) */
    uint8_t init;           /* LMC_TF_INIT_* of the spec: a special from-scratch value */
    enum lmc_role role;     /* from the spec table: embedding, matrix, norm, bias */
    bool frozen;            /* not trained (a frozen base under adapters): no optimizer state */
    /* Kept outside the arenas (QLoRA's 4-bit base, train/qlora.h): off -1,
     * no floats in w or g, always frozen; bound as LMC_WFMT_QUANT linears
     * (qfloat) over q[0..parts) once the caller sets q (NULL: unbound). */
    bool external;
    const struct lmc_qweight *q;
    /* Or, with ext_data set instead of q: a frozen dense linear kept
     * outside the arenas in ext_dtype (LoRA's bf16 base on a GPU,
     * train/qlora.h), bound as an LMC_WFMT_DENSE linear over it. */
    const void *ext_data;
    enum lmc_dtype ext_dtype;
    bool elsewhere;         /* another pipeline stage's (lmc_tmodel_init_parts): external, never bound */
    int part;               /* lmc_tmodel_hooks' part: 0 before the layers, 1 + layer, L + 1 after */
};

/* Vocabulary-parallel embedding and head (tensor-parallel training,
 * dist/tp_train.h): the model's embedding and head hold rows [v0, v0 +
 * cfg.vocab_size) of a vocabulary of V; lmc_tmodel_step then looks ids up
 * and takes the cross-entropy across the group g (host backends). */
struct lmc_tvocab {
    struct lmc_tp_group *g;
    int64_t v0, V;
};

struct lmc_tmodel {
    const struct lmc_backend *be; /* owns the arenas (not owned; outlives the model) */
    struct lmc_config cfg;
    const struct lmc_architecture *arch;
    int64_t rot_dim;
    struct lmc_tparam *params;
    int n_params;
    int64_t numel;          /* floats in each arena */
    float *w, *g;           /* parameters and gradients (numel each, backend memory) */
    struct lmc_weights W, G; /* views of w and g (F32) */
    /* Floats before the first trainable parameter: 0, or with a frozen base
     * (adapter training, train/lora_train.c) the base's part of the arenas;
     * every parameter at or past it is trainable, every one before frozen.
     * The optimizer's moments and the gradient norm cover [trainable_off, numel). */
    int64_t trainable_off;
    /* The gradient arena g holds the layout's floats [g_off, numel)
     * (lmc_tmodel_grad): 0, or trainable_off with a frozen base, whose
     * gradient views then write into a scratch that nothing reads. */
    int64_t g_off;
    const struct lmc_tvocab *vocab; /* NULL: the whole vocabulary */
    bool tied_head;         /* the head reads the token embedding (part 0) */
};

/* Parameter p's gradient in tm->g. */
static inline float *lmc_tmodel_grad(const struct lmc_tmodel *tm, const struct lmc_tparam *p) {
    return tm->g + (p->off - tm->g_off);
}

/* Names the first op of be's table that training needs and be lacks
 * (forward ops and zero always, the architecture's norm / mixer /
 * feed-forward ops included; with backward the backward ops; with
 * optimizer sumsq and adamw): LMC_ERR_UNSUPPORTED "backend X has no OP
 * op (needed for training)". */
lmc_status lmc_tmodel_check_backend(const struct lmc_backend *be, const struct lmc_config *cfg,
                                    bool backward, bool optimizer, lmc_err *err);
/* Builds the table for cfg and allocates arenas in be's memory, zeroed
 * (LMC_ERR_OOM, LMC_ERR_ARG for configs that cannot be trained,
 * LMC_ERR_UNSUPPORTED for a backend without the forward ops). */
lmc_status lmc_tmodel_init(struct lmc_tmodel *tm, const struct lmc_config *cfg,
                           const struct lmc_backend *be, lmc_err *err);
/* As lmc_tmodel_init, with the linear weights (LMC_TK_LIN_W), the token
 * embedding and the untied head for which external(user, t) is true kept
 * outside the arenas (tparam.external; the embedding and head only with
 * ext_data: a frozen bf16 base). */
lmc_status lmc_tmodel_init_ext(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                               bool (*external)(void *user, const struct lmc_tensor_ref *t), void *user,
                               lmc_err *err);
/* As lmc_tmodel_init, with only experts [expert_begin, expert_end) of each
 * sparse layer in the arenas (expert parallelism, dist/ep_model.h): the
 * other experts' tensors stay in the table as external (off -1, frozen,
 * unbound). LMC_ERR_ARG for an empty or out-of-range span. */
lmc_status lmc_tmodel_init_experts(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                                   int64_t expert_begin, int64_t expert_end, lmc_err *err);
/* As lmc_tmodel_init (arenas when `arenas`, else as lmc_tmodel_init_layout)
 * with only the tensors of the parts p (0 the embeddings, 1 + l layer l,
 * L + 1 the final norm and head; lmc_tparam.part) with keep[p] in the
 * arenas: the table is the whole model's, the others marked elsewhere
 * (external, frozen, off -1, their views unbound), so a pipeline stage
 * holds its layers' parameters and gradients only. A source (random or a
 * folder) fills the kept tensors with the whole model's values.
 * LMC_ERR_ARG when nothing is kept, or a tied head is kept without the
 * embedding it reads. */
lmc_status lmc_tmodel_init_parts(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                                 const bool *keep, bool arenas, lmc_err *err);
/* GPT-2-style initialisation from seed: matrices and embeddings N(0, std),
 * the residual output projections N(0, std / sqrt(2 L)), norms 1, biases 0.
 * Built on the host one tensor at a time and uploaded (LMC_ERR_OOM). */
lmc_status lmc_tmodel_init_random(struct lmc_tmodel *tm, uint64_t seed, double std, lmc_err *err);
/* Loads a Hugging Face folder (config.json + model.safetensors, any float
 * dtype) into a new trainable model on be. Missing tensors or wrong shapes
 * are LMC_ERR_FORMAT naming the tensor. */
lmc_status lmc_tmodel_load(struct lmc_tmodel *tm, const char *dir, const struct lmc_backend *be,
                           lmc_err *err);
void lmc_tmodel_free(struct lmc_tmodel *tm);

/* ---- Building a model without its arenas (data-parallel ZeRO set-up,
 * where each rank keeps only its shard: train/trainer_dist.c). A source
 * produces the initial parameters range by range in the arena's layout on
 * the host (tmodel_src.c), so no one needs the whole model at once. */
/* lmc_tmodel_init without the arenas: w = g = NULL, the views unbound
 * (lmc_tmodel_fill allocates and fills them, or the caller binds views to
 * memory of its own with lmc_tmodel_bind_part). */
lmc_status lmc_tmodel_init_layout(struct lmc_tmodel *tm, const struct lmc_config *cfg,
                                  const struct lmc_backend *be, lmc_err *err);
/* config.json of dir -> lmc_tmodel_init_layout. */
lmc_status lmc_tmodel_load_layout(struct lmc_tmodel *tm, const char *dir, const struct lmc_backend *be,
                                  lmc_err *err);
struct lmc_st;
struct lmc_tmodel_src {
    const struct lmc_tmodel *tm;  /* its table (not owned) */
    struct lmc_st *st;            /* a folder's weights (NULL: random) */
    char dir[512];
    uint64_t rng;                 /* random: the generator, drawn tensor by tensor in table order */
    double std, res_std;
    bool *resid;                  /* (n_params) residual output projections */
    float *buf;                   /* one tensor in the arena's layout (the largest) */
    int cur, next;                /* buf holds tensor cur; random: tensor next is drawn next */
};
/* lmc_tmodel_init_random's values (the same seed, the same bits), or a
 * Hugging Face folder's weights as lmc_tmodel_load reads them (mapped;
 * missing tensors and wrong shapes are found when read). */
lmc_status lmc_tmodel_src_random(struct lmc_tmodel_src *s, const struct lmc_tmodel *tm, uint64_t seed,
                                 double std, lmc_err *err);
lmc_status lmc_tmodel_src_dir(struct lmc_tmodel_src *s, const struct lmc_tmodel *tm, const char *dir, lmc_err *err);
/* The arena's floats [off, off + n) into host (padding 0). A random source
 * is read in increasing order (ranges after ranges already read; one
 * range may end inside a tensor and the next start there); a folder in any
 * order. LMC_ERR_FORMAT naming the tensor for a folder's missing or
 * misshapen one, LMC_ERR_ARG for a random source read backwards. */
lmc_status lmc_tmodel_src_fill(struct lmc_tmodel_src *s, int64_t off, int64_t n, float *host, lmc_err *err);
void lmc_tmodel_src_free(struct lmc_tmodel_src *s);
/* Allocates the arenas if they are missing (zeroed, views bound) and
 * uploads the source's values of every parameter, one tensor at a time. */
lmc_status lmc_tmodel_fill(struct lmc_tmodel *tm, struct lmc_tmodel_src *src, lmc_err *err);
/* Transposes the on-disk (R, Cc) tensor of p in `in` into the arena's
 * (Cc, R) layout in dst, or back (to_disk); both host memory. */
void lmc_tmodel_transpose(const struct lmc_tparam *p, float *dst, const float *in, bool to_disk);
/* (Re)binds the views W and G to the arenas tm->w / tm->g by the spec
 * table (after the arenas move); adapters and frozen views are the
 * caller's to set again. Returns the number of table tensors bound. */
int lmc_tmodel_bind(struct lmc_tmodel *tm);
int lmc_tmodel_find(const struct lmc_tmodel *tm, const char *name);

/* Host <-> backend copies. `arena` is backend memory laid out like tm->w
 * (tm->w, tm->g, or an optimizer moment of numel floats).
 * download_param / upload_param: parameter i, host side in the on-disk
 * layout (p->numel floats; transposed tensors are converted on the host);
 * LMC_ERR_OOM when the conversion's scratch cannot be had.
 * download_arena / upload_arena: the whole arena as it is (numel floats,
 * arena layout, padding included). Each waits for the copy. */
lmc_status lmc_tmodel_download_param(const struct lmc_tmodel *tm, const float *arena, int i,
                                     float *out, lmc_err *err);
lmc_status lmc_tmodel_upload_param(const struct lmc_tmodel *tm, float *arena, int i,
                                   const float *in, lmc_err *err);
void lmc_tmodel_download_arena(const struct lmc_tmodel *tm, const float *arena, float *host);
void lmc_tmodel_upload_arena(const struct lmc_tmodel *tm, float *arena, const float *host);

/* Training activations for micro-batches of B sequences of T tokens, one
 * arena sized up front (overflow-checked). */
struct lmc_distill; /* model/distill.h */
struct lmc_tacts {
    const struct lmc_backend *be;
    int64_t B, T;
    bool recompute;         /* keep only layer inputs; recompute each layer in the backward */
    /* selective recomputation (lmc_tacts_init_sel): every layer keeps its
     * GEMM outputs (block.h, lmc_block_save_carve_sel), the norms' outputs
     * and the feed-forward's product are recomputed in the backward into
     * buffers the layers share (saves[l].h1 / h2, ffn_act; NULL: none) */
    bool selective;
    float *ffn_act;
    /* mixer recomputation (lmc_tacts_opts.mixer): every layer keeps its
     * feed-forward's region less the product (as selective); xmid, h1,
     * h2, the mixer's region and the product are one shared set that the
     * backward recomputes per layer (lmc_block_fwd_mixer: norm1, the
     * mixer with its residual, norm2; the product through ffn_act) */
    bool mixer;
    /* bf16-saved activations (lmc_tacts_opts.save_bf16): saves[l] holds
     * only layer l's xmid (f32); lowp[l] the rest of its saves, the
     * leading parts of the mixer's and feed-forward's regions (their
     * lowp_floats) and, without selective recomputation, h1 and h2, as
     * bf16; work is one layer's f32 save set that the forward writes
     * (then packed into lowp[l]) and the backward reads (unpacked first). */
    bool save_bf16;
    struct lmc_tacts_lowp *lowp;
    struct lmc_block_save work;
    int64_t layer_floats;   /* arena floats one layer's saves hold (the memory account's per layer) */
    int64_t n_layers;       /* layers it holds (cfg.num_layers; fewer for a pipeline chunk) */
    float *arena;
    float **xs;             /* (L+1) residual stream: layer inputs, then the final one */
    /* full recomputation with save_bf16 (lmc_tacts_opts): the (L) layer
     * inputs kept as bf16 checkpoints; xs[l] are then two f32 buffers the
     * layers alternate between (xs[l] = xs[l % 2]), and the backward
     * restores layer l's input from xs16[l] before recomputing it. NULL: off */
    uint16_t **xs16;
    /* full recomputation with offload (lmc_tacts_opts): layer inputs kept
     * in host memory (the backend's host_alloc); xs[l] are then xs_ring
     * device buffers in turn (xs[l] = xs[l % xs_ring]; 3, or 2 for a model
     * of 2 layers): the forward copies input l out (xs_host[l], for l <=
     * L - xs_ring: the last inputs stay on the device) while the next
     * layers run, the backward copies input l back while the xs_ring - 1
     * layers above it run (backend offload, slot l % xs_ring). NULL: off */
    float **xs_host;
    int64_t xs_ring;
    size_t host_bytes;      /* host memory xs_host holds */
    struct lmc_block_save *saves; /* (L, or 1 with recompute) what each block keeps */
    float *hf, *tmp, *loss; /* (BT,C) final norm out, (BT,C) scratch, (BT) per-token loss */
    float *loss_host;       /* (BT) host copy of loss */
    float *dx, *dh, *scratch; /* backward: (BT,C), (BT,C), the block's backward scratch */
    int32_t *ids, *pos, *targets; /* (BT) */
    double *inv_freq;       /* (rot_dim/2) */
    float attn_scale;
    /* Packed sequences, set by the caller before lmc_tmodel_step (NULL: B
     * sequences of T): n_segs (start, len) pairs over the B*T rows, in
     * order and covering them; attention stays within a segment and
     * positions restart at each (padding-free packing). */
    const int64_t *segs;
    int64_t n_segs;
    int32_t *pos_host;      /* (BT) host staging of the positions */
    bool pos_packed;        /* a->pos holds a packed step's positions */
    /* context parallel (block.h): set by the caller, with pos holding the
     * slice's global positions (uploaded over the 0..T-1 of init); NULL: off */
    struct lmc_cp_group *cp;
    /* mixture of experts (NULL for dense models): each step's expert load
     * per layer (host memory), and its load-balancing loss (unweighted;
     * added to the loss as router_aux_loss_coef x aux per counted target
     * when the config has output_router_logits, as transformers adds it) */
    struct lmc_moe_stats *moe;
    double moe_aux;
    /* set by the caller (expert-parallel training, dist/ep_model.h): the
     * routing statistics, rows and counted targets are summed over these
     * ranks before the load-balancing loss, so every rank uses the global
     * batch's loss and gradient, as one process with the whole batch
     * (expert_tokens then counts the global batch). NULL: this rank's own. */
    struct lmc_comm *moe_dp;
    /* per-part parameters and gradients (set by the caller; NULL: the
     * views stay bound to the arenas) */
    const struct lmc_tmodel_hooks *hooks;
    /* sequence parallelism (block.h; lmc_tacts_init_sp): xs and the
     * blocks' h1, xmid, h2 hold this rank's sp->m rows; NULL: off */
    const struct lmc_sp *sp;
    /* knowledge distillation (model/distill.h; set by the caller, NULL:
     * off): the head's loss is the distillation loss against its teacher */
    struct lmc_distill *distill;
};

/* Bytes lmc_tacts_init allocates. */
size_t lmc_tacts_bytes(const struct lmc_config *cfg, int64_t B, int64_t T, bool recompute);
lmc_status lmc_tacts_init(struct lmc_tacts *a, const struct lmc_tmodel *tm,
                          const struct lmc_backend *be, int64_t B, int64_t T, bool recompute,
                          lmc_err *err);
/* Activations for n_layers consecutive layers only (a pipeline chunk,
 * dist/pp_model.h): xs[0..n_layers] and saves[0..n_layers) indexed from
 * the chunk's first layer (lmc_tmodel_step needs all layers). 0 bytes /
 * LMC_ERR_ARG for n_layers outside [1, num_layers]. */
/* Under sequence parallelism over `world` ranks (block.h, lmc_sp): the
 * residual stream and the blocks' norm inputs and outputs of B*T/world
 * rows (B*T a multiple of world), the rest as lmc_tacts_init; sp (the
 * caller's, m0 and m set, its g's linears with g->sp) is kept in a->sp. */
size_t lmc_tacts_bytes_sp(const struct lmc_config *cfg, int64_t B, int64_t T, bool recompute, int world);
lmc_status lmc_tacts_init_sp(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                             int64_t B, int64_t T, bool recompute, const struct lmc_sp *sp, lmc_err *err);
size_t lmc_tacts_bytes_layers(const struct lmc_config *cfg, int64_t n_layers, int64_t B, int64_t T, bool recompute);
lmc_status lmc_tacts_init_layers(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                                 int64_t n_layers, int64_t B, int64_t T, bool recompute, lmc_err *err);
/* One layer's bf16-saved activations (lmc_tacts.lowp; backend memory). */
struct lmc_tacts_lowp {
    uint16_t *h1, *h2;          /* (m, C) bf16; NULL under selective recomputation */
    uint16_t *mix, *ffn;        /* the regions' leading lowp_floats as bf16 */
    float *mix_tail, *ffn_tail; /* the regions' rest, f32 */
};
/* How the layers' saves are held:
 *  - recompute: only each layer's input; the backward runs the layer's
 *    forward again (one layer's saves in the arena).
 *  - selective: each layer keeps xmid, the mixer's and the feed-forward's
 *    regions less the product; h1, h2 and the product are one shared set,
 *    recomputed per layer in the backward. The step's loss and gradients
 *    are bit for bit those without recomputation (the same ops on the
 *    same inputs).
 *  - recompute with save_bf16 (bf16 checkpoints): each layer's input
 *    (the residual stream) kept as bf16; the forward is unchanged (its f32
 *    stream in two alternating buffers), the backward recomputes each layer
 *    from its input rounded to bf16, so the loss is bit for bit that of
 *    recompute and the gradients are those at the rounded inputs.
 *  - recompute with offload: the layer inputs in the backend's host
 *    memory, copied out and back while other layers run; the step is bit
 *    for bit that of recompute (the same ops on the same values). Needs
 *    the backend's host_alloc / offload (LMC_ERR_UNSUPPORTED otherwise).
 *  - mixer: each layer keeps only its feed-forward's region less the
 *    product (attention: the MLP's gate and up); the backward recomputes
 *    the layer's first half (norm1, the mixer and its residual xmid,
 *    norm2; not the feed-forward's GEMMs) into one shared set and the
 *    product through ffn_act. The step is bit for bit the no-recompute
 *    one; with save_bf16 the kept region is bf16 (one f32 work set) and
 *    the backward reads it rounded, as save_bf16 alone does. Combines
 *    with offload (not with recompute, selective or bf16 checkpoints).
 *    Needs a feed-forward part.
 *  - save_bf16 (with or without selective, without recompute): the saves
 *    the backward reads as GEMM / attention operands or elementwise (h1,
 *    h2, attention's q, k, v and output, the MLP's region) kept in bf16,
 *    the residual stream, xmid and attention's log-sum-exp in f32; the
 *    backend needs `convert` (LMC_ERR_UNSUPPORTED otherwise). The forward
 *    is unchanged; the backward reads the saves rounded to bf16 (which a
 *    bf16-mode GEMM does to its operands anyway).
 * Not with sequence parallelism (lmc_tacts_init_sp). */
struct lmc_tacts_opts {
    bool recompute, selective, save_bf16;
    bool offload; /* with recompute (not with save_bf16) or mixer: the layer inputs in host memory (xs_host) */
    bool mixer;   /* recompute each layer's mixer half only (see above) */
};
size_t lmc_tacts_bytes_opts(const struct lmc_config *cfg, int64_t B, int64_t T, const struct lmc_tacts_opts *o);
lmc_status lmc_tacts_init_opts(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                               int64_t B, int64_t T, const struct lmc_tacts_opts *o, lmc_err *err);
void lmc_tacts_free(struct lmc_tacts *a);

/* Forward of inputs (B*T ids, host) with next-token targets (B*T ids, host;
 * < 0: ignored). Returns the sum of the per-token losses in *loss_sum and
 * the number of counted targets in *count. With backward, then adds the
 * gradient of dscale * (sum of losses) into tm->g (the caller zeroes tm->g
 * with lmc_tmodel_zero_grad between optimizer steps; for a mean over N
 * tokens pass dscale = 1/N). Mixture of experts with output_router_logits:
 * the sum includes count x router_aux_loss_coef x the step's
 * load-balancing loss (a->moe_aux), so sum / count is transformers' loss
 * with the auxiliary term. be must be tm->be. Ids are checked
 * (LMC_ERR_ARG); a backend without a needed op is LMC_ERR_UNSUPPORTED. */
lmc_status lmc_tmodel_step(struct lmc_tmodel *tm, const struct lmc_backend *be,
                           struct lmc_tacts *a, const int32_t *inputs, const int32_t *targets,
                           bool backward, float dscale, double *loss_sum, int64_t *count,
                           lmc_err *err);
/* Whether weight decay applies to p: decay_all, or p is a matrix (the spec
 * table's role: embeddings, norms and biases are exempt). */
static inline bool lmc_tparam_decays(const struct lmc_tparam *p, bool decay_all) {
    return decay_all || p->role == LMC_ROLE_MATRIX;
}

/* ---- Per-part parameters and gradients (data-parallel ZeRO, where a rank
 * holds a layer's full parameters or gradients only while it runs:
 * src/train/trainer_dist.c). The parameters fall into parts in arena
 * order: 0 the tensors before the first layer (embeddings), 1 + l layer
 * l, L + 1 the tensors after the last layer (final norm, untied head; it
 * may be empty). With a->hooks set, lmc_tmodel_step calls get(part, what)
 * before it reads a part's parameters (LMC_TPART_PARAMS) or accumulates
 * into its gradients (LMC_TPART_GRADS), and put(part, what, last) after
 * (last: the part's gradient of this micro-step is complete); get's next
 * names the part whose parameters the step reads next (-1: none), for
 * prefetching. get binds
 * the part's views (lmc_tmodel_bind_part) to wherever the caller keeps
 * them. Order: forward 0, 1..L, then L + 1 (with a tied head: 0 got
 * first, put after, not last); backward L, ..., 1, then 0 (gradients only).
 * A failing hook ends the step with its status. */
enum { LMC_TPART_PARAMS = 1, LMC_TPART_GRADS = 2 };
struct lmc_tmodel_hooks {
    void *user;
    lmc_status (*get)(void *user, int part, unsigned what, int next, lmc_err *err);
    lmc_status (*put)(void *user, int part, unsigned what, bool last, lmc_err *err);
};
/* Binds the views of part's tensors: W to w + (p->off - base) when w is
 * given, G to g + (p->off - base) when g is given (a tied head follows
 * part 0). w / g hold the part's floats of the arena layout from base. */
void lmc_tmodel_bind_part(struct lmc_tmodel *tm, int part, const float *w, float *g, int64_t base);

/* tm->g = 0 (the whole arena, padding included; numel - g_off floats) through be->zero. */
void lmc_tmodel_zero_grad(struct lmc_tmodel *tm);

#endif
