/* fuzz_finetune_data.c — libFuzzer target for the fine-tuning inputs: the
 * first byte picks the parser, the rest is its text: an adapter_config.json
 * (lmc_lora_config_parse; a parsed config has a rank in range and
 * NUL-terminated targets), or one JSONL line of SFT data tokenized with the
 * qwen2-tiny tokenizer (tests/fixtures/qwen2-tiny, or $LMC_FUZZ_TOKENIZER)
 * and batched packed and unpacked (every id in range, labels 0/1, the
 * segments covering the row). */
#include "core/core.h"
#include "train/lora.h"
#include "train/sft_data.h"

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
        fprintf(stderr, "fuzz_finetune_data: %s\n", err.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    lmc_err err;
    memset(&err, 0, sizeof err);
    if (data[0] & 1) {
        struct lmc_lora_config c;
        if (lmc_lora_config_parse(&c, text, len, "fuzz/adapter_config.json", &err) == LMC_OK) {
            LMC_ASSERT(c.r >= 1 && c.r <= 65536 && c.n_targets >= 0 && c.n_targets <= LMC_LORA_MAX_TARGETS);
            for (int i = 0; i < c.n_targets; i++) LMC_ASSERT(memchr(c.targets[i], 0, sizeof c.targets[i]));
        } else {
            LMC_ASSERT(err.msg[0] != 0);
        }
        return 0;
    }
    load_once();
    struct lmc_sft_data d;
    memset(&d, 0, sizeof d);
    struct lmc_sft_opts o = {.seq = 16, .loss_all = (data[0] & 2) != 0};
    if (lmc_sft_add_line(&d, text, len, 1, "fuzz.jsonl", tok, &o, &err) != LMC_OK) {
        LMC_ASSERT(err.msg[0] != 0 && d.n_ex == 0);
        lmc_sft_free(&d);
        return 0;
    }
    LMC_ASSERT(d.n_ex == 1 && d.ex[0].n >= 2 && d.ex[0].n <= o.seq + 1);
    int64_t V = lmc_tokenizer_vocab_size(tok);
    for (int64_t i = 0; i < d.n_ids; i++) LMC_ASSERT(d.ids[i] >= 0 && d.ids[i] < V && d.label[i] <= 1);
    for (int pack = 0; pack < 2; pack++) {
        struct lmc_sft_batcher b;
        int32_t in[32], tg[32];
        const int64_t *segs;
        int64_t ns;
        if (lmc_sft_batcher_init(&b, &d, 2, 16, pack, 7, 0, &err) != LMC_OK) continue;
        lmc_sft_batch(&b, in, tg, &segs, &ns);
        int64_t end = 0;
        for (int64_t i = 0; pack && i < ns; i++) {
            LMC_ASSERT(segs[2 * i] == end && segs[2 * i + 1] > 0);
            end += segs[2 * i + 1];
        }
        LMC_ASSERT(!pack || end == 32);
        for (int i = 0; i < 32; i++) LMC_ASSERT(in[i] >= 0 && in[i] < V && tg[i] >= -1 && tg[i] < V);
        lmc_sft_batcher_free(&b);
    }
    lmc_sft_free(&d);
    return 0;
}
