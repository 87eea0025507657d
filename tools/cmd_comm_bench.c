/* cmd_comm_bench.c — `lmc comm-bench`: checks and times the collectives of
 * the communicator this process was launched for (mpirun, torchrun or
 * Slurm variables; one process: the single communicator), as nccl-tests
 * does: for each size, all-reduce, reduce-scatter and all-gather of float32
 * are checked (every rank contributes rank + 1 + i % 7) and timed (median
 * of --iters after a warm-up), and rank 0 prints the algorithm bandwidth
 * and the bus bandwidth (all-reduce: algbw * 2(n-1)/n; reduce-scatter and
 * all-gather: algbw * (n-1)/n). --device cuda uses LOCAL_RANK's GPU and
 * NCCL. */
#include "cli.h"
#include "core/core.h"
#include "dist/comm.h"
#include "ops/backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { OP_AR, OP_RS, OP_AG };
static const char *op_names[] = {"all_reduce", "reduce_scatter", "all_gather"};

/* One collective on device/host buffers: send (n elements) -> recv. */
static lmc_status run_op(struct lmc_comm *c, int op, float *send, float *recv, int64_t n, lmc_err *err) {
    int64_t part = n / c->world;
    if (op == OP_AR) return c->all_reduce(c, send, n, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
    if (op == OP_RS) return c->reduce_scatter(c, send, recv, part, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
    return c->all_gather(c, send, recv, part, LMC_DTYPE_F32, err);
}

/* Fills host x as rank r's input for element i: r + 1 + i % 7. */
static void fill(float *x, int64_t n, int r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(r + 1 + i % 7);
}

int cmd_comm_bench(int argc, char **argv) {
    struct cli_common cc = {0};
    int64_t iters = 10, sizes[16] = {1 << 10, 1 << 16, 1 << 20, 1 << 24};
    int nsizes = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            if (!cli_parse_i64(argv[++i], 1, 10000, &iters)) {
                fprintf(stderr, "lmc comm-bench: --iters expects 1..10000\n");
                return 2;
            }
            continue;
        }
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            nsizes = 0;
            char *list = argv[++i], *tok, *save = NULL;
            for (tok = strtok_r(list, ",", &save); tok && nsizes < 16; tok = strtok_r(NULL, ",", &save))
                if (!cli_parse_i64(tok, 1, INT64_C(1) << 32, &sizes[nsizes++])) {
                    fprintf(stderr, "lmc comm-bench: --sizes expects float counts such as 1024,1048576\n");
                    return 2;
                }
            if (!nsizes) return 2;
            continue;
        }
        int r = cli_common_arg(&cc, argc, argv, &i);
        if (r <= 0) {
            if (r == 0) fprintf(stderr, "lmc comm-bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    bool cuda = cc.device && !strcmp(cc.device, "cuda");
    lmc_err err = {0};
    struct lmc_comm c;
    if (lmc_dist_init(&c, cuda ? LMC_DIST_DEVICE_LOCAL : LMC_DIST_HOST, &err)) return cli_fail("comm-bench", &err);
    if (cuda && !c.device_buffers) {
        c.free(&c);
        fprintf(stderr, "lmc comm-bench: --device cuda needs several ranks (mpirun -np N or torchrun)\n");
        return 2;
    }
    struct lmc_backend be;
    lmc_status s = cuda ? lmc_backend_cuda_init(&be, c.local_rank, &err) : lmc_backend_cpu_init(&be, 1, &err);
    if (s) {
        c.free(&c);
        return cli_fail("comm-bench", &err);
    }
    int W = c.world, bad = 0;
    lmc_dist_log(&c, 1, "comm-bench: %s communicator, %d rank%s, %s buffers", c.name, W, W == 1 ? "" : "s",
                 cuda ? "device" : "host");
    if (c.rank == 0)
        printf("| collective | floats | bytes | median us | algbw GB/s | busbw GB/s | check |\n"
               "|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < nsizes && !s; k++) {
        int64_t n = sizes[k] / W * W; /* a multiple of the world for the scatter/gather forms */
        if (n == 0) continue;
        size_t bytes = (size_t)n * sizeof(float);
        float *h = malloc(bytes), *hw = malloc(bytes);
        float *send = be.alloc(be.ctx, bytes), *recv = be.alloc(be.ctx, bytes);
        double *t = malloc(sizeof(double) * (size_t)iters);
        if (!h || !hw || !send || !recv || !t) {
            s = lmc_err_set(&err, LMC_ERR_OOM, "out of memory for %lld floats", (long long)n);
            goto next;
        }
        for (int op = OP_AR; op <= OP_AG && !s; op++) {
            int64_t part = n / W;
            /* check once */
            fill(h, n, c.rank);
            be.upload(be.ctx, send, h, bytes);
            if ((s = run_op(&c, op, send, recv, n, &err))) break;
            be.download(be.ctx, hw, op == OP_AR ? send : recv, op == OP_RS ? (size_t)part * sizeof(float) : bytes);
            bool ok = true;
            for (int64_t i = 0; i < (op == OP_RS ? part : n) && ok; i++) {
                int64_t gi = op == OP_RS ? (int64_t)c.rank * part + i : i;
                double want = op == OP_AG ? (double)(i / part + 1 + (i % part) % 7)
                                          : (double)W * (W + 1) / 2 + (double)W * (double)(gi % 7);
                ok = hw[i] == (float)want;
            }
            bad += !ok;
            /* time: warm-up, then iters, each between barriers */
            if ((s = run_op(&c, op, send, recv, n, &err))) break;
            for (int64_t it = 0; it < iters && !s; it++) {
                if ((s = c.barrier(&c, &err))) break;
                double t0 = lmc_time_now();
                s = run_op(&c, op, send, recv, n, &err);
                t[it] = lmc_time_now() - t0;
            }
            if (s) break;
            qsort(t, (size_t)iters, sizeof *t, cmp_d);
            double med = t[iters / 2], algbw = (double)bytes / med / 1e9;
            double bus = op == OP_AR ? algbw * 2.0 * (W - 1) / W : algbw * (double)(W - 1) / W;
            if (c.rank == 0)
                printf("| %s | %lld | %zu | %.1f | %.3f | %.3f | %s |\n", op_names[op], (long long)n, bytes, med * 1e6,
                       algbw, bus, ok ? "ok" : "WRONG");
        }
    next:
        free(h), free(hw), free(t);
        if (send) be.free(be.ctx, send);
        if (recv) be.free(be.ctx, recv);
    }
    /* every rank's verdict, so all exit alike */
    double b = bad;
    if (!s && W > 1 && !c.device_buffers) s = c.all_reduce(&c, &b, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, &err);
    if (!s && c.rank == 0) printf("comm-bench: %s\n", b > 0 ? "WRONG results" : "ok");
    if (cuda) lmc_backend_cuda_free(&be);
    else lmc_backend_cpu_free(&be);
    c.free(&c);
    if (s) return cli_fail("comm-bench", &err);
    return b > 0 ? 1 : 0;
}
