/* layer.c — layer pieces shared by forward.c and forward_batch.c (see
 * layer.h). */
#include "model/layer.h"

void lmc_layer_norm(const struct lmc_backend *be, const struct lmc_config *c, float *y,
                    const float *x, const float *w, const float *b, int64_t n) {
    if (c->arch == LMC_ARCH_GPT2)
        be->layernorm(be->ctx, y, x, w, b, n, c->hidden_size, (float)c->norm_eps);
    else
        be->rmsnorm(be->ctx, y, x, w, n, c->hidden_size, (float)c->norm_eps);
}

void lmc_layer_matmuls(const struct lmc_backend *be, int k, float *const *y, const float *x,
                       int64_t n, const struct lmc_mat *const *w, const float *const *b) {
    if (be->matmul_multi) {
        be->matmul_multi(be->ctx, k, y, x, n, w, b);
        return;
    }
    for (int i = 0; i < k; i++) be->matmul(be->ctx, y[i], x, n, w[i], b[i]);
}

/* a->x += x @ w^T + b: fused when the backend has matmul_add. */
static void residual_matmul(const struct lmc_backend *be, struct lmc_acts *a, const float *x,
                            int64_t n, const struct lmc_mat *w, const float *b, int64_t C) {
    if (be->matmul_add) {
        be->matmul_add(be->ctx, a->x, x, n, w, b);
        return;
    }
    be->matmul(be->ctx, a->h, x, n, w, b);
    be->add(be->ctx, a->x, a->x, a->h, n * C);
}

void lmc_layer_out_mlp(const struct lmc_backend *be, const struct lmc_config *c,
                       const struct lmc_layer *L, struct lmc_acts *a, int64_t n) {
    int64_t C = c->hidden_size, I = c->intermediate_size;
    residual_matmul(be, a, a->att, n, &L->wo, L->bo, C);
    lmc_layer_norm(be, c, a->h, a->x, L->norm2_w, L->norm2_b, n);
    if (c->arch == LMC_ARCH_GPT2) {
        be->matmul(be->ctx, a->ff1, a->h, n, &L->w_up, L->b_up);
        be->gelu(be->ctx, a->ff1, a->ff1, n * I, c->act == LMC_ACT_GELU_TANH);
    } else if (be->matmul_swiglu && !L->b_gate && !L->b_up) {
        be->matmul_swiglu(be->ctx, a->ff1, a->h, n, &L->w_gate, &L->w_up);
    } else {
        float *y[2] = {a->ff1, a->ff2};
        const struct lmc_mat *w[2] = {&L->w_gate, &L->w_up};
        const float *b[2] = {L->b_gate, L->b_up};
        lmc_layer_matmuls(be, 2, y, a->h, n, w, b);
        be->swiglu(be->ctx, a->ff1, a->ff1, a->ff2, n * I);
    }
    residual_matmul(be, a, a->ff1, n, &L->w_down, L->b_down, C);
}
