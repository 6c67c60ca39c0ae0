/* check-tcp-options.c — integration tests of the TCP socket options through
 * the real wasockd: readback, zero and clamp rules, options in every state,
 * and inheritance by accepted sockets.
 *
 * Trusts: the harness (harness.h) and the local kernel (Linux limits:
 * keep-alive idle/interval at most 32767 s, count at most 127).
 */
#include <stdint.h>
#include <unistd.h>

#include "harness.h"

#define SECOND_NS UINT64_C(1000000000)

/* The kernel's largest TCP_KEEPIDLE / TCP_KEEPINTVL (seconds) and
 * TCP_KEEPCNT (Linux MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT). */
#define KERNEL_KEEPALIVE_TIME_MAX_S 32767
#define KERNEL_KEEPALIVE_COUNT_MAX  127

/* Buffer sizes that every Linux default (net.core.[rw]mem_max = 212992)
 * accepts exactly. */
#define BUFFER_SIZE_A 0x10000
#define BUFFER_SIZE_B 0x20000

/* The values a socket reports, read in one go. */
typedef struct options {
    bool keep_alive;
    uint64_t idle_ns, interval_ns;
    uint32_t count;
    uint8_t hop_limit;
    uint64_t receive_buffer, send_buffer;
} options;

static options read_options(wasock_tcp *s) {
    options o;
    ITEST_EXPECT(wasock_tcp_keep_alive_enabled(s, &o.keep_alive), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_idle_time(s, &o.idle_ns), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_interval(s, &o.interval_ns), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_count(s, &o.count), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_hop_limit(s, &o.hop_limit), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_receive_buffer_size(s, &o.receive_buffer), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_send_buffer_size(s, &o.send_buffer), WASOCK_OK);
    return o;
}

static void write_options(wasock_tcp *s, const options *o) {
    ITEST_EXPECT(wasock_tcp_set_keep_alive_enabled(s, o->keep_alive), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_idle_time(s, o->idle_ns), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_interval(s, o->interval_ns), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_count(s, o->count), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_hop_limit(s, o->hop_limit), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_receive_buffer_size(s, o->receive_buffer), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_send_buffer_size(s, o->send_buffer), WASOCK_OK);
}

static void expect_options(wasock_tcp *s, const options *want, const char *what) {
    options got = read_options(s);
    ck_assert_msg(got.keep_alive == want->keep_alive, "%s: keep-alive %d, want %d", what,
                  got.keep_alive, want->keep_alive);
    ck_assert_msg(got.idle_ns == want->idle_ns, "%s: idle %llu ns, want %llu", what,
                  (unsigned long long)got.idle_ns, (unsigned long long)want->idle_ns);
    ck_assert_msg(got.interval_ns == want->interval_ns, "%s: interval %llu ns, want %llu", what,
                  (unsigned long long)got.interval_ns, (unsigned long long)want->interval_ns);
    ck_assert_msg(got.count == want->count, "%s: count %u, want %u", what, got.count, want->count);
    ck_assert_msg(got.hop_limit == want->hop_limit, "%s: hop limit %u, want %u", what,
                  got.hop_limit, want->hop_limit);
    ck_assert_msg(got.receive_buffer == want->receive_buffer, "%s: rcvbuf %llu, want %llu", what,
                  (unsigned long long)got.receive_buffer, (unsigned long long)want->receive_buffer);
    ck_assert_msg(got.send_buffer == want->send_buffer, "%s: sndbuf %llu, want %llu", what,
                  (unsigned long long)got.send_buffer, (unsigned long long)want->send_buffer);
}

START_TEST(test_defaults) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    options o = read_options(s);
    /* Either keep-alive default is valid; every other value is positive. */
    ck_assert_uint_gt(o.idle_ns, 0);
    ck_assert_uint_eq(o.idle_ns % SECOND_NS, 0);
    ck_assert_uint_gt(o.interval_ns, 0);
    ck_assert_uint_gt(o.count, 0);
    ck_assert_uint_gt(o.hop_limit, 0);
    ck_assert_uint_gt(o.receive_buffer, 0);
    ck_assert_uint_gt(o.send_buffer, 0);
    ck_assert_int_eq(wasock_tcp_address_family(s), fam);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_zero_is_invalid_and_changes_nothing) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    options known = {.keep_alive = true,
                     .idle_ns = 42 * SECOND_NS,
                     .interval_ns = 7 * SECOND_NS,
                     .count = 5,
                     .hop_limit = 42,
                     .receive_buffer = BUFFER_SIZE_A,
                     .send_buffer = BUFFER_SIZE_A};
    write_options(s, &known);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_idle_time(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_interval(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_count(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_hop_limit(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_receive_buffer_size(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_send_buffer_size(s, 0), WASOCK_E_INVALID_ARGUMENT);
    expect_options(s, &known, "after refused zeros");
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_keep_alive_readback_and_clamps) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    bool on;
    ITEST_EXPECT(wasock_tcp_set_keep_alive_enabled(s, true), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_enabled(s, &on), WASOCK_OK);
    ck_assert(on);
    ITEST_EXPECT(wasock_tcp_set_keep_alive_enabled(s, false), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_keep_alive_enabled(s, &on), WASOCK_OK);
    ck_assert(!on);

    /* Durations: rounded up to whole seconds, clamped to the kernel's range. */
    static const struct {
        uint64_t set_ns, want_ns;
    } times[] = {
        {1, 1 * SECOND_NS},
        {42 * SECOND_NS, 42 * SECOND_NS},
        {SECOND_NS - 1, 1 * SECOND_NS},
        {SECOND_NS + 1, 2 * SECOND_NS},
        {1500000000, 2 * SECOND_NS},
        {UINT64_C(32767) * SECOND_NS, UINT64_C(32767) * SECOND_NS},
        {UINT64_C(40000) * SECOND_NS, (uint64_t)KERNEL_KEEPALIVE_TIME_MAX_S * SECOND_NS},
        {UINT64_MAX, (uint64_t)KERNEL_KEEPALIVE_TIME_MAX_S * SECOND_NS},
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        uint64_t got;
        ITEST_EXPECT(wasock_tcp_set_keep_alive_idle_time(s, times[i].set_ns), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_keep_alive_idle_time(s, &got), WASOCK_OK);
        ck_assert_msg(got == times[i].want_ns, "idle %llu ns reads back %llu, want %llu",
                      (unsigned long long)times[i].set_ns, (unsigned long long)got,
                      (unsigned long long)times[i].want_ns);
        ITEST_EXPECT(wasock_tcp_set_keep_alive_interval(s, times[i].set_ns), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_keep_alive_interval(s, &got), WASOCK_OK);
        ck_assert_msg(got == times[i].want_ns, "interval %llu ns reads back %llu, want %llu",
                      (unsigned long long)times[i].set_ns, (unsigned long long)got,
                      (unsigned long long)times[i].want_ns);
    }

    static const struct {
        uint32_t set, want;
    } counts[] = {
        {1, 1},
        {42, 42},
        {KERNEL_KEEPALIVE_COUNT_MAX, KERNEL_KEEPALIVE_COUNT_MAX},
        {1000, KERNEL_KEEPALIVE_COUNT_MAX},
        {UINT32_MAX, KERNEL_KEEPALIVE_COUNT_MAX},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        uint32_t got;
        ITEST_EXPECT(wasock_tcp_set_keep_alive_count(s, counts[i].set), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_keep_alive_count(s, &got), WASOCK_OK);
        ck_assert_msg(got == counts[i].want, "count %u reads back %u, want %u", counts[i].set, got,
                      counts[i].want);
    }
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_hop_limit_readback) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    static const uint8_t values[] = {1, 42, 64, 255};
    for (size_t i = 0; i < sizeof values; i++) {
        uint8_t got;
        ITEST_EXPECT(wasock_tcp_set_hop_limit(s, values[i]), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_hop_limit(s, &got), WASOCK_OK);
        ck_assert_uint_eq(got, values[i]);
    }
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_buffer_sizes) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    static const uint64_t moderate[] = {BUFFER_SIZE_A, BUFFER_SIZE_B, 50000};
    for (size_t i = 0; i < sizeof moderate / sizeof moderate[0]; i++) {
        uint64_t got;
        ITEST_EXPECT(wasock_tcp_set_receive_buffer_size(s, moderate[i]), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_receive_buffer_size(s, &got), WASOCK_OK);
        ck_assert_msg(got == moderate[i], "receive buffer %llu reads back %llu",
                      (unsigned long long)moderate[i], (unsigned long long)got);
        ITEST_EXPECT(wasock_tcp_set_send_buffer_size(s, moderate[i]), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_send_buffer_size(s, &got), WASOCK_OK);
        ck_assert_msg(got == moderate[i], "send buffer %llu reads back %llu",
                      (unsigned long long)moderate[i], (unsigned long long)got);
    }
    /* Out-of-range sizes are accepted and clamped, never an error. */
    static const uint64_t extreme[] = {1, UINT64_MAX, UINT64_C(1) << 40};
    for (size_t i = 0; i < sizeof extreme / sizeof extreme[0]; i++) {
        uint64_t got;
        ITEST_EXPECT(wasock_tcp_set_receive_buffer_size(s, extreme[i]), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_receive_buffer_size(s, &got), WASOCK_OK);
        ck_assert_uint_gt(got, 0);
        ck_assert_uint_lt(got, UINT64_C(1) << 32);
        ITEST_EXPECT(wasock_tcp_set_send_buffer_size(s, extreme[i]), WASOCK_OK);
        ITEST_EXPECT(wasock_tcp_send_buffer_size(s, &got), WASOCK_OK);
        ck_assert_uint_gt(got, 0);
        ck_assert_uint_lt(got, UINT64_C(1) << 32);
    }
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_backlog) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *s = itest_socket(c, fam);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 1), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, UINT64_MAX), WASOCK_OK);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, s, &lo), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 5), WASOCK_OK);
    ITEST_EXPECT(itest_listen(c, s), WASOCK_OK);
    /* While listening: the daemon listens again with the new size; the
     * listener keeps working. */
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 64), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(s, 0), WASOCK_E_INVALID_ARGUMENT);
    ck_assert(wasock_tcp_is_listening(s));
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    int peer = itest_plain_connect(fam, local.port);
    itest_conn conn;
    itest_accept(c, s, &conn);
    itest_send_expect(peer, conn.in, "after re-listen");
    /* Connected sockets have no backlog. */
    ITEST_EXPECT(wasock_tcp_set_listen_backlog_size(conn.s, 10), WASOCK_E_INVALID_STATE);
    itest_conn_close(&conn);
    close(peer);
    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

/* Getters and setters work in every state (unbound, bound, listening,
 * connected, and closed after a failed connect). */
START_TEST(test_options_in_every_state) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    wasock_tcp *unbound = itest_socket(c, fam);
    wasock_tcp *bound = itest_socket(c, fam);
    wasock_addr lo = itest_loopback(fam, 0);
    ITEST_EXPECT(itest_bind(c, bound, &lo), WASOCK_OK);
    uint16_t port;
    wasock_tcp *listener = itest_listener(c, fam, &port);
    itest_conn client, server;
    itest_connect_to(c, fam, port, &client);
    itest_accept(c, listener, &server);

    options want = {.keep_alive = true,
                    .idle_ns = 30 * SECOND_NS,
                    .interval_ns = 3 * SECOND_NS,
                    .count = 9,
                    .hop_limit = 17,
                    .receive_buffer = BUFFER_SIZE_A,
                    .send_buffer = BUFFER_SIZE_B};
    wasock_tcp *all[] = {unbound, bound, listener, client.s, server.s};
    const char *names[] = {"unbound", "bound", "listening", "connected", "accepted"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        write_options(all[i], &want);
        expect_options(all[i], &want, names[i]);
    }
    /* The connection still carries data with the new options. */
    itest_send_expect(client.out, server.in, "options set");
    itest_conn_close(&client);
    itest_conn_close(&server);
    wasock_tcp_drop(listener);
    wasock_tcp_drop(bound);
    wasock_tcp_drop(unbound);
    wasock_client_close(c);
}
END_TEST

/* Accepted sockets report the listener's options as they were at accept
 * time, set before listen or while listening; later listener changes do
 * not reach them. */
START_TEST(test_inheritance_on_accept) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    wasock_client *c = itest_client_open(itest_fixture_daemon(), wasi, NULL);
    for (int while_listening = 0; while_listening <= 1; while_listening++) {
        wasock_tcp *l = itest_socket(c, fam);
        options defaults = read_options(l);
        options first = {.keep_alive = !defaults.keep_alive,
                         .idle_ns = 42 * SECOND_NS,
                         .interval_ns = 42 * SECOND_NS,
                         .count = 42,
                         .hop_limit = 42,
                         .receive_buffer = BUFFER_SIZE_A,
                         .send_buffer = BUFFER_SIZE_A};
        if (!while_listening) {
            write_options(l, &first);
        }
        wasock_addr lo = itest_loopback(fam, 0);
        ITEST_EXPECT(itest_bind(c, l, &lo), WASOCK_OK);
        ITEST_EXPECT(itest_listen(c, l), WASOCK_OK);
        if (while_listening) {
            write_options(l, &first);
        }
        wasock_addr local;
        ITEST_EXPECT(wasock_tcp_local_address(l, &local), WASOCK_OK);
        int peer = itest_plain_connect(fam, local.port);
        itest_conn accepted;
        itest_accept(c, l, &accepted);
        ck_assert_int_eq(wasock_tcp_address_family(accepted.s), fam);
        expect_options(accepted.s, &first,
                       while_listening ? "accepted (set while listening)"
                                       : "accepted (set before listen)");

        options second = {.keep_alive = defaults.keep_alive,
                          .idle_ns = 43 * SECOND_NS,
                          .interval_ns = 43 * SECOND_NS,
                          .count = 43,
                          .hop_limit = 43,
                          .receive_buffer = BUFFER_SIZE_B,
                          .send_buffer = BUFFER_SIZE_B};
        write_options(l, &second);
        expect_options(l, &second, "listener after the change");
        expect_options(accepted.s, &first, "accepted after the listener changed");

        /* A connection accepted after the change gets the new values. */
        int peer2 = itest_plain_connect(fam, local.port);
        itest_conn accepted2;
        itest_accept(c, l, &accepted2);
        expect_options(accepted2.s, &second, "accepted after the change");

        itest_conn_close(&accepted);
        itest_conn_close(&accepted2);
        close(peer);
        close(peer2);
        wasock_tcp_drop(l);
    }
    wasock_client_close(c);
}
END_TEST

static Suite *tcp_options_suite(void) {
    Suite *s = suite_create("tcp-options");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"defaults", test_defaults},
        {"zero_invalid", test_zero_is_invalid_and_changes_nothing},
        {"keep_alive", test_keep_alive_readback_and_clamps},
        {"hop_limit", test_hop_limit_readback},
        {"buffer_sizes", test_buffer_sizes},
        {"backlog", test_backlog},
        {"every_state", test_options_in_every_state},
        {"inheritance", test_inheritance_on_accept},
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
    return itest_run_suite(tcp_options_suite());
}
