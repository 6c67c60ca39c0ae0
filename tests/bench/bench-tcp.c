/* bench-tcp.c — wasock-bench rows for TCP through the daemon: connect and
 * accept rates, bulk throughput through the splice relay (against direct
 * loopback TCP, against socat relaying the same transfer, and against a
 * minimal splice relay in this process), and small request/response
 * exchanges through a relayed connection.
 *
 * Peers are plain sockets on 127.0.0.1 served by threads of this process;
 * socat, when present, is started per transfer and bound to 127.0.0.1.
 * Trusts libwasock, the daemon it started and the local kernel; every loop
 * stops at a count or a time budget, every wait has a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-rows.h"

/* Most connections one sample opens: with the time budget this keeps the
 * ports left in TIME_WAIT (60 s on Linux) well inside the 28,000 of the
 * default ephemeral range, over every repetition. */
#define TCP_MAX_CONNECTS_PER_SAMPLE 4000ul

/* Connections a plain client may have made that are not accepted yet, in
 * the accept row: below the listener's backlog (128), so no SYN is ever
 * dropped (a dropped SYN costs a one-second retransmission). */
#define TCP_ACCEPT_WINDOW 64

/* How often a connector waiting for the accepting side re-checks whether
 * it was told to stop (a stop is also signalled; this only bounds a lost
 * wake-up). */
#define TCP_CONNECTOR_RECHECK_MS 10

/* Backlog of the plain listeners this file creates: the kernel's usual
 * maximum, so a burst of connects is never refused. */
#define TCP_PLAIN_BACKLOG 4096

/* Bytes moved per bulk transfer: large enough that connection set-up is
 * negligible, small enough for the time budget (about 0.3 s through a
 * slow relay). */
#define TCP_BULK_BYTES_FULL  (256ul << 20)
#define TCP_BULK_BYTES_QUICK (64ul << 20)

/* Size of each read(2)/write(2) of a bulk transfer, on every path alike. */
#define TCP_BULK_CHUNK (128u * 1024u)

/* Longest a bulk transfer may take before it counts as an error: at
 * 20 MB/s, far below any working path, 256 MiB takes 13 s. */
#define TCP_BULK_TIMEOUT_MS 30000

/* Capacity of each pipe of the reference splice relay: the largest the
 * daemon gives a bulk connection (its download pipe). */
#define TCP_SPLICE_PIPE_BYTES (1024 * 1024)

/* Bytes of each request and response of the small-exchange row. */
#define TCP_EXCHANGE_BYTES 64

/* Most exchanges one sample makes, whatever the time budget. */
#define TCP_MAX_EXCHANGES 1000000ul

/* How long socat gets to start listening, and to exit after its two
 * connections closed. */
#define TCP_SOCAT_START_MS 5000
#define TCP_SOCAT_EXIT_MS  5000

/* ------------------------------------------------------------------ plain acceptor */

/* A plain listener whose thread accepts and closes (or keeps) connections. */
typedef struct acceptor {
    int listen_fd;
    uint16_t port;
    pthread_t thread;
    atomic_ulong accepted;
    bool running;
} acceptor;

static void *acceptor_thread(void *arg) {
    acceptor *a = arg;
    for (;;) {
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            break; /* shutdown() of the listener ends the thread */
        }
        close(fd);
        atomic_fetch_add(&a->accepted, 1);
    }
    return NULL;
}

static int acceptor_start(acceptor *a) {
    memset(a, 0, sizeof(*a));
    atomic_init(&a->accepted, 0);
    a->listen_fd = bench_listen_loopback(&a->port, TCP_PLAIN_BACKLOG);
    if (a->listen_fd < 0) {
        return a->listen_fd;
    }
    if (pthread_create(&a->thread, NULL, acceptor_thread, a) != 0) {
        close(a->listen_fd);
        return -EAGAIN;
    }
    a->running = true;
    return 0;
}

static void acceptor_stop(acceptor *a) {
    if (!a->running) {
        return;
    }
    shutdown(a->listen_fd, SHUT_RDWR); /* wakes the blocked accept4 */
    pthread_join(a->thread, NULL);
    close(a->listen_fd);
    a->running = false;
}

/* ------------------------------------------------------------------ connect */

/* One sample of create+connect+streams+drop through the daemon:
 * connections per second, or -1 with *err. */
static double wasockd_connect_rate(wasock_client *c, uint16_t port, wasock_err *err) {
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    unsigned long done = 0;
    *err = WASOCK_OK;
    while (done < TCP_MAX_CONNECTS_PER_SAMPLE && bench_now_ns() < stop) {
        wasock_tcp *s;
        int in, out;
        *err = wasock_tcp_create(c, WASOCK_IPV4, &s);
        if (*err != WASOCK_OK) {
            return -1;
        }
        *err = bench_tcp_connect(c, s, port, &in, &out);
        wasock_tcp_drop(s);
        if (*err != WASOCK_OK) {
            return -1;
        }
        done++;
    }
    return (double)done / ((double)(bench_now_ns() - start) / 1e9);
}

/* One sample of socket()+connect()+close(): connections per second, or a
 * negative errno. */
static double direct_connect_rate(uint16_t port) {
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    unsigned long done = 0;
    while (done < TCP_MAX_CONNECTS_PER_SAMPLE && bench_now_ns() < stop) {
        int fd = bench_connect_loopback(port);
        if (fd < 0) {
            return fd;
        }
        close(fd);
        done++;
    }
    return (double)done / ((double)(bench_now_ns() - start) / 1e9);
}

void bench_row_connect(bench_daemon *d) {
    bench_group *g = bench_group_open("connect", "TCP connect to a loopback listener", "connects/s",
                                      BENCH_HIGHER_IS_BETTER);
    bench_group_note(g, "wasockd: create, start-connect, wait ready, finish-connect (two stream "
                        "fds), drop; direct: socket, connect, close");
    bench_series *wasockd = bench_series_add(g, "wasockd", "create+connect+stream fds+drop");
    bench_series *direct = bench_series_add(g, "direct", "socket+connect+close");
    bench_compare(
        g, wasockd, direct,
        (bench_target){BENCH_TARGET_AT_LEAST, 1.0 / 3.0, ">= 0.33x (connect time <= 3x direct)"});

    acceptor a;
    wasock_client *c = NULL;
    int r = acceptor_start(&a);
    if (r < 0) {
        bench_group_error(g, "plain listener: %s", strerror(-r));
        return;
    }
    wasock_err e = bench_client_open(d, &c);
    if (e != WASOCK_OK) {
        bench_group_error(g, "client: %s", wasock_err_name(e));
        acceptor_stop(&a);
        return;
    }
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        double rate = wasockd_connect_rate(c, a.port, &e);
        if (rate < 0) {
            bench_group_error(g, "wasockd connect: %s", wasock_err_name(e));
            break;
        }
        bench_series_sample(wasockd, rate);
        rate = direct_connect_rate(a.port);
        if (rate < 0) {
            bench_group_error(g, "direct connect: %s", strerror((int)-rate));
            break;
        }
        bench_series_sample(direct, rate);
    }
    wasock_client_close(c);
    acceptor_stop(&a);
}

/* ------------------------------------------------------------------ accept */

/* A plain client thread that connects to `port` and closes at once, never
 * more than TCP_ACCEPT_WINDOW connections ahead of the accepting side. */
typedef struct connector {
    uint16_t port;
    unsigned long total; /* connections to make */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned long accepted; /* guarded by lock: reported by the accepting side */
    bool stop;              /* guarded by lock */
    int error;              /* negative errno of a failed connect, or 0 */
    pthread_t thread;
} connector;

static void *connector_thread(void *arg) {
    connector *k = arg;
    for (unsigned long made = 0; made < k->total; made++) {
        pthread_mutex_lock(&k->lock);
        int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
        while (!k->stop && made - k->accepted >= TCP_ACCEPT_WINDOW && bench_now_ns() < deadline) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += TCP_CONNECTOR_RECHECK_MS * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&k->changed, &k->lock, &ts);
        }
        bool stop = k->stop || made - k->accepted >= TCP_ACCEPT_WINDOW;
        pthread_mutex_unlock(&k->lock);
        if (stop) {
            break;
        }
        int fd = bench_connect_loopback(k->port);
        if (fd < 0) {
            k->error = fd;
            break;
        }
        close(fd);
    }
    return NULL;
}

static int connector_start(connector *k, uint16_t port, unsigned long total) {
    memset(k, 0, sizeof(*k));
    k->port = port;
    k->total = total;
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->changed, NULL);
    if (pthread_create(&k->thread, NULL, connector_thread, k) != 0) {
        pthread_cond_destroy(&k->changed);
        pthread_mutex_destroy(&k->lock);
        return -EAGAIN;
    }
    return 0;
}

static void connector_accepted(connector *k, unsigned long accepted) {
    pthread_mutex_lock(&k->lock);
    k->accepted = accepted;
    pthread_cond_signal(&k->changed);
    pthread_mutex_unlock(&k->lock);
}

/* Stops and joins the thread; returns its error (0 or -errno). */
static int connector_stop(connector *k) {
    pthread_mutex_lock(&k->lock);
    k->stop = true;
    pthread_cond_signal(&k->changed);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL);
    pthread_cond_destroy(&k->changed);
    pthread_mutex_destroy(&k->lock);
    return k->error;
}

/* Connections one accept sample takes: the time budget usually ends it
 * first. */
static unsigned long accept_sample_count(void) {
    return BENCH_PICK(TCP_MAX_CONNECTS_PER_SAMPLE, TCP_MAX_CONNECTS_PER_SAMPLE / 4);
}

/* One sample of accepts through a daemon listener: accepts per second, or
 * -1 with *why set. */
static double wasockd_accept_rate(wasock_client *c, wasock_tcp *l, uint16_t port, char *why,
                                  size_t why_len) {
    connector k;
    unsigned long total = accept_sample_count(), done = 0;
    int r = connector_start(&k, port, total);
    if (r < 0) {
        snprintf(why, why_len, "connector thread: %s", strerror(-r));
        return -1;
    }
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    wasock_err e = WASOCK_OK;
    while (done < total && bench_now_ns() < stop) {
        if (!bench_wait_ready(c, l, BENCH_WAIT_MS)) {
            snprintf(why, why_len, "listener not ready within %d ms", BENCH_WAIT_MS);
            e = WASOCK_E_TIMEOUT;
            break;
        }
        wasock_tcp *conn;
        int in, out;
        e = wasock_tcp_accept(l, &conn, &in, &out);
        if (e == WASOCK_E_WOULD_BLOCK) {
            continue; /* readiness is re-read above */
        }
        if (e != WASOCK_OK) {
            snprintf(why, why_len, "wasock_tcp_accept: %s", wasock_err_name(e));
            break;
        }
        wasock_tcp_drop(conn);
        connector_accepted(&k, ++done);
    }
    int64_t end = bench_now_ns();
    r = connector_stop(&k);
    if (e == WASOCK_OK && r < 0) {
        snprintf(why, why_len, "plain connect: %s", strerror(-r));
        return -1;
    }
    /* Connections made but not accepted are taken now, so the next sample
     * starts with an empty queue. */
    wasock_client_dispatch(c); /* readiness events still in the socket */
    for (unsigned i = 0; e == WASOCK_OK && i < TCP_ACCEPT_WINDOW + 1; i++) {
        wasock_tcp *conn;
        int in, out;
        if (!wasock_tcp_ready(l) || wasock_tcp_accept(l, &conn, &in, &out) != WASOCK_OK) {
            break;
        }
        wasock_tcp_drop(conn);
    }
    if (e != WASOCK_OK) {
        return -1;
    }
    return (double)done / ((double)(end - start) / 1e9);
}

/* One sample of plain accept4+close: accepts per second, or -errno. */
static double direct_accept_rate(int listen_fd, uint16_t port) {
    connector k;
    unsigned long total = accept_sample_count(), done = 0;
    int r = connector_start(&k, port, total), err = 0;
    if (r < 0) {
        return r;
    }
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    while (done < total && bench_now_ns() < stop) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            err = -errno;
            break;
        }
        close(fd);
        connector_accepted(&k, ++done);
    }
    int64_t end = bench_now_ns();
    r = connector_stop(&k);
    /* Drain what the connector made beyond the last accept. */
    bench_set_nonblocking(listen_fd, true);
    for (unsigned i = 0; i < TCP_ACCEPT_WINDOW + 1; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            break;
        }
        close(fd);
    }
    bench_set_nonblocking(listen_fd, false);
    if (err < 0 || r < 0) {
        return err < 0 ? err : r;
    }
    return (double)done / ((double)(end - start) / 1e9);
}

/* A daemon listener on 127.0.0.1, port chosen by the kernel (0.2 shape). */
static wasock_err wasockd_listener(wasock_client *c, wasock_tcp **out, uint16_t *port) {
    wasock_addr a = {.ip = {.family = WASOCK_IPV4, .addr.v4 = {127, 0, 0, 1}}, .port = 0};
    wasock_tcp *l;
    wasock_err e = wasock_tcp_create(c, WASOCK_IPV4, &l);
    if (e != WASOCK_OK) {
        return e;
    }
    e = wasock_tcp_start_bind(l, &a);
    if (e == WASOCK_OK) {
        e = bench_wait_ready(c, l, BENCH_WAIT_MS) ? wasock_tcp_finish_bind(l) : WASOCK_E_TIMEOUT;
    }
    if (e == WASOCK_OK) {
        e = wasock_tcp_start_listen(l);
    }
    if (e == WASOCK_OK) {
        e = bench_wait_ready(c, l, BENCH_WAIT_MS) ? wasock_tcp_finish_listen(l) : WASOCK_E_TIMEOUT;
    }
    if (e == WASOCK_OK) {
        e = wasock_tcp_local_address(l, &a);
    }
    if (e != WASOCK_OK) {
        wasock_tcp_drop(l);
        return e;
    }
    *port = a.port;
    *out = l;
    return WASOCK_OK;
}

void bench_row_accept(bench_daemon *d) {
    bench_group *g = bench_group_open("accept", "TCP accept of connections from a plain client",
                                      "accepts/s", BENCH_HIGHER_IS_BETTER);
    bench_group_note(g,
                     "a plain client thread connects and closes, at most %d ahead; "
                     "wasockd: wait ready, accept (two stream fds), drop; direct: accept4, "
                     "close",
                     TCP_ACCEPT_WINDOW);
    bench_series *wasockd = bench_series_add(g, "wasockd", "daemon listener: accept+drop");
    bench_series *direct = bench_series_add(g, "direct", "accept4+close");
    bench_compare(g, wasockd, direct, (bench_target){0});

    wasock_client *c = NULL;
    wasock_tcp *l = NULL;
    uint16_t wport = 0, dport = 0;
    char why[BENCH_TEXT_MAX];
    int dfd = bench_listen_loopback(&dport, TCP_PLAIN_BACKLOG);
    if (dfd < 0) {
        bench_group_error(g, "plain listener: %s", strerror(-dfd));
        return;
    }
    wasock_err e = bench_client_open(d, &c);
    if (e == WASOCK_OK) {
        e = wasockd_listener(c, &l, &wport);
    }
    if (e != WASOCK_OK) {
        bench_group_error(g, "daemon listener: %s", wasock_err_name(e));
        goto out;
    }
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        double rate = wasockd_accept_rate(c, l, wport, why, sizeof(why));
        if (rate < 0) {
            bench_group_error(g, "wasockd: %s", why);
            break;
        }
        bench_series_sample(wasockd, rate);
        rate = direct_accept_rate(dfd, dport);
        if (rate < 0) {
            bench_group_error(g, "direct: %s", strerror((int)-rate));
            break;
        }
        bench_series_sample(direct, rate);
    }
out:
    wasock_tcp_drop(l);
    wasock_client_close(c);
    close(dfd);
}

/* ------------------------------------------------------------------ connection pairs */

/* How the client side reaches the peer. */
typedef enum path_kind { PATH_DIRECT, PATH_WASOCKD, PATH_SOCAT, PATH_SPLICE } path_kind;

static const char *path_name(path_kind k) {
    switch (k) {
    case PATH_WASOCKD:
        return "wasockd";
    case PATH_SOCAT:
        return "socat";
    case PATH_SPLICE:
        return "splice relay";
    default:
        return "direct";
    }
}

/* ------------------------------------------------------------------ reference splice relay */

/* What a splice relay reaches on this machine, as a reference for the
 * daemon's: the textbook shape, TCP -> pipe -> TCP with blocking splice(2)
 * calls, one thread per direction, no policy and no event loop. */

/* One direction: from -> pipe -> to; passes the end on with shutdown. */
typedef struct splice_direction {
    int from, to; /* borrowed from the splice_relay */
    pthread_t thread;
    bool started;
} splice_direction;

typedef struct splice_relay {
    int client_side, peer_side; /* the relay's two sockets, owned; -1 when none */
    splice_direction up, down;
} splice_relay;

static void *splice_direction_thread(void *arg) {
    splice_direction *d = arg;
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) == 0) {
        (void)fcntl(pipe_fds[1], F_SETPIPE_SZ, TCP_SPLICE_PIPE_BYTES);
        for (bool open = true; open;) {
            ssize_t n =
                splice(d->from, NULL, pipe_fds[1], NULL, TCP_SPLICE_PIPE_BYTES, SPLICE_F_MOVE);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            open = n > 0;
            while (open && n > 0) {
                ssize_t m = splice(pipe_fds[0], NULL, d->to, NULL, (size_t)n, SPLICE_F_MOVE);
                if (m > 0) {
                    n -= m;
                } else if (m == 0 || errno != EINTR) {
                    open = false;
                }
            }
        }
        close(pipe_fds[0]);
        close(pipe_fds[1]);
    }
    shutdown(d->to, SHUT_WR);
    return NULL;
}

/* Ends both directions (shutdown wakes blocked splices), waits for them and
 * closes the relay's sockets. Idempotent; with both sockets -1 and no thread
 * started it does nothing. */
static void splice_relay_stop(splice_relay *r) {
    if (r->client_side >= 0) {
        shutdown(r->client_side, SHUT_RDWR);
    }
    if (r->peer_side >= 0) {
        shutdown(r->peer_side, SHUT_RDWR);
    }
    if (r->up.started) {
        pthread_join(r->up.thread, NULL);
    }
    if (r->down.started) {
        pthread_join(r->down.thread, NULL);
    }
    if (r->client_side >= 0) {
        close(r->client_side);
    }
    if (r->peer_side >= 0) {
        close(r->peer_side);
    }
    memset(r, 0, sizeof(*r));
    r->client_side = r->peer_side = -1;
}

static int accept_peer(int listen_fd);

/* Connects a client socket through a new reference relay to the plain
 * listener at `port`: the client's socket, or a negative errno with
 * nothing left open. r is stopped with splice_relay_stop. */
static int splice_relay_start(splice_relay *r, uint16_t port) {
    uint16_t relay_port;
    int client, err;
    int listen_fd = bench_listen_loopback(&relay_port, 1);

    memset(r, 0, sizeof(*r));
    r->client_side = r->peer_side = -1;
    if (listen_fd < 0) {
        return listen_fd;
    }
    client = bench_connect_loopback(relay_port); /* completes in the backlog */
    err = client < 0 ? client : accept_peer(listen_fd);
    close(listen_fd);
    if (err >= 0) {
        r->client_side = err;
        err = bench_connect_loopback(port);
    }
    if (err >= 0) {
        r->peer_side = err;
        r->up = (splice_direction){.from = r->client_side, .to = r->peer_side};
        r->down = (splice_direction){.from = r->peer_side, .to = r->client_side};
        r->up.started = pthread_create(&r->up.thread, NULL, splice_direction_thread, &r->up) == 0;
        r->down.started =
            pthread_create(&r->down.thread, NULL, splice_direction_thread, &r->down) == 0;
        err = r->up.started && r->down.started ? 0 : -EAGAIN;
    }
    if (err < 0) {
        splice_relay_stop(r);
        if (client >= 0) {
            close(client);
        }
        return err;
    }
    return client;
}

/* One connection as the bulk and exchange rows use it: the client side's
 * two descriptors (the same socket for direct and socat, the relay's streams
 * for wasockd) and the peer's plain socket. */
typedef struct path_conn {
    int client_in, client_out; /* non-blocking; owned as below */
    int client_socket;         /* direct / socat: the socket, ours to close; else -1 */
    wasock_tcp *tcp;           /* wasockd: owns client_in/out; else NULL */
    int peer;                  /* the peer's blocking accepted socket, ours */
    pid_t socat;               /* socat's pid, 0 if none */
    splice_relay splice;       /* PATH_SPLICE: the reference relay; else its sockets are -1 */
} path_conn;

/* A free loopback port for socat to listen on (bound and released). */
static int free_loopback_port(uint16_t *port) {
    int fd = bench_listen_loopback(port, 1);
    if (fd < 0) {
        return fd;
    }
    close(fd);
    return 0;
}

/* Starts socat relaying 127.0.0.1:listen_port to 127.0.0.1:target. */
static pid_t socat_start(uint16_t listen_port, uint16_t target) {
    char listen_arg[64], connect_arg[64];
    snprintf(listen_arg, sizeof(listen_arg), "TCP-LISTEN:%u,bind=127.0.0.1,reuseaddr", listen_port);
    snprintf(connect_arg, sizeof(connect_arg), "TCP:127.0.0.1:%u", target);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
    }
    const char *argv[] = {bench_cfg.socat, listen_arg, connect_arg, NULL};
    execv(bench_cfg.socat, (char *const *)argv);
    _exit(127);
}

static void socat_reap(pid_t pid) {
    int status;
    int64_t deadline = bench_now_ns() + (int64_t)TCP_SOCAT_EXIT_MS * 1000000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (bench_now_ns() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return;
        }
        bench_sleep_ms(BENCH_RETRY_MS);
    }
}

static void path_close(path_conn *p) {
    if (p->tcp != NULL) {
        wasock_tcp_drop(p->tcp);
    }
    if (p->client_socket >= 0) {
        close(p->client_socket);
    }
    if (p->peer >= 0) {
        close(p->peer);
    }
    if (p->socat > 0) {
        socat_reap(p->socat);
    }
    splice_relay_stop(&p->splice); /* a no-op when none was started */
    p->tcp = NULL;
    p->client_socket = p->peer = -1;
    p->socat = 0;
}

/* Accepts the peer side on the plain listener, bounded. */
static int accept_peer(int listen_fd) {
    int r = bench_set_nonblocking(listen_fd, true);
    int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
    while (r == 0) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            bench_set_nonblocking(listen_fd, false);
            return fd;
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            r = -errno;
        } else if (bench_now_ns() >= deadline) {
            r = -ETIMEDOUT;
        } else {
            bench_sleep_ms(BENCH_RETRY_MS);
        }
    }
    bench_set_nonblocking(listen_fd, false);
    return r;
}

/* Connects to socat's port once it listens (bounded). */
static int connect_when_listening(uint16_t port, pid_t socat) {
    int64_t deadline = bench_now_ns() + (int64_t)TCP_SOCAT_START_MS * 1000000;
    for (;;) {
        int fd = bench_connect_loopback(port);
        if (fd >= 0 || fd != -ECONNREFUSED) {
            return fd;
        }
        int status;
        if (waitpid(socat, &status, WNOHANG) == socat || bench_now_ns() >= deadline) {
            return -ETIMEDOUT;
        }
        bench_sleep_ms(BENCH_RETRY_MS);
    }
}

/* Opens a connection of kind k to the plain listener (listen_fd, port).
 * 0, or a negative errno with *why set; on failure nothing is left open. */
static int path_open(path_kind k, wasock_client *c, int listen_fd, uint16_t port, path_conn *p,
                     char *why, size_t why_len) {
    memset(p, 0, sizeof(*p));
    p->client_socket = p->peer = -1;
    p->splice.client_side = p->splice.peer_side = -1;
    int r = 0;
    if (k == PATH_WASOCKD) {
        wasock_err e = wasock_tcp_create(c, WASOCK_IPV4, &p->tcp);
        if (e == WASOCK_OK) {
            e = bench_tcp_connect(c, p->tcp, port, &p->client_in, &p->client_out);
        }
        if (e != WASOCK_OK) {
            snprintf(why, why_len, "connect through wasockd: %s", wasock_err_name(e));
            path_close(p);
            return -EIO;
        }
    } else {
        uint16_t target = port;
        if (k == PATH_SOCAT) {
            r = free_loopback_port(&target);
            if (r == 0) {
                p->socat = socat_start(target, port);
                r = p->socat > 0 ? 0 : -errno;
            }
            if (r == 0) {
                r = connect_when_listening(target, p->socat);
            }
        } else if (k == PATH_SPLICE) {
            r = splice_relay_start(&p->splice, port);
        } else {
            r = bench_connect_loopback(target);
        }
        if (r < 0) {
            snprintf(why, why_len, "%s connect: %s", path_name(k), strerror(-r));
            path_close(p);
            return r;
        }
        p->client_socket = p->client_in = p->client_out = r;
        bench_set_nonblocking(r, true);
    }
    p->peer = accept_peer(listen_fd);
    if (p->peer < 0) {
        r = p->peer;
        p->peer = -1;
        snprintf(why, why_len, "peer accept: %s", strerror(-r));
        path_close(p);
        return r;
    }
    return 0;
}

/* ------------------------------------------------------------------ bulk */

static char bulk_buffer_client[TCP_BULK_CHUNK];
static char bulk_buffer_peer[TCP_BULK_CHUNK];

/* The peer's half of one transfer, in its own thread. */
typedef struct bulk_peer {
    int fd;
    size_t total;
    bool send;        /* download: the peer writes; upload: the peer reads */
    int64_t started;  /* download: when the peer began writing */
    int64_t finished; /* upload: when the peer had read everything */
    int error;        /* 0 or -errno */
} bulk_peer;

static void *bulk_peer_thread(void *arg) {
    bulk_peer *b = arg;
    int64_t deadline = bench_now_ns() + (int64_t)TCP_BULK_TIMEOUT_MS * 1000000;
    size_t done = 0;
    b->started = bench_now_ns();
    while (done < b->total && b->error == 0) {
        size_t n = b->total - done < TCP_BULK_CHUNK ? b->total - done : TCP_BULK_CHUNK;
        if (b->send) {
            b->error = bench_write_all(b->fd, bulk_buffer_peer, n, deadline);
            done += n;
        } else {
            ssize_t got = read(b->fd, bulk_buffer_peer, n);
            if (got > 0) {
                done += (size_t)got;
            } else if (got == 0) {
                b->error = -ENODATA;
            } else if (errno != EINTR) {
                b->error = -errno;
            }
        }
    }
    b->finished = bench_now_ns();
    return NULL;
}

/* Reads up to `total` bytes from the non-blocking fd, in chunks. */
static int client_read_total(int fd, size_t total, int64_t deadline) {
    size_t done = 0;
    while (done < total) {
        size_t n = total - done < TCP_BULK_CHUNK ? total - done : TCP_BULK_CHUNK;
        ssize_t got = read(fd, bulk_buffer_client, n);
        if (got > 0) {
            done += (size_t)got;
            continue;
        }
        if (got == 0) {
            return -ENODATA;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN) {
            return -errno;
        }
        int r = bench_wait_fd(fd, POLLIN, deadline);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

static int client_write_total(int fd, size_t total, int64_t deadline) {
    size_t done = 0;
    while (done < total) {
        size_t n = total - done < TCP_BULK_CHUNK ? total - done : TCP_BULK_CHUNK;
        int r = bench_write_all(fd, bulk_buffer_client, n, deadline);
        if (r < 0) {
            return r;
        }
        done += n;
    }
    return 0;
}

/* One transfer of `total` bytes over p: MB/s (10^6 bytes), or -errno. */
static double bulk_transfer(path_conn *p, size_t total, bool upload) {
    bulk_peer b = {.fd = p->peer, .total = total, .send = !upload};
    pthread_t t;
    if (pthread_create(&t, NULL, bulk_peer_thread, &b) != 0) {
        return -EAGAIN;
    }
    int64_t deadline = bench_now_ns() + (int64_t)TCP_BULK_TIMEOUT_MS * 1000000;
    int64_t start = bench_now_ns(), end;
    int r;
    if (upload) {
        r = client_write_total(p->client_out, total, deadline);
        if (r < 0) {
            shutdown(p->peer, SHUT_RDWR); /* let the peer thread end */
        }
        pthread_join(t, NULL);
        end = b.finished;
    } else {
        r = client_read_total(p->client_in, total, deadline);
        end = bench_now_ns();
        if (r < 0) {
            shutdown(p->peer, SHUT_RDWR);
        }
        pthread_join(t, NULL);
        start = b.started;
    }
    if (r == 0) {
        r = b.error;
    }
    if (r < 0) {
        return r;
    }
    return (double)total / ((double)(end - start) / 1e9) / 1e6;
}

/* One sample of one path and direction; records it or the error. */
static bool bulk_sample(bench_group *g, bench_series *s, path_kind k, wasock_client *c,
                        int listen_fd, uint16_t port, bool upload) {
    path_conn p;
    char why[BENCH_TEXT_MAX];
    if (path_open(k, c, listen_fd, port, &p, why, sizeof(why)) < 0) {
        bench_group_error(g, "%s", why);
        return false;
    }
    double mbps = bulk_transfer(&p, BENCH_PICK(TCP_BULK_BYTES_FULL, TCP_BULK_BYTES_QUICK), upload);
    path_close(&p);
    if (mbps < 0) {
        bench_group_error(g, "%s transfer: %s", path_name(k), strerror((int)-mbps));
        return false;
    }
    bench_series_sample(s, mbps);
    return true;
}

void bench_row_bulk(bench_daemon *d) {
    static const struct {
        const char *key, *title;
        bool upload;
        double direct_bound;
        const char *direct_text;
    } directions[] = {
        {"bulk_upload", "TCP bulk upload (client -> peer)", true, 0.70, ">= 0.70x"},
        {"bulk_download", "TCP bulk download (peer -> client)", false, 0.95, ">= 0.95x"},
    };
    wasock_client *c = NULL;
    uint16_t port;
    int listen_fd = bench_listen_loopback(&port, TCP_PLAIN_BACKLOG);
    wasock_err e = bench_client_open(d, &c);

    for (size_t i = 0; i < sizeof(directions) / sizeof(directions[0]); i++) {
        bench_group *g = bench_group_open(directions[i].key, directions[i].title, "MB/s",
                                          BENCH_HIGHER_IS_BETTER);
        bench_group_note(g,
                         "%lu MiB per transfer in %u KiB reads/writes; one new connection "
                         "per transfer, timed from the first byte to the last",
                         BENCH_PICK(TCP_BULK_BYTES_FULL, TCP_BULK_BYTES_QUICK) >> 20,
                         TCP_BULK_CHUNK / 1024);
        bench_group_note(g, "splice: the textbook splice relay in this process (blocking "
                            "splice calls, a thread per direction), what any splice relay "
                            "reaches on this machine");
        bench_series *direct = bench_series_add(g, "direct", "loopback TCP");
        bench_series *relay = bench_series_add(g, "wasockd", "the daemon's splice relay");
        bench_series *socat = bench_series_add(g, "socat", "socat TCP-LISTEN -> TCP relay");
        bench_series *splice = bench_series_add(g, "splice", "minimal TCP->pipe->TCP relay");
        bench_compare(g, relay, direct,
                      (bench_target){BENCH_TARGET_AT_LEAST, directions[i].direct_bound,
                                     directions[i].direct_text});
        bench_compare(g, relay, socat, (bench_target){BENCH_TARGET_AT_LEAST, 1.1, ">= 1.1x"});
        bench_compare(g, socat, direct, (bench_target){0});
        /* What any splice relay reaches here, next to the daemon's. */
        bench_compare(g, splice, direct, (bench_target){0});
        bench_compare(g, relay, splice, (bench_target){0});
        if (bench_cfg.socat == NULL) {
            bench_series_skip(socat, "socat not found (install the Debian package socat)");
        }
        if (listen_fd < 0) {
            bench_group_error(g, "plain listener: %s", strerror(-listen_fd));
            continue;
        }
        if (e != WASOCK_OK) {
            bench_group_error(g, "client: %s", wasock_err_name(e));
            continue;
        }
        for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
            bool upload = directions[i].upload;
            if (!bulk_sample(g, direct, PATH_DIRECT, c, listen_fd, port, upload) ||
                !bulk_sample(g, relay, PATH_WASOCKD, c, listen_fd, port, upload) ||
                (bench_cfg.socat != NULL &&
                 !bulk_sample(g, socat, PATH_SOCAT, c, listen_fd, port, upload)) ||
                !bulk_sample(g, splice, PATH_SPLICE, c, listen_fd, port, upload)) {
                break;
            }
        }
    }
    wasock_client_close(c);
    if (listen_fd >= 0) {
        close(listen_fd);
    }
}

/* ------------------------------------------------------------------ handoff */

/* The handoff row's daemon policy: the bench user's tcp.connect to
 * loopback hands the socket off; everything else on loopback is allowed. */
static const char handoff_policy_fmt[] = "version: 1\n"
                                         "defaults: { action: deny }\n"
                                         "tenants:\n"
                                         "  default:\n"
                                         "    match: { uids: [ %u, 0 ], token: none }\n"
                                         "    protocols: [ tcp ]\n"
                                         "    default: deny\n"
                                         "    rules:\n"
                                         "      - id: bench-handoff\n"
                                         "        ops: [ tcp.connect ]\n"
                                         "        remote: [ \"@loopback\" ]\n"
                                         "        action: allow\n"
                                         "        allow: { data_path: handoff }\n"
                                         "      - id: bench-loopback\n"
                                         "        ops: [ any ]\n"
                                         "        local: [ \"@loopback\" ]\n"
                                         "        remote: [ \"@loopback\" ]\n"
                                         "        action: allow\n";

void bench_row_handoff(bench_daemon *shared) {
    static const struct {
        const char *key, *title;
        bool upload;
    } directions[] = {
        {"handoff_upload", "TCP bulk upload with handoff (client -> peer)", true},
        {"handoff_download", "TCP bulk download with handoff (peer -> client)", false},
    };
    char policy[sizeof(handoff_policy_fmt) + 16];
    bench_daemon d;
    wasock_client *c = NULL;
    uint16_t port;
    (void)shared; /* this row needs a daemon with a handoff policy */
    snprintf(policy, sizeof(policy), handoff_policy_fmt, (unsigned)getuid());
    bench_daemon_opts opts = {.policy_yaml = policy};
    int listen_fd = bench_listen_loopback(&port, TCP_PLAIN_BACKLOG);
    int started = bench_daemon_start_with(&d, &opts);
    wasock_err e = started == 0 ? bench_client_open(&d, &c) : WASOCK_E_DAEMON;

    for (size_t i = 0; i < sizeof(directions) / sizeof(directions[0]); i++) {
        bench_group *g = bench_group_open(directions[i].key, directions[i].title, "MB/s",
                                          BENCH_HIGHER_IS_BETTER);
        bench_group_note(g,
                         "policy rule allow: { data_path: handoff }: the client gets the "
                         "connected socket itself; %lu MiB per transfer in %u KiB "
                         "reads/writes",
                         BENCH_PICK(TCP_BULK_BYTES_FULL, TCP_BULK_BYTES_QUICK) >> 20,
                         TCP_BULK_CHUNK / 1024);
        bench_series *direct = bench_series_add(g, "direct", "loopback TCP");
        bench_series *handoff = bench_series_add(g, "wasockd", "handoff (the socket itself)");
        bench_compare(g, handoff, direct, (bench_target){BENCH_TARGET_AT_LEAST, 0.97, ">= 0.97x"});
        if (listen_fd < 0) {
            bench_group_error(g, "plain listener: %s", strerror(-listen_fd));
            continue;
        }
        if (started < 0 || e != WASOCK_OK) {
            bench_group_error(g, "daemon with the handoff policy: %s",
                              started < 0 ? strerror(-started) : wasock_err_name(e));
            continue;
        }
        for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
            bool upload = directions[i].upload;
            if (!bulk_sample(g, direct, PATH_DIRECT, c, listen_fd, port, upload) ||
                !bulk_sample(g, handoff, PATH_WASOCKD, c, listen_fd, port, upload)) {
                break;
            }
        }
    }
    wasock_client_close(c);
    if (started == 0 && bench_daemon_stop(&d) < 0) {
        fprintf(stderr, "wasock-bench: the handoff daemon did not stop cleanly\n");
    }
    if (listen_fd >= 0) {
        close(listen_fd);
    }
}

/* ------------------------------------------------------------------ exchange */

/* Echoes TCP_EXCHANGE_BYTES messages on the peer's blocking socket until
 * EOF or an error. */
static void *exchange_echo_thread(void *arg) {
    int fd = *(int *)arg;
    char buf[TCP_EXCHANGE_BYTES];
    int64_t deadline = bench_now_ns() + (int64_t)BENCH_ECHO_LIFETIME_MS * 1000000;
    while (bench_read_exact(fd, buf, sizeof(buf), deadline) == 0 &&
           bench_write_all(fd, buf, sizeof(buf), deadline) == 0) {
    }
    return NULL;
}

/* One sample of request/response exchanges over p: microseconds per
 * exchange, or -errno. */
static double exchange_us(path_conn *p) {
    pthread_t t;
    char buf[TCP_EXCHANGE_BYTES];
    memset(buf, 'q', sizeof(buf));
    if (pthread_create(&t, NULL, exchange_echo_thread, &p->peer) != 0) {
        return -EAGAIN;
    }
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    int64_t deadline = start + (int64_t)BENCH_WAIT_MS * 1000000;
    unsigned long done = 0;
    int r = 0;
    while (done < TCP_MAX_EXCHANGES) {
        r = bench_write_all(p->client_out, buf, sizeof(buf), deadline);
        if (r == 0) {
            r = bench_read_exact(p->client_in, buf, sizeof(buf), deadline);
        }
        if (r < 0) {
            break;
        }
        done++;
        if (done % BENCH_CLOCK_EVERY == 0 && bench_now_ns() >= stop) {
            break;
        }
    }
    int64_t end = bench_now_ns();
    shutdown(p->peer, SHUT_RDWR); /* ends the echo thread */
    pthread_join(t, NULL);
    if (r < 0) {
        return r;
    }
    return (double)(end - start) / 1e3 / (double)done;
}

void bench_row_exchange(bench_daemon *d) {
    bench_group *g = bench_group_open("exchange", "small request/response exchanges",
                                      "us per exchange", BENCH_LOWER_IS_BETTER);
    bench_group_note(g, "%d-byte request, %d-byte echo, one at a time, over one connection",
                     TCP_EXCHANGE_BYTES, TCP_EXCHANGE_BYTES);
    bench_series *relay = bench_series_add(g, "wasockd", "through the splice relay");
    bench_series *direct = bench_series_add(g, "direct", "loopback TCP");
    bench_compare(g, relay, direct, (bench_target){BENCH_TARGET_AT_MOST, 2.2, "<= 2.2x"});

    wasock_client *c = NULL;
    uint16_t port;
    char why[BENCH_TEXT_MAX];
    int listen_fd = bench_listen_loopback(&port, TCP_PLAIN_BACKLOG);
    if (listen_fd < 0) {
        bench_group_error(g, "plain listener: %s", strerror(-listen_fd));
        return;
    }
    wasock_err e = bench_client_open(d, &c);
    if (e != WASOCK_OK) {
        bench_group_error(g, "client: %s", wasock_err_name(e));
        close(listen_fd);
        return;
    }
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        static const path_kind kinds[] = {PATH_WASOCKD, PATH_DIRECT};
        bench_series *series[] = {relay, direct};
        bool failed = false;
        for (size_t k = 0; k < 2 && !failed; k++) {
            path_conn p;
            if (path_open(kinds[k], c, listen_fd, port, &p, why, sizeof(why)) < 0) {
                bench_group_error(g, "%s", why);
                failed = true;
                break;
            }
            double us = exchange_us(&p);
            path_close(&p);
            if (us < 0) {
                bench_group_error(g, "%s exchange: %s", series[k] == relay ? "wasockd" : "direct",
                                  strerror((int)-us));
                failed = true;
                break;
            }
            bench_series_sample(series[k], us);
        }
        if (failed) {
            break;
        }
    }
    wasock_client_close(c);
    close(listen_fd);
}
