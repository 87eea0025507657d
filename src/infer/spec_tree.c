/* spec_tree.c — token-tree shapes for greedy speculative decoding (see
 * spec_tree.h): rank statistics by draft confidence, the shape that maximizes
 * expected tokens per unit of cost, the rows of its verification. */
#include "infer/spec_tree.h"
#include "core/core.h"

#include <math.h>
#include <string.h>

static int64_t bin_of(double conf) {
    int64_t b = conf >= 0 ? (int64_t)(conf * LMC_SPEC_TREE_BINS) : 0;
    return LMC_MIN(b, LMC_SPEC_TREE_BINS - 1);
}

/* priors: 2 pseudo-trials, rank 0 at the bin's confidence, the rest of the
 * mass 35% / 10% on ranks 1 and 2 */
void lmc_spec_tree_stats_init(struct lmc_spec_tree_stats *s) {
    for (int64_t b = 0; b < LMC_SPEC_TREE_BINS; b++) {
        double c = ((double)b + 0.5) / LMC_SPEC_TREE_BINS;
        s->trial[b] = 2;
        s->hit[b][0] = 2 * c;
        s->hit[b][1] = 2 * (1 - c) * 0.35;
        s->hit[b][2] = 2 * (1 - c) * 0.1;
    }
}

void lmc_spec_tree_stats_add(struct lmc_spec_tree_stats *s, double conf, int rank) {
    int64_t b = bin_of(conf);
    s->trial[b] = 0.98 * s->trial[b] + 1;
    for (int r = 0; r < LMC_SPEC_TREE_RANKS; r++) s->hit[b][r] = 0.98 * s->hit[b][r] + (r == rank);
}

double lmc_spec_tree_p(const struct lmc_spec_tree_stats *s, double conf, int r) {
    if (r < 0 || r >= LMC_SPEC_TREE_RANKS) return 0;
    int64_t b = bin_of(conf);
    return s->hit[b][r] / s->trial[b];
}

/* a verification of M rows in 1-token forwards (spec.c's forward_cost) */
static double verify_cost(const struct lmc_spec_cost *c, int64_t M) {
    if (M <= 1) return 1;
    double s = c->slope >= 0 ? c->slope : 0, r = c->row >= 0 ? c->row : 0;
    double mem = 1 + s * (double)(M - 1), comp = r * (double)M;
    return mem > comp ? mem : comp;
}

double lmc_spec_tree_pick(const struct lmc_spec_tree_stats *s, const float *conf, int64_t kd, int64_t rows_max,
                          const struct lmc_spec_cost *c, struct lmc_spec_tree *t) {
    memset(t, 0, sizeof *t);
    kd = LMC_MAX(0, LMC_MIN(kd, LMC_SPEC_TREE_DEPTH));
    rows_max = LMC_MIN(rows_max, LMC_SPEC_TREE_ROWS);
    /* candidates: value, depth, rank (0: the chain node) */
    double val[LMC_SPEC_TREE_DEPTH * LMC_SPEC_TREE_RANKS], reach = 1;
    int32_t dd[LMC_SPEC_TREE_DEPTH * LMC_SPEC_TREE_RANKS], rr[LMC_SPEC_TREE_DEPTH * LMC_SPEC_TREE_RANKS];
    int64_t nc = 0;
    for (int64_t d = 1; d <= kd; d++) {
        for (int r = 1; r < LMC_SPEC_TREE_RANKS; r++) {
            val[nc] = reach * lmc_spec_tree_p(s, conf[d - 1], r);
            dd[nc] = (int32_t)d;
            rr[nc++] = r;
        }
        reach *= lmc_spec_tree_p(s, conf[d - 1], 0);
        val[nc] = reach;
        dd[nc] = (int32_t)d;
        rr[nc++] = 0;
    }
    /* by value, best first; ties: the chain node, then the shallower (so
     * a node never comes before its parent) */
    for (int64_t i = 1; i < nc; i++)
        for (int64_t j = i; j > 0; j--) {
            bool before = val[j] > val[j - 1] ||
                          (val[j] == val[j - 1] && (rr[j] < rr[j - 1] || (rr[j] == rr[j - 1] && dd[j] < dd[j - 1])));
            if (!before) break;
            double v = val[j];
            val[j] = val[j - 1], val[j - 1] = v;
            int32_t x = dd[j];
            dd[j] = dd[j - 1], dd[j - 1] = x;
            x = rr[j];
            rr[j] = rr[j - 1], rr[j - 1] = x;
        }
    double draft = c->draft >= 0 ? c->draft : 0, tokens = 1, best = -1;
    int64_t best_n = 0;
    for (int64_t n = 0; n <= LMC_MIN(nc, rows_max - 1); n++) {
        if (n) tokens += val[n - 1];
        double rate = tokens / ((double)kd * draft + verify_cost(c, 1 + n));
        if (rate > best * (1 + 1e-9)) {
            best = rate;
            best_n = n;
        }
    }
    for (int64_t i = 0; i < best_n; i++) {
        if (rr[i] == 0) {
            t->k = LMC_MAX(t->k, dd[i]);
        } else {
            t->sib_depth[t->n_sib] = dd[i];
            t->sib_rank[t->n_sib++] = rr[i];
        }
    }
    /* a sibling below the chain's end (its parent cut: equal values) goes */
    int64_t j = 0;
    for (int64_t i = 0; i < t->n_sib; i++)
        if (t->sib_depth[i] <= t->k + 1 && t->sib_depth[i] <= kd) {
            t->sib_depth[j] = t->sib_depth[i];
            t->sib_rank[j++] = t->sib_rank[i];
        }
    t->n_sib = j;
    return best;
}

int64_t lmc_spec_tree_rows(const struct lmc_spec_tree *t, int32_t last, const int32_t *chain, const int32_t *alt,
                           int32_t *ids, int32_t *depth, uint64_t *mask) {
    int64_t k = t->k, n = 1 + t->k + t->n_sib;
    LMC_ASSERT(n <= LMC_SPEC_TREE_ROWS);
    ids[0] = last;
    depth[0] = 0;
    mask[0] = 1;
    for (int64_t d = 1; d <= k; d++) { /* the chain: every row before it */
        ids[d] = chain[d - 1];
        depth[d] = (int32_t)d;
        mask[d] = mask[d - 1] | (uint64_t)1 << d;
    }
    for (int64_t i = 0; i < t->n_sib; i++) { /* a sibling: its parent's ancestors and itself */
        int64_t row = 1 + k + i, d = t->sib_depth[i];
        LMC_ASSERT(d >= 1 && d <= k + 1 && t->sib_rank[i] >= 1 && t->sib_rank[i] < LMC_SPEC_TREE_RANKS);
        ids[row] = alt[(d - 1) * (LMC_SPEC_TREE_RANKS - 1) + t->sib_rank[i] - 1];
        depth[row] = (int32_t)d;
        mask[row] = mask[d - 1] | (uint64_t)1 << row;
    }
    return n;
}

double lmc_spec_tree_topk(const float *logits, int64_t V, int32_t *out) {
    float v[LMC_SPEC_TREE_RANKS];
    for (int r = 0; r < LMC_SPEC_TREE_RANKS; r++) {
        out[r] = -1;
        v[r] = 0;
    }
    for (int64_t i = 0; i < V; i++) {
        float x = logits[i];
        int r = LMC_SPEC_TREE_RANKS;
        while (r > 0 && (out[r - 1] < 0 || x > v[r - 1])) r--;
        if (r == LMC_SPEC_TREE_RANKS) continue;
        for (int j = LMC_SPEC_TREE_RANKS - 1; j > r; j--) {
            out[j] = out[j - 1];
            v[j] = v[j - 1];
        }
        out[r] = (int32_t)i;
        v[r] = x;
    }
    if (out[0] < 0 || !(v[0] > -INFINITY)) return 0;
    /* logits more than 18 below the best add under 1.6e-8 each: left out
     * (a V-long exp per draft token cost ~1 ms a round at V = 8192) */
    double sum = 0;
    float lo = v[0] - 18.0f;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] > lo) sum += exp((double)logits[i] - (double)v[0]);
    return 1 / sum;
}
