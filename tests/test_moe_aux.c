/* test_moe_aux.c — the mixture-of-experts load-balancing loss in training
 * against transformers in float64 (tests/make_moe_aux_refs.py wrote
 * ref_aux.json and ref_aux_grads.safetensors from each fixture's training
 * batch with output_router_logits and router_aux_loss_coef 1): the
 * auxiliary loss, the total loss, the tokens routed to each expert (summed
 * over the layers; routing is exact) and every gradient (router,
 * experts, attention, embeddings) within the parity tolerance (1e-4 of the
 * tensor's largest reference gradient), with and without recomputing
 * layers in the backward. A config without output_router_logits keeps the
 * plain cross-entropy (the auxiliary term is reported, not added). */
#include "core/core.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static int32_t *ids(const cJSON *rows, int64_t B, int64_t T) {
    int32_t *out = malloc((size_t)(B * T) * sizeof *out);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            out[b * T + t] = (int32_t)cJSON_GetArrayItem(cJSON_GetArrayItem(rows, (int)b), (int)t)->valuedouble;
    return out;
}

static void fixture(const char *name, bool recompute) {
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    lmc_err err = {0};
    char *ref_txt = NULL, *aux_txt = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/ref.json", dir);
    CHECK_MSG(!lmc_file_read(path, 1 << 24, &ref_txt, &len, &err), "%s", err.msg);
    snprintf(path, sizeof path, "%s/ref_aux.json", dir);
    CHECK_MSG(!lmc_file_read(path, 1 << 20, &aux_txt, &len, &err), "%s", err.msg);
    cJSON *ref = cJSON_Parse(ref_txt), *aux = cJSON_Parse(aux_txt);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(ref, "train");
    int64_t B = (int64_t)num(tr, "B"), T = (int64_t)num(tr, "T");
    int32_t *in = ids(cJSON_GetObjectItemCaseSensitive(tr, "inputs"), B, T);
    int32_t *tg = ids(cJSON_GetObjectItemCaseSensitive(tr, "targets"), B, T);
    struct lmc_backend be;
    struct lmc_tmodel tm;
    struct lmc_tacts a;
    struct lmc_st g;
    CHECK(!lmc_backend_cpu_init(&be, 2, &err));
    CHECK_MSG(!lmc_tmodel_load(&tm, dir, &be, &err), "%s", err.msg);
    CHECK_MSG(!lmc_tacts_init(&a, &tm, &be, B, T, recompute, &err), "%s", err.msg);
    snprintf(path, sizeof path, "%s/ref_aux_grads.safetensors", dir);
    CHECK_MSG(!lmc_st_open_file(&g, path, &err), "%s", err.msg);
    /* off: the cross-entropy alone, the auxiliary loss still measured */
    double sum, coef = num(aux, "coef");
    int64_t cnt;
    CHECK(!lmc_tmodel_step(&tm, &be, &a, in, tg, false, 1.0f, &sum, &cnt, &err));
    double ce = sum / (double)cnt;
    CHECK_MSG(fabs(ce - num(aux, "ce")) <= 1e-5 * fabs(num(aux, "ce")), "%s: ce %.9g vs %.9g", name, ce,
              num(aux, "ce"));
    CHECK_MSG(fabs(a.moe_aux - num(aux, "aux")) <= 1e-5 * num(aux, "aux"), "%s: aux (off) %.9g vs %.9g", name,
              a.moe_aux, num(aux, "aux"));
    /* on, coefficient 1: loss, aux, expert load, gradients */
    tm.cfg.output_router_logits = true;
    tm.cfg.router_aux_loss_coef = coef;
    lmc_tmodel_zero_grad(&tm);
    CHECK(!lmc_tmodel_step(&tm, &be, &a, in, tg, true, (float)(1.0 / (double)(B * T)), &sum, &cnt, &err));
    double loss = sum / (double)cnt;
    CHECK_MSG(fabs(loss - num(aux, "loss")) <= 1e-5 * num(aux, "loss"), "%s: loss %.9g vs %.9g", name, loss,
              num(aux, "loss"));
    CHECK_MSG(fabs(a.moe_aux - num(aux, "aux")) <= 1e-5 * num(aux, "aux"), "%s: aux %.9g vs %.9g", name,
              a.moe_aux, num(aux, "aux"));
    const cJSON *tpe = cJSON_GetObjectItemCaseSensitive(aux, "tokens_per_expert");
    int64_t E = tm.cfg.num_experts;
    CHECK(cJSON_GetArraySize(tpe) == E);
    for (int64_t e = 0; e < E; e++) {
        double c = 0;
        for (int64_t l = 0; l < a.moe->L; l++) c += a.moe->count[l * E + e];
        CHECK_MSG(c == cJSON_GetArrayItem(tpe, (int)e)->valuedouble, "%s: expert %lld got %g tokens, ref %g", name,
                  (long long)e, c, cJSON_GetArrayItem(tpe, (int)e)->valuedouble);
    }
    double worst = 0;
    const char *worst_name = "";
    int found = 0;
    for (int i = 0; i < tm.n_params; i++) {
        const struct lmc_st_tensor *t = lmc_st_find(&g, tm.params[i].name);
        CHECK_MSG(t && t->dtype == LMC_DTYPE_F32 && t->numel == tm.params[i].numel, "%s: ref grad %s", name,
                  tm.params[i].name);
        if (!t || t->numel != tm.params[i].numel) continue;
        float *got = malloc((size_t)t->numel * sizeof(float));
        CHECK(!lmc_tmodel_download_param(&tm, tm.g, i, got, &err));
        const float *rg = t->data;
        double mx = 0, d = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            mx = fmax(mx, fabs((double)rg[j]));
            d = fmax(d, fabs((double)got[j] - (double)rg[j]));
        }
        double e = d / (mx > 0 ? mx : 1);
        if (!(e <= worst)) worst = e, worst_name = tm.params[i].name;
        found++;
        free(got);
    }
    CHECK_MSG(found == tm.n_params && worst <= 1e-4, "%s%s: %d gradients, worst max rel err %.3e (%s)", name,
              recompute ? " (recompute)" : "", found, worst, worst_name);
    printf("%s%s: aux %.9g (ref %.9g), loss %.9g (ref %.9g), %d gradients within %.2e\n", name,
           recompute ? " recompute" : "", a.moe_aux, num(aux, "aux"), loss, num(aux, "loss"), found, worst);
    lmc_st_free(&g);
    lmc_tacts_free(&a);
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
    cJSON_Delete(ref);
    cJSON_Delete(aux);
    free(ref_txt), free(aux_txt), free(in), free(tg);
}

int main(void) {
    fixture("mixtral-tiny", false);
    fixture("qwen3moe-tiny", false);
    fixture("qwen2moe-tiny", false); /* a dense layer among the sparse ones (mlp_only_layers [1]) */
    fixture("mixtral-tiny", true);
    return test_finish("test_moe_aux");
}
