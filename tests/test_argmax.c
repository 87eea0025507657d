/* test_argmax.c — the CPU backend's argmax_rows and the sampler's greedy
 * choice (lmc_argmax) against the scalar scan on odd sizes, ties, NaNs and
 * infinities; the vector kernel (core/argmax.h's lmc_argmax_f32) against
 * that scan (lmc_argmax_f32_scan) on every
 * length 1..300 and vocabulary sizes, with ties, NaNs, infinities, signed
 * zeros and the maximum in the tail; lmc_model_forward_batch_argmax is
 * covered through the scheduler tests. */
#include "core/argmax.h"
#include "infer/sampler.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>

/* pattern p on row x of n: the cases the scan's semantics pin down */
static void fill(float *x, int64_t n, int p, uint64_t *rng) {
    for (int64_t i = 0; i < n; i++) x[i] = test_rand(rng) * 3.0f;
    switch (p) {
    case 1: x[n / 3] = x[n - 1] = 9.0f; break;                         /* tie: first */
    case 2: for (int64_t i = 1; i < n; i += 2) x[i] = NAN; break;      /* never taken */
    case 3: x[0] = NAN; break;                                         /* stays 0 */
    case 4: for (int64_t i = 0; i < n; i++) x[i] = -INFINITY; break;   /* all -inf: 0 */
    case 5: for (int64_t i = 0; i < n; i++) x[i] = (i % 3) ? 0.0f : -0.0f; break; /* +-0 tie */
    case 6: x[n - 1] = 50.0f; break;                                   /* in the tail */
    case 7: x[n / 2] = INFINITY; x[n - 1] = INFINITY; x[1 % n] = NAN; break;
    case 8: for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 17); break; /* many ties */
    default: break;
    }
}

static void check_kernel(uint64_t *rng) {
    const int64_t big[] = {511, 512, 513, 1000, 4095, 32000, 32001, 151936};
    float *x = malloc(151936 * sizeof *x);
    for (int p = 0; p <= 8; p++) {
        for (int64_t n = 1; n <= 300 + 8; n++) {
            int64_t len = n <= 300 ? n : big[n - 301];
            fill(x, len, p, rng);
            int64_t a = lmc_argmax_f32(x, len), b = lmc_argmax_f32_scan(x, len);
            CHECK_MSG(a == b, "pattern %d n %lld: %lld vs %lld", p, (long long)len, (long long)a,
                      (long long)b);
            if (p == 3) CHECK(a == 0);
        }
    }
    free(x);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    CHECK(be.argmax_rows != NULL);
    uint64_t rng = 4242;
    const int64_t shapes[][2] = {{1, 1}, {1, 2}, {3, 7}, {5, 511}, {2, 513}, {9, 1000}, {4, 32001}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int64_t R = shapes[c][0], V = shapes[c][1];
        float *x = malloc((size_t)(R * V) * sizeof *x);
        int32_t *ids = malloc((size_t)R * sizeof *ids);
        for (int64_t i = 0; i < R * V; i++) x[i] = test_rand(&rng) * 3.0f;
        for (int64_t r = 0; r < R; r++) {
            float *row = x + r * V;
            if (r % 4 == 1 && V > 2) row[V / 3] = row[V - 1] = 7.0f;          /* tie: first */
            if (r % 4 == 2) for (int64_t i = 1; i < V; i += 2) row[i] = NAN;   /* never taken */
            if (r % 4 == 3) row[0] = NAN;                                      /* stays 0 */
        }
        be.argmax_rows(be.ctx, ids, x, R, V);
        for (int64_t r = 0; r < R; r++) {
            int64_t want = lmc_argmax_f32_scan(x + r * V, V);
            CHECK_MSG(ids[r] == want && lmc_argmax(x + r * V, V) == want, "%lld x %lld row %lld: %d, %d vs %lld",
                      (long long)R, (long long)V, (long long)r, ids[r], lmc_argmax(x + r * V, V), (long long)want);
        }
        if (V > 2 && R > 1) CHECK(ids[1] == V / 3);
        free(x);
        free(ids);
    }
    check_kernel(&rng);
    lmc_backend_cpu_free(&be);
    return test_finish("test_argmax");
}
