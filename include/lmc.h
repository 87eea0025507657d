/* lmc.h — the public C API of liblmc: status codes and error messages,
 * model loading, tokenization and generation. Handles are opaque; every
 * _init/_load has a matching _free. Functions that can fail because of user
 * input return lmc_status and write a message naming the file/field into an
 * lmc_err supplied by the caller. */
#ifndef LMC_H
#define LMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lmc_status {
    LMC_OK = 0,
    LMC_ERR_ARG,         /* bad argument / option / request value */
    LMC_ERR_IO,          /* a file or folder cannot be opened or read */
    LMC_ERR_FORMAT,      /* a file's content is malformed */
    LMC_ERR_UNSUPPORTED, /* well-formed but not supported (dtype, arch, ...) */
    LMC_ERR_OOM,         /* an allocation failed or a size is impossible */
    LMC_ERR_INTERNAL,    /* anything else (should not happen) */
} lmc_status;

/* Caller-owned error record. lmc functions fill it only on failure. */
typedef struct lmc_err {
    lmc_status status;
    char msg[1024];
} lmc_err;

const char *lmc_status_str(lmc_status s);
/* Formats msg into e (if non-NULL) and returns s, so callers can write
 * `return lmc_err_set(err, LMC_ERR_FORMAT, "%s: ...", path);` */
lmc_status lmc_err_set(lmc_err *e, lmc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes context to an existing message ("loading X: " + old msg). */
lmc_status lmc_err_prefix(lmc_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
