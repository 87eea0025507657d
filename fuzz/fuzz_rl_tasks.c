/* fuzz_rl_tasks.c — libFuzzer target: arbitrary bytes through the RL task
 * parser (lmc_rl_tasks_parse) and the reward's answer extraction and
 * number parsing (every mode, a fixed regex); parsed tasks have a prompt or
 * messages (not both), an error always a message. */
#include "core/core.h"
#include "train/reward.h"
#include "train/rl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    buf[size] = 0;
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_rl_task *t;
    int64_t n;
    if (lmc_rl_tasks_parse(buf, size, "fuzz.jsonl", &t, &n, &err) == LMC_OK) {
        LMC_ASSERT(n > 0);
        for (int64_t i = 0; i < n; i++) LMC_ASSERT((t[i].prompt != NULL) != (t[i].messages != NULL));
        lmc_rl_tasks_free(t, n);
    } else {
        LMC_ASSERT(err.msg[0] != 0);
    }
    char out[64];
    lmc_status st;
    for (int mode = 0; mode <= LMC_EXTRACT_LAST_NUMBER; mode++) {
        if (lmc_reward_extract(buf, (enum lmc_extract)mode, "<a>([^<]*)</a>", out, sizeof out, &st, &err))
            LMC_ASSERT(memchr(out, 0, sizeof out) != NULL);
        LMC_ASSERT(st == LMC_OK);
        (void)lmc_reward_match(out, buf);
    }
    double v;
    (void)lmc_reward_parse_number(buf, &v);
    (void)lmc_reward_format(buf, "<answer>", "</answer>");
    free(buf);
    return 0;
}
