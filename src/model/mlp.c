/* mlp.c — the dense feed-forward parts: SwiGLU (gate/up in one fused job,
 * silu(gate) * up, down with the residual; lmc_ffn_swiglu) and the GELU MLP
 * (up, gelu, down; lmc_ffn_gelu), forward in every run mode and backward. */
#include "core/core.h"
#include "model/arch.h"

#define A16(n) (((n) + 15) / 16 * 16)

static int64_t none(const struct lmc_config *c) {
    (void)c;
    return 0;
}

/* ---- SwiGLU: save = gate, up, act (training) / two (n, I) scratch rows (inference) */

static int64_t glu_save_floats(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode) {
    return (mode == LMC_RUN_TRAIN ? 3 : 2) * A16(n * c->intermediate_size);
}

static int64_t glu_bwd_floats(const struct lmc_config *c, int64_t n) {
    return 2 * A16(n * c->intermediate_size);
}

static void glu_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                    const float *h, const float *res, float *y) {
    (void)l;
    const struct lmc_backend *be = r->be;
    int64_t n = r->n, nI = A16(n * r->cfg->intermediate_size);
    float *gate = save, *up = save + nI, *act = save + 2 * nI;
    if (r->mode != LMC_RUN_TRAIN) {
        lmc_linear_fwd_swiglu(be, &W->lin[LMC_L_GATE], &W->lin[LMC_L_UP], gate, h, n, up);
        lmc_linear_fwd_res(be, &W->lin[LMC_L_DOWN], y, res, gate, n, r->tmp);
        return;
    }
    if (r->ffn_act) act = r->ffn_act; /* selective recomputation: not kept */
    const struct lmc_linear *L[2] = {&W->lin[LMC_L_GATE], &W->lin[LMC_L_UP]};
    float *ys[2] = {gate, up};
    lmc_linear_fwd(be, 2, L, ys, h, n);
    be->swiglu(be->ctx, act, gate, up, n * r->cfg->intermediate_size);
    lmc_linear_fwd_res(be, &W->lin[LMC_L_DOWN], y, res, act, n, r->tmp);
}

static void glu_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                    const struct lmc_block_w *G, const float *save, const float *h, const float *dy,
                    float *dh, float *scratch) {
    (void)l;
    const struct lmc_backend *be = r->be;
    int64_t n = r->n, I = r->cfg->intermediate_size, nI = A16(n * I);
    const float *gate = save, *up = save + nI, *act = save + 2 * nI;
    float *dact = scratch, *dup = scratch + nI;
    if (r->ffn_act) { /* selective recomputation: the product again, as the forward made it */
        be->swiglu(be->ctx, r->ffn_act, gate, up, n * I);
        act = r->ffn_act;
    }
    const struct lmc_linear *Dn = &W->lin[LMC_L_DOWN], *GDn = &G->lin[LMC_L_DOWN];
    lmc_linear_bwd(be, 1, &Dn, &GDn, dact, &dy, act, n, false);
    be->swiglu_bwd(be->ctx, dact, dup, dact, gate, up, n * I); /* dgate over dact */
    const struct lmc_linear *L[2] = {&W->lin[LMC_L_GATE], &W->lin[LMC_L_UP]};
    const struct lmc_linear *D[2] = {&G->lin[LMC_L_GATE], &G->lin[LMC_L_UP]};
    const float *dys[2] = {dact, dup};
    lmc_linear_bwd(be, 2, L, D, dh, dys, h, n, false);
}

/* the training region's last A16(n I): the product (selective recomputation keeps it out) */
static int64_t act_floats(const struct lmc_config *c, int64_t n) {
    return A16(n * c->intermediate_size);
}

/* bf16-saved activations: the whole region (gate, up, the product) */
static int64_t glu_lowp_floats(const struct lmc_config *c, int64_t n) {
    return 3 * A16(n * c->intermediate_size);
}

static const char *glu_missing(const struct lmc_backend *be, const struct lmc_config *c, bool backward) {
    (void)c;
    if (!be->swiglu) return "swiglu";
    if (backward && !be->swiglu_bwd) return "swiglu_bwd";
    return NULL;
}

const struct lmc_part_ops lmc_ffn_swiglu = {
    .name = "swiglu",
    .save_floats = glu_save_floats,
    .bwd_floats = glu_bwd_floats,
    .fwd = glu_fwd,
    .bwd = glu_bwd,
    .missing = glu_missing,
    .kv_row = none,
    .slot_bytes = none,
    .act_floats = act_floats,
    .lowp_floats = glu_lowp_floats,
};

/* ---- GELU MLP: save = up (pre-activation), act (training) / one (n, I) row (inference) */

static int64_t gelu_save_floats(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode) {
    return (mode == LMC_RUN_TRAIN ? 2 : 1) * A16(n * c->intermediate_size);
}

static int64_t gelu_bwd_floats(const struct lmc_config *c, int64_t n) {
    return A16(n * c->intermediate_size);
}

static void gelu_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                     const float *h, const float *res, float *y) {
    (void)l;
    const struct lmc_backend *be = r->be;
    const struct lmc_config *c = r->cfg;
    int64_t n = r->n, nI = A16(n * c->intermediate_size);
    float *up = save, *act = r->mode == LMC_RUN_TRAIN ? save + nI : save;
    if (r->mode == LMC_RUN_TRAIN && r->ffn_act) act = r->ffn_act; /* selective recomputation: not kept */
    const struct lmc_linear *U = &W->lin[LMC_L_UP];
    lmc_linear_fwd(be, 1, &U, &up, h, n);
    be->gelu(be->ctx, act, up, n * c->intermediate_size, c->act == LMC_ACT_GELU_TANH);
    lmc_linear_fwd_res(be, &W->lin[LMC_L_DOWN], y, res, act, n, r->tmp);
}

static void gelu_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                     const struct lmc_block_w *G, const float *save, const float *h, const float *dy,
                     float *dh, float *scratch) {
    (void)l;
    const struct lmc_backend *be = r->be;
    const struct lmc_config *c = r->cfg;
    int64_t n = r->n, nI = A16(n * c->intermediate_size);
    const float *up = save, *act = save + nI;
    float *dact = scratch;
    if (r->ffn_act) { /* selective recomputation: the product again, as the forward made it */
        be->gelu(be->ctx, r->ffn_act, up, n * c->intermediate_size, c->act == LMC_ACT_GELU_TANH);
        act = r->ffn_act;
    }
    const struct lmc_linear *Dn = &W->lin[LMC_L_DOWN], *GDn = &G->lin[LMC_L_DOWN];
    lmc_linear_bwd(be, 1, &Dn, &GDn, dact, &dy, act, n, false);
    be->gelu_bwd(be->ctx, dact, dact, up, n * c->intermediate_size, c->act == LMC_ACT_GELU_TANH);
    const struct lmc_linear *U = &W->lin[LMC_L_UP], *GU = &G->lin[LMC_L_UP];
    const float *d = dact;
    lmc_linear_bwd(be, 1, &U, &GU, dh, &d, h, n, false);
}

/* bf16-saved activations: the whole region (the pre-activation, the product) */
static int64_t gelu_lowp_floats(const struct lmc_config *c, int64_t n) {
    return 2 * A16(n * c->intermediate_size);
}

static const char *gelu_missing(const struct lmc_backend *be, const struct lmc_config *c, bool backward) {
    (void)c;
    if (!be->gelu) return "gelu";
    if (backward && !be->gelu_bwd) return "gelu_bwd";
    return NULL;
}

const struct lmc_part_ops lmc_ffn_gelu = {
    .name = "gelu_mlp",
    .save_floats = gelu_save_floats,
    .bwd_floats = gelu_bwd_floats,
    .fwd = gelu_fwd,
    .bwd = gelu_bwd,
    .missing = gelu_missing,
    .kv_row = none,
    .slot_bytes = none,
    .act_floats = act_floats,
    .lowp_floats = gelu_lowp_floats,
};
