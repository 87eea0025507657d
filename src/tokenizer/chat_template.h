/* chat_template.h — renders a conversation into a prompt string following
 * the model's chat template. The Jinja template text is recognised as one of
 * the known styles (Llama 3, ChatML/Qwen, Mistral/Llama 2 [INST], Zephyr)
 * and rendered by our own code; anything else is reported as unsupported
 * rather than guessed. */
#ifndef LMC_CHAT_TEMPLATE_H
#define LMC_CHAT_TEMPLATE_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>

enum lmc_chat_style {
    LMC_CHAT_NONE = 0,   /* no template */
    LMC_CHAT_LLAMA3,
    LMC_CHAT_CHATML,
    LMC_CHAT_LLAMA2,     /* Llama 2 / Mistral [INST] ... [/INST] */
    LMC_CHAT_ZEPHYR,
    LMC_CHAT_CHATML_QWEN,   /* ChatML + default system "You are a helpful assistant." (Qwen2) */
    LMC_CHAT_CHATML_QWEN25, /* ChatML + default system "You are Qwen, created by Alibaba Cloud. ..." */
    LMC_CHAT_MISTRAL,       /* [INST] without <<SYS>>; a system message is refused, as the template does */
    LMC_CHAT_LLAMA31,       /* Llama 3.1: system header with "Cutting Knowledge Date", date 26 Jul 2024 */
    LMC_CHAT_LLAMA32,       /* Llama 3.2/3.3: as 3.1 with today's date (strftime_now) */
};

struct lmc_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
};

/* Detects the style of a Jinja chat template; LMC_ERR_UNSUPPORTED with a
 * clear message if it matches none. NULL template -> LMC_CHAT_NONE. */
lmc_status lmc_chat_detect(const char *tmpl, enum lmc_chat_style *style, lmc_err *err);
/* Renders msgs with the generation prompt for the assistant appended
 * (add_generation_prompt=True). bos/eos are the tokenizer's strings (NULL:
 * the family's usual "<s>"/"</s>" or "<|begin_of_text|>"). The result starts
 * with the BOS text where the template writes it, so encode it without
 * add_special. Role orders a template refuses -> LMC_ERR_ARG. *out is
 * malloc'd. */
lmc_status lmc_chat_render(enum lmc_chat_style style, const struct lmc_chat_msg *msgs, int n,
                           const char *bos, const char *eos, char **out, lmc_err *err);
const char *lmc_chat_style_name(enum lmc_chat_style s);

#define LMC_CHAT_MAX_TURN_STOPS 2
/* The strings that end an assistant turn in this style (e.g. "<|eot_id|>"),
 * for use as stop strings; writes up to LMC_CHAT_MAX_TURN_STOPS pointers to
 * static strings into out and returns how many. */
int lmc_chat_turn_stops(enum lmc_chat_style s, const char **out);

#endif
