/* spec_vocab.c — the draft vocabulary ranking's parser (FR-Spec draft
 * pruning, spec.h's lmc_spec_vocab_parse): "id [anything]" lines, most
 * frequent first. Its own file so that the fuzz target
 * (fuzz/fuzz_spec_vocab.c) links it alone. */
#include "infer/spec.h"
#include "core/core.h"

#include <stdint.h>
#include <stdlib.h>

lmc_status lmc_spec_vocab_parse(const char *text, size_t len, int64_t V, int64_t n, int32_t *ids,
                                int64_t *n_out, lmc_err *err) {
    *n_out = 0;
    if (V <= 0 || n < 0) return lmc_err_set(err, LMC_ERR_ARG, "draft vocabulary: bad size");
    uint8_t *seen = calloc((size_t)V, 1);
    if (!seen) return lmc_err_set(err, LMC_ERR_OOM, "draft vocabulary: out of memory");
    int64_t got = 0, line = 0;
    size_t i = 0;
    lmc_status st = LMC_OK;
    while (i < len && got < n) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t j = i;
        while (j < e && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) j++;
        if (j < e && text[j] != '#') {
            int64_t v = 0;
            size_t d = j;
            while (d < e && text[d] >= '0' && text[d] <= '9' && v < V) v = v * 10 + (text[d++] - '0');
            if (d == j || v >= V || (d < e && text[d] >= '0' && text[d] <= '9')) {
                st = lmc_err_set(err, LMC_ERR_FORMAT, "draft vocabulary line %lld: not a token id in 0..%lld",
                                 (long long)line, (long long)V - 1);
                break;
            }
            if (d < e && text[d] != ' ' && text[d] != '\t' && text[d] != '\r' && text[d] != ',') {
                st = lmc_err_set(err, LMC_ERR_FORMAT, "draft vocabulary line %lld: not a token id", (long long)line);
                break;
            }
            if (seen[v]) {
                st = lmc_err_set(err, LMC_ERR_FORMAT, "draft vocabulary line %lld: token id %lld repeated",
                                 (long long)line, (long long)v);
                break;
            }
            seen[v] = 1;
            ids[got++] = (int32_t)v;
        }
        i = e + 1;
    }
    free(seen);
    if (!st) *n_out = got;
    return st;
}
