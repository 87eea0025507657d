/* model.h — a loaded causal language model: config, architecture (its
 * tensor spec table and block recipe, model/arch.h), weights bound into
 * the block slots (memory-mapped where the dtype allows, otherwise
 * converted once into an owned buffer), the forward over a KV cache, and
 * the sequence state the scheduler sizes through the model. */
#ifndef LMC_MODEL_H
#define LMC_MODEL_H

#include "lmc.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/arch.h"
#include "model/block.h"
#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

/* Weight storage chosen at load time (CPU: matrices keep their disk dtype
 * under AUTO; BF16/F16 convert F32 matrices once at load). */
enum lmc_wdtype { LMC_WDTYPE_AUTO = 0, LMC_WDTYPE_F32, LMC_WDTYPE_BF16, LMC_WDTYPE_F16 };

struct lmc_model {
    struct lmc_config cfg;
    const struct lmc_architecture *arch;
    struct lmc_st st;                    /* the mapped safetensors */
    struct lmc_gguf *gguf;               /* -m FILE.gguf: the mapped GGUF (weights borrow from it); else NULL */
    struct lmc_weights w;                /* bound by the arch's spec table */
    int64_t rot_dim;                     /* rotary dims per head (0: learned positions) */
    int64_t n_params;
    size_t weight_bytes;                 /* bytes of all weights as used */
    enum lmc_wdtype wdtype;
    bool on_device;                      /* weights go to a non-host backend */
    /* owned allocations (converted weights, f32 copies of vectors) */
    void **owned;
    int n_owned, cap_owned;
    /* quantized linears' bytes on a host backend (lmc_model_own_huge):
     * the current 2 MB-aligned chunk, madvised for transparent huge pages */
    bool qheap_on;
    uint8_t *qheap;
    size_t qheap_left;
    /* quantized linears (issue 10): the method of config.json's
     * quantization_config (enum lmc_qmethod; 0: none) and the prepared
     * weights the linears point at (freed with the model) */
    int quant_method;
    struct lmc_qweight **qw;
    int n_qw, cap_qw;
    /* weights uploaded to a non-host backend (freed through it) */
    const struct lmc_backend *placed_on;
    void **placed;
    int n_placed, cap_placed;
    /* multi-adapter serving (train/lora_bank.h): the per-row groups the
     * linears' slots read, filled by lmc_model_forward_batch from the
     * batch's per-sequence adapters; NULL while no bank is bound */
    struct lmc_row_groups *row_groups;
    /* quantized linears' copies on a non-host backend (its qweight_upload;
     * freed through its qweight_free) */
    struct lmc_qweight **qdev;
    int n_qdev, cap_qdev;
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
/* As lmc_model_load with only experts [expert_begin, expert_end) of each
 * sparse layer read and bound (expert parallelism, model/moe_ep.h): the
 * others' tensors are checked but never touched (their pages stay
 * unmapped). Float safetensors folders; GGUF files and quantized folders
 * bind every expert. */
lmc_status lmc_model_load_experts(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                                  int64_t expert_begin, int64_t expert_end, lmc_err *err);
/* dir may also be a GGUF file (llama.cpp; lmc_gguf_is_file): config and
 * weights from it (weights_gguf.c: F32/F16/BF16 matrices as dense weights,
 * the block-quantized types bound in place as LMC_WFMT_QUANT linears,
 * llama.cpp's Q/K row order undone, quantized embeddings dequantized).
 * The loaders' shared parts: */
lmc_status lmc_model_load_gguf(struct lmc_model *m, const char *path, lmc_err *err);
/* The same over m->gguf, already parsed (set by the caller, freed by
 * lmc_model_free; fuzz_gguf binds images in memory); label names it. */
lmc_status lmc_model_bind_gguf(struct lmc_model *m, const char *label, lmc_err *err);
/* Counts weight bytes and uploads to a device backend (after the binds). */
lmc_status lmc_model_load_finish(struct lmc_model *m, const struct lmc_model_opts *opts, lmc_err *err);
/* Binds w (owned by the model from here, freed on error) as the quantized
 * weight of r (a layer linear, split into views for fused parts, or the head). */
struct lmc_qweight;
/* bytes (64-byte aligned, lmc_model_own's lifetime) from 2 MB-aligned
 * chunks madvised MADV_HUGEPAGE: a quantized decode streams every weight
 * once per token, and with 4 KB pages each page costs a TLB miss and stops
 * the hardware prefetcher. NULL when out of memory. */
void *lmc_model_own_huge(struct lmc_model *m, size_t bytes);
/* The next lmc_model_own_huge chunk at least bytes (virtual: untouched
 * pages are never resident), so that the pieces of one model share one
 * chunk and lose at most one partly used huge page; without room for it,
 * the 64 MB chunks as needed. */
void lmc_model_qheap_reserve(struct lmc_model *m, size_t bytes);
lmc_status lmc_model_bind_qweight(struct lmc_model *m, const struct lmc_tensor_ref *r, struct lmc_qweight *w,
                                  lmc_err *err);
void lmc_model_free(struct lmc_model *m);
/* As lmc_model_load for one pipeline stage (dist/pp_infer.h): only layers
 * [layer_begin, layer_end) are bound, the embedding when layer_begin is 0,
 * the final norm and the head when layer_end is num_layers (a tied head:
 * the embedding there too); the other tensors are checked (names, shapes,
 * dtypes) but never touched, so their pages stay unmapped and weight_bytes
 * counts the stage's own. The config and the layer table keep the whole
 * model's num_layers (w.layers[l] outside the range stay unbound). Float
 * safetensors folders only (GGUF files and quantized folders:
 * LMC_ERR_UNSUPPORTED); a range outside 0..num_layers: LMC_ERR_ARG. */
lmc_status lmc_model_load_layers(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                                 int64_t layer_begin, int64_t layer_end, lmc_err *err);

/* KV cache for one sequence: per layer K and V rows (ctx, n_kv*hd) of the
 * backend's kv_dtype, in backend memory; layer l's K region starts
 * layer_bytes * l bytes into k (the same for V). */
struct lmc_kv {
    const struct lmc_backend *be;
    int64_t ctx;                         /* capacity in positions */
    int64_t n_layers, row;               /* row = n_kv*hd */
    float *k, *v;                        /* (L, ctx, row) */
    size_t layer_bytes;                  /* ctx * row * sizeof kv_dtype, or a compressed layer's (infer/kvq.h) */
    void *state;                         /* fixed per-sequence slots of recurrent layers */
    size_t state_bytes;                  /* (lmc_model_seq_slot_bytes; 0 and NULL today) */
};
lmc_status lmc_kv_init(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be,
                       int64_t ctx, lmc_err *err);
/* As lmc_kv_init with layer regions of layer_bytes bytes each (a
 * compressed cache's layout, lmc_kvq_kv_init); 0: the default. */
lmc_status lmc_kv_init_bytes(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be,
                             int64_t ctx, size_t layer_bytes, lmc_err *err);
void lmc_kv_free(struct lmc_kv *kv);
size_t lmc_kv_bytes(const struct lmc_model *m, int64_t ctx);

/* Activation scratch in backend memory for up to max_tokens tokens per
 * forward step, with logits for up to logit_rows rows (>= 1), plus the
 * host staging a step needs (no allocation per step). */
struct lmc_acts {
    const struct lmc_backend *be;
    int64_t max_tokens, logit_rows;
    float *x, *h, *tmp;                  /* (T, C) residual stream, norm output, scratch */
    float *save;                         /* the block's scratch (lmc_block_save_floats) */
    float *logits;                       /* (logit_rows, V) */
    int32_t *ids, *pos;                  /* (T) */
    double *inv_freq;                    /* (head_dim/2) */
    int32_t *pos_host;                   /* host (T) */
    double *freq_host;                   /* host (head_dim/2) */
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

/* A token tree's verification (speculative decoding): ids[0..n) fill
 * cache rows pos0..pos0+n-1 at rotary/learned positions pos0 + depth[i],
 * row i attending to the cache before pos0 and to the rows of bit j of
 * mask[i] (its ancestors and itself: depth and mask host arrays); logits
 * (host) gets all n rows. n <= 64 and <= a->max_tokens, a->logit_rows.
 * LMC_ERR_ARG where the model or backend cannot (lmc_model_mask_ok). A
 * causal mask with depth[i] = i is lmc_model_forward with all_logits. */
lmc_status lmc_model_forward_mask(const struct lmc_model *m, const struct lmc_backend *be,
                                  struct lmc_acts *a, struct lmc_kv *kv, const int32_t *ids, int64_t n,
                                  int64_t pos0, const int32_t *depth, const uint64_t *mask, float *logits,
                                  lmc_err *err);
/* Layers from..L-1 of rows whose residual stream entering layer `from` is
 * x (host, n rows of hidden_size): appends their K/V for those layers at
 * positions pos0..pos0+n-1 (the layers before hold theirs already) and
 * fills logits (host) with all n rows. Self-speculation's verification
 * (LayerSkip): the draft, the first `from` layers, ran the rows; the
 * verifier goes on from its hidden states. n <= a->max_tokens and
 * a->logit_rows; no pipeline stages or vocabulary-parallel head
 * (LMC_ERR_ARG). */
lmc_status lmc_model_forward_from(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_acts *a,
                                  struct lmc_kv *kv, const float *x, int64_t n, int64_t pos0, int64_t from,
                                  float *logits, lmc_err *err);
/* Whether lmc_model_forward_mask runs for m on be: attention layers only, no
 * sliding window, an f32 cache in host memory, the backend's attention_mask;
 * no tensor/pipeline/vocabulary parallelism. */
bool lmc_model_mask_ok(const struct lmc_model *m, const struct lmc_backend *be);
/* Moves the cache rows src[i] to dst[i] (i < n, every layer; in order: a
 * dst may be a later src) — a token tree's accepted path put in place. */
void lmc_kv_move_rows(struct lmc_kv *kv, const int64_t *src, const int64_t *dst, int64_t n);

/* Final norm of rows (rows, C) of x into a->h and the head into a->logits. */
void lmc_model_logits(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_acts *a,
                      const float *x, int64_t rows);

/* Rotary inverse frequencies (rot_dim/2) and cos/sin scale for a sequence
 * of total length seq_len, per the config's rope type (HF semantics). */
void lmc_rope_freqs(const struct lmc_config *c, int64_t rot_dim, int64_t seq_len, double *inv_freq,
                    float *attn_scale);

/* Sequence state, per layer kind (the mixers' kv_row / slot_bytes): the
 * scheduler sizes sequences through these. KV blocks of block_size
 * positions a sequence of n_tokens needs (0 when no layer keeps K/V rows),
 * and bytes of fixed per-sequence slots (recurrent layers; 0 today). */
int64_t lmc_model_seq_blocks(const struct lmc_model *m, int64_t n_tokens, int64_t block_size);
size_t lmc_model_seq_slot_bytes(const struct lmc_model *m);
/* Floats of K (and of V) one token keeps over all layers. */
int64_t lmc_model_kv_floats_per_token(const struct lmc_config *c);

void *lmc_model_own(struct lmc_model *m, size_t bytes);
/* Moves the dense float matrices into one owned arena of transparent huge
 * pages in decode's reading order (weights_huge.c; values unchanged);
 * false: left where they were (too big for memory, nothing to move).
 * lmc_model_load_finish calls it for a host-memory backend. */
bool lmc_model_weights_huge(struct lmc_model *m);

#endif
