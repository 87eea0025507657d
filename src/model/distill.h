/* distill.h — knowledge distillation's head (DistillSpec-style: a draft
 * model trained toward a target's distribution). A teacher (any model
 * lmc_model_load reads, the student's vocabulary) runs its inference
 * forward (no gradient) on each micro-batch's sequences, a chunk of at
 * most `chunk` tokens at a time through its KV cache; per chunk the
 * student's logits of those rows, the backend's soft_xent (loss, KL,
 * agreement, gradient in place) and the head's backward (dh rows, dW +=).
 * Only one chunk of teacher and student logits exists at a time (2 x
 * chunk x V floats). The student's loss per counted target is
 * (1 - alpha) CE + alpha T^2 KL(softmax(teacher/T) || softmax(student/T)),
 * summed as lmc_tmodel_step sums the CE. alpha = 0: the loss and gradient
 * are the plain step's (classifier_xent, the same bits), the teacher only
 * measured. */
#ifndef LMC_MODEL_DISTILL_H
#define LMC_MODEL_DISTILL_H

#include "model/backward.h"
#include "model/model.h"

struct lmc_distill {
    const struct lmc_model *teacher; /* the caller's, on the student's backend */
    const struct lmc_backend *be;
    float alpha, temp;
    int64_t chunk, V, max_len;       /* tokens per teacher forward; vocabulary; longest sequence */
    struct lmc_acts acts;            /* the teacher's (chunk tokens, chunk logit rows) */
    struct lmc_kv kv;                /* one sequence of max_len */
    float *slog;                     /* (chunk, V) student logits, then their gradient (backend) */
    float *ce, *kl, *agree;          /* (B T) per row (backend) */
    float *host;                     /* (3 B T) their host copies */
    int64_t rows;                    /* B T */
    /* sums over the counted targets since lmc_distill_reset */
    double ce_sum, kl_sum, agree_sum;
    int64_t count;
};

/* Floats of teacher logits per chunk at most (16 MiB). */
#define LMC_DISTILL_CHUNK_FLOATS ((int64_t)1 << 22)

/* Set-up for micro-batches of B sequences of T tokens (or packed segments
 * of at most T). Errors: the vocabularies differ (LMC_ERR_ARG, both
 * named), alpha outside [0, 1] or temp <= 0 (LMC_ERR_ARG), a backend
 * without soft_xent (LMC_ERR_UNSUPPORTED), T beyond the teacher's learned
 * positions (LMC_ERR_ARG), out of memory. */
lmc_status lmc_distill_init(struct lmc_distill *d, const struct lmc_model *teacher, const struct lmc_config *student,
                            const struct lmc_backend *be, int64_t B, int64_t T, float alpha, float temp,
                            lmc_err *err);
void lmc_distill_free(struct lmc_distill *d);
void lmc_distill_reset(struct lmc_distill *d);

/* The head of lmc_tmodel_step with a->distill set (model/backward.c):
 * a->hf holds the final norm's output; inputs and targets are the step's
 * host ids. Writes a->dh (=) and adds the head's gradient (with backward),
 * returns the loss sum and count as the plain head does. */
lmc_status lmc_distill_head(struct lmc_distill *d, struct lmc_tmodel *tm, struct lmc_tacts *a,
                            const int32_t *inputs, const int32_t *targets, bool backward, float dscale,
                            double *loss_sum, int64_t *count, lmc_err *err);

#endif
