/* safetensors_write.c — writing a safetensors file: the JSON header (padded
 * with spaces to a multiple of 8 bytes so every tensor starts 8-aligned when
 * the data are) followed by the tensors' bytes, contiguous in the order
 * given. Written to <path>.tmp, then renamed over path. */
#include "io/safetensors.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A growable text buffer for the header. */
struct st_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_put(struct st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) { b->oom = true; return; }
            cap *= 2;
        }
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = true; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(struct st_buf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_int(struct st_buf *b, long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    sb_put(b, tmp, (size_t)n);
}

/* Appends s as a JSON string literal (escaping quotes, backslashes and
 * control characters; other bytes pass through as UTF-8). */
static void sb_json_str(struct st_buf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            sb_put(b, e, 2);
        } else if (*c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", *c);
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int sw_cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Validates the tensor list; fills sizes[i] with each tensor's byte size. */
static lmc_status sw_check(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                           const char *const *meta_kv, int n_meta, bool fill, int64_t *sizes, lmc_err *err) {
    for (int64_t i = 0; i < n; i++) {
        const char *nm = t[i].name;
        if (!nm || !nm[0] || strcmp(nm, "__metadata__") == 0)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: tensor %lld has an empty or reserved name", path, (long long)i);
        int es = lmc_dtype_size(t[i].dtype);
        if (es == 0)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: tensor '%s': invalid dtype %d", path, nm, (int)t[i].dtype);
        if (t[i].ndim < 0 || t[i].ndim > LMC_ST_MAX_DIMS)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: tensor '%s': ndim %d, expected 0..%d", path, nm, t[i].ndim,
                               LMC_ST_MAX_DIMS);
        int64_t bytes = es;
        for (int d = 0; d < t[i].ndim; d++)
            if (!lmc_mul_ok(bytes, t[i].shape[d], &bytes))
                return lmc_err_set(err, LMC_ERR_ARG, "%s: tensor '%s': shape entry %d (%lld) is negative or overflows",
                                   path, nm, d, (long long)t[i].shape[d]);
        if (bytes > 0 && !t[i].data && !fill)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: tensor '%s': data is NULL", path, nm);
        sizes[i] = bytes;
    }
    for (int i = 0; i < 2 * n_meta; i++)
        if (!meta_kv || !meta_kv[i])
            return lmc_err_set(err, LMC_ERR_ARG, "%s: metadata entry %d is NULL", path, i / 2);
    if (n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
        for (int64_t i = 0; i < n; i++) names[i] = t[i].name;
        qsort(names, (size_t)n, sizeof *names, sw_cmp_name);
        for (int64_t i = 1; i < n; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                lmc_status s = lmc_err_set(err, LMC_ERR_ARG, "%s: tensor name '%s' given twice", path, names[i]);
                free(names);
                return s;
            }
        }
        free(names);
    }
    return LMC_OK;
}

/* Builds the padded JSON header into b. */
static void sw_header(struct st_buf *b, const struct lmc_st_write_tensor *t, int64_t n, const int64_t *sizes,
                      const char *const *meta_kv, int n_meta) {
    sb_str(b, "{");
    bool first = true;
    if (n_meta > 0) {
        sb_str(b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(b, ",");
            sb_json_str(b, meta_kv[2 * i]);
            sb_str(b, ":");
            sb_json_str(b, meta_kv[2 * i + 1]);
        }
        sb_str(b, "}");
        first = false;
    }
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!first) sb_str(b, ",");
        first = false;
        sb_json_str(b, t[i].name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, lmc_dtype_name(t[i].dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d) sb_str(b, ",");
            sb_int(b, t[i].shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_int(b, off);
        sb_str(b, ",");
        off += sizes[i];
        sb_int(b, off);
        sb_str(b, "]}");
    }
    sb_str(b, "}");
    while (!b->oom && b->len % 8 != 0) sb_str(b, " ");
}

static lmc_status st_write(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                           const char *const *meta_kv, int n_meta, lmc_st_fill_fn fill, void *user, lmc_err *err);

lmc_status lmc_st_write(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                        const char *const *meta_kv, int n_meta, lmc_err *err) {
    return st_write(path, t, n, meta_kv, n_meta, NULL, NULL, err);
}

lmc_status lmc_st_write_fill(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                             const char *const *meta_kv, int n_meta, lmc_st_fill_fn fill, void *user, lmc_err *err) {
    if (!fill) return lmc_err_set(err, LMC_ERR_ARG, "%s: no fill function", path ? path : "lmc_st_write_fill");
    return st_write(path, t, n, meta_kv, n_meta, fill, user, err);
}

/* Tensor i's `size` bytes from fill, in pieces through buf (cap bytes). */
static bool sw_fill(FILE *f, int64_t i, int64_t size, lmc_st_fill_fn fill, void *user, unsigned char *buf, size_t cap,
                    lmc_status *st, lmc_err *err) {
    for (int64_t done = 0; done < size;) {
        size_t want = (size_t)LMC_MIN((int64_t)cap, size - done), got = 0;
        if ((*st = fill(user, i, buf, want, &got, err))) return false;
        if (got == 0 || got > want) {
            *st = lmc_err_set(err, LMC_ERR_ARG, "tensor %lld: its fill gave %zu of %zu bytes", (long long)i, got, want);
            return false;
        }
        if (fwrite(buf, 1, got, f) != got) return false;
        done += (int64_t)got;
    }
    return true;
}

static lmc_status st_write(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                           const char *const *meta_kv, int n_meta, lmc_st_fill_fn fill, void *user, lmc_err *err) {
    if (!path) return lmc_err_set(err, LMC_ERR_ARG, "lmc_st_write: path is NULL");
    if (n < 0 || (n > 0 && !t) || n_meta < 0)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: bad tensor or metadata count", path);
    int64_t *sizes = malloc((size_t)(n > 0 ? n : 1) * sizeof *sizes);
    if (!sizes) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    lmc_status s = sw_check(path, t, n, meta_kv, n_meta, fill != NULL, sizes, err);
    if (s != LMC_OK) {
        free(sizes);
        return s;
    }
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!lmc_add_ok(total, sizes[i], &total)) {
            free(sizes);
            return lmc_err_set(err, LMC_ERR_ARG, "%s: total data size overflows", path);
        }
    }
    struct st_buf b = {0};
    sw_header(&b, t, n, sizes, meta_kv, n_meta);
    if (b.oom) {
        free(b.p);
        free(sizes);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory building the header", path);
    }

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        free(b.p);
        free(sizes);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    uint64_t hl = b.len;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(b.p, 1, b.len, f) == b.len;
    size_t cap = (size_t)1 << 22; /* fill's pieces */
    unsigned char *piece = fill ? malloc(cap) : NULL;
    if (fill && !piece) ok = false, errno = ENOMEM;
    lmc_status fs = LMC_OK;
    for (int64_t i = 0; ok && i < n; i++)
        if (sizes[i] > 0)
            ok = t[i].data ? fwrite(t[i].data, 1, (size_t)sizes[i], f) == (size_t)sizes[i]
                           : sw_fill(f, i, sizes[i], fill, user, piece, cap, &fs, err);
    free(piece);
    int e = errno;
    if (fflush(f) != 0 && ok) { ok = false; e = errno; }
    if (ok && fsync(fileno(f)) != 0 && errno != EINVAL) { ok = false; e = errno; }
    if (fclose(f) != 0 && ok) { ok = false; e = errno; }
    if (!ok) {
        unlink(tmp);
        s = fs ? fs : lmc_err_set(err, LMC_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
        goto out;
    }
out:
    free(tmp);
    free(b.p);
    free(sizes);
    return s;
}
