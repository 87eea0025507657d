/* lora_bank.c — per-row LoRA adapters for multi-adapter serving (see
 * lora_bank.h): uploads every adapter's A, B and diag(scale) per targeted
 * linear into a slot table and points the linears and the model at the
 * bank's row groups. */
#include "train/lora_bank.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

#define BANK_SCRATCH_ROWS 256

static void *bank_buf(struct lmc_lora_bank *b, const void *host, size_t bytes) {
    return lmc_lora_buf_new(b->be, &b->bufs, &b->n_bufs, &b->cap_bufs, host, bytes);
}

/* Whether adapter lo adapts slot sl of layer l; its module then. */
static const struct lmc_lora_module *find_mod(const struct lmc_lora *lo, int64_t l, int sl) {
    for (int i = 0; i < lo->n_mods; i++) {
        const struct lmc_lora_module *m = &lo->mods[i];
        if (m->layer == l && sl >= m->slot && sl < m->slot + m->parts) return m;
    }
    return NULL;
}

lmc_status lmc_lora_bank_bind(struct lmc_lora_bank *b, struct lmc_model *m,
                              const struct lmc_lora *const *los, const double *mul, int n,
                              const struct lmc_backend *be, lmc_err *err) {
    memset(b, 0, sizeof *b);
    b->be = be;
    const struct lmc_config *mc = &m->cfg;
    if (n < 1 || n > LMC_LORA_BANK_MAX)
        return lmc_err_set(err, LMC_ERR_ARG, "%d serving adapters: expected 1..%d", n, LMC_LORA_BANK_MAX);
    if (m->row_groups)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "the model already has serving adapters bound");
    if (lmc_model_seq_slot_bytes(m))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "per-request adapters on a recurrent model (%s) are not supported", mc->model_type);
    int64_t L = mc->num_layers, rmax = 0, omax = 0, n_lin = 0;
    for (int k = 0; k < n; k++) rmax = LMC_MAX(rmax, los[k]->cfg.r);
    for (int64_t l = 0; l < L; l++)
        for (int sl = 0; sl < LMC_L_N; sl++) {
            bool any = false;
            for (int k = 0; k < n; k++) {
                const struct lmc_lora_module *md = find_mod(los[k], l, sl);
                if (!md) continue;
                any = true;
                omax = LMC_MAX(omax, md->out / md->parts);
            }
            if (!any) continue;
            if (m->w.layers[l].lin[sl].split != LMC_SPLIT_NONE)
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "per-request adapters on tensor-parallel linears");
            n_lin++;
        }
    b->n = n;
    b->slots = calloc((size_t)(n_lin * n) + 1, sizeof *b->slots);
    b->groups.row0 = calloc((size_t)n, sizeof *b->groups.row0);
    b->groups.rows = calloc((size_t)n, sizeof *b->groups.rows);
    b->groups.id = calloc((size_t)n, sizeof *b->groups.id);
    b->groups.n_ids = n;
    float *scratch = NULL;
    if (b->slots && b->groups.row0 && b->groups.rows && b->groups.id)
        scratch = bank_buf(b, NULL, (size_t)(BANK_SCRATCH_ROWS * (2 * rmax + omax)) * sizeof(float));
    if (!scratch) goto oom;
    int64_t next = 0;
    for (int64_t l = 0; l < L; l++)
        for (int sl = 0; sl < LMC_L_N; sl++) {
            struct lmc_adapter *row = &b->slots[next * n];
            bool any = false;
            for (int k = 0; k < n; k++) {
                const struct lmc_lora *lo = los[k];
                const struct lmc_lora_module *md = find_mod(lo, l, sl);
                if (!md) continue;
                any = true;
                int64_t r = lo->cfg.r, po = md->out / md->parts, p = sl - md->slot;
                float sc = (float)(lmc_lora_scale(&lo->cfg) * mul[k]);
                float *diag = calloc((size_t)(r * r), sizeof *diag);
                if (!diag) goto oom;
                for (int64_t q = 0; q < r; q++) diag[q * r + q] = sc;
                void *da = bank_buf(b, md->a, (size_t)(r * md->in) * sizeof(float));
                void *db = bank_buf(b, md->b + p * po * r, (size_t)(po * r) * sizeof(float));
                void *ds = bank_buf(b, diag, (size_t)(r * r) * sizeof(float));
                free(diag);
                if (!da || !db || !ds) goto oom;
                row[k] = (struct lmc_adapter){.a = {LMC_DTYPE_F32, r, md->in, da},
                                              .b = {LMC_DTYPE_F32, po, r, db},
                                              .s = {LMC_DTYPE_F32, r, r, ds}, .scale = sc,
                                              .scratch = scratch, .scratch_rows = BANK_SCRATCH_ROWS};
            }
            if (!any) continue;
            struct lmc_linear *lin = &m->w.layers[l].lin[sl];
            lin->slots = row;
            lin->n_slots = n;
            lin->groups = &b->groups;
            next++;
        }
    m->row_groups = &b->groups;
    be->sync(be->ctx);
    return LMC_OK;
oom:
    lmc_lora_bank_unbind(b, m);
    return lmc_err_set(err, LMC_ERR_OOM, "serving adapters: not enough %s memory", be->name);
}

void lmc_lora_bank_unbind(struct lmc_lora_bank *b, struct lmc_model *m) {
    for (int64_t l = 0; m->w.layers && l < m->cfg.num_layers; l++)
        for (int sl = 0; sl < LMC_L_N; sl++) {
            struct lmc_linear *lin = &m->w.layers[l].lin[sl];
            if (lin->groups != &b->groups) continue;
            lin->slots = NULL;
            lin->n_slots = 0;
            lin->groups = NULL;
        }
    if (m->row_groups == &b->groups) m->row_groups = NULL;
    for (int i = 0; i < b->n_bufs; i++) b->be->free(b->be->ctx, b->bufs[i]);
    free(b->bufs);
    free(b->slots);
    free(b->groups.row0);
    free(b->groups.rows);
    free(b->groups.id);
    memset(b, 0, sizeof *b);
}
