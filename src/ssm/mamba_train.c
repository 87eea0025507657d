/* mamba_train.c — the training pass of a Mamba / Mamba-2 model (ssm/mamba.h):
 * a forward that keeps each layer's activations, the fused classifier +
 * cross-entropy, and the backward through matmul_bwd, rmsnorm(_gated)_bwd,
 * conv1d_causal_bwd and ssm_scan_bwd / ssd_chunk_bwd, accumulating into one
 * gradient buffer per parameter. */
#include "ssm/mamba.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- gradient buffers ---- */
struct gslot {
    float **dst;
    int64_t rows, cols, ld;  /* the buffer holds rows * ld floats */
    char name[LMC_MAMBA_NAME_MAX];
};

/* Every parameter's gradient buffer with its HF tensor name, in the order
 * the block lays them out; s NULL: count only. */
static int64_t grad_slots(const struct lmc_mamba_model *m, struct lmc_mamba_grads *g, struct gslot *s) {
    const struct lmc_mamba_config *c = &m->cfg;
    const int64_t H = c->hidden_size, D = c->d_inner, V = c->vocab_size, K = c->conv_kernel;
    const int64_t W = c->xproj_dim, NH = c->num_heads;
    int64_t n = 0;
    char pre[48] = "";
#define SLOT(p, r, cl, ldv, nm)                                                      \
    do {                                                                              \
        if (s) {                                                                      \
            s[n] = (struct gslot){&(p), (r), (cl), (ldv), ""};                        \
            snprintf(s[n].name, sizeof s[n].name, "%s%s", pre, nm);                   \
        }                                                                             \
        n++;                                                                          \
    } while (0)
    SLOT(g->embed, V, H, H, "backbone.embeddings.weight");
    SLOT(g->norm_f, 1, H, H, "backbone.norm_f.weight");
    if (m->lm_head.data != m->embed.data) SLOT(g->lm_head, V, H, H, "lm_head.weight");
    for (int64_t l = 0; l < c->num_layers; l++) {
        struct lmc_mamba_layer_grads *L = &g->layers[l];
        const struct lmc_mamba_layer *Wt = &m->layers[l];
        snprintf(pre, sizeof pre, "backbone.layers.%lld.", (long long)l);
        SLOT(L->norm_w, 1, H, H, "norm.weight");
        SLOT(L->in_proj, c->in_proj_dim, H, H, "mixer.in_proj.weight");
        if (Wt->in_proj_b) SLOT(L->in_proj_b, 1, c->in_proj_dim, c->in_proj_dim, "mixer.in_proj.bias");
        SLOT(L->conv_w, c->conv_dim, K, K, "mixer.conv1d.weight");
        if (Wt->conv_b) SLOT(L->conv_b, 1, c->conv_dim, c->conv_dim, "mixer.conv1d.bias");
        SLOT(L->out_proj, H, D, D, "mixer.out_proj.weight");
        if (Wt->out_proj_b) SLOT(L->out_proj_b, 1, H, H, "mixer.out_proj.bias");
        if (c->kind == LMC_MAMBA_1) {
            SLOT(L->x_proj, W, D, D, "mixer.x_proj.weight");
            SLOT(L->dt_proj_ext, D, c->time_step_rank, W, "mixer.dt_proj.weight");
            SLOT(L->dt_bias, 1, D, D, "mixer.dt_proj.bias");
            SLOT(L->A_log, D, c->state_size, c->state_size, "mixer.A_log");
            SLOT(L->Dskip, 1, D, D, "mixer.D");
        } else {
            SLOT(L->dt_bias, 1, NH, NH, "mixer.dt_bias");
            SLOT(L->A_log, 1, NH, NH, "mixer.A_log");
            SLOT(L->Dskip, 1, NH, NH, "mixer.D");
            SLOT(L->gnorm_w, 1, D, D, "mixer.norm.weight");
        }
    }
#undef SLOT
    return n;
}

int64_t lmc_mamba_grads_params(const struct lmc_mamba_model *m, const struct lmc_mamba_grads *g,
                               struct lmc_mamba_param *out) {
    int64_t n = grad_slots(m, (struct lmc_mamba_grads *)g, NULL);
    if (!out) return n;
    struct gslot *s = malloc((size_t)n * sizeof *s);
    LMC_ASSERT(s != NULL);
    grad_slots(m, (struct lmc_mamba_grads *)g, s);
    for (int64_t i = 0; i < n; i++) {
        memcpy(out[i].name, s[i].name, sizeof out[i].name);
        out[i].grad = *s[i].dst, out[i].rows = s[i].rows, out[i].cols = s[i].cols, out[i].ld = s[i].ld;
    }
    free(s);
    return n;
}

lmc_status lmc_mamba_grads_init(struct lmc_mamba_grads *g, const struct lmc_mamba_model *m,
                                lmc_err *err) {
    memset(g, 0, sizeof *g);
    g->layers = calloc((size_t)m->cfg.num_layers, sizeof *g->layers);
    if (!g->layers) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
    int64_t n = grad_slots(m, g, NULL);
    struct gslot *s = malloc((size_t)n * sizeof *s);
    if (!s) {
        free(g->layers);
        return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
    }
    grad_slots(m, g, s);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) total += ((size_t)(s[i].rows * s[i].ld) + 63) / 64 * 64;
    g->bytes = total * sizeof(float);
    g->block = m->be->alloc(m->be->ctx, g->bytes);
    if (!g->block) {
        free(s), free(g->layers);
        g->layers = NULL;
        return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory for %zu gradient bytes", g->bytes);
    }
    m->be->zero(m->be->ctx, g->block, g->bytes);
    float *p = g->block;
    for (int64_t i = 0; i < n; i++) *s[i].dst = p, p += ((size_t)(s[i].rows * s[i].ld) + 63) / 64 * 64;
    free(s);
    return LMC_OK;
}

void lmc_mamba_grads_free(struct lmc_mamba_grads *g, const struct lmc_mamba_model *m) {
    if (g->block) m->be->free(m->be->ctx, g->block);
    free(g->layers);
    memset(g, 0, sizeof *g);
}

/* ---- the mixer's training forward and backward ---- */
int64_t lmc_mamba_mixer_act_floats(const struct lmc_mamba_config *c, int64_t rows) {
    return rows * (c->in_proj_dim + c->conv_dim + c->xproj_dim + 3 * c->d_inner);
}

void lmc_mamba_mixer_acts_bind(struct lmc_mamba_mixer_acts *a, const struct lmc_mamba_config *c,
                               int64_t rows, float *mem) {
    a->proj = mem, mem += rows * c->in_proj_dim;
    a->cv = mem, mem += rows * c->conv_dim;
    a->xdbl = mem, mem += rows * c->xproj_dim;
    a->delta = mem, mem += rows * c->d_inner;
    a->y = mem, mem += rows * c->d_inner;
    a->yn = mem;
}

/* Mamba-1's x_proj output: with dt_proj_ext one (M, R + 2N) matrix; split
 * (the model layer's weights as on disk), dt rank (M, R) then B|C (M, 2N). */
static struct lmc_ssm_io m1_io(const struct lmc_mamba_config *c, const struct lmc_mamba_layer *L,
                               const struct lmc_mamba_mixer_acts *a, int64_t M) {
    const int64_t R = c->time_step_rank, N = c->state_size, D = c->d_inner;
    if (!L->dt_proj_ext.data)
        return (struct lmc_ssm_io){a->cv, a->delta, L->dt_bias, L->A_log, a->xdbl + M * R,
                                   a->xdbl + M * R + N, 2 * N, L->Dskip, a->proj + D, c->in_proj_dim};
    return (struct lmc_ssm_io){a->cv, a->delta, L->dt_bias, L->A_log, a->xdbl + R, a->xdbl + R + N,
                               c->xproj_dim, L->Dskip, a->proj + D, c->in_proj_dim};
}

static struct lmc_ssd_io m2_io(const struct lmc_mamba_config *c, const struct lmc_mamba_layer *L,
                               const struct lmc_mamba_mixer_acts *a) {
    const int64_t D = c->d_inner, GN = c->n_groups * c->state_size, CD = c->conv_dim;
    return (struct lmc_ssd_io){a->cv, a->cv + D, a->cv + D + GN, CD, a->proj + D + CD, c->in_proj_dim,
                               L->dt_bias, L->A_log, L->Dskip, (float)c->dt_min, (float)c->dt_max};
}

/* x_proj's two row blocks (dt rank, B|C) as matrices of their own */
static void xproj_views(const struct lmc_mamba_config *c, const struct lmc_mamba_layer *L,
                        struct lmc_mat *xdt, struct lmc_mat *xbc) {
    const int64_t R = c->time_step_rank, N = c->state_size, D = c->d_inner;
    size_t es = (size_t)lmc_dtype_size(L->x_proj.dtype);
    *xdt = (struct lmc_mat){L->x_proj.dtype, R, D, L->x_proj.data};
    *xbc = (struct lmc_mat){L->x_proj.dtype, 2 * N, D, (const char *)L->x_proj.data + (size_t)(R * D) * es};
}

void lmc_mamba_mixer_forward_train(const struct lmc_mamba_model *m, int64_t l, float *out,
                                   const float *h, struct lmc_mamba_mixer_acts *a, int64_t B,
                                   int64_t T) {
    lmc_mamba_mix_train(m->be, &m->cfg, &m->layers[l], out, h, a, B, T);
}

void lmc_mamba_mix_train(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                         const struct lmc_mamba_layer *L, float *out, const float *h,
                         struct lmc_mamba_mixer_acts *a, int64_t B, int64_t T) {
    const int64_t M = B * T, D = c->d_inner, N = c->state_size, K = c->conv_kernel;
    const int64_t IN = c->in_proj_dim, CD = c->conv_dim;
    be->matmul(be->ctx, a->proj, h, M, &L->in_proj, L->in_proj_b);
    const float *yo;
    if (c->kind == LMC_MAMBA_1) {
        be->conv1d_causal(be->ctx, a->cv, a->proj, IN, L->conv_w, L->conv_b, NULL, NULL, B, T, D, K, 1);
        if (L->dt_proj_ext.data) {
            be->matmul(be->ctx, a->xdbl, a->cv, M, &L->x_proj, NULL);
            be->matmul(be->ctx, a->delta, a->xdbl, M, &L->dt_proj_ext, NULL);
        } else {
            struct lmc_mat xdt, xbc;
            xproj_views(c, L, &xdt, &xbc);
            be->matmul(be->ctx, a->xdbl, a->cv, M, &xdt, NULL);
            be->matmul(be->ctx, a->xdbl + M * c->time_step_rank, a->cv, M, &xbc, NULL);
            be->matmul(be->ctx, a->delta, a->xdbl, M, &L->dt_proj, NULL);
        }
        const struct lmc_ssm_io io = m1_io(c, L, a, M);
        be->ssm_scan(be->ctx, a->y, &io, NULL, NULL, B, T, D, N);
        yo = a->y;
    } else {
        be->conv1d_causal(be->ctx, a->cv, a->proj + D, IN, L->conv_w, L->conv_b, NULL, NULL, B, T, CD, K, 1);
        const struct lmc_ssd_io io = m2_io(c, L, a);
        const struct lmc_ssd_shape sh = {B, T, c->num_heads, c->head_dim, c->n_groups, N, c->chunk_size};
        be->ssd_chunk(be->ctx, a->y, &io, NULL, NULL, &sh);
        be->rmsnorm_gated(be->ctx, a->yn, a->y, a->proj, IN, L->gnorm_w, M, D, D / c->n_groups,
                          (float)c->norm_eps);
        yo = a->yn;
    }
    be->matmul(be->ctx, out, yo, M, &L->out_proj, L->out_proj_b);
}

int64_t lmc_mamba_mixer_bwd_ws_floats(const struct lmc_mamba_config *c, int64_t rows) {
    return rows * (c->in_proj_dim + c->conv_dim + c->xproj_dim + 2 * c->d_inner);
}

void lmc_mamba_mixer_backward(const struct lmc_mamba_model *m, int64_t l, float *dh,
                              const float *dout, const float *h,
                              const struct lmc_mamba_mixer_acts *a, struct lmc_mamba_layer_grads *G,
                              int64_t B, int64_t T, float *ws) {
    lmc_mamba_mix_bwd(m->be, &m->cfg, &m->layers[l], dh, dout, h, a, G, B, T, ws);
}

void lmc_mamba_mix_bwd(const struct lmc_backend *be, const struct lmc_mamba_config *c,
                       const struct lmc_mamba_layer *L, float *dh, const float *dout, const float *h,
                       const struct lmc_mamba_mixer_acts *a, const struct lmc_mamba_layer_grads *G,
                       int64_t B, int64_t T, float *ws) {
    const int64_t M = B * T, D = c->d_inner, N = c->state_size, K = c->conv_kernel;
    const int64_t IN = c->in_proj_dim, CD = c->conv_dim, W = c->xproj_dim;
    float *dproj = ws, *dcv = dproj + M * IN, *dxdbl = dcv + M * CD, *dy = dxdbl + M * W, *dyn = dy + M * D;
    if (c->kind == LMC_MAMBA_1) {
        const int64_t R = c->time_step_rank;
        be->matmul_bwd(be->ctx, dy, G->out_proj, G->out_proj_b, dout, a->y, M, &L->out_proj, 0);
        const struct lmc_ssm_io io = m1_io(c, L, a, M);
        const bool split = !L->dt_proj_ext.data;
        float *dB = split ? dxdbl + M * R : dxdbl + R;
        /* ddelta goes to dyn; dB, dC, dz straight into their places in dxdbl / dproj */
        const struct lmc_ssm_grads sg = {dcv, dyn, dB, dB + N, dproj + D, G->dt_bias, G->A_log, G->Dskip};
        if (!split) be->zero(be->ctx, dxdbl, (size_t)(M * W) * 4); /* dt_r's columns: += below */
        be->ssm_scan_bwd(be->ctx, &sg, dy, &io, B, T, D, N);
        if (split) {
            struct lmc_mat xdt, xbc;
            xproj_views(c, L, &xdt, &xbc);
            be->matmul_bwd(be->ctx, dxdbl, G->dt_proj, NULL, dyn, a->xdbl, M, &L->dt_proj, 0);
            be->matmul_bwd(be->ctx, dcv, G->x_proj, NULL, dxdbl, a->cv, M, &xdt, 1);
            be->matmul_bwd(be->ctx, dcv, G->x_proj ? G->x_proj + R * D : NULL, NULL, dxdbl + M * R, a->cv, M,
                           &xbc, 1);
        } else {
            /* delta = xdbl @ ext^T: dxdbl[:, :R] +=, dxdbl[:, R:] += 0 (ext's zero columns) */
            be->matmul_bwd(be->ctx, dxdbl, G->dt_proj_ext, NULL, dyn, a->xdbl, M, &L->dt_proj_ext, 1);
            be->matmul_bwd(be->ctx, dcv, G->x_proj, NULL, dxdbl, a->cv, M, &L->x_proj, 1);
        }
        be->conv1d_causal_bwd(be->ctx, dproj, G->conv_w, G->conv_b, dcv, a->proj, IN, L->conv_w,
                              L->conv_b, B, T, D, K, 1);
    } else {
        const int64_t GN = c->n_groups * N;
        be->matmul_bwd(be->ctx, dyn, G->out_proj, G->out_proj_b, dout, a->yn, M, &L->out_proj, 0);
        be->rmsnorm_gated_bwd(be->ctx, dy, dproj, G->gnorm_w, dyn, a->y, a->proj, IN, L->gnorm_w, M, D,
                              D / c->n_groups, (float)c->norm_eps);
        const struct lmc_ssd_io io = m2_io(c, L, a);
        const struct lmc_ssd_shape sh = {B, T, c->num_heads, c->head_dim, c->n_groups, N, c->chunk_size};
        const struct lmc_ssd_grads sg = {dcv, dcv + D, dcv + D + GN, dproj + D + CD, G->dt_bias, G->A_log,
                                         G->Dskip};
        be->ssd_chunk_bwd(be->ctx, &sg, dy, &io, &sh);
        be->conv1d_causal_bwd(be->ctx, dproj + D, G->conv_w, G->conv_b, dcv, a->proj + D, IN, L->conv_w,
                              L->conv_b, B, T, CD, K, 1);
    }
    be->matmul_bwd(be->ctx, dh, G->in_proj, G->in_proj_b, dproj, h, M, &L->in_proj, 0);
}

/* ---- the whole model: per layer xin, hn and the mixer's activations ---- */
lmc_status lmc_mamba_loss_backward(const struct lmc_mamba_model *m, const int32_t *inputs,
                                   const int32_t *targets, int64_t B, int64_t T, double *loss,
                                   struct lmc_mamba_grads *g, lmc_err *err) {
    const struct lmc_mamba_config *c = &m->cfg;
    struct lmc_backend *be = m->be;
    const int64_t M = B * T, H = c->hidden_size, V = c->vocab_size, NL = c->num_layers;
    if (B < 1 || T < 1 || M > ((int64_t)1 << 22))
        return lmc_err_set(err, LMC_ERR_ARG, "mamba: %lld x %lld training tokens", (long long)B, (long long)T);
    if (!be->matmul_bwd || !be->ssm_scan_bwd || !be->ssd_chunk_bwd || !be->classifier_xent)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "mamba: the %s backend cannot train", be->name);
    if (m->embed.dtype != LMC_DTYPE_F32 || m->lm_head.dtype != LMC_DTYPE_F32)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "mamba: training needs F32 weights");
    for (int64_t l = 0; l < NL; l++)
        if (m->layers[l].in_proj.dtype != LMC_DTYPE_F32 || m->layers[l].out_proj.dtype != LMC_DTYPE_F32 ||
            (c->kind == LMC_MAMBA_1 && m->layers[l].x_proj.dtype != LMC_DTYPE_F32))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "mamba: training needs F32 weights (layer %lld)",
                               (long long)l);
    int64_t count = 0;
    for (int64_t i = 0; i < M; i++) {
        if (inputs[i] < 0 || inputs[i] >= V || targets[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "mamba: token id out of range at %lld", (long long)i);
        count += targets[i] >= 0;
    }
    if (!count) return lmc_err_set(err, LMC_ERR_ARG, "mamba: no targets");
    /* per layer: xin, hn (M,H) and the mixer's activations; then the final
     * residual and norm, dres, dhn, the mixer's backward scratch, per-row
     * loss, ids, targets */
    const int64_t per = 2 * M * H + lmc_mamba_mixer_act_floats(c, M);
    const int64_t tail = 4 * M * H + lmc_mamba_mixer_bwd_ws_floats(c, M) + M;
    size_t bytes = ((size_t)(NL * per + tail) + 2 * (size_t)M) * sizeof(float);
    float *base = be->alloc(be->ctx, bytes);
    if (!base) return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of backend memory (%zu bytes)", bytes);
    float *xf = base + NL * per, *hf = xf + M * H, *dres = hf + M * H, *dhn = dres + M * H;
    float *ws = dhn + M * H, *lrow = ws + lmc_mamba_mixer_bwd_ws_floats(c, M);
    int32_t *dids = (int32_t *)(lrow + M), *dtg = dids + M;
    be->upload(be->ctx, dids, inputs, (size_t)M * 4);
    be->upload(be->ctx, dtg, targets, (size_t)M * 4);
    const float eps = (float)c->norm_eps;
#define XIN(l) (base + (l) * per)
#define HN(l) (base + (l) * per + M * H)
    struct lmc_mamba_mixer_acts a;

    be->embed(be->ctx, XIN(0), &m->embed, dids, M);
    for (int64_t l = 0; l < NL; l++) {
        float *xout = l + 1 < NL ? XIN(l + 1) : xf;
        lmc_mamba_mixer_acts_bind(&a, c, M, HN(l) + M * H);
        be->rmsnorm(be->ctx, HN(l), XIN(l), m->layers[l].norm_w, M, H, eps);
        lmc_mamba_mixer_forward_train(m, l, xout, HN(l), &a, B, T);
        be->add(be->ctx, xout, xout, XIN(l), M * H);
    }
    be->rmsnorm(be->ctx, hf, xf, m->norm_f, M, H, eps);
    be->classifier_xent(be->ctx, lrow, dhn, g->lm_head ? g->lm_head : g->embed, hf, &m->lm_head, dtg, M,
                        (float)(1.0 / (double)count));
    float *lh = malloc((size_t)M * sizeof *lh);
    if (!lh) {
        be->free(be->ctx, base);
        return lmc_err_set(err, LMC_ERR_OOM, "mamba: out of memory");
    }
    be->download(be->ctx, lh, lrow, (size_t)M * 4);
    be->sync(be->ctx);
    double sum = 0;
    for (int64_t i = 0; i < M; i++) sum += lh[i];
    free(lh);
    *loss = sum / (double)count;

    be->zero(be->ctx, dres, (size_t)(M * H) * 4);
    be->rmsnorm_bwd(be->ctx, dres, g->norm_f, dhn, xf, m->norm_f, M, H, eps);
    for (int64_t l = NL - 1; l >= 0; l--) {
        lmc_mamba_mixer_acts_bind(&a, c, M, HN(l) + M * H);
        lmc_mamba_mixer_backward(m, l, dhn, dres, HN(l), &a, &g->layers[l], B, T, ws);
        be->rmsnorm_bwd(be->ctx, dres, g->layers[l].norm_w, dhn, XIN(l), m->layers[l].norm_w, M, H, eps);
    }
#undef XIN
#undef HN
    be->embed_bwd(be->ctx, g->embed, dres, dids, M, H);
    be->sync(be->ctx);
    be->free(be->ctx, base);
    return LMC_OK;
}
