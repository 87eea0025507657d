/* cmd_train_tokenizer.c — `lmc train-tokenizer`: trains a byte-level BPE
 * tokenizer (GPT-2 or Llama 3 style) on text files and writes
 * tokenizer.json + tokenizer_config.json into a folder. */
#include "cli.h"
#include "core/core.h"
#include "train/bpe_train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void) {
    fprintf(stderr, "usage: lmc train-tokenizer --text-file F [--text-file F2 ...] --vocab N "
                    "[--style gpt2|llama3] [--min-frequency N] -o DIR\n");
}

int cmd_train_tokenizer(int argc, char **argv) {
    const char *files[64];
    int n_files = 0;
    const char *out = NULL;
    enum lmc_bpe_style style = LMC_BPE_GPT2;
    struct lmc_bpe_opts o = {.vocab_size = 0, .min_frequency = 2};
    for (int i = 1; i < argc; i += 2) { /* every option takes one value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--text-file") && v) {
            if (n_files == 64) {
                fprintf(stderr, "lmc train-tokenizer: at most 64 --text-file\n");
                return 2;
            }
            files[n_files++] = v;
        } else if (!strcmp(a, "--vocab") && v) {
            if (!cli_parse_i64(v, 1, 1 << 24, &o.vocab_size)) {
                fprintf(stderr, "lmc train-tokenizer: --vocab '%s': expected an integer\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--min-frequency") && v) {
            if (!cli_parse_i64(v, 1, INT64_MAX, &o.min_frequency)) {
                fprintf(stderr, "lmc train-tokenizer: --min-frequency '%s': expected an integer >= 1\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--style") && v) {
            if (!lmc_bpe_style_parse(v, &style)) {
                fprintf(stderr, "lmc train-tokenizer: --style '%s': expected gpt2 or llama3\n", v);
                return 2;
            }
        } else if (!strcmp(a, "-o") && v) {
            out = v;
        } else {
            fprintf(stderr, "lmc train-tokenizer: unknown option or missing value: %s\n", a);
            usage();
            return 2;
        }
    }
    if (!n_files || !out || !o.vocab_size) {
        usage();
        return 2;
    }
    lmc_err err = {0};
    double t0 = lmc_time_now();
    struct lmc_bpe_counts *c = NULL;
    if (lmc_bpe_counts_init(&c, style, &err)) return cli_fail("train-tokenizer", &err);
    int64_t bytes = 0;
    for (int k = 0; k < n_files; k++) {
        char *text;
        size_t len;
        if (lmc_file_read(files[k], (size_t)1 << 34, &text, &len, &err) ||
            lmc_bpe_counts_add(c, text, len, files[k], &err)) {
            free(text);
            lmc_bpe_counts_free(c);
            return cli_fail("train-tokenizer", &err);
        }
        bytes += (int64_t)len;
        free(text);
    }
    double t1 = lmc_time_now();
    struct lmc_bpe_model m;
    lmc_status st = lmc_bpe_train(&m, c, &o, &err);
    int64_t words = lmc_bpe_counts_words(c);
    lmc_bpe_counts_free(c);
    if (st) return cli_fail("train-tokenizer", &err);
    double t2 = lmc_time_now();
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        lmc_bpe_model_free(&m);
        lmc_err_set(&err, LMC_ERR_IO, "%s: cannot create folder: %s", out, strerror(errno));
        return cli_fail("train-tokenizer", &err);
    }
    st = lmc_bpe_save(&m, out, &err);
    int64_t vocab = m.n_tokens + m.n_special;
    fprintf(stderr,
            "lmc train-tokenizer: %lld bytes, %lld distinct words (%.2f s); %lld merges, vocab %lld (%.2f s) -> %s\n",
            (long long)bytes, (long long)words, t1 - t0, (long long)m.n_merges, (long long)vocab, t2 - t1, out);
    if (vocab < o.vocab_size)
        fprintf(stderr, "lmc train-tokenizer: note: no pair is seen %lld times any more; vocab stops at %lld\n",
                (long long)o.min_frequency, (long long)vocab);
    lmc_bpe_model_free(&m);
    if (st) return cli_fail("train-tokenizer", &err);
    return 0;
}
