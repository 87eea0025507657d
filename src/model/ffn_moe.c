/* ffn_moe.c — the mixture-of-experts feed-forward part (lmc_ffn_moe): a
 * router linear (num_experts rows; its products in f32 even in a
 * mixed-precision training mode, lmc_linear_fwd_f32), softmax over the experts, the top-k
 * experts per token (ties to the lower index, as torch.topk), their
 * probabilities renormalised when the config says so (norm_topk_prob;
 * always in Mixtral), and SwiGLU experts. Tokens are grouped by expert (a
 * counting sort of the n x k choices) so that each expert runs one GEMM
 * over its rows (the backend's grouped GEMM, moe_gemm, for plain dense
 * experts; else lmc_linear per expert, any weight format); the weighted
 * expert outputs are summed per token onto the residual. A shared expert
 * (Qwen2-MoE: shared_expert_intermediate_size > 0, a dense SwiGLU in the
 * block's gate/up/down slots) adds sigmoid(h . shared_gate) times its
 * output for every token. Layers without experts (Qwen's
 * decoder_sparse_step / mlp_only_layers) run the dense SwiGLU MLP
 * (lmc_ffn_swiglu) in the same slots. Forward in every
 * run mode (each row of a batched step is routed on its own) and backward
 * through the experts and the router. Routing, the gather into expert
 * order and the weighted combine are the backend's moe_* ops (any
 * backend: the host sees only the E + 1 group offsets).
 * Training steps record each layer's expert load (lmc_moe_stats) and the
 * backward adds the load-balancing loss's gradient (lmc_moe_aux_loss). */
#include "core/core.h"
#include "model/arch.h"
#include "model/moe_ep.h"
#include "dist/comm.h"

#include <math.h>
#include <string.h>

#define A16(n) (((n) + 15) / 16 * 16)

/* The pieces of the save region (floats; index arrays stored as int32). */
struct moe_save {
    struct lmc_moe_routing rt; /* probs, sel, wts, perm, row, off (backend.h) */
    float *xs;          /* (n k, C) gathered inputs */
    float *g, *u, *a;   /* (n k, I) gate, up, silu(gate) * up */
    float *o;           /* (n k, C) expert outputs */
    float *sg, *su, *sa; /* (n, SI) the shared expert's gate, up, act (when it exists) */
    float *so;          /* (n, C) its output */
    float *sl;          /* (n) its gate logit */
};

static int64_t carve(const struct lmc_config *c, int64_t n, float *p, struct moe_save *s) {
    int64_t E = c->num_experts, k = c->num_experts_per_tok, C = c->hidden_size;
    int64_t I = c->moe_intermediate_size, nk = n * k, at = 0;
#define TAKE(field, type, count) \
    if (s) s->field = (type *)(p + at); \
    at += A16(count)
    TAKE(rt.probs, float, n * E);
    TAKE(rt.sel, int32_t, nk);
    TAKE(rt.wts, float, nk);
    TAKE(rt.perm, int32_t, nk);
    TAKE(rt.row, int32_t, nk);
    TAKE(rt.off, int64_t, 2 * (E + 1));
    TAKE(xs, float, nk * C);
    TAKE(g, float, nk * I);
    TAKE(u, float, nk * I);
    TAKE(a, float, nk * I);
    TAKE(o, float, nk * C);
    int64_t SI = c->shared_expert_intermediate_size;
    if (SI > 0) {
        TAKE(sg, float, n * SI);
        TAKE(su, float, n * SI);
        TAKE(sa, float, n * SI);
        TAKE(so, float, n * C);
        TAKE(sl, float, n);
    }
#undef TAKE
    return at;
}

/* Whether some layer has the dense MLP (Qwen's decoder_sparse_step / mlp_only_layers). */
static bool any_dense(const struct lmc_config *c) {
    for (int64_t l = 0; l < c->num_layers; l++)
        if (!lmc_config_layer_sparse(c, l)) return true;
    return false;
}

static int64_t moe_save_floats(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode) {
    int64_t m = carve(c, n, NULL, NULL), d = any_dense(c) ? lmc_ffn_swiglu.save_floats(c, n, mode) : 0;
    return m > d ? m : d;
}

static int64_t moe_bwd_floats(const struct lmc_config *c, int64_t n) {
    int64_t nk = n * c->num_experts_per_tok, SI = c->shared_expert_intermediate_size;
    int64_t shared = SI > 0 ? A16(n * c->hidden_size) + 2 * A16(n * SI) + A16(n) : 0;
    int64_t m = A16(nk * c->hidden_size) + 2 * A16(nk * c->moe_intermediate_size) + A16(n * c->num_experts) + shared;
    int64_t d = any_dense(c) ? lmc_ffn_swiglu.bwd_floats(c, n) : 0;
    return m > d ? m : d;
}

/* The backend's grouped GEMM applies when every expert linear is a plain
 * dense weight (no bias, adapter, block format or input observer); else
 * one lmc_linear call per expert. */
static bool grouped(const struct lmc_backend *be, const struct lmc_linear *X, int64_t E, bool backward) {
    if (!be->moe_gemm || (backward && !be->moe_gemm_bwd)) return false;
    for (int64_t i = 0; i < E * LMC_X_N; i++) {
        const struct lmc_linear *L = &X[i];
        if (L->format != LMC_WFMT_DENSE || L->bias || L->n_adapters || L->observe) return false;
    }
    return true;
}

#define MAX_E 4096 /* lmc_arch_moe_check's bound */

static void mats(const struct lmc_linear *X, int64_t E, int x, const struct lmc_mat **out) {
    for (int64_t e = 0; e < E; e++) out[e] = &X[e * LMC_X_N + x].w;
}

static void grads(const struct lmc_linear *GX, int64_t E, int x, float **out) {
    for (int64_t e = 0; e < E; e++) out[e] = (float *)GX[e * LMC_X_N + x].w.data;
}

void lmc_moe_experts_fwd(const struct lmc_backend *be, const struct lmc_config *c,
                         const struct lmc_linear *X, int64_t E, const int64_t *off, const float *xs,
                         float *g, float *u, float *a, float *o) {
    int64_t C = c->hidden_size, I = c->moe_intermediate_size, rows = off[E];
    for (int64_t e = 0; e < E; e++) /* unbound: another rank's expert, and the weights lost their ep group */
        LMC_ASSERT(off[e + 1] == off[e] || X[e * LMC_X_N + LMC_X_DOWN].w.data);
    const struct lmc_mat *wp[MAX_E] = {0};
    bool grp = grouped(be, X, E, false);
    if (grp && be->moe_gemm_multi) { /* gate and up as one call (on the CPU: one job) */
        const struct lmc_mat *wu[MAX_E];
        mats(X, E, LMC_X_GATE, wp);
        mats(X, E, LMC_X_UP, wu);
        const struct lmc_mat *const *ws[2] = {wp, wu};
        float *ys[2] = {g, u};
        be->moe_gemm_multi(be->ctx, 2, ys, xs, off, E, ws);
    } else if (grp) {
        mats(X, E, LMC_X_GATE, wp);
        be->moe_gemm(be->ctx, g, xs, off, E, wp);
        mats(X, E, LMC_X_UP, wp);
        be->moe_gemm(be->ctx, u, xs, off, E, wp);
    }
    for (int64_t e = 0; !grp && e < E; e++) { /* one GEMM per expert over its rows */
        int64_t r0 = off[e], m = off[e + 1] - r0;
        if (!m) continue;
        const struct lmc_linear *GU[2] = {&X[e * LMC_X_N + LMC_X_GATE], &X[e * LMC_X_N + LMC_X_UP]};
        float *ys[2] = {g + r0 * I, u + r0 * I};
        lmc_linear_fwd(be, 2, GU, ys, xs + r0 * C, m);
    }
    if (rows > 0) be->swiglu(be->ctx, a, g, u, rows * I);
    if (grp) {
        mats(X, E, LMC_X_DOWN, wp);
        be->moe_gemm(be->ctx, o, a, off, E, wp);
    }
    for (int64_t e = 0; !grp && e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0;
        if (!m) continue;
        const struct lmc_linear *D = &X[e * LMC_X_N + LMC_X_DOWN];
        float *op = o + r0 * C;
        lmc_linear_fwd(be, 1, &D, &op, a + r0 * I, m);
    }
}

/* Whether the forward may take the backend's device-offset grouped GEMM
 * (moe_gemm_dev: no host copy of the offsets, no wait per layer): plain
 * BF16 experts, inference (no load statistics), and few rows per expert
 * (at most 64 on average: decode and short prompts; larger batches keep
 * the per-expert GEMMs of moe_gemm). Off for now: on an H100
 * (bench/gpu_moe.sh, 2026-12-05, bench/results/gpu-more-2026-12-05.md) the
 * grouped kernel ran 1.9-8x slower than the per-expert cuBLASLt loop at 1
 * to 4096 tokens, and batch-64 decode of a Mixtral-shape model took 12.5
 * ms/step through it against 6.8 with the loop; set LMC_MOE_DEV_GROUPED to
 * 1 once the kernel is faster. */
#define LMC_MOE_DEV_GROUPED 0
static bool dev_grouped(const struct lmc_backend *be, const struct lmc_linear *X, int64_t E, int64_t nk) {
    if (!LMC_MOE_DEV_GROUPED || !be->moe_gemm_dev || nk > 64 * E || !grouped(be, X, E, false)) return false;
    for (int64_t i = 0; i < E * LMC_X_N; i++)
        if (X[i].w.dtype != LMC_DTYPE_BF16 || !X[i].w.data) return false;
    return true;
}

/* lmc_moe_experts_fwd through moe_gemm_dev: off in backend memory, every
 * expert at most max_rows of the nk rows. */
static void experts_fwd_dev(const struct lmc_backend *be, const struct lmc_config *c, const struct lmc_linear *X,
                            int64_t E, const int64_t *off, int64_t max_rows, int64_t nk, const float *xs, float *g,
                            float *u, float *a, float *o) {
    const struct lmc_mat *wp[MAX_E] = {0};
    mats(X, E, LMC_X_GATE, wp);
    be->moe_gemm_dev(be->ctx, g, xs, off, max_rows, E, wp);
    mats(X, E, LMC_X_UP, wp);
    be->moe_gemm_dev(be->ctx, u, xs, off, max_rows, E, wp);
    be->swiglu(be->ctx, a, g, u, nk * c->moe_intermediate_size);
    mats(X, E, LMC_X_DOWN, wp);
    be->moe_gemm_dev(be->ctx, o, a, off, max_rows, E, wp);
}

void lmc_moe_experts_bwd(const struct lmc_backend *be, const struct lmc_config *c,
                         const struct lmc_linear *X, const struct lmc_linear *GX, int64_t E,
                         const int64_t *off, float *dox, float *da, float *du, const float *xs,
                         const float *g, const float *u, const float *a) {
    int64_t C = c->hidden_size, I = c->moe_intermediate_size, rows = off[E];
    const struct lmc_mat *wp[MAX_E] = {0};
    float *dw[MAX_E] = {0};
    bool grp = grouped(be, X, E, true);
    if (grp) {
        mats(X, E, LMC_X_DOWN, wp);
        grads(GX, E, LMC_X_DOWN, dw);
        be->moe_gemm_bwd(be->ctx, da, dw, dox, a, off, E, wp, 0);
    }
    for (int64_t e = 0; !grp && e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0;
        if (!m) continue;
        const struct lmc_linear *D = &X[e * LMC_X_N + LMC_X_DOWN];
        const struct lmc_linear *GD = &GX[e * LMC_X_N + LMC_X_DOWN];
        const float *d = dox + r0 * C;
        lmc_linear_bwd(be, 1, &D, &GD, da + r0 * I, &d, a + r0 * I, m, false);
    }
    if (rows > 0) be->swiglu_bwd(be->ctx, da, du, da, g, u, rows * I); /* dgate over da */
    if (grp) { /* dox now holds d(xs) */
        mats(X, E, LMC_X_GATE, wp);
        grads(GX, E, LMC_X_GATE, dw);
        be->moe_gemm_bwd(be->ctx, dox, dw, da, xs, off, E, wp, 0);
        mats(X, E, LMC_X_UP, wp);
        grads(GX, E, LMC_X_UP, dw);
        be->moe_gemm_bwd(be->ctx, dox, dw, du, xs, off, E, wp, 1);
    }
    for (int64_t e = 0; !grp && e < E; e++) { /* dox now holds d(xs) */
        int64_t r0 = off[e], m = off[e + 1] - r0;
        if (!m) continue;
        const struct lmc_linear *Xe = &X[e * LMC_X_N], *GXe = &GX[e * LMC_X_N];
        const struct lmc_linear *L[2] = {&Xe[LMC_X_GATE], &Xe[LMC_X_UP]};
        const struct lmc_linear *Dg[2] = {&GXe[LMC_X_GATE], &GXe[LMC_X_UP]};
        const float *dys[2] = {da + r0 * I, du + r0 * I};
        lmc_linear_bwd(be, 2, L, Dg, dox + r0 * C, dys, xs + r0 * C, m, false);
    }
}

/* The sparse layer over n rows of h (n may be 0 under expert parallelism:
 * the rank still takes part in the exchange). */
static void moe_fwd_rows(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                         const float *h, const float *res, float *y, int64_t n) {
    const struct lmc_backend *be = r->be;
    const struct lmc_config *c = r->cfg;
    int64_t E = c->num_experts, k = c->num_experts_per_tok, C = c->hidden_size;
    struct moe_save s;
    carve(c, n, save, &s);
    const struct lmc_linear *R = &W->lin[LMC_L_ROUTER];
    if (n > 0) lmc_linear_fwd_f32(be, 1, &R, &s.rt.probs, h, n); /* routing in f32 in every precision */
    int64_t off[MAX_E + 1]; /* host copy of s.rt.off (not made on the device-offset path) */
    bool dev = !W->ep && !r->moe && n > 0 && dev_grouped(be, W->experts, E, n * k);
    be->moe_route(be->ctx, &s.rt, dev ? NULL : off, n, E, k, c->norm_topk_prob);
    if (r->moe) { /* this layer's expert load (assigned: a recomputed layer writes it again) */
        LMC_ASSERT(l < r->moe->L && r->moe->E == E);
        be->moe_stats(be->ctx, r->moe->count + l * E, r->moe->psum + l * E, s.rt.sel, s.rt.probs, n, k, E);
    }
    if (n > 0) be->moe_gather(be->ctx, s.xs, h, s.rt.perm, n * k, k, C);
    if (W->ep)
        lmc_ep_experts_fwd(W->ep, l, be, c, W->experts, off, s.xs, n * k, s.o);
    else if (dev) /* a token picks an expert once: at most n rows each */
        experts_fwd_dev(be, c, W->experts, E, s.rt.off, n, n * k, s.xs, s.g, s.u, s.a, s.o);
    else
        lmc_moe_experts_fwd(be, c, W->experts, E, off, s.xs, s.g, s.u, s.a, s.o);
    int64_t SI = c->shared_expert_intermediate_size;
    if (SI > 0 && n > 0) { /* the shared expert and its gate logit */
        const struct lmc_linear *GU[3] = {&W->lin[LMC_L_GATE], &W->lin[LMC_L_UP], &W->lin[LMC_L_SHARED_GATE]};
        float *ys[3] = {s.sg, s.su, s.sl};
        lmc_linear_fwd(be, 3, GU, ys, h, n);
        be->swiglu(be->ctx, s.sa, s.sg, s.su, n * SI);
        const struct lmc_linear *D = &W->lin[LMC_L_DOWN];
        lmc_linear_fwd(be, 1, &D, &s.so, s.sa, n);
    }
    if (n > 0) be->moe_combine(be->ctx, y, res, s.o, s.rt.wts, s.rt.row, SI > 0 ? s.so : NULL, s.sl, n, k, C);
}

static void moe_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                    const float *h, const float *res, float *y) {
    if (!lmc_config_layer_sparse(r->cfg, l)) { /* a dense layer: the SwiGLU MLP */
        lmc_ffn_swiglu.fwd(r, l, W, save, h, res, y);
        return;
    }
    struct lmc_ep_group *g = W->ep;
    if (!g || !g->replicated) {
        moe_fwd_rows(r, l, W, save, h, res, y, r->n);
        return;
    }
    /* every rank holds the same rows: each runs its slice, then all gather them */
    LMC_ASSERT(!r->moe);
    int64_t C = r->cfg->hidden_size, t0, tn, W_ = g->c->world, per = (r->n + W_ - 1) / W_;
    lmc_dist_slice(r->n, g->c->rank, (int)W_, &t0, &tn);
    moe_fwd_rows(r, l, W, save, h + t0 * C, res + t0 * C, y + t0 * C, tn);
    lmc_ep_gather_rows(g, y, r->n, C, per);
}

static void moe_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                    const struct lmc_block_w *G, const float *save, const float *h, const float *dy,
                    float *dh, float *scratch) {
    if (!lmc_config_layer_sparse(r->cfg, l)) {
        lmc_ffn_swiglu.bwd(r, l, W, G, save, h, dy, dh, scratch);
        return;
    }
    const struct lmc_backend *be = r->be;
    const struct lmc_config *c = r->cfg;
    int64_t n = r->n, E = c->num_experts, k = c->num_experts_per_tok, C = c->hidden_size;
    int64_t I = c->moe_intermediate_size, nk = n * k;
    const double *aux = r->moe ? r->moe->dp : NULL;
    struct moe_save s;
    carve(c, n, (float *)save, &s);
    float *dox = scratch, *da = dox + A16(nk * C), *du = da + A16(nk * I), *dlog = du + A16(nk * I);
    int64_t SI = c->shared_expert_intermediate_size;
    float *dso = dlog + A16(n * E), *dsg = dso + A16(n * C), *dsu = dsg + A16(n * SI), *dsl = dsu + A16(n * SI);
    int64_t off[MAX_E + 1]; /* host copy of s.rt.off */
    be->download(be->ctx, off, s.rt.off, (size_t)(E + 1) * sizeof *off);
    /* d(o) into dox's grouped rows, d(router logits) into dlog; the shared expert's d(out), d(gate logit) */
    if (n > 0)
        be->moe_combine_bwd(be->ctx, dox, dlog, dso, dsl, dy, s.o, &s.rt, SI > 0 ? s.so : NULL, s.sl, aux, n, E, k,
                            C, c->norm_topk_prob);
    if (W->ep) /* dox: d(o) in, d(xs) out */
        lmc_ep_experts_bwd(W->ep, l, be, c, W->experts, G->experts, off, dox, nk);
    else
        lmc_moe_experts_bwd(be, c, W->experts, G->experts, E, off, dox, da, du, s.xs, s.g, s.u, s.a);
    if (n > 0) be->moe_gather_bwd(be->ctx, dh, dox, s.rt.row, n, k, C);
    const struct lmc_linear *R = &W->lin[LMC_L_ROUTER], *GR = &G->lin[LMC_L_ROUTER];
    const float *dl = dlog;
    lmc_linear_bwd_f32(be, 1, &R, &GR, dh, &dl, h, n, true);
    if (SI <= 0) return;
    /* shared expert: y += sig(l) so */
    const struct lmc_linear *D = &W->lin[LMC_L_DOWN], *GD = &G->lin[LMC_L_DOWN];
    const float *d = dso;
    lmc_linear_bwd(be, 1, &D, &GD, dsg, &d, s.sa, n, false);
    be->swiglu_bwd(be->ctx, dsg, dsu, dsg, s.sg, s.su, n * SI); /* dgate over dsg */
    const struct lmc_linear *L[3] = {&W->lin[LMC_L_GATE], &W->lin[LMC_L_UP], &W->lin[LMC_L_SHARED_GATE]};
    const struct lmc_linear *GL[3] = {&G->lin[LMC_L_GATE], &G->lin[LMC_L_UP], &G->lin[LMC_L_SHARED_GATE]};
    const float *dys[3] = {dsg, dsu, dsl};
    lmc_linear_bwd(be, 3, L, GL, dh, dys, h, n, true);
}

static const char *moe_missing(const struct lmc_backend *be, const struct lmc_config *c, bool backward) {
    if (!be->moe_route) return "moe_route";
    if (!be->moe_gather) return "moe_gather";
    if (!be->moe_combine) return "moe_combine";
    if (!be->swiglu) return "swiglu";
    if (backward && !be->moe_stats) return "moe_stats";
    if (backward && !be->moe_gather_bwd) return "moe_gather_bwd";
    if (backward && !be->moe_combine_bwd) return "moe_combine_bwd";
    if (backward && !be->swiglu_bwd) return "swiglu_bwd";
    if (c->num_experts_per_tok > 64) return "mixture-of-experts top-k above 64";
    return any_dense(c) ? lmc_ffn_swiglu.missing(be, c, backward) : NULL;
}

double lmc_moe_aux_loss(const struct lmc_config *c, struct lmc_moe_stats *s, int64_t n, double weight) {
    int64_t E = s->E, Ls = 0;
    LMC_ASSERT(E == c->num_experts && s->L == c->num_layers);
    for (int64_t l = 0; l < s->L; l++) Ls += lmc_config_layer_sparse(c, l);
    double rows = (double)Ls * (double)n, aux = 0;
    for (int64_t e = 0; e < E; e++) {
        double f = 0, P = 0;
        for (int64_t l = 0; l < s->L; l++) {
            f += s->count[l * E + e];
            P += s->psum[l * E + e];
        }
        f = rows > 0 ? f / rows : 0;
        P = rows > 0 ? P / rows : 0;
        aux += f * P;
        s->dp[e] = rows > 0 ? weight * (double)E * f / rows : 0; /* d(E f P) / d p = E f / rows */
    }
    return aux * (double)E;
}

static int64_t none(const struct lmc_config *c) {
    (void)c;
    return 0;
}

const struct lmc_part_ops lmc_ffn_moe = {
    .name = "moe_swiglu",
    .save_floats = moe_save_floats,
    .bwd_floats = moe_bwd_floats,
    .fwd = moe_fwd,
    .bwd = moe_bwd,
    .missing = moe_missing,
    .kv_row = none,
    .slot_bytes = none,
};
