/* offload.c — host memory for offloaded training checkpoints on the CPU
 * (backend.h host_alloc / host_free / offload / offload_wait): the backend's
 * memory is host memory, so a host buffer is a plain allocation (not the
 * backend's alloc: the memory account keeps it apart), an offload copy is a
 * memcpy done at once, and waiting is nothing. CUDA twin ops/cuda/offload.cu. */
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>
#include <string.h>

void *lmc_cpu_host_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    return malloc(bytes ? bytes : 1);
}

void lmc_cpu_host_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

void lmc_cpu_offload(void *ctx, void *dst, const void *src, size_t bytes, int slot) {
    (void)ctx;
    LMC_ASSERT(slot >= 0 && slot < LMC_OFFLOAD_SLOTS);
    if (bytes) memcpy(dst, src, bytes);
}

void lmc_cpu_offload_wait(void *ctx, int slot) {
    (void)ctx;
    LMC_ASSERT(slot >= 0 && slot < LMC_OFFLOAD_SLOTS);
}
