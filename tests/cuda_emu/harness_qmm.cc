/* harness_qmm.cc — included by harness.cc (its helpers and backends in
 * scope): section qmm, ops/cuda/qmatmul.cu through the real table's
 * qweight_upload / qmatmul against the dequantize-then-float reference (in
 * double) and the CPU twin (ops/cpu/qmatmul.c, int8 activations): every
 * GGUF block type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K; Q6_K through
 * its dense-bf16 fallback), GPTQ 4-bit (sequential groups with K not a
 * multiple of the group, act-order g_idx of unequal groups, g128), 3-bit,
 * 8-bit asymmetric, AWQ (through its packed layout), NF4 and ternary; odd
 * N, M = 1..17 on the automatic path (GEMV up to 16, tensor-core tiles
 * above), each path forced on other M (70: two row tiles), with and
 * without bias, and an input at a 4-byte offset; then quantized model
 * folders end to end through the table (test_qmm_e2e). */
extern "C" {
#include "quant/qmatmul.h"
#include "quant/quant.h"
}

/* one weight: the host form the CPU runs and its dequantized floats (N, K) */
static void qmm_case(const char *name, const struct lmc_qweight *hw, const std::vector<float> &W, const char *layout) {
    const int64_t N = hw->n, K = hw->k;
    struct lmc_qweight *dw = nullptr;
    lmc_err err;
    if (gpu.qweight_upload(gpu.ctx, hw, &dw, &err)) {
        printf("FAIL qmm %s: upload: %s\n", name, err.msg);
        n_fail++;
        return;
    }
    check(std::string("qmm layout ") + name, strcmp(lmc_cuda_qweight_layout(dw), layout) ? 1.0 : 0.0, 0.0,
          "is %s, expected %s", lmc_cuda_qweight_layout(dw), layout);
    const bool dense = !strcmp(layout, "dense-bf16");
    struct run { int64_t M; enum lmc_cuda_qpath path; int off; };
    std::vector<run> runs;
    for (int64_t M = 1; M <= 17; M++) runs.push_back({M, LMC_CUDA_Q_AUTO, 0});
    for (int64_t M : {1, 7, 16}) runs.push_back({M, LMC_CUDA_Q_MMA, 0});
    for (int64_t M : {17, 33}) runs.push_back({M, LMC_CUDA_Q_GEMV, 0});
    runs.push_back({70, LMC_CUDA_Q_AUTO, 0});
    runs.push_back({3, LMC_CUDA_Q_AUTO, 1});
    runs.push_back({19, LMC_CUDA_Q_AUTO, 1});
    for (size_t ri = 0; ri < runs.size(); ri++) {
        const run &r = runs[ri];
        const int64_t M = r.M;
        std::vector<float> x = rv((size_t)(M * K)), bias = rv((size_t)N);
        const bool with_bias = ri % 2 == 0;
        std::vector<float> ref((size_t)(M * N)), twin((size_t)(M * N));
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = with_bias ? bias[(size_t)n] : 0.0;
                for (int64_t k = 0; k < K; k++) s += (double)x[(size_t)(m * K + k)] * W[(size_t)(n * K + k)];
                ref[(size_t)(m * N + n)] = (float)s;
            }
        cpu.qmatmul(cpu.ctx, twin.data(), x.data(), M, hw, with_bias ? bias.data() : nullptr);
        float *xd = dup_dev(gpu, x, (size_t)r.off), *bd = dup_dev(gpu, bias), *yd = dev_nan(gpu, (size_t)(M * N));
        lmc_cuda_qmatmul_ex(gpu.ctx, yd, xd, M, dw, with_bias ? bd : nullptr, r.path);
        std::vector<float> y = down(gpu, yd, (size_t)(M * N));
        const bool mma = r.path == LMC_CUDA_Q_MMA || (r.path == LMC_CUDA_Q_AUTO && M > LMC_CUDA_Q_GEMV_MAX_M);
        /* GEMV: fp32 math on fp16-rounded scales; tiles: bf16 operands; dense: bf16 weights */
        const double tol = dense ? 1e-2 : mma ? 1e-2 : 3e-3;
        const char *kind = dense ? "dense" : mma ? "mma" : "gemv";
        check(std::string("qmm ") + name + " " + kind, rel(y, ref), tol, "M %lld N %lld K %lld off %d",
              (long long)M, (long long)N, (long long)K, r.off);
        check(std::string("qmm ") + name + " vs cpu twin", rel(y, twin), 3e-2, "M %lld", (long long)M);
    }
    gpu.qweight_free(gpu.ctx, dw);
}

static void qmm_ggml(int type, int64_t N, int64_t K, const char *layout) {
    int64_t rb;
    LMC_ASSERT(lmc_ggml_row_bytes(type, K, &rb));
    std::vector<uint8_t> data((size_t)(N * rb));
    std::vector<float> w = rv((size_t)(N * K)), W((size_t)(N * K));
    for (int64_t n = 0; n < N; n++) {
        LMC_ASSERT(lmc_ggml_quantize_row(type, &w[(size_t)(n * K)], &data[(size_t)(n * rb)], K));
        lmc_ggml_dequantize_row(type, &data[(size_t)(n * rb)], &W[(size_t)(n * K)], K);
    }
    struct lmc_qweight hw;
    lmc_err err;
    LMC_ASSERT(!lmc_qweight_init_ggml(&hw, type, data.data(), N, K, &err));
    qmm_case(lmc_ggml_type_name(type), &hw, W, layout);
    lmc_qweight_free(&hw);
}

/* rtn groups, g_idx shuffled into unequal groups when act_order */
static void qmm_groups(const char *name, int64_t N, int64_t K, int bits, int64_t group, bool sym, bool act_order,
                       bool awq, const char *layout) {
    std::vector<float> w = rv((size_t)(N * K)), W((size_t)(N * K));
    struct lmc_qgroups g;
    lmc_err err;
    LMC_ASSERT(!lmc_quant_rtn(w.data(), N, K, bits, group, sym, &g, &err));
    if (act_order)
        for (int64_t k = 0; k < K; k++) g.g_idx[k] = (int32_t)irand((int)g.n_groups);
    if (awq) { /* through AWQ's packed tensors and back */
        struct lmc_awq_tensors t;
        struct lmc_qgroups u;
        LMC_ASSERT(!lmc_awq_pack(&g, &t, &err));
        LMC_ASSERT(!lmc_awq_unpack(&t, group, "awq", &u, &err));
        lmc_awq_tensors_free(&t);
        lmc_qgroups_free(&g);
        g = u;
    }
    lmc_qgroups_dequantize(&g, W.data());
    struct lmc_qweight hw;
    LMC_ASSERT(!lmc_qweight_init_groups(&hw, &g, &err));
    qmm_case(name, &hw, W, layout);
    lmc_qweight_free(&hw);
    lmc_qgroups_free(&g);
}

static void test_qmm_e2e();

static void test_qmm() {
    qmm_ggml(LMC_GGML_Q8_0, 37, 96, "g8");
    qmm_ggml(LMC_GGML_Q4_0, 67, 160, "g4");
    qmm_ggml(LMC_GGML_Q4_1, 19, 64, "g4");
    qmm_ggml(LMC_GGML_Q5_0, 21, 96, "g8");
    qmm_ggml(LMC_GGML_Q5_1, 13, 64, "g8");
    qmm_ggml(LMC_GGML_Q4_K, 35, 512, "g4");
    qmm_ggml(LMC_GGML_Q5_K, 9, 256, "g8");
    qmm_ggml(LMC_GGML_Q6_K, 11, 256, "dense-bf16");
    qmm_groups("gptq4 g32 K%g", 41, 200, 4, 32, false, false, false, "g4");
    qmm_groups("gptq4 act-order", 33, 200, 4, 64, false, true, false, "g4");
    qmm_groups("gptq4 g128 sym", 17, 384, 4, 128, true, false, false, "g4");
    qmm_groups("gptq3 g50", 23, 150, 3, 50, false, false, false, "g4");
    qmm_groups("rtn8 asym", 15, 100, 8, 100, false, false, false, "g8");
    qmm_groups("awq4 g64", 40, 128, 4, 64, false, false, true, "g4");
    { /* NF4: blocks of 64, double-quantized absmax */
        const int64_t N = 29, K = 192;
        std::vector<float> w = rv((size_t)(N * K)), W((size_t)(N * K));
        struct lmc_nf4 q;
        struct lmc_qweight hw;
        lmc_err err;
        LMC_ASSERT(!lmc_nf4_quantize(w.data(), N * K, &q, &err));
        lmc_nf4_dequantize(&q, W.data());
        LMC_ASSERT(!lmc_qweight_init_nf4(&hw, &q, N, K, &err));
        qmm_case("nf4", &hw, W, "g4-lut");
        lmc_qweight_free(&hw);
        lmc_nf4_free(&q);
    }
    { /* BitNet ternary */
        const int64_t N = 31, K = 70;
        std::vector<float> w = rv((size_t)(N * K)), W((size_t)(N * K));
        std::vector<int8_t> q((size_t)(N * K));
        float s = lmc_ternary_quantize(w.data(), N * K, q.data());
        for (size_t i = 0; i < q.size(); i++) W[i] = (float)q[i] * s;
        struct lmc_qweight hw;
        lmc_err err;
        LMC_ASSERT(!lmc_qweight_init_ternary(&hw, q.data(), s, N, K, &err));
        qmm_case("ternary", &hw, W, "g4");
        lmc_qweight_free(&hw);
    }
    test_qmm_e2e();
}

/* Quantized folders through the real CUDA table: `lmc quantize` (the
 * build's binary, LMC_EMU_LMC, set by test_cuda_emu.sh) writes them, the
 * model loader uploads their linears with qweight_upload, and the logits
 * (fp32 attention) are compared with the CPU backend's on the same folder
 * dequantized by `lmc convert --dtype f32`: a 12-token prompt (GEMV path),
 * a 20-token one (tensor-core tiles) and one decode step each. gpt2-tiny
 * checks fused c_attn views, llama-tiny's NF4 a linear (K = 176) left
 * dequantized beside quantized ones, `--head` a quantized lm_head (placed
 * through qweight_upload like the blocks' linears; it was copied as if
 * dense, and the head's product then aborted on the host handle). */
static void test_qmm_e2e() {
    qfolder_cases("qmm e2e",
                  {{"llama-tiny", "--method rtn --bits 4 --group 32"},
                   {"llama-tiny", "--method rtn --bits 8 --group 32 --head"},
                   {"llama-tiny", "--method nf4"},
                   {"gpt2-tiny", "--method rtn --bits 4 --group 32 --sym"},
                   {"qwen2-tiny", "--method rtn --bits 8 --group -1 --asym"}},
                  [](const qfolder_case &c, const std::string &q, const std::string &d) {
                      for (int n : {12, 20}) {
                          std::vector<int32_t> ids((size_t)n);
                          for (auto &i : ids) i = irand(512);
                          double e1, e2;
                          if (!qfolder_logits(q, d, ids, e1, e2)) continue;
                          printf("  %s %s: %d-token prompt logits %.2e, decode logits %.2e\n", c.model, c.args, n, e1,
                                 e2);
                          check(n > LMC_CUDA_Q_GEMV_MAX_M ? "qmm e2e prompt logits (tiles)"
                                                          : "qmm e2e prompt logits (gemv)",
                                e1, n > LMC_CUDA_Q_GEMV_MAX_M ? 3e-2 : 3e-3, "%s %s", c.model, c.args);
                          check("qmm e2e decode logits (gemv)", e2, 3e-3, "%s %s", c.model, c.args);
                      }
                  });
}
