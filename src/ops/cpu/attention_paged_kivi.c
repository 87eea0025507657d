/* attention_paged_kivi.c — paged attention (backend.h,
 * attention_paged_ring) over a KIVI-2 pool: values 2-bit per token (groups
 * of 32 channels, f16 scale and minimum), keys 2-bit per channel over
 * groups of 32 positions (f16 scale and minimum per channel and group;
 * layout in kvquant_layout.h), and each running sequence's most recent
 * rows in f16 in its ring slot (tags say which position a ring row holds).
 *
 * One call, in four phases (the CUDA twin, attention_paged_kvq.cu, runs
 * the same ones in the same order, so both write the same bytes):
 *  1. every key group one of the step's rows falls in is quantized again,
 *     per channel over the positions it holds so far: the step's own rows
 *     (f16-rounded), earlier positions from the ring rows that still hold
 *     them, the others decoded from the group's previous codes (a forked or
 *     prefix-matched sequence's ring starts empty);
 *  2. each new value row is quantized into its pool slot (2-bit per token);
 *  3. attention, one task per (token, head): key (and value) t of query
 *     position p is f16 when t > p - residual — the step's own row
 *     (f16-rounded) or the ring's, as it was before the step — and decoded
 *     from the pool otherwise (or when the ring no longer holds it);
 *     softmax as attention_paged.c (max-subtracted, sum in double);
 *  4. the new rows go to their ring rows and tags (batch order: the last
 *     writer of a ring row wins).
 * So the pool always holds a quantized copy of every stored position and
 * rollback (rejected drafts) and copy-on-write need nothing beyond the
 * plain pool; and with residual >= 31 a query reads only complete key
 * groups from the pool and f16 rows otherwise, whatever the chunking of
 * the steps: the output of a sequence does not depend on the batches it
 * ran in (speculation gives the tokens it gives without). A step's tokens
 * of one sequence must be one run of consecutive positions (forward_batch
 * checks it). */
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/kvquant.h"
#include "ops/cpu/kvquant_layout.h"
#include "ops/cpu/ops_cpu.h"

#include <string.h>

#define G LMC_KVQ_GROUP

size_t lmc_kvq_paged_row_bytes_kivi2(int64_t row) {
    LMC_ASSERT(row > 0);
    return lmc_kvq_kivi_slot_bytes(row);
}

/* the ring of one sequence (one layer) */
struct ring {
    uint16_t *k, *v;
    int32_t *tag;
};
static struct ring ring_at(void *ring, int64_t slot, int64_t row, int64_t rows) {
    size_t part = lmc_kv_ring_part_bytes(row, rows);
    char *b = (char *)ring + (size_t)slot * lmc_kv_ring_slot_bytes(row, rows);
    return (struct ring){(uint16_t *)b, (uint16_t *)(b + part), (int32_t *)(b + 2 * part)};
}

static size_t slot_of(const int32_t *bt, int64_t max_blocks, int64_t bs, int64_t s, int64_t p) {
    return (size_t)bt[s * max_blocks + p / bs] * (size_t)bs + (size_t)(p % bs);
}

/* Quantizes the key group holding position p (token i of the batch, the
 * last of its sequence's run in the group) again over its positions
 * g0..p: the run's own rows (f16-rounded k_new), earlier positions from
 * the ring when it still holds them (before this step's ring writes),
 * others from the group's previous codes (src: G * row floats). */
static void requant_group(char *kc, size_t rb, size_t slot, int64_t i, const int32_t *seq,
                          const int32_t *pos, const float *k_new, const struct ring *rg,
                          int64_t rows, int64_t row, float *src) {
    int64_t p = pos[i], j0 = p % G, n = j0 + 1, g0 = p - j0;
    uint8_t *grp = (uint8_t *)kc + (slot - (size_t)j0) * rb;
    for (int64_t j = 0; j < n; j++) {
        int64_t t = g0 + j, it = i - (p - t), rr = t % rows;
        float *d = src + j * row;
        if (it >= 0 && seq[it] == seq[i] && pos[it] == t)
            for (int64_t c = 0; c < row; c++) d[c] = lmc_f16_to_f32(lmc_f32_to_f16(k_new[it * row + c]));
        else if (rg->tag[rr] == t)
            for (int64_t c = 0; c < row; c++) d[c] = lmc_f16_to_f32(rg->k[rr * row + c]);
        else /* no longer (or never) in the ring: the group's previous codes */
            for (int64_t c = 0; c < row; c++) d[c] = lmc_kvq_kivi_key(grp, row, c, j);
    }
    uint16_t *sm = (uint16_t *)grp;
    for (int64_t c = 0; c < row; c++) {
        uint8_t *cd = grp + 4 * (size_t)row + 8 * (size_t)c;
        memset(cd, 0, 8);
        lmc_kvq_asym_group(src + c, row, n, 2, cd, sm + 2 * c);
    }
}

struct kpattn_job {
    struct lmc_cpu_ctx *c;
    float *out;
    const float *q, *k_new, *v_new;
    const char *kc, *vc;
    void *ring;
    const int32_t *tok_ring, *seq, *pos, *bt;
    int64_t ring_rows, residual, max_blocks, bs, n_heads, n_kv, hd, window, scores;
    size_t rb;
    float scale;
};

static float f16r(float x) { return lmc_f16_to_f32(lmc_f32_to_f16(x)); }

/* the batch row of position t of token m's sequence when this step writes
 * it (its run: consecutive rows), else -1 */
static int64_t run_row(const struct kpattn_job *j, int64_t m, int64_t t) {
    int64_t it = m - (j->pos[m] - t);
    return it >= 0 && j->seq[it] == j->seq[m] && j->pos[it] == t ? it : -1;
}

static void kpattn_task(void *arg, int64_t t, int thread) {
    const struct kpattn_job *j = arg;
    int64_t m = t / j->n_heads, h = t % j->n_heads, hd = j->hd, bs = j->bs;
    int64_t p = j->pos[m], sq = j->seq[m];
    int64_t lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0, n = p - lo + 1;
    int64_t kvh = h / (j->n_heads / j->n_kv), row = j->n_kv * hd, c0 = kvh * hd, res = j->residual;
    struct ring rg = ring_at(j->ring, j->tok_ring[m], row, j->ring_rows);
    const float *q = j->q + (m * j->n_heads + h) * hd;
    float *s = j->c->scratch[thread], *dec = s + j->scores, *o = j->out + (m * j->n_heads + h) * hd;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        int64_t ps = lo + i, rr = ps % j->ring_rows, it = run_row(j, m, ps);
        if (ps > p - res && it >= 0) {
            for (int64_t d = 0; d < hd; d++) dec[d] = f16r(j->k_new[it * row + c0 + d]);
        } else if (ps > p - res && rg.tag[rr] == ps) {
            for (int64_t d = 0; d < hd; d++) dec[d] = lmc_f16_to_f32(rg.k[rr * row + c0 + d]);
        } else {
            size_t slot = slot_of(j->bt, j->max_blocks, bs, sq, ps);
            const uint8_t *grp = (const uint8_t *)j->kc + (slot - (size_t)(ps % G)) * j->rb;
            for (int64_t d = 0; d < hd; d++) dec[d] = lmc_kvq_kivi_key(grp, row, c0 + d, ps % G);
        }
        s[i] = j->scale * lmc_cpu_dot(q, dec, hd);
        if (s[i] > mx) mx = s[i];
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        int64_t ps = lo + i, rr = ps % j->ring_rows, it = run_row(j, m, ps);
        if (ps > p - res && it >= 0) {
            for (int64_t d = 0; d < hd; d++) dec[d] = f16r(j->v_new[it * row + c0 + d]);
        } else if (ps > p - res && rg.tag[rr] == ps) {
            for (int64_t d = 0; d < hd; d++) dec[d] = lmc_f16_to_f32(rg.v[rr * row + c0 + d]);
        } else {
            const uint8_t *vs = (const uint8_t *)j->vc + slot_of(j->bt, j->max_blocks, bs, sq, ps) * j->rb;
            for (int64_t d = 0; d < hd; d++) dec[d] = lmc_kvq_kivi_val(vs, row, c0 + d);
        }
        lmc_cpu_axpy(o, s[i], dec, hd);
    }
    float inv = (float)(1.0 / sum);
    for (int64_t d = 0; d < hd; d++) o[d] *= inv;
}

void lmc_kvq_attention_paged_kivi2(void *ctx, float *out, const float *q, const float *k_new,
                                   const float *v_new, float *kc, float *vc, void *ring,
                                   const int32_t *tok_ring, int64_t ring_rows, int64_t residual,
                                   int64_t T, const int32_t *seq, const int32_t *pos,
                                   const int32_t *bt, int64_t max_blocks, int64_t block_size,
                                   int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                   int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0 && block_size % G == 0);
    LMC_ASSERT(ring && tok_ring && ring_rows >= G + 16);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    int64_t row = n_kv * hd, max_pos = 0;
    size_t rb = lmc_kvq_kivi_slot_bytes(row);
    for (int64_t i = 0; i < T; i++) max_pos = LMC_MAX(max_pos, (int64_t)pos[i]);
    int64_t scores = (max_pos + 1 + 15) / 16 * 16; /* the decoded slice after the scores */
    lmc_cpu_scratch_reserve(c, LMC_MAX((size_t)(G * row), (size_t)(scores + hd)));
    float *src = c->scratch[0];
    int64_t ng = (row + G - 1) / G;
    /* 1: key groups, before the ring changes (the CUDA twin's order) */
    for (int64_t i = 0; i < T; i++) {
        int64_t p = pos[i], s = seq[i];
        LMC_ASSERT(p >= 0 && p / block_size < max_blocks);
        if (i < T - 1 && seq[i + 1] == s && pos[i + 1] == p + 1 && (p + 1) % G) continue;
        struct ring rg = ring_at(ring, tok_ring[i], row, ring_rows);
        requant_group((char *)kc, rb, slot_of(bt, max_blocks, block_size, s, p), i, seq, pos, k_new, &rg,
                      ring_rows, row, src);
    }
    /* 2: values */
    for (int64_t i = 0; i < T; i++) {
        uint8_t *vs = (uint8_t *)vc + slot_of(bt, max_blocks, block_size, seq[i], pos[i]) * rb;
        lmc_kvq_asym_quant(v_new + i * row, row, 2, vs + 4 * ng, (uint16_t *)vs);
    }
    /* 3: attention (this step's rows from k_new / v_new, earlier ones from
     * the ring as it was before the step) */
    struct kpattn_job j = {c, out, q, k_new, v_new, (const char *)kc, (const char *)vc, ring, tok_ring, seq, pos,
                           bt, ring_rows, residual, max_blocks, block_size, n_heads, n_kv, hd, window, scores,
                           rb, scale};
    lmc_pool_run(c->pool, T * n_heads, kpattn_task, &j);
    /* 4: ring rows (the last writer of a ring row wins) */
    for (int64_t i = 0; i < T; i++) {
        int64_t p = pos[i], rr = p % ring_rows;
        struct ring rg = ring_at(ring, tok_ring[i], row, ring_rows);
        for (int64_t d = 0; d < row; d++) {
            rg.k[rr * row + d] = lmc_f32_to_f16(k_new[i * row + d]);
            rg.v[rr * row + d] = lmc_f32_to_f16(v_new[i * row + d]);
        }
        rg.tag[rr] = (int32_t)p;
    }
}
