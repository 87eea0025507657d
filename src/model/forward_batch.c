/* forward_batch.c — the transformer forward over a batch of tokens from
 * many sequences with a paged KV pool (see forward_batch.h). Composed only
 * of backend-table ops, like forward.c, with the same optional fused
 * entries and fallbacks (matmul_multi for q/k/v and gate/up, matmul_swiglu,
 * matmul_add for the o/down residuals): per layer the matmuls run over all
 * T tokens, RoPE at each token's own position, attention_paged (which
 * stores the new K/V in their slots and attends through the block tables),
 * then the MLP; logits only for the requested tokens (gathered with embed
 * over the hidden states viewed as an F32 table). */
#include "model/forward_batch.h"
#include "core/core.h"
#include "model/layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t lmc_kv_pool_block_bytes(const struct lmc_model *m, const struct lmc_backend *be,
                               int64_t block_size) {
    const struct lmc_config *c = &m->cfg;
    return 2 * (size_t)c->num_layers * (size_t)block_size *
           (size_t)(c->num_kv_heads * c->head_dim) * (size_t)lmc_dtype_size(be->kv_dtype);
}

lmc_status lmc_kv_pool_init(struct lmc_kv_pool *p, const struct lmc_model *m,
                            const struct lmc_backend *be, int64_t n_blocks, int64_t block_size,
                            lmc_err *err) {
    memset(p, 0, sizeof *p);
    const struct lmc_config *c = &m->cfg;
    int64_t rows, floats;
    if (n_blocks <= 0 || n_blocks > INT32_MAX || block_size <= 0 || block_size > 4096 ||
        !lmc_mul_ok(n_blocks, block_size, &rows) || !lmc_mul_ok(rows, c->num_layers, &rows) ||
        !lmc_mul_ok(rows, c->num_kv_heads * c->head_dim, &floats) || floats > INT64_MAX / 8)
        return lmc_err_set(err, LMC_ERR_ARG, "KV pool of %lld blocks of %lld tokens: out of range",
                           (long long)n_blocks, (long long)block_size);
    p->be = be;
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->n_layers = c->num_layers;
    p->row = c->num_kv_heads * c->head_dim;
    /* elements of the backend's kv_dtype (f32 on the CPU, bf16 on CUDA) */
    size_t es = (size_t)lmc_dtype_size(be->kv_dtype);
    p->k = be->alloc(be->ctx, (size_t)floats * es);
    p->v = be->alloc(be->ctx, (size_t)floats * es);
    if (!p->k || !p->v) {
        lmc_kv_pool_free(p);
        return lmc_err_set(err, LMC_ERR_OOM, "KV pool of %lld blocks needs %zu bytes",
                           (long long)n_blocks, 2 * (size_t)floats * es);
    }
    return LMC_OK;
}

void lmc_kv_pool_free(struct lmc_kv_pool *p) {
    if (p->be) {
        if (p->k) p->be->free(p->be->ctx, p->k);
        if (p->v) p->be->free(p->be->ctx, p->v);
    }
    memset(p, 0, sizeof *p);
}

void lmc_kv_pool_copy_block(struct lmc_kv_pool *p, int64_t dst, int64_t src) {
    LMC_ASSERT(dst >= 0 && dst < p->n_blocks && src >= 0 && src < p->n_blocks);
    if (dst == src) return;
    const struct lmc_backend *be = p->be;
    /* in bytes: the pool holds kv_dtype elements */
    size_t es = (size_t)lmc_dtype_size(be->kv_dtype);
    size_t n = (size_t)(p->block_size * p->row) * es, bytes = n;
    void *tmp = be->host_memory ? NULL : malloc(bytes);
    LMC_ASSERT(be->host_memory || tmp);
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
    free(tmp);
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
    size_t kvd = (size_t)(c->num_kv_heads * c->head_dim);
    b->max_seqs = max_seqs;
    b->max_blocks = max_blocks;
    b->kn = be->alloc(be->ctx, (size_t)max_tokens * kvd * sizeof(float));
    b->vn = be->alloc(be->ctx, (size_t)max_tokens * kvd * sizeof(float));
    b->seq = be->alloc(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    b->rows = be->alloc(be->ctx, (size_t)max_logits * sizeof(int32_t));
    b->bt = be->alloc(be->ctx, (size_t)(max_seqs * max_blocks) * sizeof(int32_t));
    b->inv_freq = be->alloc(be->ctx, (size_t)max_seqs * (size_t)(c->head_dim / 2 + 1) * sizeof(double));
    if (!b->kn || !b->vn || !b->seq || !b->rows || !b->bt || !b->inv_freq) {
        lmc_batch_acts_free(b);
        return lmc_err_set(err, LMC_ERR_OOM, "batch scratch for %lld tokens: out of memory",
                           (long long)max_tokens);
    }
    return LMC_OK;
}

void lmc_batch_acts_free(struct lmc_batch_acts *b) {
    const struct lmc_backend *be = b->a.be;
    if (be) {
        void *bufs[] = {b->kn, b->vn, b->seq, b->rows, b->bt, b->inv_freq};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
    }
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
        if (id < 0 || id >= c->vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG, "token id %lld at index %lld is outside the vocabulary (0..%lld)",
                               (long long)id, (long long)i, (long long)c->vocab_size - 1);
        if (s < 0 || s >= b->n_seqs || p < 0 || p / kv->block_size >= b->max_blocks)
            return lmc_err_set(err, LMC_ERR_ARG, "token %lld: sequence %lld / position %lld out of range",
                               (long long)i, (long long)s, (long long)p);
        if (m->pos_emb.data && p >= m->pos_emb.rows)
            return lmc_err_set(err, LMC_ERR_ARG, "position %lld exceeds the model's %lld learned positions",
                               (long long)p, (long long)m->pos_emb.rows);
        int64_t blk = b->block_tables[s * b->max_blocks + p / kv->block_size];
        if (blk < 0 || blk >= kv->n_blocks)
            return lmc_err_set(err, LMC_ERR_ARG, "token %lld: block %lld outside the pool of %lld",
                               (long long)i, (long long)blk, (long long)kv->n_blocks);
    }
    for (int64_t i = 0; i < b->n_logits; i++)
        if (b->logit_tokens[i] < 0 || b->logit_tokens[i] >= T)
            return lmc_err_set(err, LMC_ERR_ARG, "logits row %lld: token %d not in the batch",
                               (long long)i, b->logit_tokens[i]);
    return LMC_OK;
}

/* Uploads per-sequence rotary frequencies (each for its sequence's length
 * after this step, as forward.c does per chunk) and fills sc (n_seqs) with
 * their cos/sin scales; returns true when every sequence's row is the same
 * (one rope call for the whole batch). */
static bool upload_freqs(const struct lmc_model *m, const struct lmc_backend *be,
                         struct lmc_batch_acts *a, const struct lmc_batch *b, float *sc) {
    int64_t half = m->rot_dim / 2, ns = b->n_seqs;
    int64_t *len = calloc((size_t)ns, sizeof *len);
    double *f = malloc((size_t)(ns * half) * sizeof *f);
    LMC_ASSERT(len && f);
    for (int64_t i = 0; i < b->n_tokens; i++)
        len[b->seq[i]] = LMC_MAX(len[b->seq[i]], (int64_t)b->pos[i] + 1);
    bool uniform = true;
    for (int64_t s = 0; s < ns; s++) {
        lmc_rope_freqs(&m->cfg, m->rot_dim, LMC_MAX(len[s], 1), f + s * half, &sc[s]);
        if (s && (sc[s] != sc[0] || memcmp(f + s * half, f, (size_t)half * sizeof *f)))
            uniform = false;
    }
    be->upload(be->ctx, a->inv_freq, f, (size_t)(ns * half) * sizeof *f);
    free(len);
    free(f);
    return uniform;
}

/* The step up to the logits, left in backend memory (ba->a.logits). */
static lmc_status forward_batch_run(const struct lmc_model *m, const struct lmc_backend *be,
                                    struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                    const struct lmc_batch *b, lmc_err *err) {
    lmc_status st = check_batch(m, ba, kv, b, err);
    if (st) return st;
    const struct lmc_config *c = &m->cfg;
    struct lmc_acts *a = &ba->a;
    int64_t n = b->n_tokens, C = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads;
    int64_t hd = c->head_dim, kvd = KV * hd, bs = kv->block_size;
    int64_t half = m->rot_dim / 2;
    be->upload(be->ctx, a->ids, b->ids, (size_t)n * sizeof(int32_t));
    be->upload(be->ctx, a->pos, b->pos, (size_t)n * sizeof(int32_t));
    be->upload(be->ctx, ba->seq, b->seq, (size_t)n * sizeof(int32_t));
    be->upload(be->ctx, ba->bt, b->block_tables, (size_t)(b->n_seqs * b->max_blocks) * sizeof(int32_t));
    if (b->n_logits)
        be->upload(be->ctx, ba->rows, b->logit_tokens, (size_t)b->n_logits * sizeof(int32_t));
    be->embed(be->ctx, a->x, &m->tok_emb, a->ids, n);
    if (m->pos_emb.data) {
        be->embed(be->ctx, a->h, &m->pos_emb, a->pos, n);
        be->add(be->ctx, a->x, a->x, a->h, n * C);
    }
    float *sc = malloc((size_t)b->n_seqs * sizeof *sc);
    if (!sc) return lmc_err_set(err, LMC_ERR_OOM, "forward batch: out of memory");
    bool uniform = m->rot_dim ? upload_freqs(m, be, ba, b, sc) : true;
    float scale = 1.0f / sqrtf((float)hd);
    /* a layer's slice of the pool, in bytes of the backend's kv_dtype */
    size_t layer_bytes = (size_t)kv->n_blocks * (size_t)bs * (size_t)kvd *
                         (size_t)lmc_dtype_size(be->kv_dtype);
    for (int64_t l = 0; l < c->num_layers; l++) {
        const struct lmc_layer *L = &m->layers[l];
        lmc_layer_norm(be, c, a->h, a->x, L->norm1_w, L->norm1_b, n);
        {
            float *y[3] = {a->q, ba->kn, ba->vn};
            const struct lmc_mat *w[3] = {&L->wq, &L->wk, &L->wv};
            const float *bias[3] = {L->bq, L->bk, L->bv};
            lmc_layer_matmuls(be, 3, y, a->h, n, w, bias);
        }
        if (m->rot_dim && uniform) {
            be->rope(be->ctx, a->q, n, H, hd, m->rot_dim, a->pos, ba->inv_freq, sc[0]);
            be->rope(be->ctx, ba->kn, n, KV, hd, m->rot_dim, a->pos, ba->inv_freq, sc[0]);
        } else if (m->rot_dim) { /* length-dependent RoPE: per run of one sequence's tokens */
            for (int64_t i = 0, j; i < n; i = j) {
                int64_t s = b->seq[i];
                for (j = i; j < n && b->seq[j] == s;) j++;
                const double *fr = ba->inv_freq + s * half;
                be->rope(be->ctx, a->q + i * H * hd, j - i, H, hd, m->rot_dim, a->pos + i, fr, sc[s]);
                be->rope(be->ctx, ba->kn + i * kvd, j - i, KV, hd, m->rot_dim, a->pos + i, fr, sc[s]);
            }
        }
        be->attention_paged(be->ctx, a->att, a->q, ba->kn, ba->vn,
                            (float *)((char *)kv->k + l * layer_bytes),
                            (float *)((char *)kv->v + l * layer_bytes), n, ba->seq, a->pos, ba->bt, b->max_blocks,
                            bs, H, KV, hd, scale, c->sliding_window);
        lmc_layer_out_mlp(be, c, L, a, n);
    }
    free(sc);
    if (b->n_logits == 0) return LMC_OK;
    /* gather the wanted rows of x: embed over x viewed as an (n, C) F32 table */
    struct lmc_mat xt = {LMC_DTYPE_F32, n, C, a->x};
    be->embed(be->ctx, a->h, &xt, ba->rows, b->n_logits);
    lmc_layer_norm(be, c, a->h, a->h, m->norm_f_w, m->norm_f_b, b->n_logits);
    be->matmul(be->ctx, a->logits, a->h, b->n_logits, &m->lm_head, NULL);
    return LMC_OK;
}

lmc_status lmc_model_forward_batch(const struct lmc_model *m, const struct lmc_backend *be,
                                   struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                   const struct lmc_batch *b, float *logits, lmc_err *err) {
    lmc_status st = forward_batch_run(m, be, ba, kv, b, err);
    if (st || b->n_logits == 0) return st;
    be->download(be->ctx, logits, ba->a.logits,
                 (size_t)(b->n_logits * m->cfg.vocab_size) * sizeof(float));
    return LMC_OK;
}

lmc_status lmc_model_forward_batch_argmax(const struct lmc_model *m, const struct lmc_backend *be,
                                          struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                          const struct lmc_batch *b, int32_t *ids, lmc_err *err) {
    lmc_status st = forward_batch_run(m, be, ba, kv, b, err);
    if (st || b->n_logits == 0) return st;
    int64_t V = m->cfg.vocab_size;
    if (be->argmax_rows) {
        be->argmax_rows(be->ctx, ids, ba->a.logits, b->n_logits, V);
        return LMC_OK;
    }
    /* no device argmax: download and scan (first strict maximum, as the sampler) */
    float *row = malloc((size_t)V * sizeof *row);
    if (!row) return lmc_err_set(err, LMC_ERR_OOM, "forward batch: out of memory");
    for (int64_t r = 0; r < b->n_logits; r++) {
        be->download(be->ctx, row, ba->a.logits + r * V, (size_t)V * sizeof *row);
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (row[i] > row[best]) best = i;
        ids[r] = (int32_t)best;
    }
    free(row);
    return LMC_OK;
}

lmc_status lmc_model_forward_batch_sample(const struct lmc_model *m, const struct lmc_backend *be,
                                          struct lmc_batch_acts *ba, struct lmc_kv_pool *kv,
                                          const struct lmc_batch *b,
                                          const struct lmc_sample_row *params, int32_t *ids,
                                          lmc_err *err) {
    lmc_status st = forward_batch_run(m, be, ba, kv, b, err);
    if (st || b->n_logits == 0) return st;
    int64_t V = m->cfg.vocab_size;
    if (be->sample_rows) {
        be->sample_rows(be->ctx, ids, ba->a.logits, b->n_logits, V, params);
        return LMC_OK;
    }
    /* no device sampler: download each row and run the sampler's core */
    float *row = malloc((size_t)V * sizeof *row), *prob = malloc((size_t)V * sizeof *prob);
    int32_t *idx = malloc((size_t)V * sizeof *idx);
    if (!row || !prob || !idx) {
        free(row);
        free(prob);
        free(idx);
        return lmc_err_set(err, LMC_ERR_OOM, "forward batch: out of memory");
    }
    for (int64_t r = 0; r < b->n_logits; r++) {
        be->download(be->ctx, row, ba->a.logits + r * V, (size_t)V * sizeof *row);
        ids[r] = lmc_sample_logits_row(row, V, &params[r], idx, prob);
    }
    free(row);
    free(prob);
    free(idx);
    return LMC_OK;
}
