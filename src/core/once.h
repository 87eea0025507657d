/* once.h — a process-wide yes/no answer asked once: the CPU-feature and
 * OS-grant probes of the AMX paths (ops/cpu/gemm_amx.c, quant/
 * qmatmul_amx.c). The answer lives in the caller's static int (0 not
 * asked yet, 1 no, 2 yes), published with release/acquire; racing first
 * callers each run the probe and store the same answer, so the probe must
 * be idempotent. */
#ifndef LMC_ONCE_H
#define LMC_ONCE_H

#include <stdbool.h>

static inline bool lmc_once_bool(int *state, bool (*probe)(void)) {
    int s = __atomic_load_n(state, __ATOMIC_ACQUIRE);
    if (s == 0) {
        s = probe() ? 2 : 1;
        __atomic_store_n(state, s, __ATOMIC_RELEASE);
    }
    return s == 2;
}

#endif
