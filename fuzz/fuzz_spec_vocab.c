/* fuzz_spec_vocab.c — libFuzzer target: arbitrary bytes through
 * lmc_spec_vocab_parse (the draft vocabulary ranking, spec_vocab.c) for a
 * few vocabulary sizes and counts; on success every id is in range and
 * distinct and no more than asked for came back; on failure there is a
 * message. The input is copied to an exact-size buffer (overreads are
 * caught by ASan). */
#include "core/core.h"
#include "infer/spec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    static const int64_t Vs[3] = {1, 300, 70000}, ns[3] = {0, 5, 70000};
    int32_t *ids = malloc(70000 * sizeof *ids);
    uint8_t *seen = malloc(70000);
    for (int a = 0; a < 3 && ids && seen; a++)
        for (int b = 0; b < 3; b++) {
            lmc_err err;
            memset(&err, 0, sizeof err);
            int64_t got = -1;
            lmc_status st = lmc_spec_vocab_parse(buf, size, Vs[a], ns[b], ids, &got, &err);
            if (st == LMC_OK) {
                LMC_ASSERT(got >= 0 && got <= ns[b]);
                memset(seen, 0, 70000);
                for (int64_t i = 0; i < got; i++) {
                    LMC_ASSERT(ids[i] >= 0 && ids[i] < Vs[a] && !seen[ids[i]]);
                    seen[ids[i]] = 1;
                }
            } else {
                LMC_ASSERT(err.msg[0] != 0 && got == 0);
            }
        }
    free(ids);
    free(seen);
    free(buf);
    return 0;
}
