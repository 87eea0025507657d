/* fuzz_tokenizer_load.c — libFuzzer target: the input is tokenizer.json text;
 * loading must either succeed or fail with a message, never crash or leak.
 * A loaded tokenizer also encodes and decodes a fixed sample. */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct lmc_tokenizer *t = NULL;
    lmc_err err;
    if (lmc_tokenizer_load_json(&t, (const char *)data, size, NULL, 0, &err) != LMC_OK) {
        if (t || !err.msg[0]) abort();
        return 0;
    }
    const char *sample = "Hello world! <s> 123  caf\xc3\xa9\n\t\xe4\xbd\xa0";
    int32_t *ids = NULL;
    int64_t n = 0;
    if (lmc_tokenizer_encode(t, sample, strlen(sample), true, &ids, &n, &err) == LMC_OK) {
        char *txt = NULL;
        size_t len = 0;
        if (lmc_tokenizer_decode(t, ids, n, &txt, &len, &err) == LMC_OK) free(txt);
        free(ids);
    }
    lmc_tokenizer_free(t);
    return 0;
}
