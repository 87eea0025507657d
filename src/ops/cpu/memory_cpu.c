/* memory_cpu.c — the CPU backend's memory entries: host memory, so alloc
 * is aligned malloc and transfers are memcpy. */
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>
#include <string.h>

void *lmc_cpu_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

void lmc_cpu_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

void lmc_cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes) memmove(dst, src, bytes);
}

void lmc_cpu_sync(void *ctx) { (void)ctx; }
