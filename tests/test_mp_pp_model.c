/* test_mp_pp_model.c — pipeline parallelism over the model layer's blocks
 * on forked ranks (tcp), each stage holding only its part of the model
 * (lmc_tmodel_init_parts with lmc_pp_stage_keep: its layers, the
 * embedding on the first, norm and head on the last) filled from the
 * one-process source. One step of M micro-batches (8 sequences of 9
 * tokens in all) gives the loss of one lmc_tmodel_step over the whole
 * batch and each stage's gradients within 1e-5 relative, and one AdamW
 * step on the stage's tensors the one-process weights (1e-5 relative in
 * norm, over the weights whose gradient's sign the gradient check fixes): llama-tiny (2 layers) in 1F1B at P = 1, 2 and M = 1, 2, 4;
 * llama-tiny's config with 4, 6 and 8 layers (random weights) in
 * interleaved 1F1B at P = 2 V = 2 (M = 2, 4), P = 2 V = 3, P = 4 V = 2
 * and P = 1 V = 2, and uneven given splits (lmc_pp_tstage_init_split,
 * the chunks those counts: 6 layers as 1,4,1 at P = 3, M = 1 and 2; 5 as
 * 2,1,1,1 at P = 2 V = 2, and qwen2-tiny's as 1,1,2,1); the stage's part
 * holds fewer parameters than the
 * model, its arenas only its chunks' layers. qwen2-tiny (tied embedding)
 * over 2 stages: the first and last stages' embedding gradients sum to
 * the one-process one. Bad layouts are refused. */
#include "test.h"
#include "dist_spawn.h"
#include "dist/pp_model.h"
#include "train/adamw.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { NSEQ = 8, T = 9 };

struct ref {
    const char *dir;          /* the fixture (the source when layers == 0) */
    int64_t layers;           /* > 0: its config with this many layers, random weights from SEED */
    int P, V, M;
    const char *split;        /* --pp-layers counts (NULL: the planner's) */
    int32_t in[NSEQ * T], tgt[NSEQ * T];
    double loss;
    float **grads, **after;   /* per parameter (on-disk layout): gradient; weight after one AdamW step */
    int n_params;
    int64_t numel;
};

#define SEED 1234
static const struct lmc_adamw_cfg ADAM = {1e-3, 0.9, 0.999, 1e-8, 0.01};

static lmc_status build(struct lmc_tmodel *tm, const struct ref *r, const struct lmc_backend *be, const bool *keep,
                        lmc_err *err) {
    struct lmc_config c;
    lmc_status s = lmc_config_load(&c, r->dir, err);
    if (s) return s;
    if (r->layers) c.num_layers = r->layers;
    bool all[64];
    for (int i = 0; i < 64; i++) all[i] = true;
    if ((s = lmc_tmodel_init_parts(tm, &c, be, keep ? keep : all, false, err))) return s;
    struct lmc_tmodel_src src;
    s = r->layers ? lmc_tmodel_src_random(&src, tm, SEED, 0.05, err) : lmc_tmodel_src_dir(&src, tm, r->dir, err);
    if (!s) {
        s = lmc_tmodel_fill(tm, &src, err);
        lmc_tmodel_src_free(&src);
    }
    if (s) lmc_tmodel_free(tm);
    return s;
}

/* One AdamW step of parameter i (host, on-disk layout) from zero moments. */
static void adam_step(const struct lmc_tparam *p, float *w, const float *g) {
    float *m = calloc((size_t)p->numel, sizeof(float)), *v = calloc((size_t)p->numel, sizeof(float));
    lmc_adamw_update(&ADAM, 1, ADAM.lr, p->role == LMC_ROLE_MATRIX, w, g, m, v, p->numel);
    free(m), free(v);
}

static double rel(const float *a, const float *b, int64_t n, bool norm) {
    double num = 0, den = 1e-30;
    for (int64_t k = 0; k < n; k++) {
        double d = fabs((double)a[k] - b[k]);
        if (norm) num += d * d, den += (double)b[k] * b[k];
        else {
            den = fmax(den, fabs(b[k]));
            if (d > num || d != d) num = d;
        }
    }
    return norm ? sqrt(num / den) : num / den;
}

/* rel(a, b, norm) over the elements whose reference gradient g is above the
 * gradient check's tolerance (1e-5 of its largest): a first AdamW step moves
 * each weight by about lr * sign(g), so where |g| is within the tolerance
 * (the kernels' summation order, which differs between CPUs' kernels) its
 * sign, and the step, is not determined by the gradient check. */
static double rel_step(const float *a, const float *b, const float *g, int64_t n) {
    double gmax = 0, num = 0, den = 1e-30;
    for (int64_t k = 0; k < n; k++) gmax = fmax(gmax, fabs(g[k]));
    for (int64_t k = 0; k < n; k++) {
        if (fabs(g[k]) <= 1e-5 * gmax) continue;
        double d = fabs((double)a[k] - b[k]);
        num += d * d, den += (double)b[k] * b[k];
    }
    return sqrt(num / den);
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_config cfg;
    if (lmc_config_load(&cfg, r->dir, &err)) return 4;
    int64_t L = r->layers ? r->layers : cfg.num_layers;
    bool keep[64];
    int64_t b[65];
    cfg.num_layers = L;
    if (lmc_pp_split_plan(&cfg, c->world, r->V, r->split, b, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    lmc_pp_stage_keep(b, L, cfg.tie_word_embeddings, c->world, r->V, rank, keep);
    struct lmc_tmodel tm;
    struct lmc_pp_tstage s;
    int bad = 0;
    if (build(&tm, r, &be, keep, &err) ||
        (r->split ? lmc_pp_tstage_init_split(&s, &tm, &be, b, rank, c->world, r->V, r->M, NSEQ / r->M, T, &err)
                  : lmc_pp_tstage_init_v(&s, &tm, &be, rank, c->world, r->V, r->M, NSEQ / r->M, T, &err))) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    if (c->world > 1 && !(tm.numel < r->numel)) bad = 1, fprintf(stderr, "rank %d holds %lld of %lld floats\n", rank,
                                                                 (long long)tm.numel, (long long)r->numel);
    int64_t most = 0;
    for (int v = 0; v < r->V; v++) {
        if (s.ch[v].l1 - s.ch[v].l0 > most) most = s.ch[v].l1 - s.ch[v].l0;
        if (s.ch[v].l0 != b[v * c->world + rank] || s.ch[v].l1 != b[v * c->world + rank + 1])
            bad = 1, fprintf(stderr, "rank %d chunk %d: layers [%lld, %lld)\n", rank, v, (long long)s.ch[v].l0,
                             (long long)s.ch[v].l1);
    }
    if (s.acts[0].n_layers != most || (c->world * r->V > 1 && most >= L)) bad = 1, fprintf(stderr, "arena of %lld layers\n", (long long)s.acts[0].n_layers);
    lmc_tmodel_zero_grad(&tm);
    s.inputs = r->in, s.targets = r->tgt;
    struct lmc_pp_stats stats;
    lmc_status st;
    if (r->V == 1) {
        struct lmc_pp_stage ops = lmc_pp_tstage_ops(&s);
        st = lmc_pp_run(c, &ops, r->M, &stats, &err);
    } else {
        struct lmc_pp_vstage ops = lmc_pp_tstage_vops(&s);
        st = lmc_pp_run_interleaved(c, &ops, r->M, &stats, &err);
    }
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    if (stats.max_live != s.n_acts || s.n_free != s.n_acts) bad = 1, fprintf(stderr, "rank %d: %d alive of %d arenas\n", rank, stats.max_live, s.n_acts);
    if (s.last && !(fabs(s.loss_sum - r->loss) <= 1e-5 * r->loss))
        bad = 1, fprintf(stderr, "loss %.9g vs %.9g\n", s.loss_sum, r->loss);
    int held = 0;
    for (int i = 0; i < tm.n_params; i++) {
        const struct lmc_tparam *p = &tm.params[i];
        if (p->elsewhere) continue;
        held++;
        float *g = malloc(sizeof(float) * (size_t)p->numel), *w = malloc(sizeof(float) * (size_t)p->numel);
        lmc_tmodel_download_param(&tm, tm.g, i, g, &err);
        lmc_tmodel_download_param(&tm, tm.w, i, w, &err);
        bool tied_half = tm.tied_head && p->part == 0 && c->world > 1;
        if (tied_half) { /* the lookup's half (rank 0) plus the head's (rank P - 1) */
            float *o = malloc(sizeof(float) * (size_t)p->numel);
            size_t nb = sizeof(float) * (size_t)p->numel;
            int peer = rank == 0 ? c->world - 1 : 0;
            if (rank == 0 ? c->recv(c, o, nb, peer, &err) : c->send(c, g, nb, peer, &err)) bad = 1;
            if (rank == 0)
                for (int64_t k = 0; k < p->numel; k++) g[k] += o[k];
            free(o);
        }
        if ((!tied_half || rank == 0) && !(rel(g, r->grads[i], p->numel, false) <= 1e-5))
            bad = 1, fprintf(stderr, "rank %d: %s grad err %.3g\n", rank, p->name, rel(g, r->grads[i], p->numel, false));
        adam_step(p, w, g);
        double ew = rel_step(w, r->after[i], r->grads[i], p->numel);
        /* k_proj.bias: its exact gradient is zero (a shift shared by every key's score leaves the softmax
         * unchanged), so every element is rounding noise and AdamW's first step +-lr on its sign; the
         * gradient check above covers it */
        if (strstr(p->name, "k_proj.bias")) ew = 0;
        if ((!tied_half || rank == 0) && !(ew <= 1e-5))
            bad = 1, fprintf(stderr, "rank %d: %s after AdamW err %.3g\n", rank, p->name, ew);
        free(g), free(w);
    }
    if (!held) bad = 1;
    lmc_pp_tstage_free(&s);
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
    return bad;
}

/* The one-process step: loss, gradients and the weights after one AdamW step. */
static void reference(struct ref *r, const struct lmc_backend *be) {
    lmc_err err = {0};
    struct lmc_tmodel m;
    if (build(&m, r, be, NULL, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        exit(1);
    }
    uint64_t seed = 99;
    for (int i = 0; i < NSEQ * T; i++) r->in[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)m.cfg.vocab_size);
    for (int i = 0; i < NSEQ * T; i++) r->tgt[i] = i % T == T - 1 ? -1 : r->in[i + 1];
    struct lmc_tacts a;
    int64_t count;
    CHECK(lmc_tacts_init(&a, &m, be, NSEQ, T, false, &err) == LMC_OK);
    lmc_tmodel_zero_grad(&m);
    CHECK(lmc_tmodel_step(&m, be, &a, r->in, r->tgt, true, 1.0f, &r->loss, &count, &err) == LMC_OK);
    lmc_tacts_free(&a);
    r->n_params = m.n_params;
    r->numel = m.numel;
    r->grads = calloc((size_t)m.n_params, sizeof(float *));
    r->after = calloc((size_t)m.n_params, sizeof(float *));
    for (int i = 0; i < m.n_params; i++) {
        r->grads[i] = malloc(sizeof(float) * (size_t)m.params[i].numel);
        r->after[i] = malloc(sizeof(float) * (size_t)m.params[i].numel);
        lmc_tmodel_download_param(&m, m.g, i, r->grads[i], &err);
        lmc_tmodel_download_param(&m, m.w, i, r->after[i], &err);
        adam_step(&m.params[i], r->after[i], r->grads[i]);
    }
    lmc_tmodel_free(&m);
}

static void free_ref(struct ref *r) {
    for (int i = 0; i < r->n_params; i++) free(r->grads[i]), free(r->after[i]);
    free(r->grads), free(r->after);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    char dir[] = "/tmp/lmc_test_mp_pp_model_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    static const struct { const char *dir; int64_t layers; int P, V, M; const char *split; } cases[] = {
        {"tests/fixtures/llama-tiny", 0, 1, 1, 1, NULL}, {"tests/fixtures/llama-tiny", 0, 1, 1, 4, NULL},
        {"tests/fixtures/llama-tiny", 0, 2, 1, 1, NULL}, {"tests/fixtures/llama-tiny", 0, 2, 1, 2, NULL},
        {"tests/fixtures/llama-tiny", 0, 2, 1, 4, NULL}, {"tests/fixtures/llama-tiny", 4, 2, 2, 2, NULL},
        {"tests/fixtures/llama-tiny", 4, 2, 2, 4, NULL}, {"tests/fixtures/llama-tiny", 6, 2, 3, 2, NULL},
        {"tests/fixtures/llama-tiny", 8, 4, 2, 4, NULL}, {"tests/fixtures/llama-tiny", 4, 1, 2, 2, NULL},
        {"tests/fixtures/qwen2-tiny", 0, 2, 1, 2, NULL}, {"tests/fixtures/qwen2-tiny", 4, 2, 2, 2, NULL},
        {"tests/fixtures/llama-tiny", 6, 3, 1, 2, "1,4,1"}, {"tests/fixtures/llama-tiny", 5, 2, 2, 2, "2,1,1,1"},
        {"tests/fixtures/qwen2-tiny", 5, 2, 2, 2, "1,1,2,1"}, {"tests/fixtures/llama-tiny", 6, 3, 1, 1, "1,4,1"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        struct ref *r = calloc(1, sizeof *r);
        *r = (struct ref){.dir = cases[k].dir, .layers = cases[k].layers, .P = cases[k].P, .V = cases[k].V,
                          .M = cases[k].M, .split = cases[k].split};
        reference(r, &be);
        struct spawn_opts so = {.world = r->P};
        int codes[16] = {0}, bad = 0;
        spawn(&so, run_rank, r, dir, codes);
        for (int q = 0; q < r->P; q++)
            if (codes[q]) bad = 1, fprintf(stderr, "%s L=%lld P=%d V=%d M=%d rank %d exit %d: %s", r->dir, (long long)r->layers,
                                           r->P, r->V, r->M, q, codes[q], slurp(dir, q));
        CHECK_MSG(!bad, "pipeline %s layers %lld P=%d V=%d M=%d", r->dir, (long long)r->layers, r->P, r->V, r->M);
        free_ref(r);
        free(r);
    }
    /* refusals: too few layers for the chunks, M not a multiple of P, a part the stage needs missing */
    struct lmc_tmodel q;
    if (lmc_tmodel_load(&q, "tests/fixtures/qwen2-tiny", &be, &err) == LMC_OK) {
        struct lmc_pp_tstage s;
        CHECK(lmc_pp_tstage_init(&s, &q, &be, 0, 3, 2, 1, 4, &err) == LMC_ERR_ARG && strstr(err.msg, "2 layers"));
        CHECK(lmc_pp_tstage_init_v(&s, &q, &be, 0, 1, 3, 2, 1, 4, &err) == LMC_ERR_ARG && strstr(err.msg, "3 chunks"));
        CHECK(lmc_pp_tstage_init_v(&s, &q, &be, 0, 2, 2, 3, 1, 4, &err) == LMC_ERR_ARG && strstr(err.msg, "multiple"));
        struct lmc_tmodel part;
        bool keep[4];
        const int64_t b2[] = {0, 1, 2}, bad3[] = {0, 2, 2}, bad4[] = {0, 1, 3};
        lmc_pp_stage_keep(b2, 2, true, 2, 1, 0, keep); /* rank 0's part: rank 1 cannot run on it */
        CHECK(keep[0] && keep[1] && !keep[2] && !keep[3]);
        lmc_pp_stage_keep(b2, 2, true, 2, 1, 1, keep);
        CHECK(keep[0] && !keep[1] && keep[2] && keep[3]); /* the tied head's embedding on the last stage */
        /* a given split must cut the model's layers into non-empty chunks */
        CHECK(lmc_pp_tstage_init_split(&s, &q, &be, bad3, 0, 2, 1, 2, 1, 4, &err) == LMC_ERR_ARG &&
              strstr(err.msg, "non-empty"));
        CHECK(lmc_pp_tstage_init_split(&s, &q, &be, bad4, 0, 2, 1, 2, 1, 4, &err) == LMC_ERR_ARG &&
              strstr(err.msg, "non-empty"));
        lmc_pp_stage_keep(b2, 2, true, 2, 1, 0, keep);
        if (lmc_tmodel_init_parts(&part, &q.cfg, &be, keep, true, &err) == LMC_OK) {
            CHECK(part.numel < q.numel && lmc_tmodel_find(&part, "model.layers.1.mlp.up_proj.weight") >= 0 &&
                  part.params[lmc_tmodel_find(&part, "model.layers.1.mlp.up_proj.weight")].elsewhere);
            CHECK(lmc_pp_tstage_init(&s, &part, &be, 1, 2, 2, 1, 4, &err) == LMC_ERR_ARG && strstr(err.msg, "lacks"));
            lmc_tmodel_free(&part);
        } else CHECK_MSG(0, "%s", err.msg);
        keep[0] = false, keep[3] = true; /* the tied head without its embedding */
        CHECK(lmc_tmodel_init_parts(&part, &q.cfg, &be, keep, true, &err) == LMC_ERR_ARG && strstr(err.msg, "tied"));
        lmc_tmodel_free(&q);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_pp_model");
}
