/* session.h — one client connection: framing, handshake, dispatch, output
 * queue and the table of the client's resources.
 *
 * A session reads frames from its (untrusted) client into a fixed buffer,
 * decodes them with the strict codec, answers HELLO, and hands TCP requests
 * to tcp.c. Replies and events are queued and written coalesced, at most
 * SESSION_OUTPUT_MAX bytes; descriptors travel with SCM_RIGHTS on the
 * sendmsg that carries their frame's first byte. A protocol violation closes
 * this session only. Closing a session closes everything it owns.
 */
#ifndef WASOCKD_SESSION_H
#define WASOCKD_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "proto.h"
#include "server.h"

/* Read buffer: one whole frame of the largest size, which is also room for
 * a hundred or more typical pipelined requests (about 20 bytes each) per
 * recvmsg. Fixed size, allocated with the session: a request never causes
 * an allocation, and a client cannot make it grow. Kept to one frame
 * because every idle session carries it (the target is 16 KiB of daemon
 * memory per idle session). */
#define SESSION_INPUT_BUFFER PROTO_MAX_FRAME

/* Output back-pressure. Above the high-water mark of unsent bytes the
 * session stops reading requests (each request adds a reply) until the
 * client has read enough to bring it under the low-water mark. 64 KiB is
 * hundreds of replies: a client that reads at all never notices. */
#define SESSION_OUTPUT_HIGH_WATER (64u * 1024u)
#define SESSION_OUTPUT_LOW_WATER  (16u * 1024u)

/* Hard cap of unsent output. Asynchronous events keep coming while reading
 * is paused (bounded by the session's resources); a client that lets them
 * pile up this far does not read at all and is disconnected rather than
 * allowed to grow the daemon's memory. */
#define SESSION_OUTPUT_MAX (1024u * 1024u)

/* Resources one session may hold, whatever the tenant's policy limits say
 * (0 = unlimited there): each costs up to five descriptors (socket, relay
 * pipes), so this keeps one session from exhausting the daemon's. */
#define SESSION_MAX_RESOURCES 4096

/* recvmsg calls per wakeup before other sessions get their turn. */
#define SESSION_READS_PER_WAKEUP 8

typedef struct session session;

/* Creates a session for the accepted, non-blocking, close-on-exec
 * connection `fd` of `peer` and starts reading. Takes ownership of fd on
 * success and on failure. Returns 0 (*out is owned by the server's session
 * list and frees itself after session_close) or a negative errno. */
int session_new(server *srv, int fd, const struct ucred *peer, uint64_t id, session **out);

/* Closes the session: every resource (sockets, relays, pending operations)
 * and queued descriptor is released, the connection is closed, and the
 * memory is freed from the last libuv close callback. Idempotent; `why` is
 * logged at debug level. */
void session_close(session *s, const char *why);

uint64_t session_id(const session *s);
const struct ucred *session_peer(const session *s);
/* The tenant named in HELLO ("default" when the client sent ""). */
const char *session_tenant(const session *s);
/* PROTO_WASI_0_2 or PROTO_WASI_0_3. */
uint8_t session_wasi(const session *s);
/* The protocol version negotiated in HELLO (PROTO_VERSION_MIN..MAX). */
uint16_t session_protocol_version(const session *s);
server *session_server(const session *s);
uv_loop_t *session_loop(const session *s);
tenant_usage *session_usage(const session *s);
bool session_is_closing(const session *s);

/* --- output ---------------------------------------------------------------- */

/* Queues one frame. Takes ownership of m->nfds descriptors from fds (closed
 * once sent, or at once when the frame cannot be queued). Returns 0, or a
 * negative errno when the session is closing or its output cap is exceeded
 * (the session is then closed). */
int session_send(session *s, const proto_msg *m, int *fds);

/* Queues the empty success reply to `req`. */
void session_reply_ok(session *s, const proto_msg *req);

/* Queues an error reply; the detail is formatted and cut to
 * PROTO_DETAIL_MAX. */
void session_reply_error(session *s, const proto_msg *req, proto_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Queues the invalid-state error reply to `req`, naming the resource's
 * current state (the same wording for every kind of resource). */
void session_reply_invalid_state(session *s, const proto_msg *req, const char *state);

/* Queues an event frame (id 0). */
void session_send_event(session *s, const proto_msg *ev);

/* Queues EV_READY for `handle`: its pollable is now `ready`. Callers send
 * it only on a change of the readiness they track. */
void session_send_ready(session *s, uint32_t handle, bool ready);

/* Writes as much queued output as the socket takes now, instead of at the
 * end of the loop turn: for events that must reach the client before
 * something it sees on another descriptor (a stream error before EOF). */
void session_flush(session *s);

/* --- resources --------------------------------------------------------------- */

typedef struct resource resource;

struct resource_ops {
    const char *kind; /* "tcp", for messages */
    /* Releases everything the resource holds; called once, when the client
     * drops it or the session closes. May finish asynchronously using
     * session_hold/session_release. */
    void (*destroy)(resource *r);
};

/* Embedded as the first member of every resource object. */
struct resource {
    uint32_t handle;
    const struct resource_ops *ops;
    session *sess;
};

/* Adds r to the session's table with a new handle (a counter from 1, never
 * reused). The table borrows r until it is taken or destroyed. Returns 0,
 * -ENOSPC at SESSION_MAX_RESOURCES or when handles are exhausted, -ENOMEM. */
int session_add_resource(session *s, resource *r, const struct resource_ops *ops);

/* The resource of `handle` if it exists and has these ops, else NULL.
 * Borrowed for the current callback. */
resource *session_find_resource(session *s, uint32_t handle, const struct resource_ops *ops);

/* Removes the resource from the table and returns it; the caller must
 * destroy it. NULL when absent or of another kind. */
resource *session_take_resource(session *s, uint32_t handle, const struct resource_ops *ops);

/* Number of resources in the table. */
unsigned session_resource_count(const session *s);

/* Keeps the session's memory alive while something that points to it
 * (a closing libuv handle of a resource) is still pending. */
void session_hold(session *s);
void session_release(session *s);

#endif
