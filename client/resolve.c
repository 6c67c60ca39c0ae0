/* resolve.c — libwasock's name lookups (wasi:sockets ip-name-lookup).
 *
 * A lookup is a daemon resource: RESOLVE creates it, and the daemon sends
 * its addresses and its result as events, which the reading thread stores
 * here under the client's lock. The 0.2 stream hands them out one by one;
 * the 0.3 convenience waits and copies the list.
 *
 * Trust: the caller's name is checked only for what is certain here (NULL,
 * a length the protocol cannot carry); events come from the daemon and are
 * bounded (at most RESOLVE_ADDRESSES_MAX addresses are kept).
 */
#include "client-internal.h"

#include <stdlib.h>
#include <string.h>

/* Addresses kept per lookup: the daemon sends at most 64 (LOOKUP_MAX_
 * ADDRESSES in the daemon); a daemon sending more is cut off here. */
#define RESOLVE_ADDRESSES_MAX 64

struct wasock_resolve {
    client_object obj; /* first member: the client's map entry */
    wasock_client *client;
    /* Written by the reader under the client's lock. */
    bool done;
    wasock_err result;
    wasock_ip addrs[RESOLVE_ADDRESSES_MAX];
    size_t count;
    /* The caller's cursor. */
    size_t next;
};

static void resolve_on_event(client_object *o, const proto_msg *ev) {
    wasock_resolve *r = (wasock_resolve *)o;
    wasock_addr a;

    switch (ev->type) {
    case PROTO_EV_RESOLVE_ADDRESS:
        if (!r->done && r->count < RESOLVE_ADDRESSES_MAX &&
            client_addr_from_proto(&ev->addr, &a) == 0)
            r->addrs[r->count++] = a.ip;
        break;
    case PROTO_EV_RESOLVE_DONE:
        if (!r->done) {
            r->done = true;
            r->result = (wasock_err)ev->result;
            /* Never an empty success, whatever the daemon says. */
            if (r->result == WASOCK_OK && r->count == 0)
                r->result = WASOCK_E_NAME_UNRESOLVABLE;
        }
        break;
    default:
        break;
    }
}

static void resolve_on_close(client_object *o) {
    free(o);
}

wasock_err wasock_resolve_addresses(wasock_client *c, const char *name, wasock_resolve **out) {
    proto_msg req, reply;
    wasock_resolve *r;
    wasock_err err;
    size_t len;

    if (!c || !name || !out)
        return WASOCK_E_INVALID_ARGUMENT;
    len = strnlen(name, PROTO_NAME_MAX + 1);
    if (len > PROTO_NAME_MAX)
        return WASOCK_E_INVALID_ARGUMENT; /* no valid name is that long */
    r = calloc(1, sizeof(*r));
    if (!r)
        return WASOCK_E_OUT_OF_MEMORY;
    r->client = c;
    r->obj.on_event = resolve_on_event;
    r->obj.on_close = resolve_on_close;
    memset(&req, 0, sizeof(req));
    req.type = PROTO_RESOLVE;
    memcpy(req.name, name, len + 1);
    err = client_transact(c, &req, &r->obj, &reply, NULL, 0, NULL);
    if (err != WASOCK_OK) {
        free(r);
        return err;
    }
    *out = r;
    return WASOCK_OK;
}

wasock_err wasock_resolve_next_address(wasock_resolve *r, wasock_ip *out, bool *done) {
    wasock_err err;

    if (!r || !out || !done)
        return WASOCK_E_INVALID_ARGUMENT;
    /* Take in what arrived, so a finished lookup is seen without a wait. */
    if (wasock_client_dispatch(r->client) != WASOCK_OK)
        return WASOCK_E_DAEMON;
    client_lock(r->client);
    if (!r->done) {
        err = WASOCK_E_WOULD_BLOCK;
    } else if (r->result != WASOCK_OK) {
        err = r->result;
    } else {
        err = WASOCK_OK;
        *done = r->next >= r->count;
        if (!*done)
            *out = r->addrs[r->next++];
    }
    client_unlock(r->client);
    return err;
}

bool wasock_resolve_ready(wasock_resolve *r) {
    bool ready;

    if (!r)
        return false;
    client_lock(r->client);
    ready = r->done;
    client_unlock(r->client);
    return ready;
}

void wasock_resolve_drop(wasock_resolve *r) {
    if (!r)
        return;
    client_object_unregister(r->client, &r->obj);
    if (!client_is_broken(r->client)) {
        proto_msg req, reply;

        memset(&req, 0, sizeof(req));
        req.type = PROTO_RESOLVE_DROP;
        req.handle = r->obj.handle;
        (void)client_transact(r->client, &req, NULL, &reply, NULL, 0, NULL);
    }
    free(r);
}

static bool resolve_is_done(wasock_client *c, const void *arg) {
    (void)c;
    return ((const wasock_resolve *)arg)->done;
}

wasock_err wasock_resolve_addresses_list(wasock_client *c, const char *name, wasock_ip *out,
                                         size_t cap, size_t *n) {
    wasock_resolve *r;
    wasock_err err;

    if (!n || (cap > 0 && !out))
        return WASOCK_E_INVALID_ARGUMENT;
    err = wasock_resolve_addresses(c, name, &r);
    if (err != WASOCK_OK)
        return err;
    err = client_wait_until(c, resolve_is_done, r, -1);
    if (err == WASOCK_OK) {
        client_lock(c);
        err = r->result;
        if (err == WASOCK_OK) {
            size_t k = r->count < cap ? r->count : cap;
            memcpy(out, r->addrs, k * sizeof(*out));
            *n = k;
        }
        client_unlock(c);
    }
    wasock_resolve_drop(r);
    return err;
}
