/* lookup.c — WASI ip-name-lookup through the daemon.
 *
 * Trust: names come from untrusted clients and go through names_parse
 * before anything else sees them; the policy decides every name; answers
 * come from the system resolver (trusted as far as the operator's resolver
 * is, but filtered against the guards so a name cannot point a tenant at an
 * address the operator forbade). getaddrinfo runs on libuv's thread pool, so
 * a slow resolver never blocks the loop, and lookups in flight are capped
 * per tenant and daemon-wide.
 */
#include "lookup.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "hostbind.h"
#include "log.h"
#include "names.h"
#include "server.h"
#include "sockrules.h"

/* Per-tenant lookup state, hung off tenant_usage.dns. */
struct tenant_dns {
    hostbind_table *bindings;
    unsigned in_flight;
};

typedef struct lookup_req {
    resource res; /* first member: the session's table entry */
    uv_getaddrinfo_t gai;
    struct tenant_dns *dns;
    bool in_flight;
    bool destroyed; /* out of the table; the pool callback frees it */
    char name[NAMES_MAX + 1];
    /* What allowed the lookup ("rule:<id>", "default", ...): kept with
     * every binding of its answers. */
    char decided_by[HOSTBIND_RULE_MAX + 1];
    /* The lookup waits for a permission decision (a prompt, a delayed
     * refusal); the resolver starts once it allows. */
    authz_pending *authz;
} lookup_req;

static void lookup_destroy(resource *r);

static const struct resource_ops lookup_ops = {"lookup", lookup_destroy};

/* Lookups in flight in the whole daemon (the loop is single-threaded). */
static unsigned lookups_in_flight;

static log_ratelimit lookup_log = LOG_RATELIMIT_INIT(10000, 10);

void lookup_configure_thread_pool(void) {
    char size[16];

    snprintf(size, sizeof(size), "%d", LOOKUP_THREAD_POOL_SIZE);
    setenv("UV_THREADPOOL_SIZE", size, 0);
}

void lookup_tenant_dns_free(struct tenant_dns *d) {
    if (d == NULL) {
        return;
    }
    hostbind_table_free(d->bindings);
    free(d);
}

/* The tenant's state, created on first use; NULL when out of memory. */
static struct tenant_dns *tenant_dns_of(session *s) {
    tenant_usage *u = session_usage(s);

    if (u->dns == NULL) {
        struct tenant_dns *d = calloc(1, sizeof(*d));
        if (d == NULL) {
            return NULL;
        }
        d->bindings = hostbind_table_new();
        if (d->bindings == NULL) {
            free(d);
            return NULL;
        }
        u->dns = d;
    }
    return u->dns;
}

size_t lookup_bound_names(session *s, const proto_addr *remote, struct hostbind_entry **out,
                          size_t max) {
    const policy_settings *settings = policy_get_settings(server_policy(session_server(s)));
    tenant_usage *u = session_usage(s);
    uint64_t scope = 0;

    if (u == NULL || u->dns == NULL || settings == NULL) {
        return 0;
    }
    if (settings->dns.pin_scope == POLICY_DNS_SCOPE_SESSION) {
        scope = session_id(s);
    }
    return hostbind_find(u->dns->bindings, remote, scope, uv_now(session_loop(s)),
                         settings->dns.keep_while_open, out, max);
}

/* --- answers ------------------------------------------------------------------ */

/* True when a guard (not a rule) refuses `addr` for every kind of outbound
 * use: a tcp.connect and a udp.send to it, on any port (asked with port 0,
 * which no `ports` list contains, so only guards without ports apply). An
 * operation the tenant's protocols exclude does not count as a use. */
static bool guards_refuse(session *s, const char *name, const proto_addr *addr) {
    static const policy_op uses[] = {POLICY_OP_TCP_CONNECT, POLICY_OP_UDP_SEND};
    const policy *p = server_policy(session_server(s));
    bool guarded = false;

    for (size_t i = 0; i < sizeof(uses) / sizeof(uses[0]); i++) {
        policy_request req;
        policy_verdict v;

        memset(&req, 0, sizeof(req));
        memset(&v, 0, sizeof(v));
        req.tenant = session_tenant(s);
        req.op = uses[i];
        req.remote.family = addr->family == PROTO_IPV6 ? 6 : 4;
        memcpy(req.remote.ip, addr->ip, addr->family == PROTO_IPV6 ? 16 : 4);
        req.host = name;
        policy_decide(p, &req, &v);
        if (strcmp(v.decided_by, "tenant:protocols") == 0) {
            continue;
        }
        if (v.action == POLICY_DENY && strncmp(v.decided_by, "guard:", 6) == 0) {
            guarded = true;
            continue;
        }
        return false; /* usable for this operation */
    }
    return guarded;
}

static bool same_ip(const proto_addr *a, const proto_addr *b) {
    return a->family == b->family && memcmp(a->ip, b->ip, a->family == PROTO_IPV6 ? 16 : 4) == 0;
}

/* The answers of getaddrinfo as the guest will see them: IPv4-mapped turned
 * to IPv4, duplicates removed, resolver order kept. Returns the count. */
static size_t collect_answers(const struct addrinfo *res, proto_addr *out, size_t max) {
    size_t n = 0;

    for (const struct addrinfo *ai = res; ai != NULL && n < max; ai = ai->ai_next) {
        proto_addr a;
        if (ai->ai_addr == NULL ||
            sockrules_addr_from_sockaddr(ai->ai_addr, ai->ai_addrlen, &a) < 0) {
            continue;
        }
        if (sockrules_addr_is_v4_mapped(&a)) {
            uint8_t v4[4];
            memcpy(v4, a.ip + 12, sizeof(v4)); /* set_v4 clears a first */
            proto_addr_set_v4(&a, v4, 0);
        }
        a.port = 0;
        a.flow_info = 0;
        a.scope_id = 0;
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++) {
            seen = same_ip(&out[i], &a);
        }
        if (!seen) {
            out[n++] = a;
        }
    }
    return n;
}

/* uv_getaddrinfo's status to a WASI lookup error. */
static proto_err lookup_error(int status) {
    switch (status) {
    case UV_EAI_NONAME:
    case UV_EAI_NODATA:
    case UV_EAI_ADDRFAMILY:
        return PROTO_E_NAME_UNRESOLVABLE;
    case UV_EAI_AGAIN:
        return PROTO_E_TEMPORARY_RESOLVER_FAILURE;
    case UV_EAI_FAIL:
        return PROTO_E_PERMANENT_RESOLVER_FAILURE;
    case UV_EAI_MEMORY:
        return PROTO_E_OUT_OF_MEMORY;
    case UV_EAI_BADFLAGS:
    case UV_EAI_BADHINTS:
    case UV_EAI_FAMILY:
    case UV_EAI_SERVICE:
    case UV_EAI_SOCKTYPE:
    case UV_EAI_PROTOCOL:
    case UV_EAI_OVERFLOW:
    case UV_EAI_CANCELED:
        return PROTO_E_UNKNOWN;
    }
    /* EAI_SYSTEM: an errno from the resolver's own sockets or files,
     * which usually passes. */
    return PROTO_E_TEMPORARY_RESOLVER_FAILURE;
}

/* The binding lifetime of an answer, in ms: the fallback TTL clamped to
 * the policy's bounds. */
static uint64_t binding_ttl_ms(const policy_settings *settings) {
    uint64_t ttl = LOOKUP_FALLBACK_TTL_S;

    if (settings != NULL) {
        if (ttl < settings->dns.min_ttl_s) {
            ttl = settings->dns.min_ttl_s;
        }
        if (ttl > settings->dns.max_ttl_s) {
            ttl = settings->dns.max_ttl_s;
        }
    }
    return ttl * 1000;
}

static void send_done(session *s, uint32_t handle, proto_err result) {
    proto_msg ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = PROTO_EV_RESOLVE_DONE;
    ev.handle = handle;
    ev.result = (uint16_t)result;
    session_send_event(s, &ev);
}

static void send_address(session *s, uint32_t handle, const proto_addr *a) {
    proto_msg ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = PROTO_EV_RESOLVE_ADDRESS;
    ev.handle = handle;
    ev.addr = *a;
    session_send_event(s, &ev);
}

/* Filters, binds and sends the answers of a finished lookup. */
static void deliver_answers(lookup_req *l, const proto_addr *answers, size_t n) {
    session *s = l->res.sess;
    const policy_settings *settings = policy_get_settings(server_policy(session_server(s)));
    uint64_t now = uv_now(session_loop(s));
    uint64_t expires = now + binding_ttl_ms(settings);
    size_t max_bindings = settings != NULL ? settings->dns.max_bindings_per_tenant : 0;
    size_t sent = 0, filtered = 0;

    for (size_t i = 0; i < n; i++) {
        if (settings != NULL && settings->dns.filter_answers &&
            guards_refuse(s, l->name, &answers[i])) {
            filtered++;
            continue;
        }
        int r = hostbind_add(l->dns->bindings, l->name, &answers[i], session_id(s), expires,
                             l->decided_by, now, max_bindings);
        if (r < 0) {
            /* The answer is still given; a host rule just cannot match it. */
            log_write_ratelimited(&lookup_log, LOG_LEVEL_WARN,
                                  "session %llu tenant %s: cannot remember a binding of %s: %s",
                                  (unsigned long long)session_id(s), session_tenant(s), l->name,
                                  r == -ENOSPC ? "every binding is in use" : strerror(-r));
        }
        send_address(s, l->res.handle, &answers[i]);
        sent++;
    }
    if (filtered > 0) {
        log_info("session %llu tenant %s: lookup of %s: %zu answers removed by guards",
                 (unsigned long long)session_id(s), session_tenant(s), l->name, filtered);
    }
    /* Never an empty success. */
    send_done(s, l->res.handle, sent > 0 ? PROTO_OK : PROTO_E_NAME_UNRESOLVABLE);
}

static void lookup_finished(lookup_req *l) {
    session *s = l->res.sess;

    l->in_flight = false;
    lookups_in_flight--;
    l->dns->in_flight--;
    session_usage(s)->pending_ops--;
}

static void on_resolved(uv_getaddrinfo_t *gai, int status, struct addrinfo *res) {
    lookup_req *l = gai->data;
    session *s = l->res.sess;
    proto_addr answers[LOOKUP_MAX_ADDRESSES];

    lookup_finished(l);
    if (l->destroyed) {
        /* Dropped, or its session closed, while the pool worked. */
        uv_freeaddrinfo(res);
        free(l);
        session_release(s);
        return;
    }
    if (status < 0) {
        log_debug("session %llu handle %u: lookup of %s failed: %s",
                  (unsigned long long)session_id(s), (unsigned)l->res.handle, l->name,
                  uv_strerror(status));
        send_done(s, l->res.handle, lookup_error(status));
    } else {
        deliver_answers(l, answers, collect_answers(res, answers, LOOKUP_MAX_ADDRESSES));
    }
    uv_freeaddrinfo(res);
    session_flush(s);
    session_release(s);
}

/* While in flight the pool callback owns the memory: cancel if the work has
 * not started, and let the callback free it either way. */
static void lookup_destroy(resource *r) {
    lookup_req *l = (lookup_req *)r;

    if (l->authz != NULL) {
        authz_cancel(l->authz); /* a prompt nobody waits for is withdrawn */
        l->authz = NULL;
    }
    if (l->in_flight) {
        l->destroyed = true;
        uv_cancel((uv_req_t *)&l->gai);
        return;
    }
    free(l);
}

/* --- requests ------------------------------------------------------------------ */

/* Adds l (allocated, not yet in the table) to the session's table and
 * replies with its handle. Takes l: returns it, or NULL after freeing it
 * and replying with the error. */
static lookup_req *lookup_add(session *s, const proto_msg *req, lookup_req *l, const char *name) {
    proto_msg reply;
    int r;

    snprintf(l->name, sizeof(l->name), "%s", name);
    r = session_add_resource(s, &l->res, &lookup_ops);
    if (r < 0) {
        free(l);
        session_reply_error(s, req, r == -ENOSPC ? PROTO_E_NEW_SOCKET_LIMIT : PROTO_E_OUT_OF_MEMORY,
                            "no handle available");
        return NULL;
    }
    proto_reply_ok(req, &reply);
    reply.new_handle = l->res.handle;
    session_send(s, &reply, NULL);
    return l;
}

/* A new lookup in the table (lookup_add), or NULL after replying. */
static lookup_req *lookup_new(session *s, const proto_msg *req, const char *name) {
    lookup_req *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    return lookup_add(s, req, l, name);
}

/* Hands l's name to the resolver on the thread pool. Returns 0 or a
 * negative libuv error (nothing started). */
static int lookup_start_resolver(lookup_req *l, struct tenant_dns *dns) {
    session *s = l->res.sess;
    struct addrinfo hints;
    int r;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    /* One entry per address rather than one per socket type. */
    hints.ai_socktype = SOCK_STREAM;
    l->dns = dns;
    l->gai.data = l;
    r = uv_getaddrinfo(session_loop(s), &l->gai, on_resolved, l->name, NULL, &hints);
    if (r < 0) {
        return r;
    }
    l->in_flight = true;
    lookups_in_flight++;
    dns->in_flight++;
    session_usage(s)->pending_ops++;
    session_hold(s); /* the callback may run after the session closed */
    return 0;
}

/* True when the daemon or the tenant has as many lookups in flight as it
 * allows (the tenant's pending_ops included). */
static bool lookups_at_limit(session *s, const struct tenant_dns *dns) {
    policy_limits limits =
        policy_tenant_limits(server_policy(session_server(s)), session_tenant(s));

    return dns->in_flight >= LOOKUP_MAX_IN_FLIGHT_PER_TENANT ||
           lookups_in_flight >= LOOKUP_MAX_IN_FLIGHT ||
           (limits.pending_ops != 0 && session_usage(s)->pending_ops >= limits.pending_ops);
}

/* The decision on a lookup that had to wait (a prompt, a delayed refusal):
 * a refusal or a failure to start ends the lookup with EV_RESOLVE_DONE, as
 * the resolver's own failures do. Not called once the lookup is dropped. */
static void on_lookup_decided(void *cookie, proto_err result) {
    lookup_req *l = cookie;
    session *s = l->res.sess;
    struct tenant_dns *dns;
    int r;

    l->authz = NULL;
    session_hold(s);
    if (result == PROTO_OK && names_is_reserved_invalid(l->name)) {
        result = PROTO_E_NAME_UNRESOLVABLE;
    }
    if (result == PROTO_OK) {
        dns = tenant_dns_of(s);
        if (dns == NULL) {
            result = PROTO_E_OUT_OF_MEMORY;
        } else if (lookups_at_limit(s, dns)) {
            result = PROTO_E_TEMPORARY_RESOLVER_FAILURE;
        } else if ((r = lookup_start_resolver(l, dns)) < 0) {
            result = lookup_error(r);
        }
    }
    if (result != PROTO_OK) {
        send_done(s, l->res.handle, result);
    }
    session_flush(s);
    session_release(s);
}

static void handle_resolve(session *s, const proto_msg *req) {
    const char *tenant = session_tenant(s);
    char name[NAMES_MAX + 1];
    proto_addr literal;
    struct tenant_dns *dns;
    lookup_req *l;
    authz_query q;
    authz_pending *pending = NULL;
    policy_verdict decided;
    proto_err verdict;
    int kind, r;

    kind = names_parse(req->name, name, &literal);
    if (kind < 0) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "not a valid name or IP address");
        return;
    }
    if (session_resource_count(s) >= SESSION_MAX_RESOURCES) {
        session_reply_error(s, req, PROTO_E_NEW_SOCKET_LIMIT, "this connection holds %d resources",
                            SESSION_MAX_RESOURCES);
        return;
    }
    if (kind == NAMES_LITERAL) {
        /* A literal needs no resolver and names nothing a rule could
         * match: it is its own answer, without policy or binding. */
        l = lookup_new(s, req, "");
        if (l != NULL) {
            send_address(s, l->res.handle, &literal);
            send_done(s, l->res.handle, PROTO_OK);
        }
        return;
    }

    memset(&q, 0, sizeof(q));
    q.op = POLICY_OP_LOOKUP;
    q.host = name;
    q.handle = 0;
    q.verdict = &decided;
    /* Allocated first: a decision that waits needs the lookup to exist. */
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    if (authz_begin(s, &q, on_lookup_decided, l, &verdict, &pending) == AUTHZ_PENDING) {
        l->authz = pending;
        snprintf(l->decided_by, sizeof(l->decided_by), "%s", decided.decided_by);
        if (lookup_add(s, req, l, name) == NULL) {
            /* Freed by lookup_add; it was never in the table. */
            authz_cancel(pending);
        }
        return;
    }
    free(l);
    if (verdict != PROTO_OK) {
        session_reply_error(s, req, verdict, "the policy refuses to look this name up");
        return;
    }
    if (names_is_reserved_invalid(name)) {
        l = lookup_new(s, req, name);
        if (l != NULL) {
            send_done(s, l->res.handle, PROTO_E_NAME_UNRESOLVABLE);
        }
        return;
    }
    dns = tenant_dns_of(s);
    if (dns == NULL) {
        session_reply_error(s, req, PROTO_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    if (lookups_at_limit(s, dns)) {
        log_write_ratelimited(&lookup_log, LOG_LEVEL_INFO,
                              "session %llu tenant %s: too many lookups in flight; refusing %s",
                              (unsigned long long)session_id(s), tenant, name);
        session_reply_error(s, req, PROTO_E_TEMPORARY_RESOLVER_FAILURE,
                            "too many lookups in flight");
        return;
    }

    l = lookup_new(s, req, name);
    if (l == NULL) {
        return;
    }
    snprintf(l->decided_by, sizeof(l->decided_by), "%s", decided.decided_by);
    r = lookup_start_resolver(l, dns);
    if (r < 0) {
        send_done(s, l->res.handle, lookup_error(r));
    }
}

static void handle_resolve_drop(session *s, const proto_msg *req) {
    resource *r = session_take_resource(s, req->handle, &lookup_ops);

    if (r == NULL) {
        session_reply_error(s, req, PROTO_E_INVALID_ARGUMENT, "no such handle");
        return;
    }
    lookup_destroy(r);
    session_reply_ok(s, req);
}

void lookup_handle_request(session *s, const proto_msg *req) {
    switch (req->type) {
    case PROTO_RESOLVE:
        handle_resolve(s, req);
        return;
    case PROTO_RESOLVE_DROP:
        handle_resolve_drop(s, req);
        return;
    }
    session_reply_error(s, req, PROTO_E_NOT_SUPPORTED, "unknown lookup request");
}
