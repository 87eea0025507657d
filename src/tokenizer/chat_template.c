/* chat_template.c — recognises a model's Jinja chat template by its markers
 * (Llama 3 / 3.1 / 3.2, ChatML with or without Qwen's default system
 * message, Llama 2 with <<SYS>>, Mistral [INST], Zephyr) and renders a
 * conversation exactly as that template renders with
 * add_generation_prompt=True, with our own code instead of a Jinja engine. */
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char qwen2_default[] = "You are a helpful assistant.";
static const char qwen25_default[] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

const char *lmc_chat_style_name(enum lmc_chat_style s) {
    switch (s) {
    case LMC_CHAT_NONE: return "none";
    case LMC_CHAT_LLAMA3: return "llama3";
    case LMC_CHAT_CHATML: return "chatml";
    case LMC_CHAT_LLAMA2: return "llama2";
    case LMC_CHAT_ZEPHYR: return "zephyr";
    case LMC_CHAT_CHATML_QWEN: return "qwen2";
    case LMC_CHAT_CHATML_QWEN25: return "qwen2.5";
    case LMC_CHAT_MISTRAL: return "mistral";
    case LMC_CHAT_LLAMA31: return "llama3.1";
    case LMC_CHAT_LLAMA32: return "llama3.2";
    }
    return "unknown";
}

lmc_status lmc_chat_detect(const char *tmpl, enum lmc_chat_style *style, lmc_err *err) {
    *style = LMC_CHAT_NONE;
    if (!tmpl) return LMC_OK;
    if (strstr(tmpl, "<|start_header_id|>")) {
        if (strstr(tmpl, "Cutting Knowledge Date"))
            *style = strstr(tmpl, "strftime_now") ? LMC_CHAT_LLAMA32 : LMC_CHAT_LLAMA31;
        else
            *style = LMC_CHAT_LLAMA3;
    } else if (strstr(tmpl, "<|im_start|>")) {
        if (strstr(tmpl, qwen25_default)) *style = LMC_CHAT_CHATML_QWEN25;
        else if (strstr(tmpl, qwen2_default)) *style = LMC_CHAT_CHATML_QWEN;
        else *style = LMC_CHAT_CHATML;
    } else if (strstr(tmpl, "[INST]")) {
        *style = strstr(tmpl, "<<SYS>>") ? LMC_CHAT_LLAMA2 : LMC_CHAT_MISTRAL;
    } else if (strstr(tmpl, "<|user|>") && strstr(tmpl, "<|assistant|>") && !strstr(tmpl, "<|end|>") &&
               (strstr(tmpl, "</s>") || strstr(tmpl, "eos_token"))) {
        *style = LMC_CHAT_ZEPHYR;
    } else {
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "chat template not recognised; supported styles are Llama 3 (<|start_header_id|>), "
                           "ChatML/Qwen (<|im_start|>), Llama 2/Mistral ([INST]) and Zephyr (<|user|> ... </s>)");
    }
    return LMC_OK;
}

/* Output buffer; ok turns false on allocation failure. */
struct out {
    char *p;
    size_t n, cap;
    bool ok;
};

static void put(struct out *o, const char *s, size_t n) {
    if (!o->ok) return;
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n + 1) cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->ok = false;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = 0;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* Writes s with surrounding whitespace removed (Python str.strip / Jinja trim). */
static void put_strip(struct out *o, const char *s) {
    size_t n = strlen(s), a = 0, b = n;
    while (a < b) {
        uint32_t cp;
        int l = lmc_tok_utf8_next(s + a, b - a, &cp);
        if (!lmc_tok_is_space(cp) && !(cp >= 0x1c && cp <= 0x1f)) break;
        a += (size_t)l;
    }
    while (b > a) {
        size_t q = b - 1;
        while (q > a && ((unsigned char)s[q] & 0xc0) == 0x80) q--;
        uint32_t cp;
        lmc_tok_utf8_next(s + q, b - q, &cp);
        if (!lmc_tok_is_space(cp) && !(cp >= 0x1c && cp <= 0x1f)) break;
        b = q;
    }
    put(o, s + a, b - a);
}

static bool is(const char *role, const char *want) { return role && strcmp(role, want) == 0; }

static lmc_status render_llama3(struct out *o, const struct lmc_chat_msg *m, int n, const char *bos, int variant) {
    puts_(o, bos);
    int first = 0;
    if (variant > 0) { /* 3.1 / 3.2: the system block is always written */
        char date[32] = "26 Jul 2024";
        if (variant == 2) {
            time_t now = time(NULL);
            struct tm tmv;
            if (localtime_r(&now, &tmv)) strftime(date, sizeof date, "%d %b %Y", &tmv);
        }
        puts_(o, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ");
        puts_(o, date);
        puts_(o, "\n\n");
        if (n > 0 && is(m[0].role, "system")) {
            put_strip(o, m[0].content);
            first = 1;
        }
        puts_(o, "<|eot_id|>");
    }
    for (int i = first; i < n; i++) {
        puts_(o, "<|start_header_id|>");
        puts_(o, m[i].role);
        puts_(o, "<|end_header_id|>\n\n");
        put_strip(o, m[i].content);
        puts_(o, "<|eot_id|>");
    }
    puts_(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return LMC_OK;
}

static lmc_status render_chatml(struct out *o, const struct lmc_chat_msg *m, int n, const char *def_system) {
    if (def_system && n > 0 && !is(m[0].role, "system")) {
        puts_(o, "<|im_start|>system\n");
        puts_(o, def_system);
        puts_(o, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        puts_(o, "<|im_start|>");
        puts_(o, m[i].role);
        puts_(o, "\n");
        puts_(o, m[i].content);
        puts_(o, "<|im_end|>\n");
    }
    puts_(o, "<|im_start|>assistant\n");
    return LMC_OK;
}

static lmc_status alternation_error(lmc_err *err, int i) {
    return lmc_err_set(err, LMC_ERR_ARG,
                       "chat message %d: conversation roles must alternate user/assistant/user/assistant/... "
                       "(after an optional first system message)", i);
}

static lmc_status render_llama2(struct out *o, const struct lmc_chat_msg *m, int n, const char *bos, const char *eos,
                                lmc_err *err) {
    const char *sys = NULL;
    int first = 0;
    if (n > 0 && is(m[0].role, "system")) {
        sys = m[0].content;
        first = 1;
    }
    for (int i = first; i < n; i++) {
        bool user_turn = (i - first) % 2 == 0;
        if (is(m[i].role, "user") != user_turn || !(is(m[i].role, "user") || is(m[i].role, "assistant")))
            return alternation_error(err, i);
        if (user_turn) {
            puts_(o, bos);
            puts_(o, "[INST] ");
            if (i == first && sys) {
                /* '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content, then .strip() */
                struct out c = {.ok = true};
                puts_(&c, "<<SYS>>\n");
                puts_(&c, sys);
                puts_(&c, "\n<</SYS>>\n\n");
                puts_(&c, m[i].content);
                if (!c.ok) {
                    free(c.p);
                    o->ok = false;
                    return LMC_OK;
                }
                put_strip(o, c.p);
                free(c.p);
            } else {
                put_strip(o, m[i].content);
            }
            puts_(o, " [/INST]");
        } else {
            puts_(o, " ");
            put_strip(o, m[i].content);
            puts_(o, " ");
            puts_(o, eos);
        }
    }
    return LMC_OK;
}

static lmc_status render_mistral(struct out *o, const struct lmc_chat_msg *m, int n, const char *bos, const char *eos,
                                 lmc_err *err) {
    puts_(o, bos);
    for (int i = 0; i < n; i++) {
        if (is(m[i].role, "system"))
            return lmc_err_set(err, LMC_ERR_ARG,
                               "chat message %d: this Mistral template supports only user and assistant roles", i);
        if (is(m[i].role, "user") != (i % 2 == 0) || !(is(m[i].role, "user") || is(m[i].role, "assistant")))
            return alternation_error(err, i);
        if (i % 2 == 0) {
            puts_(o, "[INST] ");
            puts_(o, m[i].content);
            puts_(o, " [/INST]");
        } else {
            puts_(o, m[i].content);
            puts_(o, eos);
        }
    }
    return LMC_OK;
}

static lmc_status render_zephyr(struct out *o, const struct lmc_chat_msg *m, int n, const char *eos) {
    for (int i = 0; i < n; i++) {
        if (!is(m[i].role, "user") && !is(m[i].role, "system") && !is(m[i].role, "assistant")) continue;
        puts_(o, "<|");
        puts_(o, m[i].role);
        puts_(o, "|>\n");
        puts_(o, m[i].content);
        puts_(o, eos);
        puts_(o, "\n");
    }
    /* the template writes the prompt inside the loop (loop.last) */
    if (n > 0) puts_(o, "<|assistant|>\n");
    return LMC_OK;
}

lmc_status lmc_chat_render(enum lmc_chat_style style, const struct lmc_chat_msg *msgs, int n, const char *bos,
                           const char *eos, char **out, lmc_err *err) {
    *out = NULL;
    if (n < 0 || (n > 0 && !msgs)) return lmc_err_set(err, LMC_ERR_ARG, "chat: %d messages given", n);
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return lmc_err_set(err, LMC_ERR_ARG, "chat message %d: role and content are required", i);
    bool llama3 = style == LMC_CHAT_LLAMA3 || style == LMC_CHAT_LLAMA31 || style == LMC_CHAT_LLAMA32;
    if (!bos) bos = llama3 ? "<|begin_of_text|>" : "<s>";
    if (!eos) eos = llama3 ? "<|eot_id|>" : "</s>";
    struct out o = {.ok = true};
    lmc_status st;
    switch (style) {
    case LMC_CHAT_LLAMA3: st = render_llama3(&o, msgs, n, bos, 0); break;
    case LMC_CHAT_LLAMA31: st = render_llama3(&o, msgs, n, bos, 1); break;
    case LMC_CHAT_LLAMA32: st = render_llama3(&o, msgs, n, bos, 2); break;
    case LMC_CHAT_CHATML: st = render_chatml(&o, msgs, n, NULL); break;
    case LMC_CHAT_CHATML_QWEN: st = render_chatml(&o, msgs, n, qwen2_default); break;
    case LMC_CHAT_CHATML_QWEN25: st = render_chatml(&o, msgs, n, qwen25_default); break;
    case LMC_CHAT_LLAMA2: st = render_llama2(&o, msgs, n, bos, eos, err); break;
    case LMC_CHAT_MISTRAL: st = render_mistral(&o, msgs, n, bos, eos, err); break;
    case LMC_CHAT_ZEPHYR: st = render_zephyr(&o, msgs, n, eos); break;
    default:
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "chat: the model has no chat template (style '%s')",
                           lmc_chat_style_name(style));
    }
    if (st == LMC_OK && !o.ok) st = lmc_err_set(err, LMC_ERR_OOM, "chat: out of memory while rendering");
    if (st == LMC_OK && !o.p) {
        puts_(&o, "");
        if (!o.ok) st = lmc_err_set(err, LMC_ERR_OOM, "chat: out of memory while rendering");
    }
    if (st) {
        free(o.p);
        return st;
    }
    *out = o.p;
    return LMC_OK;
}

int lmc_chat_turn_stops(enum lmc_chat_style st, const char **out) {
    switch (st) {
    case LMC_CHAT_LLAMA3:
    case LMC_CHAT_LLAMA31:
    case LMC_CHAT_LLAMA32: out[0] = "<|eot_id|>"; return 1;
    case LMC_CHAT_CHATML:
    case LMC_CHAT_CHATML_QWEN:
    case LMC_CHAT_CHATML_QWEN25: out[0] = "<|im_end|>"; return 1;
    case LMC_CHAT_ZEPHYR: out[0] = "</s>"; out[1] = "<|user|>"; return 2;
    case LMC_CHAT_LLAMA2:
    case LMC_CHAT_MISTRAL: out[0] = "</s>"; out[1] = "[INST]"; return 2;
    default: return 0;
    }
}
