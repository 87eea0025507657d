/* fuzz_grammar.c — libFuzzer target for structured output: the input's
 * first line is a JSON Schema, the rest a candidate output. The schema is
 * compiled (or refused with a message), the output fed byte by byte, and a
 * token mask computed over a small fixed vocabulary at the end; a mask must
 * never allow EOS unless the output is complete. The schema line is also
 * read as GBNF text, and as a JSON Schema "pattern" regular expression
 * (grammar_regex.c, with minLength/maxLength from the rest's first byte)
 * whose string grammar is then fed the rest. */
#include "core/core.h"
#include "infer/grammar.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t sn = nl ? (size_t)(nl - data) : size;
    const char *rest = nl ? (const char *)nl + 1 : "";
    size_t rn = nl ? size - sn - 1 : 0;
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_grammar *g = NULL;
    if (lmc_grammar_from_gbnf((const char *)data, sn, &g, &err) == LMC_OK) {
        struct lmc_grammar_state *s = NULL;
        if (lmc_grammar_state_new(g, &s, &err) == LMC_OK) {
            for (size_t i = 0; i < rn; i++)
                if (!lmc_grammar_accept(s, rest + i, 1)) break;
            lmc_grammar_state_free(s);
        }
        lmc_grammar_free(g);
    } else LMC_ASSERT(!g && err.msg[0]);
    g = NULL;
    memset(&err, 0, sizeof err);
    if (lmc_grammar_new(&g, &err) == LMC_OK) { /* the line as a regex */
        /* with lengths from the rest's first byte: min 0..7, max 0..31 (unbounded below min) */
        int64_t mn = rn ? ((unsigned char)rest[0] & 7) : 0, mx = rn ? ((unsigned char)rest[0] >> 3) : -1;
        if (mx < mn) mx = -1;
        int r = lmc_grammar_regex_string_len(g, (const char *)data, sn, mn, mx, &err);
        if (r < 0) LMC_ASSERT(err.msg[0]);
        else if (lmc_grammar_finish(g, r, &err) == LMC_OK) {
            struct lmc_grammar_state *s = NULL;
            if (lmc_grammar_state_new(g, &s, &err) == LMC_OK) {
                for (size_t i = 0; i < rn; i++)
                    if (!lmc_grammar_accept(s, rest + i, 1)) break;
                lmc_grammar_state_free(s);
            }
        }
        lmc_grammar_free(g);
        g = NULL;
    }
    memset(&err, 0, sizeof err);
    if (lmc_grammar_from_json_schema((const char *)data, sn, &g, &err) != LMC_OK) {
        LMC_ASSERT(!g && err.msg[0]);
        return 0;
    }
    struct lmc_grammar_state *s = NULL;
    if (lmc_grammar_state_new(g, &s, &err) == LMC_OK) {
        for (size_t i = 0; i < rn; i++)
            if (!lmc_grammar_accept(s, rest + i, 1)) break;
        static const char *const toks[] = {"", "{", "}", "[", "]", "\"", ":", ",", " ", "0", "1", "-", ".", "e",
                                           "true", "false", "null", "a", "\\", "\xc3", "\xa9", "\"a\":", "12"};
        size_t len[sizeof toks / sizeof *toks];
        for (size_t i = 0; i < sizeof toks / sizeof *toks; i++) len[i] = strlen(toks[i]);
        int32_t eos = 0;
        struct lmc_grammar_vocab *v = NULL;
        if (lmc_grammar_vocab_new(toks, len, (int32_t)(sizeof toks / sizeof *toks), &eos, 1, &v, &err) == LMC_OK) {
            uint8_t mask[sizeof toks / sizeof *toks];
            if (lmc_grammar_mask(s, v, mask, &err) == LMC_OK) LMC_ASSERT(!mask[0] || lmc_grammar_can_end(s));
            else LMC_ASSERT(err.msg[0]);
            lmc_grammar_vocab_free(v);
        }
        lmc_grammar_state_free(s);
    }
    lmc_grammar_free(g);
    return 0;
}
