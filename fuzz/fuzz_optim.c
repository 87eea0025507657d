/* fuzz_optim.c — libFuzzer target for the optimizer's inputs: the first
 * byte picks (even) a command line of NUL-separated arguments through
 * lmc_optim_parse_arg — a parsed cfg passes lmc_optim_cfg_check or is
 * refused with a message — or (odd) a safetensors image as optimizer state
 * through lmc_st_parse and lmc_optim_load_st into a small Muon / 8-bit
 * AdamW optimizer on the CPU: loaded or refused with a message, never a
 * crash; a loaded state still steps. */
#include "core/core.h"
#include "io/safetensors.h"
#include "train/optim.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void args(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1), *argv[64];
    if (!buf) return;
    memcpy(buf, data, size);
    buf[size] = 0;
    int argc = 0;
    argv[argc++] = "train";
    for (size_t i = 0; i < size && argc < 64;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    struct lmc_optim_cfg c;
    lmc_optim_cfg_default(&c, LMC_OPTIM_ADAMW);
    lmc_err err;
    for (int i = 1; i < argc;) {
        bool used = false;
        memset(&err, 0, sizeof err);
        if (lmc_optim_parse_arg(&c, argc, argv, &i, &used, &err)) {
            LMC_ASSERT(used && err.msg[0]);
            break;
        }
        if (!used) i++;
    }
    memset(&err, 0, sizeof err);
    if (lmc_optim_cfg_check(&c, &err)) LMC_ASSERT(err.msg[0]);
    free(buf);
}

static void state(const uint8_t *data, size_t size, int kind) {
    static float p[2][35], g[2][35];
    struct lmc_optim_param ps[2] = {{"w", p[0], g[0], 5, 7, LMC_PROLE_MATRIX, true},
                                    {"n", p[1], g[1], 1, 35, LMC_PROLE_NORM, false}};
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cpu_init(&be, 1, &err)) return;
    struct lmc_optim_cfg c;
    lmc_optim_cfg_default(&c, kind ? LMC_OPTIM_MUON : LMC_OPTIM_ADAMW8BIT);
    c.q8_block = 64;
    struct lmc_optim o;
    if (!lmc_optim_init(&o, &c, &be, ps, 2, &err)) {
        struct lmc_st st;
        memset(&err, 0, sizeof err);
        if (!lmc_st_parse(&st, data, size, "fuzz/optimizer.safetensors", &err)) {
            memset(&err, 0, sizeof err);
            if (!lmc_optim_load_st(&o, &st, "fuzz/optimizer.safetensors", &err)) lmc_optim_step(&o, 1e-3, 2, 1.0f);
            else LMC_ASSERT(err.msg[0]);
            lmc_st_free(&st);
        }
        lmc_optim_free(&o);
    }
    lmc_backend_cpu_free(&be);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] % 2 == 0) args(data + 1, size - 1);
    else state(data + 1, size - 1, data[0] & 2);
    return 0;
}
