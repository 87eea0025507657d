/* cli.c — shared option parsing and model opening for lmc commands. */
#include "cli.h"
#include "core/core.h"
#include "io/gguf.h"
#include "ops/backend_cuda.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_f64(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

int cli_fail(const char *what, const lmc_err *err) {
    fprintf(stderr, "lmc: %s: %s\n", what, err->msg[0] ? err->msg : lmc_status_str(err->status));
    return 1;
}

int cli_common_arg(struct cli_common *c, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int64_t n;
    if (!strcmp(a, "--json")) {
        c->json = true;
        return 1;
    }
    bool takes = !strcmp(a, "--lora") || !strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--threads") ||
                 !strcmp(a, "-t") || !strcmp(a, "--ctx") || !strcmp(a, "--dtype") ||
                 !strcmp(a, "--device");
    if (!takes) return 0;
    if (!v) {
        fprintf(stderr, "lmc: option %s needs a value\n", a);
        return -1;
    }
    (*i)++;
    if (!strcmp(a, "--lora")) {
        if (!cli_lora_arg(c, v)) return -1;
    } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        c->model_dir = v;
    } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
        if (!cli_parse_i64(v, 1, 1024, &n)) {
            fprintf(stderr, "lmc: --threads expects an integer in 1..1024, got '%s'\n", v);
            return -1;
        }
        c->threads = (int)n;
    } else if (!strcmp(a, "--ctx")) {
        if (!cli_parse_i64(v, 1, 1 << 24, &n)) {
            fprintf(stderr, "lmc: --ctx expects an integer in 1..16777216, got '%s'\n", v);
            return -1;
        }
        c->ctx = n;
    } else if (!strcmp(a, "--dtype")) {
        if (!strcmp(v, "fp32") || !strcmp(v, "f32")) c->wdtype = LMC_WDTYPE_F32;
        else if (!strcmp(v, "bf16")) c->wdtype = LMC_WDTYPE_BF16;
        else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) c->wdtype = LMC_WDTYPE_F16;
        else if (!strcmp(v, "auto")) c->wdtype = LMC_WDTYPE_AUTO;
        else {
            fprintf(stderr, "lmc: --dtype expects fp32, bf16, f16 or auto, got '%s'\n", v);
            return -1;
        }
    } else if (!strcmp(a, "--device")) {
        if (strcmp(v, "cpu") != 0 && strcmp(v, "cuda") != 0) {
            fprintf(stderr, "lmc: --device expects cpu or cuda, got '%s'\n", v);
            return -1;
        }
        c->device = v;
    }
    return 1;
}

bool cli_lora_arg(struct cli_common *c, const char *v) {
    if (c->n_lora == CLI_MAX_LORA) {
        fprintf(stderr, "lmc: at most %d --lora adapters\n", CLI_MAX_LORA);
        return false;
    }
    double mul = 1.0;
    size_t n = strlen(v);
    const char *colon = strrchr(v, ':');
    if (colon && colon[1]) {
        char *end;
        errno = 0;
        double m = strtod(colon + 1, &end);
        if (!*end && !errno) { /* DIR:SCALE; otherwise the colon is part of DIR */
            if (!isfinite(m) || fabs(m) > 1e6) {
                fprintf(stderr, "lmc: --lora %s: bad scale\n", v);
                return false;
            }
            mul = m;
            n = (size_t)(colon - v);
        }
    }
    if (n == 0 || n >= sizeof c->lora_dir[0]) {
        fprintf(stderr, "lmc: --lora '%s': expected DIR[:SCALE]\n", v);
        return false;
    }
    memcpy(c->lora_dir[c->n_lora], v, n);
    c->lora_dir[c->n_lora][n] = 0;
    c->lora_mul[c->n_lora++] = mul;
    return true;
}

/* Whether the machine shows an NVIDIA GPU, judged from the file system
 * alone, so that the default device choice loads no CUDA library where
 * there is none (lmc_cuda_device_count opens liblmc_cuda.so and with it
 * the CUDA runtime, cuBLASLt and NCCL: ~200 MB mapped, and a slower
 * start). The driver makes a device node per GPU (/dev/nvidiaN; a
 * container may show only some of them, not always nvidia0) and lists its
 * GPUs in /proc/driver/nvidia/gpus/; WSL 2 has /dev/dxg instead. A false
 * positive only costs the full probe that follows. */
static bool cli_gpu_visible(void) {
    static const char *const dirs[] = {"/proc/driver/nvidia/gpus", "/dev"};
    if (access("/dev/dxg", F_OK) == 0) return true;
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir) continue;
        bool found = false;
        for (struct dirent *e; !found && (e = readdir(dir));) {
            const char *n = e->d_name;
            if (d == 0) found = n[0] != '.'; /* a GPU's PCI address */
            else if (!strncmp(n, "nvidia", 6) && n[6] >= '0' && n[6] <= '9') found = true;
        }
        closedir(dir);
        if (found) return true;
    }
    return false;
}

/* Loads and binds the --lora adapters into the loaded model. */
static int open_lora(struct cli_model *cm, const struct cli_common *c) {
    lmc_err err = {0};
    const struct lmc_lora *los[CLI_MAX_LORA];
    for (int i = 0; i < c->n_lora; i++) {
        if (lmc_lora_load(&cm->lora[i], c->lora_dir[i], &cm->model.cfg, &err)) return cli_fail("--lora", &err);
        cm->n_lora++;
        los[i] = &cm->lora[i];
    }
    if (c->n_lora) {
        if (lmc_lora_bind(&cm->lora_bind, &cm->model.w, &cm->model.cfg, los, c->lora_mul, c->n_lora,
                          &cm->be, &err))
            return cli_fail("--lora", &err);
        cm->have_bind = true;
    }
    return 0;
}

int cli_open(struct cli_model *cm, const struct cli_common *c, bool need_model) {
    memset(cm, 0, sizeof *cm);
    lmc_err err = {0};
    if (!c->model_dir) {
        fprintf(stderr, "lmc: no model folder given (-m DIR)\n");
        return 1;
    }
    if (lmc_gguf_tokenizer_load(&cm->tok, c->model_dir, &err)) return cli_fail("tokenizer", &err);
    if (!need_model) return 0;
    /* --device cuda, or by default the GPU when there is one (falling back
     * to the CPU when the model does not fit in its memory); without one
     * no CUDA library is loaded */
    bool want_cuda = c->device ? !strcmp(c->device, "cuda") : cli_gpu_visible() && lmc_cuda_device_count() > 0;
    if (want_cuda) {
        if (lmc_backend_cuda_init(&cm->be, 0, &err)) {
            if (c->device) {
                cli_close(cm);
                return cli_fail("backend", &err);
            }
            want_cuda = false;
        }
    }
    if (!want_cuda && lmc_backend_cpu_init(&cm->be, c->threads, &err)) {
        cli_close(cm);
        return cli_fail("backend", &err);
    }
    cm->have_be = true;
    struct lmc_model_opts mo = {.wdtype = c->wdtype, .be = &cm->be};
    if (lmc_model_load(&cm->model, c->model_dir, &mo, &err)) {
        if (!(want_cuda && !c->device && err.status == LMC_ERR_OOM)) {
            cli_close(cm);
            return cli_fail("model", &err);
        }
        lmc_backend_cuda_free(&cm->be); /* too big for the GPU: the CPU it is */
        cm->have_be = false;
        if (lmc_backend_cpu_init(&cm->be, c->threads, &err)) {
            cli_close(cm);
            return cli_fail("backend", &err);
        }
        cm->have_be = true;
        if (lmc_model_load(&cm->model, c->model_dir, &mo, &err)) {
            cli_close(cm);
            return cli_fail("model", &err);
        }
    }
    cm->have_model = true;
    /* --dtype fp32 on the GPU: the fp32 checking mode, attention included
     * (F32 files are otherwise used as bf16 there) */
    if (!strcmp(cm->be.name, "cuda") && c->wdtype == LMC_WDTYPE_F32)
        lmc_backend_cuda_set_fp32_attention(&cm->be, true);
    if (open_lora(cm, c)) {
        cli_close(cm);
        return 1;
    }
    return 0;
}

void cli_close(struct cli_model *cm) {
    if (cm->have_bind) lmc_lora_unbind(&cm->lora_bind, &cm->model.w, &cm->model.cfg);
    for (int i = 0; i < cm->n_lora; i++) lmc_lora_free(&cm->lora[i]);
    if (cm->have_model) lmc_model_free(&cm->model);
    if (cm->have_be) {
        if (!strcmp(cm->be.name, "cuda")) lmc_backend_cuda_free(&cm->be);
        else lmc_backend_cpu_free(&cm->be);
    }
    if (cm->tok) lmc_tokenizer_free(cm->tok);
    memset(cm, 0, sizeof *cm);
}

int64_t cli_ctx(const struct cli_common *c, const struct lmc_model *m) {
    if (c->ctx > 0) return c->ctx;
    int64_t n = m->cfg.max_position_embeddings;
    return n > 0 && n < 4096 ? n : 4096;
}

void cli_json_str(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (ch < 0x20) printf("\\u%04x", ch);
            else putchar(ch);
        }
    }
    putchar('"');
}
