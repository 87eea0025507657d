/* test_mp_tp_train.c — tensor-parallel training through the model layer:
 * the llama-tiny (2 KV heads) and qwen2-tiny (1 KV head, q/k/v biases, tied
 * embedding) fixtures' trainable models sharded over 2 and 4 forked ranks
 * (tcp) by lmc_tp_tmodel_shard; one lmc_tmodel_step forward + backward on
 * 2 sequences of 9 tokens gives the one-process loss and, for every tensor,
 * the one-process gradient of the rank's shard (split tensors: their rows
 * or columns; replicated ones: all of it; replicated KV heads after
 * lmc_tp_tmodel_sum_replicated), within 1e-5 relative; and the same with
 * the embedding and head vocabulary-parallel (lmc_tp_tmodel_shard_vocab:
 * their rows of the rank's vocabulary slice, qwen2-tiny's tied one too);
 * and with sequence parallelism (g.sp, lmc_tacts_init_sp; TP 2: 9 rows a
 * rank, with and without the vocabulary split), the norms' gradients
 * summed over the group by lmc_tp_tmodel_sum_replicated. */
#include "test.h"
#include "dist_spawn.h"
#include "dist/tp_train.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { B = 2, T = 9 };

struct ref {
    const struct lmc_tmodel *m;
    bool vocab;             /* the embedding and head vocabulary-parallel too */
    bool sp;                /* sequence parallelism */
    int32_t in[B * T], tgt[B * T];
    double loss;
    float **grads;          /* per parameter, on-disk layout */
};

static lmc_status step(struct lmc_tmodel *tm, const struct lmc_backend *be, const struct ref *r,
                       double *loss, struct lmc_sp *sp, lmc_err *err) {
    struct lmc_tacts a;
    lmc_status st = sp ? lmc_tacts_init_sp(&a, tm, be, B, T, false, sp, err) : lmc_tacts_init(&a, tm, be, B, T, false, err);
    if (sp) sp->buf[0] = a.hf;
    if (st) return st;
    int64_t count;
    lmc_tmodel_zero_grad(tm);
    st = lmc_tmodel_step(tm, be, &a, r->in, r->tgt, true, 1.0f, loss, &count, err);
    lmc_tacts_free(&a);
    return st;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_tmodel tm;
    struct lmc_tp_group g;
    struct lmc_tp_heads h;
    struct lmc_tvocab vocab;
    double loss = 0;
    int bad = 0;
    lmc_status st = lmc_tp_tmodel_shard_vocab(&tm, &g, &h, r->vocab ? &vocab : NULL, r->m, c, &be, &err);
    if (!st && r->vocab && (tm.cfg.vocab_size >= r->m->cfg.vocab_size || !tm.vocab))
        st = lmc_err_set(&err, LMC_ERR_INTERNAL, "vocabulary not split (%lld rows)", (long long)tm.cfg.vocab_size);
    struct lmc_sp sp = {.g = &g, .m = B * T / c->world, .m0 = rank * (B * T / c->world)};
    float *bufs = NULL;
    if (!st && r->sp) {
        g.sp = true;
        bufs = malloc(sizeof(float) * (size_t)(2 * B * T * tm.cfg.hidden_size));
        sp.buf[1] = bufs, sp.buf[2] = bufs + B * T * tm.cfg.hidden_size;
    }
    if (!st) st = step(&tm, &be, r, &loss, r->sp ? &sp : NULL, &err);
    free(bufs);
    if (!st && g.st) st = g.st, err = g.err;
    if (!st) st = lmc_tp_tmodel_sum_replicated(&tm, &g, &h, r->m->cfg.num_kv_heads, &err);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        lmc_backend_cpu_free(&be);
        return 1;
    }
    if (!(fabs(loss - r->loss) <= 1e-5 * fabs(r->loss)))
        bad = 1, fprintf(stderr, "rank %d: loss %.9g vs %.9g\n", rank, loss, r->loss);
    int64_t i0, ni;
    lmc_dist_slice(r->m->cfg.intermediate_size, rank, c->world, &i0, &ni);
    for (int i = 0; i < tm.n_params; i++) {
        const struct lmc_tparam *p = &tm.params[i];
        int f = lmc_tmodel_find(r->m, p->name), dim;
        const struct lmc_tparam *q = &r->m->params[f];
        int64_t a0, n, cols = q->ndim == 2 ? q->shape[1] : 1;
        lmc_tp_tensor_cut(p->name, &h, r->m->cfg.head_dim, i0, ni, &dim, &a0, &n);
        float *got = malloc(sizeof(float) * (size_t)p->numel);
        lmc_tmodel_download_param(&tm, tm.g, i, got, &err);
        const float *ref = r->grads[f];
        double num = 0, den = 1e-30;
        for (int64_t k = 0; k < q->numel; k++) den = fmax(den, fabs(ref[k]));
        int64_t pc = p->ndim == 2 ? p->shape[1] : 1;
        for (int64_t k = 0; k < p->numel; k++) {
            int64_t row = k / pc, col = k % pc;
            int64_t fk = dim == 0 ? (a0 + row) * cols + col : dim == 1 ? row * cols + a0 + col : k;
            double d = fabs((double)got[k] - ref[fk]);
            if (d > num || d != d) num = d;
        }
        if (!(num / den <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: %s grad rel err %.3g\n", rank, p->name, num / den);
        free(got);
    }
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
    return bad;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    char dir[] = "/tmp/lmc_test_mp_tp_train_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const char *fx[] = {"tests/fixtures/llama-tiny", "tests/fixtures/qwen2-tiny"};
    for (int f = 0; f < 2; f++) {
        struct lmc_tmodel m;
        if (lmc_tmodel_load(&m, fx[f], &be, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        struct ref r = {.m = &m};
        uint64_t seed = 3 + (uint64_t)f;
        for (int i = 0; i < B * T; i++) r.in[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)m.cfg.vocab_size);
        for (int i = 0; i < B * T; i++) r.tgt[i] = i % T == T - 1 ? -1 : r.in[i + 1];
        CHECK(step(&m, &be, &r, &r.loss, NULL, &err) == LMC_OK);
        CHECK(r.loss > 0);
        r.grads = calloc((size_t)m.n_params, sizeof(float *));
        for (int i = 0; i < m.n_params; i++) {
            r.grads[i] = malloc(sizeof(float) * (size_t)m.params[i].numel);
            lmc_tmodel_download_param(&m, m.g, i, r.grads[i], &err);
        }
        for (int W = 2; W <= 4; W += 2)
            for (int v = 0; v < 2; v++) {
                struct spawn_opts so = {.world = W};
                int codes[16] = {0}, bad = 0;
                r.vocab = v;
                r.sp = false;
                spawn(&so, run_rank, &r, dir, codes);
                for (int k = 0; k < W; k++)
                    if (codes[k]) bad = 1, fprintf(stderr, "%s TP %d rank %d exit %d: %s", fx[f], W, k, codes[k], slurp(dir, k));
                CHECK_MSG(!bad, "%s training step at TP %d%s", fx[f], W, v ? " (vocabulary parallel)" : "");
            }
        for (int v = 0; v < 2; v++) { /* sequence parallel at TP 2 (18 rows: 9 a rank) */
            struct spawn_opts so = {.world = 2};
            int codes[16] = {0}, bad = 0;
            r.vocab = v;
            r.sp = true;
            spawn(&so, run_rank, &r, dir, codes);
            for (int k = 0; k < 2; k++)
                if (codes[k]) bad = 1, fprintf(stderr, "%s TP 2 --sp rank %d exit %d: %s", fx[f], k, codes[k], slurp(dir, k));
            CHECK_MSG(!bad, "%s training step at TP 2 with sequence parallelism%s", fx[f], v ? " (vocabulary parallel)" : "");
        }
        for (int i = 0; i < m.n_params; i++) free(r.grads[i]);
        free(r.grads);
        lmc_tmodel_free(&m);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_tp_train");
}
