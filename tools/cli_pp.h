/* cli_pp.h — `--pp P` on lmc generate/serve (cli_pp.c): the launcher's P
 * ranks, each loading and running one pipeline stage (dist/pp_infer.h). */
#ifndef LMC_CLI_PP_H
#define LMC_CLI_PP_H

#include "cli.h"
#include "dist/comm.h"
#include "dist/pp_infer.h"
#include "dist/tp_model.h"

struct cli_pp {
    struct lmc_comm comm;         /* the launcher's ranks */
    struct lmc_pp_infer pp;
    struct lmc_comm tpc;          /* --tp T: the stage's T ranks */
    struct lmc_tp_model tpm;      /* --tp T: this rank's shard of the stage */
    const struct lmc_model *model; /* what to run: pp.view, or tpm.m */
    bool comm_up, loaded, tpc_up, sharded;
};

/* Starts the launcher's communicator (its world must be pp x tp; pp 1 runs
 * one stage holding every layer), the CPU backend into cm (threads split
 * among the host's ranks unless --threads) and this rank's stage into
 * cm->model (cm opened by cli_open(..., false)); with tp > 1 the stage's
 * tp consecutive ranks shard it (float32; lmc_tp_model_shard) and share
 * one status (pp.g). layers: --pp-layers (NULL: the split balanced by
 * parameters, dist/pp_split.h). Prints the stage's line on stderr ("lmc
 * CMD: pipeline stage s of P: layers [l0, l1) of L, W weight bytes"), and
 * rank 0 the whole split (cli_pp_print_split). Returns 0, or the
 * exit code after printing the error. */
int cli_pp_open(struct cli_pp *t, int64_t pp, int64_t tp, struct cli_model *cm, const struct cli_common *c,
                const char *layers, const char *cmd);
/* The split on stderr ("lmc CMD: pp split ..." then a line a stage: its
 * chunks' layers, their count and parameters, lmc_pp_costs_chunk's). */
void cli_pp_print_split(const char *cmd, const struct lmc_config *c, int P, int V, const int64_t *bounds,
                        const char *layers);
/* After cli_close (cm's model is the stage's storage). */
void cli_pp_close(struct cli_pp *t);

#endif
