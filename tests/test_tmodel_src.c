/* test_tmodel_src.c — a trainable model's parameters produced range by
 * range (model/backward.h lmc_tmodel_src, what each ZeRO rank reads of its
 * shard): a random source equals lmc_tmodel_init_random bit for bit
 * whether read whole, tensor by tensor or in odd-sized pieces that cut
 * tensors (stage-3 parts), and is refused when read backwards; a folder
 * source equals lmc_tmodel_load's arena in any order (GPT-2's Conv1D
 * tensors transposed), and a folder missing a tensor or holding a
 * misshapen one is refused naming it. */
#include "test.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "model/backward.h"

#include <stdlib.h>
#include <unistd.h>

/* The arena of tm (host) read from src in pieces of `piece` floats, in increasing order. */
static lmc_status read_pieces(struct lmc_tmodel_src *src, int64_t numel, int64_t piece, float *out, lmc_err *err) {
    for (int64_t at = 0; at < numel; at += piece) {
        lmc_status s = lmc_tmodel_src_fill(src, at, LMC_MIN(piece, numel - at), out + at, err);
        if (s) return s;
    }
    return LMC_OK;
}

static void check_random(struct lmc_backend *be, const char *dir) {
    struct lmc_tmodel ref, lay;
    lmc_err err = {0};
    CHECK(lmc_tmodel_load(&ref, dir, be, &err) == LMC_OK);
    CHECK(lmc_tmodel_init_random(&ref, 7, 0.02, &err) == LMC_OK);
    CHECK(lmc_tmodel_load_layout(&lay, dir, be, &err) == LMC_OK);
    CHECK(!lay.w && !lay.g && lay.numel == ref.numel && lay.tied_head == ref.tied_head);
    int64_t n = ref.numel;
    float *want = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
    lmc_tmodel_download_arena(&ref, ref.w, want);
    const int64_t pieces[] = {n, 16, 37, 1000, 4093};
    for (size_t k = 0; k < sizeof pieces / sizeof *pieces; k++) {
        struct lmc_tmodel_src src;
        CHECK(lmc_tmodel_src_random(&src, &lay, 7, 0.02, &err) == LMC_OK);
        memset(got, 0xff, (size_t)n * sizeof(float));
        CHECK_MSG(read_pieces(&src, n, pieces[k], got, &err) == LMC_OK, "%s", err.msg);
        CHECK_MSG(!memcmp(got, want, (size_t)n * sizeof(float)), "%s: random source in pieces of %lld", dir,
                  (long long)pieces[k]);
        /* a range before the last read: the generator has moved on */
        int64_t mid = lay.params[lay.n_params / 2].off;
        CHECK(lmc_tmodel_src_fill(&src, mid, 1, got, &err) == LMC_ERR_ARG);
        lmc_tmodel_src_free(&src);
    }
    /* lmc_tmodel_fill allocates the arenas and gives lmc_tmodel_init_random's values */
    struct lmc_tmodel_src src;
    CHECK(lmc_tmodel_src_random(&src, &lay, 7, 0.02, &err) == LMC_OK);
    CHECK(lmc_tmodel_fill(&lay, &src, &err) == LMC_OK);
    lmc_tmodel_src_free(&src);
    CHECK(lay.w && lay.g);
    if (lay.w) {
        lmc_tmodel_download_arena(&lay, lay.w, got);
        CHECK(!memcmp(got, want, (size_t)n * sizeof(float)));
    }
    free(want);
    free(got);
    lmc_tmodel_free(&ref);
    lmc_tmodel_free(&lay);
}

static void check_dir(struct lmc_backend *be, const char *dir) {
    struct lmc_tmodel ref, lay;
    lmc_err err = {0};
    CHECK(lmc_tmodel_load(&ref, dir, be, &err) == LMC_OK);
    CHECK(lmc_tmodel_load_layout(&lay, dir, be, &err) == LMC_OK);
    int64_t n = ref.numel;
    float *want = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
    lmc_tmodel_download_arena(&ref, ref.w, want);
    struct lmc_tmodel_src src;
    CHECK(lmc_tmodel_src_dir(&src, &lay, dir, &err) == LMC_OK);
    memset(got, 0xff, (size_t)n * sizeof(float));
    /* pieces of 333 floats, from the end backwards (a folder is read in any order) */
    for (int64_t at = (n - 1) / 333 * 333; at >= 0; at -= 333)
        CHECK(lmc_tmodel_src_fill(&src, at, LMC_MIN(333, n - at), got + at, &err) == LMC_OK);
    CHECK_MSG(!memcmp(got, want, (size_t)n * sizeof(float)), "%s: folder source", dir);
    CHECK(lmc_tmodel_src_fill(&src, n - 4, 8, got, &err) == LMC_ERR_ARG); /* past the arena */
    lmc_tmodel_src_free(&src);
    free(want);
    free(got);
    lmc_tmodel_free(&ref);
    lmc_tmodel_free(&lay);
}

/* A copy of dir's config.json beside a model.safetensors without tensor
 * `drop` (or with it cut to one element): refused naming it. */
static void check_bad_dir(struct lmc_backend *be, const char *dir, const char *tmp, bool cut) {
    struct lmc_tmodel lay;
    struct lmc_st st;
    lmc_err err = {0};
    char cmd[4096], path[4096];
    snprintf(cmd, sizeof cmd, "cp %s/config.json %s/", dir, tmp);
    CHECK(system(cmd) == 0);
    CHECK(lmc_st_open_dir(&st, dir, &err) == LMC_OK);
    CHECK(lmc_tmodel_load_layout(&lay, dir, be, &err) == LMC_OK);
    const char *victim = lay.params[1].name;
    struct lmc_st_write_tensor *t = calloc((size_t)st.n_tensors, sizeof *t);
    int k = 0;
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const struct lmc_st_tensor *x = &st.tensors[i];
        bool is = !strcmp(x->name, victim);
        if (is && !cut) continue;
        t[k] = (struct lmc_st_write_tensor){x->name, x->dtype, is ? 1 : x->ndim, {0}, x->data};
        for (int d = 0; d < x->ndim; d++) t[k].shape[d] = x->shape[d];
        if (is) t[k].shape[0] = 1;
        k++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    CHECK(lmc_st_write(path, t, k, NULL, 0, &err) == LMC_OK);
    struct lmc_tmodel_src src;
    CHECK(lmc_tmodel_src_dir(&src, &lay, tmp, &err) == LMC_OK);
    float *got = malloc((size_t)lay.numel * sizeof(float));
    lmc_status s = lmc_tmodel_src_fill(&src, 0, lay.numel, got, &err);
    CHECK_MSG(s == LMC_ERR_FORMAT && strstr(err.msg, victim) && strstr(err.msg, cut ? "wrong shape" : "missing"),
              "%s", err.msg);
    lmc_tmodel_src_free(&src);
    free(got);
    free(t);
    lmc_st_free(&st);
    lmc_tmodel_free(&lay);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    const char *dirs[] = {"tests/fixtures/llama-tiny", "tests/fixtures/gpt2-tiny", "tests/fixtures/qwen2-tiny"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        check_random(&be, dirs[i]);
        check_dir(&be, dirs[i]);
    }
    char tmp[] = "/tmp/lmc-tmodel-src-XXXXXX";
    if (mkdtemp(tmp)) {
        check_bad_dir(&be, "tests/fixtures/llama-tiny", tmp, false);
        check_bad_dir(&be, "tests/fixtures/llama-tiny", tmp, true);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
        CHECK(system(cmd) == 0);
    } else {
        CHECK(!"mkdtemp");
    }
    lmc_backend_cpu_free(&be);
    return test_finish("test_tmodel_src");
}
