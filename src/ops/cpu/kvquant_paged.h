/* kvquant_paged.h — inside the paged pool's attention (kvquant.h's
 * attention_paged entries, attention_paged_kvq.c): one step of every
 * format shares the prologue there (asserts, the new rows stored into
 * their slots, the step's last position) and then runs the format's
 * kernel over this job. The f16 kernel (AVX2/F16C with its portable twin)
 * is attention_paged_f16.c's; the quantized formats' is
 * attention_paged_kvq.c's. */
#ifndef LMC_KVQUANT_PAGED_H
#define LMC_KVQUANT_PAGED_H

#include "ops/cpu/kvquant.h"
#include "ops/cpu/ops_cpu.h"

/* One step: T = pos/seq entries; kc, vc the pools (slots of rb bytes).
 * f16 / bf16 (lmc_kvq_paged_attend_h16) also take seq NULL (every token of
 * sequence 0) and pos NULL (token m at position pos0 + m): the
 * single-sequence 2-byte cache (attention_kv16.c). */
struct lmc_kvq_paged_job {
    struct lmc_cpu_ctx *c;
    enum lmc_kvq_fmt f;
    float *out;
    const float *q;
    const char *kc, *vc;
    const int32_t *seq, *pos, *bt;
    int64_t T, max_blocks, bs, n_heads, n_kv, hd, window, max_pos;
    size_t rb;
    float scale;
    int64_t pos0;
};

/* Rounds x (n) to f16 into dst (round to nearest even; F16C where avx2,
 * the same bits either way); _bf16: to bf16, nearest even. */
void lmc_kvq_paged_store_f16(uint16_t *dst, const float *x, int64_t n, bool avx2);
void lmc_kvq_paged_store_bf16(uint16_t *dst, const float *x, int64_t n);
/* Attention of the step over an f16 or bf16 pool (j->f) whose rows are
 * stored (reserves the scratch, runs one task per (token, head) on the
 * pool). */
void lmc_kvq_paged_attend_h16(const struct lmc_kvq_paged_job *j);

#endif
