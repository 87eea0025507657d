/* test_comm.c — the world-size-1 communicator: collectives leave data as
 * the definition over one rank says, bad arguments are refused; the launch
 * environment parser (mpirun, torchrun, Slurm variables) and the data
 * slicing helper. Multi-process tests: test_dist.c, test_dist_mpi.sh. */
#include "test.h"
#include "dist/comm.h"

/* A getenv over "NAME=value" strings. */
static const char *table_env(const char *name, void *user) {
    const char **kv = user;
    size_t n = strlen(name);
    for (; *kv; kv++)
        if (!strncmp(*kv, name, n) && (*kv)[n] == '=') return *kv + n + 1;
    return NULL;
}

static void test_env(void) {
    struct lmc_dist_env e;
    lmc_err err = {0};
    const char *none[] = {"HOME=/root", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, none, &err) == LMC_OK);
    CHECK(e.launcher == LMC_LAUNCH_NONE && e.rank == 0 && e.world == 1 && e.local_world == 1);
    CHECK(lmc_dist_cpu_threads(&e, 16) == 16);
    const char *ompi[] = {"OMPI_COMM_WORLD_RANK=3", "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_RANK=1",
                          "OMPI_COMM_WORLD_LOCAL_SIZE=3", "RANK=0", "WORLD_SIZE=2", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, ompi, &err) == LMC_OK);
    CHECK(e.launcher == LMC_LAUNCH_MPI && e.rank == 3 && e.world == 4 && e.local_rank == 1 && e.local_world == 3);
    CHECK(lmc_dist_cpu_threads(&e, 16) == 5 && lmc_dist_cpu_threads(&e, 2) == 1);
    const char *torch[] = {"RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=1", "MASTER_ADDR=10.0.0.7", "MASTER_PORT=29500", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, torch, &err) == LMC_OK);
    CHECK(e.launcher == LMC_LAUNCH_TORCHRUN && e.rank == 5 && e.world == 8 && e.local_rank == 1 &&
          !strcmp(e.master_addr, "10.0.0.7") && e.master_port == 29500);
    const char *slurm[] = {"SLURM_PROCID=2", "SLURM_NTASKS=3", "SLURM_LOCALID=0", "MASTER_ADDR=node1",
                           "MASTER_PORT=1234", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, slurm, &err) == LMC_OK);
    CHECK(e.launcher == LMC_LAUNCH_SLURM && e.rank == 2 && e.world == 3 && !strcmp(e.master_addr, "node1"));
    CHECK(e.local_world == 0 && lmc_dist_cpu_threads(&e, 8) == 8); /* unknown: all cores */
    /* refused, naming the variable */
    const char *bad1[] = {"RANK=4", "WORLD_SIZE=4", "MASTER_ADDR=a", "MASTER_PORT=1", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, bad1, &err) == LMC_ERR_ARG && strstr(err.msg, "RANK=4"));
    const char *bad2[] = {"RANK=1", "WORLD_SIZE=2", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, bad2, &err) == LMC_ERR_ARG && strstr(err.msg, "MASTER_ADDR"));
    const char *bad3[] = {"RANK=1", "WORLD_SIZE=2x", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, bad3, &err) == LMC_ERR_ARG && strstr(err.msg, "WORLD_SIZE='2x'"));
    const char *bad4[] = {"RANK=0", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, bad4, &err) == LMC_ERR_ARG && strstr(err.msg, "without WORLD_SIZE"));
    const char *bad5[] = {"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=70000", NULL};
    CHECK(lmc_dist_env_parse(&e, table_env, bad5, &err) == LMC_ERR_ARG && strstr(err.msg, "MASTER_PORT"));
    const char *one[] = {"RANK=0", "WORLD_SIZE=1", NULL}; /* one process needs no rendezvous */
    CHECK(lmc_dist_env_parse(&e, table_env, one, &err) == LMC_OK && e.world == 1);
}

static void test_slice(void) {
    /* disjoint, covering, sizes differ by at most one, in rank order */
    for (int64_t n = 0; n < 30; n++)
        for (int w = 1; w <= 7; w++) {
            int64_t next = 0, lo = n, hi = 0;
            for (int r = 0; r < w; r++) {
                int64_t b, c;
                lmc_dist_slice(n, r, w, &b, &c);
                CHECK(b == next);
                next = b + c;
                lo = c < lo ? c : lo;
                hi = c > hi ? c : hi;
            }
            CHECK(next == n && hi - lo <= 1);
        }
}

int main(void) {
    struct lmc_comm c;
    lmc_comm_single_init(&c);
    lmc_err err = {0};
    CHECK(c.world == 1 && c.rank == 0);
    float buf[7], ref[7], out[7];
    uint64_t s = 5;
    for (int i = 0; i < 7; i++) ref[i] = buf[i] = test_rand(&s);
    CHECK(c.all_reduce(&c, buf, 7, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err) == LMC_OK);
    CHECK(memcmp(buf, ref, sizeof buf) == 0);
    CHECK(c.all_gather(&c, buf, out, 7, LMC_DTYPE_F32, &err) == LMC_OK);
    CHECK(memcmp(out, ref, sizeof out) == 0);
    memset(out, 0, sizeof out);
    CHECK(c.reduce_scatter(&c, buf, out, 7, LMC_DTYPE_F32, LMC_REDUCE_AVG, &err) == LMC_OK);
    CHECK(memcmp(out, ref, sizeof out) == 0);
    CHECK(c.broadcast(&c, buf, sizeof buf, 0, &err) == LMC_OK);
    CHECK(c.broadcast(&c, buf, sizeof buf, 1, &err) == LMC_ERR_ARG);
    CHECK(c.all_reduce(&c, buf, -1, LMC_DTYPE_F32, LMC_REDUCE_SUM, &err) == LMC_ERR_ARG);
    CHECK(c.barrier(&c, &err) == LMC_OK);
    struct lmc_comm_work *w = (struct lmc_comm_work *)&c;
    CHECK(c.iall_reduce(&c, buf, 7, LMC_DTYPE_F32, LMC_REDUCE_SUM, &w, &err) == LMC_OK && w == NULL);
    CHECK(c.wait(&c, w, &err) == LMC_OK);
    CHECK(c.send(&c, buf, 4, 1, &err) == LMC_ERR_ARG);
    c.free(&c);
    CHECK(c.world == 0);
    test_env();
    test_slice();
    return test_finish("test_comm");
}
