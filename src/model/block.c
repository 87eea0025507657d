/* block.c — the one block (see block.h): norm ops tables (RMSNorm,
 * LayerNorm), the block's forward and backward over the architecture's
 * mixer and feed-forward parts, and the sizes of what it keeps. */
#include "model/block.h"
#include "core/core.h"
#include "model/arch.h"
#include "dist/tp.h" /* the vocabulary-parallel lookup (lmc_weights.vocab) */
#include "dist/comm.h"
#include "model/linear.h"

static void rms_fwd(const struct lmc_backend *be, float *y, const float *x, const float *w,
                    const float *b, int64_t M, int64_t C, float eps) {
    (void)b;
    be->rmsnorm(be->ctx, y, x, w, M, C, eps);
}

static void rms_bwd(const struct lmc_backend *be, float *dx, float *dw, float *db, const float *dy,
                    const float *x, const float *w, int64_t M, int64_t C, float eps) {
    (void)db;
    be->rmsnorm_bwd(be->ctx, dx, dw, dy, x, w, M, C, eps);
}

static const char *rms_missing(const struct lmc_backend *be, bool backward) {
    if (!be->rmsnorm) return "rmsnorm";
    if (backward && !be->rmsnorm_bwd) return "rmsnorm_bwd";
    return NULL;
}

static void ln_fwd(const struct lmc_backend *be, float *y, const float *x, const float *w,
                   const float *b, int64_t M, int64_t C, float eps) {
    be->layernorm(be->ctx, y, x, w, b, M, C, eps);
}

static void ln_bwd(const struct lmc_backend *be, float *dx, float *dw, float *db, const float *dy,
                   const float *x, const float *w, int64_t M, int64_t C, float eps) {
    be->layernorm_bwd(be->ctx, dx, dw, db, dy, x, w, M, C, eps);
}

static const char *ln_missing(const struct lmc_backend *be, bool backward) {
    if (!be->layernorm) return "layernorm";
    if (backward && !be->layernorm_bwd) return "layernorm_bwd";
    return NULL;
}

const struct lmc_norm_ops lmc_norm_rms = {"rmsnorm", rms_fwd, rms_bwd, rms_missing};
const struct lmc_norm_ops lmc_norm_layer = {"layernorm", ln_fwd, ln_bwd, ln_missing};

#define ALIGN16(n) (((n) + 15) / 16 * 16)

int64_t lmc_block_save_floats(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                              enum lmc_run_mode mode) {
    return lmc_block_save_floats_sp(a, c, n, n, mode);
}

int64_t lmc_block_save_floats_sp(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                                 int64_t m, enum lmc_run_mode mode) {
    int64_t per = mode == LMC_RUN_TRAIN ? 3 * ALIGN16(m * c->hidden_size) : 0;
    return per + ALIGN16(a->mixer->save_floats(c, n, mode)) +
           (a->ffn ? ALIGN16(a->ffn->save_floats(c, n, mode)) : 0);
}

float *lmc_block_save_carve(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                            enum lmc_run_mode mode, float *p, struct lmc_block_save *s) {
    return lmc_block_save_carve_sp(a, c, n, n, mode, p, s);
}

float *lmc_block_save_carve_sp(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m,
                               enum lmc_run_mode mode, float *p, struct lmc_block_save *s) {
    s->h1 = s->xmid = s->h2 = NULL;
    if (mode == LMC_RUN_TRAIN) {
        int64_t nc = ALIGN16(m * c->hidden_size);
        s->h1 = p;
        s->xmid = p + nc;
        s->h2 = p + 2 * nc;
        p += 3 * nc;
    }
    s->mix = p;
    p += ALIGN16(a->mixer->save_floats(c, n, mode));
    s->ffn = p;
    if (a->ffn) p += ALIGN16(a->ffn->save_floats(c, n, mode));
    return p;
}

static int64_t ffn_act_floats(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n) {
    return a->ffn && a->ffn->act_floats ? a->ffn->act_floats(c, n) : 0;
}

int64_t lmc_block_save_floats_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m) {
    int64_t ffn = a->ffn ? a->ffn->save_floats(c, n, LMC_RUN_TRAIN) - ffn_act_floats(a, c, n) : 0;
    return ALIGN16(m * c->hidden_size) + ALIGN16(a->mixer->save_floats(c, n, LMC_RUN_TRAIN)) +
           (a->ffn ? ALIGN16(ffn) : 0);
}

int64_t lmc_block_shared_floats_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                                    int64_t m) {
    return 2 * ALIGN16(m * c->hidden_size) + ALIGN16(ffn_act_floats(a, c, n));
}

float *lmc_block_carve_shared_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m,
                                  float *p, struct lmc_block_save *sh, float **act) {
    int64_t nc = ALIGN16(m * c->hidden_size), na = ffn_act_floats(a, c, n);
    sh->h1 = p;
    sh->h2 = p + nc;
    sh->xmid = sh->mix = sh->ffn = NULL;
    p += 2 * nc;
    *act = na > 0 ? p : NULL;
    return p + ALIGN16(na);
}

float *lmc_block_save_carve_sel(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n, int64_t m,
                                float *p, const struct lmc_block_save *sh, struct lmc_block_save *s) {
    s->h1 = sh->h1;
    s->h2 = sh->h2;
    s->xmid = p;
    p += ALIGN16(m * c->hidden_size);
    s->mix = p;
    p += ALIGN16(a->mixer->save_floats(c, n, LMC_RUN_TRAIN));
    s->ffn = p;
    if (a->ffn) p += ALIGN16(a->ffn->save_floats(c, n, LMC_RUN_TRAIN) - ffn_act_floats(a, c, n));
    return p;
}

void lmc_block_renorm(const struct lmc_run *r, const struct lmc_block_w *W, const struct lmc_block_save *s,
                      const float *x_in) {
    const struct lmc_architecture *a = r->arch;
    int64_t m = r->sp ? r->sp->m : r->n, C = r->cfg->hidden_size;
    float eps = (float)r->cfg->norm_eps;
    a->norm->fwd(r->be, s->h1, x_in, W->vec[LMC_V_NORM1], W->vec[LMC_V_NORM1_B], m, C, eps);
    if (a->ffn) a->norm->fwd(r->be, s->h2, s->xmid, W->vec[LMC_V_NORM2], W->vec[LMC_V_NORM2_B], m, C, eps);
}

int64_t lmc_block_bwd_floats(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n) {
    return LMC_MAX(a->mixer->bwd_floats(c, n), a->ffn ? a->ffn->bwd_floats(c, n) : 0);
}

/* ---- sequence parallelism (block.h, lmc_sp): the collectives over the
 * group (a failed one sticky in g->st, as the linears' are) */
void lmc_sp_gather(const struct lmc_sp *sp, float *full, const float *mine, int64_t C) {
    struct lmc_tp_group *g = sp->g;
    if (!g->st) g->st = g->c->all_gather(g->c, mine, full, sp->m * C, LMC_DTYPE_F32, &g->err);
}

static void sp_scatter(const struct lmc_sp *sp, float *mine, const float *full, int64_t C) {
    struct lmc_tp_group *g = sp->g;
    if (!g->st) g->st = g->c->reduce_scatter(g->c, full, mine, sp->m * C, LMC_DTYPE_F32, LMC_REDUCE_SUM, &g->err);
}

/* x_out (m rows) = x_in + the mixer's, then the feed-forward's, summed
 * partial outputs of this rank's rows (the rows of TP's all-reduced ones) */
static void sp_block_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                         const struct lmc_block_save *s, const float *x_in, float *x_out) {
    const struct lmc_sp *sp = r->sp;
    const struct lmc_architecture *a = r->arch;
    int64_t m = sp->m, C = r->cfg->hidden_size;
    float eps = (float)r->cfg->norm_eps, *H = sp->buf[0], *P = sp->buf[1], *S = sp->buf[2];
    LMC_ASSERT(a->ffn && s->xmid && x_out != x_in);
    a->norm->fwd(r->be, s->h1, x_in, W->vec[LMC_V_NORM1], W->vec[LMC_V_NORM1_B], m, C, eps);
    lmc_sp_gather(sp, H, s->h1, C);
    a->mixer->fwd(r, l, W, s->mix, H, NULL, P);
    sp_scatter(sp, S, P, C);
    r->be->add(r->be->ctx, s->xmid, x_in, S, m * C);
    a->norm->fwd(r->be, s->h2, s->xmid, W->vec[LMC_V_NORM2], W->vec[LMC_V_NORM2_B], m, C, eps);
    lmc_sp_gather(sp, H, s->h2, C);
    a->ffn->fwd(r, l, W, s->ffn, H, NULL, P);
    sp_scatter(sp, S, P, C);
    r->be->add(r->be->ctx, x_out, s->xmid, S, m * C);
}

/* dx (m rows) += the block's input gradient of this rank's rows; dh: (m, C) scratch */
static void sp_block_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                         const struct lmc_block_w *G, const struct lmc_block_save *s, const float *x_in,
                         float *dx, float *dh, float *scratch) {
    const struct lmc_sp *sp = r->sp;
    const struct lmc_architecture *a = r->arch;
    int64_t m = sp->m, C = r->cfg->hidden_size;
    float eps = (float)r->cfg->norm_eps, *DY = sp->buf[0], *H = sp->buf[1], *DH = sp->buf[2];
    lmc_sp_gather(sp, DY, dx, C);
    lmc_sp_gather(sp, H, s->h2, C);
    a->ffn->bwd(r, l, W, G, s->ffn, H, DY, DH, scratch);
    sp_scatter(sp, dh, DH, C);
    a->norm->bwd(r->be, dx, (float *)G->vec[LMC_V_NORM2], (float *)G->vec[LMC_V_NORM2_B], dh, s->xmid,
                 W->vec[LMC_V_NORM2], m, C, eps);
    lmc_sp_gather(sp, DY, dx, C);
    lmc_sp_gather(sp, H, s->h1, C);
    a->mixer->bwd(r, l, W, G, s->mix, H, DY, DH, scratch);
    sp_scatter(sp, dh, DH, C);
    a->norm->bwd(r->be, dx, (float *)G->vec[LMC_V_NORM1], (float *)G->vec[LMC_V_NORM1_B], dh, x_in,
                 W->vec[LMC_V_NORM1], m, C, eps);
}

void lmc_block_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                   const struct lmc_block_save *s, const float *x_in, float *x_out) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_architecture *a = r->arch;
    int64_t n = r->n, C = c->hidden_size;
    float eps = (float)c->norm_eps;
    if (r->sp) {
        sp_block_fwd(r, l, W, s, x_in, x_out);
        return;
    }
    a->norm->fwd(r->be, s->h1, x_in, W->vec[LMC_V_NORM1], W->vec[LMC_V_NORM1_B], n, C, eps);
    if (!a->ffn) { /* norm + mixer only (Mamba) */
        a->mixer->fwd(r, l, W, s->mix, s->h1, x_in, x_out);
        return;
    }
    float *xmid = s->xmid ? s->xmid : x_out;
    a->mixer->fwd(r, l, W, s->mix, s->h1, x_in, xmid);
    if (r->mode == LMC_RUN_SEQ && r->tail > 0 && r->tail < n) { /* only the last rows' output is needed */
        struct lmc_run rt = *r;
        rt.n = r->tail;
        int64_t o = (n - rt.n) * C;
        a->norm->fwd(r->be, s->h2, xmid + o, W->vec[LMC_V_NORM2], W->vec[LMC_V_NORM2_B], rt.n, C, eps);
        a->ffn->fwd(&rt, l, W, s->ffn, s->h2, xmid + o, x_out + o);
        return;
    }
    a->norm->fwd(r->be, s->h2, xmid, W->vec[LMC_V_NORM2], W->vec[LMC_V_NORM2_B], n, C, eps);
    a->ffn->fwd(r, l, W, s->ffn, s->h2, xmid, x_out);
}

void lmc_block_fwd_mixer(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                         const struct lmc_block_save *s, const float *x_in) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_architecture *a = r->arch;
    int64_t n = r->n, C = c->hidden_size;
    float eps = (float)c->norm_eps;
    LMC_ASSERT(a->ffn && s->xmid && !r->sp);
    a->norm->fwd(r->be, s->h1, x_in, W->vec[LMC_V_NORM1], W->vec[LMC_V_NORM1_B], n, C, eps);
    a->mixer->fwd(r, l, W, s->mix, s->h1, x_in, s->xmid);
    a->norm->fwd(r->be, s->h2, s->xmid, W->vec[LMC_V_NORM2], W->vec[LMC_V_NORM2_B], n, C, eps);
}

void lmc_block_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                   const struct lmc_block_w *G, const struct lmc_block_save *s, const float *x_in,
                   float *dx, float *dh, float *scratch) {
    const struct lmc_config *c = r->cfg;
    const struct lmc_architecture *a = r->arch;
    int64_t n = r->n, C = c->hidden_size;
    float eps = (float)c->norm_eps;
    LMC_ASSERT(s->xmid);
    if (r->sp) {
        sp_block_bwd(r, l, W, G, s, x_in, dx, dh, scratch);
        return;
    }
    if (a->ffn) {
        /* x_out = xmid + ffn(norm2(xmid)); xmid = x_in + mixer(norm1(x_in)) */
        a->ffn->bwd(r, l, W, G, s->ffn, s->h2, dx, dh, scratch);
        a->norm->bwd(r->be, dx, (float *)G->vec[LMC_V_NORM2], (float *)G->vec[LMC_V_NORM2_B], dh, s->xmid,
                     W->vec[LMC_V_NORM2], n, C, eps);
    }
    a->mixer->bwd(r, l, W, G, s->mix, s->h1, dx, dh, scratch);
    a->norm->bwd(r->be, dx, (float *)G->vec[LMC_V_NORM1], (float *)G->vec[LMC_V_NORM1_B], dh, x_in,
                 W->vec[LMC_V_NORM1], n, C, eps);
}

void lmc_weights_embed(const struct lmc_backend *be, const struct lmc_weights *w, float *x,
                       const int32_t *ids, const int32_t *pos, int64_t n, float *tmp) {
    if (w->vocab) { /* this rank's rows, all-reduced (host buffers) */
        struct lmc_tp_group *g = w->vocab->g;
        struct lmc_tp tp = {g->c, be};
        if (!g->st)
            g->st = lmc_tp_embed_fwd(&tp, x, w->tok_emb.data, w->vocab->v0, w->vocab->nv, w->vocab->V,
                                     w->tok_emb.cols, ids, n, &g->err);
    } else if (!w->tok_emb.data && w->tok_emb_q) {
        LMC_ASSERT(be->qembed != NULL); /* backends without it get the table expanded (lmc_weights_place) */
        be->qembed(be->ctx, x, w->tok_emb_q, ids, n);
    } else {
        be->embed(be->ctx, x, &w->tok_emb, ids, n);
    }
    if (w->pos_emb.data) {
        be->embed(be->ctx, tmp, &w->pos_emb, pos, n);
        be->add(be->ctx, x, x, tmp, n * w->tok_emb.cols);
    }
}
