/* distill.c — knowledge distillation's head (see distill.h): the teacher's
 * inference forward a chunk of a sequence at a time (its KV cache carries
 * the earlier chunks), its logits in the teacher's activation scratch, the
 * student's logits of the same rows, the backend's soft_xent and the
 * head's backward through matmul_bwd. */
#include "model/distill.h"

#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lmc_status lmc_distill_init(struct lmc_distill *d, const struct lmc_model *teacher, const struct lmc_config *student,
                            const struct lmc_backend *be, int64_t B, int64_t T, float alpha, float temp,
                            lmc_err *err) {
    memset(d, 0, sizeof *d);
    const int64_t V = student->vocab_size;
    if (teacher->cfg.vocab_size != V)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "distillation: the teacher's vocabulary (%lld tokens) differs from the student's (%lld); "
                           "the two need the same tokenizer",
                           (long long)teacher->cfg.vocab_size, (long long)V);
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return lmc_err_set(err, LMC_ERR_ARG, "distillation: alpha %g is outside [0, 1]", (double)alpha);
    if (!(temp > 0.0f) || !isfinite(temp))
        return lmc_err_set(err, LMC_ERR_ARG, "distillation: temperature %g is not positive", (double)temp);
    if (!be->soft_xent || !be->matmul_bwd)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "distillation: backend %s has no soft_xent op", be->name);
    if (teacher->w.pos_emb.data && T > teacher->w.pos_emb.rows)
        return lmc_err_set(err, LMC_ERR_ARG, "distillation: sequences of %lld tokens exceed the teacher's %lld positions",
                           (long long)T, (long long)teacher->w.pos_emb.rows);
    d->teacher = teacher;
    d->be = be;
    d->alpha = alpha;
    d->temp = temp;
    d->V = V;
    d->max_len = T;
    d->chunk = LMC_MAX(1, LMC_MIN(T, LMC_DISTILL_CHUNK_FLOATS / V));
    d->rows = B * T;
    lmc_status st = lmc_acts_init(&d->acts, teacher, be, d->chunk, d->chunk, err);
    if (st) return st;
    if ((st = lmc_kv_init(&d->kv, teacher, be, T, err))) {
        lmc_acts_free(&d->acts);
        return st;
    }
    d->slog = be->alloc(be->ctx, sizeof(float) * (size_t)(d->chunk * V));
    d->ce = be->alloc(be->ctx, sizeof(float) * (size_t)(3 * d->rows));
    d->host = malloc(sizeof(float) * (size_t)(3 * d->rows));
    if (!d->slog || !d->ce || !d->host) {
        lmc_distill_free(d);
        return lmc_err_set(err, LMC_ERR_OOM, "distillation: out of memory for %lld x %lld logits",
                           (long long)d->chunk, (long long)V);
    }
    d->kl = d->ce + d->rows;
    d->agree = d->kl + d->rows;
    return LMC_OK;
}

void lmc_distill_free(struct lmc_distill *d) {
    if (!d->be) return;
    lmc_acts_free(&d->acts);
    lmc_kv_free(&d->kv);
    if (d->slog) d->be->free(d->be->ctx, d->slog);
    if (d->ce) d->be->free(d->be->ctx, d->ce);
    free(d->host);
    memset(d, 0, sizeof *d);
}

void lmc_distill_reset(struct lmc_distill *d) {
    d->ce_sum = d->kl_sum = d->agree_sum = 0;
    d->count = 0;
}

lmc_status lmc_distill_head(struct lmc_distill *d, struct lmc_tmodel *tm, struct lmc_tacts *a,
                            const int32_t *inputs, const int32_t *targets, bool backward, float dscale,
                            double *loss_sum, int64_t *count, lmc_err *err) {
    const struct lmc_backend *be = d->be;
    const int64_t M = a->B * a->T, C = tm->cfg.hidden_size, V = d->V;
    LMC_ASSERT(M <= d->rows && V == tm->cfg.vocab_size);
    const struct lmc_mat *W = &tm->W.head.w;
    float *dW = backward ? (float *)tm->G.head.w.data : NULL;
    const bool plain = d->alpha == 0.0f; /* the plain step's loss and gradient; the teacher measured */
    if (plain)
        be->classifier_xent(be->ctx, a->loss, backward ? a->dh : NULL, dW, a->hf, W, a->targets, M, dscale);
    const int64_t n_seq = a->segs ? a->n_segs : a->B;
    for (int64_t i = 0; i < n_seq; i++) {
        const int64_t s0 = a->segs ? a->segs[2 * i] : i * a->T, len = a->segs ? a->segs[2 * i + 1] : a->T;
        if (len > d->max_len)
            return lmc_err_set(err, LMC_ERR_ARG, "distillation: a sequence of %lld tokens exceeds %lld",
                               (long long)len, (long long)d->max_len);
        for (int64_t off = 0, n; off < len; off += n) {
            n = LMC_MIN(d->chunk, len - off);
            const int64_t r0 = s0 + off;
            if (off == 0 && d->kv.state) /* a recurrent teacher (Mamba) starts each sequence from a zero state */
                be->zero(be->ctx, d->kv.state, d->kv.state_bytes);
            /* the teacher: its final residual rows in acts.x (no logits to the host), then its head */
            lmc_status st = lmc_model_forward(d->teacher, be, &d->acts, &d->kv, inputs + r0, n, off, NULL, false, err);
            if (st) return st;
            lmc_model_logits(d->teacher, be, &d->acts, d->acts.x, n);
            be->matmul(be->ctx, d->slog, a->hf + r0 * C, n, W, NULL);
            const int grad = backward && !plain;
            be->soft_xent(be->ctx, d->ce + r0, d->kl + r0, d->agree + r0, d->slog, d->acts.logits, a->targets + r0,
                          n, V, d->alpha, d->temp, dscale, grad);
            if (grad) be->matmul_bwd(be->ctx, a->dh + r0 * C, dW, NULL, d->slog, a->hf + r0 * C, n, W, 0);
        }
    }
    float *ce = d->host, *kl = ce + M, *ag = kl + M;
    be->download(be->ctx, ce, d->ce, sizeof(float) * (size_t)M);
    be->download(be->ctx, kl, d->kl, sizeof(float) * (size_t)M);
    be->download(be->ctx, ag, d->agree, sizeof(float) * (size_t)M);
    double sum = 0;
    int64_t cnt = 0;
    if (plain) { /* as lmc_tmodel_step sums the plain head's losses */
        float *loss = a->loss_host;
        be->download(be->ctx, loss, a->loss, (size_t)M * sizeof(float));
        for (int64_t i = 0; i < M; i++)
            if (targets[i] >= 0) sum += loss[i];
    }
    const double w_ce = 1.0 - (double)d->alpha, w_kl = (double)d->alpha * (double)d->temp * (double)d->temp;
    for (int64_t i = 0; i < M; i++) {
        if (targets[i] < 0) continue;
        if (!plain) sum += w_ce * (double)ce[i] + w_kl * (double)kl[i];
        d->ce_sum += ce[i];
        d->kl_sum += kl[i];
        d->agree_sum += ag[i];
        cnt++;
    }
    d->count += cnt;
    *loss_sum = sum;
    *count = cnt;
    return LMC_OK;
}
