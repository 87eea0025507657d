/* harness.cc — lmc's CUDA launchers, run on the CPU emulator (emu.h), against
 * their CPU twins (the CPU backend, lmc_backend_cpu_init, and
 * lmc_sample_logits_row) on random odd sizes, with the GPU tests' tolerances
 * (tests/test_ops_cuda.c, test_train_ops_cuda.c, test_attention_train_cuda.c).
 * Errors are max|gpu - cpu| / max|cpu| (absolute where the reference is ~0);
 * outputs start as NaN, so an element a kernel fails to write fails. Each
 * check prints its largest error; the exit status is 1 on any failed
 * case. Usage: harness [SECTION...] (default: all of them); each section
 * draws from its own seed (LMC_EMU_SEED, default 20240611, + its index):
 *   attn_train  attention_train.cu forward + backward, fp32 and bf16 (mma)
 *   sample      sample.cu vs lmc_sample_logits_row: the same id, exactly
 *   ops         adamw / sumsq / zero, rmsnorm / layernorm, rope (+ kv store),
 *               swiglu / gelu, add, embed fwd + bwd, argmax
 *   xent        classifier_xent.cu (its GEMMs through matmul.cu's
 *               lmc_cuda_gemm and the cuBLASLt model); soft_xent.cu
 *               (distillation's loss and gradient)
 *   attn        attention.cu (tensor-core prefill and split-K kernels) and
 *               attention_paged.cu
 *   mm          matmul.cu: every entry, GEMV and cuBLASLt paths, F32 /
 *               BF16 / F16 weights, bias epilogue and fallback, backward
 *               in fp32 and train_bf16 (see test_mm)
 *   optim       adamw8bit.cu, newton_schulz.cu (Muon), lowrank.cu (GaLore,
 *               APOLLO) vs their CPU twins
 *               (harness_optim.cc)
 *   e2e         llama-, gpt2-, qwen2- and qwen3-tiny through the real CUDA table:
 *               forward logits (fp32, bf16) and a training step + AdamW
 *               (fp32, train_bf16) vs the CPU backend (see test_e2e)
 *   kvq         attention_kvq.cu: the compressed store (q8, q4, KIVI-2 with
 *               rollbacks) decodes as the CPU store's, and attention over
 *               the CPU-written layers vs lmc_kvq_attention
 *   moe         moe_gemm.cu: grouped GEMM forward (F32 / BF16 / F16
 *               weights) and backward (dx =, +=; dw +=) vs the CPU twin,
 *               both paths (one launch; the per-expert matmul loop), odd
 *               sizes, experts without rows, one with every row, more
 *               experts than one launch covers (test_moe); moe_route.cu
 *               and clamp.cu vs their CPU twins (harness_moe.cc)
 *   ssm         conv1d_causal / ssm_scan / ssd_chunk / rmsnorm_gated .cu:
 *               forward, decode step, backward; mamba-tiny / mamba2-tiny
 *               through the CUDA table (harness_ssm.inc)
 *   lora        LoRA adapters through the real CUDA table: the PEFT fixture's
 *               forward, training steps padded and packed (see test_lora)
 *   lora_rows   per-request adapters (train/lora_bank.h): a paged batch mixing
 *               base, the PEFT fixture's adapter and a random one (rows
 *               grouped by adapter) through the CUDA table vs the CPU
 *   qmm         qmatmul.cu: quantized weights uploaded through the table
 *               (GGUF blocks, GPTQ / AWQ / rtn groups, NF4, ternary), the
 *               GEMV and tensor-core paths vs the dequantized float
 *               reference and the CPU twin (harness_qmm.cc)
 *   rl          lmc rl through the real CUDA table on llama-tiny, fp32: the
 *               trainer's log-probabilities and weighted backward, then
 *               GRPO and PPO steps (rollouts through the scheduler on the
 *               policy's arena view, loss, KL, updated weights) vs the CPU
 *               (harness_rl.cc)
 *   qlora       qmatmul_f.cu: QLoRA's 4-bit base (NF4 flat / per row, double-
 *               quantized or float absmax, row views; int4 / int8 groups,
 *               act-order) dequantized bit for bit as the host, forward and
 *               input-gradient backward vs the CPU twin (fp32, bf16), and a
 *               whole QLoRA finetune step (llama/qwen2/gpt2-tiny) through the
 *               real table vs the CPU run; LoRA's bf16 base (frozen linears
 *               kept bf16) = the f32 base in the bf16 mode (harness_qlora.cc)
 *   moe_e2e     mixtral-, qwen2moe-, qwen3moe-, olmoe- and olmoe-clip-tiny
 *               through the real CUDA table: forward logits (fp32, bf16)
 *               and a training step with the load-balancing loss (fp32,
 *               train_bf16) vs the CPU backend; the paged batch step;
 *               LoRA on the experts (training); quantized experts
 *               (harness_moe.cc)
 *   finetune    lmc finetune --full --pack's path: a trainer over the whole
 *               model fed packed rows by a batch source, two accumulated,
 *               clipped AdamW steps (llama/qwen2-tiny) vs the CPU run
 *               (harness_finetune.cc)
 *   zero        the ZeRO trainer (train/trainer_dist.c, dist/zero.c) on
 *               device memory, one process: llama-tiny filled unit by unit
 *               from its folder, ZeRO 0/2/3 (and 3 in one bucket), 3 AdamW
 *               steps vs the CPU trainer (harness_zero.cc)
 *   kvq_paged   attention_paged_kvq.cu: the compressed paged pools (q8, q4,
 *               KIVI-2 with f16 rings) through the real table's paged
 *               entries vs the CPU twins: pool and ring bytes equal, the
 *               attention within 1e-5, over prefill, decode, long-chunk and
 *               rollback steps (harness_kvq_paged.cc)
 *   distill     distillation's step through the real table (model/distill.c:
 *               the teacher's inference forward in chunks, soft_xent.cu, the
 *               head's backward) vs the CPU
 *   ring_attn   attn_block.cu: ring attention's block forward, log-sum-exp
 *               merge and backward vs the CPU twin, zigzag slices, causal
 *               and non-causal, and composed over the ring vs the whole
 *               sequence's attention (harness_ring.cc)
 * The ctx is the one the real lmc_backend_cuda_init builds (backend_cuda.cu
 * on the runtime model, cuda_runtime_model.h; cuBLASLt: cublaslt_model.h). */
#include "ops/cuda/common.cuh"
#include "ops/cuda/attention_train.h"
#include "ops/cuda/ops_cuda.h"
#include "cublaslt_model.h"

extern "C" {
#include "core/dtype.h"
#include "model/backward.h"
#include "model/model.h"
#include "train/lora.h"
#include "train/lora_train.h"
#include "core/rng.h"
#include "model/forward_batch.h"
#include "train/lora_bank.h"
}

#include <cstdarg>
#include <functional>
#include <sys/wait.h>
#include <unistd.h>
#include <map>
#include <random>
#include <string>


static std::mt19937_64 rng(20240611);
static float frand() { return std::uniform_real_distribution<float>(-1, 1)(rng); }
static int irand(int n) { return (int)(rng() % (uint64_t)n); }
static std::vector<float> rv(size_t n, float s = 1) {
    std::vector<float> v(n);
    for (auto &x : v) x = frand() * s;
    return v;
}
static std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }

/* max|a-b| / max|b| (absolute when max|b| < 1e-6); a NaN in a is +inf */
static double rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] != a[i] && b[i] == b[i]) return INFINITY;
        if (b[i] == b[i]) num = std::max(num, fabs((double)a[i] - b[i]));
        den = std::max(den, fabs((double)b[i]));
    }
    return num / (den > 1e-6 ? den : 1.0);
}
static double rel(const std::vector<float> &a, const std::vector<float> &b) {
    return rel(a.data(), b.data(), b.size());
}

static struct lmc_backend cpu;
static struct lmc_backend gpu;  /* lmc_backend_cuda_init, run in emulation */
static struct lmc_cuda_ctx *cc; /* its ctx */
static int n_fail;
struct worst { double err = 0, tol = 0; long cases = 0, fails = 0; };
static std::map<std::string, worst> table;

/* records one comparison; prints failures at once, the worst per name at the end */
static void check(const std::string &name, double err, double tol, const char *fmt = "", ...)
    __attribute__((format(printf, 4, 5)));
static void check(const std::string &name, double err, double tol, const char *fmt, ...) {
    worst &w = table[name];
    w.cases++, w.tol = tol;
    if (err > w.err || err != err) w.err = err;
    if (!(err <= tol)) {
        n_fail++, w.fails++;
        char buf[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        printf("FAIL %s %s: err %.3g > tol %.1g\n", name.c_str(), buf, err, tol);
    }
}

/* ------------------------------------------------------------------ */
static void test_attn_train() {
    struct { int64_t B, T, H, KV, hd, win; } shapes[] = { /* test_attention_train_cuda.c's, smaller */
        {2, 7, 4, 2, 64, 0},    {1, 1, 2, 1, 64, 0},    {2, 129, 8, 2, 80, 0}, {2, 200, 4, 4, 96, 0},
        {1, 333, 6, 3, 128, 0}, {2, 300, 4, 2, 64, 50}, {1, 257, 4, 1, 128, 50}, {1, 190, 2, 2, 96, 3},
        {2, 70, 2, 1, 40, 0},   {1, 65, 2, 2, 256, 17}, {1, 33, 3, 1, 17, 0},  {1, 150, 2, 1, 64, 1},
    };
    for (auto &s : shapes) {
        const int64_t nq = s.B * s.T * s.H * s.hd, nk = s.B * s.T * s.KV * s.hd, nl = s.B * s.T * s.H;
        const float scale = 1.0f / sqrtf((float)s.hd);
        auto q = rv(nq, 2), k = rv(nk), v = rv(nk), dout = rv(nq);
        std::vector<float> o(nq), l(nl), dq(nq), dk(nk), dv(nk);
        cpu.attention_train(cpu.ctx, o.data(), l.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H,
                            s.KV, s.hd, scale, s.win);
        cpu.attention_bwd(cpu.ctx, dq.data(), dk.data(), dv.data(), dout.data(), o.data(), l.data(),
                          q.data(), k.data(), v.data(), s.B, s.T, s.H, s.KV, s.hd, scale, s.win);
        for (int bf = 0; bf < 2; bf++) {
            cc->train_bf16 = bf;
            auto og = nans(nq), lg = nans(nl), dqg = nans(nq), dkg = nans(nk), dvg = nans(nk);
            lmc_cuda_attention_train(cc, og.data(), lg.data(), q.data(), k.data(), v.data(), s.B, s.T,
                                     s.H, s.KV, s.hd, scale, s.win);
            lmc_cuda_attention_bwd(cc, dqg.data(), dkg.data(), dvg.data(), dout.data(), og.data(),
                                   lg.data(), q.data(), k.data(), v.data(), s.B, s.T, s.H, s.KV, s.hd,
                                   scale, s.win);
            const double tol = bf ? 3e-2 : 1e-4;
            const std::string p = bf ? "attn_train bf16 " : "attn_train fp32 ";
            double e[5] = {rel(og, o), rel(lg, l), rel(dqg, dq), rel(dkg, dk), rel(dvg, dv)};
            const char *nm[5] = {"out", "lse", "dq", "dk", "dv"};
            printf("  %s B=%ld T=%ld H=%ld KV=%ld hd=%ld win=%ld: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n",
                   bf ? "bf16" : "fp32", (long)s.B, (long)s.T, (long)s.H, (long)s.KV, (long)s.hd,
                   (long)s.win, e[0], e[1], e[2], e[3], e[4]);
            for (int i = 0; i < 5; i++)
                check(p + nm[i], e[i], tol, "B=%ld T=%ld hd=%ld win=%ld", (long)s.B, (long)s.T,
                      (long)s.hd, (long)s.win);
        }
    }
    /* packed sequences in one launch (attention_train_segs / _bwd_segs)
     * against the CPU twin run once a segment; lengths from 1 to past two
     * tiles, a window, GQA, fp32 and bf16 */
    struct { int64_t H, KV, hd, win; std::vector<int64_t> segs; } packs[] = {
        {4, 2, 64, 0, {0, 5, 5, 70, 75, 1, 76, 130, 206, 64}},
        {6, 3, 128, 0, {0, 129, 129, 3, 132, 33}},
        {2, 1, 80, 17, {0, 40, 40, 97}},
        {3, 3, 40, 0, {0, 7, 7, 66, 73, 2}},
    };
    for (auto &s : packs) {
        const int64_t ns = (int64_t)s.segs.size() / 2, rows = s.segs[2 * ns - 2] + s.segs[2 * ns - 1];
        const int64_t qd = s.H * s.hd, kvd = s.KV * s.hd;
        const float scale = 1.0f / sqrtf((float)s.hd);
        auto q = rv(rows * qd, 2), k = rv(rows * kvd), v = rv(rows * kvd), dout = rv(rows * qd);
        std::vector<float> o(rows * qd), l(rows * s.H), dq(rows * qd), dk(rows * kvd), dv(rows * kvd);
        for (int64_t i = 0; i < ns; i++) {
            const int64_t r0 = s.segs[2 * i], len = s.segs[2 * i + 1];
            cpu.attention_train(cpu.ctx, &o[r0 * qd], &l[r0 * s.H], &q[r0 * qd], &k[r0 * kvd], &v[r0 * kvd], 1,
                                len, s.H, s.KV, s.hd, scale, s.win);
            cpu.attention_bwd(cpu.ctx, &dq[r0 * qd], &dk[r0 * kvd], &dv[r0 * kvd], &dout[r0 * qd], &o[r0 * qd],
                              &l[r0 * s.H], &q[r0 * qd], &k[r0 * kvd], &v[r0 * kvd], 1, len, s.H, s.KV, s.hd,
                              scale, s.win);
        }
        for (int bf = 0; bf < 2; bf++) {
            cc->train_bf16 = bf;
            auto og = nans(rows * qd), lg = nans(rows * s.H), dqg = nans(rows * qd), dkg = nans(rows * kvd),
                 dvg = nans(rows * kvd);
            lmc_cuda_attention_train_segs(cc, og.data(), lg.data(), q.data(), k.data(), v.data(), s.segs.data(),
                                          ns, s.H, s.KV, s.hd, scale, s.win);
            lmc_cuda_attention_bwd_segs(cc, dqg.data(), dkg.data(), dvg.data(), dout.data(), og.data(), lg.data(),
                                        q.data(), k.data(), v.data(), s.segs.data(), ns, s.H, s.KV, s.hd, scale,
                                        s.win);
            /* bit for bit the kernels' per-segment launches */
            auto o1 = nans(rows * qd), l1 = nans(rows * s.H), dq1 = nans(rows * qd), dk1 = nans(rows * kvd),
                 dv1 = nans(rows * kvd);
            for (int64_t i = 0; i < ns; i++) {
                const int64_t r0 = s.segs[2 * i], len = s.segs[2 * i + 1];
                lmc_cuda_attention_train(cc, &o1[r0 * qd], &l1[r0 * s.H], &q[r0 * qd], &k[r0 * kvd], &v[r0 * kvd],
                                         1, len, s.H, s.KV, s.hd, scale, s.win);
                lmc_cuda_attention_bwd(cc, &dq1[r0 * qd], &dk1[r0 * kvd], &dv1[r0 * kvd], &dout[r0 * qd],
                                       &o1[r0 * qd], &l1[r0 * s.H], &q[r0 * qd], &k[r0 * kvd], &v[r0 * kvd], 1,
                                       len, s.H, s.KV, s.hd, scale, s.win);
            }
            const bool same = o1 == og && l1 == lg && dq1 == dqg && dk1 == dkg && dv1 == dvg;
            check(std::string(bf ? "attn_train segs bf16" : "attn_train segs fp32") + " == per-segment launches",
                  same ? 0.0 : 1.0, 0.5, "n=%ld rows=%ld hd=%ld", (long)ns, (long)rows, (long)s.hd);
            const double tol = bf ? 3e-2 : 1e-4;
            const std::string p = bf ? "attn_train segs bf16 " : "attn_train segs fp32 ";
            double e[5] = {rel(og, o), rel(lg, l), rel(dqg, dq), rel(dkg, dk), rel(dvg, dv)};
            const char *nm[5] = {"out", "lse", "dq", "dk", "dv"};
            printf("  segs %s n=%ld rows=%ld H=%ld KV=%ld hd=%ld win=%ld: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n",
                   bf ? "bf16" : "fp32", (long)ns, (long)rows, (long)s.H, (long)s.KV, (long)s.hd, (long)s.win,
                   e[0], e[1], e[2], e[3], e[4]);
            for (int i = 0; i < 5; i++)
                check(p + nm[i], e[i], tol, "n=%ld rows=%ld hd=%ld win=%ld", (long)ns, (long)rows, (long)s.hd,
                      (long)s.win);
        }
    }
    cc->train_bf16 = false;
}

/* ------------------------------------------------------------------ */
/* rows of every kind the sampler meets: spread or peaked logits, heavy
 * ties, all equal, -inf entries (one finite left), and parameters at their
 * edges (top_k 1, V, > V; top_p tiny / 1; min_p 1; u 0 and near 1). u near
 * 1 is 1 - 2^-40, not 1 - 2^-53: sample.cu documents that its sums' order
 * may differ from the host's within ~1e-16 of a boundary, and a tail of
 * tokens with p ~ 1e-20 puts 1 - 2^-53 there (the GPU is then the exact
 * one); test_sample.c's 1 - 2^-53 case with a banned token is run as is. */
static void test_sample() {
    long rows_tot = 0, bad = 0;
    for (int it = 0; it < 400; it++) {
        int V = irand(4) ? 1 + 2 * irand(700) : 1 + 2 * irand(20);
        int rows = 1 + irand(3);
        std::vector<float> lg((size_t)rows * V);
        std::vector<lmc_sample_row> P(rows);
        for (int r = 0; r < rows; r++) {
            float *x = &lg[(size_t)r * V];
            int m = irand(7);
            double sc = m == 0 ? 0.1 : m == 1 ? 3 : 10;
            for (int i = 0; i < V; i++) {
                if (m == 2 || m == 3) x[i] = (float)irand(m == 2 ? 3 : 8);
                else if (m == 4) x[i] = 1.5f;
                else x[i] = (float)(std::normal_distribution<double>(0, 1)(rng) * sc);
                if ((m == 3 || m == 5) && irand(4) == 0) x[i] = -INFINITY;
                if (m == 6) x[i] = irand(3) ? 0.0f : -INFINITY;
            }
            if (m == 5 && irand(2))
                for (int i = 0; i < V; i++) x[i] = i == V / 2 ? x[i] : -INFINITY;
            if (m == 5) x[V / 2] = (float)irand(3); /* at least one finite logit */
            int nzero = 0;
            for (int i = 0; i < V; i++) nzero += x[i] == 0.0f;
            if (m == 6 && nzero == 0) x[0] = 0, nzero = 1;
            auto U = [] { return std::uniform_real_distribution<double>(0, 1)(rng); };
            lmc_sample_row &p = P[r];
            const double temps[] = {0, 0.25, 0.7, 1, 1.3, 4};
            p.temperature = irand(5) == 0 ? 0 : irand(2) ? temps[irand(6)] : 0.05 + 3 * U();
            int kk = irand(8);
            p.top_k = kk == 0 ? 0 : kk == 1 ? 1 : kk == 2 ? V : kk == 3 ? V + 1 + irand(5) : kk == 4 ? V - 1
                    : kk == 5 ? 2 : 1 + irand(V);
            if (irand(3) == 0) p.top_k = 0;
            int pp = irand(7);
            p.top_p = pp < 2 ? 1.0 : pp == 2 ? 0.9 : pp == 3 ? 1e-9 : pp == 4 ? 0.5 : U() * 0.999 + 0.0005;
            int mp = irand(7);
            p.min_p = mp < 3 ? 0 : mp == 3 ? 1.0 : mp == 4 ? 0.05 : U() * 0.6;
            if (m == 6 && irand(2)) p.top_p = std::min(1.0, (double)(1 + irand(nzero)) / nzero);
            int uu = irand(6);
            p.u = m == 6 && irand(2) ? (double)irand(nzero) / nzero
                : uu == 0 ? 0 : uu == 1 ? 1 - 0x1p-40 : U();
        }
        std::vector<int32_t> got(rows, -7), idx(V);
        std::vector<float> prob(V);
        lmc_cuda_sample_rows(cc, got.data(), lg.data(), rows, V, P.data());
        for (int r = 0; r < rows; r++) {
            int32_t want = lmc_sample_logits_row(&lg[(size_t)r * V], V, &P[r], idx.data(), prob.data());
            rows_tot++;
            if (want != got[r]) {
                bad++;
                printf("  sample mismatch V=%d T=%g top_k=%ld top_p=%.17g min_p=%.17g u=%.17g: cpu %d gpu %d\n",
                       V, P[r].temperature, (long)P[r].top_k, P[r].top_p, P[r].min_p, P[r].u, want, got[r]);
            }
        }
    }
    { /* test_sample.c: u just below 1 must not draw the banned (-inf) last token */
        const float row[11] = {6, 2, 6, 0, 1, 4, 1, 0, 0, 0, -INFINITY};
        lmc_sample_row p = {0.2, 1, 0, 1.0 - 0x1p-53, 11};
        int32_t id = -1, idx[11];
        float prob[11];
        lmc_cuda_sample_rows(cc, &id, row, 1, 11, &p);
        rows_tot++, bad += id == 10 || id != lmc_sample_logits_row(row, 11, &p, idx, prob);
    }
    printf("  sample_rows: %ld rows, %ld ids differ\n", rows_tot, bad);
    check("sample_rows (ids differing)", (double)bad, 0, "%ld rows", rows_tot);
}

/* ------------------------------------------------------------------ */
static void test_ops() {
    /* sumsq, adamw, zero */
    for (int64_t n : {1, 7, 255, 257, 1001, 65537, 200001}) {
        auto x = rv(n, 3);
        double a = lmc_cuda_sumsq(cc, x.data(), n), b = cpu.sumsq(cpu.ctx, x.data(), n);
        check("sumsq", fabs(a - b) / b, 1e-12, "n=%ld", (long)n);
        if (n > 70000) continue;
        auto p = rv(n), g = rv(n, 2), m = rv(n, .1f), v = rv(n);
        for (auto &t : v) t = t * t * 0.01f;
        lmc_adamw_step s = {1.1e-3f, 1 - 1e-4f, 0.999f, 0.1f, 0.001f, sqrtf(1 - powf(0.999f, 3)), 1e-8f, 0.7f};
        auto p2 = p, m2 = m, v2 = v;
        lmc_cuda_adamw(cc, p.data(), g.data(), m.data(), v.data(), n, &s);
        cpu.adamw(cpu.ctx, p2.data(), g.data(), m2.data(), v2.data(), n, &s);
        check("adamw", std::max({rel(p, p2), rel(m, m2), rel(v, v2)}), 1e-6, "n=%ld", (long)n);
        lmc_cuda_zero(cc, p.data(), (size_t)n * 4);
        check("zero", rel(p, std::vector<float>(n, 0.0f)), 0, "n=%ld", (long)n);
    }
    /* rmsnorm / layernorm forward (y aliasing x too) and backward */
    for (int64_t M : {1, 3, 257}) for (int64_t C : {1, 5, 33, 255, 1025}) for (int mode = 0; mode < 3; mode++) {
        if (M * C > 100000) continue;
        auto x = rv(M * C, 2), dy = rv(M * C), w = rv(C), bias = rv(C);
        if (mode == 2) for (auto &t : x) t += 30; /* mean >> spread */
        const float eps = 1e-5f;
        auto y1 = nans(M * C), y2 = nans(M * C);
        lmc_cuda_rmsnorm(cc, y1.data(), x.data(), w.data(), M, C, eps);
        cpu.rmsnorm(cpu.ctx, y2.data(), x.data(), w.data(), M, C, eps);
        check("rmsnorm", rel(y1, y2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        y1 = x;
        lmc_cuda_layernorm(cc, y1.data(), y1.data(), w.data(), bias.data(), M, C, eps);
        cpu.layernorm(cpu.ctx, y2.data(), x.data(), w.data(), bias.data(), M, C, eps);
        check("layernorm (in place)", rel(y1, y2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        auto dx1 = rv(M * C), dw1 = rv(C), db1 = rv(C), dx2 = dx1, dw2 = dw1, db2 = db1;
        bool no_dw = mode == 1 && C % 2, no_db = mode == 1 && !(C % 2);
        lmc_cuda_rmsnorm_bwd(cc, dx1.data(), no_dw ? nullptr : dw1.data(), dy.data(), x.data(), w.data(), M, C, eps);
        cpu.rmsnorm_bwd(cpu.ctx, dx2.data(), no_dw ? nullptr : dw2.data(), dy.data(), x.data(), w.data(), M, C, eps);
        check("rmsnorm_bwd dx", rel(dx1, dx2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        check("rmsnorm_bwd dw", rel(dw1, dw2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        dx1 = rv(M * C), dw1 = rv(C), dx2 = dx1, dw2 = dw1;
        lmc_cuda_layernorm_bwd(cc, dx1.data(), no_dw ? nullptr : dw1.data(), no_db ? nullptr : db1.data(),
                               dy.data(), x.data(), w.data(), M, C, eps);
        cpu.layernorm_bwd(cpu.ctx, dx2.data(), no_dw ? nullptr : dw2.data(), no_db ? nullptr : db2.data(),
                          dy.data(), x.data(), w.data(), M, C, eps);
        check("layernorm_bwd dx", rel(dx1, dx2), 1e-5, "M=%ld C=%ld mode=%d", (long)M, (long)C, mode);
        check("layernorm_bwd dw", rel(dw1, dw2), mode == 2 ? 1e-4 : 1e-5, "M=%ld C=%ld mode=%d", (long)M, (long)C, mode);
        check("layernorm_bwd db", rel(db1, db2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
    }
    /* rope forward / backward, and rope_kv_store (bf16 and f16 caches) */
    struct { int64_t M, H, KV, D, R; } rs[] = {{1, 8, 2, 64, 64}, {7, 4, 4, 80, 80}, {33, 6, 2, 128, 32},
                                              {5, 3, 1, 16, 0}, {9, 3, 3, 66, 34}};
    for (auto &r : rs) {
        const int64_t ctx = 100, kvd = r.KV * r.D;
        std::vector<double> inv(r.R / 2 + 1);
        for (int64_t i = 0; i < r.R / 2; i++) inv[i] = pow(10000.0, -2.0 * i / (double)r.R);
        std::vector<int32_t> pos(r.M);
        for (int64_t m = 0; m < r.M; m++) pos[m] = (int32_t)((m * 37 + 11) % ctx);
        auto x1 = rv(r.M * r.H * r.D), x2 = x1;
        if (r.R) {
            lmc_cuda_rope(cc, x1.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            cpu.rope(cpu.ctx, x2.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            check("rope", rel(x1, x2), 1e-5, "M=%ld D=%ld R=%ld", (long)r.M, (long)r.D, (long)r.R);
            lmc_cuda_rope_bwd(cc, x1.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            cpu.rope_bwd(cpu.ctx, x2.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            check("rope_bwd", rel(x1, x2), 1e-5, "M=%ld D=%ld R=%ld", (long)r.M, (long)r.D, (long)r.R);
        }
        for (int f16 = 0; f16 < 2; f16++) {
            auto q = rv(r.M * r.H * r.D), k = rv(r.M * kvd), v = rv(r.M * kvd), qc = q, kc = k;
            const uint16_t fill = f16 ? 0x4700 : lmc_f32_to_bf16(7.0f); /* 7.0 either way */
            std::vector<uint16_t> kcache(ctx * kvd, fill), vcache(ctx * kvd, fill);
            cc->kv_dtype = f16 ? LMC_DTYPE_F16 : LMC_DTYPE_BF16;
            lmc_cuda_rope_kv_store(cc, q.data(), k.data(), v.data(), kcache.data(), vcache.data(), r.M, r.H,
                                   r.KV, r.D, r.R, pos.data(), inv.data(), 0.9f);
            if (r.R) {
                cpu.rope(cpu.ctx, qc.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
                cpu.rope(cpu.ctx, kc.data(), r.M, r.KV, r.D, r.R, pos.data(), inv.data(), 0.9f);
            }
            check("rope_kv_store q", rel(q, qc), 1e-5, "M=%ld", (long)r.M);
            auto h2f = [&](uint16_t h) { return f16 ? __half2float({h}) : lmc_bf16_to_f32(h); };
            double num = 0;
            std::vector<char> hit(ctx);
            for (int64_t m = 0; m < r.M; m++) {
                hit[pos[m]] = 1;
                for (int64_t i = 0; i < kvd; i++)
                    num = std::max({num, fabs(h2f(kcache[pos[m] * kvd + i]) - kc[m * kvd + i]),
                                    fabs(h2f(vcache[pos[m] * kvd + i]) - v[m * kvd + i])});
            }
            for (int64_t p = 0; p < ctx; p++)
                for (int64_t i = 0; !hit[p] && i < kvd; i++)
                    if (kcache[p * kvd + i] != fill || vcache[p * kvd + i] != fill) num = INFINITY;
            check(f16 ? "rope_kv_store k/v f16 (abs)" : "rope_kv_store k/v bf16 (abs)", num, f16 ? 1e-3 : 8e-3,
                  "M=%ld D=%ld R=%ld", (long)r.M, (long)r.D, (long)r.R);
        }
        cc->kv_dtype = LMC_DTYPE_BF16;
    }
    /* elementwise: swiglu, gelu (erf, tanh), add, forward and backward, aliased */
    for (int64_t n : {5, 31, 1001, 70001}) {
        auto g = rv(n, 8), u = rv(n, 2), dy = rv(n), x = rv(n, 6);
        auto y1 = nans(n), y2 = nans(n), a1 = nans(n), b1 = nans(n), a2 = nans(n), b2 = nans(n);
        lmc_cuda_swiglu(cc, y1.data(), g.data(), u.data(), n);
        cpu.swiglu(cpu.ctx, y2.data(), g.data(), u.data(), n);
        check("swiglu", rel(y1, y2), 1e-5, "n=%ld", (long)n);
        lmc_cuda_add(cc, y1.data(), g.data(), u.data(), n);
        cpu.add(cpu.ctx, y2.data(), g.data(), u.data(), n);
        check("add", rel(y1, y2), 0, "n=%ld", (long)n);
        lmc_cuda_dropout(cc, y1.data(), g.data(), n, 0.3f, 77 + (uint64_t)n, 13);
        cpu.dropout(cpu.ctx, y2.data(), g.data(), n, 0.3f, 77 + (uint64_t)n, 13);
        check("dropout (same mask)", rel(y1, y2), 0, "n=%ld", (long)n);
        lmc_cuda_swiglu_bwd(cc, a1.data(), b1.data(), dy.data(), g.data(), u.data(), n);
        cpu.swiglu_bwd(cpu.ctx, a2.data(), b2.data(), dy.data(), g.data(), u.data(), n);
        check("swiglu_bwd dgate", rel(a1, a2), 1e-5, "n=%ld", (long)n);
        check("swiglu_bwd dup", rel(b1, b2), 1e-5, "n=%ld", (long)n);
        auto d1 = dy; /* dgate aliasing dy */
        lmc_cuda_swiglu_bwd(cc, d1.data(), b1.data(), d1.data(), g.data(), u.data(), n);
        check("swiglu_bwd dgate (aliasing dy)", rel(d1, a2), 1e-5, "n=%ld", (long)n);
        for (int t = 0; t < 2; t++) {
            y1 = x;
            lmc_cuda_gelu(cc, y1.data(), y1.data(), n, t);
            cpu.gelu(cpu.ctx, y2.data(), x.data(), n, t);
            check(t ? "gelu tanh (in place)" : "gelu erf (in place)", rel(y1, y2), 1e-5, "n=%ld", (long)n);
            d1 = dy;
            lmc_cuda_gelu_bwd(cc, d1.data(), d1.data(), x.data(), n, t);
            cpu.gelu_bwd(cpu.ctx, a2.data(), dy.data(), x.data(), n, t);
            check(t ? "gelu_bwd tanh (in place)" : "gelu_bwd erf (in place)", rel(d1, a2), 1e-5, "n=%ld", (long)n);
        }
    }
    /* embed forward (F32, BF16, F16 tables) and backward (repeated ids) */
    for (int64_t n : {1, 17, 300}) for (int64_t C : {1, 7, 300, 1025}) for (int64_t rows : {1, 3, 50}) {
        std::vector<int32_t> ids(n);
        for (auto &i : ids) i = irand((int)rows);
        auto tf = rv(rows * C);
        std::vector<uint16_t> tb(rows * C), th(rows * C);
        for (int64_t i = 0; i < rows * C; i++) tb[i] = lmc_f32_to_bf16(tf[i]), th[i] = __float2half_rn(tf[i]).x;
        const void *data[3] = {tf.data(), tb.data(), th.data()};
        const enum lmc_dtype dts[3] = {LMC_DTYPE_F32, LMC_DTYPE_BF16, LMC_DTYPE_F16};
        for (int d = 0; d < 3; d++) {
            lmc_mat t = {dts[d], rows, C, (void *)data[d]};
            auto y1 = nans(n * C), y2 = nans(n * C);
            lmc_cuda_embed(cc, y1.data(), &t, ids.data(), n);
            cpu.embed(cpu.ctx, y2.data(), &t, ids.data(), n);
            check("embed", rel(y1, y2), 0, "n=%ld C=%ld dtype %d", (long)n, (long)C, d);
        }
        auto dy = rv(n * C), t1 = rv(rows * C), t2 = t1;
        lmc_cuda_embed_bwd(cc, t1.data(), dy.data(), ids.data(), n, C);
        cpu.embed_bwd(cpu.ctx, t2.data(), dy.data(), ids.data(), n, C);
        check("embed_bwd", rel(t1, t2), 1e-6, "n=%ld C=%ld rows=%ld", (long)n, (long)C, (long)rows);
    }
    /* argmax: ties (first wins), NaN entries, a NaN at index 0 */
    for (int64_t V : {1, 2, 33, 1001, 50001}) for (int kind = 0; kind < 4; kind++) {
        const int64_t rows = 3;
        std::vector<float> lg(rows * V);
        for (auto &x : lg) x = kind == 1 ? (float)irand(4) : frand();
        if (kind == 2) for (int i = 0; i < 5; i++) lg[irand((int)(rows * V))] = NAN;
        if (kind == 3) lg[0] = NAN, lg[V * (rows - 1)] = NAN;
        std::vector<int32_t> g(rows, -7), c(rows, -9);
        lmc_cuda_argmax_rows(cc, g.data(), lg.data(), rows, V);
        cpu.argmax_rows(cpu.ctx, c.data(), lg.data(), rows, V);
        int diff = 0;
        for (int64_t r = 0; r < rows; r++) diff += g[r] != c[r];
        check("argmax_rows (ids differing)", diff, 0, "V=%ld kind=%d", (long)V, kind);
    }
}

/* ------------------------------------------------------------------ */
static void test_xent() {
    for (int bf = 0; bf < 2; bf++)
        for (int64_t M : {1, 7, 67}) for (int64_t V : {1, 5, 77, 1001, 1004, 64}) for (int64_t C : {1, 9, 33})
            for (int grads = 0; grads < 3; grads++) { /* loss only; + dh; + dh and dw */
                cc->train_bf16 = bf;
                /* blocks of 16 rows at M = 67 (5 blocks, dw summed over them), else the vocabulary's size */
                cc->xent_rows = M == 67 ? 16 : 0;
                auto h = rv(M * C), W = rv(V * C, 0.5f);
                std::vector<int32_t> tg(M);
                for (auto &t : tg) t = irand(5) == 0 ? -1 : irand((int)V);
                lmc_mat w = {LMC_DTYPE_F32, V, C, W.data()};
                auto l1 = nans(M), l2 = nans(M), dh1 = nans(M * C), dh2 = nans(M * C);
                auto dw1 = rv(V * C), dw2 = dw1;
                float *pdh1 = grads ? dh1.data() : nullptr, *pdh2 = grads ? dh2.data() : nullptr;
                float *pdw1 = grads == 2 ? dw1.data() : nullptr, *pdw2 = grads == 2 ? dw2.data() : nullptr;
                lmc_cuda_classifier_xent(cc, l1.data(), pdh1, pdw1, h.data(), &w, tg.data(), M, 1.0f / M);
                cpu.classifier_xent(cpu.ctx, l2.data(), pdh2, pdw2, h.data(), &w, tg.data(), M, 1.0f / M);
                const double tol = bf ? 2e-2 : 1e-5;
                const std::string p = bf ? "classifier_xent bf16 " : "classifier_xent fp32 ";
                check(p + "loss", rel(l1, l2), tol, "M=%ld V=%ld C=%ld", (long)M, (long)V, (long)C);
                if (grads) check(p + "dh", rel(dh1, dh2), tol, "M=%ld V=%ld C=%ld", (long)M, (long)V, (long)C);
                if (grads == 2) check(p + "dw", rel(dw1, dw2), tol, "M=%ld V=%ld C=%ld", (long)M, (long)V, (long)C);
            }
    cc->train_bf16 = false;
    cc->xent_rows = 0;
    /* soft_xent.cu (distillation): CE, KL, agreement and the in-place gradient vs the CPU twin; ignored
     * targets, temperatures 1 and not, alpha 0 / between / 1, tied maxima (integer logits: first wins) */
    for (int64_t R : {1, 6, 37}) for (int64_t V : {1, 5, 300, 1001}) for (int kind = 0; kind < 3; kind++)
        for (float alpha : {0.0f, 0.4f, 1.0f}) for (float temp : {1.0f, 2.5f}) for (int grad = 0; grad < 2; grad++) {
            auto S = rv(R * V, 4.0f), T = rv(R * V, 4.0f);
            if (kind == 1) for (int64_t i = 0; i < R * V; i++) S[i] = (float)irand(4), T[i] = (float)irand(4);
            if (kind == 2) for (int64_t i = 0; i < R * V; i++) T[i] = 1.5f * S[i]; /* the same argmax */
            std::vector<int32_t> tg(R);
            for (auto &t : tg) t = irand(4) == 0 ? -1 : irand((int)V);
            auto s1 = S, s2 = S;
            auto c1 = nans(R), c2 = nans(R), k1 = nans(R), k2 = nans(R), a1 = nans(R), a2 = nans(R);
            lmc_cuda_soft_xent(cc, c1.data(), k1.data(), a1.data(), s1.data(), T.data(), tg.data(), R, V, alpha, temp,
                               0.3f, grad);
            cpu.soft_xent(cpu.ctx, c2.data(), k2.data(), a2.data(), s2.data(), T.data(), tg.data(), R, V, alpha, temp,
                          0.3f, grad);
            check("soft_xent ce", rel(c1, c2), 1e-5, "R=%ld V=%ld kind %d", (long)R, (long)V, kind);
            double ek = 0; /* KL can be ~0: absolute */
            for (int64_t r = 0; r < R; r++) ek = std::max(ek, (double)std::fabs(k1[r] - k2[r]));
            check("soft_xent kl (abs)", ek, 1e-5, "R=%ld V=%ld kind %d T %g", (long)R, (long)V, kind, (double)temp);
            check("soft_xent agree", rel(a1, a2), 0, "R=%ld V=%ld kind %d", (long)R, (long)V, kind);
            check(grad ? "soft_xent grad" : "soft_xent fwd only (logits kept)", rel(s1, s2), grad ? 1e-5 : 0,
                  "R=%ld V=%ld kind %d alpha %g T %g", (long)R, (long)V, kind, (double)alpha, (double)temp);
        }
}

/* ------------------------------------------------------------------ */
static void test_attn() {
    /* attention.cu: every kind over f32 and bf16 caches (the CPU reference
     * reads the bf16-rounded k, v where the kernel does), prefill, chunks,
     * decode, windows, GQA, a batch of sequences */
    struct { int64_t M, pos0, win, H, KV, D, B; float qs; } cs[] = { /* qs 60: a peaked softmax */
        {1, 0, 0, 4, 4, 16, 1, 2},   {1, 37, 5, 4, 2, 13, 1, 2},  {5, 0, 0, 8, 2, 24, 1, 2},
        {17, 9, 6, 2, 1, 64, 1, 2},  {130, 0, 0, 2, 1, 64, 1, 2}, {3, 60, 64, 6, 3, 80, 1, 2},
        {70, 30, 0, 4, 1, 128, 1, 2}, {1, 300, 0, 2, 2, 96, 1, 2}, {150, 0, 50, 2, 1, 96, 1, 2},
        {2, 500, 100, 4, 2, 64, 1, 2}, {300, 5, 0, 4, 2, 128, 1, 60}, {77, 0, 0, 4, 2, 64, 3, 2},
    };
    for (auto &s : cs) { /* B > 1: sequences side by side, strides of one sequence */
        const int64_t T = s.pos0 + s.M, sq = s.M * s.H * s.D, sk = T * s.KV * s.D, nq = s.B * sq, nk = s.B * sk;
        const float scale = 1.0f / sqrtf((float)s.D);
        auto q = rv(nq, s.qs), k = rv(nk, 2), v = rv(nk);
        const bool peaked = s.qs > 10; /* bf16-exact inputs: only the kernel's rounding counts */
        for (auto *b : {&q, &k, &v})
            for (auto &x : *b) x = peaked ? lmc_bf16_to_f32(lmc_f32_to_bf16(x)) : x;
        std::vector<uint16_t> kb(nk), vb(nk);
        std::vector<float> kr(nk), vr(nk);
        for (int64_t i = 0; i < nk; i++) {
            kb[i] = lmc_f32_to_bf16(k[i]), vb[i] = lmc_f32_to_bf16(v[i]);
            kr[i] = lmc_bf16_to_f32(kb[i]), vr[i] = lmc_bf16_to_f32(vb[i]);
        }
        auto of = nans(nq), ob = nans(nq);
        for (int64_t b = 0; b < s.B; b++) {
            cpu.attention(cpu.ctx, &of[b * sq], &q[b * sq], &k[b * sk], &v[b * sk], s.M, s.pos0, s.H, s.KV,
                          s.D, scale, s.win);
            cpu.attention(cpu.ctx, &ob[b * sq], &q[b * sq], &kr[b * sk], &vr[b * sk], s.M, s.pos0, s.H, s.KV,
                          s.D, scale, s.win);
        }
        const bool tc_ok = s.D == 64 || s.D == 80 || s.D == 96 || s.D == 128;
        for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32 + 1; kind++) {
            enum lmc_cuda_attn_kind kd = kind > LMC_CUDA_ATTN_F32 ? LMC_CUDA_ATTN_F32 : (enum lmc_cuda_attn_kind)kind;
            bool f32kv = kind == LMC_CUDA_ATTN_F32;
            if (kd == LMC_CUDA_ATTN_TC && !tc_ok) continue;
            auto o = nans(nq);
            lmc_cuda_attention_ex(cc, o.data(), q.data(), f32kv ? (const void *)k.data() : kb.data(),
                                  f32kv ? (const void *)v.data() : vb.data(), f32kv ? LMC_DTYPE_F32 : LMC_DTYPE_BF16,
                                  s.M, s.pos0, s.H, s.KV, s.D, scale, s.win, s.B, sq, sk, kd);
            std::string nm = kd == LMC_CUDA_ATTN_TC ? "attention tc (bf16 kv" : f32kv ? "attention split-K (f32 kv"
                           : "attention split-K (bf16 kv";
            nm += peaked ? ", peaked)" : ")";
            check(nm, rel(o, f32kv ? of : ob), kd == LMC_CUDA_ATTN_TC ? 2e-2 : peaked ? 1e-4 : 1e-5,
                  "M=%ld pos0=%ld win=%ld H=%ld KV=%ld D=%ld B=%ld", (long)s.M, (long)s.pos0, (long)s.win,
                  (long)s.H, (long)s.KV, (long)s.D, (long)s.B);
        }
    }
    /* attention_paged.cu: sequences of mixed lengths through shuffled block
     * tables, the batch's tokens stored first, f32 and bf16 pools */
    struct { int64_t NS, maxlen, H, KV, D, bs, win; } ps[] = {
        {3, 40, 4, 2, 64, 16, 0}, {4, 150, 2, 1, 80, 16, 0}, {2, 70, 6, 3, 24, 8, 9}, {5, 9, 2, 2, 128, 4, 0},
    };
    for (auto &s : ps) {
        for (int bf = 0; bf < 2; bf++) {
            const int64_t kvr = s.KV * s.D, qr = s.H * s.D, maxb = (s.maxlen + s.bs - 1) / s.bs;
            const int64_t nblocks = s.NS * maxb;
            std::vector<int32_t> perm(nblocks), bt(s.NS * maxb), seq, pos;
            for (int64_t i = 0; i < nblocks; i++) perm[i] = (int32_t)i;
            std::shuffle(perm.begin(), perm.end(), rng);
            for (int64_t i = 0; i < nblocks; i++) bt[i] = perm[i];
            std::vector<int64_t> len(s.NS), nnew(s.NS);
            for (int64_t q = 0; q < s.NS; q++) {
                len[q] = 1 + irand((int)s.maxlen), nnew[q] = q % 2 ? 1 : 1 + irand((int)len[q]);
                for (int64_t p = len[q] - nnew[q]; p < len[q]; p++) seq.push_back((int32_t)q), pos.push_back((int32_t)p);
            }
            const int64_t T = (int64_t)seq.size(), rows = nblocks * s.bs;
            /* the full k, v of every sequence; the old positions already in the pool */
            std::vector<std::vector<float>> K(s.NS), Vv(s.NS);
            std::vector<float> kcf(rows * kvr, NAN), vcf(rows * kvr, NAN);
            auto slot = [&](int64_t q, int64_t p) { return (int64_t)bt[q * maxb + p / s.bs] * s.bs + p % s.bs; };
            for (int64_t q = 0; q < s.NS; q++) {
                K[q] = rv(len[q] * kvr, 2), Vv[q] = rv(len[q] * kvr);
                if (bf) for (int64_t i = 0; i < len[q] * kvr; i++)
                    K[q][i] = lmc_bf16_to_f32(lmc_f32_to_bf16(K[q][i])), Vv[q][i] = lmc_bf16_to_f32(lmc_f32_to_bf16(Vv[q][i]));
                for (int64_t p = 0; p < len[q] - nnew[q]; p++)
                    for (int64_t i = 0; i < kvr; i++)
                        kcf[slot(q, p) * kvr + i] = K[q][p * kvr + i], vcf[slot(q, p) * kvr + i] = Vv[q][p * kvr + i];
            }
            std::vector<float> qv = rv(T * qr, 2), kn(T * kvr), vn(T * kvr);
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < kvr; j++)
                    kn[i * kvr + j] = K[seq[i]][pos[i] * kvr + j], vn[i * kvr + j] = Vv[seq[i]][pos[i] * kvr + j];
            std::vector<uint16_t> kcb(rows * kvr), vcb(rows * kvr);
            for (int64_t i = 0; i < rows * kvr; i++) kcb[i] = lmc_f32_to_bf16(kcf[i]), vcb[i] = lmc_f32_to_bf16(vcf[i]);
            cc->kv_dtype = bf ? LMC_DTYPE_BF16 : LMC_DTYPE_F32;
            auto o = nans(T * qr);
            lmc_cuda_attention_paged(cc, o.data(), qv.data(), kn.data(), vn.data(),
                                     bf ? (float *)kcb.data() : kcf.data(), bf ? (float *)vcb.data() : vcf.data(),
                                     T, seq.data(), pos.data(), bt.data(), maxb, s.bs, s.H, s.KV, s.D,
                                     1.0f / sqrtf((float)s.D), s.win);
            /* reference: each token as a one-query contiguous attention */
            double num = 0, den = 0;
            for (int64_t i = 0; i < T; i++) {
                std::vector<float> ref(qr);
                cpu.attention(cpu.ctx, ref.data(), &qv[i * qr], K[seq[i]].data(), Vv[seq[i]].data(), 1, pos[i],
                              s.H, s.KV, s.D, 1.0f / sqrtf((float)s.D), s.win);
                for (int64_t j = 0; j < qr; j++) {
                    double a = o[i * qr + j], b = ref[j];
                    num = a != a ? INFINITY : std::max(num, fabs(a - b)); /* NaN sticks */
                    den = std::max(den, fabs(b));
                }
            }
            check(bf ? "attention_paged (bf16 pool)" : "attention_paged (f32 pool)", num / den, 1e-5,
                  "NS=%ld H=%ld KV=%ld D=%ld bs=%ld win=%ld", (long)s.NS, (long)s.H, (long)s.KV, (long)s.D,
                  (long)s.bs, (long)s.win);
        }
    }
    cc->kv_dtype = LMC_DTYPE_BF16;
}


/* ------------------------------------------------------------------ */
/* matmul.cu through the real table entries and the cuBLASLt model, on
 * device memory (every GEMM operand's extent checked against its block,
 * host pointers refused: strict mode): the GEMV path (M <= 8: F32 / BF16 /
 * F16, vectorised when K % 8 == 0 and rows are 16-byte aligned, scalar
 * otherwise) and the cuBLASLt path (M > 8: bf16 / f16 operands converted
 * in scratch, F32 exact), bias by epilogue and — on a second backend whose
 * heuristic refuses bias epilogues — by the fallback kernel; pointers at a
 * 4-byte offset (plans keyed by alignment); matmul_add / multi / swiglu
 * (mixed dtypes too), K == 0; matmul_bwd in fp32 and train_bf16 (dx = / +=,
 * dw +=, db +=, NULL variants) and the forward entries with F32 weights in
 * train_bf16. Tolerances of test_ops_cuda.c / test_train_ops_cuda.c. */
static void *dup_dev(const struct lmc_backend &be, const void *h, size_t bytes, size_t off = 0) {
    char *p = (char *)be.alloc(be.ctx, bytes + off);
    LMC_ASSERT(p);
    if (bytes) be.upload(be.ctx, p + off, h, bytes);
    return p + off;
}
static float *dup_dev(const struct lmc_backend &be, const std::vector<float> &v, size_t off = 0) {
    return (float *)dup_dev(be, v.data(), v.size() * 4, off * 4);
}
static float *dev_nan(const struct lmc_backend &be, size_t n, size_t off = 0) { /* cudaMalloc: NaN garbage */
    return (float *)be.alloc(be.ctx, (n + off) * 4) + off;
}
static std::vector<float> down(const struct lmc_backend &be, const float *p, size_t n) {
    std::vector<float> v(n);
    if (n) be.download(be.ctx, v.data(), p, n * 4);
    return v;
}
/* a weight matrix in dtype dt: the host copy (the CPU's) and a device copy */
struct wpair {
    lmc_mat h, d;
    std::vector<unsigned char> bytes;
};
static wpair make_w(const struct lmc_backend &be, enum lmc_dtype dt, int64_t N, int64_t K, size_t off = 0) {
    wpair w;
    const size_t es = dt == LMC_DTYPE_F32 ? 4 : 2;
    w.bytes.resize((size_t)(N * K) * es + 1);
    for (int64_t i = 0; i < N * K; i++) {
        float f = frand();
        if (dt == LMC_DTYPE_F32) memcpy(&w.bytes[i * 4], &f, 4);
        else {
            uint16_t h = dt == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(f) : __float2half_rn(f).x;
            memcpy(&w.bytes[i * 2], &h, 2);
        }
    }
    w.h = {dt, N, K, w.bytes.data()};
    w.d = {dt, N, K, dup_dev(be, w.bytes.data(), (size_t)(N * K) * es, off * es)};
    return w;
}
/* the CPU table has no fused matmul_add / matmul_swiglu: composed */
static void cpu_matmul_add(float *y, const float *x, int64_t M, const lmc_mat *w, const float *b) {
    std::vector<float> t((size_t)(M * w->rows));
    cpu.matmul(cpu.ctx, t.data(), x, M, w, b);
    cpu.add(cpu.ctx, y, y, t.data(), M * w->rows);
}
static void cpu_matmul_swiglu(float *y, const float *x, int64_t M, const lmc_mat *wg, const lmc_mat *wu) {
    std::vector<float> u((size_t)(M * wu->rows));
    cpu.matmul(cpu.ctx, y, x, M, wg, nullptr);
    cpu.matmul(cpu.ctx, u.data(), x, M, wu, nullptr);
    cpu.swiglu(cpu.ctx, y, y, u.data(), M * wu->rows);
}
static const char *dtn(enum lmc_dtype dt) { return dt == LMC_DTYPE_F32 ? "F32" : dt == LMC_DTYPE_BF16 ? "BF16" : "F16"; }

/* runs fn in a child process: an abort there (a refused cuBLASLt call ends
 * in lmc_cuda_fail) is a failed check here, and the other checks go on */
static void in_child(const std::string &name, const std::function<void()> &fn) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        fflush(stdout);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    check(name, WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1, 0, "(child %s)",
          WIFEXITED(st) ? "exited non-zero" : "aborted");
}

/* A bias less aligned than the pointer the heuristic saw: matmul.cu sets
 * CUBLASLT_MATMUL_DESC_BIAS_POINTER after cublasLtMatmulAlgoGetHeuristic
 * (which saw NULL: 256-byte alignment assumed) and leaves the bias's
 * alignment out of the plan key, so a bias at a 4-byte offset meets an
 * algorithm chosen for an aligned one (see cublaslt_model.h). The backend
 * contract puts no alignment on the bias; lmc's callers today pass 256-
 * (model weights) or 64-byte (training arena) aligned ones. */
static void test_mm_bias_align() {
    in_child("matmul bias at a 4-byte offset (GEMM epilogue)", [] {
        const int64_t M = 37, N = 77, K = 61;
        auto x = rv(M * K), w = rv(N * K), bias = rv(N + 1), yc = nans(M * N);
        lmc_mat wh = {LMC_DTYPE_F32, N, K, w.data()}, wd = {LMC_DTYPE_F32, N, K, dup_dev(gpu, w)};
        float *x_d = dup_dev(gpu, x), *b_d = dup_dev(gpu, bias), *y_d = dev_nan(gpu, M * N);
        cpu.matmul(cpu.ctx, yc.data(), x.data(), M, &wh, bias.data() + 1);
        gpu.matmul(gpu.ctx, y_d, x_d, M, &wd, b_d + 1);
        double e = rel(down(gpu, y_d, M * N), yc);
        if (e > 1e-5) { printf("  err %g\n", e); _exit(1); }
    });
}

/* lmc_backend_cuda_init on devices the sm_90-only build cannot run on: an
 * sm_80 (A100) or sm_75 device must be refused (LMC_ERR_UNSUPPORTED), not
 * accepted to fail at the first launch ("no kernel image"). */
static void test_init_arch() {
    for (int major : {7, 8}) {
        emu_device_major = major;
        struct lmc_backend be;
        lmc_err err;
        lmc_status st = lmc_backend_cuda_init(&be, 0, &err);
        if (st == LMC_OK) lmc_backend_cuda_free(&be);
        check("cuda init refuses a pre-sm_90 device", st == LMC_ERR_UNSUPPORTED ? 0 : 1, 0, "compute capability %d.0: %s",
              major, st == LMC_OK ? "accepted" : err.msg);
    }
    emu_device_major = 9;
}

/* the cuBLASLt model itself: a known answer (transposes, ld > rows, bias,
 * beta), and refusals of misuse it exists to catch */
static void test_lt_model() {
    emu_lt_quiet = true;
    cublasLtHandle_t h;
    cublasLtCreate(&h);
    auto desc = [](int ta, int tb, bool bias) {
        cublasLtMatmulDesc_t d;
        cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        cublasOperation_t a = ta ? CUBLAS_OP_T : CUBLAS_OP_N, b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &a, sizeof a);
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &b, sizeof b);
        if (bias) {
            cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
            cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
        }
        return d;
    };
    auto layout = [](cudaDataType_t t, uint64_t r, uint64_t c, int64_t ld) {
        cublasLtMatrixLayout_t l = nullptr;
        cublasLtMatrixLayoutCreate(&l, t, r, c, ld);
        return l;
    };
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    auto algo = [&](cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                    cublasLtMatrixLayout_t c) {
        cublasLtMatmulHeuristicResult_t r;
        int n = 0;
        cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, d, a, b, c, c, pref, 1, &r, &n);
        return std::make_pair(s, r.algo);
    };
    /* D (2x2) = 2 * A^T B + 0.5 C + bias, A stored (3 x 2) ld 4, B (3 x 2) ld 3 */
    alignas(256) static float A[8] = {1, 2, 3, -9, 4, 5, 6, -9}, B[6] = {1, 0, -1, 2, 1, 0};
    alignas(256) static float C[4] = {10, 20, 30, 40}, bias[2] = {100, 200};
    auto d = desc(1, 0, true);
    const void *bp = bias;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
    auto la = layout(CUDA_R_32F, 3, 2, 4), lb = layout(CUDA_R_32F, 3, 2, 3), lc = layout(CUDA_R_32F, 2, 2, 2);
    auto al = algo(d, la, lb, lc);
    const float two = 2, half = 0.5f;
    cublasStatus_t s = cublasLtMatmul(h, d, &two, A, la, B, lb, &half, C, lc, C, lc, &al.second, nullptr, 0, nullptr);
    /* A^T B: row i of A^T = column i of A: (1,2,3), (4,5,6); B columns (1,0,-1), (2,1,0) */
    const float want[4] = {2 * -2 + 5 + 100, 2 * -2 + 10 + 200, 2 * 4 + 15 + 100, 2 * 13 + 20 + 200};
    double e = s ? 1 : 0;
    for (int i = 0; i < 4; i++) e = std::max(e, (double)fabsf(C[i] - want[i]));
    check("cublasLt model: known answer", e, 0);
    /* misuse */
    cublasLtMatrixLayout_t bad = nullptr;
    check("cublasLt model refuses: ld < rows",
          cublasLtMatrixLayoutCreate(&bad, CUDA_R_32F, 5, 2, 4) == CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    int64_t big = 1;
    check("cublasLt model refuses: attribute size",
          cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &big, sizeof big) == CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    auto d2 = desc(0, 0, false);
    check("cublasLt model refuses: inner dimensions", algo(d2, la, lb, lc).first == CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    auto d3 = desc(1, 0, false);
    check("cublasLt model refuses: an algo of another problem",
          cublasLtMatmul(h, d3, &two, A, la, B, lb, &half, C, lc, C, lc, &al.second, nullptr, 0, nullptr) ==
                  CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    auto al3 = algo(d3, la, lb, lc);
    check("cublasLt model refuses: D overlapping A",
          cublasLtMatmul(h, d3, &two, A, la, B, lb, &half, A, lc, A, lc, &al3.second, nullptr, 0, nullptr) ==
                  CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    check("cublasLt model refuses: less alignment than the algo assumed",
          cublasLtMatmul(h, d3, &two, A + 1, la, B, lb, &half, C, lc, C, lc, &al3.second, nullptr, 0, nullptr) ==
                  CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    auto lh = layout(CUDA_R_16BF, 3, 2, 3);
    check("cublasLt model refuses: A and B of different types", algo(d3, la, lh, lc).first != CUBLAS_STATUS_SUCCESS ? 0 : 1, 0);
    cublasLtMatrixLayoutDestroy(lb);
    check("cublasLt model refuses: a destroyed layout",
          cublasLtMatmul(h, d3, &two, A, la, B, lb, &half, C, lc, C, lc, &al3.second, nullptr, 0, nullptr) ==
                  CUBLAS_STATUS_INVALID_VALUE ? 0 : 1, 0);
    for (auto l : {la, lc, lh}) cublasLtMatrixLayoutDestroy(l);
    for (auto q : {d, d2, d3}) cublasLtMatmulDescDestroy(q);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtDestroy(h);
    emu_lt_quiet = false;
}

static void test_mm() {
    test_lt_model();
    emu_strict_device = true;
    lmc_err err;
    struct lmc_backend nobias; /* a second table: its heuristic has no bias epilogue */
    emu_lt_refuse_bias = true;
    if (lmc_backend_cuda_init(&nobias, 0, &err)) { printf("FAIL cuda init: %s\n", err.msg); n_fail++; return; }
    emu_lt_refuse_bias = false; /* for handles made from now on */
    const enum lmc_dtype dts[3] = {LMC_DTYPE_F32, LMC_DTYPE_BF16, LMC_DTYPE_F16};
    const int64_t Ms[] = {1, 3, 8, 9, 37, 130};
    const int64_t NK[][2] = {{77, 61}, {61, 64}, {48, 128}, {40, 2056}, {7, 5}};
    long epi0 = emu_gemm_bias_epilogues;
    for (auto dt : dts)
        for (auto &nk : NK) {
            const int64_t N = nk[0], K = nk[1];
            for (int off = 0; off < 2; off++) { /* off: every pointer 4 bytes past an aligned start */
                if (off && K == 2056) continue;
                wpair w = make_w(gpu, dt, N, K, off);
                auto bias = rv(N);
                float *bias_d = dup_dev(gpu, bias, 4 * off); /* 16 bytes in: see test_mm_bias_align */
                for (int64_t M : Ms) {
                    if (K == 2056 && M > 9 && M != 130) continue;
                    auto x = rv(M * K);
                    float *x_d = dup_dev(gpu, x, off);
                    const double tol = dt == LMC_DTYPE_F32 || M <= 8 ? 1e-5 : dt == LMC_DTYPE_BF16 ? 1e-2 : 2e-3;
                    const std::string nm = std::string("matmul ") + dtn(dt) + (M <= 8 ? " gemv" : " gemm");
                    for (int b = 0; b < 3; b++) { /* no bias; bias; bias on the no-epilogue table */
                        if (b == 2 && M <= 8) continue;
                        const struct lmc_backend &be = b == 2 ? nobias : gpu;
                        auto yc = nans(M * N);
                        cpu.matmul(cpu.ctx, yc.data(), x.data(), M, &w.h, b ? bias.data() : nullptr);
                        float *y_d = dev_nan(gpu, M * N, off);
                        be.matmul(be.ctx, y_d, x_d, M, &w.d, b ? bias_d : nullptr);
                        check(nm + (b == 0 ? "" : b == 1 ? " +bias" : " +bias (kernel)"), rel(down(gpu, y_d, M * N), yc),
                              tol, "M=%ld N=%ld K=%ld off=%d", (long)M, (long)N, (long)K, off);
                        gpu.free(gpu.ctx, y_d - off);
                    }
                    /* matmul_add: y0 + x W^T + b */
                    auto y0 = rv(M * N, 3), ya = y0;
                    cpu_matmul_add(ya.data(), x.data(), M, &w.h, bias.data());
                    float *ya_d = dup_dev(gpu, y0, off);
                    gpu.matmul_add(gpu.ctx, ya_d, x_d, M, &w.d, bias_d);
                    check(std::string("matmul_add ") + dtn(dt), rel(down(gpu, ya_d, M * N), ya), tol,
                          "M=%ld N=%ld K=%ld off=%d", (long)M, (long)N, (long)K, off);
                    gpu.free(gpu.ctx, ya_d - off);
                    if (off) { gpu.free(gpu.ctx, x_d - off); continue; }
                    /* matmul_multi: q/k/v-like (N, 33, N/2+1), the middle one without bias; then a
                     * mixed-dtype pair (one GEMM each) */
                    {
                        const int64_t Ns[3] = {N, 33, N / 2 + 1};
                        wpair ws[3] = {make_w(gpu, dt, Ns[0], K), make_w(gpu, dt, Ns[1], K), make_w(gpu, dt, Ns[2], K)};
                        std::vector<float> bs[3] = {rv(Ns[0]), {}, rv(Ns[2])};
                        float *bd[3] = {dup_dev(gpu, bs[0]), nullptr, dup_dev(gpu, bs[2])};
                        float *yd[3];
                        const lmc_mat *wd[3];
                        for (int i = 0; i < 3; i++) yd[i] = dev_nan(gpu, M * Ns[i]), wd[i] = &ws[i].d;
                        gpu.matmul_multi(gpu.ctx, 3, yd, x_d, M, wd, bd);
                        for (int i = 0; i < 3; i++) {
                            auto yc = nans(M * Ns[i]);
                            cpu.matmul(cpu.ctx, yc.data(), x.data(), M, &ws[i].h, i == 1 ? nullptr : bs[i].data());
                            check(std::string("matmul_multi ") + dtn(dt), rel(down(gpu, yd[i], M * Ns[i]), yc), tol,
                                  "M=%ld N=%ld K=%ld [%d]", (long)M, (long)Ns[i], (long)K, i);
                            gpu.free(gpu.ctx, yd[i]);
                            gpu.free(gpu.ctx, (void *)ws[i].d.data);
                        }
                        gpu.free(gpu.ctx, bd[0]), gpu.free(gpu.ctx, bd[2]);
                        /* mixed: this dtype and F16 (or BF16) */
                        enum lmc_dtype dt2 = dt == LMC_DTYPE_F16 ? LMC_DTYPE_BF16 : LMC_DTYPE_F16;
                        wpair wm = make_w(gpu, dt2, 19, K);
                        const lmc_mat *wd2[2] = {&w.d, &wm.d};
                        float *ym[2] = {dev_nan(gpu, M * N), dev_nan(gpu, M * 19)};
                        gpu.matmul_multi(gpu.ctx, 2, ym, x_d, M, wd2, nullptr);
                        auto yc0 = nans(M * N), yc1 = nans(M * 19);
                        cpu.matmul(cpu.ctx, yc0.data(), x.data(), M, &w.h, nullptr);
                        cpu.matmul(cpu.ctx, yc1.data(), x.data(), M, &wm.h, nullptr);
                        double t2 = dt2 == LMC_DTYPE_BF16 && M > 8 ? 1e-2 : M > 8 ? 2e-3 : 1e-5;
                        check("matmul_multi mixed dtypes", rel(down(gpu, ym[0], M * N), yc0), tol,
                              "%s+%s M=%ld K=%ld [0]", dtn(dt), dtn(dt2), (long)M, (long)K);
                        check("matmul_multi mixed dtypes", rel(down(gpu, ym[1], M * 19), yc1), t2,
                              "%s+%s M=%ld K=%ld [1]", dtn(dt), dtn(dt2), (long)M, (long)K);
                        gpu.free(gpu.ctx, ym[0]), gpu.free(gpu.ctx, ym[1]), gpu.free(gpu.ctx, (void *)wm.d.data);
                    }
                    /* matmul_swiglu: silu(x Wg^T) * (x Wu^T); same dtype, then Wu in another dtype */
                    for (int mixed = 0; mixed < 2; mixed++) {
                        enum lmc_dtype du = mixed ? (dt == LMC_DTYPE_F32 ? LMC_DTYPE_BF16 : LMC_DTYPE_F32) : dt;
                        wpair wu = make_w(gpu, du, N, K);
                        auto yc = nans(M * N), u = nans(M * N);
                        cpu.matmul(cpu.ctx, yc.data(), x.data(), M, &w.h, nullptr);
                        cpu.matmul(cpu.ctx, u.data(), x.data(), M, &wu.h, nullptr);
                        cpu.swiglu(cpu.ctx, yc.data(), yc.data(), u.data(), M * N);
                        float *ys = dev_nan(gpu, M * N);
                        gpu.matmul_swiglu(gpu.ctx, ys, x_d, M, &w.d, &wu.d);
                        double ts = mixed && M > 8 ? std::max(tol, du == LMC_DTYPE_BF16 ? 1e-2 : 1e-5) : tol;
                        check(std::string("matmul_swiglu ") + dtn(dt) + (mixed ? " (mixed)" : ""),
                              rel(down(gpu, ys, M * N), yc), ts, "M=%ld N=%ld K=%ld", (long)M, (long)N, (long)K);
                        gpu.free(gpu.ctx, ys), gpu.free(gpu.ctx, (void *)wu.d.data);
                    }
                    gpu.free(gpu.ctx, x_d);
                }
                gpu.free(gpu.ctx, (char *)w.d.data - off * (dt == LMC_DTYPE_F32 ? 4 : 2));
                gpu.free(gpu.ctx, bias_d - 4 * off);
            }
        }
    check("matmul bias epilogues used (> 0)", emu_gemm_bias_epilogues > epi0 ? 0 : 1, 0);
    test_mm_bias_align();
    test_init_arch();
    /* K == 0: y = bias (or 0); y += bias */
    for (int64_t M : {3, 9}) {
        std::vector<float> bias = rv(6), yc = nans(M * 6), y0 = rv(M * 6), ya = y0;
        lmc_mat wh = {LMC_DTYPE_F32, 6, 0, nullptr}, wd = wh;
        float *b_d = dup_dev(gpu, bias), *y_d = dev_nan(gpu, M * 6), *ya_d = dup_dev(gpu, y0);
        std::vector<float> x1(1);
        float *x_d = dup_dev(gpu, x1);
        cpu.matmul(cpu.ctx, yc.data(), x1.data(), M, &wh, bias.data());
        gpu.matmul(gpu.ctx, y_d, x_d, M, &wd, b_d);
        check("matmul K=0", rel(down(gpu, y_d, M * 6), yc), 0, "M=%ld", (long)M);
        cpu_matmul_add(ya.data(), x1.data(), M, &wh, bias.data());
        gpu.matmul_add(gpu.ctx, ya_d, x_d, M, &wd, b_d);
        check("matmul_add K=0", rel(down(gpu, ya_d, M * 6), ya), 0, "M=%ld", (long)M);
        gpu.free(gpu.ctx, b_d), gpu.free(gpu.ctx, y_d), gpu.free(gpu.ctx, ya_d), gpu.free(gpu.ctx, x_d);
    }

    /* matmul_bwd (F32 master weights), fp32 and train_bf16 */
    const int64_t shapes[][3] = {{37, 83, 61}, {1, 17, 9}, {130, 64, 48}, {9, 64, 48}, {300, 33, 7}};
    for (int bf = 0; bf < 2; bf++) {
        lmc_backend_cuda_set_train_bf16(&gpu, bf);
        const double tol = bf ? 2e-2 : 1e-5;
        const std::string p = bf ? "matmul_bwd bf16 " : "matmul_bwd fp32 ";
        for (auto &sh : shapes) {
            const int64_t M = sh[0], K = sh[1], N = sh[2];
            auto w = rv(N * K), x = rv(M * K), dy = rv(M * N);
            float *w_d = dup_dev(gpu, w), *x_d = dup_dev(gpu, x), *dy_d = dup_dev(gpu, dy);
            lmc_mat wc = {LMC_DTYPE_F32, N, K, w.data()}, wg = {LMC_DTYPE_F32, N, K, w_d};
            /* 0: all, dx =; 1: all, dx +=; 2: dx only; 3: dw, db; 4: dx += only; 5: db only; 6: dw only */
            for (int v = 0; v < 7; v++) {
                const bool accum = v == 1 || v == 4, gx = v <= 2 || v == 4, gw = v <= 1 || v == 3 || v == 6,
                           gb = v <= 1 || v == 3 || v == 5;
                auto dx0 = rv(M * K), dw0 = rv(N * K), db0 = rv(N), dxc = dx0, dwc = dw0, dbc = db0;
                float *dx_d = accum ? dup_dev(gpu, dx0) : dev_nan(gpu, M * K), *dw_d = dup_dev(gpu, dw0),
                      *db_d = dup_dev(gpu, db0);
                cpu.matmul_bwd(cpu.ctx, gx ? dxc.data() : nullptr, gw ? dwc.data() : nullptr, gb ? dbc.data() : nullptr,
                               dy.data(), x.data(), M, &wc, accum);
                gpu.matmul_bwd(gpu.ctx, gx ? dx_d : nullptr, gw ? dw_d : nullptr, gb ? db_d : nullptr, dy_d, x_d, M,
                               &wg, accum);
                if (gx) check(p + (accum ? "dx +=" : "dx ="), rel(down(gpu, dx_d, M * K), dxc), tol,
                              "M=%ld K=%ld N=%ld v=%d", (long)M, (long)K, (long)N, v);
                check(p + "dw +=", rel(down(gpu, dw_d, N * K), dwc), gw ? tol : 0, "M=%ld K=%ld N=%ld v=%d", (long)M,
                      (long)K, (long)N, v);
                check(p + "db +=", rel(down(gpu, db_d, N), dbc), gb ? 1e-5 : 0, "M=%ld K=%ld N=%ld v=%d", (long)M,
                      (long)K, (long)N, v);
                gpu.free(gpu.ctx, dx_d), gpu.free(gpu.ctx, dw_d), gpu.free(gpu.ctx, db_d);
            }
            /* the forward entries on F32 weights (bf16 GEMMs for M > 8 in train_bf16) */
            const double ft = bf && M > 8 ? 2e-2 : 1e-5;
            const std::string fp = bf ? "fwd F32 w, train_bf16: " : "fwd F32 w, fp32: ";
            auto bias = rv(N), yc = nans(M * N), y0 = rv(M * N), ya = y0;
            float *b_d = dup_dev(gpu, bias), *y_d = dev_nan(gpu, M * N), *ya_d = dup_dev(gpu, y0);
            cpu.matmul(cpu.ctx, yc.data(), x.data(), M, &wc, bias.data());
            gpu.matmul(gpu.ctx, y_d, x_d, M, &wg, b_d);
            check(fp + "matmul", rel(down(gpu, y_d, M * N), yc), ft, "M=%ld K=%ld N=%ld", (long)M, (long)K, (long)N);
            cpu_matmul_add(ya.data(), x.data(), M, &wc, bias.data());
            gpu.matmul_add(gpu.ctx, ya_d, x_d, M, &wg, b_d);
            check(fp + "matmul_add", rel(down(gpu, ya_d, M * N), ya), ft, "M=%ld K=%ld N=%ld", (long)M, (long)K, (long)N);
            auto w2 = rv(N * K);
            float *w2_d = dup_dev(gpu, w2), *y2_d = dev_nan(gpu, M * (N - 1));
            lmc_mat w2c = {LMC_DTYPE_F32, N - 1, K, w2.data()}, w2g = {LMC_DTYPE_F32, N - 1, K, w2_d};
            if (N > 1) {
                auto y2c = nans(M * (N - 1));
                float *ycs[2] = {yc.data(), y2c.data()}, *yds[2] = {y_d, y2_d};
                const lmc_mat *wcs[2] = {&wc, &w2c}, *wgs[2] = {&wg, &w2g};
                cpu.matmul_multi(cpu.ctx, 2, ycs, x.data(), M, wcs, nullptr);
                gpu.matmul_multi(gpu.ctx, 2, yds, x_d, M, wgs, nullptr);
                check(fp + "matmul_multi", std::max(rel(down(gpu, y_d, M * N), yc), rel(down(gpu, y2_d, M * (N - 1)), y2c)),
                      ft, "M=%ld K=%ld N=%ld", (long)M, (long)K, (long)N);
            }
            lmc_mat w3c = {LMC_DTYPE_F32, N, K, w2.data()}, w3g = {LMC_DTYPE_F32, N, K, w2_d};
            cpu_matmul_swiglu(yc.data(), x.data(), M, &wc, &w3c);
            gpu.matmul_swiglu(gpu.ctx, y_d, x_d, M, &wg, &w3g);
            check(fp + "matmul_swiglu", rel(down(gpu, y_d, M * N), yc), ft, "M=%ld K=%ld N=%ld", (long)M, (long)K, (long)N);
            for (float *q : {w_d, x_d, dy_d, b_d, y_d, ya_d, w2_d, y2_d}) gpu.free(gpu.ctx, q);
        }
    }
    lmc_backend_cuda_set_train_bf16(&gpu, false);
    lmc_backend_cuda_free(&nobias);
    emu_strict_device = false;
}

/* ------------------------------------------------------------------ */
/* End to end through the real CUDA table (lmc_backend_cuda_init in
 * emulation), strict device mode (memsets, copies and GEMM operands must be
 * device memory of the right extent): for tests/fixtures llama-tiny,
 * gpt2-tiny, qwen2-tiny (qkv biases) and qwen3-tiny (q/k RMSNorm per head,
 * head_dim 24),
 *  (a) the forward logits of one 13-token prompt (every position) and one
 *      decode step after it, vs the CPU backend on F32 weights: the fp32
 *      mode (F32 weights, fp32 attention and KV cache; tol 1e-4) and bf16
 *      (BF16 weights and KV cache; tol 2e-2, as lmc parity);
 *  (b) one training step B=2 x T=16 (lmc_tmodel_step with backward): the
 *      loss and every gradient vs the CPU's, fp32 (max rel err per param
 *      1e-4) and train_bf16 (cosine per param >= 0.99); then one AdamW
 *      step over the whole arena (and sumsq of the gradients) vs the CPU. */
static const char *fixtures() {
    const char *f = getenv("LMC_EMU_FIXTURES");
    return f && *f ? f : "tests/fixtures";
}
static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    if (aa == 0 && bb == 0) return 1;
    return ab / sqrt(aa * bb);
}

static bool forward_logits(const struct lmc_backend *be, const char *dir, enum lmc_wdtype wd,
                           const std::vector<int32_t> &ids, std::vector<float> &all, std::vector<float> &next) {
    lmc_err err;
    struct lmc_model m;
    struct lmc_model_opts mo = {wd, be};
    if (lmc_model_load(&m, dir, &mo, &err)) { printf("FAIL load %s: %s\n", dir, err.msg); n_fail++; return false; }
    const int64_t n = (int64_t)ids.size(), V = m.cfg.vocab_size;
    struct lmc_kv kv;
    struct lmc_acts a;
    bool ok = !lmc_kv_init(&kv, &m, be, n + 1, &err);
    if (ok && lmc_acts_init(&a, &m, be, n + 1, n, &err)) lmc_kv_free(&kv), ok = false;
    if (ok) {
        all.assign((size_t)(n * V), NAN), next.assign((size_t)V, NAN);
        int32_t nid = (int32_t)((ids[n - 1] * 7 + 3) % V);
        if (lmc_model_forward(&m, be, &a, &kv, ids.data(), n, 0, all.data(), true, &err) ||
            lmc_model_forward(&m, be, &a, &kv, &nid, 1, n, next.data(), false, &err))
            ok = false;
        lmc_acts_free(&a);
        lmc_kv_free(&kv);
    }
    if (!ok) printf("FAIL forward %s on %s: %s\n", dir, be->name, err.msg), n_fail++;
    lmc_model_free(&m);
    return ok;
}

struct train_out {
    double loss;
    int64_t count;
    std::vector<float> g, w_after, m_after;
    double sumsq;
    std::vector<lmc_tparam> params;
};
static bool train_step(const struct lmc_backend *be, const char *dir, const std::vector<int32_t> &in,
                       const std::vector<int32_t> &tg, int64_t B, int64_t T, train_out &o, double aux_coef = 0) {
    lmc_err err;
    struct lmc_tmodel tm;
    if (lmc_tmodel_load(&tm, dir, be, &err)) { printf("FAIL tmodel_load %s: %s\n", dir, err.msg); n_fail++; return false; }
    if (aux_coef > 0) { /* MoE: the load-balancing loss on (as output_router_logits in config.json) */
        tm.cfg.output_router_logits = true;
        tm.cfg.router_aux_loss_coef = aux_coef;
    }
    struct lmc_tacts a;
    if (lmc_tacts_init(&a, &tm, be, B, T, false, &err)) {
        printf("FAIL tacts_init: %s\n", err.msg), n_fail++;
        lmc_tmodel_free(&tm);
        return false;
    }
    lmc_tmodel_zero_grad(&tm);
    bool ok = !lmc_tmodel_step(&tm, be, &a, in.data(), tg.data(), true, 1.0f / (float)(B * T), &o.loss, &o.count, &err);
    if (ok) {
        o.g.resize((size_t)tm.numel);
        lmc_tmodel_download_arena(&tm, tm.g, o.g.data());
        o.params.assign(tm.params, tm.params + tm.n_params);
        o.sumsq = be->sumsq(be->ctx, tm.g, tm.numel);
        /* AdamW, step 1, over the whole arena */
        float *mom = (float *)be->alloc(be->ctx, (size_t)tm.numel * 8);
        be->zero(be->ctx, mom, (size_t)tm.numel * 8);
        const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, wdc = 0.1f;
        lmc_adamw_step st = {lr / (1 - b1), 1 - lr * wdc, b2, 1 - b1, 1 - b2, sqrtf(1 - b2), 1e-8f, 0.5f};
        be->adamw(be->ctx, tm.w, tm.g, mom, mom + tm.numel, tm.numel, &st);
        o.w_after.resize((size_t)tm.numel), o.m_after.resize((size_t)tm.numel * 2);
        lmc_tmodel_download_arena(&tm, tm.w, o.w_after.data());
        be->download(be->ctx, o.m_after.data(), mom, (size_t)tm.numel * 8);
        be->free(be->ctx, mom);
    } else {
        printf("FAIL tmodel_step %s on %s: %s\n", dir, be->name, err.msg), n_fail++;
    }
    lmc_tacts_free(&a);
    lmc_tmodel_free(&tm);
    return ok;
}

static void e2e_models(const std::vector<const char *> &models, double aux_coef) {
    emu_strict_device = true;
    const bool moe = aux_coef > 0; /* the MoE fixtures (test_moe_e2e) */
    for (const char *mn : models) {
        std::string dir = std::string(fixtures()) + "/" + mn;
        const int64_t V = 512;
        std::vector<int32_t> ids(13);
        for (auto &i : ids) i = irand((int)V);
        /* (a) forward */
        std::vector<float> ca, cn;
        if (!forward_logits(&cpu, dir.c_str(), LMC_WDTYPE_F32, ids, ca, cn)) continue;
        for (int bf = 0; bf < 2; bf++) {
            lmc_backend_cuda_set_fp32_attention(&gpu, !bf);
            std::vector<float> ga, gn;
            if (forward_logits(&gpu, dir.c_str(), bf ? LMC_WDTYPE_BF16 : LMC_WDTYPE_F32, ids, ga, gn)) {
                double tol = bf ? 2e-2 : 1e-4, e1 = rel(ga, ca), e2 = rel(gn, cn);
                printf("  %s forward %s: prompt logits %.2e, decode logits %.2e\n", mn, bf ? "bf16" : "fp32", e1, e2);
                check(std::string("e2e forward ") + (bf ? "bf16" : "fp32") + " prompt logits", e1, tol, "%s", mn);
                check(std::string("e2e forward ") + (bf ? "bf16" : "fp32") + " decode logits", e2, tol, "%s", mn);
            }
        }
        lmc_backend_cuda_set_fp32_attention(&gpu, false);
        /* (b) one training step, then AdamW */
        const int64_t B = 2, T = 16;
        std::vector<int32_t> in(B * T), tg(B * T);
        for (auto &i : in) i = irand((int)V);
        for (int64_t i = 0; i < B * T; i++) tg[i] = i % 7 == 3 ? -1 : irand((int)V);
        train_out c;
        if (!train_step(&cpu, dir.c_str(), in, tg, B, T, c, aux_coef)) continue;
        for (int bf = 0; bf < 2; bf++) {
            lmc_backend_cuda_set_train_bf16(&gpu, bf);
            train_out g;
            if (!train_step(&gpu, dir.c_str(), in, tg, B, T, g, aux_coef)) continue;
            const std::string p = std::string("e2e train ") + (bf ? "bf16 " : "fp32 ");
            double el = fabs(g.loss - c.loss) / fabs(c.loss);
            check(p + "loss", el, bf ? 2e-2 : 1e-5, "%s", mn);
            check(p + "target count", (double)(g.count != c.count), 0, "%s", mn);
            double worst = 0, wcos = 1;
            std::string wname, cname;
            for (auto &q : c.params) {
                const float *a = &g.g[q.off], *b = &c.g[q.off];
                double e = rel(a, b, (size_t)q.numel), cs = cosine(a, b, (size_t)q.numel);
                if (!(e <= worst)) worst = e, wname = q.name;
                if (!(cs >= wcos)) wcos = cs, cname = q.name;
                /* MoE in bf16: a token whose best experts lie within bf16 rounding of each
                 * other may pick another expert than in fp32 (and OLMoE's clamp cut other
                 * elements), moving whole rows between experts' gradients: per tensor
                 * 1 - cos <= 0.1 there, the whole gradient's below */
                if (bf) check(p + "grad cosine (1 - cos)", 1 - cs, moe ? 0.1 : 1e-2, "%s %s", mn, q.name);
                else check(p + "grad (max rel err per param)", e, 1e-4, "%s %s", mn, q.name);
            }
            if (bf && moe)
                check(p + "grad cosine, whole model (1 - cos)", 1 - cosine(g.g.data(), c.g.data(), g.g.size()), 1e-2,
                      "%s", mn);
            double es = fabs(g.sumsq - c.sumsq) / c.sumsq;
            check(p + "grad sumsq", es, bf ? 4e-2 : 1e-4, "%s", mn);
            /* AdamW: the update on the same (own) gradients: compare the moments from the
             * GPU's gradients too, so only the optimizer's math counts in fp32 */
            double eu = 0;
            {
                std::vector<float> du(g.w_after.size()), dc(c.w_after.size());
                lmc_err err;
                struct lmc_tmodel tm0;
                if (!lmc_tmodel_load(&tm0, dir.c_str(), &cpu, &err)) {
                    std::vector<float> w0(tm0.numel);
                    lmc_tmodel_download_arena(&tm0, tm0.w, w0.data());
                    for (size_t i = 0; i < du.size(); i++) du[i] = g.w_after[i] - w0[i], dc[i] = c.w_after[i] - w0[i];
                    lmc_tmodel_free(&tm0);
                }
                eu = bf ? 1 - cosine(du.data(), dc.data(), du.size()) : rel(g.m_after, c.m_after);
            }
            check(p + (bf ? "adamw update (1 - cosine)" : "adamw moments"), eu, bf ? (moe ? 3e-2 : 1e-2) : 1e-4, "%s", mn);
            check(p + "adamw weights", rel(g.w_after, c.w_after), bf ? 1e-2 : 1e-4, "%s", mn);
            printf("  %s train %s: loss %.6f vs %.6f, grads worst rel %.2e (%s), min cosine %.6f (%s), "
                   "sumsq %.2e, adamw %.2e\n", mn, bf ? "bf16" : "fp32", g.loss, c.loss, worst, wname.c_str(), wcos,
                   cname.c_str(), es, eu);
        }
        lmc_backend_cuda_set_train_bf16(&gpu, false);
    }
    emu_strict_device = false;
}

static void test_e2e() { e2e_models({"llama-tiny", "gpt2-tiny", "qwen2-tiny", "qwen3-tiny"}, 0); }

#include "harness_ssm.inc"
#include "harness_optim.cc" /* test_optim: the optimizer kernels */
/* LoRA through the real CUDA table (lmc_linear's adapter matmuls with K
 * and N = r, matmul_bwd with dx NULL, diag(scale)): (a) the PEFT fixture's
 * adapter bound into llama-tiny, fp32 logits vs the CPU; (b) a training
 * step with the lora_train fixture's adapter over the frozen base, padded
 * and packed (attention per segment, B = 1 launches of odd T): loss and
 * every lora_A/B gradient vs the CPU, fp32 and bf16. */
/* Backend work of the last lora_step / qlora_step's step (forward and
 * backward; the trainer's AdamW too): kernel launches, cuBLASLt GEMMs and,
 * of the launches, f32 -> bf16/f16 GEMM-operand conversions (cc->n_cvt). */
struct step_counts { long launches, gemms, cvt; };
static step_counts last_step;
static step_counts step_t0;
static void count_begin() { step_t0 = {emu_launches, emu_gemm_calls, cc->n_cvt}; }
static void count_end() {
    last_step = {emu_launches - step_t0.launches, emu_gemm_calls - step_t0.gemms, cc->n_cvt - step_t0.cvt};
}
/* The CUDA table without operand_hold: every GEMM rounds its own operands,
 * as before held operands (same ctx, so the same precision mode). */
static struct lmc_backend gpu_nohold() {
    struct lmc_backend b = gpu;
    b.operand_hold = nullptr;
    b.operand_release = nullptr;
    return b;
}
/* A step with held operands (l1, g1, c1) against the same step without
 * (l0, g0, c0): loss and every gradient (and whatever else the caller puts
 * in g) bit for bit; the same GEMMs, fewer launches, all of them
 * conversions. */
static void hold_ab(const std::string &p, const char *mn, double l1, const std::vector<float> &g1, step_counts c1,
                    double l0, const std::vector<float> &g0, step_counts c0) {
    int64_t d = 0;
    for (size_t i = 0; i < g0.size() && i < g1.size(); i++) d += memcmp(&g0[i], &g1[i], 4) != 0;
    if (g0.size() != g1.size() || g0.empty()) d = -1;
    check(p + "held operands: loss bits", memcmp(&l0, &l1, sizeof l0) ? 1.0 : 0.0, 0, "%s", mn);
    check(p + "held operands: values differing", d < 0 ? 1e9 : (double)d, 0, "%s", mn);
    bool fewer = c1.cvt < c0.cvt && c0.launches - c1.launches == c0.cvt - c1.cvt && c1.gemms == c0.gemms;
    check(p + "held operands: fewer launches, all conversions", fewer ? 0.0 : 1.0, 0,
          "%s: launches %ld vs %ld, conversions %ld vs %ld, GEMMs %ld vs %ld", mn, c1.launches, c0.launches, c1.cvt,
          c0.cvt, c1.gemms, c0.gemms);
    printf("  %s %s held operands: a step's launches %ld -> %ld, of them f32->bf16 conversions %ld -> %ld, "
           "GEMMs %ld = %ld; loss and %zu values bit-equal (%lld differ)\n", p.c_str(), mn, c0.launches, c1.launches,
           c0.cvt, c1.cvt, c0.gemms, c1.gemms, g0.size(), (long long)d);
}

static bool lora_step(const struct lmc_backend *be, const std::string &dir, const std::vector<int32_t> &in,
                      const std::vector<int32_t> &tg, const int64_t *segs, int64_t n_segs, double &loss,
                      std::vector<float> &g, int64_t &off, const struct lmc_tacts_opts *ao = nullptr) {
    lmc_err err;
    struct lmc_tmodel tm;
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    if (lmc_tmodel_load(&tm, dir.c_str(), be, &err)) { printf("FAIL lora tmodel %s\n", err.msg), n_fail++; return false; }
    if (lmc_lora_load(&lo, (dir + "/lora_train").c_str(), &tm.cfg, &err) || lmc_lora_train_attach(&lt, &tm, &lo, &err)) {
        printf("FAIL lora attach %s\n", err.msg), n_fail++;
        lmc_tmodel_free(&tm);
        return false;
    }
    struct lmc_tacts a;
    bool ok = ao ? !lmc_tacts_init_opts(&a, &tm, be, 1, (int64_t)in.size(), ao, &err)
                 : !lmc_tacts_init(&a, &tm, be, 1, (int64_t)in.size(), false, &err);
    int64_t count = 0;
    if (ok) {
        a.segs = segs, a.n_segs = n_segs;
        lmc_tmodel_zero_grad(&tm);
        count_begin();
        ok = !lmc_tmodel_step(&tm, be, &a, in.data(), tg.data(), true, 1.0f, &loss, &count, &err);
        count_end();
        lmc_tacts_free(&a);
    }
    if (ok) {
        off = tm.trainable_off;
        g.resize((size_t)(tm.numel - off));
        be->download(be->ctx, g.data(), tm.g + (off - tm.g_off), g.size() * sizeof(float));
    } else {
        printf("FAIL lora step on %s: %s\n", be->name, err.msg), n_fail++;
    }
    lmc_tmodel_free(&tm);
    lmc_lora_train_free(&lt);
    lmc_lora_free(&lo);
    return ok;
}

static void test_lora() {
    emu_strict_device = true;
    lmc_err err;
    /* (a) inference with the PEFT fixture */
    {
        std::string dir = std::string(fixtures()) + "/llama-tiny";
        std::vector<int32_t> ids(11);
        for (auto &i : ids) i = irand(512);
        std::vector<float> out[2];
        const struct lmc_backend *bes[2] = {&cpu, &gpu};
        lmc_backend_cuda_set_fp32_attention(&gpu, true);
        for (int k = 0; k < 2; k++) {
            struct lmc_model m;
            struct lmc_model_opts mo = {LMC_WDTYPE_F32, bes[k]};
            struct lmc_lora lo;
            struct lmc_lora_binding bind;
            double mul = 1;
            if (lmc_model_load(&m, dir.c_str(), &mo, &err)) { printf("FAIL %s\n", err.msg), n_fail++; return; }
            const struct lmc_lora *los[1] = {&lo};
            if (lmc_lora_load(&lo, (dir + "/lora").c_str(), &m.cfg, &err) ||
                lmc_lora_bind(&bind, &m.w, &m.cfg, los, &mul, 1, bes[k], &err)) {
                printf("FAIL lora bind %s\n", err.msg), n_fail++;
                return;
            }
            struct lmc_kv kv;
            struct lmc_acts a;
            out[k].assign(ids.size() * 512, NAN);
            if (lmc_kv_init(&kv, &m, bes[k], (int64_t)ids.size(), &err) ||
                lmc_acts_init(&a, &m, bes[k], (int64_t)ids.size(), (int64_t)ids.size(), &err) ||
                lmc_model_forward(&m, bes[k], &a, &kv, ids.data(), (int64_t)ids.size(), 0, out[k].data(), true, &err))
                printf("FAIL lora forward %s\n", err.msg), n_fail++;
            lmc_acts_free(&a);
            lmc_kv_free(&kv);
            lmc_lora_unbind(&bind, &m.w, &m.cfg);
            lmc_lora_free(&lo);
            lmc_model_free(&m);
        }
        lmc_backend_cuda_set_fp32_attention(&gpu, false);
        double e = rel(out[1], out[0]);
        printf("  llama-tiny + PEFT adapter forward fp32: logits %.2e\n", e);
        check("lora forward fp32 logits", e, 1e-4, "llama-tiny");
    }
    /* (b) training steps, padded and packed */
    const char *models[3] = {"llama-tiny", "gpt2-tiny", "qwen2-tiny"};
    for (const char *mn : models) {
        std::string dir = std::string(fixtures()) + "/" + mn;
        const int64_t T = 29;
        std::vector<int32_t> in(T), tg(T);
        for (auto &i : in) i = irand(512);
        for (int64_t i = 0; i < T; i++) tg[i] = i % 5 == 0 ? -1 : irand(512);
        const int64_t segs[6] = {0, 11, 11, 13, 24, 5};
        for (int packed = 0; packed < 2; packed++) {
            double lc, lg;
            std::vector<float> gc, gg;
            int64_t oc, og;
            const int64_t *sg = packed ? segs : nullptr;
            if (!lora_step(&cpu, dir, in, tg, sg, packed ? 3 : 0, lc, gc, oc)) continue;
            for (int bf = 0; bf < 2; bf++) {
                lmc_backend_cuda_set_train_bf16(&gpu, bf);
                if (!lora_step(&gpu, dir, in, tg, sg, packed ? 3 : 0, lg, gg, og)) continue;
                std::string p = std::string("lora train ") + (bf ? "bf16 " : "fp32 ") + (packed ? "packed " : "");
                double el = fabs(lg - lc) / fabs(lc), eg = rel(gg, gc), cs = cosine(gg.data(), gc.data(), gc.size());
                check(p + "loss", el, bf ? 2e-2 : 1e-5, "%s", mn);
                if (bf) check(p + "lora grads (1 - cosine)", 1 - cs, 1e-2, "%s", mn);
                else check(p + "lora grads", eg, 1e-4, "%s", mn);
                printf("  %s lora train %s%s: loss %.2e, grads rel %.2e, cosine %.6f\n", mn, bf ? "bf16" : "fp32",
                       packed ? " packed" : "", el, eg, cs);
                if (bf) { /* the same step without held operands: bit for bit */
                    step_counts c1 = last_step;
                    struct lmc_backend nh = gpu_nohold();
                    double l0;
                    std::vector<float> g0;
                    int64_t o0;
                    if (lora_step(&nh, dir, in, tg, sg, packed ? 3 : 0, l0, g0, o0))
                        hold_ab(p, mn, lg, gg, c1, l0, g0, last_step);
                }
            }
            lmc_backend_cuda_set_train_bf16(&gpu, false);
        }
    }
    /* (c) the convert op (bf16-saved activations) against its CPU twin: odd sizes, specials */
    for (int64_t n : {1, 7, 1000, 4099}) {
        std::vector<float> x = rv((size_t)n);
        x[0] = n > 3 ? 1.0f + 1.0f / 256 : x[0]; /* a tie: to even */
        if (n > 3) x[1] = -3.0e38f, x[2] = 1e-40f;
        std::vector<uint16_t> hc((size_t)n), hg((size_t)n);
        std::vector<float> bc((size_t)n), cg((size_t)n);
        cpu.convert(cpu.ctx, hc.data(), LMC_DTYPE_BF16, x.data(), LMC_DTYPE_F32, n);
        cpu.convert(cpu.ctx, bc.data(), LMC_DTYPE_F32, hc.data(), LMC_DTYPE_BF16, n);
        float *xd = dup_dev(gpu, x), *fd = dev_nan(gpu, (size_t)n, 1), *cd = dev_nan(gpu, (size_t)n, 1);
        uint16_t *hd = (uint16_t *)dev_nan(gpu, (size_t)(n + 1) / 2, 1);
        gpu.convert(gpu.ctx, hd, LMC_DTYPE_BF16, xd, LMC_DTYPE_F32, n);
        gpu.convert(gpu.ctx, fd, LMC_DTYPE_F32, hd, LMC_DTYPE_BF16, n);
        gpu.convert(gpu.ctx, cd, LMC_DTYPE_F32, xd, LMC_DTYPE_F32, n);
        gpu.sync(gpu.ctx);
        gpu.download(gpu.ctx, hg.data(), hd, (size_t)n * 2);
        std::vector<float> fg = down(gpu, fd, (size_t)n);
        cg = down(gpu, cd, (size_t)n);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += hg[(size_t)i] != hc[(size_t)i] || memcmp(&fg[(size_t)i], &bc[(size_t)i], 4) ||
                   memcmp(&cg[(size_t)i], &x[(size_t)i], 4) || hc[(size_t)i] != lmc_f32_to_bf16(x[(size_t)i]);
        check("convert f32<->bf16 vs the CPU (mismatches)", (double)bad, 0, "n %lld", (long long)n);
    }
    /* (d) the activation modes on the GPU: selective recomputation gives the no-recompute step bit for bit;
     * bf16-saved activations leave the forward (loss) untouched and move the gradients by bf16 rounding;
     * full recomputation with offloaded and with bf16 checkpoints */
    for (const char *mn : models) {
        std::string dir = std::string(fixtures()) + "/" + mn;
        const int64_t T = 29;
        std::vector<int32_t> in(T), tg(T);
        for (auto &i : in) i = irand(512);
        for (int64_t i = 0; i < T; i++) tg[i] = i % 5 == 0 ? -1 : irand(512);
        for (int bf = 0; bf < 2; bf++) {
            lmc_backend_cuda_set_train_bf16(&gpu, bf);
            const struct lmc_tacts_opts none = {false, false, false}, sel = {false, true, false};
            const struct lmc_tacts_opts b16 = {false, false, true}, selb16 = {false, true, true};
            double l0, ls, lb, lsb;
            std::vector<float> g0, gs, gb, gsb;
            int64_t o0, o1;
            if (!lora_step(&gpu, dir, in, tg, nullptr, 0, l0, g0, o0, &none) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, ls, gs, o1, &sel) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, lb, gb, o1, &b16) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, lsb, gsb, o1, &selb16))
                continue;
            std::string p = std::string("lora acts ") + (bf ? "bf16 " : "fp32 ");
            int64_t dsel = 0;
            for (size_t i = 0; i < g0.size(); i++) dsel += memcmp(&g0[i], &gs[i], 4) != 0;
            check(p + "selective vs none: loss bits", memcmp(&l0, &ls, sizeof l0) ? 1.0 : 0.0, 0, "%s", mn);
            check(p + "selective vs none: gradients differing", (double)dsel, 0, "%s", mn);
            double eb = rel(gb, g0), esb = rel(gsb, g0), cb = 1 - cosine(gb.data(), g0.data(), g0.size());
            check(p + "bf16-saved: loss bits", memcmp(&l0, &lb, sizeof l0) || memcmp(&l0, &lsb, sizeof l0) ? 1.0 : 0.0,
                  0, "%s", mn);
            check(p + "bf16-saved grads", std::max(eb, esb), 2e-2, "%s", mn);
            check(p + "bf16-saved grads (1 - cosine)", cb, 1e-4, "%s", mn);
            for (int k = 0; bf && k < 2; k++) { /* bf16-saved (the norms' saves held as their bf16 operands;
                                                  * selective: recomputed) without held operands: bit for bit */
                struct lmc_backend nh = gpu_nohold();
                const struct lmc_tacts_opts *o = k ? &selb16 : &b16;
                double l1, l0;
                std::vector<float> g1, g0;
                int64_t o2;
                if (lora_step(&gpu, dir, in, tg, nullptr, 0, l1, g1, o2, o)) {
                    step_counts c1 = last_step;
                    if (lora_step(&nh, dir, in, tg, nullptr, 0, l0, g0, o2, o))
                        hold_ab(p + (k ? "selective bf16-saved " : "bf16-saved "), mn, l1, g1, c1, l0, g0, last_step);
                }
            }
            printf("  %s lora acts %s: selective = none (%lld differ); bf16-saved grads rel %.2e (selective %.2e), "
                   "1 - cos %.2e\n", mn, bf ? "bf16" : "fp32", (long long)dsel, eb, esb, cb);
            /* full recomputation: offloaded checkpoints (pinned host memory, offload.cu) give its step bit for
             * bit; bf16 checkpoints its loss, the gradients within bf16 rounding of the layer inputs */
            const struct lmc_tacts_opts rc = {true, false, false}, rcoff = {true, false, false, true};
            const struct lmc_tacts_opts rc16 = {true, false, true};
            double lr, lo, l16;
            std::vector<float> gr, go, g16;
            if (!lora_step(&gpu, dir, in, tg, nullptr, 0, lr, gr, o1, &rc) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, lo, go, o1, &rcoff) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, l16, g16, o1, &rc16))
                continue;
            int64_t doff = 0;
            for (size_t i = 0; i < gr.size(); i++) doff += memcmp(&gr[i], &go[i], 4) != 0;
            check(p + "recompute offloaded vs recompute: loss bits", memcmp(&lr, &lo, sizeof lr) ? 1.0 : 0.0, 0, "%s", mn);
            check(p + "recompute offloaded vs recompute: gradients differing", (double)doff, 0, "%s", mn);
            double e16 = rel(g16, gr), c16 = 1 - cosine(g16.data(), gr.data(), gr.size());
            check(p + "recompute bf16 checkpoints: loss bits", memcmp(&lr, &l16, sizeof lr) ? 1.0 : 0.0, 0, "%s", mn);
            check(p + "recompute bf16 checkpoints grads", e16, 2e-2, "%s", mn);
            check(p + "recompute bf16 checkpoints grads (1 - cosine)", c16, 1e-4, "%s", mn);
            printf("  %s lora recompute %s: offloaded = recompute (%lld differ); bf16 checkpoints grads rel %.2e, "
                   "1 - cos %.2e\n", mn, bf ? "bf16" : "fp32", (long long)doff, e16, c16);
            /* attention recomputation (the MLP's saves kept, lmc_tacts_opts.mixer): the no-recompute step bit
             * for bit (f32 saves), offloaded the same again; with bf16 saves its loss, the gradients within bf16
             * rounding, and offloaded its own step bit for bit */
            const struct lmc_tacts_opts at = {false, false, false, false, true}, atoff = {false, false, false, true, true};
            const struct lmc_tacts_opts atb = {false, false, true, false, true}, atboff = {false, false, true, true, true};
            double la, lao, lab, labo;
            std::vector<float> ga, gao, gab, gabo;
            if (!lora_step(&gpu, dir, in, tg, nullptr, 0, la, ga, o1, &at) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, lao, gao, o1, &atoff) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, lab, gab, o1, &atb) ||
                !lora_step(&gpu, dir, in, tg, nullptr, 0, labo, gabo, o1, &atboff))
                continue;
            int64_t da = 0, dao = 0, dabo = 0;
            for (size_t i = 0; i < g0.size(); i++) {
                da += memcmp(&g0[i], &ga[i], 4) != 0;
                dao += memcmp(&ga[i], &gao[i], 4) != 0;
                dabo += memcmp(&gab[i], &gabo[i], 4) != 0;
            }
            check(p + "attn recompute vs none: loss bits", memcmp(&l0, &la, sizeof l0) ? 1.0 : 0.0, 0, "%s", mn);
            check(p + "attn recompute vs none: gradients differing", (double)da, 0, "%s", mn);
            check(p + "attn recompute offloaded vs attn: loss bits", memcmp(&la, &lao, sizeof la) ? 1.0 : 0.0, 0, "%s", mn);
            check(p + "attn recompute offloaded vs attn: gradients differing", (double)dao, 0, "%s", mn);
            double eab = rel(gab, g0), cab = 1 - cosine(gab.data(), g0.data(), g0.size());
            check(p + "attn recompute bf16: loss bits", memcmp(&l0, &lab, sizeof l0) ? 1.0 : 0.0, 0, "%s", mn);
            check(p + "attn recompute bf16 grads", eab, 2e-2, "%s", mn);
            check(p + "attn recompute bf16 grads (1 - cosine)", cab, 1e-4, "%s", mn);
            check(p + "attn recompute bf16 offloaded vs bf16: loss bits", memcmp(&lab, &labo, sizeof lab) ? 1.0 : 0.0, 0,
                  "%s", mn);
            check(p + "attn recompute bf16 offloaded vs bf16: gradients differing", (double)dabo, 0, "%s", mn);
            printf("  %s lora attn recompute %s: = none (%lld differ), offloaded = attn (%lld differ); bf16 grads rel "
                   "%.2e, 1 - cos %.2e, offloaded = bf16 (%lld differ)\n", mn, bf ? "bf16" : "fp32", (long long)da,
                   (long long)dao, eab, cab, (long long)dabo);
        }
        lmc_backend_cuda_set_train_bf16(&gpu, false);
    }
    emu_strict_device = false;
}
#include "harness_kvq.cc" /* test_kvq: the compressed KV cache kernels */

/* moe_gemm.cu vs ops/cpu/moe_gemm.c: rows grouped by expert per off */
static void moe_case(const std::vector<int64_t> &off, int64_t N, int64_t K, enum lmc_dtype dt,
                     enum lmc_cuda_moe_path path) {
    int64_t E = (int64_t)off.size() - 1, rows = off.back();
    std::vector<wpair> w;
    std::vector<const lmc_mat *> wh, wd;
    w.reserve((size_t)E);
    for (int64_t e = 0; e < E; e++) w.push_back(make_w(gpu, dt, N, K, (size_t)irand(3)));
    for (auto &p : w) wh.push_back(&p.h), wd.push_back(&p.d);
    std::vector<float> x = rv((size_t)(rows * K)), y = nans((size_t)(rows * N));
    float *dx_ = dup_dev(gpu, x), *dy_ = dev_nan(gpu, (size_t)(rows * N), 1);
    cpu.moe_gemm(cpu.ctx, y.data(), x.data(), off.data(), E, wh.data());
    lmc_cuda_moe_gemm_ex(gpu.ctx, dy_, dx_, off.data(), E, wd.data(), path);
    const bool loop = path == LMC_CUDA_MOE_LOOP;
    char nm[64];
    snprintf(nm, sizeof nm, "moe_gemm %s fwd %s", loop ? "loop" : "grouped", dtn(dt));
    /* the loop runs the backend's matmul: bf16 / f16 activations in its GEMMs (test_mm's tolerances);
     * the grouped BF16 path is the tensor-core kernel (bf16 activations), F16 the simple one (f32) */
    const double tol = dt == LMC_DTYPE_F32 ? 1e-5 : dt == LMC_DTYPE_BF16 ? 1e-2 : !loop ? 1e-4 : 2e-3;
    check(nm, rel(down(gpu, dy_, (size_t)(rows * N)), y), tol, "E %lld N %lld K %lld",
          (long long)E, (long long)N, (long long)K);
    if (dt == LMC_DTYPE_BF16 && !loop) { /* the tensor-core kernel vs the CPU on x rounded to bf16 as it rounds it */
        std::vector<float> xr = x, yr = nans((size_t)(rows * N));
        for (auto &v : xr) v = lmc_bf16_to_f32(lmc_f32_to_bf16(v));
        cpu.moe_gemm(cpu.ctx, yr.data(), xr.data(), off.data(), E, wh.data());
        check("moe_gemm grouped BF16 vs bf16-rounded x", rel(down(gpu, dy_, (size_t)(rows * N)), yr), 1e-5,
              "E %lld N %lld K %lld", (long long)E, (long long)N, (long long)K);
        /* moe_gemm_dev: the offsets in device memory, max_rows exact and generous */
        int64_t most = 0;
        for (int64_t e = 0; e < E; e++) most = std::max(most, off[(size_t)e + 1] - off[(size_t)e]);
        int64_t *offd = (int64_t *)dup_dev(gpu, off.data(), off.size() * 8);
        for (int64_t mr : {most, rows + 5}) {
            float *yd = dev_nan(gpu, (size_t)(rows * N), 1);
            gpu.moe_gemm_dev(gpu.ctx, yd, dx_, offd, mr, E, wd.data());
            check("moe_gemm_dev BF16 vs bf16-rounded x", rel(down(gpu, yd, (size_t)(rows * N)), yr), 1e-5,
                  "E %lld N %lld K %lld max_rows %lld", (long long)E, (long long)N, (long long)K, (long long)mr);
        }
    }
    if (dt == LMC_DTYPE_F32) {
        for (int accum = 0; accum < 2; accum++) {
            std::vector<float> g = rv((size_t)(rows * N)), dxc = rv((size_t)(rows * K));
            std::vector<std::vector<float>> dwc;
            std::vector<float *> dwh, dwd;
            for (int64_t e = 0; e < E; e++) dwc.push_back(rv((size_t)(N * K)));
            for (int64_t e = 0; e < E; e++) dwd.push_back(dup_dev(gpu, dwc[(size_t)e]));
            for (auto &v : dwc) dwh.push_back(v.data());
            float *gd = dup_dev(gpu, g), *dxd = dup_dev(gpu, dxc);
            cpu.moe_gemm_bwd(cpu.ctx, dxc.data(), dwh.data(), g.data(), x.data(), off.data(), E, wh.data(), accum);
            lmc_cuda_moe_gemm_bwd_ex(gpu.ctx, dxd, dwd.data(), gd, dx_, off.data(), E, wd.data(), accum, path);
            check(std::string("moe_gemm ") + (loop ? "loop" : "grouped") + (accum ? " bwd dx +=" : " bwd dx ="),
                  rel(down(gpu, dxd, (size_t)(rows * K)), dxc), 1e-5);
            double ew = 0;
            for (int64_t e = 0; e < E; e++)
                ew = std::max(ew, rel(down(gpu, dwd[(size_t)e], (size_t)(N * K)), dwc[(size_t)e]));
            check(std::string("moe_gemm ") + (loop ? "loop" : "grouped") + " bwd dw +=", ew, 1e-5);
        }
    }
}

#include "harness_qfolder.cc" /* quantized model folders end to end (qmm e2e, MoE quantized experts) */
#include "harness_moe.cc" /* test_moe_route, test_moe_e2e: MoE routing ops and models, clamp */
#include "harness_qmm.cc" /* test_qmm: the quantized matmul kernels */
#include "harness_rl.cc" /* test_rl: lmc rl's GRPO / PPO step through the CUDA table */

static void test_moe() {
    for (enum lmc_cuda_moe_path path : {LMC_CUDA_MOE_GROUPED, LMC_CUDA_MOE_LOOP}) {
        for (enum lmc_dtype dt : {LMC_DTYPE_F32, LMC_DTYPE_BF16, LMC_DTYPE_F16}) {
            moe_case({0, 0, 5, 5, 12, 13}, 7, 13, dt, path); /* empty experts, odd sizes */
            moe_case({0, 0, 37, 37}, 19, 5, dt, path);       /* one expert holds every row */
        }
        /* several 64-row and 64-column tiles, K over several steps of 32 (the tensor-core kernel) */
        moe_case({0, 70, 70, 200}, 131, 77, LMC_DTYPE_BF16, path);
        std::vector<int64_t> off(131, 0); /* 130 experts: two launches */
        for (int64_t e = 1; e <= 130; e++) off[(size_t)e] = off[(size_t)e - 1] + (e % 41 == 0 ? 3 : e == 130 ? 2 : 0);
        moe_case(off, 5, 3, LMC_DTYPE_F32, path);
    }
    test_moe_route();
}

/* Per-request adapters: base, the PEFT fixture's adapter (1) and a random
 * rank-3 adapter on other modules (2) in one paged batch, GPU vs CPU. */
static void test_lora_rows() {
    emu_strict_device = true;
    lmc_err err;
    std::string dir = std::string(fixtures()) + "/llama-tiny";
    const int NS = 3, L = 9, BS = 8, MB = 2;
    const int32_t ad[NS] = {1, 0, 2}, order[NS] = {1, 0, 2}; /* tokens grouped by adapter: 0, 1, 2 */
    std::vector<int32_t> ids(NS * L), seq(NS * L), pos(NS * L), rows(NS * L), bt(NS * MB);
    for (int q = 0, t = 0; q < NS; q++)
        for (int p = 0; p < L; p++, t++) {
            ids[(size_t)t] = irand(512);
            seq[(size_t)t] = order[q];
            pos[(size_t)t] = p;
            rows[(size_t)t] = t;
        }
    for (int i = 0; i < NS * MB; i++) bt[(size_t)i] = (i * 5 + 1) % (NS * MB + 1);
    std::vector<float> out[2];
    const struct lmc_backend *bes[2] = {&cpu, &gpu};
    lmc_backend_cuda_set_fp32_attention(&gpu, true);
    for (int k = 0; k < 2; k++) {
        struct lmc_model m;
        struct lmc_model_opts mo = {LMC_WDTYPE_F32, bes[k]};
        if (lmc_model_load(&m, dir.c_str(), &mo, &err)) { printf("FAIL %s\n", err.msg), n_fail++; return; }
        struct lmc_lora lo[2];
        struct lmc_lora_config lc = {};
        lc.r = 3;
        lc.alpha = 6;
        if (lmc_lora_load(&lo[0], (dir + "/lora").c_str(), &m.cfg, &err) ||
            lmc_lora_parse_targets(&lc, "k_proj,o_proj,up_proj", &err) || lmc_lora_create(&lo[1], &lc, &m.cfg, 9, &err)) {
            printf("FAIL lora_rows adapters %s\n", err.msg), n_fail++;
            return;
        }
        uint64_t s = 7; /* the same B for both backends */
        for (int i = 0; i < lo[1].n_mods; i++)
            for (int64_t j = 0; j < lo[1].mods[i].out * 3; j++)
                lo[1].mods[i].b[j] = (float)((double)(lmc_rng_next(&s) >> 11) / 9007199254740992.0 - 0.5);
        const struct lmc_lora *los[2] = {&lo[0], &lo[1]};
        double mul[2] = {1, 1};
        struct lmc_lora_bank bank;
        struct lmc_kv_pool pool;
        struct lmc_batch_acts ba;
        out[k].assign((size_t)(NS * L) * 512, NAN);
        struct lmc_batch b = {NS * L, ids.data(), seq.data(), pos.data(), NS, bt.data(), MB, rows.data(), NS * L, ad};
        if (lmc_lora_bank_bind(&bank, &m, los, mul, 2, bes[k], &err) ||
            lmc_kv_pool_init(&pool, &m, bes[k], NS * MB + 1, BS, &err) ||
            lmc_batch_acts_init(&ba, &m, bes[k], NS * L, NS, MB, NS * L, &err) ||
            lmc_model_forward_batch(&m, bes[k], &ba, &pool, &b, out[k].data(), &err))
            printf("FAIL lora_rows forward %s\n", err.msg), n_fail++;
        lmc_batch_acts_free(&ba);
        lmc_kv_pool_free(&pool);
        lmc_lora_bank_unbind(&bank, &m);
        lmc_lora_free(&lo[0]);
        lmc_lora_free(&lo[1]);
        lmc_model_free(&m);
    }
    lmc_backend_cuda_set_fp32_attention(&gpu, false);
    double e = rel(out[1], out[0]);
    printf("  llama-tiny, base + 2 adapters in one paged batch, fp32: logits %.2e\n", e);
    check("lora_rows mixed batch logits", e, 1e-4, "llama-tiny");
}

#include "harness_qlora.cc" /* test_qlora: QLoRA's 4-bit base (qmatmul_f.cu) */
#include "harness_finetune.cc" /* test_finetune: lmc finetune --full --pack's trainer path */
#include "harness_ring.cc" /* test_ring_attn: ring attention's block kernels (context parallel) */
#include "harness_zero.cc" /* test_zero: the ZeRO trainer on device memory */
#include "harness_kvq_paged.cc" /* test_kvq_paged: compressed paged pools (attention_paged_kvq.cu) */

/* Distillation through the real CUDA table (model/distill.c): gpt2-tiny as
 * the student (loaded on each backend), llama-tiny and mamba-tiny as
 * teachers (their inference forward on the device, chunks of 5 tokens
 * through the KV cache / recurrent state), alpha 0.5, T 2, B = 2 x T = 11
 * with ignored targets: the loss, the KL and agreement sums and every
 * gradient vs the CPU (fp32). */
extern "C" {
#include "model/distill.h"
}
static bool distill_step(const struct lmc_backend *be, const char *teacher, const std::vector<int32_t> &in,
                         const std::vector<int32_t> &tg, double out[3], std::vector<float> &g) {
    lmc_err err;
    const std::string sd = std::string(fixtures()) + "/gpt2-tiny", td = std::string(fixtures()) + "/" + teacher;
    struct lmc_tmodel tm;
    struct lmc_model t;
    struct lmc_model_opts mo = {};
    mo.be = be;
    if (lmc_tmodel_load(&tm, sd.c_str(), be, &err)) { printf("FAIL distill student: %s\n", err.msg), n_fail++; return false; }
    if (lmc_model_load(&t, td.c_str(), &mo, &err)) {
        printf("FAIL distill teacher: %s\n", err.msg), n_fail++;
        lmc_tmodel_free(&tm);
        return false;
    }
    struct lmc_tacts a;
    struct lmc_distill d;
    bool ok = !lmc_tacts_init(&a, &tm, be, 2, 11, false, &err);
    if (ok && !(ok = !lmc_distill_init(&d, &t, &tm.cfg, be, 2, 11, 0.5f, 2.0f, &err))) lmc_tacts_free(&a);
    if (ok) {
        d.chunk = 5;
        a.distill = &d;
        int64_t n = 0;
        lmc_tmodel_zero_grad(&tm);
        ok = !lmc_tmodel_step(&tm, be, &a, in.data(), tg.data(), true, 1.0f, &out[0], &n, &err);
        out[1] = d.kl_sum, out[2] = d.agree_sum;
        g.resize((size_t)tm.numel);
        be->download(be->ctx, g.data(), tm.g, g.size() * sizeof(float));
        lmc_distill_free(&d);
        lmc_tacts_free(&a);
    }
    if (!ok) printf("FAIL distill step on %s: %s\n", be->name, err.msg), n_fail++;
    lmc_model_free(&t);
    lmc_tmodel_free(&tm);
    return ok;
}
static void test_distill() {
    std::vector<int32_t> in(22), tg(22);
    for (int i = 0; i < 22; i++) in[i] = irand(512), tg[i] = i % 7 == 3 ? -1 : irand(512);
    for (const char *teacher : {"llama-tiny", "mamba-tiny"}) {
        double c[3], d[3];
        std::vector<float> gc, gd;
        if (!distill_step(&cpu, teacher, in, tg, c, gc) || !distill_step(&gpu, teacher, in, tg, d, gd)) continue;
        /* the teacher's logits are the device forward's (bf16 KV cache as on an H100; the Mamba scan in
         * another order): the KL, a small difference of logits, within 1e-3 */
        check("distill loss", std::fabs(d[0] - c[0]) / std::fabs(c[0]), 1e-4, "%s", teacher);
        check("distill KL sum", std::fabs(d[1] - c[1]) / std::fabs(c[1]), 1e-3, "%s", teacher);
        check("distill agreement sum", std::fabs(d[2] - c[2]), 0, "%s", teacher);
        check("distill gradients", rel(gd, gc), 1e-3, "%s", teacher);
        printf("  distill, %s teacher: loss %.9g (cpu %.9g), KL sum %.9g (cpu %.9g), agreement %g of 19\n", teacher,
               d[0], c[0], d[1], c[1], d[2]);
    }
}

int main(int argc, char **argv) {
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 1, &err)) { fprintf(stderr, "cpu backend: %s\n", err.msg); return 1; }
    lmc_backend_cpu_set_bf16_prefill(&cpu, false); /* the twin is the fp32 reference for F16/BF16 weights too */
    if (lmc_backend_cuda_init(&gpu, 0, &err)) { fprintf(stderr, "cuda backend (emulated): %s\n", err.msg); return 1; }
    cc = (struct lmc_cuda_ctx *)gpu.ctx; /* n_sm 132, kv_dtype BF16: as on an H100 */
    struct { const char *name; void (*fn)(); } sections[] = {
        {"attn_train", test_attn_train}, {"sample", test_sample}, {"ops", test_ops},
        {"xent", test_xent}, {"attn", test_attn}, {"mm", test_mm}, {"e2e", test_e2e},
        /* appended last: the earlier sections keep their seeds (LMC_EMU_SEED + index) */
        {"ssm", test_ssm},
        {"optim", test_optim},
        {"lora", test_lora},
        {"kvq", test_kvq},
        {"moe", test_moe},
        {"lora_rows", test_lora_rows},
        {"qmm", test_qmm},
        {"rl", test_rl},
        {"qlora", test_qlora},
        {"moe_e2e", test_moe_e2e},
        {"finetune", test_finetune},
        {"zero", test_zero},
        {"kvq_paged", test_kvq_paged},
        {"ring_attn", test_ring_attn},
        {"distill", test_distill},
    };
    for (int i = 1; i < argc; i++) {
        bool known = false;
        for (auto &s : sections) known |= !strcmp(argv[i], s.name);
        if (!known) {
            fprintf(stderr, "harness: no section %s (attn_train sample ops xent attn mm e2e ssm optim lora kvq moe lora_rows qmm rl qlora moe_e2e finetune zero kvq_paged ring_attn distill)\n", argv[i]);
            return 2;
        }
    }
    const char *seed = getenv("LMC_EMU_SEED");
    for (auto &s : sections) {
        rng.seed((seed ? strtoull(seed, nullptr, 10) : 20240611) + (uint64_t)(&s - sections));
        bool want = argc < 2;
        for (int i = 1; i < argc; i++) want |= !strcmp(argv[i], s.name);
        if (!want) continue;
        printf("== %s\n", s.name);
        fflush(stdout);
        s.fn();
    }
    printf("max error per check (cases, tolerance):\n");
    for (auto &t : table)
        printf("  %-36s %-9.3g (%ld, %.0e)%s\n", t.first.c_str(), t.second.err, t.second.cases, t.second.tol,
               t.second.fails ? "  FAIL" : "");
    printf("%ld launches emulated, %ld cublasLtMatmul calls (%ld with the bias epilogue), %ld heuristic queries; "
           "%d failures\n", emu_launches, emu_gemm_calls, emu_gemm_bias_epilogues, emu_lt_heuristic_calls, n_fail);
    lmc_backend_cuda_free(&gpu);
    return n_fail ? 1 : 0;
}
