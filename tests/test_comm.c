/* test_comm.c — the world-size-1 communicator: collectives leave data as
 * the definition over one rank says, bad arguments are refused. */
#include "test.h"
#include "dist/comm.h"

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
    c.free(&c);
    CHECK(c.world == 0);
    return test_finish("test_comm");
}
