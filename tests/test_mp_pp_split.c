/* test_mp_pp_split.c — the pipeline stage planner and --pp-layers
 * (dist/pp_split.h):
 *   1. on a table of configs (llama and gpt2; 5, 7, 9 and 11 layers; a
 *      vocabulary of 32 and of 6000; tied and untied heads) split into
 *      P x V chunks (P 1..4, V 1, 2), the planner's largest chunk equals
 *      the brute-force optimum (min over every cut into non-empty chunks
 *      of the max chunk), counted here from the architecture's tensor
 *      table on its own (the embeddings on the first chunk, the final norm
 *      and the head on the last, a tied head the embedding matrix there,
 *      once when one chunk holds both); the bounds are a cut of the layers
 *      into non-empty chunks; P x V above the layers is refused;
 *   2. lmc_pp_costs_balance against the brute force on random uneven layer
 *      costs (200 cases: 1..10 layers, heavy first/last extras or none);
 *   3. a big vocabulary moves layers off the first and last stages (one
 *      layer each, the middle ones even: 1,3,3,1 of 8), below the even
 *      split's largest stage; small ends split 8 equal layers 2,2,2,2;
 *   4. --pp-layers: counts become the bounds (and override the planner);
 *      a wrong count of counts, a zero, a sum other than the layers, junk
 *      (letters, signs, spaces, empty fields, decimals, overflow) are
 *      refused naming what is wrong;
 *   5. lmc_pp_infer_plan is the planner at V = 1 and
 *      lmc_pp_infer_stage_params its chunk counts. */
#include "test.h"
#include "dist/pp_split.h"
#include "dist/pp_infer.h"
#include "model/arch.h"

#include <stdlib.h>

struct own {
    int64_t layer[64], tok, pos, norm, head;
    bool head_listed;
};

static lmc_status walk(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct own *o = user;
    if (t->layer >= 0) o->layer[t->layer] += t->numel;
    else if (t->spec->kind == LMC_TK_TOK_EMB) o->tok += t->numel;
    else if (t->spec->kind == LMC_TK_POS_EMB) o->pos += t->numel;
    else if (t->spec->kind == LMC_TK_HEAD) o->head += t->numel, o->head_listed = t->required;
    else o->norm += t->numel;
    return LMC_OK;
}

/* A chunk [l0, l1) of L as this test counts it. */
static int64_t chunk(const struct own *o, bool tied, int64_t L, int64_t l0, int64_t l1) {
    int64_t p = 0;
    for (int64_t l = l0; l < l1; l++) p += o->layer[l];
    if (l0 == 0) p += o->tok + o->pos;
    if (l1 == L) p += o->norm + (tied ? (l0 == 0 ? 0 : o->tok) : o->head);
    return p;
}

/* min over the cuts of [l0, L) into k non-empty chunks of the largest (first: l0 == 0). */
static int64_t brute(const struct own *o, bool tied, int64_t L, int64_t l0, int k) {
    if (k == 1) return chunk(o, tied, L, l0, L);
    int64_t best = INT64_MAX;
    for (int64_t e = l0 + 1; e <= L - (k - 1); e++) {
        int64_t a = chunk(o, tied, L, l0, e), b = brute(o, tied, L, e, k - 1);
        int64_t m = a > b ? a : b;
        if (m < best) best = m;
    }
    return best;
}

static bool is_cut(const int64_t *b, int K, int64_t L) {
    if (b[0] != 0 || b[K] != L) return false;
    for (int k = 0; k < K; k++)
        if (b[k + 1] <= b[k]) return false;
    return true;
}

static void test_configs(void) {
    static const char *arch[] = {"llama", "gpt2"};
    static const int64_t layers[] = {5, 7, 9, 11}, vocab[] = {32, 6000};
    int n = 0;
    for (int a = 0; a < 2; a++)
        for (int li = 0; li < 4; li++)
            for (int vi = 0; vi < 2; vi++)
                for (int tie = 0; tie < 2; tie++) {
                    struct lmc_model_shape sh = {.vocab = vocab[vi], .hidden = 32, .layers = layers[li], .heads = 4,
                                                 .kv_heads = a == 0 ? 2 : 0, .intermediate = 48, .max_pos = 64,
                                                 .tie = tie, .rope_theta = 10000};
                    struct lmc_config c;
                    lmc_err err = {0};
                    if (lmc_config_build(&c, arch[a], &sh, &err)) {
                        CHECK_MSG(0, "%s: %s", arch[a], err.msg);
                        continue;
                    }
                    struct own o;
                    memset(&o, 0, sizeof o);
                    CHECK(lmc_arch_walk(lmc_arch_of(&c), &c, walk, &o, &err) == LMC_OK);
                    bool tied = c.tie_word_embeddings || !o.head_listed;
                    CHECK(tied == (tie != 0) || a == 1); /* GPT-2 always ties its head */
                    int64_t L = c.num_layers;
                    for (int P = 1; P <= 4; P++)
                        for (int V = 1; V <= 2; V++) {
                            int K = P * V;
                            int64_t b[16];
                            if (K > L) {
                                CHECK(lmc_pp_split_plan(&c, P, V, NULL, b, &err) == LMC_ERR_ARG &&
                                      strstr(err.msg, "at least one"));
                                continue;
                            }
                            CHECK(lmc_pp_split_plan(&c, P, V, NULL, b, &err) == LMC_OK && is_cut(b, K, L));
                            int64_t most = 0;
                            for (int k = 0; k < K; k++) {
                                int64_t p = chunk(&o, tied, L, b[k], b[k + 1]);
                                if (p > most) most = p;
                            }
                            int64_t best = brute(&o, tied, L, 0, K);
                            CHECK_MSG(most == best, "%s L %lld vocab %lld tie %d P %d V %d: largest chunk %lld, optimum %lld",
                                      arch[a], (long long)L, (long long)vocab[vi], tie, P, V, (long long)most,
                                      (long long)best);
                            n++;
                        }
                }
    CHECK(n > 100);
    /* P x V above the layers: refused */
    struct lmc_model_shape sh = {.vocab = 32, .hidden = 32, .layers = 3, .heads = 4, .intermediate = 48, .max_pos = 64,
                                 .rope_theta = 10000};
    struct lmc_config c;
    lmc_err err = {0};
    int64_t b[16];
    CHECK(lmc_config_build(&c, "llama", &sh, &err) == LMC_OK);
    CHECK(lmc_pp_split_plan(&c, 2, 2, NULL, b, &err) == LMC_ERR_ARG && strstr(err.msg, "3 layers"));
    CHECK(lmc_pp_split_plan(&c, 4, 1, NULL, b, &err) == LMC_ERR_ARG && strstr(err.msg, "at least one"));
    CHECK(lmc_pp_split_plan(&c, 0, 1, NULL, b, &err) == LMC_ERR_ARG);
    CHECK(lmc_pp_split_plan(&c, 3, 1, NULL, b, &err) == LMC_OK && b[1] == 1 && b[2] == 2 && b[3] == 3);
}

static void test_random_costs(void) {
    uint64_t seed = 7;
    for (int t = 0; t < 200; t++) {
        int64_t L = 1 + (int64_t)(test_rng_next(&seed) % 10), layer[10];
        struct own o;
        memset(&o, 0, sizeof o);
        for (int64_t l = 0; l < L; l++) o.layer[l] = layer[l] = 1 + (int64_t)(test_rng_next(&seed) % 1000);
        int kind = (int)(test_rng_next(&seed) % 3); /* no extras, heavy untied ends, a heavy tied embedding */
        int64_t big = kind ? 500 + (int64_t)(test_rng_next(&seed) % 5000) : 0;
        o.tok = big, o.norm = kind ? 3 : 0, o.head = kind == 1 ? big : 0;
        bool tied = kind == 2;
        struct lmc_pp_costs k = {L, layer, o.tok, o.norm + (tied ? o.tok : o.head), tied ? o.tok : 0};
        int K = 1 + (int)(test_rng_next(&seed) % (uint64_t)L);
        int64_t b[11];
        lmc_err err = {0};
        CHECK(lmc_pp_costs_balance(&k, K, b, &err) == LMC_OK && is_cut(b, K, L));
        int64_t most = 0;
        for (int j = 0; j < K; j++) {
            int64_t p = chunk(&o, tied, L, b[j], b[j + 1]);
            CHECK(p == lmc_pp_costs_chunk(&k, b[j], b[j + 1]));
            if (p > most) most = p;
        }
        int64_t best = brute(&o, tied, L, 0, K);
        CHECK_MSG(most == best, "case %d: L %lld K %d kind %d: %lld vs optimum %lld", t, (long long)L, K, kind,
                  (long long)most, (long long)best);
        CHECK(lmc_pp_costs_balance(&k, K + (int)L, b, &err) == LMC_ERR_ARG);
    }
}

static void test_vocab_moves_layers(void) {
    lmc_err err = {0};
    struct lmc_config small, big;
    struct lmc_model_shape sh = {.vocab = 32, .hidden = 64, .layers = 8, .heads = 4, .intermediate = 96, .max_pos = 64,
                                 .rope_theta = 10000};
    CHECK(lmc_config_build(&small, "llama", &sh, &err) == LMC_OK);
    sh.vocab = 40000; /* the embedding about 70 layers' worth: the ends get one layer each */
    CHECK(lmc_config_build(&big, "llama", &sh, &err) == LMC_OK);
    int64_t b[5];
    CHECK(lmc_pp_split_plan(&small, 4, 1, NULL, b, &err) == LMC_OK);
    for (int s = 0; s < 4; s++) CHECK(b[s + 1] - b[s] == 2); /* eight equal layers, small ends */
    CHECK(lmc_pp_split_plan(&big, 4, 1, NULL, b, &err) == LMC_OK);
    CHECK_MSG(b[1] == 1 && b[2] == 4 && b[3] == 7, "big vocabulary: %lld %lld %lld %lld", (long long)b[1],
              (long long)(b[2] - b[1]), (long long)(b[3] - b[2]), (long long)(b[4] - b[3]));
    /* the balanced split's largest stage is smaller than the even split's (2 layers each) */
    struct lmc_pp_costs k;
    CHECK(lmc_pp_costs_init(&k, &big, &err) == LMC_OK);
    int64_t most = 0, even = 0;
    for (int s = 0; s < 4; s++) {
        int64_t p = lmc_pp_costs_chunk(&k, b[s], b[s + 1]), q = lmc_pp_costs_chunk(&k, 2 * s, 2 * s + 2);
        most = p > most ? p : most, even = q > even ? q : even;
    }
    CHECK(most < even);
    lmc_pp_costs_free(&k);
}

static void test_parse(void) {
    lmc_err err = {0};
    int64_t b[9];
    CHECK(lmc_pp_split_parse("2,1,3", 6, 3, 1, b, &err) == LMC_OK && b[0] == 0 && b[1] == 2 && b[2] == 3 && b[3] == 6);
    CHECK(lmc_pp_split_parse("1,2,1,3", 7, 2, 2, b, &err) == LMC_OK && b[1] == 1 && b[2] == 3 && b[3] == 4 &&
          b[4] == 7);
    CHECK(lmc_pp_split_parse("7", 7, 1, 1, b, &err) == LMC_OK && b[1] == 7);
    /* a chunk's layers from the bounds: model chunk v P + s */
    int64_t l0, l1;
    lmc_pp_chunk_layers(b, 1, 1, 0, 0, &l0, &l1);
    CHECK(l0 == 0 && l1 == 7);
    CHECK(lmc_pp_split_parse("1,2,1,3", 7, 2, 2, b, &err) == LMC_OK);
    lmc_pp_chunk_layers(b, 2, 2, 1, 0, &l0, &l1);
    CHECK(l0 == 1 && l1 == 3);
    lmc_pp_chunk_layers(b, 2, 2, 0, 1, &l0, &l1);
    CHECK(l0 == 3 && l1 == 4);
    static const struct { const char *text; int64_t L; int P, V; const char *says; } bad[] = {
        {"2,1", 6, 3, 1, "gives 2 counts"},
        {"2,1,1,2", 6, 3, 1, "gives 4 counts"},
        {"1,2,3", 6, 2, 2, "need 4"},
        {"0,6", 6, 2, 1, "chunk 0 has 0 layers"},
        {"6,0", 6, 2, 1, "chunk 1 has 0 layers"},
        {"2,3", 6, 2, 1, "sums to 5 layers; the model has 6"},
        {"4,4", 6, 2, 1, "sums to 8"},
        {"a,6", 6, 2, 1, "'a' is not a layer count"},
        {"3,3x", 6, 2, 1, "'3x' is not"},
        {"-1,7", 6, 2, 1, "'-1' is not"},
        {"+3,3", 6, 2, 1, "'+3' is not"},
        {" 3,3", 6, 2, 1, "' 3' is not"},
        {"3, 3", 6, 2, 1, "' 3' is not"},
        {"3,,3", 6, 3, 1, "'' is not"},
        {"3,3,", 6, 3, 1, "'' is not"},
        {"1.5,4.5", 6, 2, 1, "'1.5' is not"},
        {"99999999999999999999999,1", 6, 2, 1, "is not a layer count"},
        {"", 6, 1, 1, "'' is not"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        lmc_status st = lmc_pp_split_parse(bad[i].text, bad[i].L, bad[i].P, bad[i].V, b, &err);
        CHECK_MSG(st == LMC_ERR_ARG && strstr(err.msg, bad[i].says) && strstr(err.msg, "--pp-layers"),
                  "'%s': status %d, '%s'", bad[i].text, (int)st, err.msg);
    }
    /* the text overrides the planner; an empty one does not */
    struct lmc_model_shape sh = {.vocab = 32, .hidden = 32, .layers = 6, .heads = 4, .intermediate = 48, .max_pos = 64,
                                 .rope_theta = 10000};
    struct lmc_config c;
    CHECK(lmc_config_build(&c, "llama", &sh, &err) == LMC_OK);
    CHECK(lmc_pp_split_plan(&c, 2, 1, "5,1", b, &err) == LMC_OK && b[1] == 5);
    CHECK(lmc_pp_split_plan(&c, 2, 1, "", b, &err) == LMC_OK && b[1] == 3);
    CHECK(lmc_pp_split_plan(&c, 2, 1, "5,2", b, &err) == LMC_ERR_ARG && strstr(err.msg, "sums to 7"));
}

static void test_infer(void) {
    struct lmc_model_shape sh = {.vocab = 3000, .hidden = 32, .layers = 9, .heads = 4, .intermediate = 48,
                                 .max_pos = 64, .tie = true, .rope_theta = 10000};
    struct lmc_config c;
    lmc_err err = {0};
    CHECK(lmc_config_build(&c, "gpt2", &sh, &err) == LMC_OK);
    struct lmc_pp_costs k;
    CHECK(lmc_pp_costs_init(&k, &c, &err) == LMC_OK);
    for (int P = 1; P <= 4; P++) {
        int64_t a[5], b[5];
        CHECK(lmc_pp_infer_plan(&c, P, a, &err) == LMC_OK && lmc_pp_split_plan(&c, P, 1, NULL, b, &err) == LMC_OK);
        int64_t sum = 0;
        for (int s = 0; s <= P; s++) CHECK(a[s] == b[s]);
        for (int s = 0; s < P; s++) {
            int64_t p = lmc_pp_infer_stage_params(&c, a, P, s);
            CHECK(p == lmc_pp_costs_chunk(&k, a[s], a[s + 1]));
            sum += p;
        }
        /* the stages hold the model, the tied embedding again on the last when it is not the first */
        CHECK(sum == lmc_pp_costs_chunk(&k, 0, c.num_layers) + (P > 1 ? k.shared : 0));
    }
    lmc_pp_costs_free(&k);
}

int main(void) {
    test_configs();
    test_random_costs();
    test_vocab_moves_layers();
    test_parse();
    test_infer();
    return test_finish("test_mp_pp_split");
}
