/* fuzz_tokenizer_encode.c — libFuzzer target: encodes the input with the
 * qwen2-tiny tokenizer (tests/fixtures/qwen2-tiny, relative to the working
 * directory, or the folder in $LMC_FUZZ_TOKENIZER) and decodes the ids.
 * Invalid UTF-8 must be refused; valid UTF-8 must round-trip exactly. */
#include "core/core.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct lmc_tokenizer *tok; /* loaded once per fuzzing process */

static void load_once(void) {
    if (tok) return;
    const char *dir = getenv("LMC_FUZZ_TOKENIZER");
    if (!dir) dir = "tests/fixtures/qwen2-tiny";
    lmc_err err;
    if (lmc_tokenizer_load(&tok, dir, &err) != LMC_OK) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s\n", err.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    const char *text = (const char *)data;
    int32_t *ids = NULL;
    int64_t n = 0;
    lmc_err err;
    lmc_status st = lmc_tokenizer_encode(tok, text, size, false, &ids, &n, &err);
    bool valid = lmc_utf8_valid_prefix(text, size) == size;
    if (!valid) {
        LMC_ASSERT(st == LMC_ERR_ARG);
        return 0;
    }
    LMC_ASSERT(st == LMC_OK);
    char *back = NULL;
    size_t len = 0;
    LMC_ASSERT(lmc_tokenizer_decode(tok, ids, n, &back, &len, &err) == LMC_OK);
    LMC_ASSERT(len == size && memcmp(back, text, size) == 0);
    free(back);
    free(ids);
    return 0;
}
