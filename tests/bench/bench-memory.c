/* bench-memory.c — wasock-bench rows for the daemon's memory: resident set
 * (VmRSS) per open relayed TCP connection and per idle session.
 *
 * Every repetition starts a fresh daemon, reads its RSS once the sessions
 * are open (or, for sessions, right after start), opens the connections or
 * sessions, lets the daemon settle, and reads the RSS again; the difference
 * divided by the count is the sample. Kernel memory (socket buffers, pipe
 * buffers, file tables) is not part of RSS and is not counted.
 *
 * Trusts the daemon it starts and /proc; peers are plain sockets on
 * 127.0.0.1 held open by a thread of this process.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench-rows.h"

/* Connection counts of the row; --quick measures the first only. */
static const unsigned memory_connection_counts[] = {1000, 10000};
#define MEMORY_CONNECTION_SIZES                                                                    \
    (sizeof(memory_connection_counts) / sizeof(memory_connection_counts[0]))

/* Idle sessions opened for the session figure. The daemon's default cap of
 * sessions per uid (256) is raised to this with --max-sessions-per-uid, as
 * a host whose runtimes all run as one user would. */
#define MEMORY_SESSIONS     1000
#define MEMORY_STRINGIFY(x) #x
#define MEMORY_TEXT(x)      MEMORY_STRINGIFY(x)

/* Connections opened per session: below the daemon's per-session resource
 * cap (4096), so larger counts are spread over several sessions. */
#define MEMORY_CONNECTIONS_PER_SESSION 2500

/* Descriptors each relayed connection costs this process: two stream ends
 * and the peer's accepted socket. The daemon needs about as many (socket
 * and two pipe ends). */
#define MEMORY_FDS_PER_CONNECTION 3

/* Descriptors kept free for everything else (sessions, listeners, stdio). */
#define MEMORY_FD_RESERVE 2048

/* Pause before reading RSS, so that work still queued in the daemon (the
 * last replies, relay start-up) is done and counted. */
#define MEMORY_SETTLE_MS 200

/* Backlog of the peer's listener: the kernel's usual maximum. */
#define MEMORY_PEER_BACKLOG 4096

/* ------------------------------------------------------------------ peer */

/* A plain listener whose thread accepts and holds up to `cap` connections. */
typedef struct holder {
    int listen_fd;
    uint16_t port;
    int *fds;
    unsigned cap;
    atomic_uint held;
    pthread_t thread;
    bool running;
} holder;

static void *holder_thread(void *arg) {
    holder *h = arg;
    while (atomic_load(&h->held) < h->cap) {
        int fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            break; /* shutdown() of the listener, or out of descriptors */
        }
        h->fds[atomic_load(&h->held)] = fd;
        atomic_fetch_add(&h->held, 1);
    }
    return NULL;
}

static int holder_start(holder *h, unsigned cap) {
    memset(h, 0, sizeof(*h));
    atomic_init(&h->held, 0);
    h->fds = calloc(cap, sizeof(int));
    if (h->fds == NULL) {
        return -ENOMEM;
    }
    h->cap = cap;
    h->listen_fd = bench_listen_loopback(&h->port, MEMORY_PEER_BACKLOG);
    if (h->listen_fd < 0) {
        int r = h->listen_fd;
        free(h->fds);
        return r;
    }
    if (pthread_create(&h->thread, NULL, holder_thread, h) != 0) {
        close(h->listen_fd);
        free(h->fds);
        return -EAGAIN;
    }
    h->running = true;
    return 0;
}

/* Waits (bounded) until `count` connections are held. */
static bool holder_wait(holder *h, unsigned count) {
    int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
    while (atomic_load(&h->held) < count) {
        if (bench_now_ns() >= deadline) {
            return false;
        }
        bench_sleep_ms(BENCH_RETRY_MS);
    }
    return true;
}

/* Resets every held connection (no TIME_WAIT left behind) and stops. */
static void holder_stop(holder *h) {
    if (!h->running) {
        return;
    }
    shutdown(h->listen_fd, SHUT_RDWR);
    pthread_join(h->thread, NULL);
    close(h->listen_fd);
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    unsigned held = atomic_load(&h->held);
    for (unsigned i = 0; i < held; i++) {
        setsockopt(h->fds[i], SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
        close(h->fds[i]);
    }
    free(h->fds);
    h->running = false;
}

/* ------------------------------------------------------------------ connections */

/* One sample: bytes of daemon RSS per relayed connection with `count`
 * connections open, or -1 with why set. */
static double rss_per_connection(unsigned count, char *why, size_t why_len) {
    unsigned nsessions =
        (count + MEMORY_CONNECTIONS_PER_SESSION - 1) / MEMORY_CONNECTIONS_PER_SESSION;
    wasock_client **clients = calloc(nsessions, sizeof(*clients));
    wasock_tcp **sockets = calloc(count, sizeof(*sockets));
    bench_daemon d = {0};
    holder h = {0};
    double result = -1;
    unsigned opened = 0;

    if (clients == NULL || sockets == NULL) {
        snprintf(why, why_len, "out of memory");
        goto out;
    }
    int r = holder_start(&h, count);
    if (r < 0) {
        snprintf(why, why_len, "peer listener: %s", strerror(-r));
        goto out;
    }
    r = bench_daemon_start(&d);
    if (r < 0) {
        snprintf(why, why_len, "daemon start: %s", strerror(-r));
        goto out;
    }
    for (unsigned i = 0; i < nsessions; i++) {
        wasock_err e = bench_client_open(&d, &clients[i]);
        if (e != WASOCK_OK) {
            snprintf(why, why_len, "session %u: %s", i + 1, wasock_err_name(e));
            goto out;
        }
    }
    bench_sleep_ms(MEMORY_SETTLE_MS);
    long long before = bench_daemon_rss(&d);
    for (; opened < count; opened++) {
        wasock_client *c = clients[opened / MEMORY_CONNECTIONS_PER_SESSION];
        wasock_err e = wasock_tcp_create(c, WASOCK_IPV4, &sockets[opened]);
        if (e == WASOCK_OK) {
            e = bench_tcp_connect(c, sockets[opened], h.port, NULL, NULL);
        }
        if (e != WASOCK_OK) {
            snprintf(why, why_len, "connection %u: %s", opened + 1, wasock_err_name(e));
            opened++; /* the socket exists and is dropped below */
            goto out;
        }
    }
    if (!holder_wait(&h, count)) {
        snprintf(why, why_len, "the peer accepted %u of %u connections", atomic_load(&h.held),
                 count);
        goto out;
    }
    bench_sleep_ms(MEMORY_SETTLE_MS);
    long long after = bench_daemon_rss(&d);
    if (before < 0 || after < 0) {
        snprintf(why, why_len, "cannot read the daemon's VmRSS");
        goto out;
    }
    result = (double)(after - before) / count;
out:
    holder_stop(&h);
    for (unsigned i = 0; sockets != NULL && i < opened; i++) {
        wasock_tcp_drop(sockets[i]);
    }
    for (unsigned i = 0; clients != NULL && i < nsessions; i++) {
        wasock_client_close(clients[i]);
    }
    if (d.pid > 0 && bench_daemon_stop(&d) < 0 && result >= 0) {
        snprintf(why, why_len, "the daemon did not stop cleanly");
        result = -1;
    }
    free(sockets);
    free(clients);
    return result;
}

/* ------------------------------------------------------------------ sessions */

/* One sample: bytes of daemon RSS per idle session with up to `count`
 * sessions; *opened says how many the daemon admitted (it caps sessions
 * per uid), *refusal why it stopped admitting. -1 with why on failure. */
static double rss_per_session(unsigned count, unsigned *opened, wasock_err *refusal, char *why,
                              size_t why_len) {
    wasock_client **clients = calloc(count, sizeof(*clients));
    bench_daemon d = {0};
    double result = -1;

    *opened = 0;
    *refusal = WASOCK_OK;
    if (clients == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    bench_daemon_opts opts = {
        .extra_args = {"--max-sessions-per-uid", MEMORY_TEXT(MEMORY_SESSIONS), NULL}};
    int r = bench_daemon_start_with(&d, &opts);
    if (r < 0) {
        snprintf(why, why_len, "daemon start: %s", strerror(-r));
        free(clients);
        return -1;
    }
    bench_sleep_ms(MEMORY_SETTLE_MS);
    long long before = bench_daemon_rss(&d);
    for (; *opened < count; (*opened)++) {
        wasock_err e = bench_client_open(&d, &clients[*opened]);
        if (e != WASOCK_OK) {
            *refusal = e;
            break;
        }
    }
    bench_sleep_ms(MEMORY_SETTLE_MS);
    long long after = bench_daemon_rss(&d);
    if (*opened == 0) {
        snprintf(why, why_len, "the daemon admitted no session: %s", wasock_err_name(*refusal));
    } else if (before < 0 || after < 0) {
        snprintf(why, why_len, "cannot read the daemon's VmRSS");
    } else {
        result = (double)(after - before) / *opened;
    }
    for (unsigned i = 0; i < *opened; i++) {
        wasock_client_close(clients[i]);
    }
    if (bench_daemon_stop(&d) < 0 && result >= 0) {
        snprintf(why, why_len, "the daemon did not stop cleanly");
        result = -1;
    }
    free(clients);
    return result;
}

/* ------------------------------------------------------------------ row */

void bench_row_memory(bench_daemon *shared) {
    (void)shared; /* every repetition uses a fresh daemon */
    char why[BENCH_TEXT_MAX];
    bench_group *g =
        bench_group_open("memory_connection", "daemon memory per relayed TCP connection", "bytes",
                         BENCH_LOWER_IS_BETTER);
    bench_group_note(g, "VmRSS of a fresh daemon with N connections open (peers hold them "
                        "idle) minus VmRSS before; kernel socket and pipe buffers are not in RSS");
    bench_group_note(g,
                     "connections spread over sessions of at most %d (the daemon caps "
                     "resources per session)",
                     MEMORY_CONNECTIONS_PER_SESSION);
    size_t sizes = BENCH_PICK(MEMORY_CONNECTION_SIZES, 1);
    bench_series *series[MEMORY_CONNECTION_SIZES] = {0};
    unsigned counts[MEMORY_CONNECTION_SIZES] = {0};

    for (size_t i = 0; i < sizes; i++) {
        unsigned want = memory_connection_counts[i];
        long need = (long)want * MEMORY_FDS_PER_CONNECTION + MEMORY_FD_RESERVE;
        long limit = bench_raise_fd_limit(need);
        counts[i] = want;
        if (limit < need) {
            long room = limit > MEMORY_FD_RESERVE ? limit - MEMORY_FD_RESERVE : 0;
            counts[i] = (unsigned)(room / MEMORY_FDS_PER_CONNECTION);
            bench_group_note(g,
                             "%u connections capped at %u: RLIMIT_NOFILE is %ld and cannot "
                             "be raised to %ld",
                             want, counts[i], limit, need);
        }
        char key[32], label[64];
        snprintf(key, sizeof(key), "conns-%u", want);
        snprintf(label, sizeof(label), "%u relayed connections open", counts[i]);
        series[i] = bench_series_add(g, key, label);
        bench_compare(g, series[i], NULL,
                      (bench_target){BENCH_TARGET_AT_MOST, 4096, "<= 4,096 bytes"});
    }
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        bool failed = false;
        for (size_t i = 0; i < sizes && !failed; i++) {
            if (counts[i] == 0) {
                continue;
            }
            bench_progress("memory: %u connections, repetition %u", counts[i], rep + 1);
            double per = rss_per_connection(counts[i], why, sizeof(why));
            if (per < 0) {
                bench_group_error(g, "%u connections: %s", counts[i], why);
                failed = true;
            } else {
                bench_series_sample(series[i], per);
            }
        }
        if (failed) {
            break;
        }
    }

    bench_group *gs = bench_group_open("memory_session", "daemon memory per idle session", "bytes",
                                       BENCH_LOWER_IS_BETTER);
    bench_group_note(gs, "VmRSS of a fresh daemon with N admitted sessions (HELLO done, no "
                         "sockets) minus VmRSS before; kernel buffers are not in RSS");
    bench_group_note(gs,
                     "wasockd runs with --max-sessions-per-uid %d (its default cap is 256 "
                     "sessions per uid)",
                     MEMORY_SESSIONS);
    char label[96];
    snprintf(label, sizeof(label), "idle sessions (up to %d)", MEMORY_SESSIONS);
    bench_series *sessions = bench_series_add(gs, "sessions", label);
    bench_compare(gs, sessions, NULL,
                  (bench_target){BENCH_TARGET_AT_MOST, 16384, "<= 16,384 bytes"});
    unsigned admitted_min = MEMORY_SESSIONS;
    wasock_err refusal = WASOCK_OK;
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        unsigned opened;
        wasock_err e;
        bench_progress("memory: %d sessions, repetition %u", MEMORY_SESSIONS, rep + 1);
        double per = rss_per_session(MEMORY_SESSIONS, &opened, &e, why, sizeof(why));
        if (per < 0) {
            bench_group_error(gs, "%s", why);
            break;
        }
        if (opened < admitted_min) {
            admitted_min = opened;
            refusal = e;
        }
        bench_series_sample(sessions, per);
    }
    if (admitted_min < MEMORY_SESSIONS) {
        bench_group_note(gs,
                         "capped: the daemon admitted only %u sessions from this uid "
                         "(session %u failed: %s; wasockd caps sessions per uid), so the "
                         "figure is per admitted session",
                         admitted_min, admitted_min + 1, wasock_err_name(refusal));
    }
}
