/* backend_cpu.c — the CPU backend table: thread pool, per-thread scratch,
 * and the op entry points (each op lives in its own file). */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_f32.h"
#include "ops/cpu/ssm_cpu.h"
#include "ops/optim_ops.h"
#include "quant/qmatmul.h"

#include <stdlib.h>
#include <string.h>
#include <cblas.h>

void lmc_cpu_scratch_reserve(struct lmc_cpu_ctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    for (int t = 0; t < c->n_threads; t++) {
        if (c->scratch_cap[t] >= n) continue;
        free(c->scratch[t]);
        c->scratch[t] = aligned_alloc(64, n * sizeof(float));
        LMC_ASSERT(c->scratch[t] != NULL);
        c->scratch_cap[t] = n;
    }
}

void lmc_cpu_xbuf_reserve(struct lmc_cpu_ctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (c->xbuf_cap >= n) return;
    free(c->xbuf);
    c->xbuf = aligned_alloc(64, n * sizeof(float));
    LMC_ASSERT(c->xbuf != NULL);
    c->xbuf_cap = n;
}

lmc_status lmc_backend_cpu_init(struct lmc_backend *be, int n_threads, lmc_err *err) {
    memset(be, 0, sizeof *be);
    struct lmc_cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return lmc_err_set(err, LMC_ERR_OOM, "cpu backend: out of memory");
    lmc_status st = lmc_pool_init(&c->pool, n_threads, err);
    if (st != LMC_OK) {
        free(c);
        return st;
    }
    c->n_threads = lmc_pool_threads(c->pool);
    c->gemm_min_m = LMC_CPU_GEMM_MIN_M;
    c->gemm_min_m16 = LMC_CPU_GEMM_MIN_M16;
    c->mm_unit_bytes = LMC_CPU_MM_UNIT_BYTES;
    c->mm_small_max = LMC_CPU_MM_SMALL_MAX;
    c->has_bf16 = lmc_cpu_has_bf16();
    c->pf_min_m = c->has_bf16 ? LMC_CPU_PF_MIN_M : 0;
    c->drf_avx2 = lmc_cpu_drf_avx2();
    c->scratch = calloc((size_t)c->n_threads, sizeof *c->scratch);
    c->scratch_cap = calloc((size_t)c->n_threads, sizeof *c->scratch_cap);
    c->mm_claim = aligned_alloc(64, (size_t)c->n_threads * LMC_CPU_CLAIM_STRIDE * sizeof *c->mm_claim);
    c->qctx = calloc(1, sizeof *c->qctx);
    if (!c->scratch || !c->scratch_cap || !c->mm_claim || !c->qctx) {
        free(c->qctx);
        free(c->scratch);
        free(c->scratch_cap);
        free(c->mm_claim);
        lmc_pool_free(c->pool);
        free(c);
        return lmc_err_set(err, LMC_ERR_OOM, "cpu backend: out of memory");
    }
    /* Our threads split GEMMs among themselves and each calls sgemm on its
     * share, so OpenBLAS must not start threads of its own. This setting is
     * process-wide (OpenBLAS has no per-call thread count). */
    openblas_set_num_threads(1);
    lmc_qctx_init(c->qctx, LMC_QISA_AVX512VNNI);

    be->name = "cpu";
    be->ctx = c;
    be->host_memory = true;
    be->alloc = lmc_cpu_alloc;
    be->free = lmc_cpu_free;
    be->upload = lmc_cpu_copy;
    be->download = lmc_cpu_copy;
    be->sync = lmc_cpu_sync;
    be->qmatmul = lmc_cpu_qmatmul;
    be->qembed = lmc_cpu_qembed;
    be->qmatmul_multi = lmc_cpu_qmatmul_multi;
    be->qmatmul_f = lmc_cpu_qmatmul_f;
    be->qmatmul_f_bwd = lmc_cpu_qmatmul_f_bwd;
    be->dropout = lmc_cpu_dropout;
    be->clamp = lmc_cpu_clamp;
    be->clamp_bwd = lmc_cpu_clamp_bwd;
    be->convert = lmc_cpu_convert;
    be->host_alloc = lmc_cpu_host_alloc;
    be->host_free = lmc_cpu_host_free;
    be->offload = lmc_cpu_offload;
    be->offload_wait = lmc_cpu_offload_wait;
    be->attn_block_fwd = lmc_cpu_attn_block_fwd; /* ring attention (context parallel) */
    be->attn_block_merge = lmc_cpu_attn_block_merge;
    be->attn_block_bwd = lmc_cpu_attn_block_bwd;
    be->matmul = lmc_cpu_matmul;
    be->matmul_multi = lmc_cpu_matmul_multi;
    be->matmul_add = lmc_cpu_matmul_add;
    be->matmul_swiglu = lmc_cpu_matmul_swiglu;
    be->embed = lmc_cpu_embed;
    be->rmsnorm = lmc_cpu_rmsnorm;
    be->layernorm = lmc_cpu_layernorm;
    be->rope = lmc_cpu_rope;
    be->attention = lmc_cpu_attention;
    be->attention_mask = lmc_cpu_attention_mask;
    be->attention_paged = lmc_cpu_attention_paged;
    be->swiglu = lmc_cpu_swiglu;
    be->gelu = lmc_cpu_gelu;
    be->add = lmc_cpu_add;
    be->argmax_rows = lmc_cpu_argmax_rows;
    be->sample_rows = lmc_cpu_sample_rows;
    be->matmul_bwd = lmc_cpu_matmul_bwd;
    be->matmul_bwd_multi = lmc_cpu_matmul_bwd_multi;
    be->embed_bwd = lmc_cpu_embed_bwd;
    be->rmsnorm_bwd = lmc_cpu_rmsnorm_bwd;
    be->layernorm_bwd = lmc_cpu_layernorm_bwd;
    be->rope_bwd = lmc_cpu_rope_bwd;
    be->attention_bwd = lmc_cpu_attention_bwd;
    be->swiglu_bwd = lmc_cpu_swiglu_bwd;
    be->gelu_bwd = lmc_cpu_gelu_bwd;
    be->classifier_xent = lmc_cpu_classifier_xent;
    be->soft_xent = lmc_cpu_soft_xent;
    be->attention_train = lmc_cpu_attention_train;
    be->zero = lmc_cpu_zero;
    be->sumsq = lmc_cpu_sumsq;
    be->adamw = lmc_cpu_adamw;
    /* state-space models (issue 15; ops/cpu/ssm_cpu.h) */
    be->conv1d_causal = lmc_cpu_conv1d_causal;
    be->conv1d_causal_bwd = lmc_cpu_conv1d_causal_bwd;
    be->conv1d_causal_step = lmc_cpu_conv1d_causal_step;
    be->ssm_scan = lmc_cpu_ssm_scan;
    be->ssm_scan_bwd = lmc_cpu_ssm_scan_bwd;
    be->ssm_scan_step = lmc_cpu_ssm_scan_step;
    be->ssd_chunk = lmc_cpu_ssd_chunk;
    be->ssd_chunk_bwd = lmc_cpu_ssd_chunk_bwd;
    be->ssd_step = lmc_cpu_ssd_step;
    be->rmsnorm_gated = lmc_cpu_rmsnorm_gated;
    be->rmsnorm_gated_bwd = lmc_cpu_rmsnorm_gated_bwd;
    be->muon = lmc_cpu_muon;           /* ops/optim_ops.h */
    be->muon_batch = lmc_cpu_muon_batch; /* a matrix per thread, bf16 (muon_bf16.c) or fp32 (newton_schulz.c) */
    be->muon_batch_f32 = true;
    be->adamw8bit = lmc_cpu_adamw8bit;
    be->lowrank = lmc_cpu_lowrank;
    be->galore_ritz = lmc_cpu_galore_ritz;
    be->galore_orth = lmc_cpu_galore_orth;
    be->galore_rotate = lmc_cpu_galore_rotate;
    be->moe_gemm = lmc_cpu_moe_gemm; /* mixture of experts */
    be->moe_gemm_bwd = lmc_cpu_moe_gemm_bwd;
    be->moe_gemm_multi = lmc_cpu_moe_gemm_multi;
    be->moe_route = lmc_cpu_moe_route;
    be->moe_stats = lmc_cpu_moe_stats;
    be->moe_gather = lmc_cpu_moe_gather;
    be->moe_gather_bwd = lmc_cpu_moe_gather_bwd;
    be->moe_combine = lmc_cpu_moe_combine;
    be->moe_combine_bwd = lmc_cpu_moe_combine_bwd;
    return LMC_OK;
}

void lmc_backend_cpu_set_bf16_prefill(const struct lmc_backend *be, bool on) {
    if (be->matmul != lmc_cpu_matmul) return; /* not the CPU table (or its bf16 training mode) */
    struct lmc_cpu_ctx *c = be->ctx;
    c->pf_min_m = on && c->has_bf16 ? LMC_CPU_PF_MIN_M : 0;
}

bool lmc_backend_cpu_bf16_prefill(const struct lmc_backend *be) {
    return be->matmul == lmc_cpu_matmul && ((const struct lmc_cpu_ctx *)be->ctx)->pf_min_m > 0;
}

bool lmc_backend_cpu_can_route_rows(const struct lmc_backend *be) {
    if (be->matmul != lmc_cpu_matmul || be->matmul_multi != lmc_cpu_matmul_multi) return false;
    const struct lmc_cpu_ctx *c = be->ctx;
    return c->has_bf16 || c->drf_avx2;
}

void lmc_backend_cpu_route_rows(const struct lmc_backend *be, int64_t m, int64_t pf_rows, const void *head) {
    if (!lmc_backend_cpu_can_route_rows(be)) return;
    LMC_ASSERT(m >= 0 && pf_rows >= 0 && pf_rows <= m);
    struct lmc_cpu_ctx *c = be->ctx;
    c->route_m = m;
    /* prompt rows: the bf16 prefill GEMM with AVX512-BF16, else our AVX2
     * GEMM (gemm_f32.c: batch-invariant too); without either (or with the
     * large-M path on OpenBLAS for A/B) they take the decode-row GEMM */
    c->route_pf = m > 0 && (c->has_bf16 || (lmc_cpu_gemm_f32_native() && !c->gemm_blas)) ? pf_rows : 0;
    c->route_head = m > 0 ? head : NULL;
}

lmc_status lmc_backend_cpu_set_train_bf16(struct lmc_backend *be, bool on, lmc_err *err) {
    if (on && !lmc_cpu_has_bf16())
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "cpu backend: bf16 training needs AVX512-BF16, which this CPU lacks (use fp32)");
    be->matmul = on ? lmc_cpu_matmul_bf16 : lmc_cpu_matmul;
    be->matmul_multi = on ? lmc_cpu_matmul_multi_bf16 : lmc_cpu_matmul_multi;
    be->matmul_add = on ? NULL : lmc_cpu_matmul_add; /* the fused ones are f32: bf16 mode composes its own */
    be->matmul_swiglu = on ? NULL : lmc_cpu_matmul_swiglu;
    be->matmul_bwd = on ? lmc_cpu_matmul_bwd_bf16 : lmc_cpu_matmul_bwd;
    be->matmul_bwd_multi = on ? lmc_cpu_matmul_bwd_multi_bf16 : lmc_cpu_matmul_bwd_multi;
    be->classifier_xent = on ? lmc_cpu_classifier_xent_bf16 : lmc_cpu_classifier_xent;
    be->attention_train = on ? lmc_cpu_attention_train_bf16 : lmc_cpu_attention_train;
    be->attention_bwd = on ? lmc_cpu_attention_bwd_bf16 : lmc_cpu_attention_bwd;
    be->matmul_f32 = on ? lmc_cpu_matmul : NULL;
    be->matmul_bwd_f32 = on ? lmc_cpu_matmul_bwd : NULL;
    return LMC_OK;
}

void lmc_backend_cpu_free(struct lmc_backend *be) {
    if (!be || !be->ctx) return;
    struct lmc_cpu_ctx *c = be->ctx;
    lmc_pool_free(c->pool);
    for (int t = 0; t < c->n_threads; t++) free(c->scratch[t]);
    free(c->scratch);
    free(c->scratch_cap);
    free(c->mm_claim);
    free(c->xbuf);
    free(c->ybuf);
    free(c->qctx);
    free(c->qscratch);
    free(c->qf_buf);
    lmc_cpu_rope_tab_free(c);
    free(c);
    memset(be, 0, sizeof *be);
}
