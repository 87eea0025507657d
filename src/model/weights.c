/* weights.c — model loading shared by all architectures: opens config and
 * safetensors, walks the architecture's tensor spec table binding every
 * tensor into the weight slots with shape/dtype checks (converting or
 * transposing into owned buffers only when needed), rejects missing and
 * unexpected tensors, uploads to a device backend, and frees it all. */
#include "model/model.h"
#include "model/arch_moe.h"
#include "core/core.h"
#include "io/gguf.h"
#include "quant/hf_quant.h"
#include "quant/qmatmul.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void *lmc_model_own(struct lmc_model *m, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **p = realloc(m->owned, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        m->owned = p;
        m->cap_owned = cap;
    }
    void *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (buf) m->owned[m->n_owned++] = buf;
    return buf;
}

#define QHEAP_ALIGN ((size_t)2 << 20)
#define QHEAP_CHUNK ((size_t)64 << 20)

/* A new chunk of at least bytes (the old one's untouched tail is never
 * resident: only its last, partly used huge page is lost). */
static bool qheap_chunk(struct lmc_model *m, size_t bytes) {
    size_t chunk = (LMC_MAX(bytes, QHEAP_CHUNK) + QHEAP_ALIGN - 1) / QHEAP_ALIGN * QHEAP_ALIGN;
    uint8_t *raw = lmc_model_own(m, chunk + QHEAP_ALIGN);
    if (!raw) return false;
    uint8_t *a = (uint8_t *)(((uintptr_t)raw + QHEAP_ALIGN - 1) / QHEAP_ALIGN * QHEAP_ALIGN);
#ifdef MADV_HUGEPAGE
    madvise(a, chunk, MADV_HUGEPAGE); /* advice only: 4 KB pages if the kernel has none */
#endif
    m->qheap = a;
    m->qheap_left = chunk;
    return true;
}

void lmc_model_qheap_reserve(struct lmc_model *m, size_t bytes) {
    if (bytes > m->qheap_left && bytes <= SIZE_MAX / 2) qheap_chunk(m, bytes); /* else 64 MB chunks as needed */
}

void *lmc_model_own_huge(struct lmc_model *m, size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    if (bytes > m->qheap_left && !qheap_chunk(m, bytes)) return NULL;
    void *p = m->qheap;
    m->qheap += bytes;
    m->qheap_left -= bytes;
    return p;
}

static float elem_f32(const void *data, enum lmc_dtype dt, int64_t i) {
    if (dt == LMC_DTYPE_F32) {
        float f;
        memcpy(&f, (const char *)data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)data + 2 * i, 2);
    return dt == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
}

static void store_elem(void *data, enum lmc_dtype dt, int64_t i, float f) {
    if (dt == LMC_DTYPE_F32) ((float *)data)[i] = f;
    else if (dt == LMC_DTYPE_BF16) ((uint16_t *)data)[i] = lmc_f32_to_bf16(f);
    else ((uint16_t *)data)[i] = lmc_f32_to_f16(f);
}

/* The dtype a weight is used in. On a host-memory backend AUTO and F32
 * keep the file's dtype (used in place, converted per row on use, exact).
 * On a device backend F32 means the fp32 checking mode (every weight
 * uploaded as F32, BF16/F16 ones expanded), and AUTO uploads F32 files as
 * BF16 (tensor-core GEMMs, half the memory) and BF16/F16 ones as they are. */
static enum lmc_dtype target_dtype(enum lmc_wdtype w, enum lmc_dtype disk, bool device) {
    switch (w) {
    case LMC_WDTYPE_BF16: return LMC_DTYPE_BF16;
    case LMC_WDTYPE_F16: return LMC_DTYPE_F16;
    case LMC_WDTYPE_F32: return device ? LMC_DTYPE_F32 : disk;
    default: return device && disk == LMC_DTYPE_F32 ? LMC_DTYPE_BF16 : disk;
    }
}

struct load_state {
    struct lmc_model *m;
    bool *used;
    struct lmc_quant_config qc;
    int64_t xb, xe;          /* experts to bind (xe 0: all) */
    int64_t lb, le;          /* layers to bind (le 0: all; lmc_model_load_layers) */
    bool tied;               /* the file has no head: the embedding is the head */
};

/* Whether the tensor r belongs to the layer range being loaded (a
 * pipeline stage): its layers, the embedding on the first stage, the final
 * norm and head on the last (and the embedding there when it is the head). */
static bool in_range(const struct load_state *ls, const struct lmc_tensor_ref *r) {
    if (ls->le == 0) return true;
    bool first = ls->lb == 0, last = ls->le == ls->m->cfg.num_layers;
    if (r->layer >= 0) return r->layer >= ls->lb && r->layer < ls->le;
    switch (r->spec->kind) {
    case LMC_TK_TOK_EMB: return first || (last && ls->tied);
    case LMC_TK_POS_EMB: return first;
    default: return last; /* head, final norm */
    }
}

/* Walk callback: clears ls->tied when the file holds the head's tensor. */
static lmc_status find_head(void *user, const struct lmc_tensor_ref *r, lmc_err *err) {
    (void)err;
    struct load_state *ls = user;
    if (r->spec->kind == LMC_TK_HEAD && lmc_st_find(&ls->m->st, r->name)) ls->tied = false;
    const char *ap = ls->m->arch->alt_prefix;
    if (r->spec->kind == LMC_TK_HEAD && ap && !strncmp(r->name, ap, strlen(ap)) &&
        lmc_st_find(&ls->m->st, r->name + strlen(ap)))
        ls->tied = false;
    return LMC_OK;
}

/* Marks every tensor named prefix.* (a quantized linear's packed tensors;
 * its bias binds through the spec table) as used. */
static void mark_prefix(struct load_state *ls, const char *prefix) {
    size_t n = strlen(prefix);
    for (int64_t i = 0; i < ls->m->st.n_tensors; i++) {
        const char *t = ls->m->st.tensors[i].name;
        if (!strncmp(t, prefix, n) && t[n] == '.' && strcmp(t + n, ".bias") && !ls->used[i]) {
            ls->used[i] = true;
            ls->m->n_params -= ls->m->st.tensors[i].numel; /* packed: counted as r->numel instead */
        }
    }
}

/* The file pages of prefix's packed tensors (qweight, qzeros, scales,
 * g_idx, ...; not the bias), read once into the prepared weight, released
 * from this process: MADV_DONTNEED on the private read-only mapping (a
 * later read would fault them in again from the file). */
static void release_prefix(struct lmc_model *m, const char *prefix) {
    size_t n = strlen(prefix);
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    for (int64_t i = 0; i < m->st.n_tensors; i++) {
        const struct lmc_st_tensor *t = &m->st.tensors[i];
        if (strncmp(t->name, prefix, n) || t->name[n] != '.' || !strcmp(t->name + n, ".bias") ||
            m->st.files[t->file].map_kind != 1)
            continue;
        uintptr_t a = ((uintptr_t)t->data + (uintptr_t)ps - 1) / (uintptr_t)ps * (uintptr_t)ps;
        uintptr_t e = ((uintptr_t)t->data + t->nbytes) / (uintptr_t)ps * (uintptr_t)ps;
        if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
    }
}

/* A linear weight of a quantized folder (quantization_config): read with
 * hf_quant, prepared for the kernels and bound as LMC_WFMT_QUANT (fused
 * tensors split into row views per part). *found false: the file holds
 * this linear in float. */
static lmc_status load_quant(struct load_state *ls, const struct lmc_tensor_ref *r, bool *found,
                             lmc_err *err) {
    struct lmc_model *m = ls->m;
    char prefix[sizeof r->name];
    size_t n = strlen(r->name);
    *found = false;
    if (n < 8 || strcmp(r->name + n - 7, ".weight")) return LMC_OK;
    memcpy(prefix, r->name, n - 7);
    prefix[n - 7] = 0;
    struct lmc_qlinear q;
    memset(&q, 0, sizeof q);
    lmc_status s = lmc_qlinear_read(&m->st, prefix, &ls->qc, &q, found, err);
    const char *ap = m->arch->alt_prefix;
    const char *name = prefix;
    if (!s && !*found && ap && !strncmp(prefix, ap, strlen(ap))) {
        name = prefix + strlen(ap);
        s = lmc_qlinear_read(&m->st, name, &ls->qc, &q, found, err);
    }
    if (s || !*found) return s;
    if (q.n != r->rows || q.k != r->cols) {
        lmc_qlinear_free(&q);
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized linear '%s' is (%lld, %lld), expected (%lld, %lld)",
                           name, (long long)q.n, (long long)q.k, (long long)r->rows, (long long)r->cols);
    }
    if (q.method == LMC_QM_BNB4 && q.k % 64) {
        /* the NF4 kernel needs whole blocks of 64 per row: this linear runs
         * dequantized, as a dense F32 weight */
        float *f = lmc_model_own(m, (size_t)(q.n * q.k) * sizeof(float));
        if (!f) {
            lmc_qlinear_free(&q);
            return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
        }
        lmc_qlinear_dequantize(&q, f);
        lmc_qlinear_free(&q);
        mark_prefix(ls, name);
        lmc_weights_bind(&m->w, r, f, LMC_DTYPE_F32);
        m->n_params += r->numel; /* its bytes count with the dense linears */
        return LMC_OK;
    }
    struct lmc_qweight *w = calloc(1, sizeof *w);
    if (!w) {
        lmc_qlinear_free(&q);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
    }
    s = lmc_qlinear_prepare(&q, w, err);
    lmc_qlinear_free(&q);
    if (s) {
        free(w);
        lmc_err_prefix(err, "%s: ", name);
        return s;
    }
    if (m->qheap_on && w->owned && w->data == w->owned) { /* the codes into huge pages */
        size_t nb = (size_t)(w->row_bytes * w->n);
        uint8_t *h = lmc_model_own_huge(m, nb);
        if (h) {
            memcpy(h, w->data, nb);
            free(w->owned);
            w->owned = NULL;
            w->data = h;
        }
    }
    mark_prefix(ls, name);
    if (m->qheap_on) release_prefix(m, name);
    return lmc_model_bind_qweight(m, r, w, err);
}

lmc_status lmc_model_bind_qweight(struct lmc_model *m, const struct lmc_tensor_ref *r, struct lmc_qweight *w,
                                  lmc_err *err) {
    LMC_ASSERT(r->spec->kind == LMC_TK_LIN_W || r->spec->kind == LMC_TK_HEAD || r->spec->kind == LMC_TK_EXPERT_W);
    if (m->n_qw == m->cap_qw) {
        int cap = m->cap_qw ? 2 * m->cap_qw : 64;
        struct lmc_qweight **p = realloc(m->qw, (size_t)cap * sizeof *p);
        if (!p) {
            lmc_qweight_free(w);
            free(w);
            return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", r->name);
        }
        m->qw = p;
        m->cap_qw = cap;
    }
    m->qw[m->n_qw++] = w;
    m->n_params += r->numel;
    m->weight_bytes += lmc_qweight_bytes(w);
    if (r->spec->kind == LMC_TK_HEAD) {
        m->w.head.format = LMC_WFMT_QUANT;
        m->w.head.q = w;
        m->w.head.w = (struct lmc_mat){LMC_DTYPE_F32, r->rows, r->cols, w->data};
        return LMC_OK;
    }
    int parts = r->spec->parts > 1 ? r->spec->parts : 1;
    int64_t pr = r->rows / parts;
    struct lmc_qweight *views = parts > 1 ? lmc_model_own(m, (size_t)parts * sizeof *views) : w;
    if (!views) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", r->name);
    for (int i = 0; i < parts; i++) {
        struct lmc_linear *L = r->spec->kind == LMC_TK_EXPERT_W /* one expert's projection (parts 1) */
                                   ? &m->w.layers[r->layer].experts[r->expert * LMC_X_N + r->spec->slot]
                                   : &m->w.layers[r->layer].lin[r->spec->slot + i];
        if (parts > 1) { /* rows [i*pr, (i+1)*pr) of the fused weight, borrowing its buffers */
            struct lmc_qweight *v = &views[i];
            *v = *w;
            v->n = pr;
            v->data = w->data + i * pr * w->row_bytes;
            if (w->scale) v->scale = w->scale + i * pr * w->n_groups;
            if (w->zero) v->zero = w->zero + i * pr * w->n_groups;
            if (w->absmax) v->absmax = w->absmax + i * pr * (w->k / 64);
            if (w->dq_code) v->dq_code = w->dq_code + i * pr * (w->k / 64), v->dq_b0 = w->dq_b0 + i * pr * (w->k / 64);
            v->dq_owned = NULL;
            v->owned = NULL;
        }
        L->format = LMC_WFMT_QUANT;
        L->q = &views[i];
        L->w = (struct lmc_mat){LMC_DTYPE_F32, pr, r->cols, views[i].data};
    }
    return LMC_OK;
}

static const struct lmc_st_tensor *lookup(const struct lmc_model *m, const char *name) {
    const struct lmc_st_tensor *t = lmc_st_find(&m->st, name);
    const char *ap = m->arch->alt_prefix;
    size_t n = ap ? strlen(ap) : 0;
    if (!t && ap && !strncmp(name, ap, n)) t = lmc_st_find(&m->st, name + n);
    return t;
}

static lmc_status shape_error(const struct lmc_st *st, const struct lmc_st_tensor *t,
                              const struct lmc_tensor_ref *r, lmc_err *err) {
    char got[128] = "[";
    for (int i = 0; i < t->ndim; i++) {
        size_t l = strlen(got);
        snprintf(got + l, sizeof got - l, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    }
    strncat(got, "]", sizeof got - strlen(got) - 1);
    const char *file = st->files[t->file].path;
    if (r->ndim == 1)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld]", file,
                           t->name, got, (long long)r->disk[0]);
    if (r->spec->flags & LMC_TF_CONV)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld, 1, %lld]",
                           file, t->name, got, (long long)r->disk[0], (long long)r->disk[1]);
    return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld, %lld]", file,
                       t->name, got, (long long)r->disk[0], (long long)r->disk[1]);
}

/* Binds one tensor of the spec table: vectors as owned f32, matrices in
 * their use dtype (in place when possible). */
static lmc_status load_one(void *user, const struct lmc_tensor_ref *r, lmc_err *err) {
    struct load_state *ls = user;
    struct lmc_model *m = ls->m;
    if (ls->qc.method != LMC_QM_NONE &&
        (r->spec->kind == LMC_TK_LIN_W || r->spec->kind == LMC_TK_EXPERT_W || r->spec->kind == LMC_TK_HEAD)) {
        /* a quantized lm_head (GPTQ "lm_head": true, lmc quantize --head) binds as the GGUF heads do */
        bool found;
        lmc_status s = load_quant(ls, r, &found, err);
        if (s || found) return s;
    }
    const struct lmc_st_tensor *t = lookup(m, r->name), *src = t, *fused = NULL;
    struct lmc_st_tensor view;
    if (!t && r->spec->kind == LMC_TK_EXPERT_W) { /* a slice of a fused 3-D expert tensor */
        lmc_status s = lmc_arch_moe_fused(&m->st, &m->cfg, r->name, &view, &fused, err);
        if (s) return s;
        if (fused) t = &view, src = fused;
    }
    if (!t) {
        if (!r->required) return LMC_OK;
        if (r->ndim == 1)
            return lmc_err_set(err, LMC_ERR_FORMAT, "missing tensor '%s' (expected shape [%lld])", r->name,
                               (long long)r->disk[0]);
        return lmc_err_set(err, LMC_ERR_FORMAT, "missing tensor '%s' (expected shape [%lld, %lld])",
                           r->name, (long long)r->disk[0], (long long)r->disk[1]);
    }
    bool ok = t->ndim == r->ndim && t->shape[0] == r->disk[0] && (r->ndim == 1 || t->shape[1] == r->disk[1]);
    if (r->spec->flags & LMC_TF_CONV) /* (rows, 1, K) */
        ok = t->ndim == 3 && t->shape[0] == r->disk[0] && t->shape[1] == 1 && t->shape[2] == r->disk[1];
    if (!ok) return shape_error(&m->st, t, r, err);
    if (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16",
                           m->st.files[t->file].path, t->name, lmc_dtype_name(t->dtype));
    ls->used[src - m->st.tensors] = true;
    if (r->spec->kind == LMC_TK_EXPERT_W && ls->xe > 0 && (r->expert < ls->xb || r->expert >= ls->xe))
        return LMC_OK; /* another rank's expert (expert parallelism): never touched */
    if (!in_range(ls, r)) return LMC_OK; /* another pipeline stage's tensor: never touched */
    if (r->ndim == 1 || r->spec->kind == LMC_TK_VEC) { /* vectors: f32 copies */
        float *buf = lmc_model_own(m, (size_t)r->numel * sizeof(float));
        if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "tensor '%s': out of memory", r->name);
        for (int64_t i = 0; i < r->numel; i++) buf[i] = elem_f32(t->data, t->dtype, i);
        lmc_weights_bind(&m->w, r, buf, LMC_DTYPE_F32);
        return LMC_OK;
    }
    bool transpose = (r->spec->flags & LMC_TF_TRANSPOSED) != 0;
    enum lmc_dtype dt = target_dtype(m->wdtype, t->dtype, m->on_device);
    int64_t rows = r->rows, cols = r->cols;
    bool aligned = ((uintptr_t)t->data % (uintptr_t)lmc_dtype_size(t->dtype)) == 0;
    if (!transpose && dt == t->dtype && aligned) {
        lmc_weights_bind(&m->w, r, t->data, dt);
        return LMC_OK;
    }
    size_t bytes = (size_t)r->numel * (size_t)lmc_dtype_size(dt);
    void *buf = lmc_model_own(m, bytes);
    if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "tensor '%s': cannot allocate %zu bytes", r->name, bytes);
    if (!transpose && dt == t->dtype) {
        memcpy(buf, t->data, t->nbytes);
    } else {
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                int64_t src = transpose ? j * rows + i : i * cols + j;
                store_elem(buf, dt, i * cols + j, elem_f32(t->data, t->dtype, src));
            }
    }
    lmc_weights_bind(&m->w, r, buf, dt);
    return LMC_OK;
}

/* Buffers that HF checkpoints carry but that hold no parameters. */
static bool harmless_extra(const char *name) {
    static const char *suffixes[] = {"rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t l = strlen(suffixes[i]);
        if (n >= l && strcmp(name + n - l, suffixes[i]) == 0) return true;
    }
    return false;
}

static size_t mat_bytes(const struct lmc_mat *w) {
    return w->data ? (size_t)w->rows * (size_t)w->cols * (size_t)lmc_dtype_size(w->dtype) : 0;
}

/* Copies one weight buffer into backend memory; false when out of memory. */
static bool place(struct lmc_model *m, const struct lmc_backend *be, const void **data, size_t bytes) {
    if (!*data || !bytes) return true;
    for (int i = 0; i < m->n_placed; i++) /* tied weights: one upload */
        if (m->placed[2 * i + 1] == *data) {
            *data = m->placed[2 * i];
            return true;
        }
    LMC_ASSERT(m->n_placed < m->cap_placed);
    void *dev = be->alloc(be->ctx, bytes);
    if (!dev) return false;
    be->upload(be->ctx, dev, *data, bytes);
    m->placed[2 * m->n_placed] = dev; /* pairs: device copy, host original */
    m->placed[2 * m->n_placed + 1] = (void *)*data;
    m->n_placed++;
    *data = dev;
    return true;
}

/* A quantized linear on a backend that cannot read host memory: its
 * prepared weight copied through the backend's qweight_upload (into the
 * backend's own layout); the linear then points at the copy. */
static lmc_status place_quant(struct lmc_model *m, const struct lmc_backend *be, struct lmc_linear *L,
                              lmc_err *err) {
    if (m->n_qdev == m->cap_qdev) {
        int cap = m->cap_qdev ? 2 * m->cap_qdev : 64;
        struct lmc_qweight **p = realloc(m->qdev, (size_t)cap * sizeof *p);
        if (!p) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
        m->qdev = p;
        m->cap_qdev = cap;
    }
    struct lmc_qweight *d;
    lmc_status s = be->qweight_upload(be->ctx, L->q, &d, err);
    if (s) return s;
    m->qdev[m->n_qdev++] = d;
    L->q = d;
    L->w.data = d->data;
    return LMC_OK;
}

/* Uploads every bound weight (every slot) to a backend that cannot read
 * host memory. */
static lmc_status place_weights(struct lmc_model *m, const struct lmc_backend *be, lmc_err *err) {
    int64_t L = m->cfg.num_layers, C = m->cfg.hidden_size;
    int64_t cap = L * (2 * LMC_L_N + LMC_V_N + 2 * m->cfg.num_experts * LMC_X_N) + 8;
    m->placed = calloc((size_t)(2 * cap), sizeof *m->placed);
    if (!m->placed) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    m->cap_placed = (int)cap;
    m->placed_on = be;
    struct lmc_weights *w = &m->w;
    if (w->tok_emb_q && !w->tok_emb.data && !be->qembed) { /* a quantized table, expanded for this backend */
        const struct lmc_qweight *q = w->tok_emb_q;
        float *f = lmc_model_own(m, (size_t)(q->n * q->k) * sizeof *f);
        if (!f) return lmc_err_set(err, LMC_ERR_OOM, "token embedding: out of memory");
        lmc_qweight_dequant_rows(q, 0, q->n, f);
        w->tok_emb.data = f;
    }
    if (w->head.format == LMC_WFMT_QUANT) { /* a quantized head (lm_head in the groups, a GGUF output) */
        lmc_status qs = place_quant(m, be, &w->head, err);
        if (qs) return qs;
    }
    bool ok = place(m, be, &w->tok_emb.data, mat_bytes(&w->tok_emb)) &&
              place(m, be, &w->pos_emb.data, mat_bytes(&w->pos_emb)) &&
              (w->head.format == LMC_WFMT_QUANT || place(m, be, &w->head.w.data, mat_bytes(&w->head.w))) &&
              place(m, be, (const void **)&w->norm_f, (size_t)C * 4) &&
              place(m, be, (const void **)&w->norm_f_b, (size_t)C * 4);
    for (int64_t l = 0; ok && l < L; l++) {
        struct lmc_block_w *y = &w->layers[l];
        for (int i = 0; ok && i < LMC_L_N; i++) {
            struct lmc_linear *lin = &y->lin[i];
            if (lin->format == LMC_WFMT_QUANT) {
                lmc_status qs = place_quant(m, be, lin, err);
                if (qs) return qs;
            }
            ok = (lin->format == LMC_WFMT_QUANT || place(m, be, &lin->w.data, mat_bytes(&lin->w))) &&
                 place(m, be, (const void **)&lin->bias, (size_t)lin->w.rows * 4);
        }
        for (int i = 0; ok && i < LMC_V_N; i++)
            ok = place(m, be, (const void **)&y->vec[i], (size_t)y->vec_n[i] * 4);
        for (int64_t i = 0; ok && y->experts && i < m->cfg.num_experts * LMC_X_N; i++) {
            struct lmc_linear *lin = &y->experts[i]; /* unbound (another rank's): data NULL, skipped */
            if (lin->format == LMC_WFMT_QUANT) {
                lmc_status qs = place_quant(m, be, lin, err);
                if (qs) return qs;
            }
            ok = (lin->format == LMC_WFMT_QUANT || place(m, be, &lin->w.data, mat_bytes(&lin->w))) &&
                 place(m, be, (const void **)&lin->bias, (size_t)lin->w.rows * 4);
        }
    }
    if (!ok)
        return lmc_err_set(err, LMC_ERR_OOM, "not enough %s memory for the weights (%zu bytes)",
                           be->name, m->weight_bytes);
    return LMC_OK;
}

static lmc_status read_quant_config(const char *dir, struct lmc_quant_config *qc, lmc_err *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    char *text = NULL;
    size_t len = 0;
    lmc_status s = lmc_file_read(path, (size_t)64 << 20, &text, &len, err);
    if (!s) s = lmc_quant_config_parse(text, len, path, qc, err);
    free(text);
    return s;
}

lmc_status lmc_model_load(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                          lmc_err *err) {
    return lmc_model_load_experts(m, dir, opts, 0, 0, err);
}

static lmc_status load_range(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                             int64_t expert_begin, int64_t expert_end, int64_t lb, int64_t le, lmc_err *err);

lmc_status lmc_model_load_experts(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                                  int64_t expert_begin, int64_t expert_end, lmc_err *err) {
    return load_range(m, dir, opts, expert_begin, expert_end, 0, 0, err);
}

lmc_status lmc_model_load_layers(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                                 int64_t layer_begin, int64_t layer_end, lmc_err *err) {
    if (layer_end <= layer_begin || layer_begin < 0) {
        memset(m, 0, sizeof *m);
        return lmc_err_set(err, LMC_ERR_ARG, "%s: layer range [%lld, %lld) is empty", dir, (long long)layer_begin,
                           (long long)layer_end);
    }
    return load_range(m, dir, opts, 0, 0, layer_begin, layer_end, err);
}

static lmc_status load_range(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                             int64_t expert_begin, int64_t expert_end, int64_t lb, int64_t le, lmc_err *err) {
    memset(m, 0, sizeof *m);
    m->wdtype = opts ? opts->wdtype : LMC_WDTYPE_AUTO;
    m->on_device = opts && opts->be && !opts->be->host_memory;
    m->qheap_on = opts && opts->be && opts->be->host_memory;
    if (le && lmc_gguf_is_file(dir))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: a layer range (pipeline stage) loads safetensors folders, "
                           "not GGUF files", dir);
    if (lmc_gguf_is_file(dir)) { /* -m FILE.gguf (weights_gguf.c) */
        lmc_status s = lmc_model_load_gguf(m, dir, err);
        if (!s) s = lmc_model_load_finish(m, opts, err);
        if (s) {
            lmc_err_prefix(err, "loading %s: ", dir);
            lmc_model_free(m);
        }
        return s;
    }
    lmc_status s = lmc_config_load(&m->cfg, dir, err);
    if (s) return s;
    m->arch = lmc_arch_of(&m->cfg);
    if ((s = lmc_config_check_sizes(&m->cfg, err)) || (s = m->arch->check(&m->cfg, err))) {
        lmc_err_prefix(err, "loading %s: ", dir);
        return s;
    }
    m->rot_dim = lmc_arch_rot_dim(m->arch, &m->cfg);
    s = lmc_st_open_dir(&m->st, dir, err);
    if (s) return s;
    bool *used = calloc((size_t)m->st.n_tensors + 1, 1);
    m->w.layers = lmc_weights_layers_alloc(&m->cfg);
    if (!used || !m->w.layers) {
        free(used);
        lmc_model_free(m);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    }
    struct load_state ls = {m, used, {0}, expert_begin, expert_end, lb, le, true};
    if (!s) s = read_quant_config(dir, &ls.qc, err);
    if (!s && le > m->cfg.num_layers)
        s = lmc_err_set(err, LMC_ERR_ARG, "%s: layer range [%lld, %lld) is not within the model's %lld layers", dir,
                        (long long)lb, (long long)le, (long long)m->cfg.num_layers);
    if (!s && le && ls.qc.method != LMC_QM_NONE)
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: a layer range (pipeline stage) loads float folders, not "
                        "quantized ones", dir);
    if (!s && le) s = lmc_arch_walk(m->arch, &m->cfg, find_head, &ls, err);
    m->quant_method = (int)ls.qc.method;
    if (!s && ls.qc.method != LMC_QM_NONE && m->on_device && (!opts->be->qweight_upload || !opts->be->qmatmul))
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: quantized weights: the %s backend has no quantized kernels",
                        dir, opts->be->name);
    if (!s && m->qheap_on && ls.qc.method != LMC_QM_NONE) { /* room for every quantized linear in one chunk */
        size_t total = 0;
        for (int64_t i = 0; i < m->st.n_tensors; i++) total += m->st.tensors[i].nbytes + 64;
        lmc_model_qheap_reserve(m, total);
    }
    if (!s) s = lmc_arch_walk(m->arch, &m->cfg, load_one, &ls, err);
    if (!s && !m->w.head.w.data) m->w.head.w = m->w.tok_emb; /* tied */
    for (int64_t i = 0; !s && i < m->st.n_tensors; i++) {
        const struct lmc_st_tensor *t = &m->st.tensors[i];
        if (used[i]) m->n_params += t->numel;
        else if (!harmless_extra(t->name))
            s = lmc_err_set(err, LMC_ERR_FORMAT,
                            "%s: unexpected tensor '%s' (not part of a %s model with %lld layers)",
                            m->st.files[t->file].path, t->name, m->cfg.model_type,
                            (long long)m->cfg.num_layers);
    }
    free(used);
    if (!s) s = lmc_model_load_finish(m, opts, err);
    if (s) {
        lmc_err_prefix(err, "loading %s: ", dir);
        lmc_model_free(m);
        return s;
    }
    return LMC_OK;
}

lmc_status lmc_model_load_finish(struct lmc_model *m, const struct lmc_model_opts *opts, lmc_err *err) {
    size_t wb = mat_bytes(&m->w.tok_emb) + mat_bytes(&m->w.pos_emb);
    if (m->w.head.w.data != m->w.tok_emb.data && m->w.head.format == LMC_WFMT_DENSE) wb += mat_bytes(&m->w.head.w);
    for (int64_t l = 0; l < m->cfg.num_layers; l++)
        for (int i = 0; i < LMC_L_N; i++) {
            /* views of one fused tensor (parts) count once: by distinct data */
            const struct lmc_mat *w = &m->w.layers[l].lin[i].w;
            if (m->w.layers[l].lin[i].format == LMC_WFMT_DENSE) wb += mat_bytes(w);
        }
    for (int64_t l = 0; l < m->cfg.num_layers; l++)
        for (int64_t i = 0; m->w.layers[l].experts && i < m->cfg.num_experts * LMC_X_N; i++)
            wb += mat_bytes(&m->w.layers[l].experts[i].w);
    m->weight_bytes += wb; /* quantized linears were counted at load */
    if (opts && opts->be) { /* the ops this model's blocks need for inference */
        const struct lmc_backend *be = opts->be;
        const struct lmc_architecture *a = m->arch;
        const char *op = a->norm->missing(be, false);
        if (!op) op = a->mixer->missing(be, &m->cfg, false);
        if (!op && a->ffn) op = a->ffn->missing(be, &m->cfg, false);
        if (op)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "backend %s has no %s op (needed by %s models)",
                               be->name ? be->name : "?", op, m->cfg.model_type);
    }
    if (opts && opts->be && !opts->be->host_memory) {
        if (m->n_qw && (!opts->be->qweight_upload || !opts->be->qmatmul))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "quantized weights: the %s backend has no quantized kernels",
                               opts->be->name);
        return place_weights(m, opts->be, err);
    }
    if (opts && opts->be && opts->be->host_memory) lmc_model_weights_huge(m); /* decode streams them from THP */
    return LMC_OK;
}

void lmc_model_free(struct lmc_model *m) {
    for (int i = 0; i < m->n_qw; i++) {
        lmc_qweight_free(m->qw[i]);
        free(m->qw[i]);
    }
    free(m->qw);
    for (int i = 0; i < m->n_qdev; i++) m->placed_on->qweight_free(m->placed_on->ctx, m->qdev[i]);
    free(m->qdev);
    for (int i = 0; i < m->n_placed; i++) m->placed_on->free(m->placed_on->ctx, m->placed[2 * i]);
    free(m->placed);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->w.layers);
    lmc_st_free(&m->st);
    if (m->gguf) lmc_gguf_free(m->gguf);
    free(m->gguf);
    memset(m, 0, sizeof *m);
}

int64_t lmc_model_kv_floats_per_token(const struct lmc_config *c) {
    const struct lmc_architecture *a = lmc_arch_of(c);
    return c->num_layers * (a->mixer->kv_row(c) + (a->ffn ? a->ffn->kv_row(c) : 0));
}

int64_t lmc_model_seq_blocks(const struct lmc_model *m, int64_t n_tokens, int64_t block_size) {
    if (lmc_model_kv_floats_per_token(&m->cfg) == 0) return 0;
    return (n_tokens + block_size - 1) / block_size;
}

size_t lmc_model_seq_slot_bytes(const struct lmc_model *m) {
    const struct lmc_config *c = &m->cfg;
    return (size_t)c->num_layers *
           (size_t)(m->arch->mixer->slot_bytes(c) + (m->arch->ffn ? m->arch->ffn->slot_bytes(c) : 0));
}
