/* check-lookup.c — integration tests of name lookup through libwasock and
 * the real wasockd: IP literals, invalid names (10,000 bytes, control
 * characters, ports, schemes), localhost, a name under .invalid, IDNA,
 * both API shapes, the policy on lookups, hostname-pinned connects and
 * sends (allowed after a lookup; refused without one, from another session
 * with pin_scope session, and after the binding expired), answers removed
 * by a guard, the per-tenant cap on lookups in flight, and (when the test
 * may create a mount namespace) a private /etc/hosts with several answers,
 * an IPv4-mapped one and a duplicate.
 *
 * No test depends on the internet: the only names resolved are localhost
 * and names of the private hosts file; names under .invalid never reach a
 * resolver.
 *
 * Trusts: the harness (harness.h, udp-harness.h, rawclient.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rawclient.h"
#include "udp-harness.h"

/* Room for a policy text with a few values filled in. */
#define POLICY_TEXT_MAX 4096

/* Lookups the raw client pipelines at once in the flood test: more than the
 * daemon's per-tenant cap (4). */
#define FLOOD_LOOKUPS 20

/* Addresses the tests collect from one lookup. */
#define MAX_ANSWERS 16

static itest_daemon policy_daemon;

static void policy_teardown(void) {
    itest_daemon_stop(&policy_daemon);
}

/* ------------------------------------------------------------------ helpers */

/* Resolves name in the client's shape: 0.2 stream (waiting for readiness),
 * 0.3 list. Returns the lookup's result; the addresses go to out. */
static wasock_err resolve(wasock_client *c, const char *name, wasock_ip *out, size_t *n) {
    *n = 0;
    if (wasock_client_wasi_version(c) == 3) {
        return wasock_resolve_addresses_list(c, name, out, MAX_ANSWERS, n);
    }
    wasock_resolve *r = NULL;
    wasock_err err = wasock_resolve_addresses(c, name, &r);
    if (err != WASOCK_OK) {
        return err;
    }
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    wasock_ip ip;
    bool done = false;
    for (;;) {
        err = wasock_resolve_next_address(r, &ip, &done);
        if (err != WASOCK_E_WOULD_BLOCK) {
            break;
        }
        ck_assert_msg(!wasock_resolve_ready(r), "ready but would-block");
        ck_assert_msg(itest_now_ms() < deadline, "lookup of %s did not finish", name);
        itest_pump(c, 10);
    }
    while (err == WASOCK_OK && !done) {
        ck_assert(wasock_resolve_ready(r));
        if (*n < MAX_ANSWERS) {
            out[(*n)++] = ip;
        }
        err = wasock_resolve_next_address(r, &ip, &done);
    }
    if (err == WASOCK_OK) {
        /* Once done, it stays done. */
        ITEST_EXPECT(wasock_resolve_next_address(r, &ip, &done), WASOCK_OK);
        ck_assert(done);
    } else {
        /* An error is returned on every later call too. */
        wasock_err again = wasock_resolve_next_address(r, &ip, &done);
        ck_assert_int_eq(again, err);
    }
    wasock_resolve_drop(r);
    return err;
}

static bool ip_is(const wasock_ip *ip, const char *text) {
    char buf[80];
    snprintf(buf, sizeof buf, strchr(text, ':') ? "[%s]:1" : "%s:1", text);
    wasock_addr want = itest_addr(buf);
    if (ip->family != want.ip.family) {
        return false;
    }
    return ip->family == WASOCK_IPV4 ? memcmp(ip->addr.v4, want.ip.addr.v4, 4) == 0
                                     : memcmp(ip->addr.v6, want.ip.addr.v6, 16) == 0;
}

static bool answers_contain(const wasock_ip *ips, size_t n, const char *text) {
    for (size_t i = 0; i < n; i++) {
        if (ip_is(&ips[i], text)) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ literals and names */

static const struct {
    const char *name, *answer;
} literals[] = {
    {"127.0.0.1", "127.0.0.1"},
    {"0.0.0.0", "0.0.0.0"},
    {"192.0.2.0", "192.0.2.0"},
    {"::", "::"},
    {"::1", "::1"},
    {"[::]", "::"},
    {"[::1]", "::1"},
    {"2001:0db8:0:0:0:0:0:0", "2001:db8::"},
    {"dead:beef::", "dead:beef::"},
    {"DEAD:BEEF::0", "dead:beef::"},
    {"::ffff:192.0.2.1", "192.0.2.1"},
};

START_TEST(test_literals) {
    int version = 2 + (_i & 1);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++) {
        ITEST_EXPECT(resolve(c, literals[i].name, ips, &n), WASOCK_OK);
        ck_assert_msg(n == 1, "%s: %zu answers", literals[i].name, n);
        ck_assert_msg(ip_is(&ips[0], literals[i].answer), "%s", literals[i].name);
    }
    wasock_client_close(c);
}
END_TEST

START_TEST(test_invalid_names) {
    static const char *const invalid[] = {
        "",
        " ",
        "a b",
        "a.b<&>",
        "127.0.0.1:80",
        "[::]:80",
        "[::1",
        "http://example.com/",
        "example.com/path",
        "exa\tmple.com",
        "line\nbreak.com",
        "bell\x07.com",
        "del\x7f.com",
        "a..b",
        ".leading.dot",
        "1.2.3",
        "10.0.0.256",
        "\xf0\x9f\x98\x80.invalid", /* an emoji: IDNA refuses it */
        "\xff\xfe.com",             /* not UTF-8 */
    };
    int version = 2 + (_i & 1);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;
    static char long_name[10001];
    char label[70], name[300];

    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        wasock_err err = resolve(c, invalid[i], ips, &n);
        ck_assert_msg(err == WASOCK_E_INVALID_ARGUMENT, "name %zu (\"%s\"): %s", i, invalid[i],
                      wasock_err_name(err));
    }
    /* 10,000 characters: refused before it is sent. */
    memset(long_name, 'a', sizeof long_name - 1);
    ITEST_EXPECT(resolve(c, long_name, ips, &n), WASOCK_E_INVALID_ARGUMENT);
    /* Just within the protocol's limit: refused by the daemon. */
    long_name[1024] = '\0';
    ITEST_EXPECT(resolve(c, long_name, ips, &n), WASOCK_E_INVALID_ARGUMENT);
    /* A 64-byte label, and a 254-byte name. */
    memset(label, 'b', 64);
    label[64] = '\0';
    snprintf(name, sizeof name, "%s.invalid", label);
    ITEST_EXPECT(resolve(c, name, ips, &n), WASOCK_E_INVALID_ARGUMENT);
    memset(name, 'c', 254);
    for (size_t i = 50; i < 254; i += 50) {
        name[i] = '.';
    }
    name[254] = '\0';
    ITEST_EXPECT(resolve(c, name, ips, &n), WASOCK_E_INVALID_ARGUMENT);
    /* The session is still fine. */
    ITEST_EXPECT(resolve(c, "127.0.0.1", ips, &n), WASOCK_OK);
    wasock_client_close(c);
}
END_TEST

static void start_pinned(const char *scope, const char *max_ttl, const char *keep, bool guards,
                         bool filter);

START_TEST(test_localhost_and_invalid) {
    start_pinned("tenant", "10m", "true", false, true);
    int version = 2 + (_i & 1);
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    ck_assert_uint_ge(n, 1);
    ck_assert(answers_contain(ips, n, "127.0.0.1") || answers_contain(ips, n, "::1"));
    for (size_t i = 0; i < n; i++) {
        /* Never an IPv4-mapped IPv6 address. */
        if (ips[i].family == WASOCK_IPV6) {
            const uint16_t *w = ips[i].addr.v6;
            ck_assert(!((w[0] | w[1] | w[2] | w[3] | w[4]) == 0 && w[5] == 0xffff));
        }
    }
    /* Case and a final dot do not matter. */
    ITEST_EXPECT(resolve(c, "LocalHost.", ips, &n), WASOCK_OK);
    ck_assert_uint_ge(n, 1);
    /* RFC 6761: .invalid never resolves (and never reaches a resolver). */
    ITEST_EXPECT(resolve(c, "nothing.invalid", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    ITEST_EXPECT(resolve(c, "Deep.Name.INVALID", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    /* A Unicode name passes IDNA (then .invalid answers). */
    ITEST_EXPECT(resolve(c,
                         "b\xc3\xbc"
                         "cher.invalid",
                         ips, &n),
                 WASOCK_E_NAME_UNRESOLVABLE);
    ITEST_EXPECT(resolve(c, "m\xc3\xbcnchen.invalid.", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    wasock_client_close(c);
}
END_TEST

/* A dropped lookup is gone: its handle is not reused, the session goes on.
 * A dropped lookup still occupies a resolver thread until getaddrinfo
 * returns, so it counts against the tenant's in-flight cap until then: a
 * fast create-and-drop loop may meet the cap (temporary-resolver-failure),
 * and lookups work again once the dropped ones have finished. */
START_TEST(test_drop_pending_lookup) {
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 2, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;
    wasock_err e;
    int64_t deadline;

    for (int i = 0; i < 50; i++) {
        wasock_resolve *r = NULL;
        e = wasock_resolve_addresses(c, "localhost", &r);
        ck_assert_msg(e == WASOCK_OK || e == WASOCK_E_TEMPORARY_RESOLVER_FAILURE, "lookup %d: %s",
                      i, wasock_err_name(e));
        if (e == WASOCK_OK) {
            wasock_resolve_drop(r);
        }
    }
    deadline = itest_now_ms() + ITEST_WAIT_MS;
    while ((e = resolve(c, "localhost", ips, &n)) == WASOCK_E_TEMPORARY_RESOLVER_FAILURE &&
           itest_now_ms() < deadline) {
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    ITEST_EXPECT(e, WASOCK_OK);
    ck_assert_uint_gt(n, 0);
    wasock_client_close(c);
}
END_TEST

/* A flood of lookups pipelined on one connection: the per-tenant cap
 * refuses the excess at once with temporary-resolver-failure, and every
 * request gets its reply. */
START_TEST(test_lookup_flood) {
    itest_raw r;
    uint8_t frames[FLOOD_LOOKUPS * 64];
    size_t len = 0;
    unsigned ok = 0, refused = 0, other = 0, replies = 0;

    itest_raw_open(&r, itest_fixture_daemon());
    ck_assert_int_eq(itest_raw_hello(&r, 2, NULL), 0);
    for (int i = 0; i < FLOOD_LOOKUPS; i++) {
        proto_msg m = itest_raw_request(PROTO_RESOLVE, 0);
        m.id = r.next_id++;
        snprintf(m.name, sizeof m.name, "localhost");
        ssize_t n = proto_encode(&m, frames + len, sizeof frames - len);
        ck_assert_int_gt(n, 0);
        len += (size_t)n;
    }
    ck_assert_int_eq(itest_raw_send_bytes(&r, frames, len), 0);
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    while (replies < FLOOD_LOOKUPS && itest_now_ms() < deadline) {
        proto_msg m;
        int rc = itest_raw_recv_msg(&r, &m, ITEST_WAIT_MS);
        ck_assert_int_eq(rc, 1);
        if (m.type != (PROTO_RESOLVE | PROTO_REPLY)) {
            continue; /* events */
        }
        replies++;
        if (m.err == PROTO_OK) {
            ok++;
        } else if (m.err == PROTO_E_TEMPORARY_RESOLVER_FAILURE) {
            refused++;
        } else {
            other++;
        }
    }
    ck_assert_uint_eq(replies, FLOOD_LOOKUPS);
    ck_assert_uint_eq(other, 0);
    ck_assert_uint_eq(ok, 4); /* LOOKUP_MAX_IN_FLIGHT_PER_TENANT */
    ck_assert_uint_eq(refused, FLOOD_LOOKUPS - 4);
    itest_raw_close(&r);
}
END_TEST

/* A name with a NUL cannot be written in the C API; on the wire it is a
 * malformed frame, and the daemon closes that session only. */
START_TEST(test_nul_in_name_closes_session) {
    itest_raw r;
    uint8_t frame[64];
    const char name[] = "local\0host";

    itest_raw_open(&r, itest_fixture_daemon());
    ck_assert_int_eq(itest_raw_hello(&r, 2, NULL), 0);
    /* header + u16 length + the bytes */
    size_t payload = 2 + sizeof name - 1;
    frame[0] = (uint8_t)payload;
    frame[1] = frame[2] = frame[3] = 0;
    frame[4] = PROTO_RESOLVE & 0xff;
    frame[5] = PROTO_RESOLVE >> 8;
    frame[6] = frame[7] = 0;
    frame[8] = 9;
    frame[9] = frame[10] = frame[11] = 0;
    frame[12] = (uint8_t)(sizeof name - 1);
    frame[13] = 0;
    memcpy(frame + 14, name, sizeof name - 1);
    ck_assert_int_eq(itest_raw_send_bytes(&r, frame, 12 + payload), 0);
    ck_assert(itest_raw_wait_closed(&r, ITEST_WAIT_MS));
    itest_raw_close(&r);
    /* Others are unaffected. */
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 2, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;
    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ policy */

static const char pinned_policy_fmt[] =
    "version: 1\n"
    "defaults:\n"
    "  action: deny\n"
    "  errors: { lookup: permanent-resolver-failure }\n"
    "dns: { pin_scope: %s, min_ttl: 0s, max_ttl: %s, keep_while_open: %s, filter_answers: "
    "%s }\n"
    "%s"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u, 0 ], token: none }\n"
    "    protocols: [ tcp, udp ]\n"
    "    rules:\n"
    "      - id: named-peers\n"
    "        ops: [ lookup, tcp.connect, udp.connect, udp.send ]\n"
    "        host: localhost\n"
    "        action: allow\n"
    "      - id: refused-name\n"
    "        ops: [ lookup ]\n"
    "        host: \"*.refused.invalid\"\n"
    "        action: deny\n"
    "        deny: { error: name-unresolvable }\n"
    "      - id: test-names\n"
    "        ops: [ lookup ]\n"
    "        host: [ \"*.test\", \"*.invalid\" ]\n"
    "        action: allow\n"
    "      - id: local-side\n"
    "        ops: [ tcp.bind, udp.bind ]\n"
    "        local: [ \"@loopback\", \"@unspecified\" ]\n"
    "        action: allow\n"
    "      - id: receive\n"
    "        ops: [ udp.receive ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: allow\n";

static const char guard_text[] = "guards:\n"
                                 "  - id: no-127-0-0-1\n"
                                 "    remote: [ \"127.0.0.1/32\" ]\n"
                                 "    action: deny\n"
                                 "  - id: no-127-0-0-2\n"
                                 "    remote: [ \"127.0.0.2/32\" ]\n"
                                 "    action: deny\n";

static void start_pinned(const char *scope, const char *max_ttl, const char *keep, bool guards,
                         bool filter) {
    char text[POLICY_TEXT_MAX];
    int n = snprintf(text, sizeof text, pinned_policy_fmt, scope, max_ttl, keep,
                     filter ? "guards" : "none", guards ? guard_text : "", (unsigned)getuid());
    ck_assert(n > 0 && n < (int)sizeof text);
    itest_daemon_start(&policy_daemon, text);
}

/* Connects a 0.3 socket to 127.0.0.1:port; returns the result. */
static wasock_err connect_loopback(wasock_client *c, uint16_t port) {
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr to = itest_loopback(WASOCK_IPV4, port);
    wasock_err err = itest_connect(c, s, &to, NULL);
    wasock_tcp_drop(s);
    return err;
}

START_TEST(test_policy_on_lookups) {
    start_pinned("tenant", "10m", "true", false, true);
    int version = 2 + (_i & 1);
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    /* Not listed: the policy's lookup error. */
    ITEST_EXPECT(resolve(c, "elsewhere.example", ips, &n), WASOCK_E_PERMANENT_RESOLVER_FAILURE);
    /* A deny rule with its own error. */
    ITEST_EXPECT(resolve(c, "x.refused.invalid", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    ITEST_EXPECT(resolve(c, "allowed.invalid", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    /* Literals need no permission. */
    ITEST_EXPECT(resolve(c, "192.0.2.7", ips, &n), WASOCK_OK);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_pinned_connect) {
    /* Debug lines name the binding a connect was decided with. */
    setenv("ITEST_DAEMON_LOG_LEVEL", "debug", 1);
    start_pinned("tenant", "10m", "true", false, true);
    unsetenv("ITEST_DAEMON_LOG_LEVEL");
    int version = 2 + (_i & 1);
    wasock_client *c = itest_client_open(&policy_daemon, version, NULL);
    uint16_t port;
    int listener = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    /* A literal address nobody looked up matches no host rule. */
    ITEST_EXPECT(connect_loopback(c, port), WASOCK_E_ACCESS_DENIED);
    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    if (!answers_contain(ips, n, "127.0.0.1")) {
        fprintf(stderr, "note: localhost does not resolve to 127.0.0.1 here; skipping\n");
        close(listener);
        wasock_client_close(c);
        return;
    }
    ITEST_EXPECT(connect_loopback(c, port), WASOCK_OK);
    /* The binding remembers which rule allowed the lookup. */
    ck_assert(itest_daemon_log_contains(
        &policy_daemon, "tcp.connect is bound to localhost by a lookup rule:named-peers allowed"));
    /* pin_scope tenant: another session of the tenant may use it too. */
    wasock_client *other = itest_client_open(&policy_daemon, version, NULL);
    ITEST_EXPECT(connect_loopback(other, port), WASOCK_OK);
    wasock_client_close(other);
    close(listener);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_pinned_session_scope) {
    start_pinned("session", "10m", "true", false, true);
    wasock_client *c = itest_client_open(&policy_daemon, 3, NULL);
    wasock_client *other = itest_client_open(&policy_daemon, 3, NULL);
    uint16_t port;
    int listener = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    if (answers_contain(ips, n, "127.0.0.1")) {
        ITEST_EXPECT(connect_loopback(c, port), WASOCK_OK);
        ITEST_EXPECT(connect_loopback(other, port), WASOCK_E_ACCESS_DENIED);
    }
    close(listener);
    wasock_client_close(other);
    wasock_client_close(c);
}
END_TEST

/* With max_ttl 1s the binding expires: a connect after that is refused
 * until the name is looked up again. */
START_TEST(test_pinned_expiry) {
    start_pinned("tenant", "1s", "false", false, true);
    wasock_client *c = itest_client_open(&policy_daemon, 3, NULL);
    uint16_t port;
    int listener = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    if (answers_contain(ips, n, "127.0.0.1")) {
        ITEST_EXPECT(connect_loopback(c, port), WASOCK_OK);
        /* Past the binding's lifetime (bounded). */
        struct timespec ts = {.tv_sec = 1, .tv_nsec = 300 * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
        ITEST_EXPECT(connect_loopback(c, port), WASOCK_E_ACCESS_DENIED);
        ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
        ITEST_EXPECT(connect_loopback(c, port), WASOCK_OK);
    }
    close(listener);
    wasock_client_close(c);
}
END_TEST

/* keep_while_open: an open connection made through a binding keeps it
 * alive past its expiry; once it is closed the binding expires. */
START_TEST(test_pinned_tcp_keeps_binding) {
    start_pinned("tenant", "1s", "true", false, true);
    wasock_client *c = itest_client_open(&policy_daemon, 3, NULL);
    uint16_t port;
    int listener = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_addr to = itest_loopback(WASOCK_IPV4, port);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    if (answers_contain(ips, n, "127.0.0.1")) {
        wasock_tcp *held = itest_socket(c, WASOCK_IPV4);
        ITEST_EXPECT(itest_connect(c, held, &to, NULL), WASOCK_OK);
        struct timespec ts = {.tv_sec = 1, .tv_nsec = 300 * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
        ITEST_EXPECT(connect_loopback(c, port), WASOCK_OK);
        wasock_tcp_drop(held);
        ITEST_EXPECT(connect_loopback(c, port), WASOCK_E_ACCESS_DENIED);
    }
    close(listener);
    wasock_client_close(c);
}
END_TEST

/* udp.send with a host rule: allowed after the lookup; with
 * keep_while_open, the socket that used the binding keeps it past expiry,
 * while a new socket does not. */
START_TEST(test_pinned_udp) {
    start_pinned("tenant", "1s", "true", false, true);
    wasock_client *c = itest_client_open(&policy_daemon, 3, NULL);
    uint16_t port;
    int peer = iudp_plain_socket(WASOCK_IPV4, &port);
    wasock_addr to = itest_loopback(WASOCK_IPV4, port);
    wasock_datagram d = {.data = (const uint8_t *)"hi", .len = 2, .has_remote = true};
    wasock_ip ips[MAX_ANSWERS];
    uint64_t sent;
    uint8_t buf[16];
    size_t n;

    d.remote = to;
    wasock_udp *early = iudp_socket(c, WASOCK_IPV4);
    ITEST_EXPECT(wasock_udp_send(early, &d, 1, &sent), WASOCK_E_ACCESS_DENIED);
    ITEST_EXPECT(resolve(c, "localhost", ips, &n), WASOCK_OK);
    if (answers_contain(ips, n, "127.0.0.1")) {
        wasock_udp *u = iudp_socket(c, WASOCK_IPV4);
        ITEST_EXPECT(wasock_udp_send(u, &d, 1, &sent), WASOCK_OK);
        ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, NULL), 2);
        ITEST_EXPECT(wasock_udp_connect(u, &to), WASOCK_OK);
        struct timespec ts = {.tv_sec = 1, .tv_nsec = 300 * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
        /* Pinned by u: a reconnect is still decided with the name. */
        ITEST_EXPECT(wasock_udp_disconnect(u), WASOCK_OK);
        ITEST_EXPECT(wasock_udp_connect(u, &to), WASOCK_OK);
        wasock_udp *late = iudp_socket(c, WASOCK_IPV4);
        ITEST_EXPECT(wasock_udp_send(late, &d, 1, &sent), WASOCK_OK);
        wasock_udp_drop(late);
        wasock_udp_drop(u);
        /* With the last socket gone, the expired binding no longer counts. */
        wasock_udp *after = iudp_socket(c, WASOCK_IPV4);
        ITEST_EXPECT(wasock_udp_send(after, &d, 1, &sent), WASOCK_E_ACCESS_DENIED);
        wasock_udp_drop(after);
    }
    wasock_udp_drop(early);
    close(peer);
    wasock_client_close(c);
}
END_TEST

/* A guard on 127.0.0.1 removes it from answers (filter_answers: guards). */
START_TEST(test_guard_filters_answers) {
    start_pinned("tenant", "10m", "true", true, _i == 0);
    wasock_client *c = itest_client_open(&policy_daemon, 2, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n = 0;
    wasock_err err = resolve(c, "localhost", ips, &n);

    if (_i == 0) {
        ck_assert(err == WASOCK_OK || err == WASOCK_E_NAME_UNRESOLVABLE);
        ck_assert(!answers_contain(ips, n, "127.0.0.1"));
    } else {
        /* filter_answers: none */
        ITEST_EXPECT(err, WASOCK_OK);
        ck_assert(answers_contain(ips, n, "127.0.0.1") || answers_contain(ips, n, "::1"));
    }
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ a private hosts file */

static char ns_dir[ITEST_PATH_MAX];

/* Starts the daemon inside a new mount namespace in which /etc/hosts is
 * the test's file. False (with a note) when that is not possible here. */
static bool start_with_hosts(const char *policy_text) {
    const char *real = getenv("WASOCKD");
    char path[ITEST_PATH_MAX + 32], hosts[ITEST_PATH_MAX + 32];
    FILE *f;

    if (geteuid() != 0 || access("/usr/bin/unshare", X_OK) != 0 || real == NULL) {
        fprintf(stderr, "note: cannot create a mount namespace here; skipping\n");
        return false;
    }
    snprintf(ns_dir, sizeof ns_dir, "/tmp/wasockd-hosts-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(ns_dir));
    snprintf(hosts, sizeof hosts, "%s/hosts", ns_dir);
    f = fopen(hosts, "w");
    ck_assert_ptr_nonnull(f);
    fputs("127.0.0.1 localhost\n"
          "127.0.0.1 multi.test\n"
          "127.0.0.2 multi.test\n"
          "127.0.0.3 multi.test\n"
          "127.0.0.3 multi.test\n"
          "::ffff:127.0.0.9 mapped.test\n"
          "127.0.0.2 guarded.test\n",
          f);
    fclose(f);
    snprintf(path, sizeof path, "%s/wasockd", ns_dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "#!/bin/sh\n"
            "exec /usr/bin/unshare -m -- /bin/sh -c "
            "'mount --bind \"$0\" /etc/hosts || exit 99; exec \"$@\"' "
            "'%s' '%s' \"$@\"\n",
            hosts, real);
    fclose(f);
    ck_assert_int_eq(chmod(path, 0700), 0);
    setenv("WASOCKD", path, 1);
    bool up = itest_daemon_try_start(&policy_daemon, policy_text);
    setenv("WASOCKD", real, 1);
    if (!up) {
        itest_daemon_print_log(&policy_daemon);
        itest_daemon_discard(&policy_daemon);
        fprintf(stderr, "note: the daemon did not start in a mount namespace; skipping\n");
    }
    return up;
}

static void remove_ns_dir(void) {
    char path[ITEST_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/wasockd", ns_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/hosts", ns_dir);
    unlink(path);
    rmdir(ns_dir);
}

START_TEST(test_hosts_file_answers) {
    char text[POLICY_TEXT_MAX];
    int len = snprintf(text, sizeof text, pinned_policy_fmt, "tenant", "10m", "true", "guards",
                       "guards:\n  - id: no-127-0-0-2\n    remote: [ \"127.0.0.2/32\" ]\n"
                       "    action: deny\n",
                       (unsigned)getuid());
    ck_assert(len > 0 && len < (int)sizeof text);
    if (!start_with_hosts(text)) {
        return;
    }
    wasock_client *c = itest_client_open(&policy_daemon, 2, NULL);
    wasock_ip ips[MAX_ANSWERS];
    size_t n;

    /* Three addresses, one guarded, one listed twice: two answers. */
    ITEST_EXPECT(resolve(c, "multi.test", ips, &n), WASOCK_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert(answers_contain(ips, n, "127.0.0.1"));
    ck_assert(answers_contain(ips, n, "127.0.0.3"));
    ck_assert(!answers_contain(ips, n, "127.0.0.2"));
    /* IPv4-mapped answers come back as IPv4. */
    ITEST_EXPECT(resolve(c, "mapped.test", ips, &n), WASOCK_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert(ips[0].family == WASOCK_IPV4 && ip_is(&ips[0], "127.0.0.9"));
    /* Every answer guarded: never an empty success. */
    ITEST_EXPECT(resolve(c, "guarded.test", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    /* Names the hosts file does not list are not under the test's control:
     * only .invalid ones are asked here. */
    ITEST_EXPECT(resolve(c, "absent.invalid", ips, &n), WASOCK_E_NAME_UNRESOLVABLE);
    wasock_client_close(c);
    itest_daemon_stop(&policy_daemon);
    remove_ns_dir();
}
END_TEST

static void add_case(Suite *s, const char *name, const TTest *test, bool fixture,
                     void (*teardown)(void), int loops) {
    TCase *tc = tcase_create(name);
    itest_tcase_defaults(tc);
    if (fixture) {
        tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
    } else if (teardown != NULL) {
        tcase_add_checked_fixture(tc, NULL, teardown);
    }
    tcase_add_loop_test(tc, test, 0, loops);
    suite_add_tcase(s, tc);
}

static Suite *lookup_suite(void) {
    Suite *s = suite_create("lookup");
    add_case(s, "literals", test_literals, true, NULL, 2);
    add_case(s, "invalid_names", test_invalid_names, true, NULL, 2);
    add_case(s, "localhost_invalid", test_localhost_and_invalid, false, policy_teardown, 2);
    add_case(s, "drop_pending", test_drop_pending_lookup, true, NULL, 1);
    add_case(s, "flood", test_lookup_flood, true, NULL, 1);
    add_case(s, "nul_in_name", test_nul_in_name_closes_session, true, NULL, 1);
    add_case(s, "policy", test_policy_on_lookups, false, policy_teardown, 2);
    add_case(s, "pinned_connect", test_pinned_connect, false, policy_teardown, 2);
    add_case(s, "pinned_session_scope", test_pinned_session_scope, false, policy_teardown, 1);
    add_case(s, "pinned_expiry", test_pinned_expiry, false, policy_teardown, 1);
    add_case(s, "pinned_tcp_keeps", test_pinned_tcp_keeps_binding, false, policy_teardown, 1);
    add_case(s, "pinned_udp", test_pinned_udp, false, policy_teardown, 1);
    add_case(s, "guard_filter", test_guard_filters_answers, false, policy_teardown, 2);
    add_case(s, "hosts_file", test_hosts_file_answers, false, NULL, 1);
    return s;
}

int main(void) {
    return itest_run_suite(lookup_suite());
}
