/* fuzz_safetensors.c — libFuzzer target: arbitrary bytes through
 * lmc_st_parse; on success every tensor's first and last byte is read (ASan
 * proves the bounds) and lookups are checked, then everything is freed. */
#include "io/safetensors.h"
#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* copy into an exact-size buffer so reads past the end are caught */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_st st;
    lmc_err err;
    memset(&err, 0, sizeof err);
    volatile uint8_t sink = 0;
    if (lmc_st_parse(&st, buf, size, "fuzz.safetensors", &err) == LMC_OK) {
        for (int64_t i = 0; i < st.n_tensors; i++) {
            const struct lmc_st_tensor *t = &st.tensors[i];
            LMC_ASSERT(t->ndim >= 0 && t->ndim <= LMC_ST_MAX_DIMS);
            LMC_ASSERT(t->nbytes == (size_t)t->numel * (size_t)lmc_dtype_size(t->dtype));
            if (t->nbytes) {
                const uint8_t *p = t->data;
                LMC_ASSERT(p >= buf && p + t->nbytes <= buf + size);
                sink ^= p[0];
                sink ^= p[t->nbytes - 1];
            }
            LMC_ASSERT(lmc_st_find(&st, t->name) == t);
        }
        for (int i = 0; i < st.n_meta; i++) LMC_ASSERT(lmc_st_meta_get(&st, st.meta[2 * i]) != NULL);
        lmc_st_free(&st);
    } else {
        LMC_ASSERT(err.msg[0] != 0 && st.n_tensors == 0 && st.tensors == NULL);
    }
    lmc_st_free(&st);
    (void)sink;
    free(buf);
    return 0;
}
