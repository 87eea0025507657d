/* test_data.c — token shards and the data loader: writer/reader round trip
 * (uint16 and uint32), every corrupt-file case giving an error that names
 * the file, a split of several shards read across boundaries, the window
 * loader (coverage per epoch, seeded order, resuming from a saved
 * position), and prepare-data on text and JSONL corpora with the gpt2-tiny
 * fixture's tokenizer (document split, EOS separators, val split, errors
 * with line numbers). */
#include "core/core.h"
#include "test.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

#include <stdlib.h>
#include <unistd.h>

static char tmp[64];

static const char *tpath(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
    return buf[k];
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

static void write_shard(const char *path, uint32_t dtype, uint32_t vocab, const int32_t *ids, int64_t n) {
    lmc_err err = {0};
    struct lmc_shard_writer *w;
    CHECK_MSG(!lmc_shard_writer_open(&w, path, vocab, dtype, vocab - 1, &err), "%s", err.msg);
    CHECK(!lmc_shard_writer_add(w, ids, n, &err));
    lmc_shard_writer_end_doc(w);
    CHECK(!lmc_shard_writer_close(w, &err));
}

static void roundtrip(void) {
    lmc_err err = {0};
    int32_t ids[1000];
    uint64_t rng = 1;
    for (uint32_t dtype = 2; dtype <= 4; dtype += 2) {
        uint32_t vocab = dtype == 2 ? 65536 : 100000;
        for (int i = 0; i < 1000; i++) ids[i] = (int32_t)(test_rng_next(&rng) % vocab);
        const char *p = tpath(dtype == 2 ? "u16.bin" : "u32.bin");
        write_shard(p, dtype, vocab, ids, 1000);
        struct lmc_token_data d;
        CHECK_MSG(!lmc_token_data_open_files(&d, &p, 1, &err), "%s", err.msg);
        CHECK(d.n_tokens == 1000 && d.n_docs == 1 && d.vocab_size == vocab && d.eos_id == vocab - 1);
        int32_t back[1000];
        lmc_token_data_read(&d, 0, 1000, back);
        CHECK(!memcmp(back, ids, sizeof ids));
        CHECK(d.shards[0].size == LMC_SHARD_HEADER_BYTES + 1000 * dtype);
        lmc_token_data_close(&d);
    }
    /* an id outside the vocabulary is refused by the writer */
    struct lmc_shard_writer *w;
    CHECK(!lmc_shard_writer_open(&w, tpath("x.bin"), 10, 2, 9, &err));
    int32_t bad = 10;
    CHECK(lmc_shard_writer_add(w, &bad, 1, &err) == LMC_ERR_ARG && strstr(err.msg, "x.bin"));
    lmc_shard_writer_close(w, NULL);
    CHECK(lmc_shard_writer_open(&w, tpath("y.bin"), 70000, 2, 0, &err) == LMC_ERR_ARG);
    CHECK(lmc_shard_writer_open(&w, "/nonexistent/dir/z.bin", 10, 2, 0, &err) == LMC_ERR_IO &&
          strstr(err.msg, "/nonexistent/dir/z.bin"));
}

/* Writes a corrupted copy of a valid shard and checks the error. */
static void expect_bad(const unsigned char *img, size_t n, const char *name, const char *want) {
    const char *p = tpath(name);
    write_file(p, img, n);
    lmc_err err = {0};
    struct lmc_token_data d;
    lmc_status st = lmc_token_data_open_files(&d, &p, 1, &err);
    CHECK_MSG(st != LMC_OK && strstr(err.msg, name) && strstr(err.msg, want), "%s: got '%s', want '%s'", name,
              err.msg, want);
    if (!st) lmc_token_data_close(&d);
    struct lmc_shard_header h;
    CHECK(lmc_shard_parse(&h, img, n, name, &err) != LMC_OK);
}

static void corrupt(void) {
    int32_t ids[50];
    for (int i = 0; i < 50; i++) ids[i] = i;
    const char *p = tpath("good.bin");
    write_shard(p, 2, 100, ids, 50);
    size_t n;
    char *good;
    lmc_err err = {0};
    CHECK(!lmc_file_read(p, 1 << 20, &good, &n, &err));
    CHECK(n == 64 + 100);
    unsigned char img[256];
    memcpy(img, good, n);
    free(good);
    unsigned char b[256];
    expect_bad(img, 0, "empty.bin", "truncated");
    expect_bad(img, 30, "short.bin", "truncated");
    memcpy(b, img, n);
    b[3] = 'X';
    expect_bad(b, n, "magic.bin", "bad magic");
    memcpy(b, img, n);
    b[8] = 9;
    expect_bad(b, n, "version.bin", "version 9");
    memcpy(b, img, n);
    b[12] = 3;
    expect_bad(b, n, "dtype.bin", "dtype 3");
    memcpy(b, img, n);
    b[16] = 0;
    b[17] = 0;
    b[18] = 2; /* vocab 131072 with uint16 ids */
    expect_bad(b, n, "vocab.bin", "vocab_size 131072");
    memcpy(b, img, n);
    b[20] = 200; /* eos 200 >= vocab 100 */
    expect_bad(b, n, "eos.bin", "eos_id 200");
    memcpy(b, img, n);
    b[24] = 51; /* one token more than the file holds */
    expect_bad(b, n, "count.bin", "truncated");
    memcpy(b, img, n);
    b[31] = 0x80; /* a huge count */
    expect_bad(b, n, "huge.bin", "truncated");
    expect_bad(img, n - 1, "cut.bin", "truncated");
    memcpy(b, img, n);
    b[n] = 0;
    b[n + 1] = 0;
    expect_bad(b, n + 2, "trailing.bin", "after the 50 tokens");
    memcpy(b, img, n);
    b[64 + 2 * 17] = 100; /* token 17 = 100 >= vocab 100 */
    expect_bad(b, n, "id.bin", "token 17 has id 100");
    memcpy(b, img, n);
    b[50] = 1;
    expect_bad(b, n, "reserved.bin", "reserved");
    /* the split opener names the folder */
    struct lmc_token_data d;
    CHECK(lmc_token_data_open(&d, tmp, "nosuch", &err) == LMC_ERR_IO && strstr(err.msg, "nosuch_00000.bin"));
}

static void multi_shard_and_loader(void) {
    lmc_err err = {0};
    enum { N = 1000 };
    int32_t all[N];
    for (int i = 0; i < N; i++) all[i] = i % 997;
    /* three shards of 300, 0 and 700 tokens */
    write_shard(tpath("s_00000.bin"), 2, 1000, all, 300);
    write_shard(tpath("s_00001.bin"), 2, 1000, all, 0);
    write_shard(tpath("s_00002.bin"), 2, 1000, all + 300, 700);
    struct lmc_token_data d;
    CHECK_MSG(!lmc_token_data_open(&d, tmp, "s", &err), "%s", err.msg);
    CHECK(d.n_shards == 3 && d.n_tokens == N && d.n_docs == 3);
    int32_t buf[N];
    lmc_token_data_read(&d, 250, 100, buf); /* across the (empty) shard boundary */
    CHECK(!memcmp(buf, all + 250, 100 * sizeof *buf));
    lmc_token_data_read(&d, 0, N, buf);
    CHECK(!memcmp(buf, all, sizeof all));

    /* a shard with another vocabulary is refused */
    write_shard(tpath("m_00000.bin"), 2, 1000, all, 10);
    write_shard(tpath("m_00001.bin"), 2, 999, all, 10);
    struct lmc_token_data d2;
    CHECK(lmc_token_data_open(&d2, tmp, "m", &err) == LMC_ERR_FORMAT && strstr(err.msg, "m_00001.bin"));

    enum { B = 3, T = 16 };
    struct lmc_loader l, l2;
    CHECK(lmc_loader_init(&l, &d, B, 0, 1, true, &err) == LMC_ERR_ARG);
    CHECK(!lmc_loader_init(&l, &d, B, T, 42, true, &err));
    CHECK(l.n_windows == (N - 1) / T);
    int64_t nw = l.n_windows;
    int32_t batch[B * (T + 1)];
    /* every window of an epoch exactly once, each the stream's tokens [kT, kT+T] */
    struct lmc_loader lc;
    CHECK(!lmc_loader_init(&lc, &d, 1, T, 42, true, &err));
    int *seen = calloc((size_t)nw, sizeof *seen);
    int32_t w1[T + 1];
    for (int64_t s = 0; s < nw; s++) {
        lmc_loader_next(&lc, w1);
        int64_t start = -1;
        for (int64_t q = 0; q < nw; q++)
            if (!memcmp(w1, all + q * T, (T + 1) * sizeof *w1)) start = q;
        CHECK(start >= 0);
        if (start >= 0) seen[start]++;
    }
    CHECK(lc.epoch == 0 && lc.index == nw);
    int ok = 1;
    for (int64_t q = 0; q < nw; q++) ok &= seen[q] == 1;
    CHECK_MSG(ok, "epoch 0 does not visit every window once");
    free(seen);
    lmc_loader_free(&lc);
    lmc_loader_next(&l, batch);
    /* the same seed gives the same order; another seed another order */
    CHECK(!lmc_loader_init(&l2, &d, B, T, 42, true, &err));
    int32_t b1[B * (T + 1)], b2[B * (T + 1)];
    CHECK(!lmc_loader_seek(&l, 0, 0, &err));
    bool same = true;
    for (int s = 0; s < 50; s++) {
        lmc_loader_next(&l, b1);
        lmc_loader_next(&l2, b2);
        same &= !memcmp(b1, b2, sizeof b1);
    }
    CHECK(same);
    struct lmc_loader l3;
    CHECK(!lmc_loader_init(&l3, &d, B, T, 43, true, &err));
    CHECK(!lmc_loader_seek(&l, 0, 0, &err));
    lmc_loader_next(&l, b1);
    lmc_loader_next(&l3, b2);
    CHECK(memcmp(b1, b2, sizeof b1) != 0);
    /* epochs differ in order */
    CHECK(!lmc_loader_seek(&l, 1, 0, &err));
    lmc_loader_next(&l, b2);
    CHECK(memcmp(b1, b2, sizeof b1) != 0);
    /* resume: a fresh loader seeked to a saved position continues identically */
    CHECK(!lmc_loader_seek(&l, 0, 0, &err));
    for (int s = 0; s < 37; s++) lmc_loader_next(&l, b1);
    int64_t ep = l.epoch, ix = l.index;
    CHECK(ep == 1); /* 37 * 3 = 111 > 62 windows: in the second epoch */
    struct lmc_loader r;
    CHECK(!lmc_loader_init(&r, &d, B, T, 42, true, &err));
    CHECK(!lmc_loader_seek(&r, ep, ix, &err));
    same = true;
    for (int s = 0; s < 40; s++) {
        lmc_loader_next(&l, b1);
        lmc_loader_next(&r, b2);
        same &= !memcmp(b1, b2, sizeof b1);
    }
    CHECK(same);
    CHECK(lmc_loader_seek(&r, 0, nw + 1, &err) == LMC_ERR_ARG);
    /* without shuffle: stream order */
    struct lmc_loader s;
    CHECK(!lmc_loader_init(&s, &d, 2, T, 0, false, &err));
    lmc_loader_next(&s, b1);
    CHECK(!memcmp(b1, all, (T + 1) * sizeof *b1) && !memcmp(b1 + T + 1, all + T, (T + 1) * sizeof *b1));
    lmc_loader_free(&l);
    lmc_loader_free(&l2);
    lmc_loader_free(&l3);
    lmc_loader_free(&r);
    lmc_loader_free(&s);
    /* too little data for one window */
    CHECK(lmc_loader_init(&s, &d, 1, N, 0, false, &err) == LMC_ERR_ARG);
    lmc_token_data_close(&d);
}

/* Decodes a split's documents (EOS-separated) and checks them against want[]. */
static int split_docs(const char *dir, const char *split, struct lmc_tokenizer *t, const char **want, int n_want,
                      bool *found) {
    lmc_err err = {0};
    struct lmc_token_data d;
    if (lmc_token_data_open(&d, dir, split, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    int32_t *ids = malloc((d.n_tokens + 1) * sizeof *ids);
    lmc_token_data_read(&d, 0, (int64_t)d.n_tokens, ids);
    int docs = 0;
    int64_t start = 0;
    for (int64_t i = 0; i < (int64_t)d.n_tokens; i++) {
        if (ids[i] != (int32_t)d.eos_id) continue;
        char *text;
        size_t len;
        CHECK(!lmc_tokenizer_decode(t, ids + start, i - start, &text, &len, &err));
        int k;
        for (k = 0; k < n_want; k++)
            if (strlen(want[k]) == len && !memcmp(want[k], text, len)) break;
        CHECK_MSG(k < n_want, "%s: unexpected document '%s'", split, text);
        if (k < n_want) found[k] = true;
        free(text);
        docs++;
        start = i + 1;
    }
    CHECK(start == (int64_t)d.n_tokens); /* the stream ends with EOS */
    CHECK((uint64_t)docs == d.n_docs);
    free(ids);
    lmc_token_data_close(&d);
    return docs;
}

static void prepare(void) {
    lmc_err err = {0};
    const char *docs[] = {"First document.\nIt has two lines.", "Second one, after a blank line.",
                          "Third: numbers 123 and caf\xc3\xa9.", "Fourth.", "Fifth and last."};
    const char *text = "First document.\nIt has two lines.\n\n\nSecond one, after a blank line.\n  \n"
                       "Third: numbers 123 and caf\xc3\xa9.\n\nFourth.\n\nFifth and last.";
    const char *txt = tpath("corpus.txt");
    write_file(txt, text, strlen(text));
    struct lmc_tokenizer *t;
    CHECK_MSG(!lmc_tokenizer_load(&t, "tests/fixtures/gpt2-tiny", &err), "%s", err.msg);
    const char *inputs[] = {txt};
    struct lmc_prepare_opts o = {.tokenizer_dir = "tests/fixtures/gpt2-tiny", .inputs = inputs, .n_inputs = 1,
                                 .field = "text", .doc_split = LMC_DOC_BLANK_LINE, .val_fraction = 0.4, .seed = 3,
                                 .out_dir = tpath("prep")};
    struct lmc_prepare_stats s;
    CHECK_MSG(!lmc_prepare_data(&o, &s, &err), "%s", err.msg);
    CHECK(s.docs[0] + s.docs[1] == 5 && s.dtype == 2 && s.eos_id == (uint32_t)lmc_tokenizer_eos(t));
    bool found[5] = {0};
    int ntr = split_docs(o.out_dir, "train", t, docs, 5, found);
    int nva = split_docs(o.out_dir, "val", t, docs, 5, found);
    CHECK(ntr + nva == 5 && (uint64_t)ntr == s.docs[0]);
    for (int k = 0; k < 5; k++) CHECK_MSG(found[k], "document %d missing", k);
    /* the same seed gives the same split; fraction 0 puts nothing in val */
    struct lmc_prepare_stats s2;
    CHECK(!lmc_prepare_data(&o, &s2, &err));
    CHECK(s2.docs[1] == s.docs[1] && s2.tokens[1] == s.tokens[1]);
    o.val_fraction = 0;
    CHECK(!lmc_prepare_data(&o, &s2, &err));
    CHECK(s2.docs[1] == 0 && s2.docs[0] == 5);
    o.val_fraction = 1;
    CHECK(!lmc_prepare_data(&o, &s2, &err));
    CHECK(s2.docs[0] == 0 && s2.docs[1] == 5);
    /* a held-out tail: documents starting at line 7 or later ("Third" on) go to val */
    o.val_fraction = 0;
    o.val_from_line = 7;
    CHECK_MSG(!lmc_prepare_data(&o, &s2, &err), "%s", err.msg);
    CHECK(s2.docs[0] == 2 && s2.docs[1] == 3);
    memset(found, 0, sizeof found);
    CHECK(split_docs(o.out_dir, "train", t, docs, 2, found) == 2);
    CHECK(split_docs(o.out_dir, "val", t, docs + 2, 3, found + 2) == 3);
    for (int k = 0; k < 5; k++) CHECK_MSG(found[k], "tail split: document %d missing", k);
    o.val_from_line = 8; /* a line inside no document start: "Fourth" (line 9) on */
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 3 && s2.docs[1] == 2);
    /* lines count on across inputs: the first file has 11 lines (no final newline) */
    const char *two[] = {txt, txt};
    o.inputs = two;
    o.n_inputs = 2;
    o.val_from_line = 12;
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 5 && s2.docs[1] == 5);
    o.val_from_line = 13;
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 6 && s2.docs[1] == 4);
    o.val_from_line = 100; /* past the end: nothing held out */
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 10 && s2.docs[1] == 0);
    /* with a fraction too, the head is split by the hash and the tail is all val */
    o.val_fraction = 1;
    o.val_from_line = 12;
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 0 && s2.docs[1] == 10);
    o.inputs = inputs;
    o.n_inputs = 1;
    o.val_from_line = 0;
    /* line documents; whole-file documents; u32 ids; small shards */
    o.val_fraction = 0;
    o.doc_split = LMC_DOC_LINE;
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 6);
    o.doc_split = LMC_DOC_FILE;
    o.dtype = 4;
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 1 && s2.dtype == 4);
    o.doc_split = LMC_DOC_BLANK_LINE;
    o.dtype = 0;
    o.shard_tokens = 8;
    CHECK(!lmc_prepare_data(&o, &s2, &err));
    CHECK(s2.shards[0] >= 3);
    memset(found, 0, sizeof found);
    CHECK(split_docs(o.out_dir, "train", t, docs, 5, found) == 5);
    o.shard_tokens = 0;

    /* JSONL */
    const char *jl = "{\"text\": \"First document.\\nIt has two lines.\", \"id\": 1}\n\n"
                     "{\"text\": \"Fourth.\"}\n";
    const char *jp = tpath("c.jsonl");
    write_file(jp, jl, strlen(jl));
    inputs[0] = jp;
    o.jsonl = true;
    CHECK_MSG(!lmc_prepare_data(&o, &s2, &err), "%s", err.msg);
    CHECK(s2.docs[0] == 2);
    const char *bad = "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": oops}\n";
    write_file(jp, bad, strlen(bad));
    CHECK(lmc_prepare_data(&o, &s2, &err) == LMC_ERR_FORMAT && strstr(err.msg, "c.jsonl:3"));
    const char *nofield = "{\"content\": \"ok\"}\n";
    write_file(jp, nofield, strlen(nofield));
    CHECK(lmc_prepare_data(&o, &s2, &err) == LMC_ERR_FORMAT && strstr(err.msg, "c.jsonl:1") &&
          strstr(err.msg, "\"text\""));
    o.field = "content";
    CHECK(!lmc_prepare_data(&o, &s2, &err) && s2.docs[0] == 1);
    /* invalid UTF-8 names the file and line */
    o.jsonl = false;
    write_file(txt, "good line\n\nbad \xff line\n", 21);
    inputs[0] = txt;
    CHECK(lmc_prepare_data(&o, &s2, &err) != LMC_OK && strstr(err.msg, "corpus.txt") && strstr(err.msg, "line 3"));
    inputs[0] = tpath("missing.txt");
    CHECK(lmc_prepare_data(&o, &s2, &err) == LMC_ERR_IO && strstr(err.msg, "missing.txt"));
    o.tokenizer_dir = tpath("no-tokenizer");
    CHECK(lmc_prepare_data(&o, &s2, &err) != LMC_OK);
    lmc_tokenizer_free(t);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/lmc_test_data_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    roundtrip();
    corrupt();
    multi_shard_and_loader();
    prepare();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_data");
}
