/* test_mp_mem.c — per-rank memory of model-parallel layouts (mp_mem.h) on
 * the llama-tiny and qwen2-tiny configs: at TP 1, 2, 4 the parameter count
 * equals the tensors lmc_tp_tmodel_shard actually allocates for rank 0
 * (replicated KV heads included), 16 bytes each, also with the vocabulary
 * split (lmc_tp_tmodel_shard_vocab, --tp-vocab); the activations at
 * TP 1 x CP 1 are lmc_tacts_bytes of the config, shrink with CP (CP 4 a
 * quarter of the tokens) and multiply by the live micro-batches of 1F1B;
 * over the pipeline stages (1F1B and interleaved with V chunks, the
 * planner's split and given ones), the one reported is the stage whose
 * part (lmc_pp_stage_keep) and arenas (lmc_pp_tstage_init_split) need the
 * most, with their figures; layouts that do not split (or a wrong
 * --pp-layers) are refused naming the dimension. */
#include "test.h"
#include "dist/mp_mem.h"
#include "dist/tp_train.h"
#include "dist/pp_model.h"

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    const char *fx[] = {"tests/fixtures/llama-tiny", "tests/fixtures/qwen2-tiny"};
    for (int f = 0; f < 2; f++) {
        struct lmc_tmodel full;
        if (lmc_tmodel_load(&full, fx[f], &be, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        const struct lmc_config *c = &full.cfg;
        for (int T = 1; T <= 4; T *= 2) {
            struct lmc_comm fake = {0};
            fake.rank = 0, fake.world = T;
            struct lmc_tmodel tm;
            struct lmc_tp_group g;
            struct lmc_tp_heads h;
            CHECK(lmc_tp_tmodel_shard(&tm, &g, &h, &full, &fake, &be, &err) == LMC_OK);
            int64_t numel = 0;
            for (int i = 0; i < tm.n_params; i++) numel += tm.params[i].numel;
            struct lmc_mp_layout l = {T, 1, 1, 2, 64, 1, false, 1, NULL};
            struct lmc_mp_mem m;
            CHECK(lmc_mp_mem(c, &l, &m, &err) == LMC_OK);
            CHECK_MSG(m.params == numel, "%s TP %d: %lld vs %lld", fx[f], T, (long long)m.params, (long long)numel);
            CHECK(m.weights == 4.0 * numel && m.optimizer == 8.0 * numel && m.live == 1);
            lmc_tmodel_free(&tm);
            /* the vocabulary split too (--tp-vocab): rank 0 holds ceil(V/T) rows */
            struct lmc_tvocab tv;
            CHECK(lmc_tp_tmodel_shard_vocab(&tm, &g, &h, &tv, &full, &fake, &be, &err) == LMC_OK);
            int64_t vnumel = 0;
            for (int i = 0; i < tm.n_params; i++) vnumel += tm.params[i].numel;
            l.vocab = true;
            struct lmc_mp_mem mv;
            CHECK(lmc_mp_mem(c, &l, &mv, &err) == LMC_OK);
            CHECK_MSG(mv.params == vnumel && (T == 1 || vnumel < numel), "%s TP %d vocab: %lld vs %lld (%lld whole)",
                      fx[f], T, (long long)mv.params, (long long)vnumel, (long long)numel);
            CHECK(mv.activations == m.activations + 4.0 * 2 * 64 * (double)((c->vocab_size + T - 1) / T));
            lmc_tmodel_free(&tm);
        }
        struct lmc_mp_layout l1 = {1, 1, 1, 2, 4096, 1, false, 1, NULL}, l4 = {1, 1, 4, 2, 4096, 1, false, 1, NULL};
        struct lmc_mp_mem a, b;
        CHECK(lmc_mp_mem(c, &l1, &a, &err) == LMC_OK && lmc_mp_mem(c, &l4, &b, &err) == LMC_OK);
        CHECK(a.activations == (double)lmc_tacts_bytes(c, 2, 4096, false));
        CHECK(b.activations == (double)lmc_tacts_bytes(c, 2, 1024, false) && b.tokens == 2048);
        CHECK(b.activations < a.activations / 3.5 && b.params == a.params);
        struct lmc_mp_layout p2 = {1, 2, 1, 2, 64, 8, false, 1, NULL};
        CHECK(lmc_mp_mem(c, &p2, &a, &err) == LMC_OK && a.layers == 1 && a.live == 2);
        struct lmc_config one = *c;
        one.num_layers = 1;
        CHECK(a.activations == 2.0 * (double)lmc_tacts_bytes(&one, 2, 64, false));
        struct lmc_mp_layout bad = {3, 1, 1, 1, 64, 1, false, 1, NULL};
        CHECK(lmc_mp_mem(c, &bad, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "heads"));
        bad = (struct lmc_mp_layout){1, 3, 1, 1, 64, 1, false, 1, NULL};
        CHECK(lmc_mp_mem(c, &bad, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "layers"));
        bad = (struct lmc_mp_layout){1, 1, 8, 1, 7, 1, false, 1, NULL};
        CHECK(lmc_mp_mem(c, &bad, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "7 tokens"));
        /* each pipeline stage as lmc train --pp builds it (lmc_pp_split_plan, lmc_pp_stage_keep,
         * lmc_pp_tstage_init_split): the layout reports the stage needing the most, with the parameters
         * its part holds and its arenas (count x bytes); balanced and given (--pp-layers) splits */
        static const struct { int64_t L; int P, V, M; const char *split; } pl[] = {
            {2, 2, 1, 4, NULL}, {4, 2, 2, 4, NULL}, {8, 4, 2, 8, NULL}, {5, 2, 2, 2, NULL}, {5, 2, 1, 4, "1,4"},
            {7, 3, 1, 2, "5,1,1"}, {6, 2, 2, 2, "1,1,3,1"}};
        for (size_t k = 0; k < sizeof pl / sizeof *pl; k++) {
            struct lmc_config cl = *c;
            cl.num_layers = pl[k].L;
            struct lmc_mp_layout x = {1, pl[k].P, 1, 2, 64, pl[k].M, false, pl[k].V, pl[k].split};
            struct lmc_mp_mem y;
            CHECK(lmc_mp_mem(&cl, &x, &y, &err) == LMC_OK);
            int64_t b[17];
            CHECK(lmc_pp_split_plan(&cl, pl[k].P, pl[k].V, pl[k].split, b, &err) == LMC_OK);
            double most = -1;
            int at = -1;
            int64_t at_held = 0, at_layers = 0;
            for (int r = 0; r < pl[k].P; r++) {
                bool keep[16];
                struct lmc_tmodel lay, part;
                CHECK(lmc_tmodel_init_layout(&lay, &cl, &be, &err) == LMC_OK);
                lmc_pp_stage_keep(b, cl.num_layers, lay.tied_head, pl[k].P, pl[k].V, r, keep);
                lmc_tmodel_free(&lay);
                if (lmc_tmodel_init_parts(&part, &cl, &be, keep, true, &err)) {
                    CHECK_MSG(0, "%s", err.msg);
                    continue;
                }
                int64_t held = 0, layers = 0;
                for (int i = 0; i < part.n_params; i++) held += part.params[i].elsewhere ? 0 : part.params[i].numel;
                for (int64_t l = 0; l < cl.num_layers; l++) layers += keep[l + 1];
                struct lmc_pp_tstage st;
                CHECK(lmc_pp_tstage_init_split(&st, &part, &be, b, r, pl[k].P, pl[k].V, pl[k].M, 2, 64, &err) == LMC_OK);
                double total = 16.0 * (double)held +
                               (double)st.n_acts * (double)lmc_tacts_bytes_layers(&cl, st.acts[0].n_layers, 2, 64, false);
                if (total > most) most = total, at = r, at_held = held, at_layers = layers;
                if (r == y.stage)
                    CHECK_MSG(y.live == st.n_acts && y.activations == (double)st.n_acts *
                              (double)lmc_tacts_bytes_layers(&cl, st.acts[0].n_layers, 2, 64, false),
                              "%s L %lld P %d V %d stage %d: %d vs %d arenas", fx[f], (long long)pl[k].L, pl[k].P,
                              pl[k].V, r, y.live, st.n_acts);
                lmc_pp_tstage_free(&st);
                lmc_tmodel_free(&part);
            }
            CHECK_MSG(y.stage == at && y.params == at_held && y.layers == at_layers && y.total == most,
                      "%s L %lld P %d V %d %s: stage %d params %lld layers %lld total %.0f vs stage %d held %lld "
                      "layers %lld total %.0f", fx[f], (long long)pl[k].L, pl[k].P, pl[k].V,
                      pl[k].split ? pl[k].split : "-", y.stage, (long long)y.params, (long long)y.layers, y.total, at,
                      (long long)at_held, (long long)at_layers, most);
        }
        /* a wrong --pp-layers is refused naming it */
        struct lmc_mp_layout wrong = {1, 2, 1, 2, 64, 2, false, 1, "1,x"};
        CHECK(lmc_mp_mem(c, &wrong, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "--pp-layers"));
        struct lmc_config c4 = *c;
        c4.num_layers = 4;
        struct lmc_mp_layout odd = {1, 2, 1, 2, 64, 3, false, 2, NULL};
        CHECK(lmc_mp_mem(&c4, &odd, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "multiple"));
        CHECK(lmc_mp_mem(c, &odd, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "2 chunks"));
        lmc_tmodel_free(&full);
    }
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_mem");
}
