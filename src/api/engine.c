/* engine.c — the public inference API of include/lmc.h over the internal
 * layers: model + tokenizer + backend + one generation session. */
#include "lmc.h"
#include "core/core.h"
#include "infer/session.h"
#include "io/gguf.h"
#include "model/model.h"
#include "ops/backend.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

struct lmc_engine {
    struct lmc_backend be;
    struct lmc_model model;
    struct lmc_tokenizer *tok;
    struct lmc_session session;
    bool have_be, have_model, have_session;
};

void lmc_free(void *p) { free(p); }

void lmc_engine_close(lmc_engine *e) {
    if (!e) return;
    if (e->have_session) lmc_session_free(&e->session);
    if (e->have_model) lmc_model_free(&e->model);
    if (e->have_be) lmc_backend_cpu_free(&e->be);
    if (e->tok) lmc_tokenizer_free(e->tok);
    free(e);
}

static lmc_status parse_dtype(const char *s, enum lmc_wdtype *out, lmc_err *err) {
    if (!s || !strcmp(s, "auto")) *out = LMC_WDTYPE_AUTO;
    else if (!strcmp(s, "fp32") || !strcmp(s, "f32")) *out = LMC_WDTYPE_F32;
    else if (!strcmp(s, "bf16")) *out = LMC_WDTYPE_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "fp16")) *out = LMC_WDTYPE_F16;
    else return lmc_err_set(err, LMC_ERR_ARG, "dtype '%s': expected auto, fp32, bf16 or f16", s);
    return LMC_OK;
}

lmc_status lmc_engine_open(lmc_engine **out, const char *dir, const lmc_engine_opts *opts,
                           lmc_err *err) {
    *out = NULL;
    lmc_engine_opts o = {0};
    if (opts) o = *opts;
    if (!dir) return lmc_err_set(err, LMC_ERR_ARG, "no model folder given");
    if (o.device && strcmp(o.device, "cpu") != 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "device '%s': this build has only the cpu device",
                           o.device);
    if (o.threads < 0 || o.ctx < 0)
        return lmc_err_set(err, LMC_ERR_ARG, "threads and ctx must be >= 0");
    struct lmc_model_opts mo = {0};
    lmc_status s = parse_dtype(o.dtype, &mo.wdtype, err);
    if (s) return s;
    lmc_engine *e = calloc(1, sizeof *e);
    if (!e) return lmc_err_set(err, LMC_ERR_OOM, "engine: out of memory");
    s = lmc_gguf_tokenizer_load(&e->tok, dir, err);
    if (!s && !(s = lmc_backend_cpu_init(&e->be, o.threads, err))) e->have_be = true;
    mo.be = &e->be;
    if (!s && !(s = lmc_model_load(&e->model, dir, &mo, err))) e->have_model = true;
    if (!s) {
        int64_t ctx = o.ctx;
        if (ctx == 0) {
            ctx = e->model.cfg.max_position_embeddings;
            if (ctx <= 0 || ctx > 4096) ctx = 4096;
        }
        s = lmc_session_init(&e->session, &e->model, &e->be, e->tok, ctx, 512, err);
        if (!s) e->have_session = true;
    }
    if (s) {
        lmc_engine_close(e);
        return s;
    }
    *out = e;
    return LMC_OK;
}

int64_t lmc_engine_ctx(const lmc_engine *e) { return e->session.kv.ctx; }
int64_t lmc_engine_vocab(const lmc_engine *e) { return e->model.cfg.vocab_size; }

lmc_status lmc_engine_tokenize(lmc_engine *e, const char *text, size_t len, int add_special,
                               int32_t **ids, int64_t *n, lmc_err *err) {
    return lmc_tokenizer_encode(e->tok, text, len, add_special != 0, ids, n, err);
}

lmc_status lmc_engine_detokenize(lmc_engine *e, const int32_t *ids, int64_t n, char **text,
                                 size_t *len, lmc_err *err) {
    return lmc_tokenizer_decode(e->tok, ids, n, text, len, err);
}

void lmc_generate_params_default(lmc_generate_params *p) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 128;
    p->top_p = 1.0;
    p->repeat_penalty = 1.0;
    p->seed = 0x5eed;
}

struct emit_ctx {
    lmc_text_fn fn;
    void *user;
};

static bool emit_bridge(void *user, const char *text, size_t len) {
    struct emit_ctx *c = user;
    return c->fn(c->user, text, len) != 0;
}

lmc_status lmc_engine_generate(lmc_engine *e, const int32_t *prompt, int64_t n_prompt,
                               const lmc_generate_params *p, lmc_text_fn on_text, void *user,
                               lmc_generation *out, lmc_err *err) {
    memset(out, 0, sizeof *out);
    lmc_generate_params d;
    if (!p) {
        lmc_generate_params_default(&d);
        p = &d;
    }
    if (n_prompt < 0 || (n_prompt > 0 && !prompt))
        return lmc_err_set(err, LMC_ERR_ARG, "prompt: %lld ids", (long long)n_prompt);
    if (p->n_stop < 0 || (p->n_stop > 0 && !p->stop))
        return lmc_err_set(err, LMC_ERR_ARG, "stop: %d strings", p->n_stop);
    struct lmc_gen_opts g = {0};
    lmc_sampler_defaults(&g.sampling);
    g.max_new = LMC_MIN(p->max_tokens, e->session.kv.ctx - n_prompt);
    if (g.max_new < 0) g.max_new = 0;
    g.sampling.temperature = p->temperature;
    g.sampling.top_k = p->top_k;
    g.sampling.top_p = p->top_p;
    g.sampling.min_p = p->min_p;
    g.sampling.repeat_penalty = p->repeat_penalty;
    g.sampling.seed = p->seed;
    g.stop = p->stop;
    g.n_stop = p->n_stop;
    g.ignore_eos = p->ignore_eos != 0;
    struct emit_ctx ec = {on_text, user};
    struct lmc_gen_result r;
    lmc_status s = lmc_session_generate(&e->session, prompt, n_prompt, &g,
                                        on_text ? emit_bridge : NULL, &ec, &r, err);
    if (s) return s;
    out->ids = r.ids;
    out->n_ids = r.n_ids;
    out->text = r.text;
    out->text_len = r.text_len;
    out->stopped = strcmp(r.finish_reason, "stop") == 0;
    out->prefill_s = r.prefill_s;
    out->decode_s = r.decode_s;
    return LMC_OK;
}
