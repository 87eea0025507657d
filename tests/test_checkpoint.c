/* test_checkpoint.c — checkpoint folders on disk (train/checkpoint.h):
 * folder names, completeness, choosing the newest complete checkpoint
 * (`--resume latest`) among complete, incomplete, temporary and misnamed
 * entries, removal of stale temporaries when OUT is prepared, atomic
 * publication (new name, replacing an existing checkpoint, a stale
 * temporary in the way, a failed write leaving nothing), and the settings
 * a resumed run takes from trainer_state.json (overrides by bit, files of
 * older versions, malformed fields naming the field). The kill-during-save
 * test of the whole command is tests/test_ckpt_kill.sh. */
#include "core/core.h"
#include "test.h"
#include "train/checkpoint.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

static const char *rpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", root, name);
    return buf[k];
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* A folder holding the four checkpoint files (contents tagged). */
static void make_ckpt(const char *dir, const char *tag, bool with_optimizer) {
    char p[600];
    mkdir(dir, 0777);
    const char *files[] = {"config.json", "model.safetensors", "trainer_state.json", "optimizer.safetensors"};
    for (int i = 0; i < (with_optimizer ? 4 : 3); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        put(p, tag);
    }
}

static void names(void) {
    int64_t s = -1;
    CHECK(lmc_ckpt_parse_name("step_000094", &s) && s == 94);
    CHECK(lmc_ckpt_parse_name("step_1", &s) && s == 1);
    CHECK(lmc_ckpt_parse_name("step_123456789012", &s) && s == 123456789012LL);
    CHECK(!lmc_ckpt_parse_name("step_", &s));
    CHECK(!lmc_ckpt_parse_name("step_12a", &s));
    CHECK(!lmc_ckpt_parse_name("step_-1", &s));
    CHECK(!lmc_ckpt_parse_name(".partial.step_000094", &s));
    CHECK(!lmc_ckpt_parse_name("step_000094.tmp", &s));
    CHECK(!lmc_ckpt_parse_name("step_1234567890123456789", &s)); /* 19 digits: could overflow */
    char buf[64];
    CHECK(lmc_ckpt_step_path(buf, sizeof buf, "out", 94) && !strcmp(buf, "out/step_000094"));
    CHECK(lmc_ckpt_step_path(buf, sizeof buf, "out", 1234567) && !strcmp(buf, "out/step_1234567"));
    CHECK(!lmc_ckpt_step_path(buf, 8, "out", 1));
}

static void latest(void) {
    const char *out = rpath("latest");
    char p[600], got[600];
    lmc_err err = {0};
    mkdir(out, 0777);
    int64_t step = -1;
    CHECK(lmc_ckpt_latest(out, got, sizeof got, &step, &err) == LMC_ERR_IO && strstr(err.msg, "latest"));
    snprintf(p, sizeof p, "%s/step_000001", out);
    make_ckpt(p, "1", true);
    snprintf(p, sizeof p, "%s/step_000010", out);
    make_ckpt(p, "10", true);
    snprintf(p, sizeof p, "%s/step_000012", out); /* incomplete: no optimizer (what old versions left) */
    make_ckpt(p, "12", false);
    snprintf(p, sizeof p, "%s/.partial.step_000013", out); /* complete content, temporary name */
    make_ckpt(p, "13", true);
    snprintf(p, sizeof p, "%s/step_000014x", out);
    make_ckpt(p, "14", true);
    snprintf(p, sizeof p, "%s/step_000015", out); /* a file, not a folder */
    put(p, "15");
    snprintf(p, sizeof p, "%s/step_9", out); /* fewer digits sort by number, not by name */
    make_ckpt(p, "9", true);
    CHECK_MSG(!lmc_ckpt_latest(out, got, sizeof got, &step, &err), "%s", err.msg);
    snprintf(p, sizeof p, "%s/step_000010", out);
    CHECK_MSG(step == 10 && !strcmp(got, p), "latest: step %lld at %s", (long long)step, got);
    /* resolve: "latest", a complete folder, an incomplete one naming what is missing */
    CHECK(!lmc_ckpt_resolve(out, "latest", got, sizeof got, &err) && !strcmp(got, p));
    CHECK(!lmc_ckpt_resolve(out, p, got, sizeof got, &err) && !strcmp(got, p));
    snprintf(p, sizeof p, "%s/step_000012", out);
    const char *missing = NULL;
    CHECK(!lmc_ckpt_complete(p, &missing) && missing && !strcmp(missing, "optimizer.safetensors"));
    CHECK(lmc_ckpt_resolve(out, p, got, sizeof got, &err) == LMC_ERR_IO && strstr(err.msg, "optimizer.safetensors") &&
          strstr(err.msg, "step_000012"));
    CHECK(lmc_ckpt_resolve(out, rpath("nope"), got, sizeof got, &err) == LMC_ERR_IO && strstr(err.msg, "nope"));
    CHECK(lmc_ckpt_latest(rpath("nope"), got, sizeof got, &step, &err) == LMC_ERR_IO && strstr(err.msg, "nope"));
}

static void prepare(void) {
    const char *out = rpath("prep");
    char p[600];
    lmc_err err = {0};
    int n = -1;
    CHECK_MSG(!lmc_ckpt_out_prepare(out, &n, &err), "%s", err.msg); /* creates it */
    CHECK(n == 0 && count_entries(out) == 0);
    snprintf(p, sizeof p, "%s/step_000003", out);
    make_ckpt(p, "3", true);
    snprintf(p, sizeof p, "%s/.partial.step_000004", out); /* a save killed half-way */
    make_ckpt(p, "4", false);
    snprintf(p, sizeof p, "%s/.partial.step_000004/model.safetensors.tmp", out);
    put(p, "partial");
    snprintf(p, sizeof p, "%s/.partial.step_000004/nested", out); /* not made by us; removed too */
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/.partial.step_000004/nested/x", out);
    put(p, "x");
    snprintf(p, sizeof p, "%s/.partial.old.step_000002", out); /* an exchange killed before removal */
    make_ckpt(p, "2", true);
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    put(p, "{}\n");
    snprintf(p, sizeof p, "%s/.hidden", out); /* not ours: kept */
    put(p, "h");
    CHECK_MSG(!lmc_ckpt_out_prepare(out, &n, &err), "%s", err.msg);
    CHECK_MSG(n == 2, "removed %d", n);
    snprintf(p, sizeof p, "%s/.partial.step_000004", out);
    CHECK(!exists(p));
    snprintf(p, sizeof p, "%s/.partial.old.step_000002", out);
    CHECK(!exists(p));
    CHECK(count_entries(out) == 3); /* step_000003, metrics.jsonl, .hidden */
    snprintf(p, sizeof p, "%s/step_000003", out);
    CHECK(lmc_ckpt_complete(p, NULL));
    /* OUT a file: a clear error */
    put(rpath("afile"), "x");
    CHECK(lmc_ckpt_out_prepare(rpath("afile"), &n, &err) == LMC_ERR_IO && strstr(err.msg, "afile"));
    CHECK(lmc_ckpt_out_prepare(rpath("no/such/parent"), &n, &err) == LMC_ERR_IO && strstr(err.msg, "parent"));
}

static bool file_is(const char *dir, const char *name, const char *want) {
    char p[600], *text = NULL;
    lmc_err err = {0};
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (lmc_file_read(p, 1 << 20, &text, NULL, &err)) return false;
    bool ok = !strcmp(text, want);
    free(text);
    return ok;
}

static void publish(void) {
    const char *out = rpath("pub");
    char dir[600], tmp[600], p[700];
    lmc_err err = {0};
    mkdir(out, 0777);
    snprintf(dir, sizeof dir, "%s/step_000005", out);
    /* a new name */
    CHECK_MSG(!lmc_ckpt_begin(dir, tmp, sizeof tmp, &err), "%s", err.msg);
    snprintf(p, sizeof p, "%s/.partial.step_000005", out);
    CHECK(!strcmp(tmp, p) && exists(tmp) && !exists(dir));
    make_ckpt(tmp, "a", true);
    CHECK_MSG(!lmc_ckpt_commit(tmp, dir, &err), "%s", err.msg);
    CHECK(!exists(tmp) && lmc_ckpt_complete(dir, NULL) && file_is(dir, "model.safetensors", "a"));
    /* replacing an existing checkpoint of that name, with a stale temporary in the way */
    mkdir(tmp, 0777);
    snprintf(p, sizeof p, "%s/junk", tmp);
    put(p, "stale");
    CHECK_MSG(!lmc_ckpt_begin(dir, tmp, sizeof tmp, &err), "%s", err.msg);
    CHECK(count_entries(tmp) == 0);
    CHECK(file_is(dir, "model.safetensors", "a")); /* the old one untouched while writing */
    make_ckpt(tmp, "b", true);
    CHECK_MSG(!lmc_ckpt_commit(tmp, dir, &err), "%s", err.msg);
    CHECK(!exists(tmp) && file_is(dir, "model.safetensors", "b") && file_is(dir, "optimizer.safetensors", "b"));
    CHECK(count_entries(out) == 1);
    /* an abandoned write leaves nothing behind */
    snprintf(dir, sizeof dir, "%s/step_000006", out);
    CHECK(!lmc_ckpt_begin(dir, tmp, sizeof tmp, &err));
    make_ckpt(tmp, "c", false);
    lmc_ckpt_abort(tmp);
    CHECK(!exists(tmp) && !exists(dir) && count_entries(out) == 1);
    /* a trailing slash names the same folder */
    snprintf(dir, sizeof dir, "%s/step_000007/", out);
    CHECK(!lmc_ckpt_begin(dir, tmp, sizeof tmp, &err));
    snprintf(p, sizeof p, "%s/.partial.step_000007", out);
    CHECK(!strcmp(tmp, p));
    CHECK(!lmc_ckpt_commit(tmp, dir, &err));
    snprintf(p, sizeof p, "%s/step_000007", out);
    CHECK(exists(p) && !exists(tmp));
    CHECK(lmc_ckpt_begin("/", tmp, sizeof tmp, &err) == LMC_ERR_ARG);
    CHECK(lmc_ckpt_begin(rpath("no/such/parent/step_1"), tmp, sizeof tmp, &err) == LMC_ERR_IO);
}

static struct lmc_train_opts base_opts(void) {
    struct lmc_train_opts o;
    memset(&o, 0, sizeof o);
    o.B = 8;
    o.T = 128;
    o.accum = 1;
    o.seed = 1234;
    o.clip = 1;
    o.decay = LMC_DECAY_DEFAULT;
    lmc_adamw_cfg_default(&o.adamw);
    o.adamw.lr = 3e-4;
    o.sched = (struct lmc_schedule){LMC_SCHED_COSINE, 3e-4, 3e-5, 0, 100, 0};
    return o;
}

static void opts(void) {
    const char *dir = rpath("opts");
    char p[600];
    lmc_err err = {0};
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/trainer_state.json", dir);
    put(p, "{\"step\": 3, \"epoch\": 0, \"index\": 9, \"seed\": \"18446744073709551615\", \"batch\": 3,"
           " \"seq_len\": 16, \"accum\": 2, \"schedule\": {\"kind\": \"wsd\", \"lr_max\": 0.0012345678901234567,"
           " \"lr_min\": 1e-05, \"warmup\": 2, \"total\": 6, \"decay_steps\": 1}, \"adamw\": {\"lr\": 0.0012345678901234567,"
           " \"beta1\": 0.8, \"beta2\": 0.99, \"eps\": 1e-07, \"weight_decay\": 0.25}, \"decay\": \"all\", \"clip\": 0.5}");
    struct lmc_train_opts o = base_opts();
    CHECK_MSG(!lmc_ckpt_read_opts(dir, 0, &o, &err), "%s", err.msg);
    CHECK(o.B == 3 && o.T == 16 && o.accum == 2 && o.seed == UINT64_MAX);
    CHECK(o.sched.kind == LMC_SCHED_WSD && o.sched.lr_max == 0.0012345678901234567 && o.sched.lr_min == 1e-5 &&
          o.sched.warmup == 2 && o.sched.total == 6 && o.sched.decay_steps == 1);
    CHECK(o.adamw.lr == 0.0012345678901234567 && o.adamw.beta1 == 0.8 && o.adamw.beta2 == 0.99 &&
          o.adamw.eps == 1e-7 && o.adamw.weight_decay == 0.25);
    CHECK(o.decay == LMC_DECAY_ALL && o.clip == 0.5);
    /* given settings stay as the caller set them */
    o = base_opts();
    unsigned given = lmc_train_opt_bit("--batch") | lmc_train_opt_bit("--lr") | lmc_train_opt_bit("--steps") |
                     lmc_train_opt_bit("--decay-all") | lmc_train_opt_bit("--schedule");
    CHECK(lmc_train_opt_bit("--threads") == 0 && lmc_train_opt_bit("--seq") == LMC_TOPT_SEQ);
    CHECK_MSG(!lmc_ckpt_read_opts(dir, given, &o, &err), "%s", err.msg);
    CHECK(o.B == 8 && o.sched.lr_max == 3e-4 && o.adamw.lr == 3e-4 && o.sched.total == 100);
    CHECK(o.decay == LMC_DECAY_DEFAULT && o.sched.kind == LMC_SCHED_COSINE);
    CHECK(o.T == 16 && o.accum == 2 && o.sched.lr_min == 3e-5 && o.adamw.beta1 == 0.8 && o.clip == 0.5);
    o = base_opts(); /* min lr alone */
    CHECK(!lmc_ckpt_read_opts(dir, LMC_TOPT_MIN_LR, &o, &err) && o.sched.lr_min == 3e-5 && o.sched.lr_max == 0.0012345678901234567);
    /* a file of an older version (no settings but batch shape): the rest stays */
    put(p, "{\"step\": 4, \"epoch\": 0, \"index\": 32, \"seed\": 1234, \"batch\": 8, \"seq_len\": 32, \"accum\": 1}");
    o = base_opts();
    CHECK_MSG(!lmc_ckpt_read_opts(dir, 0, &o, &err), "%s", err.msg);
    struct lmc_train_opts b = base_opts();
    CHECK(o.T == 32 && o.seed == 1234 && o.sched.total == b.sched.total && o.adamw.lr == b.adamw.lr);
    /* malformed: the field is named, o unchanged */
    const char *bad[][2] = {
        {"{\"batch\": \"8\"}", "batch"},
        {"{\"batch\": 0}", "batch"},
        {"{\"seq_len\": 1.5}", "seq_len"},
        {"{\"seed\": \"12x\"}", "seed"},
        {"{\"seed\": \"99999999999999999999\"}", "seed"},
        {"{\"schedule\": {\"kind\": \"triangle\"}}", "schedule.kind"},
        {"{\"schedule\": 3}", "schedule"},
        {"{\"adamw\": {\"beta1\": null}}", "beta1"},
        {"{\"decay\": \"some\"}", "decay"},
        {"{\"clip\": 1e999}", "clip"},
        {"[1, 2]", "trainer_state.json"},
        {"{\"step\": ", "trainer_state.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        put(p, bad[i][0]);
        o = base_opts();
        lmc_status s = lmc_ckpt_read_opts(dir, 0, &o, &err);
        CHECK_MSG(s == LMC_ERR_FORMAT && strstr(err.msg, bad[i][1]) && o.B == 8 && o.T == 128,
                  "%s: %d %s", bad[i][0], (int)s, err.msg);
    }
    CHECK(lmc_ckpt_read_opts(rpath("nope"), 0, &o, &err) == LMC_ERR_IO && strstr(err.msg, "nope"));
}

static void state_parse(void) {
    /* a buffer without a terminating NUL, cut right after the object */
    const char text[] = "{\"step\": 7, \"epoch\": 1, \"index\": 0, \"seq_len\": 64, \"schedule\": {\"kind\": \"linear\"}}xx";
    struct lmc_train_state st;
    lmc_err err = {0};
    CHECK_MSG(!lmc_train_state_parse(text, sizeof text - 3, "s.json", &st, &err), "%s", err.msg);
    CHECK(st.step == 7 && st.epoch == 1 && st.index == 0 && st.o.T == 64 && st.o.sched.kind == LMC_SCHED_LINEAR);
    CHECK(st.have == (LMC_TSTATE_STEP | LMC_TSTATE_EPOCH | LMC_TSTATE_INDEX | LMC_TOPT_SEQ | LMC_TOPT_SCHED));
    CHECK(lmc_train_state_parse(text, sizeof text - 1, "s.json", &st, &err) == LMC_ERR_FORMAT && strstr(err.msg, "s.json"));
    CHECK(lmc_train_state_parse(text, 10, "s.json", &st, &err) == LMC_ERR_FORMAT);
    CHECK(lmc_train_state_parse("{\"step\": -1}", 12, "s.json", &st, &err) == LMC_ERR_FORMAT && strstr(err.msg, "step"));
    CHECK(lmc_train_state_parse("{\"index\": 1e300}", 16, "s.json", &st, &err) == LMC_ERR_FORMAT &&
          strstr(err.msg, "index"));
    CHECK(!lmc_train_state_parse("{}", 2, "s.json", &st, &err) && st.have == 0 && st.step == -1);
}

/* "optim": the kind's defaults, then the fields present; bad values name the field */
static void state_parse_optim(void) {
    struct lmc_train_state st;
    lmc_err err = {0};
    const char *ok = "{\"optim\": {\"kind\": \"galore\", \"galore_rank\": 8, \"galore_scale\": 0.5, "
                     "\"apollo_seed\": \"18446744073709551615\", \"muon_scale\": \"moonlight\"}}";
    CHECK_MSG(!lmc_train_state_parse(ok, strlen(ok), "s.json", &st, &err), "%s", err.msg);
    CHECK(st.have == LMC_TOPT_OPTIM && st.o.optim.kind == LMC_OPTIM_GALORE && st.o.optim.galore_rank == 8 &&
          st.o.optim.galore_scale == 0.5 && st.o.optim.galore_update_gap == 200 &&
          st.o.optim.apollo_seed == UINT64_MAX && st.o.optim.muon_scale == LMC_MUON_SCALE_MOONLIGHT);
    const char *mini = "{\"optim\": {\"kind\": \"apollo-mini\"}}";
    CHECK(!lmc_train_state_parse(mini, strlen(mini), "s.json", &st, &err) && st.o.optim.apollo_rank == 1 &&
          st.o.optim.apollo_scale_type == LMC_APOLLO_TENSOR);
    /* muon_ns_gram: absent = a checkpoint from before Gram space (the plain iteration), whatever the default */
    const char *mu0 = "{\"optim\": {\"kind\": \"muon\"}}", *mu1 = "{\"optim\": {\"kind\": \"muon\", \"muon_ns_gram\": 1}}";
    struct lmc_optim_cfg dflt;
    lmc_optim_cfg_default(&dflt, LMC_OPTIM_MUON);
    CHECK(dflt.muon_ns_gram);
    CHECK(!lmc_train_state_parse(mu0, strlen(mu0), "s.json", &st, &err) && !st.o.optim.muon_ns_gram);
    CHECK(!lmc_train_state_parse(mu1, strlen(mu1), "s.json", &st, &err) && st.o.optim.muon_ns_gram);
    static const char *bad[][2] = {
        {"{\"optim\": 3}", "optim.kind"},
        {"{\"optim\": {\"kind\": \"sgd\"}}", "optim.kind"},
        {"{\"optim\": {\"kind\": \"galore\", \"galore_rank\": 0}}", "optim"},
        {"{\"optim\": {\"kind\": \"galore\", \"galore_rank\": 1e12}}", "galore_rank"},
        {"{\"optim\": {\"kind\": \"muon\", \"muon_lr\": \"x\"}}", "muon_lr"},
        {"{\"optim\": {\"kind\": \"muon\", \"muon_scale\": \"big\"}}", "muon_scale"},
        {"{\"optim\": {\"kind\": \"apollo\", \"apollo_scale_type\": 1}}", "apollo_scale_type"},
        {"{\"optim\": {\"kind\": \"apollo\", \"apollo_seed\": \"-1\"}}", "apollo_seed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lmc_status s = lmc_train_state_parse(bad[i][0], strlen(bad[i][0]), "s.json", &st, &err);
        CHECK_MSG(s == LMC_ERR_FORMAT && strstr(err.msg, bad[i][1]) && strstr(err.msg, "s.json"), "%s: %s",
                  bad[i][0], err.msg);
    }
}

/* --keep-last: OUT holds step_2 .. step_10 (every 2) and the ZeRO folder
 * each step's shards, manifests and optimizer shards, plus a newer step 12
 * whose folder is not written yet, files that are not per-step and a
 * step_* file that is not a folder. */
static void keep_last(void) {
    char out[512], zd[600], p[700];
    snprintf(out, sizeof out, "%s", rpath("keep"));
    snprintf(zd, sizeof zd, "%s/zero", out);
    mkdir(out, 0777);
    mkdir(zd, 0777);
    for (int k = 2; k <= 12; k += 2) {
        snprintf(p, sizeof p, "%s/step_%06d", out, k);
        if (k < 12) make_ckpt(p, "x", true);
        for (int r = 0; r < 2; r++) {
            snprintf(p, sizeof p, "%s/zero-step%08d-rank%05d.bin", zd, k, r);
            put(p, "s");
            snprintf(p, sizeof p, "%s/optim-step%08d-rank%05d.safetensors", zd, k, r);
            put(p, "o");
        }
        snprintf(p, sizeof p, "%s/zero-manifest-step%08d.json", zd, k);
        put(p, "m");
    }
    snprintf(p, sizeof p, "%s/zero-manifest.json", zd);
    put(p, "m");
    snprintf(p, sizeof p, "%s/zero-step00000002-rank00000.bin.tmp", zd); /* not a per-step name: left */
    put(p, "t");
    snprintf(p, sizeof p, "%s/step_000001", out); /* a file, not a checkpoint folder: left */
    put(p, "f");
    lmc_err err = {0};
    int n = -1;
    char spare[700];
    snprintf(spare, sizeof spare, "%s/step_000004/", out); /* the folder resumed from (a trailing slash) */
    CHECK_MSG(!lmc_ckpt_keep_last(out, 2, spare, zd, &n, &err), "%s", err.msg);
    CHECK(n == 2); /* step_2 and step_6 */
    int want[] = {4, 8, 10}, gone[] = {2, 6};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/step_%06d", out, want[i]);
        CHECK_MSG(lmc_ckpt_complete(p, NULL), "%s kept", p);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/step_%06d", out, gone[i]);
        CHECK_MSG(!exists(p), "%s removed", p);
    }
    /* the ZeRO files: steps 4 (spared), 8, 10 and the newer 12 kept (5 files each), 2 and 6 gone;
     * the manifest, the temporary and the step_000001 file left */
    CHECK(count_entries(zd) == 4 * 5 + 2);
    snprintf(p, sizeof p, "%s/zero-step00000006-rank00001.bin", zd);
    CHECK(!exists(p));
    snprintf(p, sizeof p, "%s/optim-step00000002-rank00000.safetensors", zd);
    CHECK(!exists(p));
    snprintf(p, sizeof p, "%s/zero-manifest-step00000004.json", zd);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/zero-step00000012-rank00001.bin", zd);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/step_000001", out);
    CHECK(exists(p));
    CHECK(count_entries(out) == 5); /* step_1 (file), 4, 8, 10, zero */
    /* keep 1 without a spare and no ZeRO folder: only step_10 of the folders */
    CHECK_MSG(!lmc_ckpt_keep_last(out, 1, NULL, NULL, &n, &err), "%s", err.msg);
    CHECK(n == 2 && count_entries(out) == 3);
    snprintf(p, sizeof p, "%s/step_000010", out);
    CHECK(lmc_ckpt_complete(p, NULL));
    CHECK(count_entries(zd) == 4 * 5 + 2); /* untouched */
    /* a spare in another folder is not one of OUT's; as many folders as kept: nothing removed */
    CHECK_MSG(!lmc_ckpt_keep_last(out, 3, rpath("elsewhere/step_000010"), zd, &n, &err), "%s", err.msg);
    CHECK(n == 0 && count_entries(out) == 3);
    CHECK(lmc_ckpt_keep_last(out, 0, NULL, NULL, &n, &err) == LMC_ERR_ARG && strstr(err.msg, "keep-last"));
    CHECK(lmc_ckpt_keep_last(rpath("no/such"), 2, NULL, NULL, &n, &err) == LMC_ERR_IO && strstr(err.msg, "no/such"));
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/lmc_test_ckpt_XXXXXX");
    if (!mkdtemp(root)) return 1;
    names();
    latest();
    prepare();
    publish();
    opts();
    state_parse();
    state_parse_optim();
    keep_last();
    lmc_err err = {0};
    if (lmc_ckpt_remove_tree(root, &err)) fprintf(stderr, "could not remove %s: %s\n", root, err.msg);
    return test_finish("test_checkpoint");
}
