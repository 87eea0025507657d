/* harness_optim.cc — the "optim" section of harness.cc (included there,
 * sharing its helpers): the optimizer kernels of ops/optim_ops.h against
 * their CPU twins on odd sizes — 8-bit AdamW (adamw8bit.cu vs
 * ops/cpu/adamw8bit.c: parameters, absmax and codes; a code may differ by
 * one step where the CPU's contracted FMAs move a value across a
 * quantisation midpoint) and Muon (momentum, Newton–Schulz through
 * lmc_cuda_gemm in fp32 and with bf16 operands, update; wide, tall and
 * square shapes), over three steps. */
extern "C" {
#include "ops/optim_ops.h"
}

static void test_optim() {
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
            lmc_cuda_muon(cc, p.data(), g.data(), buf.data(), rows, cols, &s, w.data());
            cpu.muon(cpu.ctx, p2.data(), g.data(), buf2.data(), rows, cols, &s, w2.data());
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
}
