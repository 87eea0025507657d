/* zero_ckpt.c — sharded ZeRO checkpoints: one file per rank holding its
 * shard of parameters and AdamW moments, one JSON manifest written last
 * by rank 0, consolidation of all shards into plain arrays, and loading
 * into any world size (another world's shards are consolidated, then
 * split again).
 *
 * Shard file: a 80-byte header (magic "LMCZSHD1", version, rank, world,
 * stage, step, numel, units, shard numel, layout hash, checksum of the
 * data; little-endian), then the shard's parameters, m and v (float32,
 * shard numel each, padding included). Every field is checked on load;
 * a wrong size, magic, layout or checksum is refused naming the file. */
#include "dist/zero_internal.h"
#include "core/core.h"
#include "io/json_util.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARD_MAGIC "LMCZSHD1"
#define MANIFEST "zero-manifest.json"

struct shard_header {
    char magic[8];
    uint32_t version, rank, world, stage;
    int64_t step, numel, n_units, shard_numel;
    uint64_t layout_hash, checksum;
};

#define CHECKSUM_SEED 1469598103934665603ull
/* FNV-style over 8-byte words, then the tail bytes; checksum_add over
 * consecutive pieces whose lengths (all but the last) are multiples of 8
 * equals one call over their concatenation. */
static uint64_t checksum_add(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 1099511628211ull;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
static uint64_t checksum(const void *data, size_t n) { return checksum_add(CHECKSUM_SEED, data, n); }

static void shard_name(char *buf, size_t cap, int64_t step, int rank) {
    snprintf(buf, cap, "zero-step%08" PRId64 "-rank%05d.bin", step, rank);
}

/* Unit part lengths and shard offsets for world W. */
static lmc_status layout_for(const int64_t *unit_n, int n_units, int W, int64_t *s, int64_t *sh_off,
                             int64_t *S, lmc_err *err) {
    *S = 0;
    for (int u = 0; u < n_units; u++) {
        if (unit_n[u] <= 0) return lmc_err_set(err, LMC_ERR_FORMAT, "zero checkpoint: unit %d is empty", u);
        s[u] = lmc_zero_part_len(unit_n[u], W);
        sh_off[u] = *S;
        if (!lmc_add_ok(*S, s[u], S)) return lmc_err_set(err, LMC_ERR_FORMAT, "zero checkpoint: too large");
    }
    return LMC_OK;
}

void lmc_zero_manifest_free(struct lmc_zero_manifest *m) {
    if (!m) return;
    free(m->unit_n);
    for (int i = 0; m->tensors && i < m->n_tensors; i++) free((void *)m->tensors[i].name);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

static lmc_status get_i64(const cJSON *root, const char *key, int64_t lo, int64_t hi, int64_t *out,
                          const char *path, lmc_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < (double)lo || v->valuedouble > (double)hi ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: \"%s\" is %s, expected an integer in [%lld, %lld]", path,
                           key, lmc_json_kind(v), (long long)lo, (long long)hi);
    *out = (int64_t)v->valuedouble;
    return LMC_OK;
}

/* The optional "tensors" list: names, contiguous ranges covering the
 * arena, shapes whose product is the numel. */
static lmc_status parse_tensors(const cJSON *arr, int64_t numel, const char *path, struct lmc_zero_manifest *m,
                                lmc_err *err) {
    if (!arr) return LMC_OK;
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (n < 0 || n > (1 << 20))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: \"tensors\" is %s, expected an array", path, lmc_json_kind(arr));
    if (n == 0) return LMC_OK;
    m->tensors = calloc((size_t)n, sizeof *m->tensors);
    if (!m->tensors) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(arr, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
        struct lmc_zero_tensor *t = &m->tensors[i];
        char where[64];
        snprintf(where, sizeof where, "tensors[%d]", i);
        if (!cJSON_IsObject(o) || !cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 255)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %s needs a \"name\" of 1 to 255 characters", path, where);
        if (!(t->name = strdup(name->valuestring))) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
        m->n_tensors = i + 1;
        int64_t unit;
        lmc_status s;
        if ((s = get_i64(o, "offset", 0, numel, &t->offset, path, err)) ||
            (s = get_i64(o, "numel", 1, numel, &t->numel, path, err)) ||
            (s = get_i64(o, "unit", 0, 1 << 20, &unit, path, err)))
            return lmc_err_prefix(err, "%s: ", where);
        t->unit = (int)unit;
        t->decay = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "decay"));
        if (t->offset != at || t->numel > numel - at)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %s (%s) covers [%lld, +%lld); expected offset %lld within "
                               "%lld parameters", path, where, t->name, (long long)t->offset, (long long)t->numel,
                               (long long)at, (long long)numel);
        at += t->numel;
        int nd = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : 0;
        int64_t prod = 1;
        for (int d = 0; d < nd && d < 4; d++) {
            const cJSON *v = cJSON_GetArrayItem(shape, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > (double)numel) prod = -1;
            else t->shape[d] = (int64_t)v->valuedouble;
            if (prod > 0 && !lmc_mul_ok(prod, t->shape[d], &prod)) prod = -1;
        }
        if (nd < 1 || nd > 4 || prod != t->numel)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %s (%s): \"shape\" must list 1 to 4 sizes whose product "
                               "is its numel %lld", path, where, t->name, (long long)t->numel);
        t->ndim = nd;
    }
    if (at != numel)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: the tensors cover %lld of %lld parameters", path, (long long)at,
                           (long long)numel);
    return LMC_OK;
}

lmc_status lmc_zero_manifest_parse(const char *text, size_t len, const char *path, struct lmc_zero_manifest *m,
                                   lmc_err *err) {
    memset(m, 0, sizeof *m);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not a JSON object", path);
    }
    lmc_status s = LMC_OK;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(root, "layout_hash");
    const cJSON *units = cJSON_GetObjectItemCaseSensitive(root, "units");
    int64_t version, world, stage, step, numel;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "lmc-zero-checkpoint")) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: \"format\" is not \"lmc-zero-checkpoint\"", path);
        goto out;
    }
    if ((s = get_i64(root, "version", 1, 1, &version, path, err)) ||
        (s = get_i64(root, "world", 1, 1 << 20, &world, path, err)) ||
        (s = get_i64(root, "stage", 0, 3, &stage, path, err)) ||
        (s = get_i64(root, "step", 0, INT64_C(1) << 50, &step, path, err)) ||
        (s = get_i64(root, "numel", 1, INT64_C(1) << 50, &numel, path, err)))
        goto out;
    char *end = NULL;
    if (!cJSON_IsString(hash) || strlen(hash->valuestring) != 16 ||
        (m->layout_hash = strtoull(hash->valuestring, &end, 16), *end)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: \"layout_hash\" is not 16 hex digits", path);
        goto out;
    }
    int n = cJSON_IsArray(units) ? cJSON_GetArraySize(units) : 0;
    if (n <= 0 || n > (1 << 20)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: \"units\" is %s, expected a non-empty array of unit sizes",
                        path, lmc_json_kind(units));
        goto out;
    }
    m->unit_n = malloc(sizeof *m->unit_n * (size_t)n);
    if (!m->unit_n) {
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
        goto out;
    }
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(units, i);
        if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > (double)(INT64_C(1) << 50) ||
            v->valuedouble != (double)(int64_t)v->valuedouble) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: units[%d] is not a positive integer", path, i);
            goto out;
        }
        m->unit_n[i] = (int64_t)v->valuedouble;
        if (!lmc_add_ok(total, m->unit_n[i], &total) || total > numel) {
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: units add up to more than \"numel\" (%lld)", path,
                            (long long)numel);
            goto out;
        }
    }
    if (total != numel) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: units add up to %lld, \"numel\" says %lld", path,
                        (long long)total, (long long)numel);
        goto out;
    }
    if ((s = parse_tensors(cJSON_GetObjectItemCaseSensitive(root, "tensors"), numel, path, m, err))) goto out;
    m->n_units = n;
    m->world = (int)world;
    m->stage = (int)stage;
    m->step = step;
    m->numel = numel;
out:
    cJSON_Delete(root);
    if (s) lmc_zero_manifest_free(m);
    return s;
}

/* The manifest of step `want` (its own file, zero-manifest-step<S>.json,
 * which saves with lmc_zero_keep_all_steps write beside the newest one),
 * or the newest (want < 0, or no file of that step). */
static lmc_status read_manifest(const char *dir, int64_t want, struct lmc_zero_manifest *m, lmc_err *err) {
    char path[4096], name[64];
    snprintf(name, sizeof name, "zero-manifest-step%08lld.json", (long long)want);
    if (want < 0 || !lmc_path_join(path, sizeof path, dir, name) || access(path, F_OK) != 0)
        snprintf(name, sizeof name, "%s", MANIFEST);
    if (!lmc_path_join(path, sizeof path, dir, name))
        return lmc_err_set(err, LMC_ERR_ARG, "zero checkpoint: path too long: %s", dir);
    char *text;
    size_t len;
    lmc_status s = lmc_file_read(path, 64u << 20, &text, &len, err);
    if (s) return s;
    s = lmc_zero_manifest_parse(text, len, path, m, err);
    free(text);
    return s;
}

/* Validates a shard header against the manifest and the expected rank. */
static lmc_status check_header(const struct shard_header *h, size_t file_bytes, const struct lmc_zero_manifest *m,
                               int rank, int64_t S, const char *path, lmc_err *err) {
    if (memcmp(h->magic, SHARD_MAGIC, 8) || h->version != 1)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not an lmc ZeRO shard (magic/version)", path);
    if ((int)h->rank != rank || (int)h->world != m->world || h->step != m->step || h->numel != m->numel ||
        h->n_units != m->n_units || h->layout_hash != m->layout_hash)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: header (rank %u of %u, step %lld) does not match the "
                           "manifest (rank %d of %d, step %lld)", path, h->rank, h->world, (long long)h->step,
                           rank, m->world, (long long)m->step);
    if (h->shard_numel != S || file_bytes != sizeof *h + 3 * (size_t)S * sizeof(float))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %zu bytes; a shard of %lld elements needs %zu", path,
                           file_bytes, (long long)S, sizeof *h + 3 * (size_t)S * sizeof(float));
    return LMC_OK;
}

/* Reads rank q's shard (3 * S floats: p, m, v) into buf. */
static lmc_status read_shard(const char *dir, const struct lmc_zero_manifest *m, int q, int64_t S, float *buf,
                             lmc_err *err) {
    char name[64], path[4096];
    shard_name(name, sizeof name, m->step, q);
    if (!lmc_path_join(path, sizeof path, dir, name))
        return lmc_err_set(err, LMC_ERR_ARG, "zero checkpoint: path too long: %s", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return lmc_err_set(err, LMC_ERR_IO, "%s: %s", path, strerror(errno));
    struct shard_header h;
    lmc_status s = LMC_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    rewind(f);
    size_t data = 3 * (size_t)S * sizeof(float);
    if (size < 0 || fread(&h, sizeof h, 1, f) != 1) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: truncated header", path);
    } else if (!(s = check_header(&h, (size_t)size, m, q, S, path, err))) {
        if (fread(buf, 1, data, f) != data) s = lmc_err_set(err, LMC_ERR_IO, "%s: short read", path);
        else if (checksum(buf, data) != h.checksum)
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: checksum mismatch (the file is damaged)", path);
    }
    fclose(f);
    return s;
}

/* Unit u's part of this rank's shard: parameters (k 0), m (1) or v (2). */
static const float *shard_part(const struct lmc_zero *z, int k, int u) {
    const struct lmc_zero_unit *U = &z->units[u];
    int64_t part = U->pa_off + (int64_t)z->r * U->s;
    if (k == 0) return z->stage == 3 ? z->p_sh + U->sh_off : z->p_full + part;
    const float *base = k == 1 ? z->m : z->v;
    return z->stage == 0 ? base + part : base + U->sh_off;
}

/* Writes this rank's shard file dir/name: the header, then the arrays p,
 * m, v (S floats each), streamed one unit part at a time through a host
 * buffer (no host copy of the whole shard); the checksum is filled in
 * last. Published by an atomic rename after fsync. */
static lmc_status write_shard(struct lmc_zero *z, const char *dir, const char *name, struct shard_header *h,
                              lmc_err *err) {
    char path[4096], tmp[4200];
    if (!lmc_path_join(path, sizeof path, dir, name))
        return lmc_err_set(err, LMC_ERR_ARG, "zero checkpoint: path too long: %s", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    size_t most = z->slot_bytes / (size_t)z->W; /* the largest unit part */
    float *buf = malloc(most ? most : 4);
    FILE *f = buf ? fopen(tmp, "wb") : NULL;
    if (!f) {
        free(buf);
        return buf ? lmc_err_set(err, LMC_ERR_IO, "%s: %s", tmp, strerror(errno))
                   : lmc_err_set(err, LMC_ERR_OOM, "zero checkpoint: out of memory");
    }
    uint64_t sum = CHECKSUM_SEED;
    bool ok = fwrite(h, sizeof *h, 1, f) == 1;
    for (int k = 0; k < 3 && ok; k++)
        for (int u = 0; u < z->n_units && ok; u++) {
            size_t b = (size_t)z->units[u].s * sizeof(float); /* a multiple of 64 bytes */
            z->be->download(z->be->ctx, buf, shard_part(z, k, u), b);
            sum = checksum_add(sum, buf, b);
            ok = fwrite(buf, 1, b, f) == b;
        }
    h->checksum = sum;
    ok = ok && fseek(f, 0, SEEK_SET) == 0 && fwrite(h, sizeof *h, 1, f) == 1 && fflush(f) == 0 &&
         fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    free(buf);
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return LMC_OK;
}

/* Any-rank-failed: every rank learns whether some rank failed. */
static lmc_status agree(struct lmc_zero *z, lmc_status mine, lmc_err *err, const char *what) {
    double bad = mine != LMC_OK;
    lmc_err e;
    lmc_status s = lmc_zero_sum_f64(z, &bad, 1, &e);
    if (mine) return mine;
    if (s) {
        *err = e;
        return s;
    }
    if (bad > 0) return lmc_err_set(err, LMC_ERR_IO, "zero checkpoint: another rank failed to %s", what);
    return LMC_OK;
}

static void remove_old_shards(const char *dir, int rank, int64_t keep_step) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char keep[64], path[4096];
    shard_name(keep, sizeof keep, keep_step, rank);
    char suffix[32];
    snprintf(suffix, sizeof suffix, "-rank%05d.bin", rank);
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name), k = strlen(suffix);
        if (strncmp(e->d_name, "zero-step", 9) || n <= k || strcmp(e->d_name + n - k, suffix) ||
            !strcmp(e->d_name, keep))
            continue;
        if (lmc_path_join(path, sizeof path, dir, e->d_name)) unlink(path);
    }
    closedir(d);
}

static lmc_status write_file_atomic(const char *dir, const char *name, const char *text, lmc_err *err) {
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, name))
        return lmc_err_set(err, LMC_ERR_ARG, "zero checkpoint: path too long: %s", dir);
    return lmc_file_write_atomic(path, text, strlen(text), err);
}

lmc_status lmc_zero_save(struct lmc_zero *z, const char *dir, int64_t step, lmc_err *err) {
    lmc_status s = LMC_OK;
    if (!z->m) return lmc_err_set(err, LMC_ERR_ARG, "zero: no AdamW moments to save (the caller's optimizer)");
    if (mkdir(dir, 0755) && errno != EEXIST) /* every rank: the folder may be shared or not */
        s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot create the checkpoint folder: %s", dir, strerror(errno));
    if (!s) {
        struct shard_header h = {.version = 1, .rank = (uint32_t)z->r, .world = (uint32_t)z->W,
                                 .stage = (uint32_t)z->stage, .step = step, .numel = z->numel,
                                 .n_units = z->n_units, .shard_numel = z->S, .layout_hash = z->layout_hash,
                                 .checksum = 0};
        memcpy(h.magic, SHARD_MAGIC, 8);
        char name[64];
        shard_name(name, sizeof name, step, z->r);
        s = write_shard(z, dir, name, &h, err);
    }
    if ((s = agree(z, s, err, "write its shard"))) return s;
    if (z->r == 0) {
        cJSON *root = cJSON_CreateObject(), *units = cJSON_CreateArray(), *tensors = cJSON_CreateArray(),
              *shards = cJSON_CreateArray();
        char hash[17], name[64];
        snprintf(hash, sizeof hash, "%016" PRIx64, z->layout_hash);
        cJSON_AddStringToObject(root, "format", "lmc-zero-checkpoint");
        cJSON_AddNumberToObject(root, "version", 1);
        cJSON_AddNumberToObject(root, "step", (double)step);
        cJSON_AddNumberToObject(root, "world", z->W);
        cJSON_AddNumberToObject(root, "stage", z->stage);
        cJSON_AddNumberToObject(root, "numel", (double)z->numel);
        cJSON_AddStringToObject(root, "layout_hash", hash);
        for (int u = 0; u < z->n_units; u++) cJSON_AddItemToArray(units, cJSON_CreateNumber((double)z->units[u].n));
        for (int t = 0; t < z->n_tensors; t++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", z->tensors[t].name);
            cJSON_AddNumberToObject(o, "offset", (double)z->tensors[t].offset);
            cJSON_AddNumberToObject(o, "numel", (double)z->tensors[t].numel);
            cJSON_AddNumberToObject(o, "unit", z->tensors[t].unit);
            cJSON_AddBoolToObject(o, "decay", z->tensors[t].decay);
            cJSON *shape = cJSON_CreateArray();
            if (z->tensors[t].ndim == 0) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)z->tensors[t].numel));
            for (int d = 0; d < z->tensors[t].ndim; d++)
                cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)z->tensors[t].shape[d]));
            cJSON_AddItemToObject(o, "shape", shape);
            cJSON_AddItemToArray(tensors, o);
        }
        for (int q = 0; q < z->W; q++) {
            shard_name(name, sizeof name, step, q);
            cJSON_AddItemToArray(shards, cJSON_CreateString(name));
        }
        cJSON_AddItemToObject(root, "units", units);
        cJSON_AddItemToObject(root, "tensors", tensors);
        cJSON_AddItemToObject(root, "shards", shards);
        char *text = cJSON_Print(root);
        cJSON_Delete(root);
        char step_name[64];
        snprintf(step_name, sizeof step_name, "zero-manifest-step%08lld.json", (long long)step);
        s = !text ? lmc_err_set(err, LMC_ERR_OOM, "zero checkpoint: out of memory")
            : z->keep_all ? write_file_atomic(dir, step_name, text, err) : LMC_OK;
        if (!s) s = write_file_atomic(dir, MANIFEST, text, err);
        free(text);
    }
    if ((s = agree(z, s, err, "write the manifest"))) return s;
    /* the new manifest is in place: older shards are no longer referenced (unless every step is kept) */
    if (!z->keep_all) remove_old_shards(dir, z->r, step);
    return LMC_OK;
}

void lmc_zero_keep_all_steps(struct lmc_zero *z, bool keep) { z->keep_all = keep;
}

lmc_status lmc_zero_consolidate(const char *dir, float **params, float **m, float **v, int64_t *numel,
                                int64_t *step, lmc_err *err) {
    return lmc_zero_consolidate_step(dir, -1, params, m, v, numel, step, err);
}

lmc_status lmc_zero_consolidate_step(const char *dir, int64_t want, float **params, float **m, float **v,
                                     int64_t *numel, int64_t *step, lmc_err *err) {
    *params = NULL;
    if (m) *m = NULL;
    if (v) *v = NULL;
    struct lmc_zero_manifest man;
    lmc_status s = read_manifest(dir, want, &man, err);
    if (s) return s;
    int n = man.n_units, W = man.world;
    int64_t *ps = malloc(sizeof(int64_t) * 2 * (size_t)n), *sh = ps ? ps + n : NULL, S = 0;
    float *out[3] = {NULL, NULL, NULL}, *buf = NULL;
    if (!ps) {
        s = lmc_err_set(err, LMC_ERR_OOM, "zero checkpoint: out of memory");
        goto out;
    }
    if ((s = layout_for(man.unit_n, n, W, ps, sh, &S, err))) goto out;
    for (int k = 0; k < 3; k++)
        if (!(out[k] = malloc((size_t)man.numel * sizeof(float)))) {
            s = lmc_err_set(err, LMC_ERR_OOM, "zero checkpoint: out of memory for %lld parameters",
                            (long long)man.numel);
            goto out;
        }
    if (!(buf = malloc(3 * (size_t)S * sizeof(float) + 4))) {
        s = lmc_err_set(err, LMC_ERR_OOM, "zero checkpoint: out of memory");
        goto out;
    }
    for (int q = 0; q < W; q++) {
        if ((s = read_shard(dir, &man, q, S, buf, err))) goto out;
        int64_t off = 0;
        for (int u = 0; u < n; u++) {
            int64_t lo = (int64_t)q * ps[u], k = LMC_MIN(ps[u], man.unit_n[u] - lo);
            for (int a = 0; a < 3 && k > 0; a++)
                memcpy(out[a] + off + lo, buf + (size_t)a * (size_t)S + sh[u], (size_t)k * sizeof(float));
            off += man.unit_n[u];
        }
    }
    *params = out[0], out[0] = NULL;
    if (m) *m = out[1], out[1] = NULL;
    if (v) *v = out[2], out[2] = NULL;
    *numel = man.numel;
    if (step) *step = man.step;
out:
    for (int k = 0; k < 3; k++) free(out[k]);
    free(buf);
    free(ps);
    lmc_zero_manifest_free(&man);
    return s;
}

/* Places full host arrays (unpadded arena layout) into z's buffers. */
static void load_full(struct lmc_zero *z, const float *P, const float *M, const float *V) {
    struct lmc_backend *be = z->be;
    for (int u = 0; u < z->n_units; u++) {
        const struct lmc_zero_unit *U = &z->units[u];
        for (int q = 0; q < z->W; q++) {
            int64_t k = lmc_zero_real(U, q), lo = (int64_t)q * U->s;
            if (k <= 0) continue;
            size_t b = (size_t)k * sizeof(float);
            int64_t part = U->pa_off + lo;
            if (z->stage <= 2) be->upload(be->ctx, z->p_full + part, P + U->off + lo, b);
            if (z->stage == 0) {
                be->upload(be->ctx, z->m + part, M + U->off + lo, b);
                be->upload(be->ctx, z->v + part, V + U->off + lo, b);
            } else if (q == z->r) {
                if (z->stage == 3) be->upload(be->ctx, z->p_sh + U->sh_off, P + U->off + lo, b);
                be->upload(be->ctx, z->m + U->sh_off, M + U->off + lo, b);
                be->upload(be->ctx, z->v + U->sh_off, V + U->off + lo, b);
            }
        }
    }
}

/* The manifest lists z's tensors (names, offsets, sizes, decay), grouped
 * into units another way (another bucket size): its arrays, consolidated,
 * are this run's. */
static bool same_tensors(const struct lmc_zero *z, const struct lmc_zero_manifest *m) {
    if (m->n_tensors != z->n_tensors) return false;
    for (int i = 0; i < z->n_tensors; i++) {
        const struct lmc_zero_tensor *a = &z->tensors[i], *b = &m->tensors[i];
        if (strcmp(a->name, b->name) || a->offset != b->offset || a->numel != b->numel || a->decay != b->decay)
            return false;
    }
    return true;
}

void lmc_zero_set_full(struct lmc_zero *z, const float *P, const float *M, const float *V) {
    load_full(z, P, M, V);
    if (z->be->sync) z->be->sync(z->be->ctx);
}

lmc_status lmc_zero_load(struct lmc_zero *z, const char *dir, int64_t *step, lmc_err *err) {
    return lmc_zero_load_step(z, dir, -1, step, err);
}

lmc_status lmc_zero_load_step(struct lmc_zero *z, const char *dir, int64_t want, int64_t *step, lmc_err *err) {
    struct lmc_zero_manifest man;
    if (!z->m) return lmc_err_set(err, LMC_ERR_ARG, "%s: sharded AdamW state, but this run's optimizer is another "
                                  "kind", dir);
    lmc_status s = read_manifest(dir, want, &man, err);
    bool regroup = !s && man.numel == z->numel && man.layout_hash != z->layout_hash && same_tensors(z, &man);
    if (!s && !regroup && (man.numel != z->numel || man.layout_hash != z->layout_hash || man.n_units != z->n_units))
        s = lmc_err_set(err, LMC_ERR_ARG, "%s/%s: the checkpoint holds another model (%lld parameters, layout "
                        "%016" PRIx64 "; this run has %lld, %016" PRIx64 ")", dir, MANIFEST,
                        (long long)man.numel, man.layout_hash, (long long)z->numel, z->layout_hash);
    if (s) {
        lmc_zero_manifest_free(&man);
        return agree(z, s, err, "read the manifest");
    }
    if (man.world == z->W && z->stage > 0 && !regroup) {
        /* own shard only, then the full parameters for stages 1 and 2 */
        float *buf = malloc(3 * (size_t)z->S * sizeof(float) + 4);
        if (!buf) s = lmc_err_set(err, LMC_ERR_OOM, "zero checkpoint: out of memory");
        else s = read_shard(dir, &man, z->r, z->S, buf, err);
        if (!s) {
            struct lmc_backend *be = z->be;
            for (int u = 0; u < z->n_units; u++) {
                const struct lmc_zero_unit *U = &z->units[u];
                size_t b = (size_t)U->s * sizeof(float);
                float *p = z->stage == 3 ? z->p_sh + U->sh_off : z->p_full + U->pa_off + (int64_t)z->r * U->s;
                be->upload(be->ctx, p, buf + U->sh_off, b);
                be->upload(be->ctx, z->m + U->sh_off, buf + z->S + U->sh_off, b);
                be->upload(be->ctx, z->v + U->sh_off, buf + 2 * z->S + U->sh_off, b);
            }
        }
        free(buf);
        if ((s = agree(z, s, err, "read its shard"))) goto out;
        if (z->stage <= 2 && z->W > 1) {
            for (int u = 0; u < z->n_units && !s; u++) {
                const struct lmc_zero_unit *U = &z->units[u];
                s = z->comm->all_gather(z->comm, z->p_full + U->pa_off + (int64_t)z->r * U->s, z->p_full + U->pa_off,
                                        U->s, LMC_DTYPE_F32, err);
            }
        }
    } else {
        float *P = NULL, *M = NULL, *V = NULL;
        int64_t numel = 0, st = 0;
        s = lmc_zero_consolidate_step(dir, man.step, &P, &M, &V, &numel, &st, err);
        if (!s) load_full(z, P, M, V);
        free(P), free(M), free(V);
        s = agree(z, s, err, "consolidate the checkpoint");
    }
out:
    if (!s) *step = man.step;
    lmc_zero_manifest_free(&man);
    return s;
}

lmc_status lmc_zero_export_safetensors(const char *dir, const char *out_path, lmc_err *err) {
    return lmc_zero_export_safetensors_step(dir, -1, out_path, err);
}

lmc_status lmc_zero_export_safetensors_step(const char *dir, int64_t want, const char *out_path, lmc_err *err) {
    struct lmc_zero_manifest man;
    lmc_status s = read_manifest(dir, want, &man, err);
    if (s) return s;
    if (want >= 0 && man.step != want) {
        s = lmc_err_set(err, LMC_ERR_ARG, "%s: no sharded state of step %lld (the newest is step %lld; saves keep "
                        "every step since zero-manifest-step<S>.json files are written)", dir, (long long)want,
                        (long long)man.step);
        lmc_zero_manifest_free(&man);
        return s;
    }
    float *P = NULL;
    int64_t numel = 0, step = 0;
    struct lmc_st_write_tensor *wt = NULL;
    if (man.n_tensors == 0) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s/%s lists no tensors: nothing to name in an export", dir, MANIFEST);
        goto out;
    }
    if ((s = lmc_zero_consolidate_step(dir, man.step, &P, NULL, NULL, &numel, &step, err))) goto out;
    if (!(wt = calloc((size_t)man.n_tensors, sizeof *wt))) {
        s = lmc_err_set(err, LMC_ERR_OOM, "zero export: out of memory");
        goto out;
    }
    for (int i = 0; i < man.n_tensors; i++) {
        const struct lmc_zero_tensor *t = &man.tensors[i];
        wt[i].name = t->name;
        wt[i].dtype = LMC_DTYPE_F32;
        wt[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) wt[i].shape[d] = t->shape[d];
        wt[i].data = P + t->offset;
    }
    char stepbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%lld", (long long)step);
    const char *meta[] = {"format", "pt", "lmc_zero_step", stepbuf};
    s = lmc_st_write(out_path, wt, man.n_tensors, meta, 2, err);
out:
    free(wt);
    free(P);
    lmc_zero_manifest_free(&man);
    return s;
}
