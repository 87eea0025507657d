/* attention_paged.cu — the CUDA twin of attention_paged (contract in
 * backend.h): causal attention of a batch of tokens from many sequences
 * over a paged KV pool, read through per-sequence block tables. Two
 * kernels and a combine:
 *
 *  - attention_paged_store_fwd_kernel: token i's new K/V rows (f32) go to
 *    row bt[seq[i]][pos[i] / bs] * bs + pos[i] % bs of the layer's pool,
 *    converted to the pool's dtype (the backend's kv_dtype: bf16, or f32
 *    in the fp32 checking mode).
 *
 *  - attention_paged_fwd_kernel<KT>: split-K flash decoding in f32 for
 *    every token, prefill and decode alike. A block owns (token, group of
 *    query heads sharing one kv head, key split): its warps are G query
 *    heads x KW key lanes (G * KW <= 8 warps), so one K/V row read from
 *    the pool serves all the heads of the GQA group (the other warps hit
 *    it in L1). Each warp walks keys in steps of 4 with an online softmax
 *    (base 2, max-subtracted), a lane holding a slice of the head dim; a
 *    key's pool row is found through the block table. The KW warps of a
 *    head merge in shared memory; when the keys were split,
 *    attention_paged_combine_fwd_kernel merges the splits' (max, sum, acc)
 *    partials. Positions are device memory, so the split count is chosen
 *    from the block table's capacity (max_blocks * block_size, or the
 *    window) with at most 128 keys a split; blocks of splits past a
 *    token's keys exit at once, a token whose keys fit in one split is
 *    written directly, and the combine reads only the splits with keys.
 */
#include "ops/cuda/attention_paged.cuh"

#include <string.h>

template <typename KT>
__global__ void attention_paged_store_fwd_kernel(KT *kc, KT *vc, const float *k_new,
                                                 const float *v_new, const int32_t *seq,
                                                 const int32_t *pos, const int32_t *bt,
                                                 int64_t T, int64_t kv_row, int64_t max_blocks,
                                                 int64_t bs) {
    int64_t n = T * kv_row;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / kv_row, d = idx % kv_row, p = pos[i];
        int64_t slot = (int64_t)bt[(int64_t)seq[i] * max_blocks + p / bs] * bs + p % bs;
        pa_st(kc + slot * kv_row + d, k_new[idx]);
        pa_st(vc + slot * kv_row + d, v_new[idx]);
    }
}

/* The table entry: kc and vc point at the layer's pool in the backend's
 * kv_dtype (cast to float *). */
extern "C" void lmc_cuda_attention_paged(void *ctx, float *out, const float *q,
                                         const float *k_new, const float *v_new, float *kc,
                                         float *vc, int64_t T, const int32_t *seq,
                                         const int32_t *pos, const int32_t *bt,
                                         int64_t max_blocks, int64_t block_size,
                                         int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                         int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0 && max_blocks > 0);
    LMC_ASSERT(c->kv_dtype == LMC_DTYPE_F32 || c->kv_dtype == LMC_DTYPE_BF16);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    LMC_ASSERT(hd <= 32 * PA_MAXJ && T <= 0x7fffffff);
    const bool bf = c->kv_dtype == LMC_DTYPE_BF16;
    int64_t kv_row = n_kv * hd;

    unsigned sb = lmc_cuda_blocks(T * kv_row, 256);
    if (bf)
        attention_paged_store_fwd_kernel<__nv_bfloat16><<<sb, 256, 0, c->stream>>>(
            (__nv_bfloat16 *)kc, (__nv_bfloat16 *)vc, k_new, v_new, seq, pos, bt, T, kv_row,
            max_blocks, block_size);
    else
        attention_paged_store_fwd_kernel<float><<<sb, 256, 0, c->stream>>>(
            kc, vc, k_new, v_new, seq, pos, bt, T, kv_row, max_blocks, block_size);
    LMC_CUDA_LAUNCH_CHECK();

    struct pattn_args a;
    memset(&a, 0, sizeof a);
    a.kv_row = kv_row;
    if (bf)
        pattn_run<pa_plain<__nv_bfloat16>>(c, a, out, q, kc, vc, T, seq, pos, bt, max_blocks, block_size,
                                          n_heads, n_kv, hd, scale, window);
    else
        pattn_run<pa_plain<float>>(c, a, out, q, kc, vc, T, seq, pos, bt, max_blocks, block_size, n_heads,
                                  n_kv, hd, scale, window);
}
