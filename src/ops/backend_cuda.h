/* backend_cuda.h — the CUDA backend: a `struct lmc_backend` table whose
 * memory lives on one NVIDIA GPU (host_memory = false). Activations stay
 * float32 (the table's contract); weights are used in the dtype they were
 * uploaded in (F32, F16, BF16). Builds without CUDA get stubs that report
 * LMC_ERR_UNSUPPORTED and a device count of 0. */
#ifndef LMC_BACKEND_CUDA_H
#define LMC_BACKEND_CUDA_H

#include "ops/backend.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is none, the driver is
 * missing, or this build has no CUDA (never aborts). */
int lmc_cuda_device_count(void);

/* The CUDA backend on device `device` (0-based). Fails with
 * LMC_ERR_UNSUPPORTED when the build or the machine has no such device,
 * LMC_ERR_OOM when the stream, cuBLASLt handle or workspace cannot be made.
 * lmc_backend_cuda_free releases the table's ctx. */
lmc_status lmc_backend_cuda_init(struct lmc_backend *be, int device, lmc_err *err);
void lmc_backend_cuda_free(struct lmc_backend *be);

/* Precision of the attention op: false (default) runs prefill on bf16
 * tensor cores (q, k, v rounded to bf16, fp32 accumulation and softmax);
 * true runs every attention in fp32 (the --dtype fp32 checking mode).
 * Decode-sized calls (few queries) always run in fp32. */
void lmc_backend_cuda_set_fp32_attention(struct lmc_backend *be, bool on);

#ifdef __cplusplus
}
#endif

#endif
