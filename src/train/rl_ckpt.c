/* rl_ckpt.c — `lmc rl` checkpoints and the final policy (see rl.h): the
 * policy as a Hugging Face folder with its AdamW moments (full-parameter)
 * or the adapter as a PEFT folder with its moments (LoRA), the PPO value
 * head and its moments, and rl_state.json (step, task position, run
 * shape), through a temporary folder renamed at the end. The rollouts'
 * sampling seeds derive from the seed and the step, so the step and the
 * task position are the whole of the run's random state. */
#include "core/core.h"
#include "io/json_util.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/rl.h"
#include "train/trainer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a trainer over the RL state, for the trainer's and LoRA's checkpoint
 * writers (model, moments, step, batch shape) */
static void trainer_view(const struct lmc_rl *rl, struct lmc_trainer *tv) {
    memset(tv, 0, sizeof *tv);
    tv->tm = rl->pol;
    tv->be = rl->be;
    tv->m = rl->m;
    tv->v = rl->v;
    tv->step = rl->step;
    tv->o.B = rl->B;
    tv->o.T = rl->T;
    tv->o.accum = 1;
    tv->o.seed = rl->o.seed;
}

static lmc_status join(char *buf, size_t cap, const char *dir, const char *name, lmc_err *err) {
    if (!lmc_path_join(buf, cap, dir, name)) return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    return LMC_OK;
}

lmc_status lmc_rl_save_policy(const struct lmc_rl *rl, const char *dir, const char *config_dir, lmc_err *err) {
    if (rl->have_lt) {
        struct lmc_lora *lo = (struct lmc_lora *)&rl->lo; /* its host A/B are refreshed from the policy */
        lmc_status s = lmc_lora_train_read(&rl->lt, &rl->pol, lo, err);
        return s ? s : lmc_lora_save(lo, dir, &rl->pol.cfg, config_dir, err);
    }
    struct lmc_trainer tv;
    trainer_view(rl, &tv);
    return lmc_ckpt_save(&tv, dir, config_dir, config_dir, err);
}

static lmc_status write_state(const struct lmc_rl *rl, const char *dir, lmc_err *err) {
    char path[4200];
    lmc_status s = join(path, sizeof path, dir, "value_head.safetensors", err);
    if (s) return s;
    int64_t C1 = rl->pol.cfg.hidden_size + 1;
    struct lmc_st_write_tensor t[3] = {{"value_head", LMC_DTYPE_F32, 1, {C1}, rl->vh},
                                       {"value_head.adamw.m", LMC_DTYPE_F32, 1, {C1}, rl->vh_m},
                                       {"value_head.adamw.v", LMC_DTYPE_F32, 1, {C1}, rl->vh_v}};
    if ((s = lmc_st_write(path, t, 3, NULL, 0, err))) return s;
    char text[1024];
    snprintf(text, sizeof text,
             "{\"step\": %lld, \"next_task\": %lld, \"seed\": %llu, \"algo\": \"%s\", \"group\": %lld, "
             "\"prompts\": %lld, \"max_new\": %lld, \"epochs\": %lld, \"seq_len\": %lld, \"lora\": %s, "
             "\"trainable\": %lld}\n",
             (long long)rl->step, (long long)rl->next_task, (unsigned long long)rl->o.seed,
             rl->o.algo == LMC_RL_PPO ? "ppo" : "grpo", (long long)rl->o.group, (long long)rl->o.prompts,
             (long long)rl->o.max_new, (long long)rl->o.epochs, (long long)rl->T, rl->have_lt ? "true" : "false",
             (long long)(rl->pol.numel - rl->pol.trainable_off));
    if ((s = join(path, sizeof path, dir, "rl_state.json", err))) return s;
    FILE *f = fopen(path, "wb");
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f)) ok = false;
    if (!ok) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return LMC_OK;
}

lmc_status lmc_rl_ckpt_save(const struct lmc_rl *rl, const char *dir, const char *tok_dir, lmc_err *err) {
    char tmp[4096], path[4200];
    lmc_status s = lmc_ckpt_begin(dir, tmp, sizeof tmp, err);
    if (s) return s;
    struct lmc_trainer tv;
    trainer_view(rl, &tv);
    if (rl->have_lt) {
        if (!(s = join(path, sizeof path, tmp, "adapter", err)))
            s = lmc_lora_ckpt_save(&tv, &rl->lt, (struct lmc_lora *)&rl->lo, path, tok_dir, 0, rl->next_task, err);
    } else if (!(s = join(path, sizeof path, tmp, "policy", err))) {
        s = lmc_ckpt_save(&tv, path, tok_dir, tok_dir, err);
    }
    if (!s) s = write_state(rl, tmp, err);
    if (!s) s = lmc_ckpt_commit(tmp, dir, err);
    if (s) lmc_ckpt_abort(tmp);
    return s;
}

/* an integer field >= 0, or -1 */
static int64_t jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15 ? (int64_t)v->valuedouble : -1;
}

/* name's F32 tensor of n floats from st into dst (backend memory when be) */
static lmc_status take(const struct lmc_st *st, const char *path, const char *name, int64_t n, void *dst,
                       const struct lmc_backend *be, lmc_err *err) {
    const struct lmc_st_tensor *t = lmc_st_find(st, name);
    if (!t || t->dtype != LMC_DTYPE_F32 || t->numel != n)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected F32 tensor %s of %lld floats", path, name, (long long)n);
    if (be) be->upload(be->ctx, dst, t->data, (size_t)n * sizeof(float));
    else memcpy(dst, t->data, (size_t)n * sizeof(float));
    return LMC_OK;
}

lmc_status lmc_rl_ckpt_load_state(struct lmc_rl *rl, const char *dir, lmc_err *err) {
    char path[4200], *text = NULL;
    size_t len;
    lmc_status s = join(path, sizeof path, dir, "rl_state.json", err);
    if (!s) s = lmc_file_read(path, 1 << 20, &text, &len, err);
    if (s) return lmc_err_prefix(err, "rl --resume: "), s;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *algo = cJSON_GetObjectItemCaseSensitive(o, "algo");
    const cJSON *lora = cJSON_GetObjectItemCaseSensitive(o, "lora");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "seed");
    int64_t step = jint(o, "step"), next = jint(o, "next_task"), G = jint(o, "group"), P = jint(o, "prompts");
    int64_t mx = jint(o, "max_new"), ep = jint(o, "epochs"), T = jint(o, "seq_len"), n = jint(o, "trainable");
    bool algo_ok = cJSON_IsString(algo) && !strcmp(algo->valuestring, rl->o.algo == LMC_RL_PPO ? "ppo" : "grpo");
    bool lora_ok = cJSON_IsBool(lora) && cJSON_IsTrue(lora) == rl->have_lt;
    bool seed_ok = cJSON_IsNumber(seed) && (uint64_t)seed->valuedouble == rl->o.seed;
    int64_t want = rl->pol.numel - rl->pol.trainable_off;
    cJSON_Delete(o);
    if (step < 0 || next < 0 || G < 0 || P < 0 || mx < 0 || ep < 0 || T < 0 || n < 0)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected step, next_task, group, prompts, max_new, epochs, "
                           "seq_len and trainable", path);
    if (!algo_ok || !lora_ok || !seed_ok || G != rl->o.group || P != rl->o.prompts || mx != rl->o.max_new ||
        ep != rl->o.epochs || T != rl->T || n != want)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: the run differs from the checkpoint's (algorithm, --lora, --seed, "
                           "--group, --prompts, --max-new, --epochs, the tasks' longest prompt, or the trained "
                           "parameter count %lld vs %lld): resume with the same settings", path, (long long)n,
                           (long long)want);
    /* the moments */
    if (rl->have_lt) {
        struct lmc_trainer tv;
        trainer_view(rl, &tv);
        int64_t epoch, nx;
        if ((s = join(path, sizeof path, dir, "adapter", err)) ||
            (s = lmc_lora_ckpt_load_state(&tv, path, &epoch, &nx, err)))
            return s;
    } else {
        struct lmc_st st;
        if ((s = join(path, sizeof path, dir, "policy/optimizer.safetensors", err)) ||
            (s = lmc_st_open_file(&st, path, err)))
            return s;
        float *host = malloc((size_t)rl->pol.numel * sizeof(float));
        if (!host) s = lmc_err_set(err, LMC_ERR_OOM, "rl --resume: out of memory");
        if (!s && !(s = take(&st, path, "adamw.m", rl->pol.numel, host, NULL, err)))
            lmc_tmodel_upload_arena(&rl->pol, rl->m, host);
        if (!s && !(s = take(&st, path, "adamw.v", rl->pol.numel, host, NULL, err)))
            lmc_tmodel_upload_arena(&rl->pol, rl->v, host);
        free(host);
        lmc_st_free(&st);
        if (s) return s;
    }
    /* the value head */
    struct lmc_st st;
    int64_t C1 = rl->pol.cfg.hidden_size + 1;
    if ((s = join(path, sizeof path, dir, "value_head.safetensors", err)) || (s = lmc_st_open_file(&st, path, err)))
        return s;
    if (!(s = take(&st, path, "value_head", C1, rl->vh, NULL, err)) &&
        !(s = take(&st, path, "value_head.adamw.m", C1, rl->vh_m, NULL, err)))
        s = take(&st, path, "value_head.adamw.v", C1, rl->vh_v, NULL, err);
    lmc_st_free(&st);
    if (s) return s;
    rl->be->sync(rl->be->ctx);
    rl->step = step;
    rl->next_task = next;
    return LMC_OK;
}
