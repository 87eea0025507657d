/* cmd_prepare_data.c — `lmc prepare-data`: tokenizes a text or JSONL
 * corpus with a model's (or a trained) tokenizer into token shards with a
 * train / validation split (format: src/train/data.h, README). */
#include "cli.h"
#include "core/core.h"
#include "train/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr,
            "usage: lmc prepare-data -m DIR --text-file F [--text-file F2 ...] -o DATA\n"
            "         [--jsonl [--field text]] [--docs blank|line|file] [--val-fraction 0.01]\n"
            "         [--val-from-line N] [--seed N] [--dtype u16|u32] [--shard-tokens N]\n");
}

int cmd_prepare_data(int argc, char **argv) {
    const char *inputs[256];
    struct lmc_prepare_opts o = {.field = "text", .doc_split = LMC_DOC_BLANK_LINE, .val_fraction = 0.01,
                                 .seed = 1234, .inputs = inputs};
    bool fraction_given = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--jsonl")) {
            o.jsonl = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "lmc prepare-data: unknown option or missing value: %s\n", a);
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.tokenizer_dir = v;
        else if (!strcmp(a, "-o")) o.out_dir = v;
        else if (!strcmp(a, "--field")) o.field = v;
        else if (!strcmp(a, "--text-file")) {
            if (o.n_inputs == 256) {
                fprintf(stderr, "lmc prepare-data: at most 256 --text-file\n");
                return 2;
            }
            inputs[o.n_inputs++] = v;
        } else if (!strcmp(a, "--docs")) {
            if (!strcmp(v, "blank")) o.doc_split = LMC_DOC_BLANK_LINE;
            else if (!strcmp(v, "line")) o.doc_split = LMC_DOC_LINE;
            else if (!strcmp(v, "file")) o.doc_split = LMC_DOC_FILE;
            else {
                fprintf(stderr, "lmc prepare-data: --docs '%s': expected blank, line or file\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--val-fraction")) {
            if (!cli_parse_f64(v, 0, 1, &o.val_fraction)) {
                fprintf(stderr, "lmc prepare-data: --val-fraction '%s': expected a number in [0, 1]\n", v);
                return 2;
            }
            fraction_given = true;
        } else if (!strcmp(a, "--val-from-line")) {
            if (!cli_parse_i64(v, 1, INT64_MAX, &o.val_from_line)) {
                fprintf(stderr, "lmc prepare-data: --val-from-line '%s': expected a line number >= 1\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_i64(v, 0, INT64_MAX, &n)) {
                fprintf(stderr, "lmc prepare-data: --seed '%s': expected an integer >= 0\n", v);
                return 2;
            }
            o.seed = (uint64_t)n;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "u16") || !strcmp(v, "uint16")) o.dtype = 2;
            else if (!strcmp(v, "u32") || !strcmp(v, "uint32")) o.dtype = 4;
            else {
                fprintf(stderr, "lmc prepare-data: --dtype '%s': expected u16 or u32\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--shard-tokens")) {
            if (!cli_parse_i64(v, 1, INT64_MAX, &n)) {
                fprintf(stderr, "lmc prepare-data: --shard-tokens '%s': expected an integer >= 1\n", v);
                return 2;
            }
            o.shard_tokens = (uint64_t)n;
        } else {
            fprintf(stderr, "lmc prepare-data: unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    /* a held-out tail is the whole validation split unless a fraction is asked for too */
    if (o.val_from_line > 0 && !fraction_given) o.val_fraction = 0;
    if (!o.tokenizer_dir || !o.out_dir || !o.n_inputs) {
        usage();
        return 2;
    }
    lmc_err err = {0};
    struct lmc_prepare_stats s;
    double t0 = lmc_time_now();
    if (lmc_prepare_data(&o, &s, &err)) return cli_fail("prepare-data", &err);
    fprintf(stderr,
            "lmc prepare-data: %llu bytes -> train %llu documents, %llu tokens (%d shards); "
            "val %llu documents, %llu tokens (%d shards); %s ids, vocab %u, eos %u; %.2f s -> %s\n",
            (unsigned long long)s.bytes, (unsigned long long)s.docs[0], (unsigned long long)s.tokens[0], s.shards[0],
            (unsigned long long)s.docs[1], (unsigned long long)s.tokens[1], s.shards[1],
            s.dtype == 2 ? "uint16" : "uint32", s.vocab_size, s.eos_id, lmc_time_now() - t0, o.out_dir);
    if ((o.val_fraction > 0 || o.val_from_line > 0) && s.docs[1] == 0)
        fprintf(stderr, "lmc prepare-data: warning: no document fell into the validation split\n");
    return 0;
}
