/* adapters.c — multi-adapter serving in the HTTP layer: a request's
 * "model" field picks the base model or one of the LoRA adapters the
 * engine holds (vLLM's convention), and /v1/models lists them all. */
#include "serve/serve.h"

#include <cjson/cJSON.h>
#include <string.h>

lmc_status lmc_serve_pick_model(const char *base, const char *const *names, int n, const char *model,
                                int *adapter, struct lmc_serve_error *e) {
    *adapter = 0;
    if (!model || !strcmp(model, base)) return LMC_OK;
    for (int k = 0; k < n; k++)
        if (!strcmp(model, names[k])) {
            *adapter = k + 1;
            return LMC_OK;
        }
    if (n)
        return lmc_serve_fail(e, 404, "model", "model_not_found",
                              "The model '%.200s' does not exist; this server has '%s' and %d adapter%s "
                              "(GET /v1/models lists them)",
                              model, base, n, n == 1 ? "" : "s");
    return lmc_serve_fail(e, 404, "model", "model_not_found", "The model '%.200s' does not exist; this server has '%s'",
                          model, base);
}

static cJSON *model_entry(const char *id, int64_t created, int64_t ctx, bool chat, const char *parent) {
    cJSON *m = cJSON_CreateObject();
    if (!m) return NULL;
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "lmc");
    if (parent) {
        cJSON_AddStringToObject(m, "parent", parent);
    }
    cJSON_AddNumberToObject(m, "max_model_len", (double)ctx);
    cJSON_AddBoolToObject(m, "chat_template", chat);
    return m;
}

char *lmc_serve_format_models_lora(const char *base, const char *const *names, int n, int64_t created,
                                   int64_t ctx, bool chat) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON_AddItemToArray(data, model_entry(base, created, ctx, chat, NULL));
    for (int k = 0; k < n; k++) cJSON_AddItemToArray(data, model_entry(names[k], created, ctx, chat, base));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
