/* train_mem.c — the memory account of a trainer (see train_mem.h): sizes
 * taken from the same formulas the allocations used. */
#include "train/train_mem.h"
#include "core/core.h"
#include "model/block.h"

#include <stdio.h>
#include <string.h>

#define A16(n) (((n) + 15) / 16 * 16)
#define B16F(n) A16(((n) + 1) / 2) /* floats of the arena holding n bf16 (model/backward.c) */

void lmc_train_mem_account(const struct lmc_trainer *tr, const struct lmc_lora_train *lt, const struct lmc_qlora *ql,
                           enum lmc_qlora_kind qkind, struct lmc_train_mem *m) {
    memset(m, 0, sizeof *m);
    const struct lmc_tmodel *tm = &tr->tm;
    const size_t F = sizeof(float);
    if (tm->w) {
        m->weights_f32 = (size_t)tm->numel * F;
        m->frozen_f32 = (size_t)tm->trainable_off * F;
        m->trainable = m->weights_f32 - m->frozen_f32;
    }
    if (tm->g) m->grads = (size_t)(tm->numel - tm->g_off) * F;
    m->base_ext_form = "";
    m->acts_mode = "none";
    m->acts_bf16 = false;
    if (ql && ql->n_quant) {
        m->base_ext = ql->be && !ql->be->host_memory ? ql->dev_bytes : ql->quant_bytes;
        m->host_emb = ql->host_bytes;
        m->base_ext_form = qkind == LMC_QLORA_BF16 ? "bf16"
                         : ql->n_ends && ql->prequantized ? "quantized + bf16 embedding/head"
                         : ql->n_ends && qkind == LMC_QLORA_NF4 ? "NF4 + bf16 embedding/head"
                         : ql->n_ends                       ? "int4 + bf16 embedding/head"
                         : ql->prequantized       ? "quantized"
                         : qkind == LMC_QLORA_NF4 ? "NF4"
                                                  : "int4";
    }
    if (tr->m) m->optim += (size_t)(tm->numel - tm->trainable_off) * F;
    if (tr->v) m->optim += (size_t)(tm->numel - tm->trainable_off) * F;
    if (tr->have_opt) m->optim += tr->opt.arena_bytes;
    const struct lmc_tacts *a = &tr->acts;
    if (a->arena) {
        const struct lmc_config *c = &tm->cfg;
        int64_t BT = a->B * a->T, L = a->n_layers;
        /* sequence parallel: this rank's rows of the residual stream, and the two gathered (BT, C) buffers */
        int64_t rows = a->sp ? a->sp->m : BT;
        const bool ck16 = a->xs16 != NULL; /* bf16 checkpoints of full recomputation */
        LMC_ASSERT(!(a->selective || a->mixer || a->save_bf16 || ck16) || (!a->sp && L == c->num_layers));
        struct lmc_tacts_opts o = {.recompute = a->recompute, .selective = a->selective,
                                   .save_bf16 = a->save_bf16 || ck16, .offload = a->xs_host != NULL,
                                   .mixer = a->mixer};
        m->acts = a->sp ? lmc_tacts_bytes_sp(c, a->B, a->T, a->recompute, (int)(BT / rows)) +
                              2 * (size_t)(BT * c->hidden_size) * F
                        : lmc_tacts_bytes_opts(c, a->B, a->T, &o);
        m->acts_per_layer = (size_t)a->layer_floats * F;
        m->acts_layers = a->recompute ? 1 : L;
        m->acts_mode = a->selective ? "selective" : a->mixer ? "attn" : a->recompute ? "full" : "none";
        m->acts_bf16 = a->save_bf16 || ck16;
        m->acts_resid = ck16 ? (2 * (size_t)A16(rows * c->hidden_size) + (size_t)L * (size_t)B16F(rows * c->hidden_size)) * F
                        : a->xs_host ? (size_t)a->xs_ring * (size_t)A16(rows * c->hidden_size) * F
                                     : (size_t)(L + 1) * (size_t)A16(rows * c->hidden_size) * F;
        m->host_offload = a->host_bytes;
        size_t held = m->acts_per_layer * (size_t)m->acts_layers + m->acts_resid;
        m->acts_rest = m->acts > held ? m->acts - held : 0;
    }
    if (lt) m->lora = lt->buf_bytes;
    m->total = m->weights_f32 + m->base_ext + m->grads + m->optim + m->acts + m->lora;
}

static double mib(size_t b) {
    return (double)b / 1048576.0;
}

void lmc_train_mem_line(const struct lmc_train_mem *m, char *buf, size_t cap) {
    char ext[160] = "", host[64] = "";
    if (m->host_offload) snprintf(host, sizeof host, " + %.1f in host memory", mib(m->host_offload));
    if (m->base_ext)
        snprintf(ext, sizeof ext, " + base %s %s %.1f", !strcmp(m->base_ext_form, "bf16") ? "linears/embedding/head" : "linears",
                 m->base_ext_form, mib(m->base_ext));
    if (m->host_emb)
        snprintf(ext + strlen(ext), sizeof ext - strlen(ext), " (+ embedding %.1f in host memory)", mib(m->host_emb));
    snprintf(buf, cap,
             "memory (MiB): weights f32 %.1f (frozen %.1f, trainable %.1f)%s + gradients %.1f + optimizer %.1f + "
             "activations %.1f (%.1f per layer x %lld held%s, residual stream %.1f%s, rest %.1f) + adapter scratch %.1f "
             "= %.1f, not counting op scratch",
             mib(m->weights_f32), mib(m->frozen_f32), mib(m->trainable), ext, mib(m->grads), mib(m->optim),
             mib(m->acts), mib(m->acts_per_layer), (long long)m->acts_layers,
             !strcmp(m->acts_mode, "selective") ? (m->acts_bf16 ? ", selective recompute, bf16" : ", selective recompute")
             : !strcmp(m->acts_mode, "attn")
                 ? (m->acts_bf16 ? (m->host_offload ? ", attention recompute, bf16, offloaded checkpoints"
                                                    : ", attention recompute, bf16")
                                 : (m->host_offload ? ", attention recompute, offloaded checkpoints" : ", attention recompute"))
             : !strcmp(m->acts_mode, "full")    ? (m->acts_bf16          ? ", recompute, bf16 checkpoints"
                                                   : m->host_offload ? ", recompute, offloaded checkpoints"
                                                                     : ", recompute")
             : m->acts_bf16                      ? ", bf16"
                                                 : "",
             mib(m->acts_resid), host, mib(m->acts_rest),
             mib(m->lora), mib(m->total));
}

void lmc_train_mem_json(const struct lmc_train_mem *m, size_t measured, char *buf, size_t cap) {
    int n = snprintf(buf, cap,
                     "{\"weights_f32\": %zu, \"frozen_f32\": %zu, \"trainable\": %zu, \"base_ext\": %zu, "
                     "\"base_ext_form\": \"%s\", \"grads\": %zu, \"optimizer\": %zu, \"activations\": %zu, "
                     "\"activations_per_layer\": %zu, \"activation_layers_held\": %lld, \"residual_stream\": %zu, "
                     "\"activations_rest\": %zu, \"recompute\": \"%s\", \"activations_dtype\": \"%s\", \"host_offload\": %zu, \"host_embedding\": %zu, \"adapter_scratch\": %zu, \"total\": %zu",
                     m->weights_f32, m->frozen_f32, m->trainable, m->base_ext, m->base_ext_form, m->grads, m->optim,
                     m->acts, m->acts_per_layer, (long long)m->acts_layers, m->acts_resid, m->acts_rest,
                     m->acts_mode, m->acts_bf16 ? "bf16" : "f32", m->host_offload, m->host_emb, m->lora,
                     m->total);
    if (n < 0 || (size_t)n >= cap) return;
    if (measured)
        snprintf(buf + n, cap - (size_t)n, ", \"device_measured\": %zu, \"op_scratch_measured\": %lld}", measured,
                 (long long)measured - (long long)m->total);
    else
        snprintf(buf + n, cap - (size_t)n, "}");
}
