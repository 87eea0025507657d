/* harness_ring.cc — section ring_attn: attn_block.cu (ring attention's block
 * forward, log-sum-exp merge and backward; context parallelism) against the
 * CPU twin (ops/cpu/attn_block.c) on odd sizes, GQA, head dims past one
 * 128-thread tile, blocks past one 128-key tile, causal and non-causal,
 * with zigzag positions (rank r of W holds chunks r and 2W-1-r of 2W):
 * every (query slice, key block) pair's output and lse, each rank's merged
 * output and lse over the ring order, and the accumulated dq / dk / dv;
 * causal: the merged result and gradients against the CPU's whole-sequence
 * attention_train / attention_bwd; non-causal: against one block of every
 * key; and the ring itself on the CUDA table (lmc_ring_attn_fwd_be /
 * _bwd_be on one rank: the device staging) against the CPU's whole-sequence
 * attention. Included by harness.cc. */
extern "C" {
#include "dist/ring_attn.h"
}

/* chunks r and 2W-1-r of 2W (chunk c: [c T / 2W, (c+1) T / 2W)) */
static std::vector<int32_t> ring_zigzag(int64_t T, int r, int W) {
    std::vector<int32_t> p;
    int ch[2] = {r, 2 * W - 1 - r};
    for (int c : ch)
        for (int64_t t = c * T / (2 * W); t < (c + 1) * T / (2 * W); t++) p.push_back((int32_t)t);
    return p;
}

/* rel over the finite entries; -inf must be -inf in both */
static double rel_lse(const std::vector<float> &a, const std::vector<float> &b) {
    std::vector<float> x(a), y(b);
    for (size_t i = 0; i < b.size(); i++) {
        if ((a[i] == -INFINITY) != (b[i] == -INFINITY)) return INFINITY;
        if (b[i] == -INFINITY) x[i] = y[i] = 0;
    }
    return rel(x, y);
}

static std::vector<float> ring_rows(const std::vector<float> &full, const std::vector<int32_t> &pos, int64_t w) {
    std::vector<float> o(pos.size() * w);
    for (size_t i = 0; i < pos.size(); i++)
        std::copy(full.begin() + pos[i] * w, full.begin() + (pos[i] + 1) * w, o.begin() + i * w);
    return o;
}

/* lmc_ring_attn_fwd_be / _bwd_be through the real CUDA table on a one-rank communicator */
static void test_ring_be() {
    struct lmc_comm one;
    lmc_comm_single_init(&one);
    struct { int64_t T, H, KV, hd; } shapes[] = {{7, 2, 1, 17}, {150, 4, 2, 64}, {1, 2, 2, 16}};
    for (auto &s : shapes) {
        const int64_t qd = s.H * s.hd, kvd = s.KV * s.hd, T = s.T;
        const float scale = 1.0f / sqrtf((float)s.hd);
        auto q = rv(T * qd, 2), k = rv(T * kvd), v = rv(T * kvd), dout = rv(T * qd);
        std::vector<float> ro(T * qd), rl(T * s.H), rdq(T * qd), rdk(T * kvd), rdv(T * kvd);
        cpu.attention_train(cpu.ctx, ro.data(), rl.data(), q.data(), k.data(), v.data(), 1, T, s.H, s.KV, s.hd, scale, 0);
        cpu.attention_bwd(cpu.ctx, rdq.data(), rdk.data(), rdv.data(), dout.data(), ro.data(), rl.data(), q.data(),
                          k.data(), v.data(), 1, T, s.H, s.KV, s.hd, scale, 0);
        auto dev = [&](const std::vector<float> &h) {
            float *d = (float *)gpu.alloc(gpu.ctx, h.size() * sizeof(float));
            gpu.upload(gpu.ctx, d, h.data(), h.size() * sizeof(float));
            return d;
        };
        float *qd_ = dev(q), *kd = dev(k), *vd = dev(v), *dd = dev(dout), *od = dev(nans(T * qd)), *ld = dev(nans(T * s.H));
        float *dqd = dev(nans(T * qd)), *dkd = dev(nans(T * kvd)), *dvd = dev(nans(T * kvd));
        struct lmc_ring_attn_shape sh = {T, s.H, s.KV, s.hd, scale};
        lmc_err err = {};
        bool ok = lmc_ring_attn_fwd_be(&gpu, &one, &sh, od, ld, qd_, kd, vd, &err) == LMC_OK &&
                  lmc_ring_attn_bwd_be(&gpu, &one, &sh, dqd, dkd, dvd, dd, od, ld, qd_, kd, vd, &err) == LMC_OK;
        if (!ok) printf("  ring on the CUDA table: %s\n", err.msg);
        std::vector<float> o(T * qd), l(T * s.H), dq(T * qd), dk(T * kvd), dv(T * kvd);
        gpu.download(gpu.ctx, o.data(), od, o.size() * 4), gpu.download(gpu.ctx, l.data(), ld, l.size() * 4);
        gpu.download(gpu.ctx, dq.data(), dqd, dq.size() * 4), gpu.download(gpu.ctx, dk.data(), dkd, dk.size() * 4);
        gpu.download(gpu.ctx, dv.data(), dvd, dv.size() * 4);
        double e = ok ? std::max(std::max(rel(o, ro), rel(l, rl)), std::max(rel(dq, rdq), std::max(rel(dk, rdk), rel(dv, rdv))))
                      : INFINITY;
        printf("  ring on the CUDA table T=%ld H=%ld KV=%ld hd=%ld: max err %.2e\n", (long)T, (long)s.H, (long)s.KV,
               (long)s.hd, e);
        check("ring_attn ring (cuda table)", e, 1e-4, "T=%ld", (long)T);
        for (float *p : {qd_, kd, vd, dd, od, ld, dqd, dkd, dvd}) gpu.free(gpu.ctx, p);
    }
    one.free(&one);
}

static void test_ring_attn() {
    test_ring_be();
    struct { int64_t T, H, KV, hd; int W; } shapes[] = {
        {7, 2, 1, 17, 2}, {1, 2, 1, 16, 1}, {33, 3, 1, 40, 2}, {61, 4, 2, 64, 4},
        {45, 4, 4, 130, 2}, {301, 2, 1, 24, 2}, {19, 6, 3, 33, 3},
    };
    for (auto &s : shapes) {
        const int64_t qd = s.H * s.hd, kvd = s.KV * s.hd, T = s.T;
        const float scale = 1.0f / sqrtf((float)s.hd);
        auto q = rv(T * qd, 2), k = rv(T * kvd), v = rv(T * kvd), dout = rv(T * qd);
        std::vector<std::vector<int32_t>> pos(s.W);
        for (int r = 0; r < s.W; r++) pos[r] = ring_zigzag(T, r, s.W);
        for (int causal = 1; causal >= 0; causal--) {
            const char *cm = causal ? "causal" : "full";
            double e_ob = 0, e_lb = 0, e_out = 0, e_lse = 0, e_dq = 0, e_dk = 0, e_dv = 0, e_ref = 0, e_gref = 0;
            /* merged outputs and gradients, gathered back to whole-sequence rows */
            std::vector<float> og(T * qd), lg(T * s.H), dqg(T * qd), dkg(T * kvd, 0), dvg(T * kvd, 0);
            std::vector<float> dkc(T * kvd, 0), dvc(T * kvd, 0);
            std::vector<std::vector<float>> outs(s.W), lses(s.W);
            for (int r = 0; r < s.W; r++) {
                const int64_t n = (int64_t)pos[r].size();
                auto qr = ring_rows(q, pos[r], qd);
                std::vector<float> out(n * qd, 0), lse(n * s.H, -INFINITY), outc(out), lsec(lse);
                for (int st = 0; st < s.W; st++) { /* the ring order: own block first */
                    const int src = (r - st + s.W) % s.W;
                    const int64_t ns = (int64_t)pos[src].size();
                    auto kb = ring_rows(k, pos[src], kvd), vb = ring_rows(v, pos[src], kvd);
                    std::vector<float> obc(n * qd), lbc(n * s.H);
                    auto ob = nans(n * qd), lb = nans(n * s.H);
                    cpu.attn_block_fwd(cpu.ctx, obc.data(), lbc.data(), qr.data(), kb.data(), vb.data(), pos[r].data(),
                                       pos[src].data(), n, ns, s.H, s.KV, s.hd, scale, causal);
                    lmc_cuda_attn_block_fwd(cc, ob.data(), lb.data(), qr.data(), kb.data(), vb.data(), pos[r].data(),
                                            pos[src].data(), n, ns, s.H, s.KV, s.hd, scale, causal);
                    e_ob = std::max(e_ob, rel(ob, obc)), e_lb = std::max(e_lb, rel_lse(lb, lbc));
                    cpu.attn_block_merge(cpu.ctx, outc.data(), lsec.data(), obc.data(), lbc.data(), n, s.H, s.hd);
                    lmc_cuda_attn_block_merge(cc, out.data(), lse.data(), ob.data(), lb.data(), n, s.H, s.hd);
                }
                e_out = std::max(e_out, rel(out, outc)), e_lse = std::max(e_lse, rel_lse(lse, lsec));
                for (int64_t i = 0; i < n; i++) {
                    std::copy(out.begin() + i * qd, out.begin() + (i + 1) * qd, og.begin() + pos[r][i] * qd);
                    std::copy(lse.begin() + i * s.H, lse.begin() + (i + 1) * s.H, lg.begin() + pos[r][i] * s.H);
                }
                outs[r] = out, lses[r] = lse;
            }
            /* the backward with the merged lse: dq of rank r's queries, dk / dv of each block */
            for (int r = 0; r < s.W; r++) {
                const int64_t n = (int64_t)pos[r].size();
                auto qr = ring_rows(q, pos[r], qd), dr = ring_rows(dout, pos[r], qd);
                std::vector<float> dq(n * qd, 0), dqc(n * qd, 0);
                for (int st = 0; st < s.W; st++) {
                    const int src = (r - st + s.W) % s.W;
                    const int64_t ns = (int64_t)pos[src].size();
                    auto kb = ring_rows(k, pos[src], kvd), vb = ring_rows(v, pos[src], kvd);
                    std::vector<float> dk(ns * kvd, 0), dv(ns * kvd, 0), dkb(dk), dvb(dv);
                    cpu.attn_block_bwd(cpu.ctx, dqc.data(), dkb.data(), dvb.data(), dr.data(), outs[r].data(),
                                       lses[r].data(), qr.data(), kb.data(), vb.data(), pos[r].data(), pos[src].data(), n,
                                       ns, s.H, s.KV, s.hd, scale, causal);
                    lmc_cuda_attn_block_bwd(cc, dq.data(), dk.data(), dv.data(), dr.data(), outs[r].data(),
                                            lses[r].data(), qr.data(), kb.data(), vb.data(), pos[r].data(),
                                            pos[src].data(), n, ns, s.H, s.KV, s.hd, scale, causal);
                    for (int64_t j = 0; j < ns; j++)
                        for (int64_t e = 0; e < kvd; e++) {
                            dkg[pos[src][j] * kvd + e] += dk[j * kvd + e], dvg[pos[src][j] * kvd + e] += dv[j * kvd + e];
                            dkc[pos[src][j] * kvd + e] += dkb[j * kvd + e], dvc[pos[src][j] * kvd + e] += dvb[j * kvd + e];
                        }
                }
                e_dq = std::max(e_dq, rel(dq, dqc));
                for (int64_t i = 0; i < n; i++)
                    std::copy(dq.begin() + i * qd, dq.begin() + (i + 1) * qd, dqg.begin() + pos[r][i] * qd);
            }
            e_dk = rel(dkg, dkc), e_dv = rel(dvg, dvc);
            /* the whole sequence's attention */
            std::vector<float> ro(T * qd), rl(T * s.H), rdq(T * qd), rdk(T * kvd), rdv(T * kvd);
            if (causal) {
                cpu.attention_train(cpu.ctx, ro.data(), rl.data(), q.data(), k.data(), v.data(), 1, T, s.H, s.KV, s.hd,
                                    scale, 0);
                cpu.attention_bwd(cpu.ctx, rdq.data(), rdk.data(), rdv.data(), dout.data(), ro.data(), rl.data(),
                                  q.data(), k.data(), v.data(), 1, T, s.H, s.KV, s.hd, scale, 0);
            } else { /* one block of every key */
                std::vector<int32_t> all(T);
                for (int64_t t = 0; t < T; t++) all[t] = (int32_t)t;
                std::fill(rdq.begin(), rdq.end(), 0.0f), std::fill(rdk.begin(), rdk.end(), 0.0f);
                std::fill(rdv.begin(), rdv.end(), 0.0f);
                cpu.attn_block_fwd(cpu.ctx, ro.data(), rl.data(), q.data(), k.data(), v.data(), all.data(), all.data(),
                                   T, T, s.H, s.KV, s.hd, scale, 0);
                cpu.attn_block_bwd(cpu.ctx, rdq.data(), rdk.data(), rdv.data(), dout.data(), ro.data(), rl.data(),
                                   q.data(), k.data(), v.data(), all.data(), all.data(), T, T, s.H, s.KV, s.hd, scale, 0);
            }
            e_ref = std::max(rel(og, ro), rel_lse(lg, rl));
            e_gref = std::max(rel(dqg, rdq), std::max(rel(dkg, rdk), rel(dvg, rdv)));
            printf("  %s T=%ld H=%ld KV=%ld hd=%ld W=%d: block out %.2e lse %.2e, merged out %.2e lse %.2e, dq %.2e "
                   "dk %.2e dv %.2e; vs whole sequence fwd %.2e bwd %.2e\n", cm, (long)T, (long)s.H, (long)s.KV,
                   (long)s.hd, s.W, e_ob, e_lb, e_out, e_lse, e_dq, e_dk, e_dv, e_ref, e_gref);
            const double tol = 1e-4;
            double e[9] = {e_ob, e_lb, e_out, e_lse, e_dq, e_dk, e_dv, e_ref, e_gref};
            const char *nm[9] = {"block out", "block lse", "merged out", "merged lse", "dq", "dk", "dv",
                                 "vs whole fwd", "vs whole bwd"};
            for (int i = 0; i < 9; i++)
                check(std::string("ring_attn ") + cm + " " + nm[i], e[i], tol, "T=%ld W=%d hd=%ld", (long)T, s.W,
                      (long)s.hd);
        }
    }
}
