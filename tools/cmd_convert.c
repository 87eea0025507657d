/* cmd_convert.c — `lmc convert`: rewrites a Hugging Face model folder's
 * weights in another float dtype (bf16, f16 or f32), e.g. to ship an fp32
 * training checkpoint as a half-size bf16 model; with `-o FILE.gguf`, writes
 * a GGUF file instead (cmd_convert_gguf.c; also q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k). Floating tensors (F32, F16,
 * BF16, F64) are converted with round-to-nearest-even; others are copied.
 * config.json gets the new torch_dtype; the tokenizer and generation files
 * are copied. The output is one model.safetensors (shards are merged). */
#include "cli.h"
#include "convert_gguf.h"
#include "quantize.h"
#include "core/core.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void) {
    fprintf(stderr, "usage: lmc convert -m IN_DIR -o OUT_DIR --dtype bf16|f16|f32\n"
                    "       lmc convert -m IN_DIR -o FILE.gguf --dtype f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k\n"
                    "       lmc convert -m FILE.gguf -o OUT_DIR --dtype f32|f16|bf16\n");
}

static bool is_float(enum lmc_dtype t) {
    return t == LMC_DTYPE_F32 || t == LMC_DTYPE_F16 || t == LMC_DTYPE_BF16 || t == LMC_DTYPE_F64;
}

/* Element i of a float tensor as float (data may be unaligned). */
static float get_f(const void *data, enum lmc_dtype t, int64_t i) {
    const unsigned char *p = data;
    if (t == LMC_DTYPE_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    if (t == LMC_DTYPE_F64) {
        double d;
        memcpy(&d, p + 8 * i, 8);
        return (float)d;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
}

static void put_f(void *out, enum lmc_dtype t, int64_t i, float f) {
    if (t == LMC_DTYPE_F32) {
        ((float *)out)[i] = f;
    } else {
        ((uint16_t *)out)[i] = t == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(f) : lmc_f32_to_f16(f);
    }
}

static lmc_status write_config(const char *in_dir, const char *out_dir, const char *torch_dtype, lmc_err *err) {
    char src[4096], dst[4096];
    if (!lmc_path_join(src, sizeof src, in_dir, "config.json") ||
        !lmc_path_join(dst, sizeof dst, out_dir, "config.json"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", out_dir);
    char *text = NULL;
    lmc_status s = lmc_file_read(src, 1 << 24, &text, NULL, err);
    if (s) return s;
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected a JSON object", src);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(o, "torch_dtype");
    cJSON_AddStringToObject(o, "torch_dtype", torch_dtype);
    char *out = cJSON_Print(o);
    cJSON_Delete(o);
    if (!out) return lmc_err_set(err, LMC_ERR_OOM, "config.json: out of memory");
    FILE *f = fopen(dst, "wb");
    bool ok = f && fputs(out, f) >= 0 && fputc('\n', f) != EOF;
    if (f) ok = (fclose(f) == 0) && ok;
    free(out);
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", dst);
}

static lmc_status copy_if_present(const char *in_dir, const char *out_dir, const char *name, lmc_err *err) {
    char src[4096], dst[4096];
    if (!lmc_path_join(src, sizeof src, in_dir, name) || !lmc_path_join(dst, sizeof dst, out_dir, name))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", out_dir);
    return lmc_file_exists(src) ? lmc_file_copy(src, dst, err) : LMC_OK;
}

/* Converts in_dir's weights into out_dir (created; must not be in_dir). */
static lmc_status convert(const char *in_dir, const char *out_dir, enum lmc_dtype to, int64_t *n_conv,
                          size_t *bytes, lmc_err *err) {
    struct stat a, b;
    if (stat(in_dir, &a) == 0 && stat(out_dir, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: the output folder must differ from the input", out_dir);
    struct lmc_st st;
    lmc_status s = lmc_st_open_dir(&st, in_dir, err);
    if (s) return s;
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create folder: %s", out_dir, strerror(errno));
    }
    struct lmc_st_write_tensor *t = calloc((size_t)st.n_tensors + 1, sizeof *t);
    void **bufs = calloc((size_t)st.n_tensors + 1, sizeof *bufs);
    *n_conv = 0;
    *bytes = 0;
    if (!t || !bufs) {
        s = lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory");
        goto out;
    }
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const struct lmc_st_tensor *x = &st.tensors[i];
        t[i].name = x->name;
        t[i].ndim = x->ndim;
        memcpy(t[i].shape, x->shape, sizeof t[i].shape);
        if (!is_float(x->dtype) || x->dtype == to) {
            t[i].dtype = x->dtype;
            t[i].data = x->data;
            *bytes += x->nbytes;
            continue;
        }
        size_t nb = (size_t)x->numel * (size_t)lmc_dtype_size(to);
        if (!(bufs[i] = malloc(nb ? nb : 1))) {
            s = lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", x->name);
            goto out;
        }
        for (int64_t k = 0; k < x->numel; k++) put_f(bufs[i], to, k, get_f(x->data, x->dtype, k));
        t[i].dtype = to;
        t[i].data = bufs[i];
        *bytes += nb;
        (*n_conv)++;
    }
    char path[4096];
    const char *meta[] = {"format", "pt"};
    if (!lmc_path_join(path, sizeof path, out_dir, "model.safetensors"))
        s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", out_dir);
    else s = lmc_st_write(path, t, st.n_tensors, meta, 1, err);
    if (s) goto out;
    const char *torch_dtype = to == LMC_DTYPE_BF16 ? "bfloat16" : to == LMC_DTYPE_F16 ? "float16" : "float32";
    if ((s = write_config(in_dir, out_dir, torch_dtype, err))) goto out;
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                  "special_tokens_map.json", "tokenizer.model"};
    for (size_t k = 0; k < sizeof files / sizeof *files && !s; k++) s = copy_if_present(in_dir, out_dir, files[k], err);
out:
    for (int64_t i = 0; bufs && i < st.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(t);
    lmc_st_free(&st);
    return s;
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *dt = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!v) {
            fprintf(stderr, "lmc convert: unknown option or missing value: %s\n", a);
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) in = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--dtype")) dt = v;
        else {
            fprintf(stderr, "lmc convert: unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    if (!in || !out || !dt) {
        usage();
        return 2;
    }
    size_t ol = strlen(out);
    if (ol > 5 && !strcmp(out + ol - 5, ".gguf")) {
        int q = lmc_ggml_type_parse(!strcmp(dt, "fp16") ? "f16" : !strcmp(dt, "fp32") ? "f32" : dt);
        bool known = q == LMC_GGML_F32 || q == LMC_GGML_F16 || q == LMC_GGML_BF16 || q == LMC_GGML_Q8_0 ||
                     q == LMC_GGML_Q4_0 || q == LMC_GGML_Q4_1 || q == LMC_GGML_Q5_0 || q == LMC_GGML_Q5_1 ||
                     q == LMC_GGML_Q4_K || q == LMC_GGML_Q5_K || q == LMC_GGML_Q6_K;
        if (!known) {
            fprintf(stderr, "lmc convert: --dtype '%s': expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, "
                            "q5_k or q6_k for a GGUF file\n", dt);
            return 2;
        }
        lmc_err err = {0};
        int64_t nt;
        int nf;
        if (lmc_convert_to_gguf(in, out, q, &nt, &nf, &err)) return cli_fail("convert", &err);
        fprintf(stderr, "lmc convert: %s -> %s: %lld tensors as %s (%d matrices kept F16: rows not whole blocks)\n", in,
                out, (long long)nt, lmc_ggml_type_name(q), nf);
        return 0;
    }
    enum lmc_dtype to;
    if (!strcmp(dt, "bf16") || !strcmp(dt, "bfloat16")) to = LMC_DTYPE_BF16;
    else if (!strcmp(dt, "f16") || !strcmp(dt, "fp16") || !strcmp(dt, "float16")) to = LMC_DTYPE_F16;
    else if (!strcmp(dt, "f32") || !strcmp(dt, "fp32") || !strcmp(dt, "float32")) to = LMC_DTYPE_F32;
    else {
        fprintf(stderr, "lmc convert: --dtype '%s': expected bf16, f16 or f32\n", dt);
        return 2;
    }
    lmc_err err = {0};
    size_t il = strlen(in);
    if (il > 5 && !strcmp(in + il - 5, ".gguf")) { /* a GGUF file in: a Hugging Face folder out */
        int64_t nt;
        if (lmc_convert_from_gguf(in, out, to, &nt, &err)) return cli_fail("convert", &err);
        fprintf(stderr, "lmc convert: %s -> %s: %lld tensors as %s\n", in, out, (long long)nt, lmc_dtype_name(to));
        return 0;
    }
    char cfg[4096];
    char *ctext = NULL;
    if (lmc_path_join(cfg, sizeof cfg, in, "config.json") && !lmc_file_read(cfg, 1 << 24, &ctext, NULL, &err) &&
        strstr(ctext, "\"quantization_config\"")) { /* a quantized folder: dequantize */
        free(ctext);
        int64_t nd;
        if (lmc_dequantize_folder(in, out, to, &nd, &err)) return cli_fail("convert", &err);
        fprintf(stderr, "lmc convert: %s -> %s: %lld quantized linears dequantized to %s\n", in, out, (long long)nd,
                lmc_dtype_name(to));
        return 0;
    }
    free(ctext);
    memset(&err, 0, sizeof err);
    int64_t n_conv = 0;
    size_t bytes = 0;
    if (convert(in, out, to, &n_conv, &bytes, &err)) return cli_fail("convert", &err);
    fprintf(stderr, "lmc convert: %s -> %s: %lld tensors converted to %s, %.1f MB of weights\n", in, out,
            (long long)n_conv, lmc_dtype_name(to), (double)bytes / 1e6);
    return 0;
}
