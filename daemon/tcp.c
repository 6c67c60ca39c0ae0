/* tcp.c — WASI TCP sockets: the state machine of both WASI shapes, policy
 * enforcement points, socket options, accept, and the hand-over of
 * connections to the splice relay.
 *
 * Trust: requests come from an untrusted client through the strict codec,
 * so fields are well-formed but their values are not trusted: handles are
 * looked up in the session's own table, addresses go through sockrules,
 * option values through their clamp/refuse rules, and the order of checks
 * follows wasi-semantics.md (bind: address then state; connect: state then
 * address). Every system call is non-blocking.
 */
#include "tcp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authz.h"
#include "errmap.h"
#include "socknew.h"
#include "sockopt.h"
#include "hostbind.h"
#include "log.h"
#include "relay.h"
#include "sockrules.h"

typedef enum tcp_state {
    /* Created; no local address. bind, connect and (0.3) listen may start. */
    TCP_UNBOUND,
    /* start-bind ran (policy and bind(2) done, result kept); finish-bind
     * reports the result: success -> bound, failure -> unbound again. */
    TCP_BIND_IN_PROGRESS,
    /* Has a local address; may listen or connect. */
    TCP_BOUND,
    /* start-listen ran (policy and listen(2) done, result kept); finish-listen
     * reports it: success -> listening, failure -> closed. */
    TCP_LISTEN_IN_PROGRESS,
    /* Accepting connections. Stays so until dropped. */
    TCP_LISTENING,
    /* start-connect ran: the kernel connect is pending (connect_pending) or
     * resolved with `result`; finish-connect reports it: success ->
     * connected, failure -> closed (a socket connects at most once). In a
     * protocol 2 session a resolved connect is announced at once
     * (connect_announced: relay running, streams pushed), and finish-connect
     * only commits the state. */
    TCP_CONNECT_IN_PROGRESS,
    /* Connected (by connect or accept); the relay moves the bytes. */
    TCP_CONNECTED,
    /* A connect or listen failed. Only getters and drop remain useful. */
    TCP_CLOSED,
} tcp_state;

/* Client stream ends, indexed by proto_direction. */
enum { STREAM_INPUT = PROTO_DIR_RECEIVE, STREAM_OUTPUT = PROTO_DIR_SEND, STREAM_COUNT = 2 };

/* Which policy question of an operation in progress is being decided. An
 * operation may need two in turn (an implicit bind, then the connect or
 * listen); each may wait for a prompt. */
typedef enum tcp_step {
    STEP_NONE,
    STEP_BIND,
    STEP_CONNECT_IMPLICIT_BIND,
    STEP_CONNECT,
    STEP_LISTEN_IMPLICIT_BIND,
    STEP_LISTEN,
} tcp_step;

struct tcp_sock;

/* A connection taken from a listener's kernel queue whose accept decision
 * is pending (a prompt), or that was allowed and waits for the guest's
 * accept. Owned by its listener. */
typedef struct held_conn {
    struct held_conn *next;
    struct tcp_sock *listener;
    int fd;                     /* the accepted socket; owned */
    authz_pending *authz;       /* NULL once allowed */
    policy_data_path data_path; /* the allowing rule's allow.data_path */
} held_conn;

typedef struct tcp_sock {
    resource res; /* first member: the session's table entry */
    int fd;       /* the kernel socket; owned until closed or given to relay_drop */
    uint8_t family;
    tcp_state state;
    proto_err result;            /* outcome of the start-* that finish-* will report */
    bool connect_pending;        /* the kernel has not finished the connect */
    bool connect_announced;      /* EV_CONNECTED sent: `result` is final */
    bool has_local;              /* the kernel socket has a local address */
    bool port_chosen_by_kernel;  /* bound to port 0 (explicitly or implicitly) */
    bool listen_started;         /* listen(2) succeeded (listen-in-progress or listening) */
    int backlog;                 /* for listen(2) */
    bool rcvbuf_set, sndbuf_set; /* set explicitly: accepted sockets inherit them */
    bool ready;                  /* readiness the client was last told */

    uv_poll_t poll;    /* connect completion (writable) or waiting connections (readable) */
    bool poll_open;    /* poll initialised and not yet closed */
    bool poll_closing; /* uv_close called, close callback not yet run */
    bool polling;
    bool destroyed; /* out of the session's table; memory waits for the poll */

    relay *relay;
    int client_fds[STREAM_COUNT]; /* stream ends not yet handed to the client, or -1 */
    bool stream_taken[STREAM_COUNT];

    bool counts_pending;  /* included in the tenant's pending_ops */
    bool counts_listener; /* included in the tenant's listeners */

    /* A policy decision that waits (a prompt, a delayed refusal) keeps the
     * operation in progress: finish-* answers would-block, readiness is
     * false. */
    authz_pending *authz;
    tcp_step step;
    proto_addr op_addr; /* bind: the address; connect: the remote; listen: the implicit bind's */
    unsigned callbacks; /* our decision callbacks running: the memory stays until they return */

    /* Listener: connections taken from the kernel, in arrival order. */
    held_conn *held;
    unsigned held_count;

    /* The name binding a connect was allowed through, pinned while the
     * socket lives (dns.keep_while_open), or NULL. */
    struct hostbind_entry *binding;
    /* Where the connection's bytes flow: the connect rule's allow.data_path.
     * Handoff passes the socket itself to the client instead of relay
     * pipes; once it is handed out, the daemon closes its copy (fd -1) and
     * keeps only the handle. */
    policy_data_path data_path;
    bool handed_off;
} tcp_sock;

static void tcp_destroy(resource *r);

static const struct resource_ops tcp_ops = {"tcp", tcp_destroy};

/* --- helpers ---------------------------------------------------------------- */

static session *sess_of(tcp_sock *t) {
    return t->res.sess;
}

static const char *state_name(tcp_state st) {
    /* One state per line reads best. */
    /* clang-format off */
    static const char *const names[] = {
        [TCP_UNBOUND] = "unbound",
        [TCP_BIND_IN_PROGRESS] = "bind-in-progress",
        [TCP_BOUND] = "bound",
        [TCP_LISTEN_IN_PROGRESS] = "listen-in-progress",
        [TCP_LISTENING] = "listening",
        [TCP_CONNECT_IN_PROGRESS] = "connect-in-progress",
        [TCP_CONNECTED] = "connected",
        [TCP_CLOSED] = "closed",
    };
    /* clang-format on */
    return names[st];
}

static void reply_invalid_state(session *s, const proto_msg *req, const tcp_sock *t) {
    session_reply_invalid_state(s, req, state_name(t->state));
}

/* Readiness is the WASI pollable: tell the client whenever it changes. */
static void set_ready(tcp_sock *t, bool ready) {
    if (t->ready == ready) {
        return;
    }
    t->ready = ready;
    session_send_ready(sess_of(t), t->res.handle, ready);
}

static void pending_op_begin(tcp_sock *t) {
    if (!t->counts_pending) {
        t->counts_pending = true;
        session_usage(sess_of(t))->pending_ops++;
    }
}

static void pending_op_end(tcp_sock *t) {
    if (t->counts_pending) {
        t->counts_pending = false;
        session_usage(sess_of(t))->pending_ops--;
    }
}

static void listener_count_end(tcp_sock *t) {
    if (t->counts_listener) {
        t->counts_listener = false;
        session_usage(sess_of(t))->listeners--;
    }
}

/* A destroyed socket's memory goes once nothing points to it any more: no
 * poll handle closing, none of our callbacks running. */
static void free_if_unused(tcp_sock *t) {
    if (t->destroyed && !t->poll_closing && t->callbacks == 0) {
        free(t);
    }
}

/* The closing poll handle keeps the session (and this socket's memory) alive
 * until libuv is done with it. */
static void on_poll_closed(uv_handle_t *h) {
    tcp_sock *t = h->data;
    session *s = sess_of(t);

    t->poll_closing = false;
    free_if_unused(t); /* destroyed meanwhile: its memory waited for us */
    session_release(s);
}

/* Stops watching the socket for good. uv_close stops the watcher at once
 * (libuv removes the descriptor from epoll synchronously), which is what
 * allows the relay to watch the same descriptor right after. */
static void poll_close(tcp_sock *t) {
    if (!t->poll_open) {
        return;
    }
    t->poll_open = false;
    t->polling = false;
    t->poll_closing = true;
    session_hold(sess_of(t));
    uv_close((uv_handle_t *)&t->poll, on_poll_closed);
}

static int poll_start(tcp_sock *t, int events, uv_poll_cb cb) {
    int r;

    if (!t->poll_open) {
        r = uv_poll_init(session_loop(sess_of(t)), &t->poll, t->fd);
        if (r < 0) {
            return r;
        }
        t->poll.data = t;
        t->poll_open = true;
    }
    r = uv_poll_start(&t->poll, events, cb);
    if (r < 0) {
        return r;
    }
    t->polling = true;
    return 0;
}

static void poll_stop(tcp_sock *t) {
    if (t->poll_open && t->polling) {
        uv_poll_stop(&t->poll);
        t->polling = false;
    }
}

/* True when a connection waits on the listening socket (no blocking). */
static bool connection_waiting(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static int local_address(const tcp_sock *t, proto_addr *out) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(t->fd, (struct sockaddr *)&ss, &len) < 0) {
        return -errno;
    }
    return sockrules_addr_from_sockaddr((struct sockaddr *)&ss, len, out);
}

/* bind(2) with SO_REUSEADDR, which every TCP bind sets so a recent
 * TIME_WAIT on the port never blocks a rebind. Returns a WASI result. */
static proto_err do_bind(tcp_sock *t, const proto_addr *addr) {
    struct sockaddr_storage ss;
    socklen_t len;
    int r;

    r = sockrules_addr_to_sockaddr(addr, &ss, &len);
    if (r == 0) {
        r = sockopt_set_int(t->fd, SOL_SOCKET, SO_REUSEADDR, 1);
    }
    if (r == 0 && bind(t->fd, (struct sockaddr *)&ss, len) < 0) {
        r = -errno;
    }
    if (r < 0) {
        return errmap_errno(r, ERRMAP_ADDRESS_GIVEN | errmap_wasi_flags(session_wasi(sess_of(t))));
    }
    t->has_local = true;
    t->port_chosen_by_kernel = addr->port == 0;
    return PROTO_OK;
}

/* --- lifetime ----------------------------------------------------------------- */

static tcp_sock *tcp_sock_new(int fd, uint8_t family) {
    tcp_sock *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        return NULL;
    }
    t->fd = fd;
    t->family = family;
    t->state = TCP_UNBOUND;
    t->backlog = SOCKRULES_BACKLOG_DEFAULT;
    t->ready = true; /* a new socket starts ready (no event) */
    t->client_fds[STREAM_INPUT] = -1;
    t->client_fds[STREAM_OUTPUT] = -1;
    return t;
}

static void close_with_reset(int fd);

/* Releases everything: a pending decision (its prompt is withdrawn),
 * connections held for accept, counters, poll, relay (which lingers to
 * deliver the bytes already written, then closes the socket), the kernel
 * socket, and stream ends never handed out. */
static void tcp_destroy(resource *r) {
    tcp_sock *t = (tcp_sock *)r;
    session *s = sess_of(t);

    if (t->authz != NULL) {
        authz_cancel(t->authz);
        t->authz = NULL;
    }
    if (t->binding != NULL) {
        hostbind_unpin(t->binding);
        t->binding = NULL;
    }
    while (t->held != NULL) {
        held_conn *h = t->held;
        t->held = h->next;
        authz_cancel(h->authz);
        close_with_reset(h->fd);
        free(h);
    }
    t->held_count = 0;
    pending_op_end(t);
    listener_count_end(t);
    session_usage(s)->sockets--;
    poll_close(t);
    if (t->relay != NULL) {
        relay_drop(t->relay); /* takes the socket */
        t->relay = NULL;
    } else if (t->fd >= 0) {
        close(t->fd);
    }
    t->fd = -1;
    for (int i = 0; i < STREAM_COUNT; i++) {
        if (t->client_fds[i] >= 0) {
            close(t->client_fds[i]);
            t->client_fds[i] = -1;
        }
    }
    /* A pending poll close or a running callback still points at this
     * memory: whichever ends last frees it. */
    t->destroyed = true;
    free_if_unused(t);
}

/* The relay reports how each direction ended; an error reaches the client
 * as EV_STREAM_ERROR, written at once so it arrives before the client can
 * read EOF from the input stream. */
static void on_relay_end(void *data, bool download, int err) {
    tcp_sock *t = data;
    session *s = sess_of(t);
    proto_msg ev;

    if (err == 0 || session_is_closing(s)) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.type = PROTO_EV_STREAM_ERROR;
    ev.handle = t->res.handle;
    ev.direction = download ? PROTO_DIR_RECEIVE : PROTO_DIR_SEND;
    ev.code = errmap_errno(err, 0);
    if (ev.code == PROTO_OK || ev.code > PROTO_E_LAST_WASI) {
        ev.code = PROTO_E_UNKNOWN;
    }
    log_debug("session %llu handle %u: %s stream ended: %s", (unsigned long long)session_id(s),
              (unsigned)t->res.handle, download ? "receive" : "send", strerror(-err));
    session_send_event(s, &ev);
    session_flush(s);
}

/* --- handoff ------------------------------------------------------------------ */

/* The connection goes to the client as the socket itself (allow.data_path
 * handoff): no relay. A 0.3 session takes each direction with TCP_STREAM,
 * so two duplicates wait in client_fds; the daemon keeps its own socket
 * until both are taken (it answers options and addresses until then).
 * Returns a WASI result. */
static proto_err handoff_prepare(tcp_sock *t) {
    session *s = sess_of(t);

    poll_close(t);
    if (session_wasi(s) == PROTO_WASI_0_2) {
        return PROTO_OK; /* the reply carries the socket itself */
    }
    for (int i = 0; i < STREAM_COUNT; i++) {
        t->client_fds[i] = fcntl(t->fd, F_DUPFD_CLOEXEC, 0);
        if (t->client_fds[i] < 0) {
            int err = errno;
            for (int j = 0; j < i; j++) {
                close(t->client_fds[j]);
                t->client_fds[j] = -1;
            }
            return errmap_errno(err, errmap_wasi_flags(session_wasi(s)));
        }
    }
    return PROTO_OK;
}

/* The daemon no longer holds the socket: it was handed out. */
static void handoff_forget_socket(tcp_sock *t) {
    if (t->fd >= 0) {
        close(t->fd);
    }
    t->fd = -1;
    t->handed_off = true;
    log_debug("session %llu handle %u: socket handed off to the client",
              (unsigned long long)session_id(sess_of(t)), (unsigned)t->res.handle);
}

/* 0.2 finish-connect reply of a handoff: one descriptor, the socket, for
 * both streams. session_send owns it from here (closed once sent). */
static void handoff_reply_0_2(session *s, tcp_sock *t, proto_msg *reply) {
    int fd = t->fd;

    t->fd = -1;
    handoff_forget_socket(t);
    t->stream_taken[STREAM_INPUT] = t->stream_taken[STREAM_OUTPUT] = true;
    reply->nfds = 1;
    session_send(s, reply, &fd);
}

/* 0.3: after TCP_STREAM handed out the last duplicate, forget the socket. */
static void handoff_forget_when_taken(tcp_sock *t) {
    if (t->data_path == POLICY_DATA_HANDOFF && !t->handed_off && t->stream_taken[STREAM_INPUT] &&
        t->stream_taken[STREAM_OUTPUT]) {
        handoff_forget_socket(t);
    }
}

/* Requests that need the socket cannot be served once it was handed off:
 * the client holds it and answers them itself (libwasock does). Replies
 * and returns true in that case. */
static bool reply_if_handed_off(session *s, const proto_msg *req, const tcp_sock *t) {
    if (!t->handed_off) {
        return false;
    }
    session_reply_error(s, req, PROTO_E_NOT_SUPPORTED,
                        "the socket was handed off to the client: ask the socket");
    return true;
}

/* WASI shutdown of a handoff connection whose socket the daemon still
 * holds (0.3, streams not all taken): on the socket itself. */
static void handoff_shutdown(tcp_sock *t, uint8_t how) {
    (void)shutdown(t->fd, how == PROTO_SHUT_RECEIVE ? SHUT_RD
                          : how == PROTO_SHUT_SEND  ? SHUT_WR
                                                    : SHUT_RDWR);
}

/* A connection is established: start the relay. The socket must not be
 * polled by us any more. Returns a WASI result. */
static proto_err start_relay(tcp_sock *t) {
    session *s = sess_of(t);
    int input = -1, output = -1;
    int r;

    if (t->data_path == POLICY_DATA_HANDOFF) {
        return handoff_prepare(t);
    }
    poll_close(t);
    r = relay_new(session_loop(s), t->fd,
                  session_protocol_version(s) >= 3 ? RELAY_OUTPUT_SOCKET : RELAY_OUTPUT_PIPE,
                  on_relay_end, t, &t->relay, &input, &output);
    if (r < 0) {
        t->relay = NULL;
        log_debug("session %llu handle %u: cannot start the relay: %s",
                  (unsigned long long)session_id(s), (unsigned)t->res.handle, strerror(-r));
        return errmap_errno(r, errmap_wasi_flags(session_wasi(s)));
    }
    t->client_fds[STREAM_INPUT] = input;
    t->client_fds[STREAM_OUTPUT] = output;
    return PROTO_OK;
}

/* Replies to finish-connect or accept: in a 0.2 session the reply carries
 * the input and output stream descriptors; a 0.3 session takes them later
 * with TCP_STREAM. */
static void reply_with_streams(session *s, tcp_sock *t, proto_msg *reply) {
    if (session_wasi(s) == PROTO_WASI_0_2 && t->data_path == POLICY_DATA_HANDOFF) {
        handoff_reply_0_2(s, t, reply);
    } else if (session_wasi(s) == PROTO_WASI_0_2 && t->client_fds[STREAM_INPUT] < 0) {
        reply->nfds = 0; /* EV_CONNECTED carried them (protocol 2) */
        session_send(s, reply, NULL);
    } else if (session_wasi(s) == PROTO_WASI_0_2) {
        int fds[2] = {t->client_fds[STREAM_INPUT], t->client_fds[STREAM_OUTPUT]};
        t->client_fds[STREAM_INPUT] = t->client_fds[STREAM_OUTPUT] = -1;
        t->stream_taken[STREAM_INPUT] = t->stream_taken[STREAM_OUTPUT] = true;
        reply->nfds = 2;
        session_send(s, reply, fds);
    } else {
        reply->nfds = 0;
        session_send(s, reply, NULL);
    }
}

static tcp_sock *find_sock(session *s, const proto_msg *req) {
    resource *r = session_find_resource(s, req->handle, &tcp_ops);

    if (r == NULL) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "no such handle");
    }
    return (tcp_sock *)r;
}

/* --- create -------------------------------------------------------------------- */

static void handle_create(session *s, const proto_msg *req) {
    tenant_usage *usage = session_usage(s);
    tcp_sock *t;
    proto_msg reply;
    int fd, r;

    fd = socknew_open(s, req, POLICY_PROTO_TCP);
    if (fd < 0) {
        return;
    }
    t = tcp_sock_new(fd, req->family);
    if (t == NULL) {
        close(fd);
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    r = session_add_resource(s, &t->res, &tcp_ops);
    if (r < 0) {
        close(fd);
        free(t);
        session_reply_error(s, req, r == -ENOSPC ? PROTO_E_NEW_SOCKET_LIMIT : PROTO_E_OUT_OF_MEMORY,
                            "no handle available");
        return;
    }
    usage->sockets++;
    proto_reply_ok(req, &reply);
    reply.new_handle = t->res.handle;
    session_send(s, &reply, NULL);
}

/* start-bind/-connect/-listen is resolved (finish-* would not say
 * would-block) when no policy decision and no kernel connect is pending. */
static bool op_resolved(const tcp_sock *t) {
    return t->authz == NULL && !t->connect_pending;
}

/* --- connect outcome, pushed (protocol 2) ----------------------------------------- */

/* Once a connect has resolved, a protocol 2 session is told at once with
 * EV_CONNECTED, which saves the client the finish-connect round trip: the
 * daemon does now what finish-connect would do (the relay or handoff
 * set-up, so the outcome it reports is final) and, in a 0.2 session with a
 * relay, sends the two stream descriptors with the event. Readiness turns
 * 1 with the event (no EV_READY). The socket stays connect-in-progress, so
 * every request answers as WASI says until TCP_FINISH commits the state. A
 * 0.2 handoff still passes the socket in the TCP_FINISH reply: handing it
 * out earlier would let option requests already on their way find the
 * daemon without its copy. */
static void connect_announce_if_resolved(tcp_sock *t) {
    session *s = sess_of(t);
    proto_msg ev;

    if (session_protocol_version(s) < 2 || t->state != TCP_CONNECT_IN_PROGRESS ||
        t->connect_announced || !op_resolved(t)) {
        return;
    }
    t->connect_announced = true;
    if (t->result == PROTO_OK) {
        t->result = start_relay(t);
    }
    if (t->result != PROTO_OK) {
        poll_close(t);
    }
    t->ready = true;
    memset(&ev, 0, sizeof(ev));
    ev.type = PROTO_EV_CONNECTED;
    ev.handle = t->res.handle;
    ev.result = t->result;
    if (t->result == PROTO_OK && session_wasi(s) == PROTO_WASI_0_2 &&
        t->data_path != POLICY_DATA_HANDOFF) {
        int fds[2] = {t->client_fds[STREAM_INPUT], t->client_fds[STREAM_OUTPUT]};
        t->client_fds[STREAM_INPUT] = t->client_fds[STREAM_OUTPUT] = -1;
        t->stream_taken[STREAM_INPUT] = t->stream_taken[STREAM_OUTPUT] = true;
        ev.nfds = 2;
        session_send(s, &ev, fds);
        return;
    }
    session_send_event(s, &ev);
}

/* --- decisions ------------------------------------------------------------------ */

static void step_decided(tcp_sock *t, tcp_step step, proto_err result);

static void on_step_decided(void *cookie, proto_err result) {
    tcp_sock *t = cookie;
    session *s = sess_of(t);

    t->authz = NULL;
    /* Continuing may send events, which may close the session (output
     * cap) and destroy this socket: its memory and the session stay until
     * this callback is done. */
    t->callbacks++;
    session_hold(s);
    step_decided(t, t->step, result);
    if (!t->destroyed) {
        connect_announce_if_resolved(t);
    }
    if (!t->destroyed) {
        set_ready(t, op_resolved(t));
    }
    t->callbacks--;
    if (t->destroyed) {
        free_if_unused(t);
    } else {
        session_flush(s);
    }
    session_release(s);
}

/* Asks the policy about `step`. The answer continues the operation now
 * (step_decided), or later when it has to wait (a prompt, a delay). */
static void ask(tcp_sock *t, tcp_step step, const authz_query *q) {
    proto_err result = PROTO_OK;
    authz_pending *pending = NULL;

    t->step = step;
    if (authz_begin(sess_of(t), q, on_step_decided, t, &result, &pending) == AUTHZ_PENDING) {
        t->authz = pending;
        return;
    }
    step_decided(t, step, result);
}

/* --- bind ------------------------------------------------------------------------ */

static void handle_bind(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    const char *why;
    authz_query q;

    if (t == NULL) {
        return;
    }
    /* bind checks the address first, then the state. */
    if (sockrules_check_local(t->family, &req->addr, &why) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (t->state != TCP_UNBOUND) {
        reply_invalid_state(s, req, t);
        return;
    }
    /* The result (policy or kernel) is finish-bind's to report. */
    t->state = TCP_BIND_IN_PROGRESS;
    t->op_addr = req->addr;
    t->result = PROTO_OK;
    memset(&q, 0, sizeof(q));
    q.op = POLICY_OP_TCP_BIND;
    q.local = &t->op_addr;
    q.handle = t->res.handle;
    ask(t, STEP_BIND, &q);
    set_ready(t, op_resolved(t)); /* events before the reply */
    session_reply_ok(s, req);
}

/* --- connect ---------------------------------------------------------------------- */

static void on_connect_done(uv_poll_t *h, int status, int events) {
    tcp_sock *t = h->data;
    session *s = sess_of(t);
    int err = 0;

    (void)events;
    /* libuv reports POLLERR as status UV_EBADF; the socket's own error is
     * the real answer (ECONNREFUSED, ETIMEDOUT, ...). */
    if (sockopt_get_int(t->fd, SOL_SOCKET, SO_ERROR, &err) < 0) {
        err = errno;
    } else if (err == 0 && status < 0) {
        err = status; /* libuv errors are negative errno values */
    }
    if (err == EINPROGRESS || err == -EINPROGRESS) {
        return; /* spurious wakeup: still connecting */
    }
    poll_close(t);
    t->connect_pending = false;
    pending_op_end(t);
    t->result = errmap_errno(err, ERRMAP_ADDRESS_GIVEN | errmap_wasi_flags(session_wasi(s)));
    log_debug("session %llu handle %u: connect finished: %s", (unsigned long long)session_id(s),
              (unsigned)t->res.handle, proto_err_name(t->result));
    connect_announce_if_resolved(t);
    set_ready(t, true);
    session_flush(s);
}

/* A connect to this host is usually complete by the time connect(2)
 * returns EINPROGRESS (loopback delivers the handshake on the spot). One
 * zero-timeout poll says so, and saves a poll handle, a loop turn and the
 * two readiness events of a pending connect. Returns true with t->result
 * set when the connect has resolved; false (errno left EINPROGRESS) when
 * it is still pending. */
static bool connect_resolved_now(tcp_sock *t) {
    struct pollfd p = {.fd = t->fd, .events = POLLOUT};
    int err = 0;

    if (poll(&p, 1, 0) <= 0 || (p.revents & (POLLOUT | POLLERR)) == 0 ||
        sockopt_get_int(t->fd, SOL_SOCKET, SO_ERROR, &err) < 0 || err == EINPROGRESS) {
        errno = EINPROGRESS;
        return false;
    }
    t->result =
        errmap_errno(err, ERRMAP_ADDRESS_GIVEN | errmap_wasi_flags(session_wasi(sess_of(t))));
    return true;
}

/* The policy allowed the connect: the non-blocking connect(2). */
static void start_kernel_connect(tcp_sock *t) {
    session *s = sess_of(t);
    struct sockaddr_storage ss;
    socklen_t len;

    sockrules_addr_to_sockaddr(&t->op_addr, &ss, &len);
    t->has_local = true; /* the kernel binds now if we had not */
    if (connect(t->fd, (struct sockaddr *)&ss, len) == 0) {
        t->result = PROTO_OK; /* resolved at once */
    } else if (errno == EINPROGRESS && connect_resolved_now(t)) {
        /* resolved before we could watch it */
    } else if (errno == EINPROGRESS) {
        int r = poll_start(t, UV_WRITABLE, on_connect_done);
        if (r < 0) {
            t->result = errmap_errno(r, errmap_wasi_flags(session_wasi(s)));
        } else {
            t->connect_pending = true;
            pending_op_begin(t);
        }
    } else {
        t->result = errmap_errno(errno, ERRMAP_ADDRESS_GIVEN | errmap_wasi_flags(session_wasi(s)));
    }
}

static void ask_connect(tcp_sock *t) {
    struct hostbind_entry *binding = NULL;
    proto_addr local;
    authz_query q;

    memset(&q, 0, sizeof(q));
    q.handle = t->res.handle;
    q.op = POLICY_OP_TCP_CONNECT;
    q.local = t->has_local && local_address(t, &local) == 0 ? &local : NULL;
    q.remote = &t->op_addr;
    q.binding = &binding; /* set when allowed at once through a name binding */
    q.data_path = &t->data_path;
    ask(t, STEP_CONNECT, &q);
    if (binding != NULL && !t->destroyed && t->binding == NULL) {
        hostbind_pin(binding);
        t->binding = binding;
    }
}

static void handle_connect(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    policy_limits limits;
    proto_addr unspecified;
    authz_query q;
    const char *why;

    if (t == NULL) {
        return;
    }
    /* connect checks the state first, then the address. */
    switch (t->state) {
    case TCP_UNBOUND:
    case TCP_BOUND:
        break;
    case TCP_CONNECT_IN_PROGRESS:
        if (session_wasi(s) == PROTO_WASI_0_2) {
            session_reply_error(s, req, PROTO_E_CONCURRENCY_CONFLICT,
                                "a connect is already in progress");
        } else {
            reply_invalid_state(s, req, t);
        }
        return;
    default:
        reply_invalid_state(s, req, t);
        return;
    }
    if (sockrules_check_remote(t->family, &req->addr, &why) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "%s", why);
        return;
    }
    limits = policy_tenant_limits(server_policy(session_server(s)), session_tenant(s));
    if (limits.pending_ops != 0 && session_usage(s)->pending_ops >= limits.pending_ops) {
        /* WASI has no "too many pending operations" code; out-of-memory is
         * the nearest meaning (the daemon refuses to hold more state). */
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY,
                            "tenant \"%s\" has reached its limit of %u pending operations",
                            session_tenant(s), (unsigned)limits.pending_ops);
        return;
    }

    t->state = TCP_CONNECT_IN_PROGRESS;
    t->connect_pending = false;
    t->connect_announced = false;
    t->result = PROTO_OK;
    t->op_addr = req->addr;
    if (!t->has_local) {
        /* The kernel binds an ephemeral port at connect: the policy sees it
         * as a bind of the unspecified address, port 0. */
        sockrules_addr_unspecified(t->family, &unspecified);
        memset(&q, 0, sizeof(q));
        q.handle = t->res.handle;
        q.op = POLICY_OP_TCP_BIND;
        q.implicit = true;
        q.local = &unspecified;
        ask(t, STEP_CONNECT_IMPLICIT_BIND, &q);
    } else {
        ask_connect(t);
    }
    /* A refusal is reported by finish-connect (and EV_CONNECTED); events
     * before the reply. */
    connect_announce_if_resolved(t);
    set_ready(t, op_resolved(t));
    session_reply_ok(s, req);
}

/* --- listen ----------------------------------------------------------------------- */

static void ask_listen(tcp_sock *t) {
    proto_addr local;
    authz_query q;

    memset(&q, 0, sizeof(q));
    q.handle = t->res.handle;
    q.op = POLICY_OP_TCP_LISTEN;
    q.local = local_address(t, &local) == 0 ? &local : NULL;
    q.local_port_ephemeral = t->port_chosen_by_kernel;
    ask(t, STEP_LISTEN, &q);
}

static void handle_listen(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    policy_limits limits;
    authz_query q;

    if (t == NULL) {
        return;
    }
    /* 0.2 listens only on a bound socket; 0.3 binds an unbound one. */
    if (session_wasi(s) == PROTO_WASI_0_2) {
        if (t->state != TCP_BOUND) {
            reply_invalid_state(s, req, t);
            return;
        }
    } else if (t->state != TCP_UNBOUND && t->state != TCP_BOUND) {
        reply_invalid_state(s, req, t);
        return;
    }
    limits = policy_tenant_limits(server_policy(session_server(s)), session_tenant(s));
    if (limits.listeners != 0 && session_usage(s)->listeners >= limits.listeners) {
        session_reply_error(s, req, PROTO_E_NEW_SOCKET_LIMIT,
                            "tenant \"%s\" has reached its limit of %u listeners",
                            session_tenant(s), (unsigned)limits.listeners);
        return;
    }

    t->counts_listener = true;
    session_usage(s)->listeners++;
    t->result = PROTO_OK;
    if (t->state == TCP_UNBOUND) {
        t->state = TCP_LISTEN_IN_PROGRESS;
        sockrules_addr_unspecified(t->family, &t->op_addr);
        memset(&q, 0, sizeof(q));
        q.handle = t->res.handle;
        q.op = POLICY_OP_TCP_BIND;
        q.implicit = true;
        q.local = &t->op_addr;
        ask(t, STEP_LISTEN_IMPLICIT_BIND, &q);
    } else {
        t->state = TCP_LISTEN_IN_PROGRESS;
        ask_listen(t);
    }
    /* finish-listen reports the result; events before the reply. */
    set_ready(t, op_resolved(t));
    session_reply_ok(s, req);
}

/* Continues the operation in progress once the policy decided `step`. */
static void step_decided(tcp_sock *t, tcp_step step, proto_err result) {
    t->step = STEP_NONE;
    if (result != PROTO_OK) {
        t->result = result;
        return;
    }
    switch (step) {
    case STEP_BIND:
        t->result = do_bind(t, &t->op_addr);
        return;
    case STEP_CONNECT_IMPLICIT_BIND:
        ask_connect(t);
        return;
    case STEP_CONNECT:
        start_kernel_connect(t);
        return;
    case STEP_LISTEN_IMPLICIT_BIND:
        t->result = do_bind(t, &t->op_addr);
        if (t->result == PROTO_OK) {
            ask_listen(t);
        }
        return;
    case STEP_LISTEN:
        if (listen(t->fd, t->backlog) < 0) {
            t->result = errmap_errno(errno, errmap_wasi_flags(session_wasi(sess_of(t))));
        } else {
            t->listen_started = true;
        }
        return;
    case STEP_NONE:
        return;
    }
}

/* A listener is ready exactly while a connection can be taken at once: one
 * the policy allowed is held, or (with room to hold more) one waits in the
 * kernel. When not, watch the socket until one arrives. */
static void on_listener_readable(uv_poll_t *h, int status, int events);

static bool held_allowed_waiting(const tcp_sock *l) {
    for (const held_conn *h = l->held; h != NULL; h = h->next) {
        if (h->authz == NULL) {
            return true;
        }
    }
    return false;
}

static void listener_refresh_readiness(tcp_sock *t) {
    bool room = t->held_count < TCP_ACCEPT_HELD_MAX;

    if (held_allowed_waiting(t) || (room && connection_waiting(t->fd))) {
        poll_stop(t);
        set_ready(t, true);
        return;
    }
    set_ready(t, false);
    if (!room) {
        /* Full of connections waiting for a prompt: their decisions
         * refresh the readiness. */
        poll_stop(t);
        return;
    }
    if (!t->polling && poll_start(t, UV_READABLE, on_listener_readable) < 0) {
        /* Without a watcher the client would wait forever: say ready and
         * let accept find out. */
        set_ready(t, true);
    }
}

static void on_listener_readable(uv_poll_t *h, int status, int events) {
    tcp_sock *t = h->data;

    (void)status;
    (void)events;
    /* On a poll error accept reports the problem, so become ready too. */
    poll_stop(t);
    set_ready(t, true);
    session_flush(sess_of(t));
}

/* --- finish ------------------------------------------------------------------------ */

static void finish_bind(session *s, const proto_msg *req, tcp_sock *t) {
    if (t->state != TCP_BIND_IN_PROGRESS) {
        session_reply_error(s, req, PROTO_E_NOT_IN_PROGRESS, "no bind in progress");
        return;
    }
    if (t->authz != NULL) {
        session_reply_error(s, req, PROTO_E_WOULD_BLOCK, "waiting for a permission decision");
        return;
    }
    if (t->result != PROTO_OK) {
        t->state = TCP_UNBOUND;
        session_reply_error(s, req, t->result, "bind failed");
        return;
    }
    t->state = TCP_BOUND;
    session_reply_ok(s, req);
}

static void finish_connect(session *s, const proto_msg *req, tcp_sock *t) {
    proto_msg reply;
    proto_err err;

    if (t->state != TCP_CONNECT_IN_PROGRESS) {
        session_reply_error(s, req, PROTO_E_NOT_IN_PROGRESS, "no connect in progress");
        return;
    }
    if (t->authz != NULL) {
        session_reply_error(s, req, PROTO_E_WOULD_BLOCK, "waiting for a permission decision");
        return;
    }
    if (t->connect_pending) {
        session_reply_error(s, req, PROTO_E_WOULD_BLOCK, "connect still in progress");
        return;
    }
    err = t->result;
    if (err == PROTO_OK && !t->connect_announced) {
        err = start_relay(t);
    }
    if (err != PROTO_OK) {
        t->state = TCP_CLOSED;
        poll_close(t);
        session_reply_error(s, req, err, "connect failed");
        return;
    }
    t->state = TCP_CONNECTED;
    proto_reply_ok(req, &reply);
    reply_with_streams(s, t, &reply);
}

static void finish_listen(session *s, const proto_msg *req, tcp_sock *t) {
    if (t->state != TCP_LISTEN_IN_PROGRESS) {
        session_reply_error(s, req, PROTO_E_NOT_IN_PROGRESS, "no listen in progress");
        return;
    }
    if (t->authz != NULL) {
        session_reply_error(s, req, PROTO_E_WOULD_BLOCK, "waiting for a permission decision");
        return;
    }
    if (t->result != PROTO_OK) {
        t->state = TCP_CLOSED;
        listener_count_end(t);
        session_reply_error(s, req, t->result, "listen failed");
        return;
    }
    t->state = TCP_LISTENING;
    listener_refresh_readiness(t); /* events before the reply */
    session_reply_ok(s, req);
}

static void handle_finish(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);

    if (t == NULL) {
        return;
    }
    switch (req->op) {
    case PROTO_OP_BIND:
        finish_bind(s, req, t);
        return;
    case PROTO_OP_CONNECT:
        finish_connect(s, req, t);
        return;
    case PROTO_OP_LISTEN:
        finish_listen(s, req, t);
        return;
    }
    session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "unknown operation");
}

/* --- accept ---------------------------------------------------------------------- */

/* Linux reports some failures of an already-failed incoming connection from
 * accept itself; the listener is fine, so they are skipped. */
static bool accept_error_is_transient(int err) {
    switch (err) {
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EINTR:
        return true;
    }
    return false;
}

/* Closes with a reset rather than an orderly close: the peer learns at once
 * that it was not accepted. */
static void close_with_reset(int fd) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* A connection the policy refused: reset (the default), or closed like any
 * other when the operator chose `errors.inbound: drop`. */
static void close_refused(session *s, int fd) {
    const policy_settings *settings = policy_get_settings(server_policy(session_server(s)));

    if (settings != NULL && settings->inbound == POLICY_INBOUND_DROP) {
        close(fd);
    } else {
        close_with_reset(fd);
    }
}

/* Accepted sockets get the listener's option values as they are now.
 * Linux mostly inherits them itself; setting them explicitly makes the
 * WASI promise independent of that. Buffer sizes are copied only when set
 * on the listener: setting one pins it and turns off the kernel's
 * autotuning, which a socket that never asked for a size should keep. */
static void inherit_options(const tcp_sock *listener, tcp_sock *conn) {
    static const struct {
        int level, name;
    } keepalive_opts[] = {
        {SOL_SOCKET, SO_KEEPALIVE},
        {IPPROTO_TCP, TCP_KEEPIDLE},
        {IPPROTO_TCP, TCP_KEEPINTVL},
        {IPPROTO_TCP, TCP_KEEPCNT},
    };
    int v;

    for (size_t i = 0; i < sizeof(keepalive_opts) / sizeof(keepalive_opts[0]); i++) {
        if (sockopt_get_int(listener->fd, keepalive_opts[i].level, keepalive_opts[i].name, &v) ==
            0) {
            sockopt_set_int(conn->fd, keepalive_opts[i].level, keepalive_opts[i].name, v);
        }
    }
    if (sockopt_get_int(listener->fd, sockopt_hop_limit_level(listener->family),
                        sockopt_hop_limit_name(listener->family), &v) == 0) {
        sockopt_set_int(conn->fd, sockopt_hop_limit_level(conn->family),
                        sockopt_hop_limit_name(conn->family), v);
    }
    if (listener->rcvbuf_set && sockopt_get_int(listener->fd, SOL_SOCKET, SO_RCVBUF, &v) == 0) {
        sockopt_set_int(conn->fd, SOL_SOCKET, SO_RCVBUF, v / 2);
        conn->rcvbuf_set = true;
    }
    if (listener->sndbuf_set && sockopt_get_int(listener->fd, SOL_SOCKET, SO_SNDBUF, &v) == 0) {
        sockopt_set_int(conn->fd, SOL_SOCKET, SO_SNDBUF, v / 2);
        conn->sndbuf_set = true;
    }
}

/* Takes the first held connection the policy allowed: its descriptor, or
 * -1 when none. */
static int take_allowed(tcp_sock *l, policy_data_path *data_path) {
    for (held_conn **link = &l->held; *link != NULL; link = &(*link)->next) {
        held_conn *h = *link;
        if (h->authz == NULL) {
            int fd = h->fd;
            *data_path = h->data_path;
            *link = h->next;
            l->held_count--;
            free(h);
            return fd;
        }
    }
    return -1;
}

static void held_append(tcp_sock *l, held_conn *h) {
    held_conn **link = &l->held;

    while (*link != NULL) {
        link = &(*link)->next;
    }
    h->next = NULL;
    *link = h;
    l->held_count++;
}

static void held_remove(tcp_sock *l, held_conn *h) {
    for (held_conn **link = &l->held; *link != NULL; link = &(*link)->next) {
        if (*link == h) {
            *link = h->next;
            l->held_count--;
            return;
        }
    }
}

/* The decision about a held connection: allowed, it waits for the guest's
 * accept (the listener becomes ready); refused, it is reset or dropped. */
static void on_accept_decided(void *cookie, proto_err result) {
    held_conn *h = cookie;
    tcp_sock *l = h->listener;
    session *s = sess_of(l);

    h->authz = NULL;
    if (result != PROTO_OK) {
        held_remove(l, h);
        close_refused(s, h->fd);
        free(h);
    }
    l->callbacks++;
    session_hold(s);
    listener_refresh_readiness(l);
    l->callbacks--;
    if (l->destroyed) {
        free_if_unused(l);
    } else {
        session_flush(s);
    }
    session_release(s);
}

/* Takes the next connection the policy allows: a held one it allowed
 * earlier, else from the kernel. A connection whose decision has to wait
 * (a prompt) is held, and the next one is tried. Returns its descriptor
 * and *data_path (the allowing rule's), or -1 with *err
 * (PROTO_E_WOULD_BLOCK when none can be taken now). */
static int accept_allowed(session *s, tcp_sock *listener, policy_data_path *data_path,
                          proto_err *err) {
    proto_addr local;
    bool have_local = local_address(listener, &local) == 0;
    int fd = take_allowed(listener, data_path);

    if (fd >= 0) {
        return fd;
    }
    for (int attempt = 0; attempt < TCP_ACCEPT_ATTEMPTS; attempt++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        proto_addr peer;
        authz_query q;
        authz_pending *pending = NULL;
        proto_err verdict = PROTO_OK;
        held_conn *h;

        if (listener->held_count >= TCP_ACCEPT_HELD_MAX) {
            break; /* the rest stays in the kernel's queue */
        }
        fd = accept4(listener->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN) {
                *err = PROTO_E_WOULD_BLOCK;
                return -1;
            }
            if (accept_error_is_transient(e)) {
                continue;
            }
            *err = errmap_errno(e, errmap_wasi_flags(session_wasi(s)));
            return -1;
        }
        if (sockrules_addr_from_sockaddr((struct sockaddr *)&ss, len, &peer) < 0) {
            close_with_reset(fd);
            continue;
        }
        h = calloc(1, sizeof(*h));
        if (h == NULL) {
            close_with_reset(fd);
            *err = PROTO_E_OUT_OF_MEMORY;
            return -1;
        }
        h->listener = listener;
        h->fd = fd;
        /* The policy sees the listener's address as local, the peer as
         * remote. */
        memset(&q, 0, sizeof(q));
        q.op = POLICY_OP_TCP_ACCEPT;
        q.local = have_local ? &local : NULL;
        q.local_port_ephemeral = listener->port_chosen_by_kernel;
        q.remote = &peer;
        q.handle = listener->res.handle;
        h->data_path = POLICY_DATA_RELAY;
        q.data_path = &h->data_path; /* h lives until the decision */
        if (authz_begin(s, &q, on_accept_decided, h, &verdict, &pending) == AUTHZ_PENDING) {
            h->authz = pending;
            held_append(listener, h);
            continue;
        }
        *data_path = h->data_path;
        free(h);
        if (verdict != PROTO_OK) {
            close_refused(s, fd);
            continue;
        }
        return fd;
    }
    /* Attempts used up on refused, held or failed connections; more may
     * wait. */
    *err = PROTO_E_WOULD_BLOCK;
    return -1;
}

static void handle_accept(session *s, const proto_msg *req) {
    tcp_sock *l = find_sock(s, req), *c;
    const char *tenant = session_tenant(s);
    policy_limits limits;
    proto_msg reply;
    proto_err err = PROTO_E_UNKNOWN;
    policy_data_path data_path = POLICY_DATA_RELAY;
    int fd, r;

    if (l == NULL) {
        return;
    }
    if (l->state != TCP_LISTENING) {
        reply_invalid_state(s, req, l);
        return;
    }
    limits = policy_tenant_limits(server_policy(session_server(s)), tenant);
    if (limits.sockets != 0 && session_usage(s)->sockets >= limits.sockets) {
        session_reply_error(s, req, PROTO_E_NEW_SOCKET_LIMIT,
                            "tenant \"%s\" has reached its limit of %u sockets", tenant,
                            (unsigned)limits.sockets);
        return;
    }
    if (session_resource_count(s) >= SESSION_MAX_RESOURCES) {
        session_reply_error(s, req, PROTO_E_NEW_SOCKET_LIMIT, "this connection holds %d resources",
                            SESSION_MAX_RESOURCES);
        return;
    }

    fd = accept_allowed(s, l, &data_path, &err);
    if (fd < 0) {
        listener_refresh_readiness(l);
        session_reply_error(s, req, err,
                            err == PROTO_E_WOULD_BLOCK ? "no connection waiting" : "accept failed");
        return;
    }
    c = tcp_sock_new(fd, l->family);
    if (c == NULL) {
        close_with_reset(fd);
        listener_refresh_readiness(l);
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    c->state = TCP_CONNECTED;
    c->has_local = true;
    inherit_options(l, c);
    r = session_add_resource(s, &c->res, &tcp_ops);
    if (r < 0) {
        close_with_reset(fd);
        free(c);
        listener_refresh_readiness(l);
        session_reply_error(s, req, r == -ENOSPC ? PROTO_E_NEW_SOCKET_LIMIT : PROTO_E_OUT_OF_MEMORY,
                            "no handle available");
        return;
    }
    session_usage(s)->sockets++;
    c->data_path = data_path; /* handoff: the socket itself goes to the client */
    err = start_relay(c);
    if (err != PROTO_OK) {
        resource *taken = session_take_resource(s, c->res.handle, &tcp_ops);
        if (taken != NULL) {
            tcp_destroy(taken);
        }
        listener_refresh_readiness(l);
        session_reply_error(s, req, err, "cannot relay the connection");
        return;
    }

    proto_reply_ok(req, &reply);
    reply.new_handle = c->res.handle;
    reply.family = c->family;
    listener_refresh_readiness(l); /* events before the reply */
    reply.more = l->ready;
    reply_with_streams(s, c, &reply);
}

/* --- shutdown, drop, addresses, streams ---------------------------------------------- */

static void handle_shutdown(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);

    if (t == NULL || reply_if_handed_off(s, req, t)) {
        return;
    }
    if (t->state == TCP_CONNECTED && t->data_path == POLICY_DATA_HANDOFF && t->fd >= 0) {
        handoff_shutdown(t, req->how);
        session_reply_ok(s, req);
        return;
    }
    if (t->state != TCP_CONNECTED || t->relay == NULL) {
        reply_invalid_state(s, req, t);
        return;
    }
    if (req->how == PROTO_SHUT_RECEIVE || req->how == PROTO_SHUT_BOTH) {
        relay_shutdown_receive(t->relay);
    }
    if (req->how == PROTO_SHUT_SEND || req->how == PROTO_SHUT_BOTH) {
        relay_shutdown_send(t->relay);
    }
    session_reply_ok(s, req);
}

static void handle_drop(session *s, const proto_msg *req) {
    resource *r = session_take_resource(s, req->handle, &tcp_ops);

    if (r == NULL) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "no such handle");
        return;
    }
    tcp_destroy(r);
    session_reply_ok(s, req);
}

static void handle_local_address(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    proto_msg reply;
    int r;

    if (t == NULL || reply_if_handed_off(s, req, t)) {
        return;
    }
    /* Unbound, or a bind not finished: no address yet. A socket that never
     * reached the kernel with an address (a connect the policy refused
     * while unbound) has none either. */
    if (t->state == TCP_UNBOUND || t->state == TCP_BIND_IN_PROGRESS || !t->has_local) {
        reply_invalid_state(s, req, t);
        return;
    }
    proto_reply_ok(req, &reply);
    r = local_address(t, &reply.addr);
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "getsockname: %s", strerror(-r));
        return;
    }
    session_send(s, &reply, NULL);
}

static void handle_remote_address(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    proto_msg reply;
    int r = 0;

    if (t == NULL || reply_if_handed_off(s, req, t)) {
        return;
    }
    if (t->state != TCP_CONNECTED) {
        reply_invalid_state(s, req, t);
        return;
    }
    proto_reply_ok(req, &reply);
    if (getpeername(t->fd, (struct sockaddr *)&ss, &len) < 0) {
        r = -errno;
    } else {
        r = sockrules_addr_from_sockaddr((struct sockaddr *)&ss, len, &reply.addr);
    }
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "getpeername: %s", strerror(-r));
        return;
    }
    session_send(s, &reply, NULL);
}

/* 0.3 send/receive: hands out one stream descriptor, once per direction. */
static void handle_stream(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    proto_msg reply;
    int dir, fd;

    if (t == NULL) {
        return;
    }
    if (t->state != TCP_CONNECTED) {
        reply_invalid_state(s, req, t);
        return;
    }
    dir = req->direction == PROTO_DIR_SEND ? STREAM_OUTPUT : STREAM_INPUT;
    if (t->stream_taken[dir] || t->client_fds[dir] < 0) {
        session_reply_error(s, req, PROTO_E_INVALID_STATE, "the %s stream was already taken",
                            dir == STREAM_OUTPUT ? "send" : "receive");
        return;
    }
    fd = t->client_fds[dir];
    t->client_fds[dir] = -1;
    t->stream_taken[dir] = true;
    handoff_forget_when_taken(t);
    proto_reply_ok(req, &reply);
    reply.nfds = 1;
    session_send(s, &reply, &fd);
}

/* --- options ------------------------------------------------------------------------- */

static void handle_get_option(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    proto_msg reply;
    int v = 0, r = 0;

    if (t == NULL || reply_if_handed_off(s, req, t)) {
        return;
    }
    proto_reply_ok(req, &reply);
    switch (req->option) {
    case PROTO_OPT_KEEP_ALIVE_ENABLED:
        r = sockopt_get_int(t->fd, SOL_SOCKET, SO_KEEPALIVE, &v);
        reply.value = v != 0;
        break;
    case PROTO_OPT_KEEP_ALIVE_IDLE_TIME:
        r = sockopt_get_int(t->fd, IPPROTO_TCP, TCP_KEEPIDLE, &v);
        reply.value = sockrules_keepalive_time_from_kernel(v);
        break;
    case PROTO_OPT_KEEP_ALIVE_INTERVAL:
        r = sockopt_get_int(t->fd, IPPROTO_TCP, TCP_KEEPINTVL, &v);
        reply.value = sockrules_keepalive_time_from_kernel(v);
        break;
    case PROTO_OPT_KEEP_ALIVE_COUNT:
        r = sockopt_get_int(t->fd, IPPROTO_TCP, TCP_KEEPCNT, &v);
        reply.value = v < 0 ? 0 : (uint64_t)v;
        break;
    case PROTO_OPT_HOP_LIMIT:
        r = sockopt_get_int(t->fd, sockopt_hop_limit_level(t->family),
                            sockopt_hop_limit_name(t->family), &v);
        reply.value = v < 0 ? 0 : (uint64_t)v;
        break;
    case PROTO_OPT_RECEIVE_BUFFER_SIZE:
        r = sockopt_get_int(t->fd, SOL_SOCKET, SO_RCVBUF, &v);
        reply.value = sockrules_buffer_size_from_kernel(v);
        break;
    case PROTO_OPT_SEND_BUFFER_SIZE:
        r = sockopt_get_int(t->fd, SOL_SOCKET, SO_SNDBUF, &v);
        reply.value = sockrules_buffer_size_from_kernel(v);
        break;
    case PROTO_OPT_IS_LISTENING:
        reply.value = t->state == TCP_LISTENING;
        break;
    default:
        session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "option %u cannot be read",
                            (unsigned)req->option);
        return;
    }
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "getsockopt: %s", strerror(-r));
        return;
    }
    session_send(s, &reply, NULL);
}

static void set_backlog(session *s, const proto_msg *req, tcp_sock *t) {
    int backlog;

    if (sockrules_backlog_to_kernel(req->value, &backlog) != PROTO_OK) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "the backlog must not be 0");
        return;
    }
    switch (t->state) {
    case TCP_UNBOUND:
    case TCP_BIND_IN_PROGRESS:
    case TCP_BOUND:
        t->backlog = backlog;
        break;
    case TCP_LISTEN_IN_PROGRESS:
    case TCP_LISTENING:
        /* Already listening in the kernel: listen(2) again resizes the
         * queue; before that, the value waits for the first listen. */
        if (t->listen_started && listen(t->fd, backlog) < 0) {
            session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "cannot change the backlog");
            return;
        }
        t->backlog = backlog;
        break;
    default:
        reply_invalid_state(s, req, t);
        return;
    }
    session_reply_ok(s, req);
}

static void handle_set_option(session *s, const proto_msg *req) {
    tcp_sock *t = find_sock(s, req);
    proto_err err;
    int v = 0, r;
    int level, name;

    if (t == NULL || reply_if_handed_off(s, req, t)) {
        return;
    }
    if (req->option == PROTO_OPT_LISTEN_BACKLOG_SIZE) {
        set_backlog(s, req, t);
        return;
    }
    switch (req->option) {
    case PROTO_OPT_KEEP_ALIVE_ENABLED:
        err = sockrules_bool_to_kernel(req->value, &v);
        level = SOL_SOCKET;
        name = SO_KEEPALIVE;
        break;
    case PROTO_OPT_KEEP_ALIVE_IDLE_TIME:
        err = sockrules_keepalive_time_to_kernel(req->value, &v);
        level = IPPROTO_TCP;
        name = TCP_KEEPIDLE;
        break;
    case PROTO_OPT_KEEP_ALIVE_INTERVAL:
        err = sockrules_keepalive_time_to_kernel(req->value, &v);
        level = IPPROTO_TCP;
        name = TCP_KEEPINTVL;
        break;
    case PROTO_OPT_KEEP_ALIVE_COUNT:
        err = sockrules_keepalive_count_to_kernel(req->value, &v);
        level = IPPROTO_TCP;
        name = TCP_KEEPCNT;
        break;
    case PROTO_OPT_HOP_LIMIT:
        err = sockrules_hop_limit_to_kernel(req->value, &v);
        level = sockopt_hop_limit_level(t->family);
        name = sockopt_hop_limit_name(t->family);
        break;
    case PROTO_OPT_RECEIVE_BUFFER_SIZE:
        err = sockrules_buffer_size_to_kernel(req->value, &v);
        level = SOL_SOCKET;
        name = SO_RCVBUF;
        break;
    case PROTO_OPT_SEND_BUFFER_SIZE:
        err = sockrules_buffer_size_to_kernel(req->value, &v);
        level = SOL_SOCKET;
        name = SO_SNDBUF;
        break;
    default:
        session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "option %u cannot be set",
                            (unsigned)req->option);
        return;
    }
    if (t->state == TCP_CLOSED) {
        reply_invalid_state(s, req, t);
        return;
    }
    if (err != PROTO_OK) {
        session_reply_error(s, req, err, "value %llu out of range", (unsigned long long)req->value);
        return;
    }
    r = sockopt_set_int(t->fd, level, name, v);
    /* Buffer sizes are a hint: Linux clamps silently, and ENOBUFS from
     * systems that refuse instead means the same. */
    if (r == -ENOBUFS && (name == SO_RCVBUF || name == SO_SNDBUF) && level == SOL_SOCKET) {
        r = 0;
    }
    if (r < 0) {
        session_reply_error(s, req, errmap_errno(r, errmap_wasi_flags(session_wasi(s))),
                            "setsockopt: %s", strerror(-r));
        return;
    }
    if (level == SOL_SOCKET && name == SO_RCVBUF) {
        t->rcvbuf_set = true;
    } else if (level == SOL_SOCKET && name == SO_SNDBUF) {
        t->sndbuf_set = true;
    }
    session_reply_ok(s, req);
}

/* --- dispatch ------------------------------------------------------------------------ */

void tcp_handle_request(session *s, const proto_msg *req) {
    switch (req->type) {
    case PROTO_TCP_CREATE:
        handle_create(s, req);
        return;
    case PROTO_TCP_BIND:
        handle_bind(s, req);
        return;
    case PROTO_TCP_CONNECT:
        handle_connect(s, req);
        return;
    case PROTO_TCP_LISTEN:
        handle_listen(s, req);
        return;
    case PROTO_TCP_FINISH:
        handle_finish(s, req);
        return;
    case PROTO_TCP_ACCEPT:
        handle_accept(s, req);
        return;
    case PROTO_TCP_SHUTDOWN:
        handle_shutdown(s, req);
        return;
    case PROTO_TCP_DROP:
        handle_drop(s, req);
        return;
    case PROTO_TCP_GET_OPTION:
        handle_get_option(s, req);
        return;
    case PROTO_TCP_SET_OPTION:
        handle_set_option(s, req);
        return;
    case PROTO_TCP_LOCAL_ADDRESS:
        handle_local_address(s, req);
        return;
    case PROTO_TCP_REMOTE_ADDRESS:
        handle_remote_address(s, req);
        return;
    case PROTO_TCP_STREAM:
        handle_stream(s, req);
        return;
    }
    session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "unknown TCP request");
}
