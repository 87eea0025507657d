/* test_mp_ring.c — context parallelism: causal ring attention on 1, 2 and 4
 * forked ranks (tcp communicator) against full causal attention computed in
 * float64 over the whole sequence, forward (out, lse) and backward (dq, dk,
 * dv), at sequence lengths 1, 7, 1000 and 4097 (uneven zigzag chunks, ranks
 * holding no token), GQA with two query heads per KV head; every tensor
 * within 1e-5 relative. On one rank the result also equals the CPU
 * backend's attention_train / attention_bwd (same lse convention). Every
 * rank also runs the ring through a backend's block ops (the CPU backend's
 * attn_block_*, lmc_ring_attn_fwd_be / _bwd_be: the path a GPU takes, its
 * blocks staged through host buffers) within the same bounds. Bad shapes
 * are refused with LMC_ERR_ARG. */
#include "test.h"
#include "dist_spawn.h"
#include "dist/ring_attn.h"
#include "ops/backend.h"

#include <stdlib.h>
#include <sys/stat.h>

struct job {
    struct lmc_ring_attn_shape s;
    const float *q, *k, *v, *dout;                   /* whole sequence */
    const double *out, *lse, *dq, *dk, *dv;          /* float64 reference */
};

/* Full causal attention and its gradients in float64. */
static void reference(const struct lmc_ring_attn_shape *s, const float *q, const float *k,
                      const float *v, const float *dout, double *out, double *lse, double *dq,
                      double *dk, double *dv) {
    int64_t T = s->T, H = s->n_heads, hd = s->hd, qd = H * hd, kvd = s->n_kv * hd, grp = H / s->n_kv;
    double *p = malloc(sizeof(double) * (size_t)(T + 1));
    memset(dq, 0, sizeof(double) * (size_t)(T * qd));
    memset(dk, 0, sizeof(double) * (size_t)(T * kvd));
    memset(dv, 0, sizeof(double) * (size_t)(T * kvd));
    for (int64_t i = 0; i < T; i++)
        for (int64_t h = 0; h < H; h++) {
            const float *qi = q + i * qd + h * hd, *di = dout + i * qd + h * hd;
            int64_t kh = h / grp;
            double m = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= i; j++) {
                double d = 0;
                for (int64_t e = 0; e < hd; e++) d += (double)qi[e] * k[j * kvd + kh * hd + e];
                p[j] = d * s->scale;
                m = fmax(m, p[j]);
            }
            for (int64_t j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - m));
            double *o = out + i * qd + h * hd, D = 0;
            for (int64_t e = 0; e < hd; e++) o[e] = 0;
            for (int64_t j = 0; j <= i; j++)
                for (int64_t e = 0; e < hd; e++) o[e] += p[j] / sum * v[j * kvd + kh * hd + e];
            lse[i * H + h] = m + log(sum);
            for (int64_t e = 0; e < hd; e++) D += di[e] * o[e];
            for (int64_t j = 0; j <= i; j++) {
                double pj = p[j] / sum, dp = 0;
                for (int64_t e = 0; e < hd; e++) dp += (double)di[e] * v[j * kvd + kh * hd + e];
                double ds = pj * (dp - D) * s->scale;
                for (int64_t e = 0; e < hd; e++) {
                    dq[i * qd + h * hd + e] += ds * k[j * kvd + kh * hd + e];
                    dk[j * kvd + kh * hd + e] += ds * qi[e];
                    dv[j * kvd + kh * hd + e] += pj * di[e];
                }
            }
        }
    free(p);
}

/* Rows pos[0..n) of a (T, w) matrix. */
static float *rows_f(const float *a, const int64_t *pos, int64_t n, int64_t w) {
    float *r = malloc(sizeof(float) * (size_t)(n * w + 1));
    for (int64_t i = 0; i < n; i++) memcpy(r + i * w, a + pos[i] * w, sizeof(float) * (size_t)w);
    return r;
}

/* max |got - ref| over this rank's rows / max |ref| over the whole tensor. */
static double err_rows(const float *got, const double *ref, const int64_t *pos, int64_t n, int64_t w,
                       int64_t T) {
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < T * w; i++) den = fmax(den, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++)
        for (int64_t e = 0; e < w; e++) {
            double d = fabs(got[i * w + e] - ref[pos[i] * w + e]);
            if (d > num || d != d) num = d;
        }
    return num / den;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct job *j = arg;
    const struct lmc_ring_attn_shape *s = &j->s;
    int64_t qd = s->n_heads * s->hd, kvd = s->n_kv * s->hd, H = s->n_heads;
    int64_t n = lmc_ring_attn_zigzag(s->T, rank, c->world, NULL);
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)(n + 1));
    lmc_ring_attn_zigzag(s->T, rank, c->world, pos);
    float *q = rows_f(j->q, pos, n, qd), *k = rows_f(j->k, pos, n, kvd), *v = rows_f(j->v, pos, n, kvd);
    float *dout = rows_f(j->dout, pos, n, qd);
    float *out = malloc(sizeof(float) * (size_t)(n * qd + 1)), *lse = malloc(sizeof(float) * (size_t)(n * H + 1));
    float *dq = malloc(sizeof(float) * (size_t)(n * qd + 1));
    float *dk = malloc(sizeof(float) * (size_t)(n * kvd + 1)), *dv = malloc(sizeof(float) * (size_t)(n * kvd + 1));
    lmc_err err = {0};
    int bad = 0;
    struct lmc_backend cpu; /* pass 1: the same ring through the backend's block ops (lmc_ring_attn_*_be) */
    bool have_cpu = false;
    for (int pass = 0; pass < 2 && !bad; pass++) {
        for (int64_t i = 0; pass == 1 && i < n * qd; i++) out[i] = dq[i] = NAN; /* pass 0's results gone */
        for (int64_t i = 0; pass == 1 && i < n * kvd; i++) dk[i] = dv[i] = NAN;
        for (int64_t i = 0; pass == 1 && i < n * H; i++) lse[i] = NAN;
        if (pass == 1 && !(have_cpu = lmc_backend_cpu_init(&cpu, 1, &err) == LMC_OK)) {
            fprintf(stderr, "rank %d: %s\n", rank, err.msg);
            bad = 1;
        } else if (pass == 0 ? lmc_ring_attn_fwd(c, s, out, lse, q, k, v, &err) ||
                                   lmc_ring_attn_bwd(c, s, dq, dk, dv, dout, out, lse, q, k, v, &err)
                             : lmc_ring_attn_fwd_be(&cpu, c, s, out, lse, q, k, v, &err) ||
                                   lmc_ring_attn_bwd_be(&cpu, c, s, dq, dk, dv, dout, out, lse, q, k, v, &err)) {
            fprintf(stderr, "rank %d: %s\n", rank, err.msg);
            bad = 1;
        } else {
            double e[5] = {err_rows(out, j->out, pos, n, qd, s->T), err_rows(lse, j->lse, pos, n, H, s->T),
                           err_rows(dq, j->dq, pos, n, qd, s->T), err_rows(dk, j->dk, pos, n, kvd, s->T),
                           err_rows(dv, j->dv, pos, n, kvd, s->T)};
            static const char *nm[5] = {"out", "lse", "dq", "dk", "dv"};
            for (int t = 0; t < 5; t++)
                if (!(e[t] <= 1e-5)) {
                    fprintf(stderr, "rank %d T=%lld%s: %s rel err %.3g\n", rank, (long long)s->T,
                            pass ? " (backend block ops)" : "", nm[t], e[t]);
                    bad = 1;
                }
        }
        if (have_cpu) lmc_backend_cpu_free(&cpu);
    }
    free(pos), free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    return bad;
}

int main(void) {
    char dir[] = "/tmp/lmc_test_mp_ring_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const int64_t Ts[] = {1, 7, 1000, 4097};
    for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++) {
        struct lmc_ring_attn_shape s = {Ts[t], 4, 2, 8, 0.35355339f};
        if (Ts[t] > 1000) s.n_heads = 2, s.n_kv = 1; /* keep the float64 reference quick */
        int64_t T = s.T, qd = s.n_heads * s.hd, kvd = s.n_kv * s.hd;
        float *q = malloc(sizeof(float) * (size_t)(T * qd)), *dout = malloc(sizeof(float) * (size_t)(T * qd));
        float *k = malloc(sizeof(float) * (size_t)(T * kvd)), *v = malloc(sizeof(float) * (size_t)(T * kvd));
        uint64_t seed = 42 + (uint64_t)T;
        for (int64_t i = 0; i < T * qd; i++) q[i] = 3 * test_rand(&seed), dout[i] = test_rand(&seed);
        for (int64_t i = 0; i < T * kvd; i++) k[i] = test_rand(&seed), v[i] = test_rand(&seed);
        double *out = malloc(sizeof(double) * (size_t)(T * qd)), *lse = malloc(sizeof(double) * (size_t)(T * s.n_heads));
        double *dq = malloc(sizeof(double) * (size_t)(T * qd));
        double *dk = malloc(sizeof(double) * (size_t)(T * kvd)), *dv = malloc(sizeof(double) * (size_t)(T * kvd));
        reference(&s, q, k, v, dout, out, lse, dq, dk, dv);
        struct job j = {s, q, k, v, dout, out, lse, dq, dk, dv};
        const int worlds[] = {1, 2, 4};
        for (int w = 0; w < 3; w++) {
            struct spawn_opts so = {.world = worlds[w]};
            int codes[16] = {0}, bad = 0;
            spawn(&so, run_rank, &j, dir, codes);
            for (int r = 0; r < worlds[w]; r++)
                if (codes[r]) {
                    bad = 1;
                    fprintf(stderr, "T=%lld world %d rank %d exit %d: %s", (long long)T, worlds[w], r, codes[r],
                            slurp(dir, r));
                }
            CHECK_MSG(!bad, "ring attention T=%lld world %d", (long long)T, worlds[w]);
        }
        free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    }
    /* one rank against the backend's training attention ops */
    {
        struct lmc_backend be;
        lmc_err e2 = {0};
        CHECK(lmc_backend_cpu_init(&be, 1, &e2) == LMC_OK);
        struct lmc_ring_attn_shape s = {37, 4, 2, 8, 0.35355339f};
        struct lmc_comm one;
        lmc_comm_single_init(&one);
        enum { N = 37 * 32, NK = 37 * 16 };
        static float q[N], k[NK], v[NK], dout[N], o1[N], o2[N], l1[37 * 4], l2[37 * 4];
        static float dq1[N], dq2[N], dk1[NK], dk2[NK], dv1[NK], dv2[NK];
        uint64_t seed = 5;
        for (int i = 0; i < N; i++) q[i] = test_rand(&seed), dout[i] = test_rand(&seed);
        for (int i = 0; i < NK; i++) k[i] = test_rand(&seed), v[i] = test_rand(&seed);
        CHECK(lmc_ring_attn_fwd(&one, &s, o1, l1, q, k, v, &e2) == LMC_OK);
        CHECK(lmc_ring_attn_bwd(&one, &s, dq1, dk1, dv1, dout, o1, l1, q, k, v, &e2) == LMC_OK);
        be.attention_train(be.ctx, o2, l2, q, k, v, 1, 37, 4, 2, 8, s.scale, 0);
        be.attention_bwd(be.ctx, dq2, dk2, dv2, dout, o2, l2, q, k, v, 1, 37, 4, 2, 8, s.scale, 0);
        double m = 0;
        for (int i = 0; i < N; i++) m = fmax(m, fabs(o1[i] - o2[i])) , m = fmax(m, fabs(dq1[i] - dq2[i]));
        for (int i = 0; i < NK; i++) m = fmax(m, fabs(dk1[i] - dk2[i])), m = fmax(m, fabs(dv1[i] - dv2[i]));
        for (int i = 0; i < 37 * 4; i++) m = fmax(m, fabs(l1[i] - l2[i]));
        CHECK_MSG(m < 1e-5, "ring vs backend attention_train/bwd: %g", m);
        one.free(&one);
        lmc_backend_cpu_free(&be);
    }
    /* bad shapes */
    struct lmc_comm c;
    lmc_comm_single_init(&c);
    lmc_err err = {0};
    float x[64] = {0};
    struct lmc_ring_attn_shape bad1 = {4, 3, 2, 8, 1}, bad2 = {-1, 2, 2, 8, 1};
    CHECK(lmc_ring_attn_fwd(&c, &bad1, x, x, x, x, x, &err) == LMC_ERR_ARG);
    CHECK(strstr(err.msg, "heads=3") != NULL);
    CHECK(lmc_ring_attn_bwd(&c, &bad2, x, x, x, x, x, x, x, x, x, &err) == LMC_ERR_ARG);
    /* zigzag: every position once, chunks r and 2W-1-r */
    for (int W = 1; W <= 4; W++) {
        int64_t seen[23] = {0}, pos[23], tot = 0;
        for (int r = 0; r < W; r++) {
            int64_t n = lmc_ring_attn_zigzag(23, r, W, pos);
            for (int64_t i = 0; i < n; i++) seen[pos[i]]++;
            tot += n;
        }
        int once = 1;
        for (int i = 0; i < 23; i++) once &= seen[i] == 1;
        CHECK(tot == 23 && once);
    }
    int64_t p2[8];
    CHECK(lmc_ring_attn_zigzag(8, 0, 2, p2) == 4 && p2[0] == 0 && p2[1] == 1 && p2[2] == 6 && p2[3] == 7);
    c.free(&c);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return test_finish("test_mp_ring");
}
