/* backend_cuda_stub.c — the CUDA backend's entry points for builds without
 * CUDA (no nvcc at configure time, or -DLMC_CUDA=OFF): no devices, and an
 * init that says so. */
#ifndef LMC_HAVE_CUDA
#include "ops/backend_cuda.h"

#include <string.h>

int lmc_cuda_device_count(void) { return 0; }

lmc_status lmc_backend_cuda_init(struct lmc_backend *be, int device, lmc_err *err) {
    (void)device;
    memset(be, 0, sizeof *be);
    return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "this build has no CUDA backend");
}

void lmc_backend_cuda_free(struct lmc_backend *be) {
    if (be) memset(be, 0, sizeof *be);
}

void lmc_backend_cuda_set_fp32_attention(struct lmc_backend *be, bool on) {
    (void)be;
    (void)on;
}
#else
typedef int lmc_backend_cuda_stub_unused; /* ISO C forbids an empty file */
#endif
