/* bootstrap.c — how a process finds its place in a distributed run: the
 * launch environment (mpirun, torchrun, Slurm), the communicator that fits
 * it (lmc_dist_init), and the helpers every distributed trainer needs: the
 * data slice of a rank, the start-up check that all ranks agree on the
 * configuration, and logging on rank 0 only. */
#include "dist/comm.h"
#include "core/core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double lmc_comm_default_timeout(void) {
    const char *s = getenv("LMC_DIST_TIMEOUT");
    char *end;
    double v = s ? strtod(s, &end) : 0;
    return s && end != s && v > 0 ? v : 300.0;
}

static const char *env_default(const char *name, void *user) {
    (void)user;
    return getenv(name);
}

/* Parses variable `name` as an integer in [lo, hi]. */
static lmc_status env_int(lmc_getenv_fn ge, void *u, const char *name, long lo, long hi, int *out,
                          bool *present, lmc_err *err) {
    const char *s = ge(name, u);
    *present = s && *s;
    if (!*present) return LMC_OK;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return lmc_err_set(err, LMC_ERR_ARG, "dist: %s='%s' is not an integer in [%ld, %ld]", name, s, lo, hi);
    *out = (int)v;
    return LMC_OK;
}

static lmc_status env_master(struct lmc_dist_env *e, lmc_getenv_fn ge, void *u, const char *who,
                             lmc_err *err) {
    const char *addr = ge("MASTER_ADDR", u);
    bool have_port;
    lmc_status s = env_int(ge, u, "MASTER_PORT", 1, 65535, &e->master_port, &have_port, err);
    if (s) return s;
    if (e->world == 1 && (!addr || !*addr)) return LMC_OK; /* nothing to meet */
    if (!addr || !*addr || !have_port)
        return lmc_err_set(err, LMC_ERR_ARG, "dist: %s sets a world of %d but MASTER_ADDR and "
                           "MASTER_PORT (rank 0's host and a free port) are %s", who, e->world,
                           !addr || !*addr ? "not set" : "incomplete (no MASTER_PORT)");
    if (strlen(addr) >= sizeof e->master_addr)
        return lmc_err_set(err, LMC_ERR_ARG, "dist: MASTER_ADDR is too long");
    strcpy(e->master_addr, addr);
    return LMC_OK;
}

lmc_status lmc_dist_env_parse(struct lmc_dist_env *e, lmc_getenv_fn ge, void *u, lmc_err *err) {
    memset(e, 0, sizeof *e);
    e->world = 1;
    if (!ge) ge = env_default;
    const long maxw = 1 << 20;
    bool pr, pw, pl;
    lmc_status s;
    /* mpirun (Open MPI, then MPICH/PMI) */
    const char *mr[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK"}, *mw[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"},
               *ml[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"},
               *mlw[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"};
    for (int k = 0; k < 2; k++) {
        if ((s = env_int(ge, u, mw[k], 1, maxw, &e->world, &pw, err))) return s;
        if ((s = env_int(ge, u, mr[k], 0, maxw, &e->rank, &pr, err))) return s;
        if (!pw && !pr) continue;
        if (!pw || !pr)
            return lmc_err_set(err, LMC_ERR_ARG, "dist: %s is set without %s", pw ? mw[k] : mr[k],
                               pw ? mr[k] : mw[k]);
        if (e->rank >= e->world)
            return lmc_err_set(err, LMC_ERR_ARG, "dist: %s=%d is not below %s=%d", mr[k], e->rank, mw[k], e->world);
        if ((s = env_int(ge, u, ml[k], 0, maxw, &e->local_rank, &pl, err))) return s;
        if ((s = env_int(ge, u, mlw[k], 1, maxw, &e->local_world, &pl, err))) return s;
        e->launcher = LMC_LAUNCH_MPI;
        return LMC_OK;
    }
    /* torchrun and friends */
    if ((s = env_int(ge, u, "WORLD_SIZE", 1, maxw, &e->world, &pw, err))) return s;
    if ((s = env_int(ge, u, "RANK", 0, maxw, &e->rank, &pr, err))) return s;
    if (pw || pr) {
        if (!pw || !pr)
            return lmc_err_set(err, LMC_ERR_ARG, "dist: %s is set without %s", pw ? "WORLD_SIZE" : "RANK",
                               pw ? "RANK" : "WORLD_SIZE");
        if (e->rank >= e->world)
            return lmc_err_set(err, LMC_ERR_ARG, "dist: RANK=%d is not below WORLD_SIZE=%d", e->rank, e->world);
        if ((s = env_int(ge, u, "LOCAL_RANK", 0, maxw, &e->local_rank, &pl, err))) return s;
        if ((s = env_int(ge, u, "LOCAL_WORLD_SIZE", 1, maxw, &e->local_world, &pl, err))) return s;
        e->launcher = LMC_LAUNCH_TORCHRUN;
        return env_master(e, ge, u, "WORLD_SIZE", err);
    }
    /* Slurm (srun) */
    if ((s = env_int(ge, u, "SLURM_NTASKS", 1, maxw, &e->world, &pw, err))) return s;
    if ((s = env_int(ge, u, "SLURM_PROCID", 0, maxw, &e->rank, &pr, err))) return s;
    if (pw && pr) {
        if (e->rank >= e->world)
            return lmc_err_set(err, LMC_ERR_ARG, "dist: SLURM_PROCID=%d is not below SLURM_NTASKS=%d",
                               e->rank, e->world);
        if ((s = env_int(ge, u, "SLURM_LOCALID", 0, maxw, &e->local_rank, &pl, err))) return s;
        if ((s = env_int(ge, u, "SLURM_NTASKS_PER_NODE", 1, maxw, &e->local_world, &pl, err))) return s;
        e->launcher = LMC_LAUNCH_SLURM;
        return env_master(e, ge, u, "SLURM_NTASKS", err);
    }
    e->world = 1;
    e->rank = 0;
    e->local_world = 1;
    return LMC_OK;
}

int lmc_dist_cpu_threads(const struct lmc_dist_env *e, int online_cores) {
    int n = e->local_world > 0 ? online_cores / e->local_world : online_cores;
    return n > 0 ? n : 1;
}

lmc_status lmc_dist_init(struct lmc_comm *c, int device, lmc_err *err) {
    struct lmc_dist_env e;
    lmc_status s = lmc_dist_env_parse(&e, NULL, NULL, err);
    if (s) return s;
    struct lmc_comm host;
    switch (e.launcher) {
    case LMC_LAUNCH_NONE:
        lmc_comm_single_init(&host);
        break;
    case LMC_LAUNCH_MPI:
        if ((s = lmc_comm_mpi_init(&host, 0, err))) return s;
        host.local_rank = e.local_rank;
        break;
    case LMC_LAUNCH_TORCHRUN:
    case LMC_LAUNCH_SLURM: {
        if (e.world == 1) {
            lmc_comm_single_init(&host);
            break;
        }
        struct lmc_comm_tcp_opts o = {e.rank, e.world, e.local_rank, e.master_addr, e.master_port, -1, 0};
        if ((s = lmc_comm_tcp_init(&host, &o, err))) return s;
        break;
    }
    }
    if (device == LMC_DIST_HOST || host.world == 1) {
        /* one GPU needs no NCCL: the single communicator's copies are
         * plain memmoves, which device buffers do not allow, so callers
         * with device memory and world 1 skip collectives (zero.c does) */
        *c = host;
        return LMC_OK;
    }
    int dev = device == LMC_DIST_DEVICE_LOCAL ? e.local_rank : device;
    return lmc_comm_nccl_init(c, &host, dev, err);
}

void lmc_dist_slice(int64_t n, int rank, int world, int64_t *begin, int64_t *count) {
    LMC_ASSERT(world >= 1 && rank >= 0 && rank < world && n >= 0);
    int64_t q = n / world, r = n % world;
    *begin = q * rank + (rank < r ? rank : r);
    *count = q + (rank < r ? 1 : 0);
}

#define DESC_BYTES 512

lmc_status lmc_dist_check_same(struct lmc_comm *c, const char *what, const char *desc, lmc_err *err) {
    if (c->world == 1) return LMC_OK;
    if (c->device_buffers)
        return lmc_err_set(err, LMC_ERR_ARG, "dist: lmc_dist_check_same needs a host communicator");
    size_t n = strlen(desc);
    /* a description too long to send whole is compared by its hash too */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)desc[i]) * 1099511628211ull;
    unsigned char mine[DESC_BYTES] = {0};
    memcpy(mine, &h, 8);
    memcpy(mine + 8, desc, LMC_MIN(n, (size_t)DESC_BYTES - 9));
    unsigned char *all = malloc((size_t)DESC_BYTES * (size_t)c->world);
    if (!all) return lmc_err_set(err, LMC_ERR_OOM, "dist: out of memory");
    lmc_status s = c->all_gather(c, mine, all, DESC_BYTES, LMC_DTYPE_U8, err);
    if (!s) {
        for (int p = 1; p < c->world; p++) {
            if (memcmp(all, all + (size_t)p * DESC_BYTES, DESC_BYTES) == 0) continue;
            s = lmc_err_set(err, LMC_ERR_ARG,
                            "dist: ranks disagree on the %s: rank %d has \"%.200s\", rank 0 has "
                            "\"%.200s\"; every rank must be started with the same model, batch "
                            "and options", what, p, (const char *)all + (size_t)p * DESC_BYTES + 8,
                            (const char *)all + 8);
            break;
        }
    }
    free(all);
    return s;
}

void lmc_dist_log(const struct lmc_comm *c, int level, const char *fmt, ...) {
    if (c && c->rank != 0) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lmc_log(level, "%s", buf);
}

lmc_status lmc_comm_alltoallv_check(const struct lmc_comm *c, const int64_t *send_counts,
                                    const int64_t *send_offs, const int64_t *recv_counts,
                                    const int64_t *recv_offs, enum lmc_dtype dtype,
                                    size_t *send_bytes, size_t *recv_bytes, lmc_err *err) {
    int64_t es = lmc_dtype_size(dtype), ext[2] = {0, 0};
    if (es == 0) return lmc_err_set(err, LMC_ERR_ARG, "comm: alltoallv: unknown dtype %d", (int)dtype);
    const int64_t *cnt[2] = {send_counts, recv_counts}, *off[2] = {send_offs, recv_offs};
    for (int side = 0; side < 2; side++)
        for (int p = 0; p < c->world; p++) {
            int64_t end, bytes;
            if (cnt[side][p] < 0 || off[side][p] < 0 || !lmc_add_ok(off[side][p], cnt[side][p], &end) ||
                !lmc_mul_ok(end, es, &bytes))
                return lmc_err_set(err, LMC_ERR_ARG, "comm: alltoallv on rank %d: %s part %d (offset %lld, "
                                   "count %lld) out of range", c->rank, side ? "receive" : "send", p,
                                   (long long)off[side][p], (long long)cnt[side][p]);
            if (cnt[side][p] > 0 && bytes > ext[side]) ext[side] = bytes;
        }
    if (send_bytes) *send_bytes = (size_t)ext[0];
    if (recv_bytes) *recv_bytes = (size_t)ext[1];
    return LMC_OK;
}
