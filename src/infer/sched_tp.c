/* sched_tp.c — rank 0's step messages and the followers' loop of
 * tensor-parallel serving (see sched_tp.h). A step is two broadcasts from
 * rank 0: a header of 8 int64 (kind, tokens, sequences, blocks per table,
 * logit rows, copies) and the int32 payload in that order (ids, sequence
 * indices, positions, block tables, logit rows, copy pairs dst/src). */
#include "infer/sched_tp.h"
#include "core/core.h"
#include "dist/comm.h"
#include "model/moe_ep.h"

#include <stdlib.h>
#include <string.h>

enum { MSG_STOP = 0, MSG_STEP = 1, MSG_HELLO = 2, MSG_KEEPALIVE = 3 };

lmc_status lmc_sched_tp_keepalive(struct lmc_comm *c, lmc_err *err) {
    int64_t h[8] = {MSG_KEEPALIVE, 0, 0, 0, 0, 0, 0, 0};
    return c->broadcast(c, h, sizeof h, 0, err);
}

lmc_status lmc_sched_tp_hello(struct lmc_comm *c, const struct lmc_sched_tp_shape *sh, lmc_err *err) {
    int64_t h[8] = {MSG_HELLO, sh->kv_blocks, sh->block_size, sh->max_step_tokens, sh->max_batch, sh->max_blocks, 0, 0};
    return c->broadcast(c, h, sizeof h, 0, err);
}

lmc_status lmc_sched_tp_stop(struct lmc_comm *c, lmc_err *err) {
    int64_t h[8] = {MSG_STOP, 0, 0, 0, 0, 0, 0, 0};
    return c->broadcast(c, h, sizeof h, 0, err);
}

static int64_t payload_ints(const int64_t *h) { return 3 * h[1] + h[2] * h[3] + h[4] + 2 * h[5]; }

lmc_status lmc_sched_tp_step(struct lmc_comm *c, const struct lmc_batch *b, const int32_t *copies,
                             int64_t n_copies, lmc_err *err) {
    int64_t h[8] = {MSG_STEP, b->n_tokens, b->n_seqs, b->max_blocks, b->n_logits, n_copies, 0, 0};
    int64_t n = payload_ints(h);
    int32_t *p = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "tensor-parallel step: out of memory");
    int32_t *q = p;
    memcpy(q, b->ids, sizeof(int32_t) * (size_t)b->n_tokens), q += b->n_tokens;
    memcpy(q, b->seq, sizeof(int32_t) * (size_t)b->n_tokens), q += b->n_tokens;
    memcpy(q, b->pos, sizeof(int32_t) * (size_t)b->n_tokens), q += b->n_tokens;
    memcpy(q, b->block_tables, sizeof(int32_t) * (size_t)(b->n_seqs * b->max_blocks)), q += b->n_seqs * b->max_blocks;
    memcpy(q, b->logit_tokens, sizeof(int32_t) * (size_t)b->n_logits), q += b->n_logits;
    if (n_copies) memcpy(q, copies, sizeof(int32_t) * (size_t)(2 * n_copies));
    lmc_status s = c->broadcast(c, h, sizeof h, 0, err);
    if (!s) s = c->broadcast(c, p, sizeof(int32_t) * (size_t)n, 0, err);
    free(p);
    return s;
}

/* The model's expert-parallel group (lmc serve --ep: every layer points at it), or NULL. */
static struct lmc_ep_group *ep_group_of(const struct lmc_model *m) {
    for (int64_t l = 0; m->w.layers && l < m->cfg.num_layers; l++)
        if (m->w.layers[l].ep) return m->w.layers[l].ep;
    return NULL;
}

lmc_status lmc_sched_follow(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_comm *c,
                            struct lmc_tp_group *g, struct lmc_sched_follow_stats *st, lmc_err *err) {
    struct lmc_ep_group *eg = ep_group_of(m);
    memset(st, 0, sizeof *st);
    /* the steps' rows come from different requests: the CPU's row-count
     * bf16 route off, as on rank 0 (lmc_sched_init; no route by kind here) */
    lmc_backend_cpu_set_bf16_prefill(be, false);
    int64_t h[8];
    lmc_status s = c->broadcast(c, h, sizeof h, 0, err);
    if (s) return s;
    if (h[0] != MSG_HELLO)
        return lmc_err_set(err, LMC_ERR_FORMAT, "tensor-parallel serving: rank 0 sent message %lld before its "
                           "pool shape", (long long)h[0]);
    struct lmc_sched_tp_shape sh = {h[1], h[2], h[3], h[4], h[5]};
    if (sh.kv_blocks < 1 || sh.block_size < 1 || sh.max_step_tokens < 1 || sh.max_batch < 1 || sh.max_blocks < 1 ||
        sh.kv_blocks > ((int64_t)1 << 31) || sh.max_blocks > ((int64_t)1 << 24) || sh.max_batch > 4096 ||
        sh.max_step_tokens > (1 << 20))
        return lmc_err_set(err, LMC_ERR_FORMAT, "tensor-parallel serving: pool shape out of range");
    struct lmc_kv_pool pool;
    struct lmc_batch_acts acts;
    if ((s = lmc_kv_pool_init(&pool, m, be, sh.kv_blocks, sh.block_size, err))) return s;
    if ((s = lmc_batch_acts_init(&acts, m, be, sh.max_step_tokens, sh.max_batch, sh.max_blocks, sh.max_batch, err))) {
        lmc_kv_pool_free(&pool);
        return s;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)sh.max_batch), *p = NULL;
    if (!ids) s = lmc_err_set(err, LMC_ERR_OOM, "tensor-parallel serving: out of memory");
    while (!s) {
        if ((s = c->broadcast(c, h, sizeof h, 0, err))) break;
        if (h[0] == MSG_STOP) break;
        if (h[0] == MSG_KEEPALIVE) continue;
        if (h[0] != MSG_STEP || h[1] < 1 || h[1] > sh.max_step_tokens || h[2] < 1 || h[2] > sh.max_batch ||
            h[3] != sh.max_blocks || h[4] < 0 || h[4] > sh.max_batch || h[5] < 0 || h[5] > sh.kv_blocks) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "tensor-parallel serving: bad step message from rank 0");
            break;
        }
        int64_t n = payload_ints(h);
        free(p);
        if (!(p = malloc(sizeof(int32_t) * (size_t)n))) {
            s = lmc_err_set(err, LMC_ERR_OOM, "tensor-parallel serving: out of memory");
            break;
        }
        if ((s = c->broadcast(c, p, sizeof(int32_t) * (size_t)n, 0, err))) break;
        const int32_t *q = p;
        struct lmc_batch b = {.n_tokens = h[1], .n_seqs = h[2], .max_blocks = h[3], .n_logits = h[4]};
        b.ids = q, q += h[1];
        b.seq = q, q += h[1];
        b.pos = q, q += h[1];
        b.block_tables = q, q += h[2] * h[3];
        b.logit_tokens = q, q += h[4];
        for (int64_t k = 0; k < h[5]; k++) { /* copy-on-write, as rank 0's pool did since the last step */
            if (q[2 * k] < 0 || q[2 * k] >= sh.kv_blocks || q[2 * k + 1] < 0 || q[2 * k + 1] >= sh.kv_blocks) {
                s = lmc_err_set(err, LMC_ERR_FORMAT, "tensor-parallel serving: copied block out of the pool");
                break;
            }
            lmc_kv_pool_copy_block(&pool, q[2 * k], q[2 * k + 1]);
        }
        if (s) break;
        s = lmc_model_forward_batch_argmax(m, be, &acts, &pool, &b, ids, err);
        st->steps++;
        st->tokens += h[1];
        st->copies += h[5];
        if (!s && g && g->st) {
            s = g->st;
            *err = g->err;
        }
        if (!s && eg) s = lmc_ep_group_check(eg, err); /* an expert exchange inside the step failed */
    }
    free(p);
    free(ids);
    lmc_batch_acts_free(&acts);
    lmc_kv_pool_free(&pool);
    return s;
}
