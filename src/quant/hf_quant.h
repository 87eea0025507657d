/* hf_quant.h — quantized Hugging Face folders: `quantization_config` of
 * config.json (GPTQ v1/v2, AWQ GEMM, bitsandbytes 4-bit, BitNet), reading
 * one quantized linear's tensors from the safetensors set with every shape
 * and dtype checked against the config (errors name the tensor or key),
 * and the tensor names and bytes a writer emits for each format. */
#ifndef LMC_HF_QUANT_H
#define LMC_HF_QUANT_H

#include "lmc.h"
#include "io/safetensors.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"

#include <stdbool.h>
#include <stdint.h>

enum lmc_qmethod { LMC_QM_NONE = 0, LMC_QM_GPTQ, LMC_QM_AWQ, LMC_QM_BNB4, LMC_QM_BITNET };

struct lmc_quant_config {
    enum lmc_qmethod method;
    int bits;                /* GPTQ/AWQ */
    int64_t group_size;      /* -1: one group per row */
    bool desc_act, sym;
    bool gptq_v2;            /* checkpoint_format "gptq_v2" */
    bool double_quant;       /* bnb_4bit_use_double_quant */
};

/* Parses config.json's quantization_config; method NONE when absent. An
 * unknown quant_method, AWQ other than GEMM, bitsandbytes 8-bit or fp4 are
 * LMC_ERR_UNSUPPORTED naming the key. */
lmc_status lmc_quant_config_parse(const char *config_json, size_t len, const char *label,
                                  struct lmc_quant_config *qc, lmc_err *err);

/* One quantized linear read from a checkpoint: (n out, k in). */
struct lmc_qlinear {
    enum lmc_qmethod method;
    int64_t n, k;
    struct lmc_qgroups g;    /* GPTQ, AWQ */
    struct lmc_nf4 nf4;      /* bitsandbytes */
    int8_t *tern;            /* BitNet (n, k) */
    float tern_scale;        /* w = tern * tern_scale */
};

/* Reads linear `prefix` ("model.layers.0.mlp.up_proj"): *found = false
 * (and LMC_OK) when the checkpoint has no quantized tensors for it (a layer
 * left in float). */
lmc_status lmc_qlinear_read(const struct lmc_st *st, const char *prefix, const struct lmc_quant_config *qc,
                            struct lmc_qlinear *q, bool *found, lmc_err *err);
/* w (n, k) float32. */
void lmc_qlinear_dequantize(const struct lmc_qlinear *q, float *w);
/* The kernel-ready weight (lmc_qmatmul) of a linear. */
lmc_status lmc_qlinear_prepare(const struct lmc_qlinear *q, struct lmc_qweight *w, lmc_err *err);
void lmc_qlinear_free(struct lmc_qlinear *q);

/* Tensors of one quantized linear for a writer: names (prefix + suffix) and
 * bytes owned by the set. */
struct lmc_qtensors {
    int n;
    struct lmc_st_write_tensor t[8];
    char names[8][320];
    void *bufs[8];
};
lmc_status lmc_qtensors_gptq(const struct lmc_qgroups *g, bool v2, const char *prefix, struct lmc_qtensors *out,
                             lmc_err *err);
/* bitsandbytes NF4 of a (n, k) weight (double quantization); dtype names the
 * compute dtype recorded in the quant state ("float16", "bfloat16", "float32"). */
lmc_status lmc_qtensors_nf4(const struct lmc_nf4 *q, int64_t n, int64_t k, const char *dtype, const char *prefix,
                            struct lmc_qtensors *out, lmc_err *err);
lmc_status lmc_qtensors_ternary(const int8_t *q, float scale, int64_t n, int64_t k, const char *prefix,
                                struct lmc_qtensors *out, lmc_err *err);
void lmc_qtensors_free(struct lmc_qtensors *t);

#endif
