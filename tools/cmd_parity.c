/* cmd_parity.c — `lmc parity DIR`: checks a model folder against reference
 * outputs laid out as in shared/fixtures (ref.json, ref_logits.safetensors):
 * tokenizer probes (ids and decode, exact), prompt encodings, per-prompt
 * logits (relative error), and greedy continuations. Prints each check with
 * its measured error; exits non-zero on any failure. */
#include "cli.h"
#include "io/gguf.h"
#include "core/core.h"
#include "infer/sampler.h"
#include "model/backward.h"
#include "train/adamw.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct report {
    bool json;
    int passed, failed, noted;
    bool first;
};

static void check(struct report *r, bool assert_it, bool ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void check(struct report *r, bool assert_it, bool ok, const char *name, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    const char *verdict = !assert_it ? "NOTE" : ok ? "PASS" : "FAIL";
    if (!assert_it) r->noted++;
    else if (ok) r->passed++;
    else r->failed++;
    if (r->json) {
        printf("%s{\"check\":", r->first ? "" : ",");
        cli_json_str(name, strlen(name));
        printf(",\"result\":\"%s\",\"detail\":", verdict);
        cli_json_str(detail, strlen(detail));
        printf("}");
        r->first = false;
    } else {
        printf("%s  %-34s %s\n", verdict, name, detail);
    }
}

/* Reads a JSON array of integers into a malloc'd array; NULL if not one. */
static int32_t *json_ids(const cJSON *a, int64_t *n) {
    if (!cJSON_IsArray(a)) return NULL;
    *n = cJSON_GetArraySize(a);
    int32_t *ids = malloc((size_t)(*n ? *n : 1) * sizeof *ids);
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e)) {
            free(ids);
            return NULL;
        }
        ids[i++] = (int32_t)e->valuedouble;
    }
    return ids;
}

static bool ids_equal(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void check_tokenizer(struct report *r, const struct lmc_tokenizer *tok, const cJSON *ref) {
    const cJSON *probes = cJSON_GetObjectItemCaseSensitive(ref, "tokenizer_probes"), *p;
    int i = 0;
    cJSON_ArrayForEach(p, probes) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(p, "decoded");
        int64_t nref = 0, n = 0;
        int32_t *want = json_ids(cJSON_GetObjectItemCaseSensitive(p, "ids"), &nref), *got = NULL;
        char name[64];
        snprintf(name, sizeof name, "tokenizer probe %d encode", i);
        lmc_err err = {0};
        if (!cJSON_IsString(text) || !want) {
            check(r, true, false, name, "ref.json: probe %d lacks text/ids", i);
        } else if (lmc_tokenizer_encode(tok, text->valuestring, strlen(text->valuestring), false, &got, &n, &err)) {
            check(r, true, false, name, "%s", err.msg);
        } else {
            int64_t first = 0;
            while (first < n && first < nref && got[first] == want[first]) first++;
            check(r, true, ids_equal(got, n, want, nref), name,
                  "%lld ids (ref %lld), first difference at %lld", (long long)n, (long long)nref,
                  ids_equal(got, n, want, nref) ? -1LL : (long long)first);
        }
        free(got);
        snprintf(name, sizeof name, "tokenizer probe %d decode", i);
        char *out = NULL;
        size_t len = 0;
        if (want && cJSON_IsString(dec)) {
            if (lmc_tokenizer_decode(tok, want, nref, &out, &len, &err))
                check(r, true, false, name, "%s", err.msg);
            else
                check(r, true, len == strlen(dec->valuestring) && !memcmp(out, dec->valuestring, len),
                      name, "%zu bytes (ref %zu)", len, strlen(dec->valuestring));
        }
        free(out);
        free(want);
        i++;
    }
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= num)) num = d; /* NaN propagates */
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den > 0 ? den : 1);
}

static void check_prompts(struct report *r, struct cli_model *cm, const cJSON *ref,
                          const struct lmc_st *ref_logits, bool bf16, bool greedy_refs) {
    const struct lmc_model *m = &cm->model;
    int64_t V = m->cfg.vocab_size;
    double tol = bf16 ? 2e-2 : 1e-4;
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(ref, "prompts"), *p;
    int i = 0;
    cJSON_ArrayForEach(p, prompts) {
        char name[64];
        lmc_err err = {0};
        int64_t n = 0, ng = 0, nenc = 0;
        int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(p, "ids"), &n);
        int32_t *greedy = json_ids(cJSON_GetObjectItemCaseSensitive(p, "greedy_new_ids"), &ng);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        int32_t *enc = NULL;
        if (!ids || n == 0 || !greedy || !cJSON_IsString(text)) {
            snprintf(name, sizeof name, "prompt %d", i);
            check(r, true, false, name, "ref.json: prompt %d lacks text/ids/greedy_new_ids", i);
            goto next;
        }
        snprintf(name, sizeof name, "prompt %d encode", i);
        if (lmc_tokenizer_encode(cm->tok, text->valuestring, strlen(text->valuestring), false, &enc, &nenc, &err))
            check(r, true, false, name, "%s", err.msg);
        else
            check(r, true, ids_equal(enc, nenc, ids, n), name, "%lld ids (ref %lld)", (long long)nenc, (long long)n);
        /* logits of every position, from an empty cache */
        struct lmc_kv kv;
        struct lmc_acts acts;
        int64_t ctx = n + ng;
        float *logits = malloc((size_t)n * (size_t)V * sizeof(float));
        snprintf(name, sizeof name, "prompt %d logits", i);
        if (!logits || lmc_kv_init(&kv, m, &cm->be, ctx, &err)) {
            check(r, true, false, name, "%s", logits ? err.msg : "out of memory");
            free(logits);
            goto next;
        }
        if (lmc_acts_init(&acts, m, &cm->be, ctx, n, &err) ||
            lmc_model_forward(m, &cm->be, &acts, &kv, ids, n, 0, logits, true, &err)) {
            check(r, true, false, name, "%s", err.msg);
        } else {
            char tname[32];
            snprintf(tname, sizeof tname, "prompt%d", i);
            const struct lmc_st_tensor *t = lmc_st_find(ref_logits, tname);
            if (!t || t->dtype != LMC_DTYPE_F32 || t->numel != n * V) {
                check(r, true, false, name, "ref_logits.safetensors: '%s' missing or not F32 (%lld, %lld)",
                      tname, (long long)n, (long long)V);
            } else {
                double e = rel_err(logits, t->data, n * V);
                check(r, true, e <= tol, name, "max rel err %.3e (tol %.0e) over %lld x %lld", e, tol,
                      (long long)n, (long long)V);
            }
            /* greedy continuation, no EOS stop, through the decode path */
            int32_t *got = malloc((size_t)ng * sizeof *got);
            float *last = logits + (n - 1) * V;
            int64_t k = 0;
            for (; got && k < ng; k++) {
                got[k] = lmc_argmax(last, V);
                if (k + 1 < ng &&
                    lmc_model_forward(m, &cm->be, &acts, &kv, &got[k], 1, n + k, last, false, &err))
                    break;
            }
            int64_t agree = 0;
            while (agree < k && got[agree] == greedy[agree]) agree++;
            snprintf(name, sizeof name, "prompt %d greedy", i);
            if (greedy_refs) /* ref.json's ids are the base model's: not with --lora */
                check(r, !bf16, agree == ng, name, "%lld of %lld ids agree before the first difference",
                  (long long)agree, (long long)ng);
            free(got);
            lmc_acts_free(&acts);
        }
        lmc_kv_free(&kv);
        free(logits);
    next:
        free(enc);
        free(ids);
        free(greedy);
        i++;
    }
}

/* ---- `--train`: loss, every gradient, one AdamW step and 9 more losses ----
 * Checks the training path against ref.json's `train` section,
 * ref_grads.safetensors and ref_step.safetensors (see the fixtures README),
 * on the training backend (--device cpu|cuda, --dtype fp32|bf16 on cuda).
 * fp32 (the CPU, or the GPU's fp32 checking mode) tolerances: loss 1e-5,
 * gradients 1e-4, parameters after the step 1e-5, the further losses 1e-4
 * (relative). bf16 on the GPU: loss relative error 1e-2 and every
 * gradient's cosine similarity with the reference >= 0.99; the parameters
 * after the step and the further losses are reported, not asserted. */
#define BF16_LOSS_TOL 1e-2
#define BF16_GRAD_COS_MIN 0.99
#define BF16_GRAD_COS_MIN_DISCRETE 0.9 /* per tensor, models that route or clamp (see parity_train) */

static double json_num(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* cos(a, b) in double; 1 when both are zero, 0 when one is. NaN propagates. */
static double cosine(const float *a, const float *b, int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa == 0 && bb == 0) return 1;
    if (aa == 0 || bb == 0) return 0;
    return ab / (sqrt(aa) * sqrt(bb));
}

/* How check_tensors judges a tensor. */
struct tensor_crit {
    double tol;               /* max relative error (cos_min 0) */
    double cos_min;           /* > 0: cosine similarity >= cos_min instead */
    bool assert_it;           /* false: reported (NOTE), not asserted */
    const struct lmc_st *cond; /* step checks: elements with |ref grad| < cond_min not asserted */
    double cond_min;
    double cos_all_min;       /* > 0: also the cosine over every tensor at once >= cos_all_min */
};

/* Compares every parameter of arena (backend memory laid out like tm->w:
 * tm->w or tm->g, downloaded tensor by tensor) with the tensors of st. */
static void check_tensors(struct report *r, const struct lmc_tmodel *tm, const float *arena,
                          const struct lmc_st *st, const char *what, const struct tensor_crit *k) {
    double worst = 0, worst_cos = 1, ab = 0, aa = 0, bb = 0; /* ab, aa, bb: the whole cosine's sums */
    const char *worst_name = "";
    int found = 0;
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        const struct lmc_st_tensor *t = lmc_st_find(st, p->name);
        char name[200];
        snprintf(name, sizeof name, "%s %s", what, p->name);
        if (!t || t->dtype != LMC_DTYPE_F32 || t->numel != p->numel) {
            check(r, true, false, name, "reference tensor missing or not F32 with %lld elements",
                  (long long)p->numel);
            continue;
        }
        lmc_err err = {0};
        float *got = malloc((size_t)p->numel * sizeof(float));
        if (!got || lmc_tmodel_download_param(tm, arena, i, got, &err)) {
            check(r, true, false, name, "%s", got ? err.msg : "out of memory");
            free(got);
            continue;
        }
        found++;
        double e = rel_err(got, t->data, p->numel);
        double e_all = e;
        const struct lmc_st_tensor *gt = k->cond ? lmc_st_find(k->cond, p->name) : NULL;
        if (gt && gt->numel == p->numel && gt->dtype == LMC_DTYPE_F32) {
            /* AdamW's first step moves a weight by lr * g / (|g| + eps): where
             * |g| is near eps, an fp32 rounding of 1e-11 in g moves the update
             * by ~1e-3 lr. Such elements are reported, not asserted. */
            const float *rg = gt->data, *rw = t->data;
            double num = 0, den = 0;
            for (int64_t j = 0; j < p->numel; j++) {
                if (fabs((double)rw[j]) > den) den = fabs((double)rw[j]);
                if (fabs((double)rg[j]) < k->cond_min) continue;
                double d = fabs((double)got[j] - (double)rw[j]);
                if (!(d <= num)) num = d;
            }
            e = num / (den > 0 ? den : 1);
        }
        double cs = k->cos_min > 0 ? cosine(got, t->data, p->numel) : 1;
        for (int64_t j = 0; k->cos_all_min > 0 && j < p->numel; j++) {
            const float *rw = t->data;
            ab += (double)got[j] * rw[j], aa += (double)got[j] * got[j], bb += (double)rw[j] * rw[j];
        }
        free(got);
        bool ok = k->cos_min > 0 ? cs >= k->cos_min : e <= k->tol;
        if (k->cos_min > 0 ? !(cs >= worst_cos) : !(e <= worst)) worst_name = p->name;
        if (!(e <= worst)) worst = e;
        if (!(cs >= worst_cos)) worst_cos = cs;
        if (k->cos_min > 0)
            check(r, k->assert_it, ok, name, "cosine %.6f (1-cos %.1e, min %.2f); max rel err %.3e",
                  cs, 1 - cs, k->cos_min, e);
        else if (gt)
            check(r, k->assert_it, ok, name, "max rel err %.3e (tol %.0e) where |ref grad| >= %.0e; "
                  "%.3e over all elements", e, k->tol, k->cond_min, e_all);
        else
            check(r, k->assert_it, ok, name, "max rel err %.3e (tol %.0e)", e, k->tol);
    }
    char name[64];
    if (k->cos_all_min > 0) {
        double ca = aa == 0 && bb == 0 ? 1 : aa == 0 || bb == 0 ? 0 : ab / (sqrt(aa) * sqrt(bb));
        snprintf(name, sizeof name, "%s: cosine over every tensor at once", what);
        check(r, true, ca >= k->cos_all_min, name, "cosine %.6f (1-cos %.1e, min %.2f)", ca, 1 - ca, k->cos_all_min);
    }
    snprintf(name, sizeof name, "%s: all tensors", what);
    bool complete = found == st->n_tensors && found == tm->n_params;
    if (k->cos_min > 0)
        check(r, true, complete, name,
              "%d of %lld reference tensors compared; lowest cosine %.6f (1-cos %.1e, %s), "
              "worst rel err %.3e", found, (long long)st->n_tensors, worst_cos, 1 - worst_cos,
              worst_name, worst);
    else
        check(r, true, complete, name,
              "%d of %lld reference tensors compared; worst %.3e (%s)", found,
              (long long)st->n_tensors, worst, worst_name);
}

static int parity_train(struct report *r, const struct cli_common *c, const cJSON *ref,
                        struct lmc_backend *be, bool bf16) {
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(ref, "train");
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(tr, "adamw");
    const cJSON *later = cJSON_GetObjectItemCaseSensitive(tr, "losses_after_step1");
    int64_t B = (int64_t)json_num(tr, "B", 0), T = (int64_t)json_num(tr, "T", 0), ni = 0, nt = 0;
    int32_t *in = json_ids(cJSON_GetObjectItemCaseSensitive(tr, "inputs"), &ni);
    int32_t *tg = json_ids(cJSON_GetObjectItemCaseSensitive(tr, "targets"), &nt);
    /* inputs/targets may be nested (B lists of T): flatten */
    if (!in || !tg) {
        free(in);
        free(tg);
        in = malloc((size_t)(B * T > 0 ? B * T : 1) * sizeof *in);
        tg = malloc((size_t)(B * T > 0 ? B * T : 1) * sizeof *tg);
        ni = nt = 0;
        const cJSON *row, *e;
        cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(tr, "inputs"))
            cJSON_ArrayForEach(e, row) if (ni < B * T) in[ni++] = (int32_t)e->valuedouble;
        cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(tr, "targets"))
            cJSON_ArrayForEach(e, row) if (nt < B * T) tg[nt++] = (int32_t)e->valuedouble;
    }
    if (!cJSON_IsObject(tr) || !cJSON_IsObject(ad) || B <= 0 || T <= 0 || ni != B * T ||
        nt != B * T || !cJSON_IsArray(later)) {
        check(r, true, false, "train", "ref.json: no usable train section (B, T, inputs, targets, adamw)");
        free(in);
        free(tg);
        return 1;
    }
    lmc_err err = {0};
    struct lmc_tmodel tm;
    struct lmc_tacts acts;
    struct lmc_st grads = {0}, step = {0};
    char path[4096];
    float *mom = NULL;
    if (lmc_tmodel_load(&tm, c->model_dir, be, &err)) {
        free(in);
        free(tg);
        return cli_fail("parity", &err);
    }
    int rc = 0;
    if (lmc_tmodel_check_backend(be, &tm.cfg, true, true, &err)) {
        rc = cli_fail("parity", &err);
        goto out;
    }
    if (lmc_tacts_init(&acts, &tm, be, B, T, false, &err)) {
        rc = cli_fail("parity", &err);
        goto out;
    }
    if (!lmc_path_join(path, sizeof path, c->model_dir, "ref_grads.safetensors") ||
        lmc_st_open_file(&grads, path, &err) ||
        !lmc_path_join(path, sizeof path, c->model_dir, "ref_step.safetensors") ||
        lmc_st_open_file(&step, path, &err)) {
        rc = cli_fail("parity", &err);
        goto out_acts;
    }
    double loss_tol = bf16 ? BF16_LOSS_TOL : 1e-5, later_tol = bf16 ? BF16_LOSS_TOL : 1e-4;
    double want = json_num(tr, "loss", NAN), sum = 0;
    int64_t cnt = 0;
    float dscale = 1.0f / (float)(B * T);
    if (lmc_tmodel_step(&tm, be, &acts, in, tg, true, dscale, &sum, &cnt, &err)) {
        rc = cli_fail("parity", &err);
        goto out_st;
    }
    double loss = sum / (double)cnt, e = fabs(loss - want) / fabs(want);
    check(r, true, e <= loss_tol, "train loss", "%.9f (ref %.9f) rel err %.3e (tol %.0e)", loss,
          want, e, loss_tol);
    struct tensor_crit gk = {.tol = 1e-4, .cos_min = bf16 ? BF16_GRAD_COS_MIN : 0, .assert_it = true};
    if (bf16 && (tm.cfg.num_experts > 0 || tm.cfg.clip_qkv > 0)) {
        /* discrete decisions: a token whose best experts lie within bf16 rounding of each other (or
         * an OLMoE q/k/v element at the clamp's edge) goes the other way than in float64, moving
         * whole rows of some tensors' gradients; per tensor cos >= 0.9, the whole gradient's 0.99 */
        gk.cos_min = BF16_GRAD_COS_MIN_DISCRETE;
        gk.cos_all_min = BF16_GRAD_COS_MIN;
    }
    check_tensors(r, &tm, tm.g, &grads, "grad", &gk);
    struct lmc_adamw_cfg oc;
    lmc_adamw_cfg_default(&oc);
    oc.lr = json_num(ad, "lr", oc.lr);
    oc.beta1 = json_num(ad, "beta1", oc.beta1);
    oc.beta2 = json_num(ad, "beta2", oc.beta2);
    oc.eps = json_num(ad, "eps", oc.eps);
    oc.weight_decay = json_num(ad, "weight_decay", oc.weight_decay);
    size_t bytes = (size_t)tm.numel * sizeof(float);
    mom = be->alloc(be->ctx, 2 * bytes); /* m, v: backend memory like tm.w */
    if (!mom) {
        check(r, true, false, "train", "optimizer state (%zu bytes): out of memory", 2 * bytes);
        rc = 1;
        goto out_st;
    }
    be->zero(be->ctx, mom, 2 * bytes);
    int n_later = cJSON_GetArraySize(later);
    for (int k = 1; k <= n_later + 1; k++) {
        if (k > 1) { /* the loss of step k, before its update */
            lmc_tmodel_zero_grad(&tm);
            if (lmc_tmodel_step(&tm, be, &acts, in, tg, true, dscale, &sum, &cnt, &err)) {
                rc = cli_fail("parity", &err);
                break;
            }
            double lw = cJSON_GetArrayItem(later, k - 2)->valuedouble, lg = sum / (double)cnt;
            double le = fabs(lg - lw) / fabs(lw);
            char name[64];
            snprintf(name, sizeof name, "train loss step %d", k);
            check(r, !bf16, le <= later_tol, name, "%.9f (ref %.9f) rel err %.3e (tol %.0e)", lg,
                  lw, le, later_tol);
            if (k == n_later + 1) break;
        }
        /* the reference decays every tensor (one torch parameter group) */
        for (int i = 0; i < tm.n_params; i++) {
            const struct lmc_tparam *p = &tm.params[i];
            struct lmc_adamw_step as;
            lmc_adamw_step_make(&oc, k, oc.lr, true, 1.0f, &as);
            be->adamw(be->ctx, tm.w + p->off, tm.g + p->off, mom + p->off, mom + tm.numel + p->off,
                      p->numel, &as);
        }
        if (k == 1) {
            struct tensor_crit sk = {.tol = 1e-5, .assert_it = !bf16, .cond = &grads,
                                     .cond_min = 100 * oc.eps};
            check_tensors(r, &tm, tm.w, &step, "step1", &sk);
        }
    }
out_st:
    if (mom) be->free(be->ctx, mom);
    lmc_st_free(&grads);
    lmc_st_free(&step);
out_acts:
    lmc_tacts_free(&acts);
out:
    lmc_tmodel_free(&tm);
    free(in);
    free(tg);
    return rc;
}

int cmd_parity(int argc, char **argv) {
    struct cli_common c = {0};
    bool train = false;
    const char *ref_dir = NULL; /* --ref DIR: the references (ref.json, ref_logits) of another folder */
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--train")) train = true;
        else if (!strcmp(argv[i], "--ref") && i + 1 < argc) ref_dir = argv[++i];
        else if (argv[i][0] != '-' && !c.model_dir) c.model_dir = argv[i];
        else {
            fprintf(stderr, "lmc parity: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!c.model_dir) {
        fprintf(stderr, "usage: lmc parity DIR|FILE.gguf [--ref DIR] [--dtype fp32|bf16] [--json]\n"
                        "       lmc parity DIR --train [--device cpu|cuda] [--dtype fp32|bf16] [--json]\n");
        return 2;
    }
    bool bf16 = c.wdtype == LMC_WDTYPE_BF16 || c.wdtype == LMC_WDTYPE_F16;
    lmc_err err = {0};
    char path[4096];
    char *text = NULL;
    if (!ref_dir && lmc_gguf_is_file(c.model_dir)) {
        fprintf(stderr, "lmc parity: %s is a GGUF file, which holds no references: give --ref DIR (the folder "
                        "with ref.json and ref_logits.safetensors)\n", c.model_dir);
        return 2;
    }
    if (train && ref_dir) {
        fprintf(stderr, "lmc parity: --train reads the references beside the model folder (no --ref)\n");
        return 2;
    }
    if (!ref_dir) ref_dir = c.model_dir;
    if (!lmc_path_join(path, sizeof path, ref_dir, "ref.json") ||
        lmc_file_read(path, (size_t)1 << 28, &text, NULL, &err))
        return cli_fail("parity", &err);
    cJSON *ref = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(ref)) {
        cJSON_Delete(ref);
        fprintf(stderr, "lmc parity: %s: not a JSON object\n", path);
        return 1;
    }
    if (train && c.n_lora) {
        cJSON_Delete(ref);
        fprintf(stderr, "lmc parity: --train does not take --lora (the LoRA training references are "
                        "checked by test_lora_train)\n");
        return 2;
    }
    if (train) { /* the training path only: --device cpu (default) or cuda */
        struct lmc_backend be;
        bool tbf16;
        int rc = cli_train_backend(&be, &c, "parity", &tbf16);
        if (rc) {
            cJSON_Delete(ref);
            return rc;
        }
        const char *prec = tbf16 ? "bf16" : "fp32";
        struct report r = {.json = c.json, .first = true};
        if (r.json)
            printf("{\"model\":\"%s\",\"mode\":\"train\",\"device\":\"%s\",\"dtype\":\"%s\",\"checks\":[",
                   c.model_dir, be.name, prec);
        else printf("parity %s (training, %s %s)\n", c.model_dir, prec, be.name);
        rc = parity_train(&r, &c, ref, &be, tbf16);
        if (r.json) printf("],\"passed\":%d,\"failed\":%d}\n", r.passed, r.failed);
        else printf("%d passed, %d failed\n", r.passed, r.failed);
        cli_train_backend_free(&be);
        cJSON_Delete(ref);
        return rc || r.failed ? 1 : 0;
    }
    if (!bf16) c.wdtype = LMC_WDTYPE_F32; /* fp32 tolerances: fp32 weights on every device */
    struct lmc_st ref_logits = {0};
    /* --lora DIR: the logits with the adapter are DIR/ref_logits.safetensors */
    if (c.n_lora > 1 || (c.n_lora == 1 && c.lora_mul[0] != 1.0)) {
        cJSON_Delete(ref);
        fprintf(stderr, "lmc parity: one --lora DIR (scale 1) whose folder holds ref_logits.safetensors\n");
        return 2;
    }
    const char *logits_dir = c.n_lora ? c.lora_dir[0] : ref_dir;
    if (!lmc_path_join(path, sizeof path, logits_dir, "ref_logits.safetensors") ||
        lmc_st_open_file(&ref_logits, path, &err)) {
        cJSON_Delete(ref);
        return cli_fail("parity", &err);
    }
    struct cli_model cm;
    if (cli_open(&cm, &c, true)) {
        cJSON_Delete(ref);
        lmc_st_free(&ref_logits);
        return 1;
    }
    struct report r = {.json = c.json, .first = true};
    if (r.json) printf("{\"model\":\"%s\",\"dtype\":\"%s\",\"checks\":[", c.model_dir, bf16 ? "bf16" : "fp32");
    else printf("parity %s%s%s (%s weights)\n", c.model_dir, c.n_lora ? " + " : "", c.n_lora ? c.lora_dir[0] : "",
                bf16 ? "bf16" : "fp32");
    check_tokenizer(&r, cm.tok, ref);
    check_prompts(&r, &cm, ref, &ref_logits, bf16, c.n_lora == 0);
    if (r.json) printf("],\"passed\":%d,\"failed\":%d}\n", r.passed, r.failed);
    else printf("%d passed, %d failed\n", r.passed, r.failed);
    cli_close(&cm);
    lmc_st_free(&ref_logits);
    cJSON_Delete(ref);
    return r.failed ? 1 : 0;
}
