/* forward_batch.h — one forward step over the tokens of many sequences at
 * once (continuous batching): every matmul and norm runs over the whole
 * batch, and each token's K/V goes into a slot of a paged KV pool found
 * through its sequence's block table; attention reads the pool through the
 * block tables (backend op attention_paged). The pool is plain memory here;
 * which blocks belong to whom is decided above (infer/paged_kv). */
#ifndef LMC_FORWARD_BATCH_H
#define LMC_FORWARD_BATCH_H

#include "lmc.h"
#include "model/model.h"
#include "model/block.h"

#include <stdint.h>

/* The KV memory: n_blocks blocks of block_size positions, per layer, K and
 * V rows of row = n_kv*hd floats, in backend memory. Position p of a
 * sequence lives in row block_table[p / block_size] * block_size +
 * p % block_size of its layer's (n_blocks * block_size, row) matrix. */
struct lmc_kv_pool {
    const struct lmc_backend *be;
    int64_t n_blocks, block_size, n_layers, row;
    size_t row_bytes;        /* one token's K (or V) row of one layer: row * sizeof kv_dtype,
                              * or the backend's compressed row (kv_row_bytes) */
    float *k, *v;            /* (L, n_blocks * block_size, row_bytes bytes) each */
    void *stage;             /* host staging of one block's layer (device backends) */
    /* Recurrent mixers (Mamba; row 0): a block is a sequence's state slot
     * of slot_bytes (lmc_model_seq_slot_bytes, all layers), holding no
     * K/V; a sequence keeps one block whatever its length. Layout: layer
     * l's region at state + l * n_blocks * layer_bytes holds the mixer's
     * parts one after another (part k: n_blocks slots of part_bytes[k]),
     * so slot b of part k is at region + n_blocks * (part_bytes[0..k) sum)
     * + b * part_bytes[k] and the SSM ops index a part by block id. */
    void *state;
    size_t slot_bytes, layer_bytes;
    int n_parts;
    int64_t part_bytes[LMC_SLOT_PARTS];
    /* Backends with attention_paged_ring (KIVI-2 paged): n_ring sequence
     * slots of recent rows in f16 per layer (layer l's ring at ring + l *
     * n_ring * ring_slot_bytes; backend.h lmc_kv_ring_slot_bytes), given
     * by lmc_kv_pool_ring_init; ring_slot names the next batch's slots. */
    void *ring;
    int64_t n_ring, ring_rows, residual;
    size_t ring_slot_bytes;
    /* host (n_seqs of the next forward): each batch sequence's ring slot
     * (0..n_ring-1), set by the pool's owner before every forward */
    const int32_t *ring_slot;
};
/* Gives p (from lmc_kv_pool_init with a backend that has
 * attention_paged_ring) n_slots ring slots keeping the last `residual`
 * positions of a sequence in f16 (0..4096), all empty. No-op (LMC_OK) for
 * other backends. */
lmc_status lmc_kv_pool_ring_init(struct lmc_kv_pool *p, int64_t n_slots, int64_t residual,
                                 lmc_err *err);
/* Rows of a ring keeping `residual` positions: the window and rejected
 * drafts (16), at least a key group's 31 earlier rows past those (48). */
int64_t lmc_kv_pool_ring_rows(int64_t residual);
/* Empties ring slot `slot` in every layer (a sequence takes it). */
void lmc_kv_pool_ring_reset(struct lmc_kv_pool *p, int64_t slot);
/* Ring memory over all layers and slots. */
size_t lmc_kv_pool_ring_bytes(const struct lmc_kv_pool *p);
/* Layer l's part k of the state, slot 0 (slot b at + b * part_bytes[k]). */
void *lmc_kv_pool_state_part(const struct lmc_kv_pool *p, int64_t l, int k);
/* Zeroes block b's state in every layer (a new sequence). */
void lmc_kv_pool_state_zero(struct lmc_kv_pool *p, int64_t b);
/* Copies block src's state to block dst in every layer (snapshots). */
void lmc_kv_pool_state_copy(struct lmc_kv_pool *p, int64_t dst, int64_t src);
/* Bytes of one token's K (or V) row of row values in be's pool: row
 * elements of kv_dtype (f32 on the CPU, bf16 on CUDA), or what the
 * backend's kv_row_bytes says (compressed pools, infer/kvq.h). */
size_t lmc_kv_pool_row_bytes(const struct lmc_backend *be, int64_t row);
/* KV bytes of one token over all layers, K and V (0 for recurrent models). */
size_t lmc_kv_pool_token_bytes(const struct lmc_model *m, const struct lmc_backend *be);
/* Bytes of one block over all layers: block_size tokens of
 * lmc_kv_pool_token_bytes, plus a recurrent model's state slot. */
size_t lmc_kv_pool_block_bytes(const struct lmc_model *m, const struct lmc_backend *be,
                               int64_t block_size);
lmc_status lmc_kv_pool_init(struct lmc_kv_pool *p, const struct lmc_model *m,
                            const struct lmc_backend *be, int64_t n_blocks, int64_t block_size,
                            lmc_err *err);
void lmc_kv_pool_free(struct lmc_kv_pool *p);
/* Copies block src to block dst in every layer (copy-on-write). */
void lmc_kv_pool_copy_block(struct lmc_kv_pool *p, int64_t dst, int64_t src);

/* One step's tokens (host memory). Tokens of a sequence at positions
 * p0..p1 need that sequence's positions < p0 already in the pool and its
 * block table covering p1. */
struct lmc_batch {
    int64_t n_tokens;
    const int32_t *ids, *seq, *pos;  /* (n_tokens) id, sequence index, position */
    int64_t n_seqs;
    const int32_t *block_tables;     /* (n_seqs, max_blocks) block ids */
    int64_t max_blocks;
    const int32_t *logit_tokens;     /* (n_logits) token indices whose logits are wanted */
    int64_t n_logits;
    /* (n_seqs) each sequence's adapter of the model's bank (train/
     * lora_bank.h; 0: the base), or NULL: every sequence the base. The
     * tokens of one adapter must be contiguous (one group each). */
    const int32_t *adapter;
};

/* Scratch for steps of up to max_tokens tokens, max_seqs sequences of up
 * to max_blocks blocks each, and max_logits logits rows; the host staging
 * of a step is part of it (a step allocates nothing). */
struct lmc_batch_acts {
    struct lmc_acts a;               /* x, h, tmp, save, logits, ids, pos */
    int64_t max_seqs, max_blocks;
    int32_t *seq, *rows;             /* (T) sequence index; (max_logits) logit token indices */
    int32_t *bt;                     /* (max_seqs, max_blocks) */
    double *inv_freq;                /* (max_seqs, rot_dim/2) */
    /* host */
    int64_t *len_host;               /* (max_seqs) */
    double *freq_host;               /* (max_seqs, rot_dim/2) */
    float *scale_host;               /* (max_seqs) */
    float *row_host, *prob_host;     /* (V) argmax / sampling fallbacks */
    int32_t *idx_host;               /* (V) */
    int32_t *tok_slot;               /* (max_tokens) state slot of each token's sequence */
    int32_t *tok_slot_host;          /* (max_tokens) */
};
lmc_status lmc_batch_acts_init(struct lmc_batch_acts *b, const struct lmc_model *m,
                               const struct lmc_backend *be, int64_t max_tokens, int64_t max_seqs,
                               int64_t max_blocks, int64_t max_logits, lmc_err *err);
void lmc_batch_acts_free(struct lmc_batch_acts *b);

/* Runs the batch and writes (n_logits, V) rows (host) to logits in the
 * order of b->logit_tokens. Checks ids, positions, sequence indices, block
 * ids and the scratch sizes (LMC_ERR_ARG). */
lmc_status lmc_model_forward_batch(const struct lmc_model *m, const struct lmc_backend *be,
                                   struct lmc_batch_acts *a, struct lmc_kv_pool *kv,
                                   const struct lmc_batch *b, float *logits, lmc_err *err);
/* The same step, but writes for each logits row only the id of its
 * largest logit (host ids, n_logits entries; the first on ties, as greedy
 * sampling picks): the argmax runs on the backend (argmax_rows) when it
 * has one, so only the ids leave it. */
lmc_status lmc_model_forward_batch_argmax(const struct lmc_model *m, const struct lmc_backend *be,
                                          struct lmc_batch_acts *a, struct lmc_kv_pool *kv,
                                          const struct lmc_batch *b, int32_t *ids, lmc_err *err);
/* The same step, sampling each logits row r with params[r] (host; the
 * sampler's core semantics, penalties already excluded by the caller) into
 * ids[r] (host): on the backend (sample_rows) when it has one, so only the
 * ids leave it; otherwise the rows are downloaded and sampled on the host. */
lmc_status lmc_model_forward_batch_sample(const struct lmc_model *m, const struct lmc_backend *be,
                                          struct lmc_batch_acts *a, struct lmc_kv_pool *kv,
                                          const struct lmc_batch *b,
                                          const struct lmc_sample_row *params, int32_t *ids,
                                          lmc_err *err);

#endif
