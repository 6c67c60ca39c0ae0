/* bench-udp.c — wasock-bench row for UDP: datagrams per second that a plain
 * receiver on 127.0.0.1 gets from one sender through the daemon (0.2 shape:
 * bound socket, stream with the receiver as remote, check_send and send in
 * batches) against a plain socket sending the same datagrams with
 * sendmmsg, for 64- and 1400-byte payloads.
 *
 * The receiver is a thread of this process. Trusts libwasock, the daemon it
 * started and the local kernel; every loop stops at a count or a time
 * budget, every wait has a deadline.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench-rows.h"

/* Most datagrams one sample sends, whatever the time budget. */
#define UDP_COUNT_FULL  200000ul
#define UDP_COUNT_QUICK 50000ul

/* Datagrams per sendmmsg/recvmmsg call: the daemon's batch per system call
 * (one check_send permit), so both paths batch alike. */
#define UDP_BATCH WASOCK_UDP_SEND_PERMITS

/* The payload sizes measured: a small message and one that nearly fills an
 * Ethernet frame. */
#define UDP_SMALL_BYTES 64
#define UDP_LARGE_BYTES 1400

/* Receive buffer asked for the receiver: a few milliseconds of traffic at
 * loopback rates, so a scheduling pause of the receiver drops little. */
#define UDP_RCVBUF_BYTES (8 << 20)

/* How long the receiver's blocking receive waits before it re-checks
 * whether it was told to stop. */
#define UDP_RECEIVER_RECHECK_MS 10

/* A sample ends when the receiver got nothing for this long after the
 * sender finished: the daemon may still hold datagrams it accepted. */
#define UDP_QUIET_MS 50

/* ------------------------------------------------------------------ receiver */

/* A plain UDP socket on 127.0.0.1 and the thread counting what it gets. */
typedef struct udp_receiver {
    int fd;
    uint16_t port;
    pthread_t thread;
    atomic_ulong received; /* datagrams since the last reset */
    atomic_llong last_ns;  /* bench_now_ns of the latest receipt */
    atomic_bool stop;
    bool running;
} udp_receiver;

static void *udp_receiver_thread(void *arg) {
    udp_receiver *r = arg;
    static uint8_t bufs[UDP_BATCH][UDP_LARGE_BYTES + 1];
    struct iovec iov[UDP_BATCH];
    struct mmsghdr msgs[UDP_BATCH];
    for (int i = 0; i < UDP_BATCH; i++) {
        iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof(bufs[i])};
    }
    while (!atomic_load(&r->stop)) {
        memset(msgs, 0, sizeof(msgs));
        for (int i = 0; i < UDP_BATCH; i++) {
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(r->fd, msgs, UDP_BATCH, MSG_WAITFORONE, NULL);
        if (n > 0) {
            atomic_store(&r->last_ns, (long long)bench_now_ns());
            atomic_fetch_add(&r->received, (unsigned long)n);
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            break;
        }
    }
    return NULL;
}

/* Opens the receiver socket and starts its thread. 0 or -errno; on failure
 * nothing is left open. */
static int udp_receiver_start(udp_receiver *r) {
    memset(r, 0, sizeof(*r));
    atomic_init(&r->received, 0);
    atomic_init(&r->last_ns, 0);
    atomic_init(&r->stop, false);
    r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0) {
        return -errno;
    }
    int size = UDP_RCVBUF_BYTES;
    /* FORCE passes rmem_max when privileged; otherwise the plain option
     * gives what the system allows. */
    if (setsockopt(r->fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0) {
        setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = UDP_RECEIVER_RECHECK_MS * 1000};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    if (setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        bind(r->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(r->fd, (struct sockaddr *)&sin, &len) < 0) {
        int err = -errno;
        close(r->fd);
        return err;
    }
    r->port = ntohs(sin.sin_port);
    if (pthread_create(&r->thread, NULL, udp_receiver_thread, r) != 0) {
        close(r->fd);
        return -EAGAIN;
    }
    r->running = true;
    return 0;
}

static void udp_receiver_stop(udp_receiver *r) {
    if (!r->running) {
        return;
    }
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
    close(r->fd);
    r->running = false;
}

/* Waits until the receiver got `expected` datagrams or nothing for
 * UDP_QUIET_MS, then returns the rate since start_ns: received datagrams
 * per second up to the latest receipt (0 when none arrived). */
static double udp_receiver_rate(udp_receiver *r, int64_t start_ns, unsigned long expected,
                                unsigned long *received) {
    int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
    unsigned long seen = atomic_load(&r->received);
    int64_t seen_at = bench_now_ns();
    while (seen < expected && bench_now_ns() < deadline) {
        bench_sleep_ms(BENCH_RETRY_MS);
        unsigned long now_seen = atomic_load(&r->received);
        if (now_seen != seen) {
            seen = now_seen;
            seen_at = bench_now_ns();
        } else if (bench_now_ns() - seen_at > (int64_t)UDP_QUIET_MS * 1000000) {
            break;
        }
    }
    *received = seen;
    int64_t last = (int64_t)atomic_load(&r->last_ns);
    if (seen == 0 || last <= start_ns) {
        return 0;
    }
    return (double)seen / ((double)(last - start_ns) / 1e9);
}

/* Starts a sample: forgets earlier receipts. */
static void udp_receiver_reset(udp_receiver *r) {
    atomic_store(&r->received, 0);
    atomic_store(&r->last_ns, 0);
}

/* ------------------------------------------------------------------ senders */

static unsigned long udp_sample_count(void) {
    return BENCH_PICK(UDP_COUNT_FULL, UDP_COUNT_QUICK);
}

/* One sample through the daemon: sends up to the sample count of len-byte
 * datagrams on u (associated with the receiver) within the time budget.
 * Receiver datagrams/s, or -1 with why set. *sent_out: datagrams sent. */
static double wasockd_udp_rate(udp_receiver *r, wasock_udp *u, const uint8_t *payload, size_t len,
                               unsigned long *sent_out, char *why, size_t why_len) {
    wasock_datagram d[UDP_BATCH];
    for (int i = 0; i < UDP_BATCH; i++) {
        d[i] = (wasock_datagram){.data = payload, .len = len, .has_remote = false};
    }
    unsigned long total = udp_sample_count(), sent = 0;
    udp_receiver_reset(r);
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    while (sent < total && bench_now_ns() < stop) {
        uint64_t permits = 0, done = 0;
        wasock_err e = wasock_udp_check_send(u, &permits);
        if (e != WASOCK_OK) {
            snprintf(why, why_len, "wasock_udp_check_send: %s", wasock_err_name(e));
            return -1;
        }
        if (permits == 0) {
            /* The channel is full: wait (bounded) until it drains. */
            struct pollfd p = {.fd = wasock_udp_fd(u), .events = POLLOUT};
            if (poll(&p, 1, BENCH_WAIT_MS) == 0) {
                snprintf(why, why_len, "no send permit within %d ms", BENCH_WAIT_MS);
                return -1;
            }
            continue;
        }
        size_t n = permits < UDP_BATCH ? (size_t)permits : UDP_BATCH;
        if (n > total - sent) {
            n = total - sent;
        }
        e = wasock_udp_send(u, d, n, &done);
        if (e != WASOCK_OK) {
            snprintf(why, why_len, "wasock_udp_send: %s", wasock_err_name(e));
            return -1;
        }
        sent += done;
    }
    unsigned long received;
    *sent_out = sent;
    return udp_receiver_rate(r, start, sent, &received);
}

/* One sample of a plain connected UDP socket sending with sendmmsg: receiver
 * datagrams/s, or a negative errno. */
static double direct_udp_rate(udp_receiver *r, int fd, const uint8_t *payload, size_t len,
                              unsigned long *sent_out) {
    struct iovec iov = {.iov_base = (void *)payload, .iov_len = len};
    struct mmsghdr msgs[UDP_BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < UDP_BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long total = udp_sample_count(), sent = 0;
    udp_receiver_reset(r);
    int64_t start = bench_now_ns();
    int64_t stop = start + (int64_t)bench_loop_ms() * 1000000;
    while (sent < total && bench_now_ns() < stop) {
        unsigned n = total - sent < UDP_BATCH ? (unsigned)(total - sent) : UDP_BATCH;
        int done = sendmmsg(fd, msgs, n, 0);
        if (done < 0) {
            if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) {
                continue;
            }
            return -errno;
        }
        sent += (unsigned long)done;
    }
    unsigned long received;
    *sent_out = sent;
    return udp_receiver_rate(r, start, sent, &received);
}

/* A plain UDP socket connected to 127.0.0.1:port; the fd is the caller's,
 * or -errno. */
static int direct_udp_socket(uint16_t port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    struct sockaddr_in sin = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* A daemon UDP socket bound to 127.0.0.1 (port chosen by the kernel) with
 * a stream associated with 127.0.0.1:port (0.2 shape). *out is the
 * caller's (wasock_udp_drop). */
static wasock_err wasockd_udp_socket(wasock_client *c, uint16_t port, wasock_udp **out) {
    wasock_addr local = {.ip = {.family = WASOCK_IPV4, .addr.v4 = {127, 0, 0, 1}}, .port = 0};
    wasock_addr remote = local;
    remote.port = port;
    wasock_udp *u;
    wasock_err e = wasock_udp_create(c, WASOCK_IPV4, &u);
    if (e != WASOCK_OK) {
        return e;
    }
    e = wasock_udp_start_bind(u, &local);
    if (e == WASOCK_OK) {
        int64_t deadline = bench_now_ns() + (int64_t)BENCH_WAIT_MS * 1000000;
        while (!wasock_udp_ready(u) && bench_now_ns() < deadline && e == WASOCK_OK) {
            e = wasock_client_wait(c, BENCH_WAIT_MS);
        }
        if (e == WASOCK_OK) {
            e = wasock_udp_finish_bind(u);
        }
    }
    if (e == WASOCK_OK) {
        e = wasock_udp_stream(u, &remote);
    }
    if (e != WASOCK_OK) {
        wasock_udp_drop(u);
        return e;
    }
    *out = u;
    return WASOCK_OK;
}

/* ------------------------------------------------------------------ row */

/* Measures one payload size: its own group, both series, every repetition. */
static void udp_measure_size(wasock_client *c, udp_receiver *r, size_t len) {
    char key[32], title[BENCH_TEXT_MAX];
    snprintf(key, sizeof(key), "udp_%zu", len);
    snprintf(title, sizeof(title), "UDP datagrams of %zu bytes to a plain loopback receiver", len);
    bench_group *g = bench_group_open(key, title, "datagrams/s", BENCH_HIGHER_IS_BETTER);
    bench_group_note(g,
                     "counted at the receiver, at most %lu per sample; wasockd: check_send + "
                     "send in batches of %d on a bound socket streamed to the receiver; "
                     "direct: sendmmsg of %d on a connected socket",
                     udp_sample_count(), UDP_BATCH, UDP_BATCH);
    bench_series *wasockd = bench_series_add(g, "wasockd", "0.2 check_send+send");
    bench_series *direct = bench_series_add(g, "direct", "sendmmsg");
    bench_compare(g, wasockd, direct, (bench_target){BENCH_TARGET_AT_LEAST, 0.5, ">= 0.5x"});

    static uint8_t payload[UDP_LARGE_BYTES];
    memset(payload, 'u', sizeof(payload));
    char why[BENCH_TEXT_MAX];
    wasock_udp *u = NULL;
    int fd = direct_udp_socket(r->port);
    if (fd < 0) {
        bench_group_error(g, "plain sender: %s", strerror(-fd));
        return;
    }
    wasock_err e = wasockd_udp_socket(c, r->port, &u);
    if (e != WASOCK_OK) {
        bench_group_error(g, "daemon socket: %s", wasock_err_name(e));
        close(fd);
        return;
    }
    unsigned long wasockd_sent = 0, direct_sent = 0;
    for (unsigned rep = 0; rep < bench_cfg.reps; rep++) {
        double rate = wasockd_udp_rate(r, u, payload, len, &wasockd_sent, why, sizeof(why));
        if (rate < 0) {
            bench_group_error(g, "wasockd: %s", why);
            break;
        }
        bench_series_sample(wasockd, rate);
        rate = direct_udp_rate(r, fd, payload, len, &direct_sent);
        if (rate < 0) {
            bench_group_error(g, "direct: %s", strerror((int)-rate));
            break;
        }
        bench_series_sample(direct, rate);
        bench_progress("udp %zu: sent wasockd %lu, direct %lu", len, wasockd_sent, direct_sent);
    }
    wasock_udp_drop(u);
    close(fd);
}

void bench_row_udp(bench_daemon *d) {
    udp_receiver r;
    wasock_client *c = NULL;
    int err = udp_receiver_start(&r);
    wasock_err e = err == 0 ? bench_client_open(d, &c) : WASOCK_OK;
    if (err < 0 || e != WASOCK_OK) {
        bench_group *g = bench_group_open("udp", "UDP datagrams to a plain loopback receiver",
                                          "datagrams/s", BENCH_HIGHER_IS_BETTER);
        if (err < 0) {
            bench_group_error(g, "plain receiver: %s", strerror(-err));
        } else {
            bench_group_error(g, "client: %s", wasock_err_name(e));
        }
        udp_receiver_stop(&r);
        return;
    }
    udp_measure_size(c, &r, UDP_SMALL_BYTES);
    udp_measure_size(c, &r, UDP_LARGE_BYTES);
    wasock_client_close(c);
    udp_receiver_stop(&r);
}
