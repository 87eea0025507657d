/* bpe.c — the BPE model: vocabulary hash (string -> id), merge-rank hash
 * ((left, right) -> rank, merged id) and the per-word merge loop (a linked
 * list of symbols and a binary min-heap of candidate merges ordered by
 * (rank, position), as Hugging Face tokenizers orders them), with byte
 * fallback and unknown-token fusing. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

uint64_t lmc_tok_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static size_t pow2_for(size_t n_keys) {
    size_t cap = 16;
    while (cap < n_keys * 2 + 1) cap <<= 1;
    return cap;
}

lmc_status lmc_tok_strmap_init(struct tok_strmap *m, size_t n_keys) {
    size_t cap = pow2_for(n_keys);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return LMC_ERR_OOM;
    memset(m->slots, 0xff, cap * sizeof *m->slots);
    m->mask = cap - 1;
    return LMC_OK;
}

void lmc_tok_strmap_free(struct tok_strmap *m) {
    free(m->slots);
    m->slots = NULL;
}

bool lmc_tok_strmap_put(struct tok_strmap *m, char *const *tok, const uint32_t *tok_len, int32_t id) {
    size_t i = lmc_tok_hash(tok[id], tok_len[id]) & m->mask;
    while (m->slots[i] >= 0) {
        int32_t o = m->slots[i];
        if (tok_len[o] == tok_len[id] && memcmp(tok[o], tok[id], tok_len[id]) == 0) return false;
        i = (i + 1) & m->mask;
    }
    m->slots[i] = id;
    return true;
}

int32_t lmc_tok_strmap_get(const struct tok_strmap *m, char *const *tok, const uint32_t *tok_len,
                           const char *s, size_t n) {
    if (!m->slots) return -1;
    size_t i = lmc_tok_hash(s, n) & m->mask;
    while (m->slots[i] >= 0) {
        int32_t o = m->slots[i];
        if (tok_len[o] == n && memcmp(tok[o], s, n) == 0) return o;
        i = (i + 1) & m->mask;
    }
    return -1;
}

static inline size_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

lmc_status lmc_tok_mergemap_init(struct tok_mergemap *m, size_t n_keys) {
    size_t cap = pow2_for(n_keys);
    m->keys = malloc(cap * sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    if (!m->keys || !m->rank || !m->merged) {
        lmc_tok_mergemap_free(m);
        return LMC_ERR_OOM;
    }
    memset(m->keys, 0xff, cap * sizeof *m->keys);
    m->mask = cap - 1;
    return LMC_OK;
}

void lmc_tok_mergemap_free(struct tok_mergemap *m) {
    free(m->keys);
    free(m->rank);
    free(m->merged);
    m->keys = NULL;
    m->rank = m->merged = NULL;
}

bool lmc_tok_mergemap_put(struct tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = pair_hash(k) & m->mask;
    while (m->keys[i] != UINT64_MAX) {
        if (m->keys[i] == k) return false;
        i = (i + 1) & m->mask;
    }
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
    return true;
}

int32_t lmc_tok_mergemap_get(const struct tok_mergemap *m, int32_t a, int32_t b, int32_t *merged) {
    if (!m->keys) return -1;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = pair_hash(k) & m->mask;
    while (m->keys[i] != UINT64_MAX) {
        if (m->keys[i] == k) {
            *merged = m->merged[i];
            return m->rank[i];
        }
        i = (i + 1) & m->mask;
    }
    return -1;
}

bool lmc_tok_ids_push(struct tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        int64_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, (size_t)cap * sizeof *v);
        if (!v) return false;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return true;
}

/* One symbol of the word being merged; dead symbols have alive = 0. */
struct sym {
    int32_t id;
    int32_t prev, next;
    int32_t alive;
};
/* A candidate merge of symbol pos with its successor into merged. */
struct cand {
    int32_t rank, pos, merged;
};

static inline bool cand_less(const struct cand *a, const struct cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct cand *h, size_t *n, struct cand c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static struct cand heap_pop(struct cand *h, size_t *n) {
    struct cand top = h[0];
    struct cand last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        const struct cand *best = &last;
        if (l < m && cand_less(&h[l], best)) { s = l; best = &h[l]; }
        if (r < m && cand_less(&h[r], best)) { s = r; }
        if (s == i) break;
        h[i] = h[s];
        i = s;
    }
    if (m > 0) h[i] = last;
    return top;
}

void lmc_tok_bpe_scratch_free(struct tok_bpe_scratch *s) {
    free(s->sym);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static bool scratch_reserve(struct tok_bpe_scratch *s, size_t n_chars) {
    if (s->sym_cap < n_chars) {
        void *p = realloc(s->sym, n_chars * sizeof(struct sym));
        if (!p) return false;
        s->sym = p;
        s->sym_cap = n_chars;
    }
    size_t hcap = 3 * n_chars + 1;
    if (s->heap_cap < hcap) {
        void *p = realloc(s->heap, hcap * sizeof(struct cand));
        if (!p) return false;
        s->heap = p;
        s->heap_cap = hcap;
    }
    return true;
}

static void try_push(const struct lmc_tokenizer *t, struct sym *sy, int32_t pos, struct cand *h, size_t *nh) {
    int32_t nx = sy[pos].next;
    if (nx < 0) return;
    int32_t merged;
    int32_t rank = lmc_tok_mergemap_get(&t->merges, sy[pos].id, sy[nx].id, &merged);
    if (rank >= 0) heap_push(h, nh, (struct cand){rank, pos, merged});
}

bool lmc_tok_bpe_word(const struct lmc_tokenizer *t, const char *w, size_t n, struct tok_bpe_scratch *s,
                      struct tok_ids *out) {
    if (n == 0) return true;
    if (t->ignore_merges) {
        int32_t id = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, w, n);
        if (id >= 0) return lmc_tok_ids_push(out, id);
    }
    /* Worst case: every byte becomes a byte-fallback symbol. */
    if (!scratch_reserve(s, n)) return false;
    struct sym *sy = s->sym;
    int32_t ns = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int cl = lmc_tok_utf8_next(w + i, n - i, &cp);
        int32_t id = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, w + i, (size_t)cl);
        if (id >= 0) {
            sy[ns++] = (struct sym){id, -1, -1, 1};
            prev_unk = false;
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (int b = 0; b < cl; b++) all = all && t->byte_id[(unsigned char)w[i + b]] >= 0;
                if (all) {
                    for (int b = 0; b < cl; b++)
                        sy[ns++] = (struct sym){t->byte_id[(unsigned char)w[i + b]], -1, -1, 1};
                    prev_unk = false;
                    done = true;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (!(t->fuse_unk && prev_unk)) sy[ns++] = (struct sym){t->unk_id, -1, -1, 1};
                prev_unk = true;
            }
            /* No unk token: the character is dropped, as HF does. */
        }
        i += (size_t)cl;
    }
    for (int32_t i = 0; i < ns; i++) {
        sy[i].prev = i - 1;
        sy[i].next = i + 1 < ns ? i + 1 : -1;
    }

    struct cand *h = s->heap;
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) try_push(t, sy, i, h, &nh);
    while (nh > 0) {
        struct cand c = heap_pop(h, &nh);
        if (!sy[c.pos].alive) continue;
        int32_t nx = sy[c.pos].next;
        if (nx < 0) continue;
        int32_t merged;
        if (lmc_tok_mergemap_get(&t->merges, sy[c.pos].id, sy[nx].id, &merged) < 0 || merged != c.merged)
            continue;
        sy[c.pos].id = merged;
        sy[c.pos].next = sy[nx].next;
        sy[nx].alive = 0;
        if (sy[nx].next >= 0) sy[sy[nx].next].prev = c.pos;
        LMC_ASSERT(nh + 2 <= s->heap_cap);
        if (sy[c.pos].prev >= 0) try_push(t, sy, sy[c.pos].prev, h, &nh);
        try_push(t, sy, c.pos, h, &nh);
    }
    for (int32_t i = ns > 0 ? 0 : -1; i >= 0; i = sy[i].next)
        if (!lmc_tok_ids_push(out, sy[i].id)) return false;
    return true;
}
