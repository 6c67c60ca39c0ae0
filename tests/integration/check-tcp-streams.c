/* check-tcp-streams.c — integration tests of the TCP data path through the
 * real wasockd: stream descriptors, EOF, shutdown in each direction with its
 * WASI meaning, peer reset as a stream error, bytes never lost on shutdown or
 * drop, 16 MiB transfers checked byte by byte in both directions, and the
 * 0.3 send/receive descriptors.
 *
 * Trusts: the harness (harness.h) and the local kernel. Never writes to a
 * stream whose reader may be gone (that would raise SIGPIPE in the test).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "proto.h"

/* The bulk transfer size the foundation issue asks for. */
#define BULK_BYTES (16u * 1024 * 1024)

/* Bulk transfers may take a while under sanitizers on a shared 2-core
 * machine; still bounded. */
#define BULK_TIMEOUT_MS (12 * ITEST_WAIT_MS)

/* Most bytes written ahead of a shutdown or drop while the peer does not
 * read: enough to fill the pipe and the socket buffers a little, small
 * enough to stay quick. */
#define PENDING_BYTES_MAX (4u * 1024 * 1024)

/* More than every kernel buffer on the path together (pipes, both
 * sockets' buffers with autotuning) can hold: a writer that gets this far
 * without being pushed back means something buffers without bound. */
#define BACKPRESSURE_CAP (48u * 1024 * 1024)

/* No write progress for this long counts as "pushed back" (a heuristic
 * that can only make the back-pressure test more lenient, never fail it). */
#define STALL_MS 300

/* A connection between a libwasock socket and a plain loopback peer. */
typedef struct pair {
    wasock_client *c;
    itest_conn w;  /* the daemon's side, as the runtime sees it */
    int peer;      /* plain socket */
    int listen_fd; /* plain listener (connect side) or -1 */
    wasock_tcp *listener;
} pair;

/* Connects a libwasock socket to a plain listener (accept_side false) or a
 * plain socket to a libwasock listener (accept_side true). */
static void pair_open(pair *p, int wasi, wasock_family fam, bool accept_side) {
    memset(p, 0, sizeof *p);
    p->listen_fd = -1;
    p->c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    if (accept_side) {
        p->listener = itest_listener(p->c, fam, &port);
        p->peer = itest_plain_connect(fam, port);
        itest_accept(p->c, p->listener, &p->w);
    } else {
        p->listen_fd = itest_plain_listen(fam, &port);
        itest_connect_to(p->c, fam, port, &p->w);
        p->peer = itest_plain_accept(p->listen_fd, ITEST_WAIT_MS);
        ck_assert_int_ge(p->peer, 0);
    }
}

static void pair_close(pair *p) {
    itest_conn_close(&p->w);
    if (p->peer >= 0) {
        close(p->peer);
    }
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
    }
    wasock_tcp_drop(p->listener);
    wasock_client_close(p->c);
}

/* A read that must return EOF right now, without waiting. */
static void expect_immediate_eof(int fd, const char *what) {
    char b[16];
    ssize_t n = read(fd, b, sizeof b);
    ck_assert_msg(n == 0, "%s: read returned %zd (%s), want EOF at once", what, n,
                  n < 0 ? strerror(errno) : "data");
}

/* PENDING_BYTES_MAX bytes of the pattern with `seed`, computed once per
 * test (the caller frees). Comparing and writing whole buffers keeps the
 * per-byte work out of the loops, which matters under sanitizers. */
static uint8_t *pattern_buffer(uint32_t seed) {
    uint8_t *p = malloc(PENDING_BYTES_MAX);
    ck_assert(p != NULL);
    for (size_t i = 0; i < PENDING_BYTES_MAX; i++) {
        p[i] = itest_pattern_byte(seed, i);
    }
    return p;
}

/* Writes as many pattern bytes as the descriptor takes without blocking
 * (up to PENDING_BYTES_MAX) and returns the count. */
static size_t write_until_full(int fd, const uint8_t *pattern) {
    size_t total = 0;
    while (total < PENDING_BYTES_MAX) {
        ssize_t n = write(fd, pattern + total, PENDING_BYTES_MAX - total);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        ck_assert_msg(n > 0, "write: %s", n < 0 ? strerror(errno) : "0");
        total += (size_t)n;
    }
    return total;
}

/* Reads from fd until EOF, checking the bytes against the pattern; returns
 * the byte count. */
static size_t read_pattern_to_eof(int fd, const uint8_t *pattern, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    static uint8_t chunk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n == 0) {
            return total;
        }
        if (n < 0) {
            ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR,
                          "read after %zu bytes: %s", total, strerror(errno));
            int64_t left = deadline - itest_now_ms();
            ck_assert_msg(left > 0, "no EOF after %zu bytes", total);
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, (int)left);
            continue;
        }
        ck_assert_msg(total + (size_t)n <= PENDING_BYTES_MAX, "more bytes than were written");
        ck_assert_msg(memcmp(chunk, pattern + total, (size_t)n) == 0,
                      "wrong bytes in the %zd read at offset %zu", n, total);
        total += (size_t)n;
    }
}

/* The protocol version this test's sessions speak: the highest both sides
 * know unless the run lowers what libwasock offers (WASOCK_PROTOCOL_MAX). */
static unsigned session_protocol_version(void) {
    const char *max = getenv("WASOCK_PROTOCOL_MAX");

    return max != NULL && *max != '\0' ? (unsigned)atoi(max) : PROTO_VERSION_MAX;
}

/* The kinds of relay stream (proto/PROTOCOL.md, section 8): the input is
 * always a pipe; the output is a pipe up to protocol version 2 and a Unix
 * stream socket from version 3 on, shut for reading so that a runtime
 * reading its output stream gets EOF rather than waiting forever. Options
 * still go to the daemon: the output stream is no handed-off socket,
 * whatever kind of descriptor it is. */
static void expect_relay_stream_kinds(pair *p) {
    struct stat st;

    ck_assert_int_eq(fstat(p->w.in, &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
    ck_assert_int_eq(fstat(p->w.out, &st), 0);
    if (session_protocol_version() >= 3) {
        int domain = -1, type = -1;
        socklen_t len = sizeof domain;
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_int_eq(getsockopt(p->w.out, SOL_SOCKET, SO_DOMAIN, &domain, &len), 0);
        len = sizeof type;
        ck_assert_int_eq(getsockopt(p->w.out, SOL_SOCKET, SO_TYPE, &type, &len), 0);
        ck_assert_int_eq(domain, AF_UNIX);
        ck_assert_int_eq(type, SOCK_STREAM);
        expect_immediate_eof(p->w.out, "reading the output stream");
    } else {
        ck_assert(S_ISFIFO(st.st_mode));
    }
    uint64_t idle = 0;
    ITEST_EXPECT(wasock_tcp_set_keep_alive_idle_time(p->w.s, 7000000000ull), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_idle_time(p->w.s, &idle), WASOCK_OK);
    ck_assert_uint_eq(idle, 7000000000ull);
}

/* ------------------------------------------------------------------ basics */

START_TEST(test_echo_both_sides) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    for (int accept_side = 0; accept_side <= 1; accept_side++) {
        pair p;
        pair_open(&p, wasi, fam, accept_side);
        for (int k = 0; k < 3; k++) {
            itest_send_expect(p.w.out, p.peer, "request from the guest");
            itest_send_expect(p.peer, p.w.in, "answer from the network");
        }
        /* Stream descriptors are non-blocking and close-on-exec. */
        int fds[2] = {p.w.in, p.w.out};
        for (int k = 0; k < 2; k++) {
            int fl = fcntl(fds[k], F_GETFL);
            int fdfl = fcntl(fds[k], F_GETFD);
            ck_assert_int_ge(fl, 0);
            ck_assert_msg(fl & O_NONBLOCK, "stream fd %d is blocking", fds[k]);
            ck_assert_msg(fdfl & FD_CLOEXEC, "stream fd %d is not close-on-exec", fds[k]);
        }
        /* Nothing is readable that was not sent. */
        char b;
        ck_assert_int_eq(read(p.w.in, &b, 1), -1);
        ck_assert_int_eq(errno, EAGAIN);
        expect_relay_stream_kinds(&p);
        pair_close(&p);
    }
}
END_TEST

/* The peer's FIN: the data before it, then EOF, reported again and again,
 * never an empty success; an orderly end is no stream error; the other
 * direction keeps working (half-close). */
START_TEST(test_peer_fin_gives_eof) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    for (int accept_side = 0; accept_side <= 1; accept_side++) {
        pair p;
        pair_open(&p, wasi, fam, accept_side);
        ck_assert_int_eq(itest_write_all(p.peer, "last words", 10, ITEST_WAIT_MS), 0);
        ck_assert_int_eq(shutdown(p.peer, SHUT_WR), 0);
        char got[32];
        ck_assert_int_eq(itest_read_exact(p.w.in, got, 10, ITEST_WAIT_MS), 10);
        ck_assert_int_eq(memcmp(got, "last words", 10), 0);
        ck_assert_int_eq(itest_read_to_eof(p.w.in, ITEST_WAIT_MS), 0);
        expect_immediate_eof(p.w.in, "after EOF");
        ck_assert_int_eq(wasock_client_dispatch(p.c), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_stream_error(p.w.s), WASOCK_OK);
        itest_send_expect(p.w.out, p.peer, "still talking");
        pair_close(&p);
    }
}
END_TEST

/* A reset by the peer ends the input stream with EOF, and the stream error
 * (sent before the EOF) says connection-reset. */
START_TEST(test_peer_reset_is_stream_error) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    for (int accept_side = 0; accept_side <= 1; accept_side++) {
        pair p;
        pair_open(&p, wasi, fam, accept_side);
        itest_send_expect(p.peer, p.w.in, "hello");
        itest_plain_reset(p.peer);
        p.peer = -1;
        ssize_t r = itest_read_to_eof(p.w.in, ITEST_WAIT_MS);
        ck_assert_msg(r == 0, "input after the peer's reset: %zd (%s)", r,
                      r < 0 ? strerror((int)-r) : "data");
        /* The event was sent before the EOF: one non-blocking dispatch
         * must find it. */
        ck_assert_int_eq(wasock_client_dispatch(p.c), WASOCK_OK);
        wasock_err first = wasock_tcp_stream_error(p.w.s);
        if (first != WASOCK_E_CONNECTION_RESET) {
            wasock_err later = itest_wait_stream_error(p.c, p.w.s, ITEST_WAIT_MS);
            ck_abort_msg("stream error after EOF: %s at once, %s after waiting; "
                         "want connection-reset, sent before the EOF",
                         wasock_err_name(first), wasock_err_name(later));
        }
        pair_close(&p);
    }
}
END_TEST

/* ------------------------------------------------------------------ 0.2 shutdown */

START_TEST(test_shutdown_send) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 2) {
        return; /* 0.3 ends its send stream by closing it: see the 0.3 tests */
    }
    pair p;
    pair_open(&p, wasi, fam, false);
    int out_before = p.w.out;
    ck_assert_int_eq(itest_write_all(p.w.out, "before", 6, ITEST_WAIT_MS), 0);
    ITEST_EXPECT(wasock_tcp_shutdown(p.w.s, WASOCK_SHUTDOWN_SEND), WASOCK_OK);
    char got[16];
    ck_assert_int_eq(itest_read_exact(p.peer, got, 6, ITEST_WAIT_MS), 6);
    ck_assert_int_eq(memcmp(got, "before", 6), 0);
    ck_assert_int_eq(itest_read_to_eof(p.peer, ITEST_WAIT_MS), 0);
    /* The descriptor keeps its number; writes now fail with EBADF. */
    ck_assert_int_ge(fcntl(out_before, F_GETFD), 0);
    if (p.w.out != p.w.in) {
        errno = 0;
        ck_assert_int_eq(write(p.w.out, "x", 1), -1);
        ck_assert_int_eq(errno, EBADF);
    }
    /* Receiving still works. */
    itest_send_expect(p.peer, p.w.in, "reply after FIN");
    pair_close(&p);
}
END_TEST

START_TEST(test_shutdown_receive_discards) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 2) {
        return;
    }
    pair p;
    pair_open(&p, wasi, fam, false);
    ck_assert_int_eq(itest_write_all(p.peer, "queued", 6, ITEST_WAIT_MS), 0);
    /* Wait until the bytes are readable on the input stream, unread. */
    struct pollfd pf = {.fd = p.w.in, .events = POLLIN};
    ck_assert_int_eq(poll(&pf, 1, ITEST_WAIT_MS), 1);
    ITEST_EXPECT(wasock_tcp_shutdown(p.w.s, WASOCK_SHUTDOWN_RECEIVE), WASOCK_OK);
    expect_immediate_eof(p.w.in, "after shutdown(receive) with queued input");
    /* More input from the peer is not seen either. */
    ck_assert_int_eq(itest_write_all(p.peer, "more", 4, ITEST_WAIT_MS), 0);
    expect_immediate_eof(p.w.in, "after more input");
    /* Sending still works. */
    itest_send_expect(p.w.out, p.peer, "still sending");
    pair_close(&p);
}
END_TEST

START_TEST(test_shutdown_both) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 2) {
        return;
    }
    pair p;
    pair_open(&p, wasi, fam, true);
    ck_assert_int_eq(itest_write_all(p.w.out, "goodbye", 7, ITEST_WAIT_MS), 0);
    ITEST_EXPECT(wasock_tcp_shutdown(p.w.s, WASOCK_SHUTDOWN_BOTH), WASOCK_OK);
    expect_immediate_eof(p.w.in, "after shutdown(both)");
    errno = 0;
    ck_assert_int_eq(write(p.w.out, "x", 1), -1);
    ck_assert_int_eq(errno, EBADF);
    char got[8];
    ck_assert_int_eq(itest_read_exact(p.peer, got, 7, ITEST_WAIT_MS), 7);
    ck_assert_int_eq(memcmp(got, "goodbye", 7), 0);
    ck_assert_int_eq(itest_read_to_eof(p.peer, ITEST_WAIT_MS), 0);
    /* Shutdown keeps the socket connected: addresses still answer. */
    wasock_addr a;
    ITEST_EXPECT(wasock_tcp_remote_address(p.w.s, &a), WASOCK_OK);
    pair_close(&p);
}
END_TEST

/* Bytes accepted by writes before shutdown(send) are all delivered, then
 * the FIN. */
START_TEST(test_shutdown_send_delivers_pending) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 2) {
        return;
    }
    pair p;
    pair_open(&p, wasi, fam, false);
    uint8_t *pattern = pattern_buffer(7);
    size_t written = write_until_full(p.w.out, pattern);
    ck_assert_uint_gt(written, 0);
    ITEST_EXPECT(wasock_tcp_shutdown(p.w.s, WASOCK_SHUTDOWN_SEND), WASOCK_OK);
    size_t got = read_pattern_to_eof(p.peer, pattern, BULK_TIMEOUT_MS);
    ck_assert_msg(got == written, "wrote %zu bytes before shutdown, peer got %zu", written, got);
    free(pattern);
    pair_close(&p);
}
END_TEST

/* Bytes accepted before a drop are delivered before the connection
 * closes (both shapes: 0.3 closes its output descriptor and drops). */
START_TEST(test_drop_delivers_pending) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    pair p;
    pair_open(&p, wasi, fam, true);
    uint8_t *pattern = pattern_buffer(11);
    size_t written = write_until_full(p.w.out, pattern);
    ck_assert_uint_gt(written, 0);
    itest_conn_close(&p.w);
    size_t got = read_pattern_to_eof(p.peer, pattern, BULK_TIMEOUT_MS);
    ck_assert_msg(got == written, "wrote %zu bytes before drop, peer got %zu", written, got);
    free(pattern);
    pair_close(&p);
}
END_TEST

/* ------------------------------------------------------------------ bulk */

/* 16 MiB each way at the same time, every byte checked, with a plain peer
 * on the connect side and the accept side. */
START_TEST(test_bulk_transfer_plain_peer) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    for (int accept_side = 0; accept_side <= 1; accept_side++) {
        pair p;
        pair_open(&p, wasi, fam, accept_side);
        itest_flow flows[2] = {
            {.write_fd = p.w.out, .read_fd = p.peer, .total = BULK_BYTES, .seed = 1},
            {.write_fd = p.peer, .read_fd = p.w.in, .total = BULK_BYTES, .seed = 2},
        };
        int r = itest_transfer(flows, 2, BULK_TIMEOUT_MS);
        ck_assert_msg(r == 0,
                      "transfer (%s side): %s; up %zu/%zu read %zu bad@%zd, down %zu/%zu read "
                      "%zu bad@%zd",
                      accept_side ? "accept" : "connect", strerror(-r), flows[0].written,
                      flows[0].total, flows[0].read, (ssize_t)flows[0].first_bad, flows[1].written,
                      flows[1].total, flows[1].read, (ssize_t)flows[1].first_bad);
        /* Then each side ends its direction and the other sees EOF. */
        ck_assert_int_eq(shutdown(p.peer, SHUT_WR), 0);
        ck_assert_int_eq(itest_read_to_eof(p.w.in, ITEST_WAIT_MS), 0);
        if (wasi == 2) {
            ITEST_EXPECT(wasock_tcp_shutdown(p.w.s, WASOCK_SHUTDOWN_SEND), WASOCK_OK);
        } else {
            close(p.w.out);
            p.w.out = -1;
        }
        ck_assert_int_eq(itest_read_to_eof(p.peer, ITEST_WAIT_MS), 0);
        ck_assert_int_eq(wasock_client_dispatch(p.c), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_stream_error(p.w.s), WASOCK_OK);
        pair_close(&p);
    }
}
END_TEST

/* 16 MiB each way between two sockets of the daemon (two relays). */
START_TEST(test_bulk_transfer_daemon_to_daemon) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, fam, &port);
    itest_conn client, server;
    itest_connect_to(c, fam, port, &client);
    itest_accept(c, l, &server);
    itest_flow flows[2] = {
        {.write_fd = client.out, .read_fd = server.in, .total = BULK_BYTES, .seed = 3},
        {.write_fd = server.out, .read_fd = client.in, .total = BULK_BYTES, .seed = 4},
    };
    int r = itest_transfer(flows, 2, BULK_TIMEOUT_MS);
    ck_assert_msg(r == 0, "transfer: %s; up %zu read %zu, down %zu read %zu", strerror(-r),
                  flows[0].written, flows[0].read, flows[1].written, flows[1].read);
    itest_conn_close(&client);
    ck_assert_int_eq(itest_read_to_eof(server.in, ITEST_WAIT_MS), 0);
    itest_conn_close(&server);
    wasock_tcp_drop(l);
    wasock_client_close(c);
}
END_TEST

/* Writes the pattern to fd until the writes stall (no progress for
 * STALL_MS: back-pressure reached) or the whole buffer went out; returns
 * the bytes written. */
static size_t write_until_stalled(int fd, const uint8_t *pattern, size_t cap) {
    size_t total = 0;
    while (total < cap) {
        ssize_t n = write(fd, pattern + total, cap - total);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "write: %s",
                      n < 0 ? strerror(errno) : "0");
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, STALL_MS) == 0) {
            break;
        }
    }
    return total;
}

/* Reads exactly `len` pattern bytes from fd, checking them. */
static void read_pattern_exact(int fd, const uint8_t *pattern, size_t len) {
    static uint8_t chunk[65536];
    size_t total = 0;
    int64_t deadline = itest_now_ms() + BULK_TIMEOUT_MS;
    while (total < len) {
        size_t want = len - total < sizeof chunk ? len - total : sizeof chunk;
        ssize_t n = itest_read_exact(fd, chunk, want, (int)(deadline - itest_now_ms()));
        ck_assert_msg(n == (ssize_t)want, "read at offset %zu of %zu: %zd", total, len, n);
        ck_assert_msg(memcmp(chunk, pattern + total, want) == 0, "wrong bytes at offset %zu",
                      total);
        total += want;
    }
}

/* Memory per connection is bounded: when the reader stops reading, the
 * writer is pushed back (its writes stall) long before BACKPRESSURE_CAP
 * bytes, in both directions; then every byte still arrives. */
START_TEST(test_back_pressure_both_directions) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    pair p;
    pair_open(&p, wasi, fam, false);
    uint8_t *up = malloc(BACKPRESSURE_CAP);
    uint8_t *down = malloc(BACKPRESSURE_CAP);
    ck_assert(up != NULL && down != NULL);
    for (size_t i = 0; i < BACKPRESSURE_CAP; i++) {
        up[i] = itest_pattern_byte(21, i);
        down[i] = itest_pattern_byte(22, i);
    }
    size_t up_written = write_until_stalled(p.w.out, up, BACKPRESSURE_CAP);
    ck_assert_msg(up_written < BACKPRESSURE_CAP,
                  "the output stream took %zu bytes the peer never read", up_written);
    size_t down_written = write_until_stalled(p.peer, down, BACKPRESSURE_CAP);
    ck_assert_msg(down_written < BACKPRESSURE_CAP,
                  "the peer could send %zu bytes the guest never read", down_written);
    read_pattern_exact(p.peer, up, up_written);
    read_pattern_exact(p.w.in, down, down_written);
    itest_send_expect(p.w.out, p.peer, "flowing again");
    itest_send_expect(p.peer, p.w.in, "both ways");
    free(up);
    free(down);
    pair_close(&p);
}
END_TEST

/* ------------------------------------------------------------------ 0.3 streams */

START_TEST(test_03_send_receive_once) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 3) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 3, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, fam, &port);
    wasock_tcp *s = itest_socket(c, fam);
    int in = -1, out = -1;
    ITEST_EXPECT(wasock_tcp_send(s, &out), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_receive(s, &in), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_send(l, &out), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_receive(l, &in), WASOCK_E_INVALID_STATE);
    wasock_addr target = itest_loopback(fam, port);
    ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_OK);
    ck_assert(itest_wait_ready(c, l, ITEST_WAIT_MS));
    wasock_tcp *acc = NULL;
    int ain = -2, aout = -2;
    ITEST_EXPECT(wasock_tcp_accept(l, &acc, &ain, &aout), WASOCK_OK);
    ck_assert_int_eq(ain, -1);
    ck_assert_int_eq(aout, -1);

    wasock_tcp *both[2] = {s, acc};
    int ins[2], outs[2];
    for (int k = 0; k < 2; k++) {
        ITEST_EXPECT(wasock_tcp_receive(both[k], &ins[k]), WASOCK_OK);
        int again = -1;
        ITEST_EXPECT(wasock_tcp_receive(both[k], &again), WASOCK_E_INVALID_STATE);
        ck_assert_int_eq(again, -1);
        ITEST_EXPECT(wasock_tcp_send(both[k], &outs[k]), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_send(both[k], &again), WASOCK_E_INVALID_STATE);
        ck_assert(ins[k] >= 0 && outs[k] >= 0 && ins[k] != outs[k]);
        ck_assert(fcntl(ins[k], F_GETFL) & O_NONBLOCK);
        ck_assert(fcntl(outs[k], F_GETFL) & O_NONBLOCK);
        ck_assert(fcntl(ins[k], F_GETFD) & FD_CLOEXEC);
        ck_assert(fcntl(outs[k], F_GETFD) & FD_CLOEXEC);
    }
    itest_send_expect(outs[0], ins[1], "client to server");
    itest_send_expect(outs[1], ins[0], "server to client");
    for (int k = 0; k < 2; k++) {
        close(ins[k]);
        close(outs[k]);
        wasock_tcp_drop(both[k]);
    }
    wasock_tcp_drop(l);
    wasock_client_close(c);
}
END_TEST

/* Closing the 0.3 output descriptor ends the send stream: the peer gets
 * every byte, then EOF; the input stream keeps working. */
START_TEST(test_03_close_output_is_fin) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 3) {
        return;
    }
    pair p;
    pair_open(&p, 3, fam, false);
    uint8_t *pattern = pattern_buffer(5);
    size_t written = write_until_full(p.w.out, pattern);
    close(p.w.out);
    p.w.out = -1;
    size_t got = read_pattern_to_eof(p.peer, pattern, BULK_TIMEOUT_MS);
    ck_assert_msg(got == written, "wrote %zu, peer got %zu before EOF", written, got);
    free(pattern);
    itest_send_expect(p.peer, p.w.in, "input still open");
    pair_close(&p);
}
END_TEST

/* Closing the 0.3 input descriptor drops the receive stream; sending keeps
 * working and the daemon copes with more input from the peer. */
START_TEST(test_03_close_input) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 3) {
        return;
    }
    pair p;
    pair_open(&p, 3, fam, true);
    close(p.w.in);
    p.w.in = -1;
    ck_assert_int_eq(itest_write_all(p.peer, "ignored", 7, ITEST_WAIT_MS), 0);
    itest_send_expect(p.w.out, p.peer, "output still open");
    itest_send_expect(p.w.out, p.peer, "and again");
    pair_close(&p);
    ck_assert(itest_daemon_alive(itest_fixture_daemon()));
}
END_TEST

/* The 0.3 descriptors stay the caller's after the socket is dropped; bytes
 * written before the drop still arrive. */
START_TEST(test_03_descriptors_survive_drop) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 3) {
        return;
    }
    pair p;
    pair_open(&p, 3, fam, false);
    ck_assert_int_eq(itest_write_all(p.w.out, "before drop", 11, ITEST_WAIT_MS), 0);
    wasock_tcp_drop(p.w.s);
    p.w.s = NULL;
    ck_assert_int_ge(fcntl(p.w.in, F_GETFD), 0);
    ck_assert_int_ge(fcntl(p.w.out, F_GETFD), 0);
    char got[16];
    ck_assert_int_eq(itest_read_exact(p.peer, got, 11, ITEST_WAIT_MS), 11);
    ck_assert_int_eq(memcmp(got, "before drop", 11), 0);
    ck_assert_int_eq(itest_read_to_eof(p.peer, BULK_TIMEOUT_MS), 0);
    /* The input stream ends too (the connection is gone). */
    ck_assert_int_ge(itest_read_to_eof(p.w.in, ITEST_WAIT_MS), 0);
    ck_assert_int_eq(close(p.w.in), 0);
    ck_assert_int_eq(close(p.w.out), 0);
    p.w.in = p.w.out = -1;
    pair_close(&p);
}
END_TEST

static Suite *tcp_streams_suite(void) {
    Suite *s = suite_create("tcp-streams");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"echo", test_echo_both_sides},
        {"peer_fin", test_peer_fin_gives_eof},
        {"peer_reset", test_peer_reset_is_stream_error},
        {"shutdown_send", test_shutdown_send},
        {"shutdown_receive", test_shutdown_receive_discards},
        {"shutdown_both", test_shutdown_both},
        {"shutdown_send_pending", test_shutdown_send_delivers_pending},
        {"drop_pending", test_drop_delivers_pending},
        {"back_pressure", test_back_pressure_both_directions},
        {"bulk_plain", test_bulk_transfer_plain_peer},
        {"bulk_daemon", test_bulk_transfer_daemon_to_daemon},
        {"p3_once", test_03_send_receive_once},
        {"p3_close_output", test_03_close_output_is_fin},
        {"p3_close_input", test_03_close_input},
        {"p3_survive_drop", test_03_descriptors_survive_drop},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        itest_tcase_defaults(tc);
        tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
        tcase_add_loop_test(tc, cases[i].test, 0, ITEST_VARIANTS);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return itest_run_suite(tcp_streams_suite());
}
