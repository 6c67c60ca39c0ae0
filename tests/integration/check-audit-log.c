/* check-audit-log.c — integration tests of the audit log the real wasockd
 * writes: one hash-chained JSON line per decision the policy asks to
 * record (allow, deny, prompt asked, prompt answered, timed out, no agent,
 * withdrawn, remembered answers), nothing for rules with `log: none`, the
 * journal sink on stderr, and a chain that verifies until one byte of the
 * file is changed.
 *
 * Trusts: the harness and audit_verify_file (daemon/audit.h, unit-tested
 * on its own). The documentation address 192.0.2.1 is refused by the
 * policy before anything is sent; everything else is loopback.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "harness.h"

/* Room for the policy text with numbers filled in. */
#define POLICY_TEXT_MAX 4096

/* Room for the whole audit file of one test (a few dozen records). */
#define AUDIT_TEXT_MAX (256 * 1024)

/* Loopback ports with their own rules, below Linux's ephemeral range so no
 * kernel-chosen port falls into them. Nothing needs to listen there: the
 * records are about the decisions. */
#define QUIET_PORT  23300 /* allowed, log: none */
#define ASK_PORT    23310 /* prompt, 20 s (the first of ten) */
#define HASTY_PORT  23320 /* prompt, 300 ms */
#define REFUSE_PORT 23330 /* denied by a rule */

static const char audit_policy_fmt[] =
    "version: 1\n"
    "defaults: { action: deny, prompt: { timeout: 20s, remember: [ once, tenant ] } }\n"
    "prompt_agents:\n"
    "  - { name: auditor, uids: [ %u ], tenants: [ \"*\" ] }\n"
    "audit: { sink: %s, file: audit.jsonl, record: [ deny, prompt, allow ] }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - { id: quiet, ops: [ tcp.connect ], remote: [ \"@loopback\" ], ports: [ %u ],\n"
    "          action: allow, log: none }\n"
    "      - { id: ask, ops: [ tcp.connect ], remote: [ \"@loopback\" ], ports: [ \"%u-%u\" ],\n"
    "          action: prompt }\n"
    "      - { id: hasty, ops: [ tcp.connect ], remote: [ \"@loopback\" ], ports: [ %u ],\n"
    "          action: prompt, prompt: { timeout: 300ms } }\n"
    "      - { id: refuse, ops: [ tcp.connect ], remote: [ \"@loopback\" ], ports: [ %u ],\n"
    "          action: deny }\n"
    "      - { id: loopback, ops: [ any ], remote: [ \"@loopback\" ], local: [ \"@loopback\" ],\n"
    "          action: allow }\n";

static itest_daemon ad;

static void start_with_sink(const char *sink) {
    char text[POLICY_TEXT_MAX];
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, sizeof text, audit_policy_fmt, uid, sink, uid, QUIET_PORT, ASK_PORT,
                     ASK_PORT + 9, HASTY_PORT, REFUSE_PORT);
    ck_assert(n > 0 && n < (int)sizeof text);
    itest_daemon_start(&ad, text);
}

static void file_sink_setup(void) {
    start_with_sink("file");
}

static void journal_sink_setup(void) {
    start_with_sink("journal");
}

static void audit_teardown(void) {
    itest_daemon_stop(&ad);
}

/* Connects (0.2) and returns finish-connect's result; the socket is
 * dropped. */
static wasock_err connect_result(wasock_client *c, const char *target) {
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr a = itest_addr(target);
    wasock_err e = wasock_tcp_start_connect(s, &a);
    if (e == WASOCK_OK) {
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        e = wasock_tcp_finish_connect(s, NULL, NULL);
    }
    wasock_tcp_drop(s);
    return e;
}

static void read_audit(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    ssize_t n = itest_read_exact(fd, buf, len - 1, ITEST_WAIT_MS);
    close(fd);
    ck_assert_msg(n >= 0, "read %s", path);
    buf[n] = '\0';
}

/* The one record line containing every needle; asserts there is exactly
 * one. */
static void expect_record(const char *text, const char *const needles[], size_t n_needles) {
    int found = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        bool all = true;
        for (size_t i = 0; i < n_needles && all; i++) {
            const char *hit = strstr(line, needles[i]);
            all = hit != NULL && (size_t)(hit - line) < len;
        }
        found += all;
        line += len + (end != NULL);
    }
    ck_assert_msg(found == 1, "%d records with %s%s%s in:\n%s", found, needles[0],
                  n_needles > 1 ? " ... " : "", n_needles > 1 ? needles[n_needles - 1] : "", text);
}

#define EXPECT_RECORD(text, ...)                                                                   \
    do {                                                                                           \
        const char *const needles_[] = {__VA_ARGS__};                                              \
        expect_record(text, needles_, sizeof needles_ / sizeof needles_[0]);                       \
    } while (0)

static size_t count_lines(const char *text) {
    size_t n = 0;
    for (; *text != '\0'; text++) {
        n += *text == '\n';
    }
    return n;
}

START_TEST(test_every_kind_of_decision_is_recorded) {
    char addr[64], uid_field[64], text[AUDIT_TEXT_MAX];
    itest_ctl agent;
    itest_agent_open(&ad, "auditor", &agent);
    wasock_client *c = itest_client_open(&ad, 2, NULL);

    /* deny by the global default, before anything is sent */
    ITEST_EXPECT(connect_result(c, "192.0.2.1:80"), WASOCK_E_ACCESS_DENIED);
    /* deny by a rule */
    snprintf(addr, sizeof addr, "127.0.0.1:%u", REFUSE_PORT);
    ITEST_EXPECT(connect_result(c, addr), WASOCK_E_ACCESS_DENIED);
    /* allowed, but the rule says log: none */
    snprintf(addr, sizeof addr, "127.0.0.1:%u", QUIET_PORT);
    (void)connect_result(c, addr);
    /* prompted and allowed: nothing listens, so the kernel refuses */
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ASK_PORT);
    wasock_addr target = itest_addr(addr);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    uint64_t answered = 0, id = 0;
    ck_assert(itest_agent_wait_prompt(&agent, &answered, NULL, 0, ITEST_WAIT_MS));
    itest_agent_answer(&agent, answered, "allow tenant");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_CONNECTION_REFUSED);
    wasock_tcp_drop(s);
    /* the remembered answer decides the next one */
    ITEST_EXPECT(connect_result(c, addr), WASOCK_E_CONNECTION_REFUSED);
    /* prompted and timed out */
    snprintf(addr, sizeof addr, "127.0.0.1:%u", HASTY_PORT);
    ITEST_EXPECT(connect_result(c, addr), WASOCK_E_ACCESS_DENIED);
    /* prompted, then withdrawn by a drop */
    s = itest_socket(c, WASOCK_IPV4);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ASK_PORT + 1);
    target = itest_addr(addr);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    ck_assert(itest_agent_wait_prompt(&agent, &id, NULL, 0, ITEST_WAIT_MS));
    wasock_tcp_drop(s);
    wasock_client_close(c);
    itest_ctl_close(&agent);
    /* without an agent */
    c = itest_client_open(&ad, 2, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", HASTY_PORT);
    ITEST_EXPECT(connect_result(c, addr), WASOCK_E_ACCESS_DENIED);
    wasock_client_close(c);

    /* Records are written before the reply, so they are all there. */
    read_audit(ad.audit_path, text, sizeof text);
    snprintf(uid_field, sizeof uid_field, "\"peer\":{\"uid\":%u,", (unsigned)getuid());
    EXPECT_RECORD(text, "\"op\":\"tcp.connect\"", "\"remote\":\"192.0.2.1:80\"",
                  "\"decision\":\"deny\"", "\"decided_by\":\"default:global\"",
                  "\"error_returned\":\"access-denied\"", "\"tenant\":\"default\"", uid_field);
    EXPECT_RECORD(text, "\"decision\":\"deny\"", "\"decided_by\":\"rule:refuse\"");
    ck_assert_msg(strstr(text, "rule:quiet") == NULL, "log: none was recorded:\n%s", text);
    EXPECT_RECORD(text, "\"decision\":\"prompt\"", "\"decided_by\":\"rule:ask\"",
                  "\"error_returned\":null", ":23310\"");
    EXPECT_RECORD(text, "\"decision\":\"prompt-allow\"", "\"decided_by\":\"prompt:auditor\"");
    char answer[64];
    snprintf(answer, sizeof answer, "\"decided_by\":\"answer:%llu\"", (unsigned long long)answered);
    EXPECT_RECORD(text, "\"decision\":\"allow\"", answer);
    EXPECT_RECORD(text, "\"decision\":\"timeout-deny\"", "\"decided_by\":\"rule:hasty\"",
                  "\"error_returned\":\"access-denied\"");
    EXPECT_RECORD(text, "\"decision\":\"withdrawn\"", ":23311\"");
    EXPECT_RECORD(text, "\"decision\":\"no-agent-deny\"", "\"decided_by\":\"rule:hasty\"");
    /* The implicit binds of the connects are recorded as allowed. */
    ck_assert(strstr(text, "\"op\":\"tcp.bind(implicit)\"") != NULL);

    /* And the file is one intact chain. */
    ck_assert_int_eq(audit_verify_file(ad.audit_path, stderr), 0);
}
END_TEST

START_TEST(test_changing_one_byte_breaks_the_chain) {
    char text[AUDIT_TEXT_MAX];
    wasock_client *c = itest_client_open(&ad, 2, NULL);
    for (int i = 0; i < 3; i++) {
        ITEST_EXPECT(connect_result(c, "192.0.2.1:80"), WASOCK_E_ACCESS_DENIED);
    }
    wasock_client_close(c);
    /* Records come only from decisions: with the client gone, nothing
     * writes while the file is changed. */
    char path[ITEST_PATH_MAX];
    snprintf(path, sizeof path, "%s", ad.audit_path);
    read_audit(path, text, sizeof text);
    ck_assert_uint_ge(count_lines(text), 3);
    ck_assert_int_eq(audit_verify_file(path, stderr), 0);

    /* One byte of the second record's address: 192 becomes 193. */
    const char *second = strchr(text, '\n');
    ck_assert(second != NULL);
    const char *hit = strstr(second + 1, "192.0.2.1");
    ck_assert(hit != NULL);
    off_t offset = (off_t)(hit - text);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ck_assert(fd >= 0);
    ck_assert_int_eq(pwrite(fd, "3", 1, offset + 2), 1);
    close(fd);
    ck_assert_int_eq(audit_verify_file(path, stderr), 1);
}
END_TEST

START_TEST(test_journal_sink_writes_to_stderr) {
    wasock_client *c = itest_client_open(&ad, 2, NULL);
    ITEST_EXPECT(connect_result(c, "192.0.2.1:80"), WASOCK_E_ACCESS_DENIED);
    wasock_client_close(c);
    ck_assert(itest_daemon_log_contains(&ad, "audit: {\"ts\":"));
    ck_assert(itest_daemon_log_contains(&ad, "\"remote\":\"192.0.2.1:80\""));
    /* No file for the journal sink. */
    ck_assert_int_ne(access(ad.audit_path, F_OK), 0);
}
END_TEST

START_TEST(test_builtin_policy_audits_to_stderr) {
    /* The fixture's daemon runs the built-in default: its refusals are
     * recorded on stderr, and no file is written anywhere. */
    itest_daemon *d = itest_fixture_daemon();
    wasock_client *c = itest_client_open(d, 2, NULL);
    ITEST_EXPECT(connect_result(c, "192.0.2.1:80"), WASOCK_E_ACCESS_DENIED);
    wasock_client_close(c);
    ck_assert(itest_daemon_log_contains(d, "\"decision\":\"deny\""));
    ck_assert_int_ne(access(d->audit_path, F_OK), 0);
}
END_TEST

START_TEST(test_status_shows_the_audit_log) {
    char line[512], want[ITEST_PATH_MAX + 16];
    wasock_client *c = itest_client_open(&ad, 2, NULL);
    ITEST_EXPECT(connect_result(c, "192.0.2.1:80"), WASOCK_E_ACCESS_DENIED);
    wasock_client_close(c);
    itest_daemon_status_line(&ad, "audit", line, sizeof line);
    snprintf(want, sizeof want, "file=%s", ad.audit_path);
    ck_assert_msg(strstr(line, "sink=file") != NULL && strstr(line, want) != NULL, "%s", line);
    /* The implicit bind and the connect: two records. */
    ck_assert_msg(strstr(line, "seq=2") != NULL, "%s", line);
}
END_TEST

static Suite *audit_suite(void) {
    Suite *s = suite_create("audit-log");
    TCase *tc = tcase_create("records");
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, file_sink_setup, audit_teardown);
    tcase_add_test(tc, test_every_kind_of_decision_is_recorded);
    tcase_add_test(tc, test_status_shows_the_audit_log);
    suite_add_tcase(s, tc);

    tc = tcase_create("chain");
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, file_sink_setup, audit_teardown);
    tcase_add_test(tc, test_changing_one_byte_breaks_the_chain);
    suite_add_tcase(s, tc);

    tc = tcase_create("journal");
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, journal_sink_setup, audit_teardown);
    tcase_add_test(tc, test_journal_sink_writes_to_stderr);
    suite_add_tcase(s, tc);

    tc = tcase_create("builtin");
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
    tcase_add_test(tc, test_builtin_policy_audits_to_stderr);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return itest_run_suite(audit_suite());
}
