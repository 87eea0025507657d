/* harness_batch.h — the fixed batch source of the training tests
 * (test_train_mem, test_lora_train, test_qlora): a B x T micro-batch of
 * inputs and targets handed to lmc_train_opts.next_batch unchanged every
 * step (no packing segments), and the reference ids a fixture's JSON holds
 * as rows of numbers. Header-only (static inline), like the tests' other
 * helpers: each test is one program. */
#ifndef LMC_TEST_HARNESS_BATCH_H
#define LMC_TEST_HARNESS_BATCH_H

#include "core/core.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct harness_batch {
    int32_t *in, *tg; /* n tokens each */
    int64_t n;
};

static inline struct harness_batch harness_batch_make(int64_t n) {
    struct harness_batch b = {malloc(sizeof(int32_t) * (size_t)n), malloc(sizeof(int32_t) * (size_t)n), n};
    return b;
}

static inline void harness_batch_free(struct harness_batch *b) {
    free(b->in), free(b->tg);
    b->in = b->tg = NULL;
}

/* lmc_train_opts.next_batch with batch_user a struct harness_batch. */
static inline lmc_status harness_batch_next(void *user, int32_t *in, int32_t *tg, const int64_t **segs,
                                            int64_t *n_segs, lmc_err *err) {
    (void)err;
    *segs = NULL;
    *n_segs = 0;
    const struct harness_batch *b = user;
    memcpy(in, b->in, (size_t)b->n * sizeof *in);
    memcpy(tg, b->tg, (size_t)b->n * sizeof *tg);
    return LMC_OK;
}

/* The ids of an array of rows of numbers, in order, at most cap; returns
 * how many there were (a caller checks it against cap). */
static inline int64_t harness_read_ids(const cJSON *rows, int32_t *out, int64_t cap) {
    int64_t n = 0;
    const cJSON *row, *v;
    cJSON_ArrayForEach(row, rows) cJSON_ArrayForEach(v, row) if (n < cap) out[n++] = (int32_t)v->valuedouble;
    return n;
}

#endif
