/* layer.h — pieces of a transformer layer shared by the single-sequence
 * forward (forward.c) and the batched paged forward (forward_batch.c):
 * the family's norm, matmuls sharing an input (fused when the backend has
 * matmul_multi), and the layer's second half (output projection with the
 * residual, norm, MLP, down projection with the residual), each using the
 * backend's fused entries when present and plain ops otherwise. */
#ifndef LMC_LAYER_H
#define LMC_LAYER_H

#include "model/model.h"

/* y(n,C) = RMSNorm or LayerNorm of x by the config's family. */
void lmc_layer_norm(const struct lmc_backend *be, const struct lmc_config *c, float *y,
                    const float *x, const float *w, const float *b, int64_t n);

/* y[i] = x @ w[i]^T + b[i] for i < k. */
void lmc_layer_matmuls(const struct lmc_backend *be, int k, float *const *y, const float *x,
                       int64_t n, const struct lmc_mat *const *w, const float *const *b);

/* With the attention output in a->att (n rows): a->x += att @ wo^T + bo;
 * then a->x += MLP(norm2(a->x)). Uses a->h, a->ff1, a->ff2 as scratch. */
void lmc_layer_out_mlp(const struct lmc_backend *be, const struct lmc_config *c,
                       const struct lmc_layer *L, struct lmc_acts *a, int64_t n);

#endif
