/* cmd_finetune.c — `lmc finetune -m BASE --data FILE.jsonl -o OUT`:
 * supervised fine-tuning on JSONL (messages / prompt+completion / text,
 * train/sft_data.h) with LoRA over a frozen base (default; OUT is a PEFT
 * adapter folder) or all weights (--full; OUT is a Hugging Face folder),
 * through the trainer (batch, accumulation, schedule, clipping, AdamW,
 * recomputation), a validation loss (--val-data), a JSONL metrics file and
 * a progress line. The output is written to a temporary folder renamed at
 * the end. Launched as several ranks (mpirun, torchrun/Slurm variables) it
 * trains data-parallel, replicated: each rank takes its batches of every
 * global micro-step, gradients are all-reduced in a fixed order, and rank 0
 * alone writes metrics, checkpoints and the output; with --tp the ranks of
 * each group hold shards and rank 0 writes the consolidated checkpoint and
 * model. --full checkpoints resume on any of these layouts. With --device
 * cuda the ranks (one GPU each, LOCAL_RANK) train data parallel over an
 * nccl communicator bootstrapped through the host one, --zero 0-3 through
 * the zero module, AdamW; --tp/--cp/--pp/--ep and the other optimizers are
 * refused there before any rank joins. */
#include "cli.h"
#include "cli_pp.h"
#include "core/core.h"
#include "ops/backend_cuda.h"
#include "train/lora_train.h"
#include "train/qlora.h"
#include "train/sft_data.h"
#include "train/trainer.h"
#include "train/checkpoint.h"
#include "train/trainer_tp.h"
#include "train/lora_tp.h"
#include "train/qlora_tp.h"
#include "train/trainer_cp.h"
#include "train/trainer_pp.h"
#include "train/trainer_ep.h"
#include "dist/comm.h"
#include "dist/zero.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(void) {
    fprintf(stderr,
            "usage: lmc finetune -m BASE --data FILE.jsonl -o OUT [options]\n"
            "  LoRA:      --lora-r N (16) --lora-alpha X (32) --lora-targets LIST|all-linear (all-linear)\n"
            "             --rslora --lora-dropout P (0; training only)   | --full (all weights)\n"
            "  QLoRA:     --qlora nf4|int4 (the base's linears kept 4-bit; or BASE already quantized)\n"
            "  data:      --seq T (2048) --truncate yes|no (longer examples cut, counted; or refused) --pack\n"
            "             --loss-on assistant|all --skip-bad-lines\n"
            "             --val-data FILE.jsonl | --val-fraction X (validation loss every --eval-every and at the end)\n"
            "  length:    --epochs E (1) | --steps N\n"
            "  batch:     --batch B (4) --accum N (1)\n"
            "  optimizer: --lr X (2e-4 LoRA, 2e-5 full) --min-lr X --warmup N --schedule cosine|linear|wsd|constant\n"
            "             --wd X (0) --beta1 X --beta2 X --eps X --clip X (1)\n"
            "             --optim adamw|adamw8bit|muon|galore|apollo|apollo-mini (adamw) and its settings\n"
            "             after it, as in lmc train (--muon-lr X, --galore-rank N, ...; lmc train -h lists them)\n"
            "  other:     --recompute [full|selective|attn] --acts-dtype f32|bf16 (with full --recompute: bf16\n"
            "             checkpoints of the residual stream; attn: keep the MLP's GEMM outputs, recompute the\n"
            "             norms and attention) --offload-checkpoints (with full or attn --recompute: the layer inputs\n"
            "             in pinned host memory, copied while other layers run; a bf16 base's token embedding\n"
            "             there too when the head is untied) --eval-every N --seed N --metrics FILE --threads N --device cpu|cuda\n"
            "             --save-every N (OUT.ckpt/step_N: the adapter, or with --full the model, plus the\n"
            "             optimizer state and data position) --resume OUT.ckpt/step_N|latest (same --optim)\n"
            "             --keep-last N (after each checkpoint: only the N newest OUT.ckpt/step_N folders, and\n"
            "             their ZeRO shards, are kept, and the folder resumed from; 0: all, the default)\n"
            "             --stop-at N (stop after step N without writing OUT, as if killed; the schedule\n"
            "             still spans --steps)\n"
            "  ranks:     under mpirun or torchrun/Slurm variables: data parallel, replicated (--zero 0), or\n"
            "             --zero 1|2|3: AdamW's moments, + gradients, + parameters sharded (the adapters', or with\n"
            "             --full the model's; checkpoints: each rank's shard in OUT.ckpt/zero); --device cuda:\n"
            "             one GPU per rank (LOCAL_RANK) over NCCL, --zero 0-3 with AdamW (the rest: CPU)\n"
            "             --tp T: tensor parallel over groups of T ranks (the Llama family); --full: any --optim,\n"
            "             float32, OUT the consolidated model; --tp-vocab: the embedding and head split by\n"
            "             vocabulary rows too; --sp (--full): sequence parallelism, norms and residual stream\n"
            "             split by tokens over the TP group; LoRA/QLoRA: AdamW, the adapters split with the base, OUT the\n"
            "             one-process adapter\n"
            "             --cp C: context parallel (ring attention over groups of C ranks; no --pack)\n"
            "             --pp P (with --full): pipeline parallel, P stages, 1F1B over the --accum\n"
            "             micro-batches (AdamW, no --pack; each stage holds only its layers); --pp-chunks V:\n"
            "             interleaved 1F1B, V chunks per stage; --pp-layers a,b,...: each chunk's layers in\n"
            "             model order (default: balanced by parameters); --tp combines with --cp or --pp, --pp\n"
            "             with --cp (rings of C consecutive ranks, the stages across them)\n"
            "             --ep N: expert parallel on N ranks (mixture of experts: each rank holds 1/N of every\n"
            "             layer's experts and their adapters, data parallel over the rest; AdamW, CPU)\n");
}

/* --resume latest: the newest OUT.ckpt/step_N holding trainer_state.json
 * (written last in an adapter checkpoint; --full folders land whole) into
 * buf; false when there is none. */
static bool latest_ckpt(const char *out, char *buf, size_t cap) {
    char dir[4200], path[4600];
    snprintf(dir, sizeof dir, "%s.ckpt", out);
    DIR *d = opendir(dir);
    struct dirent *e;
    int64_t best = -1, st;
    while (d && (e = readdir(d))) {
        if (!lmc_ckpt_parse_name(e->d_name, &st) || st <= best) continue;
        snprintf(path, sizeof path, "%s/%s/trainer_state.json", dir, e->d_name);
        if (access(path, F_OK)) continue;
        best = st;
        if (snprintf(buf, cap, "%s/%s", dir, e->d_name) >= (int)cap) best = -1; /* too long: none */
    }
    if (d) closedir(d);
    return best >= 0;
}

struct src {
    struct lmc_sft_batcher b;
    struct lmc_lora_train *lt; /* LoRA dropout: fresh masks per micro-batch (NULL: none) */
    uint64_t seed, n_drawn;
};

static lmc_status next_batch(void *user, int32_t *in, int32_t *tg, const int64_t **segs, int64_t *n_segs,
                             lmc_err *err) {
    (void)err;
    struct src *s = user;
    lmc_sft_batch(&s->b, in, tg, segs, n_segs);
    if (s->lt) lmc_lora_train_dropout(s->lt, true, s->seed ^ (s->n_drawn * 0x2545f4914f6cdd1dull));
    s->n_drawn++;
    return LMC_OK;
}

/* Mean loss over every validation example once (padded rows), LoRA
 * dropout off (evaluation, as PEFT's model.eval()). */
static lmc_status val_loss(struct lmc_trainer *tr, struct lmc_lora_train *lt, const struct lmc_sft_data *vd,
                           double *out, lmc_err *err) {
    if (lt) lmc_lora_train_dropout(lt, false, 0);
    struct lmc_sft_batcher vb;
    lmc_status s = lmc_sft_batcher_init(&vb, vd, tr->o.B, tr->o.T, false, 0, 0, err);
    if (s) return s;
    for (int64_t i = 0; i < vd->n_ex; i++) vb.order[i] = i;
    double sum = 0;
    int64_t count = 0;
    if (tr->pp) s = lmc_trainer_pp_sync(tr, false, err); /* pipeline: every stage the whole model */
    for (int64_t k = 0; k < (vd->n_ex + tr->o.B - 1) / tr->o.B && !s; k++) {
        const int64_t *sg;
        int64_t ns, n;
        double ls;
        lmc_sft_batch(&vb, tr->in, tr->tg, &sg, &ns);
        if (k == (vd->n_ex - 1) / tr->o.B) /* the last batch's wrapped rows are not counted */
            for (int64_t r = vd->n_ex - k * tr->o.B; r < tr->o.B; r++)
                for (int64_t t = 0; t < tr->o.T; t++) tr->tg[r * tr->o.T + t] = -1;
        if (!(s = lmc_trainer_loss(tr, tr->in, tr->tg, &ls, &n, err))) {
            sum += ls;
            count += n;
        }
    }
    lmc_sft_batcher_free(&vb);
    *out = sum / (double)(count ? count : 1);
    return s;
}

int cmd_finetune(int argc, char **argv) {
    struct lmc_dist_env denv;
    lmc_err derr = {0};
    if (lmc_dist_env_parse(&denv, NULL, NULL, &derr)) {
        fprintf(stderr, "lmc finetune: %s\n", derr.msg);
        return 2;
    }
    struct cli_common cc = {0};
    const char *data = NULL, *out = NULL, *targets = "all-linear", *metrics = NULL, *val_data = NULL;
    const char *loss_on = "assistant", *resume = NULL;
    const char *pp_layers = NULL; /* --pp-layers a,b,...: the P x V chunks' layers (dist/pp_split.h) */
    int64_t r = 16, B = 4, T = 2048, accum = 1, steps = 0, warmup = 0, eval_every = 0, seed = 1234;
    int64_t save_every = 0, keep_last = 0, zero = 0, tp = 1, cp = 1, pp = 1, ep = 1, pp_chunks = 1, stop_at = 0;
    double alpha = 32, dropout = 0, epochs = 0, lr = -1, min_lr = -1, wd = 0, beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8, clip = 1.0, val_fraction = 0;
    enum lmc_qlora_kind qkind = LMC_QLORA_NF4;
    bool qlora = false;
    bool tp_vocab = false, seq_par = false;
    bool rslora = false, full = false, pack = false, skip_bad = false, recompute = false, refuse_long = false;
    bool recompute_sel = false, recompute_att = false, offload = false;
    const char *acts_dtype = NULL; /* --acts-dtype f32|bf16 (default: bf16 on a GPU in bf16) */
    enum lmc_sched_kind sched = LMC_SCHED_LINEAR;
    struct lmc_optim_cfg ocfg; /* --optim and its settings (lmc_optim_parse_arg) */
    lmc_optim_cfg_default(&ocfg, LMC_OPTIM_ADAMW);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rr = cli_common_arg(&cc, argc, argv, &i);
        if (rr < 0) return 2;
        if (rr > 0) continue;
        bool oused = false;
        int oj = i;
        lmc_err oerr = {0};
        if (lmc_optim_parse_arg(&ocfg, argc, argv, &oj, &oused, &oerr)) {
            fprintf(stderr, "lmc finetune: %s\n", oerr.msg);
            return 2;
        }
        if (oused) {
            i = oj - 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--rslora")) { rslora = true; continue; }
        if (!strcmp(a, "--full")) { full = true; continue; }
        if (!strcmp(a, "--pack")) { pack = true; continue; }
        if (!strcmp(a, "--skip-bad-lines")) { skip_bad = true; continue; }
        if (!strcmp(a, "--recompute")) { /* full (the default), selective or attn */
            bool sel = v && !strcmp(v, "selective"), att = v && !strcmp(v, "attn");
            if (sel || att || (v && !strcmp(v, "full"))) i++;
            recompute = !sel && !att;
            recompute_sel = sel;
            recompute_att = att;
            continue;
        }
        if (!strcmp(a, "--offload-checkpoints")) { offload = true; continue; }
        if (!strcmp(a, "--tp-vocab")) { tp_vocab = true; continue; }
        if (!strcmp(a, "--sp")) { seq_par = true; continue; }
        if (!v) {
            fprintf(stderr, "lmc finetune: unknown option %s (or missing value)\n", a);
            return 2;
        }
        i++;
        bool ok = true, found = true;
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--lora-targets")) targets = v;
        else if (!strcmp(a, "--acts-dtype")) {
            ok = !strcmp(v, "f32") || !strcmp(v, "bf16");
            acts_dtype = v;
        }
        else if (!strcmp(a, "--metrics")) metrics = v;
        else if (!strcmp(a, "--val-data")) val_data = v;
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--pp-layers")) pp_layers = v;
        else if (!strcmp(a, "--qlora")) {
            ok = lmc_qlora_kind_parse(v, &qkind);
            qlora = true;
        }
        else if (!strcmp(a, "--truncate")) {
            ok = !strcmp(v, "yes") || !strcmp(v, "no");
            refuse_long = !strcmp(v, "no");
        }
        else if (!strcmp(a, "--save-every")) ok = cli_parse_i64(v, 1, (int64_t)1 << 40, &save_every);
        else if (!strcmp(a, "--keep-last")) ok = cli_parse_i64(v, 0, (int64_t)1 << 40, &keep_last);
        else if (!strcmp(a, "--stop-at")) ok = cli_parse_i64(v, 1, (int64_t)1 << 40, &stop_at);
        else if (!strcmp(a, "--loss-on")) {
            loss_on = v;
            ok = !strcmp(v, "assistant") || !strcmp(v, "completion") || !strcmp(v, "all");
        } else if (!strcmp(a, "--schedule")) ok = lmc_schedule_kind_parse(v, &sched);
        else if (!strcmp(a, "--lora-r")) ok = cli_parse_i64(v, 1, 4096, &r);
        else if (!strcmp(a, "--batch")) ok = cli_parse_i64(v, 1, 1 << 16, &B);
        else if (!strcmp(a, "--seq")) ok = cli_parse_i64(v, 2, 1 << 20, &T);
        else if (!strcmp(a, "--accum")) ok = cli_parse_i64(v, 1, 1 << 20, &accum);
        else if (!strcmp(a, "--steps")) ok = cli_parse_i64(v, 1, (int64_t)1 << 40, &steps);
        else if (!strcmp(a, "--warmup")) ok = cli_parse_i64(v, 0, (int64_t)1 << 40, &warmup);
        else if (!strcmp(a, "--eval-every")) ok = cli_parse_i64(v, 0, (int64_t)1 << 40, &eval_every);
        else if (!strcmp(a, "--seed")) ok = cli_parse_i64(v, 0, INT64_MAX, &seed);
        else if (!strcmp(a, "--zero")) ok = cli_parse_i64(v, 0, 3, &zero);
        else if (!strcmp(a, "--tp")) ok = cli_parse_i64(v, 1, 64, &tp);
        else if (!strcmp(a, "--cp")) ok = cli_parse_i64(v, 1, 64, &cp);
        else if (!strcmp(a, "--pp")) ok = cli_parse_i64(v, 1, 64, &pp);
        else if (!strcmp(a, "--ep")) ok = cli_parse_i64(v, 1, 1024, &ep);
        else if (!strcmp(a, "--pp-chunks")) ok = cli_parse_i64(v, 1, 64, &pp_chunks);
        else if (!strcmp(a, "--lora-alpha")) ok = cli_parse_f64(v, 1e-6, 1e6, &alpha);
        else if (!strcmp(a, "--lora-dropout")) ok = cli_parse_f64(v, 0, 1, &dropout);
        else if (!strcmp(a, "--val-fraction")) ok = cli_parse_f64(v, 1e-9, 0.999999, &val_fraction);
        else if (!strcmp(a, "--epochs")) ok = cli_parse_f64(v, 1e-6, 1e6, &epochs);
        else if (!strcmp(a, "--lr")) ok = cli_parse_f64(v, 0, 10, &lr);
        else if (!strcmp(a, "--min-lr")) ok = cli_parse_f64(v, 0, 10, &min_lr);
        else if (!strcmp(a, "--wd")) ok = cli_parse_f64(v, 0, 10, &wd);
        else if (!strcmp(a, "--beta1")) ok = cli_parse_f64(v, 0, 1, &beta1);
        else if (!strcmp(a, "--beta2")) ok = cli_parse_f64(v, 0, 1, &beta2);
        else if (!strcmp(a, "--eps")) ok = cli_parse_f64(v, 0, 1, &eps);
        else if (!strcmp(a, "--clip")) ok = cli_parse_f64(v, 0, 1e9, &clip);
        else found = false;
        if (!found) {
            fprintf(stderr, "lmc finetune: unknown option %s\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "lmc finetune: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!cc.model_dir || !data || !out) {
        usage();
        return 2;
    }
    char latest[4300];
    if (resume && !strcmp(resume, "latest")) {
        if (!latest_ckpt(out, latest, sizeof latest)) {
            fprintf(stderr, "lmc finetune: --resume latest: no checkpoint in %s.ckpt (a step_N folder with "
                            "trainer_state.json)\n", out);
            return 2;
        }
        resume = latest;
    }
    if (steps && epochs) {
        fprintf(stderr, "lmc finetune: give --epochs or --steps, not both\n");
        return 2;
    }
    if (dropout >= 1) {
        fprintf(stderr, "lmc finetune: --lora-dropout must be below 1\n");
        return 2;
    }
    if (qlora && full) {
        fprintf(stderr, "lmc finetune: --qlora trains adapters over a frozen 4-bit base (not with --full)\n");
        return 2;
    }
    lmc_err oerr = {0};
    if (lmc_optim_cfg_check(&ocfg, &oerr)) {
        fprintf(stderr, "lmc finetune: %s\n", oerr.msg);
        return 2;
    }
    if (seq_par && (tp < 2 || cp > 1 || pp > 1 || ep > 1 || zero > 1 || !full)) {
        fprintf(stderr, "lmc finetune: --sp (sequence parallelism) splits the tokens over the --tp ranks: give --tp N "
                "(N >= 2), without --cp, --pp, --ep, --zero 2-3 (and with --full)\n");
        return 2;
    }
    if (tp_vocab && tp < 2) {
        fprintf(stderr, "lmc finetune: --tp-vocab splits the vocabulary over the --tp ranks (give --tp N, N >= 2)\n");
        return 2;
    }
    if (ep > 1 && (qlora || tp > 1 || cp > 1 || pp > 1 || zero > 0)) {
        fprintf(stderr, "lmc finetune: --ep runs alone with --zero 0 so far (not with --qlora, --tp, --cp, --pp or "
                        "--zero 1-3)\n");
        return 2;
    }
    if (tp > 1 && !full && (dropout > 0 || tp_vocab || zero > 0 || cp > 1 || pp > 1 ||
                            ocfg.kind != LMC_OPTIM_ADAMW)) {
        /* dropout: the masks are drawn over the whole input of each linear */
        fprintf(stderr, "lmc finetune: LoRA with --tp runs AdamW over a float32 base with the vocabulary replicated, "
                        "--zero 0, no --cp/--pp so far (refused: %s)\n",
                dropout > 0 ? "--lora-dropout: the masks are drawn over a linear's "
                        "whole input" : tp_vocab ? "--tp-vocab" : zero > 0 ? "--zero" : cp > 1 ? "--cp" : pp > 1 ? "--pp"
                        : "another --optim");
        return 2;
    }
    if (cc.n_lora) {
        fprintf(stderr, "lmc finetune: --lora applies adapters at inference; merge first (lmc merge)\n");
        return 2;
    }
    if (lr < 0) lr = full ? 2e-5 : 2e-4;
    lmc_err err = {0};
    int rc = 1;
    struct lmc_tokenizer *tok = NULL;
    struct lmc_sft_data d = {0}, vd = {0};
    struct lmc_backend be;
    struct lmc_tmodel tm;
    struct lmc_lora lo = {0}, lo_local = {0}; /* --ep: lo_local holds the modules this rank adapts */
    struct lmc_lora lo_tp = {0};              /* --tp: this rank's slices of lo (lora_tp.h) */
    struct lmc_lora_train lt = {0};
    struct lmc_qlora ql = {0};
    struct lmc_qlora_tp qtp = {0}; /* --qlora --tp: this rank's cuts of the quantized base */
    struct lmc_trainer tr;
    struct src src;
    memset(&src, 0, sizeof src);
    bool have_be = false, have_tm = false, have_tr = false, have_lt = false, have_comm = false, have_nccl = false;
    int mpn;
    const char *mpflag;
    if (cli_mp_pick("finetune", tp, cp, pp, zero, &mpn, &mpflag)) return 2;
    if (pp_chunks > 1 && (pp < 2 || tp > 1)) {
        fprintf(stderr, "lmc finetune: --pp-chunks V interleaves the stages of --pp P (P >= 2; not with --tp)\n");
        return 2;
    }
    if (pp_layers && pp < 2) {
        fprintf(stderr, "lmc finetune: --pp-layers gives the layers of each --pp stage (give --pp P, P >= 2)\n");
        return 2;
    }
    if (pack && (cp > 1 || pp > 1)) {
        fprintf(stderr, "lmc finetune: --pack does not combine with %s yet (packed sequences' attention stays within "
                        "each; give whole rows)\n", cp > 1 ? "--cp" : "--pp");
        return 2;
    }
    if ((recompute_sel || recompute_att) && (mpn > 1 || ep > 1)) {
        fprintf(stderr, "lmc finetune: --recompute %s runs on one process or data parallel (not with %s yet)\n",
                recompute_sel ? "selective" : "attn", ep > 1 ? "--ep" : mpflag);
        return 2;
    }
    bool dist = denv.world > 1 || mpn > 1 || ep > 1 || (zero > 0 && mpn < 2), root = true;
    bool caps[CLI_CAP_N] = {[CLI_CAP_EP] = ep > 1, [CLI_CAP_SP] = seq_par, [CLI_CAP_TP] = tp > 1,
                            [CLI_CAP_CP] = cp > 1, [CLI_CAP_PP] = pp > 1,
                            [CLI_CAP_DP_OPTIM] = dist && ocfg.kind != LMC_OPTIM_ADAMW};
    if (cli_caps_check("finetune", cc.device, caps, lmc_optim_kind_name(ocfg.kind))) return 2;
    struct lmc_comm comm, tpc, dpc, cpc, ddc; /* cpc: the CP or PP groups under --tp; ddc: PP's DP groups */
    struct lmc_comm ncomm, *dcomm = &comm;    /* --device cuda, several ranks: an nccl one over comm */
    bool have_tpc = false, have_dpc = false, have_full = false, have_cpc = false, have_ddc = false;
    struct lmc_tmodel full_tm;
    struct lmc_trainer_tp *tps = NULL;
    struct lmc_trainer_ep *eps_state = NULL; /* --ep: the expert group until the trainer takes it */
    FILE *mf = NULL;
    char tmp[4200];
    tmp[0] = 0;
    if (lmc_tokenizer_load(&tok, cc.model_dir, &err)) return cli_fail("finetune", &err);
    struct lmc_sft_opts so = {.seq = T, .loss_all = !strcmp(loss_on, "all"), .skip_bad_lines = skip_bad,
                              .refuse_long = refuse_long};
    if (lmc_sft_load(&d, data, tok, &so, &err)) {
        cli_fail("finetune", &err);
        goto done;
    }
    if (val_data && val_fraction > 0) {
        fprintf(stderr, "lmc finetune: give --val-data or --val-fraction, not both\n");
        rc = 2;
        goto done;
    }
    if ((val_data && lmc_sft_load(&vd, val_data, tok, &so, &err)) ||
        (val_fraction > 0 && lmc_sft_split(&d, val_fraction, (uint64_t)seed, &vd, &err))) {
        cli_fail("finetune", &err);
        goto done;
    }
    fprintf(stderr, "lmc finetune: %lld examples (%lld for validation), %lld target tokens, %lld truncated to "
                    "%lld, %lld bad lines skipped\n", (long long)d.n_ex, (long long)vd.n_ex, (long long)d.n_targets,
            (long long)d.n_truncated, (long long)T, (long long)d.n_skipped);
    if (dist) {
        if (!cc.threads) cc.threads = lmc_dist_cpu_threads(&denv, (int)sysconf(_SC_NPROCESSORS_ONLN));
        if (lmc_dist_init(&comm, LMC_DIST_HOST, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        have_comm = true;
        root = comm.rank == 0;
        if (ep > 1 && comm.world != ep) {
            fprintf(stderr, "lmc finetune: --ep %lld needs %lld ranks (torchrun/Slurm variables or mpirun); this run "
                            "has %d\n", (long long)ep, (long long)ep, comm.world);
            rc = 2;
            goto done;
        }
        if (mpn > 1 && (rc = cli_mp_groups_flag(&comm, mpn, mpflag, &tpc, &have_tpc, &dpc, &have_dpc, "finetune")))
            goto done;
        rc = 1;
    }
    bool bf16;
    if ((rc = cli_train_backend(&be, &cc, "finetune", &bf16))) goto done;
    rc = 1;
    have_be = true;
    size_t mem0 = be.host_memory ? 0 : lmc_backend_cuda_mem_used(&be); /* the memory account's start */
    /* data parallel on GPUs: an nccl communicator over the host one (which it then keeps and frees), as lmc
     * train (the combinations it cannot run were refused above, before any rank joined) */
    if (dist && !be.host_memory) {
        if (comm.world > 1) {
            if (lmc_comm_nccl_init(&ncomm, &comm, comm.local_rank, &err)) {
                cli_fail("finetune", &err);
                goto done;
            }
            have_nccl = true;
            have_comm = false; /* ncomm frees it */
            dcomm = &ncomm;
        }
    }
    if (dropout > 0 && !full && !be.dropout) {
        fprintf(stderr, "lmc finetune: --lora-dropout: backend %s has no dropout op\n", be.name);
        goto done;
    }
    const char *wdir = full && resume ? resume : cc.model_dir; /* --full --resume: the checkpoint's weights */
    /* --ep: the layout only; each rank reads its part of the folder (lmc_trainer_ep_shard);
     * --full --pp without --tp: each stage builds only its part of the model (trainer_pp.h) */
    bool pp_parts = pp > 1 && tp == 1 && full && !qlora;
    /* LoRA on one GPU in bf16: the frozen linears kept as bf16 only (train/qlora.h LMC_QLORA_BF16) */
    bool bf16_base = !full && !qlora && !be.host_memory && bf16 && !dist && tp == 1 && cp == 1 && pp == 1;
    /* and (LoRA or QLoRA) the token embedding and untied head kept bf16 there too */
    bool bf16_ends = !full && !be.host_memory && bf16 && !dist && tp == 1 && cp == 1 && pp == 1;
    /* with --offload-checkpoints: that embedding (an untied head's) in pinned host memory, gathered in place */
    bool host_emb = bf16_ends && offload;
    int64_t whole_numel = 0;
    struct lmc_config pcfg;
    if (ep > 1 ? lmc_tmodel_load_layout(&tm, wdir, &be, &err)
        : pp_parts ? lmc_config_load(&pcfg, wdir, &err) ||
                         lmc_trainer_pp_build(&tm, &pcfg, &be, wdir, 0, 0, (int)pp, (int)pp_chunks,
                                              (int)((comm.rank / cp) % pp), pp_layers, &whole_numel, &err)
        : qlora || bf16_base ? lmc_qlora_load_opts(&tm, &ql, cc.model_dir, qlora ? qkind : LMC_QLORA_BF16, bf16_ends,
                                                   host_emb, &be, &err)
                             : lmc_tmodel_load(&tm, wdir, &be, &err)) {
        cli_fail("finetune", &err);
        goto done;
    }
    have_tm = true;
    if (tp > 1) { /* this rank's shard; with --resume the full model is kept until its moments are cut */
        full_tm = tm;
        have_full = true;
        have_tm = false;
        lmc_status ts = qlora ? lmc_qlora_tp_shard(&tm, &tps, &qtp, &full_tm, have_tpc ? &tpc : &comm, &be, &err)
                              : lmc_trainer_tp_shard(&tm, &tps, &full_tm, have_tpc ? &tpc : &comm, tp_vocab, &be, &err);
        if (!resume || ts) {
            lmc_tmodel_free(&full_tm);
            have_full = false;
        }
        if (ts) {
            cli_fail("finetune", &err);
            goto done;
        }
        have_tm = true;
    }
    if (ep > 1) { /* this rank's experts; with --resume the full layout is kept until its moments are cut */
        full_tm = tm;
        have_full = true;
        have_tm = false;
        struct lmc_tmodel_src esrc;
        lmc_status es = lmc_tmodel_src_dir(&esrc, &full_tm, wdir, &err);
        if (!es) {
            es = lmc_trainer_ep_shard(&tm, &eps_state, &full_tm, &esrc, &comm, &be, &err);
            lmc_tmodel_src_free(&esrc);
        }
        if (!resume || es) {
            lmc_tmodel_free(&full_tm);
            have_full = false;
        }
        if (es) {
            cli_fail("finetune", &err);
            goto done;
        }
        have_tm = true;
    }
    char host_line[96] = "";
    if (ql.host_bytes)
        snprintf(host_line, sizeof host_line, "; the token embedding in host memory (%.1f MiB)",
                 (double)ql.host_bytes / 1048576.0);
    if (bf16_base)
        fprintf(stderr, "lmc finetune: LoRA base: %lld linears (%lld weights) and %lld embedding/head tensors (%lld) "
                        "kept bf16 on %s in %.1f MiB (no f32 copy)%s\n", (long long)ql.n_quant,
                (long long)ql.quant_params, (long long)ql.n_ends, (long long)ql.ends_params, be.name,
                (double)ql.dev_bytes / 1048576.0, host_line);
    if (qlora) {
        char on_dev[192] = "";
        if (ql.n_dev)
            snprintf(on_dev, sizeof on_dev, "; on %s: %.1f MiB (%.2f bits/weight)", be.name,
                     (double)(ql.dev_bytes - ql.ends_bytes) / 1048576.0,
                     ql.quant_params ? 8.0 * (double)(ql.dev_bytes - ql.ends_bytes) / (double)ql.quant_params : 0.0);
        if (ql.n_ends)
            snprintf(on_dev + strlen(on_dev), sizeof on_dev - strlen(on_dev), " + %lld embedding/head tensors bf16 "
                     "(%.1f MiB)", (long long)ql.n_ends, (double)ql.ends_bytes / 1048576.0);
        fprintf(stderr, "lmc finetune: QLoRA base: %lld linears (%lld weights) kept %s in %.1f MiB%s%s%s\n",
                (long long)ql.n_quant, (long long)ql.quant_params,
                ql.prequantized ? "as quantized in the folder" : (qkind == LMC_QLORA_NF4 ? "NF4" : "int4 (groups of 64)"),
                (double)(ql.quant_bytes - ql.ends_bytes) / 1048576.0, ql.prequantized ? "" : " (quantized at load)", on_dev,
                host_line);
    }
    if (!full) {
        struct lmc_lora_config lc = {.r = r, .alpha = alpha, .rslora = rslora, .dropout = dropout};
        snprintf(lc.base_model, sizeof lc.base_model, "%s", cc.model_dir);
        const struct lmc_config *fcfg = tps ? &tps->full : &tm.cfg; /* --tp: the adapter of the whole model */
        lmc_status ls = resume ? lmc_lora_load(&lo, resume, fcfg, &err)
                               : lmc_lora_parse_targets(&lc, targets, &err) ||
                                         lmc_lora_create(&lo, &lc, fcfg, (uint64_t)seed, &err);
        if (!ls && tps && lo.cfg.dropout > 0)
            ls = lmc_err_set(&err, LMC_ERR_UNSUPPORTED, "%s: LoRA dropout with --tp (the masks are drawn over a "
                             "linear's whole input)", resume ? resume : "the adapter");
        if (!ls && tps) ls = lmc_lora_tp_cut(&lo_tp, &lo, fcfg, tps->c->world, tps->c->rank, &err);
        if (resume) { /* the checkpoint's adapter settings hold */
            r = lo.cfg.r;
            rslora = lo.cfg.rslora;
            snprintf(lo.cfg.base_model, sizeof lo.cfg.base_model, "%s", cc.model_dir);
        }
        if (ls || (ep > 1 ? lmc_trainer_ep_lora_attach(eps_state, &lt, &tm, &lo, &lo_local, &err)
                          : lmc_lora_train_attach(&lt, &tm, tps ? &lo_tp : &lo, &err))) {
            cli_fail("finetune", &err);
            goto done;
        }
        have_lt = true;
        if (tps) lmc_tp_tmodel_mark(&tm, &tps->g); /* the attach rebound the views: the splits again */
        /* a GPU: each adapter product over the whole micro-batch (up to 4096 rows), not 256-row blocks */
        if (!be.host_memory && lmc_lora_train_set_scratch_rows(&lt, LMC_MIN(B * T, (int64_t)4096), &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        if (lo.cfg.dropout > 0) {
            src.lt = &lt;
            src.seed = (uint64_t)seed;
        }
    }
    int32_t pad = lmc_tokenizer_eos(tok);
    if (lmc_sft_batcher_init(&src.b, &d, B, T, pack, (uint64_t)seed, pad, &err)) {
        cli_fail("finetune", &err);
        goto done;
    }
    if (!steps) {
        int64_t per = lmc_sft_batches_per_epoch(&src.b);
        steps = (int64_t)ceil((epochs > 0 ? epochs : 1.0) * (double)per / (double)accum);
        if (steps < 1) steps = 1;
    }
    /* activations the backward reads as operands in bf16: by default on a GPU in bf16 (one process or data parallel) */
    bool save_bf16 = acts_dtype ? !strcmp(acts_dtype, "bf16") : !be.host_memory && bf16 && mpn < 2 && ep < 2 && !recompute;
    if (offload && (!(recompute || recompute_att) || mpn > 1 || ep > 1 || (save_bf16 && recompute))) {
        fprintf(stderr, "lmc finetune: --offload-checkpoints goes with full or attn --recompute on one process or data "
                        "parallel (not with full --recompute --acts-dtype bf16)\n");
        rc = 2;
        goto done;
    }
    /* with full --recompute (asked for, not the default): the residual stream's checkpoints in bf16 */
    if (save_bf16 && (mpn > 1 || ep > 1)) {
        fprintf(stderr, "lmc finetune: --acts-dtype bf16 runs on one process or data parallel\n");
        rc = 2;
        goto done;
    }
    struct lmc_train_opts o = {.B = B, .T = T, .accum = accum, .clip = clip, .recompute = recompute,
                               .recompute_selective = recompute_sel, .recompute_mixer = recompute_att, .save_bf16 = save_bf16, .offload = offload, .seed = (uint64_t)seed, .next_batch = next_batch, .batch_user = &src};
    o.adamw = (struct lmc_adamw_cfg){lr, beta1, beta2, eps, wd};
    o.decay = LMC_DECAY_DEFAULT;
    o.sched = (struct lmc_schedule){sched, lr, min_lr >= 0 ? min_lr : 0, warmup, steps, 0};
    o.optim = ocfg;
    o.no_acts = pp_parts; /* the stage makes arenas for its own layers */
    if (!full) { /* ZeRO over the frozen base: the adapters' views follow the zero module's buffers */
        o.bind_part = lmc_lora_train_bind_part;
        o.bind_user = &lt;
    }
    /* ZeRO with AdamW (data parallel only): the zero module holds the moments (a device backend: --zero 0 too) */
    o.zero_moments = dist && (zero > 0 || !be.host_memory) && mpn < 2 && ocfg.kind == LMC_OPTIM_ADAMW;
    have_tm = false;
    if (lmc_trainer_init(&tr, &tm, &be, NULL, NULL, &o, &err)) {
        cli_fail("finetune", &err);
        goto done;
    }
    have_tr = true;
    if (dist) {
        char desc[1024];
        snprintf(desc, sizeof desc, "finetune %s %lld params, %s, batch %lld x %lld x %lld accum, %lld steps, lr %.17g, "
                 "seed %lld, ep %lld, zero %lld, data %.300s (%lld examples), resume %.300s, pp chunks %lld", tr.tm.cfg.model_type,
                 (long long)(whole_numel ? whole_numel : tr.tm.numel),
                 tp > 1 ? (!full ? "lora tp" : tp_vocab ? (seq_par ? "full tp vocab sp" : "full tp vocab") : seq_par ? "full tp sp" : "full tp") : full ? "full" : "lora", (long long)B, (long long)T, (long long)accum, (long long)steps, lr,
                 (long long)seed, (long long)ep, (long long)zero, data, (long long)d.n_ex, resume ? resume : "-", (long long)pp_chunks);
        struct lmc_trainer_tp *t = tps;
        tps = NULL; /* the trainer's from here on */
        if (t) t->zero = zero == 1; /* ZeRO-1 over the data-parallel groups (2-3: the zero module, below) */
        struct lmc_comm *grp = have_tpc ? &tpc : &comm;
        struct lmc_trainer_ep *e = eps_state;
        eps_state = NULL;
        if (e ? lmc_trainer_ep_attach(&tr, e, desc, &err)
              : t ? lmc_trainer_tp_attach(&tr, t, have_dpc ? &dpc : NULL, desc, &err)
              : cp > 1 && pp > 1 ? lmc_trainer_pp_attach_cp(&tr, &comm, grp, (int)pp, (int)pp_chunks, pp_layers, desc, &err)
              : cp > 1 ? lmc_trainer_cp_attach(&tr, &comm, grp, desc, &err)
              : pp > 1 ? lmc_trainer_pp_attach_v(&tr, grp, have_dpc ? &dpc : NULL, (int)pp_chunks, pp_layers, desc, &err)
              : ((have_nccl && lmc_dist_check_same(&comm, "training configuration", desc, &err)) ||
                 lmc_trainer_dist_init(&tr, dcomm, (int)zero, desc, &err))) {
            cli_fail("finetune", &err);
            goto done;
        }
        if (tp > 1 && (cli_mp_attach_zero(&tr, have_dpc ? &dpc : NULL, (int)zero, desc, "finetune")))
            goto done;
        if (tp > 1 && cp > 1 && pp > 1 &&
            cli_mp_attach_ppcp(&tr, have_dpc ? &dpc : NULL, (int)pp, (int)cp, pp_layers, &cpc, &have_cpc, desc, "finetune"))
            goto done;
        if (tp > 1 && cp > 1 && pp < 2 && cli_mp_attach_cp(&tr, have_dpc ? &dpc : NULL, (int)cp, &cpc, &have_cpc, desc, "finetune"))
            goto done;
        if (tp > 1 && pp > 1 && cp < 2 &&
            cli_mp_attach_pp(&tr, have_dpc ? &dpc : NULL, (int)pp, pp_layers, &cpc, &have_cpc, &ddc, &have_ddc, desc, "finetune"))
            goto done;
        if (seq_par && lmc_trainer_tp_attach_sp(&tr, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
    }
    if (resume) {
        int64_t ep = 0, nx = 0;
        /* --full: the checkpoint holds the whole model and optimizer (tensor parallel: cut like the weights) */
        lmc_status ls = !full ? (tr.ep   ? lmc_trainer_ep_lora_load_state(&tr, &lo, resume, &ep, &nx, &err)
                                 : tr.tp ? lmc_lora_tp_ckpt_load_state(&tr, &lo_tp, &lo, resume, &ep, &nx, &err)
                                         : lmc_lora_ckpt_load_state(&tr, resume, &ep, &nx, &err))
                        : tr.ep ? lmc_trainer_ep_load_state(&tr, &full_tm, resume, &err)
                        : tr.tp ? lmc_trainer_tp_load_state(&tr, &full_tm, resume, &err)
                                : lmc_ckpt_load_state(&tr, resume, &err);
        if (have_full) {
            lmc_tmodel_free(&full_tm);
            have_full = false;
        }
        if (full) ep = tr.feed_epoch, nx = tr.feed_index;
        if (ls || lmc_sft_batcher_seek(&src.b, ep, nx, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        /* the dropout masks continue where they were (every rank draws the world batches of a micro-step) */
        src.n_drawn = (uint64_t)(tr.step * accum * (tr.comm ? tr.comm->world : 1));
        if (root) fprintf(stderr, "lmc finetune: resumed %s at step %lld\n", resume, (long long)tr.step);
    }
    if (tr.zero) lmc_zero_mark_setup(tr.zero); /* training's peak RSS apart from set-up's */
    int64_t trainable = tr.tm.numel - tr.tm.trainable_off;
    if (root) fprintf(stderr, "lmc finetune: %s, %s, %lld trainable of %lld parameters, batch %lld x %lld x %lld accum%s, "
                    "%lld steps, device %s\n", tr.tm.cfg.model_type,
            full ? "full fine-tuning" : qlora ? (rslora ? "QLoRA (rsLoRA scale)" : "QLoRA")
                                              : (rslora ? "LoRA (rsLoRA scale)" : "LoRA"), (long long)trainable,
            (long long)tr.tm.trainable_off + (full ? trainable : 0) + ql.quant_params + ql.ends_params, (long long)B, (long long)T, (long long)accum,
            pack ? ", packed" : "", (long long)steps, be.name);
    if (root) {
        char odesc[1024];
        lmc_trainer_describe_optim(&tr, odesc, sizeof odesc);
        fprintf(stderr, "lmc finetune: %s\n", odesc);
    }
    char memjs[4200];
    snprintf(memjs, sizeof memjs, "%s.memory.json", out);
    if (root) cli_train_mem_report("finetune", &be, &tr, full ? NULL : &lt, &ql, qlora ? (int)qkind : LMC_QLORA_BF16,
                                   memjs, mem0, false);
    if (root && tr.tp)
        fprintf(stderr, "lmc finetune: tensor parallel %lld x data parallel %d (%d ranks), global batch %lld x %lld "
                        "x %lld accum; each rank holds %lld of the parameters and their AdamW moments\n", (long long)tp,
                have_dpc ? dpc.world : 1, comm.world, (long long)(B * (have_dpc ? dpc.world : 1)), (long long)T,
                (long long)accum, (long long)tr.tm.numel);
    else if (root && (tr.cp || tr.pp))
        cli_mp_log("finetune", cp, pp, comm.world, B, T, accum);
    if (root && lmc_trainer_pp_bounds(&tr))
        cli_pp_print_split("finetune", tr.tp ? &tr.tp->full : &tr.tm.cfg, (int)pp, (int)pp_chunks,
                           lmc_trainer_pp_bounds(&tr), pp_layers);
    else if (root && tr.ep)
        fprintf(stderr, "lmc finetune: expert parallel x data parallel over %d ranks, %lld batches of %lld x %lld per "
                        "step; each rank holds %lld of the %lld experts per layer, %d threads per rank\n", comm.world,
                (long long)(comm.world * accum), (long long)B, (long long)T,
                (long long)(tr.tm.cfg.num_experts / comm.world), (long long)tr.tm.cfg.num_experts, cc.threads);
    else if (root && dist && tr.zero && zero == 0) /* a device backend: the zero module's stage 0 */
        fprintf(stderr, "lmc finetune: data parallel, %d ranks over %s (replicated, ZeRO-0: %s gradients all-reduced "
                        "per unit), global batch %lld x %lld x %lld accum\n", comm.world, tr.comm->name,
                full ? "the model's" : "the adapters'", (long long)(B * comm.world), (long long)T, (long long)accum);
    else if (root && dist && tr.zero)
        fprintf(stderr, "lmc finetune: data parallel, %d ranks, ZeRO-%lld (%s sharded: %s), global batch %lld x %lld "
                        "x %lld accum, %d threads per rank\n", comm.world, (long long)zero,
                zero == 1 ? "AdamW moments" : zero == 2 ? "moments and gradients" : "moments, gradients and parameters",
                full ? "the model's" : "the adapters'", (long long)(B * comm.world), (long long)T, (long long)accum,
                cc.threads);
    else if (root && dist)
        fprintf(stderr, "lmc finetune: data parallel, %d ranks (replicated), global batch %lld x %lld x %lld accum, "
                        "%d threads per rank\n", comm.world, (long long)(B * comm.world), (long long)T,
                (long long)accum, cc.threads);
    char mpath[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    if (!metrics) {
        snprintf(mpath, sizeof mpath, "%s.metrics.jsonl", out);
        metrics = mpath;
    }
    if (root && !(mf = fopen(metrics, resume ? "a" : "w"))) {
        fprintf(stderr, "lmc finetune: cannot open %s: %s\n", metrics, strerror(errno));
        goto done;
    }
    bool tty = isatty(2), mem_done = false;
    int64_t end = stop_at > 0 && stop_at < steps ? stop_at : steps;
    while (tr.step < end) {
        struct lmc_train_stats st;
        double t0 = lmc_time_now();
        if (lmc_trainer_step(&tr, &st, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        double dt = lmc_time_now() - t0, vl = NAN;
        if (root && !be.host_memory && !mem_done) /* the device's bytes in use next to the account */
            cli_train_mem_report("finetune", &be, &tr, full ? NULL : &lt, &ql, qlora ? (int)qkind : LMC_QLORA_BF16,
                                 memjs, mem0, true);
        mem_done = true;
        bool last = tr.step == steps;
        if (vd.n_ex && ((eval_every > 0 && tr.step % eval_every == 0) || last) && val_loss(&tr, src.lt, &vd, &vl, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        char ck[4300];
        bool save = save_every && tr.step % save_every == 0;
        if (save) {
            snprintf(ck, sizeof ck, "%s.ckpt", out);
            if (root || tr.zero) mkdir(ck, 0777);
            snprintf(ck, sizeof ck, "%s.ckpt/step_%06lld", out, (long long)tr.step);
            tr.feed_epoch = src.b.epoch; /* --full: the data position in trainer_state.json */
            tr.feed_index = src.b.next;
        }
        if (save && tr.pp && lmc_trainer_pp_sync(&tr, true, &err)) { /* pipeline: the stages' state everywhere */
            cli_fail("finetune", &err);
            goto done;
        }
        if (save && tr.ep && !full && /* every rank: the adapters and their moments to rank 0, which writes */
            lmc_trainer_ep_lora_ckpt_save(&tr, &lt, &lo, &lo_local, ck, cc.model_dir, src.b.epoch, src.b.next, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        if (save && tr.ep && full && !root && lmc_trainer_ep_save(&tr, ck, cc.model_dir, cc.model_dir, &err)) {
            cli_fail("finetune", &err); /* the other ranks send their experts to rank 0 */
            goto done;
        }
        if (save && tr.zero) { /* ZeRO: every rank its shard into OUT.ckpt/zero, rank 0 gets the parameters */
            char zd[4300];
            snprintf(zd, sizeof zd, "%s.ckpt/zero", out);
            if (lmc_trainer_dist_save(&tr, zd, &err)) {
                cli_fail("finetune", &err);
                goto done;
            }
        }
        if (save && tr.tp && !full && /* every rank: the adapter and its moments gathered, rank 0 writes */
            lmc_lora_tp_ckpt_save(&tr, &lt, &lo_tp, &lo, ck, cc.model_dir, src.b.epoch, src.b.next, root, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        if (save && tr.tp && full && !root && lmc_trainer_tp_save(&tr, ck, cc.model_dir, cc.model_dir, &err)) {
            cli_fail("finetune", &err); /* the other ranks send their shards to rank 0 */
            goto done;
        }
        if (!root) continue; /* metrics, progress, checkpoints: rank 0 */
        fprintf(mf, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens_per_s\": %.1f",
                (long long)tr.step, st.loss, st.lr, st.grad_norm, (double)st.tokens / dt);
        if (!isnan(vl)) fprintf(mf, ", \"val_loss\": %.9g", vl);
        fprintf(mf, "}\n");
        fflush(mf);
        char line[256];
        int n = snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.3e | grad %.3f | %.0f tok/s",
                         (long long)tr.step, (long long)steps, st.loss, st.lr, st.grad_norm, (double)st.tokens / dt);
        if (!isnan(vl)) snprintf(line + n, sizeof line - (size_t)n, " | val %.4f", vl);
        if (tty && isnan(vl) && !last) fprintf(stderr, "\r%s\033[K", line);
        else fprintf(stderr, "%s%s\n", tty ? "\r" : "", line);
        if (save) {
            if (full ? (tr.tp   ? lmc_trainer_tp_save(&tr, ck, cc.model_dir, cc.model_dir, &err)
                        : tr.ep ? lmc_trainer_ep_save(&tr, ck, cc.model_dir, cc.model_dir, &err)
                                : lmc_ckpt_save(&tr, ck, cc.model_dir, cc.model_dir, &err))
                     : !tr.ep && !tr.tp && lmc_lora_ckpt_save(&tr, &lt, &lo, ck, cc.model_dir, src.b.epoch, src.b.next, &err)) {
                cli_fail("finetune", &err);
                goto done;
            }
            fprintf(stderr, "%scheckpoint %s\n", tty ? "\r\033[K" : "", ck);
            char kd[4300], kz[4300]; /* --keep-last: the new folder is in place, every rank's ZeRO shards written */
            snprintf(kd, sizeof kd, "%s.ckpt", out);
            snprintf(kz, sizeof kz, "%s.ckpt/zero", out);
            if (keep_last > 0 && lmc_ckpt_keep_last(kd, keep_last, resume, kz, NULL, &err)) {
                cli_fail("finetune", &err);
                goto done;
            }
        }
    }
    if (tr.step < steps) { /* --stop-at: no output, as if the run had been killed here */
        if (root) fprintf(stderr, "lmc finetune: stopped at step %lld of %lld (--stop-at); no output written\n",
                          (long long)tr.step, (long long)steps);
        rc = 0;
        goto done;
    }
    if (tr.pp && lmc_trainer_pp_sync(&tr, true, &err)) { /* pipeline: the stages' tensors to every rank */
        cli_fail("finetune", &err);
        goto done;
    }
    if (tr.tp && !full && lmc_lora_tp_read(&tr, &lt, &lo_tp, &lo, &err)) { /* the one-process adapter, gathered */
        cli_fail("finetune", &err);
        goto done;
    }
    if ((tr.tp && full) || (tr.ep && full)) { /* the shards / experts gathered to rank 0, which writes the consolidated model */
        if (tr.tp ? lmc_trainer_tp_save(&tr, tmp, cc.model_dir, cc.model_dir, &err)
                  : lmc_trainer_ep_save(&tr, tmp, cc.model_dir, cc.model_dir, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
    }
    if (tr.ep && !full && /* every rank's adapters of its experts to rank 0 */
        (lmc_lora_train_read(&lt, &tr.tm, &lo_local, &err) || lmc_trainer_ep_lora_gather(&tr, &lo, &err))) {
        cli_fail("finetune", &err);
        goto done;
    }
    /* ZeRO: the parameters (--full: and the moments, OUT as one process writes it) gathered for rank 0 */
    if (tr.zero && lmc_trainer_dist_gather(&tr, full, &err)) {
        cli_fail("finetune", &err);
        goto done;
    }
    if (!root) { /* the output: rank 0 */
        rc = 0;
        goto done;
    }
    if (!full) {
        if ((!tr.ep && !tr.tp && lmc_lora_train_read(&lt, &tr.tm, &lo, &err)) ||
            lmc_lora_save(&lo, out, tr.tp ? &tr.tp->full : &tr.tm.cfg, cc.model_dir, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        fprintf(stderr, "lmc finetune: adapter (%d modules, r %lld) written to %s\n", lo.n_mods, (long long)r, out);
    } else {
        if (!tr.tp && !tr.ep && lmc_ckpt_save(&tr, tmp, cc.model_dir, cc.model_dir, &err)) {
            cli_fail("finetune", &err);
            goto done;
        }
        if (rename(tmp, out) != 0) {
            fprintf(stderr, "lmc finetune: cannot rename %s to %s: %s (left in place)\n", tmp, out, strerror(errno));
            goto done;
        }
        fprintf(stderr, "lmc finetune: model written to %s\n", out);
    }
    rc = 0;
done:
    if (!rc && have_tr && tr.zero) lmc_zero_log_memory(tr.zero); /* rank 0: state now/peak vs the formula, VmHWM */
    if (mf) fclose(mf);
    lmc_sft_batcher_free(&src.b);
    if (have_tr) lmc_trainer_free(&tr);
    if (have_tm) lmc_tmodel_free(&tm);
    if (have_lt) lmc_lora_train_free(&lt);
    lmc_qlora_tp_free(&qtp); /* after the model that points into them */
    lmc_qlora_free(&ql); /* after the model that points into it */
    lmc_trainer_ep_lora_local_free(&lo_local); /* its modules' buffers are lo's */
    lmc_lora_free(&lo);
    lmc_lora_free(&lo_tp);
    if (have_be) cli_train_backend_free(&be);
    lmc_sft_free(&d);
    lmc_sft_free(&vd);
    lmc_tokenizer_free(tok);
    if (have_full) lmc_tmodel_free(&full_tm);
    lmc_trainer_tp_free_state(tps);
    lmc_trainer_ep_free_state(eps_state);
    if (have_ddc) ddc.free(&ddc);
    if (have_cpc) cpc.free(&cpc);
    if (have_dpc) dpc.free(&dpc);
    if (have_tpc) tpc.free(&tpc);
    if (have_nccl) ncomm.free(&ncomm); /* and the host communicator under it */
    if (have_comm) comm.free(&comm);
    return rc;
}
