/* rl.c — the GRPO / PPO loop (see rl.h): task parsing, rollouts through the
 * scheduler on an inference view of the policy's weights, rewards, the
 * policy / reference forwards, the losses and their backward, AdamW. */
#include "train/rl.h"
#include "core/core.h"
#include "infer/scheduler.h"
#include "io/json_util.h"
#include "train/adamw.h"
#include "train/rl_model.h"
#include "tokenizer/chat_template.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------- tasks ---------------- */

void lmc_rl_tasks_free(struct lmc_rl_task *t, int64_t n) {
    if (!t) return;
    for (int64_t i = 0; i < n; i++) {
        free(t[i].prompt);
        free(t[i].messages);
        free(t[i].answer);
        free(t[i].ids);
    }
    free(t);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n), d[n] = 0;
    return d;
}

lmc_status lmc_rl_tasks_parse(const char *buf, size_t len, const char *path, struct lmc_rl_task **tasks,
                              int64_t *n, lmc_err *err) {
    *tasks = NULL;
    *n = 0;
    struct lmc_rl_task *t = NULL;
    int64_t cnt = 0, cap = 0, line = 0;
    lmc_status s = LMC_OK;
    size_t p = 0;
    while (p < len) {
        size_t e = p;
        while (e < len && buf[e] != '\n') e++;
        line++;
        size_t a = p;
        while (a < e && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r')) a++;
        size_t lp = p;
        p = e + 1;
        if (a == e) continue;
        cJSON *j = cJSON_ParseWithLength(buf + lp, e - lp);
        if (!j || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s:%lld: not a JSON object", path, (long long)line);
            goto fail;
        }
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        const cJSON *an = cJSON_GetObjectItemCaseSensitive(j, "answer");
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "messages");
        char *msg_text = NULL;
        if (!pr && cJSON_IsArray(ms) && cJSON_GetArraySize(ms) > 0) {
            if (!(msg_text = cJSON_PrintUnformatted(ms))) {
                cJSON_Delete(j);
                s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
                goto fail;
            }
        } else if (!cJSON_IsString(pr)) {
            cJSON_Delete(j);
            s = lmc_err_set(err, LMC_ERR_FORMAT,
                            "%s:%lld: needs \"prompt\" (a string) or \"messages\" (a non-empty array)", path,
                            (long long)line);
            goto fail;
        }
        char num[64];
        const char *ans = NULL;
        if (cJSON_IsString(an)) ans = an->valuestring;
        else if (cJSON_IsNumber(an)) {
            snprintf(num, sizeof num, "%.17g", an->valuedouble);
            ans = num;
        } else if (an && !cJSON_IsNull(an)) {
            cJSON_Delete(j);
            free(msg_text);
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s:%lld: \"answer\" must be a string or a number", path,
                            (long long)line);
            goto fail;
        }
        if (cnt == cap) {
            int64_t nc = cap ? cap * 2 : 16;
            struct lmc_rl_task *q = realloc(t, (size_t)nc * sizeof *q);
            if (!q) {
                cJSON_Delete(j);
                free(msg_text);
                s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
                goto fail;
            }
            t = q, cap = nc;
        }
        memset(&t[cnt], 0, sizeof t[cnt]);
        t[cnt].prompt = msg_text ? NULL : dup_n(pr->valuestring, strlen(pr->valuestring));
        t[cnt].messages = msg_text;
        t[cnt].answer = ans ? dup_n(ans, strlen(ans)) : NULL;
        cnt++;
        cJSON_Delete(j);
        if ((!msg_text && !t[cnt - 1].prompt) || (ans && !t[cnt - 1].answer)) {
            s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
            goto fail;
        }
    }
    if (cnt == 0) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: no tasks", path);
        goto fail;
    }
    *tasks = t;
    *n = cnt;
    return LMC_OK;
fail:
    lmc_rl_tasks_free(t, cnt);
    return s;
}

/* ---------------- setup ---------------- */

/* a "messages" task's prompt through the chat template */
static lmc_status render(const struct lmc_chat_template *ct, struct lmc_rl_task *t, int64_t i, lmc_err *err) {
    if (!ct)
        return lmc_err_set(err, LMC_ERR_ARG, "task %lld has chat messages but no chat template was given",
                           (long long)(i + 1));
    cJSON *m = cJSON_Parse(t->messages);
    if (!m) return lmc_err_set(err, LMC_ERR_OOM, "task %lld: out of memory", (long long)(i + 1));
    struct lmc_chat_render_opts ro = {.add_generation_prompt = true, .now_year = 2026, .now_month = 1, .now_day = 1};
    lmc_status s = lmc_chat_template_render(ct, m, &ro, &t->prompt, err);
    cJSON_Delete(m);
    if (s) lmc_err_prefix(err, "task %lld messages", (long long)(i + 1));
    return s;
}

void lmc_rl_opts_default(struct lmc_rl_opts *o) {
    memset(o, 0, sizeof *o);
    o->algo = LMC_RL_GRPO;
    o->group = 8;
    o->prompts = 4;
    o->max_new = 256;
    o->epochs = 1;
    o->temperature = 1.0;
    o->lr = 1e-6;
    o->grad_clip = 1.0;
    o->grpo = (struct lmc_rl_grpo_cfg){.eps_low = 0.2, .eps_high = 0.2, .beta = 0.04, .avg = LMC_RL_AVG_SEQ};
    o->scale_std = true;
    o->ppo = (struct lmc_rl_ppo_cfg){.clip = 0.2, .clip_value = 0.2, .vf_coef = 0.1, .gamma = 1.0, .lam = 0.95,
                                     .kl_coef = 0.05};
    o->extract = LMC_EXTRACT_AUTO;
    o->len_free = 0;
    o->reward_timeout = 10.0;
    o->seed = 1;
}

void lmc_rl_free(struct lmc_rl *rl) {
    lmc_tacts_free(&rl->acts);
    if (rl->be) {
        if (rl->m) rl->be->free(rl->be->ctx, rl->m);
        if (rl->v) rl->be->free(rl->be->ctx, rl->v);
    }
    if (rl->pol.params) lmc_tmodel_free(&rl->pol);
    if (rl->have_ref) lmc_tmodel_free(&rl->ref);
    if (rl->have_lt) lmc_lora_train_free(&rl->lt);
    lmc_lora_free(&rl->lo);
    free(rl->vh);
    free(rl->vh_m);
    free(rl->vh_v);
    memset(rl, 0, sizeof *rl);
}

lmc_status lmc_rl_init(struct lmc_rl *rl, const char *policy_dir, const struct lmc_backend *be,
                       const struct lmc_tokenizer *tok, struct lmc_rl_task *tasks, int64_t n_tasks,
                       const struct lmc_rl_opts *o, lmc_err *err) {
    memset(rl, 0, sizeof *rl);
    rl->be = be;
    rl->tok = tok;
    rl->tasks = tasks;
    rl->n_tasks = n_tasks;
    rl->o = *o;
    lmc_status s;
    if (o->group < 1 || o->prompts < 1 || o->max_new < 1 || o->epochs < 1 || n_tasks < 1)
        return lmc_err_set(err, LMC_ERR_ARG, "rl: group, prompts, max-new, epochs and tasks must be positive");
    if (o->algo == LMC_RL_GRPO && o->group < 2)
        return lmc_err_set(err, LMC_ERR_ARG, "rl: GRPO needs a group of at least 2 completions per prompt");
    /* a full-parameter run resumes its policy from the checkpoint; the
     * reference (and a LoRA run's base) is always policy_dir */
    char path[4200];
    bool full_resume = o->resume && !o->lora;
    if (full_resume && snprintf(path, sizeof path, "%s/policy", o->resume) >= (int)sizeof path)
        return lmc_err_set(err, LMC_ERR_ARG, "rl: --resume path too long");
    if ((s = lmc_tmodel_load(&rl->pol, full_resume ? path : policy_dir, be, err))) return s;
    bool need_ref = o->algo == LMC_RL_GRPO ? o->grpo.beta != 0 : o->ppo.kl_coef != 0;
    if (o->lora) {
        if (o->resume) {
            snprintf(path, sizeof path, "%s/adapter", o->resume);
            s = lmc_lora_load(&rl->lo, path, &rl->pol.cfg, err);
        } else {
            s = lmc_lora_create(&rl->lo, o->lora, &rl->pol.cfg, o->seed, err);
        }
        if (s) goto fail;
        snprintf(rl->lo.cfg.base_model, sizeof rl->lo.cfg.base_model, "%s", policy_dir);
        if ((s = lmc_lora_train_attach(&rl->lt, &rl->pol, &rl->lo, err))) goto fail;
        rl->have_lt = true;
        rl->ref_off = need_ref;
    } else if (need_ref) {
        if ((s = lmc_tmodel_load(&rl->ref, policy_dir, be, err))) goto fail;
        rl->have_ref = true;
    }
    int64_t maxp = 0;
    for (int64_t i = 0; i < n_tasks; i++) {
        if (!tasks[i].prompt && (s = render(o->chat, &tasks[i], i, err))) goto fail;
        if (!tasks[i].ids &&
            (s = lmc_tokenizer_encode(tok, tasks[i].prompt, strlen(tasks[i].prompt), !tasks[i].messages, &tasks[i].ids,
                                      &tasks[i].n_ids, err))) {
            lmc_err_prefix(err, "task %lld prompt", (long long)(i + 1));
            goto fail;
        }
        if (tasks[i].n_ids < 1) {
            s = lmc_err_set(err, LMC_ERR_ARG, "task %lld: empty prompt", (long long)(i + 1));
            goto fail;
        }
        maxp = LMC_MAX(maxp, tasks[i].n_ids);
    }
    rl->T = maxp + o->max_new; /* prompt + response + EOS, minus one for the shift */
    rl->B = o->prompts * o->group;
    rl->MB = o->micro > 0 ? o->micro : rl->B;
    if (rl->MB > rl->B || rl->B % rl->MB) {
        s = lmc_err_set(err, LMC_ERR_ARG, "rl: micro-batch %lld must divide the batch (%lld prompts x %lld)",
                        (long long)rl->MB, (long long)o->prompts, (long long)o->group);
        goto fail;
    }
    if ((s = lmc_tacts_init(&rl->acts, &rl->pol, be, rl->MB, rl->T, false, err))) goto fail;
    size_t bytes = (size_t)(rl->pol.numel - rl->pol.trainable_off) * sizeof(float);
    rl->m = be->alloc(be->ctx, bytes);
    rl->v = be->alloc(be->ctx, bytes);
    int64_t C = rl->pol.cfg.hidden_size;
    rl->vh = calloc((size_t)C + 1, sizeof(float));
    rl->vh_m = calloc((size_t)C + 1, sizeof(float));
    rl->vh_v = calloc((size_t)C + 1, sizeof(float));
    if (!rl->m || !rl->v || !rl->vh || !rl->vh_m || !rl->vh_v) {
        s = lmc_err_set(err, LMC_ERR_OOM, "rl: optimizer state: out of memory");
        goto fail;
    }
    be->zero(be->ctx, rl->m, bytes);
    be->zero(be->ctx, rl->v, bytes);
    if (o->resume && (s = lmc_rl_ckpt_load_state(rl, o->resume, err))) goto fail;
    return LMC_OK;
fail:
    lmc_rl_free(rl);
    return s;
}

/* ---------------- rollouts ---------------- */

struct rollout {
    int32_t *tok;
    float *lp;
    int64_t n, cap;
    char *text;
    size_t tlen, tcap;
    bool done, stopped, failed;
    char error[160];
};

static void append_text(struct rollout *r, const char *t, size_t n) {
    if (!n || r->failed) return;
    if (r->tlen + n + 1 > r->tcap) {
        size_t nc = (r->tlen + n + 1) * 2;
        char *q = realloc(r->text, nc);
        if (!q) {
            r->failed = true;
            snprintf(r->error, sizeof r->error, "out of memory");
            return;
        }
        r->text = q, r->tcap = nc;
    }
    memcpy(r->text + r->tlen, t, n);
    r->tlen += n;
    r->text[r->tlen] = 0;
}

static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct rollout *r = user;
    if (ev->kind == LMC_EV_TOKEN) {
        if (r->n < r->cap) {
            r->tok[r->n] = ev->token;
            r->lp[r->n] = ev->logprob;
            r->n++;
        }
        append_text(r, ev->text, ev->text_len);
    } else if (ev->kind == LMC_EV_DONE) {
        append_text(r, ev->text, ev->text_len);
        r->stopped = ev->finish_reason && !strcmp(ev->finish_reason, "stop");
        r->done = true;
    } else {
        r->failed = true;
        snprintf(r->error, sizeof r->error, "%s", ev->error ? ev->error : "error");
        r->done = true;
    }
}

static void rollouts_free(struct rollout *r, int64_t n) {
    if (!r) return;
    for (int64_t i = 0; i < n; i++) {
        free(r[i].tok);
        free(r[i].lp);
        free(r[i].text);
    }
    free(r);
}

/* n requests: task idx[j / group], each with its own seed */
static lmc_status rollout(struct lmc_rl *rl, const struct lmc_rl_task *tasks, const int64_t *idx, int64_t n,
                          int64_t group, double temperature, struct rollout **out, lmc_err *err) {
    const struct lmc_rl_opts *o = &rl->o;
    struct rollout *r = calloc((size_t)n, sizeof *r);
    if (!r) return lmc_err_set(err, LMC_ERR_OOM, "rl: rollouts: out of memory");
    lmc_status s = LMC_OK;
    for (int64_t j = 0; j < n; j++) {
        r[j].cap = o->max_new;
        r[j].tok = malloc((size_t)o->max_new * sizeof(int32_t));
        r[j].lp = malloc((size_t)o->max_new * sizeof(float));
        if (!r[j].tok || !r[j].lp) {
            rollouts_free(r, n);
            return lmc_err_set(err, LMC_ERR_OOM, "rl: rollouts: out of memory");
        }
    }
    /* a fresh scheduler on the current weights (its prefix cache must not
     * outlive a weight update); the weights are not copied */
    struct lmc_model view;
    lmc_rl_model_view(&view, &rl->pol);
    struct lmc_sched_opts so;
    lmc_sched_opts_default(&so);
    so.ctx = rl->T + 1;
    so.max_batch = (int)LMC_MIN(n, 256);
    so.kv_blocks = n * (so.ctx / so.block_size + 2) + 16;
    struct lmc_sched *sc = NULL;
    if ((s = lmc_sched_init(&sc, &view, rl->be, rl->tok, &so, err))) {
        rollouts_free(r, n);
        return s;
    }
    for (int64_t j = 0; j < n; j++) {
        struct lmc_request q = {0};
        lmc_sampler_defaults(&q.sampling);
        q.sampling.temperature = temperature;
        q.sampling.seed = o->seed * 0x9E3779B97F4A7C15ull + (uint64_t)rl->step * 1000003ull + (uint64_t)j;
        q.max_tokens = o->max_new;
        q.top_logprobs = 0;
        const struct lmc_rl_task *t = &tasks[idx[j / group]];
        uint64_t id;
        if ((s = lmc_sched_submit(sc, t->ids, t->n_ids, &q, on_event, &r[j], &id, err))) break;
    }
    lmc_sched_wait_idle(sc, 1e9, NULL);
    lmc_sched_free(sc);
    for (int64_t j = 0; !s && j < n; j++)
        if (r[j].failed || !r[j].done)
            s = lmc_err_set(err, LMC_ERR_IO, "rl: rollout %lld of task %lld: %s", (long long)j,
                            (long long)(idx[j / group] + 1), r[j].failed ? r[j].error : "did not finish");
    if (s) {
        rollouts_free(r, n);
        return s;
    }
    *out = r;
    return LMC_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static lmc_status score(const struct lmc_rl *rl, const struct lmc_rl_task *t, int64_t ti, const struct rollout *r,
                        double *reward, double *acc, lmc_err *err) {
    const struct lmc_rl_opts *o = &rl->o;
    const char *text = r->text ? r->text : "";
    *acc = 0;
    if (t->answer) {
        char got[512];
        lmc_status s;
        if (lmc_reward_extract(text, o->extract, o->regex, got, sizeof got, &s, err)) *acc = lmc_reward_match(got, t->answer);
        if (s) return s;
    }
    if (o->reward_cmd) {
        char what[64];
        snprintf(what, sizeof what, "task %lld", (long long)(ti + 1));
        return lmc_reward_cmd(o->reward_cmd, text, r->tlen, o->reward_timeout, what, reward, err);
    }
    double rw = *acc;
    if (o->fmt_open && o->fmt_close) rw += o->format_weight * lmc_reward_format(text, o->fmt_open, o->fmt_close);
    if (o->len_coef != 0) rw += lmc_reward_length_penalty(r->n, o->len_free, o->max_new, o->len_coef);
    *reward = rw;
    return LMC_OK;
}

lmc_status lmc_rl_eval(struct lmc_rl *rl, struct lmc_rl_task *tasks, int64_t n, double *acc, lmc_err *err) {
    *acc = 0;
    if (n < 1) return lmc_err_set(err, LMC_ERR_ARG, "rl eval: no tasks");
    for (int64_t i = 0; i < n; i++) {
        lmc_status s = LMC_OK;
        if (!tasks[i].prompt && (s = render(rl->o.chat, &tasks[i], i, err))) return s;
        if (!tasks[i].ids && (s = lmc_tokenizer_encode(rl->tok, tasks[i].prompt, strlen(tasks[i].prompt), !tasks[i].messages,
                                                        &tasks[i].ids, &tasks[i].n_ids, err)))
            return lmc_err_prefix(err, "eval task %lld prompt", (long long)(i + 1)), s;
        if (tasks[i].n_ids < 1 || tasks[i].n_ids > rl->T - rl->o.max_new)
            return lmc_err_set(err, LMC_ERR_ARG, "eval task %lld: prompt of %lld tokens (1..%lld fit)",
                               (long long)(i + 1), (long long)tasks[i].n_ids, (long long)(rl->T - rl->o.max_new));
    }
    int64_t *idx = calloc((size_t)n, sizeof *idx);
    if (!idx) return lmc_err_set(err, LMC_ERR_OOM, "rl eval: out of memory");
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    struct rollout *r = NULL;
    lmc_status s = rollout(rl, tasks, idx, n, 1, 0.0, &r, err);
    double sum = 0;
    for (int64_t i = 0; !s && i < n; i++) {
        double rw, a;
        if ((s = score(rl, &tasks[i], i, &r[i], &rw, &a, err))) break;
        sum += a;
    }
    *acc = sum / (double)n;
    rollouts_free(r, n);
    free(idx);
    return s;
}

/* ---------------- the step ---------------- */

struct batch {
    int32_t *in, *tg;         /* (B, T) */
    int64_t *off;             /* (B+1) response tokens per row */
    int64_t *start;           /* (B) row position of the first response token */
    float *lpf, *hid;         /* (B*T) logp, (B*T*C) hidden */
    float *dlf, *dhid;        /* (B*T) d/dlogp, (B*T*C) */
    double *logp, *old, *ref, *samp, *dlogp, *adv, *rew, *ret, *val, *vnew, *dv; /* per response token */
    double *score, *seq_adv;  /* (B) */
};

static void batch_free(struct batch *b) {
    void *p[] = {b->in, b->tg, b->off, b->start, b->lpf, b->hid, b->dlf, b->dhid, b->logp, b->old, b->ref,
                 b->samp, b->dlogp, b->adv, b->rew, b->ret, b->val, b->vnew, b->dv, b->score, b->seq_adv};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    memset(b, 0, sizeof *b);
}

/* per-token values from hidden rows: v = h . w + b */
static void values_of(const struct lmc_rl *rl, const struct batch *b, double *v) {
    int64_t C = rl->pol.cfg.hidden_size;
    for (int64_t j = 0; j < rl->B; j++)
        for (int64_t k = b->off[j]; k < b->off[j + 1]; k++) {
            const float *h = b->hid + (j * rl->T + b->start[j] + (k - b->off[j])) * C;
            double s = rl->vh[C];
            for (int64_t c = 0; c < C; c++) s += (double)h[c] * rl->vh[c];
            v[k] = s;
        }
}

static void gather(const struct lmc_rl *rl, const struct batch *b, const float *rows, double *tok) {
    for (int64_t j = 0; j < rl->B; j++)
        for (int64_t k = b->off[j]; k < b->off[j + 1]; k++)
            tok[k] = rows[j * rl->T + b->start[j] + (k - b->off[j])];
}

/* LoRA: the reference forward runs the policy with its adapters off (each
 * adapted linear of the weight views has one adapter, lora_train.c) */
static void adapters_switch(struct lmc_tmodel *tm, bool on) {
    for (int64_t l = 0; l < tm->cfg.num_layers; l++)
        for (int sl = 0; sl < LMC_L_N; sl++) {
            struct lmc_linear *lin = &tm->W.layers[l].lin[sl];
            if (lin->adapters) lin->n_adapters = on ? 1 : 0;
        }
}

/* the temperature of the trainer's log-probabilities (policy, old and
 * reference): the sampling temperature, as the sampler reports them and as
 * TRL divides the logits; greedy rollouts (0) leave the logits as they are */
static double train_temp(const struct lmc_rl *rl) {
    return rl->o.temperature > 0 ? rl->o.temperature : 1.0;
}

/* forward of every micro-batch of the batch's rows */
static lmc_status fwd_all(struct lmc_rl *rl, struct lmc_tmodel *tm, const struct batch *b, float *lpf, float *hid,
                          lmc_err *err) {
    int64_t T = rl->T, MB = rl->MB, C = tm->cfg.hidden_size;
    for (int64_t r0 = 0; r0 < rl->B; r0 += MB) {
        lmc_status s = lmc_rl_fwd_temp(tm, &rl->acts, b->in + r0 * T, b->tg + r0 * T, train_temp(rl), lpf + r0 * T,
                                  hid ? hid + r0 * T * C : NULL, err);
        if (s) return s;
    }
    return LMC_OK;
}

/* backward of every micro-batch (after fwd_all on the policy: with one
 * micro-batch its activations are still there, else it is recomputed) */
static lmc_status bwd_all(struct lmc_rl *rl, const struct batch *b, float *lpf, lmc_err *err) {
    struct lmc_tmodel *tm = &rl->pol;
    int64_t T = rl->T, MB = rl->MB, C = tm->cfg.hidden_size;
    for (int64_t r0 = 0; r0 < rl->B; r0 += MB) {
        lmc_status s;
        if (MB < rl->B && (s = lmc_rl_fwd_temp(tm, &rl->acts, b->in + r0 * T, b->tg + r0 * T, train_temp(rl),
                                               lpf + r0 * T, NULL, err)))
            return s;
        if ((s = lmc_rl_bwd_temp(tm, &rl->acts, b->tg + r0 * T, train_temp(rl), b->dlf + r0 * T,
                                 b->dhid ? b->dhid + r0 * T * C : NULL, err)))
            return s;
    }
    return LMC_OK;
}

lmc_status lmc_rl_step(struct lmc_rl *rl, struct lmc_rl_metrics *mt, lmc_err *err) {
    const struct lmc_rl_opts *o = &rl->o;
    const struct lmc_backend *be = rl->be;
    struct lmc_tmodel *tm = &rl->pol;
    int64_t B = rl->B, T = rl->T, G = o->group, P = o->prompts, C = tm->cfg.hidden_size;
    bool ppo = o->algo == LMC_RL_PPO, have_ref = rl->have_ref || rl->ref_off;
    int64_t t0ff = tm->trainable_off;
    memset(mt, 0, sizeof *mt);
    mt->step = rl->step + 1;
    int64_t idx[4096];
    if (P > 4096) return lmc_err_set(err, LMC_ERR_ARG, "rl: at most 4096 prompts per step");
    for (int64_t p = 0; p < P; p++) idx[p] = (rl->next_task++) % rl->n_tasks;
    /* rollouts */
    double t0 = now_s();
    struct rollout *r = NULL;
    lmc_status s = rollout(rl, rl->tasks, idx, B, G, o->temperature, &r, err);
    if (s) return s;
    double t1 = now_s();
    mt->gen_s = t1 - t0;
    struct batch b = {0};
    size_t BT = (size_t)(B * T);
    b.in = calloc(BT, sizeof(int32_t));
    b.tg = malloc(BT * sizeof(int32_t));
    b.off = calloc((size_t)B + 1, sizeof(int64_t));
    b.start = calloc((size_t)B, sizeof(int64_t));
    b.lpf = malloc(BT * sizeof(float));
    b.dlf = calloc(BT, sizeof(float));
    b.hid = ppo ? malloc(BT * (size_t)C * sizeof(float)) : NULL;
    b.dhid = ppo ? calloc(BT * (size_t)C, sizeof(float)) : NULL;
    b.score = calloc((size_t)B, sizeof(double));
    b.seq_adv = calloc((size_t)B, sizeof(double));
    int64_t eos = tm->cfg.n_eos > 0 ? tm->cfg.eos_token_ids[0] : -1;
    int64_t ntok = 0;
    for (int64_t j = 0; j < B; j++) ntok += r[j].n + (r[j].stopped && eos >= 0);
    size_t N = (size_t)(ntok > 0 ? ntok : 1);
    double **tokarr[] = {&b.logp, &b.old, &b.ref, &b.samp, &b.dlogp, &b.adv, &b.rew, &b.ret, &b.val, &b.vnew, &b.dv};
    bool oom = !b.in || !b.tg || !b.off || !b.start || !b.lpf || !b.dlf || !b.score || !b.seq_adv ||
               (ppo && (!b.hid || !b.dhid));
    for (size_t i = 0; i < sizeof tokarr / sizeof tokarr[0]; i++) oom |= !(*tokarr[i] = calloc(N, sizeof(double)));
    if (oom) {
        s = lmc_err_set(err, LMC_ERR_OOM, "rl: batch of %lld x %lld: out of memory", (long long)B, (long long)T);
        goto done;
    }
    /* rows: prompt + response (+ EOS when it stopped), targets only on the response */
    for (size_t i = 0; i < BT; i++) b.tg[i] = -1;
    double rsum = 0, asum = 0;
    for (int64_t j = 0; j < B; j++) {
        const struct lmc_rl_task *t = &rl->tasks[idx[j / G]];
        int64_t nr = r[j].n + (r[j].stopped && eos >= 0), np = t->n_ids;
        int32_t *row = b.in + j * T, *tg = b.tg + j * T;
        for (int64_t k = 0; k < np; k++) row[k] = t->ids[k];
        for (int64_t k = 0; k < nr; k++) {
            int32_t id = k < r[j].n ? r[j].tok[k] : (int32_t)eos;
            if (np + k < T) row[np + k] = id;
            tg[np - 1 + k] = id;
            b.samp[b.off[j] + k] = k < r[j].n ? r[j].lp[k] : NAN;
        }
        b.start[j] = np - 1;
        b.off[j + 1] = b.off[j] + nr;
        double acc;
        if ((s = score(rl, t, idx[j / G], &r[j], &b.score[j], &acc, err))) goto done;
        rsum += b.score[j];
        asum += acc;
        mt->resp_len += (double)r[j].n;
        mt->rollout_tokens += r[j].n;
    }
    mt->reward = rsum / (double)B;
    mt->accuracy = asum / (double)B;
    mt->resp_len /= (double)B;
    mt->rollout_tok_s = mt->gen_s > 0 ? (double)mt->rollout_tokens / mt->gen_s : 0;
    /* the reference, then the rollout policy's log-probabilities (and values) */
    if (rl->have_ref || rl->ref_off) {
        if (rl->ref_off) adapters_switch(tm, false);
        s = fwd_all(rl, rl->ref_off ? tm : &rl->ref, &b, b.lpf, NULL, err);
        if (rl->ref_off) adapters_switch(tm, true);
        if (s) goto done;
        gather(rl, &b, b.lpf, b.ref);
    }
    if ((s = fwd_all(rl, tm, &b, b.lpf, b.hid, err))) goto done;
    gather(rl, &b, b.lpf, b.old);
    double ent = 0;
    for (int64_t k = 0; k < ntok; k++) {
        ent -= b.old[k];
        if (!isnan(b.samp[k])) mt->logp_maxdiff = fmax(mt->logp_maxdiff, fabs(b.samp[k] - b.old[k]));
    }
    mt->entropy = ntok ? ent / (double)ntok : 0;
    if (ppo) {
        values_of(rl, &b, b.val);
        if (have_ref) lmc_rl_ppo_rewards(&o->ppo, B, b.off, b.score, b.old, b.ref, b.rew);
        else {
            memset(b.rew, 0, N * sizeof(double));
            for (int64_t j = 0; j < B; j++)
                if (b.off[j + 1] > b.off[j]) b.rew[b.off[j + 1] - 1] = b.score[j];
        }
        lmc_rl_ppo_gae(&o->ppo, B, b.off, b.rew, b.val, b.adv, b.ret);
    } else {
        lmc_rl_grpo_advantages(b.score, B, G, o->scale_std, b.seq_adv);
    }
    struct lmc_rl_grpo_cfg gc = o->grpo;
    if (gc.avg == LMC_RL_AVG_DR) gc.max_len = o->max_new;
    for (int64_t e = 0; e < o->epochs; e++) {
        if (e == 0) memcpy(b.logp, b.old, N * sizeof(double));
        else {
            if ((s = fwd_all(rl, tm, &b, b.lpf, b.hid, err))) goto done;
            gather(rl, &b, b.lpf, b.logp);
        }
        struct lmc_rl_stats st;
        if (ppo) {
            values_of(rl, &b, b.vnew);
            lmc_rl_ppo_loss(&o->ppo, ntok, b.logp, b.old, b.adv, b.vnew, b.val, b.ret, b.dlogp, b.dv, &st);
            if (have_ref) {
                double kl = 0;
                for (int64_t k = 0; k < ntok; k++) kl += b.old[k] - b.ref[k];
                st.kl = ntok ? kl / (double)ntok : 0;
            }
        } else {
            lmc_rl_grpo_loss(&gc, B, b.off, b.seq_adv, b.logp, b.old, have_ref ? b.ref : NULL, b.dlogp, &st);
        }
        /* scatter the token gradients to rows */
        double *gvh = ppo ? calloc((size_t)C + 1, sizeof(double)) : NULL;
        if (ppo && !gvh) {
            s = lmc_err_set(err, LMC_ERR_OOM, "rl: out of memory");
            goto done;
        }
        for (int64_t j = 0; j < B; j++)
            for (int64_t k = b.off[j]; k < b.off[j + 1]; k++) {
                int64_t row = j * T + b.start[j] + (k - b.off[j]);
                b.dlf[row] = (float)b.dlogp[k];
                if (ppo) {
                    float *dh = b.dhid + row * C;
                    const float *h = b.hid + row * C;
                    for (int64_t c = 0; c < C; c++) {
                        dh[c] = (float)(b.dv[k] * rl->vh[c]);
                        gvh[c] += b.dv[k] * h[c];
                    }
                    gvh[C] += b.dv[k];
                }
            }
        double t2 = now_s();
        lmc_tmodel_zero_grad(tm);
        if ((s = bwd_all(rl, &b, b.lpf, err))) {
            free(gvh);
            goto done;
        }
        double gn = sqrt(be->sumsq(be->ctx, tm->g + (t0ff - tm->g_off), tm->numel - t0ff));
        float gscale = lmc_grad_clip_scale(gn, o->grad_clip);
        struct lmc_adamw_cfg ac = {.lr = o->lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0};
        if (isfinite(gn)) {
            for (int i = 0; i < tm->n_params; i++) {
                const struct lmc_tparam *p = &tm->params[i];
                if (p->off < t0ff) continue; /* the frozen base of a LoRA policy */
                struct lmc_adamw_step as;
                lmc_adamw_step_make(&ac, rl->step * o->epochs + e + 1, o->lr, false, gscale, &as);
                be->adamw(be->ctx, tm->w + p->off, lmc_tmodel_grad(tm, p), rl->m + (p->off - t0ff),
                          rl->v + (p->off - t0ff), p->numel, &as);
            }
            if (ppo) {
                float g32[4097];
                float *gv = C + 1 <= 4097 ? g32 : malloc(((size_t)C + 1) * sizeof(float));
                if (gv) {
                    for (int64_t c = 0; c <= C; c++) gv[c] = (float)gvh[c];
                    lmc_adamw_update(&ac, rl->step * o->epochs + e + 1, o->lr, false, rl->vh, gv, rl->vh_m,
                                     rl->vh_v, C + 1);
                    if (gv != g32) free(gv);
                }
            }
        }
        be->sync(be->ctx);
        free(gvh);
        for (int64_t j = 0; j < B; j++)
            for (int64_t k = b.off[j]; k < b.off[j + 1]; k++) b.dlf[j * T + b.start[j] + (k - b.off[j])] = 0;
        mt->train_s += now_s() - t2;
        if (e == 0) mt->kl = st.kl;
        mt->loss = st.loss;
        mt->vf_loss = st.vf_loss;
        mt->clip_frac = st.clip_frac;
        mt->grad_norm = gn;
    }
    double tt = now_s() - t1;
    mt->train_tok_s = tt > 0 ? (double)(B * T) * (double)o->epochs / tt : 0;
    rl->step++;
done:
    rollouts_free(r, B);
    batch_free(&b);
    return s;
}
