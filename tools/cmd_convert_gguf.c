/* cmd_convert_gguf.c — `lmc convert -m DIR -o FILE.gguf --dtype
 * f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k`: a Hugging Face folder (Llama/Mistral, Qwen2,
 * GPT-2) written as a GGUF file llama.cpp loads: llama.cpp's tensor names,
 * its Q/K row order for Llama (not Qwen2, whose rotary layout needs none),
 * GPT-2's Conv1D weights transposed to (out, in), norms and biases kept F32,
 * matrices whose rows are not whole blocks of the asked type written F16;
 * the model's hyper-parameters and its tokenizer in the metadata
 * (`gpt2`-style byte-level BPE with merges, or `llama` SentencePiece with
 * scores ranking the merges); and back (GGUF -> folder). Names, hyper-
 * parameter keys and the Q/K permutation come from the architectures'
 * tables (model/arch.h, gguf_arch.c): nothing here compares architectures. */
#include "convert_gguf.h"
#include "cli.h"
#include "core/core.h"
#include "core/dtype.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/arch.h"
#include "model/arch_moe.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct conv {
    struct lmc_gguf_writer *w;
    void **bufs;
    int64_t n_bufs, cap;
    char **strs; /* strings the writer borrows until write (token lists) */
    int64_t n_strs, scap;
};

static void *keep(struct conv *c, void *p) {
    if (!p) return NULL;
    if (c->n_bufs == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 64;
        void **b = realloc(c->bufs, (size_t)cap * sizeof *b);
        if (!b) {
            free(p);
            return NULL;
        }
        c->bufs = b;
        c->cap = cap;
    }
    return c->bufs[c->n_bufs++] = p;
}

static int st_to_ggml(enum lmc_dtype t) {
    switch (t) {
    case LMC_DTYPE_F32: return LMC_GGML_F32;
    case LMC_DTYPE_F16: return LMC_GGML_F16;
    case LMC_DTYPE_BF16: return LMC_GGML_BF16;
    case LMC_DTYPE_F64: return LMC_GGML_F64;
    default: return -1;
    }
}

/* HF name -> GGUF name, both from the architecture's tables: the walk of
 * the config's tensors (model/arch.h) names each tensor on both sides.
 * Experts (consecutive in the walk, 0..E-1 of one projection of a layer)
 * are quantized into one stacked tensor (ne [in, out, experts]), added
 * after the last. */
struct to_ctx {
    struct conv *c;
    const struct lmc_config *cfg;
    const struct lmc_architecture *a;
    const struct lmc_gguf_variant *v;
    const struct lmc_st *st;
    bool *used;
    int qtype;
    int *n_fallback;
    int64_t n_written;
    uint8_t *stack; /* the experts of the projection being written */
};

static const struct lmc_st_tensor *st_lookup(const struct to_ctx *x, const char *name) {
    const struct lmc_st_tensor *t = lmc_st_find(x->st, name);
    const char *ap = x->a->alt_prefix;
    if (!t && ap && !strncmp(name, ap, strlen(ap))) t = lmc_st_find(x->st, name + strlen(ap));
    return t;
}

static lmc_status add_tensor(void *user, const struct lmc_tensor_ref *r, lmc_err *err) {
    struct to_ctx *x = user;
    struct conv *c = x->c;
    const struct lmc_st_tensor *t = st_lookup(x, r->name), *fused = NULL;
    struct lmc_st_tensor view;
    if (!t && r->spec->kind == LMC_TK_EXPERT_W) { /* transformers' fused 3-D expert tensors */
        lmc_status s = lmc_arch_moe_fused(x->st, x->cfg, r->name, &view, &fused, err);
        if (s) return s;
        if (fused) {
            x->used[fused - x->st->tensors] = true;
            t = &view;
        }
    }
    if (!t) {
        if (!r->required) return LMC_OK;
        return lmc_err_set(err, LMC_ERR_FORMAT, "convert: missing tensor '%s'", r->name);
    }
    if (!fused) x->used[t - x->st->tensors] = true;
    if (r->spec->kind == LMC_TK_HEAD && x->cfg->tie_word_embeddings) return LMC_OK; /* a stored copy of the tied head */
    char name[256];
    if (!lmc_gguf_tensor_name(x->a, r, name, sizeof name))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "convert: tensor '%s' has no GGUF name for %s", r->name,
                           x->cfg->model_type);
    int src = st_to_ggml(t->dtype);
    int64_t numel = r->rows * r->cols;
    bool shape_ok = t->ndim == r->ndim && t->shape[0] == r->disk[0] && (r->ndim == 1 || t->shape[1] == r->disk[1]);
    if (src < 0 || !shape_ok)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "convert: tensor '%s': dtype %s with %d dims (expected a float "
                           "tensor of the config's shape)", r->name, lmc_dtype_name(t->dtype), t->ndim);
    int64_t rows = r->ndim == 1 ? 1 : r->rows, cols = r->ndim == 1 ? r->rows : r->cols; /* a vector: one row */
    /* float copies (freed here; only the quantized rows stay until the file is written) */
    float *f = malloc((size_t)numel * sizeof *f), *tmp = malloc((size_t)numel * sizeof *tmp);
    if (!f || !tmp) {
        free(f);
        free(tmp);
        return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", r->name);
    }
    lmc_ggml_dequantize_row(src, t->data, f, numel);
    if (r->spec->flags & LMC_TF_TRANSPOSED) { /* (in, out) on disk -> (out, in) as GGUF keeps matrices */
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < rows; j++) tmp[j * cols + i] = f[i * rows + j];
        memcpy(f, tmp, (size_t)numel * sizeof *f);
    }
    int64_t heads = lmc_gguf_rope_heads(r, x->cfg, x->v);
    if (heads > 0 && rows % (2 * heads)) {
        free(f);
        free(tmp);
        return lmc_err_set(err, LMC_ERR_FORMAT, "convert: %s: %lld rows do not split into %lld heads", r->name,
                           (long long)rows, (long long)heads);
    }
    if (heads > 0) {
        lmc_gguf_permute_qk(f, tmp, rows, (size_t)cols * sizeof *f, heads, false);
        memcpy(f, tmp, (size_t)numel * sizeof *f);
    }
    free(tmp);
    int type = r->ndim == 1 ? LMC_GGML_F32 : x->qtype;
    int64_t rb;
    if (!lmc_ggml_row_bytes(type, cols, &rb)) {
        type = LMC_GGML_F16; /* as llama.cpp: rows that are not whole blocks stay in a float type */
        if (r->spec->kind != LMC_TK_EXPERT_W || r->expert == 0) (*x->n_fallback)++;
        lmc_ggml_row_bytes(type, cols, &rb);
    }
    bool expert = r->spec->kind == LMC_TK_EXPERT_W;
    int64_t E = x->cfg->num_experts;
    if (expert && r->expert == 0) x->stack = keep(c, malloc((size_t)E * (size_t)(rows * rb)));
    uint8_t *q = expert ? (x->stack ? x->stack + (size_t)r->expert * (size_t)(rows * rb) : NULL)
                        : keep(c, malloc((size_t)(rows * rb)));
    if (!q) {
        free(f);
        return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", r->name);
    }
    for (int64_t i = 0; i < rows; i++) lmc_ggml_quantize_row(type, f + i * cols, q + i * rb, cols);
    free(f);
    if (expert && r->expert < E - 1) return LMC_OK;
    int64_t ne[3] = {cols, rows, E};
    lmc_gguf_add_tensor(c->w, name, type, expert ? 3 : r->ndim, ne, expert ? x->stack : q);
    x->n_written++;
    return LMC_OK;
}

static const char *keep_str(struct conv *c, const char *s, size_t n) {
    if (c->n_strs == c->scap) {
        int64_t cap = c->scap ? 2 * c->scap : 1024;
        char **b = realloc(c->strs, (size_t)cap * sizeof *b);
        if (!b) return NULL;
        c->strs = b;
        c->scap = cap;
    }
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return c->strs[c->n_strs++] = p;
}

/* tokenizer.json (+ tokenizer_config.json) -> tokenizer.ggml.* metadata. */
static lmc_status add_tokenizer(struct conv *c, const char *dir, const struct lmc_config *cfg, lmc_err *err) {
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, "tokenizer.json")) return lmc_err_set(err, LMC_ERR_ARG, "path too long");
    char *text = NULL;
    lmc_status s = lmc_file_read(path, (size_t)1 << 30, &text, NULL, err);
    if (s) return s;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges) || !cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE")) {
        cJSON_Delete(j);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: only BPE tokenizers with vocab and merges convert to GGUF", path);
    }
    bool spm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    /* llama.cpp names its byte-level split patterns (tokenizer.ggml.pre) */
    const char *pre = NULL;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
    const cJSON *ptype = cJSON_GetObjectItemCaseSensitive(pt, "type");
    if (cJSON_IsString(ptype) && !strcmp(ptype->valuestring, "ByteLevel") &&
        !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pt, "use_regex")))
        pre = "gpt-2";
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
    if (cJSON_IsArray(seq) && cJSON_GetArraySize(seq) == 2) {
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(seq, 0), "pattern"), "Regex");
        if (cJSON_IsString(re)) pre = lmc_gguf_pre_name(re->valuestring);
    }
    if (!spm && !pre) {
        cJSON_Delete(j);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "%s: this pre_tokenizer has no llama.cpp name (lmc writes gpt-2, llama-bpe and qwen2 splits)",
                           path);
    }
    int64_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) if (cJSON_IsNumber(e) && e->valuedouble + 1 > (double)n) n = (int64_t)e->valuedouble + 1;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsNumber(id) && id->valuedouble + 1 > (double)n) n = (int64_t)id->valuedouble + 1;
    }
    if (n <= 0 || n > (1 << 24)) {
        cJSON_Delete(j);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: vocabulary of %lld tokens", path, (long long)n);
    }
    const char **toks = keep(c, calloc((size_t)n, sizeof *toks));
    int32_t *types = keep(c, calloc((size_t)n, sizeof *types));
    float *scores = keep(c, calloc((size_t)n, sizeof *scores));
    int64_t nm = cJSON_GetArraySize(merges);
    const char **ms = keep(c, calloc((size_t)nm + 1, sizeof *ms));
    if (!toks || !types || !scores || !ms) {
        cJSON_Delete(j);
        return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for the vocabulary");
    }
    cJSON_ArrayForEach(e, vocab) {
        int64_t id = (int64_t)e->valuedouble;
        toks[id] = keep_str(c, e->string, strlen(e->string));
        types[id] = 1; /* normal */
        if (spm && strlen(e->string) == 6 && !strncmp(e->string, "<0x", 3)) types[id] = 6; /* byte */
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id"), *ct = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(ct)) continue;
        int64_t i = (int64_t)id->valuedouble;
        toks[i] = keep_str(c, ct->valuestring, strlen(ct->valuestring));
        types[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? 3 : 4; /* control / user-defined */
        if (spm && strlen(toks[i]) == 6 && !strncmp(toks[i], "<0x", 3)) types[i] = 6; /* byte-fallback tokens stay bytes */
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    int64_t unk_id = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!toks[i]) { /* a hole in the ids: llama.cpp needs every id */
            char buf[48];
            snprintf(buf, sizeof buf, "[PAD%lld]", (long long)i);
            toks[i] = keep_str(c, buf, strlen(buf));
            types[i] = 5; /* unused */
        }
        if (cJSON_IsString(unk) && !strcmp(toks[i], unk->valuestring)) {
            types[i] = 2;
            unk_id = i;
        }
    }
    int64_t k = 0;
    cJSON_ArrayForEach(e, merges) {
        char buf[1024], pair[1024];
        const char *a = NULL, *b = NULL;
        if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2) { /* ["a", "b"] */
            a = cJSON_GetArrayItem(e, 0)->valuestring;
            b = cJSON_GetArrayItem(e, 1)->valuestring;
        } else if (cJSON_IsString(e) && snprintf(pair, sizeof pair, "%s", e->valuestring) < (int)sizeof pair) {
            char *sp = strchr(pair, ' '); /* "a b" */
            if (sp) {
                *sp = 0;
                a = pair;
                b = sp + 1;
            }
        }
        if (!a || !b || snprintf(buf, sizeof buf, "%s %s", a, b) >= (int)sizeof buf) {
            cJSON_Delete(j);
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: merge %lld is not a pair of tokens", path, (long long)k);
        }
        ms[k++] = keep_str(c, buf, strlen(buf));
        /* SentencePiece scores: the token a merge makes ranks by the merge */
        if (spm && snprintf(buf, sizeof buf, "%s%s", a, b) < (int)sizeof buf) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(vocab, buf);
            if (cJSON_IsNumber(id) && scores[(int64_t)id->valuedouble] == 0)
                scores[(int64_t)id->valuedouble] = -(float)(k);
        }
    }
    /* BOS is prepended when the post-processor's single template (its own,
     * or a TemplateProcessing inside a Sequence) starts with a special token
     * (tokenizer_config's add_bos_token overrides); that token is the BOS
     * when config.json names none */
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(j, "post_processor");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *sub;
    cJSON_ArrayForEach(sub, cJSON_GetObjectItemCaseSensitive(pp, "processors")) if (!single)
        single = cJSON_GetObjectItemCaseSensitive(sub, "single");
    const cJSON *first = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken");
    bool add_bos = cJSON_IsArray(single) && first;
    int64_t bos_id = cfg->bos_token_id;
    const cJSON *bos_tok = cJSON_GetObjectItemCaseSensitive(first, "id");
    for (int64_t i = 0; bos_id < 0 && cJSON_IsString(bos_tok) && i < n; i++)
        if (!strcmp(toks[i], bos_tok->valuestring)) bos_id = i;
    cJSON_Delete(j);
    lmc_gguf_add_str(c->w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) lmc_gguf_add_str(c->w, "tokenizer.ggml.pre", pre);
    lmc_gguf_add_str_arr(c->w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    lmc_gguf_add_arr(c->w, "tokenizer.ggml.token_type", LMC_GGUF_I32, types, (uint64_t)n);
    if (spm) lmc_gguf_add_arr(c->w, "tokenizer.ggml.scores", LMC_GGUF_F32, scores, (uint64_t)n);
    else lmc_gguf_add_str_arr(c->w, "tokenizer.ggml.merges", ms, (uint64_t)k);
    if (bos_id >= 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.bos_token_id", (uint32_t)bos_id);
    if (cfg->n_eos > 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.eos_token_id", (uint32_t)cfg->eos_token_ids[0]);
    if (unk_id >= 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk_id);
    if (cfg->pad_token_id >= 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.padding_token_id", (uint32_t)cfg->pad_token_id);
    if (lmc_path_join(path, sizeof path, dir, "tokenizer_config.json") && lmc_file_exists(path) &&
        !lmc_file_read(path, (size_t)1 << 26, &text, NULL, err)) {
        cJSON *tc = cJSON_Parse(text);
        free(text);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(tc, "add_bos_token");
        if (cJSON_IsBool(ab)) add_bos = cJSON_IsTrue(ab);
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
        if (cJSON_IsString(ct)) lmc_gguf_add_str(c->w, "tokenizer.chat_template", ct->valuestring); /* copied */
        cJSON_Delete(tc);
    }
    lmc_gguf_add_bool(c->w, "tokenizer.ggml.add_bos_token", add_bos);
    lmc_gguf_add_bool(c->w, "tokenizer.ggml.add_eos_token", false);
    return LMC_OK;
}


lmc_status lmc_convert_to_gguf(const char *in_dir, const char *out_path, int qtype, int64_t *n_tensors,
                               int *n_fallback, lmc_err *err) {
    struct lmc_config cfg;
    lmc_status s = lmc_config_load(&cfg, in_dir, err);
    if (s) return s;
    const struct lmc_architecture *a = lmc_arch_of(&cfg);
    const struct lmc_gguf_variant *v = lmc_gguf_variant_of(&cfg);
    if (!v) return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: %s models have no GGUF form in lmc", in_dir, cfg.model_type);
    if (cfg.rope.type != LMC_ROPE_DEFAULT)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: rope scaling is not written to GGUF yet", in_dir);
    struct lmc_st st;
    if ((s = lmc_st_open_dir(&st, in_dir, err))) return s;
    struct conv c = {0};
    bool *used = calloc((size_t)st.n_tensors + 1, 1);
    if (!used || (s = lmc_gguf_writer_init(&c.w, err))) {
        free(used);
        lmc_st_free(&st);
        return s ? s : lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory");
    }
    lmc_gguf_add_str(c.w, "general.name", cfg.model_type);
    /* llama_ftype of a file mostly of one type (K types: the _S variants) */
    static const struct { int type; uint32_t ftype; } ft[] = {
        {LMC_GGML_F32, 0}, {LMC_GGML_F16, 1}, {LMC_GGML_Q4_0, 2}, {LMC_GGML_Q4_1, 3}, {LMC_GGML_Q8_0, 7},
        {LMC_GGML_Q5_0, 8}, {LMC_GGML_Q5_1, 9}, {LMC_GGML_Q4_K, 14}, {LMC_GGML_Q5_K, 16}, {LMC_GGML_Q6_K, 18},
        {LMC_GGML_BF16, 32}};
    for (size_t i = 0; i < sizeof ft / sizeof *ft; i++)
        if (ft[i].type == qtype) lmc_gguf_add_u32(c.w, "general.file_type", ft[i].ftype);
    if (qtype != LMC_GGML_F32 && qtype != LMC_GGML_F16 && qtype != LMC_GGML_BF16)
        lmc_gguf_add_u32(c.w, "general.quantization_version", 2);
    s = lmc_gguf_hparams_write(c.w, &cfg, v, err);
    if (!s) s = add_tokenizer(&c, in_dir, &cfg, err);
    *n_tensors = 0;
    *n_fallback = 0;
    struct to_ctx x = {&c, &cfg, a, v, &st, used, qtype, n_fallback, 0, NULL};
    if (!s) s = lmc_arch_walk(a, &cfg, add_tensor, &x, err);
    for (int64_t i = 0; !s && i < st.n_tensors; i++) {
        const char *n = st.tensors[i].name;
        if (!used[i] && !strstr(n, "rotary_emb") && !strstr(n, ".attn.bias") && !strstr(n, "masked_bias"))
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "convert: tensor '%s' has no GGUF name for %s", n, cfg.model_type);
    }
    *n_tensors = x.n_written;
    if (!s) s = lmc_gguf_write(c.w, out_path, err);
    lmc_gguf_writer_free(c.w);
    for (int64_t i = 0; i < c.n_bufs; i++) free(c.bufs[i]);
    free(c.bufs);
    for (int64_t i = 0; i < c.n_strs; i++) free(c.strs[i]);
    free(c.strs);
    free(used);
    lmc_st_free(&st);
    return s;
}

/* ---- GGUF -> Hugging Face folder ---- */

static lmc_status write_text(const char *dir, const char *name, const char *text, lmc_err *err) {
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, name)) return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    FILE *f = fopen(path, "wb");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f) ok = (fclose(f) == 0) && ok;
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", path);
}

/* GGUF name -> HF name (and whether GPT-2's Conv1D layout applies). */

struct from_ctx {
    const struct lmc_gguf *g;
    const char *path;
    const struct lmc_config *cfg;
    const struct lmc_architecture *a;
    const struct lmc_gguf_variant *v;
    bool *used;
    int dtype;
    struct lmc_st_write_tensor *wt;
    void **bufs;
    char (*names)[160];
    int64_t nw;
};

static lmc_status take_tensor(void *user, const struct lmc_tensor_ref *r, lmc_err *err) {
    struct from_ctx *x = user;
    char name[256];
    if (!lmc_gguf_tensor_name(x->a, r, name, sizeof name)) {
        if (!r->required) return LMC_OK;
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has no GGUF name in lmc", x->path, r->name);
    }
    const struct lmc_gguf_tensor *t = lmc_gguf_find_tensor(x->g, name);
    if (!t) {
        if (!r->required) return LMC_OK;
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", x->path, name);
    }
    x->used[t - x->g->tensors] = true;
    int64_t rows = r->ndim == 1 ? 1 : r->rows, cols = r->ndim == 1 ? r->rows : r->cols, numel = rows * cols, rb;
    const uint8_t *base;
    bool blocks = lmc_ggml_row_bytes(t->type, cols, &rb);
    if (!lmc_gguf_tensor_view(t, r, x->cfg, blocks && r->ndim == 2 ? rb : 0, &base)) {
        char got[96], want[96];
        lmc_gguf_shape_str(t, r, x->cfg, got, sizeof got, want, sizeof want);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has ne [%s], the hyper-parameters say [%s]", x->path,
                           name, got, want);
    }
    if (!blocks)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s': type %s with rows of %lld", x->path, name,
                           lmc_ggml_type_name(t->type) ? lmc_ggml_type_name(t->type) : "?", (long long)cols);
    float *f = malloc((size_t)numel * sizeof *f), *tmp = malloc((size_t)numel * sizeof *f);
    void *o = malloc((size_t)numel * (size_t)lmc_dtype_size(x->dtype));
    if (!f || !tmp || !o) {
        free(f), free(tmp), free(o);
        return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", name);
    }
    for (int64_t i = 0; i < rows; i++)
        lmc_ggml_dequantize_row(t->type, base + i * rb, f + i * cols, cols);
    int64_t heads = lmc_gguf_rope_heads(r, x->cfg, x->v);
    lmc_status s = LMC_OK;
    if (heads > 0 && rows % (2 * heads))
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: %s rows do not split into %lld heads", x->path, name, (long long)heads);
    if (!s && heads > 0) {
        lmc_gguf_permute_qk(f, tmp, rows, (size_t)cols * sizeof *f, heads, true);
        memcpy(f, tmp, (size_t)numel * sizeof *f);
    }
    if (!s && (r->spec->flags & LMC_TF_TRANSPOSED)) { /* (out, in) -> the on-disk (in, out) */
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) tmp[j * rows + i] = f[i * cols + j];
        memcpy(f, tmp, (size_t)numel * sizeof *f);
    }
    for (int64_t e = 0; !s && e < numel; e++) {
        if (x->dtype == LMC_DTYPE_F32) ((float *)o)[e] = f[e];
        else ((uint16_t *)o)[e] = x->dtype == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(f[e]) : lmc_f32_to_f16(f[e]);
    }
    free(f);
    free(tmp);
    if (s) {
        free(o);
        return s;
    }
    x->bufs[x->nw] = o;
    struct lmc_st_write_tensor *w = &x->wt[x->nw++];
    snprintf(x->names[x->nw - 1], sizeof x->names[0], "%s", r->name);
    w->name = x->names[x->nw - 1];
    w->dtype = (enum lmc_dtype)x->dtype;
    w->ndim = r->ndim;
    w->shape[0] = r->disk[0];
    if (r->ndim == 2) w->shape[1] = r->disk[1];
    w->data = o;
    return LMC_OK;
}

lmc_status lmc_convert_from_gguf(const char *path, const char *out_dir, int dtype, int64_t *n_tensors, lmc_err *err) {
    struct lmc_gguf g;
    lmc_status s = lmc_gguf_open(&g, path, err);
    if (s) return s;
    char *tok = NULL, *tcfg = NULL, *cj = NULL;
    cJSON *cfgj = NULL;
    struct lmc_config cfg;
    struct from_ctx x = {&g, path, &cfg, NULL, NULL, NULL, dtype, NULL, NULL, NULL, 0};
    *n_tensors = 0;
    if ((s = lmc_gguf_config_json(&g, path, &cfgj, &x.v, err))) goto out;
    cJSON_AddStringToObject(cfgj, "torch_dtype", dtype == LMC_DTYPE_F32 ? "float32" : dtype == LMC_DTYPE_F16 ? "float16"
                                                                                                          : "bfloat16");
    cj = cJSON_Print(cfgj);
    if (!cj) {
        s = lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory");
        goto out;
    }
    if ((s = lmc_config_parse(&cfg, cj, strlen(cj), path, err))) goto out;
    x.a = lmc_arch_of(&cfg);
    int64_t nt = lmc_arch_count(x.a, &cfg); /* the folder's tensors (one per expert) */
    if (nt < 0 || nt > ((int64_t)1 << 24)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: the hyper-parameters make %lld tensors", path, (long long)nt);
        goto out;
    }
    x.used = calloc((size_t)g.n_tensors + 1, 1);
    x.wt = calloc((size_t)nt + 1, sizeof *x.wt);
    x.bufs = calloc((size_t)nt + 1, sizeof *x.bufs);
    x.names = calloc((size_t)nt + 1, sizeof *x.names);
    if (!x.used || !x.wt || !x.bufs || !x.names) {
        s = lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory");
        goto out;
    }
    if ((s = lmc_arch_walk(x.a, &cfg, take_tensor, &x, err))) goto out;
    for (int64_t i = 0; i < g.n_tensors; i++)
        if (!x.used[i]) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has no Hugging Face name for %s", path,
                            g.tensors[i].name, x.v->name);
            goto out;
        }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot create folder: %s", out_dir, strerror(errno));
        goto out;
    }
    char p2[4096];
    const char *meta[] = {"format", "pt"};
    lmc_path_join(p2, sizeof p2, out_dir, "model.safetensors");
    if ((s = lmc_st_write(p2, x.wt, x.nw, meta, 1, err))) goto out;
    *n_tensors = x.nw;
    s = write_text(out_dir, "config.json", cj, err);
    if (!s && !(s = lmc_gguf_tokenizer_json(&g, &tok, &tcfg, err)) &&
        !(s = write_text(out_dir, "tokenizer.json", tok, err)))
        s = write_text(out_dir, "tokenizer_config.json", tcfg, err);
out:
    for (int64_t i = 0; x.bufs && i < x.nw; i++) free(x.bufs[i]);
    free(x.bufs);
    free(x.names);
    free(x.wt);
    free(x.used);
    cJSON_Delete(cfgj);
    free(cj);
    free(tok);
    free(tcfg);
    lmc_gguf_free(&g);
    return s;
}
