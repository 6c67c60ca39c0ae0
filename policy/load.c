/* load.c — validates a parsed policy tree and builds the policy model:
 * settings, address sets, prompt agents, templates, guards and tenants.
 *
 * Trusts nothing in the tree: every key is known or an error, every value
 * is type- and range-checked, every reference (sets, templates, tenants,
 * agents) must resolve, and every error names its file:line:column. Errors
 * are collected (up to POLICY_MAX_DIAGNOSTICS) rather than stopping at the
 * first, and a policy with any error is never returned. Everything kept
 * is copied into the policy's own arena; the tree is freed by the caller.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Deepest chain of sets naming sets: deep enough for any layering a person
 * writes, shallow enough to bound the resolver's recursion. */
#define POLICY_MAX_SET_NESTING 16

/* Longest prompt timeout: a person answers in minutes; holding a guest's
 * operation longer only hides a missing agent. */
#define POLICY_MAX_PROMPT_TIMEOUT_MS (3600u * 1000u)

/* Longest deny delay (tarpit): each delayed refusal holds a pending
 * operation, so longer delays turn into a resource drain on the daemon. */
#define POLICY_MAX_DENY_DELAY_MS (60u * 1000u)

/* Highest count for limits and rates: far above any real quota, low enough
 * to catch a typo of a few extra digits. */
#define POLICY_MAX_LIMIT 10000000u

/* Largest buffered_bytes (64 GiB): more is not a per-tenant buffer. */
#define POLICY_MAX_BUFFERED_BYTES (64ull << 30)

/* Highest uid/gid: (uid_t)-1 means "no id" to the kernel. */
#define POLICY_MAX_ID 4294967294ull

/* Most address entries all named sets may hold once references are
 * flattened. A full Internet routing table is about 1.2 million prefixes;
 * the cap stops sets that name sets many times over from multiplying into
 * gigabytes (the address-set "billion laughs"). */
#define POLICY_MAX_SET_ENTRIES_TOTAL 2000000u

/* Longest audit file name. */
#define POLICY_MAX_PATH 255u

typedef struct named_set {
    const char *name; /* tree text */
    const ynode *key, *value;
    int state;               /* 0 unresolved, 1 resolving, 2 done */
    pol_prefix_table *table; /* in the policy arena: rules point at it */
    unsigned stamp;          /* last list that referred to it (de-duplication) */
} named_set;

typedef struct named_template {
    const char *name; /* policy arena */
    const ynode *key, *value;
    const pol_rule **rules;
    size_t rule_count;
} named_template;

typedef struct id_use {
    const char *id;
    unsigned line, column;
} id_use;

typedef struct tenant_source {
    const ynode *key, *value;
} tenant_source;

typedef struct load_ctx {
    pol_diag *diag;
    policy *pol;
    pol_arena *arena;
    bool oom;

    named_set *sets;
    size_t set_count;
    const pol_prefix_table *builtin_tables[16];
    unsigned builtin_stamps[16];
    unsigned stamp_counter;
    size_t set_entries_total;
    bool set_entries_reported;

    named_template *templates;
    size_t template_count;

    tenant_source *tenant_sources; /* parallel to pol->tenants */

    id_use *ids; /* malloc'd */
    size_t id_count, id_cap;

    size_t total_rules;
    const ynode **agent_names; /* name node of each agent, parallel to pol->agents */
} load_ctx;

/* ---- Small helpers ---- */

static void *ctx_alloc(load_ctx *c, size_t size) {
    void *p = pol_arena_alloc(c->arena, size);
    if (p == NULL)
        c->oom = true;
    return p;
}

static void *ctx_alloc_array(load_ctx *c, size_t count, size_t size) {
    if (count != 0 && size > SIZE_MAX / count) {
        c->oom = true;
        return NULL;
    }
    return ctx_alloc(c, count * size);
}

static char *ctx_strdup(load_ctx *c, const char *s, size_t len) {
    char *p = pol_arena_strndup(c->arena, s, len);
    if (p == NULL)
        c->oom = true;
    return p;
}

#define ERR(c, node, ...) pol_diag_error((c)->diag, (node)->line, (node)->column, __VA_ARGS__)

/* A quoted copy of a node's text for messages. */
typedef struct quoted {
    char text[200];
} quoted;

static quoted q_node(const ynode *n) {
    quoted q;
    if (n->kind == YNODE_SCALAR)
        pol_quote(n->text, n->len, q.text, sizeof(q.text));
    else
        snprintf(q.text, sizeof(q.text), "%s", n->kind == YNODE_MAPPING ? "{...}" : "[...]");
    return q;
}

static const char *kind_name(ynode_kind k) {
    switch (k) {
    case YNODE_SCALAR:
        return "a single value";
    case YNODE_SEQUENCE:
        return "a list";
    case YNODE_MAPPING:
        return "a mapping";
    }
    return "?";
}

static bool is_null(const ynode *n) {
    if (n->kind != YNODE_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
           strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0;
}

static bool expect_kind(load_ctx *c, const ynode *n, ynode_kind kind, const char *what) {
    if (n->kind == kind)
        return true;
    if (is_null(n))
        ERR(c, n, "%s must be %s, but it is empty", what, kind_name(kind));
    else
        ERR(c, n, "%s must be %s, not %s", what, kind_name(kind), kind_name(n->kind));
    return false;
}

/* A non-empty scalar's text, or NULL after reporting. */
static const char *want_text(load_ctx *c, const ynode *n, const char *what) {
    if (!expect_kind(c, n, YNODE_SCALAR, what))
        return NULL;
    if (is_null(n)) {
        ERR(c, n, "%s must not be empty", what);
        return NULL;
    }
    return n->text;
}

/* Parses unsigned decimal text without sign or leading zeros. */
static int parse_decimal(const char *s, size_t len, uint64_t *out) {
    uint64_t v = 0;
    if (len == 0 || len > 19 || (len > 1 && s[0] == '0'))
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static bool want_uint(load_ctx *c, const ynode *n, const char *what, uint64_t min, uint64_t max,
                      uint64_t *out) {
    if (!want_text(c, n, what))
        return false;
    uint64_t v;
    if (!n->plain || parse_decimal(n->text, n->len, &v) < 0) {
        ERR(c, n, "%s must be a whole number, not '%s'", what, q_node(n).text);
        return false;
    }
    if (v < min || v > max) {
        ERR(c, n, "%s must be between %" PRIu64 " and %" PRIu64 ", not %" PRIu64, what, min, max,
            v);
        return false;
    }
    *out = v;
    return true;
}

static bool want_bool(load_ctx *c, const ynode *n, const char *what, bool *out) {
    if (!want_text(c, n, what))
        return false;
    if (n->plain && strcmp(n->text, "true") == 0) {
        *out = true;
        return true;
    }
    if (n->plain && strcmp(n->text, "false") == 0) {
        *out = false;
        return true;
    }
    ERR(c, n, "%s must be true or false, not '%s'", what, q_node(n).text);
    return false;
}

/* One of `choices` (NULL-terminated); the index in *out. */
static bool want_choice(load_ctx *c, const ynode *n, const char *what, const char *const *choices,
                        int *out) {
    if (!want_text(c, n, what))
        return false;
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; choices[i] != NULL; i++) {
        if (strcmp(n->text, choices[i]) == 0) {
            *out = i;
            return true;
        }
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", choices[i]);
        if (w > 0 && (size_t)w < sizeof(list) - used)
            used += (size_t)w;
    }
    ERR(c, n, "%s must be one of %s; not '%s'", what, list, q_node(n).text);
    return false;
}

static void format_duration(uint64_t ms, char *buf, size_t len) {
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64 "ms", ms);
}

/* "500ms", "30s", "10m", "1h", "1d" and sums such as "1h30m". */
static int parse_duration(const char *s, size_t len, uint64_t *out_ms) {
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    uint64_t total = 0;
    size_t pos = 0;
    if (len == 0)
        return -EINVAL;
    while (pos < len) {
        size_t start = pos;
        while (pos < len && s[pos] >= '0' && s[pos] <= '9')
            pos++;
        uint64_t value;
        if (pos - start > 9 || parse_decimal(s + start, pos - start, &value) < 0)
            return -EINVAL;
        size_t ustart = pos;
        while (pos < len && s[pos] >= 'a' && s[pos] <= 'z')
            pos++;
        size_t ulen = pos - ustart;
        uint64_t scale = 0;
        for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
            if (strlen(units[i].unit) == ulen && memcmp(units[i].unit, s + ustart, ulen) == 0)
                scale = units[i].ms;
        }
        if (scale == 0)
            return -EINVAL;
        total += value * scale;
        if (total > POLICY_MAX_DURATION_MS)
            return -ERANGE;
    }
    *out_ms = total;
    return 0;
}

static bool want_duration(load_ctx *c, const ynode *n, const char *what, uint64_t min_ms,
                          uint64_t max_ms, uint64_t *out_ms) {
    if (!want_text(c, n, what))
        return false;
    uint64_t ms = 0;
    int r = parse_duration(n->text, n->len, &ms);
    if (r == -EINVAL) {
        ERR(c, n, "%s must be a duration such as 500ms, 30s, 10m or 1h, not '%s'", what,
            q_node(n).text);
        return false;
    }
    if (r < 0 || ms < min_ms || ms > max_ms) {
        char lo[32], hi[32];
        format_duration(min_ms, lo, sizeof(lo));
        format_duration(max_ms, hi, sizeof(hi));
        ERR(c, n, "%s must be between %s and %s, not '%s'", what, lo, hi, q_node(n).text);
        return false;
    }
    *out_ms = ms;
    return true;
}

/* Ids, tenant, set, template and agent names: a letter or digit, then
 * letters, digits, '.', '_' or '-'. */
static bool valid_name(const char *s, size_t len) {
    if (len == 0 || len > POLICY_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

static const char *want_name(load_ctx *c, const ynode *n, const char *what) {
    if (!want_text(c, n, what))
        return NULL;
    if (!valid_name(n->text, n->len)) {
        ERR(c, n,
            "%s '%s' is not a valid name (1 to %u letters, digits, '.', '_' or '-', "
            "starting with a letter or digit)",
            what, q_node(n).text, POLICY_MAX_NAME);
        return NULL;
    }
    return n->text;
}

/* Looks up the keys of a mapping: values[i] is the value of keys[i] or
 * NULL. Unknown and duplicate keys are errors; so are missing keys whose
 * bit is set in `required`. Returns false when `map` is not a mapping. */
static bool map_collect(load_ctx *c, const ynode *map, const char *what, const char *const *keys,
                        size_t key_count, const ynode **values, unsigned long required) {
    for (size_t i = 0; i < key_count; i++)
        values[i] = NULL;
    if (!expect_kind(c, map, YNODE_MAPPING, what))
        return false;
    const ynode *key_nodes[32] = {0};
    for (size_t p = 0; p + 1 < map->count; p += 2) {
        const ynode *key = map->items[p];
        size_t i;
        for (i = 0; i < key_count; i++) {
            if (strcmp(key->text, keys[i]) == 0)
                break;
        }
        if (i == key_count) {
            char list[400] = "";
            size_t used = 0;
            for (size_t k = 0; k < key_count; k++) {
                int w = snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "", keys[k]);
                if (w > 0 && (size_t)w < sizeof(list) - used)
                    used += (size_t)w;
            }
            ERR(c, key, "unknown key '%s' in %s (expected one of: %s)", q_node(key).text, what,
                list);
            continue;
        }
        if (values[i] != NULL) {
            ERR(c, key, "duplicate key '%s' in %s (first at line %u)", keys[i], what,
                key_nodes[i]->line);
            continue;
        }
        values[i] = map->items[p + 1];
        key_nodes[i] = key;
    }
    for (size_t i = 0; i < key_count; i++) {
        if ((required & (1ul << i)) && values[i] == NULL)
            ERR(c, map, "%s is missing the required key '%s'", what, keys[i]);
    }
    return true;
}

#define MAP_COLLECT(c, map, what, keys, values, required)                                          \
    map_collect((c), (map), (what), (keys), ARRAY_SIZE(keys), (values), (required))

/* Sorts the keys of a free-form mapping (sets, templates, tenants) and
 * reports duplicates. Returns a malloc'd array of key indexes in file
 * order with duplicates removed, or NULL (count 0 or out of memory). */
typedef struct key_ref {
    const ynode *key, *value;
} key_ref;

static int key_ref_compare(const void *a, const void *b) {
    const key_ref *x = a, *y = b;
    int r = strcmp(x->key->text, y->key->text);
    if (r != 0)
        return r;
    if (x->key->line != y->key->line)
        return x->key->line < y->key->line ? -1 : 1;
    return x->key->column < y->key->column ? -1 : (x->key->column > y->key->column);
}

/* Returns the pairs of `map` sorted by name, duplicates reported and
 * dropped; *count receives the number kept. Caller frees. */
static key_ref *sorted_unique_keys(load_ctx *c, const ynode *map, const char *what, size_t *count) {
    *count = 0;
    size_t pairs = map->count / 2;
    if (pairs == 0)
        return NULL;
    key_ref *refs = malloc(pairs * sizeof(*refs));
    if (refs == NULL) {
        c->oom = true;
        return NULL;
    }
    for (size_t i = 0; i < pairs; i++)
        refs[i] = (key_ref){map->items[2 * i], map->items[2 * i + 1]};
    qsort(refs, pairs, sizeof(*refs), key_ref_compare);
    size_t kept = 0;
    for (size_t i = 0; i < pairs; i++) {
        if (kept > 0 && strcmp(refs[kept - 1].key->text, refs[i].key->text) == 0) {
            ERR(c, refs[i].key, "duplicate %s '%s' (first at line %u)", what,
                q_node(refs[i].key).text, refs[kept - 1].key->line);
            continue;
        }
        refs[kept++] = refs[i];
    }
    *count = kept;
    return refs;
}

static void register_id(load_ctx *c, const char *id, const ynode *at) {
    if (c->id_count == c->id_cap) {
        size_t cap = c->id_cap ? c->id_cap * 2 : 64;
        id_use *grown = realloc(c->ids, cap * sizeof(*grown));
        if (grown == NULL) {
            c->oom = true;
            return;
        }
        c->ids = grown;
        c->id_cap = cap;
    }
    c->ids[c->id_count++] = (id_use){id, at->line, at->column};
}

static int id_use_compare(const void *a, const void *b) {
    const id_use *x = a, *y = b;
    int r = strcmp(x->id, y->id);
    if (r != 0)
        return r;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->column < y->column ? -1 : (x->column > y->column);
}

/* Ids name one guard or rule in the whole file (audit records and explain
 * output point at exactly one place). */
static void check_duplicate_ids(load_ctx *c) {
    if (c->id_count < 2)
        return;
    qsort(c->ids, c->id_count, sizeof(*c->ids), id_use_compare);
    size_t first = 0;
    for (size_t i = 1; i < c->id_count; i++) {
        if (strcmp(c->ids[i].id, c->ids[first].id) != 0) {
            first = i;
            continue;
        }
        char q[200];
        pol_quote(c->ids[i].id, strlen(c->ids[i].id), q, sizeof(q));
        pol_diag_error(c->diag, c->ids[i].line, c->ids[i].column,
                       "duplicate id '%s' (first used at line %u, column %u)", q,
                       c->ids[first].line, c->ids[first].column);
    }
}

/* ---- Operation names ---- */

static const char *const op_names[POLICY_OP_COUNT] = {
    [POLICY_OP_LOOKUP] = "lookup",           [POLICY_OP_TCP_BIND] = "tcp.bind",
    [POLICY_OP_TCP_LISTEN] = "tcp.listen",   [POLICY_OP_TCP_ACCEPT] = "tcp.accept",
    [POLICY_OP_TCP_CONNECT] = "tcp.connect", [POLICY_OP_UDP_BIND] = "udp.bind",
    [POLICY_OP_UDP_CONNECT] = "udp.connect", [POLICY_OP_UDP_SEND] = "udp.send",
    [POLICY_OP_UDP_RECEIVE] = "udp.receive",
};

#define OP_BIT(op) (1u << (op))
#define ALL_OPS    ((1u << POLICY_OP_COUNT) - 1)

static const struct {
    const char *name;
    unsigned ops;
    unsigned implicit;
} op_shorthands[] = {
    {"tcp.client", OP_BIT(POLICY_OP_TCP_CONNECT), OP_BIT(POLICY_OP_TCP_BIND)},
    {"tcp.server",
     OP_BIT(POLICY_OP_TCP_BIND) | OP_BIT(POLICY_OP_TCP_LISTEN) | OP_BIT(POLICY_OP_TCP_ACCEPT), 0},
    {"udp.client",
     OP_BIT(POLICY_OP_UDP_CONNECT) | OP_BIT(POLICY_OP_UDP_SEND) | OP_BIT(POLICY_OP_UDP_RECEIVE),
     OP_BIT(POLICY_OP_UDP_BIND)},
    {"udp.server",
     OP_BIT(POLICY_OP_UDP_BIND) | OP_BIT(POLICY_OP_UDP_RECEIVE) | OP_BIT(POLICY_OP_UDP_SEND), 0},
    {"any", ALL_OPS, 0},
};

const char *policy_op_name(policy_op op) {
    if ((unsigned)op >= POLICY_OP_COUNT)
        return NULL;
    return op_names[op];
}

int policy_op_from_name(const char *name, policy_op *out) {
    for (unsigned i = 0; i < POLICY_OP_COUNT; i++) {
        if (strcmp(name, op_names[i]) == 0) {
            *out = (policy_op)i;
            return 0;
        }
    }
    return -EINVAL;
}

unsigned pol_op_keys(policy_op op) {
    switch (op) {
    case POLICY_OP_LOOKUP:
        return POL_KEY_HOST;
    case POLICY_OP_TCP_BIND:
    case POLICY_OP_TCP_LISTEN:
    case POLICY_OP_UDP_BIND:
        return POL_KEY_FAMILY | POL_KEY_LOCAL | POL_KEY_LOCAL_PORTS;
    case POLICY_OP_TCP_ACCEPT:
    case POLICY_OP_UDP_RECEIVE:
        return POL_KEY_FAMILY | POL_KEY_LOCAL | POL_KEY_LOCAL_PORTS | POL_KEY_REMOTE |
               POL_KEY_PORTS;
    case POLICY_OP_TCP_CONNECT:
    case POLICY_OP_UDP_CONNECT:
    case POLICY_OP_UDP_SEND:
        return POL_KEY_FAMILY | POL_KEY_REMOTE | POL_KEY_PORTS | POL_KEY_HOST;
    case POLICY_OP_COUNT:
        break;
    }
    return 0;
}

static void describe_keys(unsigned keys, char *buf, size_t len) {
    static const char *const names[] = {"family", "remote",      "ports",
                                        "local",  "local_ports", "host"};
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (!(keys & (1u << i)))
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", names[i]);
        if (w > 0 && (size_t)w < len - used)
            used += (size_t)w;
    }
}

static void describe_ops(unsigned ops, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < POLICY_OP_COUNT; i++) {
        if (!(ops & OP_BIT(i)))
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", op_names[i]);
        if (w > 0 && (size_t)w < len - used)
            used += (size_t)w;
    }
}

/* ---- Error names ---- */

static const struct {
    const char *name;
    uint16_t number;
    unsigned ops; /* where the error makes sense */
} deny_errors[] = {
    {"access-denied", POLICY_ERR_ACCESS_DENIED, ALL_OPS},
    {"name-unresolvable", POLICY_ERR_NAME_UNRESOLVABLE, OP_BIT(POLICY_OP_LOOKUP)},
    {"permanent-resolver-failure", POLICY_ERR_PERMANENT_RESOLVER_FAILURE, OP_BIT(POLICY_OP_LOOKUP)},
    {"connection-refused", POLICY_ERR_CONNECTION_REFUSED,
     OP_BIT(POLICY_OP_TCP_CONNECT) | OP_BIT(POLICY_OP_UDP_CONNECT) | OP_BIT(POLICY_OP_UDP_SEND)},
    {"remote-unreachable", POLICY_ERR_REMOTE_UNREACHABLE,
     OP_BIT(POLICY_OP_TCP_CONNECT) | OP_BIT(POLICY_OP_UDP_CONNECT) | OP_BIT(POLICY_OP_UDP_SEND)},
};

/* ---- Address lists and sets ---- */

typedef struct entry_vec {
    pol_prefix_entry *items; /* malloc'd */
    size_t count, cap;
} entry_vec;

static bool entry_vec_push(load_ctx *c, entry_vec *v, const pol_prefix *p) {
    if (v->count == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        pol_prefix_entry *grown = realloc(v->items, cap * sizeof(*grown));
        if (grown == NULL) {
            c->oom = true;
            return false;
        }
        v->items = grown;
        v->cap = cap;
    }
    v->items[v->count++] = (pol_prefix_entry){.prefix = *p};
    return true;
}

/* Moves the entries into the arena as a built table; frees the vector. */
static bool entry_vec_finish(load_ctx *c, entry_vec *v, pol_prefix_table *out) {
    *out = (pol_prefix_table){0};
    if (v->count == 0) {
        free(v->items);
        *v = (entry_vec){0};
        return true;
    }
    pol_prefix_entry *entries = ctx_alloc_array(c, v->count, sizeof(*entries));
    if (entries != NULL)
        memcpy(entries, v->items, v->count * sizeof(*entries));
    size_t count = v->count;
    free(v->items);
    *v = (entry_vec){0};
    if (entries == NULL)
        return false;
    if (pol_prefix_table_build(c->arena, entries, count, out) < 0) {
        c->oom = true;
        return false;
    }
    return true;
}

static const pol_prefix_table *builtin_table(load_ctx *c, const pol_builtin_set *set) {
    size_t index = 0;
    while (pol_builtin_set_at(index) != set)
        index++;
    if (c->builtin_tables[index] != NULL)
        return c->builtin_tables[index];
    entry_vec v = {0};
    for (size_t i = 0; set->cidrs[i] != NULL; i++) {
        pol_prefix p;
        if (pol_parse_cidr(set->cidrs[i], strlen(set->cidrs[i]), &p) < 0 ||
            !entry_vec_push(c, &v, &p)) {
            free(v.items);
            c->oom = true; /* the built-in lists are checked by the tests */
            return NULL;
        }
    }
    pol_prefix_table *t = ctx_alloc(c, sizeof(*t));
    if (t == NULL || !entry_vec_finish(c, &v, t)) {
        free(v.items);
        return NULL;
    }
    c->builtin_tables[index] = t;
    return t;
}

/* Sets are sorted by name (they come from sorted_unique_keys()). */
static named_set *find_set(load_ctx *c, const char *name) {
    size_t lo = 0, hi = c->set_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->sets[mid].name, name);
        if (r == 0)
            return &c->sets[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const pol_prefix_table *resolve_set(load_ctx *c, named_set *set, unsigned depth);

/* Resolves "@name" at node n: a built-in or a user set, or NULL after
 * reporting. *again is set when the list with this `stamp` already named
 * the set (the caller skips it: a set counts once per list). */
static const pol_prefix_table *resolve_set_reference(load_ctx *c, const ynode *n, unsigned depth,
                                                     unsigned stamp, bool *again) {
    const char *name = n->text + 1;
    size_t len = n->len - 1;
    *again = false;
    const pol_builtin_set *builtin = pol_builtin_set_find(name, len);
    if (builtin != NULL) {
        size_t index = 0;
        while (pol_builtin_set_at(index) != builtin)
            index++;
        *again = c->builtin_stamps[index] == stamp;
        c->builtin_stamps[index] = stamp;
        return builtin_table(c, builtin);
    }
    named_set *set = find_set(c, name);
    if (set == NULL) {
        ERR(c, n, "unknown address set '%s'", q_node(n).text);
        return NULL;
    }
    if (depth >= POLICY_MAX_SET_NESTING) {
        ERR(c, n, "address sets nested deeper than %d levels", POLICY_MAX_SET_NESTING);
        return NULL;
    }
    if (set->state == 1) {
        ERR(c, n, "address set reference '%s' forms a cycle", q_node(n).text);
        return NULL;
    }
    const pol_prefix_table *t = resolve_set(c, set, depth + 1);
    *again = set->stamp == stamp;
    set->stamp = stamp;
    return t;
}

/* Parses one address item (CIDR or literal) into *p; false after reporting. */
static bool parse_address_item(load_ctx *c, const ynode *n, const char *what, pol_prefix *p) {
    int r = pol_parse_cidr(n->text, n->len, p);
    if (r == 0)
        return true;
    if (r == -EDOM) {
        char fixed[64];
        const char *slash = memchr(n->text, '/', n->len);
        uint8_t family, addr[16], m[16];
        fixed[0] = '\0';
        if (slash != NULL && pol_parse_ip(n->text, (size_t)(slash - n->text), &family, addr) == 0) {
            unsigned length = (unsigned)strtoul(slash + 1, NULL, 10);
            pol_mask(family, (uint8_t)length, addr, m);
            pol_format_ip(family, m, fixed, sizeof(fixed));
        }
        ERR(c, n, "%s entry '%s' has host bits set (did you mean %s/%s?)", what, q_node(n).text,
            fixed, slash ? slash + 1 : "");
    } else if (r == -ERANGE) {
        ERR(c, n, "%s entry '%s' has a prefix length longer than its address", what,
            q_node(n).text);
    } else {
        ERR(c, n, "%s entry '%s' is not an IP address, a CIDR or an @set", what, q_node(n).text);
    }
    return false;
}

static const pol_prefix_table *resolve_set(load_ctx *c, named_set *set, unsigned depth) {
    if (set->state == 2)
        return set->table;
    set->state = 1;
    unsigned stamp = ++c->stamp_counter;
    set->table = ctx_alloc(c, sizeof(*set->table));
    if (set->table == NULL) {
        set->state = 2;
        return NULL;
    }
    entry_vec v = {0};
    const ynode *list = set->value;
    bool ok = true;
    if (!expect_kind(c, list, YNODE_SEQUENCE, "an address set")) {
        ok = false;
    } else if (list->count == 0) {
        ERR(c, list, "address set '%s' is empty", set->name);
        ok = false;
    }
    for (size_t i = 0; ok && i < list->count; i++) {
        const ynode *item = list->items[i];
        if (!want_text(c, item, "an address set entry"))
            continue;
        if (item->text[0] == '@') {
            bool again;
            const pol_prefix_table *t = resolve_set_reference(c, item, depth, stamp, &again);
            if (t == NULL || again)
                continue;
            if (c->set_entries_total + t->count > POLICY_MAX_SET_ENTRIES_TOTAL) {
                if (!c->set_entries_reported)
                    ERR(c, item, "address sets hold more than %u entries in all",
                        POLICY_MAX_SET_ENTRIES_TOTAL);
                c->set_entries_reported = true;
                continue;
            }
            c->set_entries_total += t->count;
            for (size_t k = 0; k < t->count; k++)
                entry_vec_push(c, &v, &t->entries[k].prefix);
            continue;
        }
        pol_prefix p;
        if (parse_address_item(c, item, "address set", &p))
            entry_vec_push(c, &v, &p);
    }
    entry_vec_finish(c, &v, set->table);
    set->state = 2;
    return set->table;
}

static void load_sets(load_ctx *c, const ynode *map) {
    if (!expect_kind(c, map, YNODE_MAPPING, "sets"))
        return;
    size_t count;
    key_ref *refs = sorted_unique_keys(c, map, "set", &count);
    if (count == 0) {
        free(refs);
        return;
    }
    c->sets = calloc(count, sizeof(*c->sets));
    if (c->sets == NULL) {
        c->oom = true;
        free(refs);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        const ynode *key = refs[i].key;
        if (key->text[0] == '@') {
            ERR(c, key, "set names are written without '@' where they are defined");
            continue;
        }
        if (want_name(c, key, "set name") == NULL)
            continue;
        if (pol_builtin_set_find(key->text, key->len) != NULL) {
            ERR(c, key, "'%s' is a built-in set and cannot be redefined", key->text);
            continue;
        }
        c->sets[c->set_count++] =
            (named_set){.name = key->text, .key = key, .value = refs[i].value};
    }
    free(refs);
    for (size_t i = 0; i < c->set_count; i++)
        resolve_set(c, &c->sets[i], 0);
}

/* Parses `remote` / `local`: a non-empty list of CIDRs, literals and
 * @sets. Returns false after reporting. */
static bool load_address_list(load_ctx *c, const ynode *list, const char *what,
                              pol_addr_list *out) {
    *out = (pol_addr_list){0};
    if (!expect_kind(c, list, YNODE_SEQUENCE, what))
        return false;
    if (list->count == 0) {
        ERR(c, list, "%s must not be empty (leave the key out to match any address)", what);
        return false;
    }
    out->tables = ctx_alloc_array(c, list->count + 1, sizeof(*out->tables));
    out->spelling = ctx_alloc_array(c, list->count, sizeof(*out->spelling));
    if (out->tables == NULL || out->spelling == NULL)
        return false;
    entry_vec literals = {0};
    bool ok = true;
    unsigned stamp = ++c->stamp_counter;
    for (size_t i = 0; i < list->count; i++) {
        const ynode *item = list->items[i];
        if (!want_text(c, item, "an address entry")) {
            ok = false;
            continue;
        }
        out->spelling[out->spelling_count++] = ctx_strdup(c, item->text, item->len);
        if (item->text[0] == '@') {
            bool again;
            const pol_prefix_table *t = resolve_set_reference(c, item, 0, stamp, &again);
            if (t == NULL) {
                ok = false;
                continue;
            }
            if (!again)
                out->tables[out->table_count++] = t;
            continue;
        }
        pol_prefix p;
        if (!parse_address_item(c, item, what, &p)) {
            ok = false;
            continue;
        }
        entry_vec_push(c, &literals, &p);
    }
    if (literals.count > 0) {
        pol_prefix_table *t = ctx_alloc(c, sizeof(*t));
        if (t == NULL) {
            free(literals.items);
            return false;
        }
        if (entry_vec_finish(c, &literals, t))
            out->tables[out->table_count++] = t;
    }
    free(literals.items);
    return ok;
}

/* ---- Ports, hosts ---- */

static bool load_port_list(load_ctx *c, const ynode *list, const char *what, bool local,
                           pol_port_list *out) {
    *out = (pol_port_list){0};
    if (!expect_kind(c, list, YNODE_SEQUENCE, what))
        return false;
    if (list->count == 0) {
        ERR(c, list, "%s must not be empty (leave the key out to match any port)", what);
        return false;
    }
    out->ranges = ctx_alloc_array(c, list->count, sizeof(*out->ranges));
    if (out->ranges == NULL)
        return false;
    bool ok = true;
    for (size_t i = 0; i < list->count; i++) {
        const ynode *item = list->items[i];
        if (!want_text(c, item, "a port")) {
            ok = false;
            continue;
        }
        if (strcmp(item->text, "ephemeral") == 0) {
            if (!local) {
                ERR(c, item, "'ephemeral' is only valid in local_ports");
                ok = false;
            }
            out->ephemeral = true;
            continue;
        }
        const char *dash = memchr(item->text, '-', item->len);
        size_t first_len = dash ? (size_t)(dash - item->text) : item->len;
        uint64_t low, high;
        if (parse_decimal(item->text, first_len, &low) < 0 ||
            (dash && parse_decimal(dash + 1, item->len - first_len - 1, &high) < 0)) {
            ERR(c, item, "'%s' in %s is not a port or an inclusive range such as 8000-8099",
                q_node(item).text, what);
            ok = false;
            continue;
        }
        if (!dash)
            high = low;
        if (low == 0 || high == 0) {
            ERR(c, item, "port 0 is not valid in %s%s", what,
                local ? " (write 'ephemeral' for a kernel-chosen port)" : "");
            ok = false;
            continue;
        }
        if (low > 65535 || high > 65535) {
            ERR(c, item, "port '%s' in %s is out of range (1-65535)", q_node(item).text, what);
            ok = false;
            continue;
        }
        if (low > high) {
            ERR(c, item, "port range '%s' in %s is reversed", q_node(item).text, what);
            ok = false;
            continue;
        }
        out->ranges[out->count++] = (pol_port_range){(uint16_t)low, (uint16_t)high};
    }
    return ok;
}

size_t pol_host_normalise(char *name, size_t len) {
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > POLICY_MAX_HOST)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (ch >= 'A' && ch <= 'Z')
            name[i] = ch = (char)(ch - 'A' + 'a');
        if (ch == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ok || ++label > 63)
            return 0;
    }
    if (label == 0)
        return 0;
    name[len] = '\0';
    return len;
}

static bool load_host_pattern(load_ctx *c, const ynode *n, pol_host_pattern *out) {
    if (!want_text(c, n, "host"))
        return false;
    if (strcmp(n->text, "*") == 0) {
        *out = (pol_host_pattern){.kind = POL_HOST_ANY, .name = "*", .len = 1};
        return true;
    }
    for (size_t i = 0; i < n->len; i++) {
        if ((unsigned char)n->text[i] >= 0x80) {
            ERR(c, n, "host '%s' is not ASCII: write international names as A-labels (xn--...)",
                q_node(n).text);
            return false;
        }
    }
    const char *name = n->text;
    size_t len = n->len;
    pol_host_kind kind = POL_HOST_EXACT;
    if (len >= 2 && name[0] == '*' && name[1] == '.') {
        kind = POL_HOST_SUFFIX;
        name += 2;
        len -= 2;
    }
    if (memchr(name, '*', len) != NULL) {
        ERR(c, n,
            "host '%s': a wildcard is only allowed as the whole first label, as in "
            "'*.example.com'",
            q_node(n).text);
        return false;
    }
    char *copy = ctx_strdup(c, name, len);
    if (copy == NULL)
        return false;
    size_t nlen = pol_host_normalise(copy, len);
    if (nlen == 0) {
        ERR(c, n, "host '%s' is not a valid DNS name", q_node(n).text);
        return false;
    }
    uint8_t family, addr[16];
    if (pol_parse_ip(copy, nlen, &family, addr) == 0) {
        ERR(c, n, "host '%s' is an address: use remote for addresses", q_node(n).text);
        return false;
    }
    *out = (pol_host_pattern){.kind = kind, .name = copy, .len = nlen};
    return true;
}

/* ---- Prompt settings ---- */

static const char *const allow_deny[] = {"deny", "allow", NULL};

static policy_action action_from_allow_deny(int i) {
    return i == 1 ? POLICY_ALLOW : POLICY_DENY;
}

static void load_remember(load_ctx *c, const ynode *list, policy_prompt_settings *out) {
    static const char *const scopes[] = {"once", "session", "tenant", "persist"};
    if (!expect_kind(c, list, YNODE_SEQUENCE, "prompt remember"))
        return;
    if (list->count == 0) {
        ERR(c, list, "prompt remember must offer at least one choice (e.g. [once])");
        return;
    }
    out->remember = 0;
    out->remember_seconds_count = 0;
    for (size_t i = 0; i < list->count; i++) {
        const ynode *item = list->items[i];
        if (!want_text(c, item, "a remember choice"))
            continue;
        size_t s;
        for (s = 0; s < ARRAY_SIZE(scopes); s++) {
            if (strcmp(item->text, scopes[s]) == 0)
                break;
        }
        if (s < ARRAY_SIZE(scopes)) {
            if (out->remember & (1u << s))
                ERR(c, item, "remember choice '%s' is listed twice", scopes[s]);
            out->remember |= 1u << s;
            continue;
        }
        uint64_t ms;
        if (parse_duration(item->text, item->len, &ms) < 0) {
            ERR(c, item,
                "remember choice '%s' must be once, session, tenant, persist or a duration "
                "such as 1h",
                q_node(item).text);
            continue;
        }
        if (ms < 1000 || ms % 1000 != 0) {
            ERR(c, item, "remember duration '%s' must be whole seconds, at least 1s",
                q_node(item).text);
            continue;
        }
        if (out->remember_seconds_count == POLICY_REMEMBER_MAX_DURATIONS) {
            ERR(c, item, "at most %d remember durations may be offered",
                POLICY_REMEMBER_MAX_DURATIONS);
            continue;
        }
        out->remember_seconds[out->remember_seconds_count++] = (uint32_t)(ms / 1000);
    }
}

/* Agents are sorted by name once loaded (load_agents()). */
static const pol_agent *find_agent(const load_ctx *c, const char *name) {
    size_t lo = 0, hi = c->pol->agent_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->pol->agents[mid].name, name);
        if (r == 0)
            return &c->pol->agents[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Loads `defaults.prompt` (is_default) or a rule's `prompt` over *out,
 * which the caller initialised with the defaults. */
static void load_prompt(load_ctx *c, const ynode *map, bool is_default,
                        policy_prompt_settings *out) {
    static const char *const default_keys[] = {"timeout", "on_timeout", "on_no_agent", "remember",
                                               "max_pending_per_tenant"};
    static const char *const rule_keys[] = {"timeout",  "on_timeout", "on_no_agent",
                                            "remember", "agents",     "note"};
    const ynode *v[6];
    const char *what = is_default ? "defaults.prompt" : "a rule's prompt";
    bool ok = is_default ? MAP_COLLECT(c, map, what, default_keys, v, 0)
                         : MAP_COLLECT(c, map, what, rule_keys, v, 0);
    if (!ok)
        return;
    uint64_t n;
    int choice;
    if (v[0] && want_duration(c, v[0], "prompt timeout", 100, POLICY_MAX_PROMPT_TIMEOUT_MS, &n))
        out->timeout_ms = (uint32_t)n;
    if (v[1] && want_choice(c, v[1], "prompt on_timeout", allow_deny, &choice))
        out->on_timeout = action_from_allow_deny(choice);
    if (v[2] && want_choice(c, v[2], "prompt on_no_agent", allow_deny, &choice))
        out->on_no_agent = action_from_allow_deny(choice);
    if (v[3])
        load_remember(c, v[3], out);
    if (is_default) {
        if (v[4] && want_uint(c, v[4], "max_pending_per_tenant", 1, POLICY_MAX_LIMIT, &n))
            out->max_pending_per_tenant = (uint32_t)n;
        return;
    }
    if (v[4] && expect_kind(c, v[4], YNODE_SEQUENCE, "prompt agents")) {
        const char **agents = ctx_alloc_array(c, v[4]->count + 1, sizeof(*agents));
        size_t count = 0;
        if (v[4]->count == 0)
            ERR(c, v[4], "prompt agents must not be empty (leave the key out for every agent)");
        for (size_t i = 0; agents != NULL && i < v[4]->count; i++) {
            const ynode *item = v[4]->items[i];
            if (!want_text(c, item, "a prompt agent"))
                continue;
            const pol_agent *agent = find_agent(c, item->text);
            if (agent == NULL) {
                ERR(c, item, "unknown prompt agent '%s' (not under prompt_agents)",
                    q_node(item).text);
                continue;
            }
            agents[count++] = agent->name;
        }
        out->agents = agents;
        out->agent_count = count;
    }
    if (v[5] && want_text(c, v[5], "prompt note")) {
        bool clean = v[5]->len <= POLICY_MAX_NOTE_BYTES;
        for (size_t i = 0; clean && i < v[5]->len; i++) {
            unsigned char ch = (unsigned char)v[5]->text[i];
            clean = ch >= 0x20 && ch != 0x7f;
        }
        if (!clean)
            ERR(c, v[5], "prompt note must be at most %u bytes of text without control characters",
                POLICY_MAX_NOTE_BYTES);
        else
            out->note = ctx_strdup(c, v[5]->text, v[5]->len);
    }
}

/* ---- Settings sections ---- */

static void load_defaults(load_ctx *c, const ynode *map) {
    static const char *const keys[] = {"action", "implicit_bind", "errors", "prompt"};
    static const char *const actions[] = {"deny", "prompt", NULL};
    static const char *const implicit[] = {"follow-connect", "check", NULL};
    static const char *const lookup_errors[] = {"access-denied", "name-unresolvable",
                                                "permanent-resolver-failure", NULL};
    static const uint16_t lookup_error_numbers[] = {POLICY_ERR_ACCESS_DENIED,
                                                    POLICY_ERR_NAME_UNRESOLVABLE,
                                                    POLICY_ERR_PERMANENT_RESOLVER_FAILURE};
    static const char *const inbound[] = {"reset", "drop", NULL};
    static const char *const error_keys[] = {"lookup", "inbound"};
    policy_settings *s = &c->pol->settings;
    const ynode *v[4];
    int choice;
    if (!MAP_COLLECT(c, map, "defaults", keys, v, 0))
        return;
    if (v[0] && want_choice(c, v[0], "defaults.action", actions, &choice))
        s->default_action = choice == 1 ? POLICY_PROMPT : POLICY_DENY;
    if (v[1] && want_choice(c, v[1], "defaults.implicit_bind", implicit, &choice))
        s->implicit_bind = choice == 1 ? POLICY_IMPLICIT_CHECK : POLICY_IMPLICIT_FOLLOW_CONNECT;
    if (v[2]) {
        const ynode *e[2];
        if (MAP_COLLECT(c, v[2], "defaults.errors", error_keys, e, 0)) {
            if (e[0] && want_choice(c, e[0], "defaults.errors.lookup", lookup_errors, &choice))
                s->lookup_error = lookup_error_numbers[choice];
            if (e[1] && want_choice(c, e[1], "defaults.errors.inbound", inbound, &choice))
                s->inbound = choice == 1 ? POLICY_INBOUND_DROP : POLICY_INBOUND_RESET;
        }
    }
    if (v[3])
        load_prompt(c, v[3], true, &s->prompt);
}

static void load_dns(load_ctx *c, const ynode *map) {
    static const char *const keys[] = {"resolver",
                                       "pin_scope",
                                       "min_ttl",
                                       "max_ttl",
                                       "keep_while_open",
                                       "filter_answers",
                                       "max_bindings_per_tenant"};
    static const char *const scopes[] = {"tenant", "session", NULL};
    static const char *const filters[] = {"guards", "none", NULL};
    /* TTL clamps beyond a day would pin addresses long after owners moved. */
    static const uint64_t max_ttl_ms = 24ull * 3600 * 1000;
    policy_settings *s = &c->pol->settings;
    const ynode *v[7];
    int choice;
    uint64_t n;
    if (!MAP_COLLECT(c, map, "dns", keys, v, 0))
        return;
    if (v[0]) {
        if (v[0]->kind == YNODE_SCALAR && strcmp(v[0]->text, "system") == 0) {
            s->dns.system_resolver = true;
        } else if (v[0]->kind != YNODE_SEQUENCE) {
            ERR(c, v[0], "dns.resolver must be 'system' or a list of IP addresses");
        } else if (v[0]->count == 0 || v[0]->count > POLICY_DNS_MAX_RESOLVERS) {
            ERR(c, v[0], "dns.resolver must list between 1 and %d addresses",
                POLICY_DNS_MAX_RESOLVERS);
        } else {
            s->dns.system_resolver = false;
            for (size_t i = 0; i < v[0]->count; i++) {
                const ynode *item = v[0]->items[i];
                if (!want_text(c, item, "a resolver address"))
                    continue;
                policy_endpoint ep = {0};
                if (policy_endpoint_parse(item->text, &ep) < 0) {
                    ERR(c, item, "resolver '%s' is not an IP address (with an optional port)",
                        q_node(item).text);
                    continue;
                }
                if (ep.port == 0)
                    ep.port = 53;
                s->dns.resolvers[s->dns.resolver_count++] = ep;
            }
        }
    }
    if (v[1] && want_choice(c, v[1], "dns.pin_scope", scopes, &choice))
        s->dns.pin_scope = choice == 1 ? POLICY_DNS_SCOPE_SESSION : POLICY_DNS_SCOPE_TENANT;
    if (v[2] && want_duration(c, v[2], "dns.min_ttl", 0, max_ttl_ms, &n))
        s->dns.min_ttl_s = (uint32_t)(n / 1000);
    if (v[3] && want_duration(c, v[3], "dns.max_ttl", 1000, max_ttl_ms, &n))
        s->dns.max_ttl_s = (uint32_t)(n / 1000);
    if ((v[2] || v[3]) && s->dns.min_ttl_s > s->dns.max_ttl_s)
        ERR(c, v[3] ? v[3] : v[2], "dns.min_ttl (%us) is larger than dns.max_ttl (%us)",
            s->dns.min_ttl_s, s->dns.max_ttl_s);
    if (v[4])
        want_bool(c, v[4], "dns.keep_while_open", &s->dns.keep_while_open);
    if (v[5] && want_choice(c, v[5], "dns.filter_answers", filters, &choice))
        s->dns.filter_answers = choice == 0;
    if (v[6] && want_uint(c, v[6], "dns.max_bindings_per_tenant", 1, POLICY_MAX_LIMIT, &n))
        s->dns.max_bindings_per_tenant = (uint32_t)n;
}

static void load_audit(load_ctx *c, const ynode *map) {
    static const char *const keys[] = {"sink", "file", "hash_chain", "record", "redact_hostnames"};
    static const char *const sinks[] = {"file", "journal", "both", NULL};
    static const char *const chains[] = {"sha256", "none", NULL};
    static const char *const decisions[] = {"deny", "allow", "prompt", NULL};
    policy_settings *s = &c->pol->settings;
    const ynode *v[5];
    int choice;
    if (!MAP_COLLECT(c, map, "audit", keys, v, 0))
        return;
    if (v[0] && want_choice(c, v[0], "audit.sink", sinks, &choice))
        s->audit.sink = (policy_audit_sink)choice;
    if (v[1] && want_text(c, v[1], "audit.file")) {
        const char *f = v[1]->text;
        bool bad = f[0] == '/' || v[1]->len > POLICY_MAX_PATH || strstr(f, "..") != NULL;
        for (size_t i = 0; !bad && i < v[1]->len; i++)
            bad = (unsigned char)f[i] < 0x20 || f[i] == 0x7f;
        if (bad)
            ERR(c, v[1],
                "audit.file must be a relative file name inside the logs directory "
                "(no '..', no leading '/')");
        else
            s->audit.file = ctx_strdup(c, f, v[1]->len);
    }
    if (v[2] && want_choice(c, v[2], "audit.hash_chain", chains, &choice))
        s->audit.hash_chain = choice == 0;
    if (v[3] && expect_kind(c, v[3], YNODE_SEQUENCE, "audit.record")) {
        s->audit.record = 0;
        for (size_t i = 0; i < v[3]->count; i++) {
            /* The choice index equals the policy_action value. */
            if (want_choice(c, v[3]->items[i], "an audit.record entry", decisions, &choice))
                s->audit.record |= 1u << choice;
        }
    }
    if (v[4])
        want_bool(c, v[4], "audit.redact_hostnames", &s->audit.redact_hostnames);
}

static void load_reload(load_ctx *c, const ynode *map) {
    static const char *const keys[] = {"revalidate_open_sockets", "keep_remembered_answers"};
    static const char *const revalidate[] = {"none", "connect", "all", NULL};
    static const char *const keep[] = {"if-rule-exists", "never", NULL};
    policy_settings *s = &c->pol->settings;
    const ynode *v[2];
    int choice;
    if (!MAP_COLLECT(c, map, "reload", keys, v, 0))
        return;
    if (v[0] && want_choice(c, v[0], "reload.revalidate_open_sockets", revalidate, &choice))
        s->reload.revalidate_open_sockets = (policy_revalidate)choice;
    if (v[1] && want_choice(c, v[1], "reload.keep_remembered_answers", keep, &choice))
        s->reload.keep_answers_if_rule_exists = choice == 0;
}

/* ---- Tenant names, agents ---- */

long pol_tenant_find(const policy *p, const char *name) {
    size_t lo = 0, hi = p->tenant_count;
    if (name == NULL)
        return -1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(p->tenants[mid].name, name);
        if (r == 0)
            return (long)mid;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Registers every tenant name first: guards and agents name tenants. */
static void load_tenant_names(load_ctx *c, const ynode *map) {
    if (!expect_kind(c, map, YNODE_MAPPING, "tenants"))
        return;
    size_t count;
    key_ref *refs = sorted_unique_keys(c, map, "tenant", &count);
    if (count == 0) {
        free(refs);
        return;
    }
    pol_tenant *tenants = ctx_alloc_array(c, count, sizeof(*tenants));
    c->tenant_sources = calloc(count, sizeof(*c->tenant_sources));
    if (tenants == NULL || c->tenant_sources == NULL) {
        c->oom = true;
        free(refs);
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        if (want_name(c, refs[i].key, "tenant name") == NULL)
            continue;
        tenants[kept] = (pol_tenant){.name = ctx_strdup(c, refs[i].key->text, refs[i].key->len),
                                     .line = refs[i].key->line,
                                     .column = refs[i].key->column};
        if (tenants[kept].name == NULL)
            break;
        c->tenant_sources[kept] = (tenant_source){refs[i].key, refs[i].value};
        kept++;
    }
    free(refs);
    /* refs were sorted by name (strcmp), so tenants are too. */
    c->pol->tenants = tenants;
    c->pol->tenant_count = kept;
}

/* A list of tenant names (may include "*" when allow_star). Returns a
 * list in the arena; *count receives its length. */
static const char **load_tenant_refs(load_ctx *c, const ynode *list, const char *what,
                                     bool allow_star, size_t *count) {
    *count = 0;
    if (!expect_kind(c, list, YNODE_SEQUENCE, what))
        return NULL;
    const char **names = ctx_alloc_array(c, list->count + 1, sizeof(*names));
    if (names == NULL)
        return NULL;
    for (size_t i = 0; i < list->count; i++) {
        const ynode *item = list->items[i];
        if (!want_text(c, item, "a tenant name"))
            continue;
        if (allow_star && strcmp(item->text, "*") == 0) {
            names[(*count)++] = "*";
            continue;
        }
        long t = pol_tenant_find(c->pol, item->text);
        if (t < 0) {
            ERR(c, item, "%s names unknown tenant '%s'", what, q_node(item).text);
            continue;
        }
        names[(*count)++] = c->pol->tenants[t].name;
    }
    return names;
}

static uint32_t *load_id_list(load_ctx *c, const ynode *list, const char *what, size_t *count) {
    *count = 0;
    if (!expect_kind(c, list, YNODE_SEQUENCE, what))
        return NULL;
    uint32_t *ids = ctx_alloc_array(c, list->count + 1, sizeof(*ids));
    if (ids == NULL)
        return NULL;
    for (size_t i = 0; i < list->count; i++) {
        uint64_t v;
        if (want_uint(c, list->items[i], what, 0, POLICY_MAX_ID, &v))
            ids[(*count)++] = (uint32_t)v;
    }
    return ids;
}

typedef struct agent_sort_entry {
    const pol_agent *agent;
    const ynode *name;
} agent_sort_entry;

static int agent_sort_compare(const void *a, const void *b) {
    const agent_sort_entry *x = a, *y = b;
    int r = strcmp(x->agent->name, y->agent->name);
    if (r != 0)
        return r;
    if (x->name->line != y->name->line)
        return x->name->line < y->name->line ? -1 : 1;
    return x->name->column < y->name->column ? -1 : (x->name->column > y->name->column);
}

static void load_agents(load_ctx *c, const ynode *list) {
    static const char *const keys[] = {"name", "uids", "tenants"};
    if (!expect_kind(c, list, YNODE_SEQUENCE, "prompt_agents"))
        return;
    c->pol->agents = ctx_alloc_array(c, list->count + 1, sizeof(*c->pol->agents));
    c->agent_names = calloc(list->count + 1, sizeof(*c->agent_names));
    if (c->pol->agents == NULL || c->agent_names == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < list->count; i++) {
        const ynode *v[3];
        if (!MAP_COLLECT(c, list->items[i], "a prompt agent", keys, v, 0x7))
            continue;
        if (!v[0] || !v[1] || !v[2])
            continue;
        if (want_name(c, v[0], "prompt agent name") == NULL)
            continue;
        pol_agent a = {.name = ctx_strdup(c, v[0]->text, v[0]->len)};
        a.uids = load_id_list(c, v[1], "prompt agent uids", &a.uid_count);
        if (v[1]->kind == YNODE_SEQUENCE && v[1]->count == 0)
            ERR(c, v[1], "prompt agent uids must not be empty");
        a.tenants = load_tenant_refs(c, v[2], "prompt agent tenants", true, &a.tenant_count);
        if (v[2]->kind == YNODE_SEQUENCE && v[2]->count == 0)
            ERR(c, v[2], "prompt agent tenants must not be empty (use [\"*\"] for every tenant)");
        if (a.name == NULL)
            continue;
        c->agent_names[c->pol->agent_count] = v[0];
        c->pol->agents[c->pol->agent_count++] = a;
    }
    /* Sort by name (for lookups) and report duplicates at their later use. */
    size_t n = c->pol->agent_count;
    agent_sort_entry *order = malloc((n + 1) * sizeof(*order));
    pol_agent *sorted = ctx_alloc_array(c, n + 1, sizeof(*sorted));
    if (order == NULL || sorted == NULL) {
        c->oom = true;
        free(order);
        return;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = (agent_sort_entry){&c->pol->agents[i], c->agent_names[i]};
    if (n > 1)
        qsort(order, n, sizeof(*order), agent_sort_compare);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept > 0 && strcmp(sorted[kept - 1].name, order[i].agent->name) == 0) {
            ERR(c, order[i].name, "duplicate prompt agent '%s' (first at line %u)",
                order[i].agent->name, order[i - 1].name->line);
            continue;
        }
        sorted[kept++] = *order[i].agent;
    }
    free(order);
    c->pol->agents = sorted;
    c->pol->agent_count = kept;
}

/* ---- Rules and guards ---- */

enum {
    RK_ID,
    RK_OPS,
    RK_FAMILY,
    RK_HOST,
    RK_REMOTE,
    RK_PORTS,
    RK_LOCAL,
    RK_LOCAL_PORTS,
    RK_ACTION,
    RK_ALLOW,
    RK_DENY,
    RK_PROMPT,
    RK_LOG,
    RK_SHADOW,
    RK_COUNT
};

static const char *const rule_keys[RK_COUNT] = {
    [RK_ID] = "id",         [RK_OPS] = "ops",
    [RK_FAMILY] = "family", [RK_HOST] = "host",
    [RK_REMOTE] = "remote", [RK_PORTS] = "ports",
    [RK_LOCAL] = "local",   [RK_LOCAL_PORTS] = "local_ports",
    [RK_ACTION] = "action", [RK_ALLOW] = "allow",
    [RK_DENY] = "deny",     [RK_PROMPT] = "prompt",
    [RK_LOG] = "log",       [RK_SHADOW] = "shadow",
};

enum {
    GK_ID,
    GK_OPS,
    GK_FAMILY,
    GK_REMOTE,
    GK_PORTS,
    GK_LOCAL,
    GK_LOCAL_PORTS,
    GK_ACTION,
    GK_DENY,
    GK_EXEMPT,
    GK_COUNT
};

static const char *const guard_keys[GK_COUNT] = {
    [GK_ID] = "id",
    [GK_OPS] = "ops",
    [GK_FAMILY] = "family",
    [GK_REMOTE] = "remote",
    [GK_PORTS] = "ports",
    [GK_LOCAL] = "local",
    [GK_LOCAL_PORTS] = "local_ports",
    [GK_ACTION] = "action",
    [GK_DENY] = "deny",
    [GK_EXEMPT] = "exempt_tenants",
};

static int u32_compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : (x > y);
}

/* Parses `ops`: explicit operations, shorthand operations and the implicit
 * binds of connect shorthands. */
static bool load_ops(load_ctx *c, const ynode *list, unsigned *explicit_ops,
                     unsigned *shorthand_ops, unsigned *implicit_ops) {
    *explicit_ops = *shorthand_ops = *implicit_ops = 0;
    if (!expect_kind(c, list, YNODE_SEQUENCE, "ops"))
        return false;
    if (list->count == 0) {
        ERR(c, list, "ops must not be empty");
        return false;
    }
    bool ok = true;
    unsigned shorthands_seen = 0;
    for (size_t i = 0; i < list->count; i++) {
        const ynode *item = list->items[i];
        if (!want_text(c, item, "an operation")) {
            ok = false;
            continue;
        }
        policy_op op;
        if (policy_op_from_name(item->text, &op) == 0) {
            if (*explicit_ops & OP_BIT(op))
                ERR(c, item, "operation '%s' is listed twice", op_names[op]);
            *explicit_ops |= OP_BIT(op);
            continue;
        }
        size_t s;
        for (s = 0; s < ARRAY_SIZE(op_shorthands); s++) {
            if (strcmp(item->text, op_shorthands[s].name) == 0)
                break;
        }
        if (s == ARRAY_SIZE(op_shorthands)) {
            ERR(c, item,
                "unknown operation '%s' (expected lookup, tcp.bind, tcp.listen, tcp.accept, "
                "tcp.connect, udp.bind, udp.connect, udp.send, udp.receive, tcp.client, "
                "tcp.server, udp.client, udp.server or any)",
                q_node(item).text);
            ok = false;
            continue;
        }
        if (shorthands_seen & (1u << s))
            ERR(c, item, "operation '%s' is listed twice", op_shorthands[s].name);
        shorthands_seen |= 1u << s;
        *shorthand_ops |= op_shorthands[s].ops;
        *implicit_ops |= op_shorthands[s].implicit;
    }
    return ok;
}

static void load_deny_options(load_ctx *c, const ynode *map, pol_rule *r,
                              const ynode **error_node) {
    static const char *const keys[] = {"error", "delay"};
    const ynode *v[2];
    *error_node = NULL;
    if (!MAP_COLLECT(c, map, "deny options", keys, v, 0))
        return;
    if (v[0] && want_text(c, v[0], "deny.error")) {
        size_t i;
        for (i = 0; i < ARRAY_SIZE(deny_errors); i++) {
            if (strcmp(v[0]->text, deny_errors[i].name) == 0)
                break;
        }
        if (i == ARRAY_SIZE(deny_errors)) {
            ERR(c, v[0],
                "deny.error must be one of access-denied, name-unresolvable, "
                "permanent-resolver-failure, connection-refused, remote-unreachable; not '%s'",
                q_node(v[0]).text);
        } else {
            r->deny_error = deny_errors[i].number;
            *error_node = v[0];
        }
    }
    uint64_t ms;
    if (v[1] && want_duration(c, v[1], "deny.delay", 0, POLICY_MAX_DENY_DELAY_MS, &ms))
        r->deny_delay_ms = (uint32_t)ms;
}

static void load_allow_options(load_ctx *c, const ynode *map, pol_rule *r,
                               const ynode **handoff_node) {
    static const char *const keys[] = {"data_path", "tls"};
    static const char *const paths[] = {"relay", "handoff", NULL};
    static const char *const tls_keys[] = {"require", "server_name"};
    const ynode *v[2];
    int choice;
    *handoff_node = NULL;
    if (!MAP_COLLECT(c, map, "allow options", keys, v, 0))
        return;
    if (v[0] && want_choice(c, v[0], "allow.data_path", paths, &choice)) {
        r->data_path = choice == 1 ? POLICY_DATA_HANDOFF : POLICY_DATA_RELAY;
        if (choice == 1)
            *handoff_node = v[0];
    }
    if (v[1]) {
        const ynode *t[2];
        if (MAP_COLLECT(c, v[1], "allow.tls", tls_keys, t, 0)) {
            if (t[0])
                want_bool(c, t[0], "allow.tls.require", &r->tls_require);
            if (t[1] && want_text(c, t[1], "allow.tls.server_name")) {
                char *name = ctx_strdup(c, t[1]->text, t[1]->len);
                if (name != NULL && pol_host_normalise(name, t[1]->len) == 0)
                    ERR(c, t[1], "allow.tls.server_name '%s' is not a valid DNS name",
                        q_node(t[1]).text);
                else
                    r->tls_server_name = name;
            }
        }
    }
}

/* Works out which operations a rule can match and reports rules that
 * could never match an operation they name. Returns the operations
 * reported. */
static unsigned settle_ops(load_ctx *c, pol_rule *r, const ynode *ops_node, unsigned explicit_ops,
                           unsigned shorthand_ops, bool host_misplaced) {
    char keys[96], ops[160];
    unsigned reported = 0;
    describe_keys(r->keys, keys, sizeof(keys));
    r->ops = 0;
    for (unsigned op = 0; op < POLICY_OP_COUNT; op++) {
        unsigned bit = OP_BIT(op);
        bool applies = r->keys == 0 || (r->keys & pol_op_keys((policy_op)op)) != 0;
        if ((explicit_ops & bit) && !applies) {
            ERR(c, ops_node,
                "%s does not apply to %s, so this %s would never match %s; give it a key "
                "that does or list %s in another rule",
                keys, op_names[op], r->is_guard ? "guard" : "rule", op_names[op], op_names[op]);
            reported |= bit;
            continue;
        }
        if ((explicit_ops | shorthand_ops) & bit && applies)
            r->ops |= bit;
    }
    /* Nothing to say when ops did not parse, or when the only trouble is a
     * host on binds, which has its own message. */
    if (r->ops == 0 && r->implicit_ops == 0 && explicit_ops == 0 && shorthand_ops != 0 &&
        !host_misplaced) {
        describe_ops(shorthand_ops, ops, sizeof(ops));
        ERR(c, ops_node, "%s applies to none of %s, so this %s would never match", keys, ops,
            r->is_guard ? "guard" : "rule");
    }
    return reported;
}

/* Parses one rule (guard = false) or guard. Returns the rule in the arena
 * (possibly with errors reported), or NULL when it is unusable. */
static pol_rule *load_rule(load_ctx *c, const ynode *node, bool guard, const char *template_name) {
    const ynode *v[RK_COUNT] = {0};
    const ynode *exempt_node = NULL;
    const char *what = guard ? "a guard" : "a rule";
    if (guard) {
        const ynode *g[GK_COUNT];
        if (!MAP_COLLECT(c, node, what, guard_keys, g, 1ul << GK_ID))
            return NULL;
        v[RK_ID] = g[GK_ID];
        v[RK_OPS] = g[GK_OPS];
        v[RK_FAMILY] = g[GK_FAMILY];
        v[RK_REMOTE] = g[GK_REMOTE];
        v[RK_PORTS] = g[GK_PORTS];
        v[RK_LOCAL] = g[GK_LOCAL];
        v[RK_LOCAL_PORTS] = g[GK_LOCAL_PORTS];
        v[RK_ACTION] = g[GK_ACTION];
        v[RK_DENY] = g[GK_DENY];
        exempt_node = g[GK_EXEMPT];
    } else if (!MAP_COLLECT(c, node, what, rule_keys, v,
                            1ul << RK_ID | 1ul << RK_OPS | 1ul << RK_ACTION)) {
        return NULL;
    }
    pol_rule *r = ctx_alloc(c, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->is_guard = guard;
    r->line = node->line;
    r->column = node->column;
    r->template_name = template_name;
    r->families = 3;

    if (v[RK_ID] && want_name(c, v[RK_ID], guard ? "guard id" : "rule id")) {
        r->id = ctx_strdup(c, v[RK_ID]->text, v[RK_ID]->len);
        r->decider = pol_arena_printf(c->arena, "%s:%s", guard ? "guard" : "rule", v[RK_ID]->text);
        if (r->decider == NULL)
            c->oom = true;
        if (r->id != NULL)
            register_id(c, r->id, v[RK_ID]);
    }
    if (r->id == NULL || r->decider == NULL)
        r->id = r->decider = "?";

    unsigned explicit_ops = 0, shorthand_ops = 0;
    if (v[RK_OPS])
        load_ops(c, v[RK_OPS], &explicit_ops, &shorthand_ops, &r->implicit_ops);
    else
        shorthand_ops = ALL_OPS; /* guards without ops cover everything */

    if (v[RK_FAMILY]) {
        static const char *const families[] = {"any", "ipv4", "ipv6", NULL};
        int choice;
        if (want_choice(c, v[RK_FAMILY], "family", families, &choice) && choice != 0) {
            r->families = choice == 1 ? 1u : 2u;
            r->keys |= POL_KEY_FAMILY;
        }
    }
    if (v[RK_REMOTE] && load_address_list(c, v[RK_REMOTE], "remote", &r->remote))
        r->keys |= POL_KEY_REMOTE;
    if (v[RK_LOCAL] && load_address_list(c, v[RK_LOCAL], "local", &r->local))
        r->keys |= POL_KEY_LOCAL;
    if (v[RK_PORTS] && load_port_list(c, v[RK_PORTS], "ports", false, &r->ports))
        r->keys |= POL_KEY_PORTS;
    if (v[RK_LOCAL_PORTS] &&
        load_port_list(c, v[RK_LOCAL_PORTS], "local_ports", true, &r->local_ports))
        r->keys |= POL_KEY_LOCAL_PORTS;

    bool host_any = false;
    if (v[RK_HOST]) {
        const ynode *h = v[RK_HOST];
        size_t count = h->kind == YNODE_SEQUENCE ? h->count : 1;
        r->hosts = ctx_alloc_array(c, count + 1, sizeof(*r->hosts));
        if (h->kind == YNODE_SEQUENCE && h->count == 0)
            ERR(c, h, "host must not be empty (leave the key out to match any name)");
        for (size_t i = 0; r->hosts != NULL && i < count; i++) {
            const ynode *item = h->kind == YNODE_SEQUENCE ? h->items[i] : h;
            if (load_host_pattern(c, item, &r->hosts[r->host_count])) {
                host_any = host_any || r->hosts[r->host_count].kind == POL_HOST_ANY;
                r->host_count++;
            }
        }
        if (r->host_count > 0)
            r->keys |= POL_KEY_HOST;
    }

    /* Action. */
    if (guard) {
        static const char *const guard_actions[] = {"deny", "log", NULL};
        int choice;
        r->action = POLICY_DENY;
        if (v[RK_ACTION] && want_choice(c, v[RK_ACTION], "guard action", guard_actions, &choice))
            r->guard_log = choice == 1;
    } else if (v[RK_ACTION]) {
        static const char *const actions[] = {"deny", "allow", "prompt", NULL};
        int choice;
        if (want_choice(c, v[RK_ACTION], "action", actions, &choice))
            r->action = (policy_action)choice; /* index equals the enum value */
    }

    const ynode *error_node = NULL, *handoff_node = NULL;
    if (v[RK_DENY]) {
        if (guard ? r->guard_log : r->action == POLICY_ALLOW)
            ERR(c, v[RK_DENY], "deny options only apply to %s",
                guard ? "guards with action deny" : "rules with action deny or prompt");
        else
            load_deny_options(c, v[RK_DENY], r, &error_node);
    }
    if (v[RK_ALLOW]) {
        if (r->action == POLICY_DENY)
            ERR(c, v[RK_ALLOW], "allow options only apply to rules with action allow or prompt");
        else
            load_allow_options(c, v[RK_ALLOW], r, &handoff_node);
    }
    if (!guard && v[RK_PROMPT]) {
        if (r->action != POLICY_PROMPT) {
            ERR(c, v[RK_PROMPT], "prompt options only apply to rules with action prompt");
        } else {
            policy_prompt_settings *ps = ctx_alloc(c, sizeof(*ps));
            if (ps != NULL) {
                *ps = c->pol->settings.prompt;
                load_prompt(c, v[RK_PROMPT], false, ps);
                r->prompt = ps;
            }
        }
    }
    if (!guard && r->action == POLICY_PROMPT && r->prompt == NULL)
        r->prompt = &c->pol->settings.prompt;
    if (!guard && v[RK_LOG]) {
        static const char *const modes[] = {"none", "deny", "all", NULL};
        int choice;
        if (want_choice(c, v[RK_LOG], "log", modes, &choice))
            r->log = (pol_log_mode)(choice + 1);
    }
    if (!guard && v[RK_SHADOW])
        want_bool(c, v[RK_SHADOW], "shadow", &r->shadow);
    if (exempt_node != NULL) {
        const ynode *list = exempt_node;
        size_t count;
        const char **names = load_tenant_refs(c, list, "exempt_tenants", false, &count);
        r->exempt = ctx_alloc_array(c, count + 1, sizeof(*r->exempt));
        for (size_t i = 0; names != NULL && r->exempt != NULL && i < count; i++)
            r->exempt[r->exempt_count++] = (uint32_t)pol_tenant_find(c->pol, names[i]);
        /* Sorted and unique: the matcher binary-searches the tenant index. */
        if (r->exempt_count > 1) {
            qsort(r->exempt, r->exempt_count, sizeof(*r->exempt), u32_compare);
            size_t kept = 1;
            for (size_t i = 1; i < r->exempt_count; i++) {
                if (r->exempt[i] != r->exempt[kept - 1])
                    r->exempt[kept++] = r->exempt[i];
            }
            r->exempt_count = kept;
        }
    }

    /* The implicit bind of a connect shorthand is an allowance ("the
     * ephemeral case is allowed automatically"): a guard, a deny or prompt
     * rule, or a shadow rule naming tcp.client must not catch every
     * implicit bind, whatever its remote. */
    if (guard || r->action != POLICY_ALLOW || r->shadow)
        r->implicit_ops = 0;

    /* Cross-key checks. */
    const ynode *ops_node = v[RK_OPS] ? v[RK_OPS] : node;
    unsigned all_ops = explicit_ops | shorthand_ops;
    r->listed_ops = all_ops;
    unsigned endpoint_ops = OP_BIT(POLICY_OP_TCP_BIND) | OP_BIT(POLICY_OP_TCP_LISTEN) |
                            OP_BIT(POLICY_OP_TCP_ACCEPT) | OP_BIT(POLICY_OP_UDP_BIND);
    bool host_misplaced = (r->keys & POL_KEY_HOST) && (all_ops & endpoint_ops);
    unsigned reported = settle_ops(c, r, ops_node, explicit_ops, shorthand_ops, host_misplaced);
    if (r->keys & POL_KEY_HOST) {
        if (all_ops & endpoint_ops & ~reported) {
            char ops[160];
            describe_ops(all_ops & endpoint_ops & ~reported, ops, sizeof(ops));
            ERR(c, v[RK_HOST],
                "host is not valid on a rule for %s (names are only known for "
                "lookup, connect and send)",
                ops);
        }
        if (host_any && !(all_ops & OP_BIT(POLICY_OP_LOOKUP)))
            ERR(c, v[RK_HOST], "host '*' is only valid on rules that include lookup");
    }
    if (error_node != NULL) {
        for (size_t i = 0; i < ARRAY_SIZE(deny_errors); i++) {
            if (deny_errors[i].number != r->deny_error)
                continue;
            unsigned outside = r->ops & ~deny_errors[i].ops;
            if (outside != 0) {
                char ops[160];
                describe_ops(outside, ops, sizeof(ops));
                ERR(c, error_node, "deny.error '%s' does not fit %s", deny_errors[i].name, ops);
            }
        }
    }
    if (handoff_node != NULL) {
        unsigned no_handoff = OP_BIT(POLICY_OP_TCP_LISTEN) | OP_BIT(POLICY_OP_UDP_BIND) |
                              OP_BIT(POLICY_OP_UDP_CONNECT) | OP_BIT(POLICY_OP_UDP_SEND) |
                              OP_BIT(POLICY_OP_UDP_RECEIVE) | OP_BIT(POLICY_OP_LOOKUP);
        if (all_ops & no_handoff) {
            char ops[160];
            describe_ops(all_ops & no_handoff, ops, sizeof(ops));
            ERR(c, handoff_node, "data_path handoff is only for TCP connections, not %s", ops);
        }
    }
    return r;
}

/* Loads a list of rules; returns them in the arena, *count set. */
static const pol_rule **load_rule_list(load_ctx *c, const ynode *list, bool guard,
                                       const char *template_name, size_t *count) {
    *count = 0;
    if (!expect_kind(c, list, YNODE_SEQUENCE, guard ? "guards" : "rules"))
        return NULL;
    const pol_rule **rules = ctx_alloc_array(c, list->count + 1, sizeof(*rules));
    if (rules == NULL)
        return NULL;
    for (size_t i = 0; i < list->count; i++) {
        pol_rule *r = load_rule(c, list->items[i], guard, template_name);
        if (r != NULL)
            rules[(*count)++] = r;
    }
    return rules;
}

static void load_templates(load_ctx *c, const ynode *map) {
    static const char *const keys[] = {"rules"};
    if (!expect_kind(c, map, YNODE_MAPPING, "templates"))
        return;
    size_t count;
    key_ref *refs = sorted_unique_keys(c, map, "template", &count);
    if (count == 0) {
        free(refs);
        return;
    }
    c->templates = calloc(count, sizeof(*c->templates));
    if (c->templates == NULL) {
        c->oom = true;
        free(refs);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        const ynode *v[1];
        if (want_name(c, refs[i].key, "template name") == NULL)
            continue;
        named_template *t = &c->templates[c->template_count++];
        t->name = ctx_strdup(c, refs[i].key->text, refs[i].key->len);
        t->key = refs[i].key;
        t->value = refs[i].value;
        if (t->name == NULL)
            break;
        if (!MAP_COLLECT(c, refs[i].value, "a template", keys, v, 1))
            continue;
        if (v[0])
            t->rules = load_rule_list(c, v[0], false, t->name, &t->rule_count);
    }
    free(refs);
}

/* Templates are sorted by name (they come from sorted_unique_keys()). */
static named_template *find_template(load_ctx *c, const char *name) {
    size_t lo = 0, hi = c->template_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->templates[mid].name, name);
        if (r == 0)
            return &c->templates[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- Tenants ---- */

static bool parse_count_with_suffix(const char *s, size_t len, uint64_t *out) {
    static const struct {
        const char *suffix;
        uint64_t scale;
    } suffixes[] = {{"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}, {"B", 1}};
    size_t digits = 0;
    while (digits < len && s[digits] >= '0' && s[digits] <= '9')
        digits++;
    uint64_t value;
    if (digits > 12 || parse_decimal(s, digits, &value) < 0)
        return false;
    if (digits == len) {
        *out = value;
        return true;
    }
    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        if (strlen(suffixes[i].suffix) == len - digits &&
            memcmp(suffixes[i].suffix, s + digits, len - digits) == 0) {
            *out = value * suffixes[i].scale;
            return true;
        }
    }
    return false;
}

/* "50/s", "600/min", "1000/h", each optionally followed by " burst N". */
static bool want_rate(load_ctx *c, const ynode *n, const char *what, policy_rate *out) {
    static const struct {
        const char *unit;
        uint32_t ms;
    } units[] = {{"s", 1000}, {"min", 60000}, {"h", 3600000}};
    if (!want_text(c, n, what))
        return false;
    const char *s = n->text;
    const char *slash = strchr(s, '/');
    uint64_t count = 0, burst = 0;
    bool ok = slash != NULL && parse_decimal(s, (size_t)(slash - s), &count) == 0 && count >= 1 &&
              count <= POLICY_MAX_LIMIT;
    uint32_t interval = 0;
    if (ok) {
        const char *unit = slash + 1;
        const char *space = strchr(unit, ' ');
        size_t ulen = space ? (size_t)(space - unit) : strlen(unit);
        for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
            if (strlen(units[i].unit) == ulen && memcmp(units[i].unit, unit, ulen) == 0)
                interval = units[i].ms;
        }
        ok = interval != 0;
        burst = count;
        if (ok && space != NULL) {
            const char *b = space + 1;
            ok = strncmp(b, "burst ", 6) == 0 && parse_decimal(b + 6, strlen(b + 6), &burst) == 0 &&
                 burst >= 1 && burst <= POLICY_MAX_LIMIT;
        }
    }
    if (!ok) {
        ERR(c, n, "%s must be a rate such as 50/s, 600/min or '50/s burst 100', not '%s'", what,
            q_node(n).text);
        return false;
    }
    *out = (policy_rate){(uint32_t)count, interval, (uint32_t)burst};
    return true;
}

static void load_limits(load_ctx *c, const ynode *map, policy_limits *limits) {
    static const char *const keys[] = {"sockets",        "listeners",    "pending_ops",
                                       "buffered_bytes", "connect_rate", "lookup_rate",
                                       "udp_send_rate",  "accept_rate"};
    const ynode *v[8];
    uint64_t n;
    if (!MAP_COLLECT(c, map, "limits", keys, v, 0))
        return;
    uint32_t *counts[] = {&limits->sockets, &limits->listeners, &limits->pending_ops};
    for (size_t i = 0; i < 3; i++) {
        if (v[i] && want_uint(c, v[i], keys[i], 1, POLICY_MAX_LIMIT, &n))
            *counts[i] = (uint32_t)n;
    }
    if (v[3] && want_text(c, v[3], "buffered_bytes")) {
        if (!parse_count_with_suffix(v[3]->text, v[3]->len, &n) || n == 0 ||
            n > POLICY_MAX_BUFFERED_BYTES)
            ERR(c, v[3],
                "buffered_bytes must be a size such as 65536, 512KiB or 8MiB "
                "(at most 64GiB), not '%s'",
                q_node(v[3]).text);
        else
            limits->buffered_bytes = n;
    }
    policy_rate *rates[] = {&limits->connect_rate, &limits->lookup_rate, &limits->udp_send_rate,
                            &limits->accept_rate};
    for (size_t i = 0; i < 4; i++) {
        if (v[4 + i])
            want_rate(c, v[4 + i], keys[4 + i], rates[i]);
    }
}

static void load_tenant(load_ctx *c, pol_tenant *t, const ynode *map) {
    static const char *const keys[] = {"match",  "protocols", "include",        "default",
                                       "limits", "rules",     "allow_narrowing"};
    static const char *const match_keys[] = {"uids", "gids", "token"};
    static const char *const tokens[] = {"none", "optional", "required", NULL};
    static const char *const defaults[] = {"deny", "prompt", NULL};
    static const char *const protocols[] = {"tcp", "udp", NULL};
    const ynode *v[7];
    int choice;
    t->protocols = POLICY_PROTO_TCP | POLICY_PROTO_UDP;
    t->allow_narrowing = true;
    if (!MAP_COLLECT(c, map, "a tenant", keys, v, 1))
        return;
    if (v[0]) {
        const ynode *m[3];
        if (MAP_COLLECT(c, v[0], "a tenant's match", match_keys, m, 0)) {
            if (m[0])
                t->uids = load_id_list(c, m[0], "match uids", &t->uid_count);
            if (m[1])
                t->gids = load_id_list(c, m[1], "match gids", &t->gid_count);
            if (m[2] && want_choice(c, m[2], "match token", tokens, &choice))
                t->token = (pol_token_mode)choice;
            if ((!m[0] || (m[0]->kind == YNODE_SEQUENCE && m[0]->count == 0)) &&
                (!m[1] || (m[1]->kind == YNODE_SEQUENCE && m[1]->count == 0)))
                ERR(c, v[0], "a tenant's match needs uids or gids (nobody could act for it)");
        }
    }
    if (v[1] && expect_kind(c, v[1], YNODE_SEQUENCE, "protocols")) {
        t->protocols = 0;
        for (size_t i = 0; i < v[1]->count; i++) {
            if (want_choice(c, v[1]->items[i], "a protocol", protocols, &choice)) {
                unsigned bit = choice == 0 ? POLICY_PROTO_TCP : POLICY_PROTO_UDP;
                if (t->protocols & bit)
                    ERR(c, v[1]->items[i], "protocol '%s' is listed twice", protocols[choice]);
                t->protocols |= bit;
            }
        }
    }
    if (v[3] && want_choice(c, v[3], "a tenant's default", defaults, &choice)) {
        t->has_default = true;
        t->default_action = choice == 1 ? POLICY_PROMPT : POLICY_DENY;
    }
    if (v[4])
        load_limits(c, v[4], &t->limits);
    if (v[6])
        want_bool(c, v[6], "allow_narrowing", &t->allow_narrowing);

    /* Rules: included templates first (in include order), then its own. */
    const named_template *included[64];
    size_t include_count = 0, total = 0;
    if (v[2] && expect_kind(c, v[2], YNODE_SEQUENCE, "include")) {
        for (size_t i = 0; i < v[2]->count; i++) {
            const ynode *item = v[2]->items[i];
            if (!want_text(c, item, "a template name"))
                continue;
            named_template *tpl = find_template(c, item->text);
            if (tpl == NULL) {
                ERR(c, item, "unknown template '%s'", q_node(item).text);
                continue;
            }
            bool seen = false;
            for (size_t k = 0; k < include_count; k++)
                seen = seen || included[k] == tpl;
            if (seen) {
                ERR(c, item, "template '%s' is included twice", tpl->name);
                continue;
            }
            if (include_count == ARRAY_SIZE(included)) {
                ERR(c, item, "a tenant may include at most %zu templates", ARRAY_SIZE(included));
                continue;
            }
            included[include_count++] = tpl;
            total += tpl->rule_count;
        }
    }
    size_t own_count = 0;
    const pol_rule **own = NULL;
    if (v[5])
        own = load_rule_list(c, v[5], false, NULL, &own_count);
    total += own_count;
    c->total_rules += total;
    if (c->total_rules > POLICY_MAX_RULES_TOTAL) {
        ERR(c, map, "too many rules after templates are included (the limit is %u)",
            POLICY_MAX_RULES_TOTAL);
        return;
    }
    t->rules.rules = ctx_alloc_array(c, total + 1, sizeof(*t->rules.rules));
    if (t->rules.rules == NULL)
        return;
    for (size_t i = 0; i < include_count; i++) {
        for (size_t k = 0; k < included[i]->rule_count; k++)
            t->rules.rules[t->rules.count++] = included[i]->rules[k];
    }
    for (size_t i = 0; i < own_count; i++)
        t->rules.rules[t->rules.count++] = own[i];
}

/* ---- The whole file ---- */

enum {
    TK_VERSION,
    TK_DEFAULTS,
    TK_DNS,
    TK_SETS,
    TK_GUARDS,
    TK_PROMPT_AGENTS,
    TK_AUDIT,
    TK_RELOAD,
    TK_TEMPLATES,
    TK_TENANTS,
    TK_COUNT
};

static const char *const top_keys[TK_COUNT] = {
    [TK_VERSION] = "version", [TK_DEFAULTS] = "defaults", [TK_DNS] = "dns",
    [TK_SETS] = "sets",       [TK_GUARDS] = "guards",     [TK_PROMPT_AGENTS] = "prompt_agents",
    [TK_AUDIT] = "audit",     [TK_RELOAD] = "reload",     [TK_TEMPLATES] = "templates",
    [TK_TENANTS] = "tenants",
};

static void settings_defaults(policy_settings *s) {
    *s = (policy_settings){
        .default_action = POLICY_DENY,
        .implicit_bind = POLICY_IMPLICIT_FOLLOW_CONNECT,
        .lookup_error = POLICY_ERR_ACCESS_DENIED,
        .inbound = POLICY_INBOUND_RESET,
        .prompt = {.timeout_ms = 30000,
                   .on_timeout = POLICY_DENY,
                   .on_no_agent = POLICY_DENY,
                   .remember = POLICY_REMEMBER_ONCE,
                   .max_pending_per_tenant = 16},
    };
    s->audit.sink = POLICY_AUDIT_FILE;
    s->audit.file = "audit.jsonl";
    s->audit.hash_chain = true;
    s->audit.record = 1u << POLICY_DENY | 1u << POLICY_PROMPT;
    s->dns.system_resolver = true;
    s->dns.pin_scope = POLICY_DNS_SCOPE_TENANT;
    s->dns.min_ttl_s = 30;
    s->dns.max_ttl_s = 600;
    s->dns.keep_while_open = true;
    s->dns.filter_answers = true;
    s->dns.max_bindings_per_tenant = 4096;
    s->reload.revalidate_open_sockets = POLICY_REVALIDATE_NONE;
    s->reload.keep_answers_if_rule_exists = true;
}

static void load_everything(load_ctx *c, const ynode *root) {
    const ynode *v[TK_COUNT];
    if (!MAP_COLLECT(c, root, "the policy file", top_keys, v, 1ul << TK_VERSION))
        return;
    uint64_t version;
    if (v[TK_VERSION] && want_uint(c, v[TK_VERSION], "version", 0, UINT32_MAX, &version) &&
        version != 1)
        ERR(c, v[TK_VERSION], "unsupported policy version %" PRIu64 " (this wasockd reads 1)",
            version);
    /* Sections are read in dependency order, not file order; the report
     * is sorted by position afterwards. */
    if (v[TK_DEFAULTS])
        load_defaults(c, v[TK_DEFAULTS]);
    if (v[TK_DNS])
        load_dns(c, v[TK_DNS]);
    if (v[TK_AUDIT])
        load_audit(c, v[TK_AUDIT]);
    if (v[TK_RELOAD])
        load_reload(c, v[TK_RELOAD]);
    if (v[TK_SETS])
        load_sets(c, v[TK_SETS]);
    if (v[TK_TENANTS])
        load_tenant_names(c, v[TK_TENANTS]);
    if (v[TK_PROMPT_AGENTS])
        load_agents(c, v[TK_PROMPT_AGENTS]);
    if (v[TK_TEMPLATES])
        load_templates(c, v[TK_TEMPLATES]);
    if (v[TK_GUARDS]) {
        c->pol->guards.rules = load_rule_list(c, v[TK_GUARDS], true, NULL, &c->pol->guards.count);
        c->total_rules += c->pol->guards.count;
    }
    for (size_t i = 0; i < c->pol->tenant_count && !c->oom; i++)
        load_tenant(c, &c->pol->tenants[i], c->tenant_sources[i].value);
    check_duplicate_ids(c);
}

int pol_load_tree(const ynode *root, pol_diag *diag, policy **out) {
    policy *pol = calloc(1, sizeof(*pol));
    if (pol == NULL)
        return -ENOMEM;
    load_ctx c = {.diag = diag, .pol = pol, .arena = &pol->arena};
    settings_defaults(&pol->settings);
    if (root == NULL)
        pol_diag_error(diag, 1, 1, "the policy file is empty (it needs at least 'version: 1')");
    else
        load_everything(&c, root);

    int r = 0;
    if (c.oom)
        r = -ENOMEM;
    else if (diag->count > 0 || diag->truncated || diag->out_of_memory)
        r = -EINVAL;
    if (r == 0 && pol_ruleset_compile(&pol->arena, &pol->guards) < 0)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < pol->tenant_count; i++) {
        if (pol_ruleset_compile(&pol->arena, &pol->tenants[i].rules) < 0)
            r = -ENOMEM;
    }
    free(c.sets);
    free(c.templates);
    free(c.tenant_sources);
    free(c.agent_names);
    free(c.ids);
    if (r < 0) {
        pol_arena_release(&pol->arena);
        free(pol);
        return r;
    }
    *out = pol;
    return 0;
}
