/* weights.c — model loading shared by all architectures: opens config and
 * safetensors, binds named tensors with shape/dtype checks (converting or
 * transposing into owned buffers only when needed), rejects missing and
 * unexpected tensors, and frees it all. */
#include "model/model.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bookkeeping that only lives during load: which tensors were bound. */
struct bind_state {
    bool *used;
};

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

static void mark_used(struct lmc_model *m, const struct lmc_st_tensor *t) {
    struct bind_state *bs = (struct bind_state *)m->owned[0];
    bs->used[t - m->st.tensors] = true;
}

static const struct lmc_st_tensor *find_tensor(struct lmc_model *m, const char *name, int ndim,
                                               const int64_t *shape, lmc_err *err) {
    const struct lmc_st_tensor *t = lmc_st_find(&m->st, name);
    if (!t) {
        if (ndim == 1)
            lmc_err_set(err, LMC_ERR_FORMAT, "missing tensor '%s' (expected shape [%lld])", name,
                        (long long)shape[0]);
        else
            lmc_err_set(err, LMC_ERR_FORMAT, "missing tensor '%s' (expected shape [%lld, %lld])",
                        name, (long long)shape[0], (long long)shape[1]);
        return NULL;
    }
    const char *file = m->st.files[t->file].path;
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "[";
        for (int i = 0; i < t->ndim; i++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        }
        strncat(got, "]", sizeof got - strlen(got) - 1);
        if (ndim == 1)
            lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld]", file,
                        name, got, (long long)shape[0]);
        else
            lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld, %lld]",
                        file, name, got, (long long)shape[0], (long long)shape[1]);
        return NULL;
    }
    if (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16) {
        lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16",
                    file, name, lmc_dtype_name(t->dtype));
        return NULL;
    }
    mark_used(m, t);
    return t;
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

lmc_status lmc_model_mat(struct lmc_model *m, const char *name, int64_t rows, int64_t cols,
                         bool transpose, struct lmc_mat *out, lmc_err *err) {
    int64_t shape[2] = {transpose ? cols : rows, transpose ? rows : cols};
    const struct lmc_st_tensor *t = find_tensor(m, name, 2, shape, err);
    if (!t) return err->status;
    enum lmc_dtype dt = target_dtype(m->wdtype, t->dtype, m->on_device);
    int es = lmc_dtype_size(dt);
    bool aligned = ((uintptr_t)t->data % (uintptr_t)lmc_dtype_size(t->dtype)) == 0;
    out->rows = rows;
    out->cols = cols;
    out->dtype = dt;
    if (!transpose && dt == t->dtype && aligned) {
        out->data = t->data;
        return LMC_OK;
    }
    void *buf = lmc_model_own(m, (size_t)(rows * cols * es));
    if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "tensor '%s': cannot allocate %lld bytes", name,
                                 (long long)(rows * cols * es));
    if (!transpose && dt == t->dtype) {
        memcpy(buf, t->data, t->nbytes);
    } else {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                int64_t src = transpose ? c * rows + r : r * cols + c;
                store_elem(buf, dt, r * cols + c, elem_f32(t->data, t->dtype, src));
            }
    }
    out->data = buf;
    return LMC_OK;
}

lmc_status lmc_model_vec(struct lmc_model *m, const char *name, int64_t n, const float **out,
                         lmc_err *err) {
    int64_t shape[1] = {n};
    const struct lmc_st_tensor *t = find_tensor(m, name, 1, shape, err);
    if (!t) return err->status;
    float *buf = lmc_model_own(m, (size_t)n * sizeof(float));
    if (!buf) return lmc_err_set(err, LMC_ERR_OOM, "tensor '%s': out of memory", name);
    for (int64_t i = 0; i < n; i++) buf[i] = elem_f32(t->data, t->dtype, i);
    *out = buf;
    return LMC_OK;
}

lmc_status lmc_model_vec_opt(struct lmc_model *m, const char *name, int64_t n, const float **out,
                             lmc_err *err) {
    *out = NULL;
    if (!lmc_st_find(&m->st, name)) return LMC_OK;
    return lmc_model_vec(m, name, n, out, err);
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
    return w->data ? (size_t)(w->rows * w->cols * lmc_dtype_size(w->dtype)) : 0;
}

/* Copies one weight buffer into backend memory; false when out of memory. */
static bool place(struct lmc_model *m, const struct lmc_backend *be, const void **data, size_t bytes) {
    if (!*data || !bytes) return true;
    for (int i = 0; i < m->n_placed; i++) /* tied weights: one upload */
        if (m->placed[2 * i + 1] == *data) {
            *data = m->placed[2 * i];
            return true;
        }
    void *dev = be->alloc(be->ctx, bytes);
    if (!dev) return false;
    be->upload(be->ctx, dev, *data, bytes);
    m->placed[2 * m->n_placed] = dev; /* pairs: device copy, host original */
    m->placed[2 * m->n_placed + 1] = (void *)*data;
    m->n_placed++;
    *data = dev;
    return true;
}

/* Uploads every weight to a backend that cannot read host memory. */
static lmc_status place_weights(struct lmc_model *m, const struct lmc_backend *be, lmc_err *err) {
    int64_t L = m->cfg.num_layers;
    m->placed = calloc((size_t)(2 * (L * 19 + 8)), sizeof *m->placed);
    if (!m->placed) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    m->placed_on = be;
    int64_t C = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    int64_t qd = m->cfg.num_heads * m->cfg.head_dim, kvd = m->cfg.num_kv_heads * m->cfg.head_dim;
    bool ok = place(m, be, &m->tok_emb.data, mat_bytes(&m->tok_emb)) &&
              place(m, be, &m->pos_emb.data, mat_bytes(&m->pos_emb)) &&
              place(m, be, &m->lm_head.data, mat_bytes(&m->lm_head)) &&
              place(m, be, (const void **)&m->norm_f_w, (size_t)C * 4) &&
              place(m, be, (const void **)&m->norm_f_b, (size_t)C * 4);
    for (int64_t l = 0; ok && l < L; l++) {
        struct lmc_layer *y = &m->layers[l];
        struct lmc_mat *mats[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; ok && i < sizeof mats / sizeof *mats; i++)
            ok = place(m, be, &mats[i]->data, mat_bytes(mats[i]));
        const float **vecs[] = {&y->norm1_w, &y->norm1_b, &y->norm2_w, &y->norm2_b, &y->bq, &y->bk,
                                &y->bv, &y->bo, &y->b_gate, &y->b_up, &y->b_down};
        int64_t lens[] = {C, C, C, C, qd, kvd, kvd, C, I, I, C};
        for (size_t i = 0; ok && i < sizeof vecs / sizeof *vecs; i++)
            ok = place(m, be, (const void **)vecs[i], (size_t)lens[i] * 4);
    }
    if (!ok)
        return lmc_err_set(err, LMC_ERR_OOM, "not enough %s memory for the weights (%zu bytes)",
                           be->name, m->weight_bytes);
    return LMC_OK;
}

lmc_status lmc_model_load(struct lmc_model *m, const char *dir, const struct lmc_model_opts *opts,
                          lmc_err *err) {
    memset(m, 0, sizeof *m);
    m->wdtype = opts ? opts->wdtype : LMC_WDTYPE_AUTO;
    m->on_device = opts && opts->be && !opts->be->host_memory;
    lmc_status s = lmc_config_load(&m->cfg, dir, err);
    if (s) return s;
    s = lmc_st_open_dir(&m->st, dir, err);
    if (s) return s;
    /* owned[0] is the bind bookkeeping, freed with the rest */
    struct bind_state *bs = lmc_model_own(m, sizeof *bs);
    bool *used = calloc((size_t)m->st.n_tensors + 1, 1);
    if (!bs || !used) {
        free(used);
        lmc_model_free(m);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    }
    bs->used = used;
    m->layers = calloc((size_t)m->cfg.num_layers, sizeof *m->layers);
    if (!m->layers) s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    else if (m->cfg.arch == LMC_ARCH_GPT2) s = lmc_gpt2_bind(m, err);
    else s = lmc_llama_bind(m, err);
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
    bs->used = NULL;
    if (s) {
        lmc_err_prefix(err, "loading %s: ", dir);
        lmc_model_free(m);
        return s;
    }
    size_t wb = mat_bytes(&m->tok_emb) + mat_bytes(&m->pos_emb);
    if (m->lm_head.data != m->tok_emb.data) wb += mat_bytes(&m->lm_head);
    for (int64_t l = 0; l < m->cfg.num_layers; l++) {
        const struct lmc_layer *L = &m->layers[l];
        wb += mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) + mat_bytes(&L->wo) +
              mat_bytes(&L->w_gate) + mat_bytes(&L->w_up) + mat_bytes(&L->w_down);
    }
    m->weight_bytes = wb;
    if (opts && opts->be && !opts->be->host_memory && (s = place_weights(m, opts->be, err))) {
        lmc_err_prefix(err, "loading %s: ", dir);
        lmc_model_free(m);
        return s;
    }
    return LMC_OK;
}

void lmc_model_free(struct lmc_model *m) {
    for (int i = 0; i < m->n_placed; i++) m->placed_on->free(m->placed_on->ctx, m->placed[2 * i]);
    free(m->placed);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    lmc_st_free(&m->st);
    memset(m, 0, sizeof *m);
}
