/* cmd_convert_gguf.c — `lmc convert -m DIR -o FILE.gguf --dtype
 * f32|f16|bf16|q8_0|q4_0`: a Hugging Face folder (Llama/Mistral, Qwen2,
 * GPT-2) written as a GGUF file llama.cpp loads: llama.cpp's tensor names,
 * its Q/K row order for Llama (not Qwen2, whose rotary layout needs none),
 * GPT-2's Conv1D weights transposed to (out, in), norms and biases kept F32,
 * matrices whose rows are not whole blocks of the asked type written F16;
 * the model's hyper-parameters and its tokenizer in the metadata
 * (`gpt2`-style byte-level BPE with merges, or `llama` SentencePiece with
 * scores ranking the merges). */
#include "convert_gguf.h"
#include "cli.h"
#include "core/core.h"
#include "core/dtype.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
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

/* HF name -> GGUF name; *transpose for GPT-2 Conv1D weights, *heads > 0 for
 * rows to permute into llama.cpp's rotary order. Returns false to skip. */
static bool map_name(const struct lmc_config *cfg, const char *hf, char *out, size_t cap, bool *transpose,
                     int64_t *heads) {
    *transpose = false;
    *heads = 0;
    int L;
    char rest[200];
    if (cfg->arch == LMC_ARCH_GPT2) {
        static const char *g[][2] = {{"ln_1.weight", "attn_norm.weight"}, {"ln_1.bias", "attn_norm.bias"},
                                     {"attn.c_attn.weight", "attn_qkv.weight"}, {"attn.c_attn.bias", "attn_qkv.bias"},
                                     {"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
                                     {"ln_2.weight", "ffn_norm.weight"}, {"ln_2.bias", "ffn_norm.bias"},
                                     {"mlp.c_fc.weight", "ffn_up.weight"}, {"mlp.c_fc.bias", "ffn_up.bias"},
                                     {"mlp.c_proj.weight", "ffn_down.weight"}, {"mlp.c_proj.bias", "ffn_down.bias"}};
        const char *n = !strncmp(hf, "transformer.", 12) ? hf + 12 : hf;
        if (!strcmp(n, "wte.weight")) return snprintf(out, cap, "token_embd.weight") > 0;
        if (!strcmp(n, "wpe.weight")) return snprintf(out, cap, "position_embd.weight") > 0;
        if (!strcmp(n, "ln_f.weight")) return snprintf(out, cap, "output_norm.weight") > 0;
        if (!strcmp(n, "ln_f.bias")) return snprintf(out, cap, "output_norm.bias") > 0;
        if (!strcmp(n, "lm_head.weight") || !strcmp(hf, "lm_head.weight"))
            return !cfg->tie_word_embeddings && snprintf(out, cap, "output.weight") > 0;
        if (sscanf(n, "h.%d.%199s", &L, rest) == 2)
            for (size_t i = 0; i < sizeof g / sizeof *g; i++)
                if (!strcmp(rest, g[i][0])) {
                    *transpose = strstr(rest, ".weight") && strncmp(rest, "ln_", 3);
                    return snprintf(out, cap, "blk.%d.%s", L, g[i][1]) > 0;
                }
        return false;
    }
    static const char *l[][2] = {{"input_layernorm.weight", "attn_norm.weight"},
                                 {"self_attn.q_proj.weight", "attn_q.weight"}, {"self_attn.q_proj.bias", "attn_q.bias"},
                                 {"self_attn.k_proj.weight", "attn_k.weight"}, {"self_attn.k_proj.bias", "attn_k.bias"},
                                 {"self_attn.v_proj.weight", "attn_v.weight"}, {"self_attn.v_proj.bias", "attn_v.bias"},
                                 {"self_attn.o_proj.weight", "attn_output.weight"},
                                 {"self_attn.o_proj.bias", "attn_output.bias"},
                                 {"post_attention_layernorm.weight", "ffn_norm.weight"},
                                 {"mlp.gate_proj.weight", "ffn_gate.weight"}, {"mlp.up_proj.weight", "ffn_up.weight"},
                                 {"mlp.down_proj.weight", "ffn_down.weight"}};
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, cap, "token_embd.weight") > 0;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, cap, "output_norm.weight") > 0;
    if (!strcmp(hf, "lm_head.weight")) return !cfg->tie_word_embeddings && snprintf(out, cap, "output.weight") > 0;
    if (sscanf(hf, "model.layers.%d.%199s", &L, rest) == 2)
        for (size_t i = 0; i < sizeof l / sizeof *l; i++)
            if (!strcmp(rest, l[i][0])) {
                bool llama = strcmp(cfg->model_type, "qwen2") != 0; /* llama.cpp permutes Llama/Mistral only */
                if (llama && !strcmp(rest, "self_attn.q_proj.weight")) *heads = cfg->num_heads;
                if (llama && !strcmp(rest, "self_attn.k_proj.weight")) *heads = cfg->num_kv_heads;
                return snprintf(out, cap, "blk.%d.%s", L, l[i][1]) > 0;
            }
    return false;
}

static lmc_status add_tensor(struct conv *c, const struct lmc_config *cfg, const struct lmc_st_tensor *x, int qtype,
                             int *n_fallback, lmc_err *err) {
    char name[256];
    bool transpose;
    int64_t heads;
    if (!map_name(cfg, x->name, name, sizeof name, &transpose, &heads)) {
        if (strstr(x->name, "rotary_emb") || strstr(x->name, ".attn.bias") || strstr(x->name, "masked_bias"))
            return LMC_OK; /* buffers, not weights */
        if (!strcmp(x->name, "lm_head.weight")) return LMC_OK; /* tied */
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "convert: tensor '%s' has no GGUF name for %s", x->name,
                           cfg->model_type);
    }
    int src = st_to_ggml(x->dtype);
    if (src < 0 || x->ndim < 1 || x->ndim > 2)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "convert: tensor '%s': dtype %s with %d dims", x->name,
                           lmc_dtype_name(x->dtype), x->ndim);
    int64_t rows = x->ndim == 2 ? x->shape[0] : 1, cols = x->ndim == 2 ? x->shape[1] : x->shape[0];
    float *f = keep(c, malloc((size_t)(rows * cols) * sizeof *f));
    if (!f) return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", x->name);
    lmc_ggml_dequantize_row(src, x->data, f, rows * cols);
    if (transpose) { /* Conv1D (in, out) -> (out, in) */
        float *t = keep(c, malloc((size_t)(rows * cols) * sizeof *t));
        if (!t) return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", x->name);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) t[j * rows + i] = f[i * cols + j];
        f = t;
        int64_t tmp = rows;
        rows = cols;
        cols = tmp;
    }
    if (heads > 0) {
        if (rows % (2 * heads))
            return lmc_err_set(err, LMC_ERR_FORMAT, "convert: %s: %lld rows do not split into %lld heads", x->name,
                               (long long)rows, (long long)heads);
        float *p = keep(c, malloc((size_t)(rows * cols) * sizeof *p));
        if (!p) return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", x->name);
        lmc_gguf_permute_qk(f, p, rows, (size_t)cols * sizeof *f, heads, false);
        f = p;
    }
    int type = x->ndim == 1 ? LMC_GGML_F32 : qtype;
    int64_t rb;
    if (!lmc_ggml_row_bytes(type, cols, &rb)) {
        type = LMC_GGML_F16; /* as llama.cpp: rows that are not whole blocks stay in a float type */
        (*n_fallback)++;
        lmc_ggml_row_bytes(type, cols, &rb);
    }
    uint8_t *q = keep(c, malloc((size_t)(rows * rb)));
    if (!q) return lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", x->name);
    for (int64_t r = 0; r < rows; r++) lmc_ggml_quantize_row(type, f + r * cols, q + r * rb, cols);
    int64_t ne[2] = {cols, rows};
    lmc_gguf_add_tensor(c->w, name, type, x->ndim, ne, q);
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
    /* BOS is prepended when the post-processor's single template starts
     * with a special token (tokenizer_config's add_bos_token overrides) */
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "post_processor"), "single");
    bool add_bos = cJSON_IsArray(single) && cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken");
    cJSON_Delete(j);
    lmc_gguf_add_str(c->w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) lmc_gguf_add_str(c->w, "tokenizer.ggml.pre", pre);
    lmc_gguf_add_str_arr(c->w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    lmc_gguf_add_arr(c->w, "tokenizer.ggml.token_type", LMC_GGUF_I32, types, (uint64_t)n);
    if (spm) lmc_gguf_add_arr(c->w, "tokenizer.ggml.scores", LMC_GGUF_F32, scores, (uint64_t)n);
    else lmc_gguf_add_str_arr(c->w, "tokenizer.ggml.merges", ms, (uint64_t)k);
    if (cfg->bos_token_id >= 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.bos_token_id", (uint32_t)cfg->bos_token_id);
    if (cfg->n_eos > 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.eos_token_id", (uint32_t)cfg->eos_token_ids[0]);
    if (unk_id >= 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk_id);
    if (cfg->pad_token_id >= 0) lmc_gguf_add_u32(c->w, "tokenizer.ggml.padding_token_id", (uint32_t)cfg->pad_token_id);
    if (lmc_path_join(path, sizeof path, dir, "tokenizer_config.json") && lmc_file_exists(path) &&
        !lmc_file_read(path, (size_t)1 << 26, &text, NULL, err)) {
        cJSON *tc = cJSON_Parse(text);
        free(text);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(tc, "add_bos_token");
        if (cJSON_IsBool(ab)) add_bos = cJSON_IsTrue(ab);
        cJSON_Delete(tc);
    }
    lmc_gguf_add_bool(c->w, "tokenizer.ggml.add_bos_token", add_bos);
    lmc_gguf_add_bool(c->w, "tokenizer.ggml.add_eos_token", false);
    return LMC_OK;
}

static void add_hparams(struct lmc_gguf_writer *w, const struct lmc_config *cfg, const char *arch, int qtype) {
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    lmc_gguf_add_str(w, "general.architecture", arch);
    lmc_gguf_add_str(w, "general.name", cfg->model_type);
    uint32_t ftype = qtype == LMC_GGML_F32 ? 0 : qtype == LMC_GGML_F16 ? 1 : qtype == LMC_GGML_Q4_0 ? 2
                   : qtype == LMC_GGML_Q8_0 ? 7 : 32; /* llama_ftype: BF16 = 32 */
    lmc_gguf_add_u32(w, "general.file_type", ftype);
    if (qtype == LMC_GGML_Q4_0 || qtype == LMC_GGML_Q8_0) lmc_gguf_add_u32(w, "general.quantization_version", 2);
    lmc_gguf_add_u32(w, KEY("context_length"), (uint32_t)cfg->max_position_embeddings);
    lmc_gguf_add_u32(w, KEY("embedding_length"), (uint32_t)cfg->hidden_size);
    lmc_gguf_add_u32(w, KEY("block_count"), (uint32_t)cfg->num_layers);
    lmc_gguf_add_u32(w, KEY("feed_forward_length"), (uint32_t)cfg->intermediate_size);
    lmc_gguf_add_u32(w, KEY("attention.head_count"), (uint32_t)cfg->num_heads);
    if (cfg->arch == LMC_ARCH_GPT2) {
        lmc_gguf_add_f32(w, KEY("attention.layer_norm_epsilon"), (float)cfg->norm_eps);
        return;
    }
    lmc_gguf_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)cfg->num_kv_heads);
    lmc_gguf_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)cfg->norm_eps);
    lmc_gguf_add_f32(w, KEY("rope.freq_base"), (float)cfg->rope.theta);
    lmc_gguf_add_u32(w, KEY("rope.dimension_count"), (uint32_t)cfg->head_dim);
    if (cfg->head_dim * cfg->num_heads != cfg->hidden_size) {
        lmc_gguf_add_u32(w, KEY("attention.key_length"), (uint32_t)cfg->head_dim);
        lmc_gguf_add_u32(w, KEY("attention.value_length"), (uint32_t)cfg->head_dim);
    }
    lmc_gguf_add_u32(w, KEY("vocab_size"), (uint32_t)cfg->vocab_size);
#undef KEY
}

lmc_status lmc_convert_to_gguf(const char *in_dir, const char *out_path, int qtype, int64_t *n_tensors,
                               int *n_fallback, lmc_err *err) {
    struct lmc_config cfg;
    lmc_status s = lmc_config_load(&cfg, in_dir, err);
    if (s) return s;
    if (cfg.rope.type != LMC_ROPE_DEFAULT && cfg.arch != LMC_ARCH_GPT2)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: rope scaling is not written to GGUF yet", in_dir);
    const char *arch = cfg.arch == LMC_ARCH_GPT2 ? "gpt2" : !strcmp(cfg.model_type, "qwen2") ? "qwen2" : "llama";
    struct lmc_st st;
    if ((s = lmc_st_open_dir(&st, in_dir, err))) return s;
    struct conv c = {0};
    if ((s = lmc_gguf_writer_init(&c.w, err))) {
        lmc_st_free(&st);
        return s;
    }
    add_hparams(c.w, &cfg, arch, qtype);
    s = add_tokenizer(&c, in_dir, &cfg, err);
    *n_tensors = 0;
    *n_fallback = 0;
    for (int64_t i = 0; i < st.n_tensors && !s; i++) {
        s = add_tensor(&c, &cfg, &st.tensors[i], qtype, n_fallback, err);
        (*n_tensors)++;
    }
    if (!s) s = lmc_gguf_write(c.w, out_path, err);
    lmc_gguf_writer_free(c.w);
    for (int64_t i = 0; i < c.n_bufs; i++) free(c.bufs[i]);
    free(c.bufs);
    for (int64_t i = 0; i < c.n_strs; i++) free(c.strs[i]);
    free(c.strs);
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
static bool hf_name(const char *arch, const char *g, char *out, size_t cap, bool *conv1d) {
    *conv1d = false;
    bool gpt2 = !strcmp(arch, "gpt2");
    static const char *top[][3] = {{"token_embd.weight", "model.embed_tokens.weight", "transformer.wte.weight"},
                                   {"position_embd.weight", NULL, "transformer.wpe.weight"},
                                   {"output_norm.weight", "model.norm.weight", "transformer.ln_f.weight"},
                                   {"output_norm.bias", NULL, "transformer.ln_f.bias"},
                                   {"output.weight", "lm_head.weight", "lm_head.weight"}};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strcmp(g, top[i][0])) return top[i][gpt2 ? 2 : 1] && snprintf(out, cap, "%s", top[i][gpt2 ? 2 : 1]) > 0;
    int L;
    char rest[128];
    if (sscanf(g, "blk.%d.%127s", &L, rest) != 2) return false;
    static const char *blk[][3] = {
        {"attn_norm.weight", "input_layernorm.weight", "ln_1.weight"}, {"attn_norm.bias", NULL, "ln_1.bias"},
        {"attn_q.weight", "self_attn.q_proj.weight", NULL},             {"attn_q.bias", "self_attn.q_proj.bias", NULL},
        {"attn_k.weight", "self_attn.k_proj.weight", NULL},             {"attn_k.bias", "self_attn.k_proj.bias", NULL},
        {"attn_v.weight", "self_attn.v_proj.weight", NULL},             {"attn_v.bias", "self_attn.v_proj.bias", NULL},
        {"attn_qkv.weight", NULL, "attn.c_attn.weight"},                {"attn_qkv.bias", NULL, "attn.c_attn.bias"},
        {"attn_output.weight", "self_attn.o_proj.weight", "attn.c_proj.weight"},
        {"attn_output.bias", "self_attn.o_proj.bias", "attn.c_proj.bias"},
        {"ffn_norm.weight", "post_attention_layernorm.weight", "ln_2.weight"}, {"ffn_norm.bias", NULL, "ln_2.bias"},
        {"ffn_gate.weight", "mlp.gate_proj.weight", NULL},              {"ffn_up.weight", "mlp.up_proj.weight", "mlp.c_fc.weight"},
        {"ffn_up.bias", NULL, "mlp.c_fc.bias"},                         {"ffn_down.weight", "mlp.down_proj.weight", "mlp.c_proj.weight"},
        {"ffn_down.bias", NULL, "mlp.c_proj.bias"},
    };
    for (size_t i = 0; i < sizeof blk / sizeof *blk; i++)
        if (!strcmp(rest, blk[i][0]) && blk[i][gpt2 ? 2 : 1]) {
            *conv1d = gpt2 && strstr(rest, ".weight") && strncmp(rest, "attn_norm", 9) && strncmp(rest, "ffn_norm", 8);
            return snprintf(out, cap, gpt2 ? "transformer.h.%d.%s" : "model.layers.%d.%s", L, blk[i][gpt2 ? 2 : 1]) > 0;
        }
    return false;
}

lmc_status lmc_convert_from_gguf(const char *path, const char *out_dir, int dtype, int64_t *n_tensors, lmc_err *err) {
    struct lmc_gguf g;
    lmc_status s = lmc_gguf_open(&g, path, err);
    if (s) return s;
    char *arch = NULL, *tok = NULL, *tcfg = NULL;
    struct lmc_st_write_tensor *wt = NULL;
    void **bufs = NULL;
    char (*names)[256] = NULL;
    cJSON *cfg = NULL;
    *n_tensors = 0;
    if ((s = lmc_gguf_get_str(&g, "general.architecture", &arch, NULL, err))) goto out;
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2") && strcmp(arch, "gpt2")) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: architecture '%s' (lmc converts llama, qwen2, gpt2)", path, arch);
        goto out;
    }
    bool gpt2 = !strcmp(arch, "gpt2");
    int64_t C, L, H, F, ctx, KV = 0, hd = 0;
    double eps, theta = 10000;
    bool found;
    char key[128];
#define GETI(k, v)                                                                                         \
    (snprintf(key, sizeof key, "%s." k, arch), lmc_gguf_get_int(&g, key, &(v), NULL, err))
    if ((s = GETI("embedding_length", C)) || (s = GETI("block_count", L)) || (s = GETI("attention.head_count", H)) ||
        (s = GETI("feed_forward_length", F)) || (s = GETI("context_length", ctx)))
        goto out;
    if (C <= 0 || L <= 0 || H <= 0 || F <= 0 || C % H || L > 4096 || C > (1 << 20)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: hyper-parameters out of range (embedding %lld, blocks %lld, heads %lld)",
                        path, (long long)C, (long long)L, (long long)H);
        goto out;
    }
    snprintf(key, sizeof key, "%s.%s", arch, gpt2 ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon");
    if ((s = lmc_gguf_get_float(&g, key, &eps, NULL, err))) goto out;
    if (!gpt2) {
        snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
        if ((s = lmc_gguf_get_int(&g, key, &KV, &found, err))) goto out;
        if (!found) KV = H;
        snprintf(key, sizeof key, "%s.attention.key_length", arch);
        if ((s = lmc_gguf_get_int(&g, key, &hd, &found, err))) goto out;
        if (!found) hd = C / H;
        snprintf(key, sizeof key, "%s.rope.freq_base", arch);
        if ((s = lmc_gguf_get_float(&g, key, &theta, &found, err))) goto out;
        if (!found) theta = 10000;
        if (KV <= 0 || H % KV || hd <= 0 || hd % 2) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: %lld heads, %lld kv heads, head size %lld", path, (long long)H,
                            (long long)KV, (long long)hd);
            goto out;
        }
    }
    const struct lmc_gguf_tensor *emb = lmc_gguf_find_tensor(&g, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[0] != C) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: token_embd.weight is missing or not (%lld, vocab)", path, (long long)C);
        goto out;
    }
    int64_t V = emb->ne[1];
    bool tied = !lmc_gguf_find_tensor(&g, "output.weight");
    cfg = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(cfg, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(gpt2 ? "GPT2LMHeadModel" : !strcmp(arch, "qwen2") ? "Qwen2ForCausalLM"
                                                                                                   : "LlamaForCausalLM"));
    cJSON_AddStringToObject(cfg, "model_type", arch);
    cJSON_AddNumberToObject(cfg, "vocab_size", (double)V);
    cJSON_AddBoolToObject(cfg, "tie_word_embeddings", tied);
    cJSON_AddStringToObject(cfg, "torch_dtype", dtype == LMC_DTYPE_F32 ? "float32" : dtype == LMC_DTYPE_F16 ? "float16"
                                                                                                           : "bfloat16");
    int64_t id;
    if (!lmc_gguf_get_int(&g, "tokenizer.ggml.bos_token_id", &id, &found, err) && found)
        cJSON_AddNumberToObject(cfg, "bos_token_id", (double)id);
    if (!lmc_gguf_get_int(&g, "tokenizer.ggml.eos_token_id", &id, &found, err) && found)
        cJSON_AddNumberToObject(cfg, "eos_token_id", (double)id);
    if (gpt2) {
        cJSON_AddNumberToObject(cfg, "n_embd", (double)C);
        cJSON_AddNumberToObject(cfg, "n_layer", (double)L);
        cJSON_AddNumberToObject(cfg, "n_head", (double)H);
        cJSON_AddNumberToObject(cfg, "n_inner", (double)F);
        cJSON_AddNumberToObject(cfg, "n_positions", (double)ctx);
        cJSON_AddNumberToObject(cfg, "layer_norm_epsilon", eps);
        cJSON_AddStringToObject(cfg, "activation_function", "gelu_new");
    } else {
        cJSON_AddNumberToObject(cfg, "hidden_size", (double)C);
        cJSON_AddNumberToObject(cfg, "num_hidden_layers", (double)L);
        cJSON_AddNumberToObject(cfg, "num_attention_heads", (double)H);
        cJSON_AddNumberToObject(cfg, "num_key_value_heads", (double)KV);
        cJSON_AddNumberToObject(cfg, "head_dim", (double)hd);
        cJSON_AddNumberToObject(cfg, "intermediate_size", (double)F);
        cJSON_AddNumberToObject(cfg, "max_position_embeddings", (double)ctx);
        cJSON_AddNumberToObject(cfg, "rms_norm_eps", eps);
        cJSON_AddNumberToObject(cfg, "rope_theta", theta);
        cJSON_AddStringToObject(cfg, "hidden_act", "silu");
    }
    wt = calloc((size_t)g.n_tensors + 1, sizeof *wt);
    bufs = calloc((size_t)g.n_tensors + 1, sizeof *bufs);
    names = calloc((size_t)g.n_tensors + 1, sizeof *names);
    if (!wt || !bufs || !names) {
        s = lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory");
        goto out;
    }
    int64_t nw = 0;
    for (int64_t i = 0; i < g.n_tensors && !s; i++) {
        const struct lmc_gguf_tensor *t = &g.tensors[i];
        bool conv1d;
        if (!hf_name(arch, t->name, names[nw], sizeof names[nw], &conv1d)) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has no Hugging Face name for %s", path, t->name, arch);
            break;
        }
        if (t->n_dims > 2) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions", path, t->name, t->n_dims);
            break;
        }
        int64_t cols = t->ne[0], rows = t->ne[1], nb, rb;
        lmc_ggml_row_bytes(t->type, cols, &rb);
        float *f = malloc((size_t)(rows * cols) * sizeof *f), *tmp = malloc((size_t)(rows * cols) * sizeof *f);
        void *o = malloc((size_t)(rows * cols) * (size_t)lmc_dtype_size(dtype));
        if (!f || !tmp || !o) {
            free(f), free(tmp), free(o);
            s = lmc_err_set(err, LMC_ERR_OOM, "convert: out of memory for %s", t->name);
            break;
        }
        for (int64_t r = 0; r < rows; r++) lmc_ggml_dequantize_row(t->type, (const uint8_t *)t->data + r * rb, f + r * cols, cols);
        int64_t heads = !strcmp(arch, "llama") && strstr(t->name, "attn_q.weight") ? H
                      : !strcmp(arch, "llama") && strstr(t->name, "attn_k.weight") ? KV : 0;
        if (heads) {
            if (rows % (2 * heads)) {
                free(f), free(tmp), free(o);
                s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: %s rows do not split into %lld heads", path, t->name,
                                (long long)heads);
                break;
            }
            lmc_gguf_permute_qk(f, tmp, rows, (size_t)cols * sizeof *f, heads, true);
            memcpy(f, tmp, (size_t)(rows * cols) * sizeof *f);
        }
        if (conv1d) { /* (out, in) -> Conv1D (in, out) */
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c2 = 0; c2 < cols; c2++) tmp[c2 * rows + r] = f[r * cols + c2];
            memcpy(f, tmp, (size_t)(rows * cols) * sizeof *f);
        }
        for (int64_t e = 0; e < rows * cols; e++) {
            if (dtype == LMC_DTYPE_F32) ((float *)o)[e] = f[e];
            else ((uint16_t *)o)[e] = dtype == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(f[e]) : lmc_f32_to_f16(f[e]);
        }
        free(f);
        free(tmp);
        bufs[nw] = o;
        wt[nw].name = names[nw];
        wt[nw].dtype = (enum lmc_dtype)dtype;
        wt[nw].ndim = t->n_dims;
        if (t->n_dims == 1) wt[nw].shape[0] = cols;
        else if (conv1d) wt[nw].shape[0] = cols, wt[nw].shape[1] = rows;
        else wt[nw].shape[0] = rows, wt[nw].shape[1] = cols;
        wt[nw].data = o;
        nw++;
        (void)nb;
    }
    if (s) goto out;
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot create folder: %s", out_dir, strerror(errno));
        goto out;
    }
    char p2[4096];
    const char *meta[] = {"format", "pt"};
    lmc_path_join(p2, sizeof p2, out_dir, "model.safetensors");
    if ((s = lmc_st_write(p2, wt, nw, meta, 1, err))) goto out;
    *n_tensors = nw;
    char *cj = cJSON_Print(cfg);
    s = cj ? write_text(out_dir, "config.json", cj, err) : lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    free(cj);
    if (!s && !(s = lmc_gguf_tokenizer_json(&g, &tok, &tcfg, err)) &&
        !(s = write_text(out_dir, "tokenizer.json", tok, err)))
        s = write_text(out_dir, "tokenizer_config.json", tcfg, err);
out:
    for (int64_t i = 0; bufs && i < g.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    free(names);
    cJSON_Delete(cfg);
    free(arch);
    free(tok);
    free(tcfg);
    lmc_gguf_free(&g);
    return s;
}
