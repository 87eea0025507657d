/* file.c — whole-file reading with a size cap, whole-file atomic writing
 * (temporary, fsync, rename), copying, path joining, existence. */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

lmc_status lmc_file_read(const char *path, size_t max_bytes, char **out, size_t *len, lmc_err *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return lmc_err_set(err, LMC_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: file is %lld bytes, more than the %zu allowed",
                           path, (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (got != n || bad) {
        free(buf);
        return lmc_err_set(err, LMC_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return LMC_OK;
}

lmc_status lmc_file_copy(const char *src, const char *dst, lmc_err *err) {
    FILE *a = fopen(src, "rb");
    if (!a) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    FILE *b = fopen(dst, "wb");
    if (!b) {
        int e = errno;
        fclose(a);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create: %s", dst, strerror(e));
    }
    char buf[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    bool read_ok = !ferror(a);
    int e = errno;
    fclose(a);
    if (fclose(b) != 0 && ok) ok = false, e = errno;
    if (!read_ok) return lmc_err_set(err, LMC_ERR_IO, "%s: read failed", src);
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", dst, strerror(e));
}

lmc_status lmc_file_write_atomic(const char *path, const void *data, size_t n, lmc_err *err) {
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    if (!tmp) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && (n == 0 || fwrite(data, 1, n, f) == n) && fflush(f) == 0 &&
              (fsync(fileno(f)) == 0 || errno == EINVAL);
    int e = errno;
    if (f && fclose(f) != 0 && ok) ok = false, e = errno;
    if (ok && rename(tmp, path) != 0) ok = false, e = errno;
    if (!ok && f) remove(tmp);
    free(tmp);
    return ok ? LMC_OK : lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(e));
}

bool lmc_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool lmc_path_join(char *buf, size_t cap, const char *dir, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n >= 0 && (size_t)n < cap;
}
