/* check-tcp-states.c — integration tests of the TCP state machine: every
 * transition and the typical errors of wasi-semantics.md, in both WASI
 * shapes and both address families, against the real wasockd.
 *
 * Trusts: the harness (harness.h) and the local kernel. Each test gets a
 * fresh daemon with the built-in default policy (loopback allowed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* The other family's loopback: a valid address of the wrong family. */
static wasock_addr wrong_family_loopback(wasock_family f, uint16_t port) {
    return itest_loopback(f == WASOCK_IPV4 ? WASOCK_IPV6 : WASOCK_IPV4, port);
}

static wasock_addr unspecified(wasock_family f, uint16_t port) {
    wasock_addr a = itest_addr(f == WASOCK_IPV4 ? "0.0.0.0:0" : "[::]:0");
    a.port = port;
    return a;
}

/* Checks what every socket that is neither listening nor connected and
 * has nothing in progress answers. */
static void expect_nothing_in_progress(wasock_tcp *s) {
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_NOT_IN_PROGRESS);
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_NOT_IN_PROGRESS);
    ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_NOT_IN_PROGRESS);
}

/* ------------------------------------------------------------------ unbound */

START_TEST(test_unbound_invariants) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);

    ck_assert(wasock_tcp_ready(s));
    ck_assert(!wasock_tcp_is_listening(s));
    ck_assert_int_eq(wasock_tcp_address_family(s), fam);
    expect_nothing_in_progress(s);
    if (wasi == 2) {
        /* Unlike POSIX, WASI 0.2 never listens on an unbound socket. */
        ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
        ck_assert(!wasock_tcp_is_listening(s));
    }
    wasock_tcp *conn = NULL;
    int in = -1, out = -1;
    ITEST_EXPECT(wasock_tcp_accept(s, &conn, &in, &out), WASOCK_E_INVALID_STATE);
    ck_assert_ptr_null(conn);
    ITEST_EXPECT(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_BOTH), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_RECEIVE), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_SEND), WASOCK_E_INVALID_STATE);
    wasock_addr a;
    ITEST_EXPECT(wasock_tcp_local_address(s, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_remote_address(s, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_send(s, &out), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_receive(s, &in), WASOCK_E_INVALID_STATE);
    ck_assert(wasock_tcp_ready(s));

    /* None of the refusals changed the state: the socket still binds. */
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);

    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ bind */

START_TEST(test_bind_loopback_ephemeral) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr lo = itest_loopback(fam, 0);
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_OK);
        /* A second bind while the first is in progress: the state is no
         * longer unbound. */
        ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_OK);
    } else {
        ITEST_EXPECT(wasock_tcp_bind(s, &lo), WASOCK_OK);
    }
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert_int_eq(local.ip.family, fam);
    ck_assert(itest_addr_is_loopback(&local));
    ck_assert_uint_ne(local.port, 0);

    /* Bound invariants. */
    ck_assert(wasock_tcp_ready(s));
    ck_assert(!wasock_tcp_is_listening(s));
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_bind(s, &lo), WASOCK_E_INVALID_STATE);
    expect_nothing_in_progress(s);
    wasock_tcp *conn = NULL;
    ITEST_EXPECT(wasock_tcp_accept(s, &conn, NULL, NULL), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_BOTH), WASOCK_E_INVALID_STATE);
    wasock_addr remote;
    ITEST_EXPECT(wasock_tcp_remote_address(s, &remote), WASOCK_E_INVALID_STATE);
    wasock_addr again;
    ITEST_EXPECT(wasock_tcp_local_address(s, &again), WASOCK_OK);
    ck_assert(itest_addr_equal(&local, &again));

    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_bind_specific_port) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr want = itest_loopback(fam, itest_closed_port(fam));
    ITEST_EXPECT(itest_bind(c, s, &want), WASOCK_OK);
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert(itest_addr_equal(&local, &want));
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* Every address rule of bind answers INVALID_ARGUMENT from start-bind and
 * leaves the socket unbound. */
static void expect_bind_invalid(wasock_client *c, wasock_tcp *s, const char *text) {
    wasock_addr a = itest_addr(text);
    wasock_err e =
        wasock_client_wasi_version(c) == 2 ? wasock_tcp_start_bind(s, &a) : wasock_tcp_bind(s, &a);
    ck_assert_msg(e == WASOCK_E_INVALID_ARGUMENT, "bind %s: got %s, want invalid-argument", text,
                  wasock_err_name(e));
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_NOT_IN_PROGRESS);
}

START_TEST(test_bind_invalid_addresses) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);

    wasock_addr wrong = wrong_family_loopback(fam, 0);
    ITEST_EXPECT(wasi == 2 ? wasock_tcp_start_bind(s, &wrong) : wasock_tcp_bind(s, &wrong),
                 WASOCK_E_INVALID_ARGUMENT);
    if (fam == WASOCK_IPV4) {
        expect_bind_invalid(c, s, "255.255.255.255:0");
        expect_bind_invalid(c, s, "224.254.0.0:0");
        expect_bind_invalid(c, s, "224.0.0.1:0");
        expect_bind_invalid(c, s, "239.255.255.250:0");
    } else {
        expect_bind_invalid(c, s, "[ff00::]:0");
        expect_bind_invalid(c, s, "[ff02::1]:0");
        /* IPv4-mapped and IPv4-compatible: never a way around v6-only or an
         * IPv4 rule. */
        expect_bind_invalid(c, s, "[::ffff:127.0.0.1]:0");
        expect_bind_invalid(c, s, "[::127.0.0.1]:0");
    }
    /* The refusals changed nothing. */
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    /* Bind checks the address before the state: a bound socket given a bad
     * address still says invalid-argument. */
    ITEST_EXPECT(wasi == 2 ? wasock_tcp_start_bind(s, &wrong) : wasock_tcp_bind(s, &wrong),
                 WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasi == 2 ? wasock_tcp_start_bind(s, &lo) : wasock_tcp_bind(s, &lo),
                 WASOCK_E_INVALID_STATE);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_bind_address_in_use) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);

    /* Taken by a plain listener outside the daemon. */
    uint16_t port;
    int plain = itest_plain_listen(fam, &port);
    wasock_addr taken = itest_loopback(fam, port);
    wasock_tcp *s = itest_socket(c, fam);
    if (wasi == 2) {
        /* Kernel results come from finish-bind (documented in wasock.h). */
        ITEST_EXPECT(wasock_tcp_start_bind(s, &taken), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_ADDRESS_IN_USE);
    } else {
        ITEST_EXPECT(wasock_tcp_bind(s, &taken), WASOCK_E_ADDRESS_IN_USE);
    }
    /* A failed bind returns the socket to unbound. */
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_NOT_IN_PROGRESS);
    ck_assert(wasock_tcp_ready(s));
    close(plain);

    /* Taken by another socket of the daemon. */
    uint16_t lport;
    wasock_tcp *listener = itest_listener(c, fam, &lport);
    wasock_addr taken2 = itest_loopback(fam, lport);
    ITEST_EXPECT(itest_bind(c, s, &taken2), WASOCK_E_ADDRESS_IN_USE);
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);

    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    wasock_tcp_drop(listener);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* SO_REUSEADDR: the TIME_WAIT left by a server that closed first does not
 * block binding its port again. */
START_TEST(test_bind_reuseaddr) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    wasock_tcp *listener = itest_listener(c, fam, &port);
    int client = itest_plain_connect(fam, port);
    itest_conn server;
    itest_accept(c, listener, &server);
    itest_send_expect(server.out, client, "bye");
    /* The server side closes first, so its end goes to TIME_WAIT. */
    itest_conn_close(&server);
    wasock_tcp_drop(listener);
    ck_assert_int_ge(itest_read_to_eof(client, ITEST_WAIT_MS), 0);

    wasock_tcp *again = itest_socket(c, fam);
    wasock_addr addr = itest_loopback(fam, port);
    ITEST_EXPECT(itest_bind(c, again, &addr), WASOCK_OK);
    ITEST_EXPECT(itest_listen(c, again), WASOCK_OK);
    close(client);
    wasock_tcp_drop(again);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ listen */

START_TEST(test_listen_and_accept) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *l = itest_socket(c, fam);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, l, &lo), WASOCK_OK);
    wasock_addr bound;
    ITEST_EXPECT(wasock_tcp_local_address(l, &bound), WASOCK_OK);
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_listen(l), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_start_listen(l), WASOCK_E_INVALID_STATE);
        ck_assert(itest_wait_ready(c, l, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_listen(l), WASOCK_OK);
    } else {
        ITEST_EXPECT(wasock_tcp_listen(l), WASOCK_OK);
    }
    ck_assert(wasock_tcp_is_listening(l));

    /* Listening invariants; no connection waits yet. */
    ck_assert(!wasock_tcp_ready(l));
    wasock_tcp *conn = NULL;
    int in = -1, out = -1;
    ITEST_EXPECT(wasock_tcp_accept(l, &conn, &in, &out), WASOCK_E_WOULD_BLOCK);
    ck_assert_ptr_null(conn);
    ck_assert(!wasock_tcp_ready(l));
    ITEST_EXPECT(wasock_tcp_start_bind(l, &lo), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_connect(l, &bound), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_listen(l), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_listen(l), WASOCK_E_INVALID_STATE);
    expect_nothing_in_progress(l);
    ITEST_EXPECT(wasock_tcp_shutdown(l, WASOCK_SHUTDOWN_BOTH), WASOCK_E_INVALID_STATE);
    wasock_addr a;
    ITEST_EXPECT(wasock_tcp_remote_address(l, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_local_address(l, &a), WASOCK_OK);
    ck_assert(itest_addr_equal(&a, &bound));
    ck_assert(wasock_tcp_is_listening(l));

    /* Two connections wait: the first accept leaves the listener ready,
     * the second takes the last one and makes it not ready. */
    int p1 = itest_plain_connect(fam, bound.port);
    int p2 = itest_plain_connect(fam, bound.port);
    ck_assert(itest_wait_ready(c, l, ITEST_WAIT_MS));
    itest_conn a1, a2;
    itest_accept(c, l, &a1);
    ck_assert_msg(wasock_tcp_ready(l), "a second connection waits: still ready");
    itest_accept(c, l, &a2);
    ck_assert_msg(!wasock_tcp_ready(l), "the last waiting connection was taken: not ready");
    ITEST_EXPECT(wasock_tcp_accept(l, &conn, &in, &out), WASOCK_E_WOULD_BLOCK);

    /* The accepted sockets are connected, each to its own plain peer. */
    int peers[2] = {p1, p2};
    itest_conn *accepted[2] = {&a1, &a2};
    for (int k = 0; k < 2; k++) {
        wasock_tcp *s = accepted[k]->s;
        ck_assert(wasock_tcp_ready(s));
        ck_assert(!wasock_tcp_is_listening(s));
        ck_assert_int_eq(wasock_tcp_address_family(s), fam);
        wasock_addr local, remote;
        ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
        ck_assert(itest_addr_equal(&local, &bound));
        ITEST_EXPECT(wasock_tcp_remote_address(s, &remote), WASOCK_OK);
        ck_assert(itest_addr_is_loopback(&remote));
        bool matched = remote.port == itest_plain_local_port(peers[0]) ||
                       remote.port == itest_plain_local_port(peers[1]);
        ck_assert_msg(matched, "accepted remote port %u is neither peer", remote.port);
        int peer = remote.port == itest_plain_local_port(p1) ? p1 : p2;
        itest_send_expect(peer, accepted[k]->in, "to the server");
        itest_send_expect(accepted[k]->out, peer, "to the client");
        /* Connected invariants on an accepted socket. */
        ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
        ITEST_EXPECT(wasock_tcp_start_connect(s, &bound), WASOCK_E_INVALID_STATE);
        ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
        expect_nothing_in_progress(s);
        ITEST_EXPECT(wasock_tcp_accept(s, &conn, &in, &out), WASOCK_E_INVALID_STATE);
    }

    /* A later connection makes the listener ready again. */
    int p3 = itest_plain_connect(fam, bound.port);
    itest_conn a3;
    itest_accept(c, l, &a3);
    ck_assert(!wasock_tcp_ready(l));

    itest_conn_close(&a1);
    itest_conn_close(&a2);
    itest_conn_close(&a3);
    close(p1);
    close(p2);
    close(p3);
    wasock_tcp_drop(l);
    wasock_client_close(c);
}
END_TEST

/* Dropping a listener releases its port. */
START_TEST(test_listener_drop_releases_port) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, fam, &port);
    ck_assert_int_eq(itest_plain_listen_at(fam, NULL, port), -EADDRINUSE);
    wasock_tcp_drop(l);
    /* The drop may complete in the daemon after the call returns: retry
     * within the bound. */
    int fd = -EADDRINUSE;
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    while (fd == -EADDRINUSE && itest_now_ms() < deadline) {
        fd = itest_plain_listen_at(fam, NULL, port);
        if (fd == -EADDRINUSE) {
            usleep(10000);
        }
    }
    ck_assert_msg(fd >= 0, "port %u still taken after drop: %s", port, strerror(-fd));
    close(fd);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ connect */

START_TEST(test_connect_and_connected_invariants) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    int plain_l = itest_plain_listen(fam, &port);
    wasock_addr target = itest_loopback(fam, port);
    wasock_tcp *s = itest_socket(c, fam);
    itest_conn conn;
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        int in = -1, out = -1;
        ITEST_EXPECT(wasock_tcp_finish_connect(s, &in, &out), WASOCK_OK);
        ck_assert(in >= 0 && out >= 0);
        conn = (itest_conn){.s = s, .in = in, .out = out, .own_fds = false};
    } else {
        ITEST_EXPECT(itest_connect(c, s, &target, &conn), WASOCK_OK);
    }
    int peer = itest_plain_accept(plain_l, ITEST_WAIT_MS);
    ck_assert_int_ge(peer, 0);

    ck_assert(wasock_tcp_ready(s));
    ck_assert(!wasock_tcp_is_listening(s));
    wasock_addr local, remote;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert(itest_addr_is_loopback(&local));
    ck_assert_uint_eq(local.port, itest_plain_remote_port(peer));
    ITEST_EXPECT(wasock_tcp_remote_address(s, &remote), WASOCK_OK);
    ck_assert(itest_addr_equal(&remote, &target));

    /* Connected invariants: a socket connects at most once. */
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_listen(s), WASOCK_E_INVALID_STATE);
    expect_nothing_in_progress(s);
    wasock_tcp *other = NULL;
    ITEST_EXPECT(wasock_tcp_accept(s, &other, NULL, NULL), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 10), WASOCK_E_INVALID_STATE);

    itest_send_expect(conn.out, peer, "ping");
    itest_send_expect(peer, conn.in, "pong");

    itest_conn_close(&conn);
    close(peer);
    close(plain_l);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_connect_explicitly_bound) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    int plain_l = itest_plain_listen(fam, &port);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    wasock_addr bound;
    ITEST_EXPECT(wasock_tcp_local_address(s, &bound), WASOCK_OK);
    wasock_addr target = itest_loopback(fam, port);
    itest_conn conn;
    ITEST_EXPECT(itest_connect(c, s, &target, &conn), WASOCK_OK);
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert(itest_addr_equal(&local, &bound));
    int peer = itest_plain_accept(plain_l, ITEST_WAIT_MS);
    ck_assert_int_ge(peer, 0);
    ck_assert_uint_eq(itest_plain_local_port(peer), port);
    itest_send_expect(conn.out, peer, "bound");
    itest_conn_close(&conn);
    close(peer);
    close(plain_l);
    wasock_client_close(c);
}
END_TEST

static void expect_connect_invalid(wasock_client *c, wasock_tcp *s, const wasock_addr *a) {
    char text[WASOCK_ADDR_STRLEN];
    wasock_err e = wasock_client_wasi_version(c) == 2 ? wasock_tcp_start_connect(s, a)
                                                      : wasock_tcp_connect(s, a);
    ck_assert_msg(e == WASOCK_E_INVALID_ARGUMENT, "connect %s: got %s, want invalid-argument",
                  itest_addr_text(a, text, sizeof text), wasock_err_name(e));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_NOT_IN_PROGRESS);
    ck_assert(wasock_tcp_ready(s));
}

static void expect_connect_invalid_text(wasock_client *c, wasock_tcp *s, const char *text) {
    wasock_addr a = itest_addr(text);
    expect_connect_invalid(c, s, &a);
}

START_TEST(test_connect_invalid_addresses) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    int plain_l = itest_plain_listen(fam, &port);
    wasock_tcp *s = itest_socket(c, fam);

    wasock_addr a = itest_loopback(fam, 0); /* port 0 */
    expect_connect_invalid(c, s, &a);
    a = unspecified(fam, port);
    expect_connect_invalid(c, s, &a);
    a = wrong_family_loopback(fam, port);
    expect_connect_invalid(c, s, &a);
    if (fam == WASOCK_IPV4) {
        expect_connect_invalid_text(c, s, "255.255.255.255:80");
        expect_connect_invalid_text(c, s, "224.254.0.0:80");
        expect_connect_invalid_text(c, s, "224.0.0.1:80");
    } else {
        expect_connect_invalid_text(c, s, "[ff00::]:80");
        expect_connect_invalid_text(c, s, "[ff02::1]:80");
        /* v6 sockets are v6-only: an IPv4-mapped address does not reach the
         * IPv4 listener, it is refused. */
        int v4l = itest_plain_listen(WASOCK_IPV4, NULL);
        char text[64];
        snprintf(text, sizeof text, "[::ffff:127.0.0.1]:%u", itest_plain_local_port(v4l));
        expect_connect_invalid_text(c, s, text);
        snprintf(text, sizeof text, "[::127.0.0.1]:%u", itest_plain_local_port(v4l));
        expect_connect_invalid_text(c, s, text);
        close(v4l);
    }
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);

    /* Argument errors never change the state: the socket still connects. */
    wasock_addr target = itest_loopback(fam, port);
    itest_conn conn;
    ITEST_EXPECT(itest_connect(c, s, &target, &conn), WASOCK_OK);
    int peer = itest_plain_accept(plain_l, ITEST_WAIT_MS);
    ck_assert_int_ge(peer, 0);
    itest_conn_close(&conn);
    close(peer);
    close(plain_l);
    wasock_client_close(c);
}
END_TEST

/* Connect checks the state before the address: a listening socket asked to
 * connect to port 0 says invalid-state. */
START_TEST(test_connect_on_listener_checks_state_first) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, fam, &port);
    wasock_addr zero = itest_loopback(fam, 0);
    wasock_addr wrong = wrong_family_loopback(fam, port);
    wasock_addr self = itest_loopback(fam, port);
    ITEST_EXPECT(wasock_tcp_start_connect(l, &zero), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_connect(l, &wrong), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_connect(l, &self), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_connect(l, &zero), WASOCK_E_INVALID_STATE);
    ck_assert(wasock_tcp_is_listening(l));
    wasock_tcp_drop(l);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_connect_refused_closes) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_addr closed = itest_loopback(fam, itest_closed_port(fam));
    wasock_tcp *s = itest_socket(c, fam);
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_connect(s, &closed), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_CONNECTION_REFUSED);
        ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_NOT_IN_PROGRESS);
    } else {
        ITEST_EXPECT(wasock_tcp_connect(s, &closed), WASOCK_E_CONNECTION_REFUSED);
    }
    /* The socket is closed now: it connects at most once, and nothing else
     * brings it back. */
    uint16_t port;
    int plain_l = itest_plain_listen(fam, &port);
    wasock_addr open_target = itest_loopback(fam, port);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &open_target), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_connect(s, &open_target), WASOCK_E_INVALID_STATE);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_shutdown(s, WASOCK_SHUTDOWN_BOTH), WASOCK_E_INVALID_STATE);
    wasock_addr remote;
    ITEST_EXPECT(wasock_tcp_remote_address(s, &remote), WASOCK_E_INVALID_STATE);
    ck_assert(!wasock_tcp_is_listening(s));
    /* Nobody connected to the listener. */
    ck_assert_int_eq(itest_plain_accept(plain_l, 0), -ETIMEDOUT);
    close(plain_l);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* A second start-connect before finish-connect: the first one is in
 * progress until finish-connect takes its result. */
START_TEST(test_connect_twice_while_in_progress) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    uint16_t port;
    int plain_l = itest_plain_listen(fam, &port);
    wasock_addr target = itest_loopback(fam, port);
    wasock_tcp *s = itest_socket(c, fam);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target),
                 wasi == 2 ? WASOCK_E_CONCURRENCY_CONFLICT : WASOCK_E_INVALID_STATE);
    /* Bind while connecting is a state error too. */
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 10), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_NOT_IN_PROGRESS);
    ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_NOT_IN_PROGRESS);
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    int in = -2, out = -2;
    ITEST_EXPECT(wasock_tcp_finish_connect(s, &in, &out), WASOCK_OK);
    if (wasi == 2) {
        ck_assert(in >= 0 && out >= 0);
    } else {
        /* 0.3 sessions take their streams with send/receive. */
        ck_assert_int_eq(in, -1);
        ck_assert_int_eq(out, -1);
        int rin = -1, rout = -1;
        ITEST_EXPECT(wasock_tcp_receive(s, &rin), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_send(s, &rout), WASOCK_OK);
        in = rin;
        out = rout;
    }
    int peer = itest_plain_accept(plain_l, ITEST_WAIT_MS);
    ck_assert_int_ge(peer, 0);
    itest_send_expect(out, peer, "once");
    itest_send_expect(peer, in, "only");
    if (wasi == 3) {
        close(in);
        close(out);
    }
    wasock_tcp_drop(s);
    close(peer);
    close(plain_l);
    wasock_client_close(c);
}
END_TEST

/* A listener whose accept queue is full (backlog 0, one connection queued
 * and not accepted) drops further SYNs, so a connect to it stays in
 * progress until the test accepts the queued connection. This makes
 * "in progress" observable on loopback without timing assumptions. */
typedef struct full_listener {
    int listen_fd;
    int queued_client;
    uint16_t port;
} full_listener;

static void full_listener_open(full_listener *fl, wasock_family fam) {
    fl->listen_fd = itest_plain_listen_at(fam, NULL, 0);
    ck_assert_int_ge(fl->listen_fd, 0);
    ck_assert_int_eq(listen(fl->listen_fd, 0), 0);
    fl->port = itest_plain_local_port(fl->listen_fd);
    fl->queued_client = itest_plain_connect(fam, fl->port);
}

static void full_listener_close(full_listener *fl) {
    close(fl->queued_client);
    close(fl->listen_fd);
}

START_TEST(test_connect_pending_would_block) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    full_listener fl;
    full_listener_open(&fl, fam);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr target = itest_loopback(fam, fl.port);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    /* Readiness changes caused by a request are known when it returns. */
    ck_assert_msg(!wasock_tcp_ready(s), "ready right after start-connect to a full queue");
    /* Let any event the daemon might (wrongly) send arrive. */
    itest_pump(c, 200);
    ck_assert_msg(!wasock_tcp_ready(s), "a connect in progress is not ready");
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_WOULD_BLOCK);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target),
                 wasi == 2 ? WASOCK_E_CONCURRENCY_CONFLICT : WASOCK_E_INVALID_STATE);
    wasock_addr a;
    ITEST_EXPECT(wasock_tcp_remote_address(s, &a), WASOCK_E_INVALID_STATE);
    ck_assert(!wasock_tcp_is_listening(s));
    /* Option getters work in every state. */
    bool ka;
    ITEST_EXPECT(wasock_tcp_keep_alive_enabled(s, &ka), WASOCK_OK);

    /* Make room in the accept queue: the SYN retransmission gets through. */
    int first = itest_plain_accept(fl.listen_fd, ITEST_WAIT_MS);
    ck_assert_int_ge(first, 0);
    ck_assert(itest_wait_ready(c, s, 3 * ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_OK);
    int second = itest_plain_accept(fl.listen_fd, ITEST_WAIT_MS);
    ck_assert_int_ge(second, 0);
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert_uint_eq(local.port, itest_plain_remote_port(second));

    close(first);
    close(second);
    full_listener_close(&fl);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* Dropping a socket whose connect is still in progress cancels it and
 * leaves nothing behind in the daemon. */
START_TEST(test_drop_while_connecting) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    itest_daemon *d = itest_fixture_daemon();
    wasock_client *c = itest_client_open(d, wasi, NULL);
    wasock_tcp *warm = itest_socket(c, fam);
    wasock_tcp_drop(warm);
    int before = itest_daemon_settled_fd_count(d);
    full_listener fl;
    full_listener_open(&fl, fam);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr target = itest_loopback(fam, fl.port);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    itest_pump(c, 50);
    ck_assert(!wasock_tcp_ready(s));
    wasock_tcp_drop(s);
    int after = itest_daemon_wait_fd_count(d, before, ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds: %d before, %d after the drop", before, after);
    /* The session still works. */
    wasock_tcp *t = itest_socket(c, fam);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, t, &lo), WASOCK_OK);
    wasock_tcp_drop(t);
    full_listener_close(&fl);
    wasock_client_close(c);
    ck_assert(itest_daemon_alive(d));
}
END_TEST

/* Drop in every state, then the daemon holds no more descriptors than
 * before. */
START_TEST(test_drop_in_every_state) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    itest_daemon *d = itest_fixture_daemon();
    wasock_client *c = itest_client_open(d, wasi, NULL);
    wasock_tcp *warm = itest_socket(c, fam);
    wasock_tcp_drop(warm);
    int before = itest_daemon_settled_fd_count(d);

    wasock_tcp *unbound = itest_socket(c, fam);
    wasock_tcp *bound = itest_socket(c, fam);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, bound, &lo), WASOCK_OK);
    uint16_t port;
    wasock_tcp *listener = itest_listener(c, fam, &port);
    itest_conn client, server;
    itest_connect_to(c, fam, port, &client);
    itest_accept(c, listener, &server);
    itest_send_expect(client.out, server.in, "x");
    wasock_tcp *refused = itest_socket(c, fam);
    wasock_addr closed = itest_loopback(fam, itest_closed_port(fam));
    ck_assert(itest_connect(c, refused, &closed, NULL) == WASOCK_E_CONNECTION_REFUSED);

    wasock_tcp_drop(unbound);
    wasock_tcp_drop(bound);
    wasock_tcp_drop(refused);
    itest_conn_close(&client);
    itest_conn_close(&server);
    wasock_tcp_drop(listener);
    wasock_tcp_drop(NULL);

    int after = itest_daemon_wait_fd_count(d, before, ITEST_WAIT_MS);
    ck_assert_msg(after <= before, "daemon fds: %d before, %d after dropping", before, after);
    wasock_client_close(c);
}
END_TEST

static Suite *tcp_states_suite(void) {
    Suite *s = suite_create("tcp-states");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"unbound", test_unbound_invariants},
        {"bind", test_bind_loopback_ephemeral},
        {"bind_specific_port", test_bind_specific_port},
        {"bind_invalid_address", test_bind_invalid_addresses},
        {"bind_address_in_use", test_bind_address_in_use},
        {"bind_reuseaddr", test_bind_reuseaddr},
        {"listen_accept", test_listen_and_accept},
        {"listener_drop", test_listener_drop_releases_port},
        {"connect", test_connect_and_connected_invariants},
        {"connect_bound", test_connect_explicitly_bound},
        {"connect_invalid_address", test_connect_invalid_addresses},
        {"connect_on_listener", test_connect_on_listener_checks_state_first},
        {"connect_refused", test_connect_refused_closes},
        {"connect_twice", test_connect_twice_while_in_progress},
        {"connect_pending", test_connect_pending_would_block},
        {"drop_connecting", test_drop_while_connecting},
        {"drop_every_state", test_drop_in_every_state},
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
    return itest_run_suite(tcp_states_suite());
}
