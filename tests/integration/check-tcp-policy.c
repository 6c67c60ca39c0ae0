/* check-tcp-policy.c — integration tests of policy enforcement in the real
 * wasockd: the built-in default (loopback only) refusing other addresses
 * before any packet leaves, and small policy files: everything allowed
 * (to reach the kernel's own answers), denied loopback port ranges for
 * connect and bind, a refused accept, a tenant without TCP, a socket limit,
 * a tenant for another uid, and a broken file the daemon refuses.
 *
 * Trusts: the harness (harness.h). The addresses 192.0.2.0/24 and
 * 2001:db8::/32 are documentation ranges: never reachable, and the policies
 * here refuse them before the daemon would send anything.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* Loopback ports the deny policy refuses, below Linux's ephemeral range
 * (32768-60999) so no kernel-chosen port falls into them. */
#define DENIED_CONNECT_FIRST  23100
#define DENIED_CONNECT_LAST   23149
#define DENIED_BIND_FIRST     23150
#define DENIED_BIND_LAST      23199
#define REFUSED_CONNECT_FIRST 23200
#define REFUSED_CONNECT_LAST  23249
#define DENIED_LISTEN_FIRST   23250
#define DENIED_LISTEN_LAST    23299

/* The socket limit of the "limited" tenant. */
#define LIMITED_SOCKETS 3

/* Room for a policy text with a few numbers filled in. */
#define POLICY_TEXT_MAX 4096

static const char permissive_policy_fmt[] =
    "version: 1\n"
    "defaults: { action: deny, implicit_bind: follow-connect }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u, 0 ], token: none }\n"
    "    protocols: [ tcp, udp ]\n"
    "    default: deny\n"
    "    rules:\n"
    "      - id: everything\n"
    "        ops: [ any ]\n"
    "        action: allow\n";

static const char restrictive_policy_fmt[] =
    "version: 1\n"
    "defaults: { action: deny, implicit_bind: follow-connect }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u, 0 ], token: none }\n"
    "    protocols: [ tcp ]\n"
    "    default: deny\n"
    "    rules:\n"
    "      - id: no-connect-range\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        ports: [ \"%u-%u\" ]\n"
    "        action: deny\n"
    "      - id: refused-connect-range\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        ports: [ \"%u-%u\" ]\n"
    "        action: deny\n"
    "        deny: { error: connection-refused }\n"
    "      - id: no-bind-range\n"
    "        ops: [ tcp.bind ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        local_ports: [ \"%u-%u\" ]\n"
    "        action: deny\n"
    "      - id: no-listen-range\n"
    "        ops: [ tcp.listen ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        local_ports: [ \"%u-%u\" ]\n"
    "        action: deny\n"
    "      - id: no-accept-from-127-0-0-2\n"
    "        ops: [ tcp.accept ]\n"
    "        remote: [ \"127.0.0.2\" ]\n"
    "        action: deny\n"
    "      - id: loopback\n"
    "        ops: [ any ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: allow\n"
    "  udp-only:\n"
    "    match: { uids: [ %u, 0 ], token: none }\n"
    "    protocols: [ udp ]\n"
    "    default: deny\n"
    "  limited:\n"
    "    match: { uids: [ %u, 0 ], token: none }\n"
    "    protocols: [ tcp ]\n"
    "    default: deny\n"
    "    limits: { sockets: %u }\n"
    "    rules:\n"
    "      - id: limited-loopback\n"
    "        ops: [ any ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: allow\n"
    "  somebody-else:\n"
    "    match: { uids: [ 65534 ], token: none }\n"
    "    protocols: [ tcp ]\n"
    "    default: deny\n";

static itest_daemon policy_daemon;

static void start_with_policy(const char *text) {
    itest_daemon_start(&policy_daemon, text);
}

static void permissive_setup(void) {
    char text[POLICY_TEXT_MAX];
    int n = snprintf(text, sizeof text, permissive_policy_fmt, (unsigned)getuid());
    ck_assert(n > 0 && n < (int)sizeof text);
    start_with_policy(text);
}

static void restrictive_setup(void) {
    char text[POLICY_TEXT_MAX];
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, sizeof text, restrictive_policy_fmt, uid, DENIED_CONNECT_FIRST,
                     DENIED_CONNECT_LAST, REFUSED_CONNECT_FIRST, REFUSED_CONNECT_LAST,
                     DENIED_BIND_FIRST, DENIED_BIND_LAST, DENIED_LISTEN_FIRST, DENIED_LISTEN_LAST,
                     uid, uid, LIMITED_SOCKETS);
    ck_assert(n > 0 && n < (int)sizeof text);
    start_with_policy(text);
}

static void policy_teardown(void) {
    itest_daemon_stop(&policy_daemon);
}

static const char *documentation_address(wasock_family f) {
    return f == WASOCK_IPV4 ? "192.0.2.1" : "[2001:db8::1]";
}

static wasock_addr documentation(wasock_family f, uint16_t port) {
    char text[64];
    snprintf(text, sizeof text, "%s:%u", documentation_address(f), port);
    return itest_addr(text);
}

/* A plain loopback listener on some port in [first, last]; asserts. */
static int plain_listen_in_range(wasock_family f, uint16_t first, uint16_t last, uint16_t *port) {
    for (unsigned p = first; p <= last; p++) {
        int fd = itest_plain_listen_at(f, NULL, (uint16_t)p);
        if (fd >= 0) {
            *port = (uint16_t)p;
            return fd;
        }
    }
    ck_abort_msg("no free loopback port in %u-%u", first, last);
    return -1;
}

/* Expects a connect that the policy refuses: 0.2 start-connect succeeds
 * and finish-connect returns `want`; the socket is closed afterwards. */
static void expect_connect_refused_by_policy(wasock_client *c, wasock_family fam,
                                             const wasock_addr *target, wasock_err want) {
    wasock_tcp *s = itest_socket(c, fam);
    if (wasock_client_wasi_version(c) == 2) {
        ITEST_EXPECT(wasock_tcp_start_connect(s, target), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), want);
    } else {
        ITEST_EXPECT(wasock_tcp_connect(s, target), want);
    }
    /* A socket connects at most once: a refusal closes it. */
    ITEST_EXPECT(wasock_tcp_start_connect(s, target), WASOCK_E_INVALID_STATE);
    wasock_addr a;
    ITEST_EXPECT(wasock_tcp_remote_address(s, &a), WASOCK_E_INVALID_STATE);
    wasock_tcp_drop(s);
}

/* ------------------------------------------------------------------ built-in default */

START_TEST(test_default_denies_non_loopback_connect) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_addr target = documentation(fam, 80);
    /* Refused by policy before connect(2): access-denied, not a timeout or
     * unreachable. */
    expect_connect_refused_by_policy(c, fam, &target, WASOCK_E_ACCESS_DENIED);
    /* Loopback is fine in the same session. */
    uint16_t port;
    int lfd = itest_plain_listen(fam, &port);
    itest_conn conn;
    itest_connect_to(c, fam, port, &conn);
    itest_conn_close(&conn);
    close(lfd);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_default_denies_non_loopback_bind) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr a = documentation(fam, 0);
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_bind(s, &a), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_ACCESS_DENIED);
    } else {
        ITEST_EXPECT(wasock_tcp_bind(s, &a), WASOCK_E_ACCESS_DENIED);
    }
    /* A refused bind leaves the socket unbound. */
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);
    /* Binding the unspecified address is refused too: it would listen on
     * every interface. */
    wasock_addr any = itest_addr(fam == WASOCK_IPV4 ? "0.0.0.0:0" : "[::]:0");
    ITEST_EXPECT(itest_bind(c, s, &any), WASOCK_E_ACCESS_DENIED);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* 0.3 listen on an unbound socket binds the unspecified address, which the
 * loopback-only default does not allow. */
START_TEST(test_default_denies_implicit_wildcard_listen) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || wasi != 3) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 3, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    ITEST_EXPECT(wasock_tcp_listen(s), WASOCK_E_ACCESS_DENIED);
    ck_assert(!wasock_tcp_is_listening(s));
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ permissive file */

START_TEST(test_permissive_address_not_bindable) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr a = documentation(fam, 0);
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_bind(s, &a), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_ADDRESS_NOT_BINDABLE);
    } else {
        ITEST_EXPECT(wasock_tcp_bind(s, &a), WASOCK_E_ADDRESS_NOT_BINDABLE);
    }
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_permissive_listen_unbound) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    if (wasi == 2) {
        /* 0.2 never listens unbound, whatever the policy. */
        ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
        wasock_tcp_drop(s);
        wasock_client_close(c);
        return;
    }
    /* 0.3 binds implicitly to the unspecified address, port 0. */
    ITEST_EXPECT(wasock_tcp_listen(s), WASOCK_OK);
    ck_assert(wasock_tcp_is_listening(s));
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    ck_assert(itest_addr_is_unspecified(&local));
    ck_assert_uint_ne(local.port, 0);
    int peer = itest_plain_connect(fam, local.port);
    itest_conn conn;
    itest_accept(c, s, &conn);
    itest_send_expect(peer, conn.in, "via the implicit bind");
    itest_conn_close(&conn);
    close(peer);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* v6 sockets are v6-only: a listener on [::] does not take IPv4. */
START_TEST(test_permissive_v6_only) {
    if (!itest_have_ipv6()) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, 2, NULL);
    wasock_tcp *l = itest_socket(c, WASOCK_IPV6);
    wasock_addr any6 = itest_addr("[::]:0");
    ITEST_EXPECT(itest_bind(c, l, &any6), WASOCK_OK);
    ITEST_EXPECT(itest_listen(c, l), WASOCK_OK);
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(l, &local), WASOCK_OK);

    int v4 = itest_plain_connect_start(WASOCK_IPV4, NULL, local.port);
    if (v4 >= 0) {
        /* Either refused at once or when the handshake fails. */
        int soerr = 0;
        socklen_t len = sizeof soerr;
        int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
        while (itest_now_ms() < deadline) {
            ck_assert_int_eq(getsockopt(v4, SOL_SOCKET, SO_ERROR, &soerr, &len), 0);
            if (soerr != 0) {
                break;
            }
            char b;
            ssize_t r = recv(v4, &b, 1, MSG_DONTWAIT);
            if (r < 0 && errno != EAGAIN) {
                soerr = errno;
                break;
            }
            usleep(10000);
        }
        ck_assert_msg(soerr == ECONNREFUSED, "IPv4 connect to a v6-only listener: %s",
                      strerror(soerr));
        close(v4);
    } else {
        ck_assert_int_eq(v4, -ECONNREFUSED);
    }
    /* IPv6 reaches it. */
    int v6 = itest_plain_connect(WASOCK_IPV6, local.port);
    itest_conn conn;
    itest_accept(c, l, &conn);
    itest_send_expect(v6, conn.in, "v6 only");
    itest_conn_close(&conn);
    close(v6);

    /* Connecting a v6 socket to the IPv4 listener through a mapped address
     * is refused as an argument error, before any policy or kernel call. */
    uint16_t v4port;
    int v4l = itest_plain_listen(WASOCK_IPV4, &v4port);
    char text[64];
    snprintf(text, sizeof text, "[::ffff:127.0.0.1]:%u", v4port);
    wasock_addr mapped = itest_addr(text);
    wasock_tcp *s = itest_socket(c, WASOCK_IPV6);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &mapped), WASOCK_E_INVALID_ARGUMENT);
    ck_assert_int_eq(itest_plain_accept(v4l, 0), -ETIMEDOUT);
    close(v4l);
    wasock_tcp_drop(s);
    wasock_tcp_drop(l);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ restrictive file */

START_TEST(test_denied_connect_port_range) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || fam != WASOCK_IPV4) {
        return; /* the policy names IPv4 loopback ranges only through @loopback */
    }
    wasock_client *c = itest_client_open(&policy_daemon, wasi, NULL);
    uint16_t denied_port, refused_port, open_port;
    int denied_l =
        plain_listen_in_range(fam, DENIED_CONNECT_FIRST, DENIED_CONNECT_LAST, &denied_port);
    int refused_l =
        plain_listen_in_range(fam, REFUSED_CONNECT_FIRST, REFUSED_CONNECT_LAST, &refused_port);
    int open_l = itest_plain_listen(fam, &open_port);
    ck_assert(open_port < DENIED_CONNECT_FIRST || open_port > REFUSED_CONNECT_LAST);

    wasock_addr target = itest_loopback(fam, denied_port);
    expect_connect_refused_by_policy(c, fam, &target, WASOCK_E_ACCESS_DENIED);
    /* A deny rule may name the error the guest sees. */
    target = itest_loopback(fam, refused_port);
    expect_connect_refused_by_policy(c, fam, &target, WASOCK_E_CONNECTION_REFUSED);
    /* No packet reached the listeners. */
    ck_assert_int_eq(itest_plain_accept(denied_l, 0), -ETIMEDOUT);
    ck_assert_int_eq(itest_plain_accept(refused_l, 0), -ETIMEDOUT);

    itest_conn conn;
    itest_connect_to(c, fam, open_port, &conn);
    int peer = itest_plain_accept(open_l, ITEST_WAIT_MS);
    ck_assert_int_ge(peer, 0);
    itest_send_expect(conn.out, peer, "allowed port");
    itest_conn_close(&conn);
    close(peer);
    close(open_l);
    close(refused_l);
    close(denied_l);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_denied_bind_port_range) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr a = itest_loopback(fam, DENIED_BIND_FIRST + 7);
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_bind(s, &a), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_ACCESS_DENIED);
    } else {
        ITEST_EXPECT(wasock_tcp_bind(s, &a), WASOCK_E_ACCESS_DENIED);
    }
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_E_INVALID_STATE);
    /* The port stayed free: nothing was bound. */
    int fd = itest_plain_listen_at(fam, NULL, DENIED_BIND_FIRST + 7);
    ck_assert_msg(fd != -EADDRINUSE, "the refused bind took port %u", DENIED_BIND_FIRST + 7);
    if (fd >= 0) {
        close(fd);
    }
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* A listen the policy refuses fails from finish-listen and closes the
 * socket (a failed listen closes, as in wasi-semantics.md). */
START_TEST(test_denied_listen_closes) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    wasock_err e = WASOCK_E_ADDRESS_IN_USE;
    uint16_t port = DENIED_LISTEN_FIRST;
    for (; port <= DENIED_LISTEN_LAST && e == WASOCK_E_ADDRESS_IN_USE; port++) {
        wasock_addr a = itest_loopback(fam, port);
        e = itest_bind(c, s, &a);
    }
    ck_assert_msg(e == WASOCK_OK, "bind in the listen-denied range: %s", wasock_err_name(e));
    if (wasi == 2) {
        ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_OK);
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_ACCESS_DENIED);
        ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_NOT_IN_PROGRESS);
    } else {
        ITEST_EXPECT(wasock_tcp_listen(s), WASOCK_E_ACCESS_DENIED);
    }
    ck_assert(!wasock_tcp_is_listening(s));
    ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_E_INVALID_STATE);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_E_INVALID_STATE);
    wasock_addr target = itest_loopback(fam, 9);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_E_INVALID_STATE);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* A connection from a refused peer is reset and skipped; the listener
 * keeps working and hands out the next, allowed connection. */
START_TEST(test_denied_accept_is_skipped) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam) || fam != WASOCK_IPV4) {
        return; /* 127.0.0.2 is an IPv4 loopback address */
    }
    wasock_client *c = itest_client_open(&policy_daemon, wasi, NULL);
    uint16_t port;
    wasock_tcp *l = itest_listener(c, fam, &port);
    int refused = itest_plain_connect_start(fam, "127.0.0.2", port);
    ck_assert_int_ge(refused, 0);
    /* The refused peer sees its connection reset (or closed). */
    char b;
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    ssize_t r = -1;
    int err = EAGAIN;
    while (itest_now_ms() < deadline) {
        /* accept may need to be called for the daemon to look at it */
        wasock_tcp *none = NULL;
        wasock_err e = wasock_tcp_accept(l, &none, NULL, NULL);
        ck_assert_msg(e == WASOCK_E_WOULD_BLOCK, "accept of a refused peer: %s",
                      wasock_err_name(e));
        r = recv(refused, &b, 1, MSG_DONTWAIT);
        err = errno;
        if (r == 0 || (r < 0 && err != EAGAIN && err != ENOTCONN)) {
            break;
        }
        itest_pump(c, 10);
    }
    ck_assert_msg(r == 0 || (r < 0 && err == ECONNRESET), "refused peer: recv %zd (%s)", r,
                  strerror(err));
    close(refused);

    int allowed = itest_plain_connect_start(fam, "127.0.0.1", port);
    ck_assert_int_ge(allowed, 0);
    itest_conn conn;
    itest_accept(c, l, &conn);
    wasock_addr remote;
    ITEST_EXPECT(wasock_tcp_remote_address(conn.s, &remote), WASOCK_OK);
    ck_assert(itest_addr_is_loopback(&remote));
    itest_send_expect(conn.out, allowed, "welcome");
    itest_conn_close(&conn);
    close(allowed);
    wasock_tcp_drop(l);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_tenant_without_tcp) {
    wasock_client *c = itest_client_open(&policy_daemon, 2, "udp-only");
    wasock_tcp *s = NULL;
    ITEST_EXPECT(wasock_tcp_create(c, WASOCK_IPV4, &s), WASOCK_E_ACCESS_DENIED);
    ck_assert_ptr_null(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_socket_limit) {
    wasock_client *c = itest_client_open(&policy_daemon, 2, "limited");
    wasock_tcp *s[LIMITED_SOCKETS];
    for (int i = 0; i < LIMITED_SOCKETS; i++) {
        s[i] = itest_socket(c, WASOCK_IPV4);
    }
    wasock_tcp *extra = NULL;
    ITEST_EXPECT(wasock_tcp_create(c, WASOCK_IPV4, &extra), WASOCK_E_NEW_SOCKET_LIMIT);
    ck_assert_ptr_null(extra);
    /* The limit is per tenant: a second session of the tenant is at it too. */
    wasock_client *c2 = itest_client_open(&policy_daemon, 3, "limited");
    ITEST_EXPECT(wasock_tcp_create(c2, WASOCK_IPV4, &extra), WASOCK_E_NEW_SOCKET_LIMIT);
    wasock_tcp_drop(s[0]);
    s[0] = itest_socket(c, WASOCK_IPV4);
    /* Closing a session returns its sockets to the tenant. */
    wasock_client_close(c);
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    wasock_err e;
    while ((e = wasock_tcp_create(c2, WASOCK_IPV4, &extra)) == WASOCK_E_NEW_SOCKET_LIMIT &&
           itest_now_ms() < deadline) {
        usleep(10000);
    }
    ITEST_EXPECT(e, WASOCK_OK);
    wasock_tcp_drop(extra);
    wasock_client_close(c2);
}
END_TEST

START_TEST(test_tenant_for_another_uid) {
    char why[256];
    wasock_client *c = NULL;
    ITEST_EXPECT(itest_client_try_open(&policy_daemon, 2, "somebody-else", why, sizeof why, &c),
                 WASOCK_E_ACCESS_DENIED);
    ck_assert_ptr_null(c);
    ck_assert(why[0] != '\0');
    /* Tenant "default" of this file still works. */
    c = itest_client_open(&policy_daemon, 2, NULL);
    wasock_client_close(c);
}
END_TEST

/* A policy file with an error: the daemon refuses to start and names the
 * place (file:line:column). */
START_TEST(test_broken_policy_refused) {
    itest_daemon d;
    static const char broken[] = "version: 1\n"
                                 "tenants:\n"
                                 "  default:\n"
                                 "    protocols: [ tcp ]\n"
                                 "    no_such_key: 1\n";
    bool started = itest_daemon_try_start(&d, broken);
    if (started) {
        itest_daemon_stop(&d);
        ck_abort_msg("wasockd started with a broken policy file");
    }
    bool named = itest_daemon_log_contains(&d, "policy.yaml:5:");
    if (!named) {
        itest_daemon_print_log(&d);
    }
    itest_daemon_discard(&d);
    ck_assert_msg(named, "the log names policy.yaml:5:<column> for the unknown key");
}
END_TEST

static void add_case(Suite *s, const char *name, const TTest *test, void (*setup)(void),
                     void (*teardown)(void), bool variants) {
    TCase *tc = tcase_create(name);
    itest_tcase_defaults(tc);
    if (setup != NULL) {
        tcase_add_checked_fixture(tc, setup, teardown);
    }
    if (variants) {
        tcase_add_loop_test(tc, test, 0, ITEST_VARIANTS);
    } else {
        tcase_add_test(tc, test);
    }
    suite_add_tcase(s, tc);
}

static Suite *tcp_policy_suite(void) {
    Suite *s = suite_create("tcp-policy");
    add_case(s, "default_connect", test_default_denies_non_loopback_connect, itest_fixture_setup,
             itest_fixture_teardown, true);
    add_case(s, "default_bind", test_default_denies_non_loopback_bind, itest_fixture_setup,
             itest_fixture_teardown, true);
    add_case(s, "default_listen_wildcard", test_default_denies_implicit_wildcard_listen,
             itest_fixture_setup, itest_fixture_teardown, true);
    add_case(s, "address_not_bindable", test_permissive_address_not_bindable, permissive_setup,
             policy_teardown, true);
    add_case(s, "listen_unbound", test_permissive_listen_unbound, permissive_setup, policy_teardown,
             true);
    add_case(s, "v6_only", test_permissive_v6_only, permissive_setup, policy_teardown, false);
    add_case(s, "connect_port_range", test_denied_connect_port_range, restrictive_setup,
             policy_teardown, true);
    add_case(s, "bind_port_range", test_denied_bind_port_range, restrictive_setup, policy_teardown,
             true);
    add_case(s, "listen_denied", test_denied_listen_closes, restrictive_setup, policy_teardown,
             true);
    add_case(s, "accept_refused", test_denied_accept_is_skipped, restrictive_setup, policy_teardown,
             true);
    add_case(s, "no_tcp", test_tenant_without_tcp, restrictive_setup, policy_teardown, false);
    add_case(s, "socket_limit", test_socket_limit, restrictive_setup, policy_teardown, false);
    add_case(s, "other_uid", test_tenant_for_another_uid, restrictive_setup, policy_teardown,
             false);
    add_case(s, "broken_file", test_broken_policy_refused, NULL, NULL, false);
    return s;
}

int main(void) {
    return itest_run_suite(tcp_policy_suite());
}
