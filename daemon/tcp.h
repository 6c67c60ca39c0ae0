/* tcp.h — WASI TCP sockets of a session: the state machine of both WASI
 * shapes (0.2 start/finish, 0.3 async) and the system calls behind it.
 *
 * Permission (authz.h) may take time: while a prompt or a delayed refusal
 * is pending, start-bind/-connect/-listen stay in progress (finish-*
 * answers would-block, readiness is false; libwasock's 0.3 calls wait for
 * readiness). An accepted connection whose decision is pending is held by
 * the listener, which meanwhile takes the next connection from the kernel;
 * once allowed, the held connection is what the next accept returns. An
 * accept that took a connection only to find it needs a prompt answers
 * would-block, although the listener was ready.
 */
#ifndef WASOCKD_TCP_H
#define WASOCKD_TCP_H

#include "proto.h"
#include "session.h"

/* Most accept4 calls one TCP_ACCEPT makes while skipping transient kernel
 * errors and connections the policy refuses: enough to get past a burst of
 * refused peers, small enough that one request never monopolises the loop. */
#define TCP_ACCEPT_ATTEMPTS 16

/* Connections one listener holds outside the kernel's queue: those whose
 * accept decision waits for a prompt, and those allowed but not yet taken
 * by the guest. Each is a descriptor the daemon holds; beyond this the
 * kernel's backlog keeps them (and the listener is not ready until a
 * decision ends). A person answers prompts one by one, so 32 is plenty. */
#define TCP_ACCEPT_HELD_MAX 32

/* Handles one TCP request (a PROTO_TCP_* type) of a session past HELLO.
 * Always queues exactly one reply, preceded by the EV_READY events the
 * request caused. */
void tcp_handle_request(session *s, const proto_msg *req);

#endif
