/* pp_infer.h — pipeline-parallel inference (lmc generate/serve --pp P): rank
 * s of a P-rank communicator is stage s, holding the layers [l0, l1) of a
 * split balanced by parameter count (lmc_pp_infer_plan, pp_split.h) or
 * given (--pp-layers), the embedding on
 * the first stage, the final norm and the head on the last (a tied head:
 * the embedding there too), loaded alone (lmc_model_opts.layer_begin/end),
 * so a stage's resident weights are about 1/P of the model.
 *
 * The stage runs through the ordinary forwards (model/forward.c,
 * forward_batch.c) on a view of the loaded model whose config has the
 * stage's l1 - l0 layers (so its KV cache and pool hold only those) and
 * whose weights carry w.pipe: a stage after the first receives the
 * residual stream (rows, hidden) float32 from stage s-1 instead of
 * embedding, a stage before the last sends it on to stage s+1, and the last
 * computes the logits. In lmc_model_forward (one sequence; every rank runs
 * the same generation loop) the last stage broadcasts the logits rows to
 * every rank; in lmc_model_forward_batch (serving: rank 0's scheduler
 * sends each step to the others, infer/sched_tp.h) a step is cut at
 * sequence boundaries into up to `micro` micro-batches that flow through
 * the stages one after another (stage s runs micro-batch j while stage s+1
 * runs j-1), and the last stage sends the step's logits rows to rank 0
 * alone (or, when rank 0 asks for them at the step's start, the rows'
 * argmax or sampled ids, chosen on the last stage). With tp > 1 each stage is a tensor-parallel group of tp
 * consecutive ranks (rank = stage * tp + t): rank t of stage s exchanges
 * the stream with rank t of stages s-1 and s+1 (every rank of a group
 * holds it whole after the row-parallel all-reduce), the logits come from
 * the last stage's first rank. Sends and receives pair between neighbours in one order on every
 * rank (the lower stage sends first; the logits go back after the last
 * stage has received every micro-batch), so no wait cycle forms whatever
 * the message sizes. Host-memory backends (CPU) only. A failed transfer
 * leaves its status in *g (sticky; its own group, or the stage's
 * tensor-parallel group when set there) for the driver to check after the
 * step. */
#ifndef LMC_PP_INFER_H
#define LMC_PP_INFER_H

#include "lmc.h"
#include "model/linear.h"
#include "model/model.h"
#include "dist/pp_split.h"

struct lmc_comm;

struct lmc_pp_infer {
    struct lmc_comm *c;           /* borrowed: rank s*tp + t is rank t of stage s */
    int stage, n_stages, tp;
    int64_t l0, l1;               /* this stage's layers */
    int micro;                    /* micro-batches a serving step is cut into (>= 1) */
    struct lmc_tp_group own;      /* the transfers' sticky status (own.c = c) ... */
    struct lmc_tp_group *g;       /* ... here (&own, or a stage's tensor-parallel group) */
    struct lmc_model view;        /* the stage: cfg.num_layers = l1 - l0, w.layers from l0,
                                   * w.pipe = this struct (which must not move) */
    int64_t *cut;                 /* (micro + 1) host scratch: a step's token cuts */
    int64_t steps, micro_batches; /* batched steps run, and the micro-batches they were cut into */
    struct lmc_sample_row *prm;   /* the last stage's copy of a step's sampling parameters */
    int32_t *ids;                 /* a step's ids (the last stage's and rank 0's) */
    int64_t cap;                  /* rows prm and ids hold */
};

/* What rank 0 asks the last stage to return for a batched step's logits
 * rows (lmc_pp_infer_want): the rows, or each row's argmax, or each row
 * sampled with rank 0's parameters (then only the ids travel). */
enum { LMC_PP_WANT_LOGITS = 0, LMC_PP_WANT_ARGMAX = 1, LMC_PP_WANT_SAMPLE = 2 };

/* The split of c's layers over P stages balanced by parameters
 * (lmc_pp_split_plan with V = 1): bounds[s]..bounds[s+1] are stage s's
 * layers, every stage at least one. LMC_ERR_ARG when P is out of 1..L. */
lmc_status lmc_pp_infer_plan(const struct lmc_config *c, int P, int64_t *bounds, lmc_err *err);

/* Parameters (elements) stage s of P holds for inference: its layers, the
 * embedding (first), the final norm and head (last; a tied head the
 * embedding there too): lmc_pp_costs_chunk; -1 when c does not walk. */
int64_t lmc_pp_infer_stage_params(const struct lmc_config *c, const int64_t *bounds, int P, int s);

/* Loads stage c->rank / tp of c->world / tp (tp >= 1 dividing the world)
 * from dir into *m (freed by the caller with lmc_model_free after
 * lmc_pp_infer_free) and makes p->view, the model to run (with tp > 1, to
 * be cut by lmc_tp_model_shard over the stage's ranks, whose group may
 * then take the status: p->g). micro: micro-batches per serving step (0:
 * max(2, P)). layers: --pp-layers (P counts; NULL or empty: the planner's
 * split). Refuses models the split cannot serve (mixtures of experts, recurrent
 * layers) and device backends (LMC_ERR_UNSUPPORTED). */
lmc_status lmc_pp_infer_load(struct lmc_pp_infer *p, struct lmc_model *m, const char *dir,
                             const struct lmc_model_opts *o, struct lmc_comm *c, int tp, int micro,
                             const char *layers, lmc_err *err);
void lmc_pp_infer_free(struct lmc_pp_infer *p);
/* The first failed transfer since the last check (then cleared). */
lmc_status lmc_pp_infer_check(struct lmc_pp_infer *p, lmc_err *err);

/* ---- used by the model's forwards (model/forward*.c) */
static inline bool lmc_pp_infer_first(const struct lmc_pp_infer *p) { return p->stage == 0; }
static inline bool lmc_pp_infer_last(const struct lmc_pp_infer *p) { return p->stage == p->n_stages - 1; }
/* x (rows, C) float32 (host memory) from stage s-1 / to stage s+1 (the
 * same tensor-parallel rank there). */
void lmc_pp_infer_recv_x(struct lmc_pp_infer *p, float *x, int64_t rows, int64_t C);
void lmc_pp_infer_send_x(struct lmc_pp_infer *p, const float *x, int64_t rows, int64_t C);
/* Every rank: n floats of buf from the last stage (lmc_model_forward). */
void lmc_pp_infer_bcast(struct lmc_pp_infer *p, float *buf, int64_t n);
/* The last stage's first rank sends n floats of buf to rank 0, which
 * receives them (no-op on the other ranks and when rank 0 is the last
 * stage). */
bool lmc_pp_infer_has_logits(const struct lmc_pp_infer *p);
/* At a batched step's start (n logits rows): rank 0 sends *mode (and with
 * LMC_PP_WANT_SAMPLE the rows' n parameters) to the last stage's first
 * rank, which receives them into *mode and *params (p->prm); no-op on the
 * other ranks and when rank 0 is the last stage. */
void lmc_pp_infer_want(struct lmc_pp_infer *p, int32_t *mode, const struct lmc_sample_row **params, int64_t n);
/* p->ids grown to n rows (NULL and the status set when out of memory). */
int32_t *lmc_pp_infer_ids(struct lmc_pp_infer *p, int64_t n);
/* The last stage's first rank sends n ids to rank 0, which receives them. */
void lmc_pp_infer_ids_to_rank0(struct lmc_pp_infer *p, int32_t *ids, int64_t n);
void lmc_pp_infer_to_rank0(struct lmc_pp_infer *p, float *buf, int64_t n);
/* Cuts a step of n_tokens tokens (seq: each token's sequence index,
 * non-decreasing; else one micro-batch) at sequence boundaries into up to
 * p->micro parts of about equal tokens: p->cut[0] = 0 < ... < p->cut[k] =
 * n_tokens; returns k. */
int lmc_pp_infer_cuts(struct lmc_pp_infer *p, const int32_t *seq, int64_t n_tokens);

#endif
