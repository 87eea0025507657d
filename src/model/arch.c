/* arch.c — the architecture registry and the generic readers of a spec
 * table (see arch.h): the walk that expands it for a config, binding a
 * tensor into the weight slots, configs built from sizes, and the
 * overflow checks on every size product the model code forms. */
#include "model/arch.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct lmc_architecture *const archs[] = {&lmc_arch_llama, &lmc_arch_gpt2, &lmc_arch_qwen3,
                                                       &lmc_arch_mixtral, &lmc_arch_qwen3moe, &lmc_arch_qwen2moe,
                                                       &lmc_arch_olmoe, &lmc_arch_mamba, &lmc_arch_mamba2};
#define N_ARCHS ((int)(sizeof archs / sizeof *archs))

const struct lmc_architecture *lmc_arch_of(const struct lmc_config *c) {
    /* each architecture's config_defaults / the parser sets c->arch; the
     * registry is indexed by it */
    static const struct lmc_architecture *const by_enum[] = {
        [LMC_ARCH_LLAMA] = &lmc_arch_llama, [LMC_ARCH_GPT2] = &lmc_arch_gpt2,
        [LMC_ARCH_QWEN3] = &lmc_arch_qwen3, [LMC_ARCH_MIXTRAL] = &lmc_arch_mixtral,
        [LMC_ARCH_QWEN3MOE] = &lmc_arch_qwen3moe, [LMC_ARCH_QWEN2MOE] = &lmc_arch_qwen2moe,
        [LMC_ARCH_OLMOE] = &lmc_arch_olmoe, [LMC_ARCH_MAMBA] = &lmc_arch_mamba,
        [LMC_ARCH_MAMBA2] = &lmc_arch_mamba2};
    LMC_ASSERT((int)c->arch >= 0 && (size_t)c->arch < sizeof by_enum / sizeof *by_enum);
    return by_enum[c->arch];
}

const struct lmc_architecture *lmc_arch_find(const char *name) {
    for (int i = 0; i < N_ARCHS; i++)
        if (!strcmp(archs[i]->name, name)) return archs[i];
    return NULL;
}

const char *lmc_arch_names(void) { return "llama, gpt2, qwen3, mixtral, qwen3moe, qwen2moe, olmoe, mamba, mamba2"; }

int64_t lmc_arch_rot_dim(const struct lmc_architecture *a, const struct lmc_config *c) {
    if (a->learned_pos) return 0;
    return (int64_t)((double)c->head_dim * c->rope.partial_rotary_factor) / 2 * 2;
}

static int64_t dim_of(const struct lmc_config *c, int d) {
    switch (d) {
    case LMC_D_C: return c->hidden_size;
    case LMC_D_V: return c->vocab_size;
    case LMC_D_I: return c->intermediate_size;
    case LMC_D_QD: return c->num_heads * c->head_dim;
    case LMC_D_KVD: return c->num_kv_heads * c->head_dim;
    case LMC_D_HD: return c->head_dim;
    case LMC_D_P: return c->max_position_embeddings;
    case LMC_D_3C: return 3 * c->hidden_size;
    case LMC_D_E: return c->num_experts;
    case LMC_D_EI: return c->moe_intermediate_size;
    case LMC_D_SI: return c->shared_expert_intermediate_size;
    case LMC_D_SIN: return c->mamba.in_proj_dim;
    case LMC_D_SDI: return c->mamba.d_inner;
    case LMC_D_SXP: return c->mamba.xproj_dim;
    case LMC_D_SR: return c->mamba.time_step_rank;
    case LMC_D_SN: return c->mamba.state_size;
    case LMC_D_SCD: return c->mamba.conv_dim;
    case LMC_D_SK: return c->mamba.conv_kernel;
    case LMC_D_SH: return c->mamba.num_heads;
    default: return 1;
    }
}

/* exists: the tensor is part of this model; *required: must be on disk */
static bool exists(const struct lmc_config *c, const struct lmc_tensor_spec *s, int64_t layer, bool *required) {
    *required = true;
    switch (s->when) {
    case LMC_WHEN_QKV_BIAS: return c->qkv_bias;
    case LMC_WHEN_O_BIAS: return c->o_bias;
    case LMC_WHEN_MLP_BIAS: return c->mlp_bias;
    case LMC_WHEN_SSM_BIAS: return c->mamba.use_bias;
    case LMC_WHEN_SSM_CONV_BIAS: return c->mamba.use_conv_bias;
    case LMC_WHEN_UNTIED: *required = !c->tie_word_embeddings; return true;
    case LMC_WHEN_SPARSE: return lmc_config_layer_sparse(c, layer);
    case LMC_WHEN_DENSE: return !lmc_config_layer_sparse(c, layer);
    default: return true;
    }
}

static lmc_status visit_one(const struct lmc_config *c, const struct lmc_tensor_spec *s, int64_t layer,
                            int64_t expert, lmc_tensor_fn fn, void *user, lmc_err *err) {
    struct lmc_tensor_ref t;
    memset(&t, 0, sizeof t);
    if (!exists(c, s, layer, &t.required)) return LMC_OK;
    t.spec = s;
    t.layer = layer;
    t.expert = expert;
    if (expert >= 0) snprintf(t.name, sizeof t.name, s->name, (long long)layer, (long long)expert);
    else if (s->per_layer) snprintf(t.name, sizeof t.name, s->name, (long long)layer);
    else snprintf(t.name, sizeof t.name, "%s", s->name);
    t.ndim = s->dim[1] == LMC_D_1 ? 1 : 2;
    t.rows = dim_of(c, s->dim[0]);
    t.cols = dim_of(c, s->dim[1]);
    bool tr = (s->flags & LMC_TF_TRANSPOSED) != 0;
    t.disk[0] = tr ? t.cols : t.rows;
    t.disk[1] = tr ? t.rows : t.cols;
    if (t.rows <= 0 || t.cols <= 0 || !lmc_mul_ok(t.rows, t.cols, &t.numel) ||
        t.numel > ((int64_t)1 << 40))
        return lmc_err_set(err, LMC_ERR_ARG, "tensor '%s': shape [%lld, %lld] out of range", t.name,
                           (long long)t.rows, (long long)t.cols);
    int parts = s->parts > 1 ? s->parts : 1;
    if (t.rows % parts)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor '%s': %lld rows do not split in %d", t.name,
                           (long long)t.rows, parts);
    return fn(user, &t, err);
}

/* Expert tensors expand to one per expert, in expert order. */
static lmc_status visit(const struct lmc_config *c, const struct lmc_tensor_spec *s, int64_t layer,
                        lmc_tensor_fn fn, void *user, lmc_err *err) {
    if (s->kind != LMC_TK_EXPERT_W) return visit_one(c, s, layer, -1, fn, user, err);
    if (c->num_experts <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor '%s': the config has no experts", s->name);
    lmc_status st;
    for (int64_t e = 0; e < c->num_experts; e++)
        if ((st = visit_one(c, s, layer, e, fn, user, err))) return st;
    return LMC_OK;
}

lmc_status lmc_arch_walk(const struct lmc_architecture *a, const struct lmc_config *c, lmc_tensor_fn fn,
                         void *user, lmc_err *err) {
    int first = a->n_specs;
    for (int i = 0; i < a->n_specs; i++)
        if (a->specs[i].per_layer) {
            first = i;
            break;
        }
    lmc_status s;
    for (int i = 0; i < first; i++)
        if ((s = visit(c, &a->specs[i], -1, fn, user, err))) return s;
    for (int64_t l = 0; l < c->num_layers; l++)
        for (int i = first; i < a->n_specs; i++)
            if (a->specs[i].per_layer && (s = visit(c, &a->specs[i], l, fn, user, err))) return s;
    for (int i = first; i < a->n_specs; i++)
        if (!a->specs[i].per_layer && (s = visit(c, &a->specs[i], -1, fn, user, err))) return s;
    return LMC_OK;
}

static lmc_status count_fn(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)t;
    (void)err;
    (*(int64_t *)user)++;
    return LMC_OK;
}

int64_t lmc_arch_count(const struct lmc_architecture *a, const struct lmc_config *c) {
    int64_t n = 0;
    lmc_err e = {0};
    if (lmc_arch_walk(a, c, count_fn, &n, &e)) return -1;
    return n;
}

void lmc_weights_bind(struct lmc_weights *w, const struct lmc_tensor_ref *t, const void *data,
                      enum lmc_dtype dt) {
    const struct lmc_tensor_spec *s = t->spec;
    struct lmc_mat m = {dt, t->rows, t->cols, data};
    int parts = s->parts > 1 ? s->parts : 1;
    int64_t pr = t->rows / parts;
    size_t es = (size_t)lmc_dtype_size(dt);
    switch (s->kind) {
    case LMC_TK_TOK_EMB: w->tok_emb = m; break;
    case LMC_TK_POS_EMB: w->pos_emb = m; break;
    case LMC_TK_HEAD: w->head.w = m; break;
    case LMC_TK_NORM_F: w->norm_f = data; break;
    case LMC_TK_NORM_F_B: w->norm_f_b = data; break;
    case LMC_TK_LIN_W:
        for (int i = 0; i < parts; i++) {
            struct lmc_linear *L = &w->layers[t->layer].lin[s->slot + i];
            L->w = m;
            L->w.rows = pr;
            L->w.data = data ? (const char *)data + (size_t)(i * pr * t->cols) * es : NULL;
        }
        break;
    case LMC_TK_LIN_B:
        for (int i = 0; i < parts; i++)
            w->layers[t->layer].lin[s->slot + i].bias = data ? (const float *)data + i * pr : NULL;
        break;
    case LMC_TK_EXPERT_W: {
        struct lmc_linear *X = &w->layers[t->layer].experts[t->expert * LMC_X_N + s->slot];
        X->w = m;
        break;
    }
    case LMC_TK_VEC:
        w->layers[t->layer].vec[s->slot] = data;
        w->layers[t->layer].vec_n[s->slot] = t->numel;
        break;
    default: LMC_ASSERT(!"unknown tensor kind");
    }
}

struct lmc_block_w *lmc_weights_layers_alloc(const struct lmc_config *c) {
    int64_t L = c->num_layers, nx = c->num_experts > 0 ? c->num_experts * LMC_X_N : 0;
    if (L <= 0 || L > (1 << 20) || nx < 0 || nx > ((int64_t)1 << 20)) return NULL;
    size_t head = (size_t)L * sizeof(struct lmc_block_w);
    head = (head + 63) / 64 * 64;
    struct lmc_block_w *ls = calloc(1, head + (size_t)L * (size_t)nx * sizeof(struct lmc_linear));
    if (!ls) return NULL;
    for (int64_t l = 0; nx && l < L; l++)
        ls[l].experts = (struct lmc_linear *)((char *)ls + head) + l * nx;
    return ls;
}

int64_t lmc_arch_active_params(const struct lmc_config *c, int64_t total) {
    if (c->num_experts <= 0) return total;
    int64_t per = 3 * c->moe_intermediate_size * c->hidden_size, sparse = 0; /* gate, up, down */
    for (int64_t l = 0; l < c->num_layers; l++) sparse += lmc_config_layer_sparse(c, l);
    return total - sparse * (c->num_experts - c->num_experts_per_tok) * per;
}

lmc_status lmc_config_build(struct lmc_config *c, const char *arch, const struct lmc_model_shape *s,
                            lmc_err *err) {
    memset(c, 0, sizeof *c);
    const struct lmc_architecture *a = lmc_arch_find(arch);
    if (!a)
        return lmc_err_set(err, LMC_ERR_ARG, "architecture '%s' unknown (known: %s)", arch,
                           lmc_arch_names());
    if (s->heads <= 0 || s->hidden <= 0 || s->hidden % s->heads)
        return lmc_err_set(err, LMC_ERR_ARG, "hidden size %lld is not a multiple of %lld heads",
                           (long long)s->hidden, (long long)s->heads);
    c->vocab_size = s->vocab;
    c->hidden_size = s->hidden;
    c->num_layers = s->layers;
    c->num_heads = s->heads;
    c->num_kv_heads = s->kv_heads ? s->kv_heads : s->heads;
    c->head_dim = s->hidden / s->heads;
    c->intermediate_size = s->intermediate; /* 0: the architecture's default */
    c->max_position_embeddings = s->max_pos;
    c->norm_eps = 1e-5;
    c->tie_word_embeddings = s->tie;
    c->act = LMC_ACT_SILU;
    c->rope.theta = s->rope_theta > 0 ? s->rope_theta : 10000;
    c->rope.factor = 1;
    c->rope.partial_rotary_factor = 1;
    c->bos_token_id = -1;
    c->pad_token_id = -1;
    a->config_defaults(c); /* sets c->arch, model_type, the family's rules and defaults */
    if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads)
        return lmc_err_set(err, LMC_ERR_ARG, "%lld kv heads do not divide %lld heads",
                           (long long)c->num_kv_heads, (long long)c->num_heads);
    return lmc_config_check_sizes(c, err);
}

lmc_status lmc_config_check_sizes(const struct lmc_config *c, lmc_err *err) {
    const int64_t lim = (int64_t)1 << 40;
    struct {
        const char *what;
        int64_t a, b;
    } prods[] = {
        {"vocab_size x hidden_size", c->vocab_size, c->hidden_size},
        {"intermediate_size x hidden_size", c->intermediate_size, c->hidden_size},
        {"num_heads x head_dim", c->num_heads, c->head_dim},
        {"num_kv_heads x head_dim", c->num_kv_heads, c->head_dim},
        {"max_position_embeddings x hidden_size", c->max_position_embeddings, c->hidden_size},
        {"num_layers x hidden_size", c->num_layers, c->hidden_size},
        {"num_experts x hidden_size", c->num_experts > 0 ? c->num_experts : 1, c->hidden_size},
        {"moe_intermediate_size x hidden_size", c->num_experts > 0 ? c->moe_intermediate_size : 1,
         c->hidden_size},
        {"shared_expert_intermediate_size x hidden_size",
         c->shared_expert_intermediate_size > 0 ? c->shared_expert_intermediate_size : 1, c->hidden_size},
        {"num_layers x num_experts x moe_intermediate_size", c->num_layers,
         c->num_experts > 0 ? c->num_experts * c->moe_intermediate_size : 1},
    };
    for (size_t i = 0; i < sizeof prods / sizeof *prods; i++) {
        int64_t p;
        if (prods[i].a <= 0 || prods[i].b <= 0 || !lmc_mul_ok(prods[i].a, prods[i].b, &p) || p > lim)
            return lmc_err_set(err, LMC_ERR_ARG, "config: %s (%lld x %lld) out of range", prods[i].what,
                               (long long)prods[i].a, (long long)prods[i].b);
    }
    int64_t qd = c->num_heads * c->head_dim, p;
    if (!lmc_mul_ok(qd, c->hidden_size, &p) || p > lim || c->num_layers > (1 << 20))
        return lmc_err_set(err, LMC_ERR_ARG, "config: attention sizes out of range");
    return LMC_OK;
}

lmc_status lmc_config_write(const struct lmc_config *c, const char *path, lmc_err *err) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    lmc_arch_of(c)->config_json(c, o);
    if (c->bos_token_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", (double)c->bos_token_id);
    if (c->n_eos > 0) cJSON_AddNumberToObject(o, "eos_token_id", (double)c->eos_token_ids[0]);
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(text);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    }
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    free(text);
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", path);
}
