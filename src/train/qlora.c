/* qlora.c — loading a trainable model with 4-bit block linears (see
 * qlora.h): the parameter table with the quantizable linears external,
 * each read and quantized one tensor at a time (the float copy of one
 * tensor at most, the file's pages of it released after), bound as
 * LMC_WFMT_QUANT views (fused tensors split per part, as model loading
 * splits them). */
#include "train/qlora.h"
#include "core/core.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "quant/hf_quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define QLORA_GROUP 64 /* int4: a last partial group when k is not a multiple */

bool lmc_qlora_kind_parse(const char *s, enum lmc_qlora_kind *k) {
    if (!strcmp(s, "nf4")) *k = LMC_QLORA_NF4;
    else if (!strcmp(s, "int4")) *k = LMC_QLORA_INT4;
    else return false;
    return true;
}

struct pick {
    const struct lmc_st *st;
    const char *alt_prefix;
    bool prequantized;
    bool ends;                /* the token embedding and untied head external too (a bf16 base) */
    enum lmc_qmethod method;
    uint8_t parts[1 << 16];   /* spec parts of each external tensor, in table order */
    int n_ext;
    bool too_many;
};

static const struct lmc_st_tensor *find(const struct lmc_st *st, const char *alt, const char *name) {
    const struct lmc_st_tensor *t = lmc_st_find(st, name);
    if (!t && alt && !strncmp(name, alt, strlen(alt))) t = lmc_st_find(st, name + strlen(alt));
    return t;
}

static bool is_float(const struct lmc_st_tensor *t) {
    return t && (t->dtype == LMC_DTYPE_F32 || t->dtype == LMC_DTYPE_F16 || t->dtype == LMC_DTYPE_BF16);
}

/* External: a block linear whose rows are whole blocks of 64 (float
 * folder), or one the quantized folder stores quantized (no float tensor). */
static bool pick_external(void *user, const struct lmc_tensor_ref *t) {
    struct pick *p = user;
    if (t->layer < 0 && p->ends && t->ndim == 2 && p->n_ext < (int)sizeof p->parts &&
        (t->spec->kind == LMC_TK_TOK_EMB || t->spec->kind == LMC_TK_HEAD)) {
        p->parts[p->n_ext++] = 1;
        return true;
    }
    if (t->layer < 0 || t->ndim != 2) return false;
    bool ext = !p->prequantized || (!is_float(find(p->st, p->alt_prefix, t->name)) &&
                                    !(p->method == LMC_QM_BNB4 && t->cols % 64));
    if (ext && p->n_ext == (int)sizeof p->parts) {
        p->too_many = true;
        return false;
    }
    if (ext) p->parts[p->n_ext++] = t->spec->parts > 1 ? t->spec->parts : 1;
    return ext;
}

/* Releases the file pages of [p, p + n) (a read-only mapping: read back
 * from the file if touched again), so that peak memory holds one tensor. */
static void drop_pages(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !p) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
    uintptr_t e = ((uintptr_t)p + n) / (uintptr_t)pg * (uintptr_t)pg;
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
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

/* The float tensor of p in its on-disk layout into buf (p->numel). */
static lmc_status read_float(const struct lmc_st_tensor *t, const struct lmc_tparam *p, const char *dir,
                             float *buf, lmc_err *err) {
    bool ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] && (p->ndim == 1 || t->shape[1] == p->shape[1]);
    if (t->ndim == 3 && p->ndim == 2) ok = t->shape[0] == p->shape[0] && t->shape[1] == 1 && t->shape[2] == p->shape[1];
    if (!ok || (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has the wrong shape or dtype (expected "
                           "F32/F16/BF16 [%lld%s%lld])", dir, p->name, (long long)p->shape[0],
                           p->ndim == 2 ? ", " : "", p->ndim == 2 ? (long long)p->shape[1] : 0LL);
    for (int64_t k = 0; k < p->numel; k++) buf[k] = st_elem(t, k);
    drop_pages(t->data, t->nbytes);
    return LMC_OK;
}

/* Quantizes w (n, k) (model layout) into q with the chosen kind. */
static lmc_status quantize(const float *w, int64_t n, int64_t k, enum lmc_qlora_kind kind, struct lmc_qweight *q,
                           lmc_err *err) {
    lmc_status s;
    if (kind == LMC_QLORA_NF4) { /* bitsandbytes' layout: blocks of 64 over the flattened weight */
        struct lmc_nf4 nf;
        if ((s = lmc_nf4_quantize(w, n * k, &nf, err))) return s;
        s = lmc_qweight_init_nf4_flat(q, &nf, n, k, err);
        lmc_nf4_free(&nf);
        return s;
    }
    struct lmc_qgroups g;
    if ((s = lmc_quant_rtn(w, n, k, 4, QLORA_GROUP, false, &g, err))) return s;
    s = lmc_qweight_init_groups(q, &g, err);
    lmc_qgroups_free(&g);
    return s;
}

/* Part i's rows [i*pr, (i+1)*pr) of a fused weight, borrowing its buffers. */
static void row_view(struct lmc_qweight *v, const struct lmc_qweight *w, int i, int64_t pr) {
    *v = *w;
    v->n = pr;
    v->owned = NULL;
    if (w->nf4_flat) { /* same buffers, an element offset */
        v->flat_off = w->flat_off + i * pr * w->k;
        return;
    }
    v->data = w->data + i * pr * w->row_bytes;
    if (w->scale) v->scale = w->scale + i * pr * w->n_groups;
    if (w->zero) v->zero = w->zero + i * pr * w->n_groups;
    if (w->absmax) v->absmax = w->absmax + i * pr * (w->k / 64);
    if (w->dq_code) v->dq_code = w->dq_code + i * pr * (w->k / 64), v->dq_b0 = w->dq_b0 + i * pr * (w->k / 64);
    v->dq_owned = NULL;
    v->owned = NULL;
}

static lmc_status load_external(struct lmc_tmodel *tm, struct lmc_qlora *ql, int i, const struct lmc_st *st,
                                const struct lmc_quant_config *qc, enum lmc_qlora_kind kind, int parts,
                                const char *dir, float **buf, lmc_err *err) {
    const struct lmc_tparam *p = &tm->params[i];
    struct lmc_qweight *q = &ql->qw[i];
    int64_t n = p->transposed ? p->shape[1] : p->shape[0], k = p->transposed ? p->shape[0] : p->shape[1];
    lmc_status s;
    if (ql->prequantized) {
        char prefix[160];
        size_t len = strlen(p->name);
        if (len <= 7 || strcmp(p->name + len - 7, ".weight"))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: '%s' is not a linear's weight", dir, p->name);
        memcpy(prefix, p->name, len - 7);
        prefix[len - 7] = 0;
        struct lmc_qlinear ql1;
        memset(&ql1, 0, sizeof ql1);
        bool found = false;
        const char *name = prefix, *ap = tm->arch->alt_prefix;
        s = lmc_qlinear_read(st, prefix, qc, &ql1, &found, err);
        if (!s && !found && ap && !strncmp(prefix, ap, strlen(ap))) {
            name = prefix + strlen(ap);
            s = lmc_qlinear_read(st, name, qc, &ql1, &found, err);
        }
        if (!s && !found) s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s' (float or quantized)", dir, p->name);
        if (!s && (ql1.n != n || ql1.k != k))
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: quantized linear '%s' is (%lld, %lld), expected (%lld, %lld)",
                            dir, name, (long long)ql1.n, (long long)ql1.k, (long long)n, (long long)k);
        if (!s && (s = lmc_qlinear_prepare(&ql1, q, err))) lmc_err_prefix(err, "%s: %s: ", dir, name);
        lmc_qlinear_free(&ql1);
        if (s) return s;
    } else {
        const struct lmc_st_tensor *t = find(st, tm->arch->alt_prefix, p->name);
        if (!t) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", dir, p->name);
        free(*buf);
        float *w = *buf = malloc((size_t)p->numel * sizeof(float) * (p->transposed ? 2 : 1));
        if (!w) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
        if ((s = read_float(t, p, dir, w, err))) return s;
        if (p->transposed) { /* on disk (in, out): the kernels want (out, in) */
            float *o = w + p->numel;
            for (int64_t r = 0; r < k; r++)
                for (int64_t c = 0; c < n; c++) o[c * k + r] = w[r * n + c];
            w = o;
        }
        if ((s = quantize(w, n, k, kind, q, err))) {
            lmc_err_prefix(err, "%s: %s: ", dir, p->name);
            return s;
        }
    }
    struct lmc_qweight *v = &ql->views[ql->n];
    for (int j = 0; j < parts; j++) {
        row_view(&v[j], q, j, n / parts);
        ql->compact_bytes += lmc_qweight_bytes_compact(&v[j]);
    }
    ql->n += parts;
    tm->params[i].q = v;
    ql->n_quant++;
    ql->quant_params += p->numel;
    ql->quant_bytes += lmc_qweight_bytes(q);
    return LMC_OK;
}

/* LMC_QLORA_BF16: external tparam i read as floats, rounded to bf16 on the
 * host (round to nearest even, as the device's conversion) and uploaded
 * into a buffer of its own; bound through ext_data. */
static lmc_status load_bf16(struct lmc_tmodel *tm, struct lmc_qlora *ql, int i, const struct lmc_st *st,
                            const char *dir, float **buf, bool host_emb, lmc_err *err) {
    const struct lmc_backend *be = ql->be;
    struct lmc_tparam *p = &tm->params[i];
    int64_t n = p->transposed ? p->shape[1] : p->shape[0], k = p->transposed ? p->shape[0] : p->shape[1];
    const struct lmc_st_tensor *t = find(st, tm->arch->alt_prefix, p->name);
    if (!t) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", dir, p->name);
    free(*buf);
    float *w = *buf = malloc((size_t)p->numel * sizeof(float) * (p->transposed ? 2 : 1));
    uint16_t *h = malloc((size_t)p->numel * sizeof(uint16_t));
    if (!w || !h) {
        free(h);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    }
    lmc_status s = read_float(t, p, dir, w, err);
    if (s) {
        free(h);
        return s;
    }
    if (p->transposed) { /* on disk (in, out): the kernels want (out, in) */
        float *o = w + p->numel;
        for (int64_t r = 0; r < k; r++)
            for (int64_t c = 0; c < n; c++) o[c * k + r] = w[r * n + c];
        w = o;
    }
    for (int64_t e = 0; e < p->numel; e++) h[e] = lmc_f32_to_bf16(w[e]);
    size_t bytes = (size_t)p->numel * sizeof(uint16_t);
    /* the token embedding of an untied head in host memory: only the embed op reads it (tm->tied_head is not
     * known before the head is bound: an untied head is an external matrix of the last part) */
    bool untied = false;
    for (int j = 0; j < tm->n_params; j++)
        untied |= tm->params[j].part == (int)tm->cfg.num_layers + 1 && tm->params[j].external && tm->params[j].ndim == 2;
    bool host = host_emb && p->part == 0 && untied && !ql->host_emb;
    void *d = host ? be->host_alloc(be->ctx, bytes) : be->alloc(be->ctx, bytes);
    if (!d) {
        free(h);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: %s: out of %s memory (bf16 base)", dir, p->name,
                           host ? "host" : "device");
    }
    p->ext_data = d;
    p->ext_dtype = LMC_DTYPE_BF16;
    if (host) {
        memcpy(d, h, bytes);
        free(h);
        ql->host_emb = d;
        ql->host_bytes = bytes;
        ql->n_ends++;
        ql->ends_params += p->numel;
        return LMC_OK;
    }
    be->upload(be->ctx, d, h, bytes);
    be->sync(be->ctx);
    free(h);
    ql->dense[ql->n_dense++] = d;
    if (p->part == 0 || p->part == (int)tm->cfg.num_layers + 1) {
        ql->n_ends++; /* the embedding or the head */
        ql->ends_params += p->numel;
        ql->ends_bytes += bytes;
    } else {
        ql->n_quant++;
        ql->quant_params += p->numel;
    }
    ql->quant_bytes += bytes;
    ql->compact_bytes += bytes;
    ql->dev_bytes += bytes;
    return LMC_OK;
}

/* The views of external tparam i (the last `parts` made) copied to the
 * backend; the host weight released after. */
static lmc_status upload_external(struct lmc_qlora *ql, int i, int parts, const char *dir, lmc_err *err) {
    const struct lmc_backend *be = ql->be;
    struct lmc_qweight *v = &ql->views[ql->n - parts];
    for (int j = 0; j < parts; j++) {
        struct lmc_qweight *d = NULL;
        size_t bytes = 0;
        lmc_status s = be->qweight_upload_f(be->ctx, &v[j], &d, &bytes, err);
        if (s) {
            lmc_err_prefix(err, "%s: ", dir);
            return s;
        }
        ql->dev[ql->n_dev++] = d;
        ql->dev_bytes += bytes;
        v[j] = *d; /* the linear reads the device handle's fields (its owned: the device copy) */
    }
    lmc_qweight_free(&ql->qw[i]);
    return LMC_OK;
}

/* A quantized linear of the folder expanded into buf (out, in) floats. */
static lmc_status read_dequantized(const struct lmc_tmodel *tm, const struct lmc_tparam *p, const struct lmc_st *st,
                                   const struct lmc_quant_config *qc, const char *dir, float *buf, lmc_err *err) {
    char prefix[160];
    size_t len = strlen(p->name);
    if (len <= 7 || strcmp(p->name + len - 7, ".weight"))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", dir, p->name);
    memcpy(prefix, p->name, len - 7);
    prefix[len - 7] = 0;
    struct lmc_qlinear q;
    memset(&q, 0, sizeof q);
    bool found = false;
    const char *ap = tm->arch->alt_prefix;
    lmc_status s = lmc_qlinear_read(st, prefix, qc, &q, &found, err);
    if (!s && !found && ap && !strncmp(prefix, ap, strlen(ap)))
        s = lmc_qlinear_read(st, prefix + strlen(ap), qc, &q, &found, err);
    if (!s && (!found || q.n != p->shape[0] || q.k != p->shape[1]))
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s' (float or quantized of its shape)", dir, p->name);
    if (!s) lmc_qlinear_dequantize(&q, buf);
    lmc_qlinear_free(&q);
    return s;
}

static lmc_status read_config_quant(const char *dir, struct lmc_quant_config *qc, lmc_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    size_t len = 0;
    lmc_status s = lmc_file_read(path, (size_t)64 << 20, &text, &len, err);
    if (!s) s = lmc_quant_config_parse(text, len, path, qc, err);
    free(text);
    return s;
}

lmc_status lmc_qlora_load(struct lmc_tmodel *tm, struct lmc_qlora *ql, const char *dir, enum lmc_qlora_kind kind,
                          const struct lmc_backend *be, lmc_err *err) {
    return lmc_qlora_load_ends(tm, ql, dir, kind, kind == LMC_QLORA_BF16 && !be->host_memory, be, err);
}

lmc_status lmc_qlora_load_ends(struct lmc_tmodel *tm, struct lmc_qlora *ql, const char *dir, enum lmc_qlora_kind kind,
                               bool bf16_ends, const struct lmc_backend *be, lmc_err *err) {
    return lmc_qlora_load_opts(tm, ql, dir, kind, bf16_ends, false, be, err);
}

lmc_status lmc_qlora_load_opts(struct lmc_tmodel *tm, struct lmc_qlora *ql, const char *dir, enum lmc_qlora_kind kind,
                               bool bf16_ends, bool host_emb, const struct lmc_backend *be, lmc_err *err) {
    memset(ql, 0, sizeof *ql);
    memset(tm, 0, sizeof *tm);
    if (host_emb && bf16_ends && (!be->host_alloc || !be->host_free))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "backend %s has no host memory for the token embedding",
                           be->name ? be->name : "?");
    if ((kind == LMC_QLORA_BF16 || bf16_ends) && be->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "bf16 base: a device backend's (backend %s keeps the f32 base)",
                           be->name ? be->name : "?");
    if (kind != LMC_QLORA_BF16 && (!be->qmatmul_f || !be->qmatmul_f_bwd || (!be->host_memory && (!be->qweight_upload_f || !be->qweight_free_f))))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "QLoRA: backend %s has no quantized float matmul "
                           "(qmatmul_f%s)", be->name ? be->name : "?", be->host_memory ? "" : ", qweight_upload_f");
    ql->be = be;
    struct lmc_config cfg;
    struct lmc_quant_config qc;
    struct lmc_st st;
    memset(&qc, 0, sizeof qc);
    lmc_status s = lmc_config_load(&cfg, dir, err);
    if (s || (s = read_config_quant(dir, &qc, err))) return s;
    if (qc.method != LMC_QM_NONE && qc.method != LMC_QM_BNB4 && qc.method != LMC_QM_GPTQ && qc.method != LMC_QM_AWQ)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: QLoRA over this quantization_config (BitNet) is not "
                           "supported", dir);
    if (kind == LMC_QLORA_BF16 && qc.method != LMC_QM_NONE)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: a bf16 base needs a float folder (this one is quantized: "
                           "train it with --qlora)", dir);
    if ((s = lmc_st_open_dir(&st, dir, err))) return s;
    ql->prequantized = qc.method != LMC_QM_NONE;
    struct pick *pk = calloc(1, sizeof *pk);
    if (!pk) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    }
    *pk = (struct pick){.st = &st, .alt_prefix = lmc_arch_of(&cfg)->alt_prefix, .prequantized = ql->prequantized,
                        .method = qc.method, .ends = bf16_ends};
    if ((s = lmc_tmodel_init_ext(tm, &cfg, be, pick_external, pk, err))) {
        free(pk);
        lmc_st_free(&st);
        return s;
    }
    int ext = 0;
    ql->qw = calloc((size_t)tm->n_params, sizeof *ql->qw);
    ql->n_slots = tm->n_params;
    ql->views = calloc((size_t)tm->n_params * 4, sizeof *ql->views);
    if (!be->host_memory && !(ql->dev = calloc((size_t)tm->n_params * 4, sizeof *ql->dev)))
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    if ((kind == LMC_QLORA_BF16 || bf16_ends) && !(ql->dense = calloc((size_t)tm->n_params, sizeof *ql->dense)))
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    if (pk->too_many) s = lmc_err_set(err, LMC_ERR_ARG, "%s: QLoRA: more than %d linears", dir, (int)sizeof pk->parts);
    float *buf = NULL;
    if (!ql->qw || !ql->views) s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
    for (int i = 0; i < tm->n_params && !s; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->external) {
            int parts = pk->parts[ext++];
            if (kind == LMC_QLORA_BF16 || p->part == 0 || p->part == (int)tm->cfg.num_layers + 1) {
                s = load_bf16(tm, ql, i, &st, dir, &buf, host_emb && bf16_ends, err); /* a bf16 linear, or the embedding / head */
                continue;
            }
            s = load_external(tm, ql, i, &st, &qc, kind, parts, dir, &buf, err);
            if (!s && !be->host_memory) s = upload_external(ql, i, parts, dir, err);
            continue;
        }
        const struct lmc_st_tensor *t = find(&st, tm->arch->alt_prefix, p->name);
        free(buf);
        if (!(buf = malloc((size_t)p->numel * sizeof(float)))) {
            s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
        } else if (t && (is_float(t) || !ql->prequantized)) {
            if (!(s = read_float(t, p, dir, buf, err))) s = lmc_tmodel_upload_param(tm, tm->w, i, buf, err);
        } else if (ql->prequantized && p->ndim == 2 && !p->transposed) {
            s = read_dequantized(tm, p, &st, &qc, dir, buf, err); /* an NF4 linear the kernels cannot run */
            if (!s) s = lmc_tmodel_upload_param(tm, tm->w, i, buf, err);
        } else {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", dir, p->name);
        }
    }
    free(buf);
    free(pk);
    lmc_st_free(&st);
    if (!s) LMC_ASSERT(lmc_tmodel_bind(tm) == tm->n_params);
    if (s) {
        lmc_tmodel_free(tm);
        lmc_qlora_free(ql);
    }
    return s;
}

void lmc_qlora_free(struct lmc_qlora *ql) {
    for (int i = 0; ql->dev && i < ql->n_dev; i++) ql->be->qweight_free_f(ql->be->ctx, ql->dev[i]);
    for (int i = 0; ql->dense && i < ql->n_dense; i++) ql->be->free(ql->be->ctx, ql->dense[i]);
    if (ql->host_emb) ql->be->host_free(ql->be->ctx, ql->host_emb);
    free(ql->dense);
    free(ql->dev);
    for (int i = 0; ql->qw && i < ql->n_slots; i++) lmc_qweight_free(&ql->qw[i]);
    free(ql->qw);
    free(ql->views);
    memset(ql, 0, sizeof *ql);
}
