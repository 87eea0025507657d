/* harness_kvq.cc — included by harness.cc (its helpers and backends in
 * scope): section kvq, ops/cuda/attention_kvq.cu against the CPU twins of
 * ops/cpu/kvquant.c and attention_kvq.c — the compressed store with
 * rollbacks (same decoded rows), the attention over CPU-written layers,
 * and llama-tiny through the CUDA compressed-cache table vs the CPU's. */
extern "C" {
#include "infer/kvq.h"
#include "ops/cpu/kvquant.h"
#include "ops/cuda/kvquant_cuda.h"
}

/* a model forward (prompt, all logits; then one decode step) with a
 * compressed cache of format fmt through backend be's kvq variant */
static bool kvq_forward(const struct lmc_backend *base, const char *dir, int fmt, int64_t R,
                        const std::vector<int32_t> &ids, std::vector<float> &all, std::vector<float> &next) {
    lmc_err err;
    struct lmc_backend be;
    struct lmc_model m;
    struct lmc_model_opts mo = {LMC_WDTYPE_F32, base};
    if (lmc_kvq_backend(&be, base, &err) || lmc_model_load(&m, dir, &mo, &err)) {
        printf("FAIL kvq load %s: %s\n", dir, err.msg);
        n_fail++;
        return false;
    }
    const int64_t n = (int64_t)ids.size(), V = m.cfg.vocab_size;
    struct lmc_kv kv;
    struct lmc_acts a;
    bool ok = !lmc_kvq_kv_init(&kv, &m, &be, 96, (enum lmc_kvq_fmt)fmt, R, &err); /* sized by the format */
    if (ok && lmc_acts_init(&a, &m, &be, 32, 32, &err)) lmc_kv_free(&kv), ok = false;
    if (ok) {
        all.assign((size_t)(n * V), NAN), next.assign((size_t)V, NAN);
        int32_t nid = (int32_t)((ids[n - 1] * 7 + 3) % V);
        if (lmc_model_forward(&m, &be, &a, &kv, ids.data(), n, 0, all.data(), true, &err) ||
            lmc_model_forward(&m, &be, &a, &kv, &nid, 1, n, next.data(), false, &err))
            ok = false;
        lmc_acts_free(&a);
        lmc_kv_free(&kv);
    }
    if (!ok) printf("FAIL kvq forward %s on %s: %s\n", dir, base->name, err.msg), n_fail++;
    lmc_model_free(&m);
    return ok;
}

/* attention_kvq.cu against the CPU twin on layers the CPU store filled
 * (prefill chunks then single tokens, a rollback included); then the
 * CUDA compressed-cache table through a model forward vs the CPU's */
static void test_kvq() {
    struct { int fmt; int64_t R, ctx, H, KV, D, M, win; } cs[] = {
        {LMC_KVQ_Q8, 0, 200, 6, 3, 20, 5, 0},   {LMC_KVQ_Q4, 0, 200, 6, 3, 20, 5, 40},
        {LMC_KVQ_KIVI2, 32, 200, 6, 3, 20, 5, 0}, {LMC_KVQ_KIVI2, 5, 160, 4, 2, 64, 1, 0},
        {LMC_KVQ_Q8, 0, 96, 4, 4, 48, 3, 17},   {LMC_KVQ_KIVI2, 12, 300, 2, 1, 96, 7, 0},
    };
    for (auto &c : cs) {
        const int64_t row = c.KV * c.D, len = c.ctx - 9, pos0 = len - c.M;
        /* layers sized by the format (lmc_kvq_kv_init's) */
        const size_t bytes = lmc_kvq_layer_bytes((enum lmc_kvq_fmt)c.fmt, c.ctx, row, c.R);
        std::vector<uint8_t> kr(bytes), vr(bytes);
        lmc_err err;
        if (lmc_kvq_layer_init(kr.data(), vr.data(), (enum lmc_kvq_fmt)c.fmt, c.ctx, row, c.R, bytes, &err)) {
            check("kvq layer init", 1, 0, "%s", err.msg);
            continue;
        }
        std::vector<float> K = rv(len * row, 2), V = rv(len * row), K2 = rv(len * row, 2);
        lmc_kvq_layer_store(kr.data(), vr.data(), K.data(), V.data(), len / 2, 0);
        lmc_kvq_layer_store(kr.data(), vr.data(), K2.data(), V.data(), 7, len / 2);   /* later rolled back */
        lmc_kvq_layer_store(kr.data(), vr.data(), K.data() + (len / 2 - 3) * row, V.data() + (len / 2 - 3) * row,
                            3, len / 2 - 3);
        for (int64_t t = len / 2; t < len; t++)
            lmc_kvq_layer_store(kr.data(), vr.data(), K.data() + t * row, V.data() + t * row, 1, t);
        /* the CUDA store, same sequence, in device memory: the same bytes
         * decode the same */
        {
            std::vector<uint8_t> gk(bytes), gv(bytes);
            lmc_kvq_layer_init(gk.data(), gv.data(), (enum lmc_kvq_fmt)c.fmt, c.ctx, row, c.R, bytes, &err);
            void *dk = gpu.alloc(gpu.ctx, bytes), *dv = gpu.alloc(gpu.ctx, bytes);
            void *dkn = gpu.alloc(gpu.ctx, (size_t)len * row * 4), *dvn = gpu.alloc(gpu.ctx, (size_t)len * row * 4);
            void *dpos = gpu.alloc(gpu.ctx, (size_t)len * 4);
            gpu.upload(gpu.ctx, dk, gk.data(), bytes);
            gpu.upload(gpu.ctx, dv, gv.data(), bytes);
            auto st = [&](const float *kk, const float *vv, int64_t n, int64_t p0) {
                std::vector<int32_t> pos(n);
                for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(p0 + i);
                gpu.upload(gpu.ctx, dkn, kk, (size_t)(n * row) * 4);
                gpu.upload(gpu.ctx, dvn, vv, (size_t)(n * row) * 4);
                gpu.upload(gpu.ctx, dpos, pos.data(), (size_t)n * 4);
                lmc_cuda_kvq_rope_kv_store(cc, nullptr, (float *)dkn, (const float *)dvn, dk, dv, n, c.H, c.KV, c.D,
                                           0, (const int32_t *)dpos, nullptr, 1.0f);
            };
            st(K.data(), V.data(), len / 2, 0);
            st(K2.data(), V.data(), 7, len / 2);
            st(K.data() + (len / 2 - 3) * row, V.data() + (len / 2 - 3) * row, 3, len / 2 - 3);
            for (int64_t t = len / 2; t < len; t++) st(K.data() + t * row, V.data() + t * row, 1, t);
            gpu.download(gpu.ctx, gk.data(), dk, bytes);
            gpu.download(gpu.ctx, gv.data(), dv, bytes);
            for (void *pp : {dk, dv, dkn, dvn, dpos}) gpu.free(gpu.ctx, pp);
            double e = lmc_kvq_layer_len(gk.data()) == len ? 0 : INFINITY;
            std::vector<float> a(row), b(row), a2(row), b2(row);
            for (int64_t t = 0; t < len; t++) {
                lmc_kvq_layer_row(kr.data(), vr.data(), t, a.data(), b.data());
                lmc_kvq_layer_row(gk.data(), gv.data(), t, a2.data(), b2.data());
                for (int64_t i = 0; i < row; i++)
                    e = std::max(e, (double)std::max(fabsf(a[i] - a2[i]), fabsf(b[i] - b2[i])));
            }
            check(std::string("kvq store (") + lmc_kvq_name((enum lmc_kvq_fmt)c.fmt) + ")", e, 0,
                  "ctx=%ld row=%ld R=%ld", (long)c.ctx, (long)row, (long)c.R);
        }
        std::vector<float> q = rv(c.M * c.H * c.D, 2), ref(c.M * c.H * c.D), o = nans(c.M * c.H * c.D);
        float scale = 1.0f / sqrtf((float)c.D);
        lmc_kvq_attention(cpu.ctx, ref.data(), q.data(), (const float *)kr.data(), (const float *)vr.data(), c.M,
                          pos0, c.H, c.KV, c.D, scale, c.win);
        lmc_cuda_kvq_attention(cc, o.data(), q.data(), (const float *)kr.data(), (const float *)vr.data(), c.M, pos0,
                               c.H, c.KV, c.D, scale, c.win);
        double num = 0, den = 0;
        for (size_t i = 0; i < o.size(); i++) {
            num = o[i] != o[i] ? INFINITY : std::max(num, (double)fabs(o[i] - ref[i]));
            den = std::max(den, (double)fabs(ref[i]));
        }
        check(std::string("attention_kvq (") + lmc_kvq_name((enum lmc_kvq_fmt)c.fmt) + ")", num / den, 1e-5,
              "ctx=%ld H=%ld KV=%ld D=%ld M=%ld win=%ld R=%ld", (long)c.ctx, (long)c.H, (long)c.KV, (long)c.D,
              (long)c.M, (long)c.win, (long)c.R);
    }
    /* end to end: llama-tiny with each compressed cache, CUDA table vs CPU */
    std::string dir = std::string(fixtures()) + "/llama-tiny";
    std::vector<int32_t> ids(70);
    for (auto &i : ids) i = irand(512);
    for (int fmt = LMC_KVQ_Q8; fmt <= LMC_KVQ_KIVI2; fmt++) {
        std::vector<float> ca, cn, ga, gn;
        if (!kvq_forward(&cpu, dir.c_str(), fmt, 16, ids, ca, cn) || !kvq_forward(&gpu, dir.c_str(), fmt, 16, ids, ga, gn))
            continue;
        const std::string nm = std::string("kvq e2e llama-tiny (") + lmc_kvq_name((enum lmc_kvq_fmt)fmt) + ")";
        double e1 = rel(ga, ca), e2 = rel(gn, cn);
        printf("  %s: prompt logits %.2e, decode logits %.2e\n", nm.c_str(), e1, e2);
        check(nm + " prompt", e1, 1e-3);
        check(nm + " decode", e2, 1e-3);
    }
}
