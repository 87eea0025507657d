/* test_infer.c — the pieces of generation that are not the model: UTF-8
 * sanitising for streamed text (against Python's errors="replace"), and the
 * sampler (greedy, seeded reproducibility, empirical frequencies against the
 * softmax, top-k / top-p / min-p support sets, repetition penalty), and the
 * RoPE frequency variants against float64 formulas written out here. */
#include "test.h"
#include "core/core.h"
#include "infer/sampler.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

static void test_utf8(void) {
    /* expected outputs: bytes.decode('utf-8', 'replace').encode() in CPython */
    static const struct { const char *in; size_t n; const char *want; } cases[] = {
        {"abc", 3, "abc"},
        {"\xc5\xc5", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe2\x82", 2, "\xef\xbf\xbd"},
        {"\xe2\x82\xac", 3, "\xe2\x82\xac"},
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},
        {"a\xff" "b", 3, "a\xef\xbf\xbd" "b"},
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x9f\x98\x80x", 5, "\xf0\x9f\x98\x80x"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t used, n = lmc_utf8_sanitize(cases[i].in, cases[i].n, true, out, &used);
        CHECK_MSG(n == strlen(cases[i].want) && !memcmp(out, cases[i].want, n), "case %zu", i);
        CHECK(used == cases[i].n);
    }
    /* streaming: an unfinished character is held back, not replaced */
    size_t used, n = lmc_utf8_sanitize("ab\xf0\x9f", 4, false, out, &used);
    CHECK(n == 2 && used == 2 && !memcmp(out, "ab", 2));
    CHECK(lmc_utf8_valid_prefix("ok\xc3(", 4) == 2);
    CHECK(lmc_utf8_complete_prefix("ok\xe2\x82", 4) == 2);
}

static void softmax(const float *l, int64_t n, double T, double *p) {
    double mx = l[0], s = 0;
    for (int64_t i = 1; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    for (int64_t i = 0; i < n; i++) s += (p[i] = exp((l[i] - mx) / T));
    for (int64_t i = 0; i < n; i++) p[i] /= s;
}

static void test_sampler(void) {
    enum { V = 37, DRAWS = 40000 };
    float base[V], l[V];
    uint64_t seed = 3;
    for (int i = 0; i < V; i++) base[i] = 2.0f * test_rand(&seed);
    struct lmc_sampler s;
    struct lmc_sampler_params p;
    lmc_err err = {0};
    /* greedy */
    lmc_sampler_defaults(&p);
    p.temperature = 0;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_OK);
    memcpy(l, base, sizeof l);
    CHECK(lmc_sampler_sample(&s, l, NULL, 0) == lmc_argmax(base, V));
    lmc_sampler_free(&s);
    /* frequencies at T = 0.7 follow softmax(l / T) */
    lmc_sampler_defaults(&p);
    p.temperature = 0.7;
    p.seed = 11;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_OK);
    static int count[V];
    for (int d = 0; d < DRAWS; d++) {
        memcpy(l, base, sizeof l);
        count[lmc_sampler_sample(&s, l, NULL, 0)]++;
    }
    lmc_sampler_free(&s);
    double prob[V], worst = 0;
    softmax(base, V, 0.7, prob);
    for (int i = 0; i < V; i++) {
        double sd = sqrt(prob[i] * (1 - prob[i]) / DRAWS) + 1e-9;
        double z = fabs(count[i] / (double)DRAWS - prob[i]) / sd;
        worst = z > worst ? z : worst;
    }
    CHECK_MSG(worst < 5.0, "worst z-score %.2f", worst);
    /* top-k = 3: only the three largest ever appear */
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++)
            if (base[order[j]] > base[order[i]]) { int t = order[i]; order[i] = order[j]; order[j] = t; }
    lmc_sampler_defaults(&p);
    p.top_k = 3;
    p.temperature = 5;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_OK);
    bool in_top3 = true;
    for (int d = 0; d < 2000; d++) {
        memcpy(l, base, sizeof l);
        int32_t t = lmc_sampler_sample(&s, l, NULL, 0);
        in_top3 &= t == order[0] || t == order[1] || t == order[2];
    }
    CHECK(in_top3);
    lmc_sampler_free(&s);
    /* top-p: the support is the smallest prefix (by probability) reaching p */
    lmc_sampler_defaults(&p);
    p.top_p = 0.5;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_OK);
    softmax(base, V, 1.0, prob);
    int keep = 0;
    for (double cum = 0; cum < 0.5;) cum += prob[order[keep++]];
    bool in_nucleus = true;
    for (int d = 0; d < 2000; d++) {
        memcpy(l, base, sizeof l);
        int32_t t = lmc_sampler_sample(&s, l, NULL, 0);
        bool found = false;
        for (int k = 0; k < keep; k++) found |= t == order[k];
        in_nucleus &= found;
    }
    CHECK(in_nucleus);
    lmc_sampler_free(&s);
    /* min-p: nothing below min_p * max prob */
    lmc_sampler_defaults(&p);
    p.min_p = 0.5;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_OK);
    bool above = true;
    for (int d = 0; d < 2000; d++) {
        memcpy(l, base, sizeof l);
        int32_t t = lmc_sampler_sample(&s, l, NULL, 0);
        above &= prob[t] >= 0.5 * prob[order[0]] - 1e-12;
    }
    CHECK(above);
    lmc_sampler_free(&s);
    /* repetition penalty (HF rule): positive logits divided, negative multiplied */
    lmc_sampler_defaults(&p);
    p.temperature = 0;
    p.repeat_penalty = 50;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_OK);
    int32_t hist[2] = {order[0], order[0]};
    memcpy(l, base, sizeof l);
    int32_t t = lmc_sampler_sample(&s, l, hist, 2);
    CHECK(base[order[0]] > 0 && base[order[1]] > base[order[0]] / 50);
    CHECK(t == order[1]);
    CHECK(fabsf(l[order[0]] - base[order[0]] / 50) <= 1e-6f * fabsf(base[order[0]]));
    lmc_sampler_free(&s);
    /* invalid parameters are refused with the parameter named */
    lmc_sampler_defaults(&p);
    p.top_p = 0;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_ERR_ARG && strstr(err.msg, "top_p"));
    p.top_p = 1;
    p.temperature = -1;
    CHECK(lmc_sampler_init(&s, &p, V, &err) == LMC_ERR_ARG && strstr(err.msg, "temperature"));
}

/* RoPE frequency variants, written out from the HF definitions. */
static void test_rope(void) {
    struct lmc_config c;
    memset(&c, 0, sizeof c);
    c.max_position_embeddings = 8192;
    c.rope.theta = 500000;
    c.rope.factor = 8;
    c.rope.low_freq_factor = 1;
    c.rope.high_freq_factor = 4;
    c.rope.original_max_pos = 8192;
    c.rope.type = LMC_ROPE_LLAMA3;
    double f[64];
    float sc;
    lmc_rope_freqs(&c, 128, 10, f, &sc);
    int ok = 1;
    for (int i = 0; i < 64; i++) {
        double base = 1.0 / pow(500000.0, 2.0 * i / 128.0), wl = 2 * M_PI / base, want;
        if (wl < 8192.0 / 4) want = base;
        else if (wl > 8192.0 / 1) want = base / 8;
        else {
            double sm = (8192.0 / wl - 1) / (4 - 1);
            want = (1 - sm) * base / 8 + sm * base;
        }
        ok &= fabs(f[i] - want) <= 1e-15 * fabs(want) + 1e-300;
    }
    CHECK(ok && sc == 1.0f);
    c.rope.type = LMC_ROPE_LINEAR;
    c.rope.theta = 10000;
    c.rope.factor = 4;
    lmc_rope_freqs(&c, 64, 10, f, &sc);
    CHECK(fabs(f[5] - 1.0 / pow(10000.0, 10.0 / 64) / 4) < 1e-15);
    /* dynamic: unchanged inside the trained length, larger base beyond */
    c.rope.type = LMC_ROPE_DYNAMIC;
    c.rope.factor = 2;
    c.rope.original_max_pos = 0;
    c.max_position_embeddings = 100;
    lmc_rope_freqs(&c, 64, 50, f, &sc);
    CHECK(fabs(f[5] - 1.0 / pow(10000.0, 10.0 / 64)) < 1e-15);
    lmc_rope_freqs(&c, 64, 300, f, &sc);
    double nb = 10000.0 * pow(2.0 * 300 / 100 - 1, 64.0 / 62);
    CHECK(fabs(f[5] - 1.0 / pow(nb, 10.0 / 64)) < 1e-15);
    /* yarn: attention factor 0.1 ln(s) + 1; high frequencies kept, low ones interpolated */
    c.rope.type = LMC_ROPE_YARN;
    c.rope.factor = 4;
    c.rope.original_max_pos = 4096;
    c.rope.beta_fast = 32;
    c.rope.beta_slow = 1;
    c.rope.attention_factor = -1;
    c.rope.truncate = true;
    lmc_rope_freqs(&c, 64, 10, f, &sc);
    CHECK(fabsf(sc - (float)(0.1 * log(4.0) + 1)) < 1e-6f);
    CHECK(fabs(f[0] - 1.0) < 1e-15);
    CHECK(fabs(f[31] - 1.0 / pow(10000.0, 62.0 / 64) / 4) < 1e-15);
}

int main(void) {
    test_utf8();
    test_sampler();
    test_rope();
    return test_finish("test_infer");
}
