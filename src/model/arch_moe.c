/* arch_moe.c — the parts the mixture-of-experts architecture files share
 * (arch_moe.h): the config check, defaults and config.json fields of the
 * experts, and which layers are sparse. */
#include "model/arch_moe.h"
#include "model/block.h"

#include <cjson/cJSON.h>

lmc_status lmc_arch_moe_check(const struct lmc_config *c, lmc_err *err) {
    if (c->num_experts <= 0 || c->moe_intermediate_size <= 0 || c->num_experts_per_tok <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: mixture of experts needs num_experts, "
                           "num_experts_per_tok and the expert width (%lld, %lld, %lld)", c->model_type,
                           (long long)c->num_experts, (long long)c->num_experts_per_tok,
                           (long long)c->moe_intermediate_size);
    if (c->num_experts_per_tok > c->num_experts)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: num_experts_per_tok %lld exceeds num_experts %lld",
                           c->model_type, (long long)c->num_experts_per_tok, (long long)c->num_experts);
    if (c->num_experts > 4096 || c->num_experts_per_tok > 64)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: %lld experts, top-%lld: at most 4096 experts, top-64",
                           c->model_type, (long long)c->num_experts, (long long)c->num_experts_per_tok);
    if (c->mlp_bias)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: expert biases are not supported", c->model_type);
    return LMC_OK;
}

void lmc_arch_moe_defaults(struct lmc_config *c, double aux_coef) {
    if (!c->num_experts) c->num_experts = 8;
    if (!c->num_experts_per_tok) c->num_experts_per_tok = 2;
    if (!c->decoder_sparse_step) c->decoder_sparse_step = 1;
    c->router_aux_loss_coef = aux_coef;
}

void lmc_arch_moe_json(const struct lmc_config *c, cJSON *o, const char *experts_key, bool sparse_layers) {
    cJSON_AddNumberToObject(o, experts_key, (double)c->num_experts);
    cJSON_AddNumberToObject(o, "num_experts_per_tok", (double)c->num_experts_per_tok);
    if (sparse_layers) {
        cJSON_AddNumberToObject(o, "decoder_sparse_step", (double)(c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1));
        cJSON *only = cJSON_CreateArray();
        for (int64_t l = 0; l < 4096 && only; l++)
            if (c->mlp_only[l / 64] >> (l % 64) & 1) cJSON_AddItemToArray(only, cJSON_CreateNumber((double)l));
        cJSON_AddItemToObject(o, "mlp_only_layers", only);
    }
    cJSON_AddBoolToObject(o, "output_router_logits", c->output_router_logits);
    cJSON_AddNumberToObject(o, "router_aux_loss_coef", c->router_aux_loss_coef);
}

bool lmc_config_layer_sparse(const struct lmc_config *c, int64_t l) {
    if (c->num_experts <= 0) return false;
    if (l >= 0 && l < 4096 && (c->mlp_only[l / 64] >> (l % 64) & 1)) return false;
    int64_t step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
    return (l + 1) % step == 0;
}
