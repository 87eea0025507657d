/* checkpoint.c — training checkpoints as Hugging Face folders: config.json
 * (copied or written), model.safetensors (F32, on-disk layouts), the
 * tokenizer files, plus optimizer.safetensors (the AdamW moments as raw
 * arenas) and trainer_state.json (step, loader position, seed, batch
 * shape). Everything a resumed run needs to continue bit-exactly. The
 * arenas are backend memory: saving downloads them, loading uploads. */
#include "train/trainer.h"
#include "core/core.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
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

static lmc_status copy_file(const char *src, const char *dst, lmc_err *err) {
    char *buf = NULL;
    size_t len = 0;
    lmc_status s = lmc_file_read(src, (size_t)1 << 30, &buf, &len, err);
    if (s) return s;
    FILE *f = fopen(dst, "wb");
    if (!f) {
        free(buf);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create (%s)", dst, strerror(errno));
    }
    bool ok = fwrite(buf, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    free(buf);
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", dst);
}

lmc_status lmc_ckpt_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                         const char *tok_dir, lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    char path[4096], src[4096];
    if (tm->trainable_off) /* adapters: lmc finetune writes PEFT folders (train/lora.c) */
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: full checkpoints of a frozen-base run are not "
                           "written (save the adapter instead)", dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create (%s)", dir, strerror(errno));
    lmc_status s = LMC_OK;
    /* model.safetensors: every tensor in its on-disk layout */
    struct lmc_st_write_tensor *t = calloc((size_t)tm->n_params, sizeof *t);
    float *buf = malloc((size_t)tm->numel * sizeof(float));
    if (!t || !buf) {
        free(t);
        free(buf);
        return lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
    }
    for (int i = 0; i < tm->n_params && !s; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        s = lmc_tmodel_download_param(tm, tm->w, i, buf + p->off, err);
        t[i].name = p->name;
        t[i].dtype = LMC_DTYPE_F32;
        t[i].ndim = p->ndim;
        t[i].shape[0] = p->shape[0];
        t[i].shape[1] = p->shape[1];
        t[i].data = buf + p->off;
    }
    const char *meta[] = {"format", "pt"};
    if (!s && !lmc_path_join(path, sizeof path, dir, "model.safetensors"))
        s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    if (!s) s = lmc_st_write(path, t, tm->n_params, meta, 1, err);
    free(t);
    free(buf);
    if (s) return s;
    /* optimizer moments, raw (layout of the arenas) */
    float *mv = malloc((size_t)tm->numel * 2 * sizeof(float));
    if (!mv) return lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
    lmc_tmodel_download_arena(tm, tr->m, mv);
    lmc_tmodel_download_arena(tm, tr->v, mv + tm->numel);
    struct lmc_st_write_tensor ot[2] = {
        {"adamw.m", LMC_DTYPE_F32, 1, {tm->numel}, mv},
        {"adamw.v", LMC_DTYPE_F32, 1, {tm->numel}, mv + tm->numel},
    };
    lmc_path_join(path, sizeof path, dir, "optimizer.safetensors");
    s = lmc_st_write(path, ot, 2, NULL, 0, err);
    free(mv);
    if (s) return s;
    /* trainer state */
    char state[512];
    snprintf(state, sizeof state,
             "{\n  \"step\": %lld,\n  \"epoch\": %lld,\n  \"index\": %lld,\n  \"seed\": %llu,\n"
             "  \"batch\": %lld,\n  \"seq_len\": %lld,\n  \"accum\": %lld\n}\n",
             (long long)tr->step, (long long)tr->train.epoch, (long long)tr->train.index,
             (unsigned long long)tr->o.seed, (long long)tr->o.B, (long long)tr->o.T,
             (long long)tr->o.accum);
    lmc_path_join(path, sizeof path, dir, "trainer_state.json");
    if ((s = write_text(path, state, err))) return s;
    /* config and tokenizer */
    lmc_path_join(path, sizeof path, dir, "config.json");
    if (config_src && lmc_path_join(src, sizeof src, config_src, "config.json") && lmc_file_exists(src)) {
        if (strcmp(src, path) != 0) s = copy_file(src, path, err);
    } else {
        s = lmc_config_write(&tm->cfg, path, err);
    }
    if (s) return s;
    static const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json",
                                      "generation_config.json", "special_tokens_map.json"};
    for (size_t i = 0; tok_dir && i < sizeof tok_files / sizeof *tok_files; i++) {
        lmc_path_join(src, sizeof src, tok_dir, tok_files[i]);
        lmc_path_join(path, sizeof path, dir, tok_files[i]);
        if (lmc_file_exists(src) && strcmp(src, path) != 0 && (s = copy_file(src, path, err))) return s;
    }
    return LMC_OK;
}

static int64_t jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

lmc_status lmc_ckpt_load_state(struct lmc_trainer *tr, const char *dir, lmc_err *err) {
    if (tr->tm.trainable_off)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: resuming a frozen-base run is not supported", dir);
    char path[4096];
    char *text = NULL;
    lmc_path_join(path, sizeof path, dir, "trainer_state.json");
    lmc_status s = lmc_file_read(path, 1 << 20, &text, NULL, err);
    if (s) return s;
    cJSON *o = cJSON_Parse(text);
    free(text);
    int64_t step = jint(o, "step"), epoch = jint(o, "epoch"), index = jint(o, "index");
    int64_t B = jint(o, "batch"), T = jint(o, "seq_len");
    cJSON_Delete(o);
    if (step < 0 || epoch < 0 || index < 0)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected step, epoch and index", path);
    if (B != tr->o.B || T != tr->o.T)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: saved with batch %lld x %lld, resumed with %lld x %lld "
                           "(the data position would not carry over)", path, (long long)B,
                           (long long)T, (long long)tr->o.B, (long long)tr->o.T);
    if ((s = lmc_loader_seek(&tr->train, epoch, index, err))) return s;
    struct lmc_st st;
    lmc_path_join(path, sizeof path, dir, "optimizer.safetensors");
    if ((s = lmc_st_open_file(&st, path, err))) return s;
    const struct lmc_st_tensor *m = lmc_st_find(&st, "adamw.m"), *v = lmc_st_find(&st, "adamw.v");
    if (!m || !v || m->dtype != LMC_DTYPE_F32 || v->dtype != LMC_DTYPE_F32 ||
        m->numel != tr->tm.numel || v->numel != tr->tm.numel) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected F32 adamw.m and adamw.v of %lld elements",
                           path, (long long)tr->tm.numel);
    }
    lmc_tmodel_upload_arena(&tr->tm, tr->m, m->data);
    lmc_tmodel_upload_arena(&tr->tm, tr->v, v->data);
    lmc_st_free(&st);
    tr->step = step;
    return LMC_OK;
}
