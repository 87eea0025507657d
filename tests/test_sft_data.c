/* test_sft_data.c — fine-tuning data and its batches: prompt/completion,
 * text and chat messages (a ChatML template added to llama-tiny's
 * tokenizer) tokenized with the right label spans (the completion + EOS;
 * each assistant content + <|im_end|>; everything with --loss-on all),
 * truncation counted, malformed lines named by line number or skipped;
 * the masked loss equals the mean over exactly the unmasked tokens; packed
 * batches (segments: attention within an example, positions restarting)
 * give the per-example losses and the gradients of unpacked ones on
 * llama-tiny (RoPE) and gpt2-tiny (learned positions). */
#include "test.h"
#include "core/core.h"
#include "model/backward.h"
#include "train/sft_data.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

static void write_file(const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
}

/* the labelled runs of example i decoded, joined by '|' */
static void label_runs(const struct lmc_sft_data *d, const struct lmc_tokenizer *tok, int64_t i, char *out,
                       size_t cap) {
    out[0] = 0;
    const struct lmc_sft_example *e = &d->ex[i];
    for (int64_t t = 0; t < e->n;) {
        if (!d->label[e->off + t]) {
            t++;
            continue;
        }
        int64_t u = t;
        while (u < e->n && d->label[e->off + u]) u++;
        char *s;
        size_t len;
        lmc_err err = {0};
        if (!lmc_tokenizer_decode(tok, d->ids + e->off + t, u - t, &s, &len, &err)) {
            if (out[0]) strncat(out, "|", cap - strlen(out) - 1);
            strncat(out, s, cap - strlen(out) - 1);
            free(s);
        }
        t = u;
    }
}

static void test_data(void) {
    lmc_err err = {0};
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp tests/fixtures/llama-tiny/tokenizer.json %s/", tmpdir);
    CHECK(system(cmd) == 0);
    write_file("tokenizer_config.json",
               "{\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"add_bos_token\":true,\"chat_template\":"
               "\"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
               "{% endif %}\"}");
    struct lmc_tokenizer *tok;
    if (lmc_tokenizer_load(&tok, tmpdir, &err)) {
        CHECK_MSG(0, "tokenizer: %s", err.msg);
        return;
    }
    write_file("d.jsonl",
               "{\"prompt\":\"In the beginning\",\"completion\":\" God created the heaven\"}\n"
               "\n"
               "{\"text\":\"And the earth was without form\"}\n"
               "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Quote "
               "Genesis 1:3\"},{\"role\":\"assistant\",\"content\":\"Let there be light.\"},{\"role\":\"user\","
               "\"content\":\"And then?\"},{\"role\":\"assistant\",\"content\":\"There was light.\"}]}\n");
    char path[256];
    snprintf(path, sizeof path, "%s/d.jsonl", tmpdir);
    struct lmc_sft_opts o = {.seq = 512};
    struct lmc_sft_data d, one_more;
    if (lmc_sft_load(&d, path, tok, &o, &err)) {
        CHECK_MSG(0, "load: %s", err.msg);
        lmc_tokenizer_free(tok);
        return;
    }
    CHECK(d.n_ex == 3 && d.n_skipped == 0 && d.n_truncated == 0);
    char runs[1024];
    int32_t *ids;
    int64_t n;
    /* prompt/completion: BOS + prompt unlabelled, completion + EOS labelled */
    CHECK(!lmc_tokenizer_encode(tok, "In the beginning", 16, true, &ids, &n, &err));
    CHECK(d.ex[0].n > n && !d.label[d.ex[0].off + n - 1] && d.label[d.ex[0].off + n]);
    CHECK(d.ids[d.ex[0].off + d.ex[0].n - 1] == lmc_tokenizer_eos(tok));
    free(ids);
    label_runs(&d, tok, 0, runs, sizeof runs);
    CHECK_MSG(!strcmp(runs, " God created the heaven</s>"), "completion labels '%s'", runs);
    /* text: every token a target */
    int64_t lab = 0;
    for (int64_t t = 0; t < d.ex[1].n; t++) lab += d.label[d.ex[1].off + t];
    CHECK(lab == d.ex[1].n);
    /* messages: each assistant content and its end-of-turn */
    label_runs(&d, tok, 2, runs, sizeof runs);
    CHECK_MSG(!strcmp(runs, "Let there be light.<|im_end|>|There was light.<|im_end|>"), "assistant labels '%s'", runs);
    int64_t targets = 0;
    for (int64_t i = 0; i < d.n_ex; i++)
        for (int64_t t = 1; t < d.ex[i].n; t++) targets += d.label[d.ex[i].off + t];
    CHECK(targets == d.n_targets);
    /* --val-fraction: one of three examples moves, targets follow it */
    struct lmc_sft_data val;
    int64_t before = d.n_targets;
    CHECK(!lmc_sft_split(&d, 0.3, 5, &val, &err));
    CHECK(d.n_ex == 2 && val.n_ex == 1 && d.n_targets + val.n_targets == before && val.n_targets > 0);
    CHECK(lmc_sft_split(&val, 0.5, 5, &one_more, &err) == LMC_ERR_ARG);
    lmc_sft_free(&val);
    lmc_sft_free(&d);
    /* --loss-on all; truncation to --seq 6 */
    o.loss_all = true;
    o.seq = 6;
    CHECK(!lmc_sft_load(&d, path, tok, &o, &err));
    CHECK(d.n_truncated == 3 && d.ex[2].n == 7);
    for (int64_t t = 0; t < d.ex[2].n; t++) CHECK(d.label[d.ex[2].off + t]);
    lmc_sft_free(&d);
    /* --truncate no: the first long example is refused, naming its line */
    o.refuse_long = true;
    CHECK(lmc_sft_load(&d, path, tok, &o, &err) == LMC_ERR_FORMAT && strstr(err.msg, "d.jsonl:1: example of") &&
          strstr(err.msg, "longer than --seq 6"));
    o.refuse_long = false;
    /* malformed lines: named, or skipped */
    write_file("bad.jsonl", "{\"text\":\"ok line\"}\n{\"prompt\":\"x\"}\n{\"text\": 3}\n{bad json\n"
                            "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}\n{\"foo\":1}\n");
    snprintf(path, sizeof path, "%s/bad.jsonl", tmpdir);
    o = (struct lmc_sft_opts){.seq = 64};
    CHECK(lmc_sft_load(&d, path, tok, &o, &err) == LMC_ERR_FORMAT && strstr(err.msg, "bad.jsonl:2: ") &&
          strstr(err.msg, "\"prompt\" and \"completion\""));
    const char *want[] = {"bad.jsonl:3: \"text\" must be a string", "bad.jsonl:4: not a JSON object",
                          "bad.jsonl:5: message role", "bad.jsonl:6: expected"};
    struct lmc_sft_data one = {0};
    o.seq = 64;
    for (int i = 0; i < 4; i++) {
        FILE *f = fopen(path, "rb");
        char line[256];
        for (int k = 0; k <= i + 2; k++) CHECK(fgets(line, sizeof line, f) != NULL);
        fclose(f);
        lmc_status s = lmc_sft_add_line(&one, line, strlen(line), i + 3, "bad.jsonl", tok, &o, &err);
        CHECK_MSG(s && strstr(err.msg, want[i]), "line %d: %s", i + 3, err.msg);
    }
    lmc_sft_free(&one);
    o.skip_bad_lines = true;
    CHECK(!lmc_sft_load(&d, path, tok, &o, &err) && d.n_ex == 1 && d.n_skipped == 5);
    lmc_sft_free(&d);
    /* no template: messages data refused with a clear error */
    struct lmc_tokenizer *plain;
    CHECK(!lmc_tokenizer_load(&plain, "tests/fixtures/llama-tiny", &err));
    struct lmc_sft_data e2 = {0};
    const char *ml = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]}";
    CHECK(lmc_sft_add_line(&e2, ml, strlen(ml), 1, "x.jsonl", plain, &o, &err) == LMC_ERR_UNSUPPORTED &&
          strstr(err.msg, "chat template"));
    lmc_sft_free(&e2);
    lmc_tokenizer_free(plain);
    lmc_tokenizer_free(tok);
}

/* ---------------- masked loss, packing ---------------- */

static uint64_t rs = 99;

static void test_pack(const char *model) {
    char dir[128];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", model);
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(!lmc_backend_cpu_init(&be, 2, &err));
    struct lmc_tmodel tm;
    if (lmc_tmodel_load(&tm, dir, &be, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    int64_t V = tm.cfg.vocab_size;
    /* three examples (lengths after the shift 7, 12, 5) in a data set */
    struct lmc_sft_data d = {0};
    const int64_t lens[3] = {8, 13, 6};
    for (int i = 0; i < 3; i++) {
        d.ex = realloc(d.ex, sizeof *d.ex * (size_t)(i + 1));
        d.ids = realloc(d.ids, sizeof *d.ids * (size_t)(d.n_ids + lens[i]));
        d.label = realloc(d.label, (size_t)(d.n_ids + lens[i]));
        for (int64_t t = 0; t < lens[i]; t++) {
            d.ids[d.n_ids + t] = (int32_t)(lmc_rng_next(&rs) % (uint64_t)V);
            d.label[d.n_ids + t] = t >= 3; /* a 3-token "prompt" */
        }
        d.ex[i] = (struct lmc_sft_example){d.n_ids, lens[i]};
        d.n_ids += lens[i];
        d.n_ex++;
    }
    /* unpacked: B=3 rows of T=12; packed: B=1 row of T=30 (7+12+5, padding 6) */
    struct lmc_sft_batcher bu, bp;
    CHECK(!lmc_sft_batcher_init(&bu, &d, 3, 12, false, 1, 0, &err));
    CHECK(!lmc_sft_batcher_init(&bp, &d, 1, 30, true, 1, 0, &err));
    int32_t iu[36], tu[36], ip[30], tp[30];
    const int64_t *segs;
    int64_t nseg;
    lmc_sft_batch(&bu, iu, tu, &segs, &nseg);
    CHECK(segs == NULL);
    lmc_sft_batch(&bp, ip, tp, &segs, &nseg);
    CHECK(nseg == 4 && segs[7] == 6);
    struct lmc_tacts au, ap;
    CHECK(!lmc_tacts_init(&au, &tm, &be, 3, 12, false, &err));
    CHECK(!lmc_tacts_init(&ap, &tm, &be, 1, 30, false, &err));
    int64_t numel = tm.numel;
    float *gu = malloc(sizeof(float) * (size_t)numel), *gp = malloc(sizeof(float) * (size_t)numel);
    double su, sp;
    int64_t cu, cp;
    lmc_tmodel_zero_grad(&tm);
    CHECK(!lmc_tmodel_step(&tm, &be, &au, iu, tu, true, 1.0f, &su, &cu, &err));
    be.download(be.ctx, gu, tm.g, sizeof(float) * (size_t)numel);
    float lu[36], lp[30];
    memcpy(lu, au.loss_host, sizeof lu);
    ap.segs = segs;
    ap.n_segs = nseg;
    lmc_tmodel_zero_grad(&tm);
    CHECK_MSG(!lmc_tmodel_step(&tm, &be, &ap, ip, tp, true, 1.0f, &sp, &cp, &err), "%s", err.msg);
    be.download(be.ctx, gp, tm.g, sizeof(float) * (size_t)numel);
    memcpy(lp, ap.loss_host, sizeof lp);
    CHECK(cu == cp && cu == 3 * 0 + (7 - 2) + (12 - 2) + (5 - 2));
    /* per-example losses: each row of the unpacked batch is one example, in
     * the order the packed row holds them */
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        int64_t o = segs[2 * i], len = segs[2 * i + 1];
        /* find the unpacked row with the same inputs */
        int row = -1;
        for (int r = 0; r < 3; r++)
            if (!memcmp(iu + r * 12, ip + o, sizeof(int32_t) * (size_t)len)) row = r;
        CHECK(row >= 0);
        if (row < 0) continue;
        double a = 0, b = 0;
        for (int64_t t = 0; t < len; t++)
            if (tp[o + t] >= 0) {
                a += lp[o + t];
                b += lu[row * 12 + t];
            }
        worst = fmax(worst, fabs(a - b) / fabs(b));
    }
    CHECK_MSG(worst < 1e-5, "%s packed vs unpacked per-example loss: %.3e", model, worst);
    /* the same row without segments (plain concatenation) differs */
    double cat_sum;
    int64_t cat_n;
    ap.segs = NULL;
    ap.n_segs = 0;
    CHECK(!lmc_tmodel_step(&tm, &be, &ap, ip, tp, false, 1.0f, &cat_sum, &cat_n, &err));
    CHECK_MSG(fabs(cat_sum - sp) > 1e-5 * fabs(sp), "%s: concatenation without segments differs (%.6f vs %.6f)",
              model, cat_sum, sp);
    double num = 0, den = 0;
    for (int64_t i = 0; i < numel; i++) {
        num = fmax(num, fabs((double)gu[i] - gp[i]));
        den = fmax(den, fabs((double)gu[i]));
    }
    CHECK_MSG(num / den < 1e-4, "%s packed vs unpacked gradients: %.3e", model, num / den);
    /* the masked loss is the mean over exactly the unmasked targets: the
     * same forward with every target counted gives per-token losses whose
     * mean over the masked batch's counted positions is that loss */
    int32_t all[36];
    for (int r = 0; r < 3; r++)
        for (int t = 0; t < 12; t++) {
            int64_t e = -1;
            for (int i = 0; i < 3; i++)
                if (!memcmp(iu + r * 12, d.ids + d.ex[i].off, sizeof(int32_t) * 4)) e = i;
            all[r * 12 + t] = e >= 0 && t + 1 < lens[e] ? d.ids[d.ex[e].off + t + 1] : 0;
        }
    double sa;
    int64_t ca;
    CHECK(!lmc_tmodel_step(&tm, &be, &au, iu, all, false, 1.0f, &sa, &ca, &err));
    CHECK(ca == 36);
    double mean = 0;
    for (int i = 0; i < 36; i++)
        if (tu[i] >= 0) mean += au.loss_host[i];
    mean /= (double)cu;
    CHECK_MSG(fabs(mean - su / (double)cu) <= 1e-6 * fabs(mean), "%s masked mean %.9f vs %.9f", model, mean,
              su / (double)cu);
    printf("%s: packed/unpacked loss %.2e, grads %.2e; masked mean over %lld of 36 targets\n", model, worst,
           num / den, (long long)cu);
    free(gu), free(gp);
    lmc_tacts_free(&au);
    lmc_tacts_free(&ap);
    lmc_sft_batcher_free(&bu);
    lmc_sft_batcher_free(&bp);
    lmc_sft_free(&d);
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmc_sft_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_data();
    test_pack("llama-tiny");
    test_pack("gpt2-tiny");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
    return test_finish("test_sft_data");
}
