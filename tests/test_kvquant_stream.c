/* test_kvquant_stream.c — StreamingLLM sinks + window (infer/kvq_stream.c):
 * eviction counts (room made, chunks, never a sink), the slot of every
 * token after a stream (first S, then the last W contiguous), and evicting
 * rows of a post-RoPE key cache: the moved keys equal the raw keys rotated
 * by the CPU rope op at their new slots (1e-5 relative), values moved
 * unchanged, sinks untouched; a streamed cache run through many evictions
 * ends equal to one built directly at the final slots. Bad policies give
 * LMC_ERR_ARG. */
#include "test.h"
#include "core/core.h"
#include "infer/kvq_stream.h"
#include "ops/backend.h"

#include <stdlib.h>
#include <string.h>

enum { KVH = 2, HD = 10, ROW = KVH * HD, ROT = 8 };

static void test_policy(void) {
    lmc_err err = {0};
    struct lmc_stream_policy p = {4, 16, 1};
    CHECK(lmc_stream_check(&p, &err) == LMC_OK);
    struct lmc_stream_policy bad[3] = {{-1, 16, 1}, {4, 0, 1}, {4, 16, 17}};
    for (int i = 0; i < 3; i++) CHECK(lmc_stream_check(&bad[i], &err) == LMC_ERR_ARG);
    CHECK(lmc_stream_evict_count(&p, 10, 5) == 0);
    CHECK(lmc_stream_evict_count(&p, 20, 1) == 1);
    CHECK(lmc_stream_evict_count(&p, 18, 5) == 3);
    struct lmc_stream_policy pc = {4, 16, 6};
    CHECK(lmc_stream_evict_count(&pc, 20, 1) == 6);
    CHECK(lmc_stream_evict_count(&pc, 20, 8) == 8);
    struct lmc_stream_policy ps = {0, 3, 1};
    CHECK(lmc_stream_evict_count(&ps, 3, 3) == 3);
    /* slots after 100 tokens: 0..3 sinks, 84..99 at 4..19 */
    int ok = 1;
    for (int64_t t = 0; t < 100; t++) {
        int64_t s = lmc_stream_slot(&p, t, 100);
        int64_t want = t < 4 ? t : t >= 84 ? 4 + (t - 84) : -1;
        ok &= s == want;
    }
    CHECK(ok);
    CHECK(lmc_stream_slot(&p, 7, 15) == 7);
}

/* rope of raw rows at given positions through the CPU op */
static void rope_at(struct lmc_backend *be, float *x, int64_t n, const int32_t *pos, const double *inv) {
    be->rope(be->ctx, x, n, KVH, HD, ROT, pos, inv, 1.0f);
}

static void test_rows(struct lmc_backend *be) {
    const struct lmc_stream_policy p = {3, 12, 1};
    enum { TOTAL = 61, CAP = 15 };
    double inv[ROT / 2];
    for (int i = 0; i < ROT / 2; i++) inv[i] = pow(10000.0, -2.0 * i / ROT);
    static float raw_k[TOTAL * ROW], raw_v[TOTAL * ROW];
    uint64_t s = 3;
    for (int i = 0; i < TOTAL * ROW; i++) raw_k[i] = test_rand(&s), raw_v[i] = test_rand(&s);
    /* stream token by token (odd chunk sizes of arrival) with eviction */
    float k[CAP * ROW], v[CAP * ROW];
    int64_t n = 0, arrivals[] = {5, 1, 9, 1, 1, 7, 12, 3, 1, 10, 11};
    int64_t t = 0, evictions = 0;
    for (size_t a = 0; a < sizeof arrivals / sizeof *arrivals; a++) {
        int64_t m = arrivals[a];
        int64_t e = lmc_stream_evict_count(&p, n, m);
        if (e) {
            lmc_stream_evict_rows(k, v, n, KVH, HD, ROT, inv, p.sinks, e);
            n -= e;
            evictions++;
        }
        int32_t pos[16];
        for (int64_t i = 0; i < m; i++) pos[i] = (int32_t)(n + i); /* slot = rotary position */
        memcpy(k + n * ROW, raw_k + t * ROW, (size_t)(m * ROW) * sizeof(float));
        memcpy(v + n * ROW, raw_v + t * ROW, (size_t)(m * ROW) * sizeof(float));
        rope_at(be, k + n * ROW, m, pos, inv);
        n += m;
        t += m;
    }
    CHECK(t == TOTAL && n == CAP && evictions > 3);
    /* direct: kept tokens roped at their final slots */
    float dk[CAP * ROW], dv[CAP * ROW];
    int32_t pos[CAP];
    for (int64_t u = 0; u < TOTAL; u++) {
        int64_t slot = lmc_stream_slot(&p, u, TOTAL);
        if (slot < 0) continue;
        memcpy(dk + slot * ROW, raw_k + u * ROW, ROW * sizeof(float));
        memcpy(dv + slot * ROW, raw_v + u * ROW, ROW * sizeof(float));
        pos[slot] = (int32_t)slot;
    }
    rope_at(be, dk, CAP, pos, inv);
    double e = 0;
    for (int i = 0; i < CAP * ROW; i++) e = fmax(e, fabs(k[i] - dk[i]));
    printf("  streamed keys vs keys roped at their final slots: max error %.2e\n", e);
    CHECK(e < 1e-5);
    CHECK(!memcmp(v, dv, sizeof v));
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_kvquant_stream");
    }
    test_policy();
    test_rows(&be);
    lmc_backend_cpu_free(&be);
    return test_finish("test_kvquant_stream");
}
