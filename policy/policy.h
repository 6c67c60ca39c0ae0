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
typedef enum policy_protocol { POLICY_PROTO_TCP = 1u << 0, POLICY_PROTO_UDP = 1u << 1 } policy_protocol;

/* An IP endpoint, without any socket types: family 4 or 6 (0: absent),
 * address bytes in network order (IPv4 in ip[0..3]), port in host order. */
typedef struct policy_endpoint {
    uint8_t family;
    uint8_t ip[16];
    uint16_t port;
} policy_endpoint;

/* One question: may `tenant` do `op` with these endpoints? */
typedef struct policy_request {
    const char *tenant;     /* tenant name the session acts for */
    policy_op op;
    bool implicit;          /* an implicit bind done for a connect/listen/send */
    policy_endpoint local;  /* bind/listen/receive: our address; family 0 if none */
    policy_endpoint remote; /* connect/send/accept: the other end; family 0 if none */
    const char *host;       /* lookup: the name; connect/send: the name the
                               address is bound to by a daemon lookup; or NULL */
} policy_request;

/* The answer. Strings point into the policy and live as long as it does. */
typedef struct policy_verdict {
    policy_action action;
    uint16_t error;          /* on deny: the proto_err number to return (default
                                PROTO_E_ACCESS_DENIED == 2) */
    char decided_by[160];    /* "guard:<id>", "rule:<id>", "default:tenant",
                                "default:global", "tenant:unknown" */
    bool audit;              /* write an audit record for this decision */
    /* prompts (action == POLICY_PROMPT) */
    uint32_t prompt_timeout_ms;
    policy_action prompt_on_timeout;
    policy_action prompt_on_no_agent;
    const char *prompt_note; /* NULL or text for the agent */
} policy_verdict;

/* Per-tenant limits; 0 means "no limit". */
typedef struct policy_limits {
    uint32_t sockets;
    uint32_t listeners;
    uint32_t pending_ops;
} policy_limits;

/* Load diagnostics: a malloc'd list of "file:line:column: message" lines,
 * newline-separated; the caller frees it with free(). */

/* Loads, validates and compiles a policy file. On success returns 0 and
 * *out owns a new policy (free with policy_free). On failure returns -1,
 * *out is untouched, and *errors (if errors != NULL) receives the
 * diagnostics (caller frees). Never leaves partial state behind. */
int policy_load_file(const char *path, policy **out, char **errors);

/* The same from a buffer; `name` is used as the file name in messages. */
int policy_load_buffer(const char *name, const char *text, size_t len, policy **out,
                       char **errors);

/* The built-in default used when the daemon starts without a policy file:
 * one tenant "default" admitted for `uid` (and for uid 0), TCP and UDP,
 * every operation allowed on loopback addresses only, everything else
 * denied. Returns NULL only when out of memory. Caller frees. */
policy *policy_new_builtin_default(uint32_t uid);

void policy_free(policy *p); /* NULL allowed */

/* Tenant admission at HELLO: 0 when a peer with (uid, gid) may act for
 * `tenant` (token: as sent, may be NULL), else -1 with a one-line reason
 * copied to reason (reason_len bytes incl. NUL). */
int policy_admit(const policy *p, const char *tenant, uint32_t uid, uint32_t gid,
                 const char *token, char *reason, size_t reason_len);

/* The socket kinds `tenant` may create (policy_protocol bits); 0 for an
 * unknown tenant. */
unsigned policy_protocols(const policy *p, const char *tenant);

/* The tenant's limits (all 0 for an unknown tenant). */
policy_limits policy_tenant_limits(const policy *p, const char *tenant);

/* The single decision function. Pure: same policy + request => same verdict.
 * Never fails: anything it cannot match is decided by the defaults. */
void policy_decide(const policy *p, const policy_request *req, policy_verdict *out);

#endif
