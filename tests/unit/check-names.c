/* check-names.c — unit tests of the names guests may resolve
 * (daemon/names.c): IP literals, normalisation, IDNA and every refusal.
 *
 * Table-driven: each case is one input and what must come out.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "names.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    const char *input;
    const char *normalised;
} valid_names[] = {
    {"localhost", "localhost"},
    {"LocalHost.", "localhost"},
    {"a.b.c", "a.b.c"},
    {"under_score.example", "under_score.example"},
    {"x-1.example.", "x-1.example"},
    {"123.example", "123.example"},
    {"m\xc3\xbcnchen.de", "xn--mnchen-3ya.de"},
    {"B\xc3\x9c"
     "CHER.example",
     "xn--bcher-kva.example"},
    {"fa\xc3\x9f.de", "xn--fa-hia.de"}, /* non-transitional: ß stays */
    {"xn--mnchen-3ya.de", "xn--mnchen-3ya.de"},
};

START_TEST(test_valid_names) {
    char out[NAMES_MAX + 1];
    proto_addr lit;

    ck_assert_int_eq(names_parse(valid_names[_i].input, out, &lit), NAMES_DNS);
    ck_assert_str_eq(out, valid_names[_i].normalised);
}
END_TEST

static const struct {
    const char *input;
    uint8_t family;
    uint8_t ip[16];
} literals[] = {
    {"127.0.0.1", PROTO_IPV4, {127, 0, 0, 1}},
    {"0.0.0.0", PROTO_IPV4, {0}},
    {"::1", PROTO_IPV6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"[::1]", PROTO_IPV6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"[::]", PROTO_IPV6, {0}},
    {"DEAD:BEEF::0", PROTO_IPV6, {0xde, 0xad, 0xbe, 0xef}},
    {"::ffff:192.0.2.1", PROTO_IPV4, {192, 0, 2, 1}},
    {"[::ffff:10.1.2.3]", PROTO_IPV4, {10, 1, 2, 3}},
};

START_TEST(test_literals) {
    char out[NAMES_MAX + 1];
    proto_addr lit;

    memset(&lit, 0xa5, sizeof lit);
    ck_assert_int_eq(names_parse(literals[_i].input, out, &lit), NAMES_LITERAL);
    ck_assert_uint_eq(lit.family, literals[_i].family);
    ck_assert_uint_eq(lit.port, 0);
    ck_assert_mem_eq(lit.ip, literals[_i].ip, literals[_i].family == PROTO_IPV4 ? 4 : 16);
}
END_TEST

static const char *const invalid_names[] = {
    "",
    " ",
    ".",
    "..",
    "a..b",
    ".a",
    "a b",
    "a\tb",
    "a\x01.com",
    "a\x7f.com",
    "a.b<&>",
    "127.0.0.1:80",
    "[::]:80",
    "[::1",
    "::1]",
    "[fe80::1%eth0]",
    "http://example.com/",
    "example.com/path",
    "user@example.com",
    "1.2.3",
    "1.2.3.4.5",
    "10.0.0.256",
    "01.2.3.4",
    "example.123",
    "\xf0\x9f\x98\x80.com",
    "\xff.com",
    "-\xc3\xbc.com",
};

START_TEST(test_invalid_names) {
    char out[NAMES_MAX + 1] = "untouched";
    proto_addr lit;

    ck_assert_msg(names_parse(invalid_names[_i], out, &lit) == -EINVAL, "\"%s\" accepted",
                  invalid_names[_i]);
    ck_assert_str_eq(out, "untouched");
}
END_TEST

/* Label and name lengths at and beyond their limits. */
START_TEST(test_lengths) {
    char in[PROTO_NAME_MAX + 2], out[NAMES_MAX + 1];
    proto_addr lit;

    memset(in, 'a', 63);
    memcpy(in + 63, ".example", 9);
    ck_assert_int_eq(names_parse(in, out, &lit), NAMES_DNS);
    memset(in, 'a', 64);
    memcpy(in + 64, ".example", 9);
    ck_assert_int_eq(names_parse(in, out, &lit), -EINVAL);
    /* 253 bytes: four labels of 62 and dots, then "abcd". */
    size_t len = 0;
    for (int i = 0; i < 4; i++) {
        memset(in + len, 'b', 62);
        len += 62;
        in[len++] = '.';
    }
    memcpy(in + len, "abcde", 6);
    ck_assert_uint_eq(strlen(in), 257);
    ck_assert_int_eq(names_parse(in, out, &lit), -EINVAL);
    in[253] = '\0';
    ck_assert_int_eq(names_parse(in, out, &lit), NAMES_DNS);
    ck_assert_uint_eq(strlen(out), 253);
    /* With a final dot, 254 bytes are fine. */
    in[253] = '.';
    in[254] = '\0';
    ck_assert_int_eq(names_parse(in, out, &lit), NAMES_DNS);
    /* Beyond what the protocol carries. */
    memset(in, 'c', sizeof in - 1);
    in[sizeof in - 1] = '\0';
    ck_assert_int_eq(names_parse(in, out, &lit), -EINVAL);
}
END_TEST

START_TEST(test_reserved_invalid) {
    ck_assert(names_is_reserved_invalid("invalid"));
    ck_assert(names_is_reserved_invalid("x.invalid"));
    ck_assert(names_is_reserved_invalid("a.b.invalid"));
    ck_assert(!names_is_reserved_invalid("notinvalid"));
    ck_assert(!names_is_reserved_invalid("invalid.example"));
    ck_assert(!names_is_reserved_invalid("localhost"));
}
END_TEST

static Suite *names_suite(void) {
    Suite *s = suite_create("names");
    TCase *tc = tcase_create("valid");
    tcase_add_loop_test(tc, test_valid_names, 0, ARRAY_SIZE(valid_names));
    suite_add_tcase(s, tc);
    tc = tcase_create("literals");
    tcase_add_loop_test(tc, test_literals, 0, ARRAY_SIZE(literals));
    suite_add_tcase(s, tc);
    tc = tcase_create("invalid");
    tcase_add_loop_test(tc, test_invalid_names, 0, ARRAY_SIZE(invalid_names));
    tcase_add_test(tc, test_lengths);
    suite_add_tcase(s, tc);
    tc = tcase_create("reserved");
    tcase_add_test(tc, test_reserved_invalid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(names_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
