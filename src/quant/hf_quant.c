/* hf_quant.c — quantized linears in Hugging Face folders: the
 * quantization_config, reading GPTQ (v1/v2), AWQ GEMM, bitsandbytes NF4 and
 * BitNet tensors with their shapes and dtypes checked against the config,
 * and building the tensors a writer emits (GPTQ v1/v2, NF4 with its packed
 * quant state, BitNet). */
#include "quant/hf_quant.h"
#include "core/core.h"
#include "core/dtype.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A JSON number as int64, saturated (NaN reads as 0) so a hostile value
 * never overflows the conversion; the callers then range-check it. */
static int64_t num_i64(const cJSON *v) {
    double d = v->valuedouble;
    if (!(d == d)) return 0;
    if (d > 9e15) return INT64_C(9000000000000000);
    if (d < -9e15) return -INT64_C(9000000000000000);
    return (int64_t)d;
}

lmc_status lmc_quant_config_parse(const char *config_json, size_t len, const char *label,
                                  struct lmc_quant_config *qc, lmc_err *err) {
    memset(qc, 0, sizeof *qc);
    cJSON *root = cJSON_ParseWithLength(config_json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not a JSON object", label);
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    lmc_status s = LMC_OK;
    if (!q) goto out;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    if (!cJSON_IsString(m)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: quantization_config.quant_method must be a string", label);
        goto out;
    }
    const cJSON *bits = cJSON_GetObjectItemCaseSensitive(q, "bits");
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(q, "group_size");
    if (!strcmp(m->valuestring, "gptq") || !strcmp(m->valuestring, "awq")) {
        bool awq = m->valuestring[0] == 'a';
        qc->method = awq ? LMC_QM_AWQ : LMC_QM_GPTQ;
        if (!cJSON_IsNumber(bits) || !cJSON_IsNumber(gs)) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: quantization_config.%s must be a number", label,
                            !cJSON_IsNumber(bits) ? "bits" : "group_size");
            goto out;
        }
        qc->bits = bits->valueint;
        qc->group_size = num_i64(gs);
        if ((awq && qc->bits != 4) || (!awq && qc->bits != 2 && qc->bits != 3 && qc->bits != 4 && qc->bits != 8) ||
            (qc->group_size != -1 && (qc->group_size < 1 || qc->group_size > (1 << 20)))) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: quantization_config: %s with bits %d, group_size %lld",
                            label, m->valuestring, qc->bits, (long long)qc->group_size);
            goto out;
        }
        qc->desc_act = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "desc_act"));
        const cJSON *sym = cJSON_GetObjectItemCaseSensitive(q, "sym");
        qc->sym = !cJSON_IsBool(sym) || cJSON_IsTrue(sym);
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "checkpoint_format");
        qc->gptq_v2 = cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "gptq_v2");
        if (cJSON_IsString(fmt) && !awq && strcmp(fmt->valuestring, "gptq") && !qc->gptq_v2) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: quantization_config.checkpoint_format '%s'", label,
                            fmt->valuestring);
            goto out;
        }
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(q, "version");
        if (awq && cJSON_IsString(ver) && strcasecmp(ver->valuestring, "gemm")) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: quantization_config.version '%s' (lmc reads AWQ GEMM)",
                            label, ver->valuestring);
            goto out;
        }
    } else if (!strcmp(m->valuestring, "bitsandbytes")) {
        qc->method = LMC_QM_BNB4;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_quant_type");
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "load_in_4bit")) || !cJSON_IsString(t) ||
            strcmp(t->valuestring, "nf4")) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                            "%s: quantization_config: lmc reads bitsandbytes 4-bit NF4 (load_in_4bit, bnb_4bit_quant_type nf4)",
                            label);
            goto out;
        }
        qc->double_quant = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_use_double_quant"));
    } else if (!strcmp(m->valuestring, "bitnet")) {
        qc->method = LMC_QM_BITNET;
    } else {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: quantization_config.quant_method '%s' (lmc reads gptq, awq, "
                        "bitsandbytes and bitnet)", label, m->valuestring);
    }
out:
    cJSON_Delete(root);
    return s;
}

void lmc_qlinear_free(struct lmc_qlinear *q) {
    lmc_qgroups_free(&q->g);
    lmc_nf4_free(&q->nf4);
    free(q->tern);
    memset(q, 0, sizeof *q);
}

/* The tensor prefix.suffix with dtype and 1-2 dims; shape[] -1 = any. */
static lmc_status need(const struct lmc_st *st, const char *prefix, const char *suffix, enum lmc_dtype dt, int ndim,
                       const int64_t *shape, const struct lmc_st_tensor **out, lmc_err *err) {
    char name[320];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const struct lmc_st_tensor *t = lmc_st_find(st, name);
    if (!t) return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: tensor '%s' is missing", name);
    if (t->dtype != dt)
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: '%s' is %s, expected %s", name,
                           lmc_dtype_name(t->dtype), lmc_dtype_name(dt));
    bool ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = shape[d] < 0 || t->shape[d] == shape[d];
    if (!ok) {
        char got[64] = "", want[64] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "", (long long)shape[d]);
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "quantized checkpoint: '%s' has shape (%s), the quantization_config and the other tensors "
                           "say (%s)", name, got, want);
    }
    *out = t;
    return LMC_OK;
}

/* A safetensors tensor's bytes need not sit on an int32/f16 boundary (the
 * offsets are the file's), so the packed GPTQ/AWQ tensors are read through an
 * aligned copy; NULL in, NULL out. */
static void *aligned_copy(const struct lmc_st_tensor *t, bool *oom) {
    if (!t) return NULL;
    void *p = malloc(t->nbytes ? (size_t)t->nbytes : 1);
    if (!p) *oom = true;
    else memcpy(p, t->data, (size_t)t->nbytes);
    return p;
}

static lmc_status read_gptq(const struct lmc_st *st, const char *prefix, const struct lmc_quant_config *qc,
                            struct lmc_qlinear *q, lmc_err *err) {
    const struct lmc_st_tensor *qw, *qz, *sc, *gi = NULL;
    int64_t any2[2] = {-1, -1};
    lmc_status s = need(st, prefix, "qweight", LMC_DTYPE_I32, 2, any2, &qw, err);
    if (s) return s;
    int b = qc->bits;
    int64_t n = qw->shape[1], k = qw->shape[0] * 32 / b;
    if ((qw->shape[0] * 32) % b || (n * b) % 32)
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: '%s.qweight' (%lld, %lld) does not hold %d-bit "
                           "codes packed in 32s (quantization_config.bits)", prefix, (long long)qw->shape[0],
                           (long long)n, b);
    int64_t gs = qc->group_size == -1 ? k : qc->group_size, ng = (k + gs - 1) / gs;
    int64_t zs[2] = {ng, n * b / 32}, ss[2] = {ng, n}, gsz[1] = {k};
    if (k <= 0) return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: '%s.qweight' is empty", prefix);
    if ((s = need(st, prefix, "scales", LMC_DTYPE_F16, 2, ss, &sc, err)) ||
        (s = need(st, prefix, "qzeros", LMC_DTYPE_I32, 2, zs, &qz, err)))
        return s;
    char name[320];
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    if (lmc_st_find(st, name) && (s = need(st, prefix, "g_idx", LMC_DTYPE_I32, 1, gsz, &gi, err))) return s;
    bool oom = false;
    int32_t *qwd = aligned_copy(qw, &oom), *qzd = aligned_copy(qz, &oom), *gid = aligned_copy(gi, &oom);
    uint16_t *scd = aligned_copy(sc, &oom);
    struct lmc_gptq_tensors t = {n, k, ng, b, qc->gptq_v2, qwd, qzd, gid, scd};
    s = oom ? lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", prefix) : lmc_gptq_unpack(&t, prefix, &q->g, err);
    free(qwd), free(qzd), free(gid), free(scd);
    if (s) return s;
    q->g.group_size = gs;
    q->n = n;
    q->k = k;
    return LMC_OK;
}

static lmc_status read_awq(const struct lmc_st *st, const char *prefix, const struct lmc_quant_config *qc,
                           struct lmc_qlinear *q, lmc_err *err) {
    const struct lmc_st_tensor *qw, *qz, *sc;
    int64_t any2[2] = {-1, -1};
    lmc_status s = need(st, prefix, "qweight", LMC_DTYPE_I32, 2, any2, &qw, err);
    if (s) return s;
    int64_t k = qw->shape[0], n = qw->shape[1] * 8;
    int64_t gs = qc->group_size == -1 ? k : qc->group_size, ng = (k + gs - 1) / gs;
    int64_t zs[2] = {ng, n / 8}, ss[2] = {ng, n};
    if ((s = need(st, prefix, "scales", LMC_DTYPE_F16, 2, ss, &sc, err)) ||
        (s = need(st, prefix, "qzeros", LMC_DTYPE_I32, 2, zs, &qz, err)))
        return s;
    bool oom = false;
    int32_t *qwd = aligned_copy(qw, &oom), *qzd = aligned_copy(qz, &oom);
    uint16_t *scd = aligned_copy(sc, &oom);
    struct lmc_awq_tensors t = {n, k, ng, qwd, qzd, scd};
    s = oom ? lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", prefix) : lmc_awq_unpack(&t, gs, prefix, &q->g, err);
    free(qwd), free(qzd), free(scd);
    if (s) return s;
    q->n = n;
    q->k = k;
    return LMC_OK;
}

static lmc_status read_nf4(const struct lmc_st *st, const char *prefix, struct lmc_qlinear *q, lmc_err *err) {
    const struct lmc_st_tensor *w, *qs, *am, *qm;
    int64_t any2[2] = {-1, 1}, any1[1] = {-1}, m16[1] = {16};
    lmc_status s;
    if ((s = need(st, prefix, "weight.quant_state.bitsandbytes__nf4", LMC_DTYPE_U8, 1, any1, &qs, err)) ||
        (s = need(st, prefix, "weight", LMC_DTYPE_U8, 2, any2, &w, err)) ||
        (s = need(st, prefix, "weight.quant_map", LMC_DTYPE_F32, 1, m16, &qm, err)))
        return s;
    cJSON *j = cJSON_ParseWithLength(qs->data, qs->nbytes);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape"), *bs = cJSON_GetObjectItemCaseSensitive(j, "blocksize");
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(j, "quant_type");
    const cJSON *nbs = cJSON_GetObjectItemCaseSensitive(j, "nested_blocksize"), *off = cJSON_GetObjectItemCaseSensitive(j, "nested_offset");
    bool ok = cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 2 && cJSON_IsNumber(cJSON_GetArrayItem(shape, 0)) &&
              cJSON_IsNumber(cJSON_GetArrayItem(shape, 1)) && cJSON_IsNumber(bs) && cJSON_IsString(qt);
    int64_t n = ok ? num_i64(cJSON_GetArrayItem(shape, 0)) : 0;
    int64_t k = ok ? num_i64(cJSON_GetArrayItem(shape, 1)) : 0;
    int64_t blk = ok ? num_i64(bs) : 0, blk2 = cJSON_IsNumber(nbs) ? num_i64(nbs) : 0;
    float offset = cJSON_IsNumber(off) && fabs(off->valuedouble) < 1e30 ? (float)off->valuedouble : 0.0f;
    bool nf4 = ok && !strcmp(qt->valuestring, "nf4");
    cJSON_Delete(j);
    int64_t nk;
    if (!ok || n <= 0 || k <= 0 || !lmc_mul_ok(n, k, &nk) || nk > ((int64_t)1 << 40))
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: %s.weight.quant_state: bad or missing shape/blocksize/quant_type", prefix);
    if (!nf4 || blk != 64)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s.weight.quant_state: lmc reads nf4 with blocksize 64", prefix);
    if (w->shape[0] != (nk + 1) / 2)
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: '%s.weight' holds %lld bytes, the quant state's "
                           "shape (%lld, %lld) needs %lld", prefix, (long long)w->shape[0], (long long)n, (long long)k,
                           (long long)((nk + 1) / 2));
    struct lmc_nf4 *f = &q->nf4;
    memset(f, 0, sizeof *f);
    f->numel = nk;
    f->n_blocks = (nk + 63) / 64;
    memcpy(f->quant_map, qm->data, sizeof f->quant_map);
    int64_t nb[1] = {f->n_blocks};
    char name[320];
    snprintf(name, sizeof name, "%s.weight.absmax", prefix);
    const struct lmc_st_tensor *a = lmc_st_find(st, name);
    bool nested = a && a->dtype == LMC_DTYPE_U8;
    if (nested) {
        if (blk2 <= 0 || blk2 > (1 << 20))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s.weight.quant_state: nested_blocksize is missing", prefix);
        f->blocksize2 = blk2;
        f->n_blocks2 = (f->n_blocks + blk2 - 1) / blk2;
        int64_t nb2[1] = {f->n_blocks2}, m256[1] = {256};
        const struct lmc_st_tensor *a2, *nm;
        if ((s = need(st, prefix, "weight.absmax", LMC_DTYPE_U8, 1, nb, &am, err)) ||
            (s = need(st, prefix, "weight.nested_absmax", LMC_DTYPE_F32, 1, nb2, &a2, err)) ||
            (s = need(st, prefix, "weight.nested_quant_map", LMC_DTYPE_F32, 1, m256, &nm, err)))
            return s;
        f->absmax_q = malloc((size_t)f->n_blocks);
        f->absmax2 = malloc((size_t)f->n_blocks2 * 4);
        if (f->absmax_q) memcpy(f->absmax_q, am->data, (size_t)f->n_blocks);
        if (f->absmax2) memcpy(f->absmax2, a2->data, (size_t)f->n_blocks2 * 4);
        memcpy(f->nested_map, nm->data, sizeof f->nested_map);
        f->offset = offset;
    } else {
        if ((s = need(st, prefix, "weight.absmax", LMC_DTYPE_F32, 1, nb, &am, err))) return s;
        f->absmax_f = malloc((size_t)f->n_blocks * 4);
        if (f->absmax_f) memcpy(f->absmax_f, am->data, (size_t)f->n_blocks * 4);
    }
    f->packed = malloc((size_t)(nk + 1) / 2);
    if (!f->packed || (nested ? !f->absmax_q || !f->absmax2 : !f->absmax_f))
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", prefix);
    memcpy(f->packed, w->data, (size_t)(nk + 1) / 2);
    q->n = n;
    q->k = k;
    return LMC_OK;
}

static lmc_status read_bitnet(const struct lmc_st *st, const char *prefix, struct lmc_qlinear *q, lmc_err *err) {
    const struct lmc_st_tensor *w, *sc;
    int64_t any2[2] = {-1, -1}, one[1] = {1};
    lmc_status s;
    if ((s = need(st, prefix, "weight", LMC_DTYPE_U8, 2, any2, &w, err))) return s;
    char name[320];
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    const struct lmc_st_tensor *t = lmc_st_find(st, name);
    enum lmc_dtype dt = t ? t->dtype : LMC_DTYPE_F32;
    if (dt != LMC_DTYPE_F32 && dt != LMC_DTYPE_BF16 && dt != LMC_DTYPE_F16) dt = LMC_DTYPE_F32;
    if ((s = need(st, prefix, "weight_scale", dt, 1, one, &sc, err))) return s;
    float ws;
    if (dt == LMC_DTYPE_F32) memcpy(&ws, sc->data, 4);
    else {
        uint16_t h;
        memcpy(&h, sc->data, 2);
        ws = dt == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
    }
    if (!(ws > 0) || !isfinite(ws))
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: '%s' = %g is not a positive scale", name, ws);
    int64_t n = w->shape[0] * 4, k = w->shape[1];
    if (!(q->tern = malloc((size_t)(n * k)))) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", prefix);
    const uint8_t *p = w->data;
    for (int64_t i = 0; i < w->numel; i++)
        for (int j = 0; j < 4; j++)
            if (((p[i] >> (2 * j)) & 3) == 3)
                return lmc_err_set(err, LMC_ERR_FORMAT, "quantized checkpoint: '%s.weight' byte %lld holds the code 3 "
                                   "(ternary codes are 0, 1, 2)", prefix, (long long)i);
    lmc_ternary_unpack(p, n, k, q->tern);
    q->tern_scale = ws;
    q->n = n;
    q->k = k;
    return LMC_OK;
}

lmc_status lmc_qlinear_read(const struct lmc_st *st, const char *prefix, const struct lmc_quant_config *qc,
                            struct lmc_qlinear *q, bool *found, lmc_err *err) {
    memset(q, 0, sizeof *q);
    *found = false;
    char name[320];
    const char *probe = qc->method == LMC_QM_GPTQ || qc->method == LMC_QM_AWQ ? "qweight"
                        : qc->method == LMC_QM_BNB4                          ? "weight.quant_state.bitsandbytes__nf4"
                        : qc->method == LMC_QM_BITNET                        ? "weight_scale"
                                                                             : NULL;
    if (!probe) return LMC_OK;
    snprintf(name, sizeof name, "%s.%s", prefix, probe);
    if (!lmc_st_find(st, name)) return LMC_OK;
    *found = true;
    q->method = qc->method;
    lmc_status s = qc->method == LMC_QM_GPTQ  ? read_gptq(st, prefix, qc, q, err)
                   : qc->method == LMC_QM_AWQ ? read_awq(st, prefix, qc, q, err)
                   : qc->method == LMC_QM_BNB4 ? read_nf4(st, prefix, q, err)
                                               : read_bitnet(st, prefix, q, err);
    if (s) lmc_qlinear_free(q);
    return s;
}

void lmc_qlinear_dequantize(const struct lmc_qlinear *q, float *w) {
    switch (q->method) {
    case LMC_QM_GPTQ:
    case LMC_QM_AWQ: lmc_qgroups_dequantize(&q->g, w); break;
    case LMC_QM_BNB4: lmc_nf4_dequantize(&q->nf4, w); break;
    case LMC_QM_BITNET:
        for (int64_t i = 0; i < q->n * q->k; i++) w[i] = (float)q->tern[i] / q->tern_scale;
        break;
    default: LMC_ASSERT(0);
    }
}

lmc_status lmc_qlinear_prepare(const struct lmc_qlinear *q, struct lmc_qweight *w, lmc_err *err) {
    switch (q->method) {
    case LMC_QM_GPTQ:
    case LMC_QM_AWQ: return lmc_qweight_init_groups(w, &q->g, err);
    case LMC_QM_BNB4: return lmc_qweight_init_nf4(w, &q->nf4, q->n, q->k, err);
    case LMC_QM_BITNET: return lmc_qweight_init_ternary(w, q->tern, 1.0f / q->tern_scale, q->n, q->k, err);
    default: return lmc_err_set(err, LMC_ERR_ARG, "not a quantized linear");
    }
}

/* ---- writers' tensors ---- */

void lmc_qtensors_free(struct lmc_qtensors *t) {
    for (int i = 0; i < t->n; i++) free(t->bufs[i]);
    memset(t, 0, sizeof *t);
}

static struct lmc_st_write_tensor *add(struct lmc_qtensors *o, const char *prefix, const char *suffix,
                                       enum lmc_dtype dt, int ndim, int64_t d0, int64_t d1, void *buf) {
    struct lmc_st_write_tensor *t = &o->t[o->n];
    snprintf(o->names[o->n], sizeof o->names[o->n], "%s.%s", prefix, suffix);
    t->name = o->names[o->n];
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = buf;
    o->bufs[o->n++] = buf;
    return t;
}

lmc_status lmc_qtensors_gptq(const struct lmc_qgroups *g, bool v2, const char *prefix, struct lmc_qtensors *out,
                             lmc_err *err) {
    memset(out, 0, sizeof *out);
    struct lmc_gptq_tensors t;
    lmc_status s = lmc_gptq_pack(g, v2, &t, err);
    if (s) return lmc_err_prefix(err, "%s: ", prefix);
    add(out, prefix, "qweight", LMC_DTYPE_I32, 2, g->k * g->bits / 32, g->n, t.qweight);
    add(out, prefix, "qzeros", LMC_DTYPE_I32, 2, g->n_groups, g->n * g->bits / 32, t.qzeros);
    add(out, prefix, "scales", LMC_DTYPE_F16, 2, g->n_groups, g->n, t.scales);
    add(out, prefix, "g_idx", LMC_DTYPE_I32, 1, g->k, 0, t.g_idx);
    return LMC_OK;
}

lmc_status lmc_qtensors_nf4(const struct lmc_nf4 *q, int64_t n, int64_t k, const char *dtype, const char *prefix,
                            struct lmc_qtensors *out, lmc_err *err) {
    memset(out, 0, sizeof *out);
    size_t pb = (size_t)(q->numel + 1) / 2;
    void *w = malloc(pb), *am = malloc((size_t)q->n_blocks), *qm = malloc(64), *a2 = malloc((size_t)q->n_blocks2 * 4),
         *nm = malloc(1024);
    char js[512];
    int jl = snprintf(js, sizeof js,
                      "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"%s\", \"shape\": [%lld, %lld], "
                      "\"nested_blocksize\": %lld, \"nested_dtype\": \"float32\", \"nested_offset\": %.9g}",
                      dtype, (long long)n, (long long)k, (long long)q->blocksize2, (double)q->offset);
    void *qs = malloc((size_t)jl);
    if (!w || !am || !qm || !a2 || !nm || !qs || !q->absmax_q) {
        free(w), free(am), free(qm), free(a2), free(nm), free(qs);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory (or NF4 without double quantization)", prefix);
    }
    memcpy(w, q->packed, pb);
    memcpy(am, q->absmax_q, (size_t)q->n_blocks);
    memcpy(qm, q->quant_map, 64);
    memcpy(a2, q->absmax2, (size_t)q->n_blocks2 * 4);
    memcpy(nm, q->nested_map, 1024);
    memcpy(qs, js, (size_t)jl);
    add(out, prefix, "weight", LMC_DTYPE_U8, 2, (int64_t)pb, 1, w);
    add(out, prefix, "weight.absmax", LMC_DTYPE_U8, 1, q->n_blocks, 0, am);
    add(out, prefix, "weight.quant_map", LMC_DTYPE_F32, 1, 16, 0, qm);
    add(out, prefix, "weight.nested_absmax", LMC_DTYPE_F32, 1, q->n_blocks2, 0, a2);
    add(out, prefix, "weight.nested_quant_map", LMC_DTYPE_F32, 1, 256, 0, nm);
    add(out, prefix, "weight.quant_state.bitsandbytes__nf4", LMC_DTYPE_U8, 1, jl, 0, qs);
    return LMC_OK;
}

lmc_status lmc_qtensors_ternary(const int8_t *q, float scale, int64_t n, int64_t k, const char *prefix,
                                struct lmc_qtensors *out, lmc_err *err) {
    memset(out, 0, sizeof *out);
    uint8_t *p;
    lmc_status s = lmc_ternary_pack(q, n, k, &p, err);
    if (s) return lmc_err_prefix(err, "%s: ", prefix);
    float *ws = malloc(4);
    if (!ws) {
        free(p);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", prefix);
    }
    *ws = 1.0f / scale;
    add(out, prefix, "weight", LMC_DTYPE_U8, 2, n / 4, k, p);
    add(out, prefix, "weight_scale", LMC_DTYPE_F32, 1, 1, 0, ws);
    return LMC_OK;
}
