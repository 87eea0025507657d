/* forward_batch.c — the batched driver (see forward_batch.h): fills a
 * struct lmc_run (LMC_RUN_PAGED) and runs the architecture's one block per
 * layer over all T tokens of the step (the attention mixer stores the new
 * K/V through the block tables and attends with attention_paged, RoPE at
 * each token's own position); logits only for the requested tokens
 * (gathered with embed over the hidden states viewed as an F32 table).
 * Every buffer, host staging included, is sized at init. */
#include "model/forward_batch.h"
#include "dist/pp_infer.h" /* pipeline stages (lmc_weights.pipe) */
#include "core/argmax.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t lmc_kv_pool_row_bytes(const struct lmc_backend *be, int64_t row) {
    if (row <= 0) return 0;
    return be->kv_row_bytes ? be->kv_row_bytes(row) : (size_t)row * (size_t)lmc_dtype_size(be->kv_dtype);
}

size_t lmc_kv_pool_token_bytes(const struct lmc_model *m, const struct lmc_backend *be) {
    int64_t row = m->arch->mixer->kv_row(&m->cfg), fl = lmc_model_kv_floats_per_token(&m->cfg);
    if (row <= 0 || fl <= 0) return 0;
    return 2 * (size_t)(fl / row) * lmc_kv_pool_row_bytes(be, row); /* K and V of fl / row layers */
}

size_t lmc_kv_pool_block_bytes(const struct lmc_model *m, const struct lmc_backend *be,
                               int64_t block_size) {
    return (size_t)block_size * lmc_kv_pool_token_bytes(m, be) + lmc_model_seq_slot_bytes(m);
}

void *lmc_kv_pool_state_part(const struct lmc_kv_pool *p, int64_t l, int k) {
    LMC_ASSERT(p->state && l >= 0 && l < p->n_layers && k >= 0 && k < p->n_parts);
    char *q = (char *)p->state + (size_t)l * (size_t)p->n_blocks * p->layer_bytes;
    for (int i = 0; i < k; i++) q += (size_t)p->n_blocks * (size_t)p->part_bytes[i];
    return q;
}

void lmc_kv_pool_state_zero(struct lmc_kv_pool *p, int64_t b) {
    LMC_ASSERT(b >= 0 && b < p->n_blocks);
    const struct lmc_backend *be = p->be;
    for (int64_t l = 0; l < p->n_layers; l++)
        for (int k = 0; k < p->n_parts; k++)
            if (p->part_bytes[k])
                be->zero(be->ctx, (char *)lmc_kv_pool_state_part(p, l, k) + (size_t)b * (size_t)p->part_bytes[k],
                         (size_t)p->part_bytes[k]);
}

void lmc_kv_pool_state_copy(struct lmc_kv_pool *p, int64_t dst, int64_t src) {
    LMC_ASSERT(dst >= 0 && dst < p->n_blocks && src >= 0 && src < p->n_blocks);
    if (dst == src) return;
    const struct lmc_backend *be = p->be;
    for (int64_t l = 0; l < p->n_layers; l++)
        for (int k = 0; k < p->n_parts; k++) {
            size_t n = (size_t)p->part_bytes[k];
            char *base = lmc_kv_pool_state_part(p, l, k);
            char *d = base + (size_t)dst * n, *s = base + (size_t)src * n;
            if (!n) continue;
            if (be->host_memory) {
                memcpy(d, s, n);
            } else { /* no device-to-device op in the table: through the host */
                be->download(be->ctx, p->stage, s, n);
                be->sync(be->ctx);
                be->upload(be->ctx, d, p->stage, n);
                be->sync(be->ctx);
            }
        }
}

lmc_status lmc_kv_pool_init(struct lmc_kv_pool *p, const struct lmc_model *m,
                            const struct lmc_backend *be, int64_t n_blocks, int64_t block_size,
                            lmc_err *err) {
    memset(p, 0, sizeof *p);
    const struct lmc_config *c = &m->cfg;
    int64_t rows, floats;
    if (n_blocks <= 0 || n_blocks > INT32_MAX || block_size <= 0 || block_size > 4096 ||
        !lmc_mul_ok(n_blocks, block_size, &rows) ||
        !lmc_mul_ok(rows, lmc_model_kv_floats_per_token(c), &floats) || floats > INT64_MAX / 8)
        return lmc_err_set(err, LMC_ERR_ARG, "KV pool of %lld blocks of %lld tokens: out of range",
                           (long long)n_blocks, (long long)block_size);
    p->be = be;
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->n_layers = c->num_layers;
    p->row = m->arch->mixer->kv_row(c);
    /* a token's row: kv_dtype elements (f32 on the CPU, bf16 on CUDA) or
     * the backend's compressed row (kv_row_bytes) */
    p->row_bytes = lmc_kv_pool_row_bytes(be, p->row);
    size_t bytes = 0;
    if (floats) {
        if ((size_t)(floats / p->row) > SIZE_MAX / 2 / p->row_bytes) {
            lmc_kv_pool_free(p);
            return lmc_err_set(err, LMC_ERR_ARG, "KV pool of %lld blocks of %lld tokens: out of range",
                               (long long)n_blocks, (long long)block_size);
        }
        bytes = (size_t)(floats / p->row) * p->row_bytes;
        p->k = be->alloc(be->ctx, bytes);
        p->v = be->alloc(be->ctx, bytes);
        if (!be->host_memory) p->stage = malloc((size_t)block_size * p->row_bytes);
    }
    p->slot_bytes = lmc_model_seq_slot_bytes(m);
    if (p->slot_bytes) {
        if ((size_t)n_blocks > SIZE_MAX / 2 / p->slot_bytes) {
            lmc_kv_pool_free(p);
            return lmc_err_set(err, LMC_ERR_ARG, "state pool of %lld slots: out of range",
                               (long long)n_blocks);
        }
        const struct lmc_part_ops *mx = m->arch->mixer;
        LMC_ASSERT(!m->arch->ffn || !m->arch->ffn->slot_bytes(c));
        p->layer_bytes = (size_t)mx->slot_bytes(c);
        p->n_parts = 1;
        p->part_bytes[0] = mx->slot_bytes(c);
        if (mx->slot_parts) p->n_parts = mx->slot_parts(c, p->part_bytes);
        int64_t sum = 0, big = 0;
        for (int k = 0; k < p->n_parts; k++) sum += p->part_bytes[k], big = LMC_MAX(big, p->part_bytes[k]);
        LMC_ASSERT(p->n_parts >= 1 && p->n_parts <= LMC_SLOT_PARTS && (size_t)sum == p->layer_bytes);
        p->state = be->alloc(be->ctx, (size_t)n_blocks * p->slot_bytes);
        if (!be->host_memory && !p->stage) p->stage = malloc((size_t)big);
    }
    if ((floats && (!p->k || !p->v || (!be->host_memory && !p->stage))) ||
        (p->slot_bytes && (!p->state || (!be->host_memory && !p->stage)))) {
        lmc_kv_pool_free(p);
        return lmc_err_set(err, LMC_ERR_OOM, "KV pool of %lld blocks needs %zu bytes",
                           (long long)n_blocks, 2 * bytes);
    }
    return LMC_OK;
}

int64_t lmc_kv_pool_ring_rows(int64_t residual) {
    return (LMC_MAX(residual + 16, 48) + 7) / 8 * 8;
}

lmc_status lmc_kv_pool_ring_init(struct lmc_kv_pool *p, int64_t n_slots, int64_t residual,
                                 lmc_err *err) {
    const struct lmc_backend *be = p->be;
    if (!be || !be->attention_paged_ring || !p->row) return LMC_OK;
    if (n_slots <= 0 || n_slots > (1 << 20) || residual < 0 || residual > 4096 || p->ring)
        return lmc_err_set(err, LMC_ERR_ARG, "KV ring of %lld slots keeping %lld positions: out of range",
                           (long long)n_slots, (long long)residual);
    p->ring_rows = lmc_kv_pool_ring_rows(residual);
    p->ring_slot_bytes = lmc_kv_ring_slot_bytes(p->row, p->ring_rows);
    size_t per = p->ring_slot_bytes;
    if ((size_t)n_slots > SIZE_MAX / 2 / per / (size_t)p->n_layers)
        return lmc_err_set(err, LMC_ERR_ARG, "KV ring of %lld slots: out of range", (long long)n_slots);
    p->ring = be->alloc(be->ctx, (size_t)n_slots * per * (size_t)p->n_layers);
    if (!p->ring)
        return lmc_err_set(err, LMC_ERR_OOM, "KV ring of %lld slots needs %zu bytes", (long long)n_slots,
                           (size_t)n_slots * per * (size_t)p->n_layers);
    p->n_ring = n_slots;
    p->residual = residual;
    for (int64_t s = 0; s < n_slots; s++) lmc_kv_pool_ring_reset(p, s);
    return LMC_OK;
}

void lmc_kv_pool_ring_reset(struct lmc_kv_pool *p, int64_t slot) {
    if (!p->ring) return;
    LMC_ASSERT(slot >= 0 && slot < p->n_ring);
    const struct lmc_backend *be = p->be;
    size_t tags = 2 * lmc_kv_ring_part_bytes(p->row, p->ring_rows), n = (size_t)p->ring_rows * 4;
    for (int64_t l = 0; l < p->n_layers; l++) {
        char *t = (char *)p->ring + ((size_t)l * (size_t)p->n_ring + (size_t)slot) * p->ring_slot_bytes + tags;
        if (be->host_memory) {
            memset(t, 0xff, n); /* -1: no position */
        } else {
            int32_t *h = malloc(n);
            LMC_ASSERT(h);
            memset(h, 0xff, n);
            be->upload(be->ctx, t, h, n);
            be->sync(be->ctx);
            free(h);
        }
    }
}

size_t lmc_kv_pool_ring_bytes(const struct lmc_kv_pool *p) {
    return p->ring ? (size_t)p->n_ring * p->ring_slot_bytes * (size_t)p->n_layers : 0;
}

void lmc_kv_pool_free(struct lmc_kv_pool *p) {
    if (p->be) {
        if (p->ring) p->be->free(p->be->ctx, p->ring);
        if (p->k) p->be->free(p->be->ctx, p->k);
        if (p->v) p->be->free(p->be->ctx, p->v);
        if (p->state) p->be->free(p->be->ctx, p->state);
    }
    free(p->stage);
    memset(p, 0, sizeof *p);
}

void lmc_kv_pool_copy_block(struct lmc_kv_pool *p, int64_t dst, int64_t src) {
    LMC_ASSERT(dst >= 0 && dst < p->n_blocks && src >= 0 && src < p->n_blocks);
    if (dst == src) return;
    const struct lmc_backend *be = p->be;
    /* in bytes: the pool holds rows of row_bytes */
    size_t n = (size_t)p->block_size * p->row_bytes, bytes = n;
    void *tmp = p->stage;
    for (int64_t l = 0; l < p->n_layers; l++) {
        size_t base = (size_t)l * (size_t)p->n_blocks * n;
        char *kv[2] = {(char *)p->k, (char *)p->v};
        for (int i = 0; i < 2; i++) {
            char *d = kv[i] + base + (size_t)dst * n, *s = kv[i] + base + (size_t)src * n;
            if (be->host_memory) {
                memcpy(d, s, bytes);
            } else { /* no device-to-device op in the table: through the host */
                be->download(be->ctx, tmp, s, bytes);
                be->upload(be->ctx, d, tmp, bytes);
            }
        }
    }
}

lmc_status lmc_batch_acts_init(struct lmc_batch_acts *b, const struct lmc_model *m,
                               const struct lmc_backend *be, int64_t max_tokens, int64_t max_seqs,
                               int64_t max_blocks, int64_t max_logits, lmc_err *err) {
    memset(b, 0, sizeof *b);
    if (max_tokens <= 0 || max_seqs <= 0 || max_blocks <= 0 || max_logits <= 0 ||
        max_seqs > (1 << 20) || max_blocks > (1 << 24) || max_seqs * max_blocks > (1LL << 32))
        return lmc_err_set(err, LMC_ERR_ARG, "batch scratch sizes out of range");
    lmc_status st = lmc_acts_init(&b->a, m, be, max_tokens, max_logits, err);
    if (st) return st;
    const struct lmc_config *c = &m->cfg;
    size_t half = (size_t)(c->head_dim / 2 + 1), V = (size_t)c->vocab_size;
    b->max_seqs = max_seqs;
    b->max_blocks = max_blocks;
    b->seq = be->alloc(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    b->rows = be->alloc(be->ctx, (size_t)max_logits * sizeof(int32_t));
    b->bt = be->alloc(be->ctx, (size_t)(max_seqs * max_blocks) * sizeof(int32_t));
    b->inv_freq = be->alloc(be->ctx, (size_t)max_seqs * half * sizeof(double));
    b->len_host = malloc((size_t)max_seqs * sizeof *b->len_host);
    b->freq_host = malloc((size_t)max_seqs * half * sizeof *b->freq_host);
    b->scale_host = malloc((size_t)max_seqs * sizeof *b->scale_host);
    b->row_host = malloc(V * sizeof *b->row_host);
    b->prob_host = malloc(V * sizeof *b->prob_host);
    b->idx_host = malloc(V * sizeof *b->idx_host);
    b->tok_slot = be->alloc(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    b->tok_slot_host = malloc((size_t)max_tokens * sizeof(int32_t));
    if (!b->tok_slot || !b->tok_slot_host || !b->seq || !b->rows || !b->bt || !b->inv_freq ||
        !b->len_host || !b->freq_host || !b->scale_host || !b->row_host || !b->prob_host || !b->idx_host) {
        lmc_batch_acts_free(b);
        return lmc_err_set(err, LMC_ERR_OOM, "batch scratch for %lld tokens: out of memory",
                           (long long)max_tokens);
    }
    return LMC_OK;
}

void lmc_batch_acts_free(struct lmc_batch_acts *b) {
    const struct lmc_backend *be = b->a.be;
    if (be) {
        void *bufs[] = {b->seq, b->rows, b->bt, b->inv_freq, b->tok_slot};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
    }
    free(b->len_host);
    free(b->freq_host);
    free(b->scale_host);
    free(b->row_host);
    free(b->prob_host);
    free(b->idx_host);
    free(b->tok_slot_host);
    lmc_acts_free(&b->a);
    memset(b, 0, sizeof *b);
}

static lmc_status check_batch(const struct lmc_model *m, const struct lmc_batch_acts *a,
                              const struct lmc_kv_pool *kv, const struct lmc_batch *b,
                              lmc_err *err) {
    const struct lmc_config *c = &m->cfg;
    int64_t T = b->n_tokens;
    if (T <= 0) return lmc_err_set(err, LMC_ERR_ARG, "forward batch: no tokens");
    if (T > a->a.max_tokens || b->n_seqs <= 0 || b->n_seqs > a->max_seqs ||
        b->max_blocks <= 0 || b->max_blocks > a->max_blocks || b->n_logits < 0 ||
        b->n_logits > a->a.logit_rows)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "forward batch: %lld tokens, %lld sequences, %lld blocks each, %lld "
                           "logits exceed the scratch (%lld, %lld, %lld, %lld)",
                           (long long)T, (long long)b->n_seqs, (long long)b->max_blocks,
                           (long long)b->n_logits, (long long)a->a.max_tokens,
                           (long long)a->max_seqs, (long long)a->max_blocks,
                           (long long)a->a.logit_rows);
    for (int64_t i = 0; i < T; i++) {
        int64_t id = b->ids[i], s = b->seq[i], p = b->pos[i];
        int64_t bi = kv->row ? p / kv->block_size : 0; /* recurrent: block 0 is the state slot */
        if (id < 0 || id >= c->vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG, "token id %lld at index %lld is outside the vocabulary (0..%lld)",
                               (long long)id, (long long)i, (long long)c->vocab_size - 1);
        if (s < 0 || s >= b->n_seqs || p < 0 || bi >= b->max_blocks)
            return lmc_err_set(err, LMC_ERR_ARG, "token %lld: sequence %lld / position %lld out of range",
                               (long long)i, (long long)s, (long long)p);
        if (m->w.pos_emb.data && p >= m->w.pos_emb.rows)
            return lmc_err_set(err, LMC_ERR_ARG, "position %lld exceeds the model's %lld learned positions",
                               (long long)p, (long long)m->w.pos_emb.rows);
        int64_t blk = b->block_tables[s * b->max_blocks + bi];
        if (blk < 0 || blk >= kv->n_blocks)
            return lmc_err_set(err, LMC_ERR_ARG, "token %lld: block %lld outside the pool of %lld",
                               (long long)i, (long long)blk, (long long)kv->n_blocks);
    }
    if (kv->state || kv->ring) { /* recurrent (its state advances once) and KIVI-2 rings: each
                                  * sequence's tokens are one run of consecutive positions */
        int64_t *seen = a->len_host; /* host scratch of max_seqs */
        for (int64_t s = 0; s < b->n_seqs; s++) seen[s] = 0;
        for (int64_t i = 0; i < T; i++) {
            int64_t s = b->seq[i];
            if (i && s == b->seq[i - 1]) {
                if (b->pos[i] != b->pos[i - 1] + 1)
                    return lmc_err_set(err, LMC_ERR_ARG, "token %lld: positions of sequence %lld not consecutive",
                                       (long long)i, (long long)s);
                continue;
            }
            if (seen[s]++)
                return lmc_err_set(err, LMC_ERR_ARG, "token %lld: sequence %lld appears in two runs of a "
                                   "recurrent model's or KIVI-2 pool's step", (long long)i, (long long)s);
        }
    }
    if (kv->be->attention_paged_ring && kv->row && !kv->ring)
        return lmc_err_set(err, LMC_ERR_ARG, "forward batch: the KV pool needs its ring (lmc_kv_pool_ring_init)");
    if (kv->ring) {
        if (!kv->ring_slot) return lmc_err_set(err, LMC_ERR_ARG, "forward batch: the KV pool's ring slots are not set");
        for (int64_t s = 0; s < b->n_seqs; s++)
            if (kv->ring_slot[s] < 0 || kv->ring_slot[s] >= kv->n_ring)
                return lmc_err_set(err, LMC_ERR_ARG, "sequence %lld: ring slot %d outside 0..%lld",
                                   (long long)s, kv->ring_slot[s], (long long)kv->n_ring - 1);
    }
    for (int64_t i = 0; i < b->n_logits; i++)
        if (b->logit_tokens[i] < 0 || b->logit_tokens[i] >= T)
            return lmc_err_set(err, LMC_ERR_ARG, "logits row %lld: token %d not in the batch",
                               (long long)i, b->logit_tokens[i]);
    return LMC_OK;
}

/* Fills the model's row groups from the batch's per-sequence adapters
 * (model.h row_groups, linear.h): one group per adapter, its tokens
 * contiguous. */
static lmc_status group_rows(const struct lmc_model *m, const struct lmc_batch *b, lmc_err *err) {
    struct lmc_row_groups *g = m->row_groups;
    int n_ids = g ? g->n_ids : 0;
    for (int64_t s = 0; s < b->n_seqs; s++)
        if (b->adapter[s] < 0 || b->adapter[s] > n_ids)
            return lmc_err_set(err, LMC_ERR_ARG, "sequence %lld: adapter %d, the model has %d",
                               (long long)s, b->adapter[s], n_ids);
    if (!g) return LMC_OK;
    g->n = 0;
    g->total = b->n_tokens;
    for (int64_t i = 0; i < b->n_tokens; i++) {
        int32_t a = b->adapter[b->seq[i]];
        if (!a) continue;
        if (g->n && g->id[g->n - 1] == a && g->row0[g->n - 1] + g->rows[g->n - 1] == i) {
            g->rows[g->n - 1]++;
            continue;
        }
        for (int k = 0; k < g->n; k++)
            if (g->id[k] == a) {
                g->n = 0;
                return lmc_err_set(err, LMC_ERR_ARG, "forward batch: the tokens of adapter %d are not contiguous", a);
            }
        LMC_ASSERT(g->n < n_ids);
        g->id[g->n] = a;
        g->row0[g->n] = i;
        g->rows[g->n++] = 1;
    }
    return LMC_OK;
}

/* Uploads per-sequence rotary frequencies (each for its sequence's length
 * after this step, as forward.c does per chunk) and fills scale_host with
 * their cos/sin scales; returns true when every sequence's row is the same
 * (one rope call for the whole batch). */
static bool upload_freqs(const struct lmc_model *m, const struct lmc_backend *be,
                         struct lmc_batch_acts *a, const struct lmc_batch *b) {
    int64_t half = m->rot_dim / 2, ns = b->n_seqs;
    int64_t *len = a->len_host;
    double *f = a->freq_host;
    float *sc = a->scale_host;
    for (int64_t s = 0; s < ns; s++) len[s] = 0;
    for (int64_t i = 0; i < b->n_tokens; i++)
        len[b->seq[i]] = LMC_MAX(len[b->seq[i]], (int64_t)b->pos[i] + 1);
    bool uniform = true;
    for (int64_t s = 0; s < ns; s++) {
        lmc_rope_freqs(&m->cfg, m->rot_dim, LMC_MAX(len[s], 1), f + s * half, &sc[s]);
        if (s && (sc[s] != sc[0] || memcmp(f + s * half, f, (size_t)half * sizeof *f)))
            uniform = false;
    }
    be->upload(be->ctx, a->inv_freq, f, (size_t)(ns * half) * sizeof *f);
    return uniform;
}

/* What a step returns: logits rows, or each row's argmax or sampled id
 * (params: the rows' sampling parameters). done: ids are filled (a
 * pipeline's last stage chose them for rank 0). */
struct want {
    int32_t mode; /* LMC_PP_WANT_* (dist/pp_infer.h) */
    const struct lmc_sample_row *params;
    int32_t *ids;
    bool done;
};

/* ids[r] = the argmax of logits row r (backend memory), the first on ties. */
static void rows_argmax(const struct lmc_backend *be, struct lmc_batch_acts *ba, int64_t n, int64_t V,
                        int32_t *ids) {
    if (be->argmax_rows) {
        be->argmax_rows(be->ctx, ids, ba->a.logits, n, V);
        return;
    }
    /* no device argmax: download and take the sampler's (first) maximum */
    float *row = ba->row_host;
    for (int64_t r = 0; r < n; r++) {
        be->download(be->ctx, row, ba->a.logits + r * V, (size_t)V * sizeof *row);
        ids[r] = (int32_t)lmc_argmax_f32(row, V);
    }
}

/* ids[r] = logits row r sampled with params[r]. */
static void rows_sample(const struct lmc_backend *be, struct lmc_batch_acts *ba, int64_t n, int64_t V,
                        const struct lmc_sample_row *params, int32_t *ids) {
    if (be->sample_rows) {
        be->sample_rows(be->ctx, ids, ba->a.logits, n, V, params);
        return;
    }
    /* no device sampler: download each row and run the sampler's core */
    for (int64_t r = 0; r < n; r++) {
        be->download(be->ctx, ba->row_host, ba->a.logits + r * V, (size_t)V * sizeof(float));
        ids[r] = lmc_sample_logits_row(ba->row_host, V, &params[r], ba->idx_host, ba->prob_host);
    }
}

/* A pipeline stage's part of the step (lmc_weights.pipe, dist/pp_infer.h):
 * the step's micro-batches (token ranges cut at sequence boundaries; the
 * sequence indices, block tables and rotary rows stay the whole step's)
 * flow through the stage's layers one after another, received from the
 * stage before (or embedded on the first) and sent to the next; the last
 * stage computes the logits rows and returns what rank 0 asked for at the
 * step's start (w->mode: the rows, or their argmax or sampled ids, so only
 * the ids travel). *here: whether ba->a.logits holds the step's logits on
 * this rank. */
static void forward_batch_stage(const struct lmc_model *m, const struct lmc_backend *be,
                                struct lmc_batch_acts *ba, const struct lmc_batch *b, struct lmc_run r,
                                struct want *w, bool *here) {
    struct lmc_pp_infer *pp = m->w.pipe;
    const struct lmc_config *c = &m->cfg;
    struct lmc_acts *a = &ba->a;
    int64_t C = c->hidden_size, V = c->vocab_size;
    if (b->n_logits) lmc_pp_infer_want(pp, &w->mode, &w->params, b->n_logits);
    int k = lmc_pp_infer_cuts(pp, b->seq, b->n_tokens);
    for (int j = 0; j < k; j++) {
        int64_t t0 = pp->cut[j], nt = pp->cut[j + 1] - t0;
        float *x = a->x + t0 * C;
        if (lmc_pp_infer_first(pp)) lmc_weights_embed(be, &m->w, x, a->ids + t0, a->pos + t0, nt, a->h);
        else lmc_pp_infer_recv_x(pp, x, nt, C);
        struct lmc_run q = r;
        q.n = nt, q.pos = a->pos + t0, q.seq = ba->seq + t0, q.seq_host = b->seq + t0;
        struct lmc_block_save s;
        lmc_block_save_carve(m->arch, c, nt, LMC_RUN_PAGED, a->save, &s);
        s.h1 = s.h2 = a->h;
        for (int64_t l = 0; l < c->num_layers; l++) lmc_block_fwd(&q, l, &m->w.layers[l], &s, x, x);
        lmc_pp_infer_send_x(pp, x, nt, C);
    }
    *here = b->n_logits > 0 && lmc_pp_infer_has_logits(pp);
    if (!*here) return;
    int64_t n = b->n_logits;
    if (lmc_pp_infer_last(pp)) {
        struct lmc_mat xt = {LMC_DTYPE_F32, b->n_tokens, C, a->x};
        be->embed(be->ctx, a->tmp, &xt, ba->rows, n);
        lmc_model_logits(m, be, a, a->tmp, n);
    }
    if (w->mode == LMC_PP_WANT_LOGITS) {
        lmc_pp_infer_to_rank0(pp, a->logits, n * V);
        return;
    }
    int32_t *ids = lmc_pp_infer_ids(pp, n);
    if (lmc_pp_infer_last(pp) && ids) { /* this stage picks the ids */
        if (w->mode == LMC_PP_WANT_ARGMAX) rows_argmax(be, ba, n, V, ids);
        else rows_sample(be, ba, n, V, w->params, ids);
    }
    lmc_pp_infer_ids_to_rank0(pp, ids, n);
    if (ids && w->ids) memcpy(w->ids, ids, sizeof(int32_t) * (size_t)n);
    w->done = true;
}

/* The step up to the logits, left in backend memory (ba->a.logits); *here
 * false on a pipeline stage that gets no logits (not the first or last);
 * w: what the caller makes of them (a pipeline's last stage may do it). */
static lmc_status forward_batch_run(const struct lmc_model *m, const struct lmc_backend *be,
                                    struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                    const struct lmc_batch *b, struct want *w, bool *here, lmc_err *err) {
    *here = true;
    lmc_status st = check_batch(m, ba, kv, b, err);
    if (!st && b->adapter) st = group_rows(m, b, err);
    if (st) return st;
    const struct lmc_config *c = &m->cfg;
    struct lmc_acts *a = &ba->a;
    int64_t n = b->n_tokens, C = c->hidden_size;
    be->upload(be->ctx, a->ids, b->ids, (size_t)n * sizeof(int32_t));
    be->upload(be->ctx, a->pos, b->pos, (size_t)n * sizeof(int32_t));
    be->upload(be->ctx, ba->seq, b->seq, (size_t)n * sizeof(int32_t));
    be->upload(be->ctx, ba->bt, b->block_tables, (size_t)(b->n_seqs * b->max_blocks) * sizeof(int32_t));
    if (b->n_logits)
        be->upload(be->ctx, ba->rows, b->logit_tokens, (size_t)b->n_logits * sizeof(int32_t));
    if (!m->w.pipe) lmc_weights_embed(be, &m->w, a->x, a->ids, a->pos, n, a->h);
    bool uniform = m->rot_dim ? upload_freqs(m, be, ba, b) : true;
    struct lmc_run r = {.mode = LMC_RUN_PAGED, .be = be, .cfg = c, .arch = m->arch, .n = n,
                        .rot_dim = m->rot_dim, .pos = a->pos, .inv_freq = ba->inv_freq,
                        .attn_scale = m->rot_dim ? ba->scale_host[0] : 1.0f, .tmp = a->tmp,
                        .pool = kv, .seq = ba->seq, .bt = ba->bt, .seq_host = b->seq,
                        .max_blocks = b->max_blocks, .uniform = uniform,
                        .seq_freqs = ba->inv_freq, .seq_scales = ba->scale_host};
    if (kv->state) {
        for (int64_t i = 0; i < n; i++)
            ba->tok_slot_host[i] = b->block_tables[(int64_t)b->seq[i] * b->max_blocks];
        be->upload(be->ctx, ba->tok_slot, ba->tok_slot_host, (size_t)n * sizeof(int32_t));
        r.state = kv->state;
        r.tok_slot = ba->tok_slot;
    } else if (kv->ring) { /* each token's ring slot, in tok_slot */
        for (int64_t i = 0; i < n; i++) ba->tok_slot_host[i] = kv->ring_slot[b->seq[i]];
        be->upload(be->ctx, ba->tok_slot, ba->tok_slot_host, (size_t)n * sizeof(int32_t));
        r.tok_slot = ba->tok_slot;
    }
    if (m->w.pipe) {
        forward_batch_stage(m, be, ba, b, r, w, here);
        return LMC_OK;
    }
    struct lmc_block_save s;
    lmc_block_save_carve(m->arch, c, n, LMC_RUN_PAGED, a->save, &s);
    s.h1 = s.h2 = a->h;
    for (int64_t l = 0; l < c->num_layers; l++) lmc_block_fwd(&r, l, &m->w.layers[l], &s, a->x, a->x);
    if (m->row_groups) m->row_groups->n = 0; /* per-row adapters for this step's layers only */
    if (b->n_logits == 0) return LMC_OK;
    /* gather the wanted rows of x: embed over x viewed as an (n, C) F32 table */
    struct lmc_mat xt = {LMC_DTYPE_F32, n, C, a->x};
    be->embed(be->ctx, a->tmp, &xt, ba->rows, b->n_logits);
    lmc_model_logits(m, be, a, a->tmp, b->n_logits);
    return LMC_OK;
}

lmc_status lmc_model_forward_batch(const struct lmc_model *m, const struct lmc_backend *be,
                                   struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                   const struct lmc_batch *b, float *logits, lmc_err *err) {
    bool here;
    struct want w = {LMC_PP_WANT_LOGITS, NULL, NULL, false};
    lmc_status st = forward_batch_run(m, be, ba, kv, b, &w, &here, err);
    if (st || b->n_logits == 0 || !here || w.done) return st;
    be->download(be->ctx, logits, ba->a.logits,
                 (size_t)(b->n_logits * m->cfg.vocab_size) * sizeof(float));
    return LMC_OK;
}

lmc_status lmc_model_forward_batch_argmax(const struct lmc_model *m, const struct lmc_backend *be,
                                          struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                          const struct lmc_batch *b, int32_t *ids, lmc_err *err) {
    bool here;
    struct want w = {LMC_PP_WANT_ARGMAX, NULL, ids, false};
    lmc_status st = forward_batch_run(m, be, ba, kv, b, &w, &here, err);
    if (st || b->n_logits == 0 || !here || w.done) return st;
    rows_argmax(be, ba, b->n_logits, m->cfg.vocab_size, ids);
    return LMC_OK;
}

lmc_status lmc_model_forward_batch_sample(const struct lmc_model *m, const struct lmc_backend *be,
                                          struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                          const struct lmc_batch *b,
                                          const struct lmc_sample_row *params, int32_t *ids,
                                          lmc_err *err) {
    bool here;
    struct want w = {LMC_PP_WANT_SAMPLE, params, ids, false};
    lmc_status st = forward_batch_run(m, be, ba, kv, b, &w, &here, err);
    if (st || b->n_logits == 0 || !here || w.done) return st;
    rows_sample(be, ba, b->n_logits, m->cfg.vocab_size, params, ids);
    return LMC_OK;
}
