/* quantize_calib.h — GPTQ with calibration through the model
 * (quantize_calib.c), for `lmc quantize --method gptq`. */
#ifndef LMC_QUANTIZE_CALIB_H
#define LMC_QUANTIZE_CALIB_H

#include "lmc.h"
#include "quant/gptq_algo.h"

#include <stdbool.h>
#include <stdint.h>

/* One linear to quantize: its HF tensor name and its weight (n out, k in)
 * as float (GPT-2 Conv1D already transposed). */
struct lmc_gptq_job {
    const char *name;
    const float *w;
    int64_t n, k;
};

/* Runs calib_file's first n_tokens tokens through the model in dir once per
 * layer on `threads` CPU threads, and quantizes each job of that layer with
 * GPTQ on the Hessian of its inputs (earlier layers already quantized in
 * the running model); true_seq: once per stage of each layer (q/k/v, o,
 * gate/up, down), each stage's inputs from the layer with the earlier
 * stages quantized (AutoGPTQ's true_sequential). out[j] (n_jobs, caller frees) gets job j's groups;
 * jobs that are not block linears are left untouched (zeroed). */
lmc_status lmc_gptq_calibrate(const char *dir, const char *calib_file, int64_t n_tokens, int threads, bool true_seq,
                              const struct lmc_gptq_opts *o, const struct lmc_gptq_job *jobs, int n_jobs,
                              struct lmc_qgroups *out, lmc_err *err);

#endif
