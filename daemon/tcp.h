/* tcp.h — WASI TCP sockets of a session: the state machine of both WASI
 * shapes (0.2 start/finish, 0.3 async) and the system calls behind it.
 */
#ifndef WASOCKD_TCP_H
#define WASOCKD_TCP_H

#include "proto.h"
#include "session.h"

/* Most accept4 calls one TCP_ACCEPT makes while skipping transient kernel
 * errors and connections the policy refuses: enough to get past a burst of
 * refused peers, small enough that one request never monopolises the loop. */
#define TCP_ACCEPT_ATTEMPTS 16

/* Handles one TCP request (a PROTO_TCP_* type) of a session past HELLO.
 * Always queues exactly one reply, preceded by the EV_READY events the
 * request caused. */
void tcp_handle_request(session *s, const proto_msg *req);

#endif
