/* dtype.c — element sizes and safetensors names. */
#include "core/dtype.h"

#include <string.h>

static const struct { const char *name; int size; } dtypes[LMC_DTYPE_COUNT] = {
    [LMC_DTYPE_F32] = {"F32", 4},  [LMC_DTYPE_F16] = {"F16", 2}, [LMC_DTYPE_BF16] = {"BF16", 2},
    [LMC_DTYPE_F64] = {"F64", 8},  [LMC_DTYPE_I64] = {"I64", 8}, [LMC_DTYPE_I32] = {"I32", 4},
    [LMC_DTYPE_I16] = {"I16", 2},  [LMC_DTYPE_I8] = {"I8", 1},   [LMC_DTYPE_U8] = {"U8", 1},
    [LMC_DTYPE_BOOL] = {"BOOL", 1},
};

int lmc_dtype_size(enum lmc_dtype t) {
    return (unsigned)t < LMC_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *lmc_dtype_name(enum lmc_dtype t) {
    return (unsigned)t < LMC_DTYPE_COUNT ? dtypes[t].name : "?";
}

int lmc_dtype_parse(const char *s) {
    for (int i = 0; i < LMC_DTYPE_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) return i;
    return -1;
}
