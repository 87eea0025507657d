/* x86_transpose.h — the 8 x 8 transpose of 32-bit words in AVX2 registers
 * that the packs of the bf16 and int8 tile kernels share: matmul_pf.c's
 * pf_pack (8 lines x 8 bf16 pairs into [pair][line] panels), gemm_amx.c's
 * amx_relayout (8-row panels into AMX rows) and quant/qmatmul_amx.c's
 * qamx_pack8 (8 weight rows x 8 words of 4 int8 codes into AMX's VNNI
 * layout). The words are moved, never read as numbers, so one routine
 * serves every element type.
 *
 * Defined on x86-64 with gcc >= 10 or clang (LMC_X86_TRANSPOSE set), with
 * the target attribute "avx2" and always_inline: callers are compiled for
 * AVX2 or more (their own target attributes, a superset), and the
 * transpose is inlined into their loops as if written there. */
#ifndef LMC_X86_TRANSPOSE_H
#define LMC_X86_TRANSPOSE_H

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#define LMC_X86_TRANSPOSE 1
#include <immintrin.h>
#include <stddef.h>

/* r[i] is line i of an 8 x 8 block of 32-bit words (word j in lane j);
 * stores the transpose: line j (word i = r[i]'s word j) as 32 unaligned
 * bytes at dst + j * stride (stride in bytes). Unpacks of 32- then 64-bit
 * lanes within the 128-bit halves, then the halves exchanged: 24
 * shuffles, 8 stores. */
__attribute__((target("avx2"), always_inline)) static inline void lmc_x86_tr8x8_epi32_store(const __m256i r[8],
                                                                                           void *dst,
                                                                                           ptrdiff_t stride) {
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    char *d = (char *)dst;
    _mm256_storeu_si256((__m256i *)(d + 0 * stride), _mm256_permute2x128_si256(u0, u4, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 1 * stride), _mm256_permute2x128_si256(u1, u5, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 2 * stride), _mm256_permute2x128_si256(u2, u6, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 3 * stride), _mm256_permute2x128_si256(u3, u7, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 4 * stride), _mm256_permute2x128_si256(u0, u4, 0x31));
    _mm256_storeu_si256((__m256i *)(d + 5 * stride), _mm256_permute2x128_si256(u1, u5, 0x31));
    _mm256_storeu_si256((__m256i *)(d + 6 * stride), _mm256_permute2x128_si256(u2, u6, 0x31));
    _mm256_storeu_si256((__m256i *)(d + 7 * stride), _mm256_permute2x128_si256(u3, u7, 0x31));
}
#endif

#endif
