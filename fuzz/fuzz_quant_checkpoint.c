/* fuzz_quant_checkpoint.c — libFuzzer target for quantized checkpoints: the
 * input is split at its first NUL into a config.json text (its
 * quantization_config parsed by lmc_quant_config_parse) and a safetensors
 * image (lmc_st_parse); every tensor name that ends like a quantized
 * linear's (".qweight", ".weight.quant_state.bitsandbytes__nf4",
 * ".weight_scale") is read with lmc_qlinear_read under the parsed config and
 * under each method, and what reads is dequantized and prepared for the
 * kernels (ASan and UBSan prove the bounds); then everything is freed. */
#include "core/core.h"
#include "io/safetensors.h"
#include "quant/hf_quant.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void try_linear(const struct lmc_st *st, const char *prefix, const struct lmc_quant_config *qc) {
    struct lmc_qlinear q;
    bool found;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (lmc_qlinear_read(st, prefix, qc, &q, &found, &err) != LMC_OK) {
        LMC_ASSERT(err.msg[0] != 0);
        return;
    }
    if (!found) return;
    if (q.n > 0 && q.k > 0 && q.n * q.k <= (1 << 22)) {
        float *w = malloc((size_t)(q.n * q.k) * sizeof *w);
        if (w) lmc_qlinear_dequantize(&q, w);
        free(w);
        struct lmc_qweight qw;
        if (lmc_qlinear_prepare(&q, &qw, &err) == LMC_OK) lmc_qweight_free(&qw);
    }
    lmc_qlinear_free(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t cl = nul ? (size_t)(nul - data) : size;
    size_t sl = nul ? size - cl - 1 : 0;
    char *cfg = malloc(cl + 1);
    uint8_t *img = malloc(sl ? sl : 1);
    if (!cfg || !img) {
        free(cfg);
        free(img);
        return 0;
    }
    memcpy(cfg, data, cl);
    cfg[cl] = 0;
    if (sl) memcpy(img, nul + 1, sl);
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_quant_config parsed;
    bool have_cfg = lmc_quant_config_parse(cfg, cl, "fuzz/config.json", &parsed, &err) == LMC_OK;
    struct lmc_st st;
    if (sl && lmc_st_parse(&st, img, sl, "fuzz.safetensors", &err) == LMC_OK) {
        struct lmc_quant_config qcs[4] = {
            {LMC_QM_GPTQ, 4, 32, false, true, false, false}, {LMC_QM_AWQ, 4, 32, false, false, false, false},
            {LMC_QM_BNB4, 0, 0, false, false, false, true}, {LMC_QM_BITNET, 0, 0, false, false, false, false}};
        static const char *sfx[] = {".qweight", ".weight.quant_state.bitsandbytes__nf4", ".weight_scale"};
        for (int64_t i = 0; i < st.n_tensors && i < 16; i++) {
            const char *name = st.tensors[i].name;
            size_t nl = strlen(name);
            for (size_t s = 0; s < sizeof sfx / sizeof *sfx; s++) {
                size_t xl = strlen(sfx[s]);
                if (nl <= xl || strcmp(name + nl - xl, sfx[s]) || nl - xl >= 256) continue;
                char prefix[256];
                memcpy(prefix, name, nl - xl);
                prefix[nl - xl] = 0;
                if (have_cfg) try_linear(&st, prefix, &parsed);
                for (int q = 0; q < 4; q++) try_linear(&st, prefix, &qcs[q]);
            }
        }
        lmc_st_free(&st);
    }
    free(cfg);
    free(img);
    return 0;
}
