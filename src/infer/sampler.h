/* sampler.h — turns a logits row into the next token id: repetition,
 * presence and frequency penalties, then temperature, top-k, top-p, min-p,
 * then a seeded draw (temperature 0 = greedy argmax). */
#ifndef LMC_SAMPLER_H
#define LMC_SAMPLER_H

#include "lmc.h"

#include <stdint.h>

struct lmc_sampler_params {
    double temperature;       /* 0 = greedy */
    int64_t top_k;            /* 0 = off */
    double top_p;             /* 1 = off */
    double min_p;             /* 0 = off */
    double repeat_penalty;    /* 1 = off (HF repetition_penalty) */
    int64_t repeat_last_n;    /* window of history for penalties; 0 = all */
    double presence_penalty;  /* OpenAI style, 0 = off */
    double frequency_penalty; /* OpenAI style, 0 = off */
    uint64_t seed;
};

void lmc_sampler_defaults(struct lmc_sampler_params *p);
/* Checks ranges; LMC_ERR_ARG naming the parameter. */
lmc_status lmc_sampler_check(const struct lmc_sampler_params *p, lmc_err *err);

struct lmc_sampler {
    struct lmc_sampler_params p;
    uint64_t rng;
    int64_t vocab;
    int32_t *idx;             /* (vocab) scratch */
    float *prob;              /* (vocab) scratch */
    int32_t *counts;          /* (vocab) history counts for penalties */
};

lmc_status lmc_sampler_init(struct lmc_sampler *s, const struct lmc_sampler_params *p, int64_t vocab,
                            lmc_err *err);
void lmc_sampler_free(struct lmc_sampler *s);
/* Picks the next id from logits (modified in place). history holds the ids
 * seen so far (prompt + generated) for the penalties. */
int32_t lmc_sampler_sample(struct lmc_sampler *s, float *logits, const int32_t *history,
                           int64_t n_history);
/* The distribution lmc_sampler_sample draws from, as dense normalised
 * probabilities probs (V): the same penalties (logits modified in place)
 * and filters; greedy (temperature 0) gives a one-hot row at the argmax.
 * Draws nothing from the rng. Speculative decoding's p and q. */
void lmc_sampler_probs(struct lmc_sampler *s, float *logits, const int32_t *history,
                       int64_t n_history, float *probs);
/* Index of the largest logit (first on ties): lmc_argmax_f32 (core/argmax.h). */
int32_t lmc_argmax(const float *x, int64_t n);

#endif
