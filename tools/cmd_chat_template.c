/* cmd_chat_template.c — `lmc chat-template`: prints the prompt a model's
 * chat template makes of a conversation, exactly as transformers'
 * apply_chat_template(tokenize=False) would, for debugging prompts.
 * --messages FILE is a JSON list of messages (or an object with
 * "messages" and optionally "tools", "documents" and extra variables). */
#include "cli.h"
#include "core/core.h"
#include "tokenizer/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *read_json(const char *path, const char *what) {
    char *text = NULL;
    lmc_err err = {0};
    if (lmc_file_read(path, (size_t)64 << 20, &text, NULL, &err)) {
        cli_fail(what, &err);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fprintf(stderr, "lmc chat-template: %s: not valid JSON\n", path);
    return j;
}

int cmd_chat_template(int argc, char **argv) {
    const char *dir = NULL, *msgs_path = NULL, *tools_path = NULL, *tmpl = NULL, *now = NULL, *kwargs_json = NULL;
    bool gen = false;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--add-generation-prompt")) { gen = true; continue; }
        if (!v) {
            fprintf(stderr, "lmc chat-template: unknown option or missing value: %s\n", o);
            return 2;
        }
        i++;
        if (!strcmp(o, "-m") || !strcmp(o, "--model")) dir = v;
        else if (!strcmp(o, "--messages")) msgs_path = v;
        else if (!strcmp(o, "--tools")) tools_path = v;
        else if (!strcmp(o, "--template") || !strcmp(o, "--chat-template")) tmpl = v;
        else if (!strcmp(o, "--now")) now = v;
        else if (!strcmp(o, "--kwargs")) kwargs_json = v;
        else {
            fprintf(stderr, "lmc chat-template: unknown option %s\n", o);
            return 2;
        }
    }
    if ((!dir && !tmpl) || !msgs_path) {
        fprintf(stderr, "usage: lmc chat-template -m DIR --messages FILE.json [--tools FILE.json] "
                        "[--add-generation-prompt] [--template FILE] [--now YYYY-MM-DD] [--kwargs JSON]\n");
        return 2;
    }
    struct lmc_chat_render_opts o = {.add_generation_prompt = gen};
    if (now && (sscanf(now, "%d-%d-%d", &o.now_year, &o.now_month, &o.now_day) != 3 || o.now_year < 1 ||
                o.now_month < 1 || o.now_month > 12 || o.now_day < 1 || o.now_day > 31)) {
        fprintf(stderr, "lmc chat-template: --now wants YYYY-MM-DD, got '%s'\n", now);
        return 2;
    }
    int rc = 1;
    cJSON *doc = read_json(msgs_path, "messages"), *tools = NULL, *kwargs = NULL;
    struct lmc_chat_template *ct = NULL;
    char *out = NULL;
    lmc_err err = {0};
    if (!doc) goto done;
    const cJSON *messages = doc;
    cJSON *extra = NULL;
    if (cJSON_IsObject(doc)) { /* {"messages": [...], "tools": [...], other variables} */
        messages = cJSON_GetObjectItemCaseSensitive(doc, "messages");
        o.tools = cJSON_GetObjectItemCaseSensitive(doc, "tools");
        o.documents = cJSON_GetObjectItemCaseSensitive(doc, "documents");
        if (cJSON_IsNull(o.tools)) o.tools = NULL;
        if (cJSON_IsNull(o.documents)) o.documents = NULL;
        const cJSON *agp = cJSON_GetObjectItemCaseSensitive(doc, "add_generation_prompt");
        if (cJSON_IsBool(agp)) o.add_generation_prompt = gen || cJSON_IsTrue(agp);
        extra = cJSON_CreateObject();
        for (const cJSON *e = doc->child; e && extra; e = e->next)
            if (strcmp(e->string, "messages") && strcmp(e->string, "tools") && strcmp(e->string, "documents") &&
                strcmp(e->string, "add_generation_prompt"))
                cJSON_AddItemToObject(extra, e->string, cJSON_Duplicate(e, 1));
        o.kwargs = extra;
    }
    if (!cJSON_IsArray(messages)) {
        fprintf(stderr, "lmc chat-template: %s: expected a list of messages or {\"messages\": [...]}\n", msgs_path);
        cJSON_Delete(extra);
        goto done;
    }
    if (tools_path) {
        if (!(tools = read_json(tools_path, "tools"))) {
            cJSON_Delete(extra);
            goto done;
        }
        o.tools = tools;
    }
    if (kwargs_json) {
        kwargs = cJSON_Parse(kwargs_json);
        if (!cJSON_IsObject(kwargs)) {
            fprintf(stderr, "lmc chat-template: --kwargs wants a JSON object, e.g. '{\"enable_thinking\": false}'\n");
            cJSON_Delete(extra);
            rc = 2;
            goto done;
        }
        for (cJSON *e = extra ? extra->child : NULL; e; e = e->next)
            if (!cJSON_GetObjectItemCaseSensitive(kwargs, e->string))
                cJSON_AddItemToObject(kwargs, e->string, cJSON_Duplicate(e, 1));
        o.kwargs = kwargs;
    }
    lmc_status st = lmc_chat_template_load(dir, tmpl, NULL, &ct, &err);
    if (!st) st = lmc_chat_template_render(ct, messages, &o, &out, &err);
    cJSON_Delete(extra);
    if (st) {
        cli_fail("chat-template", &err);
        goto done;
    }
    fwrite(out, 1, strlen(out), stdout);
    rc = 0;
done:
    free(out);
    lmc_chat_template_free(ct);
    cJSON_Delete(doc);
    cJSON_Delete(tools);
    cJSON_Delete(kwargs);
    return rc;
}
