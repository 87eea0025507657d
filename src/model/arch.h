/* arch.h — an architecture is one file (arch_<name>.c): its tensor spec
 * table, its block recipe (norm, mixer and feed-forward ops tables,
 * positions) and its config defaults. Everything that lists tensors — the
 * inference loader (weights.c), the trainer's parameter layout
 * (backward.c), checkpoint writing, `lmc info`, parity — walks the table
 * with lmc_arch_walk; nothing outside the arch_*.c files compares
 * architectures. */
#ifndef LMC_MODEL_ARCH_H
#define LMC_MODEL_ARCH_H

#include "lmc.h"
#include "io/hf_config.h"
#include "model/block.h"

#include <stdbool.h>
#include <stdint.h>

/* Shape symbols, resolved from the config. */
enum lmc_dimsym {
    LMC_D_1 = 0,  /* absent dimension (1-D tensors) */
    LMC_D_C,      /* hidden_size */
    LMC_D_V,      /* vocab_size */
    LMC_D_I,      /* intermediate_size */
    LMC_D_QD,     /* num_heads * head_dim */
    LMC_D_KVD,    /* num_kv_heads * head_dim */
    LMC_D_HD,     /* head_dim */
    LMC_D_P,      /* max_position_embeddings */
    LMC_D_3C,     /* 3 * hidden_size (GPT-2's fused c_attn) */
    LMC_D_E,      /* num_experts (the router's rows) */
    LMC_D_EI,     /* moe_intermediate_size (one expert's width) */
    LMC_D_SI,     /* shared_expert_intermediate_size */
    /* Mamba / Mamba-2 (lmc_config.mamba) */
    LMC_D_SIN,    /* in_proj rows */
    LMC_D_SDI,    /* d_inner */
    LMC_D_SXP,    /* x_proj rows (R + 2N) */
    LMC_D_SR,     /* time_step_rank */
    LMC_D_SN,     /* state_size */
    LMC_D_SCD,    /* conv channels */
    LMC_D_SK,     /* conv_kernel */
    LMC_D_SH,     /* SSM heads (Mamba-2) */
};

/* What a tensor is: the optimizer's decay rule, initialisation and `lmc
 * info` read it. */
enum lmc_role {
    LMC_ROLE_EMBED,   /* token or position table: no decay, N(0, std) */
    LMC_ROLE_MATRIX,  /* a linear's weight: decayed, N(0, std) (residual outputs scaled) */
    LMC_ROLE_NORM,    /* a norm's scale: no decay, ones */
    LMC_ROLE_BIAS,    /* a linear's or a norm's bias: no decay, zeros */
};

/* Where a tensor binds. */
enum lmc_tkind {
    LMC_TK_TOK_EMB, LMC_TK_POS_EMB, LMC_TK_HEAD, LMC_TK_NORM_F, LMC_TK_NORM_F_B, /* global */
    LMC_TK_LIN_W,     /* layer linear weight, slot..slot+parts-1 (rows split evenly) */
    LMC_TK_LIN_B,     /* layer linear bias, likewise */
    LMC_TK_VEC,       /* layer vector slot */
    LMC_TK_EXPERT_W,  /* an expert's linear weight: one tensor per expert (the name holds a
                       * second %lld, the expert index); slot: enum lmc_xslot */
};

/* When a tensor exists. */
enum lmc_when {
    LMC_WHEN_ALWAYS,
    LMC_WHEN_QKV_BIAS, LMC_WHEN_O_BIAS, LMC_WHEN_MLP_BIAS,
    LMC_WHEN_UNTIED,  /* required untied; tied: optional (bound over the embedding when present) */
    LMC_WHEN_SSM_BIAS, LMC_WHEN_SSM_CONV_BIAS, /* Mamba use_bias / use_conv_bias */
    LMC_WHEN_SPARSE, LMC_WHEN_DENSE, /* layers with experts / with the dense MLP (lmc_config_layer_sparse) */
};

#define LMC_TF_TRANSPOSED 1u  /* stored (in, out) on disk; used as (out, in) */
#define LMC_TF_RESID      2u  /* a residual output projection (init std / sqrt(2 L)) */
#define LMC_TF_CONV       4u  /* stored (rows, 1, cols) on disk (a depthwise conv1d weight) */
#define LMC_TF_INIT_ALOG  8u  /* from scratch: log(1..n) along the last dimension (Mamba's A_log) */
#define LMC_TF_INIT_DT   16u  /* from scratch: softplus^-1(dt), dt log-uniform in [1e-3, 0.1] (dt bias) */
#define LMC_TF_GGUF_ROPE 32u  /* GGUF: llama.cpp's converter reorders the rows per head for its rotary
                               * layout (variants with permute_qk; heads = rows / head_dim) */

struct lmc_tensor_spec {
    const char *name;         /* HF name; per-layer names hold one %lld (the layer index) */
    bool per_layer;
    uint8_t kind;             /* enum lmc_tkind */
    uint8_t slot;             /* enum lmc_lslot / lmc_vslot for layer kinds */
    uint8_t parts;            /* slots one tensor fills (0 or 1: one) */
    uint8_t role;             /* enum lmc_role */
    uint8_t when;             /* enum lmc_when */
    uint8_t flags;            /* LMC_TF_* */
    uint8_t dim[2];           /* model layout (out, in) or (n) */
};

/* A GGUF hyper-parameter "<general.architecture>.<key>" and the
 * config.json field it is (read: GGUF -> config; write: config -> GGUF). */
struct lmc_gguf_key {
    const char *key;          /* "embedding_length" */
    const char *field;        /* "hidden_size" */
    uint8_t type;             /* enum lmc_gguf_vtype: U32 or F32 */
    uint8_t use;              /* LMC_GK_* */
    double def;               /* LMC_GK_DEFAULT: the value when the file lacks the key */
};
#define LMC_GK_REQUIRED 0     /* read (an error naming the key when absent) and written */
#define LMC_GK_OPTIONAL 1     /* read when present (else the field is left out), written */
#define LMC_GK_DEFAULT  2     /* read, def when absent; written */
#define LMC_GK_WRITE    3     /* written only (llama.cpp reads it; lmc derives it) */

/* A GGUF architecture (general.architecture) an lmc architecture reads and
 * writes: llama.cpp's name, the config.json it becomes. */
struct lmc_gguf_variant {
    const char *name;         /* "llama", "qwen2", "gpt2" */
    const char *model_type;   /* config.json model_type */
    const char *hf_class;     /* config.json architectures[0] */
    bool permute_qk;          /* LMC_TF_GGUF_ROPE tensors are stored in llama.cpp's row order */
    const char *fixed_json;   /* config.json fields the GGUF does not hold ({"hidden_act":"silu"}): read
                               * as they are; a config with other values is not written (llama.cpp
                               * would run it otherwise) */
    const char *needs_key;    /* non-NULL: this variant only for files holding "<name>.<needs_key>"
                               * (Mixtral: a "llama" file with expert_count); tried before the others */
    const char *sparse_probe; /* non-NULL: per-layer tensor name whose absence makes a layer dense
                               * (read as mlp_only_layers) */
};

struct cJSON;

struct lmc_architecture {
    const char *name;                    /* "llama", "gpt2", "qwen3" */
    const char *hf_class;                /* "LlamaForCausalLM" */
    const struct lmc_tensor_spec *specs;
    int n_specs;
    const char *alt_prefix;              /* names may lack this prefix on disk, or NULL */
    const struct lmc_norm_ops *norm;
    const struct lmc_part_ops *mixer, *ffn; /* ffn NULL: blocks of norm1 + mixer only */
    bool learned_pos;                    /* positions from pos_emb; else RoPE */
    /* configs the block recipe cannot run (beyond the config parser's checks) */
    lmc_status (*check)(const struct lmc_config *c, lmc_err *err);
    /* fills the architecture's fields of a config built from sizes
     * (lmc_config_build): arch, model_type, rules, default intermediate size */
    void (*config_defaults)(struct lmc_config *c);
    /* adds the HF config.json fields of the family to o (architectures,
     * model_type, sizes, norms, positions) */
    void (*config_json)(const struct lmc_config *c, struct cJSON *o);
    /* GGUF (llama.cpp) names: gguf_names[i] is specs[i]'s ("blk.%lld.attn_q.weight";
     * NULL: none; GGUF stores every matrix (out, in), LMC_TF_TRANSPOSED does not apply
     * there); variants[0] is written unless another's model_type matches the
     * config's; keys map the hyper-parameters. NULL / 0: no GGUF form. */
    const char *const *gguf_names;
    const struct lmc_gguf_variant *gguf;
    int n_gguf;
    const struct lmc_gguf_key *gguf_keys;
    int n_gguf_keys;
};

/* The architecture of a parsed config (never NULL for a parsed config). */
const struct lmc_architecture *lmc_arch_of(const struct lmc_config *c);
/* By name ("llama", "gpt2", "qwen3"), or NULL. */
const struct lmc_architecture *lmc_arch_find(const char *name);
/* "llama, gpt2, qwen3" */
const char *lmc_arch_names(void);

/* Rotary dimensions per head (0 without RoPE). */
int64_t lmc_arch_rot_dim(const struct lmc_architecture *a, const struct lmc_config *c);

/* One tensor of a concrete model. */
struct lmc_tensor_ref {
    const struct lmc_tensor_spec *spec;
    int64_t layer;                       /* -1 for globals */
    int64_t expert;                      /* LMC_TK_EXPERT_W: the expert index; else -1 */
    char name[160];
    int ndim;
    int64_t rows, cols;                  /* model layout; cols 1 for 1-D */
    int64_t disk[2];                     /* on-disk shape (LMC_TF_CONV: disk[0], 1, disk[1]) */
    int64_t numel;
    bool required;                       /* false: optional (bound when present) */
};

/* Calls fn for every tensor c's model has, in layout order (the table's
 * globals before the first per-layer entry, the layers, the remaining
 * globals), stopping at the first error. Shapes are overflow-checked
 * (LMC_ERR_ARG). */
typedef lmc_status (*lmc_tensor_fn)(void *user, const struct lmc_tensor_ref *t, lmc_err *err);
lmc_status lmc_arch_walk(const struct lmc_architecture *a, const struct lmc_config *c, lmc_tensor_fn fn,
                         void *user, lmc_err *err);
/* Number of tensors the walk visits (bound for tables built from it). */
int64_t lmc_arch_count(const struct lmc_architecture *a, const struct lmc_config *c);

/* Binds data (model layout, dtype dt) of t into w. */
void lmc_weights_bind(struct lmc_weights *w, const struct lmc_tensor_ref *t, const void *data,
                      enum lmc_dtype dt);

/* The (num_layers) layer weights of c's model, zeroed, with each layer's
 * expert linears (block.h) in the same allocation: one free() releases it.
 * NULL when out of memory. */
struct lmc_block_w *lmc_weights_layers_alloc(const struct lmc_config *c);
/* Parameters a token runs through: all but the (num_experts -
 * num_experts_per_tok) unselected experts of each layer (= total when
 * dense). */
int64_t lmc_arch_active_params(const struct lmc_config *c, int64_t total);

/* The shape of a model built from scratch. */
struct lmc_model_shape {
    int64_t vocab, hidden, layers, heads, kv_heads, intermediate, max_pos;
    bool tie;
    double rope_theta;
};
/* A config for architecture `arch` of shape s (kv_heads 0: = heads;
 * intermediate 0: the architecture's default), as lmc train builds one.
 * LMC_ERR_ARG for unknown architectures or inconsistent sizes. */
lmc_status lmc_config_build(struct lmc_config *c, const char *arch, const struct lmc_model_shape *s,
                            lmc_err *err);

/* Writes config.json for c as transformers would (the architecture's
 * config_json plus token ids and dtype), so lmc and transformers load the
 * checkpoint. */
lmc_status lmc_config_write(const struct lmc_config *c, const char *path, lmc_err *err);
/* The Llama-style fields (arch_llama.c), shared by the families built on
 * it: cls / type name the HF class and model_type. */
void lmc_arch_llama_json(const struct lmc_config *c, struct cJSON *o, const char *cls,
                         const char *type, bool attention_bias_field);

/* Checks every size product the model code forms from c (C*V, L*..., the
 * per-token widths) fits int64 with room (LMC_ERR_ARG naming the field). */
lmc_status lmc_config_check_sizes(const struct lmc_config *c, lmc_err *err);

/* ---- GGUF (llama.cpp) names, from the architectures' tables (gguf_arch.c) ---- */
struct lmc_gguf;
struct lmc_gguf_writer;
/* The architecture and variant of a GGUF general.architecture name in g (a
 * variant with needs_key when g holds the key; g NULL: none of those);
 * LMC_ERR_UNSUPPORTED naming it and the known ones. */
lmc_status lmc_gguf_arch_find(const struct lmc_gguf *g, const char *name, const struct lmc_architecture **a,
                              const struct lmc_gguf_variant **v, lmc_err *err);
/* The variant c is written as: the one whose model_type is c's, else the
 * architecture's first; NULL when the architecture has no GGUF form. */
const struct lmc_gguf_variant *lmc_gguf_variant_of(const struct lmc_config *c);
/* config.json (a cJSON object the caller deletes) of a GGUF's metadata:
 * the variant's class and model_type, the key table, vocab_size from
 * token_embd.weight, tie_word_embeddings from the absence of output.weight,
 * bos/eos from the tokenizer keys. Errors name `label` and the key. */
lmc_status lmc_gguf_config_json(const struct lmc_gguf *g, const char *label, struct cJSON **out,
                                const struct lmc_gguf_variant **v, lmc_err *err);
/* The same, parsed (lmc_config_parse: every size checked). */
lmc_status lmc_gguf_config(const struct lmc_gguf *g, const char *label, struct lmc_config *c,
                           const struct lmc_gguf_variant **v, lmc_err *err);
/* general.architecture and the key table's hyper-parameters of c. */
lmc_status lmc_gguf_hparams_write(struct lmc_gguf_writer *w, const struct lmc_config *c,
                                  const struct lmc_gguf_variant *v, lmc_err *err);
/* Whether GGUF tensor t holds r (a tensor of c's walk): ne [rows] for a
 * vector, [cols, rows] for a matrix (a one-row matrix also as a vector),
 * [cols, rows, num_experts] for an expert's matrix (every expert of the
 * layer stacked). *data: r's first row (the expert's slice, rows of rb
 * bytes: t's row size for r->cols columns). */
struct lmc_gguf_tensor;
bool lmc_gguf_tensor_view(const struct lmc_gguf_tensor *t, const struct lmc_tensor_ref *r, const struct lmc_config *c,
                          int64_t rb, const uint8_t **data);
/* t's ne as "a, b, c" into got and the ne r needs into want (messages). */
void lmc_gguf_shape_str(const struct lmc_gguf_tensor *t, const struct lmc_tensor_ref *r, const struct lmc_config *c,
                        char *got, size_t gcap, char *want, size_t wcap);
/* llama.cpp's name of t (a tensor of a's walk) into out (false: none). */
bool lmc_gguf_tensor_name(const struct lmc_architecture *a, const struct lmc_tensor_ref *t, char *out, size_t cap);
/* Heads whose rows llama.cpp's converter permuted in t (0: not permuted). */
int64_t lmc_gguf_rope_heads(const struct lmc_tensor_ref *t, const struct lmc_config *c,
                            const struct lmc_gguf_variant *v);

/* Architectures (arch_*.c). */
extern const struct lmc_architecture lmc_arch_llama, lmc_arch_gpt2, lmc_arch_qwen3, lmc_arch_mixtral,
    lmc_arch_qwen3moe, lmc_arch_qwen2moe, lmc_arch_olmoe, lmc_arch_mamba, lmc_arch_mamba2;

#endif
