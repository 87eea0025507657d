/* lora.h — LoRA adapters: PEFT adapter folders (adapter_config.json +
 * adapter_model.safetensors, keys base_model.model.<module>.lora_A.weight
 * (r, in) and .lora_B.weight (out, r)) read and written, mapped onto a
 * model's linears through the architecture's tensor spec table, bound into
 * lmc_linear.adapters (backend memory) for inference, and folded into base
 * weights (merge). Training state for adapters is in lora_train.h. */
#ifndef LMC_TRAIN_LORA_H
#define LMC_TRAIN_LORA_H

#include "lmc.h"
#include "io/hf_config.h"
#include "model/block.h"
#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

#define LMC_LORA_MAX_TARGETS 16

struct lmc_lora_config {
    int64_t r;
    double alpha;
    bool rslora;                 /* scale alpha / sqrt(r) instead of alpha / r */
    bool fan_in_fan_out;         /* PEFT's flag for Conv1D (GPT-2) bases */
    double dropout;
    char targets[LMC_LORA_MAX_TARGETS][48]; /* module names (last path component) */
    int n_targets;
    char base_model[512];
};

/* One adapted module (a layer linear of the base). */
struct lmc_lora_module {
    char module[160];            /* HF module path, "model.layers.0.self_attn.q_proj" */
    int64_t layer;
    int slot, parts;             /* lmc_lslot slot..slot+parts-1 (GPT-2 c_attn: 3); an expert's: lmc_xslot, 1 */
    int64_t expert;              /* mixture of experts: the expert whose projection this is; -1: a layer linear */
    int64_t in, out;             /* out over all parts */
    bool transposed;             /* base stored (in, out) on disk (Conv1D) */
    float *a, *b;                /* host f32: A (r, in), B (out, r) */
};

/* The linear part p of module m adapts in w (a layer slot or an expert's projection). */
static inline struct lmc_linear *lmc_lora_module_linear(struct lmc_weights *w, const struct lmc_lora_module *m, int p) {
    if (m->expert >= 0) return &w->layers[m->layer].experts[m->expert * LMC_X_N + m->slot];
    return &w->layers[m->layer].lin[m->slot + p];
}

struct lmc_lora {
    struct lmc_lora_config cfg;
    struct lmc_lora_module *mods;
    int n_mods;
};

/* The adapter's scale: alpha / r, or alpha / sqrt(r) with rslora. */
double lmc_lora_scale(const struct lmc_lora_config *c);

/* Reads dir/adapter_config.json (LMC_ERR_FORMAT naming the field; a
 * peft_type other than LORA, DoRA, biases: LMC_ERR_UNSUPPORTED). */
lmc_status lmc_lora_config_read(struct lmc_lora_config *c, const char *dir, lmc_err *err);
/* The same from text[0..len) (path names it in messages). */
lmc_status lmc_lora_config_parse(struct lmc_lora_config *c, const char *text, size_t len, const char *path,
                                 lmc_err *err);
/* Reads an adapter folder for a model of config mc: every tensor must be a
 * lora_A/lora_B pair of a linear the model has, with shapes (r, in) and
 * (out, r) (errors name the key). */
lmc_status lmc_lora_load(struct lmc_lora *lo, const char *dir, const struct lmc_config *mc,
                         lmc_err *err);
/* A new adapter on mc's linears named by cfg->targets ("all-linear": every
 * layer linear): A ~ U(-1/sqrt(in), 1/sqrt(in)) from seed (PEFT's
 * kaiming-uniform default), B = 0. */
lmc_status lmc_lora_create(struct lmc_lora *lo, const struct lmc_lora_config *cfg,
                           const struct lmc_config *mc, uint64_t seed, lmc_err *err);
/* Writes a PEFT folder dir (adapter_config.json, adapter_model.safetensors,
 * and the tokenizer files of tok_dir when given) through a temporary
 * folder renamed at the end (an existing dir is replaced only when it
 * holds an adapter). */
lmc_status lmc_lora_save(const struct lmc_lora *lo, const char *dir, const struct lmc_config *mc,
                         const char *tok_dir, lmc_err *err);
void lmc_lora_free(struct lmc_lora *lo);

/* Sets cfg->targets from a comma list or "all-linear" (LMC_ERR_ARG). */
lmc_status lmc_lora_parse_targets(struct lmc_lora_config *cfg, const char *list, lmc_err *err);

/* Adapters bound into a model's linears: the lmc_adapter arrays and the
 * backend buffers (A, B, diag(scale), one shared scratch). */
struct lmc_lora_binding {
    const struct lmc_backend *be;
    struct lmc_adapter *adapters;
    void **bufs;
    int n_bufs, cap_bufs;
};
/* A new buffer of bytes on be, recorded in the list (*bufs, *n of *cap,
 * grown as needed; the owner frees them), holding host's bytes unless host
 * is NULL; NULL when out of memory. The binding's and the bank's
 * (lora_bank.h) buffers. */
void *lmc_lora_buf_new(const struct lmc_backend *be, void ***bufs, int *n, int *cap, const void *host, size_t bytes);
/* Binds n adapters (scale multipliers mul[i]) into w's layer linears,
 * uploading to be. A linear adapted by several gets them in order. */
lmc_status lmc_lora_bind(struct lmc_lora_binding *b, struct lmc_weights *w, const struct lmc_config *mc,
                         const struct lmc_lora *const *los, const double *mul, int n,
                         const struct lmc_backend *be, lmc_err *err);
/* Frees the buffers and clears the adapters from w's linears. */
void lmc_lora_unbind(struct lmc_lora_binding *b, struct lmc_weights *w, const struct lmc_config *mc);

/* Merge: base tensor data (dtype dt, on-disk layout rows x cols) of module
 * m's weight += scale * B A (transposed for Conv1D), in f32, stored back
 * in dt. */
void lmc_lora_merge_into(const struct lmc_lora_module *m, int64_t r, double scale, void *data,
                         enum lmc_dtype dt);

#endif
