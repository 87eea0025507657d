/* jinja.h — a sandboxed Jinja2 template engine (the subset and the exact
 * semantics that Hugging Face chat templates rely on, as transformers'
 * ImmutableSandboxedEnvironment renders them: trim_blocks, lstrip_blocks,
 * loop controls, raise_exception, strftime_now and its tojson). A template is
 * parsed once and rendered with variables given as a cJSON object. Rendering
 * is bounded (output bytes, loop iterations, call depth, memory) and every
 * failure is an lmc_status with a message such as
 * "TemplateError: System role not supported" (the template's own words for
 * raise_exception, Python's wording for type errors). */
#ifndef LMC_JINJA_H
#define LMC_JINJA_H

#include "lmc.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lmc_jinja_tmpl lmc_jinja_tmpl;

struct lmc_jinja_opts {
    size_t max_output;   /* bytes of output (0: 16 MiB) */
    int64_t max_steps;   /* loop iterations + calls (0: 10 million) */
    int max_depth;       /* macro / filter call nesting (0: 200) */
    size_t max_memory;   /* bytes of values made while rendering (0: 256 MiB) */
    bool now_set;        /* strftime_now uses now (broken-down local time) */
    int now_year, now_month, now_day, now_hour, now_min, now_sec; /* month 1..12 */
};

/* Parses template text (n bytes); errors name the line. */
lmc_status lmc_jinja_parse(const char *src, size_t n, lmc_jinja_tmpl **out, lmc_err *err);
void lmc_jinja_free(lmc_jinja_tmpl *t);

/* Renders t with the members of vars (a cJSON object, or NULL) as variables.
 * *out is malloc'd and NUL-terminated, *out_len (optional) its length. opts
 * may be NULL (defaults, real clock). */
lmc_status lmc_jinja_render(const lmc_jinja_tmpl *t, const cJSON *vars, const struct lmc_jinja_opts *opts,
                            char **out, size_t *out_len, lmc_err *err);

#endif
