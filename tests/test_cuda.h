/* test_cuda.h — what the CUDA op tests share: the two backends under test
 * (cpu, gpu), random host data, and device buffers (upload, NaN-poisoned
 * outputs, download). The includer defines TEST_CUDA_SEED (its rng's seed)
 * and includes this only when LMC_HAVE_CUDA is defined. */
#ifndef LMC_TEST_CUDA_H
#define LMC_TEST_CUDA_H

#include "core/core.h"
#include "ops/backend.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef TEST_CUDA_SEED
#error "define TEST_CUDA_SEED before including test_cuda.h"
#endif

static uint64_t rng = TEST_CUDA_SEED;
static struct lmc_backend cpu, gpu;

/* n uniform floats in [-scale, scale), never 0 (malloc'd; n may be 0) */
static inline float *rand_f(int64_t n, float scale) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = test_rand(&rng) * scale;
    return p;
}

/* a device copy of bytes bytes of host data (bytes may be 0) */
static inline void *up(const void *h, size_t bytes) {
    void *d = gpu.alloc(gpu.ctx, bytes ? bytes : 1);
    LMC_ASSERT(d != NULL);
    if (bytes) gpu.upload(gpu.ctx, d, h, bytes);
    return d;
}
static inline float *upf(const float *h, int64_t n) { return up(h, (size_t)n * sizeof(float)); }

/* a device buffer of n floats filled with NaN, so unwritten outputs show */
static inline float *dev_poison(int64_t n) {
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    float *d = upf(h, n);
    free(h);
    return d;
}

/* a host copy (malloc'd) of n device floats */
static inline float *down(const float *d, int64_t n) {
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (n) gpu.download(gpu.ctx, h, d, (size_t)n * sizeof(float));
    return h;
}
static inline void dfree(void *d) { gpu.free(gpu.ctx, d); }

#endif
