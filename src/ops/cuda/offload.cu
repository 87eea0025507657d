/* offload.cu — training checkpoints in pinned host memory (backend.h
 * host_alloc / host_free / offload / offload_wait; CPU twin
 * ops/cpu/offload.c). An offload copy runs on a second stream (created on
 * first use) after the work queued so far on the ctx's stream (an event
 * recorded there), so it overlaps the kernels queued after it; it records
 * the slot's event, which offload_wait makes the ctx's stream wait for.
 * Copies on the second stream run in the order they were queued. */
#include "ops/cuda/common.cuh"

extern "C" void *lmc_cuda_host_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of pinned memory: the caller's to report */
        return NULL;
    }
    return p;
}

extern "C" void lmc_cuda_host_free(void *ctx, void *p) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (!p) return;
    if (c->copy_stream) LMC_CUDA_CHECK(cudaStreamSynchronize(c->copy_stream)); /* no copy still reads or writes it */
    LMC_CUDA_CHECK(cudaFreeHost(p));
}

/* the second stream and the events, on first use */
static void offload_init(struct lmc_cuda_ctx *c) {
    if (c->copy_stream) return;
    LMC_CUDA_CHECK(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    LMC_CUDA_CHECK(cudaEventCreateWithFlags(&c->copy_after, cudaEventDisableTiming));
    for (int i = 0; i < LMC_OFFLOAD_SLOTS; i++)
        LMC_CUDA_CHECK(cudaEventCreateWithFlags(&c->copy_done[i], cudaEventDisableTiming));
}

extern "C" void lmc_cuda_offload(void *ctx, void *dst, const void *src, size_t bytes, int slot) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(slot >= 0 && slot < LMC_OFFLOAD_SLOTS);
    offload_init(c);
    LMC_CUDA_CHECK(cudaEventRecord(c->copy_after, c->stream));
    LMC_CUDA_CHECK(cudaStreamWaitEvent(c->copy_stream, c->copy_after, 0));
    if (bytes) LMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, c->copy_stream));
    LMC_CUDA_CHECK(cudaEventRecord(c->copy_done[slot], c->copy_stream));
    c->copy_slots |= 1u << slot;
}

extern "C" void lmc_cuda_offload_wait(void *ctx, int slot) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(slot >= 0 && slot < LMC_OFFLOAD_SLOTS);
    if (!(c->copy_slots & (1u << slot))) return; /* nothing was copied through it */
    LMC_CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->copy_done[slot], 0));
}
