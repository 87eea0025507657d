/* mamba_model.c — a Mamba / Mamba-2 model from a Hugging Face folder onto a
 * backend (every tensor's dtype and shape checked against the config), its
 * per-sequence recurrent state pool, the mixer forward (prefill through
 * conv1d_causal + ssm_scan / ssd_chunk, decode through the step ops) and
 * the whole-model forward to logits. ssm/mamba.h has the recipe. */
#include "ssm/mamba.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmc_status own(struct lmc_mamba_model *m, void *p, lmc_err *err) {
    if (m->n_owned == m->cap_owned) {
        int64_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
        m->owned = o, m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return LMC_OK;
}

/* n bytes of host data into backend memory (the mapping itself when the
 * backend reads host memory and the data is 4-byte aligned). */
static lmc_status to_backend(struct lmc_mamba_model *m, const void *src, size_t n, const void **out,
                             lmc_err *err) {
    if (m->be->host_memory && ((uintptr_t)src & 3) == 0) {
        *out = src;
        return LMC_OK;
    }
    void *p = m->be->alloc(m->be->ctx, n ? n : 4);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory (%zu bytes)", n);
    lmc_status s = own(m, p, err);
    if (s) {
        m->be->free(m->be->ctx, p);
        return s;
    }
    m->be->upload(m->be->ctx, p, src, n);
    *out = p;
    return LMC_OK;
}

/* The tensor `name` with shape (d0[, d1[, d2]]) (ndim dims; a middle 1
 * in the file's shape is allowed for conv1d's (C, 1, K)); F32, F16 or BF16.
 * NULL when absent and optional. */
static lmc_status get_tensor(struct lmc_mamba_model *m, const char *name, int ndim,
                             const int64_t *shape, bool required, const struct lmc_st_tensor **out,
                             lmc_err *err) {
    const struct lmc_st_tensor *t = lmc_st_find(&m->st, name);
    *out = NULL;
    if (!t) {
        if (!required) return LMC_OK;
        return lmc_err_set(err, LMC_ERR_FORMAT, "model.safetensors: missing tensor '%s'", name);
    }
    int64_t got[LMC_ST_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < t->ndim; i++)
        if (!(ndim == 2 && t->ndim == 3 && i == 1 && t->shape[1] == 1)) got[nd++] = t->shape[i];
    bool ok = nd == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = got[i] == shape[i];
    if (!ok) {
        char want[96] = "", have[96] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        return lmc_err_set(err, LMC_ERR_FORMAT, "model.safetensors: tensor '%s' has shape [%s], expected [%s]",
                           name, have, want);
    }
    if (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "model.safetensors: tensor '%s' is %s, expected F32, F16 or BF16",
                           name, lmc_dtype_name(t->dtype));
    *out = t;
    return LMC_OK;
}

/* t's elements as F32 in a malloc'd buffer (the caller frees) */
static float *to_f32(const struct lmc_st_tensor *t) {
    float *f = malloc((size_t)t->numel * sizeof *f);
    if (!f) return NULL;
    const char *b = t->data; /* the file's offsets need not be aligned: read through memcpy */
    for (int64_t i = 0; i < t->numel; i++) {
        uint16_t h;
        if (t->dtype == LMC_DTYPE_F32) {
            memcpy(&f[i], b + 4 * i, 4);
            continue;
        }
        memcpy(&h, b + 2 * i, 2);
        f[i] = t->dtype == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
    }
    return f;
}

/* A vector (norm weights, conv, A_log, D, biases): F32 in backend memory
 * (F16/BF16 converted at load). */
static lmc_status get_vec(struct lmc_mamba_model *m, const char *name, int ndim, const int64_t *shape,
                          bool required, const float **out, lmc_err *err) {
    const struct lmc_st_tensor *t;
    lmc_status s = get_tensor(m, name, ndim, shape, required, &t, err);
    *out = NULL;
    if (s || !t) return s;
    const void *p;
    if (t->dtype == LMC_DTYPE_F32) {
        if ((s = to_backend(m, t->data, t->nbytes, &p, err))) return s;
    } else {
        float *f = to_f32(t);
        if (!f) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
        void *q = m->be->alloc(m->be->ctx, (size_t)t->numel * 4);
        if (!q || (s = own(m, q, err))) {
            if (q) m->be->free(m->be->ctx, q);
            free(f);
            return s ? s : lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory");
        }
        m->be->upload(m->be->ctx, q, f, (size_t)t->numel * 4);
        free(f);
        p = q;
    }
    *out = p;
    return LMC_OK;
}

static lmc_status get_mat(struct lmc_mamba_model *m, const char *name, int64_t rows, int64_t cols,
                          bool required, struct lmc_mat *out, lmc_err *err) {
    const struct lmc_st_tensor *t;
    const int64_t shape[2] = {rows, cols};
    lmc_status s = get_tensor(m, name, 2, shape, required, &t, err);
    memset(out, 0, sizeof *out);
    if (s || !t) return s;
    const void *p;
    if ((s = to_backend(m, t->data, t->nbytes, &p, err))) return s;
    *out = (struct lmc_mat){t->dtype, rows, cols, p};
    return LMC_OK;
}

/* dt_proj.weight (D, R) widened to (D, R + 2N) with zero columns for B|C. */
static lmc_status make_dt_ext(struct lmc_mamba_model *m, const char *name, struct lmc_mat *out,
                              lmc_err *err) {
    const struct lmc_mamba_config *c = &m->cfg;
    const int64_t D = c->d_inner, R = c->time_step_rank, W = c->xproj_dim, shape[2] = {D, R};
    const struct lmc_st_tensor *t;
    lmc_status s = get_tensor(m, name, 2, shape, true, &t, err);
    if (s) return s;
    float *ext = calloc((size_t)(D * W), sizeof *ext), *src = to_f32(t);
    if (!ext || !src) {
        free(ext), free(src);
        return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
    }
    for (int64_t d = 0; d < D; d++) memcpy(ext + d * W, src + d * R, (size_t)R * 4);
    free(src);
    void *p = m->be->alloc(m->be->ctx, (size_t)(D * W) * 4);
    if (!p || (s = own(m, p, err))) {
        if (p) m->be->free(m->be->ctx, p);
        free(ext);
        return s ? s : lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory");
    }
    m->be->upload(m->be->ctx, p, ext, (size_t)(D * W) * 4);
    free(ext);
    *out = (struct lmc_mat){LMC_DTYPE_F32, D, W, p};
    return LMC_OK;
}

static lmc_status load_layer(struct lmc_mamba_model *m, int64_t l, lmc_err *err) {
    const struct lmc_mamba_config *c = &m->cfg;
    struct lmc_mamba_layer *L = &m->layers[l];
    const int64_t H = c->hidden_size, D = c->d_inner, N = c->state_size, K = c->conv_kernel;
    const int64_t hidden[1] = {H}, inner[1] = {D}, conv[2] = {c->conv_dim, K}, convb[1] = {c->conv_dim};
    const int64_t heads[1] = {c->num_heads}, aw[2] = {D, N}, inb[1] = {c->in_proj_dim};
    char p[160], n[224];
    snprintf(p, sizeof p, "backbone.layers.%lld.", (long long)l);
#define NAME(s) (snprintf(n, sizeof n, "%s%s", p, s), n)
    lmc_status s;
    if ((s = get_vec(m, NAME("norm.weight"), 1, hidden, true, &L->norm_w, err)) ||
        (s = get_mat(m, NAME("mixer.in_proj.weight"), c->in_proj_dim, H, true, &L->in_proj, err)) ||
        (s = get_vec(m, NAME("mixer.in_proj.bias"), 1, inb, c->use_bias, &L->in_proj_b, err)) ||
        (s = get_vec(m, NAME("mixer.conv1d.weight"), 2, conv, true, &L->conv_w, err)) ||
        (s = get_vec(m, NAME("mixer.conv1d.bias"), 1, convb, c->use_conv_bias, &L->conv_b, err)) ||
        (s = get_mat(m, NAME("mixer.out_proj.weight"), H, D, true, &L->out_proj, err)) ||
        (s = get_vec(m, NAME("mixer.out_proj.bias"), 1, hidden, c->use_bias, &L->out_proj_b, err)))
        return s;
    if (c->kind == LMC_MAMBA_1) {
        if ((s = get_mat(m, NAME("mixer.x_proj.weight"), c->xproj_dim, D, true, &L->x_proj, err)) ||
            (s = make_dt_ext(m, NAME("mixer.dt_proj.weight"), &L->dt_proj_ext, err)) ||
            (s = get_vec(m, NAME("mixer.dt_proj.bias"), 1, inner, true, &L->dt_bias, err)) ||
            (s = get_vec(m, NAME("mixer.A_log"), 2, aw, true, &L->A_log, err)) ||
            (s = get_vec(m, NAME("mixer.D"), 1, inner, true, &L->Dskip, err)))
            return s;
    } else {
        if ((s = get_vec(m, NAME("mixer.dt_bias"), 1, heads, true, &L->dt_bias, err)) ||
            (s = get_vec(m, NAME("mixer.A_log"), 1, heads, true, &L->A_log, err)) ||
            (s = get_vec(m, NAME("mixer.D"), 1, heads, true, &L->Dskip, err)) ||
            (s = get_vec(m, NAME("mixer.norm.weight"), 1, inner, true, &L->gnorm_w, err)))
            return s;
    }
#undef NAME
    return LMC_OK;
}

lmc_status lmc_mamba_load(struct lmc_mamba_model *m, const char *dir, struct lmc_backend *be,
                          lmc_err *err) {
    memset(m, 0, sizeof *m);
    m->be = be;
    lmc_status s = lmc_mamba_config_load(&m->cfg, dir, err);
    if (s) return s;
    if ((s = lmc_st_open_dir(&m->st, dir, err))) return s;
    const struct lmc_mamba_config *c = &m->cfg;
    const int64_t hidden[1] = {c->hidden_size};
    m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    if (!m->layers) s = lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
    if (!s) s = get_mat(m, "backbone.embeddings.weight", c->vocab_size, c->hidden_size, true, &m->embed, err);
    if (!s) s = get_vec(m, "backbone.norm_f.weight", 1, hidden, true, &m->norm_f, err);
    if (!s) s = get_mat(m, "lm_head.weight", c->vocab_size, c->hidden_size, !c->tie_word_embeddings,
                        &m->lm_head, err);
    if (!s && (c->tie_word_embeddings || !m->lm_head.data)) m->lm_head = m->embed;
    for (int64_t l = 0; !s && l < c->num_layers; l++) s = load_layer(m, l, err);
    if (s) lmc_mamba_free(m);
    return s;
}

void lmc_mamba_free(struct lmc_mamba_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_owned; i++) m->be->free(m->be->ctx, m->owned[i]);
    free(m->owned);
    free(m->layers);
    lmc_st_free(&m->st);
    memset(m, 0, sizeof *m);
}

/* ---- recurrent state ---- */
lmc_status lmc_mamba_state_init(struct lmc_mamba_state *s, const struct lmc_mamba_model *m,
                                int64_t n_slots, lmc_err *err) {
    memset(s, 0, sizeof *s);
    const struct lmc_mamba_config *c = &m->cfg;
    s->n_slots = n_slots, s->conv_floats = lmc_mamba_conv_state_floats(c);
    s->ssm_floats = lmc_mamba_ssm_state_floats(c);
    if (n_slots < 1 || n_slots > ((int64_t)1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "mamba: %lld state slots (expected 1..2^24)", (long long)n_slots);
    size_t nc = (size_t)(c->num_layers * n_slots) * (size_t)s->conv_floats * 4;
    size_t ns = (size_t)(c->num_layers * n_slots) * (size_t)s->ssm_floats * 4;
    if (ns / 4 / (size_t)n_slots / (size_t)c->num_layers != (size_t)s->ssm_floats)
        return lmc_err_set(err, LMC_ERR_OOM, "mamba: state of %lld slots is too large", (long long)n_slots);
    s->conv = m->be->alloc(m->be->ctx, nc ? nc : 4);
    s->ssm = m->be->alloc(m->be->ctx, ns);
    if (!s->conv || !s->ssm) {
        lmc_mamba_state_free(s, m);
        return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory for %zu state bytes", nc + ns);
    }
    m->be->zero(m->be->ctx, s->conv, nc ? nc : 4);
    m->be->zero(m->be->ctx, s->ssm, ns);
    return LMC_OK;
}

void lmc_mamba_state_reset(struct lmc_mamba_state *s, const struct lmc_mamba_model *m, int64_t slot) {
    LMC_ASSERT(slot >= 0 && slot < s->n_slots);
    for (int64_t l = 0; l < m->cfg.num_layers; l++) {
        if (s->conv_floats)
            m->be->zero(m->be->ctx, s->conv + (l * s->n_slots + slot) * s->conv_floats,
                        (size_t)s->conv_floats * 4);
        m->be->zero(m->be->ctx, s->ssm + (l * s->n_slots + slot) * s->ssm_floats,
                    (size_t)s->ssm_floats * 4);
    }
}

lmc_status lmc_mamba_state_copy(struct lmc_mamba_state *s, const struct lmc_mamba_model *m,
                                int64_t dst, int64_t src, lmc_err *err) {
    if (dst < 0 || src < 0 || dst >= s->n_slots || src >= s->n_slots)
        return lmc_err_set(err, LMC_ERR_ARG, "mamba: state slots %lld -> %lld out of range (%lld slots)",
                           (long long)src, (long long)dst, (long long)s->n_slots);
    if (dst == src) return LMC_OK;
    const int64_t big = LMC_MAX(s->conv_floats, s->ssm_floats);
    float *tmp = malloc((size_t)(big > 0 ? big : 1) * sizeof *tmp);
    if (!tmp) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
    struct lmc_backend *be = m->be;
    for (int64_t l = 0; l < m->cfg.num_layers; l++) {
        if (s->conv_floats) {
            be->download(be->ctx, tmp, s->conv + (l * s->n_slots + src) * s->conv_floats, (size_t)s->conv_floats * 4);
            be->sync(be->ctx);
            be->upload(be->ctx, s->conv + (l * s->n_slots + dst) * s->conv_floats, tmp, (size_t)s->conv_floats * 4);
            be->sync(be->ctx);
        }
        be->download(be->ctx, tmp, s->ssm + (l * s->n_slots + src) * s->ssm_floats, (size_t)s->ssm_floats * 4);
        be->sync(be->ctx);
        be->upload(be->ctx, s->ssm + (l * s->n_slots + dst) * s->ssm_floats, tmp, (size_t)s->ssm_floats * 4);
        be->sync(be->ctx);
    }
    free(tmp);
    return LMC_OK;
}

void lmc_mamba_state_free(struct lmc_mamba_state *s, const struct lmc_mamba_model *m) {
    if (s->conv) m->be->free(m->be->ctx, s->conv);
    if (s->ssm) m->be->free(m->be->ctx, s->ssm);
    memset(s, 0, sizeof *s);
}

/* ---- forward ---- */
int64_t lmc_mamba_mixer_ws_floats(const struct lmc_mamba_config *c, int64_t rows) {
    const int64_t D = c->d_inner, H = c->hidden_size;
    if (c->kind == LMC_MAMBA_1) return rows * (5 * D + c->xproj_dim + H);
    return rows * (c->in_proj_dim + c->conv_dim + D + H);
}

/* out = res + out_proj(y) */
static void out_proj_add(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                         const struct lmc_mamba_layer *L, float *out, const float *res, const float *y,
                         int64_t M, float *tmp) {
    if (be->matmul_add && out == res) {
        be->matmul_add(be->ctx, out, y, M, &L->out_proj, L->out_proj_b);
        return;
    }
    be->matmul(be->ctx, tmp, y, M, &L->out_proj, L->out_proj_b);
    be->add(be->ctx, out, res, tmp, M * c->hidden_size);
}

void lmc_mamba_mixer_forward(const struct lmc_mamba_model *m, int64_t l, float *out,
                             const float *h, struct lmc_mamba_state *st, const int32_t *slots,
                             int64_t B, int64_t T, float *ws) {
    float *cst = st ? st->conv + l * st->n_slots * st->conv_floats : NULL;
    float *sst = st ? st->ssm + l * st->n_slots * st->ssm_floats : NULL;
    lmc_mamba_mix(m->be, &m->cfg, &m->layers[l], out, out, h, cst, sst, slots, B, T, ws);
}

void lmc_mamba_mix(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                   const struct lmc_mamba_layer *L, float *out, const float *res, const float *h,
                   float *cst, float *sst, const int32_t *slots, int64_t B, int64_t T, float *ws) {
    const int64_t M = B * T, D = c->d_inner, N = c->state_size, K = c->conv_kernel;
    const bool step = sst && T == 1;
    float *proj = ws;
    be->matmul(be->ctx, proj, h, M, &L->in_proj, L->in_proj_b);
    if (c->kind == LMC_MAMBA_1) {
        const int64_t W = c->xproj_dim, R = c->time_step_rank;
        float *u = proj + M * 2 * D, *xdbl = u + M * D, *delta = xdbl + M * W, *y = delta + M * D;
        float *tmp = y + M * D;
        if (step) be->conv1d_causal_step(be->ctx, u, proj, 2 * D, L->conv_w, L->conv_b, cst, slots, B, D, K, 1);
        else be->conv1d_causal(be->ctx, u, proj, 2 * D, L->conv_w, L->conv_b, cst, slots, B, T, D, K, 1);
        const float *Bm, *Cm;
        int64_t ld;
        if (L->dt_proj_ext.data) {
            be->matmul(be->ctx, xdbl, u, M, &L->x_proj, NULL);
            be->matmul(be->ctx, delta, xdbl, M, &L->dt_proj_ext, NULL);
            Bm = xdbl + R, Cm = xdbl + R + N, ld = W;
        } else { /* x_proj's rows split: dt rank (M, R), then B|C (M, 2N) */
            size_t es = (size_t)lmc_dtype_size(L->x_proj.dtype);
            const struct lmc_mat xdt = {L->x_proj.dtype, R, D, L->x_proj.data};
            const struct lmc_mat xbc = {L->x_proj.dtype, 2 * N, D,
                                        (const char *)L->x_proj.data + (size_t)(R * D) * es};
            float *dtr = xdbl, *bc = xdbl + M * R;
            be->matmul(be->ctx, dtr, u, M, &xdt, NULL);
            be->matmul(be->ctx, bc, u, M, &xbc, NULL);
            be->matmul(be->ctx, delta, dtr, M, &L->dt_proj, NULL);
            Bm = bc, Cm = bc + N, ld = 2 * N;
        }
        const struct lmc_ssm_io io = {u, delta, L->dt_bias, L->A_log, Bm, Cm, ld,
                                      L->Dskip, proj + D, 2 * D};
        if (step) be->ssm_scan_step(be->ctx, y, &io, sst, slots, B, D, N);
        else be->ssm_scan(be->ctx, y, &io, sst, slots, B, T, D, N);
        out_proj_add(be, c, L, out, res, y, M, tmp);
        return;
    }
    const int64_t CD = c->conv_dim, IN = c->in_proj_dim, GN = c->n_groups * N;
    float *xbc = proj + M * IN, *y = xbc + M * CD, *tmp = y + M * D;
    if (step) be->conv1d_causal_step(be->ctx, xbc, proj + D, IN, L->conv_w, L->conv_b, cst, slots, B, CD, K, 1);
    else be->conv1d_causal(be->ctx, xbc, proj + D, IN, L->conv_w, L->conv_b, cst, slots, B, T, CD, K, 1);
    const struct lmc_ssd_io io = {xbc, xbc + D, xbc + D + GN, CD, proj + D + CD, IN, L->dt_bias,
                                  L->A_log, L->Dskip, (float)c->dt_min, (float)c->dt_max};
    const struct lmc_ssd_shape sh = {B, T, c->num_heads, c->head_dim, c->n_groups, N, c->chunk_size};
    if (step) be->ssd_step(be->ctx, y, &io, sst, slots, &sh);
    else be->ssd_chunk(be->ctx, y, &io, sst, slots, &sh);
    /* norm_before_gate = False, groups of D / n_groups (mamba_ssm's RMSNormGated) */
    be->rmsnorm_gated(be->ctx, y, y, proj, IN, L->gnorm_w, M, D, D / c->n_groups, (float)c->norm_eps);
    out_proj_add(be, c, L, out, res, y, M, tmp);
}

lmc_status lmc_mamba_forward(const struct lmc_mamba_model *m, struct lmc_mamba_state *st,
                             const int32_t *slots, const int32_t *ids, int64_t B, int64_t T,
                             float *logits, lmc_err *err) {
    const struct lmc_mamba_config *c = &m->cfg;
    struct lmc_backend *be = m->be;
    const int64_t M = B * T, H = c->hidden_size, V = c->vocab_size;
    if (B < 1 || T < 1 || M > ((int64_t)1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "mamba: %lld x %lld tokens (expected 1..2^24 in all)",
                           (long long)B, (long long)T);
    if (!be->ssm_scan || !be->ssd_chunk || !be->conv1d_causal || !be->rmsnorm_gated)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "mamba: the %s backend has no SSM ops", be->name);
    for (int64_t i = 0; i < M; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "mamba: token id %d out of range (vocab %lld)",
                               ids[i], (long long)V);
    if (st && slots)
        for (int64_t b = 0; b < B; b++)
            if (slots[b] < 0 || slots[b] >= st->n_slots)
                return lmc_err_set(err, LMC_ERR_ARG, "mamba: slot %d out of range", slots[b]);
    if (st && !slots && B > st->n_slots)
        return lmc_err_set(err, LMC_ERR_ARG, "mamba: %lld sequences, %lld state slots", (long long)B,
                           (long long)st->n_slots);
    const int64_t wsf = lmc_mamba_mixer_ws_floats(c, M);
    size_t bytes = (size_t)(2 * M * H + wsf + (logits ? M * V : 0)) * 4 + (size_t)(M + B) * 4;
    float *x = be->alloc(be->ctx, bytes);
    if (!x) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory (%zu bytes)", bytes);
    float *hn = x + M * H, *ws = hn + M * H, *lg = ws + wsf;
    int32_t *dids = (int32_t *)(lg + (logits ? M * V : 0)), *dslots = dids + M;
    be->upload(be->ctx, dids, ids, (size_t)M * 4);
    if (slots) be->upload(be->ctx, dslots, slots, (size_t)B * 4);
    be->embed(be->ctx, x, &m->embed, dids, M);
    for (int64_t l = 0; l < c->num_layers; l++) {
        be->rmsnorm(be->ctx, hn, x, m->layers[l].norm_w, M, H, (float)c->norm_eps);
        lmc_mamba_mixer_forward(m, l, x, hn, st, slots ? dslots : NULL, B, T, ws);
    }
    if (logits) {
        be->rmsnorm(be->ctx, hn, x, m->norm_f, M, H, (float)c->norm_eps);
        be->matmul(be->ctx, lg, hn, M, &m->lm_head, NULL);
        be->download(be->ctx, logits, lg, (size_t)(M * V) * 4);
    }
    be->sync(be->ctx);
    be->free(be->ctx, x);
    return LMC_OK;
}
