/* checkpoint_dir.c — checkpoint folders on disk: atomic publication (write
 * into OUT/.partial.<name>, fsync files and folder, rename into place,
 * fsync OUT), removal of the temporaries an interrupted save leaves, and
 * finding the newest complete checkpoint for `--resume latest`, and
 * --keep-last's removal of older checkpoints. See checkpoint.h for the
 * guarantees. */
#include "train/checkpoint.h"
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const ckpt_files[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                                         "trainer_state.json"};

bool lmc_ckpt_step_path(char *buf, size_t cap, const char *out, int64_t step) {
    int n = snprintf(buf, cap, "%s/step_%06lld", out, (long long)step);
    return n > 0 && (size_t)n < cap;
}

bool lmc_ckpt_parse_name(const char *name, int64_t *step) {
    if (strncmp(name, "step_", 5) != 0) return false;
    const char *d = name + 5;
    int64_t v = 0;
    size_t n = 0;
    for (; d[n]; n++) {
        if (d[n] < '0' || d[n] > '9' || n >= 18) return false;
        v = v * 10 + (d[n] - '0');
    }
    if (n == 0) return false;
    *step = v;
    return true;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool lmc_ckpt_complete(const char *dir, const char **missing) {
    char path[4096];
    struct stat st;
    for (size_t i = 0; i < sizeof ckpt_files / sizeof *ckpt_files; i++)
        if (!lmc_path_join(path, sizeof path, dir, ckpt_files[i]) || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            if (missing) *missing = ckpt_files[i];
            return false;
        }
    return true;
}

/* ---- removal ---- */

static lmc_status remove_at(int dfd, const char *name, const char *shown, int depth, lmc_err *err) {
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT) return LMC_OK;
    if (errno != EISDIR && errno != EPERM)
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot remove %s (%s)", shown, name, strerror(errno));
    if (depth >= 8) return lmc_err_set(err, LMC_ERR_IO, "%s: folders nested too deep to remove", shown);
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open %s (%s)", shown, name, strerror(errno));
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot list %s (%s)", shown, name, strerror(errno));
    }
    lmc_status s = LMC_OK;
    struct dirent *e;
    while (!s && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            s = remove_at(fd, e->d_name, shown, depth + 1, err);
    closedir(d);
    if (!s && unlinkat(dfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot remove %s (%s)", shown, name, strerror(errno));
    return s;
}

lmc_status lmc_ckpt_remove_tree(const char *path, lmc_err *err) {
    return remove_at(AT_FDCWD, path, path, 0, err);
}

/* ---- fsync ---- */

/* fsync of a file or folder by path; EINVAL (a file system without fsync
 * for this kind of file) is not an error. */
static lmc_status sync_path(const char *path, bool dir, lmc_err *err) {
    int fd = open(path, O_RDONLY | (dir ? O_DIRECTORY : 0));
    if (fd < 0) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot open to sync (%s)", path, strerror(errno));
    int r = fsync(fd), e = errno;
    close(fd);
    if (r != 0 && e != EINVAL && e != EROFS)
        return lmc_err_set(err, LMC_ERR_IO, "%s: fsync failed (%s)", path, strerror(e));
    return LMC_OK;
}

/* The parent folder of path (without trailing slashes) into buf, and the
 * offset of the last component in path. */
static bool split_path(const char *path, char *parent, size_t cap, char *name, size_t ncap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    if (b == n || n - b >= ncap) return false; /* empty name or too long */
    memcpy(name, path + b, n - b);
    name[n - b] = 0;
    if (!strcmp(name, ".") || !strcmp(name, "..")) return false;
    size_t p = b;
    while (p > 1 && path[p - 1] == '/') p--;
    if (p == 0) return snprintf(parent, cap, ".") < (int)cap;
    if (p >= cap) return false;
    memcpy(parent, path, p);
    parent[p] = 0;
    return true;
}

/* ---- atomic publication ---- */

lmc_status lmc_ckpt_begin(const char *dir, char *tmp, size_t cap, lmc_err *err) {
    char parent[4096], name[256], tname[300];
    if (!split_path(dir, parent, sizeof parent, name, sizeof name))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: not a usable checkpoint folder name", dir);
    snprintf(tname, sizeof tname, "%s%s", LMC_CKPT_TMP_PREFIX, name);
    if (!lmc_path_join(tmp, cap, parent, tname)) return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    lmc_status s = lmc_ckpt_remove_tree(tmp, err); /* a stale one from an interrupted save */
    if (s) return s;
    if (mkdir(tmp, 0777) != 0)
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create (%s)", tmp, strerror(errno));
    return LMC_OK;
}

void lmc_ckpt_abort(const char *tmp) {
    lmc_err ignored = {0};
    lmc_ckpt_remove_tree(tmp, &ignored);
}

lmc_status lmc_ckpt_commit(const char *tmp, const char *dir, lmc_err *err) {
    char parent[4096], name[256], path[4096];
    if (!split_path(dir, parent, sizeof parent, name, sizeof name))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: not a usable checkpoint folder name", dir);
    /* every file's data, then the folder's entries */
    DIR *d = opendir(tmp);
    if (!d) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot list (%s)", tmp, strerror(errno));
    lmc_status s = LMC_OK;
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!lmc_path_join(path, sizeof path, tmp, e->d_name))
            s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", tmp);
        else
            s = sync_path(path, false, err);
    }
    closedir(d);
    if (!s) s = sync_path(tmp, true, err);
    if (s) return s;
    /* into place: a plain rename when dir is absent; an atomic exchange
     * when a checkpoint of that name exists (a rerun over the same OUT),
     * whose old content then sits at tmp and is removed */
    if (rename(tmp, dir) != 0) {
        int e1 = errno;
        if (e1 != ENOTEMPTY && e1 != EEXIST)
            return lmc_err_set(err, LMC_ERR_IO, "%s: cannot rename %s into place (%s)", dir, tmp, strerror(e1));
#ifdef RENAME_EXCHANGE
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) != 0)
#else
        errno = EINVAL;
#endif
        {
            /* no exchange on this file system: move the old one aside to a
             * temporary name (removed on failure or by the next start) */
            char old[4096], oname[300];
            snprintf(oname, sizeof oname, "%sold.%s", LMC_CKPT_TMP_PREFIX, name);
            if (!lmc_path_join(old, sizeof old, parent, oname))
                return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
            if ((s = lmc_ckpt_remove_tree(old, err))) return s;
            if (rename(dir, old) != 0 || rename(tmp, dir) != 0)
                return lmc_err_set(err, LMC_ERR_IO, "%s: cannot replace with %s (%s)", dir, tmp, strerror(errno));
            if ((s = sync_path(parent, true, err))) return s;
            return lmc_ckpt_remove_tree(old, err);
        }
        if ((s = sync_path(parent, true, err))) return s;
        return lmc_ckpt_remove_tree(tmp, err);
    }
    return sync_path(parent, true, err);
}

/* ---- the output folder ---- */

lmc_status lmc_ckpt_out_prepare(const char *out, int *n_removed, lmc_err *err) {
    if (n_removed) *n_removed = 0;
    if (mkdir(out, 0777) != 0 && errno != EEXIST)
        return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create (%s)", out, strerror(errno));
    if (!is_dir(out)) return lmc_err_set(err, LMC_ERR_IO, "%s: exists and is not a folder", out);
    DIR *d = opendir(out);
    if (!d) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot list (%s)", out, strerror(errno));
    lmc_status s = LMC_OK;
    struct dirent *e;
    char path[4096];
    size_t plen = strlen(LMC_CKPT_TMP_PREFIX);
    while (!s && (e = readdir(d))) {
        if (strncmp(e->d_name, LMC_CKPT_TMP_PREFIX, plen) != 0) continue;
        if (!lmc_path_join(path, sizeof path, out, e->d_name)) {
            s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", out);
            break;
        }
        s = lmc_ckpt_remove_tree(path, err);
        if (!s && n_removed) (*n_removed)++;
    }
    closedir(d);
    return s;
}

lmc_status lmc_ckpt_latest(const char *out, char *path, size_t cap, int64_t *step, lmc_err *err) {
    DIR *d = opendir(out);
    if (!d) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot list (%s)", out, strerror(errno));
    int64_t best = -1;
    char cand[4096], best_name[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t k;
        if (!lmc_ckpt_parse_name(e->d_name, &k) || k <= best) continue;
        if (!lmc_path_join(cand, sizeof cand, out, e->d_name) || !is_dir(cand) || !lmc_ckpt_complete(cand, NULL))
            continue;
        best = k;
        snprintf(best_name, sizeof best_name, "%s", e->d_name);
    }
    closedir(d);
    if (best < 0) return lmc_err_set(err, LMC_ERR_IO, "%s: no complete checkpoint (step_N folder) to resume from", out);
    if (!lmc_path_join(path, cap, out, best_name)) return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", out);
    if (step) *step = best;
    return LMC_OK;
}

lmc_status lmc_ckpt_resolve(const char *out, const char *arg, char *path, size_t cap, lmc_err *err) {
    if (!strcmp(arg, "latest")) return lmc_ckpt_latest(out, path, cap, NULL, err);
    const char *missing = NULL;
    if (!is_dir(arg)) return lmc_err_set(err, LMC_ERR_IO, "%s: not a checkpoint folder", arg);
    if (!lmc_ckpt_complete(arg, &missing))
        return lmc_err_set(err, LMC_ERR_IO, "%s: incomplete checkpoint (no %s)", arg, missing);
    if ((size_t)snprintf(path, cap, "%s", arg) >= cap) return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", arg);
    return LMC_OK;
}

/* ---- --keep-last ---- */

static int cmp_i64_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The step of a per-step file of a ZeRO folder (zero_ckpt.c's shards and
 * step manifests, trainer_dist.c's optimizer shards), else false. */
static bool zero_file_step(const char *name, int64_t *step) {
    long long st;
    int rk, n = 0;
    if ((sscanf(name, "zero-step%lld-rank%d.bin%n", &st, &rk, &n) == 2 ||
         sscanf(name, "optim-step%lld-rank%d.safetensors%n", &st, &rk, &n) == 2 ||
         sscanf(name, "zero-manifest-step%lld.json%n", &st, &n) == 1) &&
        n > 0 && !name[n] && st >= 0) {
        *step = st;
        return true;
    }
    return false;
}

/* The step of `spare` when it is a step_N folder of OUT (the same folder on disk), else -1. */
static int64_t spare_step(const char *out, const char *spare) {
    char a[PATH_MAX], b[PATH_MAX], parent[4096], name[256];
    int64_t k;
    if (!spare || !split_path(spare, parent, sizeof parent, name, sizeof name) || !lmc_ckpt_parse_name(name, &k) ||
        !realpath(parent, a) || !realpath(out, b) || strcmp(a, b))
        return -1;
    return k;
}

lmc_status lmc_ckpt_keep_last(const char *out, int64_t keep, const char *spare, const char *zero_dir, int *n_removed,
                              lmc_err *err) {
    if (n_removed) *n_removed = 0;
    if (keep < 1) return lmc_err_set(err, LMC_ERR_ARG, "--keep-last %lld: keep at least one", (long long)keep);
    DIR *d = opendir(out);
    if (!d) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot list (%s)", out, strerror(errno));
    int64_t *steps = NULL, n = 0, cap = 0, k;
    lmc_status s = LMC_OK;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!lmc_ckpt_parse_name(e->d_name, &k) || !lmc_path_join(path, sizeof path, out, e->d_name) || !is_dir(path))
            continue;
        if (n == cap) {
            int64_t *grown = realloc(steps, sizeof *steps * (size_t)(cap = cap ? 2 * cap : 16));
            if (!grown) {
                s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory listing the checkpoints", out);
                break;
            }
            steps = grown;
        }
        steps[n++] = k;
    }
    closedir(d);
    if (s || n <= keep) {
        free(steps);
        return s;
    }
    qsort(steps, (size_t)n, sizeof *steps, cmp_i64_desc);
    int64_t oldest_kept = steps[keep - 1], sp = spare_step(out, spare);
    for (int64_t i = keep; i < n && !s; i++) { /* older than the newest `keep`: removed unless spared */
        if (steps[i] == sp || !lmc_ckpt_step_path(path, sizeof path, out, steps[i])) continue;
        s = lmc_ckpt_remove_tree(path, err);
        if (!s && n_removed) (*n_removed)++;
    }
    free(steps);
    if (s || !zero_dir || !(d = opendir(zero_dir))) return s; /* no ZeRO folder: nothing more */
    while (!s && (e = readdir(d))) {
        if (!zero_file_step(e->d_name, &k) || k >= oldest_kept || k == sp) continue;
        if (!lmc_path_join(path, sizeof path, zero_dir, e->d_name))
            s = lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", zero_dir);
        else if (unlink(path) != 0 && errno != ENOENT)
            s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot remove (%s)", path, strerror(errno));
    }
    closedir(d);
    return s;
}
