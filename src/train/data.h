/* data.h — tokenized training data: the binary token shard format, its
 * writer and fully validating reader, a split made of several shards, the
 * (B, T+1) window loader with a seeded, resumable order, and preparing
 * shards from text / JSONL corpora with a tokenizer.
 *
 * Shard file (all integers little-endian), 64-byte header then the ids:
 *
 *   offset size  field
 *        0    8  magic "LMCTOK01"
 *        8    4  version, u32 = 1
 *       12    4  dtype: bytes per id, u32 = 2 (uint16) or 4 (uint32)
 *       16    4  vocab_size, u32: every id is < vocab_size (1 .. 2^31)
 *       20    4  eos_id, u32: the document separator (0xFFFFFFFF = none)
 *       24    8  n_tokens, u64
 *       32    8  n_docs, u64: documents ended in this shard
 *       40   24  reserved, zero
 *       64       n_tokens ids of dtype bytes each; the file ends there
 *
 * Documents are stored one after another, each followed by eos_id. A split
 * ("train", "val") is the files DIR/<split>_00000.bin, _00001.bin, ... read
 * as one token stream. */
#ifndef LMC_TRAIN_DATA_H
#define LMC_TRAIN_DATA_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LMC_SHARD_MAGIC "LMCTOK01"
#define LMC_SHARD_VERSION 1u
#define LMC_SHARD_HEADER_BYTES 64
#define LMC_SHARD_NO_EOS 0xffffffffu

struct lmc_shard_header {
    uint32_t version;
    uint32_t dtype;       /* bytes per id: 2 or 4 */
    uint32_t vocab_size;
    uint32_t eos_id;      /* LMC_SHARD_NO_EOS when none */
    uint64_t n_tokens;
    uint64_t n_docs;
};

/* Validates a whole shard image (buf, len): magic, version, dtype, vocab,
 * sizes (the file must hold exactly n_tokens ids) and every id < vocab_size.
 * label names the file in messages (LMC_ERR_FORMAT). */
lmc_status lmc_shard_parse(struct lmc_shard_header *h, const void *buf, size_t len, const char *label,
                           lmc_err *err);

/* ---- writer ---- */
struct lmc_shard_writer;
/* Creates path (truncating); dtype 2 needs vocab_size <= 65536. */
lmc_status lmc_shard_writer_open(struct lmc_shard_writer **w, const char *path, uint32_t vocab_size,
                                 uint32_t dtype, uint32_t eos_id, lmc_err *err);
/* Appends ids (each must be in 0..vocab_size-1, else LMC_ERR_ARG). */
lmc_status lmc_shard_writer_add(struct lmc_shard_writer *w, const int32_t *ids, int64_t n, lmc_err *err);
void lmc_shard_writer_end_doc(struct lmc_shard_writer *w);
uint64_t lmc_shard_writer_tokens(const struct lmc_shard_writer *w);
/* Writes the final header and closes; frees w whatever happens. */
lmc_status lmc_shard_writer_close(struct lmc_shard_writer *w, lmc_err *err);

/* ---- a split: shards read as one stream ---- */
struct lmc_shard {
    char *path;
    void *map;            /* whole file, mmap'd read-only */
    size_t size;
    struct lmc_shard_header h;
    uint64_t start;       /* index of its first token in the stream */
};

struct lmc_token_data {
    struct lmc_shard *shards;
    int n_shards;
    uint64_t n_tokens;
    uint64_t n_docs;
    uint32_t vocab_size, eos_id;
};

/* Opens dir/<split>_00000.bin, _00001.bin, ... (at least one must exist).
 * Every shard is validated and must agree on vocab_size and eos_id. */
lmc_status lmc_token_data_open(struct lmc_token_data *d, const char *dir, const char *split, lmc_err *err);
/* Opens the given shard files in order. */
lmc_status lmc_token_data_open_files(struct lmc_token_data *d, const char *const *paths, int n, lmc_err *err);
void lmc_token_data_close(struct lmc_token_data *d);
/* Copies tokens [pos, pos+n) of the stream into out (caller checks range). */
void lmc_token_data_read(const struct lmc_token_data *d, uint64_t pos, int64_t n, int32_t *out);

/* ---- loader: (B, T+1) windows ----
 * Window k holds tokens [k*T, k*T + T + 1) of the stream (inputs are the
 * first T, targets the last T), k in [0, n_windows), n_windows =
 * (n_tokens - 1) / T. With shuffle, each epoch visits every window once in
 * an order drawn from (seed, epoch); without, in stream order. The position
 * (epoch, index) is the whole state: the same seed and position give the
 * same batches. */
struct lmc_loader {
    const struct lmc_token_data *d;
    int64_t B, T;
    uint64_t seed;
    bool shuffle;
    int64_t n_windows;
    int64_t epoch, index;  /* next window: order(epoch)[index] */
    int64_t *perm;         /* (n_windows) order of perm_epoch, when shuffling */
    int64_t perm_epoch;
};

lmc_status lmc_loader_init(struct lmc_loader *l, const struct lmc_token_data *d, int64_t B, int64_t T,
                           uint64_t seed, bool shuffle, lmc_err *err);
/* Moves to a saved position; LMC_ERR_ARG if index is outside [0, n_windows]. */
lmc_status lmc_loader_seek(struct lmc_loader *l, int64_t epoch, int64_t index, lmc_err *err);
/* Fills out (B, T+1) with the next B windows, advancing the position. */
void lmc_loader_next(struct lmc_loader *l, int32_t *out);
void lmc_loader_free(struct lmc_loader *l);

/* ---- preparing shards from a corpus ---- */
enum lmc_doc_split {
    LMC_DOC_BLANK_LINE,  /* text: documents are separated by one or more blank lines */
    LMC_DOC_LINE,        /* text: every non-empty line is a document */
    LMC_DOC_FILE,        /* text: each file is one document */
};

struct lmc_prepare_opts {
    const char *tokenizer_dir;      /* folder with tokenizer.json */
    const char *const *inputs;      /* text or JSONL files */
    int n_inputs;
    bool jsonl;                     /* one JSON object per line */
    const char *field;              /* JSONL: the text field ("text") */
    enum lmc_doc_split doc_split;   /* text files */
    double val_fraction;            /* share of documents in "val" (0..1) */
    uint64_t seed;                  /* decides which documents go to val */
    int64_t val_from_line;          /* > 0: documents starting at this line or later go to val (lines
                                     * counted across the inputs in order: the second file's first
                                     * line follows the first file's last); earlier ones use the
                                     * val_fraction hash. 0: off */
    uint32_t dtype;                 /* 2, 4, or 0: uint16 when the vocab fits */
    uint64_t shard_tokens;          /* start a new shard after this many tokens (0: 2^28) */
    const char *out_dir;            /* created if missing */
};

struct lmc_prepare_stats {
    uint64_t docs[2], tokens[2];    /* [0] train, [1] val */
    int shards[2];
    uint64_t bytes;
    uint32_t vocab_size, eos_id, dtype;
};

/* Tokenizes every document, appends the tokenizer's EOS to each, and
 * writes out_dir/train_*.bin, out_dir/val_*.bin and out_dir/meta.json. A
 * document goes to val when a hash of (seed, document number) falls below
 * val_fraction, so the split does not depend on anything else, or when it
 * starts at or after val_from_line (a held-out tail). Errors name the file
 * and line. */
lmc_status lmc_prepare_data(const struct lmc_prepare_opts *o, struct lmc_prepare_stats *stats, lmc_err *err);

#endif
