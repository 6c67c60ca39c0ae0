/* match.c — the pure decision function and its explaining twin.
 *
 * Input: a compiled policy (trusted) and a request from the daemon (trusted
 * to be a policy_request, but its host name is guest-controlled text and is
 * normalised and checked here before any comparison). Evaluation order:
 * unknown tenant, protocols, guards (in order), implicit binds, remembered
 * answers, tenant rules (first match; shadow rules only record), tenant
 * default, global default.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "policy-internal.h"

/* Most sorted candidate runs one request can hit: per address index one per
 * prefix length (129 for IPv6, two indexes), two per port index, one per
 * host label (127 at most) plus the exact name, the unindexed and the
 * implicit lists. */
#define MATCH_MAX_RUNS 400

typedef struct norm_endpoint {
    bool present;
    uint8_t family;
    uint8_t addr[16];
    uint16_t port;
    bool ephemeral;
} norm_endpoint;

typedef struct norm_request {
    const policy_request *req;
    policy_op op;
    bool implicit;
    norm_endpoint local, remote;
    uint8_t family; /* the remote's effective family, else the local's, else 0 */
    bool has_host;
    char host[POLICY_MAX_HOST + 2];
    size_t host_len;
} norm_request;

static void normalise_endpoint(const policy_endpoint *ep, norm_endpoint *out) {
    memset(out, 0, sizeof(*out));
    pol_effective_address(ep, &out->family, out->addr);
    out->present = out->family != 0;
    out->port = ep->port;
    out->ephemeral = ep->port_ephemeral;
}

static void normalise_request(const policy_request *req, norm_request *q) {
    memset(q, 0, sizeof(*q));
    q->req = req;
    q->op = req->op;
    q->implicit = req->implicit;
    normalise_endpoint(&req->local, &q->local);
    normalise_endpoint(&req->remote, &q->remote);
    q->family = q->remote.present ? q->remote.family : q->local.family;
    if (req->host != NULL) {
        size_t len = strnlen(req->host, POLICY_MAX_HOST + 2);
        /* Longer than a DNS name may be (plus its trailing dot): no name. */
        if (len <= POLICY_MAX_HOST + 1) {
            memcpy(q->host, req->host, len);
            q->host[len] = '\0';
            q->host_len = pol_host_normalise(q->host, len);
            q->has_host = q->host_len > 0;
        }
    }
}

static bool ports_contain(const pol_port_list *list, uint16_t port, bool ephemeral) {
    if (list->ephemeral && (port == 0 || ephemeral))
        return true;
    for (size_t i = 0; i < list->count; i++) {
        if (port >= list->ranges[i].low && port <= list->ranges[i].high)
            return true;
    }
    return false;
}

static bool addresses_contain(const pol_addr_list *list, const norm_endpoint *ep) {
    for (size_t i = 0; i < list->table_count; i++) {
        if (pol_prefix_table_contains(list->tables[i], ep->family, ep->addr))
            return true;
    }
    return false;
}

static bool host_matches(const pol_host_pattern *pattern, const norm_request *q) {
    switch (pattern->kind) {
    case POL_HOST_ANY:
        return true;
    case POL_HOST_EXACT:
        return q->host_len == pattern->len && memcmp(q->host, pattern->name, pattern->len) == 0;
    case POL_HOST_SUFFIX:
        /* One or more labels below the suffix, never the suffix itself. */
        return q->host_len > pattern->len + 1 && q->host[q->host_len - pattern->len - 1] == '.' &&
               memcmp(q->host + q->host_len - pattern->len, pattern->name, pattern->len) == 0;
    }
    return false;
}

/* Writes a reason to `why` (only when explaining; NULL otherwise). */
static void why_set(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t why_len, const char *fmt, ...) {
    if (why == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

static void spelled_list(const pol_addr_list *list, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < list->spelling_count; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", list->spelling[i]);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

static void spelled_ports(const pol_port_list *list, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = '\0';
    if (list->ephemeral) {
        int w = snprintf(buf, len, "ephemeral");
        used = w > 0 && (size_t)w < len ? (size_t)w : 0;
    }
    for (size_t i = 0; i < list->count; i++) {
        int w;
        if (list->ranges[i].low == list->ranges[i].high)
            w = snprintf(buf + used, len - used, "%s%u", used ? ", " : "", list->ranges[i].low);
        else
            w = snprintf(buf + used, len - used, "%s%u-%u", used ? ", " : "", list->ranges[i].low,
                         list->ranges[i].high);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
}

static const char *family_name(uint8_t family) {
    return family == 4 ? "ipv4" : family == 6 ? "ipv6" : "none";
}

/* The regular match of a rule: every key that applies to the operation
 * must hold. `why` (may be NULL) receives the first key that failed. */
static bool rule_matches_keys(const pol_rule *r, const norm_request *q, char *why, size_t why_len) {
    unsigned keys = r->keys & pol_op_keys(q->op);
    char text[256], addr[64];
    if (keys & POL_KEY_FAMILY) {
        unsigned bit = q->family == 4 ? 1u : q->family == 6 ? 2u : 0u;
        if (!(r->families & bit)) {
            why_set(why, why_len, "family %s is not %s", family_name(q->family),
                    r->families == 1 ? "ipv4" : "ipv6");
            return false;
        }
    }
    if (keys & POL_KEY_REMOTE) {
        if (!q->remote.present || !addresses_contain(&r->remote, &q->remote)) {
            if (why != NULL) {
                spelled_list(&r->remote, text, sizeof(text));
                pol_format_ip(q->remote.family, q->remote.addr, addr, sizeof(addr));
                why_set(why, why_len, "remote %s is not in [%s]",
                        q->remote.present ? addr : "(none)", text);
            }
            return false;
        }
    }
    if (keys & POL_KEY_PORTS) {
        if (!q->remote.present || !ports_contain(&r->ports, q->remote.port, false)) {
            if (why != NULL) {
                spelled_ports(&r->ports, text, sizeof(text));
                why_set(why, why_len, "remote port %u is not in [%s]", q->remote.port, text);
            }
            return false;
        }
    }
    if (keys & POL_KEY_LOCAL) {
        if (!q->local.present || !addresses_contain(&r->local, &q->local)) {
            if (why != NULL) {
                spelled_list(&r->local, text, sizeof(text));
                pol_format_ip(q->local.family, q->local.addr, addr, sizeof(addr));
                why_set(why, why_len, "local %s is not in [%s]", q->local.present ? addr : "(none)",
                        text);
            }
            return false;
        }
    }
    if (keys & POL_KEY_LOCAL_PORTS) {
        if (!q->local.present ||
            !ports_contain(&r->local_ports, q->local.port, q->local.ephemeral)) {
            if (why != NULL) {
                spelled_ports(&r->local_ports, text, sizeof(text));
                why_set(why, why_len, "local port %u is not in [%s]", q->local.port, text);
            }
            return false;
        }
    }
    if (keys & POL_KEY_HOST) {
        bool any = false;
        for (size_t i = 0; q->has_host && !any && i < r->host_count; i++)
            any = host_matches(&r->hosts[i], q);
        if (!any) {
            if (q->op != POLICY_OP_LOOKUP && q->req->host == NULL)
                why_set(why, why_len, "host: the address was not obtained by a lookup");
            else if (!q->has_host)
                why_set(why, why_len, "host: the name is not a valid DNS name");
            else
                why_set(why, why_len, "host %s does not match", q->host);
            return false;
        }
    }
    return true;
}

/* The full match of one rule (or guard) against a request. */
static bool rule_matches(const pol_rule *r, const norm_request *q, char *why, size_t why_len) {
    unsigned bit = 1u << q->op;
    bool regular = (r->ops & bit) != 0;
    bool implicit = q->implicit && (r->implicit_ops & bit) != 0;
    if (!regular && !implicit) {
        if (why != NULL) {
            if (r->listed_ops & bit)
                why_set(why, why_len, "its keys do not apply to %s", policy_op_name(q->op));
            else
                why_set(why, why_len, "%s is not among its operations", policy_op_name(q->op));
        }
        return false;
    }
    if (regular && rule_matches_keys(r, q, why, why_len))
        return true;
    if (implicit) {
        /* The implicit ephemeral bind of a connect shorthand: only the
         * family is checked, the connect itself is checked separately. */
        unsigned fbit = q->local.family == 4 ? 1u : q->local.family == 6 ? 2u : 0u;
        if (q->local.present && (r->families & fbit) && q->local.port == 0)
            return true;
        why_set(why, why_len,
                "an implicit bind of family %s on port %u is not covered by its "
                "connect shorthand",
                family_name(q->local.family), q->local.port);
    }
    return false;
}

/* ---- Candidate runs ---- */

typedef struct run {
    const unsigned char *base;
    size_t stride, offset;
    size_t pos, end;
} run;

typedef struct cursor {
    run runs[MATCH_MAX_RUNS];
    size_t count;
    long last;
} cursor;

static void cursor_add(cursor *c, const void *base, size_t stride, size_t offset, size_t pos,
                       size_t end) {
    if (pos >= end || c->count == MATCH_MAX_RUNS)
        return;
    c->runs[c->count++] = (run){base, stride, offset, pos, end};
}

static uint32_t run_value(const run *r) {
    uint32_t v;
    memcpy(&v, r->base + r->pos * r->stride + r->offset, sizeof(v));
    return v;
}

static void cursor_add_prefixes(cursor *c, const pol_prefix_table *t, const norm_endpoint *ep) {
    if (!ep->present)
        return;
    for (size_t g = 0; g < t->group_count; g++) {
        const pol_prefix_group *group = &t->groups[g];
        if (group->family != ep->family)
            continue;
        uint8_t masked[16];
        pol_mask(ep->family, group->length, ep->addr, masked);
        size_t lo = pol_prefix_group_lower_bound(t, group, masked);
        /* The run ends at the first bigger address: a second binary search. */
        size_t a = lo, b = group->end;
        while (a < b) {
            size_t mid = a + (b - a) / 2;
            if (memcmp(t->entries[mid].prefix.addr, masked, 16) <= 0)
                a = mid + 1;
            else
                b = mid;
        }
        cursor_add(c, t->entries, sizeof(*t->entries), offsetof(pol_prefix_entry, value), lo, a);
    }
}

static void cursor_add_port(cursor *c, const pol_key_entry *entries, size_t count, uint32_t port) {
    size_t a = 0, b = count;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (entries[mid].key < port)
            a = mid + 1;
        else
            b = mid;
    }
    size_t lo = a;
    b = count;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (entries[mid].key <= port)
            a = mid + 1;
        else
            b = mid;
    }
    cursor_add(c, entries, sizeof(*entries), offsetof(pol_key_entry, rule), lo, a);
}

static void cursor_add_name(cursor *c, const pol_name_entry *entries, size_t count,
                            const char *name) {
    size_t a = 0, b = count;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (strcmp(entries[mid].name, name) < 0)
            a = mid + 1;
        else
            b = mid;
    }
    size_t lo = a;
    b = count;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (strcmp(entries[mid].name, name) <= 0)
            a = mid + 1;
        else
            b = mid;
    }
    cursor_add(c, entries, sizeof(*entries), offsetof(pol_name_entry, rule), lo, a);
}

static void cursor_init(cursor *c, const pol_op_index *idx, const norm_request *q) {
    c->count = 0;
    c->last = -1;
    int f = q->family == 4 ? 1 : q->family == 6 ? 2 : 0;
    cursor_add(c, idx->unindexed[f], sizeof(uint32_t), 0, 0, idx->unindexed_count[f]);
    if (q->implicit) {
        int lf = q->local.family == 4 ? 1 : q->local.family == 6 ? 2 : 0;
        if (lf != 0)
            cursor_add(c, idx->implicit[lf], sizeof(uint32_t), 0, 0, idx->implicit_count[lf]);
    }
    cursor_add_prefixes(c, &idx->remote, &q->remote);
    cursor_add_prefixes(c, &idx->local, &q->local);
    if (q->remote.present)
        cursor_add_port(c, idx->ports, idx->port_count, q->remote.port);
    if (q->local.present) {
        cursor_add_port(c, idx->local_ports, idx->local_port_count, q->local.port);
        if (q->local.ephemeral && q->local.port != 0)
            cursor_add_port(c, idx->local_ports, idx->local_port_count, 0);
    }
    if (q->has_host) {
        cursor_add_name(c, idx->exact, idx->exact_count, q->host);
        for (size_t i = 0; i < q->host_len; i++) {
            if (q->host[i] == '.')
                cursor_add_name(c, idx->suffix, idx->suffix_count, q->host + i + 1);
        }
    }
}

/* The next candidate rule index in ascending order, or -1. */
static long cursor_next(cursor *c) {
    for (;;) {
        long best = -1;
        for (size_t i = 0; i < c->count; i++) {
            run *r = &c->runs[i];
            if (r->pos < r->end) {
                long v = (long)run_value(r);
                if (best < 0 || v < best)
                    best = v;
            }
        }
        if (best < 0)
            return -1;
        for (size_t i = 0; i < c->count; i++) {
            run *r = &c->runs[i];
            if (r->pos < r->end && (long)run_value(r) == best)
                r->pos++;
        }
        if (best > c->last) {
            c->last = best;
            return best;
        }
    }
}

/* ---- Evaluation ---- */

typedef struct eval {
    const policy *p;
    const norm_request *q;
    long tenant;
    policy_verdict *out;
    policy_explain_fn fn; /* NULL: fast path, no reasons */
    void *fn_opaque;
    const pol_rule *decided;
    const pol_rule *logged;
    const pol_rule *shadow;
} eval;

static void report(eval *e, const char *decider, policy_explain_outcome outcome,
                   policy_action action, const char *reason, const pol_rule *r) {
    if (e->fn == NULL)
        return;
    policy_explain_step step = {
        .decider = decider,
        .outcome = outcome,
        .action = action,
        .reason = reason,
        .line = r ? r->line : 0,
        .column = r ? r->column : 0,
        .template_name = r ? r->template_name : NULL,
    };
    e->fn(e->fn_opaque, &step);
}

static uint16_t default_error(const policy *p, policy_op op) {
    return op == POLICY_OP_LOOKUP ? p->settings.lookup_error : POLICY_ERR_ACCESS_DENIED;
}

static bool tenant_exempt(const pol_rule *g, long tenant) {
    size_t lo = 0, hi = g->exempt_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((long)g->exempt[mid] == tenant)
            return true;
        if ((long)g->exempt[mid] < tenant)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void verdict_set_decider(policy_verdict *out, const char *decider) {
    snprintf(out->decided_by, sizeof(out->decided_by), "%s", decider);
}

static void verdict_set_prompt(const policy *p, policy_verdict *out,
                               const policy_prompt_settings *prompt) {
    if (prompt == NULL)
        prompt = &p->settings.prompt;
    out->prompt = prompt;
    out->prompt_timeout_ms = prompt->timeout_ms;
    out->prompt_on_timeout = prompt->on_timeout;
    out->prompt_on_no_agent = prompt->on_no_agent;
    out->prompt_note = prompt->note;
}

static void decide_by_rule(eval *e, const pol_rule *r) {
    policy_verdict *out = e->out;
    e->decided = r;
    out->action = r->is_guard ? POLICY_DENY : r->action;
    verdict_set_decider(out, r->decider);
    out->rule_id = r->id;
    if (out->action != POLICY_ALLOW) {
        out->error = r->deny_error ? r->deny_error : default_error(e->p, e->q->op);
        out->deny_delay_ms = r->deny_delay_ms;
    }
    if (out->action != POLICY_DENY) {
        out->data_path = r->data_path;
        out->tls_require = r->tls_require;
        out->tls_server_name = r->tls_server_name;
    }
    if (out->action == POLICY_PROMPT)
        verdict_set_prompt(e->p, out, r->prompt);
}

static void decide_by_default(eval *e, const char *decider, policy_action action) {
    policy_verdict *out = e->out;
    out->action = action;
    verdict_set_decider(out, decider);
    if (action != POLICY_ALLOW)
        out->error = default_error(e->p, e->q->op);
    if (action == POLICY_PROMPT)
        verdict_set_prompt(e->p, out, NULL);
}

/* Handles one matching guard or rule; true when it decided. */
static bool visit_match(eval *e, const pol_rule *r) {
    if (r->is_guard) {
        if (tenant_exempt(r, e->tenant)) {
            report(e, r->decider, POLICY_EXPLAIN_EXEMPT, POLICY_DENY,
                   "matched, but the tenant is listed in exempt_tenants", r);
            return false;
        }
        if (r->guard_log) {
            if (e->logged == NULL)
                e->logged = r;
            report(e, r->decider, POLICY_EXPLAIN_LOGGED, POLICY_ALLOW,
                   "matched; action log records the request and goes on", r);
            return false;
        }
        decide_by_rule(e, r);
        report(e, r->decider, POLICY_EXPLAIN_DECIDED, POLICY_DENY, "matched", r);
        return true;
    }
    if (r->shadow) {
        if (e->shadow == NULL)
            e->shadow = r;
        char reason[96];
        snprintf(reason, sizeof(reason), "matched; shadow rule would %s, evaluation goes on",
                 policy_action_name(r->action));
        report(e, r->decider, POLICY_EXPLAIN_SHADOW, r->action, reason, r);
        return false;
    }
    decide_by_rule(e, r);
    report(e, r->decider, POLICY_EXPLAIN_DECIDED, r->action, "matched", r);
    return true;
}

/* Walks a ruleset in order; true when a rule decided. */
static bool eval_ruleset(eval *e, const pol_ruleset *set) {
    if (e->fn != NULL) {
        /* Explaining: every rule in order, each with its reason. */
        for (size_t i = 0; i < set->count; i++) {
            char why[512];
            const pol_rule *r = set->rules[i];
            if (!rule_matches(r, e->q, why, sizeof(why))) {
                report(e, r->decider, POLICY_EXPLAIN_NO_MATCH,
                       r->is_guard ? POLICY_DENY : r->action, why, r);
                continue;
            }
            if (visit_match(e, r))
                return true;
        }
        return false;
    }
    cursor cur;
    cursor_init(&cur, &set->index[e->q->op], e->q);
    long i;
    while ((i = cursor_next(&cur)) >= 0) {
        const pol_rule *r = set->rules[i];
        if (rule_matches(r, e->q, NULL, 0) && visit_match(e, r))
            return true;
    }
    return false;
}

static bool audit_wanted(const eval *e) {
    const policy_verdict *out = e->out;
    bool audit;
    pol_log_mode mode = e->decided != NULL ? e->decided->log : POL_LOG_DEFAULT;
    switch (mode) {
    case POL_LOG_NONE:
        audit = false;
        break;
    case POL_LOG_DENY:
        audit = out->action != POLICY_ALLOW;
        break;
    case POL_LOG_ALL:
        audit = true;
        break;
    case POL_LOG_DEFAULT:
    default:
        audit = (e->p->settings.audit.record & (1u << out->action)) != 0;
        break;
    }
    if (e->logged != NULL)
        audit = true;
    if (e->shadow != NULL && e->shadow->log != POL_LOG_NONE)
        audit = true;
    return audit;
}

static unsigned op_protocol(policy_op op) {
    switch (op) {
    case POLICY_OP_TCP_BIND:
    case POLICY_OP_TCP_LISTEN:
    case POLICY_OP_TCP_ACCEPT:
    case POLICY_OP_TCP_CONNECT:
        return POLICY_PROTO_TCP;
    case POLICY_OP_UDP_BIND:
    case POLICY_OP_UDP_CONNECT:
    case POLICY_OP_UDP_SEND:
    case POLICY_OP_UDP_RECEIVE:
        return POLICY_PROTO_UDP;
    default:
        return 0;
    }
}

static void evaluate(eval *e, policy_answer_fn answers, void *answers_opaque) {
    const policy *p = e->p;
    const norm_request *q = e->q;
    policy_verdict *out = e->out;
    char reason[256];

    if ((unsigned)q->op >= POLICY_OP_COUNT) {
        /* Not an operation we know: refuse rather than guess. */
        e->out->action = POLICY_DENY;
        e->out->error = POLICY_ERR_ACCESS_DENIED;
        verdict_set_decider(e->out, "default:global");
        report(e, "default:global", POLICY_EXPLAIN_DECIDED, POLICY_DENY,
               "the operation is not known", NULL);
        return;
    }
    e->tenant = pol_tenant_find(p, q->req->tenant);
    if (e->tenant < 0) {
        decide_by_default(e, "tenant:unknown", POLICY_DENY);
        report(e, "tenant:unknown", POLICY_EXPLAIN_DECIDED, POLICY_DENY,
               "the tenant is not in the policy", NULL);
        return;
    }
    const pol_tenant *t = &p->tenants[e->tenant];
    unsigned proto = op_protocol(q->op);
    if (proto != 0 && !(t->protocols & proto)) {
        decide_by_default(e, "tenant:protocols", POLICY_DENY);
        report(e, "tenant:protocols", POLICY_EXPLAIN_DECIDED, POLICY_DENY,
               proto == POLICY_PROTO_TCP ? "the tenant's protocols do not include tcp"
                                         : "the tenant's protocols do not include udp",
               NULL);
        return;
    }
    if (eval_ruleset(e, &p->guards))
        return;
    if (q->implicit && p->settings.implicit_bind == POLICY_IMPLICIT_FOLLOW_CONNECT &&
        (q->op == POLICY_OP_TCP_BIND || q->op == POLICY_OP_UDP_BIND)) {
        decide_by_default(e, "default:implicit-bind", POLICY_ALLOW);
        report(e, "default:implicit-bind", POLICY_EXPLAIN_DECIDED, POLICY_ALLOW,
               "implicit binds pass (defaults.implicit_bind: follow-connect); the operation "
               "that needs the bind is checked itself",
               NULL);
        return;
    }
    if (answers != NULL) {
        policy_answer answer = {0};
        if (answers(answers_opaque, q->req, &answer)) {
            policy_action action = answer.action == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
            char decider[sizeof(out->decided_by)];
            snprintf(decider, sizeof(decider), "answer:%s", answer.id ? answer.id : "?");
            decide_by_default(e, decider, action);
            report(e, out->decided_by, POLICY_EXPLAIN_DECIDED, action,
                   "a remembered prompt answer covers this request", NULL);
            return;
        }
        report(e, "answers", POLICY_EXPLAIN_NO_MATCH, POLICY_DENY,
               "no remembered answer covers this request", NULL);
    }
    if (eval_ruleset(e, &t->rules))
        return;
    if (t->has_default) {
        decide_by_default(e, "default:tenant", t->default_action);
        snprintf(reason, sizeof(reason), "no rule matched; tenant default is %s",
                 policy_action_name(t->default_action));
        report(e, "default:tenant", POLICY_EXPLAIN_DECIDED, t->default_action, reason, NULL);
        return;
    }
    report(e, "default:tenant", POLICY_EXPLAIN_NO_MATCH, POLICY_DENY, "the tenant has no default",
           NULL);
    decide_by_default(e, "default:global", p->settings.default_action);
    snprintf(reason, sizeof(reason), "no rule matched; defaults.action is %s",
             policy_action_name(p->settings.default_action));
    report(e, "default:global", POLICY_EXPLAIN_DECIDED, p->settings.default_action, reason, NULL);
}

static void run_evaluation(const policy *p, const policy_request *req, policy_answer_fn answers,
                           void *answers_opaque, policy_explain_fn fn, void *fn_opaque,
                           policy_verdict *out) {
    norm_request q;
    memset(out, 0, sizeof(*out));
    normalise_request(req, &q);
    eval e = {.p = p, .q = &q, .tenant = -1, .out = out, .fn = fn, .fn_opaque = fn_opaque};
    evaluate(&e, answers, answers_opaque);
    if (e.logged != NULL)
        out->logged_by = e.logged->decider;
    if (e.shadow != NULL) {
        out->shadow_by = e.shadow->decider;
        out->shadow_action = e.shadow->action;
    }
    out->audit = audit_wanted(&e);
}

void policy_decide_with_answers(const policy *p, const policy_request *req,
                                policy_answer_fn answers, void *answers_opaque,
                                policy_verdict *out) {
    run_evaluation(p, req, answers, answers_opaque, NULL, NULL, out);
}

void policy_decide(const policy *p, const policy_request *req, policy_verdict *out) {
    run_evaluation(p, req, NULL, NULL, NULL, NULL, out);
}

static void explain_discard(void *opaque, const policy_explain_step *step) {
    (void)opaque;
    (void)step;
}

void policy_explain(const policy *p, const policy_request *req, policy_answer_fn answers,
                    void *answers_opaque, policy_explain_fn fn, void *fn_opaque,
                    policy_verdict *out) {
    run_evaluation(p, req, answers, answers_opaque, fn ? fn : explain_discard, fn_opaque, out);
}
