/* cli.h — shared pieces of the lmc command-line tool: the options every
 * model command takes, opening a model folder (model, tokenizer, backend)
 * and small parsing helpers. Each command lives in its own cmd_*.c. */
#ifndef LMC_CLI_H
#define LMC_CLI_H

#include "lmc.h"
#include "model/model.h"
#include "ops/backend.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"

#include <stdbool.h>
#include <stdint.h>

#define CLI_MAX_LORA 8

struct cli_common {
    const char *model_dir;
    int threads;              /* 0 = all cores */
    int64_t ctx;              /* 0 = model maximum (capped) */
    enum lmc_wdtype wdtype;
    const char *device;       /* "cpu" (default) */
    bool json;
    /* --lora DIR[:SCALE] (repeatable): PEFT adapters applied to the model */
    char lora_dir[CLI_MAX_LORA][1024];
    double lora_mul[CLI_MAX_LORA];
    int n_lora;
};

struct cli_model {
    struct lmc_model model;
    struct lmc_tokenizer *tok;
    struct lmc_backend be;
    bool have_model, have_be;
    struct lmc_lora lora[CLI_MAX_LORA];
    struct lmc_lora_binding lora_bind;
    int n_lora;
    bool have_bind;
};

/* Consumes a common option at argv[*i] (advancing *i past its value);
 * returns 1 if consumed, 0 if not a common option, -1 on a bad value. */
int cli_common_arg(struct cli_common *c, int argc, char **argv, int *i);
/* Parses DIR[:SCALE] of --lora into c (returns false on a bad value). */
bool cli_lora_arg(struct cli_common *c, const char *v);
/* Loads what the command needs (adapters of --lora bound into the model); prints the error and returns non-zero. */
int cli_open(struct cli_model *cm, const struct cli_common *c, bool need_model);
void cli_close(struct cli_model *cm);
/* Default context for a model: min(max_position_embeddings, 4096) unless set. */
int64_t cli_ctx(const struct cli_common *c, const struct lmc_model *m);

/* The backend of a training command (cli_train.c): --device cpu (default)
 * or cuda (GPU 0; the backend's LMC_ERR_UNSUPPORTED when the build or the
 * machine has none), --dtype fp32|bf16: the training precision (GPU:
 * default bf16, lmc_backend_cuda_set_train_bf16; CPU: default fp32, bf16
 * through lmc_backend_cpu_set_train_bf16 where the CPU has AVX512-BF16).
 * *bf16 says which was chosen. Prints the error and returns non-zero (2:
 * bad option combination, 1: no such backend). */
int cli_train_backend(struct lmc_backend *be, const struct cli_common *c, const char *cmd,
                      bool *bf16);
void cli_train_backend_free(struct lmc_backend *be);
/* The memory account of a trainer (train/train_mem.h) as one line on
 * stderr ("lmc CMD: memory (MiB): ...") and as JSON in json_path (NULL:
 * none). mem0: the device's bytes in use before the model was built
 * (lmc_backend_cuda_mem_used; 0 on the CPU); after_step: the first step
 * has run, so on a device the bytes in use now, less mem0, are printed
 * and written beside the account (the difference is op scratch). */
struct lmc_trainer;
struct lmc_lora_train;
struct lmc_qlora;
void cli_train_mem_report(const char *cmd, const struct lmc_backend *be, const struct lmc_trainer *tr,
                          const struct lmc_lora_train *lt, const struct lmc_qlora *ql, int qkind,
                          const char *json_path, size_t mem0, bool after_step);

/* Parallel features a command's options turn on, in the order they are
 * checked (cli_caps.c). CLI_CAP_DP_OPTIM: an optimizer other than AdamW
 * with several data-parallel ranks. */
enum cli_cap { CLI_CAP_EP, CLI_CAP_SP, CLI_CAP_TP, CLI_CAP_CP, CLI_CAP_PP, CLI_CAP_DP_OPTIM, CLI_CAP_N };
/* Refuses a feature that cmd ("generate", "serve", "finetune", "train")
 * does not run on device (--device as given; NULL: the CPU, where these
 * features open their own backend): prints "lmc CMD: FLAG ... (--device
 * DEV)" naming the first such flag and returns 2; 0 when all of on[] run
 * there. optim: the optimizer's name for CLI_CAP_DP_OPTIM. */
int cli_caps_check(const char *cmd, const char *device, const bool on[CLI_CAP_N], const char *optim);

/* Value parsing that rejects junk ("12x", empty, out of range). */
bool cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
bool cli_parse_f64(const char *s, double lo, double hi, double *out);
/* Prints "lmc: <what>: <msg>" to stderr and returns 1. */
int cli_fail(const char *what, const lmc_err *err);

/* --tp T under a launcher (cli_mp.c): the world split into tensor-parallel
 * groups of T consecutive ranks (*tpc) and the data-parallel groups across
 * them (*dpc); with world == T nothing is split (both flags false: the
 * world is the one TP group). Prints the error; 2 on a bad layout. */
struct lmc_comm;
int cli_mp_groups(struct lmc_comm *world, int tp, struct lmc_comm *tpc, bool *have_tpc, struct lmc_comm *dpc,
                  bool *have_dpc, const char *cmd);
/* The same for the model-parallel flag `flag` (--tp, --cp, --pp) of size n. */
int cli_mp_groups_flag(struct lmc_comm *world, int n, const char *flag, struct lmc_comm *tpc, bool *have_tpc,
                       struct lmc_comm *dpc, bool *have_dpc, const char *cmd);
/* --tp/--cp/--pp of train/finetune: *n, *flag the one above 1 (n 1: none);
 * two of them, or one with --zero 1-3 (--tp: 2-3), print the refusal and
 * return 2. */
int cli_mp_pick(const char *cmd, int64_t tp, int64_t cp, int64_t pp, int64_t zero, int *n, const char **flag);
/* --tp T --cp C (TP x CP x DP): after lmc_trainer_tp_attach with dpc (the
 * C x D ranks holding one TP shard), the context-parallel groups (C
 * consecutive ranks of dpc) into *cpc and lmc_trainer_cp_attach. Prints the
 * error; non-zero on failure (free *cpc when *have_cpc, before dpc). */
struct lmc_trainer;
/* --tp T --zero 2|3: the zero module over the data-parallel group dpc
 * (lmc_trainer_dist_init after the TP attach); 0, or the exit code after
 * printing why (no data-parallel group: nothing to shard). */
int cli_mp_attach_zero(struct lmc_trainer *tr, struct lmc_comm *dpc, int zero, const char *desc, const char *cmd);
int cli_mp_attach_cp(struct lmc_trainer *tr, struct lmc_comm *dpc, int cp, struct lmc_comm *cpc, bool *have_cpc,
                     const char *desc, const char *cmd);
/* --tp T --pp P (TP x PP x DP): the same with pipeline groups (*ppc: P
 * consecutive ranks of dpc) and their data-parallel groups (*ddc, when
 * D > 1), then lmc_trainer_pp_attach_v (layers: --pp-layers or NULL).
 * Free *ppc, *ddc before dpc. */
int cli_mp_attach_pp(struct lmc_trainer *tr, struct lmc_comm *dpc, int pp, const char *layers, struct lmc_comm *ppc,
                     bool *have_ppc, struct lmc_comm *ddc, bool *have_ddc, const char *desc, const char *cmd);
/* --tp T --pp P --cp C (TP x CP x PP x DP, TP innermost): the rings (*cpc:
 * C consecutive ranks of dpc, the ranks holding one TP shard), the stages
 * across them (lmc_trainer_pp_attach_cp splits the pipelines from dpc). */
int cli_mp_attach_ppcp(struct lmc_trainer *tr, struct lmc_comm *dpc, int pp, int cp, const char *layers,
                       struct lmc_comm *cpc, bool *have_cpc, const char *desc, const char *cmd);
/* The start-up line of --cp / --pp runs (rank 0). */
void cli_mp_log(const char *cmd, int64_t cp, int64_t pp, int world, int64_t B, int64_t T, int64_t accum);
/* JSON-escapes s[0..n) into stdout (with quotes). */
void cli_json_str(const char *s, size_t n);

int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_parity(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench_serve(int argc, char **argv);
int cmd_train_tokenizer(int argc, char **argv);
int cmd_prepare_data(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_rl(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_comm_bench(int argc, char **argv);
int cmd_convert_checkpoint(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif
