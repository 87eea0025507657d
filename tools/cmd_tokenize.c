/* cmd_tokenize.c — `lmc tokenize` (text -> JSON ids) and `lmc detokenize`
 * (comma-separated ids -> text). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_tokenize(int argc, char **argv) {
    struct cli_common c = {0};
    const char *text = NULL;
    bool special = false;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--add-special")) special = true;
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
        else {
            fprintf(stderr, "lmc tokenize: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!text) {
        fprintf(stderr, "lmc tokenize: no --text given\n");
        return 2;
    }
    struct cli_model cm;
    if (cli_open(&cm, &c, false)) return 1;
    lmc_err err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = 0;
    if (lmc_tokenizer_encode(cm.tok, text, strlen(text), special, &ids, &n, &err)) {
        rc = cli_fail("tokenize", &err);
    } else {
        putchar('[');
        for (int64_t i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("]\n");
    }
    free(ids);
    cli_close(&cm);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    struct cli_common c = {0};
    const char *list = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--ids") && i + 1 < argc) list = argv[++i];
        else {
            fprintf(stderr, "lmc detokenize: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!list) {
        fprintf(stderr, "lmc detokenize: no --ids given (e.g. --ids 1,2,3)\n");
        return 2;
    }
    size_t cap = strlen(list) / 2 + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    int64_t n = 0;
    char *copy = strdup(list);
    if (!ids || !copy) {
        free(ids);
        free(copy);
        return 1;
    }
    for (char *save = NULL, *t = strtok_r(copy, ", []", &save); t; t = strtok_r(NULL, ", []", &save)) {
        int64_t v;
        if (!cli_parse_i64(t, 0, INT32_MAX, &v)) {
            fprintf(stderr, "lmc detokenize: '%s' is not a token id\n", t);
            free(ids);
            free(copy);
            return 2;
        }
        ids[n++] = (int32_t)v;
    }
    free(copy);
    struct cli_model cm;
    if (cli_open(&cm, &c, false)) {
        free(ids);
        return 1;
    }
    lmc_err err = {0};
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    if (lmc_tokenizer_decode(cm.tok, ids, n, &text, &len, &err)) {
        rc = cli_fail("detokenize", &err);
    } else if (c.json) {
        cli_json_str(text, len);
        putchar('\n');
    } else {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    free(text);
    free(ids);
    cli_close(&cm);
    return rc;
}
