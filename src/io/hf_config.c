/* hf_config.c — Hugging Face config.json / generation_config.json into
 * struct lmc_config. Llama family (llama, mistral, qwen2) and GPT-2 names;
 * RoPE from `rope_parameters` (transformers 5) or top-level
 * `rope_theta`/`rope_scaling` (older files). Every field is type-checked and
 * range-checked; messages name the file, the field and what was expected. */
#include "io/hf_config.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include "io/json_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_MAX_BYTES ((size_t)16 * 1024 * 1024)
#define CFG_MAX_SIZE ((int64_t)1 << 31)  /* exclusive bound for sizes */
#define CFG_MAX_VOCAB ((int64_t)1 << 24) /* inclusive */
#define CFG_MAX_LAYERS 4096
#define CFG_MAX_HEAD_DIM 1024
#define CFG_SUPPORTED "llama, mistral, qwen2, qwen3, gpt2, mixtral, qwen3_moe, qwen2_moe, olmoe, mamba, mamba2"

/* Parsing context: the file label for messages. */
struct cfg_ctx {
    const char *label;
    lmc_err *err;
};

/* The member `key` of obj, or NULL when absent or JSON null. */
static const cJSON *cfg_get(const cJSON *obj, const char *key) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static lmc_status cfg_type_err(struct cfg_ctx *x, const char *prefix, const char *key, const cJSON *v,
                               const char *want) {
    return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s%s' is %s, expected %s", x->label, prefix, key,
                       lmc_json_kind(v), want);
}

/* Integer field in [lo, hi]. Absent/null: *out = def, or an error if
 * required. *present (optional) tells whether it was there. */
static lmc_status cfg_int(struct cfg_ctx *x, const cJSON *obj, const char *prefix, const char *key, bool required,
                          int64_t def, int64_t lo, int64_t hi, int64_t *out) {
    const cJSON *v = cfg_get(obj, key);
    if (!v) {
        if (required)
            return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: missing field '%s%s' (expected an integer)", x->label,
                               prefix, key);
        *out = def;
        return LMC_OK;
    }
    if (!cJSON_IsNumber(v)) return cfg_type_err(x, prefix, key, v, "an integer");
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s%s' is %.17g, expected an integer", x->label, prefix,
                           key, d);
    if (d < (double)lo || d > (double)hi)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s%s' is %.17g, expected an integer in [%lld, %lld]",
                           x->label, prefix, key, d, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return LMC_OK;
}

/* Number field in [lo, hi] (finite). */
static lmc_status cfg_num(struct cfg_ctx *x, const cJSON *obj, const char *prefix, const char *key, double def,
                          double lo, double hi, double *out) {
    const cJSON *v = cfg_get(obj, key);
    if (!v) {
        *out = def;
        return LMC_OK;
    }
    if (!cJSON_IsNumber(v)) return cfg_type_err(x, prefix, key, v, "a number");
    double d = v->valuedouble;
    if (!isfinite(d) || d < lo || d > hi)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s%s' is %.17g, expected a number in [%g, %g]",
                           x->label, prefix, key, d, lo, hi);
    *out = d;
    return LMC_OK;
}

static lmc_status cfg_bool(struct cfg_ctx *x, const cJSON *obj, const char *prefix, const char *key, bool def,
                           bool *out) {
    const cJSON *v = cfg_get(obj, key);
    if (!v) {
        *out = def;
        return LMC_OK;
    }
    if (!cJSON_IsBool(v)) return cfg_type_err(x, prefix, key, v, "true or false");
    *out = cJSON_IsTrue(v);
    return LMC_OK;
}

/* String field; *out = NULL when absent/null. */
static lmc_status cfg_str(struct cfg_ctx *x, const cJSON *obj, const char *prefix, const char *key,
                          const char **out) {
    const cJSON *v = cfg_get(obj, key);
    *out = NULL;
    if (!v) return LMC_OK;
    if (!cJSON_IsString(v)) return cfg_type_err(x, prefix, key, v, "a string");
    *out = v->valuestring;
    return LMC_OK;
}

/* Parses text into a cJSON object; error if not JSON or not an object. */
static lmc_status cfg_parse_json(struct cfg_ctx *x, const char *json, size_t len, cJSON **out) {
    *out = NULL;
    if (!json && len) return lmc_err_set(x->err, LMC_ERR_ARG, "%s: NULL text", x->label);
    const char *txt = json ? json : "", *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(txt, len, &end, 0);
    if (!root) {
        long long at = end && end >= txt && end <= txt + len ? (long long)(end - txt) : -1;
        return lmc_err_set(x->err, LMC_ERR_FORMAT,
                           "%s: not valid JSON, or nested deeper than %d levels (error near byte %lld of %zu)",
                           x->label, CJSON_NESTING_LIMIT, at, len);
    }
    for (const char *p = end; p && p < txt + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: unexpected text after the JSON object (byte %lld)",
                               x->label, (long long)(p - txt));
        }
    }
    if (!cJSON_IsObject(root)) {
        lmc_status s = lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: top level is %s, expected a JSON object", x->label,
                                   lmc_json_kind(root));
        cJSON_Delete(root);
        return s;
    }
    *out = root;
    return LMC_OK;
}

/* Token id(s): an integer, a list of integers, or null. For a single id,
 * negative values mean "none" (some configs write -1). */
static lmc_status cfg_token_ids(struct cfg_ctx *x, const cJSON *obj, const char *key, int64_t *ids, int *n,
                                int max) {
    const cJSON *v = cfg_get(obj, key);
    *n = 0;
    if (!v) return LMC_OK;
    if (cJSON_IsNumber(v)) {
        int64_t id;
        lmc_status s = cfg_int(x, obj, "", key, false, -1, INT64_MIN / 2, CFG_MAX_SIZE - 1, &id);
        if (s != LMC_OK) return s;
        if (id >= 0) ids[(*n)++] = id;
        return LMC_OK;
    }
    if (!cJSON_IsArray(v)) return cfg_type_err(x, "", key, v, "an integer, a list of integers or null");
    int count = cJSON_GetArraySize(v);
    if (count > max)
        return lmc_err_set(x->err, LMC_ERR_UNSUPPORTED, "%s: field '%s' lists %d token ids, at most %d supported",
                           x->label, key, count, max);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!cJSON_IsNumber(e) || !isfinite(d) || d != floor(d) || d < 0 || d >= (double)CFG_MAX_SIZE)
            return lmc_err_set(x->err, LMC_ERR_FORMAT,
                               "%s: field '%s' entry %d is %s, expected a non-negative integer token id", x->label,
                               key, i, lmc_json_kind(e));
        ids[(*n)++] = (int64_t)d;
    }
    return LMC_OK;
}

/* ---- RoPE ------------------------------------------------------------------- */

static lmc_status cfg_rope(struct cfg_ctx *x, const cJSON *root, struct lmc_rope_config *r) {
    lmc_status s;
    memset(r, 0, sizeof *r);
    r->type = LMC_ROPE_DEFAULT;
    r->attention_factor = -1;
    r->truncate = true;
    /* Where the parameters live: rope_parameters (new), rope_scaling (old). */
    const cJSON *rp = cfg_get(root, "rope_parameters");
    const char *pre = "rope_parameters.";
    if (rp && !cJSON_IsObject(rp)) return cfg_type_err(x, "", "rope_parameters", rp, "an object");
    if (rp && !cfg_get(rp, "rope_type") && !cfg_get(rp, "type") && !cfg_get(rp, "rope_theta")) {
        /* per-layer-type form: {"full_attention": {...}, ...} */
        const cJSON *full = cfg_get(rp, "full_attention");
        if (full) {
            if (!cJSON_IsObject(full)) return cfg_type_err(x, pre, "full_attention", full, "an object");
            rp = full;
            pre = "rope_parameters.full_attention.";
        }
    }
    if (!rp) {
        rp = cfg_get(root, "rope_scaling");
        pre = "rope_scaling.";
        if (rp && !cJSON_IsObject(rp)) return cfg_type_err(x, "", "rope_scaling", rp, "an object or null");
    }
    double top_theta;
    if ((s = cfg_num(x, root, "", "rope_theta", 10000.0, 1e-300, 1e300, &top_theta)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "rope_theta", top_theta, 1e-300, 1e300, &r->theta)) != LMC_OK) return s;
    double top_prf;
    if ((s = cfg_num(x, root, "", "partial_rotary_factor", 1.0, 1e-9, 1.0, &top_prf)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "partial_rotary_factor", top_prf, 1e-9, 1.0, &r->partial_rotary_factor)) != LMC_OK)
        return s;

    const char *type = NULL;
    const char *tkey = "rope_type";
    if ((s = cfg_str(x, rp, pre, "rope_type", &type)) != LMC_OK) return s;
    if (!type) {
        tkey = "type";
        if ((s = cfg_str(x, rp, pre, "type", &type)) != LMC_OK) return s;
    }
    if (!type || strcmp(type, "default") == 0) r->type = LMC_ROPE_DEFAULT;
    else if (strcmp(type, "linear") == 0) r->type = LMC_ROPE_LINEAR;
    else if (strcmp(type, "dynamic") == 0) r->type = LMC_ROPE_DYNAMIC;
    else if (strcmp(type, "llama3") == 0) r->type = LMC_ROPE_LLAMA3;
    else if (strcmp(type, "yarn") == 0) r->type = LMC_ROPE_YARN;
    else
        return lmc_err_set(x->err, LMC_ERR_UNSUPPORTED,
                           "%s: field '%s%s' is '%.64s', which is not supported (supported: default, linear, dynamic, "
                           "llama3, yarn)", x->label, pre, tkey, type);

    if ((s = cfg_num(x, rp, pre, "factor", 1.0, 1e-6, 1e6, &r->factor)) != LMC_OK) return s;
    if ((s = cfg_int(x, rp, pre, "original_max_position_embeddings", false, 0, 1, CFG_MAX_SIZE - 1,
                     &r->original_max_pos)) != LMC_OK)
        return s;
    if ((s = cfg_num(x, rp, pre, "low_freq_factor", 1.0, 1e-9, 1e9, &r->low_freq_factor)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "high_freq_factor", 4.0, 1e-9, 1e9, &r->high_freq_factor)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "beta_fast", 32.0, 1e-9, 1e9, &r->beta_fast)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "beta_slow", 1.0, 1e-9, 1e9, &r->beta_slow)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "attention_factor", -1.0, 0.0, 1e6, &r->attention_factor)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "mscale", 0.0, 0.0, 1e6, &r->mscale)) != LMC_OK) return s;
    if ((s = cfg_num(x, rp, pre, "mscale_all_dim", 0.0, 0.0, 1e6, &r->mscale_all_dim)) != LMC_OK) return s;
    if ((s = cfg_bool(x, rp, pre, "truncate", true, &r->truncate)) != LMC_OK) return s;
    if (r->type == LMC_ROPE_LLAMA3) {
        if (!r->original_max_pos)
            return lmc_err_set(x->err, LMC_ERR_FORMAT,
                               "%s: rope type llama3 needs field '%soriginal_max_position_embeddings' (an integer)",
                               x->label, pre);
        if (!(r->high_freq_factor > r->low_freq_factor))
            return lmc_err_set(x->err, LMC_ERR_FORMAT,
                               "%s: field '%shigh_freq_factor' (%g) must be larger than 'low_freq_factor' (%g)",
                               x->label, pre, r->high_freq_factor, r->low_freq_factor);
    }
    return LMC_OK;
}

/* ---- model families ----------------------------------------------------------- */

static lmc_status cfg_act(struct cfg_ctx *x, const char *key, const char *name, enum lmc_act *out) {
    if (strcmp(name, "silu") == 0 || strcmp(name, "swish") == 0) *out = LMC_ACT_SILU;
    else if (strcmp(name, "gelu_new") == 0 || strcmp(name, "gelu_pytorch_tanh") == 0 ||
             strcmp(name, "gelu_fast") == 0)
        *out = LMC_ACT_GELU_TANH;
    else if (strcmp(name, "gelu") == 0) *out = LMC_ACT_GELU;
    else
        return lmc_err_set(x->err, LMC_ERR_UNSUPPORTED,
                           "%s: field '%s' is '%.64s', which is not supported (supported: silu, gelu, gelu_new, "
                           "gelu_pytorch_tanh)", x->label, key, name);
    return LMC_OK;
}

/* The expert fields of mixtral / qwen3_moe (mixtral: experts as wide as
 * intermediate_size, top-k always renormalised). */
static lmc_status cfg_moe(struct cfg_ctx *x, const cJSON *root, struct lmc_config *c, bool mixtral, bool shared,
                          bool olmoe) {
    lmc_status s;
    const char *ne = cJSON_GetObjectItemCaseSensitive(root, "num_local_experts") ? "num_local_experts"
                                                                                 : "num_experts";
    if ((s = cfg_int(x, root, "", ne, true, 0, 1, 4096, &c->num_experts))) return s;
    if ((s = cfg_int(x, root, "", "num_experts_per_tok", true, 0, 1, 1 << 16, &c->num_experts_per_tok)))
        return s;
    if (c->num_experts_per_tok > c->num_experts)
        return lmc_err_set(x->err, LMC_ERR_FORMAT,
                           "%s: 'num_experts_per_tok' (%lld) exceeds the number of experts '%s' (%lld)", x->label,
                           (long long)c->num_experts_per_tok, ne, (long long)c->num_experts);
    if (mixtral || olmoe) { /* experts intermediate_size wide */
        if ((s = cfg_int(x, root, "", "intermediate_size", true, 0, 1, CFG_MAX_SIZE - 1, &c->moe_intermediate_size)))
            return s;
        c->norm_topk_prob = true;
        if (olmoe && (s = cfg_bool(x, root, "", "norm_topk_prob", false, &c->norm_topk_prob))) return s;
        /* q, k (after their norms) and v clamped to [-clip_qkv, clip_qkv]; null: none */
        if (olmoe && (s = cfg_num(x, root, "", "clip_qkv", 0, 1e-30, 1e30, &c->clip_qkv))) return s;
    } else {
        if ((s = cfg_int(x, root, "", "moe_intermediate_size", true, 0, 1, CFG_MAX_SIZE - 1,
                         &c->moe_intermediate_size)))
            return s;
        if ((s = cfg_bool(x, root, "", "norm_topk_prob", false, &c->norm_topk_prob))) return s;
        if (shared && (s = cfg_int(x, root, "", "shared_expert_intermediate_size", true, 0, 1, CFG_MAX_SIZE - 1,
                                   &c->shared_expert_intermediate_size)))
            return s;
        c->decoder_sparse_step = 1;
        if ((s = cfg_int(x, root, "", "decoder_sparse_step", false, 1, 1, CFG_MAX_LAYERS, &c->decoder_sparse_step)))
            return s;
        const cJSON *only = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
        if (only && !cJSON_IsNull(only) && !cJSON_IsArray(only))
            return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: 'mlp_only_layers' must be a list of layer indices",
                               x->label);
        const cJSON *it;
        cJSON_ArrayForEach(it, only) {
            double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
            if (!(v >= 0 && v < CFG_MAX_LAYERS) || v != (double)(int64_t)v)
                return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: 'mlp_only_layers' holds %s, not a layer index "
                                   "below %d", x->label, cJSON_IsNumber(it) ? "a number out of range" : "a non-number",
                                   CFG_MAX_LAYERS);
            int64_t l = (int64_t)v;
            c->mlp_only[l / 64] |= (uint64_t)1 << (l % 64);
        }
    }
    if ((s = cfg_bool(x, root, "", "output_router_logits", false, &c->output_router_logits))) return s;
    return cfg_num(x, root, "", "router_aux_loss_coef", 0.001, 0.0, 1e6, &c->router_aux_loss_coef);
}

static lmc_status cfg_llama(struct cfg_ctx *x, const cJSON *root, struct lmc_config *c) {
    lmc_status s;
    bool qwen2 = strcmp(c->model_type, "qwen2") == 0;
    bool mistral = strcmp(c->model_type, "mistral") == 0;
    bool qwen3 = strcmp(c->model_type, "qwen3") == 0;
    bool mixtral = strcmp(c->model_type, "mixtral") == 0;
    bool qwen3moe = strcmp(c->model_type, "qwen3_moe") == 0;
    bool qwen2moe = strcmp(c->model_type, "qwen2_moe") == 0;
    bool olmoe = strcmp(c->model_type, "olmoe") == 0;
    c->arch = qwen3 ? LMC_ARCH_QWEN3 : mixtral ? LMC_ARCH_MIXTRAL : qwen3moe ? LMC_ARCH_QWEN3MOE
            : qwen2moe ? LMC_ARCH_QWEN2MOE : olmoe ? LMC_ARCH_OLMOE : LMC_ARCH_LLAMA;
    c->qk_norm = qwen3 || qwen3moe || olmoe;
    if ((mixtral || qwen3moe || qwen2moe || olmoe) && (s = cfg_moe(x, root, c, mixtral, qwen2moe, olmoe)))
        return s;
    if (qwen3moe) qwen3 = true; /* the Qwen3 defaults below */
    if (qwen2moe) qwen2 = true; /* Qwen2's attention (q/k/v biases) and defaults */
    if ((s = cfg_int(x, root, "", "vocab_size", true, 0, 1, CFG_MAX_VOCAB, &c->vocab_size))) return s;
    if ((s = cfg_int(x, root, "", "hidden_size", true, 0, 1, CFG_MAX_SIZE - 1, &c->hidden_size))) return s;
    if ((s = cfg_int(x, root, "", "intermediate_size", true, 0, 1, CFG_MAX_SIZE - 1, &c->intermediate_size)))
        return s;
    if ((s = cfg_int(x, root, "", "num_hidden_layers", true, 0, 1, CFG_MAX_LAYERS, &c->num_layers))) return s;
    if ((s = cfg_int(x, root, "", "num_attention_heads", true, 0, 1, CFG_MAX_SIZE - 1, &c->num_heads))) return s;
    if ((s = cfg_int(x, root, "", "num_key_value_heads", false, c->num_heads, 1, CFG_MAX_SIZE - 1,
                     &c->num_kv_heads)))
        return s;
    int64_t hd = 0;
    if ((s = cfg_int(x, root, "", "head_dim", false, 0, 1, CFG_MAX_HEAD_DIM, &hd))) return s;
    if (hd == 0) {
        if (c->hidden_size % c->num_heads != 0)
            return lmc_err_set(x->err, LMC_ERR_FORMAT,
                               "%s: 'num_attention_heads' (%lld) must divide 'hidden_size' (%lld) when 'head_dim' is absent",
                               x->label, (long long)c->num_heads, (long long)c->hidden_size);
        hd = c->hidden_size / c->num_heads;
        if (hd > CFG_MAX_HEAD_DIM)
            return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: head dimension hidden_size/num_attention_heads = %lld, at most %d supported",
                               x->label, (long long)hd, CFG_MAX_HEAD_DIM);
    }
    c->head_dim = hd;
    int64_t def_pos = qwen2 || qwen3 ? 32768 : mistral ? 131072 : 2048; /* transformers' defaults */
    if ((s = cfg_int(x, root, "", "max_position_embeddings", false, def_pos, 1, CFG_MAX_SIZE - 1,
                     &c->max_position_embeddings)))
        return s;
    if ((s = cfg_num(x, root, "", "rms_norm_eps", 1e-6, 0.0, 1.0, &c->norm_eps))) return s;
    bool attn_bias, mlp_bias;
    if ((s = cfg_bool(x, root, "", "attention_bias", false, &attn_bias))) return s;
    if ((s = cfg_bool(x, root, "", "mlp_bias", false, &mlp_bias))) return s;
    c->qkv_bias = qwen2 ? true : attn_bias;
    c->o_bias = qwen2 ? false : attn_bias;
    c->mlp_bias = qwen2 ? false : mlp_bias;
    if ((s = cfg_bool(x, root, "", "tie_word_embeddings", false, &c->tie_word_embeddings))) return s;
    const char *act = NULL;
    if ((s = cfg_str(x, root, "", "hidden_act", &act))) return s;
    if ((s = cfg_act(x, "hidden_act", act ? act : "silu", &c->act))) return s;

    bool use_sw = true;
    if ((qwen2 || qwen3) && (s = cfg_bool(x, root, "", "use_sliding_window", false, &use_sw))) return s;
    int64_t sw = 0;
    if ((s = cfg_int(x, root, "", "sliding_window", false, 0, 0, CFG_MAX_SIZE - 1, &sw))) return s;
    c->sliding_window = use_sw ? sw : 0;

    if ((s = cfg_rope(x, root, &c->rope))) return s;
    int64_t rot = (int64_t)floor((double)c->head_dim * c->rope.partial_rotary_factor);
    if (rot <= 0 || rot % 2 != 0)
        return lmc_err_set(x->err, LMC_ERR_FORMAT,
                           "%s: rotary dimension head_dim*partial_rotary_factor = %lld must be positive and even "
                           "(head_dim %lld)", x->label, (long long)rot, (long long)c->head_dim);
    return LMC_OK;
}

static lmc_status cfg_gpt2(struct cfg_ctx *x, const cJSON *root, struct lmc_config *c) {
    lmc_status s;
    c->arch = LMC_ARCH_GPT2;
    if ((s = cfg_int(x, root, "", "vocab_size", true, 0, 1, CFG_MAX_VOCAB, &c->vocab_size))) return s;
    if ((s = cfg_int(x, root, "", "n_embd", true, 0, 1, CFG_MAX_SIZE - 1, &c->hidden_size))) return s;
    if ((s = cfg_int(x, root, "", "n_layer", true, 0, 1, CFG_MAX_LAYERS, &c->num_layers))) return s;
    if ((s = cfg_int(x, root, "", "n_head", true, 0, 1, CFG_MAX_SIZE - 1, &c->num_heads))) return s;
    if ((s = cfg_int(x, root, "", "n_positions", false, 1024, 1, CFG_MAX_SIZE - 1, &c->max_position_embeddings)))
        return s;
    int64_t def_inner = 4 * c->hidden_size; /* hidden < 2^31: no overflow */
    if ((s = cfg_int(x, root, "", "n_inner", false, def_inner, 1, CFG_MAX_SIZE - 1, &c->intermediate_size)))
        return s;
    if (c->intermediate_size >= CFG_MAX_SIZE)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: 4*n_embd = %lld is too large (n_inner absent)", x->label,
                           (long long)c->intermediate_size);
    if (c->hidden_size % c->num_heads != 0)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: 'n_head' (%lld) must divide 'n_embd' (%lld)", x->label,
                           (long long)c->num_heads, (long long)c->hidden_size);
    c->num_kv_heads = c->num_heads;
    c->head_dim = c->hidden_size / c->num_heads;
    if (c->head_dim > CFG_MAX_HEAD_DIM)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: head dimension n_embd/n_head = %lld, at most %d supported",
                           x->label, (long long)c->head_dim, CFG_MAX_HEAD_DIM);
    if ((s = cfg_num(x, root, "", "layer_norm_epsilon", 1e-5, 0.0, 1.0, &c->norm_eps))) return s;
    const char *act = NULL;
    if ((s = cfg_str(x, root, "", "activation_function", &act))) return s;
    if ((s = cfg_act(x, "activation_function", act ? act : "gelu_new", &c->act))) return s;
    c->qkv_bias = c->o_bias = c->mlp_bias = true;
    c->tie_word_embeddings = true; /* GPT2LMHeadModel always ties lm_head to wte */
    c->sliding_window = 0;
    c->rope.type = LMC_ROPE_DEFAULT; /* unused: learned positions */
    c->rope.theta = 10000.0;
    c->rope.factor = 1.0;
    c->rope.partial_rotary_factor = 1.0;
    c->rope.low_freq_factor = 1.0;
    c->rope.high_freq_factor = 4.0;
    c->rope.beta_fast = 32.0;
    c->rope.beta_slow = 1.0;
    c->rope.attention_factor = -1.0;
    c->rope.truncate = true;
    return LMC_OK;
}

/* Mamba / Mamba-2: the SSM parser (io/mamba_config.c) and the fields the
 * model layer reads (no attention: one pseudo head, no positions). */
static lmc_status cfg_mamba(struct cfg_ctx *x, const char *json, size_t len, struct lmc_config *c) {
    struct lmc_mamba_config *m = &c->mamba;
    lmc_status s = lmc_mamba_config_parse(m, json, len, x->label, x->err);
    if (s) return s;
    snprintf(c->model_type, sizeof c->model_type, "%s", m->kind == LMC_MAMBA_1 ? "mamba" : "mamba2");
    c->arch = m->kind == LMC_MAMBA_1 ? LMC_ARCH_MAMBA : LMC_ARCH_MAMBA2;
    c->vocab_size = m->vocab_size;
    c->hidden_size = m->hidden_size;
    c->num_layers = m->num_layers;
    c->intermediate_size = m->d_inner;
    c->num_heads = c->num_kv_heads = 1;
    c->head_dim = m->hidden_size;
    c->max_position_embeddings = (int64_t)1 << 20; /* recurrent: no position limit */
    c->norm_eps = m->norm_eps;
    c->tie_word_embeddings = m->tie_word_embeddings;
    c->act = LMC_ACT_SILU;
    c->rope.theta = 10000;
    c->rope.factor = 1;
    c->rope.partial_rotary_factor = 1;
    return LMC_OK;
}

/* Fields common to every family: token ids, dtype. */
static lmc_status cfg_common(struct cfg_ctx *x, const cJSON *root, struct lmc_config *c) {
    lmc_status s;
    int64_t ids[LMC_MAX_EOS];
    int n;
    if ((s = cfg_token_ids(x, root, "bos_token_id", ids, &n, LMC_MAX_EOS))) return s;
    c->bos_token_id = n ? ids[0] : -1;
    if ((s = cfg_token_ids(x, root, "eos_token_id", c->eos_token_ids, &c->n_eos, LMC_MAX_EOS))) return s;
    if ((s = cfg_token_ids(x, root, "pad_token_id", ids, &n, LMC_MAX_EOS))) return s;
    c->pad_token_id = n ? ids[0] : -1;
    const char *dt = NULL, *key = "dtype";
    if ((s = cfg_str(x, root, "", "dtype", &dt))) return s;
    if (!dt) {
        key = "torch_dtype";
        if ((s = cfg_str(x, root, "", "torch_dtype", &dt))) return s;
    }
    if (dt) {
        if (strlen(dt) >= sizeof c->torch_dtype)
            return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s' is '%.40s...', expected a dtype name like \"bfloat16\"",
                               x->label, key, dt);
        strcpy(c->torch_dtype, dt);
    }
    return LMC_OK;
}

static void cfg_defaults(struct lmc_config *c) {
    memset(c, 0, sizeof *c);
    c->bos_token_id = -1;
    c->pad_token_id = -1;
    c->gen_temperature = 1.0;
    c->gen_top_p = 1.0;
    c->gen_min_p = 0.0;
    c->gen_repetition_penalty = 1.0;
    c->gen_top_k = 0;
    c->gen_do_sample = false;
}

lmc_status lmc_config_parse(struct lmc_config *c, const char *json, size_t len, const char *label, lmc_err *err) {
    cfg_defaults(c);
    struct cfg_ctx x = {label ? label : "config.json", err};
    cJSON *root = NULL;
    lmc_status s = cfg_parse_json(&x, json, len, &root);
    if (s != LMC_OK) return s;
    const char *mt = NULL;
    if ((s = cfg_str(&x, root, "", "model_type", &mt))) goto out;
    if (!mt) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing field 'model_type' (expected a string: one of %s)", x.label,
                        CFG_SUPPORTED);
        goto out;
    }
    if (strcmp(mt, "mamba") == 0 || strcmp(mt, "mamba2") == 0) {
        s = cfg_mamba(&x, json, len, c);
        if (!s) s = cfg_common(&x, root, c);
        goto out;
    }
    bool llama = strcmp(mt, "llama") == 0 || strcmp(mt, "mistral") == 0 || strcmp(mt, "qwen2") == 0 ||
                 strcmp(mt, "qwen3") == 0 || strcmp(mt, "mixtral") == 0 || strcmp(mt, "qwen3_moe") == 0 ||
                 strcmp(mt, "qwen2_moe") == 0 || strcmp(mt, "olmoe") == 0;
    bool gpt2 = strcmp(mt, "gpt2") == 0;
    if (!llama && !gpt2) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: model_type '%.64s' is not supported (supported: " CFG_SUPPORTED ")",
                        x.label, mt);
        goto out;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    s = llama ? cfg_llama(&x, root, c) : cfg_gpt2(&x, root, c);
    if (s) goto out;
    if (c->num_kv_heads > c->num_heads || c->num_heads % c->num_kv_heads != 0) {
        s = lmc_err_set(err, LMC_ERR_FORMAT,
                        "%s: 'num_key_value_heads' (%lld) must divide 'num_attention_heads' (%lld)", x.label,
                        (long long)c->num_kv_heads, (long long)c->num_heads);
        goto out;
    }
    s = cfg_common(&x, root, c);
out:
    cJSON_Delete(root);
    if (s != LMC_OK) cfg_defaults(c);
    return s;
}

lmc_status lmc_config_parse_generation(struct lmc_config *c, const char *json, size_t len, const char *label,
                                       lmc_err *err) {
    struct cfg_ctx x = {label ? label : "generation_config.json", err};
    cJSON *root = NULL;
    lmc_status s = cfg_parse_json(&x, json, len, &root);
    if (s != LMC_OK) return s;
    /* Parse into a copy so that c is unchanged on error. */
    struct lmc_config g = *c;
    int64_t ids[LMC_MAX_EOS];
    int n;
    if ((s = cfg_token_ids(&x, root, "eos_token_id", ids, &n, LMC_MAX_EOS))) goto out;
    if (cfg_get(root, "eos_token_id")) {
        memcpy(g.eos_token_ids, ids, sizeof ids);
        g.n_eos = n;
    }
    if ((s = cfg_token_ids(&x, root, "bos_token_id", ids, &n, LMC_MAX_EOS))) goto out;
    if (cfg_get(root, "bos_token_id")) g.bos_token_id = n ? ids[0] : -1;
    if ((s = cfg_token_ids(&x, root, "pad_token_id", ids, &n, LMC_MAX_EOS))) goto out;
    if (cfg_get(root, "pad_token_id")) g.pad_token_id = n ? ids[0] : -1;
    if ((s = cfg_bool(&x, root, "", "do_sample", c->gen_do_sample, &g.gen_do_sample))) goto out;
    if ((s = cfg_num(&x, root, "", "temperature", c->gen_temperature, 0.0, 1e6, &g.gen_temperature))) goto out;
    if ((s = cfg_int(&x, root, "", "top_k", false, c->gen_top_k, 0, CFG_MAX_SIZE - 1, &g.gen_top_k))) goto out;
    if ((s = cfg_num(&x, root, "", "top_p", c->gen_top_p, 0.0, 1.0, &g.gen_top_p))) goto out;
    if ((s = cfg_num(&x, root, "", "min_p", c->gen_min_p, 0.0, 1.0, &g.gen_min_p))) goto out;
    if ((s = cfg_num(&x, root, "", "repetition_penalty", c->gen_repetition_penalty, 1e-6, 1e6,
                     &g.gen_repetition_penalty)))
        goto out;
    *c = g;
out:
    cJSON_Delete(root);
    return s;
}

lmc_status lmc_config_load(struct lmc_config *c, const char *dir, lmc_err *err) {
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, "config.json")) {
        cfg_defaults(c);
        return lmc_err_set(err, LMC_ERR_ARG, "%s: folder path too long", dir);
    }
    char *text = NULL;
    size_t len = 0;
    lmc_status s = lmc_file_read(path, CFG_MAX_BYTES, &text, &len, err);
    if (s != LMC_OK) {
        cfg_defaults(c);
        return s;
    }
    s = lmc_config_parse(c, text, len, path, err);
    free(text);
    if (s != LMC_OK) return s;
    if (!lmc_path_join(path, sizeof path, dir, "generation_config.json") || !lmc_file_exists(path)) return LMC_OK;
    if ((s = lmc_file_read(path, CFG_MAX_BYTES, &text, &len, err)) != LMC_OK) return s;
    s = lmc_config_parse_generation(c, text, len, path, err);
    free(text);
    return s;
}
