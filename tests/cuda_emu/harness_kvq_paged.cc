/* harness_kvq_paged.cc — included by harness.cc (its helpers and backends
 * in scope): section kvq_paged, ops/cuda/attention_paged_kvq.cu (the
 * compressed paged pools: q8, q4, KIVI-2 with per-sequence f16 rings)
 * against the CPU twins ops/cpu/attention_paged_kvq.c and
 * attention_paged_kivi.c, both reached through infer/kvq.h's
 * lmc_kvq_paged_backend (the CPU table and the real CUDA table). Three
 * sequences over scrambled block tables, five steps: prefills, decodes, a
 * chunk longer than the ring, and a step that rewrites a sequence's last
 * three positions (rejected drafts); after every step the pool's K and V
 * bytes (and the rings) must equal the CPU's exactly and the attention
 * output within 1e-5. Then llama-tiny's batched forward over each pool
 * (two sequences, ring slots on the device): CUDA table vs CPU logits. */
#include "infer/kvq.h"
#include "model/forward_batch.h"
#include "ops/cpu/kvquant.h"

static void kvq_paged_case(int fmt, int64_t H, int64_t KV, int64_t D, int64_t residual, int64_t window) {
    const int64_t row = KV * D, BSZ = 32, MB = 5, NS = 3, NB = 16;
    lmc_err err;
    struct lmc_backend kc_cpu, kc_gpu;
    if (lmc_kvq_paged_backend(&kc_cpu, &cpu, (enum lmc_kvq_fmt)fmt, &err) ||
        lmc_kvq_paged_backend(&kc_gpu, &gpu, (enum lmc_kvq_fmt)fmt, &err)) {
        check("kvq_paged backend", 1, 0, "%s", err.msg);
        return;
    }
    const bool kivi = fmt == LMC_KVQ_KIVI2;
    const size_t rb = kc_cpu.kv_row_bytes(row), pool = (size_t)(NB * BSZ) * rb;
    const int64_t rrows = kivi ? 16 + std::max<int64_t>(residual, 32) : 0;
    const size_t rsb = kivi ? lmc_kv_ring_slot_bytes(row, rrows) : 0;
    std::vector<uint8_t> hk(pool, 0), hv(pool, 0), hr(NS * rsb, 0), gk(pool), gv(pool), gr(NS * rsb);
    for (int64_t s = 0; s < NS && kivi; s++) /* empty rings */
        memset(hr.data() + s * rsb + 2 * lmc_kv_ring_part_bytes(row, rrows), 0xff, (size_t)rrows * 4);
    void *dk = gpu.alloc(gpu.ctx, pool), *dv = gpu.alloc(gpu.ctx, pool);
    void *dr = kivi ? gpu.alloc(gpu.ctx, NS * rsb) : nullptr;
    gpu.upload(gpu.ctx, dk, hk.data(), pool);
    gpu.upload(gpu.ctx, dv, hv.data(), pool);
    if (kivi) gpu.upload(gpu.ctx, dr, hr.data(), NS * rsb);
    std::vector<int32_t> bt(NS * MB);
    std::vector<int32_t> perm(NB);
    for (int i = 0; i < NB; i++) perm[i] = i;
    for (int i = NB - 1; i > 0; i--) std::swap(perm[i], perm[irand(i + 1)]);
    for (int64_t i = 0; i < NS * MB; i++) bt[i] = perm[i];
    const int64_t cnt[5][3] = {{45, 13, 70}, {1, 1, 1}, {9, 1, 60}, {4, 4, 1}, {1, 30, 1}};
    const int64_t back[5][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {-3, 0, -3}, {0, 0, 0}};
    int64_t len[3] = {0, 0, 0};
    const char *nm = lmc_kvq_name((enum lmc_kvq_fmt)fmt);
    for (int stp = 0; stp < 5; stp++) {
        std::vector<int32_t> seq, pos, tr;
        for (int64_t s = 0; s < NS; s++) {
            int64_t from = len[s] + back[stp][s];
            for (int64_t j = 0; j < cnt[stp][s]; j++) seq.push_back((int32_t)s), pos.push_back((int32_t)(from + j)), tr.push_back((int32_t)s);
            len[s] = from + cnt[stp][s];
        }
        const int64_t T = (int64_t)seq.size();
        std::vector<float> q = rv(T * H * D, 2), k = rv(T * row, 2), v = rv(T * row), ref(T * H * D), o = nans(T * H * D);
        float scale = 1.0f / sqrtf((float)D);
        if (kivi)
            kc_cpu.attention_paged_ring(kc_cpu.ctx, ref.data(), q.data(), k.data(), v.data(), (float *)hk.data(),
                                        (float *)hv.data(), hr.data(), tr.data(), rrows, residual, T, seq.data(),
                                        pos.data(), bt.data(), MB, BSZ, H, KV, D, scale, window);
        else
            kc_cpu.attention_paged(kc_cpu.ctx, ref.data(), q.data(), k.data(), v.data(), (float *)hk.data(),
                                   (float *)hv.data(), T, seq.data(), pos.data(), bt.data(), MB, BSZ, H, KV, D,
                                   scale, window);
        /* the GPU: every operand in device memory */
        auto up = [&](const void *src, size_t n) {
            void *d = gpu.alloc(gpu.ctx, n);
            gpu.upload(gpu.ctx, d, src, n);
            return d;
        };
        void *dq = up(q.data(), q.size() * 4), *dkn = up(k.data(), k.size() * 4), *dvn = up(v.data(), v.size() * 4);
        void *ds = up(seq.data(), seq.size() * 4), *dp = up(pos.data(), pos.size() * 4);
        void *db = up(bt.data(), bt.size() * 4), *dt = up(tr.data(), tr.size() * 4);
        void *dout = gpu.alloc(gpu.ctx, o.size() * 4);
        if (kivi)
            kc_gpu.attention_paged_ring(kc_gpu.ctx, (float *)dout, (const float *)dq, (const float *)dkn,
                                        (const float *)dvn, (float *)dk, (float *)dv, dr, (const int32_t *)dt, rrows,
                                        residual, T, (const int32_t *)ds, (const int32_t *)dp, (const int32_t *)db, MB,
                                        BSZ, H, KV, D, scale, window);
        else
            kc_gpu.attention_paged(kc_gpu.ctx, (float *)dout, (const float *)dq, (const float *)dkn, (const float *)dvn,
                                   (float *)dk, (float *)dv, T, (const int32_t *)ds, (const int32_t *)dp,
                                   (const int32_t *)db, MB, BSZ, H, KV, D, scale, window);
        gpu.download(gpu.ctx, o.data(), dout, o.size() * 4);
        gpu.download(gpu.ctx, gk.data(), dk, pool);
        gpu.download(gpu.ctx, gv.data(), dv, pool);
        if (kivi) gpu.download(gpu.ctx, gr.data(), dr, NS * rsb);
        gpu.sync(gpu.ctx);
        for (void *p : {dq, dkn, dvn, ds, dp, db, dt, dout}) gpu.free(gpu.ctx, p);
        double bytes = (gk != hk) + (gv != hv) + (kivi && gr != hr);
        check(std::string("kvq_paged store (") + nm + ")", bytes, 0, "step %d H=%ld KV=%ld D=%ld R=%ld", stp,
              (long)H, (long)KV, (long)D, (long)residual);
        check(std::string("kvq_paged attention (") + nm + ")", rel(o, ref), 1e-5,
              "step %d H=%ld KV=%ld D=%ld R=%ld win=%ld", stp, (long)H, (long)KV, (long)D, (long)residual, (long)window);
    }
    for (void *p : {dk, dv, dr})
        if (p) gpu.free(gpu.ctx, p);
}

/* llama-tiny's batched forward (two sequences: a 40-token prompt and a
 * 29-token one in one step, then a decode step of both) over a compressed
 * pool of format fmt through backend base's paged variant: ring slots
 * 1 and 0 (device memory, tok_slot uploads, ring resets by upload) */
static bool kvq_paged_forward(const struct lmc_backend *base, const char *dir, int fmt,
                              const std::vector<int32_t> &ids, std::vector<float> &out) {
    lmc_err err;
    struct lmc_backend be;
    struct lmc_model m;
    struct lmc_model_opts mo = {LMC_WDTYPE_F32, base};
    if (lmc_kvq_paged_backend(&be, base, (enum lmc_kvq_fmt)fmt, &err) || lmc_model_load(&m, dir, &mo, &err)) {
        printf("FAIL kvq_paged load %s: %s\n", dir, err.msg);
        n_fail++;
        return false;
    }
    const int64_t V = m.cfg.vocab_size, n0 = 40, n1 = 29;
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    bool ok = !lmc_kv_pool_init(&pool, &m, &be, 8, 32, &err);
    if (ok && lmc_kv_pool_ring_init(&pool, 2, 16, &err)) lmc_kv_pool_free(&pool), ok = false;
    if (ok && lmc_batch_acts_init(&ba, &m, &be, 80, 2, 4, 4, &err)) lmc_kv_pool_free(&pool), ok = false;
    if (ok) {
        std::vector<int32_t> tok, seq, pos;
        for (int64_t i = 0; i < n0; i++) tok.push_back(ids[i]), seq.push_back(0), pos.push_back((int32_t)i);
        for (int64_t i = 0; i < n1; i++) tok.push_back(ids[n0 + i]), seq.push_back(1), pos.push_back((int32_t)i);
        int32_t bt[8] = {5, 2, 7, 0, 6, 1, 3, 4}, rows[2] = {(int32_t)(n0 - 1), (int32_t)(n0 + n1 - 1)}, ring[2] = {1, 0};
        pool.ring_slot = ring;
        out.assign((size_t)(4 * V), NAN);
        struct lmc_batch b = {n0 + n1, tok.data(), seq.data(), pos.data(), 2, bt, 4, rows, 2, NULL};
        int32_t t2[2] = {ids[3], ids[5]}, s2[2] = {0, 1}, p2[2] = {(int32_t)n0, (int32_t)n1}, r2[2] = {0, 1};
        struct lmc_batch d = {2, t2, s2, p2, 2, bt, 4, r2, 2, NULL};
        if (lmc_model_forward_batch(&m, &be, &ba, &pool, &b, out.data(), &err) ||
            lmc_model_forward_batch(&m, &be, &ba, &pool, &d, out.data() + 2 * V, &err))
            ok = false;
        lmc_batch_acts_free(&ba);
        lmc_kv_pool_free(&pool);
    }
    if (!ok) printf("FAIL kvq_paged forward %s on %s: %s\n", dir, base->name, err.msg), n_fail++;
    lmc_model_free(&m);
    return ok;
}

static void test_kvq_paged() {
    kvq_paged_case(LMC_KVQ_Q8, 6, 2, 20, 0, 0);
    kvq_paged_case(LMC_KVQ_Q4, 6, 2, 20, 0, 17);
    kvq_paged_case(LMC_KVQ_Q8, 4, 4, 64, 0, 0);
    kvq_paged_case(LMC_KVQ_KIVI2, 6, 2, 20, 32, 0);
    kvq_paged_case(LMC_KVQ_KIVI2, 6, 3, 20, 8, 0);
    kvq_paged_case(LMC_KVQ_KIVI2, 4, 1, 64, 0, 21);
    /* end to end: llama-tiny over each compressed pool, CUDA table vs CPU */
    std::string dir = std::string(fixtures()) + "/llama-tiny";
    std::vector<int32_t> ids(70);
    for (auto &i : ids) i = irand(512);
    for (int fmt = LMC_KVQ_Q8; fmt <= LMC_KVQ_KIVI2; fmt++) {
        std::vector<float> c, g;
        if (!kvq_paged_forward(&cpu, dir.c_str(), fmt, ids, c) || !kvq_paged_forward(&gpu, dir.c_str(), fmt, ids, g))
            continue;
        const std::string nm = std::string("kvq_paged e2e llama-tiny (") + lmc_kvq_name((enum lmc_kvq_fmt)fmt) + ")";
        double e = rel(g, c);
        printf("  %s: prompt and decode logits of two sequences %.2e\n", nm.c_str(), e);
        check(nm, e, 1e-3);
    }
}
