/* rope.c — rotary position embedding in place, HF "rotate_half" layout:
 * pairs (i, i + rot_dim/2) of the first rot_dim dims of every head rotate by
 * pos*inv_freq[i]; angles, cos and sin in double, cos/sin times attn_scale.
 * Dims past rot_dim are left as they are. */
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>
#include <string.h>

#define ROPE_CHUNK 64
#define ROPE_TAB_MAX_POS 65536 /* positions the table may cover */
#define ROPE_TAB_MIN_M 64       /* rows from which a call builds the table even without repeats */
#define ROPE_ROW_MAX_M 16       /* up to this many rows within as many positions: rope_row covers them */

/* cos/sin (times attn_scale) of positions [p0, p0 + npos) for the
 * frequencies freq[0..half) and scale it was built for: row p - p0 holds
 * half cos values, then half sin values, the same floats the per-row
 * formula gives. A training step calls rope with the same frequencies 4
 * times per layer; the table turns each call's M x half cos/sin pairs into
 * lookups. Decode (M = 1) calls it twice a layer at one position: the
 * second slot (rope_row) keeps that position's row, so a token computes
 * its half cos/sin pairs once instead of 2 x layers times; a speculative
 * verification's few rows (at most ROPE_ROW_MAX_M, within as many
 * positions) likewise keep their rows there. */
struct lmc_cpu_rope_tab {
    double *freq;
    float *cs;
    int64_t half, p0, npos;
    float scale;
};

static void tab_free(struct lmc_cpu_rope_tab **slot) {
    struct lmc_cpu_rope_tab *t = *slot;
    if (!t) return;
    free(t->freq);
    free(t->cs);
    free(t);
    *slot = NULL;
}

void lmc_cpu_rope_tab_free(struct lmc_cpu_ctx *c) {
    tab_free(&c->rope_tab);
    tab_free(&c->rope_row);
}

/* slot's table when it covers [p0, p1] for these frequencies (compared by
 * value, so a reused pointer cannot go stale), else a new one (NULL: out
 * of memory; the caller computes per row) */
static const float *tab_get(struct lmc_cpu_rope_tab **slot, int64_t p0, int64_t p1, int64_t half,
                            const double *inv_freq, float scale) {
    struct lmc_cpu_rope_tab *t = *slot;
    if (t && t->half == half && t->scale == scale && t->p0 <= p0 && t->p0 + t->npos > p1 &&
        !memcmp(t->freq, inv_freq, (size_t)half * sizeof *inv_freq))
        return t->cs + (p0 - t->p0) * 2 * half;
    tab_free(slot);
    int64_t npos = p1 - p0 + 1;
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->freq = malloc((size_t)half * sizeof *t->freq);
    t->cs = malloc((size_t)(npos * 2 * half) * sizeof *t->cs);
    if (!t->freq || !t->cs) {
        free(t->freq), free(t->cs), free(t);
        return NULL;
    }
    memcpy(t->freq, inv_freq, (size_t)half * sizeof *inv_freq);
    t->half = half, t->p0 = p0, t->npos = npos, t->scale = scale;
    for (int64_t p = 0; p < npos; p++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)(p0 + p) * inv_freq[i];
            t->cs[p * 2 * half + i] = (float)(cos(a) * scale);
            t->cs[p * 2 * half + half + i] = (float)(sin(a) * scale);
        }
    *slot = t;
    return t->cs;
}

/* The table for these rows, its first row position *p0 (NULL: compute
 * per row). For one row: that position's row (rope_row). Else, with
 * non-negative bounded positions: the kept table when it covers them, or
 * a new one when they repeat (fewer distinct positions than rows: batches
 * of sequences) or the call has ROPE_TAB_MIN_M rows or more and positions
 * below 4 M (a prompt: the layers' other q and k calls reuse it). */
static const float *rope_table(struct lmc_cpu_ctx *c, const int32_t *pos, int64_t M, int64_t half,
                               const double *inv_freq, float scale, int64_t *p0) {
    *p0 = 0;
    if (M == 1 && pos[0] >= 0) {
        *p0 = pos[0];
        return tab_get(&c->rope_row, pos[0], pos[0], half, inv_freq, scale);
    }
    int32_t pmax = -1, pmin = INT32_MAX;
    for (int64_t m = 0; m < M; m++) {
        if (pos[m] < 0) return NULL;
        pmax = pos[m] > pmax ? pos[m] : pmax;
        pmin = pos[m] < pmin ? pos[m] : pmin;
    }
    if (M <= ROPE_ROW_MAX_M && pmax - pmin < ROPE_ROW_MAX_M) { /* a verification's few rows */
        *p0 = pmin;
        return tab_get(&c->rope_row, pmin, pmax, half, inv_freq, scale);
    }
    if (pmax >= ROPE_TAB_MAX_POS) return NULL;
    const struct lmc_cpu_rope_tab *t = c->rope_tab;
    bool covered = t && t->half == half && t->scale == scale && t->p0 == 0 && t->npos > pmax &&
                   !memcmp(t->freq, inv_freq, (size_t)half * sizeof *inv_freq);
    bool repeat = (int64_t)pmax + 1 <= M / 2, prompt = M >= ROPE_TAB_MIN_M && (int64_t)pmax + 1 <= 4 * M;
    if (!covered && !repeat && !prompt) return NULL;
    return tab_get(&c->rope_tab, 0, pmax, half, inv_freq, scale);
}

struct rope_job {
    float *x;
    int64_t M, n_heads, head_dim, rot_dim, n_tasks;
    const int32_t *pos;
    const double *inv_freq;
    const float *tab; /* rope_table's, or NULL */
    int64_t tab_p0;   /* the position of its first row */
    float attn_scale;
};

static void rope_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct rope_job *j = arg;
    int64_t lo, hi, half = j->rot_dim / 2, row = j->n_heads * j->head_dim;
    float cbuf[ROPE_CHUNK], sbuf[ROPE_CHUNK];
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        double p = (double)j->pos[m];
        for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            int64_t n = LMC_MIN(ROPE_CHUNK, half - i0);
            const float *cs = cbuf, *sn = sbuf;
            if (j->tab) {
                cs = j->tab + ((int64_t)j->pos[m] - j->tab_p0) * 2 * half + i0;
                sn = cs + half;
            } else {
                for (int64_t i = 0; i < n; i++) {
                    double a = p * j->inv_freq[i0 + i];
                    cbuf[i] = (float)(cos(a) * j->attn_scale);
                    sbuf[i] = (float)(sin(a) * j->attn_scale);
                }
            }
            for (int64_t h = 0; h < j->n_heads; h++) {
                float *x1 = j->x + m * row + h * j->head_dim + i0, *x2 = x1 + half;
                int64_t i = 0;
#ifdef __AVX2__
                for (; i + 8 <= n; i += 8) {
                    __m256 a = _mm256_loadu_ps(x1 + i), b = _mm256_loadu_ps(x2 + i);
                    __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
                    _mm256_storeu_ps(x1 + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
                    _mm256_storeu_ps(x2 + i, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
                }
#endif
                for (; i < n; i++) {
                    float a = x1[i], b = x2[i];
                    x1[i] = a * cs[i] - b * sn[i];
                    x2[i] = b * cs[i] + a * sn[i];
                }
            }
        }
    }
}

void lmc_cpu_rope(void *ctx, float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                  int64_t rot_dim, const int32_t *pos, const double *inv_freq, float attn_scale) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(rot_dim >= 0 && rot_dim <= head_dim && rot_dim % 2 == 0);
    if (M <= 0 || rot_dim == 0 || n_heads <= 0) return;
    struct rope_job j = {x, M, n_heads, head_dim, rot_dim, 1, pos, inv_freq, NULL, 0, attn_scale};
    j.tab = rope_table(c, pos, M, rot_dim / 2, inv_freq, attn_scale, &j.tab_p0);
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * n_heads * rot_dim, 8192, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, rope_task, &j);
}

/* ---- backward ----
 * The rotation is orthogonal (times attn_scale): its transpose rotates by
 * the opposite angle, (a, b) -> (a c + b s, b c - a s). */
static void rope_bwd_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct rope_job *j = arg;
    int64_t lo, hi, half = j->rot_dim / 2, row = j->n_heads * j->head_dim;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        double p = (double)j->pos[m];
        const float *tr = j->tab ? j->tab + ((int64_t)j->pos[m] - j->tab_p0) * 2 * half : NULL;
        for (int64_t i = 0; i < half; i++) {
            float cs, sn;
            if (tr) {
                cs = tr[i], sn = tr[half + i];
            } else {
                double a = p * j->inv_freq[i];
                cs = (float)(cos(a) * j->attn_scale), sn = (float)(sin(a) * j->attn_scale);
            }
            for (int64_t h = 0; h < j->n_heads; h++) {
                float *x1 = j->x + m * row + h * j->head_dim + i, *x2 = x1 + half;
                float da = *x1, db = *x2;
                *x1 = da * cs + db * sn;
                *x2 = db * cs - da * sn;
            }
        }
    }
}

void lmc_cpu_rope_bwd(void *ctx, float *dx, int64_t M, int64_t n_heads, int64_t head_dim,
                      int64_t rot_dim, const int32_t *pos, const double *inv_freq,
                      float attn_scale) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(rot_dim >= 0 && rot_dim <= head_dim && rot_dim % 2 == 0);
    if (M <= 0 || rot_dim == 0 || n_heads <= 0) return;
    struct rope_job j = {dx, M, n_heads, head_dim, rot_dim, 1, pos, inv_freq, NULL, 0, attn_scale};
    j.tab = rope_table(c, pos, M, rot_dim / 2, inv_freq, attn_scale, &j.tab_p0);
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * n_heads * rot_dim, 8192, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, rope_bwd_task, &j);
}
