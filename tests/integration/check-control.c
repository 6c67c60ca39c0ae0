/* check-control.c — integration tests of the control socket and wasockctl
 * against the real wasockd: status, sessions, explain (daemon and offline),
 * policy check, the terminal prompt agent fed through a pipe, the socket's
 * mode, peers that send garbage or too much, the connection cap, peers that
 * are neither operators nor agents, tenant admission and tenant limits.
 *
 * Trusts: the harness. Loopback only; the prompted port has nothing
 * listening, so an allowed connect ends in connection-refused.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

/* Room for the policy text with the uid filled in. */
#define POLICY_TEXT_MAX 4096

/* Room for a tool's output. */
#define TOOL_OUTPUT_MAX 16384

/* The loopback port whose connects are prompted (nothing listens). */
#define PROMPT_PORT 23500

/* The daemon's cap of control connections (CONTROL_MAX_CONNECTIONS). */
#define CONTROL_CONNECTIONS_CAP 64

/* The uid of the "nobody" user, for the tests that need a stranger. */
#define STRANGER_UID 65534

static const char control_policy_fmt[] =
    "version: 1\n"
    "defaults: { action: deny, prompt: { timeout: 20s, remember: [ once, session ] } }\n"
    "prompt_agents:\n"
    "  - { name: desk, uids: [ %u ], tenants: [ \"*\" ] }\n"
    "tenants:\n"
    "  default:\n"
    "    match: { uids: [ %u ] }\n"
    "    limits: { listeners: 1 }\n"
    "    rules:\n"
    "      - { id: ask-port, ops: [ tcp.connect ], remote: [ \"@loopback\" ], ports: [ %u ],\n"
    "          action: prompt }\n"
    "      - { id: loopback, ops: [ any ], remote: [ \"@loopback\" ], local: [ \"@loopback\" ],\n"
    "          action: allow }\n"
    "  elsewhere:\n"
    "    match: { uids: [ %u ] }\n";

static itest_daemon cd;

static void control_setup(void) {
    char text[POLICY_TEXT_MAX];
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, sizeof text, control_policy_fmt, uid, uid, (unsigned)PROMPT_PORT,
                     (unsigned)STRANGER_UID);
    ck_assert(n > 0 && n < (int)sizeof text);
    itest_daemon_start(&cd, text);
}

static void control_teardown(void) {
    itest_daemon_stop(&cd);
}

/* Runs wasockctl -C <control socket> with the given arguments. */
static int run_ctl(const char *const args[], const char *input, char *out, size_t len) {
    const char *argv[16];
    size_t n = 0;
    argv[n++] = itest_wasockctl();
    argv[n++] = "-C";
    argv[n++] = cd.control_path;
    for (size_t i = 0; args[i] != NULL; i++) {
        ck_assert(n < sizeof argv / sizeof argv[0] - 1);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return itest_run_tool(argv, input, out, len, ITEST_WAIT_MS);
}

/* ------------------------------------------------------------------ commands */

START_TEST(test_status_and_sessions) {
    char out[TOOL_OUTPUT_MAX], want[ITEST_PATH_MAX + 32];
    wasock_client *c = itest_client_open(&cd, 3, NULL);
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);

    const char *sessions[] = {"sessions", NULL};
    ck_assert_int_eq(run_ctl(sessions, NULL, out, sizeof out), 0);
    snprintf(want, sizeof want, "pid=%ld uid=%u", (long)getpid(), (unsigned)getuid());
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_msg(strstr(out, "tenant=default wasi=0.3 resources=1") != NULL, "%s", out);

    const char *status[] = {"status", NULL};
    ck_assert_int_eq(run_ctl(status, NULL, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "daemon version=") != NULL, "%s", out);
    snprintf(want, sizeof want, "policy file=%s", cd.policy_path);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_msg(strstr(out, "tenant name=default sessions=1 sockets=1") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "prompts pending=0 agents=0") != NULL, "%s", out);

    /* Unknown commands are errors, and the connection stays usable. */
    itest_ctl ctl;
    char line[512];
    itest_ctl_open(&cd, &ctl);
    itest_ctl_send(&ctl, "frobnicate");
    ck_assert(itest_ctl_read_line(&ctl, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strncmp(line, "error: unknown command", 22) == 0, "%s", line);
    itest_ctl_send(&ctl, "ping");
    ck_assert(itest_ctl_read_line(&ctl, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_str_eq(line, "ok");
    itest_ctl_close(&ctl);

    wasock_tcp_drop(s);
    wasock_client_close(c);
}
END_TEST

START_TEST(test_explain_online_and_offline) {
    char out[TOOL_OUTPUT_MAX], want[ITEST_PATH_MAX + 64];
    const char *online[] = {"policy",      "explain",      "--tenant", "default",
                            "tcp.connect", "127.0.0.1:80", NULL};
    ck_assert_int_eq(run_ctl(online, NULL, out, sizeof out), 0);
    /* Each step up to the decider, with why the earlier ones did not
     * match. */
    ck_assert_msg(strstr(out, "rule:ask-port no-match: remote port 80 is not in [23500]") != NULL,
                  "%s", out);
    ck_assert_msg(strstr(out, "rule:loopback decided (allow): matched") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "decision: allow by rule:loopback") != NULL, "%s", out);

    const char *refused[] = {"policy",      "explain",       "--tenant", "default",
                             "tcp.connect", "192.0.2.7:443", NULL};
    ck_assert_int_eq(run_ctl(refused, NULL, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "decision: deny by default:global, error access-denied") != NULL,
                  "%s", out);

    const char *offline[] = {"policy",       "explain",    "--file",
                             cd.policy_path, "--tenant",   "default",
                             "tcp.listen",   "[::1]:8080", NULL};
    ck_assert_int_eq(run_ctl(offline, NULL, out, sizeof out), 0);
    snprintf(want, sizeof want, "[%s:", cd.policy_path);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_msg(strstr(out, "decision: allow by rule:loopback") != NULL, "%s", out);

    const char *prompted[] = {"policy",      "explain",         "--tenant", "default",
                              "tcp.connect", "127.0.0.1:23500", NULL};
    ck_assert_int_eq(run_ctl(prompted, NULL, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "decision: prompt by rule:ask-port (timeout 20000 ms") != NULL, "%s",
                  out);

    const char *bad_op[] = {"policy",       "explain",     "--tenant", "default",
                            "tcp.teleport", "127.0.0.1:1", NULL};
    ck_assert_int_eq(run_ctl(bad_op, NULL, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "unknown operation") != NULL, "%s", out);
}
END_TEST

START_TEST(test_explain_of_a_long_policy) {
    /* Rules for 600 other ports before the one that decides: the daemon
     * shows 500 of them and counts the rest. */
    enum { FILLER_RULES = 600 };
    size_t cap = POLICY_TEXT_MAX + FILLER_RULES * 128, used = 0;
    char *text = malloc(cap);
    ck_assert(text != NULL);
    unsigned uid = (unsigned)getuid();
    int n = snprintf(text, cap,
                     "version: 1\ntenants:\n  default:\n    match: { uids: [ %u ] }\n"
                     "    rules:\n",
                     uid);
    ck_assert(n > 0);
    used = (size_t)n;
    for (unsigned i = 0; i < FILLER_RULES; i++) {
        n = snprintf(
            text + used, cap - used,
            "      - { id: filler-%u, ops: [ tcp.connect ], ports: [ %u ], action: deny }\n", i,
            30000 + i);
        ck_assert(n > 0 && (size_t)n < cap - used);
        used += (size_t)n;
    }
    n = snprintf(text + used, cap - used,
                 "      - { id: last, ops: [ tcp.connect ], remote: [ \"@loopback\" ], "
                 "action: allow }\n");
    ck_assert(n > 0 && (size_t)n < cap - used);
    itest_daemon_write_policy(&cd, text);
    free(text);
    ck_assert(itest_ctl_command(&cd, "reload", NULL, 0, NULL, 0));

    static char out[256 * 1024];
    const char *args[] = {"policy",      "explain",      "--tenant", "default",
                          "tcp.connect", "127.0.0.1:80", NULL};
    ck_assert_int_eq(run_ctl(args, NULL, out, sizeof out), 0);
    /* The "answers" step and 499 fillers fill the 500; the deciding rule is
     * shown after the count of the rest. Messages show the output's end
     * only: all of it would not fit a test failure message. */
    const char *tail = strlen(out) > 1024 ? out + strlen(out) - 1024 : out;
    ck_assert_msg(strstr(out, "... and 101 more rules that did not match") != NULL, "%s", tail);
    ck_assert_msg(strstr(out, "decision: allow by rule:last") != NULL, "%s", tail);
    ck_assert(strstr(out, "rule:filler-498 no-match") != NULL);
    ck_assert(strstr(out, "rule:filler-499 ") == NULL);
}
END_TEST

START_TEST(test_policy_check) {
    char out[TOOL_OUTPUT_MAX], bad[ITEST_PATH_MAX + 16];
    const char *good[] = {"policy", "check", cd.policy_path, NULL};
    ck_assert_int_eq(run_ctl(good, NULL, out, sizeof out), 0);
    ck_assert_msg(strstr(out, ": OK") != NULL, "%s", out);

    snprintf(bad, sizeof bad, "%s/bad.yaml", cd.dir);
    FILE *f = fopen(bad, "we");
    ck_assert(f != NULL);
    fputs("version: 1\ntenants:\n  x:\n    match: { uids: [ 1 ] }\n    rules: 7\n", f);
    fclose(f);
    const char *broken[] = {"policy", "check", bad, NULL};
    ck_assert_int_eq(run_ctl(broken, NULL, out, sizeof out), 1);
    char want[ITEST_PATH_MAX + 32];
    snprintf(want, sizeof want, "%s:5:12: ", bad);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
}
END_TEST

START_TEST(test_help_documents_every_command) {
    char out[TOOL_OUTPUT_MAX];
    const char *help[] = {"-h", NULL};
    ck_assert_int_eq(run_ctl(help, NULL, out, sizeof out), 0);
    static const char *const commands[] = {"status",         "sessions",   "reload", "policy check",
                                           "policy explain", "prompts",    "--file", "--tenant",
                                           "--host",         "Exit status"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        ck_assert_msg(strstr(out, commands[i]) != NULL, "-h lacks %s", commands[i]);
    }
    const char *unknown[] = {"dance", NULL};
    ck_assert_int_eq(run_ctl(unknown, NULL, out, sizeof out), 2);
}
END_TEST

START_TEST(test_terminal_agent_through_a_pipe) {
    const char *argv[] = {itest_wasockctl(), "-C", cd.control_path, "prompts", NULL};
    int in_fd, out_fd;
    pid_t pid = itest_spawn_tool(argv, &in_fd, &out_fd);
    char out[TOOL_OUTPUT_MAX] = "";
    ck_assert_msg(itest_read_until(out_fd, "waiting for prompts", out, sizeof out, ITEST_WAIT_MS),
                  "%s", out);

    wasock_client *c = itest_client_open(&cd, 2, NULL);
    wasock_tcp *s = itest_socket(c, WASOCK_IPV4);
    wasock_addr target = itest_loopback(WASOCK_IPV4, PROMPT_PORT);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    ck_assert_msg(itest_read_until(out_fd, "answer: a ", out, sizeof out, ITEST_WAIT_MS), "%s",
                  out);
    ck_assert_msg(strstr(out, "tcp.connect to 127.0.0.1:23500") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "asked by rule:ask-port") != NULL, "%s", out);
    /* One key and Enter answers the oldest prompt: allow, once. */
    ck_assert_int_eq(itest_write_all(in_fd, "a\n", 2, ITEST_WAIT_MS), 0);
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_CONNECTION_REFUSED);
    ck_assert_msg(itest_read_until(out_fd, "allowed, once", out, sizeof out, ITEST_WAIT_MS), "%s",
                  out);
    wasock_tcp_drop(s);

    /* An answer by number with a scope. */
    s = itest_socket(c, WASOCK_IPV4);
    ITEST_EXPECT(wasock_tcp_start_connect(s, &target), WASOCK_OK);
    ck_assert(itest_read_until(out_fd, "[2]", out, sizeof out, ITEST_WAIT_MS));
    ck_assert_int_eq(itest_write_all(in_fd, "d 2 session\n", 12, ITEST_WAIT_MS), 0);
    ck_assert(itest_wait_ready(c, s, ITEST_WAIT_MS));
    ITEST_EXPECT(wasock_tcp_finish_connect(s, NULL, NULL), WASOCK_E_ACCESS_DENIED);
    ck_assert(itest_read_until(out_fd, "denied, session", out, sizeof out, ITEST_WAIT_MS));
    wasock_tcp_drop(s);

    /* End of input ends the agent. */
    close(in_fd);
    ck_assert_int_eq(itest_tool_wait(pid, ITEST_WAIT_MS), 0);
    close(out_fd);
    wasock_client_close(c);
}
END_TEST

/* ------------------------------------------------------------------ the socket */

START_TEST(test_socket_mode) {
    struct stat st;
    ck_assert_int_eq(stat(cd.control_path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_int_eq(st.st_mode & 07777, 0660);
}
END_TEST

START_TEST(test_garbage_drops_only_that_peer) {
    itest_ctl bystander, bad;
    char line[512];
    itest_agent_open(&cd, "desk", &bystander);

    itest_ctl_open(&cd, &bad);
    static const char binary[] = "\x00\x01\x02\xff\xfe\n";
    ck_assert_int_eq(itest_write_all(bad.fd, binary, sizeof binary - 1, ITEST_WAIT_MS), 0);
    ck_assert(itest_ctl_wait_closed(&bad, ITEST_WAIT_MS));
    itest_ctl_close(&bad);

    /* A line longer than the protocol allows. */
    itest_ctl_open(&cd, &bad);
    static char long_line[2 * ITEST_CTL_LINE_MAX];
    memset(long_line, 'x', sizeof long_line);
    int w = itest_write_all(bad.fd, long_line, sizeof long_line, ITEST_WAIT_MS);
    ck_assert(w == 0 || w == -EPIPE || w == -ECONNRESET);
    ck_assert(itest_ctl_wait_closed(&bad, ITEST_WAIT_MS));
    itest_ctl_close(&bad);

    /* The others carry on. */
    itest_ctl_send(&bystander, "ping");
    ck_assert(itest_ctl_read_line(&bystander, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_str_eq(line, "ok");
    ck_assert(itest_ctl_command(&cd, "status", NULL, 0, NULL, 0));
    itest_ctl_close(&bystander);
}
END_TEST

START_TEST(test_connection_cap) {
    static itest_ctl conns[CONTROL_CONNECTIONS_CAP];
    char line[512];
    for (int i = 0; i < CONTROL_CONNECTIONS_CAP; i++) {
        itest_ctl_open(&cd, &conns[i]);
    }
    /* Make sure the daemon has taken all of them in. */
    itest_ctl_send(&conns[CONTROL_CONNECTIONS_CAP - 1], "ping");
    ck_assert(
        itest_ctl_read_line(&conns[CONTROL_CONNECTIONS_CAP - 1], line, sizeof line, ITEST_WAIT_MS));
    itest_ctl extra;
    itest_ctl_open(&cd, &extra);
    ck_assert(itest_ctl_read_line(&extra, line, sizeof line, ITEST_WAIT_MS));
    ck_assert_msg(strstr(line, "control connections are open already") != NULL, "%s", line);
    itest_ctl_close(&extra);
    for (int i = 0; i < CONTROL_CONNECTIONS_CAP; i++) {
        itest_ctl_close(&conns[i]);
    }
    /* Once they are gone there is room again (bounded retries: the daemon
     * notices the closes asynchronously). */
    int64_t deadline = itest_now_ms() + ITEST_WAIT_MS;
    char final[256] = "";
    while (!itest_ctl_command(&cd, "ping", NULL, 0, final, sizeof final)) {
        ck_assert_msg(itest_now_ms() < deadline, "no room again: %s", final);
    }
}
END_TEST

START_TEST(test_strangers_are_refused) {
    if (getuid() != 0) {
        fprintf(stderr, "note: not root, cannot act as a stranger; skipping\n");
        return;
    }
    /* Open the file (and the way to it) up so the daemon's own check is
     * what refuses. */
    char parent[ITEST_PATH_MAX];
    snprintf(parent, sizeof parent, "%s", cd.dir);
    char *slash = strrchr(parent, '/');
    ck_assert(slash != NULL);
    *slash = '\0';
    ck_assert_int_eq(chmod(parent, 0711), 0);
    ck_assert_int_eq(chmod(cd.dir, 0711), 0);
    ck_assert_int_eq(chmod(cd.control_path, 0666), 0);
    size_t path_len = strlen(cd.control_path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert(path_len < sizeof sun.sun_path);
    memcpy(sun.sun_path, cd.control_path, path_len + 1);
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        char line[256] = "";
        close(pipefd[0]);
        if (setgid(STRANGER_UID) != 0 || setuid(STRANGER_UID) != 0) {
            dprintf(pipefd[1], "setuid: %s\n", strerror(errno));
            _exit(2);
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
            dprintf(pipefd[1], "connect: %s\n", strerror(errno));
            _exit(3);
        }
        /* The daemon may refuse and close before this command arrives:
         * MSG_NOSIGNAL so that race costs an EPIPE, not the process; the
         * refusal line is still there to read. */
        (void)!send(fd, "status\n", 7, MSG_NOSIGNAL);
        ssize_t n = itest_read_exact(fd, line, sizeof line - 1, ITEST_WAIT_MS);
        if (n > 0) {
            (void)!write(pipefd[1], line, (size_t)n);
        }
        _exit(0);
    }
    close(pipefd[1]);
    char got[256] = "";
    bool got_line = itest_read_until(pipefd[0], "\n", got, sizeof got, ITEST_WAIT_MS);
    close(pipefd[0]);
    int status = itest_tool_wait(pid, ITEST_WAIT_MS);
    ck_assert_msg(got_line && status == 0, "the stranger's side: %d, %s", status, got);
    ck_assert_msg(strstr(got, "error: uid 65534 may not use the control socket") != NULL, "%s",
                  got);
}
END_TEST

/* ------------------------------------------------------------------ tenants */

START_TEST(test_admission_refused_with_a_reason) {
    char why[256];
    wasock_client *c = NULL;
    ITEST_EXPECT(itest_client_try_open(&cd, 2, "elsewhere", why, sizeof why, &c),
                 WASOCK_E_ACCESS_DENIED);
    ck_assert_msg(strstr(why, "may not act for tenant 'elsewhere'") != NULL, "%s", why);
    ITEST_EXPECT(itest_client_try_open(&cd, 3, "nowhere", why, sizeof why, &c),
                 WASOCK_E_ACCESS_DENIED);
    ck_assert_msg(strstr(why, "unknown tenant 'nowhere'") != NULL, "%s", why);
}
END_TEST

START_TEST(test_listener_limit) {
    wasock_client *c = itest_client_open(&cd, 2, NULL);
    uint16_t port;
    wasock_tcp *first = itest_listener(c, WASOCK_IPV4, &port);
    wasock_tcp *second = itest_socket(c, WASOCK_IPV4);
    wasock_addr lo = itest_loopback(WASOCK_IPV4, 0);
    ITEST_EXPECT(itest_bind(c, second, &lo), WASOCK_OK);
    ITEST_EXPECT(wasock_tcp_start_listen(second), WASOCK_E_NEW_SOCKET_LIMIT);
    /* The limit counts open listeners: dropping one makes room. */
    wasock_tcp_drop(first);
    ITEST_EXPECT(itest_listen(c, second), WASOCK_OK);
    wasock_tcp_drop(second);
    wasock_client_close(c);
}
END_TEST

static Suite *control_suite(void) {
    Suite *s = suite_create("control");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"status", test_status_and_sessions},
        {"explain", test_explain_online_and_offline},
        {"explain-long", test_explain_of_a_long_policy},
        {"check", test_policy_check},
        {"help", test_help_documents_every_command},
        {"prompts", test_terminal_agent_through_a_pipe},
        {"mode", test_socket_mode},
        {"garbage", test_garbage_drops_only_that_peer},
        {"cap", test_connection_cap},
        {"strangers", test_strangers_are_refused},
        {"admission", test_admission_refused_with_a_reason},
        {"listeners", test_listener_limit},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        itest_tcase_defaults(tc);
        tcase_add_checked_fixture(tc, control_setup, control_teardown);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    return itest_run_suite(control_suite());
}
