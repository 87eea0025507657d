/* cli_caps.c — which parallel features of which command run on which
 * backend: one table (command x feature -> the backends it runs on, and
 * the refusal's wording), checked once by each command after its options
 * are parsed (cli_caps_check), before anything is loaded. A feature with
 * no row runs wherever the command runs. The layers below refuse the same
 * combinations again (a library caller has no CLI); this is where the user
 * gets told, naming the flag and the device, with exit status 2. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

enum { BE_CPU = 1, BE_CUDA = 2 };

/* "lmc CMD: FLAG" pre DEVICE post */
#define CPU_ONLY " runs on the CPU backend only so far (--device ", ")"
#define TRAIN_HOST " runs on the CPU backend only so far (host communicators); with --device ", \
                   " the ranks train data parallel (--zero 0-3)"

static const struct cap_row {
    const char *cmd;
    enum cli_cap cap;
    unsigned backends; /* BE_* bits */
    const char *pre, *post;
} rows[] = {
    {"generate", CLI_CAP_PP, BE_CPU, CPU_ONLY},
    {"generate", CLI_CAP_EP, BE_CPU, CPU_ONLY},
    {"serve", CLI_CAP_PP, BE_CPU, CPU_ONLY},
    {"serve", CLI_CAP_EP, BE_CPU, " does not combine with --device ", " yet (it runs on the CPU backend only so far)"},
    {"serve", CLI_CAP_TP, BE_CPU, CPU_ONLY},
    /* --device cuda: the ranks train data parallel over NCCL (--zero 0-3,
     * AdamW); the model-parallel layouts and the other optimizers' sharded
     * state run on host backends (host communicators) only */
    {"finetune", CLI_CAP_EP, BE_CPU, TRAIN_HOST},
    {"finetune", CLI_CAP_TP, BE_CPU, TRAIN_HOST},
    {"finetune", CLI_CAP_CP, BE_CPU, TRAIN_HOST},
    {"finetune", CLI_CAP_PP, BE_CPU, TRAIN_HOST},
    {"finetune", CLI_CAP_DP_OPTIM, BE_CPU,
     ": data-parallel fine-tuning on --device ", " steps AdamW only (the zero module's optimizer); run it on one "
                                                 "GPU or on the CPU"},
    /* lmc train: context parallelism has the backend's ring-attention
     * block ops on a GPU; the others exchange host buffers */
    {"train", CLI_CAP_EP, BE_CPU, " (expert-parallel training)" CPU_ONLY},
    {"train", CLI_CAP_SP, BE_CPU, " (sequence parallelism, with --tp)" CPU_ONLY},
    {"train", CLI_CAP_TP, BE_CPU, " (tensor-parallel training)" CPU_ONLY},
    {"train", CLI_CAP_CP, BE_CPU | BE_CUDA, "", ""},
    {"train", CLI_CAP_PP, BE_CPU, " (pipeline-parallel training: the stages exchange host buffers)" CPU_ONLY},
};

int cli_caps_check(const char *cmd, const char *device, const bool on[CLI_CAP_N], const char *optim) {
    /* the default device of these features is the CPU: they open their own backend */
    unsigned be = device && !strcmp(device, "cuda") ? BE_CUDA : BE_CPU;
    static const char *const flags[CLI_CAP_N] = {"--ep", "--sp", "--tp", "--cp", "--pp", "--optim"};
    for (int f = 0; f < CLI_CAP_N; f++) {
        if (!on[f]) continue;
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            const struct cap_row *r = &rows[i];
            if (r->cap != (enum cli_cap)f || strcmp(r->cmd, cmd) || (r->backends & be)) continue;
            fprintf(stderr, "lmc %s: %s%s%s%s%s%s\n", cmd, flags[f], f == CLI_CAP_DP_OPTIM ? " " : "",
                    f == CLI_CAP_DP_OPTIM && optim ? optim : "", r->pre, device, r->post);
            return 2;
        }
    }
    return 0;
}
