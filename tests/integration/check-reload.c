/* check-reload.c — integration tests of policy reloads in the real wasockd:
 * through the control socket, wasockctl and SIGHUP; a good file is in force
 * for the next decision, a broken one is refused with its file:line:column
 * errors while the old policy stays; remembered answers whose rule vanished
 * are forgotten; a pending prompt survives a reload; the audit log follows
 * the new settings, and a reload whose audit file cannot be opened is
 * refused.
 *
 * Trusts: the harness and audit_verify_file. Loopback only; the ports
 * below have nothing listening, so an allowed connect ends in
 * connection-refused and a denied one in access-denied.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "harness.h"

/* Room for the policy text with the variable parts filled in. */
#define POLICY_TEXT_MAX 4096

/* The loopback port the rules under test are about (nothing listens). */
#define RULE_PORT 23400

static const char reload_policy_fmt[] =
    "version: 1\n"
    "defaults: { action: deny, prompt: { timeout: 20s, remember: [ once, tenant ] } }\n"
    "prompt_agents:\n"
    "  - { name: ops, uids: [ %u ], tenants: [ \"*\" ] }\n"
    "audit: { file: %s, record: [ deny, prompt, allow ], redact_hostnames: %s }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - { id: %s, ops: [ tcp.connect ], remote: [ \"@loopback\" ], ports: [ %u ],\n"
    "          action: %s }\n";

static itest_daemon rd;

/* The policy with rule `rule_id` deciding connects to RULE_PORT with
 * `action`, auditing to `audit_file`. */
static void format_policy(char *text, size_t len, const char *rule_id, const char *action,
                          const char *audit_file, bool redact) {
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, len, reload_policy_fmt, uid, audit_file, redact ? "true" : "false", uid,
                     rule_id, (unsigned)RULE_PORT, action);
    ck_assert(n > 0 && (size_t)n < len);
}

static void reload_setup(void) {
    char text[POLICY_TEXT_MAX];
    format_policy(text, sizeof text, "first", "deny", "audit.jsonl", false);
    itest_daemon_start(&rd, text);
}

static void reload_teardown(void) {
    itest_daemon_stop(&rd);
}

static void rewrite_policy(const char *rule_id, const char *action, const char *audit_file,
                           bool redact) {
    char text[POLICY_TEXT_MAX];
    format_policy(text, sizeof text, rule_id, action, audit_file, redact);
    itest_daemon_write_policy(&rd, text);
}

static wasock_err connect_rule_port(wasock_client *c) {
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr a = itest_loopback(WASOCK_IPV4, RULE_PORT);
    wasock_err e = wasock_tcp_start_connect(s, &a);
    if (e == WASOCK_OK) {
        ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
        e = wasock_tcp_finish_connect(s, NULL, NULL);
    }
    wasock_tcp_drop(s);
    return e;
}

/* The decided_by of `explain` for a connect to RULE_PORT. */
static void explain_rule_port(char *decided_by, size_t len) {
    char cmd[128], out[4096];
    snprintf(cmd, sizeof cmd, "explain default tcp.connect 127.0.0.1:%u", (unsigned)RULE_PORT);
    ck_assert(itest_ctl_command(&rd, cmd, out, sizeof out, NULL, 0));
    const char *decision = strstr(out, "decision ");
    ck_assert_msg(decision != NULL, "%s", out);
    ck_assert(itest_kv(decision, "decided_by", decided_by, len));
}

/* Waits (bounded) until status counts `want` in the field `key` of the
 * policy line: SIGHUP is handled asynchronously. */
static void wait_reload_count(const char *key, const char *want) {
    char line[512], value[32];
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    for (;;) {
        itest_daemon_status_line(&rd, "policy", line, sizeof line);
        ck_assert(itest_kv(line, key, value, sizeof value));
        if (strcmp(value, want) == 0) {
            return;
        }
        ck_assert_msg(itest_now_ms() < deadline, "%s stayed %s: %s", key, value, line);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

START_TEST(test_good_reload_takes_effect_at_once) {
    wasock_client *c = itest_client_open(&rd, 2, NULL);
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);
    rewrite_policy("second", "allow", "audit.jsonl", false);
    char final[256];
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, final, sizeof final));
    ck_assert_str_eq(final, "ok policy reloaded");
    /* The same session's next decision uses the new policy. */
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_CONNECTION_REFUSED);
    char decided_by[128];
    explain_rule_port(decided_by, sizeof decided_by);
    ck_assert_str_eq(decided_by, "rule:second");
    char line[512];
    itest_daemon_status_line(&rd, "policy", line, sizeof line);
    ck_assert_msg(strstr(line, "reloads=1 failed_reloads=0") != NULL, "%s", line);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_broken_reload_keeps_the_running_policy) {
    wasock_client *c = itest_client_open(&rd, 2, NULL);
    itest_daemon_write_policy(&rd, "version: 1\n"
                                   "tenants:\n"
                                   "  default:\n"
                                   "    match: { uids: [ 0 ] }\n"
                                   "    colour: blue\n");
    char out[4096], final[256], want[ITEST_PATH_MAX + 32];
    ck_assert(!itest_ctl_command(&rd, "reload", out, sizeof out, final, sizeof final));
    ck_assert_msg(strncmp(final, "error: ", 7) == 0, "%s", final);
    /* The reply and the log name the place: file:line:column. */
    snprintf(want, sizeof want, "policy-error %s:5:5: ", rd.policy_path);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    snprintf(want, sizeof want, "%s:5:5: ", rd.policy_path);
    ck_assert(itest_daemon_log_contains(&rd, want));
    /* The old policy decides on. */
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);
    char decided_by[128];
    explain_rule_port(decided_by, sizeof decided_by);
    ck_assert_str_eq(decided_by, "rule:first");
    char line[512];
    itest_daemon_status_line(&rd, "policy", line, sizeof line);
    ck_assert_msg(strstr(line, "reloads=0 failed_reloads=1") != NULL, "%s", line);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_wasockctl_reload) {
    const char *ctl = itest_wasockctl();
    char out[4096], want[ITEST_PATH_MAX + 32];
    rewrite_policy("second", "allow", "audit.jsonl", false);
    const char *argv[] = {ctl, "-C", rd.control_path, "reload", NULL};
    ck_assert_int_eq(itest_run_tool(argv, NULL, out, sizeof out, ITEST_WAIT_MS), 0);
    ck_assert_msg(strstr(out, "policy reloaded") != NULL, "%s", out);

    itest_daemon_write_policy(&rd, "version: 1\nsurprise: true\n");
    ck_assert_int_eq(itest_run_tool(argv, NULL, out, sizeof out, ITEST_WAIT_MS), 1);
    snprintf(want, sizeof want, "%s:2:1: ", rd.policy_path);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_msg(strstr(out, "the running policy stays in force") != NULL, "%s", out);
    char decided_by[128];
    explain_rule_port(decided_by, sizeof decided_by);
    ck_assert_str_eq(decided_by, "rule:second");
}
END_TEST

START_TEST(test_sighup_reloads) {
    wasock_client *c = itest_client_open(&rd, 2, NULL);
    rewrite_policy("second", "allow", "audit.jsonl", false);
    ck_assert_int_eq(kill(rd.pid, SIGHUP), 0);
    wait_reload_count("reloads", "1");
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_CONNECTION_REFUSED);

    itest_daemon_write_policy(&rd, "version: 1\ndefaults: { action: maybe }\n");
    ck_assert_int_eq(kill(rd.pid, SIGHUP), 0);
    wait_reload_count("failed_reloads", "1");
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_CONNECTION_REFUSED);
    ck_assert(itest_daemon_alive(&rd));
    wasock_client_close(c);
}
END_TEST

/* Answers a prompt for a connect to RULE_PORT with "allow tenant" and
 * returns the prompt's id. */
static uint64_t remember_allow(wasock_client *c, itest_ctl *agent) {
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr a = itest_loopback(WASOCK_IPV4, RULE_PORT);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &a), WASOCK_OK);
    uint64_t id = 0;
    ck_assert(itest_agent_wait_prompt(agent, &id, NULL, 0, ITEST_WAIT_MS));
    itest_agent_answer(agent, id, "allow tenant");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_CONNECTION_REFUSED);
    wasock_tcp_drop(s);
    return id;
}

START_TEST(test_answers_of_vanished_rules_are_forgotten) {
    itest_ctl agent;
    char decided_by[128], want[64];
    rewrite_policy("ask", "prompt", "audit.jsonl", false);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    itest_agent_open(&rd, "ops", &agent);
    wasock_client *c = itest_client_open(&rd, 2, NULL);
    uint64_t id = remember_allow(c, &agent);
    snprintf(want, sizeof want, "answer:%llu", (unsigned long long)id);
    explain_rule_port(decided_by, sizeof decided_by);
    ck_assert_str_eq(decided_by, want);

    /* The rule stays (same id): the answer stays. */
    rewrite_policy("ask", "prompt", "audit.jsonl", false);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    explain_rule_port(decided_by, sizeof decided_by);
    ck_assert_str_eq(decided_by, want);
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_CONNECTION_REFUSED);

    /* The rule is renamed: the answer goes, the new rule asks again. */
    rewrite_policy("ask-again", "prompt", "audit.jsonl", false);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    explain_rule_port(decided_by, sizeof decided_by);
    ck_assert_str_eq(decided_by, "rule:ask-again");
    char line[512];
    itest_daemon_status_line(&rd, "prompts", line, sizeof line);
    ck_assert_msg(strstr(line, "remembered=0") != NULL, "%s", line);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_pending_prompt_survives_reload) {
    itest_ctl agent;
    rewrite_policy("ask", "prompt", "audit.jsonl", false);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    itest_agent_open(&rd, "ops", &agent);
    wasock_client *c = itest_client_open(&rd, 2, NULL);
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr a = itest_loopback(WASOCK_IPV4, RULE_PORT);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &a), WASOCK_OK);
    uint64_t id = 0;
    ck_assert(itest_agent_wait_prompt(&agent, &id, NULL, 0, ITEST_WAIT_MS));
    /* The rule that asked is gone after this reload; the question stands. */
    rewrite_policy("other", "deny", "audit.jsonl", false);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    ck_assert(!wasock_tcp_ready(s));
    itest_agent_answer(&agent, id, "allow tenant");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_CONNECTION_REFUSED);
    wasock_tcp_drop(s);
    /* Its answer is not remembered: the rule no longer exists. */
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_reload_follows_the_audit_settings) {
    char second[ITEST_PATH_MAX + 32];
    wasock_client *c = itest_client_open(&rd, 2, NULL);
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);

    /* Same file, another setting: the log is closed and reopened. */
    rewrite_policy("first", "deny", "audit.jsonl", true);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);

    /* Another file: new records go there. */
    rewrite_policy("first", "deny", "second.jsonl", false);
    ck_assert(itest_ctl_command(&rd, "reload", NULL, 0, NULL, 0));
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);
    snprintf(second, sizeof second, "%s/second.jsonl", rd.dir);
    ck_assert_int_eq(audit_verify_file(rd.audit_path, stderr), 0);
    ck_assert_int_eq(audit_verify_file(second, stderr), 0);

    /* A file that cannot be opened (a directory): the reload is refused
     * and the running policy and log stay. */
    char blocked[ITEST_PATH_MAX + 32];
    snprintf(blocked, sizeof blocked, "%s/blocked.jsonl", rd.dir);
    ck_assert_int_eq(mkdir(blocked, 0700), 0);
    rewrite_policy("third", "allow", "blocked.jsonl", false);
    char out[4096], final[256];
    ck_assert(!itest_ctl_command(&rd, "reload", out, sizeof out, final, sizeof final));
    ck_assert_msg(strstr(out, "cannot open the audit log") != NULL, "%s", out);
    ITEST_EXPECT(connect_rule_port(c), WASOCK_E_ACCESS_DENIED);
    char line[512];
    itest_daemon_status_line(&rd, "audit", line, sizeof line);
    ck_assert_msg(strstr(line, "second.jsonl") != NULL, "%s", line);
    ck_assert_int_eq(rmdir(blocked), 0);
    wasock_client_close(c);
    ck_assert_int_eq(audit_verify_file(second, stderr), 0);
}
END_TEST

START_TEST(test_builtin_policy_has_nothing_to_reload) {
    itest_daemon *d = itest_fixture_daemon();
    char final[256];
    ck_assert(!itest_ctl_command(d, "reload", NULL, 0, final, sizeof final));
    ck_assert_msg(strncmp(final, "error: ", 7) == 0, "%s", final);
    ck_assert(itest_daemon_log_contains(d, "no --policy file to reload"));
}
END_TEST

static Suite *reload_suite(void) {
    Suite *s = suite_create("reload");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"good", test_good_reload_takes_effect_at_once},
        {"broken", test_broken_reload_keeps_the_running_policy},
        {"wasockctl", test_wasockctl_reload},
        {"sighup", test_sighup_reloads},
        {"answers", test_answers_of_vanished_rules_are_forgotten},
        {"pending", test_pending_prompt_survives_reload},
        {"audit", test_reload_follows_the_audit_settings},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        itest_tcase_defaults(tc);
        tcase_add_checked_fixture(tc, reload_setup, reload_teardown);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    TCase *tc = tcase_create("builtin");
    itest_tcase_defaults(tc);
    tcase_add_checked_fixture(tc, itest_fixture_setup, itest_fixture_teardown);
    tcase_add_test(tc, test_builtin_policy_has_nothing_to_reload);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return itest_run_suite(reload_suite());
}
