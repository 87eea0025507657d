/* bench_moe_ep.c — expert parallelism on the CPU: greedy decode of a
 * random Mixtral-shape model (bench_moe's files: run `bench_moe` once to
 * write them, default /tmp/lmc-bench-moe/mixtral-small) in one process
 * (EP 1, lmc_model_load) and over 2 forked ranks joined by tcp (EP 2,
 * lmc_ep_model_load: each rank maps and reads only its 4 of the 8
 * experts; replicated tokens, alltoallv exchange per MoE layer), the two
 * interleaved round by round on the same total of CPU threads. Reports
 * the median decode and prompt tokens/s and each rank's resident memory
 * (VmRSS after the run, VmHWM peak) — the weights are used in place from
 * the mapped file, so a rank's resident set holds the pages it touched.
 * Also checks that EP 2 decodes the EP 1 tokens.
 *
 *   bench_moe_ep [--model DIR] [--threads N] [--decode N] [--rounds N]
 */
#include "../tests/dist_spawn.h"
#include "core/core.h"
#include "dist/ep_model.h"
#include "model/model.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { PROMPT = 16, MAXTOK = 512 };

struct res {                     /* shared with the forked ranks */
    double prefill_s, decode_s;
    double rss_mib[4], hwm_mib[4], weights_mib[4];
    int32_t toks[MAXTOK];
};

struct job {
    const char *dir;
    int ep, threads, n;
    struct res *out;
};

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_moe_ep: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    exit(1);
}

/* VmRSS and VmHWM of this process in MiB. */
static void mem(double *rss, double *hwm) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    *rss = *hwm = 0;
    while (f && fgets(line, sizeof line, f)) {
        long kb;
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) *rss = kb / 1024.0;
        if (sscanf(line, "VmHWM: %ld", &kb) == 1) *hwm = kb / 1024.0;
    }
    if (f) fclose(f);
}

static int rank_main(struct lmc_comm *c, int rank, void *arg) {
    struct job *j = arg;
    lmc_err e = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, j->threads, &e)) die("cpu backend", &e);
    struct lmc_model m;
    struct lmc_ep_group g;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_AUTO, .be = &be};
    lmc_status s = j->ep == 1 ? lmc_model_load(&m, j->dir, &mo, &e) : lmc_ep_model_load(&m, &g, j->dir, &mo, c, true, &e);
    if (s) die(j->dir, &e);
    struct lmc_kv kv;
    struct lmc_acts a;
    if (lmc_kv_init(&kv, &m, &be, PROMPT + j->n + 1, &e) || lmc_acts_init(&a, &m, &be, PROMPT, 1, &e))
        die("kv / activations", &e);
    float *logits = malloc(sizeof(float) * (size_t)m.cfg.vocab_size);
    int32_t ids[PROMPT];
    for (int i = 0; i < PROMPT; i++) ids[i] = 3 + i * 7;
    double t0 = lmc_time_now();
    if (lmc_model_forward(&m, &be, &a, &kv, ids, PROMPT, 0, logits, false, &e)) die("forward", &e);
    double t1 = lmc_time_now();
    for (int i = 0; i < j->n; i++) {
        int32_t best = 0;
        for (int64_t v = 1; v < m.cfg.vocab_size; v++)
            if (logits[v] > logits[best]) best = (int32_t)v;
        if (rank == 0) j->out->toks[i] = best;
        if (lmc_model_forward(&m, &be, &a, &kv, &best, 1, PROMPT + i, logits, false, &e)) die("forward", &e);
    }
    double t2 = lmc_time_now();
    if (j->ep > 1 && lmc_ep_group_check(&g, &e)) die("exchange", &e);
    mem(&j->out->rss_mib[rank], &j->out->hwm_mib[rank]);
    j->out->weights_mib[rank] = (double)m.weight_bytes / 1048576.0;
    if (rank == 0) j->out->prefill_s = t1 - t0, j->out->decode_s = t2 - t1;
    free(logits);
    lmc_acts_free(&a);
    lmc_kv_free(&kv);
    lmc_model_free(&m);
    if (j->ep > 1) lmc_ep_group_free(&g);
    lmc_backend_cpu_free(&be);
    return 0;
}

int main(int argc, char **argv) {
    int threads = 2, n = 32, rounds = 3;
    const char *dir = "/tmp/lmc-bench-moe/mixtral-small";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else die("usage: bench_moe_ep [--model DIR] [--threads N] [--decode N] [--rounds N]", NULL);
    }
    if (n < 1 || n > MAXTOK || rounds < 1 || rounds > 50 || threads < 2) die("bad --decode / --rounds / --threads (>= 2)", NULL);
    struct res *R = mmap(NULL, sizeof(struct res) * 2 * (size_t)rounds, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (R == MAP_FAILED) die("mmap", NULL);
    char tmpl[] = "/tmp/lmc_bench_moe_ep_XXXXXX";
    if (!mkdtemp(tmpl)) die("mkdtemp", NULL);
    double dec[2][50], pre[2][50], rss[2] = {0, 0}, hwm[2] = {0, 0}, wmib[2] = {0, 0};
    bool same = true;
    for (int k = 0; k < rounds; k++)
        for (int o = 0; o < 2; o++) {
            int w = (k + o) % 2; /* alternate which runs first */
            int ep = w + 1;
            struct res *r = &R[2 * k + w];
            struct job j = {dir, ep, threads / ep, n, r};
            struct spawn_opts so = {.world = ep};
            int codes[2] = {0, 0};
            spawn(&so, rank_main, &j, tmpl, codes);
            for (int q = 0; q < ep; q++)
                if (codes[q]) {
                    fprintf(stderr, "bench_moe_ep: EP %d rank %d exit %d: %s", ep, q, codes[q], slurp(tmpl, q));
                    exit(1);
                }
            dec[w][k] = n / r->decode_s;
            pre[w][k] = PROMPT / r->prefill_s;
            for (int q = 0; q < ep; q++) {
                rss[w] = fmax(rss[w], r->rss_mib[q]), hwm[w] = fmax(hwm[w], r->hwm_mib[q]);
                wmib[w] = fmax(wmib[w], r->weights_mib[q]);
            }
            fprintf(stderr, "bench_moe_ep: round %d EP %d: decode %.2f tok/s, prompt %.1f tok/s, rank RSS %.0f", k, ep,
                    dec[w][k], pre[w][k], r->rss_mib[0]);
            for (int q = 1; q < ep; q++) fprintf(stderr, " / %.0f", r->rss_mib[q]);
            fprintf(stderr, " MiB\n");
        }
    for (int k = 0; k < rounds; k++) same &= !memcmp(R[2 * k].toks, R[2 * k + 1].toks, sizeof(int32_t) * (size_t)n);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
    if (system(cmd)) {}
    for (int w = 0; w < 2; w++) qsort(dec[w], (size_t)rounds, sizeof(double), bench_cmpd), qsort(pre[w], (size_t)rounds, sizeof(double), bench_cmpd);
    printf("| EP | ranks x threads | decode tok/s (median of %d x %d) | prompt tok/s (%d tokens) | weights bound per rank, MiB | RSS per rank, MiB (max over ranks) | peak RSS per rank, MiB |\n",
           rounds, n, PROMPT);
    printf("|---|---|---|---|---|---|---|\n");
    for (int w = 0; w < 2; w++)
        printf("| %d | %d x %d | %.2f | %.1f | %.0f | %.0f | %.0f |\n", w + 1, w + 1, threads / (w + 1), dec[w][rounds / 2],
               pre[w][rounds / 2], wmib[w], rss[w], hwm[w]);
    printf("\nEP 2 greedy tokens %s EP 1's (%s)\n", same ? "equal" : "DIFFER FROM", dir);
    return 0;
}
