/* check-udp-policy.c — integration tests of the policy on UDP sockets in
 * the real wasockd: a tenant without UDP, the socket limit, refused
 * destinations (udp.send) reported by the send call itself and with a
 * rule's own error, refused associations (udp.connect), refused sources
 * (udp.receive) dropped and counted, refused binds, and the per-socket
 * approval cache invalidated by a policy reload (SIGHUP).
 *
 * Trusts: the harness (harness.h, udp-harness.h) and the kernel's loopback.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "udp-harness.h"

/* Loopback ports the policies treat specially, below Linux's ephemeral
 * range so no kernel-chosen port falls into them. */
#define DENIED_SEND_FIRST    24100
#define DENIED_SEND_LAST     24149
#define REFUSED_SEND_FIRST   24150
#define REFUSED_SEND_LAST    24199
#define DENIED_CONNECT_FIRST 24200
#define DENIED_CONNECT_LAST  24249
#define DENIED_SOURCE_FIRST  24250
#define DENIED_SOURCE_LAST   24299
#define DENIED_BIND_FIRST    24300
#define DENIED_BIND_LAST     24349

/* The socket limit of the tenant. */
#define LIMITED_SOCKETS 3

#define POLICY_TEXT_MAX 8192

static const char policy_fmt[] = "version: 1\n"
                                 "defaults: { action: deny, implicit_bind: follow-connect }\n"
                                 "tenants:\n"
                                 "  default:\n"
                                 "    match: { uids: [ %u, 0 ], token: none }\n"
                                 "    protocols: [ tcp, udp ]\n"
                                 "    limits: { sockets: %u }\n"
                                 "    rules:\n"
                                 "      - id: no-send-range\n"
                                 "        ops: [ udp.send ]\n"
                                 "        ports: [ \"%u-%u\" ]\n"
                                 "        action: deny\n"
                                 "      - id: refused-send-range\n"
                                 "        ops: [ udp.send ]\n"
                                 "        ports: [ \"%u-%u\" ]\n"
                                 "        action: deny\n"
                                 "        deny: { error: connection-refused }\n"
                                 "      - id: no-connect-range\n"
                                 "        ops: [ udp.connect ]\n"
                                 "        ports: [ \"%u-%u\" ]\n"
                                 "        action: deny\n"
                                 "      - id: no-source-range\n"
                                 "        ops: [ udp.receive ]\n"
                                 "        ports: [ \"%u-%u\" ]\n"
                                 "        action: deny\n"
                                 "      - id: no-bind-range\n"
                                 "        ops: [ udp.bind ]\n"
                                 "        local_ports: [ \"%u-%u\" ]\n"
                                 "        action: deny\n"
                                 "%s"
                                 "      - id: loopback\n"
                                 "        ops: [ any ]\n"
                                 "        local: [ \"@loopback\" ]\n"
                                 "        remote: [ \"@loopback\" ]\n"
                                 "        action: allow\n"
                                 "  tcp-only:\n"
                                 "    match: { uids: [ %u, 0 ], token: none }\n"
                                 "    protocols: [ tcp ]\n";

static itest_daemon policy_daemon;

static void write_policy(char *text, size_t len, const char *extra) {
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, len, policy_fmt, uid, LIMITED_SOCKETS, DENIED_SEND_FIRST,
                     DENIED_SEND_LAST, REFUSED_SEND_FIRST, REFUSED_SEND_LAST, DENIED_CONNECT_FIRST,
                     DENIED_CONNECT_LAST, DENIED_SOURCE_FIRST, DENIED_SOURCE_LAST,
                     DENIED_BIND_FIRST, DENIED_BIND_LAST, extra, uid);
    ck_assert(n > 0 && n < (int)len);
}

static void policy_setup(void) {
    char text[POLICY_TEXT_MAX];
    write_policy(text, sizeof text, "");
    itest_daemon_start(&policy_daemon, text);
}

static void policy_teardown(void) {
    itest_daemon_stop(&policy_daemon);
}

/* A plain UDP socket bound to a loopback port in [first, last]. */
static int plain_in_range(wasock_family f, uint16_t first, uint16_t last, uint16_t *port) {
    for (unsigned p = first; p <= last; p++) {
        int fd = socket(f == WASOCK_IPV4 ? AF_INET : AF_INET6,
                        SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        wasock_addr a = itest_loopback(f, (uint16_t)p);
        struct sockaddr_storage ss;
        unsigned len = wasock_addr_to_sockaddr(&a, &ss);
        ck_assert_int_ge(fd, 0);
        if (bind(fd, (struct sockaddr *)&ss, len) == 0) {
            *port = (uint16_t)p;
            return fd;
        }
        close(fd);
    }
    ck_abort_msg("no free loopback port in %u-%u", first, last);
    return -1;
}

START_TEST(test_tenant_without_udp) {
    wasock_client *c = itest_client_open(&policy_daemon, 2, "tcp-only");
    wasock_udp *u = NULL;

    ITEST_EXPECT(wasock_udp_create(c, WASOCK_IPV4, &u), WASOCK_E_ACCESS_DENIED);
    ck_assert_ptr_null(u);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_socket_limit) {
    wasock_client *c = itest_client_open(&policy_daemon, 2, NULL);
    wasock_udp *u[LIMITED_SOCKETS], *extra = NULL;
    wasock_tcp *t = NULL;

    for (int i = 0; i < LIMITED_SOCKETS; i++) {
        u[i] = iudp_socket(c, WASOCK_IPV4);
    }
    ITEST_EXPECT(wasock_udp_create(c, WASOCK_IPV4, &extra), WASOCK_E_NEW_SOCKET_LIMIT);
    /* UDP sockets count against the limit of all kinds. */
    ITEST_EXPECT(wasock_tcp_create(c, WASOCK_IPV4, &t), WASOCK_E_NEW_SOCKET_LIMIT);
    wasock_udp_drop(u[0]);
    extra = iudp_socket(c, WASOCK_IPV4);
    wasock_udp_drop(extra);
    for (int i = 1; i < LIMITED_SOCKETS; i++) {
        wasock_udp_drop(u[i]);
    }
    wasock_client_close(c);
}
END_TEST

/* A refused destination is the send's own result; other destinations of
 * the same socket still work. */
START_TEST(test_refused_destinations) {
    int version;
    wasock_family f;
    if (!itest_variant(_i, &version, &f)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t denied_port, refused_port, ok_port;
    int denied = plain_in_range(f, DENIED_SEND_FIRST, DENIED_SEND_LAST, &denied_port);
    int refused = plain_in_range(f, REFUSED_SEND_FIRST, REFUSED_SEND_LAST, &refused_port);
    int ok = iudp_plain_socket(f, &ok_port);
    wasock_datagram d[2] = {{.data = (const uint8_t *)"a", .len = 1, .has_remote = true},
                            {.data = (const uint8_t *)"b", .len = 1, .has_remote = true}};
    uint64_t sent = 0, dropped = 99;
    uint8_t buf[16];

    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(iudp_open(c, u, NULL), WASOCK_OK);
    d[0].remote = itest_loopback(f, denied_port);
    ITEST_EXPECT(iudp_send(c, u, d, 1, &sent), WASOCK_E_ACCESS_DENIED);
    d[0].remote = itest_loopback(f, refused_port);
    ITEST_EXPECT(iudp_send(c, u, d, 1, &sent), WASOCK_E_CONNECTION_REFUSED);
    /* A batch stops at the refused datagram but reports what went out. */
    d[0].remote = itest_loopback(f, ok_port);
    d[1].remote = itest_loopback(f, denied_port);
    ITEST_EXPECT(iudp_send(c, u, d, 2, &sent), WASOCK_OK);
    ck_assert_uint_eq(sent, 1);
    ck_assert_int_eq(iudp_plain_recv(ok, buf, sizeof buf, ITEST_WAIT_MS, NULL), 1);
    ck_assert_int_eq(buf[0], 'a');
    itest_pump(c, 50);
    ck_assert_int_eq(iudp_plain_recv(denied, buf, sizeof buf, 0, NULL), -ETIMEDOUT);
    ck_assert_int_eq(iudp_plain_recv(refused, buf, sizeof buf, 0, NULL), -ETIMEDOUT);
    /* Nothing reached the daemon's channel for the refused ones. */
    ITEST_EXPECT(wasock_udp_dropped_datagrams(u, &dropped), WASOCK_OK);
    ck_assert_uint_eq(dropped, 0);

    close(denied);
    close(refused);
    close(ok);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_refused_association_and_bind) {
    int version;
    wasock_family f;
    if (!itest_variant(_i, &version, &f)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t port, bind_port;
    int peer = plain_in_range(f, DENIED_CONNECT_FIRST, DENIED_CONNECT_LAST, &port);
    int blocker = plain_in_range(f, DENIED_BIND_FIRST, DENIED_BIND_LAST, &bind_port);
    wasock_addr to = itest_loopback(f, port), a;

    /* The bind range: refused by policy (before the kernel would have said
     * address-in-use for the port the blocker holds). */
    close(blocker);
    wasock_addr local = itest_loopback(f, bind_port);
    ITEST_EXPECT(iudp_bind(c, u, &local), WASOCK_E_ACCESS_DENIED);
    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(iudp_open(c, u, &to), WASOCK_E_ACCESS_DENIED);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_E_INVALID_STATE);
    close(peer);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* Datagrams from a refused source never reach the guest; they are
 * counted. */
START_TEST(test_refused_sources) {
    int version;
    wasock_family f;
    if (!itest_variant(_i, &version, &f)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    wasock_addr local = iudp_bind_loopback(c, u, f);
    uint16_t bad_port, good_port;
    int bad = plain_in_range(f, DENIED_SOURCE_FIRST, DENIED_SOURCE_LAST, &bad_port);
    int good = iudp_plain_socket(f, &good_port);
    static uint8_t buf[3 * WASOCK_DATAGRAM_MAX];
    wasock_datagram got[4];
    uint64_t dropped = 0;

    ITEST_EXPECT(iudp_open(c, u, NULL), WASOCK_OK);
    iudp_plain_send(bad, f, local.port, "bad", 3);
    iudp_plain_send(good, f, local.port, "good", 4);
    ck_assert_uint_eq(iudp_receive_wait(c, u, got, 4, buf, sizeof buf, 1, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(got[0].len, 4);
    ck_assert_mem_eq(got[0].data, "good", 4);
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    while (dropped == 0 && itest_now_ms() < deadline) {
        ITEST_EXPECT(wasock_udp_dropped_datagrams(u, &dropped), WASOCK_OK);
        if (dropped == 0) {
            itest_pump(c, 10);
        }
    }
    ck_assert_uint_eq(dropped, 1);
    ck_assert_uint_eq(iudp_receive_wait(c, u, got, 4, buf, sizeof buf, 1, 0), 0);
    close(bad);
    close(good);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* Rewrites the daemon's policy file and reloads it with SIGHUP, waiting
 * (bounded) for the daemon to say so. */
static void reload_policy(const char *text, int reloads_before) {
    FILE *f = fopen(policy_daemon.policy_path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(kill(policy_daemon.pid, SIGHUP), 0);
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    for (;;) {
        /* Count the reload messages in the log. */
        char path[ITEST_PATH_MAX];
        snprintf(path, sizeof path, "%s", policy_daemon.log_path);
        FILE *log = fopen(path, "r");
        int reloads = 0;
        char line[512];
        ck_assert_ptr_nonnull(log);
        while (fgets(line, sizeof line, log) != NULL) {
            reloads += strstr(line, "policy reloaded") != NULL;
        }
        fclose(log);
        if (reloads > reloads_before) {
            return;
        }
        ck_assert_msg(itest_now_ms() < deadline, "the daemon did not reload its policy");
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* A destination approved before a reload is decided again after it: the
 * first datagram after the reload is dropped and reported, the next send
 * asks again and is refused. */
START_TEST(test_reload_invalidates_cache) {
    int version;
    wasock_family f;
    if (!itest_variant(_i, &version, &f)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t port;
    int peer = iudp_plain_socket(f, &port);
    wasock_datagram d = {.data = (const uint8_t *)"x", .len = 1, .has_remote = true};
    uint64_t sent = 0, dropped = 0;
    uint8_t buf[16];
    char text[POLICY_TEXT_MAX], extra[256];

    d.remote = itest_loopback(f, port);
    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(iudp_open(c, u, NULL), WASOCK_OK);
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, NULL), 1);

    /* The new policy refuses the peer's port. */
    snprintf(extra, sizeof extra,
             "      - id: now-refused\n"
             "        ops: [ udp.send ]\n"
             "        ports: [ %u ]\n"
             "        action: deny\n",
             (unsigned)port);
    write_policy(text, sizeof text, extra);
    reload_policy(text, 0);

    /* libwasock still thinks the destination approved: the daemon decides
     * again, drops the datagram and reports it. */
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    while (dropped == 0 && itest_now_ms() < deadline) {
        ITEST_EXPECT(wasock_udp_dropped_datagrams(u, &dropped), WASOCK_OK);
        if (dropped == 0) {
            itest_pump(c, 10);
        }
    }
    ck_assert_uint_eq(dropped, 1);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, 0, NULL), -ETIMEDOUT);
    /* The report is the next send's result, and the one after asks again. */
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_E_ACCESS_DENIED);
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_E_ACCESS_DENIED);
    /* Back to the first policy: allowed again. */
    write_policy(text, sizeof text, "");
    reload_policy(text, 1);
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, NULL), 1);

    close(peer);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

static void add_case(Suite *s, const char *name, const TTest *test, bool variants) {
    TCase *tc = tcase_create(name);
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, policy_setup, policy_teardown);
    if (variants) {
        tcase_add_loop_test(tc, test, 0, ITEST_VARIANTS);
    } else {
        tcase_add_test(tc, test);
    }
    suite_add_tcase(s, tc);
}

static Suite *udp_policy_suite(void) {
    Suite *s = suite_create("udp-policy");
    add_case(s, "no_udp", test_tenant_without_udp, false);
    add_case(s, "socket_limit", test_socket_limit, false);
    add_case(s, "refused_destinations", test_refused_destinations, true);
    add_case(s, "refused_association", test_refused_association_and_bind, true);
    add_case(s, "refused_sources", test_refused_sources, true);
    add_case(s, "reload", test_reload_invalidates_cache, true);
    return s;
}

int main(void) {
    return itest_run_suite(udp_policy_suite());
}
