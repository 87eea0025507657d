/* cmd_convert_checkpoint.c — `lmc convert-checkpoint CKPT -o OUT`: a
 * sharded ZeRO checkpoint (any world size) consolidated into a plain
 * folder: OUT/model.safetensors (float32, the tensors' names and shapes
 * from the manifest) plus the checkpoint folder's other files that make a
 * Hugging Face folder (config.json, generation_config.json, tokenizer
 * files), copied as they are. --step N: that saved step (a training run
 * keeps every step's shards) instead of the newest. */
#include "cli.h"
#include "core/core.h"
#include "dist/zero.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* The files of an HF folder besides the weights. */
static bool hf_side_file(const char *name) {
    size_t n = strlen(name);
    if (!strncmp(name, "zero-manifest", 13) || !strcmp(name, "model.safetensors.index.json")) return false;
    return (n > 5 && !strcmp(name + n - 5, ".json")) || (n > 6 && !strcmp(name + n - 6, ".model")) ||
           !strcmp(name, "merges.txt") || !strcmp(name, "vocab.txt");
}

int cmd_convert_checkpoint(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int64_t step = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--step") && i + 1 < argc) {
            if (!cli_parse_i64(argv[++i], 0, INT64_MAX, &step)) {
                fprintf(stderr, "lmc convert-checkpoint: bad value '%s' for --step\n", argv[i]);
                return 2;
            }
        }
        else if (argv[i][0] != '-' && !in) in = argv[i];
        else {
            fprintf(stderr, "lmc convert-checkpoint: unexpected argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "usage: lmc convert-checkpoint CKPT_DIR -o OUT_DIR [--step N]\n");
        return 2;
    }
    if (mkdir(out, 0755) && errno != EEXIST) {
        fprintf(stderr, "lmc convert-checkpoint: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    char path[4096], from[4096];
    lmc_err err = {0};
    if (!lmc_path_join(path, sizeof path, out, "model.safetensors")) return 2;
    if (lmc_zero_export_safetensors_step(in, step, path, &err)) return cli_fail("convert-checkpoint", &err);
    DIR *d = opendir(in);
    struct dirent *e;
    int copied = 0;
    while (d && (e = readdir(d))) {
        if (!hf_side_file(e->d_name)) continue;
        if (!lmc_path_join(from, sizeof from, in, e->d_name) || !lmc_path_join(path, sizeof path, out, e->d_name) ||
            lmc_file_copy(from, path, &err)) {
            fprintf(stderr, "lmc convert-checkpoint: cannot copy %s to %s%s%s\n", e->d_name, out, err.msg[0] ? ": " : "",
                    err.msg);
            closedir(d);
            return 1;
        }
        copied++;
    }
    if (d) closedir(d);
    fprintf(stderr, "lmc convert-checkpoint: %s/model.safetensors written, %d other file%s copied\n", out, copied,
            copied == 1 ? "" : "s");
    return 0;
}
