/* cublaslt_model.cc — the cuBLASLt model of cublaslt_model.h: checked
 * descriptors, a heuristic that records what it was asked, and the GEMM on
 * the host (products summed in double, rounded once). */
#include "cublaslt_model.h"

#include <cstdarg>
#include <vector>

bool emu_lt_refuse_bias, emu_lt_quiet;
long emu_gemm_calls, emu_gemm_bias_epilogues, emu_lt_heuristic_calls;

enum { LIVE = 0x4c54, DEAD = 0xdead };
struct emu_lt_handle { int magic; bool refuse_bias; };
struct emu_lt_desc {
    int magic;
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t pointer_mode, transa, transb;
    uint32_t epilogue;
    const void *bias;
    int32_t bias_type; /* -1: D's type */
};
struct emu_lt_layout {
    int magic;
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t order, batch;
    int64_t stride; /* elements between batch members (STRIDED_BATCH_OFFSET) */
};
struct emu_lt_pref {
    int magic;
    uint64_t max_ws;
    uint32_t align[4]; /* A B C D */
};
/* what an algorithm was found for */
struct algo_info {
    int32_t transa, transb;
    uint32_t epilogue;
    int32_t bias_type;
    cudaDataType_t ta, tb, tc, td;
    uint64_t m, n, k;
    int64_t lda, ldb, ldc, ldd;
    uint32_t align[4], align_bias;
    uint64_t max_ws;
};
static std::vector<algo_info> algos;
static const uint64_t ALGO_MAGIC = 0x656d752d6c74616cull;

/* prints the refusal and returns the documented status */
__attribute__((format(printf, 2, 3))) static cublasStatus_t bad(cublasStatus_t s, const char *fmt, ...) {
    if (emu_lt_quiet) return s;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu cublasLt: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (%s)\n", cublasLtGetStatusString(s));
    va_end(ap);
    return s;
}
#define INVALID(...) bad(CUBLAS_STATUS_INVALID_VALUE, __VA_ARGS__)
#define UNSUPPORTED(...) bad(CUBLAS_STATUS_NOT_SUPPORTED, __VA_ARGS__)

template <typename T> static bool live(const T *p) { return p && p->magic == LIVE; }
static const char *type_name(int t) {
    switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    default: return "an unmodelled type";
    }
}
static int type_size(int t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0; }
static int ptr_align(const void *p) {
    int a = 256;
    while (a > 1 && (uintptr_t)p % (uintptr_t)a) a >>= 1;
    return a;
}

const char *cublasLtGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_(other)";
    }
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    if (!h) return INVALID("cublasLtCreate: NULL handle pointer");
    *h = new emu_lt_handle{LIVE, emu_lt_refuse_bias};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    if (!live(h)) return bad(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtDestroy: not a live handle");
    h->magic = DEAD; /* kept: a later use is caught */
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
    if (!d) return INVALID("cublasLtMatmulDescCreate: NULL descriptor pointer");
    if (compute != CUBLAS_COMPUTE_32F)
        return UNSUPPORTED("cublasLtMatmulDescCreate: computeType %d (the model has CUBLAS_COMPUTE_32F only)", compute);
    if (scale != CUDA_R_32F)
        return INVALID("cublasLtMatmulDescCreate: scaleType %s with CUBLAS_COMPUTE_32F (needs CUDA_R_32F)", type_name(scale));
    *d = new emu_lt_desc{LIVE, compute, scale, CUBLASLT_POINTER_MODE_HOST, CUBLAS_OP_N, CUBLAS_OP_N,
                         CUBLASLT_EPILOGUE_DEFAULT, nullptr, -1};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    if (!live(d)) return INVALID("cublasLtMatmulDescDestroy: not a live descriptor (destroyed twice?)");
    d->magic = DEAD;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                              const void *buf, size_t size) {
    if (!live(d)) return INVALID("cublasLtMatmulDescSetAttribute: not a live descriptor");
    if (!buf) return INVALID("cublasLtMatmulDescSetAttribute(%d): NULL buffer", a);
    auto need = [&](size_t n, const char *what) {
        if (size == n) return true;
        INVALID("cublasLtMatmulDescSetAttribute(%s): %zu bytes, the attribute has %zu", what, size, n);
        return false;
    };
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
        const char *nm = a == CUBLASLT_MATMUL_DESC_TRANSA ? "TRANSA" : "TRANSB";
        if (!need(sizeof(int32_t), nm)) return CUBLAS_STATUS_INVALID_VALUE;
        int32_t v;
        memcpy(&v, buf, 4);
        if (v != CUBLAS_OP_N && v != CUBLAS_OP_T)
            return INVALID("cublasLtMatmulDescSetAttribute(%s): %d is not CUBLAS_OP_N/T", nm, v);
        (a == CUBLASLT_MATMUL_DESC_TRANSA ? d->transa : d->transb) = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: {
        if (!need(sizeof(int32_t), "POINTER_MODE")) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->pointer_mode, buf, 4);
        if (d->pointer_mode != CUBLASLT_POINTER_MODE_HOST)
            return UNSUPPORTED("cublasLtMatmulDescSetAttribute(POINTER_MODE): the model has host alpha/beta only");
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        if (!need(sizeof(uint32_t), "EPILOGUE")) return CUBLAS_STATUS_INVALID_VALUE;
        uint32_t v;
        memcpy(&v, buf, 4);
        if (v != CUBLASLT_EPILOGUE_DEFAULT && v != CUBLASLT_EPILOGUE_BIAS)
            return UNSUPPORTED("cublasLtMatmulDescSetAttribute(EPILOGUE): %u not modelled (DEFAULT, BIAS)", v);
        d->epilogue = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (!need(sizeof(void *), "BIAS_POINTER")) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias, buf, sizeof(void *));
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if (!need(sizeof(int32_t), "BIAS_DATA_TYPE")) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias_type, buf, 4);
        if (d->bias_type != -1 && !type_size(d->bias_type))
            return INVALID("cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE): %d is no float type", d->bias_type);
        return CUBLAS_STATUS_SUCCESS;
    default:
        return UNSUPPORTED("cublasLtMatmulDescSetAttribute: attribute %d not modelled", a);
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    if (!l) return INVALID("cublasLtMatrixLayoutCreate: NULL layout pointer");
    if (!type_size(type)) return UNSUPPORTED("cublasLtMatrixLayoutCreate: type %d not modelled", type);
    if (rows > ((uint64_t)1 << 40) || cols > ((uint64_t)1 << 40))
        return INVALID("cublasLtMatrixLayoutCreate: %llu x %llu (a negative size cast?)",
                       (unsigned long long)rows, (unsigned long long)cols);
    if (ld < (int64_t)(rows ? rows : 1))
        return INVALID("cublasLtMatrixLayoutCreate: column-major %llu x %llu with ld %lld < rows",
                       (unsigned long long)rows, (unsigned long long)cols, (long long)ld);
    *l = new emu_lt_layout{LIVE, type, rows, cols, ld, CUBLASLT_ORDER_COL, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    if (!live(l)) return INVALID("cublasLtMatrixLayoutDestroy: not a live layout (destroyed twice?)");
    l->magic = DEAD;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void *buf, size_t size) {
    if (!live(l)) return INVALID("cublasLtMatrixLayoutSetAttribute: not a live layout");
    if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET) { /* int64_t, elements */
        if (!buf || size != 8) return INVALID("cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET): %zu bytes (int64_t)", size);
        memcpy(&l->stride, buf, 8);
        if (l->stride < 0) return UNSUPPORTED("cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET = %lld): negative",
                                              (long long)l->stride);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (!buf || size != 4) return INVALID("cublasLtMatrixLayoutSetAttribute(%d): %zu bytes (int32_t)", a, size);
    int32_t v;
    memcpy(&v, buf, 4);
    if (a == CUBLASLT_MATRIX_LAYOUT_ORDER && v == CUBLASLT_ORDER_COL) return CUBLAS_STATUS_SUCCESS;
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && v >= 1) {
        l->batch = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    return UNSUPPORTED("cublasLtMatrixLayoutSetAttribute(%d = %d): the model has column-major matrices (strided batches)",
                       a, v);
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    if (!p) return INVALID("cublasLtMatmulPreferenceCreate: NULL pointer");
    *p = new emu_lt_pref{LIVE, 0, {256, 256, 256, 256}};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    if (!live(p)) return INVALID("cublasLtMatmulPreferenceDestroy: not a live preference");
    p->magic = DEAD;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *buf, size_t size) {
    if (!live(p)) return INVALID("cublasLtMatmulPreferenceSetAttribute: not a live preference");
    if (!buf) return INVALID("cublasLtMatmulPreferenceSetAttribute(%d): NULL buffer", a);
    if (a == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (size != 8) return INVALID("cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES): %zu bytes (uint64_t)", size);
        memcpy(&p->max_ws, buf, 8);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        if (size != 4) return INVALID("cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT): %zu bytes (uint32_t)", size);
        uint32_t v;
        memcpy(&v, buf, 4);
        if (v == 0 || (v & (v - 1)) || v > 256)
            return INVALID("cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT): %u is not a power of 2 <= 256", v);
        p->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    return UNSUPPORTED("cublasLtMatmulPreferenceSetAttribute: attribute %d not modelled", a);
}

/* the problem of (desc, layouts) checked; fills an algo_info minus alignments */
static cublasStatus_t problem(const char *fn, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                              algo_info *q) {
    if (!live(d)) return INVALID("%s: the matmul descriptor is not live (destroyed?)", fn);
    if (!live(a) || !live(b) || !live(c) || !live(dd))
        return INVALID("%s: layout %s is not live (destroyed?)", fn,
                       !live(a) ? "A" : !live(b) ? "B" : !live(c) ? "C" : "D");
    q->transa = d->transa, q->transb = d->transb, q->epilogue = d->epilogue, q->bias_type = d->bias_type;
    q->ta = a->type, q->tb = b->type, q->tc = c->type, q->td = dd->type;
    uint64_t am = d->transa ? a->cols : a->rows, ak = d->transa ? a->rows : a->cols;
    uint64_t bk = d->transb ? b->cols : b->rows, bn = d->transb ? b->rows : b->cols;
    if (ak != bk)
        return INVALID("%s: op(A) is %llu x %llu but op(B) %llu x %llu (inner dimensions differ)", fn,
                       (unsigned long long)am, (unsigned long long)ak, (unsigned long long)bk, (unsigned long long)bn);
    if (c->rows != am || c->cols != bn || dd->rows != am || dd->cols != bn)
        return INVALID("%s: op(A) op(B) is %llu x %llu but C is %llu x %llu and D %llu x %llu", fn,
                       (unsigned long long)am, (unsigned long long)bn, (unsigned long long)c->rows,
                       (unsigned long long)c->cols, (unsigned long long)dd->rows, (unsigned long long)dd->cols);
    if (a->batch != b->batch || a->batch != c->batch || a->batch != dd->batch)
        return INVALID("%s: batch counts differ (A %d, B %d, C %d, D %d)", fn, a->batch, b->batch, c->batch, dd->batch);
    if (dd->batch > 1 && (uint64_t)dd->stride < (uint64_t)((dd->cols - 1) * (uint64_t)dd->ld + dd->rows))
        return UNSUPPORTED("%s: D's batch members overlap (stride %lld)", fn, (long long)dd->stride);
    if (!am || !bn || !ak) return UNSUPPORTED("%s: an empty GEMM (%llu x %llu x %llu) is not modelled", fn,
                                              (unsigned long long)am, (unsigned long long)bn, (unsigned long long)ak);
    q->m = am, q->n = bn, q->k = ak;
    q->lda = a->ld, q->ldb = b->ld, q->ldc = c->ld, q->ldd = dd->ld;
    if (a->type != b->type) return UNSUPPORTED("%s: A is %s but B %s", fn, type_name(a->type), type_name(b->type));
    if (c->type != dd->type) return UNSUPPORTED("%s: C is %s but D %s", fn, type_name(c->type), type_name(dd->type));
    if (dd->type != CUDA_R_32F && dd->type != a->type)
        return UNSUPPORTED("%s: %s inputs with a %s output (CUBLAS_COMPUTE_32F)", fn, type_name(a->type), type_name(dd->type));
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && d->bias_type != -1 && d->bias_type != dd->type)
        return UNSUPPORTED("%s: a %s bias with a %s D (the bias has D's type)", fn, type_name(d->bias_type),
                           type_name(dd->type));
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *found) {
    const char *fn = "cublasLtMatmulAlgoGetHeuristic";
    emu_lt_heuristic_calls++;
    if (!live(h)) return bad(CUBLAS_STATUS_NOT_INITIALIZED, "%s: not a live handle", fn);
    if (!live(p)) return INVALID("%s: the preference is not live", fn);
    if (requested < 1 || !results || !found) return INVALID("%s: requested %d, results %p, found %p", fn, requested,
                                                            (void *)results, (void *)found);
    *found = 0;
    algo_info q;
    memset(&q, 0, sizeof q);
    cublasStatus_t s = problem(fn, d, a, b, c, dd, &q);
    if (s) return s;
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && h->refuse_bias)
        return CUBLAS_STATUS_NOT_SUPPORTED; /* the test's knob: no algorithm, quietly */
    memcpy(q.align, p->align, sizeof q.align);
    q.align_bias = d->bias ? (uint32_t)ptr_align(d->bias) : 256;
    q.max_ws = p->max_ws;
    algos.push_back(q);
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = ALGO_MAGIC;
    results[0].algo.data[1] = algos.size() - 1;
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static double ld_elem(const void *p, uint64_t i, int t) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16BF) return emu_bf2f(((const uint16_t *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}
static size_t extent(const emu_lt_layout *l) { /* bytes the stored matrices span (all batch members) */
    return (size_t)(((l->cols - 1) * (uint64_t)l->ld + l->rows + (uint64_t)(l->batch - 1) * (uint64_t)l->stride) *
                    (uint64_t)type_size(l->type));
}
static bool overlap(const void *p, size_t n, const void *q, size_t m) {
    return (const char *)p < (const char *)q + m && (const char *)q < (const char *)p + n;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a, const void *B,
                              cublasLtMatrixLayout_t b, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                              cudaStream_t) {
    const char *fn = "cublasLtMatmul";
    emu_gemm_calls++;
    if (!live(h)) return bad(CUBLAS_STATUS_NOT_INITIALIZED, "%s: not a live handle", fn);
    algo_info q;
    memset(&q, 0, sizeof q);
    cublasStatus_t s = problem(fn, d, a, b, c, dd, &q);
    if (s) return s;
    if (!alpha || !beta) return INVALID("%s: NULL alpha or beta", fn);
    const float al = *(const float *)alpha, be = *(const float *)beta;
    if (!A || !B || !D || (!C && be != 0)) return INVALID("%s: NULL matrix pointer (A %p B %p C %p D %p)", fn, A, B, C, D);
    const bool bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS;
    if (bias && !d->bias) return INVALID("%s: CUBLASLT_EPILOGUE_BIAS with a NULL bias pointer", fn);
    if (C == D && (c->ld != dd->ld || c->type != dd->type))
        return INVALID("%s: in place (C == D) with C's layout (ld %lld) differing from D's (ld %lld)", fn,
                       (long long)c->ld, (long long)dd->ld);
    /* the algorithm: found for this problem, its assumptions met */
    if (algo) {
        if (algo->data[0] != ALGO_MAGIC || algo->data[1] >= algos.size())
            return INVALID("%s: the algo was not returned by cublasLtMatmulAlgoGetHeuristic", fn);
        const algo_info &g = algos[algo->data[1]];
        if (g.transa != q.transa || g.transb != q.transb || g.epilogue != q.epilogue || g.ta != q.ta ||
            g.tc != q.tc || g.m != q.m || g.n != q.n || g.k != q.k || g.lda != q.lda || g.ldb != q.ldb ||
            g.ldc != q.ldc || g.ldd != q.ldd || g.bias_type != q.bias_type)
            return INVALID("%s: the algo was found for another problem (%llux%llux%llu trans %d%d epilogue %u; "
                           "now %llux%llux%llu trans %d%d epilogue %u)", fn, (unsigned long long)g.m,
                           (unsigned long long)g.n, (unsigned long long)g.k, g.transa, g.transb, g.epilogue,
                           (unsigned long long)q.m, (unsigned long long)q.n, (unsigned long long)q.k, q.transa,
                           q.transb, q.epilogue);
        const void *ptrs[4] = {A, B, C ? C : D, D};
        for (int i = 0; i < 4; i++)
            if ((uint32_t)ptr_align(ptrs[i]) < g.align[i])
                return INVALID("%s: %c at %p is %d-byte aligned; the algo was found for MIN_ALIGNMENT_%c_BYTES %u",
                               fn, "ABCD"[i], ptrs[i], ptr_align(ptrs[i]), "ABCD"[i], g.align[i]);
        if (bias && (uint32_t)ptr_align(d->bias) < std::min(g.align_bias, 16u))
            return INVALID("%s: the bias at %p is %d-byte aligned; the heuristic assumed %u (the bias pointer it saw)",
                           fn, d->bias, ptr_align(d->bias), g.align_bias);
    }
    if (ws_bytes && (!ws || (uintptr_t)ws % 256))
        return INVALID("%s: workspace %p of %zu bytes (must be non-NULL and 256-byte aligned)", fn, ws, ws_bytes);
    if (ws_bytes) emu_check_dev(ws, ws_bytes, "cublasLtMatmul workspace");
    if ((uintptr_t)d->bias % 4) return INVALID("%s: misaligned bias %p", fn, d->bias);
    /* operands in device memory, within their blocks; D apart from the inputs */
    const size_t ea = extent(a), eb = extent(b), ed = extent(dd), ebias = bias ? q.m * 4 : 0;
    emu_check_dev(A, ea, "cublasLtMatmul A");
    emu_check_dev(B, eb, "cublasLtMatmul B");
    if (C && be != 0) emu_check_dev(C, extent(c), "cublasLtMatmul C");
    emu_check_dev(D, ed, "cublasLtMatmul D");
    if (bias) emu_check_dev(d->bias, ebias, "cublasLtMatmul bias");
    if (overlap(D, ed, A, ea) || overlap(D, ed, B, eb) || (bias && overlap(D, ed, d->bias, ebias)))
        return INVALID("%s: D overlaps %s", fn, overlap(D, ed, A, ea) ? "A" : overlap(D, ed, B, eb) ? "B" : "the bias");
    emu_gemm_bias_epilogues += bias;
    /* D = alpha op(A) op(B) + beta C (+ bias per row), in double, rounded once; per batch member */
    std::vector<double> col(q.m);
    const char *A0 = (const char *)A, *B0 = (const char *)B, *C0 = (const char *)C;
    char *D0 = (char *)D;
    for (int32_t z = 0; z < dd->batch; z++) {
    A = A0 + (size_t)z * a->stride * type_size(a->type), B = B0 + (size_t)z * b->stride * type_size(b->type);
    if (C0) C = C0 + (size_t)z * c->stride * type_size(c->type);
    D = D0 + (size_t)z * dd->stride * type_size(dd->type);
    for (uint64_t j = 0; j < q.n; j++) {
        for (uint64_t i = 0; i < q.m; i++) {
            double acc = 0;
            for (uint64_t p = 0; p < q.k; p++)
                acc += ld_elem(A, q.transa ? p + i * a->ld : i + p * a->ld, a->type) *
                       ld_elem(B, q.transb ? j + p * b->ld : p + j * b->ld, b->type);
            double r = (double)al * acc;
            if (be != 0) r += (double)be * ld_elem(C, i + j * c->ld, c->type);
            if (bias) r += ld_elem(d->bias, i, dd->type);
            col[i] = r;
        }
        for (uint64_t i = 0; i < q.m; i++) { /* after the column is read: C == D in place */
            uint64_t o = i + j * dd->ld;
            if (dd->type == CUDA_R_32F) ((float *)D)[o] = (float)col[i];
            else if (dd->type == CUDA_R_16BF) ((uint16_t *)D)[o] = emu_f2bf((float)col[i]);
            else ((__half *)D)[o] = __float2half_rn((float)col[i]);
        }
    }
    }
    return CUBLAS_STATUS_SUCCESS;
}
