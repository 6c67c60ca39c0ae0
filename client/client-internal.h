/* client-internal.h — helpers shared by libwasock's source files.
 *
 * Not installed. Everything here has hidden visibility (the library is built
 * with -fvisibility=hidden and the version script exports wasock_* only).
 */
#ifndef WASOCK_CLIENT_INTERNAL_H
#define WASOCK_CLIENT_INTERNAL_H

#include <errno.h>

#include "proto.h"
#include "wasock/wasock.h"

/* Converts a caller's address to its wire form. Returns 0, or -EINVAL when
 * the family is neither IPv4 nor IPv6. Writes only *out; owns nothing. */
int client_addr_to_proto(const wasock_addr *a, proto_addr *out);

/* Converts a decoded wire address back. Returns 0, or -EPROTO for a family
 * the decoder should not have let through. *out is written only on success. */
int client_addr_from_proto(const proto_addr *p, wasock_addr *out);

/* --- resources other than TCP sockets (UDP sockets, lookups) --------------- */

/* Embedded in a UDP socket or lookup object; the client's map finds it by
 * handle for events. */
typedef struct client_object client_object;
struct client_object {
    uint32_t handle; /* set when the creating reply is dispatched */
    /* Called by the reading thread, with the client's lock held, for every
     * event naming `handle`. Must not call into the client. */
    void (*on_event)(client_object *o, const proto_msg *ev);
    /* Called by wasock_client_close for every object still registered: frees
     * the object and closes its descriptors. */
    void (*on_close)(client_object *o);
    client_object *next; /* the map's chain */
};

/* Sends req (type and fields set) and waits for its reply. On WASOCK_OK,
 * *reply is the success reply and its descriptors (at most max_fds, else the
 * daemon broke the protocol: DAEMON) are in fds[0, *nfds), owned by the
 * caller; new_object (may be NULL) was registered under the reply's
 * new_handle before any later frame was dispatched. Otherwise the reply's
 * error (or DAEMON / INVALID_ARGUMENT), and no descriptor remains. */
wasock_err client_transact(wasock_client *c, proto_msg *req, client_object *new_object,
                           proto_msg *reply, int *fds, unsigned max_fds, unsigned *nfds);

/* Removes o from the map (events for its handle are ignored from now on). */
void client_object_unregister(wasock_client *c, client_object *o);

/* Puts the client into its permanent broken state (the daemon sent
 * something impossible). */
void client_break_protocol(wasock_client *c);

bool client_is_broken(wasock_client *c);

/* The lock that guards what on_event writes; hold it to read those fields. */
void client_lock(wasock_client *c);
void client_unlock(wasock_client *c);

/* A condition over state guarded by the client's lock. */
typedef bool client_condition(wasock_client *c, const void *arg);

/* Waits (dispatching replies and events) until condition holds: OK; the
 * daemon went away: DAEMON; timeout_ms (-1: none) passed: TIMEOUT. Call
 * without the lock. */
wasock_err client_wait_until(wasock_client *c, client_condition *condition, const void *arg,
                             int timeout_ms);

/* One finish step (finish-bind, finish-connect, ...) of a 0.3 convenience. */
typedef wasock_err client_finish(void *arg);

/* The second half of the 0.3 conveniences: waits until `ready` holds (the
 * operation resolved, e.g. a prompt was answered), then runs finish; while
 * that still says WOULD_BLOCK, waits for the next frame and starts over.
 * Waiting for readiness rather than for a frame matters: the event may
 * already have been dispatched together with an earlier reply. Each wait
 * takes the reader role for one read at a time, so other threads' replies
 * keep flowing. Returns finish's result, or DAEMON. Call without the lock. */
wasock_err client_finish_when_ready(wasock_client *c, client_condition *ready, const void *arg,
                                    client_finish *finish, void *finish_arg);

/* --- handoff (handoff.c) ---------------------------------------------------
 * For a connection the policy handed off, the client holds the connected
 * socket and answers these itself on `fd` (borrowed), with the daemon's
 * rules. Each returns the WASI result. */

/* True when fd is a TCP socket (a handed-off connection), not a relay
 * stream (a pipe or a Unix stream socket). fd is borrowed. */
bool client_fd_is_tcp_socket(int fd);
wasock_err client_handoff_shutdown(int fd, wasock_shutdown how);
/* getsockname (remote false) or getpeername (remote true) into *out. */
wasock_err client_handoff_address(int fd, bool remote, wasock_addr *out);
/* A proto_tcp_option, value as on the wire (ns, bytes, 0/1). */
wasock_err client_handoff_get_option(int fd, wasock_family family, uint16_t option,
                                     uint64_t *value);
wasock_err client_handoff_set_option(int fd, wasock_family family, uint16_t option, uint64_t value);

#endif
