/* check-addr.c — unit tests of libwasock's address helpers and error names.
 *
 * Table tests: every accepted spelling must parse to the expected address and
 * format back to its canonical text; every rejected spelling must fail and
 * leave the output untouched. The sockaddr conversions are checked field by
 * field, and wasock_err_name for every code. Inputs are the tables below.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "wasock/wasock.h"

/* ------------------------------------------------------------ valid texts */

struct valid_case {
    const char *text;
    wasock_family family;
    uint16_t port;
    uint32_t scope_id;
    const char *canonical; /* what wasock_addr_format writes back */
};

static const struct valid_case valid_cases[] = {
    {"127.0.0.1:80", WASOCK_IPV4, 80, 0, "127.0.0.1:80"},
    {"0.0.0.0:0", WASOCK_IPV4, 0, 0, "0.0.0.0:0"},
    {"255.255.255.255:65535", WASOCK_IPV4, 65535, 0, "255.255.255.255:65535"},
    {"10.1.2.3:080", WASOCK_IPV4, 80, 0, "10.1.2.3:80"},
    {"[::1]:80", WASOCK_IPV6, 80, 0, "[::1]:80"},
    {"[::]:0", WASOCK_IPV6, 0, 0, "[::]:0"},
    {"[2001:DB8::1]:443", WASOCK_IPV6, 443, 0, "[2001:db8::1]:443"},
    {"[fe80::1%2]:8080", WASOCK_IPV6, 8080, 2, "[fe80::1%2]:8080"},
    {"[fe80::1%4294967295]:1", WASOCK_IPV6, 1, 4294967295u, "[fe80::1%4294967295]:1"},
    {"[fe80::1%0]:1", WASOCK_IPV6, 1, 0, "[fe80::1]:1"},
    {"[::ffff:1.2.3.4]:65535", WASOCK_IPV6, 65535, 0, "[::ffff:1.2.3.4]:65535"},
    {"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", WASOCK_IPV6, 65535, 0,
     "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
};

START_TEST(parse_valid_text) {
    const struct valid_case *t = &valid_cases[_i];
    char buf[WASOCK_ADDR_STRLEN];
    wasock_addr a;
    int n;

    memset(&a, 0xa5, sizeof(a));
    ck_assert_msg(wasock_addr_parse(t->text, &a) == 0, "rejected %s", t->text);
    ck_assert_int_eq(a.ip.family, t->family);
    ck_assert_uint_eq(a.port, t->port);
    ck_assert_uint_eq(a.scope_id, t->scope_id);
    ck_assert_uint_eq(a.flow_info, 0);

    n = wasock_addr_format(&a, buf, sizeof(buf));
    ck_assert_str_eq(buf, t->canonical);
    ck_assert_int_eq(n, (int)strlen(t->canonical));
}
END_TEST

START_TEST(parse_values_exact) {
    wasock_addr a;

    ck_assert_int_eq(wasock_addr_parse("192.168.1.200:8080", &a), 0);
    ck_assert_int_eq(a.ip.family, WASOCK_IPV4);
    ck_assert_uint_eq(a.ip.addr.v4[0], 192);
    ck_assert_uint_eq(a.ip.addr.v4[1], 168);
    ck_assert_uint_eq(a.ip.addr.v4[2], 1);
    ck_assert_uint_eq(a.ip.addr.v4[3], 200);
    ck_assert_uint_eq(a.port, 8080);
    ck_assert_uint_eq(a.scope_id, 0);

    /* v6 segments are in host order, as in WIT. */
    ck_assert_int_eq(wasock_addr_parse("[2001:db8:0:1:2:3:4:abcd]:1", &a), 0);
    ck_assert_int_eq(a.ip.family, WASOCK_IPV6);
    ck_assert_uint_eq(a.ip.addr.v6[0], 0x2001);
    ck_assert_uint_eq(a.ip.addr.v6[1], 0x0db8);
    ck_assert_uint_eq(a.ip.addr.v6[2], 0);
    ck_assert_uint_eq(a.ip.addr.v6[3], 1);
    ck_assert_uint_eq(a.ip.addr.v6[7], 0xabcd);
}
END_TEST

/* ---------------------------------------------------------- invalid texts */

static const char *const invalid_cases[] = {
    "",
    "127.0.0.1",               /* missing port */
    "127.0.0.1:",              /* empty port */
    "127.0.0.1:65536",         /* port out of range */
    "127.0.0.1:123456",        /* too many digits */
    "127.0.0.1:-1",            /* sign */
    "127.0.0.1:+80",           /* sign */
    "127.0.0.1:80x",           /* trailing garbage */
    "127.0.0.1: 80",           /* space */
    " 127.0.0.1:80",           /* leading space */
    "127.0.0.1:80 ",           /* trailing space */
    "127.0.0.1:0x50",          /* hex port */
    "1.2.3:80",                /* shorthand IPv4 */
    "1.2.3.4.5:80",            /* too many parts */
    "256.1.1.1:80",            /* part out of range */
    "01.2.3.4:80",             /* leading zero: octal in some parsers */
    "1.2.3.4:80:90",           /* two ports */
    "[::1",                    /* unterminated bracket */
    "[::1]",                   /* missing port */
    "[::1]:",                  /* empty port */
    "[::1]80",                 /* no colon after bracket */
    "[::1]:65536",             /* port out of range */
    "[::1]:80]",               /* garbage after port */
    "::1:80",                  /* IPv6 without brackets */
    "::1",                     /* IPv6 without brackets or port */
    "[1.2.3.4]:80",            /* IPv4 in brackets */
    "[]:80",                   /* empty host */
    "[[::1]]:80",              /* nested brackets */
    "[1::2::3]:80",            /* two :: */
    "[fe80::1%]:80",           /* empty scope */
    "[fe80::1%eth0]:80",       /* scope must be a number */
    "[fe80::1%-1]:80",         /* signed scope */
    "[fe80::1%4294967296]:80", /* scope beyond 32 bits */
    "[fe80::1%2%3]:80",        /* two scopes */
    "garbage",
    "localhost:80", /* names are not addresses */
    ":80",          /* no host */
    "[::1]:8 0",    /* space inside the port */
};

START_TEST(parse_invalid_text) {
    const char *text = invalid_cases[_i];
    wasock_addr a, before;

    memset(&a, 0x5a, sizeof(a));
    before = a;
    ck_assert_msg(wasock_addr_parse(text, &a) == -1, "accepted \"%s\"", text);
    ck_assert_msg(memcmp(&a, &before, sizeof(a)) == 0, "\"%s\" wrote the output", text);
}
END_TEST

START_TEST(parse_null_arguments) {
    wasock_addr a;

    ck_assert_int_eq(wasock_addr_parse(NULL, &a), -1);
    ck_assert_int_eq(wasock_addr_parse("127.0.0.1:80", NULL), -1);
}
END_TEST

/* ---------------------------------------------------------------- format */

START_TEST(format_buffer_too_small) {
    char buf[WASOCK_ADDR_STRLEN];
    wasock_addr a;
    size_t need = strlen("127.0.0.1:80") + 1;

    ck_assert_int_eq(wasock_addr_parse("127.0.0.1:80", &a), 0);
    /* Exactly enough room works; one byte less fails with an empty string. */
    ck_assert_int_eq(wasock_addr_format(&a, buf, need), (int)need - 1);
    ck_assert_str_eq(buf, "127.0.0.1:80");
    memset(buf, 'x', sizeof(buf));
    ck_assert_int_eq(wasock_addr_format(&a, buf, need - 1), -1);
    ck_assert_str_eq(buf, "");
    memset(buf, 'x', sizeof(buf));
    ck_assert_int_eq(wasock_addr_format(&a, buf, 1), -1);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(wasock_addr_format(&a, buf, 0), -1);
    ck_assert_int_eq(wasock_addr_format(&a, NULL, 10), -1);
    ck_assert_int_eq(wasock_addr_format(NULL, buf, sizeof(buf)), -1);
    ck_assert_str_eq(buf, "");
}
END_TEST

START_TEST(format_invalid_family) {
    char buf[WASOCK_ADDR_STRLEN] = "x";
    wasock_addr a;

    memset(&a, 0, sizeof(a));
    a.ip.family = (wasock_family)7;
    ck_assert_int_eq(wasock_addr_format(&a, buf, sizeof(buf)), -1);
    ck_assert_str_eq(buf, "");
}
END_TEST

START_TEST(format_longest_fits) {
    char buf[WASOCK_ADDR_STRLEN];
    wasock_addr a;
    int n;

    memset(&a, 0, sizeof(a));
    a.ip.family = WASOCK_IPV6;
    for (int i = 0; i < 8; i++)
        a.ip.addr.v6[i] = 0xffff;
    a.port = 65535;
    a.scope_id = UINT32_MAX;
    n = wasock_addr_format(&a, buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_int_lt(n, WASOCK_ADDR_STRLEN);
    ck_assert_str_eq(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535");
}
END_TEST

START_TEST(format_ipv4_ignores_scope) {
    char buf[WASOCK_ADDR_STRLEN];
    wasock_addr a;

    ck_assert_int_eq(wasock_addr_parse("10.0.0.1:1", &a), 0);
    a.scope_id = 9; /* ignored for IPv4 */
    a.flow_info = 9;
    ck_assert_int_gt(wasock_addr_format(&a, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "10.0.0.1:1");
}
END_TEST

/* -------------------------------------------------------------- sockaddr */

START_TEST(sockaddr_ipv4) {
    struct sockaddr_storage ss;
    struct sockaddr_in sin;
    wasock_addr a, back;

    ck_assert_int_eq(wasock_addr_parse("192.0.2.7:4242", &a), 0);
    memset(&ss, 0xee, sizeof(ss));
    ck_assert_uint_eq(wasock_addr_to_sockaddr(&a, &ss), sizeof(struct sockaddr_in));
    memcpy(&sin, &ss, sizeof(sin));
    ck_assert_int_eq(sin.sin_family, AF_INET);
    ck_assert_uint_eq(ntohs(sin.sin_port), 4242);
    ck_assert_uint_eq(ntohl(sin.sin_addr.s_addr), 0xc0000207u);

    memset(&back, 0x77, sizeof(back));
    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&ss, sizeof(sin), &back), 0);
    ck_assert_int_eq(back.ip.family, WASOCK_IPV4);
    ck_assert_mem_eq(back.ip.addr.v4, a.ip.addr.v4, 4);
    ck_assert_uint_eq(back.port, 4242);
    ck_assert_uint_eq(back.flow_info, 0);
    ck_assert_uint_eq(back.scope_id, 0);
}
END_TEST

START_TEST(sockaddr_ipv6) {
    struct sockaddr_storage ss;
    struct sockaddr_in6 sin6;
    wasock_addr a, back;
    uint8_t expect[16];

    ck_assert_int_eq(wasock_addr_parse("[fe80::1:2%3]:443", &a), 0);
    a.flow_info = 0x12345;
    ck_assert_uint_eq(wasock_addr_to_sockaddr(&a, &ss), sizeof(struct sockaddr_in6));
    memcpy(&sin6, &ss, sizeof(sin6));
    ck_assert_int_eq(sin6.sin6_family, AF_INET6);
    ck_assert_uint_eq(ntohs(sin6.sin6_port), 443);
    ck_assert_uint_eq(ntohl(sin6.sin6_flowinfo), 0x12345);
    ck_assert_uint_eq(sin6.sin6_scope_id, 3);
    ck_assert_int_eq(inet_pton(AF_INET6, "fe80::1:2", expect), 1);
    ck_assert_mem_eq(sin6.sin6_addr.s6_addr, expect, 16);

    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&ss, sizeof(sin6), &back), 0);
    ck_assert_int_eq(back.ip.family, WASOCK_IPV6);
    ck_assert_mem_eq(back.ip.addr.v6, a.ip.addr.v6, sizeof(a.ip.addr.v6));
    ck_assert_uint_eq(back.port, 443);
    ck_assert_uint_eq(back.flow_info, 0x12345);
    ck_assert_uint_eq(back.scope_id, 3);
}
END_TEST

START_TEST(sockaddr_rejections) {
    struct sockaddr_storage ss;
    struct sockaddr_un sun;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    wasock_addr a, before;

    memset(&a, 0, sizeof(a));
    a.ip.family = (wasock_family)2;
    ck_assert_uint_eq(wasock_addr_to_sockaddr(&a, &ss), 0);
    ck_assert_uint_eq(wasock_addr_to_sockaddr(NULL, &ss), 0);
    ck_assert_uint_eq(wasock_addr_to_sockaddr(&a, NULL), 0);

    memset(&a, 0x33, sizeof(a));
    before = a;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&sun, sizeof(sun), &a), -1);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&sin, sizeof(sin) - 1, &a), -1);
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&sin6, sizeof(sin), &a), -1);
    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&sin6, 0, &a), -1);
    ck_assert_int_eq(wasock_addr_from_sockaddr(NULL, sizeof(sin6), &a), -1);
    ck_assert_mem_eq(&a, &before, sizeof(a));
    ck_assert_int_eq(wasock_addr_from_sockaddr((struct sockaddr *)&sin6, sizeof(sin6), NULL), -1);
}
END_TEST

/* -------------------------------------------------------------- err names */

static const struct {
    wasock_err err;
    const char *name;
} err_names[] = {
    {WASOCK_OK, "ok"},
    {WASOCK_E_UNKNOWN, "unknown"},
    {WASOCK_E_ACCESS_DENIED, "access-denied"},
    {WASOCK_E_NOT_SUPPORTED, "not-supported"},
    {WASOCK_E_INVALID_ARGUMENT, "invalid-argument"},
    {WASOCK_E_OUT_OF_MEMORY, "out-of-memory"},
    {WASOCK_E_TIMEOUT, "timeout"},
    {WASOCK_E_CONCURRENCY_CONFLICT, "concurrency-conflict"},
    {WASOCK_E_NOT_IN_PROGRESS, "not-in-progress"},
    {WASOCK_E_WOULD_BLOCK, "would-block"},
    {WASOCK_E_INVALID_STATE, "invalid-state"},
    {WASOCK_E_NEW_SOCKET_LIMIT, "new-socket-limit"},
    {WASOCK_E_ADDRESS_NOT_BINDABLE, "address-not-bindable"},
    {WASOCK_E_ADDRESS_IN_USE, "address-in-use"},
    {WASOCK_E_REMOTE_UNREACHABLE, "remote-unreachable"},
    {WASOCK_E_CONNECTION_REFUSED, "connection-refused"},
    {WASOCK_E_CONNECTION_RESET, "connection-reset"},
    {WASOCK_E_CONNECTION_ABORTED, "connection-aborted"},
    {WASOCK_E_DATAGRAM_TOO_LARGE, "datagram-too-large"},
    {WASOCK_E_NAME_UNRESOLVABLE, "name-unresolvable"},
    {WASOCK_E_TEMPORARY_RESOLVER_FAILURE, "temporary-resolver-failure"},
    {WASOCK_E_PERMANENT_RESOLVER_FAILURE, "permanent-resolver-failure"},
    {WASOCK_E_DAEMON, "daemon"},
    {WASOCK_E_TRAP, "trap"},
    /* Anything else is "unknown". */
    {(wasock_err)22, "unknown"},
    {(wasock_err)99, "unknown"},
    {(wasock_err)102, "unknown"},
    {(wasock_err)-1, "unknown"},
};

START_TEST(err_name_every_code) {
    ck_assert_str_eq(wasock_err_name(err_names[_i].err), err_names[_i].name);
}
END_TEST

START_TEST(err_numbers_follow_wit_order) {
    /* The numbers travel on the wire: they must not drift. */
    ck_assert_int_eq(WASOCK_E_UNKNOWN, 1);
    ck_assert_int_eq(WASOCK_E_WOULD_BLOCK, 9);
    ck_assert_int_eq(WASOCK_E_PERMANENT_RESOLVER_FAILURE, 21);
    ck_assert_int_eq(WASOCK_E_DAEMON, 100);
    ck_assert_int_eq(WASOCK_E_TRAP, 101);
}
END_TEST

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *addr_suite(void) {
    Suite *s = suite_create("addr");
    TCase *tc;

    tc = tcase_create("parse-valid");
    tcase_add_loop_test(tc, parse_valid_text, 0, COUNT(valid_cases));
    tcase_add_test(tc, parse_values_exact);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse-invalid");
    tcase_add_loop_test(tc, parse_invalid_text, 0, COUNT(invalid_cases));
    tcase_add_test(tc, parse_null_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_test(tc, format_buffer_too_small);
    tcase_add_test(tc, format_invalid_family);
    tcase_add_test(tc, format_longest_fits);
    tcase_add_test(tc, format_ipv4_ignores_scope);
    suite_add_tcase(s, tc);

    tc = tcase_create("sockaddr");
    tcase_add_test(tc, sockaddr_ipv4);
    tcase_add_test(tc, sockaddr_ipv6);
    tcase_add_test(tc, sockaddr_rejections);
    suite_add_tcase(s, tc);

    tc = tcase_create("err-name");
    tcase_add_loop_test(tc, err_name_every_code, 0, COUNT(err_names));
    tcase_add_test(tc, err_numbers_follow_wit_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(addr_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
