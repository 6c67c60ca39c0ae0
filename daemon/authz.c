/* authz.c — policy enforcement: builds the policy_request for an operation,
 * asks policy_decide(), applies prompt fallbacks and logs the decision.
 *
 * Input: addresses already validated by sockrules (family, unicast) and the
 * tenant admitted at HELLO. The policy is the operator's, trusted.
 */
#include "authz.h"

#include <string.h>

#include "hostbind.h"
#include "log.h"
#include "lookup.h"
#include "server.h"
#include "sockrules.h"

static void endpoint_from_addr(const proto_addr *a, policy_endpoint *e) {
    memset(e, 0, sizeof(*e));
    if (a == NULL) {
        return; /* family 0: absent */
    }
    e->family = a->family == PROTO_IPV6 ? 6 : 4;
    memcpy(e->ip, a->ip, a->family == PROTO_IPV6 ? 16 : 4);
    e->port = a->port;
}

/* The error a deny verdict asks for, if it is a WASI code; else the default. */
static proto_err deny_error(const policy_verdict *v) {
    if (v->error >= PROTO_E_UNKNOWN && v->error <= PROTO_E_LAST_WASI) {
        return (proto_err)v->error;
    }
    return PROTO_E_ACCESS_DENIED;
}

/* One decision with the given host (NULL: none). */
static proto_err decide_with_host(session *s, const authz_query *q, const char *host) {
    policy_request req;
    policy_verdict v;
    policy_action action;

    memset(&req, 0, sizeof(req));
    memset(&v, 0, sizeof(v));
    req.tenant = session_tenant(s);
    req.op = q->op;
    req.implicit = q->implicit;
    endpoint_from_addr(q->local, &req.local);
    req.local.port_ephemeral = q->local != NULL && q->local_port_ephemeral;
    endpoint_from_addr(q->remote, &req.remote);
    req.host = host;

    policy_decide(server_policy(session_server(s)), &req, &v);

    action = v.action;
    if (action == POLICY_PROMPT) {
        /* No prompt broker yet: the rule's fallback for "no agent" applies.
         * A fallback of "prompt" would be circular and counts as deny. */
        action = v.prompt_on_no_agent == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
        log_info("session %llu tenant %s: %s asks for a prompt (%s) but no prompt agent is "
                 "available: applying %s",
                 (unsigned long long)session_id(s), req.tenant, policy_op_name(q->op), v.decided_by,
                 policy_action_name(action));
    }

    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char local[SOCKRULES_ADDR_STRLEN] = "-", remote[SOCKRULES_ADDR_STRLEN] = "-";
        if (q->local != NULL) {
            sockrules_addr_format(q->local, local, sizeof(local));
        }
        if (q->remote != NULL) {
            sockrules_addr_format(q->remote, remote, sizeof(remote));
        }
        log_debug("session %llu tenant %s handle %u: %s%s local %s remote %s host %s -> %s (%s)",
                  (unsigned long long)session_id(s), req.tenant, (unsigned)q->handle,
                  policy_op_name(q->op), q->implicit ? " (implicit)" : "", local, remote,
                  host != NULL ? host : "-", policy_action_name(action), v.decided_by);
    }
    /* The audit log will record here every decision with v.audit set. */
    if (q->verdict != NULL) {
        *q->verdict = v;
    }

    return action == POLICY_ALLOW ? PROTO_OK : deny_error(&v);
}

/* Operations whose destination may carry a host name from a binding. */
static bool op_uses_bindings(policy_op op) {
    return op == POLICY_OP_TCP_CONNECT || op == POLICY_OP_UDP_CONNECT || op == POLICY_OP_UDP_SEND;
}

proto_err authz_decide(session *s, const authz_query *q) {
    struct hostbind_entry *bound[AUTHZ_MAX_BOUND_NAMES];
    size_t nbound = 0;
    proto_err first = PROTO_OK;

    if (q->binding != NULL) {
        *q->binding = NULL;
    }
    if (q->host == NULL && q->remote != NULL && op_uses_bindings(q->op)) {
        nbound = lookup_bound_names(s, q->remote, bound, AUTHZ_MAX_BOUND_NAMES);
    }
    if (nbound == 0) {
        return decide_with_host(s, q, q->host);
    }
    for (size_t i = 0; i < nbound; i++) {
        proto_err err = decide_with_host(s, q, hostbind_entry_name(bound[i]));
        if (err == PROTO_OK) {
            if (q->binding != NULL) {
                *q->binding = bound[i];
            }
            return PROTO_OK;
        }
        if (i == 0) {
            first = err;
        }
    }
    return first;
}
