/* weights_gguf.c — a model loaded from a GGUF file (`-m FILE.gguf`, as
 * llama.cpp writes them): the config from the metadata through the
 * architecture's key table (gguf_arch.c), every tensor of the spec table
 * found by its GGUF name and checked against the config's shape; F32, F16
 * and BF16 matrices bound as dense weights (in place when the dtype is
 * kept), the block-quantized types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
 * Q5_K, Q6_K) bound in place as quantized linears (never expanded), a
 * mixture of experts' stacked expert tensors (ne [in, out, experts]) bound
 * per expert as slices of the stack, a
 * quantized token embedding kept in its blocks (the lookup dequantizes the
 * rows it reads; a tied head runs the quantized rows), vectors as f32 copies; llama.cpp's Q/K row order
 * undone (a permuted copy). Tensors the model does not use are errors. */
#include "model/model.h"
#include "core/core.h"
#include "core/dtype.h"
#include "io/gguf.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct gload {
    struct lmc_model *m;
    const struct lmc_gguf_variant *v;
    bool *used;
    const char *path;
};

static bool float_type(int type, enum lmc_dtype *dt) {
    switch (type) {
    case LMC_GGML_F32: *dt = LMC_DTYPE_F32; return true;
    case LMC_GGML_F16: *dt = LMC_DTYPE_F16; return true;
    case LMC_GGML_BF16: *dt = LMC_DTYPE_BF16; return true;
    default: return false;
    }
}

static bool quant_type(int type) {
    switch (type) {
    case LMC_GGML_Q8_0: case LMC_GGML_Q4_0: case LMC_GGML_Q4_1: case LMC_GGML_Q5_0: case LMC_GGML_Q5_1:
    case LMC_GGML_Q4_K: case LMC_GGML_Q5_K: case LMC_GGML_Q6_K: return true;
    default: return false;
    }
}

/* The dtype a float matrix is used in (as weights.c: the file's unless
 * --dtype bf16/f16 asks for a conversion). */
static enum lmc_dtype use_dtype(enum lmc_wdtype w, enum lmc_dtype disk) {
    return w == LMC_WDTYPE_BF16 ? LMC_DTYPE_BF16 : w == LMC_WDTYPE_F16 ? LMC_DTYPE_F16 : disk;
}

/* rows x cols of any known type dequantized to f32 into an owned buffer. */
/* The whole pages of [p, p + n) in the file's private read-only mapping
 * released from this process (a tensor copied elsewhere, never read there
 * again: its pages would count in the resident set twice). */
static void drop_pages(const void *p, size_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) / (uintptr_t)ps * (uintptr_t)ps;
    uintptr_t e = ((uintptr_t)p + n) / (uintptr_t)ps * (uintptr_t)ps;
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

static float *dequant(struct lmc_model *m, const struct lmc_gguf_tensor *t, const void *data, int64_t rows,
                      int64_t cols, int64_t rb) {
    float *f = lmc_model_own(m, (size_t)(rows * cols) * sizeof *f);
    if (f)
        for (int64_t r = 0; r < rows; r++)
            lmc_ggml_dequantize_row(t->type, (const uint8_t *)data + r * rb, f + r * cols, cols);
    return f;
}

static lmc_status load_one(void *user, const struct lmc_tensor_ref *r, lmc_err *err) {
    struct gload *G = user;
    struct lmc_model *m = G->m;
    char name[192];
    if (!lmc_gguf_tensor_name(m->arch, r, name, sizeof name)) {
        if (!r->required) return LMC_OK;
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: tensor '%s' has no GGUF name in lmc", G->path, r->name);
    }
    const struct lmc_gguf_tensor *t = lmc_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (!r->required) return LMC_OK;
        if (r->ndim == 1)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s' (expected shape [%lld])", G->path, name,
                               (long long)r->rows);
        if (r->spec->kind == LMC_TK_EXPERT_W)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s' (expected ne [%lld, %lld, %lld])", G->path,
                               name, (long long)r->cols, (long long)r->rows, (long long)m->cfg.num_experts);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s' (expected ne [%lld, %lld])", G->path, name,
                           (long long)r->cols, (long long)r->rows);
    }
    G->used[t - m->gguf->tensors] = true;
    int64_t rows = r->rows, cols = r->cols, rb = 0;
    const uint8_t *base = NULL;
    enum lmc_dtype dt = LMC_DTYPE_F32;
    bool is_float = float_type(t->type, &dt), is_quant = quant_type(t->type);
    bool blocks = lmc_ggml_row_bytes(t->type, cols, &rb); /* a vector: rows of one */
    if (!lmc_gguf_tensor_view(t, r, &m->cfg, blocks ? rb : 0, &base)) {
        char got[96], want[96];
        lmc_gguf_shape_str(t, r, &m->cfg, got, sizeof got, want, sizeof want);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has ne [%s], the config says [%s]", G->path, name, got,
                           want);
    }
    if ((!is_float && !is_quant) || !blocks)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "%s: tensor '%s' is %s (lmc runs F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, "
                           "Q6_K with whole blocks per row)", G->path, name,
                           lmc_ggml_type_name(t->type) ? lmc_ggml_type_name(t->type) : "an unknown type");
    const void *data = base;
    uint8_t kind = r->spec->kind;
    bool matrix = r->ndim == 2 && (kind == LMC_TK_LIN_W || kind == LMC_TK_HEAD || kind == LMC_TK_EXPERT_W);
    /* a quantized linear on a host backend: copied into huge pages (lmc_model_own_huge), its file pages released */
    bool huge = is_quant && m->qheap_on && (kind == LMC_TK_LIN_W || kind == LMC_TK_HEAD) && r->ndim == 2;
    /* Q4_K and Q4_0 there are repacked as they are copied (quant/q4k_repack.c: the CPU kernels' layouts, the
     * file's bytes come back exactly; Q4_K 148 bytes a super-block where the file has 144, Q4_0 the same bytes) */
    bool q4kr = huge && t->type == LMC_GGML_Q4_K, q40r = huge && t->type == LMC_GGML_Q4_0, rep = q4kr || q40r;
    int64_t hb = q4kr ? cols / 256 * LMC_Q4KR_BYTES : rb; /* bytes of a row in the huge-page copy */
    int64_t heads = lmc_gguf_rope_heads(r, &m->cfg, G->v);
    if (heads > 0) { /* llama.cpp's rotary row order back to Hugging Face's */
        if (rows % (2 * heads))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s': %lld rows do not split into %lld heads of even size",
                               G->path, name, (long long)rows, (long long)heads);
        void *p = huge ? lmc_model_own_huge(m, (size_t)(rows * hb)) : lmc_model_own(m, (size_t)(rows * rb));
        void *tmp = rep ? malloc((size_t)(rows * rb)) : p; /* permuted, then repacked into p */
        if (!p || !tmp) {
            if (tmp != p) free(tmp);
            return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
        }
        lmc_gguf_permute_qk(base, tmp, rows, (size_t)rb, heads, true);
        if (rep) {
            (q4kr ? lmc_q4kr_pack_rows : lmc_q40r_pack_rows)(tmp, p, rows, cols);
            free(tmp);
        }
        data = p;
        if (m->gguf->map_kind == 1) drop_pages(base, (size_t)(rows * rb)); /* read once: not resident twice */
    } else if (huge) {
        uint8_t *p = lmc_model_own_huge(m, (size_t)(rows * hb));
        if (!p) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
        /* in slices ending on 4 MB boundaries of the mapping, each slice's file pages released after its copy:
         * the tensor is never resident twice (a 1.1B model's Q8_0 head is 70 MB) */
        size_t n = (size_t)(rows * rb), off = 0, sl = (size_t)4 << 20;
        if (rep) { /* whole rows: slices of about 4 MB, the file pages below each slice's end released */
            long ps = sysconf(_SC_PAGESIZE);
            int64_t step = LMC_MAX((int64_t)1, (int64_t)sl / rb);
            for (int64_t r0 = 0; r0 < rows; r0 += step) {
                int64_t nr = LMC_MIN(step, rows - r0);
                (q4kr ? lmc_q4kr_pack_rows : lmc_q40r_pack_rows)(base + r0 * rb, p + r0 * hb, nr, cols);
                size_t e = (size_t)((r0 + nr) * rb);
                if (m->gguf->map_kind == 1 && ps > 0) {
                    drop_pages(base + off, e - off);
                    size_t fl = (size_t)(((uintptr_t)base + e) / (uintptr_t)ps * (uintptr_t)ps - (uintptr_t)base);
                    if (fl > off) off = fl; /* the next slice starts on a page boundary (or its first page) */
                }
            }
        }
        while (!rep && off < n) {
            size_t e = LMC_MIN(n, (((uintptr_t)base + off) / sl + 1) * sl - (uintptr_t)base);
            memcpy(p + off, base + off, e - off);
            if (m->gguf->map_kind == 1) drop_pages(base + off, e - off);
            off = e;
        }
        data = p;
    }
    if (is_quant && matrix) {
        struct lmc_qweight *w = calloc(1, sizeof *w);
        if (!w) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
        lmc_status s = q4kr   ? lmc_qweight_init_q4kr(w, data, rows, cols, err)
                       : q40r ? lmc_qweight_init_q40r(w, data, rows, cols, err)
                              : lmc_qweight_init_ggml(w, t->type, data, rows, cols, err);
        if (s) {
            free(w);
            lmc_err_prefix(err, "%s: tensor '%s': ", G->path, name);
            return s;
        }
        return lmc_model_bind_qweight(m, r, w, err);
    }
    m->n_params += r->numel;
    if (kind == LMC_TK_TOK_EMB && is_quant) { /* kept in its blocks: the lookup dequantizes the rows it reads */
        struct lmc_qweight *qe = lmc_model_own(m, sizeof *qe);
        if (!qe) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
        lmc_status s = lmc_qweight_init_ggml(qe, t->type, data, rows, cols, err);
        if (s) {
            lmc_err_prefix(err, "%s: tensor '%s': ", G->path, name);
            return s;
        }
        lmc_weights_bind(&m->w, r, NULL, LMC_DTYPE_F32);
        m->w.tok_emb_q = qe;
        if (!m->cfg.tie_word_embeddings) m->weight_bytes += (size_t)(rows * rb); /* else counted as the head */
    }
    if (is_quant || r->ndim == 1 || kind == LMC_TK_VEC) { /* vectors: f32 */
        if (kind != LMC_TK_TOK_EMB) {
            float *f = dequant(m, t, data, rows, cols, rb);
            if (!f) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
            lmc_weights_bind(&m->w, r, f, LMC_DTYPE_F32);
        }
        if (kind == LMC_TK_TOK_EMB && is_quant && m->cfg.tie_word_embeddings) {
            /* the tied head runs the quantized rows */
            struct lmc_tensor_spec hs = *r->spec;
            struct lmc_tensor_ref hr = *r;
            hs.kind = LMC_TK_HEAD;
            hr.spec = &hs;
            struct lmc_qweight *w = calloc(1, sizeof *w);
            if (!w) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
            lmc_status s = lmc_qweight_init_ggml(w, t->type, data, rows, cols, err);
            if (s) {
                free(w);
                return s;
            }
            if ((s = lmc_model_bind_qweight(m, &hr, w, err))) return s;
            m->n_params -= r->numel; /* counted once, as the embedding */
        }
        return LMC_OK;
    }
    enum lmc_dtype ut = use_dtype(m->wdtype, dt);
    if (ut == dt && ((uintptr_t)data % (uintptr_t)lmc_dtype_size(dt)) == 0) {
        lmc_weights_bind(&m->w, r, data, dt);
        return LMC_OK;
    }
    void *buf = lmc_model_own(m, (size_t)r->numel * (size_t)lmc_dtype_size(ut));
    float *row = malloc((size_t)cols * sizeof *row);
    if (!buf || !row) {
        free(row);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", name);
    }
    for (int64_t i = 0; i < rows; i++) {
        lmc_ggml_dequantize_row(t->type, (const uint8_t *)data + i * rb, row, cols);
        for (int64_t j = 0; j < cols; j++) {
            if (ut == LMC_DTYPE_F32) ((float *)buf)[i * cols + j] = row[j];
            else if (ut == LMC_DTYPE_BF16) ((uint16_t *)buf)[i * cols + j] = lmc_f32_to_bf16(row[j]);
            else ((uint16_t *)buf)[i * cols + j] = lmc_f32_to_f16(row[j]);
        }
    }
    free(row);
    lmc_weights_bind(&m->w, r, buf, ut);
    return LMC_OK;
}

lmc_status lmc_model_load_gguf(struct lmc_model *m, const char *path, lmc_err *err) {
    m->gguf = calloc(1, sizeof *m->gguf);
    if (!m->gguf) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
    lmc_status s = lmc_gguf_open(m->gguf, path, err);
    if (s) {
        free(m->gguf);
        m->gguf = NULL;
        return s;
    }
    return lmc_model_bind_gguf(m, path, err);
}

lmc_status lmc_model_bind_gguf(struct lmc_model *m, const char *label, lmc_err *err) {
    struct gload G = {m, NULL, NULL, label};
    lmc_status s = lmc_gguf_config(m->gguf, label, &m->cfg, &G.v, err);
    if (s) return s;
    if (m->qheap_on) /* the file's bytes, Q4_K's repacking (148 / 144) and each tensor's alignment */
        lmc_model_qheap_reserve(m, m->gguf->size + m->gguf->size / 36 + 64 * (size_t)m->gguf->n_tensors);
    m->arch = lmc_arch_of(&m->cfg);
    if ((s = lmc_config_check_sizes(&m->cfg, err)) || (s = m->arch->check(&m->cfg, err))) return s;
    if (m->cfg.num_layers > m->gguf->n_tensors) /* every block has tensors: bounds the layer table by the file */
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: block_count %lld, but the file holds %lld tensors", label,
                           (long long)m->cfg.num_layers, (long long)m->gguf->n_tensors);
    if (m->cfg.num_experts > 0) { /* each sparse layer stacks >= 1 element per expert in 3 tensors */
        double need = 0, have = 0;
        for (int64_t l = 0; l < m->cfg.num_layers; l++)
            need += lmc_config_layer_sparse(&m->cfg, l) ? 3.0 * (double)m->cfg.num_experts : 0.0;
        for (int64_t i = 0; i < m->gguf->n_tensors; i++) {
            double n = 1;
            for (int d = 0; d < m->gguf->tensors[i].n_dims; d++) n *= (double)m->gguf->tensors[i].ne[d];
            have += n;
        }
        if (need > have)
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: expert_count %lld over %lld layers needs more weights than the "
                               "file's tensors hold", label, (long long)m->cfg.num_experts,
                               (long long)m->cfg.num_layers);
    }
    m->rot_dim = lmc_arch_rot_dim(m->arch, &m->cfg);
    G.used = calloc((size_t)m->gguf->n_tensors + 1, 1);
    m->w.layers = lmc_weights_layers_alloc(&m->cfg);
    if (!G.used || !m->w.layers) {
        free(G.used);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
    }
    s = lmc_arch_walk(m->arch, &m->cfg, load_one, &G, err);
    if (!s && !m->w.head.w.data) m->w.head.w = m->w.tok_emb; /* tied, dense */
    for (int64_t i = 0; !s && i < m->gguf->n_tensors; i++)
        if (!G.used[i])
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of a %s model with %lld layers)",
                            label, m->gguf->tensors[i].name, G.v->name, (long long)m->cfg.num_layers);
    free(G.used);
    return s;
}
