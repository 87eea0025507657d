/* test_kvq_evict.c — StreamingLLM eviction over a single-sequence cache of
 * every format (infer/kvq_evict.c): a 2-layer cache of 71 positions (2
 * KV heads of 12, rotary over 8 dims) in f32, f16, bf16, q8, q4 and kivi2
 * (R = 8: ring of 40, so blocks are quantized) evicts 9 tokens after 3 sinks; against the f32 eviction of the
 * decoded rows: f32 bit for bit, the sinks unchanged (kivi2: they share
 * the first key block with moved rows and are quantized again with them,
 * within the format's bound), the moved rows within
 * one more rounding or quantization of the format (f16 1e-3, bf16 8e-3,
 * q8 1e-2, q4 0.1, kivi2 0.5 of the largest value); a second eviction on
 * top keeps the same bounds (twice). */
#include "test.h"
#include "core/core.h"
#include "core/dtype.h"
#include "infer/kvq.h"
#include "infer/kvq_stream.h"
#include "ops/backend.h"
#include "ops/cpu/kvquant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NL = 2, KVH = 2, HD = 12, ROW = KVH * HD, ROT = 8, CTX = 80, USED = 71, SINKS = 3, E = 9 };

/* position t's rows of layer l, decoded to f32 */
static void row_of(const struct lmc_kv *kv, int64_t l, int64_t t, float *k, float *v) {
    const char *kr = (const char *)kv->k + (size_t)l * kv->layer_bytes, *vr = (const char *)kv->v + (size_t)l * kv->layer_bytes;
    enum lmc_dtype dt = kv->be->kv_dtype;
    if (dt == LMC_DTYPE_F32) {
        memcpy(k, (const float *)(const void *)kr + t * ROW, ROW * sizeof(float));
        memcpy(v, (const float *)(const void *)vr + t * ROW, ROW * sizeof(float));
    } else if (dt == LMC_DTYPE_F16 || dt == LMC_DTYPE_BF16) {
        const uint16_t *a = (const uint16_t *)(const void *)kr + t * ROW, *b = (const uint16_t *)(const void *)vr + t * ROW;
        for (int i = 0; i < ROW; i++) {
            k[i] = dt == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(a[i]) : lmc_f16_to_f32(a[i]);
            v[i] = dt == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(b[i]) : lmc_f16_to_f32(b[i]);
        }
    } else {
        lmc_kvq_layer_row(kr, vr, t, k, v);
    }
}

static void test_format(enum lmc_kvq_fmt f, double tol) {
    lmc_err err = {0};
    struct lmc_backend cpu, be;
    CHECK(lmc_backend_cpu_init(&cpu, 1, &err) == LMC_OK);
    if (f) CHECK(lmc_kvq_backend_fmt(&be, &cpu, f, &err) == LMC_OK);
    else be = cpu;
    size_t es = be.kv_dtype == LMC_DTYPE_F32 ? 4 : 2;
    struct lmc_kv kv = {.be = &be, .ctx = CTX, .n_layers = NL, .row = ROW};
    kv.layer_bytes = f && !lmc_kvq_is_half(f) ? lmc_kvq_layer_bytes(f, CTX, ROW, 8) : (size_t)CTX * ROW * es;
    kv.k = calloc(NL, kv.layer_bytes), kv.v = calloc(NL, kv.layer_bytes);
    if (f) CHECK(lmc_kvq_kv_format(&kv, f, 8, &err) == LMC_OK);
    double inv[ROT / 2];
    for (int i = 0; i < ROT / 2; i++) inv[i] = pow(10000.0, -2.0 * i / ROT);
    uint64_t s = 17 + (uint64_t)f;
    static float q[USED * KVH * HD], k[USED * ROW], v[USED * ROW];
    int32_t pos[USED];
    for (int i = 0; i < USED; i++) pos[i] = i;
    for (int64_t l = 0; l < NL; l++) {
        for (int i = 0; i < USED * ROW; i++) k[i] = test_rand(&s), v[i] = test_rand(&s), q[i] = 0;
        char *kr = (char *)kv.k + (size_t)l * kv.layer_bytes, *vr = (char *)kv.v + (size_t)l * kv.layer_bytes;
        if (be.kv_dtype == LMC_DTYPE_F32) {
            memcpy(kr, k, sizeof k), memcpy(vr, v, sizeof v);
        } else {
            be.rope_kv_store(be.ctx, q, k, v, kr, vr, USED, KVH, KVH, HD, 0, pos, NULL, 1.0f);
        }
    }
    static float ref_k[NL][USED * ROW], ref_v[NL][USED * ROW], scratch[2 * USED * ROW];
    int64_t used = USED;
    for (int round = 0; round < 2; round++) {
        for (int64_t l = 0; l < NL; l++) {
            for (int64_t t = 0; t < used; t++) row_of(&kv, l, t, ref_k[l] + t * ROW, ref_v[l] + t * ROW);
            lmc_stream_evict_rows(ref_k[l], ref_v[l], used, KVH, HD, ROT, inv, SINKS, E);
        }
        lmc_kvq_evict(&kv, used, KVH, HD, ROT, inv, SINKS, E, scratch);
        used -= E;
        double worst = 0, sinks = 0;
        float gk[ROW], gv[ROW];
        for (int64_t l = 0; l < NL; l++) {
            double mx = 0;
            for (int i = 0; i < used * ROW; i++) mx = fmax(mx, fmax(fabs(ref_k[l][i]), fabs(ref_v[l][i])));
            for (int64_t t = 0; t < used; t++) {
                row_of(&kv, l, t, gk, gv);
                for (int i = 0; i < ROW; i++) {
                    double d = fmax(fabs(gk[i] - ref_k[l][t * ROW + i]), fabs(gv[i] - ref_v[l][t * ROW + i])) / mx;
                    if (t < SINKS) sinks = fmax(sinks, d);
                    else worst = fmax(worst, d);
                }
            }
        }
        /* kivi2: the sinks share the first key block with moved rows, quantized again with them */
        double sink_tol = f == LMC_KVQ_KIVI2 ? tol : 0;
        CHECK_MSG(sinks <= sink_tol && worst <= tol, "%s eviction %d: sinks %.3g, moved rows %.3g (bound %.3g)",
                  f ? lmc_kvq_name(f) : "f32", round + 1, sinks, worst, tol);
        printf("%-5s eviction %d: sinks changed %.2e, moved rows vs f32 eviction %.2e of the largest value\n",
               f ? lmc_kvq_name(f) : "f32", round + 1, sinks, worst);
        if (!f) CHECK(worst == 0);
    }
    if (f && !lmc_kvq_is_half(f))
        for (int64_t l = 0; l < NL; l++) CHECK(lmc_kvq_layer_len((char *)kv.k + (size_t)l * kv.layer_bytes) == used);
    free(kv.k), free(kv.v);
    lmc_backend_cpu_free(&cpu);
}

int main(void) {
    test_format(LMC_KVQ_NONE, 0);
    test_format(LMC_KVQ_F16, 1e-3);
    test_format(LMC_KVQ_BF16, 8e-3);
    test_format(LMC_KVQ_Q8, 1e-2);
    test_format(LMC_KVQ_Q4, 0.1);
    test_format(LMC_KVQ_KIVI2, 0.5);
    return test_finish("test_kvq_evict");
}
