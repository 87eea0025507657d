/* cli_pp.c — the launcher's ranks as pipeline stages for lmc generate and
 * lmc serve --pp P (see cli_pp.h). */
#include "cli_pp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_pp_print_split(const char *cmd, const struct lmc_config *c, int P, int V, const int64_t *bounds,
                        const char *layers) {
    struct lmc_pp_costs k;
    lmc_err err = {0};
    bool have = !lmc_pp_costs_init(&k, c, &err);
    fprintf(stderr, "lmc %s: pp split %s: %d stages x %d chunks of %lld layers\n", cmd,
            layers && *layers ? "given by --pp-layers" : "balanced by parameters", P, V, (long long)c->num_layers);
    for (int s = 0; s < P; s++) {
        int64_t n = 0, params = 0, l0, l1;
        fprintf(stderr, "lmc %s: pp split stage %d: layers", cmd, s);
        for (int v = 0; v < V; v++) {
            lmc_pp_chunk_layers(bounds, P, V, s, v, &l0, &l1);
            fprintf(stderr, " [%lld, %lld)", (long long)l0, (long long)l1);
            n += l1 - l0;
            params += have ? lmc_pp_costs_chunk(&k, l0, l1) : 0;
        }
        fprintf(stderr, " = %lld layers, %lld parameters\n", (long long)n, (long long)params);
    }
    if (have) lmc_pp_costs_free(&k);
}

int cli_pp_open(struct cli_pp *t, int64_t pp, int64_t tp, struct cli_model *cm, const struct cli_common *c,
                const char *layers, const char *cmd) {
    lmc_err err = {0};
    memset(t, 0, sizeof *t); /* the device: cli_caps_check refused all but the CPU */
    if (c->n_lora) {
        fprintf(stderr, "lmc %s: --pp does not combine with --lora yet\n", cmd);
        return 2;
    }
    struct lmc_dist_env env;
    if (lmc_dist_env_parse(&env, NULL, NULL, &err)) return cli_fail("--pp", &err);
    if (lmc_dist_init(&t->comm, LMC_DIST_HOST, &err)) return cli_fail("--pp", &err);
    t->comm_up = true;
    if (t->comm.world != pp * tp) {
        fprintf(stderr, "lmc %s: --pp %lld%s needs %lld ranks (torchrun/Slurm variables or mpirun); this run has %d\n",
                cmd, (long long)pp, tp > 1 ? " x --tp" : "", (long long)(pp * tp), t->comm.world);
        return 2;
    }
    int threads = c->threads ? c->threads : lmc_dist_cpu_threads(&env, (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (lmc_backend_cpu_init(&cm->be, threads, &err)) return cli_fail("backend", &err);
    cm->have_be = true;
    struct lmc_model_opts mo = {.wdtype = c->wdtype, .be = &cm->be};
    if (lmc_pp_infer_load(&t->pp, &cm->model, c->model_dir, &mo, &t->comm, (int)tp, 0, layers, &err))
        return cli_fail("--pp", &err);
    cm->have_model = t->loaded = true;
    if (t->comm.rank == 0) { /* the loader's split, again for the whole picture */
        int64_t *b = malloc(sizeof *b * (size_t)(pp + 1));
        if (b && !lmc_pp_split_plan(&cm->model.cfg, (int)pp, 1, layers, b, &err))
            cli_pp_print_split(cmd, &cm->model.cfg, (int)pp, 1, b, layers);
        free(b);
    }
    t->model = &t->pp.view;
    if (tp > 1) { /* the stage's ranks [s tp, (s+1) tp) shard it */
        if (lmc_comm_split(&t->comm, t->pp.stage, t->comm.rank, &t->tpc, &err)) return cli_fail("--tp x --pp", &err);
        t->tpc_up = true;
        if (lmc_tp_model_shard_vocab(&t->tpm, &t->pp.view, &t->tpc, false, &err)) return cli_fail("--tp x --pp", &err);
        t->sharded = true;
        t->model = &t->tpm.m;
        t->pp.g = &t->tpm.group; /* one status for the stage's collectives and transfers */
    }
    fprintf(stderr, "lmc %s: pipeline stage %d of %d: layers [%lld, %lld) of %lld, %zu weight bytes\n", cmd,
            t->pp.stage, t->pp.n_stages, (long long)t->pp.l0, (long long)t->pp.l1, (long long)cm->model.cfg.num_layers,
            cm->model.weight_bytes);
    return 0;
}

void cli_pp_close(struct cli_pp *t) {
    if (t->sharded) lmc_tp_model_free(&t->tpm);
    if (t->tpc_up) t->tpc.free(&t->tpc);
    if (t->loaded) lmc_pp_infer_free(&t->pp);
    if (t->comm_up) t->comm.free(&t->comm);
    memset(t, 0, sizeof *t);
}
