/* test_train_mem.c — the memory account (train/train_mem.h) against the
 * bytes the backend really holds: the CPU backend's table with alloc/free
 * wrapped to count live and peak bytes, then for LoRA (AdamW, 8-bit AdamW,
 * --recompute), full fine-tuning and QLoRA NF4 on the tiny fixtures the
 * account's total (QLoRA: less its 4-bit codes, which live in host memory
 * outside the backend) equals the live bytes after lmc_trainer_init and
 * after a training step (nothing else is allocated through the backend),
 * recompute holds one layer's saves (with bf16 checkpoints of the
 * residual stream: the same loss, gradients within bf16 rounding),
 * --recompute attn every layer's MLP saves only (the no-recompute step bit
 * for bit, offloaded too; bf16: within bf16 rounding), and attaching the adapter never holds
 * the old and the new arenas at once (its peak stays within the load's);
 * the adapters' products in 7-row blocks and in one whole-batch block
 * (lmc_lora_train_set_scratch_rows) give the same step. */
#include "test.h"
#include "harness_batch.h"
#include "core/core.h"
#include "model/arch.h"
#include "model/block.h"
#include "train/lora_train.h"
#include "train/qlora.h"
#include "train/train_mem.h"
#include "train/trainer.h"

#include <stdlib.h>
#include <string.h>

/* ---- a counting backend: the CPU table with alloc / free wrapped ---- */
#define MAX_LIVE 4096
static struct {
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    void *p[MAX_LIVE];
    size_t n[MAX_LIVE];
    size_t live, peak;
    /* the forward's weight products (2 M N K each; the backward's matmul_bwd is not counted) and attention
     * launches of the last step (last_*) */
    void (*matmul)(void *, float *, const float *, int64_t, const struct lmc_mat *, const float *);
    void (*matmul_add)(void *, float *, const float *, int64_t, const struct lmc_mat *, const float *);
    void (*matmul_multi)(void *, int, float *const *, const float *, int64_t, const struct lmc_mat *const *,
                         const float *const *);
    void (*matmul_swiglu)(void *, float *, const float *, int64_t, const struct lmc_mat *, const struct lmc_mat *);
    void (*attention_train)(void *, float *, float *, const float *, const float *, const float *, int64_t, int64_t,
                            int64_t, int64_t, int64_t, float, int64_t);
    double flops;
    int64_t attn;
} cnt;
static double last_flops;
static int64_t last_attn;

static double mm_flops(int64_t M, const struct lmc_mat *w) {
    return 2.0 * (double)M * (double)w->rows * (double)w->cols;
}
static void cnt_matmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w, const float *b) {
    cnt.flops += mm_flops(M, w);
    cnt.matmul(ctx, y, x, M, w, b);
}
static void cnt_matmul_add(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w, const float *b) {
    cnt.flops += mm_flops(M, w);
    cnt.matmul_add(ctx, y, x, M, w, b);
}
static void cnt_matmul_multi(void *ctx, int n, float *const *y, const float *x, int64_t M,
                             const struct lmc_mat *const *w, const float *const *b) {
    for (int i = 0; i < n; i++) cnt.flops += mm_flops(M, w[i]);
    cnt.matmul_multi(ctx, n, y, x, M, w, b);
}
static void cnt_matmul_swiglu(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *g,
                              const struct lmc_mat *u) {
    cnt.flops += mm_flops(M, g) + mm_flops(M, u);
    cnt.matmul_swiglu(ctx, y, x, M, g, u);
}
static void cnt_attention_train(void *ctx, float *out, float *lse, const float *q, const float *k, const float *v,
                                int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hd, float scale, int64_t win) {
    cnt.attn++;
    cnt.attention_train(ctx, out, lse, q, k, v, B, T, H, KV, hd, scale, win);
}

static void *cnt_alloc(void *ctx, size_t bytes) {
    void *p = cnt.alloc(ctx, bytes);
    if (!p) return NULL;
    for (int i = 0; i < MAX_LIVE; i++)
        if (!cnt.p[i]) {
            cnt.p[i] = p, cnt.n[i] = bytes;
            cnt.live += bytes;
            if (cnt.live > cnt.peak) cnt.peak = cnt.live;
            return p;
        }
    CHECK_MSG(0, "more than %d live allocations", MAX_LIVE);
    return p;
}

static void cnt_free(void *ctx, void *p) {
    for (int i = 0; p && i < MAX_LIVE; i++)
        if (cnt.p[i] == p) {
            cnt.live -= cnt.n[i];
            cnt.p[i] = NULL;
            break;
        }
    cnt.free(ctx, p);
}

enum mode { M_LORA, M_FULL, M_QLORA };

/* recomputation: none, full, selective, attention (the mixer half: lmc_tacts_opts.mixer); RC_B16 added:
 * bf16-saved activations; RC_OFF: offloaded checkpoints */
enum rc { RC_NONE = 0, RC_FULL = 1, RC_SEL = 2, RC_ATT = 3, RC_B16 = 4, RC_OFF = 8 };

static void run(const char *model, enum mode mode, enum lmc_optim_kind ok, int rcb, int64_t rows,
                double *loss_out, float **grads_out, int64_t *n_grads) {
    int rc = rcb & 3;
    bool recompute = rc == RC_FULL, b16 = (rcb & RC_B16) != 0, off = (rcb & RC_OFF) != 0;
    char dir[256], ldir[300], what[400];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", model);
    snprintf(ldir, sizeof ldir, "%s/lora_train", dir);
    snprintf(what, sizeof what, "%s %s %s%s%s%s", model, mode == M_FULL ? "full" : mode == M_QLORA ? "qlora-nf4" : "lora",
             lmc_optim_kind_name(ok), rc == RC_FULL ? " recompute" : rc == RC_SEL ? " selective" : rc == RC_ATT ? " attn" : "",
             b16 ? " bf16-saved" : "", off ? " offloaded" : "");
    lmc_err err = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    memset(&cnt, 0, sizeof cnt);
    cnt.alloc = be.alloc, cnt.free = be.free;
    be.alloc = cnt_alloc, be.free = cnt_free;
#define WRAP(op) \
    if (be.op) cnt.op = be.op, be.op = cnt_##op
    WRAP(matmul);
    WRAP(matmul_add);
    WRAP(matmul_multi);
    WRAP(matmul_swiglu);
    WRAP(attention_train);
#undef WRAP
    CHECK_MSG(!be.attention_train_segs, "the CPU table has attention_train_segs: count it too");
    struct lmc_tmodel tm;
    struct lmc_qlora ql;
    memset(&ql, 0, sizeof ql);
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    lmc_status s = mode == M_QLORA ? lmc_qlora_load(&tm, &ql, dir, LMC_QLORA_NF4, &be, &err)
                                   : lmc_tmodel_load(&tm, dir, &be, &err);
    if (s) {
        CHECK_MSG(0, "%s: %s", what, err.msg);
        return;
    }
    size_t loaded = cnt.live;
    if (mode != M_FULL) {
        cnt.peak = cnt.live;
        if (lmc_lora_load(&lo, ldir, &tm.cfg, &err) || lmc_lora_train_attach(&lt, &tm, &lo, &err)) {
            CHECK_MSG(0, "%s: %s", what, err.msg);
            return;
        }
        /* the old arenas went before the new ones came: the peak is the load's or the result's */
        CHECK_MSG(cnt.peak <= (loaded > cnt.live ? loaded : cnt.live), "%s: attach peak %zu, load %zu, after %zu",
                  what, cnt.peak, loaded, cnt.live);
        if (rows) {
            CHECK(lmc_lora_train_set_scratch_rows(&lt, 0, &err) == LMC_ERR_ARG);
            CHECK_MSG(!lmc_lora_train_set_scratch_rows(&lt, rows, &err), "%s: %s", what, err.msg);
            CHECK(lt.wad[0].scratch_rows == rows && lt.wad[lt.n_ad - 1].scratch_rows == rows);
        }
    }
    const int64_t B = 2, T = 13;
    struct harness_batch bt = harness_batch_make(B * T);
    uint64_t rs = 7;
    for (int64_t i = 0; i < B * T; i++) {
        bt.in[i] = (int32_t)(test_rng_next(&rs) % 200);
        bt.tg[i] = i % 5 == 2 ? -1 : (int32_t)(test_rng_next(&rs) % 200);
    }
    struct lmc_train_opts o = {.B = B, .T = T, .accum = 1, .decay = LMC_DECAY_ALL, .recompute = recompute,
                               .recompute_selective = rc == RC_SEL, .recompute_mixer = rc == RC_ATT, .save_bf16 = b16, .offload = off,
                               .next_batch = harness_batch_next, .batch_user = &bt};
    o.adamw = (struct lmc_adamw_cfg){1e-3, 0.9, 0.999, 1e-8, 0.0};
    o.sched = (struct lmc_schedule){.kind = LMC_SCHED_CONSTANT, .lr_max = 1e-3, .lr_min = 1e-3, .total = 10};
    lmc_optim_cfg_default(&o.optim, ok);
    struct lmc_trainer tr;
    if (lmc_trainer_init(&tr, &tm, &be, NULL, NULL, &o, &err)) {
        CHECK_MSG(0, "%s trainer: %s", what, err.msg);
        return;
    }
    struct lmc_train_mem m;
    lmc_train_mem_account(&tr, mode == M_FULL ? NULL : &lt, &ql, LMC_QLORA_NF4, &m);
    /* QLoRA on the CPU: the 4-bit codes are host memory, not the backend's */
    size_t backend_part = m.total - (mode == M_QLORA ? m.base_ext : 0);
    CHECK_MSG(backend_part == cnt.live, "%s: account %zu bytes, the backend holds %zu", what, backend_part, cnt.live);
    CHECK_MSG(m.weights_f32 && m.grads && m.optim && m.acts && m.acts_per_layer && m.acts_resid, "%s: parts", what);
    CHECK_MSG(m.acts_layers == (recompute ? 1 : tr.tm.cfg.num_layers), "%s: %lld layers' saves held", what,
              (long long)m.acts_layers);
    CHECK(m.acts_per_layer * (size_t)m.acts_layers + m.acts_resid + m.acts_rest == m.acts);
    CHECK_MSG(!strcmp(m.acts_mode, rc == RC_SEL ? "selective" : rc == RC_ATT ? "attn" : rc == RC_FULL ? "full" : "none"),
              "%s: mode %s", what,
              m.acts_mode);
    CHECK_MSG(m.acts_bf16 == b16, "%s: bf16 saves %d", what, (int)m.acts_bf16);
    if (recompute || rc == RC_ATT) { /* f32: every layer's input and the final one; bf16 checkpoints: two f32 buffers and L halves */
        const struct lmc_config *c = &tr.tm.cfg;
        const int64_t nc = B * T * c->hidden_size, L = c->num_layers;
        size_t one = (size_t)((nc + 15) / 16 * 16) * sizeof(float), half = (size_t)(((nc + 1) / 2 + 15) / 16 * 16) * sizeof(float);
        size_t f32 = (size_t)(L + 1) * one;
        /* offloaded: a 2-layer model's ring of 2 buffers, input 0 in host memory */
        CHECK_MSG(b16 && recompute ? m.acts_resid == 2 * one + (size_t)L * half : off ? m.acts_resid == 2 * one : m.acts_resid == f32,
                  "%s: residual stream %zu bytes (f32 %zu)", what, m.acts_resid, f32);
        CHECK_MSG(m.host_offload == (off ? (size_t)(c->num_layers - 1) * one : 0), "%s: host %zu bytes", what,
                  m.host_offload);
    }
    if (rc == RC_SEL && !b16) { /* a layer keeps its GEMM outputs: the full save less h1, h2 and the MLP's product */
        const struct lmc_config *c = &tr.tm.cfg;
        int64_t n = B * T, nc = (n * c->hidden_size + 15) / 16 * 16, ni = (n * c->intermediate_size + 15) / 16 * 16;
        size_t full = (size_t)lmc_block_save_floats(tr.tm.arch, c, n, LMC_RUN_TRAIN) * sizeof(float);
        CHECK_MSG(m.acts_per_layer == full - (size_t)(2 * nc + ni) * sizeof(float), "%s: %zu bytes per layer (full %zu)",
                  what, m.acts_per_layer, full);
    }
    if (rc == RC_ATT) { /* a layer keeps the MLP's region less its product (gate, up; GPT-2: up), bf16: half of it */
        const struct lmc_config *c = &tr.tm.cfg;
        int64_t n = B * T, nc = (n * c->hidden_size + 15) / 16 * 16;
        int64_t mix = (tr.tm.arch->mixer->save_floats(c, n, LMC_RUN_TRAIN) + 15) / 16 * 16;
        size_t kept = (size_t)(lmc_block_save_floats_sel(tr.tm.arch, c, n, n) - nc - mix) * sizeof(float);
        CHECK_MSG(b16 ? m.acts_per_layer >= kept / 2 && m.acts_per_layer <= kept / 2 + 64 : m.acts_per_layer == kept,
                  "%s: %zu bytes per layer (the MLP's f32 region less the product: %zu)", what, m.acts_per_layer, kept);
    }
    if (b16 && !recompute && rc != RC_ATT) { /* xmid and the log-sum-exp f32, the rest halved: between 1/2 and 2/3 of the f32 layer */
        const struct lmc_config *c = &tr.tm.cfg;
        int64_t n = B * T, nc = (n * c->hidden_size + 15) / 16 * 16, ni = (n * c->intermediate_size + 15) / 16 * 16;
        size_t full = (size_t)lmc_block_save_floats(tr.tm.arch, c, n, LMC_RUN_TRAIN) * sizeof(float);
        if (rc == RC_SEL) full -= (size_t)(2 * nc + ni) * sizeof(float);
        CHECK_MSG(m.acts_per_layer > full / 2 && m.acts_per_layer < full * 2 / 3, "%s: %zu bytes per layer (f32 %zu)",
                  what, m.acts_per_layer, full);
    }
    if (mode == M_FULL) {
        CHECK_MSG(m.frozen_f32 == 0 && m.grads == m.weights_f32 && !m.lora, "%s: full: every weight trained", what);
    } else {
        /* a frozen base: gradients (and AdamW's moments) only for the adapter */
        CHECK_MSG(m.grads == m.trainable && m.lora > 0 && m.frozen_f32 > 0, "%s: adapter-only gradients", what);
        if (ok == LMC_OPTIM_ADAMW) CHECK_MSG(m.optim == 2 * m.trainable, "%s: AdamW m, v of the adapter", what);
    }
    if (mode == M_QLORA) CHECK_MSG(m.base_ext == ql.quant_bytes && !strcmp(m.base_ext_form, "NF4"), "%s", what);
    struct lmc_train_stats st;
    cnt.flops = 0, cnt.attn = 0;
    CHECK_MSG(!lmc_trainer_step(&tr, &st, &err), "%s step: %s", what, err.msg);
    last_flops = cnt.flops, last_attn = cnt.attn;
    CHECK_MSG(backend_part == cnt.live, "%s: after a step the backend holds %zu (account %zu)", what, cnt.live,
              backend_part);
    char line[1024], js[2048];
    lmc_train_mem_line(&m, line, sizeof line);
    lmc_train_mem_json(&m, 0, js, sizeof js);
    CHECK(strstr(line, "memory (MiB): weights f32") && js[0] == '{' && js[strlen(js) - 1] == '}');
    if (loss_out) {
        *loss_out = st.loss;
        *n_grads = tr.tm.numel - tr.tm.g_off;
        *grads_out = malloc(sizeof(float) * (size_t)*n_grads);
        be.download(be.ctx, *grads_out, tr.tm.g, sizeof(float) * (size_t)*n_grads);
    }
    printf("%s: %zu bytes accounted = %zu live; %s\n", what, backend_part, cnt.live, line);
    lmc_trainer_free(&tr);
    if (mode != M_FULL) {
        lmc_lora_train_free(&lt);
        lmc_lora_free(&lo);
    }
    lmc_qlora_free(&ql);
    CHECK_MSG(cnt.live == 0, "%s: %zu bytes left after freeing", what, cnt.live);
    lmc_backend_cpu_free(&be);
    harness_batch_free(&bt);
}

/* The adapters' products in blocks of 7 rows (odd, several per batch) and
 * in one block of the whole batch (lmc_lora_train_set_scratch_rows, as a
 * GPU runs them) give the same loss and gradients, up to the order of
 * dA/dB's sums over blocks; the account follows the scratch's new size. */
static void scratch_rows(const char *model) {
    double l7, lw;
    float *g7 = NULL, *gw = NULL;
    int64_t n7 = 0, nw = 0;
    run(model, M_LORA, LMC_OPTIM_ADAMW, RC_NONE, 7, &l7, &g7, &n7);
    run(model, M_LORA, LMC_OPTIM_ADAMW, RC_NONE, 2 * 13, &lw, &gw, &nw);
    if (!g7 || !gw || n7 != nw) {
        CHECK_MSG(0, "%s: scratch rows runs", model);
    } else {
        double num = 0, den = 0;
        for (int64_t i = 0; i < n7; i++) {
            num = fmax(num, fabs((double)g7[i] - gw[i]));
            den = fmax(den, fabs((double)gw[i]));
        }
        CHECK_MSG(fabs(l7 - lw) <= 1e-6 * fabs(lw), "%s: loss %.9g (7-row blocks) vs %.9g (whole)", model, l7, lw);
        CHECK_MSG(num <= 1e-5 * den && den > 0, "%s: gradients %.3e relative (7-row blocks vs whole)", model, num / den);
        printf("%s: adapter products in 7-row blocks vs the whole batch: loss %.2e, gradients %.2e\n", model,
               fabs(l7 - lw) / fabs(lw), num / den);
    }
    free(g7), free(gw);
}

/* Two runs of one model that must give the same loss and gradients bit for
 * bit: recompute modes ra (the reference) and rb; what names rb, against
 * names ra in the printed line. */
static void same_bits(const char *model, enum mode mode, int ra, int rb, const char *what, const char *against) {
    double la = 0, lb = 0;
    float *ga = NULL, *gb = NULL;
    int64_t na = 0, nb = 0;
    run(model, mode, LMC_OPTIM_ADAMW, ra, 0, &la, &ga, &na);
    run(model, mode, LMC_OPTIM_ADAMW, rb, 0, &lb, &gb, &nb);
    if (!ga || !gb || na != nb || na <= 0) {
        CHECK_MSG(0, "%s: %s runs", model, what);
    } else {
        int64_t diff = 0, nonzero = 0;
        for (int64_t i = 0; i < na; i++) {
            diff += memcmp(&ga[i], &gb[i], sizeof(float)) != 0;
            nonzero += ga[i] != 0.0f;
        }
        CHECK_MSG(memcmp(&la, &lb, sizeof la) == 0, "%s: loss %.17g (%s) vs %.17g", model, lb, what, la);
        CHECK_MSG(diff == 0 && nonzero > na / 4, "%s: %lld of %lld gradients differ (%lld non-zero)", model,
                  (long long)diff, (long long)na, (long long)nonzero);
        printf("%s %s: %s = %s bit for bit (loss %.9g, %lld gradients)\n", model,
               mode == M_FULL ? "full" : mode == M_QLORA ? "qlora" : "lora", what, against, lb, (long long)na);
    }
    free(ga), free(gb);
}

/* --recompute selective: the same loss and gradients, bit for bit, as
 * keeping every layer's saves (the norms and the MLP's product recomputed
 * by the same ops from the same inputs), and fewer bytes held. */
static void selective(const char *model, enum mode mode) {
    same_bits(model, mode, RC_NONE, RC_SEL, "selective recompute", "no recompute");
}

/* --recompute attn (the mixer half recomputed, the MLP's saves kept): the
 * same loss and gradients, bit for bit, as keeping every layer's saves
 * (norm1, attention, its residual, norm2 and the MLP's product recomputed
 * by the same ops from the same inputs); with the layer inputs offloaded
 * the same again. */
static void attn(const char *model, enum mode mode) {
    same_bits(model, mode, RC_NONE, RC_ATT, "attention recompute", "no recompute");
    same_bits(model, mode, RC_ATT, RC_ATT | RC_OFF, "attention recompute, offloaded checkpoints", "attention recompute");
}

/* What the recomputation modes run again, counted on the backend: full
 * recomputation re-runs every layer's forward but the last (whose saves
 * are still the forward's), attention recomputation only the mixer's
 * products (q, k, v, o and their adapters) of those layers, and both the
 * attention kernel once more per layer but the last. */
static void recompute_ops(const char *model, enum mode mode) {
    run(model, mode, LMC_OPTIM_ADAMW, RC_NONE, 0, NULL, NULL, NULL);
    double f0 = last_flops;
    int64_t a0 = last_attn;
    run(model, mode, LMC_OPTIM_ADAMW, RC_FULL, 0, NULL, NULL, NULL);
    double ff = last_flops;
    int64_t af = last_attn;
    run(model, mode, LMC_OPTIM_ADAMW, RC_ATT, 0, NULL, NULL, NULL);
    double fa = last_flops;
    int64_t aa = last_attn;
    struct lmc_config c;
    char dir[256];
    lmc_err err = {0};
    snprintf(dir, sizeof dir, "tests/fixtures/%s", model);
    if (lmc_config_load(&c, dir, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int64_t L = c.num_layers, M = 2 * 13, C = c.hidden_size, I = c.intermediate_size;
    const int64_t qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
    double mix = 2.0 * (double)M * (double)(C * qd + 2 * C * kvd + qd * C), mlp = 2.0 * (double)M * 3.0 * (double)(C * I);
    CHECK_MSG(a0 == L && af == 2 * L - 1 && aa == 2 * L - 1, "%s: attention launches %lld / %lld / %lld", model,
              (long long)a0, (long long)af, (long long)aa);
    /* the extra FLOPs: the base products exactly, plus the adapters' (rank r: a few percent) */
    double ef = ff - f0, ea = fa - f0;
    CHECK_MSG(ef >= (double)(L - 1) * (mix + mlp) && ef < 1.2 * (double)(L - 1) * (mix + mlp), "%s: full re-runs %.0f", model, ef);
    CHECK_MSG(ea >= (double)(L - 1) * mix && ea < 1.2 * (double)(L - 1) * mix, "%s: attn re-runs %.0f", model, ea);
    printf("%s recompute ops: forward products %.0f (none), +%.0f full (+%.1f%%), +%.0f attn (+%.1f%%); attention "
           "launches %lld / %lld / %lld\n", model, f0, ef, 100.0 * ef / f0, ea, 100.0 * ea / f0, (long long)a0,
           (long long)af, (long long)aa);
}

/* offloaded checkpoints (--recompute with the layer inputs in host
 * memory): the same loss and gradients, bit for bit, as --recompute; the
 * ring holds fewer device bytes (the account checks in run). */
static void offloaded(const char *model, enum mode mode) {
    same_bits(model, mode, RC_FULL, RC_FULL | RC_OFF, "offloaded checkpoints", "recompute");
}

/* bf16-saved activations: the forward is untouched (the same loss, bit for
 * bit); the backward reads its saves rounded to bf16, so the gradients
 * move by bf16 rounding (the CPU in fp32: every product sees it). With
 * full recomputation (rc RC_FULL): the residual stream's checkpoints in
 * bf16, each layer recomputed from its rounded input. */
static void bf16_saved(const char *model, enum mode mode, int rc) {
    double l0 = 0, lb = 0;
    float *g0 = NULL, *gb = NULL;
    int64_t n0 = 0, nb = 0;
    run(model, mode, LMC_OPTIM_ADAMW, rc, 0, &l0, &g0, &n0);
    run(model, mode, LMC_OPTIM_ADAMW, rc | RC_B16, 0, &lb, &gb, &nb);
    if (!g0 || !gb || n0 != nb || n0 <= 0) {
        CHECK_MSG(0, "%s: bf16-saved runs", model);
    } else {
        double num = 0, den = 0, dot = 0, n2a = 0, n2b = 0;
        int64_t diff = 0;
        for (int64_t i = 0; i < n0; i++) {
            num = fmax(num, fabs((double)g0[i] - gb[i]));
            den = fmax(den, fabs((double)g0[i]));
            dot += (double)g0[i] * gb[i], n2a += (double)g0[i] * g0[i], n2b += (double)gb[i] * gb[i];
            diff += g0[i] != gb[i];
        }
        double cosd = 1.0 - dot / sqrt(n2a * n2b);
        CHECK_MSG(memcmp(&l0, &lb, sizeof l0) == 0, "%s: loss %.17g (bf16 saves) vs %.17g", model, lb, l0);
        CHECK_MSG(num <= 2e-2 * den && cosd <= 1e-4 && den > 0, "%s: gradients %.3e max relative, 1 - cos %.3e", model,
                  num / den, cosd);
        CHECK_MSG(diff > 0, "%s: bf16 saves changed no gradient (are they used?)", model);
        printf("%s %s%s: bf16-saved vs f32-saved: loss equal, gradients %.2e max relative, 1 - cos %.2e\n", model,
               mode == M_FULL ? "full" : mode == M_QLORA ? "qlora" : "lora",
               rc == RC_SEL ? " selective" : rc == RC_ATT ? " attention recompute"
               : rc == RC_FULL ? " recompute (bf16 checkpoints)" : "", num / den,
               cosd);
    }
    free(g0), free(gb);
}

int main(void) {
    run("llama-tiny", M_LORA, LMC_OPTIM_ADAMW, RC_NONE, 0, NULL, NULL, NULL);
    run("llama-tiny", M_LORA, LMC_OPTIM_ADAMW, RC_FULL, 0, NULL, NULL, NULL);
    run("qwen2-tiny", M_LORA, LMC_OPTIM_ADAMW8BIT, RC_NONE, 0, NULL, NULL, NULL);
    run("gpt2-tiny", M_LORA, LMC_OPTIM_ADAMW, RC_FULL, 0, NULL, NULL, NULL);
    run("llama-tiny", M_FULL, LMC_OPTIM_ADAMW, RC_NONE, 0, NULL, NULL, NULL);
    run("llama-tiny", M_QLORA, LMC_OPTIM_ADAMW, RC_NONE, 0, NULL, NULL, NULL);
    selective("llama-tiny", M_LORA);
    selective("qwen2-tiny", M_LORA);
    selective("gpt2-tiny", M_LORA);
    selective("llama-tiny", M_FULL);
    selective("llama-tiny", M_QLORA);
    bf16_saved("llama-tiny", M_LORA, RC_NONE);
    bf16_saved("llama-tiny", M_LORA, RC_SEL);
    bf16_saved("qwen2-tiny", M_LORA, RC_SEL);
    bf16_saved("gpt2-tiny", M_LORA, RC_NONE);
    bf16_saved("llama-tiny", M_FULL, RC_NONE);
    bf16_saved("llama-tiny", M_QLORA, RC_SEL);
    bf16_saved("llama-tiny", M_LORA, RC_FULL);
    bf16_saved("gpt2-tiny", M_LORA, RC_FULL);
    bf16_saved("qwen2-tiny", M_LORA, RC_FULL);
    bf16_saved("llama-tiny", M_QLORA, RC_FULL);
    bf16_saved("llama-tiny", M_FULL, RC_FULL);
    attn("llama-tiny", M_LORA);
    recompute_ops("llama-tiny", M_LORA);
    attn("qwen2-tiny", M_LORA);
    attn("gpt2-tiny", M_LORA);
    attn("llama-tiny", M_FULL);
    attn("llama-tiny", M_QLORA);
    bf16_saved("llama-tiny", M_LORA, RC_ATT);
    bf16_saved("gpt2-tiny", M_LORA, RC_ATT);
    bf16_saved("llama-tiny", M_QLORA, RC_ATT);
    same_bits("llama-tiny", M_LORA, RC_ATT | RC_B16, RC_ATT | RC_B16 | RC_OFF,
              "attention recompute bf16, offloaded checkpoints", "attention recompute bf16");
    offloaded("llama-tiny", M_LORA);
    offloaded("qwen2-tiny", M_LORA);
    offloaded("gpt2-tiny", M_LORA);
    offloaded("llama-tiny", M_QLORA);
    offloaded("llama-tiny", M_FULL);
    scratch_rows("llama-tiny");
    scratch_rows("gpt2-tiny");
    return test_finish("test_train_mem");
}
