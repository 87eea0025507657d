/* qmatmul_f.cu — the CUDA backend's float products over a 4-bit base
 * weight (QLoRA training, issue 12; backend.h qweight_upload_f /
 * qmatmul_f / qmatmul_f_bwd), the GPU twin of ops/cpu/qmatmul_f.c:
 *   y (M, n) = x (M, k) @ deq(W)^T (+ bias)     forward
 *   dx (M, k) (+)= dy (M, n) @ deq(W)           input gradient (W frozen)
 * W stays quantized on the device; a tile of rows (the whole weight up to
 * QF_TILE_ELEMS weights) is dequantized by a kernel into scratch — f32 in
 * the fp32 training mode, bf16 in the mixed-precision mode
 * (lmc_backend_cuda_set_train_bf16), exactly the floats
 * lmc_qweight_dequant_rows gives, then rounded — and multiplied by
 * cuBLASLt (lmc_cuda_gemm: fp32 math, or bf16 tensor cores with fp32
 * accumulation), writing y's columns / accumulating dx in place (no
 * gathers). So the numbers are those of the dense linear holding deq(W),
 * as on the CPU, and deterministic (cuBLASLt's fixed algorithm per shape).
 *
 * Device layouts (made once by lmc_cuda_qweight_upload_f):
 *   NF4 (bitsandbytes' blocks of 64, over the flattened weight or per
 *   row): the codes of the weight's element range, two per byte, first
 *   element in the high nibble, starting at a whole block; per block its
 *   absmax either kept double-quantized (a uint8 code into the 256-value
 *   nested map, a float absmax2 per 256 blocks and an offset: 8.1 bits
 *   per 64 weights, expanded in the kernel with the host's two roundings)
 *   or as a float (files without double quantization). 4.13 bits/weight.
 *   Integer groups (rtn / GPTQ / AWQ, 2..8 bits): the host's kernel-order
 *   codes (nibbles j / j+16 per block of 32, or bytes), f32 scale and
 *   int32 zero per (row, group), the block -> group map and the act-order
 *   permutation (w = scale * (q - zero), as the host). */
#include "ops/cuda/common.cuh"

extern "C" {
#include "quant/qmatmul.h"
}

#include <stdlib.h>
#include <string.h>

#define QF_MAGIC 0x46574755u                  /* "UGWF" */
#define QF_TILE_ELEMS ((int64_t)1 << 24)      /* largest dequantized tile: 16M weights (32 MiB bf16) */
enum { QF_NF4 = 0, QF_GROUPS = 1 };

/* The device copy; the handle's lmc_qweight::owned points at it. */
struct lmc_cuda_qf {
    uint32_t magic;
    int kind;
    int64_t n, k, kp;
    uint8_t *codes;
    /* NF4: element (r, i) is local element e = e0 + r k + i: nibble of
     * byte e / 2 (high when e is even), block e / 64 */
    int64_t e0;
    float *absmax;           /* per local block (no double quantization), else NULL */
    uint8_t *dq_code;        /* per local block */
    float *dq_aux;           /* the nested map (256), then absmax2 */
    int64_t dq_g0, dq_bs2;   /* absmax2 index of local block b: (dq_g0 + b) / dq_bs2 */
    float dq_offset;
    float lut[16];
    /* groups */
    int bits;                /* 4: nibbles, 8: bytes */
    int64_t row_bytes, ng;
    float *scale;            /* (n, ng) */
    int32_t *zero;           /* (n, ng) */
    int32_t *blk2g;          /* kp / 32: group of each block (-1: none) */
    int32_t *perm;           /* kp: input column of kernel column j (-1: padding); NULL = identity */
    size_t bytes;
};

static const struct lmc_cuda_qf *qf_of(const struct lmc_qweight *w) {
    const struct lmc_cuda_qf *q = (const struct lmc_cuda_qf *)w->owned;
    LMC_ASSERT(q != NULL && q->magic == QF_MAGIC); /* a handle from lmc_cuda_qweight_upload_f */
    return q;
}

/* ---------------------------------------------------------------- upload */

/* The weights' device buffers are pieces of chunks the weights share: one
 * cudaMalloc per piece had each 5.5 MiB code buffer of a 1.1B model's MLP
 * rounded up to the allocator's 2 MiB (~33 MiB over 22 layers). A piece
 * (256-byte aligned) goes to the first chunk with room, else to a new
 * chunk of its size rounded up to 2 MiB, so the small pieces (k/v codes,
 * block codes, the nested maps) fill the large pieces' tails. A chunk is
 * freed with its last piece. */
#define QF_CHUNK_ALIGN ((size_t)2 << 20)
struct qf_chunk {
    char *base;
    size_t cap, used;
    int64_t live;
};
struct lmc_cuda_qf_arena {
    struct qf_chunk *ch;
    int n, cap;
};

static void *qf_alloc(struct lmc_cuda_ctx *c, size_t bytes) {
    struct lmc_cuda_qf_arena *a = c->qf_arena;
    if (!a && !(a = c->qf_arena = (struct lmc_cuda_qf_arena *)calloc(1, sizeof *a))) return NULL;
    const size_t need = lmc_cuda_al256(bytes ? bytes : 1);
    for (int i = 0; i < a->n; i++) {
        struct qf_chunk *h = &a->ch[i];
        if (h->cap - h->used >= need) {
            void *p = h->base + h->used;
            h->used += need;
            h->live++;
            return p;
        }
    }
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        struct qf_chunk *ch = (struct qf_chunk *)realloc(a->ch, (size_t)cap * sizeof *ch);
        if (!ch) return NULL;
        a->ch = ch, a->cap = cap;
    }
    const size_t cap = (need + QF_CHUNK_ALIGN - 1) / QF_CHUNK_ALIGN * QF_CHUNK_ALIGN;
    char *base = (char *)lmc_cuda_alloc(c, cap);
    if (!base) return NULL;
    a->ch[a->n++] = (struct qf_chunk){base, cap, need, 1};
    return base;
}

static void qf_free(struct lmc_cuda_ctx *c, void *p) {
    struct lmc_cuda_qf_arena *a = c->qf_arena;
    LMC_ASSERT(a != NULL);
    for (int i = 0; i < a->n; i++) {
        struct qf_chunk *h = &a->ch[i];
        if ((char *)p >= h->base && (char *)p < h->base + h->cap) {
            LMC_ASSERT(h->live > 0);
            if (--h->live == 0) {
                LMC_CUDA_CHECK(cudaFree(h->base));
                a->ch[i] = a->ch[--a->n];
            }
            return;
        }
    }
    LMC_ASSERT(!"qf_free: not a piece of the ctx's chunks");
}

void lmc_cuda_qf_arena_free(struct lmc_cuda_ctx *c) {
    struct lmc_cuda_qf_arena *a = c->qf_arena;
    if (!a) return;
    for (int i = 0; i < a->n; i++) cudaFree(a->ch[i].base); /* teardown: weights never freed */
    free(a->ch);
    free(a);
    c->qf_arena = NULL;
}

static void qf_release(struct lmc_cuda_ctx *c, struct lmc_cuda_qf *q) {
    if (!q) return;
    void *p[8] = {q->codes, q->absmax, q->dq_code, q->dq_aux, q->scale, q->zero, q->blk2g, q->perm};
    for (int i = 0; i < 8; i++)
        if (p[i]) qf_free(c, p[i]);
    free(q);
}

/* A device copy of bytes at src (NULL when out of device memory). */
static void *qf_copy(struct lmc_cuda_ctx *c, const void *src, size_t bytes, size_t *total) {
    void *d = qf_alloc(c, bytes);
    if (d) lmc_cuda_upload(c, d, src, bytes);
    *total += bytes;
    return d;
}

static bool qf_upload_nf4(struct lmc_cuda_ctx *c, const struct lmc_qweight *w, struct lmc_cuda_qf *q) {
    /* the element range [E, E + n k) of the buffers (a view of a flat weight starts at flat_off) */
    const int64_t E = w->nf4_flat ? w->flat_off : 0, B0 = E / 64, L = E - B0 * 64 + w->n * w->k;
    const int64_t nbl = (L + 63) / 64;
    q->e0 = E - B0 * 64;
    memcpy(q->lut, w->code, sizeof q->lut);
    q->codes = (uint8_t *)qf_copy(c, w->data + B0 * 32, (size_t)(L + 1) / 2, &q->bytes);
    if (!q->codes) return false;
    if (!w->dq_code) {
        q->absmax = (float *)qf_copy(c, w->absmax + B0, (size_t)nbl * sizeof(float), &q->bytes);
        return q->absmax != NULL;
    }
    const int64_t g = w->dq_b0 + B0, a0 = g / w->dq_bs2, a1 = (g + nbl - 1) / w->dq_bs2;
    LMC_ASSERT(w->dq_bs2 > 0 && a1 < w->dq_n2);
    float *aux = (float *)malloc((size_t)(256 + a1 - a0 + 1) * sizeof(float));
    if (!aux) return false;
    memcpy(aux, w->dq_nested, 256 * sizeof(float));
    memcpy(aux + 256, w->dq_absmax2 + a0, (size_t)(a1 - a0 + 1) * sizeof(float));
    q->dq_aux = (float *)qf_copy(c, aux, (size_t)(256 + a1 - a0 + 1) * sizeof(float), &q->bytes);
    free(aux);
    q->dq_code = (uint8_t *)qf_copy(c, w->dq_code + B0, (size_t)nbl, &q->bytes);
    q->dq_g0 = g - a0 * w->dq_bs2;
    q->dq_bs2 = w->dq_bs2;
    q->dq_offset = w->dq_offset;
    return q->dq_aux && q->dq_code;
}

static bool qf_upload_groups(struct lmc_cuda_ctx *c, const struct lmc_qweight *w, struct lmc_cuda_qf *q) {
    q->bits = w->kernel == LMC_QK_U8G ? 8 : 4;
    q->row_bytes = w->row_bytes;
    q->ng = w->n_groups;
    const int64_t nb = w->kp / 32;
    int32_t *b2g = (int32_t *)malloc((size_t)nb * sizeof *b2g);
    if (!b2g) return false;
    for (int64_t b = 0; b < nb; b++) b2g[b] = -1;
    for (int64_t gi = 0; gi < w->n_groups; gi++)
        for (int64_t b = w->gblk[gi]; b < w->gblk[gi + 1] && b < nb; b++) b2g[b] = (int32_t)gi;
    q->blk2g = (int32_t *)qf_copy(c, b2g, (size_t)nb * sizeof *b2g, &q->bytes);
    free(b2g);
    q->codes = (uint8_t *)qf_copy(c, w->data, (size_t)(w->n * w->row_bytes), &q->bytes);
    q->scale = (float *)qf_copy(c, w->scale, (size_t)(w->n * w->n_groups) * sizeof(float), &q->bytes);
    q->zero = (int32_t *)qf_copy(c, w->zero, (size_t)(w->n * w->n_groups) * sizeof(int32_t), &q->bytes);
    if (w->perm) q->perm = (int32_t *)qf_copy(c, w->perm, (size_t)w->kp * sizeof(int32_t), &q->bytes);
    return q->blk2g && q->codes && q->scale && q->zero && (!w->perm || q->perm);
}

extern "C" lmc_status lmc_cuda_qweight_upload_f(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                                size_t *bytes, lmc_err *err) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    *out = NULL;
    if (bytes) *bytes = 0;
    bool nf4 = w->kernel == LMC_QK_NF4, groups = w->kernel == LMC_QK_U4G || w->kernel == LMC_QK_U8G;
    if (!nf4 && !groups)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "cuda QLoRA: a (%lld, %lld) weight of this kind (GGUF blocks) "
                           "has no float path on the GPU (NF4 and integer groups have)", (long long)w->n,
                           (long long)w->k);
    LMC_ASSERT(w->n > 0 && w->k > 0 && w->kp >= w->k && (nf4 || w->kp % 32 == 0));
    struct lmc_cuda_qf *q = (struct lmc_cuda_qf *)calloc(1, sizeof *q);
    struct lmc_qweight *h = (struct lmc_qweight *)calloc(1, sizeof *h);
    if (!q || !h) {
        free(q), free(h);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda QLoRA: out of memory");
    }
    q->magic = QF_MAGIC;
    q->kind = nf4 ? QF_NF4 : QF_GROUPS;
    q->n = w->n, q->k = w->k, q->kp = w->kp;
    if (!(nf4 ? qf_upload_nf4(c, w, q) : qf_upload_groups(c, w, q))) {
        size_t b = q->bytes;
        qf_release(c, q);
        free(h);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda QLoRA: out of device memory for a (%lld, %lld) weight (%.1f MiB)",
                           (long long)w->n, (long long)w->k, (double)b / 1048576.0);
    }
    h->kernel = w->kernel;
    h->ggml_type = w->ggml_type;
    h->n = w->n, h->k = w->k, h->kp = w->kp;
    h->data = q->codes;
    h->owned = q;
    if (bytes) *bytes = q->bytes;
    *out = h;
    return LMC_OK;
}

extern "C" void lmc_cuda_qweight_free_f(void *ctx, struct lmc_qweight *w) {
    if (!w) return;
    qf_release((struct lmc_cuda_ctx *)ctx, (struct lmc_cuda_qf *)w->owned);
    free(w);
}

/* --------------------------------------------------------------- kernels */

struct qf_args {
    const uint8_t *codes;
    /* NF4 */
    int64_t e0;
    const float *absmax;
    const uint8_t *dq_code;
    const float *dq_aux;
    int64_t dq_g0, dq_bs2;
    float dq_offset;
    float lut[16];
    /* groups */
    int bits;
    int64_t row_bytes, ng, kp;
    const float *scale;
    const int32_t *zero;
    const int32_t *blk2g, *perm;
    int64_t k;
};

static __device__ __forceinline__ void qf_store(float *p, float v) { *p = v; }
static __device__ __forceinline__ void qf_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* out (nt, k) = rows [r0, r0 + nt) of an NF4 weight: element i of the
 * tile is local element e0 + r0 k + i (rows are contiguous). */
template <typename T>
__global__ void qf_nf4_kernel(T *out, struct qf_args a, int64_t r0, int64_t nt) {
    __shared__ float snest[256];
    __shared__ float slut[16];
    for (unsigned i = threadIdx.x; i < 256u; i += blockDim.x) snest[i] = a.dq_code ? a.dq_aux[i] : 0.0f;
    if (threadIdx.x < 16) slut[threadIdx.x] = a.lut[threadIdx.x];
    __syncthreads();
    const float *a2 = a.dq_code ? a.dq_aux + 256 : NULL;
    const int64_t base = a.e0 + r0 * a.k, total = nt * a.k;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t e = base + i, lb = e >> 6;
        const uint32_t b = __ldg(a.codes + (e >> 1));
        const uint32_t code = e & 1 ? b & 15u : b >> 4;
        /* the host's absmax: nested * absmax2 rounded, then + offset rounded (no fused multiply-add) */
        const float m = a.dq_code ? __fadd_rn(__fmul_rn(snest[__ldg(a.dq_code + lb)], __ldg(a2 + (a.dq_g0 + lb) / a.dq_bs2)),
                                              a.dq_offset)
                                  : __ldg(a.absmax + lb);
        qf_store(out + i, __fmul_rn(slut[code], m));
    }
}

/* out (nt, k) = rows [r0, r0 + nt) of an integer-group weight: kernel
 * column j of row r holds code q of group blk2g[j / 32]; input column
 * perm[j] (or j) gets scale * (q - zero). */
template <typename T>
__global__ void qf_groups_kernel(T *out, struct qf_args a, int64_t r0, int64_t nt) {
    const int64_t total = nt * a.kp;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t rl = i / a.kp, j = i - rl * a.kp, r = r0 + rl;
        const int32_t g = __ldg(a.blk2g + (j >> 5));
        const int64_t col = a.perm ? (int64_t)__ldg(a.perm + j) : j;
        if (g < 0 || col < 0 || col >= a.k) continue;
        const uint8_t *row = a.codes + r * a.row_bytes;
        uint32_t qv;
        if (a.bits == 8) qv = __ldg(row + j);
        else if ((j & 31) < 16) qv = __ldg(row + (j >> 5) * 16 + (j & 31)) & 15u;
        else qv = __ldg(row + (j >> 5) * 16 + (j & 31) - 16) >> 4;
        const float s = __ldg(a.scale + r * a.ng + g), z = (float)__ldg(a.zero + r * a.ng + g);
        qf_store(out + rl * a.k + col, __fmul_rn(s, __fsub_rn((float)qv, z)));
    }
}

static struct qf_args qf_args_of(const struct lmc_cuda_qf *q) {
    struct qf_args a;
    memset(&a, 0, sizeof a);
    a.codes = q->codes, a.e0 = q->e0, a.absmax = q->absmax, a.dq_code = q->dq_code, a.dq_aux = q->dq_aux;
    a.dq_g0 = q->dq_g0, a.dq_bs2 = q->dq_bs2 > 0 ? q->dq_bs2 : 1, a.dq_offset = q->dq_offset;
    memcpy(a.lut, q->lut, sizeof a.lut);
    a.bits = q->bits, a.row_bytes = q->row_bytes, a.ng = q->ng, a.kp = q->kp;
    a.scale = q->scale, a.zero = q->zero, a.blk2g = q->blk2g, a.perm = q->perm, a.k = q->k;
    return a;
}

/* Rows [r0, r0 + nt) of q dequantized into dst (nt, k), bf16 or f32. */
static void qf_dequant(struct lmc_cuda_ctx *c, const struct lmc_cuda_qf *q, int64_t r0, int64_t nt, void *dst,
                       bool bf16) {
    struct qf_args a = qf_args_of(q);
    if (q->kind == QF_NF4) {
        unsigned g = lmc_cuda_blocks(nt * q->k, 256);
        if (bf16) qf_nf4_kernel<__nv_bfloat16><<<g, 256, 0, c->stream>>>((__nv_bfloat16 *)dst, a, r0, nt);
        else qf_nf4_kernel<float><<<g, 256, 0, c->stream>>>((float *)dst, a, r0, nt);
    } else {
        if (q->perm || q->kp != q->k) /* columns no kernel column maps to stay 0, as the host's memset */
            LMC_CUDA_CHECK(cudaMemsetAsync(dst, 0, (size_t)(nt * q->k) * (bf16 ? 2 : 4), c->stream));
        unsigned g = lmc_cuda_blocks(nt * q->kp, 256);
        if (bf16) qf_groups_kernel<__nv_bfloat16><<<g, 256, 0, c->stream>>>((__nv_bfloat16 *)dst, a, r0, nt);
        else qf_groups_kernel<float><<<g, 256, 0, c->stream>>>((float *)dst, a, r0, nt);
    }
    LMC_CUDA_LAUNCH_CHECK();
}

/* Rows per tile: the whole weight up to QF_TILE_ELEMS, else a multiple of
 * 64 rows; tile_rows > 0 forces it (tests). */
static int64_t qf_tile_rows(const struct lmc_cuda_qf *q, int64_t tile_rows) {
    int64_t T = tile_rows > 0 ? tile_rows : q->n * q->k <= QF_TILE_ELEMS ? q->n : QF_TILE_ELEMS / q->k / 64 * 64;
    if (T < 1) T = 64;
    return T < q->n ? T : q->n;
}

extern "C" void lmc_cuda_qmatmul_f_ex(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                                     const float *bias, int64_t tile_rows) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const struct lmc_cuda_qf *q = qf_of(w);
    LMC_ASSERT(M >= 0);
    if (M == 0) return;
    const bool bf = c->train_bf16;
    const int64_t n = q->n, k = q->k, T = qf_tile_rows(q, tile_rows);
    const size_t xb = bf ? lmc_cuda_al256((size_t)(M * k) * 2) : 0, tb = (size_t)(T * k) * (bf ? 2 : 4);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, xb + tb);
    char *s = (char *)c->scratch;
    const void *X = x;
    if (bf) X = lmc_cuda_operand_bf16(c, (__nv_bfloat16 *)s, x, M * k);
    for (int64_t n0 = 0; n0 < n; n0 += T) {
        const int64_t nt = n - n0 < T ? n - n0 : T;
        qf_dequant(c, q, n0, nt, s + xb, bf);
        /* y[:, n0 : n0 + nt] (column-major (nt, M), ld n) = tile (nt, k) @ x^T */
        lmc_cuda_gemm(c, true, false, nt, M, k, s + xb, k, X, k, y + n0, n, bf ? LMC_DTYPE_BF16 : LMC_DTYPE_F32,
                      bias ? bias + n0 : NULL, 0.0f);
    }
}

extern "C" void lmc_cuda_qmatmul_f_bwd_ex(void *ctx, float *dx, const float *dy, int64_t M,
                                         const struct lmc_qweight *w, int accum_dx, int64_t tile_rows) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const struct lmc_cuda_qf *q = qf_of(w);
    LMC_ASSERT(M >= 0);
    if (M == 0) return;
    const bool bf = c->train_bf16;
    const int64_t n = q->n, k = q->k, T = qf_tile_rows(q, tile_rows);
    const size_t db = bf ? lmc_cuda_al256((size_t)(M * n) * 2) : 0, tb = (size_t)(T * k) * (bf ? 2 : 4);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, db + tb);
    char *s = (char *)c->scratch;
    const __nv_bfloat16 *dyb = bf ? lmc_cuda_operand_bf16(c, (__nv_bfloat16 *)s, dy, M * n) : NULL;
    for (int64_t n0 = 0; n0 < n; n0 += T) {
        const int64_t nt = n - n0 < T ? n - n0 : T;
        qf_dequant(c, q, n0, nt, s + db, bf);
        /* dx^T (k, M) (+)= tile^T (k, nt) @ dy[:, n0 : n0 + nt]^T (column-major (nt, M), ld n) */
        const void *DY = bf ? (const void *)(dyb + n0) : (const void *)(dy + n0);
        lmc_cuda_gemm(c, false, false, k, M, nt, s + db, k, DY, n, dx, k, bf ? LMC_DTYPE_BF16 : LMC_DTYPE_F32, NULL,
                      accum_dx || n0 > 0 ? 1.0f : 0.0f);
    }
}

extern "C" void lmc_cuda_qmatmul_f(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                                   const float *bias) {
    lmc_cuda_qmatmul_f_ex(ctx, y, x, M, w, bias, 0);
}

extern "C" void lmc_cuda_qmatmul_f_bwd(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                                       int accum_dx) {
    lmc_cuda_qmatmul_f_bwd_ex(ctx, dx, dy, M, w, accum_dx, 0);
}

extern "C" void lmc_cuda_qweight_dequant_f(void *ctx, const struct lmc_qweight *w, int64_t r0, int64_t nr,
                                           float *dst) {
    const struct lmc_cuda_qf *q = qf_of(w);
    LMC_ASSERT(r0 >= 0 && nr >= 0 && r0 + nr <= q->n);
    if (nr > 0) qf_dequant((struct lmc_cuda_ctx *)ctx, q, r0, nr, dst, false);
}
