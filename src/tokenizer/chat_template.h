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
};

struct lmc_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
};

/* Detects the style of a Jinja chat template; LMC_ERR_UNSUPPORTED with a
 * clear message if it matches none. NULL template -> LMC_CHAT_NONE. */
lmc_status lmc_chat_detect(const char *tmpl, enum lmc_chat_style *style, lmc_err *err);
/* Renders msgs with the generation prompt for the assistant appended
 * (add_generation_prompt=True). bos/eos are the tokenizer's strings (may be
 * NULL). *out is malloc'd. */
lmc_status lmc_chat_render(enum lmc_chat_style style, const struct lmc_chat_msg *msgs, int n,
                           const char *bos, const char *eos, char **out, lmc_err *err);
const char *lmc_chat_style_name(enum lmc_chat_style s);

#endif
