/* fuzz_mamba_config.c — libFuzzer target: arbitrary bytes through
 * lmc_mamba_config_parse; a parsed config must satisfy the invariants the
 * Mamba loader and the SSM ops rely on. */
#include "ssm/mamba.h"
#include "core/core.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1); /* exact size, not NUL-terminated */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_mamba_config c;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_mamba_config_parse(&c, buf, size, "fuzz/config.json", &err) == LMC_OK) {
        LMC_ASSERT(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.state_size > 0);
        LMC_ASSERT(c.conv_kernel > 0 && c.d_inner > 0 && c.conv_dim >= c.d_inner);
        LMC_ASSERT(c.in_proj_dim >= 2 * c.d_inner);
        if (c.kind == LMC_MAMBA_2) {
            LMC_ASSERT(c.num_heads * c.head_dim == c.d_inner && c.num_heads % c.n_groups == 0);
            LMC_ASSERT(c.chunk_size > 0 && c.dt_min >= 0 && c.dt_max >= c.dt_min);
        } else {
            LMC_ASSERT(c.kind == LMC_MAMBA_1 && c.time_step_rank > 0);
            LMC_ASSERT(c.xproj_dim == c.time_step_rank + 2 * c.state_size);
        }
        LMC_ASSERT(lmc_mamba_state_bytes(&c) > 0);
    } else {
        LMC_ASSERT(err.msg[0] != 0);
    }
    free(buf);
    return 0;
}
