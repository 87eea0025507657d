/* qmatmul.cu — the CUDA backend's quantized matmul (issue 10): a prepared
 * quantized weight (quant/qmatmul.h) uploaded once into the GPU layout
 * below, then y(M,N) = x(M,K) @ W^T (+ bias) by
 *   - a dequantize-in-register GEMV for decode batches (M <= 16): a warp
 *     per two output rows, each lane streaming whole 32-weight blocks with
 *     16-byte loads (every weight byte read once per call), codes turned to
 *     floats in registers and dotted in fp32 with the batch's activations,
 *     scales applied per block, warp shuffles for the sum;
 *   - a dequantize-into-shared-memory GEMM for prefill (M > 16): 64x128
 *     output tiles, each 32-wide k step dequantizing the weight tile to
 *     bf16 in shared memory next to the bf16-rounded activations, bf16
 *     tensor cores (mma.sync m16n8k16, fp32 accumulation).
 *
 * GPU layout, made at upload from any kernel kind: the kernel's column
 * order (GPTQ act-order permutation and per-group padding, as on the CPU)
 * in blocks of 32; per row and block the codes
 *   G4 (Q4_0, Q4_1, Q4_K, 2..4-bit GPTQ/AWQ/rtn groups, ternary, NF4):
 *      16 bytes, byte j = element j (low nibble) and element j+16 (high);
 *   G8 (Q8_0, Q5_0, Q5_1, Q5_K, 5..8-bit groups): 32 signed bytes;
 * and per group of gb blocks one half2 (scale, offset): w = scale * c +
 * offset, or for NF4 w = scale * lut[c] (the file's 16 code values).
 * Q6_K (scales per 16 weights) and weights whose scales do not survive
 * fp16 run as a dense bf16 copy through lmc_cuda_matmul. */
#include "ops/cuda/common.cuh"
#include "ops/cuda/mma.cuh"

extern "C" {
#include "core/dtype.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
}

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QW_MAGIC 0x51574755u /* "UGWQ" */
enum { FMT_G4 = 0, FMT_G4LUT = 1, FMT_G8 = 2, FMT_DENSE = 3 };

/* The device copy; a handle's lmc_qweight::owned points at it. */
struct lmc_cuda_qw {
    uint32_t magic;
    int fmt;
    int64_t n, k, kp, nb, gb, ng;
    uint8_t *codes;          /* n * nb * (16 | 32) bytes */
    __half2 *so;             /* n * ng (scale, offset) */
    int32_t *perm;           /* kp input columns (-1: padding); NULL = identity */
    void *dense;             /* FMT_DENSE: (n, k) bf16 */
    float lut[16];
    size_t bytes;
};

static const struct lmc_cuda_qw *qw_of(const struct lmc_qweight *w) {
    const struct lmc_cuda_qw *q = (const struct lmc_cuda_qw *)w->owned;
    LMC_ASSERT(q != NULL && q->magic == QW_MAGIC); /* a handle from lmc_cuda_qweight_upload */
    return q;
}

/* ---------------------------------------------------------------- upload */

/* Row r of w as codes (kp, kernel order) and per-block scale/offset (kp/32
 * each): w = sc * q + of (NF4: sc * code[q]). false: no G4/G8 form (Q6_K). */
static bool decode_row(const struct lmc_qweight *w, int64_t r, int16_t *q, float *sc, float *of) {
    const uint8_t *row = w->data + r * w->row_bytes;
    int64_t nb = w->kp / 32;
    switch (w->kernel) {
    case LMC_QK_Q8_0: case LMC_QK_Q4_0: case LMC_QK_Q4_1: case LMC_QK_Q5_0: case LMC_QK_Q5_1: {
        int64_t be_, bb;
        LMC_ASSERT(lmc_ggml_type_info(w->ggml_type, &be_, &bb) && be_ == 32);
        for (int64_t b = 0; b < nb; b++) {
            struct lmc_qblock blk;
            lmc_ggml_unpack_block(w->ggml_type, row + b * bb, &blk);
            float d = lmc_f16_to_f32(blk.d), m = lmc_f16_to_f32(blk.dm);
            memcpy(q + 32 * b, blk.q, 32 * sizeof *q);
            sc[b] = d;
            of[b] = w->kernel == LMC_QK_Q4_0 ? -8.0f * d : w->kernel == LMC_QK_Q5_0 ? -16.0f * d
                    : w->kernel == LMC_QK_Q8_0 ? 0.0f : m;
        }
        return true;
    }
    case LMC_QK_Q4_K: case LMC_QK_Q5_K: {
        int64_t bb = w->kernel == LMC_QK_Q4_K ? 144 : 176;
        for (int64_t s = 0; s < nb / 8; s++) {
            struct lmc_qblock blk;
            lmc_ggml_unpack_block(w->ggml_type, row + s * bb, &blk);
            float d = lmc_f16_to_f32(blk.d), m = lmc_f16_to_f32(blk.dm);
            memcpy(q + 256 * s, blk.q, 256 * sizeof *q);
            for (int i = 0; i < 8; i++) {
                sc[8 * s + i] = d * (float)blk.sc[i];
                of[8 * s + i] = -m * (float)blk.mn[i];
            }
        }
        return true;
    }
    case LMC_QK_U4G: case LMC_QK_U8G:
        for (int64_t g = 0; g < w->n_groups; g++) {
            float s = w->scale[r * w->n_groups + g];
            int32_t z = w->zero[r * w->n_groups + g];
            for (int64_t b = w->gblk[g]; b < w->gblk[g + 1]; b++) {
                for (int j = 0; j < 32; j++) {
                    if (w->kernel == LMC_QK_U8G) q[32 * b + j] = (int16_t)(row[32 * b + j] - 128);
                    else q[32 * b + j] = (int16_t)(j < 16 ? row[16 * b + j] & 15 : row[16 * b + j - 16] >> 4);
                }
                sc[b] = s;
                of[b] = w->kernel == LMC_QK_U8G ? s * (float)(128 - z) : -s * (float)z;
            }
        }
        return true;
    case LMC_QK_NF4:
        for (int64_t j = 0; j < w->kp; j++) q[j] = (int16_t)(j & 1 ? row[j / 2] & 15 : row[j / 2] >> 4);
        for (int64_t b = 0; b < nb; b++) {
            sc[b] = w->absmax[r * (w->k / 64) + b / 2];
            of[b] = 0.0f;
        }
        return true;
    default:
        return false;
    }
}

/* v survives fp16: finite and within 2e-3 of max(|v|, |ref|). */
static bool half_ok(float v, float ref, uint16_t *h) {
    *h = lmc_f32_to_f16(v);
    float back = lmc_f16_to_f32(*h);
    return isfinite(back) && fabsf(back - v) <= 2e-3f * fmaxf(fabsf(v), fabsf(ref));
}

static void *dev_copy(struct lmc_cuda_ctx *c, const void *src, size_t bytes, size_t *total) {
    void *d = lmc_cuda_alloc(c, bytes);
    if (d) lmc_cuda_upload(c, d, src, bytes);
    *total += bytes;
    return d;
}

static void qw_release(struct lmc_cuda_qw *q) {
    if (!q) return;
    if (q->codes) LMC_CUDA_CHECK(cudaFree(q->codes));
    if (q->so) LMC_CUDA_CHECK(cudaFree(q->so));
    if (q->perm) LMC_CUDA_CHECK(cudaFree(q->perm));
    if (q->dense) LMC_CUDA_CHECK(cudaFree(q->dense));
    free(q);
}

/* The dense bf16 form (n, k) in the input's column order. */
static lmc_status upload_dense(struct lmc_cuda_ctx *c, const struct lmc_qweight *w, struct lmc_cuda_qw *q,
                               int16_t *codes, float *sc, float *of, lmc_err *err) {
    uint16_t *h = (uint16_t *)malloc((size_t)(w->n * w->k) * 2);
    float *f = (float *)malloc((size_t)w->k * sizeof(float));
    if (!h || !f) {
        free(h), free(f);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of memory");
    }
    for (int64_t r = 0; r < w->n; r++) {
        if (w->ggml_type >= 0) {
            lmc_ggml_dequantize_row(w->ggml_type, w->data + r * w->row_bytes, f, w->k);
        } else {
            LMC_ASSERT(decode_row(w, r, codes, sc, of));
            for (int64_t j = 0; j < w->kp; j++) {
                int64_t col = w->perm ? w->perm[j] : j;
                if (col < 0 || col >= w->k) continue;
                float v = w->kernel == LMC_QK_NF4 ? w->code[codes[j]] : (float)codes[j];
                f[col] = sc[j / 32] * v + of[j / 32];
            }
        }
        for (int64_t j = 0; j < w->k; j++) h[r * w->k + j] = lmc_f32_to_bf16(f[j]);
    }
    q->fmt = FMT_DENSE;
    q->dense = dev_copy(c, h, (size_t)(w->n * w->k) * 2, &q->bytes);
    free(h), free(f);
    if (!q->dense) return lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of device memory");
    return LMC_OK;
}

extern "C" lmc_status lmc_cuda_qweight_upload(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                              lmc_err *err) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    *out = NULL;
    LMC_ASSERT(w->n > 0 && w->k > 0 && w->kp % 32 == 0 && w->kp >= w->k);
    struct lmc_cuda_qw *q = (struct lmc_cuda_qw *)calloc(1, sizeof *q);
    struct lmc_qweight *h = (struct lmc_qweight *)calloc(1, sizeof *h);
    int64_t nb = w->kp / 32;
    int16_t *codes = (int16_t *)malloc((size_t)w->kp * sizeof *codes);
    float *sc = (float *)malloc((size_t)nb * sizeof *sc), *of = (float *)malloc((size_t)nb * sizeof *of);
    uint8_t *cb = NULL;
    uint16_t *so = NULL;
    lmc_status s = LMC_OK;
    if (!q || !h || !codes || !sc || !of) {
        s = lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of memory");
        goto done;
    }
    q->magic = QW_MAGIC;
    q->n = w->n, q->k = w->k, q->kp = w->kp, q->nb = nb;
    {
        bool g8 = w->kernel == LMC_QK_Q8_0 || w->kernel == LMC_QK_Q5_0 || w->kernel == LMC_QK_Q5_1 ||
                  w->kernel == LMC_QK_Q5_K || w->kernel == LMC_QK_U8G;
        bool native = w->kernel != LMC_QK_Q6_K && w->kernel < LMC_QK_COUNT;
        q->fmt = g8 ? FMT_G8 : w->kernel == LMC_QK_NF4 ? FMT_G4LUT : FMT_G4;
        q->gb = 1;
        if (w->kernel == LMC_QK_NF4) q->gb = 2;
        if ((w->kernel == LMC_QK_U4G || w->kernel == LMC_QK_U8G) && w->n_groups > 0) {
            int64_t g0 = w->gblk[1] - w->gblk[0];
            bool uniform = g0 > 0;
            for (int64_t g = 0; g < w->n_groups && uniform; g++) uniform = w->gblk[g + 1] - w->gblk[g] == g0;
            if (uniform) q->gb = g0; /* act-order groups of unequal sizes: a scale per block */
        }
        q->ng = nb / q->gb;
        int64_t cbytes = q->fmt == FMT_G8 ? 32 : 16;
        if (native) {
            cb = (uint8_t *)calloc((size_t)(w->n * nb), (size_t)cbytes);
            so = (uint16_t *)malloc((size_t)(w->n * q->ng) * 4);
            if (!cb || !so) {
                s = lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of memory");
                goto done;
            }
        }
        for (int64_t r = 0; native && r < w->n; r++) {
            LMC_ASSERT(decode_row(w, r, codes, sc, of));
            uint8_t *dst = cb + r * nb * cbytes;
            for (int64_t j = 0; j < w->kp; j++) {
                if (q->fmt == FMT_G8) dst[j] = (uint8_t)(int8_t)codes[j];
                else if (j % 32 < 16) dst[j / 32 * 16 + j % 32] |= (uint8_t)codes[j];
                else dst[j / 32 * 16 + j % 32 - 16] |= (uint8_t)(codes[j] << 4);
            }
            for (int64_t g = 0; g < q->ng && native; g++) {
                float s0 = sc[g * q->gb], o0 = of[g * q->gb];
                native = half_ok(s0, s0, &so[2 * (r * q->ng + g)]) && half_ok(o0, s0, &so[2 * (r * q->ng + g) + 1]);
            }
        }
        if (!native) {
            s = upload_dense(c, w, q, codes, sc, of, err);
            goto done;
        }
        memcpy(q->lut, w->code, sizeof q->lut);
        q->codes = (uint8_t *)dev_copy(c, cb, (size_t)(w->n * nb * cbytes), &q->bytes);
        q->so = (__half2 *)dev_copy(c, so, (size_t)(w->n * q->ng) * 4, &q->bytes);
        if (w->perm) q->perm = (int32_t *)dev_copy(c, w->perm, (size_t)w->kp * 4, &q->bytes);
        if (!q->codes || !q->so || (w->perm && !q->perm))
            s = lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of device memory for a (%lld, %lld) weight",
                            (long long)w->n, (long long)w->k);
    }
done:
    free(codes), free(sc), free(of), free(cb), free(so);
    if (s) {
        qw_release(q);
        free(h);
        return s;
    }
    h->kernel = w->kernel;
    h->ggml_type = w->ggml_type;
    h->n = w->n, h->k = w->k, h->kp = w->kp;
    h->data = q->fmt == FMT_DENSE ? (const uint8_t *)q->dense : q->codes;
    h->row_bytes = q->fmt == FMT_DENSE ? w->k * 2 : nb * (q->fmt == FMT_G8 ? 32 : 16);
    h->owned = q;
    *out = h;
    return LMC_OK;
}

extern "C" void lmc_cuda_qweight_free(void *ctx, struct lmc_qweight *w) {
    (void)ctx;
    if (!w) return;
    qw_release((struct lmc_cuda_qw *)w->owned);
    free(w);
}

extern "C" size_t lmc_cuda_qweight_device_bytes(const struct lmc_qweight *w) { return qw_of(w)->bytes; }

extern "C" const char *lmc_cuda_qweight_layout(const struct lmc_qweight *w) {
    static const char *names[] = {"g4", "g4-lut", "g8", "dense-bf16"};
    return names[qw_of(w)->fmt];
}

/* --------------------------------------------------------------- kernels */

struct qmm_args {
    const uint8_t *codes;
    const __half2 *so;
    const float *x;          /* (M, ldx) in kernel column order (GEMV) */
    const __nv_bfloat16 *xb; /* the same as bf16 (tile GEMM) */
    float *y;                /* (M, n) */
    const float *bias;
    int64_t n, nb, gb, ng, ldx, M;
    float lut[16];
};

/* 2^23 + c as a float's bits minus 2^23: an exact int -> float for c < 2^23 */
static __device__ __forceinline__ float u2f(uint32_t c) { return __uint_as_float(0x4B000000u | c) - 8388608.0f; }

/* One block's codes (4 words G4, 8 words G8) as 32 floats (raw codes, or
 * lut values for G4LUT). */
template <int FMT>
static __device__ __forceinline__ void q_decode(const uint32_t *wd, float *q, const float *lut) {
    if (FMT == FMT_G8) {
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int t = 0; t < 4; t++) /* signed byte + 128 as unsigned */
                q[4 * i + t] = u2f(((wd[i] >> (8 * t)) & 255u) ^ 128u) - 128.0f;
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int t = 0; t < 4; t++) {
                uint32_t b = (wd[i] >> (8 * t)) & 255u;
                if (FMT == FMT_G4LUT) {
                    q[4 * i + t] = lut[b & 15u];
                    q[4 * i + t + 16] = lut[b >> 4];
                } else {
                    q[4 * i + t] = u2f(b & 15u);
                    q[4 * i + t + 16] = u2f(b >> 4);
                }
            }
    }
}

#define GEMV_ROWS 2  /* output rows per warp */
#define GEMV_WARPS 4

/* Rows r0, r0+1 of W per warp; lane l takes blocks l, l+32, ...; MB >= M
 * batch rows (M <= MB). */
template <int FMT, int MB>
__global__ void __launch_bounds__(32 * GEMV_WARPS) qgemv_kernel(struct qmm_args a) {
    __shared__ float slut[16];
    if (FMT == FMT_G4LUT) {
        if (threadIdx.x < 16) slut[threadIdx.x] = a.lut[threadIdx.x];
        __syncthreads();
    }
    constexpr int W = FMT == FMT_G8 ? 8 : 4; /* 32-bit words per block */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t r0 = ((int64_t)blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (r0 >= a.n) return;
    const int64_t rb = a.nb * W * 4;
    float acc[GEMV_ROWS][MB];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int m = 0; m < MB; m++) acc[r][m] = 0.0f;
    for (int64_t b = lane; b < a.nb; b += 32) {
        float q[GEMV_ROWS][32];
        float2 ss[GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            const int64_t row = r0 + r < a.n ? r0 + r : a.n - 1; /* an odd N's last warp: a copy, not stored */
            const uint4 *p = (const uint4 *)(a.codes + row * rb + b * W * 4);
            uint32_t wd[W];
#pragma unroll
            for (int v = 0; v < W / 4; v++) {
                uint4 u = __ldg(p + v);
                wd[4 * v] = u.x, wd[4 * v + 1] = u.y, wd[4 * v + 2] = u.z, wd[4 * v + 3] = u.w;
            }
            ss[r] = __half22float2(a.so[row * a.ng + b / a.gb]);
            q_decode<FMT>(wd, q[r], slut);
        }
#pragma unroll
        for (int m = 0; m < MB; m++) {
            if (m < a.M) {
                const float4 *xp = (const float4 *)(a.x + m * a.ldx + b * 32);
                float xv[32];
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 t = __ldg(xp + i);
                    xv[4 * i] = t.x, xv[4 * i + 1] = t.y, xv[4 * i + 2] = t.z, xv[4 * i + 3] = t.w;
                }
                float xs = 0.0f;
                if (FMT != FMT_G4LUT) {
#pragma unroll
                    for (int j = 0; j < 32; j++) xs += xv[j];
                }
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) {
                    float d = 0.0f;
#pragma unroll
                    for (int j = 0; j < 32; j++) d = fmaf(q[r][j], xv[j], d);
                    acc[r][m] = fmaf(ss[r].x, d, fmaf(ss[r].y, xs, acc[r][m]));
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int m = 0; m < MB; m++) {
            float v = lmc_warp_sum(acc[r][m]);
            if (lane == 0 && r0 + r < a.n && m < a.M)
                a.y[m * a.n + r0 + r] = v + (a.bias ? a.bias[r0 + r] : 0.0f);
        }
}

#define QT_BM 64
#define QT_BN 128
#define QT_THREADS 256
#define QT_LD 40 /* bf16 per shared row: 32 + 8 of padding (rows stay 16-byte aligned) */
#define QT_SMEM ((QT_BM + QT_BN) * QT_LD * 2 + 16 * 4)

/* One 64x128 tile of y per block of 8 warps (2x4, 32x32 each); a.xb holds
 * the activations as bf16 in kernel column order (ld a.ldx). */
template <int FMT>
__global__ void __launch_bounds__(QT_THREADS) qgemm_mma_kernel(struct qmm_args a) {
    extern __shared__ __align__(16) uint8_t qsm[]; /* QT_SMEM bytes: As, Bs, slut */
    __nv_bfloat16 *As = (__nv_bfloat16 *)qsm, *Bs = As + QT_BM * QT_LD;
    float *slut = (float *)(Bs + QT_BN * QT_LD);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp >> 2, wn = warp & 3;
    if (FMT == FMT_G4LUT && tid < 16) slut[tid] = a.lut[tid];
    const int64_t m0 = (int64_t)blockIdx.y * QT_BM, n0 = (int64_t)blockIdx.x * QT_BN;
    constexpr int CB = FMT == FMT_G8 ? 32 : 16; /* code bytes per block */
    const int64_t rb = a.nb * CB;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    for (int64_t b = 0; b < a.nb; b++) {
        __syncthreads(); /* the previous step's fragments are read */
        { /* activations: 64 rows x 32 bf16, a 16-byte piece per thread */
            const int r = tid >> 2, c8 = tid & 3;
            const int64_t m = m0 + r;
            uint4 v = {0u, 0u, 0u, 0u};
            if (m < a.M) v = __ldg((const uint4 *)(a.xb + m * a.ldx + b * 32) + c8);
            *(uint4 *)&As[r * QT_LD + c8 * 8] = v;
        }
        { /* weights: thread t dequantizes half a block of row t/2 */
            const int r = tid >> 1, h = tid & 1;
            const int64_t row = n0 + r;
            float w[16];
            if (row < a.n) {
                float2 ss = __half22float2(a.so[row * a.ng + b / a.gb]);
                if (FMT == FMT_G8) { /* elements 16h .. 16h+15 */
                    uint4 u = __ldg((const uint4 *)(a.codes + row * rb + b * CB + 16 * h));
                    uint32_t wd[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                    for (int i = 0; i < 16; i++)
                        w[i] = ss.x * (u2f(((wd[i >> 2] >> (8 * (i & 3))) & 255u) ^ 128u) - 128.0f) + ss.y;
                } else { /* bytes 8h .. 8h+7: elements 8h+t (low nibbles) and 8h+t+16 (high) */
                    uint2 u = __ldg((const uint2 *)(a.codes + row * rb + b * CB + 8 * h));
                    uint32_t wd[2] = {u.x, u.y};
#pragma unroll
                    for (int t = 0; t < 8; t++) {
                        uint32_t by = (wd[t >> 2] >> (8 * (t & 3))) & 255u;
                        if (FMT == FMT_G4LUT) {
                            w[t] = ss.x * slut[by & 15u];
                            w[t + 8] = ss.x * slut[by >> 4];
                        } else {
                            w[t] = ss.x * u2f(by & 15u) + ss.y;
                            w[t + 8] = ss.x * u2f(by >> 4) + ss.y;
                        }
                    }
                }
            } else {
#pragma unroll
                for (int i = 0; i < 16; i++) w[i] = 0.0f;
            }
            uint4 lo, hi;
            lo.x = lmc_pack_bf16(w[0], w[1]), lo.y = lmc_pack_bf16(w[2], w[3]);
            lo.z = lmc_pack_bf16(w[4], w[5]), lo.w = lmc_pack_bf16(w[6], w[7]);
            hi.x = lmc_pack_bf16(w[8], w[9]), hi.y = lmc_pack_bf16(w[10], w[11]);
            hi.z = lmc_pack_bf16(w[12], w[13]), hi.w = lmc_pack_bf16(w[14], w[15]);
            if (FMT == FMT_G8) {
                *(uint4 *)&Bs[r * QT_LD + 16 * h] = lo;
                *(uint4 *)&Bs[r * QT_LD + 16 * h + 8] = hi;
            } else {
                *(uint4 *)&Bs[r * QT_LD + 8 * h] = lo;
                *(uint4 *)&Bs[r * QT_LD + 16 + 8 * h] = hi;
            }
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < 2; ks++) {
            uint32_t af[2][4], bfr[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                lmc_ldsm_x4(af[mt], &As[(wm * 32 + mt * 16 + (lane & 15)) * QT_LD + ks * 16 + (lane >> 4) * 8]);
#pragma unroll
            for (int np = 0; np < 2; np++)
                lmc_ldsm_x4(bfr[np], &Bs[(wn * 32 + np * 16 + ((lane >> 4) << 3) + (lane & 7)) * QT_LD + ks * 16 +
                                         ((lane >> 3) & 1) * 8]);
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    lmc_mma_bf16(acc[mt][nt], af[mt], bfr[nt >> 1][(nt & 1) * 2], bfr[nt >> 1][(nt & 1) * 2 + 1]);
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int64_t m = m0 + wm * 32 + mt * 16 + (lane >> 2) + (e >= 2 ? 8 : 0);
                int64_t nn = n0 + wn * 32 + nt * 8 + (lane & 3) * 2 + (e & 1);
                if (m < a.M && nn < a.n) a.y[m * a.n + nn] = acc[mt][nt][e] + (a.bias ? a.bias[nn] : 0.0f);
            }
}

/* xb (M, kp) = bf16 of x (M, k) in kernel column order, zeros for padding. */
__global__ void qgather_bf16_kernel(__nv_bfloat16 *xb, const float *x, const int32_t *perm, int64_t M, int64_t k,
                                    int64_t kp) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < M * kp; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / kp, j = i % kp;
        int64_t col = perm ? perm[j] : (j < k ? j : -1);
        xb[i] = __float2bfloat16_rn(col >= 0 ? x[m * k + col] : 0.0f);
    }
}

/* xk (M, kp) = x (M, k) in kernel column order, zeros for padding. */
__global__ void qgather_kernel(float *xk, const float *x, const int32_t *perm, int64_t M, int64_t k, int64_t kp) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < M * kp; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / kp, j = i % kp;
        int64_t col = perm ? perm[j] : (j < k ? j : -1);
        xk[i] = col >= 0 ? x[m * k + col] : 0.0f;
    }
}

template <int FMT>
static void launch_gemv(struct lmc_cuda_ctx *c, struct qmm_args a) {
    unsigned grid = (unsigned)((a.n + GEMV_WARPS * GEMV_ROWS - 1) / (GEMV_WARPS * GEMV_ROWS));
    const int64_t M = a.M;
    for (int64_t m0 = 0; m0 < M; m0 += 16) { /* batch tiles of at most 16 rows */
        struct qmm_args t = a;
        t.M = M - m0 < 16 ? M - m0 : 16;
        t.x = a.x + m0 * a.ldx;
        t.y = a.y + m0 * a.n;
        if (t.M == 1) qgemv_kernel<FMT, 1><<<grid, 32 * GEMV_WARPS, 0, c->stream>>>(t);
        else if (t.M == 2) qgemv_kernel<FMT, 2><<<grid, 32 * GEMV_WARPS, 0, c->stream>>>(t);
        else if (t.M <= 4) qgemv_kernel<FMT, 4><<<grid, 32 * GEMV_WARPS, 0, c->stream>>>(t);
        else if (t.M <= 8) qgemv_kernel<FMT, 8><<<grid, 32 * GEMV_WARPS, 0, c->stream>>>(t);
        else qgemv_kernel<FMT, 16><<<grid, 32 * GEMV_WARPS, 0, c->stream>>>(t);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

template <int FMT>
static void launch_mma(struct lmc_cuda_ctx *c, const struct qmm_args &a) {
    int64_t gy = (a.M + QT_BM - 1) / QT_BM;
    LMC_ASSERT(gy <= 65535);
    dim3 grid((unsigned)((a.n + QT_BN - 1) / QT_BN), (unsigned)gy);
    qgemm_mma_kernel<FMT><<<grid, QT_THREADS, QT_SMEM, c->stream>>>(a);
    LMC_CUDA_LAUNCH_CHECK();
}

extern "C" void lmc_cuda_qmatmul_ex(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                                    const float *bias, enum lmc_cuda_qpath path) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const struct lmc_cuda_qw *q = qw_of(w);
    LMC_ASSERT(M >= 0);
    if (M == 0) return;
    if (q->fmt == FMT_DENSE) {
        struct lmc_mat d = {LMC_DTYPE_BF16, q->n, q->k, q->dense};
        lmc_cuda_matmul(ctx, y, x, M, &d, bias);
        return;
    }
    struct qmm_args a;
    memset(&a, 0, sizeof a);
    a.codes = q->codes, a.so = q->so, a.y = y, a.bias = bias;
    a.n = q->n, a.nb = q->nb, a.gb = q->gb, a.ng = q->ng, a.M = M;
    memcpy(a.lut, q->lut, sizeof a.lut);
    bool gemv = path == LMC_CUDA_Q_GEMV || (path == LMC_CUDA_Q_AUTO && M <= LMC_CUDA_Q_GEMV_MAX_M);
    if (!gemv) { /* tiles: bf16 activations in kernel order */
        lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, (size_t)(M * q->kp) * 2);
        __nv_bfloat16 *xb = (__nv_bfloat16 *)c->scratch;
        qgather_bf16_kernel<<<lmc_cuda_blocks(M * q->kp, 256), 256, 0, c->stream>>>(xb, x, q->perm, M, q->k, q->kp);
        LMC_CUDA_LAUNCH_CHECK();
        a.xb = xb;
        a.ldx = q->kp;
    } else if (q->perm || q->kp != q->k || ((uintptr_t)x & 15)) { /* gathered into kernel order (aligned) */
        lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, (size_t)(M * q->kp) * sizeof(float));
        float *xk = (float *)c->scratch;
        qgather_kernel<<<lmc_cuda_blocks(M * q->kp, 256), 256, 0, c->stream>>>(xk, x, q->perm, M, q->k, q->kp);
        LMC_CUDA_LAUNCH_CHECK();
        a.x = xk;
        a.ldx = q->kp;
    } else {
        a.x = x;
        a.ldx = q->k;
    }
    if (gemv) {
        if (q->fmt == FMT_G4) launch_gemv<FMT_G4>(c, a);
        else if (q->fmt == FMT_G4LUT) launch_gemv<FMT_G4LUT>(c, a);
        else launch_gemv<FMT_G8>(c, a);
    } else {
        if (q->fmt == FMT_G4) launch_mma<FMT_G4>(c, a);
        else if (q->fmt == FMT_G4LUT) launch_mma<FMT_G4LUT>(c, a);
        else launch_mma<FMT_G8>(c, a);
    }
}

extern "C" void lmc_cuda_qmatmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                                 const float *bias) {
    lmc_cuda_qmatmul_ex(ctx, y, x, M, w, bias, LMC_CUDA_Q_AUTO);
}

/* ------------------------------------------- bench support (bench_qmatmul_cuda) */

extern "C" lmc_status lmc_cuda_qweight_clone(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                             lmc_err *err) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const struct lmc_cuda_qw *q = qw_of(w);
    struct lmc_cuda_qw *d = (struct lmc_cuda_qw *)calloc(1, sizeof *d);
    struct lmc_qweight *h = (struct lmc_qweight *)calloc(1, sizeof *h);
    *out = NULL;
    if (!d || !h) {
        free(d), free(h);
        return lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of memory");
    }
    *d = *q;
    d->codes = NULL, d->so = NULL, d->perm = NULL, d->dense = NULL;
    void *const src[4] = {q->codes, q->so, q->perm, q->dense};
    void **dst[4] = {(void **)&d->codes, (void **)&d->so, (void **)&d->perm, &d->dense};
    size_t bytes[4] = {(size_t)(q->n * q->nb) * (q->fmt == FMT_G8 ? 32 : 16), (size_t)(q->n * q->ng) * 4,
                       (size_t)q->kp * 4, (size_t)(q->n * q->k) * 2};
    for (int i = 0; i < 4; i++) {
        if (!src[i]) continue;
        *dst[i] = lmc_cuda_alloc(c, bytes[i]);
        if (!*dst[i]) {
            qw_release(d);
            free(h);
            return lmc_err_set(err, LMC_ERR_OOM, "cuda qmatmul: out of device memory");
        }
        LMC_CUDA_CHECK(cudaMemcpyAsync(*dst[i], src[i], bytes[i], cudaMemcpyDeviceToDevice, c->stream));
    }
    *h = *w;
    h->owned = d;
    h->data = d->fmt == FMT_DENSE ? (const uint8_t *)d->dense : d->codes;
    *out = h;
    return LMC_OK;
}

extern "C" void lmc_cuda_copy_d2d(void *ctx, void *dst, const void *src, size_t bytes) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

extern "C" void lmc_cuda_f32_to_bf16(void *ctx, void *dst, const float *src, int64_t n) {
    lmc_cuda_to_bf16((struct lmc_cuda_ctx *)ctx, (__nv_bfloat16 *)dst, src, n);
}

extern "C" void lmc_cuda_gemm_bf16(void *ctx, float *y, const void *xb, int64_t M, const void *wb, int64_t N,
                                   int64_t K) {
    lmc_cuda_gemm((struct lmc_cuda_ctx *)ctx, true, false, N, M, K, wb, K, xb, K, y, N, LMC_DTYPE_BF16, NULL, 0.0f);
}
