/* control.c — the control socket (see control.h and proto/AGENT.md):
 * accepting operators and prompt agents, the line protocol, and the admin
 * commands status, sessions, reload and explain.
 *
 * Trust: a peer's identity is SO_PEERCRED from the kernel. What peers send
 * is untrusted text even from root: lines are bounded and must be printable
 * ASCII, every word is parsed with checked lengths and ranges, and a peer
 * that sends garbage or does not read its output is dropped alone. Values
 * written back (tenant names, addresses, policy text) are escaped.
 */
#include "control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authz.h"
#include "ctlproto.h"
#include "log.h"
#include "session.h"
#include "unixsock.h"
#include "wasock-config.h"

/* Connections accepted per wakeup before the loop serves others. */
#define CONTROL_ACCEPT_BATCH 8

/* Reads per wakeup of one connection (fairness against a fast sender). */
#define CONTROL_READS_PER_WAKEUP 4

/* Reads that discard what a refused peer sent before it is closed: a
 * command line or two; a peer that sends more only loses the reason. */
#define CONTROL_REFUSAL_DRAIN_READS 8

/* Steps of one explanation that are shown in full. A file of thousands of
 * rules would otherwise fill CONTROL_OUTPUT_MAX with rules that did not
 * match; 500 lines of at most a few hundred bytes stay far below it, and
 * the matching steps are always shown. */
#define CONTROL_EXPLAIN_STEPS_MAX 500

/* Initial output buffer; grows by doubling up to CONTROL_OUTPUT_MAX. */
#define CONTROL_OUTPUT_INITIAL 4096u

/* Peers refused or dropped are logged at most this often. */
static log_ratelimit control_log = LOG_RATELIMIT_INIT(10000, 5);

typedef struct ctl_conn {
    control *ctl;
    struct ctl_conn *prev, *next;
    int fd;
    uv_poll_t poll;
    int poll_events;
    struct ucred peer;
    bool admin;
    prompt_agent *agent; /* set once the connection is a prompt agent */
    bool closing;
    bool close_after_flush; /* a final reply is queued; read no more */
    size_t in_len;
    char in[CTL_LINE_MAX + 2]; /* one line, its newline, and a NUL */
    char *out;
    size_t out_head, out_tail, out_cap;
} ctl_conn;

struct control {
    uv_loop_t *loop;
    server *srv;
    control_reload_fn reload;
    void *reload_opaque;
    int listen_fd;
    uv_poll_t listen_poll;
    bool listen_open;
    unixsock_file file;
    ctl_conn *conns;
    size_t nconns;
    unsigned closing_handles; /* connections and the listener not yet closed */
    bool stopping;
    uint64_t started_ms;
};

static void conn_update_poll(ctl_conn *c);

/* --- connections ------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h) {
    ctl_conn *c = h->data;
    control *ctl = c->ctl;

    if (c->agent != NULL) {
        /* Its prompts go to the other agents, or to their on_no_agent. */
        prompt_agent_detach(c->agent);
        c->agent = NULL;
    }
    close(c->fd);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        ctl->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    ctl->nconns--;
    ctl->closing_handles--;
    free(c->out);
    free(c);
}

static void conn_close(ctl_conn *c, const char *why) {
    if (c->closing) {
        return;
    }
    c->closing = true;
    log_debug("control connection of pid %ld uid %ld closed: %s", (long)c->peer.pid,
              (long)c->peer.uid, why);
    c->ctl->closing_handles++;
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
}

/* Writes what the socket takes now; the rest waits for POLLOUT. */
static void conn_flush(ctl_conn *c) {
    while (!c->closing && c->out_tail > c->out_head) {
        ssize_t n = send(c->fd, c->out + c->out_head, c->out_tail - c->out_head,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                conn_close(c, "write failed");
                return;
            }
            break;
        }
        c->out_head += (size_t)n;
    }
    if (c->closing) {
        return;
    }
    if (c->out_head == c->out_tail) {
        c->out_head = c->out_tail = 0;
        if (c->close_after_flush) {
            conn_close(c, "final reply sent");
            return;
        }
    }
    conn_update_poll(c);
}

/* Queues one line (a newline is added) and writes what the socket takes.
 * A peer that leaves CONTROL_OUTPUT_MAX unread is closed (later: never
 * while a caller is in the middle of something). */
static void conn_send(ctl_conn *c, const char *line) {
    size_t len = strlen(line), unsent;

    if (c->closing) {
        return;
    }
    unsent = c->out_tail - c->out_head;
    if (unsent + len + 1 > CONTROL_OUTPUT_MAX) {
        log_write_ratelimited(&control_log, LOG_LEVEL_WARN,
                              "control connection of pid %ld uid %ld does not read its output; "
                              "closing it",
                              (long)c->peer.pid, (long)c->peer.uid);
        conn_close(c, "output not read");
        return;
    }
    if (c->out_tail + len + 1 > c->out_cap) {
        size_t cap = c->out_cap == 0 ? CONTROL_OUTPUT_INITIAL : c->out_cap;
        char *grown;
        if (c->out_head > 0) {
            memmove(c->out, c->out + c->out_head, unsent);
            c->out_head = 0;
            c->out_tail = unsent;
        }
        while (cap < c->out_tail + len + 1) {
            cap *= 2;
        }
        if (cap > c->out_cap) {
            grown = realloc(c->out, cap);
            if (grown == NULL) {
                conn_close(c, "out of memory");
                return;
            }
            c->out = grown;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_tail, line, len);
    c->out[c->out_tail + len] = '\n';
    c->out_tail += len + 1;
    conn_flush(c);
}

static void conn_sendf(ctl_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conn_sendf(ctl_conn *c, const char *fmt, ...) {
    char line[CTL_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    conn_send(c, line);
}

/* The broker's way to reach an agent (prompt_agent_send_fn). */
static void agent_send(void *conn, const char *line) {
    conn_send(conn, line);
}

/* --- admin commands --------------------------------------------------------------- */

static bool require_admin(ctl_conn *c, const char *command) {
    if (c->admin) {
        return true;
    }
    conn_sendf(c, "error: permission denied: %s is for root and the daemon's user (uid %ld)",
               command, (long)geteuid());
    return false;
}

static void cmd_status(ctl_conn *c) {
    control *ctl = c->ctl;
    server *srv = ctl->srv;
    const auditsink_config *audit = server_audit_config(srv);
    unsigned ok = 0, failed = 0;
    prompt_stats ps;
    char line[CTL_LINE_MAX], num[32];
    size_t len = 0;
    uint64_t seq = 0;

    conn_sendf(c, "daemon version=%s pid=%ld uptime_s=%" PRIu64, WASOCK_VERSION, (long)getpid(),
               (uv_now(ctl->loop) - ctl->started_ms) / 1000u);
    server_reload_counts(srv, &ok, &failed);
    line[0] = '\0';
    ctl_append(line, sizeof(line), &len, "policy");
    ctl_append_value(line, sizeof(line), &len, "file",
                     server_policy_path(srv)[0] != '\0' ? server_policy_path(srv) : "builtin");
    snprintf(num, sizeof(num), "%u", ok);
    ctl_append_value(line, sizeof(line), &len, "reloads", num);
    snprintf(num, sizeof(num), "%u", failed);
    ctl_append_value(line, sizeof(line), &len, "failed_reloads", num);
    conn_send(c, line);
    conn_sendf(c, "sessions count=%zu", server_session_count(srv));
    for (const tenant_usage *u = server_tenant_usages(srv); u != NULL; u = u->next) {
        len = 0;
        line[0] = '\0';
        ctl_append(line, sizeof(line), &len, "tenant");
        ctl_append_value(line, sizeof(line), &len, "name", u->name);
        snprintf(num, sizeof(num), " sessions=%u", u->refs);
        ctl_append(line, sizeof(line), &len, num);
        snprintf(num, sizeof(num), " sockets=%u", u->sockets);
        ctl_append(line, sizeof(line), &len, num);
        snprintf(num, sizeof(num), " listeners=%u", u->listeners);
        ctl_append(line, sizeof(line), &len, num);
        snprintf(num, sizeof(num), " pending_ops=%u", u->pending_ops);
        ctl_append(line, sizeof(line), &len, num);
        conn_send(c, line);
    }
    prompt_broker_stats(server_broker(srv), &ps);
    conn_sendf(c,
               "prompts pending=%zu agents=%zu remembered=%zu asked=%" PRIu64 " answered=%" PRIu64
               " timed_out=%" PRIu64 " fallbacks=%" PRIu64,
               ps.pending, ps.agents, ps.remembered, ps.asked, ps.answered, ps.timed_out,
               ps.fallbacks);
    if (server_audit_log(srv) != NULL) {
        audit_last_record(server_audit_log(srv), &seq, NULL);
    }
    len = 0;
    line[0] = '\0';
    ctl_append(line, sizeof(line), &len, "audit");
    ctl_append_value(line, sizeof(line), &len, "sink",
                     server_audit_log(srv) != NULL ? auditsink_name(audit->sink) : "none");
    ctl_append_value(line, sizeof(line), &len, "file", audit->path[0] != '\0' ? audit->path : NULL);
    snprintf(num, sizeof(num), " seq=%" PRIu64, seq);
    ctl_append(line, sizeof(line), &len, num);
    conn_send(c, line);
    conn_send(c, "ok");
}

static void cmd_sessions(ctl_conn *c) {
    server *srv = c->ctl->srv;
    size_t n = server_session_count(srv);

    for (size_t i = 0; i < n; i++) {
        session *s = server_session_at(srv, i);
        const struct ucred *peer = session_peer(s);
        char line[CTL_LINE_MAX], head[160];
        size_t len = 0;

        snprintf(head, sizeof(head), "session id=%" PRIu64 " pid=%ld uid=%ld gid=%ld",
                 session_id(s), (long)peer->pid, (long)peer->uid, (long)peer->gid);
        line[0] = '\0';
        ctl_append(line, sizeof(line), &len, head);
        ctl_append_value(line, sizeof(line), &len, "tenant",
                         session_tenant(s)[0] != '\0' ? session_tenant(s) : NULL);
        snprintf(head, sizeof(head), " wasi=0.%u resources=%u", (unsigned)session_wasi(s),
                 session_resource_count(s));
        ctl_append(line, sizeof(line), &len, head);
        conn_send(c, line);
    }
    conn_send(c, "ok");
}

static void cmd_reload(ctl_conn *c) {
    control *ctl = c->ctl;
    char *report = NULL;
    int r = ctl->reload != NULL ? ctl->reload(ctl->reload_opaque, &report)
                                : server_reload_policy(ctl->srv, &report);

    for (const char *line = report; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        int len = end != NULL ? (int)(end - line) : (int)strlen(line);
        if (len > 0) {
            conn_sendf(c, "%s %.*s", r == 0 ? "note" : "policy-error", len, line);
        }
        line = end != NULL ? end + 1 : NULL;
    }
    free(report);
    if (r == 0) {
        conn_send(c, "ok policy reloaded");
    } else {
        conn_send(c, "error: reload refused; the running policy stays in force");
    }
}

static const char *outcome_name(policy_explain_outcome o) {
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

/* An explanation being written to a connection. */
typedef struct explain_output {
    ctl_conn *c;
    size_t shown, omitted;
} explain_output;

static void explain_step(void *opaque, const policy_explain_step *step) {
    explain_output *x = opaque;
    ctl_conn *c = x->c;
    char line[CTL_LINE_MAX], num[32];
    size_t len = 0;

    /* Past the cap only the steps that matched are shown: the decider
     * and the guards and shadow rules that took note. */
    if (x->shown >= CONTROL_EXPLAIN_STEPS_MAX && step->outcome == POLICY_EXPLAIN_NO_MATCH) {
        x->omitted++;
        return;
    }
    x->shown++;
    line[0] = '\0';
    ctl_append(line, sizeof(line), &len, "step");
    ctl_append_value(line, sizeof(line), &len, "decider", step->decider);
    ctl_append_value(line, sizeof(line), &len, "outcome", outcome_name(step->outcome));
    ctl_append_value(line, sizeof(line), &len, "action", policy_action_name(step->action));
    if (step->line != 0) {
        snprintf(num, sizeof(num), " line=%u column=%u", step->line, step->column);
        ctl_append(line, sizeof(line), &len, num);
    }
    if (step->template_name != NULL) {
        ctl_append_value(line, sizeof(line), &len, "template", step->template_name);
    }
    ctl_append_value(line, sizeof(line), &len, "reason", step->reason);
    conn_send(c, line);
}

static bool op_is_local(policy_op op) {
    return op == POLICY_OP_TCP_BIND || op == POLICY_OP_TCP_LISTEN || op == POLICY_OP_UDP_BIND;
}

/* explain TENANT OP ADDRESS[:PORT] [local=ADDRESS[:PORT]] [host=NAME] [implicit]
 * (for lookup, ADDRESS is the name). */
static void cmd_explain(ctl_conn *c, int argc, char **argv) {
    explain_output x = {c, 0, 0};
    policy_request req;
    policy_verdict v;
    policy_endpoint *target;
    char line[CTL_LINE_MAX], num[64];
    size_t len = 0;

    if (argc < 4) {
        conn_send(c, "error: usage: explain TENANT OP ADDRESS[:PORT] [local=ADDRESS[:PORT]] "
                     "[host=NAME] [implicit]");
        return;
    }
    memset(&req, 0, sizeof(req));
    if (strlen(argv[1]) > PROTO_TENANT_MAX) {
        conn_send(c, "error: the tenant name is too long");
        return;
    }
    req.tenant = argv[1];
    if (policy_op_from_name(argv[2], &req.op) < 0) {
        conn_send(c, "error: unknown operation; one of lookup, tcp.bind, tcp.listen, "
                     "tcp.accept, tcp.connect, udp.bind, udp.connect, udp.send, udp.receive");
        return;
    }
    if (req.op == POLICY_OP_LOOKUP) {
        req.host = argv[3];
    } else {
        target = op_is_local(req.op) ? &req.local : &req.remote;
        if (policy_endpoint_parse(argv[3], target) < 0) {
            conn_send(c, "error: not an address: use 192.0.2.1, 192.0.2.1:80 or "
                         "[2001:db8::1]:80");
            return;
        }
    }
    for (int i = 4; i < argc; i++) {
        if (strncmp(argv[i], "local=", 6) == 0 && !op_is_local(req.op)) {
            if (policy_endpoint_parse(argv[i] + 6, &req.local) < 0) {
                conn_send(c, "error: local= is not an address");
                return;
            }
        } else if (strncmp(argv[i], "host=", 5) == 0 && req.op != POLICY_OP_LOOKUP) {
            req.host = argv[i] + 5;
        } else if (strcmp(argv[i], "implicit") == 0) {
            req.implicit = true;
        } else {
            conn_sendf(c, "error: unexpected word %.64s", argv[i]);
            return;
        }
    }
    if (req.host != NULL && strlen(req.host) > 253) {
        conn_send(c, "error: the host name is too long");
        return;
    }
    authz_explain(c->ctl->srv, &req, explain_step, &x, &v);
    if (x.omitted > 0) {
        conn_sendf(c, "steps-omitted count=%zu", x.omitted);
    }

    line[0] = '\0';
    ctl_append(line, sizeof(line), &len, "decision");
    ctl_append_value(line, sizeof(line), &len, "action", policy_action_name(v.action));
    ctl_append_value(line, sizeof(line), &len, "decided_by", v.decided_by);
    if (v.action != POLICY_ALLOW) {
        ctl_append_value(line, sizeof(line), &len, "error", proto_err_name(v.error));
    }
    if (v.action == POLICY_DENY && v.deny_delay_ms > 0) {
        snprintf(num, sizeof(num), " delay_ms=%lu", (unsigned long)v.deny_delay_ms);
        ctl_append(line, sizeof(line), &len, num);
    }
    if (v.action == POLICY_PROMPT) {
        snprintf(num, sizeof(num), " timeout_ms=%lu", (unsigned long)v.prompt_timeout_ms);
        ctl_append(line, sizeof(line), &len, num);
        ctl_append_value(line, sizeof(line), &len, "on_timeout",
                         policy_action_name(v.prompt_on_timeout));
        ctl_append_value(line, sizeof(line), &len, "on_no_agent",
                         policy_action_name(v.prompt_on_no_agent));
    }
    ctl_append_value(line, sizeof(line), &len, "audit", v.audit ? "yes" : "no");
    if (v.shadow_by != NULL) {
        ctl_append_value(line, sizeof(line), &len, "shadow", v.shadow_by);
        ctl_append_value(line, sizeof(line), &len, "shadow_action",
                         policy_action_name(v.shadow_action));
    }
    if (v.logged_by != NULL) {
        ctl_append_value(line, sizeof(line), &len, "logged_by", v.logged_by);
    }
    conn_send(c, line);
    conn_send(c, "ok");
}

static void cmd_agent(ctl_conn *c, int argc, char **argv) {
    char err[256];
    int r;

    if (argc > 2) {
        conn_send(c, "error: usage: agent [NAME]");
        return;
    }
    r = prompt_agent_attach(server_broker(c->ctl->srv), c->peer.uid, argc == 2 ? argv[1] : NULL,
                            agent_send, c, &c->agent, err, sizeof(err));
    if (r < 0) {
        c->agent = NULL;
        conn_sendf(c, "error: %s", err);
        return;
    }
    /* The pending prompts were sent already; "ok" ends the command. */
    conn_sendf(c, "ok agent %s", prompt_agent_name(c->agent));
}

static void cmd_help(ctl_conn *c) {
    static const char *const lines[] = {
        "help commands: status, sessions, reload, explain TENANT OP ADDRESS[:PORT] "
        "[local=ADDRESS] [host=NAME] [implicit], agent [NAME], ping, quit",
        "help agents: after \"agent\": answer ID allow|deny [once|session|tenant|DURATION], "
        "pending, ping, quit",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        conn_send(c, lines[i]);
    }
    conn_send(c, "ok");
}

static void handle_agent_command(ctl_conn *c, int argc, char **argv) {
    if (strcmp(argv[0], "answer") == 0) {
        ctl_answer ans;
        const char *why = NULL;
        if (ctl_parse_answer(argc - 1, argv + 1, &ans, &why) < 0) {
            conn_sendf(c, "error: %s", why);
            return;
        }
        prompt_agent_answer(c->agent, &ans);
    } else if (strcmp(argv[0], "pending") == 0) {
        conn_sendf(c, "ok %zu pending", prompt_agent_resend(c->agent));
    } else if (strcmp(argv[0], "ping") == 0) {
        conn_send(c, "ok");
    } else if (strcmp(argv[0], "quit") == 0) {
        conn_send(c, "ok");
        c->close_after_flush = true;
    } else {
        conn_sendf(c, "error: unknown agent command \"%.32s\": answer, pending, ping or quit",
                   argv[0]);
    }
}

static void handle_command(ctl_conn *c, int argc, char **argv) {
    const char *cmd = argv[0];

    if (strcmp(cmd, "ping") == 0) {
        conn_send(c, "ok");
    } else if (strcmp(cmd, "help") == 0) {
        cmd_help(c);
    } else if (strcmp(cmd, "quit") == 0) {
        conn_send(c, "ok");
        c->close_after_flush = true;
    } else if (strcmp(cmd, "agent") == 0) {
        cmd_agent(c, argc, argv);
    } else if (strcmp(cmd, "status") == 0) {
        if (require_admin(c, cmd)) {
            cmd_status(c);
        }
    } else if (strcmp(cmd, "sessions") == 0) {
        if (require_admin(c, cmd)) {
            cmd_sessions(c);
        }
    } else if (strcmp(cmd, "reload") == 0) {
        if (require_admin(c, cmd)) {
            cmd_reload(c);
        }
    } else if (strcmp(cmd, "explain") == 0) {
        if (require_admin(c, cmd)) {
            cmd_explain(c, argc, argv);
        }
    } else {
        conn_sendf(c, "error: unknown command \"%.32s\" (try help)", cmd);
    }
}

/* A peer that sends something other than text lines is not a person with
 * socat nor a tool of ours: it is told why and dropped. */
static void drop_garbage(ctl_conn *c, const char *what) {
    log_write_ratelimited(&control_log, LOG_LEVEL_WARN,
                          "control connection of pid %ld uid %ld sent %s; closing it",
                          (long)c->peer.pid, (long)c->peer.uid, what);
    conn_sendf(c, "error: %s; closing", what);
    c->close_after_flush = true;
    c->in_len = 0;
}

static void handle_line(ctl_conn *c, char *line, size_t len) {
    char *argv[CTL_ARGS_MAX];
    int argc;

    if (!ctl_line_is_text(line, len)) {
        drop_garbage(c, "a line that is not printable text");
        return;
    }
    line[len] = '\0';
    argc = ctl_split(line, argv, CTL_ARGS_MAX);
    if (argc < 0) {
        conn_sendf(c, "error: more than %d words", CTL_ARGS_MAX);
        return;
    }
    if (argc == 0) {
        return; /* a blank line, e.g. an extra Enter in socat */
    }
    if (c->agent != NULL) {
        handle_agent_command(c, argc, argv);
    } else {
        handle_command(c, argc, argv);
    }
}

/* Handles every whole line in the input buffer and keeps a partial one. */
static void process_input(ctl_conn *c) {
    size_t off = 0;

    while (!c->closing && !c->close_after_flush) {
        char *nl = memchr(c->in + off, '\n', c->in_len - off);
        if (nl == NULL) {
            break;
        }
        handle_line(c, c->in + off, (size_t)(nl - (c->in + off)));
        off = (size_t)(nl - c->in) + 1;
    }
    if (c->closing || c->close_after_flush) {
        c->in_len = 0;
        return;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (c->in_len > CTL_LINE_MAX) {
        drop_garbage(c, "a line longer than the protocol allows");
    }
}

static void conn_read(ctl_conn *c) {
    for (int i = 0; i < CONTROL_READS_PER_WAKEUP; i++) {
        ssize_t n;

        if (c->closing || c->close_after_flush) {
            return;
        }
        n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                conn_close(c, "read failed");
            }
            return;
        }
        if (n == 0) {
            conn_close(c, "peer closed the connection");
            return;
        }
        c->in_len += (size_t)n;
        process_input(c);
    }
}

static void on_conn_poll(uv_poll_t *h, int status, int events) {
    ctl_conn *c = h->data;

    if (status < 0) {
        conn_close(c, "poll failed");
        return;
    }
    if (events & UV_WRITABLE) {
        conn_flush(c);
    }
    if (!c->closing && (events & (UV_READABLE | UV_DISCONNECT))) {
        conn_read(c);
    }
    if (!c->closing) {
        conn_update_poll(c);
    }
}

static void conn_update_poll(ctl_conn *c) {
    int events = 0;

    if (c->closing) {
        return;
    }
    if (c->close_after_flush && c->out_tail == c->out_head) {
        conn_close(c, "final reply sent");
        return;
    }
    if (!c->close_after_flush) {
        events |= UV_READABLE;
    }
    if (c->out_tail > c->out_head) {
        events |= UV_WRITABLE;
    }
    if (events == c->poll_events) {
        return;
    }
    c->poll_events = events;
    if (events == 0) {
        uv_poll_stop(&c->poll);
    } else if (uv_poll_start(&c->poll, events, on_conn_poll) < 0) {
        conn_close(c, "cannot poll the connection");
    }
}

/* --- accepting ----------------------------------------------------------------------- */

static bool peer_is_admin(const struct ucred *peer) {
    return peer->uid == 0 || peer->uid == geteuid();
}

/* Tells a peer with no business here why, and closes. */
static void refuse_peer(int fd, const struct ucred *peer, const char *why) {
    char line[160];
    int n = snprintf(line, sizeof(line), "error: %s\n", why);

    log_write_ratelimited(&control_log, LOG_LEVEL_INFO,
                          "control socket: refused pid %ld uid %ld: %s", (long)peer->pid,
                          (long)peer->uid, why);
    if (n > 0) {
        (void)send(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1,
                   MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    /* A command the peer already sent must not turn the close into a reset
     * (Linux resets a Unix stream closed with unread data), or the peer
     * would never read why. */
    for (int i = 0; i < CONTROL_REFUSAL_DRAIN_READS; i++) {
        char sink[512];
        if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0) {
            break;
        }
    }
    close(fd);
}

static void accept_one(control *ctl, int fd) {
    struct ucred peer;
    socklen_t len = sizeof(peer);
    ctl_conn *c;
    char why[128];

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 || len != sizeof(peer)) {
        close(fd);
        return;
    }
    if (!peer_is_admin(&peer) && !policy_agent_known(server_policy(ctl->srv), (uint32_t)peer.uid)) {
        snprintf(why, sizeof(why), "uid %ld may not use the control socket", (long)peer.uid);
        refuse_peer(fd, &peer, why);
        return;
    }
    if (ctl->nconns >= CONTROL_MAX_CONNECTIONS) {
        snprintf(why, sizeof(why), "%d control connections are open already",
                 CONTROL_MAX_CONNECTIONS);
        refuse_peer(fd, &peer, why);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || uv_poll_init(ctl->loop, &c->poll, fd) < 0) {
        free(c);
        close(fd);
        return;
    }
    c->ctl = ctl;
    c->fd = fd;
    c->peer = peer;
    c->admin = peer_is_admin(&peer);
    c->poll.data = c;
    c->next = ctl->conns;
    if (ctl->conns != NULL) {
        ctl->conns->prev = c;
    }
    ctl->conns = c;
    ctl->nconns++;
    log_debug("control connection from pid %ld uid %ld (%s)", (long)peer.pid, (long)peer.uid,
              c->admin ? "admin" : "agent");
    conn_update_poll(c);
}

static void on_listen_readable(uv_poll_t *h, int status, int events) {
    control *ctl = h->data;

    (void)events;
    if (status < 0) {
        return;
    }
    for (int i = 0; i < CONTROL_ACCEPT_BATCH && !ctl->stopping; i++) {
        int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN) {
                log_write_ratelimited(&control_log, LOG_LEVEL_WARN,
                                      "control socket: accept failed: %s", strerror(errno));
            }
            return;
        }
        accept_one(ctl, fd);
    }
}

int control_start(uv_loop_t *loop, server *srv, const char *path, control_reload_fn reload,
                  void *reload_opaque, control **out) {
    control *ctl = calloc(1, sizeof(*ctl));
    int r;

    if (ctl == NULL) {
        return -ENOMEM;
    }
    ctl->loop = loop;
    ctl->srv = srv;
    ctl->reload = reload;
    ctl->reload_opaque = reload_opaque;
    ctl->started_ms = uv_now(loop);
    ctl->listen_fd = unixsock_listen(path, CONTROL_SOCKET_MODE, CONTROL_LISTEN_BACKLOG,
                                     "control socket", &ctl->file);
    if (ctl->listen_fd < 0) {
        r = ctl->listen_fd;
        free(ctl);
        return r;
    }
    r = uv_poll_init(loop, &ctl->listen_poll, ctl->listen_fd);
    if (r == 0) {
        ctl->listen_poll.data = ctl;
        ctl->listen_open = true;
        r = uv_poll_start(&ctl->listen_poll, UV_READABLE, on_listen_readable);
    }
    if (r < 0) {
        log_error("cannot watch the control socket: %s", uv_strerror(r));
        *out = ctl;
        control_stop(ctl);
        return r;
    }
    *out = ctl;
    return 0;
}

const char *control_path(const control *c) {
    return c->file.path;
}

static void on_listen_closed(uv_handle_t *h) {
    control *ctl = h->data;

    ctl->closing_handles--;
}

void control_stop(control *ctl) {
    if (ctl == NULL || ctl->stopping) {
        return;
    }
    ctl->stopping = true;
    if (ctl->listen_open) {
        ctl->listen_open = false;
        ctl->closing_handles++;
        uv_close((uv_handle_t *)&ctl->listen_poll, on_listen_closed);
    }
    if (ctl->listen_fd >= 0) {
        close(ctl->listen_fd);
        ctl->listen_fd = -1;
    }
    unixsock_unlink(&ctl->file);
    for (ctl_conn *c = ctl->conns; c != NULL; c = c->next) {
        conn_flush(c); /* last replies, if the peer takes them now */
        conn_close(c, "daemon stopping");
    }
}

void control_free(control *ctl) {
    if (ctl == NULL) {
        return;
    }
    if (ctl->conns != NULL || ctl->closing_handles != 0) {
        log_error("control socket freed with connections still open");
        abort(); /* our own bug: the loop must run their close callbacks first */
    }
    free(ctl);
}
