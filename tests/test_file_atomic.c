/* test_file_atomic.c — lmc_file_write_atomic (core/file.c): the bytes
 * written read back whole (text, binary with NULs, empty), a second write
 * replaces the first, and failed writes (no such folder; the path a folder,
 * so the rename fails) return LMC_ERR_IO naming the path, keep what was
 * there and leave no temporary behind. */
#include "core/core.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* path holds exactly the n bytes of want */
static bool holds(const char *path, const void *want, size_t n) {
    char *got = NULL;
    size_t len = 0;
    lmc_err err = {0};
    if (lmc_file_read(path, 1 << 20, &got, &len, &err)) return false;
    bool same = len == n && (n == 0 || memcmp(got, want, n) == 0);
    free(got);
    return same;
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/lmc_test_atomic_XXXXXX");
    if (!mkdtemp(root)) return 1;
    char path[256], tmp[260], dir[256], bad[256];
    snprintf(path, sizeof path, "%s/state.json", root);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    lmc_err err = {0};

    const char *text = "{\"step\": 5, \"batch\": 3}";
    CHECK(lmc_file_write_atomic(path, text, strlen(text), &err) == LMC_OK);
    CHECK(holds(path, text, strlen(text)));
    CHECK(!exists(tmp));

    /* a second write replaces the first whole (a shorter one leaves no tail) */
    const char *shorter = "{}";
    CHECK(lmc_file_write_atomic(path, shorter, 2, &err) == LMC_OK);
    CHECK(holds(path, shorter, 2));

    /* binary bytes with NULs, 3001 of them (odd), and an empty file */
    unsigned char bin[3001];
    for (size_t i = 0; i < sizeof bin; i++) bin[i] = (unsigned char)((i * 37u + 11u) % 251u);
    bin[0] = bin[1500] = 0;
    CHECK(lmc_file_write_atomic(path, bin, sizeof bin, &err) == LMC_OK);
    CHECK(holds(path, bin, sizeof bin));
    CHECK(lmc_file_write_atomic(path, NULL, 0, &err) == LMC_OK);
    CHECK(holds(path, "", 0));
    CHECK(lmc_file_write_atomic(path, text, strlen(text), &err) == LMC_OK);

    /* no such folder: an I/O error naming the path, nothing created */
    snprintf(bad, sizeof bad, "%s/missing/state.json", root);
    memset(&err, 0, sizeof err);
    CHECK(lmc_file_write_atomic(bad, text, strlen(text), &err) == LMC_ERR_IO);
    CHECK_MSG(strstr(err.msg, bad) != NULL, "message: %s", err.msg);

    /* the path is a non-empty folder: the rename fails, the folder and its file stay, no temporary left */
    snprintf(dir, sizeof dir, "%s/adir", root);
    CHECK(mkdir(dir, 0755) == 0);
    char inner[300], dtmp[300];
    snprintf(inner, sizeof inner, "%s/keep.txt", dir);
    snprintf(dtmp, sizeof dtmp, "%s.tmp", dir);
    CHECK(lmc_file_write_atomic(inner, "kept", 4, &err) == LMC_OK);
    memset(&err, 0, sizeof err);
    CHECK(lmc_file_write_atomic(dir, text, strlen(text), &err) == LMC_ERR_IO);
    CHECK_MSG(strstr(err.msg, dir) != NULL, "message: %s", err.msg);
    CHECK(holds(inner, "kept", 4));
    CHECK(!exists(dtmp));
    CHECK(holds(path, text, strlen(text))); /* the earlier file is untouched */

    unlink(inner);
    rmdir(dir);
    unlink(path);
    CHECK(rmdir(root) == 0); /* nothing else was left in the folder */
    return test_finish("test_file_atomic");
}
