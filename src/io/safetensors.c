/* safetensors.c — reading safetensors: header parsing and validation
 * (lmc_st_parse), memory-mapping one file (lmc_st_open_file), sharded sets
 * named by model.safetensors.index.json (lmc_st_open_dir), lookup by name
 * and freeing. Every problem in a file is reported with the file's name, the
 * tensor or field concerned and what was expected. The writer is in
 * safetensors_write.c. */
#include "io/safetensors.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include "io/json_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define ST_MAX_INDEX ((size_t)64 * 1024 * 1024)
/* Largest integer a JSON number (an IEEE double) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

enum { ST_MAP_BORROWED = 0, ST_MAP_MMAP = 1, ST_MAP_MALLOC = 2 };

/* ---- small helpers -------------------------------------------------------- */

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Writes "[a, b, c]" of a shape into buf for messages. */
static void st_shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t used = 0;
    buf[0] = 0;
    int n = snprintf(buf, cap, "[");
    if (n < 0 || (size_t)n >= cap) return;
    used = (size_t)n;
    for (int i = 0; i < ndim; i++) {
        n = snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (n < 0 || (size_t)n >= cap - used) return;
        used += (size_t)n;
    }
    snprintf(buf + used, cap - used, "]");
}

/* Checks that a JSON number is an integer in [0, 2^53]; stores it in *out. */
static bool st_json_uint(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > ST_MAX_JSON_INT || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

/* Growable tensor / metadata lists while parsing. */
static lmc_status st_reserve_tensors(struct lmc_st *st, int64_t extra, const char *label, lmc_err *err) {
    int64_t want;
    if (!lmc_add_ok(st->n_tensors, extra, &want) || want > INT64_MAX / (int64_t)sizeof(struct lmc_st_tensor))
        return lmc_err_set(err, LMC_ERR_OOM, "%s: too many tensors", label);
    if (want == 0) return LMC_OK;
    struct lmc_st_tensor *t = realloc(st->tensors, (size_t)want * sizeof *t);
    if (!t) return lmc_err_set(err, LMC_ERR_OOM, "%s: cannot allocate %lld tensor records", label, (long long)want);
    memset(t + st->n_tensors, 0, (size_t)extra * sizeof *t);
    st->tensors = t;
    return LMC_OK;
}

static lmc_status st_add_file(struct lmc_st *st, const char *path, void *map, size_t size, int kind,
                              lmc_err *err) {
    if (st->n_files == INT_MAX) return lmc_err_set(err, LMC_ERR_OOM, "%s: too many files", path);
    struct lmc_st_file *f = realloc(st->files, ((size_t)st->n_files + 1) * sizeof *f);
    if (!f) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    st->files = f;
    char *p = st_strdup(path);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    f[st->n_files].path = p;
    f[st->n_files].map = map;
    f[st->n_files].size = size;
    f[st->n_files].map_kind = kind;
    st->n_files++;
    return LMC_OK;
}

static void st_unmap(void *map, size_t size, int kind) {
    if (!map) return;
    if (kind == ST_MAP_MMAP) munmap(map, size);
    else if (kind == ST_MAP_MALLOC) free(map);
}

void lmc_st_free(struct lmc_st *st) {
    if (!st) return;
    for (int64_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        st_unmap(st->files[i].map, st->files[i].size, st->files[i].map_kind);
        free(st->files[i].path);
    }
    free(st->files);
    for (int i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->meta);
    memset(st, 0, sizeof *st);
}

/* ---- header parsing -------------------------------------------------------- */

static lmc_status st_parse_metadata(struct lmc_st *st, const cJSON *m, const char *label, lmc_err *err) {
    if (!cJSON_IsObject(m))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: '__metadata__' is %s, expected an object of strings",
                           label, lmc_json_kind(m));
    int n = 0;
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->string)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: '__metadata__' entry '%s' is %s, expected a string",
                               label, e->string ? e->string : "?", lmc_json_kind(e));
        if (n == INT_MAX / 2 - st->n_meta) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: too much metadata", label);
        n++;
    }
    if (n == 0) return LMC_OK;
    char **kv = realloc(st->meta, 2 * ((size_t)st->n_meta + (size_t)n) * sizeof *kv);
    if (!kv) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory reading '__metadata__'", label);
    st->meta = kv;
    for (const cJSON *e = m->child; e; e = e->next) {
        char *k = st_strdup(e->string), *v = st_strdup(e->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory reading '__metadata__'", label);
        }
        kv[2 * st->n_meta] = k;
        kv[2 * st->n_meta + 1] = v;
        st->n_meta++;
    }
    return LMC_OK;
}

/* Fills t (name already set) from its header entry e; data_size is the
 * number of bytes after the header. */
static lmc_status st_parse_entry(struct lmc_st_tensor *t, const cJSON *e, const uint8_t *data,
                                 uint64_t data_size, const char *label, lmc_err *err) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: tensor '%s' is %s, expected an object with dtype, shape, data_offsets",
                           label, nm, lmc_json_kind(e));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': field 'dtype' is %s, expected a string like \"F32\"",
                           label, nm, lmc_json_kind(dt));
    int d = lmc_dtype_parse(dt->valuestring);
    if (d < 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "%s: tensor '%s': dtype '%.64s' is not supported (expected F32, F16, BF16, F64, "
                           "I64, I32, I16, I8, U8 or BOOL)", label, nm, dt->valuestring);
    t->dtype = (enum lmc_dtype)d;

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(sh))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': field 'shape' is %s, expected an array of integers",
                           label, nm, lmc_json_kind(sh));
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > LMC_ST_MAX_DIMS)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s': field 'shape' has %d dimensions, at most %d supported",
                           label, nm, ndim, LMC_ST_MAX_DIMS);
    t->ndim = ndim;
    int64_t numel = 1;
    int i = 0;
    for (const cJSON *v = sh->child; v; v = v->next, i++) {
        if (!st_json_uint(v, &t->shape[i]))
        {
            if (cJSON_IsNumber(v))
                return lmc_err_set(err, LMC_ERR_FORMAT,
                                   "%s: tensor '%s': field 'shape' entry %d is %.17g, expected an integer in [0, 2^53]",
                                   label, nm, i, v->valuedouble);
            return lmc_err_set(err, LMC_ERR_FORMAT,
                               "%s: tensor '%s': field 'shape' entry %d is %s, expected a non-negative integer",
                               label, nm, i, lmc_json_kind(v));
        }
        if (!lmc_mul_ok(numel, t->shape[i], &numel)) {
            char s[256];
            st_shape_str(s, sizeof s, t->shape, i + 1);
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': field 'shape' %s%s overflows (element count above 2^63)",
                               label, nm, s, i + 1 < ndim ? "..." : "");
        }
    }
    t->numel = numel;
    int64_t need;
    if (!lmc_mul_ok(numel, lmc_dtype_size(t->dtype), &need)) {
        char s[256];
        st_shape_str(s, sizeof s, t->shape, ndim);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': field 'shape' %s of %s overflows the byte size",
                           label, nm, s, lmc_dtype_name(t->dtype));
    }

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    int64_t b = 0, en = 0;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !st_json_uint(off->child, &b) ||
        !st_json_uint(off->child->next, &en))
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: tensor '%s': field 'data_offsets' must be an array of two non-negative integers [begin, end]",
                           label, nm);
    if (en < b)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] end before begin",
                           label, nm, (long long)b, (long long)en);
    if ((uint64_t)en > data_size)
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%lld, %lld] run past the end of the data (%llu bytes)",
                           label, nm, (long long)b, (long long)en, (unsigned long long)data_size);
    if (en - b != need) {
        char s[256];
        st_shape_str(s, sizeof s, t->shape, ndim);
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes but shape %s of %s needs %lld",
                           label, nm, (long long)b, (long long)en, (long long)(en - b), s,
                           lmc_dtype_name(t->dtype), (long long)need);
    }
    t->data = data + b;
    t->nbytes = (size_t)need;
    return LMC_OK;
}

static int st_cmp_offset(const void *a, const void *b) {
    const struct lmc_st_tensor *x = *(const struct lmc_st_tensor *const *)a;
    const struct lmc_st_tensor *y = *(const struct lmc_st_tensor *const *)b;
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp(((const struct lmc_st_tensor *)a)->name, ((const struct lmc_st_tensor *)b)->name);
}

/* Checks that the tensors [first, n) (all from one file) do not overlap. */
static lmc_status st_check_overlap(struct lmc_st *st, int64_t first, const uint8_t *data, const char *label,
                                   lmc_err *err) {
    int64_t n = st->n_tensors - first;
    if (n < 2) return LMC_OK;
    const struct lmc_st_tensor **order = malloc((size_t)n * sizeof *order);
    if (!order) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory checking offsets", label);
    for (int64_t i = 0; i < n; i++) order[i] = &st->tensors[first + i];
    qsort(order, (size_t)n, sizeof *order, st_cmp_offset);
    /* sweep in offset order, remembering the tensor that reaches furthest */
    lmc_status s = LMC_OK;
    const struct lmc_st_tensor *far = NULL;
    for (int64_t i = 0; i < n; i++) {
        const struct lmc_st_tensor *q = order[i];
        if (q->nbytes == 0) continue;
        const uint8_t *qb = q->data;
        if (far && qb < (const uint8_t *)far->data + far->nbytes) {
            const uint8_t *fb = far->data;
            s = lmc_err_set(err, LMC_ERR_FORMAT,
                            "%s: tensor '%s' (data_offsets [%lld, %lld]) overlaps tensor '%s' (data_offsets [%lld, %lld])",
                            label, q->name, (long long)(qb - data), (long long)(qb - data + (int64_t)q->nbytes),
                            far->name, (long long)(fb - data), (long long)(fb - data + (int64_t)far->nbytes));
            break;
        }
        far = q; /* sorted by begin and no overlap so far: q ends furthest */
    }
    free(order);
    return s;
}

/* Parses one file image and appends its tensors (file index `fi`) to st. */
static lmc_status st_parse_into(struct lmc_st *st, const void *buf, size_t len, const char *label, int fi,
                                lmc_err *err) {
    const uint8_t *b = buf;
    if (len < 8)
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: file is %zu bytes, too short for a safetensors file (expected an 8-byte header length)",
                           label, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > ST_MAX_HEADER)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: header length %llu is larger than the 100 MB allowed",
                           label, (unsigned long long)n);
    if (n > len - 8)
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: header length %llu is larger than the file's %zu bytes after the length field",
                           label, (unsigned long long)n, len - 8);
    const char *hdr = (const char *)b + 8;
    const uint8_t *data = b + 8 + n;
    uint64_t data_size = len - 8 - n;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (!root) {
        long long at = end && end >= hdr && end <= hdr + n ? (long long)(end - hdr) : -1;
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: header is not valid JSON (error near byte %lld of %llu)",
                           label, at, (unsigned long long)n);
    }
    lmc_status s = LMC_OK;
    for (const char *p = end; p < hdr + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: header has non-space bytes after the JSON object (at byte %lld)",
                            label, (long long)(p - hdr));
            goto out;
        }
    }
    if (!cJSON_IsObject(root)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: header is %s, expected a JSON object {name: {dtype, shape, data_offsets}}",
                        label, lmc_json_kind(root));
        goto out;
    }
    int64_t count = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (!e->string || strcmp(e->string, "__metadata__") != 0) count++;
    int64_t first = st->n_tensors;
    if ((s = st_reserve_tensors(st, count, label, err)) != LMC_OK) goto out;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: header entry without a name", label);
            goto out;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if ((s = st_parse_metadata(st, e, label, err)) != LMC_OK) goto out;
            continue;
        }
        struct lmc_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        if (!(t->name = st_strdup(e->string))) {
            s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
            goto out;
        }
        t->file = fi;
        st->n_tensors++; /* owned by st from here, freed by lmc_st_free */
        if ((s = st_parse_entry(t, e, data, data_size, label, err)) != LMC_OK) goto out;
    }
    s = st_check_overlap(st, first, data, label, err);
out:
    cJSON_Delete(root);
    return s;
}

/* Sorts all tensors by name and rejects duplicates (naming both files). */
static lmc_status st_sort_names(struct lmc_st *st, lmc_err *err) {
    if (st->n_tensors > 1) qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, st_cmp_name);
    for (int64_t i = 1; i < st->n_tensors; i++) {
        const struct lmc_st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
        if (strcmp(a->name, b->name) == 0) {
            if (a->file == b->file)
                return lmc_err_set(err, LMC_ERR_FORMAT, "%s: duplicate tensor name '%s' in the header",
                                   st->files[a->file].path, a->name);
            return lmc_err_set(err, LMC_ERR_FORMAT, "tensor '%s' appears in both %s and %s (names must be unique)",
                               a->name, st->files[a->file].path, st->files[b->file].path);
        }
    }
    return LMC_OK;
}

lmc_status lmc_st_parse(struct lmc_st *st, const void *buf, size_t len, const char *label, lmc_err *err) {
    memset(st, 0, sizeof *st);
    if (!label) label = "safetensors";
    if (!buf && len) return lmc_err_set(err, LMC_ERR_ARG, "%s: NULL buffer", label);
    lmc_status s = st_add_file(st, label, (void *)buf, len, ST_MAP_BORROWED, err);
    if (s == LMC_OK) s = st_parse_into(st, buf, len, label, 0, err);
    if (s == LMC_OK) s = st_sort_names(st, err);
    if (s != LMC_OK) lmc_st_free(st);
    return s;
}

/* ---- files ----------------------------------------------------------------- */

/* Maps path read-only and appends it to st->files; parses it as file `fi`. */
static lmc_status st_map_and_parse(struct lmc_st *st, const char *path, lmc_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lmc_err_set(err, LMC_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return lmc_err_set(err, LMC_ERR_IO, "%s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    int kind = ST_MAP_BORROWED;
    if (size >= 8) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return lmc_err_set(err, LMC_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(errno));
        }
        kind = ST_MAP_MMAP;
    }
    close(fd);
    lmc_status s = st_add_file(st, path, map, size, kind, err);
    if (s != LMC_OK) {
        st_unmap(map, size, kind);
        return s;
    }
    return st_parse_into(st, map, size, path, st->n_files - 1, err);
}

lmc_status lmc_st_open_file(struct lmc_st *st, const char *path, lmc_err *err) {
    memset(st, 0, sizeof *st);
    lmc_status s = st_map_and_parse(st, path, err);
    if (s == LMC_OK) s = st_sort_names(st, err);
    if (s != LMC_OK) lmc_st_free(st);
    return s;
}

static int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Index of name in the sorted array of shard names (must be present). */
static int st_shard_index(const char *const *names, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(names[mid], name);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static lmc_status st_open_index(struct lmc_st *st, const char *dir, const char *ipath, lmc_err *err) {
    char *text = NULL;
    size_t len = 0;
    lmc_status s = lmc_file_read(ipath, ST_MAX_INDEX, &text, &len, err);
    if (s != LMC_OK) return s;
    const char **shards = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: not valid JSON (error near byte %lld)", ipath,
                        end ? (long long)(end - text) : -1LL);
        goto out;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field 'weight_map' is %s, expected an object {tensor: file}",
                        ipath, cJSON_IsObject(root) ? lmc_json_kind(wm) : "missing (the file is not an object)");
        goto out;
    }
    int n_entries = 0;
    for (const cJSON *e = wm->child; e; e = e->next) {
        const char *f = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!e->string || !f) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: weight_map entry '%s' is %s, expected a file name string",
                            ipath, e->string ? e->string : "?", lmc_json_kind(e));
            goto out;
        }
        if (!f[0] || strchr(f, '/') || strchr(f, '\\') || strstr(f, "..")) {
            s = lmc_err_set(err, LMC_ERR_FORMAT,
                            "%s: weight_map entry '%s' names file '%.200s'; expected a plain file name in the same "
                            "folder (no '/', '\\' or '..')", ipath, e->string, f);
            goto out;
        }
        n_entries++;
    }
    if (n_entries == 0) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: 'weight_map' is empty, expected at least one tensor", ipath);
        goto out;
    }
    shards = malloc((size_t)n_entries * sizeof *shards);
    if (!shards) {
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", ipath);
        goto out;
    }
    int n_sh = 0;
    for (const cJSON *e = wm->child; e; e = e->next) shards[n_sh++] = e->valuestring;
    qsort(shards, (size_t)n_sh, sizeof *shards, st_cmp_str);
    int u = 0;
    for (int i = 0; i < n_sh; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_sh = u;
    /* files[i] is shards[i] (sorted) */
    for (int i = 0; i < n_sh; i++) {
        char path[4096];
        if (!lmc_path_join(path, sizeof path, dir, shards[i])) {
            s = lmc_err_set(err, LMC_ERR_ARG, "%s: path of shard '%.200s' is too long", ipath, shards[i]);
            goto out;
        }
        if ((s = st_map_and_parse(st, path, err)) != LMC_OK) {
            lmc_err_prefix(err, "%s: shard '%.200s': ", ipath, shards[i]);
            goto out;
        }
    }
    if ((s = st_sort_names(st, err)) != LMC_OK) goto out;
    for (const cJSON *e = wm->child; e; e = e->next) {
        int want = st_shard_index(shards, n_sh, e->valuestring);
        LMC_ASSERT(want >= 0);
        const struct lmc_st_tensor *t = lmc_st_find(st, e->string);
        if (!t) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' is mapped to '%s', but that file has no such tensor",
                            ipath, e->string, e->valuestring);
            goto out;
        }
        if (t->file != want) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' is mapped to '%s', but it is in %s",
                            ipath, e->string, e->valuestring, st->files[t->file].path);
            goto out;
        }
    }
out:
    free(shards);
    cJSON_Delete(root);
    free(text);
    return s;
}

lmc_status lmc_st_open_dir(struct lmc_st *st, const char *dir, lmc_err *err) {
    memset(st, 0, sizeof *st);
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, ST_SINGLE_NAME))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: folder path too long", dir);
    lmc_status s;
    if (lmc_file_exists(path)) {
        s = lmc_st_open_file(st, path, err);
        return s;
    }
    if (!lmc_path_join(path, sizeof path, dir, ST_INDEX_NAME))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: folder path too long", dir);
    if (!lmc_file_exists(path)) {
        struct stat sb;
        if (stat(dir, &sb) != 0)
            return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open folder: %s (looking for %s or %s)", dir,
                               strerror(errno), ST_SINGLE_NAME, ST_INDEX_NAME);
        if (!S_ISDIR(sb.st_mode))
            return lmc_err_set(err, LMC_ERR_IO, "%s: is not a folder (expected a folder holding %s or %s)", dir,
                               ST_SINGLE_NAME, ST_INDEX_NAME);
        return lmc_err_set(err, LMC_ERR_IO, "%s: folder has neither %s nor %s", dir, ST_SINGLE_NAME, ST_INDEX_NAME);
    }
    s = st_open_index(st, dir, path, err);
    if (s != LMC_OK) lmc_st_free(st);
    return s;
}

const struct lmc_st_tensor *lmc_st_find(const struct lmc_st *st, const char *name) {
    int64_t lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *lmc_st_meta_get(const struct lmc_st *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}
