/* backend_cuda.cu — the CUDA backend table: device selection, the context
 * (stream, cuBLASLt handle and workspace), the memory entries (cudaMalloc,
 * copies on the backend's stream) and scratch growth. Each op lives in its
 * own .cu file. */
#include "ops/cuda/common.cuh"
#include "ops/cuda/attention_train.h"
#include "ops/cuda/ssm.cuh"

extern "C" {
#include "ops/optim_ops.h"
}

#include <stdlib.h>
#include <string.h>

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)

extern "C" void lmc_cuda_fail(const char *what, const char *msg, const char *file, int line) {
    lmc_log(0, "CUDA: %s failed: %s", what, msg);
    lmc_assert_fail(what, file, line);
}

extern "C" int lmc_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver / no device: not sticky, clear it */
        return 0;
    }
    return n;
}

void lmc_cuda_reserve(struct lmc_cuda_ctx *c, void **buf, size_t *cap, size_t bytes) {
    if (*cap >= bytes) return;
    size_t want = bytes + bytes / 4;
    if (*buf) {
        LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
        LMC_CUDA_CHECK(cudaFree(*buf));
        *buf = NULL;
        *cap = 0;
    }
    LMC_CUDA_CHECK(cudaMalloc(buf, want));
    *cap = want;
}

extern "C" void *lmc_cuda_alloc(void *ctx, size_t bytes) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_CUDA_CHECK(cudaSetDevice(c->device));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is the caller's to report */
        return NULL;
    }
    return p;
}

extern "C" void lmc_cuda_free_mem(void *ctx, void *p) {
    (void)ctx;
    if (p) LMC_CUDA_CHECK(cudaFree(p));
}

/* The host buffer of an upload may be reused (or go out of scope) as soon
 * as the call returns; downloaded data is there when download returns.
 * Small uploads (ids, positions, rope frequencies: <= a quarter of the
 * ring) are copied into a pinned staging ring and queued on the stream
 * without waiting; the ring restarts after any stream sync (download, sync)
 * and syncs itself only when full. Large uploads (weights) copy
 * synchronously from the caller's memory. Downloads wait for the queued
 * work. */
#define STAGE_BYTES ((size_t)1 << 20)

extern "C" void lmc_cuda_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (!bytes) return;
    if (c->stage && bytes <= c->stage_bytes / 4) {
        size_t off = (c->stage_off + 255) & ~(size_t)255;
        if (off + bytes > c->stage_bytes) { /* ring full: wait until its copies are done */
            LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
            off = 0;
        }
        memcpy((char *)c->stage + off, src, bytes);
        LMC_CUDA_CHECK(cudaMemcpyAsync(dst, (char *)c->stage + off, bytes, cudaMemcpyHostToDevice,
                                       c->stream));
        c->stage_off = off + bytes;
        return;
    }
    LMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    c->stage_off = 0;
}

extern "C" void lmc_cuda_download(void *ctx, void *dst, const void *src, size_t bytes) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (!bytes) return;
    LMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    c->stage_off = 0;
}

extern "C" void lmc_cuda_sync(void *ctx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    c->stage_off = 0;
}

static void ctx_release(struct lmc_cuda_ctx *c) {
    /* teardown: report nothing, the device may already be in error */
    for (int i = 0; i < LMC_CUDA_MM_PLANS; i++) {
        struct lmc_cuda_mm_plan *p = &c->plans[i];
        if (!p->used) continue;
        cublasLtMatrixLayoutDestroy(p->a);
        cublasLtMatrixLayoutDestroy(p->b);
        cublasLtMatrixLayoutDestroy(p->c);
        cublasLtMatmulDescDestroy(p->desc);
    }
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->copy_stream) {
        cudaStreamSynchronize(c->copy_stream);
        cudaEventDestroy(c->copy_after);
        for (int i = 0; i < LMC_OFFLOAD_SLOTS; i++) cudaEventDestroy(c->copy_done[i]);
        cudaStreamDestroy(c->copy_stream);
    }
    lmc_cuda_muon_cache_free(c);
    lmc_cuda_qf_arena_free(c);
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->scratch) cudaFree(c->scratch);
    if (c->attn_part) cudaFree(c->attn_part);
    if (c->attn_segs) cudaFree(c->attn_segs);
    if (c->ff_up) cudaFree(c->ff_up);
    if (c->hold_buf) cudaFree(c->hold_buf);
    if (c->stage) cudaFreeHost(c->stage);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c);
}

extern "C" lmc_status lmc_backend_cuda_init(struct lmc_backend *be, int device, lmc_err *err) {
    memset(be, 0, sizeof *be);
    int n = lmc_cuda_device_count();
    if (n == 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "cuda backend: no CUDA device found");
    if (device < 0 || device >= n)
        return lmc_err_set(err, LMC_ERR_ARG, "cuda backend: device %d out of range (0..%d)", device,
                           n - 1);
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return lmc_err_set(err, LMC_ERR_OOM, "cuda backend: out of memory");
    c->device = device;
    cudaError_t e;
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        ctx_release(c);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "cuda backend: device %d: %s", device,
                           cudaGetErrorString(e));
    }
    if (prop.major < 9) {
        ctx_release(c);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "cuda backend: device %d (%s) has compute capability %d.%d; "
                           "this build needs 9.0 (sm_90)", device, prop.name, prop.major, prop.minor);
    }
    c->n_sm = prop.multiProcessorCount;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        ctx_release(c);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda backend: cannot create a stream: %s",
                           cudaGetErrorString(e));
    }
    if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        c->lt = NULL;
        ctx_release(c);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda backend: cannot create a cuBLASLt handle");
    }
    c->lt_ws_bytes = LT_WORKSPACE_BYTES;
    if (cudaMalloc(&c->lt_ws, c->lt_ws_bytes) != cudaSuccess) {
        c->lt_ws = NULL;
        ctx_release(c);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda backend: cannot allocate %zu bytes of workspace",
                           (size_t)LT_WORKSPACE_BYTES);
    }
    if (cudaMallocHost(&c->stage, STAGE_BYTES) != cudaSuccess) {
        c->stage = NULL;
        ctx_release(c);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda backend: cannot allocate %zu bytes of pinned memory",
                           STAGE_BYTES);
    }
    c->stage_bytes = STAGE_BYTES;
    c->kv_dtype = LMC_DTYPE_BF16;
    be->name = "cuda";
    be->kv_dtype = c->kv_dtype;
    be->matmul_multi = lmc_cuda_matmul_multi;
    be->matmul_add = lmc_cuda_matmul_add;
    be->matmul_swiglu = lmc_cuda_matmul_swiglu;
    be->rope_kv_store = lmc_cuda_rope_kv_store;
    be->ctx = c;
    be->host_memory = false;
    be->alloc = lmc_cuda_alloc;
    be->free = lmc_cuda_free_mem;
    be->upload = lmc_cuda_upload;
    be->download = lmc_cuda_download;
    be->sync = lmc_cuda_sync;
    be->matmul = lmc_cuda_matmul;
    be->embed = lmc_cuda_embed;
    be->rmsnorm = lmc_cuda_rmsnorm;
    be->layernorm = lmc_cuda_layernorm;
    be->rope = lmc_cuda_rope;
    be->attention = lmc_cuda_attention;
    be->attention_paged = lmc_cuda_attention_paged;
    be->swiglu = lmc_cuda_swiglu;
    be->gelu = lmc_cuda_gelu;
    be->add = lmc_cuda_add;
    be->dropout = lmc_cuda_dropout;
    be->argmax_rows = lmc_cuda_argmax_rows;
    be->matmul_bwd = lmc_cuda_matmul_bwd;
    be->operand_hold = lmc_cuda_operand_hold; /* one bf16 copy per held GEMM operand */
    be->operand_release = lmc_cuda_operand_release;
    be->embed_bwd = lmc_cuda_embed_bwd;
    be->rmsnorm_bwd = lmc_cuda_rmsnorm_bwd;
    be->layernorm_bwd = lmc_cuda_layernorm_bwd;
    be->rope_bwd = lmc_cuda_rope_bwd;
    be->swiglu_bwd = lmc_cuda_swiglu_bwd;
    be->moe_gemm = lmc_cuda_moe_gemm; /* mixture of experts */
    be->moe_gemm_bwd = lmc_cuda_moe_gemm_bwd;
    be->moe_gemm_dev = lmc_cuda_moe_gemm_dev;
    be->moe_route = lmc_cuda_moe_route;
    be->moe_stats = lmc_cuda_moe_stats;
    be->moe_gather = lmc_cuda_moe_gather;
    be->moe_gather_bwd = lmc_cuda_moe_gather_bwd;
    be->moe_combine = lmc_cuda_moe_combine;
    be->moe_combine_bwd = lmc_cuda_moe_combine_bwd;
    be->clamp = lmc_cuda_clamp; /* OLMoE clip_qkv */
    be->clamp_bwd = lmc_cuda_clamp_bwd;
    be->convert = lmc_cuda_convert; /* bf16-saved training activations */
    be->host_alloc = lmc_cuda_host_alloc; /* offloaded checkpoints (offload.cu) */
    be->host_free = lmc_cuda_host_free;
    be->offload = lmc_cuda_offload;
    be->offload_wait = lmc_cuda_offload_wait;
    be->gelu_bwd = lmc_cuda_gelu_bwd;
    be->classifier_xent = lmc_cuda_classifier_xent;
    be->soft_xent = lmc_cuda_soft_xent;
    be->zero = lmc_cuda_zero;
    be->sumsq = lmc_cuda_sumsq;
    be->adamw = lmc_cuda_adamw;
    be->muon = lmc_cuda_muon;           /* ops/optim_ops.h */
    be->muon_batch = lmc_cuda_muon_batch;
    be->adamw8bit = lmc_cuda_adamw8bit;
    be->lowrank = lmc_cuda_lowrank;
    be->galore_ritz = lmc_cuda_galore_ritz;
    be->galore_orth = lmc_cuda_galore_orth;
    be->galore_rotate = lmc_cuda_galore_rotate;
    be->attention_train = lmc_cuda_attention_train;
    be->attention_bwd = lmc_cuda_attention_bwd;
    be->attention_train_segs = lmc_cuda_attention_train_segs; /* packed sequences, one launch */
    be->attention_bwd_segs = lmc_cuda_attention_bwd_segs;
    be->attn_block_fwd = lmc_cuda_attn_block_fwd; /* ring attention (context parallel) */
    be->attn_block_merge = lmc_cuda_attn_block_merge;
    be->attn_block_bwd = lmc_cuda_attn_block_bwd;
    be->sample_rows = lmc_cuda_sample_rows;
    /* state-space models (issue 15; ops/cuda/ssm.cuh) */
    be->conv1d_causal = lmc_cuda_conv1d_causal;
    be->conv1d_causal_bwd = lmc_cuda_conv1d_causal_bwd;
    be->conv1d_causal_step = lmc_cuda_conv1d_causal_step;
    be->ssm_scan = lmc_cuda_ssm_scan;
    be->ssm_scan_bwd = lmc_cuda_ssm_scan_bwd;
    be->ssm_scan_step = lmc_cuda_ssm_scan_step;
    be->ssd_chunk = lmc_cuda_ssd_chunk;
    be->ssd_chunk_bwd = lmc_cuda_ssd_chunk_bwd;
    be->ssd_step = lmc_cuda_ssd_step;
    be->rmsnorm_gated = lmc_cuda_rmsnorm_gated;
    be->rmsnorm_gated_bwd = lmc_cuda_rmsnorm_gated_bwd;
    /* quantized weights (issue 10; qmatmul.cu) */
    be->qmatmul = lmc_cuda_qmatmul;
    be->qweight_upload = lmc_cuda_qweight_upload;
    be->qweight_free = lmc_cuda_qweight_free;
    /* QLoRA's 4-bit base in float math (issue 12; qmatmul_f.cu) */
    be->qweight_upload_f = lmc_cuda_qweight_upload_f;
    be->qweight_free_f = lmc_cuda_qweight_free_f;
    be->qmatmul_f = lmc_cuda_qmatmul_f;
    be->qmatmul_f_bwd = lmc_cuda_qmatmul_f_bwd;
    return LMC_OK;
}

extern "C" void lmc_backend_cuda_free(struct lmc_backend *be) {
    if (!be || !be->ctx) return;
    ctx_release((struct lmc_cuda_ctx *)be->ctx);
    memset(be, 0, sizeof *be);
}

extern "C" size_t lmc_backend_cuda_mem_used(const struct lmc_backend *be) {
    if (!be || !be->ctx) return 0;
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)be->ctx;
    size_t fr = 0, tot = 0;
    LMC_CUDA_CHECK(cudaSetDevice(c->device));
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    LMC_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    return tot - fr;
}

extern "C" void lmc_backend_cuda_set_fp32_attention(struct lmc_backend *be, bool on) {
    if (be && be->ctx && be->name && !strcmp(be->name, "cuda")) {
        struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)be->ctx;
        c->attn_fp32 = on;
        c->kv_dtype = be->kv_dtype = on ? LMC_DTYPE_F32 : LMC_DTYPE_BF16;
    }
}

extern "C" void lmc_backend_cuda_set_train_bf16(struct lmc_backend *be, bool on) {
    if (be && be->ctx && be->name && !strcmp(be->name, "cuda"))
        ((struct lmc_cuda_ctx *)be->ctx)->train_bf16 = on;
}
