/* session.c — one client connection of wasockd.
 *
 * Trust: everything read from the connection comes from an untrusted local
 * process. Bytes land in a fixed buffer, frames are checked with
 * proto_frame_ready() before they are decoded strictly, descriptors a
 * client tries to pass are closed at once, and any protocol violation
 * closes this session (logged with a rate limit) without touching others.
 * The peer's identity is SO_PEERCRED from the kernel, never a claim.
 */
#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authz.h"
#include "handles.h"
#include "log.h"
#include "lookup.h"
#include "policy.h"
#include "tcp.h"
#include "udp.h"

/* Initial output buffer: room for a few dozen replies; it grows by
 * doubling up to SESSION_OUTPUT_MAX only for clients that read slowly. */
#define SESSION_OUTPUT_INITIAL (16u * 1024u)

/* Descriptors we are prepared to find in one recvmsg from a client. A
 * client must send none; the space lets us close what it sent (the kernel
 * closes any excess itself and flags MSG_CTRUNC). */
#define SESSION_MAX_INBOUND_FDS 16

/* Descriptors queued with one frame, waiting for the sendmsg that carries
 * the frame's first byte. */
typedef struct queued_fds {
    uint64_t offset; /* stream offset of the frame's first byte */
    uint8_t nfds;
    int fds[PROTO_MAX_FDS_PER_FRAME];
} queued_fds;

struct session {
    server *srv;
    uv_loop_t *loop;
    uint64_t id;
    int fd;
    struct ucred peer;

    uv_poll_t poll;         /* the connection */
    uv_idle_t flush_idle;   /* runs once per loop turn while output is queued */
    int poll_events;        /* UV_READABLE / UV_WRITABLE currently requested */
    bool want_writable;     /* the socket refused output; wait for POLLOUT */
    bool input_paused;      /* output above the high-water mark */
    bool close_after_flush; /* a final reply is queued; read no more */
    bool closing;
    bool dispatching; /* inside process_input: no re-entry */
    unsigned holds;   /* open handles and pending resource closes */

    /* Set by HELLO. */
    bool welcomed;
    uint8_t wasi;
    uint16_t version; /* negotiated protocol version */
    char tenant[PROTO_TENANT_MAX + 1];
    tenant_usage *usage;

    handle_table resources;
    uint32_t next_handle;

    /* Output: unsent bytes are out[out_head, out_tail); out_pos is the
     * stream offset of out[out_head]. */
    uint8_t *out;
    size_t out_cap, out_head, out_tail;
    uint64_t out_pos;
    queued_fds *fdq; /* ring of frames with descriptors, in stream order */
    size_t fdq_cap, fdq_head, fdq_len;

    /* Input: in[0, in_len) holds bytes not yet consumed. */
    size_t in_len;
    uint8_t in[SESSION_INPUT_BUFFER];
};

/* Protocol violations are logged at most this often: a client that sends
 * garbage is logged once, and a flood of such clients a few times per
 * interval, not once per connection. */
static log_ratelimit violation_log = LOG_RATELIMIT_INIT(10000, 5);
/* Refused HELLOs (wrong tenant, version) likewise. */
static log_ratelimit refusal_log = LOG_RATELIMIT_INIT(10000, 10);

static void update_poll(session *s);
static void process_input(session *s);

/* --- accessors ------------------------------------------------------------- */

uint64_t session_id(const session *s) {
    return s->id;
}

const struct ucred *session_peer(const session *s) {
    return &s->peer;
}

const char *session_tenant(const session *s) {
    return s->tenant;
}

uint16_t session_protocol_version(const session *s) {
    return s->version;
}

uint8_t session_wasi(const session *s) {
    return s->wasi;
}

server *session_server(const session *s) {
    return s->srv;
}

uv_loop_t *session_loop(const session *s) {
    return s->loop;
}

tenant_usage *session_usage(const session *s) {
    return s->usage;
}

bool session_is_closing(const session *s) {
    return s->closing;
}

unsigned session_resource_count(const session *s) {
    return (unsigned)s->resources.count;
}

/* --- lifetime --------------------------------------------------------------- */

static void close_fds(int *fds, unsigned n) {
    if (fds == NULL) {
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
}

static void session_free(session *s) {
    while (s->fdq_len > 0) {
        queued_fds *q = &s->fdq[s->fdq_head];
        close_fds(q->fds, q->nfds);
        s->fdq_head = (s->fdq_head + 1) % s->fdq_cap;
        s->fdq_len--;
    }
    if (s->usage != NULL) {
        server_tenant_usage_release(s->srv, s->usage);
    }
    server_remove_session(s->srv, s);
    handle_table_clear(&s->resources);
    free(s->fdq);
    free(s->out);
    free(s);
}

void session_hold(session *s) {
    s->holds++;
}

void session_release(session *s) {
    if (s->holds == 0) {
        log_error("session %llu: release without hold", (unsigned long long)s->id);
        abort();
    }
    s->holds--;
    if (s->holds == 0) {
        session_free(s);
    }
}

static void on_handle_closed(uv_handle_t *h) {
    session *s = h->data;

    if (h == (uv_handle_t *)&s->poll) {
        /* libuv no longer watches the descriptor: now it may go. */
        close(s->fd);
        s->fd = -1;
    }
    session_release(s);
}

static void destroy_resource(void *object, void *data) {
    resource *r = object;

    (void)data;
    r->ops->destroy(r);
}

void session_close(session *s, const char *why) {
    if (s->closing) {
        return;
    }
    s->closing = true;
    log_debug("session %llu closed: %s", (unsigned long long)s->id, why);

    /* Every socket, relay and pending operation of the client goes with it.
     * The table is emptied first so a destroy callback can never find a
     * resource that is already gone. */
    handle_table resources = s->resources;
    s->resources = (handle_table)HANDLE_TABLE_INIT;
    handle_table_foreach(&resources, destroy_resource, NULL);
    handle_table_clear(&resources);
    /* Answers remembered for this session only go with it. */
    authz_session_closed(s);

    while (s->fdq_len > 0) {
        queued_fds *q = &s->fdq[s->fdq_head];
        close_fds(q->fds, q->nfds);
        s->fdq_head = (s->fdq_head + 1) % s->fdq_cap;
        s->fdq_len--;
    }
    /* The holds taken in session_new for these two handles are released by
     * their close callbacks; the last one frees the session. */
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    uv_close((uv_handle_t *)&s->flush_idle, on_handle_closed);
}

/* Logs a protocol violation (rate-limited) and drops the client. */
static void session_violation(session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void session_violation(session *s, const char *fmt, ...) {
    char what[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    log_write_ratelimited(&violation_log, LOG_LEVEL_WARN,
                          "session %llu (pid %ld uid %ld): protocol violation: %s; closing",
                          (unsigned long long)s->id, (long)s->peer.pid, (long)s->peer.uid, what);
    session_close(s, "protocol violation");
}

/* --- output ----------------------------------------------------------------- */

static size_t output_unsent(const session *s) {
    return s->out_tail - s->out_head;
}

static void on_flush_idle(uv_idle_t *h) {
    session_flush(h->data);
}

/* Makes room for one more frame at the tail: compacts, then grows. */
static int output_reserve(session *s) {
    size_t unsent = output_unsent(s);
    size_t need = unsent + PROTO_MAX_FRAME;
    size_t cap;
    uint8_t *grown;

    /* The buffer never grows past the cap plus one frame. */
    if (need > SESSION_OUTPUT_MAX + PROTO_MAX_FRAME) {
        return -ENOBUFS;
    }

    if (s->out_tail + PROTO_MAX_FRAME <= s->out_cap) {
        return 0;
    }
    if (s->out_head > 0) {
        memmove(s->out, s->out + s->out_head, unsent);
        s->out_head = 0;
        s->out_tail = unsent;
        if (s->out_tail + PROTO_MAX_FRAME <= s->out_cap) {
            return 0;
        }
    }
    cap = s->out_cap == 0 ? SESSION_OUTPUT_INITIAL : s->out_cap;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > SESSION_OUTPUT_MAX + PROTO_MAX_FRAME) {
        cap = SESSION_OUTPUT_MAX + PROTO_MAX_FRAME;
    }
    grown = realloc(s->out, cap);
    if (grown == NULL) {
        return -ENOMEM;
    }
    s->out = grown;
    s->out_cap = cap;
    return 0;
}

static int fdq_push(session *s, uint64_t offset, const int *fds, uint8_t nfds) {
    queued_fds *q;

    if (s->fdq_len == s->fdq_cap) {
        size_t cap = s->fdq_cap == 0 ? 8 : s->fdq_cap * 2;
        queued_fds *grown = malloc(cap * sizeof(*grown));
        if (grown == NULL) {
            return -ENOMEM;
        }
        /* Unroll the ring into the new array. */
        for (size_t i = 0; i < s->fdq_len; i++) {
            grown[i] = s->fdq[(s->fdq_head + i) % s->fdq_cap];
        }
        free(s->fdq);
        s->fdq = grown;
        s->fdq_cap = cap;
        s->fdq_head = 0;
    }
    q = &s->fdq[(s->fdq_head + s->fdq_len) % s->fdq_cap];
    q->offset = offset;
    q->nfds = nfds;
    memcpy(q->fds, fds, nfds * sizeof(int));
    s->fdq_len++;
    return 0;
}

int session_send(session *s, const proto_msg *m, int *fds) {
    ssize_t n;
    int r;

    if (m->nfds > PROTO_MAX_FDS_PER_FRAME || (m->nfds > 0 && fds == NULL)) {
        log_error("session %llu: frame with %u descriptors", (unsigned long long)s->id,
                  (unsigned)m->nfds);
        abort(); /* our own bug: never send what the protocol forbids */
    }
    if (s->closing) {
        close_fds(fds, m->nfds);
        return -EPIPE;
    }
    r = output_reserve(s);
    if (r < 0) {
        close_fds(fds, m->nfds);
        log_write_ratelimited(&violation_log, LOG_LEVEL_WARN, "session %llu (pid %ld): %s; closing",
                              (unsigned long long)s->id, (long)s->peer.pid,
                              r == -ENOBUFS ? "client does not read its replies"
                                            : "out of memory for its replies");
        session_close(s, "output cap");
        return r;
    }
    n = proto_encode(m, s->out + s->out_tail, s->out_cap - s->out_tail);
    if (n < 0) {
        /* Every message we build fits the codec's rules; if one does not,
         * the daemon has a bug, and the session cannot continue sanely. */
        log_error("session %llu: cannot encode %s: %s", (unsigned long long)s->id,
                  proto_type_name(m->type) ? proto_type_name(m->type) : "?", strerror((int)-n));
        close_fds(fds, m->nfds);
        session_close(s, "encoder refused a reply");
        return (int)n;
    }
    if (m->nfds > 0) {
        r = fdq_push(s, s->out_pos + output_unsent(s), fds, m->nfds);
        if (r < 0) {
            close_fds(fds, m->nfds);
            session_close(s, "out of memory for descriptors");
            return r;
        }
    }
    s->out_tail += (size_t)n;
    if (!uv_is_active((uv_handle_t *)&s->flush_idle)) {
        uv_idle_start(&s->flush_idle, on_flush_idle);
    }
    if (!s->input_paused && output_unsent(s) > SESSION_OUTPUT_HIGH_WATER) {
        s->input_paused = true;
        update_poll(s);
    }
    return 0;
}

void session_reply_ok(session *s, const proto_msg *req) {
    proto_msg reply;

    proto_reply_ok(req, &reply);
    session_send(s, &reply, NULL);
}

void session_reply_error(session *s, const proto_msg *req, proto_err err, const char *fmt, ...) {
    proto_msg reply;
    char detail[PROTO_DETAIL_MAX + 1];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    proto_reply_error(req, err, detail, &reply);
    session_send(s, &reply, NULL);
}

void session_reply_invalid_state(session *s, const proto_msg *req, const char *state) {
    session_reply_error(s, req, PROTO_E_INVALID_STATE, "not allowed while %s", state);
}

void session_send_event(session *s, const proto_msg *ev) {
    session_send(s, ev, NULL);
}

void session_send_ready(session *s, uint32_t handle, bool ready) {
    proto_msg ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = PROTO_EV_READY;
    ev.handle = handle;
    ev.ready = ready;
    session_send(s, &ev, NULL);
}

/* Builds the SCM_RIGHTS control message for one queued frame. */
static void attach_fds(struct msghdr *msg, void *cbuf, size_t cbuf_len, const queued_fds *q) {
    struct cmsghdr *cm;

    memset(cbuf, 0, cbuf_len);
    msg->msg_control = cbuf;
    msg->msg_controllen = CMSG_SPACE(q->nfds * sizeof(int));
    cm = CMSG_FIRSTHDR(msg);
    if (cm == NULL) {
        abort(); /* cannot happen: msg_controllen holds one header */
    }
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(q->nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), q->fds, q->nfds * sizeof(int));
}

void session_flush(session *s) {
    if (s->closing) {
        return;
    }
    /* Coalesce: one sendmsg covers every queued frame, except that a frame
     * with descriptors starts a new sendmsg (its descriptors ride on the
     * call whose first byte is the frame's first byte) and the next frame
     * with descriptors ends it. */
    while (output_unsent(s) > 0) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS_PER_FRAME)];
            struct cmsghdr align;
        } cbuf;
        struct msghdr msg;
        struct iovec iov;
        size_t len = output_unsent(s);
        queued_fds *q = s->fdq_len > 0 ? &s->fdq[s->fdq_head] : NULL;
        bool attached = false;
        ssize_t n;

        memset(&msg, 0, sizeof(msg));
        if (q != NULL && q->offset == s->out_pos) {
            attach_fds(&msg, cbuf.buf, sizeof(cbuf.buf), q);
            attached = true;
            if (s->fdq_len > 1) {
                const queued_fds *next = &s->fdq[(s->fdq_head + 1) % s->fdq_cap];
                len = (size_t)(next->offset - s->out_pos);
            }
        } else if (q != NULL) {
            if (q->offset < s->out_pos) {
                log_error("session %llu: descriptors behind the stream", (unsigned long long)s->id);
                abort(); /* broken invariant: the frame went out without them */
            }
            len = (size_t)(q->offset - s->out_pos);
        }
        iov.iov_base = s->out + s->out_head;
        iov.iov_len = len;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;

        n = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                s->want_writable = true;
                break;
            }
            {
                char why[96];
                snprintf(why, sizeof(why), "write failed: %s", strerror(errno));
                session_close(s, why);
            }
            return;
        }
        if (attached) {
            /* The kernel holds its own references now. */
            close_fds(q->fds, q->nfds);
            s->fdq_head = (s->fdq_head + 1) % s->fdq_cap;
            s->fdq_len--;
        }
        s->out_head += (size_t)n;
        s->out_pos += (uint64_t)n;
        if ((size_t)n < len) {
            s->want_writable = true;
            break;
        }
    }

    if (output_unsent(s) == 0) {
        s->out_head = s->out_tail = 0;
        s->want_writable = false;
        uv_idle_stop(&s->flush_idle);
        if (s->close_after_flush) {
            session_close(s, "final reply sent");
            return;
        }
    } else if (s->want_writable) {
        /* Nothing more can be written this turn: wait for POLLOUT instead
         * of spinning in the idle handle. */
        uv_idle_stop(&s->flush_idle);
    }
    if (s->input_paused && output_unsent(s) <= SESSION_OUTPUT_LOW_WATER) {
        s->input_paused = false;
        /* Requests already buffered were waiting for this. */
        process_input(s);
        if (s->closing) {
            return;
        }
    }
    update_poll(s);
}

/* --- input ------------------------------------------------------------------ */

static void handle_hello(session *s, const proto_msg *m) {
    char reason[PROTO_DETAIL_MAX + 1] = "";
    const char *tenant = m->tenant[0] != '\0' ? m->tenant : "default";
    proto_msg reply;

    if (m->version_min > m->version_max) {
        session_violation(s, "HELLO offers versions %u..%u", (unsigned)m->version_min,
                          (unsigned)m->version_max);
        return;
    }
    if (m->version_min > PROTO_VERSION_MAX || m->version_max < PROTO_VERSION_MIN) {
        log_write_ratelimited(&refusal_log, LOG_LEVEL_INFO,
                              "session %llu (pid %ld uid %ld): refused: protocol versions "
                              "%u..%u offered, this daemon speaks %u..%u",
                              (unsigned long long)s->id, (long)s->peer.pid, (long)s->peer.uid,
                              (unsigned)m->version_min, (unsigned)m->version_max,
                              (unsigned)PROTO_VERSION_MIN, (unsigned)PROTO_VERSION_MAX);
        session_reply_error(s, m, PROTO_E_NOT_SUPPORTED,
                            "this daemon speaks protocol versions %u..%u",
                            (unsigned)PROTO_VERSION_MIN, (unsigned)PROTO_VERSION_MAX);
        s->close_after_flush = true;
        return;
    }
    if (policy_admit(server_policy(s->srv), tenant, (uint32_t)s->peer.uid, (uint32_t)s->peer.gid,
                     m->token[0] != '\0' ? m->token : NULL, reason, sizeof(reason)) != 0) {
        log_write_ratelimited(&refusal_log, LOG_LEVEL_INFO,
                              "session %llu (pid %ld uid %ld): refused as tenant \"%s\": %s",
                              (unsigned long long)s->id, (long)s->peer.pid, (long)s->peer.uid,
                              tenant, reason);
        session_reply_error(s, m, PROTO_E_ACCESS_DENIED, "%s", reason);
        s->close_after_flush = true;
        return;
    }
    s->usage = server_tenant_usage_acquire(s->srv, tenant);
    if (s->usage == NULL) {
        session_reply_error(s, m, PROTO_E_OUT_OF_MEMORY, "out of memory");
        s->close_after_flush = true;
        return;
    }
    /* Both strings have the same capacity; the codec NUL-terminated it. */
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
    s->wasi = m->wasi;
    s->version = m->version_max < PROTO_VERSION_MAX ? m->version_max : PROTO_VERSION_MAX;
    s->welcomed = true;
    log_info("session %llu: pid %ld uid %ld gid %ld as tenant \"%s\", WASI 0.%u, protocol %u",
             (unsigned long long)s->id, (long)s->peer.pid, (long)s->peer.uid, (long)s->peer.gid,
             s->tenant, (unsigned)s->wasi, (unsigned)s->version);

    proto_reply_ok(m, &reply);
    reply.version = s->version;
    reply.session = s->id;
    session_send(s, &reply, NULL);
}

static void handle_message(session *s, const proto_msg *m) {
    if (!proto_type_is_request(m->type)) {
        session_violation(s, "sent %s, which only the daemon sends",
                          proto_type_name(m->type) ? proto_type_name(m->type) : "a reply");
        return;
    }
    if (!s->welcomed) {
        if (m->type == PROTO_HELLO) {
            handle_hello(s, m);
            return;
        }
        log_write_ratelimited(&violation_log, LOG_LEVEL_WARN,
                              "session %llu (pid %ld uid %ld): protocol violation: %s before "
                              "HELLO; closing",
                              (unsigned long long)s->id, (long)s->peer.pid, (long)s->peer.uid,
                              proto_type_name(m->type));
        session_reply_error(s, m, PROTO_E_PROTOCOL, "HELLO must be the first request");
        s->close_after_flush = true;
        return;
    }
    switch (m->type) {
    case PROTO_HELLO:
        log_write_ratelimited(&violation_log, LOG_LEVEL_WARN,
                              "session %llu (pid %ld uid %ld): protocol violation: second "
                              "HELLO; closing",
                              (unsigned long long)s->id, (long)s->peer.pid, (long)s->peer.uid);
        session_reply_error(s, m, PROTO_E_PROTOCOL, "HELLO was already sent");
        s->close_after_flush = true;
        return;
    case PROTO_PING:
        session_reply_ok(s, m);
        return;
    case PROTO_TCP_CREATE:
    case PROTO_TCP_BIND:
    case PROTO_TCP_CONNECT:
    case PROTO_TCP_LISTEN:
    case PROTO_TCP_FINISH:
    case PROTO_TCP_ACCEPT:
    case PROTO_TCP_SHUTDOWN:
    case PROTO_TCP_DROP:
    case PROTO_TCP_GET_OPTION:
    case PROTO_TCP_SET_OPTION:
    case PROTO_TCP_LOCAL_ADDRESS:
    case PROTO_TCP_REMOTE_ADDRESS:
    case PROTO_TCP_STREAM:
        tcp_handle_request(s, m);
        return;
    case PROTO_UDP_CREATE:
    case PROTO_UDP_BIND:
    case PROTO_UDP_FINISH_BIND:
    case PROTO_UDP_STREAM:
    case PROTO_UDP_CONNECT:
    case PROTO_UDP_DISCONNECT:
    case PROTO_UDP_SEND_CHECK:
    case PROTO_UDP_GET_OPTION:
    case PROTO_UDP_SET_OPTION:
    case PROTO_UDP_LOCAL_ADDRESS:
    case PROTO_UDP_REMOTE_ADDRESS:
    case PROTO_UDP_DROP:
        udp_handle_request(s, m);
        return;
    case PROTO_RESOLVE:
    case PROTO_RESOLVE_DROP:
        lookup_handle_request(s, m);
        return;
    default:
        /* A request the codec knows but this daemon does not serve. */
        session_reply_error(s, m, PROTO_E_NOT_SUPPORTED, "%s is not supported",
                            proto_type_name(m->type));
        return;
    }
}

/* Decodes and handles every whole frame in the input buffer, unless output
 * back-pressure or a final reply says to stop; keeps a partial frame. */
static void process_input(session *s) {
    size_t off = 0;

    if (s->dispatching) {
        return;
    }
    s->dispatching = true;
    while (!s->closing && !s->input_paused && !s->close_after_flush) {
        size_t frame_len = 0;
        proto_msg m;
        int r = proto_frame_ready(s->in + off, s->in_len - off, &frame_len);

        if (r < 0) {
            session_violation(s, "bad frame header (%s)",
                              r == -EMSGSIZE ? "frame too large" : "malformed");
            break;
        }
        if (r == 0) {
            break;
        }
        r = proto_decode(s->in + off, frame_len, &m);
        if (r < 0) {
            session_violation(s, "undecodable frame (%s)",
                              r == -ENOMSG ? "unknown type" : "malformed");
            break;
        }
        off += frame_len;
        handle_message(s, &m);
    }
    s->dispatching = false;
    if (s->closing) {
        return;
    }
    if (s->close_after_flush) {
        s->in_len = 0; /* nothing after the final reply is read */
        return;
    }
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
}

/* Closes every descriptor in a received control message and says whether
 * there was anything at all (a client must send none). */
static bool discard_control(struct msghdr *msg) {
    bool any = false;

    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm != NULL; cm = CMSG_NXTHDR(msg, cm)) {
        any = true;
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
            cm->cmsg_len >= CMSG_LEN(0)) {
            size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < n; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                close(fd);
            }
        }
    }
    return any || (msg->msg_flags & MSG_CTRUNC) != 0;
}

static void session_read(session *s) {
    for (int i = 0; i < SESSION_READS_PER_WAKEUP; i++) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * SESSION_MAX_INBOUND_FDS)];
            struct cmsghdr align;
        } cbuf;
        struct msghdr msg;
        struct iovec iov;
        ssize_t n;

        if (s->closing || s->input_paused || s->close_after_flush) {
            return;
        }
        /* process_input leaves at most one partial frame behind. */
        iov.iov_base = s->in + s->in_len;
        iov.iov_len = sizeof(s->in) - s->in_len;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.buf;
        msg.msg_controllen = sizeof(cbuf.buf);

        n = recvmsg(s->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN) {
                char why[96];
                snprintf(why, sizeof(why), "read failed: %s", strerror(errno));
                session_close(s, why);
            }
            return;
        }
        if (discard_control(&msg)) {
            session_violation(s, "sent descriptors or other control data");
            return;
        }
        if (n == 0) {
            /* Replies to what the client sent before closing its side go
             * out if the socket takes them now; nobody waits for more. */
            session_flush(s);
            session_close(s, "client closed the connection");
            return;
        }
        s->in_len += (size_t)n;
        process_input(s);
        if ((size_t)n < iov.iov_len) {
            /* A short read emptied the socket: one more recvmsg would only
             * say EAGAIN. */
            return;
        }
    }
}

static void on_session_poll(uv_poll_t *h, int status, int events) {
    session *s = h->data;

    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "poll failed: %s", uv_strerror(status));
        session_close(s, why);
        return;
    }
    if (events & UV_WRITABLE) {
        s->want_writable = false;
        session_flush(s);
        if (s->closing) {
            return;
        }
    }
    if (events & (UV_READABLE | UV_DISCONNECT)) {
        session_read(s);
        if (s->closing) {
            return;
        }
        /* Replies to this batch go out now, in as few sendmsg calls as
         * possible, rather than one turn later. */
        session_flush(s);
        if (s->closing) {
            return;
        }
    }
    update_poll(s);
}

static void update_poll(session *s) {
    int events = 0;

    if (s->closing) {
        return;
    }
    if (!s->input_paused && !s->close_after_flush) {
        events |= UV_READABLE;
    }
    if (s->want_writable) {
        events |= UV_WRITABLE;
    }
    if (events == s->poll_events) {
        return;
    }
    s->poll_events = events;
    if (events == 0) {
        uv_poll_stop(&s->poll);
    } else if (uv_poll_start(&s->poll, events, on_session_poll) < 0) {
        session_close(s, "cannot poll the connection");
    }
}

/* --- resources ---------------------------------------------------------------- */

int session_add_resource(session *s, resource *r, const struct resource_ops *ops) {
    int rc;

    if (s->resources.count >= SESSION_MAX_RESOURCES || s->next_handle == UINT32_MAX) {
        return -ENOSPC;
    }
    rc = handle_table_insert(&s->resources, s->next_handle, r);
    if (rc < 0) {
        return rc;
    }
    r->handle = s->next_handle++;
    r->ops = ops;
    r->sess = s;
    return 0;
}

resource *session_find_resource(session *s, uint32_t handle, const struct resource_ops *ops) {
    resource *r = handle_table_find(&s->resources, handle);

    return r != NULL && r->ops == ops ? r : NULL;
}

resource *session_take_resource(session *s, uint32_t handle, const struct resource_ops *ops) {
    if (session_find_resource(s, handle, ops) == NULL) {
        return NULL;
    }
    return handle_table_remove(&s->resources, handle);
}

/* --- creation ---------------------------------------------------------------- */

int session_new(server *srv, int fd, const struct ucred *peer, uint64_t id, session **out) {
    session *s = calloc(1, sizeof(*s));
    int r;

    if (s == NULL) {
        close(fd);
        return -ENOMEM;
    }
    s->srv = srv;
    s->loop = server_loop(srv);
    s->id = id;
    s->fd = fd;
    s->peer = *peer;
    s->next_handle = 1;
    s->resources = (handle_table)HANDLE_TABLE_INIT;

    r = server_add_session(srv, s);
    if (r < 0) {
        close(fd);
        free(s);
        return r;
    }
    r = uv_poll_init(s->loop, &s->poll, fd);
    if (r < 0) {
        server_remove_session(srv, s);
        close(fd);
        free(s);
        return r;
    }
    s->poll.data = s;
    uv_idle_init(s->loop, &s->flush_idle);
    s->flush_idle.data = s;
    s->holds = 2; /* the poll and idle handles, released by their close callbacks */

    update_poll(s);
    if (s->closing) {
        return -EIO;
    }
    log_debug("session %llu: connection from pid %ld uid %ld gid %ld", (unsigned long long)id,
              (long)peer->pid, (long)peer->uid, (long)peer->gid);
    *out = s;
    return 0;
}
