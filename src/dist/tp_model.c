/* tp_model.c — a tensor-parallel rank's shard of a loaded model (see
 * tp_model.h): slices of each block's linears by heads and by the MLP's
 * intermediate features into one arena, and a local config; with --tp-vocab
 * the embedding's and head's rows of its vocabulary slice. */
#include "dist/tp_model.h"
#include "core/core.h"
#include "dist/tp_quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where a slot's shard lies: rows [r0, r0+nr) (column-parallel) or columns
 * [c0, c0+nc) (row-parallel) of its (out, in) weight. */
struct cut {
    enum lmc_split split;
    int64_t a0, n;                   /* first row/column and count */
};

static struct cut cut_of(int slot, const struct lmc_tp_heads *h, int64_t hd, int64_t i0, int64_t ni) {
    switch (slot) {
    case LMC_L_Q: return (struct cut){LMC_SPLIT_COLUMN, h->q0 * hd, h->nq * hd};
    case LMC_L_K:
    case LMC_L_V: return (struct cut){LMC_SPLIT_COLUMN, h->kv0 * hd, h->nkv * hd};
    case LMC_L_O: return (struct cut){LMC_SPLIT_ROW, h->q0 * hd, h->nq * hd};
    case LMC_L_GATE:
    case LMC_L_UP: return (struct cut){LMC_SPLIT_COLUMN, i0, ni};
    default: return (struct cut){LMC_SPLIT_ROW, i0, ni}; /* DOWN */
    }
}

/* Arena pieces start at multiples of 64 bytes. */
static int64_t up64(int64_t b) { return (b + 63) / 64 * 64; }

/* Arena bytes of a slot's shard (dense weight in its dtype, then the f32
 * bias; a quantized weight's codes live in its own lmc_qweight). */
static int64_t cut_bytes(const struct lmc_linear *L, struct cut k) {
    int64_t esz = L->format == LMC_WFMT_QUANT ? 0 : lmc_dtype_size(L->w.dtype);
    int64_t w = (k.split == LMC_SPLIT_COLUMN ? k.n * L->w.cols : L->w.rows * k.n) * esz;
    int64_t b = !L->bias ? 0 : k.split == LMC_SPLIT_COLUMN ? k.n : L->w.rows;
    return up64(w) + up64(b * (int64_t)sizeof(float));
}

/* rows [r0, r0+nr) / columns [c0, c0+nc) of a row-major (rows, cols) matrix of esz-byte elements */
static void take_rows_b(void *dst, const void *src, int64_t cols, int64_t r0, int64_t nr, size_t esz) {
    memcpy(dst, (const char *)src + (size_t)(r0 * cols) * esz, (size_t)(nr * cols) * esz);
}
static void take_cols_b(void *dst, const void *src, int64_t rows, int64_t cols, int64_t c0, int64_t nc, size_t esz) {
    for (int64_t i = 0; i < rows; i++)
        memcpy((char *)dst + (size_t)(i * nc) * esz, (const char *)src + (size_t)(i * cols + c0) * esz, (size_t)nc * esz);
}

/* The adapters of full linear L for shard D (lora_tp.h's rule): over a
 * column-split base A is shared whole and B viewed at the shard's rows; over
 * a row-split one A's columns are copied to p (host memory) and B shared.
 * Returns p past what it used. */
static char *shard_adapters(struct lmc_tp_model *t, const struct lmc_linear *L, struct lmc_linear *D, struct cut k,
                            char *p) {
    if (!L->n_adapters) return p;
    struct lmc_adapter *ad = t->adapters + t->n_adapters;
    for (int j = 0; j < L->n_adapters; j++) {
        struct lmc_adapter a = L->adapters[j];
        int64_t r = a.a.rows;
        LMC_ASSERT(a.a.dtype == LMC_DTYPE_F32 && a.b.dtype == LMC_DTYPE_F32 && a.b.cols == r);
        if (k.split == LMC_SPLIT_COLUMN) {
            a.b.data = (const float *)a.b.data + k.a0 * r;
            a.b.rows = k.n;
        } else {
            lmc_tp_take_cols((float *)p, a.a.data, r, a.a.cols, k.a0, k.n);
            a.a.data = p;
            a.a.cols = k.n;
            p += up64(r * k.n * (int64_t)sizeof(float));
        }
        ad[j] = a;
    }
    D->adapters = ad;
    t->n_adapters += L->n_adapters;
    return p;
}

/* The embedding and head rows of this rank (t->m already the shard). */
static lmc_status shard_vocab(struct lmc_tp_model *t, const struct lmc_model *full, struct lmc_comm *c,
                              lmc_err *err) {
    const struct lmc_weights *w = &full->w;
    int64_t V = full->cfg.vocab_size, C = w->tok_emb.cols, v0, nv;
    bool tied = w->head.w.data == w->tok_emb.data;
    if (!w->tok_emb.data || w->tok_emb.dtype != LMC_DTYPE_F32 || w->tok_emb.rows != V || w->head.w.dtype != LMC_DTYPE_F32 ||
        w->head.format != LMC_WFMT_DENSE || w->head.w.rows != V || w->head.w.cols != C)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp-vocab: the embedding and head must be float32 (%lld, %lld) "
                           "tables (load with float32 weights)", (long long)V, (long long)C);
    if (w->head.bias || w->head.n_adapters)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp-vocab: a head with a bias or adapters does not split yet");
    lmc_dist_slice(V, c->rank, c->world, &v0, &nv);
    if (nv == 0)
        return lmc_err_set(err, LMC_ERR_ARG, "--tp-vocab: a vocabulary of %lld does not split in %d", (long long)V,
                           c->world);
    t->varena = malloc(sizeof(float) * (size_t)(nv * C) * (tied ? 1u : 2u));
    if (!t->varena) return lmc_err_set(err, LMC_ERR_OOM, "--tp-vocab: out of memory");
    lmc_tp_take_rows(t->varena, w->tok_emb.data, C, v0, nv);
    float *head = t->varena;
    if (!tied) lmc_tp_take_rows(head = t->varena + nv * C, w->head.w.data, C, v0, nv);
    t->m.w.tok_emb.data = t->varena;
    t->m.w.tok_emb.rows = nv;
    t->m.w.head.w.data = head;
    t->m.w.head.w.rows = nv;
    t->wv = (struct lmc_wvocab){&t->group, v0, nv, V};
    t->m.w.vocab = &t->wv;
    return LMC_OK;
}

lmc_status lmc_tp_model_shard(struct lmc_tp_model *t, const struct lmc_model *full,
                              struct lmc_comm *c, lmc_err *err) {
    return lmc_tp_model_shard_vocab(t, full, c, false, err);
}

lmc_status lmc_tp_model_shard_vocab(struct lmc_tp_model *t, const struct lmc_model *full,
                                    struct lmc_comm *c, bool vocab, lmc_err *err) {
    memset(t, 0, sizeof *t);
    const struct lmc_config *fc = &full->cfg;
    if (full->on_device)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: the model must be in host memory to shard");
    if (full->arch->mixer != &lmc_mixer_attention)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s layers do not split yet", full->arch->mixer->name);
    lmc_status st = lmc_tp_plan_heads(fc->num_heads, fc->num_kv_heads, c->world, c->rank, &t->heads, err);
    if (st) return st;
    int64_t i0, ni, hd = fc->head_dim, total = 0, n_ad = 0, n_q = 0;
    lmc_dist_slice(fc->intermediate_size, c->rank, c->world, &i0, &ni);
    if (ni == 0)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: intermediate_size %lld does not split in %d",
                           (long long)fc->intermediate_size, c->world);
    for (int64_t l = 0; l < fc->num_layers; l++)
        for (int s = 0; s < LMC_L_N; s++) {
            const struct lmc_linear *L = &full->w.layers[l].lin[s];
            if (!L->w.data) continue;
            if (L->format == LMC_WFMT_DENSE && L->w.dtype != LMC_DTYPE_F32 && L->w.dtype != LMC_DTYPE_F16 &&
                L->w.dtype != LMC_DTYPE_BF16)
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: layer %lld weights are %s (float32, "
                                   "float16, bfloat16 or a quantized format split)", (long long)l, lmc_dtype_name(L->w.dtype));
            if (L->format == LMC_WFMT_QUANT && (!L->q || L->qfloat || L->observe))
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: layer %lld: a quantized weight in float "
                                   "math or under calibration does not split", (long long)l);
            if (L->format != LMC_WFMT_DENSE && L->format != LMC_WFMT_QUANT)
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: layer %lld: weight format %d does not split",
                                   (long long)l, (int)L->format);
            n_q += L->format == LMC_WFMT_QUANT;
            struct cut k = cut_of(s, &t->heads, hd, i0, ni);
            total += cut_bytes(L, k);
            if (L->n_slots)
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: per-request adapters (an adapter bank) "
                                   "do not split yet; give --lora adapters applied to every request");
            for (int j = 0; j < L->n_adapters; j++) /* a row-split linear's A is cut by columns */
                total += k.split == LMC_SPLIT_ROW ? up64(L->adapters[j].a.rows * k.n * (int64_t)sizeof(float)) : 0;
            n_ad += L->n_adapters;
        }
    t->layers = calloc((size_t)(fc->num_layers > 0 ? fc->num_layers : 1), sizeof *t->layers);
    t->arena = aligned_alloc(64, (size_t)up64(total + 1));
    t->adapters = calloc((size_t)n_ad + 1, sizeof *t->adapters);
    t->qw = calloc((size_t)n_q + 1, sizeof *t->qw);
    if (!t->layers || !t->arena || !t->adapters || !t->qw) {
        lmc_tp_model_free(t);
        return lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory for %lld bytes", (long long)total);
    }
    char *p = t->arena;
    for (int64_t l = 0; l < fc->num_layers; l++) {
        t->layers[l] = full->w.layers[l]; /* vectors and unbound slots as they are */
        for (int s = 0; s < LMC_L_N; s++) {
            const struct lmc_linear *L = &full->w.layers[l].lin[s];
            struct lmc_linear *D = &t->layers[l].lin[s];
            if (!L->w.data) continue;
            struct cut k = cut_of(s, &t->heads, hd, i0, ni);
            int64_t rows = L->w.rows, cols = L->w.cols;
            bool col = k.split == LMC_SPLIT_COLUMN;
            D->split = k.split;
            D->tp = &t->group;
            if (L->format == LMC_WFMT_QUANT) { /* cut without dequantizing (tp_quant.h) */
                char what[96];
                static const char *const names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
                snprintf(what, sizeof what, "layer %lld %s", (long long)l, s < 7 ? names[s] : "linear");
                struct lmc_qweight *q = &t->qw[t->n_qw];
                if ((st = lmc_tp_qweight_cut(q, L->q, !col, k.a0, k.n, what, err))) {
                    lmc_tp_model_free(t);
                    return st;
                }
                t->n_qw++;
                D->q = q;
                D->w.data = q->data;
            } else {
                size_t esz = (size_t)lmc_dtype_size(L->w.dtype);
                D->w.data = p;
                if (col) take_rows_b(p, L->w.data, cols, k.a0, k.n, esz);
                else take_cols_b(p, L->w.data, rows, cols, k.a0, k.n, esz);
                p += up64((col ? k.n * cols : rows * k.n) * (int64_t)esz);
            }
            if (col) D->w.rows = k.n;
            else D->w.cols = k.n;
            if (L->bias) {
                float *b = (float *)p;
                if (col) memcpy(b, L->bias + k.a0, sizeof(float) * (size_t)k.n);
                else memcpy(b, L->bias, sizeof(float) * (size_t)rows);
                D->bias = b;
                p += up64((col ? k.n : rows) * (int64_t)sizeof(float));
            }
            p = shard_adapters(t, L, D, k, p);
        }
    }
    t->group.c = c;
    t->group.sp = false; /* (training only) */
    t->m = *full;
    t->m.w.layers = t->layers;
    t->m.cfg.num_heads = t->heads.nq;
    t->m.cfg.num_kv_heads = t->heads.nkv;
    t->m.cfg.intermediate_size = ni;
    t->m.owned = NULL, t->m.n_owned = t->m.cap_owned = 0;
    t->m.placed = NULL, t->m.n_placed = t->m.cap_placed = 0;
    if (vocab && (st = shard_vocab(t, full, c, err))) {
        lmc_tp_model_free(t);
        return st;
    }
    return LMC_OK;
}

void lmc_tp_model_free(struct lmc_tp_model *t) {
    free(t->layers);
    free(t->arena);
    free(t->adapters);
    for (int i = 0; i < t->n_qw; i++) lmc_qweight_free(&t->qw[i]);
    free(t->qw);
    free(t->varena);
    memset(t, 0, sizeof *t);
}

lmc_status lmc_tp_model_check(struct lmc_tp_model *t, lmc_err *err) {
    lmc_status st = t->group.st;
    if (st && err) *err = t->group.err;
    t->group.st = LMC_OK;
    return st;
}
