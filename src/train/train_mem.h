/* train_mem.h — the memory account of a training set-up (lmc finetune /
 * lmc train): the bytes of backend memory each part of a trainer holds,
 * computed from the sizes of the allocations the trainer made (the
 * parameter and gradient arenas, a frozen base kept outside them, the
 * optimizer state, the activation arena and its parts, the adapters'
 * scratch), so that the total can be checked against the backend's live
 * bytes (tests/test_train_mem.c counts the CPU backend's) and against the
 * device memory a GPU reports. Lazily grown op scratch (the CUDA backend's
 * GEMM operands, logits blocks, cuBLASLt workspace) is not in it: the
 * command reports it as the measured rest. */
#ifndef LMC_TRAIN_TRAIN_MEM_H
#define LMC_TRAIN_TRAIN_MEM_H

#include "train/lora_train.h"
#include "train/qlora.h"
#include "train/trainer.h"

#include <stddef.h>
#include <stdint.h>

struct lmc_train_mem {
    size_t weights_f32;     /* the f32 parameter arena (tm.w) */
    size_t frozen_f32;      /*   its frozen part (a frozen base's embeddings, norms, head; every f32 base weight) */
    size_t trainable;       /*   its trainable part */
    size_t base_ext;        /* frozen linears outside the arena (bf16 base, QLoRA's 4-bit codes) */
    const char *base_ext_form; /* "bf16", "NF4", "int4", "quantized" or "" */
    size_t grads;           /* the gradient arena (tm.g: the trainable part with a frozen base) */
    size_t optim;           /* optimizer state (AdamW m and v, or the optimizer's arena) */
    size_t acts;            /* the activation arena and its index buffers (lmc_tacts_bytes) */
    size_t acts_per_layer;  /*   what one layer saves for the backward */
    int64_t acts_layers;    /*   layers whose saves are held at once (1 with recompute) */
    size_t acts_resid;      /*   the residual stream: each layer's input and the final one */
    size_t acts_rest;       /*   the rest: final norm, loss, backward scratch, ids, positions (and
                             *   selective recomputation's shared norm outputs and product) */
    const char *acts_mode;  /* recomputation: "none", "full", "selective" or "attn" (the mixer: lmc_tacts.mixer) */
    bool acts_bf16;         /* saves kept in bf16 (lmc_tacts.save_bf16), or with recompute the
                             * residual stream's checkpoints (lmc_tacts.xs16) */
    size_t host_offload;    /* offloaded checkpoints (lmc_tacts.xs_host): host memory, not in total */
    size_t host_emb;        /* the bf16 token embedding in host memory (lmc_qlora.host_bytes), not in total */
    size_t lora;            /* the adapters' scale matrices, scratch and gradient sink */
    size_t total;
};

/* The account of tr (after lmc_trainer_init); lt and ql may be NULL. With
 * ZeRO (tr->zero) the zero module's shards are not counted (the model's
 * arenas are then NULL and count 0). */
void lmc_train_mem_account(const struct lmc_trainer *tr, const struct lmc_lora_train *lt, const struct lmc_qlora *ql,
                           enum lmc_qlora_kind qkind, struct lmc_train_mem *m);
/* One line, "memory: weights f32 ... = total N MiB", into buf. */
void lmc_train_mem_line(const struct lmc_train_mem *m, char *buf, size_t cap);
/* The account as one JSON object (bytes), into buf; measured (device bytes
 * in use after the first step, less the backend's at start-up; 0: not
 * measured) is added with the unaccounted rest when given. */
void lmc_train_mem_json(const struct lmc_train_mem *m, size_t measured, char *buf, size_t cap);

#endif
