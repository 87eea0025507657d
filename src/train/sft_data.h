/* sft_data.h — supervised fine-tuning data: JSONL in the three layouts TRL
 * reads ({"messages":[{"role","content"},...]} rendered with the model's
 * chat template, {"prompt","completion"}, {"text"}), tokenized with a label
 * mask (by default loss only on assistant turns / the completion, as TRL's
 * assistant_only_loss / completion_only_loss; all tokens for text), and the
 * micro-batches built from it: one example per row padded with ignored
 * targets, or packed several to a row with segments (attention within an
 * example, positions restarting: lmc_tacts.segs). */
#ifndef LMC_TRAIN_SFT_DATA_H
#define LMC_TRAIN_SFT_DATA_H

#include "lmc.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

struct lmc_sft_opts {
    int64_t seq;          /* tokens per example after the shift (longer: truncated, counted) */
    bool loss_all;        /* --loss-on all: every token is a target */
    bool skip_bad_lines;  /* malformed lines skipped (counted) instead of an error */
    bool refuse_long;     /* --truncate no: an example longer than seq is an error (a bad line) */
};

struct lmc_sft_example {
    int64_t off, n;       /* ids[off .. off+n) */
};

struct lmc_sft_data {
    int32_t *ids;
    uint8_t *label;       /* per token: 1 when it is a target */
    struct lmc_sft_example *ex;
    int64_t n_ex, n_ids, cap_ids, cap_ex;
    int64_t n_truncated, n_skipped, n_targets;
};

/* Reads path. Errors name the file and line ("data.jsonl:7: ..."). */
lmc_status lmc_sft_load(struct lmc_sft_data *d, const char *path, const struct lmc_tokenizer *tok,
                        const struct lmc_sft_opts *o, lmc_err *err);
/* Adds one JSON line (text[0..len), line number for messages). */
lmc_status lmc_sft_add_line(struct lmc_sft_data *d, const char *text, size_t len, int64_t line,
                            const char *path, const struct lmc_tokenizer *tok, const struct lmc_sft_opts *o,
                            lmc_err *err);
void lmc_sft_free(struct lmc_sft_data *d);
/* Moves round(fraction * n_ex) examples (at least 1, fewer than all; a
 * seeded choice) from d into a new val (--val-fraction). LMC_ERR_ARG when
 * d has fewer than 2 examples. */
lmc_status lmc_sft_split(struct lmc_sft_data *d, double fraction, uint64_t seed, struct lmc_sft_data *val,
                         lmc_err *err);

/* Micro-batches of B rows of T tokens over the examples in a seeded order
 * (reshuffled each epoch). */
struct lmc_sft_batcher {
    const struct lmc_sft_data *d;
    int64_t B, T;
    bool pack;
    uint64_t seed;
    int64_t *order, next, epoch;
    int64_t *segs, n_segs;    /* (start, len) pairs of the last packed batch */
    int32_t pad;
};
lmc_status lmc_sft_batcher_init(struct lmc_sft_batcher *b, const struct lmc_sft_data *d, int64_t B, int64_t T,
                                bool pack, uint64_t seed, int32_t pad, lmc_err *err);
/* The next micro-batch: inputs and targets (B*T; -1: ignored), and the
 * segments when packing (else NULL). */
void lmc_sft_batch(struct lmc_sft_batcher *b, int32_t *in, int32_t *tg, const int64_t **segs, int64_t *n_segs);
/* Micro-batches one epoch takes (in the first epoch's order). */
int64_t lmc_sft_batches_per_epoch(const struct lmc_sft_batcher *b);
void lmc_sft_batcher_free(struct lmc_sft_batcher *b);
/* Continues at example `next` of epoch `epoch` (a checkpoint's position). */
lmc_status lmc_sft_batcher_seek(struct lmc_sft_batcher *b, int64_t epoch, int64_t next, lmc_err *err);

#endif
