/* cmd_train.c — `lmc train`: trains a new model (llama or gpt2, sizes from
 * flags or a JSON file) or continues a Hugging Face folder on token shards
 * (lmc prepare-data), on the CPU in fp32 or (--device cuda) on the GPU in
 * bf16 mixed precision or fp32. Logs every step to stderr (a progress line
 * on a terminal) and to a JSONL metrics file, evaluates periodically, saves
 * checkpoints (HF folder + optimizer + data position) and resumes from one
 * bit-exactly (on the same device, precision and thread count). */
#include "cli.h"
#include "cli_pp.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/zero.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "train/trainer_tp.h"
#include "train/trainer_cp.h"
#include "train/trainer_pp.h"
#include "train/trainer_ep.h"
#include "model/distill.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* MFU's default peak on the GPU when --peak-tflops is not given: an H100
 * SXM's dense (no sparsity) tensor-core rate for bf16, and its fp32 rate
 * without tensor cores for the fp32 checking mode. Other GPUs: pass
 * --peak-tflops. On the CPU no default (MFU only with --peak-tflops). */
#define LMC_H100_SXM_BF16_DENSE_TFLOPS 989.0
#define LMC_H100_SXM_FP32_TFLOPS 67.0

static void usage(void) {
    fprintf(stderr,
            "usage: lmc train --data DATA -o OUT (-m HF_DIR | --arch llama|gpt2|qwen3 [sizes] | --model-config F.json\n"
            "                 | --resume CKPT|latest) [options]\n"
            "  resume:    latest = the newest complete checkpoint in OUT; batch, seq, accum, seed,\n"
            "             schedule and optimizer settings come from the checkpoint unless given\n"
            "  sizes:     --layers N --hidden N --heads N --kv-heads N --intermediate N --max-pos N\n"
            "             --vocab N (default: the data's) --tie --rope-theta X\n"
            "  batch:     --batch B --seq T --accum N --steps N (total) [--stop-at N]\n"
            "  optimizer: --lr X --min-lr X --warmup N --schedule cosine|linear|wsd|constant\n"
            "             --wd X --beta1 X --beta2 X --eps X --decay-all --clip X (0: off)\n"
            "             --optim adamw|adamw8bit|muon|galore|apollo|apollo-mini (default adamw; give it\n"
            "             before its settings: --muon-lr X --muon-momentum X --muon-weight-decay X\n"
            "             --muon-ns-steps N --muon-nesterov 0|1 --muon-scale shape|moonlight --muon-ns-dtype auto|bf16|f32\n"
            "             --muon-ns-gram 0|1 (CPU fp32: rectangular matrices in Gram space, default 1)\n"
            "             --galore-rank N --galore-update-gap N --galore-scale X --galore-refresh auto|exact|subspace\n"
            "             --apollo-rank N --apollo-update-gap N --apollo-scale X --apollo-scale-type channel|tensor\n"
            "             --apollo-seed N --adamw8bit-block N --adamw8bit-embed-8bit 0|1); Muon/GaLore/APOLLO\n"
            "             take the 2-D hidden matrices, AdamW (--lr ...) the embeddings, head, norms and biases\n"
            "  other:     --recompute --eval-every N --eval-batches N --save-every N --seed N\n"
            "             --keep-last N (after each checkpoint: only the N newest OUT/step_* folders, and\n"
            "             their ZeRO shards, are kept, and the folder resumed from; 0: all, the default)\n"
            "             --keep-best (with --eval-every: OUT/best holds the checkpoint of the lowest validation\n"
            "             loss so far, rewritten when it improves; this run's evaluations only)\n"
            "             --patience N (with --eval-every: early stop after N evaluations without a lower\n"
            "             validation loss; 0: off, the default)\n"
            "             --metrics FILE (default OUT/metrics.jsonl) --tokenizer DIR --init-std X\n"
            "             --peak-tflops X (for MFU; default on cuda: H100 SXM peak) --threads N\n"
            "  distill:   --distill-from TEACHER_DIR (knowledge distillation: a model of the same vocabulary\n"
            "             runs a forward on each micro-batch; loss (1-A) CE + A T^2 KL(teacher/T || student/T))\n"
            "             --distill-alpha A (default 1: pure KL) --distill-temp T (default 1); one process\n"
            "  experts:   --router-aux-coef X (mixture of experts: the load-balancing loss x X in the loss,\n"
            "             as output_router_logits with router_aux_loss_coef X; 0: off; default: config.json)\n"
            "  parallel:  mpirun -np N lmc train ... [--zero 0|1|2|3] (or torchrun-style RANK/WORLD_SIZE/\n"
            "             MASTER_ADDR/MASTER_PORT): global batch N x B x accum; CPU, or --device cuda\n"
            "             over NCCL (one GPU per rank, LOCAL_RANK; AdamW); --optim kinds with --zero 0\n"
            "             --bucket-mb X: ZeRO units of consecutive layers holding >= X MiB (default 0: a layer)\n"
            "             --tp T: tensor parallel over T ranks (N/T data-parallel groups of T; any --optim,\n"
            "             float32, the Llama family); checkpoints are consolidated one-process folders;\n"
            "             --tp-vocab: the embedding and head split by vocabulary rows too; --zero 1: AdamW's\n"
            "             moments of each TP shard split over its data-parallel group; --sp: sequence\n"
            "             parallelism (norms and residual stream split by tokens over the TP group)\n"
            "             --cp C: context parallel (ring attention; each rank a zigzag slice of every\n"
            "             sequence; N/C data-parallel groups of C; any optimizer)\n"
            "             --pp P: pipeline parallel (P stages, 1F1B over the --accum micro-batches; N/P\n"
            "             data-parallel groups of P; AdamW; each stage holds only its layers' weights,\n"
            "             gradients and moments); --pp-chunks V: interleaved 1F1B, V chunks of layers per\n"
            "             stage (--accum a multiple of P); --pp-layers a,b,...: each chunk's layers in model\n"
            "             order (P x V counts; default: balanced by parameters); --tp T with --cp C or --pp P:\n"
            "             TP groups of T consecutive ranks, the rings / stages across them, DP over the rest;\n"
            "             --pp P --cp C: rings of C consecutive ranks, stages across them, DP over the rest\n"
            "             --ep N: expert parallel on N ranks (mixture of experts: each rank holds 1/N of every\n"
            "             layer's experts, tokens exchanged by all-to-all; data parallel over the rest; AdamW,\n"
            "             CPU); checkpoints are consolidated one-process folders\n"
            "  device:    --device cpu|cuda (default cpu; cuda is new) --dtype fp32|bf16 (cuda: default\n"
            "             bf16 mixed precision with fp32 master weights; cpu: fp32 only)\n");
}

/* Sizes from a JSON file: the fields of the flags, or an HF config. */
static int read_model_json(const char *path, struct lmc_config *c) {
    lmc_err err = {0};
    char *text = NULL;
    size_t len = 0;
    if (lmc_file_read(path, 1 << 20, &text, &len, &err)) return cli_fail("train", &err);
    lmc_status s = lmc_config_parse(c, text, len, path, &err);
    free(text);
    if (s) return cli_fail("train", &err);
    return 0;
}

static bool is_tty(void) { return isatty(2); }

/* This process's peak resident set (VmHWM) in MiB; 0 where /proc does not tell. */
static double peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kib = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return (double)kib / 1024.0;
}

static const char *ck_name(char *buf, size_t cap, const char *out, int64_t step) {
    snprintf(buf, cap, "%s/step_%06lld", out, (long long)step);
    return buf;
}

int cmd_train(int argc, char **argv) {
    /* launched as one of several ranks (mpirun, torchrun/Slurm variables):
     * data-parallel training through src/dist (lmc_trainer_dist_init) */
    struct lmc_dist_env denv;
    lmc_err derr = {0};
    if (lmc_dist_env_parse(&denv, NULL, NULL, &derr)) {
        fprintf(stderr, "lmc train: %s\n", derr.msg);
        return 2;
    }
    int64_t zero = -1, tp = 1, cp = 1, pp = 1, ep = 1, pp_chunks = 1;
    struct cli_common cc = {0};
    const char *data = NULL, *out = NULL, *arch = NULL, *model_json = NULL, *resume = NULL;
    const char *pp_layers = NULL; /* --pp-layers a,b,...: the P x V chunks' layers (dist/pp_split.h) */
    const char *metrics = NULL, *tok_dir = NULL;
    const char *distill_from = NULL; /* --distill-from TEACHER_DIR (model/distill.h) */
    double distill_alpha = 1, distill_temp = 1;
    bool distill_flags = false;
    int64_t layers = 4, hidden = 128, heads = 4, kv_heads = 0, inter = 0, max_pos = 1024, vocab = 0;
    int64_t B = 8, T = 128, accum = 1, steps = 100, stop_at = 0, warmup = 0, eval_every = 0;
    int64_t eval_batches = 8, save_every = 0, seed = 1234, keep_last = 0, patience = 0;
    bool keep_best = false; /* --keep-best: OUT/best, the lowest validation loss's checkpoint */
    double lr = 3e-4, min_lr = -1, wd = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
    double rope_theta = 10000, init_std = 0.02, peak_tflops = 0, aux_coef = -1, bucket_mb = 0;
    bool tie = false, decay_all = false, recompute = false, tp_vocab = false, seq_par = false;
    enum lmc_sched_kind sched = LMC_SCHED_COSINE;
    unsigned given = 0; /* the settings given as flags, which a resumed run keeps */
    struct lmc_optim_cfg ocfg; /* --optim and its settings (lmc_optim_parse_arg) */
    lmc_optim_cfg_default(&ocfg, LMC_OPTIM_ADAMW);
    bool optim_flags = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = cli_common_arg(&cc, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        bool used = false;
        int j = i;
        lmc_err oerr = {0};
        if (lmc_optim_parse_arg(&ocfg, argc, argv, &j, &used, &oerr)) {
            fprintf(stderr, "lmc train: %s\n", oerr.msg);
            return 2;
        }
        if (used) {
            if (!strcmp(a, "--optim")) given |= LMC_TOPT_OPTIM;
            else optim_flags = true;
            i = j - 1;
            continue;
        }
        given |= lmc_train_opt_bit(a);
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--tie")) { tie = true; continue; }
        if (!strcmp(a, "--decay-all")) { decay_all = true; continue; }
        if (!strcmp(a, "--recompute")) { recompute = true; continue; }
        if (!strcmp(a, "--keep-best")) { keep_best = true; continue; }
        if (!strcmp(a, "--tp-vocab")) { tp_vocab = true; continue; }
        if (!strcmp(a, "--sp")) { seq_par = true; continue; }
        if (!v) {
            fprintf(stderr, "lmc train: unknown option %s (or missing value)\n", a);
            return 2;
        }
        i++;
        bool ok = true;
        struct { const char *name; int64_t *p; int64_t lo, hi; } ints[] = {
            {"--layers", &layers, 1, 1024}, {"--hidden", &hidden, 1, 1 << 16},
            {"--heads", &heads, 1, 1024}, {"--kv-heads", &kv_heads, 1, 1024},
            {"--intermediate", &inter, 1, 1 << 20}, {"--max-pos", &max_pos, 1, 1 << 24},
            {"--vocab", &vocab, 1, (int64_t)1 << 31}, {"--batch", &B, 1, 1 << 20},
            {"--seq", &T, 1, 1 << 20}, {"--accum", &accum, 1, 1 << 20},
            {"--steps", &steps, 1, (int64_t)1 << 40}, {"--stop-at", &stop_at, 1, (int64_t)1 << 40},
            {"--warmup", &warmup, 0, (int64_t)1 << 40}, {"--eval-every", &eval_every, 0, (int64_t)1 << 40},
            {"--eval-batches", &eval_batches, 0, 1 << 20}, {"--save-every", &save_every, 0, (int64_t)1 << 40},
            {"--keep-last", &keep_last, 0, (int64_t)1 << 40}, {"--patience", &patience, 0, (int64_t)1 << 40},
            {"--seed", &seed, 0, INT64_MAX}, {"--zero", &zero, 0, 3}, {"--tp", &tp, 1, 64},
            {"--cp", &cp, 1, 64}, {"--pp", &pp, 1, 64}, {"--ep", &ep, 1, 1024}, {"--pp-chunks", &pp_chunks, 1, 64},
        };
        struct { const char *name; double *p; double lo, hi; } dbls[] = {
            {"--lr", &lr, 0, 10}, {"--min-lr", &min_lr, 0, 10}, {"--wd", &wd, 0, 10},
            {"--beta1", &beta1, 0, 1}, {"--beta2", &beta2, 0, 1}, {"--eps", &eps, 0, 1},
            {"--clip", &clip, 0, 1e9}, {"--rope-theta", &rope_theta, 1, 1e12},
            {"--init-std", &init_std, 0, 10}, {"--peak-tflops", &peak_tflops, 0, 1e9},
            {"--router-aux-coef", &aux_coef, 0, 1e6}, {"--bucket-mb", &bucket_mb, 0, 1 << 20},
            {"--distill-alpha", &distill_alpha, 0, 1}, {"--distill-temp", &distill_temp, 1e-3, 1e3},
        };
        bool found = false;
        for (size_t k = 0; !found && k < sizeof ints / sizeof *ints; k++)
            if (!strcmp(a, ints[k].name)) {
                found = true;
                ok = cli_parse_i64(v, ints[k].lo, ints[k].hi, ints[k].p);
            }
        for (size_t k = 0; !found && k < sizeof dbls / sizeof *dbls; k++)
            if (!strcmp(a, dbls[k].name)) {
                found = true;
                ok = cli_parse_f64(v, dbls[k].lo, dbls[k].hi, dbls[k].p);
            }
        if (!found) {
            found = true;
            if (!strcmp(a, "--data")) data = v;
            else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--arch")) arch = v;
            else if (!strcmp(a, "--model-config")) model_json = v;
            else if (!strcmp(a, "--resume")) resume = v;
            else if (!strcmp(a, "--pp-layers")) pp_layers = v;
            else if (!strcmp(a, "--metrics")) metrics = v;
            else if (!strcmp(a, "--tokenizer")) tok_dir = v;
            else if (!strcmp(a, "--distill-from")) distill_from = v;
            else if (!strcmp(a, "--schedule")) ok = lmc_schedule_kind_parse(v, &sched);
            else found = false;
        }
        if (!found) {
            fprintf(stderr, "lmc train: unknown option %s\n", a);
            return 2;
        }
        if (!strcmp(a, "--distill-alpha") || !strcmp(a, "--distill-temp")) distill_flags = true;
        if (!ok) {
            fprintf(stderr, "lmc train: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    int n_src = !!cc.model_dir + !!arch + !!model_json + !!resume;
    if (!data || !out || n_src != 1) {
        usage();
        fprintf(stderr, "lmc train: needs --data, -o and exactly one of -m, --arch, --model-config, --resume\n");
        return 2;
    }
    lmc_err err = {0};
    /* the communicator: several ranks, or --zero given on one */
    struct lmc_comm comm;
    int mpn;
    const char *mpflag;
    if (cli_mp_pick("train", tp, cp, pp, zero, &mpn, &mpflag)) return 2;
    if (ep > 1 && (mpn > 1 || zero > 0)) {
        fprintf(stderr, "lmc train: --ep runs alone with --zero 0 so far (not with --tp, --cp, --pp or --zero %lld)\n",
                (long long)(zero > 0 ? zero : 0));
        return 2;
    }
    bool dist = denv.world > 1 || zero >= 0 || mpn > 1 || ep > 1;
    if ((keep_best || patience > 0) && (eval_every <= 0 || dist)) {
        fprintf(stderr, "lmc train: --keep-best and --patience need --eval-every N (N >= 1) and run in one process "
                        "so far (not with ranks, --zero, --tp, --cp, --pp or --ep)\n");
        return 2;
    }
    if (pp_chunks > 1 && (pp < 2 || tp > 1)) {
        fprintf(stderr, "lmc train: --pp-chunks V interleaves the stages of --pp P (P >= 2; not with --tp)\n");
        return 2;
    }
    if (pp_layers && pp < 2) {
        fprintf(stderr, "lmc train: --pp-layers gives the layers of each --pp stage (give --pp P, P >= 2)\n");
        return 2;
    }
    if (seq_par && (tp < 2 || cp > 1 || pp > 1 || ep > 1 || zero > 1)) {
        fprintf(stderr, "lmc train: --sp (sequence parallelism) splits the tokens over the --tp ranks: give --tp N "
                "(N >= 2), without --cp, --pp, --ep, --zero 2-3\n");
        return 2;
    }
    if (tp_vocab && tp < 2) {
        fprintf(stderr, "lmc train: --tp-vocab splits the vocabulary over the --tp ranks (give --tp N, N >= 2)\n");
        return 2;
    }
    if (distill_flags && !distill_from) {
        fprintf(stderr, "lmc train: --distill-alpha and --distill-temp go with --distill-from TEACHER_DIR\n");
        return 2;
    }
    if (distill_from && (denv.world > 1 || zero >= 0 || mpn > 1 || ep > 1)) {
        fprintf(stderr, "lmc train: --distill-from runs in one process so far (not with ranks, --zero, --tp, --cp, "
                        "--pp or --ep)\n");
        return 2;
    }
    bool caps[CLI_CAP_N] = {[CLI_CAP_EP] = ep > 1, [CLI_CAP_SP] = seq_par, [CLI_CAP_TP] = tp > 1,
                            [CLI_CAP_CP] = cp > 1, [CLI_CAP_PP] = pp > 1};
    if (cli_caps_check("train", cc.device, caps, NULL)) return 2;
    if (dist) {
        if (zero < 0) zero = 0;
        if (!cc.threads) cc.threads = lmc_dist_cpu_threads(&denv, (int)sysconf(_SC_NPROCESSORS_ONLN));
        if (lmc_dist_init(&comm, LMC_DIST_HOST, &err)) return cli_fail("train", &err);
    }
    /* --tp T: groups of T consecutive ranks, the data-parallel groups across them */
    struct lmc_comm tpc, dpc, cpc, ddc; /* cpc: the CP or PP groups under --tp; ddc: PP's data-parallel groups */
    bool have_tpc = false, have_dpc = false, have_cpc = false, have_ddc = false;
    if (mpn > 1 && cli_mp_groups_flag(&comm, mpn, mpflag, &tpc, &have_tpc, &dpc, &have_dpc, "train")) {
        comm.free(&comm);
        return 2;
    }
    struct lmc_comm *tp_comm = have_tpc ? &tpc : &comm, *dp_comm = have_dpc ? &dpc : NULL;
    struct lmc_tmodel full;
    struct lmc_trainer_tp *tps = NULL;
    struct lmc_trainer_ep *ep_state = NULL; /* --ep: the expert group until the trainer takes it */
    bool have_full = false;
    int64_t model_numel = 0; /* the whole model's parameters (--tp: more than this rank's shard) */
    bool root = !dist || comm.rank == 0;
    struct lmc_token_data train = {0}, val = {0};
    if (lmc_token_data_open(&train, data, "train", &err)) return cli_fail("train", &err);
    bool have_val = lmc_token_data_open(&val, data, "val", &err) == LMC_OK;
    /* from here on every exit goes through `done`, which releases what was made */
    int rc = 0;
    bool have_tm = false, have_be = false, have_tr = false, bf16 = false;
    bool have_teacher = false, have_dst = false; /* --distill-from */
    /* data parallel: the model is built without its arenas and each rank's
     * zero module fills only its shard from this source (lmc_tmodel_src) */
    bool lazy = dist && mpn < 2, have_src = false; /* not under --tp/--cp/--pp; --ep: its shard from the source */
    struct lmc_tmodel_src src;
    /* data parallel on GPUs: an nccl communicator over the host one (which it keeps and frees) */
    struct lmc_comm ncomm, *dcomm = &comm;
    bool have_nccl = false;
    FILE *mf = NULL;
    struct lmc_tmodel tm;
    struct lmc_backend be;
    struct lmc_trainer tr;
    struct lmc_model teacher; /* --distill-from */
    struct lmc_distill dst;
    /* the backend first: the model is built in its memory */
    if ((rc = cli_train_backend(&be, &cc, "train", &bf16))) goto done;
    have_be = true;
    if (dist && mpn < 2 && !be.host_memory && comm.world > 1) {
        if (lmc_comm_nccl_init(&ncomm, &comm, comm.local_rank, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_nccl = true;
        dcomm = &ncomm;
    }
    if (ep > 1 && comm.world != ep) {
        fprintf(stderr, "lmc train: --ep %lld needs %lld ranks (torchrun/Slurm variables or mpirun); this run has %d\n",
                (long long)ep, (long long)ep, comm.world);
        rc = 2;
        goto done;
    }
    /* OUT made, temporaries of interrupted saves removed; --resume latest resolved */
    char resume_dir[4096];
    if ((root && lmc_ckpt_out_prepare(out, NULL, &err)) || (dist && comm.barrier(&comm, &err)) ||
        (resume && lmc_ckpt_resolve(out, resume, resume_dir, sizeof resume_dir, &err))) {
        rc = cli_fail("train", &err);
        goto done;
    }
    if (resume) resume = resume_dir;
    /* the model */
    const char *src_dir = resume ? resume : cc.model_dir;
    char meta_tok[4096] = "";
    if (!tok_dir && !src_dir) { /* the tokenizer prepare-data used (DATA/meta.json) */
        char mp[4096], *text = NULL;
        lmc_err e2 = {0};
        if (lmc_path_join(mp, sizeof mp, data, "meta.json") && !lmc_file_read(mp, 1 << 20, &text, NULL, &e2)) {
            cJSON *mj = cJSON_Parse(text);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(mj, "tokenizer");
            if (cJSON_IsString(t)) snprintf(meta_tok, sizeof meta_tok, "%s", t->valuestring);
            cJSON_Delete(mj);
            free(text);
        }
    }
    if (!tok_dir) tok_dir = src_dir ? src_dir : meta_tok[0] ? meta_tok : NULL;
    /* --pp without --tp: each stage builds only its part of the model (trainer_pp.h) */
    bool pp_parts = pp > 1 && tp == 1;
    if (pp_parts && src_dir) {
        struct lmc_config c;
        if (lmc_config_load(&c, src_dir, &err) ||
            lmc_trainer_pp_build(&tm, &c, &be, src_dir, 0, 0, (int)pp, (int)pp_chunks, (int)((comm.rank / cp) % pp),
                                 pp_layers, &model_numel, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_tm = true;
    } else if (src_dir) {
        if (lazy ? lmc_tmodel_load_layout(&tm, src_dir, &be, &err) : lmc_tmodel_load(&tm, src_dir, &be, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_tm = true;
        if (lazy && lmc_tmodel_src_dir(&src, &tm, src_dir, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_src = lazy;
    } else {
        struct lmc_config c;
        memset(&c, 0, sizeof c);
        if (model_json) {
            if (read_model_json(model_json, &c)) {
                rc = 1;
                goto done;
            }
        } else {
            struct lmc_model_shape sh = {.vocab = vocab ? vocab : (int64_t)train.vocab_size,
                                         .hidden = hidden, .layers = layers, .heads = heads,
                                         .kv_heads = kv_heads, .intermediate = inter,
                                         .max_pos = max_pos, .tie = tie, .rope_theta = rope_theta};
            if (lmc_config_build(&c, arch, &sh, &err)) { /* bad --arch / sizes: a usage error */
                fprintf(stderr, "lmc train: %s\n", err.msg);
                rc = 2;
                goto done;
            }
            if (train.eos_id != LMC_SHARD_NO_EOS) {
                c.eos_token_ids[0] = train.eos_id;
                c.n_eos = 1;
            }
        }
        if (pp_parts) {
            if (lmc_trainer_pp_build(&tm, &c, &be, NULL, (uint64_t)seed, init_std, (int)pp, (int)pp_chunks,
                                     (int)((comm.rank / cp) % pp), pp_layers, &model_numel, &err)) {
                rc = cli_fail("train", &err);
                goto done;
            }
        } else if (lazy ? lmc_tmodel_init_layout(&tm, &c, &be, &err) : lmc_tmodel_init(&tm, &c, &be, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_tm = true;
        if (!pp_parts && (lazy ? lmc_tmodel_src_random(&src, &tm, (uint64_t)seed, init_std, &err)
                               : lmc_tmodel_init_random(&tm, (uint64_t)seed, init_std, &err))) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_src = lazy;
    }
    have_tm = true;
    if (tp > 1) { /* this rank's shard; the full model kept until a resume has cut its moments */
        full = tm;
        have_full = true;
        model_numel = full.numel;
        have_tm = false;
        if (lmc_trainer_tp_shard(&tm, &tps, &full, tp_comm, tp_vocab, &be, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_tm = true;
    }
    if (ep > 1) { /* this rank's experts from the source; the full layout kept until a resume has cut its moments */
        full = tm;
        have_full = true;
        model_numel = full.numel;
        have_tm = false;
        src.tm = &full; /* the source reads the full table where it now is */
        lmc_status es = lmc_trainer_ep_shard(&tm, &ep_state, &full, &src, &comm, &be, &err);
        lmc_tmodel_src_free(&src);
        have_src = false;
        if (es) {
            rc = cli_fail("train", &err);
            goto done;
        }
        have_tm = true;
    }
    if (aux_coef >= 0) { /* the load-balancing loss, as config.json's output_router_logits / router_aux_loss_coef */
        if (tm.cfg.num_experts <= 0) {
            fprintf(stderr, "lmc train: --router-aux-coef needs a mixture-of-experts model (%s has no experts)\n",
                    tm.cfg.model_type);
            rc = 2;
            goto done;
        }
        tm.cfg.output_router_logits = aux_coef > 0;
        tm.cfg.router_aux_loss_coef = aux_coef;
    }
    struct lmc_train_opts o = {.B = B, .T = T, .accum = accum, .clip = clip, .recompute = recompute,
                               .seed = (uint64_t)seed, .eval_batches = eval_batches};
    lmc_adamw_cfg_default(&o.adamw);
    o.adamw.lr = lr;
    o.adamw.beta1 = beta1;
    o.adamw.beta2 = beta2;
    o.adamw.eps = eps;
    o.adamw.weight_decay = wd;
    o.decay = decay_all ? LMC_DECAY_ALL : LMC_DECAY_DEFAULT;
    o.sched = (struct lmc_schedule){sched, lr, min_lr >= 0 ? min_lr : lr / 10, warmup, steps, 0};
    o.optim = ocfg;
    if (resume && lmc_ckpt_read_opts(resume, given, &o, &err)) { /* settings not given: the checkpoint's */
        rc = cli_fail("train", &err);
        goto done;
    }
    if (resume && !(given & LMC_TOPT_OPTIM) && optim_flags) {
        /* the checkpoint's optimizer, with the settings given as flags on top */
        for (int i = 1; i < argc; i++) {
            bool used = false;
            int j = i;
            if (lmc_optim_parse_arg(&o.optim, argc, argv, &j, &used, &err) == LMC_OK && used) i = j - 1;
        }
    }
    if (lmc_optim_cfg_check(&o.optim, &err)) {
        fprintf(stderr, "lmc train: %s\n", err.msg);
        rc = 2;
        goto done;
    }
    steps = o.sched.total;
    /* data parallel AdamW: the zero module holds the moments (tensor parallel: the trainer, per slice) */
    o.zero_moments = dist && mpn < 2 && ep < 2 && o.optim.kind == LMC_OPTIM_ADAMW;
    o.init_src = have_src ? &src : NULL;
    o.bucket_bytes = (int64_t)(bucket_mb * 1048576.0);
    o.no_acts = pp_parts; /* the stage makes arenas for its own layers */
    have_tm = false; /* the trainer takes the model, and frees it even on failure */
    if (lmc_trainer_init(&tr, &tm, &be, &train, have_val ? &val : NULL, &o, &err)) {
        rc = cli_fail("train", &err);
        goto done;
    }
    have_tr = true;
    if (dist) {
        char desc[1024];
        snprintf(desc, sizeof desc, "model %s %lld params, batch %lld x %lld x %lld accum, %lld steps, lr %.17g, "
                 "seed %lld, zero %lld, tp %lld%s%s, ep %lld, pp chunks %lld, optim %s, data %.300s, resume %.300s", tr.tm.cfg.model_type,
                 (long long)(model_numel ? model_numel : tr.tm.numel), (long long)o.B, (long long)o.T, (long long)o.accum,
                 (long long)steps, o.adamw.lr, (long long)o.seed, (long long)zero, (long long)tp, tp_vocab ? " vocab" : "", seq_par ? " sp" : "", (long long)ep, (long long)pp_chunks,
                 lmc_optim_kind_name(o.optim.kind), data, resume ? resume : "-");
        struct lmc_trainer_tp *t = tps;
        tps = NULL; /* the trainer's from here on */
        if (t) t->zero = zero == 1; /* ZeRO-1 over the data-parallel groups (2-3: the zero module, below) */
        struct lmc_trainer_ep *e = ep_state;
        ep_state = NULL; /* the trainer's from here on */
        if (e ? lmc_trainer_ep_attach(&tr, e, desc, &err)
              : t ? lmc_trainer_tp_attach(&tr, t, dp_comm, desc, &err)
              : cp > 1 && pp > 1 ? lmc_trainer_pp_attach_cp(&tr, &comm, tp_comm, (int)pp, (int)pp_chunks, pp_layers, desc, &err)
              : cp > 1 ? lmc_trainer_cp_attach(&tr, &comm, tp_comm, desc, &err)
              : pp > 1 ? lmc_trainer_pp_attach_v(&tr, tp_comm, dp_comm, (int)pp_chunks, pp_layers, desc, &err)
              : ((have_nccl && lmc_dist_check_same(&comm, "training configuration", desc, &err)) ||
                 lmc_trainer_dist_init(&tr, dcomm, (int)zero, desc, &err))) {
            rc = cli_fail("train", &err);
            goto done;
        }
        if (tp > 1 && (rc = cli_mp_attach_zero(&tr, dp_comm, (int)zero, desc, "train")))
            goto done;
        if (tp > 1 && cp > 1 && pp > 1 &&
            (rc = cli_mp_attach_ppcp(&tr, dp_comm, (int)pp, (int)cp, pp_layers, &cpc, &have_cpc, desc, "train")))
            goto done;
        if (tp > 1 && cp > 1 && pp < 2 && (rc = cli_mp_attach_cp(&tr, dp_comm, (int)cp, &cpc, &have_cpc, desc, "train")))
            goto done;
        if (tp > 1 && pp > 1 && cp < 2 &&
            (rc = cli_mp_attach_pp(&tr, dp_comm, (int)pp, pp_layers, &cpc, &have_cpc, &ddc, &have_ddc, desc, "train")))
            goto done;
        if (seq_par && lmc_trainer_tp_attach_sp(&tr, &err)) {
            rc = cli_fail("train", &err);
            goto done;
        }
    }
    if (have_src) { /* the parameters are filled in */
        lmc_tmodel_src_free(&src);
        have_src = false;
    }
    if (resume && (tr.ep   ? lmc_trainer_ep_load_state(&tr, &full, resume, &err)
                   : tr.tp ? lmc_trainer_tp_load_state(&tr, &full, resume, &err)
                           : lmc_ckpt_load_state(&tr, resume, &err))) {
        rc = cli_fail("train", &err);
        goto done;
    }
    if (have_full) {
        lmc_tmodel_free(&full);
        have_full = false;
    }
    if (distill_from) { /* the teacher, on the student's backend */
        struct lmc_model_opts mo = {.be = &be};
        if (lmc_model_load(&teacher, distill_from, &mo, &err)) {
            fprintf(stderr, "lmc train: --distill-from %s: %s\n", distill_from, err.msg);
            rc = 1;
            goto done;
        }
        have_teacher = true;
        if (lmc_distill_init(&dst, &teacher, &tr.tm.cfg, &be, tr.o.B, tr.o.T, (float)distill_alpha,
                             (float)distill_temp, &err)) {
            fprintf(stderr, "lmc train: --distill-from %s: %s\n", distill_from, err.msg);
            rc = err.status == LMC_ERR_ARG ? 2 : 1;
            goto done;
        }
        have_dst = true;
        tr.acts.distill = &dst;
        fprintf(stderr, "lmc train: distilling from %s (%s, %lld layers): loss (1 - A) CE + A T^2 KL with A = %g, T = %g; "
                        "teacher chunks of %lld tokens\n", distill_from, teacher.cfg.model_type,
                (long long)teacher.cfg.num_layers, distill_alpha, distill_temp, (long long)dst.chunk);
    }
    if (tr.zero) lmc_zero_mark_setup(tr.zero); /* training's peak RSS apart from set-up's */
    char mpath[4096];
    if (!metrics) {
        lmc_path_join(mpath, sizeof mpath, out, "metrics.jsonl");
        metrics = mpath;
    }
    if (root) mf = fopen(metrics, resume ? "a" : "w");
    if (root && !mf) {
        fprintf(stderr, "lmc train: cannot open %s: %s\n", metrics, strerror(errno));
        rc = 1;
        goto done;
    }
    bool gpu = !strcmp(be.name, "cuda");
    /* from here on, logs on rank 0 only */
    if (root)
        fprintf(stderr, "lmc train: %s, %lld parameters, %lld layers, batch %lld x %lld x %lld accum, "
                        "%lld steps from %lld\n",
                tr.tm.cfg.model_type, (long long)(model_numel ? model_numel : tr.tm.numel), (long long)tr.tm.cfg.num_layers,
                (long long)o.B, (long long)o.T, (long long)o.accum, (long long)steps, (long long)tr.step);
    if (root && tr.tp)
        fprintf(stderr, "lmc train: tensor parallel %lld x data parallel %d (%d ranks), global batch %lld x %lld x "
                        "%lld accum; each rank holds %lld of the parameters and their AdamW moments%s, %d threads "
                        "per rank\n", (long long)tp, (dp_comm ? dp_comm->world : 1) / (int)(cp * pp), comm.world,
                (long long)(o.B * ((dp_comm ? dp_comm->world : 1) / (cp * pp))), (long long)o.T, (long long)o.accum,
                (long long)tr.tm.numel, tr.tp->zero && dp_comm ? " (ZeRO-1: the moments split over the data-parallel "
                "group)" : tr.zero ? (zero == 2 ? " (ZeRO-2: the moments and gradients split over the data-parallel "
                "group)" : " (ZeRO-3: the moments, gradients and parameters split over the data-parallel group)")
                : "", cc.threads);
    else if (root && (tr.cp || tr.pp))
        cli_mp_log("train", cp, pp, comm.world, o.B, o.T, o.accum);
    if (root && pp_parts)
        fprintf(stderr, "lmc train: pipeline stage 0 holds %lld of the %lld parameter floats (its layers' weights, "
                        "gradients and AdamW moments)\n", (long long)tr.tm.numel, (long long)model_numel);
    if (root && lmc_trainer_pp_bounds(&tr))
        cli_pp_print_split("train", tr.tp ? &tr.tp->full : &tr.tm.cfg, (int)pp, (int)pp_chunks,
                           lmc_trainer_pp_bounds(&tr), pp_layers);
    if (root && pp_chunks > 1)
        fprintf(stderr, "lmc train: interleaved 1F1B, %lld chunks per stage (%lld in all), bubble (P-1)/(M V + P-1) = "
                        "%.3f\n", (long long)pp_chunks, (long long)(pp * pp_chunks),
                (double)(pp - 1) / (double)(o.accum * pp_chunks + pp - 1));
    if (root && tr.ep)
        fprintf(stderr, "lmc train: expert parallel x data parallel over %d ranks, global batch %lld x %lld x %lld "
                        "accum; each rank holds %lld of the %lld experts per layer (an arena of %lld of the model's %lld "
                        "floats) and their AdamW moments, %d threads per rank\n", comm.world,
                (long long)(o.B * comm.world), (long long)o.T, (long long)o.accum,
                (long long)(tr.tm.cfg.num_experts / comm.world), (long long)tr.tm.cfg.num_experts,
                (long long)tr.tm.numel, (long long)model_numel, cc.threads);
    else if (root && tr.tp && (tr.cp || tr.pp)) cli_mp_log("train", cp, pp, comm.world / (int)tp, o.B, o.T, o.accum);
    else if (root && dist && !tr.cp && !tr.pp)
        fprintf(stderr, "lmc train: data parallel, %d ranks, ZeRO-%lld, global batch %lld x %lld x %lld accum "
                        "(%lld sequences), %d threads per rank\n", comm.world, (long long)zero,
                (long long)(o.B * comm.world), (long long)o.T, (long long)o.accum,
                (long long)(o.B * comm.world * o.accum), cc.threads);
    char odesc[1024];
    lmc_trainer_describe_optim(&tr, odesc, sizeof odesc);
    if (root)
        fprintf(stderr, "lmc train: %s%s\n", odesc,
                tr.zero && zero >= 1 ? (tr.have_opt ? " for rank 0's tensors (ZeRO-1: each rank steps and holds its own)"
                                                    : " in all; each rank holds its 1/N shard (ZeRO)") : "");
    if (root) cli_train_mem_report("train", &be, &tr, NULL, NULL, 0, NULL, 0, false); /* the memory account */
    bool peak_given = peak_tflops > 0;
    if (gpu && !peak_given)
        peak_tflops = bf16 ? LMC_H100_SXM_BF16_DENSE_TFLOPS : LMC_H100_SXM_FP32_TFLOPS;
    if (root) {
        fprintf(stderr, "lmc train: device %s, %s", be.name,
                bf16 ? "bf16 mixed precision (fp32 master weights, gradients and AdamW)" : "fp32");
        if (peak_tflops > 0)
            fprintf(stderr, ", MFU against %.0f TFLOP/s%s", peak_tflops,
                    peak_given ? "" : (bf16 ? " (H100 SXM bf16 dense peak)" : " (H100 SXM fp32 peak)"));
        fprintf(stderr, "\n");
    }
    double fpt = lmc_trainer_flops_per_token(&tr);
    int64_t end = stop_at > 0 && stop_at < steps ? stop_at : steps;
    char ck[4096];
    double train_rss = 0; /* the peak resident set before the first checkpoint */
    double best_vl = INFINITY; /* --keep-best, --patience: this run's lowest validation loss */
    int64_t best_step = 0, stale = 0; /* its step; evaluations since without a lower one */
    while (tr.step < end) {
        struct lmc_train_stats st;
        double t0 = lmc_time_now(), c0 = lmc_trainer_cpu_s();
        if (lmc_trainer_step(&tr, &st, &err)) {
            rc = cli_fail("train", &err);
            break;
        }
        double dt = lmc_time_now() - t0, dc = lmc_trainer_cpu_s() - c0, tps = (double)st.tokens / dt, tfl = tps * fpt / 1e12;
        double vl = NAN;
        bool last = tr.step == end;
        /* ZeRO: a collective over every rank; tensor parallel: the TP group of DP rank 0 evaluates together */
        bool evaluator = root || tr.zero || tr.cp || tr.pp || tr.ep || (tr.tp && (!dp_comm || dp_comm->rank == 0));
        if (evaluator && eval_every > 0 && (tr.step % eval_every == 0 || last) && lmc_trainer_eval(&tr, &vl, &err)) {
            rc = cli_fail("train", &err);
            break;
        }
        bool save = (save_every > 0 && tr.step % save_every == 0) || last;
        if (save && train_rss == 0) train_rss = peak_rss_mib(); /* before the first save (--ep: rank 0 gathers) */
        char zd[4096];
        snprintf(zd, sizeof zd, "%s/zero", out);
        if (last && (pp_parts || !dist) && getenv("LMC_PP_LOG_PEAK")) /* bench/bench_pp_mem.sh */
            lmc_trainer_pp_log_peak(&tr, "train", "over the steps");
        if (save && tr.pp && lmc_trainer_pp_sync(&tr, true, &err)) { /* pipeline: the stages' state to rank 0 */
            rc = cli_fail("train", &err);
            break;
        }
        if (!root) { /* the other ranks: their shards of the optimizer state */
            if (save && (tr.tp   ? lmc_trainer_tp_save(&tr, ck_name(ck, sizeof ck, out, tr.step), src_dir, tok_dir, &err)
                         : tr.ep ? lmc_trainer_ep_save(&tr, ck_name(ck, sizeof ck, out, tr.step), src_dir, tok_dir, &err)
                                 : lmc_trainer_dist_save(&tr, zd, &err))) {
                rc = cli_fail("train", &err);
                break;
            }
            continue;
        }
        fprintf(mf, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, "
                    "\"tokens_per_s\": %.1f, \"tflops\": %.4g",
                (long long)tr.step, st.loss, st.lr, st.grad_norm, tps, tfl);
        fprintf(mf, ", \"step_ms\": %.3f, \"optim_ms\": %.3f, \"step_cpu_ms\": %.3f, \"optim_cpu_ms\": %.3f", 1000 * dt,
                1000 * st.optim_s, 1000 * dc, 1000 * st.optim_cpu_s);
        if (peak_tflops > 0) fprintf(mf, ", \"mfu\": %.4g", tfl / peak_tflops);
        if (st.galore) /* projections refreshed this step: by the exact host path, by the subspace step */
            fprintf(mf, ", \"galore_exact_refreshes\": %lld, \"galore_subspace_refreshes\": %lld",
                    (long long)st.galore_exact, (long long)st.galore_subspace);
        bool best = !isnan(vl) && vl < best_vl;
        if (best) best_vl = vl, best_step = tr.step, stale = 0;
        else if (!isnan(vl)) stale++;
        if (!isnan(vl)) fprintf(mf, ", \"val_loss\": %.9g", vl);
        if (best && (keep_best || patience > 0)) fprintf(mf, ", \"val_best\": true");
        if (st.skipped) fprintf(mf, ", \"skipped\": true");
        if (st.distill)
            fprintf(mf, ", \"ce\": %.9g, \"distill_kl\": %.9g, \"distill_agree\": %.6g", st.distill_ce, st.distill_kl,
                    st.distill_agree);
        double emin = 0, emax = 0;
        if (st.n_experts > 0) { /* expert load: tokens routed to each expert (over the layers) */
            emin = emax = st.expert_tokens[0];
            fprintf(mf, ", \"moe_aux_loss\": %.9g, \"expert_tokens\": [", st.moe_aux);
            for (int64_t e = 0; e < st.n_experts; e++) {
                emin = fmin(emin, st.expert_tokens[e]);
                emax = fmax(emax, st.expert_tokens[e]);
                fprintf(mf, "%s%.0f", e ? ", " : "", st.expert_tokens[e]);
            }
            fprintf(mf, "], \"expert_tokens_min\": %.0f, \"expert_tokens_max\": %.0f", emin, emax);
        }
        fprintf(mf, "}\n");
        fflush(mf);
        char line[256];
        int n = snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.3e | grad %.3f | %.0f tok/s",
                         (long long)tr.step, (long long)steps, st.loss, st.lr, st.grad_norm, tps);
        if (peak_tflops > 0) n += snprintf(line + n, sizeof line - (size_t)n, " | mfu %.1f%%", 100 * tfl / peak_tflops);
        if (st.n_experts > 0)
            n += snprintf(line + n, sizeof line - (size_t)n, " | aux %.4f | experts %.0f-%.0f", st.moe_aux, emin, emax);
        if (st.distill)
            n += snprintf(line + n, sizeof line - (size_t)n, " | ce %.4f | kl %.4f | agree %.1f%%", st.distill_ce,
                          st.distill_kl, 100 * st.distill_agree);
        if (!isnan(vl)) snprintf(line + n, sizeof line - (size_t)n, " | val %.4f", vl);
        if (is_tty() && isnan(vl) && !last) fprintf(stderr, "\r%s\033[K", line);
        else fprintf(stderr, "%s%s\n", is_tty() ? "\r" : "", line);
        if (save) {
            ck_name(ck, sizeof ck, out, tr.step);
            if (tr.tp   ? lmc_trainer_tp_save(&tr, ck, src_dir, tok_dir, &err)
                : tr.ep ? lmc_trainer_ep_save(&tr, ck, src_dir, tok_dir, &err)
                        : (dist && lmc_trainer_dist_save(&tr, zd, &err)) || lmc_ckpt_save(&tr, ck, src_dir, tok_dir, &err)) {
                rc = cli_fail("train", &err);
                break;
            }
            fprintf(stderr, "%scheckpoint %s\n", is_tty() ? "\r\033[K" : "", ck);
            /* --keep-last: the new folder is in place and every rank's ZeRO shards of its step are written */
            if (keep_last > 0 && lmc_ckpt_keep_last(out, keep_last, resume, zd, NULL, &err)) {
                rc = cli_fail("train", &err);
                break;
            }
        }
        if (best && keep_best) { /* OUT/best: written aside, then swapped into place (lmc_ckpt_save) */
            snprintf(ck, sizeof ck, "%s/best", out);
            if (lmc_ckpt_save(&tr, ck, src_dir, tok_dir, &err)) {
                rc = cli_fail("train", &err);
                break;
            }
            fprintf(stderr, "%sbest checkpoint %s (step %lld, val %.4f)\n", is_tty() ? "\r\033[K" : "", ck,
                    (long long)tr.step, vl);
        }
        if (patience > 0 && stale >= patience && !last) {
            fprintf(stderr, "lmc train: early stop at step %lld: no lower validation loss in %lld evaluations "
                            "(best %.4f at step %lld)\n", (long long)tr.step, (long long)stale, best_vl,
                    (long long)best_step);
            break;
        }
    }
    if (!rc && have_tr && tr.zero) lmc_zero_log_memory(tr.zero); /* rank 0: state now/peak vs the formula, VmHWM */
    if (train_rss == 0) train_rss = peak_rss_mib(); /* no checkpoint written */
    if (!rc && have_tr && tr.ep) /* every rank: its resident memory (rank 0 holds the whole model while saving) */
        fprintf(stderr, "lmc train: rank %d of %d (expert parallel): peak resident %.0f MiB training, %.0f MiB with "
                        "the checkpoints\n", comm.rank, comm.world, train_rss, peak_rss_mib());
    else if (!rc && have_tr && !dist)
        fprintf(stderr, "lmc train: peak resident %.0f MiB training, %.0f MiB with the checkpoints\n", train_rss,
                peak_rss_mib());
    if (!rc && have_tr && (pp_parts || !dist) && getenv("LMC_PP_LOG_PEAK"))
        lmc_trainer_pp_log_peak(&tr, "train", "with the checkpoint");
done:
    if (mf) fclose(mf);
    if (have_tr) lmc_trainer_free(&tr);
    if (have_dst) lmc_distill_free(&dst);
    if (have_teacher) lmc_model_free(&teacher);
    if (have_tm) lmc_tmodel_free(&tm);
    if (have_src) lmc_tmodel_src_free(&src);
    if (have_full) lmc_tmodel_free(&full);
    lmc_trainer_tp_free_state(tps);
    lmc_trainer_ep_free_state(ep_state);
    if (have_be) cli_train_backend_free(&be);
    if (have_ddc) ddc.free(&ddc);
    if (have_cpc) cpc.free(&cpc);
    if (have_dpc) dpc.free(&dpc);
    if (have_tpc) tpc.free(&tpc);
    if (have_nccl) ncomm.free(&ncomm); /* and the host communicator under it */
    else if (dist) comm.free(&comm);
    lmc_token_data_close(&train);
    if (have_val) lmc_token_data_close(&val);
    return rc;
}
