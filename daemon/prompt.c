/* prompt.c — the prompt broker (see prompt.h): pending prompts, their
 * waiters and timers, the agents that may answer them, and remembered
 * answers.
 *
 * Trust: requests come from the daemon (addresses validated; a host name
 * may come from a guest), policy settings from the operator. Agents are
 * authenticated by SO_PEERCRED against prompt_agents, but what they send is
 * still checked: an answer names a prompt only this agent was shown, with a
 * scope the rule offers. Everything shown to an agent is escaped
 * (ctl_append_value), so a guest cannot put escape sequences on a person's
 * terminal.
 */
#include "prompt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answers.h"
#include "log.h"

/* Room for a host name in a prompt (a DNS name is at most 253 bytes). */
#define PROMPT_HOST_MAX 254

/* Longest agent name (policy names are at most 64 bytes). */
#define PROMPT_AGENT_NAME_MAX 64

struct prompt_waiter {
    struct prompt *p; /* NULL once detached from its prompt */
    prompt_waiter *prev, *next;
    prompt_done_fn done;
    void *opaque;
    uint64_t session;
};

typedef struct prompt {
    prompt_broker *b;
    struct prompt *prev, *next; /* the broker's pending list */
    uint64_t id;
    policy_ref *pol;                        /* the policy asked under */
    const policy_prompt_settings *settings; /* lives in pol */
    policy_action on_timeout, on_no_agent;
    uint32_t timeout_ms;

    /* The request, copied. */
    char tenant[PROTO_TENANT_MAX + 1];
    policy_op op;
    bool implicit;
    policy_endpoint local, remote;
    bool has_host;
    char host[PROMPT_HOST_MAX];
    char decided_by[ANSWERS_DECIDER_MAX];
    /* Who asked first (merged requests may come from other sessions). */
    uint64_t session;
    pid_t pid;
    uid_t uid;
    gid_t gid;

    prompt_waiter waiters; /* sentinel of a circular list */
    unsigned waiter_count;
    uv_timer_t timer;
    bool resolving; /* waiters are being told; the prompt is off the list */
} prompt;

struct prompt_agent {
    prompt_broker *b;
    prompt_agent *prev, *next;
    uid_t uid;
    bool named;
    char name[PROMPT_AGENT_NAME_MAX + 1]; /* the name, or "uid-<uid>" */
    prompt_agent_send_fn send;
    void *conn;
};

struct prompt_broker {
    uv_loop_t *loop;
    policy_ref *current;
    prompt *pending; /* newest first */
    size_t pending_count;
    prompt_agent *agents;
    size_t agent_count;
    answer_store answers;
    uint64_t next_id;
    unsigned open_timers; /* prompts whose timer has not closed yet */
    prompt_stats counters;
};

const char *prompt_outcome_name(prompt_outcome o) {
    switch (o) {
    case PROMPT_ANSWERED:
        return "answered";
    case PROMPT_TIMED_OUT:
        return "timeout";
    case PROMPT_NO_AGENT:
        return "no-agent";
    case PROMPT_OVER_CAP:
        return "over-cap";
    }
    return "?";
}

/* --- the broker ---------------------------------------------------------------- */

int prompt_broker_new(uv_loop_t *loop, policy_ref *current, prompt_broker **out) {
    prompt_broker *b = calloc(1, sizeof(*b));

    if (b == NULL) {
        return -ENOMEM;
    }
    b->loop = loop;
    b->current = policy_ref_get(current);
    b->answers = (answer_store)ANSWER_STORE_INIT;
    b->next_id = 1;
    *out = b;
    return 0;
}

void prompt_broker_free(prompt_broker *b) {
    if (b == NULL) {
        return;
    }
    if (b->pending != NULL || b->agents != NULL || b->open_timers != 0) {
        /* Sessions and agents are gone before the broker; anything left
         * would point into freed memory. */
        log_error("prompt broker freed with %zu prompts, %zu agents and %u timers left",
                  b->pending_count, b->agent_count, b->open_timers);
        abort();
    }
    answer_store_clear(&b->answers);
    policy_ref_put(b->current);
    free(b);
}

static bool tenant_exists(const policy *p, const char *tenant) {
    size_t n = policy_tenant_count(p);

    for (size_t i = 0; i < n; i++) {
        if (strcmp(policy_tenant_name(p, i), tenant) == 0) {
            return true;
        }
    }
    return false;
}

/* True while the thing that prompted (a rule, or a tenant's or the global
 * default) still exists in p. */
static bool decider_exists(const policy *p, const char *tenant, const char *decided_by) {
    if (strncmp(decided_by, "rule:", 5) == 0) {
        return policy_rule_exists(p, tenant, decided_by + 5);
    }
    return tenant_exists(p, tenant);
}

static bool keep_answer(void *opaque, const answer *a) {
    const policy *p = opaque;

    return policy_get_settings(p)->reload.keep_answers_if_rule_exists &&
           decider_exists(p, a->tenant, a->decided_by);
}

size_t prompt_broker_set_policy(prompt_broker *b, policy_ref *current) {
    size_t dropped;

    policy_ref_get(current);
    policy_ref_put(b->current);
    b->current = current;
    dropped = answer_store_prune(&b->answers, keep_answer, (void *)policy_ref_policy(current));
    if (dropped > 0) {
        log_info("forgot %zu remembered prompt answers whose rule is gone", dropped);
    }
    return dropped;
}

void prompt_broker_stats(const prompt_broker *b, prompt_stats *out) {
    *out = b->counters;
    out->pending = b->pending_count;
    out->agents = b->agent_count;
    out->remembered = b->answers.count;
}

/* --- prompts --------------------------------------------------------------------- */

static void prompt_request(const prompt *p, policy_request *req) {
    memset(req, 0, sizeof(*req));
    req->tenant = p->tenant;
    req->op = p->op;
    req->implicit = p->implicit;
    req->local = p->local;
    req->remote = p->remote;
    req->host = p->has_host ? p->host : NULL;
}

static bool host_equal(const prompt *p, const char *host) {
    if (host == NULL || !p->has_host) {
        return host == NULL && !p->has_host;
    }
    return strcmp(p->host, host) == 0;
}

static bool endpoint_same(const policy_endpoint *a, const policy_endpoint *b) {
    return a->family == b->family && memcmp(a->ip, b->ip, sizeof(a->ip)) == 0 &&
           a->port == b->port && a->port_ephemeral == b->port_ephemeral;
}

/* An identical pending prompt: same tenant, operation, addresses (ports
 * included), host and decider. */
static prompt *find_identical(prompt_broker *b, const policy_request *req, const char *decided_by) {
    for (prompt *p = b->pending; p != NULL; p = p->next) {
        if (p->op == req->op && p->implicit == req->implicit &&
            strcmp(p->tenant, req->tenant) == 0 && strcmp(p->decided_by, decided_by) == 0 &&
            endpoint_same(&p->local, &req->local) && endpoint_same(&p->remote, &req->remote) &&
            host_equal(p, req->host)) {
            return p;
        }
    }
    return NULL;
}

static size_t pending_of_tenant(const prompt_broker *b, const char *tenant) {
    size_t n = 0;

    for (const prompt *p = b->pending; p != NULL; p = p->next) {
        n += strcmp(p->tenant, tenant) == 0;
    }
    return n;
}

static bool agent_may_answer(const prompt_agent *a, const prompt *p) {
    const policy *pol = policy_ref_policy(p->pol);
    const char *names[1];
    policy_prompt_settings only;

    if (!policy_agent_may_answer(pol, (uint32_t)a->uid, p->tenant, p->settings)) {
        return false;
    }
    if (!a->named) {
        return true;
    }
    /* A named agent answers only as that prompt_agents entry: the entry
     * must list its uid and the tenant, and the rule's `agents` (if any)
     * must name it. */
    names[0] = a->name;
    memset(&only, 0, sizeof(only));
    only.agents = names;
    only.agent_count = 1;
    if (!policy_agent_may_answer(pol, (uint32_t)a->uid, p->tenant, &only)) {
        return false;
    }
    if (p->settings != NULL && p->settings->agents != NULL) {
        for (size_t i = 0; i < p->settings->agent_count; i++) {
            if (strcmp(p->settings->agents[i], a->name) == 0) {
                return true;
            }
        }
        return false;
    }
    return true;
}

static size_t eligible_agents(const prompt_broker *b, const prompt *p) {
    size_t n = 0;

    for (const prompt_agent *a = b->agents; a != NULL; a = a->next) {
        n += agent_may_answer(a, p);
    }
    return n;
}

/* The remember choices a prompt offers, "once,session,1h": `once` always
 * (it remembers nothing); `persist` never (not supported yet). */
static void format_remember(const policy_prompt_settings *s, char *buf, size_t len) {
    size_t used = 0;
    char d[16];

    buf[0] = '\0';
    ctl_append(buf, len, &used, "once");
    if (s == NULL) {
        return;
    }
    if (s->remember & POLICY_REMEMBER_SESSION) {
        ctl_append(buf, len, &used, ",session");
    }
    if (s->remember & POLICY_REMEMBER_TENANT) {
        ctl_append(buf, len, &used, ",tenant");
    }
    for (size_t i = 0; i < s->remember_seconds_count && i < POLICY_REMEMBER_MAX_DURATIONS; i++) {
        ctl_format_duration(s->remember_seconds[i], d, sizeof(d));
        ctl_append(buf, len, &used, ",");
        ctl_append(buf, len, &used, d);
    }
}

static void format_endpoint(const policy_endpoint *ep, char *buf, size_t len) {
    if (ep->family == 0) {
        snprintf(buf, len, "-");
        return;
    }
    policy_endpoint_format(ep, true, buf, len);
}

/* The line an agent sees for p. Every value is escaped. */
static void format_prompt_line(const prompt *p, char *line, size_t cap) {
    char num[32], local[64], remote[64], remember[128];
    size_t len = 0;

    snprintf(num, sizeof(num), "prompt %" PRIu64, p->id);
    line[0] = '\0';
    ctl_append(line, cap, &len, num);
    ctl_append_value(line, cap, &len, "tenant", p->tenant);
    snprintf(num, sizeof(num), "%" PRIu64, p->session);
    ctl_append_value(line, cap, &len, "session", num);
    snprintf(num, sizeof(num), "%ld", (long)p->pid);
    ctl_append_value(line, cap, &len, "pid", num);
    snprintf(num, sizeof(num), "%lu", (unsigned long)p->uid);
    ctl_append_value(line, cap, &len, "uid", num);
    ctl_append_value(line, cap, &len, "op", policy_op_name(p->op));
    if (p->implicit) {
        ctl_append_value(line, cap, &len, "implicit", "yes");
    }
    format_endpoint(&p->local, local, sizeof(local));
    format_endpoint(&p->remote, remote, sizeof(remote));
    ctl_append_value(line, cap, &len, "local", local);
    ctl_append_value(line, cap, &len, "remote", remote);
    ctl_append_value(line, cap, &len, "host", p->has_host ? p->host : NULL);
    ctl_append_value(line, cap, &len, "rule", p->decided_by);
    format_remember(p->settings, remember, sizeof(remember));
    ctl_append_value(line, cap, &len, "remember", remember);
    snprintf(num, sizeof(num), "%lu", (unsigned long)p->timeout_ms);
    ctl_append_value(line, cap, &len, "timeout_ms", num);
    snprintf(num, sizeof(num), "%u", p->waiter_count);
    ctl_append_value(line, cap, &len, "waiting", num);
    /* The note last: it is the longest value, and a line cut short loses
     * only the end of it. */
    ctl_append_value(line, cap, &len, "note", p->settings != NULL ? p->settings->note : NULL);
}

static void send_prompt(prompt_agent *a, const prompt *p) {
    char line[CTL_LINE_MAX];

    format_prompt_line(p, line, sizeof(line));
    a->send(a->conn, line);
}

/* Tells every agent that may answer p (except `skip`) that it is over. */
static void send_withdraw(prompt_broker *b, const prompt *p, const char *reason,
                          const prompt_agent *skip) {
    char line[64];

    snprintf(line, sizeof(line), "withdraw %" PRIu64 " %s", p->id, reason);
    for (prompt_agent *a = b->agents; a != NULL; a = a->next) {
        if (a != skip && agent_may_answer(a, p)) {
            a->send(a->conn, line);
        }
    }
}

static void waiter_unlink(prompt_waiter *w) {
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = w;
    if (w->p != NULL) {
        w->p->waiter_count--;
        w->p = NULL;
    }
}

static void waiter_link(prompt *p, prompt_waiter *w) {
    w->p = p;
    w->next = &p->waiters;
    w->prev = p->waiters.prev;
    p->waiters.prev->next = w;
    p->waiters.prev = w;
    p->waiter_count++;
}

static void list_remove(prompt *p) {
    prompt_broker *b = p->b;

    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        b->pending = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
    p->prev = p->next = NULL;
    b->pending_count--;
}

static void on_timer_closed(uv_handle_t *h) {
    prompt *p = h->data;

    p->b->open_timers--;
    policy_ref_put(p->pol);
    free(p);
}

/* Takes p off the pending list, tells each waiter the result, and frees p
 * once its timer has closed. A waiter's callback may cancel other waiters
 * of p (its session closed): they are unlinked and never called. */
static void resolve(prompt *p, policy_action action, prompt_outcome outcome, const char *agent,
                    ctl_scope scope) {
    prompt_broker *b = p->b;
    prompt_result r;

    list_remove(p);
    uv_timer_stop(&p->timer);
    p->resolving = true;
    memset(&r, 0, sizeof(r));
    r.action = action;
    r.outcome = outcome;
    r.prompt_id = p->id;
    r.agent = agent;
    r.scope = scope;
    switch (outcome) {
    case PROMPT_ANSWERED:
        b->counters.answered++;
        break;
    case PROMPT_TIMED_OUT:
        b->counters.timed_out++;
        break;
    default:
        b->counters.fallbacks++;
        break;
    }
    while (p->waiters.next != &p->waiters) {
        prompt_waiter *w = p->waiters.next;
        waiter_unlink(w);
        w->done(w->opaque, &r);
        free(w);
    }
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

static void on_prompt_timeout(uv_timer_t *t) {
    prompt *p = t->data;

    log_info("prompt %" PRIu64 " (tenant %s, %s %s): no answer within %lu ms: applying %s", p->id,
             p->tenant, policy_op_name(p->op), p->decided_by, (unsigned long)p->timeout_ms,
             policy_action_name(p->on_timeout));
    send_withdraw(p->b, p, "timeout", NULL);
    resolve(p, p->on_timeout, PROMPT_TIMED_OUT, NULL, CTL_SCOPE_ONCE);
}

static policy_action fallback_action(policy_action a) {
    /* A fallback of "prompt" would be circular: it counts as deny. */
    return a == POLICY_ALLOW ? POLICY_ALLOW : POLICY_DENY;
}

bool prompt_ask(prompt_broker *b, const prompt_question *q, prompt_done_fn done, void *opaque,
                prompt_waiter **out, prompt_result *now) {
    const policy_verdict *v = q->verdict;
    const policy_settings *settings = policy_get_settings(policy_ref_policy(b->current));
    prompt_waiter *w;
    prompt *p;
    size_t eligible;

    memset(now, 0, sizeof(*now));
    now->action = fallback_action(v->prompt_on_no_agent);
    now->outcome = PROMPT_NO_AGENT;

    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return false; /* out of memory: as if no agent could be asked */
    }
    w->prev = w->next = w;
    w->done = done;
    w->opaque = opaque;
    w->session = q->session;

    p = find_identical(b, q->req, v->decided_by);
    if (p != NULL) {
        waiter_link(p, w);
        log_debug("prompt %" PRIu64 ": session %" PRIu64 " waits for it too (%u waiting)", p->id,
                  q->session, p->waiter_count);
        *out = w;
        return true;
    }
    if (b->pending_count >= PROMPT_MAX_PENDING ||
        (settings->prompt.max_pending_per_tenant != 0 &&
         pending_of_tenant(b, q->req->tenant) >= settings->prompt.max_pending_per_tenant)) {
        free(w);
        now->outcome = PROMPT_OVER_CAP;
        b->counters.fallbacks++;
        return false;
    }

    p = calloc(1, sizeof(*p));
    if (p == NULL || q->req->tenant == NULL || strlen(q->req->tenant) > PROTO_TENANT_MAX ||
        strlen(v->decided_by) >= sizeof(p->decided_by) ||
        (q->req->host != NULL && strlen(q->req->host) >= sizeof(p->host))) {
        free(p);
        free(w);
        b->counters.fallbacks++;
        return false;
    }
    p->b = b;
    p->pol = b->current;
    p->settings = v->prompt;
    p->on_timeout = fallback_action(v->prompt_on_timeout);
    p->on_no_agent = fallback_action(v->prompt_on_no_agent);
    p->timeout_ms = v->prompt_timeout_ms;
    memcpy(p->tenant, q->req->tenant, strlen(q->req->tenant) + 1);
    p->op = q->req->op;
    p->implicit = q->req->implicit;
    p->local = q->req->local;
    p->remote = q->req->remote;
    if (q->req->host != NULL) {
        p->has_host = true;
        memcpy(p->host, q->req->host, strlen(q->req->host) + 1);
    }
    memcpy(p->decided_by, v->decided_by, strlen(v->decided_by) + 1);
    p->session = q->session;
    p->pid = q->pid;
    p->uid = q->uid;
    p->gid = q->gid;
    p->waiters.prev = p->waiters.next = &p->waiters;

    eligible = eligible_agents(b, p);
    if (eligible == 0) {
        free(p);
        free(w);
        b->counters.fallbacks++;
        return false;
    }

    p->id = b->next_id++;
    policy_ref_get(p->pol);
    uv_timer_init(b->loop, &p->timer);
    p->timer.data = p;
    b->open_timers++;
    uv_timer_start(&p->timer, on_prompt_timeout, p->timeout_ms, 0);
    p->next = b->pending;
    if (b->pending != NULL) {
        b->pending->prev = p;
    }
    b->pending = p;
    b->pending_count++;
    b->counters.asked++;
    waiter_link(p, w);

    log_info("prompt %" PRIu64 ": session %" PRIu64 " tenant %s: %s (%s) asked of %zu agent(s)",
             p->id, p->session, p->tenant, policy_op_name(p->op), p->decided_by, eligible);
    for (prompt_agent *a = b->agents; a != NULL; a = a->next) {
        if (agent_may_answer(a, p)) {
            send_prompt(a, p);
        }
    }
    *out = w;
    return true;
}

void prompt_cancel(prompt_waiter *w) {
    prompt *p;

    if (w == NULL) {
        return;
    }
    p = w->p;
    waiter_unlink(w);
    free(w);
    if (p == NULL || p->resolving || p->waiter_count > 0) {
        return;
    }
    log_info("prompt %" PRIu64 " withdrawn: every request waiting for it is gone", p->id);
    send_withdraw(p->b, p, "dropped", NULL);
    list_remove(p);
    uv_timer_stop(&p->timer);
    p->resolving = true;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

/* --- remembered answers --------------------------------------------------------- */

bool prompt_remembered(prompt_broker *b, const policy *p, uint64_t session,
                       const policy_request *req, policy_answer *out, char *idbuf, size_t idlen) {
    const answer *a = answer_store_find(&b->answers, req, session, uv_now(b->loop));
    policy_verdict v;

    if (a == NULL) {
        return false;
    }
    /* The answer stands in for the prompt it answered: it applies only
     * while the same rule (or default) would prompt for this request, so a
     * rule added or changed since can never be bypassed by it. */
    policy_decide(p, req, &v);
    if (v.action != POLICY_PROMPT || strcmp(v.decided_by, a->decided_by) != 0) {
        return false;
    }
    snprintf(idbuf, idlen, "%" PRIu64, a->id);
    out->action = a->action;
    out->id = idbuf;
    return true;
}

void prompt_session_closed(prompt_broker *b, uint64_t session) {
    answer_store_drop_session(&b->answers, session);
}

static bool scope_offered(const prompt *p, const ctl_answer *ans) {
    const policy_prompt_settings *s = p->settings;

    switch (ans->scope) {
    case CTL_SCOPE_ONCE:
        return true;
    case CTL_SCOPE_SESSION:
        return s != NULL && (s->remember & POLICY_REMEMBER_SESSION);
    case CTL_SCOPE_TENANT:
        return s != NULL && (s->remember & POLICY_REMEMBER_TENANT);
    case CTL_SCOPE_DURATION:
        for (size_t i = 0; s != NULL && i < s->remember_seconds_count; i++) {
            if (s->remember_seconds[i] == ans->seconds) {
                return true;
            }
        }
        return false;
    case CTL_SCOPE_PERSIST:
        return false;
    }
    return false;
}

/* Stores the answer for its scope, for every session waiting (session
 * scope) or the tenant. Nothing is stored when the rule vanished in a
 * reload since the prompt was asked. */
static void remember(prompt_broker *b, const prompt *p, const ctl_answer *ans) {
    const policy *current = policy_ref_policy(b->current);
    policy_request req;
    uint64_t expires = 0;
    int r = 0;

    if (ans->scope == CTL_SCOPE_ONCE) {
        return;
    }
    if (!decider_exists(current, p->tenant, p->decided_by)) {
        log_info("prompt %" PRIu64 ": %s is gone from the policy; the answer is not remembered",
                 p->id, p->decided_by);
        return;
    }
    prompt_request(p, &req);
    if (ans->scope == CTL_SCOPE_SESSION) {
        for (const prompt_waiter *w = p->waiters.next; w != &p->waiters && r == 0; w = w->next) {
            r = answer_store_add(&b->answers, &req, p->decided_by, ans->action, w->session, 0,
                                 p->id);
        }
    } else {
        if (ans->scope == CTL_SCOPE_DURATION) {
            expires = uv_now(b->loop) + (uint64_t)ans->seconds * 1000u;
        }
        r = answer_store_add(&b->answers, &req, p->decided_by, ans->action, 0, expires, p->id);
    }
    if (r < 0) {
        log_warn("prompt %" PRIu64 ": cannot remember the answer: %s", p->id, strerror(-r));
    }
}

/* --- agents ------------------------------------------------------------------------ */

static bool agent_name_valid(const policy *pol, uid_t uid, const char *name) {
    const char *names[1] = {name};
    policy_prompt_settings only;
    size_t n = policy_tenant_count(pol);

    memset(&only, 0, sizeof(only));
    only.agents = names;
    only.agent_count = 1;
    for (size_t i = 0; i < n; i++) {
        if (policy_agent_may_answer(pol, (uint32_t)uid, policy_tenant_name(pol, i), &only)) {
            return true;
        }
    }
    return false;
}

int prompt_agent_attach(prompt_broker *b, uid_t uid, const char *name, prompt_agent_send_fn send,
                        void *conn, prompt_agent **out, char *err, size_t errlen) {
    const policy *pol = policy_ref_policy(b->current);
    prompt_agent *a;
    size_t sent = 0;

    if (!policy_agent_known(pol, (uint32_t)uid)) {
        snprintf(err, errlen, "uid %lu is not listed under prompt_agents in the policy",
                 (unsigned long)uid);
        return -EPERM;
    }
    if (name != NULL &&
        (strlen(name) > PROMPT_AGENT_NAME_MAX || !agent_name_valid(pol, uid, name))) {
        snprintf(err, errlen,
                 "no prompt_agents entry of that name lists uid %lu and a tenant of the policy",
                 (unsigned long)uid);
        return -EPERM;
    }
    if (b->agent_count >= PROMPT_MAX_AGENTS) {
        snprintf(err, errlen, "%d prompt agents are connected already", PROMPT_MAX_AGENTS);
        return -ENOSPC;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    a->b = b;
    a->uid = uid;
    a->send = send;
    a->conn = conn;
    if (name != NULL) {
        a->named = true;
        memcpy(a->name, name, strlen(name) + 1);
    } else {
        snprintf(a->name, sizeof(a->name), "uid-%lu", (unsigned long)uid);
    }
    a->next = b->agents;
    if (b->agents != NULL) {
        b->agents->prev = a;
    }
    b->agents = a;
    b->agent_count++;
    sent = prompt_agent_resend(a);
    log_info("prompt agent %s (uid %lu) connected; %zu pending prompt(s) sent", a->name,
             (unsigned long)uid, sent);
    *out = a;
    return 0;
}

size_t prompt_agent_resend(prompt_agent *a) {
    size_t sent = 0;

    /* Oldest first, as they were asked. */
    prompt *last = a->b->pending;
    while (last != NULL && last->next != NULL) {
        last = last->next;
    }
    for (prompt *p = last; p != NULL; p = p->prev) {
        if (agent_may_answer(a, p)) {
            send_prompt(a, p);
            sent++;
        }
    }
    return sent;
}

const char *prompt_agent_name(const prompt_agent *a) {
    return a->name;
}

void prompt_agent_detach(prompt_agent *a) {
    prompt_broker *b = a->b;

    if (a->prev != NULL) {
        a->prev->next = a->next;
    } else {
        b->agents = a->next;
    }
    if (a->next != NULL) {
        a->next->prev = a->prev;
    }
    b->agent_count--;
    log_info("prompt agent %s (uid %lu) disconnected", a->name, (unsigned long)a->uid);
    free(a);

    /* Prompts nobody can answer any more get their fallback now. Each
     * resolve takes one prompt off the list (and callbacks may change the
     * list), so the scan starts over after each. */
    for (;;) {
        prompt *orphan = NULL;
        for (prompt *p = b->pending; p != NULL && orphan == NULL; p = p->next) {
            if (eligible_agents(b, p) == 0) {
                orphan = p;
            }
        }
        if (orphan == NULL) {
            break;
        }
        log_info("prompt %" PRIu64 ": no agent left that may answer: applying %s", orphan->id,
                 policy_action_name(orphan->on_no_agent));
        resolve(orphan, orphan->on_no_agent, PROMPT_NO_AGENT, NULL, CTL_SCOPE_ONCE);
    }
}

static prompt *find_for_agent(prompt_agent *a, uint64_t id) {
    for (prompt *p = a->b->pending; p != NULL; p = p->next) {
        if (p->id == id) {
            return agent_may_answer(a, p) ? p : NULL;
        }
    }
    return NULL;
}

void prompt_agent_answer(prompt_agent *a, const ctl_answer *ans) {
    prompt_broker *b = a->b;
    prompt *p = find_for_agent(a, ans->id);
    char line[256], offered[128], scope[24], agent[PROMPT_AGENT_NAME_MAX + 1];

    if (p == NULL) {
        /* Unknown, or not this agent's: both look the same, so an agent
         * learns nothing about other tenants' prompts. */
        snprintf(line, sizeof(line),
                 "error: no pending prompt %" PRIu64 " (answered, withdrawn or timed out)",
                 ans->id);
        a->send(a->conn, line);
        return;
    }
    if (ans->scope == CTL_SCOPE_PERSIST) {
        snprintf(line, sizeof(line),
                 "error: prompt %" PRIu64 ": persist is not supported yet; answer once, session, "
                 "tenant or an offered duration",
                 ans->id);
        a->send(a->conn, line);
        return;
    }
    if (!scope_offered(p, ans)) {
        format_remember(p->settings, offered, sizeof(offered));
        snprintf(line, sizeof(line),
                 "error: prompt %" PRIu64 " does not offer that scope; offered: %s", ans->id,
                 offered);
        a->send(a->conn, line);
        return;
    }
    if (ans->scope == CTL_SCOPE_DURATION) {
        ctl_format_duration(ans->seconds, scope, sizeof(scope));
    } else {
        snprintf(scope, sizeof(scope), "%s", ctl_scope_name(ans->scope));
    }
    snprintf(line, sizeof(line), "answered %" PRIu64 " %s %s", ans->id,
             policy_action_name(ans->action), scope);
    a->send(a->conn, line);
    log_info("prompt %" PRIu64 " (tenant %s, %s %s): agent %s answers %s, %s", p->id, p->tenant,
             policy_op_name(p->op), p->decided_by, a->name, policy_action_name(ans->action), scope);
    remember(b, p, ans);
    send_withdraw(b, p, "answered", a);
    /* The waiters' callbacks run daemon code; the name they see is a copy. */
    memcpy(agent, a->name, sizeof(agent));
    resolve(p, ans->action, PROMPT_ANSWERED, agent, ans->scope);
}
