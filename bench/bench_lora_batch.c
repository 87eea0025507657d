/* bench_lora_batch.c — the batched forward's cost of per-request LoRA
 * adapters, without HTTP: one decode step of B sequences (each with CTX
 * tokens already in the paged KV pool) through lmc_model_forward_batch_argmax
 * on a model with a bank of four random adapters (rank R, all seven
 * linears), for four mixes of the same batch: every row the base, every
 * row adapter 1, the rows spread over adapters 1..4 (four groups), and
 * base + adapters 1..3. Each round times STEPS steps of each mix in turn
 * (the order rotating per round); the report gives the median tok/s per
 * mix over rounds and the median per-round ratio against "one adapter".
 *
 *   bench_lora_batch MODEL_DIR [--device cpu|cuda] [--threads N] [--batch B]
 *                    [--ctx CTX] [--rank R] [--steps S] [--rounds N]
 */
#include "core/core.h"
#include "core/rng.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "ops/backend_cuda.h"
#include "train/lora.h"
#include "train/lora_bank.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMIX 4
#define NAD 4

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_lora_batch: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_lora_batch MODEL_DIR [--device cpu|cuda] [--threads N] [--batch B] "
                        "[--ctx CTX] [--rank R] [--steps S] [--rounds N]\n");
        return 2;
    }
    const char *dir = argv[1], *device = "cpu";
    int threads = 0, B = 16, ctx = 64, R = 16, steps = 8, rounds = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--device")) device = v;
        else if (!strcmp(o, "--threads")) threads = atoi(v);
        else if (!strcmp(o, "--batch")) B = atoi(v);
        else if (!strcmp(o, "--ctx")) ctx = atoi(v);
        else if (!strcmp(o, "--rank")) R = atoi(v);
        else if (!strcmp(o, "--steps")) steps = atoi(v);
        else if (!strcmp(o, "--rounds")) rounds = atoi(v);
        else die("unknown option", NULL);
    }
    if (B < 4 || B > 1024 || ctx < 1 || ctx > 4096 || R < 1 || R > 256 || steps < 1 || rounds < 1 || rounds > 100)
        die("option out of range", NULL);
    lmc_err err = {0};
    struct lmc_backend be;
    bool cuda = !strcmp(device, "cuda");
    if (cuda ? lmc_backend_cuda_init(&be, 0, &err) : lmc_backend_cpu_init(&be, threads, &err)) die("backend", &err);
    struct lmc_model m;
    struct lmc_model_opts mo = {.be = &be};
    if (lmc_model_load(&m, dir, &mo, &err)) die("model", &err);
    /* four adapters, A and B random (a fresh adapter's B is 0) */
    struct lmc_lora lo[NAD];
    const struct lmc_lora *los[NAD];
    double mul[NAD];
    uint64_t seed = 1;
    for (int k = 0; k < NAD; k++) {
        struct lmc_lora_config lc = {.r = R, .alpha = 2.0 * R};
        if (lmc_lora_parse_targets(&lc, "all-linear", &err) || lmc_lora_create(&lo[k], &lc, &m.cfg, (uint64_t)k + 1, &err))
            die("adapter", &err);
        for (int i = 0; i < lo[k].n_mods; i++)
            for (int64_t j = 0; j < lo[k].mods[i].out * R; j++)
                lo[k].mods[i].b[j] = 0.01f * (float)((double)(lmc_rng_next(&seed) >> 11) / 9007199254740992.0 - 0.5);
        los[k] = &lo[k];
        mul[k] = 1;
    }
    struct lmc_lora_bank bank;
    if (lmc_lora_bank_bind(&bank, &m, los, mul, NAD, &be, &err)) die("bank", &err);
    int64_t bs = 16, per = (ctx + steps + 1 + bs - 1) / bs, nb = (int64_t)B * per;
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    if (lmc_kv_pool_init(&pool, &m, &be, nb, bs, &err)) die("kv pool", &err);
    if (lmc_batch_acts_init(&ba, &m, &be, (int64_t)B * ctx, B, per, B, &err)) die("batch scratch", &err);
    int32_t *bt = malloc((size_t)nb * sizeof *bt), *ids = malloc((size_t)B * ctx * sizeof *ids);
    int32_t *seq = malloc((size_t)B * ctx * sizeof *seq), *pos = malloc((size_t)B * ctx * sizeof *pos);
    int32_t *rows = malloc((size_t)B * sizeof *rows), *out = malloc((size_t)B * sizeof *out), *ad = calloc((size_t)B, sizeof *ad);
    if (!bt || !ids || !seq || !pos || !rows || !out || !ad) die("out of memory", NULL);
    for (int64_t i = 0; i < nb; i++) bt[i] = (int32_t)i;
    /* prefill every sequence's CTX tokens once (base) */
    int64_t T = 0;
    for (int s = 0; s < B; s++)
        for (int p = 0; p < ctx; p++, T++) {
            ids[T] = (int32_t)(1 + (lmc_rng_next(&seed) % (uint64_t)(m.cfg.vocab_size - 1)));
            seq[T] = s;
            pos[T] = p;
        }
    for (int s = 0; s < B; s++) rows[s] = (int32_t)((s + 1) * ctx - 1);
    struct lmc_batch pre = {T, ids, seq, pos, B, bt, per, rows, B, NULL};
    if (lmc_model_forward_batch_argmax(&m, &be, &ba, &pool, &pre, out, &err)) die("prefill", &err);
    static const char *names[NMIX] = {"base", "one adapter", "four adapters", "base + three adapters"};
    double tps[NMIX][100], ratio[NMIX][100];
    for (int r = 0; r < rounds; r++) {
        double t[NMIX];
        for (int q = 0; q < NMIX; q++) {
            int mix = (q + r) % NMIX;
            /* sequences in groups of equal adapter (the scheduler's order) */
            for (int s = 0; s < B; s++)
                ad[s] = mix == 0 ? 0 : mix == 1 ? 1 : mix == 2 ? 1 + s * NAD / B : s * NAD / B;
            struct lmc_batch b = {B, out, seq, pos, B, bt, per, rows, B, mix ? ad : NULL};
            for (int s = 0; s < B; s++) {
                seq[s] = s;
                rows[s] = s;
            }
            be.sync(be.ctx);
            double t0 = lmc_time_now();
            for (int st = 0; st < steps; st++) {
                for (int s = 0; s < B; s++) pos[s] = ctx + st; /* the same positions each round: overwritten */
                if (lmc_model_forward_batch_argmax(&m, &be, &ba, &pool, &b, out, &err)) die("step", &err);
            }
            be.sync(be.ctx);
            t[mix] = lmc_time_now() - t0;
            tps[mix][r] = (double)B * steps / t[mix];
        }
        for (int q = 0; q < NMIX; q++) ratio[q][r] = t[1] / t[q];
    }
    printf("bench_lora_batch: %s on %s, batch %d decode rows at context %d, 4 adapters of rank %d on all linears, "
           "%d steps x %d rounds\n",
           dir, be.name, B, ctx, R, steps, rounds);
    printf("| mix | median tok/s | median ratio to one adapter (same round) |\n|---|---|---|\n");
    for (int q = 0; q < NMIX; q++)
        printf("| %s | %.1f | %.3f |\n", names[q], bench_median(tps[q], rounds), bench_median(ratio[q], rounds));
    lmc_batch_acts_free(&ba);
    lmc_kv_pool_free(&pool);
    lmc_lora_bank_unbind(&bank, &m);
    for (int k = 0; k < NAD; k++) lmc_lora_free(&lo[k]);
    lmc_model_free(&m);
    if (cuda) lmc_backend_cuda_free(&be);
    else lmc_backend_cpu_free(&be);
    free(bt), free(ids), free(seq), free(pos), free(rows), free(out), free(ad);
    return 0;
}
