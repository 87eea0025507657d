/* tp_quant.c — quantized weights cut by rows or by whole blocks/groups of
 * columns for a tensor-parallel rank (see tp_quant.h). */
#include "dist/tp_quant.h"
#include "core/core.h"
#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

static void *dup_bytes(const void *src, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (p && bytes) memcpy(p, src, bytes);
    return p;
}

/* per-row columns [c0, c0+nc) of a (rows, cols) table of esz-byte entries */
static void *cut_table(const void *src, int64_t rows, int64_t cols, int64_t c0, int64_t nc, size_t esz) {
    uint8_t *p = malloc((size_t)(rows * nc) * esz + 1);
    if (!p) return NULL;
    for (int64_t r = 0; r < rows; r++)
        memcpy(p + (size_t)(r * nc) * esz, (const uint8_t *)src + (size_t)(r * cols + c0) * esz, (size_t)nc * esz);
    return p;
}

static lmc_status cut_rows(struct lmc_qweight *d, const struct lmc_qweight *w, int64_t a0, int64_t n, lmc_err *err) {
    d->n = n;
    d->data = d->owned = dup_bytes(w->data + a0 * w->row_bytes, (size_t)(n * w->row_bytes));
    bool ok = d->owned != NULL;
    if (w->gblk) ok &= (d->gblk = dup_bytes(w->gblk, sizeof(int64_t) * (size_t)(w->n_groups + 1))) != NULL;
    if (w->scale) ok &= (d->scale = dup_bytes(w->scale + a0 * w->n_groups, sizeof(float) * (size_t)(n * w->n_groups))) != NULL;
    if (w->zero) ok &= (d->zero = dup_bytes(w->zero + a0 * w->n_groups, sizeof(int32_t) * (size_t)(n * w->n_groups))) != NULL;
    if (w->perm) ok &= (d->perm = dup_bytes(w->perm, sizeof(int32_t) * (size_t)w->kp)) != NULL;
    if (w->absmax)
        ok &= (d->absmax = dup_bytes(w->absmax + a0 * (w->k / 64), sizeof(float) * (size_t)(n * (w->k / 64)))) != NULL;
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory cutting a quantized weight");
}

static lmc_status cut_cols(struct lmc_qweight *d, const struct lmc_qweight *w, int64_t a0, int64_t n, const char *what,
                           lmc_err *err) {
    if (w->kernel == LMC_QK_Q4_KR || w->kernel == LMC_QK_Q4_0R) { /* repacked at load: cut in the file's layout */
        struct lmc_qweight g;
        lmc_status s = lmc_qweight_file_layout(w, &g, err);
        if (s) return s;
        d->kernel = g.kernel;
        s = cut_cols(d, &g, a0, n, what, err);
        lmc_qweight_free(&g);
        return s ? s : lmc_qweight_repack(d, err); /* the cut's rows repacked again */
    }
    if (w->perm)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s is quantized in act-order (its input columns "
                           "permuted into groups), which do not split by columns", what);
    int64_t be, bb; /* elements and bytes of a block along K */
    int64_t g0 = 0, g1 = 0;
    if (w->ggml_type >= 0) {
        if (!lmc_ggml_type_info(w->ggml_type, &be, &bb))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s: unknown GGUF type %d", what, w->ggml_type);
    } else if (w->kernel == LMC_QK_U4G || w->kernel == LMC_QK_U8G) {
        be = 32, bb = w->kernel == LMC_QK_U4G ? 16 : 32;
    } else if (w->kernel == LMC_QK_NF4) {
        be = 64, bb = 32;
    } else {
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s: this quantized format does not split", what);
    }
    if (a0 % be || n % be)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s: the rank's input columns [%lld, %lld) are not "
                           "whole blocks of %lld (give a --tp that divides its %lld columns into blocks)", what,
                           (long long)a0, (long long)(a0 + n), (long long)be, (long long)w->k);
    if (w->gblk) { /* the cut must start and end at group boundaries */
        int64_t b0 = a0 / 32, b1 = (a0 + n) / 32;
        g0 = g1 = -1;
        for (int64_t g = 0; g <= w->n_groups; g++) {
            if (w->gblk[g] == b0) g0 = g;
            if (w->gblk[g] == b1) g1 = g;
        }
        if (g0 < 0 || g1 < 0)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s: the rank's input columns [%lld, %lld) cut "
                               "through its quantization groups (%lld groups over %lld columns; quantize with a group "
                               "size that divides the shard)", what, (long long)a0, (long long)(a0 + n),
                               (long long)w->n_groups, (long long)w->k);
    }
    d->k = d->kp = n;
    d->row_bytes = n / be * bb;
    d->data = d->owned = cut_table(w->data, w->n, w->row_bytes, a0 / be * bb, d->row_bytes, 1);
    bool ok = d->owned != NULL;
    if (w->gblk) {
        d->n_groups = g1 - g0;
        ok &= (d->gblk = malloc(sizeof(int64_t) * (size_t)(d->n_groups + 1))) != NULL;
        for (int64_t g = 0; ok && g <= d->n_groups; g++) d->gblk[g] = w->gblk[g0 + g] - w->gblk[g0];
        ok &= (d->scale = cut_table(w->scale, w->n, w->n_groups, g0, d->n_groups, sizeof(float))) != NULL;
        ok &= (d->zero = cut_table(w->zero, w->n, w->n_groups, g0, d->n_groups, sizeof(int32_t))) != NULL;
    }
    if (w->absmax) ok &= (d->absmax = cut_table(w->absmax, w->n, w->k / 64, a0 / 64, n / 64, sizeof(float))) != NULL;
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory cutting a quantized weight");
}

lmc_status lmc_tp_qweight_cut(struct lmc_qweight *d, const struct lmc_qweight *w, bool cols, int64_t a0, int64_t n,
                              const char *what, lmc_err *err) {
    *d = *w;
    d->owned = NULL, d->data = NULL, d->gblk = NULL, d->scale = NULL, d->zero = NULL, d->perm = NULL, d->absmax = NULL;
    /* the float absmax serves the CPU kernels; the compact double-quantized form is a device's */
    d->dq_code = NULL, d->dq_absmax2 = d->dq_nested = NULL, d->dq_owned = NULL, d->dq_b0 = d->dq_bs2 = d->dq_n2 = 0;
    struct lmc_qweight rows; /* NF4 over the flattened weight whose rows are whole blocks: the same blocks per row */
    if (w->nf4_flat) {
        if (w->k % 64 || w->flat_off % 64 || !w->absmax)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel: %s is NF4 over the flattened weight with "
                               "rows that are not whole blocks of 64, which does not split", what);
        rows = *w;
        rows.nf4_flat = false;
        rows.flat_off = 0;
        rows.row_bytes = w->k / 2;
        rows.data = w->data + w->flat_off / 2;
        rows.absmax = w->absmax + w->flat_off / 64;
        w = &rows;
        d->nf4_flat = false, d->flat_off = 0, d->row_bytes = rows.row_bytes;
    }
    lmc_status s = cols ? cut_cols(d, w, a0, n, what, err) : cut_rows(d, w, a0, n, err);
    if (s) lmc_qweight_free(d);
    return s;
}
