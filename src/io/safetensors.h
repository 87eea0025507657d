/* safetensors.h — memory-mapped safetensors files: one file or a sharded set
 * (model.safetensors.index.json), header parsed and validated up front
 * (offsets in range, non-overlapping, sizes consistent with dtype*shape),
 * plus a writer for checkpoints and benchmarks. */
#ifndef LMC_SAFETENSORS_H
#define LMC_SAFETENSORS_H

#include "lmc.h"
#include "core/dtype.h"

#include <stdint.h>
#include <stddef.h>

#define LMC_ST_MAX_DIMS 8

struct lmc_st_tensor {
    char *name;                     /* owned */
    enum lmc_dtype dtype;
    int ndim;
    int64_t shape[LMC_ST_MAX_DIMS];
    int64_t numel;
    const void *data;               /* points into the mapping; aligned to the dtype only
                                     * when the file's header is padded to 8 bytes
                                     * (lmc_st_write and HF writers do this) */
    size_t nbytes;
    int file;                       /* index into lmc_st.files */
};

struct lmc_st_file {
    char *path;                     /* owned */
    void *map;                      /* whole-file mapping (or malloc'd copy) */
    size_t size;
    int map_kind;                   /* 0 borrowed (lmc_st_parse), 1 mmap, 2 malloc */
};

struct lmc_st {
    struct lmc_st_file *files;
    int n_files;
    struct lmc_st_tensor *tensors;  /* sorted by name */
    int64_t n_tensors;
    char **meta;                    /* "__metadata__" pairs: key0, val0, key1, ... (owned) */
    int n_meta;                     /* number of pairs (all files together) */
};

/* Opens dir/model.safetensors, or the shards named by
 * dir/model.safetensors.index.json. On error *st is left empty (freeable). */
lmc_status lmc_st_open_dir(struct lmc_st *st, const char *dir, lmc_err *err);
/* Opens one safetensors file (path). */
lmc_status lmc_st_open_file(struct lmc_st *st, const char *path, lmc_err *err);
/* Parses and validates a safetensors image already in memory (buf, len); the
 * tensors' data point into buf, which the caller keeps alive. `label` names
 * the source in messages. Used by the fuzz target and by lmc_st_open_file. */
lmc_status lmc_st_parse(struct lmc_st *st, const void *buf, size_t len, const char *label, lmc_err *err);
/* Binary search by name; NULL if absent. */
const struct lmc_st_tensor *lmc_st_find(const struct lmc_st *st, const char *name);
/* Value of a "__metadata__" key (first file that has it); NULL if absent. */
const char *lmc_st_meta_get(const struct lmc_st *st, const char *key);
void lmc_st_free(struct lmc_st *st);

/* Writer: describe tensors, then write them in one file. data must hold
 * numel*dtype_size bytes. Metadata (string pairs) may be NULL. */
struct lmc_st_write_tensor {
    const char *name;
    enum lmc_dtype dtype;
    int ndim;
    int64_t shape[LMC_ST_MAX_DIMS];
    const void *data;
};
lmc_status lmc_st_write(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                        const char *const *meta_kv, int n_meta, lmc_err *err);
/* As lmc_st_write, the tensors whose data is NULL produced while the file
 * is written, in order: fill(user, i, buf, want, &got) puts the next
 * 1..want bytes of tensor i into buf (called until the tensor's size is
 * reached), so no tensor need exist whole in memory (a checkpoint
 * gathered from pipeline stages). A fill error ends the write with its
 * status (the file is not left). */
typedef lmc_status (*lmc_st_fill_fn)(void *user, int64_t i, void *buf, size_t want, size_t *got, lmc_err *err);
lmc_status lmc_st_write_fill(const char *path, const struct lmc_st_write_tensor *t, int64_t n,
                             const char *const *meta_kv, int n_meta, lmc_st_fill_fn fill, void *user, lmc_err *err);

#endif
