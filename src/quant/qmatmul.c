/* qmatmul.c — the quantized matrix product's driver and portable kernels:
 * weights prepared for the kernels (GGUF blocks in place; GPTQ/AWQ/rtn/
 * ternary groups and NF4 repacked), activations quantized per block of 32,
 * the dispatch table chosen once from the CPU's features, and the C dot
 * products every instruction set falls back to. */
#include "quant/qmatmul.h"
#include "quant/qmatmul_amx.h"
#include "core/core.h"
#include "core/dtype.h"
#include "core/threadpool.h"

#include <math.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

static inline float f16at(const uint8_t *p) { return lmc_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

void lmc_q8act_quantize(const float *x, int64_t n, struct lmc_q8act *out) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + 32 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        int s0 = 0, s1 = 0;
        for (int j = 0; j < 32; j++) {
            int q = (int)lrintf(v[j] * id);
            out[b].q[j] = (int8_t)q;
            if (j < 16) s0 += q;
            else s1 += q;
        }
        out[b].d = d;
        out[b].s0 = (int16_t)s0;
        out[b].s1 = (int16_t)s1;
    }
}

void lmc_q8act_quantize_k(const float *x, int64_t n, struct lmc_q8act *out) {
    for (int64_t sb = 0; sb < n / 256; sb++) {
        const float *v = x + 256 * sb;
        float amax = 0;
        for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        for (int b = 0; b < 8; b++) {
            struct lmc_q8act *o = &out[8 * sb + b];
            int s0 = 0, s1 = 0;
            for (int j = 0; j < 32; j++) {
                int q = (int)lrintf(v[32 * b + j] * id);
                o->q[j] = (int8_t)q;
                if (j < 16) s0 += q;
                else s1 += q;
            }
            o->d = d;
            o->s0 = (int16_t)s0;
            o->s1 = (int16_t)s1;
        }
    }
}

lmc_q8quant_fn lmc_qctx_quantizer(const struct lmc_qctx *c, const struct lmc_qweight *w) {
    return w->kernel == LMC_QK_Q4_K || w->kernel == LMC_QK_Q4_KR ? c->quantize_k : c->quantize;
}

/* ---- portable dot products: row `row` of w with the activation blocks ---- */

/* GCC 12 with AVX-512 VNNI enabled vectorizes Q8_0's signed-by-signed byte
 * dot into wrong code (rows after the first came out wrong in
 * test_qmatmul); the portable kernel is kept scalar there. */
#if defined(__GNUC__) && !defined(__clang__)
#define LMC_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define LMC_NO_VECTORIZE
#endif

LMC_NO_VECTORIZE static float dot_q8_0(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    float acc = 0;
    for (int64_t b = 0; b < w->k / 32; b++, p += 34) {
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += (int8_t)p[2 + j] * x[b].q[j];
        acc += f16at(p) * x[b].d * (float)s;
    }
    return acc;
}

/* One Q4_0/Q4_1 block (scale d, min m for Q4_1, 16 code bytes qs) against x, added into acc. Not inlined:
 * the file's rows (dot_q4_01) and Q4_0R's pairs (dot_q4_0r) run the same instructions, so the same bits
 * (inlined, the compiler may fuse the multiply-adds differently at each site). */
__attribute__((noinline)) static float q4_01_blk(const uint8_t *d, const uint8_t *m, const uint8_t *qs,
                                                  const struct lmc_q8act *x, float acc) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += (qs[j] & 15) * x->q[j] + (qs[j] >> 4) * x->q[j + 16];
    int32_t sx = x->s0 + x->s1;
    if (m) acc += f16at(d) * x->d * (float)s + f16at(m) * x->d * (float)sx;
    else acc += f16at(d) * x->d * (float)(s - 8 * sx);
    return acc;
}
static float dot_q4_01(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, bool one) {
    int bb = one ? 20 : 18, o = one ? 4 : 2;
    const uint8_t *p = w->data + row * w->row_bytes;
    float acc = 0;
    for (int64_t b = 0; b < w->k / 32; b++, p += bb) acc = q4_01_blk(p, one ? p + 2 : NULL, p + o, &x[b], acc);
    return acc;
}
/* Q4_0R (pairs of blocks: codes, codes, d, d; an odd last block codes, d): the same bits as dot_q4_0. */
static float dot_q4_0r(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    (void)xf;
    const uint8_t *p = w->data + row * w->row_bytes;
    const int64_t nb = w->k / 32;
    float acc = 0;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *pair = p + 36 * (b / 2);
        const uint8_t *d = b + 1 < nb || b % 2 ? pair + 32 + 2 * (b % 2) : pair + 16;
        acc = q4_01_blk(d, NULL, pair + 16 * (b % 2), &x[b], acc);
    }
    return acc;
}
static float dot_q4_0(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    return dot_q4_01(w, row, x, false);
}
static float dot_q4_1(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    return dot_q4_01(w, row, x, true);
}

static float dot_q5_01(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, bool one) {
    int bb = one ? 24 : 22, o = one ? 4 : 2;
    const uint8_t *p = w->data + row * w->row_bytes;
    float acc = 0;
    for (int64_t b = 0; b < w->k / 32; b++, p += bb) {
        uint32_t qh = (uint32_t)p[o] | (uint32_t)p[o + 1] << 8 | (uint32_t)p[o + 2] << 16 | (uint32_t)p[o + 3] << 24;
        const uint8_t *qs = p + o + 4;
        int32_t s = 0;
        for (int j = 0; j < 16; j++) {
            s += (int)((qs[j] & 15) | ((qh >> j) & 1) << 4) * x[b].q[j];
            s += (int)((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) * x[b].q[j + 16];
        }
        int32_t sx = x[b].s0 + x[b].s1;
        if (one) acc += f16at(p) * x[b].d * (float)s + f16at(p + 2) * x[b].d * (float)sx;
        else acc += f16at(p) * x[b].d * (float)(s - 16 * sx);
    }
    return acc;
}
static float dot_q5_0(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    return dot_q5_01(w, row, x, false);
}
static float dot_q5_1(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    return dot_q5_01(w, row, x, true);
}

/* One Q4_K/Q5_K super-block p against its 8 activation blocks, added into *acc (the order of dot_qk45). Not
 * inlined: the file's rows and Q4_KR's run the same instructions (q4_01_blk). */
__attribute__((noinline)) static void qk45_sb(const uint8_t *p, const struct lmc_q8act *x, bool five, float *acc_) {
    float acc = *acc_;
    int16_t sc[8], mn[8];
    lmc_ggml_kscales_unpack(p + 4, sc, mn);
    float d = f16at(p), dmin = f16at(p + 2);
    const uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
    for (int c = 0; c < 4; c++) {
        int32_t s_lo = 0, s_hi = 0;
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * c + l] & 15, hi = qs[32 * c + l] >> 4;
            if (five) {
                lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            s_lo += lo * x[2 * c].q[l];
            s_hi += hi * x[2 * c + 1].q[l];
        }
        const struct lmc_q8act *a = &x[2 * c], *b = &x[2 * c + 1];
        acc += d * (float)sc[2 * c] * a->d * (float)s_lo - dmin * (float)mn[2 * c] * a->d * (float)(a->s0 + a->s1);
        acc += d * (float)sc[2 * c + 1] * b->d * (float)s_hi -
               dmin * (float)mn[2 * c + 1] * b->d * (float)(b->s0 + b->s1);
    }
    *acc_ = acc;
}

static float dot_qk45(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, bool five) {
    int bb = five ? 176 : 144;
    const uint8_t *p = w->data + row * w->row_bytes;
    float acc = 0;
    for (int64_t sb = 0; sb < w->k / 256; sb++, p += bb, x += 8) qk45_sb(p, x, five, &acc);
    return acc;
}
/* Q4_KR (the repacked Q4_K rows): each super-block back in the file's bytes, then Q4_K's arithmetic (the
 * same bits as dot_q4_k on the file's rows). */
static float dot_q4_kr(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    (void)xf;
    const uint8_t *p = w->data + row * w->row_bytes;
    float acc = 0;
    uint8_t g[144];
    for (int64_t sb = 0; sb < w->k / 256; sb++, p += LMC_Q4KR_BYTES, x += 8) {
        lmc_q4kr_unpack_block(p, g);
        qk45_sb(g, x, false, &acc);
    }
    return acc;
}
static float dot_q4_k(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    return dot_qk45(w, row, x, false);
}
static float dot_q5_k(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    return dot_qk45(w, row, x, true);
}

static float dot_q6_k(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    float acc = 0;
    for (int64_t sb = 0; sb < w->k / 256; sb++, p += 210, x += 8) {
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = f16at(p + 208);
        int32_t s16[16] = {0};
        for (int h = 0; h < 2; h++) {
            const uint8_t *L = p + 64 * h, *H = p + 128 + 32 * h;
            for (int l = 0; l < 32; l++) {
                int q0 = (L[l] & 15) | (H[l] & 3) << 4, q1 = (L[l + 32] & 15) | ((H[l] >> 2) & 3) << 4;
                int q2 = (L[l] >> 4) | ((H[l] >> 4) & 3) << 4, q3 = (L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4;
                /* element 128h + 32i + l sits in activation block 4h + i, sub-block (32i + l) / 16 */
                s16[8 * h + l / 16] += q0 * x[4 * h].q[l];
                s16[8 * h + 2 + l / 16] += q1 * x[4 * h + 1].q[l];
                s16[8 * h + 4 + l / 16] += q2 * x[4 * h + 2].q[l];
                s16[8 * h + 6 + l / 16] += q3 * x[4 * h + 3].q[l];
            }
        }
        for (int s = 0; s < 16; s++) {
            const struct lmc_q8act *a = &x[s / 2];
            int32_t sx = s % 2 ? a->s1 : a->s0;
            acc += d * (float)sc[s] * a->d * (float)(s16[s] - 32 * sx);
        }
    }
    return acc;
}

static float dot_u4g(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    const float *sc = w->scale + row * w->n_groups;
    const int32_t *zr = w->zero + row * w->n_groups;
    float acc = 0;
    for (int64_t g = 0; g < w->n_groups; g++) {
        float ga = 0;
        for (int64_t b = w->gblk[g]; b < w->gblk[g + 1]; b++) {
            const uint8_t *q = p + 16 * b;
            int32_t s = 0;
            for (int j = 0; j < 16; j++) s += (q[j] & 15) * x[b].q[j] + (q[j] >> 4) * x[b].q[j + 16];
            ga += x[b].d * (float)(s - zr[g] * (x[b].s0 + x[b].s1));
        }
        acc += sc[g] * ga;
    }
    return acc;
}

static float dot_u8g(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    const float *sc = w->scale + row * w->n_groups;
    const int32_t *zr = w->zero + row * w->n_groups;
    float acc = 0;
    for (int64_t g = 0; g < w->n_groups; g++) {
        float ga = 0;
        for (int64_t b = w->gblk[g]; b < w->gblk[g + 1]; b++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += p[32 * b + j] * x[b].q[j];
            ga += x[b].d * (float)(s - zr[g] * (x[b].s0 + x[b].s1));
        }
        acc += sc[g] * ga;
    }
    return acc;
}

static float dot_nf4(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    const float *am = w->absmax + row * (w->k / 64);
    float acc = 0;
    for (int64_t b = 0; b < w->k / 64; b++) {
        float s = 0;
        for (int j = 0; j < 32; j++) {
            uint8_t v = p[32 * b + j];
            s += w->code[v >> 4] * xf[64 * b + 2 * j] + w->code[v & 15] * xf[64 * b + 2 * j + 1];
        }
        acc += am[b] * s;
    }
    return acc;
}

const char *lmc_qisa_name(enum lmc_qisa isa) {
    return isa == LMC_QISA_AVX512VNNI ? "avx512-vnni" : isa == LMC_QISA_AVX2 ? "avx2" : "c";
}

enum lmc_qisa lmc_qctx_init(struct lmc_qctx *c, enum lmc_qisa max_isa) {
    static const lmc_qdot_fn portable[LMC_QK_COUNT] = {
        [LMC_QK_Q8_0] = dot_q8_0, [LMC_QK_Q4_0] = dot_q4_0, [LMC_QK_Q4_1] = dot_q4_1, [LMC_QK_Q5_0] = dot_q5_0,
        [LMC_QK_Q5_1] = dot_q5_1, [LMC_QK_Q4_K] = dot_q4_k, [LMC_QK_Q5_K] = dot_q5_k, [LMC_QK_Q6_K] = dot_q6_k,
        [LMC_QK_Q4_KR] = dot_q4_kr, [LMC_QK_Q4_0R] = dot_q4_0r,
        [LMC_QK_U4G] = dot_u4g,   [LMC_QK_U8G] = dot_u8g,   [LMC_QK_NF4] = dot_nf4,
    };
    memcpy(c->dot, portable, sizeof c->dot);
    memset(c->dot4, 0, sizeof c->dot4);
    memset(c->dotm, 0, sizeof c->dotm);
    c->small_max = LMC_QSMALL_MAX;
    c->quantize = lmc_q8act_quantize;
    c->quantize_k = lmc_q8act_quantize_k;
    c->isa = LMC_QISA_C;
#if defined(__x86_64__)
    __builtin_cpu_init();
    unsigned a, b, cx, d;
    bool f16c = __get_cpuid(1, &a, &b, &cx, &d) && (cx & (1u << 29)); /* clang's builtin lacks "f16c" */
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    bool vnni = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    lmc_qdot_fn t[LMC_QK_COUNT] = {0};
    if (vnni && max_isa >= LMC_QISA_AVX512VNNI) {
        lmc_qdot_table_vnni(t);
        lmc_qdot4_table_vnni(c->dot4);
        lmc_qdotm_table_q4_vnni(c->dotm);
        lmc_qdotm_table_q4k_vnni(c->dotm);
        c->quantize = lmc_q8act_quantize_vnni();
        c->quantize_k = lmc_q8act_quantize_k_vnni();
        c->isa = LMC_QISA_AVX512VNNI;
    } else if (avx2 && max_isa >= LMC_QISA_AVX2) {
        lmc_qdot_table_avx2(t);
        lmc_qdot4_table_avx2(c->dot4);
        lmc_qdotm_table_q4_avx2(c->dotm);
        lmc_qdotm_table_q4k_avx2(c->dotm);
        c->quantize = lmc_q8act_quantize_avx2();
        c->quantize_k = lmc_q8act_quantize_k_avx2();
        c->isa = LMC_QISA_AVX2;
    }
    for (int i = 0; i < LMC_QK_COUNT; i++)
        if (t[i]) c->dot[i] = t[i];
#endif
    return c->isa;
}

/* ---- preparing weights ---- */

lmc_status lmc_qweight_init_ggml(struct lmc_qweight *w, int type, const void *data, int64_t n, int64_t k,
                                 lmc_err *err) {
    memset(w, 0, sizeof *w);
    static const struct { int type; enum lmc_qkernel k; } map[] = {
        {LMC_GGML_Q8_0, LMC_QK_Q8_0}, {LMC_GGML_Q4_0, LMC_QK_Q4_0}, {LMC_GGML_Q4_1, LMC_QK_Q4_1},
        {LMC_GGML_Q5_0, LMC_QK_Q5_0}, {LMC_GGML_Q5_1, LMC_QK_Q5_1}, {LMC_GGML_Q4_K, LMC_QK_Q4_K},
        {LMC_GGML_Q5_K, LMC_QK_Q5_K}, {LMC_GGML_Q6_K, LMC_QK_Q6_K},
    };
    int found = -1;
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (map[i].type == type) found = (int)i;
    int64_t rb;
    if (found < 0) {
        const char *nm = lmc_ggml_type_name(type);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "quantized matmul: no kernel for type %s (%d)", nm ? nm : "?", type);
    }
    if (n <= 0 || !lmc_ggml_row_bytes(type, k, &rb) || k <= 0)
        return lmc_err_set(err, LMC_ERR_FORMAT, "quantized matmul: %s rows of %lld elements are not whole blocks",
                           lmc_ggml_type_name(type), (long long)k);
    w->kernel = map[found].k;
    w->ggml_type = type;
    w->n = n;
    w->k = w->kp = k;
    w->data = data;
    w->row_bytes = rb;
    return LMC_OK;
}

lmc_status lmc_qweight_init_groups(struct lmc_qweight *w, const struct lmc_qgroups *g, lmc_err *err) {
    memset(w, 0, sizeof *w);
    w->ggml_type = -1;
    w->kernel = g->bits <= 4 ? LMC_QK_U4G : LMC_QK_U8G;
    w->n = g->n;
    w->k = g->k;
    w->n_groups = g->n_groups;
    int64_t ng = g->n_groups;
    w->gblk = calloc((size_t)ng + 1, sizeof *w->gblk);
    int64_t *cnt = calloc((size_t)ng, sizeof *cnt);
    if (!w->gblk || !cnt) goto oom;
    for (int64_t i = 0; i < g->k; i++) {
        LMC_ASSERT(g->g_idx[i] >= 0 && g->g_idx[i] < ng);
        cnt[g->g_idx[i]]++;
    }
    for (int64_t i = 0; i < ng; i++) w->gblk[i + 1] = w->gblk[i] + (cnt[i] + 31) / 32;
    w->kp = w->gblk[ng] * 32;
    w->perm = malloc((size_t)w->kp * sizeof *w->perm);
    if (!w->perm) goto oom;
    for (int64_t i = 0; i < w->kp; i++) w->perm[i] = -1;
    memset(cnt, 0, (size_t)ng * sizeof *cnt);
    for (int64_t i = 0; i < g->k; i++) {
        int32_t gi = g->g_idx[i];
        w->perm[w->gblk[gi] * 32 + cnt[gi]++] = (int32_t)i;
    }
    bool identity = w->kp == w->k;
    for (int64_t i = 0; i < w->kp && identity; i++) identity = w->perm[i] == i;
    if (identity) {
        free(w->perm);
        w->perm = NULL;
    }
    w->row_bytes = w->kernel == LMC_QK_U4G ? w->kp / 2 : w->kp;
    uint8_t *codes = calloc((size_t)(w->row_bytes * w->n), 1);
    w->scale = malloc((size_t)(ng * w->n) * sizeof *w->scale);
    w->zero = malloc((size_t)(ng * w->n) * sizeof *w->zero);
    w->owned = codes;
    w->data = codes;
    if (!codes || !w->scale || !w->zero) goto oom;
    for (int64_t r = 0; r < w->n; r++) {
        uint8_t *row = codes + r * w->row_bytes;
        for (int64_t j = 0; j < w->kp; j++) {
            int64_t col = w->perm ? w->perm[j] : j;
            uint8_t q = col >= 0 ? g->q[r * g->k + col] : 0;
            if (w->kernel == LMC_QK_U8G) row[j] = q;
            else if (j % 32 < 16) row[j / 32 * 16 + j % 32] |= q;
            else row[j / 32 * 16 + j % 32 - 16] |= (uint8_t)(q << 4);
        }
        for (int64_t gi = 0; gi < ng; gi++) {
            w->scale[r * ng + gi] = g->scale[gi * g->n + r];
            w->zero[r * ng + gi] = g->zero[gi * g->n + r];
        }
    }
    free(cnt);
    return LMC_OK;
oom:
    free(cnt);
    lmc_qweight_free(w);
    return lmc_err_set(err, LMC_ERR_OOM, "quantized matmul: out of memory preparing (%lld, %lld)", (long long)g->n,
                       (long long)g->k);
}

lmc_status lmc_qweight_init_nf4(struct lmc_qweight *w, const struct lmc_nf4 *q, int64_t n, int64_t k,
                                lmc_err *err) {
    memset(w, 0, sizeof *w);
    int64_t nk;
    if (n <= 0 || k <= 0 || k % 64 || !lmc_mul_ok(n, k, &nk) || nk != q->numel)
        return lmc_err_set(err, LMC_ERR_FORMAT, "NF4 weight (%lld, %lld): %lld elements stored, rows must be whole blocks of 64",
                           (long long)n, (long long)k, (long long)q->numel);
    w->kernel = LMC_QK_NF4;
    w->ggml_type = -1;
    w->n = n;
    w->k = w->kp = k;
    w->row_bytes = k / 2;
    uint8_t *codes = malloc((size_t)nk / 2);
    w->absmax = malloc((size_t)(nk / 64) * sizeof *w->absmax);
    w->owned = codes;
    w->data = codes;
    if (!codes || !w->absmax) {
        lmc_qweight_free(w);
        return lmc_err_set(err, LMC_ERR_OOM, "NF4 weight: out of memory");
    }
    memcpy(codes, q->packed, (size_t)nk / 2);
    memcpy(w->code, q->quant_map, sizeof w->code);
    for (int64_t b = 0; b < nk / 64; b++) w->absmax[b] = lmc_nf4_absmax(q, b);
    lmc_status s = lmc_qweight_keep_dq(w, q, err);
    if (s) lmc_qweight_free(w);
    return s;
}

lmc_status lmc_qweight_init_ternary(struct lmc_qweight *w, const int8_t *q, float scale, int64_t n, int64_t k,
                                    lmc_err *err) {
    struct lmc_qgroups g;
    lmc_status s = lmc_qgroups_alloc(&g, n, k, 2, k, err);
    if (s) return s;
    for (int64_t i = 0; i < n * k; i++) {
        if (q[i] < -1 || q[i] > 1) {
            lmc_qgroups_free(&g);
            return lmc_err_set(err, LMC_ERR_FORMAT, "ternary weight: value %d at %lld is not -1, 0 or 1", q[i], (long long)i);
        }
        g.q[i] = (uint8_t)(q[i] + 1);
    }
    for (int64_t r = 0; r < n; r++) {
        g.scale[r] = scale;
        g.zero[r] = 1;
    }
    s = lmc_qweight_init_groups(w, &g, err);
    lmc_qgroups_free(&g);
    return s;
}

void lmc_qweight_free(struct lmc_qweight *w) {
    free(w->owned);
    free(w->gblk);
    free(w->scale);
    free(w->zero);
    free(w->perm);
    free(w->absmax);
    free(w->dq_owned);
    memset(w, 0, sizeof *w);
}

size_t lmc_qweight_bytes(const struct lmc_qweight *w) {
    if (w->nf4_flat) return (size_t)(w->n * w->k + 1) / 2 + (size_t)((w->n * w->k + 63) / 64) * 4;
    size_t b = (size_t)(w->row_bytes * w->n);
    if (w->scale) b += (size_t)(w->n * w->n_groups) * 8;
    if (w->absmax) b += (size_t)(w->n * (w->k / 64)) * 4;
    return b;
}

/* ---- the product ---- */

/* Inputs gathered into the kernel's column order first (act-order, padding). */
static bool needs_floats(const struct lmc_qweight *w) { return w->perm != NULL; }

size_t lmc_qmatmul_scratch_bytes(const struct lmc_qweight *w, int64_t m) {
    size_t f = needs_floats(w) ? (size_t)(m * w->kp) * sizeof(float) : 0;
    f = (f + 63) / 64 * 64;
    size_t q = (size_t)(m * (w->kp / 32)) * sizeof(struct lmc_q8act);
    q = (q + 63) / 64 * 64;
    /* the small-M layout (lmc_q8rows) */
    size_t rows = lmc_q8rows_bytes(w, m);
    return f + q + rows + 64;
}

/* ---- decode's row split ----
 * At M < QGUIDE_MAX_M (decode, short drafts) a weight's rows go to the
 * pool in decreasing chunks (guided: each a 1 / (2 x threads) share of the
 * rows left, in whole 4-row tiles, down to a floor of QGUIDE_MIN_W
 * weights, ~3-4 us of a 4-bit M = 1 kernel): the big chunks cost few
 * claims, the small last ones let the threads finish together whatever
 * their speeds (a thread sharing its core or memory channel with another
 * process, a late wake-up). With 4 x threads equal chunks the 125M
 * lm_head's were ~80 us each, and a thread ahead by less than one idled
 * until the other's last one ended. At 125M and 2 threads a token makes
 * ~470 claims this way (was ~680: q/k/v's 256-row weights are one or two
 * chunks, the head's 32000 rows 18). Every boundary but the weight's last
 * row is a multiple of 4, so the kernels meet the same 4-row tiles as
 * with any other split: the same bits. */
#define QGUIDE_MAX_M 4
#define QGUIDE_MIN_W 131072
#define QGUIDE_MAX_TASKS 96

/* Chunk ends e[1..] of rows [0, n) for `threads` threads (e[0] = 0);
 * returns the chunk count, or 0 if more than cap chunks are needed. */
static int guided_split(int64_t n, int64_t k, int threads, int64_t *e, int cap) {
    int64_t floor_rows = LMC_MAX(4, (QGUIDE_MIN_W / LMC_MAX(k, 1) + 3) / 4 * 4);
    int c = 0;
    e[0] = 0;
    while (e[c] < n) {
        if (c == cap) return 0;
        int64_t left = n - e[c];
        int64_t sz = (left / (2 * threads) + 3) / 4 * 4;
        sz = LMC_MAX(sz, floor_rows);
        e[c + 1] = LMC_MIN(n, e[c] + sz);
        c++;
    }
    return c;
}

struct qjob {
    const struct lmc_qctx *c;
    const struct lmc_qweight *w;
    float *y;
    const struct lmc_q8act *xq;
    const float *xf;
    int64_t m, rows_per_task;
    const struct lmc_q8rows *rows; /* non-NULL: the small-M kernel does all m rows */
    int n_guided;                  /* > 0: task t does rows [end[t], end[t + 1]) */
    int64_t end[QGUIDE_MAX_TASKS + 1];
};

static void qjob_run(void *arg, int64_t task, int thread) {
    const struct qjob *j = arg;
    const struct lmc_qweight *w = j->w;
    lmc_qdot_fn dot = j->c->dot[w->kernel];
    lmc_qdot4_fn dot4 = j->c->dot4[w->kernel];
    int64_t r0 = task * j->rows_per_task, r1 = LMC_MIN(w->n, r0 + j->rows_per_task);
    int64_t nb = w->kp / 32;
    if (j->n_guided) {
        j->c->dotm[w->kernel](w, j->end[task], j->end[task + 1], j->rows, j->y, w->n);
        return;
    }
    if (j->rows) {
        j->c->dotm[w->kernel](w, r0, r1, j->rows, j->y, w->n);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        int64_t i = 0;
        float o[4];
        for (; dot4 && i + 4 <= j->m; i += 4) { /* a weight row unpacked once for four inputs */
            dot4(w, r, j->xq + i * nb, nb, o);
            for (int t = 0; t < 4; t++) j->y[(i + t) * w->n + r] = o[t];
        }
        for (; i < j->m; i++) j->y[i * w->n + r] = dot(w, r, j->xq + i * nb, j->xf ? j->xf + i * w->kp : NULL);
    }
}

/* Activation rows quantized and laid out for the small-M kernels in
 * parallel (prefill: m rows of K floats are worth a pool run). */
struct qprep {
    const struct lmc_qctx *c;
    const struct lmc_qweight *w;
    const float *xf;
    struct lmc_q8act *xq;
    void *buf;
    int64_t m, rows_per_task;
};

static void qprep_run(void *arg, int64_t task, int thread) {
    const struct qprep *p = arg;
    int64_t i0 = task * p->rows_per_task, i1 = LMC_MIN(p->m, i0 + p->rows_per_task), nb = p->w->kp / 32;
    lmc_q8quant_fn quant = lmc_qctx_quantizer(p->c, p->w);
    for (int64_t i = i0; i < i1; i++) quant(p->xf + i * p->w->kp, p->w->kp, p->xq + i * nb);
    lmc_q8rows_fill(p->w, p->xq, p->m, i0, i1, p->buf);
}

/* Rows from which the activations are prepared on the pool. */
#define QPREP_PAR_MIN 16

void lmc_qmatmul(const struct lmc_qctx *c, const struct lmc_qweight *w, float *y, const float *x, int64_t m,
                 void *scratch, struct lmc_pool *pool) {
    LMC_ASSERT(!w->nf4_flat); /* a training base: float products only */
    if (m <= 0) return;
    if (lmc_qamx_takes(c, w, m)) { /* prefill on AMX-INT8 tiles (qmatmul_amx.c) */
        lmc_qmatmul_amx(c, w, y, x, m, scratch, pool);
        return;
    }
    uint8_t *sp = scratch;
    const float *xf = x;
    if (needs_floats(w)) {
        float *g = (float *)sp;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < w->kp; j++) g[i * w->kp + j] = w->perm[j] >= 0 ? x[i * w->k + w->perm[j]] : 0.0f;
        xf = g;
        sp += ((size_t)(m * w->kp) * sizeof(float) + 63) / 64 * 64;
    }
    struct lmc_q8act *xq = (struct lmc_q8act *)sp;
    int64_t nb = w->kp / 32;
    int threads = pool ? lmc_pool_threads(pool) : 1;
    struct qjob j = {c, w, y, xq, w->kernel == LMC_QK_NF4 ? xf : NULL, m, 0, NULL, 0, {0}};
    struct lmc_q8rows rows;
    if (c->dotm[w->kernel] && m <= c->small_max) {
        /* after the q8act blocks (scratch layout: lmc_qmatmul_scratch_bytes) */
        void *buf = sp + ((size_t)(m * nb) * sizeof *xq + 63) / 64 * 64;
        if (pool && threads > 1 && m >= QPREP_PAR_MIN) {
            struct qprep p = {c, w, xf, xq, buf, m, (m + 4 * threads - 1) / (4 * threads)};
            lmc_pool_run(pool, (m + p.rows_per_task - 1) / p.rows_per_task, qprep_run, &p);
        } else {
            for (int64_t i = 0; i < m; i++) lmc_qctx_quantizer(c, w)(xf + i * w->kp, w->kp, xq + i * nb);
            lmc_q8rows_fill(w, xq, m, 0, m, buf);
        }
        lmc_q8rows_view(w, xq, m, buf, &rows);
        j.rows = &rows;
    } else if (w->kernel != LMC_QK_NF4) {
        for (int64_t i = 0; i < m; i++) lmc_qctx_quantizer(c, w)(xf + i * w->kp, w->kp, xq + i * nb);
    }
    j.rows_per_task = LMC_MAX(1, (w->n + 4 * threads - 1) / (4 * threads));
    if (j.rows) j.rows_per_task = (j.rows_per_task + 3) / 4 * 4; /* whole 4-row tiles */
    int64_t tasks = (w->n + j.rows_per_task - 1) / j.rows_per_task;
    if (j.rows && m < QGUIDE_MAX_M && pool && threads > 1) {
        j.n_guided = guided_split(w->n, w->kp, threads, j.end, QGUIDE_MAX_TASKS);
        if (j.n_guided) tasks = j.n_guided;
    }
    if (pool && threads > 1) lmc_pool_run(pool, tasks, qjob_run, &j);
    else
        for (int64_t t = 0; t < tasks; t++) qjob_run(&j, t, 0);
}

/* ---- several weights over one input (q/k/v, gate/up) ---- */

/* Whether b reads the activations in a's small-M layout: the same kind,
 * columns and block groups, no permutation. */
static bool same_layout(const struct lmc_qweight *a, const struct lmc_qweight *b) {
    if (a->kernel != b->kernel || a->k != b->k || a->kp != b->kp || a->perm || b->perm || a->nf4_flat || b->nf4_flat)
        return false;
    if (a->kernel != LMC_QK_U4G) return true;
    if (a->n_groups != b->n_groups) return false;
    return a->gblk == b->gblk || memcmp(a->gblk, b->gblk, (size_t)(a->n_groups + 1) * sizeof *a->gblk) == 0;
}

#define QMULTI_MAX 8

struct qmjob {
    const struct lmc_qctx *c;
    int k;
    const struct lmc_qweight *const *w;
    float *const *y;
    const struct lmc_q8rows *rows;
    int64_t rows_per_task[QMULTI_MAX], task0[QMULTI_MAX + 1]; /* weight i's tasks: [task0[i], task0[i + 1]) */
    int guided;                                /* rows of task t: [end[t], end[t + 1]) of its weight */
    int64_t end[QGUIDE_MAX_TASKS + QMULTI_MAX]; /* weight i's chunk ends from end[task0[i] + i] */
};

static void qmjob_run(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct qmjob *j = arg;
    int i = 0;
    while (task >= j->task0[i + 1]) i++;
    const struct lmc_qweight *w = j->w[i];
    if (j->guided) {
        const int64_t *e = j->end + task + i;
        j->c->dotm[w->kernel](w, e[0], e[1], j->rows, j->y[i], w->n);
        return;
    }
    int64_t r0 = (task - j->task0[i]) * j->rows_per_task[i], r1 = LMC_MIN(w->n, r0 + j->rows_per_task[i]);
    j->c->dotm[w->kernel](w, r0, r1, j->rows, j->y[i], w->n);
}

void lmc_qmatmul_multi(const struct lmc_qctx *c, int k, const struct lmc_qweight *const *w, float *const *y,
                       const float *x, int64_t m, void *scratch, struct lmc_pool *pool) {
    LMC_ASSERT(k >= 1);
    bool shared = k <= QMULTI_MAX && m >= 1 && c->dotm[w[0]->kernel] && m <= c->small_max;
    for (int i = 1; shared && i < k; i++) shared = same_layout(w[0], w[i]);
    if (shared && lmc_qamx_takes(c, w[0], m)) { /* one quantization, every weight on AMX-INT8 tiles */
        lmc_qmatmul_amx_multi(c, k, w, y, x, m, scratch, pool);
        return;
    }
    if (!shared || w[0]->perm || w[0]->nf4_flat) {
        for (int i = 0; i < k; i++) lmc_qmatmul(c, w[i], y[i], x, m, scratch, pool);
        return;
    }
    /* the activations quantized and laid out once for all k (lmc_qmatmul's scratch layout) */
    struct lmc_q8act *xq = scratch;
    int64_t nb = w[0]->kp / 32;
    void *buf = (uint8_t *)scratch + ((size_t)(m * nb) * sizeof *xq + 63) / 64 * 64;
    int threads = pool ? lmc_pool_threads(pool) : 1;
    if (pool && threads > 1 && m >= QPREP_PAR_MIN) {
        struct qprep p = {c, w[0], x, xq, buf, m, (m + 4 * threads - 1) / (4 * threads)};
        lmc_pool_run(pool, (m + p.rows_per_task - 1) / p.rows_per_task, qprep_run, &p);
    } else {
        lmc_q8quant_fn quant = lmc_qctx_quantizer(c, w[0]);
        for (int64_t i = 0; i < m; i++) quant(x + i * w[0]->kp, w[0]->kp, xq + i * nb);
        lmc_q8rows_fill(w[0], xq, m, 0, m, buf);
    }
    struct lmc_q8rows rows;
    lmc_q8rows_view(w[0], xq, m, buf, &rows);
    /* one pool run over every weight's 4-row tiles (4 x threads tasks per weight, as lmc_qmatmul) */
    struct qmjob j = {.c = c, .k = k, .w = w, .y = y, .rows = &rows};
    j.task0[0] = 0;
    if (m < QGUIDE_MAX_M && pool && threads > 1) {
        /* each weight's guided chunks, one after another: weight i's ends
         * from end[task0[i] + i] (its own end[0] = 0 included) */
        int left = QGUIDE_MAX_TASKS, ok = 1;
        for (int i = 0; ok && i < k; i++) {
            int nc = guided_split(w[i]->n, w[i]->kp, threads, j.end + j.task0[i] + i, left);
            ok = nc > 0;
            left -= nc;
            j.task0[i + 1] = j.task0[i] + nc;
        }
        if (ok) {
            j.guided = 1;
            lmc_pool_run(pool, j.task0[k], qmjob_run, &j);
            return;
        }
        j.task0[0] = 0;
    }
    for (int i = 0; i < k; i++) {
        int64_t rpt = LMC_MAX(1, (w[i]->n + 4 * threads - 1) / (4 * threads));
        j.rows_per_task[i] = (rpt + 3) / 4 * 4;
        j.task0[i + 1] = j.task0[i] + (w[i]->n + j.rows_per_task[i] - 1) / j.rows_per_task[i];
    }
    if (pool && threads > 1) lmc_pool_run(pool, j.task0[k], qmjob_run, &j);
    else
        for (int64_t t = 0; t < j.task0[k]; t++) qmjob_run(&j, t, 0);
}
