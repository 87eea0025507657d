/* zero_internal.h — inside src/dist: the ZeRO state shared by zero.c (the
 * training step) and zero_ckpt.c (sharded checkpoints). */
#ifndef LMC_DIST_ZERO_INTERNAL_H
#define LMC_DIST_ZERO_INTERNAL_H

#include "dist/zero.h"

struct lmc_zero_unit {
    int64_t off, n;   /* range in the caller's (unpadded) arena */
    int64_t s;        /* part length: lmc_zero_part_len(n, world) */
    int64_t pa_off;   /* offset in the padded full buffers (n padded to world * s) */
    int64_t sh_off;   /* offset of this unit's part in a shard */
    int t0, t1;       /* its tensors [t0, t1) */
};

/* Unit-sized buffers reused across units and steps (sized once: the
 * largest unit), so stages 2 and 3 do not churn the allocator. */
struct lmc_zero_pool {
    float **buf;
    bool *used;
    int n;                      /* allocated so far (<= n_units) */
};

struct lmc_zero {
    struct lmc_comm *comm;
    struct lmc_backend *be;
    int stage, W, r;
    struct lmc_zero_tensor *tensors;
    int n_tensors;
    struct lmc_zero_unit *units;
    int n_units;
    int64_t numel, PA, S;       /* arena, padded full buffers, shard (elements) */
    uint64_t layout_hash;
    float *p_full, *g_full;     /* stages 0-2 / 0-1: padded full layout */
    float *p_sh, *g_sh;         /* stage 3 / stages 2-3: shards */
    float *m, *v;               /* stage 0 full (padded), else shards */
    double *dscratch;           /* 64 doubles of backend memory for scalar sums */
    float **gathered;           /* (n_units) stage 3: gathered parameters */
    struct lmc_comm_work **gather_work;
    float **ugrad;              /* (n_units) stage 2/3: full gradient buffers */
    struct lmc_zero_pool ppool, gpool; /* where gathered / ugrad point */
    size_t slot_bytes;
    struct lmc_comm_work **red_work;
    int pending_unit;           /* stage 2/3: unit whose reduce-scatter is in flight */
    size_t bytes_now, bytes_peak;
    long setup_hwm_kib;
    bool keep_all;              /* lmc_zero_save keeps every step's shards (lmc_zero_keep_all_steps) */         /* VmHWM at lmc_zero_mark_setup (0: not marked, -1: no restart) */
};

/* A unit's part length for world W: ceil(n / W) rounded up to 16 floats,
 * so every unit and part starts 64-byte aligned in the padded buffers. */
static inline int64_t lmc_zero_part_len(int64_t n, int W) { return ((n + W - 1) / W + 15) / 16 * 16; }
/* Elements of unit u's part q that are real (not padding). */
int64_t lmc_zero_real(const struct lmc_zero_unit *u, int q);
uint64_t lmc_zero_layout_hash(const struct lmc_zero *z);

/* A checkpoint manifest's fields that loading needs (zero_ckpt.c). */
struct lmc_zero_manifest {
    int world, stage, n_units;
    int64_t step, numel;
    uint64_t layout_hash;
    int64_t *unit_n;  /* (n_units) */
    int n_tensors;    /* 0 when the manifest lists none */
    struct lmc_zero_tensor *tensors; /* names owned (freed with the manifest) */
};
/* Parses manifest text (path names it in errors); frees nothing on failure. */
lmc_status lmc_zero_manifest_parse(const char *text, size_t len, const char *path, struct lmc_zero_manifest *m,
                                   lmc_err *err);
void lmc_zero_manifest_free(struct lmc_zero_manifest *m);

#endif
