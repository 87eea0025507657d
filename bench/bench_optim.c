/* bench_optim.c — optimizer step time and state bytes on the CPU backend
 * for GPT-2 124M's parameter list (wte 50257x768 tied head, wpe, 12 layers
 * of c_attn 2304x768, c_proj 768x768, c_fc 3072x768, mlp c_proj 768x3072
 * with biases and LayerNorms; roles as the model's spec table gives them).
 * Every optimizer is initialised on the same parameters and gradients and
 * its steps are timed interleaved with the others (round r steps each
 * kind once), medians over the rounds, against AdamW in the same run.
 * GaLore and APOLLO refresh their projection at step 1 and every `gap`
 * steps: the refresh step is timed on its own (step 1, also the warm-up)
 * and amortised over the default gap of 200.
 * Muon's Newton–Schulz variants run as their own rows: muon (the CPU
 * default: fp32, Gram space for the rectangular matrices), muon-plain
 * (fp32, the plain iteration: --muon-ns-gram 0, the default before
 * newton_schulz_gram.c), muon-bf16 (--muon-ns-dtype bf16: always plain),
 * muon-1core and muon-plain-1core (the same fp32 steps through
 * lmc_optim_step_one, a matrix at a time: OpenBLAS is single-threaded in
 * the CPU backend, so this is one core — the CPU's fp32 Muon before the
 * batched fp32 entry). Wall and process CPU time per step.
 * Usage: bench_optim [rounds (default 3)] [threads (default 2)] [kinds, e.g.
 * adamw,adamw8bit,muon-bf16 (default all; AdamW is always run as the peer)] */
#include "core/core.h"
#include "ops/backend.h"
#include "train/optim.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXP 256

enum { NV = 4 };
static const struct { const char *name; bool bf16, gram, one; } var[NV] = {
    {"muon-plain", false, false, false}, {"muon-bf16", true, false, false}, {"muon-1core", false, true, true},
    {"muon-plain-1core", false, false, true}};

static const char *vname(int k) {
    if (k < LMC_OPTIM_KIND_COUNT) return lmc_optim_kind_name((enum lmc_optim_kind)k);
    return var[k - LMC_OPTIM_KIND_COUNT].name;
}

static void step(struct lmc_optim *o, int k, int64_t t) {
    if (k < LMC_OPTIM_KIND_COUNT || !var[k - LMC_OPTIM_KIND_COUNT].one) {
        lmc_optim_step(o, 6e-4, t, 1.0f);
        return;
    }
    for (int i = 0; i < o->n_params; i++) lmc_optim_step_one(o, i, 6e-4, t, 1.0f);
}

static int add(struct lmc_optim_param *ps, int n, char names[][96], const char *name, int64_t rows,
               int64_t cols, enum lmc_param_role role) {
    snprintf(names[n], 96, "%s", name);
    ps[n] = (struct lmc_optim_param){names[n], NULL, NULL, rows, cols, role, role == LMC_PROLE_MATRIX};
    return n + 1;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3, threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *only = argc > 3 ? argv[3] : NULL;
    if (rounds < 1 || rounds > 100) rounds = 3;
    static struct lmc_optim_param ps[MAXP];
    static char names[MAXP][96];
    int n = 0;
    const int64_t C = 768;
    n = add(ps, n, names, "wte", 50257, C, LMC_PROLE_EMBEDDING);
    n = add(ps, n, names, "wpe", 1024, C, LMC_PROLE_EMBEDDING);
    for (int l = 0; l < 12; l++) {
        char b[96];
        static const struct { const char *nm; int64_t r, c; enum lmc_param_role role; } L[] = {
            {"ln_1.weight", 1, 768, LMC_PROLE_NORM}, {"ln_1.bias", 1, 768, LMC_PROLE_NORM},
            {"attn.c_attn.weight", 2304, 768, LMC_PROLE_MATRIX}, {"attn.c_attn.bias", 1, 2304, LMC_PROLE_BIAS},
            {"attn.c_proj.weight", 768, 768, LMC_PROLE_MATRIX}, {"attn.c_proj.bias", 1, 768, LMC_PROLE_BIAS},
            {"ln_2.weight", 1, 768, LMC_PROLE_NORM}, {"ln_2.bias", 1, 768, LMC_PROLE_NORM},
            {"mlp.c_fc.weight", 3072, 768, LMC_PROLE_MATRIX}, {"mlp.c_fc.bias", 1, 3072, LMC_PROLE_BIAS},
            {"mlp.c_proj.weight", 768, 3072, LMC_PROLE_MATRIX}, {"mlp.c_proj.bias", 1, 768, LMC_PROLE_BIAS}};
        for (size_t k = 0; k < sizeof L / sizeof *L; k++) {
            snprintf(b, sizeof b, "h.%d.%s", l, L[k].nm);
            n = add(ps, n, names, b, L[k].r, L[k].c, L[k].role);
        }
    }
    n = add(ps, n, names, "ln_f.weight", 1, C, LMC_PROLE_NORM);
    n = add(ps, n, names, "ln_f.bias", 1, C, LMC_PROLE_NORM);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += ps[i].rows * ps[i].cols;
    float *pm = malloc((size_t)total * 4), *gm = malloc((size_t)total * 4);
    if (!pm || !gm) return fprintf(stderr, "out of memory\n"), 1;
    uint64_t s = 12345;
    for (int64_t i = 0; i < total; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
        pm[i] = 0.04f * u, gm[i] = 0.01f * u * (float)((i % 7) + 1);
    }
    for (int64_t i = 0, off = 0; i < n; off += ps[i].rows * ps[i].cols, i++) ps[i].p = pm + off, ps[i].g = gm + off;

    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cpu_init(&be, threads, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    /* the optimizer kinds, then Muon's variants */
    enum { K = LMC_OPTIM_KIND_COUNT + NV };
    static struct lmc_optim opt[K];
    double first[K], t[K][100], tc[K][100];
    printf("GPT-2 124M parameter list: %d tensors, %lld parameters; %d threads, %d rounds\n", n, (long long)total,
           threads, rounds);
    bool on[K];
    for (int k = 0; k < K; k++) {
        const char *nm = vname(k);
        size_t l = strlen(nm);
        on[k] = k == 0 || !only;
        for (const char *q = only; q && *q && !on[k]; q += strcspn(q, ",") + (q[strcspn(q, ",")] == ',')) {
            on[k] = !strncmp(q, nm, l) && (q[l] == ',' || !q[l]);
        }
    }
    for (int k = 0; k < K; k++) {
        if (!on[k]) continue;
        struct lmc_optim_cfg c;
        lmc_optim_cfg_default(&c, k < LMC_OPTIM_KIND_COUNT ? (enum lmc_optim_kind)k : LMC_OPTIM_MUON);
        c.adamw.lr = 6e-4;
        if (k >= LMC_OPTIM_KIND_COUNT) {
            const int v = k - LMC_OPTIM_KIND_COUNT;
            c.muon_ns_bf16 = var[v].bf16, c.muon_ns_auto = false, c.muon_ns_gram = var[v].gram;
        }
        if (lmc_optim_init(&opt[k], &c, &be, ps, n, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        char d[512];
        lmc_optim_describe(&opt[k], d, sizeof d);
        printf("  %-16s %s\n", vname(k), d);
        double t0 = lmc_time_now();
        step(&opt[k], k, 1); /* warm-up; GaLore/APOLLO's refresh step */
        first[k] = lmc_time_now() - t0;
    }
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < K; k++) {
            if (!on[k]) continue;
            double t0 = lmc_time_now(), c0 = bench_cpu();
            step(&opt[k], k, 2 + r);
            t[k][r] = lmc_time_now() - t0, tc[k][r] = bench_cpu() - c0;
        }
    printf("\n| optimizer | state bytes | bytes / param | step (median of %d) | vs AdamW | refresh step (step 1) "
           "| amortised over 200 steps | vs AdamW | CPU s per step (median) |\n|---|---|---|---|---|---|---|---|---|\n",
           rounds);
    double base = 0;
    for (int k = 0; k < K; k++) {
        if (!on[k]) continue;
        qsort(t[k], (size_t)rounds, sizeof(double), bench_cmpd);
        qsort(tc[k], (size_t)rounds, sizeof(double), bench_cmpd);
        double med = rounds % 2 ? t[k][rounds / 2] : 0.5 * (t[k][rounds / 2 - 1] + t[k][rounds / 2]);
        double medc = rounds % 2 ? tc[k][rounds / 2] : 0.5 * (tc[k][rounds / 2 - 1] + tc[k][rounds / 2]);
        if (k == 0) base = med;
        const bool refresh = k == LMC_OPTIM_GALORE || k == LMC_OPTIM_APOLLO || k == LMC_OPTIM_APOLLO_MINI;
        double am = refresh ? (first[k] + 199 * med) / 200 : med;
        printf("| %s | %zu | %.3f | %.3f s | %.2fx | %s%.3f s | %.3f s | %.2fx | %.3f s |\n", vname(k),
               opt[k].state_bytes, (double)opt[k].state_bytes / (double)total, med, med / base,
               refresh ? "" : "(warm-up) ", first[k], am, am / base, medc);
    }
    for (int k = 0; k < K; k++)
        if (on[k]) lmc_optim_free(&opt[k]);
    lmc_backend_cpu_free(&be);
    free(pm), free(gm);
    return 0;
}
