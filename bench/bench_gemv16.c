/* bench_gemv16.c — F16/BF16 GEMV (M = 1, and small M) against the machine's
 * streaming-read bandwidth, per shape, in one process.
 *
 * 1. Streaming read (lmc_membw_read_pass's loop) of the weight region at 1
 *    thread and at the bench's thread count: the roofline.
 * 2. For each shape (N x K) and dtype: y = x @ W^T through the CPU backend's
 *    matmul (M rows of x), over enough distinct copies of W that the set
 *    outruns the last-level cache (>= REGION bytes), one call per copy as a
 *    decode issues them; GB/s = weight bytes / time. Best of REPS passes.
 * Rounds interleave the read and every (shape, dtype, M, variant), the
 * order rotating per round; medians over rounds, and each GEMV's median
 * ratio to the same round's 2-thread read.
 * The weights are a file mmapped read-only (page cache), as a GGUF or
 * safetensors model is, or anonymous memory (-m anon).
 *
 * usage: bench_gemv16 [-t threads 2] [-r rounds 5] [-n reps 3] [-M 1,2,4,8]
 *                     [-d f16,bf16] [-s shapes: all | moe | 125m | 1b | kjv]
 *                     [-m file|anon] [-f path] [-v variants e.g. 0,1]
 *                     [-R region MB, 256; e.g. 1 for weights the L2 holds]
 *                     [-c 1: process CPU time, not wall time, for the reads too]
 *                     [-S n: ctx mm_small_max (0: the small-M kernel off, M = 1 short rows too)]
 * Variants: a weak A/B hook `int lmc_cpu_gemv_variant` (defined only in a
 * build that has one; otherwise variant 0 only). */
#include "core/core.h"
#include "core/dtype.h"
#include "core/membw.h"
#include "core/threadpool.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "bench_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

extern int lmc_cpu_gemv_variant __attribute__((weak));

static size_t REGION = (size_t)256 << 20; /* -R MB: smaller regions measure cache-resident compute */
#define MAXR 64
#define MAXJ 96

struct shape {
    const char *set, *name;
    int64_t N, K;
};
static const struct shape shapes[] = {
    {"125m", "q/o 768x768", 768, 768},        {"125m", "gate 2048x768", 2048, 768},
    {"125m", "down 768x2048", 768, 2048},     {"125m", "head 32000x768", 32000, 768},
    {"1b", "q/o 2048x2048", 2048, 2048},      {"1b", "gate 5632x2048", 5632, 2048},
    {"1b", "down 2048x5632", 2048, 5632},     {"1b", "head 32000x2048", 32000, 2048},
    {"moe", "q/o 1024x1024", 1024, 1024},     {"moe", "kv 256x1024", 256, 1024},
    {"moe", "expert 2816x1024", 2816, 1024},  {"moe", "expert down 1024x2816", 1024, 2816},
    {"moe", "head 32000x1024", 32000, 1024},
    {"kjv", "q/o 576x576", 576, 576},         {"kjv", "gate 1536x576", 1536, 576},
    {"kjv", "down 576x1536", 576, 1536},      {"kjv", "head 8192x576", 8192, 576},
    {"l2", "256x1024", 256, 1024},            {"l2", "128x2816", 128, 2816},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

struct job {
    int s, M, var;
    enum lmc_dtype dt;
    double gbs[MAXR], ratio[MAXR];
};

static void die(const char *s) {
    perror(s);
    exit(1);
}

/* values near N(0, 0.05) whose bits are finite, normal numbers as F16 and as BF16 */
static void fill(uint16_t *w, size_t n) {
    uint32_t st = 12345;
    for (size_t i = 0; i < n; i++) {
        st = st * 1664525u + 1013904223u;
        float f = ((float)(st >> 8) / 16777216.0f - 0.5f) * 0.1f;
        w[i] = lmc_f32_to_f16(f == 0 ? 0.01f : f);
    }
}

static char *region(const char *kind, const char *path) {
    char *p;
    if (!strcmp(kind, "file")) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) die("open");
        uint16_t *tmp = malloc(REGION);
        if (!tmp) die("malloc");
        fill(tmp, REGION / 2);
        for (size_t d = 0; d < REGION;) {
            ssize_t k = write(fd, (char *)tmp + d, REGION - d);
            if (k <= 0) die("write");
            d += (size_t)k;
        }
        free(tmp);
        p = mmap(NULL, REGION, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        unlink(path);
    } else {
        p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) fill((uint16_t *)p, REGION / 2);
    }
    if (p == MAP_FAILED) die("mmap");
    return p;
}

/* one pass: the matmul on every copy of the shape in the region; seconds */
/* -c 1: process CPU time instead of wall time (a loaded machine: what the
 * work costs while it runs, not how long others kept it waiting; with more
 * than one thread it includes the pool's spinning) */
static int cpu_clock;
static double now(void) { return cpu_clock ? bench_cpu() : lmc_time_now(); }

static double pass(const struct lmc_backend *be, const char *base, const struct shape *s, enum lmc_dtype dt,
                   int M, const float *x, float *y, double *bytes) {
    size_t mb = (size_t)(s->N * s->K) * 2, copies = REGION / mb;
    if (copies < 1) copies = 1;
    double t0 = now();
    size_t calls = copies, min_bytes = (size_t)64 << 20; /* a cache-resident region: repeat it */
    while (calls * mb < min_bytes) calls += copies;
    for (size_t c = 0; c < calls; c++) {
        struct lmc_mat w = {dt, s->N, s->K, base + c % copies * mb};
        be->matmul(be->ctx, y, x, M, &w, NULL);
    }
    *bytes = (double)(calls * mb);
    return now() - t0;
}

int main(int argc, char **argv) {
    int threads = 2, rounds = 5, reps = 3, small_max = -1;
    char ms[64] = "1,2,4,8", ds[64] = "f16,bf16", ss[64] = "all", vs[64] = "0", kind[16] = "file";
    const char *path = "/tmp/bench_gemv16.bin";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-M")) snprintf(ms, sizeof ms, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-d")) snprintf(ds, sizeof ds, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-s")) snprintf(ss, sizeof ss, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-v")) snprintf(vs, sizeof vs, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-m")) snprintf(kind, sizeof kind, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) path = argv[i + 1];
        else if (!strcmp(argv[i], "-c")) cpu_clock = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-S")) small_max = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-R")) REGION = (size_t)(atof(argv[i + 1]) * 1048576.0);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    REGION = (REGION + 4095) & ~(size_t)4095;
    if (rounds > MAXR) rounds = MAXR;
    if (rounds < 1) rounds = 1;
    int Ms[16], nM = 0, vars[16], nv = 0;
    enum lmc_dtype dts[2];
    int nd = 0;
    for (char *t = strtok(ms, ","); t && nM < 16; t = strtok(NULL, ",")) Ms[nM++] = atoi(t);
    for (char *t = strtok(vs, ","); t && nv < 16; t = strtok(NULL, ",")) vars[nv++] = atoi(t);
    for (char *t = strtok(ds, ","); t && nd < 2; t = strtok(NULL, ","))
        dts[nd++] = !strcmp(t, "bf16") ? LMC_DTYPE_BF16 : LMC_DTYPE_F16;
    if (!&lmc_cpu_gemv_variant && (nv > 1 || vars[0] != 0)) {
        fprintf(stderr, "this liblmc has no lmc_cpu_gemv_variant hook: variant 0 only\n");
        nv = 1, vars[0] = 0;
    }
    static struct job jobs[MAXJ];
    int nj = 0;
    for (int s = 0; s < NSHAPES; s++) {
        if (strcmp(ss, "all") && strcmp(ss, shapes[s].set)) continue;
        for (int d = 0; d < nd; d++)
            for (int m = 0; m < nM; m++)
                for (int v = 0; v < nv && nj < MAXJ; v++) jobs[nj++] = (struct job){s, Ms[m], vars[v], dts[d], {0}, {0}};
    }

    lmc_err e;
    struct lmc_backend be, be1;
    if (lmc_backend_cpu_init(&be, threads, &e) != LMC_OK) die("backend");
    if (lmc_backend_cpu_init(&be1, 1, &e) != LMC_OK) die("backend");
    struct lmc_cpu_ctx *cc = be.ctx, *c1 = be1.ctx;
    if (small_max >= 0) cc->mm_small_max = c1->mm_small_max = small_max;
    char *base = region(kind, path);
    float *x = malloc(8 * 32000 * sizeof(float)), *y = malloc(8 * 32000 * sizeof(float));
    if (!x || !y) die("malloc");
    for (int i = 0; i < 8 * 32000; i++) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    size_t nf = REGION / sizeof(float);
    static double rd1[MAXR], rd2[MAXR];
    lmc_membw_read_pass(cc->pool, (const float *)base, nf); /* fault in */
    printf("# bench_gemv16: %s weights, %zu MB region, %d threads, %d rounds x best of %d, load %s", kind,
           REGION >> 20, threads, rounds, reps, "");
    FILE *la = fopen("/proc/loadavg", "r");
    char lbuf[64] = "?";
    if (la) {
        if (!fgets(lbuf, sizeof lbuf, la)) lbuf[0] = 0;
        fclose(la);
    }
    printf("%s", lbuf);
    for (int r = 0; r < rounds; r++) {
        double b1 = 1e30, b2 = 1e30;
        for (int p = 0; p < reps; p++) {
            double t0 = now();
            double w1 = lmc_membw_read_pass(c1->pool, (const float *)base, nf), t1 = now();
            double w2 = lmc_membw_read_pass(cc->pool, (const float *)base, nf), t2 = now();
            b1 = LMC_MIN(b1, cpu_clock ? t1 - t0 : w1);
            b2 = LMC_MIN(b2, cpu_clock ? t2 - t1 : w2);
        }
        rd1[r] = (double)REGION / b1 * 1e-9;
        rd2[r] = (double)REGION / b2 * 1e-9;
        for (int jj = 0; jj < nj; jj++) {
            struct job *j = &jobs[(jj + r) % nj];
            if (&lmc_cpu_gemv_variant) lmc_cpu_gemv_variant = j->var;
            double best = 1e30, bytes = 0;
            for (int p = 0; p < reps; p++)
                best = LMC_MIN(best, pass(&be, base, &shapes[j->s], j->dt, j->M, x, y, &bytes));
            j->gbs[r] = bytes / best * 1e-9;
            j->ratio[r] = j->gbs[r] / rd2[r];
        }
    }
    printf("read 1 thread: %.1f GB/s, %d threads: %.1f GB/s (medians; rounds 2t:", bench_median(rd1, rounds), threads,
           bench_median(rd2, rounds));
    for (int r = 0; r < rounds; r++) printf(" %.1f", rd2[r]);
    printf(")\n\n| shape | dtype | M | variant | GB/s (bench_median) | of the 2-thread read (bench_median, min-max) |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int jj = 0; jj < nj; jj++) {
        const struct job *j = &jobs[jj];
        double lo = 1e9, hi = 0;
        for (int r = 0; r < rounds; r++) lo = LMC_MIN(lo, j->ratio[r]), hi = LMC_MAX(hi, j->ratio[r]);
        printf("| %s | %s | %d | %d | %.1f | %.0f%% (%.0f-%.0f%%) |\n", shapes[j->s].name,
               j->dt == LMC_DTYPE_BF16 ? "bf16" : "f16", j->M, j->var, bench_median(j->gbs, rounds),
               100 * bench_median(j->ratio, rounds), 100 * lo, 100 * hi);
    }
    double chk = 0;
    for (int i = 0; i < 64; i++) chk += y[i];
    printf("\n(checksum %g)\n", chk);
    munmap(base, REGION);
    free(x);
    free(y);
    lmc_backend_cpu_free(&be);
    lmc_backend_cpu_free(&be1);
    return 0;
}
