/* authz.h — the daemon's single policy enforcement helper.
 *
 * Every enforcement point (tcp.bind explicit and implicit, tcp.listen,
 * tcp.connect, tcp.accept of each connection) asks here, never
 * policy_decide() directly, so decision logging, the prompt broker and the
 * audit log have one place to hook in.
 */
#ifndef WASOCKD_AUTHZ_H
#define WASOCKD_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"
#include "proto.h"
#include "session.h"

struct hostbind_entry;

/* Most name bindings one connect or send is decided with: an address that
 * many names resolve to (a CDN) is tried with its newest names only. */
#define AUTHZ_MAX_BOUND_NAMES 8

/* One question about an operation of a session's resource. */
typedef struct authz_query {
    policy_op op;
    bool implicit;             /* an implicit bind done for a connect or listen */
    const proto_addr *local;   /* our address, or NULL */
    bool local_port_ephemeral; /* the kernel chose local's port (bound to port 0) */
    const proto_addr *remote;  /* the other end, or NULL */
    uint32_t handle;           /* the resource asking (for logs) */
    /* lookup: the normalised name. NULL for every other operation: for
     * tcp.connect, udp.connect and udp.send the host is found from the
     * tenant's name bindings of `remote` (lookup.h). */
    const char *host;
    /* Optional out: for an allowed connect or send decided with a name
     * binding, that binding (borrowed: pin it to keep it, see hostbind.h),
     * else NULL. */
    struct hostbind_entry **binding;
    /* Optional out: the verdict of the (last) decision. */
    policy_verdict *verdict;
} authz_query;

/* Decides with the session's tenant and the server's current policy. A
 * connect or send to an address bound to names is decided once per name
 * (newest first, at most AUTHZ_MAX_BOUND_NAMES) until one allows; a literal
 * address nobody looked up has no host, so `host` rules never match it.
 * Returns PROTO_OK when the operation may proceed, otherwise the error it
 * must report (the policy's choice, access-denied by default).
 *
 * Today the answer is immediate: a `prompt` verdict applies the rule's
 * on_no_agent action because no prompt broker exists yet. Callers already
 * keep the operation "in progress" until its finish-* call, so a broker can
 * later answer asynchronously by completing that operation. */
proto_err authz_decide(session *s, const authz_query *q);

#endif
