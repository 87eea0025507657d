/* tp.c — tensor-parallel linears, head planning, vocabulary-parallel
 * embedding and cross-entropy (see tp.h). */
#include "dist/tp.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lmc_status lmc_tp_plan_heads(int64_t n_heads, int64_t n_kv, int T, int rank, struct lmc_tp_heads *p,
                             lmc_err *err) {
    memset(p, 0, sizeof *p);
    if (T < 1 || rank < 0 || rank >= T || n_heads <= 0 || n_kv <= 0 || n_heads % n_kv)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: bad heads %lld / kv %lld for rank %d of %d",
                           (long long)n_heads, (long long)n_kv, rank, T);
    if (n_heads % T)
        return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: %lld attention heads do not split in %d",
                           (long long)n_heads, T);
    p->nq = n_heads / T;
    p->q0 = p->nq * rank;
    if (n_kv >= T) {
        if (n_kv % T)
            return lmc_err_set(err, LMC_ERR_ARG, "tensor parallel: %lld KV heads do not split in %d",
                               (long long)n_kv, T);
        p->nkv = n_kv / T;
        p->kv0 = p->nkv * rank;
        p->kv_replicas = 1;
    } else {
        if (T % n_kv)
            return lmc_err_set(err, LMC_ERR_ARG,
                               "tensor parallel: %d ranks are not a multiple of %lld KV heads", T,
                               (long long)n_kv);
        p->nkv = 1;
        p->kv0 = p->q0 / (n_heads / n_kv);
        p->kv_replicas = T / (int)n_kv;
    }
    return LMC_OK;
}

lmc_status lmc_tp_sum_replicated(const struct lmc_tp *tp, const struct lmc_tp_heads *p, int64_t n_kv,
                                 float *dw, int64_t head_floats, lmc_err *err) {
    if (p->kv_replicas <= 1 || tp->c->world == 1) return LMC_OK;
    float *all = calloc((size_t)(n_kv * head_floats), sizeof(float));
    if (!all) return lmc_err_set(err, LMC_ERR_OOM, "tensor parallel: out of memory");
    memcpy(all + p->kv0 * head_floats, dw, sizeof(float) * (size_t)head_floats);
    lmc_status st = tp->c->all_reduce(tp->c, all, n_kv * head_floats, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
    if (!st) memcpy(dw, all + p->kv0 * head_floats, sizeof(float) * (size_t)head_floats);
    free(all);
    return st;
}

void lmc_tp_take_rows(float *dst, const float *src, int64_t cols, int64_t r0, int64_t nr) {
    memcpy(dst, src + r0 * cols, sizeof(float) * (size_t)(nr * cols));
}

void lmc_tp_take_cols(float *dst, const float *src, int64_t rows, int64_t cols, int64_t c0,
                      int64_t nc) {
    for (int64_t i = 0; i < rows; i++) memcpy(dst + i * nc, src + i * cols + c0, sizeof(float) * (size_t)nc);
}

void lmc_tp_col_fwd(const struct lmc_tp *tp, float *y, const float *x, int64_t M,
                    const struct lmc_mat *w, const float *bias) {
    tp->be->matmul(tp->be->ctx, y, x, M, w, bias);
}

lmc_status lmc_tp_col_bwd(const struct lmc_tp *tp, float *dx, float *dw, float *db, const float *dy,
                          const float *x, int64_t M, const struct lmc_mat *w, lmc_err *err) {
    tp->be->matmul_bwd(tp->be->ctx, dx, dw, db, dy, x, M, w, 0);
    if (!dx || tp->c->world == 1) return LMC_OK;
    return tp->c->all_reduce(tp->c, dx, M * w->cols, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
}

lmc_status lmc_tp_row_fwd(const struct lmc_tp *tp, float *y, const float *x, int64_t M,
                          const struct lmc_mat *w, const float *bias, lmc_err *err) {
    /* the bias joins rank 0's partial sum, so it is added once */
    tp->be->matmul(tp->be->ctx, y, x, M, w, tp->c->rank == 0 ? bias : NULL);
    if (tp->c->world == 1) return LMC_OK;
    return tp->c->all_reduce(tp->c, y, M * w->rows, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
}

void lmc_tp_row_bwd(const struct lmc_tp *tp, float *dx, float *dw, float *db, const float *dy,
                    const float *x, int64_t M, const struct lmc_mat *w) {
    tp->be->matmul_bwd(tp->be->ctx, dx, dw, db, dy, x, M, w, 0);
}

lmc_status lmc_tp_embed_fwd(const struct lmc_tp *tp, float *x, const float *table, int64_t v0,
                            int64_t vr, int64_t V, int64_t C, const int32_t *ids, int64_t n,
                            lmc_err *err) {
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "embedding: token id %d at position %lld is outside the vocabulary of %lld",
                               ids[i], (long long)i, (long long)V);
        int64_t r = ids[i] - v0;
        if (r >= 0 && r < vr) memcpy(x + i * C, table + r * C, sizeof(float) * (size_t)C);
        else memset(x + i * C, 0, sizeof(float) * (size_t)C);
    }
    if (tp->c->world == 1) return LMC_OK;
    return tp->c->all_reduce(tp->c, x, n * C, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
}

void lmc_tp_embed_bwd(float *dtable, int64_t v0, int64_t vr, int64_t C, const int32_t *ids,
                      int64_t n, const float *dx) {
    for (int64_t i = 0; i < n; i++) {
        int64_t r = ids[i] - v0;
        if (r < 0 || r >= vr) continue;
        for (int64_t e = 0; e < C; e++) dtable[r * C + e] += dx[i * C + e];
    }
}

lmc_status lmc_tp_xent(const struct lmc_tp *tp, double *loss, float *dlogits, const float *logits,
                       int64_t M, int64_t v0, int64_t vr, int64_t V, const int32_t *targets,
                       lmc_err *err) {
    struct lmc_comm *c = tp->c;
    for (int64_t i = 0; i < M; i++)
        if (targets[i] >= V)
            return lmc_err_set(err, LMC_ERR_ARG, "cross-entropy: target %d at row %lld is outside the vocabulary of %lld",
                               targets[i], (long long)i, (long long)V);
    float *mx = malloc(sizeof(float) * (size_t)(M + 1));
    double *sum = malloc(sizeof(double) * (size_t)(2 * M + 1)), *tgt = sum + M;
    if (!mx || !sum) {
        free(mx), free(sum);
        return lmc_err_set(err, LMC_ERR_OOM, "cross-entropy: out of memory");
    }
    for (int64_t i = 0; i < M; i++) {
        float m = -INFINITY;
        for (int64_t j = 0; j < vr; j++) m = fmaxf(m, logits[i * vr + j]);
        mx[i] = m;
    }
    lmc_status st = c->world > 1 ? c->all_reduce(c, mx, M, LMC_DTYPE_F32, LMC_REDUCE_MAX, err) : LMC_OK;
    for (int64_t i = 0; !st && i < M; i++) {
        double s = 0;
        for (int64_t j = 0; j < vr; j++) s += exp((double)logits[i * vr + j] - mx[i]);
        sum[i] = s;
        int64_t t = targets[i] - v0;
        tgt[i] = targets[i] >= 0 && t >= 0 && t < vr ? (double)logits[i * vr + t] : 0.0;
    }
    if (!st && c->world > 1) st = c->all_reduce(c, sum, 2 * M, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    if (!st) {
        double total = 0;
        int64_t rows = 0;
        for (int64_t i = 0; i < M; i++)
            if (targets[i] >= 0) total += log(sum[i]) + mx[i] - tgt[i], rows++;
        *loss = rows ? total / (double)rows : 0.0;
        if (dlogits)
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < vr; j++) {
                    float *d = &dlogits[i * vr + j];
                    if (targets[i] < 0 || !rows) {
                        *d = 0;
                        continue;
                    }
                    double p = exp((double)logits[i * vr + j] - mx[i]) / sum[i];
                    *d = (float)((p - (targets[i] - v0 == j ? 1.0 : 0.0)) / (double)rows);
                }
    }
    free(mx), free(sum);
    return st;
}

lmc_status lmc_tp_vocab_gather(struct lmc_comm *c, float *logits, int64_t rows, int64_t V, lmc_err *err) {
    int W = c->world;
    if (W == 1) return LMC_OK;
    int64_t vmax = (V + W - 1) / W, v0, nv;
    float *send = malloc(sizeof(float) * (size_t)(rows * vmax));
    float *recv = malloc(sizeof(float) * (size_t)(rows * vmax) * (size_t)W);
    if (!send || !recv) {
        free(send), free(recv);
        return lmc_err_set(err, LMC_ERR_OOM, "vocabulary-parallel logits (%lld x %lld): out of memory",
                           (long long)rows, (long long)V);
    }
    lmc_dist_slice(V, c->rank, W, &v0, &nv);
    memset(send, 0, sizeof(float) * (size_t)(rows * vmax));
    for (int64_t i = 0; i < rows; i++) memcpy(send + i * vmax, logits + i * nv, sizeof(float) * (size_t)nv);
    lmc_status s = c->all_gather(c, send, recv, rows * vmax, LMC_DTYPE_F32, err);
    for (int r = 0; !s && r < W; r++) {
        lmc_dist_slice(V, r, W, &v0, &nv);
        for (int64_t i = 0; i < rows; i++)
            memcpy(logits + i * V + v0, recv + ((int64_t)r * rows + i) * vmax, sizeof(float) * (size_t)nv);
    }
    free(send), free(recv);
    return s;
}
