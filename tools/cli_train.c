/* cli_train.c — the backend of the training commands (lmc train, lmc
 * parity --train): --device cpu|cuda (cpu by default: training picks the
 * GPU only when asked) and --dtype fp32|bf16 (the training precision:
 * bf16 by default on the GPU, fp32 by default on the CPU, whose bf16 mode
 * needs AVX512-BF16). */
#include "cli.h"
#include "ops/backend_cuda.h"
#include "train/train_mem.h"

#include <stdio.h>
#include <string.h>

int cli_train_backend(struct lmc_backend *be, const struct cli_common *c, const char *cmd,
                      bool *bf16) {
    lmc_err err = {0};
    bool cuda = c->device && !strcmp(c->device, "cuda");
    *bf16 = false;
    if (c->n_lora) { /* adapters are trained by lmc finetune, applied by the inference commands */
        fprintf(stderr, "lmc %s: --lora is not used here (lmc finetune trains adapters; lmc merge folds them in)\n",
                cmd);
        return 2;
    }
    if (c->wdtype == LMC_WDTYPE_F16) {
        fprintf(stderr, "lmc %s: --dtype f16 is not a training precision (fp32 or bf16)\n", cmd);
        return 2;
    }
    if (!cuda) {
        /* fp32 by default; bf16: mixed precision (bf16 GEMM operands, f32
         * sums, master weights, gradients, optimizer and other ops) */
        if (lmc_backend_cpu_init(be, c->threads, &err)) return cli_fail(cmd, &err);
        *bf16 = c->wdtype == LMC_WDTYPE_BF16;
        if (*bf16 && lmc_backend_cpu_set_train_bf16(be, true, &err)) {
            lmc_backend_cpu_free(be);
            cli_fail(cmd, &err);
            return 2;
        }
        return 0;
    }
    if (lmc_backend_cuda_init(be, 0, &err)) return cli_fail(cmd, &err);
    /* bf16 by default: mixed precision (bf16 GEMM operands and attention,
     * f32 master weights, gradients and optimizer). fp32: the checking
     * mode; the fp32 attention flag is set too, so that no op of the
     * backend runs in reduced precision (training never uses the KV cache,
     * whose type is the flag's other effect). */
    *bf16 = c->wdtype != LMC_WDTYPE_F32;
    lmc_backend_cuda_set_train_bf16(be, *bf16);
    if (!*bf16) lmc_backend_cuda_set_fp32_attention(be, true);
    return 0;
}

void cli_train_backend_free(struct lmc_backend *be) {
    if (be->name && !strcmp(be->name, "cuda")) lmc_backend_cuda_free(be);
    else lmc_backend_cpu_free(be);
}

void cli_train_mem_report(const char *cmd, const struct lmc_backend *be, const struct lmc_trainer *tr,
                          const struct lmc_lora_train *lt, const struct lmc_qlora *ql, int qkind,
                          const char *json_path, size_t mem0, bool after_step) {
    struct lmc_train_mem m;
    lmc_train_mem_account(tr, lt, ql, (enum lmc_qlora_kind)qkind, &m);
    size_t used = 0;
    if (after_step && !be->host_memory) {
        size_t now = lmc_backend_cuda_mem_used(be);
        used = now > mem0 ? now - mem0 : 0;
        fprintf(stderr, "lmc %s: device memory after the first step: %.1f MiB in use past start-up (the account "
                        "%.1f MiB, op scratch and allocator %.1f MiB)\n", cmd, (double)used / 1048576.0,
                (double)m.total / 1048576.0, ((double)used - (double)m.total) / 1048576.0);
    } else if (!after_step) {
        char line[1024];
        lmc_train_mem_line(&m, line, sizeof line);
        fprintf(stderr, "lmc %s: %s\n", cmd, line);
    }
    if (!json_path || (after_step && be->host_memory)) return;
    char js[2048], tmp[4200];
    lmc_train_mem_json(&m, used, js, sizeof js);
    snprintf(tmp, sizeof tmp, "%s.tmp", json_path);
    FILE *f = fopen(tmp, "w");
    bool ok = f && fprintf(f, "%s\n", js) > 0;
    if (f && fclose(f)) ok = false;
    if (!ok || rename(tmp, json_path) != 0) {
        remove(tmp);
        fprintf(stderr, "lmc %s: cannot write %s (the memory account)\n", cmd, json_path);
    }
}
