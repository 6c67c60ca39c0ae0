/* check-sockrules.c — unit tests for the daemon's pure socket rules:
 * address validation and conversion (sockrules), option conversions,
 * errno mapping (errmap) and the session handle table (handles).
 *
 * Table-driven: each table row is one loop iteration of its test, so a
 * failure names the row (_i) that broke.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "errmap.h"
#include "handles.h"
#include "sockrules.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static proto_addr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
    proto_addr x;
    const uint8_t ip[4] = {a, b, c, d};

    memset(&x, 0, sizeof(x));
    x.family = PROTO_IPV4;
    x.port = port;
    memcpy(x.ip, ip, 4);
    return x;
}

/* IPv6 from 8 host-order segments. */
static proto_addr v6(const uint16_t seg[8], uint16_t port) {
    proto_addr x;

    memset(&x, 0, sizeof(x));
    x.family = PROTO_IPV6;
    x.port = port;
    for (int i = 0; i < 8; i++) {
        x.ip[2 * i] = (uint8_t)(seg[i] >> 8);
        x.ip[2 * i + 1] = (uint8_t)(seg[i] & 0xff);
    }
    return x;
}

/* ---- address checks --------------------------------------------------------- */

enum addr_kind {
    A_V4_LOOPBACK,
    A_V4_ANY,
    A_V4_MULTICAST,
    A_V4_MULTICAST_TOP,
    A_V4_BROADCAST,
    A_V4_PRIVATE,
    A_V6_LOOPBACK,
    A_V6_ANY,
    A_V6_MULTICAST,
    A_V6_MAPPED,
    A_V6_COMPAT,
    A_V6_LINK_LOCAL,
};

static proto_addr make_addr(enum addr_kind k, uint16_t port) {
    static const uint16_t loop6[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    static const uint16_t any6[8] = {0};
    static const uint16_t mcast6[8] = {0xff02, 0, 0, 0, 0, 0, 0, 1};
    static const uint16_t mapped6[8] = {0, 0, 0, 0, 0, 0xffff, 0x7f00, 0x0001};
    static const uint16_t compat6[8] = {0, 0, 0, 0, 0, 0, 0x7f00, 0x0001};
    static const uint16_t ll6[8] = {0xfe80, 0, 0, 0, 0, 0, 0, 1};

    switch (k) {
    case A_V4_LOOPBACK:
        return v4(127, 0, 0, 1, port);
    case A_V4_ANY:
        return v4(0, 0, 0, 0, port);
    case A_V4_MULTICAST:
        return v4(224, 0, 0, 1, port);
    case A_V4_MULTICAST_TOP:
        return v4(239, 255, 255, 255, port);
    case A_V4_BROADCAST:
        return v4(255, 255, 255, 255, port);
    case A_V4_PRIVATE:
        return v4(10, 1, 2, 3, port);
    case A_V6_LOOPBACK:
        return v6(loop6, port);
    case A_V6_ANY:
        return v6(any6, port);
    case A_V6_MULTICAST:
        return v6(mcast6, port);
    case A_V6_MAPPED:
        return v6(mapped6, port);
    case A_V6_COMPAT:
        return v6(compat6, port);
    case A_V6_LINK_LOCAL:
        return v6(ll6, port);
    }
    ck_abort_msg("unknown address kind");
    return v4(0, 0, 0, 0, 0);
}

static const struct addr_case {
    uint8_t sock_family;
    enum addr_kind addr;
    uint16_t port;
    proto_err bind_result;
    proto_err connect_result;
} addr_cases[] = {
    {PROTO_IPV4, A_V4_LOOPBACK, 80, PROTO_OK, PROTO_OK},
    {PROTO_IPV4, A_V4_LOOPBACK, 0, PROTO_OK, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV4, A_V4_ANY, 0, PROTO_OK, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV4, A_V4_ANY, 80, PROTO_OK, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV4, A_V4_PRIVATE, 443, PROTO_OK, PROTO_OK},
    {PROTO_IPV4, A_V4_MULTICAST, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV4, A_V4_MULTICAST_TOP, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV4, A_V4_BROADCAST, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV4, A_V6_LOOPBACK, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV6, A_V4_LOOPBACK, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV6, A_V6_LOOPBACK, 80, PROTO_OK, PROTO_OK},
    {PROTO_IPV6, A_V6_LOOPBACK, 0, PROTO_OK, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV6, A_V6_ANY, 0, PROTO_OK, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV6, A_V6_LINK_LOCAL, 80, PROTO_OK, PROTO_OK},
    {PROTO_IPV6, A_V6_MULTICAST, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV6, A_V6_MAPPED, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
    {PROTO_IPV6, A_V6_COMPAT, 80, PROTO_E_INVALID_ARGUMENT, PROTO_E_INVALID_ARGUMENT},
};

START_TEST(test_address_checks) {
    const struct addr_case *c = &addr_cases[_i];
    proto_addr a = make_addr(c->addr, c->port);
    const char *why = NULL;

    ck_assert_int_eq(sockrules_check_local(c->sock_family, &a, &why), c->bind_result);
    if (c->bind_result != PROTO_OK) {
        ck_assert_ptr_nonnull(why);
    }
    ck_assert_int_eq(sockrules_check_remote(c->sock_family, &a, &why), c->connect_result);
    if (c->connect_result != PROTO_OK) {
        ck_assert_ptr_nonnull(why);
    } else {
        ck_assert_ptr_null(why);
    }
}
END_TEST

START_TEST(test_address_predicates) {
    proto_addr mapped = make_addr(A_V6_MAPPED, 1);
    proto_addr compat = make_addr(A_V6_COMPAT, 1);
    proto_addr loop6 = make_addr(A_V6_LOOPBACK, 1);
    proto_addr any6 = make_addr(A_V6_ANY, 1);
    proto_addr any4 = make_addr(A_V4_ANY, 1);
    proto_addr loop4 = make_addr(A_V4_LOOPBACK, 1);

    ck_assert(sockrules_addr_is_v4_mapped(&mapped));
    ck_assert(!sockrules_addr_is_v4_compatible(&mapped));
    ck_assert(sockrules_addr_is_v4_compatible(&compat));
    ck_assert(!sockrules_addr_is_v4_mapped(&compat));
    /* :: and ::1 have the compatible prefix but are not compatible forms. */
    ck_assert(!sockrules_addr_is_v4_compatible(&loop6));
    ck_assert(!sockrules_addr_is_v4_compatible(&any6));
    ck_assert(sockrules_addr_is_unspecified(&any6));
    ck_assert(sockrules_addr_is_unspecified(&any4));
    ck_assert(!sockrules_addr_is_unspecified(&loop4));
    ck_assert(!sockrules_addr_is_unspecified(&loop6));
    ck_assert_int_eq(sockrules_af(PROTO_IPV4), AF_INET);
    ck_assert_int_eq(sockrules_af(PROTO_IPV6), AF_INET6);
    ck_assert_int_eq(sockrules_af(7), -1);
}
END_TEST

START_TEST(test_unknown_family_refused) {
    proto_addr a = make_addr(A_V4_LOOPBACK, 80);
    const char *why = NULL;

    a.family = 9;
    ck_assert_int_eq(sockrules_check_local(9, &a, &why), PROTO_E_INVALID_ARGUMENT);
    ck_assert_int_eq(sockrules_check_remote(9, &a, &why), PROTO_E_INVALID_ARGUMENT);
}
END_TEST

/* ---- conversions ------------------------------------------------------------ */

START_TEST(test_sockaddr_v4_round_trip) {
    proto_addr a = v4(192, 0, 2, 7, 8080), back;
    struct sockaddr_storage ss;
    struct sockaddr_in sin;
    socklen_t len = 0;

    ck_assert_int_eq(sockrules_addr_to_sockaddr(&a, &ss, &len), 0);
    ck_assert_uint_eq(len, sizeof(struct sockaddr_in));
    memcpy(&sin, &ss, sizeof(sin));
    ck_assert_int_eq(sin.sin_family, AF_INET);
    ck_assert_uint_eq(ntohs(sin.sin_port), 8080);
    ck_assert_uint_eq(ntohl(sin.sin_addr.s_addr), 0xc0000207u);
    ck_assert_int_eq(sockrules_addr_from_sockaddr((struct sockaddr *)&ss, len, &back), 0);
    ck_assert_uint_eq(back.family, PROTO_IPV4);
    ck_assert_uint_eq(back.port, 8080);
    ck_assert_mem_eq(back.ip, a.ip, 4);
}
END_TEST

START_TEST(test_sockaddr_v6_round_trip) {
    static const uint16_t seg[8] = {0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42};
    proto_addr a = v6(seg, 443), back;
    struct sockaddr_storage ss;
    struct sockaddr_in6 sin6;
    socklen_t len = 0;

    a.flow_info = 0x12345;
    a.scope_id = 3;
    ck_assert_int_eq(sockrules_addr_to_sockaddr(&a, &ss, &len), 0);
    ck_assert_uint_eq(len, sizeof(struct sockaddr_in6));
    memcpy(&sin6, &ss, sizeof(sin6));
    ck_assert_int_eq(sin6.sin6_family, AF_INET6);
    ck_assert_uint_eq(ntohs(sin6.sin6_port), 443);
    ck_assert_uint_eq(ntohl(sin6.sin6_flowinfo), 0x12345);
    ck_assert_uint_eq(sin6.sin6_scope_id, 3);
    ck_assert_uint_eq(sin6.sin6_addr.s6_addr[0], 0x20);
    ck_assert_uint_eq(sin6.sin6_addr.s6_addr[15], 0x42);
    ck_assert_int_eq(sockrules_addr_from_sockaddr((struct sockaddr *)&ss, len, &back), 0);
    ck_assert_uint_eq(back.family, PROTO_IPV6);
    ck_assert_uint_eq(back.port, 443);
    ck_assert_uint_eq(back.flow_info, 0x12345);
    ck_assert_uint_eq(back.scope_id, 3);
    ck_assert_mem_eq(back.ip, a.ip, 16);
}
END_TEST

START_TEST(test_sockaddr_refusals) {
    proto_addr a = v4(127, 0, 0, 1, 1), out;
    struct sockaddr_storage ss;
    struct sockaddr_in sin;
    socklen_t len = 0;

    a.family = 5;
    ck_assert_int_eq(sockrules_addr_to_sockaddr(&a, &ss, &len), -EAFNOSUPPORT);

    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    ck_assert_int_eq(sockrules_addr_from_sockaddr((struct sockaddr *)&ss, sizeof(ss), &out),
                     -EAFNOSUPPORT);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    ck_assert_int_eq(sockrules_addr_from_sockaddr((struct sockaddr *)&sin, sizeof(sin) - 1, &out),
                     -EINVAL);
    ck_assert_int_eq(sockrules_addr_from_sockaddr((struct sockaddr *)&sin, 1, &out), -EINVAL);
}
END_TEST

START_TEST(test_unspecified_and_format) {
    proto_addr a;
    char buf[SOCKRULES_ADDR_STRLEN];
    static const uint16_t ll[8] = {0xfe80, 0, 0, 0, 0, 0, 0, 1};
    proto_addr scoped = v6(ll, 80);

    sockrules_addr_unspecified(PROTO_IPV6, &a);
    ck_assert_uint_eq(a.family, PROTO_IPV6);
    ck_assert_uint_eq(a.port, 0);
    ck_assert(sockrules_addr_is_unspecified(&a));
    ck_assert_str_eq(sockrules_addr_format(&a, buf, sizeof(buf)), "[::]:0");
    a = v4(127, 0, 0, 1, 8080);
    ck_assert_str_eq(sockrules_addr_format(&a, buf, sizeof(buf)), "127.0.0.1:8080");
    scoped.scope_id = 2;
    ck_assert_str_eq(sockrules_addr_format(&scoped, buf, sizeof(buf)), "[fe80::1%2]:80");
}
END_TEST

/* ---- options ---------------------------------------------------------------- */

enum opt_kind { O_BOOL, O_KEEPALIVE_TIME, O_COUNT, O_HOPS, O_BUFFER, O_BACKLOG };

static const struct opt_case {
    enum opt_kind kind;
    uint64_t in;
    proto_err result;
    int kernel; /* valid when result is OK */
} opt_cases[] = {
    {O_BOOL, 0, PROTO_OK, 0},
    {O_BOOL, 1, PROTO_OK, 1},
    {O_BOOL, 2, PROTO_E_INVALID_ARGUMENT, 0},
    {O_KEEPALIVE_TIME, 0, PROTO_E_INVALID_ARGUMENT, 0},
    {O_KEEPALIVE_TIME, 1, PROTO_OK, 1},
    {O_KEEPALIVE_TIME, 999999999, PROTO_OK, 1},
    {O_KEEPALIVE_TIME, 1000000000, PROTO_OK, 1},
    {O_KEEPALIVE_TIME, 1000000001, PROTO_OK, 2},
    {O_KEEPALIVE_TIME, 42000000000ull, PROTO_OK, 42},
    {O_KEEPALIVE_TIME, 32767000000000ull, PROTO_OK, 32767},
    {O_KEEPALIVE_TIME, 32768000000000ull, PROTO_OK, 32767},
    {O_KEEPALIVE_TIME, UINT64_MAX, PROTO_OK, 32767},
    {O_COUNT, 0, PROTO_E_INVALID_ARGUMENT, 0},
    {O_COUNT, 1, PROTO_OK, 1},
    {O_COUNT, 42, PROTO_OK, 42},
    {O_COUNT, 127, PROTO_OK, 127},
    {O_COUNT, 128, PROTO_OK, 127},
    {O_COUNT, UINT32_MAX, PROTO_OK, 127},
    {O_COUNT, UINT64_MAX, PROTO_OK, 127},
    {O_HOPS, 0, PROTO_E_INVALID_ARGUMENT, 0},
    {O_HOPS, 1, PROTO_OK, 1},
    {O_HOPS, 255, PROTO_OK, 255},
    {O_HOPS, 256, PROTO_E_INVALID_ARGUMENT, 0},
    {O_BUFFER, 0, PROTO_E_INVALID_ARGUMENT, 0},
    {O_BUFFER, 1, PROTO_OK, 1},
    {O_BUFFER, 0x10000, PROTO_OK, 0x10000},
    {O_BUFFER, SOCKRULES_BUFFER_SIZE_MAX, PROTO_OK, (int)SOCKRULES_BUFFER_SIZE_MAX},
    {O_BUFFER, SOCKRULES_BUFFER_SIZE_MAX + 1ull, PROTO_OK, (int)SOCKRULES_BUFFER_SIZE_MAX},
    {O_BUFFER, UINT64_MAX, PROTO_OK, (int)SOCKRULES_BUFFER_SIZE_MAX},
    {O_BACKLOG, 0, PROTO_E_INVALID_ARGUMENT, 0},
    {O_BACKLOG, 1, PROTO_OK, 1},
    {O_BACKLOG, 128, PROTO_OK, 128},
    {O_BACKLOG, SOCKRULES_BACKLOG_MAX + 1ull, PROTO_OK, SOCKRULES_BACKLOG_MAX},
    {O_BACKLOG, UINT64_MAX, PROTO_OK, SOCKRULES_BACKLOG_MAX},
};

START_TEST(test_option_to_kernel) {
    const struct opt_case *c = &opt_cases[_i];
    int out = -12345;
    proto_err r = PROTO_E_UNKNOWN;

    switch (c->kind) {
    case O_BOOL:
        r = sockrules_bool_to_kernel(c->in, &out);
        break;
    case O_KEEPALIVE_TIME:
        r = sockrules_keepalive_time_to_kernel(c->in, &out);
        break;
    case O_COUNT:
        r = sockrules_keepalive_count_to_kernel(c->in, &out);
        break;
    case O_HOPS:
        r = sockrules_hop_limit_to_kernel(c->in, &out);
        break;
    case O_BUFFER:
        r = sockrules_buffer_size_to_kernel(c->in, &out);
        break;
    case O_BACKLOG:
        r = sockrules_backlog_to_kernel(c->in, &out);
        break;
    }
    ck_assert_int_eq(r, c->result);
    if (c->result == PROTO_OK) {
        ck_assert_int_eq(out, c->kernel);
    } else {
        ck_assert_int_eq(out, -12345); /* untouched on refusal */
    }
}
END_TEST

START_TEST(test_option_from_kernel) {
    int secs = 0;

    ck_assert_uint_eq(sockrules_keepalive_time_from_kernel(42), 42000000000ull);
    ck_assert_uint_eq(sockrules_keepalive_time_from_kernel(0), 0);
    ck_assert_uint_eq(sockrules_keepalive_time_from_kernel(-1), 0);
    ck_assert_uint_eq(sockrules_buffer_size_from_kernel(0x20000), 0x10000);
    ck_assert_uint_eq(sockrules_buffer_size_from_kernel(-4), 0);
    /* 1 ns is set as 1 s and reads back as 1 s. */
    ck_assert_int_eq(sockrules_keepalive_time_to_kernel(1, &secs), PROTO_OK);
    ck_assert_uint_eq(sockrules_keepalive_time_from_kernel(secs), SOCKRULES_NS_PER_S);
}
END_TEST

/* ---- errno mapping ---------------------------------------------------------- */

static const struct errno_case {
    int err;
    unsigned flags;
    proto_err result;
} errno_cases[] = {
    {0, 0, PROTO_OK},
    {EACCES, 0, PROTO_E_ACCESS_DENIED},
    {EPERM, 0, PROTO_E_ACCESS_DENIED},
    {EADDRINUSE, 0, PROTO_E_ADDRESS_IN_USE},
    {EADDRNOTAVAIL, 0, PROTO_E_ADDRESS_NOT_BINDABLE},
    {ETIMEDOUT, 0, PROTO_E_TIMEOUT},
    {ECONNREFUSED, 0, PROTO_E_CONNECTION_REFUSED},
    {ECONNRESET, 0, PROTO_E_CONNECTION_RESET},
    {EPIPE, 0, PROTO_E_CONNECTION_RESET},
    {ECONNABORTED, 0, PROTO_E_CONNECTION_ABORTED},
    {EHOSTUNREACH, 0, PROTO_E_REMOTE_UNREACHABLE},
    {EHOSTDOWN, 0, PROTO_E_REMOTE_UNREACHABLE},
    {ENETUNREACH, 0, PROTO_E_REMOTE_UNREACHABLE},
    {ENETDOWN, 0, PROTO_E_REMOTE_UNREACHABLE},
    {ENONET, 0, PROTO_E_REMOTE_UNREACHABLE},
    {EMSGSIZE, 0, PROTO_E_DATAGRAM_TOO_LARGE},
    {ENOMEM, 0, PROTO_E_OUT_OF_MEMORY},
    {ENOBUFS, 0, PROTO_E_OUT_OF_MEMORY},
    {EMFILE, 0, PROTO_E_NEW_SOCKET_LIMIT},
    {ENFILE, 0, PROTO_E_NEW_SOCKET_LIMIT},
    {EALREADY, 0, PROTO_E_CONCURRENCY_CONFLICT},
    {EAGAIN, 0, PROTO_E_WOULD_BLOCK},
    {EAGAIN, ERRMAP_WASI_0_3, PROTO_E_UNKNOWN},
    {EISCONN, 0, PROTO_E_INVALID_STATE},
    {ENOTCONN, 0, PROTO_E_INVALID_STATE},
    {EINVAL, 0, PROTO_E_INVALID_ARGUMENT},
    {EAFNOSUPPORT, 0, PROTO_E_NOT_SUPPORTED},
    {EAFNOSUPPORT, ERRMAP_ADDRESS_GIVEN, PROTO_E_INVALID_ARGUMENT},
    {EOPNOTSUPP, 0, PROTO_E_NOT_SUPPORTED},
    {ENOPROTOOPT, 0, PROTO_E_NOT_SUPPORTED},
    {EPROTONOSUPPORT, 0, PROTO_E_NOT_SUPPORTED},
    {ESOCKTNOSUPPORT, 0, PROTO_E_NOT_SUPPORTED},
    {EIO, 0, PROTO_E_UNKNOWN},
    {ENOENT, 0, PROTO_E_UNKNOWN},
    {-ECONNREFUSED, 0, PROTO_E_CONNECTION_REFUSED},
    {-EADDRINUSE, ERRMAP_ADDRESS_GIVEN, PROTO_E_ADDRESS_IN_USE},
};

START_TEST(test_errno_mapping) {
    const struct errno_case *c = &errno_cases[_i];

    ck_assert_int_eq(errmap_errno(c->err, c->flags), c->result);
}
END_TEST

/* ---- handle table ----------------------------------------------------------- */

START_TEST(test_handles_basic) {
    handle_table t = HANDLE_TABLE_INIT;
    int a = 1, b = 2;

    ck_assert_ptr_null(handle_table_find(&t, 1));
    ck_assert_int_eq(handle_table_insert(&t, 0, &a), -EINVAL);
    ck_assert_int_eq(handle_table_insert(&t, 1, NULL), -EINVAL);
    ck_assert_int_eq(handle_table_insert(&t, 1, &a), 0);
    ck_assert_int_eq(handle_table_insert(&t, 1, &b), -EEXIST);
    ck_assert_int_eq(handle_table_insert(&t, 2, &b), 0);
    ck_assert_ptr_eq(handle_table_find(&t, 1), &a);
    ck_assert_ptr_eq(handle_table_find(&t, 2), &b);
    ck_assert_ptr_null(handle_table_find(&t, 0));
    ck_assert_ptr_null(handle_table_find(&t, 3));
    ck_assert_ptr_null(handle_table_find(&t, UINT32_MAX));
    ck_assert_ptr_eq(handle_table_remove(&t, 1), &a);
    ck_assert_ptr_null(handle_table_remove(&t, 1));
    ck_assert_ptr_null(handle_table_find(&t, 1));
    ck_assert_uint_eq(t.count, 1);
    handle_table_clear(&t);
    ck_assert_uint_eq(t.count, 0);
    ck_assert_ptr_null(handle_table_find(&t, 2));
}
END_TEST

static void count_entry(void *object, void *data) {
    (void)object;
    (*(size_t *)data)++;
}

/* Random inserts and removals checked against a plain array, so the
 * backward-shift deletion is exercised with long, wrapping probe runs. */
START_TEST(test_handles_against_reference) {
    enum { HANDLES = 3000, STEPS = 20000 };
    static char objects[HANDLES + 1];
    static bool present[HANDLES + 1];
    handle_table t = HANDLE_TABLE_INIT;
    uint32_t seed = 12345;
    size_t expected = 0, seen = 0;

    memset(present, 0, sizeof(present));
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245u + 12345u;
        uint32_t h = 1 + (seed >> 8) % HANDLES;
        if (present[h]) {
            ck_assert_ptr_eq(handle_table_remove(&t, h), &objects[h]);
            present[h] = false;
            expected--;
        } else {
            ck_assert_int_eq(handle_table_insert(&t, h, &objects[h]), 0);
            present[h] = true;
            expected++;
        }
        if (step % 1000 == 0) {
            for (uint32_t i = 1; i <= HANDLES; i++) {
                ck_assert_ptr_eq(handle_table_find(&t, i), present[i] ? &objects[i] : NULL);
            }
        }
    }
    ck_assert_uint_eq(t.count, expected);
    handle_table_foreach(&t, count_entry, &seen);
    ck_assert_uint_eq(seen, expected);
    for (uint32_t i = 1; i <= HANDLES; i++) {
        ck_assert_ptr_eq(handle_table_find(&t, i), present[i] ? &objects[i] : NULL);
    }
    handle_table_clear(&t);
}
END_TEST

static Suite *sockrules_suite(void) {
    Suite *s = suite_create("sockrules");
    TCase *tc;

    tc = tcase_create("addresses");
    tcase_add_loop_test(tc, test_address_checks, 0, (int)ARRAY_SIZE(addr_cases));
    tcase_add_test(tc, test_address_predicates);
    tcase_add_test(tc, test_unknown_family_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("conversions");
    tcase_add_test(tc, test_sockaddr_v4_round_trip);
    tcase_add_test(tc, test_sockaddr_v6_round_trip);
    tcase_add_test(tc, test_sockaddr_refusals);
    tcase_add_test(tc, test_unspecified_and_format);
    suite_add_tcase(s, tc);

    tc = tcase_create("options");
    tcase_add_loop_test(tc, test_option_to_kernel, 0, (int)ARRAY_SIZE(opt_cases));
    tcase_add_test(tc, test_option_from_kernel);
    suite_add_tcase(s, tc);

    tc = tcase_create("errmap");
    tcase_add_loop_test(tc, test_errno_mapping, 0, (int)ARRAY_SIZE(errno_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("handles");
    tcase_add_test(tc, test_handles_basic);
    tcase_add_test(tc, test_handles_against_reference);
    suite_add_tcase(s, tc);

    return s;
}

int main(void) {
    SRunner *sr = srunner_create(sockrules_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
