/* test_config.c — HF config.json / generation_config.json parsing: the
 * fixture configs, the old and new RoPE forms and every RoPE type,
 * Mistral- and Llama-3-style configs, generation settings, and bad
 * configs (wrong types, missing or out-of-range sizes, unknown model types,
 * malformed and hostile JSON) each with a clear error naming the field. */
#include "test.h"
#include "io/hf_config.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *base_llama =
    "{\"model_type\": \"llama\", \"vocab_size\": 1000, \"hidden_size\": 128, \"intermediate_size\": 344,"
    " \"num_hidden_layers\": 3, \"num_attention_heads\": 8, \"num_key_value_heads\": 4,"
    " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-5, \"hidden_act\": \"silu\","
    " \"bos_token_id\": 1, \"eos_token_id\": 2}";

static const char *base_gpt2 =
    "{\"model_type\": \"gpt2\", \"vocab_size\": 1000, \"n_embd\": 96, \"n_layer\": 2, \"n_head\": 6,"
    " \"n_positions\": 512, \"n_inner\": null, \"layer_norm_epsilon\": 1e-5,"
    " \"activation_function\": \"gelu_new\", \"bos_token_id\": 0, \"eos_token_id\": 0}";

/* base with key set to the JSON text val (or removed when val is NULL). */
static char *with(const char *base, const char *key, const char *val) {
    cJSON *root = cJSON_Parse(base);
    if (!root) { fprintf(stderr, "bad test base\n"); exit(2); }
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (val) {
        cJSON *v = cJSON_Parse(val);
        if (!v) { fprintf(stderr, "bad test value %s\n", val); exit(2); }
        cJSON_AddItemToObject(root, key, v);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static lmc_status parse(struct lmc_config *c, const char *json, lmc_err *err) {
    return lmc_config_parse(c, json, strlen(json), "cfg.json", err);
}

static void expect_bad(const char *what, const char *json, lmc_status want, const char *sub1, const char *sub2) {
    struct lmc_config c;
    lmc_err err = {0};
    lmc_status s = parse(&c, json, &err);
    CHECK_MSG(s == want, "%s: status %d (%s), want %d", what, (int)s, err.msg, (int)want);
    CHECK_MSG(strstr(err.msg, "cfg.json") != NULL, "%s: message lacks the file: %s", what, err.msg);
    if (sub1) CHECK_MSG(strstr(err.msg, sub1) != NULL, "%s: message lacks '%s': %s", what, sub1, err.msg);
    if (sub2) CHECK_MSG(strstr(err.msg, sub2) != NULL, "%s: message lacks '%s': %s", what, sub2, err.msg);
}

static void expect_bad_with(const char *what, const char *base, const char *key, const char *val, lmc_status want,
                            const char *sub1, const char *sub2) {
    char *j = with(base, key, val);
    expect_bad(what, j, want, sub1, sub2);
    free(j);
}

static void test_fixtures(void) {
    struct lmc_config c;
    lmc_err err = {0};
    lmc_status s = lmc_config_load(&c, "tests/fixtures/llama-tiny", &err);
    CHECK_MSG(s == LMC_OK, "llama-tiny: %s", err.msg);
    CHECK(c.arch == LMC_ARCH_LLAMA && strcmp(c.model_type, "llama") == 0);
    CHECK(c.vocab_size == 512 && c.hidden_size == 64 && c.intermediate_size == 176 && c.num_layers == 2);
    CHECK(c.num_heads == 4 && c.num_kv_heads == 2 && c.head_dim == 16 && c.max_position_embeddings == 256);
    CHECK(c.norm_eps == 1e-5 && !c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.tie_word_embeddings);
    CHECK(c.sliding_window == 0 && c.act == LMC_ACT_SILU);
    CHECK(c.rope.type == LMC_ROPE_DEFAULT && c.rope.theta == 10000.0 && c.rope.factor == 1.0);
    CHECK(c.rope.partial_rotary_factor == 1.0 && c.rope.attention_factor < 0 && c.rope.truncate);
    CHECK(c.bos_token_id == 1 && c.n_eos == 1 && c.eos_token_ids[0] == 2 && c.pad_token_id == -1);
    CHECK(strcmp(c.torch_dtype, "float32") == 0);
    CHECK(!c.gen_do_sample && c.gen_temperature == 1.0 && c.gen_top_k == 0 && c.gen_top_p == 1.0);
    CHECK(c.gen_min_p == 0.0 && c.gen_repetition_penalty == 1.0);

    s = lmc_config_load(&c, "tests/fixtures/qwen2-tiny", &err);
    CHECK_MSG(s == LMC_OK, "qwen2-tiny: %s", err.msg);
    CHECK(c.arch == LMC_ARCH_LLAMA && strcmp(c.model_type, "qwen2") == 0);
    CHECK(c.vocab_size == 768 && c.hidden_size == 64 && c.intermediate_size == 128 && c.num_layers == 2);
    CHECK(c.num_heads == 4 && c.num_kv_heads == 1 && c.head_dim == 16 && c.max_position_embeddings == 256);
    CHECK(c.norm_eps == 1e-6 && c.qkv_bias && !c.o_bias && !c.mlp_bias && c.tie_word_embeddings);
    CHECK(c.sliding_window == 0 && c.rope.type == LMC_ROPE_DEFAULT && c.rope.theta == 1e6);
    CHECK(c.bos_token_id == 0 && c.n_eos == 1 && c.eos_token_ids[0] == 1);

    s = lmc_config_load(&c, "tests/fixtures/gpt2-tiny", &err);
    CHECK_MSG(s == LMC_OK, "gpt2-tiny: %s", err.msg);
    CHECK(c.arch == LMC_ARCH_GPT2 && strcmp(c.model_type, "gpt2") == 0);
    CHECK(c.vocab_size == 512 && c.hidden_size == 64 && c.intermediate_size == 256 && c.num_layers == 2);
    CHECK(c.num_heads == 4 && c.num_kv_heads == 4 && c.head_dim == 16 && c.max_position_embeddings == 256);
    CHECK(c.norm_eps == 1e-5 && c.act == LMC_ACT_GELU_TANH && c.tie_word_embeddings);
    CHECK(c.qkv_bias && c.o_bias && c.mlp_bias);
    CHECK(c.bos_token_id == 0 && c.n_eos == 1 && c.eos_token_ids[0] == 0);

    s = lmc_config_load(&c, "tests/fixtures/no-such-model", &err);
    CHECK(s == LMC_ERR_IO && strstr(err.msg, "no-such-model/config.json"));
}

static void test_rope(void) {
    struct lmc_config c;
    lmc_err err = {0};
    /* old form: top-level rope_theta + rope_scaling {type} */
    char *j = with(base_llama, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}");
    char *j2 = with(j, "rope_theta", "500000.0");
    CHECK_MSG(parse(&c, j2, &err) == LMC_OK, "old linear: %s", err.msg);
    CHECK(c.rope.type == LMC_ROPE_LINEAR && c.rope.factor == 2.0 && c.rope.theta == 500000.0);
    free(j);
    free(j2);
    j = with(base_llama, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 4}");
    CHECK_MSG(parse(&c, j, &err) == LMC_OK, "old dynamic: %s", err.msg);
    CHECK(c.rope.type == LMC_ROPE_DYNAMIC && c.rope.factor == 4.0 && c.rope.theta == 10000.0);
    free(j);
    j = with(base_llama, "rope_scaling", "null");
    CHECK(parse(&c, j, &err) == LMC_OK && c.rope.type == LMC_ROPE_DEFAULT && c.rope.factor == 1.0);
    free(j);
    /* new form, each type */
    j = with(base_llama, "rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1e4}");
    CHECK(parse(&c, j, &err) == LMC_OK && c.rope.type == LMC_ROPE_LINEAR && c.rope.factor == 8.0);
    free(j);
    j = with(base_llama, "rope_parameters",
             "{\"rope_type\": \"dynamic\", \"factor\": 2.0, \"rope_theta\": 20000.0,"
             " \"original_max_position_embeddings\": 2048}");
    CHECK(parse(&c, j, &err) == LMC_OK && c.rope.type == LMC_ROPE_DYNAMIC && c.rope.theta == 20000.0 &&
          c.rope.original_max_pos == 2048);
    free(j);
    j = with(base_llama, "rope_parameters",
             "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
             " \"original_max_position_embeddings\": 8192, \"rope_theta\": 500000.0}");
    CHECK_MSG(parse(&c, j, &err) == LMC_OK, "llama3: %s", err.msg);
    CHECK(c.rope.type == LMC_ROPE_LLAMA3 && c.rope.factor == 8.0 && c.rope.low_freq_factor == 1.0 &&
          c.rope.high_freq_factor == 4.0 && c.rope.original_max_pos == 8192 && c.rope.theta == 500000.0);
    free(j);
    j = with(base_llama, "rope_parameters",
             "{\"rope_type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 32768,"
             " \"beta_fast\": 16, \"beta_slow\": 2, \"attention_factor\": 1.2, \"mscale\": 0.707,"
             " \"mscale_all_dim\": 0.707, \"truncate\": false, \"rope_theta\": 1e6}");
    CHECK_MSG(parse(&c, j, &err) == LMC_OK, "yarn: %s", err.msg);
    CHECK(c.rope.type == LMC_ROPE_YARN && c.rope.factor == 4.0 && c.rope.original_max_pos == 32768);
    CHECK(c.rope.beta_fast == 16 && c.rope.beta_slow == 2 && c.rope.attention_factor == 1.2);
    CHECK(c.rope.mscale == 0.707 && c.rope.mscale_all_dim == 0.707 && !c.rope.truncate && c.rope.theta == 1e6);
    free(j);
    j = with(base_llama, "rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 4.0}");
    CHECK(parse(&c, j, &err) == LMC_OK && c.rope.beta_fast == 32 && c.rope.beta_slow == 1 &&
          c.rope.attention_factor < 0 && c.rope.mscale == 0 && c.rope.truncate && c.rope.theta == 10000.0);
    free(j);
    /* partial rotary */
    j = with(base_llama, "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}");
    CHECK(parse(&c, j, &err) == LMC_OK && c.rope.partial_rotary_factor == 0.5);
    free(j);
    /* per-layer-type form (transformers 5 for mixed attention models) */
    j = with(base_llama, "rope_parameters",
             "{\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 3.0, \"rope_theta\": 1e5},"
             " \"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 1e4}}");
    CHECK(parse(&c, j, &err) == LMC_OK && c.rope.type == LMC_ROPE_LINEAR && c.rope.theta == 1e5);
    free(j);
    /* errors */
    expect_bad_with("longrope", base_llama, "rope_scaling",
                    "{\"type\": \"longrope\", \"short_factor\": [1], \"long_factor\": [2]}", LMC_ERR_UNSUPPORTED,
                    "longrope", "rope_scaling.type");
    expect_bad_with("new-form unknown", base_llama, "rope_parameters", "{\"rope_type\": \"mrope\"}",
                    LMC_ERR_UNSUPPORTED, "mrope", "rope_parameters.rope_type");
    expect_bad_with("llama3 without original", base_llama, "rope_parameters",
                    "{\"rope_type\": \"llama3\", \"factor\": 8.0}", LMC_ERR_FORMAT, "original_max_position_embeddings",
                    NULL);
    expect_bad_with("factor string", base_llama, "rope_scaling", "{\"type\": \"linear\", \"factor\": \"2\"}",
                    LMC_ERR_FORMAT, "rope_scaling.factor", "a number");
    expect_bad_with("theta negative", base_llama, "rope_theta", "-5", LMC_ERR_FORMAT, "rope_theta", NULL);
    expect_bad_with("rope_scaling list", base_llama, "rope_scaling", "[1]", LMC_ERR_FORMAT, "rope_scaling", NULL);
    expect_bad_with("rope type number", base_llama, "rope_parameters", "{\"rope_type\": 3}", LMC_ERR_FORMAT,
                    "rope_parameters.rope_type", "a string");
}

static void test_styles(void) {
    struct lmc_config c;
    lmc_err err = {0};
    const char *mistral =
        "{\"architectures\": [\"MistralForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 1,"
        " \"eos_token_id\": 2, \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
        " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\","
        " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
        " \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, \"sliding_window\": 4096,"
        " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.42.0\","
        " \"use_cache\": true, \"vocab_size\": 32768}";
    CHECK_MSG(parse(&c, mistral, &err) == LMC_OK, "mistral: %s", err.msg);
    CHECK(c.arch == LMC_ARCH_LLAMA && strcmp(c.model_type, "mistral") == 0 && c.head_dim == 128);
    CHECK(c.num_kv_heads == 8 && c.sliding_window == 4096 && c.rope.theta == 1e6 && !c.tie_word_embeddings);
    CHECK(!c.qkv_bias && !c.o_bias && strcmp(c.torch_dtype, "bfloat16") == 0 && c.vocab_size == 32768);

    const char *llama3 =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
        " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"hidden_act\": \"silu\","
        " \"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 8192,"
        " \"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\","
        " \"num_attention_heads\": 32, \"num_hidden_layers\": 16, \"num_key_value_heads\": 8,"
        " \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 32.0,"
        " \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192,"
        " \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0, \"tie_word_embeddings\": true,"
        " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.45.0.dev0\", \"use_cache\": true,"
        " \"vocab_size\": 128256}";
    CHECK_MSG(parse(&c, llama3, &err) == LMC_OK, "llama3: %s", err.msg);
    CHECK(c.vocab_size == 128256 && c.head_dim == 64 && c.num_kv_heads == 8 && c.tie_word_embeddings);
    CHECK(c.rope.type == LMC_ROPE_LLAMA3 && c.rope.factor == 32.0 && c.rope.theta == 500000.0 &&
          c.rope.original_max_pos == 8192);
    CHECK(c.bos_token_id == 128000 && c.n_eos == 3 && c.eos_token_ids[0] == 128001 &&
          c.eos_token_ids[2] == 128009);

    /* llama defaults and biases */
    char *j = with(base_llama, "num_key_value_heads", NULL);
    CHECK(parse(&c, j, &err) == LMC_OK && c.num_kv_heads == 8 && c.head_dim == 16 && !c.tie_word_embeddings);
    free(j);
    j = with(base_llama, "attention_bias", "true");
    char *j2 = with(j, "mlp_bias", "true");
    CHECK(parse(&c, j2, &err) == LMC_OK && c.qkv_bias && c.o_bias && c.mlp_bias);
    free(j);
    free(j2);
    j = with(base_llama, "head_dim", "32"); /* explicit head_dim need not be hidden/heads */
    CHECK(parse(&c, j, &err) == LMC_OK && c.head_dim == 32);
    free(j);
    j = with(base_llama, "torch_dtype", "\"float16\"");
    CHECK(parse(&c, j, &err) == LMC_OK && strcmp(c.torch_dtype, "float16") == 0);
    free(j);
    j = with(base_llama, "eos_token_id", "null");
    j2 = with(j, "pad_token_id", "-1");
    CHECK(parse(&c, j2, &err) == LMC_OK && c.n_eos == 0 && c.pad_token_id == -1);
    free(j);
    free(j2);
    j = with(base_llama, "hidden_act", "\"gelu_pytorch_tanh\"");
    CHECK(parse(&c, j, &err) == LMC_OK && c.act == LMC_ACT_GELU_TANH);
    free(j);

    /* qwen2 sliding window */
    const char *qwen_sw = "{\"model_type\": \"qwen2\", \"vocab_size\": 1000, \"hidden_size\": 128,"
                          " \"intermediate_size\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                          " \"num_key_value_heads\": 2, \"sliding_window\": 4096, \"use_sliding_window\": true,"
                          " \"attention_bias\": true}";
    CHECK(parse(&c, qwen_sw, &err) == LMC_OK && c.sliding_window == 4096 && c.qkv_bias && !c.o_bias);
    CHECK(!c.tie_word_embeddings && c.max_position_embeddings == 32768);
    j = with(qwen_sw, "use_sliding_window", "false");
    CHECK(parse(&c, j, &err) == LMC_OK && c.sliding_window == 0);
    free(j);

    /* gpt2 variants */
    CHECK_MSG(parse(&c, base_gpt2, &err) == LMC_OK, "gpt2: %s", err.msg);
    CHECK(c.intermediate_size == 384 && c.head_dim == 16 && c.act == LMC_ACT_GELU_TANH);
    j = with(base_gpt2, "n_inner", "200");
    j2 = with(j, "activation_function", "\"gelu\"");
    CHECK(parse(&c, j2, &err) == LMC_OK && c.intermediate_size == 200 && c.act == LMC_ACT_GELU);
    free(j);
    free(j2);
    j = with(base_gpt2, "tie_word_embeddings", "false");
    CHECK(parse(&c, j, &err) == LMC_OK && c.tie_word_embeddings);
    free(j);
}

static void test_generation(void) {
    struct lmc_config c;
    lmc_err err = {0};
    CHECK(parse(&c, base_llama, &err) == LMC_OK);
    const char *g = "{\"bos_token_id\": 5, \"eos_token_id\": [7, 9], \"do_sample\": true, \"temperature\": 0.7,"
                    " \"top_k\": 20, \"top_p\": 0.8, \"min_p\": 0.05, \"repetition_penalty\": 1.1}";
    lmc_status s = lmc_config_parse_generation(&c, g, strlen(g), "gen.json", &err);
    CHECK_MSG(s == LMC_OK, "gen: %s", err.msg);
    CHECK(c.bos_token_id == 5 && c.n_eos == 2 && c.eos_token_ids[0] == 7 && c.eos_token_ids[1] == 9);
    CHECK(c.gen_do_sample && c.gen_temperature == 0.7 && c.gen_top_k == 20 && c.gen_top_p == 0.8);
    CHECK(c.gen_min_p == 0.05 && c.gen_repetition_penalty == 1.1);
    /* absent keys leave values alone; eos as an int */
    const char *g2 = "{\"eos_token_id\": 11, \"top_k\": null}";
    CHECK(lmc_config_parse_generation(&c, g2, strlen(g2), "gen.json", &err) == LMC_OK);
    CHECK(c.n_eos == 1 && c.eos_token_ids[0] == 11 && c.bos_token_id == 5 && c.gen_top_k == 20);
    /* errors leave c unchanged */
    struct lmc_config before = c;
    static const struct { const char *json, *sub; } bad[] = {
        {"{\"temperature\": \"hot\"}", "temperature"},
        {"{\"eos_token_id\": 3, \"top_k\": -1}", "top_k"},
        {"{\"top_p\": 1.5}", "top_p"},
        {"{\"eos_token_id\": [1, \"x\"]}", "eos_token_id"},
        {"{\"do_sample\": 1}", "do_sample"},
        {"{\"repetition_penalty\": 0}", "repetition_penalty"},
        {"[1]", "object"},
        {"{\"temperature\": 0.5", "JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = lmc_config_parse_generation(&c, bad[i].json, strlen(bad[i].json), "gen.json", &err);
        CHECK_MSG(s == LMC_ERR_FORMAT && strstr(err.msg, bad[i].sub) && strstr(err.msg, "gen.json"),
                  "gen bad %zu: %d %s", i, (int)s, err.msg);
        CHECK(memcmp(&before, &c, sizeof c) == 0);
    }
}

static void test_bad(void) {
    expect_bad_with("hidden_size string", base_llama, "hidden_size", "\"64\"", LMC_ERR_FORMAT, "'hidden_size'",
                    "a string, expected an integer");
    expect_bad_with("missing hidden_size", base_llama, "hidden_size", NULL, LMC_ERR_FORMAT, "hidden_size",
                    "missing");
    expect_bad_with("fractional hidden_size", base_llama, "hidden_size", "64.5", LMC_ERR_FORMAT, "hidden_size",
                    "integer");
    expect_bad_with("zero heads", base_llama, "num_attention_heads", "0", LMC_ERR_FORMAT, "num_attention_heads",
                    NULL);
    expect_bad_with("negative layers", base_llama, "num_hidden_layers", "-2", LMC_ERR_FORMAT, "num_hidden_layers",
                    NULL);
    expect_bad_with("too many layers", base_llama, "num_hidden_layers", "5000", LMC_ERR_FORMAT,
                    "num_hidden_layers", "4096");
    expect_bad_with("kv heads not dividing", base_llama, "num_key_value_heads", "3", LMC_ERR_FORMAT,
                    "num_key_value_heads", "num_attention_heads");
    expect_bad_with("kv heads more than heads", base_llama, "num_key_value_heads", "16", LMC_ERR_FORMAT,
                    "num_key_value_heads", NULL);
    expect_bad_with("heads not dividing hidden", base_llama, "num_attention_heads", "7", LMC_ERR_FORMAT,
                    "num_attention_heads", "hidden_size");
    expect_bad_with("odd head_dim", base_llama, "head_dim", "15", LMC_ERR_FORMAT, "even", NULL);
    expect_bad_with("huge head_dim", base_llama, "head_dim", "4096", LMC_ERR_FORMAT, "head_dim", NULL);
    expect_bad_with("huge vocab", base_llama, "vocab_size", "1e12", LMC_ERR_FORMAT, "vocab_size", NULL);
    expect_bad_with("huge hidden", base_llama, "hidden_size", "1099511627776", LMC_ERR_FORMAT, "hidden_size", NULL);
    expect_bad_with("infinite hidden", base_llama, "hidden_size", "1e400", LMC_ERR_FORMAT, "hidden_size", NULL);
    expect_bad_with("huge intermediate", base_llama, "intermediate_size", "4294967296", LMC_ERR_FORMAT,
                    "intermediate_size", NULL);
    expect_bad_with("bert", base_llama, "model_type", "\"bert\"", LMC_ERR_UNSUPPORTED, "'bert'", "llama, mistral");
    expect_bad_with("rwkv", base_llama, "model_type", "\"rwkv\"", LMC_ERR_UNSUPPORTED, "rwkv", NULL);
    expect_bad_with("no model_type", base_llama, "model_type", NULL, LMC_ERR_FORMAT, "model_type", NULL);
    expect_bad_with("model_type number", base_llama, "model_type", "7", LMC_ERR_FORMAT, "model_type", "a number");
    expect_bad_with("bias as string", base_llama, "attention_bias", "\"false\"", LMC_ERR_FORMAT, "attention_bias",
                    "true or false");
    expect_bad_with("tie as number", base_llama, "tie_word_embeddings", "1", LMC_ERR_FORMAT, "tie_word_embeddings",
                    NULL);
    expect_bad_with("eps string", base_llama, "rms_norm_eps", "\"1e-5\"", LMC_ERR_FORMAT, "rms_norm_eps", NULL);
    expect_bad_with("unknown act", base_llama, "hidden_act", "\"relu2\"", LMC_ERR_UNSUPPORTED, "relu2", "hidden_act");
    expect_bad_with("act not string", base_llama, "hidden_act", "[\"silu\"]", LMC_ERR_FORMAT, "hidden_act", NULL);
    expect_bad_with("eos list of strings", base_llama, "eos_token_id", "[2, \"</s>\"]", LMC_ERR_FORMAT,
                    "eos_token_id", NULL);
    expect_bad_with("eos list too long", base_llama, "eos_token_id", "[1,2,3,4,5,6,7,8,9]", LMC_ERR_UNSUPPORTED,
                    "eos_token_id", NULL);
    expect_bad_with("eos object", base_llama, "eos_token_id", "{}", LMC_ERR_FORMAT, "eos_token_id", NULL);
    expect_bad_with("sliding window negative", base_llama, "sliding_window", "-1", LMC_ERR_FORMAT, "sliding_window",
                    NULL);
    expect_bad_with("dtype too long", base_llama, "torch_dtype", "\"float32float32float32\"", LMC_ERR_FORMAT,
                    "torch_dtype", NULL);
    expect_bad_with("gpt2 missing n_embd", base_gpt2, "n_embd", NULL, LMC_ERR_FORMAT, "n_embd", NULL);
    expect_bad_with("gpt2 n_head not dividing", base_gpt2, "n_head", "5", LMC_ERR_FORMAT, "n_head", "n_embd");
    expect_bad_with("gpt2 n_inner string", base_gpt2, "n_inner", "\"4\"", LMC_ERR_FORMAT, "n_inner", NULL);
    expect_bad_with("gpt2 act", base_gpt2, "activation_function", "\"relu\"", LMC_ERR_UNSUPPORTED,
                    "activation_function", "relu");

    expect_bad("malformed JSON", "{\"model_type\": \"llama\", \"hidden_size\": 64,", LMC_ERR_FORMAT, "not valid JSON",
               NULL);
    expect_bad("empty", "", LMC_ERR_FORMAT, "JSON", NULL);
    expect_bad("top-level array", "[1, 2]", LMC_ERR_FORMAT, "an array", "object");
    expect_bad("trailing garbage", "{} {}", LMC_ERR_FORMAT, "after the JSON", NULL);
    /* hostile nesting: 100000 levels of arrays inside a field */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 64);
    size_t k = (size_t)sprintf(deep, "{\"model_type\": ");
    for (size_t i = 0; i < depth; i++) deep[k++] = '[';
    for (size_t i = 0; i < depth; i++) deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = 0;
    expect_bad("deep nesting", deep, LMC_ERR_FORMAT, "not valid JSON", "nested deeper");
    free(deep);
    /* a not-NUL-terminated buffer: only len bytes are read */
    struct lmc_config c;
    lmc_err err = {0};
    size_t n = strlen(base_llama);
    char *copy = malloc(n);
    memcpy(copy, base_llama, n);
    CHECK(lmc_config_parse(&c, copy, n, "cfg.json", &err) == LMC_OK && c.hidden_size == 128);
    CHECK(lmc_config_parse(&c, copy, n - 1, "cfg.json", &err) == LMC_ERR_FORMAT);
    free(copy);
}

/* Mamba / Mamba-2 through the one config parser: the SSM sizes in
 * lmc_config.mamba, the model-layer fields, and inconsistent sizes refused
 * naming the fields. */
static void test_mamba(void) {
    struct lmc_config c;
    lmc_err err = {0};
    lmc_status s = lmc_config_load(&c, "tests/fixtures/mamba-tiny", &err);
    CHECK_MSG(s == LMC_OK, "mamba-tiny: %s", err.msg);
    CHECK(c.arch == LMC_ARCH_MAMBA && strcmp(c.model_type, "mamba") == 0 && c.mamba.kind == LMC_MAMBA_1);
    CHECK(c.vocab_size == 512 && c.hidden_size == 64 && c.num_layers == 2 && c.intermediate_size == 128);
    CHECK(c.mamba.d_inner == 128 && c.mamba.in_proj_dim == 256 && c.mamba.conv_dim == 128);
    CHECK(c.mamba.xproj_dim == c.mamba.time_step_rank + 2 * c.mamba.state_size && c.tie_word_embeddings);
    s = lmc_config_load(&c, "tests/fixtures/mamba2-tiny", &err);
    CHECK_MSG(s == LMC_OK, "mamba2-tiny: %s", err.msg);
    CHECK(c.arch == LMC_ARCH_MAMBA2 && strcmp(c.model_type, "mamba2") == 0 && c.mamba.kind == LMC_MAMBA_2);
    CHECK(c.mamba.num_heads == 8 && c.mamba.head_dim == 16 && c.mamba.n_groups == 1 && c.mamba.chunk_size == 16);
    CHECK(c.mamba.conv_dim == 128 + 2 * 16 && c.mamba.in_proj_dim == 2 * 128 + 2 * 16 + 8);
    CHECK(c.bos_token_id == 0 && c.n_eos == 1 && c.eos_token_ids[0] == 2 && c.pad_token_id == 1);
    CHECK(!c.tie_word_embeddings);
    /* 8 heads x 16 != expand 2 x hidden 48 */
    expect_bad("mamba2 heads x head_dim",
               "{\"model_type\":\"mamba2\",\"vocab_size\":512,\"hidden_size\":48,\"num_hidden_layers\":2,"
               "\"num_heads\":8,\"head_dim\":16,\"n_groups\":1,\"expand\":2}",
               LMC_ERR_FORMAT, "num_heads", NULL);
    expect_bad("mamba without vocab",
               "{\"model_type\":\"mamba\",\"hidden_size\":64,\"num_hidden_layers\":2}", LMC_ERR_FORMAT,
               "vocab_size", NULL);
}

int main(void) {
    test_fixtures();
    test_mamba();
    test_rope();
    test_styles();
    test_generation();
    test_bad();
    return test_finish("test_config");
}
