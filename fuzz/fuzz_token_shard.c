/* fuzz_token_shard.c — libFuzzer target: arbitrary bytes through
 * lmc_shard_parse; on success the header's promises are checked (exact file
 * size, ids below vocab_size) by reading the shard through a one-shard
 * split and the window loader, so ASan proves every read in bounds. */
#include "core/core.h"
#include "train/data.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1); /* exact size: overreads are caught */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_shard_header h;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_shard_parse(&h, buf, size, "fuzz.bin", &err) == LMC_OK) {
        LMC_ASSERT(h.dtype == 2 || h.dtype == 4);
        LMC_ASSERT(LMC_SHARD_HEADER_BYTES + h.n_tokens * h.dtype == size);
        struct lmc_shard sh = {.path = "fuzz.bin", .map = buf, .size = size, .h = h, .start = 0};
        struct lmc_token_data d = {.shards = &sh, .n_shards = 1, .n_tokens = h.n_tokens, .n_docs = h.n_docs,
                                   .vocab_size = h.vocab_size, .eos_id = h.eos_id};
        int32_t out[2 * 8];
        for (uint64_t i = 0; i < h.n_tokens; i++) {
            lmc_token_data_read(&d, i, 1, out);
            LMC_ASSERT(out[0] >= 0 && (uint32_t)out[0] < h.vocab_size);
        }
        struct lmc_loader l;
        int64_t T = h.n_tokens > 8 ? 7 : (int64_t)h.n_tokens - 1;
        if (T >= 1 && lmc_loader_init(&l, &d, 2, T, size, true, &err) == LMC_OK) {
            for (int s = 0; s < 4; s++) {
                lmc_loader_next(&l, out);
                for (int64_t i = 0; i < 2 * (T + 1); i++) LMC_ASSERT((uint32_t)out[i] < h.vocab_size);
            }
            lmc_loader_free(&l);
        }
    } else {
        LMC_ASSERT(err.msg[0] != 0 && strstr(err.msg, "fuzz.bin"));
    }
    free(buf);
    return 0;
}
