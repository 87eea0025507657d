/* bench_chat.c — the cost of chat-side work per request and per token:
 * (1) rendering each real chat template of tests/fixtures/chat_templates
 * (its tool-call conversation, parse once, render many times): median
 * microseconds per render; (2) the grammar token mask per decode step at
 * vocabularies of 32k and 152k byte strings (a synthetic BPE-like
 * vocabulary: all bytes, word pieces with and without a leading space,
 * digits, JSON punctuation runs) while a JSON-Schema grammar walks a fixed
 * valid output token by token: median and mean microseconds per mask, with
 * the per-state cache (as decoding uses it) and without (a fresh state each
 * step). Mask times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so
 * that a loaded machine's waits do not count. Usage: bench_chat
 * [templates|masks] (default both). */
#include "core/core.h"
#include "infer/grammar.h"
#include "template/jinja.h"
#include "bench_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void bench_templates(void) {
    const char *dir = "tests/fixtures/chat_templates";
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "bench_chat: run from the repository root (%s)\n", dir);
        return;
    }
    struct dirent *e;
    double all[64];
    int na = 0;
    printf("| template | bytes | render us (median of 200) |\n|---|---:|---:|\n");
    while ((e = readdir(d)) && na < 64) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json")) continue;
        char path[512], *text = NULL;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        lmc_err err = {0};
        if (lmc_file_read(path, 8u << 20, &text, NULL, &err)) continue;
        cJSON *j = cJSON_Parse(text);
        free(text);
        const cJSON *tj = cJSON_GetObjectItem(j, "template");
        const cJSON *cs = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "cases"), 5); /* the tool-list case */
        cJSON *vars = cJSON_CreateObject();
        static const char *keys[] = {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"};
        for (int k = 0; k < 5; k++) cJSON_AddItemToObject(vars, keys[k], cJSON_Duplicate(cJSON_GetObjectItem(cs, keys[k]), 1));
        lmc_jinja_tmpl *t = NULL;
        struct lmc_jinja_opts o = {.now_set = true, .now_year = 2026, .now_month = 12, .now_day = 5};
        if (lmc_jinja_parse(tj->valuestring, strlen(tj->valuestring), &t, &err) == LMC_OK) {
            double ts[200];
            size_t outn = 0;
            for (int r = 0; r < 200; r++) {
                char *out = NULL;
                double t0 = lmc_time_now();
                lmc_jinja_render(t, vars, &o, &out, &outn, &err);
                ts[r] = (lmc_time_now() - t0) * 1e6;
                free(out);
            }
            qsort(ts, 200, sizeof *ts, bench_cmpd);
            printf("| %s | %zu | %.1f |\n", e->d_name, strlen(tj->valuestring), ts[100]);
            all[na++] = ts[100];
        }
        lmc_jinja_free(t);
        cJSON_Delete(vars);
        cJSON_Delete(j);
    }
    closedir(d);
    qsort(all, (size_t)na, sizeof *all, bench_cmpd);
    if (na) printf("\n%d templates: median %.1f us, max %.1f us per render\n\n", na, all[na / 2], all[na - 1]);
}

/* a deterministic BPE-like vocabulary of n byte strings */
static char **make_vocab(int n, size_t *len) {
    char **v = calloc((size_t)n, sizeof *v);
    uint64_t s = 42;
    int k = 0;
    for (int b = 0; b < 256 && k < n; b++, k++) {
        v[k] = malloc(2);
        v[k][0] = (char)b;
        len[k] = 1;
    }
    static const char *punct[] = {"{\"", "\":", "\": \"", "\",", "\", \"", "\"}", "},", "}]", "[{", "\":\"", " {", " [",
                                  "null", "true", "false", " \"", "\n", "  ", "\n\n", "0", "00", "000"};
    for (size_t i = 0; i < sizeof punct / sizeof *punct && k < n; i++, k++) {
        v[k] = strdup(punct[i]);
        len[k] = strlen(punct[i]);
    }
    static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
    while (k < n) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int wl = 2 + (int)((s >> 33) % 9);
        char w[16];
        int p = 0;
        if ((s >> 20) & 1) w[p++] = ' ';
        for (int i = 0; i < wl; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t r = (s >> 33) % 100;
            w[p++] = r < 90 ? letters[(r * 7) % 26 < 13 ? (r % 13) : (r % 26)] : (char)('0' + r % 10);
        }
        v[k] = malloc((size_t)p);
        memcpy(v[k], w, (size_t)p);
        len[k] = (size_t)p;
        k++;
    }
    return v;
}

static void bench_masks(int n_vocab) {
    size_t *len = calloc((size_t)n_vocab, sizeof *len);
    char **tok = make_vocab(n_vocab, len);
    int32_t eos = 0;
    len[0] = 0; /* token 0 plays end of sequence */
    lmc_err err = {0};
    struct lmc_grammar_vocab *v = NULL;
    double tb = bench_thread_cpu();
    if (lmc_grammar_vocab_new((const char *const *)tok, len, n_vocab, &eos, 1, &v, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    double build_ms = (bench_thread_cpu() - tb) * 1e3;
    const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
                         "\"integer\",\"minimum\":0,\"maximum\":150},\"tags\":{\"type\":\"array\",\"items\":{\"type\":"
                         "\"string\"},\"maxItems\":4},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"name\",\"age\"]}";
    const char *output = "{\"name\": \"Ada Lovelace wrote the first program\", \"age\": 36, "
                         "\"tags\": [\"math\", \"engine\"], \"ok\": true}";
    struct lmc_grammar *g = NULL;
    lmc_grammar_from_json_schema(schema, strlen(schema), &g, &err);
    uint8_t *mask = malloc((size_t)n_vocab);
    for (int cached = 1; cached >= 0; cached--) {
        struct lmc_grammar_state *s = NULL;
        lmc_grammar_state_new(g, &s, &err);
        size_t n = strlen(output);
        double *ts = malloc(n * sizeof *ts), sum = 0;
        size_t steps = 0;
        for (size_t i = 0; i < n; i++) { /* one byte per step: a worst case for the number of masks */
            struct lmc_grammar_state *use = s, *fresh = NULL;
            if (!cached) { /* same parse state, empty cache */
                lmc_grammar_state_new(g, &fresh, &err);
                lmc_grammar_accept(fresh, output, i);
                use = fresh;
            }
            double t0 = bench_thread_cpu();
            lmc_status st = lmc_grammar_mask(use, v, mask, &err);
            double dt = (bench_thread_cpu() - t0) * 1e6;
            lmc_grammar_state_free(fresh);
            if (st) {
                fprintf(stderr, "mask: %s\n", err.msg);
                break;
            }
            ts[steps++] = dt;
            sum += dt;
            lmc_grammar_accept(s, output + i, 1);
        }
        qsort(ts, steps, sizeof *ts, bench_cmpd);
        printf("| %d | %s | %zu | %.1f | %.1f | %.1f |\n", n_vocab, cached ? "per-state cache" : "no cache", steps,
               ts[steps / 2], sum / (double)steps, ts[steps - 1]);
        free(ts);
        lmc_grammar_state_free(s);
    }
    printf("(vocabulary trie built in %.1f ms)\n", build_ms);
    free(mask);
    lmc_grammar_free(g);
    lmc_grammar_vocab_free(v);
    for (int i = 0; i < n_vocab; i++) free(tok[i]);
    free(tok);
    free(len);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    if (strcmp(what, "masks")) bench_templates();
    if (strcmp(what, "templates")) {
        printf("| vocab | masks | steps | median us | mean us | max us |\n|---:|---|---:|---:|---:|---:|\n");
        bench_masks(32000);
        bench_masks(152000);
    }
    return 0;
}
