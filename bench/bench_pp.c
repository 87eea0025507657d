/* bench_pp.c — the pipeline's measured bubble against its model: P forked
 * ranks (tcp over loopback) run 1F1B (lmc_pp_run, V = 1) or interleaved
 * 1F1B with V chunks per rank (lmc_pp_run_interleaved) with a fixed CPU
 * workload per micro-batch and rank (forward `work` multiply-adds split
 * over the V chunks, backward twice that) and 1 KB activations. Reported
 * as Megatron-LM states it, bubble time / compute time: measured =
 * (slowest stage's step time - mean stage busy time) / mean busy time,
 * the median of R rounds, against (P-1)/M (1F1B) and (P-1)/(M V)
 * (interleaved). Needs P free cores to mean anything (oversubscribed
 * ranks wait on the CPU, which shows up as bubble).
 * Usage: bench_pp [--stages 2,4] [--micro 4,8,16] [--chunks 1,2] [--work N] [--rounds R] */
#include "../tests/dist_spawn.h"
#include "dist/pp.h"
#include "bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct shared {
    double busy[16], wall[16];
};

struct job {
    long work;
    int M, V;
    struct shared *sh;
};

static double spin(long n, int mb) {
    volatile double acc = mb;
    for (long i = 0; i < n; i++) acc = acc * 0.999999 + 1e-9 * (double)i;
    return acc;
}

static lmc_status fwd(void *u, int mb, const void *in, void *out, lmc_err *err) {
    (void)in, (void)err;
    const struct job *j = u;
    double a = spin(j->work, mb);
    if (out) memcpy(out, &a, sizeof a);
    return LMC_OK;
}

static lmc_status bwd(void *u, int mb, const void *dout, void *din, lmc_err *err) {
    (void)dout, (void)err;
    const struct job *j = u;
    double a = spin(2 * j->work, mb);
    if (din) memcpy(din, &a, sizeof a);
    return LMC_OK;
}

static lmc_status vfwd(void *u, int v, int mb, const void *in, void *out, lmc_err *err) {
    (void)v, (void)in, (void)err;
    const struct job *j = u;
    double a = spin(j->work / j->V, mb);
    if (out) memcpy(out, &a, sizeof a);
    return LMC_OK;
}

static lmc_status vbwd(void *u, int v, int mb, const void *dout, void *din, lmc_err *err) {
    (void)v, (void)dout, (void)err;
    const struct job *j = u;
    double a = spin(2 * j->work / j->V, mb);
    if (din) memcpy(din, &a, sizeof a);
    return LMC_OK;
}

static int stage_main(struct lmc_comm *c, int rank, void *arg) {
    struct job *j = arg;
    struct lmc_pp_stage s = {j, rank ? 1024 : 0, rank < c->world - 1 ? 1024 : 0, fwd, bwd};
    struct lmc_pp_vstage vs = {j, j->V, 1024, vfwd, vbwd};
    struct lmc_pp_stats st;
    lmc_err err = {0};
    if (c->barrier(c, &err) ||
        (j->V == 1 ? lmc_pp_run(c, &s, j->M, &st, &err) : lmc_pp_run_interleaved(c, &vs, j->M, &st, &err))) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    j->sh->busy[rank] = st.busy_s, j->sh->wall[rank] = st.wall_s;
    return 0;
}

static int parse_list(const char *s, int *v, int max) {
    int n = 0;
    while (*s && n < max) {
        v[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

int main(int argc, char **argv) {
    int Ps[8] = {2, 4}, nP = 2, Ms[8] = {4, 8, 16}, nM = 3, Vs[8] = {1, 2}, nV = 2, rounds = 3;
    long work = 2000000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--stages")) nP = parse_list(argv[i + 1], Ps, 8);
        else if (!strcmp(argv[i], "--micro")) nM = parse_list(argv[i + 1], Ms, 8);
        else if (!strcmp(argv[i], "--chunks")) nV = parse_list(argv[i + 1], Vs, 8);
        else if (!strcmp(argv[i], "--work")) work = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    }
    if (rounds < 1 || rounds > 99) rounds = 3;
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 1;
    char dir[] = "/tmp/lmc_bench_pp_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    printf("| P | M | V | 1F1B (P-1)/M | interleaved (P-1)/(M V) | simulated | measured (median of %d) | step ms |\n"
           "|---|---|---|---|---|---|---|---|\n", rounds);
    for (int a = 0; a < nP; a++)
        for (int b = 0; b < nM; b++)
        for (int c = 0; c < nV; c++) {
            int P = Ps[a], M = Ms[b], V = Vs[c];
            if (P < 1 || P > 16 || M < 1 || V < 1 || V > 16 || (V > 1 && M % P)) continue;
            double bub[99], ms[99];
            for (int r = 0; r < rounds; r++) {
                struct job j = {work, M, V, sh};
                struct spawn_opts so = {.world = P};
                int codes[16] = {0};
                spawn(&so, stage_main, &j, dir, codes);
                double wall = 0, busy = 0;
                for (int k = 0; k < P; k++) {
                    if (codes[k]) {
                        fprintf(stderr, "rank %d failed: %s", k, slurp(dir, k));
                        return 1;
                    }
                    wall = sh->wall[k] > wall ? sh->wall[k] : wall;
                    busy += sh->busy[k] / P;
                }
                bub[r] = (wall - busy) / busy, ms[r] = wall * 1e3;
            }
            qsort(bub, (size_t)rounds, sizeof *bub, bench_cmpd);
            qsort(ms, (size_t)rounds, sizeof *ms, bench_cmpd);
            double sim = lmc_pp_bubble_model_v(P, M, V, 1, 2); /* idle fraction -> bubble / compute */
            printf("| %d | %d | %d | %.3f | %.3f | %.3f | %.3f | %.1f |\n", P, M, V, (double)(P - 1) / M,
                   (double)(P - 1) / ((double)M * V), sim / (1 - sim), bub[rounds / 2], ms[rounds / 2]);
        }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return 0;
}
