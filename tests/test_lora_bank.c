/* test_lora_bank.c — multi-adapter serving (train/lora_bank.h): per-row
 * adapters in lmc_linear (two slots of ranks 3 and 5, groups of rows in an
 * odd-sized input, row chunks of 8, with and without the backend's fused
 * matmul_add; fwd, fwd_res and swiglu) against float64; on llama-tiny a
 * batch of five sequences under base / adapter 1 (the PEFT fixture) /
 * adapter 2 (random, other targets and rank) gives, row for row, the
 * logits each sequence gets alone with that adapter bound the ordinary
 * way (lmc_lora_bind), and so on gpt2-tiny (Conv1D adapters on the fused
 * c_attn, three parts sharing one A); bad adapter ids and non-contiguous
 * groups are errors; the prefix cache keeps namespaces apart; and the scheduler
 * serves a mixed batch (held together by an event gate) with exactly the
 * greedy tokens of each request run alone, without sharing prefix blocks
 * across adapters. */
#include "test.h"
#include "core/core.h"
#include "infer/paged_kv.h"
#include "infer/scheduler.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"
#include "train/lora_bank.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/llama-tiny"

static uint64_t seed = 4242;
static float *rvec(int64_t n) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = test_rand(&seed);
    return v;
}

/* ---- the linear: rows 0..4 base, 5..16 adapter 2, 17..36 adapter 1 */
enum { M = 37, K = 29, N = 23, NA = 2 };
static const int64_t R[NA] = {3, 5};
static const float SC[NA] = {0.75f, -1.5f};

static void test_linear(const struct lmc_backend *be0, bool fused) {
    struct lmc_backend be = *be0;
    if (!fused) be.matmul_add = NULL, be.matmul_swiglu = NULL, be.matmul_multi = NULL;
    float *x = rvec(M * K), *w = rvec(N * K), *w2 = rvec(N * K), *bias = rvec(N), *res = rvec(M * N);
    float *scratch = malloc((size_t)(8 * (2 * 5 + N)) * sizeof(float));
    float *a[NA], *b[NA], *diag[NA];
    struct lmc_adapter slots[NA], slots2[NA];
    for (int j = 0; j < NA; j++) {
        a[j] = rvec(R[j] * K);
        b[j] = rvec(N * R[j]);
        diag[j] = calloc((size_t)(R[j] * R[j]), sizeof(float));
        for (int64_t q = 0; q < R[j]; q++) diag[j][q * R[j] + q] = SC[j];
        slots[j] = (struct lmc_adapter){.a = {LMC_DTYPE_F32, R[j], K, a[j]}, .b = {LMC_DTYPE_F32, N, R[j], b[j]},
                                        .s = {LMC_DTYPE_F32, R[j], R[j], diag[j]}, .scale = SC[j],
                                        .scratch = scratch, .scratch_rows = 8};
    }
    /* the second linear: adapter 1 leaves it alone */
    slots2[0] = (struct lmc_adapter){0};
    slots2[1] = slots[1];
    int64_t row0[NA] = {5, 17}, rows[NA] = {12, 20};
    int32_t id[NA] = {2, 1};
    struct lmc_row_groups g = {.n_ids = NA, .n = NA, .total = M, .row0 = row0, .rows = rows, .id = id};
    struct lmc_linear L = {0}, L2 = {0};
    L.w = (struct lmc_mat){LMC_DTYPE_F32, N, K, w};
    L.bias = bias;
    L.slots = slots;
    L.n_slots = NA;
    L.groups = &g;
    L2 = L;
    L2.w.data = w2;
    L2.slots = slots2;
    /* float64 references */
    double *y1 = malloc((size_t)(M * N) * sizeof *y1), *y2 = malloc((size_t)(M * N) * sizeof *y2);
    for (int64_t m = 0; m < M; m++) {
        int ad = m < 5 ? 0 : m < 17 ? 2 : 1;
        for (int64_t n = 0; n < N; n++) {
            double s1 = bias[n], s2 = bias[n];
            for (int64_t k = 0; k < K; k++) {
                s1 += (double)x[m * K + k] * w[n * K + k];
                s2 += (double)x[m * K + k] * w2[n * K + k];
            }
            if (ad) {
                int j = ad - 1;
                double lo = 0;
                for (int64_t q = 0; q < R[j]; q++) {
                    double u = 0;
                    for (int64_t k = 0; k < K; k++) u += (double)x[m * K + k] * a[j][q * K + k];
                    lo += SC[j] * u * b[j][n * R[j] + q];
                }
                s1 += lo;
                if (ad == 2) s2 += lo;
            }
            y1[m * N + n] = s1;
            y2[m * N + n] = s2;
        }
    }
    float *o1 = malloc((size_t)(M * N) * sizeof(float)), *o2 = malloc((size_t)(M * N) * sizeof(float));
    const struct lmc_linear *Ls[2] = {&L, &L2};
    float *ys[2] = {o1, o2};
    lmc_linear_fwd(&be, 2, Ls, ys, x, M);
    double e1 = test_rel_err_f32_f64(o1, y1, M * N), e2 = test_rel_err_f32_f64(o2, y2, M * N);
    CHECK_MSG(e1 < 1e-5 && e2 < 1e-5, "fused %d: per-row adapters vs float64 %g %g", fused, e1, e2);
    /* fwd_res in place: y = res + x W^T + adapters */
    float *tmp = malloc((size_t)(M * N) * sizeof(float));
    memcpy(o1, res, (size_t)(M * N) * sizeof(float));
    lmc_linear_fwd_res(&be, &L, o1, o1, x, M, tmp);
    double *yr = malloc((size_t)(M * N) * sizeof *yr);
    for (int64_t i = 0; i < M * N; i++) yr[i] = y1[i] + res[i];
    double er = test_rel_err_f32_f64(o1, yr, M * N);
    CHECK_MSG(er < 1e-5, "fused %d: fwd_res with per-row adapters %g", fused, er);
    /* swiglu: silu(gate) * up, both with per-row adapters (no bias) */
    L.bias = L2.bias = NULL;
    lmc_linear_fwd_swiglu(&be, &L, &L2, o1, x, M, tmp);
    double es = 0;
    for (int64_t i = 0; i < M * N; i++) {
        double gt = y1[i] - bias[i % N], up = y2[i] - bias[i % N];
        double want = gt / (1 + exp(-gt)) * up;
        es = LMC_MAX(es, fabs(o1[i] - want) / (1 + fabs(want)));
    }
    CHECK_MSG(es < 1e-5, "fused %d: swiglu with per-row adapters %g", fused, es);
    /* no groups this step: the base alone */
    g.n = 0;
    lmc_linear_fwd(&be, 1, Ls, ys, x, M);
    double eb = 0;
    for (int64_t i = 0; i < M * N; i++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += (double)x[(i / N) * K + k] * w[(i % N) * K + k];
        eb = LMC_MAX(eb, fabs(o1[i] - s) / (1 + fabs(s)));
    }
    CHECK_MSG(eb < 1e-5, "no groups: base only %g", eb);
    for (int j = 0; j < NA; j++) free(a[j]), free(b[j]), free(diag[j]);
    free(x), free(w), free(w2), free(bias), free(res), free(scratch), free(y1), free(y2), free(o1), free(o2);
    free(tmp), free(yr);
}

/* ---- the model */

/* A second adapter on other targets with rank 3, A and B random. */
static bool make_adapter2(struct lmc_lora *lo, const struct lmc_config *c, const char *targets) {
    struct lmc_lora_config lc = {.r = 3, .alpha = 6};
    lmc_err err = {0};
    if (lmc_lora_parse_targets(&lc, targets, &err) || lmc_lora_create(lo, &lc, c, 5, &err)) {
        CHECK_MSG(0, "adapter 2: %s", err.msg);
        return false;
    }
    for (int i = 0; i < lo->n_mods; i++) {
        struct lmc_lora_module *md = &lo->mods[i];
        for (int64_t k = 0; k < md->out * lo->cfg.r; k++) md->b[k] = 0.2f * test_rand(&seed);
        for (int64_t k = 0; k < lo->cfg.r * md->in; k++) md->a[k] = 0.5f * test_rand(&seed);
    }
    return true;
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = LMC_MAX(num, fabs((double)a[i] - b[i]));
        den = LMC_MAX(den, fabs((double)b[i]));
    }
    return num / den;
}

enum { NS = 5, BS = 4, MAXB = 10, MAXLEN = 31 };
static const int SEQ_AD[NS] = {2, 0, 1, 2, 1};

static void test_model(struct lmc_model *m, const struct lmc_backend *be, const struct lmc_lora *const los[2]) {
    lmc_err err = {0};
    int64_t V = m->cfg.vocab_size, len[NS] = {13, 29, 7, 31, 18}, cut[NS] = {6, 17, 7, 20, 1};
    int32_t ids[NS][MAXLEN];
    uint64_t s2 = 17;
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < MAXLEN; i++) ids[s][i] = (int32_t)(test_rng_next(&s2) % (uint64_t)V);
    /* references: each sequence alone, its adapter bound the ordinary way */
    float *ref[NS];
    struct lmc_kv kv;
    struct lmc_acts acts;
    CHECK(lmc_kv_init(&kv, m, be, 64, &err) == LMC_OK);
    CHECK(lmc_acts_init(&acts, m, be, 64, 64, &err) == LMC_OK);
    for (int s = 0; s < NS; s++) {
        struct lmc_lora_binding bind;
        double mul = 1;
        const struct lmc_lora *one = SEQ_AD[s] ? los[SEQ_AD[s] - 1] : NULL;
        if (one) CHECK_MSG(!lmc_lora_bind(&bind, &m->w, &m->cfg, &one, &mul, 1, be, &err), "bind: %s", err.msg);
        ref[s] = malloc((size_t)(len[s] * V) * sizeof(float));
        CHECK_MSG(lmc_model_forward(m, be, &acts, &kv, ids[s], len[s], 0, ref[s], true, &err) == LMC_OK, "%s", err.msg);
        if (one) lmc_lora_unbind(&bind, &m->w, &m->cfg);
        if (one) { /* the adapter matters */
            float *base = malloc((size_t)(len[s] * V) * sizeof(float));
            CHECK(lmc_model_forward(m, be, &acts, &kv, ids[s], len[s], 0, base, true, &err) == LMC_OK);
            double d = max_rel(base, ref[s], len[s] * V);
            CHECK_MSG(d > 1e-3, "sequence %d: adapter %d changes the logits by %g only", s, SEQ_AD[s], d);
            free(base);
        }
    }
    struct lmc_lora_bank bank;
    double muls[2] = {1, 1};
    CHECK_MSG(!lmc_lora_bank_bind(&bank, m, los, muls, 2, be, &err), "bank: %s", err.msg);
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    CHECK(lmc_kv_pool_init(&pool, m, be, NS * MAXB + 3, BS, &err) == LMC_OK);
    CHECK(lmc_batch_acts_init(&ba, m, be, 128, NS, MAXB, 128, &err) == LMC_OK);
    int32_t bt[NS * MAXB];
    for (int i = 0; i < NS * MAXB; i++) bt[i] = (int32_t)((i * 7 + 3) % (NS * MAXB + 3));
    float *logits = malloc((size_t)(128 * V) * sizeof(float));
    int32_t bid[128], bseq[128], bpos[128], rows[128], ad[NS];
    for (int s = 0; s < NS; s++) ad[s] = SEQ_AD[s];
    double worst = 0;
    for (int stepi = 0; stepi < 2; stepi++) {
        int64_t T = 0;
        for (int want = 0; want <= 2; want++) /* tokens grouped by adapter */
            for (int s = 0; s < NS; s++) {
                if (SEQ_AD[s] != want) continue;
                int64_t p0 = stepi ? cut[s] : 0, p1 = stepi ? len[s] : cut[s];
                for (int64_t p = p0; p < p1; p++, T++) {
                    bid[T] = ids[s][p];
                    bseq[T] = s;
                    bpos[T] = (int32_t)p;
                    rows[T] = (int32_t)T;
                }
            }
        struct lmc_batch b = {T, bid, bseq, bpos, NS, bt, MAXB, rows, T, ad};
        CHECK_MSG(lmc_model_forward_batch(m, be, &ba, &pool, &b, logits, &err) == LMC_OK, "%s", err.msg);
        for (int64_t t = 0; t < T; t++)
            worst = LMC_MAX(worst, max_rel(logits + t * V, ref[bseq[t]] + bpos[t] * V, V));
    }
    CHECK_MSG(worst <= 1e-5, "mixed-adapter batch vs each sequence alone: %g", worst);
    /* bad input: an adapter the bank lacks; an adapter's tokens split */
    int32_t bad[NS] = {3, 0, 0, 0, 0};
    struct lmc_batch b1 = {1, bid, bseq, bpos, NS, bt, MAXB, rows, 1, bad};
    CHECK(lmc_model_forward_batch(m, be, &ba, &pool, &b1, logits, &err) == LMC_ERR_ARG && strstr(err.msg, "adapter 3"));
    int32_t split_ids[3] = {1, 2, 3}, split_seq[3] = {0, 1, 3}, split_pos[3] = {0, 0, 0}; /* adapters 2, 0, 2 */
    struct lmc_batch b2 = {3, split_ids, split_seq, split_pos, NS, bt, MAXB, rows, 3, ad};
    CHECK(lmc_model_forward_batch(m, be, &ba, &pool, &b2, logits, &err) == LMC_ERR_ARG &&
          strstr(err.msg, "not contiguous"));
    CHECK(m->row_groups && m->row_groups->n == 0);
    /* a second bank on the same model is refused */
    struct lmc_lora_bank bank2;
    CHECK(lmc_lora_bank_bind(&bank2, m, los, muls, 2, be, &err) == LMC_ERR_UNSUPPORTED);
    lmc_lora_bank_unbind(&bank, m);
    CHECK(m->row_groups == NULL && m->w.layers[0].lin[LMC_L_Q].n_slots == 0);
    free(logits);
    lmc_batch_acts_free(&ba);
    lmc_kv_pool_free(&pool);
    lmc_acts_free(&acts);
    lmc_kv_free(&kv);
    for (int s = 0; s < NS; s++) free(ref[s]);
}

/* ---- the prefix cache's namespaces */
static void test_namespaces(struct lmc_model *m, const struct lmc_backend *be) {
    struct lmc_paged_kv kv;
    lmc_err err = {0};
    CHECK(lmc_paged_kv_init(&kv, m, be, 16, 4, true, &err) == LMC_OK);
    int32_t toks[12] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct lmc_kv_seq a, b, c, d;
    lmc_kv_seq_init(&a), lmc_kv_seq_init(&b), lmc_kv_seq_init(&c), lmc_kv_seq_init(&d);
    lmc_kv_seq_set_namespace(&a, 77);
    CHECK(lmc_kv_seq_reserve(&kv, &a, 0, 12));
    lmc_kv_seq_commit(&kv, &a, toks, 12);
    CHECK(lmc_kv_seq_match_prefix(&kv, &b, toks, 12, 12) == 0); /* namespace 0 */
    lmc_kv_seq_set_namespace(&c, 78);
    CHECK(lmc_kv_seq_match_prefix(&kv, &c, toks, 12, 12) == 0);
    lmc_kv_seq_set_namespace(&d, 77);
    CHECK(lmc_kv_seq_match_prefix(&kv, &d, toks, 12, 12) == 12);
    /* released and matched again: still in its namespace */
    lmc_kv_seq_release(&kv, &d);
    CHECK(d.last_hash == 77 && lmc_kv_seq_match_prefix(&kv, &d, toks, 12, 8) == 8);
    lmc_kv_seq_free(&kv, &a), lmc_kv_seq_free(&kv, &b), lmc_kv_seq_free(&kv, &c), lmc_kv_seq_free(&kv, &d);
    lmc_paged_kv_free(&kv);
}

/* ---- the scheduler */
#define NREQ 6
#define MAXGEN 12
struct result {
    int32_t ids[MAXGEN];
    int n;
    bool done, gate;
    int64_t cached;
    char finish[16];
};
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int n_done;
static bool gate_open;

static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct result *r = user;
    pthread_mutex_lock(&mu);
    if (ev->kind == LMC_EV_TOKEN && r->n < MAXGEN) r->ids[r->n++] = ev->token;
    if (ev->kind == LMC_EV_DONE || ev->kind == LMC_EV_ERROR) {
        snprintf(r->finish, sizeof r->finish, "%s", ev->kind == LMC_EV_DONE ? ev->finish_reason : "error");
        r->cached = ev->cached_prompt_tokens;
        r->done = true;
        n_done++;
        pthread_cond_broadcast(&cv);
    }
    /* the gated request holds the scheduler thread at its first token until
     * every other request is submitted: they all join the next step */
    if (ev->kind == LMC_EV_TOKEN && r->gate && r->n == 1)
        while (!gate_open) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void wait_done(int n) {
    pthread_mutex_lock(&mu);
    while (n_done < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void submit(struct lmc_sched *s, const int32_t *p, int64_t n, int adapter, struct result *r) {
    struct lmc_request rq;
    memset(&rq, 0, sizeof rq);
    lmc_sampler_defaults(&rq.sampling);
    rq.sampling.temperature = 0;
    rq.max_tokens = MAXGEN;
    rq.ignore_eos = true;
    rq.top_logprobs = -1;
    rq.adapter = adapter;
    lmc_err err = {0};
    CHECK_MSG(lmc_sched_submit(s, p, n, &rq, on_event, r, NULL, &err) == LMC_OK, "%s", err.msg);
}

static void test_sched(struct lmc_model *m, const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                       const struct lmc_lora *const los[2]) {
    lmc_err err = {0};
    struct lmc_lora_bank bank;
    double muls[2] = {1, 1};
    if (lmc_lora_bank_bind(&bank, m, los, muls, 2, be, &err)) {
        CHECK_MSG(0, "bank: %s", err.msg);
        return;
    }
    struct lmc_sched_opts o;
    lmc_sched_opts_default(&o);
    o.block_size = 4;
    o.ctx = 64;
    o.max_batch = 8;
    struct lmc_sched *s = NULL;
    CHECK_MSG(lmc_sched_init(&s, m, be, tok, &o, &err) == LMC_OK, "%s", err.msg);
    if (!s) return;
    int32_t prompts[NREQ][20];
    int64_t np[NREQ];
    int ad[NREQ] = {0, 1, 2, 2, 1, 0};
    uint64_t s2 = 3;
    for (int i = 0; i < NREQ; i++) {
        np[i] = 9 + i * 2;
        for (int j = 0; j < np[i]; j++) prompts[i][j] = (int32_t)(1 + test_rng_next(&s2) % 200);
    }
    /* alone, one at a time (no prefix shared: the prompts differ) */
    struct result alone[NREQ], mixed[NREQ];
    memset(alone, 0, sizeof alone);
    memset(mixed, 0, sizeof mixed);
    n_done = 0;
    for (int i = 0; i < NREQ; i++) {
        submit(s, prompts[i], np[i], ad[i], &alone[i]);
        wait_done(i + 1);
    }
    struct lmc_sched_stats st;
    CHECK(lmc_sched_wait_idle(s, 60, &st));
    /* the same prompts under another adapter: different tokens, no cache hit */
    struct result other[NREQ];
    memset(other, 0, sizeof other);
    n_done = 0;
    for (int i = 0; i < NREQ; i++) {
        submit(s, prompts[i], np[i], (ad[i] + 1) % 3, &other[i]);
        wait_done(i + 1);
        CHECK_MSG(other[i].cached == 0, "request %d under adapter %d found %lld cached tokens of adapter %d",
                  i, (ad[i] + 1) % 3, (long long)other[i].cached, ad[i]);
    }
    int differ = 0;
    for (int i = 0; i < NREQ; i++) differ += memcmp(other[i].ids, alone[i].ids, sizeof alone[i].ids) != 0;
    CHECK_MSG(differ >= NREQ - 1, "adapters change the tokens (%d of %d differ)", differ, NREQ);
    /* mixed: request 0 holds the scheduler at its first token until all are in */
    n_done = 0;
    gate_open = false;
    mixed[0].gate = true;
    submit(s, prompts[0], np[0], ad[0], &mixed[0]);
    for (int i = 1; i < NREQ; i++) submit(s, prompts[i], np[i], ad[i], &mixed[i]);
    pthread_mutex_lock(&mu);
    gate_open = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    wait_done(NREQ);
    for (int i = 0; i < NREQ; i++) {
        CHECK_MSG(mixed[i].n == MAXGEN && !memcmp(mixed[i].ids, alone[i].ids, sizeof alone[i].ids),
                  "request %d (adapter %d): mixed batch tokens differ from alone (%d tokens, %s)", i, ad[i],
                  mixed[i].n, mixed[i].finish);
    }
    CHECK(lmc_sched_wait_idle(s, 60, &st));
    /* an adapter the model lacks is refused at submit */
    struct lmc_request rq;
    memset(&rq, 0, sizeof rq);
    lmc_sampler_defaults(&rq.sampling);
    rq.max_tokens = 2;
    rq.adapter = 3;
    struct result dummy = {0};
    CHECK(lmc_sched_submit(s, prompts[0], np[0], &rq, on_event, &dummy, NULL, &err) == LMC_ERR_ARG);
    lmc_sched_free(s);
    lmc_lora_bank_unbind(&bank, m);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_linear(&be, true);
    test_linear(&be, false);
    struct lmc_model m;
    struct lmc_lora a1 = {0}, a2 = {0};
    if (lmc_model_load(&m, FIX, NULL, &err) || lmc_lora_load(&a1, FIX "/lora", &m.cfg, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_lora_bank");
    }
    struct lmc_tokenizer *tok = NULL;
    if (lmc_tokenizer_load(&tok, FIX, &err)) CHECK_MSG(0, "%s", err.msg);
    if (tok && make_adapter2(&a2, &m.cfg, "k_proj,o_proj,gate_proj,up_proj")) {
        const struct lmc_lora *los[2] = {&a1, &a2};
        test_model(&m, &be, los);
        test_namespaces(&m, &be);
        test_sched(&m, &be, tok, los);
        lmc_lora_free(&a2);
    }
    if (tok) lmc_tokenizer_free(tok);
    lmc_lora_free(&a1);
    lmc_model_free(&m);
    /* GPT-2: Conv1D (fan_in_fan_out) adapters on the fused c_attn (three
     * parts sharing one A) next to a second adapter on c_attn and c_fc */
    const char *g2 = "tests/fixtures/gpt2-tiny";
    if (lmc_model_load(&m, g2, NULL, &err) || lmc_lora_load(&a1, "tests/fixtures/gpt2-tiny/lora_train", &m.cfg, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_lora_bank");
    }
    if (make_adapter2(&a2, &m.cfg, "c_attn,c_fc")) {
        const struct lmc_lora *los[2] = {&a1, &a2};
        test_model(&m, &be, los);
        lmc_lora_free(&a2);
    }
    lmc_lora_free(&a1);
    lmc_model_free(&m);
    lmc_backend_cpu_free(&be);
    return test_finish("test_lora_bank");
}
