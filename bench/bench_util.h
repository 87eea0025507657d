/* bench_util.h — the small helpers every bench program needs (static
 * inline, header only): clocks in seconds (wall, the process's CPU, the
 * calling thread's CPU, any clock id), the double comparison for qsort,
 * medians (of a copy: the caller's array keeps its order; even counts
 * take the mean of the middle two, or the upper one where a bench always
 * reported that), and the process's peak resident memory. */
#ifndef LMC_BENCH_UTIL_H
#define LMC_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_clock(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static inline double bench_wall(void) { return bench_clock(CLOCK_MONOTONIC); }
static inline double bench_cpu(void) { return bench_clock(CLOCK_PROCESS_CPUTIME_ID); } /* every thread */
static inline double bench_thread_cpu(void) { return bench_clock(CLOCK_THREAD_CPUTIME_ID); }

/* qsort order of doubles (ascending) */
static inline int bench_cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median_of(const double *v, int64_t n, int upper) {
    if (n <= 0) return 0;
    double *t = malloc((size_t)n * sizeof *t);
    if (!t) abort();
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, bench_cmpd);
    double m = n % 2 || upper ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return m;
}
/* the median of v (n): the mean of the middle two for even n */
static inline double bench_median(const double *v, int64_t n) { return bench_median_of(v, n, 0); }
/* the upper median: element n / 2 of v sorted */
static inline double bench_median_upper(const double *v, int64_t n) { return bench_median_of(v, n, 1); }

/* VmHWM of /proc/self/status in KiB (-1 where it cannot be read) */
static inline long bench_vm_hwm_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

#endif
