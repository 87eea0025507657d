/* rl.h — reinforcement learning from verifiable rewards (GRPO, PPO), end
 * to end in C: tasks from JSONL, rollouts of G completions per prompt from
 * the serving scheduler (continuous batching, prompt prefix sharing)
 * reading the policy's training weights in place, rewards (train/reward.h),
 * the losses (train/rl_loss.h) through the training forward/backward
 * (train/rl_model.h), AdamW on the policy (and the PPO value head), a
 * frozen reference model for the KL, and per-step metrics. Full-parameter
 * or LoRA training on one backend (with LoRA the reference is the same
 * weights with the adapters switched off: no second copy); the rollouts
 * of a step are one batch, run as micro-batches of --micro rows with the
 * gradients accumulated. Checkpoints (rl_ckpt.c) hold the policy or its
 * adapter, the AdamW moments, the value head, the step (which seeds the
 * rollouts) and the task position: a resumed run repeats the
 * uninterrupted one bit for bit on the same backend and thread count. */
#ifndef LMC_TRAIN_RL_H
#define LMC_TRAIN_RL_H

#include "lmc.h"
#include "model/backward.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"
#include "train/lora_train.h"
#include "train/reward.h"
#include "train/rl_loss.h"

#include <stdbool.h>
#include <stdint.h>

struct lmc_chat_template;

struct lmc_rl_task {
    char *prompt;             /* text given to the model as is (or rendered from messages) */
    char *messages;           /* chat messages as JSON text, or NULL */
    char *answer;             /* what the reward matches (may be NULL with --reward-cmd) */
    int32_t *ids;             /* the prompt's tokens (filled by lmc_rl_init) */
    int64_t n_ids;
};

/* Parses JSONL (one object per non-blank line): "prompt" (string) or
 * "messages" (an array of chat messages, rendered by lmc_rl_init through
 * the chat template with the generation prompt), and "answer" (string or
 * number). Errors name path and line. */
lmc_status lmc_rl_tasks_parse(const char *buf, size_t len, const char *path, struct lmc_rl_task **tasks,
                              int64_t *n, lmc_err *err);
void lmc_rl_tasks_free(struct lmc_rl_task *tasks, int64_t n);

enum lmc_rl_algo { LMC_RL_GRPO = 0, LMC_RL_PPO };

struct lmc_rl_opts {
    enum lmc_rl_algo algo;
    int64_t group;            /* completions per prompt (G) */
    int64_t prompts;          /* prompts per step */
    int64_t max_new;
    int64_t epochs;           /* optimisation steps per batch of rollouts (GRPO's mu) */
    int64_t micro;            /* rows per forward/backward (0: the whole batch); must divide
                               * prompts * group. Below the batch, each optimisation step runs
                               * the forwards twice (log-probs for the loss, then the backward) */
    double temperature;
    double lr, grad_clip;
    struct lmc_rl_grpo_cfg grpo;
    bool scale_std;           /* GRPO: divide advantages by the group std (off: Dr. GRPO) */
    struct lmc_rl_ppo_cfg ppo;
    /* reward = match(extract(completion), answer) + format_weight * format
     *          + length penalty, or the reward command's number */
    enum lmc_extract extract;
    const char *regex;
    const char *fmt_open, *fmt_close;
    double format_weight;
    double len_coef;
    int64_t len_free;
    char **reward_cmd;        /* argv, NULL-terminated; NULL: built-in rewards */
    const struct lmc_chat_template *chat; /* renders "messages" tasks (NULL: such tasks are an error) */
    double reward_timeout;
    uint64_t seed;
    /* LoRA policy: adapters of this config (NULL: every weight trained) */
    const struct lmc_lora_config *lora;
    /* a checkpoint folder (lmc_rl_ckpt_save) to continue from, or NULL */
    const char *resume;
};
void lmc_rl_opts_default(struct lmc_rl_opts *o);

struct lmc_rl_metrics {
    int64_t step;
    double reward, accuracy, kl, clip_frac, entropy, resp_len, loss, vf_loss, grad_norm;
    double rollout_tok_s, train_tok_s, gen_s, train_s;
    double logp_maxdiff;      /* max |sampler logprob - trainer logprob| over sampled tokens */
    int64_t rollout_tokens;
};

struct lmc_rl {
    struct lmc_tmodel pol, ref;
    bool have_ref;            /* a separate frozen reference model (full-parameter runs) */
    bool ref_off;             /* LoRA: the reference is pol with its adapters switched off */
    struct lmc_lora lo;       /* LoRA: the adapter (host copy; training copy in pol) */
    struct lmc_lora_train lt;
    bool have_lt;
    const struct lmc_backend *be;
    const struct lmc_tokenizer *tok;
    struct lmc_rl_task *tasks;
    int64_t n_tasks, next_task;
    struct lmc_rl_opts o;
    struct lmc_tacts acts;
    float *m, *v;             /* AdamW moments of the trained floats [pol.trainable_off, pol.numel) */
    float *vh, *vh_m, *vh_v;  /* PPO value head (C weights + bias), host */
    int64_t step, T, B, MB;   /* MB: rows per micro-batch */
};

/* Loads the policy (and, when a KL is used without LoRA, a frozen
 * reference) from policy_dir onto be, attaches a new LoRA adapter when
 * o->lora is set, restores o->resume when set, and tokenizes the tasks
 * (not owned; kept). */
lmc_status lmc_rl_init(struct lmc_rl *rl, const char *policy_dir, const struct lmc_backend *be,
                       const struct lmc_tokenizer *tok, struct lmc_rl_task *tasks, int64_t n_tasks,
                       const struct lmc_rl_opts *o, lmc_err *err);
/* One RL step: rollouts, rewards, epochs optimisation steps. */
lmc_status lmc_rl_step(struct lmc_rl *rl, struct lmc_rl_metrics *mt, lmc_err *err);
/* Mean match accuracy of greedy completions on tasks (no update; prompts
 * tokenized here when not yet, and must fit the rollout length). */
lmc_status lmc_rl_eval(struct lmc_rl *rl, struct lmc_rl_task *tasks, int64_t n, double *acc,
                       lmc_err *err);
void lmc_rl_free(struct lmc_rl *rl);

/* A checkpoint folder dir (written through a temporary folder renamed at
 * the end): policy/ (a Hugging Face folder with f32 weights and the AdamW
 * moments) or adapter/ (a PEFT folder and the adapter's moments), and
 * rl_state.json (step, task position, run shape, value head and its
 * moments), written last. tok_dir: the tokenizer files' folder. */
lmc_status lmc_rl_ckpt_save(const struct lmc_rl *rl, const char *dir, const char *tok_dir, lmc_err *err);
/* Reads dir's rl_state.json: the checks against rl's run shape and the
 * state restored into rl (called by lmc_rl_init with o->resume, after
 * the policy or adapter of dir was loaded). */
lmc_status lmc_rl_ckpt_load_state(struct lmc_rl *rl, const char *dir, lmc_err *err);
/* Writes the final policy: a Hugging Face folder (full-parameter) or a
 * PEFT adapter folder (LoRA) at dir. */
lmc_status lmc_rl_save_policy(const struct lmc_rl *rl, const char *dir, const char *config_dir, lmc_err *err);

#endif
