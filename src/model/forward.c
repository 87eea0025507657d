/* forward.c — the single-sequence driver: fills a struct lmc_run
 * (LMC_RUN_SEQ) and runs the architecture's one block per layer
 * (block.c) over a contiguous KV cache, then the final norm and head.
 * Also the KV cache and activation scratch, both sized up front with
 * overflow-checked products (nothing is allocated per step). */
#include "model/model.h"
#include "core/core.h"
#include "dist/tp.h" /* the vocabulary-parallel head's gather (lmc_weights.vocab) */
#include "dist/pp_infer.h" /* pipeline stages (lmc_weights.pipe) */

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* f32 bytes of K and V for ctx positions; 0 when the product overflows */
size_t lmc_kv_bytes(const struct lmc_model *m, int64_t ctx) {
    int64_t f;
    if (ctx < 0 || !lmc_mul_ok(lmc_model_kv_floats_per_token(&m->cfg), ctx, &f) || f > INT64_MAX / 8)
        return 0;
    return 2 * (size_t)f * sizeof(float);
}

lmc_status lmc_kv_init(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be,
                       int64_t ctx, lmc_err *err) {
    return lmc_kv_init_bytes(kv, m, be, ctx, 0, err);
}

lmc_status lmc_kv_init_bytes(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be,
                             int64_t ctx, size_t layer_bytes, lmc_err *err) {
    memset(kv, 0, sizeof *kv);
    if (ctx <= 0 || ctx > (1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "context length %lld out of range (1..16777216)",
                           (long long)ctx);
    const struct lmc_config *c = &m->cfg;
    if (lmc_kv_bytes(m, ctx) == 0 && lmc_model_kv_floats_per_token(c) > 0)
        return lmc_err_set(err, LMC_ERR_ARG, "KV cache for %lld positions: size out of range", (long long)ctx);
    kv->be = be;
    kv->ctx = ctx;
    kv->n_layers = c->num_layers;
    kv->row = m->arch->mixer->kv_row(c);
    size_t half = lmc_kv_bytes(m, ctx) / 2; /* f32 elements; 16-bit caches take half */
    if (be->kv_dtype != LMC_DTYPE_F32) half /= 2;
    kv->layer_bytes = kv->n_layers ? half / (size_t)kv->n_layers : 0;
    if (half && layer_bytes) {
        if (layer_bytes > SIZE_MAX / 2 / (size_t)kv->n_layers)
            return lmc_err_set(err, LMC_ERR_ARG, "KV cache of %zu bytes per layer: size out of range", layer_bytes);
        kv->layer_bytes = layer_bytes;
        half = layer_bytes * (size_t)kv->n_layers;
    }
    if (half) { /* recurrent models keep no K/V */
        kv->k = be->alloc(be->ctx, half);
        kv->v = be->alloc(be->ctx, half);
    }
    kv->state_bytes = lmc_model_seq_slot_bytes(m);
    if (kv->state_bytes) {
        kv->state = be->alloc(be->ctx, kv->state_bytes);
        if (kv->state) be->zero(be->ctx, kv->state, kv->state_bytes);
    }
    if ((half && (!kv->k || !kv->v)) || (kv->state_bytes && !kv->state)) {
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
        if (kv->state) kv->be->free(kv->be->ctx, kv->state);
    }
    memset(kv, 0, sizeof *kv);
}

#define A16(n) (((n) + 15) / 16 * 16)

/* Floats of each piece for max_tokens tokens and logit_rows rows; false
 * when a product overflows. */
struct acts_size {
    int64_t xrows, x, save, logits, half;
};

static bool acts_size(const struct lmc_model *m, int64_t max_tokens, int64_t logit_rows,
                      struct acts_size *z) {
    const struct lmc_config *c = &m->cfg;
    z->xrows = LMC_MAX(max_tokens, logit_rows);
    z->half = c->head_dim / 2 + 1;
    if (max_tokens <= 0 || max_tokens > (1 << 24) || logit_rows <= 0 || logit_rows > (1 << 24) ||
        !lmc_mul_ok(z->xrows, c->hidden_size, &z->x) || z->x > ((int64_t)1 << 40) ||
        !lmc_mul_ok(logit_rows, c->vocab_size, &z->logits) || z->logits > ((int64_t)1 << 40))
        return false;
    z->x = A16(z->x);
    /* the block's per-token widths are bounded by the config checks: n * width fits */
    z->save = lmc_block_save_floats(m->arch, c, max_tokens, LMC_RUN_SEQ);
    return z->save > 0 && z->save < ((int64_t)1 << 42);
}

size_t lmc_acts_bytes(const struct lmc_model *m, int64_t max_tokens, int64_t logit_rows) {
    struct acts_size z;
    if (!acts_size(m, max_tokens, LMC_MAX(1, logit_rows), &z)) return 0;
    return (size_t)(3 * z.x + z.save + z.logits) * sizeof(float) +
           (size_t)max_tokens * 2 * sizeof(int32_t) + (size_t)z.half * sizeof(double);
}

lmc_status lmc_acts_init(struct lmc_acts *a, const struct lmc_model *m, const struct lmc_backend *be,
                         int64_t max_tokens, int64_t logit_rows, lmc_err *err) {
    memset(a, 0, sizeof *a);
    struct acts_size z;
    if (!acts_size(m, max_tokens, LMC_MAX(1, logit_rows), &z))
        return lmc_err_set(err, LMC_ERR_ARG, "activations for %lld tokens, %lld logits rows: out of range",
                           (long long)max_tokens, (long long)logit_rows);
    a->be = be;
    a->max_tokens = max_tokens;
    a->logit_rows = LMC_MAX(1, logit_rows);
    void *(*al)(void *, size_t) = be->alloc;
    a->x = al(be->ctx, (size_t)z.x * sizeof(float));
    a->h = al(be->ctx, (size_t)z.x * sizeof(float));
    a->tmp = al(be->ctx, (size_t)z.x * sizeof(float));
    a->save = al(be->ctx, (size_t)z.save * sizeof(float));
    a->logits = al(be->ctx, (size_t)z.logits * sizeof(float));
    a->ids = al(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    a->pos = al(be->ctx, (size_t)max_tokens * sizeof(int32_t));
    a->inv_freq = al(be->ctx, (size_t)z.half * sizeof(double));
    a->pos_host = malloc((size_t)max_tokens * sizeof(int32_t));
    a->freq_host = malloc((size_t)z.half * sizeof(double));
    if (!a->x || !a->h || !a->tmp || !a->save || !a->logits || !a->ids || !a->pos || !a->inv_freq ||
        !a->pos_host || !a->freq_host) {
        lmc_acts_free(a);
        return lmc_err_set(err, LMC_ERR_OOM, "activations for %lld tokens: out of memory",
                           (long long)max_tokens);
    }
    return LMC_OK;
}

void lmc_acts_free(struct lmc_acts *a) {
    if (a->be) {
        void *bufs[] = {a->x, a->h, a->tmp, a->save, a->logits, a->ids, a->pos, a->inv_freq};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]) a->be->free(a->be->ctx, bufs[i]);
    }
    free(a->pos_host);
    free(a->freq_host);
    memset(a, 0, sizeof *a);
}

/* Final norm of rows (n, C) from x into a->h, then the head into a->logits. */
void lmc_model_logits(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_acts *a,
                      const float *x, int64_t rows) {
    const struct lmc_config *c = &m->cfg;
    m->arch->norm->fwd(be, a->h, x, m->w.norm_f, m->w.norm_f_b, rows, c->hidden_size, (float)c->norm_eps);
    const struct lmc_linear *H = &m->w.head;
    lmc_linear_fwd(be, 1, &H, &a->logits, a->h, rows);
    if (m->w.vocab) { /* vocabulary-parallel head: the ranks' columns gathered into (rows, V) */
        struct lmc_tp_group *g = m->w.vocab->g;
        if (!g->st) g->st = lmc_tp_vocab_gather(g->c, a->logits, rows, m->w.vocab->V, &g->err);
    }
}

#define FWD_TAIL 16

/* true if a linear of block W has an input observer (GPTQ calibration: it
 * must see every row) */
static bool block_observed(const struct lmc_config *c, const struct lmc_block_w *W) {
    for (int i = 0; i < LMC_L_N; i++)
        if (W->lin[i].observe) return true;
    for (int64_t i = 0; W->experts && i < c->num_experts * LMC_X_N; i++)
        if (W->experts[i].observe) return true;
    return false;
}

/* One chunk of n <= a->max_tokens tokens (depth, mask: a token tree,
 * lmc_model_forward_mask; NULL: causal). x_host (n rows of C, host): the
 * residual stream entering layer `from` instead of the ids' embedding
 * (lmc_model_forward_from; else from = 0). */
static void forward_chunk(const struct lmc_model *m, const struct lmc_backend *be,
                          struct lmc_acts *a, struct lmc_kv *kv, const int32_t *host_ids, int64_t n,
                          int64_t pos0, float *host_logits, bool all_logits, const int32_t *depth,
                          const uint64_t *mask, const float *x_host, int64_t from) {
    const struct lmc_config *c = &m->cfg;
    int64_t C = c->hidden_size;
    struct lmc_run r = {.mode = LMC_RUN_SEQ, .be = be, .cfg = c, .arch = m->arch, .n = n,
                        .rot_dim = m->rot_dim, .pos = a->pos, .inv_freq = a->inv_freq,
                        .attn_scale = 1.0f, .tmp = a->tmp, .kv = kv, .pos0 = pos0,
                        .state = kv->state, .row_mask = mask};
    for (int64_t i = 0; i < n; i++) a->pos_host[i] = (int32_t)(pos0 + (depth ? depth[i] : i));
    be->upload(be->ctx, a->pos, a->pos_host, (size_t)n * sizeof(int32_t));
    struct lmc_pp_infer *pp = m->w.pipe;
    if (x_host) {
        be->upload(be->ctx, a->x, x_host, (size_t)(n * C) * sizeof(float));
    } else {
        be->upload(be->ctx, a->ids, host_ids, (size_t)n * sizeof *host_ids);
        if (pp && !lmc_pp_infer_first(pp)) lmc_pp_infer_recv_x(pp, a->x, n, C); /* the stage before's output */
        else lmc_weights_embed(be, &m->w, a->x, a->ids, a->pos, n, a->h);
    }
    if (m->rot_dim) {
        lmc_rope_freqs(c, m->rot_dim, pos0 + n, a->freq_host, &r.attn_scale);
        be->upload(be->ctx, a->inv_freq, a->freq_host, (size_t)(m->rot_dim / 2) * sizeof(double));
    }
    struct lmc_block_save s;
    lmc_block_save_carve(m->arch, c, n, LMC_RUN_SEQ, a->save, &s);
    s.h1 = s.h2 = a->h;
    for (int64_t l = from; l < c->num_layers; l++) {
        /* the last layer of a chunk whose last row alone gives logits: its
         * attention output and feed-forward on the last FWD_TAIL rows only
         * (more than one so that the matmuls take the prompt's large-M path,
         * whose rows' sums do not depend on M on the CPU); not while a
         * calibration observes the layer's inputs */
        if (l == c->num_layers - 1 && host_logits && !all_logits && !mask && !pp && !block_observed(c, &m->w.layers[l]))
            r.tail = LMC_MIN(n, FWD_TAIL);
        lmc_block_fwd(&r, l, &m->w.layers[l], &s, a->x, a->x);
    }
    if (pp && !lmc_pp_infer_last(pp)) lmc_pp_infer_send_x(pp, a->x, n, C);
    if (!host_logits) return; /* a non-final chunk of a prompt: only the cache matters */
    int64_t rows = all_logits ? n : 1;
    if (!pp || lmc_pp_infer_last(pp)) {
        lmc_model_logits(m, be, a, a->x + (n - rows) * C, rows);
        be->download(be->ctx, host_logits, a->logits, (size_t)(rows * c->vocab_size) * sizeof(float));
    }
    if (pp) lmc_pp_infer_bcast(pp, host_logits, rows * c->vocab_size); /* every rank samples the same */
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
    if (m->w.pos_emb.data && pos0 + n > m->w.pos_emb.rows)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "%lld positions exceed the model's %lld learned positions",
                           (long long)(pos0 + n), (long long)m->w.pos_emb.rows);
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
            forward_chunk(m, be, a, kv, ids + done, step, pos0 + done, out, all_logits, NULL, NULL, NULL, 0);
        else
            forward_chunk(m, be, a, kv, ids + done, step, pos0 + done, NULL, false, NULL, NULL, NULL, 0);
        done += step;
    }
    return LMC_OK;
}

bool lmc_model_mask_ok(const struct lmc_model *m, const struct lmc_backend *be) {
    if (!be->attention_mask || !be->host_memory || be->kv_dtype != LMC_DTYPE_F32 || m->cfg.sliding_window > 0 ||
        m->w.pipe || m->w.vocab)
        return false;
    return m->arch->mixer == &lmc_mixer_attention;
}

lmc_status lmc_model_forward_mask(const struct lmc_model *m, const struct lmc_backend *be,
                                  struct lmc_acts *a, struct lmc_kv *kv, const int32_t *ids, int64_t n,
                                  int64_t pos0, const int32_t *depth, const uint64_t *mask, float *logits,
                                  lmc_err *err) {
    const struct lmc_config *c = &m->cfg;
    if (!lmc_model_mask_ok(m, be))
        return lmc_err_set(err, LMC_ERR_ARG, "tree forward: needs attention layers without a sliding window, an f32 "
                                             "host cache and the backend's attention_mask");
    if (n <= 0 || n > 64 || n > a->max_tokens || n > a->logit_rows)
        return lmc_err_set(err, LMC_ERR_ARG, "tree forward: %lld rows out of range (1..%lld)", (long long)n,
                           (long long)LMC_MIN(64, LMC_MIN(a->max_tokens, a->logit_rows)));
    if (pos0 < 0 || pos0 + n > kv->ctx)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "context full: %lld tokens at position %lld exceed the context of %lld",
                           (long long)n, (long long)pos0, (long long)kv->ctx);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG, "token id %d at index %lld is outside the vocabulary (0..%lld)",
                               ids[i], (long long)i, (long long)c->vocab_size - 1);
        if (depth[i] < 0 || depth[i] > i || !((mask[i] >> i) & 1) || (mask[i] >> i) > 1)
            return lmc_err_set(err, LMC_ERR_ARG, "tree forward: row %lld must see itself and only earlier rows, "
                                                 "at a depth <= its index", (long long)i);
    }
    if (m->w.pos_emb.data && pos0 + n > m->w.pos_emb.rows)
        return lmc_err_set(err, LMC_ERR_ARG, "%lld positions exceed the model's %lld learned positions",
                           (long long)(pos0 + n), (long long)m->w.pos_emb.rows);
    forward_chunk(m, be, a, kv, ids, n, pos0, logits, true, depth, mask, NULL, 0);
    return LMC_OK;
}

lmc_status lmc_model_forward_from(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_acts *a,
                                  struct lmc_kv *kv, const float *x, int64_t n, int64_t pos0, int64_t from,
                                  float *logits, lmc_err *err) {
    const struct lmc_config *c = &m->cfg;
    if (from < 0 || from >= c->num_layers || m->w.pipe || m->w.vocab)
        return lmc_err_set(err, LMC_ERR_ARG, "forward from layer %lld: out of range (0..%lld) or a sharded model",
                           (long long)from, (long long)c->num_layers - 1);
    if (n <= 0 || n > a->max_tokens || n > a->logit_rows)
        return lmc_err_set(err, LMC_ERR_ARG, "forward from layer %lld: %lld rows out of range (1..%lld)",
                           (long long)from, (long long)n, (long long)LMC_MIN(a->max_tokens, a->logit_rows));
    if (pos0 < 0 || pos0 + n > kv->ctx)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "context full: %lld tokens at position %lld exceed the context of %lld",
                           (long long)n, (long long)pos0, (long long)kv->ctx);
    forward_chunk(m, be, a, kv, NULL, n, pos0, logits, true, NULL, NULL, x, from);
    return LMC_OK;
}

void lmc_kv_move_rows(struct lmc_kv *kv, const int64_t *src, const int64_t *dst, int64_t n) {
    LMC_ASSERT(kv->be->host_memory);
    size_t es = kv->be->kv_dtype != LMC_DTYPE_F32 ? 2 : sizeof(float), rb = (size_t)kv->row * es;
    size_t layer = kv->layer_bytes;
    for (int64_t i = 0; i < n; i++) {
        LMC_ASSERT(src[i] >= 0 && src[i] < kv->ctx && dst[i] >= 0 && dst[i] < kv->ctx);
        if (src[i] == dst[i]) continue;
        for (int64_t l = 0; l < kv->n_layers; l++) {
            char *k = (char *)kv->k + (size_t)l * layer, *v = (char *)kv->v + (size_t)l * layer;
            memmove(k + (size_t)dst[i] * rb, k + (size_t)src[i] * rb, rb);
            memmove(v + (size_t)dst[i] * rb, v + (size_t)src[i] * rb, rb);
        }
    }
}
