/* pp_split.c — the pipeline stage boundaries (see pp_split.h): a model's
 * per-layer parameters from its tensor table, the min-max cut of them
 * into chunks (a binary search on the largest chunk, each candidate
 * checked by a greedy cut), --pp-layers' parser, and a stage's chunks. */
#include "dist/pp_split.h"
#include "core/core.h"
#include "model/arch.h"

#include <stdlib.h>
#include <string.h>

struct walk {
    struct lmc_pp_costs *k;
    int64_t tok, head;
    bool head_listed;
};

static lmc_status count_one(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct walk *w = user;
    if (t->layer >= 0) {
        if (t->layer < w->k->L) w->k->layer[t->layer] += t->numel;
        return LMC_OK;
    }
    switch (t->spec->kind) {
    case LMC_TK_TOK_EMB: w->tok += t->numel, w->k->first += t->numel; break;
    case LMC_TK_POS_EMB: w->k->first += t->numel; break;
    case LMC_TK_HEAD: w->head = t->numel, w->head_listed = t->required; break;
    default: w->k->last += t->numel; break; /* the final norm */
    }
    return LMC_OK;
}

lmc_status lmc_pp_costs_init(struct lmc_pp_costs *k, const struct lmc_config *c, lmc_err *err) {
    memset(k, 0, sizeof *k);
    if (c->num_layers < 1 || c->num_layers > (INT64_C(1) << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "pipeline split: %lld layers", (long long)c->num_layers);
    k->L = c->num_layers;
    k->layer = calloc((size_t)k->L, sizeof *k->layer);
    if (!k->layer) return lmc_err_set(err, LMC_ERR_OOM, "pipeline split: out of memory");
    struct walk w = {k, 0, 0, false};
    lmc_status st = lmc_arch_walk(lmc_arch_of(c), c, count_one, &w, err);
    if (st) {
        lmc_pp_costs_free(k);
        return st;
    }
    bool tied = c->tie_word_embeddings || !w.head_listed;
    k->last += tied ? w.tok : w.head; /* a tied head: the embedding matrix, held again on the last stage */
    k->shared = tied ? w.tok : 0;
    return LMC_OK;
}

void lmc_pp_costs_free(struct lmc_pp_costs *k) {
    free(k->layer);
    memset(k, 0, sizeof *k);
}

int64_t lmc_pp_costs_chunk(const struct lmc_pp_costs *k, int64_t l0, int64_t l1) {
    int64_t p = 0;
    for (int64_t l = l0; l < l1; l++) p += k->layer[l];
    if (l0 == 0) p += k->first;
    if (l1 == k->L) p += k->last;
    if (l0 == 0 && l1 == k->L) p -= k->shared;
    return p;
}

/* The greedy cut with no chunk above X: each chunk takes layers while it
 * stays within X and leaves one layer to each chunk after it. True when
 * every chunk (the last takes the rest) is within X; then it is in bounds.
 * Some cut into K chunks within X exists exactly when this one is (each
 * greedy boundary is at or after any such cut's, so the last chunk is a
 * part of that cut's last). */
static bool cut_within(const struct lmc_pp_costs *k, const int64_t *pre, int K, int64_t X, int64_t *bounds) {
    int64_t L = k->L, b = 0;
    bounds[0] = 0;
    for (int j = 0; j < K - 1; j++) {
        int64_t extra = b == 0 ? k->first : 0, cap = L - (K - 1 - j), e = b + 1;
        if (pre[e] - pre[b] + extra > X) return false;
        while (e < cap && pre[e + 1] - pre[b] + extra <= X) e++;
        bounds[j + 1] = b = e;
    }
    bounds[K] = L;
    return lmc_pp_costs_chunk(k, b, L) <= X;
}

static int64_t cost_of(const struct lmc_pp_costs *k, const int64_t *pre, int64_t b, int64_t e) {
    return pre[e] - pre[b] + (b == 0 ? k->first : 0) + (e == k->L ? k->last : 0) - (b == 0 && e == k->L ? k->shared : 0);
}

/* Among the cuts within X (the optimum), the one with the least sum of
 * squared chunk parameters (dynamic programming over (chunks, end); the
 * earliest cut on a tie), so the chunks below the largest are even too
 * (their activations scale with their layers). Leaves bounds alone when
 * out of memory. */
static void even_out(const struct lmc_pp_costs *k, const int64_t *pre, int K, int64_t X, int64_t *bounds) {
    int64_t L = k->L, W = L + 1;
    double *dp = malloc(sizeof *dp * (size_t)((K + 1) * W));
    int64_t *from = malloc(sizeof *from * (size_t)((K + 1) * W));
    if (!dp || !from) {
        free(dp), free(from);
        return;
    }
    for (int64_t i = 0; i < (K + 1) * W; i++) dp[i] = -1, from[i] = -1; /* -1: no cut */
    dp[0] = 0;
    for (int j = 1; j <= K; j++)
        for (int64_t e = j; e <= L - (K - j); e++) {
            double *best = &dp[j * W + e];
            for (int64_t b = j - 1; b < e; b++) {
                double before = dp[(j - 1) * W + b];
                int64_t c = cost_of(k, pre, b, e);
                if (before < 0 || c > X) continue;
                double v = before + (double)c * (double)c;
                if (*best < 0 || v < *best) *best = v, from[j * W + e] = b;
            }
        }
    if (dp[K * W + L] >= 0) {
        int64_t e = L;
        for (int j = K; j > 0; j--) {
            bounds[j] = e;
            e = from[j * W + e];
        }
        bounds[0] = 0;
    }
    free(dp), free(from);
}

lmc_status lmc_pp_costs_balance(const struct lmc_pp_costs *k, int K, int64_t *bounds, lmc_err *err) {
    int64_t L = k->L;
    if (K < 1 || K > L)
        return lmc_err_set(err, LMC_ERR_ARG, "%d pipeline chunks: the model has %lld layers (a stage needs at least "
                           "one)", K, (long long)L);
    int64_t *pre = malloc(sizeof *pre * (size_t)(L + 1));
    if (!pre) return lmc_err_set(err, LMC_ERR_OOM, "pipeline split: out of memory");
    pre[0] = 0;
    for (int64_t l = 0; l < L; l++) pre[l + 1] = pre[l] + k->layer[l];
    /* the smallest X some cut stays within: within [0, everything] */
    int64_t lo = 0, hi = pre[L] + k->first + k->last;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cut_within(k, pre, K, mid, bounds)) hi = mid;
        else lo = mid + 1;
    }
    bool ok = cut_within(k, pre, K, lo, bounds);
    LMC_ASSERT(ok);
    if ((double)K * (double)L * (double)L <= 5e7) even_out(k, pre, K, lo, bounds);
    free(pre);
    return LMC_OK;
}

lmc_status lmc_pp_split_parse(const char *text, int64_t L, int P, int V, int64_t *bounds, lmc_err *err) {
    int64_t K = (int64_t)P * V, n = 1;
    for (const char *s = text; *s; s++) n += *s == ',';
    if (n != K)
        return lmc_err_set(err, LMC_ERR_ARG, "--pp-layers '%.200s' gives %lld counts; %d stages x %d chunks need %lld "
                           "(one a chunk, in model order)", text, (long long)n, P, V, (long long)K);
    const char *s = text;
    int64_t sum = 0;
    bounds[0] = 0;
    for (int64_t j = 0; j < K; j++) {
        const char *start = s;
        int64_t v = 0;
        while (*s >= '0' && *s <= '9') {
            v = v * 10 + (*s++ - '0');
            if (v > (INT64_C(1) << 40)) break;
        }
        if (s == start || (*s && *s != ',') || v > (INT64_C(1) << 40)) {
            size_t len = strcspn(start, ",");
            return lmc_err_set(err, LMC_ERR_ARG, "--pp-layers '%.200s': '%.*s' is not a layer count (give %lld positive "
                               "integers separated by commas)", text, (int)(len > 64 ? 64 : len), start, (long long)K);
        }
        if (v == 0)
            return lmc_err_set(err, LMC_ERR_ARG, "--pp-layers '%.200s': chunk %lld has 0 layers (each needs at least one)",
                               text, (long long)j);
        sum += v;
        bounds[j + 1] = sum > L ? L : sum;
        if (*s == ',') s++;
    }
    if (sum != L)
        return lmc_err_set(err, LMC_ERR_ARG, "--pp-layers '%.200s' sums to %lld layers; the model has %lld", text,
                           (long long)sum, (long long)L);
    return LMC_OK;
}

lmc_status lmc_pp_split_plan(const struct lmc_config *c, int P, int V, const char *text, int64_t *bounds,
                             lmc_err *err) {
    int64_t L = c->num_layers;
    if (P < 1 || V < 1 || (int64_t)P * V > L)
        return lmc_err_set(err, LMC_ERR_ARG, "%d pipeline stages x %d chunks: the model has %lld layers (a stage "
                           "needs at least one)", P, V, (long long)L);
    if (text && *text) return lmc_pp_split_parse(text, L, P, V, bounds, err);
    struct lmc_pp_costs k;
    lmc_status st = lmc_pp_costs_init(&k, c, err);
    if (st) return st;
    st = lmc_pp_costs_balance(&k, P * V, bounds, err);
    lmc_pp_costs_free(&k);
    return st;
}

void lmc_pp_chunk_layers(const int64_t *bounds, int P, int V, int rank, int v, int64_t *l0, int64_t *l1) {
    LMC_ASSERT(rank >= 0 && rank < P && v >= 0 && v < V);
    int k = v * P + rank;
    *l0 = bounds[k], *l1 = bounds[k + 1];
}
