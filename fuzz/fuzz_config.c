/* fuzz_config.c — libFuzzer target: arbitrary bytes through
 * lmc_config_parse and lmc_config_parse_generation; a parsed config must
 * satisfy the documented invariants. */
#include "io/hf_config.h"
#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1); /* exact size, not NUL-terminated */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_config c;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_config_parse(&c, buf, size, "fuzz/config.json", &err) == LMC_OK) {
        LMC_ASSERT(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.intermediate_size > 0);
        LMC_ASSERT(c.num_heads > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0);
        if (c.mamba.kind == 0) /* attention: the head size bounds buffers */
            LMC_ASSERT(c.head_dim > 0 && c.head_dim <= 1024);
        else /* state-space: no attention heads; the SSM sizes must hold */
            LMC_ASSERT(c.mamba.d_inner > 0 && c.mamba.state_size > 0 && c.mamba.conv_kernel > 0);
        LMC_ASSERT(c.n_eos >= 0 && c.n_eos <= LMC_MAX_EOS);
        if (c.num_experts > 0) /* mixture of experts: top-k within the experts, a sane sparse step */
            LMC_ASSERT(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.num_experts &&
                       c.decoder_sparse_step >= 0 && c.decoder_sparse_step <= 4096);
        LMC_ASSERT(memchr(c.model_type, 0, sizeof c.model_type) && memchr(c.torch_dtype, 0, sizeof c.torch_dtype));
    } else {
        LMC_ASSERT(err.msg[0] != 0);
    }
    memset(&err, 0, sizeof err);
    if (lmc_config_parse_generation(&c, buf, size, "fuzz/generation_config.json", &err) == LMC_OK)
        LMC_ASSERT(c.n_eos >= 0 && c.n_eos <= LMC_MAX_EOS && c.gen_top_k >= 0);
    else
        LMC_ASSERT(err.msg[0] != 0);
    free(buf);
    return 0;
}
