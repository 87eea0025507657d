/* gguf_write.c — the GGUF v3 writer: metadata serialised as it is added,
 * tensor infos with offsets aligned to 32 bytes, then the data section. */
#include "io/gguf.h"
#include "core/core.h"
#include "quant/quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[LMC_GGUF_MAX_DIMS];
    const void *data;
    size_t nbytes;
};

struct lmc_gguf_writer {
    uint8_t *kv;            /* serialised key-values */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    struct wtensor *t;
    int64_t n_t, t_cap;
    bool failed;
    char why[200];
};

lmc_status lmc_gguf_writer_init(struct lmc_gguf_writer **w, lmc_err *err) {
    *w = calloc(1, sizeof **w);
    return *w ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "GGUF writer: out of memory");
}

void lmc_gguf_writer_free(struct lmc_gguf_writer *w) {
    if (!w) return;
    free(w->kv);
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w);
}

static void fail(struct lmc_gguf_writer *w, const char *why, const char *what) {
    if (!w->failed) snprintf(w->why, sizeof w->why, "%s: %s", what, why);
    w->failed = true;
}

static void put(struct lmc_gguf_writer *w, const void *p, size_t n) {
    if (w->failed) return;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *q = realloc(w->kv, cap);
        if (!q) {
            fail(w, "out of memory", "metadata");
            return;
        }
        w->kv = q;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}
static void put_u32(struct lmc_gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(struct lmc_gguf_writer *w, uint64_t v) { put(w, &v, 8); }
static void put_str(struct lmc_gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    put_u64(w, n);
    put(w, s, n);
}
static void key(struct lmc_gguf_writer *w, const char *k, enum lmc_gguf_vtype t) {
    put_str(w, k);
    put_u32(w, (uint32_t)t);
    w->n_kv++;
}

void lmc_gguf_add_u32(struct lmc_gguf_writer *w, const char *k, uint32_t v) { key(w, k, LMC_GGUF_U32); put_u32(w, v); }
void lmc_gguf_add_i32(struct lmc_gguf_writer *w, const char *k, int32_t v) { key(w, k, LMC_GGUF_I32); put(w, &v, 4); }
void lmc_gguf_add_u64(struct lmc_gguf_writer *w, const char *k, uint64_t v) { key(w, k, LMC_GGUF_U64); put_u64(w, v); }
void lmc_gguf_add_f32(struct lmc_gguf_writer *w, const char *k, float v) { key(w, k, LMC_GGUF_F32); put(w, &v, 4); }
void lmc_gguf_add_f64(struct lmc_gguf_writer *w, const char *k, double v) { key(w, k, LMC_GGUF_F64); put(w, &v, 8); }
void lmc_gguf_add_bool(struct lmc_gguf_writer *w, const char *k, bool v) {
    uint8_t b = v;
    key(w, k, LMC_GGUF_BOOL);
    put(w, &b, 1);
}
void lmc_gguf_add_str(struct lmc_gguf_writer *w, const char *k, const char *v) {
    key(w, k, LMC_GGUF_STRING);
    put_str(w, v);
}

void lmc_gguf_add_arr(struct lmc_gguf_writer *w, const char *k, enum lmc_gguf_vtype elem, const void *data,
                      uint64_t n) {
    static const int sz[LMC_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if ((unsigned)elem >= LMC_GGUF_VTYPE_COUNT || !sz[elem]) {
        fail(w, "not a numeric array type", k);
        return;
    }
    key(w, k, LMC_GGUF_ARRAY);
    put_u32(w, (uint32_t)elem);
    put_u64(w, n);
    put(w, data, (size_t)n * (size_t)sz[elem]);
}

void lmc_gguf_add_str_arr(struct lmc_gguf_writer *w, const char *k, const char *const *v, uint64_t n) {
    key(w, k, LMC_GGUF_ARRAY);
    put_u32(w, LMC_GGUF_STRING);
    put_u64(w, n);
    for (uint64_t i = 0; i < n; i++) put_str(w, v[i]);
}

void lmc_gguf_add_tensor(struct lmc_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                         const void *data) {
    if (w->failed) return;
    if (n_dims < 1 || n_dims > LMC_GGUF_MAX_DIMS) {
        fail(w, "1 to 4 dimensions allowed", name);
        return;
    }
    int64_t row, nb;
    if (!lmc_ggml_row_bytes(type, ne[0], &row)) {
        fail(w, "rows are not whole blocks of the type", name);
        return;
    }
    nb = row;
    for (int d = 1; d < n_dims; d++)
        if (!lmc_mul_ok(nb, ne[d], &nb)) {
            fail(w, "size overflows", name);
            return;
        }
    if (w->n_t == w->t_cap) {
        int64_t cap = w->t_cap ? 2 * w->t_cap : 64;
        struct wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) {
            fail(w, "out of memory", name);
            return;
        }
        w->t = t;
        w->t_cap = cap;
    }
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        fail(w, "out of memory", name);
        return;
    }
    w->n_t++;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < LMC_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = data;
    t->nbytes = (size_t)nb;
}

lmc_status lmc_gguf_write(struct lmc_gguf_writer *w, const char *path, lmc_err *err) {
    if (w->failed) return lmc_err_set(err, LMC_ERR_ARG, "%s: GGUF writer: %s", path, w->why);
    /* tensor infos after the key-values, in the same buffer */
    size_t kv_end = w->kv_len;
    uint64_t off = 0, al = LMC_GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < w->n_t; i++) {
        struct wtensor *t = &w->t[i];
        put_str(w, t->name);
        put_u32(w, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(w, (uint64_t)t->ne[d]);
        put_u32(w, (uint32_t)t->type);
        put_u64(w, off);
        off += (t->nbytes + al - 1) / al * al;
    }
    if (w->failed) {
        w->kv_len = kv_end;
        return lmc_err_set(err, LMC_ERR_OOM, "%s: GGUF writer: %s", path, w->why);
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        w->kv_len = kv_end;
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    uint32_t ver = 3;
    uint64_t nt = (uint64_t)w->n_t;
    bool ok = fwrite("GGUF", 1, 4, f) == 4 && fwrite(&ver, 4, 1, f) == 1 && fwrite(&nt, 8, 1, f) == 1 &&
              fwrite(&w->n_kv, 8, 1, f) == 1 && fwrite(w->kv, 1, w->kv_len, f) == w->kv_len;
    static const uint8_t zeros[LMC_GGUF_DEFAULT_ALIGNMENT] = {0};
    size_t pos = 24 + w->kv_len;
    size_t pad = (size_t)((al - pos % al) % al);
    ok = ok && fwrite(zeros, 1, pad, f) == pad;
    for (int64_t i = 0; i < w->n_t && ok; i++) {
        struct wtensor *t = &w->t[i];
        ok = fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
        pad = (size_t)((al - t->nbytes % al) % al);
        ok = ok && fwrite(zeros, 1, pad, f) == pad;
    }
    ok = (fclose(f) == 0) && ok;
    w->kv_len = kv_end;
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: write failed", path);
}
