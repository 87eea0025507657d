/* status.c — lmc_status names, error-message formatting, the assert hook. */
#include "lmc.h"
#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lmc_status_str(lmc_status s) {
    switch (s) {
    case LMC_OK: return "ok";
    case LMC_ERR_ARG: return "invalid argument";
    case LMC_ERR_IO: return "I/O error";
    case LMC_ERR_FORMAT: return "malformed input";
    case LMC_ERR_UNSUPPORTED: return "unsupported";
    case LMC_ERR_OOM: return "out of memory";
    case LMC_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

lmc_status lmc_err_set(lmc_err *e, lmc_status s, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->status = s;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

lmc_status lmc_err_prefix(lmc_err *e, const char *fmt, ...) {
    if (!e) return LMC_ERR_INTERNAL;
    char head[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    size_t hl = strlen(head);
    if (hl >= sizeof e->msg) hl = sizeof e->msg - 1;
    memcpy(e->msg, head, hl);
    size_t ol = strlen(old);
    if (ol > sizeof e->msg - 1 - hl) ol = sizeof e->msg - 1 - hl;
    memcpy(e->msg + hl, old, ol);
    e->msg[hl + ol] = 0;
    return e->status;
}

/* The one process-wide hook: what a broken invariant does. Replaceable so
 * fuzzers and tests can trap it; not part of any model state. */
static lmc_abort_fn abort_hook = NULL;

void lmc_set_abort_hook(lmc_abort_fn fn) { abort_hook = fn; }

void lmc_assert_fail(const char *cond, const char *file, int line) {
    if (abort_hook) abort_hook(cond, file, line);
    fprintf(stderr, "lmc: assertion failed: %s (%s:%d)\n", cond, file, line);
    abort();
}
