/* test_gemm_amx_emu.c — the AMX-BF16 block kernel (ops/cpu/gemm_amx.c)
 * on any CPU: the file is compiled here with LMC_AMX_EMULATE, which models
 * the tile registers and TDPBF16PS in memory (as the ISA reference
 * describes them) and takes scalar twins of its AVX-512 helpers, so the
 * kernel's own addressing (tile strides, the 16- and 32-row groups, the
 * partial last step of K, the re-layout of 8-row panels, the edge rows and
 * columns) is checked where AMX is absent. The AMX machine itself runs the
 * real instructions in test_gemm_bf16 / test_matmul_pf (LMC_CPU_AMX=1).
 *  - lmc_cpu_amx_bf16_rows, odd kp / mc / nc, = and +=: every output
 *    within the f32 summation bound of the float64 sum, NaN planted in
 *    every word the kernel may read but must not use (rows past mc, pairs
 *    past the padding, columns past nc, words past the last panel), C
 *    outside the block untouched;
 *  - lmc_cpu_amx_bf16_panels driven as gemm_bf16.c's packed-A path drives
 *    it (A and B from lmc_cpu_gemm_bf16_apack / _bpack, the K, N and M
 *    blocks of gb_run_pp), odd M/N/K: within the bound of the float64 sum
 *    of the bf16-rounded operands;
 *  - lmc_cpu_amx_pack_rows + lmc_cpu_amx_bf16_rows driven as gemm_bf16.c's
 *    path for A with contiguous K drives them (B from _bpack, the K, N and
 *    M blocks of gb_run), the same shapes and bound. */
#define LMC_AMX_EMULATE 1
#define lmc_cpu_has_amx emu_has_amx
#define lmc_cpu_amx_bf16_rows emu_amx_bf16_rows
#define lmc_cpu_amx_bf16_panels emu_amx_bf16_panels
#define lmc_cpu_amx_pack_rows emu_amx_pack_rows
#include "ops/cpu/gemm_amx.c"

#include "core/dtype.h"
#include "test.h"

static uint64_t rng = 4242;
static const uint32_t NANW = 0x7fc07fc0u; /* a pair of bf16 NaNs */

static uint32_t rand_pair(void) {
    return (uint32_t)lmc_f32_to_bf16(test_rand(&rng)) | (uint32_t)lmc_f32_to_bf16(test_rand(&rng)) << 16;
}
static double lo(uint32_t w) { return lmc_bf16_to_f32((uint16_t)w); }
static double hi(uint32_t w) { return lmc_bf16_to_f32((uint16_t)(w >> 16)); }

static void test_rows(void) {
    static const int64_t sh[][3] = {{1, 1, 1},   {5, 7, 15},    {16, 16, 16},  {17, 17, 33},  {31, 32, 32},
                                    {32, 33, 70}, {129, 50, 96}, {192, 64, 40}, {256, 20, 31}, {100, 96, 128}};
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t kp = sh[si][0], mc = sh[si][1], nc = sh[si][2];
            int64_t kpp = (kp + 15) / 16 * 16, lda = kpp + 16, rows = (mc + 15) / 16 * 16;
            int64_t np = (nc + 31) / 32, ldc = nc + 3, crows = mc + 2;
            uint32_t *at = malloc((size_t)(rows * lda) * 4), *b = malloc((size_t)(np * 32 * kp + 64 * 32) * 4);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t p = 0; p < lda; p++)
                    at[r * lda + p] = r >= mc || p >= kpp ? NANW : p >= kp ? 0 : rand_pair();
            for (int64_t j = 0; j < np; j++)
                for (int64_t p = 0; p < kp; p++)
                    for (int i = 0; i < 32; i++) b[j * 32 * kp + p * 32 + i] = j * 32 + i < nc ? rand_pair() : NANW;
            for (int64_t i = np * 32 * kp; i < np * 32 * kp + 64 * 32; i++) b[i] = NANW;
            float *c = malloc((size_t)(crows * ldc) * 4), *c0 = malloc((size_t)(crows * ldc) * 4);
            for (int64_t i = 0; i < crows * ldc; i++) c[i] = c0[i] = test_rand(&rng);
            emu_amx_bf16_rows(kp, at, lda, mc, b, nc, c, ldc, acc);
            double worst = 0;
            int untouched = 1;
            for (int64_t m = 0; m < crows; m++)
                for (int64_t n = 0; n < ldc; n++) {
                    if (m >= mc || n >= nc) {
                        untouched &= memcmp(&c[m * ldc + n], &c0[m * ldc + n], 4) == 0;
                        continue;
                    }
                    double s = acc ? c0[m * ldc + n] : 0, mag = fabs(s);
                    for (int64_t p = 0; p < kp; p++) {
                        uint32_t a = at[m * lda + p], w = b[(n / 32) * 32 * kp + p * 32 + n % 32];
                        double t = lo(a) * lo(w) + hi(a) * hi(w);
                        s += t;
                        mag += fabs(lo(a) * lo(w)) + fabs(hi(a) * hi(w));
                    }
                    double e = fabs(c[m * ldc + n] - s) / ((double)(2 * kp + 2) * ldexp(1.0, -24) * mag + 1e-30);
                    if (e > worst || e != e) worst = e;
                }
            CHECK_MSG(worst <= 1.0, "rows kp %lld mc %lld nc %lld accum %d: err/bound %.3g", (long long)kp,
                      (long long)mc, (long long)nc, acc, worst);
            CHECK_MSG(untouched, "rows kp %lld mc %lld nc %lld: C outside the block written", (long long)kp,
                      (long long)mc, (long long)nc);
            free(at), free(b), free(c), free(c0);
        }
}

/* gemm_bf16.c's blocking (GB_KC, GB_NC, GB_MC, panels of 8 rows) */
static int64_t kc_of(int64_t K) {
    int64_t nkb = (K + 383) / 384, kc = (K + nkb - 1) / nkb;
    return (kc + 1) & ~(int64_t)1;
}

static void test_panels(void) {
    static const int64_t sh[][3] = {{1, 1, 1},       {7, 33, 5},     {9, 31, 2},    {13, 45, 771},
                                    {101, 803, 37}, {97, 65, 389}, {200, 40, 1001}, {40, 48, 48}};
    for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t M = sh[si][0], N = sh[si][1], K = sh[si][2];
            float *A = malloc((size_t)(M * K) * 4), *B = malloc((size_t)(K * N) * 4);
            float *C = malloc((size_t)(M * N) * 4), *C0 = malloc((size_t)(M * N) * 4);
            for (int64_t i = 0; i < M * K; i++) A[i] = test_rand(&rng);
            for (int64_t i = 0; i < K * N; i++) B[i] = test_rand(&rng);
            for (int64_t i = 0; i < M * N; i++) C[i] = C0[i] = test_rand(&rng);
            uint32_t *ap = malloc(lmc_cpu_gemm_bf16_apack_words(M, K) * 4);
            uint32_t *bp = malloc(lmc_cpu_gemm_bf16_bpack_words(N, K) * 4);
            lmc_cpu_gemm_bf16_apack(ap, M, K, 0, A, K, M);
            lmc_cpu_gemm_bf16_bpack(bp, N, K, B, N, 1, 0, lmc_cpu_gemm_bf16_bpack_panels(N, K));
            const int64_t kcm = kc_of(K), KP = (K + 1) / 2;
            for (int64_t jc = 0; jc < N; jc += 768) { /* gb_run_pp's loops */
                int64_t nc = LMC_MIN(768, N - jc), ncp = (nc + 31) / 32 * 32;
                for (int64_t pc = 0; pc < K; pc += kcm) {
                    int64_t kc = LMC_MIN(kcm, K - pc), kp = (kc + 1) / 2;
                    for (int64_t ic = 0; ic < M; ic += 96)
                        emu_amx_bf16_panels(kp, ap + ic * KP + (pc / 2) * 8, 8 * KP, LMC_MIN(96, M - ic),
                                            bp + jc * KP + ncp * (pc / 2), nc, C + ic * N + jc, N, acc || pc > 0);
                }
            }
            double worst = 0;
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double s = acc ? C0[m * N + n] : 0, mag = fabs(s);
                    for (int64_t k = 0; k < K; k++) {
                        double p = (double)lmc_bf16_to_f32(lmc_f32_to_bf16(A[m * K + k])) *
                                   (double)lmc_bf16_to_f32(lmc_f32_to_bf16(B[k * N + n]));
                        s += p;
                        mag += fabs(p);
                    }
                    double e = fabs(C[m * N + n] - s) / ((double)(K + 2) * ldexp(1.0, -24) * mag + 1e-30);
                    if (e > worst || e != e) worst = e;
                }
            CHECK_MSG(worst <= 1.0, "panels M %lld N %lld K %lld accum %d: err/bound %.3g", (long long)M,
                      (long long)N, (long long)K, acc, worst);
            /* A's rows converted straight into AMX's layout (gb_run, a_sk == 1): the same sums as the panels */
            float *C2 = malloc((size_t)(M * N) * 4);
            memcpy(C2, C0, (size_t)(M * N) * 4);
            int64_t kpa_max = (kcm / 2 + 15) / 16 * 16;
            uint32_t *ar = malloc((size_t)(96 * kpa_max) * 4);
            for (int64_t jc = 0; jc < N; jc += 768) {
                int64_t nc = LMC_MIN(768, N - jc), ncp = (nc + 31) / 32 * 32;
                for (int64_t pc = 0; pc < K; pc += kcm) {
                    int64_t kc = LMC_MIN(kcm, K - pc), kp = (kc + 1) / 2, kpa = (kp + 15) / 16 * 16;
                    for (int64_t ic = 0; ic < M; ic += 96) {
                        int64_t mc = LMC_MIN(96, M - ic);
                        emu_amx_pack_rows(ar, kpa, A + ic * K + pc, K, mc, kc);
                        emu_amx_bf16_rows(kp, ar, kpa, mc, bp + jc * KP + ncp * (pc / 2), nc, C2 + ic * N + jc, N,
                                          acc || pc > 0);
                    }
                }
            }
            CHECK_MSG(!memcmp(C, C2, (size_t)(M * N) * 4), "rows path M %lld N %lld K %lld accum %d: not the panels' bits",
                      (long long)M, (long long)N, (long long)K, acc);
            free(A), free(B), free(C), free(C0), free(ap), free(bp), free(C2), free(ar);
        }
}

int main(void) {
    test_rows();
    test_panels();
    return test_finish("test_gemm_amx_emu");
}
