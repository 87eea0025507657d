/* comm.h — the communication interface every multi-device feature goes
 * through (data/tensor/pipeline parallelism, ZeRO). A table of collectives
 * over a group of `world` ranks; implementations: single (world size 1, in
 * this file's .c), and later MPI (CPU) and NCCL (GPU). Buffers are in the
 * memory of the backend the communicator was made for. Nothing above
 * src/dist/ assumes world == 1. */
#ifndef LMC_COMM_H
#define LMC_COMM_H

#include "lmc.h"
#include "core/dtype.h"

#include <stddef.h>
#include <stdint.h>

enum lmc_reduce_op { LMC_REDUCE_SUM = 0, LMC_REDUCE_MAX, LMC_REDUCE_AVG };

struct lmc_comm {
    const char *name;
    int rank, world;
    void *ctx;
    /* In place: buf (count elements of dtype) becomes the reduction over ranks. */
    lmc_status (*all_reduce)(struct lmc_comm *c, void *buf, int64_t count, enum lmc_dtype dtype,
                             enum lmc_reduce_op op, lmc_err *err);
    /* buf on `root` is copied to every rank's buf. */
    lmc_status (*broadcast)(struct lmc_comm *c, void *buf, size_t bytes, int root, lmc_err *err);
    /* recv (world * count elements) gets every rank's send (count elements), in rank order. */
    lmc_status (*all_gather)(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                             enum lmc_dtype dtype, lmc_err *err);
    /* recv (count elements) gets this rank's slice of the reduction of send (world * count). */
    lmc_status (*reduce_scatter)(struct lmc_comm *c, const void *send, void *recv, int64_t count,
                                 enum lmc_dtype dtype, enum lmc_reduce_op op, lmc_err *err);
    lmc_status (*barrier)(struct lmc_comm *c, lmc_err *err);
    void (*free)(struct lmc_comm *c);
};

/* World size 1: collectives are copies or no-ops. */
void lmc_comm_single_init(struct lmc_comm *c);

#endif
