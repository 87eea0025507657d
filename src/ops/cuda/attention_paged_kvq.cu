/* attention_paged_kvq.cu — the CUDA twins of the compressed paged pools'
 * attention (ops/cpu/attention_paged_kvq.c: q8, q4; ops/cpu/
 * attention_paged_kivi.c: KIVI-2 with per-sequence f16 rings), writing the
 * same bytes as the CPU (slot layouts, f16 conversions and group
 * quantizers from ops/cpu/kvquant_layout.h) and reading them through the
 * paged flash-decoding kernel of attention_paged.cuh with a decoding
 * element loader.
 *
 * Store, q8/q4: a thread per (token, K or V, group of 32 values), then the
 * attention. KIVI-2, the CPU's four phases in its order: (1) a thread per
 * (token, channel) for each token that ends its sequence's run inside a
 * key group quantizes that group's channel again over the positions it
 * holds (this step's own rows f16-rounded, earlier ones from the ring
 * while it still holds them, others decoded from the old codes); (2) a
 * thread per (token, group of 32 channels) quantizes the value; (3) the
 * attention, keys and values of positions > p - residual in f16 (the
 * step's rows, or the ring's as before the step); (4) a thread per (token,
 * channel) writes the ring rows, skipping a row a later token of the same
 * run overwrites (the run's tokens are consecutive: that token is
 * ring_rows further on), and channel 0 its tag. */
#include "ops/cuda/attention_paged.cuh"
#include "ops/cpu/kvquant_layout.h"
#include "ops/backend.h"
#include "ops/cuda/ops_cuda.h"

#include <string.h>

#define PKV_G LMC_KVQ_G

/* q8 (FMT 1) and q4 (FMT 2) slots */
template <int FMT> struct pa_q {
    static __device__ __forceinline__ int64_t ring_row(const pattn_args &, const uint8_t *, int64_t, int64_t,
                                                       int64_t) {
        return -1;
    }
    static __device__ __forceinline__ float k(const pattn_args &a, const uint8_t *, int64_t, int64_t,
                                              int64_t slot, int64_t c) {
        return lmc_kvq_paged_elem(FMT, (const uint8_t *)a.kc + (size_t)slot * a.rb, a.kv_row, c);
    }
    static __device__ __forceinline__ float v(const pattn_args &a, const uint8_t *, int64_t, int64_t,
                                              int64_t slot, int64_t c) {
        return lmc_kvq_paged_elem(FMT, (const uint8_t *)a.vc + (size_t)slot * a.rb, a.kv_row, c);
    }
};

/* KIVI-2: positions > p - residual from the step's rows (-2 - row) or the
 * ring (rg: this token's ring slot, as before the step), the pool else */
struct pa_kivi {
    static __device__ __forceinline__ int64_t ring_row(const pattn_args &a, const uint8_t *rg, int64_t t,
                                                       int64_t p, int64_t key) {
        if (key <= p - a.residual) return -1;
        int64_t it = t - (p - key);
        if (it >= 0 && a.seq[it] == a.seq[t] && a.pos[it] == key) return -2 - it;
        int64_t rr = key % a.ring_rows;
        return ((const int32_t *)(rg + 2 * a.ring_part))[rr] == key ? rr : -1;
    }
    static __device__ __forceinline__ float k(const pattn_args &a, const uint8_t *rg, int64_t rr, int64_t key,
                                              int64_t slot, int64_t c) {
        if (rr <= -2) return lmc_kvq_f16(lmc_kvq_to_f16(a.k_new[(-2 - rr) * a.kv_row + c]));
        if (rr >= 0) return lmc_kvq_f16(((const uint16_t *)rg)[rr * a.kv_row + c]);
        const uint8_t *grp = (const uint8_t *)a.kc + (size_t)(slot - key % PKV_G) * a.rb;
        return lmc_kvq_kivi_key(grp, a.kv_row, c, key % PKV_G);
    }
    static __device__ __forceinline__ float v(const pattn_args &a, const uint8_t *rg, int64_t rr, int64_t,
                                              int64_t slot, int64_t c) {
        if (rr <= -2) return lmc_kvq_f16(lmc_kvq_to_f16(a.v_new[(-2 - rr) * a.kv_row + c]));
        if (rr >= 0) return lmc_kvq_f16(((const uint16_t *)(rg + a.ring_part))[rr * a.kv_row + c]);
        return lmc_kvq_kivi_val((const uint8_t *)a.vc + (size_t)slot * a.rb, a.kv_row, c);
    }
};

__device__ __forceinline__ int64_t pkv_slot(const int32_t *bt, int64_t max_blocks, int64_t bs, int64_t s,
                                            int64_t p) {
    return (int64_t)bt[s * max_blocks + p / bs] * bs + p % bs;
}

template <int FMT>
__global__ void attention_paged_kvq_store_kernel(uint8_t *kc, uint8_t *vc, const float *k_new,
                                                 const float *v_new, const int32_t *seq, const int32_t *pos,
                                                 const int32_t *bt, int64_t T, int64_t row, int64_t max_blocks,
                                                 int64_t bs, size_t rb) {
    const int64_t G = lmc_kvq_group_of(FMT), ng = (row + G - 1) / G, n = T * ng * 2;
    const size_t sb = lmc_kvq_paged_scale_bytes(FMT, row);
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t kv = idx % 2, g = (idx / 2) % ng, i = idx / (2 * ng);
        uint8_t *sl = (kv ? vc : kc) + (size_t)pkv_slot(bt, max_blocks, bs, seq[i], pos[i]) * rb;
        const float *x = (kv ? v_new : k_new) + i * row + g * G;
        int64_t cnt = row - g * G < G ? row - g * G : G;
        if (FMT == 1)
            lmc_kvq_q8_group(x, 1, cnt, (int8_t *)(sl + sb) + g * G, (uint16_t *)sl + g);
        else
            lmc_kvq_asym_group(x, 1, cnt, 4, sl + sb + g * (G / 2), (uint16_t *)sl + 2 * g);
    }
}

/* KIVI-2 (1): key groups of the tokens that end a run inside one */
__global__ void attention_paged_kivi_keys_kernel(uint8_t *kc, const uint8_t *ring, const int32_t *tok_ring,
                                                 const float *k_new, const int32_t *seq, const int32_t *pos,
                                                 const int32_t *bt, int64_t T, int64_t row, int64_t max_blocks,
                                                 int64_t bs, size_t rb, size_t ring_slot, size_t ring_part,
                                                 int64_t ring_rows) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < T * row;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / row, c = idx % row, p = pos[i], s = seq[i];
        if (i < T - 1 && seq[i + 1] == s && pos[i + 1] == p + 1 && (p + 1) % PKV_G) continue;
        int64_t j0 = p % PKV_G, n = j0 + 1, g0 = p - j0;
        uint8_t *grp = kc + (size_t)(pkv_slot(bt, max_blocks, bs, s, p) - j0) * rb;
        const uint8_t *rg = ring + (size_t)tok_ring[i] * ring_slot;
        const uint16_t *rk = (const uint16_t *)rg;
        const int32_t *tag = (const int32_t *)(rg + 2 * ring_part);
        float src[PKV_G];
        for (int64_t j = 0; j < n; j++) {
            int64_t t = g0 + j, it = i - (p - t), rr = t % ring_rows;
            if (it >= 0 && seq[it] == s && pos[it] == t)
                src[j] = lmc_kvq_f16(lmc_kvq_to_f16(k_new[it * row + c]));
            else if (tag[rr] == t)
                src[j] = lmc_kvq_f16(rk[rr * row + c]);
            else
                src[j] = lmc_kvq_kivi_key(grp, row, c, j);
        }
        uint8_t *cd = grp + 4 * (size_t)row + 8 * (size_t)c;
        for (int b = 0; b < 8; b++) cd[b] = 0;
        lmc_kvq_asym_group(src, 1, n, 2, cd, (uint16_t *)grp + 2 * c);
    }
}

/* KIVI-2 (2): ring rows and tags */
__global__ void attention_paged_kivi_ring_kernel(uint8_t *ring, const int32_t *tok_ring, const float *k_new,
                                                 const float *v_new, const int32_t *seq, const int32_t *pos,
                                                 int64_t T, int64_t row, size_t ring_slot, size_t ring_part,
                                                 int64_t ring_rows) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < T * row;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / row, c = idx % row, p = pos[i], rr = p % ring_rows;
        int64_t later = i + ring_rows; /* the run's token that overwrites this ring row */
        if (later < T && seq[later] == seq[i] && pos[later] == p + ring_rows) continue;
        uint8_t *rg = ring + (size_t)tok_ring[i] * ring_slot;
        ((uint16_t *)rg)[rr * row + c] = lmc_kvq_to_f16(k_new[idx]);
        ((uint16_t *)(rg + ring_part))[rr * row + c] = lmc_kvq_to_f16(v_new[idx]);
        if (c == 0) ((int32_t *)(rg + 2 * ring_part))[rr] = (int32_t)p;
    }
}

/* KIVI-2 (3): values, 2-bit per token group */
__global__ void attention_paged_kivi_vals_kernel(uint8_t *vc, const float *v_new, const int32_t *seq,
                                                 const int32_t *pos, const int32_t *bt, int64_t T, int64_t row,
                                                 int64_t max_blocks, int64_t bs, size_t rb) {
    const int64_t ng = (row + PKV_G - 1) / PKV_G;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < T * ng;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / ng, g = idx % ng;
        uint8_t *vs = vc + (size_t)pkv_slot(bt, max_blocks, bs, seq[i], pos[i]) * rb;
        int64_t cnt = row - g * PKV_G < PKV_G ? row - g * PKV_G : PKV_G;
        lmc_kvq_asym_group(v_new + i * row + g * PKV_G, 1, cnt, 2, vs + 4 * ng + g * (PKV_G / 4),
                           (uint16_t *)vs + 2 * g);
    }
}

template <int FMT>
static void paged_q(void *ctx, float *out, const float *q, const float *k_new, const float *v_new, float *kc,
                    float *vc, int64_t T, const int32_t *seq, const int32_t *pos, const int32_t *bt,
                    int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv, int64_t hd,
                    float scale, int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0 && max_blocks > 0);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    LMC_ASSERT(hd <= 32 * PA_MAXJ && T <= 0x7fffffff);
    int64_t row = n_kv * hd, ng = (row + lmc_kvq_group_of(FMT) - 1) / lmc_kvq_group_of(FMT);
    struct pattn_args a;
    memset(&a, 0, sizeof a);
    a.kv_row = row;
    a.rb = lmc_kvq_al8(lmc_kvq_paged_scale_bytes(FMT, row) +
                       (FMT == 1 ? (size_t)row : (size_t)(row * 4 + 7) / 8));
    attention_paged_kvq_store_kernel<FMT><<<lmc_cuda_blocks(T * ng * 2, 128), 128, 0, c->stream>>>(
        (uint8_t *)kc, (uint8_t *)vc, k_new, v_new, seq, pos, bt, T, row, max_blocks, block_size, a.rb);
    LMC_CUDA_LAUNCH_CHECK();
    pattn_run<pa_q<FMT>>(c, a, out, q, kc, vc, T, seq, pos, bt, max_blocks, block_size, n_heads, n_kv, hd,
                         scale, window);
}

extern "C" void lmc_cuda_attention_paged_q8(void *ctx, float *out, const float *q, const float *k_new,
                                            const float *v_new, float *kc, float *vc, int64_t T,
                                            const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                            int64_t max_blocks, int64_t block_size, int64_t n_heads,
                                            int64_t n_kv, int64_t hd, float scale, int64_t window) {
    paged_q<1>(ctx, out, q, k_new, v_new, kc, vc, T, seq, pos, bt, max_blocks, block_size, n_heads, n_kv, hd,
               scale, window);
}

extern "C" void lmc_cuda_attention_paged_q4(void *ctx, float *out, const float *q, const float *k_new,
                                            const float *v_new, float *kc, float *vc, int64_t T,
                                            const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                            int64_t max_blocks, int64_t block_size, int64_t n_heads,
                                            int64_t n_kv, int64_t hd, float scale, int64_t window) {
    paged_q<2>(ctx, out, q, k_new, v_new, kc, vc, T, seq, pos, bt, max_blocks, block_size, n_heads, n_kv, hd,
               scale, window);
}

extern "C" void lmc_cuda_attention_paged_kivi2(void *ctx, float *out, const float *q, const float *k_new,
                                               const float *v_new, float *kc, float *vc, void *ring,
                                               const int32_t *tok_ring, int64_t ring_rows, int64_t residual,
                                               int64_t T, const int32_t *seq, const int32_t *pos,
                                               const int32_t *bt, int64_t max_blocks, int64_t block_size,
                                               int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                               int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0 && block_size % PKV_G == 0);
    LMC_ASSERT(ring && tok_ring && ring_rows >= PKV_G + 16);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    LMC_ASSERT(hd <= 32 * PA_MAXJ && T <= 0x7fffffff);
    int64_t row = n_kv * hd, ng = (row + PKV_G - 1) / PKV_G;
    struct pattn_args a;
    memset(&a, 0, sizeof a);
    a.kv_row = row;
    a.rb = lmc_kvq_kivi_slot_bytes(row);
    a.ring = (const uint8_t *)ring;
    a.tok_ring = tok_ring;
    a.ring_rows = ring_rows;
    a.residual = residual;
    a.ring_part = lmc_kv_ring_part_bytes(row, ring_rows);
    a.ring_slot = lmc_kv_ring_slot_bytes(row, ring_rows);
    unsigned nb = lmc_cuda_blocks(T * row, 128);
    attention_paged_kivi_keys_kernel<<<nb, 128, 0, c->stream>>>((uint8_t *)kc, (const uint8_t *)ring, tok_ring,
                                                                k_new, seq, pos, bt, T, row, max_blocks,
                                                                block_size, a.rb, a.ring_slot, a.ring_part,
                                                                ring_rows);
    LMC_CUDA_LAUNCH_CHECK();
    attention_paged_kivi_vals_kernel<<<lmc_cuda_blocks(T * ng, 128), 128, 0, c->stream>>>(
        (uint8_t *)vc, v_new, seq, pos, bt, T, row, max_blocks, block_size, a.rb);
    LMC_CUDA_LAUNCH_CHECK();
    a.k_new = k_new;
    a.v_new = v_new;
    pattn_run<pa_kivi>(c, a, out, q, kc, vc, T, seq, pos, bt, max_blocks, block_size, n_heads, n_kv, hd, scale,
                       window);
    attention_paged_kivi_ring_kernel<<<nb, 128, 0, c->stream>>>((uint8_t *)ring, tok_ring, k_new, v_new, seq,
                                                                pos, T, row, a.ring_slot, a.ring_part,
                                                                ring_rows);
    LMC_CUDA_LAUNCH_CHECK();
}

/* fmt 1 q8, 2 q4, 3 kivi2 (enum lmc_kvq_fmt): the paged entries of a copy
 * of the CUDA table; infer/kvq.c sets kv_row_bytes */
extern "C" void lmc_backend_cuda_set_kvq_paged(struct lmc_backend *be, int fmt) {
    if (!be || !be->name || strcmp(be->name, "cuda")) return;
    if (fmt == 1) be->attention_paged = lmc_cuda_attention_paged_q8;
    if (fmt == 2) be->attention_paged = lmc_cuda_attention_paged_q4;
    if (fmt == 3) be->attention_paged_ring = lmc_cuda_attention_paged_kivi2;
}
