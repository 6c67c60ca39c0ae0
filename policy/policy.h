/* policy.h — the operator's YAML policy: load, validate, compile, decide.
 *
 * A pure library: no libuv, no sockets, no logging, no global state. The
 * daemon loads a file (or the built-in default) into an immutable compiled
 * `policy`, asks policy_decide() at every enforcement point, and on reload
 * builds a new policy and swaps it; a policy that failed to load never
 * replaces the running one. A compiled policy may be shared by threads.
 *
 * docs: policy/REFERENCE.md (every key, evaluation order, examples).
 */
#ifndef WASOCK_POLICY_H
#define WASOCK_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct policy policy;

/* The operations a rule can name (policy.md vocabulary). */
typedef enum policy_op {
    POLICY_OP_LOOKUP,
    POLICY_OP_TCP_BIND,
    POLICY_OP_TCP_LISTEN,
    POLICY_OP_TCP_ACCEPT,
    POLICY_OP_TCP_CONNECT,
    POLICY_OP_UDP_BIND,
    POLICY_OP_UDP_CONNECT,
    POLICY_OP_UDP_SEND,
    POLICY_OP_UDP_RECEIVE,
    POLICY_OP_COUNT
} policy_op;

/* "tcp.connect" etc.; NULL for an out-of-range value. */
const char *policy_op_name(policy_op op);

typedef enum policy_action { POLICY_DENY = 0, POLICY_ALLOW, POLICY_PROMPT } policy_action;

/* "deny" / "allow" / "prompt". */
const char *policy_action_name(policy_action a);

/* Socket kinds a tenant may create (tenant `protocols`). */
typedef enum policy_protocol {
    POLICY_PROTO_TCP = 1u << 0,
    POLICY_PROTO_UDP = 1u << 1
} policy_protocol;

/* An IP endpoint, without any socket types: family 4 or 6 (0: absent),
 * address bytes in network order (IPv4 in ip[0..3]), port in host order.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is matched as the IPv4
 * address it carries by every address test. */
typedef struct policy_endpoint {
    uint8_t family;
    uint8_t ip[16];
    uint16_t port;
    /* Extension: true when the kernel chose `port` (the socket was bound to
     * port 0). Such a port matches `local_ports: [ephemeral]` on listen,
     * accept and receive, as port 0 itself does on bind. */
    bool port_ephemeral;
} policy_endpoint;

/* One question: may `tenant` do `op` with these endpoints?
 * Which endpoints each operation carries (policy/REFERENCE.md, "Requests"):
 *   lookup:                 host only
 *   tcp.bind, udp.bind:     local (the requested address and port, 0 = any)
 *   tcp.listen:             local (the bound address)
 *   tcp.accept:             local (the listener) and remote (the peer)
 *   tcp.connect, udp.connect, udp.send: remote (and host if the address came
 *                           from a daemon lookup)
 *   udp.receive:            local and remote (the datagram's source)
 * An implicit bind is asked as tcp.bind/udp.bind with implicit = true and
 * local = the unspecified address of the socket's family, port 0. */
typedef struct policy_request {
    const char *tenant; /* tenant name the session acts for */
    policy_op op;
    bool implicit;          /* an implicit bind done for a connect/listen/send */
    policy_endpoint local;  /* bind/listen/receive: our address; family 0 if none */
    policy_endpoint remote; /* connect/send/accept: the other end; family 0 if none */
    const char *host;       /* lookup: the name; connect/send: the name the
                               address is bound to by a daemon lookup; or NULL */
} policy_request;

/* Where the bytes of an allowed TCP connection flow (rule `allow.data_path`). */
typedef enum policy_data_path { POLICY_DATA_RELAY = 0, POLICY_DATA_HANDOFF } policy_data_path;

/* Remember scopes a prompt agent may choose from (bit set). */
enum {
    POLICY_REMEMBER_ONCE = 1u << 0,
    POLICY_REMEMBER_SESSION = 1u << 1,
    POLICY_REMEMBER_TENANT = 1u << 2,
    POLICY_REMEMBER_PERSIST = 1u << 3,
};

/* How many fixed durations ("1h", "8h") a `remember` list may offer. */
#define POLICY_REMEMBER_MAX_DURATIONS 8

/* The prompt settings in force for one prompt: defaults.prompt merged with a
 * rule's `prompt` overrides. Lives as long as the policy. */
typedef struct policy_prompt_settings {
    uint32_t timeout_ms;
    policy_action on_timeout;                                 /* POLICY_ALLOW or POLICY_DENY */
    policy_action on_no_agent;                                /* POLICY_ALLOW or POLICY_DENY */
    unsigned remember;                                        /* POLICY_REMEMBER_* bits */
    uint32_t remember_seconds[POLICY_REMEMBER_MAX_DURATIONS]; /* offered durations */
    size_t remember_seconds_count;
    uint32_t max_pending_per_tenant; /* defaults only; 0 = no limit */
    const char *const *agents;       /* names from prompt_agents; NULL = every agent */
    size_t agent_count;
    const char *note; /* NULL or operator text for the agent */
} policy_prompt_settings;

/* The answer. Strings point into the policy and live as long as it does. */
typedef struct policy_verdict {
    policy_action action;
    uint16_t error;       /* on deny: the proto_err number to return (default
                             PROTO_E_ACCESS_DENIED == 2); on prompt: the one
                             to return if the prompt ends in a refusal */
    char decided_by[160]; /* "guard:<id>", "rule:<id>", "answer:<id>",
                             "default:tenant", "default:global",
                             "default:implicit-bind", "tenant:unknown",
                             "tenant:protocols" */
    bool audit;           /* write an audit record for this decision */
    /* prompts (action == POLICY_PROMPT) */
    uint32_t prompt_timeout_ms;
    policy_action prompt_on_timeout;
    policy_action prompt_on_no_agent;
    const char *prompt_note; /* NULL or text for the agent */

    /* Extensions (all zero / NULL when not applicable). */
    const char *rule_id;                  /* the bare id of the deciding guard or rule, else NULL */
    uint32_t deny_delay_ms;               /* on deny (and prompt ending in deny): wait first */
    policy_data_path data_path;           /* on allow (and prompt ending in allow) */
    bool tls_require;                     /* rule `allow.tls.require` (not enforced yet) */
    const char *tls_server_name;          /* rule `allow.tls.server_name` or NULL */
    const policy_prompt_settings *prompt; /* on prompt: every prompt setting */
    const char *logged_by;                /* first guard with `action: log` that matched */
    const char *shadow_by;                /* "rule:<id>" of the first shadow rule that matched */
    policy_action shadow_action;          /* what that shadow rule would have done */
} policy_verdict;

/* A rate limit: `count` events per `interval_ms`, bursts up to `burst`.
 * count == 0 means "no limit". Parsed and stored; not enforced yet. */
typedef struct policy_rate {
    uint32_t count;
    uint32_t interval_ms;
    uint32_t burst;
} policy_rate;

/* Per-tenant limits; 0 means "no limit". */
typedef struct policy_limits {
    uint32_t sockets;
    uint32_t listeners;
    uint32_t pending_ops;
    /* Extensions: parsed and stored; not enforced yet. */
    uint64_t buffered_bytes;
    policy_rate connect_rate;
    policy_rate lookup_rate;
    policy_rate udp_send_rate;
    policy_rate accept_rate;
} policy_limits;

/* Load diagnostics: a malloc'd list of "file:line:column: message" lines,
 * newline-separated; the caller frees it with free(). */

/* Loads, validates and compiles a policy file. On success returns 0 and
 * *out owns a new policy (free with policy_free). On failure returns -1,
 * *out is untouched, and *errors (if errors != NULL) receives the
 * diagnostics (caller frees). Never leaves partial state behind. */
int policy_load_file(const char *path, policy **out, char **errors);

/* The same from a buffer; `name` is used as the file name in messages. */
int policy_load_buffer(const char *name, const char *text, size_t len, policy **out, char **errors);

/* The built-in default used when the daemon starts without a policy file:
 * one tenant "default" admitted for `uid` (and for uid 0), TCP and UDP,
 * every operation allowed on loopback addresses only, everything else
 * denied. Returns NULL only when out of memory. Caller frees. */
policy *policy_new_builtin_default(uint32_t uid);

void policy_free(policy *p); /* NULL allowed */

/* Tenant admission at HELLO: 0 when a peer with (uid, gid) may act for
 * `tenant` (token: as sent, may be NULL), else -1 with a one-line reason
 * copied to reason (reason_len bytes incl. NUL). */
int policy_admit(const policy *p, const char *tenant, uint32_t uid, uint32_t gid, const char *token,
                 char *reason, size_t reason_len);

/* The socket kinds `tenant` may create (policy_protocol bits); 0 for an
 * unknown tenant. */
unsigned policy_protocols(const policy *p, const char *tenant);

/* The tenant's limits (all 0 for an unknown tenant). */
policy_limits policy_tenant_limits(const policy *p, const char *tenant);

/* The single decision function. Pure: same policy + request => same verdict.
 * Never fails: anything it cannot match is decided by the defaults. */
void policy_decide(const policy *p, const policy_request *req, policy_verdict *out);

/* ---- Extensions ---- */

/* Remembered prompt answers (evaluation step 4, after the guards and before
 * the tenant rules). The daemon owns the answers; the policy only asks.
 * The callback returns true and fills *answer when a remembered answer
 * covers `req`; answer->id names it (copied into decided_by as
 * "answer:<id>", so it need only live during the call). */
typedef struct policy_answer {
    policy_action action; /* POLICY_ALLOW or POLICY_DENY */
    const char *id;
} policy_answer;
typedef bool (*policy_answer_fn)(void *opaque, const policy_request *req, policy_answer *answer);

/* policy_decide() with the remembered-answer hook; answers may be NULL. */
void policy_decide_with_answers(const policy *p, const policy_request *req,
                                policy_answer_fn answers, void *answers_opaque,
                                policy_verdict *out);

/* One step of an explanation: each guard, answer, rule and default in
 * evaluation order, up to and including the one that decided. */
typedef enum policy_explain_outcome {
    POLICY_EXPLAIN_NO_MATCH, /* did not match; `reason` says why */
    POLICY_EXPLAIN_EXEMPT,   /* guard matched but the tenant is exempt */
    POLICY_EXPLAIN_LOGGED,   /* guard with action log matched; evaluation goes on */
    POLICY_EXPLAIN_SHADOW,   /* shadow rule matched; recorded, evaluation goes on */
    POLICY_EXPLAIN_DECIDED,  /* this step decided */
} policy_explain_outcome;

typedef struct policy_explain_step {
    const char *decider; /* "guard:<id>", "rule:<id>", "default:tenant", ... */
    policy_explain_outcome outcome;
    policy_action action;      /* the step's action (for matches) */
    const char *reason;        /* one line; valid during the callback only */
    unsigned line, column;     /* where the step is written (0: not in a file) */
    const char *template_name; /* the template a rule came from, or NULL */
} policy_explain_step;

typedef void (*policy_explain_fn)(void *opaque, const policy_explain_step *step);

/* The same decision as policy_decide_with_answers(), reached by trying every
 * guard and rule in order (no index) and reporting each step to `fn`. Meant
 * for `wasockctl policy explain` and tests; the verdict always equals the
 * one policy_decide_with_answers() returns. */
void policy_explain(const policy *p, const policy_request *req, policy_answer_fn answers,
                    void *answers_opaque, policy_explain_fn fn, void *fn_opaque,
                    policy_verdict *out);

/* Parses "tcp.connect" etc. (not shorthands): 0, or -EINVAL. */
int policy_op_from_name(const char *name, policy_op *out);

/* Parses "192.0.2.1", "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]:80" into
 * *out (port 0 when absent): 0, or -EINVAL. Used by tools and tests. */
int policy_endpoint_parse(const char *text, policy_endpoint *out);

/* Formats an endpoint as "192.0.2.1:80" / "[2001:db8::1]:80" (without the
 * port when with_port is false; "-" for family 0). Returns the length that
 * the full text needs, as snprintf does. */
int policy_endpoint_format(const policy_endpoint *ep, bool with_port, char *buf, size_t len);

/* Settings of the whole file (defaults, dns, audit, reload). */
typedef enum policy_implicit_bind {
    POLICY_IMPLICIT_FOLLOW_CONNECT = 0, /* implicit binds pass (after the guards) */
    POLICY_IMPLICIT_CHECK,              /* implicit binds are checked by the rules */
} policy_implicit_bind;
typedef enum policy_inbound_refusal {
    POLICY_INBOUND_RESET = 0,
    POLICY_INBOUND_DROP
} policy_inbound_refusal;
typedef enum policy_audit_sink {
    POLICY_AUDIT_FILE = 0,
    POLICY_AUDIT_JOURNAL,
    POLICY_AUDIT_BOTH
} policy_audit_sink;
typedef enum policy_dns_scope {
    POLICY_DNS_SCOPE_TENANT = 0,
    POLICY_DNS_SCOPE_SESSION
} policy_dns_scope;
typedef enum policy_revalidate {
    POLICY_REVALIDATE_NONE = 0,
    POLICY_REVALIDATE_CONNECT,
    POLICY_REVALIDATE_ALL
} policy_revalidate;

/* How many resolvers `dns.resolver` may list. */
#define POLICY_DNS_MAX_RESOLVERS 8

typedef struct policy_settings {
    policy_action default_action;       /* defaults.action: deny | prompt */
    policy_implicit_bind implicit_bind; /* defaults.implicit_bind */
    uint16_t lookup_error;              /* defaults.errors.lookup (proto_err number) */
    policy_inbound_refusal inbound;     /* defaults.errors.inbound */
    policy_prompt_settings prompt;      /* defaults.prompt */
    struct {
        policy_audit_sink sink;
        const char *file; /* relative to the logs directory */
        bool hash_chain;  /* hash_chain: sha256 (true) | none */
        unsigned record;  /* bits 1u << policy_action */
        bool redact_hostnames;
    } audit;
    struct {
        bool system_resolver; /* resolver: system */
        policy_endpoint resolvers[POLICY_DNS_MAX_RESOLVERS];
        size_t resolver_count;
        policy_dns_scope pin_scope;
        uint32_t min_ttl_s, max_ttl_s;
        bool keep_while_open;
        bool filter_answers; /* filter_answers: guards (true) | none */
        uint32_t max_bindings_per_tenant;
    } dns;
    struct {
        policy_revalidate revalidate_open_sockets;
        bool keep_answers_if_rule_exists; /* if-rule-exists (true) | never */
    } reload;
} policy_settings;

/* The file-wide settings; never NULL for a loaded policy. */
const policy_settings *policy_get_settings(const policy *p);

/* Tenants, for listing tools: count, and the i-th name (sorted by name). */
size_t policy_tenant_count(const policy *p);
const char *policy_tenant_name(const policy *p, size_t index);

/* The tenant's `allow_narrowing` (false for an unknown tenant). */
bool policy_tenant_allows_narrowing(const policy *p, const char *tenant);

/* True when `tenant` has a rule (its own or included) with this id; the
 * daemon drops remembered answers whose rule vanished on reload. */
bool policy_rule_exists(const policy *p, const char *tenant, const char *rule_id);

/* Prompt agents: true when a peer with `uid` is listed under prompt_agents at
 * all (may connect to the agent socket). */
bool policy_agent_known(const policy *p, uint32_t uid);

/* True when a peer with `uid` may answer a prompt of `tenant` whose settings
 * are `prompt` (its `agents` restriction, if any, is honoured). */
bool policy_agent_may_answer(const policy *p, uint32_t uid, const char *tenant,
                             const policy_prompt_settings *prompt);

#endif
