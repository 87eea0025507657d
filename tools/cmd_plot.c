/* cmd_plot.c — `lmc plot METRICS.jsonl -o curve.svg`: draws training
 * curves from a JSONL metrics log (one object per line, e.g. {"step": 1,
 * "loss": 6.2, "val_loss": 6.3, "lr": 1e-3}) as an SVG line chart with
 * axes, "nice" ticks, grid, axis labels, legend and an optional log-scale
 * y axis. Malformed lines are reported with their line number and skipped
 * (a log being written can end in a partial line). */
#include "cli.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLOT_MAX_SERIES 8

struct series {
    char name[64];
    double *x, *y;
    int64_t n, cap;
};

struct plot {
    struct series s[PLOT_MAX_SERIES];
    int n_series;
    const char *xkey;
    bool log_y;
    int warnings;
};

static bool series_push(struct series *s, double x, double y) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 256;
        double *nx = realloc(s->x, (size_t)cap * sizeof *nx);
        if (!nx) return false;
        s->x = nx;
        double *ny = realloc(s->y, (size_t)cap * sizeof *ny);
        if (!ny) return false;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return true;
}

static void warn(struct plot *P, const char *path, int64_t line, const char *msg, const char *key) {
    if (P->warnings++ < 20) fprintf(stderr, "lmc plot: %s:%lld: %s%s%s\n", path, (long long)line, msg,
                                    key ? " " : "", key ? key : "");
    else if (P->warnings == 21) fprintf(stderr, "lmc plot: further warnings not shown\n");
}

/* Reads every line; fills the series named in P (or, when none are named,
 * "loss" and "val_loss"). Returns false only on I/O or memory failure. */
static bool read_metrics(struct plot *P, const char *path, lmc_err *err) {
    char *buf;
    size_t len;
    if (lmc_file_read(path, (size_t)1 << 32, &buf, &len, err)) return false;
    int64_t line = 0, row = 0;
    for (size_t i = 0; i < len;) {
        line++;
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        size_t a = i;
        while (a < e && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r')) a++;
        if (a < e) {
            cJSON *j = cJSON_ParseWithLength(buf + a, e - a);
            if (!cJSON_IsObject(j)) {
                warn(P, path, line, "not a JSON object; line skipped", NULL);
            } else {
                row++;
                const cJSON *xv = cJSON_GetObjectItemCaseSensitive(j, P->xkey);
                double x = (double)row;
                if (xv && cJSON_IsNumber(xv) && isfinite(xv->valuedouble)) x = xv->valuedouble;
                else if (xv) warn(P, path, line, "not a finite number:", P->xkey);
                for (int k = 0; k < P->n_series; k++) {
                    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, P->s[k].name);
                    if (!v || cJSON_IsNull(v)) continue;
                    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
                        warn(P, path, line, "not a finite number:", P->s[k].name);
                        continue;
                    }
                    if (P->log_y && v->valuedouble <= 0) {
                        warn(P, path, line, "value <= 0 left out of the log scale:", P->s[k].name);
                        continue;
                    }
                    if (!series_push(&P->s[k], x, v->valuedouble)) {
                        cJSON_Delete(j);
                        free(buf);
                        lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
                        return false;
                    }
                }
            }
            cJSON_Delete(j);
        }
        i = e + 1;
    }
    free(buf);
    return true;
}

/* ---- scales and ticks ---- */

/* A "nice" step (1, 2, 2.5 or 5 times a power of ten) giving about n ticks over span. */
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    double m = f < 1.5 ? 1 : f < 2.25 ? 2 : f < 3.5 ? 2.5 : f < 7.5 ? 5 : 10;
    return m * p;
}

static void fmt_num(char *b, size_t cap, double v, double step) {
    if (v == 0) {
        snprintf(b, cap, "0");
        return;
    }
    double a = fabs(v);
    if (a >= 1e6 || a < 1e-4) {
        snprintf(b, cap, "%.3g", v);
        return;
    }
    if (a >= 1000 && fmod(v, 1000) == 0 && step >= 1000) {
        snprintf(b, cap, "%gk", v / 1000);
        return;
    }
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(step * pow(10, dec) - round(step * pow(10, dec))) > 1e-6) dec++; /* 2.5 steps */
    snprintf(b, cap, "%.*f", dec > 6 ? 6 : dec, v);
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

static const char *const palette[PLOT_MAX_SERIES] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                                     "#9467bd", "#8c564b", "#e377c2", "#17becf"};

struct frame {
    double x0, x1, y0, y1;       /* data range shown */
    double L, R, T, B;           /* plot area in pixels */
    bool log_y;
};

static double px(const struct frame *F, double x) { return F->L + (x - F->x0) / (F->x1 - F->x0) * (F->R - F->L); }
static double py(const struct frame *F, double y) {
    double t = F->log_y ? (log10(y) - log10(F->y0)) / (log10(F->y1) - log10(F->y0)) : (y - F->y0) / (F->y1 - F->y0);
    return F->B - t * (F->B - F->T);
}

static bool write_svg(const struct plot *P, const char *out, const char *title, int W, int H, lmc_err *err) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int k = 0; k < P->n_series; k++)
        for (int64_t i = 0; i < P->s[k].n; i++) {
            xmin = fmin(xmin, P->s[k].x[i]);
            xmax = fmax(xmax, P->s[k].x[i]);
            ymin = fmin(ymin, P->s[k].y[i]);
            ymax = fmax(ymax, P->s[k].y[i]);
        }
    struct frame F = {.L = 78, .R = W - 24, .T = 48, .B = H - 58, .log_y = P->log_y};
    if (xmax == xmin) xmin -= 1, xmax += 1;
    double xs = nice_step(xmax - xmin, 8);
    F.x0 = floor(xmin / xs) * xs;
    F.x1 = ceil(xmax / xs) * xs;
    double ys = 0;
    if (P->log_y) {
        double pad = pow(ymax / ymin, 0.04) * 1.01; /* about 4% of the range each side */
        F.y0 = ymin / pad;
        F.y1 = ymax * pad;
    } else {
        if (ymax == ymin) ymin -= fabs(ymin) * 0.1 + 1e-3, ymax += fabs(ymax) * 0.1 + 1e-3;
        ys = nice_step(ymax - ymin, 6);
        F.y0 = floor(ymin / ys) * ys;
        F.y1 = ceil(ymax / ys) * ys;
    }
    FILE *f = fopen(out, "wb");
    if (!f) {
        lmc_err_set(err, LMC_ERR_IO, "%s: cannot create", out);
        return false;
    }
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">", (F.L + F.R) / 2);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    /* grid and tick labels */
    char lab[64];
    fprintf(f, "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n");
    for (double x = F.x0; x <= F.x1 + xs * 1e-9; x += xs)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", px(&F, x), F.T, px(&F, x), F.B);
    double yt[64];
    int nyt = 0;
    if (P->log_y) {
        double span = log10(F.y1 / F.y0);
        static const double mult[3][7] = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 8}};
        int mode = span > 3 ? 0 : span > 1.2 ? 1 : 2;
        for (double d = pow(10, floor(log10(F.y0))); d <= F.y1 && nyt < 60; d *= 10)
            for (int m = 0; m < 7; m++) {
                double v = d * mult[mode][m];
                if (mult[mode][m] == 0 || v < F.y0 || v > F.y1) continue;
                yt[nyt++] = v;
            }
        if (nyt < 3) { /* very narrow: linear ticks inside the log axis */
            nyt = 0;
            double st = nice_step(F.y1 - F.y0, 5);
            for (double v = ceil(F.y0 / st) * st; v <= F.y1 && nyt < 60; v += st) yt[nyt++] = v;
            ys = st;
        }
    } else {
        for (double v = F.y0; v <= F.y1 + ys * 1e-9 && nyt < 60; v += ys) yt[nyt++] = v;
    }
    for (int i = 0; i < nyt; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", F.L, py(&F, yt[i]), F.R, py(&F, yt[i]));
    fprintf(f, "</g>\n<g fill=\"#333\">\n");
    for (double x = F.x0; x <= F.x1 + xs * 1e-9; x += xs) {
        fmt_num(lab, sizeof lab, fabs(x) < xs * 1e-9 ? 0 : x, xs);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px(&F, x), F.B + 18, lab);
    }
    for (int i = 0; i < nyt; i++) {
        if (P->log_y && ys == 0) snprintf(lab, sizeof lab, "%g", yt[i]);
        else fmt_num(lab, sizeof lab, fabs(yt[i]) < fabs(ys) * 1e-9 ? 0 : yt[i], ys);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", F.L - 8, py(&F, yt[i]) + 4, lab);
    }
    fprintf(f, "</g>\n");
    /* axes and labels */
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", F.L, F.T,
            F.R - F.L, F.B - F.T);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"14\">", (F.L + F.R) / 2, H - 16);
    xml_text(f, P->xkey);
    fprintf(f, "</text>\n<text transform=\"translate(20 %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"14\">",
            (F.T + F.B) / 2);
    for (int k = 0; k < P->n_series; k++) {
        if (k) fputs(", ", f);
        xml_text(f, P->s[k].name);
    }
    if (P->log_y) fputs(" (log scale)", f);
    fprintf(f, "</text>\n");
    /* series */
    fprintf(f, "<g fill=\"none\" stroke-width=\"1.8\" stroke-linejoin=\"round\">\n");
    for (int k = 0; k < P->n_series; k++) {
        const struct series *s = &P->s[k];
        if (s->n == 0) continue;
        fprintf(f, "<polyline stroke=\"%s\" points=\"", palette[k]);
        for (int64_t i = 0; i < s->n; i++) fprintf(f, "%s%.2f,%.2f", i ? " " : "", px(&F, s->x[i]), py(&F, s->y[i]));
        fprintf(f, "\"/>\n");
        if (s->n <= 60)
            for (int64_t i = 0; i < s->n; i++)
                fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.6\" fill=\"%s\" stroke=\"none\"/>\n", px(&F, s->x[i]),
                        py(&F, s->y[i]), palette[k]);
    }
    fprintf(f, "</g>\n");
    /* legend, top right inside the plot */
    size_t longest = 0;
    for (int k = 0; k < P->n_series; k++) longest = LMC_MAX(longest, strlen(P->s[k].name));
    double lw = 44 + 7.5 * (double)longest, lx = F.R - lw - 10, ly = F.T + 10;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"white\" fill-opacity=\"0.9\" "
               "stroke=\"#bbb\"/>\n", lx, ly, lw, 8 + 20 * P->n_series);
    for (int k = 0; k < P->n_series; k++) {
        double yy = ly + 18 + 20 * k;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n", lx + 8,
                yy - 4, lx + 30, yy - 4, palette[k]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", lx + 36, yy);
        xml_text(f, P->s[k].name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        lmc_err_set(err, LMC_ERR_IO, "%s: write failed", out);
        return false;
    }
    return true;
}

static void usage(void) {
    fprintf(stderr, "usage: lmc plot METRICS.jsonl -o curve.svg [--metric loss,val_loss] [--x step] [--log]\n"
                    "         [--title TEXT] [--size WxH]\n");
}

int cmd_plot(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *metrics = NULL, *title = NULL;
    struct plot P = {.xkey = "step"};
    int W = 900, H = 520;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--log")) {
            P.log_y = true;
        } else if (!strcmp(a, "-o") && v) {
            out = v, i++;
        } else if (!strcmp(a, "--metric") && v) {
            metrics = v, i++;
        } else if (!strcmp(a, "--x") && v) {
            P.xkey = v, i++;
        } else if (!strcmp(a, "--title") && v) {
            title = v, i++;
        } else if (!strcmp(a, "--size") && v) {
            if (sscanf(v, "%dx%d", &W, &H) != 2 || W < 300 || H < 200 || W > 10000 || H > 10000) {
                fprintf(stderr, "lmc plot: --size '%s': expected WxH, at least 300x200\n", v);
                return 2;
            }
            i++;
        } else if (a[0] != '-' && !in) {
            in = a;
        } else {
            fprintf(stderr, "lmc plot: unknown option or missing value: %s\n", a);
            usage();
            return 2;
        }
    }
    if (!in || !out) {
        usage();
        return 2;
    }
    const char *list = metrics ? metrics : "loss,val_loss";
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n > 0) {
            if (P.n_series == PLOT_MAX_SERIES || n >= sizeof P.s[0].name) {
                fprintf(stderr, "lmc plot: --metric: at most %d names of up to 63 characters\n", PLOT_MAX_SERIES);
                return 2;
            }
            memcpy(P.s[P.n_series].name, p, n);
            P.s[P.n_series++].name[n] = 0;
        }
        p += n + (c ? 1 : 0);
    }
    if (P.n_series == 0) {
        fprintf(stderr, "lmc plot: --metric: no metric names\n");
        return 2;
    }
    lmc_err err = {0};
    int rc = 0;
    if (!read_metrics(&P, in, &err)) {
        rc = cli_fail("plot", &err);
        goto done;
    }
    /* by default, a metric absent from the whole log is left out */
    int kept = 0;
    for (int k = 0; k < P.n_series; k++) {
        if (P.s[k].n == 0) {
            if (metrics) fprintf(stderr, "lmc plot: %s: no values of \"%s\"\n", in, P.s[k].name);
            free(P.s[k].x);
            free(P.s[k].y);
            continue;
        }
        P.s[kept++] = P.s[k];
    }
    P.n_series = kept;
    if (kept == 0) {
        fprintf(stderr, "lmc plot: %s: nothing to plot (no values of %s)\n", in, list);
        rc = 1;
        goto done;
    }
    const char *base = strrchr(in, '/');
    if (!write_svg(&P, out, title ? title : base ? base + 1 : in, W, H, &err)) rc = cli_fail("plot", &err);
    else {
        int64_t pts = 0;
        for (int k = 0; k < P.n_series; k++) pts += P.s[k].n;
        fprintf(stderr, "lmc plot: %d series, %lld points -> %s\n", P.n_series, (long long)pts, out);
    }
done:
    for (int k = 0; k < P.n_series; k++) {
        free(P.s[k].x);
        free(P.s[k].y);
    }
    return rc;
}
