/* backward.c — trainable models (see backward.h): the parameter table
 * built from the architecture's tensor spec table, the arenas and their
 * views, loading from and initialising without a checkpoint, and the
 * training step: the block's forward (LMC_RUN_TRAIN, saving what the
 * backward needs) and backward per layer (model/block.c), the classifier
 * and the embeddings around them. */
#include "model/backward.h"
#include "model/arch_moe.h"
#include "model/distill.h"
#include "dist/comm.h"
#include "core/core.h"
#include "core/rng.h"
#include "quant/qmatmul.h"
#include "dist/tp.h" /* the vocabulary-parallel embedding and cross-entropy (tm->vocab) */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- parameter table ---------------- */

struct layout_state {
    struct lmc_tmodel *tm;
    int cap;
    bool (*external)(void *user, const struct lmc_tensor_ref *t);
    void *user;
    int64_t xb, xe;         /* experts in the arenas (xe 0: all; expert parallelism) */
    const bool *keep;       /* (L + 2) parts in the arenas (NULL: all; pipeline stages) */
    bool seen_layer;
    bool head;              /* an untied head tensor is in the table */
};

static lmc_status record(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    struct layout_state *s = user;
    struct lmc_tmodel *tm = s->tm;
    if (!t->required) return LMC_OK; /* optional on disk (a tied head's copy): not trained */
    if (tm->n_params >= s->cap)
        return lmc_err_set(err, LMC_ERR_ARG, "parameter table: more than %d tensors", s->cap);
    struct lmc_tparam *p = &tm->params[tm->n_params++];
    snprintf(p->name, sizeof p->name, "%s", t->name);
    p->ndim = t->ndim;
    p->shape[0] = t->disk[0];
    p->shape[1] = t->ndim == 2 ? t->disk[1] : 1;
    p->numel = t->numel;
    p->transposed = (t->spec->flags & LMC_TF_TRANSPOSED) != 0;
    p->conv = (t->spec->flags & LMC_TF_CONV) != 0;
    p->init = t->spec->flags & (LMC_TF_INIT_ALOG | LMC_TF_INIT_DT);
    p->role = (enum lmc_role)t->spec->role;
    if (t->layer >= 0) s->seen_layer = true;
    if (t->spec->kind == LMC_TK_HEAD) s->head = true;
    p->part = t->layer >= 0 ? (int)t->layer + 1 : s->seen_layer ? (int)tm->cfg.num_layers + 1 : 0;
    bool other_rank = t->spec->kind == LMC_TK_EXPERT_W && s->xe > 0 && (t->expert < s->xb || t->expert >= s->xe);
    if (s->keep && !s->keep[p->part]) { /* another pipeline stage's part */
        p->external = p->frozen = p->elsewhere = true;
        p->off = -1;
        return LMC_OK;
    }
    /* external: a block linear, or (a bf16 frozen base) the token embedding / untied head */
    bool ext_kind = t->spec->kind == LMC_TK_LIN_W || t->spec->kind == LMC_TK_TOK_EMB || t->spec->kind == LMC_TK_HEAD;
    if (other_rank || (s->external && ext_kind && s->external(s->user, t))) {
        p->external = p->frozen = true;
        p->off = -1;
        return LMC_OK;
    }
    p->off = tm->numel;
    int64_t padded = (p->numel + 15) / 16 * 16;
    if (!lmc_add_ok(tm->numel, padded, &tm->numel) || tm->numel > ((int64_t)1 << 40))
        return lmc_err_set(err, LMC_ERR_ARG, "model too large (%s)", t->name);
    return LMC_OK;
}

struct bind_state {
    struct lmc_tmodel *tm;
    int next;
    int part;              /* -1: every tensor, to the arenas; else that part's, to w / g from base */
    const float *w;
    float *g;
    int64_t base;
};

static lmc_status bind(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct bind_state *s = user;
    if (!t->required) return LMC_OK;
    const struct lmc_tparam *p = &s->tm->params[s->next++];
    LMC_ASSERT(!strcmp(p->name, t->name));
    if (p->external && p->ext_data) { /* a frozen dense linear in its own dtype (a bf16 base) */
        lmc_weights_bind(&s->tm->W, t, p->ext_data, p->ext_dtype);
        return LMC_OK;
    }
    if (p->external) { /* a quantized frozen linear: no arena floats, no gradient view */
        LMC_ASSERT(t->spec->kind == LMC_TK_LIN_W || t->spec->kind == LMC_TK_EXPERT_W || !p->q);
        int parts = t->spec->parts > 1 ? t->spec->parts : 1;
        for (int i = 0; i < parts && p->q; i++) {
            struct lmc_linear *L = &s->tm->W.layers[t->layer].lin[t->spec->slot + i];
            L->format = LMC_WFMT_QUANT;
            L->q = &p->q[i];
            L->qfloat = true;
            L->w = (struct lmc_mat){LMC_DTYPE_F32, t->rows / parts, t->cols, p->q[i].data};
        }
        return LMC_OK;
    }
    if (s->part >= 0) { /* one part's views (lmc_tmodel_bind_part) */
        if (p->part != s->part) return LMC_OK;
        if (s->w) lmc_weights_bind(&s->tm->W, t, s->w + (p->off - s->base), LMC_DTYPE_F32);
        if (s->g) lmc_weights_bind(&s->tm->G, t, s->g + (p->off - s->base), LMC_DTYPE_F32);
        return LMC_OK;
    }
    lmc_weights_bind(&s->tm->W, t, s->tm->w + p->off, LMC_DTYPE_F32);
    if (p->off >= s->tm->g_off) /* frozen tensors past g_off have no gradient views */
        lmc_weights_bind(&s->tm->G, t, lmc_tmodel_grad(s->tm, p), LMC_DTYPE_F32);
    return LMC_OK;
}

/* The first op of be's table that training needs and be lacks, or NULL. */
static const char *missing_op(const struct lmc_backend *be, const struct lmc_config *c,
                              bool backward, bool optimizer) {
    const struct lmc_architecture *a = lmc_arch_of(c);
    const char *m;
#define NEED(op) \
    if (!be->op) return #op
    NEED(alloc);
    NEED(free);
    NEED(upload);
    NEED(download);
    NEED(sync);
    NEED(zero);
    NEED(embed);
    NEED(matmul);
    NEED(add);
    NEED(classifier_xent);
    if ((m = a->norm->missing(be, false)) || (m = a->mixer->missing(be, c, false)) ||
        (a->ffn && (m = a->ffn->missing(be, c, false))))
        return m;
    if (backward) {
        NEED(matmul_bwd);
        NEED(embed_bwd);
        if ((m = a->norm->missing(be, true)) || (m = a->mixer->missing(be, c, true)) ||
            (a->ffn && (m = a->ffn->missing(be, c, true))))
            return m;
    }
    if (optimizer) {
        NEED(sumsq);
        NEED(adamw);
    }
#undef NEED
    return NULL;
}

lmc_status lmc_tmodel_check_backend(const struct lmc_backend *be, const struct lmc_config *cfg,
                                    bool backward, bool optimizer, lmc_err *err) {
    const char *op = missing_op(be, cfg, backward, optimizer);
    if (!op) return LMC_OK;
    return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "backend %s has no %s op (needed for training)",
                       be->name ? be->name : "?", op);
}

lmc_status lmc_tmodel_init(struct lmc_tmodel *tm, const struct lmc_config *cfg,
                           const struct lmc_backend *be, lmc_err *err) {
    return lmc_tmodel_init_ext(tm, cfg, be, NULL, NULL, err);
}

static lmc_status init_layout(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                              bool (*external)(void *user, const struct lmc_tensor_ref *t), void *user,
                              int64_t xb, int64_t xe, const bool *keep, bool arenas, lmc_err *err);

lmc_status lmc_tmodel_init_ext(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                               bool (*external)(void *user, const struct lmc_tensor_ref *t), void *user,
                               lmc_err *err) {
    return init_layout(tm, cfg, be, external, user, 0, 0, NULL, true, err);
}

lmc_status lmc_tmodel_init_layout(struct lmc_tmodel *tm, const struct lmc_config *cfg,
                                  const struct lmc_backend *be, lmc_err *err) {
    return init_layout(tm, cfg, be, NULL, NULL, 0, 0, NULL, false, err);
}

lmc_status lmc_tmodel_load_layout(struct lmc_tmodel *tm, const char *dir, const struct lmc_backend *be,
                                  lmc_err *err) {
    struct lmc_config cfg;
    lmc_status s = lmc_config_load(&cfg, dir, err);
    return s ? s : lmc_tmodel_init_layout(tm, &cfg, be, err);
}

lmc_status lmc_tmodel_init_experts(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                                   int64_t expert_begin, int64_t expert_end, lmc_err *err) {
    if (expert_begin < 0 || expert_end <= expert_begin || expert_end > cfg->num_experts)
        return lmc_err_set(err, LMC_ERR_ARG, "experts [%lld, %lld) out of the model's %lld", (long long)expert_begin,
                           (long long)expert_end, (long long)cfg->num_experts);
    return init_layout(tm, cfg, be, NULL, NULL, expert_begin, expert_end, NULL, true, err);
}

static lmc_status alloc_arenas(struct lmc_tmodel *tm);

lmc_status lmc_tmodel_init_parts(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                                 const bool *keep, bool arenas, lmc_err *err) {
    lmc_status s = init_layout(tm, cfg, be, NULL, NULL, 0, 0, keep, false, err);
    if (s) return s;
    int64_t L = tm->cfg.num_layers;
    if (tm->tied_head && keep[L + 1] && !keep[0]) {
        lmc_tmodel_free(tm);
        return lmc_err_set(err, LMC_ERR_ARG, "model parts: the tied head reads the token embedding (keep part 0 with "
                           "part %lld)", (long long)(L + 1));
    }
    if (tm->numel == 0) {
        lmc_tmodel_free(tm);
        return lmc_err_set(err, LMC_ERR_ARG, "model parts: no tensor kept");
    }
    if (arenas && alloc_arenas(tm)) {
        lmc_tmodel_free(tm);
        return lmc_err_set(err, LMC_ERR_OOM, "model part of %lld parameters: out of memory", (long long)tm->numel);
    }
    return LMC_OK;
}

/* Zeroed arenas of tm->numel floats and the views bound to them. */
static lmc_status alloc_arenas(struct lmc_tmodel *tm) {
    const struct lmc_backend *be = tm->be;
    size_t bytes = (size_t)tm->numel * sizeof(float);
    tm->w = be->alloc(be->ctx, bytes);
    tm->g = be->alloc(be->ctx, bytes);
    if (!tm->w || !tm->g) return LMC_ERR_OOM;
    be->zero(be->ctx, tm->w, bytes); /* padding between tensors stays zero from here on */
    be->zero(be->ctx, tm->g, bytes);
    LMC_ASSERT(lmc_tmodel_bind(tm) == tm->n_params);
    return LMC_OK;
}

static lmc_status init_layout(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                              bool (*external)(void *user, const struct lmc_tensor_ref *t), void *user,
                              int64_t xb, int64_t xe, const bool *keep, bool arenas, lmc_err *err) {
    memset(tm, 0, sizeof *tm);
    const struct lmc_config *c = cfg;
    if (c->num_layers <= 0 || c->hidden_size <= 0 || c->vocab_size <= 0 || c->num_heads <= 0 ||
        c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads || c->head_dim <= 0 ||
        c->intermediate_size <= 0 || lmc_config_check_sizes(c, err) || lmc_arch_of(c)->check(c, err))
        return lmc_err_set(err, LMC_ERR_ARG, "model config: sizes are not trainable (layers %lld, "
                           "hidden %lld, heads %lld/%lld, head_dim %lld)", (long long)c->num_layers,
                           (long long)c->hidden_size, (long long)c->num_heads,
                           (long long)c->num_kv_heads, (long long)c->head_dim);
    lmc_status st = lmc_tmodel_check_backend(be, cfg, false, false, err);
    if (st) return st;
    tm->be = be;
    tm->cfg = *cfg;
    c = &tm->cfg;
    tm->arch = lmc_arch_of(c);
    tm->rot_dim = lmc_arch_rot_dim(tm->arch, c);
    int64_t cap = lmc_arch_count(tm->arch, c);
    if (cap <= 0 || cap > (1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "model config: %lld tensors out of range", (long long)cap);
    tm->params = calloc((size_t)cap, sizeof *tm->params);
    tm->W.layers = lmc_weights_layers_alloc(c);
    tm->G.layers = lmc_weights_layers_alloc(c);
    if (!tm->params || !tm->W.layers || !tm->G.layers) goto oom;
    struct layout_state ls = {tm, (int)cap, external, user, xb, xe, keep, false, false};
    if ((st = lmc_arch_walk(tm->arch, c, record, &ls, err))) {
        lmc_tmodel_free(tm);
        return st;
    }
    tm->tied_head = !ls.head; /* (lmc_tmodel_bind finds the same) */
    if (arenas && alloc_arenas(tm)) goto oom;
    return LMC_OK;
oom:
    lmc_tmodel_free(tm);
    return lmc_err_set(err, LMC_ERR_OOM, "model of %lld parameters: out of memory",
                       (long long)tm->numel);
}

int lmc_tmodel_bind(struct lmc_tmodel *tm) {
    struct lmc_block_w *wl = tm->W.layers, *gl = tm->G.layers;
    /* cleared for a fresh bind, keeping each layer's expert table (lmc_weights_layers_alloc) */
    size_t nx = tm->cfg.num_experts > 0 ? (size_t)tm->cfg.num_experts * LMC_X_N : 0;
    for (int64_t l = 0; l < tm->cfg.num_layers; l++) {
        struct lmc_linear *xw = wl[l].experts, *xg = gl[l].experts;
        if (xw) memset(xw, 0, nx * sizeof *xw);
        if (xg) memset(xg, 0, nx * sizeof *xg);
        memset(&wl[l], 0, sizeof wl[l]);
        memset(&gl[l], 0, sizeof gl[l]);
        wl[l].experts = xw;
        gl[l].experts = xg;
    }
    memset(&tm->W, 0, sizeof tm->W);
    memset(&tm->G, 0, sizeof tm->G);
    tm->W.layers = wl;
    tm->G.layers = gl;
    struct bind_state bs = {tm, 0, -1, NULL, NULL, 0};
    lmc_err err = {0};
    LMC_ASSERT(!lmc_arch_walk(tm->arch, &tm->cfg, bind, &bs, &err));
    bool parts = false; /* a pipeline stage's model: an unbound head may be another stage's */
    for (int i = 0; i < tm->n_params; i++) parts |= tm->params[i].elsewhere;
    if (tm->W.head.w.data || !parts) tm->tied_head = !tm->W.head.w.data;
    if (tm->tied_head) { /* the head reads the embedding */
        tm->W.head.w = tm->W.tok_emb;
        tm->G.head.w = tm->G.tok_emb;
    }
    return bs.next;
}

void lmc_tmodel_bind_part(struct lmc_tmodel *tm, int part, const float *w, float *g, int64_t base) {
    LMC_ASSERT(part >= 0);
    struct bind_state bs = {tm, 0, part, w, g, base};
    lmc_err err = {0};
    LMC_ASSERT(!lmc_arch_walk(tm->arch, &tm->cfg, bind, &bs, &err));
    if (tm->tied_head && part == 0) {
        if (w) tm->W.head.w = tm->W.tok_emb;
        if (g) tm->G.head.w = tm->G.tok_emb;
    }
}

void lmc_tmodel_free(struct lmc_tmodel *tm) {
    free(tm->params);
    free(tm->W.layers);
    free(tm->G.layers);
    if (tm->be) {
        if (tm->w) tm->be->free(tm->be->ctx, tm->w);
        if (tm->g) tm->be->free(tm->be->ctx, tm->g);
    }
    memset(tm, 0, sizeof *tm);
}

void lmc_tmodel_zero_grad(struct lmc_tmodel *tm) {
    tm->be->zero(tm->be->ctx, tm->g, (size_t)(tm->numel - tm->g_off) * sizeof(float));
}

int lmc_tmodel_find(const struct lmc_tmodel *tm, const char *name) {
    for (int i = 0; i < tm->n_params; i++)
        if (!strcmp(tm->params[i].name, name)) return i;
    return -1;
}

lmc_status lmc_tmodel_download_param(const struct lmc_tmodel *tm, const float *arena, int i,
                                     float *out, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    const struct lmc_tparam *p = &tm->params[i];
    size_t bytes = (size_t)p->numel * sizeof(float);
    if (p->external) return lmc_err_set(err, LMC_ERR_ARG, "%s: kept quantized outside the arenas", p->name);
    if (!p->transposed) {
        be->download(be->ctx, out, arena + p->off, bytes);
        return LMC_OK;
    }
    float *tmp = malloc(bytes);
    if (!tmp) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", p->name);
    be->download(be->ctx, tmp, arena + p->off, bytes);
    lmc_tmodel_transpose(p, out, tmp, true);
    free(tmp);
    return LMC_OK;
}

lmc_status lmc_tmodel_upload_param(const struct lmc_tmodel *tm, float *arena, int i,
                                   const float *in, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    const struct lmc_tparam *p = &tm->params[i];
    size_t bytes = (size_t)p->numel * sizeof(float);
    if (p->external) return lmc_err_set(err, LMC_ERR_ARG, "%s: kept quantized outside the arenas", p->name);
    float *tmp = NULL;
    if (p->transposed) {
        if (!(tmp = malloc(bytes))) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", p->name);
        lmc_tmodel_transpose(p, tmp, in, false);
    }
    be->upload(be->ctx, arena + p->off, tmp ? tmp : in, bytes);
    be->sync(be->ctx); /* the host buffer may go as soon as this returns */
    free(tmp);
    return LMC_OK;
}

void lmc_tmodel_download_arena(const struct lmc_tmodel *tm, const float *arena, float *host) {
    tm->be->download(tm->be->ctx, host, arena, (size_t)tm->numel * sizeof(float));
}

void lmc_tmodel_upload_arena(const struct lmc_tmodel *tm, float *arena, const float *host) {
    tm->be->upload(tm->be->ctx, arena, host, (size_t)tm->numel * sizeof(float));
    tm->be->sync(tm->be->ctx);
}

lmc_status lmc_tmodel_fill(struct lmc_tmodel *tm, struct lmc_tmodel_src *src, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    if (!tm->w && alloc_arenas(tm))
        return lmc_err_set(err, LMC_ERR_OOM, "model of %lld parameters: out of memory", (long long)tm->numel);
    int64_t most = 0;
    for (int i = 0; i < tm->n_params; i++) most = LMC_MAX(most, tm->params[i].numel);
    float *w = malloc((size_t)most * sizeof(float)); /* one tensor, in the arena's layout */
    if (!w) return lmc_err_set(err, LMC_ERR_OOM, "initialising %lld parameters: out of memory", (long long)tm->numel);
    lmc_status s = LMC_OK;
    for (int i = 0; i < tm->n_params && !s; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->external) continue; /* not in the arenas */
        if ((s = lmc_tmodel_src_fill(src, p->off, p->numel, w, err))) break;
        be->upload(be->ctx, tm->w + p->off, w, (size_t)p->numel * sizeof(float));
        be->sync(be->ctx); /* w is refilled next */
    }
    free(w);
    return s;
}

lmc_status lmc_tmodel_init_random(struct lmc_tmodel *tm, uint64_t seed, double std, lmc_err *err) {
    struct lmc_tmodel_src src;
    lmc_status s = lmc_tmodel_src_random(&src, tm, seed, std, err);
    if (s) return s;
    s = lmc_tmodel_fill(tm, &src, err);
    lmc_tmodel_src_free(&src);
    return s;
}

lmc_status lmc_tmodel_load(struct lmc_tmodel *tm, const char *dir, const struct lmc_backend *be,
                           lmc_err *err) {
    struct lmc_tmodel_src src;
    lmc_status s = lmc_tmodel_load_layout(tm, dir, be, err);
    if (s) return s;
    if (!(s = lmc_tmodel_src_dir(&src, tm, dir, err))) {
        s = lmc_tmodel_fill(tm, &src, err);
        lmc_tmodel_src_free(&src);
    }
    if (s) lmc_tmodel_free(tm);
    return s;
}

/* ---------------- activations ---------------- */

#define A16(n) (((n) + 15) / 16 * 16)

/* The pieces of one layer's saves under bf16-saved activations (floats of
 * the arena; lmc_tacts_lowp): xmid f32, h1 / h2 as bf16 (none when
 * selective recomputation shares them), each region's leading lowp floats
 * as bf16 and its rest f32. */
struct lowp_sizes {
    int64_t mC, mix, mix_lo, ffn, ffn_lo; /* elements */
    int64_t layer;                        /* arena floats of one layer */
};

#define B16F(n) A16(((n) + 1) / 2) /* arena floats holding n bf16 */

static struct lowp_sizes lowp_sizes(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n,
                                    int64_t m, bool selective, bool mixer) {
    struct lowp_sizes z = {0};
    z.mC = m * c->hidden_size;
    if (!mixer) { /* mixer recomputation: the mixer's region is recomputed, not kept */
        z.mix = a->mixer->save_floats(c, n, LMC_RUN_TRAIN);
        z.mix_lo = a->mixer->lowp_floats ? LMC_MIN(a->mixer->lowp_floats(c, n), z.mix) : 0;
    }
    bool shared = selective || mixer; /* the product in the shared ffn_act */
    if (a->ffn) {
        z.ffn = a->ffn->save_floats(c, n, LMC_RUN_TRAIN) - (shared && a->ffn->act_floats ? a->ffn->act_floats(c, n) : 0);
        z.ffn_lo = a->ffn->lowp_floats ? LMC_MIN(a->ffn->lowp_floats(c, n), z.ffn) : 0;
    }
    z.layer = (mixer ? 0 : A16(z.mC)) + (shared ? 0 : 2 * B16F(z.mC)) + B16F(z.mix_lo) + A16(z.mix - z.mix_lo) +
              B16F(z.ffn_lo) + A16(z.ffn - z.ffn_lo);
    return z;
}

/* Floats of the feed-forward's region less its product (selective and
 * mixer recomputation keep this much per layer, f32). */
static int64_t ffn_kept_floats(const struct lmc_architecture *a, const struct lmc_config *c, int64_t n) {
    if (!a->ffn) return 0;
    return a->ffn->save_floats(c, n, LMC_RUN_TRAIN) - (a->ffn->act_floats ? a->ffn->act_floats(c, n) : 0);
}

/* Device buffers of offloaded checkpoints' ring (lmc_tacts.xs_ring): 3
 * (two layers' time for each copy), 2 for a model of 1 or 2 layers. */
static int64_t offload_ring(int64_t L) {
    return L >= 3 ? 3 : 2;
}

/* Floats one layer's saves hold. m: rows of the residual stream. */
static int64_t layer_floats(const struct lmc_config *c, int64_t BT, int64_t m, const struct lmc_tacts_opts *o) {
    const struct lmc_architecture *a = lmc_arch_of(c);
    if (o->save_bf16 && !o->recompute) return lowp_sizes(a, c, BT, m, o->selective, o->mixer).layer;
    if (o->mixer) return A16(ffn_kept_floats(a, c, BT));
    return o->selective ? lmc_block_save_floats_sel(a, c, BT, m) : lmc_block_save_floats_sp(a, c, BT, m, LMC_RUN_TRAIN);
}

/* Floats of the activation arena for L layers; -1 when out of range.
 * m > 0: the residual stream and the blocks' norm rows of m (sequence parallel) */
static int64_t acts_floats_opts(const struct lmc_config *c, int64_t L, int64_t B, int64_t T,
                                const struct lmc_tacts_opts *o, int64_t m) {
    const struct lmc_architecture *a = lmc_arch_of(c);
    int64_t BT, BTC;
    if (L < 1 || L > c->num_layers || B <= 0 || T <= 0 || !lmc_mul_ok(B, T, &BT) || BT > ((int64_t)1 << 31) ||
        !lmc_mul_ok(BT, c->hidden_size, &BTC) || BTC > ((int64_t)1 << 40))
        return -1;
    int64_t xs, saves, n, mC = m > 0 ? m * c->hidden_size : BTC, rows = m > 0 ? m : BT;
    int64_t layer = layer_floats(c, BT, rows, o);
    const bool ck16 = o->recompute && o->save_bf16; /* two f32 buffers, L bf16 checkpoints */
    if (ck16) {
        if (!lmc_mul_ok(L, B16F(mC), &xs)) return -1;
        xs += 2 * A16(mC);
    } else if ((o->recompute || o->mixer) && o->offload) { /* a ring of device buffers; the inputs in host memory */
        xs = offload_ring(L) * A16(mC);
    } else if (!lmc_mul_ok(L + 1, A16(mC), &xs)) {
        return -1;
    }
    if (!lmc_mul_ok(o->recompute ? 1 : L, layer, &saves)) return -1;
    n = xs + saves;
    if (o->selective || o->mixer) n += lmc_block_shared_floats_sel(a, c, BT, rows); /* h1, h2, the product */
    if (o->save_bf16 && !o->recompute) /* the f32 work set of one layer */
        n += o->selective || o->mixer ? lmc_block_save_floats_sel(a, c, BT, rows)
                                      : lmc_block_save_floats_sp(a, c, BT, rows, LMC_RUN_TRAIN);
    else if (o->mixer) /* the shared xmid and mixer region (f32 saves) */
        n += A16(mC) + A16(a->mixer->save_floats(c, BT, LMC_RUN_TRAIN));
    n += 4 * A16(BTC) + A16(BT);                   /* hf, tmp, dx, dh; loss */
    n += A16(lmc_block_bwd_floats(a, c, BT));      /* backward scratch */
    return n > ((int64_t)1 << 42) ? -1 : n;
}

static int64_t acts_floats_sp(const struct lmc_config *c, int64_t L, int64_t B, int64_t T, bool recompute, int64_t m) {
    struct lmc_tacts_opts o = {.recompute = recompute};
    return acts_floats_opts(c, L, B, T, &o, m);
}

static int64_t acts_floats(const struct lmc_config *c, int64_t L, int64_t B, int64_t T, bool recompute) {
    return acts_floats_sp(c, L, B, T, recompute, 0);
}

size_t lmc_tacts_bytes(const struct lmc_config *c, int64_t B, int64_t T, bool recompute) {
    return lmc_tacts_bytes_layers(c, c->num_layers, B, T, recompute);
}

size_t lmc_tacts_bytes_layers(const struct lmc_config *c, int64_t n_layers, int64_t B, int64_t T, bool recompute) {
    int64_t n = acts_floats(c, n_layers, B, T, recompute);
    if (n < 0) return 0;
    return (size_t)n * sizeof(float) + (size_t)(3 * B * T) * sizeof(int32_t) +
           (size_t)(c->head_dim / 2 + 1) * sizeof(double);
}

lmc_status lmc_tacts_init(struct lmc_tacts *a, const struct lmc_tmodel *tm,
                          const struct lmc_backend *be, int64_t B, int64_t T, bool recompute,
                          lmc_err *err) {
    return lmc_tacts_init_layers(a, tm, be, tm->cfg.num_layers, B, T, recompute, err);
}

static lmc_status tacts_init(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                             int64_t n_layers, int64_t B, int64_t T, const struct lmc_tacts_opts *o,
                             const struct lmc_sp *sp, lmc_err *err) {
    bool recompute = o->recompute;
    memset(a, 0, sizeof *a);
    const struct lmc_config *c = &tm->cfg;
    lmc_status st = lmc_tmodel_check_backend(be, c, false, false, err);
    if (st) return st;
    if (n_layers < 1 || n_layers > c->num_layers)
        return lmc_err_set(err, LMC_ERR_ARG, "activations for %lld of the model's %lld layers", (long long)n_layers,
                           (long long)c->num_layers);
    if (o->offload && (!(o->recompute || o->mixer) || o->selective || (o->save_bf16 && o->recompute) || sp))
        return lmc_err_set(err, LMC_ERR_ARG, "activations: offloaded checkpoints go with full or mixer recomputation "
                           "only (not with bf16 checkpoints, selective recomputation or sequence parallelism)");
    if (o->mixer && (o->recompute || o->selective || sp || !tm->arch->ffn))
        return lmc_err_set(err, LMC_ERR_ARG, "activations: mixer recomputation keeps every layer's feed-forward saves "
                           "(not with full or selective recomputation or sequence parallelism; the model needs a "
                           "feed-forward part)");
    if (o->offload && (!be->host_alloc || !be->host_free || !be->offload || !be->offload_wait))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "backend %s has no host offload (needed for offloaded "
                           "checkpoints)", be->name ? be->name : "?");
    if ((o->recompute && o->selective) || (sp && (o->selective || o->save_bf16)))
        return lmc_err_set(err, LMC_ERR_ARG, "activations: %s", o->recompute && o->selective ? "full recomputation "
                           "keeps one layer's saves (not with selective recomputation)" : "selective recomputation and "
                           "bf16-saved activations are not implemented with sequence parallelism");
    if (o->save_bf16 && !be->convert)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "backend %s has no convert op (needed for bf16-saved "
                           "activations)", be->name ? be->name : "?");
    int64_t nf = acts_floats_opts(c, n_layers, B, T, o, sp ? sp->m : 0);
    if (nf < 0)
        return lmc_err_set(err, LMC_ERR_ARG, "batch %lld x %lld out of range", (long long)B, (long long)T);
    if (tm->arch->learned_pos && T > c->max_position_embeddings)
        return lmc_err_set(err, LMC_ERR_ARG, "sequence length %lld exceeds the model's %lld positions",
                           (long long)T, (long long)c->max_position_embeddings);
    int64_t C = c->hidden_size, L = n_layers, BT = B * T;
    a->be = be;
    a->n_layers = n_layers;
    a->B = B;
    a->T = T;
    a->recompute = recompute;
    a->selective = o->selective;
    a->mixer = o->mixer;
    a->save_bf16 = o->save_bf16 && !recompute;
    int64_t nl = recompute ? 1 : L;
    a->layer_floats = layer_floats(c, BT, sp ? sp->m : BT, o);
    a->arena = be->alloc(be->ctx, (size_t)nf * sizeof(float));
    a->xs = calloc((size_t)(L + 1), sizeof *a->xs);
    a->saves = calloc((size_t)nl, sizeof *a->saves);
    if (a->save_bf16) a->lowp = calloc((size_t)nl, sizeof *a->lowp);
    if (o->save_bf16 && recompute) a->xs16 = calloc((size_t)L, sizeof *a->xs16);
    if (o->offload) a->xs_host = calloc((size_t)L, sizeof *a->xs_host);
    a->ids = be->alloc(be->ctx, (size_t)(3 * BT) * sizeof(int32_t));
    a->inv_freq = be->alloc(be->ctx, (size_t)(c->head_dim / 2 + 1) * sizeof(double));
    a->loss_host = malloc((size_t)BT * sizeof(float));
    if (c->num_experts > 0) { /* one block: the struct, then count, psum (L, E) and dp (E) */
        int64_t E = c->num_experts;
        int64_t LM = c->num_layers; /* indexed by the model's layer */
        a->moe = calloc(1, sizeof *a->moe + (size_t)((2 * LM + 1) * E) * sizeof(double));
        if (a->moe) {
            a->moe->E = E;
            a->moe->L = LM;
            a->moe->count = (double *)(a->moe + 1);
            a->moe->psum = a->moe->count + LM * E;
            a->moe->dp = a->moe->psum + LM * E;
        }
    }
    int32_t *pos = a->pos_host = malloc((size_t)BT * sizeof *pos);
    double *freq = malloc((size_t)(c->head_dim / 2 + 1) * sizeof *freq);
    if (!a->arena || !a->xs || !a->saves || (a->save_bf16 && !a->lowp) || (o->save_bf16 && recompute && !a->xs16) ||
        (o->offload && !a->xs_host) || !a->ids || !a->inv_freq || !a->loss_host || !pos || !freq ||
        (c->num_experts > 0 && !a->moe)) {
        free(freq);
        lmc_tacts_free(a);
        return lmc_err_set(err, LMC_ERR_OOM, "training activations (%lld bytes): out of memory",
                           (long long)nf * (long long)sizeof(float));
    }
    a->pos = a->ids + BT;
    a->targets = a->ids + 2 * BT;
    float *p = a->arena;
    int64_t m = sp ? sp->m : BT;
    a->sp = sp;
    if (a->xs16) { /* two f32 buffers the layers alternate between, then L bf16 checkpoints */
        float *w0 = p, *w1 = p + A16(m * C);
        p += 2 * A16(m * C);
        for (int64_t l = 0; l <= L; l++) a->xs[l] = l % 2 ? w1 : w0;
        for (int64_t l = 0; l < L; l++, p += B16F(m * C)) a->xs16[l] = (uint16_t *)p;
    } else if (a->xs_host) { /* nb device buffers in turn; inputs 0 .. L - nb in host memory (the last nb stay) */
        int64_t nb = a->xs_ring = offload_ring(L);
        for (int64_t l = 0; l <= L; l++) a->xs[l] = p + (l % nb) * A16(m * C);
        p += nb * A16(m * C);
        for (int64_t l = 0; l + nb <= L; l++) {
            a->xs_host[l] = be->host_alloc(be->ctx, (size_t)A16(m * C) * sizeof(float));
            if (!a->xs_host[l]) {
                size_t want = (size_t)(L + 1 - nb) * (size_t)A16(m * C) * sizeof(float);
                free(freq);
                lmc_tacts_free(a);
                return lmc_err_set(err, LMC_ERR_OOM, "offloaded checkpoints (%zu bytes of host memory): out of memory",
                                   want);
            }
            a->host_bytes += (size_t)A16(m * C) * sizeof(float);
        }
    } else {
        for (int64_t l = 0; l <= L; l++, p += A16(m * C)) a->xs[l] = p;
    }
    if (a->save_bf16) { /* the f32 work set, then each layer's xmid and bf16 / f32 pieces */
        struct lowp_sizes z = lowp_sizes(tm->arch, c, BT, m, a->selective, a->mixer);
        if (a->selective || a->mixer) {
            struct lmc_block_save sh;
            p = lmc_block_carve_shared_sel(tm->arch, c, BT, m, p, &sh, &a->ffn_act);
            p = lmc_block_save_carve_sel(tm->arch, c, BT, m, p, &sh, &a->work);
        } else {
            p = lmc_block_save_carve_sp(tm->arch, c, BT, m, LMC_RUN_TRAIN, p, &a->work);
        }
        for (int64_t l = 0; l < nl; l++) {
            struct lmc_tacts_lowp *lp = &a->lowp[l];
            float *p0 = p;
            if (!a->mixer) a->saves[l].xmid = p, p += A16(z.mC); /* mixer: the work set's, recomputed */
            if (!a->selective && !a->mixer) {
                lp->h1 = (uint16_t *)p, p += B16F(z.mC);
                lp->h2 = (uint16_t *)p, p += B16F(z.mC);
            }
            lp->mix = (uint16_t *)p, p += B16F(z.mix_lo);
            lp->mix_tail = p, p += A16(z.mix - z.mix_lo);
            lp->ffn = (uint16_t *)p, p += B16F(z.ffn_lo);
            lp->ffn_tail = p, p += A16(z.ffn - z.ffn_lo);
            LMC_ASSERT(p - p0 == z.layer);
        }
    } else if (a->mixer) { /* the shared h1, h2, product, xmid and mixer region, then each layer's ffn region */
        struct lmc_block_save sh;
        p = lmc_block_carve_shared_sel(tm->arch, c, BT, m, p, &sh, &a->ffn_act);
        float *xmid = p, *mix = p + A16(m * C);
        p = mix + A16(tm->arch->mixer->save_floats(c, BT, LMC_RUN_TRAIN));
        for (int64_t l = 0; l < nl; l++, p += a->layer_floats)
            a->saves[l] = (struct lmc_block_save){sh.h1, xmid, sh.h2, mix, p};
    } else if (a->selective) { /* the shared h1, h2 and product, then each layer's GEMM outputs */
        struct lmc_block_save sh;
        p = lmc_block_carve_shared_sel(tm->arch, c, BT, m, p, &sh, &a->ffn_act);
        for (int64_t l = 0; l < nl; l++) p = lmc_block_save_carve_sel(tm->arch, c, BT, m, p, &sh, &a->saves[l]);
    } else {
        for (int64_t l = 0; l < nl; l++)
            p = lmc_block_save_carve_sp(tm->arch, c, BT, m, LMC_RUN_TRAIN, p, &a->saves[l]);
    }
    a->hf = p, p += A16(BT * C);
    a->tmp = p, p += A16(BT * C);
    a->dx = p, p += A16(BT * C);
    a->dh = p, p += A16(BT * C);
    a->loss = p, p += A16(BT);
    a->scratch = p, p += A16(lmc_block_bwd_floats(tm->arch, c, BT));
    LMC_ASSERT(p <= a->arena + nf);
    /* positions restart at 0 in every sequence; rotary tables for length T */
    for (int64_t i = 0; i < BT; i++) pos[i] = (int32_t)(i % T);
    be->upload(be->ctx, a->pos, pos, (size_t)BT * sizeof *pos);
    a->attn_scale = 1.0f;
    if (tm->rot_dim) {
        lmc_rope_freqs(c, tm->rot_dim, T, freq, &a->attn_scale);
        be->upload(be->ctx, a->inv_freq, freq, (size_t)(tm->rot_dim / 2) * sizeof *freq);
    }
    be->sync(be->ctx);
    free(freq);
    return LMC_OK;
}

lmc_status lmc_tacts_init_layers(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                                 int64_t n_layers, int64_t B, int64_t T, bool recompute, lmc_err *err) {
    struct lmc_tacts_opts o = {.recompute = recompute};
    return tacts_init(a, tm, be, n_layers, B, T, &o, NULL, err);
}

size_t lmc_tacts_bytes_opts(const struct lmc_config *c, int64_t B, int64_t T, const struct lmc_tacts_opts *o) {
    int64_t n = acts_floats_opts(c, c->num_layers, B, T, o, 0);
    if (n < 0) return 0;
    return (size_t)n * sizeof(float) + (size_t)(3 * B * T) * sizeof(int32_t) +
           (size_t)(c->head_dim / 2 + 1) * sizeof(double);
}

lmc_status lmc_tacts_init_opts(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                               int64_t B, int64_t T, const struct lmc_tacts_opts *o, lmc_err *err) {
    return tacts_init(a, tm, be, tm->cfg.num_layers, B, T, o, NULL, err);
}

size_t lmc_tacts_bytes_sp(const struct lmc_config *c, int64_t B, int64_t T, bool recompute, int world) {
    int64_t n = world > 0 ? acts_floats_sp(c, c->num_layers, B, T, recompute, B * T / world) : -1;
    if (n < 0) return 0;
    return (size_t)n * sizeof(float) + (size_t)(3 * B * T) * sizeof(int32_t) +
           (size_t)(c->head_dim / 2 + 1) * sizeof(double);
}

lmc_status lmc_tacts_init_sp(struct lmc_tacts *a, const struct lmc_tmodel *tm, const struct lmc_backend *be,
                             int64_t B, int64_t T, bool recompute, const struct lmc_sp *sp, lmc_err *err) {
    LMC_ASSERT(sp && sp->g && sp->m > 0 && sp->m0 >= 0 && sp->m0 + sp->m <= B * T);
    struct lmc_tacts_opts o = {.recompute = recompute};
    return tacts_init(a, tm, be, tm->cfg.num_layers, B, T, &o, sp, err);
}

void lmc_tacts_free(struct lmc_tacts *a) {
    if (a->be) {
        if (a->arena) a->be->free(a->be->ctx, a->arena);
        if (a->ids) a->be->free(a->be->ctx, a->ids);
        if (a->inv_freq) a->be->free(a->be->ctx, a->inv_freq);
    }
    free(a->xs);
    free(a->saves);
    free(a->lowp);
    free(a->xs16);
    if (a->xs_host) {
        for (int64_t l = 0; l < a->n_layers; l++)
            if (a->xs_host[l]) a->be->host_free(a->be->ctx, a->xs_host[l]);
        free(a->xs_host);
    }
    free(a->loss_host);
    free(a->pos_host);
    free(a->moe);
    memset(a, 0, sizeof *a);
}

/* ---------------- the step ---------------- */

/* Vocabulary-parallel head and cross-entropy (tm->vocab): logits (M, vr)
 * of this rank's slice, the loss across the group, dh = the all-reduce of
 * dlogits @ W_r ("f"'s backward), dW_r += dlogits^T hf; host buffers. */
static lmc_status vocab_head_xent(struct lmc_tmodel *tm, const struct lmc_backend *be, struct lmc_tacts *a,
                                  const int32_t *targets, bool backward, float dscale, double *sum,
                                  int64_t *count, lmc_err *err) {
    const struct lmc_tvocab *vp = tm->vocab;
    int64_t M = a->B * a->T, vr = tm->cfg.vocab_size, n = 0;
    float *logits = malloc(sizeof(float) * (size_t)(M * vr));
    if (!logits) return lmc_err_set(err, LMC_ERR_OOM, "vocabulary-parallel logits (%lld x %lld): out of memory",
                                    (long long)M, (long long)vr);
    struct lmc_tp tp = {vp->g->c, be};
    be->matmul(be->ctx, logits, a->hf, M, &tm->W.head.w, NULL);
    double mean = 0;
    lmc_status st = lmc_tp_xent(&tp, &mean, backward ? logits : NULL, logits, M, vp->v0, vr, vp->V, targets, err);
    for (int64_t i = 0; i < M; i++) n += targets[i] >= 0;
    *sum = mean * (double)n;
    *count = n;
    if (!st && backward) { /* d(mean)/dlogits -> d(dscale x sum) */
        float s = dscale * (float)n;
        for (int64_t i = 0; i < M * vr; i++) logits[i] *= s;
        st = lmc_tp_col_bwd(&tp, a->dh, (float *)tm->G.head.w.data, NULL, logits, a->hf, M, &tm->W.head.w, err);
    }
    free(logits);
    return st;
}

/* Layer l's save set: its own, the one of full recomputation, or (bf16
 * saves) the f32 work set with layer l's xmid, in *ws. */
static const struct lmc_block_save *layer_save(const struct lmc_tacts *a, int64_t l, struct lmc_block_save *ws) {
    if (!a->save_bf16) return &a->saves[a->recompute ? 0 : l];
    *ws = a->work;
    if (!a->mixer) ws->xmid = a->saves[l].xmid; /* mixer: the work set's own, recomputed */
    return ws;
}

/* bf16 saves: the work set ws into layer l's store (pack) or back (the
 * bf16 parts exact, the f32 tails copied). */
static void lowp_move(const struct lmc_tacts *a, const struct lmc_run *r, int64_t l, const struct lmc_block_save *ws,
                      bool pack) {
    const struct lmc_backend *be = r->be;
    const struct lmc_tacts_lowp *lp = &a->lowp[l];
    struct lowp_sizes z = lowp_sizes(r->arch, r->cfg, r->n, r->n, a->selective, a->mixer);
    const enum lmc_dtype F = LMC_DTYPE_F32, H = LMC_DTYPE_BF16;
#define MOVE(lo, hi, dt, n) \
    if (n) { \
        if (pack) be->convert(be->ctx, lo, dt, hi, F, n); \
        else be->convert(be->ctx, hi, F, lo, dt, n); \
    }
    if (lp->h1) {
        MOVE(lp->h1, ws->h1, H, z.mC);
        if (r->arch->ffn) MOVE(lp->h2, ws->h2, H, z.mC);
    }
    MOVE(lp->mix, ws->mix, H, z.mix_lo);
    MOVE(lp->mix_tail, ws->mix + z.mix_lo, F, z.mix - z.mix_lo);
    MOVE(lp->ffn, ws->ffn, H, z.ffn_lo);
    MOVE(lp->ffn_tail, ws->ffn + z.ffn_lo, F, z.ffn - z.ffn_lo);
#undef MOVE
}

/* bf16 saves: the block's norm outputs h1 and h2, unpacked into the work
 * set for layer l's backward, are the x operands of its q/k/v and gate/up
 * linears; their bf16 store is the rounding a bf16 GEMM takes of them, so
 * it is held as theirs (backend.h operand_hold) instead of one made again.
 * False when nothing was held (no bf16 norm saves, recomputation). */
static bool hold_saved_norms(const struct lmc_tacts *a, const struct lmc_run *r, int64_t l,
                             const struct lmc_block_save *s) {
    const struct lmc_backend *be = r->be;
    if (!be->operand_hold || !a->save_bf16 || a->recompute || a->selective || r->sp || !a->lowp[l].h1)
        return false;
    const struct lmc_tacts_lowp *lp = &a->lowp[l];
    int64_t mC = r->n * r->cfg->hidden_size, numel[2] = {mC, mC};
    const float *src[2] = {s->h1, r->arch->ffn ? s->h2 : NULL};
    const uint16_t *copy[2] = {lp->h1, r->arch->ffn ? lp->h2 : NULL};
    be->operand_hold(be->ctx, 2, src, numel, copy);
    return true;
}

static lmc_status tmodel_step(struct lmc_tmodel *tm, const struct lmc_backend *be,
                              struct lmc_tacts *a, const int32_t *inputs, const int32_t *targets,
                              bool backward, float dscale, double *loss_sum, int64_t *count,
                              lmc_err *err) {
    const struct lmc_config *c = &tm->cfg;
    const struct lmc_architecture *ar = tm->arch;
    int64_t C = c->hidden_size, M = a->B * a->T, L = c->num_layers;
    int64_t V = tm->vocab ? tm->vocab->V : c->vocab_size; /* the full vocabulary */
    float eps = (float)c->norm_eps;
    LMC_ASSERT(be == tm->be && a->be == be && a->n_layers == L);
    lmc_status st = lmc_tmodel_check_backend(be, c, backward, false, err);
    if (st) return st;
    for (int64_t i = 0; i < M; i++) {
        if (inputs[i] < 0 || inputs[i] >= V || targets[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "token id out of range (vocabulary %lld) at %lld",
                               (long long)V, (long long)i);
    }
    if (a->segs || a->pos_packed) { /* positions restart per packed segment (or back to per row) */
        int64_t end = 0;
        for (int64_t i = 0; a->segs && i < a->n_segs; i++) {
            int64_t o = a->segs[2 * i], len = a->segs[2 * i + 1];
            if (o != end || len <= 0 || len > M - o)
                return lmc_err_set(err, LMC_ERR_ARG, "packed segment %lld (%lld, %lld) does not follow the "
                                   "previous one inside the %lld rows", (long long)i, (long long)o,
                                   (long long)len, (long long)M);
            for (int64_t t = 0; t < len; t++) a->pos_host[o + t] = (int32_t)t;
            end = o + len;
        }
        if (a->segs && end != M)
            return lmc_err_set(err, LMC_ERR_ARG, "packed segments cover %lld of %lld rows", (long long)end,
                               (long long)M);
        if (!a->segs)
            for (int64_t i = 0; i < M; i++) a->pos_host[i] = (int32_t)(i % a->T);
        be->upload(be->ctx, a->pos, a->pos_host, (size_t)M * sizeof(int32_t));
        a->pos_packed = a->segs != NULL;
    }
    struct lmc_run r = {.mode = LMC_RUN_TRAIN, .be = be, .cfg = c, .arch = ar, .n = M,
                        .rot_dim = tm->rot_dim, .pos = a->pos, .inv_freq = a->inv_freq,
                        .attn_scale = a->attn_scale, .tmp = a->tmp, .B = a->B, .T = a->T,
                        .segs = a->segs, .n_segs = a->n_segs, .cp = a->cp, .moe = a->moe, .sp = a->sp,
                        .ffn_act = a->ffn_act};
    const struct lmc_sp *sp = a->sp;
    LMC_ASSERT(!sp || (!a->cp && !a->hooks && be->host_memory));
    if (sp && a->segs)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "sequence parallelism (--sp) with packed sequences (--pack)");
    float *x0 = sp ? a->hf : a->xs[0]; /* sequence parallel: the whole embedding, then this rank's rows */
    be->upload(be->ctx, a->ids, inputs, (size_t)M * sizeof(int32_t));
    be->upload(be->ctx, a->targets, targets, (size_t)M * sizeof(int32_t));
    const struct lmc_tmodel_hooks *hk = a->hooks;
    const unsigned P = LMC_TPART_PARAMS, G = LMC_TPART_GRADS, head = backward ? P | G : P;
    const int out = (int)L + 1;
#define GET(part, what, next) if (hk && (st = hk->get(hk->user, part, what, next, err))) return st
#define PUT(part, what, last) if (hk && (st = hk->put(hk->user, part, what, last, err))) return st
    GET(0, P, L > 0 ? 1 : out);
    if (a->xs_host) /* the last step's copies (a forward-only step leaves some) are done before its buffers are reused */
        for (int i = 0; i < (int)a->xs_ring; i++) be->offload_wait(be->ctx, i);
    if (tm->vocab) { /* each rank's rows, all-reduced */
        struct lmc_tp tp = {tm->vocab->g->c, be};
        if ((st = lmc_tp_embed_fwd(&tp, x0, tm->W.tok_emb.data, tm->vocab->v0, c->vocab_size, V, C, inputs,
                                   M, err)))
            return st;
    } else {
        lmc_weights_embed(be, &tm->W, x0, a->ids, a->pos, M, a->tmp);
    }
    if (sp) memcpy(a->xs[0], x0 + sp->m0 * C, sizeof(float) * (size_t)(sp->m * C));
    PUT(0, P, false);
    /* offloaded checkpoints (ring of nb buffers): input l goes to host memory (slot l % nb) while layers l ..
     * l + nb - 2 run; layer l writes the buffer of input l + 1 - nb, so waits for its copy; the last nb stay */
    const size_t xbytes = (size_t)(M * C) * sizeof(float);
    const int64_t nb = a->xs_ring;
#define OFFLOAD_OUT(l) if (a->xs_host && (l) + nb <= L) be->offload(be->ctx, a->xs_host[l], a->xs[l], xbytes, (int)((l) % nb))
    OFFLOAD_OUT(0);
    for (int64_t l = 0; l < L; l++) {
        GET((int)l + 1, P, l + 1 < L ? (int)l + 2 : tm->tied_head ? 0 : out);
        struct lmc_block_save ws;
        const struct lmc_block_save *s = layer_save(a, l, &ws);
        if (a->xs_host && l + 1 >= nb) be->offload_wait(be->ctx, (int)((l + 1 - nb) % nb));
        lmc_block_fwd(&r, l, &tm->W.layers[l], s, a->xs[l], a->xs[l + 1]);
        OFFLOAD_OUT(l + 1);
        if (a->save_bf16) lowp_move(a, &r, l, &ws, true);
        /* bf16 checkpoints: layer l's input kept as bf16 (its f32 buffer is layer l + 1's output) */
        if (a->xs16) be->convert(be->ctx, a->xs16[l], LMC_DTYPE_BF16, a->xs[l], LMC_DTYPE_F32, M * C);
        PUT((int)l + 1, P, false);
    }
    if (tm->tied_head) GET(0, head, out);
    GET(out, head, backward && L > 0 ? (int)L : -1);
    const float *xL = a->xs[L]; /* sequence parallel: the final norm and the head on the gathered rows */
    if (sp) lmc_sp_gather(sp, sp->buf[1], a->xs[L], C), xL = sp->buf[1];
    ar->norm->fwd(be, a->hf, xL, tm->W.norm_f, tm->W.norm_f_b, M, C, eps);
    double sum = 0;
    int64_t n = 0;
    if (tm->vocab) {
        if ((st = vocab_head_xent(tm, be, a, targets, backward, dscale, &sum, &n, err))) return st;
    } else if (a->distill) {
        if (sp) return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "distillation with sequence parallelism (--sp)");
        if ((st = lmc_distill_head(a->distill, tm, a, inputs, targets, backward, dscale, &sum, &n, err))) return st;
    } else {
        float *dlm = backward ? (float *)tm->G.head.w.data : NULL;
        be->classifier_xent(be->ctx, a->loss, backward ? a->dh : NULL, dlm, a->hf, &tm->W.head.w,
                            a->targets, M, dscale);
        float *loss = a->loss_host;
        be->download(be->ctx, loss, a->loss, (size_t)M * sizeof(float));
        for (int64_t i = 0; i < M; i++)
            if (targets[i] >= 0) {
                sum += loss[i];
                n++;
            }
    }
    if (a->moe) { /* the load-balancing loss, its gradient weighted as the summed loss's (dscale) */
        double coef = c->output_router_logits ? c->router_aux_loss_coef : 0.0, tot[2] = {(double)M, (double)n};
        if (a->moe_dp && a->moe_dp->world > 1) { /* over every rank's rows (count and psum are contiguous) */
            struct lmc_comm *dp = a->moe_dp;
            if ((st = dp->all_reduce(dp, a->moe->count, 2 * a->moe->L * a->moe->E, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)) ||
                (st = dp->all_reduce(dp, tot, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)))
                return st;
        }
        a->moe_aux = lmc_moe_aux_loss(c, a->moe, (int64_t)tot[0], backward ? coef * (double)dscale * tot[1] : 0.0);
        sum += coef * a->moe_aux * (double)n;
    }
    *loss_sum = sum;
    *count = n;
    if (backward) {
        be->zero(be->ctx, a->dx, (size_t)(M * C) * sizeof(float));
        ar->norm->bwd(be, a->dx, (float *)tm->G.norm_f, (float *)tm->G.norm_f_b, a->dh, xL,
                      tm->W.norm_f, M, C, eps);
        if (sp) memmove(a->dx, a->dx + sp->m0 * C, sizeof(float) * (size_t)(sp->m * C)); /* this rank's rows */
    }
    PUT(out, head, backward);
    if (tm->tied_head) PUT(0, head, false);
    if (!backward) return LMC_OK;
    for (int64_t l = L - 1; l >= 0; l--) {
        struct lmc_block_save ws;
        const struct lmc_block_save *s = layer_save(a, l, &ws);
        GET((int)l + 1, P | G, l > 0 ? (int)l : -1);
        if (a->save_bf16) lowp_move(a, &r, l, &ws, false);
        if (a->xs16) be->convert(be->ctx, a->xs[l], LMC_DTYPE_F32, a->xs16[l], LMC_DTYPE_BF16, M * C);
        if (a->xs_host) { /* input l + 1 - nb back into the buffer input l + 1 used, while layers l .. l + 2 - nb run */
            if (l + 1 >= nb) be->offload(be->ctx, a->xs[l + 1 - nb], a->xs_host[l + 1 - nb], xbytes, (int)((l + 1 - nb) % nb));
            if (l + nb <= L) be->offload_wait(be->ctx, (int)(l % nb));
        }
        /* the last layer's saves (full recomputation: saves[0]; mixer: the shared set) are still its forward's,
         * unless the backward restores its input from a bf16 checkpoint or routing statistics would count twice */
        bool fresh = l == L - 1 && !a->xs16 && !a->sp && !a->moe;
        if (a->recompute && !fresh) lmc_block_fwd(&r, l, &tm->W.layers[l], s, a->xs[l], a->tmp);
        if (a->mixer && !fresh) lmc_block_fwd_mixer(&r, l, &tm->W.layers[l], s, a->xs[l]);
        if (a->selective) lmc_block_renorm(&r, &tm->W.layers[l], s, a->xs[l]); /* the product: the ffn's bwd */
        bool held = hold_saved_norms(a, &r, l, s);
        lmc_block_bwd(&r, l, &tm->W.layers[l], &tm->G.layers[l], s, a->xs[l], a->dx, a->dh, a->scratch);
        if (held) be->operand_release(be->ctx);
        PUT((int)l + 1, P | G, true);
    }
    GET(0, G, -1);
    float *dx0 = a->dx; /* sequence parallel: every rank's rows gathered for the embedding's gradient */
    if (sp) lmc_sp_gather(sp, sp->buf[0], a->dx, C), dx0 = sp->buf[0];
    if (!tm->G.tok_emb.data) { /* a frozen embedding (adapter training): no gradient */
    } else if (tm->vocab) {
        lmc_tp_embed_bwd((float *)tm->G.tok_emb.data, tm->vocab->v0, c->vocab_size, C, inputs, M, dx0);
    } else {
        be->embed_bwd(be->ctx, (float *)tm->G.tok_emb.data, dx0, a->ids, M, C);
    }
    if (tm->G.pos_emb.data) be->embed_bwd(be->ctx, (float *)tm->G.pos_emb.data, dx0, a->pos, M, C);
    PUT(0, G, true);
#undef GET
#undef PUT
#undef OFFLOAD_OUT
    return LMC_OK;
}

/* With a frozen base (adapter training) the trainable floats — every
 * adapter's A and B — stay unchanged through the step (the optimizer runs
 * after it): held as GEMM operands (backend.h operand_hold) for the whole
 * step, a rounding backend rounds them once a step instead of at every
 * GEMM that reads them. Not with hooks (they may move parameters). */
lmc_status lmc_tmodel_step(struct lmc_tmodel *tm, const struct lmc_backend *be,
                           struct lmc_tacts *a, const int32_t *inputs, const int32_t *targets,
                           bool backward, float dscale, double *loss_sum, int64_t *count,
                           lmc_err *err) {
    bool hold = be->operand_hold && tm->trainable_off > 0 && !a->hooks && tm->numel > tm->trainable_off;
    if (hold) {
        const float *src = tm->w + tm->trainable_off;
        int64_t n = tm->numel - tm->trainable_off;
        be->operand_hold(be->ctx, 1, &src, &n, NULL);
    }
    lmc_status st = tmodel_step(tm, be, a, inputs, targets, backward, dscale, loss_sum, count, err);
    if (hold) be->operand_release(be->ctx);
    return st;
}
