/* lora_train.c — adapters as trainable parameters over a frozen base (see
 * lora_train.h): the parameter table extended, the arenas moved, the
 * views rebound with the base's gradient views cut, the adapters bound. */
#include "train/lora_train.h"
#include "core/core.h"
#include "core/rng.h"
#include "dist/comm.h"
#include "io/safetensors.h"
#include "model/arch.h"
#include "model/block.h"

#include <cjson/cJSON.h>
#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_ROWS 256

static void *own(struct lmc_lora_train *lt, size_t bytes) {
    void *p = lt->be->alloc(lt->be->ctx, bytes);
    if (p) lt->bufs[lt->n_bufs++] = p, lt->buf_bytes += bytes;
    return p;
}

static lmc_status add_param(struct lmc_tmodel *tm, const char *module, int64_t layer, const char *which,
                            int64_t rows, int64_t cols, lmc_err *err) {
    struct lmc_tparam *p = &tm->params[tm->n_params++];
    memset(p, 0, sizeof *p);
    p->part = (int)layer + 1; /* its layer's (lmc_tmodel_hooks: data parallel reduces it when the layer's backward ends) */
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
    const struct lmc_architecture *ar = tm->arch;
    if (ar->mixer->no_adapters || (ar->ffn && ar->ffn->no_adapters))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "LoRA training of a %s model: its %s blocks' projections take no adapters (use --full)",
                           tm->cfg.model_type, ar->mixer->no_adapters ? ar->mixer->name : ar->ffn->name);
    const struct lmc_backend *be = tm->be;
    lt->be = be;
    LMC_ASSERT(tm->trainable_off == 0);
    int64_t r = lo->cfg.r, base = tm->numel, omax = 0, imax = 0, nparts = 0;
    int n_base = tm->n_params;
    for (int k = 0; k < lo->n_mods; k++) {
        omax = LMC_MAX(omax, lo->mods[k].out / lo->mods[k].parts);
        imax = LMC_MAX(imax, lo->mods[k].in);
        nparts += lo->mods[k].parts;
    }
    struct lmc_tparam *np = realloc(tm->params, (size_t)(n_base + 2 * lo->n_mods) * sizeof *np);
    lt->bufs = calloc((size_t)lo->n_mods + 3, sizeof *lt->bufs);
    lt->wad = calloc((size_t)nparts + 1, sizeof *lt->wad);
    lt->gad = calloc((size_t)nparts + 1, sizeof *lt->gad);
    lt->ad_a = calloc((size_t)nparts + 1, sizeof *lt->ad_a);
    lt->ad_boff = calloc((size_t)nparts + 1, sizeof *lt->ad_boff);
    if (np) tm->params = np;
    if (!np || !lt->bufs || !lt->wad || !lt->gad || !lt->ad_a || !lt->ad_boff) goto oom;
    lmc_status s;
    lt->first_param = n_base;
    lt->n_mods = lo->n_mods;
    for (int k = 0; k < lo->n_mods; k++) {
        const struct lmc_lora_module *m = &lo->mods[k];
        if ((s = add_param(tm, m->module, m->layer, "lora_A", r, m->in, err)) ||
            (s = add_param(tm, m->module, m->layer, "lora_B", m->out, r, err))) {
            tm->n_params = n_base;
            tm->numel = base;
            lmc_lora_train_free(lt);
            return s;
        }
    }
    /* new arenas: the base copied, the adapter uploaded, padding zero; the
     * gradient arena holds only the adapter's part (g_off = base). The old
     * arenas go first (the base waits on the host), so the backend never
     * holds both: on a GPU the old gradient arena alone is the base's size */
    size_t bytes = (size_t)tm->numel * sizeof(float), gbytes = (size_t)(tm->numel - base) * sizeof(float);
    float *host = malloc((size_t)base * sizeof(float) + 1);
    if (!host) {
        tm->n_params = n_base;
        tm->numel = base;
        goto oom;
    }
    be->download(be->ctx, host, tm->w, (size_t)base * sizeof(float));
    be->sync(be->ctx);
    be->free(be->ctx, tm->w);
    be->free(be->ctx, tm->g);
    tm->w = tm->g = NULL;
    float *w = be->alloc(be->ctx, bytes), *g = be->alloc(be->ctx, gbytes);
    if (!w || !g) {
        if (w) be->free(be->ctx, w);
        if (g) be->free(be->ctx, g);
        free(host);
        tm->n_params = n_base;
        tm->numel = base;
        goto oom;
    }
    be->zero(be->ctx, w, bytes);
    be->zero(be->ctx, g, gbytes);
    be->upload(be->ctx, w, host, (size_t)base * sizeof(float));
    be->sync(be->ctx);
    free(host);
    tm->w = w;
    tm->g = g;
    for (int k = 0; k < lo->n_mods; k++) {
        const struct lmc_lora_module *m = &lo->mods[k];
        be->upload(be->ctx, w + tm->params[n_base + 2 * k].off, m->a, (size_t)(r * m->in) * sizeof(float));
        be->upload(be->ctx, w + tm->params[n_base + 2 * k + 1].off, m->b, (size_t)(m->out * r) * sizeof(float));
    }
    int64_t sink_n = 16;
    for (int i = 0; i < n_base; i++) {
        tm->params[i].frozen = true;
        if (tm->params[i].role != LMC_ROLE_MATRIX && tm->params[i].role != LMC_ROLE_EMBED)
            sink_n = LMC_MAX(sink_n, tm->params[i].numel);
    }
    tm->trainable_off = tm->g_off = base;
    LMC_ASSERT(lmc_tmodel_bind(tm) == n_base);
    /* the frozen base: no weight gradients for the linears, the head and
     * the embeddings (views left NULL: the step skips the embeddings'
     * backward); the norms' backward ops still write theirs: into one
     * scratch (the largest norm or bias), never read or cleared */
    float *sink = own(lt, (size_t)sink_n * sizeof(float));
    if (!sink) goto oom;
    be->zero(be->ctx, sink, (size_t)sink_n * sizeof(float));
    struct lmc_weights *Wv = &tm->W, *Gv = &tm->G;
    Gv->tok_emb = Wv->tok_emb;
    Gv->tok_emb.data = NULL;
    Gv->pos_emb = Wv->pos_emb;
    Gv->pos_emb.data = NULL;
    Gv->norm_f = sink;
    Gv->norm_f_b = Wv->norm_f_b ? sink : NULL;
    Gv->head.w.data = NULL;
    for (int64_t l = 0; l < tm->cfg.num_layers; l++)
        for (int v = 0; v < LMC_V_N; v++) {
            Gv->layers[l].vec[v] = Wv->layers[l].vec[v] ? sink : NULL;
            Gv->layers[l].vec_n[v] = Wv->layers[l].vec_n[v];
        }
    /* with dropout the scratch also holds the dropped input (linear.h) */
    int64_t per_row = 2 * r + omax + (lo->cfg.dropout > 0 ? imax : 0);
    lt->scratch_buf = lt->n_bufs;
    lt->scratch_per_row = per_row;
    float *scratch = own(lt, (size_t)(SCRATCH_ROWS * per_row) * sizeof(float));
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
            a.dropout = (float)lo->cfg.dropout;
            lt->wad[next] = a;
            a.dropout = 0; /* the gradient views only carry dA / dB */
            a.a.data = lmc_tmodel_grad(tm, pa); /* GPT-2's c_attn parts share A: dA sums over them */
            a.b.data = lmc_tmodel_grad(tm, pb) + p * po * r;
            lt->gad[next] = a;
            lt->ad_a[next] = n_base + 2 * k;
            lt->ad_boff[next] = p * po * r;
            struct lmc_linear *wl = lmc_lora_module_linear(&tm->W, m, p);
            struct lmc_linear *gl = lmc_lora_module_linear(&tm->G, m, p);
            LMC_ASSERT(wl->n_adapters == 0 && wl->w.rows == po && wl->w.cols == m->in);
            wl->adapters = &lt->wad[next];
            gl->adapters = &lt->gad[next];
            wl->n_adapters = gl->n_adapters = 1;
            next++;
        }
    }
    free(diag);
    lt->n_ad = (int)next;
    lt->dropout = (float)lo->cfg.dropout;
    lmc_lora_train_dropout(lt, true, 0);
    be->sync(be->ctx);
    return LMC_OK;
oom:
    lmc_lora_train_free(lt);
    return lmc_err_set(err, LMC_ERR_OOM, "LoRA training state: out of memory");
}

lmc_status lmc_lora_train_set_scratch_rows(struct lmc_lora_train *lt, int64_t rows, lmc_err *err) {
    if (rows < 1 || rows > ((int64_t)1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "LoRA scratch: %lld rows", (long long)rows);
    if (!lt->n_ad || lt->wad[0].scratch_rows == rows) return LMC_OK;
    const struct lmc_backend *be = lt->be;
    size_t old = (size_t)(lt->wad[0].scratch_rows * lt->scratch_per_row) * sizeof(float);
    size_t bytes = (size_t)(rows * lt->scratch_per_row) * sizeof(float);
    float *p = be->alloc(be->ctx, bytes);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "LoRA scratch of %lld rows: out of memory", (long long)rows);
    be->sync(be->ctx); /* nothing still reads the old one */
    be->free(be->ctx, lt->bufs[lt->scratch_buf]);
    lt->bufs[lt->scratch_buf] = p;
    lt->buf_bytes = lt->buf_bytes - old + bytes;
    for (int i = 0; i < lt->n_ad; i++) {
        lt->wad[i].scratch = lt->gad[i].scratch = p;
        lt->wad[i].scratch_rows = lt->gad[i].scratch_rows = rows;
    }
    return LMC_OK;
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

void lmc_lora_train_dropout(struct lmc_lora_train *lt, bool train, uint64_t seed) {
    for (int i = 0; i < lt->n_ad; i++) {
        lt->wad[i].dropout = train ? lt->dropout : 0.0f;
        uint64_t s = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i; /* a different mask per adapted linear */
        lt->wad[i].drop_seed = lmc_rng_next(&s);
    }
}

void lmc_lora_train_bind_part(void *user, const struct lmc_tmodel *tm, int part, const float *w, float *g,
                              int64_t base) {
    struct lmc_lora_train *lt = user;
    for (int i = 0; i < lt->n_ad; i++) {
        const struct lmc_tparam *pa = &tm->params[lt->ad_a[i]], *pb = pa + 1;
        if (pa->part != part) continue;
        LMC_ASSERT(pb->part == part && pa->off >= base && pb->off >= base);
        if (w) {
            lt->wad[i].a.data = w + (pa->off - base);
            lt->wad[i].b.data = w + (pb->off - base) + lt->ad_boff[i];
        }
        if (g) {
            lt->gad[i].a.data = g + (pa->off - base);
            lt->gad[i].b.data = g + (pb->off - base) + lt->ad_boff[i];
        }
    }
}

void lmc_lora_train_free(struct lmc_lora_train *lt) {
    for (int i = 0; i < lt->n_bufs; i++) lt->be->free(lt->be->ctx, lt->bufs[i]);
    free(lt->ad_a);
    free(lt->ad_boff);
    free(lt->bufs);
    free(lt->wad);
    free(lt->gad);
    memset(lt, 0, sizeof *lt);
}

/* ---------------- checkpoints ---------------- */

static lmc_status write_state(const struct lmc_trainer *tr, int64_t n, const char *dir, int64_t epoch, int64_t next,
                              lmc_err *err);

lmc_status lmc_lora_ckpt_write_adamw(const struct lmc_trainer *tr, const float *m, const float *v, int64_t n,
                                     const char *dir, int64_t epoch, int64_t next, lmc_err *err) {
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct lmc_st_write_tensor t[2] = {{"adamw.m", LMC_DTYPE_F32, 1, {n}, m}, {"adamw.v", LMC_DTYPE_F32, 1, {n}, v}};
    lmc_status s = lmc_st_write(tmp, t, 2, NULL, 0, err);
    if (!s && rename(tmp, path) != 0) s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return s ? s : write_state(tr, n, dir, epoch, next, err);
}

lmc_status lmc_lora_ckpt_save(const struct lmc_trainer *tr, const struct lmc_lora_train *lt, struct lmc_lora *lo,
                              const char *dir, const char *tok_dir, int64_t epoch, int64_t next, lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    lmc_status s = lmc_lora_train_read(lt, tm, lo, err);
    if (!s) s = lmc_lora_save(lo, dir, &tm->cfg, tok_dir, err);
    if (s) return s;
    int64_t n = tm->numel - tm->trainable_off;
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (tr->zero && !tr->have_opt) { /* ZeRO: the moments are each rank's shard in ../zero (lmc_trainer_dist_save) */
        const char *zmeta[] = {"lmc.optimizer", "zero", "lmc.zero.dir", "../zero"};
        s = lmc_st_write(tmp, NULL, 0, zmeta, 2, err);
    } else if (tr->have_opt) /* another optimizer kind: its named tensors (lmc_optim_save) */
        s = lmc_optim_save(&tr->opt, tmp, err);
    else {
        float *mv = malloc((size_t)n * 2 * sizeof(float));
        if (!mv) return lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
        tr->be->download(tr->be->ctx, mv, tr->m, (size_t)n * sizeof(float));
        tr->be->download(tr->be->ctx, mv + n, tr->v, (size_t)n * sizeof(float));
        struct lmc_st_write_tensor t[2] = {{"adamw.m", LMC_DTYPE_F32, 1, {n}, mv},
                                           {"adamw.v", LMC_DTYPE_F32, 1, {n}, mv + n}};
        s = lmc_st_write(tmp, t, 2, NULL, 0, err);
        free(mv);
    }
    if (!s && rename(tmp, path) != 0) s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (s) return s;
    return write_state(tr, n, dir, epoch, next, err);
}

/* trainer_state.json, written last (n trainable floats; world: the trainer's data-parallel ranks) */
static lmc_status write_state(const struct lmc_trainer *tr, int64_t n, const char *dir, int64_t epoch, int64_t next,
                              lmc_err *err) {
    char path[4200], state[512], zs[96] = "";
    if (tr->zero) snprintf(zs, sizeof zs, ", \"zero\": {\"stage\": %d, \"world\": %d}", tr->zero_stage, tr->comm->world);
    snprintf(state, sizeof state,
             "{\"step\": %lld, \"batch\": %lld, \"seq_len\": %lld, \"accum\": %lld, \"epoch\": %lld, "
             "\"example\": %lld, \"trainable\": %lld, \"world\": %d%s}\n",
             (long long)tr->step, (long long)tr->o.B, (long long)tr->o.T, (long long)tr->o.accum, (long long)epoch,
             (long long)next, (long long)n, tr->comm ? tr->comm->world : 1, zs);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    return lmc_file_write_atomic(path, state, strlen(state), err);
}

static int64_t jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15 ? (int64_t)v->valuedouble : -1;
}

lmc_status lmc_lora_ckpt_load_state(struct lmc_trainer *tr, const char *dir, int64_t *epoch, int64_t *next,
                                    lmc_err *err) {
    return lmc_lora_ckpt_load_state_cut(tr, dir, tr->tm.numel - tr->tm.trainable_off, NULL, NULL, epoch, next, err);
}

lmc_status lmc_lora_ckpt_load_state_cut(struct lmc_trainer *tr, const char *dir, int64_t want,
                                        void (*cut)(void *user, float *local, const float *whole), void *user,
                                        int64_t *epoch, int64_t *next, lmc_err *err) {
    char path[4200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    lmc_status s = lmc_file_read(path, 1 << 20, &text, &len, err);
    if (s) return s;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    int64_t step = jint(o, "step"), B = jint(o, "batch"), T = jint(o, "seq_len"), ac = jint(o, "accum");
    int64_t n = jint(o, "trainable"), sw = cJSON_GetObjectItemCaseSensitive(o, "world") ? jint(o, "world") : 1;
    *epoch = jint(o, "epoch");
    *next = jint(o, "example");
    cJSON_Delete(o);
    int64_t w = tr->comm ? tr->comm->world : 1;
    if (step < 0 || *epoch < 0 || *next < 0 || n < 0 || sw < 1)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected step, epoch, example, trainable and world >= 1", path);
    /* the batches of B examples per step (accumulation x ranks) must be the same, not how they are split */
    if (B != tr->o.B || T != tr->o.T || ac * sw != tr->o.accum * w || n != want)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with batch %lld x %lld x %lld accum on %lld rank(s) and %lld "
                           "trainable floats; resumed with %lld x %lld x %lld on %lld and %lld", path, (long long)B,
                           (long long)T, (long long)ac, (long long)sw, (long long)n, (long long)tr->o.B,
                           (long long)tr->o.T, (long long)tr->o.accum, (long long)w, (long long)want);
    struct lmc_st st;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if ((s = lmc_st_open_file(&st, path, err))) return s;
    const char *kind = lmc_st_meta_get(&st, "lmc.optimizer");
    bool sharded = kind && !strcmp(kind, "zero");
    if (cut && (sharded || tr->zero || tr->have_opt || kind)) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_ARG, "%s: a tensor-parallel adapter resumes AdamW state without ZeRO only", path);
    }
    if (sharded || tr->zero) { /* ZeRO: each rank's shard of the adapter and its moments in DIR/../zero */
        char zdir[4200];
        if (!sharded || !tr->zero || tr->have_opt)
            s = lmc_err_set(err, LMC_ERR_ARG, sharded ? "%s: the adapter's state is sharded (a --zero 1-3 run): "
                            "resume it under mpirun (or torchrun variables) with --zero 1, 2 or 3"
                            : "%s: a one-process or --zero 0 adapter checkpoint: resume it with --zero 0", path);
        else if (snprintf(zdir, sizeof zdir, "%s/../zero", dir) >= (int)sizeof zdir)
            s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        else
            s = lmc_trainer_dist_load(tr, zdir, step, err);
        lmc_st_free(&st);
        if (!s) tr->step = step;
        return s;
    }
    if (tr->have_opt || kind) { /* another kind: lmc_optim_load_st checks kind and settings */
        s = tr->have_opt ? lmc_optim_load_st(&tr->opt, &st, path, err)
                         : lmc_err_set(err, LMC_ERR_FORMAT, "%s: optimizer state of '%s', expected adamw (give "
                                       "--optim %s)", path, kind, kind);
        lmc_st_free(&st);
        if (!s) tr->step = step;
        return s;
    }
    const struct lmc_st_tensor *m = lmc_st_find(&st, "adamw.m"), *v = lmc_st_find(&st, "adamw.v");
    if (!m || !v || m->dtype != LMC_DTYPE_F32 || v->dtype != LMC_DTYPE_F32 || m->numel != want || v->numel != want) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected F32 adamw.m and adamw.v of %lld floats", path,
                           (long long)want);
    }
    if (cut) { /* the whole adapter's moments cut to this rank's slices (host backend) */
        int64_t local = tr->tm.numel - tr->tm.trainable_off;
        float *mv = malloc(sizeof(float) * (size_t)(2 * local + 1));
        if (!mv) {
            lmc_st_free(&st);
            return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
        }
        cut(user, mv, m->data);
        cut(user, mv + local, v->data);
        tr->be->upload(tr->be->ctx, tr->m, mv, (size_t)local * sizeof(float));
        tr->be->upload(tr->be->ctx, tr->v, mv + local, (size_t)local * sizeof(float));
        tr->be->sync(tr->be->ctx);
        free(mv);
        lmc_st_free(&st);
        tr->step = step;
        return LMC_OK;
    }
    tr->be->upload(tr->be->ctx, tr->m, m->data, (size_t)want * sizeof(float));
    tr->be->upload(tr->be->ctx, tr->v, v->data, (size_t)want * sizeof(float));
    tr->be->sync(tr->be->ctx);
    lmc_st_free(&st);
    tr->step = step;
    return LMC_OK;
}
