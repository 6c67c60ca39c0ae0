/* policy-internal.h — the shapes shared by the policy library's files:
 * the arena, diagnostics, the YAML tree, the address tables and the
 * compiled policy. Not installed; nothing outside policy/ includes it.
 */
#ifndef WASOCK_POLICY_INTERNAL_H
#define WASOCK_POLICY_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* ---- Limits ---- */

/* Largest policy file we read. A file of 10,000 short rules is 1.3 MB;
 * 8 MiB leaves room for comments and big address sets while keeping the
 * parse of a hostile file short and its memory bounded. */
#define POLICY_MAX_FILE_BYTES (8u * 1024u * 1024u)

/* Deepest nesting of YAML collections. The schema itself is at most eight
 * levels deep (tenants > name > rules > rule > prompt > remember > item);
 * libyaml has no nesting limit of its own, so we cap it well above that. */
#define POLICY_MAX_DEPTH 24

/* Most YAML nodes (scalars and collections) in one file. 10,000 short rules
 * take about 140,000 nodes; the cap keeps the worst tree near 80 MB. */
#define POLICY_MAX_NODES 1000000u

/* Longest scalar: notes are capped at POLICY_MAX_NOTE_BYTES and names at
 * 253 bytes, so anything longer than this is a mistake or an attack. */
#define POLICY_MAX_SCALAR_BYTES 4096u

/* Longest prompt note: it is shown to a person in one or two lines. */
#define POLICY_MAX_NOTE_BYTES 512u

/* Most diagnostics reported for one file: enough to fix a file in a few
 * rounds, few enough that a binary file does not flood the log. */
#define POLICY_MAX_DIAGNOSTICS 50u

/* Longest id, tenant, set, template or agent name. Ids are printed in
 * decided_by ("guard:" + id must fit policy_verdict.decided_by). */
#define POLICY_MAX_NAME 64u

/* Most rules after templates are expanded into tenants. Compiling 100,000
 * rules takes well under a second and tens of MB; more is not a policy a
 * person can review. */
#define POLICY_MAX_RULES_TOTAL 100000u

/* Most index entries one rule may add for one operation. A rule naming a
 * huge address set is checked by its set tables instead of being spread
 * over the index (which would cost memory per rule that uses the set). */
#define POLICY_INDEX_MAX_ENTRIES_PER_RULE 64u

/* Widest port range that is indexed port by port; wider ranges are
 * checked on the candidate rule instead. */
#define POLICY_INDEX_MAX_PORT_SPAN 16u

/* Longest DNS name (RFC 1035) after normalisation. */
#define POLICY_MAX_HOST 253u

/* Longest duration we accept anywhere (30 days): timeouts, TTLs and
 * remembered-answer durations beyond that are typing mistakes. */
#define POLICY_MAX_DURATION_MS (30ull * 24 * 3600 * 1000)

/* wasi:sockets error numbers (proto_err in proto/proto.h; the policy
 * library stays independent of the protocol, so the few it names are
 * repeated here and checked against proto.h by the daemon's build). */
#define POLICY_ERR_ACCESS_DENIED              2
#define POLICY_ERR_REMOTE_UNREACHABLE         14
#define POLICY_ERR_CONNECTION_REFUSED         15
#define POLICY_ERR_NAME_UNRESOLVABLE          19
#define POLICY_ERR_PERMANENT_RESOLVER_FAILURE 21

/* ---- Arena: every piece of a policy (or of a parse tree) lives in one
 * arena and is freed with it, so error paths never free piecemeal. ---- */

typedef struct pol_arena_chunk pol_arena_chunk;
typedef struct pol_arena {
    pol_arena_chunk *head;
} pol_arena;

/* Zeroed memory owned by the arena; NULL when out of memory. */
void *pol_arena_alloc(pol_arena *a, size_t size);
/* A NUL-terminated copy owned by the arena; NULL when out of memory. */
char *pol_arena_strndup(pol_arena *a, const char *s, size_t len);
char *pol_arena_printf(pol_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees every chunk; the arena is empty and reusable afterwards. */
void pol_arena_release(pol_arena *a);

/* ---- Diagnostics ---- */

typedef struct pol_diag_entry {
    unsigned line, column;
    unsigned seq;  /* keeps equal positions in report order */
    char *message; /* malloc'd */
} pol_diag_entry;

typedef struct pol_diag {
    const char *file;
    pol_diag_entry *entries; /* malloc'd */
    size_t count, cap;
    bool truncated;
    bool out_of_memory;
} pol_diag;

void pol_diag_error(pol_diag *d, unsigned line, unsigned column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Joins the entries sorted by position into one malloc'd text ("file:line:
 * column: message\n" each); NULL when out of memory. */
char *pol_diag_render(const pol_diag *d);
/* Escapes a file name the same way, without cutting it (for one-line
 * errors that have no position). */
void pol_quote_path(const char *s, char *out, size_t out_len);
void pol_diag_release(pol_diag *d);

/* Copies at most 48 bytes of untrusted text for a message, escaping control
 * and non-ASCII bytes so a message never carries terminal escapes. */
void pol_quote(const char *s, size_t len, char *out, size_t out_len);

/* ---- YAML tree ---- */

typedef enum ynode_kind { YNODE_SCALAR, YNODE_SEQUENCE, YNODE_MAPPING } ynode_kind;

typedef struct ynode {
    ynode_kind kind;
    unsigned line, column; /* 1-based */
    bool plain;            /* scalar written without quotes */
    const char *text;      /* scalar: NUL-terminated (arena) */
    size_t len;
    struct ynode **items; /* sequence: items; mapping: key, value, key, value ... */
    size_t count;         /* number of items (mapping: 2 * pairs) */
} ynode;

/* Parses YAML text into a tree in `arena`. Returns 0 and *root (NULL for an
 * empty document), or -EINVAL after reporting to `diag`, or -ENOMEM. */
int pol_yaml_parse(const char *text, size_t len, pol_arena *arena, pol_diag *diag, ynode **root);

/* ---- Addresses ---- */

/* A prefix: IPv4 in addr[0..3] with family 4, IPv6 with family 6. */
typedef struct pol_prefix {
    uint8_t family;
    uint8_t length;
    uint8_t addr[16];
} pol_prefix;

/* Parses "a.b.c.d" / IPv6 text exactly (no zones, no leading zeros in IPv4
 * octets): 0, or -EINVAL. IPv4-mapped IPv6 results stay family 6. */
int pol_parse_ip(const char *s, size_t len, uint8_t *family, uint8_t addr[16]);
/* Parses a CIDR or a literal. Errors: -EINVAL (syntax), -ERANGE (prefix
 * length), -EDOM (host bits set). IPv4-mapped IPv6 prefixes of length >= 96
 * are turned into the IPv4 prefix they describe. */
int pol_parse_cidr(const char *s, size_t len, pol_prefix *out);
/* Writes an address in canonical text (RFC 5952 for IPv6). */
void pol_format_ip(uint8_t family, const uint8_t addr[16], char *buf, size_t len);
/* Masks addr to `length` bits of its family. */
void pol_mask(uint8_t family, uint8_t length, const uint8_t in[16], uint8_t out[16]);
/* Turns an IPv4-mapped IPv6 address into IPv4 (the effective address). */
void pol_effective_address(const policy_endpoint *ep, uint8_t *family, uint8_t addr[16]);

/* A sorted table of prefixes for membership tests and for the rule index:
 * entries sorted by (family, length, address, value) and grouped by
 * (family, length) so a lookup is one binary search per group. */
typedef struct pol_prefix_entry {
    pol_prefix prefix;
    uint32_t value; /* rule index in the index; 0 in sets */
} pol_prefix_entry;

typedef struct pol_prefix_group {
    uint8_t family, length;
    uint32_t start, end; /* [start, end) in entries */
} pol_prefix_group;

typedef struct pol_prefix_table {
    pol_prefix_entry *entries;
    size_t count;
    pol_prefix_group *groups;
    size_t group_count;
} pol_prefix_table;

/* Sorts, de-duplicates and groups `count` entries in place; allocates the
 * groups in `arena`. Returns 0 or -ENOMEM. */
int pol_prefix_table_build(pol_arena *arena, pol_prefix_entry *entries, size_t count,
                           pol_prefix_table *out);
/* The first entry of group g whose address is >= addr (binary search). */
size_t pol_prefix_group_lower_bound(const pol_prefix_table *t, const pol_prefix_group *g,
                                    const uint8_t addr[16]);
bool pol_prefix_table_contains(const pol_prefix_table *t, uint8_t family, const uint8_t addr[16]);

/* Built-in sets (@any ...): the table, or NULL for an unknown name. */
typedef struct pol_builtin_set {
    const char *name;
    const char *const *cidrs;
} pol_builtin_set;
const pol_builtin_set *pol_builtin_set_find(const char *name, size_t len);
size_t pol_builtin_set_count(void);
const pol_builtin_set *pol_builtin_set_at(size_t i);

/* Normalises a host name in place (ASCII lowercase, one trailing dot
 * removed, NUL-terminated at the new end) and checks its labels (letters,
 * digits, '-', '_'; 1-63 bytes each; 253 in all). Returns the new length,
 * or 0 for a name that is not valid. */
size_t pol_host_normalise(char *name, size_t len);

/* ---- Compiled policy ---- */

/* Constraint keys a rule may carry (bit set). */
enum {
    POL_KEY_FAMILY = 1u << 0,
    POL_KEY_REMOTE = 1u << 1,
    POL_KEY_PORTS = 1u << 2,
    POL_KEY_LOCAL = 1u << 3,
    POL_KEY_LOCAL_PORTS = 1u << 4,
    POL_KEY_HOST = 1u << 5,
};

/* Which constraint keys apply to each operation (see policy.h). */
unsigned pol_op_keys(policy_op op);

/* A list of addresses: the union of some tables (named sets are shared,
 * literals of the rule form one table of their own). */
typedef struct pol_addr_list {
    const pol_prefix_table **tables;
    size_t table_count;
    const char **spelling; /* as written, for explain */
    size_t spelling_count;
} pol_addr_list;

typedef struct pol_port_range {
    uint16_t low, high;
} pol_port_range;

typedef struct pol_port_list {
    pol_port_range *ranges;
    size_t count;
    bool ephemeral; /* local_ports: ephemeral */
} pol_port_list;

typedef enum pol_host_kind { POL_HOST_EXACT, POL_HOST_SUFFIX, POL_HOST_ANY } pol_host_kind;
typedef struct pol_host_pattern {
    pol_host_kind kind;
    const char *name; /* EXACT: the name; SUFFIX: the part after "*." */
    size_t len;
} pol_host_pattern;

typedef enum pol_log_mode {
    POL_LOG_DEFAULT = 0,
    POL_LOG_NONE,
    POL_LOG_DENY,
    POL_LOG_ALL
} pol_log_mode;

typedef struct pol_rule {
    const char *id;
    const char *decider; /* "rule:<id>" or "guard:<id>" */
    unsigned line, column;
    const char *template_name; /* the template that defines it, or NULL */
    bool is_guard;

    unsigned listed_ops;   /* bits 1u << policy_op named in `ops` (after shorthands) */
    unsigned ops;          /* of those, the operations its keys apply to */
    unsigned implicit_ops; /* connect shorthands: bits of tcp.bind/udp.bind */
    unsigned keys;         /* POL_KEY_* present */
    unsigned families;     /* bit 0: IPv4, bit 1: IPv6 */
    pol_addr_list remote, local;
    pol_port_list ports, local_ports;
    pol_host_pattern *hosts;
    size_t host_count;

    policy_action action; /* guards: POLICY_DENY (or log, below) */
    bool guard_log;
    uint16_t deny_error; /* 0: the default for the operation */
    uint32_t deny_delay_ms;
    policy_data_path data_path;
    bool tls_require;
    const char *tls_server_name;
    const policy_prompt_settings *prompt; /* action prompt: merged settings */
    pol_log_mode log;
    bool shadow;
    uint32_t *exempt; /* guards: sorted tenant indexes */
    size_t exempt_count;
} pol_rule;

/* A sorted run of rule indexes found under one key. */
typedef struct pol_key_entry {
    uint32_t key; /* port number */
    uint32_t rule;
} pol_key_entry;

typedef struct pol_name_entry {
    const char *name;
    uint32_t rule;
} pol_name_entry;

/* The index of one ruleset for one operation: every rule that can match the
 * operation appears under exactly one key kind, so the candidates of a
 * request are the union of a few sorted runs, merged in rule order. */
typedef struct pol_op_index {
    pol_prefix_table remote, local; /* value = rule index */
    pol_key_entry *ports, *local_ports;
    size_t port_count, local_port_count;
    pol_name_entry *exact, *suffix;
    size_t exact_count, suffix_count;
    uint32_t *unindexed[3]; /* by request family: none, IPv4, IPv6 */
    size_t unindexed_count[3];
    uint32_t *implicit[3]; /* rules matching implicit binds */
    size_t implicit_count[3];
} pol_op_index;

typedef struct pol_ruleset {
    const pol_rule **rules;
    size_t count;
    pol_op_index index[POLICY_OP_COUNT];
} pol_ruleset;

typedef enum pol_token_mode {
    POL_TOKEN_NONE = 0,
    POL_TOKEN_OPTIONAL,
    POL_TOKEN_REQUIRED
} pol_token_mode;

typedef struct pol_tenant {
    const char *name;
    unsigned line, column;
    uint32_t *uids;
    size_t uid_count;
    uint32_t *gids;
    size_t gid_count;
    pol_token_mode token;
    unsigned protocols;
    bool has_default;
    policy_action default_action;
    policy_limits limits;
    bool allow_narrowing;
    pol_ruleset rules;
} pol_tenant;

typedef struct pol_agent {
    const char *name;
    uint32_t *uids;
    size_t uid_count;
    const char **tenants; /* "*" = every tenant */
    size_t tenant_count;
} pol_agent;

struct policy {
    pol_arena arena;
    policy_settings settings;
    pol_ruleset guards;
    pol_tenant *tenants; /* sorted by name */
    size_t tenant_count;
    pol_agent *agents;
    size_t agent_count;
};

/* Builds the per-operation index of a ruleset (compile.c): 0 or -ENOMEM. */
int pol_ruleset_compile(pol_arena *arena, pol_ruleset *set);

/* Loads a tree into a policy (load.c). Returns 0 with *out, or -EINVAL
 * (diagnostics reported) or -ENOMEM. */
int pol_load_tree(const ynode *root, pol_diag *diag, policy **out);

/* The tenant index for a name, or -1. */
long pol_tenant_find(const policy *p, const char *name);

#endif
