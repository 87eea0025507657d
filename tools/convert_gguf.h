/* convert_gguf.h — `lmc convert` to and from GGUF (cmd_convert_gguf.c). */
#ifndef LMC_CONVERT_GGUF_H
#define LMC_CONVERT_GGUF_H

#include "lmc.h"

#include <stdint.h>

/* Writes in_dir (a Hugging Face folder) as the GGUF file out_path with 2-D
 * weights in qtype (LMC_GGML_F32/F16/BF16/Q8_0/Q4_0); *n_fallback counts the
 * matrices kept F16 because their rows are not whole blocks of qtype. */
lmc_status lmc_convert_to_gguf(const char *in_dir, const char *out_path, int qtype, int64_t *n_tensors,
                               int *n_fallback, lmc_err *err);

/* Writes the GGUF file path (llama, qwen2, gpt2) as a Hugging Face folder
 * out_dir in dtype (LMC_DTYPE_F32/F16/BF16): tensors dequantized and
 * renamed (Q/K rows back in HF order, GPT-2 Conv1D layout), config.json from
 * the hyper-parameters, tokenizer.json and tokenizer_config.json from the
 * tokenizer metadata. */
lmc_status lmc_convert_from_gguf(const char *path, const char *out_dir, int dtype, int64_t *n_tensors, lmc_err *err);

#endif
