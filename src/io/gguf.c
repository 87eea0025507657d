/* gguf.c — the GGUF reader: header, metadata and tensor infos parsed from a
 * file image with every count, length and offset checked against the bytes
 * that remain (a truncated or hostile file gives an error naming the key or
 * tensor, never a read past the end), typed metadata getters, and
 * llama.cpp's Q/K row permutation. */
#include "io/gguf.h"
#include "core/core.h"
#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct rd {
    const uint8_t *p;
    size_t len, pos;
    const char *label;
    lmc_err *err;
};

static lmc_status truncated(struct rd *r, const char *what) {
    return lmc_err_set(r->err, LMC_ERR_FORMAT, "%s: truncated GGUF: %s ends past the file's %zu bytes (at byte %zu)",
                       r->label, what, r->len, r->pos);
}

static lmc_status rd_bytes(struct rd *r, void *out, size_t n, const char *what) {
    if (r->len - r->pos < n) return truncated(r, what);
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return LMC_OK;
}
static lmc_status rd_u32(struct rd *r, uint32_t *v, const char *what) { return rd_bytes(r, v, 4, what); }
static lmc_status rd_u64(struct rd *r, uint64_t *v, const char *what) { return rd_bytes(r, v, 8, what); }

static lmc_status rd_str(struct rd *r, struct lmc_gguf_str *s, const char *what) {
    uint64_t n = 0;
    lmc_status st = rd_u64(r, &n, what);
    if (st) return st;
    if (n > r->len - r->pos) return truncated(r, what);
    s->s = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += (size_t)n;
    return LMC_OK;
}

static const int vsize[LMC_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *vname[LMC_GGUF_VTYPE_COUNT] = {"uint8", "int8",   "uint16", "int16",  "uint32",
                                                  "int32", "float32", "bool",  "string", "array",
                                                  "uint64", "int64",  "float64"};

const char *lmc_gguf_vtype_name(enum lmc_gguf_vtype t) {
    return (unsigned)t < LMC_GGUF_VTYPE_COUNT ? vname[t] : "unknown";
}

/* A scalar of type t at p into kv->v. */
static void scalar_at(const uint8_t *p, enum lmc_gguf_vtype t, struct lmc_gguf_kv *kv) {
    uint8_t b[8] = {0};
    memcpy(b, p, (size_t)vsize[t]);
    switch (t) {
    case LMC_GGUF_U8: kv->v.u = b[0]; break;
    case LMC_GGUF_I8: kv->v.i = (int8_t)b[0]; break;
    case LMC_GGUF_BOOL: kv->v.u = b[0]; break;
    case LMC_GGUF_U16: { uint16_t x; memcpy(&x, b, 2); kv->v.u = x; break; }
    case LMC_GGUF_I16: { int16_t x; memcpy(&x, b, 2); kv->v.i = x; break; }
    case LMC_GGUF_U32: { uint32_t x; memcpy(&x, b, 4); kv->v.u = x; break; }
    case LMC_GGUF_I32: { int32_t x; memcpy(&x, b, 4); kv->v.i = x; break; }
    case LMC_GGUF_F32: { float x; memcpy(&x, b, 4); kv->v.f = x; break; }
    case LMC_GGUF_U64: memcpy(&kv->v.u, b, 8); break;
    case LMC_GGUF_I64: memcpy(&kv->v.i, b, 8); break;
    case LMC_GGUF_F64: memcpy(&kv->v.f, b, 8); break;
    default: break;
    }
}

static lmc_status rd_kv(struct rd *r, struct lmc_gguf_kv *kv, int64_t idx) {
    struct lmc_gguf_str key;
    char what[96];
    snprintf(what, sizeof what, "metadata key %lld", (long long)idx);
    lmc_status st = rd_str(r, &key, what);
    if (st) return st;
    if (key.len == 0 || key.len > 65535 || memchr(key.s, 0, (size_t)key.len))
        return lmc_err_set(r->err, LMC_ERR_FORMAT, "%s: metadata key %lld has a bad name (length %llu)", r->label,
                           (long long)idx, (unsigned long long)key.len);
    if (!(kv->key = malloc((size_t)key.len + 1))) return lmc_err_set(r->err, LMC_ERR_OOM, "%s: out of memory", r->label);
    memcpy(kv->key, key.s, (size_t)key.len);
    kv->key[key.len] = 0;
    uint32_t t;
    if ((st = rd_u32(r, &t, kv->key))) return st;
    if (t >= LMC_GGUF_VTYPE_COUNT)
        return lmc_err_set(r->err, LMC_ERR_FORMAT, "%s: metadata '%s' has unknown value type %u", r->label, kv->key, t);
    kv->type = (enum lmc_gguf_vtype)t;
    if (t == LMC_GGUF_STRING) return rd_str(r, &kv->str, kv->key);
    if (t != LMC_GGUF_ARRAY) {
        if (r->len - r->pos < (size_t)vsize[t]) return truncated(r, kv->key);
        scalar_at(r->p + r->pos, kv->type, kv);
        if (t == LMC_GGUF_BOOL && kv->v.u > 1)
            return lmc_err_set(r->err, LMC_ERR_FORMAT, "%s: metadata '%s': bool value %llu", r->label, kv->key,
                               (unsigned long long)kv->v.u);
        r->pos += (size_t)vsize[t];
        return LMC_OK;
    }
    uint32_t et;
    if ((st = rd_u32(r, &et, kv->key)) || (st = rd_u64(r, &kv->n, kv->key))) return st;
    if (et >= LMC_GGUF_VTYPE_COUNT || et == LMC_GGUF_ARRAY)
        return lmc_err_set(r->err, LMC_ERR_UNSUPPORTED, "%s: metadata '%s': array of %s elements", r->label, kv->key,
                           et == LMC_GGUF_ARRAY ? "array" : "unknown");
    kv->arr_type = (enum lmc_gguf_vtype)et;
    if (et != LMC_GGUF_STRING) {
        if (kv->n > (r->len - r->pos) / (uint64_t)vsize[et]) return truncated(r, kv->key);
        kv->arr = r->p + r->pos;
        r->pos += (size_t)kv->n * (size_t)vsize[et];
        return LMC_OK;
    }
    /* each string takes at least its 8-byte length */
    if (kv->n > (r->len - r->pos) / 8) return truncated(r, kv->key);
    if (!(kv->strs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->strs)))
        return lmc_err_set(r->err, LMC_ERR_OOM, "%s: out of memory for '%s'", r->label, kv->key);
    for (uint64_t i = 0; i < kv->n; i++)
        if ((st = rd_str(r, &kv->strs[i], kv->key))) return st;
    return LMC_OK;
}

void lmc_gguf_free(struct lmc_gguf *g) {
    for (int64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].strs);
    }
    free(g->kv);
    for (int64_t i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    if (g->map_kind == 1 && g->image) munmap((void *)g->image, g->size);
    memset(g, 0, sizeof *g);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const struct lmc_gguf_tensor *)a)->name, ((const struct lmc_gguf_tensor *)b)->name);
}

static lmc_status parse(struct lmc_gguf *g, const void *buf, size_t len, const char *label, lmc_err *err) {
    g->image = buf;
    g->size = len;
    struct rd r = {buf, len, 0, label, err};
    char magic[4];
    lmc_status st = rd_bytes(&r, magic, 4, "the magic");
    if (st) return st;
    if (memcmp(magic, "GGUF", 4)) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not a GGUF file (no 'GGUF' magic)", label);
    uint64_t nt, nkv;
    if ((st = rd_u32(&r, &g->version, "the version"))) return st;
    if (g->version != 2 && g->version != 3)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: GGUF version %u (lmc reads 2 and 3)", label, g->version);
    if ((st = rd_u64(&r, &nt, "the tensor count")) || (st = rd_u64(&r, &nkv, "the metadata count"))) return st;
    /* a key-value takes >= 13 bytes, a tensor info >= 24: counts beyond what
     * the file can hold are refused before anything is allocated */
    if (nkv > (len - r.pos) / 13)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %llu metadata entries cannot fit in %zu bytes", label,
                           (unsigned long long)nkv, len);
    if (nt > (len - r.pos) / 24)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %llu tensors cannot fit in %zu bytes", label,
                           (unsigned long long)nt, len);
    g->kv = calloc((size_t)nkv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)nt + 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
    for (uint64_t i = 0; i < nkv; i++) {
        g->n_kv = (int64_t)i + 1;
        if ((st = rd_kv(&r, &g->kv[i], (int64_t)i))) return st;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->kv[j].key, g->kv[i].key))
                return lmc_err_set(err, LMC_ERR_FORMAT, "%s: metadata key '%s' appears twice", label, g->kv[i].key);
    }
    g->alignment = LMC_GGUF_DEFAULT_ALIGNMENT;
    bool found;
    int64_t al;
    if ((st = lmc_gguf_get_int(g, "general.alignment", &al, &found, err))) return st;
    if (found) {
        if (al <= 0 || al > (1 << 20) || (al & (al - 1)))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: general.alignment %lld is not a power of two up to 1 MiB",
                               label, (long long)al);
        g->alignment = (uint64_t)al;
    }
    for (uint64_t i = 0; i < nt; i++) {
        struct lmc_gguf_tensor *t = &g->tensors[i];
        g->n_tensors = (int64_t)i + 1;
        struct lmc_gguf_str name;
        char what[64];
        snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
        if ((st = rd_str(&r, &name, what))) return st;
        if (name.len == 0 || name.len > 1024 || memchr(name.s, 0, (size_t)name.len))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor %llu has a bad name (length %llu)", label,
                               (unsigned long long)i, (unsigned long long)name.len);
        if (!(t->name = malloc((size_t)name.len + 1))) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
        memcpy(t->name, name.s, (size_t)name.len);
        t->name[name.len] = 0;
        uint32_t nd, type;
        if ((st = rd_u32(&r, &nd, t->name))) return st;
        if (nd < 1 || nd > LMC_GGUF_MAX_DIMS)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (1 to %d allowed)", label,
                               t->name, nd, LMC_GGUF_MAX_DIMS);
        t->n_dims = (int)nd;
        int64_t numel = 1;
        for (int d = 0; d < LMC_GGUF_MAX_DIMS; d++) {
            uint64_t ne = 1;
            if (d < (int)nd && (st = rd_u64(&r, &ne, t->name))) return st;
            if (ne > ((uint64_t)1 << 48) || !lmc_mul_ok(numel, (int64_t)ne, &numel) || numel > ((int64_t)1 << 48))
                return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': dimension %d = %llu is absurd", label,
                                   t->name, d, (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        if ((st = rd_u32(&r, &type, t->name)) || (st = rd_u64(&r, &t->offset, t->name))) return st;
        int64_t be, bb, row;
        if (!lmc_ggml_type_info((int)type, &be, &bb))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has ggml type %u, which lmc does not know",
                               label, t->name, type);
        t->type = (int)type;
        if (!lmc_ggml_row_bytes(t->type, t->ne[0], &row))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': %lld elements per row are not whole %s blocks of %lld",
                               label, t->name, (long long)t->ne[0], lmc_ggml_type_name(t->type), (long long)be);
        int64_t nb = row;
        for (int d = 1; d < LMC_GGUF_MAX_DIMS; d++)
            if (!lmc_mul_ok(nb, t->ne[d], &nb))
                return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': size overflows", label, t->name);
        t->nbytes = (size_t)nb;
        if (t->offset % g->alignment)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': offset %llu is not a multiple of the alignment %llu",
                               label, t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
    }
    size_t ds = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (nt > 0 && ds > len)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: truncated GGUF: the tensor data section starts past the end", label);
    g->data_start = ds;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct lmc_gguf_tensor *t = &g->tensors[i];
        if (t->offset > len - ds || t->nbytes > len - ds - t->offset)
            return lmc_err_set(err, LMC_ERR_FORMAT,
                               "%s: tensor '%s': bytes [%llu, %llu) of the data section run past the end of the file "
                               "(%zu data bytes)", label, t->name, (unsigned long long)t->offset,
                               (unsigned long long)(t->offset + t->nbytes), len - ds);
        t->data = g->image + ds + t->offset;
    }
    qsort(g->tensors, (size_t)g->n_tensors, sizeof *g->tensors, cmp_name);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, g->tensors[i - 1].name))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' appears twice", label, g->tensors[i].name);
    return LMC_OK;
}

lmc_status lmc_gguf_parse(struct lmc_gguf *g, const void *buf, size_t len, const char *label, lmc_err *err) {
    memset(g, 0, sizeof *g);
    lmc_status st = parse(g, buf, len, label, err);
    if (st) lmc_gguf_free(g);
    return st;
}

lmc_status lmc_gguf_open(struct lmc_gguf *g, const char *path, lmc_err *err) {
    memset(g, 0, sizeof *g);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size <= 0) {
        close(fd);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: empty or unreadable file", path);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    lmc_status st = lmc_gguf_parse(g, m, (size_t)sb.st_size, path, err);
    if (st) {
        munmap(m, (size_t)sb.st_size);
        return st;
    }
    g->map_kind = 1;
    return LMC_OK;
}

bool lmc_gguf_is_file(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

const struct lmc_gguf_kv *lmc_gguf_find(const struct lmc_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const struct lmc_gguf_tensor *lmc_gguf_find_tensor(const struct lmc_gguf *g, const char *name) {
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        int c = strcmp(g->tensors[mid].name, name);
        if (!c) return &g->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static lmc_status lookup(const struct lmc_gguf *g, const char *key, const struct lmc_gguf_kv **kv, bool *found,
                         lmc_err *err) {
    *kv = lmc_gguf_find(g, key);
    if (found) *found = *kv != NULL;
    if (!*kv && !found) return lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata '%s' is missing", key);
    return LMC_OK;
}

static lmc_status wrong_type(const struct lmc_gguf_kv *kv, const char *want, lmc_err *err) {
    return lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata '%s': expected %s, found %s", kv->key, want,
                       lmc_gguf_vtype_name(kv->type));
}

lmc_status lmc_gguf_get_int(const struct lmc_gguf *g, const char *key, int64_t *out, bool *found, lmc_err *err) {
    const struct lmc_gguf_kv *kv;
    lmc_status st = lookup(g, key, &kv, found, err);
    if (st || !kv) return st;
    switch (kv->type) {
    case LMC_GGUF_I8: case LMC_GGUF_I16: case LMC_GGUF_I32: case LMC_GGUF_I64: *out = kv->v.i; return LMC_OK;
    case LMC_GGUF_U8: case LMC_GGUF_U16: case LMC_GGUF_U32: *out = (int64_t)kv->v.u; return LMC_OK;
    case LMC_GGUF_U64:
        if (kv->v.u > (uint64_t)INT64_MAX)
            return lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata '%s': %llu is out of range", key,
                               (unsigned long long)kv->v.u);
        *out = (int64_t)kv->v.u;
        return LMC_OK;
    default: return wrong_type(kv, "an integer", err);
    }
}

lmc_status lmc_gguf_get_float(const struct lmc_gguf *g, const char *key, double *out, bool *found, lmc_err *err) {
    const struct lmc_gguf_kv *kv;
    lmc_status st = lookup(g, key, &kv, found, err);
    if (st || !kv) return st;
    if (kv->type == LMC_GGUF_F32 || kv->type == LMC_GGUF_F64) {
        *out = kv->v.f;
        return LMC_OK;
    }
    int64_t i;
    if (kv->type != LMC_GGUF_STRING && kv->type != LMC_GGUF_ARRAY && kv->type != LMC_GGUF_BOOL &&
        !lmc_gguf_get_int(g, key, &i, NULL, err)) {
        *out = (double)i;
        return LMC_OK;
    }
    return wrong_type(kv, "a number", err);
}

lmc_status lmc_gguf_get_bool(const struct lmc_gguf *g, const char *key, bool *out, bool *found, lmc_err *err) {
    const struct lmc_gguf_kv *kv;
    lmc_status st = lookup(g, key, &kv, found, err);
    if (st || !kv) return st;
    if (kv->type != LMC_GGUF_BOOL) return wrong_type(kv, "a bool", err);
    *out = kv->v.u != 0;
    return LMC_OK;
}

lmc_status lmc_gguf_get_str(const struct lmc_gguf *g, const char *key, char **out, bool *found, lmc_err *err) {
    const struct lmc_gguf_kv *kv;
    *out = NULL;
    lmc_status st = lookup(g, key, &kv, found, err);
    if (st || !kv) return st;
    if (kv->type != LMC_GGUF_STRING) return wrong_type(kv, "a string", err);
    if (!(*out = malloc((size_t)kv->str.len + 1))) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    memcpy(*out, kv->str.s, (size_t)kv->str.len);
    (*out)[kv->str.len] = 0;
    return LMC_OK;
}

lmc_status lmc_gguf_get_arr(const struct lmc_gguf *g, const char *key, enum lmc_gguf_vtype elem,
                            const struct lmc_gguf_kv **out, bool *found, lmc_err *err) {
    lmc_status st = lookup(g, key, out, found, err);
    if (st || !*out) return st;
    if ((*out)->type != LMC_GGUF_ARRAY || (*out)->arr_type != elem) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", lmc_gguf_vtype_name(elem));
        if ((*out)->type == LMC_GGUF_ARRAY)
            return lmc_err_set(err, LMC_ERR_FORMAT, "GGUF metadata '%s': expected %s, found an array of %s", key, want,
                               lmc_gguf_vtype_name((*out)->arr_type));
        return wrong_type(*out, want, err);
    }
    return LMC_OK;
}

double lmc_gguf_arr_f(const struct lmc_gguf_kv *kv, uint64_t i) {
    struct lmc_gguf_kv tmp = {0};
    scalar_at(kv->arr + i * (uint64_t)vsize[kv->arr_type], kv->arr_type, &tmp);
    if (kv->arr_type == LMC_GGUF_F32 || kv->arr_type == LMC_GGUF_F64) return tmp.v.f;
    return (double)lmc_gguf_arr_i(kv, i);
}

int64_t lmc_gguf_arr_i(const struct lmc_gguf_kv *kv, uint64_t i) {
    struct lmc_gguf_kv tmp = {0};
    scalar_at(kv->arr + i * (uint64_t)vsize[kv->arr_type], kv->arr_type, &tmp);
    switch (kv->arr_type) {
    case LMC_GGUF_I8: case LMC_GGUF_I16: case LMC_GGUF_I32: case LMC_GGUF_I64: return tmp.v.i;
    case LMC_GGUF_F32: case LMC_GGUF_F64: /* truncated; NaN and out-of-range values saturate */
        return tmp.v.f != tmp.v.f ? 0 : tmp.v.f >= 9.2e18 ? INT64_MAX : tmp.v.f <= -9.2e18 ? INT64_MIN : (int64_t)tmp.v.f;
    default: return (int64_t)tmp.v.u;
    }
}

void lmc_gguf_permute_qk(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int64_t n_head,
                         bool inverse) {
    LMC_ASSERT(n_head > 0 && n_rows % (2 * n_head) == 0);
    int64_t hd = n_rows / n_head, half = hd / 2;
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < half; j++) {
                int64_t hf = h * hd + i * half + j, gg = h * hd + 2 * j + i;
                int64_t from = inverse ? gg : hf, to = inverse ? hf : gg;
                memcpy(d + (size_t)to * row_bytes, s + (size_t)from * row_bytes, row_bytes);
            }
}
