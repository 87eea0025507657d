/* data.c — token shards (format in data.h): header validation and the
 * full-file check, the writer, a split of memory-mapped shards read as one
 * stream, and the (B, T+1) window loader with a seeded, resumable order. */
#include "train/data.h"

#include "core/core.h"
#include "core/rng.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

lmc_status lmc_shard_parse(struct lmc_shard_header *h, const void *buf, size_t len, const char *label,
                           lmc_err *err) {
    const unsigned char *p = buf;
    if (len < LMC_SHARD_HEADER_BYTES)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: truncated: %zu bytes, a token shard header has %d", label, len,
                           LMC_SHARD_HEADER_BYTES);
    if (memcmp(p, LMC_SHARD_MAGIC, 8) != 0)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: bad magic: not an lmc token shard (expected \"%s\")", label,
                           LMC_SHARD_MAGIC);
    h->version = rd32(p + 8);
    h->dtype = rd32(p + 12);
    h->vocab_size = rd32(p + 16);
    h->eos_id = rd32(p + 20);
    h->n_tokens = rd64(p + 24);
    h->n_docs = rd64(p + 32);
    if (h->version != LMC_SHARD_VERSION)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: version %u: expected %u", label, h->version,
                           LMC_SHARD_VERSION);
    if (h->dtype != 2 && h->dtype != 4)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: dtype %u: expected 2 (uint16) or 4 (uint32)", label, h->dtype);
    if (h->vocab_size == 0 || h->vocab_size > 0x80000000u || (h->dtype == 2 && h->vocab_size > 65536))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: vocab_size %u: expected 1 .. %u for %u-byte ids", label,
                           h->vocab_size, h->dtype == 2 ? 65536u : 0x80000000u, h->dtype);
    if (h->eos_id != LMC_SHARD_NO_EOS && h->eos_id >= h->vocab_size)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: eos_id %u is not below vocab_size %u", label, h->eos_id,
                           h->vocab_size);
    for (int i = 40; i < LMC_SHARD_HEADER_BYTES; i++)
        if (p[i]) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: reserved header byte %d is not zero", label, i);
    uint64_t body = len - LMC_SHARD_HEADER_BYTES;
    if (h->n_tokens > body / h->dtype)
        return lmc_err_set(err, LMC_ERR_FORMAT,
                           "%s: truncated: header says %llu tokens (%llu bytes) but the file holds %llu bytes of ids",
                           label, (unsigned long long)h->n_tokens,
                           (unsigned long long)(h->n_tokens > UINT64_MAX / 4 ? UINT64_MAX : h->n_tokens * h->dtype),
                           (unsigned long long)body);
    if (h->n_tokens * h->dtype != body)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %llu bytes after the %llu tokens the header announces", label,
                           (unsigned long long)(body - h->n_tokens * h->dtype), (unsigned long long)h->n_tokens);
    const unsigned char *ids = p + LMC_SHARD_HEADER_BYTES;
    if (h->dtype == 2) {
        if (h->vocab_size < 65536)
            for (uint64_t i = 0; i < h->n_tokens; i++) {
                uint32_t v = (uint32_t)ids[2 * i] | (uint32_t)ids[2 * i + 1] << 8;
                if (v >= h->vocab_size) goto bad_id;
            }
    } else {
        for (uint64_t i = 0; i < h->n_tokens; i++)
            if (rd32(ids + 4 * i) >= h->vocab_size) goto bad_id;
    }
    return LMC_OK;
bad_id:
    for (uint64_t i = 0; i < h->n_tokens; i++) {
        uint32_t v = h->dtype == 2 ? ((uint32_t)ids[2 * i] | (uint32_t)ids[2 * i + 1] << 8) : rd32(ids + 4 * i);
        if (v >= h->vocab_size)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: token %llu has id %u, not below vocab_size %u", label,
                               (unsigned long long)i, v, h->vocab_size);
    }
    return LMC_ERR_INTERNAL;
}

/* ---- writer ---- */

struct lmc_shard_writer {
    FILE *f;
    char *path;
    uint32_t vocab, dtype, eos;
    uint64_t n_tokens, n_docs;
    unsigned char buf[1 << 16];
    size_t nbuf;
    bool failed;
};

static void header_bytes(unsigned char *p, uint32_t dtype, uint32_t vocab, uint32_t eos, uint64_t n_tokens,
                         uint64_t n_docs) {
    memset(p, 0, LMC_SHARD_HEADER_BYTES);
    memcpy(p, LMC_SHARD_MAGIC, 8);
    wr32(p + 8, LMC_SHARD_VERSION);
    wr32(p + 12, dtype);
    wr32(p + 16, vocab);
    wr32(p + 20, eos);
    wr64(p + 24, n_tokens);
    wr64(p + 32, n_docs);
}

lmc_status lmc_shard_writer_open(struct lmc_shard_writer **out, const char *path, uint32_t vocab_size,
                                 uint32_t dtype, uint32_t eos_id, lmc_err *err) {
    *out = NULL;
    if ((dtype != 2 && dtype != 4) || vocab_size == 0 || vocab_size > 0x80000000u ||
        (dtype == 2 && vocab_size > 65536))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: vocab size %u does not fit %u-byte ids", path, vocab_size, dtype);
    struct lmc_shard_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        lmc_status st = lmc_err_set(err, LMC_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(w->path);
        free(w);
        return st;
    }
    w->vocab = vocab_size;
    w->dtype = dtype;
    w->eos = eos_id;
    unsigned char h[LMC_SHARD_HEADER_BYTES];
    header_bytes(h, dtype, vocab_size, eos_id, 0, 0); /* rewritten at close */
    if (fwrite(h, 1, sizeof h, w->f) != sizeof h) w->failed = true;
    *out = w;
    return LMC_OK;
}

lmc_status lmc_shard_writer_add(struct lmc_shard_writer *w, const int32_t *ids, int64_t n, lmc_err *err) {
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->vocab)
            return lmc_err_set(err, LMC_ERR_ARG, "%s: id %d is outside the vocabulary (%u)", w->path, ids[i], w->vocab);
        if (w->nbuf + 4 > sizeof w->buf) {
            if (fwrite(w->buf, 1, w->nbuf, w->f) != w->nbuf) w->failed = true;
            w->nbuf = 0;
        }
        if (w->dtype == 2) {
            w->buf[w->nbuf++] = (unsigned char)ids[i];
            w->buf[w->nbuf++] = (unsigned char)(ids[i] >> 8);
        } else {
            wr32(w->buf + w->nbuf, (uint32_t)ids[i]);
            w->nbuf += 4;
        }
    }
    w->n_tokens += (uint64_t)n;
    if (w->failed) return lmc_err_set(err, LMC_ERR_IO, "%s: write failed", w->path);
    return LMC_OK;
}

void lmc_shard_writer_end_doc(struct lmc_shard_writer *w) { w->n_docs++; }
uint64_t lmc_shard_writer_tokens(const struct lmc_shard_writer *w) { return w->n_tokens; }

lmc_status lmc_shard_writer_close(struct lmc_shard_writer *w, lmc_err *err) {
    if (!w) return LMC_OK;
    if (w->nbuf && fwrite(w->buf, 1, w->nbuf, w->f) != w->nbuf) w->failed = true;
    unsigned char h[LMC_SHARD_HEADER_BYTES];
    header_bytes(h, w->dtype, w->vocab, w->eos, w->n_tokens, w->n_docs);
    if (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->f) != sizeof h) w->failed = true;
    if (fclose(w->f) != 0) w->failed = true;
    lmc_status st = LMC_OK;
    if (w->failed) st = lmc_err_set(err, LMC_ERR_IO, "%s: write failed", w->path);
    free(w->path);
    free(w);
    return st;
}

/* ---- split ---- */

void lmc_token_data_close(struct lmc_token_data *d) {
    for (int i = 0; i < d->n_shards; i++) {
        if (d->shards[i].map && d->shards[i].size) munmap(d->shards[i].map, d->shards[i].size);
        free(d->shards[i].path);
    }
    free(d->shards);
    memset(d, 0, sizeof *d);
}

static lmc_status shard_map(struct lmc_shard *s, const char *path, lmc_err *err) {
    if (!(s->path = strdup(path))) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lmc_err_set(err, LMC_ERR_IO, "%s: not a regular file", path);
    }
    s->size = (size_t)sb.st_size;
    if (s->size > 0) {
        s->map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (s->map == MAP_FAILED) {
            s->map = NULL;
            s->size = 0;
            close(fd);
            return lmc_err_set(err, LMC_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    return lmc_shard_parse(&s->h, s->map ? s->map : "", s->size, path, err);
}

lmc_status lmc_token_data_open_files(struct lmc_token_data *d, const char *const *paths, int n, lmc_err *err) {
    memset(d, 0, sizeof *d);
    if (n <= 0) return lmc_err_set(err, LMC_ERR_ARG, "token data: no shard files given");
    d->shards = calloc((size_t)n, sizeof *d->shards);
    if (!d->shards) return lmc_err_set(err, LMC_ERR_OOM, "token data: out of memory");
    for (int i = 0; i < n; i++) {
        struct lmc_shard *s = &d->shards[i];
        d->n_shards = i + 1;
        lmc_status st = shard_map(s, paths[i], err);
        if (st) {
            lmc_token_data_close(d);
            return st;
        }
        if (i == 0) {
            d->vocab_size = s->h.vocab_size;
            d->eos_id = s->h.eos_id;
        } else if (s->h.vocab_size != d->vocab_size || s->h.eos_id != d->eos_id) {
            lmc_err_set(err, LMC_ERR_FORMAT, "%s: vocab_size %u / eos_id %u differ from %s (%u / %u)", paths[i],
                        s->h.vocab_size, s->h.eos_id, paths[0], d->vocab_size, d->eos_id);
            lmc_token_data_close(d);
            return LMC_ERR_FORMAT;
        }
        s->start = d->n_tokens;
        d->n_tokens += s->h.n_tokens;
        d->n_docs += s->h.n_docs;
    }
    return LMC_OK;
}

lmc_status lmc_token_data_open(struct lmc_token_data *d, const char *dir, const char *split, lmc_err *err) {
    memset(d, 0, sizeof *d);
    int n = 0, cap = 0;
    char **paths = NULL;
    lmc_status st = LMC_OK;
    for (;; n++) {
        char name[64], path[4096];
        snprintf(name, sizeof name, "%s_%05d.bin", split, n);
        if (!lmc_path_join(path, sizeof path, dir, name)) {
            st = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
            break;
        }
        if (!lmc_file_exists(path)) break;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **p = realloc(paths, (size_t)cap * sizeof *p);
            if (!p) {
                st = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
                break;
            }
            paths = p;
        }
        if (!(paths[n] = strdup(path))) {
            st = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", dir);
            break;
        }
    }
    if (!st && n == 0) st = lmc_err_set(err, LMC_ERR_IO, "%s: no %s_00000.bin shard", dir, split);
    if (!st) st = lmc_token_data_open_files(d, (const char *const *)paths, n, err);
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    return st;
}

void lmc_token_data_read(const struct lmc_token_data *d, uint64_t pos, int64_t n, int32_t *out) {
    LMC_ASSERT(n >= 0 && pos + (uint64_t)n <= d->n_tokens);
    /* the last shard starting at or before pos */
    int lo = 0, hi = d->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (d->shards[mid].start <= pos) lo = mid;
        else hi = mid - 1;
    }
    for (int s = lo; n > 0; s++) {
        LMC_ASSERT(s < d->n_shards);
        const struct lmc_shard *sh = &d->shards[s];
        uint64_t off = pos - sh->start;
        if (off >= sh->h.n_tokens) continue; /* empty shard */
        int64_t take = (int64_t)LMC_MIN((uint64_t)n, sh->h.n_tokens - off);
        const unsigned char *p = (const unsigned char *)sh->map + LMC_SHARD_HEADER_BYTES + off * sh->h.dtype;
        if (sh->h.dtype == 2)
            for (int64_t i = 0; i < take; i++) out[i] = (int32_t)((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
        else
            for (int64_t i = 0; i < take; i++) out[i] = (int32_t)rd32(p + 4 * i);
        out += take;
        pos += (uint64_t)take;
        n -= take;
    }
}

/* ---- loader ---- */

lmc_status lmc_loader_init(struct lmc_loader *l, const struct lmc_token_data *d, int64_t B, int64_t T,
                           uint64_t seed, bool shuffle, lmc_err *err) {
    memset(l, 0, sizeof *l);
    if (B < 1 || T < 1)
        return lmc_err_set(err, LMC_ERR_ARG, "loader: batch %lld x %lld: expected B >= 1 and T >= 1", (long long)B,
                           (long long)T);
    if (d->n_tokens < (uint64_t)T + 1)
        return lmc_err_set(err, LMC_ERR_ARG, "loader: %s holds %llu tokens; a window of T+1 = %lld needs more",
                           d->n_shards ? d->shards[0].path : "data", (unsigned long long)d->n_tokens,
                           (long long)T + 1);
    l->d = d;
    l->B = B;
    l->T = T;
    l->seed = seed;
    l->shuffle = shuffle;
    l->n_windows = (int64_t)((d->n_tokens - 1) / (uint64_t)T);
    l->perm_epoch = -1;
    if (shuffle) {
        l->perm = malloc((size_t)l->n_windows * sizeof *l->perm);
        if (!l->perm) return lmc_err_set(err, LMC_ERR_OOM, "loader: out of memory for %lld windows", (long long)l->n_windows);
    }
    return LMC_OK;
}

lmc_status lmc_loader_seek(struct lmc_loader *l, int64_t epoch, int64_t index, lmc_err *err) {
    if (epoch < 0 || index < 0 || index > l->n_windows)
        return lmc_err_set(err, LMC_ERR_ARG, "loader: position (epoch %lld, index %lld): expected index 0..%lld",
                           (long long)epoch, (long long)index, (long long)l->n_windows);
    l->epoch = epoch;
    l->index = index;
    return LMC_OK;
}

/* Fisher-Yates over the windows, from a generator seeded by (seed, epoch). */
static void make_perm(struct lmc_loader *l) {
    uint64_t s = l->seed ^ ((uint64_t)l->epoch * 0xd1b54a32d192ed03ull);
    lmc_rng_next(&s);
    for (int64_t i = 0; i < l->n_windows; i++) l->perm[i] = i;
    for (int64_t i = l->n_windows - 1; i > 0; i--) {
        /* unbiased bounded draw (rejection) */
        uint64_t bound = (uint64_t)i + 1, lim = UINT64_MAX - UINT64_MAX % bound, r;
        do r = lmc_rng_next(&s);
        while (r >= lim);
        int64_t j = (int64_t)(r % bound);
        int64_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
    l->perm_epoch = l->epoch;
}

void lmc_loader_next(struct lmc_loader *l, int32_t *out) {
    for (int64_t b = 0; b < l->B; b++) {
        if (l->index >= l->n_windows) {
            l->epoch++;
            l->index = 0;
        }
        int64_t w = l->index;
        if (l->shuffle) {
            if (l->perm_epoch != l->epoch) make_perm(l);
            w = l->perm[l->index];
        }
        l->index++;
        lmc_token_data_read(l->d, (uint64_t)w * (uint64_t)l->T, l->T + 1, out + b * (l->T + 1));
    }
}

void lmc_loader_free(struct lmc_loader *l) {
    free(l->perm);
    memset(l, 0, sizeof *l);
}
