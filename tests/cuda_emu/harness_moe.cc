/* harness_moe.cc — included by harness.cc: the mixture-of-experts routing
 * ops (moe_route.cu) and clamp.cu vs their CPU twins (ops/cpu/moe_route.c,
 * clamp.c) on random odd sizes with tied router rows, experts that get no
 * token, k = E, more choices than one block's chunk; and whole MoE
 * fixtures through the real CUDA table (test_moe_e2e): forward, training
 * step, and the server's paged batch step. */

static int32_t *dup_dev_i(const struct lmc_backend &be, const std::vector<int32_t> &v) {
    void *p = be.alloc(be.ctx, v.size() * 4 + 4);
    if (!v.empty()) be.upload(be.ctx, p, v.data(), v.size() * 4);
    return (int32_t *)p;
}
static std::vector<int32_t> down_i(const struct lmc_backend &be, const int32_t *p, size_t n) {
    std::vector<int32_t> v(n);
    if (n) be.download(be.ctx, v.data(), p, n * 4);
    return v;
}

/* one routing case: n tokens, E experts, top k; norm: norm_topk_prob;
 * shared: a gated shared expert in the combine; aux: the load-balancing
 * gradient in the backward */
static void moe_route_case(int64_t n, int64_t E, int64_t k, int norm, bool shared, bool aux, int64_t C) {
    const int64_t nk = n * k;
    char tag[96];
    snprintf(tag, sizeof tag, "n %lld E %lld k %lld norm %d shared %d aux %d", (long long)n, (long long)E,
             (long long)k, norm, (int)shared, (int)aux);
    /* logits with ties: every 5th row flat, every 5th + 1 row with its two best equal */
    std::vector<float> logits = rv((size_t)std::max<int64_t>(1, n * E), 2.0f); /* not empty: one alloc */
    for (int64_t t = 0; t < n; t++) {
        float *p = &logits[(size_t)(t * E)];
        if (t % 5 == 0)
            for (int64_t e = 0; e < E; e++) p[e] = 0.25f;
        if (t % 5 == 1 && E > 2) p[E - 1] = p[1] = 3.0f;
    }
    /* CPU */
    std::vector<float> pc = logits, wc(nk);
    std::vector<int32_t> sc(nk), permc(nk), rowc(nk);
    std::vector<int64_t> offc(E + 1), offch(E + 1, -1);
    struct lmc_moe_routing rc = {pc.data(), sc.data(), wc.data(), permc.data(), rowc.data(), offc.data()};
    cpu.moe_route(cpu.ctx, &rc, offch.data(), n, E, k, norm);
    /* GPU */
    float *pg = dup_dev(gpu, logits), *wg = dev_nan(gpu, (size_t)nk + 1);
    int32_t *sg = dup_dev_i(gpu, std::vector<int32_t>(nk, -7)), *permg = dup_dev_i(gpu, std::vector<int32_t>(nk, -7)),
            *rowg = dup_dev_i(gpu, std::vector<int32_t>(nk, -7));
    int64_t *offg = (int64_t *)gpu.alloc(gpu.ctx, (size_t)(E + 1) * 8);
    std::vector<int64_t> offgh(E + 1, -1);
    struct lmc_moe_routing rg = {pg, sg, wg, permg, rowg, offg};
    gpu.moe_route(gpu.ctx, &rg, offgh.data(), n, E, k, norm);
    check("moe_route probs", n ? rel(down(gpu, pg, (size_t)(n * E)), pc) : 0, 1e-6, "%s", tag);
    check("moe_route weights", n ? rel(down(gpu, wg, (size_t)nk), wc) : 0, 1e-6, "%s", tag);
    check("moe_route experts (exact)", (double)(down_i(gpu, sg, (size_t)nk) != sc), 0, "%s", tag);
    check("moe_route perm / row (exact)",
          (double)(down_i(gpu, permg, (size_t)nk) != permc || down_i(gpu, rowg, (size_t)nk) != rowc), 0, "%s", tag);
    std::vector<int64_t> offgd(E + 1);
    gpu.download(gpu.ctx, offgd.data(), offg, (size_t)(E + 1) * 8);
    check("moe_route offsets (exact)", (double)(offgd != offc || offgh != offc || offch != offc), 0, "%s", tag);
    if (n == 0) return;
    /* the tie rules: the flat row picks experts 0..k-1, the tied pair picks 1 then E-1 */
    if (n > 1 && E > 2 && k >= 2)
        check("moe_route ties to the lower expert", (double)(sc[0] != 0 || sc[1] != 1 || sc[(size_t)k] != 1 ||
                                                             sc[(size_t)k + 1] != E - 1), 0, "%s", tag);
    /* statistics */
    std::vector<double> cc(E), psc(E), cg(E, -1), psg(E, -1);
    cpu.moe_stats(cpu.ctx, cc.data(), psc.data(), sc.data(), pc.data(), n, k, E);
    gpu.moe_stats(gpu.ctx, cg.data(), psg.data(), sg, pg, n, k, E);
    double es = 0;
    for (int64_t e = 0; e < E; e++) es = std::max(es, fabs(psg[e] - psc[e]) / std::max(1.0, fabs(psc[e])));
    check("moe_stats counts (exact)", (double)(cg != cc), 0, "%s", tag);
    check("moe_stats probability sums", es, 1e-9, "%s", tag);
    /* gather and its backward */
    std::vector<float> h = rv((size_t)(n * C)), xsc = nans((size_t)(nk * C));
    float *hg = dup_dev(gpu, h), *xsg = dev_nan(gpu, (size_t)(nk * C));
    cpu.moe_gather(cpu.ctx, xsc.data(), h.data(), permc.data(), nk, k, C);
    gpu.moe_gather(gpu.ctx, xsg, hg, permg, nk, k, C);
    check("moe_gather", rel(down(gpu, xsg, (size_t)(nk * C)), xsc), 0, "%s", tag);
    std::vector<float> dxs = rv((size_t)(nk * C)), dhc = nans((size_t)(n * C));
    float *dxsg = dup_dev(gpu, dxs), *dhg = dev_nan(gpu, (size_t)(n * C));
    cpu.moe_gather_bwd(cpu.ctx, dhc.data(), dxs.data(), rowc.data(), n, k, C);
    gpu.moe_gather_bwd(gpu.ctx, dhg, dxsg, rowg, n, k, C);
    check("moe_gather_bwd", rel(down(gpu, dhg, (size_t)(n * C)), dhc), 1e-6, "%s", tag);
    /* combine (y aliasing res on the GPU) and its backward */
    std::vector<float> o = rv((size_t)(nk * C)), res = rv((size_t)(n * C)), so = rv((size_t)(n * C)),
                       sl = rv((size_t)n, 3.0f), yc = nans((size_t)(n * C));
    float *og = dup_dev(gpu, o), *yg = dup_dev(gpu, res), *sog = dup_dev(gpu, so), *slg = dup_dev(gpu, sl);
    cpu.moe_combine(cpu.ctx, yc.data(), res.data(), o.data(), wc.data(), rowc.data(), shared ? so.data() : nullptr,
                    sl.data(), n, k, C);
    gpu.moe_combine(gpu.ctx, yg, yg, og, wg, rowg, shared ? sog : nullptr, slg, n, k, C);
    check("moe_combine", rel(down(gpu, yg, (size_t)(n * C)), yc), 1e-6, "%s", tag);
    std::vector<float> dy = rv((size_t)(n * C)), doxc = nans((size_t)(nk * C)), dlc = nans((size_t)(n * E)),
                       dsoc = nans((size_t)(n * C)), dslc = nans((size_t)n);
    std::vector<double> ax(E);
    for (auto &a : ax) a = frand() * 0.3;
    float *dyg = dup_dev(gpu, dy), *doxg = dev_nan(gpu, (size_t)(nk * C)), *dlg = dev_nan(gpu, (size_t)(n * E)),
          *dsog = dev_nan(gpu, (size_t)(n * C)), *dslg = dev_nan(gpu, (size_t)n);
    cpu.moe_combine_bwd(cpu.ctx, doxc.data(), dlc.data(), dsoc.data(), dslc.data(), dy.data(), o.data(), &rc,
                        shared ? so.data() : nullptr, sl.data(), aux ? ax.data() : nullptr, n, E, k, C, norm);
    gpu.moe_combine_bwd(gpu.ctx, doxg, dlg, dsog, dslg, dyg, og, &rg, shared ? sog : nullptr, slg,
                        aux ? ax.data() : nullptr, n, E, k, C, norm);
    check("moe_combine_bwd d(expert out)", rel(down(gpu, doxg, (size_t)(nk * C)), doxc), 1e-6, "%s", tag);
    check("moe_combine_bwd d(router logits)", rel(down(gpu, dlg, (size_t)(n * E)), dlc), 1e-5, "%s", tag);
    if (shared) {
        check("moe_combine_bwd d(shared out)", rel(down(gpu, dsog, (size_t)(n * C)), dsoc), 1e-6, "%s", tag);
        check("moe_combine_bwd d(shared gate)", rel(down(gpu, dslg, (size_t)n), dslc), 1e-5, "%s", tag);
    }
    for (void *p : {(void *)pg, (void *)wg, (void *)sg, (void *)permg, (void *)rowg, (void *)offg, (void *)hg,
                    (void *)xsg, (void *)dxsg, (void *)dhg, (void *)og, (void *)yg, (void *)sog, (void *)slg,
                    (void *)dyg, (void *)doxg, (void *)dlg, (void *)dsog, (void *)dslg})
        gpu.free(gpu.ctx, p);
}

static void test_clamp() {
    for (int64_t n : {1, 7, 1001}) {
        const float c = 0.7f;
        std::vector<float> x = rv((size_t)n, 2.0f), dy = rv((size_t)n);
        if (n > 3) x[1] = c, x[2] = -c; /* the bounds pass the gradient */
        std::vector<float> yc = nans((size_t)n), dxc = nans((size_t)n);
        cpu.clamp(cpu.ctx, yc.data(), x.data(), n, c);
        cpu.clamp_bwd(cpu.ctx, dxc.data(), dy.data(), x.data(), n, c);
        float *xg = dup_dev(gpu, x), *yg = dup_dev(gpu, x), *dyg = dup_dev(gpu, dy);
        gpu.clamp(gpu.ctx, yg, yg, n, c); /* in place */
        gpu.clamp_bwd(gpu.ctx, dyg, dyg, xg, n, c);
        check("clamp (exact)", rel(down(gpu, yg, (size_t)n), yc), 0, "n %lld", (long long)n);
        check("clamp_bwd (exact)", rel(down(gpu, dyg, (size_t)n), dxc), 0, "n %lld", (long long)n);
        gpu.free(gpu.ctx, xg), gpu.free(gpu.ctx, yg), gpu.free(gpu.ctx, dyg);
    }
}

static void test_moe_route() {
    moe_route_case(37, 7, 3, 1, true, true, 13);   /* odd sizes, every feature */
    moe_route_case(9, 4, 2, 0, false, false, 5);   /* Mixtral-like, no renormalisation */
    moe_route_case(130, 60, 4, 1, false, true, 3); /* 520 choices: several chunks; most experts idle */
    moe_route_case(41, 8, 8, 0, true, false, 7);   /* k = E: every expert every token */
    moe_route_case(3, 5, 1, 1, false, false, 2);   /* top-1 */
    moe_route_case(0, 6, 2, 1, false, false, 4);   /* no token (an expert-parallel rank) */
    test_clamp();
}

/* The server's step (lmc_model_forward_batch over a paged pool) on a MoE
 * fixture, fp32: three sequences prefilled in one batch (scrambled block
 * tables), then one decode token each; every row's logits vs the CPU. */
static void moe_paged(const char *mn) {
    lmc_err err;
    std::string dir = std::string(fixtures()) + "/" + mn;
    const int NS = 3, L = 9, BS = 8, MB = 2;
    std::vector<int32_t> ids(NS * L), seq(NS * L), pos(NS * L), rows(NS * L), bt(NS * MB);
    for (int q = 0, t = 0; q < NS; q++)
        for (int p = 0; p < L; p++, t++) ids[(size_t)t] = irand(512), seq[(size_t)t] = q, pos[(size_t)t] = p, rows[(size_t)t] = t;
    for (int i = 0; i < NS * MB; i++) bt[(size_t)i] = (i * 5 + 1) % (NS * MB + 1);
    std::vector<int32_t> ids2(NS), seq2(NS), pos2(NS, L), rows2(NS);
    for (int q = 0; q < NS; q++) ids2[(size_t)q] = irand(512), seq2[(size_t)q] = q, rows2[(size_t)q] = q;
    std::vector<float> out[2], dec[2];
    const struct lmc_backend *bes[2] = {&cpu, &gpu};
    lmc_backend_cuda_set_fp32_attention(&gpu, true);
    for (int k = 0; k < 2; k++) {
        struct lmc_model m;
        struct lmc_model_opts mo = {LMC_WDTYPE_F32, bes[k]};
        if (lmc_model_load(&m, dir.c_str(), &mo, &err)) { printf("FAIL %s\n", err.msg), n_fail++; return; }
        const int64_t V = m.cfg.vocab_size;
        struct lmc_kv_pool pool;
        struct lmc_batch_acts ba;
        out[k].assign((size_t)(NS * L * V), NAN), dec[k].assign((size_t)(NS * V), NAN);
        struct lmc_batch b = {NS * L, ids.data(), seq.data(), pos.data(), NS, bt.data(), MB, rows.data(), NS * L, NULL};
        struct lmc_batch b2 = {NS, ids2.data(), seq2.data(), pos2.data(), NS, bt.data(), MB, rows2.data(), NS, NULL};
        if (lmc_kv_pool_init(&pool, &m, bes[k], NS * MB + 1, BS, &err) ||
            lmc_batch_acts_init(&ba, &m, bes[k], NS * L, NS, MB, NS * L, &err) ||
            lmc_model_forward_batch(&m, bes[k], &ba, &pool, &b, out[k].data(), &err) ||
            lmc_model_forward_batch(&m, bes[k], &ba, &pool, &b2, dec[k].data(), &err))
            printf("FAIL moe paged forward %s\n", err.msg), n_fail++;
        lmc_batch_acts_free(&ba);
        lmc_kv_pool_free(&pool);
        lmc_model_free(&m);
    }
    lmc_backend_cuda_set_fp32_attention(&gpu, false);
    double e1 = rel(out[1], out[0]), e2 = rel(dec[1], dec[0]);
    printf("  %s paged batch fp32: prefill logits %.2e, decode logits %.2e\n", mn, e1, e2);
    check("moe paged batch prefill logits", e1, 1e-4, "%s", mn);
    check("moe paged batch decode logits", e2, 1e-4, "%s", mn);
}

/* Quantized experts on the GPU: `lmc quantize` (the build's binary) writes
 * a MoE folder whose expert projections are quantized (routers stay
 * float), the loader uploads each expert through qweight_upload and the
 * experts run through lmc_linear one by one; logits vs the CPU backend on
 * the folder dequantized by `lmc convert --dtype f32` (fp32 attention, a
 * 12-token prompt and a decode step: the GEMV path, test_qmm_e2e's
 * tolerance). */
static void moe_quant() {
    qfolder_cases("moe quantized experts",
                  {{"mixtral-tiny", "--method rtn --bits 8 --group -1 --asym"},
                   {"qwen2moe-tiny", "--method rtn --bits 4 --group 32"}},
                  [](const qfolder_case &c, const std::string &q, const std::string &d) {
                      std::vector<int32_t> ids(12);
                      for (auto &i : ids) i = irand(512);
                      double e1, e2;
                      if (!qfolder_logits(q, d, ids, e1, e2)) return;
                      printf("  %s %s: prompt logits %.2e, decode logits %.2e\n", c.model, c.args, e1, e2);
                      check("moe quantized experts prompt logits", e1, 3e-3, "%s %s", c.model, c.args);
                      check("moe quantized experts decode logits", e2, 3e-3, "%s %s", c.model, c.args);
                  });
}

/* LoRA on the experts in training (lmc finetune --lora-targets w1,w2,w3 on
 * Mixtral): adapters of rank 3 on every expert projection and q_proj over
 * the frozen mixtral-tiny (B random, the same on both backends), one
 * training step, fp32: loss and every adapter gradient vs the CPU. The
 * experts with adapters leave the grouped GEMM for lmc_linear per expert. */
static bool moe_lora_step(const struct lmc_backend *be, const std::vector<int32_t> &in, const std::vector<int32_t> &tg,
                          double &loss, std::vector<float> &g) {
    lmc_err err;
    std::string dir = std::string(fixtures()) + "/mixtral-tiny";
    struct lmc_tmodel tm;
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    struct lmc_lora_config lc = {};
    lc.r = 3;
    lc.alpha = 6;
    if (lmc_tmodel_load(&tm, dir.c_str(), be, &err)) { printf("FAIL moe lora tmodel %s\n", err.msg), n_fail++; return false; }
    if (lmc_lora_parse_targets(&lc, "w1,w2,w3,q_proj", &err) || lmc_lora_create(&lo, &lc, &tm.cfg, 5, &err)) {
        printf("FAIL moe lora create %s\n", err.msg), n_fail++;
        lmc_tmodel_free(&tm);
        return false;
    }
    uint64_t sd = 11;
    for (int i = 0; i < lo.n_mods; i++)
        for (int64_t j = 0; j < lo.mods[i].out * 3; j++)
            lo.mods[i].b[j] = 0.1f * (float)((double)(lmc_rng_next(&sd) >> 11) / 9007199254740992.0 - 0.5);
    bool ok = !lmc_lora_train_attach(&lt, &tm, &lo, &err), attached = ok;
    struct lmc_tacts a;
    int64_t count = 0;
    if (ok && !(ok = !lmc_tacts_init(&a, &tm, be, 2, (int64_t)in.size() / 2, false, &err)))
        printf("FAIL moe lora tacts %s\n", err.msg), n_fail++;
    else if (ok) {
        lmc_tmodel_zero_grad(&tm);
        ok = !lmc_tmodel_step(&tm, be, &a, in.data(), tg.data(), true, 1.0f / (float)in.size(), &loss, &count, &err);
        if (!ok) printf("FAIL moe lora step on %s: %s\n", be->name, err.msg), n_fail++;
        lmc_tacts_free(&a);
    } else {
        printf("FAIL moe lora attach %s\n", err.msg), n_fail++;
    }
    if (ok) {
        int64_t off = tm.trainable_off;
        g.resize((size_t)(tm.numel - off));
        be->download(be->ctx, g.data(), tm.g + (off - tm.g_off), g.size() * sizeof(float));
        if (g.empty()) printf("FAIL moe lora: no trainable adapter parameters\n"), n_fail++, ok = false;
    }
    lmc_tmodel_free(&tm);
    if (attached) lmc_lora_train_free(&lt);
    lmc_lora_free(&lo);
    return ok;
}

static void moe_lora() {
    emu_strict_device = true;
    const int64_t T = 12;
    std::vector<int32_t> in(2 * T), tg(2 * T);
    for (auto &i : in) i = irand(512);
    for (size_t i = 0; i < tg.size(); i++) tg[i] = i % 5 == 2 ? -1 : irand(512);
    double lc = 0, lg = 0;
    std::vector<float> gc, gg;
    if (moe_lora_step(&cpu, in, tg, lc, gc) && moe_lora_step(&gpu, in, tg, lg, gg)) {
        double el = fabs(lg - lc) / fabs(lc), eg = rel(gg, gc);
        printf("  mixtral-tiny LoRA on experts + q_proj, train fp32: loss %.6f vs %.6f (%.2e), adapter grads %.2e (%zu)\n",
               lg, lc, el, eg, gg.size());
        check("moe lora train fp32 loss", el, 1e-5, "mixtral-tiny");
        check("moe lora train fp32 adapter grads", eg, 1e-4, "mixtral-tiny");
    }
    emu_strict_device = false;
}

/* the MoE fixtures through the real table (see e2e_models), the
 * load-balancing loss on (coefficient 0.05); fp32 holds the dense
 * models' tolerances, bf16 training per-tensor gradient cosines are
 * looser (routing flips, e2e_models says why) with a whole-gradient one */
static void test_moe_e2e() {
    e2e_models({"mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny", "olmoe-tiny", "olmoe-clip-tiny"}, 0.05);
    emu_strict_device = true;
    moe_paged("qwen2moe-tiny");
    moe_paged("olmoe-clip-tiny");
    emu_strict_device = false;
    moe_lora();
    moe_quant();
}
