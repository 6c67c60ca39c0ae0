/* udp.h — WASI UDP sockets of a session: the state machine of both WASI
 * shapes, the policy enforcement points, and the datagram channel between
 * the client and the network socket (PROTOCOL.md sections 13 and 15).
 */
#ifndef WASOCKD_UDP_H
#define WASOCKD_UDP_H

#include "proto.h"
#include "session.h"

/* Datagrams moved per recvmmsg/sendmmsg call, in either direction. 32 keeps
 * the shared batch buffers at 2 MiB and amortises the system calls well
 * (the gain flattens out beyond a few dozen). */
#define UDP_BATCH 32

/* Batches per wakeup of one socket before other sessions get their turn. */
#define UDP_BATCHES_PER_WAKEUP 4

/* Policy decisions (destinations, sources) one socket remembers; when full
 * it starts over. A socket talking to more peers than this pays one rule
 * evaluation per new peer, as it would without a cache. */
#define UDP_APPROVALS_MAX 256

/* Name bindings one socket keeps pinned (dns.keep_while_open): the names of
 * the destinations it was allowed to reach through them. */
#define UDP_PINS_MAX 64

/* Requested SO_SNDBUF of each end of the datagram channel: room for a burst
 * of full-size datagrams before the writer sees EAGAIN. The kernel caps it
 * at net.core.wmem_max. */
#define UDP_CHANNEL_BUFFER (1024 * 1024)

/* Handles one UDP request (a PROTO_UDP_* type) of a session past HELLO.
 * Always queues exactly one reply. */
void udp_handle_request(session *s, const proto_msg *req);

#endif
