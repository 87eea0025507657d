/* test_mp_mem.c — per-rank memory of model-parallel layouts (mp_mem.h) on
 * the llama-tiny and qwen2-tiny configs: at TP 1, 2, 4 the parameter count
 * equals the tensors lmc_tp_tmodel_shard actually allocates for rank 0
 * (replicated KV heads included), 16 bytes each, also with the vocabulary
 * split (lmc_tp_tmodel_shard_vocab, --tp-vocab); the activations at
 * TP 1 x CP 1 are lmc_tacts_bytes of the config, shrink with CP (CP 4 a
 * quarter of the tokens) and multiply by the live micro-batches of 1F1B;
 * pipeline stage 0's parameters and activation arenas (1F1B and
 * interleaved with V chunks) equal what lmc_pp_stage_keep's part and
 * lmc_pp_tstage_init_v allocate; layouts that do not split are refused
 * naming the dimension. */
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
            struct lmc_mp_layout l = {T, 1, 1, 2, 64, 1, false, 1};
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
        struct lmc_mp_layout l1 = {1, 1, 1, 2, 4096, 1, false, 1}, l4 = {1, 1, 4, 2, 4096, 1, false, 1};
        struct lmc_mp_mem a, b;
        CHECK(lmc_mp_mem(c, &l1, &a, &err) == LMC_OK && lmc_mp_mem(c, &l4, &b, &err) == LMC_OK);
        CHECK(a.activations == (double)lmc_tacts_bytes(c, 2, 4096, false));
        CHECK(b.activations == (double)lmc_tacts_bytes(c, 2, 1024, false) && b.tokens == 2048);
        CHECK(b.activations < a.activations / 3.5 && b.params == a.params);
        struct lmc_mp_layout p2 = {1, 2, 1, 2, 64, 8, false, 1};
        CHECK(lmc_mp_mem(c, &p2, &a, &err) == LMC_OK && a.layers == 1 && a.live == 2);
        struct lmc_config one = *c;
        one.num_layers = 1;
        CHECK(a.activations == 2.0 * (double)lmc_tacts_bytes(&one, 2, 64, false));
        struct lmc_mp_layout bad = {3, 1, 1, 1, 64, 1, false, 1};
        CHECK(lmc_mp_mem(c, &bad, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "heads"));
        bad = (struct lmc_mp_layout){1, 3, 1, 1, 64, 1, false, 1};
        CHECK(lmc_mp_mem(c, &bad, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "layers"));
        bad = (struct lmc_mp_layout){1, 1, 8, 1, 7, 1, false, 1};
        CHECK(lmc_mp_mem(c, &bad, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "7 tokens"));
        /* pipeline stage 0 as lmc train --pp builds it (lmc_pp_stage_keep, lmc_pp_tstage_init_v): the
         * parameters its part holds and its arenas (count x bytes) are the layout's figures */
        static const struct { int64_t L; int P, V, M; } pl[] = {{2, 2, 1, 4}, {4, 2, 2, 4}, {8, 4, 2, 8}, {5, 2, 2, 2}};
        for (size_t k = 0; k < sizeof pl / sizeof *pl; k++) {
            struct lmc_config cl = *c;
            cl.num_layers = pl[k].L;
            bool keep[16];
            struct lmc_tmodel lay, part;
            CHECK(lmc_tmodel_init_layout(&lay, &cl, &be, &err) == LMC_OK);
            lmc_pp_stage_keep(cl.num_layers, lay.tied_head, pl[k].P, pl[k].V, 0, keep);
            lmc_tmodel_free(&lay);
            if (lmc_tmodel_init_parts(&part, &cl, &be, keep, true, &err)) {
                CHECK_MSG(0, "%s", err.msg);
                continue;
            }
            int64_t held = 0;
            for (int i = 0; i < part.n_params; i++) held += part.params[i].elsewhere ? 0 : part.params[i].numel;
            struct lmc_pp_tstage st;
            CHECK(lmc_pp_tstage_init_v(&st, &part, &be, 0, pl[k].P, pl[k].V, pl[k].M, 2, 64, &err) == LMC_OK);
            struct lmc_mp_layout x = {1, pl[k].P, 1, 2, 64, pl[k].M, false, pl[k].V};
            struct lmc_mp_mem y;
            CHECK(lmc_mp_mem(&cl, &x, &y, &err) == LMC_OK);
            CHECK_MSG(y.params == held && y.live == st.n_acts &&
                      y.activations == (double)st.n_acts * (double)lmc_tacts_bytes_layers(&cl, st.acts[0].n_layers, 2, 64, false),
                      "%s L %lld P %d V %d: params %lld vs %lld held, %d vs %d arenas", fx[f], (long long)pl[k].L, pl[k].P,
                      pl[k].V, (long long)y.params, (long long)held, y.live, st.n_acts);
            lmc_pp_tstage_free(&st);
            lmc_tmodel_free(&part);
        }
        struct lmc_config c4 = *c;
        c4.num_layers = 4;
        struct lmc_mp_layout odd = {1, 2, 1, 2, 64, 3, false, 2};
        CHECK(lmc_mp_mem(&c4, &odd, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "multiple"));
        CHECK(lmc_mp_mem(c, &odd, &a, &err) == LMC_ERR_ARG && strstr(err.msg, "2 chunks"));
        lmc_tmodel_free(&full);
    }
    lmc_backend_cpu_free(&be);
    return test_finish("test_mp_mem");
}
