/* qmatmul_q4k.c — the small-M product (any number of activation rows,
 * decode's M = 1 first) for GGUF Q4_K (super-blocks of 256: fp16 d and
 * dmin, eight 6-bit sub-block scales and mins, 128 nibble bytes), AVX-512
 * VNNI on 256-bit vectors or AVX2 (vpdpwssd as vpmaddwd + vpaddd: the same
 * integers, so the same bits), in the 4 weight rows x up to 4 activation
 * rows tiles of qmatmul_q4.c. The tile's body is qmatmul_q4k_tile.h,
 * included once per instruction set. It reads the file's layout or the
 * one the CPU loader repacks into (Q4_KR, q4k_repack.c: the same integers
 * in the same lanes, fewer operations to get them there), a constant per
 * instance.
 *
 * The activations share one scale dx per super-block (lmc_q8act_quantize_k,
 * as llama.cpp's q8_K), so a weight element d sc_j q - dmin mn_j (q 0..15,
 * j its sub-block of 32) gives the super-block's product with codes c as
 * d dx sum_j sc_j sum(q c) - dmin dx sum_j mn_j sum(c_j). The first sum is
 * all integers, two sub-blocks at a time in the pair layout of Q4_0's
 * tiles (qmatmul_q4.c): each 32-byte chunk c of the codes holds sub-block
 * 2c in its low nibbles and 2c + 1 in its high ones; in registers p =
 * elements 0..15 of 2c then of 2c + 1, q = elements 16..31 of both, against
 * the activation codes laid out the same way (xa, xb): vpmaddubsw of p with
 * xa plus that of q with xb (int16 lanes, |.| <= 7620: no saturation), then
 * vpdpwssd with the scale pair (sc_2c in the low half's int16 lanes, sc_2c+1
 * in the high half's) into the int32 lanes, exact: 3 multiplies per 64
 * codes. It is converted once per super-block and scaled by d dx. The
 * second is one 8-lane FMA per super-block of the row's dmin mn_j with the
 * activation's dx sum(c_j).
 *
 * Activation layout ("Q4_K slots"): per super-block Q4K_SLOTS slots of 128
 * bytes: the 256 codes (chunk c at 64 c: xa then xb), 8 floats dx
 * sum(c_j), then dx (the super-block's scale). Each (weight row, activation row) pair has its
 * own accumulators and operation order, so a row's result is the same bits
 * for every M. */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <string.h>

#define Q4K_SLOTS 3 /* 128-byte slots a super-block's activations take (292 bytes used) */

int64_t lmc_q4k_slots(const struct lmc_qweight *w) { return w->kp / 256 * Q4K_SLOTS; }

/* xq: lmc_q8act_quantize_k's blocks (one d per super-block, taken from its first block). */
void lmc_q4k_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t i0, int64_t i1, void *buf) {
    int64_t nb = w->kp / 32, nsb = w->kp / 256;
    for (int64_t i = i0; i < i1; i++) {
        uint8_t *o = (uint8_t *)buf + i * nsb * Q4K_SLOTS * 128;
        const struct lmc_q8act *x = xq + i * nb;
        for (int64_t s = 0; s < nsb; s++, o += Q4K_SLOTS * 128) {
            float f[8];
            for (int j = 0; j < 8; j++) { /* block j = 2c + h: elements 0..15 at 64c + 16h, 16..31 at 64c + 32 + 16h */
                const struct lmc_q8act *a = &x[8 * s + j];
                memcpy(o + 64 * (j / 2) + 16 * (j % 2), a->q, 16);
                memcpy(o + 64 * (j / 2) + 32 + 16 * (j % 2), a->q + 16, 16);
                f[j] = a->d * (float)(a->s0 + a->s1);
            }
            memcpy(o + 256, f, 32);
            memcpy(o + 288, &x[8 * s].d, 4);
            memset(o + 292, 0, Q4K_SLOTS * 128 - 292);
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define K_MR 4
/* software prefetch distance: 2 4-row tiles, 1 for tiles of K_PF_BYTES or more (1-thread decode user CPU
 * time, bench/quant_decode_ab.py, 3-5 interleaved rounds: Q4_K at K 768 (1.7 KB tiles) 2 tiles beat 1, 4
 * and 8; at K 2048 (4.6 KB) 1 beat 2 by 1.17x; no software prefetch 2-3x slower; with Q4_0/GPTQ/Q8_0
 * (qmatmul_q4.c) 1 tile for tiles >= 4 KB gave r1b 1.04-1.11x, while 1 tile for Q8_0's 3.3 KB tiles at K
 * 768 lost 17%) */
#define K_PF_BYTES 4096
#define K_PRE_MAX 64 /* super-blocks a row's scales are decoded ahead for (K <= 16384) */
#define K_PRE 192    /* bytes of a row's decoded scales per super-block: 4 scale pairs (4 x 16 int16), dmin mn (8 floats), d (8) */

typedef void (*q4k_fn)(const struct lmc_qweight *, int64_t, const struct lmc_q8rows *, int64_t, float *, int64_t,
                       const uint8_t *, const uint8_t *);

/* The kernel once per instruction set (qmatmul_q4k_tile.h): VNNI's
 * vpdpwssd, AVX2's vpmaddwd + vpaddd (the same integers, the same bits). */
#define KT_SUF vnni
#define TK __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define IK __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))) static inline
#define KT_DPWSSD(s, a, b) _mm256_dpwssd_epi32(s, a, b)
#define KT_DMIN(dm) _mm256_permutexvar_ps(_mm256_set1_epi32(1), _mm256_castps128_ps256(dm))
#include "quant/qmatmul_q4k_tile.h"
#undef KT_SUF
#undef TK
#undef IK
#undef KT_DPWSSD
#undef KT_DMIN

#define KT_SUF avx2
#define TK __attribute__((target("avx2,fma,f16c")))
#define IK __attribute__((always_inline, target("avx2,fma,f16c"))) static inline
#define KT_DPWSSD(s, a, b) _mm256_add_epi32(s, _mm256_madd_epi16(a, b))
#define KT_DMIN(dm) _mm256_broadcastss_ps(_mm_movehdup_ps(dm))
#include "quant/qmatmul_q4k_tile.h"

void lmc_qdotm_table_q4k_vnni(lmc_qdotm_fn *dotm) {
    dotm[LMC_QK_Q4_K] = q4k_rows_vnni;
    dotm[LMC_QK_Q4_KR] = q4kr_rows_vnni;
}
void lmc_qdotm_table_q4k_avx2(lmc_qdotm_fn *dotm) {
    dotm[LMC_QK_Q4_K] = q4k_rows_avx2;
    dotm[LMC_QK_Q4_KR] = q4kr_rows_avx2;
}
#else
void lmc_qdotm_table_q4k_vnni(lmc_qdotm_fn *dotm) { (void)dotm; }
void lmc_qdotm_table_q4k_avx2(lmc_qdotm_fn *dotm) { (void)dotm; }
#endif
