/* test_weights_huge.c — the huge-page weight arena (model/weights_huge.c):
 * a model loaded for the CPU backend has its dense float matrices in one
 * 2 MB-aligned arena, in decode's reading order, with the same bytes as
 * the same model loaded without a backend (mapped in place), and gives
 * bit-identical logits (a prompt, then decode steps, at 2 threads). Cases:
 * F32 files used in place (file pages dropped), BF16/F16 conversions on
 * load (owned buffers moved and freed), a tied head (gpt2: the embedding
 * follows the head into the arena), experts (mixtral, qwen2moe with a
 * shared expert). */
#include "model/model.h"
#include "ops/backend.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static size_t msize(const struct lmc_mat *w) {
    return (size_t)(w->rows * w->cols) * (size_t)lmc_dtype_size(w->dtype);
}

/* Calls f on every dense float matrix of both models, in decode order. */
struct walk {
    const char *lo, *prev;
    int64_t n, same, ordered, in_arena;
};
static void visit(struct walk *s, const struct lmc_mat *a, const struct lmc_mat *b) {
    if (!a->data) return;
    s->n++;
    s->same += a->dtype == b->dtype && a->rows == b->rows && a->cols == b->cols && !memcmp(a->data, b->data, msize(a));
    const char *p = a->data;
    if (!s->lo) s->lo = p;
    s->in_arena += p >= s->lo;
    s->ordered += !s->prev || p > s->prev;
    s->prev = p;
}

static void walk_models(struct walk *s, const struct lmc_model *a, const struct lmc_model *b) {
    for (int64_t l = 0; l < a->cfg.num_layers; l++) {
        const struct lmc_block_w *x = &a->w.layers[l], *y = &b->w.layers[l];
        for (int i = 0; i < LMC_L_N; i++) visit(s, &x->lin[i].w, &y->lin[i].w);
        for (int64_t e = 0; x->experts && e < a->cfg.num_experts * LMC_X_N; e++)
            visit(s, &x->experts[e].w, &y->experts[e].w);
    }
    visit(s, &a->w.head.w, &b->w.head.w);
}

static void run(const char *dir, enum lmc_wdtype wd, const struct lmc_backend *cpu) {
    struct lmc_model a, b;
    lmc_err err = {0};
    struct lmc_model_opts oa = {.wdtype = wd, .be = cpu}, ob = {.wdtype = wd, .be = NULL};
    if (lmc_model_load(&a, dir, &oa, &err) != LMC_OK) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        return;
    }
    if (lmc_model_load(&b, dir, &ob, &err) != LMC_OK) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        lmc_model_free(&a);
        return;
    }
    struct walk s = {0};
    walk_models(&s, &a, &b);
    CHECK_MSG(s.n > 0 && s.same == s.n, "%s: %lld of %lld matrices equal", dir, (long long)s.same, (long long)s.n);
    CHECK_MSG(s.ordered == s.n && s.in_arena == s.n, "%s: %lld of %lld in decode order", dir, (long long)s.ordered,
              (long long)s.n);
    CHECK_MSG(((uintptr_t)s.lo & (((uintptr_t)2 << 20) - 1)) == 0, "%s: arena at %p, not on 2 MB", dir,
              (const void *)s.lo);
    struct walk t = {0}; /* the reference stays where it was: not one ordered arena from a 2 MB boundary */
    walk_models(&t, &b, &a);
    CHECK(t.n == s.n);
    /* the embedding of a tied model reads the head's copy */
    if (b.w.head.w.data == b.w.tok_emb.data) CHECK(a.w.head.w.data == a.w.tok_emb.data);
    else CHECK(a.w.tok_emb.data != a.w.head.w.data);
    CHECK(a.w.tok_emb.data && !memcmp(a.w.tok_emb.data, b.w.tok_emb.data, msize(&b.w.tok_emb)));

    /* logits: a 7-token prompt, then 4 decode steps */
    int64_t V = a.cfg.vocab_size, n = 11, ctx = 32;
    int32_t ids[11];
    uint64_t r = 17;
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&r) % (uint64_t)V);
    float *la = malloc((size_t)(n * V) * sizeof *la), *lb = malloc((size_t)(n * V) * sizeof *lb);
    const struct lmc_model *ms[2] = {&a, &b};
    float *ls[2] = {la, lb};
    for (int k = 0; k < 2; k++) {
        struct lmc_kv kv;
        struct lmc_acts ac;
        CHECK(lmc_kv_init(&kv, ms[k], cpu, ctx, &err) == LMC_OK);
        CHECK(lmc_acts_init(&ac, ms[k], cpu, 16, 16, &err) == LMC_OK);
        CHECK(lmc_model_forward(ms[k], cpu, &ac, &kv, ids, 7, 0, ls[k], true, &err) == LMC_OK);
        for (int64_t i = 7; i < n; i++)
            CHECK(lmc_model_forward(ms[k], cpu, &ac, &kv, ids + i, 1, i, ls[k] + i * V, true, &err) == LMC_OK);
        lmc_kv_free(&kv);
        lmc_acts_free(&ac);
    }
    bool nonzero = false;
    for (int64_t i = 0; i < n * V; i++) nonzero |= la[i] != 0;
    CHECK_MSG(nonzero && !memcmp(la, lb, (size_t)(n * V) * sizeof *la), "%s (wdtype %d): logits differ", dir, (int)wd);
    printf("  %-32s wdtype %d: %lld matrices in the arena, logits bit-identical\n", dir, (int)wd, (long long)s.n);
    free(la);
    free(lb);
    lmc_model_free(&a);
    lmc_model_free(&b);
}

int main(void) {
    struct lmc_backend cpu;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&cpu, 2, &err) != LMC_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    static const char *dirs[] = {"tests/fixtures/llama-tiny", "tests/fixtures/gpt2-tiny", "tests/fixtures/mixtral-tiny",
                                 "tests/fixtures/qwen2moe-tiny"};
    for (int i = 0; i < 4; i++) {
        run(dirs[i], LMC_WDTYPE_AUTO, &cpu);
        run(dirs[i], i % 2 ? LMC_WDTYPE_F16 : LMC_WDTYPE_BF16, &cpu);
    }
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_weights_huge");
}
