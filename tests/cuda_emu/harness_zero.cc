/* harness_zero.cc — section zero (included by harness.cc): the data-parallel
 * trainer's ZeRO path on device memory (train/trainer_dist.c, dist/zero.c)
 * through the real CUDA table (emulated, strict: the host never reads
 * device memory) in one process with the single communicator, the path
 * `lmc train --device cuda --zero S` takes on each GPU. llama-tiny without
 * arenas (lmc_tmodel_load_layout, its folder as the model source, each
 * unit filled from it), ZeRO 0, 2, 3 and 3 with every part in one bucket,
 * 3 AdamW steps (clipping) on a random token stream, against the plain
 * one-process trainer on the CPU backend: losses and final parameters,
 * fp32. Then `lmc finetune --full --device cuda --zero S`'s path: the whole
 * model loaded (lmc_tmodel_load, arenas on the device), a batch source
 * (harness_finetune.cc's packed rows with masked targets, accumulation 2),
 * --full and LoRA (the lora_train fixture's adapter over the frozen base,
 * its views rebound by o.bind_part), ZeRO 0-3 through the zero module, 2
 * steps against the plain one-process CPU run: losses and the trained
 * floats. */
extern "C" {
#include "dist/comm.h"
#include "dist/zero.h"
#include "train/data.h"
#include "train/trainer.h"
}

struct zero_out {
    std::vector<double> loss;
    std::vector<float> w;
};

static bool zero_run(const struct lmc_backend *be, const std::string &dir, const struct lmc_token_data *td, int stage,
                     int64_t bucket, zero_out &o) {
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_tmodel tm;
    struct lmc_tmodel_src src;
    bool zero = stage >= 0, have_src = false;
    if (zero ? lmc_tmodel_load_layout(&tm, dir.c_str(), be, &err) : lmc_tmodel_load(&tm, dir.c_str(), be, &err)) {
        printf("FAIL zero model %s: %s\n", dir.c_str(), err.msg), n_fail++;
        return false;
    }
    if (zero && lmc_tmodel_src_dir(&src, &tm, dir.c_str(), &err)) {
        printf("FAIL zero source: %s\n", err.msg), n_fail++;
        lmc_tmodel_free(&tm);
        return false;
    }
    have_src = zero;
    struct lmc_train_opts op;
    memset(&op, 0, sizeof op);
    op.B = 2, op.T = 16, op.accum = 1, op.clip = 0.05, op.seed = 3, op.eval_batches = 0;
    lmc_adamw_cfg_default(&op.adamw);
    op.adamw.lr = 1e-3;
    lmc_optim_cfg_default(&op.optim, LMC_OPTIM_ADAMW);
    op.sched = (struct lmc_schedule){LMC_SCHED_CONSTANT, 1e-3, 1e-3, 0, 3, 0};
    op.zero_moments = zero;
    op.init_src = have_src ? &src : nullptr;
    op.bucket_bytes = bucket;
    struct lmc_trainer tr;
    struct lmc_comm c;
    lmc_comm_single_init(&c);
    bool ok = !lmc_trainer_init(&tr, &tm, be, td, nullptr, &op, &err);
    if (ok && zero && lmc_trainer_dist_init(&tr, &c, stage, "harness", &err)) {
        lmc_trainer_free(&tr);
        ok = false;
    }
    if (have_src) lmc_tmodel_src_free(&src);
    if (!ok) {
        printf("FAIL zero trainer stage %d on %s: %s\n", stage, be->name, err.msg), n_fail++;
        c.free(&c);
        return false;
    }
    for (int s = 0; s < 3 && ok; s++) {
        struct lmc_train_stats st;
        ok = !lmc_trainer_step(&tr, &st, &err);
        o.loss.push_back(st.loss);
    }
    o.w.assign((size_t)tr.tm.numel, NAN);
    if (ok) ok = !(zero ? lmc_zero_params_to_host(tr.zero, o.w.data(), &err)
                        : (lmc_tmodel_download_arena(&tr.tm, tr.tm.w, o.w.data()), LMC_OK));
    if (!ok) printf("FAIL zero steps stage %d on %s: %s\n", stage, be->name, err.msg), n_fail++;
    lmc_trainer_free(&tr);
    c.free(&c);
    return ok;
}

/* lmc finetune's trainer (a batch source) on BE; stage < 0: plain, else through the zero module (single
 * comm); lora: the lora_train fixture's adapter over the frozen base, bound to the zero module's buffers
 * (o.bind_part) — o.w then holds the trainable floats [trainable_off, numel) only */
static bool zero_ft_run(const struct lmc_backend *be, const std::string &dir, ft_feed f, int stage, bool lora,
                        zero_out &o) {
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_tmodel tm;
    struct lmc_trainer tr;
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    memset(&lo, 0, sizeof lo);
    memset(&lt, 0, sizeof lt);
    if (lmc_tmodel_load(&tm, dir.c_str(), be, &err)) {
        printf("FAIL zero finetune load on %s: %s\n", be->name, err.msg), n_fail++;
        return false;
    }
    if (lora && (lmc_lora_load(&lo, (dir + "/lora_train").c_str(), &tm.cfg, &err) ||
                 lmc_lora_train_attach(&lt, &tm, &lo, &err))) {
        printf("FAIL zero finetune lora attach on %s: %s\n", be->name, err.msg), n_fail++;
        lmc_tmodel_free(&tm);
        lmc_lora_free(&lo);
        return false;
    }
    struct lmc_train_opts op = {};
    op.B = f.B, op.T = f.T, op.accum = 2, op.decay = LMC_DECAY_DEFAULT, op.clip = 0.5, op.next_batch = ft_next;
    op.batch_user = &f;
    op.adamw = (struct lmc_adamw_cfg){1e-3, 0.9, 0.999, 1e-3, 0.01};
    lmc_optim_cfg_default(&op.optim, LMC_OPTIM_ADAMW);
    op.sched = (struct lmc_schedule){LMC_SCHED_CONSTANT, 1e-3, 1e-3, 0, 100, 0};
    op.zero_moments = stage >= 0;
    if (lora) op.bind_part = lmc_lora_train_bind_part, op.bind_user = &lt;
    struct lmc_comm c;
    lmc_comm_single_init(&c);
    bool ok = !lmc_trainer_init(&tr, &tm, be, NULL, NULL, &op, &err);
    if (ok && stage >= 0 && lmc_trainer_dist_init(&tr, &c, stage, "harness finetune", &err)) {
        lmc_trainer_free(&tr);
        ok = false;
    }
    if (!ok) {
        printf("FAIL zero finetune trainer stage %d on %s: %s\n", stage, be->name, err.msg), n_fail++;
        c.free(&c);
        if (lora) lmc_lora_train_free(&lt), lmc_lora_free(&lo);
        return false;
    }
    if (stage >= 0 && !tr.zero) printf("FAIL zero finetune stage %d: not through the zero module\n", stage), n_fail++;
    for (int s = 0; s < 2 && ok; s++) {
        struct lmc_train_stats st;
        ok = !lmc_trainer_step(&tr, &st, &err);
        o.loss.push_back(st.loss);
    }
    int64_t off = tr.tm.trainable_off;
    if (ok && tr.zero) {
        o.w.assign((size_t)(tr.tm.numel - off), NAN);
        ok = !lmc_zero_params_to_host(tr.zero, o.w.data(), &err);
    } else if (ok) {
        std::vector<float> all((size_t)tr.tm.numel);
        lmc_tmodel_download_arena(&tr.tm, tr.tm.w, all.data());
        o.w.assign(all.begin() + off, all.end());
    }
    if (!ok) printf("FAIL zero finetune steps stage %d on %s: %s\n", stage, be->name, err.msg), n_fail++;
    lmc_trainer_free(&tr);
    c.free(&c);
    if (lora) lmc_lora_train_free(&lt), lmc_lora_free(&lo);
    return ok;
}

static void test_zero_finetune(const std::string &dir) {
    ft_feed f;
    f.B = 2, f.T = 24, f.drawn = 0;
    f.segs = {0, 5, 5, 11, 16, 8, 24, 13, 37, 11};
    int64_t n = f.B * f.T;
    f.in.resize((size_t)(4 * n)), f.tg.resize((size_t)(4 * n));
    for (auto &i : f.in) i = irand(512);
    for (size_t i = 0; i < f.tg.size(); i++) f.tg[i] = irand(3) == 0 ? -1 : irand(512);
    for (bool lora : {false, true}) {
        const std::string kind = lora ? "lora" : "full";
        zero_out ref;
        if (!zero_ft_run(&cpu, dir, f, -1, lora, ref)) continue;
        for (int stage = 0; stage <= 3; stage++) {
            zero_out g;
            if (!zero_ft_run(&gpu, dir, f, stage, lora, g)) continue;
            double el = 0;
            for (size_t s = 0; s < ref.loss.size(); s++)
                el = std::max(el, fabs(g.loss[s] - ref.loss[s]) / fabs(ref.loss[s]));
            double ew = g.w.size() == ref.w.size() ? rel(g.w, ref.w) : INFINITY;
            printf("  llama-tiny finetune %s zero %d on cuda vs one process on the cpu: losses %.2e, trained "
                   "parameters (%zu) %.2e\n", kind.c_str(), stage, el, ref.w.size(), ew);
            const std::string p = "zero device finetune " + kind + " zero " + std::to_string(stage);
            check(p + " losses", el, 1e-5, "llama-tiny");
            check(p + " params", ew, 1e-5, "llama-tiny");
        }
    }
}

static void test_zero() {
    emu_strict_device = true;
    lmc_backend_cuda_set_train_bf16(&gpu, false);
    std::string dir = std::string(fixtures()) + "/llama-tiny";
    char tmp[] = "/tmp/lmc-emu-zero-XXXXXX";
    if (!mkdtemp(tmp)) { printf("FAIL zero: mkdtemp\n"), n_fail++; return; }
    std::string shard = std::string(tmp) + "/train_00000.bin";
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_shard_writer *w = nullptr;
    std::vector<int32_t> ids(2048);
    for (auto &i : ids) i = irand(512);
    struct lmc_token_data td;
    memset(&td, 0, sizeof td);
    bool ok = !lmc_shard_writer_open(&w, shard.c_str(), 512, 2, LMC_SHARD_NO_EOS, &err) &&
              !lmc_shard_writer_add(w, ids.data(), (int64_t)ids.size(), &err) && !lmc_shard_writer_close(w, &err) &&
              !lmc_token_data_open(&td, tmp, "train", &err);
    if (!ok) printf("FAIL zero data: %s\n", err.msg), n_fail++;
    zero_out ref;
    if (ok && zero_run(&cpu, dir, &td, -1, 0, ref)) {
        struct { int stage; int64_t bucket; const char *name; } runs[] = {
            {0, 0, "zero 0"}, {2, 0, "zero 2"}, {3, 0, "zero 3"}, {3, (int64_t)1 << 30, "zero 3 one bucket"}};
        for (auto &r : runs) {
            zero_out g;
            if (!zero_run(&gpu, dir, &td, r.stage, r.bucket, g)) continue;
            double el = 0;
            for (size_t s = 0; s < ref.loss.size(); s++) el = std::max(el, fabs(g.loss[s] - ref.loss[s]) / fabs(ref.loss[s]));
            double ew = rel(g.w, ref.w);
            printf("  llama-tiny %s on cuda vs one process on the cpu: losses %.2e, parameters %.2e\n", r.name, el, ew);
            check(std::string("zero device ") + r.name + " losses", el, 1e-5, "llama-tiny");
            check(std::string("zero device ") + r.name + " params", ew, 1e-5, "llama-tiny");
        }
    }
    if (td.n_tokens) lmc_token_data_close(&td);
    unlink(shard.c_str());
    rmdir(tmp);
    test_zero_finetune(dir);
    emu_strict_device = false;
}
