/* mamba_config.c — config.json of a MambaForCausalLM ("mamba") or
 * Mamba2ForCausalLM ("mamba2") folder into struct lmc_mamba_config. Every
 * field is type- and range-checked and the derived sizes are checked for
 * consistency; messages name the file, the field and what was expected. */
#include "io/mamba_config.h"
#include "core/core.h"
#include "io/json_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MC_MAX_BYTES ((size_t)16 * 1024 * 1024)
#define MC_MAX_SIZE (((int64_t)1 << 31) - 1)
#define MC_MAX_VOCAB ((int64_t)1 << 24)

struct mc {
    const char *label;
    lmc_err *err;
    const cJSON *root;
};

static const cJSON *mc_get(const struct mc *x, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static lmc_status mc_int(struct mc *x, const char *key, bool required, int64_t def, int64_t lo,
                         int64_t hi, int64_t *out) {
    const cJSON *v = mc_get(x, key);
    if (!v) {
        if (required)
            return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: missing field '%s' (expected an integer)",
                               x->label, key);
        *out = def;
        return LMC_OK;
    }
    if (!cJSON_IsNumber(v))
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s' is %s, expected an integer",
                           x->label, key, lmc_json_kind(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi)
        return lmc_err_set(x->err, LMC_ERR_FORMAT,
                           "%s: field '%s' is %.17g, expected an integer in [%lld, %lld]", x->label,
                           key, d, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return LMC_OK;
}

static lmc_status mc_bool(struct mc *x, const char *key, bool def, bool *out) {
    const cJSON *v = mc_get(x, key);
    if (!v) {
        *out = def;
        return LMC_OK;
    }
    if (!cJSON_IsBool(v))
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s' is %s, expected true or false",
                           x->label, key, lmc_json_kind(v));
    *out = cJSON_IsTrue(v);
    return LMC_OK;
}

/* A float: a JSON number, or a non-finite value as transformers writes it
 * ({"__float__": "Infinity"}) or as a string ("inf", "Infinity", "-inf"). */
static bool mc_float_value(const cJSON *v, double *out) {
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return true;
    }
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "__float__");
    if (!cJSON_IsString(v) || !v->valuestring) return false;
    const char *s = v->valuestring;
    double sign = 1;
    if (*s == '-' || *s == '+') sign = *s == '-' ? -1 : 1, s++;
    if (!strcmp(s, "inf") || !strcmp(s, "Infinity") || !strcmp(s, "infinity")) {
        *out = sign * INFINITY;
        return true;
    }
    return false;
}

static lmc_status mc_double(struct mc *x, const char *key, double def, double lo, double hi,
                            double *out) {
    const cJSON *v = mc_get(x, key);
    if (!v) {
        *out = def;
        return LMC_OK;
    }
    double d;
    if (!mc_float_value(v, &d) || !(d >= lo && d <= hi))
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s' is %s, expected a number in [%g, %g]",
                           x->label, key, lmc_json_kind(v), lo, hi);
    *out = d;
    return LMC_OK;
}

/* eos_token_id may be a list: the first entry */
static lmc_status mc_token(struct mc *x, const char *key, int64_t *out) {
    const cJSON *v = mc_get(x, key);
    if (v && cJSON_IsArray(v)) v = cJSON_GetArraySize(v) > 0 ? cJSON_GetArrayItem(v, 0) : NULL;
    *out = -1;
    if (!v) return LMC_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble >= (double)MC_MAX_VOCAB)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field '%s' is not a token id", x->label, key);
    *out = (int64_t)v->valuedouble;
    return LMC_OK;
}

static lmc_status mc_parse(struct mc *x, struct lmc_mamba_config *c) {
    lmc_status s;
    const cJSON *mt = mc_get(x, "model_type");
    if (!cJSON_IsString(mt))
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: field 'model_type' is %s, expected a string",
                           x->label, lmc_json_kind(mt));
    if (!strcmp(mt->valuestring, "mamba")) c->kind = LMC_MAMBA_1;
    else if (!strcmp(mt->valuestring, "mamba2")) c->kind = LMC_MAMBA_2;
    else
        return lmc_err_set(x->err, LMC_ERR_UNSUPPORTED,
                           "%s: model_type '%s' is not a Mamba model (expected mamba or mamba2)",
                           x->label, mt->valuestring);
    const bool m2 = c->kind == LMC_MAMBA_2;
    const cJSON *act = mc_get(x, "hidden_act");
    if (act && (!cJSON_IsString(act) ||
                (strcmp(act->valuestring, "silu") && strcmp(act->valuestring, "swish"))))
        return lmc_err_set(x->err, LMC_ERR_UNSUPPORTED, "%s: hidden_act %s%s%s is not supported (silu)",
                           x->label, cJSON_IsString(act) ? "'" : "",
                           cJSON_IsString(act) ? act->valuestring : lmc_json_kind(act),
                           cJSON_IsString(act) ? "'" : "");
    if ((s = mc_int(x, "vocab_size", true, 0, 1, MC_MAX_VOCAB, &c->vocab_size)) ||
        (s = mc_int(x, "hidden_size", true, 0, 1, MC_MAX_SIZE, &c->hidden_size)) ||
        (s = mc_int(x, "num_hidden_layers", true, 0, 1, 4096, &c->num_layers)) ||
        (s = mc_int(x, "state_size", false, m2 ? 128 : 16, 1, 4096, &c->state_size)) ||
        (s = mc_int(x, "conv_kernel", false, 4, 1, 64, &c->conv_kernel)) ||
        (s = mc_int(x, "expand", false, 2, 1, 1024, &c->expand)) ||
        (s = mc_bool(x, "use_bias", false, &c->use_bias)) ||
        (s = mc_bool(x, "use_conv_bias", true, &c->use_conv_bias)) ||
        (s = mc_bool(x, "residual_in_fp32", true, &c->residual_in_fp32)) ||
        (s = mc_bool(x, "tie_word_embeddings", !m2, &c->tie_word_embeddings)) ||
        (s = mc_double(x, "layer_norm_epsilon", 1e-5, 0, 1, &c->norm_eps)) ||
        (s = mc_token(x, "eos_token_id", &c->eos_token_id)) ||
        (s = mc_token(x, "bos_token_id", &c->bos_token_id)) ||
        (s = mc_token(x, "pad_token_id", &c->pad_token_id)))
        return s;
    const int64_t ei = c->expand * c->hidden_size; /* both < 2^31: no overflow */
    if (ei > MC_MAX_SIZE)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: expand * hidden_size = %lld is too large",
                           x->label, (long long)ei);
    const int64_t N = c->state_size;
    if (!m2) {
        if ((s = mc_int(x, "intermediate_size", false, ei, 1, MC_MAX_SIZE, &c->d_inner))) return s;
        if (c->d_inner != ei)
            return lmc_err_set(x->err, LMC_ERR_FORMAT,
                               "%s: intermediate_size %lld != expand (%lld) * hidden_size (%lld)",
                               x->label, (long long)c->d_inner, (long long)c->expand,
                               (long long)c->hidden_size);
        const cJSON *r = mc_get(x, "time_step_rank");
        if (!r || (cJSON_IsString(r) && !strcmp(r->valuestring, "auto")))
            c->time_step_rank = (c->hidden_size + 15) / 16;
        else if ((s = mc_int(x, "time_step_rank", true, 0, 1, MC_MAX_SIZE, &c->time_step_rank)))
            return s;
        c->conv_dim = c->d_inner;
        c->in_proj_dim = 2 * c->d_inner;
        c->xproj_dim = c->time_step_rank + 2 * N;
        c->num_heads = c->head_dim = c->n_groups = c->chunk_size = 0;
        c->dt_min = 0, c->dt_max = INFINITY;
        return LMC_OK;
    }
    if ((s = mc_int(x, "num_heads", false, 128, 1, MC_MAX_SIZE, &c->num_heads)) ||
        (s = mc_int(x, "head_dim", false, 64, 1, MC_MAX_SIZE, &c->head_dim)) ||
        (s = mc_int(x, "n_groups", false, 8, 1, MC_MAX_SIZE, &c->n_groups)) ||
        (s = mc_int(x, "chunk_size", false, 256, 1, 65536, &c->chunk_size)))
        return s;
    c->d_inner = ei;
    if (c->num_heads * c->head_dim != ei) /* both < 2^31: the product fits */
        return lmc_err_set(x->err, LMC_ERR_FORMAT,
                           "%s: num_heads (%lld) * head_dim (%lld) = %lld != expand (%lld) * "
                           "hidden_size (%lld) = %lld",
                           x->label, (long long)c->num_heads, (long long)c->head_dim,
                           (long long)(c->num_heads * c->head_dim), (long long)c->expand,
                           (long long)c->hidden_size, (long long)ei);
    if (c->num_heads % c->n_groups)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: num_heads %lld is not a multiple of n_groups %lld",
                           x->label, (long long)c->num_heads, (long long)c->n_groups);
    if (c->n_groups * N > MC_MAX_SIZE / 4)
        return lmc_err_set(x->err, LMC_ERR_FORMAT, "%s: n_groups * state_size is too large", x->label);
    c->dt_min = 0, c->dt_max = INFINITY;
    const cJSON *lim = mc_get(x, "time_step_limit");
    if (lim) {
        double a, b;
        if (!cJSON_IsArray(lim) || cJSON_GetArraySize(lim) != 2 ||
            !mc_float_value(cJSON_GetArrayItem(lim, 0), &a) ||
            !mc_float_value(cJSON_GetArrayItem(lim, 1), &b) || !(a >= 0) || !(b >= a) || isnan(b))
            return lmc_err_set(x->err, LMC_ERR_FORMAT,
                               "%s: field 'time_step_limit' is %s, expected [min, max] with 0 <= min <= max",
                               x->label, lmc_json_kind(lim));
        c->dt_min = a, c->dt_max = b;
    }
    c->time_step_rank = 0;
    c->conv_dim = ei + 2 * c->n_groups * N;
    c->in_proj_dim = ei + c->conv_dim + c->num_heads;
    c->xproj_dim = 0;
    return LMC_OK;
}

/* Python's json writes float('inf') as a bare Infinity (transformers 4
 * configs: "time_step_limit": [0.0, Infinity]), which is not JSON: outside
 * strings, Infinity, -Infinity and NaN become the strings "Infinity",
 * "-Infinity", "NaN" (mc_float_value reads the first two). NULL when out of
 * memory; *out_len set. */
static char *mc_quote_nonfinite(const char *json, size_t len, size_t *out_len) {
    static const char *const words[] = {"-Infinity", "Infinity", "NaN"};
    if (len > (SIZE_MAX - 1) / 2) return NULL;
    char *o = malloc(2 * len + 1); /* each word grows by 2 quotes, never doubles */
    if (!o) return NULL;
    size_t n = 0;
    bool in_str = false;
    for (size_t i = 0; i < len;) {
        const char ch = json[i];
        if (in_str) {
            o[n++] = ch, i++;
            if (ch == '\\' && i < len) o[n++] = json[i++];
            else if (ch == '"') in_str = false;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            o[n++] = ch, i++;
            continue;
        }
        size_t k = 0;
        for (; k < 3; k++) {
            const size_t wl = strlen(words[k]);
            if (wl <= len - i && !memcmp(json + i, words[k], wl)) break;
        }
        if (k < 3) {
            const size_t wl = strlen(words[k]);
            o[n++] = '"';
            memcpy(o + n, words[k], wl);
            n += wl;
            o[n++] = '"';
            i += wl;
            continue;
        }
        o[n++] = ch, i++;
    }
    o[n] = 0;
    *out_len = n;
    return o;
}

lmc_status lmc_mamba_config_parse(struct lmc_mamba_config *c, const char *json, size_t len,
                                  const char *label, lmc_err *err) {
    memset(c, 0, sizeof *c);
    size_t qlen = 0;
    char *q = mc_quote_nonfinite(json, len, &qlen);
    if (!q) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
    cJSON *root = cJSON_ParseWithLength(q, qlen);
    free(q);
    if (!root) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not valid JSON", label);
    struct mc x = {label, err, root};
    lmc_status s = cJSON_IsObject(root)
                       ? mc_parse(&x, c)
                       : lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected a JSON object", label);
    cJSON_Delete(root);
    return s;
}

lmc_status lmc_mamba_config_load(struct lmc_mamba_config *c, const char *dir, lmc_err *err) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    char *buf;
    size_t len;
    lmc_status s = lmc_file_read(path, MC_MAX_BYTES, &buf, &len, err);
    if (s) return s;
    s = lmc_mamba_config_parse(c, buf, len, path, err);
    free(buf);
    return s;
}

int64_t lmc_mamba_conv_state_floats(const struct lmc_mamba_config *c) {
    return (c->conv_kernel - 1) * c->conv_dim;
}

int64_t lmc_mamba_ssm_state_floats(const struct lmc_mamba_config *c) {
    return c->d_inner * c->state_size; /* D*N; Mamba-2: heads*head_dim*N, the same */
}

size_t lmc_mamba_state_bytes(const struct lmc_mamba_config *c) {
    return (size_t)c->num_layers *
           (size_t)(lmc_mamba_conv_state_floats(c) + lmc_mamba_ssm_state_floats(c)) * sizeof(float);
}
