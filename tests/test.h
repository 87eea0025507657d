/* test.h — a minimal test harness: CHECK macros that count and report
 * failures, a deterministic RNG for random inputs (single values and
 * malloc'd vectors), relative errors, and the closing "N passed, N failed"
 * line. Each tests/test_*.c is one CTest test; tests/test_bf16.h adds the
 * bf16 GEMM tests' reference. */
#ifndef LMC_TEST_H
#define LMC_TEST_H

#include "core/rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed, test_failed;

#define CHECK(cond) do { \
    if (cond) test_passed++; \
    else { test_failed++; fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECK_MSG(cond, ...) do { \
    if (cond) test_passed++; \
    else { test_failed++; fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
           fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
} while (0)

/* Relative error max|a-b| / max(max|b|, tiny) of n floats a against n
 * values b: test_rel_err_f32_f64 (b double), test_rel_err_f32 (b float). */
#define TEST_REL_ERR(name, tb)                                                                                     \
    static inline double name(const float *a, const tb *b, int64_t n) {                                           \
        double num = 0, den = 0;                                                                                   \
        for (int64_t i = 0; i < n; i++) {                                                                          \
            double d = fabs((double)a[i] - b[i]);                                                                  \
            if (d > num || d != d) num = d;                                                                        \
            if (fabs(b[i]) > den) den = fabs(b[i]);                                                                \
        }                                                                                                          \
        return num / (den > 1e-30 ? den : 1e-30);                                                                  \
    }
TEST_REL_ERR(test_rel_err_f32_f64, double)
TEST_REL_ERR(test_rel_err_f32, float)
#undef TEST_REL_ERR

/* LMC_TEST_QUICK set and not "0" (CI's sanitizer stage): the slowest
 * end-to-end tests run a reduced mode (each test's header says what it
 * drops); the release stage runs them in full. */
static inline int test_quick(void) {
    const char *q = getenv("LMC_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

static inline uint64_t test_rng_next(uint64_t *s) { return lmc_rng_next(s); }
/* Uniform in [-1, 1), never exactly 0. */
static inline float test_rand(uint64_t *s) {
    float f = (float)((test_rng_next(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    return f == 0.0f ? 0.5f : f;
}

/* n values scale * test_rand(s) in a malloc'd array (one element allocated
 * when n is 0, so the pointer is never NULL); free() it. */
static inline float *test_rand_vec(uint64_t *s, int64_t n, float scale) {
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = scale * test_rand(s);
    return v;
}

static inline int test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
