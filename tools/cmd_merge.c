/* cmd_merge.c — `lmc merge -m BASE --lora DIR[:SCALE] ... -o OUT`: a plain
 * Hugging Face folder with W + scale * B A folded into every adapted
 * weight (Conv1D weights get the transpose), each tensor in its dtype,
 * the other files copied; written to OUT.tmp-PID and renamed at the end. */
#include "cli.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "model/arch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *copied[] = {"config.json", "generation_config.json", "tokenizer.json",
                               "tokenizer_config.json", "special_tokens_map.json",
                               "chat_template.jinja", "vocab.json", "merges.txt"};

static int copy_file(const char *src, const char *dst) {
    lmc_err err = {0};
    return lmc_file_copy(src, dst, &err) ? cli_fail("merge", &err) : 0;
}

static void remove_tmp(const char *tmp) {
    char p[4400];
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, copied[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    unlink(p);
    rmdir(tmp);
}

int cmd_merge(int argc, char **argv) {
    struct cli_common c = {0};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) out = argv[++i];
        else {
            fprintf(stderr, "lmc merge: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!c.model_dir || !out || !c.n_lora) {
        fprintf(stderr, "usage: lmc merge -m BASE --lora DIR[:SCALE] [--lora ...] -o OUT\n");
        return 2;
    }
    lmc_err err = {0};
    struct lmc_config cfg;
    if (lmc_config_load(&cfg, c.model_dir, &err)) return cli_fail("merge", &err);
    struct lmc_lora lo[CLI_MAX_LORA];
    int n_lo = 0, rc = 1;
    struct lmc_st st;
    memset(&st, 0, sizeof st);
    struct lmc_st_write_tensor *t = NULL;
    void **bufs = NULL;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    for (; n_lo < c.n_lora; n_lo++)
        if (lmc_lora_load(&lo[n_lo], c.lora_dir[n_lo], &cfg, &err)) {
            cli_fail("--lora", &err);
            goto done;
        }
    if (lmc_st_open_dir(&st, c.model_dir, &err)) {
        cli_fail("merge", &err);
        goto done;
    }
    t = calloc((size_t)st.n_tensors + 1, sizeof *t);
    bufs = calloc((size_t)st.n_tensors + 1, sizeof *bufs);
    if (!t || !bufs) goto oom;
    const char *ap = lmc_arch_of(&cfg)->alt_prefix;
    int merged = 0;
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const struct lmc_st_tensor *s = &st.tensors[i];
        t[i] = (struct lmc_st_write_tensor){s->name, s->dtype, s->ndim, {0}, s->data};
        memcpy(t[i].shape, s->shape, sizeof s->shape);
        for (int k = 0; k < n_lo; k++)
            for (int j = 0; j < lo[k].n_mods; j++) {
                const struct lmc_lora_module *m = &lo[k].mods[j];
                char name[200];
                snprintf(name, sizeof name, "%s.weight", m->module);
                const char *nm = name;
                if (strcmp(nm, s->name) != 0 && ap && !strncmp(nm, ap, strlen(ap))) nm += strlen(ap);
                if (strcmp(nm, s->name) != 0) continue;
                if (s->dtype != LMC_DTYPE_F32 && s->dtype != LMC_DTYPE_BF16 && s->dtype != LMC_DTYPE_F16) {
                    fprintf(stderr, "lmc: merge: tensor '%s' has dtype %s; only F32/BF16/F16 merge\n",
                            s->name, lmc_dtype_name(s->dtype));
                    goto done;
                }
                if (!bufs[i]) {
                    if (!(bufs[i] = malloc(s->nbytes))) goto oom;
                    memcpy(bufs[i], s->data, s->nbytes);
                    t[i].data = bufs[i];
                }
                lmc_lora_merge_into(m, lo[k].cfg.r, lmc_lora_scale(&lo[k].cfg) * c.lora_mul[k], bufs[i],
                                    s->dtype);
                merged++;
            }
    }
    int want = 0;
    for (int k = 0; k < n_lo; k++) want += lo[k].n_mods;
    if (merged != want) {
        fprintf(stderr, "lmc: merge: %d of %d adapted weights found in %s\n", merged, want, c.model_dir);
        goto done;
    }
    remove_tmp(tmp);
    if (mkdir(tmp, 0777) != 0) {
        fprintf(stderr, "lmc: merge: cannot create %s: %s\n", tmp, strerror(errno));
        goto done;
    }
    char path[4400];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    static const char *meta[] = {"format", "pt"};
    if (lmc_st_write(path, t, st.n_tensors, meta, 1, &err)) {
        cli_fail("merge", &err);
        goto done;
    }
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        char src[4400];
        snprintf(src, sizeof src, "%s/%s", c.model_dir, copied[i]);
        snprintf(path, sizeof path, "%s/%s", tmp, copied[i]);
        if (lmc_file_exists(src) && copy_file(src, path)) goto done;
    }
    if (rename(tmp, out) != 0) {
        fprintf(stderr, "lmc: merge: cannot rename %s to %s: %s (an existing folder is not replaced)\n",
                tmp, out, strerror(errno));
        goto done;
    }
    fprintf(stderr, "lmc: merged %d adapted weights into %s\n", merged, out);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "lmc: merge: out of memory\n");
done:
    if (rc) remove_tmp(tmp);
    for (int64_t i = 0; bufs && i < st.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(t);
    lmc_st_free(&st);
    for (int k = 0; k < n_lo; k++) lmc_lora_free(&lo[k]);
    return rc;
}
