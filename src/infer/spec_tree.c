/* spec_tree.c — token-tree shapes for greedy speculative decoding (see
 * spec_tree.h): per-depth rank statistics, the shape that maximizes
 * expected tokens per unit of cost, the rows of its verification. */
#include "infer/spec_tree.h"
#include "core/core.h"

#include <string.h>

/* priors: 2 pseudo-trials at 60% / 15% / 5% (what kd-tiny gives on KJV) */
void lmc_spec_tree_stats_init(struct lmc_spec_tree_stats *s) {
    static const double prior[LMC_SPEC_TREE_RANKS] = {0.6, 0.15, 0.05};
    for (int64_t d = 0; d < LMC_SPEC_TREE_DEPTH; d++) {
        s->trial[d] = 2;
        for (int r = 0; r < LMC_SPEC_TREE_RANKS; r++) s->hit[d][r] = 2 * prior[r];
    }
}

void lmc_spec_tree_stats_add(struct lmc_spec_tree_stats *s, int64_t d, int rank) {
    if (d < 1 || d > LMC_SPEC_TREE_DEPTH) return;
    d--;
    s->trial[d] = 0.95 * s->trial[d] + 1;
    for (int r = 0; r < LMC_SPEC_TREE_RANKS; r++) s->hit[d][r] = 0.95 * s->hit[d][r] + (r == rank);
}

double lmc_spec_tree_p(const struct lmc_spec_tree_stats *s, int64_t d, int r) {
    if (d < 1 || d > LMC_SPEC_TREE_DEPTH || r < 0 || r >= LMC_SPEC_TREE_RANKS) return 0;
    return s->hit[d - 1][r] / s->trial[d - 1];
}

/* a verification of M rows in 1-token forwards (spec.c's forward_cost) */
static double verify_cost(const struct lmc_spec_cost *c, int64_t M) {
    if (M <= 1) return 1;
    double s = c->slope >= 0 ? c->slope : 0, r = c->row >= 0 ? c->row : 0;
    double mem = 1 + s * (double)(M - 1), comp = r * (double)M;
    return mem > comp ? mem : comp;
}

double lmc_spec_tree_choose(const struct lmc_spec_tree_stats *s, int64_t kmin, int64_t kmax, int64_t rows_max,
                            const struct lmc_spec_cost *c, struct lmc_spec_tree *t) {
    memset(t, 0, sizeof *t);
    kmax = LMC_MIN(LMC_MIN(kmax, LMC_SPEC_TREE_DEPTH), LMC_MIN(rows_max, LMC_SPEC_TREE_ROWS) - 1);
    kmin = LMC_MAX(kmin, 0);
    double draft = c->draft >= 0 ? c->draft : 0, best = -1;
    for (int64_t k = kmin; k <= kmax; k++) {
        /* chain: P(reach depth d) = prod p0; siblings (d, r): P(reach d - 1) p_r(d) */
        double tokens = 1, reach = 1, val[LMC_SPEC_TREE_ROWS];
        int32_t dd[LMC_SPEC_TREE_ROWS], rr[LMC_SPEC_TREE_ROWS];
        int64_t nc = 0;
        for (int64_t d = 1; d <= k; d++) {
            for (int r = 1; r < LMC_SPEC_TREE_RANKS && nc < LMC_SPEC_TREE_ROWS; r++) {
                val[nc] = reach * lmc_spec_tree_p(s, d, r);
                dd[nc] = (int32_t)d;
                rr[nc++] = r;
            }
            reach *= lmc_spec_tree_p(s, d, 0);
            tokens += reach;
        }
        /* the candidates by value, best first (insertion sort: a few dozen) */
        for (int64_t i = 1; i < nc; i++)
            for (int64_t j = i; j > 0 && val[j] > val[j - 1]; j--) {
                double v = val[j];
                val[j] = val[j - 1], val[j - 1] = v;
                int32_t x = dd[j];
                dd[j] = dd[j - 1], dd[j - 1] = x;
                x = rr[j];
                rr[j] = rr[j - 1], rr[j - 1] = x;
            }
        int64_t room = LMC_MIN(nc, rows_max - 1 - k);
        for (int64_t n_sib = 0; n_sib <= room; n_sib++) {
            if (n_sib) tokens += val[n_sib - 1];
            double rate = tokens / ((double)k * draft + verify_cost(c, 1 + k + n_sib));
            if (rate > best * (1 + 1e-9)) {
                best = rate;
                t->k = k;
                t->n_sib = n_sib;
                memcpy(t->sib_depth, dd, (size_t)n_sib * sizeof *dd);
                memcpy(t->sib_rank, rr, (size_t)n_sib * sizeof *rr);
            }
        }
    }
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
        LMC_ASSERT(d >= 1 && d <= k && t->sib_rank[i] >= 1 && t->sib_rank[i] < LMC_SPEC_TREE_RANKS);
        ids[row] = alt[(d - 1) * (LMC_SPEC_TREE_RANKS - 1) + t->sib_rank[i] - 1];
        depth[row] = (int32_t)d;
        mask[row] = mask[d - 1] | (uint64_t)1 << row;
    }
    return n;
}

void lmc_spec_tree_topk(const float *logits, int64_t V, int32_t *out) {
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
}
