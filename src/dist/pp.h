/* pp.h — pipeline parallelism: the 1F1B schedule (PipeDream-flush /
 * Megatron-LM non-interleaved) of M micro-batches over the P ranks of a
 * communicator, one stage per rank, and a runner that drives a stage's
 * forward and backward callbacks through it, sending activations to the
 * next stage and gradients to the previous one. Stage s runs min(P-s-1, M)
 * warm-up forwards, then alternates one forward and one backward, then
 * drains the remaining backwards, so at most min(P-s, M) micro-batches'
 * activations are alive on it; the idle fraction of a step with backward =
 * 2 x forward is (P-1)/(M+P-1) of the stage time. Neighbouring stages pair
 * their transfers (the lower stage sends first) so blocking send/recv never
 * wait in a cycle, whatever the message sizes. */
#ifndef LMC_PP_H
#define LMC_PP_H

#include "dist/comm.h"

enum lmc_pp_kind { LMC_PP_FWD, LMC_PP_BWD };
struct lmc_pp_op {
    enum lmc_pp_kind kind;
    int mb;
};

/* The 2M operations of stage `stage` of P in 1F1B order into ops. */
void lmc_pp_schedule_1f1b(int P, int stage, int M, struct lmc_pp_op *ops);

/* Idle fraction of the slowest stage when every stage's forward of a
 * micro-batch takes tf and backward tb time units, simulated from the
 * schedule with its dependencies (for (P-1)/(M+P-1) with tb = 2 tf). */
double lmc_pp_bubble_model(int P, int M, double tf, double tb);

/* A stage of the model. fwd: in (in_bytes; NULL on the first stage) ->
 * out (out_bytes; NULL on the last). bwd: dout (out_bytes; NULL on the last
 * stage, which starts from its loss) -> din (in_bytes; NULL on the first).
 * The stage keeps what micro-batch mb's backward needs. */
struct lmc_pp_stage {
    void *user;
    size_t in_bytes, out_bytes;
    lmc_status (*fwd)(void *user, int mb, const void *in, void *out, lmc_err *err);
    lmc_status (*bwd)(void *user, int mb, const void *dout, void *din, lmc_err *err);
};

struct lmc_pp_stats {
    int max_live;          /* most micro-batches forwarded and not yet backwarded */
    double busy_s, wall_s; /* time in the callbacks; the whole step (monotonic clock) */
};

/* One step of M micro-batches; stage = c->rank, P = c->world (host
 * communicator). Every rank calls it with the same M. stats may be NULL. */
lmc_status lmc_pp_run(struct lmc_comm *c, const struct lmc_pp_stage *s, int M,
                      struct lmc_pp_stats *stats, lmc_err *err);

#endif
