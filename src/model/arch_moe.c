/* arch_moe.c — the parts the mixture-of-experts architecture files share
 * (arch_moe.h): the config check, defaults and config.json fields of the
 * experts, which layers are sparse, and expert views of fused 3-D expert
 * tensors. */
#include "model/arch_moe.h"
#include "model/block.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

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

/* The layer, expert and projection (gate 0, up 1, down 2) an on-disk
 * expert tensor name holds, or false. */
static bool expert_of(const char *name, long long *layer, long long *expert, int *proj) {
    char p[32] = "";
    if (sscanf(name, "model.layers.%lld.mlp.experts.%lld.%31[a-z0-9_]", layer, expert, p) != 3 &&
        sscanf(name, "model.layers.%lld.block_sparse_moe.experts.%lld.%31[a-z0-9_]", layer, expert, p) != 3)
        return false;
    static const char *const names[3][2] = {{"gate_proj", "w1"}, {"up_proj", "w3"}, {"down_proj", "w2"}};
    for (int i = 0; i < 3; i++)
        if (!strcmp(p, names[i][0]) || !strcmp(p, names[i][1])) {
            *proj = i;
            return true;
        }
    return false;
}

lmc_status lmc_arch_moe_fused(const struct lmc_st *st, const struct lmc_config *c, const char *name,
                              struct lmc_st_tensor *view, const struct lmc_st_tensor **fused, lmc_err *err) {
    long long L, e;
    int proj;
    *fused = NULL;
    if (c->num_experts <= 0 || !expert_of(name, &L, &e, &proj) || e < 0 || e >= c->num_experts) return LMC_OK;
    char fn[160];
    snprintf(fn, sizeof fn, "model.layers.%lld.mlp.experts.%s", L, proj == 2 ? "down_proj" : "gate_up_proj");
    const struct lmc_st_tensor *t = lmc_st_find(st, fn);
    if (!t) return LMC_OK;
    int64_t E = c->num_experts, I = c->moe_intermediate_size, C = c->hidden_size;
    int64_t want1 = proj == 2 ? C : 2 * I, want2 = proj == 2 ? I : C;
    if (t->ndim != 3 || t->shape[0] != E || t->shape[1] != want1 || t->shape[2] != want2)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: fused expert tensor '%s' has %d dimensions [%lld, %lld, %lld], "
                           "expected [%lld, %lld, %lld]", st->files[t->file].path, fn, t->ndim,
                           (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                           (long long)(t->ndim > 2 ? t->shape[2] : 0), (long long)E, (long long)want1,
                           (long long)want2);
    int64_t rows = proj == 2 ? C : I, cols = want2;
    int64_t first = e * want1 + (proj == 1 ? I : 0); /* the view's first row of the (E want1, want2) matrix */
    size_t es = (size_t)lmc_dtype_size(t->dtype);
    *view = *t;
    view->ndim = 2;
    view->shape[0] = rows;
    view->shape[1] = cols;
    view->shape[2] = 0;
    view->numel = rows * cols;
    view->nbytes = (size_t)view->numel * es;
    view->data = (const char *)t->data + (size_t)first * (size_t)cols * es;
    *fused = t;
    return LMC_OK;
}
