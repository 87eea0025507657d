/* model_fixture.h — the tests' common opening of a model folder on the
 * CPU: its weights (lmc_model_load with opts, NULL for the defaults), its
 * tokenizer when asked for, and a CPU backend of n threads; and the
 * matching close. */
#ifndef LMC_TEST_MODEL_FIXTURE_H
#define LMC_TEST_MODEL_FIXTURE_H

#include "model/model.h"
#include "ops/backend.h"
#include "tokenizer/tokenizer.h"
#include "test.h"

#include <stdbool.h>

/* Opens dir into m and be (and *tok when tok is not NULL). On failure it
 * records a failed check naming dir and the error, frees what it opened,
 * and returns false. */
static inline bool fixture_open_cpu(struct lmc_model *m, struct lmc_backend *be, struct lmc_tokenizer **tok,
                                    const char *dir, const struct lmc_model_opts *mo, int threads) {
    lmc_err err = {0};
    if (tok) *tok = NULL;
    if (lmc_model_load(m, dir, mo, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        return false;
    }
    if ((tok && lmc_tokenizer_load(tok, dir, &err)) || lmc_backend_cpu_init(be, threads, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        if (tok) lmc_tokenizer_free(*tok), *tok = NULL;
        lmc_model_free(m);
        return false;
    }
    return true;
}

/* Closes what fixture_open_cpu opened (tok may be NULL). */
static inline void fixture_close_cpu(struct lmc_model *m, struct lmc_backend *be, struct lmc_tokenizer *tok) {
    lmc_backend_cpu_free(be);
    if (tok) lmc_tokenizer_free(tok);
    lmc_model_free(m);
}

#endif
