/* paged_kv.h — block management for the paged KV cache: a pool of
 * fixed-size blocks (memory in model/forward_batch.h's lmc_kv_pool), a free
 * list, per-sequence block tables, reference counts with copy-on-write
 * (forked sequences share blocks; writing into a shared partial block
 * copies it first), and prefix caching: every full block is registered
 * under the hash of its tokens chained with the previous block's hash, so
 * a later sequence with the same token prefix reuses it. Blocks whose
 * reference count drops to 0 stay cached (an LRU list) and are evicted,
 * least recently used first, when the free list is empty or when the LRU
 * holds more than max_cached blocks (the prefix cache's bound: the memory
 * it may keep beyond what running sequences use). The free list is a
 * stack, so blocks are reused hottest first and the pool's pages that were
 * ever touched stay at the peak of (used + cached) blocks. Owned by one
 * thread (the scheduler's); not locked. */
#ifndef LMC_PAGED_KV_H
#define LMC_PAGED_KV_H

#include "lmc.h"
#include "model/forward_batch.h"

#include <stdbool.h>
#include <stdint.h>

struct lmc_paged_kv {
    struct lmc_kv_pool pool;
    int64_t n_blocks, block_size;
    bool prefix_cache;
    int32_t *ref;              /* (n_blocks) users of each block */
    /* prefix cache, per block: registered flag, chained hash, parent hash
     * and the block's tokens (checked on lookup, so a hash collision is a
     * miss, never wrong reuse); hash chains through bucket heads */
    bool *cached;
    uint64_t *hash, *parent;
    int32_t *tokens;           /* (n_blocks, block_size) */
    int32_t *bucket, *hnext;   /* (n_buckets) heads, (n_blocks) next, -1 ends */
    int64_t n_buckets;
    /* free list (stack) of unregistered blocks with ref 0 */
    int32_t *free_list;
    int64_t n_free;
    /* LRU of registered blocks with ref 0: head is evicted first */
    int32_t *lru_prev, *lru_next, lru_head, lru_tail;
    int32_t lru_out;           /* the last finished-output block at the LRU's head end (-1: none) */
    int64_t n_lru;
    int64_t max_cached;        /* bound on n_lru (default n_blocks) */
    /* counters */
    int64_t hits_tokens, queries_tokens, hits_blocks, evictions, cow_copies;
    int64_t state_snapshots, state_restores; /* recurrent: snapshots taken, sequences resumed */
    /* with log_copies (tensor-parallel serving): the copy-on-write block
     * copies (dst, src pairs) since the caller last emptied the log */
    bool log_copies, copy_log_lost; /* lost: a pair could not be logged (out of memory) */
    int32_t *copy_log;
    int64_t n_copy_log, copy_log_cap;
};

/* One sequence's view: its block table and how far its blocks are
 * registered in the prefix cache. */
struct lmc_kv_seq {
    int32_t *blocks;           /* (cap) block ids, position p in blocks[p / block_size] */
    int64_t n_blocks, cap;
    int64_t n_hashed;          /* leading blocks registered (or found) in the cache */
    uint64_t last_hash;        /* chained hash of block n_hashed - 1 (root before any) */
    uint64_t root;             /* the chain's start: its prefix-cache namespace (0: the base model) */
};

/* Allocates the memory for n_blocks blocks through be and the tables. */
lmc_status lmc_paged_kv_init(struct lmc_paged_kv *kv, const struct lmc_model *m,
                             const struct lmc_backend *be, int64_t n_blocks, int64_t block_size,
                             bool prefix_cache, lmc_err *err);
void lmc_paged_kv_free(struct lmc_paged_kv *kv);

/* Bounds the blocks the prefix cache keeps with no user (0..n_blocks; 0
 * keeps none, so a prefix is shared only while a sequence holds it);
 * evicts the least recently used ones beyond it now. */
void lmc_paged_kv_set_cache_limit(struct lmc_paged_kv *kv, int64_t max_cached);

/* Blocks referenced by at least one sequence. */
int64_t lmc_paged_kv_used(const struct lmc_paged_kv *kv);
/* Blocks that could be handed out now (free + evictable cached). */
static inline int64_t lmc_paged_kv_available(const struct lmc_paged_kv *kv) {
    return kv->n_free + kv->n_lru;
}

void lmc_kv_seq_init(struct lmc_kv_seq *s);
/* Puts s (empty) in prefix-cache namespace key: its blocks are found and
 * registered under chains that start from key, so sequences of different
 * namespaces (e.g. different LoRA adapters over one base) never share
 * blocks even with equal tokens. 0 is the default namespace. */
void lmc_kv_seq_set_namespace(struct lmc_kv_seq *s, uint64_t key);
/* Drops every block (ref--, registered ones go to the LRU, the last block
 * first so a prefix outlives its continuations) and empties the table. */
void lmc_kv_seq_release(struct lmc_paged_kv *kv, struct lmc_kv_seq *s);
/* As lmc_kv_seq_release, but the blocks from index keep_blocks on (a
 * finished request's output) go to the evicting end of the LRU, the last
 * one first: outputs are evicted before any other block, the oldest
 * request's first. Under the cache bound, prompts (what later requests
 * most often repeat) outlive the outputs of every finished request. */
void lmc_kv_seq_release_outputs_first(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, int64_t keep_blocks);
/* Releases and frees the table's memory. */
void lmc_kv_seq_free(struct lmc_paged_kv *kv, struct lmc_kv_seq *s);

/* For an empty sequence about to hold ids[0..n): takes the longest run of
 * leading full blocks found in the prefix cache (at most max_tokens tokens
 * worth) and returns how many tokens they hold. Counts queried and hit
 * tokens. Returns 0 when prefix caching is off. */
int64_t lmc_kv_seq_match_prefix(struct lmc_paged_kv *kv, struct lmc_kv_seq *s,
                                const int32_t *ids, int64_t n, int64_t max_tokens);

/* Blocks lmc_kv_seq_reserve would take to let s hold n_tokens positions
 * when n_filled are written (new blocks plus a copy-on-write copy). */
int64_t lmc_kv_seq_blocks_needed(const struct lmc_paged_kv *kv, const struct lmc_kv_seq *s,
                                 int64_t n_filled, int64_t n_tokens);
/* Makes s able to hold positions n_filled..n_tokens-1 for writing: new
 * blocks appended (free list first, then LRU eviction), and the partial
 * block at n_filled copied first if it is shared or registered in the
 * prefix cache (a cached block is never written: a sequence that took a
 * matched block and computes from inside it, e.g. the last token of a
 * prompt found whole, writes into a copy). All or nothing: false
 * (nothing changed) when not enough blocks are available. */
bool lmc_kv_seq_reserve(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, int64_t n_filled,
                        int64_t n_tokens);

/* Releases the blocks of s past those holding positions < n_tokens (a
 * rollback of speculative rows: the rejected drafts' blocks go back to the
 * free list). Blocks registered in the prefix cache are never past it. */
void lmc_kv_seq_truncate(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, int64_t n_tokens);

/* After positions < n_filled of s hold ids[0..n_filled): registers every
 * newly full block in the prefix cache (a block whose hash is already
 * registered to another block stays private). */
void lmc_kv_seq_commit(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, const int32_t *ids,
                       int64_t n_filled);

/* dst (empty) shares all of src's blocks (n > 1 sampling, beam search);
 * the first write into a shared partial block copies it. Recurrent models
 * (pool.state): dst takes a slot of its own holding a copy of src's state.
 * false: out of host memory for the table, or (recurrent) no free slot.
 * Recurrent models: a sequence holds one block, its state slot, taken and
 * zeroed by reserve. Their prefix cache keeps
 * snapshots instead of K/V blocks: commit copies the live state into a
 * free slot, registered under the chained hash of the prompt's leading
 * blocks, whenever a step ends exactly on a block boundary (block_size is
 * the snapshot interval); match_prefix takes the live slot as a copy of
 * the longest cached snapshot (hits count its whole blocks). Snapshots
 * have no user: they sit in the LRU, bounded by the cache limit, and are
 * evicted first when a sequence needs a slot. */
bool lmc_kv_seq_fork(struct lmc_paged_kv *kv, struct lmc_kv_seq *dst, const struct lmc_kv_seq *src);

/* The pool row of position p of s. */
static inline int64_t lmc_kv_seq_slot(const struct lmc_paged_kv *kv, const struct lmc_kv_seq *s,
                                      int64_t p) {
    return (int64_t)s->blocks[p / kv->block_size] * kv->block_size + p % kv->block_size;
}

#endif
