/* test_mp_split.c — sub-communicators (lmc_comm_split, dist/comm_split.c)
 * on 4 and 5 forked ranks joined by tcp: split by color rank % 2 with
 * keys that reverse the order, and into groups of 2 consecutive ranks
 * (the --tp 2 layout); in each sub-communicator all_reduce (sum, max, avg;
 * f32/f64/i64, sizes 1 and 1001), all_gather, reduce_scatter, broadcast,
 * barrier, send/recv around a ring and an async all-reduce equal their
 * definitions over the members; parent collectives interleave with the
 * subs' (the shared links keep them apart); a color alone gives a world-1
 * communicator; a negative color is refused. */
#include "test.h"
#include "dist_spawn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FAILIF(c, ...) do { if (c) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } } while (0)

/* value of element i on parent rank r */
static double val(int r, int64_t i) { return (double)((r + 1) * 1000 + i % 97) * 0.25; }

static int check_sub(struct lmc_comm *p, struct lmc_comm *s, const int *members, int n) {
    lmc_err err = {0};
    FAILIF(s->world != n, "world %d expected %d", s->world, n);
    FAILIF(members[s->rank] != p->rank, "sub rank %d is parent rank %d, expected %d", s->rank, p->rank,
           members[s->rank]);
    for (int64_t cnt = 1; cnt <= 1001; cnt += 1000) {
        float *f = malloc(sizeof(float) * (size_t)cnt);
        double *d = malloc(sizeof(double) * (size_t)cnt);
        int64_t *q = malloc(sizeof(int64_t) * (size_t)cnt);
        for (int64_t i = 0; i < cnt; i++) f[i] = (float)val(p->rank, i), d[i] = val(p->rank, i), q[i] = p->rank * 7 + i;
        FAILIF(s->all_reduce(s, f, cnt, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err), "%s", err.msg);
        FAILIF(p->all_reduce(p, d, cnt, LMC_DTYPE_F64, LMC_REDUCE_MAX, &err), "%s", err.msg); /* the parent between */
        FAILIF(s->all_reduce(s, q, cnt, LMC_DTYPE_I64, LMC_REDUCE_SUM, &err), "%s", err.msg);
        for (int64_t i = 0; i < cnt; i++) {
            double want = 0;
            int64_t wq = 0;
            for (int k = 0; k < n; k++) want += val(members[k], i), wq += members[k] * 7 + i;
            FAILIF(fabs(f[i] - want) > 1e-3, "all_reduce[%lld] %g vs %g", (long long)i, f[i], want);
            FAILIF(d[i] != val(p->world - 1, i), "parent max[%lld] %g", (long long)i, d[i]);
            FAILIF(q[i] != wq, "i64 all_reduce[%lld] %lld vs %lld", (long long)i, (long long)q[i], (long long)wq);
        }
        for (int64_t i = 0; i < cnt; i++) d[i] = val(p->rank, i);
        FAILIF(s->all_reduce(s, d, cnt, LMC_DTYPE_F64, LMC_REDUCE_AVG, &err), "%s", err.msg);
        for (int64_t i = 0; i < cnt; i++) {
            double want = 0;
            for (int k = 0; k < n; k++) want += val(members[k], i);
            FAILIF(fabs(d[i] - want / n) > 1e-9, "avg[%lld]", (long long)i);
        }
        free(f), free(d), free(q);
    }
    /* all_gather, reduce_scatter */
    double mine[3] = {p->rank, p->rank * 2.0, -1.0}, all[3 * 8], rs[3];
    FAILIF(s->all_gather(s, mine, all, 3, LMC_DTYPE_F64, &err), "%s", err.msg);
    for (int k = 0; k < n; k++) FAILIF(all[3 * k] != members[k] || all[3 * k + 1] != 2.0 * members[k], "all_gather %d", k);
    for (int k = 0; k < 3 * n; k++) all[k] = (double)(k * (p->rank + 1));
    FAILIF(s->reduce_scatter(s, all, rs, 3, LMC_DTYPE_F64, LMC_REDUCE_SUM, &err), "%s", err.msg);
    for (int j = 0; j < 3; j++) {
        double want = 0;
        for (int k = 0; k < n; k++) want += (double)((3 * s->rank + j) * (members[k] + 1));
        FAILIF(rs[j] != want, "reduce_scatter[%d] %g vs %g", j, rs[j], want);
    }
    /* broadcast from the last member, barrier, a ring of send/recv */
    int64_t b = p->rank;
    FAILIF(s->broadcast(s, &b, sizeof b, n - 1, &err), "%s", err.msg);
    FAILIF(b != members[n - 1], "broadcast %lld", (long long)b);
    FAILIF(s->barrier(s, &err), "%s", err.msg);
    if (n > 1) {
        int32_t out = p->rank, in = -1;
        int next = (s->rank + 1) % n, prev = (s->rank + n - 1) % n;
        if (s->rank % 2 == 0) {
            FAILIF(s->send(s, &out, sizeof out, next, &err) || s->recv(s, &in, sizeof in, prev, &err), "%s", err.msg);
        } else {
            FAILIF(s->recv(s, &in, sizeof in, prev, &err) || s->send(s, &out, sizeof out, next, &err), "%s", err.msg);
        }
        FAILIF(in != members[prev], "ring got %d expected %d", in, members[prev]);
    }
    /* async */
    float a[5] = {1, 2, 3, 4, (float)p->rank};
    struct lmc_comm_work *w;
    FAILIF(s->iall_reduce(s, a, 5, LMC_DTYPE_F32, LMC_REDUCE_SUM, &w, &err) || s->wait(s, w, &err), "%s", err.msg);
    float ws = 0;
    for (int k = 0; k < n; k++) ws += (float)members[k];
    FAILIF(a[0] != (float)n || a[4] != ws, "iall_reduce %g %g", a[0], a[4]);
    return 0;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    (void)arg;
    lmc_err err = {0};
    int W = c->world, members[16], n = 0;
    /* color rank % 2, keys reversing the order */
    struct lmc_comm s;
    FAILIF(lmc_comm_split(c, rank % 2, -rank, &s, &err), "%s", err.msg);
    for (int r = W - 1; r >= 0; r--)
        if (r % 2 == rank % 2) members[n++] = r;
    int bad = check_sub(c, &s, members, n);
    /* groups of two consecutive ranks (the last alone when W is odd) */
    struct lmc_comm t;
    FAILIF(lmc_comm_split(c, rank / 2, rank, &t, &err), "%s", err.msg);
    n = 0;
    for (int r = 0; r < W; r++)
        if (r / 2 == rank / 2) members[n++] = r;
    bad |= check_sub(c, &t, members, n);
    if (n == 1) FAILIF(strcmp(t.name, "single"), "a lone rank's group is %s", t.name);
    /* the two subs one after another, then the parent */
    float x = 1;
    FAILIF(s.all_reduce(&s, &x, 1, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err) ||
           t.all_reduce(&t, &x, 1, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err) ||
           c->all_reduce(c, &x, 1, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err), "%s", err.msg);
    struct lmc_comm u;
    FAILIF(lmc_comm_split(c, -1, 0, &u, &err) != LMC_ERR_ARG || !strstr(err.msg, "color"), "negative color");
    t.free(&t);
    s.free(&s);
    return bad;
}

int main(void) {
    char dir[] = "/tmp/lmc_test_mp_split_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    for (int W = 4; W <= 5; W++) {
        struct spawn_opts so = {.world = W, .timeout_s = 60};
        int codes[16] = {0}, bad = 0;
        spawn(&so, run_rank, NULL, dir, codes);
        for (int k = 0; k < W; k++)
            if (codes[k]) bad = 1, fprintf(stderr, "world %d rank %d exit %d: %s", W, k, codes[k], slurp(dir, k));
        CHECK_MSG(!bad, "comm split at world %d", W);
    }
    /* world 1: the single communicator splits into itself */
    struct lmc_comm c, s;
    lmc_err err = {0};
    lmc_comm_single_init(&c);
    CHECK(lmc_comm_split(&c, 3, 0, &s, &err) == LMC_OK && s.world == 1 && s.rank == 0);
    s.free(&s);
    c.free(&c);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return test_finish("test_mp_split");
}
