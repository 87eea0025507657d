/* dist_mlp.h — a small synthetic model for the distributed tests and the
 * bench: a tanh MLP classifier (dims[0] -> ... -> dims[L] classes) over a
 * flat float32 arena (W_l (out, in) then b_l per layer; one ZeRO unit per
 * layer), its own forward and backward, a deterministic synthetic data set
 * (example i's input drawn from a seed of i; its label the argmax of a
 * fixed random teacher), and two training loops with the same global batch:
 * mlp_train_ref (one process, full arrays, train/adamw.c's update) and
 * mlp_train_zero (a rank of a ZeRO run over a communicator). */
#ifndef LMC_TEST_DIST_MLP_H
#define LMC_TEST_DIST_MLP_H

#include "core/rng.h"
#include "dist/zero.h"
#include "train/adamw.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MLP_MAX_L 6

struct mlp_cfg {
    int L;
    int dims[MLP_MAX_L + 1];
};

struct mlp_run {
    int stage;
    int steps;
    int64_t global_batch;
    int accum;             /* micro-steps per step (0 = 1): each rank's slice in this many parts */
    double lr, max_norm;
    int save_at;           /* save a checkpoint after this step (0: never) */
    int save_before;       /* also save after this earlier step (0: never) */
    const char *ckpt_dir;
    bool resume;           /* load ckpt_dir first */
    int die_rank, die_step; /* this rank raises SIGKILL in this step (die_step > 0) */
    int die_signal;         /* 0: SIGKILL; SIGSTOP: the rank stalls instead */
    const char *desc_extra; /* appended to the start-up config check */
    float *params_at_save;  /* if set: the full parameters when saving */
    bool log_memory;        /* lmc_zero_log_memory at the end */
    bool init_on_host;      /* lmc_zero_cfg.init_on_host */
};

static inline int64_t mlp_layout(const struct mlp_cfg *m, struct lmc_zero_tensor *t, char names[][16]) {
    int64_t off = 0;
    for (int l = 0; l < m->L; l++) {
        int64_t in = m->dims[l], out = m->dims[l + 1];
        snprintf(names[2 * l], 16, "w%d", l);
        snprintf(names[2 * l + 1], 16, "b%d", l);
        t[2 * l] = (struct lmc_zero_tensor){names[2 * l], off, in * out, l, true, 2, {out, in}};
        off += in * out;
        t[2 * l + 1] = (struct lmc_zero_tensor){names[2 * l + 1], off, out, l, false, 1, {out}};
        off += out;
    }
    return off;
}

static inline float mlp_uniform(uint64_t *s) { return (float)((lmc_rng_next(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

static inline void mlp_init(const struct mlp_cfg *m, float *p, uint64_t seed) {
    uint64_t s = seed;
    int64_t off = 0;
    for (int l = 0; l < m->L; l++) {
        int64_t in = m->dims[l], out = m->dims[l + 1];
        float sc = 1.0f / sqrtf((float)in);
        for (int64_t i = 0; i < in * out; i++) p[off++] = mlp_uniform(&s) * sc * 1.5f;
        for (int64_t i = 0; i < out; i++) p[off++] = mlp_uniform(&s) * 0.1f;
    }
}

/* Example idx: x (dims[0]) and its class. */
static inline int mlp_example(const struct mlp_cfg *m, int64_t idx, float *x) {
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)(idx * 2654435761u + 17);
    int d = m->dims[0], k = m->dims[m->L];
    for (int i = 0; i < d; i++) x[i] = mlp_uniform(&s);
    int best = 0;
    double bv = -1e30;
    for (int c = 0; c < k; c++) { /* a fixed teacher: w[c][i] = sin(1 + c * 7 + i * 3) */
        double v = 0;
        for (int i = 0; i < d; i++) v += sin(1.0 + c * 7 + i * 3) * x[i];
        if (v > bv) bv = v, best = c;
    }
    return best;
}

/* out (rows, dout) = act(in (rows, din) @ W^T + b); tanh except the last layer. */
static inline void mlp_layer_fwd(const struct mlp_cfg *m, int l, const float *P, const float *in, float *out, int64_t rows) {
    int din = m->dims[l], dout = m->dims[l + 1];
    const float *W = P, *b = P + (int64_t)din * dout;
    for (int64_t r = 0; r < rows; r++)
        for (int o = 0; o < dout; o++) {
            float acc = b[o];
            for (int i = 0; i < din; i++) acc += W[(int64_t)o * din + i] * in[r * din + i];
            out[r * dout + o] = l < m->L - 1 ? tanhf(acc) : acc;
        }
}

/* Backward of mlp_layer_fwd: G (unit's gradients) +=, din_g (rows, din) = (NULL: skip).
 * dout_g is the gradient of the layer's output (post-activation). */
static inline void mlp_layer_bwd(const struct mlp_cfg *m, int l, const float *P, float *G, const float *in,
                                 const float *out, const float *dout_g, float *din_g, int64_t rows) {
    int din = m->dims[l], dout = m->dims[l + 1];
    const float *W = P;
    float *gW = G, *gb = G + (int64_t)din * dout;
    float *dz = malloc(sizeof(float) * (size_t)dout);
    if (din_g) memset(din_g, 0, sizeof(float) * (size_t)(rows * din));
    for (int64_t r = 0; r < rows; r++) {
        for (int o = 0; o < dout; o++) {
            float y = out[r * dout + o];
            dz[o] = l < m->L - 1 ? dout_g[r * dout + o] * (1.0f - y * y) : dout_g[r * dout + o];
        }
        for (int o = 0; o < dout; o++) {
            gb[o] += dz[o];
            for (int i = 0; i < din; i++) gW[(int64_t)o * din + i] += dz[o] * in[r * din + i];
        }
        if (din_g)
            for (int o = 0; o < dout; o++)
                for (int i = 0; i < din; i++) din_g[r * din + i] += W[(int64_t)o * din + i] * dz[o];
    }
    free(dz);
}

/* Softmax cross-entropy of logits (rows, k): returns the sum of losses;
 * dlogits = (softmax - onehot) * scale. */
static inline double mlp_xent(const float *logits, const int *y, float *dlogits, int64_t rows, int k, float scale) {
    double sum = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *z = logits + r * k;
        float mx = z[0];
        for (int c = 1; c < k; c++) mx = z[c] > mx ? z[c] : mx;
        double se = 0;
        for (int c = 0; c < k; c++) se += exp((double)(z[c] - mx));
        sum += log(se) + mx - z[y[r]];
        for (int c = 0; c < k; c++)
            dlogits[r * k + c] = ((float)(exp((double)(z[c] - mx)) / se) - (c == y[r] ? 1.0f : 0.0f)) * scale;
    }
    return sum;
}

/* Activations of `rows` examples: acts[0] = inputs, acts[l+1] = layer l's output. */
struct mlp_acts {
    float *a[MLP_MAX_L + 1], *d[MLP_MAX_L + 1];
    int *y;
};
static inline void mlp_acts_alloc(const struct mlp_cfg *m, struct mlp_acts *A, int64_t rows) {
    for (int l = 0; l <= m->L; l++) {
        A->a[l] = calloc((size_t)(rows * m->dims[l] + 1), sizeof(float));
        A->d[l] = calloc((size_t)(rows * m->dims[l] + 1), sizeof(float));
    }
    A->y = calloc((size_t)rows + 1, sizeof(int));
}
static inline void mlp_acts_free(const struct mlp_cfg *m, struct mlp_acts *A) {
    for (int l = 0; l <= m->L; l++) free(A->a[l]), free(A->d[l]);
    free(A->y);
}

static inline void mlp_adamw_cfg(const struct mlp_run *o, struct lmc_adamw_cfg *c) {
    lmc_adamw_cfg_default(c);
    c->lr = o->lr;
    c->weight_decay = 0.05;
}

/* One process, the whole global batch, full arrays: the reference. */
static inline void mlp_train_ref(const struct mlp_cfg *m, const struct mlp_run *o, const float *init, double *losses,
                                 float *final) {
    struct lmc_zero_tensor t[2 * MLP_MAX_L];
    char names[2 * MLP_MAX_L][16];
    int64_t P = mlp_layout(m, t, names), G = o->global_batch;
    float *p = malloc(sizeof(float) * (size_t)P), *g = malloc(sizeof(float) * (size_t)P);
    float *mm = calloc((size_t)P, sizeof(float)), *vv = calloc((size_t)P, sizeof(float));
    memcpy(p, init, sizeof(float) * (size_t)P);
    struct mlp_acts A;
    mlp_acts_alloc(m, &A, G);
    struct lmc_adamw_cfg ac;
    mlp_adamw_cfg(o, &ac);
    for (int step = 0; step < o->steps; step++) {
        for (int64_t i = 0; i < G; i++) A.y[i] = mlp_example(m, step * G + i, A.a[0] + i * m->dims[0]);
        for (int l = 0; l < m->L; l++) mlp_layer_fwd(m, l, p + t[2 * l].offset, A.a[l], A.a[l + 1], G);
        double loss = mlp_xent(A.a[m->L], A.y, A.d[m->L], G, m->dims[m->L], 1.0f / (float)G);
        losses[step] = loss / (double)G;
        memset(g, 0, sizeof(float) * (size_t)P);
        for (int l = m->L - 1; l >= 0; l--)
            mlp_layer_bwd(m, l, p + t[2 * l].offset, g + t[2 * l].offset, A.a[l], A.a[l + 1], A.d[l + 1],
                          l ? A.d[l] : NULL, G);
        float *gp[1] = {g};
        int64_t gn[1] = {P};
        double norm = lmc_grad_global_norm(gp, gn, 1);
        float sc = lmc_grad_clip_scale(norm, o->max_norm);
        if (sc != 1.0f)
            for (int64_t i = 0; i < P; i++) g[i] *= sc;
        for (int k = 0; k < 2 * m->L; k++)
            lmc_adamw_update(&ac, step + 1, o->lr, t[k].decay, p + t[k].offset, g + t[k].offset, mm + t[k].offset,
                             vv + t[k].offset, t[k].numel);
    }
    memcpy(final, p, sizeof(float) * (size_t)P);
    mlp_acts_free(m, &A);
    free(p), free(g), free(mm), free(vv);
}

/* One rank of a ZeRO run with the same global batch (rank r takes its
 * slice of every step's examples). losses[step] get the global losses
 * (every rank), final the full parameters at the end. */
static inline lmc_status mlp_train_zero(const struct mlp_cfg *m, const struct mlp_run *o, struct lmc_comm *c,
                                        struct lmc_backend *be, const float *init, double *losses, float *final,
                                        struct lmc_zero_stats *stats, lmc_err *err) {
    struct lmc_zero_tensor t[2 * MLP_MAX_L];
    char names[2 * MLP_MAX_L][16];
    mlp_layout(m, t, names);
    int64_t G = o->global_batch, b0, nb;
    lmc_dist_slice(G, c->rank, c->world, &b0, &nb);
    char desc[256];
    snprintf(desc, sizeof desc, "mlp %d layers, global batch %lld, lr %g, max_norm %g%s", m->L, (long long)G, o->lr,
             o->max_norm, o->desc_extra ? o->desc_extra : "");
    lmc_status s = c->device_buffers ? LMC_OK : lmc_dist_check_same(c, "training configuration", desc, err);
    if (s) return s;
    struct lmc_zero_cfg zc = {.stage = o->stage, .tensors = t, .n_tensors = 2 * m->L, .init_on_host = o->init_on_host};
    struct lmc_zero *z;
    if ((s = lmc_zero_init(&z, &zc, c, be, init, err))) return s;
    int64_t start = 0;
    if (o->resume && (s = lmc_zero_load(z, o->ckpt_dir, &start, err))) goto out;
    struct mlp_acts A;
    mlp_acts_alloc(m, &A, nb);
    struct lmc_adamw_cfg ac;
    mlp_adamw_cfg(o, &ac);
    for (int64_t step = start; step < o->steps && !s; step++) {
        for (int64_t i = 0; i < nb; i++) A.y[i] = mlp_example(m, step * G + b0 + i, A.a[0] + i * m->dims[0]);
        /* gradient accumulation: the slice in `accum` micro-batches; the
         * reductions start on the last one only */
        int nacc = o->accum > 0 ? o->accum : 1;
        double loss = 0;
        for (int mb = 0; mb < nacc && !s; mb++) {
            int64_t m0, mn;
            lmc_dist_slice(nb, mb, nacc, &m0, &mn);
            struct mlp_acts V; /* views of this micro-batch's rows */
            for (int l = 0; l <= m->L; l++) V.a[l] = A.a[l] + m0 * m->dims[l], V.d[l] = A.d[l] + m0 * m->dims[l];
            V.y = A.y + m0;
            float *P, *Gr;
            for (int l = 0; l < m->L && !s; l++) {
                if ((s = lmc_zero_unit_prefetch(z, l + 1, err)) || (s = lmc_zero_unit_params(z, l, &P, err))) break;
                mlp_layer_fwd(m, l, P, V.a[l], V.a[l + 1], mn);
                lmc_zero_unit_release(z, l);
            }
            if (s) break;
            loss += mlp_xent(V.a[m->L], V.y, V.d[m->L], mn, m->dims[m->L], 1.0f / (float)G);
            if (o->die_step > 0 && step + 1 == o->die_step && c->rank == o->die_rank)
                raise(o->die_signal ? o->die_signal : SIGKILL);
            for (int l = m->L - 1; l >= 0 && !s; l--) {
                if ((s = lmc_zero_unit_prefetch(z, l - 1, err)) || (s = lmc_zero_unit_params(z, l, &P, err)) ||
                    (s = lmc_zero_unit_grads(z, l, &Gr, err)))
                    break;
                mlp_layer_bwd(m, l, P, Gr, V.a[l], V.a[l + 1], V.d[l + 1], l ? V.d[l] : NULL, mn);
                lmc_zero_unit_release(z, l);
                if (mb == nacc - 1) s = lmc_zero_unit_grads_done(z, l, err);
            }
        }
        double norm = 0;
        if (s || (s = lmc_zero_grad_norm(z, &norm, err))) break;
        struct lmc_adamw_step sd, sn;
        float sc = lmc_grad_clip_scale(norm, o->max_norm);
        lmc_adamw_step_make(&ac, step + 1, o->lr, true, sc, &sd);
        lmc_adamw_step_make(&ac, step + 1, o->lr, false, sc, &sn);
        if ((s = lmc_zero_apply(z, &sd, &sn, err))) break;
        if ((s = lmc_zero_sum_f64(z, &loss, 1, err))) break;
        losses[step] = loss / (double)G;
        if (o->save_before == step + 1 && (s = lmc_zero_save(z, o->ckpt_dir, step + 1, err))) break;
        if (o->save_at == step + 1) {
            if ((s = lmc_zero_save(z, o->ckpt_dir, step + 1, err))) break;
            if (o->params_at_save) s = lmc_zero_params_to_host(z, o->params_at_save, err);
        }
    }
    mlp_acts_free(m, &A);
    if (!s && final) s = lmc_zero_params_to_host(z, final, err);
    if (stats) lmc_zero_get_stats(z, stats);
    if (o->log_memory) lmc_zero_log_memory(z);
out:
    lmc_zero_free(z);
    return s;
}

#endif
