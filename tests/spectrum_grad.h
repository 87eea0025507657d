/* spectrum_grad.h — gradients with a chosen singular spectrum, shared by
 * test_optim.c and the CUDA emulator's harness_optim.cc (C and C++): the
 * ill-conditioned spectrum of GaLore's subspace-refresh tests, and
 * G = U diag(sv) V^T from two caller-filled bases that are made
 * orthonormal here (Gram-Schmidt in double). */
#ifndef LMC_TESTS_SPECTRUM_GRAD_H
#define LMC_TESTS_SPECTRUM_GRAD_H
#include <math.h>
#include <stdint.h>

/* q values: geometric from 1 to 10^-dec over the first r - 8, then 8 values
 * 3% apart down to 0.79 of that, then a gap of 100x and a slow tail (no 0) */
static inline void spectrum_illcond(double *sv, int64_t q, int64_t r, double dec) {
    for (int64_t j = 0; j < q; j++)
        sv[j] = j < r - 8 ? pow(10.0, -dec * (double)j / (double)(r - 8))
                : j < r   ? pow(10.0, -dec) * (1 - 0.03 * (double)(j - r + 8))
                          : 0.01 * pow(10.0, -dec) * pow(0.98, (double)(j - r));
}

/* g (rows x cols, row-major) = u diag(sv) v^T, q = min(rows, cols); u is
 * rows x q and v cols x q (row-major), both orthonormalised in place */
static inline void spectrum_compose(float *g, int64_t rows, int64_t cols, double *u, double *v, const double *sv) {
    const int64_t q = rows < cols ? rows : cols, len[2] = {rows, cols};
    double *m[2] = {u, v};
    for (int w = 0; w < 2; w++)
        for (int64_t j = 0; j < q; j++) {
            for (int64_t i = 0; i < j; i++) {
                double d = 0;
                for (int64_t e = 0; e < len[w]; e++) d += m[w][e * q + i] * m[w][e * q + j];
                for (int64_t e = 0; e < len[w]; e++) m[w][e * q + j] -= d * m[w][e * q + i];
            }
            double nr = 0;
            for (int64_t e = 0; e < len[w]; e++) nr += m[w][e * q + j] * m[w][e * q + j];
            for (int64_t e = 0; e < len[w]; e++) m[w][e * q + j] /= sqrt(nr);
        }
    for (int64_t a = 0; a < rows; a++)
        for (int64_t b = 0; b < cols; b++) {
            double x = 0;
            for (int64_t j = 0; j < q; j++) x += sv[j] * u[a * q + j] * v[b * q + j];
            g[a * cols + b] = (float)x;
        }
}
#endif
