/* test_mp_tp_model.c — tensor parallelism through the model layer: the
 * llama-tiny (4 heads, 2 KV heads) and qwen2-tiny (4 heads, 1 KV head, q/k/v
 * biases, tied head) fixtures sharded over 2 and 4 forked ranks (tcp) by
 * lmc_tp_model_shard, run by the unchanged lmc_model_forward with the
 * row-parallel all-reduces inside lmc_linear: every prompt position's
 * logits equal the one-process forward within 1e-5 relative, and 8 greedy
 * decode steps give the one-process tokens (KV heads split at TP 2 for
 * llama, replicated otherwise). The same with the vocabulary-parallel
 * embedding and head (lmc_tp_model_shard_vocab: a rank holds its rows of
 * the tables, the lookup all-reduced, the logits all-gathered; qwen2's tied
 * head shares the embedding's shard). BF16 weights shard as BF16 and
 * give the one-process BF16 logits (1e-5) and tokens at TP 2 and 4.
 * Unsplittable layouts are refused. */
#include "test.h"
#include "dist_spawn.h"
#include "model_greedy.h"
#include "dist/tp_model.h"

#include <stdlib.h>
#include <sys/stat.h>

enum { NP = 13, NGEN = 8 };

struct ref {
    struct lmc_model *m;
    float *logits;          /* (NP, V) */
    int32_t toks[NGEN];
    bool vocab;
};

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_tp_model t;
    int64_t V = r->m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)(NP * V));
    int32_t toks[NGEN] = {0};
    int bad = 0;
    lmc_status st = lmc_tp_model_shard_vocab(&t, r->m, c, r->vocab, &err);
    if (!st) st = model_greedy_run(&t.m, &be, NP, NGEN, logits, toks, &err);
    if (!st) st = lmc_tp_model_check(&t, &err);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        bad = 1;
    } else {
        double num = 0, den = 1e-30;
        for (int64_t i = 0; i < NP * V; i++) {
            num = fmax(num, fabs((double)logits[i] - r->logits[i]));
            den = fmax(den, fabs((double)r->logits[i]));
        }
        if (!(num / den <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: logits rel err %.3g\n", rank, num / den);
        if (memcmp(toks, r->toks, sizeof toks)) bad = 1, fprintf(stderr, "rank %d: greedy tokens differ\n", rank);
        if (t.m.cfg.num_heads * c->world != r->m->cfg.num_heads) bad = 1;
        for (int s = 0; s < LMC_L_N; s++) /* the shard keeps the weights' dtype */
            if (r->m->w.layers[0].lin[s].w.data && t.m.w.layers[0].lin[s].w.dtype != r->m->w.layers[0].lin[s].w.dtype)
                bad = 1, fprintf(stderr, "rank %d: linear %d's shard changed dtype\n", rank, s);
        if (r->vocab && (!t.m.w.vocab || t.m.w.tok_emb.rows >= V || t.m.w.head.w.rows != t.m.w.tok_emb.rows ||
                         (r->m->w.head.w.data == r->m->w.tok_emb.data) != (t.m.w.head.w.data == t.m.w.tok_emb.data)))
            bad = 1, fprintf(stderr, "rank %d: vocabulary shard %lld of %lld rows\n", rank,
                             (long long)t.m.w.tok_emb.rows, (long long)V);
    }
    lmc_tp_model_free(&t);
    free(logits);
    lmc_backend_cpu_free(&be);
    return bad;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    char dir[] = "/tmp/lmc_test_mp_tp_model_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const char *fx[] = {"tests/fixtures/llama-tiny", "tests/fixtures/qwen2-tiny"};
    for (int f = 0; f < 2; f++) {
        struct lmc_model m;
        struct lmc_model_opts o = {LMC_WDTYPE_F32, &be};
        if (lmc_model_load(&m, fx[f], &o, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        struct ref r = {&m, malloc(sizeof(float) * (size_t)(NP * m.cfg.vocab_size)), {0}, false};
        CHECK(model_greedy_run(&m, &be, NP, NGEN, r.logits, r.toks, &err) == LMC_OK);
        for (int T = 2; T <= 4; T += 2)
            for (int vp = 0; vp < 2; vp++) {
                struct spawn_opts so = {.world = T};
                int codes[16] = {0}, bad = 0;
                r.vocab = vp;
                spawn(&so, run_rank, &r, dir, codes);
                for (int k = 0; k < T; k++)
                    if (codes[k])
                        bad = 1, fprintf(stderr, "%s TP %d%s rank %d exit %d: %s", fx[f], T, vp ? " vocab" : "", k,
                                         codes[k], slurp(dir, k));
                CHECK_MSG(!bad, "%s at TP %d%s", fx[f], T, vp ? " vocabulary-parallel" : "");
            }
        /* 3 ranks: 4 heads do not split */
        struct lmc_comm c3 = {0};
        c3.rank = 1, c3.world = 3;
        struct lmc_tp_model t;
        CHECK(lmc_tp_model_shard(&t, &m, &c3, &err) == LMC_ERR_ARG && strstr(err.msg, "4 attention heads"));
        free(r.logits);
        lmc_model_free(&m);
    }
    /* bf16 weights shard as they are (no float32 copy): the one-process bf16 model's logits within 1e-5 */
    for (int f = 0; f < 2; f++) {
        struct lmc_model m;
        struct lmc_model_opts o = {LMC_WDTYPE_BF16, &be};
        if (lmc_model_load(&m, fx[f], &o, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        CHECK(m.w.layers[0].lin[LMC_L_O].w.dtype == LMC_DTYPE_BF16);
        struct ref r = {&m, malloc(sizeof(float) * (size_t)(NP * m.cfg.vocab_size)), {0}, false};
        CHECK(model_greedy_run(&m, &be, NP, NGEN, r.logits, r.toks, &err) == LMC_OK);
        for (int T = 2; T <= 4; T += 2) {
            struct spawn_opts so = {.world = T};
            int codes[16] = {0}, bad = 0;
            spawn(&so, run_rank, &r, dir, codes);
            for (int k = 0; k < T; k++)
                if (codes[k])
                    bad = 1, fprintf(stderr, "%s bf16 TP %d rank %d exit %d: %s", fx[f], T, k, codes[k], slurp(dir, k));
            CHECK_MSG(!bad, "%s bf16 at TP %d", fx[f], T);
        }
        free(r.logits);
        lmc_model_free(&m);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_tp_model");
}
