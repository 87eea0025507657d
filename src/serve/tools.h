/* tools.h — tool calling and structured output of the OpenAI endpoints
 * (tools.c): the request fields `tools`, `tool_choice`,
 * `parallel_tool_calls` and `response_format`, chat messages with
 * `tool_calls` and `role: "tool"` kept as JSON for the chat template, the
 * grammar that constrains sampling (the tool's parameter schema for a
 * named tool_choice, a list of calls for "required", the response_format
 * schema otherwise), and the reply turned into `tool_calls` in responses
 * and stream deltas. */
#ifndef LMC_SERVE_TOOLS_H
#define LMC_SERVE_TOOLS_H

#include "lmc.h"
#include "infer/grammar.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lmc_serve_request;
struct lmc_serve_error;
struct lmc_chat_template;

enum lmc_serve_tool_choice { LMC_SERVE_TOOLS_AUTO = 0, LMC_SERVE_TOOLS_NONE, LMC_SERVE_TOOLS_REQUIRED,
                             LMC_SERVE_TOOLS_NAMED };
enum lmc_serve_rf { LMC_SERVE_RF_TEXT = 0, LMC_SERVE_RF_JSON_OBJECT, LMC_SERVE_RF_JSON_SCHEMA };

struct lmc_serve_ext {
    cJSON *messages;                  /* chat: the messages as the template sees them */
    cJSON *tools;                     /* the request's tools (a non-empty array) or NULL */
    enum lmc_serve_tool_choice choice;
    char *choice_name;                /* NAMED: the function */
    bool parallel;                    /* parallel_tool_calls (default true) */
    enum lmc_serve_rf rf;
    struct lmc_grammar *grammar;      /* what sampling must follow, or NULL */
};

/* Reads the fields above from a request object whose basic fields
 * (messages' roles and contents in r->msgs) are parsed already; builds
 * r->x and sets r->r.grammar. 400 errors name the field. */
lmc_status lmc_serve_ext_parse(const cJSON *root, struct lmc_serve_request *r, struct lmc_serve_error *e);
void lmc_serve_ext_free(struct lmc_serve_ext *x);

/* Renders the chat prompt (messages, tools unless tool_choice is "none",
 * add_generation_prompt) with the template; *out is malloc'd. */
lmc_status lmc_serve_ext_render(const struct lmc_chat_template *ct, const struct lmc_serve_ext *x, char **out,
                                lmc_err *err);

/* Whether replies are read as tool calls (tools given, tool_choice not "none"). */
bool lmc_serve_ext_tool_mode(const struct lmc_serve_ext *x);

/* One finished choice's reply read as tool calls by the template's format
 * (lmc_chat_template_tool_format's name): a JSON object
 * {"content": string|null, "tool_calls": [...] (absent when none),
 * "finish_reason"} with finish_reason "tool_calls" when there are calls. A
 * malformed call leaves the whole reply as content. NULL: out of memory. */
cJSON *lmc_serve_ext_reply(const struct lmc_serve_ext *x, const char *format, const char *text, size_t len,
                           const char *finish_reason);

/* A non-streamed chat response (JSON text, freed here) with each choice's
 * message rewritten by lmc_serve_ext_reply; returns the new text. Call ids
 * lmc generated are made unique per response id and choice (here and in
 * the streams). */
char *lmc_serve_ext_response(char *body, const struct lmc_serve_ext *x, const char *format, const char *const *texts,
                             const size_t *lens, int n);

/* The SSE events of one finished choice in tool mode, as OpenAI streams
 * them: the role (first), then per call a delta with index, id, type and
 * function.name (arguments ""), then its arguments in fragments; or the
 * content; then the finish chunk. */
char *lmc_serve_ext_stream(const struct lmc_serve_ext *x, const char *format, const char *id, int64_t created,
                           const char *model, int index, bool first, const char *text, size_t len,
                           const char *finish_reason);

/* tool_choice "auto" streams its content as it decodes: of text[0..len)
 * (the reply so far), *sent bytes went out already; the text up to where
 * a tool call could begin (the format's marker such as <tool_call>, a
 * possible prefix of it at the end, or, for the Llama 3 and generic JSON
 * formats, a reply that opens with JSON) goes out as content deltas, the
 * rest is held. With finish_reason set, what was held is read as tool
 * calls (lmc_serve_ext_stream's events) and the finish chunk follows.
 * first: the role goes out first. NULL: out of memory; "" when there is
 * nothing to send. */
char *lmc_serve_ext_stream_auto(const struct lmc_serve_ext *x, const char *format, const char *id, int64_t created,
                                const char *model, int index, bool first, const char *text, size_t len, size_t *sent,
                                const char *finish_reason);

/* A named tool_choice streams as it decodes (the output is the
 * arguments): on the first call (first) the role and the call's head (index
 * 0, id call_ + hex of the hash of req_id and index, type, function.name,
 * arguments ""), then text as an arguments fragment (if any), then, with
 * finish_reason set, the finish chunk ("tool_calls" unless "length").
 * NULL: out of memory. */
char *lmc_serve_ext_stream_named(const struct lmc_serve_ext *x, const char *id, int64_t created, const char *model,
                                 int index, bool first, const char *text, size_t len, const char *finish_reason);

/* tool_choice "required" streams as it decodes. The output is the JSON
 * list [{"name": ..., "arguments": {...}}, ...]; text[0..len) is the reply
 * so far and *st what went out already. A call's head (index, id call_ +
 * hex of the hash of req_id, index and call, type, function.name,
 * arguments "") goes out once its name is complete, then its raw
 * arguments text in fragments as it decodes (never ending inside a UTF-8
 * character), one call after another. With finish_reason set, the rest of
 * the arguments and the finish chunk ("tool_calls" unless "length") go
 * out; a reply in which no call was found is sent as
 * lmc_serve_ext_stream sends it (content). The non-streamed reply's
 * arguments are the same raw texts, so the fragments join to them. NULL:
 * out of memory; "" when there is nothing to send. */
struct lmc_serve_req_stream {
    int calls;                        /* heads sent */
    size_t args_sent;                 /* bytes of the last head's arguments sent */
};
char *lmc_serve_ext_stream_required(const struct lmc_serve_ext *x, const char *id, int64_t created, const char *model,
                                    int index, bool first, const char *text, size_t len,
                                    struct lmc_serve_req_stream *st, const char *finish_reason);

#endif
