/* test_mp_tp.c — tensor parallelism (Megatron) on 1, 2 and 4 forked ranks
 * (tcp communicator): a one-layer causal transformer (vocabulary-parallel
 * embedding; q/k/v column-parallel by heads with GQA — 2 KV heads, so at
 * TP 4 each KV head is replicated on two ranks and its gradient summed over
 * them; output projection row-parallel; SwiGLU gate/up column-parallel and
 * down row-parallel; the LM head column-parallel over the vocabulary into a
 * parallel cross-entropy that never gathers the logits). Each rank's logits
 * columns, the loss and every gradient shard equal the one-process run
 * within 1e-5 relative; the one-process gradients agree with finite
 * differences of the loss; the head plans and bad inputs are checked. */
#include "test.h"
#include "dist_spawn.h"
#include "dist/tp.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { N = 11, C = 16, H = 4, KV = 2, HD = 4, I = 20, V = 38 };
enum { P_EMB, P_Q, P_K, P_V, P_O, P_G, P_U, P_D, P_HEAD, NP };
static const int64_t P_SIZE[NP] = {V * C, H * HD * C, KV * HD * C, KV * HD * C, C * H * HD,
                                   I * C, I * C, C * I, V * C};

struct full {
    float *p[NP];
    int32_t ids[N], tgt[N];
};

/* How tensor t is sharded: by rows [r0, r0+nr) or by columns [c0, c0+nc). */
struct shard {
    int64_t rows, cols, r0, nr, c0, nc;
};

static struct shard shard_of(int t, int rank, int T, const struct lmc_tp_heads *hp) {
    int64_t b, n;
    struct shard s = {0};
    switch (t) {
    case P_EMB: case P_HEAD: lmc_dist_slice(V, rank, T, &b, &n); s = (struct shard){V, C, b, n, 0, C}; break;
    case P_Q: s = (struct shard){H * HD, C, hp->q0 * HD, hp->nq * HD, 0, C}; break;
    case P_K: case P_V: s = (struct shard){KV * HD, C, hp->kv0 * HD, hp->nkv * HD, 0, C}; break;
    case P_O: s = (struct shard){C, H * HD, 0, C, hp->q0 * HD, hp->nq * HD}; break;
    case P_G: case P_U: lmc_dist_slice(I, rank, T, &b, &n); s = (struct shard){I, C, b, n, 0, C}; break;
    default: lmc_dist_slice(I, rank, T, &b, &n); s = (struct shard){C, I, 0, C, b, n}; break;
    }
    return s;
}

static float *take(const float *full, struct shard s) {
    float *d = malloc(sizeof(float) * (size_t)(s.nr * s.nc + 1));
    for (int64_t i = 0; i < s.nr; i++)
        memcpy(d + i * s.nc, full + (s.r0 + i) * s.cols + s.c0, sizeof(float) * (size_t)s.nc);
    return d;
}

struct result {
    double loss;
    float *logits;           /* (N, vr) this rank's columns */
    float *g[NP];            /* this rank's gradient shards */
    struct shard sh[NP];
    int64_t v0, vr;
};

/* One forward + backward of the model on this rank's shards. */
static lmc_status step(const struct lmc_tp *tp, const struct full *f, struct result *res, lmc_err *err) {
    int rank = tp->c->rank, T = tp->c->world;
    const struct lmc_backend *be = tp->be;
    struct lmc_tp_heads hp;
    lmc_status st = lmc_tp_plan_heads(H, KV, T, rank, &hp, err);
    if (st) return st;
    float *w[NP];
    struct lmc_mat m[NP];
    for (int t = 0; t < NP; t++) {
        res->sh[t] = shard_of(t, rank, T, &hp);
        w[t] = take(f->p[t], res->sh[t]);
        res->g[t] = calloc((size_t)(res->sh[t].nr * res->sh[t].nc + 1), sizeof(float));
        m[t] = (struct lmc_mat){LMC_DTYPE_F32, res->sh[t].nr, res->sh[t].nc, w[t]};
    }
    int64_t v0 = res->sh[P_HEAD].r0, vr = res->sh[P_HEAD].nr, q = hp.nq * HD, kv = hp.nkv * HD;
    int64_t il = res->sh[P_G].nr;
    res->v0 = v0, res->vr = vr;
#define A(n) calloc((size_t)(n) + 1, sizeof(float))
    float *x0 = A(N * C), *qb = A(N * q), *kb = A(N * kv), *vb = A(N * kv), *att = A(N * q), *lse = A(N * hp.nq);
    float *x1 = A(N * C), *gb = A(N * il), *ub = A(N * il), *mb = A(N * il), *x2 = A(N * C);
    float *lg = A(N * vr), *dlg = A(N * vr), *dx2 = A(N * C), *dm = A(N * il), *dg = A(N * il), *du = A(N * il);
    float *dx1 = A(N * C), *tmp = A(N * C), *da = A(N * q), *dq = A(N * q), *dk = A(N * kv), *dv = A(N * kv);
    /* forward */
    st = lmc_tp_embed_fwd(tp, x0, w[P_EMB], res->sh[P_EMB].r0, res->sh[P_EMB].nr, V, C, f->ids, N, err);
    if (!st) {
        lmc_tp_col_fwd(tp, qb, x0, N, &m[P_Q], NULL);
        lmc_tp_col_fwd(tp, kb, x0, N, &m[P_K], NULL);
        lmc_tp_col_fwd(tp, vb, x0, N, &m[P_V], NULL);
        be->attention_train(be->ctx, att, lse, qb, kb, vb, 1, N, hp.nq, hp.nkv, HD, 0.5f, 0);
        st = lmc_tp_row_fwd(tp, x1, att, N, &m[P_O], NULL, err);
    }
    if (!st) {
        be->add(be->ctx, x1, x1, x0, N * C);
        lmc_tp_col_fwd(tp, gb, x1, N, &m[P_G], NULL);
        lmc_tp_col_fwd(tp, ub, x1, N, &m[P_U], NULL);
        be->swiglu(be->ctx, mb, gb, ub, N * il);
        st = lmc_tp_row_fwd(tp, x2, mb, N, &m[P_D], NULL, err);
    }
    if (!st) {
        be->add(be->ctx, x2, x2, x1, N * C);
        lmc_tp_col_fwd(tp, lg, x2, N, &m[P_HEAD], NULL);
        memcpy(res->logits, lg, sizeof(float) * (size_t)(N * vr));
        st = lmc_tp_xent(tp, &res->loss, dlg, lg, N, v0, vr, V, f->tgt, err);
    }
    /* backward */
    if (!st) st = lmc_tp_col_bwd(tp, dx2, res->g[P_HEAD], NULL, dlg, x2, N, &m[P_HEAD], err);
    if (!st) {
        lmc_tp_row_bwd(tp, dm, res->g[P_D], NULL, dx2, mb, N, &m[P_D]);
        be->swiglu_bwd(be->ctx, dg, du, dm, gb, ub, N * il);
        st = lmc_tp_col_bwd(tp, dx1, res->g[P_G], NULL, dg, x1, N, &m[P_G], err);
    }
    if (!st) st = lmc_tp_col_bwd(tp, tmp, res->g[P_U], NULL, du, x1, N, &m[P_U], err);
    if (!st) {
        be->add(be->ctx, dx1, dx1, tmp, N * C);
        be->add(be->ctx, dx1, dx1, dx2, N * C);
        lmc_tp_row_bwd(tp, da, res->g[P_O], NULL, dx1, att, N, &m[P_O]);
        be->attention_bwd(be->ctx, dq, dk, dv, da, att, lse, qb, kb, vb, 1, N, hp.nq, hp.nkv, HD, 0.5f, 0);
        st = lmc_tp_col_bwd(tp, tmp, res->g[P_Q], NULL, dq, x0, N, &m[P_Q], err);
    }
    if (!st) { /* dx0 accumulates in dx1 */
        be->add(be->ctx, dx1, dx1, tmp, N * C);
        st = lmc_tp_col_bwd(tp, tmp, res->g[P_K], NULL, dk, x0, N, &m[P_K], err);
    }
    if (!st) {
        be->add(be->ctx, dx1, dx1, tmp, N * C);
        st = lmc_tp_col_bwd(tp, tmp, res->g[P_V], NULL, dv, x0, N, &m[P_V], err);
    }
    if (!st) {
        be->add(be->ctx, dx1, dx1, tmp, N * C);
        lmc_tp_embed_bwd(res->g[P_EMB], res->sh[P_EMB].r0, res->sh[P_EMB].nr, C, f->ids, N, dx1);
        st = lmc_tp_sum_replicated(tp, &hp, KV, res->g[P_K], HD * C, err);
    }
    if (!st) st = lmc_tp_sum_replicated(tp, &hp, KV, res->g[P_V], HD * C, err);
    float *bufs[] = {x0, qb, kb, vb, att, lse, x1, gb, ub, mb, x2, lg, dlg, dx2, dm, dg, du, dx1, tmp, da, dq, dk, dv};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    for (int t = 0; t < NP; t++) free(w[t]);
    return st;
}

static struct full F;
static struct result REF; /* the one-process run (rank 0 of 1) */

static double shard_err(const float *got, const float *ref_full, struct shard s) {
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < s.rows * s.cols; i++) den = fmax(den, fabs(ref_full[i]));
    for (int64_t i = 0; i < s.nr; i++)
        for (int64_t j = 0; j < s.nc; j++) {
            double d = fabs(got[i * s.nc + j] - ref_full[(s.r0 + i) * s.cols + s.c0 + j]);
            if (d > num || d != d) num = d;
        }
    return num / den;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    (void)arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_tp tp = {c, &be};
    struct result r = {0};
    r.logits = malloc(sizeof(float) * N * V);
    int bad = 0;
    if (step(&tp, &F, &r, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        bad = 1;
    } else {
        if (!(fabs(r.loss - REF.loss) <= 1e-5 * fabs(REF.loss)))
            bad = 1, fprintf(stderr, "rank %d: loss %.9g vs %.9g\n", rank, r.loss, REF.loss);
        struct shard ls = {N, V, 0, N, r.v0, r.vr};
        double e = shard_err(r.logits, REF.logits, ls);
        if (!(e <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: logits rel err %.3g\n", rank, e);
        for (int t = 0; t < NP; t++) {
            e = shard_err(r.g[t], REF.g[t], r.sh[t]);
            if (!(e <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: grad %d rel err %.3g\n", rank, t, e);
        }
    }
    lmc_backend_cpu_free(&be);
    return bad;
}

int main(void) {
    uint64_t seed = 7;
    for (int t = 0; t < NP; t++) {
        F.p[t] = malloc(sizeof(float) * (size_t)P_SIZE[t]);
        for (int64_t i = 0; i < P_SIZE[t]; i++) F.p[t][i] = test_rand(&seed) * (t == P_EMB ? 1.0f : 0.4f);
    }
    for (int i = 0; i < N; i++) F.ids[i] = (int32_t)(test_rng_next(&seed) % V), F.tgt[i] = (int32_t)(test_rng_next(&seed) % V);
    F.tgt[3] = -1; /* an ignored row */
    /* the one-process run */
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    struct lmc_comm one;
    lmc_comm_single_init(&one);
    struct lmc_tp tp1 = {&one, &be};
    REF.logits = malloc(sizeof(float) * N * V);
    CHECK(step(&tp1, &F, &REF, &err) == LMC_OK);
    CHECK(REF.loss > 1.0 && REF.loss < 10.0);
    /* its gradients against central differences of the loss */
    int fd_bad = 0;
    for (int t = 0; t < NP; t++)
        for (int k = 0; k < 3; k++) {
            int64_t i = (int64_t)(test_rng_next(&seed) % (uint64_t)P_SIZE[t]);
            if (t == P_EMB) i = F.ids[k] * C + k; /* a used row */
            float keep = F.p[t][i], h = 1e-2f;
            struct result a = {0}, b = {0};
            a.logits = malloc(sizeof(float) * N * V), b.logits = malloc(sizeof(float) * N * V);
            F.p[t][i] = keep + h;
            step(&tp1, &F, &a, &err);
            F.p[t][i] = keep - h;
            step(&tp1, &F, &b, &err);
            F.p[t][i] = keep;
            double fd = (a.loss - b.loss) / (2.0 * h), an = REF.g[t][i];
            if (fabs(fd - an) > 2e-3 * fmax(1.0, fabs(an)) + 1e-4) {
                fd_bad++;
                fprintf(stderr, "finite difference: tensor %d [%lld] %g vs %g\n", t, (long long)i, fd, an);
            }
            for (int u = 0; u < NP; u++) free(a.g[u]), free(b.g[u]);
            free(a.logits), free(b.logits);
        }
    CHECK(fd_bad == 0);
    /* TP 2 and 4 */
    char dir[] = "/tmp/lmc_test_mp_tp_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    for (int T = 2; T <= 4; T += 2) {
        struct spawn_opts so = {.world = T};
        int codes[16] = {0}, bad = 0;
        spawn(&so, run_rank, NULL, dir, codes);
        for (int r = 0; r < T; r++)
            if (codes[r]) bad = 1, fprintf(stderr, "TP %d rank %d exit %d: %s", T, r, codes[r], slurp(dir, r));
        CHECK_MSG(!bad, "tensor parallel %d", T);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    /* head plans */
    struct lmc_tp_heads p;
    CHECK(lmc_tp_plan_heads(32, 8, 4, 3, &p, &err) == LMC_OK && p.q0 == 24 && p.nq == 8 && p.kv0 == 6 &&
          p.nkv == 2 && p.kv_replicas == 1);
    CHECK(lmc_tp_plan_heads(14, 2, 7, 3, &p, &err) != LMC_OK); /* 7 ranks, 2 KV heads */
    CHECK(lmc_tp_plan_heads(16, 2, 8, 5, &p, &err) == LMC_OK && p.q0 == 10 && p.nq == 2 && p.kv0 == 1 &&
          p.nkv == 1 && p.kv_replicas == 4);
    CHECK(lmc_tp_plan_heads(12, 4, 8, 0, &p, &err) == LMC_ERR_ARG && strstr(err.msg, "12 attention heads"));
    /* bad ids and targets are refused by name */
    float x[C * 2], lg[V * 2];
    int32_t ids[2] = {1, V};
    CHECK(lmc_tp_embed_fwd(&tp1, x, F.p[P_EMB], 0, V, V, C, ids, 2, &err) == LMC_ERR_ARG && strstr(err.msg, "position 1"));
    double loss;
    memset(lg, 0, sizeof lg);
    CHECK(lmc_tp_xent(&tp1, &loss, NULL, lg, 2, 0, V, V, ids, &err) == LMC_ERR_ARG && strstr(err.msg, "row 1"));
    ids[1] = -1;
    CHECK(lmc_tp_xent(&tp1, &loss, NULL, lg, 2, 0, V, V, ids, &err) == LMC_OK && fabs(loss - log((double)V)) < 1e-6);
    one.free(&one);
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_tp");
}
