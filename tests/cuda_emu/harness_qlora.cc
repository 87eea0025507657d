/* harness_qlora.cc — included by harness.cc (its helpers and backends in
 * scope): section qlora, QLoRA's frozen 4-bit base on the CUDA backend
 * (ops/cuda/qmatmul_f.cu) against the CPU twin (ops/cpu/qmatmul_f.c):
 *   - weights: flat NF4 (blocks of 64 over the flattened weight, n k not a
 *     multiple of 64) with double-quantized absmax and with plain float
 *     absmax, a row view of it starting mid-block at an odd element (a
 *     fused tensor's part), per-row NF4 and a row view of it, int4 rtn
 *     groups of 64 over K = 75 (padded blocks), 8-bit groups, and act-order
 *     groups of unequal sizes (a permutation);
 *   - the device dequantization equals lmc_qweight_dequant_rows bit for
 *     bit (every row, and a middle range), and the upload reports bytes;
 *     a second copy of a weight shares the first one's 2 MiB chunk;
 *   - forward (bias or not) and input-gradient backward (=, +=) for M = 1,
 *     7, 33, the default tile and 16-row tiles (odd N: a partial last
 *     tile), fp32 vs the CPU twin (<= 1e-5), bf16 (train_bf16) <= 1e-2;
 *   - a whole QLoRA finetune step (lmc_qlora_load through the real table,
 *     the lora_train fixture's adapter, lmc_trainer_step: forward,
 *     backward, clipping, AdamW) on llama-tiny NF4, qwen2-tiny int4 and
 *     gpt2-tiny NF4 (Conv1D, fused c_attn as flat views), fp32: loss,
 *     every lora_A/B gradient and the adapter after the step vs the CPU
 *     run; bf16: loss and gradient cosine;
 *   - LoRA's bf16 base (LMC_QLORA_BF16: the frozen linears kept bf16 on
 *     the device): matmul_bwd with BF16 weights at odd shapes = the F32
 *     weight's call bit for bit (and the CPU twin within 1e-2); a whole
 *     step against the f32 base in the bf16 mode, llama/qwen2/gpt2 tiny:
 *     the same loss, gradients and adapter after AdamW; with the token
 *     embedding and head bf16 too, the same against the f32 base whose
 *     embedding holds bf16-rounded values (and within 2e-3 of the f32
 *     embedding's loss). */
extern "C" {
#include "train/qlora.h"
#include "train/trainer.h"
}

/* One host weight: upload, dequantization, forward, backward. */
static void qlora_op_case(const char *name, const struct lmc_qweight *hw) {
    const int64_t N = hw->n, K = hw->k;
    struct lmc_qweight *dw = nullptr;
    size_t bytes = 0;
    lmc_err err;
    if (gpu.qweight_upload_f(gpu.ctx, hw, &dw, &bytes, &err)) {
        printf("FAIL qlora %s: upload: %s\n", name, err.msg);
        n_fail++;
        return;
    }
    check(std::string("qlora upload bytes = compact bytes ") + name,
          fabs((double)bytes - (double)lmc_qweight_bytes_compact(hw)), 0.0, "%zu vs %zu", bytes,
          lmc_qweight_bytes_compact(hw));
    { /* the weights' buffers share 2 MiB chunks (qmatmul_f.cu qf_alloc): a second copy of this small weight
       * takes no new device memory, and freeing it gives none back while the first lives */
        size_t f1 = 0, f2 = 0, f3 = 0, tot = 0;
        struct lmc_qweight *dw2 = nullptr;
        size_t b2 = 0;
        cudaMemGetInfo(&f1, &tot);
        if (gpu.qweight_upload_f(gpu.ctx, hw, &dw2, &b2, &err)) {
            printf("FAIL qlora %s: second upload: %s\n", name, err.msg);
            n_fail++;
        } else {
            cudaMemGetInfo(&f2, &tot);
            gpu.qweight_free_f(gpu.ctx, dw2);
            cudaMemGetInfo(&f3, &tot);
            check(std::string("qlora chunks: device bytes of a second copy ") + name, (double)f1 - (double)f2, 0.0,
                  "%zu bytes of pieces", b2);
            check(std::string("qlora chunks: device bytes back from freeing it ") + name, (double)f3 - (double)f2, 0.0,
                  "%zu bytes of pieces", b2);
        }
    }
    /* dequantization: bit for bit */
    std::vector<float> W((size_t)(N * K));
    lmc_qweight_dequant_rows(hw, 0, N, W.data());
    for (int part = 0; part < 2; part++) {
        int64_t r0 = part ? N / 3 : 0, nr = part ? N - N / 3 - 1 : N;
        float *dd = dev_nan(gpu, (size_t)(nr * K));
        lmc_cuda_qweight_dequant_f(gpu.ctx, dw, r0, nr, dd);
        std::vector<float> got = down(gpu, dd, (size_t)(nr * K));
        size_t diff = 0;
        for (size_t i = 0; i < got.size(); i++) diff += memcmp(&got[i], &W[(size_t)(r0 * K) + i], 4) != 0;
        check(std::string("qlora dequant bit-exact ") + name, (double)diff, 0.0, "rows %lld..%lld: %zu differ",
              (long long)r0, (long long)(r0 + nr), diff);
    }
    for (int64_t M : {1, 7, 33}) {
        for (int64_t tile : {0, 16}) {
            std::vector<float> x = rv((size_t)(M * K)), bias = rv((size_t)N), dy = rv((size_t)(M * N)),
                               dx0 = rv((size_t)(M * K));
            const bool with_bias = (M + tile) % 2 == 1;
            std::vector<float> y((size_t)(M * N)), dx((size_t)(M * K)), dxa = dx0;
            cpu.qmatmul_f(cpu.ctx, y.data(), x.data(), M, hw, with_bias ? bias.data() : nullptr);
            cpu.qmatmul_f_bwd(cpu.ctx, dx.data(), dy.data(), M, hw, 0);
            cpu.qmatmul_f_bwd(cpu.ctx, dxa.data(), dy.data(), M, hw, 1);
            for (int bf = 0; bf < 2; bf++) {
                lmc_backend_cuda_set_train_bf16(&gpu, bf);
                float *xd = dup_dev(gpu, x), *bd = dup_dev(gpu, bias), *dyd = dup_dev(gpu, dy);
                float *yd = dev_nan(gpu, (size_t)(M * N)), *dxd = dev_nan(gpu, (size_t)(M * K)), *dxad = dup_dev(gpu, dx0);
                lmc_cuda_qmatmul_f_ex(gpu.ctx, yd, xd, M, dw, with_bias ? bd : nullptr, tile);
                lmc_cuda_qmatmul_f_bwd_ex(gpu.ctx, dxd, dyd, M, dw, 0, tile);
                lmc_cuda_qmatmul_f_bwd_ex(gpu.ctx, dxad, dyd, M, dw, 1, tile);
                const double tol = bf ? 1e-2 : 1e-5;
                const std::string p = std::string("qlora ") + (bf ? "bf16 " : "fp32 ");
                check(p + "fwd " + name, rel(down(gpu, yd, (size_t)(M * N)), y), tol, "M %lld tile %lld",
                      (long long)M, (long long)tile);
                check(p + "bwd dx= " + name, rel(down(gpu, dxd, (size_t)(M * K)), dx), tol, "M %lld tile %lld",
                      (long long)M, (long long)tile);
                check(p + "bwd dx+= " + name, rel(down(gpu, dxad, (size_t)(M * K)), dxa), tol, "M %lld tile %lld",
                      (long long)M, (long long)tile);
            }
            lmc_backend_cuda_set_train_bf16(&gpu, false);
        }
    }
    printf("  qlora %s (%lld x %lld): %zu device bytes (%.2f bits/weight)\n", name, (long long)N, (long long)K, bytes,
           8.0 * (double)bytes / (double)(N * K));
    gpu.qweight_free_f(gpu.ctx, dw);
}

static void qlora_ops() {
    lmc_err err;
    { /* flat NF4 (double-quantized absmax), n k = 37 * 75 not a multiple of 64; views */
        const int64_t N = 37, K = 75;
        std::vector<float> w = rv((size_t)(N * K), 0.2f);
        struct lmc_nf4 nf;
        struct lmc_qweight q;
        LMC_ASSERT(!lmc_nf4_quantize(w.data(), N * K, &nf, &err) && !lmc_qweight_init_nf4_flat(&q, &nf, N, K, &err));
        LMC_ASSERT(q.dq_code != nullptr);
        qlora_op_case("nf4 flat dq", &q);
        struct lmc_qweight v = q; /* rows [13, 36): starts at element 975 (odd, mid-block) */
        v.n = 23, v.flat_off = 13 * K, v.owned = nullptr, v.dq_owned = nullptr;
        qlora_op_case("nf4 flat view", &v);
        struct lmc_qweight p = q; /* plain float absmax */
        p.dq_code = nullptr;
        qlora_op_case("nf4 flat absmax f32", &p);
        lmc_qweight_free(&q);
        lmc_nf4_free(&nf);
    }
    { /* NF4 per row (K a multiple of 64) and a row view */
        const int64_t N = 33, K = 128;
        std::vector<float> w = rv((size_t)(N * K), 0.2f);
        struct lmc_nf4 nf;
        struct lmc_qweight q;
        LMC_ASSERT(!lmc_nf4_quantize(w.data(), N * K, &nf, &err) && !lmc_qweight_init_nf4(&q, &nf, N, K, &err));
        qlora_op_case("nf4 rows", &q);
        struct lmc_qweight v = q;
        const int64_t r0 = 11;
        v.n = 22, v.data = q.data + r0 * q.row_bytes, v.absmax = q.absmax + r0 * (K / 64);
        v.dq_code = q.dq_code + r0 * (K / 64), v.dq_b0 = q.dq_b0 + r0 * (K / 64);
        v.owned = nullptr, v.dq_owned = nullptr;
        qlora_op_case("nf4 rows view", &v);
        lmc_qweight_free(&q);
        lmc_nf4_free(&nf);
    }
    for (int bits : {4, 8}) { /* rtn groups of 64 over K = 75: a partial group, padded blocks */
        const int64_t N = 41, K = 75;
        std::vector<float> w = rv((size_t)(N * K), 0.2f);
        struct lmc_qgroups g;
        struct lmc_qweight q;
        LMC_ASSERT(!lmc_quant_rtn(w.data(), N, K, bits, 64, false, &g, &err) && !lmc_qweight_init_groups(&q, &g, &err));
        qlora_op_case(bits == 4 ? "int4 g64" : "int8 g64", &q);
        lmc_qweight_free(&q);
        lmc_qgroups_free(&g);
    }
    { /* act-order: groups of 32 over K = 100 reassigned at random (unequal groups, a permutation) */
        const int64_t N = 29, K = 100;
        std::vector<float> w = rv((size_t)(N * K), 0.2f);
        struct lmc_qgroups g;
        struct lmc_qweight q;
        LMC_ASSERT(!lmc_quant_rtn(w.data(), N, K, 4, 32, false, &g, &err));
        for (int64_t i = 0; i < K; i++) g.g_idx[i] = irand((int)g.n_groups);
        LMC_ASSERT(!lmc_qweight_init_groups(&q, &g, &err));
        LMC_ASSERT(q.perm != nullptr);
        qlora_op_case("int4 act-order", &q);
        lmc_qweight_free(&q);
        lmc_qgroups_free(&g);
    }
}

/* One QLoRA finetune step of dir (kind) with the lora_train adapter on be. */
struct qlora_batch { std::vector<int32_t> in, tg; };
static lmc_status qlora_next(void *user, int32_t *in, int32_t *tg, const int64_t **segs, int64_t *n_segs, lmc_err *) {
    auto *b = (qlora_batch *)user;
    memcpy(in, b->in.data(), b->in.size() * sizeof *in);
    memcpy(tg, b->tg.data(), b->tg.size() * sizeof *tg);
    *segs = nullptr, *n_segs = 0;
    return LMC_OK;
}

/* ends 1: the token embedding and untied head kept bf16 too
 * (lmc_qlora_load_ends); 2: the f32 embedding's values rounded to bf16
 * after loading (what a bf16 embedding gathers); 3: as 1 with the
 * embedding of an untied head in pinned host memory (lmc_qlora_load_opts
 * host_emb); 0: neither. info (optional): the bound embedding's and head's
 * dtypes, the arena's floats after attaching the adapter, the host bytes
 * and whether the bound embedding lies outside device memory. */
struct qlora_info { enum lmc_dtype emb, head; int64_t numel; size_t host; bool emb_off_dev; };
static bool qlora_step(const struct lmc_backend *be, const std::string &dir, enum lmc_qlora_kind kind, qlora_batch &b,
                       int64_t B, int64_t T, double &loss, std::vector<float> &g, std::vector<float> &w, size_t &dev_bytes,
                       size_t &compact_bytes, int ends = 0, qlora_info *info = nullptr) {
    lmc_err err;
    struct lmc_tmodel tm;
    struct lmc_qlora ql;
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    struct lmc_trainer tr;
    memset(&ql, 0, sizeof ql);
    /* kind 0: the plain f32 model (lmc_tmodel_load) */
    if (kind ? lmc_qlora_load_opts(&tm, &ql, dir.c_str(), kind, ends == 1 || ends == 3, ends == 3, be, &err)
             : lmc_tmodel_load(&tm, dir.c_str(), be, &err)) {
        printf("FAIL qlora load on %s: %s\n", be->name, err.msg), n_fail++;
        return false;
    }
    for (int i = 0; ends == 2 && i < tm.n_params; i++) { /* the f32 embedding rounded to bf16 values */
        if (tm.params[i].external) continue;
        const struct lmc_tparam *p = &tm.params[i];
        if (tm.w + p->off != (const float *)tm.W.tok_emb.data) continue;
        std::vector<float> e((size_t)p->numel);
        LMC_ASSERT(!lmc_tmodel_download_param(&tm, tm.w, i, e.data(), &err));
        for (auto &v : e) v = lmc_bf16_to_f32(lmc_f32_to_bf16(v));
        LMC_ASSERT(!lmc_tmodel_upload_param(&tm, tm.w, i, e.data(), &err));
    }
    dev_bytes = ql.dev_bytes, compact_bytes = ql.compact_bytes;
    struct lmc_train_opts o = {};
    o.B = B, o.T = T, o.accum = 1, o.decay = LMC_DECAY_ALL, o.clip = 1.0, o.next_batch = qlora_next, o.batch_user = &b;
    /* eps 1e-3, not 1e-8: AdamW's first step is g / (|g| + eps), so with a
     * tiny eps a gradient element at rounding level (|g| ~ 1e-9 of the
     * largest) would move its weight by a whole lr on one backend and not
     * on the other; with 1e-3 the update is a smooth function of g */
    o.adamw = (struct lmc_adamw_cfg){1e-2, 0.9, 0.999, 1e-3, 0.0};
    o.sched = (struct lmc_schedule){};
    o.sched.kind = LMC_SCHED_CONSTANT, o.sched.lr_max = 1e-2, o.sched.lr_min = 1e-2, o.sched.total = 100;
    if (lmc_lora_load(&lo, (dir + "/lora_train").c_str(), &tm.cfg, &err) || lmc_lora_train_attach(&lt, &tm, &lo, &err) ||
        lmc_trainer_init(&tr, &tm, be, NULL, NULL, &o, &err)) {
        printf("FAIL qlora attach on %s: %s\n", be->name, err.msg), n_fail++;
        return false;
    }
    if (info) *info = {tr.tm.W.tok_emb.dtype, tr.tm.W.head.w.dtype, tr.tm.numel, ql.host_bytes, !emu_is_dev(tr.tm.W.tok_emb.data)};
    struct lmc_train_stats st;
    count_begin();
    bool ok = !lmc_trainer_step(&tr, &st, &err);
    count_end();
    if (ok) {
        loss = st.loss;
        int64_t ng = tr.tm.numel - tr.tm.g_off;
        g.resize((size_t)ng), w.resize((size_t)ng);
        be->download(be->ctx, g.data(), tr.tm.g, (size_t)ng * sizeof(float));
        be->download(be->ctx, w.data(), tr.tm.w + tr.tm.trainable_off, (size_t)ng * sizeof(float));
    } else {
        printf("FAIL qlora step on %s: %s\n", be->name, err.msg), n_fail++;
    }
    lmc_trainer_free(&tr);
    lmc_lora_train_free(&lt);
    lmc_lora_free(&lo);
    lmc_qlora_free(&ql);
    return ok;
}

static void qlora_models() {
    struct { const char *model; enum lmc_qlora_kind kind; } cases[] = {
        {"llama-tiny", LMC_QLORA_NF4}, {"qwen2-tiny", LMC_QLORA_INT4}, {"gpt2-tiny", LMC_QLORA_NF4}};
    for (auto &cs : cases) {
        const std::string dir = std::string(fixtures()) + "/" + cs.model;
        const int64_t B = 2, T = 29;
        qlora_batch b;
        b.in.resize((size_t)(B * T)), b.tg.resize((size_t)(B * T));
        for (auto &i : b.in) i = irand(512);
        for (size_t i = 0; i < b.tg.size(); i++) b.tg[i] = i % 7 == 3 ? -1 : irand(512);
        double lc, lg;
        std::vector<float> gc, wc, gg, wg;
        size_t dc, hc, dg, hg; /* device and compact bytes (CPU: no device copy) */
        const char *kn = cs.kind == LMC_QLORA_NF4 ? "nf4" : "int4";
        if (!qlora_step(&cpu, dir, cs.kind, b, B, T, lc, gc, wc, dc, hc)) continue;
        for (int bf = 0; bf < 2; bf++) {
            lmc_backend_cuda_set_train_bf16(&gpu, bf);
            if (!qlora_step(&gpu, dir, cs.kind, b, B, T, lg, gg, wg, dg, hg)) continue;
            const std::string p = std::string("qlora step ") + (bf ? "bf16 " : "fp32 ");
            double el = fabs(lg - lc) / fabs(lc), eg = rel(gg, gc), ew = rel(wg, wc);
            double cs_ = cosine(gg.data(), gc.data(), gc.size());
            check(p + "loss", el, bf ? 2e-2 : 1e-5, "%s %s", cs.model, kn);
            if (bf) {
                check(p + "lora grads (1 - cosine)", 1 - cs_, 1e-2, "%s %s", cs.model, kn);
                /* without held operands: loss, gradients, adapter after AdamW bit for bit */
                step_counts c1 = last_step;
                struct lmc_backend nh = gpu_nohold();
                double l0;
                std::vector<float> g0, w0;
                size_t d0, h0;
                if (qlora_step(&nh, dir, cs.kind, b, B, T, l0, g0, w0, d0, h0)) {
                    std::vector<float> a1(gg), a0(g0);
                    a1.insert(a1.end(), wg.begin(), wg.end()), a0.insert(a0.end(), w0.begin(), w0.end());
                    hold_ab(p, cs.model, lg, a1, c1, l0, a0, last_step);
                }
            } else {
                check(p + "lora grads", eg, 1e-4, "%s %s", cs.model, kn);
                check(p + "adapter after AdamW", ew, 1e-4, "%s %s", cs.model, kn);
            }
            check("qlora step device bytes = compact bytes", fabs((double)dg - (double)hc), 0.0,
                  "%s: %zu device vs %zu", cs.model, dg, hc);
            printf("  %s %s %s: loss %.7f vs cpu %.7f (%.2e), grads rel %.2e cosine %.7f, adapter %.2e; base %zu B on "
                   "the device (compact form on the CPU: %zu)\n", cs.model, kn, bf ? "bf16" : "fp32", lg, lc, el, eg, cs_, ew,
                   dg, hc);
        }
        lmc_backend_cuda_set_train_bf16(&gpu, false);
    }
}

/* matmul_bwd with a BF16 weight (the bf16 base) in the bf16 mode, odd
 * shapes, dx = / +=, with and without dw / db: bit for bit the call with
 * the F32 weight holding the same (bf16-representable) values, which the
 * bf16 mode rounds to bf16 itself; and the CPU twin's f32 product within
 * bf16 tolerance. */
static void bf16_base_bwd_ops() {
    const int64_t shapes[][3] = {{33, 37, 75}, {69, 5, 131}, {9, 64, 19}};
    lmc_backend_cuda_set_train_bf16(&gpu, true);
    for (auto &sh : shapes) {
        const int64_t M = sh[0], N = sh[1], K = sh[2];
        std::vector<float> w = rv((size_t)(N * K)), x = rv((size_t)(M * K)), dy = rv((size_t)(M * N)),
                           dx0 = rv((size_t)(M * K)), zw((size_t)(N * K)), zb((size_t)N);
        std::vector<uint16_t> wb((size_t)(N * K));
        for (size_t i = 0; i < w.size(); i++) wb[i] = lmc_f32_to_bf16(w[i]), w[i] = lmc_bf16_to_f32(wb[i]);
        struct lmc_mat mh = {LMC_DTYPE_F32, N, K, w.data()}, mf = {LMC_DTYPE_F32, N, K, dup_dev(gpu, w)},
                       mb = {LMC_DTYPE_BF16, N, K, dup_dev(gpu, wb.data(), wb.size() * 2)};
        float *xd = dup_dev(gpu, x), *dyd = dup_dev(gpu, dy);
        for (int acc = 0; acc < 2; acc++)
            for (int grads = 0; grads < 2; grads++) {
                float *dxf = dup_dev(gpu, dx0), *dxb = dup_dev(gpu, dx0);
                float *dwf = grads ? dup_dev(gpu, zw) : nullptr, *dwb = grads ? dup_dev(gpu, zw) : nullptr;
                float *dbf = grads ? dup_dev(gpu, zb) : nullptr, *dbb = grads ? dup_dev(gpu, zb) : nullptr;
                gpu.matmul_bwd(gpu.ctx, dxf, dwf, dbf, dyd, xd, M, &mf, acc);
                gpu.matmul_bwd(gpu.ctx, dxb, dwb, dbb, dyd, xd, M, &mb, acc);
                std::vector<float> a = down(gpu, dxf, x.size()), b = down(gpu, dxb, x.size());
                if (grads) {
                    for (auto &v : {down(gpu, dwf, zw.size()), down(gpu, dbf, zb.size())}) a.insert(a.end(), v.begin(), v.end());
                    for (auto &v : {down(gpu, dwb, zw.size()), down(gpu, dbb, zb.size())}) b.insert(b.end(), v.begin(), v.end());
                }
                check("bf16 base matmul_bwd = F32 weight (bits differ)", memcmp(a.data(), b.data(), a.size() * 4) ? 1.0 : 0.0,
                      0.0, "M %lld N %lld K %lld acc %d grads %d", (long long)M, (long long)N, (long long)K, acc, grads);
                std::vector<float> dxc = dx0;
                cpu.matmul_bwd(cpu.ctx, dxc.data(), nullptr, nullptr, dy.data(), x.data(), M, &mh, acc);
                check("bf16 base matmul_bwd dx vs CPU f32", rel(std::vector<float>(b.begin(), b.begin() + (long)x.size()), dxc),
                      1e-2, "M %lld N %lld K %lld", (long long)M, (long long)N, (long long)K);
            }
    }
    lmc_backend_cuda_set_train_bf16(&gpu, false);
}

/* The bf16 embedding of an untied head in pinned host memory (ends 3,
 * gathered in place by the embed kernel): the step of the device-resident
 * one (le, ge, we; device bytes de) bit for bit, the device bytes less the
 * embedding's V x C bf16, which the host holds; a tied head keeps it on
 * the device (nothing moves). */
static void host_emb_case(const char *what, const char *model, const std::string &dir, enum lmc_qlora_kind kind,
                          qlora_batch &b, int64_t B, int64_t T, double le, const std::vector<float> &ge,
                          const std::vector<float> &we, size_t de, const qlora_info &ie) {
    double lh;
    std::vector<float> gh, wh;
    size_t dh, ch;
    qlora_info ih;
    if (!qlora_step(&gpu, dir, kind, b, B, T, lh, gh, wh, dh, ch, 3, &ih)) return;
    int64_t diff = 0;
    for (size_t i = 0; i < ge.size() && i < gh.size(); i++) diff += memcmp(&ge[i], &gh[i], 4) != 0;
    for (size_t i = 0; i < we.size() && i < wh.size(); i++) diff += memcmp(&we[i], &wh[i], 4) != 0;
    std::string p = std::string(what) + " + host embedding: ";
    check(p + "loss bits vs device embedding", memcmp(&le, &lh, sizeof le) ? 1.0 : 0.0, 0.0, "%s", model);
    check(p + "gradients and adapter differing", (double)diff + (ge.size() != gh.size()), 0.0, "%s", model);
    lmc_config cfg;
    lmc_err err;
    bool untied = !lmc_config_load(&cfg, dir.c_str(), &err) && !cfg.tie_word_embeddings;
    size_t want = untied ? (size_t)(cfg.vocab_size * cfg.hidden_size) * 2 : 0;
    bool ok = ih.host == want && de - dh == want && ih.emb_off_dev == untied && !ie.emb_off_dev && ih.emb == LMC_DTYPE_BF16;
    check(p + "bytes moved from the device to the host", ok ? 0.0 : 1.0, 0.0, "%s: host %zu, device %zu -> %zu, want %zu",
          model, ih.host, de, dh, want);
    printf("  %s %s + host embedding: loss and %zu gradient/adapter values = device embedding (%lld differ); "
           "%zu B in host memory\n", model, what, ge.size() + we.size(), (long long)diff, ih.host);
}

/* LoRA's bf16 base (LMC_QLORA_BF16): in the bf16 mode the frozen linears
 * kept as bf16 give the step of the f32 base, whose weights the GEMMs
 * round to bf16 the same way (cuBLASLt operands; matmul_bwd's dx takes the
 * BF16 weight as stored): loss, every lora_A/B gradient and the adapter
 * after AdamW equal; the base's device bytes are its bf16 form's. */
static void bf16_base_models() {
    for (const char *model : {"llama-tiny", "qwen2-tiny", "gpt2-tiny"}) {
        const std::string dir = std::string(fixtures()) + "/" + model;
        const int64_t B = 3, T = 23; /* 69 rows: the GEMM path (more than GEMV_MAX_M) */
        qlora_batch b;
        b.in.resize((size_t)(B * T)), b.tg.resize((size_t)(B * T));
        for (auto &i : b.in) i = irand(512);
        for (size_t i = 0; i < b.tg.size(); i++) b.tg[i] = i % 5 == 1 ? -1 : irand(512);
        double lf, lb;
        std::vector<float> gf, wf, gb, wb;
        size_t d0, c0, db, cb;
        lmc_backend_cuda_set_train_bf16(&gpu, true);
        if (qlora_step(&gpu, dir, (enum lmc_qlora_kind)0, b, B, T, lf, gf, wf, d0, c0) &&
            qlora_step(&gpu, dir, LMC_QLORA_BF16, b, B, T, lb, gb, wb, db, cb, 0)) {
            /* the bench's LoRA (bf16 base) without held operands: loss, gradients, adapter bit for bit */
            step_counts c1 = last_step;
            struct lmc_backend nh = gpu_nohold();
            double l0;
            std::vector<float> g0, w0;
            size_t d1, h1;
            if (qlora_step(&nh, dir, LMC_QLORA_BF16, b, B, T, l0, g0, w0, d1, h1, 0)) {
                std::vector<float> a1(gb), a0(g0);
                a1.insert(a1.end(), wb.begin(), wb.end()), a0.insert(a0.end(), w0.begin(), w0.end());
                hold_ab("lora bf16 base step ", model, lb, a1, c1, l0, a0, last_step);
            }
            double el = fabs(lb - lf) / fabs(lf), eg = rel(gb, gf), ew = rel(wb, wf);
            check("bf16 base step loss", el, 1e-6, "%s", model);
            check("bf16 base step lora grads", eg, 1e-5, "%s", model);
            check("bf16 base step adapter after AdamW", ew, 1e-6, "%s", model);
            check("bf16 base device bytes (= its bf16 form, none for the f32 base)", db > 0 && db == cb && d0 == 0 ? 0.0 : 1.0,
                  0.0, "%s: %zu device, %zu form, %zu f32 base", model, db, cb, d0);
            printf("  %s bf16 base: loss %.9f vs f32 base %.9f (%.2e), grads rel %.2e, adapter %.2e; base %zu B "
                   "on the device\n", model, lb, lf, el, eg, ew, db);
        }
        /* the embedding and head bf16 too (lmc_qlora_load's default): the
         * step of the f32 base whose embedding holds the bf16-rounded
         * values (the head is the bf16 mode's operand either way); the
         * arena loses their floats, the device bytes gain their bf16 */
        double lr, le;
        std::vector<float> gr, wr, ge, we;
        size_t dr, cr, de, ce, dl, cl;
        qlora_info ir, ie, il;
        if (qlora_step(&gpu, dir, (enum lmc_qlora_kind)0, b, B, T, lr, gr, wr, dr, cr, 2, &ir) &&
            qlora_step(&gpu, dir, LMC_QLORA_BF16, b, B, T, le, ge, we, de, ce, 1, &ie) &&
            qlora_step(&gpu, dir, LMC_QLORA_BF16, b, B, T, lb, gb, wb, dl, cl, 0, &il)) {
            double el = fabs(le - lr) / fabs(lr), eg = rel(ge, gr), ew = rel(we, wr), ef = fabs(le - lf) / fabs(lf);
            check("bf16 embedding/head step loss (vs f32 base, bf16-rounded embedding)", el, 1e-6, "%s", model);
            check("bf16 embedding/head step lora grads", eg, 1e-5, "%s", model);
            check("bf16 embedding/head step adapter after AdamW", ew, 1e-6, "%s", model);
            check("bf16 embedding/head step loss vs the f32 embedding (bf16 bound)", ef, 2e-3, "%s", model);
            int64_t VC = il.numel - ie.numel; /* the floats the ends took in the arena (each padded to 16) */
            bool bound = ir.emb == LMC_DTYPE_F32 && il.head == LMC_DTYPE_F32 && ie.head == LMC_DTYPE_BF16 &&
                         ie.emb == LMC_DTYPE_BF16 && il.emb == LMC_DTYPE_F32;
            check("bf16 embedding/head: bound BF16, linears-only run keeps them f32", bound ? 0.0 : 1.0, 0.0, "%s", model);
            int64_t gain = (int64_t)de - (int64_t)dl, pad = 2 * VC - gain;
            check("bf16 embedding/head: arena floats moved to bf16 device bytes",
                  VC > 0 && pad >= 0 && pad < 64 && ce == de ? 0.0 : 1.0, 0.0,
                  "%s: %lld floats, device %zu vs %zu", model, (long long)VC, de, dl);
            printf("  %s bf16 embedding/head: loss %.9f vs rounded-embedding f32 base %.9f (%.2e; f32 embedding %.2e), "
                   "grads rel %.2e, adapter %.2e; arena -%lld floats, device +%zu B\n", model, le, lr, el, ef, eg, ew,
                   (long long)VC, de - dl);
            host_emb_case("lora bf16 base", model, dir, LMC_QLORA_BF16, b, B, T, le, ge, we, de, ie);
        }
        lmc_backend_cuda_set_train_bf16(&gpu, false);
    }
}

/* QLoRA (NF4 linears) with the bf16 embedding/head in the bf16 mode: the
 * step of the same NF4 base whose f32 embedding holds bf16-rounded values
 * (loss, gradients, adapter equal); the ends' bytes join the device's. */
static void qlora_ends_models() {
    for (const char *model : {"llama-tiny", "gpt2-tiny"}) {
        const std::string dir = std::string(fixtures()) + "/" + model;
        const int64_t B = 2, T = 37;
        qlora_batch b;
        b.in.resize((size_t)(B * T)), b.tg.resize((size_t)(B * T));
        for (auto &i : b.in) i = irand(512);
        for (size_t i = 0; i < b.tg.size(); i++) b.tg[i] = i % 6 == 2 ? -1 : irand(512);
        double lr, le;
        std::vector<float> gr, wr, ge, we;
        size_t dr, cr, de, ce;
        qlora_info ir, ie;
        lmc_backend_cuda_set_train_bf16(&gpu, true);
        if (qlora_step(&gpu, dir, LMC_QLORA_NF4, b, B, T, lr, gr, wr, dr, cr, 2, &ir) &&
            qlora_step(&gpu, dir, LMC_QLORA_NF4, b, B, T, le, ge, we, de, ce, 1, &ie)) {
            double el = fabs(le - lr) / fabs(lr), eg = rel(ge, gr), ew = rel(we, wr);
            check("qlora nf4 + bf16 embedding/head step loss (vs rounded f32 embedding)", el, 1e-6, "%s", model);
            check("qlora nf4 + bf16 embedding/head step lora grads", eg, 1e-5, "%s", model);
            check("qlora nf4 + bf16 embedding/head step adapter after AdamW", ew, 1e-6, "%s", model);
            int64_t VC = ir.numel - ie.numel, pad = 2 * VC - ((int64_t)de - (int64_t)dr);
            bool ok = ie.emb == LMC_DTYPE_BF16 && ie.head == LMC_DTYPE_BF16 && ir.emb == LMC_DTYPE_F32 && VC > 0 &&
                      pad >= 0 && pad < 64;
            check("qlora nf4 + bf16 embedding/head: bound BF16, arena floats moved to device bytes", ok ? 0.0 : 1.0, 0.0,
                  "%s: %lld floats, device %zu vs %zu", model, (long long)VC, de, dr);
            printf("  %s qlora nf4 + bf16 embedding/head: loss %.9f vs %.9f (%.2e), grads rel %.2e, adapter %.2e\n",
                   model, le, lr, el, eg, ew);
            host_emb_case("qlora nf4", model, dir, LMC_QLORA_NF4, b, B, T, le, ge, we, de, ie);
        }
        lmc_backend_cuda_set_train_bf16(&gpu, false);
    }
}

static void test_qlora() {
    emu_strict_device = true;
    qlora_ops();
    qlora_models();
    bf16_base_bwd_ops();
    bf16_base_models();
    qlora_ends_models();
    emu_strict_device = false;
}
