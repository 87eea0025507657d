/* backend_cuda.h — the CUDA backend: a `struct lmc_backend` table whose
 * memory lives on one NVIDIA GPU (host_memory = false). Activations stay
 * float32 (the table's contract); weights are used in the dtype they were
 * uploaded in (F32, F16, BF16). Builds without CUDA get stubs that report
 * LMC_ERR_UNSUPPORTED and a device count of 0. */
#ifndef LMC_BACKEND_CUDA_H
#define LMC_BACKEND_CUDA_H

#include "ops/backend.h"

#include <stdbool.h>
#include <stddef.h>

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

/* Precision of the attention op: false (default) keeps the KV cache in
 * bf16 (be->kv_dtype) and runs prefill on bf16 tensor cores (q rounded to
 * bf16, fp32 accumulation and softmax); true keeps the cache in f32 and
 * runs every attention in fp32 (the --dtype fp32 checking mode). Set it
 * before lmc_kv_init. Decode-sized calls (few queries) run the fp32
 * split-K kernel over either cache type. */
void lmc_backend_cuda_set_fp32_attention(struct lmc_backend *be, bool on);

/* Training precision: true (mixed precision) multiplies F32 weights —
 * the training master copies — in bf16 with fp32 accumulation (matmul,
 * matmul_bwd, classifier_xent convert both GEMM operands to bf16; outputs
 * and gradients stay f32) and runs attention_train / attention_bwd on bf16
 * tensor cores; false (default) keeps every training op in fp32 (the
 * checking mode). Inference on BF16/F16 weights is not affected. */
void lmc_backend_cuda_set_train_bf16(struct lmc_backend *be, bool on);

/* Turns a copy of the CUDA table (sharing its ctx) into the compressed
 * KV-cache variant (infer/kvq.h): kv_dtype an opaque 2-byte slot,
 * rope_kv_store and attention the compressed store and attention of
 * ops/cuda/attention_kvq.cu, no paged attention. No-op without CUDA. */
void lmc_backend_cuda_set_kvq(struct lmc_backend *be);

/* Turns a copy of the CUDA table (sharing its ctx) into the compressed
 * paged-pool variant of format fmt (1 q8, 2 q4: attention_paged; 3 kivi2:
 * attention_paged_ring) of ops/cuda/attention_paged_kvq.cu; infer/kvq.c
 * sets the rest. No-op without CUDA. */
void lmc_backend_cuda_set_kvq_paged(struct lmc_backend *be, int fmt);

/* Device memory in use on the backend's GPU (total - free, every process
 * and the CUDA context included); 0 without CUDA. For benches. */
size_t lmc_backend_cuda_mem_used(const struct lmc_backend *be);

#ifdef __cplusplus
}
#endif

#endif
