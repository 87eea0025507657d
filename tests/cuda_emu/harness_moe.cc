/* harness_moe.cc — included by harness.cc: the mixture-of-experts routing
 * ops (moe_route.cu) and clamp.cu vs their CPU twins (ops/cpu/moe_route.c,
 * clamp.c) on random odd sizes with tied router rows, experts that get no
 * token, k = E, more choices than one block's chunk; and whole MoE
 * fixtures through the real CUDA table (test_moe_e2e). */

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

/* the MoE fixtures through the real table (see e2e_models), the
 * load-balancing loss on (coefficient 0.05); fp32 holds the dense
 * models' tolerances, bf16 training per-tensor gradient cosines are
 * looser (routing flips, e2e_models says why) with a whole-gradient one */
static void test_moe_e2e() {
    e2e_models({"mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny", "olmoe-tiny", "olmoe-clip-tiny"}, 0.05);
}
