/* chat_template.h — a model's chat template(s), rendered by the Jinja engine
 * (src/template) with the variables transformers' apply_chat_template
 * passes: messages, tools, documents, add_generation_prompt, the special
 * tokens of tokenizer_config.json (bos_token, eos_token, ...) and extra
 * keyword arguments such as enable_thinking. Templates come from
 * --chat-template FILE, else the template files beside the model
 * (chat_template.jinja = "default", additional_chat_templates/NAME.jinja),
 * else tokenizer_config.json's chat_template (a string, or a list of named
 * templates); "tool_use" is chosen when tools are given, else "default". */
#ifndef LMC_CHAT_TEMPLATE_H
#define LMC_CHAT_TEMPLATE_H

#include "lmc.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

struct lmc_tokenizer;
struct lmc_chat_template;

struct lmc_chat_msg {
    const char *role;    /* "system", "user", "assistant", "tool", ... */
    const char *content;
};

/* Compiles one template text with the given special tokens (NULL: none). */
lmc_status lmc_chat_template_new(const char *text, const char *bos, const char *eos, struct lmc_chat_template **out,
                                 lmc_err *err);
/* The template the tokenizer loaded (tokenizer_config.json or
 * chat_template.jinja) with its bos/eos strings; LMC_ERR_UNSUPPORTED with a
 * clear message when the model has none. */
lmc_status lmc_chat_template_from_tokenizer(const struct lmc_tokenizer *tok, struct lmc_chat_template **out,
                                            lmc_err *err);
/* From a model folder: template_file if given, else chat_template.jinja and
 * additional_chat_templates/NAME.jinja, else tokenizer_config.json's
 * chat_template (every named template kept);
 * special tokens from tokenizer_config.json, falling back to tok's bos/eos
 * (tok may be NULL). */
lmc_status lmc_chat_template_load(const char *model_dir, const char *template_file, const struct lmc_tokenizer *tok,
                                  struct lmc_chat_template **out, lmc_err *err);
void lmc_chat_template_free(struct lmc_chat_template *ct);

struct lmc_chat_render_opts {
    const cJSON *tools;        /* array or NULL (None) */
    const cJSON *documents;    /* array or NULL (None) */
    const cJSON *kwargs;       /* object of extra variables (enable_thinking, ...) or NULL */
    bool add_generation_prompt;
    int now_year, now_month, now_day;   /* strftime_now's date; 0: the clock */
};

/* Renders messages (a cJSON array of message objects). Errors carry the
 * template's own message, e.g. "TemplateError: System role not supported".
 * *out is malloc'd. */
lmc_status lmc_chat_template_render(const struct lmc_chat_template *ct, const cJSON *messages,
                                    const struct lmc_chat_render_opts *o, char **out, lmc_err *err);
/* Renders role/content messages with add_generation_prompt=True. */
lmc_status lmc_chat_template_render_msgs(const struct lmc_chat_template *ct, const struct lmc_chat_msg *msgs, int n,
                                         char **out, lmc_err *err);

#define LMC_CHAT_MAX_TURN_STOPS 4
/* Strings that end an assistant turn for this template (its end-of-turn
 * marker, e.g. "<|im_end|>", and the eos token), for use as stop strings;
 * the pointers live as long as ct. Returns how many (<= the max). */
int lmc_chat_template_turn_stops(const struct lmc_chat_template *ct, const char **out);
/* The tool-call text format the template teaches the model: "hermes"
 * (<tool_call>{json}</tool_call>), "qwen3_xml" (<function=...>), "glm"
 * (<arg_key>), "llama3" (bare JSON with "parameters"), "mistral"
 * ([TOOL_CALLS]) or "json" (anything else). */
const char *lmc_chat_template_tool_format(const struct lmc_chat_template *ct);

#endif
