/* lora_train.c — adapters as trainable parameters over a frozen base (see
 * lora_train.h): the parameter table extended, the arenas moved, the
 * views rebound with the base's gradient views cut, the adapters bound. */
#include "train/lora_train.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_ROWS 256

static void *own(struct lmc_lora_train *lt, size_t bytes) {
    void *p = lt->be->alloc(lt->be->ctx, bytes);
    if (p) lt->bufs[lt->n_bufs++] = p;
    return p;
}

static lmc_status add_param(struct lmc_tmodel *tm, const char *module, const char *which, int64_t rows,
                            int64_t cols, lmc_err *err) {
    struct lmc_tparam *p = &tm->params[tm->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "base_model.model.%s.%s.weight", module, which);
    p->ndim = 2;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->numel = rows * cols;
    p->role = LMC_ROLE_MATRIX;
    p->off = tm->numel;
    if (!lmc_add_ok(tm->numel, (p->numel + 15) / 16 * 16, &tm->numel) || tm->numel > ((int64_t)1 << 40))
        return lmc_err_set(err, LMC_ERR_ARG, "adapter too large (%s)", p->name);
    return LMC_OK;
}

lmc_status lmc_lora_train_attach(struct lmc_lora_train *lt, struct lmc_tmodel *tm, const struct lmc_lora *lo,
                                 lmc_err *err) {
    memset(lt, 0, sizeof *lt);
    const struct lmc_backend *be = tm->be;
    lt->be = be;
    LMC_ASSERT(tm->trainable_off == 0);
    int64_t r = lo->cfg.r, base = tm->numel, omax = 0, nparts = 0;
    int n_base = tm->n_params;
    for (int k = 0; k < lo->n_mods; k++) {
        omax = LMC_MAX(omax, lo->mods[k].out / lo->mods[k].parts);
        nparts += lo->mods[k].parts;
    }
    struct lmc_tparam *np = realloc(tm->params, (size_t)(n_base + 2 * lo->n_mods) * sizeof *np);
    lt->bufs = calloc((size_t)lo->n_mods + 2, sizeof *lt->bufs);
    lt->wad = calloc((size_t)nparts + 1, sizeof *lt->wad);
    lt->gad = calloc((size_t)nparts + 1, sizeof *lt->gad);
    if (np) tm->params = np;
    if (!np || !lt->bufs || !lt->wad || !lt->gad) goto oom;
    lmc_status s;
    lt->first_param = n_base;
    lt->n_mods = lo->n_mods;
    for (int k = 0; k < lo->n_mods; k++) {
        const struct lmc_lora_module *m = &lo->mods[k];
        if ((s = add_param(tm, m->module, "lora_A", r, m->in, err)) ||
            (s = add_param(tm, m->module, "lora_B", m->out, r, err))) {
            tm->n_params = n_base;
            tm->numel = base;
            lmc_lora_train_free(lt);
            return s;
        }
    }
    /* new arenas: the base copied, the adapter uploaded, padding zero */
    size_t bytes = (size_t)tm->numel * sizeof(float);
    float *w = be->alloc(be->ctx, bytes), *g = be->alloc(be->ctx, bytes);
    float *host = malloc((size_t)base * sizeof(float));
    if (!w || !g || !host) {
        if (w) be->free(be->ctx, w);
        if (g) be->free(be->ctx, g);
        free(host);
        tm->n_params = n_base;
        tm->numel = base;
        goto oom;
    }
    be->zero(be->ctx, w, bytes);
    be->zero(be->ctx, g, bytes);
    be->download(be->ctx, host, tm->w, (size_t)base * sizeof(float));
    be->upload(be->ctx, w, host, (size_t)base * sizeof(float));
    be->sync(be->ctx);
    free(host);
    be->free(be->ctx, tm->w);
    be->free(be->ctx, tm->g);
    tm->w = w;
    tm->g = g;
    for (int k = 0; k < lo->n_mods; k++) {
        const struct lmc_lora_module *m = &lo->mods[k];
        be->upload(be->ctx, w + tm->params[n_base + 2 * k].off, m->a, (size_t)(r * m->in) * sizeof(float));
        be->upload(be->ctx, w + tm->params[n_base + 2 * k + 1].off, m->b, (size_t)(m->out * r) * sizeof(float));
    }
    for (int i = 0; i < n_base; i++) tm->params[i].frozen = true;
    tm->trainable_off = base;
    LMC_ASSERT(lmc_tmodel_bind(tm) == n_base);
    /* the frozen base: no weight gradients for the linears and the head */
    for (int64_t l = 0; l < tm->cfg.num_layers; l++)
        for (int sl = 0; sl < LMC_L_N; sl++) {
            tm->G.layers[l].lin[sl].w.data = NULL;
            tm->G.layers[l].lin[sl].bias = NULL;
        }
    tm->G.head.w.data = NULL;
    float *scratch = own(lt, (size_t)(SCRATCH_ROWS * (2 * r + omax)) * sizeof(float));
    if (!scratch) goto oom;
    float sc = (float)lmc_lora_scale(&lo->cfg);
    float *diag = calloc((size_t)(r * r), sizeof *diag);
    if (!diag) goto oom;
    for (int64_t q = 0; q < r; q++) diag[q * r + q] = sc;
    int64_t next = 0;
    for (int k = 0; k < lo->n_mods; k++) {
        const struct lmc_lora_module *m = &lo->mods[k];
        float *ds = own(lt, (size_t)(r * r) * sizeof(float));
        if (!ds) {
            free(diag);
            goto oom;
        }
        be->upload(be->ctx, ds, diag, (size_t)(r * r) * sizeof(float));
        const struct lmc_tparam *pa = &tm->params[n_base + 2 * k], *pb = pa + 1;
        int64_t po = m->out / m->parts;
        for (int p = 0; p < m->parts; p++) {
            struct lmc_adapter a = {.a = {LMC_DTYPE_F32, r, m->in, w + pa->off},
                                    .b = {LMC_DTYPE_F32, po, r, w + pb->off + p * po * r},
                                    .s = {LMC_DTYPE_F32, r, r, ds}, .scale = sc, .scratch = scratch,
                                    .scratch_rows = SCRATCH_ROWS};
            lt->wad[next] = a;
            a.a.data = g + pa->off; /* GPT-2's c_attn parts share A: dA sums over them */
            a.b.data = g + pb->off + p * po * r;
            lt->gad[next] = a;
            struct lmc_linear *wl = &tm->W.layers[m->layer].lin[m->slot + p];
            struct lmc_linear *gl = &tm->G.layers[m->layer].lin[m->slot + p];
            LMC_ASSERT(wl->n_adapters == 0 && wl->w.rows == po && wl->w.cols == m->in);
            wl->adapters = &lt->wad[next];
            gl->adapters = &lt->gad[next];
            wl->n_adapters = gl->n_adapters = 1;
            next++;
        }
    }
    free(diag);
    be->sync(be->ctx);
    return LMC_OK;
oom:
    lmc_lora_train_free(lt);
    return lmc_err_set(err, LMC_ERR_OOM, "LoRA training state: out of memory");
}

lmc_status lmc_lora_train_read(const struct lmc_lora_train *lt, const struct lmc_tmodel *tm, struct lmc_lora *lo,
                               lmc_err *err) {
    LMC_ASSERT(lo->n_mods == lt->n_mods);
    lmc_status s = LMC_OK;
    for (int k = 0; k < lo->n_mods && !s; k++) {
        int i = lt->first_param + 2 * k;
        if (!(s = lmc_tmodel_download_param(tm, tm->w, i, lo->mods[k].a, err)))
            s = lmc_tmodel_download_param(tm, tm->w, i + 1, lo->mods[k].b, err);
    }
    return s;
}

void lmc_lora_train_free(struct lmc_lora_train *lt) {
    for (int i = 0; i < lt->n_bufs; i++) lt->be->free(lt->be->ctx, lt->bufs[i]);
    free(lt->bufs);
    free(lt->wad);
    free(lt->gad);
    memset(lt, 0, sizeof *lt);
}
