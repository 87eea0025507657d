/* test_spec_k.c — adaptive K of speculative decoding (infer/spec.c):
 * lmc_spec_choose_k is the argmax over K = 0..kmax of the expected tokens
 * per unit of cost, (1 - a^(K+1)) / (1 - a) / (K d + max(1 + s K, r (K+1)))
 * (checked against a float64 brute force on a grid of acceptance rates and
 * costs),
 * never decreases with the acceptance rate, and gives 0 (plain steps) when
 * no K pays; the running acceptance estimate (lmc_spec_rate) follows the
 * per-draft acceptance probability without bias: simulated rounds where
 * each draft is kept with probability a (stopping at the first rejection,
 * as verification does), for a = 0.3..0.9 and K = 1..6: the estimate
 * averages within 0.03 of a (while the old
 * per-round ratio accepted / drafted is biased low by more than 0.1 at
 * a = 0.8, K = 4: the test's power); with K chosen by the rule each
 * round, the K chosen most often is the best K for a (or one whose rate
 * is within 2% of it); the batch-aware cost (lmc_spec_choose_k_batch,
 * the server's) equals the one-sequence rule at batch 1, never takes more
 * drafts in a bigger batch, and none at batch 64 on a CPU-like roofline. */
#include "test.h"
#include "infer/spec.h"
#include "core/rng.h"

#include <math.h>
#include <string.h>

static double rate_of(double a, int64_t k, double d, double s, double r) {
    double tok = 0;
    for (int64_t i = 0; i <= k; i++) tok += pow(a, (double)i);
    double cost = k == 0 ? 1 : (double)k * d + fmax(1 + s * (double)k, r * (double)(k + 1));
    return tok / cost;
}

static int64_t brute(double a, int64_t kmax, double d, double s, double r) {
    int64_t best = 0;
    for (int64_t k = 1; k <= kmax; k++)
        if (rate_of(a, k, d, s, r) > rate_of(a, best, d, s, r) * (1 + 1e-9)) best = k;
    return best;
}

static int64_t choose(double a, int64_t kmax, double d, double s, double r) {
    struct lmc_spec_cost c = {d, s, r};
    return lmc_spec_choose_k(a, kmax, &c);
}

/* lmc_spec_choose_k_timed: with every M timed, the argmax of expected
 * tokens per second (a brute force over synthetic timings: a flat
 * verification from 3 to 5 rows, as the AVX2 kernel's, then a cliff);
 * with nothing timed, lmc_spec_choose_k; with only M = 4 timed, the
 * model's shape scaled to it; every 8th round a neighbour of the choice. */
static void test_timed(void) {
    static const double vsec[] = {0, 1.0, 1.02, 1.25, 1.27, 1.28, 1.40, 1.90, 2.10, 2.20};
    struct lmc_spec_cost c = {0.07, 0.02, 0.25};
    int64_t checked = 0;
    for (double a = 0.05; a < 0.99; a += 0.05) {
        struct lmc_spec_timing t;
        memset(&t, 0, sizeof t);
        CHECK(lmc_spec_choose_k_timed(&t, a, 8, &c) == lmc_spec_choose_k(a, 8, &c));
        t.rounds = 0;
        for (int rep = 0; rep < 20; rep++)
            for (int64_t k = 0; k <= 8; k++) lmc_spec_timing_add(&t, k, 0.04 * (double)k, vsec[k + 1]);
        int64_t best = 0;
        double tok = 1, ak = 1, best_rate = 1 / vsec[1];
        for (int64_t k = 1; k <= 8; k++) {
            ak *= a;
            tok += ak;
            double r = tok / (0.04 * (double)k + vsec[k + 1]);
            if (r > best_rate * (1 + 1e-9)) best_rate = r, best = k;
        }
        t.rounds = 0; /* rounds 1..7: no probe */
        int64_t got = lmc_spec_choose_k_timed(&t, a, 8, &c);
        CHECK_MSG(got == best, "timed a %.2f: K %lld, brute %lld", a, (long long)got, (long long)best);
        if (best >= 2 && best <= 7) { /* round 8: a probe next to the choice */
            t.rounds = 7;
            int64_t p = lmc_spec_choose_k_timed(&t, a, 8, &c);
            CHECK_MSG(p == best + 1 || p == best - 1, "probe at a %.2f: %lld next to %lld", a, (long long)p,
                      (long long)best);
        }
        checked++;
    }
    /* the flat 3..5 verification takes K = 4 where the model (0.02) takes 3 */
    struct lmc_spec_timing t;
    memset(&t, 0, sizeof t);
    for (int rep = 0; rep < 5; rep++)
        for (int64_t k = 0; k <= 8; k++) lmc_spec_timing_add(&t, k, 0.04 * (double)k, vsec[k + 1]);
    t.rounds = 0;
    CHECK(lmc_spec_choose_k_timed(&t, 0.8, 8, &c) == 4 && lmc_spec_choose_k(0.8, 8, &c) == 3);
    /* one M timed: the others from the model's shape, so the model's choice */
    memset(&t, 0, sizeof t);
    lmc_spec_timing_add(&t, 3, 3 * 0.07 * 0.004, 0.004 * (1 + 0.02 * 3));
    CHECK(lmc_spec_choose_k_timed(&t, 0.7, 8, &c) == lmc_spec_choose_k(0.7, 8, &c));
    /* a preempted round (100x) moves the mean by at most 3x */
    lmc_spec_timing_add(&t, 3, 0, 0.4);
    CHECK(t.vsum[4] / t.vn[4] < 3.01 * 0.004 * 1.06);
    printf("  choose_k_timed: %lld acceptance rates against the brute force\n", (long long)checked);
}

int main(void) {
    test_timed();
    static const double ds[] = {0.0, 0.01, 0.08, 0.16, 0.3, 1.0};
    static const double ss[] = {0.0, 0.02, 0.06, 0.2};
    static const double rs[] = {0.0, 0.25, 0.35, 0.6};
    static const int64_t kmaxs[] = {1, 4, 8, 16};
    int64_t checked = 0;
    for (size_t di = 0; di < sizeof ds / sizeof *ds; di++)
        for (size_t si = 0; si < sizeof ss / sizeof *ss; si++)
            for (size_t ri = 0; ri < sizeof rs / sizeof *rs; ri++)
            for (size_t ki = 0; ki < sizeof kmaxs / sizeof *kmaxs; ki++) {
                int64_t prev = 0;
                for (int ai = 0; ai <= 99; ai++) {
                    double a = ai / 100.0;
                    int64_t k = choose(a, kmaxs[ki], ds[di], ss[si], rs[ri]);
                    CHECK_MSG(k == brute(a, kmaxs[ki], ds[di], ss[si], rs[ri]),
                              "a %.2f d %.2f s %.2f r %.2f kmax %lld: K %lld", a, ds[di], ss[si], rs[ri],
                              (long long)kmaxs[ki], (long long)k);
                    /* (free drafts and verification: every K ties to 1e-9 at small a) */
                    if (ds[di] + ss[si] + rs[ri] > 0)
                        CHECK_MSG(k >= prev, "K fell from %lld to %lld at a %.2f", (long long)prev, (long long)k, a);
                    CHECK(k >= 0 && k <= kmaxs[ki]);
                    prev = k;
                    checked++;
                }
            }
    printf("  choose_k = brute force on %lld grid points\n", (long long)checked);
    /* a draft as costly as the target never pays; free drafts at a high rate take kmax */
    CHECK(choose(0.95, 8, 1.0, 0.02, 0.25) == 0);
    CHECK(choose(0.0, 8, 0.01, 0.02, 0.25) == 0);
    CHECK(choose(1.0, 8, 0.01, 0.02, 0.0) == 8);
    CHECK(choose(NAN, 8, 0.01, 0.02, 0.25) == 0);
    /* the roofline: a verification of up to 1/r rows costs ~1 step */
    struct lmc_spec_cost c = {0.1, 0.02, 0.35};
    CHECK(fabs(lmc_spec_round_cost(&c, 1) - (0.1 + 1.02)) < 1e-12);
    CHECK(fabs(lmc_spec_round_cost(&c, 4) - (0.4 + 1.75)) < 1e-12);
    /* at the measured 91M-target / kjv-llama costs (d 0.15, s 0.02, r
     * 0.35), 42% acceptance pays with one draft; at 90% two (2.01x): the
     * 4- and 5-row verifications are compute-bound (1.4, 1.75 steps); with
     * r 0.2 (a CPU with twice the FMA throughput) four (2.44x) */
    CHECK(choose(0.42, 4, 0.15, 0.02, 0.35) == 1);
    CHECK(choose(0.9, 4, 0.15, 0.02, 0.35) == 2);
    CHECK(choose(0.9, 4, 0.15, 0.02, 0.2) == 4);

    /* batch-aware cost (the server): batch 1 is the one-sequence cost, bit
     * for bit; in a batch of B each sequence's round is k B-row draft
     * forwards and a B (k+1)-row verification over a plain B-row step,
     * a forward of R rows costing max(1 + s (R - 1), r R) */
    int64_t bchecked = 0;
    for (int ai = 0; ai <= 20; ai++)
        for (int64_t kmax = 1; kmax <= 8; kmax++) {
            double a = ai / 20.0;
            struct lmc_spec_cost cb = {0.03 + 0.01 * (double)kmax, 0.02, 0.1 + 0.02 * (double)kmax};
            CHECK(lmc_spec_choose_k_batch(a, kmax, &cb, 1) == lmc_spec_choose_k(a, kmax, &cb));
            CHECK(lmc_spec_round_cost_batch(&cb, kmax, 1) == lmc_spec_round_cost(&cb, kmax));
            int64_t prev = kmax;
            for (int64_t b = 1; b <= 128; b *= 2, bchecked++) { /* a bigger batch never takes more drafts */
                int64_t k = lmc_spec_choose_k_batch(a, kmax, &cb, b);
                CHECK_MSG(k <= prev, "a %.2f kmax %lld batch %lld: K %lld after %lld", a, (long long)kmax,
                          (long long)b, (long long)k, (long long)prev);
                prev = k;
            }
        }
    printf("  choose_k_batch: batch 1 = choose_k, K non-increasing in the batch on %lld points\n", (long long)bchecked);
    {
        struct lmc_spec_cost cb = {0.1, 0.02, 0.25};
        /* batch 4: plain max(1.06, 1.0) = 1.06; k 2: 12 rows max(1.22, 3) = 3 */
        CHECK(fabs(lmc_spec_round_cost_batch(&cb, 2, 4) - (2 * 0.1 * 1.06 + 3) / 1.06) < 1e-12);
        /* batch 64 is compute-bound (plain 16 = 64 x 0.25): a draft costs a whole row, never pays */
        CHECK(fabs(lmc_spec_round_cost_batch(&cb, 1, 64) - (0.1 * 16 + 32) / 16) < 1e-12);
        CHECK(lmc_spec_choose_k_batch(0.99, 8, &cb, 64) == 0);
        CHECK(lmc_spec_choose_k_batch(0.9, 4, &cb, 1) >= 2);
        /* a GPU-like roofline (r 0.01): speculation still pays at batch 16 */
        struct lmc_spec_cost g = {0.1, 0.01, 0.01};
        CHECK(lmc_spec_choose_k_batch(0.8, 4, &g, 16) >= 2);
    }

    struct lmc_spec_rate r;
    lmc_spec_rate_init(&r);
    double a0 = lmc_spec_rate_alpha(&r);
    lmc_spec_rate_add(&r, 0, 0); /* a round without drafts is no trial */
    CHECK(lmc_spec_rate_alpha(&r) == a0);

    /* the estimate alone, K fixed: no bias at any K */
    static const double as[] = {0.3, 0.5, 0.6, 0.7, 0.8, 0.9};
    static const int64_t ks[] = {1, 2, 4, 6};
    for (size_t ai = 0; ai < sizeof as / sizeof *as; ai++)
        for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
            double a = as[ai], est = 0;
            uint64_t rng = 777 + 31 * ai + ki;
            lmc_spec_rate_init(&r);
            for (int round = 0; round < 20100; round++) {
                int64_t acc = 0;
                while (acc < ks[ki] && lmc_rng_uniform(&rng) < a) acc++;
                lmc_spec_rate_add(&r, acc, ks[ki]);
                if (round >= 100) est += lmc_spec_rate_alpha(&r) / 20000;
            }
            CHECK_MSG(fabs(est - a) < 0.03, "a %.2f, K %lld: estimate %.3f", a, (long long)ks[ki], est);
        }
    /* the loop: K chosen each round from the estimate (with spec.c's probe
     * after 8 plain rounds); the K chosen most often pays within 2% of the
     * best K for a */
    const double d = 0.08, s = 0.02, rr = 0.25;
    const int64_t kmax = 6;
    for (size_t ai = 0; ai < sizeof as / sizeof *as; ai++) {
        double a = as[ai];
        int64_t hist[7] = {0}, K = kmax, since = 0;
        uint64_t rng = 12345 + ai;
        lmc_spec_rate_init(&r);
        for (int round = 0; round < 20100; round++) {
            int64_t k = K, acc = 0;
            while (acc < k && lmc_rng_uniform(&rng) < a) acc++;
            lmc_spec_rate_add(&r, acc, k);
            if (round >= 100) hist[k]++;
            K = choose(lmc_spec_rate_alpha(&r), kmax, d, s, rr);
            if (K == 0 && ++since >= 8) K = 1, since = 0;
        }
        int64_t mode = 0;
        for (int64_t k = 1; k <= kmax; k++)
            if (hist[k] > hist[mode]) mode = k;
        int64_t best = brute(a, kmax, d, s, rr);
        printf("  a %.1f: most chosen K %lld (%lld of 20000 rounds), best %lld\n", a, (long long)mode,
               (long long)hist[mode], (long long)best);
        CHECK_MSG(rate_of(a, mode, d, s, rr) >= 0.98 * rate_of(a, best, d, s, rr), "a %.2f: K %lld chosen, best %lld", a,
                  (long long)mode, (long long)best);
    }
    /* the old estimate, accepted / drafted per round, at a = 0.8 and K = 4:
     * E = (a + a^2 + a^3 + a^4) / 4 = 0.590, not 0.8 */
    uint64_t rng = 99;
    double old = 0;
    for (int round = 0; round < 20000; round++) {
        int64_t acc = 0;
        while (acc < 4 && lmc_rng_uniform(&rng) < 0.8) acc++;
        old += (double)acc / 4 / 20000;
    }
    printf("  accepted / drafted at a 0.8, K 4: %.3f\n", old);
    CHECK_MSG(0.8 - old > 0.1, "a/k at a 0.8: %.3f", old);
    return test_finish("test_spec_k");
}
