/* test_dist.c — distributed training on the CPU with several processes.
 * Without arguments: ranks are forked processes joined by the tcp
 * communicator (rank 0 takes over a listening socket whose port the OS
 * picked): collectives against serial reductions on odd sizes; ZeRO 0-3 at
 * world 1, 2, 4 training a 3-layer MLP for 20 steps against the
 * one-process run with the same global batch (<= 1e-6 relative; stages
 * bit-identical at one world); sharded checkpoint resume bit for bit,
 * consolidation, resharding to another world; a killed rank makes the
 * others fail naming it; mismatched configurations and worlds are refused.
 * With --mpi (under mpirun, see test_dist_mpi.sh): the same collectives and
 * ZeRO checks on the mpi communicator; --mpi-die and --mpi-mismatch run the
 * fault cases. */
#include "test.h"
#include "dist_mlp.h"
#include "dist_spawn.h"
#include "dist/comm.h"
#include "dist/zero.h"
#include "ops/backend.h"
#include "io/safetensors.h"
#include "core/core.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEPS 20
#define GBATCH 12

static const struct mlp_cfg MLP = {3, {13, 17, 12, 5}};

/* ---------- collectives: every rank knows every rank's input (seeded by
 * rank), so it can compute the expected result in the fixed order. */
static void fill(float *x, int64_t n, int rank, int salt) {
    uint64_t s = (uint64_t)(rank * 1000 + salt + 1);
    for (int64_t i = 0; i < n; i++) x[i] = test_rand(&s);
}

/* Reductions in the fixed rank order are exact to the serial sum; MPI's
 * own (mpi-native) only close to it. */
static bool same(const float *a, const float *b, int64_t n, bool exact) {
    if (exact) return !memcmp(a, b, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > 1e-5f * fmaxf(1.0f, fabsf(b[i]))) return false;
    return true;
}

static int check_collectives(struct lmc_comm *c, bool exact) {
    int W = c->world, me = c->rank, bad = 0;
    lmc_err err = {0};
    const int64_t sizes[] = {1, 7, 1001, 65537 + 3};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int64_t n = sizes[k];
        float *x = malloc(sizeof(float) * (size_t)(n * W)), *in = malloc(sizeof(float) * (size_t)(n * W));
        float *want = malloc(sizeof(float) * (size_t)(n * W)), *out = malloc(sizeof(float) * (size_t)(n * W));
        /* all_reduce SUM: exact to the serial sum in rank order, near the double sum */
        fill(x, n, me, (int)k);
        memset(want, 0, sizeof(float) * (size_t)n);
        double maxerr = 0, ref64[41];
        for (int p = 0; p < W; p++) {
            fill(in, n, p, (int)k);
            for (int64_t i = 0; i < n; i++) want[i] = p ? want[i] + in[i] : in[i];
        }
        if (c->all_reduce(c, x, n, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err)) bad++, fprintf(stderr, "%s\n", err.msg);
        if (!same(x, want, n, exact)) bad++, fprintf(stderr, "rank %d: all_reduce n=%lld differs\n", me, (long long)n);
        for (int p = 0; p < W; p++) { /* float64 sums of the first 41 elements */
            fill(in, n, p, (int)k);
            for (int64_t i = 0; i < n && i <= 40; i++) ref64[i] = (p ? ref64[i] : 0) + in[i];
        }
        for (int64_t i = 0; i < n && i <= 40; i++) maxerr = fmax(maxerr, fabs(ref64[i] - x[i]));
        if (maxerr > 1e-5) bad++, fprintf(stderr, "all_reduce vs float64: %g\n", maxerr);
        /* MAX and AVG */
        fill(x, n, me, (int)k);
        c->all_reduce(c, x, n, LMC_DTYPE_F32, LMC_REDUCE_MAX, &err);
        memcpy(out, x, sizeof(float) * (size_t)n);
        for (int p = 0; p < W; p++) {
            fill(in, n, p, (int)k);
            for (int64_t i = 0; i < n; i++) want[i] = p && want[i] > in[i] ? want[i] : in[i];
        }
        if (!same(out, want, n, true)) bad++, fprintf(stderr, "all_reduce MAX differs\n");
        memset(want, 0, sizeof(float) * (size_t)n);
        for (int p = 0; p < W; p++) {
            fill(in, n, p, (int)k);
            for (int64_t i = 0; i < n; i++) want[i] = p ? want[i] + in[i] : in[i];
        }
        fill(x, n, me, (int)k);
        c->all_reduce(c, x, n, LMC_DTYPE_F32, LMC_REDUCE_AVG, &err);
        for (int64_t i = 0; i < n; i++)
            if (x[i] != want[i] / (float)W) { bad++; fprintf(stderr, "all_reduce AVG differs at %lld\n", (long long)i); break; }
        /* reduce_scatter: n elements each, of W*n */
        fill(x, n * W, me, (int)k + 50);
        memset(want, 0, sizeof(float) * (size_t)n);
        for (int p = 0; p < W; p++) {
            fill(in, n * W, p, (int)k + 50);
            for (int64_t i = 0; i < n; i++) want[i] = p ? want[i] + in[(int64_t)me * n + i] : in[(int64_t)me * n + i];
        }
        if (c->reduce_scatter(c, x, out, n, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err) || !same(out, want, n, exact))
            bad++, fprintf(stderr, "rank %d: reduce_scatter n=%lld differs\n", me, (long long)n);
        /* all_gather and async overlap: gather, then an all-reduce started
         * before waiting on the gather */
        fill(x, n, me, (int)k + 90);
        struct lmc_comm_work *w1, *w2;
        double dv[3] = {me + 0.5, 1.0, -(double)me};
        c->iall_gather(c, x, out, n, LMC_DTYPE_F32, &w1, &err);
        c->iall_reduce(c, dv, 3, LMC_DTYPE_F64, LMC_REDUCE_SUM, &w2, &err);
        if (c->wait(c, w2, &err) || c->wait(c, w1, &err)) bad++;
        for (int p = 0; p < W; p++) {
            fill(in, n, p, (int)k + 90);
            if (memcmp(out + (int64_t)p * n, in, sizeof(float) * (size_t)n)) { bad++; break; }
        }
        if (dv[0] != W * (W - 1) / 2.0 + 0.5 * W || dv[1] != W || dv[2] != -(W * (W - 1) / 2.0)) bad++;
        free(x), free(in), free(want), free(out);
    }
    /* integers, broadcast from the last rank, send/recv around a ring, barrier */
    int32_t iv[5] = {me, 2 * me, -me, 7, me * me};
    c->all_reduce(c, iv, 5, LMC_DTYPE_I32, LMC_REDUCE_SUM, &err);
    int32_t s1 = W * (W - 1) / 2;
    if (iv[0] != s1 || iv[1] != 2 * s1 || iv[2] != -s1 || iv[3] != 7 * W) bad++;
    char msg[37];
    snprintf(msg, sizeof msg, "from rank %d", me);
    if (c->broadcast(c, msg, sizeof msg, W - 1, &err)) bad++;
    char expect[37];
    snprintf(expect, sizeof expect, "from rank %d", W - 1);
    if (strcmp(msg, expect)) bad++, fprintf(stderr, "broadcast: %s\n", msg);
    if (W > 1) {
        int64_t token = 1000 + me, got = -1;
        int next = (me + 1) % W, prev = (me + W - 1) % W;
        lmc_status s = me % 2 == 0 ? c->send(c, &token, sizeof token, next, &err) : c->recv(c, &got, sizeof got, prev, &err);
        if (!s) s = me % 2 == 0 ? c->recv(c, &got, sizeof got, prev, &err) : c->send(c, &token, sizeof token, next, &err);
        if (s || got != 1000 + prev) bad++, fprintf(stderr, "rank %d: ring got %lld\n", me, (long long)got);
        if (c->send(c, &token, 8, me, &err) != LMC_ERR_ARG) bad++;
    }
    if (c->barrier(c, &err)) bad++;
    if (c->all_reduce(c, iv, 2, LMC_DTYPE_U8, LMC_REDUCE_SUM, &err) != LMC_ERR_UNSUPPORTED) bad++;
    if (c->broadcast(c, msg, 1, W, &err) != LMC_ERR_ARG) bad++;
    return bad;
}

static int run_collectives(struct lmc_comm *c, int rank, void *arg) {
    (void)rank, (void)arg;
    return check_collectives(c, true) ? 1 : 0;
}

/* Shared (mmap'd) results of a ZeRO run. */
struct zres {
    double losses[STEPS];
    float params[4096], at_save[4096];
    size_t peak_bytes[8];
};

struct zjob {
    struct mlp_run run;
    struct zres *res;        /* shared */
    const float *init;
    int mismatch_rank;       /* this rank uses desc_extra / another stage */
    int mismatch_stage;
};

static int run_zero(struct lmc_comm *c, int rank, void *arg) {
    struct zjob *j = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 4;
    }
    struct mlp_run o = j->run;
    if (rank == j->mismatch_rank) {
        if (j->mismatch_stage >= 0) o.stage = j->mismatch_stage;
        else o.desc_extra = ", micro-batch 5";
    }
    double losses[STEPS] = {0};
    static float final[4096], at_save[4096];
    if (o.save_at) o.params_at_save = at_save;
    struct lmc_zero_stats st;
    lmc_status s = mlp_train_zero(&MLP, &o, c, &be, j->init, losses, final, &st, &err);
    lmc_backend_cpu_free(&be);
    if (s) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 2;
    }
    j->res->peak_bytes[rank] = st.bytes_peak;
    if (rank == 0) {
        memcpy(j->res->losses, losses, sizeof losses);
        memcpy(j->res->params, final, sizeof final);
        if (o.save_at) memcpy(j->res->at_save, at_save, sizeof at_save);
    }
    return 0;
}

static double rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

static int64_t mlp_numel(void) {
    struct lmc_zero_tensor t[2 * MLP_MAX_L];
    char names[2 * MLP_MAX_L][16];
    return mlp_layout(&MLP, t, names);
}

static struct mlp_run base_run(int stage) {
    struct mlp_run o = {.stage = stage, .steps = STEPS, .global_batch = GBATCH, .lr = 0.02, .max_norm = 0.6};
    return o;
}

static bool all_ok_in(const int *codes, int W, const char *dir) {
    bool ok = true;
    for (int r = 0; r < W; r++)
        if (codes[r]) {
            fprintf(stderr, "rank %d exit %d: %s\n", r, codes[r], slurp(dir, r));
            ok = false;
        }
    return ok;
}
#define all_ok(codes, W) all_ok_in(codes, W, dir)

/* ---------- mpirun modes */
static int mpi_main(const char *mode) {
    struct lmc_comm c;
    lmc_err err = {0};
    if (!lmc_comm_mpi_available()) {
        printf("test_dist: skipped: built without MPI\n");
        return 77;
    }
    /* what lmc train will call: the launcher (mpirun) picks the mpi communicator */
    setenv("LMC_DIST_TIMEOUT", "120", 1);
    if (lmc_dist_init(&c, LMC_DIST_HOST, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    bool native = !strcmp(c.name, "mpi-native"); /* LMC_DIST_MPI_NATIVE=1: MPI's own reduction order */
    if ((strcmp(c.name, "mpi") && !native) || c.world < 2) {
        fprintf(stderr, "test_dist %s: lmc_dist_init gave %s with world %d under mpirun\n", mode, c.name, c.world);
        return 1;
    }
    int64_t P = mlp_numel();
    float *init = malloc(sizeof(float) * (size_t)P), *ref = malloc(sizeof(float) * (size_t)P);
    float *fin = malloc(sizeof(float) * (size_t)P), *fin0 = malloc(sizeof(float) * (size_t)P);
    double rl[STEPS], zl[STEPS];
    mlp_init(&MLP, init, 42);
    struct lmc_backend be;
    lmc_backend_cpu_init(&be, 1, &err);
    int bad = 0;
    if (!strcmp(mode, "--mpi")) {
        bad += check_collectives(&c, !native);
        struct mlp_run o = base_run(0);
        mlp_train_ref(&MLP, &o, init, rl, ref);
        for (int stage = 0; stage <= 3; stage++) {
            o.stage = stage;
            if (mlp_train_zero(&MLP, &o, &c, &be, init, zl, fin, NULL, &err)) {
                fprintf(stderr, "rank %d: %s\n", c.rank, err.msg);
                bad++;
                break;
            }
            double dl = 0;
            for (int k = 0; k < STEPS; k++) dl = fmax(dl, fabs(zl[k] - rl[k]) / fabs(rl[k]));
            double dp = rel(fin, ref, P);
            if (dl > 1e-6 || dp > 1e-6) bad++;
            if (stage == 0) memcpy(fin0, fin, sizeof(float) * (size_t)P);
            else if (!native && memcmp(fin, fin0, sizeof(float) * (size_t)P)) bad++;
            if (c.rank == 0)
                printf("%s world %d stage %d: loss rel %.2e, params rel %.2e\n", c.name, c.world, stage, dl, dp);
        }
    } else {
        struct mlp_run o = base_run(2);
        if (!strcmp(mode, "--mpi-die")) o.die_rank = 1, o.die_step = 3;
        if (!strcmp(mode, "--mpi-mismatch") && c.rank == 1) o.desc_extra = ", micro-batch 5";
        if (mlp_train_zero(&MLP, &o, &c, &be, init, zl, fin, NULL, &err)) {
            fprintf(stderr, "rank %d: %s\n", c.rank, err.msg);
            bad++;
        }
    }
    /* every rank reports; a failed rank must not wait for the others' finalize */
    int code = bad ? 1 : 0, rank = c.rank;
    if (code) _exit(code);
    lmc_backend_cpu_free(&be);
    c.free(&c);
    free(init), free(ref), free(fin), free(fin0);
    if (rank == 0) printf("test_dist %s: ok\n", mode);
    return code;
}

/* --make-ckpt DIR: a 2-rank ZeRO-1 run saving after step 10 into DIR (for
 * test_zero_cli.sh's convert-checkpoint), the parameters then in DIR/params.f32. */
static int make_ckpt(const char *ck) {
    if (mkdir(ck, 0755) && errno != EEXIST) return 1;
    int64_t P = mlp_numel();
    float *init = malloc(sizeof(float) * (size_t)P);
    mlp_init(&MLP, init, 42);
    struct zres *res = mmap(NULL, sizeof *res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct zjob j = {base_run(1), res, init, -1, -1};
    j.run.save_at = 10;
    j.run.ckpt_dir = ck;
    struct spawn_opts so = {.world = 2};
    int codes[2];
    spawn(&so, run_zero, &j, ck, codes);
    char path[600];
    snprintf(path, sizeof path, "%s/params.f32", ck);
    FILE *f = fopen(path, "wb");
    bool ok = !codes[0] && !codes[1] && f && fwrite(res->at_save, sizeof(float), (size_t)P, f) == (size_t)P;
    if (f) fclose(f);
    for (int r = 0; r < 2; r++) {
        snprintf(path, sizeof path, "%s/rank%d.err", ck, r);
        unlink(path);
    }
    free(init);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc > 2 && !strcmp(argv[1], "--make-ckpt")) return make_ckpt(argv[2]);
    if (argc > 1) return mpi_main(argv[1]);
    setenv("LMC_DIST_TIMEOUT", "120", 1);
    char tmpl[] = "/tmp/lmc_test_dist_XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    int codes[8];

    /* collectives on 2, 3 and 4 ranks */
    for (int W = 2; W <= 4; W++) {
        struct spawn_opts so = {.world = W};
        spawn(&so, run_collectives, NULL, dir, codes);
        CHECK_MSG(all_ok(codes, W), "collectives world %d: %s", W, slurp(dir, 0));
    }

    /* ZeRO 0-3 at world 1, 2, 4 against the one-process run */
    int64_t P = mlp_numel();
    LMC_ASSERT(P <= 4096);
    float *init = malloc(sizeof(float) * (size_t)P), *ref = malloc(sizeof(float) * (size_t)P);
    float *first = malloc(sizeof(float) * (size_t)P);
    double rl[STEPS];
    mlp_init(&MLP, init, 42);
    struct mlp_run o = base_run(0);
    mlp_train_ref(&MLP, &o, init, rl, ref);
    CHECK(rl[STEPS - 1] < 0.8 * rl[0]); /* it learns */
    struct zres *res = mmap(NULL, sizeof *res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const int worlds[] = {1, 2, 4};
    for (int wi = 0; wi < 3; wi++) {
        int W = worlds[wi];
        for (int stage = 0; stage <= 3; stage++) {
            memset(res, 0, sizeof *res);
            struct zjob j = {base_run(stage), res, init, -1, -1};
            j.run.log_memory = true;
            j.run.init_on_host = stage % 2 == 1; /* the CPU backend's memory is host memory: same bits */
            struct spawn_opts so = {.world = W};
            spawn(&so, run_zero, &j, dir, codes);
            CHECK_MSG(all_ok(codes, W), "zero stage %d world %d: %s", stage, W, slurp(dir, 0));
            char logline[64];
            snprintf(logline, sizeof logline, "zero-%d on %d rank%s: state", stage, W, W == 1 ? "" : "s");
            CHECK_MSG(strstr(slurp(dir, 0), logline) && (W == 1 || !strstr(slurp(dir, 1), logline)),
                      "memory log on rank 0 only: %s", slurp(dir, 0));
            double dl = 0;
            for (int k = 0; k < STEPS; k++) dl = fmax(dl, fabs(res->losses[k] - rl[k]) / fabs(rl[k]));
            double dp = rel(res->params, ref, P);
            CHECK_MSG(dl <= 1e-6 && dp <= 1e-6, "stage %d world %d: losses %.3g params %.3g", stage, W, dl, dp);
            if (stage == 0) memcpy(first, res->params, sizeof(float) * (size_t)P);
            else CHECK_MSG(!memcmp(first, res->params, sizeof(float) * (size_t)P), "stage %d world %d differs from stage 0", stage, W);
            /* memory per rank: stage 3 holds about 16P/N plus two units */
            struct lmc_zero_mem mem;
            lmc_zero_mem_fp32(stage, W, P, &mem);
            /* + the scalar scratch, up to four gathered or gradient units
             * (the largest is 238 elements, padded to 256) and the padding
             * (each unit's part rounded up to 16 floats: < 16 W floats per
             * unit in each of four buffers) */
            double extra = 64 * 8 + (stage >= 2 && W > 1 ? 4.0 * 4 * 256 : 0) + 4.0 * 16 * 4 * 3 * W;
            CHECK_MSG((double)res->peak_bytes[0] <= mem.total + extra, "stage %d world %d: peak %zu > %.0f", stage, W,
                      res->peak_bytes[0], mem.total + extra);
            printf("zero stage %d world %d: loss rel %.2e params rel %.2e, rank 0 peak %zu B (formula %.0f B)\n", stage,
                   W, dl, dp, res->peak_bytes[0], mem.total);
        }
    }

    /* gradient accumulation: 2 micro-steps per step, reductions on the last */
    for (int stage = 0; stage <= 3; stage++) {
        memset(res, 0, sizeof *res);
        struct zjob j = {base_run(stage), res, init, -1, -1};
        j.run.accum = 2;
        struct spawn_opts so = {.world = 2};
        spawn(&so, run_zero, &j, dir, codes);
        CHECK_MSG(all_ok(codes, 2), "accumulation stage %d", stage);
        double dl = 0;
        for (int k = 0; k < STEPS; k++) dl = fmax(dl, fabs(res->losses[k] - rl[k]) / fabs(rl[k]));
        CHECK_MSG(dl <= 1e-6 && rel(res->params, ref, P) <= 1e-6, "accumulation stage %d: losses %.3g params %.3g",
                  stage, dl, rel(res->params, ref, P));
    }

    /* sharded checkpoints: save after step 10, resume, bit-identical end */
    for (int stage = 0; stage <= 3; stage++) {
        char ck[600];
        snprintf(ck, sizeof ck, "%s/ck%d", dir, stage); /* lmc_zero_save creates it */
        memset(res, 0, sizeof *res);
        struct zjob j = {base_run(stage), res, init, -1, -1};
        j.run.save_before = 5;
        j.run.save_at = 10;
        j.run.ckpt_dir = ck;
        struct spawn_opts so = {.world = 2};
        spawn(&so, run_zero, &j, dir, codes);
        CHECK_MSG(all_ok(codes, 2), "save stage %d: %s", stage, slurp(dir, 0));
        struct zres full = *res;
        /* the step-5 shards went once the step-10 manifest was in place;
         * the leftovers of an interrupted later save are ignored */
        char path[700];
        snprintf(path, sizeof path, "%s/zero-step%08d-rank%05d.bin", ck, 5, 0);
        CHECK(access(path, F_OK) != 0);
        snprintf(path, sizeof path, "%s/zero-step%08d-rank%05d.bin", ck, 10, 1);
        CHECK(access(path, F_OK) == 0);
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "%s/zero-step%08d-rank%05d.bin%s", ck, 15, k, k ? "" : ".tmp");
            FILE *f = fopen(path, "wb");
            fputs("half-written", f);
            fclose(f);
        }
        memset(res, 0, sizeof *res);
        j.run.save_at = 0;
        j.run.save_before = 0;
        j.run.resume = true;
        spawn(&so, run_zero, &j, dir, codes);
        CHECK_MSG(all_ok(codes, 2), "resume stage %d: %s", stage, slurp(dir, 0));
        CHECK_MSG(!memcmp(full.params, res->params, sizeof(float) * (size_t)P), "resume stage %d not bit-exact", stage);
        CHECK(!memcmp(full.losses + 10, res->losses + 10, sizeof(double) * (STEPS - 10)));
        /* consolidation gives the parameters at the save */
        float *cp = NULL, *cm = NULL;
        int64_t n = 0, step = 0;
        lmc_err err = {0};
        CHECK(lmc_zero_consolidate(ck, &cp, &cm, NULL, &n, &step, &err) == LMC_OK);
        CHECK(n == P && step == 10 && cp && !memcmp(cp, full.at_save, sizeof(float) * (size_t)P));
        free(cp), free(cm);
        if (stage == 1) {
            /* reshard: world 2's checkpoint resumed by 4 ranks at stage 3 */
            memset(res, 0, sizeof *res);
            struct zjob j4 = {base_run(3), res, init, -1, -1};
            j4.run.resume = true;
            j4.run.ckpt_dir = ck;
            struct spawn_opts s4 = {.world = 4};
            spawn(&s4, run_zero, &j4, dir, codes);
            CHECK_MSG(all_ok(codes, 4), "reshard: %s", slurp(dir, 0));
            CHECK_MSG(rel(res->params, ref, P) <= 1e-6, "reshard params %.3g", rel(res->params, ref, P));
            /* export: one safetensors file with the tensors' names and shapes */
            char st_path[700];
            snprintf(st_path, sizeof st_path, "%s/export.safetensors", dir);
            CHECK_MSG(lmc_zero_export_safetensors(ck, st_path, &err) == LMC_OK, "%s", err.msg);
            struct lmc_st st;
            CHECK(lmc_st_open_file(&st, st_path, &err) == LMC_OK && st.n_tensors == 6);
            struct lmc_zero_tensor tt[2 * MLP_MAX_L];
            char tn[2 * MLP_MAX_L][16];
            mlp_layout(&MLP, tt, tn);
            for (int k = 0; k < 6; k++) {
                const struct lmc_st_tensor *e = lmc_st_find(&st, tt[k].name);
                CHECK_MSG(e && e->dtype == LMC_DTYPE_F32 && e->ndim == tt[k].ndim && e->shape[0] == tt[k].shape[0] &&
                          e->numel == tt[k].numel &&
                          !memcmp(e->data, full.at_save + tt[k].offset, sizeof(float) * (size_t)tt[k].numel),
                          "export tensor %s", tt[k].name);
            }
            lmc_st_free(&st);
            /* damaged shards are refused by name */
            snprintf(path, sizeof path, "%s/zero-step%08d-rank%05d.bin", ck, 10, 1);
            FILE *f = fopen(path, "r+b");
            fseek(f, 200, SEEK_SET);
            fputc(0x5a, f);
            fclose(f);
            CHECK(lmc_zero_consolidate(ck, &cp, NULL, NULL, &n, &step, &err) == LMC_ERR_FORMAT);
            CHECK_MSG(strstr(err.msg, "checksum") && strstr(err.msg, "rank00001"), "%s", err.msg);
            CHECK(truncate(path, 100) == 0);
            CHECK(lmc_zero_consolidate(ck, &cp, NULL, NULL, &n, &step, &err) == LMC_ERR_FORMAT);
            CHECK_MSG(strstr(err.msg, "bytes"), "%s", err.msg);
        }
    }

    /* a killed rank: the others fail naming it, seen directly (socket
     * closed) or told by a rank that saw it, not after the 120 s timeout */
    {
        memset(res, 0, sizeof *res);
        struct zjob j = {base_run(2), res, init, -1, -1};
        j.run.die_rank = 1;
        j.run.die_step = 3;
        struct spawn_opts so = {.world = 3};
        double t0 = lmc_time_now();
        spawn(&so, run_zero, &j, dir, codes);
        double took = lmc_time_now() - t0;
        CHECK(codes[1] == 128 + SIGKILL);
        for (int r = 0; r < 3; r += 2) {
            const char *e = slurp(dir, r);
            CHECK_MSG(codes[r] != 0 && strstr(e, "lost rank 1") &&
                          (strstr(e, "connection closed") || strstr(e, "reported by rank")), "rank %d: %d %s", r,
                      codes[r], e);
        }
        printf("killed rank 1: the others exited in %.2f s: %s", took, slurp(dir, 0));
    }

    /* a stalled rank (stopped, its sockets open): the others give up after
     * the communicator's timeout (2 s here) naming it */
    {
        struct zjob j = {base_run(2), res, init, -1, -1};
        j.run.die_rank = 1;
        j.run.die_step = 3;
        j.run.die_signal = SIGSTOP;
        struct spawn_opts so = {.world = 3, .timeout_s = 2.0, .stopped_rank = 1};
        spawn(&so, run_zero, &j, dir, codes);
        /* every live rank fails with a message; at least one names the stalled
         * rank 1 (a rank that loses the one that timed out first may instead
         * name that rank, when its socket closes before the abort is read) */
        int named = 0;
        for (int r = 0; r < 3; r += 2) {
            const char *e = slurp(dir, r);
            bool stall = strstr(e, "no progress from rank") && strstr(e, "1 within 2 s");
            bool told = strstr(e, "lost rank 1 (reported") != NULL;
            named += stall || told;
            CHECK_MSG(codes[r] != 0 && (stall || told || strstr(e, "lost rank")), "rank %d: %d %s", r, codes[r], e);
        }
        CHECK_MSG(named >= 1, "no rank named the stalled rank 1: %s", slurp(dir, 0));
        printf("stalled rank 1: %s", slurp(dir, 0));
    }

    /* mismatched configurations are refused at start-up, on every rank */
    for (int k = 0; k < 2; k++) {
        struct zjob j = {base_run(1), res, init, 1, k == 0 ? -1 : 3};
        struct spawn_opts so = {.world = 2};
        spawn(&so, run_zero, &j, dir, codes);
        for (int r = 0; r < 2; r++) {
            const char *e = slurp(dir, r);
            CHECK_MSG(codes[r] == 2 && strstr(e, "ranks disagree") && strstr(e, "rank 1 has"), "rank %d: %s", r, e);
        }
        printf("mismatch %d: %s", k, slurp(dir, 0));
    }
    /* a rank claiming another world is refused by the rendezvous */
    {
        struct spawn_opts so = {.world = 2, .claimed_world_of_last = 3};
        spawn(&so, run_collectives, NULL, dir, codes);
        CHECK(codes[0] == 3 && codes[1] == 3);
        CHECK_MSG(strstr(slurp(dir, 0), "different world size"), "%s", slurp(dir, 0));
    }

    munmap(res, sizeof *res);
    free(init), free(ref), free(first);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_dist");
}
