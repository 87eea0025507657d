/* sft_data.c — supervised fine-tuning data (see sft_data.h): JSONL lines
 * checked and tokenized span by span with their label flags (chat
 * messages rendered with lmc_chat_render; an assistant span is its content
 * plus the end-of-turn string that follows it), truncation, and the
 * padded or packed micro-batches. */
#include "train/sft_data.h"
#include "core/core.h"
#include "core/rng.h"
#include "tokenizer/chat_template.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MSGS 256

static lmc_status grow(struct lmc_sft_data *d, int64_t more_ids, lmc_err *err) {
    if (d->n_ids + more_ids > d->cap_ids) {
        int64_t cap = LMC_MAX(d->cap_ids * 2, d->n_ids + more_ids + 4096);
        int32_t *ids = realloc(d->ids, (size_t)cap * sizeof *ids);
        if (ids) d->ids = ids;
        uint8_t *lab = realloc(d->label, (size_t)cap);
        if (lab) d->label = lab;
        if (!ids || !lab) return lmc_err_set(err, LMC_ERR_OOM, "fine-tuning data: out of memory");
        d->cap_ids = cap;
    }
    if (d->n_ex == d->cap_ex) {
        int64_t cap = d->cap_ex ? 2 * d->cap_ex : 256;
        struct lmc_sft_example *ex = realloc(d->ex, (size_t)cap * sizeof *ex);
        if (!ex) return lmc_err_set(err, LMC_ERR_OOM, "fine-tuning data: out of memory");
        d->ex = ex;
        d->cap_ex = cap;
    }
    return LMC_OK;
}

/* Appends the tokens of text[0..len) with label flag lab to the example
 * being built (bos: add_special). */
static lmc_status add_span(struct lmc_sft_data *d, const struct lmc_tokenizer *tok, const char *text, size_t len,
                           bool bos, bool lab, lmc_err *err) {
    if (!len && !bos) return LMC_OK;
    int32_t *ids = NULL;
    int64_t n = 0;
    lmc_status s = lmc_tokenizer_encode(tok, text, len, bos, &ids, &n, err);
    if (!s && n > 0) s = grow(d, n, err);
    if (!s && n > 0) {
        memcpy(d->ids + d->n_ids, ids, (size_t)n * sizeof *ids);
        memset(d->label + d->n_ids, lab ? 1 : 0, (size_t)n);
        d->n_ids += n;
    }
    free(ids);
    return s;
}

static lmc_status add_token(struct lmc_sft_data *d, int32_t id, bool lab, lmc_err *err) {
    lmc_status s = grow(d, 1, err);
    if (s) return s;
    d->ids[d->n_ids] = id;
    d->label[d->n_ids++] = lab;
    return LMC_OK;
}

static lmc_status bad(const char *path, int64_t line, const char *what, lmc_err *err) {
    return lmc_err_set(err, LMC_ERR_FORMAT, "%s:%lld: %s", path, (long long)line, what);
}

static lmc_status render_spans(struct lmc_sft_data *d, const struct lmc_chat_template *ct, const cJSON *arr,
                               const char *path, int64_t line, const struct lmc_tokenizer *tok,
                               const struct lmc_sft_opts *o, lmc_err *err);

/* messages: the rendered conversation cut into spans; assistant spans
 * (content + the end-of-turn string right after it) are targets. */
static lmc_status add_messages(struct lmc_sft_data *d, const cJSON *arr, const char *path, int64_t line,
                               const struct lmc_tokenizer *tok, const struct lmc_sft_opts *o, lmc_err *err) {
    struct lmc_chat_template *ct = NULL;
    lmc_status s = lmc_chat_template_from_tokenizer(tok, &ct, err);
    if (s) {
        lmc_err_prefix(err, "%s:%lld: \"messages\" data needs the model's chat template (or use prompt/completion "
                       "or text data): ", path, (long long)line);
        return s;
    }
    s = render_spans(d, ct, arr, path, line, tok, o, err);
    lmc_chat_template_free(ct);
    return s;
}

/* add_messages' body with the compiled template. */
static lmc_status render_spans(struct lmc_sft_data *d, const struct lmc_chat_template *ct, const cJSON *arr,
                               const char *path, int64_t line, const struct lmc_tokenizer *tok,
                               const struct lmc_sft_opts *o, lmc_err *err) {
    lmc_status s = LMC_OK;
    struct lmc_chat_msg msgs[MAX_MSGS];
    int n = 0, last_asst = -1;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (n == MAX_MSGS) return bad(path, line, "more than 256 messages", err);
        if (!cJSON_IsString(role) || !cJSON_IsString(content))
            return bad(path, line, "every message needs string \"role\" and \"content\"", err);
        if (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
            strcmp(role->valuestring, "assistant"))
            return bad(path, line, "message role must be system, user or assistant", err);
        msgs[n].role = role->valuestring;
        msgs[n].content = content->valuestring;
        if (!strcmp(role->valuestring, "assistant")) last_asst = n;
        n++;
    }
    if (last_asst < 0) return bad(path, line, "no assistant message", err);
    const char *stops[LMC_CHAT_MAX_TURN_STOPS];
    int n_stops = lmc_chat_template_turn_stops(ct, stops);
    char *full = NULL;
    if ((s = lmc_chat_template_render_msgs(ct, msgs, last_asst + 1, &full, err))) {
        lmc_err_prefix(err, "%s:%lld: ", path, (long long)line);
        return s;
    }
    size_t done = 0, flen = strlen(full);
    for (int k = 0; k <= last_asst && !s; k++) {
        if (strcmp(msgs[k].role, "assistant")) continue;
        char *pre = NULL;
        if ((s = lmc_chat_template_render_msgs(ct, msgs, k, &pre, err))) break;
        size_t pl = strlen(pre), cl = strlen(msgs[k].content);
        if (pl < done || pl + cl > flen || strncmp(full, pre, pl) || strncmp(full + pl, msgs[k].content, cl)) {
            free(pre);
            s = bad(path, line, "the chat template does not render this conversation prefix by prefix", err);
            break;
        }
        free(pre);
        size_t e = pl + cl;
        for (int j = 0; j < n_stops; j++) { /* the end-of-turn string, maybe after a space */
            size_t sl = strlen(stops[j]);
            for (size_t gap = 0; gap <= 1; gap++)
                if (e + gap + sl <= flen && !strncmp(full + e + gap, stops[j], sl)) {
                    e += gap + sl;
                    j = n_stops;
                    break;
                }
        }
        if ((s = add_span(d, tok, full + done, pl - done, false, o->loss_all, err)) ||
            (s = add_span(d, tok, full + pl, e - pl, false, true, err)))
            break;
        done = e;
    }
    free(full);
    return s;
}

lmc_status lmc_sft_add_line(struct lmc_sft_data *d, const char *text, size_t len, int64_t line,
                            const char *path, const struct lmc_tokenizer *tok, const struct lmc_sft_opts *o,
                            lmc_err *err) {
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return bad(path, line, "not a JSON object", err);
    }
    lmc_status s = grow(d, 0, err);
    int64_t start = d->n_ids;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *comp = cJSON_GetObjectItemCaseSensitive(j, "completion");
    const cJSON *txt = cJSON_GetObjectItemCaseSensitive(j, "text");
    int32_t eos = lmc_tokenizer_eos(tok);
    if (s) {
    } else if (msgs) {
        s = cJSON_IsArray(msgs) ? add_messages(d, msgs, path, line, tok, o, err)
                                : bad(path, line, "\"messages\" must be an array", err);
    } else if (prompt || comp) {
        if (!cJSON_IsString(prompt) || !cJSON_IsString(comp))
            s = bad(path, line, "\"prompt\" and \"completion\" must both be strings", err);
        else if (!(s = add_span(d, tok, prompt->valuestring, strlen(prompt->valuestring), true, o->loss_all, err)) &&
                 !(s = add_span(d, tok, comp->valuestring, strlen(comp->valuestring), false, true, err)) && eos >= 0)
            s = add_token(d, eos, true, err);
    } else if (txt) {
        if (!cJSON_IsString(txt)) s = bad(path, line, "\"text\" must be a string", err);
        else if (!(s = add_span(d, tok, txt->valuestring, strlen(txt->valuestring), true, true, err)) && eos >= 0)
            s = add_token(d, eos, true, err);
    } else {
        s = bad(path, line, "expected \"messages\", \"prompt\"+\"completion\" or \"text\"", err);
    }
    cJSON_Delete(j);
    if (s) {
        d->n_ids = start;
        return s;
    }
    int64_t n = d->n_ids - start;
    if (n < 2) {
        d->n_ids = start;
        return bad(path, line, "fewer than two tokens", err);
    }
    if (n - 1 > o->seq && o->refuse_long) {
        d->n_ids = start;
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s:%lld: example of %lld tokens is longer than --seq %lld "
                           "(--truncate yes cuts it)", path, (long long)line, (long long)(n - 1), (long long)o->seq);
    }
    if (n - 1 > o->seq) { /* inputs n-1 after the shift */
        d->n_ids = start + o->seq + 1;
        n = o->seq + 1;
        d->n_truncated++;
    }
    int64_t targets = 0;
    for (int64_t i = 1; i < n; i++) targets += d->label[start + i];
    if (!targets) {
        d->n_ids = start;
        return bad(path, line, "no target tokens (nothing to learn after masking or truncation)", err);
    }
    d->n_targets += targets;
    d->ex[d->n_ex++] = (struct lmc_sft_example){start, n};
    return LMC_OK;
}

lmc_status lmc_sft_load(struct lmc_sft_data *d, const char *path, const struct lmc_tokenizer *tok,
                        const struct lmc_sft_opts *o, lmc_err *err) {
    memset(d, 0, sizeof *d);
    if (o->seq < 1) return lmc_err_set(err, LMC_ERR_ARG, "sequence length must be positive");
    char *text;
    size_t len;
    lmc_status s = lmc_file_read(path, (size_t)1 << 34, &text, &len, err);
    if (s) return s;
    size_t p = 0;
    int64_t line = 0;
    while (p < len && !s) {
        size_t e = p;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t q = p;
        while (q < e && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r')) q++;
        if (q < e) {
            lmc_err le = {0};
            s = lmc_sft_add_line(d, text + p, e - p, line, path, tok, o, &le);
            if (s && o->skip_bad_lines && s != LMC_ERR_OOM) {
                if (d->n_skipped < 5) lmc_log(1, "skipping %s", le.msg);
                d->n_skipped++;
                s = LMC_OK;
            } else if (s) {
                *err = le;
            }
        }
        p = e + 1;
    }
    free(text);
    if (!s && !d->n_ex) s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: no usable examples", path);
    if (s) lmc_sft_free(d);
    return s;
}

void lmc_sft_free(struct lmc_sft_data *d) {
    free(d->ids);
    free(d->label);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

lmc_status lmc_sft_split(struct lmc_sft_data *d, double fraction, uint64_t seed, struct lmc_sft_data *val,
                         lmc_err *err) {
    memset(val, 0, sizeof *val);
    if (d->n_ex < 2 || !(fraction > 0 && fraction < 1))
        return lmc_err_set(err, LMC_ERR_ARG, "validation split of %g needs a fraction in (0, 1) and at least 2 "
                           "examples (have %lld)", fraction, (long long)d->n_ex);
    int64_t nv = (int64_t)llround(fraction * (double)d->n_ex);
    nv = LMC_MAX(1, LMC_MIN(nv, d->n_ex - 1));
    uint8_t *pick = calloc((size_t)d->n_ex, 1);
    if (!pick) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    uint64_t s = seed ^ 0x76616c2d73706c69ull;
    for (int64_t k = 0; k < nv;) { /* nv distinct examples */
        int64_t i = (int64_t)(lmc_rng_next(&s) % (uint64_t)d->n_ex);
        if (!pick[i]) pick[i] = 1, k++;
    }
    lmc_status st = LMC_OK;
    int64_t kept = 0;
    d->n_targets = 0;
    for (int64_t i = 0; i < d->n_ex && !st; i++) {
        struct lmc_sft_example e = d->ex[i];
        int64_t t = 0;
        for (int64_t k = 1; k < e.n; k++) t += d->label[e.off + k];
        if (!pick[i]) {
            d->ex[kept++] = e;
            d->n_targets += t;
            continue;
        }
        if (!(st = grow(val, e.n, err))) {
            memcpy(val->ids + val->n_ids, d->ids + e.off, (size_t)e.n * sizeof *val->ids);
            memcpy(val->label + val->n_ids, d->label + e.off, (size_t)e.n);
            val->ex[val->n_ex++] = (struct lmc_sft_example){val->n_ids, e.n};
            val->n_ids += e.n;
            val->n_targets += t;
        }
    }
    d->n_ex = kept;
    free(pick);
    if (st) lmc_sft_free(val);
    return st;
}

/* ---------------- batches ---------------- */

static void shuffle(struct lmc_sft_batcher *b) {
    uint64_t s = b->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(b->epoch + 1));
    for (int64_t i = 0; i < b->d->n_ex; i++) b->order[i] = i;
    for (int64_t i = b->d->n_ex - 1; i > 0; i--) {
        int64_t j = (int64_t)(lmc_rng_next(&s) % (uint64_t)(i + 1));
        int64_t t = b->order[i];
        b->order[i] = b->order[j];
        b->order[j] = t;
    }
}

lmc_status lmc_sft_batcher_init(struct lmc_sft_batcher *b, const struct lmc_sft_data *d, int64_t B, int64_t T,
                                bool pack, uint64_t seed, int32_t pad, lmc_err *err) {
    memset(b, 0, sizeof *b);
    b->d = d;
    b->B = B;
    b->T = T;
    b->pack = pack;
    b->seed = seed;
    b->pad = pad < 0 ? 0 : pad;
    b->order = malloc((size_t)d->n_ex * sizeof *b->order);
    b->segs = malloc((size_t)(2 * (B * T + B + 1)) * sizeof *b->segs);
    if (!b->order || !b->segs) {
        lmc_sft_batcher_free(b);
        return lmc_err_set(err, LMC_ERR_OOM, "batches: out of memory");
    }
    shuffle(b);
    return LMC_OK;
}

lmc_status lmc_sft_batcher_seek(struct lmc_sft_batcher *b, int64_t epoch, int64_t next, lmc_err *err) {
    if (epoch < 0 || next < 0 || next > b->d->n_ex)
        return lmc_err_set(err, LMC_ERR_ARG, "data position epoch %lld example %lld out of range (%lld examples)",
                           (long long)epoch, (long long)next, (long long)b->d->n_ex);
    b->epoch = epoch;
    b->next = next;
    shuffle(b);
    return LMC_OK;
}

void lmc_sft_batcher_free(struct lmc_sft_batcher *b) {
    free(b->order);
    free(b->segs);
    memset(b, 0, sizeof *b);
}

static const struct lmc_sft_example *take(struct lmc_sft_batcher *b) {
    if (b->next == b->d->n_ex) {
        b->epoch++;
        b->next = 0;
        shuffle(b);
    }
    return &b->d->ex[b->order[b->next++]];
}

static const struct lmc_sft_example *peek(struct lmc_sft_batcher *b) {
    if (b->next == b->d->n_ex) return NULL; /* a batch does not cross an epoch when packing */
    return &b->d->ex[b->order[b->next]];
}

/* Example e's inputs and shifted targets at in/tg (n-1 tokens). */
static void put(const struct lmc_sft_batcher *b, const struct lmc_sft_example *e, int32_t *in, int32_t *tg) {
    const int32_t *ids = b->d->ids + e->off;
    const uint8_t *lab = b->d->label + e->off;
    for (int64_t t = 0; t + 1 < e->n; t++) {
        in[t] = ids[t];
        tg[t] = lab[t + 1] ? ids[t + 1] : -1;
    }
}

void lmc_sft_batch(struct lmc_sft_batcher *b, int32_t *in, int32_t *tg, const int64_t **segs, int64_t *n_segs) {
    int64_t BT = b->B * b->T;
    for (int64_t i = 0; i < BT; i++) {
        in[i] = b->pad;
        tg[i] = -1;
    }
    if (!b->pack) { /* one example per row, padded */
        for (int64_t r = 0; r < b->B; r++) put(b, take(b), in + r * b->T, tg + r * b->T);
        *segs = NULL;
        *n_segs = 0;
        return;
    }
    /* packed: examples in order while they fit each row; the rest of a row
     * is padding in a segment of its own */
    b->n_segs = 0;
    if (b->next == b->d->n_ex) take(b), b->next--; /* new epoch */
    for (int64_t r = 0; r < b->B; r++) {
        int64_t used = 0, o = r * b->T;
        const struct lmc_sft_example *e;
        while ((e = peek(b)) && used + e->n - 1 <= b->T) {
            take(b);
            put(b, e, in + o + used, tg + o + used);
            b->segs[2 * b->n_segs] = o + used;
            b->segs[2 * b->n_segs + 1] = e->n - 1;
            b->n_segs++;
            used += e->n - 1;
        }
        if (used < b->T) {
            b->segs[2 * b->n_segs] = o + used;
            b->segs[2 * b->n_segs + 1] = b->T - used;
            b->n_segs++;
        }
    }
    *segs = b->segs;
    *n_segs = b->n_segs;
}

int64_t lmc_sft_batches_per_epoch(const struct lmc_sft_batcher *b) {
    if (!b->pack) return (b->d->n_ex + b->B - 1) / b->B;
    int64_t rows = 0, used = b->T;
    for (int64_t i = 0; i < b->d->n_ex; i++) {
        int64_t n = b->d->ex[b->order[i]].n - 1;
        if (used + n > b->T) {
            rows++;
            used = 0;
        }
        used += n;
    }
    return (rows + b->B - 1) / b->B;
}
