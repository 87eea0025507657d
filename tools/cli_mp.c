/* cli_mp.c — the model-parallel groups of a command run under a launcher
 * (--tp T, --cp C, --pp P): ranks [d T, (d+1) T) form model-parallel group
 * d, and the ranks with the same place in their group form a data-parallel
 * group; which of the flags is on, and the start-up line of --cp/--pp.
 * --pp P with --cp C (no --tp): the CP groups are the C consecutive ranks
 * (rank = (d P + stage) C + c), the trainer cuts the pipelines from the
 * world (lmc_trainer_pp_attach_cp); with --tp too the same inside each TP
 * place's data-parallel side (TP innermost, then CP, then PP, then DP). */
#include "cli.h"
#include "dist/comm.h"
#include "dist/ring_attn.h"
#include "train/trainer_cp.h"
#include "train/trainer_pp.h"

#include <stdio.h>

int cli_mp_groups(struct lmc_comm *world, int tp, struct lmc_comm *tpc, bool *have_tpc, struct lmc_comm *dpc,
                  bool *have_dpc, const char *cmd) {
    return cli_mp_groups_flag(world, tp, "--tp", tpc, have_tpc, dpc, have_dpc, cmd);
}

int cli_mp_groups_flag(struct lmc_comm *world, int tp, const char *flag, struct lmc_comm *tpc, bool *have_tpc,
                       struct lmc_comm *dpc, bool *have_dpc, const char *cmd) {
    *have_tpc = *have_dpc = false;
    if (world->world % tp) {
        fprintf(stderr, "lmc %s: %s %d needs a multiple of %d ranks (torchrun/Slurm variables or mpirun); this "
                        "run has %d\n", cmd, flag, tp, tp, world->world);
        return 2;
    }
    if (world->world == tp) return 0; /* one group: the whole world */
    lmc_err err = {0};
    if (lmc_comm_split(world, world->rank / tp, world->rank, tpc, &err)) return cli_fail(cmd, &err) ? 2 : 2;
    *have_tpc = true;
    if (lmc_comm_split(world, world->rank % tp, world->rank, dpc, &err)) {
        tpc->free(tpc);
        *have_tpc = false;
        return cli_fail(cmd, &err) ? 2 : 2;
    }
    *have_dpc = true;
    return 0;
}

int cli_mp_pick(const char *cmd, int64_t tp, int64_t cp, int64_t pp, int64_t zero, int *n, const char **flag) {
    int on = (tp > 1) + (cp > 1) + (pp > 1);
    *n = 1;
    *flag = "--tp";
    if (tp > 1 && (cp > 1 || pp > 1) && zero > 0) {
        fprintf(stderr, "lmc %s: --tp with %s runs with --zero 0\n", cmd, cp > 1 ? "--cp" : "--pp");
        return 2;
    }
    if (on && tp == 1 && zero > 0) {
        fprintf(stderr, "lmc %s: %s runs with --zero 0 (the data-parallel groups all-reduce the gradient)\n", cmd,
                cp > 1 ? "--cp" : "--pp");
        return 2;
    }
    if (tp > 1) *n = (int)tp; /* with --cp: the TP groups first, the CP groups cut from their DP side */
    else if (cp > 1) *n = (int)cp, *flag = "--cp";
    else if (pp > 1) *n = (int)pp, *flag = "--pp";
    else *n = (int)tp;
    return 0;
}

void cli_mp_log(const char *cmd, int64_t cp, int64_t pp, int world, int64_t B, int64_t T, int64_t accum) {
    if (cp > 1 && pp > 1)
        fprintf(stderr, "lmc %s: pipeline parallel %lld stages x context parallel %lld x data parallel %lld (%d ranks), "
                        "global batch %lld x %lld x %lld micro-batches (1F1B, bubble (P-1)/(M+P-1) = %.3f); each rank "
                        "holds %lld-token zigzag slices of the sequences\n", cmd, (long long)pp, (long long)cp,
                (long long)(world / (pp * cp)), world, (long long)(B * (world / (pp * cp))), (long long)T,
                (long long)accum, (double)(pp - 1) / (double)(accum + pp - 1),
                (long long)lmc_ring_attn_zigzag(T, 0, (int)cp, NULL));
    else if (cp > 1)
        fprintf(stderr, "lmc %s: context parallel %lld x data parallel %lld (%d ranks), global batch %lld x %lld x "
                        "%lld accum; each rank holds %lld-token zigzag slices of the sequences\n", cmd, (long long)cp,
                (long long)(world / cp), world, (long long)(B * (world / cp)), (long long)T, (long long)accum,
                (long long)lmc_ring_attn_zigzag(T, 0, (int)cp, NULL));
    else if (pp > 1)
        fprintf(stderr, "lmc %s: pipeline parallel %lld stages x data parallel %lld (%d ranks), global batch %lld x "
                        "%lld x %lld micro-batches (1F1B, bubble (P-1)/(M+P-1) = %.3f)\n", cmd, (long long)pp,
                (long long)(world / pp), world, (long long)(B * (world / pp)), (long long)T, (long long)accum,
                (double)(pp - 1) / (double)(accum + pp - 1));
}

int cli_mp_attach_zero(struct lmc_trainer *tr, struct lmc_comm *dpc, int zero, const char *desc, const char *cmd) {
    if (zero < 2) return 0;
    if (!dpc || dpc->world < 2) {
        fprintf(stderr, "lmc %s: --tp --zero %d shards over the data-parallel groups: give more ranks than --tp\n",
                cmd, zero);
        return 2;
    }
    lmc_err err = {0};
    if (lmc_trainer_dist_init(tr, dpc, zero, desc, &err)) return cli_fail(cmd, &err) ? 2 : 2;
    return 0;
}

int cli_mp_attach_cp(struct lmc_trainer *tr, struct lmc_comm *dpc, int cp, struct lmc_comm *cpc, bool *have_cpc,
                     const char *desc, const char *cmd) {
    lmc_err err = {0};
    *have_cpc = false;
    if (!dpc || dpc->world % cp) {
        fprintf(stderr, "lmc %s: --tp T --cp %d needs T x %d x D ranks (D >= 1)\n", cmd, cp, cp);
        return 2;
    }
    if (lmc_comm_split(dpc, dpc->rank / cp, dpc->rank, cpc, &err)) return cli_fail(cmd, &err);
    *have_cpc = true;
    if (lmc_trainer_cp_attach(tr, dpc, cpc, desc, &err)) return cli_fail(cmd, &err);
    return 0;
}

int cli_mp_attach_pp(struct lmc_trainer *tr, struct lmc_comm *dpc, int pp, const char *layers, struct lmc_comm *ppc,
                     bool *have_ppc, struct lmc_comm *ddc, bool *have_ddc, const char *desc, const char *cmd) {
    lmc_err err = {0};
    *have_ppc = *have_ddc = false;
    if (!dpc || dpc->world % pp) {
        fprintf(stderr, "lmc %s: --tp T --pp %d needs T x %d x D ranks (D >= 1)\n", cmd, pp, pp);
        return 2;
    }
    if (lmc_comm_split(dpc, dpc->rank / pp, dpc->rank, ppc, &err)) return cli_fail(cmd, &err);
    *have_ppc = true;
    if (dpc->world > pp) {
        if (lmc_comm_split(dpc, dpc->rank % pp, dpc->rank, ddc, &err)) return cli_fail(cmd, &err);
        *have_ddc = true;
    }
    if (lmc_trainer_pp_attach_v(tr, ppc, *have_ddc ? ddc : NULL, 1, layers, desc, &err)) return cli_fail(cmd, &err);
    return 0;
}

int cli_mp_attach_ppcp(struct lmc_trainer *tr, struct lmc_comm *dpc, int pp, int cp, const char *layers,
                       struct lmc_comm *cpc, bool *have_cpc, const char *desc, const char *cmd) {
    lmc_err err = {0};
    *have_cpc = false;
    if (!dpc || dpc->world % (pp * cp)) {
        fprintf(stderr, "lmc %s: --tp T --pp %d --cp %d needs T x %d x %d x D ranks (D >= 1)\n", cmd, pp, cp, pp, cp);
        return 2;
    }
    if (lmc_comm_split(dpc, dpc->rank / cp, dpc->rank, cpc, &err)) return cli_fail(cmd, &err);
    *have_cpc = true;
    if (lmc_trainer_pp_attach_cp(tr, dpc, cpc, pp, 1, layers, desc, &err)) return cli_fail(cmd, &err);
    return 0;
}
