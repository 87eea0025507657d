/* reward.c — answer extraction and matching, format and length rewards,
 * and the external reward command (see reward.h). */
#include "train/reward.h"
#include "core/core.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void put_trim(char *out, size_t cap, const char *s, size_t n) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (cap == 0) return;
    if (n > cap - 1) n = cap - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

static bool extract_boxed(const char *t, char *out, size_t cap) {
    const char *last = NULL, *p = t;
    while ((p = strstr(p, "\\boxed{")) != NULL) last = p++;
    if (!last) return false;
    const char *s = last + 7;
    int depth = 1;
    const char *e = s;
    for (; *e; e++) {
        if (*e == '{') depth++;
        else if (*e == '}' && --depth == 0) break;
    }
    if (depth != 0) return false;
    put_trim(out, cap, s, (size_t)(e - s));
    return true;
}

static bool extract_hash(const char *t, char *out, size_t cap) {
    const char *last = NULL, *p = t;
    while ((p = strstr(p, "####")) != NULL) last = p, p += 4;
    if (!last) return false;
    const char *s = last + 4, *e = s;
    while (*e && *e != '\n') e++;
    put_trim(out, cap, s, (size_t)(e - s));
    return true;
}

static bool extract_number(const char *t, char *out, size_t cap) {
    const char *best = NULL, *bend = NULL;
    for (const char *p = t; *p;) {
        if (isdigit((unsigned char)*p)) {
            const char *s = p;
            if (s > t && s[-1] == '-') s--;
            while (isdigit((unsigned char)*p) || ((*p == '.' || *p == ',') && isdigit((unsigned char)p[1])))
                p++;
            best = s, bend = p;
        } else {
            p++;
        }
    }
    if (!best) return false;
    put_trim(out, cap, best, (size_t)(bend - best));
    return true;
}

bool lmc_reward_extract(const char *text, enum lmc_extract mode, const char *re, char *out,
                        size_t cap, lmc_status *st, lmc_err *err) {
    *st = LMC_OK;
    if (cap) out[0] = 0;
    switch (mode) {
    case LMC_EXTRACT_BOXED: return extract_boxed(text, out, cap);
    case LMC_EXTRACT_HASH: return extract_hash(text, out, cap);
    case LMC_EXTRACT_LAST_NUMBER: return extract_number(text, out, cap);
    case LMC_EXTRACT_REGEX: {
        regex_t rx;
        int rc = regcomp(&rx, re ? re : "", REG_EXTENDED);
        if (rc) {
            char msg[128];
            regerror(rc, &rx, msg, sizeof msg);
            *st = lmc_err_set(err, LMC_ERR_ARG, "answer regex \"%s\": %s", re ? re : "", msg);
            return false;
        }
        bool found = false;
        regmatch_t m[2];
        const char *p = text;
        while (*p && regexec(&rx, p, 2, m, p == text ? 0 : REG_NOTBOL) == 0) {
            int g = (rx.re_nsub >= 1 && m[1].rm_so >= 0) ? 1 : 0;
            put_trim(out, cap, p + m[g].rm_so, (size_t)(m[g].rm_eo - m[g].rm_so));
            found = true;
            p += m[0].rm_eo > m[0].rm_so ? m[0].rm_eo : m[0].rm_so + 1;
        }
        regfree(&rx);
        return found;
    }
    default:
        return extract_boxed(text, out, cap) || extract_hash(text, out, cap) ||
               extract_number(text, out, cap);
    }
}

bool lmc_reward_parse_number(const char *s, double *v) {
    char buf[128];
    size_t n = 0;
    while (isspace((unsigned char)*s) || *s == '$') s++;
    for (; *s && n < sizeof buf - 1; s++) {
        if (*s == ',') continue;
        buf[n++] = *s;
    }
    buf[n] = 0;
    while (n && (isspace((unsigned char)buf[n - 1]) || buf[n - 1] == '.' || buf[n - 1] == '%')) buf[--n] = 0;
    if (!n || (!isdigit((unsigned char)buf[0]) && buf[0] != '-' && buf[0] != '+' && buf[0] != '.'))
        return false;
    char *end;
    double x = strtod(buf, &end);
    if (*end || !isfinite(x)) return false;
    *v = x;
    return true;
}

double lmc_reward_match(const char *got, const char *want) {
    double a, b;
    if (lmc_reward_parse_number(got, &a) && lmc_reward_parse_number(want, &b))
        return fabs(a - b) <= 1e-6 * fmax(1.0, fabs(b)) ? 1.0 : 0.0;
    char x[512], y[512];
    put_trim(x, sizeof x, got, strlen(got));
    put_trim(y, sizeof y, want, strlen(want));
    return strcmp(x, y) == 0 ? 1.0 : 0.0;
}

double lmc_reward_format(const char *text, const char *open, const char *close) {
    const char *a = strstr(text, open);
    if (!a) return 0.0;
    return strstr(a + strlen(open), close) ? 1.0 : 0.0;
}

double lmc_reward_length_penalty(int64_t n, int64_t free_tokens, int64_t budget, double coef) {
    if (n <= free_tokens) return 0.0;
    int64_t span = budget - free_tokens;
    return -coef * (double)(n - free_tokens) / (double)(span > 1 ? span : 1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

lmc_status lmc_reward_cmd(char *const argv[], const char *text, size_t len, double timeout_s,
                          const char *what, double *reward, lmc_err *err) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC)) return lmc_err_set(err, LMC_ERR_IO, "%s: reward command: pipe: %s", what, strerror(errno));
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]), close(in[1]);
        return lmc_err_set(err, LMC_ERR_IO, "%s: reward command: pipe: %s", what, strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return lmc_err_set(err, LMC_ERR_IO, "%s: reward command: fork: %s", what, strerror(errno));
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    /* a child that exits without reading must not kill us with SIGPIPE */
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    char buf[256];
    size_t got = 0, sent = 0;
    bool timed_out = false, in_open = true;
    if (len == 0) close(in[1]), in_open = false;
    double deadline = now_s() + timeout_s;
    for (;;) {
        struct pollfd p[2] = {{.fd = out[0], .events = POLLIN}, {.fd = in_open ? in[1] : -1, .events = POLLOUT}};
        double left = deadline - now_s();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        int r = poll(p, 2, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        if (in_open && (p[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(in[1], text + sent, len - sent);
            if (w > 0) sent += (size_t)w;
            if (w < 0 && errno != EAGAIN) sent = len; /* the child closed its stdin */
            if (sent >= len) close(in[1]), in_open = false;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char tmp[256];
            ssize_t n = read(out[0], tmp, sizeof tmp);
            if (n <= 0) break; /* EOF */
            size_t k = LMC_MIN((size_t)n, sizeof buf - 1 - got);
            memcpy(buf + got, tmp, k);
            got += k;
        }
    }
    if (in_open) close(in[1]);
    close(out[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {}
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    buf[got] = 0;
    if (timed_out)
        return lmc_err_set(err, LMC_ERR_IO, "%s: reward command %s ran past its %.3g s timeout and was killed",
                           what, argv[0], timeout_s);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return lmc_err_set(err, LMC_ERR_IO, "%s: reward command %s failed (%s %d)", what, argv[0],
                           WIFEXITED(status) ? "exit status" : "signal",
                           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    while (*end && isspace((unsigned char)*end)) end++;
    if (end == buf || *end || !isfinite(v) || errno)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: reward command %s printed \"%.60s\", not one number",
                           what, argv[0], buf);
    *reward = v;
    return LMC_OK;
}
