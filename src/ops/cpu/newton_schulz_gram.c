/* newton_schulz_gram.c — Muon's quintic Newton–Schulz in Gram space for a
 * rectangular matrix (k = min(rows, cols) < w = max), fp32 (OpenBLAS) or
 * bf16 operands (gemm_bf16.c). The plain iteration (newton_schulz.c,
 * muon_bf16.c) is X_{t+1} = P_t X_t with P_t = a I + b A_t + c A_t^2 and
 * A_t = X_t X_t^T (k, k). Every P_t is a polynomial in A_0 = X_0 X_0^T, so
 * the P's commute with each other and with the A's, and
 *   X_t = Q_t X_0,   Q_{t+1} = P_t Q_t (Q_0 = I, so Q_1 = P_0),
 *   A_{t+1} = P_t X_t X_t^T P_t = P_t A_t P_t,
 * all (k, k) and symmetric: A_t^2 = A_t A_t^T through ssyrk (fp32), the
 * other products as their upper row blocks, mirrored (half cost). Per
 * step: A_t^2, P_t Q_t, P_t A_t and (P_t A_t) P_t, 4 k^3 flops (the first
 * step after a start has no Q product, the last step no A update), plus
 * A_0 = X_0 X_0^T (k^2 w) and X = Q X_0 (2 k^2 w) once: 3 k^2 w + 17 k^3
 * for 5 steps instead of the plain 5 (3 k^2 w + k^3).
 *
 * A restart every `restart` steps forms X = Q X_0, takes its Gram matrix
 * afresh and resets Q (+3 k^2 w). Without it, gradient-like spectra lose
 * accuracy: A = X X^T squares X's conditioning, and A's small eigenvalues
 * are carried through fp32 products from step 0 (tests/test_muon_bf16.c:
 * largest error ~1e-3 of the largest element, against the plain
 * iteration's ~1e-4). One restart after step 3 of 5 (LMC_NS_GRAM_RESTART,
 * the muon entry's) brings it back to the plain iteration's errors, for
 * 6 k^2 w + 14 k^3 flops (768 x 3072: 17.2 GFLOP against 29.4 plain).
 * With bf16 operands no restart period helps (1 - cos ~0.15 on those
 * inputs): the muon entries run this file in fp32 only.
 *
 * Layout: X is the parameter's own (tall = rows > cols: X (w, k), the Gram
 * matrix A = X^T X and X = X_0 Q: no transposes). */
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/optim_ops.h"

#include <cblas.h>
#include <string.h>

#define NG_RB 96 /* rows per block of the fp32 symmetric products */

/* C (k, k) = A (k, K) B (K, k), row-major with leading dimensions lda, ldb,
 * known symmetric: the upper row blocks, mirrored. */
static void sym_f32(int64_t k, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C) {
    for (int64_t i0 = 0; i0 < k; i0 += NG_RB) {
        const int64_t ib = LMC_MIN(NG_RB, k - i0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ib, (int)(k - i0), (int)K, 1.0f, A + i0 * lda,
                    (int)lda, B + i0, (int)ldb, 0.0f, C + i0 * k + i0, (int)k);
    }
    for (int64_t i = 1; i < k; i++)
        for (int64_t j = 0; j < i; j++) C[i * k + j] = C[j * k + i];
}

/* C = L R for symmetric (k, k) L, R whose product is symmetric */
static void symprod(bool bf16, int64_t k, const float *L, const float *R, float *C, void *ws) {
    if (bf16) lmc_cpu_sym_gemm_bf16(k, k, L, k, 1, R, k, 1, C, ws);
    else sym_f32(k, k, L, k, R, k, C);
}

/* A = X X^T (wide) or X^T X (tall) */
static void gram(bool bf16, bool tall, int64_t k, int64_t w, const float *X, float *A, void *ws) {
    if (bf16) {
        if (!tall) lmc_cpu_sym_gemm_bf16(k, w, X, w, 1, X, 1, w, A, ws);
        else lmc_cpu_sym_gemm_bf16(k, w, X, 1, k, X, k, 1, A, ws);
        return;
    }
    if (!tall) cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)w, 1.0f, X, (int)w, 0.0f, A, (int)k);
    else cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)w, 1.0f, X, (int)k, 0.0f, A, (int)k);
    for (int64_t i = 1; i < k; i++)
        for (int64_t j = 0; j < i; j++) A[i * k + j] = A[j * k + i];
}

/* Y = Q X (wide) or X Q (tall), Q symmetric */
static void apply_q(bool bf16, bool tall, int64_t k, int64_t w, const float *Q, const float *X, float *Y, void *ws) {
    if (bf16) {
        if (!tall) lmc_cpu_gemm_bf16(k, w, k, Q, k, 1, X, w, 1, Y, w, false, ws);
        else lmc_cpu_gemm_bf16(w, k, k, X, k, 1, Q, k, 1, Y, k, false, ws);
        return;
    }
    if (!tall)
        cblas_ssymm(CblasRowMajor, CblasLeft, CblasUpper, (int)k, (int)w, 1.0f, Q, (int)k, X, (int)w, 0.0f, Y, (int)w);
    else cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, (int)w, (int)k, 1.0f, Q, (int)k, X, (int)k, 0.0f, Y, (int)k);
}

float *lmc_ns_gram(float *X, float *Y, int64_t k, int64_t w, bool tall, const struct lmc_muon_step *s, int restart,
                   bool bf16, float *A, float *P, float *Q, float *T, void *ws) {
    LMC_ASSERT(k >= 1 && k <= w && s->ns_steps >= 1 && restart >= 0);
    gram(bf16, tall, k, w, X, A, ws);
    bool fresh = true; /* Q = I */
    int since = 0;
    for (int it = 0; it < s->ns_steps; it++) {
        if (bf16) { /* P = a I + b A + c A^2 */
            symprod(bf16, k, A, A, P, ws);
            for (int64_t i = 0; i < k * k; i++) P[i] = s->ns_b * A[i] + s->ns_c * P[i];
        } else { /* A A = A A^T: ssyrk's upper triangle over b A, mirrored */
            memcpy(P, A, (size_t)(k * k) * sizeof *P);
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)k, s->ns_c, A, (int)k, s->ns_b, P,
                        (int)k);
            for (int64_t i = 1; i < k; i++)
                for (int64_t j = 0; j < i; j++) P[i * k + j] = P[j * k + i];
        }
        for (int64_t i = 0; i < k; i++) P[i * k + i] += s->ns_a;
        const float *Pt = P;
        if (fresh) { /* Q = P: the buffers swap, P_t is in Q's */
            float *t = Q;
            Q = P, P = t, Pt = Q;
        } else { /* Q = P Q */
            symprod(bf16, k, P, Q, T, ws);
            float *t = Q;
            Q = T, T = t;
        }
        fresh = false;
        if (it + 1 == s->ns_steps) break;
        if (restart && ++since == restart) { /* X = Q X_0, A afresh, Q = I */
            apply_q(bf16, tall, k, w, Q, X, Y, ws);
            float *t = X;
            X = Y, Y = t;
            gram(bf16, tall, k, w, X, A, ws);
            fresh = true, since = 0;
            continue;
        }
        /* A = P A P: T = P A, then A = T P (both symmetric: P_t commutes with A_t) */
        symprod(bf16, k, Pt, A, T, ws);
        symprod(bf16, k, T, Pt, A, ws);
    }
    apply_q(bf16, tall, k, w, Q, X, Y, ws);
    return Y;
}
