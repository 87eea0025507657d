/* tp_quant.h — a quantized weight (quant/qmatmul.h lmc_qweight) cut for one
 * tensor-parallel rank without dequantizing it: by output rows for a
 * column-parallel linear (every kernel), or by input columns for a
 * row-parallel one, in whole blocks of the format (GGUF blocks of 32/256,
 * integer groups of GPTQ/AWQ/rtn that start and end at the cut, NF4 blocks
 * of 64; NF4 over the flattened weight, as QLoRA quantizes at load, when
 * its rows are whole blocks). A cut whose columns do not fall on block or
 * group boundaries, a weight in act-order (its columns permuted) or
 * flattened NF4 with rows across blocks is refused with the reason. The
 * activations are quantized in blocks of 32 from the cut's first column (a
 * multiple of 32), so each rank's partial sums are the one-process block
 * products in another order of addition. */
#ifndef LMC_TP_QUANT_H
#define LMC_TP_QUANT_H

#include "quant/qmatmul.h"

/* d (new, owning its buffers: lmc_qweight_free) <- rows [a0, a0+n) of w
 * (cols false) or columns [a0, a0+n) (cols true). what names the tensor in
 * messages (LMC_ERR_UNSUPPORTED; LMC_ERR_OOM). */
lmc_status lmc_tp_qweight_cut(struct lmc_qweight *d, const struct lmc_qweight *w, bool cols, int64_t a0, int64_t n,
                              const char *what, lmc_err *err);

#endif
