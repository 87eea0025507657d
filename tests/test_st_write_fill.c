/* test_st_write_fill.c — lmc_st_write_fill (io/safetensors.h): tensors
 * without data produced piece by piece while the file is written (pieces
 * of 1..7 bytes and whole ones, around a tensor given whole) read back
 * equal to lmc_st_write's file of the same tensors, byte for byte; a
 * fill error ends the write with its status and leaves no file; a fill
 * giving nothing is an error. */
#include "test.h"
#include "io/safetensors.h"

#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct src {
    const float *data[3];
    int64_t pos[3];
    int step;      /* bytes per piece (0: all that is asked) */
    int fail_at;   /* > 0: the fill call that fails */
    int calls;
    bool give_none;
};

static lmc_status fill(void *user, int64_t i, void *buf, size_t want, size_t *got, lmc_err *err) {
    struct src *s = user;
    if (++s->calls == s->fail_at) return lmc_err_set(err, LMC_ERR_IO, "stage %lld went away", (long long)i);
    size_t n = s->give_none ? 0 : s->step ? (size_t)(s->calls % s->step) + 1 : want;
    if (n > want) n = want;
    memcpy(buf, (const char *)s->data[i] + s->pos[i], n);
    s->pos[i] += (int64_t)n;
    *got = n;
    return LMC_OK;
}

static char *slurp_file(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)*len + 1);
    if (b && fread(b, 1, (size_t)*len, f) != (size_t)*len) *len = -1;
    fclose(f);
    return b;
}

int main(void) {
    char dir[] = "/tmp/lmc_test_st_fill_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    float a[37], b[5], c[1001];
    uint64_t seed = 5;
    for (int i = 0; i < 37; i++) a[i] = test_rand(&seed);
    for (int i = 0; i < 5; i++) b[i] = test_rand(&seed);
    for (int i = 0; i < 1001; i++) c[i] = test_rand(&seed);
    struct lmc_st_write_tensor t[3] = {{"x.a", LMC_DTYPE_F32, 2, {37, 1}, a},
                                       {"x.b", LMC_DTYPE_F32, 1, {5}, b},
                                       {"x.c", LMC_DTYPE_F32, 2, {7, 143}, c}};
    const char *meta[] = {"format", "pt"};
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/whole.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/fill.safetensors", dir);
    lmc_err err = {0};
    CHECK(lmc_st_write(p1, t, 3, meta, 1, &err) == LMC_OK);
    for (int step = 0; step <= 7; step += 7) {
        struct src s = {{a, b, c}, {0, 0, 0}, step, 0, 0, false};
        struct lmc_st_write_tensor u[3] = {t[0], t[1], t[2]};
        u[0].data = u[2].data = NULL; /* produced by fill; x.b given whole */
        CHECK(lmc_st_write_fill(p2, u, 3, meta, 1, fill, &s, &err) == LMC_OK);
        long n1 = 0, n2 = 0;
        char *f1 = slurp_file(p1, &n1), *f2 = slurp_file(p2, &n2);
        CHECK_MSG(f1 && f2 && n1 > 0 && n1 == n2 && !memcmp(f1, f2, (size_t)n1), "step %d: %ld vs %ld bytes", step, n1, n2);
        CHECK(s.pos[0] == (int64_t)sizeof a && s.pos[2] == (int64_t)sizeof c && s.pos[1] == 0);
        CHECK(step == 0 ? s.calls == 2 : s.calls > 100);
        free(f1), free(f2);
        struct lmc_st st;
        if (lmc_st_open_file(&st, p2, &err) == LMC_OK) {
            const struct lmc_st_tensor *x = lmc_st_find(&st, "x.c");
            CHECK(x && x->numel == 1001 && !memcmp(x->data, c, sizeof c));
            lmc_st_free(&st);
        } else CHECK_MSG(0, "%s", err.msg);
    }
    /* a failing fill: its status, no file */
    unlink(p2);
    struct src s = {{a, b, c}, {0, 0, 0}, 3, 9, 0, false};
    struct lmc_st_write_tensor u[3] = {t[0], t[1], t[2]};
    u[0].data = u[2].data = NULL;
    CHECK(lmc_st_write_fill(p2, u, 3, meta, 1, fill, &s, &err) == LMC_ERR_IO && strstr(err.msg, "went away"));
    CHECK(access(p2, F_OK) != 0);
    struct src none = {{a, b, c}, {0, 0, 0}, 0, 0, 0, true};
    CHECK(lmc_st_write_fill(p2, u, 3, meta, 1, fill, &none, &err) == LMC_ERR_ARG && access(p2, F_OK) != 0);
    CHECK(lmc_st_write_fill(p2, u, 3, meta, 1, NULL, NULL, &err) == LMC_ERR_ARG);
    CHECK(lmc_st_write(p2, u, 3, meta, 1, &err) == LMC_ERR_ARG && strstr(err.msg, "data is NULL"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return test_finish("test_st_write_fill");
}
