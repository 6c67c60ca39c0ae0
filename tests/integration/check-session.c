/* check-session.c — integration tests of wasockd sessions: the tenant
 * handshake, per-session handles (unknown, made-up, dropped, another
 * session's), cleanup when a client closes or crashes (the daemon's open
 * descriptors return to their count before), a daemon that goes away (every
 * call returns WASOCK_E_DAEMON, no hang, no SIGPIPE), and one client shared
 * by several threads.
 *
 * Trusts: the harness (harness.h, rawclient.h) and the local kernel.
 * SIGPIPE keeps its default action in this process on purpose: a library
 * that let one through would kill the test.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "rawclient.h"

/* Threads sharing one client, and the operations each performs. */
#define THREADS           4
#define THREAD_ITERATIONS 100

/* Clients open at the same time in the many-clients test. */
#define MANY_CLIENTS 32

/* Connections open at the same time in one session in the cleanup test. */
#define MANY_CONNECTIONS 50

/* ------------------------------------------------------------------ handshake */

START_TEST(test_handshake_tenants_and_shapes) {
    itest_daemon *d = itest_fixture_daemon();
    static const char *const admitted[] = {NULL, "", "default"};
    for (size_t i = 0; i < 3; i++) {
        for (int wasi = 2; wasi <= 3; wasi++) {
            wasock_client *c = itest_client_open(d, wasi, admitted[i]);
            ck_assert_int_eq(wasock_client_wasi_version(c), wasi);
            ck_assert_int_ge(wasock_client_fd(c), 0);
            ck_assert(fcntl(wasock_client_fd(c), F_GETFD) & FD_CLOEXEC);
            wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
            wasock_tcp_drop(s);
            wasock_client_close(c);
        }
    }
}
END_TEST

START_TEST(test_handshake_refusals) {
    itest_daemon *d = itest_fixture_daemon();
    char why[256];
    wasock_client *c = NULL;
    /* A tenant the policy does not know. */
    ITEST_EXPECT(itest_client_try_open(d, 2, "nobody-here", why, sizeof why, &c),
                 WASOCK_E_ACCESS_DENIED);
    ck_assert_ptr_null(c);
    ck_assert_msg(why[0] != '\0', "the refusal carries the daemon's reason");

    /* Bad options never reach the daemon. */
    wasock_client_opts o;
    wasock_client_opts_init(&o);
    o.socket_path = d->socket_path;
    o.wasi_version = 4;
    ITEST_EXPECT(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    wasock_client_opts_init(&o);
    o.socket_path = d->socket_path;
    o.size = 0;
    ITEST_EXPECT(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);

    wasock_client_opts_init(&o);
    o.socket_path = d->socket_path;
    o.wasi_version = 0;
    ITEST_EXPECT(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    char long_tenant[PROTO_TENANT_MAX + 2];
    memset(long_tenant, 't', sizeof long_tenant - 1);
    long_tenant[sizeof long_tenant - 1] = '\0';
    wasock_client_opts_init(&o);
    o.socket_path = d->socket_path;
    o.tenant = long_tenant;
    ITEST_EXPECT(wasock_client_open(&o, &c), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);

    /* Nobody listens there. */
    char missing[ITEST_PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/none.sock", d->dir);
    wasock_client_opts_init(&o);
    o.socket_path = missing;
    ITEST_EXPECT(wasock_client_open(&o, &c), WASOCK_E_DAEMON);
    ck_assert_ptr_null(c);

    /* The daemon serves the next client as usual. */
    c = itest_client_open(d, 2, NULL);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_handshake_raw) {
    itest_daemon *d = itest_fixture_daemon();
    /* Version ranges without overlap: NOT_SUPPORTED, then the daemon
     * closes. */
    itest_raw r;
    itest_raw_open(&r, d);
    proto_msg m = itest_raw_request(PROTO_HELLO, 0);
    m.version_min = PROTO_VERSION_MAX + 1;
    m.version_max = PROTO_VERSION_MAX + 5;
    m.wasi = PROTO_WASI_0_2;
    proto_msg reply;
    ck_assert_int_eq(itest_raw_call(&r, &m, &reply, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(reply.err, PROTO_E_NOT_SUPPORTED);
    ck_assert(itest_raw_wait_closed(&r, ITEST_WAIT_MS));
    itest_raw_close(&r);

    /* An unknown tenant: ACCESS_DENIED with the reason, then closed. */
    itest_raw_open(&r, d);
    m = itest_raw_request(PROTO_HELLO, 0);
    m.version_min = m.version_max = PROTO_VERSION_MIN;
    m.wasi = PROTO_WASI_0_3;
    memcpy(m.tenant, "stranger", sizeof "stranger");
    ck_assert_int_eq(itest_raw_call(&r, &m, &reply, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(reply.err, PROTO_E_ACCESS_DENIED);
    ck_assert_msg(reply.detail[0] != '\0', "ACCESS_DENIED carries a reason");
    ck_assert(itest_raw_wait_closed(&r, ITEST_WAIT_MS));
    itest_raw_close(&r);

    /* A good HELLO: version 1, a session id, and the session works. */
    itest_raw_open(&r, d);
    ck_assert_int_eq(itest_raw_hello(&r, PROTO_WASI_0_2, ""), 0);
    m = itest_raw_request(PROTO_PING, 0);
    ck_assert_int_eq(itest_raw_call(&r, &m, &reply, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(reply.err, 0);
    itest_raw_close(&r);
    ck_assert(itest_daemon_alive(d));
}
END_TEST

/* HELLO with [min, max]: the version the daemon chose, or -1 if refused. */
static int negotiated_version(itest_daemon *d, uint16_t min, uint16_t max) {
    itest_raw r;
    proto_msg m = itest_raw_request(PROTO_HELLO, 0), reply;
    int version = -1;

    itest_raw_open(&r, d);
    m.version_min = min;
    m.version_max = max;
    m.wasi = PROTO_WASI_0_2;
    ck_assert_int_eq(itest_raw_call(&r, &m, &reply, ITEST_WAIT_MS), 1);
    if (reply.err == PROTO_OK) {
        version = reply.version;
    }
    itest_raw_close(&r);
    return version;
}

START_TEST(test_protocol_versions) {
    itest_daemon *d = itest_fixture_daemon();

    ck_assert_int_eq(negotiated_version(d, 1, 1), 1);
    ck_assert_int_eq(negotiated_version(d, 2, 2), 2);
    ck_assert_int_eq(negotiated_version(d, 1, 9), PROTO_VERSION_MAX);
    ck_assert_int_eq(negotiated_version(d, 0, 1), 1);
    ck_assert_int_eq(negotiated_version(d, 0, 0), -1);
    ck_assert(itest_daemon_alive(d));
}
END_TEST

/* What a raw client saw of one connect: the events up to and including
 * the outcome, and the TCP_FINISH reply. */
struct raw_connect {
    bool connected_event; /* EV_CONNECTED arrived */
    unsigned event_nfds;
    uint16_t event_result;
    uint16_t finish_err;
    unsigned finish_nfds;
};

/* Creates a socket, connects it to port, waits for readiness and finishes
 * the connect, recording the frames (protocol 2 sends EV_CONNECTED, 1 does
 * not). */
static void raw_connect_once(itest_raw *r, uint16_t port, struct raw_connect *out) {
    proto_msg m = itest_raw_request(PROTO_TCP_CREATE, 0), reply;
    bool ready = true, replied = false;
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;

    memset(out, 0, sizeof(*out));
    m.family = PROTO_IPV4;
    ck_assert_int_eq(itest_raw_call(r, &m, &reply, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(reply.err, PROTO_OK);
    uint32_t handle = reply.new_handle;

    m = itest_raw_request(PROTO_TCP_CONNECT, handle);
    proto_addr_set_v4(&m.addr, (const uint8_t[4]){127, 0, 0, 1}, port);
    ck_assert_int_eq(itest_raw_send_msg(r, &m), 0);
    /* Until the reply has come and the socket is ready again. */
    while (!replied || !ready) {
        proto_msg f;
        ck_assert_msg(itest_now_ms() < deadline, "no outcome of the connect");
        ck_assert_int_eq(itest_raw_recv_msg(r, &f, ITEST_WAIT_MS), 1);
        if (f.type == (PROTO_TCP_CONNECT | PROTO_REPLY)) {
            ck_assert_uint_eq(f.id, m.id);
            ck_assert_uint_eq(f.err, PROTO_OK);
            replied = true;
        } else if (f.type == PROTO_EV_READY && f.handle == handle) {
            ck_assert_msg(!out->connected_event, "EV_READY after EV_CONNECTED");
            ready = f.ready != 0;
        } else if (f.type == PROTO_EV_CONNECTED && f.handle == handle) {
            ck_assert_msg(!out->connected_event, "two EV_CONNECTED");
            out->connected_event = true;
            out->event_nfds = f.nfds;
            out->event_result = f.result;
            ready = true;
        }
    }
    m = itest_raw_request(PROTO_TCP_FINISH, handle);
    m.op = PROTO_OP_CONNECT;
    ck_assert_int_eq(itest_raw_call(r, &m, &reply, ITEST_WAIT_MS), 1);
    out->finish_err = reply.err;
    out->finish_nfds = reply.err == PROTO_OK ? reply.nfds : 0;
    /* Finished once: a second finish is not-in-progress. */
    m = itest_raw_request(PROTO_TCP_FINISH, handle);
    m.op = PROTO_OP_CONNECT;
    ck_assert_int_eq(itest_raw_call(r, &m, &reply, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(reply.err, PROTO_E_NOT_IN_PROGRESS);
    m = itest_raw_request(PROTO_TCP_DROP, handle);
    ck_assert_int_eq(itest_raw_call(r, &m, &reply, ITEST_WAIT_MS), 1);
}

/* Protocol 2 pushes a connect's outcome (and in 0.2 its streams) with
 * EV_CONNECTED, and TCP_FINISH then only commits; protocol 1 does as
 * before. Both shapes, a connect that succeeds and one that is refused. */
START_TEST(test_connect_outcome_by_version) {
    itest_daemon *d = itest_fixture_daemon();
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    uint16_t closed = itest_closed_port(WASOCK_IPV4);

    for (uint16_t version = 1; version <= 2; version++) {
        for (int wasi = PROTO_WASI_0_2; wasi <= PROTO_WASI_0_3; wasi++) {
            unsigned streams = wasi == PROTO_WASI_0_2 ? 2 : 0;
            struct raw_connect rc;
            itest_raw r;

            itest_raw_open(&r, d);
            ck_assert_int_eq(itest_raw_hello_version(&r, wasi, "", version), 0);

            raw_connect_once(&r, port, &rc);
            int peer = itest_plain_accept(lfd, ITEST_WAIT_MS);
            ck_assert_int_ge(peer, 0);
            close(peer);
            ck_assert_uint_eq(rc.finish_err, PROTO_OK);
            if (version == 1) {
                ck_assert(!rc.connected_event);
                ck_assert_uint_eq(rc.finish_nfds, streams);
            } else {
                ck_assert(rc.connected_event);
                ck_assert_uint_eq(rc.event_result, PROTO_OK);
                ck_assert_uint_eq(rc.event_nfds, streams);
                ck_assert_uint_eq(rc.finish_nfds, 0);
            }
            ck_assert_uint_eq(r.fds_received, streams);

            raw_connect_once(&r, closed, &rc);
            ck_assert_uint_eq(rc.finish_err, PROTO_E_CONNECTION_REFUSED);
            ck_assert(rc.connected_event == (version == 2));
            if (version == 2) {
                ck_assert_uint_eq(rc.event_result, PROTO_E_CONNECTION_REFUSED);
                ck_assert_uint_eq(rc.event_nfds, 0);
            }
            ck_assert_uint_eq(r.fds_received, streams);
            itest_raw_close(&r);
        }
    }
    close(lfd);
    ck_assert(itest_daemon_alive(d));
}
END_TEST

/* Reads notification datagrams until one contains `state`. */
static bool notified(int notify_fd, const char *state) {
    int64_t deadline = itest_now_ms() + 2 * ITEST_WAIT_MS;
    char msg[256];

    while (itest_now_ms() < deadline) {
        struct pollfd p = {.fd = notify_fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        ssize_t n = recv(notify_fd, msg, sizeof msg - 1, MSG_DONTWAIT);
        if (n > 0) {
            msg[n] = '\0';
            if (strstr(msg, state) != NULL) {
                return true;
            }
        }
    }
    return false;
}

/* Started by a service manager: the daemon serves the socket it was given
 * (not --socket), tells NOTIFY_SOCKET it is ready and, when stopped, that
 * it is stopping. Without a policy file it uses the built-in default. */
START_TEST(test_socket_activation) {
    itest_daemon d;
    int notify_fd = itest_daemon_start_activated(&d, NULL);

    ck_assert_msg(notified(notify_fd, "READY=1"), "no READY=1 from the daemon");
    ck_assert(itest_daemon_log_contains(&d, "socket from the service manager"));
    wasock_client *c = itest_client_open(&d, 2, NULL);
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    itest_daemon_stop(&d);
    ck_assert_msg(notified(notify_fd, "STOPPING=1"), "no STOPPING=1 from the daemon");
    close(notify_fd);
}
END_TEST

START_TEST(test_many_clients) {
    itest_daemon *d = itest_fixture_daemon();
    wasock_client *clients[MANY_CLIENTS];
    wasock_tcp *sockets[MANY_CLIENTS];
    for (int i = 0; i < MANY_CLIENTS; i++) {
        clients[i] = itest_client_open(d, 2 + (i & 1), NULL);
        sockets[i] = itest_socket(clients[i], WASOCK_IPV4);
        wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
        ITEST_EXPECT(itest_bind(clients[i], sockets[i], &lo), WASOCK_OK);
    }
    /* Every session has its own socket with its own address. */
    for (int i = 0; i < MANY_CLIENTS; i++) {
        wasock_addr a, b;
        ITEST_EXPECT(wasock_tcp_local_address(sockets[i], &a), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_local_address(sockets[(i + 1) % MANY_CLIENTS], &b), WASOCK_OK);
        ck_assert_uint_ne(a.port, b.port);
    }
    for (int i = 0; i < MANY_CLIENTS; i++) {
        wasock_tcp_drop(sockets[i]);
        wasock_client_close(clients[i]);
    }
}
END_TEST

/* The control socket: mode 0660; a second daemon refuses a live daemon's
 * socket and leaves it working; a crashed daemon's stale socket file is
 * replaced by the next daemon. */
START_TEST(test_control_socket_file) {
    itest_daemon *a = itest_fixture_daemon();
    struct stat st;
    ck_assert_int_eq(stat(a->socket_path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_msg((st.st_mode & 0777) == 0660, "socket mode %o, want 660",
                  (unsigned)(st.st_mode & 0777));

    itest_daemon b;
    itest_daemon_spawn_at(&b, a->socket_path);
    int status = 0;
    if (!itest_daemon_wait_exit(&b, 2 * ITEST_WAIT_MS, &status)) {
        itest_daemon_print_log(&b);
        itest_daemon_stop(&b);
        ck_abort_msg("a second wasockd kept running on a live daemon's socket");
    }
    bool refused = WIFEXITED(status) && WEXITSTATUS(status) != 0;
    if (!refused) {
        itest_daemon_print_log(&b);
    }
    itest_daemon_discard(&b);
    ck_assert_msg(refused, "the second daemon should exit with an error (status 0x%x)",
                  (unsigned)status);
    ck_assert(itest_daemon_alive(a));
    wasock_client *c = itest_client_open(a, 2, NULL);
    wasock_tcp_drop(itest_socket(c, WASOCK_IPV4));
    wasock_client_close(c);

    char path[ITEST_PATH_MAX];
    memcpy(path, a->socket_path, sizeof path);
    itest_daemon_kill(a);
    ck_assert_msg(stat(path, &st) == 0, "a killed daemon leaves its socket file behind");
    itest_daemon successor;
    if (!itest_daemon_try_start_at(&successor, path)) {
        itest_daemon_print_log(&successor);
        itest_daemon_discard(&successor);
        ck_abort_msg("wasockd did not start over a stale socket file");
    }
    c = itest_client_open(&successor, 3, NULL);
    wasock_tcp_drop(itest_socket(c, WASOCK_IPV4));
    wasock_client_close(c);
    itest_daemon_stop(&successor);
}
END_TEST

/* ------------------------------------------------------------------ handles */

static proto_msg raw_expect_reply(itest_raw *r, proto_msg m, unsigned want_err) {
    proto_msg reply;
    int rc = itest_raw_call(r, &m, &reply, ITEST_WAIT_MS);
    ck_assert_msg(rc == 1, "%s (handle %u): no reply (%d)", proto_type_name(m.type), m.handle, rc);
    ck_assert_msg(reply.err == want_err, "%s (handle %u): err %s, want %s", proto_type_name(m.type),
                  m.handle, proto_err_name(reply.err), proto_err_name(want_err));
    return reply;
}

static uint32_t raw_create(itest_raw *r) {
    proto_msg m = itest_raw_request(PROTO_TCP_CREATE, 0);
    m.family = PROTO_IPV4;
    proto_msg reply = raw_expect_reply(r, m, 0);
    ck_assert_uint_ne(reply.new_handle, 0);
    return reply.new_handle;
}

/* Every request kind that names a handle, aimed at `handle`, answers
 * INVALID_ARGUMENT ("no such handle") and leaves the session working. */
static void expect_no_such_handle(itest_raw *r, uint32_t handle) {
    proto_msg m;
    m = itest_raw_request(PROTO_TCP_BIND, handle);
    proto_addr_set_v4(&m.addr, (const uint8_t[4]){127, 0, 0, 1}, 0);
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    m = itest_raw_request(PROTO_TCP_CONNECT, handle);
    proto_addr_set_v4(&m.addr, (const uint8_t[4]){127, 0, 0, 1}, 80);
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    raw_expect_reply(r, itest_raw_request(PROTO_TCP_LISTEN, handle), PROTO_E_INVALID_ARGUMENT);
    m = itest_raw_request(PROTO_TCP_FINISH, handle);
    m.op = PROTO_OP_CONNECT;
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    raw_expect_reply(r, itest_raw_request(PROTO_TCP_ACCEPT, handle), PROTO_E_INVALID_ARGUMENT);
    m = itest_raw_request(PROTO_TCP_SHUTDOWN, handle);
    m.how = PROTO_SHUT_BOTH;
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    m = itest_raw_request(PROTO_TCP_GET_OPTION, handle);
    m.option = PROTO_OPT_HOP_LIMIT;
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    m = itest_raw_request(PROTO_TCP_SET_OPTION, handle);
    m.option = PROTO_OPT_HOP_LIMIT;
    m.value = 9;
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    raw_expect_reply(r, itest_raw_request(PROTO_TCP_LOCAL_ADDRESS, handle),
                     PROTO_E_INVALID_ARGUMENT);
    raw_expect_reply(r, itest_raw_request(PROTO_TCP_REMOTE_ADDRESS, handle),
                     PROTO_E_INVALID_ARGUMENT);
    m = itest_raw_request(PROTO_TCP_STREAM, handle);
    m.direction = PROTO_DIR_SEND;
    raw_expect_reply(r, m, PROTO_E_INVALID_ARGUMENT);
    raw_expect_reply(r, itest_raw_request(PROTO_TCP_DROP, handle), PROTO_E_INVALID_ARGUMENT);
    raw_expect_reply(r, itest_raw_request(PROTO_PING, 0), 0);
}

START_TEST(test_handles_per_session) {
    itest_daemon *d = itest_fixture_daemon();
    itest_raw a, b;
    itest_raw_open(&a, d);
    itest_raw_open(&b, d);
    ck_assert_int_eq(itest_raw_hello(&a, PROTO_WASI_0_2, NULL), 0);
    ck_assert_int_eq(itest_raw_hello(&b, PROTO_WASI_0_2, NULL), 0);

    /* Handles count from 1 and are never reused within a session. */
    uint32_t h1 = raw_create(&a);
    uint32_t h2 = raw_create(&a);
    ck_assert_uint_eq(h1, 1);
    ck_assert_uint_eq(h2, 2);
    raw_expect_reply(&a, itest_raw_request(PROTO_TCP_DROP, h1), 0);
    uint32_t h3 = raw_create(&a);
    ck_assert_uint_eq(h3, 3);

    /* Dropped, made-up and zero handles. */
    expect_no_such_handle(&a, h1);
    expect_no_such_handle(&a, 12345);
    expect_no_such_handle(&a, 0);
    expect_no_such_handle(&a, UINT32_MAX);

    /* Another session's handles mean nothing here. */
    expect_no_such_handle(&b, h2);
    expect_no_such_handle(&b, h3);

    /* b's own counter starts at 1; its handle 1 is not a's. */
    uint32_t b1 = raw_create(&b);
    ck_assert_uint_eq(b1, 1);
    proto_msg m = itest_raw_request(PROTO_TCP_BIND, b1);
    proto_addr_set_v4(&m.addr, (const uint8_t[4]){127, 0, 0, 1}, 0);
    raw_expect_reply(&b, m, 0);
    m = itest_raw_request(PROTO_TCP_FINISH, b1);
    m.op = PROTO_OP_BIND;
    raw_expect_reply(&b, m, 0);
    raw_expect_reply(&b, itest_raw_request(PROTO_TCP_LOCAL_ADDRESS, b1), 0);
    /* a's sockets are untouched by all of this. */
    raw_expect_reply(&a, itest_raw_request(PROTO_TCP_LOCAL_ADDRESS, h2), PROTO_E_INVALID_STATE);
    raw_expect_reply(&a, itest_raw_request(PROTO_TCP_LOCAL_ADDRESS, h3), PROTO_E_INVALID_STATE);

    itest_raw_close(&a);
    itest_raw_close(&b);
    ck_assert(itest_daemon_alive(d));
}
END_TEST

/* ------------------------------------------------------------------ cleanup */

/* Exit codes of the crashing child, so the parent can say which set-up
 * step failed. */
enum child_status {
    CHILD_OK = 0,
    CHILD_OPEN = 10,
    CHILD_CREATE,
    CHILD_BIND,
    CHILD_LISTEN,
    CHILD_CONNECT,
    CHILD_ACCEPT,
    CHILD_STREAMS,
    CHILD_PLAIN,
};

/* Child-side helpers: no Check assertions here (the child is not the test
 * process); every failure is an exit code. */
static void child_fail(enum child_status st) {
    _exit(st);
}

static wasock_tcp *child_socket(wasock_client *c) {
    wasock_tcp *s = NULL;
    if (wasock_tcp_create(c, WASOCK_IPV4, &s) != WASOCK_OK) {
        child_fail(CHILD_CREATE);
    }
    return s;
}

static void child_wait_ready(wasock_client *c, wasock_tcp *s, enum child_status st) {
    if (!itest_wait_ready(c, s, ITEST_WAIT_MS)) {
        child_fail(st);
    }
}

/* Builds sockets in every state and connections with data in flight in
 * both shapes, tells the parent the listener's port, and dies without
 * closing anything. */
static void crashing_child(const itest_daemon *d, int report_fd) {
    wasock_client *c2 = NULL, *c3 = NULL;
    if (itest_client_try_open(d, 2, NULL, NULL, 0, &c2) != WASOCK_OK ||
        itest_client_try_open(d, 3, NULL, NULL, 0, &c3) != WASOCK_OK) {
        child_fail(CHILD_OPEN);
    }
    (void)child_socket(c2); /* unbound */
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    wasock_tcp *bound = child_socket(c2);
    if (wasock_tcp_start_bind(bound, &lo) != WASOCK_OK) {
        child_fail(CHILD_BIND);
    }
    child_wait_ready(c2, bound, CHILD_BIND);
    if (wasock_tcp_finish_bind(bound) != WASOCK_OK) {
        child_fail(CHILD_BIND);
    }
    wasock_tcp *l = child_socket(c2);
    wasock_addr la;
    if (wasock_tcp_bind(l, &lo) != WASOCK_OK || wasock_tcp_listen(l) != WASOCK_OK ||
        wasock_tcp_local_address(l, &la) != WASOCK_OK) {
        child_fail(CHILD_LISTEN);
    }
    /* A 0.2 connection to the listener, accepted: two relays, with bytes
     * written and not read. */
    wasock_tcp *client = child_socket(c2);
    if (wasock_tcp_start_connect(client, &la) != WASOCK_OK) {
        child_fail(CHILD_CONNECT);
    }
    child_wait_ready(c2, client, CHILD_CONNECT);
    int cin, cout;
    if (wasock_tcp_finish_connect(client, &cin, &cout) != WASOCK_OK) {
        child_fail(CHILD_CONNECT);
    }
    child_wait_ready(c2, l, CHILD_ACCEPT);
    wasock_tcp *server = NULL;
    int sin_, sout;
    if (wasock_tcp_accept(l, &server, &sin_, &sout) != WASOCK_OK) {
        child_fail(CHILD_ACCEPT);
    }
    if (write(cout, "unread", 6) != 6 || write(sout, "unread too", 10) != 10) {
        child_fail(CHILD_STREAMS);
    }
    /* A connection waiting in the listener's queue, never accepted. */
    wasock_tcp *queued = child_socket(c2);
    if (wasock_tcp_start_connect(queued, &la) != WASOCK_OK) {
        child_fail(CHILD_CONNECT);
    }
    /* A 0.3 connection to a plain peer, streams taken and held. */
    int plain_l = itest_plain_listen_at(WASOCK_IPV4, NULL, 0);
    if (plain_l < 0) {
        child_fail(CHILD_PLAIN);
    }
    wasock_addr pa = itest_loopback(WASOCK_IPV4, itest_plain_local_port(plain_l));
    wasock_tcp *c3s = NULL;
    int in3, out3;
    if (wasock_tcp_create(c3, WASOCK_IPV4, &c3s) != WASOCK_OK ||
        wasock_tcp_connect(c3s, &pa) != WASOCK_OK || wasock_tcp_send(c3s, &out3) != WASOCK_OK ||
        wasock_tcp_receive(c3s, &in3) != WASOCK_OK) {
        child_fail(CHILD_STREAMS);
    }
    /* A socket with its receive stream not yet taken. */
    wasock_tcp *c3half = NULL;
    if (wasock_tcp_create(c3, WASOCK_IPV4, &c3half) != WASOCK_OK ||
        wasock_tcp_connect(c3half, &pa) != WASOCK_OK) {
        child_fail(CHILD_STREAMS);
    }
    uint16_t port = la.port;
    if (write(report_fd, &port, sizeof port) != (ssize_t)sizeof port) {
        child_fail(CHILD_STREAMS);
    }
    _exit(CHILD_OK); /* no close, no drop: as if the runtime crashed */
}

/* The daemon's descriptor count once it has served one client: the
 * baseline for the cleanup tests. */
static int warm_baseline(itest_daemon *d) {
    wasock_client *c = itest_client_open(d, 2, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, WASOCK_IPV4, &port);
    itest_conn a, b;
    itest_connect_to(c, WASOCK_IPV4, port, &a);
    itest_accept(c, l, &b);
    itest_conn_close(&a);
    itest_conn_close(&b);
    wasock_tcp_drop(l);
    wasock_client_close(c);
    return itest_daemon_settled_fd_count(d);
}

/* True once nothing listens on loopback:port any more. The probe sets
 * SO_REUSEADDR, so the TIME_WAIT and lingering connections that used the
 * port do not count; only a socket still listening there blocks it. */
static bool port_free_within(uint16_t port, int timeout_ms) {
    int64_t deadline = itest_now_ms() + timeout_ms;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int rc = bind(fd, (struct sockaddr *)&sin, sizeof sin);
        close(fd);
        if (rc == 0) {
            return true;
        }
        if (itest_now_ms() >= deadline) {
            return false;
        }
        usleep(10000);
    }
}

START_TEST(test_client_crash_cleanup) {
    itest_daemon *d = itest_fixture_daemon();
    int before = warm_baseline(d);
    ck_assert_int_gt(before, 0);

    int report[2];
    ck_assert_int_eq(pipe2(report, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(report[0]);
        crashing_child(d, report[1]);
    }
    close(report[1]);
    uint16_t port = 0;
    ssize_t n = itest_read_exact(report[0], &port, sizeof port, 2 * ITEST_WAIT_MS);
    close(report[0]);
    int status = 0;
    pid_t reaped = 0;
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    while ((reaped = waitpid(pid, &status, WNOHANG)) == 0 && itest_now_ms() < deadline) {
        usleep(10000);
    }
    if (reaped == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        ck_abort_msg("the crashing child did not exit");
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK,
                  "child set-up failed (status 0x%x, see enum child_status)", (unsigned)status);
    ck_assert_int_eq(n, (ssize_t)sizeof port);

    int after = itest_daemon_wait_fd_count(d, before, 2 * ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds: %d before the crashed client, %d after", before,
                  after);
    ck_assert_msg(port_free_within(port, ITEST_WAIT_MS),
                  "the crashed client's listener port %u is still taken", port);
    ck_assert(itest_daemon_alive(d));
    /* And the daemon serves the next client. */
    int final = warm_baseline(d);
    ck_assert_int_le(final, before);
}
END_TEST

START_TEST(test_client_close_cleanup) {
    itest_daemon *d = itest_fixture_daemon();
    int before = warm_baseline(d);
    for (int wasi = 2; wasi <= 3; wasi++) {
        wasock_client *c = itest_client_open(d, wasi, NULL);
        uint16_t port;
        wasock_tcp *l = itest_listener(c, WASOCK_IPV4, &port);
        itest_conn a, b;
        itest_connect_to(c, WASOCK_IPV4, port, &a);
        itest_accept(c, l, &b);
        itest_send_expect(a.out, b.in, "bytes in flight");
        ck_assert_int_eq(itest_write_all(b.out, "unread", 6, ITEST_WAIT_MS), 0);
        (void)itest_socket(c, WASOCK_IPV4);
        /* Close the client with everything open; 0.3 descriptors stay ours. */
        wasock_client_close(c);
        if (a.own_fds) {
            close(a.in);
            close(a.out);
            close(b.in);
            close(b.out);
        }
        int after = itest_daemon_wait_fd_count(d, before, 2 * ITEST_WAIT_MS);
        ck_assert_msg(after <= before, "0.%d: daemon fds %d before, %d after close", wasi, before,
                      after);
        ck_assert(port_free_within(port, ITEST_WAIT_MS));
    }
}
END_TEST

/* Many connections in one session, each carrying data, then dropped in
 * both shapes: every relay and descriptor goes away. */
START_TEST(test_many_connections_cleanup) {
    itest_daemon *d = itest_fixture_daemon();
    (void)warm_baseline(d);
    for (int wasi = 2; wasi <= 3; wasi++) {
        wasock_client *c = itest_client_open(d, wasi, NULL);
        /* The baseline includes this session: the drops alone must bring
         * the count back, without the session's end cleaning up. */
        int before = itest_daemon_settled_fd_count(d);
        uint16_t port;
        wasock_tcp *l = itest_listener(c, WASOCK_IPV4, &port);
        itest_conn clients[MANY_CONNECTIONS], servers[MANY_CONNECTIONS];
        for (int i = 0; i < MANY_CONNECTIONS; i++) {
            itest_connect_to(c, WASOCK_IPV4, port, &clients[i]);
            itest_accept(c, l, &servers[i]);
        }
        for (int i = 0; i < MANY_CONNECTIONS; i++) {
            itest_send_expect(clients[i].out, servers[i].in, "request");
            itest_send_expect(servers[i].out, clients[i].in, "response");
        }
        /* Half closed by the server first, half by the client first. */
        for (int i = 0; i < MANY_CONNECTIONS; i++) {
            if (i % 2 == 0) {
                itest_conn_close(&servers[i]);
                ck_assert_int_eq(itest_read_to_eof(clients[i].in, ITEST_WAIT_MS), 0);
                itest_conn_close(&clients[i]);
            } else {
                itest_conn_close(&clients[i]);
                ck_assert_int_eq(itest_read_to_eof(servers[i].in, ITEST_WAIT_MS), 0);
                itest_conn_close(&servers[i]);
            }
        }
        wasock_tcp_drop(l);
        int after = itest_daemon_wait_fd_count(d, before, 2 * ITEST_WAIT_MS);
        ck_assert_msg(after <= before, "0.%d: daemon fds %d before, %d after %d connections", wasi,
                      before, after, MANY_CONNECTIONS);
        wasock_client_close(c);
    }
}
END_TEST

/* ------------------------------------------------------------------ daemon gone */

static void expect_all_calls_fail_with_daemon(wasock_client *c, wasock_tcp *fresh,
                                              wasock_tcp *listener, wasock_tcp *connected) {
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    wasock_addr target = itest_loopback(WASOCK_IPV4, 9);
    wasock_tcp *out_tcp = NULL;
    int in = -1, out = -1;
    bool b;
    uint64_t u64;
    uint32_t u32;
    uint8_t u8;
    wasock_addr a;

    ITEST_EXPECT(wasock_client_dispatch(c), WASOCK_E_DAEMON);
    ITEST_EXPECT(wasock_client_wait(c, 100), WASOCK_E_DAEMON);
    ITEST_EXPECT(wasock_tcp_create(c, WASOCK_IPV4, &out_tcp), WASOCK_E_DAEMON);
    ck_assert_ptr_null(out_tcp);
    wasock_tcp *all[] = {fresh, listener, connected};
    for (size_t i = 0; i < 3; i++) {
        wasock_tcp *s = all[i];
        ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_finish_connect(s, &in, &out), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_accept(s, &out_tcp, &in, &out), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_local_address(s, &a), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_remote_address(s, &a), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 5), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_keep_alive_enabled(s, &b), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_keep_alive_enabled(s, true), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_keep_alive_idle_time(s, &u64), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_keep_alive_idle_time(s, 5), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_keep_alive_interval(s, &u64), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_keep_alive_interval(s, 5), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_keep_alive_count(s, &u32), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_keep_alive_count(s, 5), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_hop_limit(s, &u8), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_hop_limit(s, 5), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_receive_buffer_size(s, &u64), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_receive_buffer_size(s, 5000), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_send_buffer_size(s, &u64), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_set_send_buffer_size(s, 5000), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_BOTH), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_bind(s, &lo), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_listen(s), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_send(s, &out), WASOCK_E_DAEMON);
        ITEST_EXPECT(wasock_tcp_receive(s, &in), WASOCK_E_DAEMON);
        /* The infallible calls answer from what the library knows. */
        (void)wasock_tcp_ready(s);
        (void)wasock_tcp_is_listening(s);
        ck_assert_int_eq(wasock_tcp_address_family(s), WASOCK_IPV4);
        (void)wasock_tcp_stream_error(s);
    }
    ck_assert_ptr_null(out_tcp);
}

START_TEST(test_daemon_gone) {
    itest_daemon *d = itest_fixture_daemon();
    /* The test is only honest with SIGPIPE at its default action. */
    struct sigaction old_pipe;
    ck_assert_int_eq(sigaction(SIGPIPE, NULL, &old_pipe), 0);
    ck_assert_msg(old_pipe.sa_handler == SIG_DFL, "SIGPIPE is not at its default action");
    for (int how = 0; how < 2; how++) {
        if (how == 1) {
            itest_daemon_start(d, NULL);
        }
        wasock_client *c = itest_client_open(d, 2, NULL);
        wasock_tcp *fresh = itest_socket(c, WASOCK_IPV4);
        uint16_t port;
        wasock_tcp *l = itest_listener(c, WASOCK_IPV4, &port);
        itest_conn conn;
        itest_connect_to(c, WASOCK_IPV4, port, &conn);
        if (how == 0) {
            itest_daemon_kill(d); /* a crash */
        } else {
            itest_daemon_stop(d); /* an orderly stop */
        }
        expect_all_calls_fail_with_daemon(c, fresh, l, conn.s);
        /* Opening a new client fails the same way. */
        wasock_client_opts o;
        wasock_client_opts_init(&o);
        o.socket_path = d->socket_path;
        wasock_client *again = NULL;
        ITEST_EXPECT(wasock_client_open(&o, &again), WASOCK_E_DAEMON);
        wasock_tcp_drop(fresh);
        wasock_tcp_drop(l);
        itest_conn_close(&conn);
        wasock_client_close(c);
        itest_daemon_discard(d);
    }
}
END_TEST

/* A 0.3 call that waits (connect to a listener whose queue is full) returns
 * WASOCK_E_DAEMON when the daemon dies meanwhile, instead of hanging. */
typedef struct blocked_connect {
    wasock_tcp *s;
    wasock_addr target;
    wasock_err result;
    volatile int done;
} blocked_connect;

static void *blocked_connect_thread(void *arg) {
    blocked_connect *bc = arg;
    bc->result = wasock_tcp_connect(bc->s, &bc->target);
    bc->done = 1;
    return NULL;
}

START_TEST(test_daemon_gone_during_blocking_call) {
    itest_daemon *d = itest_fixture_daemon();
    wasock_client *c = itest_client_open(d, 3, NULL);
    int lfd = itest_plain_listen_at(WASOCK_IPV4, NULL, 0);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(listen(lfd, 0), 0);
    uint16_t port = itest_plain_local_port(lfd);
    int queued = itest_plain_connect(WASOCK_IPV4, port);
    blocked_connect bc = {.s = itest_socket(c, WASOCK_IPV4),
                          .target = itest_loopback(WASOCK_IPV4, port)};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, blocked_connect_thread, &bc), 0);
    usleep(200000); /* let the call reach its wait; the result does not depend on it */
    itest_daemon_kill(d);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2 * ITEST_WAIT_MS / 1000;
    int jr = pthread_timedjoin_np(t, NULL, &until);
    if (jr != 0) {
        ck_abort_msg("wasock_tcp_connect still blocked after the daemon died");
    }
    ITEST_EXPECT(bc.result, WASOCK_E_DAEMON);
    wasock_tcp_drop(bc.s);
    wasock_client_close(c);
    close(queued);
    close(lfd);
}
END_TEST

/* ------------------------------------------------------------------ threads */

typedef struct thread_job {
    wasock_client *c;
    int failures;
    char first_failure[160];
} thread_job;

static void job_fail(thread_job *j, const char *what, wasock_err e) {
    if (j->failures++ == 0) {
        snprintf(j->first_failure, sizeof j->first_failure, "%s: %s", what, wasock_err_name(e));
    }
}

static void *thread_body(void *arg) {
    thread_job *j = arg;
    for (int i = 0; i < THREAD_ITERATIONS; i++) {
        wasock_tcp *s = NULL;
        wasock_err e = wasock_tcp_create(j->c, WASOCK_IPV4, &s);
        if (e != WASOCK_OK) {
            job_fail(j, "create", e);
            continue;
        }
        uint8_t hop = (uint8_t)(1 + i % 200), got = 0;
        if ((e = wasock_tcp_set_hop_limit(s, hop)) != WASOCK_OK) {
            job_fail(j, "set_hop_limit", e);
        } else if ((e = wasock_tcp_hop_limit(s, &got)) != WASOCK_OK || got != hop) {
            job_fail(j, "hop_limit readback", e);
        }
        wasock_addr lo = itest_loopback(WASOCK_IPV4, 0), local;
        if ((e = wasock_tcp_bind(s, &lo)) != WASOCK_OK) {
            job_fail(j, "bind", e);
        } else if ((e = wasock_tcp_local_address(s, &local)) != WASOCK_OK || local.port == 0) {
            job_fail(j, "local_address", e);
        }
        wasock_tcp_drop(s);
    }
    return NULL;
}

START_TEST(test_threads_share_one_client) {
    itest_daemon *d = itest_fixture_daemon();
    for (int wasi = 2; wasi <= 3; wasi++) {
        wasock_client *c = itest_client_open(d, wasi, NULL);
        pthread_t threads[THREADS];
        thread_job jobs[THREADS];
        for (int i = 0; i < THREADS; i++) {
            jobs[i] = (thread_job){.c = c};
            ck_assert_int_eq(pthread_create(&threads[i], NULL, thread_body, &jobs[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) {
            pthread_join(threads[i], NULL);
        }
        for (int i = 0; i < THREADS; i++) {
            ck_assert_msg(jobs[i].failures == 0, "0.%d thread %d: %d failures, first: %s", wasi, i,
                          jobs[i].failures, jobs[i].first_failure);
        }
        wasock_client_close(c);
    }
}
END_TEST

/* Numeric options out of range are usage errors (exit 2) that say the
 * range, before anything is opened. */
START_TEST(test_option_ranges) {
    static const char *const bad[][3] = {
        {"--busy-poll", "1001", "--busy-poll takes microseconds from 0 to 1000"},
        {"--busy-poll", "-1", "--busy-poll takes microseconds from 0 to 1000"},
        {"--busy-poll", "50us", "--busy-poll takes microseconds from 0 to 1000"},
        {"--max-sessions-per-uid", "0", "--max-sessions-per-uid takes a number from 1 to"},
    };
    const char *wasockd = getenv("WASOCKD");
    ck_assert_msg(wasockd != NULL, "WASOCKD is not set");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[] = {wasockd, bad[i][0], bad[i][1], NULL};
        char err[512];
        int code = itest_run_tool(argv, NULL, err, sizeof(err), ITEST_WAIT_MS);
        ck_assert_msg(code == 2, "%s %s: exit %d, want 2", bad[i][0], bad[i][1], code);
        ck_assert_msg(strstr(err, bad[i][2]) != NULL, "%s %s: output \"%s\"", bad[i][0], bad[i][1],
                      err);
    }
}
END_TEST

static Suite *session_suite(void) {
    Suite *s = suite_create("session");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"handshake", test_handshake_tenants_and_shapes},
        {"handshake_refusals", test_handshake_refusals},
        {"handshake_raw", test_handshake_raw},
        {"protocol_versions", test_protocol_versions},
        {"connect_by_version", test_connect_outcome_by_version},
        {"socket_activation", test_socket_activation},
        {"many_clients", test_many_clients},
        {"socket_file", test_control_socket_file},
        {"handles", test_handles_per_session},
        {"crash_cleanup", test_client_crash_cleanup},
        {"close_cleanup", test_client_close_cleanup},
        {"connections_cleanup", test_many_connections_cleanup},
        {"daemon_gone", test_daemon_gone},
        {"daemon_gone_blocking", test_daemon_gone_during_blocking_call},
        {"threads", test_threads_share_one_client},
        {"option_ranges", test_option_ranges},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        itest_tcase_defaults(tc);
        tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return itest_run_suite(session_suite());
}
