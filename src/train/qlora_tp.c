/* qlora_tp.c — a QLoRA base cut for one tensor-parallel rank (see
 * qlora_tp.h): the local table made with the same tensors external, each
 * quantized weight cut (dist/tp_quant.h), each float tensor sliced, the
 * views bound and the linears flagged with their split. */
#include "train/qlora_tp.h"
#include "core/core.h"
#include "dist/tp_quant.h"

#include <stdlib.h>
#include <string.h>

static bool external_in_full(void *user, const struct lmc_tensor_ref *t) {
    const struct lmc_tmodel *full = user;
    int f = lmc_tmodel_find(full, t->name);
    return f >= 0 && full->params[f].external;
}

void lmc_qlora_tp_free(struct lmc_qlora_tp *q) {
    for (int i = 0; q->cuts && i < q->n; i++) lmc_qweight_free(&q->cuts[i]);
    free(q->cuts);
    memset(q, 0, sizeof *q);
}

lmc_status lmc_qlora_tp_shard(struct lmc_tmodel *shard, struct lmc_trainer_tp **out, struct lmc_qlora_tp *q,
                              const struct lmc_tmodel *full, struct lmc_comm *tp, const struct lmc_backend *be,
                              lmc_err *err) {
    *out = NULL;
    memset(q, 0, sizeof *q);
    memset(shard, 0, sizeof *shard);
    const struct lmc_config *fc = &full->cfg;
    if (!be->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--qlora --tp: the quantized base is cut on the host (CPU backend)");
    if (fc->num_experts > 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--qlora --tp: %s has mixture-of-experts layers", fc->model_type);
    for (int i = 0; i < full->arch->n_specs; i++)
        if (full->arch->specs[i].parts > 1)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--qlora --tp: %s (fused %s) does not split yet",
                               full->arch->name, full->arch->specs[i].name);
    struct lmc_trainer_tp *t = calloc(1, sizeof *t);
    if (!t) return lmc_err_set(err, LMC_ERR_OOM, "--qlora --tp: out of memory");
    lmc_status s = lmc_tp_plan_heads(fc->num_heads, fc->num_kv_heads, tp->world, tp->rank, &t->heads, err);
    lmc_dist_slice(fc->intermediate_size, tp->rank, tp->world, &t->i0, &t->ni);
    if (!s && t->ni == 0)
        s = lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: intermediate_size %lld does not split in %d",
                        (long long)fc->intermediate_size, tp->world);
    struct lmc_config lc = *fc;
    lc.num_heads = t->heads.nq, lc.num_kv_heads = t->heads.nkv, lc.intermediate_size = t->ni;
    bool have = false;
    if (!s && !(s = lmc_tmodel_init_ext(shard, &lc, be, external_in_full, (void *)full, err))) have = true;
    if (!s && !(q->cuts = calloc((size_t)shard->n_params + 1, sizeof *q->cuts)))
        s = lmc_err_set(err, LMC_ERR_OOM, "--qlora --tp: out of memory");
    float *fbuf = NULL, *lbuf = NULL;
    for (int i = 0; !s && i < shard->n_params; i++) {
        struct lmc_tparam *p = &shard->params[i];
        int f = lmc_tmodel_find(full, p->name), dim;
        int64_t a0, n;
        if (f < 0) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "--qlora --tp: the full model has no tensor '%s'", p->name);
            break;
        }
        const struct lmc_tparam *fp = &full->params[f];
        lmc_tp_tensor_cut(p->name, &t->heads, fc->head_dim, t->i0, t->ni, &dim, &a0, &n);
        if (p->external) { /* the quantized weight, cut as it is */
            if (!fp->q || dim < 0) {
                s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--qlora --tp: '%s' is kept quantized but not split", p->name);
                break;
            }
            if ((s = lmc_tp_qweight_cut(&q->cuts[q->n], fp->q, dim == 1, a0, n, p->name, err))) break;
            p->q = &q->cuts[q->n++];
            continue;
        }
        int64_t rows = fp->shape[0], cols = fp->ndim == 2 ? fp->shape[1] : 1;
        free(fbuf), free(lbuf);
        fbuf = malloc(sizeof(float) * (size_t)fp->numel);
        lbuf = malloc(sizeof(float) * (size_t)p->numel);
        if (!fbuf || !lbuf) {
            s = lmc_err_set(err, LMC_ERR_OOM, "--qlora --tp: out of memory for '%s'", p->name);
            break;
        }
        if (p->transposed || (dim >= 0 && p->numel != (dim == 0 ? n * cols : rows * n))) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "--qlora --tp: '%s' shard shape does not match its cut", p->name);
            break;
        }
        if ((s = lmc_tmodel_download_param(full, full->w, f, fbuf, err))) break;
        if (dim == 0) lmc_tp_take_rows(lbuf, fbuf, cols, a0, n);
        else if (dim == 1) lmc_tp_take_cols(lbuf, fbuf, rows, cols, a0, n);
        else memcpy(lbuf, fbuf, sizeof(float) * (size_t)fp->numel);
        s = lmc_tmodel_upload_param(shard, shard->w, i, lbuf, err);
    }
    free(fbuf), free(lbuf);
    if (!s) {
        LMC_ASSERT(lmc_tmodel_bind(shard) == shard->n_params);
        t->g.c = tp;
        lmc_tp_tmodel_mark(shard, &t->g);
        t->c = tp;
        t->full = *fc;
        *out = t;
        return LMC_OK;
    }
    if (have) lmc_tmodel_free(shard);
    lmc_qlora_tp_free(q);
    free(t);
    return s;
}
