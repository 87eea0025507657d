/* test_chi2.h — the chi-square survival function for the statistical
 * tests (test_spec, test_spec_model, test_sched_spec). */
#ifndef LMC_TEST_CHI2_H
#define LMC_TEST_CHI2_H

#include <math.h>

/* The regularised upper incomplete gamma Q(s, x) (chi-square survival with
 * s = dof/2, x = stat/2): series for x < s + 1, else a continued fraction. */
static double gamma_q(double s, double x) {
    if (x <= 0) return 1.0;
    double lg = lgamma(s);
    if (x < s + 1) {
        double sum = 1.0 / s, term = sum;
        for (int n = 1; n < 100000; n++) {
            term *= x / (s + n);
            sum += term;
            if (term < sum * 1e-15) break;
        }
        return 1.0 - sum * exp(-x + s * log(x) - lg);
    }
    double b = x + 1 - s, c = 1e300, d = 1 / b, h = d;
    for (int i = 1; i < 100000; i++) {
        double an = -i * (i - s);
        b += 2;
        d = an * d + b;
        if (fabs(d) < 1e-300) d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300) c = 1e-300;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return exp(-x + s * log(x) - lg) * h;
}

#endif
