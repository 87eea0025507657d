/* lora_bank.h — several LoRA adapters bound side by side into one model
 * for multi-adapter serving: each layer linear an adapter targets gets a
 * slot per adapter (lmc_linear.slots), and a request picks its adapter by
 * id (1..n; 0: the base). The batched forward applies each row's own
 * adapter (rows grouped by adapter, one GEMM pair per group), never
 * merging into the base weights, so base and adapter requests share one
 * batch and one KV pool. */
#ifndef LMC_TRAIN_LORA_BANK_H
#define LMC_TRAIN_LORA_BANK_H

#include "lmc.h"
#include "model/model.h"
#include "train/lora.h"

#define LMC_LORA_BANK_MAX 64

struct lmc_lora_bank {
    const struct lmc_backend *be;
    int n;                          /* adapters (ids 1..n) */
    struct lmc_adapter *slots;      /* per adapted linear, n entries */
    struct lmc_row_groups groups;   /* the model's row_groups while bound */
    void **bufs;                    /* backend buffers */
    int n_bufs, cap_bufs;
};

/* Binds adapters los[0..n) (scale multipliers mul[i]; id i + 1) into m's
 * layer linears as per-row slots and sets m->row_groups. Refuses
 * (LMC_ERR_UNSUPPORTED) recurrent models, tensor-parallel linears and a
 * model that already has a bank; n in 1..LMC_LORA_BANK_MAX. */
lmc_status lmc_lora_bank_bind(struct lmc_lora_bank *b, struct lmc_model *m,
                              const struct lmc_lora *const *los, const double *mul, int n,
                              const struct lmc_backend *be, lmc_err *err);
/* Clears the slots and m->row_groups and frees the buffers. */
void lmc_lora_bank_unbind(struct lmc_lora_bank *b, struct lmc_model *m);

#endif
