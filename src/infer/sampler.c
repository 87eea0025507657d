/* sampler.c — logits processing and seeded sampling (see sampler.h). */
#include "infer/sampler.h"
#include "core/argmax.h"
#include "core/core.h"
#include "core/rng.h"
#include "ops/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lmc_sampler_defaults(struct lmc_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0;
    p->top_p = 1.0;
    p->repeat_penalty = 1.0;
    p->seed = 0x5eed;
}

lmc_status lmc_sampler_check(const struct lmc_sampler_params *p, lmc_err *err) {
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return lmc_err_set(err, LMC_ERR_ARG, "temperature %g out of range [0, 100]", p->temperature);
    if (p->top_k < 0) return lmc_err_set(err, LMC_ERR_ARG, "top_k %lld must be >= 0", (long long)p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return lmc_err_set(err, LMC_ERR_ARG, "top_p %g out of range (0, 1]", p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return lmc_err_set(err, LMC_ERR_ARG, "min_p %g out of range [0, 1]", p->min_p);
    if (!(p->repeat_penalty > 0 && p->repeat_penalty <= 100))
        return lmc_err_set(err, LMC_ERR_ARG, "repeat penalty %g out of range (0, 100]", p->repeat_penalty);
    if (!(fabs(p->presence_penalty) <= 2))
        return lmc_err_set(err, LMC_ERR_ARG, "presence_penalty %g out of range [-2, 2]", p->presence_penalty);
    if (!(fabs(p->frequency_penalty) <= 2))
        return lmc_err_set(err, LMC_ERR_ARG, "frequency_penalty %g out of range [-2, 2]", p->frequency_penalty);
    if (p->repeat_last_n < 0)
        return lmc_err_set(err, LMC_ERR_ARG, "repeat_last_n must be >= 0");
    return LMC_OK;
}

lmc_status lmc_sampler_init(struct lmc_sampler *s, const struct lmc_sampler_params *p, int64_t vocab,
                            lmc_err *err) {
    memset(s, 0, sizeof *s);
    lmc_status st = lmc_sampler_check(p, err);
    if (st) return st;
    s->p = *p;
    s->rng = p->seed;
    s->vocab = vocab;
    s->idx = malloc((size_t)vocab * sizeof *s->idx);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    s->counts = calloc((size_t)vocab, sizeof *s->counts);
    if (!s->idx || !s->prob || !s->counts) {
        lmc_sampler_free(s);
        return lmc_err_set(err, LMC_ERR_OOM, "sampler: out of memory");
    }
    return LMC_OK;
}

void lmc_sampler_free(struct lmc_sampler *s) {
    free(s->idx);
    free(s->prob);
    free(s->counts);
    memset(s, 0, sizeof *s);
}

int32_t lmc_argmax(const float *x, int64_t n) { return (int32_t)lmc_argmax_f32(x, n); }

static void apply_penalties(struct lmc_sampler *s, float *logits, const int32_t *hist, int64_t n) {
    const struct lmc_sampler_params *p = &s->p;
    if (p->repeat_penalty == 1.0 && p->presence_penalty == 0 && p->frequency_penalty == 0) return;
    int64_t start = p->repeat_last_n > 0 && n > p->repeat_last_n ? n - p->repeat_last_n : 0;
    for (int64_t i = start; i < n; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab) s->counts[hist[i]]++;
    for (int64_t i = start; i < n; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= s->vocab || s->counts[t] == 0) continue;
        float l = logits[t];
        if (p->repeat_penalty != 1.0)
            l = l > 0 ? (float)(l / p->repeat_penalty) : (float)(l * p->repeat_penalty);
        l -= (float)(p->presence_penalty + p->frequency_penalty * s->counts[t]);
        logits[t] = l;
        s->counts[t] = 0; /* applied once per distinct token; also resets for next call */
    }
}

int32_t lmc_sampler_sample(struct lmc_sampler *s, float *logits, const int32_t *history,
                           int64_t n_history) {
    const struct lmc_sampler_params *p = &s->p;
    apply_penalties(s, logits, history, n_history);
    struct lmc_sample_row row = {.temperature = p->temperature, .top_p = p->top_p,
                                 .min_p = p->min_p, .top_k = p->top_k};
    if (p->temperature != 0) row.u = lmc_rng_uniform(&s->rng); /* greedy draws nothing */
    return lmc_sample_logits_row(logits, s->vocab, &row, s->idx, s->prob);
}

void lmc_sampler_probs(struct lmc_sampler *s, float *logits, const int32_t *history,
                       int64_t n_history, float *probs) {
    const struct lmc_sampler_params *p = &s->p;
    int64_t V = s->vocab;
    apply_penalties(s, logits, history, n_history);
    memset(probs, 0, (size_t)V * sizeof *probs);
    if (p->temperature == 0) {
        probs[lmc_argmax(logits, V)] = 1.0f;
        return;
    }
    struct lmc_sample_row row = {.temperature = p->temperature, .top_p = p->top_p,
                                 .min_p = p->min_p, .top_k = p->top_k};
    int64_t n = lmc_sample_filter_row(logits, V, &row, s->idx, s->prob);
    if (n == 0) { /* every logit -inf: the sampler returns id 0 */
        probs[0] = 1.0f;
        return;
    }
    double tot = 0;
    for (int64_t i = 0; i < n; i++) tot += s->prob[s->idx[i]];
    for (int64_t i = 0; i < n; i++) probs[s->idx[i]] = (float)(s->prob[s->idx[i]] / tot);
}
