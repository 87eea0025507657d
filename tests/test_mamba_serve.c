/* test_mamba_serve.c — Mamba / Mamba-2 in batched serving steps, below the
 * scheduler (lmc_model_forward_batch over a paged pool of state slots):
 *   1. mixed steps: one-token rows of several sequences (batched decode,
 *      one of them a one-token prompt at position 0) beside prefill chunks
 *      of others, slots not in sequence order: every sequence's last-token
 *      logits equal a single-sequence run's (lmc_model_forward) to 1e-4;
 *   2. state snapshots (prefix cache, 8-token blocks) where steps end on a
 *      boundary: a sequence whose prompt shares 16 tokens with an earlier
 *      one resumes from the snapshot (match_prefix returns 16, one restore, hits counted) and its
 *      logits are bitwise those of the same chunks computed without reuse;
 *   3. a forked sequence (a copy of the state in a slot of its own) and
 *      its source continue with different tokens as two single runs;
 *   4. a step giving one sequence two runs is refused (LMC_ERR_ARG). */
#include "model_fixture.h"
#include "test.h"
#include "core/core.h"
#include "infer/paged_kv.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "ops/backend.h"

#include <stdlib.h>
#include <string.h>

#define NSEQ 5
#define MAXT 64

struct ctx {
    struct lmc_model m;
    struct lmc_backend be;
    struct lmc_batch_acts ba;
    int64_t V;
};

/* logits of the last token of ids[0..n) from a fresh single-sequence run */
static void single(struct ctx *c, const int32_t *ids, int64_t n, float *out) {
    struct lmc_acts a;
    struct lmc_kv kv;
    lmc_err err = {0};
    CHECK(lmc_acts_init(&a, &c->m, &c->be, MAXT, 1, &err) == LMC_OK);
    CHECK(lmc_kv_init(&kv, &c->m, &c->be, MAXT, &err) == LMC_OK);
    CHECK_MSG(lmc_model_forward(&c->m, &c->be, &a, &kv, ids, n, 0, out, false, &err) == LMC_OK, "%s", err.msg);
    lmc_kv_free(&kv);
    lmc_acts_free(&a);
}

static double maxdiff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* One step: for each k < ns, sequence seqs[k] (slot slot[k]) runs tokens
 * ids[k][from[k] .. to[k]); logits of each run's last token into lg. */
static lmc_status step(struct ctx *c, struct lmc_paged_kv *kv, int ns, const int *seqs,
                       int32_t ids[][MAXT], const int *from, const int *to, const int32_t *slot,
                       float *lg, lmc_err *err) {
    int32_t t_ids[MAXT * NSEQ], t_seq[MAXT * NSEQ], t_pos[MAXT * NSEQ], rows[NSEQ], bt[NSEQ];
    int64_t T = 0;
    for (int k = 0; k < ns; k++) {
        bt[k] = slot[k];
        for (int p = from[k]; p < to[k]; p++, T++) {
            t_ids[T] = ids[seqs[k]][p];
            t_seq[T] = k;
            t_pos[T] = p;
        }
        rows[k] = (int32_t)(T - 1);
    }
    struct lmc_batch b = {T, t_ids, t_seq, t_pos, ns, bt, 1, rows, ns, NULL};
    return lmc_model_forward_batch(&c->m, &c->be, &c->ba, &kv->pool, &b, lg, err);
}

static void run(const char *dir) {
    struct ctx *c = calloc(1, sizeof *c);
    lmc_err err = {0};
    if (!fixture_open_cpu(&c->m, &c->be, NULL, dir, NULL, 1)) {
        free(c);
        return;
    }
    if (lmc_batch_acts_init(&c->ba, &c->m, &c->be, MAXT * NSEQ, NSEQ, 1, NSEQ, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        fixture_close_cpu(&c->m, &c->be, NULL);
        free(c);
        return;
    }
    c->V = c->m.cfg.vocab_size;
    struct lmc_paged_kv kv;
    CHECK(lmc_paged_kv_init(&kv, &c->m, &c->be, 12, 8, true, &err) == LMC_OK);
    static int32_t ids[NSEQ][MAXT];
    uint64_t rs = 7;
    for (int s = 0; s < NSEQ; s++)
        for (int p = 0; p < MAXT; p++) ids[s][p] = (int32_t)(test_rng_next(&rs) % (uint64_t)c->V);
    float *lg = malloc((size_t)(NSEQ * c->V) * sizeof *lg), *ref = malloc((size_t)c->V * sizeof *ref);
    /* slots out of sequence order: take two spare ones first */
    struct lmc_kv_seq spare[2], seq[NSEQ];
    for (int i = 0; i < 2; i++) {
        lmc_kv_seq_init(&spare[i]);
        CHECK(lmc_kv_seq_reserve(&kv, &spare[i], 0, 1));
    }
    int32_t slot[NSEQ];
    for (int s = 3; s >= 0; s--) {
        lmc_kv_seq_init(&seq[s]);
        CHECK(lmc_kv_seq_reserve(&kv, &seq[s], 0, 1));
        slot[s] = seq[s].blocks[0];
    }
    lmc_kv_seq_init(&seq[4]);
    /* 1. three mixed steps; seq 1 has a one-token prompt */
    int done[NSEQ] = {0};
    const int plan[3][4] = {{13, 1, 8, 0}, {1, 1, 8, 9}, {1, 1, 1, 1}};
    double worst = 0;
    for (int st = 0; st < 3; st++) {
        int seqs[4], from[4], to[4], ns = 0;
        int32_t sl[4];
        for (int s = 0; s < 4; s++) {
            if (!plan[st][s]) continue;
            seqs[ns] = s, from[ns] = done[s], to[ns] = done[s] + plan[st][s], sl[ns] = slot[s];
            ns++;
        }
        lmc_status r = step(c, &kv, ns, seqs, ids, from, to, sl, lg, &err);
        CHECK_MSG(r == LMC_OK, "%s step %d: %s", dir, st, err.msg);
        for (int k = 0; k < ns; k++) {
            single(c, ids[seqs[k]], to[k], ref);
            worst = fmax(worst, maxdiff(lg + k * c->V, ref, c->V));
            done[seqs[k]] = to[k];
            lmc_kv_seq_commit(&kv, &seq[seqs[k]], ids[seqs[k]], to[k]);
        }
    }
    CHECK_MSG(worst <= 1e-4, "%s: batched steps vs single runs: max |diff| %.3g", dir, worst);
    /* snapshots where a step ended on a boundary: seq 2 at 8 and 16 (then
     * 17); seq 0 (13, 14, 15), seq 1 (1..3) and seq 3 (9, 10) none */
    CHECK_MSG(kv.state_snapshots == 2, "%s: %lld snapshots", dir, (long long)kv.state_snapshots);

    /* 2. seq 4 shares seq 2's first 16 tokens, then its own 5 */
    memcpy(ids[4], ids[2], 16 * sizeof(int32_t));
    int s4 = 4;
    int64_t m = lmc_kv_seq_match_prefix(&kv, &seq[4], ids[4], 21, 20);
    CHECK_MSG(m == 16 && seq[4].n_blocks == 1 && kv.state_restores == 1 && kv.hits_tokens == 16,
              "%s: matched %lld, %lld restores", dir, (long long)m, (long long)kv.state_restores);
    float *with = malloc((size_t)c->V * sizeof *with);
    int f = 16, t = 21;
    CHECK(lmc_kv_seq_reserve(&kv, &seq[4], 16, 21));
    CHECK(step(c, &kv, 1, &s4, ids, &f, &t, seq[4].blocks, with, &err) == LMC_OK);
    /* without reuse: a fresh slot, the same chunks 0..8, 8..16, 16..21 */
    struct lmc_kv_seq fresh;
    lmc_kv_seq_init(&fresh);
    CHECK(lmc_kv_seq_reserve(&kv, &fresh, 0, 1));
    const int cuts[4] = {0, 8, 16, 21};
    for (int i = 0; i < 3; i++) CHECK(step(c, &kv, 1, &s4, ids, &cuts[i], &cuts[i + 1], fresh.blocks, lg, &err) == LMC_OK);
    CHECK_MSG(!memcmp(with, lg, (size_t)c->V * sizeof *lg), "%s: logits after a restored snapshot differ "
              "from the same chunks without reuse (max %.3g)", dir, maxdiff(with, lg, c->V));
    single(c, ids[4], 21, ref);
    CHECK_MSG(maxdiff(with, ref, c->V) <= 1e-4, "%s: restored vs single run %.3g", dir, maxdiff(with, ref, c->V));

    /* 3. fork: seq 0 (15 tokens) forked; each continues with its own token */
    {
        struct lmc_kv_seq fk;
        lmc_kv_seq_init(&fk);
        CHECK(lmc_kv_seq_fork(&kv, &fk, &seq[0]));
        CHECK(fk.n_blocks == 1 && fk.blocks[0] != seq[0].blocks[0]);
        int32_t two[2][MAXT];
        memcpy(two[0], ids[0], 15 * sizeof(int32_t));
        memcpy(two[1], ids[0], 15 * sizeof(int32_t));
        two[0][15] = 3, two[1][15] = 4;
        int sq[2] = {0, 1}, fr[2] = {15, 15}, to2[2] = {16, 16};
        int32_t sl2[2] = {seq[0].blocks[0], fk.blocks[0]};
        CHECK(step(c, &kv, 2, sq, two, fr, to2, sl2, lg, &err) == LMC_OK);
        double w = 0;
        for (int k = 0; k < 2; k++) {
            single(c, two[k], 16, ref);
            w = fmax(w, maxdiff(lg + k * c->V, ref, c->V));
        }
        CHECK_MSG(w <= 1e-4, "%s: forked continuations vs single runs %.3g", dir, w);
        lmc_kv_seq_free(&kv, &fk);
    }

    /* 4. one sequence in two runs of one step */
    {
        int32_t t_ids[3] = {1, 2, 3}, t_seq[3] = {0, 1, 0}, t_pos[3] = {0, 0, 1}, bt[2] = {slot[0], slot[1]}, rows[1] = {2};
        struct lmc_batch b = {3, t_ids, t_seq, t_pos, 2, bt, 1, rows, 1, NULL};
        CHECK(lmc_model_forward_batch(&c->m, &c->be, &c->ba, &kv.pool, &b, lg, &err) == LMC_ERR_ARG);
    }
    lmc_kv_seq_free(&kv, &fresh);
    for (int s = 0; s < NSEQ; s++) lmc_kv_seq_free(&kv, &seq[s]);
    for (int i = 0; i < 2; i++) lmc_kv_seq_free(&kv, &spare[i]);
    CHECK(lmc_paged_kv_used(&kv) == 0);
    free(with);
    free(lg);
    free(ref);
    lmc_paged_kv_free(&kv);
    lmc_batch_acts_free(&c->ba);
    fixture_close_cpu(&c->m, &c->be, NULL);
    free(c);
}

int main(void) {
    run("tests/fixtures/mamba-tiny");
    run("tests/fixtures/mamba2-tiny");
    return test_finish("test_mamba_serve");
}
