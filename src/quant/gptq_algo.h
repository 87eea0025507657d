/* gptq_algo.h — the GPTQ algorithm (Frantar et al. 2022, "GPTQ: Accurate
 * Post-Training Quantization for Generative Pre-trained Transformers") for
 * one linear layer: column-by-column quantization with the error spread
 * over the remaining columns through the Cholesky factor of the inverse
 * Hessian of the layer's calibration inputs; 1% dampening, lazy batch
 * updates of 128 columns, optional act-order (columns by decreasing Hessian
 * diagonal) with static groups. Computed in float64. */
#ifndef LMC_GPTQ_ALGO_H
#define LMC_GPTQ_ALGO_H

#include "lmc.h"
#include "quant/quant.h"

#include <stdbool.h>
#include <stdint.h>

struct lmc_gptq_opts {
    int bits;               /* 2..8 */
    int64_t group_size;     /* <= 0: one group per row */
    bool sym;
    bool act_order;
    bool static_groups;     /* with act_order: groups fixed on the original column order (g_idx = i / group) */
    double damp;            /* fraction of the mean Hessian diagonal added to it (0.01) */
    int64_t block;          /* lazy batch width (128) */
    bool mse;               /* each group's range shrunk by the factor in 1.00, 0.99 .. 0.81 whose codes give the
                             * smallest squared error of the group's weights as GPTQ reads them (the reference
                             * quantizer's `mse` search; `lmc quantize --clip-search`); false: min/max */
};

/* H (k, k) += x^T x over n_rows rows of x (n_rows, k). */
void lmc_gptq_hessian_add(double *H, int64_t k, const float *x, int64_t n_rows);

/* Quantizes w (n out, k in) given H = sum of x x^T over calibration inputs
 * (not modified). Fills g (allocated here; g_idx reflects act-order without
 * static groups). *loss (may be NULL) gets GPTQ's sum of (w-q)^2/d^2 / 2. */
lmc_status lmc_gptq_quantize(const float *w, int64_t n, int64_t k, const double *H, const struct lmc_gptq_opts *o,
                             struct lmc_qgroups *g, double *loss, lmc_err *err);

#endif
