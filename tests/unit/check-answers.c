/* check-answers.c — unit tests for the store of remembered prompt answers
 * (daemon/answers.h): what shape of request an answer covers per
 * operation, session and tenant scopes, expiry, replacement, the
 * per-tenant cap, and forgetting by session and by reload.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answers.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static policy_endpoint ep4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
    policy_endpoint e;

    memset(&e, 0, sizeof(e));
    e.family = 4;
    e.ip[0] = a;
    e.ip[1] = b;
    e.ip[2] = c;
    e.ip[3] = d;
    e.port = port;
    return e;
}

/* ::ffff:a.b.c.d */
static policy_endpoint ep_mapped(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
    policy_endpoint e;

    memset(&e, 0, sizeof(e));
    e.family = 6;
    e.ip[10] = 0xff;
    e.ip[11] = 0xff;
    e.ip[12] = a;
    e.ip[13] = b;
    e.ip[14] = c;
    e.ip[15] = d;
    e.port = port;
    return e;
}

static policy_request connect_req(const char *tenant, policy_endpoint remote) {
    policy_request r;

    memset(&r, 0, sizeof(r));
    r.tenant = tenant;
    r.op = POLICY_OP_TCP_CONNECT;
    r.remote = remote;
    return r;
}

START_TEST(test_connect_shape) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request asked = connect_req("dev", ep4(10, 0, 0, 5, 22));
    ck_assert_int_eq(answer_store_add(&st, &asked, "rule:lan", POLICY_ALLOW, 0, 0, 7), 0);

    const answer *a = answer_store_find(&st, &asked, 1, 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(a->id, 7);
    ck_assert_int_eq(a->action, POLICY_ALLOW);
    ck_assert_str_eq(a->decided_by, "rule:lan");

    /* Another port, address, tenant or operation is another question. */
    policy_request other = connect_req("dev", ep4(10, 0, 0, 5, 23));
    ck_assert_ptr_null(answer_store_find(&st, &other, 1, 0));
    other = connect_req("dev", ep4(10, 0, 0, 6, 22));
    ck_assert_ptr_null(answer_store_find(&st, &other, 1, 0));
    other = connect_req("prod", ep4(10, 0, 0, 5, 22));
    ck_assert_ptr_null(answer_store_find(&st, &other, 1, 0));
    other = asked;
    other.op = POLICY_OP_UDP_SEND;
    ck_assert_ptr_null(answer_store_find(&st, &other, 1, 0));
    /* A host name makes it another question too. */
    other = asked;
    other.host = "example.com";
    ck_assert_ptr_null(answer_store_find(&st, &other, 1, 0));

    /* Our own address does not matter for a connect; the IPv4-mapped
     * spelling of the destination is the same destination. */
    other = asked;
    other.local = ep4(192, 168, 1, 2, 40000);
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 1, 0));
    other = connect_req("dev", ep_mapped(10, 0, 0, 5, 22));
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 1, 0));
    answer_store_clear(&st);
    ck_assert_uint_eq(st.count, 0);
}
END_TEST

START_TEST(test_accept_and_bind_shapes) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request accept;
    memset(&accept, 0, sizeof(accept));
    accept.tenant = "srv";
    accept.op = POLICY_OP_TCP_ACCEPT;
    accept.local = ep4(127, 0, 0, 1, 8080);
    accept.remote = ep4(127, 0, 0, 9, 50001);
    ck_assert_int_eq(answer_store_add(&st, &accept, "rule:a", POLICY_DENY, 0, 0, 1), 0);

    /* The same peer from another ephemeral port is covered... */
    policy_request other = accept;
    other.remote.port = 50002;
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 0, 0));
    /* ...on another of our ports it is not. */
    other.local.port = 8081;
    ck_assert_ptr_null(answer_store_find(&st, &other, 0, 0));

    /* Binding port 0 and a port the kernel chose mean the same. */
    policy_request bind;
    memset(&bind, 0, sizeof(bind));
    bind.tenant = "srv";
    bind.op = POLICY_OP_TCP_LISTEN;
    bind.local = ep4(127, 0, 0, 1, 0);
    ck_assert_int_eq(answer_store_add(&st, &bind, "rule:l", POLICY_ALLOW, 0, 0, 2), 0);
    other = bind;
    other.local.port = 41234;
    other.local.port_ephemeral = true;
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 0, 0));
    other.local.port_ephemeral = false;
    ck_assert_ptr_null(answer_store_find(&st, &other, 0, 0));
    answer_store_clear(&st);
}
END_TEST

START_TEST(test_session_and_tenant_scopes) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request req = connect_req("dev", ep4(10, 0, 0, 5, 22));
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:lan", POLICY_ALLOW, 3, 0, 1), 0);
    ck_assert_ptr_nonnull(answer_store_find(&st, &req, 3, 0));
    ck_assert_ptr_null(answer_store_find(&st, &req, 4, 0));
    ck_assert_ptr_null(answer_store_find(&st, &req, 0, 0));

    /* A tenant-wide answer covers every session, and no session. */
    policy_request other = connect_req("dev", ep4(10, 0, 0, 6, 22));
    ck_assert_int_eq(answer_store_add(&st, &other, "rule:lan", POLICY_DENY, 0, 0, 2), 0);
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 4, 0));
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 0, 0));

    /* Session 3 closes: its answer goes, the tenant's stays. */
    ck_assert_uint_eq(answer_store_drop_session(&st, 3), 1);
    ck_assert_ptr_null(answer_store_find(&st, &req, 3, 0));
    ck_assert_uint_eq(answer_store_drop_session(&st, 0), 0);
    ck_assert_uint_eq(st.count, 1);
    answer_store_clear(&st);
}
END_TEST

START_TEST(test_expiry) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request req = connect_req("dev", ep4(10, 0, 0, 5, 22));
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:lan", POLICY_ALLOW, 0, 1000, 1), 0);
    ck_assert_ptr_nonnull(answer_store_find(&st, &req, 1, 999));
    /* At the expiry time it is gone, and forgotten. */
    ck_assert_ptr_null(answer_store_find(&st, &req, 1, 1000));
    ck_assert_uint_eq(st.count, 0);
}
END_TEST

START_TEST(test_newer_answer_replaces_older) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request req = connect_req("dev", ep4(10, 0, 0, 5, 22));
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:lan", POLICY_ALLOW, 0, 0, 1), 0);
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:lan", POLICY_DENY, 0, 0, 2), 0);
    ck_assert_uint_eq(st.count, 1);
    const answer *a = answer_store_find(&st, &req, 0, 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->action, POLICY_DENY);
    ck_assert_uint_eq(a->id, 2);
    /* A session's answer next to the tenant's is a separate one, and the
     * newest covering answer wins. */
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:lan", POLICY_ALLOW, 5, 0, 3), 0);
    ck_assert_uint_eq(st.count, 2);
    ck_assert_uint_eq(answer_store_find(&st, &req, 5, 0)->id, 3);
    ck_assert_uint_eq(answer_store_find(&st, &req, 6, 0)->id, 2);
    answer_store_clear(&st);
}
END_TEST

START_TEST(test_cap_per_tenant) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request other = connect_req("prod", ep4(10, 9, 9, 9, 1));
    ck_assert_int_eq(answer_store_add(&st, &other, "rule:x", POLICY_ALLOW, 0, 0, 1), 0);
    for (unsigned i = 0; i <= ANSWERS_MAX_PER_TENANT; i++) {
        policy_request req = connect_req("dev", ep4(10, 0, 0, 1, (uint16_t)(1000 + i)));
        ck_assert_int_eq(answer_store_add(&st, &req, "rule:lan", POLICY_ALLOW, 0, 0, 10 + i), 0);
    }
    /* The tenant's oldest answer made room; the other tenant kept its. */
    ck_assert_uint_eq(st.count, ANSWERS_MAX_PER_TENANT + 1);
    policy_request oldest = connect_req("dev", ep4(10, 0, 0, 1, 1000));
    ck_assert_ptr_null(answer_store_find(&st, &oldest, 0, 0));
    policy_request newest =
        connect_req("dev", ep4(10, 0, 0, 1, (uint16_t)(1000 + ANSWERS_MAX_PER_TENANT)));
    ck_assert_ptr_nonnull(answer_store_find(&st, &newest, 0, 0));
    ck_assert_ptr_nonnull(answer_store_find(&st, &other, 0, 0));
    answer_store_clear(&st);
}
END_TEST

static bool keep_rule_lan(void *opaque, const answer *a) {
    (void)opaque;
    return strcmp(a->decided_by, "rule:lan") == 0;
}

START_TEST(test_prune) {
    answer_store st = ANSWER_STORE_INIT;
    policy_request a = connect_req("dev", ep4(10, 0, 0, 1, 1));
    policy_request b = connect_req("dev", ep4(10, 0, 0, 2, 1));
    ck_assert_int_eq(answer_store_add(&st, &a, "rule:lan", POLICY_ALLOW, 0, 0, 1), 0);
    ck_assert_int_eq(answer_store_add(&st, &b, "rule:gone", POLICY_ALLOW, 0, 0, 2), 0);
    ck_assert_uint_eq(answer_store_prune(&st, keep_rule_lan, NULL), 1);
    ck_assert_ptr_nonnull(answer_store_find(&st, &a, 0, 0));
    ck_assert_ptr_null(answer_store_find(&st, &b, 0, 0));
    answer_store_clear(&st);
}
END_TEST

START_TEST(test_invalid_answers) {
    answer_store st = ANSWER_STORE_INIT;
    char long_tenant[PROTO_TENANT_MAX + 2];
    memset(long_tenant, 't', sizeof(long_tenant) - 1);
    long_tenant[sizeof(long_tenant) - 1] = '\0';
    policy_request req = connect_req("dev", ep4(10, 0, 0, 1, 1));
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:x", POLICY_PROMPT, 0, 0, 1), -EINVAL);
    ck_assert_int_eq(answer_store_add(&st, &req, NULL, POLICY_ALLOW, 0, 0, 1), -EINVAL);
    req.tenant = long_tenant;
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:x", POLICY_ALLOW, 0, 0, 1), -EINVAL);
    req.tenant = NULL;
    ck_assert_int_eq(answer_store_add(&st, &req, "rule:x", POLICY_ALLOW, 0, 0, 1), -EINVAL);
    ck_assert_ptr_null(answer_store_find(&st, &req, 0, 0));
    ck_assert_uint_eq(st.count, 0);
}
END_TEST

static Suite *answers_suite(void) {
    Suite *s = suite_create("answers");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"connect-shape", test_connect_shape},
        {"accept-bind-shapes", test_accept_and_bind_shapes},
        {"scopes", test_session_and_tenant_scopes},
        {"expiry", test_expiry},
        {"replace", test_newer_answer_replaces_older},
        {"cap", test_cap_per_tenant},
        {"prune", test_prune},
        {"invalid", test_invalid_answers},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(answers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
