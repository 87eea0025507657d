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

/* One step: T = pos/seq entries; kc, vc the pools (slots of rb bytes). */
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
};

/* Rounds x (n) to f16 into dst (round to nearest even; F16C where avx2,
 * the same bits either way). */
void lmc_kvq_paged_store_f16(uint16_t *dst, const float *x, int64_t n, bool avx2);
/* Attention of the step over an f16 pool whose rows are stored (reserves
 * the scratch, runs one task per (token, head) on the pool). */
void lmc_kvq_paged_attend_f16(const struct lmc_kvq_paged_job *j);

#endif
