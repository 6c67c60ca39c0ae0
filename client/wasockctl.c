/* wasockctl.c — the operator's tool for wasockd: status, sessions, reload,
 * policy check and explain, and `prompts`, a terminal prompt agent.
 *
 * It speaks the control socket's line protocol (proto/AGENT.md) and uses
 * the policy library for the offline commands (policy check, policy
 * explain --file). It trusts its command line and terminal (the operator's)
 * but not what the daemon's socket sends: lines are bounded, and anything
 * that is not printable ASCII is shown as '?', so nothing a guest managed
 * to get into a prompt can drive the terminal.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "policy.h"
#include "proto.h"
#include "wasock-config.h"

/* Exit statuses, documented in the help text. */
#define CTL_EXIT_OK          0
#define CTL_EXIT_FAILED      1 /* the daemon reported an error, or a policy file is invalid */
#define CTL_EXIT_USAGE       2 /* bad command line */
#define CTL_EXIT_UNREACHABLE 3 /* the control socket cannot be reached, or went away */

/* Longest line of the protocol, without its newline (the daemon's
 * CTL_LINE_MAX). */
#define WASOCKCTL_LINE_MAX 4096

/* How long a command waits for its reply. Reloading a file of 10,000
 * rules takes well under a second; a daemon that takes longer is stuck. */
#define WASOCKCTL_REPLY_TIMEOUT_MS 30000

/* Prompts the terminal agent keeps track of: the daemon's own cap of
 * pending prompts. */
#define WASOCKCTL_MAX_PROMPTS 1024

/* The control socket's file name next to the client socket. */
#define WASOCKCTL_CONTROL_NAME "control.sock"

/* Words in one answer typed at the terminal ("a 12 session"). */
#define WASOCKCTL_INPUT_WORDS 4

static const char *program = "wasockctl";

static void usage(FILE *out) {
    fprintf(out,
            "usage: wasockctl [-C SOCKET] status | sessions | reload\n"
            "       wasockctl policy check FILE...\n"
            "       wasockctl [-C SOCKET] policy explain [--file FILE] --tenant TENANT OP "
            "ADDRESS[:PORT]\n"
            "                 [--host NAME] [--local ADDRESS[:PORT]] [--implicit]\n"
            "       wasockctl [-C SOCKET] prompts [--name AGENT]\n"
            "\n"
            "Commands (all but `policy check` and `policy explain --file` ask the running\n"
            "wasockd over its control socket):\n"
            "  status          the daemon, its policy, tenants in use, prompts and audit log\n"
            "  sessions        one line per client session (pid, uid, tenant, WASI shape)\n"
            "  reload          load the policy file anew; a broken file is refused and its\n"
            "                  file:line:column errors printed (the running policy stays)\n"
            "  policy check    load each FILE as the daemon would and print its errors\n"
            "                  (\"FILE: OK\" when valid)\n"
            "  policy explain  how the policy decides OP for TENANT: every guard, remembered\n"
            "                  answer, rule and default up to the one that decides, and why\n"
            "                  the earlier ones did not match. OP is lookup, tcp.bind,\n"
            "                  tcp.listen, tcp.accept, tcp.connect, udp.bind, udp.connect,\n"
            "                  udp.send or udp.receive; ADDRESS is the local address for\n"
            "                  bind and listen, the remote one otherwise (a host name for\n"
            "                  lookup): 192.0.2.1, 192.0.2.1:443, [2001:db8::1]:443.\n"
            "                  --file FILE evaluates FILE offline instead of asking the\n"
            "                  daemon (no remembered answers then).\n"
            "  prompts         a terminal prompt agent: shows each permission prompt as it\n"
            "                  arrives and reads answers, one per line:\n"
            "                    a ID [SCOPE]   allow (also: allow, y)\n"
            "                    d ID [SCOPE]   deny (also: deny, n)\n"
            "                    s ID / t ID    allow for the session / the tenant\n"
            "                  SCOPE is once (default), session, tenant or a duration the\n"
            "                  prompt offers (1h); without ID the oldest prompt is answered,\n"
            "                  so a single key and Enter answers it. `l` lists the pending\n"
            "                  prompts, `q` or end of input quits. Works with a pipe as\n"
            "                  input too. --name AGENT answers as that prompt_agents entry.\n"
            "\n"
            "Options:\n"
            "  -C, --control SOCKET  the daemon's control socket (default:\n"
            "                        $WASOCK_CONTROL_SOCKET, else %s next to\n"
            "                        $WASOCK_SOCKET or %s)\n"
            "  -h, --help            this help\n"
            "  -V, --version         print the version\n"
            "\n"
            "Who may do what: status, sessions, reload and explain are for root and the\n"
            "daemon's user; prompts for uids listed under the policy's prompt_agents.\n"
            "\n"
            "Exit status: 0 success, 1 the daemon reported an error (or a policy file is\n"
            "invalid), 2 usage error, 3 the control socket cannot be reached.\n",
            WASOCKCTL_CONTROL_NAME, WASOCK_DEFAULT_SOCKET);
}

/* --- the connection ------------------------------------------------------------ */

typedef struct ctl_conn {
    int fd;
    size_t len;
    char buf[2 * WASOCKCTL_LINE_MAX + 2];
} ctl_conn;

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The default control socket: $WASOCK_CONTROL_SOCKET, else control.sock in
 * the directory of $WASOCK_SOCKET or of the built-in client socket. */
static const char *default_control_path(char *buf, size_t len) {
    const char *env = getenv("WASOCK_CONTROL_SOCKET");
    const char *client = getenv("WASOCK_SOCKET");
    const char *slash;
    int n;

    if (env != NULL && env[0] != '\0') {
        return env;
    }
    if (client == NULL || client[0] == '\0') {
        client = WASOCK_DEFAULT_SOCKET;
    }
    slash = strrchr(client, '/');
    n = slash == NULL
            ? snprintf(buf, len, "%s", WASOCKCTL_CONTROL_NAME)
            : snprintf(buf, len, "%.*s/%s", (int)(slash - client), client, WASOCKCTL_CONTROL_NAME);
    return n > 0 && (size_t)n < len ? buf : WASOCKCTL_CONTROL_NAME;
}

static int conn_open(const char *path, ctl_conn *c) {
    struct sockaddr_un sun;
    size_t len = strlen(path);

    memset(c, 0, sizeof(*c));
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (len == 0 || len >= sizeof(sun.sun_path)) {
        fprintf(stderr, "%s: control socket path too long: %s\n", program, path);
        return -1;
    }
    memcpy(sun.sun_path, path, len + 1);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        fprintf(stderr, "%s: cannot connect to %s: %s\n", program, path, strerror(errno));
        if (c->fd >= 0) {
            close(c->fd);
        }
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void conn_close(ctl_conn *c) {
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

static int conn_send_line(ctl_conn *c, const char *line) {
    char out[WASOCKCTL_LINE_MAX + 2];
    size_t len = strlen(line), done = 0;

    if (len > WASOCKCTL_LINE_MAX) {
        return -EMSGSIZE;
    }
    memcpy(out, line, len);
    out[len++] = '\n';
    while (done < len) {
        ssize_t n = send(c->fd, out + done, len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -errno;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Replaces what is not printable ASCII with '?': the daemon escapes what
 * it sends, and this holds even if it did not. */
static void make_printable(char *s) {
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            *s = '?';
        }
    }
}

/* Takes one whole line from the buffer if there is one: 1, else 0. */
static int take_line(ctl_conn *c, char *out, size_t len) {
    char *nl = memchr(c->buf, '\n', c->len);
    size_t n;

    if (nl == NULL) {
        return 0;
    }
    n = (size_t)(nl - c->buf);
    if (n > 0 && c->buf[n - 1] == '\r') {
        n--;
    }
    if (n >= len) {
        n = len - 1;
    }
    memcpy(out, c->buf, n);
    out[n] = '\0';
    make_printable(out);
    c->len -= (size_t)(nl - c->buf) + 1;
    memmove(c->buf, nl + 1, c->len);
    return 1;
}

/* Reads more bytes, waiting at most timeout_ms (-1: forever). Returns 1
 * when bytes came, 0 at end of file, -ETIMEDOUT, -EPROTO (a line too
 * long), or -errno. */
static int conn_fill(ctl_conn *c, int timeout_ms) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    ssize_t n;
    int r;

    if (c->len >= sizeof(c->buf)) {
        return -EPROTO;
    }
    r = poll(&p, 1, timeout_ms);
    if (r < 0) {
        return errno == EINTR ? 1 : -errno;
    }
    if (r == 0) {
        return -ETIMEDOUT;
    }
    n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n < 0) {
        return errno == EINTR ? 1 : -errno;
    }
    if (n == 0) {
        return 0;
    }
    c->len += (size_t)n;
    return 1;
}

/* Reads one line within timeout_ms: 1 with the line, 0 at end of file, or
 * a negative errno. */
static int conn_read_line(ctl_conn *c, char *out, size_t len, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        int r, left;
        if (take_line(c, out, len)) {
            return 1;
        }
        left = (int)(deadline - now_ms());
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        r = conn_fill(c, left);
        if (r <= 0) {
            return r;
        }
    }
}

static bool is_ok(const char *line) {
    return strcmp(line, "ok") == 0 || strncmp(line, "ok ", 3) == 0;
}

static bool is_error(const char *line) {
    return strncmp(line, "error:", 6) == 0;
}

/* The message of an "error: ..." line. */
static const char *error_text(const char *line) {
    line += 6;
    while (*line == ' ') {
        line++;
    }
    return line;
}

static void report_read_failure(int r) {
    if (r == 0) {
        fprintf(stderr, "%s: the daemon closed the connection\n", program);
    } else {
        fprintf(stderr, "%s: reading the reply: %s\n", program,
                r == -EPROTO ? "line too long" : strerror(-r));
    }
}

/* Sends one command and hands each reply line to `line_fn` until the
 * final line. Returns an exit status. */
static int run_command(const char *path, const char *command,
                       void (*line_fn)(void *opaque, const char *line), void *opaque) {
    char line[WASOCKCTL_LINE_MAX + 1];
    ctl_conn c;
    int r;

    if (conn_open(path, &c) < 0) {
        return CTL_EXIT_UNREACHABLE;
    }
    r = conn_send_line(&c, command);
    if (r < 0) {
        fprintf(stderr, "%s: sending to the daemon: %s\n", program, strerror(-r));
        conn_close(&c);
        return CTL_EXIT_UNREACHABLE;
    }
    for (;;) {
        r = conn_read_line(&c, line, sizeof(line), WASOCKCTL_REPLY_TIMEOUT_MS);
        if (r <= 0) {
            report_read_failure(r);
            conn_close(&c);
            return CTL_EXIT_UNREACHABLE;
        }
        if (is_error(line)) {
            fprintf(stderr, "%s: %s\n", program, error_text(line));
            conn_close(&c);
            return CTL_EXIT_FAILED;
        }
        line_fn(opaque, line);
        if (is_ok(line)) {
            conn_close(&c);
            return CTL_EXIT_OK;
        }
    }
}

/* --- key=value lines ----------------------------------------------------------- */

/* Copies a value starting at p (bare, or quoted with \" and \\ escapes;
 * other escapes such as \x1b stay as they are, as text) into out and
 * returns where it ends. */
static const char *read_value(const char *p, char *out, size_t len) {
    size_t n = 0;

    if (*p != '"') {
        while (*p != '\0' && *p != ' ') {
            if (n + 1 < len) {
                out[n++] = *p;
            }
            p++;
        }
    } else {
        p++;
        while (*p != '\0' && *p != '"') {
            char ch = *p;
            if (ch == '\\' && (p[1] == '"' || p[1] == '\\')) {
                ch = *++p;
            }
            if (n + 1 < len) {
                out[n++] = ch;
            }
            p++;
        }
        if (*p == '"') {
            p++;
        }
    }
    if (len > 0) {
        out[n] = '\0';
    }
    return p;
}

/* The value of ` key=` in line (into out); false when absent. */
static bool kv_get(const char *line, const char *key, char *out, size_t len) {
    size_t klen = strlen(key);
    const char *p = line;

    while (*p != '\0') {
        const char *word;
        while (*p == ' ') {
            p++;
        }
        word = p;
        while (*p != '\0' && *p != ' ' && *p != '=') {
            p++;
        }
        if (*p != '=') {
            continue;
        }
        p++;
        if ((size_t)(p - 1 - word) == klen && strncmp(word, key, klen) == 0) {
            read_value(p, out, len);
            return true;
        }
        {
            char skip[2];
            p = read_value(p, skip, sizeof(skip));
        }
    }
    if (len > 0) {
        out[0] = '\0';
    }
    return false;
}

static unsigned kv_unsigned(const char *line, const char *key) {
    char v[32];
    char *end;
    unsigned long n;

    if (!kv_get(line, key, v, sizeof(v))) {
        return 0;
    }
    errno = 0;
    n = strtoul(v, &end, 10);
    return errno == 0 && *end == '\0' && n <= UINT32_MAX ? (unsigned)n : 0;
}

/* --- status, sessions, reload --------------------------------------------------------- */

static void print_data_line(void *opaque, const char *line) {
    (void)opaque;
    if (!is_ok(line)) {
        printf("%s\n", line);
    }
}

typedef struct reload_state {
    int errors;
} reload_state;

static void print_reload_line(void *opaque, const char *line) {
    reload_state *st = opaque;

    if (strncmp(line, "policy-error ", 13) == 0) {
        fprintf(stderr, "%s\n", line + 13);
        st->errors++;
    } else if (strncmp(line, "note ", 5) == 0) {
        printf("%s\n", line + 5);
    } else if (is_ok(line)) {
        printf("%s\n", line[2] == ' ' ? line + 3 : "ok");
    } else {
        printf("%s\n", line);
    }
}

static int cmd_simple(const char *path, const char *command) {
    if (strcmp(command, "reload") == 0) {
        reload_state st = {0};
        return run_command(path, "reload", print_reload_line, &st);
    }
    return run_command(path, command, print_data_line, NULL);
}

/* --- policy check ------------------------------------------------------------------------ */

static int cmd_policy_check(int argc, char **argv) {
    int status = CTL_EXIT_OK;

    if (argc < 1) {
        fprintf(stderr, "%s: policy check needs a FILE\n", program);
        return CTL_EXIT_USAGE;
    }
    for (int i = 0; i < argc; i++) {
        policy *p = NULL;
        char *errors = NULL;
        if (policy_load_file(argv[i], &p, &errors) != 0) {
            if (errors != NULL && errors[0] != '\0') {
                fputs(errors, stdout);
                if (errors[strlen(errors) - 1] != '\n') {
                    putchar('\n');
                }
            } else {
                printf("%s: invalid policy\n", argv[i]);
            }
            status = CTL_EXIT_FAILED;
        } else {
            printf("%s: OK\n", argv[i]);
        }
        free(errors);
        policy_free(p);
    }
    return status;
}

/* --- policy explain ---------------------------------------------------------------------- */

typedef struct explain_args {
    const char *file;
    const char *tenant;
    const char *op;
    const char *address;
    const char *host;
    const char *local;
    bool implicit;
} explain_args;

/* One explanation step, in the form policy/REFERENCE.md shows:
 * "rule:x no-match: remote 10.1.2.3 is not in [...]  [policy.yaml:12:5]". */
static void print_step(const char *decider, const char *outcome, const char *action, unsigned line,
                       unsigned column, const char *template_name, const char *reason,
                       const char *file) {
    bool matched = strcmp(outcome, "no-match") != 0;
    bool from_template = template_name != NULL && template_name[0] != '\0';

    printf("%s %s", decider, outcome);
    if (matched) {
        printf(" (%s)", action);
    }
    printf(": %s", reason);
    if (from_template) {
        printf(" (template %s)", template_name);
    }
    if (line != 0 && file != NULL) {
        printf("  [%s:%u:%u]", file, line, column);
    } else if (line != 0) {
        printf("  [line %u:%u]", line, column);
    }
    printf("\n");
}

static void print_decision(const char *action, const char *decided_by, const char *error,
                           unsigned delay_ms, unsigned timeout_ms, const char *on_timeout,
                           const char *on_no_agent, bool audit) {
    printf("decision: %s by %s", action, decided_by);
    if (strcmp(action, "deny") == 0) {
        printf(", error %s", error);
        if (delay_ms != 0) {
            printf(" after %u ms", delay_ms);
        }
    } else if (strcmp(action, "prompt") == 0) {
        printf(" (timeout %u ms, then %s; without an agent %s; a refusal is %s)", timeout_ms,
               on_timeout, on_no_agent, error);
    }
    printf("; %s\n", audit ? "audited" : "not audited");
}

static const char *outcome_text(policy_explain_outcome o) {
    switch (o) {
    case POLICY_EXPLAIN_NO_MATCH:
        return "no-match";
    case POLICY_EXPLAIN_EXEMPT:
        return "exempt";
    case POLICY_EXPLAIN_LOGGED:
        return "logged";
    case POLICY_EXPLAIN_SHADOW:
        return "shadow";
    case POLICY_EXPLAIN_DECIDED:
        return "decided";
    }
    return "?";
}

static void offline_step(void *opaque, const policy_explain_step *step) {
    const explain_args *a = opaque;
    char reason[1024];

    snprintf(reason, sizeof(reason), "%s", step->reason != NULL ? step->reason : "");
    make_printable(reason);
    print_step(step->decider, outcome_text(step->outcome), policy_action_name(step->action),
               step->line, step->column, step->template_name, reason, a->file);
}

static bool op_is_local(policy_op op) {
    return op == POLICY_OP_TCP_BIND || op == POLICY_OP_TCP_LISTEN || op == POLICY_OP_UDP_BIND;
}

static int explain_offline(const explain_args *a) {
    policy *p = NULL;
    char *errors = NULL;
    policy_request req;
    policy_verdict v;
    const char *error_name;

    memset(&req, 0, sizeof(req));
    req.tenant = a->tenant;
    req.implicit = a->implicit;
    if (policy_op_from_name(a->op, &req.op) < 0) {
        fprintf(stderr, "%s: unknown operation \"%s\"\n", program, a->op);
        return CTL_EXIT_USAGE;
    }
    if (req.op == POLICY_OP_LOOKUP) {
        req.host = a->address;
    } else if (policy_endpoint_parse(a->address, op_is_local(req.op) ? &req.local : &req.remote) <
               0) {
        fprintf(stderr, "%s: not an address: %s\n", program, a->address);
        return CTL_EXIT_USAGE;
    }
    if (a->local != NULL &&
        (op_is_local(req.op) || policy_endpoint_parse(a->local, &req.local) < 0)) {
        fprintf(stderr, "%s: --local: not an address, or not for %s\n", program, a->op);
        return CTL_EXIT_USAGE;
    }
    if (a->host != NULL && req.op != POLICY_OP_LOOKUP) {
        req.host = a->host;
    }
    if (policy_load_file(a->file, &p, &errors) != 0) {
        fputs(errors != NULL ? errors : "invalid policy\n", stderr);
        free(errors);
        return CTL_EXIT_FAILED;
    }
    free(errors);
    policy_explain(p, &req, NULL, NULL, offline_step, (void *)a, &v);
    error_name = proto_err_name(v.error);
    print_decision(policy_action_name(v.action), v.decided_by, error_name ? error_name : "?",
                   v.deny_delay_ms, v.prompt_timeout_ms, policy_action_name(v.prompt_on_timeout),
                   policy_action_name(v.prompt_on_no_agent), v.audit);
    policy_free(p);
    return CTL_EXIT_OK;
}

static void daemon_explain_line(void *opaque, const char *line) {
    char decider[200], outcome[32], action[32], tmpl[80], reason[WASOCKCTL_LINE_MAX];
    char decided_by[200], error[64], on_timeout[16], on_no_agent[16], audit[8];

    (void)opaque;
    if (strncmp(line, "step ", 5) == 0) {
        kv_get(line, "decider", decider, sizeof(decider));
        kv_get(line, "outcome", outcome, sizeof(outcome));
        kv_get(line, "action", action, sizeof(action));
        kv_get(line, "template", tmpl, sizeof(tmpl));
        kv_get(line, "reason", reason, sizeof(reason));
        print_step(decider, outcome, action, kv_unsigned(line, "line"), kv_unsigned(line, "column"),
                   tmpl, reason, NULL);
    } else if (strncmp(line, "decision ", 9) == 0) {
        kv_get(line, "action", action, sizeof(action));
        kv_get(line, "decided_by", decided_by, sizeof(decided_by));
        kv_get(line, "error", error, sizeof(error));
        kv_get(line, "on_timeout", on_timeout, sizeof(on_timeout));
        kv_get(line, "on_no_agent", on_no_agent, sizeof(on_no_agent));
        kv_get(line, "audit", audit, sizeof(audit));
        print_decision(action, decided_by, error, kv_unsigned(line, "delay_ms"),
                       kv_unsigned(line, "timeout_ms"), on_timeout, on_no_agent,
                       strcmp(audit, "yes") == 0);
    } else if (strncmp(line, "steps-omitted ", 14) == 0) {
        printf("... and %u more rules that did not match\n", kv_unsigned(line, "count"));
    } else if (!is_ok(line)) {
        printf("%s\n", line);
    }
}

/* A word for the command line: no spaces or control characters, so one
 * argument stays one word of the protocol. */
static bool word_ok(const char *w) {
    if (w == NULL || *w == '\0' || strlen(w) > 512) {
        return false;
    }
    for (; *w != '\0'; w++) {
        if ((unsigned char)*w <= 0x20 || (unsigned char)*w > 0x7e) {
            return false;
        }
    }
    return true;
}

static int explain_online(const char *path, const explain_args *a) {
    char command[WASOCKCTL_LINE_MAX];
    int n;

    if (!word_ok(a->tenant) || !word_ok(a->op) || !word_ok(a->address) ||
        (a->host != NULL && !word_ok(a->host)) || (a->local != NULL && !word_ok(a->local))) {
        fprintf(stderr, "%s: arguments must be single words of printable text\n", program);
        return CTL_EXIT_USAGE;
    }
    n = snprintf(command, sizeof(command), "explain %s %s %s%s%s%s%s%s", a->tenant, a->op,
                 a->address, a->local ? " local=" : "", a->local ? a->local : "",
                 a->host ? " host=" : "", a->host ? a->host : "", a->implicit ? " implicit" : "");
    if (n < 0 || (size_t)n >= sizeof(command)) {
        fprintf(stderr, "%s: arguments too long\n", program);
        return CTL_EXIT_USAGE;
    }
    return run_command(path, command, daemon_explain_line, NULL);
}

static int cmd_policy_explain(const char *path, int argc, char **argv) {
    static const struct option long_opts[] = {
        {"file", required_argument, NULL, 'f'}, {"tenant", required_argument, NULL, 't'},
        {"host", required_argument, NULL, 'H'}, {"local", required_argument, NULL, 'l'},
        {"implicit", no_argument, NULL, 'i'},   {NULL, 0, NULL, 0},
    };
    explain_args a;
    int c;

    memset(&a, 0, sizeof(a));
    optind = 1;
    while ((c = getopt_long(argc, argv, "+f:t:H:l:i", long_opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            a.file = optarg;
            break;
        case 't':
            a.tenant = optarg;
            break;
        case 'H':
            a.host = optarg;
            break;
        case 'l':
            a.local = optarg;
            break;
        case 'i':
            a.implicit = true;
            break;
        default:
            return CTL_EXIT_USAGE;
        }
    }
    if (a.tenant == NULL || argc - optind != 2) {
        fprintf(stderr,
                "%s: usage: policy explain [--file FILE] --tenant TENANT OP "
                "ADDRESS[:PORT] [--host NAME] [--local ADDRESS] [--implicit]\n",
                program);
        return CTL_EXIT_USAGE;
    }
    a.op = argv[optind];
    a.address = argv[optind + 1];
    return a.file != NULL ? explain_offline(&a) : explain_online(path, &a);
}

/* --- prompts: the terminal agent --------------------------------------------------------- */

typedef struct shown_prompt {
    uint64_t id;
    char remember[128];
} shown_prompt;

typedef struct agent_state {
    ctl_conn conn;
    shown_prompt prompts[WASOCKCTL_MAX_PROMPTS]; /* in arrival order */
    size_t count;
} agent_state;

static void forget_prompt(agent_state *st, uint64_t id) {
    for (size_t i = 0; i < st->count; i++) {
        if (st->prompts[i].id == id) {
            memmove(&st->prompts[i], &st->prompts[i + 1],
                    (st->count - i - 1) * sizeof(st->prompts[0]));
            st->count--;
            return;
        }
    }
}

static void describe_operation(const char *line) {
    char op[32], local[80], remote[80], host[260];

    kv_get(line, "op", op, sizeof(op));
    kv_get(line, "local", local, sizeof(local));
    kv_get(line, "remote", remote, sizeof(remote));
    kv_get(line, "host", host, sizeof(host));
    if (strcmp(op, "lookup") == 0) {
        printf("lookup of %s", host);
        return;
    }
    printf("%s", op);
    if (strcmp(remote, "-") != 0) {
        printf(strcmp(op, "tcp.accept") == 0 || strcmp(op, "udp.receive") == 0 ? " from %s"
                                                                               : " to %s",
               remote);
    }
    if (strcmp(local, "-") != 0) {
        printf(" on %s", local);
    }
    if (strcmp(host, "-") != 0) {
        printf(" (host %s)", host);
    }
    if (kv_get(line, "implicit", op, sizeof(op))) {
        printf(" (implicit bind)");
    }
}

static void show_prompt(agent_state *st, const char *line) {
    char id_text[32], tenant[140], session[24], pid[24], uid[24], rule[200], note[1200];
    char remember[128], timeout[24], *end;
    uint64_t id;

    if (sscanf(line, "prompt %31s", id_text) != 1) {
        return;
    }
    errno = 0;
    id = strtoull(id_text, &end, 10);
    if (errno != 0 || *end != '\0' || id == 0) {
        return;
    }
    kv_get(line, "tenant", tenant, sizeof(tenant));
    kv_get(line, "session", session, sizeof(session));
    kv_get(line, "pid", pid, sizeof(pid));
    kv_get(line, "uid", uid, sizeof(uid));
    kv_get(line, "rule", rule, sizeof(rule));
    kv_get(line, "note", note, sizeof(note));
    kv_get(line, "remember", remember, sizeof(remember));
    kv_get(line, "timeout_ms", timeout, sizeof(timeout));

    printf("[%" PRIu64 "] tenant %s (session %s, pid %s, uid %s): ", id, tenant, session, pid, uid);
    describe_operation(line);
    printf("\n    asked by %s", rule);
    if (strcmp(note, "-") != 0 && note[0] != '\0') {
        printf("; note: %s", note);
    }
    printf("\n    answer: a %" PRIu64 " | d %" PRIu64 " [%s]   (times out after %s ms)\n", id, id,
           remember, timeout);

    forget_prompt(st, id); /* a re-sent prompt is shown again, not listed twice */
    if (st->count < WASOCKCTL_MAX_PROMPTS) {
        st->prompts[st->count].id = id;
        snprintf(st->prompts[st->count].remember, sizeof(st->prompts[0].remember), "%s", remember);
        st->count++;
    }
}

static void handle_daemon_line(agent_state *st, const char *line) {
    uint64_t id;
    char reason[64], action[16], scope[24];

    if (strncmp(line, "prompt ", 7) == 0) {
        show_prompt(st, line);
    } else if (sscanf(line, "withdraw %" SCNu64 " %63s", &id, reason) == 2) {
        printf("[%" PRIu64 "] withdrawn (%s)\n", id, reason);
        forget_prompt(st, id);
    } else if (sscanf(line, "answered %" SCNu64 " %15s %23s", &id, action, scope) == 3) {
        printf("[%" PRIu64 "] %s, %s\n", id, strcmp(action, "allow") == 0 ? "allowed" : "denied",
               scope);
        forget_prompt(st, id);
    } else if (is_error(line)) {
        printf("%s\n", line);
    } else if (!is_ok(line)) {
        printf("%s\n", line);
    }
    fflush(stdout);
}

static void list_prompts(const agent_state *st) {
    if (st->count == 0) {
        printf("no pending prompts\n");
    }
    for (size_t i = 0; i < st->count; i++) {
        printf("[%" PRIu64 "] pending (remember: %s)\n", st->prompts[i].id,
               st->prompts[i].remember);
    }
}

static bool all_digits(const char *w) {
    if (*w == '\0') {
        return false;
    }
    for (; *w != '\0'; w++) {
        if (*w < '0' || *w > '9') {
            return false;
        }
    }
    return true;
}

/* One line typed by the operator. Returns false to quit. */
static bool handle_input(agent_state *st, char *input) {
    char *words[WASOCKCTL_INPUT_WORDS], *save = NULL, command[128];
    const char *action = NULL, *scope = NULL;
    uint64_t id = 0;
    int n = 0, next = 1, r;

    for (char *w = strtok_r(input, " \t\r\n", &save); w != NULL && n < WASOCKCTL_INPUT_WORDS;
         w = strtok_r(NULL, " \t\r\n", &save)) {
        words[n++] = w;
    }
    if (n == 0) {
        return true;
    }
    if (strcmp(words[0], "q") == 0 || strcmp(words[0], "quit") == 0) {
        return false;
    }
    if (strcmp(words[0], "l") == 0 || strcmp(words[0], "list") == 0) {
        list_prompts(st);
        return true;
    }
    if (strcmp(words[0], "a") == 0 || strcmp(words[0], "allow") == 0 ||
        strcmp(words[0], "y") == 0) {
        action = "allow";
    } else if (strcmp(words[0], "d") == 0 || strcmp(words[0], "deny") == 0 ||
               strcmp(words[0], "n") == 0) {
        action = "deny";
    } else if (strcmp(words[0], "s") == 0) {
        action = "allow";
        scope = "session";
    } else if (strcmp(words[0], "t") == 0) {
        action = "allow";
        scope = "tenant";
    } else {
        printf("answers: a ID [SCOPE], d ID [SCOPE], s ID, t ID; l lists, q quits\n");
        return true;
    }
    if (n > next && all_digits(words[next])) {
        char *end;
        errno = 0;
        id = strtoull(words[next], &end, 10);
        if (errno != 0 || *end != '\0') {
            printf("not a prompt number: %s\n", words[next]);
            return true;
        }
        next++;
    } else if (st->count > 0) {
        id = st->prompts[0].id; /* the oldest */
    } else {
        printf("no pending prompt to answer\n");
        return true;
    }
    if (n > next) {
        scope = words[next++];
    }
    if (n > next || (scope != NULL && !word_ok(scope))) {
        printf("too many words; answers: a ID [SCOPE], d ID [SCOPE]\n");
        return true;
    }
    snprintf(command, sizeof(command), "answer %" PRIu64 " %s%s%s", id, action,
             scope != NULL ? " " : "", scope != NULL ? scope : "");
    r = conn_send_line(&st->conn, command);
    if (r < 0) {
        fprintf(stderr, "%s: sending the answer: %s\n", program, strerror(-r));
        return false;
    }
    return true;
}

/* Handles every whole line typed so far; at end of input (eof) the rest
 * too. Returns false to quit. */
static bool process_typed(agent_state *st, char *buf, size_t *len, bool eof) {
    for (;;) {
        char *nl = memchr(buf, '\n', *len);
        size_t n;
        bool go_on;
        if (nl == NULL && !(eof && *len > 0)) {
            return !eof;
        }
        n = nl != NULL ? (size_t)(nl - buf) : *len;
        buf[n] = '\0';
        go_on = handle_input(st, buf);
        *len -= nl != NULL ? n + 1 : n;
        memmove(buf, buf + n + (nl != NULL), *len);
        fflush(stdout);
        if (!go_on) {
            return false;
        }
    }
}

static int cmd_prompts(const char *path, int argc, char **argv) {
    static const struct option long_opts[] = {
        {"name", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    agent_state *st;
    char line[WASOCKCTL_LINE_MAX + 1], input[512], hello[128];
    size_t input_len = 0;
    const char *name = NULL;
    int c, r, status = CTL_EXIT_OK;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+n:", long_opts, NULL)) != -1) {
        if (c != 'n') {
            return CTL_EXIT_USAGE;
        }
        name = optarg;
    }
    if (optind != argc || (name != NULL && !word_ok(name))) {
        fprintf(stderr, "%s: usage: prompts [--name AGENT]\n", program);
        return CTL_EXIT_USAGE;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        fprintf(stderr, "%s: out of memory\n", program);
        return CTL_EXIT_FAILED;
    }
    if (conn_open(path, &st->conn) < 0) {
        free(st);
        return CTL_EXIT_UNREACHABLE;
    }
    snprintf(hello, sizeof(hello), "agent%s%s", name ? " " : "", name ? name : "");
    r = conn_send_line(&st->conn, hello);
    /* Pending prompts come before the "ok" that ends the command. */
    while (r == 0) {
        r = conn_read_line(&st->conn, line, sizeof(line), WASOCKCTL_REPLY_TIMEOUT_MS);
        if (r <= 0) {
            report_read_failure(r);
            status = CTL_EXIT_UNREACHABLE;
            goto out;
        }
        if (is_error(line)) {
            fprintf(stderr, "%s: %s\n", program, error_text(line));
            status = CTL_EXIT_FAILED;
            goto out;
        }
        if (is_ok(line)) {
            printf("waiting for prompts as %s (answers: a ID [SCOPE], d ID, s ID, t ID; l, q)\n",
                   strncmp(line, "ok agent ", 9) == 0 ? line + 9 : "an agent");
            fflush(stdout);
            break;
        }
        handle_daemon_line(st, line);
    }

    /* Typed lines are read with read(2), not stdio, so poll sees every
     * byte that has not been handled yet. */
    for (;;) {
        struct pollfd p[2] = {
            {.fd = st->conn.fd, .events = POLLIN},
            {.fd = STDIN_FILENO, .events = POLLIN},
        };
        while (take_line(&st->conn, line, sizeof(line))) {
            handle_daemon_line(st, line);
        }
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            status = CTL_EXIT_FAILED;
            break;
        }
        if (p[0].revents != 0) {
            r = conn_fill(&st->conn, 0);
            if (r <= 0 && r != -ETIMEDOUT) {
                report_read_failure(r);
                status = CTL_EXIT_UNREACHABLE;
                break;
            }
        }
        if (p[1].revents != 0) {
            ssize_t n = read(STDIN_FILENO, input + input_len, sizeof(input) - 1 - input_len);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n > 0) {
                input_len += (size_t)n;
            }
            if (!process_typed(st, input, &input_len, n <= 0)) {
                break; /* quit, or end of input */
            }
            if (input_len == sizeof(input) - 1) {
                printf("input line too long; ignored\n");
                input_len = 0;
            }
        }
    }
out:
    conn_close(&st->conn);
    free(st);
    return status;
}

/* --- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    static const struct option long_opts[] = {
        {"control", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    char default_path[512];
    const char *path = NULL;
    int c;

    /* A reader that goes away must not kill us in the middle of output. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((c = getopt_long(argc, argv, "+C:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'C':
            path = optarg;
            break;
        case 'h':
            usage(stdout);
            return CTL_EXIT_OK;
        case 'V':
            printf("wasockctl %s\n", WASOCK_VERSION);
            return CTL_EXIT_OK;
        default:
            usage(stderr);
            return CTL_EXIT_USAGE;
        }
    }
    if (path == NULL) {
        path = default_control_path(default_path, sizeof(default_path));
    }
    if (optind >= argc) {
        usage(stderr);
        return CTL_EXIT_USAGE;
    }
    argc -= optind;
    argv += optind;
    if (strcmp(argv[0], "status") == 0 || strcmp(argv[0], "sessions") == 0 ||
        strcmp(argv[0], "reload") == 0) {
        if (argc != 1) {
            fprintf(stderr, "%s: %s takes no arguments\n", program, argv[0]);
            return CTL_EXIT_USAGE;
        }
        return cmd_simple(path, argv[0]);
    }
    if (strcmp(argv[0], "prompts") == 0) {
        return cmd_prompts(path, argc, argv);
    }
    if (strcmp(argv[0], "policy") == 0 && argc >= 2 && strcmp(argv[1], "check") == 0) {
        return cmd_policy_check(argc - 2, argv + 2);
    }
    if (strcmp(argv[0], "policy") == 0 && argc >= 2 && strcmp(argv[1], "explain") == 0) {
        return cmd_policy_explain(path, argc - 1, argv + 1);
    }
    fprintf(stderr, "%s: unknown command \"%s\"\n", program, argv[0]);
    usage(stderr);
    return CTL_EXIT_USAGE;
}
