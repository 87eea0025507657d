/* cmd_quantize.c — `lmc quantize -m DIR -o OUT --method rtn|gptq|nf4|ternary`:
 * writes a new Hugging Face folder in the Python ecosystem's layout for the
 * method (GPTQ v1 — or v2 with --v2 — for rtn and gptq, bitsandbytes NF4
 * keys, BitNet packed ternary), with quantization_config in config.json;
 * every linear weight of the transformer blocks is quantized (GPT-2's
 * Conv1D weights as their (out, in) transpose, as AutoGPTQ and
 * bitsandbytes do), embeddings, norms, biases and lm_head are copied. Also
 * the reverse used by `lmc convert`: a quantized folder dequantized to
 * float (lmc_dequantize_folder). */
#include "cli.h"
#include "convert_gguf.h"
#include "core/core.h"
#include "core/dtype.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "quant/hf_quant.h"
#include "quantize.h"
#include "quantize_calib.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct qopts {
    const char *method;
    int bits;
    int64_t group;
    bool sym, act_order, v2;
    bool clip_search;       /* --clip-search: group ranges searched for the smallest squared error (rtn, gptq) */
    bool head;              /* --head: lm_head too (round to nearest, groups as the blocks') */
    bool true_seq;          /* --true-sequential (gptq): calibration per stage of a layer (q/k/v, o, gate/up, down) */
    const char *skip;       /* comma-separated name fragments */
    const char *calib;
    int64_t calib_tokens;
    int threads;
};

static void usage(void) {
    fprintf(stderr,
            "usage: lmc quantize -m DIR -o OUT --method rtn|gptq|nf4|ternary [--bits 2|3|4|8] [--group 32|64|128|-1]\n"
            "                    [--sym|--asym] [--act-order] [--v2] [--skip lm_head,embed] [--head] [--clip-search]\n"
            "                    [--calib FILE --calib-tokens N (2048)] [--threads N]   (gptq: calibration text)\n"
            "                    [--true-sequential]   (gptq: calibrate per stage of a layer: q/k/v, o, gate/up, down)\n");
}

/* Whether tensor `name` is a block linear's weight to quantize; *conv1d
 * for GPT-2's (in, out) weights. */
static bool is_head(const char *name, const struct lmc_st_tensor *t) {
    size_t n = strlen(name);
    return t->ndim == 2 && n >= 14 && !strcmp(name + n - 14, "lm_head.weight") && (n == 14 || name[n - 15] == '.');
}

static bool is_linear(const char *name, const struct lmc_st_tensor *t, const char *skip, bool head, bool *conv1d) {
    *conv1d = false;
    size_t n = strlen(name);
    if (head && is_head(name, t)) return true;
    if (t->ndim != 2 || n < 7 || strcmp(name + n - 7, ".weight")) return false;
    if (!strstr(name, ".layers.") && !strstr(name, ".h.")) return false;
    if (strstr(name, "norm") || strstr(name, ".ln_")) return false;
    /* mixture-of-experts routers and the shared expert's gate stay in float
     * (a few rows that decide the routing; experts are quantized one by one) */
    static const char *const routers[] = {".mlp.gate.weight", ".block_sparse_moe.gate.weight",
                                          ".shared_expert_gate.weight"};
    for (size_t i = 0; i < sizeof routers / sizeof *routers; i++) {
        size_t k = strlen(routers[i]);
        if (n > k && !strcmp(name + n - k, routers[i])) return false;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", skip ? skip : "");
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (*tok && strstr(name, tok)) return false;
    *conv1d = strstr(name, ".attn.c_attn.") || strstr(name, ".attn.c_proj.") || strstr(name, ".mlp.c_fc.") ||
              strstr(name, ".mlp.c_proj.");
    return true;
}

static lmc_status as_float(const struct lmc_st_tensor *t, bool transpose, float **out, lmc_err *err) {
    int64_t r = t->shape[0], c = t->shape[1];
    float *f = malloc((size_t)(r * c) * sizeof *f), *g = NULL;
    if (!f) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", t->name);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < r * c; i++) {
        if (t->dtype == LMC_DTYPE_F32) memcpy(&f[i], p + 4 * i, 4);
        else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            f[i] = t->dtype == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
        }
    }
    if (transpose) {
        if (!(g = malloc((size_t)(r * c) * sizeof *g))) {
            free(f);
            return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", t->name);
        }
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++) g[j * r + i] = f[i * c + j];
        free(f);
        f = g;
    }
    *out = f;
    return LMC_OK;
}

static lmc_status write_config(const char *in_dir, const char *out_dir, cJSON *qcfg, lmc_err *err) {
    char src[4096], dst[4096];
    lmc_path_join(src, sizeof src, in_dir, "config.json");
    lmc_path_join(dst, sizeof dst, out_dir, "config.json");
    char *text = NULL;
    lmc_status s = lmc_file_read(src, 1 << 24, &text, NULL, err);
    if (s) {
        cJSON_Delete(qcfg);
        return s;
    }
    cJSON *o = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        cJSON_Delete(qcfg);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expected a JSON object", src);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(o, "quantization_config");
    if (qcfg) cJSON_AddItemToObject(o, "quantization_config", qcfg);
    char *out = cJSON_Print(o);
    cJSON_Delete(o);
    FILE *f = out ? fopen(dst, "wb") : NULL;
    bool ok = f && fputs(out, f) >= 0 && fputc('\n', f) != EOF;
    if (f) ok = (fclose(f) == 0) && ok;
    free(out);
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", dst);
}

static lmc_status copy_files(const char *in_dir, const char *out_dir, lmc_err *err) {
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                  "special_tokens_map.json", "tokenizer.model"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char src[4096], dst[4096];
        lmc_path_join(src, sizeof src, in_dir, files[i]);
        lmc_path_join(dst, sizeof dst, out_dir, files[i]);
        lmc_status s = lmc_file_exists(src) ? lmc_file_copy(src, dst, err) : LMC_OK;
        if (s) return s;
    }
    return LMC_OK;
}

static cJSON *quant_config(const struct qopts *o) {
    cJSON *q = cJSON_CreateObject();
    if (!strcmp(o->method, "nf4")) {
        cJSON_AddStringToObject(q, "quant_method", "bitsandbytes");
        cJSON_AddBoolToObject(q, "load_in_4bit", 1);
        cJSON_AddBoolToObject(q, "load_in_8bit", 0);
        cJSON_AddStringToObject(q, "bnb_4bit_quant_type", "nf4");
        cJSON_AddBoolToObject(q, "bnb_4bit_use_double_quant", 1);
        cJSON_AddStringToObject(q, "bnb_4bit_compute_dtype", "float32");
        cJSON_AddStringToObject(q, "bnb_4bit_quant_storage", "uint8");
        cJSON *skip = cJSON_AddArrayToObject(q, "llm_int8_skip_modules");
        cJSON_AddItemToArray(skip, cJSON_CreateString("lm_head"));
    } else if (!strcmp(o->method, "ternary")) {
        cJSON_AddStringToObject(q, "quant_method", "bitnet");
        cJSON_AddStringToObject(q, "linear_class", "bitlinear");
        cJSON_AddStringToObject(q, "quantization_mode", "offline");
        cJSON *skip = cJSON_AddArrayToObject(q, "modules_to_not_convert");
        cJSON_AddItemToArray(skip, cJSON_CreateString("lm_head"));
    } else {
        cJSON_AddStringToObject(q, "quant_method", "gptq");
        cJSON_AddNumberToObject(q, "bits", o->bits);
        cJSON_AddNumberToObject(q, "group_size", (double)o->group);
        cJSON_AddBoolToObject(q, "desc_act", o->act_order);
        cJSON_AddBoolToObject(q, "sym", o->sym);
        cJSON_AddBoolToObject(q, "static_groups", o->act_order);
        cJSON_AddBoolToObject(q, "true_sequential", o->true_seq);
        cJSON_AddNumberToObject(q, "damp_percent", 0.01);
        cJSON_AddStringToObject(q, "checkpoint_format", o->v2 ? "gptq_v2" : "gptq");
        cJSON_AddBoolToObject(q, "lm_head", o->head); /* GPTQModel's key: lm_head quantized too */
        cJSON_AddStringToObject(q, "quantizer", !strcmp(o->method, "rtn") ? "lmc rtn" : "lmc gptq");
    }
    return q;
}

static lmc_status quantize(const char *in, const char *out, const struct qopts *o, int64_t *n_q, size_t *bytes,
                           lmc_err *err) {
    struct lmc_st st;
    lmc_status s = lmc_st_open_dir(&st, in, err);
    if (s) return s;
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create folder: %s", out, strerror(errno));
    }
    struct lmc_st_write_tensor *wt = calloc((size_t)st.n_tensors * 8 + 1, sizeof *wt);
    struct lmc_qtensors *qt = calloc((size_t)st.n_tensors + 1, sizeof *qt);
    int64_t nw = 0;
    struct lmc_gptq_job *jobs = NULL;
    struct lmc_qgroups *gq = NULL;
    float **gw = NULL;
    int n_jobs = 0;
    *n_q = 0;
    *bytes = 0;
    if (!wt || !qt) {
        s = lmc_err_set(err, LMC_ERR_OOM, "quantize: out of memory");
        goto done;
    }
    /* gptq: every linear quantized first, layer by layer through the model */
    if (!strcmp(o->method, "gptq")) {
        jobs = calloc((size_t)st.n_tensors + 1, sizeof *jobs);
        gq = calloc((size_t)st.n_tensors + 1, sizeof *gq);
        gw = calloc((size_t)st.n_tensors + 1, sizeof *gw);
        if (!jobs || !gq || !gw) s = lmc_err_set(err, LMC_ERR_OOM, "quantize: out of memory");
        for (int64_t i = 0; i < st.n_tensors && !s; i++) {
            const struct lmc_st_tensor *t = &st.tensors[i];
            bool conv1d;
            if (!is_linear(t->name, t, o->skip, false, &conv1d)) continue; /* the head: rtn below */
            if ((s = as_float(t, conv1d, &gw[n_jobs], err))) break;
            jobs[n_jobs] = (struct lmc_gptq_job){t->name, gw[n_jobs], conv1d ? t->shape[1] : t->shape[0],
                                                 conv1d ? t->shape[0] : t->shape[1]};
            n_jobs++;
        }
        struct lmc_gptq_opts go = {o->bits, o->group, o->sym, o->act_order, true, 0.01, 128, o->clip_search};
        if (!s) s = lmc_gptq_calibrate(in, o->calib, o->calib_tokens, o->threads, o->true_seq, &go, jobs, n_jobs, gq, err);
    }
    for (int64_t i = 0; i < st.n_tensors && !s; i++) {
        const struct lmc_st_tensor *t = &st.tensors[i];
        bool conv1d;
        if (!is_linear(t->name, t, o->skip, o->head, &conv1d) ||
            (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16)) {
            wt[nw++] = (struct lmc_st_write_tensor){t->name, t->dtype, t->ndim, {0}, t->data};
            memcpy(wt[nw - 1].shape, t->shape, sizeof t->shape);
            *bytes += t->nbytes;
            continue;
        }
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(t->name) - 7), t->name);
        float *w = NULL;
        if ((s = as_float(t, conv1d, &w, err))) break;
        int64_t n = conv1d ? t->shape[1] : t->shape[0], k = conv1d ? t->shape[0] : t->shape[1];
        if (!strcmp(o->method, "nf4")) {
            struct lmc_nf4 q;
            /* bitsandbytes' blocks of 64 run over the flattened weight (they may span rows) */
            if (!(s = lmc_nf4_quantize(w, n * k, &q, err))) {
                s = lmc_qtensors_nf4(&q, n, k, "float32", prefix, &qt[i], err);
                lmc_nf4_free(&q);
            }
        } else if (!strcmp(o->method, "ternary")) {
            int8_t *q = malloc((size_t)(n * k));
            if (!q) s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", t->name);
            else {
                float sc = lmc_ternary_quantize(w, n * k, q);
                s = lmc_qtensors_ternary(q, sc, n, k, prefix, &qt[i], err);
                free(q);
            }
        } else {
            struct lmc_qgroups g;
            int64_t gs = o->group == -1 ? k : o->group;
            if (!strcmp(o->method, "rtn") || is_head(t->name, t)) { /* gptq calibrates the blocks only */
                s = (o->clip_search ? lmc_quant_rtn_search : lmc_quant_rtn)(w, n, k, o->bits, gs, o->sym, &g, err);
            } else {
                int j = 0;
                while (j < n_jobs && strcmp(jobs[j].name, t->name)) j++;
                if (j == n_jobs || !gq[j].q) s = lmc_err_set(err, LMC_ERR_INTERNAL, "gptq: %s was not quantized", t->name);
                else {
                    g = gq[j];
                    memset(&gq[j], 0, sizeof gq[j]);
                }
            }
            if (!s) {
                s = lmc_qtensors_gptq(&g, o->v2, prefix, &qt[i], err);
                lmc_qgroups_free(&g);
            }
        }
        free(w);
        if (s) break;
        (*n_q)++;
        for (int j = 0; j < qt[i].n; j++) {
            wt[nw++] = qt[i].t[j];
            int64_t ne = qt[i].t[j].shape[0] * (qt[i].t[j].ndim == 2 ? qt[i].t[j].shape[1] : 1);
            *bytes += (size_t)ne * (size_t)lmc_dtype_size(qt[i].t[j].dtype);
        }
    }
    if (!s) {
        char path[4096];
        const char *meta[] = {"format", "pt"};
        lmc_path_join(path, sizeof path, out, "model.safetensors");
        s = lmc_st_write(path, wt, nw, meta, 1, err);
    }
    if (!s) s = write_config(in, out, quant_config(o), err);
    if (!s) s = copy_files(in, out, err);
done:
    for (int j = 0; j < n_jobs; j++) {
        lmc_qgroups_free(&gq[j]);
        free(gw[j]);
    }
    free(jobs);
    free(gq);
    free(gw);
    for (int64_t i = 0; qt && i < st.n_tensors; i++) lmc_qtensors_free(&qt[i]);
    free(qt);
    free(wt);
    lmc_st_free(&st);
    return s;
}

lmc_status lmc_dequantize_folder(const char *in, const char *out, int dtype, int64_t *n_deq, lmc_err *err) {
    char path[4096];
    lmc_path_join(path, sizeof path, in, "config.json");
    char *text = NULL;
    size_t len = 0;
    lmc_status s = lmc_file_read(path, 1 << 24, &text, &len, err);
    if (s) return s;
    struct lmc_quant_config qc;
    s = lmc_quant_config_parse(text, len, path, &qc, err);
    free(text);
    if (s) return s;
    struct lmc_st st;
    if ((s = lmc_st_open_dir(&st, in, err))) return s;
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        lmc_st_free(&st);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create folder: %s", out, strerror(errno));
    }
    struct lmc_st_write_tensor *wt = calloc((size_t)st.n_tensors + 1, sizeof *wt);
    void **bufs = calloc((size_t)st.n_tensors + 1, sizeof *bufs);
    int64_t nw = 0;
    *n_deq = 0;
    if (!wt || !bufs) s = lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    for (int64_t i = 0; i < st.n_tensors && !s; i++) {
        const struct lmc_st_tensor *t = &st.tensors[i];
        const char *suffixes[] = {".qweight", ".weight.quant_state.bitsandbytes__nf4", ".weight_scale"};
        const char *sfx = qc.method == LMC_QM_BNB4 ? suffixes[1] : qc.method == LMC_QM_BITNET ? suffixes[2] : suffixes[0];
        size_t nl = strlen(t->name), sl = strlen(sfx);
        if (qc.method == LMC_QM_NONE || nl <= sl || strcmp(t->name + nl - sl, sfx)) {
            /* a quantized linear's other tensors are consumed with it */
            bool part = false;
            if (qc.method != LMC_QM_NONE) {
                const char *parts[] = {".qzeros", ".scales", ".g_idx", ".weight.absmax", ".weight.quant_map",
                                       ".weight.nested_absmax", ".weight.nested_quant_map"};
                for (size_t p = 0; p < sizeof parts / sizeof *parts && !part; p++) {
                    size_t pl = strlen(parts[p]);
                    part = nl > pl && !strcmp(t->name + nl - pl, parts[p]);
                }
                char probe[320];
                snprintf(probe, sizeof probe, "%s.quant_state.bitsandbytes__nf4", t->name);
                char probe2[320];
                snprintf(probe2, sizeof probe2, "%.*s_scale", (int)nl, t->name);
                part = part || lmc_st_find(&st, probe) || (qc.method == LMC_QM_BITNET && lmc_st_find(&st, probe2));
            }
            if (!part) {
                wt[nw] = (struct lmc_st_write_tensor){t->name, t->dtype, t->ndim, {0}, t->data};
                memcpy(wt[nw++].shape, t->shape, sizeof t->shape);
            }
            continue;
        }
        char prefix[320];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(nl - sl), t->name);
        struct lmc_qlinear q;
        bool found;
        if ((s = lmc_qlinear_read(&st, prefix, &qc, &q, &found, err))) break;
        float *w = malloc((size_t)(q.n * q.k) * sizeof *w);
        void *o = w ? malloc((size_t)(q.n * q.k) * (size_t)lmc_dtype_size(dtype)) : NULL;
        if (!o) {
            free(w);
            lmc_qlinear_free(&q);
            s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", prefix);
            break;
        }
        lmc_qlinear_dequantize(&q, w);
        bool conv1d = strstr(prefix, ".attn.c_attn") || strstr(prefix, ".attn.c_proj") || strstr(prefix, ".mlp.c_fc") ||
                      strstr(prefix, ".mlp.c_proj");
        for (int64_t r = 0; r < q.n; r++)
            for (int64_t c = 0; c < q.k; c++) {
                float v = w[r * q.k + c];
                int64_t at = conv1d ? c * q.n + r : r * q.k + c; /* GPT-2 Conv1D back to (in, out) */
                if (dtype == LMC_DTYPE_F32) ((float *)o)[at] = v;
                else ((uint16_t *)o)[at] = dtype == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(v) : lmc_f32_to_f16(v);
            }
        free(w);
        bufs[i] = o;
        char *name = malloc(strlen(prefix) + 8);
        if (!name) {
            lmc_qlinear_free(&q);
            s = lmc_err_set(err, LMC_ERR_OOM, "out of memory");
            break;
        }
        sprintf(name, "%s.weight", prefix);
        wt[nw] = (struct lmc_st_write_tensor){name, (enum lmc_dtype)dtype, 2, {conv1d ? q.k : q.n, conv1d ? q.n : q.k}, o};
        nw++;
        (*n_deq)++;
        lmc_qlinear_free(&q);
    }
    if (!s) {
        const char *meta[] = {"format", "pt"};
        lmc_path_join(path, sizeof path, out, "model.safetensors");
        s = lmc_st_write(path, wt, nw, meta, 1, err);
    }
    if (!s) s = write_config(in, out, NULL, err);
    if (!s) s = copy_files(in, out, err);
    for (int64_t i = 0; wt && i < nw; i++)
        if (wt[i].data && bufs) {
            /* names we allocated end in ".weight" and point to our buffers */
            for (int64_t j = 0; j < st.n_tensors; j++)
                if (bufs[j] == wt[i].data) {
                    free((char *)wt[i].name);
                    break;
                }
        }
    for (int64_t i = 0; bufs && i < st.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    lmc_st_free(&st);
    return s;
}

/* Removes the folder lmc_convert_from_gguf wrote. */
static void remove_tmp(const char *dir) {
    static const char *files[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"};
    char p[4200];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (lmc_path_join(p, sizeof p, dir, files[i])) unlink(p);
    rmdir(dir);
}

int cmd_quantize(int argc, char **argv) {
    struct qopts o = {.bits = 4, .group = 128, .sym = true, .skip = "lm_head,embed,wte,wpe",
                      .calib_tokens = 2048, .threads = 2};
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--sym")) { o.sym = true; continue; }
        if (!strcmp(a, "--asym")) { o.sym = false; continue; }
        if (!strcmp(a, "--clip-search")) { o.clip_search = true; continue; }
        if (!strcmp(a, "--act-order")) { o.act_order = true; continue; }
        if (!strcmp(a, "--v2")) { o.v2 = true; continue; }
        if (!strcmp(a, "--head")) { o.head = true; continue; }
        if (!strcmp(a, "--true-sequential")) { o.true_seq = true; continue; }
        if (!v) {
            fprintf(stderr, "lmc quantize: unknown option or missing value: %s\n", a);
            usage();
            return 2;
        }
        i++;
        int64_t x;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) in = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--method")) o.method = v;
        else if (!strcmp(a, "--skip")) o.skip = v;
        else if (!strcmp(a, "--calib")) o.calib = v;
        else if (!strcmp(a, "--bits") && cli_parse_i64(v, 2, 8, &x)) o.bits = (int)x;
        else if (!strcmp(a, "--group") && cli_parse_i64(v, -1, 1 << 20, &x) && x != 0) o.group = x;
        else if (!strcmp(a, "--calib-tokens") && cli_parse_i64(v, 1, 1 << 24, &x)) o.calib_tokens = x;
        else if ((!strcmp(a, "--threads") || !strcmp(a, "-t")) && cli_parse_i64(v, 1, 1024, &x)) o.threads = (int)x;
        else {
            fprintf(stderr, "lmc quantize: bad option or value: %s %s\n", a, v);
            usage();
            return 2;
        }
    }
    if (!in || !out || !o.method) {
        usage();
        return 2;
    }
    bool groups = !strcmp(o.method, "rtn") || !strcmp(o.method, "gptq");
    if (!groups && strcmp(o.method, "nf4") && strcmp(o.method, "ternary")) {
        fprintf(stderr, "lmc quantize: --method '%s': expected rtn, gptq, nf4 or ternary\n", o.method);
        return 2;
    }
    if (o.head && !groups) {
        fprintf(stderr, "lmc quantize: --head is for --method rtn or gptq (the GPTQ layout's lm_head)\n");
        return 2;
    }
    if (o.true_seq && strcmp(o.method, "gptq")) {
        fprintf(stderr, "lmc quantize: --true-sequential is for --method gptq (its calibration)\n");
        return 2;
    }
    if (o.clip_search && !groups) {
        fprintf(stderr, "lmc quantize: --clip-search is for --method rtn or gptq (their groups' ranges)\n");
        return 2;
    }
    if (groups && o.bits != 2 && o.bits != 3 && o.bits != 4 && o.bits != 8) {
        fprintf(stderr, "lmc quantize: --bits %d: expected 2, 3, 4 or 8\n", o.bits);
        return 2;
    }
    if (!strcmp(o.method, "gptq") && !o.calib) {
        fprintf(stderr, "lmc quantize: gptq needs --calib FILE (text whose activations calibrate the layers)\n");
        return 2;
    }
    lmc_err err = {0};
    int64_t nq = 0;
    size_t bytes = 0;
    /* a GGUF input is dequantized into a temporary folder (F32) first */
    char tmp[4096] = "";
    if (lmc_gguf_is_file(in)) {
        const char *td = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/lmc-quantize-XXXXXX", td && *td ? td : "/tmp");
        int64_t nt;
        if (!mkdtemp(tmp)) {
            fprintf(stderr, "lmc: quantize: %s: cannot create a temporary folder: %s\n", tmp, strerror(errno));
            return 1;
        }
        if (lmc_convert_from_gguf(in, tmp, LMC_DTYPE_F32, &nt, &err)) {
            remove_tmp(tmp);
            return cli_fail("quantize", &err);
        }
    }
    lmc_status qs = quantize(tmp[0] ? tmp : in, out, &o, &nq, &bytes, &err);
    if (tmp[0]) remove_tmp(tmp);
    if (qs) return cli_fail("quantize", &err);
    fprintf(stderr, "lmc quantize: %s -> %s: %lld linear weights quantized (%s), %.2f MB of tensors\n", in, out,
            (long long)nq, o.method, (double)bytes / 1e6);
    return 0;
}
