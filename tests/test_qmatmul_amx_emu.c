/* test_qmatmul_amx_emu.c — the AMX-INT8 prefill kernel of the quantized
 * product (quant/qmatmul_amx.c) on any CPU: the file is compiled here with
 * LMC_AMX_EMULATE, which models the tile registers, the tile loads and
 * stores and TDPBSSD in memory (as the ISA reference describes them; tiles
 * hold garbage until loaded or zeroed) and takes a scalar twin of the
 * AVX-512 scaling with the same bits, so the kernel's own addressing (the
 * 40-byte block stride of the activation rows, the VNNI packing of Q8_0's
 * bytes and Q4_0's nibbles minus 8, the 16- and 32-row groups and the
 * zero-padded partial last group, the panels of 32 weight rows with a
 * partial last one, the chunks of 32 blocks of K kept in y between them) is
 * checked where AMX is absent (the packing's AVX2 transposes run as they
 * are where the CPU has AVX2). Q8_0, Q4_0 and Q4_0R (the CPU loader's
 * repack of Q4_0, blocks in pairs, an odd last block alone), M 1, 5, 16, 17, 32, 33, 48,
 * 70, 123 (the kernel takes any M; lmc_qmatmul gives it M >= 32), N not a
 * multiple of 16 or 32, K = 32 x 1, 3, 5, 7, 33, 35, 65 blocks (one, two
 * and three chunks):
 *  - every output the exact bits of the model sum (per block b in order,
 *    acc = fmaf(d_x d_w, (float)isum_b, acc) from 0, isum_b the integer
 *    product of the quantized activations with the codes);
 *  - within 2e-5 (relative to the largest output, as test_qmatmul) of the
 *    float64 sum of the dequantized weights times the int8 activations,
 *    and of the existing kernel's result (lmc_qmatmul on this CPU's
 *    best non-AMX instruction set);
 *  - the same bits on one thread and on pools of 2 and 3;
 *  - 4-bit groups (GPTQ/AWQ/rtn; zeros in the codes' range and one of
 *    40): groups of 32, 64, 96 (groups across the 32-block chunks: whole
 *    groups a chunk), 128 and 1024 columns, the exact bits of the model (per
 *    group ga = fmaf(d_x, isum - zero sx, ga), acc = fmaf(scale, ga, acc)),
 *    2e-5 of float64 and the existing kernel; act-order and groups over
 *    32 blocks refused (lmc_qamx_supports);
 *  - Q4_KR (the loader's repack of Q4_K; activations by quantize_k): M 5,
 *    17, 33, 37, 45, 71, N not a multiple of 16, K = 256 x 1, 3, 5, 9 (one
 *    to three chunks), the exact bits of a model read from the file's Q4_K
 *    bytes (sk = sum sc_j isum_j, mk = sum mn_j sx_j per super-block,
 *    acc = fmaf(d dx, sk, acc), acc = fmaf(-(dmin dx), mk, acc)), 2e-5 of
 *    float64 and of the existing Q4_KR kernel, pools, and 3 weights of
 *    one input through the multi form;
 *  - lmc_qmatmul_amx_multi (q/k/v-like: 3 weights of 70, 33 and 50 rows
 *    of one input, M = 37): each output the bits of the one-weight call;
 *  - NaN planted in y beforehand (every output written) and past y (never
 *    touched), garbage in the activation scratch beforehand.
 * Where this process may run real AMX-INT8 (LMC_CPU_AMX=1 on an AMX CPU:
 * bench/amx_device.sh qtests) the real lmc_qmatmul_amx, lmc_qmatmul and
 * lmc_qmatmul_multi of the VNNI context are also checked for the emulated kernel's exact bits;
 * elsewhere that part reports itself skipped. */
#define LMC_AMX_EMULATE 1
#define lmc_qamx_available emu_qamx_available
#define lmc_qamx_takes emu_qamx_takes
#define lmc_qamx_supports emu_qamx_supports
#define lmc_qmatmul_amx emu_qmatmul_amx
#define lmc_qmatmul_amx_multi emu_qmatmul_amx_multi
#include "quant/qmatmul_amx.c"
#undef lmc_qamx_available
#undef lmc_qamx_takes
#undef lmc_qamx_supports
#undef lmc_qmatmul_amx
#undef lmc_qmatmul_amx_multi

/* the library's real ones (the header's guard is taken by the include above) */
bool lmc_qamx_available(void);
bool lmc_qamx_takes(const struct lmc_qctx *c, const struct lmc_qweight *w, int64_t m);
bool lmc_qamx_supports(const struct lmc_qweight *w);
void lmc_qmatmul_amx(const struct lmc_qctx *c, const struct lmc_qweight *w, float *y, const float *x, int64_t m,
                     struct lmc_q8act *xq, struct lmc_pool *pool);

#include "quant/quant.h"
#include "test.h"

#include <stdlib.h>

static uint64_t rng = 777;
static int real_checked;

static void fill_garbage(void *p, size_t bytes) { memset(p, 0xA5, bytes); }

static void one(int type, int repack, int64_t m, int64_t n, int64_t k, const struct lmc_qctx *cbest,
                struct lmc_pool **pools, const struct lmc_qctx *cvnni) {
    lmc_err err = {0};
    const char *nm = repack ? "Q4_0R" : lmc_ggml_type_name(type);
    int64_t rb, nb = k / 32;
    CHECK(lmc_ggml_row_bytes(type, k, &rb));
    float *wf = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(m * k) * 4);
    uint8_t *wq = malloc((size_t)(n * rb));
    for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(&rng) * (1.0f + (float)((i / 16) % 7));
    for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(type, wf + o * k, wq + o * rb, k);
    for (int64_t o = 0; o < n; o++) lmc_ggml_dequantize_row(type, wq + o * rb, wf + o * k, k);
    for (int64_t i = 0; i < m * k; i++) x[i] = test_rand(&rng) * (1.0f + (float)(i % 13));
    struct lmc_qweight w;
    uint8_t *wr = NULL; /* Q4_0R: the CPU loader's repacked rows (q4k_repack.c); the model reads wq */
    if (repack) {
        wr = malloc((size_t)(n * rb));
        lmc_q40r_pack_rows(wq, wr, n, k);
        CHECK(lmc_qweight_init_q40r(&w, wr, n, k, &err) == LMC_OK);
        CHECK(w.kernel == LMC_QK_Q4_0R);
    } else CHECK(lmc_qweight_init_ggml(&w, type, wq, n, k, &err) == LMC_OK);
    CHECK(emu_qamx_supports(&w));

    const int64_t guard = 67;
    float *y = malloc((size_t)(m * n + guard) * 4), *y2 = malloc((size_t)(m * n + guard) * 4);
    float *yb = malloc((size_t)(m * n) * 4);
    struct lmc_q8act *xq = malloc((size_t)(m * nb) * sizeof *xq), *xr = malloc((size_t)nb * sizeof *xr);
    const float nanv = nanf("");
    for (int64_t i = 0; i < m * n + guard; i++) y[i] = nanv;
    fill_garbage(xq, (size_t)(m * nb) * sizeof *xq);
    emu_qmatmul_amx(cbest, &w, y, x, m, xq, NULL);
    int guard_ok = 1;
    for (int64_t i = m * n; i < m * n + guard; i++) guard_ok &= isnan(y[i]);
    CHECK_MSG(guard_ok, "%s M=%lld N=%lld K=%lld: wrote past y", nm, (long long)m, (long long)n, (long long)k);

    /* the model sum's exact bits, and the float64 sums */
    int64_t exact_bad = 0;
    double eq = 0, mq = 0;
    for (int64_t i = 0; i < m; i++) {
        cbest->quantize(x + i * k, k, xr);
        CHECK(memcmp(xr, xq + i * nb, (size_t)nb * sizeof *xr) == 0); /* the kernel's activations */
        for (int64_t o = 0; o < n; o++) {
            const uint8_t *p = wq + o * rb;
            float acc = 0;
            double sq = 0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = p + b * (type == LMC_GGML_Q4_0 ? 18 : 34);
                int32_t is = 0;
                for (int j = 0; j < 32; j++) {
                    int code = type == LMC_GGML_Q4_0 ? (j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4)) - 8
                                                     : (int8_t)blk[2 + j];
                    is += code * xr[b].q[j];
                }
                float dwt = lmc_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
                acc = fmaf(xr[b].d * dwt, (float)is, acc);
                for (int j = 0; j < 32; j++) sq += (double)wf[o * k + 32 * b + j] * xr[b].d * xr[b].q[j];
            }
            float got = y[i * n + o];
            if (memcmp(&got, &acc, 4) != 0) exact_bad++;
            eq = fmax(eq, fabs(got - sq));
            mq = fmax(mq, fabs(sq));
        }
    }
    CHECK_MSG(exact_bad == 0, "%s M=%lld N=%lld K=%lld: %lld outputs differ from the model sum's bits", nm,
              (long long)m, (long long)n, (long long)k, (long long)exact_bad);
    CHECK_MSG(eq <= 2e-5 * mq, "%s M=%lld N=%lld K=%lld: error %g against float64", nm, (long long)m, (long long)n,
              (long long)k, eq / mq);

    /* the existing kernel on this CPU (no AMX: lmc_qamx_takes is false off AMX or for this context) */
    if (!lmc_qamx_takes(cbest, &w, m)) {
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, m) + 63) / 64 * 64);
        lmc_qmatmul(cbest, &w, yb, x, m, scratch, NULL);
        double e = 0;
        for (int64_t i = 0; i < m * n; i++) e = fmax(e, fabs((double)yb[i] - y[i]));
        CHECK_MSG(e <= 2e-5 * mq, "%s M=%lld N=%lld K=%lld [%s]: error %g against the existing kernel", nm,
                  (long long)m, (long long)n, (long long)k, lmc_qisa_name(cbest->isa), e / mq);
        free(scratch);
    }

    /* pools: the same bits */
    for (int pi = 0; pi < 2; pi++) {
        for (int64_t i = 0; i < m * n; i++) y2[i] = nanv;
        fill_garbage(xq, (size_t)(m * nb) * sizeof *xq);
        emu_qmatmul_amx(cbest, &w, y2, x, m, xq, pools[pi]);
        CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "%s M=%lld N=%lld K=%lld: pool of %d differs", nm,
                  (long long)m, (long long)n, (long long)k, pi + 2);
    }

    /* the real instructions, where this process may run them */
    if (cvnni && lmc_qamx_available()) {
        for (int pi = -1; pi < 2; pi++) {
            for (int64_t i = 0; i < m * n; i++) y2[i] = nanv;
            fill_garbage(xq, (size_t)(m * nb) * sizeof *xq);
            lmc_qmatmul_amx(cvnni, &w, y2, x, m, xq, pi < 0 ? NULL : pools[pi]);
            CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "%s M=%lld N=%lld K=%lld: real AMX (pool %d) differs from the model",
                      nm, (long long)m, (long long)n, (long long)k, pi + 2);
        }
        if (lmc_qamx_takes(cvnni, &w, m)) {
            void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, m) + 63) / 64 * 64);
            lmc_qmatmul(cvnni, &w, y2, x, m, scratch, pools[0]);
            CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "%s M=%lld N=%lld K=%lld: lmc_qmatmul (AMX) differs",
                      nm, (long long)m, (long long)n, (long long)k);
            free(scratch);
        }
        real_checked++;
    }
    lmc_qweight_free(&w);
    free(wf), free(x), free(wq), free(wr), free(y), free(y2), free(yb), free(xq), free(xr);
}

/* 4-bit groups (GPTQ/AWQ/rtn: codes 0..15, a scale and an integer zero per
 * row and group; zeros 0..15 and one of 40, beyond the codes) */
static void groups(int64_t m, int64_t n, int64_t k, int64_t gs, int act, const struct lmc_qctx *cbest,
                   struct lmc_pool **pools, const struct lmc_qctx *cvnni) {
    lmc_err err = {0};
    struct lmc_qgroups g;
    CHECK(lmc_qgroups_alloc(&g, n, k, 4, gs, &err) == LMC_OK);
    for (int64_t i = 0; i < g.n * g.k; i++) g.q[i] = (uint8_t)(test_rng_next(&rng) % 16);
    for (int64_t i = 0; i < g.n * g.n_groups; i++) {
        g.scale[i] = 0.01f + 0.05f * (float)(test_rng_next(&rng) % 100) / 100.0f;
        g.zero[i] = (int32_t)(test_rng_next(&rng) % 16);
    }
    g.zero[g.n_groups / 2 * g.n + n / 2] = 40;
    if (act)
        for (int64_t i = 0; i < g.k; i++) g.g_idx[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)g.n_groups);
    float *wf = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(m * k) * 4);
    lmc_qgroups_dequantize(&g, wf);
    for (int64_t i = 0; i < m * k; i++) x[i] = test_rand(&rng) * (1.0f + (float)(i % 13));
    struct lmc_qweight w;
    CHECK(lmc_qweight_init_groups(&w, &g, &err) == LMC_OK);
    const bool fits = !act && gs <= 32 * QAMX_KB && k % gs == 0 && gs % 32 == 0;
    CHECK_MSG(emu_qamx_supports(&w) == fits, "groups g%lld K=%lld act %d: supports %d", (long long)gs, (long long)k,
              act, (int)emu_qamx_supports(&w));
    if (!fits) {
        lmc_qweight_free(&w), lmc_qgroups_free(&g), free(wf), free(x);
        return;
    }
    const int64_t nb = k / 32, guard = 33;
    float *y = malloc((size_t)(m * n + guard) * 4), *y2 = malloc((size_t)(m * n) * 4);
    struct lmc_q8act *xq = malloc((size_t)(m * nb) * sizeof *xq), *xr = malloc((size_t)nb * sizeof *xr);
    for (int64_t i = 0; i < m * n + guard; i++) y[i] = nanf("");
    fill_garbage(xq, (size_t)(m * nb) * sizeof *xq);
    emu_qmatmul_amx(cbest, &w, y, x, m, xq, NULL);
    int guard_ok = 1;
    for (int64_t i = m * n; i < m * n + guard; i++) guard_ok &= isnan(y[i]);
    CHECK(guard_ok);
    int64_t exact_bad = 0;
    double eq = 0, mq = 0;
    for (int64_t i = 0; i < m; i++) {
        cbest->quantize(x + i * k, k, xr);
        for (int64_t o = 0; o < n; o++) {
            const uint8_t *p = w.data + o * w.row_bytes;
            float acc = 0;
            double sq = 0;
            for (int64_t gi = 0; gi < w.n_groups; gi++) {
                float ga = 0;
                int32_t z = w.zero[o * w.n_groups + gi];
                for (int64_t b = w.gblk[gi]; b < w.gblk[gi + 1]; b++) {
                    int32_t is = 0;
                    for (int j = 0; j < 32; j++) is += (j < 16 ? p[16 * b + j] & 15 : p[16 * b + j - 16] >> 4) * xr[b].q[j];
                    ga = fmaf(xr[b].d, (float)(is - z * (xr[b].s0 + xr[b].s1)), ga);
                    for (int j = 0; j < 32; j++) sq += (double)wf[o * k + 32 * b + j] * xr[b].d * xr[b].q[j];
                }
                if (w.gblk[gi + 1] > w.gblk[gi]) acc = fmaf(w.scale[o * w.n_groups + gi], ga, acc);
            }
            float got = y[i * n + o];
            if (memcmp(&got, &acc, 4) != 0) exact_bad++;
            eq = fmax(eq, fabs(got - sq));
            mq = fmax(mq, fabs(sq));
        }
    }
    CHECK_MSG(exact_bad == 0, "groups g%lld M=%lld N=%lld K=%lld: %lld outputs differ from the model sum's bits",
              (long long)gs, (long long)m, (long long)n, (long long)k, (long long)exact_bad);
    CHECK_MSG(eq <= 2e-5 * mq, "groups g%lld M=%lld N=%lld K=%lld: error %g against float64", (long long)gs,
              (long long)m, (long long)n, (long long)k, eq / mq);
    void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, m) + 63) / 64 * 64);
    lmc_qmatmul(cbest, &w, y2, x, m, scratch, NULL);
    double e = 0;
    for (int64_t i = 0; i < m * n; i++) e = fmax(e, fabs((double)y2[i] - y[i]));
    CHECK_MSG(e <= 2e-5 * mq, "groups g%lld M=%lld N=%lld K=%lld: error %g against the existing kernel", (long long)gs,
              (long long)m, (long long)n, (long long)k, e / mq);
    for (int pi = 0; pi < 2; pi++) {
        for (int64_t i = 0; i < m * n; i++) y2[i] = nanf("");
        emu_qmatmul_amx(cbest, &w, y2, x, m, xq, pools[pi]);
        CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "groups g%lld: pool of %d differs", (long long)gs, pi + 2);
    }
    if (cvnni && lmc_qamx_available()) {
        for (int64_t i = 0; i < m * n; i++) y2[i] = nanf("");
        lmc_qmatmul(cvnni, &w, y2, x, m, scratch, pools[0]);
        CHECK_MSG(!lmc_qamx_takes(cvnni, &w, m) || memcmp(y, y2, (size_t)(m * n) * 4) == 0,
                  "groups g%lld M=%lld: lmc_qmatmul (real AMX) differs from the model", (long long)gs, (long long)m);
        real_checked++;
    }
    free(scratch);
    lmc_qweight_free(&w), lmc_qgroups_free(&g);
    free(wf), free(x), free(y), free(y2), free(xq), free(xr);
}

/* Q4_KR (the CPU loader's repack of GGUF Q4_K) against the model read from
 * the file's bytes: per super-block s, sk = sum_j sc_j isum_j and mk =
 * sum_j mn_j sx_j (integers), acc = fmaf(d dx, sk, acc), acc = fmaf(-(dmin
 * dx), mk, acc), dx the super-block's activation scale (quantize_k). nw
 * weights of one input (n[i] rows each) through lmc_qmatmul_amx_multi when
 * nw > 1, each the bits of its one-weight call. */
static void kquant(int64_t m, int nw, const int64_t *ns, int64_t k, const struct lmc_qctx *cbest,
                   struct lmc_pool **pools, const struct lmc_qctx *cvnni) {
    lmc_err err = {0};
    const int64_t nb = k / 32, rb = k / 256 * 144, guard = 41;
    float *x = malloc((size_t)(m * k) * 4);
    for (int64_t i = 0; i < m * k; i++) x[i] = test_rand(&rng) * (1.0f + (float)(i % 13));
    struct lmc_q8act *xq = malloc((size_t)(m * nb) * sizeof *xq), *xr = malloc((size_t)nb * sizeof *xr);
    struct lmc_qweight w[3];
    const struct lmc_qweight *wp[3];
    float *ys[3];
    uint8_t *wq[3], *wr[3];
    for (int wi = 0; wi < nw; wi++) {
        const int64_t n = ns[wi];
        float *wf = malloc((size_t)(n * k) * 4);
        for (int64_t i = 0; i < n * k; i++) wf[i] = test_rand(&rng) * (1.0f + (float)((i / 16) % 7));
        wq[wi] = malloc((size_t)(n * rb));
        wr[wi] = malloc((size_t)(n * k / 256 * LMC_Q4KR_BYTES));
        for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(LMC_GGML_Q4_K, wf + o * k, wq[wi] + o * rb, k);
        for (int64_t o = 0; o < n; o++) lmc_ggml_dequantize_row(LMC_GGML_Q4_K, wq[wi] + o * rb, wf + o * k, k);
        lmc_q4kr_pack_rows(wq[wi], wr[wi], n, k);
        CHECK(lmc_qweight_init_q4kr(&w[wi], wr[wi], n, k, &err) == LMC_OK);
        CHECK(emu_qamx_supports(&w[wi]));
        wp[wi] = &w[wi];
        float *y = ys[wi] = malloc((size_t)(m * n + guard) * 4), *y2 = malloc((size_t)(m * n) * 4);
        for (int64_t i = 0; i < m * n + guard; i++) y[i] = nanf("");
        fill_garbage(xq, (size_t)(m * nb) * sizeof *xq);
        emu_qmatmul_amx(cbest, &w[wi], y, x, m, xq, NULL);
        int guard_ok = 1;
        for (int64_t i = m * n; i < m * n + guard; i++) guard_ok &= isnan(y[i]);
        CHECK_MSG(guard_ok, "Q4_KR M=%lld N=%lld K=%lld: wrote past y", (long long)m, (long long)n, (long long)k);
        int64_t exact_bad = 0;
        double eq = 0, mq = 0;
        for (int64_t i = 0; i < m; i++) {
            cbest->quantize_k(x + i * k, k, xr);
            CHECK(memcmp(xr, xq + i * nb, (size_t)nb * sizeof *xr) == 0);
            for (int64_t o = 0; o < n; o++) {
                float acc = 0;
                double sq = 0;
                for (int64_t sb = 0; sb < k / 256; sb++) {
                    const uint8_t *p = wq[wi] + o * rb + 144 * sb, *qs = p + 16;
                    int16_t sc[8], mn[8];
                    lmc_ggml_kscales_unpack(p + 4, sc, mn);
                    int32_t sk = 0, mk = 0;
                    for (int j = 0; j < 8; j++) {
                        const struct lmc_q8act *a = &xr[8 * sb + j];
                        int32_t is = 0;
                        for (int l = 0; l < 32; l++) is += ((qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 15) * a->q[l];
                        sk += sc[j] * is;
                        mk += mn[j] * (a->s0 + a->s1);
                        for (int l = 0; l < 32; l++) sq += (double)wf[o * k + 256 * sb + 32 * j + l] * a->d * a->q[l];
                    }
                    const float dx = xr[8 * sb].d, d = lmc_f16_to_f32((uint16_t)(p[0] | p[1] << 8)),
                                dmin = lmc_f16_to_f32((uint16_t)(p[2] | p[3] << 8));
                    acc = fmaf(d * dx, (float)sk, acc);
                    acc = fmaf(-(dmin * dx), (float)mk, acc);
                }
                float got = y[i * n + o];
                if (memcmp(&got, &acc, 4) != 0) exact_bad++;
                eq = fmax(eq, fabs(got - sq));
                mq = fmax(mq, fabs(sq));
            }
        }
        CHECK_MSG(exact_bad == 0, "Q4_KR M=%lld N=%lld K=%lld: %lld outputs differ from the model sum's bits",
                  (long long)m, (long long)n, (long long)k, (long long)exact_bad);
        CHECK_MSG(eq <= 2e-5 * mq, "Q4_KR M=%lld N=%lld K=%lld: error %g against float64", (long long)m,
                  (long long)n, (long long)k, eq / mq);
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w[wi], m) + 63) / 64 * 64);
        lmc_qmatmul(cbest, &w[wi], y2, x, m, scratch, NULL); /* the AVX2 (or C) Q4_KR kernel */
        double e = 0;
        for (int64_t i = 0; i < m * n; i++) e = fmax(e, fabs((double)y2[i] - y[i]));
        CHECK_MSG(e <= 2e-5 * mq, "Q4_KR M=%lld N=%lld K=%lld [%s]: error %g against the existing kernel",
                  (long long)m, (long long)n, (long long)k, lmc_qisa_name(cbest->isa), e / mq);
        for (int pi = 0; pi < 2; pi++) {
            for (int64_t i = 0; i < m * n; i++) y2[i] = nanf("");
            emu_qmatmul_amx(cbest, &w[wi], y2, x, m, xq, pools[pi]);
            CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0, "Q4_KR M=%lld: pool of %d differs", (long long)m, pi + 2);
        }
        if (cvnni && lmc_qamx_available()) {
            for (int pi = -1; pi < 2; pi++) {
                for (int64_t i = 0; i < m * n; i++) y2[i] = nanf("");
                lmc_qmatmul_amx(cvnni, &w[wi], y2, x, m, xq, pi < 0 ? NULL : pools[pi]);
                CHECK_MSG(memcmp(y, y2, (size_t)(m * n) * 4) == 0,
                          "Q4_KR M=%lld N=%lld K=%lld: real AMX (pool %d) differs from the model", (long long)m,
                          (long long)n, (long long)k, pi + 2);
            }
            for (int64_t i = 0; i < m * n; i++) y2[i] = nanf("");
            lmc_qmatmul(cvnni, &w[wi], y2, x, m, scratch, pools[0]);
            CHECK_MSG(!lmc_qamx_takes(cvnni, &w[wi], m) || memcmp(y, y2, (size_t)(m * n) * 4) == 0,
                      "Q4_KR M=%lld: lmc_qmatmul (real AMX) differs from the model", (long long)m);
            real_checked++;
        }
        free(scratch), free(y2), free(wf);
    }
    if (nw > 1) {
        float *ym[3];
        for (int wi = 0; wi < nw; wi++) {
            ym[wi] = malloc((size_t)(m * ns[wi]) * 4);
            for (int64_t i = 0; i < m * ns[wi]; i++) ym[wi][i] = nanf("");
        }
        emu_qmatmul_amx_multi(cbest, nw, wp, ym, x, m, xq, pools[0]);
        for (int wi = 0; wi < nw; wi++)
            CHECK_MSG(memcmp(ym[wi], ys[wi], (size_t)(m * ns[wi]) * 4) == 0,
                      "Q4_KR multi: weight %d differs from its own call", wi);
        if (cvnni && lmc_qamx_available()) {
            void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w[0], m) + 63) / 64 * 64);
            lmc_qmatmul_multi(cvnni, nw, wp, ym, x, m, scratch, pools[0]);
            for (int wi = 0; wi < nw; wi++)
                CHECK_MSG(memcmp(ym[wi], ys[wi], (size_t)(m * ns[wi]) * 4) == 0,
                          "Q4_KR lmc_qmatmul_multi (real AMX): weight %d differs from the model", wi);
            free(scratch);
            real_checked++;
        }
        for (int wi = 0; wi < nw; wi++) free(ym[wi]);
    }
    for (int wi = 0; wi < nw; wi++) lmc_qweight_free(&w[wi]), free(wq[wi]), free(wr[wi]), free(ys[wi]);
    free(x), free(xq), free(xr);
}

static void multi(int type, int repack, const struct lmc_qctx *cbest, struct lmc_pool *pool,
                  const struct lmc_qctx *cvnni) {
    const char *nm = repack ? "Q4_0R" : lmc_ggml_type_name(type);
    lmc_err err = {0};
    const int64_t ns[3] = {70, 33, 50}, k = 32 * 9, m = 37, nb = k / 32;
    int64_t rb;
    CHECK(lmc_ggml_row_bytes(type, k, &rb));
    float *x = malloc((size_t)(m * k) * 4), *wf = malloc((size_t)(70 * k) * 4);
    for (int64_t i = 0; i < m * k; i++) x[i] = test_rand(&rng);
    uint8_t *wq[3], *wr[3] = {NULL, NULL, NULL};
    struct lmc_qweight w[3];
    const struct lmc_qweight *wp[3];
    float *y[3], *y1 = malloc((size_t)(m * 70) * 4);
    struct lmc_q8act *xq = malloc((size_t)(m * nb) * sizeof *xq);
    for (int i = 0; i < 3; i++) {
        for (int64_t e = 0; e < ns[i] * k; e++) wf[e] = test_rand(&rng);
        wq[i] = malloc((size_t)(ns[i] * rb));
        for (int64_t o = 0; o < ns[i]; o++) lmc_ggml_quantize_row(type, wf + o * k, wq[i] + o * rb, k);
        if (repack) {
            wr[i] = malloc((size_t)(ns[i] * rb));
            lmc_q40r_pack_rows(wq[i], wr[i], ns[i], k);
            CHECK(lmc_qweight_init_q40r(&w[i], wr[i], ns[i], k, &err) == LMC_OK);
        } else CHECK(lmc_qweight_init_ggml(&w[i], type, wq[i], ns[i], k, &err) == LMC_OK);
        wp[i] = &w[i];
        y[i] = malloc((size_t)(m * ns[i]) * 4);
        for (int64_t e = 0; e < m * ns[i]; e++) y[i][e] = nanf("");
    }
    emu_qmatmul_amx_multi(cbest, 3, wp, y, x, m, xq, pool);
    for (int i = 0; i < 3; i++) {
        emu_qmatmul_amx(cbest, &w[i], y1, x, m, xq, NULL);
        CHECK_MSG(memcmp(y1, y[i], (size_t)(m * ns[i]) * 4) == 0, "%s multi: weight %d differs from its own call", nm, i);
    }
    if (cvnni && lmc_qamx_available()) {
        for (int i = 0; i < 3; i++) memset(y[i], 0xff, (size_t)(m * ns[i]) * 4);
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w[0], m) + 63) / 64 * 64);
        lmc_qmatmul_multi(cvnni, 3, wp, y, x, m, scratch, pool);
        for (int i = 0; i < 3; i++) {
            emu_qmatmul_amx(cbest, &w[i], y1, x, m, xq, NULL);
            CHECK_MSG(memcmp(y1, y[i], (size_t)(m * ns[i]) * 4) == 0,
                      "%s lmc_qmatmul_multi (real AMX): weight %d differs from the model", nm, i);
        }
        free(scratch);
        real_checked++;
    }
    for (int i = 0; i < 3; i++) lmc_qweight_free(&w[i]), free(wq[i]), free(wr[i]), free(y[i]);
    free(x), free(wf), free(y1), free(xq);
}

int main(void) {
    static const int64_t sh[][3] = {{1, 5, 1},     {5, 37, 7},   {16, 16, 7},   {17, 37, 7},  {33, 50, 33},
                                    {70, 16, 3},   {70, 100, 65}, {123, 45, 5}, {32, 31, 35}, {48, 96, 1}};
    lmc_err err = {0};
    struct lmc_pool *pools[2];
    CHECK(lmc_pool_init(&pools[0], 2, &err) == LMC_OK);
    CHECK(lmc_pool_init(&pools[1], 3, &err) == LMC_OK);
    struct lmc_qctx cbest, cvnni;
    lmc_qctx_init(&cbest, LMC_QISA_AVX2); /* AVX2 or C: the quantizer's integers are the same on every set */
    bool vnni = lmc_qctx_init(&cvnni, LMC_QISA_AVX512VNNI) == LMC_QISA_AVX512VNNI;
    /* Q8_0, Q4_0 (the file's layout) and Q4_0R (the CPU loader's repack of it) */
    const int types[3] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0, LMC_GGML_Q4_0};
    for (int t = 0; t < 3; t++)
        for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++)
            one(types[t], t == 2, sh[s][0], sh[s][1], 32 * sh[s][2], &cbest, pools, vnni ? &cvnni : NULL);
    for (int t = 0; t < 3; t++) multi(types[t], t == 2, &cbest, pools[0], vnni ? &cvnni : NULL);
    /* Q4_KR: K = 256 x 1, 3, 5 (two chunks: 32 + 8 blocks), 9 (32 + 32 + 8); odd M (and 5, 17 below
     * lmc_qmatmul's AMX rows); N not a multiple of 16; then 3 weights of one input (multi) */
    static const int64_t ksh[][3] = {{33, 45, 1}, {37, 50, 3}, {71, 31, 5}, {5, 37, 3}, {17, 16, 9}, {45, 100, 9}};
    for (size_t s = 0; s < sizeof ksh / sizeof ksh[0]; s++)
        kquant(ksh[s][0], 1, &ksh[s][1], 256 * ksh[s][2], &cbest, pools, vnni ? &cvnni : NULL);
    static const int64_t kns[3] = {70, 33, 50};
    kquant(39, 3, kns, 256 * 3, &cbest, pools, vnni ? &cvnni : NULL);
    /* groups of 128 (4 blocks), 32, 96 (11 groups: chunks of 10 + 1), 1024
     * (one chunk each), 64 with K past a chunk; refused: act-order, 2048 */
    static const int64_t gsh[][4] = {{37, 45, 32 * 36, 128}, {17, 33, 32 * 5, 32},   {70, 50, 32 * 33, 96},
                                     {33, 31, 32 * 64, 1024}, {20, 64, 32 * 66, 64}, {16, 16, 32 * 8, 128},
                                     {17, 16, 32 * 64, 2048}};
    for (size_t s = 0; s < sizeof gsh / sizeof gsh[0]; s++)
        groups(gsh[s][0], gsh[s][1], gsh[s][2], gsh[s][3], s == 5, &cbest, pools, vnni ? &cvnni : NULL);
    if (real_checked) printf("real AMX-INT8: checked against the model on %d shapes\n", real_checked);
    else printf("real AMX-INT8: skipped (needs LMC_CPU_AMX=1 on a CPU with AMX-INT8)\n");
    lmc_pool_free(pools[0]);
    lmc_pool_free(pools[1]);
    return test_finish("test_qmatmul_amx_emu");
}
