/* qlora.h — QLoRA's base: a trainable model (lmc_tmodel) whose block
 * linears stay 4-bit in memory. Loading a float Hugging Face folder
 * quantizes each linear as it is read (NF4: bitsandbytes' blocks of 64
 * over the flattened weight, double-quantized absmax; int4: round-to-
 * nearest, asymmetric, groups of 64 along the input); a folder already
 * quantized (quantization_config: bitsandbytes NF4, GPTQ, AWQ, as `lmc
 * quantize` writes them) is used as stored. The quantized linears are
 * tparams kept outside the arenas (backward.h `external`), run in float
 * math per dequantized tile (backend qmatmul_f / qmatmul_f_bwd) and
 * frozen; embeddings, norms, biases and the head stay f32 in the arena
 * (and, in a bitsandbytes folder, linears whose rows are not whole blocks
 * of 64: dequantized at load, as model loading does). */
#ifndef LMC_TRAIN_QLORA_H
#define LMC_TRAIN_QLORA_H

#include "lmc.h"
#include "model/backward.h"
#include "quant/qmatmul.h"

/* BF16: not quantized — LoRA's frozen base kept as bf16 on a device
 * backend (the mixed-precision mode's GEMM operands, so the same products
 * as the f32 base converted per GEMM, in half the memory and no f32
 * master): the block linears, the token embedding and an untied head
 * external in bf16 device memory (bound as dense BF16 tensors through
 * tparam.ext_data), the rest (norms, biases, learned positions) f32 in
 * the arena.
 * A float folder only; LMC_ERR_UNSUPPORTED on host-memory backends. */
enum lmc_qlora_kind { LMC_QLORA_NF4 = 1, LMC_QLORA_INT4 = 2, LMC_QLORA_BF16 = 3 };

/* "nf4" / "int4"; false for anything else. */
bool lmc_qlora_kind_parse(const char *s, enum lmc_qlora_kind *k);

struct lmc_qlora {
    struct lmc_qweight *qw;   /* one per external tparam (n_params of tm; unused slots zero) */
    struct lmc_qweight *views; /* parts per tparam (fused tensors: row views borrowing qw) */
    int n;                    /* views used */
    int n_slots;              /* entries of qw */
    int64_t n_quant;          /* linears kept quantized */
    int64_t quant_params;     /* their weights' elements */
    size_t quant_bytes;       /* their codes and scales */
    size_t compact_bytes;     /* the same in the compact form a device keeps (lmc_qweight_bytes_compact of each view) */
    bool prequantized;        /* the folder was already quantized */
    /* on a backend without host memory (CUDA): every view uploaded through
     * qweight_upload_f (the views then hold copies of the device handles,
     * the host weights are released after upload) */
    const struct lmc_backend *be;
    struct lmc_qweight **dev; /* n_dev device handles */
    int n_dev;
    size_t dev_bytes;         /* the backend memory they take */
    void **dense;             /* LMC_QLORA_BF16: n_dense bf16 device buffers (be->alloc) */
    int n_dense;
    int64_t n_ends;           /* LMC_QLORA_BF16: the token embedding / untied head among them (not in n_quant) */
    int64_t ends_params;      /* their elements */
    size_t ends_bytes;        /* their bytes (also in quant_bytes, compact_bytes and dev_bytes) */
    /* lmc_qlora_load_opts with host_emb: the bf16 token embedding in the
     * backend's host memory (host_alloc), read in place by its embed op;
     * host_bytes, in none of the device counts above (NULL / 0: none) */
    void *host_emb;
    size_t host_bytes;
};

/* Loads dir into tm on be with its linears quantized (see above); ql owns
 * the quantized weights and must outlive tm (and the trainer that takes
 * it). On a backend without host memory each linear goes to the device
 * through qweight_upload_f right after it is quantized (the device holds
 * the 4-bit form; the host copy is released). Errors name the folder and
 * tensor (LMC_ERR_FORMAT, LMC_ERR_OOM, LMC_ERR_UNSUPPORTED for a backend
 * without qmatmul_f, or a device backend without qweight_upload_f). */
lmc_status lmc_qlora_load(struct lmc_tmodel *tm, struct lmc_qlora *ql, const char *dir, enum lmc_qlora_kind kind,
                          const struct lmc_backend *be, lmc_err *err);
/* As lmc_qlora_load; bf16_ends says whether the token embedding and the
 * untied head are kept bf16 on the device too (any kind; a device backend
 * in its bf16 training mode only: the CUDA classifier takes a BF16 head
 * there) or stay f32 in the arena. lmc_qlora_load: for LMC_QLORA_BF16 on a
 * device backend, yes; for NF4 / int4, no. With them the embedding's rows
 * enter the blocks rounded to bf16; the head is the classifier's bf16 GEMM
 * operand as before. LMC_ERR_UNSUPPORTED on a host-memory backend. */
lmc_status lmc_qlora_load_ends(struct lmc_tmodel *tm, struct lmc_qlora *ql, const char *dir, enum lmc_qlora_kind kind,
                               bool bf16_ends, const struct lmc_backend *be, lmc_err *err);
/* As lmc_qlora_load_ends; host_emb (with bf16_ends, an untied head): the
 * bf16 token embedding goes to the backend's host memory (host_alloc:
 * CUDA's pinned memory, mapped into the device's address space) instead
 * of device memory, and the embed op gathers the step's rows from it in
 * place (a zero-copy read over the bus: the rows of one step, not the
 * table). The step is bit for bit that of the device-resident table.
 * Nothing changes for a tied head (the head's GEMM reads the table) or
 * without bf16_ends. LMC_ERR_UNSUPPORTED for a backend without host_alloc. */
lmc_status lmc_qlora_load_opts(struct lmc_tmodel *tm, struct lmc_qlora *ql, const char *dir, enum lmc_qlora_kind kind,
                               bool bf16_ends, bool host_emb, const struct lmc_backend *be, lmc_err *err);
void lmc_qlora_free(struct lmc_qlora *ql);

#endif
