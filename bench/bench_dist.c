/* bench_dist.c — data-parallel training on the CPU: the synthetic MLP of
 * tests/dist_mlp.h (256-512-512-512-32, 672k parameters) trained with
 * ZeRO 0-3 on 1 and 2 forked ranks joined by the tcp communicator (the
 * same collectives as mpirun's), with the same global batch. Prints, per
 * configuration, examples/s (the median over interleaved rounds of the
 * mean step time after a 2-step warm-up run), rank 0's ZeRO
 * state bytes against the fp32 formula, and every rank's peak RSS
 * (VmHWM). Each run's final parameters are compared with the one-rank
 * ZeRO-0 run's (relative max difference printed; > 1e-3 fails).
 * Usage: bench_dist [--steps N] [--batch B] [--worlds 1,2] [--rounds R] */
#include "../tests/dist_mlp.h"
#include "../tests/dist_spawn.h"
#include "core/core.h"
#include "bench_util.h"

#include <sys/mman.h>

static const struct mlp_cfg BM = {4, {256, 512, 512, 512, 32}};

struct bres {
    double step_s;
    size_t zero_peak;
    long hwm_kib[8];
    float params[700000];
};

struct bjob {
    struct mlp_run run;
    const float *init;
    struct bres *res;
};

/* One rank: a 2-step warm-up run, then the timed run (all steps, from a
 * barrier; the mean step time, ZeRO set-up included, is reported). */
static int bench_rank(struct lmc_comm *c, int rank, void *arg) {
    struct bjob *j = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct mlp_run o = j->run;
    double *losses = calloc((size_t)o.steps, sizeof(double));
    struct lmc_zero_stats st;
    o.log_memory = getenv("LMC_BENCH_LOG_MEMORY") != NULL;
    struct mlp_run warm = o;
    warm.log_memory = false;
    warm.steps = 2;
    lmc_status s = mlp_train_zero(&BM, &warm, c, &be, j->init, losses, NULL, NULL, &err);
    c->barrier(c, &err);
    double t0 = lmc_time_now();
    /* every rank asks for the final parameters: in stage 3 that is a gather */
    float *final = malloc(sizeof j->res->params);
    if (!s) s = mlp_train_zero(&BM, &o, c, &be, j->init, losses, final, &st, &err);
    double t1 = lmc_time_now();
    if (!s && rank == 0) memcpy(j->res->params, final, sizeof j->res->params);
    free(final);
    lmc_backend_cpu_free(&be);
    free(losses);
    if (s) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 2;
    }
    j->res->hwm_kib[rank] = bench_vm_hwm_kib();
    if (rank == 0) {
        j->res->zero_peak = st.bytes_peak;
        j->res->step_s = (t1 - t0) / o.steps;
    }
    return 0;
}

int main(int argc, char **argv) {
    int steps = 8, rounds = 3;
    int64_t batch = 32;
    int worlds[4] = {1, 2}, nw = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--worlds")) {
            nw = sscanf(argv[i + 1], "%d,%d,%d,%d", &worlds[0], &worlds[1], &worlds[2], &worlds[3]);
        }
    }
    if (steps < 1 || steps > 64 || batch < 1 || nw < 1 || nw > 4 || rounds < 1 || rounds > 9) {
        fprintf(stderr, "usage: bench_dist [--steps 1..64] [--batch B] [--worlds 1,2] [--rounds 1..9]\n");
        return 2;
    }
    struct lmc_zero_tensor t[2 * MLP_MAX_L];
    char names[2 * MLP_MAX_L][16];
    int64_t P = mlp_layout(&BM, t, names);
    float *init = malloc(sizeof(float) * (size_t)P), *base = malloc(sizeof(float) * (size_t)P);
    mlp_init(&BM, init, 7);
    struct bres *res = mmap(NULL, sizeof *res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char tmpl[] = "/tmp/lmc_bench_dist_XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (res == MAP_FAILED || !dir || P > 700000) return 1;
    printf("model: MLP 256-512-512-512-32, %lld parameters; global batch %lld examples, %d steps, fp32, "
           "1 thread per rank\n\n", (long long)P, (long long)batch, steps);
    /* rounds of every configuration in turn (interleaved, so a change in
     * the machine's load hits all alike); the median step time per
     * configuration; memory and drift from the last round */
    enum { MAXC = 16, MAXR = 9 };
    double times[MAXC][MAXR];
    double zpeak[MAXC], drift[MAXC];
    long hwm[MAXC][8];
    int nc = 0, bad = 0;
    bool have_base = false;
    for (int round = 0; round < rounds; round++) {
        int ci = 0;
        for (int wi = 0; wi < nw; wi++) {
            for (int stage = 0; stage <= 3; stage++, ci++) {
                int W = worlds[wi];
                memset(res, 0, sizeof *res);
                struct bjob j = {{.stage = stage, .steps = steps, .global_batch = batch, .lr = 1e-3, .max_norm = 1.0},
                                 init, res};
                struct spawn_opts so = {.world = W};
                int codes[8];
                spawn(&so, bench_rank, &j, dir, codes);
                for (int r = 0; r < W; r++)
                    if (codes[r]) {
                        fprintf(stderr, "rank %d failed (%d): %s\n", r, codes[r], slurp(dir, r));
                        return 1;
                    }
                if (!have_base) {
                    memcpy(base, res->params, sizeof(float) * (size_t)P);
                    have_base = true;
                }
                double num = 0, den = 0;
                for (int64_t i = 0; i < P; i++) {
                    num = fmax(num, fabs((double)res->params[i] - base[i]));
                    den = fmax(den, fabs((double)base[i]));
                }
                /* AdamW turns gradients that cancel to rounding noise into
                 * updates of up to lr * sign: a bigger model than the tests'
                 * drifts by more than their 1e-6, a wrong shard by O(1) */
                drift[ci] = num / den;
                if (drift[ci] > 1e-3) {
                    fprintf(stderr, "ranks %d stage %d: parameters differ from the 1-rank run by %.3g\n", W, stage,
                            drift[ci]);
                    bad = 1;
                }
                times[ci][round] = res->step_s;
                zpeak[ci] = (double)res->zero_peak;
                for (int r = 0; r < W; r++) hwm[ci][r] = res->hwm_kib[r];
            }
        }
        nc = ci;
    }
    printf("| ranks | ZeRO | examples/s | step ms (median of %d) | rank-0 ZeRO state MiB | fp32 formula MiB | "
           "peak RSS per rank MiB | params vs 1 rank, ZeRO 0 |\n", rounds);
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int ci = 0; ci < nc; ci++) {
        int W = worlds[ci / 4], stage = ci % 4;
        qsort(times[ci], (size_t)rounds, sizeof(double), bench_cmpd);
        double step = times[ci][rounds / 2];
        struct lmc_zero_mem m;
        lmc_zero_mem_fp32(stage, W, P, &m);
        char rss[128];
        size_t k = 0;
        for (int r = 0; r < W; r++) k += (size_t)snprintf(rss + k, sizeof rss - k, "%s%.1f", r ? " / " : "", hwm[ci][r] / 1024.0);
        printf("| %d | %d | %.0f | %.1f | %.2f | %.2f | %s | %.1e |\n", W, stage, (double)batch / step, step * 1e3,
               zpeak[ci] / 1048576.0, m.total / 1048576.0, rss, drift[ci]);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) bad = 1;
    munmap(res, sizeof *res);
    free(init), free(base);
    return bad;
}
