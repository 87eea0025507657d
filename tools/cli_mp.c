/* cli_mp.c — the model-parallel groups of a command run under a launcher
 * (--tp T): ranks [d T, (d+1) T) form tensor-parallel group d, and the ranks
 * with the same place in their group form a data-parallel group. */
#include "cli.h"
#include "dist/comm.h"

#include <stdio.h>

int cli_mp_groups(struct lmc_comm *world, int tp, struct lmc_comm *tpc, bool *have_tpc, struct lmc_comm *dpc,
                  bool *have_dpc, const char *cmd) {
    *have_tpc = *have_dpc = false;
    if (world->world % tp) {
        fprintf(stderr, "lmc %s: --tp %d needs a multiple of %d ranks (torchrun/Slurm variables or mpirun); this "
                        "run has %d\n", cmd, tp, tp, world->world);
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
