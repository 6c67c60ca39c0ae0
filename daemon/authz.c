/* authz.c — policy enforcement: builds the policy_request for an operation,
 * decides with remembered answers, hands prompts to the prompt broker,
 * holds delayed refusals, logs decisions and writes the audit records.
 *
 * Input: addresses already validated by sockrules (family, unicast) and the
 * tenant admitted at HELLO. The policy is the operator's, trusted. Audit
 * strings that a guest may influence are escaped by audit.c.
 */
#include "authz.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "hostbind.h"
#include "log.h"
#include "lookup.h"
#include "prompt.h"
#include "server.h"
#include "sockrules.h"

/* Audit records that could not be written are reported at most this
 * often: a full disk must not also flood the journal. */
static log_ratelimit audit_failure_log = LOG_RATELIMIT_INIT(10000, 3);

/* Prompt fallbacks (no agent, over the cap) are logged at most this often;
 * a guest retrying in a loop must not flood the log. */
static log_ratelimit fallback_log = LOG_RATELIMIT_INIT(10000, 10);

/* What a decision was about, kept for the audit record of a decision that
 * ends later. */
typedef struct authz_subject {
    policy_op op;
    bool implicit;
    bool has_local, has_remote;
    proto_addr local, remote;
    uint32_t handle;
    char host[256]; /* the bound or looked-up name, "" for none */
} authz_subject;

typedef enum pending_kind { PENDING_PROMPT, PENDING_DELAY } pending_kind;

struct authz_pending {
    session *s;
    authz_done_fn done;
    void *cookie;
    pending_kind kind;
    prompt_waiter *waiter; /* PENDING_PROMPT */
    uv_timer_t *timer;     /* PENDING_DELAY; freed by its close callback */
    authz_subject subject;
    char decided_by[sizeof(((policy_verdict *)0)->decided_by)];
    bool audit;
    proto_err refusal; /* what a refusal returns */
    uint64_t started_ns;
    policy_data_path *data_path_out; /* the query's data_path, written on allow */
    policy_data_path data_path;      /* the prompting rule's allow.data_path */
};

/* The remembered-answer hook's context for one decision. */
typedef struct answers_ctx {
    prompt_broker *broker;
    const policy *pol;
    uint64_t session;
    char id[32];
} answers_ctx;

static bool answers_hook(void *opaque, const policy_request *req, policy_answer *out) {
    answers_ctx *ctx = opaque;

    return prompt_remembered(ctx->broker, ctx->pol, ctx->session, req, out, ctx->id,
                             sizeof(ctx->id));
}

static void endpoint_from_addr(const proto_addr *a, policy_endpoint *e) {
    memset(e, 0, sizeof(*e));
    if (a == NULL) {
        return; /* family 0: absent */
    }
    e->family = a->family == PROTO_IPV6 ? 6 : 4;
    memcpy(e->ip, a->ip, a->family == PROTO_IPV6 ? 16 : 4);
    e->port = a->port;
}

/* The error a refusal reports, if the verdict names a WASI code; else the
 * default. */
static proto_err refusal_error(const policy_verdict *v) {
    if (v->error >= PROTO_E_UNKNOWN && v->error <= PROTO_E_LAST_WASI) {
        return (proto_err)v->error;
    }
    return PROTO_E_ACCESS_DENIED;
}

static void subject_from_query(const authz_query *q, const char *host, authz_subject *out) {
    memset(out, 0, sizeof(*out));
    if (host != NULL) {
        snprintf(out->host, sizeof(out->host), "%s", host);
    }
    out->op = q->op;
    out->implicit = q->implicit;
    out->handle = q->handle;
    if (q->local != NULL) {
        out->has_local = true;
        out->local = *q->local;
    }
    if (q->remote != NULL) {
        out->has_remote = true;
        out->remote = *q->remote;
    }
}

/* Builds the request for one host (NULL: none) and decides it with the
 * session's remembered answers. */
static void decide(session *s, const authz_query *q, const char *host, policy_request *req,
                   policy_verdict *v) {
    server *srv = session_server(s);
    answers_ctx ctx;

    memset(req, 0, sizeof(*req));
    req->tenant = session_tenant(s);
    req->op = q->op;
    req->implicit = q->implicit;
    endpoint_from_addr(q->local, &req->local);
    req->local.port_ephemeral = q->local != NULL && q->local_port_ephemeral;
    endpoint_from_addr(q->remote, &req->remote);
    req->host = host;

    memset(&ctx, 0, sizeof(ctx));
    ctx.broker = server_broker(srv);
    ctx.pol = server_policy(srv);
    ctx.session = session_id(s);
    policy_decide_with_answers(ctx.pol, req, answers_hook, &ctx, v);
}

/* Operations whose destination may carry a host name from a binding. */
static bool op_uses_bindings(policy_op op) {
    return op == POLICY_OP_TCP_CONNECT || op == POLICY_OP_UDP_CONNECT || op == POLICY_OP_UDP_SEND;
}

/* Decides q, once per name the destination is bound to (see authz.h): the
 * first allow wins, else the first prompt, else the first refusal. On
 * return *req and *v describe the chosen decision (req->host is its name,
 * borrowed for this callback), and *binding is the binding of an allow. */
static void decide_with_bindings_unlogged(session *s, const authz_query *q, policy_request *req,
                                          policy_verdict *v, struct hostbind_entry **binding) {
    struct hostbind_entry *bound[AUTHZ_MAX_BOUND_NAMES];
    size_t nbound = 0, chosen = 0;
    bool prompted = false;

    *binding = NULL;
    if (q->host == NULL && q->remote != NULL && op_uses_bindings(q->op)) {
        nbound = lookup_bound_names(s, q->remote, bound, AUTHZ_MAX_BOUND_NAMES);
    }
    if (nbound == 0) {
        decide(s, q, q->host, req, v);
        return;
    }
    for (size_t i = 0; i < nbound; i++) {
        decide(s, q, hostbind_entry_name(bound[i]), req, v);
        if (v->action == POLICY_ALLOW) {
            *binding = bound[i];
            return;
        }
        if (v->action == POLICY_PROMPT && !prompted) {
            prompted = true;
            chosen = i;
        }
    }
    if (chosen != nbound - 1) {
        /* Decisions are pure and cheap: decide the chosen name again so
         * that req and v describe it. */
        decide(s, q, hostbind_entry_name(bound[chosen]), req, v);
    }
}

/* decide_with_bindings_unlogged, and at debug level which binding (name,
 * and what allowed its lookup) the decision was made with. */
static void decide_with_bindings(session *s, const authz_query *q, policy_request *req,
                                 policy_verdict *v, struct hostbind_entry **binding) {
    decide_with_bindings_unlogged(s, q, req, v, binding);
    if (*binding != NULL) {
        log_debug("session %" PRIu64 " handle %u: %s is bound to %s by a lookup %s allowed",
                  session_id(s), (unsigned)q->handle, policy_op_name(q->op),
                  hostbind_entry_name(*binding), hostbind_entry_rule(*binding));
    }
}

static uint64_t elapsed_us(uint64_t started_ns) {
    return (uv_hrtime() - started_ns) / 1000u;
}

/* --- audit ---------------------------------------------------------------------- */

static const char *subject_family(const authz_subject *sub) {
    const proto_addr *a = sub->has_remote ? &sub->remote : sub->has_local ? &sub->local : NULL;

    if (a == NULL) {
        return NULL;
    }
    return a->family == PROTO_IPV6 ? "ipv6" : "ipv4";
}

/* Writes one audit record for a decision of session s, if the server has
 * an audit log. `err` is PROTO_OK for none. */
static void audit_decision(session *s, const authz_subject *sub, const char *decision,
                           const char *decided_by, const char *shadow, proto_err err,
                           uint64_t latency_us) {
    audit_log *log = server_audit_log(session_server(s));
    const struct ucred *peer = session_peer(s);
    char local[SOCKRULES_ADDR_STRLEN], remote[SOCKRULES_ADDR_STRLEN];
    char op[48];
    audit_record rec;
    int r;

    if (log == NULL) {
        return;
    }
    snprintf(op, sizeof(op), "%s%s", policy_op_name(sub->op), sub->implicit ? "(implicit)" : "");
    memset(&rec, 0, sizeof(rec));
    rec.tenant = session_tenant(s);
    rec.session = session_id(s);
    rec.peer_uid = peer->uid;
    rec.peer_gid = peer->gid;
    rec.peer_pid = peer->pid;
    rec.op = op;
    rec.family = subject_family(sub);
    rec.local = sub->has_local ? sockrules_addr_format(&sub->local, local, sizeof(local)) : NULL;
    rec.remote =
        sub->has_remote ? sockrules_addr_format(&sub->remote, remote, sizeof(remote)) : NULL;
    rec.host = sub->host[0] != '\0' ? sub->host : NULL;
    rec.decision = decision;
    rec.decided_by = decided_by;
    rec.shadow = shadow;
    rec.latency_us = latency_us;
    rec.error_returned = err == PROTO_OK ? NULL : proto_err_name(err);
    r = audit_write(log, &rec);
    if (r < 0) {
        log_write_ratelimited(&audit_failure_log, LOG_LEVEL_ERROR,
                              "cannot write an audit record (session %" PRIu64 " %s %s): %s",
                              session_id(s), op, decision, strerror(-r));
    }
}

/* "rule:x would deny", or NULL without a shadow rule. */
static const char *shadow_text(const policy_verdict *v, char *buf, size_t len) {
    if (v->shadow_by == NULL) {
        return NULL;
    }
    snprintf(buf, len, "%s would %s", v->shadow_by, policy_action_name(v->shadow_action));
    return buf;
}

static void audit_immediate(session *s, const authz_query *q, const policy_request *req,
                            const policy_verdict *v, const char *decision, const char *decided_by,
                            proto_err err, uint64_t started_ns) {
    authz_subject sub;
    char shadow[sizeof(v->decided_by) + 16];

    if (!v->audit) {
        return;
    }
    subject_from_query(q, req->host, &sub);
    audit_decision(s, &sub, decision, decided_by, shadow_text(v, shadow, sizeof(shadow)), err,
                   elapsed_us(started_ns));
}

static void log_decision(session *s, const authz_query *q, const char *host, policy_action action,
                         const char *decided_by) {
    char local[SOCKRULES_ADDR_STRLEN] = "-", remote[SOCKRULES_ADDR_STRLEN] = "-";

    if (!log_enabled(LOG_LEVEL_DEBUG)) {
        return;
    }
    if (q->local != NULL) {
        sockrules_addr_format(q->local, local, sizeof(local));
    }
    if (q->remote != NULL) {
        sockrules_addr_format(q->remote, remote, sizeof(remote));
    }
    log_debug("session %" PRIu64 " tenant %s handle %u: %s%s local %s remote %s host %s -> %s (%s)",
              session_id(s), session_tenant(s), (unsigned)q->handle, policy_op_name(q->op),
              q->implicit ? " (implicit)" : "", local, remote, host != NULL ? host : "-",
              policy_action_name(action), decided_by);
}

/* --- immediate decisions ------------------------------------------------------------ */

proto_err authz_decide(session *s, const authz_query *q) {
    uint64_t started = uv_hrtime();
    policy_request req;
    policy_verdict v;
    policy_action action;
    char decision[32];
    proto_err err;
    struct hostbind_entry *binding;

    decide_with_bindings(s, q, &req, &v, &binding);
    action = v.action;
    if (action == POLICY_PROMPT) {
        /* This operation cannot wait for an agent: the rule's fallback for
         * "no agent" applies. A fallback of "prompt" counts as deny. */
        action = v.prompt_on_no_agent == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
        log_write_ratelimited(&fallback_log, LOG_LEVEL_INFO,
                              "session %" PRIu64 " tenant %s: %s asks for a prompt (%s) but "
                              "cannot wait for one: applying %s",
                              session_id(s), req.tenant, policy_op_name(q->op), v.decided_by,
                              policy_action_name(action));
        snprintf(decision, sizeof(decision), "no-agent-%s", policy_action_name(action));
    } else {
        snprintf(decision, sizeof(decision), "%s", policy_action_name(action));
    }
    log_decision(s, q, req.host, action, v.decided_by);
    err = action == POLICY_ALLOW ? PROTO_OK : refusal_error(&v);
    if (err == PROTO_OK && q->data_path != NULL) {
        *q->data_path = v.data_path;
    }
    audit_immediate(s, q, &req, &v, decision, v.decided_by, err, started);
    if (q->verdict != NULL) {
        *q->verdict = v;
    }
    if (q->binding != NULL) {
        /* A binding that only a no-agent fallback allowed is still the
         * name the connection was allowed through. */
        *q->binding = err == PROTO_OK ? binding : NULL;
    }
    return err;
}

/* --- pending decisions --------------------------------------------------------------- */

static bool at_pending_limit(session *s) {
    policy_limits limits =
        policy_tenant_limits(server_policy(session_server(s)), session_tenant(s));

    return limits.pending_ops != 0 && session_usage(s)->pending_ops >= limits.pending_ops;
}

static authz_pending *pending_new(session *s, const authz_query *q, const char *host,
                                  const policy_verdict *v, pending_kind kind, authz_done_fn done,
                                  void *cookie, uint64_t started_ns) {
    authz_pending *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        return NULL;
    }
    p->s = s;
    p->done = done;
    p->cookie = cookie;
    p->kind = kind;
    subject_from_query(q, host, &p->subject);
    memcpy(p->decided_by, v->decided_by, sizeof(p->decided_by));
    p->decided_by[sizeof(p->decided_by) - 1] = '\0';
    p->audit = v->audit;
    p->refusal = refusal_error(v);
    p->started_ns = started_ns;
    p->data_path_out = q->data_path;
    p->data_path = v->data_path;
    /* A waiting decision holds state in the daemon: it counts as one of
     * the tenant's pending operations until it ends. */
    session_usage(s)->pending_ops++;
    return p;
}

/* Ends p: uncounts it, frees it, and reports the result. */
static void pending_finish(authz_pending *p, proto_err result) {
    authz_done_fn done = p->done;
    void *cookie = p->cookie;

    if (result == PROTO_OK && p->data_path_out != NULL) {
        *p->data_path_out = p->data_path;
    }
    session_usage(p->s)->pending_ops--;
    free(p);
    done(cookie, result);
}

static void on_delay_timer_closed(uv_handle_t *h) {
    free(h);
}

static void on_delay_over(uv_timer_t *t) {
    authz_pending *p = t->data;

    p->timer = NULL;
    uv_close((uv_handle_t *)t, on_delay_timer_closed);
    pending_finish(p, p->refusal);
}

static void on_prompt_done(void *opaque, const prompt_result *r) {
    authz_pending *p = opaque;
    char decision[32], decided_by[sizeof(p->decided_by)];
    proto_err result = r->action == POLICY_ALLOW ? PROTO_OK : p->refusal;

    p->waiter = NULL; /* the broker frees it */
    if (r->outcome == PROMPT_ANSWERED) {
        snprintf(decision, sizeof(decision), "prompt-%s", policy_action_name(r->action));
        snprintf(decided_by, sizeof(decided_by), "prompt:%s", r->agent ? r->agent : "?");
    } else {
        snprintf(decision, sizeof(decision), "%s-%s", prompt_outcome_name(r->outcome),
                 policy_action_name(r->action));
        memcpy(decided_by, p->decided_by, sizeof(decided_by));
    }
    log_debug("session %" PRIu64 " handle %u: prompt %" PRIu64 " ended: %s (%s)", session_id(p->s),
              (unsigned)p->subject.handle, r->prompt_id, decision, decided_by);
    if (p->audit) {
        audit_decision(p->s, &p->subject, decision, decided_by, NULL, result,
                       elapsed_us(p->started_ns));
    }
    pending_finish(p, result);
}

authz_status authz_begin(session *s, const authz_query *q, authz_done_fn done, void *cookie,
                         proto_err *result, authz_pending **pending) {
    uint64_t started = uv_hrtime();
    policy_request req;
    policy_verdict v;
    prompt_question question;
    prompt_result now;
    prompt_waiter *waiter = NULL;
    authz_pending *p;
    char decision[32];
    const struct ucred *peer = session_peer(s);
    struct hostbind_entry *binding;

    if (q->binding != NULL) {
        *q->binding = NULL;
    }
    decide_with_bindings(s, q, &req, &v, &binding);
    log_decision(s, q, req.host, v.action, v.decided_by);
    if (q->verdict != NULL) {
        *q->verdict = v;
    }

    switch (v.action) {
    case POLICY_ALLOW:
        audit_immediate(s, q, &req, &v, "allow", v.decided_by, PROTO_OK, started);
        if (q->binding != NULL) {
            *q->binding = binding;
        }
        *result = PROTO_OK;
        if (q->data_path != NULL) {
            *q->data_path = v.data_path;
        }
        return AUTHZ_DECIDED;

    case POLICY_DENY:
        *result = refusal_error(&v);
        audit_immediate(s, q, &req, &v, "deny", v.decided_by, *result, started);
        if (v.deny_delay_ms == 0 || at_pending_limit(s)) {
            return AUTHZ_DECIDED;
        }
        /* A tarpit: the refusal is reported once the delay is over. */
        p = pending_new(s, q, req.host, &v, PENDING_DELAY, done, cookie, started);
        if (p == NULL) {
            return AUTHZ_DECIDED;
        }
        p->timer = malloc(sizeof(*p->timer));
        if (p->timer == NULL) {
            session_usage(s)->pending_ops--;
            free(p);
            return AUTHZ_DECIDED;
        }
        uv_timer_init(session_loop(s), p->timer);
        p->timer->data = p;
        uv_timer_start(p->timer, on_delay_over, v.deny_delay_ms, 0);
        *pending = p;
        return AUTHZ_PENDING;

    case POLICY_PROMPT:
    default:
        break;
    }

    if (at_pending_limit(s)) {
        /* WASI has no "too many pending operations" code; out-of-memory is
         * the nearest meaning (the daemon refuses to hold more state). */
        *result = PROTO_E_OUT_OF_MEMORY;
        log_write_ratelimited(&fallback_log, LOG_LEVEL_INFO,
                              "session %" PRIu64 " tenant %s: %s would prompt (%s) but the tenant "
                              "is at its limit of pending operations",
                              session_id(s), req.tenant, policy_op_name(q->op), v.decided_by);
        audit_immediate(s, q, &req, &v, "deny", "limit:pending_ops", *result, started);
        return AUTHZ_DECIDED;
    }
    p = pending_new(s, q, req.host, &v, PENDING_PROMPT, done, cookie, started);
    memset(&question, 0, sizeof(question));
    question.req = &req;
    question.verdict = &v;
    question.session = session_id(s);
    question.pid = peer->pid;
    question.uid = peer->uid;
    question.gid = peer->gid;
    if (p != NULL &&
        prompt_ask(server_broker(session_server(s)), &question, on_prompt_done, p, &waiter, &now)) {
        p->waiter = waiter;
        audit_immediate(s, q, &req, &v, "prompt", v.decided_by, PROTO_OK, started);
        *pending = p;
        return AUTHZ_PENDING;
    }
    if (p == NULL) {
        memset(&now, 0, sizeof(now));
        now.action = v.prompt_on_no_agent == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
        now.outcome = PROMPT_NO_AGENT;
    } else {
        session_usage(s)->pending_ops--;
        free(p);
    }
    log_write_ratelimited(&fallback_log, LOG_LEVEL_INFO,
                          "session %" PRIu64 " tenant %s: %s asks for a prompt (%s): %s: "
                          "applying %s",
                          session_id(s), req.tenant, policy_op_name(q->op), v.decided_by,
                          now.outcome == PROMPT_OVER_CAP
                              ? "too many prompts pending for the tenant"
                              : "no prompt agent may answer for the tenant",
                          policy_action_name(now.action));
    *result = now.action == POLICY_ALLOW ? PROTO_OK : refusal_error(&v);
    if (*result == PROTO_OK && q->data_path != NULL) {
        *q->data_path = v.data_path;
    }
    snprintf(decision, sizeof(decision), "%s-%s", prompt_outcome_name(now.outcome),
             policy_action_name(now.action));
    audit_immediate(s, q, &req, &v, decision, v.decided_by, *result, started);
    return AUTHZ_DECIDED;
}

void authz_cancel(authz_pending *p) {
    if (p == NULL) {
        return;
    }
    if (p->kind == PENDING_PROMPT) {
        prompt_cancel(p->waiter);
        if (p->audit) {
            audit_decision(p->s, &p->subject, "withdrawn", p->decided_by, NULL, PROTO_OK,
                           elapsed_us(p->started_ns));
        }
    } else if (p->timer != NULL) {
        uv_close((uv_handle_t *)p->timer, on_delay_timer_closed);
    }
    session_usage(p->s)->pending_ops--;
    free(p);
}

void authz_session_closed(session *s) {
    prompt_session_closed(server_broker(session_server(s)), session_id(s));
}

void authz_explain(server *srv, const policy_request *req, policy_explain_fn fn, void *fn_opaque,
                   policy_verdict *out) {
    answers_ctx ctx;

    memset(&ctx, 0, sizeof(ctx));
    ctx.broker = server_broker(srv);
    ctx.pol = server_policy(srv);
    ctx.session = 0;
    policy_explain(ctx.pol, req, answers_hook, &ctx, fn, fn_opaque, out);
}
