/* bench_cpu.c — CPU inference benchmark on a random-weight ~125M Llama in
 * HF layout (F16 and F32 copies written once under /tmp): prefill tok/s for
 * a 512-token prompt and decode tok/s over 128 tokens, each against peers
 * measured in the same run (memory read bandwidth -> decode roofline, and
 * OpenBLAS sgemm on the prefill GEMM shapes -> prefill roofline). The
 * engine peer (llama.cpp on the same weights) is run by bench/run_cpu.sh,
 * interleaved with this program: each model's medians also go to stderr as
 * "bench_cpu: result f16|f32 prefill_tok_s X decode_tok_s Y".
 *
 * Each model is measured in a fresh child process (this binary re-executed
 * with --child) so that peak RSS (ru_maxrss) belongs to that model alone.
 * Prints a Markdown table on stdout; progress goes to stderr.
 *
 *   bench_cpu [--dir16 D] [--dir32 D] [--threads N] [--prompt N] [--decode N]
 *             [--prefill-reps N] [--decode-reps N] [--only f16|f32]
 */
#include "core/core.h"
#include "core/dtype.h"
#include "core/membw.h"
#include "core/rng.h"
#include "core/threadpool.h"
#include "infer/sampler.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "ops/backend.h"
#include "bench_util.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The model: Llama architecture, ~125M parameters. */
#define B_HIDDEN 768
#define B_LAYERS 12
#define B_HEADS 12
#define B_KV 4
#define B_HD 64
#define B_INTER 2048
#define B_VOCAB 32000
#define B_MAXPOS 2048

struct opts {
    const char *dir[2]; /* F16, F32 */
    int threads;
    int prompt;         /* prefill length */
    int decode;         /* decoded tokens per repetition */
    int decode_prompt;  /* short prompt before decoding */
    int prefill_reps, decode_reps;
    int only;           /* -1 both, 0 f16, 1 f32 */
};

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_cpu: %s: %s\n", what, e ? e->msg : "failed");
    exit(1);
}

/* VmRSS of this process in bytes (0 if unreadable). */
static size_t rss_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}
static size_t rss_peak(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

/* CPU seconds the whole machine spent busy (incl. steal), from /proc/stat. */
static double machine_busy_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return 0;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}
/* CPU seconds used by this process and its waited-for children. */
static double own_cpu_s(void) {
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec +
           1e-6 * (a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec);
}

/* ---------------------------------------------------------------- model */

/* Parameter counts (elements). */
static int64_t layer_mat_params(void) {
    int64_t C = B_HIDDEN, q = B_HEADS * B_HD, kv = B_KV * B_HD, FF = B_INTER;
    return q * C + 2 * kv * C + C * q + 3 * FF * C;
}
static int64_t total_params(void) {
    return B_LAYERS * (layer_mat_params() + 2 * B_HIDDEN) + 2 * (int64_t)B_VOCAB * B_HIDDEN +
           B_HIDDEN;
}

/* Bytes read per decoded token with matrices of esz bytes: layer matrices,
 * lm_head, one embedding row, norm vectors (f32). Not the KV cache. */
static double decode_bytes(double esz) {
    double mats = (double)layer_mat_params() * B_LAYERS + (double)B_VOCAB * B_HIDDEN;
    return mats * esz + B_HIDDEN * esz + (2.0 * B_LAYERS + 1) * B_HIDDEN * 4;
}

/* Buffer for the memory bandwidth peer: large enough to defeat caches. */
#define BW_BYTES ((size_t)1 << 30)

static void config_text(char *buf, size_t cap, bool f16) {
    snprintf(buf, cap,
             "{\n"
             "  \"architectures\": [\"LlamaForCausalLM\"],\n"
             "  \"attention_bias\": false,\n"
             "  \"attention_dropout\": 0.0,\n"
             "  \"bos_token_id\": 1,\n"
             "  \"dtype\": \"%s\",\n"
             "  \"eos_token_id\": 2,\n"
             "  \"head_dim\": %d,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %d,\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"intermediate_size\": %d,\n"
             "  \"max_position_embeddings\": %d,\n"
             "  \"mlp_bias\": false,\n"
             "  \"model_type\": \"llama\",\n"
             "  \"num_attention_heads\": %d,\n"
             "  \"num_hidden_layers\": %d,\n"
             "  \"num_key_value_heads\": %d,\n"
             "  \"pad_token_id\": null,\n"
             "  \"pretraining_tp\": 1,\n"
             "  \"rms_norm_eps\": 1e-05,\n"
             "  \"rope_parameters\": {\n"
             "    \"rope_theta\": 10000.0,\n"
             "    \"rope_type\": \"default\"\n"
             "  },\n"
             "  \"tie_word_embeddings\": false,\n"
             "  \"transformers_version\": \"5.0.0\",\n"
             "  \"use_cache\": true,\n"
             "  \"vocab_size\": %d\n"
             "}\n",
             f16 ? "float16" : "float32", B_HD, B_HIDDEN, B_INTER, B_MAXPOS, B_HEADS, B_LAYERS,
             B_KV, B_VOCAB);
}

/* Normal(0, std) values rounded to f16 (both files hold the same weights). */
static void fill_normal_f16(uint16_t *out, int64_t n, float std, uint64_t *rng) {
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = lmc_rng_uniform(rng), u2 = lmc_rng_uniform(rng);
        if (u1 < 1e-300) u1 = 1e-300;
        double r = sqrt(-2.0 * log(u1)) * std;
        out[i] = lmc_f32_to_f16((float)(r * cos(2 * M_PI * u2)));
        if (i + 1 < n) out[i + 1] = lmc_f32_to_f16((float)(r * sin(2 * M_PI * u2)));
    }
}

#define N_TENSORS (3 + 9 * B_LAYERS)

/* Writes both models (F16 into dir[0], F32 into dir[1]) unless a folder
 * already holds the same config.json and a model.safetensors. */
static void ensure_models(const struct opts *o) {
    bool need[2] = {false, false};
    for (int d = 0; d < 2; d++) {
        if (o->only >= 0 && o->only != d) continue;
        char want[2048], path[4096];
        config_text(want, sizeof want, d == 0);
        lmc_path_join(path, sizeof path, o->dir[d], "config.json");
        char *have = NULL;
        size_t len = 0;
        lmc_err e;
        bool same = lmc_file_read(path, 1 << 20, &have, &len, &e) == LMC_OK &&
                    strcmp(have, want) == 0;
        free(have);
        lmc_path_join(path, sizeof path, o->dir[d], "model.safetensors");
        struct stat sb;
        need[d] = !(same && stat(path, &sb) == 0 &&
                    (int64_t)sb.st_size > total_params() * (d == 0 ? 2 : 4));
        if (!need[d]) fprintf(stderr, "bench_cpu: reusing %s\n", o->dir[d]);
    }
    if (!need[0] && !need[1]) return;

    /* Generate every tensor once in f16 (norms 1.0, the rest N(0, 0.02)). */
    static char names[N_TENSORS][80];
    struct lmc_st_write_tensor t[N_TENSORS];
    uint16_t *h[N_TENSORS];
    int64_t numel[N_TENSORS];
    int n = 0;
    uint64_t rng = 0x6c6d632d62656e63ull;
    const int64_t C = B_HIDDEN, q = B_HEADS * B_HD, kv = B_KV * B_HD, FF = B_INTER;
#define ADD(nm, r, c)                                                                     \
    do {                                                                                  \
        snprintf(names[n], sizeof names[n], "%s", nm);                                    \
        memset(&t[n], 0, sizeof t[n]);                                                    \
        t[n].name = names[n];                                                             \
        t[n].ndim = (c) ? 2 : 1;                                                          \
        t[n].shape[0] = (r);                                                              \
        t[n].shape[1] = (c);                                                              \
        numel[n] = (r) * ((c) ? (c) : 1);                                                 \
        h[n] = malloc((size_t)numel[n] * 2);                                              \
        if (!h[n]) die("out of memory generating weights", NULL);                         \
        if (c)                                                                            \
            fill_normal_f16(h[n], numel[n], 0.02f, &rng);                                 \
        else                                                                              \
            for (int64_t i_ = 0; i_ < numel[n]; i_++) h[n][i_] = lmc_f32_to_f16(1.0f);    \
        n++;                                                                              \
    } while (0)
    fprintf(stderr, "bench_cpu: generating %.1fM random weights\n", total_params() / 1e6);
    char nm[80];
    ADD("model.embed_tokens.weight", (int64_t)B_VOCAB, C);
    for (int l = 0; l < B_LAYERS; l++) {
#define LNAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        ADD(LNAME("input_layernorm.weight"), C, 0);
        ADD(LNAME("post_attention_layernorm.weight"), C, 0);
        ADD(LNAME("self_attn.q_proj.weight"), q, C);
        ADD(LNAME("self_attn.k_proj.weight"), kv, C);
        ADD(LNAME("self_attn.v_proj.weight"), kv, C);
        ADD(LNAME("self_attn.o_proj.weight"), C, q);
        ADD(LNAME("mlp.gate_proj.weight"), FF, C);
        ADD(LNAME("mlp.up_proj.weight"), FF, C);
        ADD(LNAME("mlp.down_proj.weight"), C, FF);
#undef LNAME
    }
    ADD("model.norm.weight", C, 0);
    ADD("lm_head.weight", (int64_t)B_VOCAB, C);
#undef ADD
    LMC_ASSERT(n == N_TENSORS);

    static const char *meta[] = {"format", "pt"};
    for (int d = 0; d < 2; d++) {
        if (!need[d]) continue;
        void *conv[N_TENSORS] = {0};
        for (int i = 0; i < n; i++) {
            if (d == 0) {
                t[i].dtype = LMC_DTYPE_F16;
                t[i].data = h[i];
            } else {
                float *f = malloc((size_t)numel[i] * 4);
                if (!f) die("out of memory converting weights", NULL);
                for (int64_t j = 0; j < numel[i]; j++) f[j] = lmc_f16_to_f32(h[i][j]);
                conv[i] = f;
                t[i].dtype = LMC_DTYPE_F32;
                t[i].data = f;
            }
        }
        lmc_err e;
        char path[4096], cfg[2048];
        if (mkdir(o->dir[d], 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "bench_cpu: cannot create %s: %s\n", o->dir[d], strerror(errno));
            exit(1);
        }
        lmc_path_join(path, sizeof path, o->dir[d], "config.json");
        unlink(path); /* an interrupted write must not look complete */
        lmc_path_join(path, sizeof path, o->dir[d], "model.safetensors");
        fprintf(stderr, "bench_cpu: writing %s\n", path);
        if (lmc_st_write(path, t, n, meta, 1, &e) != LMC_OK) die("writing safetensors", &e);
        /* config.json last: its presence marks a complete folder */
        config_text(cfg, sizeof cfg, d == 0);
        lmc_path_join(path, sizeof path, o->dir[d], "config.json");
        FILE *f = fopen(path, "w");
        if (!f || fputs(cfg, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "bench_cpu: cannot write %s\n", path);
            exit(1);
        }
        for (int i = 0; i < n; i++) free(conv[i]);
    }
    for (int i = 0; i < n; i++) free(h[i]);
}

/* ------------------------------------------------------------- peers */

/* The prefill GEMM shapes y(M=prompt, N) = x(M, K) w(N, K)^T; per_layer is
 * how many of each a layer runs (lm_head: only with all-logits prefill). */
struct gemm_shape {
    int64_t N, K, per_layer;
    const char *what;
};
static const struct gemm_shape SHAPES[] = {
    {B_HIDDEN, B_HIDDEN, 2, "q_proj, o_proj"},
    {B_KV * B_HD, B_HIDDEN, 2, "k_proj, v_proj"},
    {B_INTER, B_HIDDEN, 2, "gate_proj, up_proj"},
    {B_HIDDEN, B_INTER, 1, "down_proj"},
    {B_VOCAB, B_HIDDEN, 0, "lm_head, all-logits only"},
};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

/* OpenBLAS sgemm GFLOP/s for y(M,N) = x(M,K) w(N,K)^T on random non-zero
 * data: one warm-up, median of reps. */
static double sgemm_gflops(int64_t M, int64_t N, int64_t K, int reps) {
    float *x = malloc((size_t)(M * K) * 4), *w = malloc((size_t)(N * K) * 4),
          *y = malloc((size_t)(M * N) * 4);
    if (!x || !w || !y) die("out of memory (sgemm)", NULL);
    uint64_t rng = 99;
    for (int64_t i = 0; i < M * K; i++) x[i] = (float)lmc_rng_uniform(&rng) - 0.5f;
    for (int64_t i = 0; i < N * K; i++) w[i] = 0.02f * ((float)lmc_rng_uniform(&rng) - 0.5f);
    double t[32];
    reps = LMC_MIN(reps, 32);
    for (int r = -1; r < reps; r++) {
        double t0 = lmc_time_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x,
                    (int)K, w, (int)K, 0.0f, y, (int)N);
        if (r >= 0) t[r] = lmc_time_now() - t0;
    }
    double med = bench_median(t, reps);
    free(x);
    free(w);
    free(y);
    return 2.0 * M * N * K / med * 1e-9;
}

/* Lets spinning worker threads (ours, OpenBLAS's) go to sleep so that the
 * next phase has both cores. */
static void settle(void) {
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static double membw(int threads, size_t bytes) {
    lmc_err e;
    struct lmc_pool *pool;
    if (lmc_pool_init(&pool, threads, &e) != LMC_OK) die("thread pool", &e);
    double bw = lmc_membw_read_gbs(pool, bytes);
    lmc_pool_free(pool);
    if (bw <= 0) die("memory bandwidth measurement failed", NULL);
    return bw;
}

/* ------------------------------------------------------ child: one model */

static void fwd(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_acts *a,
                struct lmc_kv *kv, const int32_t *ids, int64_t n, int64_t pos0, float *logits) {
    lmc_err e;
    if (lmc_model_forward(m, be, a, kv, ids, n, pos0, logits, false, &e) != LMC_OK)
        die("forward", &e);
}

/* Loads dir, checks, then times prefill and decode, the latter between two
 * memory bandwidth measurements (the machine may be shared; the parent
 * measures sgemm just before starting this process). Prints "R key value"
 * lines on stdout. */
static int child_main(const struct opts *o, const char *dir) {
    lmc_err e;
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, o->threads, &e) != LMC_OK) die("cpu backend", &e);
    struct lmc_model m;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_AUTO, .be = &be};
    double t0 = lmc_time_now();
    if (lmc_model_load(&m, dir, &mo, &e) != LMC_OK) die(dir, &e);
    double load_s = lmc_time_now() - t0;
    size_t rss_load = rss_now();

    const int64_t V = m.cfg.vocab_size;
    int64_t ctx = LMC_MAX((int64_t)o->prompt, (int64_t)(o->decode_prompt + o->decode + 1));
    struct lmc_kv kv;
    struct lmc_acts acts;
    if (lmc_kv_init(&kv, &m, &be, ctx, &e) != LMC_OK) die("kv cache", &e);
    if (lmc_acts_init(&acts, &m, &be, o->prompt, 1, &e) != LMC_OK) die("activations", &e);
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    int32_t *ids = malloc((size_t)ctx * sizeof(int32_t));
    if (!la || !lb || !ids) die("out of memory", NULL);
    uint64_t rng = 1234;
    for (int64_t i = 0; i < ctx; i++) ids[i] = (int32_t)(3 + lmc_rng_next(&rng) % (uint64_t)(V - 3));

    /* Check: the last logits of a 17-token prefill equal those of a 16-token
     * prefill followed by one decode step (GEMM path vs dot path + cache);
     * all finite and not all zero. */
    int64_t np = LMC_MIN((int64_t)o->decode_prompt, ctx - 1);
    fwd(&m, &be, &acts, &kv, ids, np + 1, 0, la);
    fwd(&m, &be, &acts, &kv, ids, np, 0, lb);
    fwd(&m, &be, &acts, &kv, ids + np, 1, np, lb);
    double amax = 0, dmax = 0;
    bool finite = true;
    for (int64_t i = 0; i < V; i++) {
        finite = finite && isfinite(la[i]) && isfinite(lb[i]);
        amax = fmax(amax, fabs(la[i]));
        dmax = fmax(dmax, fabs((double)la[i] - lb[i]));
    }
    double relerr = amax > 0 ? dmax / amax : INFINITY;
    bool ok = finite && amax > 0 && relerr <= 1e-4;
    fprintf(stderr, "bench_cpu: %s: check prefill(%lld) vs prefill(%lld)+decode: max rel err %.2e (%s)\n",
            dir, (long long)np + 1, (long long)np, relerr, ok ? "ok" : "FAILED");

    /* Prefill: one forward over the whole prompt, last token's logits. */
    double *pt = malloc((size_t)o->prefill_reps * sizeof(double));
    fwd(&m, &be, &acts, &kv, ids, o->prompt, 0, la); /* warm-up */
    for (int r = 0; r < o->prefill_reps; r++) {
        t0 = lmc_time_now();
        fwd(&m, &be, &acts, &kv, ids, o->prompt, 0, la);
        pt[r] = lmc_time_now() - t0;
        fprintf(stderr, "bench_cpu: %s: prefill %d: %.3f s (%.1f tok/s)\n", dir, r, pt[r],
                o->prompt / pt[r]);
    }
    double prefill_min = pt[0];
    for (int r = 1; r < o->prefill_reps; r++) prefill_min = fmin(prefill_min, pt[r]);
    double prefill_med = bench_median(pt, o->prefill_reps);

    /* Decode: short prompt, then one token per forward, greedy next id, as
     * generation does. Repetition -1 is a warm-up. Bandwidth around it. */
    size_t rss_prefill = rss_now(), peak = rss_peak(); /* before the bandwidth buffers */
    size_t ws = (size_t)decode_bytes(m.w.head.w.dtype == LMC_DTYPE_F32 ? 4 : 2);
    double bw[2][2]; /* [before, after][1 GB, decode working set] */
    for (int k = 0; k < 2; k++) {
        settle();
        bw[0][k] = membw(o->threads, k ? ws : BW_BYTES);
    }
    fprintf(stderr, "bench_cpu: %s: read bandwidth before decode %.2f GB/s (1 GB), %.2f GB/s (%.0f MB)\n",
            dir, bw[0][0], bw[0][1], ws / 1e6);
    settle();
    int nd = o->decode;
    double *tt = malloc((size_t)nd * o->decode_reps * sizeof(double));
    double *tot = malloc((size_t)o->decode_reps * sizeof(double));
    for (int r = -1; r < o->decode_reps; r++) {
        fwd(&m, &be, &acts, &kv, ids, np, 0, la);
        int32_t next = lmc_argmax(la, V);
        double start = lmc_time_now();
        for (int i = 0; i < nd; i++) {
            double s = lmc_time_now();
            fwd(&m, &be, &acts, &kv, &next, 1, np + i, la);
            double dt = lmc_time_now() - s;
            if (r >= 0) tt[(size_t)r * nd + i] = dt;
            next = lmc_argmax(la, V);
        }
        if (r >= 0) {
            tot[r] = lmc_time_now() - start;
            fprintf(stderr, "bench_cpu: %s: decode %d: %d tokens in %.3f s (%.1f tok/s)\n", dir, r,
                    nd, tot[r], nd / tot[r]);
        }
    }
    double tok_med = bench_median(tt, nd * o->decode_reps);
    double tot_med = bench_median(tot, o->decode_reps);
    for (int k = 0; k < 2; k++) {
        settle();
        bw[1][k] = membw(o->threads, k ? ws : BW_BYTES);
    }
    fprintf(stderr, "bench_cpu: %s: read bandwidth after decode %.2f GB/s (1 GB), %.2f GB/s (%.0f MB)\n",
            dir, bw[1][0], bw[1][1], ws / 1e6);

    printf("R check_ok %d\nR check_relerr %.3e\nR load_s %.4f\nR rss_load %zu\n", ok, relerr,
           load_s, rss_load);
    printf("R prefill_med_s %.6f\nR prefill_min_s %.6f\n", prefill_med, prefill_min);
    printf("R decode_tok_med_s %.7f\nR decode_total_med_s %.6f\n", tok_med, tot_med);
    printf("R bw_pre %.3f\nR bw_post %.3f\nR bws_pre %.3f\nR bws_post %.3f\n", bw[0][0],
           bw[1][0], bw[0][1], bw[1][1]);
    printf("R rss_prefill %zu\nR rss_peak %zu\nR n_params %lld\nR weight_bytes %zu\n",
           rss_prefill, peak, (long long)m.n_params, m.weight_bytes);
    fflush(stdout);
    free(pt);
    free(tt);
    free(tot);
    free(la);
    free(lb);
    free(ids);
    lmc_acts_free(&acts);
    lmc_kv_free(&kv);
    lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
    return ok ? 0 : 2;
}

/* ------------------------------------------------------------- parent */

struct result {
    bool have;
    int check_ok;
    double check_relerr, load_s, prefill_med_s, prefill_min_s, decode_tok_med_s,
        decode_total_med_s, bw_pre, bw_post, bws_pre, bws_post;
    double rss_load, rss_prefill, rss_peak, n_params, weight_bytes;
    double sgemm[N_SHAPES];
    double others;      /* share of the machine's CPUs other processes used meanwhile */
};

static void run_child(const struct opts *o, int d, struct result *r) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "/proc/%d/exe --child --dir '%s' --threads %d --prompt %d --decode %d "
             "--decode-prompt %d --prefill-reps %d --decode-reps %d",
             (int)getpid(), o->dir[d], o->threads, o->prompt, o->decode, o->decode_prompt,
             o->prefill_reps, o->decode_reps);
    FILE *p = popen(cmd, "r");
    if (!p) {
        fprintf(stderr, "bench_cpu: cannot run %s\n", cmd);
        exit(1);
    }
    memset(r, 0, sizeof *r);
    char line[512], key[64];
    double v;
    while (fgets(line, sizeof line, p)) {
        if (sscanf(line, "R %63s %lf", key, &v) != 2) continue;
        r->have = true;
#define K(f) else if (!strcmp(key, #f)) r->f = v
        if (0) {}
        K(check_relerr); K(load_s); K(prefill_med_s); K(prefill_min_s); K(decode_tok_med_s);
        K(decode_total_med_s); K(bw_pre); K(bw_post); K(bws_pre); K(bws_post); K(rss_load);
        K(rss_prefill); K(rss_peak);
        K(n_params); K(weight_bytes);
        else if (!strcmp(key, "check_ok")) r->check_ok = (int)v;
#undef K
    }
    int rc = pclose(p);
    if (rc != 0 || !r->have) {
        fprintf(stderr, "bench_cpu: child for %s failed (status %d)\n", o->dir[d], rc);
        exit(1);
    }
}

static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && c) {
            c += 2;
            c[strcspn(c, "\n")] = 0;
            snprintf(buf, cap, "%s", c);
            break;
        }
    }
    fclose(f);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_cpu [--dir16 DIR] [--dir32 DIR] [--threads N] [--prompt N] [--decode N]\n"
            "                 [--decode-prompt N] [--prefill-reps N] [--decode-reps N] [--only f16|f32]\n");
    exit(1);
}

int main(int argc, char **argv) {
    struct opts o = {{"/tmp/lmc-bench-125m-f16", "/tmp/lmc-bench-125m-f32"}, 2, 512, 128, 16, 5, 3, -1};
    bool child = false;
    const char *child_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--child")) { child = true; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--dir16")) o.dir[0] = v;
        else if (!strcmp(a, "--dir32")) o.dir[1] = v;
        else if (!strcmp(a, "--dir")) child_dir = v;
        else if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else if (!strcmp(a, "--prompt")) o.prompt = atoi(v);
        else if (!strcmp(a, "--decode")) o.decode = atoi(v);
        else if (!strcmp(a, "--decode-prompt")) o.decode_prompt = atoi(v);
        else if (!strcmp(a, "--prefill-reps")) o.prefill_reps = atoi(v);
        else if (!strcmp(a, "--decode-reps")) o.decode_reps = atoi(v);
        else if (!strcmp(a, "--only")) o.only = !strcmp(v, "f16") ? 0 : !strcmp(v, "f32") ? 1 : -2;
        else usage();
    }
    if (o.threads < 1 || o.prompt < 2 || o.prompt > B_MAXPOS || o.decode < 1 ||
        o.decode_prompt < 1 || o.decode_prompt + o.decode + 1 > B_MAXPOS || o.prefill_reps < 1 ||
        o.decode_reps < 1 || o.only == -2)
        usage();
    if (child) {
        if (!child_dir) usage();
        return child_main(&o, child_dir);
    }

    double t_start = lmc_time_now();
    ensure_models(&o);
    struct result res[2];
    memset(res, 0, sizeof res);
    for (int d = 0; d < 2; d++) {
        if (o.only >= 0 && o.only != d) continue;
        /* Peer for prefill, just before the model's process: OpenBLAS sgemm
         * with its own threads (kept out of the child's peak RSS). */
        double sg[N_SHAPES];
        double b0 = machine_busy_s(), c0 = own_cpu_s(), w0 = lmc_time_now();
        openblas_set_num_threads(o.threads);
        for (int s = 0; s < N_SHAPES; s++) {
            sg[s] = sgemm_gflops(o.prompt, SHAPES[s].N, SHAPES[s].K, SHAPES[s].N > 10000 ? 5 : 9);
            fprintf(stderr, "bench_cpu: sgemm %dx%lldx%lld: %.1f GFLOP/s\n", o.prompt,
                    (long long)SHAPES[s].N, (long long)SHAPES[s].K, sg[s]);
        }
        settle();
        fprintf(stderr, "bench_cpu: measuring %s\n", o.dir[d]);
        run_child(&o, d, &res[d]);
        memcpy(res[d].sgemm, sg, sizeof sg);
        res[d].others = ((machine_busy_s() - b0) - (own_cpu_s() - c0)) /
                        ((lmc_time_now() - w0) * (double)sysconf(_SC_NPROCESSORS_ONLN));
        fprintf(stderr, "bench_cpu: other processes used %.0f%% of the CPUs meanwhile\n",
                100.0 * fmax(0.0, res[d].others));
    }

    /* Work per prefill and per decoded token. */
    const int64_t C = B_HIDDEN, P = o.prompt;
    double layer_gemm_flops[N_SHAPES], gemm_flops = 0;
    for (int s = 0; s < N_SHAPES; s++) {
        layer_gemm_flops[s] = 2.0 * P * SHAPES[s].N * SHAPES[s].K * SHAPES[s].per_layer * B_LAYERS;
        gemm_flops += layer_gemm_flops[s];
    }
    double attn_flops = 2.0 * B_HD * B_HEADS * B_LAYERS * (double)P * (double)(P + 1);
    double prefill_flops = gemm_flops + 2.0 * B_VOCAB * C + attn_flops;
    double kv_avg = 2.0 * B_LAYERS * (o.decode_prompt + o.decode / 2.0) * B_KV * B_HD * 4;
    /* Per model: time the layer GEMMs would take at the measured sgemm rates. */
    double gemm_time[2] = {0, 0}, bw[2] = {0, 0}, bws[2] = {0, 0};
    for (int d = 0; d < 2; d++) {
        if (!res[d].have) continue;
        for (int s = 0; s < N_SHAPES; s++)
            gemm_time[d] += layer_gemm_flops[s] / (res[d].sgemm[s] * 1e9);
        bw[d] = fmax(res[d].bw_pre, res[d].bw_post);
        bws[d] = fmax(res[d].bws_pre, res[d].bws_post);
    }

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    printf("### lmc CPU inference, random-weight Llama %.1fM (hidden %d, %d layers, %d heads / %d kv, "
           "inter %d, vocab %d), %d threads\n\n",
           total_params() / 1e6, B_HIDDEN, B_LAYERS, B_HEADS, B_KV, B_INTER, B_VOCAB, o.threads);
    printf("CPU: %s, %ld online CPUs; %s (core %s)\n\n", cpu, sysconf(_SC_NPROCESSORS_ONLN),
           openblas_get_config(), openblas_get_corename());
    printf("| | F16 | F32 |\n|---|---:|---:|\n");
#define ROW(label, fmt, ...)                                                          \
    do {                                                                              \
        printf("| %s |", label);                                                      \
        for (int d = 0; d < 2; d++) {                                                 \
            const struct result *r = &res[d];                                         \
            double esz = d == 0 ? 2.0 : 4.0;                                          \
            (void)esz;                                                                \
            if (!r->have) printf(" — |");                                             \
            else printf(" " fmt " |", __VA_ARGS__);                                    \
        }                                                                             \
        printf("\n");                                                                 \
    } while (0)
#define PREFILL_TPS (P / r->prefill_med_s)
#define DEC_BYTES decode_bytes(esz)
#define ROOF_TPS (bw[d] * 1e9 / DEC_BYTES)
#define DEC_TPS (1.0 / r->decode_tok_med_s)
    char lab[256];
    snprintf(lab, sizeof lab, "**prefill tok/s** (%lld-token prompt, median of %d)", (long long)P,
             o.prefill_reps);
    ROW(lab, "**%.1f**", PREFILL_TPS);
    ROW("prefill tok/s, best run", "%.1f", P / r->prefill_min_s);
    ROW("prefill GFLOP/s achieved (GEMMs + attention)", "%.1f", prefill_flops / r->prefill_med_s * 1e-9);
    snprintf(lab, sizeof lab, "OpenBLAS sgemm GFLOP/s on the layers' GEMM mix (M=%lld, %d threads)",
             (long long)P, o.threads);
    ROW(lab, "%.1f", gemm_flops / gemm_time[d] * 1e-9);
    ROW("sgemm-bound prefill tok/s (layer GEMMs at sgemm speed, rest free)", "%.1f", P / gemm_time[d]);
    ROW("**prefill % of sgemm bound**", "**%.0f%%**", 100.0 * PREFILL_TPS * gemm_time[d] / P);
    snprintf(lab, sizeof lab, "**decode tok/s** (median per-token time, %d×%d tokens)",
             o.decode_reps, o.decode);
    ROW(lab, "**%.1f**", DEC_TPS);
    snprintf(lab, sizeof lab, "decode tok/s, whole %d tokens (median of %d)", o.decode, o.decode_reps);
    ROW(lab, "%.1f", o.decode / r->decode_total_med_s);
    ROW("weight bytes read per decoded token (MB)", "%.1f", DEC_BYTES / 1e6);
    ROW("read bandwidth, 1.07 GB buffer, before / after decode (GB/s)", "%.1f / %.1f", r->bw_pre, r->bw_post);
    ROW("decode roofline tok/s (1 GB-buffer bandwidth / bytes)", "%.1f", ROOF_TPS);
    ROW("**decode % of roofline**", "**%.0f%%**", 100.0 * DEC_TPS / ROOF_TPS);
    ROW("read bandwidth, buffer = bytes per token, before / after (GB/s)", "%.1f / %.1f", r->bws_pre, r->bws_post);
    ROW("decode % of that working-set roofline", "%.0f%%", 100.0 * DEC_TPS * DEC_BYTES / (bws[d] * 1e9));
    ROW("load time (ms; weights are memory-mapped)", "%.1f", r->load_s * 1e3);
    ROW("RSS after load (MB)", "%.0f", r->rss_load / 1e6);
    ROW("RSS after prefill (MB)", "%.0f", r->rss_prefill / 1e6);
    ROW("peak RSS, ru_maxrss (MB)", "%.0f", r->rss_peak / 1e6);
    ROW("weights as used, model->weight_bytes (MB)", "%.0f", r->weight_bytes / 1e6);
    ROW("check: prefill vs prefill+decode logits, max rel err", "%.1e", r->check_relerr);
    ROW("CPU share used by other processes during this column's run (noise)", "%.0f%%",
        100.0 * fmax(0.0, r->others));
#undef ROW
    for (int d = 0; d < 2; d++) {
        const struct result *r = &res[d];
        if (r->have)
            fprintf(stderr, "bench_cpu: result %s prefill_tok_s %.3f decode_tok_s %.3f\n", d ? "f32" : "f16",
                    PREFILL_TPS, DEC_TPS);
    }
    printf("\nsgemm peer, measured just before each model's run "
           "(OpenBLAS, %d threads, bench_median):\n\n| M×N×K | used for | F16 run GFLOP/s | F32 run GFLOP/s |\n"
           "|---|---|---:|---:|\n", o.threads);
    for (int s = 0; s < N_SHAPES; s++)
        printf("| %lld×%lld×%lld | %s | %.1f | %.1f |\n", (long long)P, (long long)SHAPES[s].N,
               (long long)SHAPES[s].K, SHAPES[s].what, res[0].sgemm[s], res[1].sgemm[s]);
    printf("\nNotes: prefill FLOPs = 2 × layer matmul params × %lld + lm_head for the last token + "
           "causal attention (2·hd·H·L·P·(P+1)) = %.1f GFLOP. Decode bytes = layer matrices + lm_head "
           "+ one embedding row + norms; the KV cache adds ~%.1f MB per token on average here "
           "(not in the roofline). Read bandwidth: lmc_membw_read_gbs, %d threads, best of 5, "
           "over a 1.07 GB buffer and over a buffer the size of the bytes read per token (which "
           "lets the last-level cache keep a share, as it can for decode), measured just before and "
           "after each model's decode; rooflines use the better of the two. Decode: %d-token prompt, then one forward per token with greedy "
           "next id; one warm-up repetition. Bench wall time %.0f s.\n",
           (long long)P, prefill_flops * 1e-9, kv_avg / 1e6, o.threads, o.decode_prompt,
           lmc_time_now() - t_start);
    bool ok = (o.only == 1 || res[0].check_ok) && (o.only == 0 || res[1].check_ok);
    return ok ? 0 : 2;
}
