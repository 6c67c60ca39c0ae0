/* check-handoff.c — integration tests of handoff: a policy rule with
 * `allow: { data_path: handoff }` makes wasockd pass the connected TCP
 * socket itself to the client instead of relay pipes, and forget it.
 *
 * Each test starts the real daemon with a policy whose tcp.connect rule for
 * one loopback port hands off and whose other rules relay, connects through
 * libwasock in both WASI shapes, and checks the bytes, shutdown, the
 * options and addresses libwasock answers on the socket, and that the
 * daemon keeps no descriptor of a handed-off connection. Peers are plain
 * loopback sockets; every wait is bounded (harness.h).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* A policy for the current user: tcp.connect to loopback port `handoff
 * port` and connections accepted from 127.0.0.2 are handed off, everything
 * else on loopback is relayed. */
static const char handoff_policy_fmt[] =
    "version: 1\n"
    "defaults: { action: deny, implicit_bind: follow-connect }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u, 0 ], token: none }\n"
    "    protocols: [ tcp ]\n"
    "    default: deny\n"
    "    rules:\n"
    "      - id: handoff-connect\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        ports: [ %u ]\n"
    "        action: allow\n"
    "        allow: { data_path: handoff }\n"
    "      - id: handoff-accept\n"
    "        ops: [ tcp.accept ]\n"
    "        remote: [ \"127.0.0.2/32\" ]\n"
    "        action: allow\n"
    "        allow: { data_path: handoff }\n"
    "      - id: loopback-relayed\n"
    "        ops: [ any ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: allow\n";

/* Longest payload the tests exchange at once. */
#define HANDOFF_TEXT_MAX 64

/* A TCP socket, as handoff gives; relayed streams are pipes and (protocol
 * 3) a Unix stream socket for the output. */
static bool fd_is_tcp_socket(int fd) {
    struct stat st;
    int domain = 0;
    socklen_t len = sizeof domain;

    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
           getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
           (domain == AF_INET || domain == AF_INET6);
}

/* Starts a daemon whose handoff rule names handoff_port. */
static void start_daemon(itest_daemon *d, uint16_t handoff_port) {
    char policy[sizeof(handoff_policy_fmt) + 32];

    snprintf(policy, sizeof(policy), handoff_policy_fmt, (unsigned)getuid(),
             (unsigned)handoff_port);
    itest_daemon_start(d, policy);
}

/* Sends text from one descriptor and checks it arrives on the other. */
static void expect_bytes(int from, int to, const char *text) {
    char buf[HANDOFF_TEXT_MAX];
    size_t len = strlen(text);

    ck_assert_int_eq(itest_write_all(from, text, len, ITEST_WAIT_MS), 0);
    ck_assert_int_eq(itest_read_exact(to, buf, len, ITEST_WAIT_MS), (ssize_t)len);
    ck_assert(memcmp(buf, text, len) == 0);
}

/* Bytes both ways in both shapes; the stream descriptors are the socket
 * (0.2: one descriptor for both; 0.3: one duplicate per direction). */
START_TEST(test_handoff_bytes_both_ways) {
    itest_daemon d;
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);

    start_daemon(&d, port);
    for (int wasi = 2; wasi <= 3; wasi++) {
        wasock_client *c = itest_client_open(&d, wasi, NULL);
        itest_conn conn;
        int peer;

        itest_connect_to(c, WASOCK_IPV4, port, &conn);
        peer = itest_plain_accept(lfd, ITEST_WAIT_MS);
        ck_assert(fd_is_tcp_socket(conn.in));
        ck_assert(fd_is_tcp_socket(conn.out));
        if (wasi == 2) {
            ck_assert_int_eq(conn.in, conn.out);
        } else {
            ck_assert_int_ne(conn.in, conn.out);
        }
        expect_bytes(conn.out, peer, "to the peer");
        expect_bytes(peer, conn.in, "from the peer");
        itest_conn_close(&conn);
        /* The client closed the last copy: the peer sees the end. */
        ck_assert_int_eq(itest_read_to_eof(peer, ITEST_WAIT_MS), 0);
        close(peer);
        wasock_client_close(c);
    }
    close(lfd);
    itest_daemon_stop(&d);
}
END_TEST

/* shutdown(send) ends the client's direction with a FIN after its bytes;
 * the other direction keeps working; options and addresses are answered
 * on the socket. */
START_TEST(test_handoff_shutdown_and_local_answers) {
    itest_daemon d;
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_client *c;
    itest_conn conn;
    wasock_addr remote, local;
    uint64_t idle = 0;
    bool enabled = false;
    char buf[HANDOFF_TEXT_MAX];
    int peer;

    start_daemon(&d, port);
    c = itest_client_open(&d, 2, NULL);
    itest_connect_to(c, WASOCK_IPV4, port, &conn);
    peer = itest_plain_accept(lfd, ITEST_WAIT_MS);

    ITEST_EXPECT(wasock_tcp_remote_address(conn.s, &remote), WASOCK_OK);
    ck_assert_uint_eq(remote.port, port);
    ck_assert(itest_addr_is_loopback(&remote));
    ITEST_EXPECT(wasock_tcp_local_address(conn.s, &local), WASOCK_OK);
    ck_assert_uint_eq(local.port, itest_plain_remote_port(peer));
    ITEST_EXPECT(wasock_tcp_set_keep_alive_enabled(conn.s, true), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_enabled(conn.s, &enabled), WASOCK_OK);
    ck_assert(enabled);
    /* 1 ns rounds up to one second, as the daemon does it. */
    ITEST_EXPECT(wasock_tcp_set_keep_alive_idle_time(conn.s, 1), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_idle_time(conn.s, &idle), WASOCK_OK);
    ck_assert_uint_eq(idle, 1000000000ull);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_count(conn.s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(conn.s, 10), WASOCK_E_INVALID_STATE);

    ck_assert_int_eq(itest_write_all(conn.out, "last words", 10, ITEST_WAIT_MS), 0);
    ITEST_EXPECT(wasock_tcp_shutdown(conn.s, WASOCK_SHUTDOWN_SEND), WASOCK_OK);
    ck_assert_int_eq(itest_read_exact(peer, buf, 10, ITEST_WAIT_MS), 10);
    ck_assert(memcmp(buf, "last words", 10) == 0);
    ck_assert_int_eq(itest_read_to_eof(peer, ITEST_WAIT_MS), 0);
    expect_bytes(peer, conn.in, "still open");

    /* Both directions: the stream descriptor keeps its number and reads
     * EOF at once; the addresses stay readable. */
    ITEST_EXPECT(wasock_tcp_shutdown(conn.s, WASOCK_SHUTDOWN_BOTH), WASOCK_OK);
    ck_assert_int_eq(itest_read_to_eof(conn.in, ITEST_WAIT_MS), 0);
    ITEST_EXPECT(wasock_tcp_remote_address(conn.s, &remote), WASOCK_OK);
    itest_conn_close(&conn);
    close(peer);
    wasock_client_close(c);
    close(lfd);
    itest_daemon_stop(&d);
}
END_TEST

/* Once handed off, the daemon holds no descriptor of the connection (a
 * relayed one costs it the socket and two pipe ends), also in 0.3 once
 * both streams were taken; dropping the handle afterwards is fine. */
START_TEST(test_handoff_daemon_forgets_socket) {
    itest_daemon d;
    uint16_t handoff_port, relay_port;
    int handoff_lfd = itest_plain_listen(WASOCK_IPV4, &handoff_port);
    int relay_lfd = itest_plain_listen(WASOCK_IPV4, &relay_port);

    start_daemon(&d, handoff_port);
    for (int wasi = 2; wasi <= 3; wasi++) {
        wasock_client *c = itest_client_open(&d, wasi, NULL);
        itest_conn handed, relayed;
        int base, with_handoff, with_relay, peer1, peer2;

        base = itest_daemon_settled_fd_count(&d);
        ck_assert_int_gt(base, 0);
        itest_connect_to(c, WASOCK_IPV4, handoff_port, &handed);
        peer1 = itest_plain_accept(handoff_lfd, ITEST_WAIT_MS);
        with_handoff = itest_daemon_settled_fd_count(&d);
        ck_assert_int_eq(with_handoff, base);

        /* The relay rule on the other port: relay streams, and the daemon's share. */
        itest_connect_to(c, WASOCK_IPV4, relay_port, &relayed);
        peer2 = itest_plain_accept(relay_lfd, ITEST_WAIT_MS);
        ck_assert(!fd_is_tcp_socket(relayed.in));
        ck_assert(!fd_is_tcp_socket(relayed.out));
        ck_assert_int_ne(relayed.in, relayed.out);
        with_relay = itest_daemon_settled_fd_count(&d);
        ck_assert_int_eq(with_relay, base + 3);
        expect_bytes(relayed.out, peer2, "relayed");

        /* Still usable although the daemon forgot it. */
        expect_bytes(handed.out, peer1, "handed off");
        itest_conn_close(&handed);
        itest_conn_close(&relayed);
        ck_assert_int_eq(itest_daemon_wait_fd_count(&d, base, ITEST_WAIT_MS), base);
        close(peer1);
        close(peer2);
        wasock_client_close(c);
    }
    close(handoff_lfd);
    close(relay_lfd);
    itest_daemon_stop(&d);
}
END_TEST

/* In a 0.3 session the daemon keeps the socket until both streams are
 * taken, and answers for it meanwhile. */
START_TEST(test_handoff_0_3_before_streams) {
    itest_daemon d;
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_client *c;
    wasock_tcp *s;
    wasock_addr target = itest_loopback(WASOCK_IPV4, port), remote;
    int in = -1, out = -1, peer, base;

    start_daemon(&d, port);
    c = itest_client_open(&d, 3, NULL);
    base = itest_daemon_settled_fd_count(&d);
    s = itest_socket(c, WASOCK_IPV4);
    ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_OK);
    peer = itest_plain_accept(lfd, ITEST_WAIT_MS);
    ITEST_EXPECT(wasock_tcp_remote_address(s, &remote), WASOCK_OK);
    ck_assert_uint_eq(remote.port, port);
    ITEST_EXPECT(wasock_tcp_send(s, &out), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_send(s, &out), WASOCK_E_INVALID_STATE);
    ck_assert(itest_daemon_settled_fd_count(&d) > base);
    ITEST_EXPECT(wasock_tcp_receive(s, &in), WASOCK_OK);
    ck_assert_int_eq(itest_daemon_settled_fd_count(&d), base);
    expect_bytes(out, peer, "0.3 out");
    expect_bytes(peer, in, "0.3 in");
    wasock_tcp_drop(s);
    close(in);
    close(out);
    ck_assert_int_eq(itest_read_to_eof(peer, ITEST_WAIT_MS), 0);
    close(peer);
    wasock_client_close(c);
    close(lfd);
    itest_daemon_stop(&d);
}
END_TEST

/* A connection accepted under a handoff rule is the socket itself (0.2: one
 * descriptor; 0.3: a duplicate per stream), and the daemon keeps none of
 * it; one accepted under the relay rule gets pipes as before. */
START_TEST(test_handoff_accepted_connections) {
    itest_daemon d;

    start_daemon(&d, 1);
    for (int wasi = 2; wasi <= 3; wasi++) {
        wasock_client *c = itest_client_open(&d, wasi, NULL);
        uint16_t port;
        wasock_tcp *listener = itest_listener(c, WASOCK_IPV4, &port);
        itest_conn handed, relayed;
        int base = itest_daemon_settled_fd_count(&d);
        int peer1 = itest_plain_connect_start(WASOCK_IPV4, "127.0.0.2", port);

        ck_assert_int_ge(peer1, 0);
        itest_accept(c, listener, &handed);
        ck_assert(fd_is_tcp_socket(handed.in));
        ck_assert(fd_is_tcp_socket(handed.out));
        ck_assert(wasi == 2 ? handed.in == handed.out : handed.in != handed.out);
        expect_bytes(handed.out, peer1, "accepted, handed off");
        expect_bytes(peer1, handed.in, "and back");
        ck_assert_int_eq(itest_daemon_settled_fd_count(&d), base);

        int peer2 = itest_plain_connect_start(WASOCK_IPV4, "127.0.0.1", port);
        ck_assert_int_ge(peer2, 0);
        itest_accept(c, listener, &relayed);
        ck_assert(!fd_is_tcp_socket(relayed.in));
        ck_assert(!fd_is_tcp_socket(relayed.out));
        expect_bytes(relayed.out, peer2, "accepted, relayed");
        expect_bytes(peer2, relayed.in, "and back");

        itest_conn_close(&handed);
        ck_assert_int_eq(itest_read_to_eof(peer1, ITEST_WAIT_MS), 0);
        itest_conn_close(&relayed);
        ck_assert_int_eq(itest_read_to_eof(peer2, ITEST_WAIT_MS), 0);
        ck_assert_int_eq(itest_daemon_wait_fd_count(&d, base, ITEST_WAIT_MS), base);
        close(peer1);
        close(peer2);
        wasock_tcp_drop(listener);
        wasock_client_close(c);
    }
    itest_daemon_stop(&d);
}
END_TEST

static Suite *handoff_suite(void) {
    Suite *s = suite_create("handoff");
    TCase *tc;

    tc = tcase_create("bytes");
    itest_tcase_defaults(tc);
    tcase_add_test(tc, test_handoff_bytes_both_ways);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    itest_tcase_defaults(tc);
    tcase_add_test(tc, test_handoff_shutdown_and_local_answers);
    suite_add_tcase(s, tc);

    tc = tcase_create("forgets");
    itest_tcase_defaults(tc);
    tcase_add_test(tc, test_handoff_daemon_forgets_socket);
    tcase_add_test(tc, test_handoff_0_3_before_streams);
    suite_add_tcase(s, tc);

    tc = tcase_create("accepted");
    itest_tcase_defaults(tc);
    tcase_add_test(tc, test_handoff_accepted_connections);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return itest_run_suite(handoff_suite());
}
