/* checkpoint.c — training checkpoints as Hugging Face folders: config.json
 * (copied or written), model.safetensors (F32, on-disk layouts), the
 * tokenizer files, plus optimizer.safetensors (the AdamW moments as raw
 * arenas, or another optimizer's named state tensors, lmc_optim_save) and
 * trainer_state.json (step, loader position and the run's settings: batch
 * shape, seed, schedule, AdamW, optimizer kind and settings, decay rule,
 * clipping).
 * Everything a resumed run needs to continue bit-exactly. The arenas are
 * backend memory: saving downloads them, loading uploads. The folder is
 * published atomically (checkpoint_dir.c). */
#include "train/checkpoint.h"
#include "train/trainer_internal.h"
#include "train/trainer_pp.h"
#include "core/core.h"
#include "dist/comm.h"
#include "io/safetensors.h"
#include "model/arch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static lmc_status write_text(const char *path, const char *text, lmc_err *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", path);
}

/* The files of a checkpoint, written into dir (the temporary folder). */
static lmc_status write_files(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                              const char *tok_dir, lmc_err *err);
static char *state_json(const struct lmc_trainer *tr);

lmc_status lmc_ckpt_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                         const char *tok_dir, lmc_err *err) {
    if (tr->tm.trainable_off) /* adapters: lmc finetune writes PEFT folders (train/lora.c) */
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: full checkpoints of a frozen-base run are not "
                           "written (save the adapter instead)", dir);
    char tmp[4096];
    lmc_status s = lmc_ckpt_begin(dir, tmp, sizeof tmp, err);
    if (s) return s;
    if ((s = write_files(tr, tmp, config_src, tok_dir, err)) || (s = lmc_ckpt_commit(tmp, dir, err))) {
        lmc_ckpt_abort(tmp);
        return s;
    }
    return LMC_OK;
}

static lmc_status write_files(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                              const char *tok_dir, lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    char path[4096], src[4096];
    lmc_status s = LMC_OK;
    if (lmc_trainer_pp_writes(tr)) { /* pipeline stages: each tensor streamed from the stage holding it */
        char opath[4096];
        if (!lmc_path_join(path, sizeof path, dir, "model.safetensors") ||
            !lmc_path_join(opath, sizeof opath, dir, "optimizer.safetensors"))
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        if ((s = lmc_trainer_pp_write((struct lmc_trainer *)tr, path, opath, err))) return s;
        goto state;
    }
    /* model.safetensors: every tensor in its on-disk layout */
    /* data parallel: the model's views point into the zero module; rank 0
     * has the parameters on the host, on-disk layouts, from lmc_trainer_dist_save */
    const float *host = tr->zero ? lmc_trainer_dist_params(tr) : NULL;
    if (tr->zero && !host)
        return lmc_err_set(err, LMC_ERR_ARG, "checkpoint: the data-parallel parameters were not gathered "
                           "(lmc_trainer_dist_save first)");
    /* a host-memory backend's arenas are written in place (only transposed tensors converted
     * into buf), so a save holds no second copy of the model or the moments */
    bool direct = !host && tm->be->host_memory;
    int64_t nbuf = 0;
    for (int i = 0; direct && i < tm->n_params; i++)
        if (tm->params[i].transposed) nbuf += tm->params[i].numel;
    struct lmc_st_write_tensor *t = calloc((size_t)tm->n_params, sizeof *t);
    float *buf = host || (direct && !nbuf) ? NULL : malloc((size_t)(direct ? nbuf : tm->numel) * sizeof(float));
    if (!t || (!host && !buf && !(direct && !nbuf))) {
        free(t);
        free(buf);
        return lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
    }
    if (direct) tm->be->sync(tm->be->ctx); /* the arenas are read in place */
    int64_t at = 0; /* direct: the next free float of buf */
    for (int i = 0; i < tm->n_params && !s; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        const float *data = host ? host + p->off : buf + p->off;
        if (direct && !p->transposed) data = tm->w + p->off;
        else if (direct) { /* the on-disk layout of a transposed tensor */
            s = lmc_tmodel_download_param(tm, tm->w, i, buf + at, err);
            data = buf + at;
            at += p->numel;
        } else if (!host) s = lmc_tmodel_download_param(tm, tm->w, i, buf + p->off, err);
        t[i].name = p->name;
        t[i].dtype = LMC_DTYPE_F32;
        t[i].ndim = p->ndim;
        t[i].shape[0] = p->shape[0];
        t[i].shape[1] = p->shape[1];
        if (p->conv) { /* (C, 1, K) as transformers stores a depthwise conv1d */
            t[i].ndim = 3;
            t[i].shape[1] = 1;
            t[i].shape[2] = p->shape[1];
        }
        t[i].data = data;
    }
    const char *meta[] = {"format", "pt"};
    if (!s && !lmc_path_join(path, sizeof path, dir, "model.safetensors"))
        s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    if (!s) s = lmc_st_write(path, t, tm->n_params, meta, 1, err);
    free(t);
    free(buf);
    if (s) return s;
    /* optimizer state: another kind's named tensors (lmc_optim_save), or
     * the AdamW moments raw (layout of the arenas) */
    const float *zm, *zv;
    if (tr->zero && !tr->have_opt && lmc_trainer_dist_moments(tr, &zm, &zv)) { /* gathered: whole, as one process */
        struct lmc_st_write_tensor ot[2] = {{"adamw.m", LMC_DTYPE_F32, 1, {tm->numel}, zm},
                                            {"adamw.v", LMC_DTYPE_F32, 1, {tm->numel}, zv}};
        if (!lmc_path_join(path, sizeof path, dir, "optimizer.safetensors"))
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        if ((s = lmc_st_write(path, ot, 2, NULL, 0, err))) return s;
        goto state;
    }
    if (tr->zero && !tr->have_opt) { /* data parallel: the moments are sharded in OUT/zero (lmc_trainer_dist_save) */
        if (!lmc_path_join(path, sizeof path, dir, "optimizer.safetensors"))
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        const char *zmeta[] = {"lmc.optimizer", "zero", "lmc.zero.dir", "../zero"};
        if ((s = lmc_st_write(path, NULL, 0, zmeta, 2, err))) return s;
        goto state;
    }
    if (tr->have_opt && lmc_trainer_dist_optim_shards(tr)) { /* --zero 1: each rank's tensors' state in OUT/zero */
        if (!lmc_path_join(path, sizeof path, dir, "optimizer.safetensors"))
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        char world[32];
        snprintf(world, sizeof world, "%d", lmc_trainer_dist_optim_shards(tr));
        const char *zmeta[] = {"lmc.optimizer", "zero-optim", "lmc.zero.dir", "../zero", "lmc.zero.world", world,
                               "lmc.zero.optim", lmc_optim_kind_name(tr->opt.cfg.kind)};
        if ((s = lmc_st_write(path, NULL, 0, zmeta, 4, err))) return s;
        goto state;
    }
    if (tr->have_opt) {
        if (!lmc_path_join(path, sizeof path, dir, "optimizer.safetensors"))
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        if ((s = lmc_optim_save(&tr->opt, path, err))) return s;
        goto state;
    }
    float *mv = direct ? NULL : malloc((size_t)tm->numel * 2 * sizeof(float)); /* direct: written in place */
    if (!direct && !mv) return lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
    if (mv) {
        lmc_tmodel_download_arena(tm, tr->m, mv);
        lmc_tmodel_download_arena(tm, tr->v, mv + tm->numel);
    }
    struct lmc_st_write_tensor ot[2] = {
        {"adamw.m", LMC_DTYPE_F32, 1, {tm->numel}, mv ? mv : tr->m},
        {"adamw.v", LMC_DTYPE_F32, 1, {tm->numel}, mv ? mv + tm->numel : tr->v},
    };
    lmc_path_join(path, sizeof path, dir, "optimizer.safetensors");
    s = lmc_st_write(path, ot, 2, NULL, 0, err);
    free(mv);
    if (s) return s;
state:;
    /* trainer state */
    char *state = state_json(tr);
    if (!state) return lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
    lmc_path_join(path, sizeof path, dir, "trainer_state.json");
    s = write_text(path, state, err);
    free(state);
    if (s) return s;
    /* config and tokenizer */
    lmc_path_join(path, sizeof path, dir, "config.json");
    if (config_src && lmc_path_join(src, sizeof src, config_src, "config.json") && lmc_file_exists(src))
        s = lmc_file_copy(src, path, err);
    else
        s = lmc_config_write(&tm->cfg, path, err);
    if (s) return s;
    static const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json",
                                      "generation_config.json", "special_tokens_map.json"};
    for (size_t i = 0; tok_dir && i < sizeof tok_files / sizeof *tok_files; i++) {
        lmc_path_join(src, sizeof src, tok_dir, tok_files[i]);
        lmc_path_join(path, sizeof path, dir, tok_files[i]);
        if (lmc_file_exists(src) && (s = lmc_file_copy(src, path, err))) return s;
    }
    return LMC_OK;
}

/* ---- trainer_state.json ---- */

static const char *const sched_names[] = {"constant", "cosine", "linear", "wsd"};

/* Doubles as "%.17g" (exact round trip), integers exactly. */
static void add_f64(cJSON *o, const char *k, double v) {
    char b[40];
    snprintf(b, sizeof b, "%.17g", v);
    cJSON_AddRawToObject(o, k, b);
}
static void add_i64(cJSON *o, const char *k, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    cJSON_AddRawToObject(o, k, b);
}

/* "optim": the kind and every setting of the other kinds (AdamW's group
 * settings are "adamw"'s). */
static cJSON *optim_json(const struct lmc_optim_cfg *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "kind", lmc_optim_kind_name(c->kind));
    if (c->kind == LMC_OPTIM_ADAMW) return j;
    char seed[32];
    add_f64(j, "muon_lr", c->muon_lr);
    add_f64(j, "muon_momentum", c->muon_momentum);
    add_f64(j, "muon_weight_decay", c->muon_weight_decay);
    add_i64(j, "muon_ns_steps", c->muon_ns_steps);
    add_i64(j, "muon_nesterov", c->muon_nesterov);
    cJSON_AddStringToObject(j, "muon_scale", c->muon_scale == LMC_MUON_SCALE_MOONLIGHT ? "moonlight" : "shape");
    add_i64(j, "muon_ns_bf16", c->muon_ns_bf16);
    add_i64(j, "muon_ns_gram", c->muon_ns_gram);
    add_i64(j, "galore_rank", c->galore_rank);
    add_i64(j, "galore_update_gap", c->galore_update_gap);
    add_f64(j, "galore_scale", c->galore_scale);
    cJSON_AddStringToObject(j, "galore_refresh", c->galore_refresh == LMC_GALORE_REFRESH_EXACT      ? "exact"
                                                 : c->galore_refresh == LMC_GALORE_REFRESH_SUBSPACE ? "subspace"
                                                                                                    : "auto");
    add_i64(j, "apollo_rank", c->apollo_rank);
    add_i64(j, "apollo_update_gap", c->apollo_update_gap);
    add_f64(j, "apollo_scale", c->apollo_scale);
    cJSON_AddStringToObject(j, "apollo_scale_type", c->apollo_scale_type == LMC_APOLLO_TENSOR ? "tensor" : "channel");
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->apollo_seed);
    cJSON_AddStringToObject(j, "apollo_seed", seed);
    add_i64(j, "q8_block", c->q8_block);
    add_i64(j, "q8_embed_8bit", c->q8_embed_8bit);
    return j;
}

static char *state_json(const struct lmc_trainer *tr) {
    const struct lmc_train_opts *o = &tr->o;
    cJSON *j = cJSON_CreateObject(), *sc = cJSON_CreateObject(), *aw = cJSON_CreateObject();
    char seed[32];
    add_i64(j, "step", tr->step);
    add_i64(j, "epoch", tr->train_data ? tr->train.epoch : tr->feed_epoch);
    add_i64(j, "index", tr->train_data ? tr->train.index : tr->feed_index);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed); /* a string: exact beyond 2^53 */
    cJSON_AddStringToObject(j, "seed", seed);
    add_i64(j, "batch", o->B);
    add_i64(j, "seq_len", o->T);
    add_i64(j, "accum", o->accum);
    unsigned k = (unsigned)o->sched.kind;
    cJSON_AddStringToObject(sc, "kind", k < 4 ? sched_names[k] : "?");
    add_f64(sc, "lr_max", o->sched.lr_max);
    add_f64(sc, "lr_min", o->sched.lr_min);
    add_i64(sc, "warmup", o->sched.warmup);
    add_i64(sc, "total", o->sched.total);
    add_i64(sc, "decay_steps", o->sched.decay_steps);
    cJSON_AddItemToObject(j, "schedule", sc);
    add_f64(aw, "lr", o->adamw.lr);
    add_f64(aw, "beta1", o->adamw.beta1);
    add_f64(aw, "beta2", o->adamw.beta2);
    add_f64(aw, "eps", o->adamw.eps);
    add_f64(aw, "weight_decay", o->adamw.weight_decay);
    cJSON_AddItemToObject(j, "adamw", aw);
    cJSON_AddItemToObject(j, "optim", optim_json(&o->optim));
    if (tr->comm) {
        cJSON *z = cJSON_CreateObject();
        add_i64(z, "stage", tr->zero_stage);
        add_i64(z, "world", tr->comm->world);
        cJSON_AddItemToObject(j, "zero", z);
    }
    cJSON_AddStringToObject(j, "decay", o->decay == LMC_DECAY_ALL ? "all" : "default");
    add_f64(j, "clip", o->clip);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    return text;
}

/* A number field: absent (*have false, *v untouched) or a finite number;
 * anything else is LMC_ERR_FORMAT naming the field. */
static lmc_status get_f64(const cJSON *o, const char *k, const char *src, bool *have, double *v, lmc_err *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    *have = x != NULL;
    if (!x) return LMC_OK;
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"%s\": expected a finite number", src, k);
    *v = x->valuedouble;
    return LMC_OK;
}
static lmc_status get_i64(const cJSON *o, const char *k, const char *src, int64_t lo, bool *have, int64_t *v,
                          lmc_err *err) {
    double d = 0;
    lmc_status s = get_f64(o, k, src, have, &d, err);
    if (s || !*have) return s;
    if (!(d >= (double)lo && d <= 9007199254740992.0) || d != (double)(int64_t)d)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"%s\": expected an integer >= %lld", src, k,
                           (long long)lo);
    *v = (int64_t)d;
    return LMC_OK;
}

/* "seed": a decimal string (what we write: exact beyond 2^53) or, in files
 * of older versions, a number. */
static lmc_status get_seed_field(const cJSON *o, const char *key, const char *src, bool *have, uint64_t *v,
                                 lmc_err *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    *have = x != NULL;
    if (!x) return LMC_OK;
    if (cJSON_IsString(x)) {
        const char *c = x->valuestring;
        uint64_t r = 0;
        size_t n = 0;
        for (; c[n] >= '0' && c[n] <= '9' && n < 20; n++) {
            if (r > (UINT64_MAX - (uint64_t)(c[n] - '0')) / 10) break;
            r = r * 10 + (uint64_t)(c[n] - '0');
        }
        if (n > 0 && c[n] == 0) {
            *v = r;
            return LMC_OK;
        }
    } else if (cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble < 18446744073709551616.0) {
        *v = (uint64_t)x->valuedouble;
        return LMC_OK;
    }
    return lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"%s\": expected a decimal integer", src, key);
}
static lmc_status get_seed(const cJSON *o, const char *src, bool *have, uint64_t *v, lmc_err *err) {
    return get_seed_field(o, "seed", src, have, v, err);
}

/* "optim" (optim_json): the kind's defaults, then the fields present. */
static lmc_status parse_optim(const cJSON *op, const char *src, struct lmc_optim_cfg *c, lmc_err *err) {
    const cJSON *k = cJSON_IsObject(op) ? cJSON_GetObjectItemCaseSensitive(op, "kind") : NULL;
    enum lmc_optim_kind kind;
    lmc_err e2 = {0};
    if (!cJSON_IsString(k) || lmc_optim_kind_parse(k->valuestring, &kind, &e2))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"optim.kind\": expected adamw, adamw8bit, muon, galore, "
                           "apollo or apollo-mini", src);
    lmc_optim_cfg_default(c, kind);
    bool h = false;
    lmc_status s = LMC_OK;
    int64_t iv = 0;
    struct { const char *key; double *p; } dbl[] = {
        {"muon_lr", &c->muon_lr}, {"muon_momentum", &c->muon_momentum},
        {"muon_weight_decay", &c->muon_weight_decay}, {"galore_scale", &c->galore_scale},
        {"apollo_scale", &c->apollo_scale},
    };
    for (size_t i = 0; !s && i < sizeof dbl / sizeof *dbl; i++) s = get_f64(op, dbl[i].key, src, &h, dbl[i].p, err);
    struct { const char *key; int *p; } ints[] = {
        {"muon_ns_steps", &c->muon_ns_steps}, {"galore_rank", &c->galore_rank},
        {"galore_update_gap", &c->galore_update_gap}, {"apollo_rank", &c->apollo_rank},
        {"apollo_update_gap", &c->apollo_update_gap}, {"q8_block", &c->q8_block},
    };
    for (size_t i = 0; !s && i < sizeof ints / sizeof *ints; i++) {
        if ((s = get_i64(op, ints[i].key, src, 0, &h, &iv, err)) || !h) continue;
        if (iv > (1 << 30)) s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"%s\": too large", src, ints[i].key);
        else *ints[i].p = (int)iv;
    }
    if (!s && !(s = get_i64(op, "muon_nesterov", src, 0, &h, &iv, err)) && h) c->muon_nesterov = iv != 0;
    if (!s && !(s = get_i64(op, "muon_ns_bf16", src, 0, &h, &iv, err)) && h) c->muon_ns_bf16 = iv != 0;
    /* absent: a checkpoint from before Gram space (plain iteration), whatever today's default */
    if (!s && !(s = get_i64(op, "muon_ns_gram", src, 0, &h, &iv, err))) c->muon_ns_gram = h && iv != 0;
    if (!s && !(s = get_i64(op, "q8_embed_8bit", src, 0, &h, &iv, err)) && h) c->q8_embed_8bit = iv != 0;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(op, "muon_scale");
    if (!s && x) {
        if (cJSON_IsString(x) && !strcmp(x->valuestring, "moonlight")) c->muon_scale = LMC_MUON_SCALE_MOONLIGHT;
        else if (cJSON_IsString(x) && !strcmp(x->valuestring, "shape")) c->muon_scale = LMC_MUON_SCALE_SHAPE;
        else s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"optim.muon_scale\": expected shape or moonlight", src);
    }
    x = cJSON_GetObjectItemCaseSensitive(op, "galore_refresh");
    if (!s && x) {
        const char *gv = cJSON_IsString(x) ? x->valuestring : "";
        if (!strcmp(gv, "auto")) c->galore_refresh = LMC_GALORE_REFRESH_AUTO;
        else if (!strcmp(gv, "exact")) c->galore_refresh = LMC_GALORE_REFRESH_EXACT;
        else if (!strcmp(gv, "subspace")) c->galore_refresh = LMC_GALORE_REFRESH_SUBSPACE;
        else s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"optim.galore_refresh\": expected auto, exact or subspace",
                             src);
    }
    x = cJSON_GetObjectItemCaseSensitive(op, "apollo_scale_type");
    if (!s && x) {
        if (cJSON_IsString(x) && !strcmp(x->valuestring, "tensor")) c->apollo_scale_type = LMC_APOLLO_TENSOR;
        else if (cJSON_IsString(x) && !strcmp(x->valuestring, "channel")) c->apollo_scale_type = LMC_APOLLO_CHANNEL;
        else s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"optim.apollo_scale_type\": expected channel or tensor",
                             src);
    }
    if (!s && cJSON_GetObjectItemCaseSensitive(op, "apollo_seed")) {
        uint64_t seed = 0;
        if (!(s = get_seed_field(op, "apollo_seed", src, &h, &seed, err))) c->apollo_seed = seed;
    }
    if (!s && lmc_optim_cfg_check(c, &e2))
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"optim\": %s", src, e2.msg);
    return s;
}

lmc_status lmc_train_state_parse(const char *text, size_t len, const char *src, struct lmc_train_state *st,
                                 lmc_err *err) {
    memset(st, 0, sizeof *st);
    st->step = st->epoch = st->index = -1;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    while (j && end && end < text + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (!cJSON_IsObject(j) || !end || end != text + len) { /* trailing bytes too */
        cJSON_Delete(j);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected a JSON object", src);
    }
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "schedule");
    const cJSON *aw = cJSON_GetObjectItemCaseSensitive(j, "adamw");
    lmc_status s = LMC_OK;
    if ((sc && !cJSON_IsObject(sc)) || (aw && !cJSON_IsObject(aw)))
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: \"schedule\" and \"adamw\": expected objects", src);
    struct lmc_train_opts *o = &st->o;
    bool h = false;
    /* each field: parsed when present, its bit set in st->have */
#define I64(obj, key, lo, bit, field)                                                                       \
    if (!s && obj && !(s = get_i64(obj, key, src, lo, &h, &field, err)) && h) st->have |= (bit);
#define F64(obj, key, bit, field)                                                                           \
    if (!s && obj && !(s = get_f64(obj, key, src, &h, &field, err)) && h) st->have |= (bit);
    I64(j, "step", 0, LMC_TSTATE_STEP, st->step)
    I64(j, "epoch", 0, LMC_TSTATE_EPOCH, st->epoch)
    I64(j, "index", 0, LMC_TSTATE_INDEX, st->index)
    I64(j, "batch", 1, LMC_TOPT_BATCH, o->B)
    I64(j, "seq_len", 1, LMC_TOPT_SEQ, o->T)
    I64(j, "accum", 1, LMC_TOPT_ACCUM, o->accum)
    if (!s && !(s = get_seed(j, src, &h, &o->seed, err)) && h) st->have |= LMC_TOPT_SEED;
    I64(sc, "total", 1, LMC_TOPT_STEPS, o->sched.total)
    F64(sc, "lr_max", LMC_TOPT_LR, o->sched.lr_max)
    F64(sc, "lr_min", LMC_TOPT_MIN_LR, o->sched.lr_min)
    I64(sc, "warmup", 0, LMC_TOPT_WARMUP, o->sched.warmup)
    I64(sc, "decay_steps", 0, LMC_TSTATE_DECAY_STEPS, o->sched.decay_steps)
    F64(aw, "lr", LMC_TSTATE_ADAMW_LR, o->adamw.lr)
    F64(aw, "beta1", LMC_TOPT_BETA1, o->adamw.beta1)
    F64(aw, "beta2", LMC_TOPT_BETA2, o->adamw.beta2)
    F64(aw, "eps", LMC_TOPT_EPS, o->adamw.eps)
    F64(aw, "weight_decay", LMC_TOPT_WD, o->adamw.weight_decay)
    F64(j, "clip", LMC_TOPT_CLIP, o->clip)
#undef I64
#undef F64
    const cJSON *k = sc ? cJSON_GetObjectItemCaseSensitive(sc, "kind") : NULL;
    if (!s && k) {
        if (cJSON_IsString(k) && lmc_schedule_kind_parse(k->valuestring, &o->sched.kind))
            st->have |= LMC_TOPT_SCHED;
        else
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"schedule.kind\": expected cosine, linear, wsd or "
                            "constant", src);
    }
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "optim");
    if (!s && op && !(s = parse_optim(op, src, &o->optim, err))) st->have |= LMC_TOPT_OPTIM;
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(j, "decay");
    if (!s && dr) {
        bool all = cJSON_IsString(dr) && !strcmp(dr->valuestring, "all");
        if (!all && !(cJSON_IsString(dr) && !strcmp(dr->valuestring, "default")))
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field \"decay\": expected \"default\" or \"all\"", src);
        o->decay = all ? LMC_DECAY_ALL : LMC_DECAY_DEFAULT;
        st->have |= LMC_TOPT_DECAY;
    }
    cJSON_Delete(j);
    return s;
}

static lmc_status read_state(const char *dir, char *path, size_t cap, struct lmc_train_state *st, lmc_err *err) {
    char *text = NULL;
    size_t len = 0;
    if (!lmc_path_join(path, cap, dir, "trainer_state.json"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    lmc_status s = lmc_file_read(path, 1 << 20, &text, &len, err);
    if (s) return s;
    s = lmc_train_state_parse(text, len, path, st, err);
    free(text);
    return s;
}

unsigned lmc_train_opt_bit(const char *flag) {
    static const struct { const char *flag; unsigned bit; } t[] = {
        {"--batch", LMC_TOPT_BATCH},   {"--seq", LMC_TOPT_SEQ},         {"--accum", LMC_TOPT_ACCUM},
        {"--seed", LMC_TOPT_SEED},     {"--steps", LMC_TOPT_STEPS},     {"--lr", LMC_TOPT_LR},
        {"--min-lr", LMC_TOPT_MIN_LR}, {"--warmup", LMC_TOPT_WARMUP},   {"--schedule", LMC_TOPT_SCHED},
        {"--wd", LMC_TOPT_WD},         {"--beta1", LMC_TOPT_BETA1},     {"--beta2", LMC_TOPT_BETA2},
        {"--eps", LMC_TOPT_EPS},       {"--decay-all", LMC_TOPT_DECAY}, {"--clip", LMC_TOPT_CLIP},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(flag, t[i].flag)) return t[i].bit;
    return 0;
}

lmc_status lmc_ckpt_read_opts(const char *dir, unsigned given, struct lmc_train_opts *o, lmc_err *err) {
    char path[4096];
    struct lmc_train_state st;
    lmc_status s = read_state(dir, path, sizeof path, &st, err);
    if (s) return s;
    const struct lmc_train_opts *f = &st.o;
    if (given & LMC_TOPT_LR) given |= LMC_TOPT_MIN_LR; /* the caller's min lr derives from its lr */
    unsigned take = st.have & ~given; /* present in the file, not given by the caller */
    if (take & LMC_TOPT_BATCH) o->B = f->B;
    if (take & LMC_TOPT_SEQ) o->T = f->T;
    if (take & LMC_TOPT_ACCUM) o->accum = f->accum;
    if (take & LMC_TOPT_SEED) o->seed = f->seed;
    if (take & LMC_TOPT_STEPS) o->sched.total = f->sched.total;
    if (take & LMC_TOPT_LR) o->sched.lr_max = f->sched.lr_max;
    if ((take & LMC_TSTATE_ADAMW_LR) && !(given & LMC_TOPT_LR)) o->adamw.lr = f->adamw.lr;
    if (take & LMC_TOPT_MIN_LR) o->sched.lr_min = f->sched.lr_min;
    if (take & LMC_TOPT_WARMUP) o->sched.warmup = f->sched.warmup;
    if (take & LMC_TOPT_SCHED) o->sched.kind = f->sched.kind;
    if (take & LMC_TSTATE_DECAY_STEPS) o->sched.decay_steps = f->sched.decay_steps;
    if (take & LMC_TOPT_WD) o->adamw.weight_decay = f->adamw.weight_decay;
    if (take & LMC_TOPT_BETA1) o->adamw.beta1 = f->adamw.beta1;
    if (take & LMC_TOPT_BETA2) o->adamw.beta2 = f->adamw.beta2;
    if (take & LMC_TOPT_EPS) o->adamw.eps = f->adamw.eps;
    if (take & LMC_TOPT_DECAY) o->decay = f->decay;
    if (take & LMC_TOPT_CLIP) o->clip = f->clip;
    if (take & LMC_TOPT_OPTIM) o->optim = f->optim;
    return LMC_OK;
}

lmc_status lmc_ckpt_load_state(struct lmc_trainer *tr, const char *dir, lmc_err *err) {
    if (tr->tm.trainable_off)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: resuming a frozen-base run is not supported", dir);
    char path[4096];
    struct lmc_train_state ts;
    lmc_status s = read_state(dir, path, sizeof path, &ts, err);
    if (s) return s;
    unsigned pos = LMC_TSTATE_STEP | LMC_TSTATE_EPOCH | LMC_TSTATE_INDEX;
    if ((ts.have & pos) != pos) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected step, epoch and index", path);
    /* the position counts windows of T+1 tokens in an order drawn from the
     * seed: the batch size may change, the window length and seed may not */
    if ((ts.have & LMC_TOPT_SEQ) && ts.o.T != tr->o.T)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with sequence length %lld, resumed with %lld "
                           "(the data position would not carry over)", path, (long long)ts.o.T, (long long)tr->o.T);
    if ((ts.have & LMC_TOPT_SEED) && ts.o.seed != tr->o.seed)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with seed %llu, resumed with %llu (the data order "
                           "would not carry over)", path, (unsigned long long)ts.o.seed,
                           (unsigned long long)tr->o.seed);
    if (!tr->train_data) { /* fed by the caller: it seeks its own data */
        tr->feed_epoch = ts.epoch;
        tr->feed_index = ts.index;
    } else if ((s = lmc_loader_seek(&tr->train, ts.epoch, ts.index, err)))
        return s;
    struct lmc_st st;
    lmc_path_join(path, sizeof path, dir, "optimizer.safetensors");
    if ((s = lmc_st_open_file(&st, path, err))) return s;
    const char *okind = lmc_st_meta_get(&st, "lmc.optimizer");
    if ((tr->zero && !tr->have_opt) || (okind && !strcmp(okind, "zero"))) { /* sharded: DIR/../zero */
        bool sharded = okind && !strcmp(okind, "zero");
        lmc_st_free(&st);
        if (!sharded || !tr->zero || tr->have_opt)
            return lmc_err_set(err, LMC_ERR_FORMAT, sharded ? "%s: sharded optimizer state (a data-parallel run): "
                               "resume it with the same mpirun -np N and --zero" : "%s: a one-process checkpoint "
                               "cannot be resumed by a data-parallel run yet", path);
        char zdir[4096];
        if (snprintf(zdir, sizeof zdir, "%s/../zero", dir) >= (int)sizeof zdir)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        if ((s = lmc_trainer_dist_load(tr, zdir, ts.step, err))) return s;
        tr->step = ts.step;
        return LMC_OK;
    }
    if (okind && !strcmp(okind, "zero-optim")) { /* --zero 1 with another kind: each rank's shard */
        const char *wv = lmc_st_meta_get(&st, "lmc.zero.world"), *kv = lmc_st_meta_get(&st, "lmc.zero.optim");
        int world = wv ? atoi(wv) : 0;
        if (!tr->have_opt || !kv || strcmp(kv, lmc_optim_kind_name(tr->opt.cfg.kind)) || world < 1) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: %s optimizer state sharded over %s ranks (--zero 1): resume it "
                            "with --optim %s", path, kv ? kv : "?", wv ? wv : "?", kv ? kv : "?");
            lmc_st_free(&st);
            return s;
        }
        lmc_st_free(&st);
        char zdir[4096];
        if (snprintf(zdir, sizeof zdir, "%s/../zero", dir) >= (int)sizeof zdir)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
        if ((s = lmc_trainer_load_optim_shards(tr, zdir, ts.step, world, err))) return s;
        tr->step = ts.step;
        return LMC_OK;
    }
    if (tr->have_opt) { /* another kind: named tensors, the kind checked (--zero 1: this rank's, by name) */
        s = lmc_trainer_dist_optim_shards(tr) ? lmc_trainer_dist_load_optim_whole(tr, &st, path, err)
                                              : lmc_optim_load_st(&tr->opt, &st, path, err);
        lmc_st_free(&st);
        if (s) return s;
        tr->step = ts.step;
        return LMC_OK;
    }
    const char *kind = lmc_st_meta_get(&st, "lmc.optimizer");
    if (kind) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: optimizer state of '%s', expected adamw (give --optim %s)",
                        path, kind, kind);
        lmc_st_free(&st);
        return s;
    }
    const struct lmc_st_tensor *m = lmc_st_find(&st, "adamw.m"), *v = lmc_st_find(&st, "adamw.v");
    if (m && v && m->dtype == LMC_DTYPE_F32 && v->dtype == LMC_DTYPE_F32 && m->numel == v->numel &&
        lmc_trainer_pp_parts(tr)) { /* a pipeline stage: its tensors' moments from the whole layout */
        s = lmc_trainer_pp_load_moments(tr, m->data, v->data, m->numel, err);
        lmc_st_free(&st);
        if (!s) tr->step = ts.step;
        return s;
    }
    if (!m || !v || m->dtype != LMC_DTYPE_F32 || v->dtype != LMC_DTYPE_F32 ||
        m->numel != tr->tm.numel || v->numel != tr->tm.numel) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected F32 adamw.m and adamw.v of %lld elements",
                           path, (long long)tr->tm.numel);
    }
    lmc_tmodel_upload_arena(&tr->tm, tr->m, m->data);
    lmc_tmodel_upload_arena(&tr->tm, tr->v, v->data);
    lmc_st_free(&st);
    tr->step = ts.step;
    return LMC_OK;
}
