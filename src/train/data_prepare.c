/* data_prepare.c — turns a text or JSONL corpus into token shards: cuts
 * documents (blank lines, lines, whole files, or one JSONL field per line),
 * tokenizes each, appends EOS, routes it to train or val by a seeded hash of
 * its number (or to val from a given line on), rolls shards over at a token budget, and writes meta.json. */
#include "train/data.h"

#include "core/core.h"
#include "core/rng.h"
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct prep {
    const struct lmc_prepare_opts *o;
    struct lmc_prepare_stats *st;
    struct lmc_tokenizer *tok;
    struct lmc_shard_writer *w[2];
    uint64_t doc_no;
    int64_t line_base; /* lines of the inputs before the current one */
    uint64_t shard_tokens;
    lmc_err *err;
};

static const char *const split_name[2] = {"train", "val"};

static lmc_status open_shard(struct prep *P, int s) {
    char name[64], path[4096];
    snprintf(name, sizeof name, "%s_%05d.bin", split_name[s], P->st->shards[s]);
    if (!lmc_path_join(path, sizeof path, P->o->out_dir, name))
        return lmc_err_set(P->err, LMC_ERR_ARG, "%s: path too long", P->o->out_dir);
    lmc_status st = lmc_shard_writer_open(&P->w[s], path, P->st->vocab_size, P->st->dtype, P->st->eos_id, P->err);
    if (!st) P->st->shards[s]++;
    return st;
}

/* Tokenizes one document and appends it (and EOS) to its split. where/line
 * name it in messages. */
static lmc_status add_doc(struct prep *P, const char *text, size_t len, const char *where, int64_t line) {
    if (len == 0) return LMC_OK;
    uint64_t k = P->doc_no++;
    uint64_t h = P->o->seed ^ (k * 0x9e3779b97f4a7c15ull);
    int s = lmc_rng_uniform(&h) < P->o->val_fraction ? 1 : 0;
    if (P->o->val_from_line > 0 && P->line_base + line >= P->o->val_from_line) s = 1;
    int32_t *ids = NULL;
    int64_t n = 0;
    lmc_status st = lmc_tokenizer_encode(P->tok, text, len, false, &ids, &n, P->err);
    if (st) return lmc_err_prefix(P->err, "%s: document at line %lld: ", where, (long long)line);
    if (P->w[s] && lmc_shard_writer_tokens(P->w[s]) >= P->shard_tokens) {
        st = lmc_shard_writer_close(P->w[s], P->err);
        P->w[s] = NULL;
        if (st) goto out;
    }
    if (!P->w[s] && (st = open_shard(P, s))) goto out;
    int32_t eos = (int32_t)P->st->eos_id;
    if ((st = lmc_shard_writer_add(P->w[s], ids, n, P->err)) || (st = lmc_shard_writer_add(P->w[s], &eos, 1, P->err)))
        goto out;
    lmc_shard_writer_end_doc(P->w[s]);
    P->st->docs[s]++;
    P->st->tokens[s] += (uint64_t)n + 1;
out:
    free(ids);
    return st;
}

static bool blank_line(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* A paragraph document without the line break that ends its last line. */
static lmc_status add_par(struct prep *P, const char *s, size_t n, const char *where, int64_t line) {
    if (n && s[n - 1] == '\n') n--;
    if (n && s[n - 1] == '\r') n--;
    return add_doc(P, s, n, where, line);
}

static lmc_status text_file(struct prep *P, const char *path, const char *buf, size_t len) {
    if (P->o->doc_split == LMC_DOC_FILE) return add_doc(P, buf, len, path, 1);
    size_t doc_start = 0, i = 0;
    int64_t line = 1, doc_line = 1;
    bool in_doc = false;
    lmc_status st;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) + 1 : len; /* line [i, end) with its newline */
        bool blank = blank_line(buf + i, (nl ? (size_t)(nl - buf) : len) - i);
        if (P->o->doc_split == LMC_DOC_LINE) {
            if (!blank && (st = add_par(P, buf + i, end - i, path, line))) return st;
        } else if (blank) {
            if (in_doc && (st = add_par(P, buf + doc_start, i - doc_start, path, doc_line))) return st;
            in_doc = false;
        } else if (!in_doc) {
            in_doc = true;
            doc_start = i;
            doc_line = line;
        }
        i = end;
        line++;
    }
    if (in_doc) return add_par(P, buf + doc_start, len - doc_start, path, doc_line);
    return LMC_OK;
}

static lmc_status jsonl_file(struct prep *P, const char *path, const char *buf, size_t len) {
    size_t i = 0;
    int64_t line = 0;
    while (i < len) {
        line++;
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        if (!blank_line(buf + i, e - i)) {
            cJSON *j = cJSON_ParseWithLength(buf + i, e - i);
            if (!j || !cJSON_IsObject(j)) {
                cJSON_Delete(j);
                return lmc_err_set(P->err, LMC_ERR_FORMAT, "%s:%lld: expected a JSON object", path, (long long)line);
            }
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, P->o->field);
            if (!cJSON_IsString(f)) {
                cJSON_Delete(j);
                return lmc_err_set(P->err, LMC_ERR_FORMAT, "%s:%lld: field \"%s\": expected a string", path,
                                   (long long)line, P->o->field);
            }
            lmc_status st = add_doc(P, f->valuestring, strlen(f->valuestring), path, line);
            cJSON_Delete(j);
            if (st) return st;
        }
        i = e + 1;
    }
    return LMC_OK;
}

static lmc_status write_meta(struct prep *P) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", LMC_SHARD_MAGIC);
    cJSON_AddStringToObject(m, "tokenizer", P->o->tokenizer_dir);
    cJSON_AddNumberToObject(m, "vocab_size", P->st->vocab_size);
    cJSON_AddNumberToObject(m, "eos_id", P->st->eos_id);
    cJSON_AddStringToObject(m, "dtype", P->st->dtype == 2 ? "uint16" : "uint32");
    cJSON_AddNumberToObject(m, "val_fraction", P->o->val_fraction);
    cJSON_AddNumberToObject(m, "seed", (double)P->o->seed);
    if (P->o->val_from_line > 0) cJSON_AddNumberToObject(m, "val_from_line", (double)P->o->val_from_line);
    for (int s = 0; s < 2; s++) {
        cJSON *o = cJSON_AddObjectToObject(m, split_name[s]);
        cJSON_AddNumberToObject(o, "documents", (double)P->st->docs[s]);
        cJSON_AddNumberToObject(o, "tokens", (double)P->st->tokens[s]);
        cJSON_AddNumberToObject(o, "shards", P->st->shards[s]);
    }
    char *txt = cJSON_Print(m);
    cJSON_Delete(m);
    char path[4096];
    lmc_status st = LMC_OK;
    if (!txt) return lmc_err_set(P->err, LMC_ERR_OOM, "meta.json: out of memory");
    if (!lmc_path_join(path, sizeof path, P->o->out_dir, "meta.json")) {
        st = lmc_err_set(P->err, LMC_ERR_ARG, "%s: path too long", P->o->out_dir);
    } else {
        FILE *f = fopen(path, "wb");
        if (!f || fputs(txt, f) < 0 || fputc('\n', f) == EOF) st = lmc_err_set(P->err, LMC_ERR_IO, "%s: write failed", path);
        if (f && fclose(f) != 0 && !st) st = lmc_err_set(P->err, LMC_ERR_IO, "%s: write failed", path);
    }
    free(txt);
    return st;
}

lmc_status lmc_prepare_data(const struct lmc_prepare_opts *o, struct lmc_prepare_stats *stats, lmc_err *err) {
    memset(stats, 0, sizeof *stats);
    if (!(o->val_fraction >= 0 && o->val_fraction <= 1))
        return lmc_err_set(err, LMC_ERR_ARG, "prepare data: val fraction %g: expected 0..1", o->val_fraction);
    if (o->dtype != 0 && o->dtype != 2 && o->dtype != 4)
        return lmc_err_set(err, LMC_ERR_ARG, "prepare data: dtype %u: expected 2 (uint16) or 4 (uint32)", o->dtype);
    if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create folder: %s", o->out_dir, strerror(errno));
    struct prep P = {.o = o, .st = stats, .err = err, .shard_tokens = o->shard_tokens ? o->shard_tokens : 1ull << 28};
    lmc_status st = lmc_tokenizer_load(&P.tok, o->tokenizer_dir, err);
    if (st) return st;
    int64_t vocab = lmc_tokenizer_vocab_size(P.tok);
    int32_t eos = lmc_tokenizer_eos(P.tok);
    if (eos < 0) {
        st = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: the tokenizer has no EOS token to separate documents",
                         o->tokenizer_dir);
        goto done;
    }
    stats->vocab_size = (uint32_t)vocab;
    stats->eos_id = (uint32_t)eos;
    stats->dtype = o->dtype ? o->dtype : vocab <= 65536 ? 2 : 4;
    if (stats->dtype == 2 && vocab > 65536) {
        st = lmc_err_set(err, LMC_ERR_ARG, "%s: vocab size %lld does not fit uint16 ids", o->tokenizer_dir,
                         (long long)vocab);
        goto done;
    }
    for (int k = 0; k < o->n_inputs && !st; k++) {
        char *buf;
        size_t len;
        if ((st = lmc_file_read(o->inputs[k], (size_t)1 << 36, &buf, &len, err))) break;
        stats->bytes += len;
        st = o->jsonl ? jsonl_file(&P, o->inputs[k], buf, len) : text_file(&P, o->inputs[k], buf, len);
        for (size_t i = 0; i < len; i++) P.line_base += buf[i] == '\n';
        if (len && buf[len - 1] != '\n') P.line_base++;
        free(buf);
    }
    /* a split with no documents still gets an (empty) shard, so readers find it */
    for (int s = 0; s < 2 && !st; s++)
        if (!P.w[s] && stats->shards[s] == 0) st = open_shard(&P, s);
    for (int s = 0; s < 2; s++) {
        lmc_status cs = lmc_shard_writer_close(P.w[s], st ? NULL : err);
        if (!st) st = cs;
    }
    if (!st) st = write_meta(&P);
done:
    lmc_tokenizer_free(P.tok);
    return st;
}
