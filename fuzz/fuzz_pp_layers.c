/* fuzz_pp_layers.c — libFuzzer target: --pp-layers text through
 * lmc_pp_split_parse. The first bytes choose the layers (1..64), stages
 * (1..8) and chunks (1..4); the rest is the text (NUL-terminated copy). A
 * parsed split must cut the layers into P x V non-empty chunks in order;
 * a refused one must say why, naming --pp-layers. */
#include "dist/pp_split.h"
#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int64_t L = 1 + data[0] % 64;
    int P = 1 + data[1] % 8, V = 1 + data[2] % 4, K = P * V;
    char *text = malloc(size - 2);
    if (!text) return 0;
    memcpy(text, data + 3, size - 3);
    text[size - 3] = 0;
    int64_t bounds[33];
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_pp_split_parse(text, L, P, V, bounds, &err) == LMC_OK) {
        LMC_ASSERT(bounds[0] == 0 && bounds[K] == L);
        for (int k = 0; k < K; k++) LMC_ASSERT(bounds[k + 1] > bounds[k]);
        for (int s = 0; s < P; s++)
            for (int v = 0; v < V; v++) {
                int64_t l0, l1;
                lmc_pp_chunk_layers(bounds, P, V, s, v, &l0, &l1);
                LMC_ASSERT(0 <= l0 && l0 < l1 && l1 <= L);
            }
    } else {
        LMC_ASSERT(err.msg[0] != 0 && strstr(err.msg, "--pp-layers"));
    }
    free(text);
    return 0;
}
