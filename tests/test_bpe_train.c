/* test_bpe_train.c — byte-level BPE training: merges equal a naive
 * recount-everything trainer on random text, training is deterministic,
 * the written tokenizer.json loads with lmc_tokenizer_load and round-trips
 * held-out text exactly (GPT-2 and Llama 3 styles, special tokens, BOS),
 * bad input gives clear errors, and — when python3 has `tokenizers` — HF
 * tokenizers encodes the held-out text to the same ids (skipped otherwise).
 * The corpus is ../shared/data/kjv.txt when present, else this repository's
 * own sources. */
#include "core/core.h"
#include "test.h"
#include "tokenizer/tokenizer.h"
#include "train/bpe_train.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

/* ---- naive reference: words of lowercase letters with a leading space ---- */

struct nword {
    int32_t *s;
    int n;
    int64_t count;
};

static void naive_merges(const char *text, int64_t vocab, int32_t (*out)[2], int64_t *n_out) {
    /* words as the GPT-2 regex cuts text of [a-z ] with single spaces */
    struct nword w[4096];
    int nw = 0;
    size_t len = strlen(text);
    for (size_t i = 0; i < len;) {
        size_t j = i + (text[i] == ' ');
        while (j < len && text[j] != ' ') j++;
        int k;
        for (k = 0; k < nw; k++) {
            if (w[k].n != (int)(j - i)) continue;
            int q = 0;
            while (q < w[k].n && w[k].s[q] == (unsigned char)text[i + (size_t)q]) q++;
            if (q == w[k].n) break;
        }
        if (k == nw) {
            w[nw].s = malloc((j - i) * sizeof(int32_t));
            for (size_t q = 0; q < j - i; q++) w[nw].s[q] = (unsigned char)text[i + q];
            w[nw].n = (int)(j - i);
            w[nw].count = 0;
            nw++;
        }
        w[k].count++;
        i = j;
    }
    char **tok = calloc((size_t)vocab, sizeof *tok);
    int *tl = calloc((size_t)vocab, sizeof *tl);
    for (int b = 0; b < 256; b++) {
        tok[b] = malloc(1);
        tok[b][0] = (char)b;
        tl[b] = 1;
    }
    int64_t n_tok = 256;
    *n_out = 0;
    while (n_tok < vocab) {
        /* recount every pair */
        int64_t best = 0;
        int32_t ba = 0, bb = 0;
        for (int k = 0; k < nw; k++)
            for (int q = 0; q + 1 < w[k].n; q++) {
                int32_t a = w[k].s[q], b = w[k].s[q + 1];
                int64_t c = 0;
                for (int k2 = 0; k2 < nw; k2++)
                    for (int q2 = 0; q2 + 1 < w[k2].n; q2++)
                        if (w[k2].s[q2] == a && w[k2].s[q2 + 1] == b) c += w[k2].count;
                if (c > best || (c == best && (a < ba || (a == ba && b < bb)))) best = c, ba = a, bb = b;
            }
        if (best < 2) break;
        char *s = malloc((size_t)(tl[ba] + tl[bb]));
        memcpy(s, tok[ba], (size_t)tl[ba]);
        memcpy(s + tl[ba], tok[bb], (size_t)tl[bb]);
        int32_t z = -1;
        for (int64_t t = 0; t < n_tok; t++)
            if (tl[t] == tl[ba] + tl[bb] && !memcmp(tok[t], s, (size_t)tl[t])) z = (int32_t)t;
        if (z < 0) {
            z = (int32_t)n_tok++;
            tok[z] = s;
            tl[z] = tl[ba] + tl[bb];
        } else {
            free(s);
        }
        out[*n_out][0] = ba;
        out[*n_out][1] = bb;
        (*n_out)++;
        for (int k = 0; k < nw; k++) {
            int j = 0;
            for (int q = 0; q < w[k].n;) {
                if (q + 1 < w[k].n && w[k].s[q] == ba && w[k].s[q + 1] == bb) {
                    w[k].s[j++] = z;
                    q += 2;
                } else {
                    w[k].s[j++] = w[k].s[q++];
                }
            }
            w[k].n = j;
        }
    }
    for (int64_t t = 0; t < n_tok; t++) free(tok[t]);
    free(tok);
    free(tl);
    for (int k = 0; k < nw; k++) free(w[k].s);
}

static void against_naive(void) {
    uint64_t rng = 7;
    for (int trial = 0; trial < 4; trial++) {
        /* words from a small alphabet so that pairs overlap ("aaa", "abab") */
        char text[6000];
        size_t n = 0;
        int alpha = 2 + trial;
        while (n < 2500) {
            int wl = 1 + (int)(test_rng_next(&rng) % 7);
            if (n) text[n++] = ' ';
            for (int i = 0; i < wl; i++) text[n++] = (char)('a' + test_rng_next(&rng) % (uint64_t)alpha);
        }
        text[n] = 0;
        lmc_err err = {0};
        struct lmc_bpe_counts *c;
        CHECK(!lmc_bpe_counts_init(&c, LMC_BPE_GPT2, &err));
        CHECK(!lmc_bpe_counts_add(c, text, n, "random", &err));
        struct lmc_bpe_opts o = {.vocab_size = 256 + 1 + 120, .min_frequency = 2};
        struct lmc_bpe_model m;
        CHECK_MSG(!lmc_bpe_train(&m, c, &o, &err), "%s", err.msg);
        static int32_t ref[512][2];
        int64_t n_ref;
        naive_merges(text, 256 + 120, ref, &n_ref);
        CHECK_MSG(m.n_merges == n_ref, "trial %d: %lld merges, naive %lld", trial, (long long)m.n_merges,
                  (long long)n_ref);
        int64_t same = 0;
        for (int64_t k = 0; k < m.n_merges && k < n_ref; k++, same++)
            if (m.merges[k][0] != ref[k][0] || m.merges[k][1] != ref[k][1]) break;
        CHECK_MSG(same == n_ref, "trial %d: merge %lld differs from the naive trainer", trial, (long long)same);
        lmc_bpe_model_free(&m);
        lmc_bpe_counts_free(c);
    }
}

/* ---- corpus ---- */

static char *read_or_null(const char *path, size_t *len) {
    char *s;
    lmc_err err;
    if (lmc_file_read(path, (size_t)1 << 28, &s, len, &err)) return NULL;
    return s;
}

/* The training corpus and held-out text (malloc'd). */
static void corpus(char **train, size_t *train_len, char **held, size_t *held_len, const char **name) {
    size_t len;
    char *kjv = read_or_null("../shared/data/kjv.txt", &len);
    if (kjv && len > 1000000) {
        *name = "kjv.txt";
        *train_len = 1000000; /* the first MB trains, the rest is held out */
        while ((kjv[*train_len] & 0xc0) == 0x80) (*train_len)++;
        *train = malloc(*train_len + 1);
        memcpy(*train, kjv, *train_len);
        (*train)[*train_len] = 0;
        *held_len = len - *train_len;
        *held = malloc(*held_len + 1);
        memcpy(*held, kjv + *train_len, *held_len + 1);
        free(kjv);
        return;
    }
    free(kjv);
    *name = "repository sources";
    const char *tr[] = {"src/tokenizer/pretokenize.c", "src/tokenizer/tokenizer_load.c", "src/tokenizer/bpe.c",
                        "src/io/safetensors.c", "README.md"};
    const char *ho[] = {"src/core/utf8.c", "src/tokenizer/decode.c"};
    for (int part = 0; part < 2; part++) {
        const char **f = part ? ho : tr;
        int nf = part ? 2 : 5;
        char *buf = NULL;
        size_t n = 0;
        for (int i = 0; i < nf; i++) {
            size_t l;
            char *s = read_or_null(f[i], &l);
            if (!s) continue;
            buf = realloc(buf, n + l + 1);
            memcpy(buf + n, s, l + 1);
            n += l;
            free(s);
        }
        if (!buf) buf = calloc(1, 1);
        *(part ? held : train) = buf;
        *(part ? held_len : train_len) = n;
    }
}

static const char *probes[] = {
    "Hello, World! It's 12345 o'clock; DON'T you see?\n\n  indented\tand\ttabbed  ",
    "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89 \xce\xb1\xce\xb2\xce\xb3 \xd0\xbc\xd0\xb8\xd1\x80",
    "   leading spaces and trailing   ",
    "\r\nwindows\r\nlines\r\n",
    "a<|endoftext|>b <|begin_of_text|> c",
    "x",
    "",
};

static void roundtrip(const struct lmc_tokenizer *t, const char *text, size_t len, const char *what) {
    lmc_err err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    char *back = NULL;
    size_t blen = 0;
    CHECK_MSG(!lmc_tokenizer_encode(t, text, len, false, &ids, &n, &err), "%s: %s", what, err.msg);
    CHECK_MSG(!lmc_tokenizer_decode(t, ids, n, &back, &blen, &err), "%s: %s", what, err.msg);
    CHECK_MSG(back && blen == len && !memcmp(back, text, len), "%s: round trip differs (%zu vs %zu bytes)", what,
              blen, len);
    free(ids);
    free(back);
}

/* Writes ids (one line of comma-separated ids per text) for the HF check. */
static void dump_ids(FILE *f, const struct lmc_tokenizer *t, const char *text, size_t len, bool special) {
    lmc_err err;
    int32_t *ids = NULL;
    int64_t n = 0;
    if (lmc_tokenizer_encode(t, text, len, special, &ids, &n, &err)) n = 0;
    for (int64_t i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc('\n', f);
    free(ids);
}

static void hf_check(const char *dir, const struct lmc_tokenizer *t, const char *held, size_t held_len) {
    if (system("python3 -c 'import tokenizers' >/dev/null 2>&1") != 0) {
        printf("  HF tokenizers check: skipped (python3 cannot import tokenizers)\n");
        return;
    }
    char path[256], cmd[1024];
    /* texts: the held-out text in pieces of up to 4 KB cut at newlines, then the probes */
    snprintf(path, sizeof path, "%s/texts.bin", tmpdir);
    FILE *ft = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/ids.txt", tmpdir);
    FILE *fi = fopen(path, "wb");
    int64_t n_texts = 0;
    for (size_t i = 0; i < held_len;) {
        size_t j = i + 4096 < held_len ? i + 4096 : held_len;
        while (j < held_len && held[j - 1] != '\n') j++;
        fwrite(held + i, 1, j - i, ft);
        fputc(0, ft);
        dump_ids(fi, t, held + i, j - i, n_texts % 2 == 0);
        n_texts++;
        i = j;
    }
    for (size_t k = 0; k < sizeof probes / sizeof *probes; k++) {
        fwrite(probes[k], 1, strlen(probes[k]), ft);
        fputc(0, ft);
        dump_ids(fi, t, probes[k], strlen(probes[k]), n_texts % 2 == 0);
        n_texts++;
    }
    fclose(ft);
    fclose(fi);
    snprintf(cmd, sizeof cmd,
             "python3 -c \"\n"
             "import sys\n"
             "from tokenizers import Tokenizer\n"
             "t = Tokenizer.from_file('%s/tokenizer.json')\n"
             "texts = open('%s/texts.bin','rb').read().split(b'\\0')[:-1]\n"
             "want = open('%s/ids.txt').read().split('\\n')[:-1]\n"
             "bad = 0\n"
             "for i, (x, w) in enumerate(zip(texts, want)):\n"
             "    got = ','.join(map(str, t.encode(x.decode(), add_special_tokens=(i %% 2 == 0)).ids))\n"
             "    if got != w:\n"
             "        bad += 1\n"
             "        if bad < 3: print('  HF differs on text', i, repr(x[:80]), got[:120], w[:120])\n"
             "print('  HF tokenizers check:', len(texts) - bad, 'of', len(texts), 'texts encode identically')\n"
             "sys.exit(1 if bad or len(texts) != len(want) else 0)\n\"",
             dir, tmpdir, tmpdir);
    fflush(stdout);
    CHECK_MSG(system(cmd) == 0, "%s: HF tokenizers encodes differently", dir);
}

static void train_style(enum lmc_bpe_style style, int64_t vocab, const char *train, size_t train_len,
                        const char *held, size_t held_len) {
    const char *sname = style == LMC_BPE_GPT2 ? "gpt2" : "llama3";
    lmc_err err = {0};
    double t0 = lmc_time_now();
    struct lmc_bpe_counts *c;
    CHECK(!lmc_bpe_counts_init(&c, style, &err));
    CHECK_MSG(!lmc_bpe_counts_add(c, train, train_len, "corpus", &err), "%s", err.msg);
    struct lmc_bpe_opts o = {.vocab_size = vocab, .min_frequency = 2};
    struct lmc_bpe_model m, m2;
    CHECK_MSG(!lmc_bpe_train(&m, c, &o, &err), "%s", err.msg);
    double t1 = lmc_time_now();
    CHECK(!lmc_bpe_train(&m2, c, &o, &err));
    printf("  %s: %lld words, %lld merges, vocab %lld in %.2f s\n", sname, (long long)lmc_bpe_counts_words(c),
           (long long)m.n_merges, (long long)(m.n_tokens + m.n_special), t1 - t0);
    CHECK(m.n_tokens + m.n_special == vocab);
    char *j1, *c1, *j2, *c2;
    CHECK(!lmc_bpe_to_json(&m, &j1, &c1, &err));
    CHECK(!lmc_bpe_to_json(&m2, &j2, &c2, &err));
    CHECK_MSG(!strcmp(j1, j2) && !strcmp(c1, c2), "%s: training is not deterministic", sname);
    free(j1); free(c1); free(j2); free(c2);
    lmc_bpe_model_free(&m2);

    char dir[128];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, sname);
    mkdir(dir, 0777);
    CHECK_MSG(!lmc_bpe_save(&m, dir, &err), "%s", err.msg);
    struct lmc_tokenizer *t = NULL;
    CHECK_MSG(!lmc_tokenizer_load(&t, dir, &err), "%s: %s", dir, err.msg);
    if (t) {
        CHECK(lmc_tokenizer_vocab_size(t) == vocab);
        CHECK(lmc_tokenizer_eos(t) == m.n_tokens + m.eos);
        CHECK(lmc_tokenizer_bos(t) == m.n_tokens + m.bos);
        CHECK(lmc_tokenizer_is_special(t, (int32_t)(m.n_tokens + m.eos)));
        roundtrip(t, held, held_len, "held-out text");
        for (size_t k = 0; k < sizeof probes / sizeof *probes; k++) roundtrip(t, probes[k], strlen(probes[k]), probes[k]);
        /* special tokens encode to their ids; llama3 adds BOS with add_special */
        int32_t *ids;
        int64_t n;
        const char *eos = m.special[m.eos];
        CHECK(!lmc_tokenizer_encode(t, eos, strlen(eos), false, &ids, &n, &err));
        CHECK(n == 1 && ids[0] == m.n_tokens + m.eos);
        free(ids);
        CHECK(!lmc_tokenizer_encode(t, "In the beginning", 16, true, &ids, &n, &err));
        if (style == LMC_BPE_LLAMA3) CHECK(n >= 2 && ids[0] == m.n_tokens + m.bos);
        else CHECK(n >= 1 && ids[0] != m.n_tokens + m.bos);
        free(ids);
        /* compression: the trained vocabulary is used (far fewer ids than bytes) */
        CHECK(!lmc_tokenizer_encode(t, held, held_len, false, &ids, &n, &err));
        printf("  %s: held-out %zu bytes -> %lld ids (%.2f bytes/token)\n", sname, held_len, (long long)n,
               n ? (double)held_len / (double)n : 0.0);
        CHECK(n > 0 && (double)held_len / (double)n > 2.0);
        free(ids);
        hf_check(dir, t, held, held_len);
        lmc_tokenizer_free(t);
    }
    lmc_bpe_model_free(&m);
    lmc_bpe_counts_free(c);
}

static void bad_input(void) {
    lmc_err err = {0};
    struct lmc_bpe_counts *c;
    CHECK(!lmc_bpe_counts_init(&c, LMC_BPE_GPT2, &err));
    CHECK(lmc_bpe_counts_add(c, "ok \xff bad", 8, "file.txt", &err) == LMC_ERR_ARG);
    CHECK(strstr(err.msg, "file.txt") && strstr(err.msg, "offset 3"));
    CHECK(!lmc_bpe_counts_add(c, "the the the", 11, "x", &err));
    struct lmc_bpe_model m;
    struct lmc_bpe_opts o = {.vocab_size = 200, .min_frequency = 2};
    CHECK(lmc_bpe_train(&m, c, &o, &err) == LMC_ERR_ARG && strstr(err.msg, "vocab size"));
    /* a corpus that runs out of pairs stops early, with a valid model */
    o.vocab_size = 1000;
    CHECK(!lmc_bpe_train(&m, c, &o, &err));
    CHECK(m.n_tokens < 1000 - 1 && m.n_merges == m.n_tokens - 256);
    lmc_bpe_model_free(&m);
    lmc_bpe_counts_free(c);
    enum lmc_bpe_style s;
    CHECK(lmc_bpe_style_parse("llama3", &s) && s == LMC_BPE_LLAMA3);
    CHECK(!lmc_bpe_style_parse("sentencepiece", &s));
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmc_test_bpe_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    against_naive();
    bad_input();
    char *train = NULL, *held = NULL;
    size_t train_len = 0, held_len = 0;
    const char *name = "";
    corpus(&train, &train_len, &held, &held_len, &name);
    printf("corpus: %s, %zu bytes train, %zu held out\n", name, train_len, held_len);
    /* the fallback corpus (this repository's sources, ~100 KB) has too few
     * distinct pairs at min_frequency 2 for the larger vocabularies */
    bool big = train_len > 1000000;
    train_style(LMC_BPE_GPT2, big ? 4096 : 1024, train, train_len, held, held_len);
    train_style(LMC_BPE_LLAMA3, big ? 3000 : 900, train, train_len, held, held_len);
    free(train);
    free(held);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("test_bpe_train");
}
