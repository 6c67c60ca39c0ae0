/* check-hostbind.c — unit tests of the name binding table
 * (daemon/hostbind.c): lookups by address and scope, expiry, refresh,
 * eviction at the cap, and pins.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hostbind.h"

static proto_addr v4(uint8_t last) {
    proto_addr a;
    uint8_t ip[4] = {192, 0, 2, last};
    proto_addr_set_v4(&a, ip, 443);
    return a;
}

START_TEST(test_find_by_address_and_scope) {
    hostbind_table *t = hostbind_table_new();
    hostbind_entry *found[4];
    proto_addr a = v4(1), b = v4(2);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(hostbind_add(t, "a.example", &a, 1, 1000, "r1", 0, 100), 0);
    ck_assert_int_eq(hostbind_add(t, "b.example", &a, 2, 2000, NULL, 0, 100), 0);
    ck_assert_int_eq(hostbind_add(t, "c.example", &b, 1, 1000, NULL, 0, 100), 0);
    ck_assert_uint_eq(hostbind_count(t), 3);
    /* Any scope: both names of a, the latest expiry first. */
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 10, true, found, 4), 2);
    ck_assert_str_eq(hostbind_entry_name(found[0]), "b.example");
    ck_assert_str_eq(hostbind_entry_name(found[1]), "a.example");
    ck_assert_str_eq(hostbind_entry_rule(found[1]), "r1");
    ck_assert_str_eq(hostbind_entry_rule(found[0]), "");
    /* One scope only. */
    ck_assert_uint_eq(hostbind_find(t, &a, 1, 10, true, found, 4), 1);
    ck_assert_str_eq(hostbind_entry_name(found[0]), "a.example");
    /* The port does not matter; the family does. */
    a.port = 1;
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 10, true, found, 4), 2);
    proto_addr six;
    uint8_t ip6[16] = {192, 0, 2, 1};
    proto_addr_set_v6(&six, ip6, 443, 0, 0);
    ck_assert_uint_eq(hostbind_find(t, &six, 0, 10, true, found, 4), 0);
    /* max limits the answer to the latest ones. */
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 10, true, found, 1), 1);
    ck_assert_str_eq(hostbind_entry_name(found[0]), "b.example");
    hostbind_table_free(t);
}
END_TEST

START_TEST(test_expiry_and_refresh) {
    hostbind_table *t = hostbind_table_new();
    hostbind_entry *found[2];
    proto_addr a = v4(1);

    ck_assert_int_eq(hostbind_add(t, "a.example", &a, 1, 1000, NULL, 0, 100), 0);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 999, true, found, 2), 1);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 1000, true, found, 2), 0);
    /* Refreshing keeps one entry with the later expiry. */
    ck_assert_int_eq(hostbind_add(t, "a.example", &a, 1, 5000, NULL, 500, 100), 0);
    ck_assert_int_eq(hostbind_add(t, "a.example", &a, 1, 3000, NULL, 600, 100), 0);
    ck_assert_uint_eq(hostbind_count(t), 1);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 4000, true, found, 2), 1);
    ck_assert_uint_eq(hostbind_entry_expires(found[0]), 5000);
    ck_assert_uint_eq(hostbind_expire(t, 4999), 0);
    ck_assert_uint_eq(hostbind_expire(t, 5000), 1);
    ck_assert_uint_eq(hostbind_count(t), 0);
    hostbind_table_free(t);
}
END_TEST

START_TEST(test_pins) {
    hostbind_table *t = hostbind_table_new();
    hostbind_entry *found[2], *e;
    proto_addr a = v4(1);

    ck_assert_int_eq(hostbind_add(t, "a.example", &a, 1, 1000, NULL, 0, 100), 0);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 0, true, found, 2), 1);
    e = found[0];
    hostbind_pin(e);
    /* Expired but pinned: live for finders that keep pinned entries. */
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 2000, true, found, 2), 1);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 2000, false, found, 2), 0);
    ck_assert_uint_eq(hostbind_expire(t, 2000), 0);
    hostbind_unpin(e);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 2000, true, found, 2), 0);
    ck_assert_uint_eq(hostbind_expire(t, 2000), 1);
    /* A pinned entry outlives its table until the last unpin. */
    ck_assert_int_eq(hostbind_add(t, "b.example", &a, 1, 1000, NULL, 0, 100), 0);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 0, true, found, 2), 1);
    e = found[0];
    hostbind_pin(e);
    hostbind_pin(e);
    hostbind_table_free(t);
    ck_assert_str_eq(hostbind_entry_name(e), "b.example");
    hostbind_unpin(e);
    hostbind_unpin(e); /* freed here (ASan checks) */
}
END_TEST

START_TEST(test_cap_and_eviction) {
    hostbind_table *t = hostbind_table_new();
    hostbind_entry *found[2];
    char name[32];

    for (unsigned i = 0; i < 200; i++) {
        proto_addr a = v4((uint8_t)i);
        snprintf(name, sizeof name, "n%u.example", i);
        ck_assert_int_eq(hostbind_add(t, name, &a, 1, 100000, NULL, 0, 50), 0);
        ck_assert_uint_le(hostbind_count(t), 50);
    }
    /* The oldest went first. */
    proto_addr oldest = v4(0), newest = v4(199);
    ck_assert_uint_eq(hostbind_find(t, &oldest, 0, 0, true, found, 2), 0);
    ck_assert_uint_eq(hostbind_find(t, &newest, 0, 0, true, found, 2), 1);
    /* Expired entries go before live ones. */
    proto_addr x = v4(250);
    ck_assert_int_eq(hostbind_add(t, "short.example", &x, 1, 10, NULL, 0, 50), 0);
    proto_addr y = v4(251);
    ck_assert_int_eq(hostbind_add(t, "late.example", &y, 1, 100000, NULL, 20, 50), 0);
    ck_assert_uint_eq(hostbind_find(t, &x, 0, 0, true, found, 2), 0);
    hostbind_table_free(t);

    /* Everything pinned: no room. */
    t = hostbind_table_new();
    proto_addr a = v4(1), b = v4(2);
    ck_assert_int_eq(hostbind_add(t, "a.example", &a, 1, 1000, NULL, 0, 1), 0);
    ck_assert_uint_eq(hostbind_find(t, &a, 0, 0, true, found, 2), 1);
    hostbind_pin(found[0]);
    ck_assert_int_eq(hostbind_add(t, "b.example", &b, 1, 1000, NULL, 0, 1), -ENOSPC);
    hostbind_unpin(found[0]);
    ck_assert_int_eq(hostbind_add(t, "b.example", &b, 1, 1000, NULL, 0, 1), 0);
    hostbind_table_free(t);
}
END_TEST

START_TEST(test_bad_arguments) {
    hostbind_table *t = hostbind_table_new();
    proto_addr a = v4(1), bad = v4(1);
    char longname[HOSTBIND_NAME_MAX + 2];

    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    bad.family = 7;
    ck_assert_int_eq(hostbind_add(t, "", &a, 1, 1, NULL, 0, 10), -EINVAL);
    ck_assert_int_eq(hostbind_add(t, longname, &a, 1, 1, NULL, 0, 10), -EINVAL);
    ck_assert_int_eq(hostbind_add(t, "a", &a, 0, 1, NULL, 0, 10), -EINVAL);
    ck_assert_int_eq(hostbind_add(t, "a", &bad, 1, 1, NULL, 0, 10), -EINVAL);
    ck_assert_uint_eq(hostbind_count(t), 0);
    hostbind_table_free(t);
    hostbind_table_free(NULL);
}
END_TEST

static Suite *hostbind_suite(void) {
    Suite *s = suite_create("hostbind");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_find_by_address_and_scope);
    tcase_add_test(tc, test_expiry_and_refresh);
    tcase_add_test(tc, test_pins);
    tcase_add_test(tc, test_cap_and_eviction);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(hostbind_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
