/* test_paged_kv.c — block management of the paged KV cache: allocation and
 * release, exhaustion (all-or-nothing reserve), copy-on-write after a fork,
 * prefix-cache hits, misses, LRU eviction order and duplicate blocks, the
 * cache's bound (LRU eviction down to it; the blocks ever handed out stay
 * within peak use + bound however many sequences pass), and that every
 * block comes back at the end. A whole-prompt hit that writes inside its
 * last cached block writes into a copy (the cached block unchanged). */
#include "model_fixture.h"
#include "test.h"
#include "core/core.h"
#include "infer/paged_kv.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

static struct lmc_model m;
static struct lmc_backend be;

/* Writes value into every float of block b (all layers, K and V). */
static void fill_block(struct lmc_paged_kv *kv, int32_t b, float value) {
    int64_t n = kv->block_size * kv->pool.row;
    for (int64_t l = 0; l < kv->pool.n_layers; l++)
        for (int64_t i = 0; i < n; i++) {
            kv->pool.k[(l * kv->n_blocks + b) * n + i] = value;
            kv->pool.v[(l * kv->n_blocks + b) * n + i] = -value;
        }
}

static bool block_is(struct lmc_paged_kv *kv, int32_t b, float value) {
    int64_t n = kv->block_size * kv->pool.row;
    for (int64_t l = 0; l < kv->pool.n_layers; l++)
        for (int64_t i = 0; i < n; i++)
            if (kv->pool.k[(l * kv->n_blocks + b) * n + i] != value ||
                kv->pool.v[(l * kv->n_blocks + b) * n + i] != -value)
                return false;
    return true;
}

static void test_alloc_exhaust(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 8, 4, true, &err) == LMC_OK);
    struct lmc_kv_seq a, b;
    lmc_kv_seq_init(&a);
    lmc_kv_seq_init(&b);
    CHECK(lmc_kv_seq_blocks_needed(&kv, &a, 0, 10) == 3);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 10));
    CHECK(a.n_blocks == 3 && lmc_paged_kv_used(&kv) == 3);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 10, 20)); /* grows to 5 blocks */
    CHECK(a.n_blocks == 5 && lmc_paged_kv_available(&kv) == 3);
    /* 4 blocks do not fit: nothing changes */
    CHECK(!lmc_kv_seq_reserve(&kv, &b, 0, 16));
    CHECK(b.n_blocks == 0 && lmc_paged_kv_available(&kv) == 3);
    CHECK(lmc_kv_seq_reserve(&kv, &b, 0, 12));
    CHECK(lmc_paged_kv_available(&kv) == 0);
    /* distinct blocks */
    bool distinct = true;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++) distinct &= a.blocks[i] != b.blocks[j];
    CHECK(distinct);
    lmc_kv_seq_free(&kv, &a);
    CHECK(lmc_paged_kv_used(&kv) == 3 && kv.n_free == 5);
    lmc_kv_seq_free(&kv, &b);
    CHECK(lmc_paged_kv_used(&kv) == 0 && kv.n_free == 8);
    lmc_paged_kv_free(&kv);
    /* bad sizes are errors */
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 0, 4, true, &err) == LMC_ERR_ARG);
}

static void test_cow(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 6, 4, false, &err) == LMC_OK);
    kv.log_copies = true; /* tensor-parallel serving replays the copies on the other ranks */
    struct lmc_kv_seq a, b;
    lmc_kv_seq_init(&a);
    lmc_kv_seq_init(&b);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 6)); /* 6 tokens written: block 1 partial */
    fill_block(&kv, a.blocks[0], 1.5f);
    fill_block(&kv, a.blocks[1], 2.5f);
    CHECK(lmc_kv_seq_fork(&kv, &b, &a));
    CHECK(kv.ref[a.blocks[0]] == 2 && kv.ref[a.blocks[1]] == 2 && lmc_paged_kv_used(&kv) == 2);
    /* b writes position 6: its shared partial block is copied first */
    CHECK(lmc_kv_seq_blocks_needed(&kv, &b, 6, 7) == 1);
    int32_t shared = a.blocks[1];
    CHECK(lmc_kv_seq_reserve(&kv, &b, 6, 7));
    CHECK(b.blocks[0] == a.blocks[0] && b.blocks[1] != shared && a.blocks[1] == shared);
    CHECK(kv.cow_copies == 1 && kv.ref[shared] == 1 && kv.ref[b.blocks[0]] == 2);
    CHECK(kv.n_copy_log == 1 && kv.copy_log[0] == b.blocks[1] && kv.copy_log[1] == shared && !kv.copy_log_lost);
    CHECK(block_is(&kv, b.blocks[1], 2.5f));
    fill_block(&kv, b.blocks[1], 7.0f);
    CHECK(block_is(&kv, a.blocks[1], 2.5f)); /* a's copy untouched */
    /* a now owns its partial block alone: no copy */
    CHECK(lmc_kv_seq_reserve(&kv, &a, 6, 7) && a.blocks[1] == shared && kv.cow_copies == 1);
    /* writing past the shared full block 0 never copies it */
    CHECK(lmc_kv_seq_reserve(&kv, &a, 7, 9) && kv.ref[a.blocks[0]] == 2 && kv.cow_copies == 1);
    /* a fork at a block boundary shares an unwritten block: replaced, not copied */
    struct lmc_kv_seq c;
    lmc_kv_seq_init(&c);
    CHECK(lmc_kv_seq_fork(&kv, &c, &a)); /* a has 3 blocks, 9 positions reserved, say 8 written */
    CHECK(lmc_kv_seq_reserve(&kv, &c, 8, 9));
    CHECK(c.blocks[2] != a.blocks[2] && kv.cow_copies == 1);
    CHECK(kv.n_copy_log == 1); /* nothing copied: nothing logged */
    lmc_kv_seq_free(&kv, &a);
    lmc_kv_seq_free(&kv, &b);
    lmc_kv_seq_free(&kv, &c);
    CHECK(lmc_paged_kv_used(&kv) == 0 && kv.n_free == 6);
    lmc_paged_kv_free(&kv);
}

static void test_prefix(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 6, 4, true, &err) == LMC_OK);
    int32_t ids[12], other[12];
    for (int i = 0; i < 12; i++) ids[i] = other[i] = 100 + i;
    other[9] = 7; /* differs in block 2 */
    struct lmc_kv_seq a, b, c;
    lmc_kv_seq_init(&a);
    lmc_kv_seq_init(&b);
    lmc_kv_seq_init(&c);
    CHECK(lmc_kv_seq_match_prefix(&kv, &a, ids, 12, 11) == 0); /* empty cache: miss */
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 12));
    lmc_kv_seq_commit(&kv, &a, ids, 10); /* two full blocks */
    CHECK(a.n_hashed == 2 && kv.cached[a.blocks[0]] && kv.cached[a.blocks[1]] && !kv.cached[a.blocks[2]]);
    lmc_kv_seq_commit(&kv, &a, ids, 12);
    CHECK(a.n_hashed == 3);
    int32_t a0 = a.blocks[0], a1 = a.blocks[1], a2 = a.blocks[2];
    /* a hit while a still runs: shared blocks */
    CHECK(lmc_kv_seq_match_prefix(&kv, &b, other, 12, 11) == 8);
    CHECK(b.n_blocks == 2 && b.blocks[0] == a0 && b.blocks[1] == a1 && kv.ref[a0] == 2);
    CHECK(kv.hits_tokens == 8 && kv.queries_tokens == 24);
    lmc_kv_seq_free(&kv, &b);
    lmc_kv_seq_free(&kv, &a);
    /* released registered blocks stay cached (LRU), not free */
    CHECK(lmc_paged_kv_used(&kv) == 0 && kv.n_lru == 3 && kv.n_free == 3);
    /* max_tokens limits the match: at most 11 of 12 tokens */
    CHECK(lmc_kv_seq_match_prefix(&kv, &c, ids, 12, 11) == 8);
    lmc_kv_seq_release(&kv, &c);
    CHECK(lmc_kv_seq_match_prefix(&kv, &c, ids, 12, 12) == 12);
    lmc_kv_seq_release(&kv, &c);
    /* a different first token misses */
    int32_t miss[8] = {1, 101, 102, 103, 104, 105, 106, 107};
    CHECK(lmc_kv_seq_match_prefix(&kv, &c, miss, 8, 8) == 0);
    /* eviction: 3 free + 1 evicted; the last block of the released
     * sequence (a2) goes first, so the 8-token prefix survives */
    CHECK(lmc_kv_seq_reserve(&kv, &c, 0, 16));
    CHECK(kv.evictions == 1 && !kv.cached[a2] && kv.cached[a0] && kv.cached[a1]);
    lmc_kv_seq_free(&kv, &c); /* unregistered: back to the free list */
    CHECK(lmc_kv_seq_match_prefix(&kv, &b, ids, 12, 12) == 8);
    lmc_kv_seq_free(&kv, &b);
    /* exhausting the pool evicts everything; the prefix then misses */
    CHECK(lmc_kv_seq_reserve(&kv, &c, 0, 24) && kv.n_lru == 0 && kv.evictions == 3);
    CHECK(!lmc_kv_seq_reserve(&kv, &a, 0, 1));
    lmc_kv_seq_free(&kv, &c);
    CHECK(lmc_kv_seq_match_prefix(&kv, &a, ids, 12, 12) == 0);
    /* the same tokens computed twice: one block registered, the twin private */
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 4) && lmc_kv_seq_reserve(&kv, &b, 0, 4));
    lmc_kv_seq_commit(&kv, &a, ids, 4);
    lmc_kv_seq_commit(&kv, &b, ids, 4);
    CHECK(kv.cached[a.blocks[0]] && !kv.cached[b.blocks[0]] && b.n_hashed == 1);
    lmc_kv_seq_free(&kv, &a);
    lmc_kv_seq_free(&kv, &b);
    CHECK(kv.n_lru == 1 && kv.n_free == 5 && lmc_paged_kv_used(&kv) == 0);
    lmc_paged_kv_free(&kv);
}

/* Prefix caching off: nothing is registered or matched. */
static void test_prefix_off(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 4, 2, false, &err) == LMC_OK);
    int32_t ids[4] = {5, 6, 7, 8};
    struct lmc_kv_seq a;
    lmc_kv_seq_init(&a);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 4));
    lmc_kv_seq_commit(&kv, &a, ids, 4);
    lmc_kv_seq_free(&kv, &a);
    CHECK(kv.n_lru == 0 && kv.n_free == 4);
    CHECK(lmc_kv_seq_match_prefix(&kv, &a, ids, 4, 4) == 0);
    lmc_paged_kv_free(&kv);
}

/* The prefix cache's bound: released registered blocks beyond it are
 * evicted least recently used first (a sequence's last block before its
 * prefix); lowering it evicts at once; hits are counted in blocks; and
 * over many sequences with distinct tokens the set of block ids ever
 * handed out (the pool memory ever touched) stays within peak use plus the
 * bound: the free list gives back the hottest block first. */
static void test_cache_limit(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 64, 4, true, &err) == LMC_OK);
    lmc_paged_kv_set_cache_limit(&kv, 2);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = 300 + i;
    struct lmc_kv_seq a, b;
    lmc_kv_seq_init(&a);
    lmc_kv_seq_init(&b);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 12));
    lmc_kv_seq_commit(&kv, &a, ids, 12);
    int32_t a0 = a.blocks[0], a1 = a.blocks[1], a2 = a.blocks[2];
    CHECK(kv.cached[a0] && kv.cached[a1] && kv.cached[a2] && kv.n_lru == 0);
    lmc_kv_seq_free(&kv, &a);
    CHECK_MSG(kv.n_lru == 2 && kv.evictions == 1 && !kv.cached[a2] && kv.cached[a0] && kv.cached[a1],
              "n_lru %lld evictions %lld", (long long)kv.n_lru, (long long)kv.evictions);
    CHECK(kv.n_free == 62 && lmc_paged_kv_used(&kv) == 0);
    CHECK(lmc_kv_seq_match_prefix(&kv, &b, ids, 12, 12) == 8 && kv.hits_blocks == 2 && kv.n_lru == 0);
    lmc_kv_seq_free(&kv, &b);
    CHECK(kv.n_lru == 2);
    lmc_paged_kv_set_cache_limit(&kv, 0);
    CHECK(kv.n_lru == 0 && kv.n_free == 64 && kv.evictions == 3 && !kv.cached[a0] && !kv.cached[a1]);
    CHECK(lmc_kv_seq_match_prefix(&kv, &b, ids, 12, 12) == 0);
    /* 200 sequences of 5 blocks, 3 alive at once, all tokens distinct */
    lmc_paged_kv_set_cache_limit(&kv, 6);
    struct lmc_kv_seq live[3];
    for (int k = 0; k < 3; k++) lmc_kv_seq_init(&live[k]);
    int32_t top = -1, t[20];
    int64_t peak = 0;
    for (int n = 0; n < 200; n++) {
        struct lmc_kv_seq *q = &live[n % 3];
        lmc_kv_seq_release(&kv, q);
        for (int i = 0; i < 20; i++) t[i] = 1000 + n * 20 + i;
        CHECK(lmc_kv_seq_match_prefix(&kv, q, t, 20, 20) == 0);
        CHECK(lmc_kv_seq_reserve(&kv, q, 0, 20));
        lmc_kv_seq_commit(&kv, q, t, 20);
        for (int64_t i = 0; i < q->n_blocks; i++) top = LMC_MAX(top, q->blocks[i]);
        peak = LMC_MAX(peak, lmc_paged_kv_used(&kv));
        CHECK(kv.n_lru <= 6);
    }
    CHECK_MSG(peak == 15 && top < 15 + 6, "blocks touched up to %d with peak use %lld", top, (long long)peak);
    for (int k = 0; k < 3; k++) lmc_kv_seq_free(&kv, &live[k]);
    CHECK(lmc_paged_kv_used(&kv) == 0 && kv.n_lru == 6 && kv.n_free == 58);
    lmc_paged_kv_free(&kv);
}

/* Outputs evicted first: under a bound of 4 blocks, three finished
 * sequences of 2 prompt + 2 output blocks leave their prompts cached
 * (plain release would have kept the last sequence's 4 blocks, evicting
 * the earlier prompts), so each prompt hits again; outputs go in order,
 * the newest sequence's last block first. */
static void test_outputs_first(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 32, 4, true, &err) == LMC_OK);
    lmc_paged_kv_set_cache_limit(&kv, 7);
    int32_t t[3][16];
    struct lmc_kv_seq q[3], r;
    lmc_kv_seq_init(&r);
    int32_t out_last = -1, out_prev = -1;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 16; i++) t[k][i] = 500 + 40 * k + i;
        lmc_kv_seq_init(&q[k]);
        CHECK(lmc_kv_seq_reserve(&kv, &q[k], 0, 16));
        lmc_kv_seq_commit(&kv, &q[k], t[k], 16);
        CHECK(q[k].n_hashed == 4);
        if (k == 2) out_prev = q[k].blocks[2], out_last = q[k].blocks[3];
        lmc_kv_seq_release_outputs_first(&kv, &q[k], 2);
        CHECK(q[k].n_blocks == 0 && kv.n_lru <= 7);
    }
    /* 7 cached: the 6 prompt blocks and the newest output's first block */
    CHECK_MSG(kv.n_lru == 7 && kv.cached[out_prev] && !kv.cached[out_last] && kv.lru_head == out_prev,
              "n_lru %lld", (long long)kv.n_lru);
    lmc_paged_kv_set_cache_limit(&kv, 6);
    CHECK(!kv.cached[out_prev]);
    for (int k = 0; k < 3; k++) {
        CHECK(lmc_kv_seq_match_prefix(&kv, &r, t[k], 16, 16) == 8);
        lmc_kv_seq_release(&kv, &r);
    }
    /* keep_blocks past the table: a plain release */
    CHECK(lmc_kv_seq_reserve(&kv, &q[0], 0, 8));
    lmc_kv_seq_release_outputs_first(&kv, &q[0], 5);
    CHECK(q[0].n_blocks == 0 && lmc_paged_kv_used(&kv) == 0);
    lmc_kv_seq_free(&kv, &r);
    for (int k = 0; k < 3; k++) lmc_kv_seq_free(&kv, &q[k]);
    lmc_paged_kv_free(&kv);
}

/* A sequence that took a whole cached prompt (3 blocks of 4) and writes
 * from inside its last block (the last token, recomputed) gets a copy of
 * that block: the cached one keeps its contents and registration, the
 * copy holds the positions before, and another sequence still hits it. */
static void test_whole_hit(void) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, &m, &be, 8, 4, true, &err) == LMC_OK);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = 200 + i;
    struct lmc_kv_seq a, b, c;
    lmc_kv_seq_init(&a);
    lmc_kv_seq_init(&b);
    lmc_kv_seq_init(&c);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 12));
    for (int i = 0; i < 3; i++) fill_block(&kv, a.blocks[i], 1.0f + (float)i);
    lmc_kv_seq_commit(&kv, &a, ids, 12);
    int32_t a2 = a.blocks[2];
    lmc_kv_seq_free(&kv, &a); /* all three cached, no user */
    CHECK(kv.n_lru == 3 && kv.cached[a2]);
    CHECK(lmc_kv_seq_match_prefix(&kv, &b, ids, 12, 12) == 12 && b.blocks[2] == a2 && kv.ref[a2] == 1);
    CHECK(lmc_kv_seq_blocks_needed(&kv, &b, 11, 12) == 1);
    int64_t copies = kv.cow_copies;
    CHECK(lmc_kv_seq_reserve(&kv, &b, 11, 12)); /* the last token is written next */
    CHECK_MSG(b.blocks[2] != a2 && kv.cow_copies == copies + 1 && kv.ref[a2] == 0 && kv.cached[a2],
              "whole hit: block %d (cached %d), ref %d", b.blocks[2], a2, kv.ref[a2]);
    CHECK(block_is(&kv, b.blocks[2], 3.0f) && !kv.cached[b.blocks[2]]);
    fill_block(&kv, b.blocks[2], 9.0f); /* the recomputed tail goes into the copy only */
    CHECK(block_is(&kv, a2, 3.0f));
    /* full blocks before it stay shared, read-only: no copy for writing at 12 */
    CHECK(lmc_kv_seq_blocks_needed(&kv, &b, 12, 13) == 1);
    /* another sequence still finds the original */
    CHECK(lmc_kv_seq_match_prefix(&kv, &c, ids, 12, 12) == 12 && c.blocks[2] == a2);
    lmc_kv_seq_free(&kv, &c);
    lmc_kv_seq_free(&kv, &b); /* the copy was never registered: back to the free list */
    CHECK(lmc_paged_kv_used(&kv) == 0 && kv.n_lru == 3 && kv.n_free == 5);
    lmc_paged_kv_free(&kv);
}

int main(void) {
    if (!fixture_open_cpu(&m, &be, NULL, "tests/fixtures/llama-tiny", NULL, 1)) return test_finish("test_paged_kv");
    test_alloc_exhaust();
    test_cow();
    test_prefix();
    test_whole_hit();
    test_prefix_off();
    test_cache_limit();
    test_outputs_first();
    fixture_close_cpu(&m, &be, NULL);
    return test_finish("test_paged_kv");
}
