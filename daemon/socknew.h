/* socknew.h — the checks and the socket(2) call that every socket creation
 * (TCP_CREATE, UDP_CREATE) shares.
 */
#ifndef WASOCKD_SOCKNEW_H
#define WASOCKD_SOCKNEW_H

#include "policy.h"
#include "proto.h"
#include "session.h"

/* For the create request `req` of session s, of kind `kind`
 * (POLICY_PROTO_TCP or POLICY_PROTO_UDP): checks that the tenant's policy
 * allows the kind (else access-denied), the tenant's socket limit and the
 * session's resource cap (else new-socket-limit) and the family (else
 * invalid-argument), then opens a non-blocking, close-on-exec socket, v6-only
 * for IPv6. Returns the descriptor, owned by the caller; or -1 after sending
 * the error reply to req. */
int socknew_open(session *s, const proto_msg *req, policy_protocol kind);

#endif
