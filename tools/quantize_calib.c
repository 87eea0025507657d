/* quantize_calib.c — GPTQ calibration for `lmc quantize --method gptq`: the
 * calibration text runs through the model on the CPU once per layer; the
 * inputs of that layer's linears are accumulated into their Hessians
 * (x^T x) as the forward calls matmul, the layer is quantized with GPTQ,
 * and its weights in the running model are replaced by the dequantized
 * ones, so each later layer is calibrated on the outputs of the already
 * quantized earlier layers (GPTQ's sequential scheme, per layer).
 *
 * The inputs are observed through the observer hook of the block's
 * lmc_linear slots (linear.h): the q, o, up and down linears of the layer
 * being calibrated record x^T x into their slot's Hessian (q/k/v and
 * gate/up share one input, so one of each group records it). */
#include "quantize_calib.h"
#include "core/core.h"
#include "core/dtype.h"
#include "model/model.h"
#include "ops/backend.h"
#include "quant/gptq_algo.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_QKV, SLOT_O, SLOT_MLP_IN, SLOT_DOWN, N_SLOTS };

/* One slot's Hessian, the observer's user pointer. */
struct cap {
    double *H;
    int64_t K;
};

static const int slot_lin[N_SLOTS] = {LMC_L_Q, LMC_L_O, LMC_L_UP, LMC_L_DOWN};

static void cap_observe(void *user, const struct lmc_linear *L, const float *x, int64_t M) {
    struct cap *c = user;
    (void)L;
    lmc_gptq_hessian_add(c->H, c->K, x, M);
}

/* The slot of HF linear `name` in layer *layer (-1 if not a block linear),
 * and which model matrices it feeds (up to three row slices). */
static int slot_of(const struct lmc_model *m, const char *name, int *layer, struct lmc_mat **mats, int *n_mats) {
    int l;
    char rest[200];
    *n_mats = 0;
    if (sscanf(name, "model.layers.%d.%199s", &l, rest) != 2 && sscanf(name, "transformer.h.%d.%199s", &l, rest) != 2 &&
        sscanf(name, "h.%d.%199s", &l, rest) != 2)
        return -1;
    if (l < 0 || l >= m->cfg.num_layers) return -1;
    struct lmc_linear *L = m->w.layers[l].lin;
    *layer = l;
    static const struct { const char *n; int slot; int which; } t[] = {
        {"self_attn.q_proj.weight", SLOT_QKV, 0}, {"self_attn.k_proj.weight", SLOT_QKV, 1},
        {"self_attn.v_proj.weight", SLOT_QKV, 2}, {"self_attn.o_proj.weight", SLOT_O, 3},
        {"mlp.gate_proj.weight", SLOT_MLP_IN, 4}, {"mlp.up_proj.weight", SLOT_MLP_IN, 5},
        {"mlp.down_proj.weight", SLOT_DOWN, 6},   {"attn.c_attn.weight", SLOT_QKV, 7},
        {"attn.c_proj.weight", SLOT_O, 3},        {"mlp.c_fc.weight", SLOT_MLP_IN, 5},
        {"mlp.c_proj.weight", SLOT_DOWN, 6},
    };
    struct lmc_mat *all[7] = {&L[LMC_L_Q].w, &L[LMC_L_K].w, &L[LMC_L_V].w, &L[LMC_L_O].w,
                              &L[LMC_L_GATE].w, &L[LMC_L_UP].w, &L[LMC_L_DOWN].w};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(rest, t[i].n)) {
            if (t[i].which == 7) { /* GPT-2's fused q/k/v */
                mats[0] = &L[LMC_L_Q].w, mats[1] = &L[LMC_L_K].w, mats[2] = &L[LMC_L_V].w;
                *n_mats = 3;
            } else {
                mats[0] = all[t[i].which];
                *n_mats = 1;
            }
            return t[i].slot;
        }
    return -1;
}

lmc_status lmc_gptq_calibrate(const char *dir, const char *calib_file, int64_t n_tokens, int threads,
                              const struct lmc_gptq_opts *o, const struct lmc_gptq_job *jobs, int n_jobs,
                              struct lmc_qgroups *out, lmc_err *err) {
    struct lmc_model m;
    memset(&m, 0, sizeof m);
    struct lmc_model_opts mo = {LMC_WDTYPE_F32, NULL};
    lmc_status s = lmc_model_load(&m, dir, &mo, err);
    if (s) return s;
    if (m.cfg.num_experts > 0) { /* expert inputs are the routed rows: not observed yet */
        lmc_model_free(&m);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "gptq: calibrating the experts of a mixture-of-experts model "
                           "(%s) is not supported; rtn, nf4 and ternary quantize each expert", dir);
    }
    struct lmc_tokenizer *tok = NULL;
    struct lmc_backend be;
    bool have_be = false;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    struct cap cap[N_SLOTS];
    memset(cap, 0, sizeof cap);
    void **deq = calloc((size_t)n_jobs + 1, sizeof *deq);
    if (!deq) {
        s = lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory");
        goto out;
    }
    if ((s = lmc_tokenizer_load(&tok, dir, err)) || (s = lmc_file_read(calib_file, (size_t)1 << 30, &text, &len, err)) ||
        (s = lmc_tokenizer_encode(tok, text, len, false, &ids, &n_ids, err)))
        goto out;
    if (n_ids < 2) {
        s = lmc_err_set(err, LMC_ERR_ARG, "%s: the calibration text gives %lld tokens", calib_file, (long long)n_ids);
        goto out;
    }
    if (n_tokens > 0 && n_ids > n_tokens) n_ids = n_tokens;
    if ((s = lmc_backend_cpu_init(&be, threads, err))) goto out;
    have_be = true;
    int64_t chunk = LMC_MIN(m.cfg.max_position_embeddings, 512);
    struct lmc_kv kv;
    struct lmc_acts acts;
    memset(&kv, 0, sizeof kv);
    memset(&acts, 0, sizeof acts);
    if ((s = lmc_kv_init(&kv, &m, &be, chunk, err)) || (s = lmc_acts_init(&acts, &m, &be, chunk, 1, err))) {
        lmc_kv_free(&kv);
        goto out;
    }
    float *logits = malloc((size_t)m.cfg.vocab_size * sizeof *logits);
    int64_t C = m.cfg.hidden_size, I = m.cfg.intermediate_size, A = m.cfg.num_heads * m.cfg.head_dim;
    cap[SLOT_QKV].K = C, cap[SLOT_O].K = A, cap[SLOT_MLP_IN].K = C, cap[SLOT_DOWN].K = I;
    for (int i = 0; i < N_SLOTS; i++) cap[i].H = malloc((size_t)(cap[i].K * cap[i].K) * sizeof(double));
    for (int i = 0; i < N_SLOTS && !s; i++)
        if (!cap[i].H || !logits) s = lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory for the Hessians");
    for (int l = 0; l < m.cfg.num_layers && !s; l++) {
        struct lmc_linear *lin = m.w.layers[l].lin;
        for (int i = 0; i < N_SLOTS; i++) {
            memset(cap[i].H, 0, (size_t)(cap[i].K * cap[i].K) * sizeof(double));
            lin[slot_lin[i]].observe = cap_observe;
            lin[slot_lin[i]].observe_user = &cap[i];
        }
        for (int64_t p = 0; p < n_ids && !s; p += chunk) /* the text in windows of `chunk` tokens */
            s = lmc_model_forward(&m, &be, &acts, &kv, ids + p, LMC_MIN(chunk, n_ids - p), 0, logits, false, err);
        for (int i = 0; i < N_SLOTS; i++) {
            lin[slot_lin[i]].observe = NULL;
            double tr = 0;
            for (int64_t d = 0; d < cap[i].K; d++) tr += cap[i].H[d * cap[i].K + d];
            if (!s && !(tr > 0))
                s = lmc_err_set(err, LMC_ERR_INTERNAL, "gptq: layer %d: no inputs of linear slot %d observed", l,
                                slot_lin[i]);
        }
        for (int j = 0; j < n_jobs && !s; j++) {
            int layer = -1, nm;
            struct lmc_mat *mats[3];
            int slot = slot_of(&m, jobs[j].name, &layer, mats, &nm);
            if (slot < 0 || layer != l) continue;
            if (cap[slot].K != jobs[j].k) {
                s = lmc_err_set(err, LMC_ERR_INTERNAL, "gptq: %s has %lld inputs, its layer input %lld", jobs[j].name,
                                (long long)jobs[j].k, (long long)cap[slot].K);
                break;
            }
            if ((s = lmc_gptq_quantize(jobs[j].w, jobs[j].n, jobs[j].k, cap[slot].H, o, &out[j], NULL, err))) {
                lmc_err_prefix(err, "%s: ", jobs[j].name);
                break;
            }
            /* the running model continues with this layer quantized, in
             * the dtype its matrices have (bf16 files stay bf16) */
            enum lmc_dtype dt = mats[0]->dtype;
            int64_t rows = 0;
            for (int t = 0; t < nm; t++) {
                rows += mats[t]->rows;
                if (mats[t]->dtype != dt || mats[t]->cols != jobs[j].k ||
                    (dt != LMC_DTYPE_F32 && dt != LMC_DTYPE_BF16 && dt != LMC_DTYPE_F16))
                    s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "gptq: %s: the model holds it as %s (%lld x %lld)",
                                    jobs[j].name, lmc_dtype_name(mats[t]->dtype), (long long)mats[t]->rows,
                                    (long long)mats[t]->cols);
            }
            if (!s && rows != jobs[j].n)
                s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "gptq: %s: %lld rows in the model, %lld in the file",
                                jobs[j].name, (long long)rows, (long long)jobs[j].n);
            float *f = s ? NULL : malloc((size_t)(jobs[j].n * jobs[j].k) * sizeof(float));
            if (!s && (!f || !(deq[j] = malloc((size_t)(jobs[j].n * jobs[j].k) * (size_t)lmc_dtype_size(dt)))))
                s = lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory");
            if (s) {
                free(f);
                break;
            }
            lmc_qgroups_dequantize(&out[j], f);
            for (int64_t e = 0; e < jobs[j].n * jobs[j].k; e++) {
                if (dt == LMC_DTYPE_F32) ((float *)deq[j])[e] = f[e];
                else ((uint16_t *)deq[j])[e] = dt == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(f[e]) : lmc_f32_to_f16(f[e]);
            }
            free(f);
            int64_t row0 = 0;
            for (int t = 0; t < nm; t++) {
                mats[t]->data = (const char *)deq[j] + (size_t)(row0 * jobs[j].k) * (size_t)lmc_dtype_size(dt);
                row0 += mats[t]->rows;
            }
        }
        lmc_log(1, "gptq: layer %d of %lld quantized on %lld calibration tokens", l + 1,
                (long long)m.cfg.num_layers, (long long)n_ids);
    }
    free(logits);
    lmc_kv_free(&kv);
    lmc_acts_free(&acts);
out:
    for (int i = 0; i < N_SLOTS; i++) free(cap[i].H);
    if (have_be) lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
    for (int j = 0; deq && j < n_jobs; j++) free(deq[j]);
    free(deq);
    free(ids);
    free(text);
    if (tok) lmc_tokenizer_free(tok);
    return s;
}
