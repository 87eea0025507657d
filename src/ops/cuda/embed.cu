/* embed.cu — embedding gather on the GPU: y(n,C) = table[ids[i]] as f32,
 * the table in F32, F16 or BF16. One block row per token. The backward
 * (dtable += dy scattered by ids) is deterministic: tokens are sorted by
 * (id, index) and each id's rows are summed in token order. */
#include "ops/cuda/common.cuh"

#include <cub/device/device_radix_sort.cuh>

template <typename T>
__global__ void embed_fwd_kernel(float *y, const T *table, const int32_t *ids, int64_t n,
                                 int64_t C) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const T *row = table + (int64_t)ids[i] * C;
        float *out = y + i * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[c] = lmc_ld_f(row, c);
    }
}

extern "C" void lmc_cuda_embed(void *ctx, float *y, const struct lmc_mat *table, const int32_t *ids,
                               int64_t n) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0 || table->cols == 0) return;
    unsigned grid = (unsigned)LMC_MIN(n, (int64_t)65535);
    int threads = table->cols >= 256 ? 256 : 128;
    switch (table->dtype) {
    case LMC_DTYPE_F32:
        embed_fwd_kernel<<<grid, threads, 0, c->stream>>>(y, (const float *)table->data, ids, n,
                                                          table->cols);
        break;
    case LMC_DTYPE_BF16:
        embed_fwd_kernel<<<grid, threads, 0, c->stream>>>(y, (const __nv_bfloat16 *)table->data,
                                                          ids, n, table->cols);
        break;
    case LMC_DTYPE_F16:
        embed_fwd_kernel<<<grid, threads, 0, c->stream>>>(y, (const __half *)table->data, ids, n,
                                                          table->cols);
        break;
    default: LMC_ASSERT(!"embed: table dtype must be F32, F16 or BF16");
    }
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward: dtable[ids[i]] += dy[i] ----
 * keys (id << 32 | i) are radix-sorted (unique keys: the order is fixed),
 * so every id's tokens form one run in token order. A block per run start
 * (others exit at once), threads over columns, adds the run's rows to the
 * table row in token order: the same float additions, in the same order,
 * as the CPU twin (bit-equal results), no atomics. */
__global__ void embed_keys_bwd_kernel(uint64_t *keys, const int32_t *ids, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        keys[i] = (uint64_t)(uint32_t)ids[i] << 32 | (uint64_t)i;
}

__global__ void embed_bwd_kernel(float *dt, const float *dy, const uint64_t *keys, int64_t n,
                                 int64_t C) {
    for (int64_t s = blockIdx.x; s < n; s += gridDim.x) {
        const uint32_t id = (uint32_t)(keys[s] >> 32);
        if (s > 0 && (uint32_t)(keys[s - 1] >> 32) == id) continue; /* not a run start */
        int64_t lo = s + 1, hi = n; /* the run's end: first key of a larger id */
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if ((uint32_t)(keys[mid] >> 32) > id) hi = mid;
            else lo = mid + 1;
        }
        const int64_t e = lo;
        float *d = dt + (int64_t)id * C;
        for (int64_t j = (int64_t)blockIdx.y * blockDim.x + threadIdx.x; j < C;
             j += (int64_t)gridDim.y * blockDim.x) {
            float acc = d[j];
#pragma unroll 4
            for (int64_t t = s; t < e; t++) acc += dy[(int64_t)(uint32_t)keys[t] * C + j];
            d[j] = acc;
        }
    }
}

extern "C" void lmc_cuda_embed_bwd(void *ctx, float *dtable, const float *dy, const int32_t *ids,
                                   int64_t n, int64_t C) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0 || C <= 0) return;
    LMC_ASSERT(n <= INT32_MAX);
    size_t tmp = 0;
    LMC_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(NULL, tmp, (const uint64_t *)NULL,
                                                  (uint64_t *)NULL, (int)n, 0, 64, c->stream));
    size_t kb = lmc_cuda_al256((size_t)n * sizeof(uint64_t));
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, 2 * kb + tmp);
    uint64_t *kin = (uint64_t *)c->scratch, *kout = (uint64_t *)((char *)c->scratch + kb);
    void *tmp_p = (char *)c->scratch + 2 * kb;
    embed_keys_bwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(kin, ids, n);
    LMC_CUDA_LAUNCH_CHECK();
    LMC_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(tmp_p, tmp, (const uint64_t *)kin, kout, (int)n,
                                                  0, 64, c->stream));
    dim3 grid((unsigned)LMC_MIN(n, (int64_t)1 << 20), (unsigned)LMC_MIN((C + 255) / 256, (int64_t)16));
    embed_bwd_kernel<<<grid, 256, 0, c->stream>>>(dtable, dy, kout, n, C);
    LMC_CUDA_LAUNCH_CHECK();
}
