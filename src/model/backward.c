/* backward.c — trainable models (see backward.h): the parameter table and
 * arenas, loading from and initialising without a checkpoint, the
 * training forward that saves activations, and the backward pass, composed
 * only of backend-table ops. */
#include "model/backward.h"
#include "core/core.h"
#include "core/rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one layer's backward needs from its forward (all (BT, .); lse
 * (BT, n_heads): attention_train's log-sum-exp, att its output). */
struct lmc_tlayer_acts {
    float *h1, *q, *k, *v, *att, *lse, *xmid, *h2, *gate, *up, *act;
};

/* ---------------- parameter table ---------------- */

struct layout_state {
    struct lmc_tmodel *tm;
    float *arena;           /* NULL: record the table */
    int next;
};

/* Adds (record) or finds (bind) the next tensor; returns its arena pointer. */
static float *P(struct layout_state *s, bool transposed, int ndim, int64_t s0, int64_t s1,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static float *P(struct layout_state *s, bool transposed, int ndim, int64_t s0, int64_t s1,
                const char *fmt, ...) {
    struct lmc_tmodel *tm = s->tm;
    if (!s->arena) {
        struct lmc_tparam *p = &tm->params[tm->n_params++];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->name, sizeof p->name, fmt, ap);
        va_end(ap);
        p->ndim = ndim;
        p->shape[0] = s0;
        p->shape[1] = ndim == 2 ? s1 : 1;
        p->numel = p->shape[0] * p->shape[1];
        p->transposed = transposed;
        p->off = tm->numel;
        tm->numel += (p->numel + 15) / 16 * 16;
        return NULL;
    }
    return s->arena + tm->params[s->next++].off;
}

static struct lmc_mat fmat(const float *data, int64_t rows, int64_t cols) {
    struct lmc_mat m = {LMC_DTYPE_F32, rows, cols, data};
    return m;
}

/* Walks every tensor in one fixed order: records the table (arena NULL) or
 * binds the views of an arena. */
static void layout(struct lmc_tmodel *tm, float *arena, struct lmc_tview *v) {
    const struct lmc_config *c = &tm->cfg;
    int64_t C = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    struct layout_state s = {tm, arena, 0};
    struct lmc_tview dummy;
    struct lmc_layer dl;
    if (!v) v = &dummy;
    bool rec = !arena;
    if (c->arch == LMC_ARCH_GPT2) {
        float *p = P(&s, false, 2, V, C, "transformer.wte.weight");
        v->tok_emb = fmat(p, V, C);
        v->lm_head = v->tok_emb;
        p = P(&s, false, 2, c->max_position_embeddings, C, "transformer.wpe.weight");
        v->pos_emb = fmat(p, c->max_position_embeddings, C);
        for (int64_t l = 0; l < c->num_layers; l++) {
            struct lmc_layer *L = rec ? &dl : &v->layers[l];
            long long li = (long long)l;
            L->norm1_w = P(&s, false, 1, C, 0, "transformer.h.%lld.ln_1.weight", li);
            L->norm1_b = P(&s, false, 1, C, 0, "transformer.h.%lld.ln_1.bias", li);
            p = P(&s, true, 2, C, 3 * C, "transformer.h.%lld.attn.c_attn.weight", li);
            L->wq = fmat(p, C, C);
            L->wk = fmat(p ? p + C * C : NULL, C, C);
            L->wv = fmat(p ? p + 2 * C * C : NULL, C, C);
            float *b = P(&s, false, 1, 3 * C, 0, "transformer.h.%lld.attn.c_attn.bias", li);
            L->bq = b;
            L->bk = b ? b + C : NULL;
            L->bv = b ? b + 2 * C : NULL;
            L->wo = fmat(P(&s, true, 2, C, C, "transformer.h.%lld.attn.c_proj.weight", li), C, C);
            L->bo = P(&s, false, 1, C, 0, "transformer.h.%lld.attn.c_proj.bias", li);
            L->norm2_w = P(&s, false, 1, C, 0, "transformer.h.%lld.ln_2.weight", li);
            L->norm2_b = P(&s, false, 1, C, 0, "transformer.h.%lld.ln_2.bias", li);
            L->w_up = fmat(P(&s, true, 2, C, I, "transformer.h.%lld.mlp.c_fc.weight", li), I, C);
            L->b_up = P(&s, false, 1, I, 0, "transformer.h.%lld.mlp.c_fc.bias", li);
            L->w_down = fmat(P(&s, true, 2, I, C, "transformer.h.%lld.mlp.c_proj.weight", li), C, I);
            L->b_down = P(&s, false, 1, C, 0, "transformer.h.%lld.mlp.c_proj.bias", li);
            L->w_gate = fmat(NULL, 0, 0);
            L->b_gate = NULL;
        }
        v->norm_f_w = P(&s, false, 1, C, 0, "transformer.ln_f.weight");
        v->norm_f_b = P(&s, false, 1, C, 0, "transformer.ln_f.bias");
        return;
    }
    v->tok_emb = fmat(P(&s, false, 2, V, C, "model.embed_tokens.weight"), V, C);
    v->pos_emb = fmat(NULL, 0, 0);
    for (int64_t l = 0; l < c->num_layers; l++) {
        struct lmc_layer *L = rec ? &dl : &v->layers[l];
        long long li = (long long)l;
        const char *pre = "model.layers";
        memset(L, 0, sizeof *L);
        L->norm1_w = P(&s, false, 1, C, 0, "%s.%lld.input_layernorm.weight", pre, li);
        L->wq = fmat(P(&s, false, 2, qd, C, "%s.%lld.self_attn.q_proj.weight", pre, li), qd, C);
        if (c->qkv_bias) L->bq = P(&s, false, 1, qd, 0, "%s.%lld.self_attn.q_proj.bias", pre, li);
        L->wk = fmat(P(&s, false, 2, kvd, C, "%s.%lld.self_attn.k_proj.weight", pre, li), kvd, C);
        if (c->qkv_bias) L->bk = P(&s, false, 1, kvd, 0, "%s.%lld.self_attn.k_proj.bias", pre, li);
        L->wv = fmat(P(&s, false, 2, kvd, C, "%s.%lld.self_attn.v_proj.weight", pre, li), kvd, C);
        if (c->qkv_bias) L->bv = P(&s, false, 1, kvd, 0, "%s.%lld.self_attn.v_proj.bias", pre, li);
        L->wo = fmat(P(&s, false, 2, C, qd, "%s.%lld.self_attn.o_proj.weight", pre, li), C, qd);
        if (c->o_bias) L->bo = P(&s, false, 1, C, 0, "%s.%lld.self_attn.o_proj.bias", pre, li);
        L->norm2_w = P(&s, false, 1, C, 0, "%s.%lld.post_attention_layernorm.weight", pre, li);
        L->w_gate = fmat(P(&s, false, 2, I, C, "%s.%lld.mlp.gate_proj.weight", pre, li), I, C);
        if (c->mlp_bias) L->b_gate = P(&s, false, 1, I, 0, "%s.%lld.mlp.gate_proj.bias", pre, li);
        L->w_up = fmat(P(&s, false, 2, I, C, "%s.%lld.mlp.up_proj.weight", pre, li), I, C);
        if (c->mlp_bias) L->b_up = P(&s, false, 1, I, 0, "%s.%lld.mlp.up_proj.bias", pre, li);
        L->w_down = fmat(P(&s, false, 2, C, I, "%s.%lld.mlp.down_proj.weight", pre, li), C, I);
        if (c->mlp_bias) L->b_down = P(&s, false, 1, C, 0, "%s.%lld.mlp.down_proj.bias", pre, li);
    }
    v->norm_f_w = P(&s, false, 1, C, 0, "model.norm.weight");
    v->norm_f_b = NULL;
    if (c->tie_word_embeddings) v->lm_head = v->tok_emb;
    else v->lm_head = fmat(P(&s, false, 2, V, C, "lm_head.weight"), V, C);
}

/* The first op of be's table that training needs and be lacks, or NULL. */
static const char *missing_op(const struct lmc_backend *be, const struct lmc_config *c,
                              bool backward, bool optimizer) {
    bool gpt2 = c->arch == LMC_ARCH_GPT2;
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
    NEED(attention_train);
    NEED(classifier_xent);
    if (gpt2) {
        NEED(layernorm);
        NEED(gelu);
    } else {
        NEED(rmsnorm);
        NEED(rope);
        NEED(swiglu);
    }
    if (backward) {
        NEED(matmul_bwd);
        NEED(embed_bwd);
        NEED(attention_bwd);
        if (gpt2) {
            NEED(layernorm_bwd);
            NEED(gelu_bwd);
        } else {
            NEED(rmsnorm_bwd);
            NEED(rope_bwd);
            NEED(swiglu_bwd);
        }
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
    memset(tm, 0, sizeof *tm);
    lmc_status st = lmc_tmodel_check_backend(be, cfg, false, false, err);
    if (st) return st;
    tm->be = be;
    tm->cfg = *cfg;
    const struct lmc_config *c = &tm->cfg;
    if (c->num_layers <= 0 || c->hidden_size <= 0 || c->vocab_size <= 0 || c->num_heads <= 0 ||
        c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads || c->head_dim <= 0 ||
        c->intermediate_size <= 0 || (c->arch == LMC_ARCH_GPT2 && c->num_heads * c->head_dim != c->hidden_size))
        return lmc_err_set(err, LMC_ERR_ARG, "model config: sizes are not trainable (layers %lld, "
                           "hidden %lld, heads %lld/%lld, head_dim %lld)", (long long)c->num_layers,
                           (long long)c->hidden_size, (long long)c->num_heads,
                           (long long)c->num_kv_heads, (long long)c->head_dim);
    tm->rot_dim = c->arch == LMC_ARCH_GPT2
                      ? 0
                      : (int64_t)((double)c->head_dim * c->rope.partial_rotary_factor) / 2 * 2;
    tm->params = calloc((size_t)(c->num_layers * 16 + 8), sizeof *tm->params);
    tm->W.layers = calloc((size_t)c->num_layers, sizeof *tm->W.layers);
    tm->G.layers = calloc((size_t)c->num_layers, sizeof *tm->G.layers);
    if (!tm->params || !tm->W.layers || !tm->G.layers) goto oom;
    layout(tm, NULL, NULL);
    size_t bytes = (size_t)tm->numel * sizeof(float);
    tm->w = be->alloc(be->ctx, bytes);
    tm->g = be->alloc(be->ctx, bytes);
    if (!tm->w || !tm->g) goto oom;
    be->zero(be->ctx, tm->w, bytes); /* padding between tensors stays zero from here on */
    be->zero(be->ctx, tm->g, bytes);
    layout(tm, tm->w, &tm->W);
    layout(tm, tm->g, &tm->G);
    return LMC_OK;
oom:
    lmc_tmodel_free(tm);
    return lmc_err_set(err, LMC_ERR_OOM, "model of %lld parameters: out of memory",
                       (long long)tm->numel);
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
    tm->be->zero(tm->be->ctx, tm->g, (size_t)tm->numel * sizeof(float));
}

int lmc_tmodel_find(const struct lmc_tmodel *tm, const char *name) {
    for (int i = 0; i < tm->n_params; i++)
        if (!strcmp(tm->params[i].name, name)) return i;
    return -1;
}

/* Transposes the on-disk (R, Cc) tensor of p in `in` into the arena's
 * (Cc, R) layout in dst, or back (to_disk); both host memory. */
static void transpose(const struct lmc_tparam *p, float *dst, const float *in, bool to_disk) {
    int64_t R = p->shape[0], Cc = p->shape[1];
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < Cc; c++) {
            if (to_disk) dst[r * Cc + c] = in[c * R + r];
            else dst[c * R + r] = in[r * Cc + c];
        }
}

lmc_status lmc_tmodel_download_param(const struct lmc_tmodel *tm, const float *arena, int i,
                                     float *out, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    const struct lmc_tparam *p = &tm->params[i];
    size_t bytes = (size_t)p->numel * sizeof(float);
    if (!p->transposed) {
        be->download(be->ctx, out, arena + p->off, bytes);
        return LMC_OK;
    }
    float *tmp = malloc(bytes);
    if (!tmp) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", p->name);
    be->download(be->ctx, tmp, arena + p->off, bytes);
    transpose(p, out, tmp, true);
    free(tmp);
    return LMC_OK;
}

lmc_status lmc_tmodel_upload_param(const struct lmc_tmodel *tm, float *arena, int i,
                                   const float *in, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    const struct lmc_tparam *p = &tm->params[i];
    size_t bytes = (size_t)p->numel * sizeof(float);
    float *tmp = NULL;
    if (p->transposed) {
        if (!(tmp = malloc(bytes))) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", p->name);
        transpose(p, tmp, in, false);
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

/* Box-Muller normal from the seeded generator. */
static double normal(uint64_t *s) {
    double u1 = lmc_rng_uniform(s), u2 = lmc_rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

lmc_status lmc_tmodel_init_random(struct lmc_tmodel *tm, uint64_t seed, double std, lmc_err *err) {
    const struct lmc_backend *be = tm->be;
    uint64_t s = seed ^ 0x6c6d632d696e6974ull;
    double res_std = std / sqrt(2.0 * (double)tm->cfg.num_layers);
    int64_t most = 0;
    for (int i = 0; i < tm->n_params; i++) most = LMC_MAX(most, tm->params[i].numel);
    float *w = malloc((size_t)most * sizeof(float)); /* one tensor, in the arena's layout */
    if (!w) return lmc_err_set(err, LMC_ERR_OOM, "initialising %lld parameters: out of memory",
                               (long long)tm->numel);
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        bool norm = strstr(p->name, "norm") || strstr(p->name, "ln_");
        if (p->ndim == 1) {
            float v = norm && ends_with(p->name, ".weight") ? 1.0f : 0.0f;
            for (int64_t k = 0; k < p->numel; k++) w[k] = v;
        } else {
            bool resid = ends_with(p->name, "o_proj.weight") ||
                         ends_with(p->name, "down_proj.weight") || ends_with(p->name, "c_proj.weight");
            double sd = resid ? res_std : std;
            for (int64_t k = 0; k < p->numel; k++) w[k] = (float)(normal(&s) * sd);
        }
        be->upload(be->ctx, tm->w + p->off, w, (size_t)p->numel * sizeof(float));
        be->sync(be->ctx); /* w is refilled next */
    }
    free(w);
    return LMC_OK;
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

lmc_status lmc_tmodel_load(struct lmc_tmodel *tm, const char *dir, const struct lmc_backend *be,
                           lmc_err *err) {
    struct lmc_config cfg;
    struct lmc_st st;
    lmc_status s = lmc_config_load(&cfg, dir, err);
    if (s) return s;
    if ((s = lmc_st_open_dir(&st, dir, err))) return s;
    if ((s = lmc_tmodel_init(tm, &cfg, be, err))) {
        lmc_st_free(&st);
        return s;
    }
    float *buf = NULL;
    for (int i = 0; i < tm->n_params && !s; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        const char *name = p->name;
        const struct lmc_st_tensor *t = lmc_st_find(&st, name);
        if (!t && !strncmp(name, "transformer.", 12)) t = lmc_st_find(&st, name + 12);
        if (!t) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", dir, name);
            break;
        }
        bool ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] &&
                  (p->ndim == 1 || t->shape[1] == p->shape[1]);
        if (!ok || (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16)) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has the wrong shape or dtype "
                            "(expected F32/F16/BF16 [%lld%s%lld])", dir, name, (long long)p->shape[0],
                            p->ndim == 2 ? ", " : "", p->ndim == 2 ? (long long)p->shape[1] : 0LL);
            break;
        }
        free(buf);
        buf = malloc((size_t)p->numel * sizeof(float));
        if (!buf) {
            s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
            break;
        }
        for (int64_t k = 0; k < p->numel; k++) buf[k] = st_elem(t, k);
        s = lmc_tmodel_upload_param(tm, tm->w, i, buf, err);
    }
    free(buf);
    lmc_st_free(&st);
    if (s) lmc_tmodel_free(tm);
    return s;
}

/* ---------------- activations ---------------- */

static int64_t acts_floats(const struct lmc_config *c, int64_t B, int64_t T, bool recompute) {
    int64_t C = c->hidden_size, I = c->intermediate_size, L = c->num_layers;
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim, BT = B * T;
    int64_t layer = BT * (3 * C + 2 * qd + 2 * kvd + 3 * I + c->num_heads); /* + lse */
    int64_t n = (L + 1) * BT * C + (recompute ? 1 : L) * layer; /* xs, layer acts */
    n += 2 * BT * C + BT;                                      /* hf, tmp, loss */
    n += 2 * BT * C + 2 * BT * qd + 2 * BT * kvd + 3 * BT * I; /* backward scratch */
    return n + 16 * 33;                                        /* alignment slack */
}

size_t lmc_tacts_bytes(const struct lmc_config *c, int64_t B, int64_t T, bool recompute) {
    return (size_t)acts_floats(c, B, T, recompute) * sizeof(float) +
           (size_t)(3 * B * T) * sizeof(int32_t) + (size_t)(c->head_dim / 2 + 1) * sizeof(double);
}

lmc_status lmc_tacts_init(struct lmc_tacts *a, const struct lmc_tmodel *tm,
                          const struct lmc_backend *be, int64_t B, int64_t T, bool recompute,
                          lmc_err *err) {
    memset(a, 0, sizeof *a);
    const struct lmc_config *c = &tm->cfg;
    lmc_status st = lmc_tmodel_check_backend(be, c, false, false, err);
    if (st) return st;
    if (B <= 0 || T <= 0 || B * T > ((int64_t)1 << 31))
        return lmc_err_set(err, LMC_ERR_ARG, "batch %lld x %lld out of range", (long long)B, (long long)T);
    if (c->arch == LMC_ARCH_GPT2 && T > c->max_position_embeddings)
        return lmc_err_set(err, LMC_ERR_ARG, "sequence length %lld exceeds the model's %lld positions",
                           (long long)T, (long long)c->max_position_embeddings);
    int64_t C = c->hidden_size, I = c->intermediate_size, L = c->num_layers, BT = B * T;
    int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
    a->be = be;
    a->B = B;
    a->T = T;
    a->recompute = recompute;
    int64_t nl = recompute ? 1 : L;
    a->arena = be->alloc(be->ctx, (size_t)acts_floats(c, B, T, recompute) * sizeof(float));
    a->xs = calloc((size_t)(L + 1), sizeof *a->xs);
    a->la = calloc((size_t)nl, sizeof *a->la);
    a->ids = be->alloc(be->ctx, (size_t)(3 * BT) * sizeof(int32_t));
    a->inv_freq = be->alloc(be->ctx, (size_t)(c->head_dim / 2 + 1) * sizeof(double));
    a->loss_host = malloc((size_t)BT * sizeof(float));
    if (!a->arena || !a->xs || !a->la || !a->ids || !a->inv_freq || !a->loss_host) {
        lmc_tacts_free(a);
        return lmc_err_set(err, LMC_ERR_OOM, "training activations (%zu bytes): out of memory",
                           lmc_tacts_bytes(c, B, T, recompute));
    }
    a->pos = a->ids + BT;
    a->targets = a->ids + 2 * BT;
    float *p = a->arena;
#define TAKE(n) (p += ((n) + 15) / 16 * 16, p - ((n) + 15) / 16 * 16)
    for (int64_t l = 0; l <= L; l++) a->xs[l] = TAKE(BT * C);
    for (int64_t l = 0; l < nl; l++) {
        struct lmc_tlayer_acts *x = &a->la[l];
        x->h1 = TAKE(BT * C);
        x->q = TAKE(BT * qd);
        x->k = TAKE(BT * kvd);
        x->v = TAKE(BT * kvd);
        x->att = TAKE(BT * qd);
        x->lse = TAKE(BT * c->num_heads);
        x->xmid = TAKE(BT * C);
        x->h2 = TAKE(BT * C);
        x->gate = TAKE(BT * I);
        x->up = TAKE(BT * I);
        x->act = TAKE(BT * I);
    }
    a->hf = TAKE(BT * C);
    a->tmp = TAKE(BT * C);
    a->loss = TAKE(BT);
    a->dx = TAKE(BT * C);
    a->dh = TAKE(BT * C);
    a->datt = TAKE(BT * qd);
    a->dq = TAKE(BT * qd);
    a->dk = TAKE(BT * kvd);
    a->dv = TAKE(BT * kvd);
    a->dact = TAKE(BT * I);
    a->dgate = TAKE(BT * I);
    a->dup = TAKE(BT * I);
#undef TAKE
    LMC_ASSERT(p <= a->arena + acts_floats(c, B, T, recompute));
    /* positions restart at 0 in every sequence; rotary tables for length T */
    int32_t *pos = malloc((size_t)BT * sizeof *pos);
    if (!pos) {
        lmc_tacts_free(a);
        return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    }
    for (int64_t i = 0; i < BT; i++) pos[i] = (int32_t)(i % T);
    be->upload(be->ctx, a->pos, pos, (size_t)BT * sizeof *pos);
    free(pos);
    a->attn_scale = 1.0f;
    if (tm->rot_dim) {
        double inv_freq[tm->rot_dim / 2];
        lmc_rope_freqs(c, tm->rot_dim, T, inv_freq, &a->attn_scale);
        be->upload(be->ctx, a->inv_freq, inv_freq, sizeof inv_freq);
    }
    return LMC_OK;
}

void lmc_tacts_free(struct lmc_tacts *a) {
    if (a->be) {
        if (a->arena) a->be->free(a->be->ctx, a->arena);
        if (a->ids) a->be->free(a->be->ctx, a->ids);
        if (a->inv_freq) a->be->free(a->be->ctx, a->inv_freq);
    }
    free(a->xs);
    free(a->la);
    free(a->loss_host);
    memset(a, 0, sizeof *a);
}

/* ---------------- forward ---------------- */

static void norm_fwd(const struct lmc_backend *be, const struct lmc_config *c, float *y,
                     const float *x, const float *w, const float *b, int64_t n) {
    if (c->arch == LMC_ARCH_GPT2) be->layernorm(be->ctx, y, x, w, b, n, c->hidden_size, (float)c->norm_eps);
    else be->rmsnorm(be->ctx, y, x, w, n, c->hidden_size, (float)c->norm_eps);
}

static void norm_bwd(const struct lmc_backend *be, const struct lmc_config *c, float *dx,
                     float *dw, float *db, const float *dy, const float *x, const float *w,
                     int64_t n) {
    if (c->arch == LMC_ARCH_GPT2)
        be->layernorm_bwd(be->ctx, dx, dw, db, dy, x, w, n, c->hidden_size, (float)c->norm_eps);
    else be->rmsnorm_bwd(be->ctx, dx, dw, dy, x, w, n, c->hidden_size, (float)c->norm_eps);
}

/* Layer l from xin into its saved activations and xout. */
static void layer_fwd(const struct lmc_tmodel *tm, const struct lmc_backend *be,
                      const struct lmc_tacts *a, int64_t l, struct lmc_tlayer_acts *x,
                      const float *xin, float *xout) {
    const struct lmc_config *c = &tm->cfg;
    const struct lmc_layer *L = &tm->W.layers[l];
    int64_t C = c->hidden_size, H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int64_t I = c->intermediate_size, T = a->T, M = a->B * a->T;
    norm_fwd(be, c, x->h1, xin, L->norm1_w, L->norm1_b, M);
    be->matmul(be->ctx, x->q, x->h1, M, &L->wq, L->bq);
    be->matmul(be->ctx, x->k, x->h1, M, &L->wk, L->bk);
    be->matmul(be->ctx, x->v, x->h1, M, &L->wv, L->bv);
    if (tm->rot_dim) {
        be->rope(be->ctx, x->q, M, H, hd, tm->rot_dim, a->pos, a->inv_freq, a->attn_scale);
        be->rope(be->ctx, x->k, M, KV, hd, tm->rot_dim, a->pos, a->inv_freq, a->attn_scale);
    }
    be->attention_train(be->ctx, x->att, x->lse, x->q, x->k, x->v, a->B, T, H, KV, hd,
                        1.0f / sqrtf((float)hd), c->sliding_window);
    be->matmul(be->ctx, a->tmp, x->att, M, &L->wo, L->bo);
    be->add(be->ctx, x->xmid, xin, a->tmp, M * C);
    norm_fwd(be, c, x->h2, x->xmid, L->norm2_w, L->norm2_b, M);
    if (c->arch == LMC_ARCH_GPT2) {
        be->matmul(be->ctx, x->up, x->h2, M, &L->w_up, L->b_up);
        be->gelu(be->ctx, x->act, x->up, M * I, c->act == LMC_ACT_GELU_TANH);
    } else {
        be->matmul(be->ctx, x->gate, x->h2, M, &L->w_gate, L->b_gate);
        be->matmul(be->ctx, x->up, x->h2, M, &L->w_up, L->b_up);
        be->swiglu(be->ctx, x->act, x->gate, x->up, M * I);
    }
    be->matmul(be->ctx, a->tmp, x->act, M, &L->w_down, L->b_down);
    be->add(be->ctx, xout, x->xmid, a->tmp, M * C);
}

/* Backward of layer l: a->dx holds d(xout) on entry and d(xin) on return. */
static void layer_bwd(struct lmc_tmodel *tm, const struct lmc_backend *be, struct lmc_tacts *a,
                      int64_t l, const struct lmc_tlayer_acts *x, const float *xin) {
    const struct lmc_config *c = &tm->cfg;
    const struct lmc_layer *L = &tm->W.layers[l], *G = &tm->G.layers[l];
    int64_t H = c->num_heads, KV = c->num_kv_heads, hd = c->head_dim;
    int64_t I = c->intermediate_size, M = a->B * a->T;
    void *cx = be->ctx;
#define GW(m) ((float *)(G->m.data))
#define GB(v) ((float *)(G->v))
    be->matmul_bwd(cx, a->dact, GW(w_down), GB(b_down), a->dx, x->act, M, &L->w_down, 0);
    if (c->arch == LMC_ARCH_GPT2) {
        be->gelu_bwd(cx, a->dact, a->dact, x->up, M * I, c->act == LMC_ACT_GELU_TANH);
        be->matmul_bwd(cx, a->dh, GW(w_up), GB(b_up), a->dact, x->h2, M, &L->w_up, 0);
    } else {
        be->swiglu_bwd(cx, a->dgate, a->dup, a->dact, x->gate, x->up, M * I);
        be->matmul_bwd(cx, a->dh, GW(w_gate), GB(b_gate), a->dgate, x->h2, M, &L->w_gate, 0);
        be->matmul_bwd(cx, a->dh, GW(w_up), GB(b_up), a->dup, x->h2, M, &L->w_up, 1);
    }
    norm_bwd(be, c, a->dx, GB(norm2_w), GB(norm2_b), a->dh, x->xmid, L->norm2_w, M);
    be->matmul_bwd(cx, a->datt, GW(wo), GB(bo), a->dx, x->att, M, &L->wo, 0);
    be->attention_bwd(cx, a->dq, a->dk, a->dv, a->datt, x->att, x->lse, x->q, x->k, x->v, a->B,
                      a->T, H, KV, hd, 1.0f / sqrtf((float)hd), c->sliding_window);
    if (tm->rot_dim) {
        be->rope_bwd(cx, a->dq, M, H, hd, tm->rot_dim, a->pos, a->inv_freq, a->attn_scale);
        be->rope_bwd(cx, a->dk, M, KV, hd, tm->rot_dim, a->pos, a->inv_freq, a->attn_scale);
    }
    be->matmul_bwd(cx, a->dh, GW(wq), GB(bq), a->dq, x->h1, M, &L->wq, 0);
    be->matmul_bwd(cx, a->dh, GW(wk), GB(bk), a->dk, x->h1, M, &L->wk, 1);
    be->matmul_bwd(cx, a->dh, GW(wv), GB(bv), a->dv, x->h1, M, &L->wv, 1);
    norm_bwd(be, c, a->dx, GB(norm1_w), GB(norm1_b), a->dh, xin, L->norm1_w, M);
#undef GW
#undef GB
}

lmc_status lmc_tmodel_step(struct lmc_tmodel *tm, const struct lmc_backend *be,
                           struct lmc_tacts *a, const int32_t *inputs, const int32_t *targets,
                           bool backward, float dscale, double *loss_sum, int64_t *count,
                           lmc_err *err) {
    const struct lmc_config *c = &tm->cfg;
    int64_t C = c->hidden_size, M = a->B * a->T, L = c->num_layers, V = c->vocab_size;
    LMC_ASSERT(be == tm->be && a->be == be);
    lmc_status st = lmc_tmodel_check_backend(be, c, backward, false, err);
    if (st) return st;
    for (int64_t i = 0; i < M; i++) {
        if (inputs[i] < 0 || inputs[i] >= V || targets[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "token id out of range (vocabulary %lld) at %lld",
                               (long long)V, (long long)i);
    }
    be->upload(be->ctx, a->ids, inputs, (size_t)M * sizeof(int32_t));
    be->upload(be->ctx, a->targets, targets, (size_t)M * sizeof(int32_t));
    be->embed(be->ctx, a->xs[0], &tm->W.tok_emb, a->ids, M);
    if (tm->W.pos_emb.data) {
        be->embed(be->ctx, a->tmp, &tm->W.pos_emb, a->pos, M);
        be->add(be->ctx, a->xs[0], a->xs[0], a->tmp, M * C);
    }
    for (int64_t l = 0; l < L; l++)
        layer_fwd(tm, be, a, l, &a->la[a->recompute ? 0 : l], a->xs[l], a->xs[l + 1]);
    norm_fwd(be, c, a->hf, a->xs[L], tm->W.norm_f_w, tm->W.norm_f_b, M);
    float *dlm = backward ? (float *)tm->G.lm_head.data : NULL;
    be->classifier_xent(be->ctx, a->loss, backward ? a->dh : NULL, dlm, a->hf, &tm->W.lm_head,
                        a->targets, M, dscale);
    float *loss = a->loss_host;
    be->download(be->ctx, loss, a->loss, (size_t)M * sizeof(float));
    double sum = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < M; i++)
        if (targets[i] >= 0) {
            sum += loss[i];
            n++;
        }
    *loss_sum = sum;
    *count = n;
    if (!backward) return LMC_OK;
    be->zero(be->ctx, a->dx, (size_t)(M * C) * sizeof(float));
    norm_bwd(be, c, a->dx, (float *)tm->G.norm_f_w, (float *)tm->G.norm_f_b, a->dh, a->xs[L],
             tm->W.norm_f_w, M);
    for (int64_t l = L - 1; l >= 0; l--) {
        struct lmc_tlayer_acts *x = &a->la[a->recompute ? 0 : l];
        if (a->recompute) layer_fwd(tm, be, a, l, x, a->xs[l], a->tmp);
        layer_bwd(tm, be, a, l, x, a->xs[l]);
    }
    be->embed_bwd(be->ctx, (float *)tm->G.tok_emb.data, a->dx, a->ids, M, C);
    if (tm->G.pos_emb.data) be->embed_bwd(be->ctx, (float *)tm->G.pos_emb.data, a->dx, a->pos, M, C);
    return LMC_OK;
}
