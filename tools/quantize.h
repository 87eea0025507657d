/* quantize.h — `lmc quantize` pieces other commands use (cmd_quantize.c). */
#ifndef LMC_TOOLS_QUANTIZE_H
#define LMC_TOOLS_QUANTIZE_H

#include "lmc.h"

#include <stdint.h>

/* Writes the quantized Hugging Face folder `in` (GPTQ, AWQ, bitsandbytes
 * NF4, BitNet) as a float folder `out` with every quantized linear
 * dequantized to dtype (LMC_DTYPE_F32/F16/BF16) under its `.weight` name. */
lmc_status lmc_dequantize_folder(const char *in, const char *out, int dtype, int64_t *n_deq, lmc_err *err);

#endif
