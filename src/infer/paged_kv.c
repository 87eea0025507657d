/* paged_kv.c — blocks, reference counts, copy-on-write and the prefix
 * cache of the paged KV cache (see paged_kv.h). The prefix cache maps the
 * chained hash of a full block to the block through chains off a power-of-
 * two bucket array; registered blocks with no users wait in an LRU list. */
#include "infer/paged_kv.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Hash of a block's tokens chained with the previous block's hash. */
static uint64_t block_hash(uint64_t parent, const int32_t *t, int64_t n) {
    uint64_t h = mix(parent + 0x9e3779b97f4a7c15ull);
    for (int64_t i = 0; i < n; i++) h = mix(h ^ ((uint64_t)(uint32_t)t[i] + 0x632be59bd9b4e019ull));
    return h;
}

lmc_status lmc_paged_kv_init(struct lmc_paged_kv *kv, const struct lmc_model *m,
                             const struct lmc_backend *be, int64_t n_blocks, int64_t block_size,
                             bool prefix_cache, lmc_err *err) {
    memset(kv, 0, sizeof *kv);
    lmc_status st = lmc_kv_pool_init(&kv->pool, m, be, n_blocks, block_size, err);
    if (st) return st;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->prefix_cache = prefix_cache; /* recurrent state: snapshots every block_size tokens */
    kv->n_buckets = 16;
    while (kv->n_buckets < n_blocks) kv->n_buckets *= 2;
    size_t nb = (size_t)n_blocks;
    kv->ref = calloc(nb, sizeof *kv->ref);
    kv->cached = calloc(nb, sizeof *kv->cached);
    kv->hash = calloc(nb, sizeof *kv->hash);
    kv->parent = calloc(nb, sizeof *kv->parent);
    kv->tokens = malloc(nb * (size_t)block_size * sizeof *kv->tokens);
    kv->bucket = malloc((size_t)kv->n_buckets * sizeof *kv->bucket);
    kv->hnext = malloc(nb * sizeof *kv->hnext);
    kv->free_list = malloc(nb * sizeof *kv->free_list);
    kv->lru_prev = malloc(nb * sizeof *kv->lru_prev);
    kv->lru_next = malloc(nb * sizeof *kv->lru_next);
    if (!kv->ref || !kv->cached || !kv->hash || !kv->parent || !kv->tokens || !kv->bucket ||
        !kv->hnext || !kv->free_list || !kv->lru_prev || !kv->lru_next) {
        lmc_paged_kv_free(kv);
        return lmc_err_set(err, LMC_ERR_OOM, "paged KV tables for %lld blocks: out of memory",
                           (long long)n_blocks);
    }
    for (int64_t i = 0; i < kv->n_buckets; i++) kv->bucket[i] = -1;
    /* stack: block 0 on top */
    for (int64_t i = 0; i < n_blocks; i++) kv->free_list[i] = (int32_t)(n_blocks - 1 - i);
    kv->n_free = n_blocks;
    kv->lru_head = kv->lru_tail = kv->lru_out = -1;
    kv->max_cached = n_blocks;
    return LMC_OK;
}

void lmc_paged_kv_free(struct lmc_paged_kv *kv) {
    lmc_kv_pool_free(&kv->pool);
    free(kv->copy_log);
    free(kv->ref);
    free(kv->cached);
    free(kv->hash);
    free(kv->parent);
    free(kv->tokens);
    free(kv->bucket);
    free(kv->hnext);
    free(kv->free_list);
    free(kv->lru_prev);
    free(kv->lru_next);
    memset(kv, 0, sizeof *kv);
}

int64_t lmc_paged_kv_used(const struct lmc_paged_kv *kv) {
    return kv->n_blocks - kv->n_free - kv->n_lru;
}

static void lru_remove(struct lmc_paged_kv *kv, int32_t b) {
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (kv->lru_out == b) kv->lru_out = p; /* the outputs are a prefix of the list */
    if (p >= 0) kv->lru_next[p] = n; else kv->lru_head = n;
    if (n >= 0) kv->lru_prev[n] = p; else kv->lru_tail = p;
    kv->n_lru--;
}

static void lru_push_tail(struct lmc_paged_kv *kv, int32_t b) {
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = b; else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

/* Output blocks of a finished sequence (lmc_kv_seq_release_outputs_first):
 * the LRU starts with them (evicted ahead of every other block), oldest
 * first; b goes right after the last of them. */
static void lru_push_output(struct lmc_paged_kv *kv, int32_t b) {
    int32_t p = kv->lru_out, n = p >= 0 ? kv->lru_next[p] : kv->lru_head;
    kv->lru_prev[b] = p;
    kv->lru_next[b] = n;
    if (p >= 0) kv->lru_next[p] = b; else kv->lru_head = b;
    if (n >= 0) kv->lru_prev[n] = b; else kv->lru_tail = b;
    kv->lru_out = b;
    kv->n_lru++;
}

static void unregister(struct lmc_paged_kv *kv, int32_t b) {
    int32_t *pp = &kv->bucket[kv->hash[b] & (uint64_t)(kv->n_buckets - 1)];
    while (*pp != b) {
        LMC_ASSERT(*pp >= 0);
        pp = &kv->hnext[*pp];
    }
    *pp = kv->hnext[b];
    kv->cached[b] = false;
}

/* The registered block holding tokens t under parent hash, or -1. */
static int32_t lookup(const struct lmc_paged_kv *kv, uint64_t h, uint64_t parent, const int32_t *t) {
    size_t bs = (size_t)kv->block_size;
    for (int32_t b = kv->bucket[h & (uint64_t)(kv->n_buckets - 1)]; b >= 0; b = kv->hnext[b])
        if (kv->hash[b] == h && kv->parent[b] == parent &&
            !memcmp(kv->tokens + (size_t)b * bs, t, bs * sizeof *t))
            return b;
    return -1;
}

/* Takes the least recently used cached block with no user out of the
 * prefix cache (it becomes a plain block with ref 0, not on any list). */
static int32_t evict_lru(struct lmc_paged_kv *kv) {
    LMC_ASSERT(kv->n_lru > 0);
    int32_t b = kv->lru_head;
    lru_remove(kv, b);
    unregister(kv, b);
    kv->evictions++;
    return b;
}

/* Evicts onto the free list until the LRU is within its bound. */
static void trim_cache(struct lmc_paged_kv *kv) {
    while (kv->n_lru > kv->max_cached) kv->free_list[kv->n_free++] = evict_lru(kv);
}

void lmc_paged_kv_set_cache_limit(struct lmc_paged_kv *kv, int64_t max_cached) {
    kv->max_cached = LMC_MAX(0, LMC_MIN(max_cached, kv->n_blocks));
    trim_cache(kv);
}

/* A block with ref 1: from the free list, else the least recently used
 * cached one (evicted from the prefix cache). Caller checked availability. */
static int32_t take_block(struct lmc_paged_kv *kv) {
    int32_t b = kv->n_free ? kv->free_list[--kv->n_free] : evict_lru(kv);
    LMC_ASSERT(kv->ref[b] == 0);
    kv->ref[b] = 1;
    return b;
}

static void drop_block(struct lmc_paged_kv *kv, int32_t b, bool evict_first) {
    LMC_ASSERT(kv->ref[b] > 0);
    if (--kv->ref[b]) return;
    if (!kv->cached[b]) {
        kv->free_list[kv->n_free++] = b;
        return;
    }
    if (evict_first) lru_push_output(kv, b);
    else lru_push_tail(kv, b);
    trim_cache(kv);
}

static bool grow(struct lmc_kv_seq *s, int64_t n) {
    if (n <= s->cap) return true;
    int64_t cap = LMC_MAX(n, 2 * s->cap);
    int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
    if (!b) return false;
    s->blocks = b;
    s->cap = cap;
    return true;
}

void lmc_kv_seq_init(struct lmc_kv_seq *s) { memset(s, 0, sizeof *s); }

void lmc_kv_seq_set_namespace(struct lmc_kv_seq *s, uint64_t key) {
    LMC_ASSERT(s->n_blocks == 0);
    s->root = s->last_hash = key;
}

void lmc_kv_seq_release_outputs_first(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, int64_t keep_blocks) {
    keep_blocks = LMC_MAX(0, LMC_MIN(keep_blocks, s->n_blocks));
    for (int64_t i = s->n_blocks - 1; i >= keep_blocks; i--) drop_block(kv, s->blocks[i], true);
    s->n_blocks = keep_blocks;
    lmc_kv_seq_release(kv, s);
}

void lmc_kv_seq_release(struct lmc_paged_kv *kv, struct lmc_kv_seq *s) {
    for (int64_t i = s->n_blocks - 1; i >= 0; i--) drop_block(kv, s->blocks[i], false);
    s->n_blocks = 0;
    s->n_hashed = 0;
    s->last_hash = s->root;
}

void lmc_kv_seq_free(struct lmc_paged_kv *kv, struct lmc_kv_seq *s) {
    lmc_kv_seq_release(kv, s);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

/* Recurrent: the live slot starts as a copy of the snapshot of the
 * longest cached prefix (whole blocks, at most lim tokens). */
static int64_t match_state(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, const int32_t *ids,
                           int64_t lim) {
    int64_t bs = kv->block_size, best = 0;
    int32_t snap = -1;
    uint64_t prev = 0, best_h = 0;
    for (int64_t b = 0; (b + 1) * bs <= lim; b++) {
        uint64_t h = block_hash(prev, ids + b * bs, bs);
        int32_t blk = lookup(kv, h, prev, ids + b * bs);
        if (blk >= 0) best = b + 1, snap = blk, best_h = h;
        prev = h;
    }
    if (snap < 0 || !grow(s, 1)) return 0;
    if (kv->ref[snap]++ == 0) lru_remove(kv, snap); /* pinned while the live slot is taken */
    if (lmc_paged_kv_available(kv) < 1) {
        drop_block(kv, snap, false);
        return 0;
    }
    int32_t live = take_block(kv);
    lmc_kv_pool_state_copy(&kv->pool, live, snap);
    drop_block(kv, snap, false);
    s->blocks[s->n_blocks++] = live;
    s->n_hashed = best;
    s->last_hash = best_h;
    kv->hits_tokens += best * bs;
    kv->hits_blocks += best;
    kv->state_restores++;
    return best * bs;
}

int64_t lmc_kv_seq_match_prefix(struct lmc_paged_kv *kv, struct lmc_kv_seq *s,
                                const int32_t *ids, int64_t n, int64_t max_tokens) {
    LMC_ASSERT(s->n_blocks == 0);
    if (!kv->prefix_cache) return 0;
    if (kv->pool.state) {
        kv->queries_tokens += n;
        return match_state(kv, s, ids, LMC_MIN(n, max_tokens));
    }
    int64_t bs = kv->block_size, lim = LMC_MIN(n, max_tokens), b = 0;
    kv->queries_tokens += n;
    uint64_t prev = s->root;
    for (; (b + 1) * bs <= lim; b++) {
        uint64_t h = block_hash(prev, ids + b * bs, bs);
        int32_t blk = lookup(kv, h, prev, ids + b * bs);
        if (blk < 0 || !grow(s, b + 1)) break;
        if (kv->ref[blk]++ == 0) lru_remove(kv, blk);
        s->blocks[s->n_blocks++] = blk;
        prev = h;
    }
    s->n_hashed = b;
    s->last_hash = prev;
    kv->hits_tokens += b * bs;
    kv->hits_blocks += b;
    return b * bs;
}

/* Whether block b at index i of a sequence must be copied before
 * positions from n_filled on are written: others use it, or it is
 * registered in the prefix cache (a cached block never changes; a
 * sequence whose prefix hit ends inside one recomputes its tail in a
 * copy). */
static bool copy_on_write(const struct lmc_paged_kv *kv, int32_t b, int64_t i, int64_t n_filled) {
    return kv->ref[b] > 1 || (kv->cached[b] && (i + 1) * kv->block_size > n_filled);
}

int64_t lmc_kv_seq_blocks_needed(const struct lmc_paged_kv *kv, const struct lmc_kv_seq *s,
                                 int64_t n_filled, int64_t n_tokens) {
    if (kv->pool.state) return s->n_blocks ? 0 : 1; /* one state slot per sequence */
    int64_t bs = kv->block_size, want = (n_tokens + bs - 1) / bs;
    int64_t need = LMC_MAX(0, want - s->n_blocks);
    for (int64_t i = n_filled / bs; i < LMC_MIN(s->n_blocks, want); i++)
        if (copy_on_write(kv, s->blocks[i], i, n_filled)) need++;
    return need;
}

static void log_copy(struct lmc_paged_kv *kv, int32_t dst, int32_t src) {
    if (kv->n_copy_log == kv->copy_log_cap) {
        int64_t cap = kv->copy_log_cap ? 2 * kv->copy_log_cap : 16;
        int32_t *p = realloc(kv->copy_log, sizeof(int32_t) * 2 * (size_t)cap);
        if (!p) {
            kv->copy_log_lost = true;
            return;
        }
        kv->copy_log = p;
        kv->copy_log_cap = cap;
    }
    kv->copy_log[2 * kv->n_copy_log] = dst;
    kv->copy_log[2 * kv->n_copy_log + 1] = src;
    kv->n_copy_log++;
}

bool lmc_kv_seq_reserve(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, int64_t n_filled,
                        int64_t n_tokens) {
    if (kv->pool.state) { /* recurrent: the sequence's state slot, zeroed when taken */
        if (s->n_blocks) return true;
        if (lmc_paged_kv_available(kv) < 1 || !grow(s, 1)) return false;
        s->blocks[s->n_blocks++] = take_block(kv);
        lmc_kv_pool_state_zero(&kv->pool, s->blocks[0]);
        return true;
    }
    int64_t bs = kv->block_size, want = (n_tokens + bs - 1) / bs;
    LMC_ASSERT(n_filled >= 0 && n_filled <= n_tokens && n_filled <= s->n_blocks * bs);
    if (lmc_kv_seq_blocks_needed(kv, s, n_filled, n_tokens) > lmc_paged_kv_available(kv) ||
        !grow(s, want))
        return false;
    /* copy-on-write: blocks to be written that others also use */
    for (int64_t i = n_filled / bs; i < LMC_MIN(s->n_blocks, want); i++) {
        int32_t old = s->blocks[i];
        if (!copy_on_write(kv, old, i, n_filled)) continue;
        /* a cached block is written only past a prefix hit's end (lmc_kv_seq_match_prefix) */
        LMC_ASSERT(!kv->cached[old] || i * bs + bs <= n_filled || i < s->n_hashed);
        int32_t nb = take_block(kv);
        if (i * bs < n_filled) { /* holds written positions: copy them */
            lmc_kv_pool_copy_block(&kv->pool, nb, old);
            kv->cow_copies++;
            if (kv->log_copies) log_copy(kv, nb, old);
        }
        drop_block(kv, old, false);
        s->blocks[i] = nb;
    }
    while (s->n_blocks < want) s->blocks[s->n_blocks++] = take_block(kv);
    return true;
}

void lmc_kv_seq_truncate(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, int64_t n_tokens) {
    if (kv->pool.state) return; /* one state slot whatever the length */
    int64_t keep = (n_tokens + kv->block_size - 1) / kv->block_size;
    LMC_ASSERT(n_tokens >= 0 && s->n_hashed <= keep);
    while (s->n_blocks > keep) drop_block(kv, s->blocks[--s->n_blocks], false);
}

/* Registers blk in the prefix cache under hash h (tokens t after parent). */
static void register_block(struct lmc_paged_kv *kv, int32_t blk, uint64_t h, uint64_t parent,
                           const int32_t *t) {
    size_t bs = (size_t)kv->block_size;
    kv->cached[blk] = true;
    kv->hash[blk] = h;
    kv->parent[blk] = parent;
    memcpy(kv->tokens + (size_t)blk * bs, t, bs * sizeof *t);
    int32_t *head = &kv->bucket[h & (uint64_t)(kv->n_buckets - 1)];
    kv->hnext[blk] = *head;
    *head = blk;
}

/* Recurrent: after a step that ended exactly on a block boundary, a copy
 * of the live state (blocks[0]) becomes a cached snapshot of the prefix
 * (ref 0, in the LRU: evicted first when a slot is needed); boundaries a
 * step crossed without ending on them only extend the hash chain. */
static void commit_state(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, const int32_t *ids,
                         int64_t n_filled) {
    int64_t bs = kv->block_size;
    for (int64_t b = s->n_hashed; (b + 1) * bs <= n_filled; b++) {
        const int32_t *t = ids + b * bs;
        uint64_t h = block_hash(s->last_hash, t, bs);
        if ((b + 1) * bs == n_filled && s->n_blocks && kv->max_cached > 0 &&
            lmc_paged_kv_available(kv) > 0 && lookup(kv, h, s->last_hash, t) < 0) {
            int32_t blk = take_block(kv);
            lmc_kv_pool_state_copy(&kv->pool, blk, s->blocks[0]);
            register_block(kv, blk, h, s->last_hash, t);
            kv->state_snapshots++;
            drop_block(kv, blk, false);
        }
        s->last_hash = h;
        s->n_hashed = b + 1;
    }
}

void lmc_kv_seq_commit(struct lmc_paged_kv *kv, struct lmc_kv_seq *s, const int32_t *ids,
                       int64_t n_filled) {
    if (!kv->prefix_cache) return;
    if (kv->pool.state) {
        commit_state(kv, s, ids, n_filled);
        return;
    }
    int64_t bs = kv->block_size;
    for (int64_t b = s->n_hashed; (b + 1) * bs <= n_filled && b < s->n_blocks; b++) {
        const int32_t *t = ids + b * bs;
        uint64_t h = block_hash(s->last_hash, t, bs);
        int32_t blk = s->blocks[b];
        if (!kv->cached[blk] && lookup(kv, h, s->last_hash, t) < 0) register_block(kv, blk, h, s->last_hash, t);
        s->last_hash = h;
        s->n_hashed = b + 1;
    }
}

bool lmc_kv_seq_fork(struct lmc_paged_kv *kv, struct lmc_kv_seq *dst, const struct lmc_kv_seq *src) {
    LMC_ASSERT(dst->n_blocks == 0);
    if (kv->pool.state) { /* recurrent: a slot of its own holding a copy of src's state */
        if (src->n_blocks != 1 || lmc_paged_kv_available(kv) < 1 || !grow(dst, 1)) return false;
        int32_t b = take_block(kv);
        lmc_kv_pool_state_copy(&kv->pool, b, src->blocks[0]);
        dst->blocks[dst->n_blocks++] = b;
        dst->n_hashed = src->n_hashed;
        dst->last_hash = src->last_hash;
        return true;
    }
    if (!grow(dst, src->n_blocks)) return false;
    for (int64_t i = 0; i < src->n_blocks; i++) {
        dst->blocks[i] = src->blocks[i];
        kv->ref[src->blocks[i]]++;
    }
    dst->n_blocks = src->n_blocks;
    dst->n_hashed = src->n_hashed;
    dst->last_hash = src->last_hash;
    dst->root = src->root;
    return true;
}
