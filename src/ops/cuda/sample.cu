/* sample.cu — sampling on the GPU, so that a step downloads one id per row
 * instead of the (rows, V) logits. Semantics: lmc_sample_logits_row
 * (ops/cpu/sample.c), bit for bit on the probabilities: the same float
 * subtraction, double division by the temperature, exp in double rounded
 * to float; sums are in double (their order differs from the host's, which
 * can matter only when a cumulative sum lands within ~1e-16 of a boundary).
 *
 * One block per row. Every element gets a 64-bit key: in rank order
 * (descending probability, ties by lower id) it is
 * (float bits of p) << 32 | (0xffffffff - id), so "the first n in rank
 * order" is exactly "key >= K" for the n-th element's key K; in id order
 * (no top-k / top-p: the host does not sort) it is 0xffffffff - id. Each
 * cut (top-k: count >= k; top-p: mass >= top_p * top-k mass; the draw:
 * cumulative mass > u * total) is the largest K whose prefix {key >= K}
 * satisfies it, found bit by bit (one block reduction per bit) — the exact
 * support, ties at a cut resolved by id as on the host. min-p is a plain
 * value test. */
#include "ops/cuda/common.cuh"
#include "ops/cuda/argmax.cuh"

#define SAMPLE_THREADS 512

__device__ __forceinline__ uint64_t rank_key(float p, int64_t i) {
    return ((uint64_t)__float_as_uint(p) << 32) | (uint64_t)(0xffffffffu - (uint32_t)i);
}

struct sample_cut {
    uint64_t kset; /* members: rank key >= kset ... */
    float minp;    /* ... and p >= minp (-1: no test) */
    int by_rank;   /* the search key: rank key (1) or id order (0) */
    int weigh;     /* accumulate p (1) or count (0) */
};

/* The largest K with acc({members with search key >= K}) >= target (or >
 * target when strict); found = whether K = 0 qualifies at all. */
__device__ uint64_t sample_search(const float *pr, int64_t V, struct sample_cut c, double target,
                                  bool strict, bool *found, double *sh) {
    int top = c.by_rank ? 62 : 31;
    uint64_t K = 0;
    for (int bit = top + 1; bit >= 0; bit--) {
        /* bit == top + 1: the check of K = 0 itself */
        uint64_t cand = bit == top + 1 ? 0 : K | (1ull << bit);
        double acc = 0;
        for (int64_t i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
            float p = pr[i];
            uint64_t rk = rank_key(p, i);
            if (rk < c.kset || !(p >= c.minp)) continue;
            uint64_t key = c.by_rank ? rk : (uint64_t)(0xffffffffu - (uint32_t)i);
            if (key >= cand) acc += c.weigh ? (double)p : 1.0;
        }
        double t = lmc_block_sum_d(acc, sh);
        bool ok = strict ? t > target : t >= target;
        if (bit == top + 1) {
            *found = ok;
            if (!ok) return 0;
        } else if (ok) {
            K = cand;
        }
    }
    return K;
}

__global__ void sample_rows_kernel(int32_t *ids, const float *logits, float *prob, int64_t V,
                                   const struct lmc_sample_row *params) {
    const float *x = logits + (int64_t)blockIdx.x * V;
    float *pr = prob + (int64_t)blockIdx.x * V;
    const struct lmc_sample_row P = params[blockIdx.x];
    __shared__ double sh[32];
    /* argmax: the host's left-to-right first strict maximum */
    int64_t best = lmc_block_argmax<SAMPLE_THREADS>(x, V);
    if (P.temperature == 0) {
        if (threadIdx.x == 0) ids[blockIdx.x] = (int32_t)best;
        return;
    }
    float mx = x[best];
    for (int64_t i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
        float z = (float)__ddiv_rn((double)__fsub_rn(x[i], mx), P.temperature);
        pr[i] = (float)exp((double)z);
    }
    __syncthreads();
    bool sorted = P.top_k > 0 || P.top_p < 1.0;
    bool found;
    struct sample_cut c = {0, -1.0f, 1, 0};
    if (P.top_k > 0 && P.top_k < V) c.kset = sample_search(pr, V, c, (double)P.top_k, false, &found, sh);
    if (P.top_p < 1.0) {
        c.weigh = 1;
        double mass = 0;
        for (int64_t i = threadIdx.x; i < V; i += SAMPLE_THREADS)
            if (rank_key(pr[i], i) >= c.kset) mass += (double)pr[i];
        mass = lmc_block_sum_d(mass, sh);
        uint64_t K = sample_search(pr, V, c, P.top_p * mass, false, &found, sh);
        if (found && K > c.kset) c.kset = K;
    }
    if (P.min_p > 0) c.minp = (float)P.min_p;
    c.weigh = 1;
    c.by_rank = sorted;
    double tot = 0;
    for (int64_t i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
        float p = pr[i];
        if (rank_key(p, i) >= c.kset && p >= c.minp) tot += (double)p;
    }
    tot = lmc_block_sum_d(tot, sh);
    uint64_t K = sample_search(pr, V, c, P.u * tot, true, &found, sh);
    if (!found) {
        /* rounding left u * tot unreached: the last member in walk order,
         * the one with the smallest search key = the largest walk position */
        /* find the smallest key among members: bit search for the largest K
         * with every member's key >= K, i.e. count(key >= K) >= count(all) */
        struct sample_cut cc = c;
        cc.weigh = 0;
        double n = 0;
        for (int64_t i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
            float p = pr[i];
            if (rank_key(p, i) >= c.kset && p >= c.minp) n += 1.0;
        }
        n = lmc_block_sum_d(n, sh);
        K = sample_search(pr, V, cc, n, false, &found, sh);
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = (int32_t)(0xffffffffu - (uint32_t)K);
}

extern "C" void lmc_cuda_sample_rows(void *ctx, int32_t *out_ids, const float *logits,
                                     int64_t rows, int64_t V,
                                     const struct lmc_sample_row *params) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (rows <= 0) return;
    LMC_ASSERT(V > 0 && V <= INT32_MAX && rows <= INT32_MAX);
    /* per-op scratch: probabilities (rows, V), then params, then ids */
    size_t pbytes = ((size_t)(rows * V) * sizeof(float) + 255) & ~(size_t)255;
    size_t qbytes = ((size_t)rows * sizeof(struct lmc_sample_row) + 255) & ~(size_t)255;
    size_t ibytes = (size_t)rows * sizeof(int32_t);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, pbytes + qbytes + ibytes);
    float *d_prob = (float *)c->scratch;
    struct lmc_sample_row *d_par = (struct lmc_sample_row *)((char *)c->scratch + pbytes);
    int32_t *d_ids = (int32_t *)((char *)c->scratch + pbytes + qbytes);
    lmc_cuda_upload(ctx, d_par, params, (size_t)rows * sizeof *params);
    sample_rows_kernel<<<(unsigned)rows, SAMPLE_THREADS, 0, c->stream>>>(d_ids, logits, d_prob, V,
                                                                         d_par);
    LMC_CUDA_LAUNCH_CHECK();
    lmc_cuda_download(ctx, out_ids, d_ids, ibytes);
}
