/* compile.c — builds the per-operation index of a ruleset so a decision
 * touches few rules however long the file is.
 *
 * Input: validated rules from load.c (trusted to be well-formed). For every
 * operation each rule that can match it is filed under exactly one kind of
 * key: its remote prefixes, local prefixes, remote ports, local ports or
 * host names, whichever gives it the fewest fellow candidates (counted over
 * the whole ruleset first), or, if none is selective, an "unindexed" list.
 * Every key's rule list is sorted by rule index, so the matcher can merge
 * the few lists a request hits and still see the rules in file order:
 * the first full match is the first match of the file.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

typedef enum index_kind {
    INDEX_NONE,
    INDEX_REMOTE,
    INDEX_LOCAL,
    INDEX_PORTS,
    INDEX_LOCAL_PORTS,
    INDEX_HOST,
} index_kind;

/* Growable arrays used while building; moved into the arena at the end. */
typedef struct build_lists {
    pol_prefix_entry *remote, *local;
    size_t remote_count, remote_cap, local_count, local_cap;
    pol_key_entry *ports, *local_ports;
    size_t port_count, port_cap, local_port_count, local_port_cap;
    pol_name_entry *exact, *suffix;
    size_t exact_count, exact_cap, suffix_count, suffix_cap;
    uint32_t *unindexed[3], *implicit[3];
    size_t unindexed_count[3], unindexed_cap[3], implicit_count[3], implicit_cap[3];
} build_lists;

/* Makes room for one more element in a malloc'd array. */
static int grow(void **items, size_t *cap, size_t count, size_t size) {
    if (count < *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 16;
    void *grown = realloc(*items, n * size);
    if (grown == NULL)
        return -ENOMEM;
    *items = grown;
    *cap = n;
    return 0;
}

#define PUSH(arr, count, cap, value)                                                               \
    (grow((void **)&(arr), &(cap), (count), sizeof(*(arr))) < 0 ? -ENOMEM                          \
                                                                : ((arr)[(count)++] = (value), 0))

static void build_lists_free(build_lists *b) {
    free(b->remote);
    free(b->local);
    free(b->ports);
    free(b->local_ports);
    free(b->exact);
    free(b->suffix);
    for (int f = 0; f < 3; f++) {
        free(b->unindexed[f]);
        free(b->implicit[f]);
    }
    memset(b, 0, sizeof(*b));
}

/* How many rules of one operation name each key: the cost of filing a
 * rule under a key is the number of rules sharing that key's run, weighted
 * by how broad the key is. Counting first lets rules that share a popular
 * address (127.0.0.1 in a thousand bind rules) be filed by port instead. */
typedef struct key_census {
    pol_prefix *remote, *local; /* malloc'd, sorted */
    size_t remote_count, local_count;
    uint32_t *ports, *local_ports;
    size_t port_count, local_port_count;
    const char **names; /* "=name" exact, "*name" suffix; malloc'd, sorted */
    size_t name_count;
    bool failed;
} key_census;

/* Keys narrower than this share of their space are all weighted alike:
 * requests cluster on popular addresses, so a /32 is not "4 billion times"
 * better than a /0 in practice, but a run of many rules is always costly. */
#define INDEX_MIN_WEIGHT (1.0 / 65536.0)

/* A suffix covers many names; an exact name one. */
#define INDEX_SUFFIX_WEIGHT (1.0 / 4096.0)

static double prefix_weight(unsigned length) {
    double w = length >= 16 ? 0.0 : 1.0 / (double)(1u << length);
    return w > INDEX_MIN_WEIGHT ? w : INDEX_MIN_WEIGHT;
}

static int prefix_compare(const void *a, const void *b) {
    const pol_prefix *x = a, *y = b;
    if (x->family != y->family)
        return x->family < y->family ? -1 : 1;
    if (x->length != y->length)
        return x->length < y->length ? -1 : 1;
    return memcmp(x->addr, y->addr, 16);
}

static int u32_compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : (x > y);
}

static int name_compare(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Number of elements equal to key in a sorted array. */
static size_t census_count(const void *base, size_t count, size_t size, const void *key,
                           int (*compare)(const void *, const void *)) {
    const unsigned char *items = base;
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare(items + mid * size, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t first = lo;
    hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare(items + mid * size, key) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - first;
}

static size_t address_entries(const pol_addr_list *list) {
    size_t n = 0;
    for (size_t t = 0; t < list->table_count; t++)
        n += list->tables[t]->count;
    return n;
}

/* Ports a list would file, or SIZE_MAX when a range is too wide. */
static size_t port_entries(const pol_port_list *list) {
    size_t ports = list->ephemeral ? 1 : 0;
    for (size_t i = 0; i < list->count; i++) {
        size_t span = (size_t)list->ranges[i].high - list->ranges[i].low + 1;
        if (span > POLICY_INDEX_MAX_PORT_SPAN)
            return SIZE_MAX;
        ports += span;
    }
    return ports;
}

static bool hosts_indexable(const pol_rule *r) {
    if (r->host_count > POLICY_INDEX_MAX_ENTRIES_PER_RULE)
        return false;
    for (size_t i = 0; i < r->host_count; i++) {
        if (r->hosts[i].kind == POL_HOST_ANY)
            return false;
    }
    return true;
}

static char *census_name(const pol_host_pattern *h) {
    size_t len = h->len + 2;
    char *name = malloc(len);
    if (name != NULL)
        snprintf(name, len, "%c%s", h->kind == POL_HOST_EXACT ? '=' : '*', h->name);
    return name;
}

#define CENSUS_PUSH(arr, count, cap, value)                                                        \
    do {                                                                                           \
        if (PUSH(arr, count, cap, value) < 0)                                                      \
            census->failed = true;                                                                 \
    } while (0)

static void census_add_addresses(key_census *census, pol_prefix **arr, size_t *count, size_t *cap,
                                 const pol_addr_list *list) {
    if (address_entries(list) > POLICY_INDEX_MAX_ENTRIES_PER_RULE)
        return;
    for (size_t t = 0; t < list->table_count; t++) {
        for (size_t i = 0; i < list->tables[t]->count; i++)
            CENSUS_PUSH(*arr, *count, *cap, list->tables[t]->entries[i].prefix);
    }
}

static void census_add_ports(key_census *census, uint32_t **arr, size_t *count, size_t *cap,
                             const pol_port_list *list) {
    size_t n = port_entries(list);
    if (n == SIZE_MAX || n > POLICY_INDEX_MAX_ENTRIES_PER_RULE)
        return;
    if (list->ephemeral)
        CENSUS_PUSH(*arr, *count, *cap, 0u);
    for (size_t i = 0; i < list->count; i++) {
        for (uint32_t port = list->ranges[i].low; port <= list->ranges[i].high; port++)
            CENSUS_PUSH(*arr, *count, *cap, port);
    }
}

static void census_take(key_census *census, const pol_ruleset *set, policy_op op) {
    size_t remote_cap = 0, local_cap = 0, port_cap = 0, local_port_cap = 0, name_cap = 0;
    for (size_t i = 0; i < set->count && !census->failed; i++) {
        const pol_rule *r = set->rules[i];
        if (!(r->ops & (1u << op)))
            continue;
        unsigned keys = r->keys & pol_op_keys(op);
        if (keys & POL_KEY_REMOTE)
            census_add_addresses(census, &census->remote, &census->remote_count, &remote_cap,
                                 &r->remote);
        if (keys & POL_KEY_LOCAL)
            census_add_addresses(census, &census->local, &census->local_count, &local_cap,
                                 &r->local);
        if (keys & POL_KEY_PORTS)
            census_add_ports(census, &census->ports, &census->port_count, &port_cap, &r->ports);
        if (keys & POL_KEY_LOCAL_PORTS)
            census_add_ports(census, &census->local_ports, &census->local_port_count,
                             &local_port_cap, &r->local_ports);
        if ((keys & POL_KEY_HOST) && hosts_indexable(r)) {
            for (size_t h = 0; h < r->host_count; h++) {
                char *name = census_name(&r->hosts[h]);
                if (name == NULL) {
                    census->failed = true;
                    break;
                }
                if (PUSH(census->names, census->name_count, name_cap, name) < 0) {
                    free(name);
                    census->failed = true;
                    break;
                }
            }
        }
    }
    /* qsort() must not see a NULL array, even an empty one. */
    if (census->remote_count > 0)
        qsort(census->remote, census->remote_count, sizeof(pol_prefix), prefix_compare);
    if (census->local_count > 0)
        qsort(census->local, census->local_count, sizeof(pol_prefix), prefix_compare);
    if (census->port_count > 0)
        qsort(census->ports, census->port_count, sizeof(uint32_t), u32_compare);
    if (census->local_port_count > 0)
        qsort(census->local_ports, census->local_port_count, sizeof(uint32_t), u32_compare);
    if (census->name_count > 0)
        qsort(census->names, census->name_count, sizeof(char *), name_compare);
}

static void census_free(key_census *census) {
    free(census->remote);
    free(census->local);
    free(census->ports);
    free(census->local_ports);
    for (size_t i = 0; i < census->name_count; i++)
        free((char *)census->names[i]);
    free(census->names);
    memset(census, 0, sizeof(*census));
}

static double address_cost(const pol_prefix *keys, size_t key_count, const pol_addr_list *list) {
    if (address_entries(list) > POLICY_INDEX_MAX_ENTRIES_PER_RULE)
        return INFINITY;
    double cost = 0;
    for (size_t t = 0; t < list->table_count; t++) {
        for (size_t i = 0; i < list->tables[t]->count; i++) {
            const pol_prefix *p = &list->tables[t]->entries[i].prefix;
            size_t population = census_count(keys, key_count, sizeof(*keys), p, prefix_compare);
            cost += (double)population * prefix_weight(p->length);
        }
    }
    return cost;
}

static double port_cost(const uint32_t *keys, size_t key_count, const pol_port_list *list) {
    size_t n = port_entries(list);
    if (n == SIZE_MAX || n > POLICY_INDEX_MAX_ENTRIES_PER_RULE)
        return INFINITY;
    double cost = 0;
    uint32_t zero = 0;
    if (list->ephemeral)
        cost += (double)census_count(keys, key_count, sizeof(*keys), &zero, u32_compare) *
                INDEX_MIN_WEIGHT;
    for (size_t i = 0; i < list->count; i++) {
        for (uint32_t port = list->ranges[i].low; port <= list->ranges[i].high; port++)
            cost += (double)census_count(keys, key_count, sizeof(*keys), &port, u32_compare) *
                    INDEX_MIN_WEIGHT;
    }
    return cost;
}

static double host_cost(const key_census *census, const pol_rule *r) {
    if (!hosts_indexable(r))
        return INFINITY;
    double cost = 0;
    for (size_t i = 0; i < r->host_count; i++) {
        char *name = census_name(&r->hosts[i]);
        if (name == NULL)
            return INFINITY;
        size_t population =
            census_count(census->names, census->name_count, sizeof(char *), &name, name_compare);
        free(name);
        cost += (double)population *
                (r->hosts[i].kind == POL_HOST_EXACT ? INDEX_MIN_WEIGHT : INDEX_SUFFIX_WEIGHT);
    }
    return cost;
}

/* Picks the key kind a rule is filed under for one operation: the one with
 * the fewest expected fellow candidates. */
static index_kind choose_index(const key_census *census, const pol_rule *r, unsigned keys) {
    index_kind best = INDEX_NONE;
    /* Keys covering half of their space or more are no better than the
     * unindexed list. */
    double best_cost = 0.5;
    double cost;
    if (keys & POL_KEY_HOST) {
        cost = host_cost(census, r);
        if (cost < best_cost) {
            best = INDEX_HOST;
            best_cost = cost;
        }
    }
    if (keys & POL_KEY_REMOTE) {
        cost = address_cost(census->remote, census->remote_count, &r->remote);
        if (cost < best_cost) {
            best = INDEX_REMOTE;
            best_cost = cost;
        }
    }
    if (keys & POL_KEY_LOCAL) {
        cost = address_cost(census->local, census->local_count, &r->local);
        if (cost < best_cost) {
            best = INDEX_LOCAL;
            best_cost = cost;
        }
    }
    if (keys & POL_KEY_PORTS) {
        cost = port_cost(census->ports, census->port_count, &r->ports);
        if (cost < best_cost) {
            best = INDEX_PORTS;
            best_cost = cost;
        }
    }
    if (keys & POL_KEY_LOCAL_PORTS) {
        cost = port_cost(census->local_ports, census->local_port_count, &r->local_ports);
        if (cost < best_cost) {
            best = INDEX_LOCAL_PORTS;
            best_cost = cost;
        }
    }
    return best;
}

static int file_addresses(pol_prefix_entry **arr, size_t *count, size_t *cap,
                          const pol_addr_list *list, uint32_t rule) {
    for (size_t t = 0; t < list->table_count; t++) {
        for (size_t i = 0; i < list->tables[t]->count; i++) {
            pol_prefix_entry e = {.prefix = list->tables[t]->entries[i].prefix, .value = rule};
            if (PUSH(*arr, *count, *cap, e) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

static int file_ports(pol_key_entry **arr, size_t *count, size_t *cap, const pol_port_list *list,
                      uint32_t rule) {
    if (list->ephemeral && PUSH(*arr, *count, *cap, ((pol_key_entry){0, rule})) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < list->count; i++) {
        for (uint32_t port = list->ranges[i].low; port <= list->ranges[i].high; port++) {
            if (PUSH(*arr, *count, *cap, ((pol_key_entry){port, rule})) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

static int file_rule(build_lists *b, const key_census *census, const pol_rule *r, uint32_t index,
                     policy_op op) {
    unsigned bit = 1u << op;
    if (r->implicit_ops & bit) {
        for (int f = 1; f <= 2; f++) {
            if ((r->families & (1u << (f - 1))) &&
                PUSH(b->implicit[f], b->implicit_count[f], b->implicit_cap[f], index) < 0)
                return -ENOMEM;
        }
    }
    if (!(r->ops & bit))
        return 0;
    switch (choose_index(census, r, r->keys & pol_op_keys(op))) {
    case INDEX_REMOTE:
        return file_addresses(&b->remote, &b->remote_count, &b->remote_cap, &r->remote, index);
    case INDEX_LOCAL:
        return file_addresses(&b->local, &b->local_count, &b->local_cap, &r->local, index);
    case INDEX_PORTS:
        return file_ports(&b->ports, &b->port_count, &b->port_cap, &r->ports, index);
    case INDEX_LOCAL_PORTS:
        return file_ports(&b->local_ports, &b->local_port_count, &b->local_port_cap,
                          &r->local_ports, index);
    case INDEX_HOST:
        for (size_t i = 0; i < r->host_count; i++) {
            pol_name_entry e = {r->hosts[i].name, index};
            int rc = r->hosts[i].kind == POL_HOST_EXACT
                         ? PUSH(b->exact, b->exact_count, b->exact_cap, e)
                         : PUSH(b->suffix, b->suffix_count, b->suffix_cap, e);
            if (rc < 0)
                return -ENOMEM;
        }
        return 0;
    case INDEX_NONE:
        break;
    }
    /* Unindexed: by request family; family 0 (no address) sees them all. */
    if (PUSH(b->unindexed[0], b->unindexed_count[0], b->unindexed_cap[0], index) < 0)
        return -ENOMEM;
    for (int f = 1; f <= 2; f++) {
        if ((r->families & (1u << (f - 1))) &&
            PUSH(b->unindexed[f], b->unindexed_count[f], b->unindexed_cap[f], index) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int key_entry_compare(const void *a, const void *b) {
    const pol_key_entry *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->rule < y->rule ? -1 : (x->rule > y->rule);
}

static int name_entry_compare(const void *a, const void *b) {
    const pol_name_entry *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    if (r != 0)
        return r;
    return x->rule < y->rule ? -1 : (x->rule > y->rule);
}

/* Copies a malloc'd array into the arena (sorted and de-duplicated with
 * `compare` when given). Returns the copy, NULL for count 0, or sets *oom. */
static void *to_arena(pol_arena *arena, const void *items, size_t *count, size_t size,
                      int (*compare)(const void *, const void *), bool *oom) {
    if (*count == 0)
        return NULL;
    unsigned char *copy = pol_arena_alloc(arena, *count * size);
    if (copy == NULL) {
        *oom = true;
        return NULL;
    }
    memcpy(copy, items, *count * size);
    if (compare != NULL) {
        qsort(copy, *count, size, compare);
        size_t kept = 1;
        for (size_t i = 1; i < *count; i++) {
            if (compare(copy + i * size, copy + (kept - 1) * size) != 0)
                memmove(copy + kept++ * size, copy + i * size, size);
        }
        *count = kept;
    }
    return copy;
}

static int compile_op(pol_arena *arena, pol_ruleset *set, policy_op op) {
    build_lists b = {0};
    pol_op_index *idx = &set->index[op];
    bool oom = false;
    key_census census = {0};
    census_take(&census, set, op);
    if (census.failed) {
        census_free(&census);
        return -ENOMEM;
    }
    for (size_t i = 0; i < set->count; i++) {
        if (file_rule(&b, &census, set->rules[i], (uint32_t)i, op) < 0) {
            census_free(&census);
            build_lists_free(&b);
            return -ENOMEM;
        }
    }
    census_free(&census);
    size_t n = b.remote_count;
    pol_prefix_entry *remote = to_arena(arena, b.remote, &n, sizeof(*remote), NULL, &oom);
    if (remote != NULL && pol_prefix_table_build(arena, remote, n, &idx->remote) < 0)
        oom = true;
    n = b.local_count;
    pol_prefix_entry *local = to_arena(arena, b.local, &n, sizeof(*local), NULL, &oom);
    if (local != NULL && pol_prefix_table_build(arena, local, n, &idx->local) < 0)
        oom = true;
    idx->port_count = b.port_count;
    idx->ports =
        to_arena(arena, b.ports, &idx->port_count, sizeof(*idx->ports), key_entry_compare, &oom);
    idx->local_port_count = b.local_port_count;
    idx->local_ports = to_arena(arena, b.local_ports, &idx->local_port_count,
                                sizeof(*idx->local_ports), key_entry_compare, &oom);
    idx->exact_count = b.exact_count;
    idx->exact =
        to_arena(arena, b.exact, &idx->exact_count, sizeof(*idx->exact), name_entry_compare, &oom);
    idx->suffix_count = b.suffix_count;
    idx->suffix = to_arena(arena, b.suffix, &idx->suffix_count, sizeof(*idx->suffix),
                           name_entry_compare, &oom);
    for (int f = 0; f < 3; f++) {
        /* Filed in rule order already: no sort needed. */
        idx->unindexed_count[f] = b.unindexed_count[f];
        idx->unindexed[f] =
            to_arena(arena, b.unindexed[f], &idx->unindexed_count[f], sizeof(uint32_t), NULL, &oom);
        idx->implicit_count[f] = b.implicit_count[f];
        idx->implicit[f] =
            to_arena(arena, b.implicit[f], &idx->implicit_count[f], sizeof(uint32_t), NULL, &oom);
    }
    build_lists_free(&b);
    return oom ? -ENOMEM : 0;
}

int pol_ruleset_compile(pol_arena *arena, pol_ruleset *set) {
    for (unsigned op = 0; op < POLICY_OP_COUNT; op++) {
        int r = compile_op(arena, set, (policy_op)op);
        if (r < 0)
            return r;
    }
    return 0;
}
