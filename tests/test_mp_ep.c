/* test_mp_ep.c — expert parallelism through the model layer on the
 * mixtral-tiny (4 experts, top-2) and qwen3moe-tiny (8 experts, top-2, q/k
 * norms) fixtures at EP 2 and 4 (forked ranks joined by tcp):
 *  - inference: each rank loads only its experts (lmc_ep_model_load; the
 *    others stay unbound), every rank runs the same prompt (replicated
 *    mode: each dispatches its slice of the tokens by alltoallv); the
 *    prompt's logits equal the one-process forward within 1e-6 relative
 *    and 8 greedy decode steps (one token: one rank sends, the others send
 *    nothing) give the one-process tokens;
 *  - training: a global batch of 4 sequences of 9 tokens, each rank its
 *    slice (data parallel), 3 AdamW steps: the global loss of every step
 *    equals the one-process run, and after step 1 every gradient (the
 *    rank's own experts, and the replicated tensors after
 *    lmc_ep_tmodel_reduce_dense) equals the one-process one within 1e-5 of
 *    the tensor's largest, and the global gradient norm of every step
 *    (lmc_ep_tmodel_grad_norm) the one-process norm within 1e-5; EP 4
 *    recomputes layers in the backward and runs its experts through
 *    lmc_linear one by one (a backend without the grouped GEMM).
 *    qwen3moe-tiny trains with the load-balancing loss (coefficient 0.05):
 *    its routing statistics summed over the ranks (lmc_tacts.moe_dp), the
 *    loss and the router gradients equal the one-process global batch's.
 * Also: more ranks than experts and dense models are refused. */
#include "test.h"
#include "dist_spawn.h"
#include "model_greedy.h"
#include "dist/ep_model.h"
#include "train/adamw.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { NP = 13, NGEN = 8, B = 4, T = 9, STEPS = 3 };

struct ref {
    const char *dir;
    int64_t V;
    float *logits;          /* (NP, V) */
    int32_t toks[NGEN];
    const struct lmc_tmodel *init; /* the untrained model (shared with the forks) */
    int32_t in[B * T], tgt[B * T];
    double loss[STEPS];     /* global mean loss per step */
    double norm[STEPS];     /* global gradient norm per step */
    float **grads;          /* step-1 gradient per parameter, on-disk layout */
};

/* STEPS AdamW steps of tm on sequences [s0, s0 + ns) of the global batch;
 * losses[k] = global mean (summed over ranks through g when g is set);
 * grads after step 1 downloaded into g1 (per parameter, NULL: skipped). */
static lmc_status train(struct lmc_tmodel *tm, const struct lmc_backend *be, const struct ref *r, int64_t s0,
                        int64_t ns, bool recompute, struct lmc_ep_group *g, double *losses, double *norms,
                        float **g1, lmc_err *err) {
    int64_t total = 0;
    for (int i = 0; i < B * T; i++) total += r->tgt[i] >= 0;
    struct lmc_tacts a;
    lmc_status st = lmc_tacts_init(&a, tm, be, ns, T, recompute, err);
    if (st) return st;
    a.moe_dp = g ? g->c : NULL; /* the load-balancing loss over the global batch */
    float *m = calloc((size_t)tm->numel + 1, sizeof(float)), *v = calloc((size_t)tm->numel + 1, sizeof(float));
    struct lmc_adamw_cfg oc;
    lmc_adamw_cfg_default(&oc);
    oc.lr = 1e-2;
    for (int k = 0; !st && k < STEPS; k++) {
        double sum = 0;
        int64_t cnt = 0;
        lmc_tmodel_zero_grad(tm);
        st = lmc_tmodel_step(tm, be, &a, r->in + s0 * T, r->tgt + s0 * T, true, 1.0f / (float)total, &sum, &cnt, err);
        if (!st && g) st = lmc_ep_group_check(g, err);
        if (!st && g) st = lmc_ep_tmodel_reduce_dense(tm, g, err);
        if (!st && g) st = g->c->all_reduce(g->c, &sum, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
        if (!st && g) st = lmc_ep_tmodel_grad_norm(tm, g, &norms[k], err);
        else if (!st) norms[k] = sqrt(be->sumsq(be->ctx, tm->g, tm->numel));
        if (st) break;
        losses[k] = sum / (double)total;
        for (int i = 0; k == 0 && g1 && i < tm->n_params; i++)
            if (!tm->params[i].external && (st = lmc_tmodel_download_param(tm, tm->g, i, g1[i], err))) break;
        for (int i = 0; i < tm->n_params; i++) {
            const struct lmc_tparam *p = &tm->params[i];
            if (p->external) continue;
            lmc_adamw_update(&oc, k + 1, oc.lr, lmc_tparam_decays(p, false), tm->w + p->off, tm->g + p->off,
                             m + p->off, v + p->off, p->numel);
        }
    }
    free(m), free(v);
    lmc_tacts_free(&a);
    return st;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    if (c->world == 4) be.moe_gemm = NULL, be.moe_gemm_bwd = NULL; /* experts through lmc_linear one by one */
    int bad = 0;
    /* inference */
    struct lmc_model m;
    struct lmc_ep_group g;
    struct lmc_model_opts o = {LMC_WDTYPE_F32, &be};
    float *logits = malloc(sizeof(float) * (size_t)(NP * r->V));
    int32_t toks[NGEN] = {0};
    lmc_status st = lmc_ep_model_load(&m, &g, r->dir, &o, c, true, &err);
    if (!st) {
        for (int64_t l = 0; l < m.cfg.num_layers; l++)
            for (int64_t e = 0; m.w.layers[l].experts && e < g.E; e++) {
                bool bound = m.w.layers[l].experts[e * LMC_X_N].w.data != NULL;
                bool mine = e >= g.e0 && e < g.e0 + g.ne;
                if (bound != mine) bad = 1, fprintf(stderr, "rank %d: expert %lld bound %d\n", rank, (long long)e, bound);
            }
        st = model_greedy_run(&m, &be, NP, NGEN, logits, toks, &err);
        if (!st) st = lmc_ep_group_check(&g, &err);
        lmc_model_free(&m);
        lmc_ep_group_free(&g);
    }
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < NP * r->V; i++) {
        num = fmax(num, fabs((double)logits[i] - r->logits[i]));
        den = fmax(den, fabs((double)r->logits[i]));
    }
    if (!(num / den <= 1e-6)) bad = 1;
    if (memcmp(toks, r->toks, sizeof toks)) bad = 1, fprintf(stderr, "rank %d: greedy tokens differ\n", rank);
    if (rank == 0) fprintf(stderr, "EP %d: logits rel err %.3g\n", c->world, num / den);
    free(logits);
    /* training */
    struct lmc_tmodel tm;
    if ((st = lmc_ep_tmodel_shard(&tm, &g, r->init, c, &be, &err))) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    int64_t s0, ns;
    lmc_dist_slice(B, rank, c->world, &s0, &ns);
    float **g1 = calloc((size_t)tm.n_params, sizeof *g1);
    for (int i = 0; i < tm.n_params; i++) g1[i] = malloc(sizeof(float) * (size_t)tm.params[i].numel);
    double losses[STEPS] = {0}, norms[STEPS] = {0};
    st = train(&tm, &be, r, s0, ns, c->world == 4, &g, losses, norms, g1, &err);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        bad = 1;
    }
    double worst_l = 0, worst_g = 0;
    for (int k = 0; !st && k < STEPS; k++) {
        worst_l = fmax(worst_l, fabs(losses[k] - r->loss[k]) / fabs(r->loss[k]));
        if (!(fabs(norms[k] - r->norm[k]) <= 1e-5 * r->norm[k]))
            bad = 1, fprintf(stderr, "rank %d: step %d gradient norm %.9g vs %.9g\n", rank, k, norms[k], r->norm[k]);
    }
    int n_local = 0;
    for (int i = 0; !st && i < tm.n_params; i++) {
        const struct lmc_tparam *p = &tm.params[i];
        if (p->external) continue;
        n_local += lmc_ep_tparam_is_expert(p);
        const float *ref = r->grads[lmc_tmodel_find(r->init, p->name)];
        double d = 0, mx = 1e-30;
        for (int64_t k = 0; k < p->numel; k++) {
            mx = fmax(mx, fabs(ref[k]));
            double e = fabs((double)g1[i][k] - ref[k]);
            if (e > d || e != e) d = e;
        }
        if (!(d / mx <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: %s grad rel err %.3g\n", rank, p->name, d / mx);
        worst_g = fmax(worst_g, d / mx);
    }
    /* this rank's experts only: 3 tensors per expert and sparse layer */
    int64_t sparse = 0;
    for (int64_t l = 0; l < tm.cfg.num_layers; l++) sparse += lmc_config_layer_sparse(&tm.cfg, l);
    if (n_local != 3 * g.ne * sparse) bad = 1, fprintf(stderr, "rank %d: %d expert tensors\n", rank, n_local);
    if (!(worst_l <= 1e-6)) bad = 1, fprintf(stderr, "rank %d: losses rel err %.3g\n", rank, worst_l);
    if (rank == 0) fprintf(stderr, "EP %d: losses rel err %.3g, gradients %.3g\n", c->world, worst_l, worst_g);
    for (int i = 0; i < tm.n_params; i++) free(g1[i]);
    free(g1);
    lmc_tmodel_free(&tm);
    lmc_ep_group_free(&g);
    lmc_backend_cpu_free(&be);
    return bad;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    char dir[] = "/tmp/lmc_test_mp_ep_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const char *fx[] = {"tests/fixtures/mixtral-tiny", "tests/fixtures/qwen3moe-tiny"};
    for (int f = 0; f < 2; f++) {
        struct lmc_model m;
        struct lmc_model_opts o = {LMC_WDTYPE_F32, &be};
        if (lmc_model_load(&m, fx[f], &o, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        struct ref r = {.dir = fx[f], .V = m.cfg.vocab_size};
        r.logits = malloc(sizeof(float) * (size_t)(NP * r.V));
        CHECK(model_greedy_run(&m, &be, NP, NGEN, r.logits, r.toks, &err) == LMC_OK);
        int64_t E = m.cfg.num_experts;
        lmc_model_free(&m);
        struct lmc_tmodel init, tm;
        CHECK(lmc_tmodel_load(&init, fx[f], &be, &err) == LMC_OK);
        CHECK(lmc_tmodel_load(&tm, fx[f], &be, &err) == LMC_OK);
        if (f == 1) /* qwen3moe-tiny with the load-balancing loss (coefficient 0.05) */
            for (struct lmc_tmodel *p = &init; p; p = p == &init ? &tm : NULL)
                p->cfg.output_router_logits = true, p->cfg.router_aux_loss_coef = 0.05;
        r.init = &init;
        uint64_t seed = 11 + (uint64_t)f;
        for (int i = 0; i < B * T; i++) r.in[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)r.V);
        for (int i = 0; i < B * T; i++) r.tgt[i] = i % T == T - 1 ? -1 : r.in[i + 1];
        r.grads = calloc((size_t)tm.n_params, sizeof(float *));
        for (int i = 0; i < tm.n_params; i++) r.grads[i] = malloc(sizeof(float) * (size_t)tm.params[i].numel);
        CHECK(train(&tm, &be, &r, 0, B, false, NULL, r.loss, r.norm, r.grads, &err) == LMC_OK);
        CHECK(r.loss[0] > 0 && r.loss[STEPS - 1] < r.loss[0]);
        for (int W = 2; W <= 4; W += 2) {
            struct spawn_opts so = {.world = W};
            int codes[16] = {0}, bad = 0;
            spawn(&so, run_rank, &r, dir, codes);
            for (int k = 0; k < W; k++)
                if (codes[k]) bad = 1;
            fprintf(stderr, "%s EP %d: %s", fx[f], W, slurp(dir, 0));
            for (int k = 1; k < W; k++)
                if (codes[k]) fprintf(stderr, "rank %d exit %d: %s", k, codes[k], slurp(dir, k));
            CHECK_MSG(!bad, "%s at EP %d", fx[f], W);
        }
        /* more ranks than experts */
        struct lmc_comm cw = {0};
        cw.rank = 0, cw.world = (int)E + 1;
        struct lmc_ep_group g;
        CHECK(lmc_ep_group_init(&g, &cw, E, 2, false, &err) == LMC_ERR_ARG && strstr(err.msg, "cannot be split"));
        for (int i = 0; i < tm.n_params; i++) free(r.grads[i]);
        free(r.grads);
        free(r.logits);
        lmc_tmodel_free(&tm);
        lmc_tmodel_free(&init);
    }
    /* a dense model is refused, naming it */
    struct lmc_comm one;
    lmc_comm_single_init(&one);
    struct lmc_model m;
    struct lmc_ep_group g;
    struct lmc_model_opts o = {LMC_WDTYPE_F32, &be};
    CHECK(lmc_ep_model_load(&m, &g, "tests/fixtures/llama-tiny", &o, &one, true, &err) == LMC_ERR_ARG &&
          strstr(err.msg, "dense"));
    one.free(&one);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_ep");
}
