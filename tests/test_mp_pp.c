/* test_mp_pp.c — pipeline parallelism: a 4-layer tanh MLP classifier
 * (13 -> 17 -> 12 -> 11 -> 5, cross-entropy) split into P = 2, 3, 4 stages
 * on forked ranks (tcp), one 1F1B step of M = 1, 3, 8 micro-batches of a
 * 24-example batch: the loss and every layer's weight and bias gradients
 * equal a one-process full-batch forward/backward within 1e-5 relative;
 * each stage keeps at most min(P - s, M) micro-batches alive; the schedule
 * holds every micro-batch's forward and backward once, forwards in order
 * before their backwards; the simulated bubble is (P-1)/(M+P-1). A large
 * activation (1M floats, beyond socket buffers) passes the pipeline
 * without a deadlock. Interleaved 1F1B (V chunks per rank): every
 * (chunk, micro-batch) forward and backward once, backwards after their
 * forwards, at most warm-up + 1 alive, the simulated bubble (P-1)/(M V +
 * P - 1); single-layer chunks at P 2 x V 2, P 4 (V 1 through the same
 * runner) and P 1 x V 4 give the full-batch loss and gradients, and 4 MB
 * messages pass without a deadlock. Bad stage layouts are refused. */
#include "test.h"
#include "dist_spawn.h"
#include "dist/pp.h"

#include <stdlib.h>
#include <sys/stat.h>

#define NL 4
#define GB 24
static const int D[NL + 1] = {13, 17, 12, 11, 5};

struct net {
    float *w[NL], *b[NL];
};

static void example(int idx, float *x, int *y) {
    uint64_t s = 1000 + (uint64_t)idx;
    for (int i = 0; i < D[0]; i++) x[i] = test_rand(&s);
    *y = (int)(test_rng_next(&s) % (uint64_t)D[NL]);
}

/* Layers [l0, l1) forward on n rows: acts[l - l0] holds each layer's input,
 * acts[l1 - l0] the output (tanh except after the last layer). */
static void fwd_layers(const struct net *m, int l0, int l1, float **acts, int n) {
    for (int l = l0; l < l1; l++) {
        const float *x = acts[l - l0];
        float *y = acts[l - l0 + 1];
        for (int i = 0; i < n; i++)
            for (int o = 0; o < D[l + 1]; o++) {
                double s = m->b[l][o];
                for (int k = 0; k < D[l]; k++) s += (double)m->w[l][o * D[l] + k] * x[i * D[l] + k];
                y[i * D[l + 1] + o] = (float)(l == NL - 1 ? s : tanh(s));
            }
    }
}

/* dy (grad of acts[l1-l0]) back to dx (grad of acts[0], may be NULL);
 * gradients += into g. */
static void bwd_layers(const struct net *m, const struct net *g, int l0, int l1, float **acts,
                       const float *dy_in, float *dx_out, int n) {
    int maxd = 32;
    float *dy = malloc(sizeof(float) * (size_t)(n * maxd)), *dx = malloc(sizeof(float) * (size_t)(n * maxd));
    memcpy(dy, dy_in, sizeof(float) * (size_t)(n * D[l1]));
    for (int l = l1 - 1; l >= l0; l--) {
        const float *x = acts[l - l0], *y = acts[l - l0 + 1];
        if (l != NL - 1)
            for (int i = 0; i < n * D[l + 1]; i++) dy[i] *= 1.0f - y[i] * y[i];
        for (int i = 0; i < n; i++)
            for (int o = 0; o < D[l + 1]; o++) {
                g->b[l][o] += dy[i * D[l + 1] + o];
                for (int k = 0; k < D[l]; k++) g->w[l][o * D[l] + k] += dy[i * D[l + 1] + o] * x[i * D[l] + k];
            }
        for (int i = 0; i < n; i++)
            for (int k = 0; k < D[l]; k++) {
                double s = 0;
                for (int o = 0; o < D[l + 1]; o++) s += (double)dy[i * D[l + 1] + o] * m->w[l][o * D[l] + k];
                dx[i * D[l] + k] = (float)s;
            }
        float *t = dy;
        dy = dx, dx = t;
    }
    if (dx_out) memcpy(dx_out, dy, sizeof(float) * (size_t)(n * D[l0]));
    free(dy), free(dx);
}

/* Cross-entropy over n rows (sum of losses); dlogits = (softmax - onehot) / GB. */
static double xent(const float *z, const int *y, int n, float *dz) {
    double loss = 0;
    for (int i = 0; i < n; i++) {
        const float *r = z + i * D[NL];
        double m = r[0], s = 0;
        for (int k = 1; k < D[NL]; k++) m = fmax(m, r[k]);
        for (int k = 0; k < D[NL]; k++) s += exp(r[k] - m);
        loss += log(s) + m - r[y[i]];
        for (int k = 0; k < D[NL]; k++) dz[i * D[NL] + k] = (float)((exp(r[k] - m) / s - (k == y[i])) / GB);
    }
    return loss;
}

static struct net MODEL, REFG;
static double REF_LOSS;

struct stage {
    int l0, l1, M, n;        /* layers, micro-batches, rows per micro-batch */
    float **acts;            /* (M, l1 - l0 + 1) */
    struct net g;
    double loss;
    int pad;                 /* extra floats carried in each activation (large-message case) */
};

static lmc_status st_fwd(void *u, int mb, const void *in, void *out, lmc_err *err) {
    (void)err;
    struct stage *s = u;
    float **a = s->acts + mb * (s->l1 - s->l0 + 1);
    if (!in) {
        int y;
        for (int i = 0; i < s->n; i++) example(mb * s->n + i, a[0] + i * D[0], &y);
    } else memcpy(a[0], in, sizeof(float) * (size_t)(s->n * D[s->l0]));
    fwd_layers(&MODEL, s->l0, s->l1, a, s->n);
    if (out) {
        memcpy(out, a[s->l1 - s->l0], sizeof(float) * (size_t)(s->n * D[s->l1]));
        for (int i = 0; i < s->pad; i++) ((float *)out)[s->n * D[s->l1] + i] = (float)(mb + i % 7);
    }
    return LMC_OK;
}

static lmc_status st_bwd(void *u, int mb, const void *dout, void *din, lmc_err *err) {
    struct stage *s = u;
    float **a = s->acts + mb * (s->l1 - s->l0 + 1);
    float *dz = malloc(sizeof(float) * (size_t)(s->n * 32));
    if (!dout) {
        int y[GB];
        float x[32];
        for (int i = 0; i < s->n; i++) example(mb * s->n + i, x, &y[i]);
        s->loss += xent(a[s->l1 - s->l0], y, s->n, dz);
    } else {
        memcpy(dz, dout, sizeof(float) * (size_t)(s->n * D[s->l1]));
        for (int i = 0; i < s->pad; i++) /* the padding came back intact */
            if (((const float *)dout)[s->n * D[s->l1] + i] != (float)(mb + 1 + i % 5)) {
                free(dz);
                return lmc_err_set(err, LMC_ERR_IO, "padding of micro-batch %d corrupted", mb);
            }
    }
    bwd_layers(&MODEL, &s->g, s->l0, s->l1, a, dz, din, s->n);
    if (din)
        for (int i = 0; i < s->pad; i++) ((float *)din)[s->n * D[s->l0] + i] = (float)(mb + 1 + i % 5);
    free(dz);
    return LMC_OK;
}

struct job {
    int M, pad;
    const int *cuts;         /* P + 1 layer boundaries */
    int V;                   /* > 0: interleaved, V chunks of one layer per rank (P V = NL) */
};

/* Interleaved: rank r's chunk v is layer v P + r; the activation buffer
 * holds the widest layer (32 floats a row) plus the padding. */
struct vstage {
    int P, rank, V, M, n, pad;
    struct stage *ch;        /* (V) one single-layer stage per chunk */
};

static lmc_status v_fwd(void *u, int v, int mb, const void *in, void *out, lmc_err *err) {
    struct vstage *s = u;
    return st_fwd(&s->ch[v], mb, in, out, err);
}

static lmc_status v_bwd(void *u, int v, int mb, const void *dout, void *din, lmc_err *err) {
    struct vstage *s = u;
    return st_bwd(&s->ch[v], mb, dout, din, err);
}

static int check_layer(int rank, int l, const struct net *g) {
    double num = 0, den = 1e-30;
    for (int k = 0; k < D[l] * D[l + 1]; k++)
        num = fmax(num, fabs(g->w[l][k] - REFG.w[l][k])), den = fmax(den, fabs(REFG.w[l][k]));
    for (int k = 0; k < D[l + 1]; k++)
        num = fmax(num, fabs(g->b[l][k] - REFG.b[l][k])), den = fmax(den, fabs(REFG.b[l][k]));
    if (num / den <= 1e-5) return 0;
    fprintf(stderr, "rank %d layer %d grad rel err %.3g\n", rank, l, num / den);
    return 1;
}

static int run_rank_v(struct lmc_comm *c, int rank, void *arg) {
    const struct job *j = arg;
    int P = c->world, V = j->V, n = GB / j->M, bad = 0;
    struct vstage vs = {P, rank, V, j->M, n, j->pad, calloc((size_t)V, sizeof(struct stage))};
    for (int v = 0; v < V; v++) {
        struct stage *s = &vs.ch[v];
        int l = v * P + rank;
        *s = (struct stage){.l0 = l, .l1 = l + 1, .M = j->M, .n = n, .pad = j->pad};
        s->acts = malloc(sizeof(float *) * (size_t)(j->M * 2));
        for (int k = 0; k < j->M * 2; k++) s->acts[k] = malloc(sizeof(float) * (size_t)(n * 32));
        s->g.w[l] = calloc((size_t)(D[l] * D[l + 1]), sizeof(float));
        s->g.b[l] = calloc((size_t)D[l + 1], sizeof(float));
    }
    struct lmc_pp_vstage ps = {&vs, V, sizeof(float) * (size_t)(n * 32 + j->pad), v_fwd, v_bwd};
    struct lmc_pp_stats stats;
    lmc_err err = {0};
    if (lmc_pp_run_interleaved(c, &ps, j->M, &stats, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    int want_live = lmc_pp_interleaved_live(P, rank, j->M, V);
    if (stats.max_live != want_live) bad = 1, fprintf(stderr, "rank %d: %d live, want %d\n", rank, stats.max_live, want_live);
    if (rank == P - 1 && !(fabs(vs.ch[V - 1].loss - REF_LOSS) <= 1e-5 * REF_LOSS))
        bad = 1, fprintf(stderr, "loss %.9g vs %.9g\n", vs.ch[V - 1].loss, REF_LOSS);
    for (int v = 0; v < V; v++) bad |= check_layer(rank, v * P + rank, &vs.ch[v].g);
    return bad;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct job *j = arg;
    if (j->V) return run_rank_v(c, rank, arg);
    struct stage s = {.l0 = j->cuts[rank], .l1 = j->cuts[rank + 1], .M = j->M, .n = GB / j->M, .pad = j->pad};
    int na = s.l1 - s.l0 + 1;
    s.acts = malloc(sizeof(float *) * (size_t)(j->M * na));
    for (int k = 0; k < j->M * na; k++) s.acts[k] = malloc(sizeof(float) * (size_t)(s.n * 32));
    for (int l = s.l0; l < s.l1; l++) {
        s.g.w[l] = calloc((size_t)(D[l] * D[l + 1]), sizeof(float));
        s.g.b[l] = calloc((size_t)D[l + 1], sizeof(float));
    }
    struct lmc_pp_stage ps = {&s, rank ? sizeof(float) * (size_t)(s.n * D[s.l0] + j->pad) : 0,
                              rank < c->world - 1 ? sizeof(float) * (size_t)(s.n * D[s.l1] + j->pad) : 0,
                              st_fwd, st_bwd};
    struct lmc_pp_stats stats;
    lmc_err err = {0};
    int bad = 0;
    if (lmc_pp_run(c, &ps, j->M, &stats, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    int want_live = c->world - rank < j->M ? c->world - rank : j->M;
    if (stats.max_live != want_live) bad = 1, fprintf(stderr, "rank %d: %d live, want %d\n", rank, stats.max_live, want_live);
    if (!(stats.busy_s <= stats.wall_s)) bad = 1;
    if (rank == c->world - 1 && !(fabs(s.loss - REF_LOSS) <= 1e-5 * REF_LOSS))
        bad = 1, fprintf(stderr, "loss %.9g vs %.9g\n", s.loss, REF_LOSS);
    for (int l = s.l0; l < s.l1; l++) {
        double num = 0, den = 1e-30;
        for (int k = 0; k < D[l] * D[l + 1]; k++)
            num = fmax(num, fabs(s.g.w[l][k] - REFG.w[l][k])), den = fmax(den, fabs(REFG.w[l][k]));
        for (int k = 0; k < D[l + 1]; k++)
            num = fmax(num, fabs(s.g.b[l][k] - REFG.b[l][k])), den = fmax(den, fabs(REFG.b[l][k]));
        if (!(num / den <= 1e-5)) bad = 1, fprintf(stderr, "rank %d layer %d grad rel err %.3g\n", rank, l, num / den);
    }
    return bad;
}

int main(void) {
    uint64_t seed = 11;
    for (int l = 0; l < NL; l++) {
        MODEL.w[l] = malloc(sizeof(float) * (size_t)(D[l] * D[l + 1]));
        MODEL.b[l] = malloc(sizeof(float) * (size_t)D[l + 1]);
        REFG.w[l] = calloc((size_t)(D[l] * D[l + 1]), sizeof(float));
        REFG.b[l] = calloc((size_t)D[l + 1], sizeof(float));
        for (int k = 0; k < D[l] * D[l + 1]; k++) MODEL.w[l][k] = test_rand(&seed) / sqrtf((float)D[l]) * 1.5f;
        for (int k = 0; k < D[l + 1]; k++) MODEL.b[l][k] = test_rand(&seed) * 0.1f;
    }
    /* the one-process full batch */
    {
        float *acts[NL + 1], dz[GB * 5];
        int y[GB];
        for (int l = 0; l <= NL; l++) acts[l] = malloc(sizeof(float) * GB * 32);
        for (int i = 0; i < GB; i++) example(i, acts[0] + i * D[0], &y[i]);
        fwd_layers(&MODEL, 0, NL, acts, GB);
        REF_LOSS = xent(acts[NL], y, GB, dz);
        bwd_layers(&MODEL, &REFG, 0, NL, acts, dz, NULL, GB);
        for (int l = 0; l <= NL; l++) free(acts[l]);
        CHECK(REF_LOSS > 0);
    }
    /* schedules */
    for (int P = 1; P <= 4; P++)
        for (int M = 1; M <= 9; M++)
            for (int s = 0; s < P; s++) {
                struct lmc_pp_op ops[18];
                int fseen = 0, bseen = 0, ok = 1, live = 0, maxl = 0;
                lmc_pp_schedule_1f1b(P, s, M, ops);
                for (int k = 0; k < 2 * M; k++) {
                    if (ops[k].kind == LMC_PP_FWD) ok &= ops[k].mb == fseen++, live++;
                    else ok &= ops[k].mb == bseen++ && bseen <= fseen, live--;
                    if (live > maxl) maxl = live;
                }
                CHECK(ok && fseen == M && bseen == M && maxl == (P - s < M ? P - s : M));
            }
    for (int P = 1; P <= 8; P++)
        for (int M = 1; M <= 16; M *= 2) {
            double b = lmc_pp_bubble_model(P, M, 1.0, 2.0), want = (double)(P - 1) / (M + P - 1);
            CHECK_MSG(fabs(b - want) < 1e-12, "bubble P=%d M=%d: %g vs %g", P, M, b, want);
        }
    /* pipelines */
    char dir[] = "/tmp/lmc_test_mp_pp_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    static const int cuts2[] = {0, 2, 4}, cuts3[] = {0, 2, 3, 4}, cuts4[] = {0, 1, 2, 3, 4};
    const int *cuts[] = {cuts2, cuts3, cuts4};
    const int Ms[] = {1, 3, 8};
    for (int p = 0; p < 3; p++)
        for (int k = 0; k < 4; k++) {
            int P = p + 2;
            struct job j = {k < 3 ? Ms[k] : 3, k < 3 ? 0 : 1 << 20, cuts[p], 0};
            struct spawn_opts so = {.world = P};
            int codes[16] = {0}, bad = 0;
            spawn(&so, run_rank, &j, dir, codes);
            for (int r = 0; r < P; r++)
                if (codes[r]) bad = 1, fprintf(stderr, "P=%d M=%d pad %d rank %d exit %d: %s", P, j.M, j.pad, r, codes[r], slurp(dir, r));
            CHECK_MSG(!bad, "pipeline P=%d M=%d pad %d", P, j.M, j.pad);
        }
    /* interleaved schedules: every (chunk, micro-batch) forward and backward once, backwards of a
     * chunk in the order of its forwards, at most warm-up + 1 alive, dependencies across the ranks
     * satisfiable (the simulation finishes) with the bubble (P-1)/(M V + P-1) */
    for (int P = 1; P <= 4; P++)
        for (int V = 1; V <= 3; V++)
            for (int M = P; M <= 12; M += P) {
                int ok = 1;
                for (int r = 0; r < P; r++) {
                    struct lmc_pp_op ops[2 * 12 * 3];
                    int fseen[3][12] = {{0}}, bseen[3][12] = {{0}}, live = 0, maxl = 0;
                    if (V == 1) lmc_pp_schedule_1f1b(P, r, M, ops);
                    else lmc_pp_schedule_interleaved(P, r, M, V, ops);
                    for (int k = 0; k < 2 * M * V; k++) {
                        struct lmc_pp_op o = ops[k];
                        if (o.chunk < 0 || o.chunk >= V || o.mb < 0 || o.mb >= M) { ok = 0; break; }
                        if (o.kind == LMC_PP_FWD) ok &= !fseen[o.chunk][o.mb]++, live++;
                        else ok &= fseen[o.chunk][o.mb] && !bseen[o.chunk][o.mb]++, live--;
                        if (live > maxl) maxl = live;
                    }
                    for (int v = 0; v < V; v++)
                        for (int mb = 0; mb < M; mb++) ok &= fseen[v][mb] == 1 && bseen[v][mb] == 1;
                    ok &= maxl == lmc_pp_interleaved_live(P, r, M, V);
                    if (V > 1) ok &= maxl == (2 * (P - r - 1) + (V - 1) * P + 1 < M * V ? 2 * (P - r - 1) + (V - 1) * P + 1 : M * V);
                }
                double b = lmc_pp_bubble_model_v(P, M, V, 1, 2), want = (double)(P - 1) / (M * V + P - 1);
                CHECK_MSG(ok, "interleaved schedule P=%d V=%d M=%d", P, V, M);
                CHECK_MSG(fabs(b - want) < 1e-12, "interleaved bubble P=%d V=%d M=%d: %g vs %g", P, V, M, b, want);
            }
    lmc_err e0 = {0};
    CHECK(lmc_pp_interleaved_check(2, 3, 2, &e0) == LMC_ERR_ARG && strstr(e0.msg, "multiple"));
    CHECK(lmc_pp_bubble_model_v(2, 3, 2, 1, 2) < 0);
    /* interleaved pipelines of single-layer chunks: P = 2 V = 2, P = 4 V = 1 through the same runner,
     * one process with V = 4 (chunks passing activations locally); 4 MB messages without a deadlock
     * (P 2 x V 2 sends around the ring: rank 1's chunk 1 feeds rank 0's chunk 2) */
    static const struct { int P, V, M, pad; } vj[] = {{2, 2, 2, 0}, {2, 2, 4, 0}, {2, 2, 8, 0}, {4, 1, 4, 0},
                                                       {1, 4, 3, 0}, {2, 2, 4, 1 << 20}, {4, 1, 4, 1 << 20}};
    for (size_t k = 0; k < sizeof vj / sizeof *vj; k++) {
        struct job j = {vj[k].M, vj[k].pad, NULL, vj[k].V};
        struct spawn_opts so = {.world = vj[k].P};
        int codes[16] = {0}, bad = 0;
        spawn(&so, run_rank, &j, dir, codes);
        for (int r = 0; r < vj[k].P; r++)
            if (codes[r]) bad = 1, fprintf(stderr, "interleaved P=%d V=%d M=%d rank %d exit %d: %s", vj[k].P, j.V, j.M, r, codes[r], slurp(dir, r));
        CHECK_MSG(!bad, "interleaved pipeline P=%d V=%d M=%d pad %d", vj[k].P, j.V, j.M, j.pad);
    }
    /* stage layouts that do not fit their place */
    struct lmc_comm one;
    lmc_comm_single_init(&one);
    struct stage s1 = {0};
    struct lmc_pp_stage bad = {&s1, 4, 0, st_fwd, st_bwd};
    lmc_err err = {0};
    CHECK(lmc_pp_run(&one, &bad, 2, NULL, &err) == LMC_ERR_ARG && strstr(err.msg, "stage 0 of 1"));
    bad.in_bytes = 0;
    CHECK(lmc_pp_run(&one, &bad, 0, NULL, &err) == LMC_ERR_ARG);
    one.free(&one);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return test_finish("test_mp_pp");
}
