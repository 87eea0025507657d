/* reward.h — verifiable rewards for RL on completions: the final answer
 * extracted (last \boxed{...}, text after the last "####", a POSIX
 * extended regex's first group, or the last number) and matched against
 * the task's answer exactly or numerically; a format reward (the answer
 * inside the required tags); a length penalty; and an external reward
 * command (argv run without a shell, the completion on its stdin, one
 * number on its stdout, killed when it overruns its timeout). */
#ifndef LMC_TRAIN_REWARD_H
#define LMC_TRAIN_REWARD_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lmc_extract { LMC_EXTRACT_AUTO = 0, LMC_EXTRACT_BOXED, LMC_EXTRACT_HASH, LMC_EXTRACT_REGEX,
                   LMC_EXTRACT_LAST_NUMBER };

/* Extracts the final answer of text into out (trimmed, NUL-terminated,
 * truncated to cap-1). AUTO: \boxed{} if present, else "####", else the
 * last number. REGEX uses re (POSIX extended; group 1 if it has one, else
 * the whole match; the last match counts). Returns whether an answer was
 * found; a bad regex is LMC_ERR_ARG through *st (else LMC_OK). */
bool lmc_reward_extract(const char *text, enum lmc_extract mode, const char *re, char *out,
                        size_t cap, lmc_status *st, lmc_err *err);
/* Parses a number as written in answers ("1,234", "$5", "-3.50", "7.");
 * false when s is not one. */
bool lmc_reward_parse_number(const char *s, double *v);
/* 1 when got matches want: numerically when both parse as numbers (within
 * 1e-6 relative), else as trimmed strings; 0 otherwise. */
double lmc_reward_match(const char *got, const char *want);
/* 1 when text holds open ... close with close after open, else 0. */
double lmc_reward_format(const char *text, const char *open, const char *close);
/* -coef * max(0, n - free) / max(1, budget - free): 0 up to free tokens,
 * -coef at the budget. */
double lmc_reward_length_penalty(int64_t n, int64_t free_tokens, int64_t budget, double coef);

/* Runs argv (argv[0] looked up in PATH, no shell) with text on stdin and
 * reads one number from stdout within timeout_s (then the child is
 * killed). Non-zero exit, no number, trailing garbage, a non-finite value
 * or a timeout are LMC_ERR_FORMAT / LMC_ERR_IO naming `what` (the task). */
lmc_status lmc_reward_cmd(char *const argv[], const char *text, size_t len, double timeout_s,
                          const char *what, double *reward, lmc_err *err);

#endif
