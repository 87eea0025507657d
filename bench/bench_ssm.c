/* bench_ssm.c — the CPU state-space-model path on a random ~130M Mamba
 * shape (hidden 768, 24 layers, d_inner 1536, state 16, conv 4, dt rank 48,
 * vocab 50280: state-spaces/mamba-130m-hf's config) built in memory with
 * transformers' initialisation (A_log = log(1..N), D = 1, dt bias =
 * softplus^-1 of dt in [1e-3, 0.1]) and F32 weights:
 *   1. ops alone: conv1d_causal + ssm_scan prefill over T tokens (one
 *      layer's mixer core), and Mamba-2's ssd_chunk at mamba2-130m's shape
 *      (24 heads x 64, state 128, chunk 256): tokens/s;
 *   2. the whole model, Mamba-1 130M and Mamba-2 at mamba2-130m's shape:
 *      prefill tokens/s (T tokens, logits of the last row only) and decode
 *      ms/token (batch 1, state carried);
 *   3. decode cost against context: a 2-layer model of the same width,
 *      two state slots advanced by chunked prefill to 1k and to 16k tokens,
 *      then decode steps alternating between the slots: the cost must not
 *      depend on the context.
 * Medians of repeats after a warm-up. usage: bench_ssm [-t threads]
 * [-r repeats] [-T prefill tokens] [-c long context] */
#include "core/core.h"
#include "ssm/mamba.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint64_t rng_s = 88172645463325252ull;
static float frand(void) { /* [-1, 1) */
    rng_s ^= rng_s << 13, rng_s ^= rng_s >> 7, rng_s ^= rng_s << 17;
    return (float)((rng_s >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rnd(int64_t n, float scale) {
    float *p = malloc((size_t)n * sizeof *p);
    LMC_ASSERT(p);
    for (int64_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
static float *cst(int64_t n, float v) {
    float *p = malloc((size_t)n * sizeof *p);
    LMC_ASSERT(p);
    for (int64_t i = 0; i < n; i++) p[i] = v;
    return p;
}
static struct lmc_mat mat(int64_t r, int64_t c, float scale) {
    return (struct lmc_mat){LMC_DTYPE_F32, r, c, rnd(r * c, scale)};
}

/* a Mamba-1 model of the 130M shape with n_layers layers, in host memory */
static void build(struct lmc_mamba_model *m, struct lmc_backend *be, int64_t n_layers) {
    const char *cfg = "{\"model_type\": \"mamba\", \"vocab_size\": 50280, \"hidden_size\": 768,"
                      " \"num_hidden_layers\": 24, \"state_size\": 16, \"conv_kernel\": 4,"
                      " \"expand\": 2, \"time_step_rank\": 48}";
    lmc_err err;
    memset(m, 0, sizeof *m);
    LMC_ASSERT(!lmc_mamba_config_parse(&m->cfg, cfg, strlen(cfg), "bench", &err));
    m->cfg.num_layers = n_layers;
    m->be = be;
    const struct lmc_mamba_config *c = &m->cfg;
    const int64_t H = c->hidden_size, D = c->d_inner, N = c->state_size, W = c->xproj_dim;
    m->embed = mat(c->vocab_size, H, 0.02f);
    m->lm_head = m->embed;
    m->norm_f = cst(H, 1.0f);
    m->layers = calloc((size_t)n_layers, sizeof *m->layers);
    for (int64_t l = 0; l < n_layers; l++) {
        struct lmc_mamba_layer *L = &m->layers[l];
        L->norm_w = cst(H, 1.0f);
        L->in_proj = mat(2 * D, H, 1.0f / sqrtf((float)H));
        L->conv_w = rnd(D * c->conv_kernel, 0.5f);
        L->conv_b = rnd(D, 0.1f);
        L->x_proj = mat(W, D, 1.0f / sqrtf((float)D));
        float *ext = calloc((size_t)(D * W), sizeof *ext), *A = malloc((size_t)(D * N) * 4);
        float *dtb = malloc((size_t)D * 4);
        for (int64_t d = 0; d < D; d++) {
            for (int64_t r = 0; r < c->time_step_rank; r++) ext[d * W + r] = frand() / sqrtf(48.0f);
            for (int64_t n = 0; n < N; n++) A[d * N + n] = logf((float)(n + 1));
            float dt = expf(logf(1e-3f) + (0.5f + 0.5f * frand()) * (logf(0.1f) - logf(1e-3f)));
            dtb[d] = dt + logf(-expm1f(-dt)); /* softplus^-1 */
        }
        L->dt_proj_ext = (struct lmc_mat){LMC_DTYPE_F32, D, W, ext};
        L->dt_bias = dtb;
        L->A_log = A;
        L->Dskip = cst(D, 1.0f);
        L->out_proj = mat(H, D, 1.0f / sqrtf((float)D));
    }
}
/* a Mamba-2 model of mamba2-130m's shape (24 heads x 64, state 128, 1
 * group, chunk 256), in host memory */
static void build2(struct lmc_mamba_model *m, struct lmc_backend *be) {
    const char *cfg = "{\"model_type\": \"mamba2\", \"vocab_size\": 50280, \"hidden_size\": 768,"
                      " \"num_hidden_layers\": 24, \"state_size\": 128, \"conv_kernel\": 4, \"expand\": 2,"
                      " \"num_heads\": 24, \"head_dim\": 64, \"n_groups\": 1, \"chunk_size\": 256,"
                      " \"tie_word_embeddings\": true}";
    lmc_err err;
    memset(m, 0, sizeof *m);
    LMC_ASSERT(!lmc_mamba_config_parse(&m->cfg, cfg, strlen(cfg), "bench", &err));
    m->be = be;
    const struct lmc_mamba_config *c = &m->cfg;
    const int64_t H = c->hidden_size, D = c->d_inner, NH = c->num_heads;
    m->embed = mat(c->vocab_size, H, 0.02f);
    m->lm_head = m->embed;
    m->norm_f = cst(H, 1.0f);
    m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    for (int64_t l = 0; l < c->num_layers; l++) {
        struct lmc_mamba_layer *L = &m->layers[l];
        L->norm_w = cst(H, 1.0f);
        L->in_proj = mat(c->in_proj_dim, H, 1.0f / sqrtf((float)H));
        L->conv_w = rnd(c->conv_dim * c->conv_kernel, 0.5f);
        L->conv_b = rnd(c->conv_dim, 0.1f);
        float *A = malloc((size_t)NH * 4), *dtb = malloc((size_t)NH * 4);
        for (int64_t h = 0; h < NH; h++) {
            A[h] = logf((float)(1 + h % 16));
            float dt = expf(logf(1e-3f) + (0.5f + 0.5f * frand()) * (logf(0.1f) - logf(1e-3f)));
            dtb[h] = dt + logf(-expm1f(-dt));
        }
        L->A_log = A;
        L->dt_bias = dtb;
        L->Dskip = cst(NH, 1.0f);
        L->gnorm_w = cst(D, 1.0f);
        L->out_proj = mat(H, D, 1.0f / sqrtf((float)D));
    }
}

static void unbuild(struct lmc_mamba_model *m) {
    for (int64_t l = 0; l < m->cfg.num_layers; l++) {
        struct lmc_mamba_layer *L = &m->layers[l];
        free((void *)L->norm_w), free((void *)L->in_proj.data), free((void *)L->conv_w);
        free((void *)L->conv_b), free((void *)L->x_proj.data), free((void *)L->dt_proj_ext.data);
        free((void *)L->dt_bias), free((void *)L->A_log), free((void *)L->Dskip);
        free((void *)L->out_proj.data), free((void *)L->gnorm_w);
    }
    free(m->layers), free((void *)m->embed.data), free((void *)m->norm_f);
}

/* decode ms/token over `steps` steps from the state in st */
static double decode_ms(struct lmc_mamba_model *m, struct lmc_mamba_state *st, int steps) {
    double t[64];
    int32_t tok = 17;
    float *lg = malloc((size_t)m->cfg.vocab_size * 4);
    lmc_err err;
    LMC_ASSERT(steps <= 64);
    LMC_ASSERT(!lmc_mamba_forward(m, st, NULL, &tok, 1, 1, lg, &err)); /* warm-up */
    for (int i = 0; i < steps; i++) {
        double t0 = lmc_time_now();
        LMC_ASSERT(!lmc_mamba_forward(m, st, NULL, &tok, 1, 1, lg, &err));
        t[i] = (lmc_time_now() - t0) * 1e3;
        tok = (int32_t)((tok * 31 + 7) % m->cfg.vocab_size);
    }
    free(lg);
    return bench_median(t, steps);
}

/* prefill of T tokens (median of up to 3) and batch-1 decode of a whole
 * model, printed as `name`; frees the model */
static void whole_model(const char *name, struct lmc_mamba_model *m, int64_t T, int reps) {
    lmc_err err;
    double t[64];
    int32_t *ids = malloc((size_t)T * 4);
    for (int64_t i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919) % 50280);
    float *lg = malloc((size_t)m->cfg.vocab_size * 4);
    struct lmc_mamba_state st;
    LMC_ASSERT(!lmc_mamba_state_init(&st, m, 1, &err));
    int pr = reps < 3 ? reps : 3;
    for (int r = -1; r < pr; r++) {
        lmc_mamba_state_reset(&st, m, 0);
        double t0 = lmc_time_now();
        /* all rows through the blocks, the head on the last row only: prefill
         * T-1 tokens without logits, then the last token */
        LMC_ASSERT(!lmc_mamba_forward(m, &st, NULL, ids, 1, T - 1 > 0 ? T - 1 : 1, NULL, &err));
        LMC_ASSERT(!lmc_mamba_forward(m, &st, NULL, ids + T - 1, 1, 1, lg, &err));
        if (r >= 0) t[r] = lmc_time_now() - t0;
    }
    printf("%s (random F32, 24 layers) prefill %lld tokens: %.1f tokens/s\n", name, (long long)T,
           (double)T / bench_median(t, pr));
    const double dm = decode_ms(m, &st, 16);
    printf("%s decode (batch 1): %.2f ms/token (%.1f tokens/s); state %zu bytes/sequence\n", name, dm, 1e3 / dm,
           lmc_mamba_state_bytes(&m->cfg));
    lmc_mamba_state_free(&st, m);
    free(ids), free(lg);
    unbuild(m);
}

int main(int argc, char **argv) {
    int threads = 2, reps = 5;
    int64_t T = 512, ctx_long = 16384;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-T")) T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) ctx_long = atoll(argv[i + 1]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (reps < 1 || reps > 64 || T < 1 || ctx_long < 1024) {
        fprintf(stderr, "usage: bench_ssm [-t threads] [-r repeats 1..64] [-T tokens] [-c context >= 1024]\n");
        return 2;
    }
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cpu_init(&be, threads, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("bench_ssm: %d threads, %d repeats, prefill T=%lld\n", threads, reps, (long long)T);
    const double wall0 = lmc_time_now();
    double t[64];
    { /* 1. ops alone */
        const int64_t D = 1536, N = 16, K = 4, W = 80;
        float *xz = rnd(T * 2 * D, 1), *w = rnd(D * K, 0.5f), *b = rnd(D, 0.1f), *u = rnd(T * D, 1);
        float *delta = rnd(T * D, 1), *Al = rnd(D * N, 1), *bc = rnd(T * W, 1), *Dk = cst(D, 1);
        float *dtb = cst(D, -4.0f), *y = malloc((size_t)(T * D) * 4);
        struct lmc_ssm_io io = {u, delta, dtb, Al, bc + 48, bc + 48 + N, W, Dk, xz + D, 2 * D};
        for (int r = -1; r < reps; r++) {
            double t0 = lmc_time_now();
            be.conv1d_causal(be.ctx, u, xz, 2 * D, w, b, NULL, NULL, 1, T, D, K, 1);
            be.ssm_scan(be.ctx, y, &io, NULL, NULL, 1, T, D, N);
            if (r >= 0) t[r] = lmc_time_now() - t0;
        }
        printf("mamba-130m mixer core (conv1d_causal + ssm_scan, D=1536 N=16), one layer: %.0f tokens/s (%.3f ms for %lld tokens)\n",
               (double)T / bench_median(t, reps), bench_median(t, reps) * 1e3, (long long)T);
        free(xz), free(w), free(b), free(u), free(delta), free(Al), free(bc), free(Dk), free(dtb), free(y);
        const int64_t H2 = 24, P = 64, N2 = 128, GN = N2, ldx = H2 * P + 2 * GN;
        float *xbc = rnd(T * ldx, 1), *dt = rnd(T * H2, 1), *dtb2 = cst(H2, -4.0f);
        float *Al2 = malloc((size_t)H2 * 4), *D2 = cst(H2, 1), *y2 = malloc((size_t)(T * H2 * P) * 4);
        for (int64_t h = 0; h < H2; h++) Al2[h] = logf((float)(1 + h % 16));
        struct lmc_ssd_io io2 = {xbc, xbc + H2 * P, xbc + H2 * P + GN, ldx, dt, H2, dtb2, Al2, D2, 0, INFINITY};
        struct lmc_ssd_shape sh = {1, T, H2, P, 1, N2, 256};
        for (int r = -1; r < reps; r++) {
            double t0 = lmc_time_now();
            be.ssd_chunk(be.ctx, y2, &io2, NULL, NULL, &sh);
            if (r >= 0) t[r] = lmc_time_now() - t0;
        }
        printf("mamba2-130m ssd_chunk (24 heads x 64, N=128, chunk 256), one layer: %.0f tokens/s\n",
               (double)T / bench_median(t, reps));
        free(xbc), free(dt), free(dtb2), free(Al2), free(D2), free(y2);
    }
    { /* 2. the whole 130M model, then (2b) the whole Mamba-2 130M shape */
        struct lmc_mamba_model m;
        build(&m, &be, 24);
        whole_model("mamba-130m", &m, T, reps);
        build2(&m, &be);
        whole_model("mamba2-130m", &m, T, reps);
    }
    { /* 3. decode cost vs context: two slots of one state pool, one advanced
       * to 1k tokens and one to the long context (chunked prefill), then
       * decode steps alternating between them (interleaved: the machine's
       * load drifts), medians */
        struct lmc_mamba_model m;
        build(&m, &be, 2);
        struct lmc_mamba_state st;
        LMC_ASSERT(!lmc_mamba_state_init(&st, &m, 2, &err));
        const int64_t chunk = 1024, ctxs[2] = {1024, ctx_long};
        int32_t *ids = malloc((size_t)chunk * 4);
        for (int64_t i = 0; i < chunk; i++) ids[i] = (int32_t)((i * 104729) % 50280);
        for (int32_t k = 0; k < 2; k++)
            for (int64_t done = 0; done < ctxs[k]; done += chunk)
                LMC_ASSERT(!lmc_mamba_forward(&m, &st, &k, ids, 1, chunk, NULL, &err));
        float *lg = malloc((size_t)m.cfg.vocab_size * 4);
        double ms[2][64];
        const int steps = 32;
        for (int i = -1; i < steps; i++)
            for (int32_t k = 0; k < 2; k++) {
                int32_t tok = (int32_t)(17 + (i + 1) * 31 + k);
                double t0 = lmc_time_now();
                LMC_ASSERT(!lmc_mamba_forward(&m, &st, &k, &tok, 1, 1, lg, &err));
                if (i >= 0) ms[k][i] = (lmc_time_now() - t0) * 1e3;
            }
        const double m0 = bench_median(ms[0], steps), m1 = bench_median(ms[1], steps);
        printf("2-layer 130M-width model (head included), decode interleaved: after %lld tokens %.3f ms/token, "
               "after %lld tokens %.3f ms/token (ratio %.3f); state %zu bytes/sequence either way\n",
               (long long)ctxs[0], m0, (long long)ctxs[1], m1, m1 / m0, lmc_mamba_state_bytes(&m.cfg));
        free(lg);
        lmc_mamba_state_free(&st, &m);
        free(ids);
        unbuild(&m);
    }
    lmc_backend_cpu_free(&be);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                         ru.ru_stime.tv_usec * 1e-6;
    printf("CPU time %.1f s over %.1f s wall: %.2f of the %d threads' cores on average (1.0 each = unloaded)\n",
           cpu_s, lmc_time_now() - wall0, cpu_s / (lmc_time_now() - wall0) / threads, threads);
    return 0;
}
