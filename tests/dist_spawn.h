/* dist_spawn.h — forked ranks joined by the tcp communicator, for the
 * distributed tests and the bench: rank 0 takes over a loopback listening
 * socket whose port the OS picked, so runs never collide on a port. */
#ifndef LMC_TEST_DIST_SPAWN_H
#define LMC_TEST_DIST_SPAWN_H

#include "dist/comm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*rank_fn)(struct lmc_comm *c, int rank, void *arg);

struct spawn_opts {
    int world;
    int claimed_world_of_last; /* > 0: the last rank claims this world instead */
    double timeout_s;          /* the communicator's (0: 120 s) */
    int stopped_rank;          /* > 0: this rank stops itself; killed once the others exit */
};

/* Runs fn on world forked ranks; codes[r] = exit code (or 128 + signal);
 * rank r's stderr goes to errdir/rank<r>.err. */
static inline void spawn(const struct spawn_opts *so, rank_fn fn, void *arg, const char *errdir, int *codes) {
    int W = so->world;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 64) ||
        getsockname(lfd, (struct sockaddr *)&a, &len)) {
        perror("test_dist: listen");
        exit(1);
    }
    int port = ntohs(a.sin_port);
    pid_t pids[16];
    fflush(stdout), fflush(stderr);
    for (int r = 0; r < W; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            char path[512];
            snprintf(path, sizeof path, "%s/rank%d.err", errdir, r);
            if (!freopen(path, "w", stderr)) _exit(99);
            setvbuf(stderr, NULL, _IONBF, 0);
            struct lmc_comm c;
            lmc_err err = {0};
            lmc_status s;
            if (W == 1) {
                close(lfd);
                lmc_comm_single_init(&c);
                s = LMC_OK;
            } else {
                int w = (so->claimed_world_of_last > 0 && r == W - 1) ? so->claimed_world_of_last : W;
                if (r != 0) close(lfd);
                struct lmc_comm_tcp_opts o = {r, w, r, "127.0.0.1", port, r == 0 ? lfd : -1,
                                              so->timeout_s > 0 ? so->timeout_s : 120};
                s = lmc_comm_tcp_init(&c, &o, &err);
            }
            if (s) {
                fprintf(stderr, "%s\n", err.msg);
                _exit(3);
            }
            int rc = fn(&c, r, arg);
            c.free(&c);
            _exit(rc);
        }
    }
    close(lfd);
    for (int k = 0; k < W; k++) {
        /* the stopped rank last: it ends only when killed */
        int r = so->stopped_rank > 0 ? (k < so->stopped_rank ? k : k + 1 < W ? k + 1 : so->stopped_rank) : k;
        if (so->stopped_rank > 0 && r == so->stopped_rank) kill(pids[r], SIGKILL);
        int st = 0;
        while (waitpid(pids[r], &st, 0) < 0 && errno == EINTR) {}
        codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
}

static inline char *slurp(const char *errdir, int r) {
    char path[512];
    snprintf(path, sizeof path, "%s/rank%d.err", errdir, r);
    FILE *f = fopen(path, "r");
    static char buf[8192];
    buf[0] = 0;
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    return buf;
}

#endif
