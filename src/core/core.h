/* core.h — small helpers every layer uses: asserts for broken invariants,
 * checked size arithmetic, whole-file reading with a size cap, logging. */
#ifndef LMC_CORE_H
#define LMC_CORE_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*lmc_abort_fn)(const char *cond, const char *file, int line);
void lmc_set_abort_hook(lmc_abort_fn fn);
void lmc_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

#define LMC_ASSERT(c) ((c) ? (void)0 : lmc_assert_fail(#c, __FILE__, __LINE__))
#define LMC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LMC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* *out = a * b; false on overflow or negative operands. */
static inline bool lmc_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool lmc_add_ok(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Reads a whole file into a NUL-terminated malloc'd buffer (caller frees).
 * Fails with LMC_ERR_IO (naming path) if unreadable, LMC_ERR_FORMAT if larger
 * than max_bytes. */
lmc_status lmc_file_read(const char *path, size_t max_bytes, char **out, size_t *len, lmc_err *err);
bool lmc_file_exists(const char *path);
/* Writes n bytes of data to path atomically: into "path.tmp", flushed and
 * fsync'ed (EINVAL, a file system without fsync, is not an error), then
 * renamed over path; on failure the temporary is removed and path keeps
 * what it held (LMC_ERR_IO naming path). */
lmc_status lmc_file_write_atomic(const char *path, const void *data, size_t n, lmc_err *err);
/* Copies the file src to dst (created or truncated), in pieces: no size
 * cap, nothing held whole. LMC_ERR_IO naming the path that failed. */
lmc_status lmc_file_copy(const char *src, const char *dst, lmc_err *err);
/* Joins dir and name into buf ("dir/name"); false if it does not fit. */
bool lmc_path_join(char *buf, size_t cap, const char *dir, const char *name);

/* Validates UTF-8; returns the length of the longest valid prefix. */
size_t lmc_utf8_valid_prefix(const char *s, size_t n);
/* Length of the longest prefix of s that ends on a complete UTF-8 sequence
 * boundary, treating an incomplete trailing sequence as "not yet" (for
 * streaming output). Invalid bytes count as complete single bytes. */
size_t lmc_utf8_complete_prefix(const char *s, size_t n);

/* Copies s[0..n) to out replacing each maximal invalid subsequence with
 * U+FFFD (as Python's errors="replace" does). If !final, an incomplete
 * sequence at the end is left unconsumed. out needs 3*n+1 bytes. Returns
 * the bytes written; *consumed gets the input bytes used. */
size_t lmc_utf8_sanitize(const char *s, size_t n, bool final, char *out, size_t *consumed);

/* Monotonic time in seconds. */
double lmc_time_now(void);

/* Logging to stderr: level 0 error, 1 info, 2 debug. */
void lmc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
