/* check-ctlproto.c — unit tests for the control protocol's text helpers
 * (daemon/ctlproto.h): which lines are text, splitting, escaping what is
 * shown to people, durations, numbers and agents' answers.
 *
 * Table-driven: each row is one loop iteration, so a failure names it.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- lines ---------------------------------------------------------------- */

static const struct {
    const char *line;
    size_t len; /* 0: strlen */
    bool text;
} line_cases[] = {
    {"status", 0, true},        {"answer 3 allow\tsession", 0, true},
    {"status\r", 0, true},      /* CRLF from socat or telnet */
    {"sta\rtus", 0, false},     /* a CR anywhere else */
    {"\x1b[31mred", 0, false},  /* an escape sequence */
    {"caf\xc3\xa9", 0, false},  /* not ASCII */
    {"nul\0inside", 10, false}, /* a NUL byte */
    {"del\x7f", 0, false},      {"", 0, true},
};

START_TEST(test_line_is_text) {
    size_t len = line_cases[_i].len ? line_cases[_i].len : strlen(line_cases[_i].line);
    ck_assert_msg(ctl_line_is_text(line_cases[_i].line, len) == line_cases[_i].text, "row %d", _i);
}
END_TEST

START_TEST(test_split) {
    char line[] = "  explain\tdefault  tcp.connect 127.0.0.1:80\r";
    char *argv[CTL_ARGS_MAX];
    ck_assert_int_eq(ctl_split(line, argv, CTL_ARGS_MAX), 4);
    ck_assert_str_eq(argv[0], "explain");
    ck_assert_str_eq(argv[1], "default");
    ck_assert_str_eq(argv[3], "127.0.0.1:80");

    char blank[] = " \t ";
    ck_assert_int_eq(ctl_split(blank, argv, CTL_ARGS_MAX), 0);

    char many[] = "a b c d";
    ck_assert_int_eq(ctl_split(many, argv, 3), -E2BIG);
}
END_TEST

/* ---- escaping --------------------------------------------------------------- */

static const struct {
    const char *value;
    const char *written;
} escape_cases[] = {
    {"rule:dev-lan", " k=rule:dev-lan"},
    {"[2001:db8::1]:443", " k=[2001:db8::1]:443"},
    {"once,session,1h", " k=once,session,1h"},
    {"two words", " k=\"two words\""},
    {"say \"hi\"", " k=\"say \\\"hi\\\"\""},
    {"back\\slash", " k=\"back\\\\slash\""},
    {"\x1b[2Jgone", " k=\"\\x1b[2Jgone\""},
    {"line\nbreak", " k=\"line\\x0abreak\""},
    {"caf\xc3\xa9", " k=\"caf\\xc3\\xa9\""},
    {"", " k=\"\""},
    {NULL, " k=-"},
};

START_TEST(test_append_value) {
    char buf[256] = "";
    size_t len = 0;
    ck_assert_int_eq(ctl_append_value(buf, sizeof buf, &len, "k", escape_cases[_i].value), 0);
    ck_assert_str_eq(buf, escape_cases[_i].written);
    ck_assert_uint_eq(len, strlen(buf));
    /* Whatever went in, what comes out is printable ASCII. */
    ck_assert(ctl_line_is_text(buf, len));
}
END_TEST

START_TEST(test_append_stops_at_capacity) {
    char buf[8] = "";
    size_t len = 0;
    ck_assert_int_eq(ctl_append(buf, sizeof buf, &len, "abc"), 0);
    ck_assert_int_eq(ctl_append(buf, sizeof buf, &len, "defghij"), -ENOSPC);
    ck_assert_str_eq(buf, "abcdefg");
    ck_assert_uint_eq(len, 7);
    ck_assert_int_eq(ctl_append(buf, sizeof buf, &len, "x"), -ENOSPC);
    ck_assert_str_eq(buf, "abcdefg");
    len = 0;
    buf[0] = '\0';
    ck_assert_int_eq(ctl_append_value(buf, sizeof buf, &len, "key", "\x1b\x1b\x1b"), -ENOSPC);
    ck_assert_uint_eq(strlen(buf), len);
    ck_assert(ctl_line_is_text(buf, len));
}
END_TEST

/* ---- durations and numbers ----------------------------------------------------- */

static const struct {
    const char *text;
    int result;
    uint32_t seconds;
} duration_cases[] = {
    {"30s", 0, 30},      {"10m", 0, 600},
    {"1h", 0, 3600},     {"2d", 0, 172800},
    {"1h30m", 0, 5400},  {"366d", 0, 31622400},
    {"", -EINVAL, 0},    {"0s", -EINVAL, 0},
    {"h", -EINVAL, 0},   {"5", -EINVAL, 0},
    {"1x", -EINVAL, 0},  {"367d", -EINVAL, 0},
    {"-1h", -EINVAL, 0}, {"99999999999s", -EINVAL, 0},
};

START_TEST(test_parse_duration) {
    uint32_t s = 12345;
    ck_assert_int_eq(ctl_parse_duration(duration_cases[_i].text, &s), duration_cases[_i].result);
    if (duration_cases[_i].result == 0) {
        ck_assert_uint_eq(s, duration_cases[_i].seconds);
    } else {
        ck_assert_uint_eq(s, 12345); /* untouched */
    }
}
END_TEST

START_TEST(test_format_duration) {
    char buf[16];
    ctl_format_duration(3600, buf, sizeof buf);
    ck_assert_str_eq(buf, "1h");
    ctl_format_duration(5400, buf, sizeof buf);
    ck_assert_str_eq(buf, "90m");
    ctl_format_duration(45, buf, sizeof buf);
    ck_assert_str_eq(buf, "45s");
    ctl_format_duration(86400, buf, sizeof buf);
    ck_assert_str_eq(buf, "1d");
    /* What is formatted parses back. */
    uint32_t s;
    ctl_format_duration(28800, buf, sizeof buf);
    ck_assert_int_eq(ctl_parse_duration(buf, &s), 0);
    ck_assert_uint_eq(s, 28800);
}
END_TEST

START_TEST(test_parse_u64) {
    uint64_t v = 0;
    ck_assert_int_eq(ctl_parse_u64("0", &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(ctl_parse_u64("18446744073709551615", &v), 0);
    ck_assert(v == UINT64_MAX);
    ck_assert_int_eq(ctl_parse_u64("18446744073709551616", &v), -EINVAL);
    ck_assert_int_eq(ctl_parse_u64("01", &v), -EINVAL);
    ck_assert_int_eq(ctl_parse_u64("+1", &v), -EINVAL);
    ck_assert_int_eq(ctl_parse_u64("", &v), -EINVAL);
    ck_assert_int_eq(ctl_parse_u64("12a", &v), -EINVAL);
}
END_TEST

/* ---- answers ------------------------------------------------------------------- */

static const struct {
    const char *words[4];
    int argc;
    int result;
    uint64_t id;
    policy_action action;
    ctl_scope scope;
    uint32_t seconds;
} answer_cases[] = {
    {{"3", "allow"}, 2, 0, 3, POLICY_ALLOW, CTL_SCOPE_ONCE, 0},
    {{"3", "deny", "once"}, 3, 0, 3, POLICY_DENY, CTL_SCOPE_ONCE, 0},
    {{"12", "allow", "session"}, 3, 0, 12, POLICY_ALLOW, CTL_SCOPE_SESSION, 0},
    {{"12", "deny", "tenant"}, 3, 0, 12, POLICY_DENY, CTL_SCOPE_TENANT, 0},
    {{"7", "allow", "8h"}, 3, 0, 7, POLICY_ALLOW, CTL_SCOPE_DURATION, 28800},
    {{"7", "allow", "persist"}, 3, 0, 7, POLICY_ALLOW, CTL_SCOPE_PERSIST, 0},
    {{"0", "allow"}, 2, -EINVAL, 0, 0, 0, 0},
    {{"x", "allow"}, 2, -EINVAL, 0, 0, 0, 0},
    {{"3", "maybe"}, 2, -EINVAL, 0, 0, 0, 0},
    {{"3", "allow", "forever"}, 3, -EINVAL, 0, 0, 0, 0},
    {{"3"}, 1, -EINVAL, 0, 0, 0, 0},
    {{"3", "allow", "once", "extra"}, 4, -EINVAL, 0, 0, 0, 0},
};

START_TEST(test_parse_answer) {
    ctl_answer a;
    const char *why = NULL;
    memset(&a, 0, sizeof a);
    int r =
        ctl_parse_answer(answer_cases[_i].argc, (char *const *)answer_cases[_i].words, &a, &why);
    ck_assert_int_eq(r, answer_cases[_i].result);
    if (r == 0) {
        ck_assert_uint_eq(a.id, answer_cases[_i].id);
        ck_assert_int_eq(a.action, answer_cases[_i].action);
        ck_assert_int_eq(a.scope, answer_cases[_i].scope);
        ck_assert_uint_eq(a.seconds, answer_cases[_i].seconds);
    } else {
        ck_assert_ptr_nonnull(why);
    }
}
END_TEST

static Suite *ctlproto_suite(void) {
    Suite *s = suite_create("ctlproto");
    TCase *tc = tcase_create("lines");
    tcase_add_loop_test(tc, test_line_is_text, 0, (int)ARRAY_SIZE(line_cases));
    tcase_add_test(tc, test_split);
    suite_add_tcase(s, tc);

    tc = tcase_create("escaping");
    tcase_add_loop_test(tc, test_append_value, 0, (int)ARRAY_SIZE(escape_cases));
    tcase_add_test(tc, test_append_stops_at_capacity);
    suite_add_tcase(s, tc);

    tc = tcase_create("numbers");
    tcase_add_loop_test(tc, test_parse_duration, 0, (int)ARRAY_SIZE(duration_cases));
    tcase_add_test(tc, test_format_duration);
    tcase_add_test(tc, test_parse_u64);
    suite_add_tcase(s, tc);

    tc = tcase_create("answers");
    tcase_add_loop_test(tc, test_parse_answer, 0, (int)ARRAY_SIZE(answer_cases));
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(ctlproto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
