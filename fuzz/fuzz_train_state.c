/* fuzz_train_state.c — libFuzzer target: arbitrary bytes through
 * lmc_train_state_parse (a checkpoint's trainer_state.json); a parsed state
 * must satisfy the documented ranges of the fields it says are present. */
#include "core/core.h"
#include "train/checkpoint.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1); /* exact size, not NUL-terminated */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_train_state st;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_train_state_parse(buf, size, "fuzz/trainer_state.json", &st, &err) == LMC_OK) {
        const struct lmc_train_opts *o = &st.o;
        LMC_ASSERT(st.step >= -1 && st.epoch >= -1 && st.index >= -1);
        LMC_ASSERT((st.step >= 0) == !!(st.have & LMC_TSTATE_STEP));
        LMC_ASSERT(!(st.have & LMC_TOPT_BATCH) || o->B >= 1);
        LMC_ASSERT(!(st.have & LMC_TOPT_SEQ) || o->T >= 1);
        LMC_ASSERT(!(st.have & LMC_TOPT_ACCUM) || o->accum >= 1);
        LMC_ASSERT(!(st.have & LMC_TOPT_STEPS) || o->sched.total >= 1);
        LMC_ASSERT(!(st.have & LMC_TOPT_WARMUP) || o->sched.warmup >= 0);
        LMC_ASSERT(!(st.have & LMC_TOPT_SCHED) || (unsigned)o->sched.kind <= LMC_SCHED_WSD);
        LMC_ASSERT(isfinite(o->sched.lr_max) && isfinite(o->adamw.beta1) && isfinite(o->clip));
        lmc_err e2;
        memset(&e2, 0, sizeof e2);
        LMC_ASSERT(!(st.have & LMC_TOPT_OPTIM) || lmc_optim_cfg_check(&o->optim, &e2) == LMC_OK);
    } else {
        LMC_ASSERT(err.msg[0] != 0);
    }
    free(buf);
    return 0;
}
