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
 *   xent        classifier_xent.cu (GEMMs by the host stand-in)
 *   attn        attention.cu (tensor-core prefill and split-K kernels) and
 *               attention_paged.cu */
#include "ops/cuda/common.cuh"
#include "ops/cuda/attention_train.h"

extern "C" {
#include "core/dtype.h"
}

#include <cstdarg>
#include <map>
#include <random>
#include <string>

extern long emu_gemm_calls;

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
static struct lmc_cuda_ctx cc; /* as lmc_backend_cuda_init leaves it, minus the device */
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
            cc.train_bf16 = bf;
            auto og = nans(nq), lg = nans(nl), dqg = nans(nq), dkg = nans(nk), dvg = nans(nk);
            lmc_cuda_attention_train(&cc, og.data(), lg.data(), q.data(), k.data(), v.data(), s.B, s.T,
                                     s.H, s.KV, s.hd, scale, s.win);
            lmc_cuda_attention_bwd(&cc, dqg.data(), dkg.data(), dvg.data(), dout.data(), og.data(),
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
    cc.train_bf16 = false;
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
        lmc_cuda_sample_rows(&cc, got.data(), lg.data(), rows, V, P.data());
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
        lmc_cuda_sample_rows(&cc, &id, row, 1, 11, &p);
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
        double a = lmc_cuda_sumsq(&cc, x.data(), n), b = cpu.sumsq(cpu.ctx, x.data(), n);
        check("sumsq", fabs(a - b) / b, 1e-12, "n=%ld", (long)n);
        if (n > 70000) continue;
        auto p = rv(n), g = rv(n, 2), m = rv(n, .1f), v = rv(n);
        for (auto &t : v) t = t * t * 0.01f;
        lmc_adamw_step s = {1.1e-3f, 1 - 1e-4f, 0.999f, 0.1f, 0.001f, sqrtf(1 - powf(0.999f, 3)), 1e-8f, 0.7f};
        auto p2 = p, m2 = m, v2 = v;
        lmc_cuda_adamw(&cc, p.data(), g.data(), m.data(), v.data(), n, &s);
        cpu.adamw(cpu.ctx, p2.data(), g.data(), m2.data(), v2.data(), n, &s);
        check("adamw", std::max({rel(p, p2), rel(m, m2), rel(v, v2)}), 1e-6, "n=%ld", (long)n);
        lmc_cuda_zero(&cc, p.data(), (size_t)n * 4);
        check("zero", rel(p, std::vector<float>(n, 0.0f)), 0, "n=%ld", (long)n);
    }
    /* rmsnorm / layernorm forward (y aliasing x too) and backward */
    for (int64_t M : {1, 3, 257}) for (int64_t C : {1, 5, 33, 255, 1025}) for (int mode = 0; mode < 3; mode++) {
        if (M * C > 100000) continue;
        auto x = rv(M * C, 2), dy = rv(M * C), w = rv(C), bias = rv(C);
        if (mode == 2) for (auto &t : x) t += 30; /* mean >> spread */
        const float eps = 1e-5f;
        auto y1 = nans(M * C), y2 = nans(M * C);
        lmc_cuda_rmsnorm(&cc, y1.data(), x.data(), w.data(), M, C, eps);
        cpu.rmsnorm(cpu.ctx, y2.data(), x.data(), w.data(), M, C, eps);
        check("rmsnorm", rel(y1, y2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        y1 = x;
        lmc_cuda_layernorm(&cc, y1.data(), y1.data(), w.data(), bias.data(), M, C, eps);
        cpu.layernorm(cpu.ctx, y2.data(), x.data(), w.data(), bias.data(), M, C, eps);
        check("layernorm (in place)", rel(y1, y2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        auto dx1 = rv(M * C), dw1 = rv(C), db1 = rv(C), dx2 = dx1, dw2 = dw1, db2 = db1;
        bool no_dw = mode == 1 && C % 2, no_db = mode == 1 && !(C % 2);
        lmc_cuda_rmsnorm_bwd(&cc, dx1.data(), no_dw ? nullptr : dw1.data(), dy.data(), x.data(), w.data(), M, C, eps);
        cpu.rmsnorm_bwd(cpu.ctx, dx2.data(), no_dw ? nullptr : dw2.data(), dy.data(), x.data(), w.data(), M, C, eps);
        check("rmsnorm_bwd dx", rel(dx1, dx2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        check("rmsnorm_bwd dw", rel(dw1, dw2), 1e-5, "M=%ld C=%ld", (long)M, (long)C);
        dx1 = rv(M * C), dw1 = rv(C), dx2 = dx1, dw2 = dw1;
        lmc_cuda_layernorm_bwd(&cc, dx1.data(), no_dw ? nullptr : dw1.data(), no_db ? nullptr : db1.data(),
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
            lmc_cuda_rope(&cc, x1.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            cpu.rope(cpu.ctx, x2.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            check("rope", rel(x1, x2), 1e-5, "M=%ld D=%ld R=%ld", (long)r.M, (long)r.D, (long)r.R);
            lmc_cuda_rope_bwd(&cc, x1.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            cpu.rope_bwd(cpu.ctx, x2.data(), r.M, r.H, r.D, r.R, pos.data(), inv.data(), 0.9f);
            check("rope_bwd", rel(x1, x2), 1e-5, "M=%ld D=%ld R=%ld", (long)r.M, (long)r.D, (long)r.R);
        }
        for (int f16 = 0; f16 < 2; f16++) {
            auto q = rv(r.M * r.H * r.D), k = rv(r.M * kvd), v = rv(r.M * kvd), qc = q, kc = k;
            const uint16_t fill = f16 ? 0x4700 : lmc_f32_to_bf16(7.0f); /* 7.0 either way */
            std::vector<uint16_t> kcache(ctx * kvd, fill), vcache(ctx * kvd, fill);
            cc.kv_dtype = f16 ? LMC_DTYPE_F16 : LMC_DTYPE_BF16;
            lmc_cuda_rope_kv_store(&cc, q.data(), k.data(), v.data(), kcache.data(), vcache.data(), r.M, r.H,
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
        cc.kv_dtype = LMC_DTYPE_BF16;
    }
    /* elementwise: swiglu, gelu (erf, tanh), add, forward and backward, aliased */
    for (int64_t n : {5, 31, 1001, 70001}) {
        auto g = rv(n, 8), u = rv(n, 2), dy = rv(n), x = rv(n, 6);
        auto y1 = nans(n), y2 = nans(n), a1 = nans(n), b1 = nans(n), a2 = nans(n), b2 = nans(n);
        lmc_cuda_swiglu(&cc, y1.data(), g.data(), u.data(), n);
        cpu.swiglu(cpu.ctx, y2.data(), g.data(), u.data(), n);
        check("swiglu", rel(y1, y2), 1e-5, "n=%ld", (long)n);
        lmc_cuda_add(&cc, y1.data(), g.data(), u.data(), n);
        cpu.add(cpu.ctx, y2.data(), g.data(), u.data(), n);
        check("add", rel(y1, y2), 0, "n=%ld", (long)n);
        lmc_cuda_swiglu_bwd(&cc, a1.data(), b1.data(), dy.data(), g.data(), u.data(), n);
        cpu.swiglu_bwd(cpu.ctx, a2.data(), b2.data(), dy.data(), g.data(), u.data(), n);
        check("swiglu_bwd dgate", rel(a1, a2), 1e-5, "n=%ld", (long)n);
        check("swiglu_bwd dup", rel(b1, b2), 1e-5, "n=%ld", (long)n);
        auto d1 = dy; /* dgate aliasing dy */
        lmc_cuda_swiglu_bwd(&cc, d1.data(), b1.data(), d1.data(), g.data(), u.data(), n);
        check("swiglu_bwd dgate (aliasing dy)", rel(d1, a2), 1e-5, "n=%ld", (long)n);
        for (int t = 0; t < 2; t++) {
            y1 = x;
            lmc_cuda_gelu(&cc, y1.data(), y1.data(), n, t);
            cpu.gelu(cpu.ctx, y2.data(), x.data(), n, t);
            check(t ? "gelu tanh (in place)" : "gelu erf (in place)", rel(y1, y2), 1e-5, "n=%ld", (long)n);
            d1 = dy;
            lmc_cuda_gelu_bwd(&cc, d1.data(), d1.data(), x.data(), n, t);
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
            lmc_cuda_embed(&cc, y1.data(), &t, ids.data(), n);
            cpu.embed(cpu.ctx, y2.data(), &t, ids.data(), n);
            check("embed", rel(y1, y2), 0, "n=%ld C=%ld dtype %d", (long)n, (long)C, d);
        }
        auto dy = rv(n * C), t1 = rv(rows * C), t2 = t1;
        lmc_cuda_embed_bwd(&cc, t1.data(), dy.data(), ids.data(), n, C);
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
        lmc_cuda_argmax_rows(&cc, g.data(), lg.data(), rows, V);
        cpu.argmax_rows(cpu.ctx, c.data(), lg.data(), rows, V);
        int diff = 0;
        for (int64_t r = 0; r < rows; r++) diff += g[r] != c[r];
        check("argmax_rows (ids differing)", diff, 0, "V=%ld kind=%d", (long)V, kind);
    }
}

/* ------------------------------------------------------------------ */
static void test_xent() {
    for (int bf = 0; bf < 2; bf++)
        for (int64_t M : {1, 7, 67}) for (int64_t V : {1, 5, 77, 1001}) for (int64_t C : {1, 9, 33})
            for (int grads = 0; grads < 3; grads++) { /* loss only; + dh; + dh and dw */
                cc.train_bf16 = bf;
                auto h = rv(M * C), W = rv(V * C, 0.5f);
                std::vector<int32_t> tg(M);
                for (auto &t : tg) t = irand(5) == 0 ? -1 : irand((int)V);
                lmc_mat w = {LMC_DTYPE_F32, V, C, W.data()};
                auto l1 = nans(M), l2 = nans(M), dh1 = nans(M * C), dh2 = nans(M * C);
                auto dw1 = rv(V * C), dw2 = dw1;
                float *pdh1 = grads ? dh1.data() : nullptr, *pdh2 = grads ? dh2.data() : nullptr;
                float *pdw1 = grads == 2 ? dw1.data() : nullptr, *pdw2 = grads == 2 ? dw2.data() : nullptr;
                lmc_cuda_classifier_xent(&cc, l1.data(), pdh1, pdw1, h.data(), &w, tg.data(), M, 1.0f / M);
                cpu.classifier_xent(cpu.ctx, l2.data(), pdh2, pdw2, h.data(), &w, tg.data(), M, 1.0f / M);
                const double tol = bf ? 2e-2 : 1e-5;
                const std::string p = bf ? "classifier_xent bf16 " : "classifier_xent fp32 ";
                check(p + "loss", rel(l1, l2), tol, "M=%ld V=%ld C=%ld", (long)M, (long)V, (long)C);
                if (grads) check(p + "dh", rel(dh1, dh2), tol, "M=%ld V=%ld C=%ld", (long)M, (long)V, (long)C);
                if (grads == 2) check(p + "dw", rel(dw1, dw2), tol, "M=%ld V=%ld C=%ld", (long)M, (long)V, (long)C);
            }
    cc.train_bf16 = false;
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
            lmc_cuda_attention_ex(&cc, o.data(), q.data(), f32kv ? (const void *)k.data() : kb.data(),
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
            cc.kv_dtype = bf ? LMC_DTYPE_BF16 : LMC_DTYPE_F32;
            auto o = nans(T * qr);
            lmc_cuda_attention_paged(&cc, o.data(), qv.data(), kn.data(), vn.data(),
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
    cc.kv_dtype = LMC_DTYPE_BF16;
}

int main(int argc, char **argv) {
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 1, &err)) { fprintf(stderr, "cpu backend: %s\n", err.msg); return 1; }
    cc.n_sm = 132; /* an H100's, for the split heuristics */
    cc.kv_dtype = LMC_DTYPE_BF16;
    struct { const char *name; void (*fn)(); } sections[] = {
        {"attn_train", test_attn_train}, {"sample", test_sample}, {"ops", test_ops},
        {"xent", test_xent}, {"attn", test_attn},
    };
    for (int i = 1; i < argc; i++) {
        bool known = false;
        for (auto &s : sections) known |= !strcmp(argv[i], s.name);
        if (!known) {
            fprintf(stderr, "harness: no section %s (attn_train sample ops xent attn)\n", argv[i]);
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
    printf("%ld launches emulated, %ld GEMMs on the host; %d failures\n", emu_launches, emu_gemm_calls, n_fail);
    return n_fail ? 1 : 0;
}
