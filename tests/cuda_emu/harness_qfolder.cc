/* harness_qfolder.cc — included by harness.cc before harness_moe.cc and
 * harness_qmm.cc (its helpers and backends in scope): quantized model
 * folders end to end, shared by test_qmm_e2e and test_moe_e2e's quantized
 * experts. A fixture quantized by the build's `lmc quantize` (LMC_EMU_LMC)
 * and dequantized again by `lmc convert --dtype f32`; the GPU runs the
 * quantized folder (its linears uploaded by qweight_upload), the CPU
 * backend the dequantized one, with fp32 attention on the GPU. */

struct qfolder_case {
    const char *model, *args; /* a fixture, `lmc quantize` arguments */
};

/* fn(case, quantized folder, dequantized folder) for every case that
 * quantizes and converts (in order; "FAIL what: command" for one that does
 * not), under fp32 attention; without LMC_EMU_LMC only a "skipped" line. */
static void qfolder_cases(const char *what, const std::vector<qfolder_case> &cases,
                          const std::function<void(const qfolder_case &, const std::string &, const std::string &)> &fn) {
    const char *lmc = getenv("LMC_EMU_LMC");
    if (!lmc) {
        printf("  %s: skipped (LMC_EMU_LMC unset)\n", what);
        return;
    }
    char tmpl[] = "/tmp/lmc-qfolder-XXXXXX";
    const char *tmp = mkdtemp(tmpl);
    LMC_ASSERT(tmp != nullptr);
    lmc_backend_cuda_set_fp32_attention(&gpu, true);
    int ci = 0;
    for (const qfolder_case &c : cases) {
        std::string src = std::string(fixtures()) + "/" + c.model, q = std::string(tmp) + "/q" + std::to_string(ci),
                    d = std::string(tmp) + "/d" + std::to_string(ci);
        ci++;
        std::string cmd = std::string(lmc) + " quantize -m " + src + " -o " + q + " " + c.args + " >/dev/null 2>&1 && " +
                          lmc + " convert -m " + q + " -o " + d + " --dtype f32 >/dev/null 2>&1";
        if (system(cmd.c_str()) != 0) {
            printf("FAIL %s: %s\n", what, cmd.c_str());
            n_fail++;
            continue;
        }
        fn(c, q, d);
    }
    lmc_backend_cuda_set_fp32_attention(&gpu, false);
    std::string rm = std::string("rm -rf ") + tmp;
    if (system(rm.c_str()) != 0) printf("  (could not remove %s)\n", tmp);
}

/* The logits of prompt ids and of one decode step after it: the GPU on the
 * quantized folder q vs the CPU on its dequantized twin d, as relative
 * errors; false when a forward failed (forward_logits counted it). */
static bool qfolder_logits(const std::string &q, const std::string &d, const std::vector<int32_t> &ids,
                           double &e_prompt, double &e_decode) {
    std::vector<float> ca, cn, ga, gn;
    if (!forward_logits(&cpu, d.c_str(), LMC_WDTYPE_F32, ids, ca, cn) ||
        !forward_logits(&gpu, q.c_str(), LMC_WDTYPE_F32, ids, ga, gn))
        return false;
    e_prompt = rel(ga, ca);
    e_decode = rel(gn, cn);
    return true;
}
