/* arch_mamba.c — Mamba (MambaForCausalLM) and Mamba-2 (Mamba2ForCausalLM)
 * in the model layer: their tensor spec tables, the block recipe (RMSNorm +
 * the selective-scan mixer, no feed-forward part) and the mixer's ops
 * table over the SSM composition of src/ssm (lmc_mamba_mix). The mixer
 * keeps no K/V rows; each sequence has a fixed recurrent-state slot per
 * layer in two parts (the conv state, the SSM state), read from
 * lmc_run.state (one sequence, or the pool of a batched step, whose decode
 * rows run as one batched step over their slots). */
#include "model/arch.h"
#include "model/forward_batch.h"
#include "core/core.h"
#include "ssm/mamba.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#define LAYER(n) "backbone.layers.%lld." n
#define LIN(n, slot, o, i, fl) {LAYER(n), true, LMC_TK_LIN_W, slot, 1, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, fl, {o, i}}
#define BIAS(n, slot, o, when) {LAYER(n), true, LMC_TK_LIN_B, slot, 1, LMC_ROLE_BIAS, when, 0, {o, LMC_D_1}}
#define VEC(n, slot, role, when, d0, d1, fl) {LAYER(n), true, LMC_TK_VEC, slot, 1, role, when, fl, {d0, d1}}
#define EMB {"backbone.embeddings.weight", false, LMC_TK_TOK_EMB, 0, 1, LMC_ROLE_EMBED, LMC_WHEN_ALWAYS, 0, {LMC_D_V, LMC_D_C}}
#define NORM_F {"backbone.norm_f.weight", false, LMC_TK_NORM_F, 0, 1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, 0, {LMC_D_C, LMC_D_1}}
#define HEAD {"lm_head.weight", false, LMC_TK_HEAD, 0, 1, LMC_ROLE_MATRIX, LMC_WHEN_UNTIED, 0, {LMC_D_V, LMC_D_C}}

static const struct lmc_tensor_spec specs1[] = {
    EMB,
    VEC("norm.weight", LMC_V_NORM1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, LMC_D_C, LMC_D_1, 0),
    LIN("mixer.in_proj.weight", LMC_L_SSM_IN, LMC_D_SIN, LMC_D_C, 0),
    BIAS("mixer.in_proj.bias", LMC_L_SSM_IN, LMC_D_SIN, LMC_WHEN_SSM_BIAS),
    VEC("mixer.conv1d.weight", LMC_V_SSM_CONV, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, LMC_D_SCD, LMC_D_SK, LMC_TF_CONV),
    VEC("mixer.conv1d.bias", LMC_V_SSM_CONV_B, LMC_ROLE_BIAS, LMC_WHEN_SSM_CONV_BIAS, LMC_D_SCD, LMC_D_1, 0),
    LIN("mixer.x_proj.weight", LMC_L_SSM_X, LMC_D_SXP, LMC_D_SDI, 0),
    LIN("mixer.dt_proj.weight", LMC_L_SSM_DT, LMC_D_SDI, LMC_D_SR, 0),
    VEC("mixer.dt_proj.bias", LMC_V_SSM_DT_B, LMC_ROLE_BIAS, LMC_WHEN_ALWAYS, LMC_D_SDI, LMC_D_1, LMC_TF_INIT_DT),
    VEC("mixer.A_log", LMC_V_SSM_A_LOG, LMC_ROLE_BIAS, LMC_WHEN_ALWAYS, LMC_D_SDI, LMC_D_SN, LMC_TF_INIT_ALOG),
    VEC("mixer.D", LMC_V_SSM_D, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, LMC_D_SDI, LMC_D_1, 0), /* ones, no decay */
    LIN("mixer.out_proj.weight", LMC_L_O, LMC_D_C, LMC_D_SDI, LMC_TF_RESID),
    BIAS("mixer.out_proj.bias", LMC_L_O, LMC_D_C, LMC_WHEN_SSM_BIAS),
    NORM_F,
    HEAD,
};

static const struct lmc_tensor_spec specs2[] = {
    EMB,
    VEC("norm.weight", LMC_V_NORM1, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, LMC_D_C, LMC_D_1, 0),
    LIN("mixer.in_proj.weight", LMC_L_SSM_IN, LMC_D_SIN, LMC_D_C, 0),
    BIAS("mixer.in_proj.bias", LMC_L_SSM_IN, LMC_D_SIN, LMC_WHEN_SSM_BIAS),
    VEC("mixer.conv1d.weight", LMC_V_SSM_CONV, LMC_ROLE_MATRIX, LMC_WHEN_ALWAYS, LMC_D_SCD, LMC_D_SK, LMC_TF_CONV),
    VEC("mixer.conv1d.bias", LMC_V_SSM_CONV_B, LMC_ROLE_BIAS, LMC_WHEN_SSM_CONV_BIAS, LMC_D_SCD, LMC_D_1, 0),
    VEC("mixer.dt_bias", LMC_V_SSM_DT_B, LMC_ROLE_BIAS, LMC_WHEN_ALWAYS, LMC_D_SH, LMC_D_1, LMC_TF_INIT_DT),
    VEC("mixer.A_log", LMC_V_SSM_A_LOG, LMC_ROLE_BIAS, LMC_WHEN_ALWAYS, LMC_D_SH, LMC_D_1, LMC_TF_INIT_ALOG),
    VEC("mixer.D", LMC_V_SSM_D, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, LMC_D_SH, LMC_D_1, 0), /* ones, no decay */
    VEC("mixer.norm.weight", LMC_V_SSM_NORM, LMC_ROLE_NORM, LMC_WHEN_ALWAYS, LMC_D_SDI, LMC_D_1, 0),
    LIN("mixer.out_proj.weight", LMC_L_O, LMC_D_C, LMC_D_SDI, LMC_TF_RESID),
    BIAS("mixer.out_proj.bias", LMC_L_O, LMC_D_C, LMC_WHEN_SSM_BIAS),
    NORM_F,
    HEAD,
};

/* ---- the mixer ---- */

static int64_t conv_floats(const struct lmc_config *c) { return lmc_mamba_conv_state_floats(&c->mamba); }

static int64_t slot_bytes(const struct lmc_config *c) {
    return (conv_floats(c) + lmc_mamba_ssm_state_floats(&c->mamba)) * 4;
}

/* two parts: the conv state, then the SSM state (the ops index each by slot) */
static int slot_parts(const struct lmc_config *c, int64_t *bytes) {
    bytes[0] = conv_floats(c) * 4;
    bytes[1] = lmc_mamba_ssm_state_floats(&c->mamba) * 4;
    return 2;
}

/* training: the activations the backward reads; inference: the mixer's scratch */
static int64_t save_floats(const struct lmc_config *c, int64_t n, enum lmc_run_mode mode) {
    if (mode == LMC_RUN_TRAIN) return lmc_mamba_mixer_act_floats(&c->mamba, n);
    return lmc_mamba_mixer_ws_floats(&c->mamba, n);
}

static int64_t bwd_floats(const struct lmc_config *c, int64_t n) {
    return lmc_mamba_mixer_bwd_ws_floats(&c->mamba, n);
}

static int64_t no_kv(const struct lmc_config *c) {
    (void)c;
    return 0;
}

/* the layer's weights as the SSM composition takes them */
static void layer_of(const struct lmc_block_w *W, struct lmc_mamba_layer *L) {
    memset(L, 0, sizeof *L);
    L->norm_w = W->vec[LMC_V_NORM1];
    L->in_proj = W->lin[LMC_L_SSM_IN].w;
    L->in_proj_b = W->lin[LMC_L_SSM_IN].bias;
    L->conv_w = W->vec[LMC_V_SSM_CONV];
    L->conv_b = W->vec[LMC_V_SSM_CONV_B];
    L->x_proj = W->lin[LMC_L_SSM_X].w;
    L->dt_proj = W->lin[LMC_L_SSM_DT].w;
    L->dt_bias = W->vec[LMC_V_SSM_DT_B];
    L->A_log = W->vec[LMC_V_SSM_A_LOG];
    L->Dskip = W->vec[LMC_V_SSM_D];
    L->gnorm_w = W->vec[LMC_V_SSM_NORM];
    L->out_proj = W->lin[LMC_L_O].w;
    L->out_proj_b = W->lin[LMC_L_O].bias;
}

/* layer l's conv and SSM state of slot 0 in a state of n slots laid out
 * as lmc_kv_pool's (lmc_kv.state: n = 1) */
static void slot_of(const struct lmc_config *c, void *state, int64_t n, int64_t l, float **cst, float **sst) {
    char *base = (char *)state + (size_t)l * (size_t)n * (size_t)slot_bytes(c);
    *cst = (float *)base;
    *sst = (float *)base + n * conv_floats(c);
}

/* the end of the run of one sequence's tokens starting at i */
static int64_t run_end(const struct lmc_run *r, int64_t i) {
    int64_t j = i + 1;
    while (j < r->n && r->seq_host[j] == r->seq_host[i]) j++;
    return j;
}

static void mix_fwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W, float *save,
                    const float *h, const float *res, float *y) {
    const struct lmc_config *c = r->cfg;
    struct lmc_mamba_layer L;
    layer_of(W, &L);
    float *cst, *sst;
    switch (r->mode) {
    case LMC_RUN_SEQ:
        LMC_ASSERT(r->state);
        slot_of(c, r->state, 1, l, &cst, &sst);
        lmc_mamba_mix(r->be, &c->mamba, &L, y, res, h, cst, sst, NULL, 1, r->n, save);
        break;
    case LMC_RUN_PAGED: {
        /* Consecutive one-token runs (the decode rows, which the scheduler
         * puts first) go as one batched step over their slots; each longer
         * run (a prefill chunk) is a scan from its own slot. */
        const int64_t C = c->hidden_size;
        LMC_ASSERT(r->state && r->tok_slot && r->pool);
        slot_of(c, r->state, r->pool->n_blocks, l, &cst, &sst);
        for (int64_t i = 0; i < r->n;) {
            int64_t j = run_end(r, i), B = 1, T = j - i;
            if (T == 1) {
                while (j < r->n && run_end(r, j) == j + 1) j++;
                B = j - i;
            }
            lmc_mamba_mix(r->be, &c->mamba, &L, y + i * C, res + i * C, h + i * C, cst, sst,
                          r->tok_slot + i, B, T, save);
            i = j;
        }
        break;
    }
    case LMC_RUN_TRAIN: { /* B sequences of T tokens from a zero state; y = res + mixer(h) */
        struct lmc_mamba_mixer_acts acts;
        lmc_mamba_mixer_acts_bind(&acts, &c->mamba, r->n, save);
        lmc_mamba_mix_train(r->be, &c->mamba, &L, r->tmp, h, &acts, r->B, r->T);
        r->be->add(r->be->ctx, y, res, r->tmp, r->n * c->hidden_size);
        break;
    }
    }
}

static void mix_bwd(const struct lmc_run *r, int64_t l, const struct lmc_block_w *W,
                    const struct lmc_block_w *G, const float *save, const float *h, const float *dy,
                    float *dh, float *scratch) {
    (void)l;
    const struct lmc_config *c = r->cfg;
    struct lmc_mamba_layer L;
    layer_of(W, &L);
    struct lmc_mamba_mixer_acts acts;
    lmc_mamba_mixer_acts_bind(&acts, &c->mamba, r->n, (float *)save);
    const struct lmc_mamba_layer_grads g = {
        .in_proj = (float *)G->lin[LMC_L_SSM_IN].w.data,
        .in_proj_b = (float *)G->lin[LMC_L_SSM_IN].bias,
        .conv_w = (float *)G->vec[LMC_V_SSM_CONV],
        .conv_b = (float *)G->vec[LMC_V_SSM_CONV_B],
        .x_proj = (float *)G->lin[LMC_L_SSM_X].w.data,
        .dt_proj = (float *)G->lin[LMC_L_SSM_DT].w.data,
        .dt_bias = (float *)G->vec[LMC_V_SSM_DT_B],
        .A_log = (float *)G->vec[LMC_V_SSM_A_LOG],
        .Dskip = (float *)G->vec[LMC_V_SSM_D],
        .gnorm_w = (float *)G->vec[LMC_V_SSM_NORM],
        .out_proj = (float *)G->lin[LMC_L_O].w.data,
        .out_proj_b = (float *)G->lin[LMC_L_O].bias,
    };
    lmc_mamba_mix_bwd(r->be, &c->mamba, &L, dh, dy, h, &acts, &g, r->B, r->T, scratch);
}

static const char *mix_missing(const struct lmc_backend *be, const struct lmc_config *c, bool backward) {
    if (!be->conv1d_causal || !be->conv1d_causal_step) return "conv1d_causal";
    if (c->mamba.kind == LMC_MAMBA_1 && (!be->ssm_scan || !be->ssm_scan_step)) return "ssm_scan";
    if (c->mamba.kind == LMC_MAMBA_2 && (!be->ssd_chunk || !be->ssd_step || !be->rmsnorm_gated))
        return "ssd_chunk";
    if (backward) {
        if (!be->matmul_bwd) return "matmul_bwd";
        if (!be->conv1d_causal_bwd) return "conv1d_causal_bwd";
        if (c->mamba.kind == LMC_MAMBA_1 && !be->ssm_scan_bwd) return "ssm_scan_bwd";
        if (c->mamba.kind == LMC_MAMBA_2 && (!be->ssd_chunk_bwd || !be->rmsnorm_gated_bwd))
            return "ssd_chunk_bwd";
    }
    return NULL;
}

const struct lmc_part_ops lmc_mixer_mamba = {
    .name = "mamba",
    .save_floats = save_floats,
    .bwd_floats = bwd_floats,
    .fwd = mix_fwd,
    .bwd = mix_bwd,
    .missing = mix_missing,
    .kv_row = no_kv,
    .slot_bytes = slot_bytes,
    .slot_parts = slot_parts,
    .no_adapters = true,
};

/* ---- the architectures ---- */

static lmc_status check(const struct lmc_config *c, lmc_err *err) {
    const struct lmc_mamba_config *m = &c->mamba;
    if (m->hidden_size != c->hidden_size || m->vocab_size != c->vocab_size ||
        m->num_layers != c->num_layers || m->d_inner <= 0 || m->conv_dim <= 0 || m->in_proj_dim <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: SSM sizes missing or inconsistent", c->model_type);
    return LMC_OK;
}

static void defaults(struct lmc_config *c, enum lmc_mamba_kind kind) {
    struct lmc_mamba_config *m = &c->mamba;
    c->arch = kind == LMC_MAMBA_1 ? LMC_ARCH_MAMBA : LMC_ARCH_MAMBA2;
    snprintf(c->model_type, sizeof c->model_type, "%s", kind == LMC_MAMBA_1 ? "mamba" : "mamba2");
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->vocab_size = c->vocab_size, m->hidden_size = c->hidden_size, m->num_layers = c->num_layers;
    m->expand = 2;
    m->d_inner = 2 * c->hidden_size;
    m->conv_kernel = 4;
    m->use_conv_bias = true;
    m->residual_in_fp32 = true;
    m->tie_word_embeddings = c->tie_word_embeddings;
    m->norm_eps = c->norm_eps;
    m->eos_token_id = m->bos_token_id = m->pad_token_id = -1;
    if (kind == LMC_MAMBA_1) {
        m->state_size = 16;
        m->time_step_rank = (c->hidden_size + 15) / 16;
        m->conv_dim = m->d_inner;
        m->in_proj_dim = 2 * m->d_inner;
        m->xproj_dim = m->time_step_rank + 2 * m->state_size;
    } else {
        m->state_size = 64;
        m->head_dim = 64 < m->d_inner ? 64 : m->d_inner;
        m->num_heads = m->d_inner / m->head_dim;
        m->n_groups = 1;
        m->chunk_size = 256;
        m->dt_max = 1e30;
        m->conv_dim = m->d_inner + 2 * m->n_groups * m->state_size;
        m->in_proj_dim = 2 * m->d_inner + 2 * m->n_groups * m->state_size + m->num_heads;
    }
    c->intermediate_size = m->d_inner;
    c->num_heads = c->num_kv_heads = 1;
    c->head_dim = c->hidden_size;
    c->max_position_embeddings = (int64_t)1 << 20;
}
static void defaults1(struct lmc_config *c) { defaults(c, LMC_MAMBA_1); }
static void defaults2(struct lmc_config *c) { defaults(c, LMC_MAMBA_2); }

static void config_json(const struct lmc_config *c, cJSON *o) {
    const struct lmc_mamba_config *m = &c->mamba;
    bool one = m->kind == LMC_MAMBA_1;
    cJSON *arr = cJSON_AddArrayToObject(o, "architectures");
    if (arr) cJSON_AddItemToArray(arr, cJSON_CreateString(one ? "MambaForCausalLM" : "Mamba2ForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", one ? "mamba" : "mamba2");
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(o, "hidden_size", (double)c->hidden_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)c->num_layers);
    cJSON_AddNumberToObject(o, "state_size", (double)m->state_size);
    cJSON_AddNumberToObject(o, "expand", (double)m->expand);
    cJSON_AddNumberToObject(o, "conv_kernel", (double)m->conv_kernel);
    cJSON_AddBoolToObject(o, "use_bias", m->use_bias);
    cJSON_AddBoolToObject(o, "use_conv_bias", m->use_conv_bias);
    cJSON_AddBoolToObject(o, "residual_in_fp32", m->residual_in_fp32);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddNumberToObject(o, "layer_norm_epsilon", c->norm_eps);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    if (one) {
        cJSON_AddNumberToObject(o, "intermediate_size", (double)m->d_inner);
        cJSON_AddNumberToObject(o, "time_step_rank", (double)m->time_step_rank);
    } else {
        cJSON_AddNumberToObject(o, "num_heads", (double)m->num_heads);
        cJSON_AddNumberToObject(o, "head_dim", (double)m->head_dim);
        cJSON_AddNumberToObject(o, "n_groups", (double)m->n_groups);
        cJSON_AddNumberToObject(o, "chunk_size", (double)m->chunk_size);
    }
}

const struct lmc_architecture lmc_arch_mamba = {
    .name = "mamba",
    .hf_class = "MambaForCausalLM",
    .specs = specs1,
    .n_specs = (int)(sizeof specs1 / sizeof *specs1),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_mamba,
    .ffn = NULL,
    .learned_pos = true, /* no rotary tables; no position table either */
    .check = check,
    .config_defaults = defaults1,
    .config_json = config_json,
};

const struct lmc_architecture lmc_arch_mamba2 = {
    .name = "mamba2",
    .hf_class = "Mamba2ForCausalLM",
    .specs = specs2,
    .n_specs = (int)(sizeof specs2 / sizeof *specs2),
    .norm = &lmc_norm_rms,
    .mixer = &lmc_mixer_mamba,
    .ffn = NULL,
    .learned_pos = true,
    .check = check,
    .config_defaults = defaults2,
    .config_json = config_json,
};
