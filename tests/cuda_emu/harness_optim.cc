/* harness_optim.cc — the "optim" section of harness.cc (included there,
 * sharing its helpers): the optimizer kernels of ops/optim_ops.h against
 * their CPU twins on odd sizes — 8-bit AdamW (adamw8bit.cu vs
 * ops/cpu/adamw8bit.c: parameters, absmax and codes; a code may differ by
 * one step where the CPU's contracted FMAs move a value across a
 * quantisation midpoint) and Muon (momentum, Newton–Schulz through
 * lmc_cuda_gemm in fp32 and with bf16 operands, update; wide, tall and
 * square shapes), over three steps; GaLore's and APOLLO's lowrank step
 * (lowrank.cu vs ops/cpu/lowrank.c: channel- and tensor-wise, ranks 1 and
 * 8, wide, tall, square; parameters, moments and the limiter's norm);
 * muon_batch.cu (three matrices of a shape per call) against a host twin
 * with the same bf16 roundings and against the fp32 CPU op; every
 * optimizer through the real CUDA table (Muon also with bf16, batched;
 * GaLore with the subspace refresh on both sides, also on gradients whose
 * power step is ill-conditioned: no exact fallback); GaLore's subspace
 * refresh ops (galore_ritz, galore_orth's CholeskyQR pass with and without
 * T, galore_rotate with its sign rule). */
extern "C" {
#include "ops/optim_ops.h"
#include "train/optim.h"
}
#include "../spectrum_grad.h"

/* Host twin of muon_batch.cu in double with its bf16 roundings: X = bf16(u),
 * X = bf16(X / max(||X||, eps)), per iteration A = bf16(X X^T),
 * B = bf16(c A A + b A), X = bf16(B X + a X) (on the smaller side; A, B
 * products accumulated in double, rounded once, as the cuBLASLt model does),
 * p = p * decay - lr_adj * X. */
static float bfr(double x) { return emu_bf2f(emu_f2bf((float)x)); }
static void muon_bf16_twin(std::vector<float> &p, const std::vector<float> &g, std::vector<float> &buf, int64_t rows,
                           int64_t cols, const lmc_muon_step &s, float lr_adj) {
    const int64_t n = rows * cols;
    const bool tr = rows > cols;
    const int64_t k = tr ? cols : rows, w = tr ? rows : cols;
    std::vector<float> u(n);
    /* the momentum as the kernel computes it (no contraction) */
    const float mu = s.momentum, omm = 1.0f - s.momentum;
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i] * s.grad_scale, b0 = buf[i];
        const float b = omm < 0.5f ? b0 + omm * (gi - b0) : gi - (gi - b0) * mu;
        buf[i] = b;
        const float ui = !s.nesterov ? b : mu < 0.5f ? gi + mu * (b - gi) : b - (b - gi) * omm;
        u[i] = ui;
    }
    std::vector<double> X(k * w), A(k * k), B(k * k), Y(k * w);
    double ss = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = i / cols, c = i % cols, xi = tr ? c * w + r : i; /* X (k, w) row-major */
        X[xi] = bfr(u[i]);
        ss += X[xi] * X[xi];
    }
    const float nr = std::max((float)sqrt(ss), s.ns_eps);
    for (auto &x : X) x = bfr((float)x / nr);
    for (int it = 0; it < s.ns_steps; it++) {
        for (int64_t i = 0; i < k; i++) for (int64_t j = 0; j < k; j++) {
            double t = 0;
            for (int64_t q = 0; q < w; q++) t += X[i * w + q] * X[j * w + q];
            A[i * k + j] = bfr(t);
        }
        for (int64_t i = 0; i < k; i++) for (int64_t j = 0; j < k; j++) {
            double t = 0;
            for (int64_t q = 0; q < k; q++) t += A[i * k + q] * A[q * k + j];
            B[i * k + j] = bfr((double)s.ns_c * t + (double)s.ns_b * A[i * k + j]);
        }
        for (int64_t i = 0; i < k; i++) for (int64_t j = 0; j < w; j++) {
            double t = 0;
            for (int64_t q = 0; q < k; q++) t += B[i * k + q] * X[q * w + j];
            Y[i * w + j] = bfr(t + (double)s.ns_a * X[i * w + j]);
        }
        X.swap(Y);
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = i / cols, c = i % cols, xi = tr ? c * w + r : i;
        p[i] = p[i] * s.decay_mul - lr_adj * (float)X[xi];
    }
}

/* muon_batch.cu: 3 matrices of a shape per call, 3 steps, against the bf16
 * host twin (tight) and the CPU op in fp32 (the update's direction). */
static void test_muon_batch() {
    for (auto sh : std::vector<std::pair<int64_t, int64_t>>{{37, 101}, {129, 61}, {64, 64}, {1, 9}, {176, 64}}) {
        const int64_t rows = sh.first, cols = sh.second, n = rows * cols;
        const int cnt = 3;
        std::vector<float> p[cnt], p2[cnt], p3[cnt], buf[cnt], buf2[cnt], buf3[cnt];
        for (int z = 0; z < cnt; z++) {
            p[z] = rv(n, 0.1f), p2[z] = p[z], p3[z] = p[z];
            buf[z] = rv(n, 0.5f), buf2[z] = buf[z], buf3[z] = buf[z];
        }
        std::vector<float> w(lmc_muon_batch_work_floats(cnt, rows, cols)), w2(lmc_muon_work_floats(rows, cols));
        double worst_twin = 0, worst_b = 0, worst_cos = 0, worst_u = 0;
        for (int t = 1; t <= 3; t++) {
            lmc_muon_step s = {0.95f, t != 2, 5, 3.4445f, -4.7750f, 2.0315f, 1e-7f, 1 - 0.02f * 0.1f, 0.0f,
                               t == 3 ? 0.5f : 1.0f, 1};
            std::vector<float> g[cnt];
            lmc_muon_mat mats[cnt];
            std::vector<float> before[cnt];
            for (int z = 0; z < cnt; z++) {
                g[z] = rv(n);
                before[z] = p[z];
                mats[z] = {p[z].data(), g[z].data(), buf[z].data(), rows, cols, 0.02f * (1 + z)};
            }
            lmc_cuda_muon_batch(cc, mats, cnt, &s, w.data());
            for (int z = 0; z < cnt; z++) {
                muon_bf16_twin(p3[z], g[z], buf3[z], rows, cols, s, 0.02f * (1 + z));
                lmc_muon_step sc = s;
                sc.lr_adj = 0.02f * (1 + z), sc.ns_bf16 = 0;
                std::vector<float> before2 = p2[z];
                cpu.muon(cpu.ctx, p2[z].data(), g[z].data(), buf2[z].data(), rows, cols, &sc, w2.data());
                worst_b = std::max({worst_b, rel(buf[z], buf2[z]), rel(buf[z], buf3[z])});
                std::vector<float> d(n), d2(n), d3(n);
                for (int64_t i = 0; i < n; i++)
                    d[i] = p[z][i] - before[z][i], d2[i] = p2[z][i] - before2[i], d3[i] = p3[z][i] - before[z][i];
                worst_twin = std::max(worst_twin, rel(d, d3));
                worst_u = std::max(worst_u, rel(d, d2));
                worst_cos = std::max(worst_cos, 1 - cosine(d.data(), d2.data(), d.size()));
                p3[z] = p[z], p2[z] = p[z]; /* the next step from the same parameters */
                buf3[z] = buf[z], buf2[z] = buf[z];
            }
        }
        check("muon batch momentum", worst_b, 1e-6, "%ldx%ld x3", (long)rows, (long)cols);
        /* the twin rounds at the same points with the cuBLASLt model's double
         * sums (measured: identical); 1e-6 leaves room for a last-bit flip of the norm */
        check("muon batch update vs bf16 twin", worst_twin, 1e-6, "%ldx%ld x3", (long)rows, (long)cols);
        check("muon batch update vs fp32 CPU (1 - cosine)", worst_cos, 5e-3, "%ldx%ld x3", (long)rows, (long)cols);
        check("muon batch update vs fp32 CPU (rel)", worst_u, 0.15, "%ldx%ld x3", (long)rows, (long)cols);
    }
}

/* G = U diag(sv) V^T with orthonormal U, V from modified Gram–Schmidt (in
 * double) of base + mix * turn (random, fixed per shape) */
static std::vector<float> spectrum_grad(int64_t rows, int64_t cols, const std::vector<double> &sv,
                                        const std::vector<float> base[2], const std::vector<float> turn[2], float mix) {
    const int64_t q = std::min(rows, cols), len[2] = {rows, cols};
    std::vector<double> m[2];
    for (int w = 0; w < 2; w++) {
        m[w].resize(len[w] * q);
        for (int64_t i = 0; i < len[w] * q; i++) m[w][i] = base[w][i] + (double)mix * turn[w][i];
    }
    std::vector<float> g(rows * cols);
    spectrum_compose(g.data(), rows, cols, m[0].data(), m[1].data(), sv.data());
    return g;
}

/* GaLore's subspace refresh through the real CUDA table and the CPU's on
 * the ill-conditioned gradients of test_optim's test_galore_subspace_illcond
 * (s_1 / s_r ~ 4e2, singular vectors turned between step 1's exact refresh
 * and step 2's subspace one: cond(Y) ~ 1e5): on both backends no exact
 * fallback at step 2 (the counters), and every GPU projection vector in the
 * CPU's span (squared projection within 1e-4 of 1) */
static void galore_illcond() {
    const int64_t R[2] = {131, 67}, C[2] = {67, 131}, r = 24, q = 67;
    std::vector<double> sv(q);
    spectrum_illcond(sv.data(), q, r, 2.5);
    std::vector<float> gh[2], base[2][2], turn[2][2];
    float *pd[2], *gd[2], *pc[2], *gc[2];
    lmc_optim_param pg[2], pcp[2];
    for (int j = 0; j < 2; j++) {
        const int64_t n = R[j] * C[j];
        for (int w = 0; w < 2; w++) base[j][w] = rv((w ? C[j] : R[j]) * q), turn[j][w] = rv((w ? C[j] : R[j]) * q);
        pd[j] = (float *)gpu.alloc(gpu.ctx, n * 4), gd[j] = (float *)gpu.alloc(gpu.ctx, n * 4);
        pc[j] = (float *)calloc(n, 4), gc[j] = (float *)malloc(n * 4);
        std::vector<float> z(n, 0.0f);
        gpu.upload(gpu.ctx, pd[j], z.data(), n * 4);
        pg[j] = {"w", pd[j], gd[j], R[j], C[j], LMC_PROLE_MATRIX, true};
        pcp[j] = {"w", pc[j], gc[j], R[j], C[j], LMC_PROLE_MATRIX, true};
    }
    lmc_optim_cfg c;
    lmc_optim_cfg_default(&c, LMC_OPTIM_GALORE);
    c.galore_rank = (int)r, c.galore_update_gap = 1, c.galore_refresh = LMC_GALORE_REFRESH_SUBSPACE;
    lmc_optim og, oc;
    lmc_err err;
    if (lmc_optim_init(&og, &c, &gpu, pg, 2, &err) || lmc_optim_init(&oc, &c, &cpu, pcp, 2, &err)) {
        check("galore ill-conditioned: optimizer init", 1, 0, "%s", err.msg);
        return;
    }
    for (int t = 1; t <= 2; t++) {
        for (int j = 0; j < 2; j++) {
            gh[j] = spectrum_grad(R[j], C[j], sv, base[j], turn[j], t == 2 ? 0.3f : 0.0f);
            gpu.upload(gpu.ctx, gd[j], gh[j].data(), R[j] * C[j] * 4);
            memcpy(gc[j], gh[j].data(), R[j] * C[j] * 4);
        }
        lmc_optim_step(&og, 1e-3, t, 1.0f);
        lmc_optim_step(&oc, 1e-3, t, 1.0f);
    }
    check("galore ill-conditioned: exact fallbacks at step 2 (gpu, cpu)",
          (double)(og.galore_exact_refreshes - 2 + oc.galore_exact_refreshes - 2), 0, "subspace %lld %lld",
          (long long)og.galore_subspace_refreshes, (long long)oc.galore_subspace_refreshes);
    double worst = 0;
    for (int k = 0; k < lmc_optim_state_count(&og); k++) {
        lmc_optim_state_tensor a, b;
        lmc_optim_state_get(&og, k, &a), lmc_optim_state_get(&oc, k, &b);
        if (!strstr(a.name, "galore.proj")) continue;
        const int j = k < lmc_optim_state_count(&og) / 2 ? 0 : 1;
        const bool right = R[j] >= C[j];
        std::vector<float> pa(a.numel);
        gpu.download(gpu.ctx, pa.data(), a.data, a.numel * 4);
        const float *pb = (const float *)b.data;
        auto at = [&](const float *x, int64_t v, int64_t e) { return (double)(right ? x[v * q + e] : x[e * r + v]); };
        for (int64_t v = 0; v < r; v++) {
            double in = 0;
            for (int64_t u = 0; u < r; u++) {
                double ab = 0;
                for (int64_t e = 0; e < q; e++) ab += at(pa.data(), v, e) * at(pb, u, e);
                in += ab * ab;
            }
            worst = std::max(worst, fabs(1 - in));
        }
    }
    check("galore ill-conditioned: gpu projection in the cpu's span (1 - ||P_cpu p||^2)", worst, 1e-4, "tall, wide");
    for (int j = 0; j < 2; j++) gpu.free(gpu.ctx, pd[j]), gpu.free(gpu.ctx, gd[j]), free(pc[j]), free(gc[j]);
    lmc_optim_free(&og), lmc_optim_free(&oc);
}

static void test_optim() {
    test_muon_batch();
    float code_m[256], code_v[256];
    lmc_q8_dynamic_code(code_m, true);
    lmc_q8_dynamic_code(code_v, false);
    for (int64_t n : {1, 255, 257, 1000, 4097, 20001}) for (int64_t block : {64, 256, 2048}) {
        const int64_t nb = (n + block - 1) / block;
        auto p = rv(n), p2 = p;
        std::vector<uint8_t> qm(n, 0), qv(n, 0), qm2(n, 0), qv2(n, 0);
        std::vector<float> am(nb, 0.0f), av(nb, 0.0f), am2 = am, av2 = av;
        double worst_p = 0, worst_a = 0;
        long flips = 0, far = 0;
        for (int t = 1; t <= 3; t++) {
            auto g = rv(n, 2);
            lmc_adamw_step s = {1.1e-3f / (1 - powf(0.9f, t)), 1 - 1e-4f, 0.999f, 0.1f, 0.001f,
                                sqrtf(1 - powf(0.999f, t)), 1e-8f, 0.7f};
            lmc_cuda_adamw8bit(cc, p.data(), g.data(), qm.data(), qv.data(), am.data(), av.data(), n, block,
                               code_m, code_v, &s);
            cpu.adamw8bit(cpu.ctx, p2.data(), g.data(), qm2.data(), qv2.data(), am2.data(), av2.data(), n, block,
                          code_m, code_v, &s);
            worst_p = std::max(worst_p, rel(p, p2));
            worst_a = std::max({worst_a, rel(am, am2), rel(av, av2)});
            for (int64_t i = 0; i < n; i++) {
                flips += (qm[i] != qm2[i]) + (qv[i] != qv2[i]);
                far += abs((int)qm[i] - (int)qm2[i]) > 1 || abs((int)qv[i] - (int)qv2[i]) > 1;
            }
        }
        check("adamw8bit params", worst_p, 1e-5, "n=%ld block=%ld", (long)n, (long)block);
        check("adamw8bit absmax", worst_a, 1e-5, "n=%ld block=%ld", (long)n, (long)block);
        check("adamw8bit codes > 1 step apart", (double)far, 0, "n=%ld block=%ld", (long)n, (long)block);
        check("adamw8bit codes differing (per mille)", 1000.0 * flips / (6.0 * n), 5, "n=%ld block=%ld", (long)n,
              (long)block);
    }
    for (int bf : {0, 1})
    for (auto sh : std::vector<std::pair<int64_t, int64_t>>{{37, 101}, {129, 61}, {64, 64}, {1, 9}, {176, 64}}) {
        const int64_t rows = sh.first, cols = sh.second, n = rows * cols;
        auto p = rv(n, 0.1f), p2 = p, buf = rv(n, 0.5f), buf2 = buf;
        std::vector<float> w(lmc_muon_work_floats(rows, cols)), w2 = w;
        double worst_p = 0, worst_b = 0, worst_u = 0, worst_cos = 0;
        for (int t = 1; t <= 3; t++) {
            auto g = rv(n), before = p, before2 = p2;
            lmc_muon_step s = {0.95f, t != 2, 5, 3.4445f, -4.7750f, 2.0315f, 1e-7f, 1 - 0.02f * 0.1f,
                               0.02f * sqrtf(std::max(1.0f, (float)rows / cols)), t == 3 ? 0.5f : 1.0f, bf};
            lmc_muon_step s32 = s;
            s32.ns_bf16 = 0; /* the CPU's fp32 iteration: the reference in both cases */
            lmc_cuda_muon(cc, p.data(), g.data(), buf.data(), rows, cols, &s, w.data());
            cpu.muon(cpu.ctx, p2.data(), g.data(), buf2.data(), rows, cols, &s32, w2.data());
            worst_b = std::max(worst_b, rel(buf, buf2));
            worst_p = std::max(worst_p, rel(p, p2));
            std::vector<float> d(n), d2(n); /* the updates, relative to their own size */
            for (int64_t i = 0; i < n; i++) d[i] = p[i] - before[i], d2[i] = p2[i] - before2[i];
            worst_u = std::max(worst_u, rel(d, d2));
            worst_cos = std::max(worst_cos, 1 - cosine(d.data(), d2.data(), d.size()));
        }
        check("muon momentum", worst_b, 1e-6, "%ldx%ld", (long)rows, (long)cols);
        if (!bf) {
            check("muon update (p - p_before)", worst_u, 1e-4, "%ldx%ld", (long)rows, (long)cols);
            check("muon params", worst_p, 1e-5, "%ldx%ld", (long)rows, (long)cols);
        } else {
            /* bf16 operands round each GEMM's inputs to 8 mantissa bits, and the
             * quintic (which oscillates rather than converges) carries that into
             * the output: the update's direction is checked, and its size loosely */
            check("muon bf16 update (1 - cosine)", worst_cos, 5e-3, "%ldx%ld", (long)rows, (long)cols);
            check("muon bf16 update (rel)", worst_u, 0.15, "%ldx%ld", (long)rows, (long)cols);
        }
    }
    /* GaLore and APOLLO (channel, tensor) steps: wide, tall and square, ranks 1 and 8 */
    for (int mode = 0; mode < 3; mode++)
    for (int64_t rank : {1, 8})
    for (auto sh : std::vector<std::pair<int64_t, int64_t>>{{37, 101}, {129, 61}, {64, 64}, {176, 64}}) {
        const int64_t rows = sh.first, cols = sh.second, n = rows * cols;
        const bool right = rows >= cols;
        const int64_t nl = right ? rows * rank : rank * cols, np = rank * (right ? cols : rows);
        auto p = rv(n, 0.1f), p2 = p, m = std::vector<float>(nl, 0.0f), m2 = m, v = m, v2 = m;
        auto proj = rv(np, 0.3f);
        float prev = -1, prev2 = -1;
        std::vector<float> w(lmc_lowrank_work_floats(rows, cols, rank)), w2 = w;
        double worst_p = 0, worst_u = 0, worst_mv = 0, worst_prev = 0;
        for (int t = 1; t <= 3; t++) {
            auto g = rv(n), before = p, before2 = p2;
            lmc_lowrank_step s = {mode > 0, right, mode == 2, 0.9f, 0.999f, 0.1f, 0.001f, 1e-8f, t == 2 ? 0.7f : 1.0f,
                                  -1e-2f * (mode ? 1.0f : 0.25f), sqrtf(mode == 2 ? 128.0f : 1.0f), -1e-4f};
            lmc_cuda_lowrank(cc, p.data(), g.data(), m.data(), v.data(), proj.data(), &prev, rows, cols, rank, &s,
                             w.data());
            cpu.lowrank(cpu.ctx, p2.data(), g.data(), m2.data(), v2.data(), proj.data(), &prev2, rows, cols, rank, &s,
                        w2.data());
            worst_p = std::max(worst_p, rel(p, p2));
            std::vector<float> d(n), d2(n);
            for (int64_t i = 0; i < n; i++) d[i] = p[i] - before[i], d2[i] = p2[i] - before2[i];
            worst_u = std::max(worst_u, rel(d, d2));
            worst_mv = std::max({worst_mv, rel(m, m2), rel(v, v2)});
            worst_prev = std::max(worst_prev, fabs((double)prev - prev2) / fabs((double)prev2));
        }
        const char *mn = mode == 0 ? "galore" : mode == 1 ? "apollo channel" : "apollo tensor";
        /* channel-wise, a channel's factor ||N_q|| / ||R_q|| is ill-conditioned
         * where R_q (one value at rank 1) is near 0: the GEMMs' summation
         * order moves it (measured 1.4e-4 at 129x61 rank 1) */
        const double tol = mode == 1 ? 1e-3 : 1e-5;
        check(std::string(mn) + " update (p - p_before)", worst_u, mode == 1 ? 1e-3 : 1e-4, "%ldx%ld r%ld", (long)rows,
              (long)cols, (long)rank);
        check(std::string(mn) + " params", worst_p, tol, "%ldx%ld r%ld", (long)rows, (long)cols, (long)rank);
        check(std::string(mn) + " moments", worst_mv, 1e-5, "%ldx%ld r%ld", (long)rows, (long)cols, (long)rank);
        if (mode) check(std::string(mn) + " limiter norm", worst_prev, tol, "%ldx%ld r%ld", (long)rows, (long)cols,
                        (long)rank);
    }
    /* GaLore's subspace refresh ops (lowrank.cu vs ops/cpu/lowrank.c): Y, C, the
     * orthonormalisation pass's Y, C (and T), and the rotated, signed
     * projection; wide, tall and square, ranks 1 and 8 */
    for (int64_t rank : {1, 8})
    for (auto sh : std::vector<std::pair<int64_t, int64_t>>{{37, 101}, {129, 61}, {64, 64}}) {
        const int64_t rows = sh.first, cols = sh.second, k = std::min(rows, cols);
        auto g = rv(rows * cols), proj = rv(rank * k, 0.3f), w = rv(rank * rank);
        std::vector<float> y(k * rank), y2 = y, ct(2 * rank * rank), ct2 = ct, p(rank * k), p2 = p;
        std::vector<float> work(lmc_galore_ritz_work_floats(rows, cols, rank)), work2 = work;
        lmc_cuda_galore_ritz(cc, g.data(), proj.data(), rows, cols, rank, y.data(), ct.data(), work.data());
        cpu.galore_ritz(cpu.ctx, g.data(), proj.data(), rows, cols, rank, y2.data(), ct2.data(), work2.data());
        check("galore ritz Y", rel(y, y2), 1e-5, "%ldx%ld r%ld", (long)rows, (long)cols, (long)rank);
        check("galore ritz C", rel(ct, ct2), 1e-5, "%ldx%ld r%ld", (long)rows, (long)cols, (long)rank);
        /* the CholeskyQR passes: Y <- Y X (X upper triangular, as the host's
         * inverse factor) and C, then with g also T; from the same Y */
        auto x = rv(rank * rank);
        for (int64_t i = 0; i < rank; i++)
            for (int64_t jj = 0; jj < i; jj++) x[i * rank + jj] = 0;
        for (int withg = 0; withg < 2; withg++) {
            std::vector<float> yo = y2, yo2 = y2;
            std::fill(ct.begin(), ct.end(), 0.0f), std::fill(ct2.begin(), ct2.end(), 0.0f);
            const float *gg = withg ? g.data() : nullptr;
            { /* device memory: the op copies Y on the device */
                const size_t by = yo.size() * 4, bc = ct.size() * 4, bx = x.size() * 4, bw = work.size() * 4,
                             bg = g.size() * 4;
                float *dy = (float *)gpu.alloc(gpu.ctx, by), *dc = (float *)gpu.alloc(gpu.ctx, bc);
                float *dx = (float *)gpu.alloc(gpu.ctx, bx), *dwk = (float *)gpu.alloc(gpu.ctx, bw);
                float *dg = withg ? (float *)gpu.alloc(gpu.ctx, bg) : nullptr;
                gpu.upload(gpu.ctx, dy, yo.data(), by), gpu.upload(gpu.ctx, dx, x.data(), bx);
                if (dg) gpu.upload(gpu.ctx, dg, g.data(), bg);
                lmc_cuda_galore_orth(cc, dg, dy, dx, rows, cols, rank, dc, dwk);
                gpu.download(gpu.ctx, yo.data(), dy, by), gpu.download(gpu.ctx, ct.data(), dc, bc);
                gpu.free(gpu.ctx, dy), gpu.free(gpu.ctx, dc), gpu.free(gpu.ctx, dx), gpu.free(gpu.ctx, dwk);
                if (dg) gpu.free(gpu.ctx, dg);
            }
            cpu.galore_orth(cpu.ctx, gg, yo2.data(), x.data(), rows, cols, rank, ct2.data(), work2.data());
            check(withg ? "galore orth Y (with T)" : "galore orth Y", rel(yo, yo2), 1e-5, "%ldx%ld r%ld", (long)rows,
                  (long)cols, (long)rank);
            /* without g only C is written (the device buffer's T part is not) */
            check(withg ? "galore orth C, T" : "galore orth C",
                  rel(ct.data(), ct2.data(), (size_t)((withg ? 2 : 1) * rank * rank)), 1e-5, "%ldx%ld r%ld",
                  (long)rows, (long)cols, (long)rank);
        }
        lmc_cuda_galore_rotate(cc, p.data(), y2.data(), w.data(), rows, cols, rank);
        cpu.galore_rotate(cpu.ctx, p2.data(), y2.data(), w.data(), rows, cols, rank);
        check("galore rotate (signed)", rel(p, p2), 1e-5, "%ldx%ld r%ld", (long)rows, (long)cols, (long)rank);
    }
    /* every optimizer through the real CUDA table (lmc_optim_init on the
     * emulated GPU: host refreshes, downloads and uploads included) vs the CPU */
    for (int k = 0; k <= LMC_OPTIM_KIND_COUNT; k++) { /* the last: Muon with bf16 (the batched entry) */
        const bool mbf = k == LMC_OPTIM_KIND_COUNT;
        const int64_t R[4] = {37, 176, 1, 37}, C[4] = {101, 64, 64, 101};
        const lmc_param_role role[4] = {LMC_PROLE_MATRIX, LMC_PROLE_MATRIX, LMC_PROLE_NORM, LMC_PROLE_MATRIX};
        const int np = 4;
        std::vector<float> ph[4], gh[4];
        float *pd[4], *gd[4], *pc[4], *gc[4];
        lmc_optim_param pg[4], pcpu[4];
        for (int j = 0; j < np; j++) {
            const int64_t n = R[j] * C[j];
            ph[j] = rv(n, 0.1f);
            pd[j] = (float *)gpu.alloc(gpu.ctx, n * 4), gd[j] = (float *)gpu.alloc(gpu.ctx, n * 4);
            pc[j] = (float *)malloc(n * 4), gc[j] = (float *)malloc(n * 4);
            gpu.upload(gpu.ctx, pd[j], ph[j].data(), n * 4);
            memcpy(pc[j], ph[j].data(), n * 4);
            pg[j] = {"t", pd[j], gd[j], R[j], C[j], role[j], true};
            pcpu[j] = {"t", pc[j], gc[j], R[j], C[j], role[j], true};
        }
        lmc_optim_cfg c;
        lmc_optim_cfg_default(&c, mbf ? LMC_OPTIM_MUON : (lmc_optim_kind)k);
        c.muon_ns_bf16 = false, c.galore_rank = 8, c.galore_update_gap = 2, c.apollo_update_gap = 2;
        c.apollo_scale_type = LMC_APOLLO_TENSOR; /* well conditioned; channel-wise is checked above */
        c.muon_ns_bf16 = mbf;
        c.galore_refresh = LMC_GALORE_REFRESH_SUBSPACE; /* the GPU's default (auto), on both sides */
        lmc_optim_cfg c32 = c;
        c32.muon_ns_bf16 = false; /* the CPU side runs the fp32 iteration: the reference */
        c32.muon_ns_gram = false; /* and the plain one, as the GPU's (Gram space is the CPU's alone) */
        lmc_optim og, oc;
        lmc_err err;
        if (lmc_optim_init(&og, &c, &gpu, pg, np, &err) || lmc_optim_init(&oc, &c32, &cpu, pcpu, np, &err)) {
            check(std::string("optimizer init ") + lmc_optim_kind_name((lmc_optim_kind)k), 1, 0, "%s", err.msg);
            continue;
        }
        for (int t = 1; t <= 4; t++) {
            for (int j = 0; j < np; j++) {
                gh[j] = rv(R[j] * C[j]);
                gpu.upload(gpu.ctx, gd[j], gh[j].data(), R[j] * C[j] * 4);
                memcpy(gc[j], gh[j].data(), R[j] * C[j] * 4);
            }
            lmc_optim_step(&og, 1e-3, t, 0.8f);
            lmc_optim_step(&oc, 1e-3, t, 0.8f);
        }
        double worst = 0, worst_cos = 0;
        for (int j = 0; j < np; j++) {
            const int64_t n = R[j] * C[j];
            std::vector<float> a(n), d(n), d2(n);
            gpu.download(gpu.ctx, a.data(), pd[j], n * 4);
            for (int64_t i = 0; i < n; i++) d[i] = a[i] - ph[j][i], d2[i] = pc[j][i] - ph[j][i];
            worst = std::max(worst, rel(d, d2));
            worst_cos = std::max(worst_cos, 1 - cosine(d.data(), d2.data(), d.size()));
            gpu.free(gpu.ctx, pd[j]), gpu.free(gpu.ctx, gd[j]), free(pc[j]), free(gc[j]);
        }
        if (mbf) {
            /* two 37x101 matrices share one batched call; bf16 Newton–Schulz vs the CPU's fp32 */
            check("optimizer muon (bf16, batched) update, 4 steps (1 - cosine)", worst_cos, 5e-3, "gpu table vs cpu");
            check("optimizer muon (bf16, batched) update, 4 steps (rel)", worst, 0.15, "gpu table vs cpu");
        } else
            check(std::string("optimizer ") + lmc_optim_kind_name((lmc_optim_kind)k) + " update, 4 steps", worst,
                  k == LMC_OPTIM_ADAMW8BIT ? 1e-3 : 1e-4, "gpu table vs cpu");
        lmc_optim_free(&og), lmc_optim_free(&oc);
    }
    galore_illcond();
}
