/* bench_moe.c — CPU decode of a mixture-of-experts model against a dense
 * model of the same active size, measured interleaved in one process.
 *
 * Two random-weight F16 models in HF layout, written once under /tmp from
 * the architectures' own spec tables (lmc_arch_walk): a Mixtral shape
 * (hidden 512, 8 layers, 8 heads / 2 kv, 8 experts of width 1792, top-2,
 * vocab 32000) and a Llama of the same attention and an intermediate size
 * of 2 x 1792, so a token runs through the same number of weights in
 * both. Each round decodes N tokens on each model (alternating which goes
 * first); the report gives median tok/s per model and the median of the
 * per-round ratios. Decode time proportional to active parameters means a
 * ratio near 1 (the MoE model holds ~2.6x the dense one's parameters).
 *
 * --shape 1b: hidden 1024, 14 layers, 16 heads / 4 kv, 8 experts of width
 * 2816 (~1.07B parameters, ~0.35B active) and its dense twin.
 *
 * --write-only 1: writes the two folders and exits (bench/run_moe_cpu.sh
 * converts them to GGUF for lmc and llama-bench).
 *
 *   bench_moe [--threads N] [--decode N] [--rounds N] [--dir D] [--shape small|1b] [--write-only 1]
 */
#include "core/core.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/arch.h"
#include "model/model.h"
#include "ops/backend.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The bench shapes (--shape): 8 experts, top-2, vocab 32000 in both. */
struct shape {
    const char *name;
    int64_t hidden, layers, heads, kv, ei;
};
static const struct shape shapes[] = {
    {"small", 512, 8, 8, 2, 1792},    /* 214M total, 82M active */
    {"1b", 1024, 14, 16, 4, 2816},    /* ~1.07B total, ~0.35B active */
};
#define B_EXPERTS 8
#define B_TOPK 2
#define B_VOCAB 32000

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_moe: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    exit(1);
}

struct gen {
    struct lmc_st_write_tensor *t;
    char (*names)[160];
    int64_t n, cap;
    uint64_t rng;
    int64_t params;
};

static lmc_status gen_one(void *user, const struct lmc_tensor_ref *r, lmc_err *err) {
    struct gen *g = user;
    (void)err;
    LMC_ASSERT(g->n < g->cap);
    uint16_t *d = malloc((size_t)r->numel * 2);
    if (!d) die("out of memory", NULL);
    bool norm = r->spec->role == LMC_ROLE_NORM;
    for (int64_t i = 0; i < r->numel; i++) {
        double u = ((double)(lmc_rng_next(&g->rng) >> 11) + 0.5) / 9007199254740992.0;
        double v = ((double)(lmc_rng_next(&g->rng) >> 11) + 0.5) / 9007199254740992.0;
        float x = norm ? 1.0f : (float)(0.02 * sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
        d[i] = lmc_f32_to_f16(x);
    }
    struct lmc_st_write_tensor *t = &g->t[g->n];
    snprintf(g->names[g->n], sizeof g->names[g->n], "%s", r->name);
    memset(t, 0, sizeof *t);
    t->name = g->names[g->n];
    t->dtype = LMC_DTYPE_F16;
    t->ndim = r->ndim;
    t->shape[0] = r->disk[0];
    t->shape[1] = r->disk[1];
    t->data = d;
    g->params += r->numel;
    g->n++;
    return LMC_OK;
}

/* Writes dir/config.json and dir/model.safetensors for arch at the bench shape. */
static void make_model(const char *dir, const char *arch, const struct shape *sh, int64_t inter) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        fprintf(stderr, "bench_moe: reusing %s\n", dir);
        return;
    }
    mkdir(dir, 0755);
    struct lmc_model_shape s = {B_VOCAB, sh->hidden, sh->layers, sh->heads, sh->kv, inter, 4096, false, 10000};
    struct lmc_config c;
    lmc_err e = {0};
    if (lmc_config_build(&c, arch, &s, &e)) die("config", &e);
    const struct lmc_architecture *a = lmc_arch_of(&c);
    struct gen g = {0};
    g.cap = lmc_arch_count(a, &c);
    g.t = calloc((size_t)g.cap, sizeof *g.t);
    g.names = calloc((size_t)g.cap, sizeof *g.names);
    g.rng = 0x6d6f652d62656e63ull;
    if (!g.t || !g.names) die("out of memory", NULL);
    if (lmc_arch_walk(a, &c, gen_one, &g, &e)) die("walk", &e);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (lmc_config_write(&c, path, &e)) die("config.json", &e);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const char *meta[] = {"format", "pt"};
    if (lmc_st_write(path, g.t, g.n, meta, 1, &e)) die("safetensors", &e);
    fprintf(stderr, "bench_moe: wrote %s (%s, %.1fM parameters)\n", dir, arch, g.params / 1e6);
    for (int64_t i = 0; i < g.n; i++) free((void *)g.t[i].data);
    free(g.t);
    free(g.names);
}

struct run {
    struct lmc_model m;
    struct lmc_kv kv;
    struct lmc_acts acts;
    float *logits;
};

static void open_run(struct run *r, const char *dir, const struct lmc_backend *be, int64_t ctx) {
    lmc_err e = {0};
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_AUTO, .be = be};
    if (lmc_model_load(&r->m, dir, &mo, &e)) die(dir, &e);
    if (lmc_kv_init(&r->kv, &r->m, be, ctx, &e) || lmc_acts_init(&r->acts, &r->m, be, 16, 1, &e))
        die("kv / activations", &e);
    r->logits = malloc((size_t)r->m.cfg.vocab_size * sizeof(float));
    if (!r->logits) die("out of memory", NULL);
}

/* Decodes n tokens after a 16-token prompt; seconds of the decode. */
static double decode(struct run *r, const struct lmc_backend *be, int n) {
    lmc_err e = {0};
    int32_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = 3 + i * 7;
    if (lmc_model_forward(&r->m, be, &r->acts, &r->kv, ids, 16, 0, r->logits, false, &e)) die("forward", &e);
    double t0 = lmc_time_now();
    for (int i = 0; i < n; i++) {
        int32_t best = 0;
        for (int64_t v = 1; v < r->m.cfg.vocab_size; v++)
            if (r->logits[v] > r->logits[best]) best = (int32_t)v;
        if (lmc_model_forward(&r->m, be, &r->acts, &r->kv, &best, 1, 16 + i, r->logits, false, &e))
            die("forward", &e);
    }
    return lmc_time_now() - t0;
}

int main(int argc, char **argv) {
    int threads = 2, n = 64, rounds = 5, write_only = 0;
    const char *root = "/tmp/lmc-bench-moe";
    const struct shape *sh = &shapes[0];
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir")) root = argv[i + 1];
        else if (!strcmp(argv[i], "--write-only")) write_only = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape") && !strcmp(argv[i + 1], "1b")) sh = &shapes[1];
        else if (!strcmp(argv[i], "--shape") && !strcmp(argv[i + 1], "small")) sh = &shapes[0];
        else die("usage: bench_moe [--threads N] [--decode N] [--rounds N] [--dir D] [--shape small|1b] "
                 "[--write-only 1]", NULL);
    }
    if (n < 1 || rounds < 1 || rounds > 100 || n > 2000) die("bad --decode / --rounds", NULL);
    char dm[400], dd[400];
    mkdir(root, 0755);
    snprintf(dm, sizeof dm, "%s/mixtral-%s", root, sh->name);
    snprintf(dd, sizeof dd, "%s/dense-%s", root, sh->name);
    make_model(dm, "mixtral", sh, sh->ei);
    make_model(dd, "llama", sh, B_TOPK * sh->ei);
    if (write_only) {
        printf("%s\n%s\n", dm, dd);
        return 0;
    }
    struct lmc_backend be;
    lmc_err e = {0};
    if (lmc_backend_cpu_init(&be, threads, &e)) die("cpu backend", &e);
    struct run R[2];
    memset(R, 0, sizeof R);
    open_run(&R[0], dm, &be, 16 + n + 1);
    open_run(&R[1], dd, &be, 16 + n + 1);
    decode(&R[0], &be, 4); /* warm-up */
    decode(&R[1], &be, 4);
    double ts[2][100], ratio[100];
    for (int k = 0; k < rounds; k++) {
        int first = k & 1;
        ts[first][k] = decode(&R[first], &be, n);
        ts[!first][k] = decode(&R[!first], &be, n);
        ratio[k] = ts[0][k] / ts[1][k];
        fprintf(stderr, "bench_moe: round %d: moe %.1f tok/s, dense %.1f tok/s\n", k, n / ts[0][k], n / ts[1][k]);
    }
    int64_t act = lmc_arch_active_params(&R[0].m.cfg, R[0].m.n_params);
    qsort(ts[0], (size_t)rounds, sizeof(double), bench_cmpd);
    qsort(ts[1], (size_t)rounds, sizeof(double), bench_cmpd);
    qsort(ratio, (size_t)rounds, sizeof(double), bench_cmpd);
    printf("| model | parameters | active / token | decode tok/s (median of %d x %d tokens) |\n", rounds, n);
    printf("|---|---|---|---|\n");
    printf("| mixtral-shape (%s: hidden %lld, %lld layers), %d experts top-%d, width %lld | %.1fM | %.1fM | %.1f |\n",
           sh->name, (long long)sh->hidden, (long long)sh->layers, B_EXPERTS, B_TOPK, (long long)sh->ei,
           R[0].m.n_params / 1e6, act / 1e6, n / ts[0][rounds / 2]);
    printf("| dense llama, intermediate %lld | %.1fM | %.1fM | %.1f |\n", (long long)(B_TOPK * sh->ei), R[1].m.n_params / 1e6,
           R[1].m.n_params / 1e6, n / ts[1][rounds / 2]);
    printf("\nmedian per-round decode time ratio moe / dense: %.3f (%d threads)\n", ratio[rounds / 2], threads);
    for (int i = 0; i < 2; i++) {
        lmc_acts_free(&R[i].acts);
        lmc_kv_free(&R[i].kv);
        lmc_model_free(&R[i].m);
        free(R[i].logits);
    }
    lmc_backend_cpu_free(&be);
    return 0;
}
