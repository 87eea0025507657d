/* optim_internal.h — what optim.c (grouping, arena, state, dispatch) and
 * optim_lowrank.c (GaLore's and APOLLO's projection refreshes) share: the
 * per-parameter slot with its group, shapes and state pointers. */
#ifndef LMC_TRAIN_OPTIM_INTERNAL_H
#define LMC_TRAIN_OPTIM_INTERNAL_H

#include "train/optim.h"

struct lmc_optim_slot {
    char *name;                  /* owned copy */
    float *p;
    const float *g;
    int64_t rows, cols;
    enum lmc_param_role role;
    bool decay;
    enum lmc_optim_group group;
    int idx;                     /* index in the list given to init */
    /* low-rank groups: right = rows >= cols (P (rank, cols), low (rows, rank));
     * else left (P (rows, rank), low (rank, cols)) */
    int64_t rank;
    bool right;
    int64_t low_rows, low_cols;
    /* state (backend memory inside the arena; NULL where unused) */
    float *m, *v;                /* AdamW: (rows*cols); low-rank: (low_rows*low_cols) */
    float *buf;                  /* Muon momentum (rows*cols) */
    uint8_t *qm, *qv;            /* 8-bit codes (rows*cols) */
    float *am, *av;              /* 8-bit absmax per block (nblocks) */
    int64_t nblocks;
    float *proj;                 /* GaLore / APOLLO projection (rank * (right ? cols : rows)) */
    float *prev_norm;            /* APOLLO's limiter: last ||S|| (1; < 0: none yet) */
    int64_t refreshed;           /* low-rank groups: the step whose projection refresh is done (0: none) */
};

/* The host doubles one low-rank slot's projection refresh needs as
 * scratch, and the LAPACK workspace (doubles) of GaLore's eigensolver
 * (0 otherwise). */
size_t lmc_optim_lowrank_scratch(const struct lmc_optim_slot *s, enum lmc_optim_group g,
                                 int *svd_lwork);
/* GaLore's subspace refreshes due at this step, every slot at once (one
 * download and one upload for all; lmc_optim_step calls it before the
 * per-slot steps, which then skip their refresh). No-op otherwise. */
void lmc_optim_lowrank_refresh_due(struct lmc_optim *o, int64_t step);
/* Frees the refreshes' memory (lmc_optim_free). */
void lmc_optim_lowrank_free(struct lmc_optim *o);
/* One GaLore / APOLLO step of slot s: the projection refreshed on the host
 * when due, then the backend's lowrank op. */
void lmc_optim_lowrank_step(struct lmc_optim *o, struct lmc_optim_slot *s, double lr, int64_t step,
                            float grad_scale);

#endif
