/* bench_zero.c — ZeRO 0-3 memory and speed of `lmc train`'s data-parallel
 * trainer (train/trainer_dist.c: one zero unit per model part) on a random
 * llama, 1 and 2 forked ranks joined by the tcp communicator (the same
 * fixed-order collectives as under mpirun), the same global batch. Per
 * configuration and rank: the peak resident set of the training phase
 * (VmHWM restarted after set-up through /proc/self/clear_refs, so the
 * set-up's one full copy of the initial weights is not counted; the
 * set-up peak is printed too), rank 0's ZeRO state (bytes the zero module
 * holds, at its peak) against the fp32 and mixed-precision formulas of
 * `lmc info --zero S --world N`, and tokens/s (the mean of the timed
 * steps after one warm-up step). The last loss of each run must equal the
 * stage-0 run's of the same world bit for bit (stages only move memory).
 * Usage: bench_zero [--worlds 1,2] [--steps N] [--layers L] [--hidden C]
 *                   [--heads H] [--inter I] [--vocab V] [--seq T] [--batch GLOBAL_B] */
#include "../tests/dist_spawn.h"
#include "core/core.h"
#include "dist/zero.h"
#include "model/arch.h"
#include "train/data.h"
#include "train/trainer.h"
#include "bench_util.h"

#include <string.h>
#include <sys/mman.h>

struct bres {
    long setup_kib[8], train_kib[8];
    double step_s, last_loss;
    size_t zero_peak;
    int64_t numel;
};

struct bjob {
    const char *data;
    struct lmc_model_shape shape;
    int stage, steps;
    int64_t T, global_B;
    struct bres *res;
};

/* Restarts VmHWM at the current resident set (Linux >= 4.0); false where it cannot. */
static bool hwm_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    bool ok = fputs("5", f) >= 0;
    return (fclose(f) == 0) && ok;
}

static int bench_rank(struct lmc_comm *c, int rank, void *arg) {
    struct bjob *j = arg;
    int W = c->world;
    struct lmc_backend be;
    struct lmc_token_data train;
    struct lmc_config cfg;
    struct lmc_tmodel tm;
    struct lmc_trainer tr;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, W >= 2 ? 1 : 2, &err) || lmc_token_data_open(&train, j->data, "train", &err) ||
        lmc_config_build(&cfg, "llama", &j->shape, &err) || lmc_tmodel_init(&tm, &cfg, &be, &err) ||
        lmc_tmodel_init_random(&tm, 1, 0.02, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 2;
    }
    struct lmc_train_opts o = {.B = j->global_B / W, .T = j->T, .accum = 1, .clip = 1.0, .seed = 3,
                               .zero_moments = true};
    lmc_adamw_cfg_default(&o.adamw);
    o.adamw.lr = 1e-4;
    o.decay = LMC_DECAY_DEFAULT;
    o.sched = (struct lmc_schedule){LMC_SCHED_CONSTANT, 1e-4, 1e-4, 0, j->steps + 1, 0};
    lmc_optim_cfg_default(&o.optim, LMC_OPTIM_ADAMW);
    if (lmc_trainer_init(&tr, &tm, &be, &train, NULL, &o, &err) ||
        lmc_trainer_dist_init(&tr, c, j->stage, "bench_zero", &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 2;
    }
    j->res->setup_kib[rank] = bench_vm_hwm_kib();
    if (!hwm_reset()) j->res->setup_kib[rank] = -1; /* the training figure then includes set-up */
    struct lmc_train_stats st;
    lmc_status s = lmc_trainer_step(&tr, &st, &err); /* warm-up */
    if (!s) s = c->barrier(c, &err);
    double t0 = lmc_time_now();
    for (int k = 0; k < j->steps && !s; k++) s = lmc_trainer_step(&tr, &st, &err);
    if (!s) s = c->barrier(c, &err);
    double t1 = lmc_time_now();
    j->res->train_kib[rank] = bench_vm_hwm_kib();
    if (!s && rank == 0) {
        struct lmc_zero_stats zs;
        lmc_zero_get_stats(tr.zero, &zs);
        j->res->zero_peak = zs.bytes_peak;
        j->res->step_s = (t1 - t0) / j->steps;
        j->res->last_loss = st.loss;
        j->res->numel = tr.tm.numel;
    }
    lmc_trainer_free(&tr);
    lmc_token_data_close(&train);
    lmc_backend_cpu_free(&be);
    if (s) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 2;
    }
    return 0;
}

/* dir/train_00000.bin: n random ids below vocab (uint16) */
static int write_data(const char *dir, int64_t vocab, int64_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/train_00000.bin", dir);
    struct lmc_shard_writer *w;
    lmc_err err = {0};
    if (lmc_shard_writer_open(&w, path, (uint32_t)vocab, 2, LMC_SHARD_NO_EOS, &err)) return 1;
    uint64_t x = 12345;
    int32_t ids[1024];
    for (int64_t i = 0; i < n; i += 1024) {
        for (int k = 0; k < 1024; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[k] = (int32_t)((x >> 33) % (uint64_t)vocab);
        }
        if (lmc_shard_writer_add(w, ids, 1024, &err)) return 1;
    }
    return lmc_shard_writer_close(w, &err) ? 1 : 0;
}

int main(int argc, char **argv) {
    int steps = 2, worlds[4] = {1, 2}, nw = 2;
    int64_t T = 64, gB = 2;
    struct lmc_model_shape sh = {.vocab = 8192, .hidden = 768, .layers = 12, .heads = 12, .kv_heads = 12,
                                 .intermediate = 2048, .max_pos = 2048, .tie = false, .rope_theta = 10000};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--worlds")) nw = sscanf(v, "%d,%d,%d,%d", &worlds[0], &worlds[1], &worlds[2], &worlds[3]);
        else if (!strcmp(a, "--layers")) sh.layers = atoll(v);
        else if (!strcmp(a, "--hidden")) sh.hidden = atoll(v);
        else if (!strcmp(a, "--heads")) sh.heads = sh.kv_heads = atoll(v);
        else if (!strcmp(a, "--inter")) sh.intermediate = atoll(v);
        else if (!strcmp(a, "--vocab")) sh.vocab = atoll(v);
        else if (!strcmp(a, "--seq")) T = atoll(v);
        else if (!strcmp(a, "--batch")) gB = atoll(v);
    }
    bool bad_w = nw < 1;
    for (int i = 0; i < nw; i++) bad_w = bad_w || worlds[i] < 1 || worlds[i] > 8 || gB % worlds[i];
    if (steps < 1 || steps > 100 || bad_w || T < 1 || sh.vocab < 2 || sh.vocab > 65536) {
        fprintf(stderr, "usage: bench_zero [--worlds 1,2] [--steps 1..100] [--layers L] [--hidden C] [--heads H] "
                        "[--inter I] [--vocab V<=65536] [--seq T] [--batch B, a multiple of every world]\n");
        return 2;
    }
    char tmpl[] = "/tmp/lmc_bench_zero_XXXXXX";
    char *dir = mkdtemp(tmpl);
    struct bres *res = mmap(NULL, sizeof *res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!dir || res == MAP_FAILED || write_data(dir, sh.vocab, (steps + 2) * gB * (T + 1) + 4096)) return 1;
    printf("model: random llama, %lld layers, hidden %lld, %lld heads, MLP %lld, vocab %lld (untied); global batch "
           "%lld x %lld tokens; %d timed steps after 1 warm-up; fp32 AdamW; 2 threads in all (2 / ranks each)\n\n",
           (long long)sh.layers, (long long)sh.hidden, (long long)sh.heads, (long long)sh.intermediate,
           (long long)sh.vocab, (long long)gB, (long long)T, steps);
    printf("| ranks | ZeRO | tokens/s | step s | rank-0 ZeRO state MiB | fp32 formula MiB | mixed formula MiB | "
           "peak RSS training, per rank MiB | peak RSS set-up MiB | last loss |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    int bad = 0;
    for (int wi = 0; wi < nw; wi++) {
        double loss0 = 0;
        for (int stage = 0; stage <= 3; stage++) {
            int W = worlds[wi], codes[8];
            memset(res, 0, sizeof *res);
            struct bjob j = {dir, sh, stage, steps, T, gB, res};
            struct spawn_opts so = {.world = W, .timeout_s = 600};
            spawn(&so, bench_rank, &j, dir, codes);
            for (int r = 0; r < W; r++)
                if (codes[r]) {
                    fprintf(stderr, "ranks %d stage %d: rank %d failed (%d): %s\n", W, stage, r, codes[r], slurp(dir, r));
                    return 1;
                }
            if (stage == 0) loss0 = res->last_loss;
            else if (res->last_loss != loss0) {
                fprintf(stderr, "ranks %d stage %d: last loss %.17g, stage 0's %.17g\n", W, stage, res->last_loss, loss0);
                bad = 1;
            }
            struct lmc_zero_mem f, m;
            lmc_zero_mem_fp32(stage, W, res->numel, &f);
            lmc_zero_mem_mixed(stage, W, res->numel, &m);
            char rss[128], set[128];
            size_t k = 0, q = 0;
            for (int r = 0; r < W; r++) {
                k += (size_t)snprintf(rss + k, sizeof rss - k, "%s%.0f", r ? " / " : "", res->train_kib[r] / 1024.0);
                q += (size_t)snprintf(set + q, sizeof set - q, "%s%.0f", r ? " / " : "", res->setup_kib[r] / 1024.0);
            }
            const double M = 1048576.0;
            printf("| %d | %d | %.1f | %.2f | %.1f | %.1f | %.1f | %s | %s | %.6f |\n", W, stage,
                   (double)(gB * T) / res->step_s, res->step_s, (double)res->zero_peak / M, f.total / M, m.total / M,
                   rss, set, res->last_loss);
            fflush(stdout);
        }
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) bad = 1;
    munmap(res, sizeof *res);
    return bad;
}
