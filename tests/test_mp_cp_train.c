/* test_mp_cp_train.c — context-parallel training through the model layer:
 * llama-tiny (GQA, RoPE) and qwen3-tiny (q/k norms) on 2 sequences of 301
 * tokens, each sequence cut into zigzag slices over CP = 2 and 4 forked
 * ranks (tcp); one lmc_tmodel_step per rank with the attention running as
 * ring attention (lmc_tacts.cp), the losses and the gradient arenas summed
 * over the ranks, equal one lmc_tmodel_step over the whole sequences
 * (loss and every gradient tensor within 1e-5 relative). */
#include "test.h"
#include "dist_spawn.h"
#include "dist/ring_attn.h"
#include "model/backward.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { B = 2, TG = 301 };

struct ref {
    const char *dir;
    int32_t in[B * TG], tgt[B * TG];
    double loss;
    float **grads;
};

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_tmodel tm;
    struct lmc_tacts a;
    int64_t n = lmc_ring_attn_zigzag(TG, rank, c->world, NULL);
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)n);
    lmc_ring_attn_zigzag(TG, rank, c->world, pos);
    int32_t *in = malloc(sizeof(int32_t) * (size_t)(B * n)), *tg = malloc(sizeof(int32_t) * (size_t)(B * n));
    int32_t *p32 = malloc(sizeof(int32_t) * (size_t)(B * n));
    for (int b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) {
            in[b * n + i] = r->in[b * TG + pos[i]];
            tg[b * n + i] = r->tgt[b * TG + pos[i]];
            p32[b * n + i] = (int32_t)pos[i];
        }
    if (lmc_tmodel_load(&tm, r->dir, &be, &err) || lmc_tacts_init(&a, &tm, &be, B, n, false, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    struct lmc_cp_group g = {c, TG, LMC_OK, {0}};
    a.cp = &g;
    be.upload(be.ctx, a.pos, p32, sizeof(int32_t) * (size_t)(B * n));
    double loss = 0;
    int64_t count;
    lmc_tmodel_zero_grad(&tm);
    lmc_status st = lmc_tmodel_step(&tm, &be, &a, in, tg, true, 1.0f, &loss, &count, &err);
    if (!st && g.st) st = g.st, err = g.err;
    if (!st) st = c->all_reduce(c, &loss, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, &err);
    if (!st) st = c->all_reduce(c, tm.g, tm.numel, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 1;
    }
    int bad = 0;
    if (!(fabs(loss - r->loss) <= 1e-5 * r->loss)) bad = 1, fprintf(stderr, "loss %.9g vs %.9g\n", loss, r->loss);
    for (int i = 0; i < tm.n_params; i++) {
        const struct lmc_tparam *p = &tm.params[i];
        float *gr = malloc(sizeof(float) * (size_t)p->numel);
        lmc_tmodel_download_param(&tm, tm.g, i, gr, &err);
        double num = 0, den = 1e-30;
        for (int64_t k = 0; k < p->numel; k++) {
            den = fmax(den, fabs(r->grads[i][k]));
            double d = fabs((double)gr[k] - r->grads[i][k]);
            if (d > num || d != d) num = d;
        }
        if (!(num / den <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: %s grad rel err %.3g\n", rank, p->name, num / den);
        free(gr);
    }
    lmc_tacts_free(&a);
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
    free(pos), free(in), free(tg), free(p32);
    return bad;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    char dir[] = "/tmp/lmc_test_mp_cp_train_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const char *fx[] = {"tests/fixtures/llama-tiny", "tests/fixtures/qwen3-tiny"};
    for (int f = 0; f < 2; f++) {
        struct ref r = {.dir = fx[f]};
        struct lmc_tmodel m;
        if (lmc_tmodel_load(&m, r.dir, &be, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        uint64_t seed = 5 + (uint64_t)f;
        for (int i = 0; i < B * TG; i++) r.in[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)m.cfg.vocab_size);
        for (int i = 0; i < B * TG; i++) r.tgt[i] = i % TG == TG - 1 ? -1 : r.in[i + 1];
        struct lmc_tacts a;
        int64_t count;
        CHECK(lmc_tacts_init(&a, &m, &be, B, TG, false, &err) == LMC_OK);
        lmc_tmodel_zero_grad(&m);
        CHECK(lmc_tmodel_step(&m, &be, &a, r.in, r.tgt, true, 1.0f, &r.loss, &count, &err) == LMC_OK);
        lmc_tacts_free(&a);
        r.grads = calloc((size_t)m.n_params, sizeof(float *));
        for (int i = 0; i < m.n_params; i++) {
            r.grads[i] = malloc(sizeof(float) * (size_t)m.params[i].numel);
            lmc_tmodel_download_param(&m, m.g, i, r.grads[i], &err);
        }
        for (int W = 2; W <= 4; W += 2) {
            struct spawn_opts so = {.world = W};
            int codes[16] = {0}, bad = 0;
            spawn(&so, run_rank, &r, dir, codes);
            for (int q = 0; q < W; q++)
                if (codes[q]) bad = 1, fprintf(stderr, "%s CP %d rank %d exit %d: %s", fx[f], W, q, codes[q], slurp(dir, q));
            CHECK_MSG(!bad, "%s context parallel %d", fx[f], W);
        }
        for (int i = 0; i < m.n_params; i++) free(r.grads[i]);
        free(r.grads);
        lmc_tmodel_free(&m);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_cp_train");
}
