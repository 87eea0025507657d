/* gguf_tokenizer.c — GGUF tokenizer metadata to and from Hugging Face
 * terms: the pre-tokenizer names llama.cpp uses (tokenizer.ggml.pre) and
 * their split patterns, and a tokenizer.json + tokenizer_config.json built
 * from a GGUF's vocabulary: `gpt2` (byte-level BPE with merges) or `llama`
 * (SentencePiece BPE with byte fallback; merges rebuilt from the scores:
 * every split a+b of a token whose halves are tokens, ranked by the
 * token's score, as llama.cpp's SentencePiece tokenizer merges); the
 * tokenizer of `-m FILE.gguf` built from them. */
#include "io/gguf.h"
#include "core/core.h"
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *pre_table[][2] = {
    {"gpt-2", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
    {"llama-bpe", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"qwen2", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
              "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

const char *lmc_gguf_pre_regex(const char *pre) {
    for (size_t i = 0; i < sizeof pre_table / sizeof *pre_table; i++)
        if (!strcmp(pre, pre_table[i][0])) return pre_table[i][1];
    return NULL;
}

const char *lmc_gguf_pre_name(const char *regex) {
    for (size_t i = 0; i < sizeof pre_table / sizeof *pre_table; i++)
        if (!strcmp(regex, pre_table[i][1])) return pre_table[i][0];
    return NULL;
}

static char *dup_str(const struct lmc_gguf_str *s) {
    char *p = malloc((size_t)s->len + 1);
    if (p) {
        memcpy(p, s->s, (size_t)s->len);
        p[s->len] = 0;
    }
    return p;
}

/* Token string -> first id holding it (strings up to their first NUL, as
 * the JSON keys they become): open addressing over the token list, so that
 * vocabularies of 100k+ tokens are indexed in linear time. */
struct vhash {
    int64_t *slot; /* id + 1, 0 empty */
    uint64_t mask;
    const struct lmc_gguf_str *strs;
};

static uint64_t vh_key(const char *s, uint64_t n, uint64_t *len) {
    const char *z = memchr(s, 0, (size_t)n);
    *len = z ? (uint64_t)(z - s) : n;
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < *len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int64_t vh_find(const struct vhash *h, const char *s, uint64_t n) {
    uint64_t len, l2;
    for (uint64_t k = vh_key(s, n, &len) & h->mask;; k = (k + 1) & h->mask) {
        int64_t id = h->slot[k] - 1;
        if (id < 0) return -1;
        const struct lmc_gguf_str *t = &h->strs[id];
        vh_key(t->s, t->len, &l2);
        if (l2 == len && !memcmp(t->s, s, (size_t)len)) return id;
    }
}

static bool vh_init(struct vhash *h, const struct lmc_gguf_kv *toks) {
    uint64_t cap = 16;
    while (cap < 2 * toks->n) cap *= 2;
    h->slot = calloc((size_t)cap, sizeof *h->slot);
    h->mask = cap - 1;
    h->strs = toks->strs;
    if (!h->slot) return false;
    for (uint64_t i = 0; i < toks->n; i++) {
        if (vh_find(h, toks->strs[i].s, toks->strs[i].len) >= 0) continue; /* the first id keeps the string */
        uint64_t len;
        uint64_t k = vh_key(toks->strs[i].s, toks->strs[i].len, &len) & h->mask;
        while (h->slot[k]) k = (k + 1) & h->mask;
        h->slot[k] = (int64_t)i + 1;
    }
    return true;
}

struct cand {
    const char *a, *b;
    float score;
    int64_t ia, ib;
};

static int cmp_cand(const void *x, const void *y) {
    const struct cand *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1;
    if (p->ia != q->ia) return p->ia < q->ia ? -1 : 1;
    return (p->ib > q->ib) - (p->ib < q->ib);
}

lmc_status lmc_gguf_tokenizer_json(const struct lmc_gguf *g, char **tok_json, char **cfg_json, lmc_err *err) {
    struct vhash vh = {0};
    const cJSON **items = NULL;
    *tok_json = *cfg_json = NULL;
    char *model = NULL, *pre = NULL;
    const struct lmc_gguf_kv *toks, *types = NULL, *merges = NULL, *scores = NULL;
    bool found;
    lmc_status s = lmc_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL, err);
    if (!s) s = lmc_gguf_get_arr(g, "tokenizer.ggml.tokens", LMC_GGUF_STRING, &toks, NULL, err);
    if (!s) s = lmc_gguf_get_arr(g, "tokenizer.ggml.token_type", LMC_GGUF_I32, &types, &found, err);
    if (s) goto out;
    bool spm = !strcmp(model, "llama");
    if (!spm && strcmp(model, "gpt2")) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "GGUF tokenizer.ggml.model '%s' (lmc reads gpt2 and llama)", model);
        goto out;
    }
    if (types && types->n != toks->n) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata 'tokenizer.ggml.token_type': %llu entries for %llu tokens",
                        (unsigned long long)types->n, (unsigned long long)toks->n);
        goto out;
    }
    if (spm) {
        if ((s = lmc_gguf_get_arr(g, "tokenizer.ggml.scores", LMC_GGUF_F32, &scores, NULL, err))) goto out;
        if (scores->n != toks->n) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata 'tokenizer.ggml.scores': %llu entries for %llu tokens",
                            (unsigned long long)scores->n, (unsigned long long)toks->n);
            goto out;
        }
    } else {
        if ((s = lmc_gguf_get_arr(g, "tokenizer.ggml.merges", LMC_GGUF_STRING, &merges, NULL, err))) goto out;
        if ((s = lmc_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &found, err))) goto out;
        if (pre && !lmc_gguf_pre_regex(pre)) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "GGUF tokenizer.ggml.pre '%s' (lmc knows gpt-2, llama-bpe, qwen2)", pre);
            goto out;
        }
    }
    items = calloc((size_t)toks->n + 1, sizeof *items); /* the vocab entry of each first id */
    if (!items || !vh_init(&vh, toks)) {
        s = lmc_err_set(err, LMC_ERR_OOM, "GGUF tokenizer: out of memory");
        goto out;
    }
    cJSON *root = cJSON_CreateObject(), *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON *vocab = cJSON_CreateObject(), *mlist = cJSON_CreateArray();
    char *unk = NULL;
    for (uint64_t i = 0; i < toks->n; i++) {
        char *t = dup_str(&toks->strs[i]);
        if (!t) break;
        int64_t ty = types ? lmc_gguf_arr_i(types, i) : 1;
        if (vh_find(&vh, toks->strs[i].s, toks->strs[i].len) == (int64_t)i)
            items[i] = cJSON_AddNumberToObject(vocab, t, (double)i);
        if (ty == 2 && !unk) unk = strdup(t);
        if (ty == 3 || ty == 4 || ty == 2) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", t);
            cJSON_AddBoolToObject(a, "single_word", 0);
            cJSON_AddBoolToObject(a, "lstrip", 0);
            cJSON_AddBoolToObject(a, "rstrip", 0);
            cJSON_AddBoolToObject(a, "normalized", ty == 4);
            cJSON_AddBoolToObject(a, "special", ty != 4);
            cJSON_AddItemToArray(added, a);
        }
        free(t);
    }
    if (!spm) {
        for (uint64_t i = 0; i < merges->n; i++) {
            char *m = dup_str(&merges->strs[i]);
            char *sp = m ? strchr(m, ' ') : NULL;
            if (!sp) {
                free(m);
                cJSON_Delete(root);
                cJSON_Delete(vocab);
                cJSON_Delete(mlist);
                free(unk);
                s = lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata 'tokenizer.ggml.merges'[%llu] is not 'a b'",
                                (unsigned long long)i);
                goto out;
            }
            *sp = 0;
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(m));
            cJSON_AddItemToArray(pair, cJSON_CreateString(sp + 1));
            cJSON_AddItemToArray(mlist, pair);
            free(m);
        }
    } else { /* merges from the scores */
        int64_t cap = 1024, nc = 0;
        struct cand *c = malloc((size_t)cap * sizeof *c);
        char *buf = malloc(4096);
        for (uint64_t i = 0; c && buf && i < toks->n; i++) {
            int64_t ty = types ? lmc_gguf_arr_i(types, i) : 1;
            const struct lmc_gguf_str *t = &toks->strs[i];
            if (ty != 1 || t->len < 2 || t->len >= 4096) continue;
            for (uint64_t cut = 1; cut < t->len; cut++) {
                if ((t->s[cut] & 0xC0) == 0x80) continue; /* not inside a UTF-8 character */
                int64_t ia = vh_find(&vh, t->s, cut), ib = vh_find(&vh, t->s + cut, t->len - cut);
                const cJSON *a = ia >= 0 ? items[ia] : NULL, *b = ib >= 0 ? items[ib] : NULL;
                if (!a || !b) continue;
                if (nc == cap) {
                    struct cand *n2 = realloc(c, (size_t)(cap *= 2) * sizeof *c);
                    if (!n2) break;
                    c = n2;
                }
                c[nc++] = (struct cand){a->string, b->string, (float)lmc_gguf_arr_f(scores, i), (int64_t)a->valuedouble,
                                        (int64_t)b->valuedouble};
            }
        }
        if (c) qsort(c, (size_t)nc, sizeof *c, cmp_cand);
        for (int64_t i = 0; c && i < nc; i++) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(c[i].a));
            cJSON_AddItemToArray(pair, cJSON_CreateString(c[i].b));
            cJSON_AddItemToArray(mlist, pair);
        }
        free(c);
        free(buf);
    }
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(m, "type", "BPE");
    if (spm && unk) cJSON_AddStringToObject(m, "unk_token", unk);
    else cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddBoolToObject(m, "fuse_unk", spm);
    cJSON_AddBoolToObject(m, "byte_fallback", spm);
    cJSON_AddBoolToObject(m, "ignore_merges", 0);
    cJSON_AddItemToObject(m, "vocab", vocab);
    cJSON_AddItemToObject(m, "merges", mlist);
    if (spm) {
        cJSON_AddItemToObject(root, "normalizer",
                              cJSON_Parse("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":"
                                          "\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
                                          "\"content\":\"\\u2581\"}]}"));
        cJSON_AddNullToObject(root, "pre_tokenizer");
        cJSON_AddItemToObject(root, "decoder",
                              cJSON_Parse("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                                          "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
                                          "{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,"
                                          "\"stop\":0}]}"));
    } else {
        cJSON_AddNullToObject(root, "normalizer");
        if (!pre || !strcmp(pre, "gpt-2")) {
            cJSON_AddItemToObject(root, "pre_tokenizer",
                                  cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"
                                              "\"use_regex\":true}"));
        } else {
            cJSON *pt = cJSON_AddObjectToObject(root, "pre_tokenizer"), *seq = cJSON_AddArrayToObject(pt, "pretokenizers");
            cJSON_AddStringToObject(pt, "type", "Sequence");
            cJSON *split = cJSON_CreateObject(), *pat = cJSON_AddObjectToObject(split, "pattern");
            cJSON_AddStringToObject(split, "type", "Split");
            cJSON_AddStringToObject(pat, "Regex", lmc_gguf_pre_regex(pre));
            cJSON_AddStringToObject(split, "behavior", "Isolated");
            cJSON_AddBoolToObject(split, "invert", 0);
            cJSON_AddItemToArray(seq, split);
            cJSON_AddItemToArray(seq, cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                                                  "\"trim_offsets\":true,\"use_regex\":false}"));
        }
        cJSON_AddItemToObject(root, "decoder",
                              cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,"
                                          "\"use_regex\":true}"));
    }
    free(unk);
    *tok_json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    /* tokenizer_config.json: BOS/EOS by text, add_bos_token */
    cJSON *cfg = cJSON_CreateObject();
    const char *keys[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token"}, {"tokenizer.ggml.eos_token_id", "eos_token"}};
    for (int k = 0; k < 2; k++) {
        int64_t id;
        if (!lmc_gguf_get_int(g, keys[k][0], &id, &found, err) && found && id >= 0 && (uint64_t)id < toks->n) {
            char *t = dup_str(&toks->strs[id]);
            if (t) cJSON_AddStringToObject(cfg, keys[k][1], t);
            free(t);
        }
    }
    bool ab;
    if (!lmc_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &ab, &found, err) && found)
        cJSON_AddBoolToObject(cfg, "add_bos_token", ab);
    else cJSON_AddBoolToObject(cfg, "add_bos_token", spm);
    char *tmpl = NULL;
    if (!lmc_gguf_get_str(g, "tokenizer.chat_template", &tmpl, &found, err) && found)
        cJSON_AddStringToObject(cfg, "chat_template", tmpl);
    free(tmpl);
    *cfg_json = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    if (!*tok_json || !*cfg_json) {
        free(*tok_json);
        free(*cfg_json);
        *tok_json = *cfg_json = NULL;
        s = lmc_err_set(err, LMC_ERR_OOM, "GGUF tokenizer: out of memory");
    }
out:
    free(vh.slot);
    free(items);
    free(model);
    free(pre);
    return s;
}

lmc_status lmc_gguf_tokenizer_load(struct lmc_tokenizer **out, const char *path_or_dir, lmc_err *err) {
    if (!lmc_gguf_is_file(path_or_dir)) return lmc_tokenizer_load(out, path_or_dir, err);
    *out = NULL;
    struct lmc_gguf g;
    lmc_status s = lmc_gguf_open(&g, path_or_dir, err);
    if (s) return s;
    char *tj = NULL, *cj = NULL;
    s = lmc_gguf_tokenizer_json(&g, &tj, &cj, err);
    lmc_gguf_free(&g);
    if (!s) s = lmc_tokenizer_load_json(out, tj, strlen(tj), cj, strlen(cj), err);
    free(tj);
    free(cj);
    if (s) lmc_err_prefix(err, "%s: ", path_or_dir);
    return s;
}
