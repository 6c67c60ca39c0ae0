/* authz.h — the daemon's single policy enforcement point.
 *
 * Every enforcement point (tcp.bind explicit and implicit, tcp.listen,
 * tcp.connect, tcp.accept of each connection) asks here, never
 * policy_decide() directly, so decision logging, remembered answers, the
 * prompt broker (prompt.h), deny delays and the audit log have one place.
 *
 * Two ways to ask:
 * - authz_begin: the answer may come later. `allow` and `deny` are
 *   immediate; a `prompt` waits for a prompt agent (or its timeout), and a
 *   deny with `deny.delay` waits out the delay (a tarpit). Both count
 *   against the tenant's pending_ops limit while they wait.
 * - authz_decide: immediate, for operations that cannot wait: a prompt
 *   applies the rule's on_no_agent (a remembered answer still applies) and
 *   a deny delay is skipped.
 *
 * Every decision whose verdict asks for it (audit.record, a rule's `log`)
 * is written to the audit log: one record when decided, and for prompts
 * one when asked and one per waiting request when it ends (answered, timed
 * out, no agent, withdrawn).
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
    /* Optional out: for a connect or send allowed at once with a name
     * binding, that binding (borrowed: pin it to keep it, see hostbind.h),
     * else NULL. */
    struct hostbind_entry **binding;
    /* Optional out: the verdict the decision was made with. */
    policy_verdict *verdict;
    /* Optional out: where an allowed connection's bytes flow (the deciding
     * rule's allow.data_path), written only when the answer is allow, also
     * when it comes later: the pointee must live until then (a field of
     * the asking socket). */
    policy_data_path *data_path;
} authz_query;

/* Name bindings (both ways of asking): a connect or send to an address the
 * daemon resolved for this tenant is decided once per bound name (newest
 * first, at most AUTHZ_MAX_BOUND_NAMES), and the first name that allows
 * wins, else the first that prompts, else the first refusal. A literal
 * address nobody looked up has no host, so `host` rules never match it. */

/* Decides at once with the session's tenant and the server's current
 * policy. Returns PROTO_OK when the operation may proceed, otherwise the
 * error it must report (the policy's choice, access-denied by default). A
 * prompt verdict applies the rule's on_no_agent. */
proto_err authz_decide(session *s, const authz_query *q);

/* A decision that is still being made. Owned by authz until it is either
 * completed (the done callback ran) or cancelled. */
typedef struct authz_pending authz_pending;

/* Receives the decision: PROTO_OK or the error to report. Runs from a loop
 * callback (an agent's answer, a timer), never inside authz_begin. */
typedef void (*authz_done_fn)(void *cookie, proto_err result);

typedef enum authz_status {
    AUTHZ_DECIDED, /* *result holds the answer */
    AUTHZ_PENDING, /* *pending waits; `done` will be called with the answer */
} authz_status;

/* Asks for q. Decided at once: returns AUTHZ_DECIDED with *result.
 * Otherwise returns AUTHZ_PENDING with *pending, and later calls
 * done(cookie, result) exactly once unless authz_cancel comes first. A
 * request that would wait while the tenant is at its pending_ops limit is
 * decided at once: out-of-memory for a prompt, the plain refusal for a
 * delayed deny. */
authz_status authz_begin(session *s, const authz_query *q, authz_done_fn done, void *cookie,
                         proto_err *result, authz_pending **pending);

/* Withdraws a pending decision (its socket was dropped or its session is
 * closing): `done` is never called, a prompt nobody else waits for is
 * withdrawn from the agents. */
void authz_cancel(authz_pending *p);

/* The session is closing: answers remembered for it only are forgotten.
 * Every pending decision of the session must have been cancelled. */
void authz_session_closed(session *s);

/* Explains `req` under the server's current policy as policy_explain()
 * does, with the remembered answers of the tenant as a whole (no session):
 * the operator's `explain` command. */
void authz_explain(server *srv, const policy_request *req, policy_explain_fn fn, void *fn_opaque,
                   policy_verdict *out);

#endif
