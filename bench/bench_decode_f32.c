/* bench_decode_f32.c — F32 M=1 decode matmuls against the read roofline,
 * measured interleaved in one process.
 *
 * A decode-like sequence of M=1 matmuls over ~400 MB of distinct F32
 * weights (the random 125M Llama's shapes: per layer q 768x768, k/v
 * 256x768, o 768x768, gate/up 2048x768, down 768x2048, x12, then lm_head
 * 32000x768), issued through the CPU backend table as the model issues them
 * (matmul_multi for q/k/v and gate/up, matmul for o, down and lm_head).
 * Right beside each decode pass, a streaming read (the loop of
 * lmc_membw_read_gbs: 2 threads, one contiguous half each) of the same
 * weight memory. The machine's bandwidth drifts minute to minute, so each
 * round runs every (memory kind, kernel variant) once, interleaved, and the
 * report gives per-round ratios decode/read (medians over rounds). The
 * variants' order rotates from round to round (position in a round matters:
 * the first pass after the read ran ~3% slower in early tests).
 *
 * Memory kinds: anon (aligned_alloc, 4 KiB pages here: THP is 'madvise'),
 * huge (anonymous + madvise(MADV_HUGEPAGE)), file (a file written to disk
 * and mmapped read-only, page cache, as the model's safetensors are).
 *
 * usage: bench_decode_f32 [-t threads] [-r rounds] [-v variants e.g. 0,1]
 *                         [-m kinds e.g. anon,huge,file] [-o offset_bytes]
 *                         [-f file] [-g 1] [-d f32|f16]
 * -g 1: each variant also as v1xxxx, with the decode's other ops between the
 * matmuls (see decode_ops).
 * Variants: see the A/B hooks below. */
#include "core/core.h"
#include "core/dtype.h"
#include "core/membw.h"
#include "core/threadpool.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "bench_util.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* A/B hooks: define `int lmc_cpu_mm_f32_variant; int lmc_cpu_mm_pf = 4096;`
 * in src/ops/cpu/matmul.c and switch the M=1 F32 rows on them to compare
 * kernels; without them (weak, NULL) only variant 0 runs. */
extern int lmc_cpu_mm_f32_variant __attribute__((weak));
extern int lmc_cpu_mm_pf __attribute__((weak));

#define LAYERS 12
#define C 768
#define KV 256
#define FF 2048
#define VOCAB 32000
#define MAXV 16
#define MAXK 3
#define MAXR 200

static const int64_t shp[7][2] = {{C, C}, {KV, C}, {KV, C}, {C, C}, {FF, C}, {FF, C}, {C, FF}};

static size_t total_floats(void) {
    size_t n = 0;
    for (int i = 0; i < 7; i++) n += (size_t)(shp[i][0] * shp[i][1]);
    return n * LAYERS + (size_t)VOCAB * C;
}

struct mem {
    const char *kind;
    char *base;   /* mapping */
    size_t len;   /* mapping length */
    const float *w; /* weights start (base + offset) */
    struct lmc_mat m[LAYERS][7], head;
};

static void die(const char *s) {
    perror(s);
    exit(1);
}

static int f16; /* -d f16: F16 weights instead (same shapes, half the bytes) */

static void fill(float *w, size_t n) {
    uint32_t st = 12345;
    for (size_t i = 0; i < n; i++) {
        st = st * 1664525u + 1013904223u;
        w[i] = ((float)(st >> 8) / 16777216.0f - 0.5f) * 0.1f;
    }
}

/* n weights at p, F32 or F16 */
static void fill_w(void *p, size_t n) {
    if (!f16) {
        fill(p, n);
        return;
    }
    float *t = malloc(n * sizeof(float));
    if (!t) die("malloc");
    fill(t, n);
    for (size_t i = 0; i < n; i++) ((uint16_t *)p)[i] = lmc_f32_to_f16(t[i]);
    free(t);
}

static void mem_init(struct mem *mm, const char *kind, size_t off, const char *path) {
    size_t es = f16 ? 2 : 4, n = total_floats(), bytes = n * es + off;
    mm->kind = kind;
    mm->len = (bytes + 4095) & ~(size_t)4095;
    if (!strcmp(kind, "file")) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) die("open");
        char *tmp = malloc(bytes);
        if (!tmp) die("malloc");
        memset(tmp, 0, off);
        fill_w(tmp + off, n);
        for (size_t d = 0; d < bytes;) {
            ssize_t k = write(fd, tmp + d, bytes - d);
            if (k <= 0) die("write");
            d += (size_t)k;
        }
        free(tmp);
        mm->base = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
        if (mm->base == MAP_FAILED) die("mmap file");
        close(fd);
        mm->len = bytes;
    } else {
        mm->base = mmap(NULL, mm->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mm->base == MAP_FAILED) die("mmap anon");
        if (!strcmp(kind, "huge") && madvise(mm->base, mm->len, MADV_HUGEPAGE)) die("madvise");
        fill_w(mm->base + off, n);
    }
    mm->w = (const float *)(mm->base + off);
    const char *p = (const char *)mm->w;
    enum lmc_dtype dt = f16 ? LMC_DTYPE_F16 : LMC_DTYPE_F32;
    for (int l = 0; l < LAYERS; l++)
        for (int i = 0; i < 7; i++) {
            mm->m[l][i] = (struct lmc_mat){dt, shp[i][0], shp[i][1], p};
            p += (size_t)(shp[i][0] * shp[i][1]) * es;
        }
    mm->head = (struct lmc_mat){dt, VOCAB, C, p};
}

struct bufs {
    float x[FF], q[C], k[KV], v[KV], o[C], g[FF], u[FF], d[C], logits[VOCAB];
};

/* -g: also the decode's other ops, as forward.c issues them for a Llama
 * (rmsnorm, rope on q and k, attention over CTX cached positions, residual
 * adds, swiglu), to see what the gaps between matmuls cost */
#define CTX 80
#define HD 64
static float kvc[LAYERS][2][CTX * KV], normw[C], att[C], xres[C];
static int32_t posv[1] = {CTX - 1};
static double invf[HD / 2];

static void decode_ops(const struct lmc_backend *be, const struct mem *mm, struct bufs *b) {
    const float *nb[3] = {NULL, NULL, NULL};
    for (int l = 0; l < LAYERS; l++) {
        be->rmsnorm(be->ctx, b->x, xres, normw, 1, C, 1e-5f);
        const struct lmc_mat *qkv[3] = {&mm->m[l][0], &mm->m[l][1], &mm->m[l][2]};
        float *yqkv[3] = {b->q, kvc[l][0] + (CTX - 1) * KV, kvc[l][1] + (CTX - 1) * KV};
        be->matmul_multi(be->ctx, 3, yqkv, b->x, 1, qkv, nb);
        be->rope(be->ctx, b->q, 1, C / HD, HD, HD, posv, invf, 1.0f);
        be->rope(be->ctx, yqkv[1], 1, KV / HD, HD, HD, posv, invf, 1.0f);
        be->attention(be->ctx, att, b->q, kvc[l][0], kvc[l][1], 1, CTX - 1, C / HD, KV / HD, HD,
                      0.125f, 0);
        be->matmul(be->ctx, b->o, att, 1, &mm->m[l][3], NULL);
        be->add(be->ctx, xres, xres, b->o, C);
        be->rmsnorm(be->ctx, b->x, xres, normw, 1, C, 1e-5f);
        const struct lmc_mat *gu[2] = {&mm->m[l][4], &mm->m[l][5]};
        float *ygu[2] = {b->g, b->u};
        be->matmul_multi(be->ctx, 2, ygu, b->x, 1, gu, nb);
        be->swiglu(be->ctx, b->g, b->g, b->u, FF);
        be->matmul(be->ctx, b->d, b->g, 1, &mm->m[l][6], NULL);
        be->add(be->ctx, xres, xres, b->d, C);
    }
    be->rmsnorm(be->ctx, b->x, xres, normw, 1, C, 1e-5f);
    be->matmul(be->ctx, b->logits, b->x, 1, &mm->head, NULL);
}

static void decode(const struct lmc_backend *be, const struct mem *mm, struct bufs *b) {
    for (int l = 0; l < LAYERS; l++) {
        const struct lmc_mat *qkv[3] = {&mm->m[l][0], &mm->m[l][1], &mm->m[l][2]};
        float *yqkv[3] = {b->q, b->k, b->v};
        const float *nb[3] = {NULL, NULL, NULL};
        be->matmul_multi(be->ctx, 3, yqkv, b->x, 1, qkv, nb);
        be->matmul(be->ctx, b->o, b->x, 1, &mm->m[l][3], NULL);
        const struct lmc_mat *gu[2] = {&mm->m[l][4], &mm->m[l][5]};
        float *ygu[2] = {b->g, b->u};
        be->matmul_multi(be->ctx, 2, ygu, b->x, 1, gu, nb);
        be->matmul(be->ctx, b->d, b->x, 1, &mm->m[l][6], NULL);
    }
    be->matmul(be->ctx, b->logits, b->x, 1, &mm->head, NULL);
}

int main(int argc, char **argv) {
    int threads = 2, rounds = 15, nv = 0, nk = 0, reps = 3, gaps = 0;
    int var[MAXV];
    const char *kinds[MAXK];
    size_t off = 0;
    const char *path = "/tmp/bench_decode_f32.bin";
    char vs[64] = "0", ks[64] = "anon";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-v")) snprintf(vs, sizeof vs, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-m")) snprintf(ks, sizeof ks, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "-o")) off = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) path = argv[i + 1];
        else if (!strcmp(argv[i], "-g")) gaps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-d")) f16 = !strcmp(argv[i + 1], "f16");
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (rounds > MAXR) rounds = MAXR;
    for (char *s = strtok(vs, ","); s && nv < MAXV; s = strtok(NULL, ",")) var[nv++] = atoi(s);
    if (!&lmc_cpu_mm_f32_variant && (nv > 1 || var[0] != 0)) {
        fprintf(stderr, "this liblmc has no lmc_cpu_mm_f32_variant hook: variant 0 only\n");
        nv = 1;
        var[0] = 0;
    }
    if (gaps) { /* each variant twice: matmuls only, then with the other ops (code + 10000) */
        int n0 = nv;
        for (int v = 0; v < n0 && nv < MAXV; v++) var[nv++] = var[v] + 10000;
        for (int i = 0; i < C; i++) normw[i] = 1, xres[i] = (float)(i % 7) * 0.1f;
        for (int i = 0; i < HD / 2; i++) invf[i] = pow(10000.0, -2.0 * i / HD);
        fill(&kvc[0][0][0], sizeof kvc / sizeof(float));
    }
    static char kbuf[64];
    snprintf(kbuf, sizeof kbuf, "%s", ks);
    for (char *s = strtok(kbuf, ","); s && nk < MAXK; s = strtok(NULL, ",")) kinds[nk++] = s;

    lmc_err e;
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &e) != LMC_OK) die("backend");
    struct lmc_cpu_ctx *cc = be.ctx;
    struct mem mm[MAXK];
    for (int k = 0; k < nk; k++) mem_init(&mm[k], kinds[k], off, path);
    size_t n = total_floats() / (f16 ? 2 : 1); /* the weights' size in floats, for the read */
    double gb = (double)n * sizeof(float) * 1e-9;
    static struct bufs b;
    fill(b.x, FF);
    printf("weights %.1f MB, offset %zu, %d threads, %d rounds x best of %d passes\n", gb * 1e3, off,
           threads, rounds, reps);
    double ref0 = lmc_membw_read_gbs(cc->pool, 1u << 30);

    static double dec[MAXK][MAXV][MAXR], rdv[MAXK][MAXR];
    for (int k = 0; k < nk; k++) { /* warm-up: fault everything in */
        lmc_membw_read_pass(cc->pool, mm[k].w, n);
        decode(&be, &mm[k], &b);
    }
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < nk; k++) {
            /* from the first 64-byte boundary: the read measures the memory, not split loads */
            size_t a = (size_t)(-(uintptr_t)mm[k].w & 63) / sizeof(float);
            double best = 1e30;
            for (int p = 0; p < reps; p++)
                best = LMC_MIN(best, lmc_membw_read_pass(cc->pool, mm[k].w + a, n - a));
            rdv[k][r] = gb / best;
            for (int vi = 0; vi < nv; vi++) { /* order rotates per round */
                int v = (vi + r) % nv;
                /* variant 100 * a + b: variant a with prefetch distance b * 256 bytes */
                int vv = var[v] % 10000;
                if (&lmc_cpu_mm_f32_variant) lmc_cpu_mm_f32_variant = vv >= 100 ? vv / 100 : vv;
                if (&lmc_cpu_mm_pf) lmc_cpu_mm_pf = vv >= 100 ? vv % 100 * 256 : 4096;
                best = 1e30;
                for (int p = 0; p < reps; p++) {
                    double t0 = lmc_time_now();
                    if (var[v] >= 10000) decode_ops(&be, &mm[k], &b);
                    else decode(&be, &mm[k], &b);
                    best = LMC_MIN(best, lmc_time_now() - t0);
                }
                dec[k][v][r] = gb / best;
            }
        }
    double ref1 = lmc_membw_read_gbs(cc->pool, 1u << 30);
    printf("lmc_membw_read_gbs (1 GB, own buffer) before / after: %.1f / %.1f GB/s\n", ref0, ref1);
    printf("%-5s %-8s %12s %12s %16s %16s\n", "mem", "variant", "read GB/s", "decode GB/s",
           "dec/read median", "dec/read range");
    for (int k = 0; k < nk; k++) {
        printf("%-5s %-8s %12.1f\n", kinds[k], "read", bench_median(rdv[k], rounds));
        for (int v = 0; v < nv; v++) {
            double ratio[MAXR], lo = 1e9, hi = 0;
            for (int r = 0; r < rounds; r++) {
                ratio[r] = dec[k][v][r] / rdv[k][r];
                lo = LMC_MIN(lo, ratio[r]);
                hi = LMC_MAX(hi, ratio[r]);
            }
            printf("%-5s v%-7d %12s %12.1f %15.1f%% %8.0f-%.0f%%\n", kinds[k], var[v], "",
                   bench_median(dec[k][v], rounds), 100 * bench_median(ratio, rounds), 100 * lo, 100 * hi);
        }
    }
    /* same-round pairwise: each variant against the first one */
    for (int k = 0; k < nk; k++)
        for (int v = 1; v < nv; v++) {
            double ratio[MAXR];
            for (int r = 0; r < rounds; r++) ratio[r] = dec[k][v][r] / dec[k][0][r];
            int wins = 0;
            for (int r = 0; r < rounds; r++) wins += ratio[r] > 1;
            printf("%s: v%d / v%d same round: median %.1f%%, faster in %d of %d rounds\n", kinds[k],
                   var[v], var[0], 100 * bench_median(ratio, rounds), wins, rounds);
        }
    /* cross-kind: each kind's read against the first kind's read, per round */
    for (int k = 1; k < nk; k++) {
        double ratio[MAXR];
        for (int r = 0; r < rounds; r++) ratio[r] = rdv[k][r] / rdv[0][r];
        printf("read %s / read %s: median %.1f%%\n", kinds[k], kinds[0], 100 * bench_median(ratio, rounds));
    }
    float chk = 0;
    for (int i = 0; i < VOCAB; i++) chk += b.logits[i];
    printf("(checksum %g)\n", chk);
    for (int k = 0; k < nk; k++) munmap(mm[k].base, mm[k].len);
    for (int k = 0; k < nk; k++)
        if (!strcmp(kinds[k], "file")) unlink(path);
    lmc_backend_cpu_free(&be);
    return 0;
}
