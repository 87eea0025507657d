/* forward.c — the shared transformer forward over a KV cache, composed
 * only of backend-table ops: pre-norm blocks with RMSNorm+RoPE+SwiGLU
 * (Llama family) or LayerNorm+learned positions+GELU (GPT-2). Also the KV
 * cache and activation scratch, both sized up front. */
#include "model/model.h"
#include "core/core.h"
#include "model/layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t lmc_kv_bytes(const struct lmc_model *m, int64_t ctx) {
    const struct lmc_config *c = &m->cfg;
    return 2 * (size_t)c->num_layers * (size_t)ctx * (size_t)(c->num_kv_heads * c->head_dim) *
           sizeof(float);
}

lmc_status lmc_kv_init(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be,
                       int64_t ctx, lmc_err *err) {
    memset(kv, 0, sizeof *kv);
    if (ctx <= 0 || ctx > (1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "context length %lld out of range (1..16777216)",
                           (long long)ctx);
    const struct lmc_config *c = &m->cfg;
    kv->be = be;
    kv->ctx = ctx;
    kv->n_layers = c->num_layers;
    kv->row = c->num_kv_heads * c->head_dim;
    size_t half = lmc_kv_bytes(m, ctx) / 2; /* f32 elements; 16-bit caches take half */
    if (be->kv_dtype != LMC_DTYPE_F32) half /= 2;
    kv->k = be->alloc(be->ctx, half);
    kv->v = be->alloc(be->ctx, half);
    if (!kv->k || !kv->v) {
        lmc_kv_free(kv);
        return lmc_err_set(err, LMC_ERR_OOM, "KV cache for %lld positions needs %zu bytes",
                           (long long)ctx, 2 * half);
    }
    return LMC_OK;
}

void lmc_kv_free(struct lmc_kv *kv) {
    if (kv->be) {
        if (kv->k) kv->be->free(kv->be->ctx, kv->k);
        if (kv->v) kv->be->free(kv->be->ctx, kv->v);
    }
    memset(kv, 0, sizeof *kv);
}

/* floats per token of the wide scratch buffers */
static int64_t acts_width(const struct lmc_model *m) {
    const struct lmc_config *c = &m->cfg;
    return LMC_MAX(c->hidden_size, c->num_heads * c->head_dim);
}

size_t lmc_acts_bytes(const struct lmc_model *m, int64_t max_tokens, int64_t logit_rows) {
    const struct lmc_config *c = &m->cfg;
    return (size_t)max_tokens * sizeof(float) * (size_t)(4 * acts_width(m) + 2 * c->intermediate_size) +
           (size_t)logit_rows * (size_t)c->vocab_size * sizeof(float) +
           (size_t)max_tokens * 2 * sizeof(int32_t) + (size_t)(c->head_dim / 2 + 1) * sizeof(double);
}

lmc_status lmc_acts_init(struct lmc_acts *a, const struct lmc_model *m, const struct lmc_backend *be,
                         int64_t max_tokens, int64_t logit_rows, lmc_err *err) {
    memset(a, 0, sizeof *a);
    const struct lmc_config *c = &m->cfg;
    a->be = be;
    a->max_tokens = max_tokens;
    a->logit_rows = LMC_MAX(1, logit_rows);
    size_t nb = (size_t)max_tokens * (size_t)acts_width(m) * sizeof(float);
    size_t nf = (size_t)max_tokens * (size_t)c->intermediate_size * sizeof(float);
    void *(*al)(void *, size_t) = be->alloc;
    a->x = al(be->ctx, nb);
    a->h = al(be->ctx, nb);
    a->q = al(be->ctx, nb);
    a->att = al(be->ctx, nb);
    a->ff1 = al(be->ctx, nf);
    a->ff2 = al(be->ctx, nf);
    a->logits = al(be->ctx, (size_t)a->logit_rows * (size_t)c->vocab_size * sizeof(float));
    a->ids = al(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    a->pos = al(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    a->inv_freq = al(be->ctx, (size_t)(c->head_dim / 2 + 1) * sizeof(double));
    if (!a->x || !a->h || !a->q || !a->att || !a->ff1 || !a->ff2 || !a->logits || !a->ids ||
        !a->pos || !a->inv_freq) {
        lmc_acts_free(a);
        return lmc_err_set(err, LMC_ERR_OOM, "activations for %lld tokens: out of memory",
                           (long long)max_tokens);
    }
    return LMC_OK;
}

void lmc_acts_free(struct lmc_acts *a) {
    if (a->be) {
        void *bufs[] = {a->x, a->h, a->q, a->att, a->ff1, a->ff2, a->logits, a->ids, a->pos, a->inv_freq};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]) a->be->free(a->be->ctx, bufs[i]);
    }
    memset(a, 0, sizeof *a);
}

/* One chunk of n <= a->max_tokens tokens. */
static void forward_chunk(const struct lmc_model *m, const struct lmc_backend *be,
                          struct lmc_acts *a, struct lmc_kv *kv, const int32_t *host_ids, int64_t n,
                          int64_t pos0, float *host_logits, bool all_logits) {
    const struct lmc_config *c = &m->cfg;
    int64_t C = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int64_t kvd = KV * hd, I = c->intermediate_size;
    float attn_scale = 1.0f;
    int32_t pos[n];
    for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(pos0 + i);
    be->upload(be->ctx, a->pos, pos, (size_t)n * sizeof *pos);
    be->upload(be->ctx, a->ids, host_ids, (size_t)n * sizeof *host_ids);
    be->embed(be->ctx, a->x, &m->tok_emb, a->ids, n);
    if (m->pos_emb.data) {
        be->embed(be->ctx, a->h, &m->pos_emb, a->pos, n);
        be->add(be->ctx, a->x, a->x, a->h, n * C);
    }
    if (m->rot_dim) {
        double inv_freq[m->rot_dim / 2];
        lmc_rope_freqs(c, m->rot_dim, pos0 + n, inv_freq, &attn_scale);
        be->upload(be->ctx, a->inv_freq, inv_freq, sizeof inv_freq);
    }
    float scale = 1.0f / sqrtf((float)hd);
    /* a 16-bit KV cache (backend's kv_dtype) is written by rope_kv_store
     * from f32 K/V in scratch (att, ff1: free until attention) */
    bool kv16 = be->kv_dtype != LMC_DTYPE_F32;
    size_t kv_esz = kv16 ? 2 : sizeof(float);
    LMC_ASSERT(!kv16 || (be->rope_kv_store && I >= kvd));
    for (int64_t l = 0; l < c->num_layers; l++) {
        const struct lmc_layer *L = &m->layers[l];
        char *kc = (char *)kv->k + (size_t)l * (size_t)kv->ctx * (size_t)kvd * kv_esz;
        char *vc = (char *)kv->v + (size_t)l * (size_t)kv->ctx * (size_t)kvd * kv_esz;
        lmc_layer_norm(be, c, a->h, a->x, L->norm1_w, L->norm1_b, n);
        if (kv16) {
            float *y[3] = {a->q, a->att, a->ff1};
            const struct lmc_mat *w[3] = {&L->wq, &L->wk, &L->wv};
            const float *b[3] = {L->bq, L->bk, L->bv};
            lmc_layer_matmuls(be, 3, y, a->h, n, w, b);
            be->rope_kv_store(be->ctx, a->q, a->att, a->ff1, kc, vc, n, H, KV, hd, m->rot_dim,
                              a->pos, a->inv_freq, attn_scale);
        } else { /* K and V go straight into the cache rows of these positions */
            float *kc32 = (float *)kc, *vc32 = (float *)vc;
            float *y[3] = {a->q, kc32 + pos0 * kvd, vc32 + pos0 * kvd};
            const struct lmc_mat *w[3] = {&L->wq, &L->wk, &L->wv};
            const float *b[3] = {L->bq, L->bk, L->bv};
            lmc_layer_matmuls(be, 3, y, a->h, n, w, b);
            if (m->rot_dim) {
                be->rope(be->ctx, a->q, n, H, hd, m->rot_dim, a->pos, a->inv_freq, attn_scale);
                be->rope(be->ctx, kc32 + pos0 * kvd, n, KV, hd, m->rot_dim, a->pos, a->inv_freq,
                         attn_scale);
            }
        }
        be->attention(be->ctx, a->att, a->q, (const float *)kc, (const float *)vc, n, pos0, H, KV,
                      hd, scale, c->sliding_window);
        lmc_layer_out_mlp(be, c, L, a, n);
    }
    if (!host_logits) return; /* a non-final chunk of a prompt: only the cache matters */
    int64_t rows = all_logits ? n : 1;
    lmc_layer_norm(be, c, a->h, a->x + (n - rows) * C, m->norm_f_w, m->norm_f_b, rows);
    be->matmul(be->ctx, a->logits, a->h, rows, &m->lm_head, NULL);
    be->download(be->ctx, host_logits, a->logits, (size_t)(rows * c->vocab_size) * sizeof(float));
}

lmc_status lmc_model_forward(const struct lmc_model *m, const struct lmc_backend *be,
                             struct lmc_acts *a, struct lmc_kv *kv, const int32_t *ids, int64_t n,
                             int64_t pos0, float *logits, bool all_logits, lmc_err *err) {
    const struct lmc_config *c = &m->cfg;
    if (n <= 0) return lmc_err_set(err, LMC_ERR_ARG, "forward: no tokens");
    if (pos0 < 0 || pos0 + n > kv->ctx)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "context full: %lld tokens at position %lld exceed the context of %lld",
                           (long long)n, (long long)pos0, (long long)kv->ctx);
    if (m->pos_emb.data && pos0 + n > m->pos_emb.rows)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "%lld positions exceed the model's %lld learned positions",
                           (long long)(pos0 + n), (long long)m->pos_emb.rows);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG, "token id %d at index %lld is outside the vocabulary (0..%lld)",
                               ids[i], (long long)i, (long long)c->vocab_size - 1);
    int64_t chunk = all_logits ? LMC_MIN(a->max_tokens, a->logit_rows) : a->max_tokens;
    for (int64_t done = 0; done < n;) {
        int64_t step = LMC_MIN(chunk, n - done);
        bool last = done + step == n;
        float *out = all_logits ? logits + done * c->vocab_size : logits;
        if (all_logits || last)
            forward_chunk(m, be, a, kv, ids + done, step, pos0 + done, out, all_logits);
        else
            forward_chunk(m, be, a, kv, ids + done, step, pos0 + done, NULL, false);
        done += step;
    }
    return LMC_OK;
}
