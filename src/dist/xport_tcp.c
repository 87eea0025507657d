/* xport_tcp.c — the tcp communicator's transport: a rendezvous at rank 0's
 * address (torchrun's MASTER_ADDR:MASTER_PORT) and a full mesh of TCP
 * sockets between the ranks, then transfers progressed with poll().
 *
 * Rendezvous: every rank but 0 opens its own listening socket (port picked
 * by the OS), connects to rank 0 and says hello (rank, world, its port);
 * rank 0 checks the hellos (same world, no rank twice), answers each with
 * the address table, and its rendezvous connections become its mesh links.
 * Then rank i connects to ranks 1..i-1 and accepts ranks i+1..world-1.
 * A peer whose socket closes (its process died) fails the transfer naming
 * it; so does a peer that sends nothing within the timeout. */
#include "dist/comm_host.h"
#include "core/core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HELLO_MAGIC 0x4c4d4344u /* "LMCD" */
#define HELLO_VERSION 1u

struct tcp_ctx {
    int *fd;            /* (world) socket to each peer; -1 for self */
    bool broken;        /* an exchange failed: free lingers (see tcp_free) */
};

struct hello {
    uint32_t magic, version;
    int32_t rank, world, port;
};
struct reply {
    uint32_t magic;
    int32_t ok, world;
};
struct peer_addr {
    uint32_t ip;        /* network order */
    int32_t port;
};

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

static int ms_left(double deadline) {
    double left = deadline - lmc_time_now();
    if (left <= 0) return 0;
    return left > 1e6 ? 1000000000 : (int)(left * 1000.0) + 1;
}

/* Sends or receives exactly n bytes on a non-blocking socket before the
 * deadline. 0 ok, -1 peer closed or error, -2 timeout. */
static int io_full(int fd, void *buf, size_t n, bool is_send, double deadline) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = is_send ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) return -1;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        struct pollfd pf = {fd, (short)(is_send ? POLLOUT : POLLIN), 0};
        int left = ms_left(deadline);
        if (left == 0) return -2;
        int pr = poll(&pf, 1, left);
        if (pr == 0) return -2;
        if (pr < 0 && errno != EINTR) return -1;
    }
    return 0;
}

static void tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_nonblock(fd);
}

/* Accepts one connection before the deadline; -1 on timeout/error. */
static int accept_until(int lfd, double deadline, struct sockaddr_in *from) {
    for (;;) {
        struct pollfd pf = {lfd, POLLIN, 0};
        int left = ms_left(deadline);
        if (left == 0) return -1;
        int pr = poll(&pf, 1, left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return -1;
        socklen_t len = sizeof *from;
        int fd = accept(lfd, (struct sockaddr *)from, &len);
        if (fd >= 0) {
            tune(fd);
            return fd;
        }
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) return -1;
    }
}

/* Connects to ip:port, retrying refused connections until the deadline. */
static int connect_until(uint32_t ip, int port, double deadline) {
    double backoff = 0.005;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) return -1;
        set_nonblock(fd);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip};
        int r = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (r < 0 && errno == EINPROGRESS) {
            struct pollfd pf = {fd, POLLOUT, 0};
            int left = ms_left(deadline);
            if (left > 0 && poll(&pf, 1, left) == 1) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
                r = e ? -1 : 0;
            }
        }
        if (r == 0) {
            tune(fd);
            return fd;
        }
        close(fd);
        if (ms_left(deadline) == 0) return -1;
        /* rank 0 not listening yet: back off and try again */
        struct timespec ts = {0, (long)(backoff * 1e9)};
        nanosleep(&ts, NULL);
        if (backoff < 0.2) backoff *= 2;
    }
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 128) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static lmc_status resolve(const char *host, uint32_t *ip, lmc_err *err) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int r = getaddrinfo(host, NULL, &hints, &res);
    if (r || !res)
        return lmc_err_set(err, LMC_ERR_ARG, "dist: cannot resolve MASTER_ADDR '%s': %s", host,
                           gai_strerror(r));
    *ip = ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr;
    freeaddrinfo(res);
    return LMC_OK;
}

/* Every transfer travels as a 16-byte header (magic, payload bytes) and
 * its payload. A rank that fails an exchange because it lost rank X sends
 * the peers whose stream is at a message boundary an abort header naming
 * X before it quits, so they report X too rather than the quitting rank. */
#define MSG_MAGIC 0x4c4d434du  /* "LMCM" */
#define ABORT_MAGIC 0x4c4d4341u /* "LMCA" */
#define HDR 16

struct msg_hdr {
    uint32_t magic;
    int32_t lost;       /* abort: the rank lost first */
    uint64_t bytes;
};

struct xstate {
    size_t done;        /* header + payload bytes moved */
    struct msg_hdr h;
};

static void send_aborts(struct lmc_xport *t, const struct lmc_xfer *x, const struct xstate *st,
                        const int *send_of, int lost) {
    struct tcp_ctx *tc = t->ctx;
    for (int p = 0; p < t->world; p++) {
        if (p == t->rank || p == lost || tc->fd[p] < 0) continue;
        int xi = send_of ? send_of[p] : -1;
        if (xi >= 0 && st[xi].done > 0 && st[xi].done < HDR + x[xi].bytes) continue; /* mid-message */
        struct msg_hdr h = {ABORT_MAGIC, lost, 0};
        ssize_t r = send(tc->fd[p], &h, sizeof h, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)r;
    }
}

/* Moves what the socket takes or gives now for transfer xi; -1 lost, 0 ok. */
static int step_xfer(int fd, const struct lmc_xfer *x, struct xstate *s) {
    size_t total = HDR + x->bytes;
    while (s->done < total) {
        unsigned char *p;
        size_t n;
        if (s->done < HDR) p = (unsigned char *)&s->h + s->done, n = HDR - s->done;
        else p = (unsigned char *)x->buf + (s->done - HDR), n = total - s->done;
        ssize_t r = x->is_send ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (r > 0) {
            s->done += (size_t)r;
            /* a header that says abort ends the transfer here */
            if (!x->is_send && s->done == HDR && s->h.magic != MSG_MAGIC) return 0;
            continue;
        }
        if (r == 0 && !x->is_send) return -1;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
        return -1;
    }
    return 0;
}

static lmc_status tcp_exchange(struct lmc_xport *t, struct lmc_xfer *x, int n, const char *what,
                               lmc_err *err) {
    struct tcp_ctx *tc = t->ctx;
    int W = t->world;
    struct pollfd *pfs = malloc(sizeof *pfs * (size_t)W);
    int *pmap = malloc(sizeof *pmap * (size_t)W);
    struct xstate *st = calloc((size_t)n, sizeof *st);
    int *send_of = malloc(sizeof(int) * 2 * (size_t)W), *recv_of = send_of ? send_of + W : NULL;
    lmc_status ret = LMC_OK;
    if (!pfs || !pmap || !st || !send_of) {
        ret = lmc_err_set(err, LMC_ERR_OOM, "comm: out of memory");
        goto out;
    }
    for (int p = 0; p < W; p++) send_of[p] = recv_of[p] = -1;
    for (int i = 0; i < n; i++) {
        LMC_ASSERT(x[i].peer >= 0 && x[i].peer < W && x[i].peer != t->rank);
        int *slot = x[i].is_send ? &send_of[x[i].peer] : &recv_of[x[i].peer];
        LMC_ASSERT(*slot < 0);
        *slot = i;
        if (x[i].is_send) st[i].h = (struct msg_hdr){MSG_MAGIC, -1, x[i].bytes};
    }
    int pending = n;
    double deadline = lmc_time_now() + t->timeout_s;
    while (pending > 0) {
        int np = 0;
        for (int p = 0; p < W; p++) {
            if (p == t->rank) continue;
            short ev = 0;
            if (send_of[p] >= 0 && st[send_of[p]].done < HDR + x[send_of[p]].bytes) ev |= POLLOUT;
            if (recv_of[p] >= 0 && st[recv_of[p]].done < HDR + x[recv_of[p]].bytes) ev |= POLLIN;
            if (ev) {
                pmap[np] = p;
                pfs[np++] = (struct pollfd){tc->fd[p], ev, 0};
            }
        }
        int left = ms_left(deadline);
        int pr = left ? poll(pfs, (nfds_t)np, left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) {
            char who[256] = "";
            size_t k = 0;
            int first = -1;
            for (int i = 0; i < np && k + 16 < sizeof who; i++) {
                if (first < 0) first = pmap[i];
                k += (size_t)snprintf(who + k, sizeof who - k, "%s%d", k ? ", " : "", pmap[i]);
            }
            send_aborts(t, x, st, send_of, first);
            ret = lmc_err_set(err, LMC_ERR_IO,
                              "dist: rank %d: no progress from rank %s within %.0f s during %s "
                              "(a rank stalled or died; LMC_DIST_TIMEOUT sets the limit)",
                              t->rank, who, t->timeout_s, what);
            goto out;
        }
        if (pr < 0) {
            ret = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: poll failed during %s: %s", t->rank, what,
                              strerror(errno));
            goto out;
        }
        for (int i = 0; i < np; i++) {
            int p = pmap[i], xi;
            if (!pfs[i].revents) continue;
            bool lost = false;
            if ((xi = recv_of[p]) >= 0 && st[xi].done < HDR + x[xi].bytes) {
                lost = step_xfer(tc->fd[p], &x[xi], &st[xi]) < 0;
                if (!lost && st[xi].done >= HDR) {
                    const struct msg_hdr *h = &st[xi].h;
                    if (h->magic == ABORT_MAGIC && h->lost >= 0 && h->lost < W) {
                        send_aborts(t, x, st, send_of, h->lost);
                        ret = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d lost rank %d (reported by rank %d, "
                                          "which quit) during %s", t->rank, h->lost, p, what);
                        goto out;
                    }
                    if (h->magic != MSG_MAGIC || h->bytes != x[xi].bytes) {
                        ret = lmc_err_set(err, LMC_ERR_INTERNAL, "dist: rank %d: rank %d sent %llu bytes where "
                                          "%zu were expected during %s (the ranks issued different "
                                          "collectives)", t->rank, p, (unsigned long long)h->bytes,
                                          x[xi].bytes, what);
                        goto out;
                    }
                }
                if (!lost && st[xi].done == HDR + x[xi].bytes) pending--;
            }
            if (!lost && (xi = send_of[p]) >= 0 && st[xi].done < HDR + x[xi].bytes) {
                lost = step_xfer(tc->fd[p], &x[xi], &st[xi]) < 0;
                if (!lost && st[xi].done == HDR + x[xi].bytes) pending--;
            }
            if (lost) {
                send_aborts(t, x, st, send_of, p);
                ret = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d lost rank %d (connection closed: the "
                                  "process died or quit) during %s", t->rank, p, what);
                goto out;
            }
        }
    }
out:
    if (ret) tc->broken = true;
    free(pfs);
    free(pmap);
    free(st);
    free(send_of);
    return ret;
}

/* After a failure: half-close every socket (the abort headers already
 * sent are followed by a FIN) and read until each peer closes too, for at
 * most 10 s. Closing with unread data would send a reset, and a reset can
 * make the peer drop the abort header that names the lost rank. */
static void linger_broken(struct lmc_xport *t) {
    struct tcp_ctx *tc = t->ctx;
    int W = t->world;
    struct pollfd *pf = malloc(sizeof *pf * (size_t)W);
    int *who = malloc(sizeof *who * (size_t)W);
    if (!pf || !who) goto out;
    for (int p = 0; p < W; p++)
        if (tc->fd[p] >= 0) shutdown(tc->fd[p], SHUT_WR);
    double deadline = lmc_time_now() + LMC_MIN(t->timeout_s, 10.0);
    for (;;) {
        int n = 0;
        for (int p = 0; p < W; p++)
            if (tc->fd[p] >= 0) who[n] = p, pf[n++] = (struct pollfd){tc->fd[p], POLLIN, 0};
        int left = ms_left(deadline);
        if (n == 0 || left == 0 || poll(pf, (nfds_t)n, left) <= 0) break;
        for (int i = 0; i < n; i++) {
            if (!pf[i].revents) continue;
            char sink[4096];
            ssize_t r = recv(pf[i].fd, sink, sizeof sink, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK)) {
                close(pf[i].fd);
                tc->fd[who[i]] = -1;
            }
        }
    }
out:
    free(pf);
    free(who);
}

static void tcp_free(struct lmc_xport *t) {
    if (!t) return;
    struct tcp_ctx *tc = t->ctx;
    if (tc && tc->fd && tc->broken) linger_broken(t);
    if (tc) {
        for (int p = 0; tc->fd && p < t->world; p++)
            if (tc->fd[p] >= 0) close(tc->fd[p]);
        free(tc->fd);
        free(tc);
    }
    free(t);
}

/* Rank 0: accepts world-1 hellos on lfd, answers them with the table. */
static lmc_status rdzv_root(struct lmc_xport *t, int lfd, double deadline, lmc_err *err) {
    struct tcp_ctx *tc = t->ctx;
    int W = t->world;
    struct peer_addr *tab = calloc((size_t)W, sizeof *tab);
    if (!tab) return lmc_err_set(err, LMC_ERR_OOM, "dist: out of memory");
    lmc_status st = LMC_OK;
    for (int got = 0; got < W - 1;) {
        struct sockaddr_in from;
        int fd = accept_until(lfd, deadline, &from);
        if (fd < 0) {
            char who[256] = "";
            size_t k = 0;
            for (int p = 1; p < W && k + 16 < sizeof who; p++)
                if (tc->fd[p] < 0) k += (size_t)snprintf(who + k, sizeof who - k, "%s%d", k ? ", " : "", p);
            st = lmc_err_set(err, LMC_ERR_IO, "dist: rank 0: rank %s did not join within %.0f s "
                             "(%d of %d joined)", who, t->timeout_s, got + 1, W);
            goto out;
        }
        struct hello h;
        if (io_full(fd, &h, sizeof h, false, deadline) || h.magic != HELLO_MAGIC) {
            close(fd); /* not one of ours (a port scan, a stale client): ignore */
            continue;
        }
        struct reply r = {HELLO_MAGIC, 1, W};
        const char *why = NULL;
        if (h.version != HELLO_VERSION) why = "a different lmc version";
        else if (h.world != W) why = "a different world size";
        else if (h.rank <= 0 || h.rank >= W) why = "a rank out of range";
        else if (tc->fd[h.rank] >= 0) why = "a rank number already taken";
        if (why) {
            r.ok = 0;
            io_full(fd, &r, sizeof r, true, deadline);
            close(fd);
            st = lmc_err_set(err, LMC_ERR_ARG, "dist: rank 0 refused a process claiming rank %d of %d "
                             "(%s; rank 0 has world %d)", h.rank, h.world, why, W);
            goto out;
        }
        tc->fd[h.rank] = fd;
        tab[h.rank] = (struct peer_addr){from.sin_addr.s_addr, h.port};
        got++;
    }
    for (int p = 1; p < W; p++) {
        struct reply r = {HELLO_MAGIC, 1, W};
        if (io_full(tc->fd[p], &r, sizeof r, true, deadline) ||
            io_full(tc->fd[p], tab, sizeof *tab * (size_t)W, true, deadline)) {
            st = lmc_err_set(err, LMC_ERR_IO, "dist: rank 0 lost rank %d during the rendezvous", p);
            goto out;
        }
    }
out:
    free(tab);
    return st;
}

/* Rank > 0: hello to rank 0, the table back, then the mesh. */
static lmc_status rdzv_peer(struct lmc_xport *t, uint32_t ip0, int port0, double deadline,
                            lmc_err *err) {
    struct tcp_ctx *tc = t->ctx;
    int W = t->world, me = t->rank, myport = 0;
    int lfd = listen_any(&myport);
    if (lfd < 0) return lmc_err_set(err, LMC_ERR_IO, "dist: rank %d cannot listen: %s", me, strerror(errno));
    lmc_status st = LMC_OK;
    struct peer_addr *tab = calloc((size_t)W, sizeof *tab);
    if (!tab) {
        close(lfd);
        return lmc_err_set(err, LMC_ERR_OOM, "dist: out of memory");
    }
    int fd = connect_until(ip0, port0, deadline);
    if (fd < 0) {
        st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d cannot reach rank 0 at port %d within %.0f s",
                         me, port0, t->timeout_s);
        goto out;
    }
    tc->fd[0] = fd;
    struct hello h = {HELLO_MAGIC, HELLO_VERSION, me, W, myport};
    struct reply r;
    if (io_full(fd, &h, sizeof h, true, deadline) || io_full(fd, &r, sizeof r, false, deadline) ||
        r.magic != HELLO_MAGIC) {
        st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: no answer from rank 0 during the rendezvous", me);
        goto out;
    }
    if (!r.ok) {
        st = lmc_err_set(err, LMC_ERR_ARG, "dist: rank 0 refused rank %d of %d (rank 0 has world %d, "
                         "or rank %d joined twice)", me, W, r.world, me);
        goto out;
    }
    if (io_full(fd, tab, sizeof *tab * (size_t)W, false, deadline)) {
        st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: rank 0 closed during the rendezvous", me);
        goto out;
    }
    for (int p = 1; p < me; p++) {
        /* rank 0 saw the peer's address; 0.0.0.0 never appears there */
        int pfd = connect_until(tab[p].ip, tab[p].port, deadline);
        int32_t hi[2] = {(int32_t)HELLO_MAGIC, me};
        if (pfd < 0 || io_full(pfd, hi, sizeof hi, true, deadline)) {
            if (pfd >= 0) close(pfd);
            st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d cannot connect to rank %d", me, p);
            goto out;
        }
        tc->fd[p] = pfd;
    }
    for (int got = 0; got < W - 1 - me;) {
        struct sockaddr_in from;
        int pfd = accept_until(lfd, deadline, &from);
        if (pfd < 0) {
            st = lmc_err_set(err, LMC_ERR_IO, "dist: rank %d: ranks above it did not connect within %.0f s",
                             me, t->timeout_s);
            goto out;
        }
        int32_t hi[2];
        if (io_full(pfd, hi, sizeof hi, false, deadline) || hi[0] != (int32_t)HELLO_MAGIC ||
            hi[1] <= me || hi[1] >= W || tc->fd[hi[1]] >= 0) {
            close(pfd);
            continue;
        }
        tc->fd[hi[1]] = pfd;
        got++;
    }
out:
    close(lfd);
    free(tab);
    return st;
}

lmc_status lmc_comm_tcp_init(struct lmc_comm *c, const struct lmc_comm_tcp_opts *o, lmc_err *err) {
    memset(c, 0, sizeof *c);
    if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
        return lmc_err_set(err, LMC_ERR_ARG, "dist: rank %d of world %d is out of range", o->rank, o->world);
    if (o->world > 65536) return lmc_err_set(err, LMC_ERR_ARG, "dist: world %d too large", o->world);
    struct lmc_xport *t = calloc(1, sizeof *t);
    struct tcp_ctx *tc = calloc(1, sizeof *tc);
    int *fds = malloc(sizeof(int) * (size_t)o->world);
    if (!t || !tc || !fds) {
        free(t), free(tc), free(fds);
        return lmc_err_set(err, LMC_ERR_OOM, "dist: out of memory");
    }
    for (int p = 0; p < o->world; p++) fds[p] = -1;
    tc->fd = fds;
    t->ctx = tc;
    t->rank = o->rank;
    t->world = o->world;
    t->timeout_s = o->timeout_s > 0 ? o->timeout_s : lmc_comm_default_timeout();
    t->exchange = tcp_exchange;
    t->free = tcp_free;
    double deadline = lmc_time_now() + t->timeout_s;
    lmc_status st = LMC_OK;
    if (o->world > 1) {
        uint32_t ip = 0;
        if (o->rank == 0) {
            int lfd = o->listen_fd;
            if (lfd < 0) {
                if ((st = resolve(o->addr ? o->addr : "0.0.0.0", &ip, err))) goto fail;
                lfd = socket(AF_INET, SOCK_STREAM, 0);
                int one = 1;
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port),
                                        .sin_addr.s_addr = ip};
                if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
                    bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 128)) {
                    st = lmc_err_set(err, LMC_ERR_IO, "dist: rank 0 cannot listen on %s:%d: %s",
                                     o->addr ? o->addr : "*", o->port, strerror(errno));
                    if (lfd >= 0) close(lfd);
                    goto fail;
                }
            }
            st = rdzv_root(t, lfd, deadline, err);
            close(lfd);
        } else {
            if ((st = resolve(o->addr ? o->addr : "127.0.0.1", &ip, err))) goto fail;
            st = rdzv_peer(t, ip, o->port, deadline, err);
        }
        if (st) goto fail;
    } else if (o->listen_fd >= 0) {
        close(o->listen_fd);
    }
    return lmc_comm_host_init(c, t, "tcp", o->local_rank, err);
fail:
    tcp_free(t);
    return st;
}
