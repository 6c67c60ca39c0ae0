/* answers.c — the store of remembered prompt answers (see answers.h).
 *
 * Input: requests built by the daemon (addresses already validated) and
 * answers chosen by an authenticated prompt agent. Host names may come from
 * a guest; they are compared and copied with checked lengths only.
 */
#include "answers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The parts of a request that identify it for a person. */
typedef struct shape {
    policy_op op;
    bool implicit;
    policy_endpoint local, remote;
    const char *host; /* NULL when the shape has none */
} shape;

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Keeps family, address and (when keep_port) the port; an IPv4-mapped IPv6
 * address becomes the IPv4 address it carries, as the policy matches it. */
static void endpoint_normalise(const policy_endpoint *in, bool keep_port, policy_endpoint *out) {
    memset(out, 0, sizeof(*out));
    if (in->family != 4 && in->family != 6) {
        return;
    }
    if (in->family == 6 && memcmp(in->ip, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
        out->family = 4;
        memcpy(out->ip, in->ip + 12, 4);
    } else {
        out->family = in->family;
        memcpy(out->ip, in->ip, in->family == 4 ? 4 : 16);
    }
    if (keep_port) {
        /* Port 0 asked for and a port the kernel chose both mean "the
         * kernel's choice": one answer covers every such bind or listen. */
        if (in->port == 0 || in->port_ephemeral) {
            out->port_ephemeral = true;
        } else {
            out->port = in->port;
        }
    }
}

static void shape_of(const policy_request *req, shape *out) {
    policy_endpoint none;

    memset(out, 0, sizeof(*out));
    memset(&none, 0, sizeof(none));
    out->op = req->op;
    out->implicit = req->implicit;
    switch (req->op) {
    case POLICY_OP_LOOKUP:
        out->host = req->host;
        break;
    case POLICY_OP_TCP_CONNECT:
    case POLICY_OP_UDP_CONNECT:
    case POLICY_OP_UDP_SEND:
        /* Where to: the destination and the name it was looked up as. */
        endpoint_normalise(&req->remote, true, &out->remote);
        out->host = req->host;
        break;
    case POLICY_OP_TCP_ACCEPT:
    case POLICY_OP_UDP_RECEIVE:
        /* Who from, on which of our ports: a peer's port is ephemeral. */
        endpoint_normalise(&req->local, true, &out->local);
        endpoint_normalise(&req->remote, false, &out->remote);
        break;
    case POLICY_OP_TCP_BIND:
    case POLICY_OP_TCP_LISTEN:
    case POLICY_OP_UDP_BIND:
    default:
        endpoint_normalise(&req->local, true, &out->local);
        break;
    }
}

static bool endpoint_equal(const policy_endpoint *a, const policy_endpoint *b) {
    return a->family == b->family && memcmp(a->ip, b->ip, sizeof(a->ip)) == 0 &&
           a->port == b->port && a->port_ephemeral == b->port_ephemeral;
}

static bool host_equal(const char *a, const char *b) {
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static bool shape_equal(const shape *a, const shape *b) {
    return a->op == b->op && a->implicit == b->implicit && endpoint_equal(&a->local, &b->local) &&
           endpoint_equal(&a->remote, &b->remote) && host_equal(a->host, b->host);
}

bool answer_shape_equal(const policy_request *a, const policy_request *b) {
    shape sa, sb;

    shape_of(a, &sa);
    shape_of(b, &sb);
    return shape_equal(&sa, &sb);
}

static void answer_shape(const answer *a, shape *out) {
    out->op = a->op;
    out->implicit = a->implicit;
    out->local = a->local;
    out->remote = a->remote;
    out->host = a->has_host ? a->host : NULL;
}

/* Unlinks and frees the answer *link points to. */
static void forget(answer_store *st, answer **link) {
    answer *a = *link;

    *link = a->next;
    free(a);
    st->count--;
}

int answer_store_add(answer_store *st, const policy_request *req, const char *decided_by,
                     policy_action action, uint64_t session, uint64_t expires_ms, uint64_t id) {
    shape sh;
    answer *a;
    answer **oldest_link = NULL;
    size_t of_tenant = 0;

    if (req->tenant == NULL || strlen(req->tenant) > PROTO_TENANT_MAX || decided_by == NULL ||
        strlen(decided_by) >= ANSWERS_DECIDER_MAX ||
        (action != POLICY_ALLOW && action != POLICY_DENY)) {
        return -EINVAL;
    }
    shape_of(req, &sh);
    if (sh.host != NULL && strlen(sh.host) >= ANSWERS_HOST_MAX) {
        return -EINVAL;
    }
    /* A newer answer for the same question replaces the older one; count
     * the tenant's answers and find its oldest on the way. */
    for (answer **link = &st->newest; *link != NULL;) {
        answer *old = *link;
        shape old_shape;
        if (strcmp(old->tenant, req->tenant) != 0) {
            link = &old->next;
            continue;
        }
        answer_shape(old, &old_shape);
        if (old->session == session && shape_equal(&old_shape, &sh)) {
            forget(st, link);
            continue;
        }
        of_tenant++;
        oldest_link = link;
        link = &old->next;
    }
    if (of_tenant >= ANSWERS_MAX_PER_TENANT && oldest_link != NULL) {
        forget(st, oldest_link);
    }

    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return -ENOMEM;
    }
    a->id = id;
    a->session = session;
    a->expires_ms = expires_ms;
    a->action = action;
    memcpy(a->tenant, req->tenant, strlen(req->tenant) + 1);
    memcpy(a->decided_by, decided_by, strlen(decided_by) + 1);
    a->op = sh.op;
    a->implicit = sh.implicit;
    a->local = sh.local;
    a->remote = sh.remote;
    if (sh.host != NULL) {
        a->has_host = true;
        memcpy(a->host, sh.host, strlen(sh.host) + 1);
    }
    a->next = st->newest;
    st->newest = a;
    st->count++;
    return 0;
}

const answer *answer_store_find(answer_store *st, const policy_request *req, uint64_t session,
                                uint64_t now_ms) {
    shape sh;

    if (req->tenant == NULL) {
        return NULL;
    }
    shape_of(req, &sh);
    for (answer **link = &st->newest; *link != NULL;) {
        answer *a = *link;
        shape a_shape;
        if (a->expires_ms != 0 && a->expires_ms <= now_ms) {
            forget(st, link);
            continue;
        }
        link = &a->next;
        if (strcmp(a->tenant, req->tenant) != 0 || (a->session != 0 && a->session != session)) {
            continue;
        }
        answer_shape(a, &a_shape);
        if (shape_equal(&a_shape, &sh)) {
            return a;
        }
    }
    return NULL;
}

size_t answer_store_drop_session(answer_store *st, uint64_t session) {
    size_t dropped = 0;

    if (session == 0) {
        return 0; /* 0 names the tenant-wide answers, never a session */
    }
    for (answer **link = &st->newest; *link != NULL;) {
        if ((*link)->session == session) {
            forget(st, link);
            dropped++;
        } else {
            link = &(*link)->next;
        }
    }
    return dropped;
}

size_t answer_store_prune(answer_store *st, bool (*keep)(void *opaque, const answer *a),
                          void *opaque) {
    size_t dropped = 0;

    for (answer **link = &st->newest; *link != NULL;) {
        if (!keep(opaque, *link)) {
            forget(st, link);
            dropped++;
        } else {
            link = &(*link)->next;
        }
    }
    return dropped;
}

void answer_store_clear(answer_store *st) {
    while (st->newest != NULL) {
        forget(st, &st->newest);
    }
}
