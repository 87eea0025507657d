/* cmd_rl.c — `lmc rl`: reinforcement learning from verifiable rewards
 * (GRPO or PPO, train/rl.h) on the CPU or CUDA backend: reads tasks (JSONL),
 * trains the policy (every weight, or LoRA adapters with --lora R) in
 * place for --steps steps, writes one metrics line per step to
 * OUT/metrics.jsonl (for `lmc plot`), checkpoints every --save-every
 * steps to OUT/ckpt/step_N (--resume continues one bit for bit) and the
 * final policy as a Hugging Face folder, or a PEFT adapter, OUT/final. */
#include "cli.h"
#include "core/core.h"
#include "tokenizer/chat_template.h"
#include "train/rl.h"
#include "train/trainer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void) {
    fprintf(stderr,
            "usage: lmc rl -m POLICY --tasks FILE.jsonl -o OUT [--algo grpo|ppo] [--group 8] [--prompts 4]\n"
            "              [--steps 100] [--max-new 256] [--epochs 1] [--micro ROWS] [--lr 1e-6]\n"
            "              [--temperature 1]\n"
            "              [--kl 0.04] [--clip 0.2] [--clip-high 0.2] [--loss seq|token|dr] [--no-std]\n"
            "              [--ppo-kl 0.05] [--vf-coef 0.1] [--gamma 1] [--lam 0.95] [--clip-value 0.2]\n"
            "              [--extract auto|boxed|hash|regex|number] [--answer-regex RE]\n"
            "              [--format-tags OPEN,CLOSE] [--format-weight 0.5] [--length-penalty C] [--length-free N]\n"
            "              [--reward-cmd 'PROG ARG...'] [--reward-timeout 10] [--eval FILE.jsonl] [--seed 1]\n"
            "              [--grad-clip 1] [--chat-template FILE] [--threads N] [--device cpu|cuda] [--dtype fp32|bf16]\n"
            "              [--lora R [--lora-alpha 2R] [--lora-targets LIST|all-linear] [--rslora]]\n"
            "              [--save-every N (OUT/ckpt/step_N)] [--resume OUT/ckpt/step_N]\n"
            "Each task line: {\"prompt\": \"...\", \"answer\": \"...\"} or {\"messages\": [...], \"answer\": ...}\n"
            "(messages rendered by the model's chat template with the generation prompt).\n");
}

/* splits s on spaces into a NULL-terminated argv (no shell, no quoting) */
static char **split_argv(char *s) {
    int n = 0, cap = 8;
    char **v = malloc((size_t)cap * sizeof *v);
    for (char *t = strtok(s, " \t"); v && t; t = strtok(NULL, " \t")) {
        if (n + 2 > cap) {
            char **q = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!q) {
                free(v);
                return NULL;
            }
            v = q;
        }
        v[n++] = t;
    }
    if (v) v[n] = NULL;
    if (v && n == 0) {
        free(v);
        return NULL;
    }
    return v;
}

static lmc_status load_tasks(const char *path, struct lmc_rl_task **t, int64_t *n, lmc_err *err) {
    char *buf;
    size_t len;
    lmc_status s = lmc_file_read(path, (size_t)1 << 32, &buf, &len, err);
    if (s) return s;
    s = lmc_rl_tasks_parse(buf, len, path, t, n, err);
    free(buf);
    return s;
}

int cmd_rl(int argc, char **argv) {
    struct cli_common cc = {0};
    struct lmc_rl_opts o;
    lmc_rl_opts_default(&o);
    const char *tmpl_file = NULL, *tasks_path = NULL, *out = NULL, *eval_path = NULL, *fmt = NULL, *rcmd = NULL;
    int64_t steps = 100, seed = 1, lora_r = 0, save_every = 0;
    double clip = 0.2, clip_high = -1, lora_alpha = 0;
    const char *lora_targets = "all-linear", *resume = NULL;
    bool rslora = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--lora")) { /* before the common options, which take --lora DIR for inference */
            if (!v || !cli_parse_i64(v, 1, 4096, &lora_r)) {
                fprintf(stderr, "lmc rl: --lora takes the adapter rank R (a new adapter is trained; "
                                "merge an existing one first with lmc merge)\n");
                return 2;
            }
            i++;
            continue;
        }
        if (!strcmp(a, "--rslora")) { rslora = true; continue; }
        int r = cli_common_arg(&cc, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--no-std")) { o.scale_std = false; continue; }
        if (!v) {
            fprintf(stderr, "lmc rl: unknown option %s (or missing value)\n", a);
            return 2;
        }
        i++;
        bool ok = true, found = true;
        struct { const char *name; int64_t *p; int64_t lo, hi; } ints[] = {
            {"--group", &o.group, 1, 4096}, {"--prompts", &o.prompts, 1, 4096},
            {"--max-new", &o.max_new, 1, 1 << 20}, {"--epochs", &o.epochs, 1, 1024},
            {"--steps", &steps, 1, (int64_t)1 << 40}, {"--seed", &seed, 0, INT64_MAX},
            {"--length-free", &o.len_free, 0, 1 << 20}, {"--micro", &o.micro, 0, 1 << 20},
            {"--save-every", &save_every, 1, (int64_t)1 << 40},
        };
        struct { const char *name; double *p; double lo, hi; } dbls[] = {
            {"--lr", &o.lr, 0, 10}, {"--temperature", &o.temperature, 0, 100}, {"--kl", &o.grpo.beta, 0, 100},
            {"--clip", &clip, 0, 10}, {"--clip-high", &clip_high, 0, 10}, {"--ppo-kl", &o.ppo.kl_coef, 0, 100},
            {"--vf-coef", &o.ppo.vf_coef, 0, 100}, {"--gamma", &o.ppo.gamma, 0, 1}, {"--lam", &o.ppo.lam, 0, 1},
            {"--clip-value", &o.ppo.clip_value, 0, 1e9}, {"--format-weight", &o.format_weight, -100, 100},
            {"--length-penalty", &o.len_coef, -100, 100}, {"--reward-timeout", &o.reward_timeout, 0.001, 86400},
            {"--grad-clip", &o.grad_clip, 0, 1e9}, {"--lora-alpha", &lora_alpha, 1e-6, 1e6},
        };
        bool hit = false;
        for (size_t k = 0; !hit && k < sizeof ints / sizeof *ints; k++)
            if (!strcmp(a, ints[k].name)) hit = true, ok = cli_parse_i64(v, ints[k].lo, ints[k].hi, ints[k].p);
        for (size_t k = 0; !hit && k < sizeof dbls / sizeof *dbls; k++)
            if (!strcmp(a, dbls[k].name)) hit = true, ok = cli_parse_f64(v, dbls[k].lo, dbls[k].hi, dbls[k].p);
        if (hit) {
        } else if (!strcmp(a, "--tasks")) tasks_path = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--eval")) eval_path = v;
        else if (!strcmp(a, "--answer-regex")) o.regex = v, o.extract = LMC_EXTRACT_REGEX;
        else if (!strcmp(a, "--format-tags")) fmt = v;
        else if (!strcmp(a, "--chat-template")) tmpl_file = v;
        else if (!strcmp(a, "--reward-cmd")) rcmd = v;
        else if (!strcmp(a, "--lora-targets")) lora_targets = v;
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--algo")) {
            if (!strcmp(v, "grpo")) o.algo = LMC_RL_GRPO;
            else if (!strcmp(v, "ppo")) o.algo = LMC_RL_PPO;
            else ok = false;
        } else if (!strcmp(a, "--loss")) {
            if (!strcmp(v, "seq")) o.grpo.avg = LMC_RL_AVG_SEQ;
            else if (!strcmp(v, "token")) o.grpo.avg = LMC_RL_AVG_TOKEN;
            else if (!strcmp(v, "dr")) o.grpo.avg = LMC_RL_AVG_DR;
            else ok = false;
        } else if (!strcmp(a, "--extract")) {
            const char *names[] = {"auto", "boxed", "hash", "regex", "number"};
            ok = false;
            for (int k = 0; k < 5; k++)
                if (!strcmp(v, names[k])) o.extract = (enum lmc_extract)k, ok = true;
        } else found = false;
        if (!found) {
            fprintf(stderr, "lmc rl: unknown option %s\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "lmc rl: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    if (!cc.model_dir || !tasks_path || !out) {
        usage();
        return 2;
    }
    if (o.extract == LMC_EXTRACT_REGEX && !o.regex) {
        fprintf(stderr, "lmc rl: --extract regex needs --answer-regex\n");
        return 2;
    }
    o.grpo.eps_low = clip;
    o.grpo.eps_high = clip_high >= 0 ? clip_high : clip;
    o.ppo.clip = clip;
    o.seed = (uint64_t)seed;
    o.resume = resume;
    struct lmc_lora_config lc = {.r = lora_r, .alpha = lora_alpha > 0 ? lora_alpha : 2.0 * (double)lora_r,
                                 .rslora = rslora};
    if (!lora_r && (lora_alpha > 0 || rslora || strcmp(lora_targets, "all-linear"))) {
        fprintf(stderr, "lmc rl: --lora-alpha, --lora-targets and --rslora need --lora R\n");
        return 2;
    }
    if (lora_r) {
        lmc_err e = {0};
        if (lmc_lora_parse_targets(&lc, lora_targets, &e)) return cli_fail("rl --lora-targets", &e);
        o.lora = &lc;
    }
    char fbuf[512], *rbuf = NULL;
    if (fmt) {
        snprintf(fbuf, sizeof fbuf, "%s", fmt);
        char *comma = strchr(fbuf, ',');
        if (!comma || comma == fbuf || !comma[1]) {
            fprintf(stderr, "lmc rl: --format-tags expects OPEN,CLOSE, got '%s'\n", fmt);
            return 2;
        }
        *comma = 0;
        o.fmt_open = fbuf, o.fmt_close = comma + 1;
        if (o.format_weight == 0) o.format_weight = 0.5;
    }
    if (rcmd) {
        rbuf = malloc(strlen(rcmd) + 1);
        if (rbuf) strcpy(rbuf, rcmd);
        o.reward_cmd = rbuf ? split_argv(rbuf) : NULL;
        if (!o.reward_cmd) {
            fprintf(stderr, "lmc rl: --reward-cmd: empty command\n");
            free(rbuf);
            return 2;
        }
    }
    lmc_err err = {0};
    int rc = 0;
    struct cli_model cm = {0};
    struct lmc_rl_task *tasks = NULL, *etasks = NULL;
    int64_t nt = 0, ne = 0;
    struct lmc_rl rl = {0};
    bool have_rl = false, have_be = false;
    struct lmc_backend be;
    struct lmc_chat_template *ct = NULL;
    FILE *mf = NULL;
    if (load_tasks(tasks_path, &tasks, &nt, &err) || (eval_path && load_tasks(eval_path, &etasks, &ne, &err))) {
        rc = cli_fail("rl", &err);
        goto done;
    }
    if ((rc = cli_open(&cm, &cc, false))) goto done;
    /* --device cpu|cuda (cpu by default), --dtype fp32|bf16 on the GPU
     * (bf16 mixed precision by default; fp32 also keeps the rollouts' KV
     * cache in f32, so sampler and trainer log-probabilities agree) */
    bool bf16 = false;
    if ((rc = cli_train_backend(&be, &cc, "rl", &bf16))) goto done;
    have_be = true;
    bool chat = false;
    for (int64_t i = 0; i < nt; i++) chat |= tasks[i].messages != NULL;
    for (int64_t i = 0; i < ne; i++) chat |= etasks[i].messages != NULL;
    if (chat) {
        if (lmc_chat_template_load(cc.model_dir, tmpl_file, cm.tok, &ct, &err)) {
            rc = cli_fail("rl: chat template for the tasks' messages", &err);
            goto done;
        }
        o.chat = ct;
    }
    if (lmc_rl_init(&rl, cc.model_dir, &be, cm.tok, tasks, nt, &o, &err)) {
        rc = cli_fail("rl", &err);
        goto done;
    }
    have_rl = true;
    if (mkdir(out, 0755) && errno != EEXIST) {
        fprintf(stderr, "lmc rl: cannot create %s: %s\n", out, strerror(errno));
        rc = 1;
        goto done;
    }
    char path[4096];
    lmc_path_join(path, sizeof path, out, "metrics.jsonl");
    if (!(mf = fopen(path, resume ? "a" : "w"))) {
        fprintf(stderr, "lmc rl: cannot open %s: %s\n", path, strerror(errno));
        rc = 1;
        goto done;
    }
    double acc0 = 0, acc1 = 0;
    if (etasks && lmc_rl_eval(&rl, etasks, ne, &acc0, &err)) {
        rc = cli_fail("rl eval", &err);
        goto done;
    }
    if (etasks) fprintf(stderr, "held-out accuracy before: %.4f (%lld tasks, greedy)\n", acc0, (long long)ne);
    if (resume) fprintf(stderr, "lmc rl: resumed %s at step %lld\n", resume, (long long)rl.step);
    if (lora_r || resume)
        fprintf(stderr, "lmc rl: %lld trained parameters%s\n", (long long)(rl.pol.numel - rl.pol.trainable_off),
                rl.have_lt ? " (LoRA; the reference is the base with the adapters off)" : "");
    while (rl.step < steps) {
        struct lmc_rl_metrics m;
        if (lmc_rl_step(&rl, &m, &err)) {
            rc = cli_fail("rl", &err);
            goto done;
        }
        fprintf(mf,
                "{\"step\": %lld, \"reward\": %.6g, \"accuracy\": %.6g, \"kl\": %.6g, \"clip_frac\": %.6g, "
                "\"entropy\": %.6g, \"response_len\": %.6g, \"loss\": %.9g, \"vf_loss\": %.6g, \"grad_norm\": %.6g, "
                "\"rollout_tok_s\": %.6g, \"train_tok_s\": %.6g, \"gen_s\": %.6g, \"train_s\": %.6g, "
                "\"logp_maxdiff\": %.3g}\n",
                (long long)m.step, m.reward, m.accuracy, m.kl, m.clip_frac, m.entropy, m.resp_len, m.loss, m.vf_loss,
                m.grad_norm, m.rollout_tok_s, m.train_tok_s, m.gen_s, m.train_s, m.logp_maxdiff);
        fflush(mf);
        fprintf(stderr, "step %lld reward %.3f acc %.3f kl %.4f clip %.3f len %.1f rollout %.0f tok/s train %.0f tok/s\n",
                (long long)m.step, m.reward, m.accuracy, m.kl, m.clip_frac, m.resp_len, m.rollout_tok_s, m.train_tok_s);
        if (save_every && rl.step % save_every == 0) {
            char ck[4200];
            lmc_path_join(path, sizeof path, out, "ckpt");
            if (mkdir(path, 0755) && errno != EEXIST) {
                fprintf(stderr, "lmc rl: cannot create %s: %s\n", path, strerror(errno));
                rc = 1;
                goto done;
            }
            snprintf(ck, sizeof ck, "%s/step_%06lld", path, (long long)rl.step);
            if (lmc_rl_ckpt_save(&rl, ck, cc.model_dir, &err)) {
                rc = cli_fail("rl: checkpoint", &err);
                goto done;
            }
            fprintf(stderr, "checkpoint %s\n", ck);
        }
    }
    if (etasks) {
        if (lmc_rl_eval(&rl, etasks, ne, &acc1, &err)) {
            rc = cli_fail("rl eval", &err);
            goto done;
        }
        fprintf(stderr, "held-out accuracy after: %.4f\n", acc1);
    }
    /* the final policy: a Hugging Face folder, or the adapter as a PEFT folder */
    lmc_path_join(path, sizeof path, out, "final");
    if (lmc_rl_save_policy(&rl, path, cc.model_dir, &err)) {
        rc = cli_fail("rl: saving the policy", &err);
        goto done;
    }
    fprintf(stderr, "saved %s\n", path);
done:
    if (mf) fclose(mf);
    if (have_rl) lmc_rl_free(&rl);
    if (have_be) cli_train_backend_free(&be);
    if (ct) lmc_chat_template_free(ct);
    cli_close(&cm);
    lmc_rl_tasks_free(tasks, nt);
    lmc_rl_tasks_free(etasks, ne);
    free(o.reward_cmd);
    free(rbuf);
    return rc;
}
