/* argmax.c — per-row argmax of logits (greedy sampling without the logits
 * leaving the backend; on the CPU they are host memory anyway): each row's
 * first maximum as lmc_argmax_f32 (core/argmax.h) finds it. */
#include "core/argmax.h"
#include "ops/cpu/ops_cpu.h"

void lmc_cpu_argmax_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows,
                         int64_t V) {
    (void)ctx;
    for (int64_t r = 0; r < rows; r++) out_ids[r] = (int32_t)lmc_argmax_f32(logits + r * V, V);
}
