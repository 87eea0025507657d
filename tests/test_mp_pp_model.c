/* test_mp_pp_model.c — pipeline parallelism over the model layer's blocks:
 * llama-tiny (2 layers) split into 2 stages on forked ranks (tcp), one
 * 1F1B step of M = 1, 2, 4 micro-batches (8 sequences of 9 tokens in all)
 * through lmc_pp_run with lmc_pp_tstage: the summed loss equals one
 * lmc_tmodel_step over the whole batch, and each stage's gradients (its
 * layers; the embedding on the first, norm and head on the last) equal the
 * one-process ones within 1e-5 relative while the tensors it does not own
 * stay zero. One stage (P = 1) gives the same; tied embeddings (qwen2-tiny)
 * across stages are refused. */
#include "test.h"
#include "dist_spawn.h"
#include "dist/pp_model.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { NSEQ = 8, T = 9 };

struct ref {
    const char *dir;
    int M;
    int32_t in[NSEQ * T], tgt[NSEQ * T];
    double loss;
    float **grads;
    int n_params;
};

static bool owned(const char *name, const struct lmc_pp_tstage *s) {
    if (strstr(name, "embed_tokens")) return s->first;
    if (strstr(name, "lm_head") || !strcmp(name, "model.norm.weight")) return s->last;
    const char *p = strstr(name, "layers.");
    if (!p) return false;
    long l = strtol(p + 7, NULL, 10);
    return l >= s->l0 && l < s->l1;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_tmodel tm;
    struct lmc_pp_tstage s;
    int bad = 0;
    if (lmc_tmodel_load(&tm, r->dir, &be, &err) ||
        lmc_pp_tstage_init(&s, &tm, &be, rank, c->world, r->M, NSEQ / r->M, T, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    lmc_tmodel_zero_grad(&tm);
    s.inputs = r->in, s.targets = r->tgt;
    struct lmc_pp_stage ops = lmc_pp_tstage_ops(&s);
    if (lmc_pp_run(c, &ops, r->M, NULL, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    if (s.last && !(fabs(s.loss_sum - r->loss) <= 1e-5 * r->loss))
        bad = 1, fprintf(stderr, "loss %.9g vs %.9g\n", s.loss_sum, r->loss);
    for (int i = 0; i < tm.n_params; i++) {
        const struct lmc_tparam *p = &tm.params[i];
        float *g = malloc(sizeof(float) * (size_t)p->numel);
        lmc_tmodel_download_param(&tm, tm.g, i, g, &err);
        double num = 0, den = 1e-30;
        bool mine = owned(p->name, &s);
        for (int64_t k = 0; k < p->numel; k++) {
            den = fmax(den, fabs(r->grads[i][k]));
            double d = fabs((double)g[k] - (mine ? r->grads[i][k] : 0.0));
            if (d > num || d != d) num = d;
        }
        if (!(num / den <= 1e-5))
            bad = 1, fprintf(stderr, "rank %d: %s (%s) grad err %.3g\n", rank, p->name, mine ? "owned" : "not owned", num / den);
        free(g);
    }
    lmc_pp_tstage_free(&s);
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
    return bad;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    struct ref r = {.dir = "tests/fixtures/llama-tiny"};
    struct lmc_tmodel m;
    if (lmc_tmodel_load(&m, r.dir, &be, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_mp_pp_model");
    }
    uint64_t seed = 99;
    for (int i = 0; i < NSEQ * T; i++) r.in[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)m.cfg.vocab_size);
    for (int i = 0; i < NSEQ * T; i++) r.tgt[i] = i % T == T - 1 ? -1 : r.in[i + 1];
    struct lmc_tacts a;
    int64_t count;
    CHECK(lmc_tacts_init(&a, &m, &be, NSEQ, T, false, &err) == LMC_OK);
    lmc_tmodel_zero_grad(&m);
    CHECK(lmc_tmodel_step(&m, &be, &a, r.in, r.tgt, true, 1.0f, &r.loss, &count, &err) == LMC_OK);
    lmc_tacts_free(&a);
    r.n_params = m.n_params;
    r.grads = calloc((size_t)m.n_params, sizeof(float *));
    for (int i = 0; i < m.n_params; i++) {
        r.grads[i] = malloc(sizeof(float) * (size_t)m.params[i].numel);
        lmc_tmodel_download_param(&m, m.g, i, r.grads[i], &err);
    }
    char dir[] = "/tmp/lmc_test_mp_pp_model_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const int Ms[] = {1, 2, 4};
    for (int P = 1; P <= 2; P++)
        for (int k = 0; k < 3; k++) {
            r.M = Ms[k];
            struct spawn_opts so = {.world = P};
            int codes[16] = {0}, bad = 0;
            spawn(&so, run_rank, &r, dir, codes);
            for (int q = 0; q < P; q++)
                if (codes[q]) bad = 1, fprintf(stderr, "P=%d M=%d rank %d exit %d: %s", P, r.M, q, codes[q], slurp(dir, q));
            CHECK_MSG(!bad, "llama-tiny pipeline P=%d M=%d", P, r.M);
        }
    for (int i = 0; i < m.n_params; i++) free(r.grads[i]);
    free(r.grads);
    lmc_tmodel_free(&m);
    /* tied embeddings over two stages */
    struct lmc_tmodel q;
    if (lmc_tmodel_load(&q, "tests/fixtures/qwen2-tiny", &be, &err) == LMC_OK) {
        struct lmc_pp_tstage s;
        CHECK(lmc_pp_tstage_init(&s, &q, &be, 0, 2, 2, 1, 4, &err) == LMC_ERR_UNSUPPORTED && strstr(err.msg, "tied"));
        CHECK(lmc_pp_tstage_init(&s, &q, &be, 0, 3, 2, 1, 4, &err) == LMC_ERR_ARG && strstr(err.msg, "2 layers"));
        lmc_tmodel_free(&q);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_pp_model");
}
