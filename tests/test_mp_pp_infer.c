/* test_mp_pp_infer.c — pipeline-parallel inference below the CLI
 * (dist/pp_infer.h, lmc_model_load_layers):
 *   1. the split: balanced by parameters (dist/pp_split.h), every stage at least one
 *      layer, P > layers refused; the stages' parameters sum to the
 *      model's (the tied embedding counted again on the last stage);
 *   2. the layer-range loader on llama-tiny (untied) and qwen2-tiny (tied):
 *      a stage binds its layers only, the embedding on the first, the
 *      norm and head on the last (qwen2: the embedding as the head there);
 *      the stages' weight bytes sum to the whole model's; empty or
 *      out-of-model ranges are refused;
 *   3. on 2 forked ranks (tcp): lmc_model_forward on each stage's view
 *      gives every rank the one-process prompt logits (1e-5 relative) and
 *      8 greedy tokens; lmc_model_forward_batch over 3 sequences (a
 *      prefill step of 7, 5 and 9 tokens with every row's logits, then a
 *      decode step) gives rank 0 the one-process logits (1e-5), and two
 *      more decode steps through the argmax and sampling variants (the
 *      last stage picks the ids from rank 0's parameters) the one-process
 *      ids; the steps are cut into micro-batches. */
#include "test.h"
#include "dist_spawn.h"
#include "model_greedy.h"
#include "dist/pp_infer.h"
#include "model/forward_batch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { NP = 11, NGEN = 8, NSEQ = 3, BS = 4, MB = 4 };
static const int LEN[NSEQ] = {7, 5, 9};

struct ref {
    const char *dir;
    float *logits;               /* (NP, V) */
    int32_t toks[NGEN];
    float *batch1, *batch2;      /* (sum LEN, V), (NSEQ, V) */
    int32_t am[NSEQ], sm[NSEQ];  /* the argmax and sampled steps' ids */
};

static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / den;
}

/* The batched steps: prefill (every row's logits) then one decode token
 * per sequence; logits into l1 (sum LEN, V) and l2 (NSEQ, V); then two
 * more decode steps through the argmax and the sampling variants (ids into
 * am and sm: on a pipeline the last stage picks them for rank 0). */
static lmc_status batch_steps(const struct lmc_model *m, const struct lmc_backend *be, float *l1, float *l2,
                              int32_t *am, int32_t *sm, lmc_err *err) {
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    lmc_status st = lmc_kv_pool_init(&pool, m, be, NSEQ * MB, BS, err);
    if (st) return st;
    if ((st = lmc_batch_acts_init(&ba, m, be, 32, NSEQ, MB, 32, err))) {
        lmc_kv_pool_free(&pool);
        return st;
    }
    int32_t ids[32], seq[32], pos[32], rows[32], bt[NSEQ * MB];
    for (int i = 0; i < NSEQ * MB; i++) bt[i] = i; /* sequence s: blocks s*MB .. */
    int64_t T = 0;
    for (int s = 0; s < NSEQ; s++)
        for (int p = 0; p < LEN[s]; p++, T++) {
            ids[T] = (int32_t)((T * 53 + 7 * s + 3) % m->cfg.vocab_size);
            seq[T] = s, pos[T] = p, rows[T] = (int32_t)T;
        }
    struct lmc_batch b = {T, ids, seq, pos, NSEQ, bt, MB, rows, T, NULL};
    st = lmc_model_forward_batch(m, be, &ba, &pool, &b, l1, err);
    for (int s = 0; s < NSEQ; s++) {
        ids[s] = (int32_t)((s * 101 + 5) % m->cfg.vocab_size);
        seq[s] = s, pos[s] = LEN[s], rows[s] = s;
    }
    struct lmc_batch d = {NSEQ, ids, seq, pos, NSEQ, bt, MB, rows, NSEQ, NULL};
    if (!st) st = lmc_model_forward_batch(m, be, &ba, &pool, &d, l2, err);
    for (int s = 0; s < NSEQ; s++) pos[s]++, ids[s] = (int32_t)((s * 31 + 9) % m->cfg.vocab_size);
    if (!st) st = lmc_model_forward_batch_argmax(m, be, &ba, &pool, &d, am, err);
    struct lmc_sample_row prm[NSEQ];
    for (int s = 0; s < NSEQ; s++) {
        pos[s]++, ids[s] = am[s];
        prm[s] = (struct lmc_sample_row){.temperature = 0.9 + 0.1 * s, .top_p = 0.95, .min_p = 0, .u = 0.1 + 0.3 * s,
                                         .top_k = s == 1 ? 5 : 0};
    }
    if (!st) st = lmc_model_forward_batch_sample(m, be, &ba, &pool, &d, prm, sm, err);
    lmc_batch_acts_free(&ba);
    lmc_kv_pool_free(&pool);
    return st;
}

static int run_rank(struct lmc_comm *c, int rank, void *arg) {
    const struct ref *r = arg;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) return 4;
    struct lmc_model m;
    struct lmc_pp_infer p;
    struct lmc_model_opts o = {.wdtype = LMC_WDTYPE_F32, .be = &be};
    if (lmc_pp_infer_load(&p, &m, r->dir, &o, c, 1, 0, NULL, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        return 5;
    }
    int64_t V = m.cfg.vocab_size, T = LEN[0] + LEN[1] + LEN[2];
    float *logits = calloc((size_t)(NP * V), sizeof(float));
    float *l1 = calloc((size_t)(T * V), sizeof(float)), *l2 = calloc((size_t)(NSEQ * V), sizeof(float));
    int32_t toks[NGEN] = {0}, am[NSEQ] = {0}, sm[NSEQ] = {0};
    int bad = 0;
    lmc_status st = model_greedy_run(&p.view, &be, NP, NGEN, logits, toks, &err);
    if (!st) st = lmc_pp_infer_check(&p, &err);
    if (!st) st = batch_steps(&p.view, &be, l1, l2, am, sm, &err);
    if (!st) st = lmc_pp_infer_check(&p, &err);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        bad = 1;
    } else {
        double e = rel_err(logits, r->logits, NP * V);
        if (!(e <= 1e-5)) bad = 1, fprintf(stderr, "rank %d: prompt logits rel err %.3g\n", rank, e);
        if (memcmp(toks, r->toks, sizeof toks)) bad = 1, fprintf(stderr, "rank %d: greedy tokens differ\n", rank);
        if (rank == 0) {
            double e1 = rel_err(l1, r->batch1, T * V), e2 = rel_err(l2, r->batch2, NSEQ * V);
            if (!(e1 <= 1e-5 && e2 <= 1e-5)) bad = 1, fprintf(stderr, "batched logits rel err %.3g / %.3g\n", e1, e2);
            if (memcmp(am, r->am, sizeof am) || memcmp(sm, r->sm, sizeof sm))
                bad = 1, fprintf(stderr, "argmax/sampled ids %d %d %d / %d %d %d vs %d %d %d / %d %d %d\n", am[0], am[1],
                                 am[2], sm[0], sm[1], sm[2], r->am[0], r->am[1], r->am[2], r->sm[0], r->sm[1], r->sm[2]);
        }
        if (p.steps != 4 || p.micro_batches < 5) /* the prefill step at least cut in two */
            bad = 1, fprintf(stderr, "rank %d: %lld steps in %lld micro-batches\n", rank, (long long)p.steps,
                             (long long)p.micro_batches);
        if (p.view.cfg.num_layers != p.l1 - p.l0 || p.l1 - p.l0 != 1) bad = 1;
    }
    lmc_pp_infer_free(&p);
    lmc_model_free(&m);
    free(logits), free(l1), free(l2);
    lmc_backend_cpu_free(&be);
    return bad;
}

static lmc_status count_bytes(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    if (t->required) *(int64_t *)user += t->numel;
    return LMC_OK;
}

static void test_plan(const char *dir) {
    struct lmc_model m;
    lmc_err err = {0};
    CHECK(lmc_model_load(&m, dir, NULL, &err) == LMC_OK);
    struct lmc_config c = m.cfg;
    int64_t b[9];
    CHECK(lmc_pp_infer_plan(&c, 2, b, &err) == LMC_OK && b[0] == 0 && b[1] == 1 && b[2] == 2);
    CHECK(lmc_pp_infer_plan(&c, 3, b, &err) == LMC_ERR_ARG && strstr(err.msg, "2 layers"));
    CHECK(lmc_pp_infer_plan(&c, 0, b, &err) == LMC_ERR_ARG);
    c.num_layers = 7; /* seven layers over 3 stages: each at least one, in order (test_mp_pp_split: the optimum) */
    CHECK(lmc_pp_infer_plan(&c, 3, b, &err) == LMC_OK);
    CHECK(b[0] == 0 && b[3] == 7);
    for (int s = 0; s < 3; s++) CHECK(b[s + 1] - b[s] >= 1);
    CHECK(lmc_pp_infer_plan(&c, 7, b, &err) == LMC_OK);
    for (int s = 0; s < 7; s++) CHECK(b[s + 1] - b[s] == 1);
    int64_t total = 0, sum = 0;
    CHECK(lmc_arch_walk(m.arch, &c, count_bytes, &total, &err) == LMC_OK);
    CHECK(lmc_pp_infer_plan(&c, 3, b, &err) == LMC_OK);
    for (int s = 0; s < 3; s++) sum += lmc_pp_infer_stage_params(&c, b, 3, s);
    bool tied = m.w.head.w.data == m.w.tok_emb.data;
    CHECK_MSG(sum == total + (tied ? c.vocab_size * c.hidden_size : 0), "%s: stages %lld, model %lld", dir,
              (long long)sum, (long long)total);
    lmc_model_free(&m);
}

static void test_loader(const char *dir) {
    struct lmc_model whole, s0, s1, x;
    lmc_err err = {0};
    CHECK(lmc_model_load(&whole, dir, NULL, &err) == LMC_OK);
    bool tied = whole.w.head.w.data == whole.w.tok_emb.data;
    CHECK_MSG(lmc_model_load_layers(&s0, dir, NULL, 0, 1, &err) == LMC_OK, "%s", err.msg);
    CHECK_MSG(lmc_model_load_layers(&s1, dir, NULL, 1, 2, &err) == LMC_OK, "%s", err.msg);
    CHECK(s0.w.tok_emb.data && s0.w.layers[0].lin[LMC_L_Q].w.data && !s0.w.layers[1].lin[LMC_L_Q].w.data);
    CHECK(!s0.w.norm_f && !s0.w.layers[1].vec[LMC_V_NORM1]);
    CHECK(!s1.w.layers[0].lin[LMC_L_Q].w.data && s1.w.layers[1].lin[LMC_L_Q].w.data && s1.w.norm_f &&
          s1.w.head.w.data);
    CHECK(tied ? s1.w.tok_emb.data == s1.w.head.w.data : !s1.w.tok_emb.data);
    size_t emb = (size_t)whole.cfg.vocab_size * (size_t)whole.cfg.hidden_size * sizeof(float);
    CHECK_MSG(s0.weight_bytes + s1.weight_bytes == whole.weight_bytes + (tied ? emb : 0), "%s: %zu + %zu vs %zu",
              dir, s0.weight_bytes, s1.weight_bytes, whole.weight_bytes);
    CHECK(s0.weight_bytes < whole.weight_bytes / 2 + emb && s1.weight_bytes < whole.weight_bytes / 2 + emb);
    CHECK(lmc_model_load_layers(&x, dir, NULL, 1, 1, &err) == LMC_ERR_ARG && strstr(err.msg, "empty"));
    CHECK(lmc_model_load_layers(&x, dir, NULL, 0, 3, &err) == LMC_ERR_ARG && strstr(err.msg, "2 layers"));
    CHECK(lmc_model_load_layers(&x, dir, NULL, -1, 1, &err) == LMC_ERR_ARG);
    lmc_model_free(&s0);
    lmc_model_free(&s1);
    lmc_model_free(&whole);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    char tmp[] = "/tmp/lmc_test_mp_pp_infer_XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    const char *dirs[] = {"tests/fixtures/llama-tiny", "tests/fixtures/qwen2-tiny"};
    for (int k = 0; k < 2; k++) {
        test_plan(dirs[k]);
        test_loader(dirs[k]);
        struct lmc_model m;
        struct lmc_model_opts o = {.wdtype = LMC_WDTYPE_F32, .be = &be};
        CHECK(lmc_model_load(&m, dirs[k], &o, &err) == LMC_OK);
        int64_t V = m.cfg.vocab_size, T = LEN[0] + LEN[1] + LEN[2];
        struct ref r = {dirs[k], malloc(sizeof(float) * (size_t)(NP * V)), {0},
                        malloc(sizeof(float) * (size_t)(T * V)), malloc(sizeof(float) * (size_t)(NSEQ * V)), {0}, {0}};
        CHECK(model_greedy_run(&m, &be, NP, NGEN, r.logits, r.toks, &err) == LMC_OK);
        CHECK(batch_steps(&m, &be, r.batch1, r.batch2, r.am, r.sm, &err) == LMC_OK);
        struct spawn_opts so = {.world = 2};
        int codes[2];
        spawn(&so, run_rank, &r, tmp, codes);
        for (int i = 0; i < 2; i++) {
            char path[600], buf[512] = "";
            snprintf(path, sizeof path, "%s/rank%d.err", tmp, i);
            FILE *f = fopen(path, "r");
            if (f) {
                size_t n = fread(buf, 1, sizeof buf - 1, f);
                buf[n] = 0;
                fclose(f);
            }
            CHECK_MSG(codes[i] == 0, "%s rank %d exit %d: %s", dirs[k], i, codes[i], buf);
        }
        free(r.logits), free(r.batch1), free(r.batch2);
        lmc_model_free(&m);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd)) {}
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_pp_infer");
}
