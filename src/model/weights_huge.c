/* weights_huge.c — a model that runs on the host (CPU backend) gets its
 * dense float matrices (F32, F16, BF16 linears, experts and the head) moved
 * out of the file mapping into one anonymous arena of transparent huge
 * pages (lmc_model_weights_huge), laid out in the order decode reads them.
 *
 * Why: decode streams every weight once per token, and the speed of that
 * stream depended on the page-cache state of the model file. Measured on
 * the 125M F16 bench model, 1 thread, thread CPU time per matmul call
 * (bench/results/moe-cpu-b-2026-12-06.md): the head (49 MB, one matrix)
 * streamed at 14 GB/s from a GGUF file written hours earlier and at 25.7
 * GB/s from a fresh `cp` of the same file (large page-cache folios) or
 * from a huge-page anonymous copy; bench_gemv16's 27 GB/s came from a file
 * it had just written. The arena makes the fast case the only case.
 *
 * Each matrix is copied, then its file pages are released from this
 * process (MADV_DONTNEED on whole pages of the private read-only mapping:
 * the page cache keeps them, the resident set does not count them twice);
 * a source that was an owned conversion buffer (a permuted q/k, a dtype
 * conversion) is freed. Values are unchanged: the bits of every product
 * stay those of the mapped weights. Skipped (the matrices stay where they
 * are) when the arena would exceed half of MemAvailable, or when it cannot
 * be allocated. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/core.h"
#include "io/gguf.h"
#include "model/model.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE_BYTES ((size_t)2 << 20)
#define HUGE_ALIGN 64 /* each matrix starts on a cache line */

struct huge_item {
    struct lmc_mat *w;
    const void *src;
};

/* Whether the matrix goes to the arena: a dense float matrix with data. */
static bool movable(const struct lmc_mat *w) {
    return w->data && w->rows > 0 && w->cols > 0 &&
           (w->dtype == LMC_DTYPE_F32 || w->dtype == LMC_DTYPE_F16 || w->dtype == LMC_DTYPE_BF16);
}

static size_t mat_size(const struct lmc_mat *w) {
    return (size_t)w->rows * (size_t)w->cols * (size_t)lmc_dtype_size(w->dtype);
}

/* The matrices in decode's reading order: per layer its linears in slot
 * order, then each expert's gate, up and down (a token's experts read
 * gate and up together); the head last. n counts them; items NULL: count
 * only. */
static int64_t collect(struct lmc_model *m, struct huge_item *items) {
    int64_t n = 0;
#define ADD(mat)                                         \
    do {                                                 \
        if (movable(mat)) {                              \
            if (items) items[n].w = (mat);               \
            n++;                                         \
        }                                                \
    } while (0)
    for (int64_t l = 0; m->w.layers && l < m->cfg.num_layers; l++) {
        struct lmc_block_w *b = &m->w.layers[l];
        for (int i = 0; i < LMC_L_N; i++)
            if (b->lin[i].format == LMC_WFMT_DENSE) ADD(&b->lin[i].w);
        for (int64_t e = 0; b->experts && e < m->cfg.num_experts; e++)
            for (int x = 0; x < LMC_X_N; x++)
                if (b->experts[e * LMC_X_N + x].format == LMC_WFMT_DENSE) ADD(&b->experts[e * LMC_X_N + x].w);
    }
    if (m->w.head.format == LMC_WFMT_DENSE) ADD(&m->w.head.w);
#undef ADD
    return n;
}

/* MemAvailable in bytes; 0 if unknown. */
static size_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

static bool inside(const void *p, const char *b, size_t n) {
    return p && (const char *)p >= b && (const char *)p < b + n;
}

/* Whether a pointer the arena leaves alone (an embedding table, a vector,
 * a bias, a matrix not moved) lies in [b, b + n). */
static bool still_used(const struct lmc_model *m, const char *b, size_t n) {
    if (inside(m->w.tok_emb.data, b, n) || inside(m->w.pos_emb.data, b, n) || inside(m->w.norm_f, b, n) ||
        inside(m->w.norm_f_b, b, n) || inside(m->w.head.bias, b, n) ||
        (!movable(&m->w.head.w) && inside(m->w.head.w.data, b, n)))
        return true;
    for (int64_t l = 0; m->w.layers && l < m->cfg.num_layers; l++) {
        const struct lmc_block_w *w = &m->w.layers[l];
        for (int i = 0; i < LMC_V_N; i++)
            if (inside(w->vec[i], b, n)) return true;
        for (int i = 0; i < LMC_L_N; i++)
            if (inside(w->lin[i].bias, b, n) || inside(w->lin[i].w.data, b, n)) return true;
        for (int64_t i = 0; w->experts && i < m->cfg.num_experts * LMC_X_N; i++)
            if (inside(w->experts[i].bias, b, n) || inside(w->experts[i].w.data, b, n)) return true;
    }
    return false;
}

/* After the move: frees the owned buffers that held a moved matrix and
 * nothing still in use (a permuted q/k, a converted dtype; a buffer of
 * several views goes once none of them is left in it). */
static void free_sources(struct lmc_model *m, const struct huge_item *items, int64_t n) {
    for (int i = 0; i < m->n_owned;) {
        char *b = m->owned[i];
        size_t sz = malloc_usable_size(b);
        bool held = false;
        for (int64_t k = 0; k < n && !held; k++) held = inside(items[k].src, b, sz);
        if (!held || still_used(m, b, sz)) {
            i++;
            continue;
        }
        m->owned[i] = m->owned[--m->n_owned];
        free(b);
    }
}

/* Releases the whole pages of [p, p + n) of a private read-only file mapping. */
static void drop_file_pages(const void *p, size_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) / (uintptr_t)ps * (uintptr_t)ps;
    uintptr_t e = ((uintptr_t)p + n) / (uintptr_t)ps * (uintptr_t)ps;
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Whether [p, p + n) lies in one of the model's file mappings. */
static bool in_file(const struct lmc_model *m, const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p, e = a + n;
    if (m->gguf && m->gguf->map_kind == 1 && a >= (uintptr_t)m->gguf->image &&
        e <= (uintptr_t)m->gguf->image + m->gguf->size)
        return true;
    for (int i = 0; i < m->st.n_files; i++) {
        const struct lmc_st_file *f = &m->st.files[i];
        if (f->map_kind == 1 && a >= (uintptr_t)f->map && e <= (uintptr_t)f->map + f->size) return true;
    }
    return false;
}

bool lmc_model_weights_huge(struct lmc_model *m) {
    int64_t n = collect(m, NULL);
    if (n == 0) return false;
    struct huge_item *items = malloc((size_t)n * sizeof *items);
    if (!items) return false;
    collect(m, items);
    /* distinct sources (a tied head shares tok_emb's data: copied once, below) */
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) total += (mat_size(items[i].w) + HUGE_ALIGN - 1) / HUGE_ALIGN * HUGE_ALIGN;
    size_t avail = mem_available();
    if (avail == 0 || total > avail / 2 || total > SIZE_MAX - 2 * HUGE_BYTES) {
        free(items);
        return false;
    }
    size_t span = (total + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
    /* owned like any converted weight (freed with the model); the arena
     * starts on the first 2 MB boundary inside the allocation */
    char *raw = lmc_model_own(m, span + HUGE_BYTES);
    if (!raw) {
        free(items);
        return false;
    }
    char *arena = (char *)(((uintptr_t)raw + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES);
    madvise(arena, span, MADV_HUGEPAGE); /* advisory: without THP the copy still works */
    const void *tied_src = m->w.head.w.data == m->w.tok_emb.data ? m->w.tok_emb.data : NULL;
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        struct lmc_mat *w = items[i].w;
        size_t bytes = mat_size(w);
        const void *src = w->data;
        memcpy(arena + at, src, bytes);
        w->data = arena + at;
        if (src == tied_src) { /* the embedding reads the same table */
            m->w.tok_emb.data = w->data;
            tied_src = NULL;
        }
        items[i].src = src;
        if (in_file(m, src, bytes)) drop_file_pages(src, bytes);
        at += (bytes + HUGE_ALIGN - 1) / HUGE_ALIGN * HUGE_ALIGN;
    }
    free_sources(m, items, n);
    free(items);
    return true;
}
