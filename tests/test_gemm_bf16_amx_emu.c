/* test_gemm_bf16_amx_emu.c — gemm_bf16.c's AMX paths on any CPU: this file
 * compiles gemm_amx.c with its tiles emulated (LMC_AMX_EMULATE, see
 * test_gemm_amx_emu.c) and gemm_bf16.c with the portable packs and the AMX
 * kernel chosen (LMC_GB_AMX_EMULATE), both under other names, so every
 * entry point runs the blocking, workspace sizes and kernels it runs on an
 * AMX CPU (A of contiguous K converted into rows, other A as panels
 * re-laid, producer-packed A re-laid):
 *  - lmc_cpu_gemm_bf16 in all four transpositions, odd M/N/K (several K,
 *    N and M blocks, edge tiles), = and +=, against the float64 sum of the
 *    bf16-rounded operands within the f32 bound; C's padding untouched;
 *  - _pb with B packed in two panel ranges: the same bits;
 *  - a sub-block of rows: the same bits (no dependence on M's split);
 *  - _pp with A from _apack (row-major lines) and from _apack_t (its
 *    transpose): the bits of _pb on the f32 A;
 *  - _terms (shared A, several N blocks, terms summing into one C,
 *    transposed A): the bits of separate lmc_cpu_gemm_bf16 calls.
 * The workspace is exactly the size the _ws functions give, so an AMX
 * path writing past it shows under the sanitizers. */
#define LMC_AMX_EMULATE 1
#define LMC_GB_AMX_EMULATE 1
#define lmc_cpu_has_amx emu_has_amx
#define lmc_cpu_amx_bf16_rows emu_amx_bf16_rows
#define lmc_cpu_amx_bf16_panels emu_amx_bf16_panels
#define lmc_cpu_amx_pack_rows emu_amx_pack_rows
#define lmc_cpu_has_bf16 emu_has_bf16
#define lmc_cpu_gemm_bf16 emu_gemm_bf16
#define lmc_cpu_gemm_bf16_apack emu_gemm_bf16_apack
#define lmc_cpu_gemm_bf16_apack_t emu_gemm_bf16_apack_t
#define lmc_cpu_gemm_bf16_apack_words emu_gemm_bf16_apack_words
#define lmc_cpu_gemm_bf16_bpack emu_gemm_bf16_bpack
#define lmc_cpu_gemm_bf16_bpack_panels emu_gemm_bf16_bpack_panels
#define lmc_cpu_gemm_bf16_bpack_words emu_gemm_bf16_bpack_words
#define lmc_cpu_gemm_bf16_noamx emu_gemm_bf16_noamx
#define lmc_cpu_gemm_bf16_pb emu_gemm_bf16_pb
#define lmc_cpu_gemm_bf16_portable emu_gemm_bf16_portable
#define lmc_cpu_gemm_bf16_pp emu_gemm_bf16_pp
#define lmc_cpu_gemm_bf16_terms emu_gemm_bf16_terms
#define lmc_cpu_gemm_bf16_terms_portable emu_gemm_bf16_terms_portable
#define lmc_cpu_gemm_bf16_terms_ws emu_gemm_bf16_terms_ws
#define lmc_cpu_gemm_bf16_ws emu_gemm_bf16_ws
#include "ops/cpu/gemm_amx.c"
#include "ops/cpu/gemm_bf16.c"

#include "test_bf16.h"

#include <stdlib.h>

static uint64_t rng = 9191;

static void test_entry_points(void) {
    static const int64_t shapes[][3] = {{1, 1, 1},      {7, 33, 5},     {9, 31, 2},   {13, 45, 771},
                                        {101, 803, 37}, {97, 65, 389}, {200, 40, 801}, {64, 48, 48}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    struct test_gemm_case g = test_gemm_case_new(&rng, M, N, K, ta, tb, N + 3);
                    float *C2 = malloc((size_t)(M * g.ldc) * 4);
                    memcpy(C2, g.C, (size_t)(M * g.ldc) * 4);
                    void *ws = test_alloc64_words(emu_gemm_bf16_ws(M, N, K));
                    emu_gemm_bf16(M, N, K, g.A, g.a_sm, g.a_sk, g.B, g.b_sk, g.b_sn, g.C, g.ldc, acc, ws);
                    double e = test_gemm_case_err(&g, g.C, acc);
                    CHECK_MSG(e <= 1.0, "M %lld N %lld K %lld ta %d tb %d accum %d: err/bound %.3g", (long long)M,
                              (long long)N, (long long)K, ta, tb, acc, e);
                    CHECK(test_gemm_case_pad_same(&g, g.C));
                    /* B packed once, in two panel ranges: the same bits */
                    int64_t np = emu_gemm_bf16_bpack_panels(N, K);
                    uint32_t *bp = test_alloc64_words(emu_gemm_bf16_bpack_words(N, K));
                    emu_gemm_bf16_bpack(bp, N, K, g.B, g.b_sk, g.b_sn, 0, np / 2);
                    emu_gemm_bf16_bpack(bp, N, K, g.B, g.b_sk, g.b_sn, np / 2, np);
                    emu_gemm_bf16_pb(M, N, K, g.A, g.a_sm, g.a_sk, bp, C2, g.ldc, acc, ws);
                    CHECK_MSG(!memcmp(g.C, C2, (size_t)(M * g.ldc) * 4),
                              "pb M %lld N %lld K %lld ta %d tb %d: other bits", (long long)M, (long long)N,
                              (long long)K, ta, tb);
                    /* rows from m0 alone: the same bits */
                    int64_t m0 = M / 3;
                    if (m0 > 0) {
                        float *C3 = malloc((size_t)(M * g.ldc) * 4);
                        memcpy(C3, g.C0, (size_t)(M * g.ldc) * 4);
                        void *ws3 = test_alloc64_words(emu_gemm_bf16_ws(M - m0, N, K));
                        emu_gemm_bf16(M - m0, N, K, g.A + m0 * g.a_sm, g.a_sm, g.a_sk, g.B, g.b_sk, g.b_sn,
                                      C3 + m0 * g.ldc, g.ldc, acc, ws3);
                        CHECK_MSG(!memcmp(g.C + m0 * g.ldc, C3 + m0 * g.ldc, (size_t)((M - m0) * g.ldc) * 4),
                                  "rows %lld.. alone: other bits (M %lld N %lld K %lld ta %d)", (long long)m0,
                                  (long long)M, (long long)N, (long long)K, ta);
                        free(C3), free(ws3);
                    }
                    /* A packed whole by a producer (rows, or its transpose): pp gives pb's bits */
                    uint32_t *ap = test_alloc64_words(emu_gemm_bf16_apack_words(M, K));
                    if (ta)
                        emu_gemm_bf16_apack_t(ap, M, K, 0, g.A, M, K);
                    else
                        emu_gemm_bf16_apack(ap, M, K, 0, g.A, K, M);
                    memcpy(C2, g.C0, (size_t)(M * g.ldc) * 4);
                    emu_gemm_bf16_pp(M, N, K, ap, bp, C2, g.ldc, acc);
                    CHECK_MSG(!memcmp(g.C, C2, (size_t)(M * g.ldc) * 4),
                              "pp M %lld N %lld K %lld ta %d tb %d: other bits", (long long)M, (long long)N,
                              (long long)K, ta, tb);
                    test_gemm_case_free(&g), free(C2), free(ws), free(bp), free(ap);
                }
    }
}

static uint32_t *packed(const float *B, int64_t N, int64_t K, int64_t b_sk, int64_t b_sn) {
    uint32_t *bp = test_alloc64_words(emu_gemm_bf16_bpack_words(N, K));
    emu_gemm_bf16_bpack(bp, N, K, B, b_sk, b_sn, 0, emu_gemm_bf16_bpack_panels(N, K));
    return bp;
}

/* terms: shared A (packed once), terms into one C, a transposed A */
static void test_terms(void) {
    static const int64_t Ms[] = {1, 13, 101, 200};
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t M = Ms[mi], K = 37, N0 = 803, N1 = 45, Ka = 389, Kb = 771, Nc = 65;
            float *A = test_rand_vec(&rng, M * K, 1.0f), *B0 = test_rand_vec(&rng, K * N0, 1.0f),
                  *B1 = test_rand_vec(&rng, K * N1, 1.0f);
            float *A0 = test_rand_vec(&rng, M * Ka, 1.0f), *A1 = test_rand_vec(&rng, Kb * M, 1.0f),
                  *D0 = test_rand_vec(&rng, Ka * Nc, 1.0f), *D1 = test_rand_vec(&rng, Kb * Nc, 1.0f);
            float *C0 = test_rand_vec(&rng, M * N0, 1.0f), *C1 = test_rand_vec(&rng, M * N1, 1.0f),
                  *Cc = test_rand_vec(&rng, M * Nc, 1.0f);
            float *R0 = malloc((size_t)(M * N0) * 4), *R1 = malloc((size_t)(M * N1) * 4), *Rc = malloc((size_t)(M * Nc) * 4);
            memcpy(R0, C0, (size_t)(M * N0) * 4), memcpy(R1, C1, (size_t)(M * N1) * 4), memcpy(Rc, Cc, (size_t)(M * Nc) * 4);
            uint32_t *p0 = packed(B0, N0, K, 1, K), *p1 = packed(B1, N1, K, N1, 1);
            uint32_t *pd0 = packed(D0, Nc, Ka, Nc, 1), *pd1 = packed(D1, Nc, Kb, Nc, 1);
            void *ws = test_alloc64_words(emu_gemm_bf16_ws(M, N0, Kb)),
                 *wt = test_alloc64_words(emu_gemm_bf16_terms_ws(M, Kb));
            emu_gemm_bf16(M, N0, K, A, K, 1, B0, 1, K, R0, N0, acc, ws);
            emu_gemm_bf16(M, N1, K, A, K, 1, B1, N1, 1, R1, N1, acc, ws);
            emu_gemm_bf16(M, Nc, Ka, A0, Ka, 1, D0, Nc, 1, Rc, Nc, acc, ws);
            emu_gemm_bf16(M, Nc, Kb, A1, 1, M, D1, Nc, 1, Rc, Nc, true, ws);
            struct lmc_gb_term t[4] = {{A, K, 1, K, p0, N0, C0, N0, acc},
                                       {A, K, 1, K, p1, N1, C1, N1, acc},
                                       {A0, Ka, 1, Ka, pd0, Nc, Cc, Nc, acc},
                                       {A1, 1, M, Kb, pd1, Nc, Cc, Nc, true}};
            emu_gemm_bf16_terms(M, 4, t, wt);
            CHECK_MSG(!memcmp(C0, R0, (size_t)(M * N0) * 4) && !memcmp(C1, R1, (size_t)(M * N1) * 4) &&
                          !memcmp(Cc, Rc, (size_t)(M * Nc) * 4),
                      "terms M %lld accum %d: not the separate calls' bits", (long long)M, acc);
            free(A), free(B0), free(B1), free(A0), free(A1), free(D0), free(D1), free(C0), free(C1), free(Cc);
            free(R0), free(R1), free(Rc), free(p0), free(p1), free(pd0), free(pd1), free(ws), free(wt);
        }
}

int main(void) {
    test_entry_points();
    test_terms();
    return test_finish("test_gemm_bf16_amx_emu");
}
