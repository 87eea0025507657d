/* quantize_calib.c — GPTQ calibration for `lmc quantize --method gptq`: the
 * calibration text runs through the model on the CPU once per layer; the
 * inputs of that layer's linears are accumulated into their Hessians
 * (x^T x) as the forward calls matmul, the layer is quantized with GPTQ,
 * and its weights in the running model are replaced by the dequantized
 * ones, so each later layer is calibrated on the outputs of the already
 * quantized earlier layers (GPTQ's sequential scheme, per layer). With
 * true_seq (AutoGPTQ's true_sequential) the text runs once per stage of
 * the layer instead: q/k/v, then o on the attention of quantized q/k/v,
 * then gate/up, then down on the quantized MLP's activations.
 *
 * The inputs are observed through the observer hook of the block's
 * lmc_linear slots (linear.h): the q, o, up and down linears of the layer
 * being calibrated record x^T x into their slot's Hessian (q/k/v and
 * gate/up share one input, so one of each group records it). In a
 * mixture-of-experts layer each expert's up and down linears record the
 * rows routed to that expert (the MoE part runs observed experts through
 * lmc_linear); an expert no calibration token reaches is rounded with an
 * identity Hessian. */
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

/* One observed input of the layer being calibrated: the Hessian (x^T x)
 * of the rows its linear `lin` receives (the observer's user pointer). */
struct cap {
    double *H;
    int64_t K;
    struct lmc_linear *lin;
};

static void cap_observe(void *user, const struct lmc_linear *L, const float *x, int64_t M) {
    struct cap *c = user;
    (void)L;
    lmc_gptq_hessian_add(c->H, c->K, x, M);
}

/* Whether layer l has a dense MLP or a shared expert in the block's
 * gate/up/down slots (else only experts). */
static bool has_mlp(const struct lmc_model *m, int l) {
    return !lmc_config_layer_sparse(&m->cfg, l) || m->cfg.shared_expert_intermediate_size > 0;
}

/* The observed inputs of layer l, in this order: q (for q/k/v), o; the
 * dense MLP's or the shared expert's up (for gate/up) and down when the
 * layer has one; then each expert's up (for its gate/up) and down (a
 * mixture-of-experts layer: the rows routed to that expert). Returns the
 * count (at most 4 + 2 E). */
static int layer_caps(struct lmc_model *m, int l, struct cap *caps) {
    const struct lmc_config *c = &m->cfg;
    struct lmc_block_w *W = &m->w.layers[l];
    bool sparse = lmc_config_layer_sparse(c, l);
    int n = 0;
    caps[n++] = (struct cap){NULL, c->hidden_size, &W->lin[LMC_L_Q]};
    caps[n++] = (struct cap){NULL, c->num_heads * c->head_dim, &W->lin[LMC_L_O]};
    if (has_mlp(m, l)) {
        caps[n++] = (struct cap){NULL, c->hidden_size, &W->lin[LMC_L_UP]};
        caps[n++] = (struct cap){NULL, sparse ? c->shared_expert_intermediate_size : c->intermediate_size,
                                 &W->lin[LMC_L_DOWN]};
    }
    for (int64_t e = 0; sparse && e < c->num_experts; e++) {
        caps[n++] = (struct cap){NULL, c->hidden_size, &W->experts[e * LMC_X_N + LMC_X_UP]};
        caps[n++] = (struct cap){NULL, c->moe_intermediate_size, &W->experts[e * LMC_X_N + LMC_X_DOWN]};
    }
    return n;
}

/* The cap (layer_caps' index) of HF linear `name` in layer *layer (-1 if
 * not a block linear), and which model matrices it feeds (up to three row
 * slices). */
static int slot_of(const struct lmc_model *m, const char *name, int *layer, struct lmc_mat **mats, int *n_mats) {
    int l, e;
    char rest[200], p[64];
    *n_mats = 0;
    if (sscanf(name, "model.layers.%d.%199s", &l, rest) != 2 && sscanf(name, "transformer.h.%d.%199s", &l, rest) != 2 &&
        sscanf(name, "h.%d.%199s", &l, rest) != 2)
        return -1;
    if (l < 0 || l >= m->cfg.num_layers) return -1;
    struct lmc_linear *L = m->w.layers[l].lin;
    *layer = l;
    if ((sscanf(rest, "mlp.experts.%d.%63s", &e, p) == 2 || sscanf(rest, "block_sparse_moe.experts.%d.%63s", &e, p) == 2) &&
        e >= 0 && e < m->cfg.num_experts && lmc_config_layer_sparse(&m->cfg, l)) {
        static const struct { const char *n; int x; } xt[] = {
            {"gate_proj.weight", LMC_X_GATE}, {"w1.weight", LMC_X_GATE}, {"up_proj.weight", LMC_X_UP},
            {"w3.weight", LMC_X_UP},          {"down_proj.weight", LMC_X_DOWN}, {"w2.weight", LMC_X_DOWN}};
        for (size_t i = 0; i < sizeof xt / sizeof *xt; i++)
            if (!strcmp(p, xt[i].n)) {
                mats[0] = &m->w.layers[l].experts[e * LMC_X_N + xt[i].x].w;
                *n_mats = 1;
                return (has_mlp(m, l) ? 4 : 2) + 2 * e + (xt[i].x == LMC_X_DOWN);
            }
        return -1;
    }
    static const struct { const char *n; int slot; int which; } t[] = {
        {"self_attn.q_proj.weight", 0, 0}, {"self_attn.k_proj.weight", 0, 1},
        {"self_attn.v_proj.weight", 0, 2}, {"self_attn.o_proj.weight", 1, 3},
        {"mlp.gate_proj.weight", 2, 4},    {"mlp.up_proj.weight", 2, 5},
        {"mlp.down_proj.weight", 3, 6},    {"attn.c_attn.weight", 0, 7},
        {"attn.c_proj.weight", 1, 3},      {"mlp.c_fc.weight", 2, 5},
        {"mlp.c_proj.weight", 3, 6},       {"mlp.shared_expert.gate_proj.weight", 2, 4},
        {"mlp.shared_expert.up_proj.weight", 2, 5}, {"mlp.shared_expert.down_proj.weight", 3, 6},
    };
    struct lmc_mat *all[7] = {&L[LMC_L_Q].w, &L[LMC_L_K].w, &L[LMC_L_V].w, &L[LMC_L_O].w,
                              &L[LMC_L_GATE].w, &L[LMC_L_UP].w, &L[LMC_L_DOWN].w};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(rest, t[i].n)) {
            if (t[i].slot >= 2 && !has_mlp(m, l)) return -1;
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

/* The calibration pass of layer l that observes cap i: 0 for every cap
 * without true_seq; with it 0 q (q/k/v), 1 o, 2 the MLP's (and each
 * expert's) up (gate/up), 3 their down, each pass's linears seeing inputs
 * from the layer with the earlier passes' linears already quantized. */
static int cap_stage(const struct lmc_model *m, int l, int i, bool true_seq) {
    if (!true_seq) return 0;
    int base = has_mlp(m, l) ? 4 : 2;
    return i < base ? i : 2 + (i - base) % 2;
}

/* Quantizes job j on its cap's Hessian into *out, and points the running
 * model's matrices (mats, nm row slices) at the dequantized weights (*deq,
 * in the dtype the matrices have: bf16 files stay bf16), so what runs
 * later sees this linear quantized. */
static lmc_status job_quantize(const struct lmc_gptq_job *job, const struct cap *cap, struct lmc_mat **mats, int nm,
                               const struct lmc_gptq_opts *o, struct lmc_qgroups *out, void **deq, lmc_err *err) {
    if (cap->K != job->k)
        return lmc_err_set(err, LMC_ERR_INTERNAL, "gptq: %s has %lld inputs, its layer input %lld", job->name,
                           (long long)job->k, (long long)cap->K);
    lmc_status s = lmc_gptq_quantize(job->w, job->n, job->k, cap->H, o, out, NULL, err);
    if (s) {
        lmc_err_prefix(err, "%s: ", job->name);
        return s;
    }
    enum lmc_dtype dt = mats[0]->dtype;
    int64_t rows = 0;
    for (int t = 0; t < nm; t++) {
        rows += mats[t]->rows;
        if (mats[t]->dtype != dt || mats[t]->cols != job->k ||
            (dt != LMC_DTYPE_F32 && dt != LMC_DTYPE_BF16 && dt != LMC_DTYPE_F16))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "gptq: %s: the model holds it as %s (%lld x %lld)", job->name,
                               lmc_dtype_name(mats[t]->dtype), (long long)mats[t]->rows, (long long)mats[t]->cols);
    }
    if (rows != job->n)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "gptq: %s: %lld rows in the model, %lld in the file", job->name,
                           (long long)rows, (long long)job->n);
    float *f = malloc((size_t)(job->n * job->k) * sizeof(float));
    if (!f || !(*deq = malloc((size_t)(job->n * job->k) * (size_t)lmc_dtype_size(dt)))) {
        free(f);
        return lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory");
    }
    lmc_qgroups_dequantize(out, f);
    for (int64_t e = 0; e < job->n * job->k; e++) {
        if (dt == LMC_DTYPE_F32) ((float *)*deq)[e] = f[e];
        else ((uint16_t *)*deq)[e] = dt == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(f[e]) : lmc_f32_to_f16(f[e]);
    }
    free(f);
    int64_t row0 = 0;
    for (int t = 0; t < nm; t++) {
        mats[t]->data = (const char *)*deq + (size_t)(row0 * job->k) * (size_t)lmc_dtype_size(dt);
        row0 += mats[t]->rows;
    }
    return LMC_OK;
}

lmc_status lmc_gptq_calibrate(const char *dir, const char *calib_file, int64_t n_tokens, int threads, bool true_seq,
                              const struct lmc_gptq_opts *o, const struct lmc_gptq_job *jobs, int n_jobs,
                              struct lmc_qgroups *out, lmc_err *err) {
    struct lmc_model m;
    memset(&m, 0, sizeof m);
    struct lmc_model_opts mo = {LMC_WDTYPE_F32, NULL};
    lmc_status s = lmc_model_load(&m, dir, &mo, err);
    if (s) return s;
    struct lmc_tokenizer *tok = NULL;
    struct lmc_backend be;
    bool have_be = false;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    int max_caps = 4 + 2 * (int)m.cfg.num_experts;
    struct cap *cap = calloc((size_t)max_caps, sizeof *cap), *lc = calloc((size_t)max_caps, sizeof *lc);
    int64_t *cap_k = calloc((size_t)max_caps, sizeof *cap_k); /* floats each cap[i].H holds: cap_k[i]^2 */
    void **deq = calloc((size_t)n_jobs + 1, sizeof *deq);
    if (!deq || !cap || !lc || !cap_k) {
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
    if (!logits) s = lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory");
    const int n_stages = true_seq ? 4 : 1;
    for (int l = 0; l < m.cfg.num_layers && !s; l++) {
        int nc = layer_caps(&m, l, lc);
        for (int i = 0; i < nc && !s; i++) { /* each Hessian buffer grows to the widest input it has held */
            if (lc[i].K > cap_k[i]) {
                free(cap[i].H);
                if (!(cap[i].H = malloc((size_t)(lc[i].K * lc[i].K) * sizeof(double)))) {
                    cap_k[i] = 0;
                    s = lmc_err_set(err, LMC_ERR_OOM, "gptq: out of memory for the Hessians");
                    break;
                }
                cap_k[i] = lc[i].K;
            }
            cap[i].K = lc[i].K;
            cap[i].lin = lc[i].lin;
            memset(cap[i].H, 0, (size_t)(cap[i].K * cap[i].K) * sizeof(double));
        }
        for (int st = 0; st < n_stages && !s; st++) {
            int live = 0; /* the caps this stage observes */
            for (int i = 0; i < nc; i++)
                if (cap_stage(&m, l, i, true_seq) == st) {
                    cap[i].lin->observe = cap_observe;
                    cap[i].lin->observe_user = &cap[i];
                    live++;
                }
            if (!live) continue;
            struct lmc_model upto = m; /* layers past l do not change l's inputs: the forward stops after l */
            upto.cfg.num_layers = l + 1;
            for (int64_t p = 0; p < n_ids && !s; p += chunk) /* the text in windows of `chunk` tokens */
                s = lmc_model_forward(&upto, &be, &acts, &kv, ids + p, LMC_MIN(chunk, n_ids - p), 0, logits, false, err);
            for (int i = 0; i < nc; i++) lc[i].lin->observe = NULL;
            for (int i = 0; i < nc && !s; i++) {
                if (cap_stage(&m, l, i, true_seq) != st) continue;
                double tr = 0;
                for (int64_t d = 0; d < cap[i].K; d++) tr += cap[i].H[d * cap[i].K + d];
                bool expert = i >= (has_mlp(&m, l) ? 4 : 2);
                if (!(tr > 0) && expert) { /* an expert no calibration token reached: plain rounding (H = I) */
                    for (int64_t d = 0; d < cap[i].K; d++) cap[i].H[d * cap[i].K + d] = 1;
                    if ((i - (has_mlp(&m, l) ? 4 : 2)) % 2 == 0) /* once per expert (its up, then its down) */
                        lmc_log(1, "gptq: layer %d: expert %d received no calibration token (rounded without a Hessian)",
                                l, (i - (has_mlp(&m, l) ? 4 : 2)) / 2);
                } else if (!(tr > 0)) {
                    s = lmc_err_set(err, LMC_ERR_INTERNAL, "gptq: layer %d: no inputs of linear %d observed", l, i);
                }
            }
            for (int j = 0; j < n_jobs && !s; j++) {
                int layer = -1, nm;
                struct lmc_mat *mats[3];
                int slot = slot_of(&m, jobs[j].name, &layer, mats, &nm);
                if (slot < 0 || layer != l || cap_stage(&m, l, slot, true_seq) != st) continue;
                s = job_quantize(&jobs[j], &cap[slot], mats, nm, o, &out[j], &deq[j], err);
            }
        }
        lmc_log(1, "gptq: layer %d of %lld quantized on %lld calibration tokens", l + 1,
                (long long)m.cfg.num_layers, (long long)n_ids);
    }
    free(logits);
    lmc_kv_free(&kv);
    lmc_acts_free(&acts);
out:
    for (int i = 0; cap && i < max_caps; i++) free(cap[i].H);
    free(cap);
    free(lc);
    free(cap_k);
    if (have_be) lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
    for (int j = 0; deq && j < n_jobs; j++) free(deq[j]);
    free(deq);
    free(ids);
    free(text);
    if (tok) lmc_tokenizer_free(tok);
    return s;
}
