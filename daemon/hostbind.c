/* hostbind.c — the name binding table of one tenant.
 *
 * Input: names the daemon normalised itself (lower case, A-labels) and
 * addresses its resolver returned, both trusted; addresses to look up come
 * from clients' connect and send requests, already checked by sockrules.
 * Entries live in a hash map by IP address (chained) and in a list from
 * oldest to newest, which gives eviction order when the table is full.
 */
#include "hostbind.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* First bucket array; the map doubles whenever it holds as many entries as
 * buckets, so chains stay short however large the tenant's cap is. */
#define HOSTBIND_BUCKETS_INITIAL 64

struct hostbind_entry {
    char name[HOSTBIND_NAME_MAX + 1];
    char rule[HOSTBIND_RULE_MAX + 1];
    uint8_t family; /* PROTO_IPV4 / PROTO_IPV6 */
    uint8_t ip[16]; /* IPv4 in ip[0..3], rest 0 */
    uint64_t scope;
    uint64_t expires_ms;
    unsigned pins;
    hostbind_table *table; /* NULL once the table is freed (pinned leftovers) */
    hostbind_entry *older, *newer;
    hostbind_entry *chain;
};

struct hostbind_table {
    hostbind_entry **buckets;
    size_t bucket_count; /* a power of two */
    size_t count;
    hostbind_entry *oldest, *newest;
};

static size_t ip_bytes(uint8_t family) {
    return family == PROTO_IPV4 ? 4 : 16;
}

/* FNV-1a over the family and address bytes. */
static uint64_t ip_hash(uint8_t family, const uint8_t *ip) {
    uint64_t h = 1469598103934665603ull;

    h = (h ^ family) * 1099511628211ull;
    for (size_t i = 0; i < ip_bytes(family); i++) {
        h = (h ^ ip[i]) * 1099511628211ull;
    }
    return h;
}

static hostbind_entry **bucket_of(hostbind_table *t, uint8_t family, const uint8_t *ip) {
    return &t->buckets[ip_hash(family, ip) & (t->bucket_count - 1)];
}

static bool same_ip(const hostbind_entry *e, uint8_t family, const uint8_t *ip) {
    return e->family == family && memcmp(e->ip, ip, ip_bytes(family)) == 0;
}

hostbind_table *hostbind_table_new(void) {
    hostbind_table *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        return NULL;
    }
    t->bucket_count = HOSTBIND_BUCKETS_INITIAL;
    t->buckets = calloc(t->bucket_count, sizeof(*t->buckets));
    if (t->buckets == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

/* Unlinks e from the age list and its chain; the memory stays. */
static void entry_unlink(hostbind_table *t, hostbind_entry *e) {
    hostbind_entry **link = bucket_of(t, e->family, e->ip);

    while (*link != NULL && *link != e) {
        link = &(*link)->chain;
    }
    if (*link == e) {
        *link = e->chain;
    }
    if (e->older != NULL) {
        e->older->newer = e->newer;
    } else {
        t->oldest = e->newer;
    }
    if (e->newer != NULL) {
        e->newer->older = e->older;
    } else {
        t->newest = e->older;
    }
    e->older = e->newer = e->chain = NULL;
    t->count--;
}

/* Removes e from the table and frees it (it must not be pinned). */
static void entry_remove(hostbind_table *t, hostbind_entry *e) {
    entry_unlink(t, e);
    free(e);
}

/* Appends e as the newest entry and into its chain. */
static void entry_link_newest(hostbind_table *t, hostbind_entry *e) {
    hostbind_entry **bucket = bucket_of(t, e->family, e->ip);

    e->chain = *bucket;
    *bucket = e;
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest != NULL) {
        t->newest->newer = e;
    } else {
        t->oldest = e;
    }
    t->newest = e;
    t->count++;
}

void hostbind_table_free(hostbind_table *t) {
    hostbind_entry *e, *next;

    if (t == NULL) {
        return;
    }
    for (e = t->oldest; e != NULL; e = next) {
        next = e->newer;
        if (e->pins > 0) {
            /* A socket still holds it: it goes with the last unpin. */
            e->table = NULL;
            e->older = e->newer = e->chain = NULL;
        } else {
            free(e);
        }
    }
    free(t->buckets);
    free(t);
}

/* Doubles the bucket array; failing leaves longer chains, which still work. */
static void maybe_grow(hostbind_table *t) {
    size_t new_count = t->bucket_count * 2;
    hostbind_entry **buckets;

    if (t->count < t->bucket_count || new_count > SIZE_MAX / sizeof(*buckets)) {
        return;
    }
    buckets = calloc(new_count, sizeof(*buckets));
    if (buckets == NULL) {
        return;
    }
    for (hostbind_entry *e = t->oldest; e != NULL; e = e->newer) {
        size_t b = ip_hash(e->family, e->ip) & (new_count - 1);
        e->chain = buckets[b];
        buckets[b] = e;
    }
    free(t->buckets);
    t->buckets = buckets;
    t->bucket_count = new_count;
}

size_t hostbind_expire(hostbind_table *t, uint64_t now_ms) {
    hostbind_entry *e, *next;
    size_t freed = 0;

    for (e = t->oldest; e != NULL; e = next) {
        next = e->newer;
        if (e->pins == 0 && e->expires_ms <= now_ms) {
            entry_remove(t, e);
            freed++;
        }
    }
    return freed;
}

/* Frees the oldest entry nobody pins; false when every entry is pinned. */
static bool evict_oldest_unpinned(hostbind_table *t) {
    for (hostbind_entry *e = t->oldest; e != NULL; e = e->newer) {
        if (e->pins == 0) {
            entry_remove(t, e);
            return true;
        }
    }
    return false;
}

int hostbind_add(hostbind_table *t, const char *name, const proto_addr *addr, uint64_t scope,
                 uint64_t expires_ms, const char *rule_id, uint64_t now_ms, size_t max_entries) {
    size_t name_len = name != NULL ? strnlen(name, HOSTBIND_NAME_MAX + 1) : 0;
    hostbind_entry *e;

    if (name_len == 0 || name_len > HOSTBIND_NAME_MAX || scope == 0 ||
        (addr->family != PROTO_IPV4 && addr->family != PROTO_IPV6)) {
        return -EINVAL;
    }
    for (e = *bucket_of(t, addr->family, addr->ip); e != NULL; e = e->chain) {
        if (same_ip(e, addr->family, addr->ip) && e->scope == scope && strcmp(e->name, name) == 0) {
            if (expires_ms > e->expires_ms) {
                e->expires_ms = expires_ms;
            }
            if (rule_id != NULL) {
                strncpy(e->rule, rule_id, HOSTBIND_RULE_MAX);
                e->rule[HOSTBIND_RULE_MAX] = '\0';
            }
            entry_unlink(t, e);
            entry_link_newest(t, e);
            return 0;
        }
    }
    if (max_entries == 0) {
        return -ENOSPC;
    }
    if (t->count >= max_entries) {
        hostbind_expire(t, now_ms);
    }
    while (t->count >= max_entries) {
        if (!evict_oldest_unpinned(t)) {
            return -ENOSPC;
        }
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return -ENOMEM;
    }
    memcpy(e->name, name, name_len);
    e->name[name_len] = '\0';
    if (rule_id != NULL) {
        strncpy(e->rule, rule_id, HOSTBIND_RULE_MAX);
        e->rule[HOSTBIND_RULE_MAX] = '\0';
    }
    e->family = addr->family;
    memcpy(e->ip, addr->ip, ip_bytes(addr->family));
    e->scope = scope;
    e->expires_ms = expires_ms;
    e->table = t;
    maybe_grow(t);
    entry_link_newest(t, e);
    return 0;
}

size_t hostbind_find(hostbind_table *t, const proto_addr *addr, uint64_t scope, uint64_t now_ms,
                     bool keep_pinned, hostbind_entry **out, size_t max) {
    size_t n = 0;

    if (max == 0 || (addr->family != PROTO_IPV4 && addr->family != PROTO_IPV6)) {
        return 0;
    }
    for (hostbind_entry *e = *bucket_of(t, addr->family, addr->ip); e != NULL; e = e->chain) {
        bool live = e->expires_ms > now_ms || (keep_pinned && e->pins > 0);
        if (!same_ip(e, addr->family, addr->ip) || !live || (scope != 0 && e->scope != scope)) {
            continue;
        }
        /* Insertion by expiry, latest first: chains are short and max is
         * small. When out is full, the earliest expiry falls off the end. */
        size_t i = n < max ? n++ : max;
        hostbind_entry *insert = e;
        for (size_t j = 0; j < i; j++) {
            if (insert->expires_ms > out[j]->expires_ms) {
                hostbind_entry *tmp = out[j];
                out[j] = insert;
                insert = tmp;
            }
        }
        if (i < max) {
            out[i] = insert;
        }
    }
    return n;
}

size_t hostbind_count(const hostbind_table *t) {
    return t->count;
}

const char *hostbind_entry_name(const hostbind_entry *e) {
    return e->name;
}

const char *hostbind_entry_rule(const hostbind_entry *e) {
    return e->rule;
}

uint64_t hostbind_entry_expires(const hostbind_entry *e) {
    return e->expires_ms;
}

void hostbind_pin(hostbind_entry *e) {
    e->pins++;
}

void hostbind_unpin(hostbind_entry *e) {
    if (e->pins == 0) {
        return;
    }
    e->pins--;
    if (e->pins == 0 && e->table == NULL) {
        free(e);
    }
}
