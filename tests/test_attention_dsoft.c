/* test_attention_dsoft.c — the softmax backward of one attention row
 * (attention_dsoft.c, shared by the f32 and bf16 training backwards) on
 * odd lengths 1..77 and key ranges [a, e) of every kind (empty, the whole
 * row, inside it): the returned D against the float64 sum of p dp over
 * [a, e) (relative to the sum of |p dp|, within a float rounding), every
 * dp element exactly p (dp - D) scale in float with the returned D
 * (whatever the vector width), and within float rounding of the float64
 * value with the float64 D; lmc_cpu_row_dot against float64 too. */
#include "test.h"
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>

int main(void) {
    uint64_t rs = 7;
    double worst_d = 0, worst_x = 0, worst_dot = 0;
    int64_t bad_bits = 0, cases = 0;
    for (int64_t n = 1; n <= 77; n += 2) {
        float p[80], dp[80], dp0[80];
        const int64_t ranges[4][2] = {{0, n}, {0, 0}, {n / 3, n - n / 4}, {n - 1, n}};
        for (int r = 0; r < 4; r++) {
            int64_t a = ranges[r][0], e = ranges[r][1];
            float scale = 0.125f + 0.5f * (float)r;
            for (int64_t x = 0; x < n; x++) {
                p[x] = x >= a && x < e ? 0.5f * (test_rand(&rs) + 1.0f) : 0.0f;
                dp0[x] = dp[x] = 3 * test_rand(&rs);
            }
            double D64 = 0, absum = 0;
            for (int64_t x = a; x < e; x++) D64 += (double)p[x] * dp0[x], absum += fabs((double)p[x] * dp0[x]);
            double dot = lmc_cpu_row_dot(p + a, dp0 + a, e - a);
            worst_dot = LMC_MAX(worst_dot, fabs(dot - D64) / LMC_MAX(absum, 1e-30));
            float D = lmc_cpu_dsoft(dp, p, n, a, e, scale);
            worst_d = LMC_MAX(worst_d, fabs((double)D - D64) / LMC_MAX(absum, 1e-30));
            double num = 0, den = 0;
            for (int64_t x = 0; x < n; x++) {
                bad_bits += dp[x] != p[x] * (dp0[x] - D) * scale;
                double ref = (double)p[x] * ((double)dp0[x] - D64) * scale;
                num = LMC_MAX(num, fabs(dp[x] - ref));
                den = LMC_MAX(den, fabs((double)p[x] * dp0[x]) + fabs((double)p[x] * D64));
            }
            worst_x = LMC_MAX(worst_x, num / LMC_MAX(den * scale, 1e-30));
            cases++;
        }
    }
    CHECK_MSG(worst_dot < 1e-14, "row_dot vs float64: %.3g", worst_dot);
    CHECK_MSG(worst_d < 1.2e-7, "D vs float64: %.3g", worst_d);
    CHECK_MSG(bad_bits == 0, "%lld elements not p (dp - D) scale in float", (long long)bad_bits);
    CHECK_MSG(worst_x < 4e-7, "dS vs float64: %.3g", worst_x);
    printf("%lld rows: D rel err %.2e, dot %.2e, dS %.2e (vs float64)\n", (long long)cases, worst_d, worst_dot,
           worst_x);
    return test_finish("test_attention_dsoft");
}
