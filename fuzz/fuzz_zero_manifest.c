/* fuzz_zero_manifest.c — libFuzzer target: arbitrary bytes through
 * lmc_zero_manifest_parse (the sharded ZeRO checkpoint's manifest); a
 * parsed manifest must satisfy the invariants loading relies on. */
#include "dist/zero_internal.h"
#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1); /* exact size, not NUL-terminated */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_zero_manifest m;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_zero_manifest_parse(buf, size, "fuzz/zero-manifest.json", &m, &err) == LMC_OK) {
        LMC_ASSERT(m.world >= 1 && m.stage >= 0 && m.stage <= 3 && m.step >= 0 && m.n_units >= 1 && m.unit_n);
        int64_t total = 0;
        for (int u = 0; u < m.n_units; u++) {
            LMC_ASSERT(m.unit_n[u] >= 1);
            total += m.unit_n[u];
        }
        LMC_ASSERT(total == m.numel);
        lmc_zero_manifest_free(&m);
    } else {
        LMC_ASSERT(err.msg[0] != 0);
    }
    free(buf);
    return 0;
}
