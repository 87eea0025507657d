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
    int chunk;   /* interleaved: the rank's chunk v (model chunk v P + rank); 0 in 1F1B */
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

/* ---- Interleaved 1F1B (Megatron-LM's virtual pipeline stages): the
 * model cut into P x V chunks, rank r holding chunks r, r + P, ..., r +
 * (V-1) P (its local chunks v = 0..V-1). The rank's 2 M V operations:
 * virtual micro-batch k runs on local chunk (k mod P V) / P (backwards:
 * V - 1 minus that) for micro-batch (k / (P V)) P + k mod P; the first
 * min(2 (P - r - 1) + (V - 1) P, M V) are warm-up forwards, then one
 * forward one backward, then the remaining backwards. At most warm-up + 1
 * chunk-micro-batches are alive at once (lmc_pp_interleaved_live), and the
 * idle fraction is (P-1)/(M V + P - 1) with backward = 2 x forward: the
 * bubble (P-1)/M of 1F1B over V. M must be a multiple of P (as
 * Megatron-LM requires). */

/* LMC_OK, or LMC_ERR_ARG saying why (P, M, V) has no interleaved schedule. */
lmc_status lmc_pp_interleaved_check(int P, int M, int V, lmc_err *err);
/* The 2 M V operations of rank `rank` in interleaved order into ops. */
void lmc_pp_schedule_interleaved(int P, int rank, int M, int V, struct lmc_pp_op *ops);
/* The most chunk-micro-batches rank `rank` keeps alive: min(warm-up + 1, M V). */
int lmc_pp_interleaved_live(int P, int rank, int M, int V);
/* Idle fraction of the interleaved schedule with each chunk's forward tf
 * and backward tb (integers: simulated time units), simulated with the
 * dependencies between chunks; V = 1 simulates 1F1B. -1 when the orders
 * cannot finish (a check failure). */
double lmc_pp_bubble_model_v(int P, int M, int V, int64_t tf, int64_t tb);

/* A rank's V chunks. fwd(v, mb): in (act_bytes; NULL for model chunk 0)
 * -> out (act_bytes; NULL for the last model chunk, which computes the
 * loss); bwd(v, mb): dout (NULL for the last model chunk) -> din (NULL for
 * model chunk 0). Every chunk boundary carries act_bytes. */
struct lmc_pp_vstage {
    void *user;
    int V;
    size_t act_bytes;
    lmc_status (*fwd)(void *user, int v, int mb, const void *in, void *out, lmc_err *err);
    lmc_status (*bwd)(void *user, int v, int mb, const void *dout, void *din, lmc_err *err);
};

/* One step of M micro-batches through the interleaved schedule over c
 * (rank = c->rank, P = c->world; V = 1 runs the plain 1F1B order). The
 * transfers use blocking send/recv: every rank replays one global order
 * of the messages (the schedule simulated with backward = 2 x forward),
 * interleaving them with its computations, so every send meets its
 * receive (no wait cycle whatever the message sizes); a message arrives
 * into its own buffer, kept until its chunk consumes it. Every rank calls
 * it with the same M and V. */
lmc_status lmc_pp_run_interleaved(struct lmc_comm *c, const struct lmc_pp_vstage *s, int M,
                                  struct lmc_pp_stats *stats, lmc_err *err);

#endif
