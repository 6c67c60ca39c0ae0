/* check-udp.c — integration tests of UDP sockets through libwasock and the
 * real wasockd (built-in default policy: loopback only): every state
 * transition and typical error of both WASI shapes in both families, the
 * 0.2 trap conditions, datagram sizes, association filtering, options, a
 * 10,000 datagram exchange checked for content, order and duplicates, the
 * delivery of datagrams written before a drop, and malformed messages on
 * the datagram channel.
 *
 * Trusts: the harness (harness.h, udp-harness.h) and the kernel's loopback.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "udp-harness.h"

/* Datagrams of the bulk exchange, and how many travel before the sender
 * waits for them to arrive: a window keeps every queue on the way (channel,
 * socket buffers) far from full, so no datagram is lost on loopback. */
#define EXCHANGE_TOTAL  10000
#define EXCHANGE_WINDOW 50
#define EXCHANGE_SIZE   200

/* The datagram channel's message header (PROTOCOL.md section 15). */
#define CHANNEL_HEADER_SIZE 28

/* Receive buffer of the tests: room for a window of datagrams. */
#define RECV_BUFFER (3 * WASOCK_DATAGRAM_MAX)

static uint8_t recv_buffer[RECV_BUFFER];

/* Sets up the variant or returns from the test (no IPv6 on this host). */
#define VARIANT_OR_SKIP(version, family)                                                           \
    do {                                                                                           \
        if (!itest_variant(_i, &(version), &(family))) {                                           \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* The unspecified address of f with a port. */
static wasock_addr unspecified(wasock_family f, uint16_t port) {
    wasock_addr a = itest_addr(f == WASOCK_IPV4 ? "0.0.0.0:1" : "[::]:1");
    a.port = port;
    return a;
}

/* ------------------------------------------------------------------ the sample */

/* wasmtime's sample application: a server, one associated client sending
 * an empty and a non-empty datagram (with and without the remote), and a
 * second, unassociated client. */
START_TEST(test_sample_application) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *server = iudp_socket(c, f);
    wasock_addr server_addr = iudp_bind_loopback(c, server, f);
    wasock_datagram got[4];
    static const char hello[] = "Hello, world!", greetings[] = "Greetings, planet!";

    ITEST_EXPECT(iudp_open(c, server, NULL), WASOCK_OK);

    wasock_udp *client = iudp_socket(c, f);
    wasock_addr client_addr = iudp_bind_loopback(c, client, f);
    ITEST_EXPECT(iudp_open(c, client, &server_addr), WASOCK_OK);
    wasock_datagram out[2] = {
        {.data = NULL, .len = 0, .has_remote = false},
        {.data = (const uint8_t *)hello, .len = strlen(hello), .has_remote = true},
    };
    out[1].remote = server_addr;
    uint64_t sent = 0;
    ITEST_EXPECT(iudp_send(c, client, out, 2, &sent), WASOCK_OK);
    ck_assert_uint_eq(sent, 2);
    /* Dropped at once: what it sent still arrives. */
    wasock_udp_drop(client);

    ck_assert_uint_eq(
        iudp_receive_wait(c, server, got, 4, recv_buffer, sizeof recv_buffer, 2, ITEST_WAIT_MS), 2);
    ck_assert_uint_eq(got[0].len, 0);
    ck_assert(got[0].has_remote && itest_addr_equal(&got[0].remote, &client_addr));
    ck_assert_uint_eq(got[1].len, strlen(hello));
    ck_assert_mem_eq(got[1].data, hello, strlen(hello));
    ck_assert(itest_addr_equal(&got[1].remote, &client_addr));

    wasock_udp *other = iudp_socket(c, f);
    iudp_bind_loopback(c, other, f);
    ITEST_EXPECT(iudp_open(c, other, NULL), WASOCK_OK);
    iudp_send_one(c, other, greetings, strlen(greetings), &server_addr);
    ck_assert_uint_eq(
        iudp_receive_wait(c, server, got, 4, recv_buffer, sizeof recv_buffer, 1, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(got[0].len, strlen(greetings));
    ck_assert_mem_eq(got[0].data, greetings, strlen(greetings));

    wasock_udp_drop(other);
    wasock_udp_drop(server);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ 0.2 states */

START_TEST(test_states_0_2) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    if (version != 2) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 2, NULL);
    wasock_udp *u = iudp_socket(c, f);
    wasock_addr a, loop = itest_loopback(f, 0);
    wasock_addr other_family = itest_loopback(f == WASOCK_IPV4 ? WASOCK_IPV6 : WASOCK_IPV4, 0);
    uint64_t permits;
    size_t n;
    wasock_datagram d[1];

    ck_assert(wasock_udp_ready(u));
    ck_assert_int_eq(wasock_udp_address_family(u), f);
    ITEST_EXPECT(wasock_udp_local_address(u, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_stream(u, NULL), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_finish_bind(u), WASOCK_E_NOT_IN_PROGRESS);
    ITEST_EXPECT(wasock_udp_receive(u, 1, d, recv_buffer, sizeof recv_buffer, &n),
                 WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_check_send(u, &permits), WASOCK_E_INVALID_STATE);
    /* bind: address first, then state. */
    ITEST_EXPECT(wasock_udp_start_bind(u, &other_family), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_udp_start_bind(u, &loop), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_local_address(u, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_start_bind(u, &other_family), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_udp_start_bind(u, &loop), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_finish_bind(u), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_finish_bind(u), WASOCK_E_NOT_IN_PROGRESS);
    ITEST_EXPECT(wasock_udp_local_address(u, &a), WASOCK_OK);
    ck_assert(itest_addr_is_loopback(&a));
    ck_assert_uint_ne(a.port, 0);
    ITEST_EXPECT(wasock_udp_start_bind(u, &loop), WASOCK_E_INVALID_STATE);

    /* stream: a fresh pair; a second stream while it lives is a trap. */
    ITEST_EXPECT(wasock_udp_stream(u, NULL), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_receive(u, 1, d, recv_buffer, sizeof recv_buffer, &n), WASOCK_OK);
    ck_assert_uint_eq(n, 0); /* never would-block */
    ITEST_EXPECT(wasock_udp_stream(u, NULL), WASOCK_E_TRAP);
    wasock_udp_incoming_drop(u);
    ITEST_EXPECT(wasock_udp_stream(u, NULL), WASOCK_E_TRAP);
    ITEST_EXPECT(wasock_udp_receive(u, 1, d, recv_buffer, sizeof recv_buffer, &n),
                 WASOCK_E_INVALID_STATE);
    wasock_udp_outgoing_drop(u);
    ITEST_EXPECT(wasock_udp_check_send(u, &permits), WASOCK_E_INVALID_STATE);

    /* Associate, then dissociate with a new pair. */
    uint16_t peer_port;
    int peer = iudp_plain_socket(f, &peer_port);
    wasock_addr peer_addr = itest_loopback(f, peer_port);
    ITEST_EXPECT(wasock_udp_stream(u, &peer_addr), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_OK);
    ck_assert(itest_addr_equal(&a, &peer_addr));
    wasock_udp_incoming_drop(u);
    wasock_udp_outgoing_drop(u);
    /* An invalid remote changes nothing. */
    wasock_addr port0 = itest_loopback(f, 0);
    ITEST_EXPECT(wasock_udp_stream(u, &port0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_stream(u, NULL), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_E_INVALID_STATE);
    /* The local address survives the dissociation. */
    wasock_addr after;
    ITEST_EXPECT(wasock_udp_local_address(u, &after), WASOCK_OK);
    ck_assert_uint_ne(after.port, 0);

    close(peer);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* The three guest traps of 0.2: send without check-send, beyond the permit,
 * and a second send on one permit. */
START_TEST(test_traps_0_2) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    if (version != 2) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 2, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t peer_port;
    int peer = iudp_plain_socket(f, &peer_port);
    wasock_addr peer_addr = itest_loopback(f, peer_port);
    wasock_datagram d[WASOCK_UDP_SEND_PERMITS + 1];
    uint64_t permits = 0, sent = 99;
    uint8_t buf[64];

    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(wasock_udp_stream(u, &peer_addr), WASOCK_OK);
    for (size_t i = 0; i < WASOCK_UDP_SEND_PERMITS + 1; i++) {
        d[i] = (wasock_datagram){.data = (const uint8_t *)"x", .len = 1, .has_remote = false};
    }
    ITEST_EXPECT(wasock_udp_send(u, d, 1, &sent), WASOCK_E_TRAP);
    ck_assert_uint_eq(sent, 99); /* untouched */
    ITEST_EXPECT(wasock_udp_check_send(u, &permits), WASOCK_OK);
    ck_assert_uint_eq(permits, WASOCK_UDP_SEND_PERMITS);
    /* Asking again keeps the same permit. */
    ITEST_EXPECT(wasock_udp_check_send(u, &permits), WASOCK_OK);
    ck_assert_uint_eq(permits, WASOCK_UDP_SEND_PERMITS);
    ITEST_EXPECT(wasock_udp_send(u, d, (size_t)permits + 1, &sent), WASOCK_E_TRAP);
    ITEST_EXPECT(wasock_udp_check_send(u, &permits), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_send(u, d, 2, &sent), WASOCK_OK);
    ck_assert_uint_eq(sent, 2);
    /* The permit is used up. */
    ITEST_EXPECT(wasock_udp_send(u, d, 1, &sent), WASOCK_E_TRAP);
    /* An empty send after check-send is fine and sends nothing. */
    ITEST_EXPECT(wasock_udp_check_send(u, &permits), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_send(u, d, 0, &sent), WASOCK_OK);
    ck_assert_uint_eq(sent, 0);
    /* Nothing trapped was sent: exactly the two datagrams arrive. */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, NULL), 1);
    }
    itest_pump(c, 50);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, 0, NULL), -ETIMEDOUT);

    close(peer);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ 0.3 states */

START_TEST(test_states_0_3) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    if (version != 3) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), 3, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t peer_port, other_port;
    int peer = iudp_plain_socket(f, &peer_port);
    int other = iudp_plain_socket(f, &other_port);
    wasock_addr peer_addr = itest_loopback(f, peer_port);
    wasock_addr other_addr = itest_loopback(f, other_port);
    wasock_addr a, local;
    wasock_datagram d[2];
    size_t n;
    uint64_t sent;
    uint8_t buf[64];
    uint16_t from;

    ITEST_EXPECT(wasock_udp_receive(u, 1, d, recv_buffer, sizeof recv_buffer, &n),
                 WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_disconnect(u), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_local_address(u, &a), WASOCK_E_INVALID_STATE);
    /* connect binds implicitly. */
    ITEST_EXPECT(wasock_udp_connect(u, &peer_addr), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_local_address(u, &local), WASOCK_OK);
    ck_assert_uint_ne(local.port, 0);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_OK);
    ck_assert(itest_addr_equal(&a, &peer_addr));
    ITEST_EXPECT(wasock_udp_receive(u, 1, d, recv_buffer, sizeof recv_buffer, &n), WASOCK_OK);
    ck_assert_uint_eq(n, 0);
    /* A remote other than the connected one. */
    d[0] = (wasock_datagram){.data = (const uint8_t *)"a", .len = 1, .has_remote = true};
    d[0].remote = other_addr;
    ITEST_EXPECT(wasock_udp_send(u, d, 1, &sent), WASOCK_E_INVALID_ARGUMENT);
    /* The connected one, with and without naming it. */
    d[0].remote = peer_addr;
    d[1] = (wasock_datagram){.data = (const uint8_t *)"b", .len = 1, .has_remote = false};
    ITEST_EXPECT(wasock_udp_send(u, d, 2, &sent), WASOCK_OK);
    ck_assert_uint_eq(sent, 2);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, &from), 1);
    ck_assert_uint_eq(from, local.port);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, &from), 1);
    /* Reconnect elsewhere, then disconnect. */
    ITEST_EXPECT(wasock_udp_connect(u, &other_addr), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_OK);
    ck_assert(itest_addr_equal(&a, &other_addr));
    ITEST_EXPECT(wasock_udp_disconnect(u), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_disconnect(u), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_remote_address(u, &a), WASOCK_E_INVALID_STATE);
    ITEST_EXPECT(wasock_udp_local_address(u, &a), WASOCK_OK);
    ck_assert_uint_eq(a.port, local.port);
    /* Unconnected: a datagram needs a remote. */
    ITEST_EXPECT(wasock_udp_send(u, &d[1], 1, &sent), WASOCK_E_INVALID_ARGUMENT);
    d[0].remote = other_addr;
    ITEST_EXPECT(wasock_udp_send(u, d, 1, &sent), WASOCK_OK);
    ck_assert_int_eq(iudp_plain_recv(other, buf, sizeof buf, ITEST_WAIT_MS, &from), 1);
    ck_assert_uint_eq(from, local.port);
    /* bind after the implicit bind: invalid-state. */
    wasock_addr loop = itest_loopback(f, 0);
    ITEST_EXPECT(wasock_udp_bind(u, &loop), WASOCK_E_INVALID_STATE);

    /* send on an unbound socket binds it implicitly. */
    wasock_udp *v = iudp_socket(c, f);
    ITEST_EXPECT(wasock_udp_local_address(v, &a), WASOCK_E_INVALID_STATE);
    d[0].remote = peer_addr;
    ITEST_EXPECT(wasock_udp_send(v, d, 1, &sent), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_local_address(v, &a), WASOCK_OK);
    ck_assert_uint_ne(a.port, 0);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, &from), 1);
    ck_assert_uint_eq(from, a.port);
    /* and can now receive */
    iudp_plain_send(peer, f, a.port, "reply", 5);
    ck_assert_uint_eq(
        iudp_receive_wait(c, v, d, 2, recv_buffer, sizeof recv_buffer, 1, ITEST_WAIT_MS), 1);
    ck_assert_uint_eq(d[0].len, 5);
    ck_assert_mem_eq(d[0].data, "reply", 5);
    ck_assert_uint_eq(d[0].remote.port, peer_port);

    close(peer);
    close(other);
    wasock_udp_drop(v);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ addresses */

START_TEST(test_address_rules) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    wasock_addr bad[6];
    size_t nbad = 0;
    uint64_t sent;

    /* Binds: another family, multicast, IPv4-mapped. */
    wasock_addr other_family = itest_loopback(f == WASOCK_IPV4 ? WASOCK_IPV6 : WASOCK_IPV4, 0);
    ITEST_EXPECT(iudp_bind(c, u, &other_family), WASOCK_E_INVALID_ARGUMENT);
    wasock_addr mc = itest_addr(f == WASOCK_IPV4 ? "224.0.0.1:0" : "[ff02::1]:0");
    ITEST_EXPECT(iudp_bind(c, u, &mc), WASOCK_E_INVALID_ARGUMENT);
    if (f == WASOCK_IPV6) {
        wasock_addr mapped = itest_addr("[::ffff:127.0.0.1]:0");
        ITEST_EXPECT(iudp_bind(c, u, &mapped), WASOCK_E_INVALID_ARGUMENT);
    }
    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(iudp_open(c, u, NULL), WASOCK_OK);

    /* Destinations: port 0, unspecified, another family, multicast,
     * broadcast or mapped, compatible. */
    bad[nbad++] = itest_loopback(f, 0);
    bad[nbad++] = unspecified(f, 9);
    bad[nbad++] = itest_loopback(f == WASOCK_IPV4 ? WASOCK_IPV6 : WASOCK_IPV4, 9);
    bad[nbad++] = itest_addr(f == WASOCK_IPV4 ? "224.0.0.1:9" : "[ff02::1]:9");
    bad[nbad++] = itest_addr(f == WASOCK_IPV4 ? "255.255.255.255:9" : "[::ffff:127.0.0.1]:9");
    if (f == WASOCK_IPV6) {
        bad[nbad++] = itest_addr("[::127.0.0.1]:9");
    }
    for (size_t i = 0; i < nbad; i++) {
        wasock_datagram d = {.data = (const uint8_t *)"x", .len = 1, .has_remote = true};
        d.remote = bad[i];
        ck_assert_msg(iudp_send(c, u, &d, 1, &sent) == WASOCK_E_INVALID_ARGUMENT,
                      "destination %zu accepted", i);
    }
    if (version == 3) {
        for (size_t i = 0; i < 2; i++) {
            ITEST_EXPECT(wasock_udp_connect(u, &bad[i]), WASOCK_E_INVALID_ARGUMENT);
        }
    } else {
        wasock_udp_incoming_drop(u);
        wasock_udp_outgoing_drop(u);
        for (size_t i = 0; i < 2; i++) {
            ITEST_EXPECT(wasock_udp_stream(u, &bad[i]), WASOCK_E_INVALID_ARGUMENT);
        }
    }
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* The biggest datagram each family carries arrives intact; one byte more
 * (and anything above 65535) is datagram-too-large; the empty one is
 * delivered. */
START_TEST(test_datagram_sizes) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    wasock_udp *r = iudp_socket(c, f);
    wasock_addr to = iudp_bind_loopback(c, r, f);
    size_t biggest = f == WASOCK_IPV4 ? 65507 : 65527;
    static uint8_t big[WASOCK_DATAGRAM_MAX + 2];
    wasock_datagram d = {.data = big, .has_remote = true}, got[2];
    uint64_t sent;

    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (uint8_t)(i * 7 + 3);
    }
    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(iudp_open(c, u, NULL), WASOCK_OK);
    ITEST_EXPECT(iudp_open(c, r, NULL), WASOCK_OK);
    d.remote = to;
    d.len = biggest + 1;
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_E_DATAGRAM_TOO_LARGE);
    d.len = WASOCK_DATAGRAM_MAX + 1;
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_E_DATAGRAM_TOO_LARGE);
    d.len = biggest;
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    d.len = 0;
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    ck_assert_uint_eq(
        iudp_receive_wait(c, r, got, 2, recv_buffer, sizeof recv_buffer, 2, ITEST_WAIT_MS), 2);
    ck_assert_uint_eq(got[0].len, biggest);
    ck_assert_mem_eq(got[0].data, big, biggest);
    ck_assert_uint_eq(got[1].len, 0);
    /* A buffer smaller than the largest datagram is refused. */
    size_t n;
    ITEST_EXPECT(wasock_udp_receive(r, 1, got, recv_buffer, WASOCK_DATAGRAM_MAX - 1, &n),
                 WASOCK_E_INVALID_ARGUMENT);

    wasock_udp_drop(u);
    wasock_udp_drop(r);
    wasock_client_close(c);
}
END_TEST

/* An associated socket only receives from its peer. */
START_TEST(test_association_filters_sources) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t a_port, b_port;
    int a = iudp_plain_socket(f, &a_port);
    int b = iudp_plain_socket(f, &b_port);
    wasock_addr a_addr = itest_loopback(f, a_port);
    wasock_addr local = iudp_bind_loopback(c, u, f);
    wasock_datagram got[4];

    ITEST_EXPECT(iudp_open(c, u, &a_addr), WASOCK_OK);
    iudp_plain_send(b, f, local.port, "from-b", 6);
    iudp_plain_send(a, f, local.port, "from-a", 6);
    ck_assert_uint_eq(
        iudp_receive_wait(c, u, got, 4, recv_buffer, sizeof recv_buffer, 1, ITEST_WAIT_MS), 1);
    ck_assert_mem_eq(got[0].data, "from-a", 6);
    ck_assert(itest_addr_equal(&got[0].remote, &a_addr));
    itest_pump(c, 50);
    ck_assert_uint_eq(iudp_receive_wait(c, u, got, 4, recv_buffer, sizeof recv_buffer, 1, 0), 0);

    close(a);
    close(b);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ options */

START_TEST(test_options) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint8_t hops = 0;
    uint64_t size = 0;

    ITEST_EXPECT(wasock_udp_unicast_hop_limit(u, &hops), WASOCK_OK);
    ck_assert_uint_gt(hops, 0);
    ITEST_EXPECT(wasock_udp_set_unicast_hop_limit(u, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_udp_set_unicast_hop_limit(u, 42), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_unicast_hop_limit(u, &hops), WASOCK_OK);
    ck_assert_uint_eq(hops, 42);
    ITEST_EXPECT(wasock_udp_set_receive_buffer_size(u, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_udp_set_send_buffer_size(u, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_udp_set_receive_buffer_size(u, 16384), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_receive_buffer_size(u, &size), WASOCK_OK);
    ck_assert_uint_eq(size, 16384);
    ITEST_EXPECT(wasock_udp_set_send_buffer_size(u, 16384), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_send_buffer_size(u, &size), WASOCK_OK);
    ck_assert_uint_eq(size, 16384);
    ITEST_EXPECT(wasock_udp_set_receive_buffer_size(u, UINT64_MAX), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_receive_buffer_size(u, &size), WASOCK_OK);
    ck_assert_uint_gt(size, 0);
    /* Options work after binding too. */
    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(wasock_udp_unicast_hop_limit(u, &hops), WASOCK_OK);
    ck_assert_uint_eq(hops, 42);

    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_bind_errors) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *first = iudp_socket(c, f);
    wasock_udp *second = iudp_socket(c, f);
    wasock_addr taken = iudp_bind_loopback(c, first, f), a;

    /* UDP sets no SO_REUSEADDR: the port is in use. */
    if (version == 2) {
        ITEST_EXPECT(wasock_udp_start_bind(second, &taken), WASOCK_OK);
        ITEST_EXPECT(wasock_udp_finish_bind(second), WASOCK_E_ADDRESS_IN_USE);
    } else {
        ITEST_EXPECT(wasock_udp_bind(second, &taken), WASOCK_E_ADDRESS_IN_USE);
    }
    /* A failed bind leaves the socket unbound: it can bind again. */
    ITEST_EXPECT(wasock_udp_local_address(second, &a), WASOCK_E_INVALID_STATE);
    iudp_bind_loopback(c, second, f);
    /* The default policy refuses non-loopback addresses. */
    wasock_udp *third = iudp_socket(c, f);
    wasock_addr any = unspecified(f, 0);
    ITEST_EXPECT(iudp_bind(c, third, &any), WASOCK_E_ACCESS_DENIED);
    ITEST_EXPECT(wasock_udp_local_address(third, &a), WASOCK_E_INVALID_STATE);

    wasock_udp_drop(first);
    wasock_udp_drop(second);
    wasock_udp_drop(third);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ the bulk exchange */

static void fill_datagram(uint8_t *p, uint32_t seq) {
    memcpy(p, &seq, sizeof seq);
    for (size_t i = sizeof seq; i < EXCHANGE_SIZE; i++) {
        p[i] = itest_pattern_byte(seq, i);
    }
}

/* Checks a window of received datagrams: exactly the sequence numbers
 * first..first+n-1, in order, each with its content. */
static void check_window(const wasock_datagram *got, size_t n, uint32_t first, const char *who) {
    for (size_t i = 0; i < n; i++) {
        uint32_t seq;
        ck_assert_msg(got[i].len == EXCHANGE_SIZE, "%s: datagram %u has %zu bytes", who,
                      first + (uint32_t)i, got[i].len);
        memcpy(&seq, got[i].data, sizeof seq);
        ck_assert_msg(seq == first + i,
                      "%s: expected datagram %u, got %u (reordered or duplicated)", who,
                      first + (uint32_t)i, seq);
        for (size_t j = sizeof seq; j < EXCHANGE_SIZE; j++) {
            if (got[i].data[j] != itest_pattern_byte(seq, j)) {
                ck_abort_msg("%s: datagram %u byte %zu differs", who, seq, j);
            }
        }
    }
}

/* 10,000 datagrams from A to B and back through the daemon, in windows. */
START_TEST(test_exchange_10000) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *a = iudp_socket(c, f), *b = iudp_socket(c, f);
    wasock_addr a_addr = iudp_bind_loopback(c, a, f);
    wasock_addr b_addr = iudp_bind_loopback(c, b, f);
    static uint8_t payload[EXCHANGE_WINDOW][EXCHANGE_SIZE];
    wasock_datagram out[EXCHANGE_WINDOW], got[EXCHANGE_WINDOW];
    uint64_t dropped = 1;

    ITEST_EXPECT(iudp_open(c, a, &b_addr), WASOCK_OK);
    ITEST_EXPECT(iudp_open(c, b, &a_addr), WASOCK_OK);
    for (uint32_t first = 0; first < EXCHANGE_TOTAL; first += EXCHANGE_WINDOW) {
        size_t n =
            EXCHANGE_TOTAL - first < EXCHANGE_WINDOW ? EXCHANGE_TOTAL - first : EXCHANGE_WINDOW;
        /* A to B, in sends of at most the permit. */
        for (size_t i = 0; i < n; i++) {
            fill_datagram(payload[i], first + (uint32_t)i);
            out[i] = (wasock_datagram){.data = payload[i], .len = EXCHANGE_SIZE};
        }
        for (size_t done = 0; done < n;) {
            size_t chunk = n - done < WASOCK_UDP_SEND_PERMITS ? n - done : WASOCK_UDP_SEND_PERMITS;
            uint64_t sent = 0;
            ITEST_EXPECT(iudp_send(c, a, out + done, chunk, &sent), WASOCK_OK);
            ck_assert_uint_gt(sent, 0);
            done += (size_t)sent;
        }
        size_t k = iudp_receive_wait(c, b, got, EXCHANGE_WINDOW, recv_buffer, sizeof recv_buffer, n,
                                     ITEST_WAIT_MS);
        ck_assert_msg(k == n, "B received %zu of window %u (%zu datagrams)", k, first, n);
        check_window(got, n, first, "B");
        /* and back */
        for (size_t done = 0; done < n;) {
            size_t chunk = n - done < WASOCK_UDP_SEND_PERMITS ? n - done : WASOCK_UDP_SEND_PERMITS;
            uint64_t sent = 0;
            wasock_datagram echo[WASOCK_UDP_SEND_PERMITS];
            for (size_t i = 0; i < chunk; i++) {
                echo[i] = (wasock_datagram){.data = got[done + i].data, .len = got[done + i].len};
            }
            ITEST_EXPECT(iudp_send(c, b, echo, chunk, &sent), WASOCK_OK);
            ck_assert_uint_gt(sent, 0);
            done += (size_t)sent;
        }
        k = iudp_receive_wait(c, a, got, EXCHANGE_WINDOW, recv_buffer, sizeof recv_buffer, n,
                              ITEST_WAIT_MS);
        ck_assert_msg(k == n, "A received %zu of window %u (%zu datagrams)", k, first, n);
        check_window(got, n, first, "A");
    }
    /* Nothing extra is waiting, and the daemon dropped nothing. */
    itest_pump(c, 50);
    ck_assert_uint_eq(iudp_receive_wait(c, a, got, 1, recv_buffer, sizeof recv_buffer, 1, 0), 0);
    ck_assert_uint_eq(iudp_receive_wait(c, b, got, 1, recv_buffer, sizeof recv_buffer, 1, 0), 0);
    ITEST_EXPECT(wasock_udp_dropped_datagrams(a, &dropped), WASOCK_OK);
    ck_assert_uint_eq(dropped, 0);
    ITEST_EXPECT(wasock_udp_dropped_datagrams(b, &dropped), WASOCK_OK);
    ck_assert_uint_eq(dropped, 0);

    wasock_udp_drop(a);
    wasock_udp_drop(b);
    wasock_client_close(c);
}
END_TEST

/* Datagrams written just before a drop are still delivered. */
START_TEST(test_drop_delivers) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    uint16_t peer_port;
    int peer = iudp_plain_socket(f, &peer_port);
    wasock_addr peer_addr = itest_loopback(f, peer_port);
    uint8_t buf[64];

    for (int round = 0; round < 20; round++) {
        wasock_udp *u = iudp_socket(c, f);
        iudp_bind_loopback(c, u, f);
        ITEST_EXPECT(iudp_open(c, u, &peer_addr), WASOCK_OK);
        char text[16];
        int len = snprintf(text, sizeof text, "round %d", round);
        iudp_send_one(c, u, text, (size_t)len, NULL);
        wasock_udp_drop(u);
        ssize_t n = iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, NULL);
        ck_assert_int_eq(n, len);
        ck_assert_mem_eq(buf, text, (size_t)len);
    }
    close(peer);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ the channel */

/* Garbage written straight to the channel is dropped and counted, and
 * reported by the next send; the socket keeps working. */
START_TEST(test_malformed_channel_messages) {
    int version;
    wasock_family f;
    VARIANT_OR_SKIP(version, f);
    wasock_client *c = itest_client_open(itest_fixture_daemon(), version, NULL);
    wasock_udp *u = iudp_socket(c, f);
    uint16_t peer_port;
    int peer = iudp_plain_socket(f, &peer_port);
    wasock_addr peer_addr = itest_loopback(f, peer_port);
    uint8_t msg[CHANNEL_HEADER_SIZE + 4];
    uint64_t dropped = 0, sent;
    uint8_t buf[64];

    iudp_bind_loopback(c, u, f);
    ITEST_EXPECT(iudp_open(c, u, NULL), WASOCK_OK);
    int fd = wasock_udp_fd(u);
    /* Too short, an unknown family, a reserved byte set, no address on an
     * unassociated socket. */
    ck_assert_int_eq(send(fd, "abc", 3, 0), 3);
    memset(msg, 0, sizeof msg);
    msg[0] = 7;
    ck_assert_int_eq(send(fd, msg, sizeof msg, 0), (ssize_t)sizeof msg);
    msg[0] = 0;
    msg[1] = 1;
    ck_assert_int_eq(send(fd, msg, sizeof msg, 0), (ssize_t)sizeof msg);
    memset(msg, 0, sizeof msg);
    msg[0] = 0xff;
    ck_assert_int_eq(send(fd, msg, sizeof msg, 0), (ssize_t)sizeof msg);
    /* The daemon counts them (bounded wait). */
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    while (dropped < 4 && itest_now_ms() < deadline) {
        ITEST_EXPECT(wasock_udp_dropped_datagrams(u, &dropped), WASOCK_OK);
        if (dropped < 4) {
            itest_pump(c, 10);
        }
    }
    ck_assert_uint_eq(dropped, 4);
    /* The next send reports the error instead of sending... */
    wasock_datagram d = {.data = (const uint8_t *)"ok", .len = 2, .has_remote = true};
    d.remote = peer_addr;
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_E_INVALID_ARGUMENT);
    /* ...and the one after works. */
    ITEST_EXPECT(iudp_send(c, u, &d, 1, &sent), WASOCK_OK);
    ck_assert_int_eq(iudp_plain_recv(peer, buf, sizeof buf, ITEST_WAIT_MS, NULL), 2);

    close(peer);
    wasock_udp_drop(u);
    wasock_client_close(c);
}
END_TEST

/* Many sockets in one session come and go without leaking descriptors in
 * the daemon. */
START_TEST(test_no_descriptor_leak) {
    itest_daemon *d = itest_fixture_daemon();
    wasock_client *c = itest_client_open(d, 2, NULL);
    int before = itest_daemon_settled_fd_count(d);

    for (int i = 0; i < 100; i++) {
        wasock_udp *u = iudp_socket(c, WASOCK_IPV4);
        if (i % 2 == 0) {
            iudp_bind_loopback(c, u, WASOCK_IPV4);
        }
        wasock_udp_drop(u);
    }
    int after = itest_daemon_wait_fd_count(d, before, ITEST_WAIT_MS);
    ck_assert_int_le(after, before);
    wasock_client_close(c);
}
END_TEST

static void add_case(Suite *s, const char *name, const TTest *test, bool variants) {
    TCase *tc = tcase_create(name);
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
    if (variants) {
        tcase_add_loop_test(tc, test, 0, ITEST_VARIANTS);
    } else {
        tcase_add_test(tc, test);
    }
    suite_add_tcase(s, tc);
}

static Suite *udp_suite(void) {
    Suite *s = suite_create("udp");
    add_case(s, "sample_application", test_sample_application, true);
    add_case(s, "states_0_2", test_states_0_2, true);
    add_case(s, "traps_0_2", test_traps_0_2, true);
    add_case(s, "states_0_3", test_states_0_3, true);
    add_case(s, "address_rules", test_address_rules, true);
    add_case(s, "datagram_sizes", test_datagram_sizes, true);
    add_case(s, "association", test_association_filters_sources, true);
    add_case(s, "options", test_options, true);
    add_case(s, "bind_errors", test_bind_errors, true);
    add_case(s, "exchange_10000", test_exchange_10000, true);
    add_case(s, "drop_delivers", test_drop_delivers, true);
    add_case(s, "malformed_channel", test_malformed_channel_messages, true);
    add_case(s, "no_descriptor_leak", test_no_descriptor_leak, false);
    return s;
}

int main(void) {
    return itest_run_suite(udp_suite());
}
