/* harness_batch.h — the fixed batch source of the training tests
 * (test_train_mem, test_lora_train, test_qlora): a B x T micro-batch of
 * inputs and targets handed to lmc_train_opts.next_batch unchanged every
 * step (no packing segments), the reference ids a fixture's JSON holds as
 * rows of numbers, and the batch of a fixture's LoRA training reference
 * (lora_train/ref.json). Header-only (static inline), like the tests'
 * other helpers: each test is one program. */
#ifndef LMC_TEST_HARNESS_BATCH_H
#define LMC_TEST_HARNESS_BATCH_H

#include "core/core.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
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

/* DIR/ref.json (a fixture's lora_train folder: B, T, inputs, targets):
 * the parsed JSON, the caller's to cJSON_Delete, with *b made and filled
 * with its B x T ids; NULL with the reason in err when the file cannot be
 * read or parsed or holds fewer ids. */
static inline cJSON *harness_batch_ref(const char *dir, struct harness_batch *b, int64_t *B, int64_t *T,
                                       lmc_err *err) {
    char path[1200];
    char *text;
    snprintf(path, sizeof path, "%s/ref.json", dir);
    if (lmc_file_read(path, 1 << 24, &text, NULL, err)) return NULL;
    cJSON *ref = cJSON_Parse(text);
    free(text);
    const cJSON *jb = cJSON_GetObjectItem(ref, "B"), *jt = cJSON_GetObjectItem(ref, "T");
    if (!cJSON_IsNumber(jb) || !cJSON_IsNumber(jt)) {
        cJSON_Delete(ref);
        lmc_err_set(err, LMC_ERR_FORMAT, "%s: no B and T", path);
        return NULL;
    }
    *B = (int64_t)jb->valuedouble, *T = (int64_t)jt->valuedouble;
    *b = harness_batch_make(*B * *T);
    if (harness_read_ids(cJSON_GetObjectItem(ref, "inputs"), b->in, b->n) != b->n ||
        harness_read_ids(cJSON_GetObjectItem(ref, "targets"), b->tg, b->n) != b->n) {
        harness_batch_free(b);
        cJSON_Delete(ref);
        lmc_err_set(err, LMC_ERR_FORMAT, "%s: fewer than B x T = %lld inputs or targets", path, (long long)(*B * *T));
        return NULL;
    }
    return ref;
}

#endif
