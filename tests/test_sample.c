/* test_sample.c — the CPU backend's sample_rows (the sampler's per-row
 * core) against lmc_sampler_sample fed the same uniforms (the sampler's
 * own rng stream), and against a direct O(V^2) reference of the
 * semantics on small vocabularies: odd sizes, ties, -inf entries, many
 * parameter combinations. */
#include "infer/sampler.h"
#include "core/rng.h"
#include "ops/backend.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* rank order: descending probability, ties by lower id */
static int before(const float *pr, int64_t a, int64_t b) {
    return pr[a] > pr[b] || (pr[a] == pr[b] && a < b);
}

static int32_t reference(const float *x, int64_t V, const struct lmc_sample_row *p) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    if (p->temperature == 0 || x[best] == -INFINITY) return (int32_t)best;
    float *pr = malloc((size_t)V * sizeof *pr);
    int64_t *ord = malloc((size_t)V * sizeof *ord);
    for (int64_t i = 0; i < V; i++) pr[i] = (float)exp((double)(float)((x[i] - x[best]) / p->temperature));
    int sorted = p->top_k > 0 || p->top_p < 1;
    for (int64_t i = 0; i < V; i++) { /* position of i = number of elements before it */
        int64_t pos = i;
        if (sorted) {
            pos = 0;
            for (int64_t j = 0; j < V; j++) pos += j != i && before(pr, j, i);
        }
        ord[pos] = i;
    }
    int64_t n = V;
    if (p->top_k > 0 && n > p->top_k) n = p->top_k;
    if (p->top_p < 1) {
        double mass = 0, cum = 0;
        for (int64_t i = 0; i < n; i++) mass += pr[ord[i]];
        int64_t keep = n;
        for (int64_t i = 0; i < n; i++) {
            cum += pr[ord[i]];
            if (cum >= p->top_p * mass) { keep = i + 1; break; }
        }
        n = keep;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (!(p->min_p > 0) || pr[ord[i]] >= (float)p->min_p) ord[k++] = ord[i];
    n = k;
    double tot = 0;
    for (int64_t i = 0; i < n; i++) tot += pr[ord[i]];
    double r = p->u * tot;
    int32_t id = (int32_t)ord[0];
    for (int64_t i = 0; i < n; i++) {
        if (pr[ord[i]] > 0) id = (int32_t)ord[i]; /* rounding fallback: last with p > 0 */
        r -= pr[ord[i]];
        if (r < 0) { id = (int32_t)ord[i]; break; }
    }
    free(pr);
    free(ord);
    return id;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    CHECK(be.sample_rows != NULL);
    const double temps[] = {0, 0.3, 1.0, 1.7};
    const int64_t topks[] = {0, 1, 5, 40};
    const double topps[] = {1.0, 0.9, 0.5, 0.05};
    const double minps[] = {0, 0.05, 0.3};
    const int64_t sizes[] = {1, 2, 7, 33, 257, 1001, 32003};
    uint64_t rng = 777;
    long checked = 0, ref_checked = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        int64_t V = sizes[si];
        enum { R = 6 };
        float *x = malloc((size_t)(R * V) * sizeof *x), *tmp = malloc((size_t)V * sizeof *tmp);
        for (int64_t i = 0; i < R * V; i++) x[i] = test_rand(&rng) * 4.0f;
        for (int64_t r = 0; r < R; r++) {
            float *row = x + r * V;
            if (r == 1) for (int64_t i = 0; i < V; i++) row[i] = (float)(int)(row[i] * 2) * 0.5f; /* ties */
            if (r == 2) for (int64_t i = 1; i < V; i += 3) row[i] = -INFINITY;
            if (r == 3 && V > 3) row[V - 1] = row[1] = 6.0f; /* tied maximum */
            if (r == 4) for (int64_t i = 0; i < V; i++) row[i] = 1.0f; /* all tied */
        }
        for (size_t a = 0; a < 4; a++) for (size_t b = 0; b < 4; b++) for (size_t c = 0; c < 4; c++)
        for (size_t d = 0; d < 3; d++) {
            struct lmc_sampler_params sp;
            lmc_sampler_defaults(&sp);
            sp.temperature = temps[a];
            sp.top_k = topks[b];
            sp.top_p = topps[c];
            sp.min_p = minps[d];
            sp.seed = rng + a * 1000 + b * 100 + c * 10 + d;
            struct lmc_sampler smp;
            CHECK(lmc_sampler_init(&smp, &sp, V, &err) == LMC_OK);
            struct lmc_sample_row prm[R];
            int32_t want[R], got[R];
            for (int64_t r = 0; r < R; r++) {
                uint64_t before_rng = smp.rng;
                memcpy(tmp, x + r * V, (size_t)V * sizeof *tmp);
                want[r] = lmc_sampler_sample(&smp, tmp, NULL, 0);
                prm[r] = (struct lmc_sample_row){.temperature = sp.temperature, .top_p = sp.top_p,
                                                 .min_p = sp.min_p, .top_k = sp.top_k};
                if (sp.temperature != 0) prm[r].u = lmc_rng_uniform(&before_rng);
                CHECK(before_rng == smp.rng); /* the sampler draws exactly one uniform */
            }
            be.sample_rows(be.ctx, got, x, R, V, prm);
            for (int64_t r = 0; r < R; r++) {
                CHECK_MSG(got[r] == want[r], "V %lld row %lld T %g k %lld p %g minp %g: %d != %d",
                          (long long)V, (long long)r, sp.temperature, (long long)sp.top_k,
                          sp.top_p, sp.min_p, got[r], want[r]);
                CHECK(got[r] >= 0 && got[r] < V);
                checked++;
                if (V <= 1001 && (V <= 257 || r < 2)) {
                    int32_t ref = reference(x + r * V, V, &prm[r]);
                    CHECK_MSG(ref == got[r], "reference V %lld row %lld: %d != %d", (long long)V,
                              (long long)r, ref, got[r]);
                    ref_checked++;
                }
            }
            lmc_sampler_free(&smp);
        }
        free(x);
        free(tmp);
    }
    /* u just below 1 with a banned (-inf) token last in rank order: the
     * draw's rounding must not fall through to a token of probability 0;
     * a row that is -inf everywhere gives 0, as argmax does */
    {
        const float row[11] = {6, 2, 6, 0, 1, 4, 1, 0, 0, 0, -INFINITY};
        struct lmc_sample_row p = {.temperature = 0.2, .top_p = 1, .min_p = 0,
                                   .u = 1.0 - 0x1p-53, .top_k = 11};
        int32_t id = -1;
        be.sample_rows(be.ctx, &id, row, 1, 11, &p);
        CHECK_MSG(id != 10 && row[id] > -INFINITY, "u near 1 drew the banned token (%d)", id);
        float ninf[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        p.top_k = 0;
        be.sample_rows(be.ctx, &id, ninf, 1, 5, &p);
        CHECK(id == 0);
        uint64_t r2 = 99;
        int banned = 0;
        float big[921];
        for (int t = 0; t < 200; t++) {
            for (int i = 0; i < 921; i++) big[i] = (i % 7 == 6) ? -INFINITY : (float)(int)(test_rand(&r2) * 8);
            p.top_k = 921;
            be.sample_rows(be.ctx, &id, big, 1, 921, &p);
            banned += big[id] == -INFINITY;
        }
        CHECK_MSG(banned == 0, "%d of 200 draws at u near 1 picked a -inf token", banned);
    }
    printf("test_sample: %ld rows vs the sampler, %ld vs the reference\n", checked, ref_checked);
    lmc_backend_cpu_free(&be);
    return test_finish("test_sample");
}
