/* cublaslt_model.h — a model of the cuBLASLt API as NVIDIA documents it,
 * enough for matmul.cu, in place of <cublasLt.h> (transform.py points the
 * include here; cublaslt_model.cc implements it). Written from the
 * documented semantics, not from NVIDIA's code:
 *
 *  - matrices are column-major (CUBLASLT_ORDER_COL, the only order
 *    modelled): a layout (type, rows, cols, ld) describes the matrix as
 *    stored, element (i, j) at i + j*ld, ld >= rows; a transposed operand
 *    (CUBLASLT_MATMUL_DESC_TRANSA/B = CUBLAS_OP_T) is stored (k, m) / (n, k);
 *  - cublasLtMatmul computes D = alpha op(A) op(B) + beta C, then the
 *    epilogue: CUBLASLT_EPILOGUE_BIAS adds bias[i] to every element of row
 *    i of D (the bias vector has D's row count, packed, of D's type unless
 *    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE says otherwise — it must be D's
 *    type here). C is not read when beta == 0. The products are exact and
 *    summed in double, the result rounded once to D's type;
 *  - types: computeType CUBLAS_COMPUTE_32F with scaleType CUDA_R_32F
 *    (alpha, beta host floats); A and B of one type among CUDA_R_32F,
 *    CUDA_R_16BF, CUDA_R_16F; C and D of one type, CUDA_R_32F or A's type
 *    (CUDA_R_32F A/B: D CUDA_R_32F); C == D (in place) needs the same
 *    layout; D may not overlap A, B or the bias;
 *  - descriptor and preference attributes are set by value with the
 *    documented sizes (int32_t transposes, uint32_t epilogue and alignments,
 *    const void * bias pointer, uint64_t workspace bytes); a wrong size or
 *    value is CUBLAS_STATUS_INVALID_VALUE;
 *  - cublasLtMatmulAlgoGetHeuristic checks the problem, returns at most one
 *    algorithm (0 found is CUBLAS_STATUS_NOT_SUPPORTED) recording what it
 *    was asked for: the shapes, types, transposes and epilogue, and the
 *    alignments it may assume — the preference's MIN_ALIGNMENT_A/B/C/D_BYTES
 *    (default 256) and, for the bias, the bias pointer set at that time (the
 *    documentation: routines that do not dereference it "depend on its
 *    value to determine expected pointer alignment"; NULL counts as 256).
 *    cublasLtMatmul refuses an algorithm used with another problem, or with
 *    pointers less aligned than it assumed (for the bias: min(assumed, 16),
 *    a vector load's worth), a workspace smaller than the preference's
 *    maximum it was found under is allowed only down to 0 when it needs
 *    none (the model's algorithms need none), a workspace that is not
 *    256-byte aligned, and destroyed descriptors;
 *  - emu_lt_refuse_bias, when set at cublasLtCreate: that handle's
 *    heuristic finds no algorithm for a bias epilogue (the case matmul.cu
 *    falls back from), for tests.
 * Every refusal prints what is wrong (stderr, "emu cublasLt: ...") and
 * returns the status the library documents, so the caller's check fails
 * naming the call. Pointers are checked against device memory with
 * emu_check_dev (their extent from the layout). */
#pragma once
#include "emu.h"

typedef enum cudaDataType_t {
    CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_8I = 3, CUDA_R_32I = 10, CUDA_R_16BF = 14
} cudaDataType_t, cudaDataType;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1, CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_ARCH_MISMATCH = 8, CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14, CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum {
    CUBLAS_COMPUTE_16F = 64, CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75, CUBLAS_COMPUTE_32F_FAST_TF32 = 77, CUBLAS_COMPUTE_64F = 70
} cublasComputeType_t;
typedef enum {
    CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0, CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,
    CUBLASLT_MATMUL_DESC_POINTER_MODE = 2, CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4, CUBLASLT_MATMUL_DESC_TRANSC = 5,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7, CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26
} cublasLtMatmulDescAttributes_t;
typedef enum { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 } cublasLtEpilogue_t;
typedef enum { CUBLASLT_POINTER_MODE_HOST = 0, CUBLASLT_POINTER_MODE_DEVICE = 1 } cublasLtPointerMode_t;
typedef enum {
    CUBLASLT_MATRIX_LAYOUT_TYPE = 0, CUBLASLT_MATRIX_LAYOUT_ORDER = 1, CUBLASLT_MATRIX_LAYOUT_ROWS = 2,
    CUBLASLT_MATRIX_LAYOUT_COLS = 3, CUBLASLT_MATRIX_LAYOUT_LD = 4, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,
    CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6
} cublasLtMatrixLayoutAttribute_t;
typedef enum { CUBLASLT_ORDER_COL = 0, CUBLASLT_ORDER_ROW = 1 } cublasLtOrder_t;
typedef enum {
    CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8
} cublasLtMatmulPreferenceAttributes_t;

typedef struct emu_lt_handle *cublasLtHandle_t;
typedef struct emu_lt_desc *cublasLtMatmulDesc_t;
typedef struct emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct emu_lt_pref *cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

extern bool emu_lt_refuse_bias, emu_lt_quiet; /* quiet: refusals not printed */
extern long emu_gemm_calls, emu_gemm_bias_epilogues, emu_lt_heuristic_calls;

const char *cublasLtGetStatusString(cublasStatus_t s);
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                              const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void *buf, size_t size);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *buf, size_t size);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *found);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a, const void *B,
                              cublasLtMatrixLayout_t b, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                              cudaStream_t s);
