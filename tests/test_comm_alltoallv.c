/* test_comm_alltoallv.c — the communicators' alltoallv (expert
 * parallelism's token exchange): 1 (single), 2, 3 and 4 forked ranks over
 * tcp, on odd counts in f32, i64 and u8, with patterns where one rank sends
 * nothing, one receives nothing, everything goes to one rank, and parts land
 * out of rank order with gaps; every received element is checked against
 * the value its sender wrote (sender, receiver, index). Bad arguments
 * (negative counts, a self part whose sizes disagree, an unknown dtype)
 * are refused by name. With --mpi (under mpirun, test_ep_mpi.sh) the same
 * patterns on the mpi communicator. */
#include "test.h"
#include "dist_spawn.h"

#include <stdlib.h>
#include <string.h>

enum { NPAT = 5 };

/* Elements rank p sends to rank q in pattern k (0 allowed). */
static int64_t count_of(int k, int p, int q, int W) {
    switch (k) {
    case 0: return 1 + ((p * 7 + q * 3) % 5) * 37; /* odd sizes, all non-zero */
    case 1: return p == 1 % W ? 0 : 13 + p + 2 * q; /* rank 1 sends nothing */
    case 2: return q == W - 1 ? 0 : 101 + p * q;    /* the last rank receives nothing */
    case 3: return q == 0 ? 1001 + p : 0;           /* everything to rank 0 */
    default: return (p + q) % 2 ? 0 : 3 + p;        /* sparse */
    }
}

static double value(int p, int q, int64_t i) { return (double)(p * 1000003 + q * 10007) + (double)i; }

/* One pattern in one dtype on c: parts placed in reverse rank order with a
 * gap of 3 elements before each (offsets need not follow rank order). */
static int run_pattern(struct lmc_comm *c, int k, enum lmc_dtype dt) {
    int W = c->world, me = c->rank, bad = 0;
    size_t es = (size_t)lmc_dtype_size(dt);
    int64_t sc[16], so[16], rc[16], ro[16], st = 0, rt = 0;
    for (int q = W - 1; q >= 0; q--) {
        sc[q] = count_of(k, me, q, W), so[q] = st + 3, st += sc[q] + 3;
        rc[q] = count_of(k, q, me, W), ro[q] = rt + 3, rt += rc[q] + 3;
    }
    unsigned char *send = malloc((size_t)st * es + 1), *recv = malloc((size_t)rt * es + 1);
    memset(recv, 0xAB, (size_t)rt * es + 1);
    for (int q = 0; q < W; q++)
        for (int64_t i = 0; i < sc[q]; i++) {
            double v = value(me, q, i);
            void *d = send + (size_t)(so[q] + i) * es;
            if (dt == LMC_DTYPE_F32) *(float *)d = (float)v;
            else if (dt == LMC_DTYPE_I64) *(int64_t *)d = (int64_t)v;
            else *(uint8_t *)d = (uint8_t)((int64_t)v & 0xff);
        }
    lmc_err err = {0};
    if (c->alltoallv(c, send, sc, so, recv, rc, ro, dt, &err)) {
        fprintf(stderr, "rank %d pattern %d: %s\n", me, k, err.msg);
        bad = 1;
    }
    for (int p = 0; !bad && p < W; p++) {
        for (int64_t i = 0; i < rc[p]; i++) {
            double v = value(p, me, i);
            const void *d = recv + (size_t)(ro[p] + i) * es;
            bool ok = dt == LMC_DTYPE_F32 ? *(const float *)d == (float)v
                    : dt == LMC_DTYPE_I64 ? *(const int64_t *)d == (int64_t)v
                                          : *(const uint8_t *)d == (uint8_t)((int64_t)v & 0xff);
            if (!ok) {
                fprintf(stderr, "rank %d pattern %d dtype %s: element %lld from rank %d wrong\n", me, k,
                        lmc_dtype_name(dt), (long long)i, p);
                bad = 1;
                break;
            }
        }
        /* the gap before each part is untouched */
        for (int64_t i = ro[p] - 3; !bad && i < ro[p]; i++)
            if (recv[(size_t)i * es] != 0xAB) bad = 1, fprintf(stderr, "rank %d: gap overwritten\n", me);
    }
    free(send), free(recv);
    return bad;
}

static int check_all(struct lmc_comm *c) {
    int bad = 0;
    enum lmc_dtype dts[] = {LMC_DTYPE_F32, LMC_DTYPE_I64, LMC_DTYPE_U8};
    for (int k = 0; k < NPAT; k++)
        for (int d = 0; d < 3; d++) bad += run_pattern(c, k, dts[d]);
    /* refused before anything is sent (every rank refuses the same call) */
    int W = c->world, me = c->rank;
    int64_t cnt[16] = {0}, off[16] = {0}, neg[16] = {0};
    float buf[4];
    lmc_err err = {0};
    neg[W - 1] = -1;
    if (c->alltoallv(c, buf, neg, off, buf + 2, cnt, off, LMC_DTYPE_F32, &err) != LMC_ERR_ARG ||
        !strstr(err.msg, "send part"))
        bad++, fprintf(stderr, "rank %d: negative count not refused (%s)\n", me, err.msg);
    int64_t self[16] = {0};
    self[me] = 1;
    if (c->alltoallv(c, buf, self, off, buf + 2, cnt, off, LMC_DTYPE_F32, &err) != LMC_ERR_ARG ||
        !strstr(err.msg, "to itself"))
        bad++, fprintf(stderr, "rank %d: self mismatch not refused (%s)\n", me, err.msg);
    if (c->alltoallv(c, buf, cnt, off, buf + 2, cnt, off, (enum lmc_dtype)999, &err) != LMC_ERR_ARG)
        bad++, fprintf(stderr, "rank %d: bad dtype not refused\n", me);
    /* all counts zero: a no-op that still completes on every rank */
    if (c->alltoallv(c, buf, cnt, off, buf + 2, cnt, off, LMC_DTYPE_F32, &err))
        bad++, fprintf(stderr, "rank %d: empty alltoallv: %s\n", me, err.msg);
    /* the communicator still works afterwards */
    int64_t one = 1 + me;
    if (c->all_reduce(c, &one, 1, LMC_DTYPE_I64, LMC_REDUCE_SUM, &err) || one != (int64_t)W * (W + 1) / 2)
        bad++, fprintf(stderr, "rank %d: all_reduce after alltoallv gave %lld\n", me, (long long)one);
    return bad;
}

static int rank_main(struct lmc_comm *c, int rank, void *arg) {
    (void)rank, (void)arg;
    return check_all(c) ? 1 : 0;
}

static int mpi_main(void) {
    if (!lmc_comm_mpi_available()) {
        printf("test_comm_alltoallv: skipped: built without MPI\n");
        return 77;
    }
    setenv("LMC_DIST_TIMEOUT", "120", 1);
    struct lmc_comm c;
    lmc_err err = {0};
    if (lmc_dist_init(&c, LMC_DIST_HOST, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int bad = check_all(&c), rank = c.rank, world = c.world;
    if (bad) _exit(1);
    c.free(&c);
    if (rank == 0) printf("test_comm_alltoallv --mpi: ok (%d ranks)\n", world);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--mpi")) return mpi_main();
    char dir[] = "/tmp/lmc_test_a2a_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    for (int W = 1; W <= 4; W++) {
        struct spawn_opts so = {.world = W};
        int codes[16] = {0}, bad = 0;
        spawn(&so, rank_main, NULL, dir, codes);
        for (int r = 0; r < W; r++)
            if (codes[r]) bad = 1, fprintf(stderr, "world %d rank %d exit %d: %s", W, r, codes[r], slurp(dir, r));
        CHECK_MSG(!bad, "alltoallv at world %d", W);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return test_finish("test_comm_alltoallv");
}
