/* test_spec_tree.c — token-tree speculative verification: the CPU
 * attention_mask op against a float64 reference on random odd shapes and
 * random trees (and, with a causal mask, bit for bit the causal op); the
 * model's masked forward (lmc_model_forward_mask) on every fixture: each
 * tree row's logits equal a separate causal forward of its root-to-node
 * path, and after lmc_kv_move_rows puts a sibling's row in place the next
 * causal step equals the path's own; the tree shapes of spec_tree.c
 * (the pick following the calibrated confidences within the budget,
 * masks, top-k and the draft's confidence). */
#include "test.h"
#include "core/core.h"
#include "infer/spec_tree.h"
#include "model/model.h"
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>
#include <string.h>

static struct lmc_backend be;

/* a random tree of M rows: parent[i] < i (row 0 the root), masks, depths */
static void rand_tree(uint64_t *rng, int64_t M, int32_t *parent, int32_t *depth, uint64_t *mask) {
    parent[0] = -1;
    depth[0] = 0;
    mask[0] = 1;
    for (int64_t i = 1; i < M; i++) {
        parent[i] = (int32_t)(test_rng_next(rng) % (uint64_t)i);
        depth[i] = depth[parent[i]] + 1;
        mask[i] = mask[parent[i]] | (uint64_t)1 << i;
    }
}

static void test_op(void) {
    uint64_t rng = 11;
    struct lmc_cpu_ctx *c = be.ctx;
    const int64_t shapes[][5] = {{9, 7, 6, 2, 13}, {12, 0, 4, 4, 16}, {5, 33, 3, 1, 7}, {64, 3, 2, 2, 8}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int64_t M = shapes[si][0], pos0 = shapes[si][1], H = shapes[si][2], KV = shapes[si][3], hd = shapes[si][4];
        int64_t T = pos0 + M, qd = H * hd, kvd = KV * hd;
        float *q = malloc((size_t)(M * qd) * sizeof *q), *k = malloc((size_t)(T * kvd) * sizeof *k);
        float *v = malloc((size_t)(T * kvd) * sizeof *v), *out = malloc((size_t)(M * qd) * sizeof *out);
        float *out2 = malloc((size_t)(M * qd) * sizeof *out2);
        double *ref = malloc((size_t)(M * qd) * sizeof *ref), *s = malloc((size_t)T * sizeof *s);
        for (int64_t i = 0; i < M * qd; i++) q[i] = test_rand(&rng);
        for (int64_t i = 0; i < T * kvd; i++) k[i] = test_rand(&rng), v[i] = test_rand(&rng);
        int32_t parent[64], depth[64];
        uint64_t mask[64];
        rand_tree(&rng, M, parent, depth, mask);
        float scale = 0.37f;
        lmc_cpu_attention_mask(c, out, q, k, v, M, pos0, H, KV, hd, scale, mask);
        for (int64_t m = 0; m < M; m++)
            for (int64_t h = 0; h < H; h++) {
                int64_t g = h / (H / KV);
                double mx = -1e300, sum = 0;
                for (int64_t t = 0; t < T; t++) {
                    bool see = t < pos0 || ((mask[m] >> (t - pos0)) & 1);
                    s[t] = -1e300;
                    if (!see) continue;
                    double d = 0;
                    for (int64_t x = 0; x < hd; x++) d += (double)q[m * qd + h * hd + x] * k[t * kvd + g * hd + x];
                    s[t] = d * scale;
                    if (s[t] > mx) mx = s[t];
                }
                for (int64_t x = 0; x < hd; x++) ref[m * qd + h * hd + x] = 0;
                for (int64_t t = 0; t < T; t++) {
                    if (s[t] == -1e300) continue;
                    double p = exp(s[t] - mx);
                    sum += p;
                    for (int64_t x = 0; x < hd; x++) ref[m * qd + h * hd + x] += p * v[t * kvd + g * hd + x];
                }
                for (int64_t x = 0; x < hd; x++) ref[m * qd + h * hd + x] /= sum;
            }
        double e = test_rel_err_f32_f64(out, ref, M * qd);
        CHECK_MSG(e < 1e-5, "mask op M=%lld pos0=%lld: rel err %g", (long long)M, (long long)pos0, e);
        /* a causal mask: the causal op's bits (below its prefill block size) */
        for (int64_t m = 0; m < M; m++) mask[m] = m == 63 ? ~(uint64_t)0 : ((uint64_t)1 << (m + 1)) - 1;
        lmc_cpu_attention_mask(c, out, q, k, v, M, pos0, H, KV, hd, scale, mask);
        if (M < LMC_CPU_ATTN_BLOCK_MIN_M) {
            lmc_cpu_attention(c, out2, q, k, v, M, pos0, H, KV, hd, scale, 0);
            CHECK_MSG(!memcmp(out, out2, (size_t)(M * qd) * sizeof *out), "causal mask M=%lld: not the causal op's bits",
                      (long long)M);
        }
        free(q), free(k), free(v), free(out), free(out2), free(ref), free(s);
    }
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || d != d) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

/* the tree verification of a fixture against causal forwards of each path */
static void test_model(const char *dir) {
    struct lmc_model m;
    lmc_err err = {0};
    if (lmc_model_load(&m, dir, NULL, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        return;
    }
    CHECK_MSG(lmc_model_mask_ok(&m, &be), "%s: no masked forward", dir);
    int64_t V = m.cfg.vocab_size, P = 9, M = 11;
    uint64_t rng = 5;
    int32_t prefix[9], ids[11], parent[11], depth[11], path[32];
    uint64_t mask[11];
    for (int64_t i = 0; i < P; i++) prefix[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)V);
    for (int64_t i = 0; i < M; i++) ids[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)V);
    rand_tree(&rng, M, parent, depth, mask);
    struct lmc_kv kv, kv2;
    struct lmc_acts a, a2;
    float *lt = malloc((size_t)(M * V) * sizeof *lt), *lp = malloc((size_t)(32 * V) * sizeof *lp);
    CHECK(lmc_kv_init(&kv, &m, &be, 64, &err) == LMC_OK && lmc_acts_init(&a, &m, &be, 32, 16, &err) == LMC_OK);
    CHECK(lmc_kv_init(&kv2, &m, &be, 64, &err) == LMC_OK && lmc_acts_init(&a2, &m, &be, 32, 32, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a, &kv, prefix, P, 0, lp, false, &err) == LMC_OK);
    CHECK_MSG(lmc_model_forward_mask(&m, &be, &a, &kv, ids, M, P, depth, mask, lt, &err) == LMC_OK, "%s", err.msg);
    double worst = 0;
    for (int64_t i = 0; i < M; i++) {
        int64_t d = depth[i];
        memcpy(path, prefix, (size_t)P * sizeof *path);
        for (int64_t j = i; j >= 0; j = parent[j]) path[P + depth[j]] = ids[j];
        CHECK(lmc_model_forward(&m, &be, &a2, &kv2, path, P + d + 1, 0, lp, true, &err) == LMC_OK);
        double e = max_rel(lt + i * V, lp + (P + d) * V, V);
        if (e > worst) worst = e;
    }
    CHECK_MSG(worst < 2e-5, "%s: tree rows vs path forwards: rel err %g", dir, worst);
    /* the deepest leaf's path put in place (its rows moved to their depths),
     * then one causal step after it equals the path's next logits */
    int64_t leaf = 0;
    for (int64_t i = 0; i < M; i++)
        if (depth[i] > depth[leaf]) leaf = i;
    int64_t src[11], dst[11], n = 0, d = depth[leaf];
    for (int64_t j = leaf; j > 0; j = parent[j]) src[n] = P + j, dst[n++] = P + depth[j];
    for (int64_t i = 0; i < n / 2; i++) { /* shallow first: a dst never overwrites a later src (dst <= src) */
        int64_t x = src[i], y = dst[i];
        src[i] = src[n - 1 - i], dst[i] = dst[n - 1 - i];
        src[n - 1 - i] = x, dst[n - 1 - i] = y;
    }
    lmc_kv_move_rows(&kv, src, dst, n);
    memcpy(path, prefix, (size_t)P * sizeof *path);
    for (int64_t j = leaf; j >= 0; j = parent[j]) path[P + depth[j]] = ids[j];
    path[P + d + 1] = 7 % (int32_t)V;
    CHECK(lmc_model_forward(&m, &be, &a, &kv, path + P + d + 1, 1, P + d + 1, lt, false, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a2, &kv2, path, P + d + 2, 0, lp, false, &err) == LMC_OK);
    double e = max_rel(lt, lp, V);
    CHECK_MSG(e < 2e-5, "%s: step after the moved path (depth %lld): rel err %g", dir, (long long)d, e);
    printf("  %-12s tree of %lld rows (depth %d): rows vs paths %.2g, step after the move %.2g\n", dir,
           (long long)M, depth[leaf], worst, e);
    /* bad trees: a row not seeing itself, one seeing a later row */
    uint64_t bad[2] = {1, 1};
    int32_t bd[2] = {0, 1}, bi[2] = {1, 2};
    CHECK(lmc_model_forward_mask(&m, &be, &a, &kv, bi, 2, P, bd, bad, lt, &err) == LMC_ERR_ARG);
    bad[0] = 3;
    CHECK(lmc_model_forward_mask(&m, &be, &a, &kv, bi, 2, P, bd, bad, lt, &err) == LMC_ERR_ARG);
    lmc_kv_free(&kv), lmc_kv_free(&kv2), lmc_acts_free(&a), lmc_acts_free(&a2);
    free(lt), free(lp);
    lmc_model_free(&m);
}

static void test_shapes(void) {
    struct lmc_spec_tree_stats s;
    struct lmc_spec_tree t;
    struct lmc_spec_cost c = {0.03, 0.065, 0.1}; /* row: memory-bound up to 12 rows */
    float conf[8] = {0.95f, 0.95f, 0.95f, 0.95f, 0.95f, 0.95f, 0.95f, 0.95f};
    lmc_spec_tree_stats_init(&s);
    /* a draft always right when confident: the whole chain, no siblings */
    for (int i = 0; i < 400; i++) lmc_spec_tree_stats_add(&s, 0.95, 0);
    double rate = lmc_spec_tree_pick(&s, conf, 8, 12, &c, &t);
    CHECK_MSG(t.k == 8 && t.n_sib == 0 && rate > 3, "k %lld sib %lld rate %g", (long long)t.k, (long long)t.n_sib,
              rate);
    /* at confidence 0.55 the target's token half the time the draft's 2nd
     * choice: a rank-1 sibling at that depth, within the budget */
    for (int i = 0; i < 400; i++) lmc_spec_tree_stats_add(&s, 0.55, i % 2 ? 0 : 1);
    conf[0] = 0.55f;
    for (int i = 1; i < 8; i++) conf[i] = 0.15f; /* below it the draft unsure (the prior's 15%) */
    lmc_spec_tree_pick(&s, conf, 8, 6, &c, &t);
    bool sib1 = false;
    for (int64_t i = 0; i < t.n_sib; i++) sib1 = sib1 || (t.sib_depth[i] == 1 && t.sib_rank[i] == 1);
    CHECK_MSG(sib1 && 1 + t.k + t.n_sib <= 6, "k %lld sib %lld", (long long)t.k, (long long)t.n_sib);
    for (int64_t i = 0; i < t.n_sib; i++) CHECK(t.sib_depth[i] >= 1 && t.sib_depth[i] <= t.k + 1);
    /* a draft never right: a plain step (rate below 1 with the drafts' cost) */
    lmc_spec_tree_stats_init(&s);
    for (int i = 0; i < 400; i++) lmc_spec_tree_stats_add(&s, 0.95, -1);
    for (int i = 0; i < 8; i++) conf[i] = 0.95f;
    rate = lmc_spec_tree_pick(&s, conf, 4, 10, &c, &t);
    CHECK_MSG(t.k == 0 && t.n_sib == 0 && rate < 1, "k %lld sib %lld rate %g", (long long)t.k, (long long)t.n_sib, rate);
    CHECK(lmc_spec_tree_p(&s, 0.95, 0) < 0.01 && lmc_spec_tree_p(&s, 0.05, 0) > 0.04); /* bins apart */
    /* rows: chain masks causal, a sibling's its parent's plus itself */
    t = (struct lmc_spec_tree){.k = 3, .n_sib = 2, .sib_depth = {1, 3}, .sib_rank = {1, 2}};
    int32_t chain[3] = {10, 11, 12}, alt[6] = {20, 30, 21, 31, 22, 32}, ids[6], depth[6];
    uint64_t mask[6];
    CHECK(lmc_spec_tree_rows(&t, 9, chain, alt, ids, depth, mask) == 6);
    CHECK(ids[0] == 9 && ids[3] == 12 && ids[4] == 20 && ids[5] == 32);
    CHECK(mask[3] == 0xf && mask[4] == 0x11 && mask[5] == 0x27 && depth[4] == 1 && depth[5] == 3);
    float lg[7] = {0.5f, 3, -1, 3, 2, 0.5f, 9};
    int32_t top[3];
    double p = lmc_spec_tree_topk(lg, 7, top), z = 0;
    for (int i = 0; i < 7; i++) z += exp((double)lg[i] - 9);
    CHECK(top[0] == 6 && top[1] == 1 && top[2] == 3 && fabs(p - 1 / z) < 1e-12);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_spec_tree");
    }
    test_op();
    test_shapes();
    const char *fx[] = {"tests/fixtures/llama-tiny", "tests/fixtures/gpt2-tiny", "tests/fixtures/qwen2-tiny",
                        "models/kjv-llama"};
    for (size_t i = 0; i < sizeof fx / sizeof *fx; i++) test_model(fx[i]);
    lmc_backend_cpu_free(&be);
    return test_finish("test_spec_tree");
}
