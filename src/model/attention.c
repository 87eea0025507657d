/* attention.c — the attention token mixer (lmc_mixer_attention): q/k/v
 * projections (one fused job), optional per-head q/k RMSNorm (slots
 * LMC_V_Q_NORM / LMC_V_K_NORM bound), optional clamping of q, k (after
 * their norms) and v to [-clip_qkv, clip_qkv] (OLMoE), RoPE, causal GQA attention through
 * the run mode's kernel (contiguous cache, paged pool, or the training
 * kernel that keeps the log-sum-exp), the output projection with the
 * residual; and its backward. A single sequence's step may carry a row
 * mask (lmc_run.row_mask: a token tree's verification). Its sequence state: K and V rows of
 * n_kv*head_dim floats per token in the paged pool. */
#include "core/core.h"
#include "model/arch.h"
#include "model/model.h"
#include "model/forward_batch.h"
#include "dist/ring_attn.h"

#include <math.h>

#define A16(n) (((n) + 15) / 16 * 16)

/* The pieces of the save region (n tokens). */
struct attn_save {
    float *q, *k, *v, *att, *lse, *qpre, *kpre;
    float *qc, *kc, *vc; /* clip_qkv, training: q, k, v before clamping */
};

static struct attn_save carve(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode,
                              const float *p0) {
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    float *p = (float *)p0;
    struct attn_save s = {0};
    s.q = p, p += A16(n * qd);
    s.k = p, p += A16(n * kvd);
    s.v = p, p += A16(n * kvd);
    s.att = p, p += A16(n * qd);
    if (mode == LMC_RUN_TRAIN) {
        s.lse = p, p += A16(n * c->num_heads);
        if (c->qk_norm) {
            s.qpre = p, p += A16(n * qd);
            s.kpre = p, p += A16(n * kvd);
        }
        if (c->clip_qkv > 0) {
            s.qc = p, p += A16(n * qd);
            s.kc = p, p += A16(n * kvd);
            s.vc = p, p += A16(n * kvd);
        }
    }
    return s;
}

static int64_t attn_save_floats(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode) {
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    int64_t f = 2 * A16(n * qd) + 2 * A16(n * kvd);
    if (mode == LMC_RUN_TRAIN) {
        f += A16(n * c->num_heads);
        if (c->qk_norm) f += A16(n * qd) + A16(n * kvd);
        if (c->clip_qkv > 0) f += A16(n * qd) + 2 * A16(n * kvd);
    }
    return f;
}

/* bf16-saved activations: q, k, v and the output (the log-sum-exp and the rest stay f32) */
static int64_t attn_lowp_floats(const struct lmc_config *c, int64_t n) {
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    return 2 * A16(n * qd) + 2 * A16(n * kvd);
}

static int64_t attn_bwd_floats(const struct lmc_config *c, int64_t n) {
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    return 2 * A16(n * qd) + 3 * A16(n * kvd);
}

/* RMSNorm of q (n, H*hd) and k (n, KV*hd), from qi/ki (may alias): per head
 * when the scales are head_dim long (Qwen3), over the whole projection when
 * they are as long as it (OLMoE). */
static void qk_norm(const struct lmc_run *r, const struct lmc_block_w *W, float *q, const float *qi,
                    float *k, const float *ki) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_backend *be = r->be;
    int64_t qw = W->vec_n[LMC_V_Q_NORM], kw = W->vec_n[LMC_V_K_NORM];
    be->rmsnorm(be->ctx, q, qi, W->vec[LMC_V_Q_NORM], r->n * c->num_heads * c->head_dim / qw, qw,
                (float)c->norm_eps);
    be->rmsnorm(be->ctx, k, ki, W->vec[LMC_V_K_NORM], r->n * c->num_kv_heads * c->head_dim / kw, kw,
                (float)c->norm_eps);
}

/* clip_qkv: q, k, v clamped in place (from qi, ki, vi, which may alias). */
static void clip_qkv(const struct lmc_run *r, float *q, const float *qi, float *k, const float *ki, float *v,
                     const float *vi) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_backend *be = r->be;
    if (c->clip_qkv <= 0) return;
    float cl = (float)c->clip_qkv;
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    be->clamp(be->ctx, q, qi, r->n * qd, cl);
    be->clamp(be->ctx, k, ki, r->n * kvd, cl);
    be->clamp(be->ctx, v, vi, r->n * kvd, cl);
}

static void rope_qk(const struct lmc_run *r, float *q, float *k) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_backend *be = r->be;
    int64_t H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    if (!r->rot_dim) return;
    if (r->mode != LMC_RUN_PAGED || r->uniform) {
        be->rope(be->ctx, q, r->n, H, hd, r->rot_dim, r->pos, r->inv_freq, r->attn_scale);
        be->rope(be->ctx, k, r->n, KV, hd, r->rot_dim, r->pos, r->inv_freq, r->attn_scale);
        return;
    }
    /* length-dependent RoPE: per run of one sequence's tokens */
    int64_t half = r->rot_dim / 2;
    for (int64_t i = 0, j; i < r->n; i = j) {
        int64_t s = r->seq_host[i];
        for (j = i; j < r->n && r->seq_host[j] == s;) j++;
        const double *fr = r->seq_freqs + s * half;
        be->rope(be->ctx, q + i * H * hd, j - i, H, hd, r->rot_dim, r->pos + i, fr, r->seq_scales[s]);
        be->rope(be->ctx, k + i * KV * hd, j - i, KV, hd, r->rot_dim, r->pos + i, fr, r->seq_scales[s]);
    }
}

/* ---- context parallelism (block.h's lmc_cp_group): ring attention per
 * sequence instead of the backend's attention_train / attention_bwd. */
static void cp_fwd(const struct lmc_run *r, float *att, float *lse, const float *q, const float *k,
                   const float *v, int64_t H, int64_t KV, int64_t hd, float scale) {
    struct lmc_cp_group *g = r->cp;
    struct lmc_ring_attn_shape sh = {g->T_global, H, KV, hd, scale};
    for (int64_t b = 0; b < r->B && !g->st; b++) /* device memory: the backend's block ops (ring_attn.h) */
        g->st = r->be->host_memory
                    ? lmc_ring_attn_fwd(g->c, &sh, att + b * r->T * H * hd, lse + b * r->T * H, q + b * r->T * H * hd,
                                        k + b * r->T * KV * hd, v + b * r->T * KV * hd, &g->err)
                    : lmc_ring_attn_fwd_be(r->be, g->c, &sh, att + b * r->T * H * hd, lse + b * r->T * H,
                                           q + b * r->T * H * hd, k + b * r->T * KV * hd, v + b * r->T * KV * hd,
                                           &g->err);
}

static void cp_bwd(const struct lmc_run *r, float *dq, float *dk, float *dv, const float *datt,
                   const float *att, const float *lse, const float *q, const float *k, const float *v,
                   int64_t H, int64_t KV, int64_t hd, float scale) {
    struct lmc_cp_group *g = r->cp;
    struct lmc_ring_attn_shape sh = {g->T_global, H, KV, hd, scale};
    int64_t qo = r->T * H * hd, ko = r->T * KV * hd;
    for (int64_t b = 0; b < r->B && !g->st; b++)
        g->st = r->be->host_memory
                    ? lmc_ring_attn_bwd(g->c, &sh, dq + b * qo, dk + b * ko, dv + b * ko, datt + b * qo, att + b * qo,
                                        lse + b * r->T * H, q + b * qo, k + b * ko, v + b * ko, &g->err)
                    : lmc_ring_attn_bwd_be(r->be, g->c, &sh, dq + b * qo, dk + b * ko, dv + b * ko, datt + b * qo,
                                           att + b * qo, lse + b * r->T * H, q + b * qo, k + b * ko, v + b * ko,
                                           &g->err);
}

static void attn_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                     const float *h, const float *res, float *y) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_backend *be = r->be;
    int64_t n = r->n, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim, kvd = KV * hd;
    float scale = 1.0f / sqrtf((float)hd);
    bool qkn = W->vec[LMC_V_Q_NORM] != NULL;
    struct attn_save s = carve(c, n, r->mode, save);
    const struct lmc_linear *L[3] = {&W->lin[LMC_L_Q], &W->lin[LMC_L_K], &W->lin[LMC_L_V]};
    switch (r->mode) {
    case LMC_RUN_SEQ: {
        struct lmc_kv *kv = r->kv;
        bool kv16 = be->kv_dtype != LMC_DTYPE_F32;
        size_t stride = kv->layer_bytes;
        char *kc = (char *)kv->k + (size_t)l * stride, *vc = (char *)kv->v + (size_t)l * stride;
        if (kv16) { /* f32 K/V in scratch, stored as kv_dtype by rope_kv_store */
            LMC_ASSERT(be->rope_kv_store);
            float *ys[3] = {s.q, s.k, s.v};
            lmc_linear_fwd(be, 3, L, ys, h, n);
            if (qkn) qk_norm(r, W, s.q, s.q, s.k, s.k);
            clip_qkv(r, s.q, s.q, s.k, s.k, s.v, s.v);
            be->rope_kv_store(be->ctx, s.q, s.k, s.v, kc, vc, n, H, KV, hd, r->rot_dim, r->pos,
                              r->inv_freq, r->attn_scale);
        } else { /* K and V straight into the cache rows of these positions */
            float *kn = (float *)kc + r->pos0 * kvd, *vn = (float *)vc + r->pos0 * kvd;
            float *ys[3] = {s.q, kn, vn};
            lmc_linear_fwd(be, 3, L, ys, h, n);
            if (qkn) qk_norm(r, W, s.q, s.q, kn, kn);
            clip_qkv(r, s.q, s.q, kn, kn, vn, vn);
            rope_qk(r, s.q, kn);
        }
        if (r->tail > 0 && r->tail < n) { /* only the last rows' output: their queries alone */
            int64_t t = r->tail, o = n - t;
            be->attention(be->ctx, s.att, s.q + o * H * hd, (const float *)kc, (const float *)vc, t, r->pos0 + o,
                          H, KV, hd, scale, c->sliding_window);
            lmc_linear_fwd_res(be, &W->lin[LMC_L_O], y + o * c->hidden_size, res + o * c->hidden_size, s.att,
                               t, r->tmp);
            return;
        }
        if (r->row_mask) { /* a token tree (lmc_model_forward_mask) */
            LMC_ASSERT(!kv16 && be->attention_mask && c->sliding_window == 0);
            be->attention_mask(be->ctx, s.att, s.q, (const float *)kc, (const float *)vc, n, r->pos0, H, KV,
                               hd, scale, r->row_mask);
        } else {
            be->attention(be->ctx, s.att, s.q, (const float *)kc, (const float *)vc, n, r->pos0, H, KV, hd,
                          scale, c->sliding_window);
        }
        break;
    }
    case LMC_RUN_PAGED: {
        struct lmc_kv_pool *p = r->pool;
        size_t layer_bytes = (size_t)p->n_blocks * (size_t)p->block_size * p->row_bytes;
        float *ys[3] = {s.q, s.k, s.v};
        lmc_linear_fwd(be, 3, L, ys, h, n);
        if (qkn) qk_norm(r, W, s.q, s.q, s.k, s.k);
        clip_qkv(r, s.q, s.q, s.k, s.k, s.v, s.v);
        rope_qk(r, s.q, s.k);
        float *kl = (float *)((char *)p->k + (size_t)l * layer_bytes);
        float *vl = (float *)((char *)p->v + (size_t)l * layer_bytes);
        if (p->ring) /* KIVI-2 paged: recent rows in each sequence's f16 ring */
            be->attention_paged_ring(be->ctx, s.att, s.q, s.k, s.v, kl, vl,
                                     (char *)p->ring + (size_t)l * (size_t)p->n_ring * p->ring_slot_bytes,
                                     r->tok_slot, p->ring_rows, p->residual, n, r->seq, r->pos, r->bt,
                                     r->max_blocks, p->block_size, H, KV, hd, scale, c->sliding_window);
        else
            be->attention_paged(be->ctx, s.att, s.q, s.k, s.v, kl, vl, n, r->seq, r->pos, r->bt,
                                r->max_blocks, p->block_size, H, KV, hd, scale, c->sliding_window);
        break;
    }
    case LMC_RUN_TRAIN: {
        /* projections -> (qpre, kpre) -> norms -> (qc, kc, vc) -> clamp -> q, k, v */
        bool clip = c->clip_qkv > 0;
        float *qn = clip ? s.qc : s.q, *kn = clip ? s.kc : s.k;
        float *ys[3] = {qkn ? s.qpre : qn, qkn ? s.kpre : kn, clip ? s.vc : s.v};
        lmc_linear_fwd(be, 3, L, ys, h, n);
        if (qkn) qk_norm(r, W, qn, s.qpre, kn, s.kpre);
        if (clip) clip_qkv(r, s.q, s.qc, s.k, s.kc, s.v, s.vc);
        rope_qk(r, s.q, s.k);
        if (r->cp) {
            LMC_ASSERT(c->sliding_window == 0 && !r->segs);
            cp_fwd(r, s.att, s.lse, s.q, s.k, s.v, H, KV, hd, scale);
            break;
        }
        if (!r->segs) {
            be->attention_train(be->ctx, s.att, s.lse, s.q, s.k, s.v, r->B, r->T, H, KV, hd, scale,
                                c->sliding_window);
            break;
        }
        if (be->attention_train_segs) { /* packed: every segment in one call */
            be->attention_train_segs(be->ctx, s.att, s.lse, s.q, s.k, s.v, r->segs, r->n_segs, H, KV, hd,
                                     scale, c->sliding_window);
            break;
        }
        for (int64_t i = 0; i < r->n_segs; i++) { /* packed: one sequence per segment */
            int64_t o = r->segs[2 * i], len = r->segs[2 * i + 1];
            be->attention_train(be->ctx, s.att + o * H * hd, s.lse + o * H, s.q + o * H * hd,
                                s.k + o * KV * hd, s.v + o * KV * hd, 1, len, H, KV, hd, scale,
                                c->sliding_window);
        }
        break;
    }
    }
    lmc_linear_fwd_res(be, &W->lin[LMC_L_O], y, res, s.att, n, r->tmp);
}

static void attn_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                     const struct lmc_block_w *G, const float *save, const float *h, const float *dy,
                     float *dh, float *scratch) {
    (void)l;
    const struct lmc_config *c = r->cfg;
    const struct lmc_backend *be = r->be;
    int64_t n = r->n, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int64_t qd = H * hd, kvd = KV * hd;
    float scale = 1.0f / sqrtf((float)hd);
    bool qkn = W->vec[LMC_V_Q_NORM] != NULL;
    struct attn_save s = carve(c, n, LMC_RUN_TRAIN, save);
    float *datt = scratch, *dq = datt + A16(n * qd), *dk = dq + A16(n * qd), *dv = dk + A16(n * kvd);
    float *dkpre = dv + A16(n * kvd);
    const struct lmc_linear *O = &W->lin[LMC_L_O], *GO = &G->lin[LMC_L_O];
    lmc_linear_bwd(be, 1, &O, &GO, datt, &dy, s.att, n, false);
    if (r->cp) {
        LMC_ASSERT(!r->segs);
        cp_bwd(r, dq, dk, dv, datt, s.att, s.lse, s.q, s.k, s.v, H, KV, hd, scale);
    } else if (!r->segs)
        be->attention_bwd(be->ctx, dq, dk, dv, datt, s.att, s.lse, s.q, s.k, s.v, r->B, r->T, H, KV, hd,
                          scale, c->sliding_window);
    else if (be->attention_bwd_segs)
        be->attention_bwd_segs(be->ctx, dq, dk, dv, datt, s.att, s.lse, s.q, s.k, s.v, r->segs, r->n_segs, H,
                               KV, hd, scale, c->sliding_window);
    else
        for (int64_t i = 0; i < r->n_segs; i++) { /* packed: one sequence per segment */
            int64_t o = r->segs[2 * i], len = r->segs[2 * i + 1];
            be->attention_bwd(be->ctx, dq + o * qd, dk + o * kvd, dv + o * kvd, datt + o * qd, s.att + o * qd,
                              s.lse + o * H, s.q + o * qd, s.k + o * kvd, s.v + o * kvd, 1, len, H, KV, hd,
                              scale, c->sliding_window);
        }
    if (r->rot_dim) {
        be->rope_bwd(be->ctx, dq, n, H, hd, r->rot_dim, r->pos, r->inv_freq, r->attn_scale);
        be->rope_bwd(be->ctx, dk, n, KV, hd, r->rot_dim, r->pos, r->inv_freq, r->attn_scale);
    }
    if (c->clip_qkv > 0) { /* through the clamps: zero where they cut */
        float cl = (float)c->clip_qkv;
        be->clamp_bwd(be->ctx, dq, dq, s.qc, n * qd, cl);
        be->clamp_bwd(be->ctx, dk, dk, s.kc, n * kvd, cl);
        be->clamp_bwd(be->ctx, dv, dv, s.vc, n * kvd, cl);
    }
    const float *dys[3] = {dq, dk, dv};
    if (qkn) { /* through the per-head norms: datt is free again */
        float eps = (float)c->norm_eps;
        be->zero(be->ctx, datt, (size_t)(n * qd) * sizeof(float));
        be->zero(be->ctx, dkpre, (size_t)(n * kvd) * sizeof(float));
        int64_t qw = W->vec_n[LMC_V_Q_NORM], kw = W->vec_n[LMC_V_K_NORM]; /* hd, or the whole row */
        be->rmsnorm_bwd(be->ctx, datt, (float *)G->vec[LMC_V_Q_NORM], dq, s.qpre, W->vec[LMC_V_Q_NORM],
                        n * H * hd / qw, qw, eps);
        be->rmsnorm_bwd(be->ctx, dkpre, (float *)G->vec[LMC_V_K_NORM], dk, s.kpre, W->vec[LMC_V_K_NORM],
                        n * KV * hd / kw, kw, eps);
        dys[0] = datt;
        dys[1] = dkpre;
    }
    const struct lmc_linear *L[3] = {&W->lin[LMC_L_Q], &W->lin[LMC_L_K], &W->lin[LMC_L_V]};
    const struct lmc_linear *D[3] = {&G->lin[LMC_L_Q], &G->lin[LMC_L_K], &G->lin[LMC_L_V]};
    lmc_linear_bwd(be, 3, L, D, dh, dys, h, n, false);
}

static const char *attn_missing(const struct lmc_backend *be, const struct lmc_config *c, bool backward) {
    bool rope = lmc_arch_rot_dim(lmc_arch_of(c), c) > 0;
    if (!be->attention_train) return "attention_train";
    if (rope && !be->rope) return "rope";
    if (c->qk_norm && !be->rmsnorm) return "rmsnorm";
    if (c->clip_qkv > 0 && !be->clamp) return "clamp";
    if (backward) {
        if (!be->attention_bwd) return "attention_bwd";
        if (rope && !be->rope_bwd) return "rope_bwd";
        if (c->qk_norm && !be->rmsnorm_bwd) return "rmsnorm_bwd";
        if (c->clip_qkv > 0 && !be->clamp_bwd) return "clamp_bwd";
    }
    return NULL;
}

static int64_t attn_kv_row(const struct lmc_config *c) { return c->num_kv_heads * c->head_dim; }
static int64_t attn_slot_bytes(const struct lmc_config *c) {
    (void)c;
    return 0;
}

const struct lmc_part_ops lmc_mixer_attention = {
    .name = "attention",
    .save_floats = attn_save_floats,
    .bwd_floats = attn_bwd_floats,
    .fwd = attn_fwd,
    .bwd = attn_bwd,
    .missing = attn_missing,
    .kv_row = attn_kv_row,
    .slot_bytes = attn_slot_bytes,
    .lowp_floats = attn_lowp_floats,
};
