/* qlora_tp.h — QLoRA's quantized base (train/qlora.h) cut for a
 * tensor-parallel rank (lmc finetune --qlora --tp T): the block linears'
 * quantized weights cut by output rows (q/k/v, gate/up) or whole blocks /
 * groups of input columns (o, down) without dequantizing
 * (dist/tp_quant.h), the float tensors sliced as dist/tp_train.h does;
 * the linears run in float math per dequantized tile and stay frozen, so
 * the adapters over them train as LoRA does under --tp (lora_tp.h). */
#ifndef LMC_TRAIN_QLORA_TP_H
#define LMC_TRAIN_QLORA_TP_H

#include "train/qlora.h"
#include "train/trainer_tp.h"

/* The rank's cuts of the quantized weights (the shard's external tparams
 * point here; free after the shard). */
struct lmc_qlora_tp {
    struct lmc_qweight *cuts;
    int n;
};

/* As lmc_trainer_tp_shard (vocabulary replicated) for a QLoRA base full
 * (lmc_qlora_load, host backend): *shard's quantized linears are q's cuts.
 * LMC_ERR_UNSUPPORTED naming the tensor when a cut falls inside a block or
 * group, for fused or expert tensors, or a device backend. */
lmc_status lmc_qlora_tp_shard(struct lmc_tmodel *shard, struct lmc_trainer_tp **out, struct lmc_qlora_tp *q,
                              const struct lmc_tmodel *full, struct lmc_comm *tp, const struct lmc_backend *be,
                              lmc_err *err);
void lmc_qlora_tp_free(struct lmc_qlora_tp *q);

#endif
