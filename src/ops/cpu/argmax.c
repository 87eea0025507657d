/* argmax.c — per-row argmax of logits (greedy sampling without the logits
 * leaving the backend; on the CPU they are host memory anyway). A
 * left-to-right scan keeping the first strict maximum: ties go to the first
 * index, a NaN is never taken over a number, a NaN at index 0 stays. */
#include "ops/cpu/ops_cpu.h"

void lmc_cpu_argmax_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows,
                         int64_t V) {
    (void)ctx;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits + r * V;
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (x[i] > x[best]) best = i;
        out_ids[r] = (int32_t)best;
    }
}
