/* test_gemm_f32.c — the CPU's own fp32 GEMM (ops/cpu/gemm_f32.c):
 *  - all four transpositions of A and B, odd M/N/K in 1..300 (1, 5, 6, 7,
 *    15, 16, 17 and sizes past the K, M and N blocks: edge tiles, several
 *    blocks), leading dimensions larger than the rows, alpha/beta (beta 0
 *    over a C full of NaN must not propagate it), B as F32, F16 and BF16:
 *    against a float64 sum of the same (widened) operands' products; the
 *    only error left is f32 summation and the alpha/beta merge, bounded by
 *    (K + 4) * 2^-24 * (|alpha| sum|products| + |beta c0|);
 *  - the same bits when the product is computed in pieces (M and N split
 *    at odd offsets, as threads split it), with our AVX2 kernel;
 *    and with A packed once beforehand (lmc_cpu_gemm_f32_pa);
 *  - the same bits for rows computed in chunks of 1..13 (B packed a panel at
 *    a time, tiles of fewer than 6 rows) as in one blocked product;
 *  - K = 0 and alpha = 0 scale C by beta. */
#include "test.h"
#include "core/core.h"
#include "core/dtype.h"
#include "ops/cpu/gemm_f32.h"

#include <stdlib.h>

static uint64_t rng = 4242;

static float *ws_for(int64_t M, int64_t N, int64_t K) {
    size_t n = lmc_cpu_gemm_f32_ws(M, N, K);
    return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
}

/* B stored as dt; bf returns the widened float values (the reference's operand) */
static void *make_b(int64_t n, enum lmc_dtype dt, float *bf) {
    if (dt == LMC_DTYPE_F32) {
        float *b = malloc((size_t)n * sizeof *b);
        for (int64_t i = 0; i < n; i++) b[i] = bf[i] = test_rand(&rng);
        return b;
    }
    uint16_t *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++) {
        float f = test_rand(&rng);
        b[i] = dt == LMC_DTYPE_F16 ? lmc_f32_to_f16(f) : lmc_f32_to_bf16(f);
        bf[i] = dt == LMC_DTYPE_F16 ? lmc_f16_to_f32(b[i]) : lmc_bf16_to_f32(b[i]);
    }
    return b;
}

/* one product; returns max |c - ref| / bound */
static double one(int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta, enum lmc_dtype dt,
                  bool nan_c) {
    int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
    float *A = malloc((size_t)LMC_MAX(na, 1) * sizeof *A), *bf = malloc((size_t)LMC_MAX(nb, 1) * sizeof *bf);
    float *C = malloc((size_t)nc * sizeof *C), *C0 = malloc((size_t)nc * sizeof *C);
    for (int64_t i = 0; i < na; i++) A[i] = test_rand(&rng);
    void *B = make_b(LMC_MAX(nb, 1), dt, bf);
    for (int64_t i = 0; i < nc; i++) C[i] = C0[i] = nan_c ? NAN : test_rand(&rng);
    float *ws = ws_for(M, N, K);
    lmc_cpu_gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, dt, ldb, beta, C, ldc, ws);
    double worst = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)A[ta ? k * lda + m : m * lda + k] * (double)bf[tb ? n * ldb + k : k * ldb + n];
                s += p, sa += fabs(p);
            }
            double c0 = beta == 0.0f ? 0.0 : (double)C0[m * ldc + n];
            double ref = (double)alpha * s + (double)beta * c0;
            double bound = (double)(K + 4) * 0x1p-24 * (fabs((double)alpha) * sa + fabs((double)beta * c0)) + 1e-30;
            double e = fabs((double)C[m * ldc + n] - ref) / bound;
            if (!(e <= worst)) worst = e; /* NaN counts as worst */
        }
    /* the padding between rows of C is untouched */
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = N; n < ldc; n++) {
            float a = C[m * ldc + n], b = C0[m * ldc + n];
            if (memcmp(&a, &b, sizeof a) != 0) worst = INFINITY;
        }
    free(A), free(bf), free(B), free(C), free(C0), free(ws);
    return worst;
}

/* full product == the product done in 4 pieces (M split at m1, N at n1), bitwise */
static bool pieces(int64_t M, int64_t N, int64_t K, bool ta, bool tb, int64_t m1, int64_t n1, enum lmc_dtype dt) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    float *A = malloc((size_t)M * K * sizeof *A), *bf = malloc((size_t)N * K * sizeof *bf);
    float *C1 = malloc((size_t)M * N * sizeof *C1), *C2 = malloc((size_t)M * N * sizeof *C2);
    for (int64_t i = 0; i < M * K; i++) A[i] = test_rand(&rng);
    void *B = make_b(N * K, dt, bf);
    for (int64_t i = 0; i < M * N; i++) C1[i] = C2[i] = test_rand(&rng);
    float *ws = ws_for(M, N, K);
    lmc_cpu_gemm_f32(ta, tb, M, N, K, 0.75f, A, lda, B, dt, ldb, 1.0f, C1, N, ws);
    int64_t es = dt == LMC_DTYPE_F32 ? 4 : 2;
    for (int pm = 0; pm < 2; pm++)
        for (int pn = 0; pn < 2; pn++) {
            int64_t a0 = pm ? m1 : 0, a1 = pm ? M : m1, b0 = pn ? n1 : 0, b1 = pn ? N : n1;
            const float *Ap = ta ? A + a0 : A + a0 * lda;
            const char *Bp = (const char *)B + (tb ? b0 * ldb : b0) * es;
            lmc_cpu_gemm_f32(ta, tb, a1 - a0, b1 - b0, K, 0.75f, Ap, lda, Bp, dt, ldb, 1.0f, C2 + a0 * N + b0, N, ws);
        }
    bool same = memcmp(C1, C2, (size_t)M * N * sizeof *C1) == 0;
    /* A packed once (lmc_cpu_gemm_f32_pa), N in two calls: the same bits again */
    float *ap = aligned_alloc(64, (lmc_cpu_gemm_f32_apack_words(M, K) * sizeof(float) + 63) / 64 * 64);
    /* packed in two row ranges, the later first: neither writes outside its rows */
    int64_t mm = (M / 2) / LMC_GEMM_F32_MR * LMC_GEMM_F32_MR;
    lmc_cpu_gemm_f32_apack(ap, ta, M, K, A, lda, mm, M);
    lmc_cpu_gemm_f32_apack(ap, ta, M, K, A, lda, 0, mm);
    for (int64_t i = 0; i < M * N; i++) C2[i] = C1[i];
    lmc_cpu_gemm_f32(ta, tb, M, N, K, 0.75f, A, lda, B, dt, ldb, 1.0f, C1, N, ws);
    for (int pn = 0; pn < 2; pn++) {
        int64_t b0 = pn ? n1 : 0, b1 = pn ? N : n1;
        const char *Bp = (const char *)B + (tb ? b0 * ldb : b0) * es;
        lmc_cpu_gemm_f32_pa(tb, M, b1 - b0, K, 0.75f, ap, Bp, dt, ldb, 1.0f, C2 + b0, N, ws);
    }
    same = same && memcmp(C1, C2, (size_t)M * N * sizeof *C1) == 0;
    free(ap);
    free(A), free(bf), free(B), free(C1), free(C2), free(ws);
    return same;
}

/* The full product (M rows: B packed in blocks) == the same rows in chunks
 * of 1, 2, ..., 13 rows (each under the panel mode's row count: B packed a
 * panel at a time, tiles of fewer than 6 rows), bitwise, for beta 0 and 1
 * with alpha 1 (the matmul ops' calls), by lmc_cpu_gemm_f32 and with each
 * chunk's A packed beforehand (lmc_cpu_gemm_f32_pa, as the serving route
 * runs prompt rows). */
static bool chunks(int64_t M, int64_t N, int64_t K, bool ta, bool tb, enum lmc_dtype dt, float beta) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    float *A = malloc((size_t)M * K * sizeof *A), *bf = malloc((size_t)N * K * sizeof *bf);
    float *C1 = malloc((size_t)M * N * sizeof *C1), *C2 = malloc((size_t)M * N * sizeof *C2);
    float *C3 = malloc((size_t)M * N * sizeof *C3), *Ac = malloc((size_t)13 * K * sizeof *Ac);
    for (int64_t i = 0; i < M * K; i++) A[i] = test_rand(&rng);
    void *B = make_b(N * K, dt, bf);
    for (int64_t i = 0; i < M * N; i++) C1[i] = C2[i] = C3[i] = test_rand(&rng);
    float *ws = ws_for(M, N, K);
    float *ap = aligned_alloc(64, (lmc_cpu_gemm_f32_apack_words(13, K) * sizeof(float) + 63) / 64 * 64);
    lmc_cpu_gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, dt, ldb, beta, C1, N, ws);
    for (int64_t m0 = 0, r = 1; m0 < M; m0 += r, r = r % 13 + 1) {
        int64_t r1 = LMC_MIN(r, M - m0);
        const float *Ap = ta ? A + m0 : A + m0 * lda;
        lmc_cpu_gemm_f32(ta, tb, r1, N, K, 1.0f, Ap, lda, B, dt, ldb, beta, C2 + m0 * N, N, ws);
        for (int64_t i = 0; i < r1; i++) /* the chunk's rows as a row-major x (the route's operand) */
            for (int64_t k = 0; k < K; k++) Ac[i * K + k] = ta ? A[k * lda + m0 + i] : A[(m0 + i) * lda + k];
        lmc_cpu_gemm_f32_apack(ap, false, r1, K, Ac, K, 0, r1);
        lmc_cpu_gemm_f32_pa(tb, r1, N, K, 1.0f, ap, B, dt, ldb, beta, C3 + m0 * N, N, ws);
    }
    bool same = !memcmp(C1, C2, (size_t)M * N * sizeof *C1) && !memcmp(C1, C3, (size_t)M * N * sizeof *C1);
    free(A), free(bf), free(B), free(C1), free(C2), free(C3), free(Ac), free(ap), free(ws);
    return same;
}

int main(void) {
    static const int64_t sz[] = {1, 5, 6, 7, 15, 16, 17};
    static const enum lmc_dtype dts[] = {LMC_DTYPE_F32, LMC_DTYPE_F16, LMC_DTYPE_BF16};
    /* small sizes: every combination of M, N, K in sz, each transposition */
    for (int t = 0; t < 4; t++)
        for (int a = 0; a < 7; a++)
            for (int b = 0; b < 7; b++)
                for (int c = 0; c < 7; c++) {
                    enum lmc_dtype dt = dts[(a + b + c) % 3];
                    double e = one(sz[a], sz[b], sz[c], t & 1, t >> 1, 1.0f, 0.0f, dt, (a + c) % 2 == 0);
                    CHECK_MSG(e <= 1.0, "M=%lld N=%lld K=%lld ta=%d tb=%d dt=%d: %g", (long long)sz[a],
                              (long long)sz[b], (long long)sz[c], t & 1, t >> 1, (int)dt, e);
                }
    /* larger odd sizes: several K blocks (256), M blocks (144), alpha/beta */
    static const struct { int64_t M, N, K; float alpha, beta; } big[] = {
        {300, 33, 299, 1.0f, 0.0f},  {145, 47, 513, 0.5f, 1.0f},   {61, 300, 257, -1.5f, 0.25f},
        {289, 17, 31, 1.0f, 1.0f},   {7, 129, 300, 2.0f, -1.0f},   {150, 96, 256, 1.0f, 0.0f},
        {3, 1601, 19, 1.0f, 0.5f},   {97, 160, 97, 0.0f, 0.5f},    {13, 11, 0, 1.0f, 0.5f},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        for (int t = 0; t < 4; t++)
            for (int d = 0; d < 3; d++) {
                double e = one(big[i].M, big[i].N, big[i].K, t & 1, t >> 1, big[i].alpha, big[i].beta, dts[d], false);
                CHECK_MSG(e <= 1.0, "case %zu ta=%d tb=%d dt=%d: %g", i, t & 1, t >> 1, d, e);
            }
    /* beta 0 over NaN at a size with several blocks */
    CHECK(one(151, 40, 300, false, true, 1.0f, 0.0f, LMC_DTYPE_F16, true) <= 1.0);
    /* pieces give the same bits (our kernel; OpenBLAS, the fallback, promises no such thing) */
    for (int t = 0; t < 4 && lmc_cpu_gemm_f32_native(); t++)
        for (int d = 0; d < 3; d++) CHECK(pieces(157, 75, 301, t & 1, t >> 1, 67, 37, dts[d]));
    /* rows in chunks of 1..13 (panel mode) give the blocked product's bits: K over two blocks */
    for (int t = 0; t < 4 && lmc_cpu_gemm_f32_native(); t++)
        for (int d = 0; d < 3; d++)
            for (int b = 0; b < 2; b++)
                CHECK_MSG(chunks(97, 83, 301, t & 1, t >> 1, dts[d], b ? 1.0f : 0.0f), "chunks: ta=%d tb=%d dt=%d beta=%d",
                          t & 1, t >> 1, d, b);
    return test_finish("test_gemm_f32");
}
