/* check-prompts.c — integration tests of permission prompts in the real
 * wasockd: an agent on the control socket (the test itself, speaking
 * proto/AGENT.md) answers prompts for connects, binds, listens and
 * accepts; timeouts, no agent, remembered answers, merged prompts, prompts
 * withdrawn when their socket goes, agents that vanish or send garbage,
 * the per-tenant cap, refused scopes, delayed refusals and the
 * pending-operations limit.
 *
 * Trusts: the harness (harness.h). Only loopback addresses are used. No
 * timing assertions: a prompt that must not be asked is shown by the
 * operation completing without an answer, and timeouts are short (300 ms)
 * only where the timeout itself is the subject.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* Room for the policy text with the uid filled in. */
#define POLICY_TEXT_MAX 8192

/* The short timeout of the tenants whose prompts are meant to time out. */
#define SHORT_TIMEOUT "300ms"

/* A uid no test runs as: the prompt agent entry only it may use. */
#define FOREIGN_UID 65533

/* Every tenant acts for the test's uid. The global cap of pending prompts
 * per tenant is 2, so the cap test needs only three sockets. Prompts that
 * a test answers wait 20 s: far longer than any bounded wait of the
 * harness, so an unanswered prompt fails the test instead of timing out
 * into a pass. */
static const char prompt_policy_fmt[] =
    "version: 1\n"
    "defaults:\n"
    "  action: deny\n"
    "  prompt: { timeout: 20s, on_timeout: deny, on_no_agent: deny,\n"
    "            remember: [ once, session, tenant, 1h, persist ], max_pending_per_tenant: 2 }\n"
    "prompt_agents:\n"
    "  - { name: tester, uids: [ %u ], tenants: [ \"*\" ] }\n"
    "  - { name: night-desk, uids: [ %u ], tenants: [ unwatched ] }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - id: ask-connect\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "        prompt: { note: \"a \\\"quoted\\\" note\" }\n"
    "      - id: loopback-server\n"
    "        ops: [ tcp.server ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        action: allow\n"
    "  hasty:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - id: hasty-connect\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "        prompt: { timeout: " SHORT_TIMEOUT ", remember: [ once ] }\n"
    "  lenient:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - id: lenient-connect\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "        prompt: { timeout: " SHORT_TIMEOUT ", on_timeout: allow, on_no_agent: allow }\n"
    "  unwatched:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - id: night-connect\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "        prompt: { agents: [ night-desk ] }\n"
    "  server:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - id: server-bind\n"
    "        ops: [ tcp.bind ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "      - id: server-listen\n"
    "        ops: [ tcp.listen ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "      - id: server-accept\n"
    "        ops: [ tcp.accept ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "      - id: server-udp-bind\n"
    "        ops: [ udp.bind ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        action: prompt\n"
    "      - id: server-lookup\n"
    "        ops: [ lookup ]\n"
    "        host: localhost\n"
    "        action: prompt\n"
    "  tarpit:\n"
    "    match: { uids: [ %u ] }\n"
    "    rules:\n"
    "      - id: slow-no\n"
    "        ops: [ tcp.connect ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        action: deny\n"
    "        deny: { delay: " SHORT_TIMEOUT " }\n"
    "  limited:\n"
    "    match: { uids: [ %u ] }\n"
    "    limits: { pending_ops: 1 }\n"
    "    rules:\n"
    "      - id: limited-connect\n"
    "        ops: [ tcp.connect, tcp.bind ]\n"
    "        remote: [ \"@loopback\" ]\n"
    "        local: [ \"@loopback\" ]\n"
    "        action: prompt\n";

static itest_daemon pd;

static void prompts_setup(void) {
    char text[POLICY_TEXT_MAX];
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, sizeof text, prompt_policy_fmt, uid, (unsigned)FOREIGN_UID, uid, uid,
                     uid, uid, uid, uid, uid);
    ck_assert(n > 0 && n < (int)sizeof text);
    itest_daemon_start(&pd, text);
}

static void prompts_teardown(void) {
    itest_daemon_stop(&pd);
}

/* A 0.2 start-connect that the policy sends to a prompt: it replies at
 * once and leaves the socket not ready. */
static wasock_tcp *start_connect(wasock_client *c, wasock_family fam, uint16_t port) {
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr target = itest_loopback(fam, port);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    return s;
}

static uint64_t expect_prompt(itest_ctl *agent, char *line, size_t len) {
    uint64_t id = 0;
    bool got = itest_agent_wait_prompt(agent, &id, line, len, ITEST_WAIT_MS);
    if (!got) {
        itest_daemon_print_log(&pd);
    }
    ck_assert_msg(got, "no prompt reached the agent");
    return id;
}

/* Finishes a 0.2 connect: waits for readiness, then finish-connect. */
static wasock_err finish_connect(wasock_client *c, wasock_tcp *s) {
    if (!itest_wait_ready(c, s, ITEST_WAIT_MS)) {
        itest_daemon_print_log(&pd);
        ck_abort_msg("the socket did not become ready");
    }
    return wasock_tcp_finish_connect(s, NULL, NULL);
}

/* Answers the next prompt from another thread, for the 0.3 calls that wait
 * until the prompt ends. No Check assertions here: the test body checks
 * the outcome after joining. */
typedef struct answerer {
    itest_ctl *agent;
    const char *answer;
    bool prompted, acknowledged;
    char line[ITEST_CTL_LINE_MAX + 1];
    pthread_t thread;
} answerer;

static void *answer_thread(void *arg) {
    answerer *a = arg;
    char ack[ITEST_CTL_LINE_MAX + 1], cmd[128];
    uint64_t id = 0;
    if (!itest_agent_wait_line(a->agent, "prompt ", a->line, sizeof a->line, ITEST_WAIT_MS)) {
        return NULL;
    }
    a->prompted = true;
    if (sscanf(a->line, "prompt %llu", (unsigned long long *)&id) != 1) {
        return NULL;
    }
    int n = snprintf(cmd, sizeof cmd, "answer %llu %s\n", (unsigned long long)id, a->answer);
    if (n <= 0 || itest_write_all(a->agent->fd, cmd, (size_t)n, ITEST_WAIT_MS) != 0) {
        return NULL;
    }
    a->acknowledged = itest_ctl_read_line(a->agent, ack, sizeof ack, ITEST_WAIT_MS) &&
                      strncmp(ack, "answered ", 9) == 0;
    return NULL;
}

static void answerer_start(answerer *a, itest_ctl *agent, const char *answer) {
    memset(a, 0, sizeof *a);
    a->agent = agent;
    a->answer = answer;
    ck_assert_int_eq(pthread_create(&a->thread, NULL, answer_thread, a), 0);
}

static void answerer_join(answerer *a) {
    ck_assert_int_eq(pthread_join(a->thread, NULL), 0);
    ck_assert_msg(a->prompted, "no prompt reached the agent");
    ck_assert_msg(a->acknowledged, "the answer was not acknowledged");
}

/* ------------------------------------------------------------------ allow / deny */

START_TEST(test_prompt_allow_in_every_shape) {
    int wasi;
    wasock_family fam;
    if (!itest_variant(_i, &wasi, &fam)) {
        return;
    }
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, wasi, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(fam, &port);

    answerer a;
    answerer_start(&a, &agent, "allow");
    wasock_tcp *s = itest_socket(c, fam);
    wasock_addr target = itest_loopback(fam, port);
    itest_conn conn;
    ITEST_EXPECT(itest_connect(c, s, &target, &conn), WASOCK_OK);
    answerer_join(&a);

    char value[128], want[64];
    ck_assert(itest_kv(a.line, "op", value, sizeof value));
    ck_assert_str_eq(value, "tcp.connect");
    ck_assert(itest_kv(a.line, "remote", value, sizeof value));
    snprintf(want, sizeof want, fam == WASOCK_IPV4 ? "127.0.0.1:%u" : "[::1]:%u", port);
    ck_assert_str_eq(value, want);
    ck_assert(itest_kv(a.line, "tenant", value, sizeof value));
    ck_assert_str_eq(value, "default");
    ck_assert(itest_kv(a.line, "rule", value, sizeof value));
    ck_assert_str_eq(value, "rule:ask-connect");
    ck_assert(itest_kv(a.line, "note", value, sizeof value));
    ck_assert_str_eq(value, "a \"quoted\" note");
    /* persist is not offered: it is not supported yet. */
    ck_assert(itest_kv(a.line, "remember", value, sizeof value));
    ck_assert_str_eq(value, "once,session,tenant,1h");
    ck_assert(itest_kv(a.line, "pid", value, sizeof value));
    ck_assert_int_eq(strtol(value, NULL, 10), (long)getpid());

    int peer = itest_plain_accept(lfd, ITEST_WAIT_MS);
    ck_assert_int_ge(peer, 0);
    itest_send_expect(conn.out, peer, "allowed by a person");
    close(peer);
    itest_conn_close(&conn);
    close(lfd);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_prompt_keeps_02_connect_in_progress) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    /* The readiness event came before start-connect's reply. */
    ck_assert(!wasock_tcp_ready(s));
    uint64_t id = expect_prompt(&agent, NULL, 0);
    /* While the person thinks, the operation stays in progress. */
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_WOULD_BLOCK);
    ck_assert(!wasock_tcp_ready(s));
    wasock_addr again = itest_loopback(WASOCK_IPV4, port);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &again), WASOCK_E_CONCURRENCY_CONFLICT);
    itest_agent_answer(&agent, id, "allow once");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_OK);
    wasock_tcp_drop(s);
    close(lfd);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_prompt_deny) {
    int wasi = _i == 0 ? 2 : 3;
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, wasi, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    answerer a;
    answerer_start(&a, &agent, "deny");
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr target = itest_loopback(WASOCK_IPV4, port);
    ITEST_EXPECT(itest_connect(c, s, &target, NULL), WASOCK_E_ACCESS_DENIED);
    answerer_join(&a);
    /* A refused connect closes the socket, as any failed connect does. */
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_E_INVALID_STATE);
    /* Nothing reached the listener. */
    ck_assert_int_eq(itest_plain_accept(lfd, 0), -ETIMEDOUT);
    wasock_tcp_drop(s);
    close(lfd);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

/* ------------------------------------------------------------------ timeouts, no agent */

START_TEST(test_prompt_timeout_applies_on_timeout) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, "hasty");
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    char line[ITEST_CTL_LINE_MAX + 1], want[64];
    uint64_t id = expect_prompt(&agent, line, sizeof line);
    /* Nobody answers: on_timeout (deny) for this request. */
    ITEST_EXPECT(finish_connect(c, s), WASOCK_E_ACCESS_DENIED);
    snprintf(want, sizeof want, "withdraw %llu timeout", (unsigned long long)id);
    ck_assert(itest_agent_wait_line(&agent, want, NULL, 0, ITEST_WAIT_MS));
    /* Only this request: the next one is asked again. */
    wasock_tcp *s2 = start_connect(c, WASOCK_IPV4, port);
    uint64_t id2 = expect_prompt(&agent, NULL, 0);
    ck_assert(id2 != id);
    itest_agent_answer(&agent, id2, "allow");
    ITEST_EXPECT(finish_connect(c, s2), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_tcp_drop(s2);
    close(lfd);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_prompt_timeout_may_allow) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 3, "lenient");
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr target = itest_loopback(WASOCK_IPV4, port);
    /* The 0.3 call waits until the 300 ms timeout allows it. */
    ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_OK);
    ck_assert(itest_agent_wait_line(&agent, "withdraw ", NULL, 0, ITEST_WAIT_MS));
    wasock_tcp_drop(s);
    close(lfd);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_no_agent_applies_on_no_agent) {
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    /* No agent at all: decided at once, the socket never stops being ready. */
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    ck_assert(wasock_tcp_ready(s));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_ACCESS_DENIED);
    wasock_tcp_drop(s);
    wasock_client_close(c);

    /* A tenant whose on_no_agent is allow connects. */
    c = itest_client_open(&pd, 3, "lenient");
    s = itest_socket(c, WASOCK_IPV4);
    wasock_addr target = itest_loopback(WASOCK_IPV4, port);
    ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);

    /* An agent that may not answer for the tenant (the rule names another
     * agent) does not count: still on_no_agent, and it is never shown. */
    itest_ctl agent;
    itest_agent_open(&pd, NULL, &agent);
    c = itest_client_open(&pd, 2, "unwatched");
    s = start_connect(c, WASOCK_IPV4, port);
    ck_assert(wasock_tcp_ready(s));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_ACCESS_DENIED);
    char line[256];
    itest_daemon_status_line(&pd, "prompts", line, sizeof line);
    ck_assert_msg(strstr(line, " asked=0 ") != NULL, "%s", line);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    itest_ctl_close(&agent);
    close(lfd);
}
END_TEST

/* ------------------------------------------------------------------ remembered answers */

START_TEST(test_remembered_for_the_session) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "allow session");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_OK);

    /* The same destination again in this session: no prompt (an unanswered
     * one would keep the socket waiting far longer than the wait). */
    wasock_tcp *s2 = start_connect(c, WASOCK_IPV4, port);
    ITEST_EXPECT(finish_connect(c, s2), WASOCK_OK);

    /* Another session of the tenant is asked. */
    wasock_client *other = itest_client_open(&pd, 2, NULL);
    wasock_tcp *s3 = start_connect(other, WASOCK_IPV4, port);
    ck_assert(!wasock_tcp_ready(s3));
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "deny");
    ITEST_EXPECT(finish_connect(other, s3), WASOCK_E_ACCESS_DENIED);

    wasock_tcp_drop(s);
    wasock_tcp_drop(s2);
    wasock_tcp_drop(s3);
    wasock_client_close(other);
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_remembered_for_the_tenant) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    uint64_t id = expect_prompt(&agent, NULL, 0);
    itest_agent_answer(&agent, id, "allow tenant");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);

    /* A new session of the tenant connects without a prompt, and explain
     * names the answer. */
    c = itest_client_open(&pd, 3, NULL);
    s = itest_socket(c, WASOCK_IPV4);
    wasock_addr target = itest_loopback(WASOCK_IPV4, port);
    ITEST_EXPECT(wasock_tcp_connect(s, &target), WASOCK_OK);
    char cmd[128], out[4096], want[64];
    snprintf(cmd, sizeof cmd, "explain default tcp.connect 127.0.0.1:%u", port);
    ck_assert(itest_ctl_command(&pd, cmd, out, sizeof out, NULL, 0));
    snprintf(want, sizeof want, "decided_by=answer:%llu", (unsigned long long)id);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    /* Another port of the same host is a different question. */
    snprintf(cmd, sizeof cmd, "explain default tcp.connect 127.0.0.1:%u", port == 1 ? 2 : port - 1);
    ck_assert(itest_ctl_command(&pd, cmd, out, sizeof out, NULL, 0));
    ck_assert_msg(strstr(out, "decided_by=rule:ask-connect") != NULL, "%s", out);

    wasock_tcp_drop(s);
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_remembered_refusal_for_a_duration) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "deny 1h");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_E_ACCESS_DENIED);
    /* Refused again at once, in any session, for the hour. */
    wasock_client *other = itest_client_open(&pd, 2, NULL);
    wasock_tcp *s2 = start_connect(other, WASOCK_IPV4, port);
    ck_assert(wasock_tcp_ready(s2));
    ITEST_EXPECT(wasock_tcp_finish_connect(s2, NULL, NULL), WASOCK_E_ACCESS_DENIED);
    wasock_tcp_drop(s);
    wasock_tcp_drop(s2);
    wasock_client_close(other);
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_scopes_not_offered_are_refused) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    uint64_t id = expect_prompt(&agent, NULL, 0);
    char cmd[64], line[512];
    /* persist: offered by the policy, refused by this daemon. */
    snprintf(cmd, sizeof cmd, "answer %llu allow persist", (unsigned long long)id);
    itest_ctl_send(&agent, cmd);
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strstr(line, "error: ") == line && strstr(line, "persist is not supported"), "%s",
                  line);
    /* A duration the rule does not offer. */
    snprintf(cmd, sizeof cmd, "answer %llu allow 2h", (unsigned long long)id);
    itest_ctl_send(&agent, cmd);
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strstr(line, "does not offer that scope") != NULL, "%s", line);
    /* Malformed answers are errors, not garbage: the agent stays. */
    itest_ctl_send(&agent, "answer 1 maybe");
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strncmp(line, "error: ", 7) == 0, "%s", line);
    itest_ctl_send(&agent, "answer 999999 allow");
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strstr(line, "no pending prompt 999999") != NULL, "%s", line);
    /* The prompt is still pending and takes a valid answer. */
    ck_assert(!wasock_tcp_ready(s));
    itest_agent_answer(&agent, id, "allow");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

/* ------------------------------------------------------------------ merging, withdrawal */

START_TEST(test_identical_prompts_are_merged) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    wasock_client *c2 = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *a = start_connect(c, WASOCK_IPV4, port);
    wasock_tcp *b = start_connect(c, WASOCK_IPV4, port);
    wasock_tcp *other = start_connect(c2, WASOCK_IPV4, port);
    char line[ITEST_CTL_LINE_MAX + 1];
    uint64_t id = expect_prompt(&agent, line, sizeof line);
    /* One answer ends all three requests: were any asked separately, its
     * socket would stay not ready. */
    itest_agent_answer(&agent, id, "allow");
    ITEST_EXPECT(finish_connect(c, a), WASOCK_OK);
    ITEST_EXPECT(finish_connect(c, b), WASOCK_OK);
    ITEST_EXPECT(finish_connect(c2, other), WASOCK_OK);
    char status[256];
    itest_daemon_status_line(&pd, "prompts", status, sizeof status);
    ck_assert_msg(strstr(status, " asked=1 ") != NULL, "%s", status);
    wasock_tcp_drop(a);
    wasock_tcp_drop(b);
    wasock_tcp_drop(other);
    wasock_client_close(c2);
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_prompt_withdrawn_when_its_socket_goes) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *a = start_connect(c, WASOCK_IPV4, port);
    wasock_tcp *b = start_connect(c, WASOCK_IPV4, port);
    uint64_t id = expect_prompt(&agent, NULL, 0);
    char want[64];
    snprintf(want, sizeof want, "withdraw %llu dropped", (unsigned long long)id);
    /* One of two waiting sockets goes: the prompt stays for the other. */
    wasock_tcp_drop(a);
    ck_assert(!wasock_tcp_ready(b));
    /* The last one goes: the agent is told. */
    wasock_tcp_drop(b);
    ck_assert(itest_agent_wait_line(&agent, want, NULL, 0, ITEST_WAIT_MS));

    /* A session that closes withdraws its prompts too. */
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    (void)s;
    id = expect_prompt(&agent, NULL, 0);
    wasock_client_close(c);
    snprintf(want, sizeof want, "withdraw %llu dropped", (unsigned long long)id);
    ck_assert(itest_agent_wait_line(&agent, want, NULL, 0, ITEST_WAIT_MS));
    char line[256];
    itest_ctl_send(&agent, "pending");
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_str_eq(line, "ok 0 pending");
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

/* ------------------------------------------------------------------ agents that go away */

START_TEST(test_agent_gone_mid_prompt) {
    itest_ctl first, second;
    itest_agent_open(&pd, "tester", &first);
    itest_agent_open(&pd, NULL, &second);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    uint64_t id = expect_prompt(&first, NULL, 0);
    ck_assert_uint_eq(expect_prompt(&second, NULL, 0), id);
    /* The first agent vanishes: the other can still answer. */
    itest_ctl_close(&first);
    ck_assert(!wasock_tcp_ready(s));
    itest_agent_answer(&second, id, "allow");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_OK);
    wasock_tcp_drop(s);

    /* The last agent vanishes: on_no_agent (deny). */
    s = start_connect(c, WASOCK_IPV4, port);
    (void)expect_prompt(&second, NULL, 0);
    itest_ctl_close(&second);
    ITEST_EXPECT(finish_connect(c, s), WASOCK_E_ACCESS_DENIED);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    close(lfd);
}
END_TEST

START_TEST(test_agent_sending_garbage_is_dropped) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    (void)expect_prompt(&agent, NULL, 0);
    static const char garbage[] = "answer 1 allow\x1b[2J\x01\xff\n";
    ck_assert_int_eq(itest_write_all(agent.fd, garbage, sizeof garbage - 1, ITEST_WAIT_MS), 0);
    ck_assert(itest_ctl_wait_closed(&agent, ITEST_WAIT_MS));
    /* Its prompt had nobody else: on_no_agent. */
    ITEST_EXPECT(finish_connect(c, s), WASOCK_E_ACCESS_DENIED);
    wasock_tcp_drop(s);
    /* The daemon goes on serving. */
    ck_assert(itest_daemon_alive(&pd));
    ck_assert(itest_ctl_command(&pd, "ping", NULL, 0, NULL, 0));
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_unknown_agent_name_refused) {
    itest_ctl agent;
    char line[512];
    itest_ctl_open(&pd, &agent);
    itest_ctl_send(&agent, "agent nobody-of-that-name");
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strncmp(line, "error: ", 7) == 0, "%s", line);
    /* A named agent answers only for its entry's tenants: night-desk's
     * uid is not ours. */
    itest_ctl_send(&agent, "agent night-desk");
    ck_assert(itest_ctl_read_line(&agent, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strncmp(line, "error: ", 7) == 0, "%s", line);
    itest_ctl_close(&agent);
}
END_TEST

/* ------------------------------------------------------------------ caps and limits */

START_TEST(test_pending_cap_per_tenant) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, NULL);
    uint16_t ports[3];
    int lfds[3];
    wasock_tcp *s[3];
    for (int i = 0; i < 3; i++) {
        lfds[i] = itest_plain_listen(WASOCK_IPV4, &ports[i]);
    }
    s[0] = start_connect(c, WASOCK_IPV4, ports[0]);
    s[1] = start_connect(c, WASOCK_IPV4, ports[1]);
    uint64_t id0 = expect_prompt(&agent, NULL, 0);
    uint64_t id1 = expect_prompt(&agent, NULL, 0);
    /* Two distinct prompts pending: the third request gets on_no_agent at
     * once. */
    s[2] = start_connect(c, WASOCK_IPV4, ports[2]);
    ck_assert(wasock_tcp_ready(s[2]));
    ITEST_EXPECT(wasock_tcp_finish_connect(s[2], NULL, NULL), WASOCK_E_ACCESS_DENIED);
    itest_agent_answer(&agent, id0, "allow");
    itest_agent_answer(&agent, id1, "allow");
    ITEST_EXPECT(finish_connect(c, s[0]), WASOCK_OK);
    ITEST_EXPECT(finish_connect(c, s[1]), WASOCK_OK);
    for (int i = 0; i < 3; i++) {
        wasock_tcp_drop(s[i]);
        close(lfds[i]);
    }
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_prompts_count_as_pending_operations) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, "limited");
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    uint64_t id = expect_prompt(&agent, NULL, 0);
    /* pending_ops: 1 is taken by the prompt. */
    wasock_tcp *s2 = itest_socket(c, WASOCK_IPV4);
    wasock_addr target = itest_loopback(WASOCK_IPV4, port);
    ITEST_EXPECT(wasock_tcp_start_connect(s2, &target), WASOCK_E_OUT_OF_MEMORY);
    /* A bind that would prompt is refused by the limit when it ends. */
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s2, &lo), WASOCK_OK);
    ck_assert(wasock_tcp_ready(s2));
    ITEST_EXPECT(wasock_tcp_finish_bind(s2), WASOCK_E_OUT_OF_MEMORY);
    itest_agent_answer(&agent, id, "allow");
    ITEST_EXPECT(finish_connect(c, s), WASOCK_OK);
    /* The prompt is over: the limit has room again. */
    wasock_tcp *s3 = start_connect(c, WASOCK_IPV4, port);
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "allow");
    ITEST_EXPECT(finish_connect(c, s3), WASOCK_OK);
    wasock_tcp_drop(s);
    wasock_tcp_drop(s2);
    wasock_tcp_drop(s3);
    wasock_client_close(c);
    close(lfd);
    itest_ctl_close(&agent);
}
END_TEST

START_TEST(test_delayed_refusal) {
    wasock_client *c = itest_client_open(&pd, 2, "tarpit");
    uint16_t port;
    int lfd = itest_plain_listen(WASOCK_IPV4, &port);
    wasock_tcp *s = start_connect(c, WASOCK_IPV4, port);
    /* The refusal waits out deny.delay: in progress meanwhile. */
    ck_assert(!wasock_tcp_ready(s));
    ITEST_EXPECT(finish_connect(c, s), WASOCK_E_ACCESS_DENIED);
    wasock_tcp_drop(s);
    /* A delayed refusal of a dropped socket simply goes away. */
    s = start_connect(c, WASOCK_IPV4, port);
    wasock_tcp_drop(s);
    ck_assert_int_eq(itest_plain_accept(lfd, 0), -ETIMEDOUT);
    wasock_client_close(c);
    close(lfd);
}
END_TEST

/* ------------------------------------------------------------------ bind, listen, accept */

START_TEST(test_bind_and_listen_prompts) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, "server");
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_OK);
    ck_assert(!wasock_tcp_ready(s));
    char line[ITEST_CTL_LINE_MAX + 1], value[64];
    uint64_t id = expect_prompt(&agent, line, sizeof line);
    ck_assert(itest_kv(line, "op", value, sizeof value));
    ck_assert_str_eq(value, "tcp.bind");
    ck_assert(itest_kv(line, "local", value, sizeof value));
    ck_assert_str_eq(value, "127.0.0.1:0");
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_E_WOULD_BLOCK);
    itest_agent_answer(&agent, id, "allow");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_OK);

    ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_OK);
    ck_assert(!wasock_tcp_ready(s));
    id = expect_prompt(&agent, line, sizeof line);
    ck_assert(itest_kv(line, "op", value, sizeof value));
    ck_assert_str_eq(value, "tcp.listen");
    ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_WOULD_BLOCK);
    itest_agent_answer(&agent, id, "deny");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_E_ACCESS_DENIED);
    wasock_tcp_drop(s);
    wasock_client_close(c);

    /* 0.3: the calls wait for the answers. */
    c = itest_client_open(&pd, 3, "server");
    s = itest_socket(c, WASOCK_IPV4);
    answerer a;
    answerer_start(&a, &agent, "allow");
    ITEST_EXPECT(wasock_tcp_bind(s, &lo), WASOCK_OK);
    answerer_join(&a);
    answerer_start(&a, &agent, "allow");
    ITEST_EXPECT(wasock_tcp_listen(s), WASOCK_OK);
    answerer_join(&a);
    wasock_tcp_drop(s);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

/* An explicit UDP bind waits for its prompt like a TCP one: 0.2 finish-bind
 * says would-block and the socket is not ready until the answer; a refusal
 * leaves it unbound; 0.3 bind waits; dropping the socket withdraws the
 * prompt. */
START_TEST(test_udp_bind_prompt) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, "server");
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0), local;
    char line[ITEST_CTL_LINE_MAX + 1], value[64];
    wasock_udp *u = NULL;

    ITEST_EXPECT(wasock_udp_create(c, WASOCK_IPV4, &u), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_start_bind(u, &lo), WASOCK_OK);
    ck_assert(!wasock_udp_ready(u));
    uint64_t id = expect_prompt(&agent, line, sizeof line);
    ck_assert(itest_kv(line, "op", value, sizeof value));
    ck_assert_str_eq(value, "udp.bind");
    ITEST_EXPECT(wasock_udp_finish_bind(u), WASOCK_E_WOULD_BLOCK);
    itest_agent_answer(&agent, id, "deny");
    for (int64_t end = itest_now_ms() + ITEST_WAIT_MS; !wasock_udp_ready(u);) {
        ck_assert_msg(itest_now_ms() < end, "the socket did not become ready");
        ITEST_EXPECT(wasock_client_wait(c, 100), WASOCK_OK);
    }
    ITEST_EXPECT(wasock_udp_finish_bind(u), WASOCK_E_ACCESS_DENIED);
    /* Unbound again: a new bind may start, and this one is allowed. */
    ITEST_EXPECT(wasock_udp_start_bind(u, &lo), WASOCK_OK);
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "allow");
    for (int64_t end = itest_now_ms() + ITEST_WAIT_MS; !wasock_udp_ready(u);) {
        ck_assert_msg(itest_now_ms() < end, "the socket did not become ready");
        ITEST_EXPECT(wasock_client_wait(c, 100), WASOCK_OK);
    }
    ITEST_EXPECT(wasock_udp_finish_bind(u), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_local_address(u, &local), WASOCK_OK);
    ck_assert_uint_ne(local.port, 0);
    wasock_udp_drop(u);

    /* Dropped while its prompt is pending: the agent is told. */
    ITEST_EXPECT(wasock_udp_create(c, WASOCK_IPV4, &u), WASOCK_OK);
    ITEST_EXPECT(wasock_udp_start_bind(u, &lo), WASOCK_OK);
    id = expect_prompt(&agent, NULL, 0);
    wasock_udp_drop(u);
    char want[64];
    snprintf(want, sizeof want, "withdraw %llu dropped", (unsigned long long)id);
    ck_assert(itest_agent_wait_line(&agent, want, NULL, 0, ITEST_WAIT_MS));
    wasock_client_close(c);

    /* 0.3: bind waits for the answer. */
    c = itest_client_open(&pd, 3, "server");
    ITEST_EXPECT(wasock_udp_create(c, WASOCK_IPV4, &u), WASOCK_OK);
    answerer a;
    answerer_start(&a, &agent, "allow");
    ITEST_EXPECT(wasock_udp_bind(u, &lo), WASOCK_OK);
    answerer_join(&a);
    wasock_udp_drop(u);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

/* Pumps c until r is ready (bounded). */
static void wait_lookup_ready(wasock_client *c, wasock_resolve *r) {
    for (int64_t end = itest_now_ms() + ITEST_WAIT_MS; !wasock_resolve_ready(r);) {
        ck_assert_msg(itest_now_ms() < end, "the lookup did not become ready");
        ITEST_EXPECT(wasock_client_wait(c, 100), WASOCK_OK);
    }
}

/* A lookup waits for its prompt: not ready and would-block until the
 * answer; allowed, it resolves; refused, the stream reports the refusal;
 * dropped, the prompt is withdrawn; the 0.3 list call waits. */
START_TEST(test_lookup_prompt) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, "server");
    char line[ITEST_CTL_LINE_MAX + 1], value[64], want[64];
    wasock_resolve *r = NULL;
    wasock_ip ip, ips[8];
    bool done = false;
    size_t n = 0;

    ITEST_EXPECT(wasock_resolve_addresses(c, "localhost", &r), WASOCK_OK);
    uint64_t id = expect_prompt(&agent, line, sizeof line);
    ck_assert(itest_kv(line, "op", value, sizeof value));
    ck_assert_str_eq(value, "lookup");
    ck_assert(!wasock_resolve_ready(r));
    ITEST_EXPECT(wasock_resolve_next_address(r, &ip, &done), WASOCK_E_WOULD_BLOCK);
    itest_agent_answer(&agent, id, "allow");
    wait_lookup_ready(c, r);
    ITEST_EXPECT(wasock_resolve_next_address(r, &ip, &done), WASOCK_OK);
    ck_assert(!done);
    wasock_resolve_drop(r);

    ITEST_EXPECT(wasock_resolve_addresses(c, "localhost", &r), WASOCK_OK);
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "deny");
    wait_lookup_ready(c, r);
    ITEST_EXPECT(wasock_resolve_next_address(r, &ip, &done), WASOCK_E_ACCESS_DENIED);
    wasock_resolve_drop(r);

    ITEST_EXPECT(wasock_resolve_addresses(c, "localhost", &r), WASOCK_OK);
    id = expect_prompt(&agent, NULL, 0);
    wasock_resolve_drop(r);
    snprintf(want, sizeof want, "withdraw %llu dropped", (unsigned long long)id);
    ck_assert(itest_agent_wait_line(&agent, want, NULL, 0, ITEST_WAIT_MS));
    wasock_client_close(c);

    c = itest_client_open(&pd, 3, "server");
    answerer a;
    answerer_start(&a, &agent, "allow");
    ITEST_EXPECT(wasock_resolve_addresses_list(c, "localhost", ips, 8, &n), WASOCK_OK);
    answerer_join(&a);
    ck_assert_uint_gt(n, 0);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

/* A listener of the "server" tenant whose bind and listen were allowed. */
static wasock_tcp *prompted_listener(wasock_client *c, itest_ctl *agent, uint16_t *port) {
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    ITEST_EXPECT(wasock_tcp_start_bind(s, &lo), WASOCK_OK);
    itest_agent_answer(agent, expect_prompt(agent, NULL, 0), "allow");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_bind(s), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_start_listen(s), WASOCK_OK);
    itest_agent_answer(agent, expect_prompt(agent, NULL, 0), "allow");
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_listen(s), WASOCK_OK);
    wasock_addr local;
    ITEST_EXPECT(wasock_tcp_local_address(s, &local), WASOCK_OK);
    *port = local.port;
    return s;
}

START_TEST(test_accept_prompt_holds_the_connection) {
    itest_ctl agent;
    itest_agent_open(&pd, "tester", &agent);
    wasock_client *c = itest_client_open(&pd, 2, "server");
    uint16_t port;
    wasock_tcp *l = prompted_listener(c, &agent, &port);

    int refused = itest_plain_connect(WASOCK_IPV4, port);
    ck_assert(itest_wait_ready(c, l, ITEST_WAIT_MS));
    wasock_tcp *conn = NULL;
    int in = -1, out = -1;
    /* The connection needs a prompt: held by the daemon, accept would block. */
    ITEST_EXPECT(wasock_tcp_accept(l, &conn, &in, &out), WASOCK_E_WOULD_BLOCK);
    ck_assert(!wasock_tcp_ready(l));
    char line[ITEST_CTL_LINE_MAX + 1], value[64];
    uint64_t id = expect_prompt(&agent, line, sizeof line);
    ck_assert(itest_kv(line, "op", value, sizeof value));
    ck_assert_str_eq(value, "tcp.accept");
    /* Refused: the peer is reset, the listener goes on. */
    itest_agent_answer(&agent, id, "deny");
    char byte;
    ck_assert_int_le(itest_read_exact(refused, &byte, 1, ITEST_WAIT_MS), 0);
    close(refused);

    int allowed = itest_plain_connect(WASOCK_IPV4, port);
    ck_assert(itest_wait_ready(c, l, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_accept(l, &conn, &in, &out), WASOCK_E_WOULD_BLOCK);
    itest_agent_answer(&agent, expect_prompt(&agent, NULL, 0), "allow");
    /* Allowed: the listener is ready and accept returns the held one. */
    ck_assert(itest_wait_ready(c, l, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_accept(l, &conn, &in, &out), WASOCK_OK);
    itest_send_expect(allowed, in, "held, then accepted");
    wasock_tcp_drop(conn);
    close(allowed);
    wasock_tcp_drop(l);
    wasock_client_close(c);
    itest_ctl_close(&agent);
}
END_TEST

static Suite *prompts_suite(void) {
    Suite *s = suite_create("prompts");
    struct {
        const char *name;
        const TTest *test;
        int loops;
    } cases[] = {
        {"allow", test_prompt_allow_in_every_shape, ITEST_VARIANTS},
        {"in-progress", test_prompt_keeps_02_connect_in_progress, 1},
        {"deny", test_prompt_deny, 2},
        {"timeout", test_prompt_timeout_applies_on_timeout, 1},
        {"timeout-allow", test_prompt_timeout_may_allow, 1},
        {"no-agent", test_no_agent_applies_on_no_agent, 1},
        {"remember-session", test_remembered_for_the_session, 1},
        {"remember-tenant", test_remembered_for_the_tenant, 1},
        {"remember-duration", test_remembered_refusal_for_a_duration, 1},
        {"scopes", test_scopes_not_offered_are_refused, 1},
        {"merged", test_identical_prompts_are_merged, 1},
        {"withdrawn", test_prompt_withdrawn_when_its_socket_goes, 1},
        {"agent-gone", test_agent_gone_mid_prompt, 1},
        {"agent-garbage", test_agent_sending_garbage_is_dropped, 1},
        {"agent-names", test_unknown_agent_name_refused, 1},
        {"cap", test_pending_cap_per_tenant, 1},
        {"pending-limit", test_prompts_count_as_pending_operations, 1},
        {"delay", test_delayed_refusal, 1},
        {"bind-listen", test_bind_and_listen_prompts, 1},
        {"udp-bind", test_udp_bind_prompt, 1},
        {"lookup", test_lookup_prompt, 1},
        {"accept", test_accept_prompt_holds_the_connection, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        itest_tcase_defaults(tc);
        tcase_add_checked_fixture(tc, prompts_setup, prompts_teardown);
        tcase_add_loop_test(tc, cases[i].test, 0, cases[i].loops);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return itest_run_suite(prompts_suite());
}
