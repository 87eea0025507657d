/* bench_qmatmul_cuda.c — times the CUDA quantized matmul (ops/cuda/qmatmul.cu)
 * per format on Llama-7B-like shapes (N out x K in): the decode GEMV at
 * batches 1/4/16 against the weight-read roofline (the weight's device
 * bytes / the device-to-device copy bandwidth measured in the same run)
 * and against bf16 dense weights (lmc's own dense path, lmc_cuda_matmul,
 * and cuBLASLt's bf16 GEMM on bf16 activations), then the prefill GEMM at
 * M = 512 against cuBLASLt bf16. Weights are random, quantized on the host
 * and uploaded through the table's qweight_upload; each timed call uses the
 * next of several device copies (at least 256 MiB in all) so that the
 * weights come from DRAM, not L2. Times: medians of 7 runs of back-to-back
 * calls (host clock around a stream sync, >= ~5 ms per run).
 * --dry-run (no GPU needed) prepares the host weights and prints the table
 * with the host bytes and no times: the CPU-side check of this bench.
 * Usage: bench_qmatmul_cuda [--dry-run] [--formats q4_0,q8_0,q4_k,gptq4,nf4,awq4,ternary,q6_k]
 *        [--shapes 4096x4096,11008x4096,4096x11008] [--batches 1,4,16] [--prefill 512] */
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#ifdef LMC_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"
#include "bench_util.h"
#endif

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXL 16

struct opts {
    bool dry;
    char formats[MAXL][16];
    int n_formats;
    int64_t shapes[MAXL][2];
    int n_shapes;
    int64_t batches[MAXL];
    int n_batches;
    int64_t prefill;
};

static const char *known_formats[] = {"q4_0", "q8_0", "q4_k", "gptq4", "nf4", "awq4", "ternary", "q6_k"};

static int parse_list(const char *s, char out[MAXL][16]) {
    int n = 0;
    while (*s && n < MAXL) {
        size_t l = strcspn(s, ",");
        if (l == 0 || l >= 16) return -1;
        memcpy(out[n], s, l);
        out[n++][l] = 0;
        s += l + (s[l] == ',');
    }
    return *s ? -1 : n;
}

static bool parse_args(int argc, char **argv, struct opts *o) {
    memset(o, 0, sizeof *o);
    o->n_formats = parse_list("q4_0,q8_0,q4_k,gptq4,nf4", o->formats);
    int64_t sh[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    memcpy(o->shapes, sh, sizeof sh);
    o->n_shapes = 3;
    int64_t bt[3] = {1, 4, 16};
    memcpy(o->batches, bt, sizeof bt);
    o->n_batches = 3;
    o->prefill = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char list[MAXL][16];
        int n;
        if (!strcmp(a, "--dry-run")) {
            o->dry = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_qmatmul_cuda: %s needs a value (or is unknown)\n", a);
            return false;
        }
        i++;
        if (!strcmp(a, "--formats")) {
            if ((n = parse_list(v, list)) <= 0) goto bad;
            for (int j = 0; j < n; j++) {
                bool ok = false;
                for (size_t k = 0; k < sizeof known_formats / sizeof *known_formats; k++) ok |= !strcmp(list[j], known_formats[k]);
                if (!ok) {
                    fprintf(stderr, "bench_qmatmul_cuda: unknown format '%s'\n", list[j]);
                    return false;
                }
            }
            memcpy(o->formats, list, sizeof list);
            o->n_formats = n;
        } else if (!strcmp(a, "--shapes")) {
            if ((n = parse_list(v, list)) <= 0) goto bad;
            for (int j = 0; j < n; j++) {
                long long N, K;
                char tail;
                if (sscanf(list[j], "%lldx%lld%c", &N, &K, &tail) != 2 || N <= 0 || K <= 0 || N > (1 << 20) ||
                    K > (1 << 20) || K % 256)
                    goto bad; /* K a multiple of 256: whole Q4_K blocks */
                o->shapes[j][0] = N, o->shapes[j][1] = K;
            }
            o->n_shapes = n;
        } else if (!strcmp(a, "--batches")) {
            if ((n = parse_list(v, list)) <= 0) goto bad;
            for (int j = 0; j < n; j++) {
                char *e;
                long long b = strtoll(list[j], &e, 10);
                if (*e || b <= 0 || b > 4096) goto bad;
                o->batches[j] = b;
            }
            o->n_batches = n;
        } else if (!strcmp(a, "--prefill")) {
            char *e;
            long long p = strtoll(v, &e, 10);
            if (*e || p < 0 || p > 65536) goto bad;
            o->prefill = p;
        } else {
            fprintf(stderr, "bench_qmatmul_cuda: unknown option %s\n", a);
            return false;
        }
        continue;
    bad:
        fprintf(stderr, "bench_qmatmul_cuda: bad value '%s' for %s\n", v, a);
        return false;
    }
    return true;
}

static uint64_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}
static float frand(uint64_t *s) { return (float)((rng_next(s) >> 29) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

/* A host weight of format f for (N, K), from random floats. */
struct hostw {
    struct lmc_qweight w;
    void *ggml;   /* GGUF rows the weight borrows */
};

static lmc_status make_weight(const char *f, int64_t N, int64_t K, uint64_t seed, struct hostw *h, lmc_err *err) {
    memset(h, 0, sizeof *h);
    float *w = malloc((size_t)(N * K) * sizeof *w);
    if (!w) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    for (int64_t i = 0; i < N * K; i++) w[i] = frand(&seed) * 0.05f;
    lmc_status s = LMC_OK;
    int type = !strcmp(f, "q4_0") ? LMC_GGML_Q4_0 : !strcmp(f, "q8_0") ? LMC_GGML_Q8_0
               : !strcmp(f, "q4_k") ? LMC_GGML_Q4_K : !strcmp(f, "q6_k") ? LMC_GGML_Q6_K : -1;
    if (type >= 0) {
        int64_t rb;
        if (!lmc_ggml_row_bytes(type, K, &rb) || !(h->ggml = malloc((size_t)(N * rb)))) {
            free(w);
            return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
        }
        for (int64_t n = 0; n < N; n++) lmc_ggml_quantize_row(type, w + n * K, (uint8_t *)h->ggml + n * rb, K);
        s = lmc_qweight_init_ggml(&h->w, type, h->ggml, N, K, err);
    } else if (!strcmp(f, "gptq4") || !strcmp(f, "awq4")) {
        struct lmc_qgroups g;
        s = lmc_quant_rtn(w, N, K, 4, 128, false, &g, err);
        if (!s && !strcmp(f, "gptq4")) { /* act-order: columns in a random order, groups of 128 */
            int32_t *p = malloc((size_t)K * sizeof *p);
            LMC_ASSERT(p != NULL);
            for (int64_t i = 0; i < K; i++) p[i] = (int32_t)i;
            for (int64_t i = K - 1; i > 0; i--) {
                int64_t j = (int64_t)(rng_next(&seed) % (uint64_t)(i + 1));
                int32_t t = p[i];
                p[i] = p[j], p[j] = t;
            }
            for (int64_t i = 0; i < K; i++) g.g_idx[i] = p[i] / 128;
            free(p);
        }
        if (!s) s = lmc_qweight_init_groups(&h->w, &g, err);
        if (g.q) lmc_qgroups_free(&g);
    } else if (!strcmp(f, "nf4")) {
        struct lmc_nf4 q;
        s = lmc_nf4_quantize(w, N * K, &q, err);
        if (!s) {
            s = lmc_qweight_init_nf4(&h->w, &q, N, K, err);
            lmc_nf4_free(&q);
        }
    } else if (!strcmp(f, "ternary")) {
        int8_t *q = malloc((size_t)(N * K));
        LMC_ASSERT(q != NULL);
        float sc = lmc_ternary_quantize(w, N * K, q);
        s = lmc_qweight_init_ternary(&h->w, q, sc, N, K, err);
        free(q);
    } else {
        s = lmc_err_set(err, LMC_ERR_ARG, "unknown format %s", f);
    }
    free(w);
    return s;
}

static void free_weight(struct hostw *h) {
    lmc_qweight_free(&h->w);
    free(h->ggml);
}

static void header(void) {
    printf("%-8s %-12s %-10s %5s %10s %10s %10s %10s %10s %8s %8s %8s\n", "format", "N x K", "layout", "M",
           "MB dev", "roof us", "q us", "bf16 us", "cublas us", "q/roof", "bf16/q", "cubl/q");
}

#ifdef LMC_HAVE_CUDA

/* median seconds per call of fn(i) over runs of `calls` calls */
typedef void (*call_fn)(void *u, int i);
static double time_calls(struct lmc_backend *be, call_fn fn, void *u) {
    for (int i = 0; i < 3; i++) fn(u, i); /* warm-up (plans, scratch) */
    be->sync(be->ctx);
    double t0 = lmc_time_now();
    int calls = 0;
    while (lmc_time_now() - t0 < 2e-3 || calls < 3) {
        fn(u, calls++);
        be->sync(be->ctx);
    }
    double per = (lmc_time_now() - t0) / calls;
    int n = (int)(5e-3 / per) + 1;
    if (n > 2000) n = 2000;
    double t[7];
    for (int r = 0; r < 7; r++) {
        double s = lmc_time_now();
        for (int i = 0; i < n; i++) fn(u, i);
        be->sync(be->ctx);
        t[r] = (lmc_time_now() - s) / n;
    }
    qsort(t, 7, sizeof *t, bench_cmpd);
    return t[3];
}

struct ctx_q {
    struct lmc_backend *be;
    struct lmc_qweight **w;
    int copies;
    float *y;
    const float *x;
    int64_t M;
};
static void call_q(void *u, int i) {
    struct ctx_q *c = u;
    lmc_cuda_qmatmul(c->be->ctx, c->y, c->x, c->M, c->w[i % c->copies], NULL);
}
struct ctx_d {
    struct lmc_backend *be;
    void **w;
    int copies;
    float *y;
    const float *x;
    const void *xb;
    int64_t M, N, K;
    bool cublas;
};
static void call_d(void *u, int i) {
    struct ctx_d *c = u;
    if (c->cublas) {
        lmc_cuda_gemm_bf16(c->be->ctx, c->y, c->xb, c->M, c->w[i % c->copies], c->N, c->K);
    } else {
        struct lmc_mat m = {LMC_DTYPE_BF16, c->N, c->K, c->w[i % c->copies]};
        lmc_cuda_matmul(c->be->ctx, c->y, c->x, c->M, &m, NULL);
    }
}
struct ctx_copy {
    struct lmc_backend *be;
    void *a, *b;
    size_t bytes;
};
static void call_copy(void *u, int i) {
    struct ctx_copy *c = u;
    lmc_cuda_copy_d2d(c->be->ctx, i & 1 ? c->a : c->b, i & 1 ? c->b : c->a, c->bytes);
}

static void *dev_fill(struct lmc_backend *be, size_t bytes, uint64_t seed, bool bf16) {
    size_t n = bf16 ? bytes / 2 : bytes / 4;
    void *h = malloc(bytes), *d = be->alloc(be->ctx, bytes);
    LMC_ASSERT(h && d);
    for (size_t i = 0; i < n; i++) {
        float f = frand(&seed) * (bf16 ? 0.05f : 1.0f);
        if (bf16) ((uint16_t *)h)[i] = lmc_f32_to_bf16(f);
        else ((float *)h)[i] = f;
    }
    be->upload(be->ctx, d, h, bytes);
    free(h);
    return d;
}

#define ROTATE_BYTES ((size_t)256 << 20)

static int run(const struct opts *o) {
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cuda_init(&be, 0, &err)) {
        fprintf(stderr, "bench_qmatmul_cuda: %s (try --dry-run)\n", err.msg);
        return 1;
    }
    /* copy bandwidth: read + write of a 1 GiB buffer */
    struct ctx_copy cp = {&be, be.alloc(be.ctx, (size_t)1 << 30), be.alloc(be.ctx, (size_t)1 << 30), (size_t)1 << 30};
    LMC_ASSERT(cp.a && cp.b);
    be.upload(be.ctx, cp.a, (char[256]){0}, 256);
    double tc = time_calls(&be, call_copy, &cp);
    double bw = 2.0 * (double)cp.bytes / tc;
    be.free(be.ctx, cp.a);
    be.free(be.ctx, cp.b);
    printf("device-to-device copy: %.0f GB/s (read + write of 1 GiB); roofline = device bytes / this\n", bw / 1e9);
    int64_t maxm = o->prefill;
    for (int i = 0; i < o->n_batches; i++) maxm = o->batches[i] > maxm ? o->batches[i] : maxm;
    for (int s = 0; s < o->n_shapes; s++) {
        int64_t N = o->shapes[s][0], K = o->shapes[s][1];
        float *x = dev_fill(&be, (size_t)(maxm * K) * 4, 7 + (uint64_t)s, false);
        void *xb = be.alloc(be.ctx, (size_t)(maxm * K) * 2);
        float *y = be.alloc(be.ctx, (size_t)(maxm * N) * 4);
        LMC_ASSERT(xb && y);
        lmc_cuda_f32_to_bf16(be.ctx, xb, x, maxm * K);
        size_t dbytes = (size_t)(N * K) * 2;
        int dcopies = (int)((ROTATE_BYTES + dbytes - 1) / dbytes);
        void *dw[64];
        dcopies = dcopies > 64 ? 64 : dcopies;
        for (int i = 0; i < dcopies; i++) dw[i] = dev_fill(&be, dbytes, 100 + (uint64_t)i, true);
        double tb[MAXL + 1], tcb[MAXL + 1];
        for (int b = 0; b <= o->n_batches; b++) {
            int64_t M = b < o->n_batches ? o->batches[b] : o->prefill;
            if (M == 0) continue;
            struct ctx_d d1 = {&be, dw, dcopies, y, x, xb, M, N, K, false}, d2 = d1;
            d2.cublas = true;
            tb[b] = time_calls(&be, call_d, &d1);
            tcb[b] = time_calls(&be, call_d, &d2);
        }
        header();
        for (int f = 0; f < o->n_formats; f++) {
            struct hostw h;
            if (make_weight(o->formats[f], N, K, 1000 + (uint64_t)(s * 31 + f), &h, &err)) {
                fprintf(stderr, "bench_qmatmul_cuda: %s: %s\n", o->formats[f], err.msg);
                return 1;
            }
            struct lmc_qweight *qw[64];
            if (be.qweight_upload(be.ctx, &h.w, &qw[0], &err)) {
                fprintf(stderr, "bench_qmatmul_cuda: upload %s: %s\n", o->formats[f], err.msg);
                return 1;
            }
            free_weight(&h);
            size_t qb = lmc_cuda_qweight_device_bytes(qw[0]);
            int copies = (int)((ROTATE_BYTES + qb - 1) / qb);
            copies = copies > 64 ? 64 : copies;
            for (int i = 1; i < copies; i++)
                if (lmc_cuda_qweight_clone(be.ctx, qw[0], &qw[i], &err)) {
                    fprintf(stderr, "bench_qmatmul_cuda: %s\n", err.msg);
                    return 1;
                }
            for (int b = 0; b <= o->n_batches; b++) {
                int64_t M = b < o->n_batches ? o->batches[b] : o->prefill;
                if (M == 0) continue;
                struct ctx_q q = {&be, qw, copies, y, x, M};
                double tq = time_calls(&be, call_q, &q), roof = (double)qb / bw;
                char shape[32];
                snprintf(shape, sizeof shape, "%lldx%lld", (long long)N, (long long)K);
                printf("%-8s %-12s %-10s %5lld %10.2f %10.1f %10.1f %10.1f %10.1f %8.2f %8.2f %8.2f%s\n", o->formats[f],
                       shape, lmc_cuda_qweight_layout(qw[0]), (long long)M, (double)qb / 1e6, roof * 1e6, tq * 1e6,
                       tb[b] * 1e6, tcb[b] * 1e6, tq / roof, tb[b] / tq, tcb[b] / tq,
                       M > LMC_CUDA_Q_GEMV_MAX_M ? "  (tensor-core tiles)" : "");
            }
            for (int i = 0; i < copies; i++) be.qweight_free(be.ctx, qw[i]);
        }
        for (int i = 0; i < dcopies; i++) be.free(be.ctx, dw[i]);
        be.free(be.ctx, x);
        be.free(be.ctx, xb);
        be.free(be.ctx, y);
    }
    printf("q/roof: time over the weight-read roofline (1 = at copy bandwidth); bf16/q, cubl/q: speed-up over\n"
           "lmc's dense bf16 matmul and cuBLASLt bf16 on the same shape (> 1: the quantized kernel is faster)\n");
    lmc_backend_cuda_free(&be);
    return 0;
}
#endif

/* --dry-run: host weights only, host bytes, no times */
static int dry_run(const struct opts *o) {
    lmc_err err;
    header();
    for (int s = 0; s < o->n_shapes; s++)
        for (int f = 0; f < o->n_formats; f++) {
            int64_t N = o->shapes[s][0], K = o->shapes[s][1];
            struct hostw h;
            if (make_weight(o->formats[f], N, K, 1000 + (uint64_t)(s * 31 + f), &h, &err)) {
                fprintf(stderr, "bench_qmatmul_cuda: %s: %s\n", o->formats[f], err.msg);
                return 1;
            }
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)N, (long long)K);
            printf("%-8s %-12s %-10s %5s %10.2f %10s %10s %10s %10s %8s %8s %8s\n", o->formats[f], shape, "host", "-",
                   (double)lmc_qweight_bytes(&h.w) / 1e6, "-", "-", "-", "-", "-", "-", "-");
            free_weight(&h);
        }
    printf("(dry run: host-side weights and bytes only; a GPU run times M =");
    for (int b = 0; b < o->n_batches; b++) printf(" %lld", (long long)o->batches[b]);
    printf(" and prefill %lld)\n", (long long)o->prefill);
    return 0;
}

int main(int argc, char **argv) {
    struct opts o;
    if (!parse_args(argc, argv, &o)) return 2;
    if (o.dry) return dry_run(&o);
#ifdef LMC_HAVE_CUDA
    return run(&o);
#else
    fprintf(stderr, "bench_qmatmul_cuda: built without CUDA (try --dry-run)\n");
    return 1;
#endif
}
