/* tool_call.h — turns a chat model's reply text into OpenAI-style tool
 * calls, by the format its chat template taught it: Hermes/Qwen
 * (<tool_call>{"name", "arguments"}</tool_call>, any number), Llama 3.x
 * (a bare JSON object {"name", "parameters"}, optionally after
 * <|python_tag|>, several separated by ';'), Mistral ([TOOL_CALLS] followed
 * by a JSON list, or name[ARGS]{json} per call), or generic JSON (the whole
 * reply, optionally in a ```json fence, is a call, a list of calls or
 * {"tool_calls": [...]}), Qwen3-Coder XML (<tool_call><function=NAME>
 * <parameter=KEY>value</parameter></function></tool_call>) and GLM
 * (<tool_call>NAME<arg_key>KEY</arg_key><arg_value>value</arg_value>
 * </tool_call>), whose values are JSON when they parse as JSON and strings
 * otherwise. All or nothing: a reply with any malformed or
 * truncated call comes back as plain content with no calls. */
#ifndef LMC_TOOL_CALL_H
#define LMC_TOOL_CALL_H

#include "lmc.h"

#include <stddef.h>

enum lmc_tool_format { LMC_TOOL_JSON = 0, LMC_TOOL_HERMES, LMC_TOOL_LLAMA3, LMC_TOOL_MISTRAL, LMC_TOOL_QWEN3_XML,
                       LMC_TOOL_GLM };

struct lmc_tool_call {
    char *id;          /* the model's id if it gave one, else "call_" + 24 hex digits */
    char *name;
    char *arguments;   /* a JSON object as compact text (OpenAI's function.arguments) */
};

struct lmc_tool_parse {
    char *content;     /* the reply without the calls (trimmed); "" when only calls */
    struct lmc_tool_call *calls;
    int n_calls;
};

/* "hermes", "llama3", "mistral", "qwen3_xml", "glm", "json" (lmc_chat_template_tool_format's names) -> format */
enum lmc_tool_format lmc_tool_format_from_name(const char *name);
/* Parses text[0..n). Only allocation failure is an error; *out is always
 * filled on LMC_OK. */
lmc_status lmc_tool_calls_parse(const char *text, size_t n, enum lmc_tool_format fmt, struct lmc_tool_parse *out,
                                lmc_err *err);
void lmc_tool_parse_free(struct lmc_tool_parse *p);

#endif
