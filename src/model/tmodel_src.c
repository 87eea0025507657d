/* tmodel_src.c — a trainable model's initial parameters produced range by
 * range in the arena's layout on the host (backward.h lmc_tmodel_src):
 * lmc_tmodel_init_random's GPT-2-style draws (one generator, tensor by
 * tensor in table order) or a Hugging Face folder's weights (F32/F16/BF16,
 * fused expert tensors sliced, Conv1D tensors transposed), so that a
 * data-parallel rank can build only its shard of the model. */
#include "model/backward.h"
#include "model/arch_moe.h"
#include "core/core.h"
#include "core/rng.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lmc_tmodel_transpose(const struct lmc_tparam *p, float *dst, const float *in, bool to_disk) {
    int64_t R = p->shape[0], Cc = p->shape[1];
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < Cc; c++) {
            if (to_disk) dst[r * Cc + c] = in[c * R + r];
            else dst[c * R + r] = in[r * Cc + c];
        }
}

/* Box-Muller normal from the seeded generator. */
static double normal(uint64_t *s) {
    double u1 = lmc_rng_uniform(s), u2 = lmc_rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Which tensors are residual output projections (spec flag LMC_TF_RESID). */
struct flag_state {
    bool *resid;
    int i;
};

static lmc_status flag_resid(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct flag_state *fs = user;
    if (!t->required) return LMC_OK; /* not in the parameter table (record() skips it too) */
    fs->resid[fs->i++] = (t->spec->flags & LMC_TF_RESID) != 0;
    return LMC_OK;
}

static lmc_status src_common(struct lmc_tmodel_src *s, const struct lmc_tmodel *tm, lmc_err *err) {
    memset(s, 0, sizeof *s);
    s->tm = tm;
    s->cur = -1;
    int64_t most = 1;
    for (int i = 0; i < tm->n_params; i++) most = LMC_MAX(most, tm->params[i].numel);
    s->buf = malloc((size_t)most * sizeof(float));
    if (!s->buf) return lmc_err_set(err, LMC_ERR_OOM, "initialising %lld parameters: out of memory", (long long)tm->numel);
    return LMC_OK;
}

lmc_status lmc_tmodel_src_random(struct lmc_tmodel_src *s, const struct lmc_tmodel *tm, uint64_t seed,
                                 double std, lmc_err *err) {
    lmc_status st = src_common(s, tm, err);
    if (st) return st;
    s->rng = seed ^ 0x6c6d632d696e6974ull;
    s->std = std;
    s->res_std = std / sqrt(2.0 * (double)tm->cfg.num_layers);
    s->resid = calloc((size_t)tm->n_params + 1, sizeof *s->resid);
    struct flag_state fs = {s->resid, 0};
    if (!s->resid || lmc_arch_walk(tm->arch, &tm->cfg, flag_resid, &fs, err)) {
        lmc_tmodel_src_free(s);
        return lmc_err_set(err, LMC_ERR_OOM, "initialising %lld parameters: out of memory", (long long)tm->numel);
    }
    return LMC_OK;
}

lmc_status lmc_tmodel_src_dir(struct lmc_tmodel_src *s, const struct lmc_tmodel *tm, const char *dir, lmc_err *err) {
    lmc_status st = src_common(s, tm, err);
    if (st) return st;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->st = calloc(1, sizeof *s->st);
    if (!s->st) {
        lmc_tmodel_src_free(s);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    }
    if ((st = lmc_st_open_dir(s->st, dir, err))) {
        free(s->st);
        s->st = NULL;
        lmc_tmodel_src_free(s);
    }
    return st;
}

void lmc_tmodel_src_free(struct lmc_tmodel_src *s) {
    if (s->st) {
        lmc_st_free(s->st);
        free(s->st);
    }
    free(s->resid);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* Tensor i's values drawn into buf (the generator advances past it). */
static void draw(struct lmc_tmodel_src *s, int i) {
    const struct lmc_tparam *p = &s->tm->params[i];
    float *w = s->buf;
    if (p->init & LMC_TF_INIT_ALOG) { /* A = -(1..n) per row, as mamba_ssm initialises it */
        int64_t n = p->ndim == 2 ? p->shape[1] : p->numel;
        for (int64_t k = 0; k < p->numel; k++) w[k] = (float)log((double)(k % n + 1));
    } else if (p->init & LMC_TF_INIT_DT) { /* softplus(bias) = dt, log-uniform in [1e-3, 0.1] */
        for (int64_t k = 0; k < p->numel; k++) {
            double dt = exp(log(1e-3) + lmc_rng_uniform(&s->rng) * (log(0.1) - log(1e-3)));
            w[k] = (float)(dt + log(-expm1(-dt)));
        }
    } else if (p->role == LMC_ROLE_NORM || p->role == LMC_ROLE_BIAS) {
        float v = p->role == LMC_ROLE_NORM ? 1.0f : 0.0f;
        for (int64_t k = 0; k < p->numel; k++) w[k] = v;
    } else {
        double sd = s->resid[i] ? s->res_std : s->std;
        for (int64_t k = 0; k < p->numel; k++) w[k] = (float)(normal(&s->rng) * sd);
    }
}

static float st_elem(const struct lmc_st_tensor *t, int64_t i) {
    if (t->dtype == LMC_DTYPE_F32) {
        float f;
        memcpy(&f, (const char *)t->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * i, 2);
    return t->dtype == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
}

/* Tensor i of the folder, checked; its arena-layout elements [a, b) go to
 * out (transposed tensors whole through buf). */
static lmc_status read_dir(struct lmc_tmodel_src *s, int i, int64_t a, int64_t b, float *out, lmc_err *err) {
    const struct lmc_tmodel *tm = s->tm;
    const struct lmc_tparam *p = &tm->params[i];
    const char *name = p->name, *dir = s->dir;
    const struct lmc_st_tensor *t = lmc_st_find(s->st, name);
    const char *ap = tm->arch->alt_prefix;
    if (!t && ap && !strncmp(name, ap, strlen(ap))) t = lmc_st_find(s->st, name + strlen(ap));
    struct lmc_st_tensor view;
    const struct lmc_st_tensor *fused = NULL;
    lmc_status st;
    if (!t && (st = lmc_arch_moe_fused(s->st, &tm->cfg, name, &view, &fused, err))) return st;
    if (fused) t = &view; /* a slice of a fused 3-D expert tensor */
    if (!t) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", dir, name);
    bool ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] && (p->ndim == 1 || t->shape[1] == p->shape[1]);
    if (t->ndim == 3 && p->ndim == 2) /* a depthwise conv1d weight (rows, 1, K) */
        ok = t->shape[0] == p->shape[0] && t->shape[1] == 1 && t->shape[2] == p->shape[1];
    if (!ok || (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has the wrong shape or dtype "
                           "(expected F32/F16/BF16 [%lld%s%lld])", dir, name, (long long)p->shape[0],
                           p->ndim == 2 ? ", " : "", p->ndim == 2 ? (long long)p->shape[1] : 0LL);
    if (!p->transposed) {
        for (int64_t k = a; k < b; k++) out[k - a] = st_elem(t, k);
        return LMC_OK;
    }
    if (s->cur != i) {
        float *disk = malloc((size_t)p->numel * sizeof(float));
        if (!disk) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
        for (int64_t k = 0; k < p->numel; k++) disk[k] = st_elem(t, k);
        lmc_tmodel_transpose(p, s->buf, disk, false);
        free(disk);
        s->cur = i;
    }
    memcpy(out, s->buf + a, (size_t)(b - a) * sizeof(float));
    return LMC_OK;
}

lmc_status lmc_tmodel_src_fill(struct lmc_tmodel_src *s, int64_t off, int64_t n, float *host, lmc_err *err) {
    const struct lmc_tmodel *tm = s->tm;
    if (off < 0 || n < 0 || off > tm->numel - n)
        return lmc_err_set(err, LMC_ERR_ARG, "model source: range [%lld, +%lld) outside the %lld-float arena",
                           (long long)off, (long long)n, (long long)tm->numel);
    if (n == 0) return LMC_OK;
    memset(host, 0, (size_t)n * sizeof(float));
    int64_t end = off + n;
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->external) continue; /* not in the arenas (a random source draws it all the same, below) */
        if (p->off >= end) break;  /* the table is in arena order */
        if (p->off + p->numel <= off) continue;
        if (!s->st && s->cur != i) { /* the generator's stream, every tensor before this one drawn in order */
            if (i < s->next)
                return lmc_err_set(err, LMC_ERR_ARG, "model source: tensor %s read again after later ones (a "
                                   "random source is read in increasing order)", p->name);
            for (; s->next < i; s->next++) draw(s, s->next);
            draw(s, i);
            s->cur = i;
            s->next = i + 1;
        }
        int64_t a = LMC_MAX(off, p->off) - p->off, b = LMC_MIN(end, p->off + p->numel) - p->off;
        float *out = host + (p->off + a - off);
        if (!s->st) memcpy(out, s->buf + a, (size_t)(b - a) * sizeof(float));
        else {
            lmc_status st = read_dir(s, i, a, b, out, err);
            if (st) return st;
        }
    }
    return LMC_OK;
}
