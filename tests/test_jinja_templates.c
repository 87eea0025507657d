/* test_jinja_templates.c — the 35 real chat templates of
 * tests/fixtures/chat_templates/ (copied from /work/shared/chat_templates)
 * rendered by the Jinja engine for their seven conversations each and
 * compared byte for byte with transformers' renderings; a conversation the
 * template refused must be refused with the same message. strftime_now sees
 * the fixture's rendered_on date. `test_jinja_templates -v` prints the first
 * difference of each mismatch. */
#include "core/core.h"
#include "template/jinja.h"
#include "test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#define DIR_ "tests/fixtures/chat_templates"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void show_diff(const char *want, const char *got) {
    size_t i = 0;
    while (want[i] && want[i] == got[i]) i++;
    size_t from = i > 60 ? i - 60 : 0;
    fprintf(stderr, "    first difference at byte %zu\n    want: %.120s\n    got:  %.120s\n", i, want + from,
            got + from);
}

int main(int argc, char **argv) {
    bool verbose = argc > 1 && !strcmp(argv[1], "-v");
    DIR *d = opendir(DIR_);
    CHECK(d != NULL);
    if (!d) return test_finish("test_jinja_templates");
    char *names[256];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 256) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".json")) names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof *names, cmp_str);
    int files = 0, cases = 0, match = 0;
    for (int f = 0; f < nn; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", DIR_, names[f]);
        char *text = NULL;
        lmc_err err = {0};
        CHECK(lmc_file_read(path, 8u << 20, &text, NULL, &err) == LMC_OK);
        cJSON *j = text ? cJSON_Parse(text) : NULL;
        free(text);
        CHECK(j != NULL);
        if (!j) continue;
        files++;
        const cJSON *tj = cJSON_GetObjectItem(j, "template"), *on = cJSON_GetObjectItem(j, "rendered_on");
        struct lmc_jinja_opts o = {0};
        if (cJSON_IsString(on) && sscanf(on->valuestring, "%d-%d-%d", &o.now_year, &o.now_month, &o.now_day) == 3)
            o.now_set = true;
        lmc_jinja_tmpl *t = NULL;
        lmc_status st = lmc_jinja_parse(tj->valuestring, strlen(tj->valuestring), &t, &err);
        CHECK_MSG(st == LMC_OK, "%s: %s", names[f], err.msg);
        int file_ok = 0, file_n = 0;
        const cJSON *cs;
        cJSON_ArrayForEach(cs, cJSON_GetObjectItem(j, "cases")) {
            cases++;
            file_n++;
            if (!t) continue;
            cJSON *vars = cJSON_CreateObject();
            static const char *keys[] = {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"};
            for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
                const cJSON *v = cJSON_GetObjectItem(cs, keys[k]);
                if (v) cJSON_AddItemToObject(vars, keys[k], cJSON_Duplicate(v, 1));
            }
            const cJSON *want = cJSON_GetObjectItem(cs, "rendered"), *want_err = cJSON_GetObjectItem(cs, "error");
            const char *cname = cJSON_GetObjectItem(cs, "name")->valuestring;
            char *out = NULL;
            lmc_err rerr = {0};
            st = lmc_jinja_render(t, vars, &o, &out, NULL, &rerr);
            bool ok;
            if (want_err) {
                ok = st != LMC_OK && strncmp(rerr.msg, want_err->valuestring, strlen(want_err->valuestring)) == 0;
                if (!ok && verbose)
                    fprintf(stderr, "  %s / %s: want error '%s', got %s\n", names[f], cname, want_err->valuestring,
                            st ? rerr.msg : "a rendering");
            } else {
                ok = st == LMC_OK && !strcmp(out, want->valuestring);
                if (!ok && verbose) {
                    fprintf(stderr, "  %s / %s: %s\n", names[f], cname, st ? rerr.msg : "differs");
                    if (!st) show_diff(want->valuestring, out);
                }
            }
            CHECK_MSG(ok, "%s / %s", names[f], cname);
            match += ok;
            file_ok += ok;
            free(out);
            cJSON_Delete(vars);
        }
        if (verbose) fprintf(stderr, "%-55s %d/%d\n", names[f], file_ok, file_n);
        lmc_jinja_free(t);
        cJSON_Delete(j);
        free(names[f]);
    }
    printf("chat templates: %d of %d cases match transformers (%d templates)\n", match, cases, files);
    CHECK(files == 35);
    return test_finish("test_jinja_templates");
}
