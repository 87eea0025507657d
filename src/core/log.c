/* log.c — stderr logging and the monotonic clock. */
#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

double lmc_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void lmc_log(int level, const char *fmt, ...) {
    static const char *tags[] = {"error", "info", "debug"};
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lmc %s: ", tags[level < 0 ? 0 : level > 2 ? 2 : level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
