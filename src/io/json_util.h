/* json_util.h — small cJSON helpers shared by the file parsers. */
#ifndef LMC_JSON_UTIL_H
#define LMC_JSON_UTIL_H

#include <cjson/cJSON.h>

/* "a string", "a number", ... for error messages; "missing" for NULL. */
const char *lmc_json_kind(const cJSON *v);

#endif
